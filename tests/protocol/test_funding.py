"""Funding: rates, the fee-pool cap, the on-the-hour schedule, and settling positions
(``protocol/math/funding.py`` and ``protocol/controller/funding.py``).

Vectors marked "program" reproduce ``math/funding/tests.rs``; the rest are worked by hand in the
comments. Units: rates FUNDING_RATE_PRECISION (1e9 = one quote unit per base unit), base 1e9,
payments QUOTE (1e6).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.controller.funding import (
    settle_funding_payment,
    settle_funding_payments,
    update_funding_rate,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import get_sanitize_clamp_denominator, reserve_price
from protocol.math.amm import update_oracle_price_twap as refresh_oracle_twap
from protocol.math.funding import (
    calculate_fee_pool,
    calculate_funding_payment,
    calculate_funding_payment_in_quote_precision,
    calculate_funding_rate_from_pnl_limit,
    calculate_funding_rate_long_short,
    get_max_price_divergence_for_funding_rate,
    on_the_hour_update,
)
from protocol.math.oracle import block_operation
from protocol.numeric import div_trunc
from protocol.records import FundingPaymentRecord, FundingRateRecord
from protocol.state.oracle import HistoricalOracleData, OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import OracleGuardRails, State, ValidityGuardRails
from protocol.state.user import PerpPosition, User
from protocol.types import ContractTier, MarketStatus

P = PRICE_PRECISION
R = AMM_RESERVE_PRECISION
Q = QUOTE_PRECISION
AUTHORITY = bytes(range(32))


def _amm(**fields: Any) -> AMM:
    """An AMM with the program's ``AMM::default()`` zeros wherever a test leaves a field unset."""
    base: dict[str, Any] = {
        "oracle": "oracle",
        "base_asset_reserve": 0,
        "quote_asset_reserve": 0,
        "sqrt_k": 0,
        "peg_multiplier": 0,
        "terminal_quote_asset_reserve": 0,
        "funding_period": 0,
        "order_step_size": 0,
        "order_tick_size": 0,
        "max_fill_reserve_fraction": 0,
        "max_slippage_ratio": 0,
        "last_oracle_valid": False,
    }
    base.update(fields)
    return AMM(**base)


def _market(amm: AMM, tier: ContractTier = ContractTier.HighlySpeculative) -> PerpMarket:
    # HighlySpeculative is the program's PerpMarket::default() tier
    return PerpMarket(market_index=0, name="m", amm=amm, contract_tier=tier)


def _test_funding_rate(mid_price_twap: int, oracle_price_twap: int, funding_period: int) -> int:
    """The program test module's own reference (3% clamp, no offset), as written there."""
    period_adjustment = div_trunc(24 * 3600, funding_period)
    price_spread = mid_price_twap - oracle_price_twap
    max_price_spread = div_trunc(oracle_price_twap, 33)
    clamped = max(-max_price_spread, min(price_spread, max_price_spread))
    return div_trunc(clamped * 1000, period_adjustment)


