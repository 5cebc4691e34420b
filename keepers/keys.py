"""Keypair files: the ed25519 seed a keeper signs with, on disk.

Format (JSON, version 1)::

    {"version": 1, "pubkey": "<64 hex>", "seed": "<64 hex>"}

``seed`` is the 32-byte ed25519 seed (what :meth:`protocol.keys.Keypair.from_seed` takes);
``pubkey`` is redundant and checked on load, so a file edited by hand or truncated is caught
rather than silently signing as someone else.

:func:`write_keypair_file` creates the file with mode 0600 atomically (``O_CREAT | O_EXCL``,
mode given at creation: never a moment with wider permissions) and refuses to overwrite unless
asked. :func:`load_keypair` raises :class:`KeyFileError` naming the path and what is wrong; no
message ever contains the file's content. A file readable by group or others still loads (some
container volumes cannot hold 0600) but is reported in :attr:`LoadedKeypair.too_open`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.keys import PUBKEY_LEN, SEED_LEN, Keypair

KEYFILE_VERSION: Final = 1
KEYFILE_MODE: Final = 0o600


class KeyFileError(Exception):
    """A keypair file that cannot be used; ``path`` and ``detail`` say which and why."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(f"keypair file {str(path)!r}: {detail}")
        self.path = Path(path)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class LoadedKeypair:
    keypair: Keypair
    path: Path
    too_open: bool  # readable or writable by group or others


def keypair_document(keypair: Keypair) -> dict[str, object]:
    return {"version": KEYFILE_VERSION, "pubkey": keypair.pubkey.hex(), "seed": keypair.seed.hex()}


def write_keypair_file(
    path: Path | str, keypair: Keypair | None = None, *, overwrite: bool = False
) -> Keypair:
    """Write ``keypair`` (a new random one by default) to ``path`` with mode 0600."""
    target = Path(path)
    chosen = keypair if keypair is not None else Keypair.generate()
    if not target.parent.exists():
        raise KeyFileError(target, f"directory {str(target.parent)!r} does not exist")
    data = (json.dumps(keypair_document(chosen), indent=2) + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, KEYFILE_MODE)
    except FileExistsError:
        raise KeyFileError(target, "already exists (pass --force to overwrite)") from None
    except OSError as exc:
        raise KeyFileError(target, f"cannot create: {exc.strerror}") from None
    try:
        # An existing file opened with O_TRUNC keeps its old mode: set it explicitly.
        os.fchmod(fd, KEYFILE_MODE)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return chosen


def load_keypair_file(path: Path | str) -> LoadedKeypair:
    """Read and check a keypair file; :class:`KeyFileError` if it is missing or malformed."""
    source = Path(path)
    try:
        mode = source.stat().st_mode
        raw = source.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(source, "does not exist (create one with `keepers keygen`)") from None
    except IsADirectoryError:
        raise KeyFileError(source, "is a directory") from None
    except OSError as exc:
        raise KeyFileError(source, f"cannot read: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(source, "is not a JSON keypair file") from None
    if not isinstance(document, dict):
        raise KeyFileError(source, "must hold a JSON object")
    unknown = sorted(set(document) - {"version", "pubkey", "seed"})
    if unknown:
        raise KeyFileError(source, f"unknown key {unknown[0]!r}")
    version = document.get("version")
    if version != KEYFILE_VERSION or isinstance(version, bool):
        raise KeyFileError(source, f"version must be {KEYFILE_VERSION}")
    seed = _hex_field(source, document, "seed", SEED_LEN)
    pubkey = _hex_field(source, document, "pubkey", PUBKEY_LEN)
    keypair = Keypair.from_seed(seed)
    if keypair.pubkey != pubkey:
        raise KeyFileError(source, "pubkey does not match the seed")
    too_open = bool(stat.S_IMODE(mode) & 0o077)
    return LoadedKeypair(keypair, source, too_open)


def load_keypair(path: Path | str) -> Keypair:
    return load_keypair_file(path).keypair


def _hex_field(source: Path, document: dict[str, object], name: str, length: int) -> bytes:
    value = document.get(name)
    if not isinstance(value, str):
        raise KeyFileError(source, f"{name!r} must be a hex string")
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        raise KeyFileError(source, f"{name!r} is not hex") from None
    if len(decoded) != length:
        raise KeyFileError(source, f"{name!r} must be {length} bytes, got {len(decoded)}")
    return decoded
