"""docker/: every service of the compose file runs a real ``keepers`` command with flags that
command has, the configuration it reads is valid, Mosquitto gets the project's configuration,
and the image installs the packages the project ships."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from keepers.cli import main as keepers_main
from keepers.config import load_config
from keepers.keys import LoadedKeypair
from keepers.runtime.process import prepare_bots
from protocol.keys import Keypair

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
CONFIG_IN_CONTAINER = "/etc/keepers/keepers.toml"


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def _keepers_services() -> list[tuple[str, list[str]]]:
    services = _compose()["services"]
    found = []
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            continue
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        found.append((name, argv))
    return found


def _flags(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def test_the_compose_file_has_the_broker_node_dlob_server_and_bots() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "node", "dlob-server", "bots"} <= set(services)
    mosquitto = services["mosquitto"]
    assert mosquitto["image"].startswith("eclipse-mosquitto")
    mounts = [v.split(":") for v in mosquitto["volumes"]]
    assert ["./mosquitto.conf", "/mosquitto/config/mosquitto.conf", "ro"] in mounts
    conf = (DOCKER / "mosquitto.conf").read_text()
    assert "max_queued_messages 1000000" in conf
    assert "set_tcp_nodelay true" in conf


@pytest.mark.parametrize(("service", "argv"), _keepers_services(), ids=lambda v: str(v)[:20])
def test_every_command_is_a_real_cli_command(
    service: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert argv[0] == "keepers", f"{service}: {argv}"
    subcommand = argv[1]
    assert keepers_main([subcommand, "--help"]) == 0, f"{service}: keepers {subcommand}"
    help_text = capsys.readouterr().out
    for flag in _flags(argv):
        assert flag in help_text, f"{service}: keepers {subcommand} has no {flag}"


def test_each_config_flag_names_the_mounted_file() -> None:
    services = _compose()["services"]
    for name, argv in _keepers_services():
        if "--config" not in argv:
            continue
        assert argv[argv.index("--config") + 1] == CONFIG_IN_CONTAINER
        volumes = services[name].get("volumes", [])
        assert f"./keepers.toml:{CONFIG_IN_CONTAINER}:ro" in volumes, name


def test_the_config_file_is_valid_and_builds_every_bot(tmp_path: Path) -> None:
    config = load_config(DOCKER / "keepers.toml", env={})
    assert config.bus.url == "mqtt://mosquitto:1883"
    assert config.node.url == "http://node:8899"
    names = [bot.name for bot in config.enabled_bots]
    assert {"filler", "trigger", "jit_maker", "funding_rate_updater"} <= set(names)
    keypair = Keypair.from_seed(b"\x07" * 32)

    def load(path: str) -> LoadedKeypair:
        assert path == "/keys/keeper.json"
        return LoadedKeypair(keypair=keypair, path=Path(path), too_open=False)

    # every [bots.<name>] table's parameters are validated against the bot's own type
    prepared = prepare_bots(config, names, load_key=load)
    assert [p.setup.name for p in prepared] == names


def test_the_image_installs_every_package_of_the_project() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package
    assert "pip install ." in dockerfile
    # the image's own services use the console script pyproject declares
    assert pyproject["project"]["scripts"]["keepers"] == "keepers.cli:main"


def test_the_commands_run_as_a_process() -> None:
    """What the container runs: the console script (``python -m keepers.cli`` where the
    script is not on PATH), here for the bots' service command with ``--help``."""
    [(_, argv)] = [(n, a) for n, a in _keepers_services() if n == "bots"]
    script = shutil.which("keepers")
    prefix = [script] if script is not None else [sys.executable, "-m", "keepers.cli"]
    done = subprocess.run(  # noqa: S603 -- our own command line, no shell
        [*prefix, argv[1], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for flag in _flags(argv):
        assert flag in done.stdout
