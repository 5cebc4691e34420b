"""The default market table: the seed's 12 spot assets, three perps, their oracles.

Spot margin parameters are seed 003's table exactly (weights in SPOT_WEIGHT_PRECISION, IMF
factors in SPOT_IMF_PRECISION: 0.003 -> 3_000). Market index 0 is USDC, the quote asset, priced
by ``OracleSource.QuoteAsset`` (a fixed $1). Decimals are the real mints'. The seed marks the
initial asset weight of every non-stable asset with an asterisk ("scaled lower based on notional
value of total deposits"): those markets get a ``scale_initial_asset_weight_start``, so the
table's weight is the *base* weight and applies until the market's deposits are worth more than
that notional (see :func:`protocol.math.margin.get_scaled_initial_asset_weight`).

Not from the seed, chosen here and only defaults: the scaling notionals, asset tiers, oracle
ids and prices, liquidation fees, order step/tick sizes, and everything about the perps
(10x initial / 20x maintenance, IMF, AMM depth). Each AMM starts balanced
(``base_asset_reserve == quote_asset_reserve == sqrt_k``) with its peg at the oracle price, so
its reserve price equals the oracle price; PEG_PRECISION equals PRICE_PRECISION, so the peg is
the price itself.

Prices are keyed by oracle id (``"SOL/USD"``), in PRICE_PRECISION; ``prices`` arguments override
:data:`DEFAULT_PRICES` key by key. Perps share the spot oracles (``BTC-PERP`` and wBTC both read
``"BTC/USD"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocol.accounts import ProgramState
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    CONCENTRATION_PRECISION,
    LIQUIDATION_FEE_PRECISION,
    MARGIN_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_WEIGHT_PRECISION,
)
from protocol.numeric import div_trunc
from protocol.state import (
    AMM,
    HistoricalIndexData,
    HistoricalOracleData,
    InsuranceClaim,
    OracleAccount,
    PerpMarket,
    SpotMarket,
    State,
)
from protocol.types import AssetTier, ContractTier, OracleSource

__all__ = [
    "DEFAULT_PERP_MARKET_CONFIGS",
    "DEFAULT_PRICES",
    "DEFAULT_SPOT_MARKET_CONFIGS",
    "PerpMarketConfig",
    "SpotMarketConfig",
    "default_oracles",
    "default_perp_markets",
    "default_program_state",
    "default_spot_markets",
]

_W = SPOT_WEIGHT_PRECISION // 100  # one percentage point of weight
_MILLION_QUOTE = 1_000_000 * QUOTE_PRECISION


@dataclass(frozen=True, slots=True)
class SpotMarketConfig:
    """One row of the spot table. Weights SPOT_WEIGHT_PRECISION; ``imf_factor``
    SPOT_IMF_PRECISION; ``scale_initial_asset_weight_start`` QUOTE_PRECISION (0 = no scaling);
    fees LIQUIDATION_FEE_PRECISION; step/min sizes in mint units; tick in PRICE_PRECISION."""

    name: str
    oracle: str
    decimals: int
    initial_asset_weight: int
    maintenance_asset_weight: int
    initial_liability_weight: int
    maintenance_liability_weight: int
    imf_factor: int
    scale_initial_asset_weight_start: int
    oracle_source: OracleSource
    asset_tier: AssetTier
    liquidator_fee: int
    if_liquidation_fee: int
    order_step_size: int
    order_tick_size: int


def _spot(
    name: str,
    oracle: str,
    decimals: int,
    weights_pct: tuple[int, int, int, int],
    imf_factor: int,
    scale_start_millions: int,
    oracle_source: OracleSource,
    asset_tier: AssetTier,
    fee_bps: int,
    step_size: int,
    tick_size: int,
) -> SpotMarketConfig:
    iaw, maw, ilw, mlw = (w * _W for w in weights_pct)
    fee = fee_bps * LIQUIDATION_FEE_PRECISION // 10_000
    return SpotMarketConfig(
        name=name,
        oracle=oracle,
        decimals=decimals,
        initial_asset_weight=iaw,
        maintenance_asset_weight=maw,
        initial_liability_weight=ilw,
        maintenance_liability_weight=mlw,
        imf_factor=imf_factor,
        scale_initial_asset_weight_start=scale_start_millions * _MILLION_QUOTE,
        oracle_source=oracle_source,
        asset_tier=asset_tier,
        liquidator_fee=fee,
        if_liquidation_fee=fee,
        order_step_size=step_size,
        order_tick_size=tick_size,
    )


_Q = OracleSource.QuoteAsset
_P = OracleSource.Pyth
_S = OracleSource.PythStableCoin
_COL = AssetTier.Collateral
_PRO = AssetTier.Protected
_CRO = AssetTier.Cross

# Columns: name, oracle, decimals, (initial asset, maintenance asset, initial liability,
# maintenance liability weight in %), imf_factor (SPOT_IMF_PRECISION), deposit notional in $M
# above which the initial asset weight scales down (0 = the seed has no asterisk), oracle
# source, asset tier, liquidator and insurance-fund liquidation fee (bps each), order step size
# (mint units), order tick size (PRICE_PRECISION). Index in the tuple = market index.
DEFAULT_SPOT_MARKET_CONFIGS: tuple[SpotMarketConfig, ...] = (
    _spot("USDC", "USDC/USD", 6, (100, 100, 100, 100), 0, 0, _Q, _COL, 0, 1, 1),
    _spot("SOL", "SOL/USD", 9, (80, 90, 120, 110), 3_000, 50, _P, _PRO, 100, 10**6, 100),
    _spot("mSOL", "MSOL/USD", 9, (80, 90, 120, 110), 3_000, 10, _P, _PRO, 100, 10**6, 100),
    _spot("wBTC", "BTC/USD", 8, (80, 90, 120, 110), 105_000, 10, _P, _PRO, 100, 10**3, 10**5),
    _spot("wETH", "ETH/USD", 8, (80, 90, 120, 110), 25_000, 10, _P, _PRO, 100, 10**4, 10**4),
    _spot("USDT", "USDT/USD", 6, (90, 95, 110, 105), 400, 0, _S, _COL, 50, 10**4, 100),
    _spot("JitoSOL", "JITOSOL/USD", 9, (80, 90, 120, 110), 550, 10, _P, _PRO, 100, 10**6, 100),
    _spot("PYTH", "PYTH/USD", 6, (50, 75, 150, 125), 550, 1, _P, _CRO, 200, 10**5, 10),
    _spot("bSOL", "BSOL/USD", 9, (80, 90, 120, 110), 550, 10, _P, _PRO, 100, 10**6, 100),
    _spot("JTO", "JTO/USD", 9, (50, 75, 150, 125), 550, 1, _P, _CRO, 200, 10**8, 100),
    _spot("WIF", "WIF/USD", 6, (25, 50, 175, 150), 550, 1, _P, _CRO, 200, 10**5, 100),
    _spot("JUP", "JUP/USD", 6, (50, 75, 150, 125), 550, 1, _P, _CRO, 200, 10**5, 10),
)


@dataclass(frozen=True, slots=True)
class PerpMarketConfig:
    """A default perp. Margin ratios MARGIN_PRECISION; IMF factors SPOT_IMF_PRECISION;
    ``amm_base_reserve`` whole base units of depth (times AMM_RESERVE_PRECISION = ``sqrt_k``);
    step/min sizes BASE_PRECISION; tick PRICE_PRECISION; spreads BID_ASK_SPREAD_PRECISION."""

    name: str
    oracle: str
    margin_ratio_initial: int
    margin_ratio_maintenance: int
    imf_factor: int
    amm_base_reserve: int
    order_step_size: int
    order_tick_size: int
    base_spread: int
    max_spread: int
    contract_tier: ContractTier = ContractTier.A


# 10x initial, 20x maintenance. The IMF premium (starting from 80% of the ratio) overtakes the
# plain ratio once sqrt(size) * imf exceeds 20% of it: ~400 SOL at imf 1000 (0.1%), ~1,600
# BTC/ETH at imf 500. AMM depth moves the price ~1% for ~$750k at the default prices.
DEFAULT_PERP_MARKET_CONFIGS: tuple[PerpMarketConfig, ...] = (
    PerpMarketConfig(
        name="SOL-PERP",
        oracle="SOL/USD",
        margin_ratio_initial=MARGIN_PRECISION // 10,
        margin_ratio_maintenance=MARGIN_PRECISION // 20,
        imf_factor=1_000,
        amm_base_reserve=1_000_000,
        order_step_size=BASE_PRECISION // 100,
        order_tick_size=100,
        base_spread=500,
        max_spread=20_000,
    ),
    PerpMarketConfig(
        name="BTC-PERP",
        oracle="BTC/USD",
        margin_ratio_initial=MARGIN_PRECISION // 10,
        margin_ratio_maintenance=MARGIN_PRECISION // 20,
        imf_factor=500,
        amm_base_reserve=2_500,
        order_step_size=BASE_PRECISION // 10_000,
        order_tick_size=PRICE_PRECISION // 10,
        base_spread=500,
        max_spread=20_000,
    ),
    PerpMarketConfig(
        name="ETH-PERP",
        oracle="ETH/USD",
        margin_ratio_initial=MARGIN_PRECISION // 10,
        margin_ratio_maintenance=MARGIN_PRECISION // 20,
        imf_factor=500,
        amm_base_reserve=50_000,
        order_step_size=BASE_PRECISION // 1_000,
        order_tick_size=PRICE_PRECISION // 100,
        base_spread=500,
        max_spread=20_000,
    ),
)

DEFAULT_PRICES: Mapping[str, int] = {
    "USDC/USD": PRICE_PRECISION,
    "SOL/USD": 150 * PRICE_PRECISION,
    "MSOL/USD": 180 * PRICE_PRECISION,
    "BTC/USD": 60_000 * PRICE_PRECISION,
    "ETH/USD": 3_000 * PRICE_PRECISION,
    "USDT/USD": PRICE_PRECISION,
    "JITOSOL/USD": 170 * PRICE_PRECISION,
    "PYTH/USD": 400_000,  # $0.40
    "BSOL/USD": 175 * PRICE_PRECISION,
    "JTO/USD": 3 * PRICE_PRECISION,
    "WIF/USD": 2_500_000,  # $2.50
    "JUP/USD": PRICE_PRECISION,
}

# Confidence published with each default price, as a fraction of it: 1 bp, far inside the
# guard rails' 2% (Collateral/Protected tiers).
_CONFIDENCE_DIVISOR = 10_000


def _merged_prices(prices: Mapping[str, int] | None) -> dict[str, int]:
    merged = dict(DEFAULT_PRICES)
    if prices:
        merged.update(prices)
    return merged


def default_spot_markets(
    now: int, prices: Mapping[str, int] | None = None
) -> dict[int, SpotMarket]:
    """Fresh spot markets (no deposits) keyed by market index, with oracle and index history
    seeded at each market's price as of unix time ``now``."""
    price_of = _merged_prices(prices)
    markets: dict[int, SpotMarket] = {}
    for market_index, cfg in enumerate(DEFAULT_SPOT_MARKET_CONFIGS):
        price = (
            PRICE_PRECISION
            if cfg.oracle_source == OracleSource.QuoteAsset
            else price_of[cfg.oracle]
        )
        markets[market_index] = SpotMarket(
            market_index=market_index,
            name=cfg.name,
            oracle=cfg.oracle,
            decimals=cfg.decimals,
            oracle_source=cfg.oracle_source,
            asset_tier=cfg.asset_tier,
            # the quote asset is what spot orders are priced in; it has no order book of its own
            orders_enabled=market_index != QUOTE_SPOT_MARKET_INDEX,
            historical_oracle_data=HistoricalOracleData.seeded(price, now),
            historical_index_data=HistoricalIndexData(price, price, price, price, now),
            last_interest_ts=now,
            last_twap_ts=now,
            initial_asset_weight=cfg.initial_asset_weight,
            maintenance_asset_weight=cfg.maintenance_asset_weight,
            initial_liability_weight=cfg.initial_liability_weight,
            maintenance_liability_weight=cfg.maintenance_liability_weight,
            imf_factor=cfg.imf_factor,
            scale_initial_asset_weight_start=cfg.scale_initial_asset_weight_start,
            liquidator_fee=cfg.liquidator_fee,
            if_liquidation_fee=cfg.if_liquidation_fee,
            order_step_size=cfg.order_step_size,
            order_tick_size=cfg.order_tick_size,
            min_order_size=cfg.order_step_size,
            withdraw_guard_threshold=_tokens_for_notional(
                DEFAULT_WITHDRAW_GUARD_NOTIONAL, price, cfg.decimals
            ),
        )
    return markets