# --- program vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1])
def test_balanced_funding_program_vectors(count: int) -> None:
    # program: balanced_funding_test -- no net position, so no fee pool involvement
    px = 32_513_929 + count
    sqrt_k = 100 * R + 8793888383 + count
    market = _market(
        _amm(
            base_asset_reserve=sqrt_k,
            quote_asset_reserve=sqrt_k,
            sqrt_k=sqrt_k,
            peg_multiplier=px,
            base_asset_amount_long=12295081967,
            base_asset_amount_short=-12295081967,
            total_exchange_fee=(count * 1000000783) // 2888,
            total_fee_minus_distributions=count * 1000000783,
            last_mark_price_twap=px * 999 // 1000,
            historical_oracle_data=HistoricalOracleData(last_oracle_price_twap=px * 1001 // 1000),
            funding_period=3600,
        )
    )
    rate = _test_funding_rate(
        market.amm.last_mark_price_twap,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        3600,
    )
    assert rate == -2709458
    long_rate, short_rate, _ = calculate_funding_rate_long_short(market, rate)
    assert (long_rate, short_rate) == (-2709458, -2709458)

    px = 19_902_513_929 + count
    sqrt_k = 55 * R + 48383 + count
    market = _market(
        _amm(
            base_asset_reserve=sqrt_k,
            quote_asset_reserve=sqrt_k,
            sqrt_k=sqrt_k,
            peg_multiplier=px,
            base_asset_amount_long=7845926098328,
            base_asset_amount_short=-7845926098328,
            total_exchange_fee=(count * 1000000783) // 2888,
            total_fee_minus_distributions=count * 1000000783,
            last_mark_price_twap=px * 999 // 1000,
            historical_oracle_data=HistoricalOracleData(last_oracle_price_twap=px * 888 // 1000),
            funding_period=3600,
        )
    )
    rate = _test_funding_rate(
        market.amm.last_mark_price_twap,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        3600,
    )
    assert rate == 22_314_939_833
    long_rate, short_rate, _ = calculate_funding_rate_long_short(market, rate)
    assert (long_rate, short_rate) == (22_314_939_833, 22_314_939_833)


def _capped_market(with_amm: int, long: int, short: int) -> PerpMarket:
    return _market(
        _amm(
            base_asset_reserve=512295081967,
            quote_asset_reserve=488 * R,
            sqrt_k=500 * R,
            peg_multiplier=50 * P,
            base_asset_amount_with_amm=with_amm,
            base_asset_amount_long=long,
            base_asset_amount_short=short,
            total_exchange_fee=Q // 2,
            total_fee_minus_distributions=Q // 2,
            last_mark_price_twap=50 * P,
            historical_oracle_data=HistoricalOracleData(last_oracle_price_twap=49 * P),
            funding_period=3600,
        )
    )


def test_capped_sym_funding_program_vectors() -> None:
    # program: capped_sym_funding_test
    rate = _test_funding_rate(50 * P, 49 * P, 3600)
    assert rate == 41666666

    # more shorts than longs, positive funding: shorts receive more than longs pay, and a third
    # of the fee pool is too little, so the shorts' rate is capped
    market = _capped_market(-12295081967, 12295081967, -12295081967 * 2)
    long_rate, short_rate, _ = calculate_funding_rate_long_short(market, rate)
    assert long_rate == rate
    assert short_rate == 24222164
    # only a third of the 0.25 fee pool is spent: 0.5 - 0.083333
    assert market.amm.total_fee_minus_distributions == 416667

    # more longs than shorts, positive funding: the AMM earns
    market = _capped_market(12295081967, 12295081967 * 2, -12295081967)
    long_rate, short_rate, _ = calculate_funding_rate_long_short(market, rate)
    assert long_rate == short_rate == rate
    assert market.amm.total_fee_minus_distributions == 1012295


def _unsettled_market() -> PerpMarket:
    return _market(
        _amm(
            base_asset_reserve=512295081967,
            quote_asset_reserve=488 * R,
            sqrt_k=500 * R,
            peg_multiplier=50 * P,
            base_asset_amount_with_amm=-12295081967 - 500 * R,
            base_asset_amount_long=12295081967,
            base_asset_amount_short=-12295081967 * 2,
            total_exchange_fee=Q // 2,
            total_fee_minus_distributions=Q * 99999,
            last_mark_price_twap=50 * P,
            historical_oracle_data=HistoricalOracleData(last_oracle_price_twap=49 * P),
            funding_period=3600,
        )
    )


_PROGRAM_RAILS = OracleGuardRails(
    validity=ValidityGuardRails(
        slots_before_stale_for_amm=10,
        slots_before_stale_for_margin=120,
        confidence_interval_max_size=1000,
        too_volatile_ratio=5,
    )
)


def test_max_funding_rates_program_vectors() -> None:
    # program: max_funding_rates
    market = _unsettled_market()
    twap = market.amm.historical_oracle_data.last_oracle_price_twap
    assert get_max_price_divergence_for_funding_rate(market, twap) == 4900000  # 49e6 / 10
    market.contract_tier = ContractTier.B
    assert get_max_price_divergence_for_funding_rate(market, twap) == 1484848  # 49e6 / 33
    # at ts 0 with the last update at ts 0, the next is an hour away
    reading = OraclePriceData(51 * P, 0, 0)
    assert update_funding_rate(0, market, reading, 0, 0, _PROGRAM_RAILS, False) is None


def test_unsettled_funding_pnl_program_vectors() -> None:
    # program: unsettled_funding_pnl
    now, slot = 0, 0
    market = _unsettled_market()
    reading = OraclePriceData(51 * P, 0, 0)  # the program's get_pyth_price(51, 6)
    assert reserve_price(market.amm) == 47628800
    assert market.amm.net_unsettled_funding_pnl == 0
    assert on_the_hour_update(now, market.amm.last_funding_rate_ts, 3600) == 3600
    assert on_the_hour_update(now + 3600, market.amm.last_funding_rate_ts, 3600) == 0
    # the 5-min oracle TWAP is still 0, so the reserve price is "100%" away from it
    assert block_operation(market, reading, _PROGRAM_RAILS, reserve_price(market.amm), slot)

    now += 3600
    slot += 3600 * 2
    # what the program's _update_amm does for this market (no curve update intensity):
    # refresh the oracle TWAPs and stamp the AMM's update slot
    refresh_oracle_twap(
        market.amm, now, reading, reserve_price(market.amm), get_sanitize_clamp_denominator(market)
    )
    market.amm.last_update_slot = slot
    assert market.amm.last_mark_price_twap == 50000000
    assert market.amm.historical_oracle_data.last_oracle_price_twap == 51000000
    assert not block_operation(market, reading, _PROGRAM_RAILS, reserve_price(market.amm), slot)
    assert market.amm.total_fee_minus_distributions == 99999000000

    record = update_funding_rate(0, market, reading, now, slot, _PROGRAM_RAILS, False)
    assert record is not None
    amm = market.amm
    assert amm.last_mark_price_twap == 47629736
    assert amm.last_mark_price_twap > reserve_price(amm)
    assert amm.historical_oracle_data.last_oracle_price_twap == 51000000
    # oracle TWAP above mark: negative funding
    assert amm.cumulative_funding_rate_long == -140002666
    assert amm.cumulative_funding_rate_short == -140002666
    assert amm.last_funding_rate == -140002666
    assert amm.last_24h_avg_funding_rate == -5833444 + 1  # -140002666 / 24 (trunc) + 1
    assert amm.last_funding_rate_ts == now
    assert amm.net_revenue_since_last_funding == 0  # reset after the record
    assert amm.total_fee_minus_distributions == 100070722677  # 71.722677 earned
    assert amm.total_fee == 0
    assert amm.net_unsettled_funding_pnl == -71722677  # users owe it until they settle
    assert record.period_revenue == 71722677
    assert record.funding_rate == -140002666
    assert record.mark_price_twap == 47629736
    assert record.oracle_price_twap == 51000000
    assert record.record_id == 1
    assert market.next_funding_rate_record_id == 2


# --- the fee-pool cap, worked by hand ---------------------------------------------------------


def test_capped_long_funding_when_longs_receive_and_the_fee_pool_is_short() -> None:
    # The mirror image of the program's capped case: users net long 12295081967, rate
    # -41666666 (longs receive). Lower bound 0.5e6 / 2 = 250_000; fee pool 500_000 - 250_000 =
    # 250_000; the market may pay a third: limit -(250_000 / 3) = -83_333.
    # Net payment: 41666666 * 12295081967 = 512_295_073_761_612_022; / 1e6 / 1e3 =
    # 512_295_073 (1e9 quote units); / 1e3 = 512_295 to users, so the uncapped pnl is -512_295.
    # The shorts (-12295081967) pay the same 512_295. Limit for the longs' rate:
    # -83_333 - 512_295 = -595_628; biased toward zero -595_627;
    # -595_627e12 / 24_590_163_934 = -24_222_164.67 -> -24_222_164 (truncated, not floored)
    market = _capped_market(12295081967, 12295081967 * 2, -12295081967)
    long_rate, short_rate, uncapped = calculate_funding_rate_long_short(market, -41666666)
    assert (long_rate, short_rate, uncapped) == (-24_222_164, -41666666, -512_295)
    assert market.amm.total_fee_minus_distributions == 500_000 - 83_333
    assert market.amm.net_revenue_since_last_funding == -83_333


def test_empty_fee_pool_caps_the_receivers_at_what_the_payers_pay() -> None:
    # rate 1e6 (0.001 quote per base); longs 10 base pay, shorts 20 base receive; fee pool 0.
    # Users' net payment, base -10e9: 1e6 * 10e9 / 1e9 = 1e7, / 1e3 = 10_000 to users, so the
    # market's pnl is -10_000.
    # Limit 0 (no pool); the longs pay 10_000, so the limit becomes -10_000, biased -9_999:
    # -9_999e12 / -20e9 = 499_950 for the shorts. The market pays nothing: capped pnl 0.
    market = _market(
        _amm(
            base_asset_amount_with_amm=-10 * BASE_PRECISION,
            base_asset_amount_long=10 * BASE_PRECISION,
            base_asset_amount_short=-20 * BASE_PRECISION,
        )
    )
    assert calculate_fee_pool(market) == 0
    assert calculate_funding_rate_long_short(market, 1_000_000) == (1_000_000, 499_950, -10_000)
    assert market.amm.total_fee_minus_distributions == 0
    assert market.amm.net_revenue_since_last_funding == 0
    # the shorts then receive 20e9 * 499_950 / 1e9 / 1e3 = 9_999 <= the 10_000 the longs pay
    assert calculate_funding_payment_in_quote_precision(499_950, -20 * BASE_PRECISION) == 9_999


def test_a_sufficient_fee_pool_pays_the_full_rate() -> None:
    # pool 10e6 - 250_000 = 9_750_000; a third is 3_250_000, more than the 512_295 the market
    # owes the net-short users (see the capped case): both sides get the full rate
    market = _capped_market(-12295081967, 12295081967, -12295081967 * 2)
    market.amm.total_fee_minus_distributions = 10 * Q
    assert calculate_funding_rate_long_short(market, 41666666) == (41666666, 41666666, -512_295)
    assert market.amm.total_fee_minus_distributions == 10 * Q - 512_295
    assert market.amm.net_revenue_since_last_funding == -512_295


def test_fee_pool_with_more_withdrawn_than_the_bound_is_a_math_error() -> None:
    market = _capped_market(0, 0, 0)
    market.amm.total_fee_withdrawn = 250_001  # the bound is 250_000 (+ 0 liquidation fees)
    with pytest.raises(MathError):
        calculate_fee_pool(market)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (ContractTier.A, 1_484_848),  # 49e6 / 33
        (ContractTier.B, 1_484_848),
        (ContractTier.C, 2_450_000),  # 49e6 / 20
        (ContractTier.Speculative, 4_900_000),  # 49e6 / 10
        (ContractTier.Isolated, 4_900_000),
    ],
)
def test_max_price_divergence_for_funding_rate(tier: ContractTier, expected: int) -> None:
    market = _market(_amm(), tier)
    assert get_max_price_divergence_for_funding_rate(market, 49 * P) == expected
    assert get_max_price_divergence_for_funding_rate(market, -49 * P) == -expected  # truncated


