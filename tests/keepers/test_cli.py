"""The ``keepers`` command: help everywhere, exit codes, config errors naming the key."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from keepers import cli
from keepers.config import KeepersConfig, load_config
from keepers.keys import load_keypair

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("node", "bot", "run", "dlob-server", "demo", "keygen")


def keepers(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEEPERS_")}
    environment.update(env or {})
    return subprocess.Popen(  # noqa: S603 -- our own CLI with fixed arguments
        [sys.executable, "-m", "keepers.cli", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_the_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["keepers"] == "keepers.cli:main"


def test_help_of_the_command_and_every_subcommand_exits_0() -> None:
    # Started together: each is a fresh interpreter, so this costs one start-up, not seven.
    runs = {"": keepers("--help")}
    runs.update({name: keepers(name, "--help") for name in SUBCOMMANDS})
    results = {name: finish(process) for name, process in runs.items()}
    for name, (code, out, err) in results.items():
        assert code == 0, (name, err)
        assert out.startswith("usage: keepers"), name
    top = results[""][1]
    for name in SUBCOMMANDS:
        assert name in top
    assert "--dry-run" in results["bot"][1]
    assert "--once" in results["run"][1]
    assert "--out" in results["keygen"][1]
    assert "--market" in results["dlob-server"][1]


def test_a_config_with_an_unknown_key_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keepers.toml"
    path.write_text("[bots.filler]\ninterval_s = 1.0\n\n[metrics]\nprot = 9100\n")
    code, _, err = finish(keepers("run", "--config", str(path)))
    assert code == 2
    assert "metrics.prot" in err
    assert "'prot'" in err
    # The same through the environment (in process: the parsing is the same code).
    path.write_text("[bots.filler]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPERS_BUS__URLL", "mqtt://x")
        assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bus.urll" in err
    assert "KEEPERS_BUS__URLL" in err


def test_keygen_writes_a_0600_file_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    code, out, _ = finish(keepers("keygen", "--out", str(path)))
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"pubkey {load_keypair(path).pubkey.hex()}" in out


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bot.json"
    assert cli.main(["keygen", "--out", str(path)]) == 0
    first = load_keypair(path).pubkey
    assert cli.main(["keygen", "--out", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_keypair(path).pubkey == first
    assert cli.main(["keygen", "--out", str(path), "--force"]) == 0
    assert load_keypair(path).pubkey != first


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["keygen"]) == 2  # --out is required
    assert cli.main(["run"]) == 2  # run needs --config
    assert "--config" in capsys.readouterr().err
    assert cli.main(["bot", "x", "--node-url", "ftp://node"]) == 2
    assert "node.url" in capsys.readouterr().err
    assert cli.main(["bot", "x", "--set", "nokey"]) == 2
    assert "--set" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text("[node]\n")
    assert cli.main(["run", "--config", str(empty)]) == 2
    assert "bots" in capsys.readouterr().err
    assert cli.main(["dlob-server", "--market", "perp:0", "--port", "many"]) == 2
    assert "dlob_server.port" in capsys.readouterr().err


def test_flags_map_to_config_keys() -> None:
    args = cli.build_parser().parse_args(
        [
            "bot",
            "filler",
            "--dry-run",
            "--once",
            "--node-url",
            "http://n:1",
            "--metrics-port",
            "0",
            "--log-format",
            "console",
            "--set",
            "bots.filler.interval_s=0.2",
        ]
    )
    config = load_config(env={}, overrides=cli.flag_overrides(args))
    assert config.runtime.dry_run is True
    assert config.runtime.once is True
    assert config.runtime.log_json is False
    assert config.node.url == "http://n:1"
    assert config.metrics.port == 0
    assert config.bots["filler"].interval_s == 0.2


class _NodeConfigWithHook:
    seen: KeepersConfig | None = None

    @classmethod
    def from_config(cls, config: KeepersConfig) -> str:
        cls.seen = config
        return "built"


def test_node_config_is_built_from_ours(tmp_path: Path) -> None:
    from keepers.node import NodeConfig

    path = tmp_path / "keepers.toml"
    path.write_text(
        "\n".join(
            [
                "[node]",
                "port = 9999",
                'journal = "/var/lib/keepers/journal.sqlite"',
                f'oracle_authority = "{"ab" * 32}"',
                "genesis_ts = 1234",
                'verifier = "thread"',
                "[node.genesis_prices]",
                '"SOL/USD" = 150000000',
                "[bus]",
                'url = "mqtt://broker:1883"',
                'cluster = "c1"',
            ]
        )
    )
    built = cli.node_config_from(NodeConfig, load_config(path, env={}))
    assert isinstance(built, NodeConfig)
    assert built.port == 9999
    assert built.journal == Path("/var/lib/keepers/journal.sqlite")
    assert built.broker_url == "mqtt://broker:1883"
    assert built.cluster == "c1"
    assert built.oracle_authority == bytes.fromhex("ab" * 32)
    assert built.admin == bytes(32)
    assert dict(built.genesis_prices) == {"SOL/USD": 150_000_000}
    assert built.genesis_ts == 1234
    assert built.verifier == "thread"
    embedded = cli.node_config_from(NodeConfig, load_config(env={}))
    assert embedded.broker_url == "mqtt://127.0.0.1:1883"  # the broker `keepers node` starts
    config = load_config(env={})
    assert cli.node_config_from(_NodeConfigWithHook, config) == "built"
    assert _NodeConfigWithHook.seen is config


def test_run_async_returns_the_status_and_stops_cleanly_on_sigterm() -> None:
    async def three() -> int:
        return 3

    async def until_signalled() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)
        return 9

    assert cli.run_async(three) == 3
    assert cli.run_async(until_signalled) == 0
