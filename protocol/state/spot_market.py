"""Spot markets: balances, interest, weights, guards, revenue pool and insurance fund.

Balances are *scaled* (SPOT_BALANCE_PRECISION); token amounts are
``scaled_balance * cumulative_interest / SPOT_CUMULATIVE_INTEREST_PRECISION`` scaled to the
mint's decimals (see :func:`protocol.math.spot_balance.get_token_amount`).

Invariant kept by every instruction: ``vault_amount`` (tokens the program holds) is at least
``deposit tokens - borrow tokens``; the sum of the users' scaled deposit balances equals
``deposit_balance`` and the same for borrows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.constants import (
    ONE_HOUR,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
    SPOT_WEIGHT_PRECISION,
    THIRTEEN_DAY,
)
from protocol.state.copying import shallow_copy
from protocol.state.oracle import HistoricalIndexData, HistoricalOracleData
from protocol.types import AssetTier, MarketStatus, OracleSource


@dataclass(slots=True)
class PoolBalance:
    """A balance the program holds inside a spot market (scaled like a user deposit)."""

    scaled_balance: int = 0
    market_index: int = 0

    def clone(self) -> PoolBalance:
        return PoolBalance(self.scaled_balance, self.market_index)


@dataclass(slots=True)
class InsuranceFund:
    """The market's insurance fund: shares over a vault of the market's token."""

    vault_amount: int = 0  # tokens in the insurance fund vault
    total_shares: int = 0
    user_shares: int = 0
    shares_base: int = 0  # exponent for share rebasing
    unstaking_period: int = THIRTEEN_DAY  # seconds
    last_revenue_settle_ts: int = 0
    revenue_settle_period: int = ONE_HOUR  # seconds
    total_factor: int = 0  # share of borrow interest to the revenue pool (IF_FACTOR_PRECISION)
    user_factor: int = 0  # part of total_factor reserved for stakers (<= total_factor)

    def clone(self) -> InsuranceFund:
        return shallow_copy(self)


@dataclass(slots=True)
class SpotMarket:
    market_index: int
    name: str
    oracle: str  # oracle id
    decimals: int  # the mint's decimals
    oracle_source: OracleSource = OracleSource.Pyth
    status: MarketStatus = MarketStatus.Active
    asset_tier: AssetTier = AssetTier.Collateral
    orders_enabled: bool = True

    historical_oracle_data: HistoricalOracleData = field(default_factory=HistoricalOracleData)
    historical_index_data: HistoricalIndexData = field(default_factory=HistoricalIndexData)

    # balances (SPOT_BALANCE_PRECISION) and interest indices (SPOT_CUMULATIVE_INTEREST_PRECISION)
    deposit_balance: int = 0
    borrow_balance: int = 0
    cumulative_deposit_interest: int = SPOT_CUMULATIVE_INTEREST_PRECISION
    cumulative_borrow_interest: int = SPOT_CUMULATIVE_INTEREST_PRECISION
    total_social_loss: int = 0
    total_quote_social_loss: int = 0
    vault_amount: int = 0  # tokens held by the program for this market

    # interest-rate curve (SPOT_UTILIZATION_PRECISION / SPOT_RATE_PRECISION)
    optimal_utilization: int = 800_000
    optimal_borrow_rate: int = 100_000
    max_borrow_rate: int = 1_000_000
    min_borrow_rate: int = 0  # in 0.5% steps as the program's u8 (value * 5000 = rate)
    last_interest_ts: int = 0
    last_twap_ts: int = 0

    # token TWAPs the guards read (token amounts) and the utilization TWAP
    deposit_token_twap: int = 0
    borrow_token_twap: int = 0
    utilization_twap: int = 0

    # margin weights (SPOT_WEIGHT_PRECISION) and the IMF size factor (SPOT_IMF_PRECISION)
    initial_asset_weight: int = SPOT_WEIGHT_PRECISION
    maintenance_asset_weight: int = SPOT_WEIGHT_PRECISION
    initial_liability_weight: int = SPOT_WEIGHT_PRECISION
    maintenance_liability_weight: int = SPOT_WEIGHT_PRECISION
    imf_factor: int = 0
    scale_initial_asset_weight_start: int = 0  # QUOTE_PRECISION deposit notional; 0 = off

    # liquidation
    liquidator_fee: int = 0  # LIQUIDATION_FEE_PRECISION
    if_liquidation_fee: int = 0

    # withdraw / borrow guards (seed 001). Token amounts are in the mint's precision.
    withdraw_guard_threshold: int = 0
    # after a withdraw, total deposits stay >= this share of the 1-day deposit EMA (80%)
    withdraw_limit_deposit_twap_pct: int = 800_000  # PERCENTAGE_PRECISION
    # borrows may grow to this multiple of the 1-day borrow EMA (1.2x) ...
    borrow_limit_borrow_twap_multiple: int = 1_200_000  # PERCENTAGE_PRECISION
    # ... once utilization is above this floor (15%); below it borrows are not limited
    borrow_limit_utilization_floor: int = 150_000  # SPOT_UTILIZATION_PRECISION
    # ... and never past this utilization (90%)
    borrow_limit_max_utilization: int = 900_000  # SPOT_UTILIZATION_PRECISION
    # a position smaller than withdraw_guard_threshold / this is exempt from the global limits
    small_account_exemption_divisor: int = 10
    max_token_deposits: int = 0  # 0 = no cap
    max_token_borrows_fraction: int = 0  # of max_token_deposits, 1e4; 0 = no cap

    # orders
    order_step_size: int = 1
    order_tick_size: int = 1
    min_order_size: int = 1
    max_position_size: int = 0
    fee_adjustment: int = 0
    expiry_ts: int = 0

    # revenue and insurance
    revenue_pool: PoolBalance = field(default_factory=PoolBalance)
    spot_fee_pool: PoolBalance = field(default_factory=PoolBalance)
    insurance_fund: InsuranceFund = field(default_factory=InsuranceFund)
    total_spot_fee: int = 0

    next_deposit_record_id: int = 1
    next_fill_record_id: int = 1

    def clone(self) -> SpotMarket:
        new = shallow_copy(self)
        new.historical_oracle_data = self.historical_oracle_data.clone()
        new.historical_index_data = self.historical_index_data.clone()
        new.revenue_pool = self.revenue_pool.clone()
        new.spot_fee_pool = self.spot_fee_pool.clone()
        new.insurance_fund = self.insurance_fund.clone()
        return new

    def get_precision(self) -> int:
        """10 ** decimals: one whole token in the mint's units."""
        return int(10**self.decimals)

    def is_operation_paused(self) -> bool:
        return self.status in (MarketStatus.WithdrawPaused, MarketStatus.Delisted)

    def get_min_borrow_rate(self) -> int:
        """``min_borrow_rate`` in SPOT_RATE_PRECISION (each unit is 0.5%)."""
        return self.min_borrow_rate * 5_000

    def get_sanitize_clamp_denominator(self) -> int | None:
        """How far (1/n of the TWAP) one oracle update may move the oracle TWAPs; ``None`` means
        the AMM default (``DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR``)."""
        return {
            AssetTier.Collateral: 10,
            AssetTier.Protected: 10,
            AssetTier.Cross: 5,
            AssetTier.Isolated: 3,
        }.get(self.asset_tier)
