"""Spot balance math: utilization, the borrow-rate curve, interest accrual and balance values.

Vectors marked "program" reproduce the program's own unit tests (``math/spot_balance/tests.rs``
and ``controller/spot_balance/tests.rs``); the rest are worked by hand in the comments.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import (
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
    SPOT_RATE_PRECISION,
    SPOT_UTILIZATION_PRECISION,
)
from protocol.errors import MathError
from protocol.math.spot_balance import (
    InterestAccumulated,
    calculate_accumulated_interest,
    calculate_borrow_rate,
    calculate_deposit_rate,
    calculate_spot_market_utilization,
    calculate_utilization,
    get_balance_value,
    get_balance_value_and_token_amount,
    get_spot_balance,
    get_token_amount,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.spot_market import SpotMarket
from protocol.state.user import SpotPosition
from protocol.types import AssetTier, SpotBalanceType


def _market(**fields: Any) -> SpotMarket:
    """A market with the program's ``SpotMarket::default()`` rate fields (all zero)."""
    base: dict[str, Any] = {
        "market_index": 0,
        "name": "test",
        "oracle": "oracle",
        "decimals": 6,
        "asset_tier": AssetTier.Unlisted,
        "optimal_utilization": 0,
        "optimal_borrow_rate": 0,
        "max_borrow_rate": 0,
    }
    base.update(fields)
    return SpotMarket(**base)


# --- balances ---------------------------------------------------------------------------------


def test_bonk_five_decimals_round_trips() -> None:
    # program: math/spot_balance/tests.rs::bonk
    market = _market(decimals=5)
    one_bonk = 10**5
    balance = get_spot_balance(one_bonk, market, SpotBalanceType.Deposit, False)
    assert get_token_amount(balance, market, SpotBalanceType.Deposit) == one_bonk


@given(
    token_amount=st.integers(min_value=0, max_value=10**15),
    index=st.integers(min_value=SPOT_CUMULATIVE_INTEREST_PRECISION, max_value=50 * 10**10),
    decimals=st.integers(min_value=0, max_value=12),
)
def test_deposit_round_trip_never_credits_more_than_deposited(
    token_amount: int, index: int, decimals: int
) -> None:
    market = _market(decimals=decimals, cumulative_deposit_interest=index)
    balance = get_spot_balance(token_amount, market, SpotBalanceType.Deposit, False)
    assert get_token_amount(balance, market, SpotBalanceType.Deposit) <= token_amount


@given(
    token_amount=st.integers(min_value=0, max_value=10**15),
    index=st.integers(min_value=SPOT_CUMULATIVE_INTEREST_PRECISION, max_value=50 * 10**10),
    decimals=st.integers(min_value=0, max_value=12),
)
def test_borrow_round_trip_never_owes_less_than_borrowed(
    token_amount: int, index: int, decimals: int
) -> None:
    market = _market(decimals=decimals, cumulative_borrow_interest=index)
    balance = get_spot_balance(token_amount, market, SpotBalanceType.Borrow, True)
    if token_amount * 10 ** (19 - decimals) < index:
        # below one scaled unit the truncated balance is 0 and the program does not round 0 up
        assert balance == 0
    else:
        assert get_token_amount(balance, market, SpotBalanceType.Borrow) >= token_amount


def test_dust_borrow_below_one_scaled_unit_scales_to_zero() -> None:
    # decimals 10: one token unit is 1 * 10**9 / 10**10 = 0.1 scaled units -> 0, not rounded up
    market = _market(decimals=10)
    assert get_spot_balance(1, market, SpotBalanceType.Borrow, True) == 0
    # ten units make exactly one scaled unit, and rounding up adds another
    assert get_spot_balance(10, market, SpotBalanceType.Borrow, True) == 2


# --- utilization ------------------------------------------------------------------------------


