"""Converting between AMM quote reserves and quote amounts (the program's ``math/quote_asset.rs``).

Units: quote reserves AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION (1e6), quote amounts
QUOTE_PRECISION (1e6). A quote amount is ``reserve * peg / 1e9``; both directions truncate
(the inputs are unsigned, so truncation is the floor), exactly as the program's ``u128``
division does.
"""

from __future__ import annotations

from protocol.constants import AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO
from protocol.numeric import div_trunc


def reserve_to_asset_amount(quote_asset_reserve: int, peg_multiplier: int) -> int:
    """A quote reserve delta as a quote amount (QUOTE_PRECISION), truncated."""
    return div_trunc(quote_asset_reserve * peg_multiplier, AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO)


def asset_to_reserve_amount(quote_asset_amount: int, peg_multiplier: int) -> int:
    """A quote amount as a quote reserve delta (AMM_RESERVE_PRECISION), truncated."""
    return div_trunc(quote_asset_amount * AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO, peg_multiplier)