def test_paying_below_the_fee_lower_bound_is_rejected() -> None:
    # lower bound 250_000; 200_000 was withdrawn, so the pool is measured from 50_000:
    # pool 290_000 - 50_000 = 240_000, a third is 80_000; 290_000 - 80_000 = 210_000 < 250_000
    market = _capped_market(-12295081967, 12295081967, -12295081967 * 2)
    market.amm.total_fee_withdrawn = 200_000
    market.amm.total_fee_minus_distributions = 290_000
    assert calculate_fee_pool(market) == 240_000
    with pytest.raises(ProtocolError) as err:
        calculate_funding_rate_long_short(market, 41666666)
    assert err.value.code is ErrorCode.InvalidFundingProfitability
    assert market.amm.total_fee_minus_distributions == 290_000


@pytest.mark.parametrize(
    ("pnl_limit", "base", "expected"),
    [
        (-10_000, -20 * BASE_PRECISION, 499_950),  # (-9_999e12) / -20e9
        (10_000, 20 * BASE_PRECISION, 500_000),  # positive limits are not biased
        (-1, 7, 0),  # biased to 0
        (-5, 3 * BASE_PRECISION, -1_333),  # -4e12 / 3e9 = -1_333.3 -> toward zero (floor: -1_334)
        (123, 0, 0),
    ],
)
def test_calculate_funding_rate_from_pnl_limit(pnl_limit: int, base: int, expected: int) -> None:
    assert calculate_funding_rate_from_pnl_limit(pnl_limit, base) == expected