def test_calculate_utilization_edges() -> None:
    assert calculate_utilization(0, 0) == 0  # empty market
    assert calculate_utilization(0, 5) == SPOT_UTILIZATION_PRECISION  # borrows, no deposits
    assert calculate_utilization(1_000_000, 500_000) == 500_000
    assert calculate_utilization(3, 1) == 333_333  # 1e6 / 3 truncates
    assert calculate_utilization(100, 150) == 1_500_000  # not capped at 100%


def test_calculate_spot_market_utilization_program_vectors() -> None:
    # program: test_check_withdraw_limits_{below,above}_optimal_utilization (get_utilization)
    below = _market(
        market_index=1,
        decimals=9,
        cumulative_deposit_interest=1020 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        cumulative_borrow_interest=1222 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        deposit_balance=200_000 * SPOT_BALANCE_PRECISION,
        borrow_balance=100_000 * SPOT_BALANCE_PRECISION,
    )
    assert calculate_spot_market_utilization(below) == 599_019
    below.borrow_balance = 160_000 * SPOT_BALANCE_PRECISION
    assert calculate_spot_market_utilization(below) == 958_431


# --- borrow rate ------------------------------------------------------------------------------


def _sol_rate_market() -> SpotMarket:
    # The program's test_multi_stage_borrow_rate_curve_sol decodes a mainnet account whose rate
    # fields are optimal_utilization=800_000, optimal_borrow_rate=20_000, max_borrow_rate=500_000
    # (bytes 668..680 of the 776-byte account), min_borrow_rate=0.
    return _market(
        decimals=9, optimal_utilization=800_000, optimal_borrow_rate=20_000, max_borrow_rate=500_000
    )


def test_borrow_rate_sol_curve_program_vectors() -> None:
    market = _sol_rate_market()
    # extra = 500_000 - 20_000 = 480_000; segment totals at weights 50/100/150/200/250/250 per
    # 1000: 24_000, 48_000, 72_000, 96_000, 120_000, 120_000.
    # 84.5%: 20_000 + 24_000 * 45_000 / 50_000 = 41_600
    assert calculate_borrow_rate(market, 845_000) == 41_600
    # 98.5%: 20_000 + 24_000 + 48_000 + 72_000 + 96_000 * 35_000 / 40_000 = 248_000
    assert calculate_borrow_rate(market, 985_000) == 248_000
    assert calculate_borrow_rate(market, 1_000_000) == 500_000


def test_borrow_rate_below_optimal_is_linear() -> None:
    market = _sol_rate_market()
    # slope = 20_000 * 1e6 / 800_000 = 25_000; 40% -> 400_000 * 25_000 / 1e6 = 10_000
    assert calculate_borrow_rate(market, 400_000) == 10_000
    assert calculate_borrow_rate(market, 800_000) == 20_000
    assert calculate_borrow_rate(market, 0) == 0


def test_borrow_rate_above_full_utilization_is_max() -> None:
    # the segments run out at 100%: every segment total is added
    assert calculate_borrow_rate(_sol_rate_market(), 1_500_000) == 500_000


def test_borrow_rate_respects_min_borrow_rate() -> None:
    market = _sol_rate_market()
    market.min_borrow_rate = 10  # 10 * 0.5% = 5% = 50_000
    assert calculate_borrow_rate(market, 0) == 50_000
    assert calculate_borrow_rate(market, 845_000) == 50_000  # 41_600 < floor
    assert calculate_borrow_rate(market, 985_000) == 248_000  # above the floor


def test_borrow_rate_optimal_above_first_breakpoint_fails_like_the_program() -> None:
    # optimal 90% > first breakpoint 85%: the program's u128 segment range underflows
    market = _market(
        optimal_utilization=900_000, optimal_borrow_rate=90_000, max_borrow_rate=1_000_000
    )
    # at optimal the linear side applies: slope 90_000 * 1e6 / 900_000 = 100_000 -> 90_000
    assert calculate_borrow_rate(market, 900_000) == 90_000
    with pytest.raises(MathError):
        calculate_borrow_rate(market, 950_000)


