"""Order sizing, pricing and classification math (``protocol.math.orders``).

Vectors marked "program" reproduce the program's own unit tests (``math/orders/tests.rs``);
the rest are worked by hand in the comments.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import AMM_RESERVE_PRECISION, BASE_PRECISION, PEG_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.orders import (
    PositionDelta,
    calculate_base_asset_amount_to_fill_up_to_limit_price,
    calculate_base_asset_amount_to_trade_to_price,
    calculate_existing_position_fields_for_order_action,
    get_base_asset_amount_unfilled,
    get_position_delta_for_fill,
    get_posted_slot_from_clock_slot,
    get_price_for_perp_order,
    is_multiple_of_step_size,
    is_new_order_risk_increasing,
    is_order_position_reducing,
    last_ask_premium,
    last_bid_discount,
    order_satisfies_trigger_condition,
    set_order_bit_flag,
    should_cancel_reduce_only_order,
    should_expire_order,
    standardize_base_asset_amount,
    standardize_base_asset_amount_ceil,
    standardize_base_asset_amount_with_remainder_i128,
    standardize_price,
    standardize_price_i64,
    update_open_bids_and_asks,
)
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

P = 10**6  # PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short


def _order(**fields: Any) -> Order:
    """The program's ``Order::default()`` with overrides (a long market order for 0)."""
    base: dict[str, Any] = {
        "order_id": 1,
        "market_index": 0,
        "market_type": MarketType.Perp,
        "order_type": OrderType.Market,
        "direction": LONG,
        "base_asset_amount": 0,
        "slot": 0,
    }
    base.update(fields)
    return Order(**base)


def _amm(**fields: Any) -> AMM:
    """100/100 reserves at a $100 peg: reserve price exactly $100."""
    base: dict[str, Any] = {
        "oracle": "o",
        "base_asset_reserve": 100 * AMM_RESERVE_PRECISION,
        "quote_asset_reserve": 100 * AMM_RESERVE_PRECISION,
        "sqrt_k": 100 * AMM_RESERVE_PRECISION,
        "peg_multiplier": 100 * PEG_PRECISION,
    }
    base.update(fields)
    return AMM(**base)


# --- sizes (program: standardize_base_asset_amount*, is_multiple_of_step_size) -----------------
@pytest.mark.parametrize(
    ("baa", "expected"),
    [(-90, (-50, -40)), (-20, (0, -20)), (90, (50, 40)), (20, (0, 20)), (100, (100, 0))],
)
def test_standardize_with_remainder_program_vectors(baa: int, expected: tuple[int, int]) -> None:
    assert standardize_base_asset_amount_with_remainder_i128(baa, 50) == expected


@pytest.mark.parametrize(("baa", "expected"), [(200_001, 200_000), (250_001, 200_000), (0, 0)])
def test_standardize_base_asset_amount_program_vectors(baa: int, expected: int) -> None:
    assert standardize_base_asset_amount(baa, 100_000) == expected


def test_standardize_ceil_rounds_up_only_with_a_remainder() -> None:
    assert standardize_base_asset_amount_ceil(200_001, 100_000) == 300_000
    assert standardize_base_asset_amount_ceil(200_000, 100_000) == 200_000


def test_is_multiple_of_step_size_program_vector() -> None:
    assert is_multiple_of_step_size(200_000, 100_000)
    assert is_multiple_of_step_size(200_000, 10_000)
    assert not is_multiple_of_step_size(200_001, 10_000)


def test_zero_step_size_is_a_math_error() -> None:
    with pytest.raises(MathError):
        standardize_base_asset_amount(10, 0)


@given(st.integers(0, 2**64 - 1), st.integers(1, 10**12))
def test_standardize_is_the_largest_step_multiple_not_above(baa: int, step: int) -> None:
    down = standardize_base_asset_amount(baa, step)
    up = standardize_base_asset_amount_ceil(baa, step)
    assert down % step == 0 and up % step == 0
    assert down <= baa < down + step
    assert up - step < baa <= up