# --- the schedule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "last", "period", "expected"),
    [
        # last update on the hour: the next is one period later
        (0, 0, 3600, 3600),
        (3599, 0, 3600, 1),
        (3600, 0, 3600, 0),
        (5000, 0, 3600, 0),  # overdue
        # last update 1000 s late (<= 3600 / 3): the next is still due on the next hour, 7200
        (4600, 4600, 3600, 2600),
        (7199, 4600, 3600, 1),
        (7200, 4600, 3600, 0),
        # exactly a third late (1200): still the next hour
        (4800, 4800, 3600, 2400),
        # 1300 s late (> 1200): skip to the hour after, 10800 (wait 2 * 3600 - 1300 = 5900)
        (4900, 4900, 3600, 5900),
        (7200, 4900, 3600, 3600),
        (10800, 4900, 3600, 0),
        # a one-second period has no alignment
        (5, 5, 1, 1),
        (6, 5, 1, 0),
        # Euclidean remainder: -3000 is 600 s past the hour -3600, so the next hour is 0
        # (Rust's truncating % would give -3000 and schedule 3600 instead)
        (-3000, -3000, 3600, 3000),
    ],
)
def test_on_the_hour_update(now: int, last: int, period: int, expected: int) -> None:
    assert on_the_hour_update(now, last, period) == expected


