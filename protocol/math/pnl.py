"""A perp position's unrealized and settleable PnL (the program's ``PerpPosition::
get_unrealized_pnl`` and ``get_claimable_pnl`` of ``state/user.rs``, as free functions taking
the position first).

Units: QUOTE_PRECISION (1e6) amounts, PRICE_PRECISION (1e6) prices. The unrealized PnL at an
oracle price is ``base * price + quote_asset_amount`` (the base value truncates toward zero).

What may be settled (:func:`get_claimable_pnl`): a loss always, in full; a gain only up to
what the position has *realized* by reducing or closing (``quote_asset_amount -
quote_entry_amount``, never below zero) plus whatever the market's pnl pool holds in excess of
what all users are owed (``pnl_pool_excess``). So paper gains on an open position cannot
drain the pool ahead of realized ones. The pool's own cap on a gain (it cannot pay more than it
holds) is applied later, by the settlement itself
(:func:`protocol.controller.pnl.update_pool_balances`).

:func:`is_price_divergence_ok_for_settle_pnl` (a ``PerpMarket`` method in the program) is the
gate :func:`protocol.controller.pnl.settle_pnl` applies when the AMM's last oracle update was
not valid in this slot.

The program's ``math/pnl.rs::calculate_pnl`` (PnL of closing through the AMM's curve) is
:func:`protocol.math.amm.calculate_pnl`, beside the swap valuation that uses it.
"""

from __future__ import annotations

from protocol.constants import PERCENTAGE_PRECISION
from protocol.math.position import calculate_base_asset_value_and_pnl_with_oracle_price
from protocol.numeric import div_trunc, unsigned_abs
from protocol.state.perp_market import PerpMarket
from protocol.state.user import PerpPosition
from protocol.types import ContractTier

__all__ = [
    "get_claimable_pnl",
    "get_unrealized_pnl",
    "is_price_divergence_ok_for_settle_pnl",
]


def get_unrealized_pnl(position: PerpPosition, oracle_price: int) -> int:
    """Base valued at ``oracle_price`` plus the position's quote balance (QUOTE_PRECISION)."""
    _, unrealized_pnl = calculate_base_asset_value_and_pnl_with_oracle_price(position, oracle_price)
    return unrealized_pnl


def get_claimable_pnl(position: PerpPosition, oracle_price: int, pnl_pool_excess: int) -> int:
    """The unrealized PnL, with a gain capped at the realized part plus ``pnl_pool_excess``."""
    _, unrealized_pnl = calculate_base_asset_value_and_pnl_with_oracle_price(position, oracle_price)
    if unrealized_pnl <= 0:
        return unrealized_pnl
    realized = max(position.quote_asset_amount - position.quote_entry_amount, 0)
    max_positive_pnl = realized + max(pnl_pool_excess, 0)
    return min(unrealized_pnl, max_positive_pnl)


# Largest oracle/5-minute-TWAP divergence (PERCENTAGE_PRECISION) at which pnl may settle while
# the AMM's oracle is not known to be healthy, and the divisor of the price giving the largest
# tolerated oracle or mark standard deviation, by contract tier.
_SETTLE_PNL_DIVERGENCE_LIMIT = {
    ContractTier.A: PERCENTAGE_PRECISION // 200,  # 50 bps
    ContractTier.B: PERCENTAGE_PRECISION // 200,
    ContractTier.C: PERCENTAGE_PRECISION // 100,  # 100 bps
    ContractTier.Speculative: PERCENTAGE_PRECISION // 40,  # 250 bps
    ContractTier.HighlySpeculative: PERCENTAGE_PRECISION // 40,
    ContractTier.Isolated: PERCENTAGE_PRECISION // 40,
}
_SETTLE_PNL_STD_DIVISOR = {
    ContractTier.A: 50,  # 200 bps
    ContractTier.B: 50,
    ContractTier.C: 20,  # 500 bps
    ContractTier.Speculative: 10,  # 1000 bps
    ContractTier.HighlySpeculative: 10,
    ContractTier.Isolated: 10,
}


def is_price_divergence_ok_for_settle_pnl(market: PerpMarket, oracle_price: int) -> bool:
    """``PerpMarket::is_price_divergence_ok_for_settle_pnl``: the oracle is within its tier's
    band of the 5-minute oracle TWAP, and neither the oracle's nor the mark's standard
    deviation reaches its tier's share of the lower of the two prices."""
    twap_5min = market.amm.historical_oracle_data.last_oracle_price_twap_5min
    oracle_divergence = unsigned_abs(
        div_trunc((oracle_price - twap_5min) * PERCENTAGE_PRECISION, min(twap_5min, oracle_price))
    )
    if oracle_divergence >= _SETTLE_PNL_DIVERGENCE_LIMIT[market.contract_tier]:
        return False
    min_price = min(oracle_price, twap_5min)
    std_limit = unsigned_abs(div_trunc(min_price, _SETTLE_PNL_STD_DIVISOR[market.contract_tier]))
    return max(market.amm.oracle_std, market.amm.mark_std) < std_limit