@given(st.integers(-(2**100), 2**100), st.integers(1, 10**12))
def test_remainder_split_keeps_sign_and_sums_back(baa: int, step: int) -> None:
    standardized, remainder = standardize_base_asset_amount_with_remainder_i128(baa, step)
    assert standardized + remainder == baa
    assert standardized % step == 0
    assert abs(remainder) < step
    assert remainder == 0 or (remainder > 0) == (baa > 0)


# --- prices -------------------------------------------------------------------------------------
def test_standardize_price_rounds_toward_the_passive_side() -> None:
    # tick 100: a bid at 101_050 rounds down to 101_000, an ask up to 101_100
    assert standardize_price(101_050, 100, LONG) == 101_000
    assert standardize_price(101_050, 100, SHORT) == 101_100
    assert standardize_price(101_000, 100, SHORT) == 101_000
    assert standardize_price(0, 100, SHORT) == 0


def test_standardize_price_i64_uses_euclidean_remainder_on_offsets() -> None:
    # -7 rem_euclid 5 = 3: a bid offset rounds down to -10, an ask offset up to -5
    assert standardize_price_i64(-7, 5, LONG) == -10
    assert standardize_price_i64(-7, 5, SHORT) == -5
    assert standardize_price_i64(-10, 5, SHORT) == -10


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
def test_standardize_price_i64_never_more_aggressive(price: int, tick: int) -> None:
    bid = standardize_price_i64(price, tick, LONG)
    ask = standardize_price_i64(price, tick, SHORT)
    assert bid <= price <= ask
    assert price - bid < tick and ask - price < tick
    assert bid == 0 or bid % tick == 0


# --- AMM quotes (program: get_price_for_perp_order) ----------------------------------------------
def test_slide_moves_an_ask_behind_the_amm_bid_program_vector() -> None:
    amm = _amm(order_tick_size=100_000, short_spread=10_000)  # 1% below a $100 reserve: $99 bid
    assert get_price_for_perp_order(98_900_000, SHORT, PostOnlyParam.Slide, amm) == 99_100_000
    assert get_price_for_perp_order(99_000_000, SHORT, PostOnlyParam.Slide, amm) == 99_100_000
    assert get_price_for_perp_order(99_900_000, SHORT, PostOnlyParam.Slide, amm) == 99_900_000


def test_slide_moves_a_bid_behind_the_amm_ask_program_vector() -> None:
    amm = _amm(order_tick_size=100_000, long_spread=10_000)  # $101 ask
    assert get_price_for_perp_order(101_100_000, LONG, PostOnlyParam.Slide, amm) == 100_900_000
    assert get_price_for_perp_order(101_000_000, LONG, PostOnlyParam.Slide, amm) == 100_900_000
    assert get_price_for_perp_order(100_100_000, LONG, PostOnlyParam.Slide, amm) == 100_100_000


def test_must_post_only_price_is_only_tick_standardized() -> None:
    amm = _amm(order_tick_size=100_000, long_spread=10_000)
    assert (
        get_price_for_perp_order(101_150_000, LONG, PostOnlyParam.MustPostOnly, amm) == 101_100_000
    )


def test_ask_premium_and_bid_discount_against_last_oracle_price() -> None:
    amm = _amm(long_spread=10_000, short_spread=5_000)
    amm.historical_oracle_data.last_oracle_price = 100_200_000
    # ask 101.0 - 100.2 = 0.8; bid 99.5: 100.2 - 99.5 = 0.7
    assert last_ask_premium(amm) == 800_000
    assert last_bid_discount(amm) == 700_000


