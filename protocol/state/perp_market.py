"""Perp markets and the state of their virtual AMM.

The AMM's pricing and swap math lives in :mod:`protocol.math` (amm modules); here is only
its state, with the program's field names and units:

* reserves, ``sqrt_k``: AMM_RESERVE_PRECISION (1e9); ``peg_multiplier``: PEG_PRECISION (1e6)
* ``base_asset_amount_*``: BASE_PRECISION; ``quote_*`` amounts: QUOTE_PRECISION
* funding rates: FUNDING_RATE_PRECISION (1e9); cumulative rates are per base unit
* spreads: BID_ASK_SPREAD_PRECISION (1e6); margin ratios: MARGIN_PRECISION (1e4)

Invariant: ``base_asset_amount_long + base_asset_amount_short`` equals the sum of all users'
perp base positions, and equals ``base_asset_amount_with_amm`` (the part the AMM itself is the
other side of) plus ``base_asset_amount_with_unsettled_lp`` (the part BAL providers took on and
have not settled; see :mod:`protocol.controller.lp`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MARGIN_PRECISION,
    ONE_HOUR,
    PEG_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.state.copying import shallow_copy
from protocol.state.oracle import HistoricalOracleData
from protocol.state.spot_market import PoolBalance
from protocol.types import ContractTier, ContractType, MarketStatus, OracleSource


@dataclass(slots=True)
class AMM:
    oracle: str  # oracle id
    oracle_source: OracleSource = OracleSource.Pyth
    historical_oracle_data: HistoricalOracleData = field(default_factory=HistoricalOracleData)

    # curve
    base_asset_reserve: int = 1_000 * AMM_RESERVE_PRECISION
    quote_asset_reserve: int = 1_000 * AMM_RESERVE_PRECISION
    sqrt_k: int = 1_000 * AMM_RESERVE_PRECISION
    peg_multiplier: int = PEG_PRECISION
    terminal_quote_asset_reserve: int = 1_000 * AMM_RESERVE_PRECISION
    concentration_coef: int = 0
    min_base_asset_reserve: int = 0
    max_base_asset_reserve: int = 0
    ask_base_asset_reserve: int = 0
    ask_quote_asset_reserve: int = 0
    bid_base_asset_reserve: int = 0
    bid_quote_asset_reserve: int = 0

    # open interest and the AMM's own position
    base_asset_amount_long: int = 0
    base_asset_amount_short: int = 0
    base_asset_amount_with_amm: int = 0
    base_asset_amount_with_unsettled_lp: int = 0
    max_open_interest: int = 0
    quote_asset_amount: int = 0
    quote_entry_amount_long: int = 0
    quote_entry_amount_short: int = 0
    quote_break_even_amount_long: int = 0
    quote_break_even_amount_short: int = 0

    # BAL (LP) providers
    user_lp_shares: int = 0
    base_asset_amount_per_lp: int = 0
    quote_asset_amount_per_lp: int = 0

    # funding
    last_funding_rate: int = 0
    last_funding_rate_long: int = 0
    last_funding_rate_short: int = 0
    last_24h_avg_funding_rate: int = 0
    cumulative_funding_rate_long: int = 0
    cumulative_funding_rate_short: int = 0
    last_funding_rate_ts: int = 0
    funding_period: int = ONE_HOUR
    net_revenue_since_last_funding: int = 0
    last_funding_oracle_twap: int = 0
    net_unsettled_funding_pnl: int = 0  # QUOTE; users' accrued, unsettled funding (-: they owe)

    # fees
    fee_pool: PoolBalance = field(default_factory=PoolBalance)
    total_fee: int = 0
    total_mm_fee: int = 0
    total_exchange_fee: int = 0
    total_fee_minus_distributions: int = 0
    total_fee_withdrawn: int = 0
    total_liquidation_fee: int = 0
    total_social_loss: int = 0

    # prices and TWAPs (PRICE_PRECISION)
    last_oracle_normalised_price: int = 0
    last_oracle_reserve_price_spread_pct: int = 0
    last_bid_price_twap: int = 0
    last_ask_price_twap: int = 0
    last_mark_price_twap: int = 0
    last_mark_price_twap_5min: int = 0
    last_mark_price_twap_ts: int = 0
    last_update_slot: int = 0
    last_oracle_conf_pct: int = 0
    last_oracle_valid: bool = True
    last_trade_ts: int = 0
    mark_std: int = 0
    oracle_std: int = 0
    volume_24h: int = 0
    long_intensity_volume: int = 0
    short_intensity_volume: int = 0

    # orders
    order_step_size: int = 1
    order_tick_size: int = 1
    min_order_size: int = 1

    # spreads (BID_ASK_SPREAD_PRECISION)
    base_spread: int = 0
    max_spread: int = 0
    long_spread: int = 0
    short_spread: int = 0
    max_fill_reserve_fraction: int = 100
    max_slippage_ratio: int = 50
    curve_update_intensity: int = 0
    amm_jit_intensity: int = 0
    # admin skews (percent, i8): scale both spreads / the inventory spread term by +-n%
    amm_spread_adjustment: int = 0
    amm_inventory_spread_adjustment: int = 0
    # the quotes' offset from the reserve price (BID_ASK_SPREAD_PRECISION, i32); nonzero only
    # when curve_update_intensity > 100; inventory below this percent of liquidity gets none
    reference_price_offset: int = 0
    reference_price_offset_deadband_pct: int = 0

    def clone(self) -> AMM:
        new = shallow_copy(self)
        new.historical_oracle_data = self.historical_oracle_data.clone()
        new.fee_pool = self.fee_pool.clone()
        return new


@dataclass(slots=True)
class InsuranceClaim:
    """How much a perp market may draw from the revenue pool and the insurance fund."""

    revenue_withdraw_since_last_settle: int = 0
    max_revenue_withdraw_per_period: int = 0
    quote_max_insurance: int = 0
    quote_settled_insurance: int = 0
    last_revenue_withdraw_ts: int = 0

    def clone(self) -> InsuranceClaim:
        return shallow_copy(self)


@dataclass(slots=True)
class PerpMarket:
    market_index: int
    name: str
    amm: AMM
    status: MarketStatus = MarketStatus.Active
    contract_type: ContractType = ContractType.Perpetual
    contract_tier: ContractTier = ContractTier.A
    quote_spot_market_index: int = 0

    margin_ratio_initial: int = MARGIN_PRECISION // 10  # 10x
    margin_ratio_maintenance: int = MARGIN_PRECISION // 20  # 20x
    imf_factor: int = 0  # SPOT_IMF_PRECISION
    unrealized_pnl_initial_asset_weight: int = SPOT_WEIGHT_PRECISION
    unrealized_pnl_maintenance_asset_weight: int = SPOT_WEIGHT_PRECISION
    unrealized_pnl_imf_factor: int = 0
    unrealized_pnl_max_imbalance: int = 0
    liquidator_fee: int = 0
    if_liquidation_fee: int = 0

    pnl_pool: PoolBalance = field(default_factory=PoolBalance)
    insurance_claim: InsuranceClaim = field(default_factory=InsuranceClaim)

    number_of_users_with_base: int = 0
    number_of_users: int = 0
    expiry_ts: int = 0
    expiry_price: int = 0
    fee_adjustment: int = 0
    last_fill_price: int = 0  # PRICE_PRECISION, the average price of the last fill
    next_fill_record_id: int = 1
    next_funding_rate_record_id: int = 1
    next_curve_record_id: int = 1

    def clone(self) -> PerpMarket:
        new = shallow_copy(self)
        new.amm = self.amm.clone()
        new.pnl_pool = self.pnl_pool.clone()
        new.insurance_claim = self.insurance_claim.clone()
        return new
