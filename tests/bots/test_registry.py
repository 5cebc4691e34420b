"""The bots as the runtime finds them: by name, with their ``[bots.<name>]`` parameters
validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.filler import Filler, FillerParams
from bots.funding_rate_updater import FundingRateUpdater, FundingRateUpdaterParams
from bots.jit_maker import JitMaker, JitMakerParams
from bots.trigger import Trigger, TriggerParams
from keepers.config import ConfigError, load_config
from keepers.keys import write_keypair_file
from keepers.runtime.bot import Bot
from keepers.runtime.process import prepare_bots
from keepers.runtime.registry import resolve_bot
from tests.protocol.world import keypair

KEY = keypair(121)


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        ("filler", Filler),
        ("trigger", Trigger),
        ("jit_maker", JitMaker),
        ("jit-maker", JitMaker),
        ("funding_rate_updater", FundingRateUpdater),
        ("funding-rate-updater", FundingRateUpdater),
    ],
)
def test_every_bot_is_found_by_name(name: str, factory: object) -> None:
    assert resolve_bot(name) is factory


def _config(tmp_path: Path, body: str) -> Path:
    key = tmp_path / "bot.json"
    write_keypair_file(key, KEY, overwrite=True)
    path = tmp_path / "keepers.toml"
    path.write_text(f'[keys]\ndefault = "{key}"\n{body}')
    return path


def test_a_config_file_builds_every_bot_with_its_typed_params(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "[bots.filler]\nmax_makers = 6\nperp_markets = [0, 1]\n"
        "[bots.trigger]\nretry_slots = 3\n"
        "[bots.jit_maker]\nspread_bps = 20\ninterval_s = 0.5\n"
        "[bots.funding_rate_updater]\nbackoff_slots = 5\n",
    )
    config = load_config(path, env={"KEEPERS_BOTS__JIT_MAKER__MAX_ORDER_BASE": "2000000000"})
    prepared = {p.setup.name: p for p in prepare_bots(config, list(config.bots))}
    assert prepared["filler"].setup.context.params == FillerParams(
        max_makers=6, perp_markets=(0, 1)
    )
    assert prepared["trigger"].setup.context.params == TriggerParams(retry_slots=3)
    assert prepared["jit_maker"].setup.context.params == JitMakerParams(
        spread_bps=20, max_order_base=2_000_000_000
    )
    assert prepared["jit_maker"].setup.interval == 0.5
    assert prepared["funding_rate_updater"].setup.context.params == FundingRateUpdaterParams(
        backoff_slots=5
    )
    for p in prepared.values():
        assert p.setup.context.authority == KEY.pubkey
        assert isinstance(p.setup.factory(p.setup.context), Bot)
    assert prepared["filler"].subscriptions.perp_markets == (0, 1)
    assert prepared["filler"].subscriptions.dlob


def test_a_bad_parameter_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "[bots.filler]\nmax_makerz = 2\n"), env={})
    with pytest.raises(ConfigError) as info:
        prepare_bots(config, ["filler"])
    assert info.value.path == "bots.filler.max_makerz"
    config = load_config(_config(tmp_path, '[bots.trigger]\nretry_slots = "soon"\n'), env={})
    with pytest.raises(ConfigError) as typed:
        prepare_bots(config, ["trigger"])
    assert typed.value.path == "bots.trigger.retry_slots"
