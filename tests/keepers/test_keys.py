"""Keypair files: written 0600, loaded back, every malformed file a clear error without secrets."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from keepers.keys import KeyFileError, load_keypair, load_keypair_file, write_keypair_file
from keepers.logging import REDACTED, redact
from protocol.keys import Keypair

SEED = bytes(range(32))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_file_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    written = write_keypair_file(path, Keypair.from_seed(SEED))
    assert mode(path) == 0o600
    loaded = load_keypair_file(path)
    assert loaded.keypair.pubkey == written.pubkey
    assert loaded.keypair.seed == SEED
    assert loaded.too_open is False
    document = json.loads(path.read_text())
    assert document == {"version": 1, "pubkey": written.pubkey.hex(), "seed": SEED.hex()}


def test_a_generated_keypair_is_random_and_loads(tmp_path: Path) -> None:
    first = write_keypair_file(tmp_path / "a.json")
    second = write_keypair_file(tmp_path / "b.json")
    assert first.pubkey != second.pubkey
    assert load_keypair(tmp_path / "a.json").pubkey == first.pubkey


def test_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    path.write_text("precious")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="already exists"):
        write_keypair_file(path)
    assert path.read_text() == "precious"
    keypair = write_keypair_file(path, overwrite=True)
    assert mode(path) == 0o600  # the old, wider mode is not kept
    assert load_keypair(path).pubkey == keypair.pubkey


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        write_keypair_file(tmp_path / "nope" / "bot.json")


def test_a_file_readable_by_others_loads_but_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    write_keypair_file(path, Keypair.from_seed(SEED))
    path.chmod(0o644)
    assert load_keypair_file(path).too_open is True


def _document(**changes: object) -> str:
    keypair = Keypair.from_seed(SEED)
    document: dict[str, object] = {
        "version": 1,
        "pubkey": keypair.pubkey.hex(),
        "seed": SEED.hex(),
    }
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not a JSON keypair file"),
        ("[1, 2]", "JSON object"),
        (_document(version=2), "version must be 1"),
        (_document(version=True), "version must be 1"),
        (_document(seed=None), "'seed' must be a hex string"),
        (_document(seed="zz" * 32), "'seed' is not hex"),
        (_document(seed="00" * 31), "'seed' must be 32 bytes, got 31"),
        (_document(pubkey="00" * 32), "pubkey does not match the seed"),
        (_document(extra="x"), "unknown key 'extra'"),
    ],
)
def test_malformed_files_are_clear_errors_without_the_secret(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bot.json"
    path.write_text(content)
    with pytest.raises(KeyFileError) as info:
        load_keypair_file(path)
    assert expected in str(info.value)
    assert info.value.path == path
    assert SEED.hex() not in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keepers keygen"):
        load_keypair_file(tmp_path / "absent.json")
    with pytest.raises(KeyFileError, match="is a directory"):
        load_keypair_file(tmp_path)


def test_secrets_never_reach_logs_or_reprs() -> None:
    keypair = Keypair.from_seed(SEED)
    assert SEED.hex() not in repr(keypair)
    event = redact({"event": "x", "seed": SEED.hex(), "private_key": "p", "pubkey": "kept"})
    assert event == {"event": "x", "seed": REDACTED, "private_key": REDACTED, "pubkey": "kept"}
