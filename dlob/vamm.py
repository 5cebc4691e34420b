"""The vAMM as the book sees it: its quotes and L2 levels, from the AMM's own state.

Units: prices PRICE_PRECISION (1e6), sizes BASE_PRECISION (1e9), reserves
AMM_RESERVE_PRECISION (1e9), quote QUOTE_PRECISION (1e6).

* :func:`vamm_bid_ask` is the AMM's bid and ask (``protocol.math.amm.bid_price`` /
  ``ask_price`` around the reserve price, with the spreads stored on the AMM): the fallback
  prices a filler compares takers with.
* :func:`get_vamm_l2_levels` walks the curve in equal base steps from the spread-adjusted
  reserves (``get_spread_reserves``: the ask reserves for buyers, the bid
  reserves for sellers) with the program's swap math (``calculate_swap_output``,
  ``calculate_quote_asset_amount_swapped``), over the liquidity left before the base reserve
  reaches its bound (``calculate_market_open_bids_asks``). A level's price is the average price
  of its step, rounded to the tick toward the passive side (bids down, asks up), the rounding
  ``standardize_price`` applies to orders; an ask's average rounds up before that.

Whether the AMM may fill an order: :func:`amm_can_fill_rule` binds the protocol's own
``amm_can_fill_order`` (``protocol.controller.fills``) to a market, slot and oracle reading, so
the book offers the vAMM exactly when the fill engine would use it.
:func:`is_fallback_available_liquidity_source` is the keepers' simpler rule, for callers
without the market's oracle state: it needs only the order and the slot.

Deviation: an AMM whose spread reserves were never set (all zero) is read at its plain
reserves, i.e. with no spread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.constants import PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO
from protocol.controller.fills import amm_can_fill_order
from protocol.math.amm import (
    bid_ask_price,
    calculate_market_open_bids_asks,
    calculate_quote_asset_amount_swapped,
    calculate_swap_output,
    reserve_price,
)
from protocol.math.amm_spread import get_spread_reserves
from protocol.math.oracle import OracleValidity
from protocol.math.orders import standardize_base_asset_amount, standardize_price
from protocol.numeric import div_trunc, safe_div_ceil
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order
from protocol.types import OrderBitFlag, PositionDirection, SwapDirection


@dataclass(frozen=True, slots=True)
class VammLevels:
    """The vAMM's liquidity as ``(price, base size)`` levels per side, best first."""

    bids: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...]


def vamm_bid_ask(amm: AMM) -> tuple[int, int]:
    """The AMM's (bid, ask) at its current reserves and stored spreads."""
    return bid_ask_price(amm, reserve_price(amm))


def amm_can_fill_rule(
    market: PerpMarket,
    slot: int,
    safe_oracle_validity: OracleValidity,
    oracle_price_data: OraclePriceData,
) -> Callable[[Order], bool]:
    """The protocol's ``amm_can_fill_order`` for ``market`` at ``slot`` and this oracle reading,
    as a per-order predicate for ``DLOB.find_nodes_to_fill(amm_can_fill=...)``."""

    def can_fill(order: Order) -> bool:
        return amm_can_fill_order(market, order, slot, safe_oracle_validity, oracle_price_data)

    return can_fill


def is_fallback_available_liquidity_source(
    order: Order, min_auction_duration: int, slot: int
) -> bool:
    """The keepers' rule for whether the vAMM may fill ``order`` in ``slot``.

    Always when the market has no minimum auction (``min_auction_duration == 0``, e.g. spot)
    or the order carries the ``SafeTriggerOrder`` flag; otherwise only once more than
    ``min_auction_duration`` slots (``State.min_perp_auction_duration``) have passed since the
    order's slot, so makers get the first chance at every order.
    """
    if min_auction_duration == 0:
        return True
    if order.bit_flags & OrderBitFlag.SafeTriggerOrder:
        return True
    return slot - order.slot > min_auction_duration


def _level_reserves(amm: AMM, taker_direction: PositionDirection) -> tuple[int, int]:
    base, quote = get_spread_reserves(amm, taker_direction)
    if base == 0 or quote == 0:  # never set: no spread
        return amm.base_asset_reserve, amm.quote_asset_reserve
    return base, quote


def get_vamm_l2_levels(amm: AMM, num_levels: int) -> VammLevels:
    """``num_levels`` equal-size levels per side over the AMM's open liquidity."""
    open_bids, open_asks = calculate_market_open_bids_asks(amm)
    # users' asks are filled by the AMM's bids (base flows in, up to the max reserve) and
    # users' bids by its asks (base flows out, down to the min reserve)
    bids = _side_levels(amm, PositionDirection.Short, -open_asks, num_levels)
    asks = _side_levels(amm, PositionDirection.Long, open_bids, num_levels)
    return VammLevels(bids=bids, asks=asks)


def _side_levels(
    amm: AMM, taker_direction: PositionDirection, open_liquidity: int, num_levels: int
) -> tuple[tuple[int, int], ...]:
    if num_levels <= 0 or open_liquidity <= 0:
        return ()
    size = standardize_base_asset_amount(div_trunc(open_liquidity, num_levels), amm.order_step_size)
    if size == 0:
        return ()
    base_reserve, quote_reserve = _level_reserves(amm, taker_direction)
    swap = SwapDirection.Remove if taker_direction == PositionDirection.Long else SwapDirection.Add
    # the AMM's side of the book: it asks when the taker buys, bids when the taker sells
    level_direction = taker_direction.opposite()
    levels: list[tuple[int, int]] = []
    for _ in range(num_levels):
        if swap is SwapDirection.Remove and size > base_reserve:
            break
        new_quote_reserve, new_base_reserve = calculate_swap_output(
            size, base_reserve, swap, amm.sqrt_k
        )
        quote = calculate_quote_asset_amount_swapped(
            quote_reserve, new_quote_reserve, swap, amm.peg_multiplier
        )
        # quote (QUOTE_PRECISION) per base (BASE_PRECISION) as a price, as the program's
        # calculate_fill_price converts it
        if level_direction == PositionDirection.Long:
            average = div_trunc(quote * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO, size)
        else:
            average = safe_div_ceil(quote * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO, size)
        price = standardize_price(average, amm.order_tick_size, level_direction)
        levels.append((price, size))
        base_reserve, quote_reserve = new_base_reserve, new_quote_reserve
    return tuple(levels)