@given(last=st.integers(0, 10**10), period=st.integers(2, 10**5))
def test_next_update_lands_on_a_period_boundary(last: int, period: int) -> None:
    wait = on_the_hour_update(last, last, period)
    assert (last + wait) % period == 0
    # never sooner than two thirds of a period, never two full periods later
    assert period - period // 3 <= wait <= 2 * period - 1


# --- update_funding_rate, worked by hand --------------------------------------------------------


def _due_market() -> PerpMarket:
    """Reserve price 100e6; oracle TWAP 99e6, 5-min TWAP 100e6; mark TWAPs 100e6; all TWAPs
    stamped at ts 3600 and the AMM at slot 500; balanced 10 long / 10 short; tier A."""
    amm = AMM(
        oracle="o",
        base_asset_reserve=1000 * R,
        quote_asset_reserve=1000 * R,
        sqrt_k=1000 * R,
        peg_multiplier=100 * PEG_PRECISION,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=100 * P,
            last_oracle_price_twap=99 * P,
            last_oracle_price_twap_5min=100 * P,
            last_oracle_price_twap_ts=3600,
        ),
        last_mark_price_twap=100 * P,
        last_bid_price_twap=100 * P,
        last_ask_price_twap=100 * P,
        last_mark_price_twap_5min=100 * P,
        last_mark_price_twap_ts=3600,
        last_update_slot=500,
        base_asset_amount_long=10 * BASE_PRECISION,
        base_asset_amount_short=-10 * BASE_PRECISION,
        funding_period=3600,
    )
    return _market(amm, ContractTier.A)


_RAILS = OracleGuardRails()
_READING = OraclePriceData(100 * P, 0, 0)


