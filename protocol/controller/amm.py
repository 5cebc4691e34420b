"""Keeping a perp market's AMM in step with its oracle (the program's ``_update_amm``).

Run before anything that reads the AMM's oracle state (funding, fills): judge the oracle,
fold a usable reading into the oracle TWAPs, and record whether the oracle was valid and the
slot of the last good update (funding refuses to use an AMM that has not been updated
recently). The program also repegs and re-spreads here; those arrive with the AMM's curve math,
and with ``curve_update_intensity == 0`` (every market's default here) the program skips the
repeg too.
"""

from __future__ import annotations

from protocol.math.amm import (
    get_sanitize_clamp_denominator,
    reserve_price,
    update_oracle_price_twap,
)
from protocol.math.oracle import (
    DriftAction,
    OracleValidity,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.state import OraclePriceData, PerpMarket, State
from protocol.types import MarketStatus, MarketType


def update_amm(
    market: PerpMarket, oracle_price_data: OraclePriceData, state: State, now: int, slot: int
) -> OracleValidity | None:
    """Update the AMM's oracle TWAPs and validity flags; returns the oracle verdict (``None``
    for a market in settlement, which the program leaves untouched)."""
    if market.status in (MarketStatus.Settlement, MarketStatus.Delisted):
        return None
    validity = oracle_validity(
        MarketType.Perp,
        market.market_index,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        market.amm.oracle_source,
    )
    price_after = reserve_price(market.amm)
    if is_oracle_valid_for_action(validity, DriftAction.UpdateTwap):
        update_oracle_price_twap(
            market.amm, now, oracle_price_data, price_after, get_sanitize_clamp_denominator(market)
        )
    if is_oracle_valid_for_action(validity, DriftAction.FillOrderAmmLowRisk):
        market.amm.last_update_slot = slot
        market.amm.last_oracle_valid = True
    else:
        market.amm.last_oracle_valid = False
    return validity