# Withdrawals and borrows below this notional never trip the global guards (seed 001 only
# bounds "sizes above the withdraw_guard_threshold"); it lets a fresh market, whose deposit and
# borrow EMAs start at zero, take its first borrows.
DEFAULT_WITHDRAW_GUARD_NOTIONAL = 100_000 * QUOTE_PRECISION


def _tokens_for_notional(notional: int, price: int, decimals: int) -> int:
    """Tokens (mint units) worth ``notional`` (QUOTE_PRECISION) at ``price`` (PRICE_PRECISION)."""
    return div_trunc(notional * 10**decimals, price)


def _default_amm(cfg: PerpMarketConfig, price: int, now: int, slot: int) -> AMM:
    reserve = cfg.amm_base_reserve * AMM_RESERVE_PRECISION
    # the program's calculate_bid_ask_bounds: reserves may swing by the concentration factor
    min_base_asset_reserve = div_trunc(
        reserve * CONCENTRATION_PRECISION, MAX_CONCENTRATION_COEFFICIENT
    )
    max_base_asset_reserve = div_trunc(
        reserve * MAX_CONCENTRATION_COEFFICIENT, CONCENTRATION_PRECISION
    )
    return AMM(
        oracle=cfg.oracle,
        oracle_source=OracleSource.Pyth,
        historical_oracle_data=HistoricalOracleData.seeded(price, now),
        base_asset_reserve=reserve,
        quote_asset_reserve=reserve,
        sqrt_k=reserve,
        peg_multiplier=price,
        terminal_quote_asset_reserve=reserve,
        concentration_coef=MAX_CONCENTRATION_COEFFICIENT,
        min_base_asset_reserve=min_base_asset_reserve,
        max_base_asset_reserve=max_base_asset_reserve,
        ask_base_asset_reserve=reserve,
        ask_quote_asset_reserve=reserve,
        bid_base_asset_reserve=reserve,
        bid_quote_asset_reserve=reserve,
        last_funding_rate_ts=now,
        last_funding_oracle_twap=price,
        last_oracle_normalised_price=price,
        last_bid_price_twap=price,
        last_ask_price_twap=price,
        last_mark_price_twap=price,
        last_mark_price_twap_5min=price,
        last_mark_price_twap_ts=now,
        last_update_slot=slot,
        order_step_size=cfg.order_step_size,
        order_tick_size=cfg.order_tick_size,
        min_order_size=cfg.order_step_size,
        base_spread=cfg.base_spread,
        max_spread=cfg.max_spread,
    )


