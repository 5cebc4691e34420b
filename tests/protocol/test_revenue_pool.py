"""The revenue pool: what flows in (perp fees, the insurance fund's share of borrow interest),
what perp markets may draw from it, and its hourly settlement into the insurance fund
(seed 002).

Vectors marked "program" reproduce ``controller/spot_balance/tests.rs``
(check_fee_collection, check_fee_collection_larger_nums, continued to their settlements) and
``controller/amm/tests.rs`` (the update_pool_balances and calculate_revenue_pool_transfer
tests); the seed's rules are tested through signed transactions with the arithmetic worked
in the comments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocol.constants import (
    FEE_POOL_TO_REVENUE_POOL_THRESHOLD,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_RATE_PRECISION,
    SPOT_UTILIZATION_PRECISION,
)
from protocol.controller.insurance import settle_revenue_to_insurance_fund
from protocol.controller.pnl import calculate_revenue_pool_transfer, update_pool_balances
from protocol.controller.spot_balance import (
    update_spot_balances,
    update_spot_market_cumulative_interest,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.instructions import (
    AddInsuranceFundStake,
    Deposit,
    InitializeInsuranceFundStake,
    SettleRevenueToInsuranceFund,
    UpdateInsuranceFundFactors,
    Withdraw,
)
from protocol.math.insurance import if_shares_to_vault_amount
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.records import InsuranceFundRecord
from protocol.state.perp_market import AMM, InsuranceClaim, PerpMarket
from protocol.state.spot_market import InsuranceFund, PoolBalance, SpotMarket
from protocol.state.user import SpotPosition
from protocol.state_hash import state_hash
from protocol.types import AssetTier, SpotBalanceType
from tests.protocol.world import SOL_UNIT, START_TS, USDC, World, keypair, make_state

Q = QUOTE_PRECISION
SBP = SPOT_BALANCE_PRECISION
DEPOSIT = SpotBalanceType.Deposit
BORROW = SpotBalanceType.Borrow
YEAR_PLUS = 750 + 60 * 60 * 24 * 365


def _spot(**fields: Any) -> SpotMarket:
    """``SpotMarket::default()`` of the program tests (rate fields zero)."""
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


def _tokens(market: SpotMarket) -> tuple[int, int, int]:
    return (
        get_token_amount(market.deposit_balance, market, DEPOSIT),
        get_token_amount(market.borrow_balance, market, BORROW),
        get_token_amount(market.revenue_pool.scaled_balance, market, DEPOSIT),
    )


# --- settling revenue to the insurance fund: program vectors --------------------------------------


def test_settle_after_a_year_of_interest_program_vector() -> None:
    # program: check_fee_collection, from its settlement on (the accrual steps before it are
    # checked in test_controller_spot_balance)
    market = _spot(
        deposit_balance=SBP,
        deposit_token_twap=Q,
        optimal_utilization=SPOT_UTILIZATION_PRECISION // 2,
        optimal_borrow_rate=SPOT_RATE_PRECISION * 20,
        max_borrow_rate=SPOT_RATE_PRECISION * 50,
        insurance_fund=InsuranceFund(user_factor=900, total_factor=1000),
    )
    update_spot_balances(Q // 8, BORROW, market, SpotPosition(market_index=0), True)
    for now in (100, 7500, YEAR_PLUS):
        update_spot_market_cumulative_interest(market, None, now)
    assert market.revenue_pool.scaled_balance == 385_045
    deposit_3, _, _ = _tokens(market)
    assert deposit_3 == 1_626_407
    if_tokens_3 = get_token_amount(market.revenue_pool.scaled_balance, market, BORROW)
    assert if_tokens_3 == 2315
    assert market.utilization_twap == 462_004

    market.insurance_fund.revenue_settle_period = 1
    settle_amount, records = settle_revenue_to_insurance_fund(
        deposit_3, if_tokens_3, market, YEAR_PLUS + 60, True
    )
    assert settle_amount == 626
    # the protocol's tenth (100 of 1000) would buy 62 * 0 / 2315 = 0 shares of an unshared fund
    assert (market.insurance_fund.user_shares, market.insurance_fund.total_shares) == (0, 0)
    assert if_tokens_3 - settle_amount == 1689
    assert market.revenue_pool.scaled_balance == 0
    assert market.utilization_twap == 462_005
    assert (market.borrow_token_twap, market.deposit_token_twap) == (751_409, 1_626_407)
    deposit_4, borrow_4, if_tokens_4 = _tokens(market)
    assert borrow_4 * SPOT_UTILIZATION_PRECISION // deposit_4 == 462_191
    assert deposit_4 - borrow_4 == 874_373
    assert if_tokens_4 == 0
    assert market.insurance_fund.last_revenue_settle_ts == YEAR_PLUS + 60
    record = records[-1]
    assert isinstance(record, InsuranceFundRecord)
    assert (record.amount, record.user_if_factor, record.total_if_factor) == (626, 900, 1000)


def test_settle_at_high_utilization_takes_half_the_depositors_claim_program_vector() -> None:
    # program: check_fee_collection_larger_nums, from its settlement on: the revenue pool
    # (1,098,486,821,678) exceeds what depositors could withdraw (deposits - borrows =
    # 459,478,564,643), so only half of that claim settles: 229,739,282,321 less the interest
    # accrued in the minute before, 229,739,282,275
    market = _spot(
        deposit_balance=1_000_000 * SBP,
        deposit_token_twap=Q // 2,
        optimal_utilization=SPOT_UTILIZATION_PRECISION // 2,
        optimal_borrow_rate=SPOT_RATE_PRECISION * 20,
        max_borrow_rate=SPOT_RATE_PRECISION * 50,
        insurance_fund=InsuranceFund(user_factor=90_000, total_factor=100_000),
    )
    update_spot_balances(540_510 * Q, BORROW, market, SpotPosition(market_index=0), False)
    for now in (100, 7500, YEAR_PLUS):
        update_spot_market_cumulative_interest(market, None, now)
    deposit_3, borrow_3, if_tokens_3 = _tokens(market)
    assert (deposit_3, borrow_3, if_tokens_3) == (
        11_959_359_729_078,
        11_499_881_164_435,
        1_098_486_821_678,
    )
    assert market.revenue_pool.scaled_balance == 101_141_669_831_135

    market.insurance_fund.revenue_settle_period = 1
    settle_amount, _ = settle_revenue_to_insurance_fund(
        deposit_3, if_tokens_3, market, YEAR_PLUS + 60, True
    )
    assert settle_amount == 229_739_282_275
    assert (market.insurance_fund.user_shares, market.insurance_fund.total_shares) == (0, 0)
    assert if_tokens_3 - settle_amount == 868_747_539_403
    assert market.revenue_pool.scaled_balance == 79_996_002_243_946
    assert market.utilization_twap == 961_580
    deposit_4, borrow_4, if_tokens_4 = _tokens(market)
    assert deposit_4 - borrow_4 == 229_739_282_275
    assert if_tokens_4 == 868_870_384_546


def test_settle_with_no_period_or_no_revenue_program_vector() -> None:
    # program: update_pool_balances_revenue_to_fee_test, its first two settlements
    now = 33_928_058
    market = _spot(
        deposit_balance=200 * SBP,
        revenue_pool=PoolBalance(100 * SBP, 0),
    )
    assert market.insurance_fund.revenue_settle_period == 3600  # this model's hourly default
    market.insurance_fund.revenue_settle_period = 0
    assert settle_revenue_to_insurance_fund(0, 0, market, now + 3600, True)[0] == 0
    assert market.insurance_fund.last_revenue_settle_ts == 0  # not configured: nothing happens

    market.insurance_fund.revenue_settle_period = 1
    market.revenue_pool.scaled_balance = 0
    assert settle_revenue_to_insurance_fund(200 * Q, 0, market, now + 1, False)[0] == 0
    assert market.insurance_fund.last_revenue_settle_ts == now + 1
    with pytest.raises(ProtocolError) as exc:  # the instruction's variant refuses an empty settle
        settle_revenue_to_insurance_fund(200 * Q, 0, market, now + 2, True)
    assert exc.value.code == ErrorCode.NoRevenueToSettleToIF


def test_settle_refuses_user_factor_above_total_factor() -> None:
    market = _spot(
        deposit_balance=100 * SBP,
        revenue_pool=PoolBalance(100 * SBP, 0),
        insurance_fund=InsuranceFund(user_factor=2, total_factor=1),
    )
    with pytest.raises(ProtocolError) as exc:
        settle_revenue_to_insurance_fund(100 * Q, 0, market, 3600, True)
    assert exc.value.code == ErrorCode.RevenueSettingsCannotSettleToIF


def test_settle_caps_at_1000_percent_apr_of_the_vault_with_stakers() -> None:
    # 10,000 USDC in the fund with stakers, 100,000 USDC of revenue, hourly settlements:
    # 1000% APR of 10,000e6 is 100,000e6 a year, 100,000e6 / (31,536,000 / 3600 = 8760)
    # = 11,415,525.1 -> 11,415,525 per hour (the tenth of the pool, 10,000e6, is more)
    market = _spot(
        deposit_balance=100_000 * SBP,
        revenue_pool=PoolBalance(100_000 * SBP, 0),
        insurance_fund=InsuranceFund(total_shares=10_000 * Q, user_shares=10_000 * Q),
    )
    amount, _ = settle_revenue_to_insurance_fund(100_000 * Q, 10_000 * Q, market, 3600, True)
    assert amount == 11_415_525
    assert _tokens(market)[2] == 100_000 * Q - 11_415_525
    # the governance token's fund (market 15) is capped at 1/22 = 45,454 (PERCENTAGE) a year:
    # 10,000e6 * 45,454 / 1e6 / 8760 = 51,888.1 -> 51,888
    gov = dataclasses.replace(market, market_index=15, revenue_pool=PoolBalance(100_000 * SBP, 15))
    gov.insurance_fund = InsuranceFund(total_shares=10_000 * Q, user_shares=10_000 * Q)
    gov.deposit_balance = 100_000 * SBP
    assert settle_revenue_to_insurance_fund(100_000 * Q, 10_000 * Q, gov, 3600, True)[0] == 51_888


# --- what a perp market's AMM moves to and from the revenue pool: program vectors -----------------


def _perp(**amm: Any) -> PerpMarket:
    claim = amm.pop("insurance_claim", InsuranceClaim())
    pnl_pool = amm.pop("pnl_pool", PoolBalance())
    return PerpMarket(
        market_index=0,
        name="perp",
        amm=AMM(oracle="oracle", **amm),
        insurance_claim=claim,
        pnl_pool=pnl_pool,
    )


def test_calculate_revenue_pool_transfer_program_vectors() -> None:
    # program: revenue_pool_transfer_tests::test_calculate_revenue_pool_transfer
    market = _perp()
    spot = _spot(
        deposit_balance=20_020 * SBP,
        revenue_pool=PoolBalance(100 * SBP, 0),
    )
    claim, amm = market.insurance_claim, market.amm

    assert calculate_revenue_pool_transfer(market, spot, 0, 0) == 0
    assert calculate_revenue_pool_transfer(market, spot, 0, 1) == 0
    # a deficit may draw on the revenue pool up to the period's allowance
    claim.max_revenue_withdraw_per_period = Q
    assert calculate_revenue_pool_transfer(market, spot, 0, 1) == -1_000_000
    claim.max_revenue_withdraw_per_period = 100 * Q
    assert calculate_revenue_pool_transfer(market, spot, 0, 1) == -100_000_000
    claim.max_revenue_withdraw_per_period = 1000 * Q  # ... and the pool's balance
    assert calculate_revenue_pool_transfer(market, spot, 0, 1) == -100_000_000
    assert calculate_revenue_pool_transfer(market, spot, 0, 1000 * Q) == 0

    # surplus, but the market already sent more than its fee share (500 withdrawn > 0 + 150)
    amm.net_revenue_since_last_funding = 1000 * Q
    amm.total_fee_withdrawn = 500 * Q
    amm.total_liquidation_fee = 300 * Q
    claim.quote_max_insurance = 100 * Q
    claim.quote_settled_insurance = 50 * Q
    claim.revenue_withdraw_since_last_settle = 200 * Q
    claim.max_revenue_withdraw_per_period = 500 * Q
    assert calculate_revenue_pool_transfer(market, spot, 300 * Q, 1000 * Q) == 0

    claim.max_revenue_withdraw_per_period = 20 * Q
    claim.revenue_withdraw_since_last_settle = 0
    assert calculate_revenue_pool_transfer(market, spot, 300 * Q, -500 * Q) == -20_000_000
    claim.max_revenue_withdraw_per_period = 0
    assert calculate_revenue_pool_transfer(market, spot, 300 * Q, -500 * Q) == 0

    # surplus: at most the period's allowance ...
    claim.max_revenue_withdraw_per_period = 20 * Q
    amm.total_social_loss = 100 * Q
    amm.total_exchange_fee = 3000 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == 20_000_000
    # ... and the fee pool above the threshold and its social losses (500 - 250 - 100)
    claim.max_revenue_withdraw_per_period = 1000 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == 150_000_000
    amm.total_liquidation_fee = 800 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) > 0
    amm.total_liquidation_fee = 200 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == (
        500 * Q - 100 * Q - FEE_POOL_TO_REVENUE_POOL_THRESHOLD
    )
    amm.total_social_loss = 600 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == 0
    claim.max_revenue_withdraw_per_period = 40 * Q
    amm.total_social_loss = 100 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == 40_000_000
    claim.max_revenue_withdraw_per_period = 1000 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, 1000 * Q) == 150_000_000

    spot.revenue_pool.scaled_balance = 15_000 * SBP
    # a deficit draws the whole period's allowance ...
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, -1000 * Q) == -1_000_000_000
    # ... or the deficit below the threshold (1000 + 250) if the allowance is larger
    claim.max_revenue_withdraw_per_period = 2000 * Q
    assert calculate_revenue_pool_transfer(market, spot, 500 * Q, -1000 * Q) == -1_250_000_000


def test_fee_pool_sends_fees_to_the_revenue_pool_program_vector() -> None:
    # program: update_pool_balances_fee_to_revenue_test (decimals 0, balances * 1e6)
    market = _perp(
        base_asset_amount_with_amm=-122_950_819_670_000,
        total_exchange_fee=10 * Q,
        total_fee=10 * Q,
        total_mm_fee=990 * Q,
        total_fee_minus_distributions=1000 * Q,
        total_liquidation_fee=Q,
        net_revenue_since_last_funding=10_000 * Q,
        curve_update_intensity=100,
        fee_pool=PoolBalance(50 * Q * SBP, 0),
        insurance_claim=InsuranceClaim(max_revenue_withdraw_per_period=1000 * Q),
        pnl_pool=PoolBalance(50 * Q * SBP, 0),
    )
    now = 33_928_058
    spot = _spot(decimals=0, deposit_balance=100 * Q * SBP)
    assert get_token_amount(market.amm.fee_pool.scaled_balance, spot, DEPOSIT) == 50 * Q

    update_pool_balances(market, spot, 0, 0, now)
    # under FEE_POOL_TO_REVENUE_POOL_THRESHOLD: nothing moves
    assert market.amm.fee_pool.scaled_balance == 50_000_000_000_000_000
    assert market.pnl_pool.scaled_balance == 50_000_000_000_000_000
    assert spot.revenue_pool.scaled_balance == 0
    assert market.amm.total_fee_withdrawn == 0

    market.amm.fee_pool.scaled_balance = (FEE_POOL_TO_REVENUE_POOL_THRESHOLD + 50 * Q) * SBP
    update_pool_balances(market, spot, 0, 0, now)
    # the exchange's fee share (10 * 1/2 = 5) goes to the revenue pool
    assert market.pnl_pool.scaled_balance == 50_000_000_000_000_000
    assert market.amm.total_fee_withdrawn == 5_000_000
    assert spot.revenue_pool.scaled_balance == 5_000_000_000_000_000
    assert market.amm.fee_pool.scaled_balance == 295_000_000_000_000_000

    market.insurance_claim.quote_max_insurance = 1  # liquidation fees now count, up to 1
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.total_fee_withdrawn == 5_000_001
    assert spot.revenue_pool.scaled_balance == 5_000_001_000_000_000

    market.insurance_claim.quote_max_insurance = 100_000_000
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.total_fee_withdrawn == 6_000_000
    assert spot.revenue_pool.scaled_balance == 6_000_000_000_000_000


def test_fee_pool_sends_at_most_the_periods_net_revenue_program_vector() -> None:
    # program: update_pool_balances_fee_to_revenue_low_amm_revenue_test
    market = _perp(
        base_asset_amount_with_amm=-122_950_819_670_000,
        total_exchange_fee=10 * Q,
        total_fee=10 * Q,
        total_mm_fee=990 * Q,
        total_fee_minus_distributions=1000 * Q,
        total_liquidation_fee=Q,
        net_revenue_since_last_funding=Q,
        curve_update_intensity=100,
        fee_pool=PoolBalance(50 * Q * SBP, 0),
        insurance_claim=InsuranceClaim(max_revenue_withdraw_per_period=1000 * Q),
        pnl_pool=PoolBalance(50 * Q * SBP, 0),
    )
    now = 33_928_058
    spot = _spot(decimals=0, deposit_balance=100 * Q * SBP)
    update_pool_balances(market, spot, 0, 0, now)
    assert spot.revenue_pool.scaled_balance == 0

    market.amm.fee_pool.scaled_balance = (FEE_POOL_TO_REVENUE_POOL_THRESHOLD + 50 * Q) * SBP
    update_pool_balances(market, spot, 0, 0, now)
    # only the period's net revenue (1) may go
    assert market.pnl_pool.scaled_balance == 50_000_000_000_000_000
    assert market.amm.total_fee_withdrawn == 1_000_000
    assert spot.revenue_pool.scaled_balance == 1_000_000_000_000_000
    assert market.amm.fee_pool.scaled_balance == 299_000_000_000_000_000

    market.insurance_claim.quote_max_insurance = 1
    market.amm.net_revenue_since_last_funding = 1
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.total_fee_withdrawn == 1_000_001
    assert spot.revenue_pool.scaled_balance == 1_000_001_000_000_000

    market.insurance_claim.quote_max_insurance = 100_000_000
    market.amm.net_revenue_since_last_funding = 100_000_000
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.total_fee_withdrawn == 6_000_000
    assert spot.revenue_pool.scaled_balance == 6_000_000_000_000_000


def test_amm_draws_at_most_max_revenue_withdraw_per_period_program_vector() -> None:
    # program: update_pool_balances_revenue_to_fee_test. Seed 002: a perp market's AMM may
    # draw at most max_revenue_withdraw_per_period from the revenue pool per period; the
    # period restarts when revenue is settled to the insurance fund.
    market = _perp(
        base_asset_amount_with_amm=-122_950_819_670_000,
        total_exchange_fee=10 * Q,
        total_fee=10 * Q,
        total_mm_fee=990 * Q,
        total_fee_minus_distributions=-(10_000 * Q),
        curve_update_intensity=100,
        fee_pool=PoolBalance(50 * SBP, 0),
        pnl_pool=PoolBalance(50 * SBP, 0),
    )
    now = 33_928_058
    spot = _spot(deposit_balance=200 * SBP, revenue_pool=PoolBalance(100 * SBP, 0))
    claim = market.insurance_claim
    spot.insurance_fund.revenue_settle_period = 1
    spot.revenue_pool.scaled_balance = 0
    settle_revenue_to_insurance_fund(200_000_000, 0, spot, now + 1, False)
    spot.revenue_pool.scaled_balance = 100 * SBP
    now += 2
    prev_tfmd = market.amm.total_fee_minus_distributions

    # no allowance: the fee pool's excess only moves to the pnl pool
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 5 * SBP
    assert market.pnl_pool.scaled_balance == 95 * SBP
    assert spot.revenue_pool.scaled_balance == 100 * SBP
    assert market.amm.total_fee_minus_distributions == prev_tfmd
    assert (claim.revenue_withdraw_since_last_settle, claim.last_revenue_withdraw_ts) == (0, 0)

    # allowance 200: the AMM draws the whole pool (100)
    claim.max_revenue_withdraw_per_period = 200 * Q
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 105 * SBP
    assert market.pnl_pool.scaled_balance == 95 * SBP
    assert spot.revenue_pool.scaled_balance == 0
    assert market.amm.total_fee_withdrawn == 0
    assert market.amm.total_fee_minus_distributions == -9_900_000_000
    assert (claim.revenue_withdraw_since_last_settle, claim.last_revenue_withdraw_ts) == (
        100_000_000,
        now,
    )
    assert get_token_amount(spot.deposit_balance, spot, DEPOSIT) == 200_000_000  # unchanged

    for _ in range(2):  # calling again only moves the fee pool's excess to the pnl pool
        update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 5 * SBP
    assert market.pnl_pool.scaled_balance == 195 * SBP
    assert market.amm.total_fee_minus_distributions == -9_900_000_000
    assert spot.revenue_pool.scaled_balance == 0

    # a revenue pool larger than the deposits is refused
    spot.revenue_pool.scaled_balance = 9_900_000_001_000
    broken_market, broken_spot = market.clone(), spot.clone()
    with pytest.raises(ProtocolError) as exc:
        update_pool_balances(broken_market, broken_spot, 0, 0, now)
    assert exc.value.code == ErrorCode.SpotMarketVaultInvariantViolated
    spot.deposit_balance += 9_900_000_001_000
    spot_market_vault_amount = get_token_amount(spot.deposit_balance, spot, DEPOSIT)
    assert (spot.deposit_balance, spot_market_vault_amount) == (10_100_000_001_000, 10_100_000_001)

    # the rest of the period's allowance (200 - 100 = 100) and no more
    update_pool_balances(market, spot, 0, 0, now)
    assert spot.revenue_pool.scaled_balance == 9_800_000_001_000
    assert market.amm.fee_pool.scaled_balance == 105_000_000_000
    assert market.pnl_pool.scaled_balance == 195_000_000_000
    assert market.amm.total_fee_minus_distributions == -9_800_000_000
    assert claim.revenue_withdraw_since_last_settle == claim.max_revenue_withdraw_per_period
    for _ in range(2):
        update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 5_000_000_000
    assert market.pnl_pool.scaled_balance == 295_000_000_000
    assert spot.revenue_pool.scaled_balance == 9_800_000_001_000  # the allowance is spent
    assert claim.last_revenue_withdraw_ts == now

    # a revenue settlement to the insurance fund (no stakers: all of it) opens a new period
    assert spot.insurance_fund.last_revenue_settle_ts == 33_928_059
    spot.insurance_fund.total_factor = 1
    res, _ = settle_revenue_to_insurance_fund(spot_market_vault_amount, 0, spot, now + 3600, True)
    assert res == 9_800_000_001
    assert (spot.deposit_balance, spot.borrow_balance) == (300_000_000_000, 0)
    assert get_token_amount(spot.deposit_balance, spot, DEPOSIT) == 300_000_000
    assert spot.revenue_pool.scaled_balance == 0
    assert spot.insurance_fund.last_revenue_settle_ts == now + 3600

    spot.revenue_pool.scaled_balance = 9_800_000_001_000
    with pytest.raises(ProtocolError):  # revenue pool above the deposits
        update_pool_balances(market.clone(), spot.clone(), 0, 0, now + 3600)
    spot.deposit_balance += 9_800_000_000_001
    with pytest.raises(ProtocolError) as exc:  # a clock before the last settlement
        update_pool_balances(market.clone(), spot.clone(), 0, 0, now)
    assert exc.value.code == ErrorCode.BlockchainClockInconsistency

    update_pool_balances(market, spot, 0, 0, now + 3600)
    assert claim.last_revenue_withdraw_ts == 33_931_660
    assert spot.insurance_fund.last_revenue_settle_ts == 33_931_660
    assert market.amm.fee_pool.scaled_balance == 205_000_000_000
    assert market.pnl_pool.scaled_balance == 295_000_000_000
    assert market.amm.total_fee_minus_distributions == -9_600_000_000
    assert spot.revenue_pool.scaled_balance == 9_600_000_001_000
    assert claim.revenue_withdraw_since_last_settle == claim.max_revenue_withdraw_per_period


def test_a_new_market_draws_its_allowance_program_vector() -> None:
    # program: update_pool_balances_revenue_to_fee_new_market
    market = _perp(
        base_asset_reserve=6_165_301_473_685,
        quote_asset_reserve=6_165_301_473_685,
        sqrt_k=6_165_301_473_685,
        peg_multiplier=324_000_000,
        total_exchange_fee=26_000,
        total_fee=26_000,
        total_fee_minus_distributions=26_000,
        curve_update_intensity=100,
        insurance_claim=InsuranceClaim(
            quote_max_insurance=5000 * Q, max_revenue_withdraw_per_period=50 * Q
        ),
    )
    now = 33_928_058
    spot = _spot(deposit_balance=200 * SBP, revenue_pool=PoolBalance(100 * SBP, 0))
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 50_000_000_000  # $50
    assert market.pnl_pool.scaled_balance == 0
    assert spot.revenue_pool.scaled_balance == 50_000_000_000
    assert market.amm.total_fee_withdrawn == 0
    assert market.amm.total_fee_minus_distributions == 50_026_000
    assert market.insurance_claim.revenue_withdraw_since_last_settle == 50_000_000
    assert market.insurance_claim.last_revenue_withdraw_ts == 33_928_058


def test_devnet_state_draws_nothing_without_an_allowance_program_vector() -> None:
    # program: update_pool_balances_revenue_to_fee_devnet_state_test
    market = _perp(
        base_asset_reserve=916_769_960_813_655,
        quote_asset_reserve=932_609_131_198_775,
        sqrt_k=924_655_631_391_254,
        peg_multiplier=20_242_531,
        base_asset_amount_with_amm=7_563_264_495_267,
        quote_asset_amount=-90_559_143_969,
        total_exchange_fee=18_223_810_834,
        total_fee=130_757_047_337,
        total_mm_fee=112_696_236_155,
        total_fee_minus_distributions=338_762_376_993,
        total_fee_withdrawn=161_959_731_500,
        total_liquidation_fee=152_847_899_222,
        total_social_loss=74_768_391_959,
        curve_update_intensity=100,
        net_revenue_since_last_funding=229_827_181,
        fee_pool=PoolBalance(1821 * SBP, 0),
        pnl_pool=PoolBalance(381_047 * SBP, 0),
        insurance_claim=InsuranceClaim(
            quote_max_insurance=300_000 * Q, max_revenue_withdraw_per_period=1000 * Q
        ),
    )
    now = 33_928_058
    spot = _spot(deposit_balance=200 * SBP, revenue_pool=PoolBalance(100 * SBP, 0))
    prev_tfmd = market.amm.total_fee_minus_distributions
    update_pool_balances(market, spot, 0, 0, now)
    assert market.amm.fee_pool.scaled_balance == 1_821_000_000_000
    assert market.pnl_pool.scaled_balance == 381_047_000_000_000
    assert spot.revenue_pool.scaled_balance == 100 * SBP
    assert market.amm.total_fee_withdrawn == 161_959_731_500
    assert market.amm.total_fee_minus_distributions == prev_tfmd
    assert market.insurance_claim.revenue_withdraw_since_last_settle == 0
    assert market.insurance_claim.last_revenue_withdraw_ts == 0


def _ts_market(total_fee_minus_distributions: int) -> PerpMarket:
    return _perp(
        net_revenue_since_last_funding=169 * Q,
        total_fee_minus_distributions=total_fee_minus_distributions,
        total_exchange_fee=420_420_420_420,
        fee_pool=PoolBalance(81_000 * SBP, 0),
        pnl_pool=PoolBalance(10_000 * SBP, 0),
        insurance_claim=InsuranceClaim(
            max_revenue_withdraw_per_period=65_000_000, quote_max_insurance=1000
        ),
    )


def test_fees_to_the_revenue_pool_wait_for_a_settlement_program_vector() -> None:
    # program: revenue_pool_transfer_tests::test_update_postive_last_revenue_withdraw_ts
    market = _ts_market(1_420_420_420_420)
    spot = _spot(
        deposit_balance=20_020 * SBP,
        deposit_token_twap=20_020 * Q,
        revenue_pool=PoolBalance(10_000 * SBP, 0),
        insurance_fund=InsuranceFund(revenue_settle_period=3600),
    )
    assert update_pool_balances(market, spot, 0, -100, 100) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 100
    assert spot.revenue_pool.scaled_balance == 10_065_000_000_000  # the period's 65 went in
    # the revenue pool was not settled since: the allowance is spent
    assert update_pool_balances(market, spot, 0, -100, 10_000) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 100
    assert spot.revenue_pool.scaled_balance == 10_065_000_000_000
    # settled, but the market lost money this hour: nothing to send
    spot.insurance_fund.last_revenue_settle_ts = 3600 + 100
    market.amm.net_revenue_since_last_funding = -169
    assert update_pool_balances(market, spot, 0, -100, 10_000) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 100
    assert spot.revenue_pool.scaled_balance == 10_065_000_000_000
    # settled and 169 (units) of revenue: it goes
    market.amm.net_revenue_since_last_funding = 169
    assert update_pool_balances(market, spot, 0, -100, 10_000) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 10_000
    assert spot.revenue_pool.scaled_balance == 10_065_000_169_000


def test_draws_from_the_revenue_pool_wait_for_a_settlement_program_vector() -> None:
    # program: revenue_pool_transfer_tests::test_update_negative_last_revenue_withdraw_ts
    market = _ts_market(-6_969_696_969)
    spot = _spot(
        deposit_balance=20_020_000 * SBP,
        deposit_token_twap=20_020_000 * Q,
        revenue_pool=PoolBalance(10_000 * SBP, 0),
        insurance_fund=InsuranceFund(revenue_settle_period=3600),
    )
    assert update_pool_balances(market, spot, 0, -100, 100) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 100
    assert spot.revenue_pool.scaled_balance == 9_935_000_000_000  # drew the period's 65
    assert update_pool_balances(market, spot, 0, -100, 10_000) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 100
    assert spot.revenue_pool.scaled_balance == 9_935_000_000_000
    # after a settlement another 65 may be drawn, whatever the hour's revenue
    spot.insurance_fund.last_revenue_settle_ts = 3600 + 100
    market.amm.net_revenue_since_last_funding = -169
    assert update_pool_balances(market, spot, 0, -100, 10_000) == -100
    assert market.insurance_claim.last_revenue_withdraw_ts == 10_000
    assert spot.revenue_pool.scaled_balance == 9_870_000_000_000


# --- seed 002 through signed transactions ---------------------------------------------------------

ADMIN = keypair(60)
ALICE = keypair(61)
KEEPER = keypair(62)
LENDER = keypair(63)
BORROWER = keypair(64)
HOUR = 3600
LAST_HOUR = START_TS - START_TS % HOUR  # START_TS is 800 s past this hour


def _world(revenue: int = 0, **fund: Any) -> World:
    state = make_state()
    state.state = dataclasses.replace(state.state, admin=ADMIN.pubkey)
    usdc = state.spot_markets[USDC]
    if revenue:
        scaled = revenue * (SBP // Q)  # the deposit index is 1.0
        usdc.revenue_pool = PoolBalance(scaled, USDC)
        usdc.deposit_balance += scaled
        usdc.vault_amount += revenue
    for name, value in fund.items():
        setattr(usdc.insurance_fund, name, value)
    return World(program=Program(state))


def _send(world: World, signer: Any, *ixs: Any) -> Executed | Rejected:
    result = world.send(*ixs, signers=(signer,))
    world.advance(1, seconds=0)
    return result


def _ok(world: World, signer: Any, *ixs: Any) -> Executed:
    result = _send(world, signer, *ixs)
    assert isinstance(result, Executed), result
    return result


def _rejected(world: World, signer: Any, ix: Any, code: ErrorCode) -> None:
    before = state_hash(world.program.state, world.program.next_seq)
    result = _send(world, signer, ix)
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    assert state_hash(world.program.state, world.program.next_seq) == before


def _usdc(world: World) -> SpotMarket:
    return world.program.state.spot_markets[USDC]


def _settled(result: Executed) -> InsuranceFundRecord:
    records = [r.record for r in result.records if isinstance(r.record, InsuranceFundRecord)]
    assert len(records) == 1
    return records[0]


def _stake(world: World, amount: int) -> None:
    _ok(
        world,
        ALICE,
        InitializeInsuranceFundStake(ALICE.pubkey, USDC),
        AddInsuranceFundStake(ALICE.pubkey, USDC, amount),
    )


def test_settlement_is_hourly_on_the_hour_and_capped_for_stakers() -> None:
    # 100,000 USDC of revenue; Alice stakes 1,000,000 USDC in an hour already settled.
    world = _world(revenue=100_000 * Q, last_revenue_settle_ts=LAST_HOUR)
    _stake(world, 1_000_000 * Q)
    assert _usdc(world).insurance_fund.vault_amount == 1_000_000 * Q  # nothing was due

    # the next settlement is due on the next hour, 2800 s after START_TS
    world.advance(1, seconds=2_799)
    _rejected(
        world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.RevenueSettingsCannotSettleToIF
    )
    world.advance(1, seconds=1)
    # 1000% APR of 1,000,000e6 over 8760 hourly settlements: 1e13 / 8760 = 1,141,552,511.4
    # -> 1,141,552,511 (a tenth of the pool, 10,000e6, is more)
    record = _settled(_ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC)))
    first = 1_141_552_511
    assert (record.amount, record.vault_amount_before, record.insurance_vault_amount_before) == (
        first,
        100_000 * Q,
        1_000_000 * Q,
    )
    usdc = _usdc(world)
    assert usdc.insurance_fund.vault_amount == 1_000_000 * Q + first
    assert usdc.vault_amount == 100_000 * Q - first
    assert get_token_amount(usdc.revenue_pool.scaled_balance, usdc, DEPOSIT) == 100_000 * Q - first
    assert usdc.insurance_fund.last_revenue_settle_ts == LAST_HOUR + HOUR

    # at most once per hour
    world.advance(1, seconds=HOUR - 1)
    _rejected(
        world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.RevenueSettingsCannotSettleToIF
    )
    # a settlement 1300 s late (more than a third of the hour) moves the next one to the hour
    # after the next: two settlements are never less than two-thirds of an hour apart
    world.advance(1, seconds=1 + 1_300)
    record = _settled(_ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC)))
    # 1000% APR of the grown vault: 1,001,141,552,511 * 10 / 8760 = 1,142,855,653.5
    assert record.amount == 1_142_855_653
    world.advance(1, seconds=HOUR - 1_300)  # on the next hour: too soon
    _rejected(
        world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.RevenueSettingsCannotSettleToIF
    )
    world.advance(1, seconds=HOUR)
    _ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC))


def test_settlement_is_capped_at_a_tenth_of_the_pool_with_stakers() -> None:
    # 100 USDC of revenue and 1,000,000 USDC staked: the APR cap (1,141 USDC) is above a tenth
    # of the pool, so 10 USDC settles
    world = _world(revenue=100 * Q, last_revenue_settle_ts=LAST_HOUR)
    _stake(world, 1_000_000 * Q)
    world.advance(1, seconds=HOUR)
    assert _settled(_ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC))).amount == 10 * Q


def test_settlement_is_not_capped_without_stakers() -> None:
    world = _world(revenue=100_000 * Q)
    result = _ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC))
    assert _settled(result).amount == 100_000 * Q
    usdc = _usdc(world)
    assert (usdc.insurance_fund.vault_amount, usdc.vault_amount) == (100_000 * Q, 0)
    assert (usdc.revenue_pool.scaled_balance, usdc.deposit_balance) == (0, 0)
    # an empty revenue pool has nothing to settle, next hour
    world.advance(1, seconds=HOUR)
    _rejected(world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.NoRevenueToSettleToIF)


def test_the_protocol_takes_its_share_of_settled_revenue_as_shares() -> None:
    # total_factor 100%, user_factor 60%: 40% of each settlement is the protocol's. With
    # 1,000,000 USDC staked, 1,141,552,511 settles; the protocol's 456,621,004 (40%) buys
    # 456621004 * 1e12 / 1e12 = 456,621,004 shares at the price before the inflow.
    world = _world(revenue=100_000 * Q, last_revenue_settle_ts=LAST_HOUR)
    _ok(world, ADMIN, UpdateInsuranceFundFactors(USDC, 1_000_000, 600_000))
    _stake(world, 1_000_000 * Q)
    world.advance(1, seconds=HOUR)
    record = _settled(_ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC)))
    assert record.amount == 1_141_552_511
    assert (record.user_if_factor, record.total_if_factor) == (600_000, 1_000_000)
    fund = _usdc(world).insurance_fund
    assert (fund.total_shares, fund.user_shares) == (1_000_456_621_004, 1_000_000 * Q)
    assert record.total_if_shares_after == 1_000_456_621_004
    # the stakers' value: 1,001,141,552,511 * 1e12 / 1,000,456,621,004 = 1,000,684,618,895.3
    assert if_shares_to_vault_amount(1_000_000 * Q, fund.total_shares, fund.vault_amount) == (
        1_000_684_618_895
    )


def test_user_factor_may_not_exceed_total_factor() -> None:
    world = _world()
    # seed 002: user_if_factor <= total_if_factor (the program refuses with DefaultError)
    _rejected(
        world, ADMIN, UpdateInsuranceFundFactors(USDC, 100_000, 100_001), ErrorCode.DefaultError
    )
    _rejected(world, ADMIN, UpdateInsuranceFundFactors(USDC, 1_000_001, 0), ErrorCode.DefaultError)
    _rejected(
        world,
        KEEPER,
        UpdateInsuranceFundFactors(USDC, 100_000, 50_000),
        ErrorCode.UnauthorizedSigner,
    )
    _rejected(world, ADMIN, UpdateInsuranceFundFactors(9, 100_000, 50_000), ErrorCode.UnknownMarket)
    _ok(world, ADMIN, UpdateInsuranceFundFactors(USDC, 100_000, 100_000))
    fund = _usdc(world).insurance_fund
    assert (fund.total_factor, fund.user_factor) == (100_000, 100_000)


def test_settlement_refuses_a_market_without_a_period_or_with_bad_factors() -> None:
    world = _world(revenue=100 * Q, revenue_settle_period=0)
    _rejected(
        world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.RevenueSettingsCannotSettleToIF
    )
    world = _world(revenue=100 * Q, total_factor=1, user_factor=2)
    _rejected(
        world, KEEPER, SettleRevenueToInsuranceFund(USDC), ErrorCode.RevenueSettingsCannotSettleToIF
    )
    _rejected(world, KEEPER, SettleRevenueToInsuranceFund(7), ErrorCode.UnknownMarket)


def test_borrow_interest_reaches_the_insurance_fund_through_the_revenue_pool() -> None:
    # The insurance fund takes 10% of the interest depositors would earn. A lender deposits
    # 10,000 USDC, a borrower borrows 5,000 against 100 SOL; a day later the revenue pool
    # holds the fund's share, and a settlement moves exactly that to the fund.
    world = _world()
    _ok(world, ADMIN, UpdateInsuranceFundFactors(USDC, 100_000, 0))
    world.new_user(LENDER, usdc=10_000 * Q)
    world.new_user(BORROWER, sol=100 * SOL_UNIT)
    world.advance(1, seconds=0)
    _ok(world, BORROWER, Withdraw(BORROWER.pubkey, 0, USDC, 5_000 * Q))
    world.advance(1, seconds=86_400)
    world.set_price("SOL/USD", 100 * PRICE_PRECISION)  # a fresh oracle for the day
    _ok(world, LENDER, Deposit(LENDER.pubkey, 0, USDC, Q))  # accrues the day's interest
    usdc = _usdc(world)
    revenue = get_token_amount(usdc.revenue_pool.scaled_balance, usdc, DEPOSIT)
    assert revenue > 0
    # the fund's share is 10% of the depositors' interest: lenders got the other 90% (up to
    # the truncation of the index split and of the token amounts: within 0.01%)
    lender_tokens = get_token_amount(
        world.program.state.users[(LENDER.pubkey, 0)].spot_positions[0].scaled_balance,
        usdc,
        DEPOSIT,
    )
    lender_interest = lender_tokens - 10_001 * Q
    assert lender_interest > 0
    assert abs(lender_interest - 9 * revenue) <= lender_interest // 10_000
    tokens_before = usdc.vault_amount + usdc.insurance_fund.vault_amount

    record = _settled(_ok(world, KEEPER, SettleRevenueToInsuranceFund(USDC)))
    assert record.amount == revenue
    usdc = _usdc(world)
    assert usdc.insurance_fund.vault_amount == revenue
    assert usdc.vault_amount + usdc.insurance_fund.vault_amount == tokens_before
    assert usdc.revenue_pool.scaled_balance == 0
