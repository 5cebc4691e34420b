"""Perp fills through signed transactions: matches, the AMM, auctions, expiry, IOC, JIT makers,
referrers, and every rejection code of the fill path with the state left untouched.

Numbers are the default perp fee tier 0 (taker fee 10 bps rounded up, maker rebate 2 bps
truncated, filler reward the lesser of 10% of the fee and the time-based reward: one cent times
the matched-fill multiplier times the fourth root of the slots since the order, referrer 15%,
referee discount 5%) on the fill world (:mod:`tests.protocol.fill_world`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    CancelOrder,
    Deposit,
    FillPerpOrder,
    MakerOrderRef,
    PlaceAndMakePerpOrder,
    PlaceAndTakePerpOrder,
)
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.state import OrderParams
from protocol.types import MarketType, OrderStatus, OrderTriggerCondition, OrderType
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
    spot_limit,
    step,
    user_of,
)
from tests.protocol.world import SOL, World, keypair

B = BASE_PRECISION


def fill(
    w: World, taker_order_id: int, *makers: tuple[Keypair, int], **kw: Any
) -> Executed | Rejected:
    refs = tuple(MakerOrderRef(kp.pubkey, 0, oid) for kp, oid in makers)
    ix = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order_id, refs, **kw)
    return w.send(ix, signers=(FILLER,))


def auction_buy(size: int = B) -> OrderParams:
    # a market buy whose auction runs from $100.00 to $100.20 over 20 slots (the program's
    # sanitizing keeps these params: they are no more aggressive than its baseline)
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        size,
        0,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )


# --- a match ----------------------------------------------------------------------------------
def test_maker_taker_match_with_fees_and_filler_reward() -> None:
    w = new_world()
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    # $100 does not cross the AMM's $100 ask, so the taker order is a plain limit order
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    result = fill(w, t, (MAKER_1, m))
    [record] = fill_records(result)

    # 1 SOL at the maker's $100: quote 100_000_000
    # taker fee ceil(100_000_000 * 100 / 100_000) = 100_000; rebate 100_000_000 * 20 / 100_000
    # = 20_000; filler: multiplier 2x (maker at the oracle) -> time reward
    # 10_000 * 2000 / 1000 * sqrt(sqrt(1 * 1e8)) / 100 = 20_000, size reward 100_000 / 10 =
    # 10_000 -> 10_000; market keeps 100_000 - 10_000 - 20_000 = 70_000
    assert (record.layer, record.maker, record.maker_order_id) == ("dlob", (MAKER_1.pubkey, 0), m)
    assert (record.base_asset_amount, record.quote_asset_amount, record.fill_price) == (
        B,
        100_000_000,
        100 * P,
    )
    assert (record.taker_fee, record.maker_rebate, record.filler_reward) == (
        100_000,
        20_000,
        10_000,
    )
    assert (record.fee_to_market, record.referrer_reward) == (70_000, 0)
    assert record.filler == (FILLER.pubkey, 0)

    taker = perp_position(w, TAKER)
    assert (taker.base_asset_amount, taker.quote_asset_amount) == (B, -100_100_000)
    assert (taker.quote_entry_amount, taker.quote_break_even_amount) == (
        -100_000_000,
        -100_100_000,
    )
    maker = perp_position(w, MAKER_1)
    assert (maker.base_asset_amount, maker.quote_asset_amount) == (-B, 100_020_000)
    assert perp_position(w, FILLER).quote_asset_amount == 10_000

    market = w.program.state.perp_markets[0]
    amm = market.amm
    assert (amm.base_asset_amount_long, amm.base_asset_amount_short) == (B, -B)
    assert amm.base_asset_amount_with_amm == 0
    # the users' quote: -100_100_000 + 100_020_000 + 10_000
    assert amm.quote_asset_amount == -70_000
    assert (amm.total_fee, amm.total_exchange_fee, amm.total_fee_minus_distributions) == (
        70_000,
        70_000,
        70_000,
    )
    assert market.last_fill_price == 100 * P
    assert market.next_fill_record_id == 2

    # both orders filled and gone; 30-day volumes from zero are the fill's quote
    assert user_of(w, TAKER).orders == [] and user_of(w, MAKER_1).orders == []
    stats = w.program.state.user_stats
    assert stats[TAKER.pubkey].taker_volume_30d == 100_000_000
    assert stats[MAKER_1.pubkey].maker_volume_30d == 100_000_000
    assert stats[FILLER.pubkey].filler_volume_30d == 100_000_000
    assert stats[TAKER.pubkey].fees.total_fee_paid == 100_000
    assert stats[MAKER_1.pubkey].fees.total_fee_rebate == 20_000
    assert actions(result)[-2:] == [
        ("fill", t, "order_filled_with_match"),
        ("fill", m, "order_filled_with_match"),
    ]


def test_makers_fill_best_price_first_up_to_the_fillers_bound() -> None:
    # the AMM quotes $101: both asks are better, and the $100.50 bid does not cross the AMM
    w = new_world(amm_price=101 * P)
    m1 = place(w, MAKER_1, perp_limit(SHORT, 100_300_000))
    m2 = place(w, MAKER_2, perp_limit(SHORT, 100_200_000))
    t = place(w, TAKER, perp_limit(LONG, 100_500_000, 2 * B, post_only=False))
    step(w)
    result = fill(w, t, (MAKER_1, m1), (MAKER_2, m2), max_base_asset_amount=150 * B // 100)
    first, second = fill_records(result)

    # maker 2 ($100.20) first: 1 SOL, quote 100_200_000, fee 100_200, rebate 20_040; the
    # multiplier is 2x - 2 (20 bps above the oracle) -> clamped to 1x: time reward 10_000, size
    # reward 10_020 -> 10_000; market 100_200 - 10_000 - 20_040 = 70_160
    assert (first.maker, first.base_asset_amount, first.quote_asset_amount) == (
        (MAKER_2.pubkey, 0),
        B,
        100_200_000,
    )
    assert (first.taker_fee, first.maker_rebate, first.filler_reward, first.fee_to_market) == (
        100_200,
        20_040,
        10_000,
        70_160,
    )
    # then maker 1 for the 0.5 SOL the bound leaves: ceil(100_300_000 * 0.5) = 50_150_000,
    # fee 50_150, rebate 10_030, filler min(5_015, 10_000) = 5_015, market 35_105
    assert (second.maker, second.base_asset_amount, second.quote_asset_amount) == (
        (MAKER_1.pubkey, 0),
        B // 2,
        50_150_000,
    )
    assert (second.taker_fee, second.maker_rebate, second.filler_reward) == (
        50_150,
        10_030,
        5_015,
    )
    assert second.fee_to_market == 35_105

    [taker_order] = user_of(w, TAKER).orders
    assert (taker_order.base_asset_amount_filled, taker_order.status) == (
        150 * B // 100,
        OrderStatus.Open,
    )
    [maker_order] = user_of(w, MAKER_1).orders
    assert maker_order.base_asset_amount_filled == B // 2
    assert user_of(w, MAKER_2).orders == []
    assert perp_position(w, TAKER).open_bids == B // 2
    assert perp_position(w, MAKER_1).open_asks == -(B // 2)
    assert perp_position(w, FILLER).quote_asset_amount == 15_015


# --- the AMM ------------------------------------------------------------------------------------
def test_amm_fill_exact_quote_fee_and_fee_pool() -> None:
    w = new_world()
    t = place(w, TAKER, auction_buy())
    step(w, 25)  # past the 20-slot auction: the limit is the order's $100.60
    result = fill(w, t)
    [record] = fill_records(result)

    # buying 1 SOL from 10_000 SOL of reserves (k = 1e26, peg $100, no spread):
    # base 10_000e9 -> 9_999e9, quote reserve 1e26 // 9_999e9 = 10_001_000_100_010, change
    # 1_000_100_010 + 1 (rounding for the AMM) -> 1_000_100_011 * 100e6 // 1e9 = 100_010_001,
    # + 1 = 100_010_002. Fee ceil(100_010.002) = 100_011; filler: 10% = 10_001 vs time
    # reward (1x) 10_000 * sqrt(sqrt(25e8)) / 100 = 10_000 * 223 / 100 = 22_300 -> 10_001
    assert (record.layer, record.maker, record.maker_order_id) == ("amm", None, None)
    assert (record.base_asset_amount, record.quote_asset_amount) == (B, 100_010_002)
    assert (record.taker_fee, record.filler_reward, record.fee_to_market) == (
        100_011,
        10_001,
        90_010,
    )
    assert record.quote_asset_amount_surplus == 0

    amm = w.program.state.perp_markets[0].amm
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (
        9_999 * 10**9,
        10_001_000_100_010,
    )
    assert amm.base_asset_amount_with_amm == B  # the users' net position against the AMM
    assert (amm.total_fee, amm.total_exchange_fee, amm.total_mm_fee) == (90_010, 100_011, 0)
    assert amm.total_fee_minus_distributions == 90_010
    assert amm.net_revenue_since_last_funding == 90_010
    taker = perp_position(w, TAKER)
    assert (taker.base_asset_amount, taker.quote_asset_amount) == (B, -100_110_013)
    assert perp_position(w, FILLER).quote_asset_amount == 10_001


def test_amm_fills_ahead_of_a_worse_maker_up_to_that_makers_price() -> None:
    # AMM at $100, the maker asks $100.50: the AMM fills first (up to $100.50), the maker is
    # not needed
    w = new_world()
    m = place(w, MAKER_1, perp_limit(SHORT, 100_500_000))
    t = place(w, TAKER, auction_buy())
    step(w, 25)
    [record] = fill_records(fill(w, t, (MAKER_1, m)))
    assert (record.layer, record.quote_asset_amount) == ("amm", 100_010_002)
    assert user_of(w, MAKER_1).orders[0].base_asset_amount_filled == 0


# --- auctions -----------------------------------------------------------------------------------
def test_a_maker_above_the_auction_price_fills_once_the_auction_reaches_it() -> None:
    w = new_world(amm_price=101 * P)
    t = place(w, TAKER, auction_buy())
    [order] = user_of(w, TAKER).orders
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        100 * P,
        100_200_000,
        20,
    )
    m = place(w, MAKER_1, perp_limit(SHORT, 100_100_000))
    # the auction price after t slots is 100_000_000 + 200_000 * t / 20
    step(w, 5)  # $100.05 < $100.10
    ix = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, t, (MakerOrderRef(MAKER_1.pubkey, 0, m),))
    refused = rejected_without_change(w, ix, signers=(FILLER,))
    assert (refused.code, refused.field) == (ErrorCode.InvalidOrderFillPrice, "makers[0]")

    step(w, 5)  # $100.10: the maker crosses
    [record] = fill_records(fill(w, t, (MAKER_1, m)))
    # 1 SOL at $100.10: fee 100_100, rebate 20_020; multiplier 2x - 1 = 1x, time reward
    # 10_000 * sqrt(sqrt(10 * 1e8)) / 100 = 10_000 * 177 / 100 = 17_700, size 10_010
    assert (record.quote_asset_amount, record.taker_fee, record.maker_rebate) == (
        100_100_000,
        100_100,
        20_020,
    )
    assert (record.filler_reward, record.fee_to_market) == (10_010, 70_070)


# --- expiry, IOC ----------------------------------------------------------------------------------
def test_an_expired_taker_order_is_cancelled_and_the_filler_paid_the_flat_fee() -> None:
    w = new_world()
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False, max_ts=w.ts + 10))
    step(w, 30)  # 12 seconds later
    result = fill(w, t)
    assert fill_records(result) == []
    assert ("expire", t, "order_expired") in actions(result)
    assert user_of(w, TAKER).orders == []
    # the flat filler fee (state.perp_fee_structure.flat_filler_fee = $0.01) moves
    assert perp_position(w, TAKER).quote_asset_amount == -10_000
    assert perp_position(w, FILLER).quote_asset_amount == 10_000
    assert perp_position(w, TAKER).open_bids == 0


def test_ioc_remainder_is_cancelled_after_place_and_take() -> None:
    w = new_world()
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    step(w)
    params = perp_limit(LONG, 100 * P, 2 * B, post_only=False, immediate_or_cancel=True)
    result = w.send(
        PlaceAndTakePerpOrder(TAKER.pubkey, 0, params, (MakerOrderRef(MAKER_1.pubkey, 0, m),)),
        signers=(TAKER,),
    )
    [record] = fill_records(result)
    # the taker fills itself: no filler reward, the market keeps 100_000 - 20_000
    assert (record.base_asset_amount, record.filler_reward, record.fee_to_market) == (
        B,
        0,
        80_000,
    )
    assert record.filler == (TAKER.pubkey, 0)
    taker_order_id = record.taker_order_id
    assert actions(result) == [
        ("place", taker_order_id, ""),
        ("fill", taker_order_id, "order_filled_with_match"),
        ("fill", m, "order_filled_with_match"),
        ("cancel", taker_order_id, ""),
    ]
    assert user_of(w, TAKER).orders == []
    position = perp_position(w, TAKER)
    assert (position.base_asset_amount, position.open_bids, position.open_orders) == (B, 0, 0)


# --- JIT ----------------------------------------------------------------------------------------
def test_jit_maker_answers_an_auction_and_its_remainder_is_cancelled() -> None:
    w = new_world(amm_price=101 * P)
    t = place(w, TAKER, auction_buy())
    step(w, 10)  # the auction is at $100.10
    jit = perp_limit(SHORT, 100_100_000, 2 * B, immediate_or_cancel=True)
    result = w.send(
        PlaceAndMakePerpOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), signers=(MAKER_1,)
    )
    [record] = fill_records(result)
    # the JIT maker is the filler: no filler reward; market 100_100 - 20_020 = 80_080
    assert (record.layer, record.maker, record.base_asset_amount) == (
        "jit",
        (MAKER_1.pubkey, 0),
        B,
    )
    assert (record.taker_fee, record.maker_rebate, record.filler_reward) == (100_100, 20_020, 0)
    assert record.fee_to_market == 80_080
    jit_id = record.maker_order_id
    assert ("fill", jit_id, "order_filled_with_match_jit") in actions(result)
    assert actions(result)[-1] == ("cancel", jit_id, "")
    assert user_of(w, MAKER_1).orders == []
    assert perp_position(w, MAKER_1).base_asset_amount == -B


def test_jit_maker_that_does_not_cross_the_auction_price_now_is_refused() -> None:
    w = new_world(amm_price=101 * P)
    t = place(w, TAKER, auction_buy())
    step(w, 10)  # $100.10 < $100.15
    jit = perp_limit(SHORT, 100_150_000, B, immediate_or_cancel=True)
    refused = rejected_without_change(
        w, PlaceAndMakePerpOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), signers=(MAKER_1,)
    )
    assert refused.code == ErrorCode.InvalidOrderFillPrice


# --- maker cleanup ------------------------------------------------------------------------------
def test_expired_and_out_of_band_makers_are_cancelled_and_the_fill_goes_on() -> None:
    w = new_world()
    stale = place(w, MAKER_1, perp_limit(SHORT, 100 * P, max_ts=w.ts + 5))
    good = place(w, MAKER_2, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w, 30)  # 12 seconds: maker 1's order has expired
    result = fill(w, t, (MAKER_1, stale), (MAKER_2, good))
    assert ("expire", stale, "order_expired") in actions(result)
    [record] = fill_records(result)
    assert record.maker == (MAKER_2.pubkey, 0)
    # maker 1 paid the flat $0.01 to the filler, on top of the match's filler reward: the taker
    # order is 30 slots old, 2x: min(10_000, 20_000 * sqrt(sqrt(30e8)) / 100 = 46_800) = 10_000
    assert perp_position(w, MAKER_1).quote_asset_amount == -10_000
    assert perp_position(w, FILLER).quote_asset_amount == 10_000 + 10_000


def test_a_maker_ask_far_below_the_oracle_is_cancelled_instead_of_filled() -> None:
    w = new_world()
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    # the oracle jumps to $112: the $100 ask is 10.7% under it, past the 10% initial margin
    step(w, 1, 112 * P)
    result = fill(w, t, (MAKER_1, m))
    assert fill_records(result) == []
    assert ("cancel", m, "oracle_price_breached_limit_price") in actions(result)
    assert user_of(w, MAKER_1).orders == []
    assert perp_position(w, FILLER).quote_asset_amount == 10_000
    [taker_order] = user_of(w, TAKER).orders
    assert taker_order.base_asset_amount_filled == 0


def test_a_fill_past_max_open_interest_is_refused() -> None:
    w = new_world()
    w.program.state.perp_markets[0].amm.max_open_interest = B
    m, t = _basic(w)
    refused = rejected_without_change(w, _fill_ix(t, _ref(MAKER_1, m)), signers=(FILLER,))
    assert refused.code == ErrorCode.MaxOpenInterest


# --- referrer -------------------------------------------------------------------------------------
def test_referrer_earns_its_share_and_the_referee_a_discount() -> None:
    w = new_world()
    w.program.state.user_stats[TAKER.pubkey].referrer = OTHER.pubkey
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    [record] = fill_records(fill(w, t, (MAKER_1, m)))
    # fee 100_000: referee discount 5% = 5_000 -> taker pays 95_000; referrer 15% of the
    # undiscounted fee = 15_000; filler min(9_500, 20_000) = 9_500; rebate 20_000;
    # market 95_000 - 9_500 - 15_000 - 20_000 = 50_500
    assert (record.taker_fee, record.referrer_reward, record.filler_reward) == (
        95_000,
        15_000,
        9_500,
    )
    assert record.fee_to_market == 50_500
    assert perp_position(w, OTHER).quote_asset_amount == 15_000
    referrer_stats = w.program.state.user_stats[OTHER.pubkey]
    assert referrer_stats.fees.total_referrer_reward == 15_000
    assert referrer_stats.fees.current_epoch_referrer_reward == 15_000
    assert w.program.state.user_stats[TAKER.pubkey].fees.total_referee_discount == 5_000


# --- rejections -----------------------------------------------------------------------------------
Scenario = Callable[[World], tuple[Any, tuple[Keypair, ...]]]


def _fill_ix(t: int, *makers: MakerOrderRef, **kw: Any) -> FillPerpOrder:
    return FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, t, makers, **kw)


def _ref(kp: Keypair, order_id: int) -> MakerOrderRef:
    return MakerOrderRef(kp.pubkey, 0, order_id)


def _basic(w: World) -> tuple[int, int]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    return m, t


def unsigned_filler(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (OTHER,)


def filler_without_account(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    stranger = keypair(99)
    ix = FillPerpOrder(stranger.pubkey, 0, TAKER.pubkey, 0, t, (_ref(MAKER_1, m),))
    return ix, (stranger,)


def unknown_taker_order(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, _ = _basic(w)
    return _fill_ix(55, _ref(MAKER_1, m)), (FILLER,)


def maker_user_missing(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    _, t = _basic(w)
    return _fill_ix(t, _ref(keypair(98), 1)), (FILLER,)


def maker_in_another_market(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    w.ok(Deposit(MAKER_1.pubkey, 0, SOL, 5 * B), signers=(MAKER_1,))
    spot = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    _, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, spot)), (FILLER,)


def zero_max(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, m), max_base_asset_amount=0), (FILLER,)


def max_off_step(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, m), max_base_asset_amount=B // 1000), (FILLER,)


def nothing_crosses(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    # a $99 bid meets no maker and does not cross the AMM's $100 ask
    place(w, TAKER, perp_limit(LONG, 99 * P, post_only=False))
    step(w)
    return _fill_ix(1), (FILLER,)


def maker_reduce_only_cannot_reduce(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P, reduce_only=True))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def untriggered_maker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    stop = OrderParams(
        OrderType.TriggerLimit,
        MarketType.Perp,
        SHORT,
        B,
        0,
        price=100 * P,
        trigger_price=90 * P,
        trigger_condition=OrderTriggerCondition.Below,
    )
    m = place(w, MAKER_1, stop)
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def resting_maker_younger_than_resting_taker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    # both are resting limit orders without post-only: the younger one cannot make
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def place_and_take_post_only(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    ix = PlaceAndTakePerpOrder(TAKER.pubkey, 0, perp_limit(LONG, 99 * P), (_ref(MAKER_1, m),))
    return ix, (TAKER,)


def place_and_take_by_a_stranger(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    ix = PlaceAndTakePerpOrder(TAKER.pubkey, 0, perp_limit(LONG, 99 * P, post_only=False))
    return ix, (OTHER,)


def jit_maker_self_trade(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, auction_buy())
    step(w, 10)
    jit = perp_limit(SHORT, 100_100_000, B, immediate_or_cancel=True)
    return PlaceAndMakePerpOrder(TAKER.pubkey, 0, jit, TAKER.pubkey, 0, t), (TAKER,)


def jit_maker_not_ioc(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, auction_buy())
    jit = perp_limit(SHORT, 100_100_000, B)
    return PlaceAndMakePerpOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, t), (MAKER_1,)


def taker_short_of_margin(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    poor = keypair(97)
    w.new_user(poor, usdc=15 * 10**6)
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P, 2 * B))
    t = place(w, poor, perp_limit(LONG, 100 * P, B, post_only=False))
    step(w, price=90 * P)  # the $15 account is now $10 under water on the 1 SOL it buys
    ix = FillPerpOrder(FILLER.pubkey, 0, poor.pubkey, 0, t, (_ref(MAKER_1, m),))
    return ix, (FILLER,)


def maker_order_missing(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    _, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, 77)), (FILLER,)


def maker_on_the_takers_side(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(LONG, 99 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def maker_named_twice(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, m), _ref(MAKER_1, m)), (FILLER,)


def max_above_remainder(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    return _fill_ix(t, _ref(MAKER_1, m), max_base_asset_amount=2 * B), (FILLER,)


def untriggered_taker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    stop = OrderParams(
        OrderType.TriggerMarket,
        MarketType.Perp,
        LONG,
        B,
        0,
        trigger_price=110 * P,
        trigger_condition=OrderTriggerCondition.Above,
    )
    t = place(w, TAKER, stop)
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def post_only_taker(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 101 * P))
    t = place(w, TAKER, perp_limit(LONG, 99 * P))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def reduce_only_taker_from_flat(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False, reduce_only=True))
    step(w)
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


def cancelled_taker_order(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    m, t = _basic(w)
    w.ok(CancelOrder(TAKER.pubkey, 0, order_id=t), signers=(TAKER,))
    return _fill_ix(t, _ref(MAKER_1, m)), (FILLER,)


REJECTIONS: list[tuple[Scenario, ErrorCode]] = [
    (unsigned_filler, ErrorCode.UnauthorizedSigner),
    (filler_without_account, ErrorCode.UserNotFound),
    (unknown_taker_order, ErrorCode.OrderDoesNotExist),
    (cancelled_taker_order, ErrorCode.OrderDoesNotExist),
    (maker_order_missing, ErrorCode.MakerOrderNotFound),
    (maker_on_the_takers_side, ErrorCode.InvalidMaker),
    (maker_named_twice, ErrorCode.InvalidMaker),
    (max_above_remainder, ErrorCode.ImpossibleFill),
    (untriggered_taker, ErrorCode.OrderMustBeTriggeredFirst),
    (post_only_taker, ErrorCode.CantMatchTwoPostOnlys),
    (reduce_only_taker_from_flat, ErrorCode.ReduceOnlyOrderIncreasedRisk),
    (maker_user_missing, ErrorCode.MakerNotFound),
    (maker_in_another_market, ErrorCode.InvalidMaker),
    (zero_max, ErrorCode.ImpossibleFill),
    (max_off_step, ErrorCode.InvalidOrderNotStepSizeMultiple),
    (nothing_crosses, ErrorCode.FillOrderDidNotUpdateState),
    (maker_reduce_only_cannot_reduce, ErrorCode.ReduceOnlyOrderIncreasedRisk),
    (untriggered_maker, ErrorCode.OrderMustBeTriggeredFirst),
    (resting_maker_younger_than_resting_taker, ErrorCode.MakerOrderMustBePostOnly),
    (place_and_take_post_only, ErrorCode.InvalidOrderPostOnly),
    (place_and_take_by_a_stranger, ErrorCode.UnauthorizedSigner),
    (jit_maker_self_trade, ErrorCode.MakerCantFulfillOwnOrder),
    (jit_maker_not_ioc, ErrorCode.InvalidOrderIOCPostOnly),
    (taker_short_of_margin, ErrorCode.InsufficientCollateral),
]


@pytest.mark.parametrize(("scenario", "code"), REJECTIONS, ids=[s.__name__ for s, _ in REJECTIONS])
def test_rejections_leave_the_state_untouched(scenario: Scenario, code: ErrorCode) -> None:
    w = new_world()
    ix, signers = scenario(w)
    refused = rejected_without_change(w, ix, signers=signers)
    assert refused.code == code, refused


def test_a_reduce_only_taker_fills_only_what_reduces() -> None:
    w = new_world()
    # the taker is short 1 SOL; a reduce-only buy of 2 SOL may only buy 1
    m0 = place(w, MAKER_1, perp_limit(LONG, 100 * P))
    t0 = place(w, TAKER, perp_limit(SHORT, 100 * P, post_only=False))
    step(w)
    fill_records(fill(w, t0, (MAKER_1, m0)))
    m = place(w, MAKER_2, perp_limit(SHORT, 100 * P, 3 * B))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, 2 * B, post_only=False, reduce_only=True))
    step(w)
    [record] = fill_records(fill(w, t, (MAKER_2, m)))
    assert record.base_asset_amount == B
    assert perp_position(w, TAKER).base_asset_amount == 0
    # the remainder can no longer reduce anything: cancelled
    assert user_of(w, TAKER).orders == []