def test_update_funding_rate_on_the_hour() -> None:
    market = _due_market()
    # At ts 3600 no time has passed since the TWAPs were stamped, so they keep their values:
    # oracle TWAP 99e6, mark TWAP 100e6 (trade at the reserve price, spreads equal).
    # spread 1e6 + offset 99e6 / 5000 = 19_800 -> 1_019_800 (clamp 99e6 / 33 = 3e6: no effect)
    # rate 1_019_800 * 1000 / 24 = 42_491_666.7 -> 42_491_666; balanced, so both sides pay it.
    # 24h average from 0 over 3600 s of 86400: 42_491_666 * 3600 / 86400 = 1_770_486.08
    #   -> 1_770_486, -1 (the old average, 0, is the smaller term) = 1_770_485
    record = update_funding_rate(0, market, _READING, 3600, 600, _RAILS, False)
    assert record == FundingRateRecord(
        record_id=1,
        market_index=0,
        funding_rate=42_491_666,
        funding_rate_long=42_491_666,
        funding_rate_short=42_491_666,
        cumulative_funding_rate_long=42_491_666,
        cumulative_funding_rate_short=42_491_666,
        oracle_price_twap=99 * P,
        mark_price_twap=100 * P,
        period_revenue=0,
        base_asset_amount_with_amm=0,
        base_asset_amount_with_unsettled_lp=0,
        ts=3600,
    )
    amm = market.amm
    assert amm.last_funding_rate == amm.last_funding_rate_long == 42_491_666
    assert amm.last_funding_oracle_twap == 99 * P
    assert amm.last_24h_avg_funding_rate == 1_770_485
    assert amm.last_funding_rate_ts == 3600
    assert market.next_funding_rate_record_id == 2

    # the same hour again: not due for another 3600 s
    assert update_funding_rate(0, market, _READING, 3600, 600, _RAILS, False) is None
    assert update_funding_rate(0, market, _READING, 7199, 600, _RAILS, False) is None


@pytest.mark.parametrize(
    ("now", "slot", "paused", "status", "reading"),
    [
        (3599, 600, False, MarketStatus.Active, _READING),  # one second early
        (3600, 600, True, MarketStatus.Active, _READING),  # funding paused by the exchange
        (3600, 600, False, MarketStatus.FundingPaused, _READING),  # paused on the market
        (3600, 500 + 3601, False, MarketStatus.Active, _READING),  # AMM not updated recently
        (3600, 600, False, MarketStatus.Active, OraclePriceData(100 * P, 3 * P, 0)),  # uncertain
    ],
)
def test_update_funding_rate_declines_without_touching_the_market(
    now: int, slot: int, paused: bool, status: MarketStatus, reading: OraclePriceData
) -> None:
    market = _due_market()
    market.status = status
    before = market.clone()
    assert update_funding_rate(0, market, reading, now, slot, _RAILS, paused) is None
    assert market == before


def test_update_funding_rate_clamps_by_contract_tier() -> None:
    # the oracle TWAP 90e6 against the mark 100e6: spread 10e6 + 90e6 / 5000 = 10_018_000.
    # Tier A clamps to 90e6 / 33 = 2_727_272: rate 2_727_272_000 / 24 = 113_636_333.
    # Tier Speculative clamps to 90e6 / 10 = 9e6: rate 9e9 / 24 = 375_000_000.
    for tier, expected in ((ContractTier.A, 113_636_333), (ContractTier.Speculative, 375_000_000)):
        market = _due_market()
        market.contract_tier = tier
        market.amm.historical_oracle_data.last_oracle_price_twap = 90 * P
        record = update_funding_rate(0, market, _READING, 3600, 600, _RAILS, False)
        assert record is not None
        assert record.funding_rate == expected


