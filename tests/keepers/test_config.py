"""Configuration: file < environment < flags, unknown keys and bad types named precisely."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepers.config import (
    BotSection,
    ConfigError,
    KeepersConfig,
    build_params,
    load_config,
    parse_set_flag,
    raw_params,
    text,
)

FULL = """
[node]
url = "http://node:8899"
port = 9000
slot_ms = 250

[bus]
url = "mqtt://broker:1883"
transport = "aiomqtt"
cluster = "prod"

[keys]
default = "keys/default.json"
filler = "keys/filler.json"

[metrics]
port = 0
slot_stall_s = 4.5

[dlob_server]
markets = ["perp:0", "spot:1"]

[runtime]
dry_run = true
log_level = "debug"

[bots.filler]
interval_s = 0.5
sub_accounts = [0, 3]
max_makers = 4

[bots.trigger]
enabled = false
key = "default"
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "keepers.toml"
    path.write_text(body)
    return path


def error_of(tmp_path: Path, body: str, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body), env={}, **kw)  # type: ignore[arg-type]
    return info.value


def test_defaults_without_a_file() -> None:
    config = load_config(env={})
    assert config == KeepersConfig()
    assert config.node.url == "http://127.0.0.1:8899"
    assert config.bus.embedded
    assert config.bus.cluster == "local"
    assert config.bots == {}
    assert config.bot("filler") == BotSection(name="filler")


def test_a_full_file_is_read_into_typed_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env={})
    assert (config.node.url, config.node.port, config.node.slot_ms) == (
        "http://node:8899",
        9000,
        250,
    )
    assert (config.bus.url, config.bus.transport, config.bus.cluster) == (
        "mqtt://broker:1883",
        "aiomqtt",
        "prod",
    )
    assert config.metrics.port == 0
    assert config.metrics.slot_stall_s == 4.5
    assert config.dlob_server.markets == ("perp:0", "spot:1")
    assert config.runtime.dry_run is True
    filler = config.bots["filler"]
    assert filler.interval_s == 0.5
    assert filler.sub_accounts == (0, 3)
    assert dict(filler.params) == {"max_makers": 4}
    assert filler.watchdog_timeout_s == 30.0  # max(30, 10 * 0.5)
    assert [b.name for b in config.enabled_bots] == ["filler"]
    assert config.key_path(filler) == "keys/filler.json"  # keys.<bot name>
    assert config.key_path(config.bots["trigger"]) == "keys/default.json"  # bots.trigger.key
    assert config.key_path(BotSection(name="jit")) == "keys/default.json"  # keys.default
    assert config.file == tmp_path / "keepers.toml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node.port = 1  # type: ignore[misc]


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nurl = "http://from-file:1"\n')
    env = {"KEEPERS_NODE__URL": "http://from-env:2"}
    flags = [("node.url", text("http://from-flag:3"), "flag --node-url")]
    assert load_config(path, env={}).node.url == "http://from-file:1"
    assert load_config(path, env=env).node.url == "http://from-env:2"
    assert load_config(path, env=env, overrides=flags).node.url == "http://from-flag:3"
    assert load_config(path, env={}, overrides=flags).node.url == "http://from-flag:3"


