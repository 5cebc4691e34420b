"""The perp fill engine's less travelled paths, through signed transactions: referrers on AMM
fills, a place-and-make maker paid as the filler, stale oracles, paused markets, bankrupt and
liquidated parties, the funding update a fill performs, and trigger-order edges.

Default perp fee tier 0: taker fee 10 bps rounded up, maker rebate 2 bps, referrer 15% and
referee discount 5% of the fee (both truncated), filler reward the lesser of 10% of the fee and
the time-based reward (one cent times the fourth root of 1e8 * slots since the order). The
fill world's AMM: 10_000 SOL of reserves each side (k = 1e26), peg $100, no spread.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    FillPerpOrder,
    MakerOrderRef,
    PlaceAndMakePerpOrder,
    TriggerOrder,
)
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.records import FundingPaymentRecord, FundingRateRecord
from protocol.state import OrderParams
from protocol.types import (
    MarketStatus,
    MarketType,
    OrderBitFlag,
    OrderTriggerCondition,
    OrderType,
    UserStatus,
)
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    MAKER_2,
    OTHER,
    SHORT,
    TAKER,
    P,
    actions,
    fill_records,
    new_world,
    perp_limit,
    perp_position,
    place,
    rejected_without_change,
    step,
    user_of,
)
from tests.protocol.world import SOL_PERP, World, keypair

B = BASE_PRECISION


@pytest.fixture
def w() -> World:
    return new_world()


def ref(kp: Keypair, order_id: int) -> MakerOrderRef:
    return MakerOrderRef(kp.pubkey, 0, order_id)


def fill_ix(
    taker_order_id: int, *makers: MakerOrderRef, taker: Keypair = TAKER, **kw: Any
) -> FillPerpOrder:
    return FillPerpOrder(FILLER.pubkey, 0, taker.pubkey, 0, taker_order_id, makers, **kw)


def fill(
    w: World, taker_order_id: int, *makers: MakerOrderRef, taker: Keypair = TAKER, **kw: Any
) -> Executed | Rejected:
    return w.send(fill_ix(taker_order_id, *makers, taker=taker, **kw), signers=(FILLER,))


def auction_buy(size: int = B) -> OrderParams:
    # a market buy whose auction runs from $100.00 to $100.20 over 20 slots, limit $100.60
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        size,
        SOL_PERP,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )


def match(w: World, maker: Keypair, taker: Keypair, taker_direction: Any) -> None:
    """Open a 1 SOL position for both at $100 (the maker's side opposite the taker's)."""
    m = place(w, maker, perp_limit(taker_direction.opposite(), 100 * P))
    t = place(w, taker, perp_limit(taker_direction, 100 * P, post_only=False))
    step(w)
    fill_records(fill(w, t, ref(maker, m), taker=taker))


# --- referrers ------------------------------------------------------------------------------


def test_referrer_is_paid_on_an_amm_fill(w: World) -> None:
    w.program.state.user_stats[TAKER.pubkey].referrer = OTHER.pubkey
    t = place(w, TAKER, auction_buy())
    step(w, 25)
    [record] = fill_records(fill(w, t))
    # 1 SOL from the AMM costs 100_010_002 (the reserve arithmetic of test_fills_perp);
    # fee ceil(100_010.002) = 100_011; referee discount 100_011 * 5 / 100 = 5_000 -> the taker
    # pays 95_011; referrer 100_011 * 15 / 100 = 15_001; filler min(9_501, 22_300) = 9_501;
    # market 95_011 - 9_501 - 15_001 = 70_509
    assert (record.layer, record.quote_asset_amount) == ("amm", 100_010_002)
    assert (record.taker_fee, record.referrer_reward, record.filler_reward) == (
        95_011,
        15_001,
        9_501,
    )
    assert record.fee_to_market == 70_509
    assert perp_position(w, OTHER).quote_asset_amount == 15_001
    assert perp_position(w, TAKER).quote_asset_amount == -(100_010_002 + 95_011)
    stats = w.program.state.user_stats
    assert stats[OTHER.pubkey].fees.total_referrer_reward == 15_001
    assert stats[TAKER.pubkey].fees.total_referee_discount == 5_000


def test_referrer_without_an_account_earns_nothing_and_gives_no_discount(w: World) -> None:
    w.program.state.user_stats[TAKER.pubkey].referrer = keypair(99).pubkey
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m)))
    # exactly the unreferred numbers: fee 100_000, rebate 20_000, filler 10_000, market 70_000
    assert (record.taker_fee, record.referrer_reward, record.fee_to_market) == (100_000, 0, 70_000)
    assert w.program.state.user_stats[TAKER.pubkey].fees.total_referee_discount == 0


def test_referrer_at_its_epoch_cap_earns_nothing_but_the_referee_keeps_its_discount(
    w: World,
) -> None:
    stats = w.program.state.user_stats
    stats[TAKER.pubkey].referrer = OTHER.pubkey
    # the referrer has earned the epoch's $150,000 upper bound already
    stats[OTHER.pubkey].fees.current_epoch_referrer_reward = 150_000 * 10**6
    stats[OTHER.pubkey].next_epoch_ts = w.ts + 10**6
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m)))
    # fee 100_000 less the 5% discount = 95_000; referrer 0; filler min(9_500, 20_000);
    # market 95_000 - 9_500 - 20_000 rebate = 65_500
    assert (record.taker_fee, record.referrer_reward, record.filler_reward) == (95_000, 0, 9_500)
    assert record.fee_to_market == 65_500
    # nothing paid, so no position is opened for the referrer
    assert user_of(w, OTHER).perp_positions == []
    assert stats[OTHER.pubkey].fees.current_epoch_referrer_reward == 150_000 * 10**6


def test_fill_settles_pending_funding_of_taker_and_maker_first(w: World) -> None:
    match(w, MAKER_1, TAKER, LONG)  # taker long 1 for -100_100_000, maker short 1 for +100_020_000
    amm = w.program.state.perp_markets[SOL_PERP].amm
    # funding moved both cumulative rates by 0.5 quote per base (FUNDING_RATE_PRECISION 1e9):
    # the long pays $0.50, the short receives it
    amm.cumulative_funding_rate_long = 500_000_000
    amm.cumulative_funding_rate_short = 500_000_000
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    result = fill(w, t, ref(MAKER_1, m))
    assert isinstance(result, Executed)
    payments = {
        r.record.authority: r.record.funding_payment
        for r in result.records
        if isinstance(r.record, FundingPaymentRecord)
    }
    assert payments == {TAKER.pubkey: -500_000, MAKER_1.pubkey: 500_000}
    # second fill at the same terms: taker -100_100_000 again, maker +100_020_000 again
    assert perp_position(w, TAKER).quote_asset_amount == -200_200_000 - 500_000
    assert perp_position(w, MAKER_1).quote_asset_amount == 200_040_000 + 500_000


# --- who is the filler ----------------------------------------------------------------------


def test_place_and_make_maker_earns_the_filler_reward_when_the_amm_fills(w: World) -> None:
    t = place(w, TAKER, auction_buy(2 * B))
    step(w, 10)  # the auction is at $100.10
    jit = perp_limit(SHORT, 100_100_000, B, immediate_or_cancel=True)
    result = w.send(
        PlaceAndMakePerpOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), signers=(MAKER_1,)
    )
    # the AMM ($100 and rising 0.02 per SOL) beats the $100.10 ask for both SOL:
    # quote reserve 1e26 // 9_998e9 = 10_002_000_400_080, change 2_000_400_080 + 1 ->
    # 2_000_400_081 * 100e6 // 1e9 = 200_040_008, + 1 = 200_040_009; fee 200_041
    [record] = fill_records(result)
    assert (record.layer, record.base_asset_amount, record.quote_asset_amount) == (
        "amm",
        2 * B,
        200_040_009,
    )
    # filler: min(20_004, 10_000 * floor(sqrt(sqrt(10 * 1e8))) / 100 = 17_700)
    assert (record.taker_fee, record.filler_reward, record.fee_to_market) == (
        200_041,
        17_700,
        182_341,
    )
    maker = perp_position(w, MAKER_1)
    assert (maker.base_asset_amount, maker.quote_asset_amount) == (0, 17_700)
    assert actions(result)[-1][0] == "cancel"  # its unfilled JIT order
    assert user_of(w, MAKER_1).orders == []


def test_bound_reached_leaves_the_second_maker_untouched(w: World) -> None:
    m1 = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    m2 = place(w, MAKER_2, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, 2 * B, post_only=False))
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m1), ref(MAKER_2, m2), max_base_asset_amount=B))
    assert record.maker == (MAKER_1.pubkey, 0)
    assert user_of(w, MAKER_2).orders[0].base_asset_amount_filled == 0
    assert perp_position(w, TAKER).base_asset_amount == B


# --- stale oracle ---------------------------------------------------------------------------


def test_stale_oracle_refuses_a_match_where_both_sides_add_risk(w: World) -> None:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    w.advance(121)  # past slots_before_stale_for_margin (120), oracle not republished
    result = rejected_without_change(w, fill_ix(t, ref(MAKER_1, m)), signers=(FILLER,))
    assert result.code == ErrorCode.InvalidOracle


def test_stale_oracle_lets_a_reducing_taker_fill_a_maker_at_full_margin(w: World) -> None:
    match(w, MAKER_2, TAKER, LONG)  # the taker is long 1 SOL
    m = place(w, MAKER_1, perp_limit(LONG, 100 * P))
    t = place(w, TAKER, perp_limit(SHORT, 100 * P, post_only=False))
    w.advance(121)
    # the taker closes; the maker opens, and must meet a 100% requirement ($100 of its $20k)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m)))
    assert record.base_asset_amount == B
    assert perp_position(w, TAKER).base_asset_amount == 0
    assert perp_position(w, MAKER_1).base_asset_amount == B


# --- taker, maker and market state ----------------------------------------------------------


@pytest.mark.parametrize("how", ["paused", "expired"])
def test_market_not_fillable_is_refused(w: World, how: str) -> None:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    market = w.program.state.perp_markets[SOL_PERP]
    if how == "paused":
        market.status = MarketStatus.FillPaused
    else:
        market.expiry_ts = w.ts  # expiry reached this second
    result = rejected_without_change(w, fill_ix(t, ref(MAKER_1, m)), signers=(FILLER,))
    assert (result.code, result.field) == (ErrorCode.MarketFillOrderPaused, "market_index")


def test_bankrupt_taker_is_refused(w: World) -> None:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    user_of(w, TAKER).status = UserStatus.Bankrupt
    result = rejected_without_change(w, fill_ix(t, ref(MAKER_1, m)), signers=(FILLER,))
    assert (result.code, result.field) == (ErrorCode.UserBankrupt, "taker")


def test_maker_being_liquidated_is_invalid(w: World) -> None:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    user_of(w, MAKER_1).status = UserStatus.BeingLiquidated
    result = rejected_without_change(w, fill_ix(t, ref(MAKER_1, m)), signers=(FILLER,))
    assert (result.code, result.field) == (ErrorCode.InvalidMaker, "makers[0]")


# --- the funding update ---------------------------------------------------------------------


def test_first_fill_after_the_funding_period_updates_the_funding_rate(w: World) -> None:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    early = fill(w, t, ref(MAKER_1, m))
    assert isinstance(early, Executed)
    assert not [r for r in early.records if isinstance(r.record, FundingRateRecord)]
    for _ in range(10):
        step(w, 900)  # 10 * 360 s: an hour later
    m = place(w, MAKER_2, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    late = fill(w, t, ref(MAKER_2, m))
    assert isinstance(late, Executed)
    [funding] = [r.record for r in late.records if isinstance(r.record, FundingRateRecord)]
    assert funding.market_index == SOL_PERP
    assert w.program.state.perp_markets[SOL_PERP].amm.last_funding_rate_ts == w.ts


# --- perp trigger orders ---------------------------------------------------------------------


def trigger(w: World, order_id: int) -> Executed | Rejected:
    return w.send(TriggerOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, order_id), signers=(FILLER,))


def test_triggered_order_the_user_cannot_margin_is_cancelled_but_the_keeper_is_paid(
    w: World,
) -> None:
    # an untriggered order counts for nothing, so a $1M stop rests on $20k of collateral
    stop = OrderParams(
        OrderType.TriggerMarket,
        MarketType.Perp,
        LONG,
        10_000 * B,
        SOL_PERP,
        trigger_price=90 * P,
        trigger_condition=OrderTriggerCondition.Above,
    )
    t = place(w, TAKER, stop)
    step(w)
    result = trigger(w, t)
    assert actions(result) == [("trigger", t, ""), ("cancel", t, "insufficient_free_collateral")]
    assert user_of(w, TAKER).orders == []
    position = perp_position(w, TAKER)
    assert (position.open_bids, position.open_orders, position.quote_asset_amount) == (
        0,
        0,
        -10_000,
    )
    assert perp_position(w, FILLER).quote_asset_amount == 10_000


@pytest.mark.parametrize(("age", "safe"), [(150, False), (151, True)])
def test_reduce_only_trigger_older_than_150_slots_becomes_a_safe_trigger(
    w: World, age: int, safe: bool
) -> None:
    match(w, MAKER_1, TAKER, LONG)  # the taker is long 1 SOL
    stop = OrderParams(
        OrderType.TriggerMarket,
        MarketType.Perp,
        SHORT,
        B,
        SOL_PERP,
        trigger_price=95 * P,
        trigger_condition=OrderTriggerCondition.Below,
        reduce_only=True,
    )
    t = place(w, TAKER, stop)
    step(w, age, 94 * P)
    assert isinstance(trigger(w, t), Executed)
    [order] = user_of(w, TAKER).orders
    assert bool(order.bit_flags & OrderBitFlag.SafeTriggerOrder) == safe
    assert order.trigger_condition == OrderTriggerCondition.TriggeredBelow
