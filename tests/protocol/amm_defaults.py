"""The program's ``AMM::default()`` / ``PerpMarket::default()`` and its ``default_test`` and
``default_btc_test`` constructors, so the program's unit-test vectors can be replayed.

The model's own dataclass defaults describe a usable market (1000-unit reserves, hourly
funding, an active tier-A market); the program's ``Default`` zeroes nearly everything and its
tests rely on that (a zero ``funding_period``, a ``HighlySpeculative`` tier, ``Initialized``
status), so the vectors are replayed on these instead.
"""

from __future__ import annotations

from typing import Any

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    PEG_PRECISION,
    PRICE_PRECISION,
)
from protocol.numeric import U64_MAX
from protocol.state import AMM, HistoricalOracleData, PerpMarket
from protocol.types import ContractTier, MarketStatus

_PROGRAM_AMM_DEFAULTS: dict[str, Any] = {
    "base_asset_reserve": 0,
    "quote_asset_reserve": 0,
    "sqrt_k": 0,
    "peg_multiplier": 0,
    "terminal_quote_asset_reserve": 0,
    "funding_period": 0,
    "order_step_size": 0,
    "order_tick_size": 0,
    "min_order_size": 1,
    "max_fill_reserve_fraction": 0,
    "max_slippage_ratio": 0,
    "last_oracle_valid": False,
}


def program_amm(**overrides: Any) -> AMM:
    """``AMM { ..., ..AMM::default() }``."""
    fields = {**_PROGRAM_AMM_DEFAULTS, **overrides}
    hod = fields.pop("historical_oracle_data", None) or HistoricalOracleData()
    return AMM(oracle="TEST/USD", historical_oracle_data=hod, **fields)


def program_market(amm: AMM, **overrides: Any) -> PerpMarket:
    """``PerpMarket { amm, ..., ..PerpMarket::default() }``."""
    fields: dict[str, Any] = {
        "status": MarketStatus.Initialized,
        "contract_tier": ContractTier.HighlySpeculative,
        "margin_ratio_initial": 0,
        "margin_ratio_maintenance": 0,
        "unrealized_pnl_initial_asset_weight": 0,
        "unrealized_pnl_maintenance_asset_weight": 0,
        "next_fill_record_id": 0,
        "next_funding_rate_record_id": 0,
        "next_curve_record_id": 0,
        **overrides,
    }
    return PerpMarket(market_index=0, name="TEST-PERP", amm=amm, **fields)


def default_test_amm(**overrides: Any) -> AMM:
    """``AMM::default_test()``: a balanced 100-unit curve at $1."""
    reserves = 100 * AMM_RESERVE_PRECISION
    fields: dict[str, Any] = {
        "base_asset_reserve": reserves,
        "quote_asset_reserve": reserves,
        "sqrt_k": reserves,
        "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        "order_step_size": 1,
        "order_tick_size": 1,
        "max_base_asset_reserve": U64_MAX,
        "min_base_asset_reserve": 0,
        "terminal_quote_asset_reserve": reserves,
        "peg_multiplier": PEG_PRECISION,
        "max_fill_reserve_fraction": 1,
        "max_spread": 1000,
        "historical_oracle_data": HistoricalOracleData(last_oracle_price=PRICE_PRECISION),
        "last_oracle_valid": True,
        **overrides,
    }
    return program_amm(**fields)


def default_btc_test_market() -> PerpMarket:
    """``PerpMarket::default_btc_test()``: users net short 1 BTC against a $19,400 peg."""
    amm = program_amm(
        base_asset_reserve=65 * AMM_RESERVE_PRECISION,
        quote_asset_reserve=63015384615,
        terminal_quote_asset_reserve=64 * AMM_RESERVE_PRECISION,
        sqrt_k=64 * AMM_RESERVE_PRECISION,
        peg_multiplier=19_400_000_000,
        concentration_coef=MAX_CONCENTRATION_COEFFICIENT,
        max_base_asset_reserve=90 * AMM_RESERVE_PRECISION,
        min_base_asset_reserve=45 * AMM_RESERVE_PRECISION,
        base_asset_amount_with_amm=-AMM_RESERVE_PRECISION,
        mark_std=PRICE_PRECISION,
        quote_asset_amount=19_000_000_000,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=19_400 * PRICE_PRECISION,
            last_oracle_price_twap=19_400 * PRICE_PRECISION,
            last_oracle_price_twap_5min=19_400 * PRICE_PRECISION,
            last_oracle_price_twap_ts=1662800000,
        ),
        last_mark_price_twap_ts=1662800000,
        curve_update_intensity=100,
        base_spread=250,
        max_spread=975,
        funding_period=3600,
        last_oracle_valid=True,
    )
    return program_market(amm, margin_ratio_initial=1000, margin_ratio_maintenance=500)
