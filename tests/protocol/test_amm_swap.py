"""Swapping against the AMM's curve: exact vectors worked by hand, and properties: a round trip
(buy then sell the same base) never makes the AMM lose quote, and every swap keeps
``base * quote`` within one base-reserve of ``k`` (the output reserve is truncated).

Units: reserves AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION (1e6), prices PRICE_PRECISION,
quote amounts QUOTE_PRECISION (1e6).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    ONE_HOUR,
    PEG_PRECISION,
    PRICE_PRECISION,
)
from protocol.controller.amm import (
    calculate_base_swap_output_with_spread,
    swap_base_asset,
    update_spreads,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.amm import (
    ask_price,
    bid_price,
    calculate_amm_available_liquidity,
    calculate_base_asset_value,
    calculate_base_asset_value_and_pnl,
    calculate_bid_ask_bounds,
    calculate_market_open_bids_asks,
    calculate_quote_asset_amount_swapped,
    calculate_swap_output,
    calculate_terminal_price_and_reserves,
    can_lower_k,
    get_lower_bound_sqrt_k,
    reserve_price,
    update_amm_long_short_intensity,
)
from protocol.math.orders import calculate_base_asset_amount_to_trade_to_price
from protocol.math.quote_asset import asset_to_reserve_amount, reserve_to_asset_amount
from protocol.state import PerpMarket
from protocol.types import PositionDirection, SwapDirection
from tests.protocol.amm_defaults import default_test_amm, program_amm, program_market

A = AMM_RESERVE_PRECISION
K = (100 * A) ** 2  # the 100-unit test curve's invariant, 1e22


def _spread_market(base_spread: int = 1000) -> PerpMarket:
    """A balanced 100-unit curve at $1 with 5 bps each side (intensity 0: half the base)."""
    market = program_market(default_test_amm(base_spread=base_spread))
    update_spreads(market, reserve_price(market.amm), None)
    return market


def test_reserve_and_asset_amounts() -> None:
    # 1e9 reserve units at a $19.4 peg: 1e9 * 19.4e6 / 1e9 = 19.4e6 quote
    assert reserve_to_asset_amount(A, 19_400_000) == 19_400_000
    assert reserve_to_asset_amount(999, PEG_PRECISION) == 0  # truncated
    assert asset_to_reserve_amount(19_400_000, 19_400_000) == A
    # $1 at a $3 peg: 1e6 * 1e9 / 3e6 = 333333333.3 -> 333333333 reserve units
    assert asset_to_reserve_amount(1_000_000, 3 * PEG_PRECISION) == 333_333_333


def test_calculate_swap_output() -> None:
    # adding 10 base: 1e22 / 110e9 = 90909090909.09 -> 90909090909 quote left
    assert calculate_swap_output(10 * A, 100 * A, SwapDirection.Add, 100 * A) == (
        90909090909,
        110 * A,
    )
    # removing 10 base: 1e22 / 90e9 = 111111111111.1 -> 111111111111
    assert calculate_swap_output(10 * A, 100 * A, SwapDirection.Remove, 100 * A) == (
        111111111111,
        90 * A,
    )
    with pytest.raises(ProtocolError) as err:
        calculate_swap_output(100 * A + 1, 100 * A, SwapDirection.Remove, 100 * A)
    assert err.value.code == ErrorCode.TradeSizeTooLarge


def test_quote_asset_amount_swapped_rounds_for_the_amm() -> None:
    # a seller (Add) receives the reserve drop, truncated: 909090909091 units * 1e6 / 1e9
    assert (
        calculate_quote_asset_amount_swapped(
            1000 * A, 90909090909, SwapDirection.Add, PEG_PRECISION
        )
        == 909_090_909
    )
    # a buyer (Remove) pays one more reserve unit and one more quote unit:
    # (111111111111 - 100e9 + 1) * 1e6 / 1e9 = 11111111.112 -> 11111111, + 1
    assert (
        calculate_quote_asset_amount_swapped(
            100 * A, 111111111111, SwapDirection.Remove, PEG_PRECISION
        )
        == 11111112
    )
    # an exact reserve move still costs the buyer the extra unit
    assert calculate_quote_asset_amount_swapped(0, A, SwapDirection.Remove, PEG_PRECISION) == (
        1_000_001
    )


def test_swap_base_asset_buy_prices_on_the_ask_reserves() -> None:
    market = _spread_market()
    amm = market.amm
    # 5 bps: 1e6 / 250 = 4000, quote reserve 100e9 +- 100e9 / 4000 = +-25e6
    assert (amm.ask_quote_asset_reserve, amm.ask_base_asset_reserve) == (100025000000, 99975006248)
    assert (ask_price(amm, PRICE_PRECISION), bid_price(amm, PRICE_PRECISION)) == (
        1_000_500,
        999_500,
    )

    quote, surplus = swap_base_asset(market, A, SwapDirection.Remove)
    # ask curve: base 99975006248 - 1e9 = 98975006248, quote 1e22 // that = 101035608676;
    # (101035608676 - 100025000000 + 1) * 1e6 // 1e9 + 1 = 1010609
    assert quote == 1010609
    # the curve itself: base 99e9, quote 1e22 // 99e9 = 101010101010, i.e. 1010101 (+1) without
    # the spread; the AMM keeps 1010609 - 1010102 = 507
    assert surplus == 507
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (99 * A, 101010101010)


def test_swap_base_asset_sell_prices_on_the_bid_reserves() -> None:
    market = _spread_market()
    amm = market.amm
    assert (amm.bid_quote_asset_reserve, amm.bid_base_asset_reserve) == (99975000000, 100025006251)
    quote, surplus = swap_base_asset(market, A, SwapDirection.Add)
    # bid curve: base 101025006251, quote 1e22 // that = 98985393528;
    # (99975000000 - 98985393528) * 1e6 // 1e9 = 989606
    assert quote == 989606
    # spreadless: quote 1e22 // 101e9 = 99009900990, (100e9 - 99009900990) -> 990099
    assert surplus == 990099 - 989606 == 493
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (101 * A, 99009900990)


def test_calculate_base_swap_output_with_spread_leaves_the_amm_alone() -> None:
    market = _spread_market()
    before = market.amm.clone()
    result = calculate_base_swap_output_with_spread(market.amm, A, SwapDirection.Remove)
    assert result == (99 * A, 101010101010, 1010609, 507)
    assert market.amm == before


def test_terminal_price_and_reserves() -> None:
    # users net long 10 units of the 100-unit curve: base 90e9, quote 1e22 // 90e9
    amm = default_test_amm(
        base_asset_reserve=90 * A,
        quote_asset_reserve=K // (90 * A),
        base_asset_amount_with_amm=10 * A,
    )
    # closing adds the 10 back: base 100e9, quote 1e22 // 100e9 = 100e9, price = peg = $1
    assert calculate_terminal_price_and_reserves(amm) == (PRICE_PRECISION, 100 * A, 100 * A)


def test_bid_ask_bounds_and_open_liquidity() -> None:
    # sqrt(2) concentration: 500e9 * 1414200 / 1e6 and 500e9 * 1e6 / 1414200 (truncated)
    assert calculate_bid_ask_bounds(MAX_CONCENTRATION_COEFFICIENT, 500 * A) == (
        353556781219,
        707100000000,
    )
    with pytest.raises(ProtocolError) as err:
        calculate_bid_ask_bounds(1_000_000, 500 * A)
    assert err.value.code == ErrorCode.InvalidConcentrationCoef

    amm = default_test_amm(min_base_asset_reserve=70 * A, max_base_asset_reserve=140 * A)
    assert calculate_market_open_bids_asks(amm) == (30 * A, -40 * A)
    amm.base_asset_reserve = 150 * A
    assert calculate_market_open_bids_asks(amm) == (80 * A, 0)


def test_amm_available_liquidity() -> None:
    amm = default_test_amm(
        min_base_asset_reserve=90 * A,
        max_base_asset_reserve=130 * A,
        max_fill_reserve_fraction=5,
        order_step_size=A // 100,
    )
    # a buy: min(100e9 / 5, (100e9 - 90e9) / 2) = 5e9; a sell: min(20e9, 30e9 / 2) = 15e9
    assert calculate_amm_available_liquidity(amm, PositionDirection.Long) == 5 * A
    assert calculate_amm_available_liquidity(amm, PositionDirection.Short) == 15 * A
    amm.max_base_asset_reserve = 130 * A + 12_345_678
    # (30012345678) / 2 = 15006172839, down to the 0.01 step: 15000000000
    assert calculate_amm_available_liquidity(amm, PositionDirection.Short) == 15 * A


def test_k_lowering_guards() -> None:
    amm = default_test_amm(
        min_base_asset_reserve=90 * A, max_base_asset_reserve=110 * A, min_order_size=A // 100
    )
    assert can_lower_k(amm)
    assert get_lower_bound_sqrt_k(amm) == A // 100
    amm.base_asset_amount_with_amm = -10 * A  # as large as the open bids: cannot close safely
    assert not can_lower_k(amm)
    assert get_lower_bound_sqrt_k(amm) == 10 * A


def test_long_short_intensity() -> None:
    amm = default_test_amm(long_intensity_volume=3_600_000, last_trade_ts=1000)
    # 900 s later a $2 buy: long 3.6e6 * (3600 - 900) / 3600 + 2e6 = 4.7e6; short stays 0
    update_amm_long_short_intensity(amm, 1900, 2_000_000, PositionDirection.Long)
    assert (amm.long_intensity_volume, amm.short_intensity_volume) == (4_700_000, 0)
    update_amm_long_short_intensity(amm, 1900 + ONE_HOUR, 1, PositionDirection.Short)
    assert (amm.long_intensity_volume, amm.short_intensity_volume) == (0, 1)


def test_base_asset_value_and_pnl() -> None:
    amm = default_test_amm()
    # a 10-unit long sold back: quote 1e22 // 110e9 = 90909090909, worth 9090909091 units
    # -> 9.090909 quote; entered for 9.5: pnl -0.409091
    assert calculate_base_asset_value(10 * A, amm) == 9_090_909
    assert calculate_base_asset_value_and_pnl(10 * A, 9_500_000, amm) == (9_090_909, -409_091)
    # a 10-unit short bought back: quote 111111111111, (11111111111 + 1) -> 11111111 + 1
    assert calculate_base_asset_value_and_pnl(-10 * A, 10_000_000, amm) == (
        11_111_112,
        -1_111_112,
    )
    assert calculate_base_asset_value_and_pnl(0, 5, amm) == (0, 0)


def test_quotes_shift_with_the_reference_price_offset() -> None:
    amm = default_test_amm(long_spread=500, short_spread=500, reference_price_offset=200)
    # ask 1e6 * (1e6 + 500 + 200) / 1e6, bid 1e6 * (1e6 - 500 + 200) / 1e6
    assert (bid_price(amm, PRICE_PRECISION), ask_price(amm, PRICE_PRECISION)) == (
        999_700,
        1_000_700,
    )


def test_base_amount_to_trade_to_price_reaches_the_price() -> None:
    market = _spread_market(base_spread=0)
    amm = market.amm
    # to $1.21 on the 100-unit curve: base reserve sqrt(1e22 / 1.21) = 90909090909
    amount, direction = calculate_base_asset_amount_to_trade_to_price(
        amm, 1_210_000, PositionDirection.Long
    )
    assert (amount, direction) == (100 * A - 90909090909, PositionDirection.Long)
    swap_base_asset(market, amount, SwapDirection.Remove)
    # quote 1e22 // 90909090909 = 110000000000; 110000000000 * 1e6 // 90909090909 = 1210000
    assert reserve_price(amm) == 1_210_000


_reserves = st.integers(min_value=10 * A, max_value=10**6 * A)


@settings(max_examples=300, deadline=None)
@given(
    sqrt_k=_reserves,
    skew_ppm=st.integers(min_value=-200_000, max_value=200_000),
    peg=st.integers(min_value=1_000, max_value=100_000 * PEG_PRECISION),
    size_ppm=st.integers(min_value=1, max_value=100_000),
    base_spread=st.integers(min_value=0, max_value=50_000),
)
def test_round_trip_never_loses_the_amm_quote(
    sqrt_k: int, skew_ppm: int, peg: int, size_ppm: int, base_spread: int
) -> None:
    base = sqrt_k + sqrt_k * skew_ppm // 1_000_000
    market = program_market(
        program_amm(
            base_asset_reserve=base,
            quote_asset_reserve=sqrt_k * sqrt_k // base,
            sqrt_k=sqrt_k,
            peg_multiplier=peg,
            base_spread=base_spread,
            max_spread=100_000,
        )
    )
    update_spreads(market, reserve_price(market.amm), None)
    size = max(base * size_ppm // 1_000_000, 1)

    paid, _ = swap_base_asset(market, size, SwapDirection.Remove)
    update_spreads(market, reserve_price(market.amm), None)
    received, _ = swap_base_asset(market, size, SwapDirection.Add)
    assert paid >= received
    # and the other way round: sell first, buy back
    update_spreads(market, reserve_price(market.amm), None)
    received, _ = swap_base_asset(market, size, SwapDirection.Add)
    update_spreads(market, reserve_price(market.amm), None)
    paid, _ = swap_base_asset(market, size, SwapDirection.Remove)
    assert paid >= received


@settings(max_examples=300, deadline=None)
@given(
    sqrt_k=_reserves,
    swaps=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=50_000)), min_size=1, max_size=8
    ),
)
def test_swaps_keep_k_within_rounding(sqrt_k: int, swaps: list[tuple[bool, int]]) -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=sqrt_k,
            quote_asset_reserve=sqrt_k,
            sqrt_k=sqrt_k,
            peg_multiplier=PEG_PRECISION,
        )
    )
    update_spreads(market, reserve_price(market.amm), None)
    amm = market.amm
    k = sqrt_k * sqrt_k
    for buy, size_ppm in swaps:
        size = max(amm.base_asset_reserve * size_ppm // 1_000_000, 1)
        swap_base_asset(market, size, SwapDirection.Remove if buy else SwapDirection.Add)
        # quote = k // base: the product sits in (k - base, k]
        assert k - amm.base_asset_reserve < amm.base_asset_reserve * amm.quote_asset_reserve <= k
        update_spreads(market, reserve_price(amm), None)