@pytest.mark.parametrize(
    ("long_spread", "short_spread", "mark_twap", "rate"),
    [
        # Wider long spread: trades executed at the ask, 100e6 * 1.001 = 100_100_000, a buy;
        # the estimated bid is the oracle (no base spread to discount): pair 100e6 / 100.1e6.
        # All TWAPs were stamped at ts 0 and it is now 3600 (a whole period):
        #   oracle TWAP = the new (normalised) price 100e6;
        #   bid (100e6 * 3600 + 100e6 * 1) / 3601 = 100e6;
        #   ask (100.1e6 * 3600 + 100e6) / 3601 = 100_099_972.2 -> 100_099_972 (no bias at weight 1)
        #   mark (100e6 + 100_099_972) / 2 = 100_049_986
        # rate (49_986 + 100e6 / 5000) * 1000 / 24 = 69_986_000 / 24 = 2_916_083.3 -> 2_916_083
        (1_000, 0, 100_049_986, 2_916_083),
        # Wider short spread: at the bid 99_900_000, a sell; pair 99.9e6 / 100e6.
        #   bid (99.9e6 * 3600 + 100e6) / 3601 = 99_900_027.8 -> 99_900_027; ask 100e6
        #   mark 199_900_027 / 2 = 99_950_013
        # rate (-49_987 + 20_000) * 1000 / 24 = -1_249_458.3 -> -1_249_458 (toward zero)
        (0, 1_000, 99_950_013, -1_249_458),
    ],
)
def test_update_funding_rate_uses_the_execution_premium_side(
    long_spread: int, short_spread: int, mark_twap: int, rate: int
) -> None:
    market = _due_market()
    amm = market.amm
    amm.long_spread = long_spread
    amm.short_spread = short_spread
    amm.historical_oracle_data.last_oracle_price_twap = 100 * P
    amm.historical_oracle_data.last_oracle_price_twap_ts = 0
    amm.last_mark_price_twap_ts = 0
    record = update_funding_rate(0, market, _READING, 3600, 600, _RAILS, False)
    assert record is not None
    assert record.oracle_price_twap == 100 * P
    assert record.mark_price_twap == mark_twap
    assert record.funding_rate == rate


# --- settling positions --------------------------------------------------------------------------


def _user(*positions: PerpPosition) -> User:
    return User(authority=AUTHORITY, sub_account_id=3, perp_positions=list(positions))


@pytest.mark.parametrize(
    ("base", "cumulative", "expected"),
    [
        # long 10 base, rate up 1_234_567: 1_234_567 * 10e9 / 1e6 / 1e3 = 12_345_670, paid;
        # / 1e3 = -12_345.67 -> -12_345 (Rust truncation; a floor would give -12_346)
        (10 * BASE_PRECISION, 1_234_567, -12_345),
        # long, rate down: receives 12_345 (the truncation is symmetric)
        (10 * BASE_PRECISION, -1_234_567, 12_345),
        # short 3 base, rate down: 1_234_567 * 3e9 / 1e9 = 3_703_701, paid; -3_703.701 -> -3_703
        (-3 * BASE_PRECISION, -1_234_567, -3_703),
        # short, rate up: receives 3_703
        (-3 * BASE_PRECISION, 1_234_567, 3_703),
        # a dust position: 999 * 1 / 1e9 -> 0
        (1, 999, 0),
    ],
)
def test_calculate_funding_payment(base: int, cumulative: int, expected: int) -> None:
    position = PerpPosition(market_index=0, base_asset_amount=base)
    assert calculate_funding_payment(cumulative, position) == expected


def _settle_market() -> PerpMarket:
    market = _market(_amm(funding_period=3600))
    market.amm.cumulative_funding_rate_long = 1_234_567
    market.amm.cumulative_funding_rate_short = -1_234_567
    return market


def test_settle_funding_payment_long_pays() -> None:
    market = _settle_market()
    position = PerpPosition(
        market_index=0,
        base_asset_amount=10 * BASE_PRECISION,
        quote_asset_amount=-1_000 * Q,
        quote_break_even_amount=-1_001 * Q,
        last_cumulative_funding_rate=234_567,
    )
    user = _user(position)
    # delta 1_000_000: 1e6 * 10e9 / 1e9 = 1e7, paid; / 1e3 = -10_000 exactly
    record = settle_funding_payment(user, user.key, market, 7200)
    assert record == FundingPaymentRecord(
        authority=AUTHORITY,
        sub_account_id=3,
        market_index=0,
        funding_payment=-10_000,
        base_asset_amount=10 * BASE_PRECISION,
        user_last_cumulative_funding=234_567,  # the rate before this settlement
        amm_cumulative_funding_long=1_234_567,
        amm_cumulative_funding_short=-1_234_567,
        ts=7200,
    )
    assert position.last_cumulative_funding_rate == 1_234_567
    assert position.quote_asset_amount == -1_000 * Q - 10_000
    assert position.quote_break_even_amount == -1_001 * Q - 10_000
    assert user.cumulative_perp_funding == -10_000
    assert market.amm.quote_asset_amount == -10_000
    assert market.amm.quote_break_even_amount_long == -10_000
    assert market.amm.quote_break_even_amount_short == 0
    assert market.amm.net_unsettled_funding_pnl == 10_000
    # settled: nothing more to do
    assert settle_funding_payment(user, user.key, market, 7201) is None