def test_multi_stage_borrow_rate_curve_program_shape() -> None:
    # program: test_multi_stage_borrow_rate_curve (70% optimal, 10% optimal rate, 500% max)
    market = _market(
        deposit_balance=1_000_000 * SPOT_BALANCE_PRECISION,
        optimal_utilization=SPOT_UTILIZATION_PRECISION * 70 // 100,
        optimal_borrow_rate=SPOT_RATE_PRECISION * 10 // 100,
        max_borrow_rate=SPOT_RATE_PRECISION * 500 // 100,
    )
    last_rate = 0
    last_rate_delta = 0
    rate_jumps = 0
    for i in range(201):
        utilization = i * 5_000
        rate = calculate_borrow_rate(market, utilization)
        delta = rate - last_rate
        if delta > last_rate_delta + 1 and last_rate_delta != 0:
            rate_jumps += 1
        assert delta >= max(last_rate_delta - 1, 0)  # the slope never falls (beyond rounding)
        assert rate >= last_rate
        last_rate_delta = delta
        last_rate = rate
        if utilization == market.optimal_utilization:
            assert abs(rate - market.optimal_borrow_rate) <= 1
        if utilization == 1_000_000:
            assert rate == market.max_borrow_rate
    assert rate_jumps == 5


@given(
    optimal_utilization=st.integers(min_value=1, max_value=850_000),
    optimal_borrow_rate=st.integers(min_value=0, max_value=2_000_000),
    extra_rate=st.integers(min_value=0, max_value=50_000_000),
    u1=st.integers(min_value=0, max_value=1_200_000),
    u2=st.integers(min_value=0, max_value=1_200_000),
)
def test_borrow_rate_is_monotonic_and_bounded(
    optimal_utilization: int, optimal_borrow_rate: int, extra_rate: int, u1: int, u2: int
) -> None:
    max_borrow_rate = optimal_borrow_rate + extra_rate
    market = _market(
        optimal_utilization=optimal_utilization,
        optimal_borrow_rate=optimal_borrow_rate,
        max_borrow_rate=max_borrow_rate,
    )
    lo, hi = sorted((u1, u2))
    r_lo = calculate_borrow_rate(market, lo)
    r_hi = calculate_borrow_rate(market, hi)
    assert r_lo <= r_hi <= max_borrow_rate


# --- deposit rate -----------------------------------------------------------------------------


def test_calculate_deposit_rate() -> None:
    market = _market()
    market.insurance_fund.total_factor = 100_000  # 10% of interest to the insurance fund
    # 10% borrow rate at 50% utilization: 100_000 * 900_000 * 500_000 / 1e6 / 1e6 = 45_000
    assert calculate_deposit_rate(market, 500_000, 100_000) == 45_000
    market.insurance_fund.total_factor = 0
    assert calculate_deposit_rate(market, 500_000, 100_000) == 50_000


# --- accumulated interest ---------------------------------------------------------------------


def _min_rate_market() -> SpotMarket:
    # program: check_spot_market_min_borrow_rate ($100M USDC deposited)
    return _market(
        deposit_balance=100_000_000 * SPOT_BALANCE_PRECISION,
        deposit_token_twap=QUOTE_PRECISION // 2,
        min_borrow_rate=0,
    )


