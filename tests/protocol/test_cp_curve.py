"""k changes: the program's ``math/cp_curve/tests.rs`` vectors, its ``controller/amm/tests.rs``
concentration and formulaic-k vectors, and properties of a k update (price kept, product kept).

Units: reserves and ``sqrt_k`` AMM_RESERVE_PRECISION (1e9), costs QUOTE_PRECISION (1e6).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    K_BPS_UPDATE_SCALE,
    MAX_CONCENTRATION_COEFFICIENT,
    MAX_K_BPS_DECREASE,
    MAX_K_BPS_INCREASE,
    MAX_SQRT_K,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.controller.amm import formulaic_update_k, update_concentration_coef
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.amm import (
    calculate_bid_ask_bounds,
    calculate_market_open_bids_asks,
    calculate_terminal_price_and_reserves,
    calculate_terminal_reserves,
    reserve_price,
)
from protocol.math.amm_spread import calculate_spread_reserves
from protocol.math.cp_curve import (
    _calculate_budgeted_k_scale,
    adjust_k_cost,
    adjust_k_cost_and_update,
    calculate_budgeted_k_scale,
    get_update_k_result,
    update_k,
)
from protocol.numeric import U128_MAX, sqrt
from protocol.records import CurveRecord
from protocol.state import OraclePriceData, PerpMarket
from protocol.types import PositionDirection
from tests.protocol.amm_defaults import default_test_amm, program_amm, program_market

A = AMM_RESERVE_PRECISION
ORACLE_50 = OraclePriceData(price=50 * PRICE_PRECISION, confidence=0, delay=2)


def _net_short_market(**changes: int) -> PerpMarket:
    """Users net short 12.3 units of a 500-unit curve pegged at $50."""
    fields = {
        "base_asset_reserve": 512295081967,
        "quote_asset_reserve": 488 * A,
        "sqrt_k": 500 * A,
        "peg_multiplier": 50_000_000,
        "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        "base_asset_amount_with_amm": -12295081967,
        **changes,
    }
    return program_market(program_amm(**fields))


def _with_terminal_state(market: PerpMarket) -> PerpMarket:
    quote, base = calculate_terminal_reserves(market.amm)
    market.amm.terminal_quote_asset_reserve = quote
    lo, hi = calculate_bid_ask_bounds(market.amm.concentration_coef, base)
    market.amm.min_base_asset_reserve, market.amm.max_base_asset_reserve = lo, hi
    return market


def test_k_update_halving_needs_an_unbounded_update() -> None:
    market = program_market(
        program_amm(sqrt_k=100 * A, base_asset_reserve=100 * A, quote_asset_reserve=100 * A)
    )
    with pytest.raises(ProtocolError) as err:
        get_update_k_result(market, A, True)
    assert err.value.code == ErrorCode.InvalidUpdateK
    result = get_update_k_result(market, A, False)
    # ratio 1e7 (+1 when shrinking): base 100e9 * 10000001 / 1e9 = 1000000100
    assert result.base_asset_reserve == 1_000_000_100
    assert result.quote_asset_reserve == A * A // 1_000_000_100


def test_k_increase_keeps_spread_reserves_on_their_sides() -> None:
    market = _net_short_market()
    amm = market.amm
    amm.max_base_asset_reserve = U128_MAX
    amm.min_base_asset_reserve = 0
    amm.base_spread, amm.long_spread, amm.short_spread = 10, 5, 5
    amm.ask_base_asset_reserve, amm.ask_quote_asset_reserve = calculate_spread_reserves(
        market, PositionDirection.Long
    )
    amm.bid_base_asset_reserve, amm.bid_quote_asset_reserve = calculate_spread_reserves(
        market, PositionDirection.Short
    )
    assert amm.bid_base_asset_reserve >= amm.base_asset_reserve
    assert amm.bid_quote_asset_reserve <= amm.quote_asset_reserve

    update_k(market, get_update_k_result(market, 501 * A, True))  # +0.2%
    assert amm.bid_base_asset_reserve >= amm.base_asset_reserve
    assert amm.bid_quote_asset_reserve <= amm.quote_asset_reserve
    assert amm.ask_base_asset_reserve <= amm.base_asset_reserve
    assert amm.ask_quote_asset_reserve >= amm.quote_asset_reserve


def test_budgeted_k_scale_with_rounding() -> None:
    bar, qar = 9942017440883516352, 10058320717561858267
    budget, peg, net = 32195176, 1103, 57982559000000000
    market = program_market(
        program_amm(
            base_asset_reserve=bar,
            quote_asset_reserve=qar,
            concentration_coef=MAX_CONCENTRATION_COEFFICIENT,
            sqrt_k=10_000_000_000_000_000_000,
            peg_multiplier=peg,
            base_asset_amount_with_amm=net,
        )
    )
    assert _calculate_budgeted_k_scale(bar, qar, budget, peg, net, 100_000_000, 1_000_000) == (
        1094419,
        1000000,
    )
    new_sqrt_k = market.amm.sqrt_k * 373175 // 340980
    cost = adjust_k_cost(market, get_update_k_result(market, new_sqrt_k, True))
    assert cost == 32195097
    assert cost <= budget
    assert market.amm.sqrt_k == 10_000_000_000_000_000_000  # measured on a copy


def test_k_increase_cost_and_terminal_state() -> None:
    market = _net_short_market()
    update_k_up = get_update_k_result(market, 501 * A, True)
    t_price, t_qar, t_bar = calculate_terminal_price_and_reserves(market.amm)
    # closing the net short returns the curve to balance: terminal price == peg
    assert (t_qar, t_bar, t_price) == (500 * A, 500 * A, market.amm.peg_multiplier)
    assert (
        update_k_up.sqrt_k,
        update_k_up.base_asset_reserve,
        update_k_up.quote_asset_reserve,
    ) == (
        501 * A,
        513319672130,
        488976000001,
    )

    cost = adjust_k_cost_and_update(market, update_k_up)
    assert market.amm.terminal_quote_asset_reserve == 500975411043
    assert cost == 29448  # raising k against users' net position costs the market
    t_price2, t_qar2, t_bar2 = calculate_terminal_price_and_reserves(market.amm)
    assert t_price2 < t_price
    assert (t_bar2, t_qar2) == (501024590163, 500975411043)


def test_budgeted_k_scale_vectors() -> None:
    upper = K_BPS_UPDATE_SCALE + MAX_K_BPS_INCREASE
    lower = K_BPS_UPDATE_SCALE - MAX_K_BPS_DECREASE
    x, y, q, d = A * 55414, A * 55530, 36365000, A * 66
    assert _calculate_budgeted_k_scale(x, y, QUOTE_PRECISION // 500, q, d, upper, lower) == (
        1000700,
        1000000,
    )
    num, den = _calculate_budgeted_k_scale(x, y, -(QUOTE_PRECISION // 50), q, d, upper, lower)
    assert num * 1000000 // den == 993050  # k lowered 0.695%
    num, den = _calculate_budgeted_k_scale(x, y, -(QUOTE_PRECISION // 25), q, d, upper, lower)
    assert num * 1000000 // den == 986196  # twice the budget, not twice the change

    big_x, big_y, big_d = 500000000049750000004950, 499999999950250000000000, 49750000004950
    assert _calculate_budgeted_k_scale(big_x, big_y, 114638, 40000000, big_d, upper, lower) == (
        1001000,
        1000000,
    )
    assert _calculate_budgeted_k_scale(big_x, big_y, -114638, 40000000, big_d, upper, lower) == (
        978000,  # the 2.2% floor
        1000000,
    )


def test_calculate_budgeted_k_scale_wrapper_and_bounds() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=A * 55414,
            quote_asset_reserve=A * 55530,
            sqrt_k=500 * A,
            peg_multiplier=36365000,
            base_asset_amount_with_amm=A * 66,
        )
    )
    assert calculate_budgeted_k_scale(market, QUOTE_PRECISION // 500, 1100000, 1000000 - 22000) == (
        1000700,
        1000000,
    )
    for upper, lower in ((999_999, 1_000_000), (1_000_000, 977_999), (1_000_000, 1_000_001)):
        with pytest.raises(ProtocolError) as err:
            calculate_budgeted_k_scale(market, 1, upper, lower)
        assert err.value.code == ErrorCode.InvalidUpdateK


def test_concentration_coef_vectors() -> None:
    market = _net_short_market(
        terminal_quote_asset_reserve=500 * A,
        total_fee_minus_distributions=1000 * QUOTE_PRECISION,
        curve_update_intensity=100,
    )
    amm = market.amm
    with pytest.raises(ProtocolError):
        update_concentration_coef(market, 0)

    update_concentration_coef(market, 1)
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (353556781219, 707100000000)
    orig_open_bids, orig_open_asks = calculate_market_open_bids_asks(amm)
    assert (orig_open_bids, orig_open_asks) == (158738300748, -194804918033)

    update_concentration_coef(market, 2)
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (414215889321, 603550000000)
    update_concentration_coef(market, 5)
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (461748734808, 541420000000)

    new_sqrt_k = amm.sqrt_k * 5
    result = get_update_k_result(market, new_sqrt_k, False)
    assert adjust_k_cost(market, result) == 11_575_563
    update_k(market, result)
    assert amm.sqrt_k == new_sqrt_k
    assert calculate_market_open_bids_asks(amm) == (207313827452, -198879016393)

    with pytest.raises(ProtocolError) as err:  # bounds too tight to close users' position
        update_concentration_coef(market, 100)
    assert err.value.code == ErrorCode.InvalidConcentrationCoef


def test_concentration_coef_on_a_balanced_market() -> None:
    market = program_market(default_test_amm())
    amm = market.amm
    update_concentration_coef(market, 20)
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (97971020172, 102071000000)
    with pytest.raises(ProtocolError):
        update_concentration_coef(market, AMM_RESERVE_PRECISION)
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (97971020172, 102071000000)

    update_concentration_coef(market, 140000)  # very little liquidity left
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (99999800000, 100000200000)
    new_sqrt_k = amm.sqrt_k * 140000
    result = get_update_k_result(market, new_sqrt_k, False)
    assert adjust_k_cost(market, result) == 0  # no net position: k is free to change
    update_k(market, result)
    assert calculate_market_open_bids_asks(amm) == (27999944001, -28000000000)


def test_formulaic_update_k_vectors() -> None:
    market = _with_terminal_state(
        _net_short_market(
            total_fee_minus_distributions=1000 * QUOTE_PRECISION, curve_update_intensity=100
        )
    )
    amm = market.amm
    now = 10000

    assert formulaic_update_k(market, ORACLE_50, 0, now) is None
    assert amm.sqrt_k == 500 * A
    assert amm.total_fee_minus_distributions == 1000 * QUOTE_PRECISION

    # the market paid $500 of funding it did not earn: k down 0.1%, slippage earns $0.014768
    record = formulaic_update_k(market, ORACLE_50, 500 * QUOTE_PRECISION, now)
    assert amm.sqrt_k == 499500000000
    assert amm.total_fee_minus_distributions == 1000014768
    assert isinstance(record, CurveRecord)
    assert (record.sqrt_k_before, record.sqrt_k_after) == (500 * A, 499500000000)
    assert record.adjustment_cost == -14768
    assert (record.record_id, market.next_curve_record_id) == (0, 1)

    # the market received $500: half goes into raising k, capped at +0.1%
    formulaic_update_k(market, ORACLE_50, -500 * QUOTE_PRECISION, now)
    assert amm.sqrt_k == 499999500000
    assert amm.total_fee_minus_distributions == 1000000013

    formulaic_update_k(market, ORACLE_50, -(QUOTE_PRECISION // 1000), now)
    assert amm.sqrt_k == 500015999983
    assert amm.total_fee_minus_distributions - 1000000013 == -486


def test_formulaic_update_k_iterates_to_a_fixed_point() -> None:
    market = _net_short_market(
        total_fee_minus_distributions=1000 * QUOTE_PRECISION, curve_update_intensity=100
    )
    prev_k, new_k, count = market.amm.sqrt_k, 0, 0
    while prev_k != new_k and count < 10000:
        prev_k = market.amm.sqrt_k
        formulaic_update_k(market, ORACLE_50, -QUOTE_PRECISION, 10000)
        new_k = market.amm.sqrt_k
        count += 1
    assert market.amm.base_asset_amount_with_amm == -12295081967
    assert market.amm.sqrt_k == 10958340658498292
    assert market.amm.total_fee_minus_distributions == 985_612_320


def test_formulaic_update_k_stops_below_max_sqrt_k() -> None:
    market = _net_short_market(
        total_fee_minus_distributions=1000 * QUOTE_PRECISION, curve_update_intensity=100
    )
    prev_k, new_k, count = market.amm.sqrt_k, 0, 0
    while prev_k != new_k and count < 100000 and prev_k < MAX_SQRT_K * 99 // 100:
        prev_k = market.amm.sqrt_k
        formulaic_update_k(market, ORACLE_50, -(QUOTE_PRECISION * 100000), 10000)
        new_k = market.amm.sqrt_k
        count += 1
    assert market.amm.sqrt_k == 991917456633894384209
    assert market.amm.total_fee_minus_distributions == 985625029


@settings(max_examples=200, deadline=None)
@given(
    sqrt_k_units=st.integers(min_value=10, max_value=10**7),
    skew_bps=st.integers(min_value=-3000, max_value=3000),
    peg=st.integers(min_value=PEG_PRECISION // 100, max_value=100_000 * PEG_PRECISION),
    ratio_ppm=st.integers(min_value=500_001, max_value=3_000_000),
)
def test_update_k_keeps_price_and_product(
    sqrt_k_units: int, skew_bps: int, peg: int, ratio_ppm: int
) -> None:
    sqrt_k = sqrt_k_units * A
    base = sqrt_k + sqrt_k * skew_bps // 10_000
    quote = sqrt_k * sqrt_k // base
    market = program_market(
        program_amm(
            base_asset_reserve=base,
            quote_asset_reserve=quote,
            sqrt_k=sqrt_k,
            peg_multiplier=peg,
            concentration_coef=MAX_CONCENTRATION_COEFFICIENT,
            base_asset_amount_with_amm=sqrt_k - base,
        )
    )
    price_before = reserve_price(market.amm)
    new_sqrt_k = sqrt_k * ratio_ppm // 1_000_000
    update_k(market, get_update_k_result(market, new_sqrt_k, True))
    amm = market.amm
    assert amm.sqrt_k == new_sqrt_k
    # the product stays k up to one unit of truncation per reserve
    assert sqrt(amm.base_asset_reserve * amm.quote_asset_reserve) <= new_sqrt_k
    assert amm.base_asset_reserve * (amm.quote_asset_reserve + 1) > new_sqrt_k**2
    # both reserves scaled by one ratio: the price moves by rounding only (relative 1e-6)
    assert abs(reserve_price(amm) - price_before) * 1_000_000 <= price_before + 1_000_000
