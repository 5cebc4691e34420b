"""What bots see: the market state from the bus, the account cache from the node, the view."""

from __future__ import annotations

import asyncio
import contextlib
from types import MappingProxyType

import pytest

from keepers.runtime.timing import ManualTimer
from keepers.runtime.view import AccountRefresher, MarketState
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import User
from tests.keepers.runtime_fakes import FakeNode, TransientNodeError, oracle_delivery, slot_delivery

ME = b"\x0a" * 32


def node_with_markets() -> FakeNode:
    node = FakeNode()
    node.perp[0] = PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(oracle="SOL/USD"))
    node.perp[2] = PerpMarket(market_index=2, name="ETH-PERP", amm=AMM(oracle="ETH/USD"))
    node.spot[0] = SpotMarket(market_index=0, name="USDC", oracle="USDC/USD", decimals=6)
    node.users[(ME, 0)] = User(authority=ME)
    return node


def test_slots_only_move_forward_and_oracles_keep_the_newest() -> None:
    timer = ManualTimer()
    state = MarketState(timer)
    assert state.slot_age() is None
    state.apply(slot_delivery(10, ts=1000))
    timer._now = 2.0
    state.apply(slot_delivery(9, ts=999))  # a stale (retained, replayed) slot
    assert (state.slot, state.ts) == (10, 1000)
    assert state.slot_age() == 2.0
    state.apply(slot_delivery(11, ts=1001))
    assert state.slot_age() == 0.0
    state.apply(oracle_delivery("SOL/USD", 150_000_000, 11))
    state.apply(oracle_delivery("SOL/USD", 149_000_000, 10))  # older: ignored
    assert state.oracles["SOL/USD"].price == 150_000_000


def test_the_view_is_a_read_only_cut() -> None:
    state = MarketState(ManualTimer())
    state.apply(slot_delivery(20))
    state.apply(oracle_delivery("SOL/USD", 100_000_000, 17))
    state.perp_markets = {0: PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(oracle="SOL/USD"))}
    state.users = {(ME, 0): User(authority=ME), (ME, 1): User(authority=ME, sub_account_id=1)}
    view = state.view(bot="b", authority=ME, tick=1, sub_account_ids=(0,))
    assert isinstance(view.oracles, MappingProxyType)
    with pytest.raises(TypeError):
        view.oracles["X"] = view.oracles["SOL/USD"]  # type: ignore[index]
    assert list(view.users) == [0]  # only the subscribed sub-accounts
    assert view.user() is not None
    assert view.user(1) is None
    assert view.user_key(0) == (ME, 0)
    oracle = view.perp_oracle(0)
    assert oracle is not None
    assert (oracle.price, oracle.delay) == (100_000_000, 3)  # published at 17, now 20
    assert view.perp_oracle(5) is None
    assert view.oracle_price_data("none") is None
    state.apply(slot_delivery(21))
    assert view.slot == 20  # a cut: later updates do not reach it


@pytest.mark.asyncio
async def test_refresh_installs_markets_and_users_and_skips_unknown_users() -> None:
    node = node_with_markets()
    state = MarketState(ManualTimer())
    refresher = AccountRefresher(node, state)
    refresher.watch_users([(ME, 0), (ME, 1)])  # sub-account 1 does not exist yet
    await refresher.refresh_once()
    assert sorted(state.perp_markets) == [0, 2]
    assert sorted(state.spot_markets) == [0]
    assert list(state.users) == [(ME, 0)]
    assert state.slot == node.current_slot  # no bus slot yet: taken from the node
    assert refresher.refreshes == 1


@pytest.mark.asyncio
async def test_a_failed_refresh_keeps_the_previous_copies() -> None:
    node = node_with_markets()
    state = MarketState(ManualTimer())
    refresher = AccountRefresher(node, state)
    refresher.watch_users([(ME, 0)])
    await refresher.refresh_once()
    before = state.perp_markets
    node.fail_reads = TransientNodeError("node restarting")
    with pytest.raises(TransientNodeError):
        await refresher.refresh_once()
    assert state.perp_markets is before
    assert list(state.users) == [(ME, 0)]


@pytest.mark.asyncio
async def test_refresher_runs_on_its_interval_survives_failures_and_answers_requests() -> None:
    timer = ManualTimer()
    node = node_with_markets()
    state = MarketState(timer)
    refresher = AccountRefresher(node, state, interval=1.0, timer=timer)
    task = asyncio.create_task(refresher.run())
    try:
        await timer.advance(0)
        assert refresher.refreshes == 1
        node.fail_reads = TransientNodeError("down")
        await timer.advance(1.0)
        assert refresher.failures == 1
        node.fail_reads = None
        await timer.advance(1.0)
        assert refresher.refreshes == 2
        refresher.request()  # after an accepted transaction: at once, not at the interval
        await timer.advance(0)
        assert refresher.refreshes == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