# --- AMM fill sizes ------------------------------------------------------------------------------
def test_trade_to_price_from_the_constant_product() -> None:
    # k = (100e9)^2, peg 100: at $121 the base reserve is sqrt(k * 1e6 / 121e6 * 100)
    # = 100e9 * 10/11 floored = 90_909_090_909; a long buys 100e9 - that.
    amm = _amm()
    assert calculate_base_asset_amount_to_trade_to_price(amm, 121 * P, LONG) == (
        9_090_909_091,
        LONG,
    )
    # at $81 the reserve is 100e9 * 10/9 = 111_111_111_111: the AMM must be sold to
    assert calculate_base_asset_amount_to_trade_to_price(amm, 81 * P, LONG) == (
        11_111_111_111,
        SHORT,
    )
    with pytest.raises(ProtocolError) as err:
        calculate_base_asset_amount_to_trade_to_price(amm, 0, LONG)
    assert err.value.code == ErrorCode.InvalidOrderLimitPrice


def test_fill_up_to_limit_price_stops_a_tick_short_and_standardizes() -> None:
    # limit $121.000001 with tick 1: trades to exactly $121 -> 9_090_909_091 base, step 1e6
    market = PerpMarket(market_index=0, name="t", amm=_amm(order_step_size=10**6))
    order = _order(order_type=OrderType.Limit, base_asset_amount=5 * BASE_PRECISION)
    assert calculate_base_asset_amount_to_fill_up_to_limit_price(
        order, market, 121 * P + 1, None
    ) == (5 * BASE_PRECISION)
    order = _order(order_type=OrderType.Limit, base_asset_amount=20 * BASE_PRECISION)
    assert (
        calculate_base_asset_amount_to_fill_up_to_limit_price(order, market, 121 * P + 1, None)
        == 9_090_000_000
    )
    # an ask at $121 can not be filled by an AMM at $100
    order = _order(order_type=OrderType.Limit, direction=SHORT, base_asset_amount=BASE_PRECISION)
    assert calculate_base_asset_amount_to_fill_up_to_limit_price(order, market, 121 * P, None) == 0


# --- lifecycle predicates (program: should_expire_order) -----------------------------------------
@pytest.mark.parametrize(
    ("status", "order_type", "max_ts", "expected"),
    [
        (OrderStatus.Open, OrderType.Limit, 0, False),
        (OrderStatus.Open, OrderType.Limit, 101, False),
        (OrderStatus.Open, OrderType.Limit, 99, True),
        (OrderStatus.Init, OrderType.Limit, 99, False),
        (OrderStatus.Open, OrderType.TriggerMarket, 99, False),
        (OrderStatus.Open, OrderType.TriggerLimit, 99, False),
        (OrderStatus.Open, OrderType.Limit, 100, False),  # strictly after max_ts
    ],
)
def test_should_expire_order_program_vectors(
    status: OrderStatus, order_type: OrderType, max_ts: int, expected: bool
) -> None:
    order = _order(status=status, order_type=order_type, max_ts=max_ts)
    assert should_expire_order(order, 100) is expected


def test_unfilled_of_reduce_only_order_is_capped_by_the_position() -> None:
    order = _order(base_asset_amount=10, base_asset_amount_filled=3, reduce_only=True)
    assert get_base_asset_amount_unfilled(order) == 7
    assert get_base_asset_amount_unfilled(order, -5) == 5  # a bid reduces a short
    assert get_base_asset_amount_unfilled(order, 5) == 0  # ... but not a long
    assert get_base_asset_amount_unfilled(order, 0) == 0
    plain = _order(base_asset_amount=10, base_asset_amount_filled=3)
    assert get_base_asset_amount_unfilled(plain, 5) == 7


def test_should_cancel_reduce_only_order_below_a_step() -> None:
    order = _order(base_asset_amount=10, reduce_only=True, direction=SHORT)
    assert should_cancel_reduce_only_order(order, 4, 5)  # can reduce only 4 < step 5
    assert not should_cancel_reduce_only_order(order, 5, 5)
    assert not should_cancel_reduce_only_order(_order(base_asset_amount=10), 0, 5)


