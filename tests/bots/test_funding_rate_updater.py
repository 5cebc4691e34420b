"""The funding-rate updater: when it cranks, how it retries, and its cranks through the program.

SOL-PERP of :func:`tests.protocol.world.make_state` last updated funding at 1_700_000_000,
800 s past an hour boundary (1_700_000_000 % 3_600 == 800, within a third of the period),
so the next update is due at the following boundary: 1_700_002_800.
"""

from __future__ import annotations

import pytest

from bots.funding_rate_updater import (
    FUNDING_KIND,
    FundingRateUpdater,
    FundingRateUpdaterParams,
)
from keepers.config import ConfigError, build_params
from keepers.runtime.bot import Action, Bot, LearnsFromOutcomes, Stream
from keepers.runtime.view import View
from protocol.constants import PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions.funding import UpdateFundingRate
from protocol.records import FundingRateRecord
from protocol.state.perp_market import PerpMarket
from protocol.types import MarketStatus
from tests.bots.helpers import accepted, context, execute, make_view, outcome_of, rejected
from tests.bots.helpers import world_view as cut_view
from tests.protocol.world import SOL_PERP, START_TS, World, keypair, make_state

KEEPER = keypair(111)
DUE = START_TS + 2_800
P = PRICE_PRECISION


def market(**changes: object) -> PerpMarket:
    perp = make_state().perp_markets[SOL_PERP]
    for name, value in changes.items():
        if hasattr(perp.amm, name):
            setattr(perp.amm, name, value)
        else:
            setattr(perp, name, value)
    return perp


def view(slot: int, ts: int, *markets: PerpMarket) -> View:
    chosen = markets or (market(),)
    return make_view(
        authority=KEEPER.pubkey,
        slot=slot,
        ts=ts,
        oracles={},
        perp_markets={m.market_index: m for m in chosen},
    )


def updater(**params: object) -> FundingRateUpdater:
    return FundingRateUpdater(
        context("funding_rate_updater", KEEPER, FundingRateUpdaterParams(**params))  # type: ignore[arg-type]
    )


def test_it_cranks_a_market_only_when_the_hour_rule_allows() -> None:
    bot = updater()
    assert not bot.is_due(market(), DUE - 1)
    assert bot.is_due(market(), DUE)
    assert bot.decide(view(5_000, DUE - 1)) == []
    [action] = bot.decide(view(5_001, DUE))
    assert action == Action(
        instructions=(UpdateFundingRate(SOL_PERP),),
        kind=FUNDING_KIND,
        dedupe_key=("funding", SOL_PERP),
        correlation_id="funding_rate_updater-5001-perp0-1",
    )
    # an update 1_500 s late (more than a third of the hour) skips the next boundary: the
    # wait is 3_600 * 2 - 1_500 = 5_700 s after it, i.e. the boundary at DUE + 7_200
    late = market(last_funding_rate_ts=DUE + 1_500)
    assert not bot.is_due(late, DUE + 3_600)
    assert not bot.is_due(late, DUE + 7_199)
    assert bot.is_due(late, DUE + 7_200)


def test_markets_it_must_not_crank_are_skipped() -> None:
    bot = updater()
    assert bot.decide(view(5_000, DUE, market(status=MarketStatus.FundingPaused))) == []
    assert bot.decide(view(5_000, DUE, market(status=MarketStatus.Initialized))) == []
    assert bot.decide(view(5_000, DUE, market(funding_period=0))) == []
    assert updater(perp_markets=(1,)).decide(view(5_000, DUE)) == []


def test_one_update_per_boundary_while_the_cached_market_catches_up() -> None:
    bot = updater()
    [action] = bot.decide(view(5_000, DUE))
    assert bot.decide(view(5_000, DUE)) == []  # one attempt per slot
    bot.on_outcome(accepted(action))
    # the cached market still shows the old last_funding_rate_ts: left alone
    assert bot.decide(view(5_001, DUE + 1)) == []
    assert bot.decide(view(5_050, DUE + 20)) == []
    # refreshed: the next hour's rule governs again
    refreshed = market(last_funding_rate_ts=DUE + 20)
    assert bot.decide(view(5_051, DUE + 21, refreshed)) == []
    assert len(bot.decide(view(9_000, DUE + 3_600, refreshed))) == 1