def test_settle_funding_payment_short_pays_with_truncation() -> None:
    market = _settle_market()
    position = PerpPosition(market_index=0, base_asset_amount=-3 * BASE_PRECISION)
    user = _user(position)
    # short side rate -1_234_567 since 0: 3_703_701 paid -> -3_703.701 -> -3_703
    record = settle_funding_payment(user, user.key, market, 7200)
    assert record is not None
    assert record.funding_payment == -3_703
    assert position.quote_asset_amount == -3_703
    assert position.quote_break_even_amount == -3_703
    assert position.last_cumulative_funding_rate == -1_234_567
    assert market.amm.quote_break_even_amount_short == -3_703
    assert market.amm.net_unsettled_funding_pnl == 3_703
    assert user.cumulative_perp_funding == -3_703


def test_settle_funding_payment_dust_still_advances_the_rate() -> None:
    # the rates differ, so the program settles (and records) even a zero payment
    market = _settle_market()
    position = PerpPosition(market_index=0, base_asset_amount=1)
    user = _user(position)
    record = settle_funding_payment(user, user.key, market, 1)
    assert record is not None
    assert record.funding_payment == 0
    assert position.last_cumulative_funding_rate == 1_234_567
    assert position.quote_asset_amount == 0


def test_settle_funding_payment_without_an_open_position() -> None:
    market = _settle_market()
    assert settle_funding_payment(_user(), (AUTHORITY, 3), market, 1) is None
    flat = _user(PerpPosition(market_index=0, quote_asset_amount=5 * Q))
    before = market.clone()
    assert settle_funding_payment(flat, flat.key, market, 1) is None
    assert market == before


def test_settle_funding_payments_over_all_positions() -> None:
    m0 = _settle_market()
    m1 = _settle_market()
    m1.market_index = 1
    m1.amm.cumulative_funding_rate_long = 2_000_000
    program = ProgramState(state=State(), perp_markets={0: m0, 1: m1})
    accounts = Accounts(program, Clock(slot=10, unix_timestamp=7200))
    user = _user(
        PerpPosition(market_index=0, base_asset_amount=-3 * BASE_PRECISION),
        PerpPosition(market_index=1, base_asset_amount=2 * BASE_PRECISION),
        PerpPosition(market_index=2, quote_asset_amount=7),  # no base: skipped, market not read
    )
    records = settle_funding_payments(user, user.key, accounts, 7200)
    # market 0, short 3: -3_703 (as above); market 1, long 2: 2e6 * 2e9 / 1e9 = 4e6 -> -4_000
    assert [(r.market_index, r.funding_payment) for r in records] == [(0, -3_703), (1, -4_000)]
    assert user.cumulative_perp_funding == -7_703
    assert accounts.perp_market(0).amm.net_unsettled_funding_pnl == 3_703
    assert accounts.perp_market(1).amm.net_unsettled_funding_pnl == 4_000
    assert program.perp_markets[0].amm.net_unsettled_funding_pnl == 0  # not committed
    assert settle_funding_payments(user, user.key, accounts, 7201) == []


@given(
    base=st.integers(-(10**15), 10**15),
    last=st.integers(-(10**12), 10**12),
    cumulative=st.integers(-(10**12), 10**12),
)
def test_funding_payment_matches_a_naive_truncating_reference(
    base: int, last: int, cumulative: int
) -> None:
    position = PerpPosition(
        market_index=0, base_asset_amount=base, last_cumulative_funding_rate=last
    )
    delta = cumulative - last
    # what the holder receives: -(delta * base) scaled by 1e9 * 1e3, rounded toward zero
    # at each of the two steps (1e9, then 1e3)
    magnitude = abs(delta) * abs(base) // 10**9 // 10**3
    expected = -magnitude if (delta > 0) == (base > 0) else magnitude
    if delta == 0 or base == 0:
        expected = 0
    assert calculate_funding_payment(cumulative, position) == expected
