"""Auction prices, limit prices and derived auction params (``protocol.math.auction``).

Vectors marked "program" reproduce the program's unit tests in ``math/auction/tests.rs`` and
``state/order_params/tests.rs`` (markets built like its ``PerpMarket::default()``: contract tier
HighlySpeculative unless stated, TWAP timestamps 0); the rest are worked by hand.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    MAX_PREDICTION_MARKET_PRICE,
    PEG_PRECISION,
    QUOTE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.auction import (
    calculate_auction_params_for_trigger_order,
    calculate_auction_price,
    calculate_auction_prices,
    derive_market_order_auction_params,
    force_get_limit_price,
    get_auction_duration,
    get_close_perp_params,
    get_limit_price,
    get_perp_baseline_start_end_price_offset,
    has_limit_price,
    has_valid_auction_params,
    is_auction_complete,
    update_perp_auction_params,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order
from protocol.types import (
    ContractTier,
    MarketType,
    OrderBitFlag,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from protocol.validation.order import validate_order

P = 10**6  # PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short


def _oracle(price: int) -> OraclePriceData:
    return OraclePriceData(price=price, confidence=0, delay=0)


def _order(**fields: Any) -> Order:
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


def _params(**fields: Any) -> OrderParams:
    """The program's ``OrderParams::default()``: a long market order for 0."""
    base: dict[str, Any] = {
        "order_type": OrderType.Market,
        "market_type": MarketType.Perp,
        "direction": LONG,
        "base_asset_amount": 0,
        "market_index": 0,
    }
    base.update(fields)
    return OrderParams(**base)


def _market(
    oracle_price: int,
    *,
    bid_twap: int,
    ask_twap: int,
    mark_twap_5min: int | None = None,
    oracle_twap: int | None = None,
    spread: int = 10_000,
    peg: int = 100 * PEG_PRECISION,
    tier: ContractTier = ContractTier.HighlySpeculative,
    volume_24h: int = 1_000_000 * QUOTE_PRECISION,
) -> PerpMarket:
    """The AMM of the program's ``update_perp_auction_params`` tests."""
    amm = AMM(
        oracle="o",
        base_asset_reserve=100 * AMM_RESERVE_PRECISION,
        quote_asset_reserve=100 * AMM_RESERVE_PRECISION,
        sqrt_k=100 * AMM_RESERVE_PRECISION,
        peg_multiplier=peg,
        short_spread=spread,
        long_spread=spread,
        volume_24h=volume_24h,
        last_bid_price_twap=bid_twap,
        last_ask_price_twap=ask_twap,
        last_mark_price_twap_5min=(
            (bid_twap + ask_twap) // 2 if mark_twap_5min is None else mark_twap_5min
        ),
    )
    twap = oracle_price if oracle_twap is None else oracle_twap
    amm.historical_oracle_data.last_oracle_price = oracle_price
    amm.historical_oracle_data.last_oracle_price_twap = twap
    amm.historical_oracle_data.last_oracle_price_twap_5min = twap
    return PerpMarket(market_index=0, name="test", amm=amm, contract_tier=tier)


# --- calculate_auction_prices (program) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("direction", "limit_price", "expected"),
    [
        (LONG, 0, (100_000_000, 100_500_000)),
        (SHORT, 0, (100_000_000, 99_500_000)),
        (LONG, 90_000_000, (89_550_000, 90_000_000)),
        (LONG, 99_999_999, (99_500_000, 99_999_999)),
        (LONG, 110_000_000, (100_000_000, 100_500_000)),
        (LONG, 100_400_000, (100_000_000, 100_400_000)),
        (SHORT, 110_000_000, (110_550_000, 110_000_000)),
        (SHORT, 100_000_001, (100_500_001, 100_000_001)),
        (SHORT, 90_000_000, (100_000_000, 99_500_000)),
        (SHORT, 99_999_999, (100_000_000, 99_999_999)),
    ],
)
def test_calculate_auction_prices_program_vectors(
    direction: PositionDirection, limit_price: int, expected: tuple[int, int]
) -> None:
    assert calculate_auction_prices(_oracle(100 * P), direction, limit_price) == expected


