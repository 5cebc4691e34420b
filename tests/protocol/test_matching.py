"""Matching and fulfillment math: who may make for whom, the fill sequence, and the fill-price
checks (the program's ``math/matching.rs``, ``math/fulfillment.rs`` and the fill functions of
``math/orders.rs``). Cases marked "program" reproduce the program's own unit tests."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    EPOCH_DURATION,
    PEG_PRECISION,
)
from protocol.controller.fills import (
    FillMode,
    amm_can_fill_order,
    get_fallback_price,
    get_limit_price_for_fill_mode,
    increment_total_referrer_reward,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.fulfillment import (
    AMMFulfillment,
    MatchFulfillment,
    determine_perp_fulfillment_methods,
    determine_spot_fulfillment_methods,
)
from protocol.math.matching import (
    are_orders_same_market_but_different_sides,
    calculate_fill_for_matched_orders,
    do_orders_cross,
    is_maker_for_taker,
)
from protocol.math.oracle import OracleValidity
from protocol.math.orders import (
    calculate_fill_price,
    calculate_limit_price_with_buffer,
    is_oracle_too_divergent_with_twap_5min,
    limit_price_breaches_maker_oracle_price_bands,
    select_margin_type_for_perp_maker,
    validate_fill_price,
    validate_fill_price_within_price_bands,
)
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OraclePriceData,
    PerpMarket,
    PerpPosition,
    User,
    UserStats,
)
from protocol.state.state import FeeTier
from protocol.state.user import Order
from protocol.types import MarginRequirementType, MarketType, OrderType, PositionDirection

P = 10**6
B = BASE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
KEY = (bytes(32), 0)


def order(**kw: Any) -> Order:
    """``Order::default()`` of the program (a limit order at slot 0) with overrides."""
    fields: dict[str, Any] = {
        "order_id": 1,
        "market_index": 0,
        "market_type": MarketType.Perp,
        "order_type": OrderType.Limit,
        "direction": LONG,
        "base_asset_amount": B,
        "slot": 0,
        **kw,
    }
    return Order(**fields)


# --- is_maker_for_taker (program: math/matching/tests.rs) --------------------------------------
def test_taker_post_only_never_takes() -> None:
    assert not is_maker_for_taker(order(), order(post_only=True), 0)


def test_market_orders_and_auctioning_limits_are_not_makers() -> None:
    market = order(order_type=OrderType.Market)
    assert not is_maker_for_taker(market, market, 0)
    in_auction = order(auction_duration=10)
    assert not is_maker_for_taker(in_auction, market, 0)
    assert not is_maker_for_taker(in_auction, order(auction_duration=10), 0)


def test_post_only_maker_makes_for_market_and_auctioning_takers() -> None:
    maker = order(post_only=True)
    assert is_maker_for_taker(maker, order(order_type=OrderType.Market), 1)
    assert is_maker_for_taker(maker, order(auction_duration=10), 1)
    # and for a resting taker limit order even if younger
    assert is_maker_for_taker(order(slot=1, post_only=True), order(auction_duration=10), 11)


def test_limit_maker_rests_once_its_auction_is_over() -> None:
    maker = order(auction_duration=10)
    assert maker.is_resting_limit_order(11)
    assert is_maker_for_taker(maker, order(order_type=OrderType.Market), 11)
    taker = order(slot=11, auction_duration=10)
    assert not taker.is_resting_limit_order(11)
    assert is_maker_for_taker(maker, taker, 11)


def test_between_two_resting_limit_orders_the_older_makes() -> None:
    maker = order(slot=1, auction_duration=10)
    assert not is_maker_for_taker(maker, order(slot=0, auction_duration=10), 15)
    assert is_maker_for_taker(maker, order(slot=2, auction_duration=10), 15)
    # same slot, both resting: the one that started resting first (5 + 2 <= 10 + 5)
    assert is_maker_for_taker(
        order(slot=5, auction_duration=2), order(slot=10, auction_duration=5), 20
    )
    # a resting maker without auction makes for a market taker of the same slot
    assert is_maker_for_taker(order(), order(order_type=OrderType.Market), 0)


def test_sides_markets_and_crossing() -> None:
    assert are_orders_same_market_but_different_sides(order(direction=SHORT), order())
    assert not are_orders_same_market_but_different_sides(order(), order())
    assert not are_orders_same_market_but_different_sides(
        order(direction=SHORT, market_type=MarketType.Spot), order()
    )
    assert not are_orders_same_market_but_different_sides(
        order(direction=SHORT, market_index=1), order()
    )
    # a maker bid crosses a taker asking at most its price; a maker ask, a bid at least its
    assert do_orders_cross(LONG, 100 * P, 100 * P) and not do_orders_cross(LONG, 100 * P, 101 * P)
    assert do_orders_cross(SHORT, 100 * P, 100 * P) and not do_orders_cross(SHORT, 100 * P, 99 * P)


def test_matched_quote_rounds_for_the_maker() -> None:
    # 0.333333333 SOL at $100.000001: notional 33_333_333.633333333 quote units
    assert calculate_fill_for_matched_orders(B, 100_000_001, 333_333_333, 9, LONG) == (
        333_333_333,
        33_333_333,
    )
    assert calculate_fill_for_matched_orders(B, 100_000_001, 333_333_333, 9, SHORT) == (
        333_333_333,
        33_333_334,
    )
    # the smaller side sets the size
    assert calculate_fill_for_matched_orders(2 * B, 100 * P, 5 * B, 9, SHORT) == (
        2 * B,
        200 * P,
    )


# --- fulfillment (program: math/fulfillment/tests.rs) -------------------------------------------
def amm_at_100() -> AMM:
    reserve = 100 * AMM_RESERVE_PRECISION
    return AMM(
        oracle="TEST",
        base_asset_reserve=reserve,
        quote_asset_reserve=reserve,
        sqrt_k=reserve,
        peg_multiplier=100 * PEG_PRECISION,
        order_step_size=10_000_000,
        historical_oracle_data=HistoricalOracleData.seeded(100 * P, 0),
    )


RESERVE_PRICE = 100 * P


def makers(*prices: int) -> list[tuple[tuple[bytes, int], int, int]]:
    return [(KEY, i, price) for i, price in enumerate(prices)]


@pytest.mark.parametrize(
    ("taker", "maker_prices", "expected"),
    [
        # amm_available_and_taker_doesnt_cross_maker
        (order(price=102 * P), (103 * P,), [AMMFulfillment(None)]),
        # amm_available_and_maker_better_than_amm
        (order(price=102 * P), (99 * P,), [MatchFulfillment(KEY, 0, 99 * P), AMMFulfillment(None)]),
        # maker_amm_maker_amm_maker_ask
        (
            order(price=102 * P),
            (99 * P, 101 * P),
            [
                MatchFulfillment(KEY, 0, 99 * P),
                AMMFulfillment(101 * P),
                MatchFulfillment(KEY, 1, 101 * P),
                AMMFulfillment(None),
            ],
        ),
        # maker_maker_amm_ask
        (
            order(price=102 * P),
            (99 * P, 99_500_000),
            [
                MatchFulfillment(KEY, 0, 99 * P),
                MatchFulfillment(KEY, 1, 99_500_000),
                AMMFulfillment(None),
            ],
        ),
        # amm_maker_amm_maker_amm_ask
        (
            order(price=105 * P),
            (102 * P, 103 * P),
            [
                AMMFulfillment(102 * P),
                MatchFulfillment(KEY, 0, 102 * P),
                AMMFulfillment(103 * P),
                MatchFulfillment(KEY, 1, 103 * P),
                AMMFulfillment(None),
            ],
        ),
        # maker_amm_maker_amm_maker_bid
        (
            order(direction=SHORT, price=95 * P),
            (101 * P, 99 * P),
            [
                MatchFulfillment(KEY, 0, 101 * P),
                AMMFulfillment(99 * P),
                MatchFulfillment(KEY, 1, 99 * P),
                AMMFulfillment(None),
            ],
        ),
        # no_asks
        (order(price=99 * P), (101 * P, 102 * P), []),
        # amm_available_and_maker_crosses / doesnt_cross (a post-only order, AMM only)
        (order(post_only=True, price=102 * P), (), [AMMFulfillment(None)]),
        (order(post_only=True, price=99 * P), (), []),
    ],
)
def test_perp_fulfillment_methods(
    taker: Order, maker_prices: tuple[int, ...], expected: list[object]
) -> None:
    methods = determine_perp_fulfillment_methods(
        taker, makers(*maker_prices), amm_at_100(), RESERVE_PRICE, taker.price, True
    )
    assert methods == expected


def test_without_the_amm_only_crossing_makers_fill_and_seven_methods_at_most() -> None:
    taker = order(price=102 * P)
    assert determine_perp_fulfillment_methods(
        taker, makers(101 * P, 103 * P), amm_at_100(), RESERVE_PRICE, 102 * P, False
    ) == [MatchFulfillment(KEY, 0, 101 * P)]
    many = makers(*([99 * P] * 9))
    assert (
        len(
            determine_perp_fulfillment_methods(
                taker, many, amm_at_100(), RESERVE_PRICE, None, False
            )
        )
        == 7
    )
    # a market taker past its auction (no limit price) crosses every maker and the AMM
    assert determine_perp_fulfillment_methods(
        taker, makers(99 * P), amm_at_100(), RESERVE_PRICE, None, True
    ) == [MatchFulfillment(KEY, 0, 99 * P), AMMFulfillment(None)]


def test_spot_fulfillment_needs_a_limit_price() -> None:
    taker = order(market_type=MarketType.Spot, price=101 * P)
    assert determine_spot_fulfillment_methods(taker, makers(100 * P, 102 * P), 101 * P) == [
        MatchFulfillment(KEY, 0, 100 * P)
    ]
    assert determine_spot_fulfillment_methods(taker, makers(100 * P), None) == []


# --- fill prices and bands ---------------------------------------------------------------------
def test_fill_price_and_the_takers_rounding_slack() -> None:
    assert calculate_fill_price(100_010_002, B, B) == 100_010_002
    assert calculate_fill_price(50_150_000, B // 2, B) == 100_300_000
    # a taker buying at a $100 limit may pay one quote unit over for rounding; a maker may not
    validate_fill_price(100_000_001, B, B, LONG, 100 * P, True)
    with pytest.raises(ProtocolError) as err:
        validate_fill_price(100_000_001, B, B, LONG, 100 * P, False)
    assert err.value.code == ErrorCode.InvalidOrderFillPrice
    validate_fill_price(99_999_999, B, B, SHORT, 100 * P, True)
    with pytest.raises(ProtocolError):
        validate_fill_price(99_999_998, B, B, SHORT, 100 * P, True)


def test_maker_limit_breaching_the_oracle_by_the_initial_margin() -> None:
    # 10% initial margin: a bid 10% above the oracle (an ask 10% below) is cancelled
    assert limit_price_breaches_maker_oracle_price_bands(110 * P, LONG, 100 * P, 1000)
    assert not limit_price_breaches_maker_oracle_price_bands(109_990_000, LONG, 100 * P, 1000)
    assert limit_price_breaches_maker_oracle_price_bands(90 * P, SHORT, 100 * P, 1000)
    assert not limit_price_breaches_maker_oracle_price_bands(90 * P, LONG, 100 * P, 1000)


def test_fill_price_bands() -> None:
    validate_fill_price_within_price_bands(109_990_000, 100 * P, 100 * P, 1000, 500_000, False)
    with pytest.raises(ProtocolError) as err:
        validate_fill_price_within_price_bands(110 * P, 100 * P, 100 * P, 1000, 500_000, False)
    assert err.value.code == ErrorCode.PriceBandsBreached
    # 40/60 = 66.7% from the 5-minute TWAP is past the 50% band
    with pytest.raises(ProtocolError):
        validate_fill_price_within_price_bands(100 * P, 100 * P, 60 * P, 1000, 500_000, False)
    # a buy below both the oracle and its TWAP is never out of band
    validate_fill_price_within_price_bands(50 * P, 100 * P, 100 * P, 1000, 500_000, False, LONG)
    assert is_oracle_too_divergent_with_twap_5min(150 * P, 100 * P, 500_000)
    assert not is_oracle_too_divergent_with_twap_5min(149_999_999, 100 * P, 500_000)


def test_maker_margin_type_after_a_fill() -> None:
    maker = User(authority=bytes(32))
    maker.perp_positions.append(PerpPosition(market_index=0, base_asset_amount=-B))
    # from flat to short 1: risk increasing
    assert select_margin_type_for_perp_maker(maker, -B, 0) == (MarginRequirementType.Fill, True)
    # from short 2 to short 1: reducing
    assert select_margin_type_for_perp_maker(maker, B, 0) == (
        MarginRequirementType.Maintenance,
        False,
    )
    maker.perp_positions[0].base_asset_amount = 0
    assert select_margin_type_for_perp_maker(maker, B, 0) == (
        MarginRequirementType.Maintenance,
        False,
    )


def test_post_only_limit_is_moved_inside_by_the_rebate() -> None:
    tier = FeeTier(maker_rebate_numerator=20)
    # 2 bps of $100 = $0.02; a fee adjustment of -50% halves the buffer
    assert calculate_limit_price_with_buffer(order(post_only=True), 100 * P, tier, 0) == 99_980_000
    assert (
        calculate_limit_price_with_buffer(order(post_only=True), 100 * P, tier, -50) == 99_990_000
    )
    assert (
        calculate_limit_price_with_buffer(order(post_only=True, direction=SHORT), 100 * P, tier, 0)
        == 100_020_000
    )
    assert calculate_limit_price_with_buffer(order(), 100 * P, tier, 0) == 100 * P


def test_place_and_take_reads_the_limit_at_the_end_of_the_auction() -> None:
    taker = order(
        order_type=OrderType.Market,
        auction_start_price=100 * P,
        auction_end_price=101 * P,
        auction_duration=10,
    )
    # at slot 2 of 10: 100 + 1 * 2 / 10 = $100.20; place-and-take reads slot 10: $101
    assert get_limit_price_for_fill_mode(FillMode.Fill, taker, None, 2, 1, False) == 100_200_000
    assert get_limit_price_for_fill_mode(FillMode.PlaceAndTake, taker, None, 2, 1, False) == (
        101 * P
    )


def test_fallback_price_for_a_market_order_without_limit() -> None:
    amm = amm_at_100()
    amm.last_bid_price_twap = amm.last_ask_price_twap = 100 * P
    market = PerpMarket(market_index=0, name="TEST", amm=amm)
    # AMM liquidity available: its ask plus 1/clamp(20 * seconds left, 100, 200)
    assert get_fallback_price(market, LONG, B, 100 * P, 0) == 101 * P
    assert get_fallback_price(market, LONG, B, 100 * P, 30) == 100_500_000
    assert get_fallback_price(market, SHORT, B, 100 * P, 0) == 99 * P
    # none: the oracle plus the bid/ask premium over the oracle TWAP (none here) and
    # 1/clamp(2 * seconds left, 10, 50)
    assert get_fallback_price(market, LONG, 0, 100 * P, 0) == 110 * P
    assert get_fallback_price(market, SHORT, 0, 100 * P, 100) == 98 * P


@given(
    base=st.integers(1, 10**15),
    price=st.integers(1, 10**12),
    maker_direction=st.sampled_from([LONG, SHORT]),
)
def test_a_matched_quote_never_violates_the_makers_price(
    base: int, price: int, maker_direction: PositionDirection
) -> None:
    filled, quote = calculate_fill_for_matched_orders(base, price, base, 9, maker_direction)
    notional = price * base
    if maker_direction == LONG:  # the maker pays at most its price
        assert quote * B <= notional < (quote + 1) * B
    else:  # the maker receives at least its price
        assert (quote - 1) * B < notional <= quote * B
    validate_fill_price(quote, filled, B, maker_direction, price, False)


# --- the AMM's availability and referrer epochs ------------------------------------------------
def test_amm_availability_follows_the_programs_rules() -> None:
    market = PerpMarket(market_index=0, name="TEST", amm=amm_at_100())
    fresh = OraclePriceData(100 * P, 0, 0)
    late = OraclePriceData(100 * P, 0, 2)
    taker = order(order_type=OrderType.Market, slot=10)
    # a valid oracle and an order at least as old as the oracle's delay: low risk
    assert amm_can_fill_order(market, taker, 10, OracleValidity.Valid, fresh)
    # an order younger than the oracle's delay needs an oracle valid for an immediate fill
    stale_immediate = OracleValidity.stale_for_amm(immediate=True, low_risk=False)
    assert not amm_can_fill_order(market, taker, 11, stale_immediate, late)
    # ... and an AMM that wants the other side (long inventory for a buyer) with jit enabled
    assert not amm_can_fill_order(market, taker, 11, OracleValidity.Valid, late)
    market.amm.amm_jit_intensity = 100
    # the users are net short 5 (the AMM long), under a tenth of the 100 SOL each side can take
    market.amm.base_asset_amount_with_amm = -(5 * B)
    market.amm.min_base_asset_reserve = 0
    market.amm.max_base_asset_reserve = 200 * AMM_RESERVE_PRECISION
    assert amm_can_fill_order(market, taker, 11, OracleValidity.Valid, late)
    # an oracle invalid for low-risk fills, or a market in drawdown, blocks it
    assert not amm_can_fill_order(market, taker, 10, OracleValidity.TooVolatile, fresh)
    market.amm.net_revenue_since_last_funding = -10_001 * P
    market.amm.total_fee_minus_distributions = 1 * P
    assert not amm_can_fill_order(market, taker, 10, OracleValidity.Valid, fresh)


def test_referrer_epoch_counter_resets_after_each_epoch() -> None:
    stats = UserStats(authority=bytes(32))
    increment_total_referrer_reward(stats, 5, 1_000)
    # the first reward starts the epoch
    assert (stats.next_epoch_ts, stats.fees.current_epoch_referrer_reward) == (
        1_000 + EPOCH_DURATION,
        5,
    )
    increment_total_referrer_reward(stats, 7, 1_000 + EPOCH_DURATION)
    assert stats.fees.current_epoch_referrer_reward == 12
    # past the epoch's end: totals keep counting, the epoch counter restarts
    increment_total_referrer_reward(stats, 3, 1_001 + 2 * EPOCH_DURATION)
    assert (stats.fees.total_referrer_reward, stats.fees.current_epoch_referrer_reward) == (
        15,
        0,
    )
    assert stats.next_epoch_ts == 1_000 + 3 * EPOCH_DURATION