def default_perp_markets(
    now: int, prices: Mapping[str, int] | None = None, slot: int = 0
) -> dict[int, PerpMarket]:
    """Fresh perp markets keyed by market index, each AMM pegged at its oracle price."""
    price_of = _merged_prices(prices)
    markets: dict[int, PerpMarket] = {}
    for market_index, cfg in enumerate(DEFAULT_PERP_MARKET_CONFIGS):
        fee = LIQUIDATION_FEE_PRECISION // 100  # 1%, below the 5% maintenance margin
        markets[market_index] = PerpMarket(
            market_index=market_index,
            name=cfg.name,
            amm=_default_amm(cfg, price_of[cfg.oracle], now, slot),
            contract_tier=cfg.contract_tier,
            quote_spot_market_index=QUOTE_SPOT_MARKET_INDEX,
            margin_ratio_initial=cfg.margin_ratio_initial,
            margin_ratio_maintenance=cfg.margin_ratio_maintenance,
            imf_factor=cfg.imf_factor,
            unrealized_pnl_initial_asset_weight=SPOT_WEIGHT_PRECISION,
            unrealized_pnl_maintenance_asset_weight=SPOT_WEIGHT_PRECISION,
            unrealized_pnl_imf_factor=cfg.imf_factor,
            liquidator_fee=fee,
            if_liquidation_fee=fee,
            insurance_claim=InsuranceClaim(
                max_revenue_withdraw_per_period=10_000 * QUOTE_PRECISION,
                quote_max_insurance=100_000 * QUOTE_PRECISION,
                last_revenue_withdraw_ts=now,
            ),
        )
    return markets


def default_oracles(slot: int, prices: Mapping[str, int] | None = None) -> dict[str, OracleAccount]:
    """One oracle per id in :data:`DEFAULT_PRICES` (plus any extra ids in ``prices``), published
    at ``slot`` with a 1 bp confidence. ``"USDC/USD"`` is included for readers that look it up,
    although margin prices USDC through ``OracleSource.QuoteAsset``."""
    return {
        oracle_id: OracleAccount(
            oracle_id=oracle_id,
            price=price,
            confidence=max(div_trunc(price, _CONFIDENCE_DIVISOR), 1),
            publish_slot=slot,
        )
        for oracle_id, price in _merged_prices(prices).items()
    }


def default_program_state(
    now: int = 0,
    slot: int = 0,
    prices: Mapping[str, int] | None = None,
    state: State | None = None,
) -> ProgramState:
    """Every default market and oracle, with ``State()`` defaults unless ``state`` is given;
    no users."""
    return ProgramState(
        state=state if state is not None else State(),
        spot_markets=default_spot_markets(now, prices),
        perp_markets=default_perp_markets(now, prices, slot),
        oracles=default_oracles(slot, prices),
    )