def test_accumulated_interest_min_borrow_rate_program_vectors() -> None:
    now = 30
    market = _min_rate_market()
    assert calculate_accumulated_interest(market, now + 10_000) == InterestAccumulated(0, 0)

    market.min_borrow_rate = 1  # 0.5%, but no borrows: utilization 0 accrues nothing
    assert calculate_accumulated_interest(market, now + 10_000) == InterestAccumulated(0, 0)

    market.borrow_balance = market.deposit_balance // 100
    assert calculate_accumulated_interest(market, now + 10_000) == InterestAccumulated(15_903, 159)

    market.min_borrow_rate = 10  # 5%
    assert calculate_accumulated_interest(market, now + 10_000) == InterestAccumulated(
        159_025, 1_590
    )
    assert calculate_accumulated_interest(market, now + 1_000_000) == InterestAccumulated(
        15_855_372, 158_553
    )

    market.min_borrow_rate = 200  # 100%
    assert calculate_accumulated_interest(market, now + 1_000_000) == InterestAccumulated(
        317_107_433, 3_171_074
    )


def test_accumulated_interest_hand_vector() -> None:
    market = _min_rate_market()
    market.borrow_balance = market.deposit_balance // 100
    market.min_borrow_rate = 10
    # utilization 1%, rate floored at 50_000; 10_030 s since ts 0:
    # borrow: 1e10 * (50_000 * 10_030) / 31_536_000 / 1e6 + 1 = 159_024 + 1 = 159_025
    # deposit: rate * t * 1% = 5_015_000; 1e10 * 5_015_000 / 31_536_000 / 1e6 = 1_590
    assert calculate_accumulated_interest(market, 10_030) == InterestAccumulated(159_025, 1_590)


def test_accumulated_interest_none_when_not_after_last_ts() -> None:
    market = _min_rate_market()
    market.borrow_balance = market.deposit_balance // 100
    market.min_borrow_rate = 10
    market.last_interest_ts = 500
    assert calculate_accumulated_interest(market, 500) == InterestAccumulated(0, 0)
    assert calculate_accumulated_interest(market, 499) == InterestAccumulated(0, 0)


@given(
    util=st.integers(min_value=1_000, max_value=SPOT_UTILIZATION_PRECISION),
    elapsed=st.integers(min_value=1, max_value=10 * 31_536_000),
    deposit_index=st.integers(min_value=10**10, max_value=10**11),
    borrow_extra=st.integers(min_value=0, max_value=10**11),
)
def test_borrow_index_grows_faster_than_deposit_index(
    util: int, elapsed: int, deposit_index: int, borrow_extra: int
) -> None:
    market = _sol_rate_market()
    market.cumulative_deposit_interest = deposit_index
    market.cumulative_borrow_interest = deposit_index + borrow_extra
    market.deposit_balance = 10**15
    # pick a borrow balance whose utilization is about `util` (exact value irrelevant)
    market.borrow_balance = (
        10**15
        * util
        // SPOT_UTILIZATION_PRECISION
        * deposit_index
        // (deposit_index + borrow_extra)
    )
    accrued = calculate_accumulated_interest(market, elapsed)
    assert accrued.borrow_interest >= 1
    assert accrued.deposit_interest < accrued.borrow_interest


# --- balance value ----------------------------------------------------------------------------


def test_balance_value_and_token_amount() -> None:
    market = _market(decimals=9)
    price = OraclePriceData(price=20 * PRICE_PRECISION, confidence=0, delay=0)
    deposit = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    # 1 token (1e9 scaled at index 1.0) at $20
    assert get_balance_value_and_token_amount(deposit, market, price) == (20_000_000, 10**9)
    assert get_balance_value(deposit, market, price) == 20_000_000


def test_balance_value_of_a_borrow_rounds_its_token_amount_up() -> None:
    market = _market(decimals=9, cumulative_borrow_interest=10_000_000_001)
    borrow = SpotPosition(market_index=0, scaled_balance=3, balance_type=SpotBalanceType.Borrow)
    price = OraclePriceData(price=3 * PRICE_PRECISION // 2, confidence=0, delay=0)
    # tokens = ceil(3 * 10_000_000_001 / 1e10) = ceil(3.0000000003) = 4
    # value = 4 * 1_500_000 / 1e9 = 0.006 -> 0 (the unsigned value truncates)
    assert get_balance_value_and_token_amount(borrow, market, price) == (0, 4)
