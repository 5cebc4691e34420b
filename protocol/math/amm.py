"""The virtual AMM's price math (the program's ``math/amm.rs``).

Units: reserves AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION (1e6), prices PRICE_PRECISION.
"""

from __future__ import annotations

from protocol.constants import PRICE_TO_PEG_PRECISION_RATIO
from protocol.numeric import cast_u64, div_trunc


def calculate_price(quote_asset_reserve: int, base_asset_reserve: int, peg_multiplier: int) -> int:
    """Reserve price: ``quote_reserve * peg / base_reserve`` (PRICE_PRECISION), truncated."""
    peg_quote_asset_amount = quote_asset_reserve * peg_multiplier
    return cast_u64(
        div_trunc(peg_quote_asset_amount * PRICE_TO_PEG_PRECISION_RATIO, base_asset_reserve)
    )
