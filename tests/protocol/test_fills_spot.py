"""Spot fills against resting spot orders, through signed transactions.

The spot fee structure's tier: taker fee 10 bps (rounded up), maker rebate 2 bps (truncated),
filler reward the lesser of 10% of the fee and the time-based reward. USDC balances are scaled
by 1000 (SPOT_BALANCE_PRECISION 1e9 over 6 decimals), SOL balances by 1 (9 decimals); no
interest accrues (nobody borrows), so the indices stay at 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    FillSpotOrder,
    MakerOrderRef,
    PlaceAndMakeSpotOrder,
    PlaceAndTakeSpotOrder,
)
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.types import SpotBalanceType
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    MAKER_2,
    SHORT,
    TAKER,
    P,
    actions,
    fill_records,
    new_world,
    perp_limit,
    place,
    rejected_without_change,
    spot_limit,
    spot_position,
    step,
    user_of,
)
from tests.protocol.world import SOL, USDC, World

B = BASE_PRECISION


def fill(
    w: World, taker_order_id: int, *makers: tuple[Keypair, int], **kw: Any
) -> Executed | Rejected:
    refs = tuple(MakerOrderRef(kp.pubkey, 0, oid) for kp, oid in makers)
    ix = FillSpotOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order_id, refs, **kw)
    return w.send(ix, signers=(FILLER,))


def test_spot_match_moves_exact_balances_and_fees() -> None:
    w = new_world(sol=10 * B)
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = place(w, TAKER, spot_limit(LONG, 101 * P, post_only=False))
    step(w)
    result = fill(w, t, (MAKER_1, m))
    [record] = fill_records(result)

    # 1 SOL at the maker's $100 (the taker would have paid $101): quote 100_000_000, fee
    # 100_000, rebate 20_000, filler min(10_000, 2x time reward 20_000) = 10_000, the spot fee
    # pool keeps 70_000
    assert (record.layer, record.market_index, record.fill_price) == ("dlob", SOL, 100 * P)
    assert (record.base_asset_amount, record.quote_asset_amount) == (B, 100_000_000)
    assert (record.taker_fee, record.maker_rebate, record.filler_reward) == (
        100_000,
        20_000,
        10_000,
    )
    assert record.fee_to_market == 70_000

    # taker: 20_000 USDC - 100.1 USDC, 10 + 1 SOL; maker: 20_000 + 100.02 USDC, 10 - 1 SOL
    assert spot_position(w, TAKER, USDC).scaled_balance == 19_899_900_000 * 1_000
    assert spot_position(w, TAKER, SOL).scaled_balance == 11 * B
    assert spot_position(w, MAKER_1, USDC).scaled_balance == 20_100_020_000 * 1_000
    assert spot_position(w, MAKER_1, SOL).scaled_balance == 9 * B
    assert spot_position(w, FILLER, USDC).scaled_balance == 10_000 * 1_000
    sol_market = w.program.state.spot_markets[SOL]
    assert (sol_market.spot_fee_pool.scaled_balance, sol_market.total_spot_fee) == (
        70_000 * 1_000,
        70_000,
    )
    assert sol_market.next_fill_record_id == 2
    # cumulative deposits count the trade's quote, not the fee
    assert spot_position(w, TAKER, USDC).cumulative_deposits == 19_900_000_000
    assert (
        user_of(w, TAKER).cumulative_spot_fees,
        user_of(w, MAKER_1).cumulative_spot_fees,
        user_of(w, FILLER).cumulative_spot_fees,
    ) == (-100_000, 20_000, 10_000)
    # USDC is conserved: -100_100_000 + 100_020_000 + 10_000 + 70_000 = 0
    usdc = w.program.state.spot_markets[USDC]
    total_users = sum(
        p.scaled_balance
        for u in w.program.state.users.values()
        for p in u.spot_positions
        if p.market_index == USDC
    )
    assert usdc.deposit_balance == total_users + sol_market.spot_fee_pool.scaled_balance
    assert user_of(w, TAKER).orders == [] and user_of(w, MAKER_1).orders == []
    assert actions(result) == [
        ("fill", t, "order_filled_with_match"),
        ("fill", m, "order_filled_with_match"),
    ]


def test_spot_makers_best_first_with_a_bound_and_a_partial_maker() -> None:
    w = new_world(sol=10 * B)
    m1 = place(w, MAKER_1, spot_limit(SHORT, 100_200_000, 2 * B))
    m2 = place(w, MAKER_2, spot_limit(SHORT, 100_100_000))
    t = place(w, TAKER, spot_limit(LONG, 101 * P, 3 * B, post_only=False))
    step(w)
    first, second = fill_records(
        fill(w, t, (MAKER_1, m1), (MAKER_2, m2), max_base_asset_amount=2 * B)
    )
    # maker 2 ($100.10) first for 1 SOL, then maker 1 ($100.20) for the 1 SOL the bound leaves
    assert (first.maker, first.quote_asset_amount) == ((MAKER_2.pubkey, 0), 100_100_000)
    assert (second.maker, second.quote_asset_amount) == ((MAKER_1.pubkey, 0), 100_200_000)
    # fees: ceil(100_100) = 100_100 and 100_200; rebates 20_020 and 20_040
    assert (first.taker_fee, first.maker_rebate) == (100_100, 20_020)
    assert (second.taker_fee, second.maker_rebate) == (100_200, 20_040)
    [taker_order] = user_of(w, TAKER).orders
    assert taker_order.base_asset_amount_filled == 2 * B
    assert spot_position(w, TAKER, SOL).open_bids == B
    [maker_order] = user_of(w, MAKER_1).orders
    assert maker_order.base_asset_amount_filled == B
    assert spot_position(w, MAKER_1, SOL).open_asks == -B


def test_spot_place_and_take_cancels_the_ioc_remainder() -> None:
    w = new_world(sol=10 * B)
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    step(w)
    params = spot_limit(LONG, 100 * P, 2 * B, post_only=False, immediate_or_cancel=True)
    result = w.send(
        PlaceAndTakeSpotOrder(TAKER.pubkey, 0, params, (MakerOrderRef(MAKER_1.pubkey, 0, m),)),
        signers=(TAKER,),
    )
    [record] = fill_records(result)
    # the taker is its own filler: no reward; the pool keeps 100_000 - 20_000
    assert (record.filler_reward, record.fee_to_market) == (0, 80_000)
    assert actions(result)[-1] == ("cancel", record.taker_order_id, "")
    assert user_of(w, TAKER).orders == []
    assert spot_position(w, TAKER, SOL).open_bids == 0


def test_spot_jit_maker_fills_a_resting_taker() -> None:
    w = new_world(sol=10 * B)
    t = place(w, TAKER, spot_limit(LONG, 101 * P, post_only=False))
    step(w)
    jit = spot_limit(SHORT, 100_500_000, 2 * B, immediate_or_cancel=True)
    result = w.send(
        PlaceAndMakeSpotOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), signers=(MAKER_1,)
    )
    [record] = fill_records(result)
    assert (record.layer, record.quote_asset_amount, record.filler_reward) == (
        "jit",
        100_500_000,
        0,
    )
    assert actions(result)[-1] == ("cancel", record.maker_order_id, "")
    assert user_of(w, MAKER_1).orders == []


def test_expired_spot_order_pays_the_flat_fee_from_quote() -> None:
    w = new_world(sol=10 * B)
    t = place(w, TAKER, spot_limit(LONG, 99 * P, post_only=False, max_ts=w.ts + 5))
    step(w, 30)
    result = fill(w, t)
    assert ("expire", t, "order_expired") in actions(result)
    # the spot flat filler fee ($0.01) moves between the quote balances
    assert spot_position(w, TAKER, USDC).scaled_balance == 19_999_990_000 * 1_000
    assert spot_position(w, FILLER, USDC).scaled_balance == 10_000 * 1_000
    assert spot_position(w, FILLER, USDC).balance_type == SpotBalanceType.Deposit


Scenario = Callable[[World], tuple[Any, tuple[Keypair, ...]]]


def _ref(kp: Keypair, order_id: int) -> MakerOrderRef:
    return MakerOrderRef(kp.pubkey, 0, order_id)


def _fill_ix(t: int, *makers: MakerOrderRef) -> FillSpotOrder:
    return FillSpotOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, t, makers)


def self_trade(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, TAKER, spot_limit(SHORT, 100 * P))
    t = place(w, TAKER, spot_limit(LONG, 99 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(TAKER, m)), (FILLER,)


def maker_does_not_cross(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, spot_limit(SHORT, 101 * P))
    t = place(w, TAKER, spot_limit(LONG, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def perp_maker_for_spot_taker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, spot_limit(LONG, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def post_only_taker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, spot_limit(SHORT, 101 * P))
    t = place(w, TAKER, spot_limit(LONG, 99 * P))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def perp_order_sent_to_spot_fill(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, perp_limit(LONG, 99 * P, post_only=False))
    return _fill_ix(t), (FILLER,)


def jit_maker_wrong_params(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, spot_limit(LONG, 101 * P, post_only=False))
    jit = spot_limit(SHORT, 100 * P)  # not immediate-or-cancel
    return PlaceAndMakeSpotOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), (MAKER_1,)


REJECTIONS: list[tuple[Scenario, ErrorCode]] = [
    (self_trade, ErrorCode.MakerCantFulfillOwnOrder),
    (maker_does_not_cross, ErrorCode.InvalidOrderFillPrice),
    (perp_maker_for_spot_taker, ErrorCode.InvalidMaker),
    (post_only_taker, ErrorCode.CantMatchTwoPostOnlys),
    (perp_order_sent_to_spot_fill, ErrorCode.InvalidOrderMarketType),
    (jit_maker_wrong_params, ErrorCode.InvalidOrderIOCPostOnly),
]


@pytest.mark.parametrize(("scenario", "code"), REJECTIONS, ids=[s.__name__ for s, _ in REJECTIONS])
def test_spot_rejections_leave_the_state_untouched(scenario: Scenario, code: ErrorCode) -> None:
    w = new_world(sol=10 * B)
    ix, signers = scenario(w)
    refused = rejected_without_change(w, ix, signers=signers)
    assert refused.code == code, refused
