"""Spot balance updates, interest accrual and TWAPs (``controller/spot_balance``, ``math/stats``).

Vectors marked "program" reproduce ``controller/spot_balance/tests.rs`` (check_fee_collection,
check_fee_collection_larger_nums, test_daily_withdraw_limits, check_usdc_spot_market_twap);
the rest are worked by hand in the comments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_RATE_PRECISION,
    SPOT_UTILIZATION_PRECISION,
)
from protocol.controller.spot_balance import (
    transfer_revenue_pool_to_spot_balance,
    transfer_spot_balance_to_revenue_pool,
    transfer_spot_balances,
    update_revenue_pool_balances,
    update_spot_balances,
    update_spot_market_and_check_validity,
    update_spot_market_cumulative_interest,
    update_spot_market_twap_stats,
)
from protocol.error_codes import ErrorCode
from protocol.errors import CastingError, ProtocolError
from protocol.math.amm import sanitize_new_price
from protocol.math.oracle import DriftAction
from protocol.math.spot_balance import (
    calculate_borrow_rate,
    calculate_spot_market_utilization,
    get_token_amount,
)
from protocol.math.stats import (
    calculate_new_twap,
    calculate_rolling_sum,
    calculate_weighted_average,
)
from protocol.records import SpotInterestRecord
from protocol.state.oracle import HistoricalOracleData, OraclePriceData
from protocol.state.spot_market import PoolBalance, SpotMarket
from protocol.state.state import ValidityGuardRails
from protocol.state.user import SpotPosition
from protocol.types import AssetTier, SpotBalanceType

DEPOSIT = SpotBalanceType.Deposit
BORROW = SpotBalanceType.Borrow


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


def _tokens(market: SpotMarket) -> tuple[int, int]:
    return (
        get_token_amount(market.deposit_balance, market, DEPOSIT),
        get_token_amount(market.borrow_balance, market, BORROW),
    )


# --- math/stats -------------------------------------------------------------------------------


def test_weighted_average_program_vectors() -> None:
    # program: check_usdc_spot_market_twap (a zero new weight keeps the old value)
    one_hour = 3600
    assert calculate_weighted_average(PRICE_PRECISION, PRICE_PRECISION, 0, one_hour) == (
        PRICE_PRECISION
    )
    assert calculate_weighted_average(PRICE_PRECISION, PRICE_PRECISION + 1, 0, one_hour) == (
        PRICE_PRECISION + 1
    )


def test_weighted_average_bias_and_truncation() -> None:
    assert calculate_weighted_average(7, 9, 3, 0) == 7  # old weight 0: the new value
    # (375_001 * 3600 + 500_000 * 82_800) / 86_400 = 494_791.7 -> 494_791, +1 bias
    assert calculate_weighted_average(375_001, 500_000, 3600, 82_800) == 494_792
    # (1 * 1 + 0 * 2) / 3 = 0 and a -1 bias is not applied to a zero result
    assert calculate_weighted_average(1, 0, 1, 2) == 0
    # Rust truncation on a negative sum: (-7 * 1 + 0 * 1) / 2 = -3 (not -4); weight2 1: no bias
    assert calculate_weighted_average(-7, 0, 1, 1) == -3
    # explicit bias overrides the rule
    assert calculate_weighted_average(375_001, 500_000, 3600, 82_800, bias=0) == 494_791


def test_calculate_new_twap() -> None:
    # since_last 1800 of a 3600 period: (1_100_000 + 1_000_000) / 2 = 1_050_000, bias -1
    assert calculate_new_twap(1_100_000, 1800, 1_000_000, 0, 3600) == 1_049_999
    # past the period the old twap keeps weight 1: (1.1e6 * 7200 + 1e6) / 7201 = 1_099_986.1
    assert calculate_new_twap(1_100_000, 7200, 1_000_000, 0, 3600) == 1_099_986


def test_calculate_rolling_sum() -> None:
    assert calculate_rolling_sum(100, 5, 1, 4) == 80  # 100 * 3 / 4 + 5
    assert calculate_rolling_sum(100, 5, 9, 4) == 5  # decayed weight floors at zero


def test_sanitize_new_price() -> None:
    assert sanitize_new_price(2_000_000, 1_000_000, 10) == 1_100_000  # +10% band
    assert sanitize_new_price(500_000, 1_000_000, 10) == 900_000
    assert sanitize_new_price(1_050_000, 1_000_000, 10) == 1_050_000  # inside the band
    assert sanitize_new_price(2_000_000, 1_000_000, None) == 1_333_333  # default 1/3
    assert sanitize_new_price(2_000_000, 1_000_000, 0) == 2_000_000  # no band
    assert sanitize_new_price(2_000_000, 0, 10) == 2_000_000  # no twap yet


# --- update_spot_balances ---------------------------------------------------------------------


def test_deposit_into_empty_position() -> None:
    market = _market()
    position = SpotPosition(market_index=0)
    update_spot_balances(1_000_000, DEPOSIT, market, position, False)
    # 1e6 tokens * 1e13 / 1e10 = 1e9 scaled, deposits round down (exact here)
    assert (position.scaled_balance, position.balance_type) == (SPOT_BALANCE_PRECISION, DEPOSIT)
    assert (market.deposit_balance, market.borrow_balance) == (SPOT_BALANCE_PRECISION, 0)


def test_partial_withdraw_rounds_up_only_when_leaving() -> None:
    market = _market(deposit_balance=2 * SPOT_BALANCE_PRECISION)
    leaving = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    staying = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    # program (test_daily_withdraw_limits): 500_000 out of 1e6 -> 5e8 + 1 removed
    update_spot_balances(500_000, BORROW, market, leaving, True)
    assert leaving.scaled_balance == 499_999_999
    update_spot_balances(500_000, BORROW, market, staying, False)
    assert staying.scaled_balance == 500_000_000
    assert market.deposit_balance == 999_999_999
    # program: then 124_998 more -> 124_998_001 removed
    update_spot_balances(124_998, BORROW, market, leaving, True)
    assert leaving.scaled_balance == 375_001_998


def test_withdraw_of_whole_amount_clears_exactly() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    position = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    update_spot_balances(1_000_000, BORROW, market, position, True)
    assert (position.scaled_balance, position.balance_type) == (0, DEPOSIT)
    assert market.deposit_balance == 0


def test_borrow_from_empty_position_rounds_up() -> None:
    # program: check_fee_collection borrows 125_000 -> 125_000_000 + 1 scaled
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    position = SpotPosition(market_index=0)
    update_spot_balances(125_000, BORROW, market, position, True)
    assert (position.scaled_balance, position.balance_type) == (125_000_001, BORROW)
    assert (market.deposit_balance, market.borrow_balance) == (SPOT_BALANCE_PRECISION, 125_000_001)


def test_withdraw_past_deposit_flips_to_borrow() -> None:
    market = _market(deposit_balance=2 * SPOT_BALANCE_PRECISION)
    position = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    # 1e6 clears the deposit, the other 500_000 borrows: 5e8 + 1 scaled
    update_spot_balances(1_500_000, BORROW, market, position, True)
    assert (position.scaled_balance, position.balance_type) == (500_000_001, BORROW)
    assert (market.deposit_balance, market.borrow_balance) == (SPOT_BALANCE_PRECISION, 500_000_001)


def test_repay_rounds_up_and_overpay_flips_to_deposit() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION, borrow_balance=500_000_001)
    position = SpotPosition(market_index=0, scaled_balance=500_000_001, balance_type=BORROW)
    # owed = ceil(500_000_001 * 1e10 / 1e13) = 500_001; repaying 200_000 removes 2e8 + 1
    update_spot_balances(200_000, DEPOSIT, market, position, False)
    assert (position.scaled_balance, position.balance_type) == (300_000_000, BORROW)
    # owed 300_000; paying 400_000 clears it and deposits 100_000 -> 1e8 scaled
    update_spot_balances(400_000, DEPOSIT, market, position, False)
    assert (position.scaled_balance, position.balance_type) == (100_000_000, DEPOSIT)
    assert (market.deposit_balance, market.borrow_balance) == (1_100_000_000, 0)


def test_leaving_borrow_needs_deposits_to_cover_borrows() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    position = SpotPosition(market_index=0)
    with pytest.raises(ProtocolError) as err:
        update_spot_balances(1_000_001, BORROW, market, position, True)
    assert err.value.code == ErrorCode.SpotMarketInsufficientDeposits
    # inside the program (not leaving) the same move is allowed
    update_spot_balances(
        1_000_001,
        BORROW,
        _market(deposit_balance=SPOT_BALANCE_PRECISION),
        SpotPosition(market_index=0),
        False,
    )


def test_pool_balance_cannot_flip_to_borrow() -> None:
    market = _market()
    market.revenue_pool.scaled_balance = 1000
    market.deposit_balance = 1000
    with pytest.raises(ProtocolError) as err:
        # the pool holds 1 token; taking 2 would leave it owing 1
        update_revenue_pool_balances(2, BORROW, market)
    assert err.value.code == ErrorCode.CantUpdateSpotBalanceType


def test_negative_token_amount_is_rejected() -> None:
    with pytest.raises(CastingError):
        update_spot_balances(-1, DEPOSIT, _market(), SpotPosition(market_index=0), False)


# --- transfers ------------------------------------------------------------------------------


def test_transfer_spot_balances() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    payer = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    payee = SpotPosition(market_index=0)
    transfer_spot_balances(300_000, market, payer, payee)
    assert (payer.scaled_balance, payee.scaled_balance) == (700_000_000, 300_000_000)
    # a negative amount moves the other way, and past zero opens a borrow on the payee
    transfer_spot_balances(-400_000, market, payer, payee)
    assert (payer.scaled_balance, payer.balance_type) == (1_100_000_000, DEPOSIT)
    assert (payee.scaled_balance, payee.balance_type) == (100_000_001, BORROW)
    assert (market.deposit_balance, market.borrow_balance) == (1_100_000_000, 100_000_001)
    transfer_spot_balances(0, market, payer, payee)  # no-op
    assert market.deposit_balance == 1_100_000_000


def test_transfer_spot_balances_guards() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    with pytest.raises(ProtocolError) as err:
        transfer_spot_balances(
            1, market, SpotPosition(market_index=0), SpotPosition(market_index=1)
        )
    assert err.value.code == ErrorCode.UnequalMarketIndexForSpotTransfer
    too_big = SpotPosition(market_index=0, scaled_balance=2 * SPOT_BALANCE_PRECISION)
    with pytest.raises(ProtocolError) as err:
        transfer_spot_balances(1, market, too_big, SpotPosition(market_index=0))
    assert err.value.code == ErrorCode.InvalidSpotMarketState


def test_revenue_pool_transfers() -> None:
    market = _market()
    position = SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION)
    market.deposit_balance = SPOT_BALANCE_PRECISION
    transfer_spot_balance_to_revenue_pool(250_000, market, position)
    assert (position.scaled_balance, market.revenue_pool.scaled_balance) == (
        750_000_000,
        250_000_000,
    )
    transfer_revenue_pool_to_spot_balance(50_000, market, position)
    assert (position.scaled_balance, market.revenue_pool.scaled_balance) == (
        800_000_000,
        200_000_000,
    )
    assert market.deposit_balance == SPOT_BALANCE_PRECISION
    with pytest.raises(ProtocolError) as err:
        transfer_revenue_pool_to_spot_balance(1, market, SpotPosition(market_index=3))
    assert err.value.code == ErrorCode.UnequalMarketIndexForSpotTransfer


# --- interest accrual (program vectors) -------------------------------------------------------


def test_fee_collection_program_vectors() -> None:
    # program: check_fee_collection
    market = _market(
        deposit_balance=SPOT_BALANCE_PRECISION,
        deposit_token_twap=QUOTE_PRECISION,
        optimal_utilization=SPOT_UTILIZATION_PRECISION // 2,
        optimal_borrow_rate=SPOT_RATE_PRECISION * 20,
        max_borrow_rate=SPOT_RATE_PRECISION * 50,
    )
    market.insurance_fund.user_factor = 900
    market.insurance_fund.total_factor = 1000
    update_spot_balances(QUOTE_PRECISION // 8, BORROW, market, SpotPosition(market_index=0), True)
    assert (market.deposit_balance, market.borrow_balance) == (1_000_000_000, 125_000_001)

    record = update_spot_market_cumulative_interest(market, None, 100)
    assert market.revenue_pool.scaled_balance == 0
    assert market.cumulative_deposit_interest == 10_000_019_799
    assert market.cumulative_borrow_interest == 10_000_158_551
    assert (market.last_interest_ts, market.last_twap_ts) == (100, 100)
    assert market.utilization_twap == 143
    assert _tokens(market) == (1_000_001, 125_002)
    assert record == SpotInterestRecord(
        market_index=0,
        deposit_balance=1_000_000_000,
        cumulative_deposit_interest=10_000_019_799,
        borrow_balance=125_000_001,
        cumulative_borrow_interest=10_000_158_551,
        optimal_utilization=500_000,
        optimal_borrow_rate=20_000_000,
        max_borrow_rate=50_000_000,
        ts=100,
    )

    update_spot_market_cumulative_interest(market, None, 7500)
    assert (market.last_interest_ts, market.last_twap_ts) == (7500, 7500)
    assert market.utilization_twap == 10_846
    assert market.cumulative_deposit_interest == 10_001_484_937
    assert market.cumulative_borrow_interest == 10_011_891_454
    assert market.revenue_pool.scaled_balance == 0
    deposit_2, borrow_2 = _tokens(market)
    assert (deposit_2, borrow_2) == (1_000_148, 125_149)

    update_spot_market_cumulative_interest(market, None, 750 + 60 * 60 * 24 * 365)
    assert market.cumulative_deposit_interest == 16_257_818_378
    assert market.cumulative_borrow_interest == 60_112_684_636
    assert market.revenue_pool.scaled_balance == 385_045
    deposit_3, borrow_3 = _tokens(market)
    assert (deposit_3, borrow_3) == (1_626_407, 751_409)
    # the program reads the revenue pool as a borrow here (rounds up)
    assert get_token_amount(market.revenue_pool.scaled_balance, market, BORROW) == 2315
    assert (borrow_3 - borrow_2) - (deposit_3 - deposit_2) == 1
    assert market.utilization_twap == 462_004


def test_fee_collection_larger_nums_program_vectors() -> None:
    # program: check_fee_collection_larger_nums
    market = _market(
        deposit_balance=1_000_000 * SPOT_BALANCE_PRECISION,
        deposit_token_twap=QUOTE_PRECISION // 2,
        optimal_utilization=SPOT_UTILIZATION_PRECISION // 2,
        optimal_borrow_rate=SPOT_RATE_PRECISION * 20,
        max_borrow_rate=SPOT_RATE_PRECISION * 50,
    )
    market.insurance_fund.user_factor = 90_000
    market.insurance_fund.total_factor = 100_000
    update_spot_balances(
        540_510 * QUOTE_PRECISION, BORROW, market, SpotPosition(market_index=0), False
    )
    assert market.borrow_balance == 540_510_000_000_001

    update_spot_market_cumulative_interest(market, None, 100)
    assert calculate_borrow_rate(market, calculate_spot_market_utilization(market)) == 20_173_678
    assert market.revenue_pool.scaled_balance == 3_457_492_406
    assert market.cumulative_deposit_interest == 10_000_311_188
    assert market.cumulative_borrow_interest == 10_000_639_702
    assert market.utilization_twap == 624
    deposit_1, borrow_1 = _tokens(market)
    assert (deposit_1, borrow_1) == (1_000_034_576_399, 540_544_576_533)
    assert get_token_amount(market.revenue_pool.scaled_balance, market, DEPOSIT) == 3_457_599

    update_spot_market_cumulative_interest(market, None, 7500)
    assert market.utilization_twap == 46_964
    assert market.cumulative_deposit_interest == 10_023_340_555
    assert market.cumulative_borrow_interest == 10_047_980_763
    assert market.revenue_pool.scaled_balance == 258_744_322_775
    deposit_2, borrow_2 = _tokens(market)
    assert (deposit_2, borrow_2) == (1_002_593_403_746, 543_103_408_221)
    assert get_token_amount(market.revenue_pool.scaled_balance, market, DEPOSIT) == 259_348_246
    assert (borrow_2 - borrow_1) - (deposit_2 - deposit_1) == 4341

    update_spot_market_cumulative_interest(market, None, 750 + 60 * 60 * 24 * 365)
    assert calculate_spot_market_utilization(market) == 961_580
    assert market.cumulative_deposit_interest == 108_608_729_074
    assert market.cumulative_borrow_interest == 212_759_822_472
    assert market.revenue_pool.scaled_balance == 101_141_669_831_135
    deposit_3, borrow_3 = _tokens(market)
    assert (deposit_3, borrow_3) == (11_959_359_729_078, 11_499_881_164_435)
    assert get_token_amount(market.revenue_pool.scaled_balance, market, DEPOSIT) == (
        1_098_486_821_678
    )
    assert (borrow_3 - borrow_2) - (deposit_3 - deposit_2) == 11_430_882


def test_no_interest_no_record_but_twaps_still_move() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION)
    assert update_spot_market_cumulative_interest(market, None, 3600) is None
    assert market.last_interest_ts == 0  # nothing accrued: the interest clock does not move
    assert market.last_twap_ts == 3600
    # (1e6 * 3600 + 0 * 82_800) / 86_400 = 41_666.7 -> 41_666; old term smaller: -1
    assert market.deposit_token_twap == 41_665


# --- token twaps (program: test_daily_withdraw_limits) ----------------------------------------


def test_deposit_token_twap_program_vectors() -> None:
    market = _market(deposit_balance=375_001_998, deposit_token_twap=QUOTE_PRECISION // 2)
    update_spot_market_cumulative_interest(market, None, 3600)
    assert market.deposit_token_twap == 494_792
    update_spot_market_cumulative_interest(market, None, 3600 * 24)
    assert market.deposit_token_twap == 379_991  # a little slower than one day
    update_spot_market_cumulative_interest(market, None, 3600 * 48 + 100)
    assert market.deposit_token_twap == 375_001

    position = SpotPosition(market_index=0, scaled_balance=375_001_998)
    update_spot_balances(QUOTE_PRECISION * 100_000, DEPOSIT, market, position, True)
    assert market.deposit_balance == position.scaled_balance == 100_000_375_001_998

    market.last_interest_ts = 0
    market.last_twap_ts = 0
    update_spot_market_cumulative_interest(market, None, 3600)
    assert market.deposit_token_twap == 4_167_041_666
    update_spot_market_cumulative_interest(market, None, 3600 * 44)
    assert market.deposit_token_twap == 99_999_755_926


def test_borrow_token_twap_program_vectors() -> None:
    market = _market(
        market_index=1,
        decimals=10,
        deposit_balance=50 * SPOT_BALANCE_PRECISION,
        borrow_balance=8_000_000_002,
        deposit_token_twap=500 * SPOT_BALANCE_PRECISION,
        optimal_utilization=1_000_000,
        optimal_borrow_rate=SPOT_RATE_PRECISION // 5,
        max_borrow_rate=SPOT_RATE_PRECISION,
    )
    update_spot_market_cumulative_interest(market, None, 3655 * 24)
    assert market.deposit_token_twap == 500_007_120_768
    assert market.borrow_token_twap == 80_006_208_813


# --- oracle twaps (program: check_usdc_spot_market_twap) ---------------------------------------


def test_usdc_oracle_twap_program_vectors() -> None:
    market = _market(
        deposit_balance=100_000_000 * SPOT_BALANCE_PRECISION,
        deposit_token_twap=QUOTE_PRECISION // 2,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=PRICE_PRECISION,
            last_oracle_price_twap=PRICE_PRECISION,
            last_oracle_price_twap_5min=PRICE_PRECISION,
        ),
    )
    price = OraclePriceData(price=PRICE_PRECISION, confidence=1, delay=0)
    hist = market.historical_oracle_data
    now = 30
    update_spot_market_twap_stats(market, price, now)
    assert hist.last_oracle_delay == 0
    assert (hist.last_oracle_price_twap, hist.last_oracle_price_twap_5min) == (1_000_001, 1_000_001)

    cur_time = 1_679_940_002
    now += cur_time
    update_spot_market_twap_stats(market, price, now)
    assert hist.last_oracle_price_twap_5min == 1_000_000

    while now < cur_time + 1000:
        now += 1
        update_spot_market_twap_stats(market, price, now)
        update_spot_market_twap_stats(market, price, now)
    # repeated updates within one second distort the twap by the bias unit
    assert (hist.last_oracle_price_twap, hist.last_oracle_price_twap_5min) == (1_000_001, 1_000_001)


def test_oracle_twap_update_is_clamped_by_asset_tier() -> None:
    market = _market(
        asset_tier=AssetTier.Collateral,  # clamp to 1/10 of the twap
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=PRICE_PRECISION,
            last_oracle_price_twap=PRICE_PRECISION,
            last_oracle_price_twap_5min=PRICE_PRECISION,
        ),
    )
    update_spot_market_twap_stats(
        market, OraclePriceData(price=2 * PRICE_PRECISION, confidence=7, delay=3), 1800
    )
    hist = market.historical_oracle_data
    # 2e6 is capped to 1.1e6; 1h: (1.1e6 * 1800 + 1e6 * 1800) / 3600 = 1_050_000, bias -1
    assert hist.last_oracle_price_twap == 1_049_999
    # 5m: past the period the old value weighs 1: (1.1e6 * 1800 + 1e6) / 1801 = 1_099_944.5
    assert hist.last_oracle_price_twap_5min == 1_099_944
    assert (hist.last_oracle_price, hist.last_oracle_conf, hist.last_oracle_delay) == (
        2 * PRICE_PRECISION,
        7,
        3,
    )
    assert hist.last_oracle_price_twap_ts == 1800


def _hist_twap_ts_after_update(last_twap_ts: int) -> int:
    market = _market(
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=PRICE_PRECISION,
            last_oracle_price_twap=1_000_001,
            last_oracle_price_twap_5min=1_000_001,
            last_oracle_price_twap_ts=50,
        ),
        last_twap_ts=last_twap_ts,
    )
    # 1h twap at 100: (1e6 * 50 + 1_000_001 * 3550) / 3600 = 1_000_000.98 -> 1_000_000, +1
    # bias = 1_000_001: unchanged
    update_spot_market_twap_stats(market, OraclePriceData(PRICE_PRECISION, 0, 0), 100)
    assert market.historical_oracle_data.last_oracle_price_twap == 1_000_001
    return market.historical_oracle_data.last_oracle_price_twap_ts


def test_oracle_twap_timestamp_moves_only_on_change_or_after_a_minute() -> None:
    assert _hist_twap_ts_after_update(last_twap_ts=100) == 50  # market updated 0 s ago
    assert _hist_twap_ts_after_update(last_twap_ts=0) == 100  # market updated 100 s ago


# --- update_spot_market_and_check_validity ---------------------------------------------------


def _oracle_market(market_index: int) -> SpotMarket:
    return _market(
        market_index=market_index,
        asset_tier=AssetTier.Collateral,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=PRICE_PRECISION,
            last_oracle_price_twap=PRICE_PRECISION,
            last_oracle_price_twap_5min=PRICE_PRECISION,
        ),
    )


def test_check_validity_accepts_a_fresh_reading_for_liquidation() -> None:
    market = _oracle_market(1)
    reading = OraclePriceData(price=PRICE_PRECISION, confidence=0, delay=0)
    update_spot_market_and_check_validity(
        market, reading, ValidityGuardRails(), 0, DriftAction.Liquidate
    )
    # with the immediate-staleness override at 0 the best verdict is StaleForAMM, which an
    # action-less check (Valid only) refuses
    with pytest.raises(ProtocolError) as err:
        update_spot_market_and_check_validity(market, reading, ValidityGuardRails(), 0, None)
    assert err.value.code == ErrorCode.InvalidOracle


def test_check_validity_rejects_a_too_volatile_reading() -> None:
    # same second: the twap stays 1e6 (zero weight on the reading); 6e6 / 1e6 = 6 > 5
    reading = OraclePriceData(price=6 * PRICE_PRECISION, confidence=0, delay=0)
    with pytest.raises(ProtocolError) as err:
        update_spot_market_and_check_validity(
            _oracle_market(1), reading, ValidityGuardRails(), 0, DriftAction.Liquidate
        )
    assert err.value.code == ErrorCode.InvalidOracle
    # the quote market is never checked
    update_spot_market_and_check_validity(
        _oracle_market(0), reading, ValidityGuardRails(), 0, DriftAction.Liquidate
    )


# --- invariant: market totals equal the balances held against it -------------------------------


_op = st.tuples(
    st.integers(min_value=0, max_value=3),  # which position
    st.sampled_from([DEPOSIT, BORROW]),
    st.integers(min_value=0, max_value=5 * 10**9),  # token amount
    st.booleans(),  # is_leaving_drift
    st.integers(min_value=0, max_value=30 * 86_400),  # seconds to advance first
    st.integers(min_value=-(10**9), max_value=10**9),  # transfer to the next position
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=25))
def test_market_totals_equal_sum_of_balances(
    ops: list[tuple[int, SpotBalanceType, int, bool, int, int]],
) -> None:
    market = _market(
        optimal_utilization=800_000, optimal_borrow_rate=100_000, max_borrow_rate=2_000_000
    )
    market.insurance_fund.total_factor = 100_000
    positions = [SpotPosition(market_index=0) for _ in range(4)]
    now = 0

    for index, direction, amount, leaving, advance, transfer in ops:
        now += advance
        update_spot_market_cumulative_interest(market, None, now)
        saved_market = market.clone()
        saved_positions = [dataclasses.replace(p) for p in positions]
        try:
            update_spot_balances(amount, direction, market, positions[index], leaving)
            if leaving and direction == BORROW:
                deposit_tokens, borrow_tokens = _tokens(market)
                assert deposit_tokens >= borrow_tokens
            transfer_spot_balances(transfer, market, positions[index], positions[(index + 1) % 4])
        except ProtocolError:
            # a rejected transaction keeps nothing (the instruction works on clones)
            market, positions = saved_market, saved_positions
            continue

        deposits = sum(p.scaled_balance for p in positions if p.balance_type == DEPOSIT)
        borrows = sum(p.scaled_balance for p in positions if p.balance_type == BORROW)
        assert market.deposit_balance == deposits + market.revenue_pool.scaled_balance
        assert market.borrow_balance == borrows
        assert all(p.scaled_balance >= 0 for p in positions)


def test_pool_balance_is_a_spot_balance() -> None:
    market = _market()
    pool = PoolBalance()
    update_spot_balances(5, DEPOSIT, market, pool, False)
    assert (pool.scaled_balance, market.deposit_balance) == (5000, 5000)


def test_dust_is_cleared_when_a_balance_flips_sides() -> None:
    # 999 scaled units at a deposit index above 1e10 are worth 0 whole token units (dust).
    # Taking one token out must clear the dust before the borrow opens, so the market's
    # deposit total no longer counts it.
    market = _market(
        optimal_utilization=800_000, optimal_borrow_rate=100_000, max_borrow_rate=2_000_000
    )
    market.cumulative_deposit_interest = 10_010_000_000
    dusty = SpotPosition(market_index=0, scaled_balance=999)
    market.deposit_balance = 999
    update_spot_balances(1, BORROW, market, dusty, False)
    # 1 token unit = 1e13 / 1e10 = 1000 scaled, rounded up for a borrow: 1001
    assert (dusty.balance_type, dusty.scaled_balance) == (BORROW, 1001)
    assert (market.deposit_balance, market.borrow_balance) == (0, 1001)
