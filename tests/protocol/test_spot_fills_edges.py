"""The spot fill engine's refusals and edge paths, through signed ``FillSpotOrder`` /
``TriggerOrder`` transactions.

Every user starts with 20,000 USDC and 10 SOL at $100 (the filler with nothing). Spot fee
tier: taker fee 10 bps rounded up, maker rebate 2 bps truncated; the flat filler fee for a
cancellation is $0.01 (10_000 quote units). USDC scaled balances are token units * 1_000, SOL
scaled balances equal token units, while no interest has accrued.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    Deposit,
    FillSpotOrder,
    InitializeUser,
    MakerOrderRef,
    TriggerOrder,
    Withdraw,
)
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.state import OrderParams
from protocol.types import (
    MarketStatus,
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    SpotBalanceType,
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
    place,
    rejected_without_change,
    spot_limit,
    spot_position,
    step,
    user_of,
)
from tests.protocol.world import SOL, USDC, World, keypair

B = BASE_PRECISION
FLAT_FEE = 10_000
START_USDC = 20_000 * 10**6


@pytest.fixture
def w() -> World:
    return new_world(sol=10 * B)


def ref(kp: Keypair, order_id: int) -> MakerOrderRef:
    return MakerOrderRef(kp.pubkey, 0, order_id)


def fill_ix(taker_order_id: int, *makers: MakerOrderRef, **kw: Any) -> FillSpotOrder:
    return FillSpotOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order_id, makers, **kw)


def fill(w: World, taker_order_id: int, *makers: MakerOrderRef, **kw: Any) -> Executed | Rejected:
    return w.send(fill_ix(taker_order_id, *makers, **kw), signers=(FILLER,))


def refused(w: World, ix: Any, code: ErrorCode, field: str | None) -> None:
    result = rejected_without_change(w, ix, signers=(FILLER,))
    assert (result.code, result.field) == (code, field), result


def taker_buy(w: World, price: int = 101 * P, size: int = B, **kw: Any) -> int:
    return place(w, TAKER, spot_limit(LONG, price, size, post_only=False, **kw))


def as_trigger(params: OrderParams) -> OrderParams:
    return replace(params, order_type=OrderType.TriggerLimit)


def usdc_scaled(w: World, kp: Keypair) -> int:
    position = spot_position(w, kp, USDC)
    assert position.balance_type == SpotBalanceType.Deposit
    return position.scaled_balance


# --- the named makers ------------------------------------------------------------------------


def test_maker_order_named_twice_is_invalid(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    refused(w, fill_ix(t, ref(MAKER_1, m), ref(MAKER_1, m)), ErrorCode.InvalidMaker, "makers[1]")


def test_maker_without_an_account_is_not_found(w: World) -> None:
    t = taker_buy(w)
    step(w)
    refused(w, fill_ix(t, ref(keypair(99), 1)), ErrorCode.MakerNotFound, "makers[0]")


def test_maker_order_that_is_not_open_is_not_found(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    refused(w, fill_ix(t, ref(MAKER_1, m + 1)), ErrorCode.MakerOrderNotFound, "makers[0]")


def test_maker_being_liquidated_is_invalid(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    user_of(w, MAKER_1).status = UserStatus.BeingLiquidated
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.InvalidMaker, "makers[0]")


def test_untriggered_maker_trigger_order_cannot_make(w: World) -> None:
    trigger = spot_limit(
        SHORT,
        100 * P,
        post_only=False,
        trigger_price=90 * P,
        trigger_condition=OrderTriggerCondition.Below,
    )
    m = place(w, MAKER_1, as_trigger(trigger))
    t = taker_buy(w)
    step(w)
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.OrderMustBeTriggeredFirst, "makers[0]")


def test_younger_taking_limit_order_cannot_be_the_maker(w: World) -> None:
    t = taker_buy(w, 100 * P)
    step(w)
    # a non-post-only ask placed after the bid: of two resting limit orders the older makes
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P, post_only=False))
    step(w)
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.MakerOrderMustBePostOnly, "makers[0]")


def test_maker_ask_a_full_initial_margin_below_the_oracle_is_cancelled(w: World) -> None:
    # SOL's initial liability weight 1.2 is a 20% margin ratio: an ask at $80 against a $100
    # oracle is (100 - 80) / 100 = 2000/10000 below it, which is the limit, so it is cancelled
    m = place(w, MAKER_1, spot_limit(SHORT, 80 * P))
    t = taker_buy(w)
    step(w)
    result = fill(w, t, ref(MAKER_1, m))
    assert actions(result) == [("cancel", m, "oracle_price_breached_limit_price")]
    assert fill_records(result) == []
    assert user_of(w, MAKER_1).orders == []
    # the maker pays the filler the flat fee out of its quote balance
    assert usdc_scaled(w, MAKER_1) == (START_USDC - FLAT_FEE) * 1_000
    assert usdc_scaled(w, FILLER) == FLAT_FEE * 1_000
    # the taker's order is untouched and still open
    [order] = user_of(w, TAKER).orders
    assert (order.order_id, order.status, order.base_asset_amount_filled) == (
        t,
        OrderStatus.Open,
        0,
    )


def test_maker_ask_just_inside_the_band_fills(w: World) -> None:
    # $80.01 is 1999/10000 below the oracle: one step inside the band, so it fills
    m = place(w, MAKER_1, spot_limit(SHORT, 80_010_000))
    t = taker_buy(w)
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m)))
    assert (record.base_asset_amount, record.quote_asset_amount) == (B, 80_010_000)


def test_expired_maker_order_is_expired_with_the_flat_fee(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P, max_ts=w.ts + 5))
    t = taker_buy(w)
    step(w, 30)  # 12 seconds later
    result = fill(w, t, ref(MAKER_1, m))
    assert actions(result) == [("expire", m, "order_expired")]
    assert usdc_scaled(w, MAKER_1) == (START_USDC - FLAT_FEE) * 1_000
    assert usdc_scaled(w, FILLER) == FLAT_FEE * 1_000


def test_reduce_only_maker_with_nothing_left_to_reduce_is_refused(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P, reduce_only=True))
    w.ok(Withdraw(MAKER_1.pubkey, 0, SOL, 10 * B), signers=(MAKER_1,))
    t = taker_buy(w)
    step(w)
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.ReduceOnlyOrderIncreasedRisk, "makers[0]")


# --- taker sells: makers are bids, best (highest) first ----------------------------------------


def test_seller_takes_the_highest_bid_first_and_is_paid_net_of_the_fee(w: World) -> None:
    low = place(w, MAKER_1, spot_limit(LONG, 99 * P))
    high = place(w, MAKER_2, spot_limit(LONG, 99_500_000))
    t = place(w, TAKER, spot_limit(SHORT, 98 * P, 2 * B, post_only=False))
    step(w)
    first, second = fill_records(fill(w, t, ref(MAKER_1, low), ref(MAKER_2, high)))
    assert (first.maker, first.quote_asset_amount) == ((MAKER_2.pubkey, 0), 99_500_000)
    assert (second.maker, second.quote_asset_amount) == ((MAKER_1.pubkey, 0), 99_000_000)
    # taker fees 99_500 and 99_000 (10 bps, exact); rebates 19_900 and 19_800 (2 bps)
    assert (first.taker_fee, first.maker_rebate) == (99_500, 19_900)
    assert (second.taker_fee, second.maker_rebate) == (99_000, 19_800)
    # the seller receives quote minus fee: 20_000e6 + 99_400_500 + 98_901_000
    assert usdc_scaled(w, TAKER) == 20_198_301_500 * 1_000
    assert spot_position(w, TAKER, SOL).scaled_balance == 8 * B
    # a buying maker pays quote minus its rebate: 20_000e6 - 99_480_100
    assert usdc_scaled(w, MAKER_2) == 19_900_519_900 * 1_000
    assert spot_position(w, MAKER_2, SOL).scaled_balance == 11 * B


# --- how far a fill goes ---------------------------------------------------------------------


def test_filled_taker_leaves_the_next_maker_untouched(w: World) -> None:
    m1 = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    m2 = place(w, MAKER_2, spot_limit(SHORT, 100_100_000))
    t = taker_buy(w)
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m1), ref(MAKER_2, m2)))
    assert record.maker == (MAKER_1.pubkey, 0)
    [rest] = user_of(w, MAKER_2).orders
    assert (rest.order_id, rest.base_asset_amount_filled) == (m2, 0)


def test_bound_reached_stops_before_the_next_maker(w: World) -> None:
    m1 = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    m2 = place(w, MAKER_2, spot_limit(SHORT, 100_100_000))
    t = taker_buy(w, size=3 * B)
    step(w)
    [record] = fill_records(fill(w, t, ref(MAKER_1, m1), ref(MAKER_2, m2), max_base_asset_amount=B))
    assert record.base_asset_amount == B
    [order] = user_of(w, TAKER).orders
    assert order.base_asset_amount_filled == B
    assert user_of(w, MAKER_2).orders[0].base_asset_amount_filled == 0


@pytest.mark.parametrize("bound", [0, 2 * B])
def test_bound_outside_the_unfilled_amount_is_impossible(w: World, bound: int) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    refused(
        w,
        fill_ix(t, ref(MAKER_1, m), max_base_asset_amount=bound),
        ErrorCode.ImpossibleFill,
        "max_base_asset_amount",
    )


def test_bound_off_the_step_grid_is_refused(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    # SOL's order step is 0.01 SOL = 10_000_000; 0.015 SOL is between two steps
    refused(
        w,
        fill_ix(t, ref(MAKER_1, m), max_base_asset_amount=15_000_000),
        ErrorCode.InvalidOrderNotStepSizeMultiple,
        "max_base_asset_amount",
    )


# --- the taker order ---------------------------------------------------------------------------


def test_unknown_taker_order_does_not_exist(w: World) -> None:
    refused(w, fill_ix(7), ErrorCode.OrderDoesNotExist, "taker_order_id")


@pytest.mark.parametrize("status", [MarketStatus.FillPaused, MarketStatus.Initialized])
def test_market_unavailable_for_fills_is_refused(w: World, status: MarketStatus) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    w.program.state.spot_markets[SOL].status = status
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.MarketFillOrderPaused, "market_index")


def test_untriggered_taker_order_must_be_triggered_first(w: World) -> None:
    params = as_trigger(
        spot_limit(
            LONG,
            101 * P,
            post_only=False,
            trigger_price=110 * P,
            trigger_condition=OrderTriggerCondition.Above,
        )
    )
    t = place(w, TAKER, params)
    step(w)
    refused(w, fill_ix(t), ErrorCode.OrderMustBeTriggeredFirst, "taker_order_id")


def test_bankrupt_taker_is_refused(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    user_of(w, TAKER).status = UserStatus.Bankrupt
    refused(w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.UserBankrupt, "taker")


def test_filler_of_the_takers_own_authority_earns_nothing(w: World) -> None:
    w.ok(InitializeUser(TAKER.pubkey, 1), signers=(TAKER,))
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    step(w)
    ix = FillSpotOrder(TAKER.pubkey, 1, TAKER.pubkey, 0, t, (ref(MAKER_1, m),))
    [record] = fill_records(w.send(ix, signers=(TAKER,)))
    # no filler: the 100_000 fee less the 20_000 rebate all goes to the market
    assert (record.filler_reward, record.fee_to_market) == (0, 80_000)
    assert user_of(w, TAKER).cumulative_spot_fees == -100_000
    assert w.program.state.users[(TAKER.pubkey, 1)].spot_positions == []


# --- margin after the match -----------------------------------------------------------------

POOR = keypair(46)


def test_taker_left_below_the_fill_requirement_is_refused(w: World) -> None:
    w.ok(Deposit(MAKER_1.pubkey, 0, SOL, 40 * B), signers=(MAKER_1,))
    w.new_user(POOR, usdc=1_000 * 10**6)
    m = place(w, MAKER_1, spot_limit(SHORT, 119 * P, 40 * B))
    # at placement its bids are valued at the $100 oracle: 40 SOL * 0.8 = $3,200 of initial
    # collateral against a $3,000 borrow, so the order rests
    t = place(w, POOR, spot_limit(LONG, 119 * P, 40 * B, post_only=False))
    step(w, 30)
    # paying $119: it would owe 4_760 + 4.76 fee - 1_000 = $3,764.76 against 40 SOL worth
    # $4,000 at a Fill asset weight of at most (0.8 + 0.9) / 2 = 0.85, i.e. $3,400
    ix = FillSpotOrder(FILLER.pubkey, 0, POOR.pubkey, 0, t, (ref(MAKER_1, m),))
    refused(w, ix, ErrorCode.InsufficientCollateral, "taker")


def test_maker_left_below_the_fill_requirement_is_refused(w: World) -> None:
    for kp in (MAKER_2, OTHER):  # SOL for the maker to borrow
        w.ok(Deposit(kp.pubkey, 0, SOL, 40 * B), signers=(kp,))
    w.new_user(POOR, usdc=1_000 * 10**6)
    m = place(w, POOR, spot_limit(SHORT, 81 * P, 40 * B))
    t = taker_buy(w, 82 * P, 40 * B)
    step(w, 30)
    # selling 40 borrowed SOL at $81: 1_000 + 3_240 + 0.648 rebate = $4,240.648 of USDC
    # against a 40 SOL borrow worth $4,000 at a Fill liability weight of at least
    # (1.2 + 1.1) / 2 = 1.15, i.e. $4,600
    refused(w, fill_ix(t, ref(POOR, m)), ErrorCode.InsufficientCollateral, "makers")


def test_stale_oracle_refuses_a_match_where_both_sides_add_risk(w: World) -> None:
    w.new_user(POOR, usdc=20_000 * 10**6)
    # POOR sells SOL it does not have (a new borrow) to a buyer spending USDC: both swaps
    # lower their initial-weighted collateral
    m = place(w, POOR, spot_limit(SHORT, 100 * P))
    t = taker_buy(w)
    w.advance(121)  # one slot past slots_before_stale_for_margin, oracle not republished
    result = rejected_without_change(w, fill_ix(t, ref(POOR, m)), signers=(FILLER,))
    assert result.code == ErrorCode.InvalidOracle


def test_stale_oracle_allows_a_match_where_the_maker_reduces_risk(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 100 * P))  # sells SOL it holds
    t = taker_buy(w)
    w.advance(121)
    # the taker must meet a 100% margin requirement: it has no liabilities, so it does
    [record] = fill_records(fill(w, t, ref(MAKER_1, m)))
    assert (record.base_asset_amount, record.quote_asset_amount) == (B, 100 * P)


# --- after the match: bands, remainders and the deposit cap ------------------------------------


def test_oracle_half_away_from_its_five_minute_twap_blocks_the_fill(w: World) -> None:
    m = place(w, MAKER_1, spot_limit(SHORT, 150 * P))
    t = taker_buy(w, 160 * P)
    step(w, 30, 160 * P)
    # the twap has barely moved from $100: |160 - 100.4| / 100.4 > 50%
    result = rejected_without_change(w, fill_ix(t, ref(MAKER_1, m)), signers=(FILLER,))
    assert result.code == ErrorCode.PriceBandsBreached


def test_reduce_only_taker_with_nothing_to_reduce_is_refused(w: World) -> None:
    t = place(w, TAKER, spot_limit(SHORT, 99 * P, 10 * B, post_only=False, reduce_only=True))
    w.ok(Withdraw(TAKER.pubkey, 0, SOL, 10 * B), signers=(TAKER,))
    m = place(w, MAKER_1, spot_limit(LONG, 99_500_000, 10 * B))
    step(w, 30)
    refused(
        w, fill_ix(t, ref(MAKER_1, m)), ErrorCode.ReduceOnlyOrderIncreasedRisk, "taker_order_id"
    )


def test_reduce_only_remainder_below_one_step_is_cancelled_with_the_flat_fee(w: World) -> None:
    t = place(w, TAKER, spot_limit(SHORT, 99 * P, 10 * B, post_only=False, reduce_only=True))
    # withdrawing 5 of 10 SOL rounds the remaining scaled balance down by one unit:
    # 4.999999999 SOL, which is 4.99 SOL in whole 0.01 SOL steps
    w.ok(Withdraw(TAKER.pubkey, 0, SOL, 5 * B), signers=(TAKER,))
    m = place(w, MAKER_1, spot_limit(LONG, 99_500_000, 10 * B))
    step(w, 30)
    result = fill(w, t, ref(MAKER_1, m))
    [record] = fill_records(result)
    # 4.99 SOL * $99.50 = 496_505_000; fee 10 bps = 496_505
    assert (record.base_asset_amount, record.quote_asset_amount) == (4_990_000_000, 496_505_000)
    assert record.taker_fee == 496_505
    assert actions(result)[-1] == ("cancel", t, "reduce_only_order_increased_position")
    assert user_of(w, TAKER).orders == []
    # the 0.009999999 SOL of dust stays; USDC: 20_000e6 + 496_505_000 - 496_505 - 10_000 flat
    assert spot_position(w, TAKER, SOL).scaled_balance == 9_999_999
    assert usdc_scaled(w, TAKER) == 20_495_998_495 * 1_000


def test_seller_the_market_cannot_lend_to_is_cancelled_for_no_borrow_liquidity() -> None:
    w = new_world(sol=0)
    w.ok(Deposit(TAKER.pubkey, 0, SOL, B), signers=(TAKER,))
    t = place(w, TAKER, spot_limit(SHORT, 99 * P, 2 * B, post_only=False))
    m = place(w, MAKER_1, spot_limit(LONG, 99_500_000, B))
    step(w, 30)
    sol = w.program.state.spot_markets[SOL]
    # borrows capped at 50 SOL * 1/10_000 = 0.005 SOL: less than one 0.01 SOL step
    sol.max_token_deposits = 50 * B
    sol.max_token_borrows_fraction = 1
    result = fill(w, t, ref(MAKER_1, m))
    [record] = fill_records(result)
    assert record.base_asset_amount == B  # all it held
    assert actions(result)[-1] == ("cancel", t, "no_borrow_liquidity")
    assert user_of(w, TAKER).orders == []
    assert user_of(w, TAKER).get_spot_position(SOL) is None
    # 20_000e6 + 99_500_000 - 99_500 fee - 10_000 flat fee
    assert usdc_scaled(w, TAKER) == 20_099_390_500 * 1_000


def test_base_market_deposit_cap_counts_the_deposits_a_fill_creates(w: World) -> None:
    w.new_user(POOR, usdc=20_000 * 10**6)
    borrowed = place(w, POOR, spot_limit(SHORT, 100 * P))  # POOR has no SOL: a new borrow
    held = place(w, MAKER_1, spot_limit(SHORT, 100 * P))
    t = taker_buy(w, 101 * P, 2 * B)
    step(w, 30)
    # 4 users hold 10 SOL each: the cap is exactly today's 40 SOL of deposits
    w.program.state.spot_markets[SOL].max_token_deposits = 40 * B
    # buying borrowed SOL creates a 41st SOL of deposits
    result = rejected_without_change(w, fill_ix(t, ref(POOR, borrowed)), signers=(FILLER,))
    assert result.code == ErrorCode.MaxDeposit
    # buying held SOL only moves a deposit: still 40, at the cap, allowed
    [record] = fill_records(fill(w, t, ref(MAKER_1, held)))
    assert record.base_asset_amount == B


# --- spot trigger orders ---------------------------------------------------------------------


def stop(
    direction: PositionDirection,
    trigger_price: int,
    condition: OrderTriggerCondition,
    size: int = B,
) -> OrderParams:
    return OrderParams(
        OrderType.TriggerMarket,
        MarketType.Spot,
        direction,
        size,
        SOL,
        trigger_price=trigger_price,
        trigger_condition=condition,
    )


def trigger_ix(order_id: int) -> TriggerOrder:
    return TriggerOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, order_id)


def test_trigger_condition_not_met_is_refused(w: World) -> None:
    t = place(w, TAKER, stop(LONG, 105 * P, OrderTriggerCondition.Above))
    step(w, 1, 105 * P)  # "above" is strict: $105 does not fire a $105 trigger
    refused(w, trigger_ix(t), ErrorCode.OrderDidNotSatisfyTriggerCondition, "order_id")


def test_too_volatile_oracle_cannot_trigger(w: World) -> None:
    t = place(w, TAKER, stop(LONG, 105 * P, OrderTriggerCondition.Above))
    step(w, 1, 1_000 * P)  # 10x the oracle twap
    result = rejected_without_change(w, trigger_ix(t), signers=(FILLER,))
    assert result.code == ErrorCode.InvalidOracle


def test_oracle_far_from_its_five_minute_twap_cannot_trigger(w: World) -> None:
    t = place(w, TAKER, stop(LONG, 105 * P, OrderTriggerCondition.Above))
    step(w, 1, 160 * P)  # valid, but 60% from its 5-minute twap
    result = rejected_without_change(w, trigger_ix(t), signers=(FILLER,))
    assert result.code == ErrorCode.OrderBreachesOraclePriceLimits


def test_trigger_that_the_user_cannot_margin_is_cancelled_but_the_keeper_is_paid(
    w: World,
) -> None:
    # an untriggered order counts for nothing, so a $1M stop rests on $21k of collateral
    t = place(w, TAKER, stop(LONG, 90 * P, OrderTriggerCondition.Above, size=10_000 * B))
    step(w)
    result = w.send(trigger_ix(t), signers=(FILLER,))
    assert actions(result) == [("trigger", t, ""), ("cancel", t, "insufficient_free_collateral")]
    assert user_of(w, TAKER).orders == []
    position = spot_position(w, TAKER, SOL)
    assert (position.open_bids, position.open_orders) == (0, 0)
    assert usdc_scaled(w, TAKER) == (START_USDC - FLAT_FEE) * 1_000
    assert usdc_scaled(w, FILLER) == FLAT_FEE * 1_000