# --- calculate_auction_price (program) -----------------------------------------------------------
@pytest.mark.parametrize(
    ("direction", "start", "end", "expected_at_0_5_10"),
    [
        (LONG, -P // 10, P // 10, (900_000, 1_000_000, 1_100_000)),
        (LONG, -P // 5, -P // 10, (800_000, 850_000, 900_000)),
        (LONG, P // 10, P // 5, (1_100_000, 1_150_000, 1_200_000)),
        (SHORT, P // 10, -P // 10, (1_100_000, 1_000_000, 900_000)),
        (SHORT, P // 5, P // 10, (1_200_000, 1_150_000, 1_100_000)),
        (SHORT, -P // 10, -P // 5, (900_000, 850_000, 800_000)),
    ],
)
def test_oracle_order_auction_price_program_vectors(
    direction: PositionDirection, start: int, end: int, expected_at_0_5_10: tuple[int, int, int]
) -> None:
    order = _order(
        order_type=OrderType.Oracle,
        direction=direction,
        auction_duration=10,
        auction_start_price=start,
        auction_end_price=end,
    )
    prices = tuple(calculate_auction_price(order, slot, 1, P) for slot in (0, 5, 10))
    assert prices == expected_at_0_5_10


def test_same_auction_start_and_end_program_vector() -> None:
    for direction in (LONG, SHORT):
        fixed = _order(
            direction=direction, auction_duration=10, auction_start_price=P, auction_end_price=P
        )
        assert calculate_auction_price(fixed, 5, 1, None) == P
        oracle = _order(
            order_type=OrderType.Oracle,
            direction=direction,
            auction_duration=10,
            auction_start_price=P // 2,
            auction_end_price=P // 2,
        )
        assert calculate_auction_price(oracle, 5, 1, P) == 3 * P // 2


@pytest.mark.parametrize(
    ("direction", "sign", "expected"),
    [(LONG, 1, (105 * P, 107_500_000, 110 * P)), (SHORT, -1, (95 * P, 92_500_000, 90 * P))],
)
def test_limit_order_with_oracle_offset_auction_program_vectors(
    direction: PositionDirection, sign: int, expected: tuple[int, int, int]
) -> None:
    order = _order(
        order_type=OrderType.Limit,
        direction=direction,
        auction_duration=10,
        auction_start_price=sign * 5 * P,
        auction_end_price=sign * 10 * P,
        oracle_price_offset=sign * 20 * P,
    )
    assert tuple(calculate_auction_price(order, s, 1, 100 * P) for s in (0, 5, 10)) == expected


def test_fixed_auction_truncates_then_standardizes_to_tick() -> None:
    # 100.00 -> 100.07 over 3 slots, tick 0.01: slot 1 is 100 + 70_000 / 3 = 100_023_333,
    # a bid rounds down to 100_020_000; an ask from 100.07 to 100.00 is 100_046_667 -> 100_050_000
    bid = _order(auction_duration=3, auction_start_price=100 * P, auction_end_price=100_070_000)
    assert calculate_auction_price(bid, 1, 10_000, None) == 100_020_000
    ask = replace(bid, direction=SHORT, auction_start_price=100_070_000, auction_end_price=100 * P)
    assert calculate_auction_price(ask, 1, 10_000, None) == 100_050_000


def test_oracle_auction_needs_an_oracle_and_floors_at_a_tick() -> None:
    order = _order(
        order_type=OrderType.Oracle,
        auction_duration=10,
        auction_start_price=-2 * P,
        auction_end_price=-2 * P,
    )
    with pytest.raises(ProtocolError) as err:
        calculate_auction_price(order, 0, 1, None)
    assert err.value.code == ErrorCode.OracleNotFound
    assert calculate_auction_price(order, 0, 100, P) == 100  # 1 - 2 < 0 -> one tick


def test_oracle_trigger_market_uses_an_offset_auction() -> None:
    order = _order(
        order_type=OrderType.TriggerMarket,
        bit_flags=OrderBitFlag.OracleTriggerMarket,
        auction_duration=10,
        auction_start_price=-P,
        auction_end_price=P,
    )
    assert calculate_auction_price(order, 5, 1, 50 * P) == 50 * P


def test_prediction_market_caps_oracle_offset_price_at_one_dollar() -> None:
    order = _order(order_type=OrderType.Oracle, auction_duration=0, auction_end_price=P // 2)
    assert calculate_auction_price(order, 0, 1, 800_000, True) == MAX_PREDICTION_MARKET_PRICE


def test_slot_before_order_slot_is_a_math_error() -> None:
    with pytest.raises(MathError):
        calculate_auction_price(_order(slot=10, auction_duration=5), 9, 1, None)


# --- the strict end boundary ------------------------------------------------------------------
def test_auction_is_complete_only_strictly_after_its_duration() -> None:
    assert is_auction_complete(100, 0, 100)
    assert not is_auction_complete(100, 10, 110)  # the end price's slot is still auction
    assert is_auction_complete(100, 10, 111)


@given(st.integers(0, 10**6), st.integers(1, 255), st.integers(0, 600))
def test_auction_price_moves_monotonically_between_start_and_end(
    start_offset: int, duration: int, elapsed: int
) -> None:
    start = 50 * P
    end = start + start_offset
    bid = _order(auction_duration=duration, auction_start_price=start, auction_end_price=end)
    price = calculate_auction_price(bid, elapsed, 1, None)
    later = calculate_auction_price(bid, elapsed + 1, 1, None)
    assert start <= price <= later <= end
    if elapsed >= duration:
        assert price == end


# --- get_limit_price --------------------------------------------------------------------------
def test_limit_price_during_and_after_a_market_auction() -> None:
    order = _order(
        slot=100, auction_duration=10, auction_start_price=100 * P, auction_end_price=101 * P
    )
    assert get_limit_price(order, None, None, 105, 1) == 100_500_000
    assert get_limit_price(order, None, None, 110, 1) == 101 * P  # last auction slot
    assert get_limit_price(order, None, None, 111, 1) is None  # no price, no fallback
    assert get_limit_price(order, None, 102_345_678, 111, 1_000) == 102_345_000
    assert not has_limit_price(order, 111)
    with pytest.raises(ProtocolError) as err:
        force_get_limit_price(order, None, None, 111, 1)
    assert err.value.code == ErrorCode.UnableToGetLimitPrice


def test_limit_price_of_fixed_and_oracle_offset_orders() -> None:
    fixed = _order(order_type=OrderType.Limit, price=99 * P)
    assert get_limit_price(fixed, 100 * P, 1, 0, 1) == 99 * P
    assert has_limit_price(fixed, 0)
    # an ask floating 1.5 below the oracle, tick 1.0: 98.5 rounds up to 99
    floating = _order(order_type=OrderType.Limit, direction=SHORT, oracle_price_offset=-1_500_000)
    assert get_limit_price(floating, 100 * P, None, 0, P) == 99 * P
    with pytest.raises(ProtocolError) as err:
        get_limit_price(floating, None, None, 0, 1)
    assert err.value.code == ErrorCode.OracleNotFound


def test_auction_with_zero_prices_has_no_auction_price() -> None:
    # duration set but both prices 0: the order is priced as if no auction ran
    order = _order(order_type=OrderType.Limit, price=99 * P, auction_duration=10)
    assert get_limit_price(order, None, None, 1, 1) == 99 * P


# --- calculate_auction_params_for_trigger_order (program, spot path) --------------------------
def test_trigger_order_auction_params_program_vectors() -> None:
    oracle = _oracle(100 * P)
    limit = _order(
        order_type=OrderType.TriggerLimit, trigger_price=100 * P, price=110 * P, direction=LONG
    )
    assert calculate_auction_params_for_trigger_order(limit, oracle, 10, None) == (
        10,
        100_000_000,
        100_500_000,
    )
    limit = replace(limit, direction=SHORT, price=90 * P)
    assert calculate_auction_params_for_trigger_order(limit, oracle, 10, None) == (
        10,
        100_000_000,
        99_500_000,
    )
    market = _order(order_type=OrderType.TriggerMarket, trigger_price=100 * P)
    assert calculate_auction_params_for_trigger_order(market, oracle, 10, None) == (
        10,
        100_000_000,
        100_500_000,
    )


def test_perp_trigger_market_auction_crosses_by_the_tier_buffer() -> None:
    # tier A, TWAPs all at the oracle ($100), zero spreads/stds: the baseline start offset is 0
    # and the end is the minimum buffer 100e6/1000 = 100_000. A -5 bps start buffer (-50_000)
    # moves both more aggressive: start 50_000, end 150_000; 100_000 apart = 0.1% -> 10 slots.
    market = _market(100 * P, bid_twap=100 * P, ask_twap=100 * P, spread=0, tier=ContractTier.A)
    order = _order(order_type=OrderType.TriggerMarket, trigger_price=100 * P)
    assert calculate_auction_params_for_trigger_order(order, _oracle(100 * P), 20, market) == (
        20,
        50_000,
        150_000,
    )


# --- get_auction_duration (program) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("price_diff", "expected"), [(0, 1), (P // 10, 6), (P // 2, 30), (P, 60), (2 * P, 120)]
)
def test_get_auction_duration_program_vectors(price_diff: int, expected: int) -> None:
    assert get_auction_duration(price_diff, 100 * P, ContractTier.C) == expected


def test_get_auction_duration_tier_b_and_cap() -> None:
    assert get_auction_duration(P, 100 * P, ContractTier.B) == 100  # 1% at 100 slots/%
    assert get_auction_duration(50 * P, 100 * P, ContractTier.B) == 180


# --- update_perp_auction_params (program) ------------------------------------------------------
def test_extreme_sanitize_oracle_order_program_vector() -> None:
    oracle_price = 145 * P
    market = _market(
        oracle_price,
        bid_twap=oracle_price - 192_988,
        ask_twap=oracle_price + 192_988,
        mark_twap_5min=oracle_price,
    )
    before = _params(
        order_type=OrderType.Oracle,
        auction_start_price=144_807_012,
        auction_end_price=145_807_012,
        auction_duration=30,
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        -144_807,
        3_092_988,
        134,
    )
    before = replace(
        before, direction=SHORT, auction_start_price=145_192_988, auction_end_price=143_807_012
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        145_192_988,
        143_807_012,
        58,
    )
    before = replace(
        before,
        auction_start_price=-145_192_988,
        auction_end_price=-143_807_012,
        oracle_price_offset=-143_807_012,
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        145_192,
        -3_092_988,
        134,
    )
    assert after.oracle_price_offset == -143_807_012


def test_extreme_sanitize_oracle_order_huge_market_premium_program_vector() -> None:
    oracle_price = 145 * P
    market = _market(
        oracle_price,
        bid_twap=oracle_price * 15 // 10 - 192_988,
        ask_twap=oracle_price * 16 // 10 + 192_988,
    )
    before = _params(
        order_type=OrderType.Oracle,
        auction_start_price=217_307_012,
        auction_end_price=218_307_012,
        auction_duration=30,
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        79_750_000,
        90_092_988,
        180,
    )


def test_signed_msg_oracle_orders_program_vectors() -> None:
    oracle_price = 100 * P
    market = _market(
        oracle_price,
        bid_twap=oracle_price - 100_000,
        ask_twap=oracle_price + 100_000,
        mark_twap_5min=oracle_price,
        tier=ContractTier.A,
    )
    long_before = _params(
        order_type=OrderType.Oracle,
        auction_start_price=0,
        auction_end_price=200_000,
        auction_duration=30,
    )
    assert update_perp_auction_params(long_before, market, oracle_price, True) == long_before
    long_after = update_perp_auction_params(long_before, market, oracle_price, False)
    assert (long_after.auction_start_price, long_after.auction_end_price) == (-99_900, 200_000)
    assert long_after.auction_duration == 30

    short_before = _params(
        order_type=OrderType.Oracle,
        direction=SHORT,
        auction_start_price=100,
        auction_end_price=-200_000,
        auction_duration=30,
    )
    assert update_perp_auction_params(short_before, market, oracle_price, True) == short_before
    short_after = update_perp_auction_params(
        replace(short_before, auction_start_price=0), market, oracle_price, False
    )
    assert (short_after.auction_start_price, short_after.auction_end_price) == (100_100, -200_000)
    assert short_after.auction_duration == 31


def test_signed_msg_market_orders_program_vectors() -> None:
    oracle_price = 100 * P
    market = _market(
        oracle_price,
        bid_twap=oracle_price - 100_000,
        ask_twap=oracle_price + 100_000,
        mark_twap_5min=oracle_price,
        tier=ContractTier.A,
    )
    long_before = _params(
        auction_start_price=100_000_000, auction_end_price=100_200_000, auction_duration=30
    )
    assert update_perp_auction_params(long_before, market, oracle_price, True) == long_before
    long_after = update_perp_auction_params(long_before, market, oracle_price, False)
    assert (long_after.auction_start_price, long_after.auction_end_price) == (
        99_900_100,
        100_200_000,
    )
    assert long_after.auction_duration == 30

    short_before = _params(
        direction=SHORT,
        auction_start_price=100_000_100,
        auction_end_price=99_800_000,
        auction_duration=30,
    )
    assert update_perp_auction_params(short_before, market, oracle_price, True) == short_before
    short_after = update_perp_auction_params(
        replace(short_before, auction_start_price=100_000_000), market, oracle_price, False
    )
    assert (short_after.auction_start_price, short_after.auction_end_price) == (
        100_100_100,
        99_800_000,
    )
    assert short_after.auction_duration == 31


def _sanitize_limit_market() -> PerpMarket:
    oracle_price = 100 * P
    return _market(
        oracle_price, bid_twap=oracle_price * 99 // 100, ask_twap=oracle_price * 101 // 100
    )


@pytest.mark.parametrize(
    "params",
    [
        _params(order_type=OrderType.Limit, auction_duration=0),
        _params(order_type=OrderType.Limit, post_only=PostOnlyParam.MustPostOnly),
        _params(order_type=OrderType.Limit, immediate_or_cancel=True),
        _params(order_type=OrderType.Limit, oracle_price_offset=0),
        _params(order_type=OrderType.Limit, price=0),
        _params(order_type=OrderType.Limit, price=100 * P),  # long at the $101 ask: no cross
        _params(order_type=OrderType.Limit, price=100 * P, direction=SHORT),  # $99 bid
    ],
)
def test_sanitize_limit_leaves_non_crossing_orders_program_vectors(params: OrderParams) -> None:
    assert update_perp_auction_params(params, _sanitize_limit_market(), 100 * P) == params


def test_sanitize_limit_gives_a_crossing_bid_an_auction_program_vector() -> None:
    before = _params(order_type=OrderType.Limit, price=102 * P)
    after = update_perp_auction_params(before, _sanitize_limit_market(), 100 * P)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        100 * P,
        102 * P,
        120,
    )


def test_sanitize_limit_crossing_ask_with_tight_twaps_program_vector() -> None:
    market = _sanitize_limit_market()
    market.amm.last_bid_price_twap = market.amm.last_mark_price_twap_5min - 100_000
    market.amm.last_ask_price_twap = market.amm.last_mark_price_twap_5min + 100_000
    before = _params(order_type=OrderType.Limit, price=98 * P, direction=SHORT)
    after = update_perp_auction_params(before, market, 100 * P)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        100 * P + 100_100,
        98 * P,
        127,
    )


def test_sanitize_oracle_limit_program_vectors() -> None:
    oracle_price = 100 * P
    market = _market(
        oracle_price,
        bid_twap=oracle_price * 999 // 1000,
        ask_twap=oracle_price * 1001 // 1000,
        mark_twap_5min=oracle_price,
        spread=1_000,
    )

    def check(offset: int, direction: PositionDirection) -> tuple[Any, ...]:
        before = _params(
            order_type=OrderType.Limit, oracle_price_offset=offset, direction=direction
        )
        after = update_perp_auction_params(before, market, oracle_price)
        assert after.price == 0 and after.oracle_price_offset == offset
        if after == before:
            return ()
        return after.auction_start_price, after.auction_end_price, after.auction_duration

    assert check(10 * P, LONG) == (-90_010, 10 * P, 180)
    assert check(-2 * P, LONG) == ()
    assert check(144, LONG) == ()
    assert check(199_003, LONG) == (-90_010, 199_003, 18)
    assert check(-10 * P, SHORT) == (89_990, -10 * P, 180)
    assert check(-199_003, SHORT) == (89_990, -199_003, 18)


def _market_sanitize_market(tier: ContractTier, peg: int = 100 * PEG_PRECISION) -> PerpMarket:
    oracle_price = 99 * P
    oracle_twap = oracle_price - 97_238
    return _market(
        oracle_price,
        bid_twap=oracle_twap + 17_238,
        ask_twap=oracle_twap + 217_999,
        oracle_twap=oracle_twap,
        tier=tier,
        peg=peg,
    )


def test_market_sanitize_program_vectors() -> None:
    oracle_price = 99 * P
    market = _market_sanitize_market(ContractTier.B, peg=99 * PEG_PRECISION)
    before = _params(
        auction_start_price=103 * P, auction_end_price=104 * P, price=104 * P, auction_duration=1
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert after.auction_start_price == 99_018_698
    before = _params(
        direction=SHORT,
        auction_start_price=98 * P,
        auction_end_price=95 * P,
        price=94 * P,
        auction_duration=11,
    )
    assert update_perp_auction_params(before, market, oracle_price).auction_start_price == (
        99_216_738
    )
    # a short auction far above the oracle is passive: kept, only lengthened
    before = _params(
        direction=SHORT,
        auction_start_price=103 * P,
        auction_end_price=104 * P,
        price=104 * P,
        auction_duration=1,
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        103 * P,
        104 * P,
        102,
    )


def test_oracle_market_sanitize_program_vectors() -> None:
    oracle_price = 99 * P
    market = _market_sanitize_market(ContractTier.B)
    before = _params(
        order_type=OrderType.Oracle,
        auction_start_price=4 * P,
        auction_end_price=5 * P,
        price=5 * P,
        auction_duration=8,
    )
    after = update_perp_auction_params(before, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price) == (18_698, 2_196_053)
    short = replace(before, direction=SHORT)
    after = update_perp_auction_params(short, market, oracle_price)
    assert (after.auction_start_price, after.auction_end_price) == (4 * P, 5 * P)
    assert after.auction_duration != 8
    fine = replace(
        short, auction_start_price=99 * P, auction_end_price=100 * P, auction_duration=102
    )
    assert update_perp_auction_params(fine, market, oracle_price) == fine


def test_market_sanitize_without_auction_params_program_vectors() -> None:
    oracle_price = 99 * P
    market = _market_sanitize_market(ContractTier.Speculative)
    quarter_pct = oracle_price // 400

    def derive(**kw: Any) -> OrderParams:
        return update_perp_auction_params(_params(**kw), market, oracle_price)

    assert derive(price=104 * P).auction_start_price == 98_771_198
    assert derive(price=99 * P).auction_start_price == 99 * P - quarter_pct + 18_698
    assert derive(direction=SHORT, price=94 * P).auction_start_price == (
        99_118_879 + quarter_pct + 97_859
    )
    assert derive(direction=SHORT, price=99 * P + 100_000).auction_start_price == (
        99 * P + 100_000 + quarter_pct + 116_738
    )
    short = derive(direction=SHORT)
    assert (short.auction_start_price, short.auction_end_price, short.auction_duration) == (
        99_118_879 + quarter_pct + 97_859,
        98_028_211,
        88,
    )
    long = derive()
    assert (long.auction_start_price, long.auction_end_price, long.auction_duration) == (
        98_901_080 - quarter_pct + 117_618,
        100_207_026,
        88,
    )


def test_oracle_market_sanitize_without_auction_params_program_vectors() -> None:
    oracle_price = 99 * P
    oracle_twap = oracle_price - 97_238
    market = _market(
        oracle_price,
        bid_twap=oracle_twap + 17_238,
        ask_twap=oracle_twap + 217_999,
        mark_twap_5min=oracle_twap + (17_238 + 217_999) // 2,
        oracle_twap=oracle_twap,
        tier=ContractTier.Speculative,
    )
    quarter_pct = oracle_price // 400

    def derive(**kw: Any) -> OrderParams:
        return update_perp_auction_params(
            _params(order_type=OrderType.Oracle, **kw), market, oracle_price
        )

    after = derive(oracle_price_offset=5 * P)
    assert (after.auction_start_price, after.auction_end_price) == (-228_802, 5 * P)
    after = derive()
    assert (after.auction_start_price, after.auction_end_price) == (18_698 - quarter_pct, 1_207_026)
    assert after.oracle_price_offset is None
    after = derive(direction=SHORT, oracle_price_offset=-5 * P)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        216_738 + quarter_pct,
        -5 * P,
        180,
    )
    after = derive(direction=SHORT)
    assert (after.auction_start_price, after.auction_end_price, after.auction_duration) == (
        216_738 + quarter_pct,
        -971_789,
        88,
    )


def test_untrusted_twaps_use_a_fixed_fraction_of_the_bid_or_ask_twap() -> None:
    # volume $100k (<= the threshold): tier Speculative uses 1/100 of the TWAP. Long starts
    # 98_920_000 / 100 = 989_200 above the oracle, short 99_120_761 / 100 = 991_207 below.
    # Oracle orders with no offset then subtract / add the 25 bps buffer (247_500).
    oracle_price = 99 * P
    oracle_twap = oracle_price - 97_238
    market = _market(
        oracle_price,
        bid_twap=oracle_twap + 17_238,
        ask_twap=oracle_twap + 217_999,
        oracle_twap=oracle_twap,
        tier=ContractTier.Speculative,
        volume_24h=100_000 * QUOTE_PRECISION,
    )
    after = update_perp_auction_params(
        _params(order_type=OrderType.Oracle, oracle_price_offset=2 * P), market, oracle_price
    )
    assert after.auction_start_price == 989_200 - 247_500
    after = update_perp_auction_params(
        _params(order_type=OrderType.Oracle, direction=SHORT, oracle_price_offset=-2 * P),
        market,
        oracle_price,
    )
    assert after.auction_start_price == -991_207 + 247_500


def test_trigger_orders_are_not_sanitized() -> None:
    params = _params(order_type=OrderType.TriggerMarket, trigger_price=100 * P)
    assert update_perp_auction_params(params, _sanitize_limit_market(), 100 * P) == params


def test_derived_market_auction_by_hand() -> None:
    # tier A, every TWAP at the $100 oracle, zero spreads: baseline start 0, end the minimum
    # buffer 100e6 / 1000 = 100_000. Start buffer 25 bps = 250_000 more passive:
    # a bid runs 99_750_000 -> 100_100_000 (0.35% -> 35 slots).
    market = _market(100 * P, bid_twap=100 * P, ask_twap=100 * P, spread=0, tier=ContractTier.A)
    assert derive_market_order_auction_params(market, LONG, 100 * P, 0, 2_500) == (
        99_750_000,
        100_100_000,
        35,
    )
    # with a $100.05 limit the end is capped there (0.30% -> 30 slots)
    assert derive_market_order_auction_params(market, LONG, 100 * P, 100_050_000, 2_500) == (
        99_750_000,
        100_050_000,
        30,
    )


def test_has_valid_auction_params() -> None:
    assert has_valid_auction_params(_params(order_type=OrderType.Limit))
    assert not has_valid_auction_params(_params())
    full = _params(auction_duration=10, auction_start_price=1, auction_end_price=2)
    assert has_valid_auction_params(full)
    assert not has_valid_auction_params(replace(full, direction=SHORT))


# --- get_close_perp_params (program) -----------------------------------------------------------
def _close_market(ask: int, bid: int, mark: int) -> PerpMarket:
    amm = AMM(
        oracle="o",
        base_asset_reserve=100 * AMM_RESERVE_PRECISION,
        quote_asset_reserve=100 * AMM_RESERVE_PRECISION,
        sqrt_k=100 * AMM_RESERVE_PRECISION,
        last_ask_price_twap=ask * P,
        last_bid_price_twap=bid * P,
        last_mark_price_twap_5min=mark * P,
        mark_std=P,
        oracle_std=P,
        volume_24h=1_000_000 * QUOTE_PRECISION,
    )
    amm.historical_oracle_data.last_oracle_price = P
    amm.historical_oracle_data.last_oracle_price_twap = 100 * P
    amm.historical_oracle_data.last_oracle_price_twap_5min = 100 * P
    return PerpMarket(market_index=0, name="t", amm=amm, contract_tier=ContractTier.Speculative)


@pytest.mark.parametrize(
    ("direction", "twaps", "expected"),
    [
        (LONG, (101, 99, 99), (-P, 2 * P)),
        (LONG, (103, 101, 102), (2 * P, 4 * P)),
        (LONG, (99, 97, 98), (-2 * P, 0)),
        (SHORT, (101, 99, 100), (0, -2 * P)),
        (SHORT, (103, 101, 102), (2 * P, 0)),
        (SHORT, (99, 97, 98), (-2 * P, -4 * P)),
    ],
)
def test_get_close_perp_params_program_vectors(
    direction: PositionDirection, twaps: tuple[int, int, int], expected: tuple[int, int]
) -> None:
    market = _close_market(*twaps)
    params = get_close_perp_params(market, direction, BASE_PRECISION)
    assert (params.auction_start_price, params.auction_end_price) == expected
    assert params.oracle_price_offset == expected[1]
    assert params.auction_duration == 80
    assert params.reduce_only
    assert get_perp_baseline_start_end_price_offset(market, direction, 1) == expected
    order = _order(
        order_type=OrderType.Oracle,
        slot=1,
        direction=direction,
        base_asset_amount=BASE_PRECISION,
        reduce_only=True,
        oracle_price_offset=expected[1],
        auction_start_price=expected[0],
        auction_end_price=expected[1],
        auction_duration=80,
        max_ts=100,
    )
    validate_order(order, market, 100 * P, 1)