@given(
    file_port=st.none() | st.integers(0, 65535),
    env_port=st.none() | st.integers(0, 65535),
    flag_port=st.none() | st.integers(0, 65535),
)
def test_precedence_property(
    file_port: int | None, env_port: int | None, flag_port: int | None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "keepers.toml"
        path.write_text("" if file_port is None else f"[metrics]\nport = {file_port}\n")
        env = {} if env_port is None else {"KEEPERS_METRICS__PORT": str(env_port)}
        flags = [] if flag_port is None else [("metrics.port", text(str(flag_port)), "flag")]
        config = load_config(path, env=env, overrides=flags)
    # The highest layer that sets the key wins; none: the default.
    expected = next((p for p in (flag_port, env_port, file_port) if p is not None), 9100)
    assert config.metrics.port == expected


def test_environment_reaches_bot_tables_and_converts_types(tmp_path: Path) -> None:
    env = {
        "KEEPERS_BOTS__FILLER__INTERVAL_S": "0.25",
        "KEEPERS_BOTS__FILLER__ENABLED": "no",
        "KEEPERS_BOTS__FILLER__SUB_ACCOUNTS": "1, 2",
        "KEEPERS_BOTS__FILLER__MAX_MAKERS": "6",
        "KEEPERS_RUNTIME__ONCE": "true",
        "KEEPERS_CONFIG": str(write(tmp_path, FULL)),
    }
    config = load_config(env=env)
    filler = config.bots["filler"]
    assert filler.interval_s == 0.25
    assert filler.enabled is False
    assert filler.sub_accounts == (1, 2)
    assert raw_params(filler.params) == {"max_makers": 6}
    assert config.runtime.once is True
    assert config.node.port == 9000  # the rest still from the file named by KEEPERS_CONFIG


def test_unknown_key_names_the_key_and_its_table(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[node]\nurll = "http://x"\n')
    assert error.path == "node.urll"
    assert "'urll'" in str(error)
    assert "[node]" in str(error)
    assert "url" in error.detail  # lists the known keys
    assert error.source is not None and "keepers.toml" in error.source


def test_unknown_table_and_nested_unknowns(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[nodes]\nurl = 1\n").path == "nodes"
    assert error_of(tmp_path, "[runtime]\ndry = true\n").path == "runtime.dry"
    assert error_of(tmp_path, "[bots]\nfiller = 3\n").path == "bots.filler"
    assert error_of(tmp_path, "node = 3\n").path == "node"


def test_type_errors_name_key_value_and_source(tmp_path: Path) -> None:
    error = error_of(tmp_path, '[bots.filler]\ninterval_s = "fast"\n')
    assert error.path == "bots.filler.interval_s"
    assert "a number" in error.detail
    assert "'fast'" in error.detail
    assert error_of(tmp_path, "[node]\nport = 1.5\n").path == "node.port"
    assert error_of(tmp_path, "[node]\nport = true\n").path == "node.port"  # a bool is no int
    assert error_of(tmp_path, "[runtime]\ndry_run = 1\n").path == "runtime.dry_run"
    assert error_of(tmp_path, "[bots.x]\nsub_accounts = 0\n").path == "bots.x.sub_accounts"
    assert (
        error_of(tmp_path, '[bots.x]\nsub_accounts = [0, "a"]\n').path == "bots.x.sub_accounts[1]"
    )


def test_environment_type_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"KEEPERS_NODE__PORT": "eighty"})
    assert info.value.path == "node.port"
    assert info.value.source == "environment KEEPERS_NODE__PORT"
    with pytest.raises(ConfigError) as unknown:
        load_config(env={"KEEPERS_NODE_URL": "http://x"})
    assert unknown.value.path == "KEEPERS_NODE_URL"


def test_values_are_validated(tmp_path: Path) -> None:
    assert error_of(tmp_path, '[bus]\nurl = "http://broker"\n').path == "bus.url"
    assert error_of(tmp_path, '[bus]\ncluster = "a/b"\n').path == "bus.cluster"
    assert error_of(tmp_path, '[bus]\ntransport = "zmq"\n').path == "bus.transport"
    assert error_of(tmp_path, '[node]\nurl = "node:1"\n').path == "node.url"
    assert error_of(tmp_path, "[node]\nport = -1\n").path == "node.port"
    assert error_of(tmp_path, '[node]\nverifier = "gpu"\n').path == "node.verifier"
    assert error_of(tmp_path, '[runtime]\nlog_level = "loud"\n').path == "runtime.log_level"
    assert error_of(tmp_path, "[bots.x]\nsub_accounts = [70000]\n").path == "bots.x.sub_accounts[0]"
    assert error_of(tmp_path, '[bots.x]\nentry = "no colon"\n').path == "bots.x.entry"
    assert error_of(tmp_path, "[bots.X]\nenabled = true\n").path == "bots.X"
    assert error_of(tmp_path, "[keys]\ndefault = 3\n").path == "keys.default"
    assert error_of(tmp_path, '[node]\nadmin = "ab"\n').path == "node.admin"
    prices = error_of(tmp_path, '[node.genesis_prices]\n"SOL/USD" = "high"\n')
    assert prices.path == "node.genesis_prices.SOL/USD"
    zero = error_of(tmp_path, '[node.genesis_prices]\n"SOL/USD" = 0\n')
    assert zero.path == "node.genesis_prices.SOL/USD"
    error = error_of(tmp_path, "[runtime]\nrestart_initial_s = 5.0\nrestart_max_s = 1.0\n")
    assert error.path == "runtime.restart_max_s"
    assert error.source is not None  # attributed to the file


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"), env={})


def test_set_flags() -> None:
    assert parse_set_flag("bots.filler.interval_s=0.5")[:2] == ("bots.filler.interval_s", "0.5")
    config = load_config(env={}, overrides=[parse_set_flag("bots.filler.interval_s=0.5")])
    assert config.bots["filler"].interval_s == 0.5
    for bad in ("nokey", "=1", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_set_flag(bad)
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=[parse_set_flag("node.url.deeper=1")])
    assert info.value.path == "node.url"  # a value, not a table


@dataclass(frozen=True, slots=True)
class FillerParams:
    max_makers: int = 4
    min_reward: int = 0
    markets: tuple[int, ...] = (0,)
    throttle_s: float = 2.0


def test_bot_params_validate_against_the_bots_type(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "[bots.filler]\nmax_makers = 8\nmarkets = [0, 1]\n"),
        env={"KEEPERS_BOTS__FILLER__THROTTLE_S": "0.5"},
    )
    params = build_params(FillerParams, config.bots["filler"].params, "bots.filler")
    assert params == FillerParams(max_makers=8, markets=(0, 1), throttle_s=0.5)
    bad = load_config(write(tmp_path, "[bots.filler]\nmax_makerz = 8\n"), env={})
    with pytest.raises(ConfigError) as info:
        build_params(FillerParams, bad.bots["filler"].params, "bots.filler")
    assert info.value.path == "bots.filler.max_makerz"
    assert "[bots.filler]" in str(info.value)
    wrong = load_config(write(tmp_path, '[bots.filler]\nmax_makers = "many"\n'), env={})
    with pytest.raises(ConfigError) as type_info:
        build_params(FillerParams, wrong.bots["filler"].params, "bots.filler")
    assert type_info.value.path == "bots.filler.max_makers"