def test_order_satisfies_trigger_condition_is_strict() -> None:
    above = _order(trigger_price=100 * P, trigger_condition=OrderTriggerCondition.Above)
    below = _order(trigger_price=100 * P, trigger_condition=OrderTriggerCondition.Below)
    assert order_satisfies_trigger_condition(above, 100 * P + 1)
    assert not order_satisfies_trigger_condition(above, 100 * P)
    assert order_satisfies_trigger_condition(below, 100 * P - 1)
    assert not order_satisfies_trigger_condition(below, 100 * P)
    triggered = _order(trigger_condition=OrderTriggerCondition.TriggeredAbove)
    with pytest.raises(ProtocolError) as err:
        order_satisfies_trigger_condition(triggered, 100 * P)
    assert err.value.code == ErrorCode.InvalidTriggerOrderCondition


# --- risk (program: is_new_order_risk_increasing) ------------------------------------------------
@pytest.mark.parametrize(
    ("reduce_only", "direction", "position", "bids", "asks", "expected"),
    [
        (True, LONG, 0, 0, 0, False),
        (False, LONG, 0, 0, 0, True),
        (False, LONG, -1, 0, 0, False),
        (False, LONG, -1, 1, 0, True),
        (False, SHORT, 0, 0, 0, True),
        (False, SHORT, 1, 0, 0, False),
        (False, SHORT, 1, 0, -1, True),
    ],
)
def test_is_new_order_risk_increasing_program_vectors(
    reduce_only: bool,
    direction: PositionDirection,
    position: int,
    bids: int,
    asks: int,
    expected: bool,
) -> None:
    order = _order(reduce_only=reduce_only, direction=direction, base_asset_amount=1)
    assert is_new_order_risk_increasing(order, position, bids, asks) is expected


def test_is_order_position_reducing() -> None:
    assert is_order_position_reducing(LONG, 5, -5)
    assert not is_order_position_reducing(LONG, 6, -5)
    assert is_order_position_reducing(SHORT, 5, 5)
    assert not is_order_position_reducing(SHORT, 1, -5)
    assert not is_order_position_reducing(LONG, 1, 0)


def test_position_delta_for_fill() -> None:
    assert get_position_delta_for_fill(2, 200, LONG) == PositionDelta(-200, 2)
    assert get_position_delta_for_fill(2, 200, SHORT) == PositionDelta(200, -2)


def test_existing_position_fields_for_order_action() -> None:
    assert calculate_existing_position_fields_for_order_action(5, None) == (None, None)
    assert calculate_existing_position_fields_for_order_action(5, (1_000, 0)) == (None, None)
    # closing 3 of 7 base entered for 1_000 quote: 1_000 * 3 / 7 = 428 (truncated)
    assert calculate_existing_position_fields_for_order_action(3, (1_000, 7)) == (428, None)
    assert calculate_existing_position_fields_for_order_action(9, (1_000, 7)) == (1_000, 7)


def test_trigger_orders_count_in_open_bids_only_once_triggered() -> None:
    assert update_open_bids_and_asks(_order(order_type=OrderType.Limit))
    trigger = _order(order_type=OrderType.TriggerMarket)
    assert not update_open_bids_and_asks(trigger)
    trigger.trigger_condition = OrderTriggerCondition.TriggeredBelow
    assert update_open_bids_and_asks(trigger)
    trigger.reduce_only = True
    trigger.bit_flags = OrderBitFlag.NewTriggerReduceOnly
    assert not update_open_bids_and_asks(trigger)


# --- encoding (program: posted_slot_tail, order_bit_flags) ---------------------------------------
def test_posted_slot_tail_program_vectors() -> None:
    slot = 318_454_856
    assert get_posted_slot_from_clock_slot(slot) == slot % 256
    for i in range(1000):
        tail = get_posted_slot_from_clock_slot(slot + i)
        tail_minus_50 = get_posted_slot_from_clock_slot(slot + i - 50)
        assert (tail - tail_minus_50) % 256 == 50


def test_set_order_bit_flag_program_vector() -> None:
    flags = set_order_bit_flag(0, True, OrderBitFlag.SignedMessage)
    assert flags == 1
    flags = set_order_bit_flag(flags, True, OrderBitFlag.NewTriggerReduceOnly)
    assert flags == 9
    flags = set_order_bit_flag(flags, False, OrderBitFlag.SignedMessage)
    assert flags == 8