def test_not_updated_at_the_boundary_is_retried_at_the_next_slot_then_backs_off() -> None:
    bot = updater(boundary_retries=2, backoff_slots=10)
    slot = 5_000
    for _ in range(2):
        [action] = bot.decide(view(slot, DUE))
        bot.on_outcome(rejected(action, ErrorCode.FundingWasNotUpdated, "market_index"))
        slot += 1
    # the third refusal in a row backs off 10 slots, the fourth 20
    [action] = bot.decide(view(slot, DUE))
    bot.on_outcome(rejected(action, ErrorCode.FundingWasNotUpdated))
    assert bot.decide(view(slot + 9, DUE)) == []
    [action] = bot.decide(view(slot + 10, DUE))
    bot.on_outcome(rejected(action, ErrorCode.FundingWasNotUpdated))
    assert bot.decide(view(slot + 29, DUE)) == []
    [action] = bot.decide(view(slot + 30, DUE))
    bot.on_outcome(accepted(action))
    assert bot.failures == {}


def test_unprofitable_or_oracle_refusals_back_off_exponentially_up_to_a_cap() -> None:
    bot = updater(backoff_slots=10, max_backoff_slots=30)
    [action] = bot.decide(view(5_000, DUE))
    bot.on_outcome(rejected(action, ErrorCode.InvalidFundingProfitability))
    assert bot.decide(view(5_009, DUE)) == []
    [action] = bot.decide(view(5_010, DUE))
    bot.on_outcome(rejected(action, ErrorCode.InvalidOracle))
    assert bot.decide(view(5_029, DUE)) == []  # 20 slots
    [action] = bot.decide(view(5_030, DUE))
    bot.on_outcome(rejected(action, ErrorCode.InvalidOracle))
    assert bot.decide(view(5_059, DUE)) == []  # 40 capped at 30
    assert len(bot.decide(view(5_060, DUE))) == 1


def test_shape_and_params() -> None:
    bot = updater()
    assert isinstance(bot, Bot)
    assert isinstance(bot, LearnsFromOutcomes)
    assert bot.subscriptions.streams == frozenset({Stream.SLOT})
    assert not bot.subscriptions.dlob
    assert bot.subscriptions.sub_account_ids == ()
    assert build_params(
        FundingRateUpdaterParams, {"backoff_slots": 5}, "bots.funding"
    ) == FundingRateUpdaterParams(backoff_slots=5)
    with pytest.raises(ConfigError):
        build_params(FundingRateUpdaterParams, {"backoff_slots": 0}, "bots.funding")


def test_through_the_program_it_waits_for_the_hour_then_updates() -> None:
    w = World()
    bot = FundingRateUpdater(context("funding_rate_updater", KEEPER, FundingRateUpdaterParams()))
    w.advance(slots=10, seconds=2_799)
    w.set_price("SOL/USD", 100 * P)
    assert bot.decide(cut_view(w, KEEPER)) == []
    # sent anyway, the program agrees it is too early
    [early] = execute(w, KEEPER, [Action((UpdateFundingRate(SOL_PERP),), FUNDING_KIND, "x")])
    assert isinstance(early, Rejected)
    assert early.code == ErrorCode.FundingWasNotUpdated
    w.advance(slots=3, seconds=1)
    w.set_price("SOL/USD", 100 * P)
    [action] = bot.decide(cut_view(w, KEEPER))
    [result] = execute(w, KEEPER, [action])
    bot.on_outcome(outcome_of(action, result))
    [record] = [
        r.record
        for r in result.records  # type: ignore[union-attr]
        if isinstance(r.record, FundingRateRecord)
    ]
    assert (record.market_index, record.ts) == (SOL_PERP, DUE)
    assert w.program.state.perp_markets[SOL_PERP].amm.last_funding_rate_ts == DUE
    # the view now shows the update: nothing is due until the next hour
    w.advance(slots=3, seconds=1)
    assert bot.decide(cut_view(w, KEEPER)) == []
