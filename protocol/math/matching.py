"""Which orders may trade with which, and at what size (the program's ``math/matching.rs``).

Units: prices PRICE_PRECISION; perp base BASE_PRECISION, spot base the mint's units (given by
``base_decimals``); quote QUOTE_PRECISION.

A *maker* is an order already resting on the book: a limit order that is post-only or whose
auction is over. A taker that is itself resting (a limit order past its auction) may only be
matched by a post-only maker or by a maker that started resting no later than it did, so a
younger order cannot jump in front of an older one by calling itself the maker. A post-only
order never takes.

Rounding: the quote of a matched fill is priced at the maker's price and rounds in the
maker's favour (a maker that buys pays the truncated notional, a maker that sells receives the
ceiled one; :func:`protocol.math.orders.calculate_quote_asset_amount_for_maker_order`).

``calculate_filler_multiplier_for_matched_orders`` is defined in :mod:`protocol.math.fees`
(fee code reads it) and re-exported here under the program's module.

Deviations: self-match protection is the caller's (the program skips a maker whose user is the
taker's; the fill engine rejects such a maker, ``MakerCantFulfillOwnOrder``).
"""

from __future__ import annotations

from protocol.math.fees import calculate_filler_multiplier_for_matched_orders
from protocol.math.orders import calculate_quote_asset_amount_for_maker_order
from protocol.state.user import Order
from protocol.types import PositionDirection

__all__ = [
    "are_orders_same_market_but_different_sides",
    "calculate_fill_for_matched_orders",
    "calculate_filler_multiplier_for_matched_orders",
    "do_orders_cross",
    "is_maker_for_taker",
]


def is_maker_for_taker(maker_order: Order, taker_order: Order, slot: int) -> bool:
    """Whether ``maker_order`` may provide liquidity to ``taker_order`` at ``slot``."""
    if taker_order.post_only or not maker_order.is_resting_limit_order(slot):
        return False
    if not taker_order.is_resting_limit_order(slot) or maker_order.post_only:
        return True
    # both are resting limit orders: the one that started resting first is the maker
    return (
        maker_order.slot + maker_order.auction_duration
        <= taker_order.slot + taker_order.auction_duration
    )


def are_orders_same_market_but_different_sides(maker_order: Order, taker_order: Order) -> bool:
    return (
        maker_order.market_index == taker_order.market_index
        and maker_order.market_type == taker_order.market_type
        and maker_order.direction != taker_order.direction
    )


def do_orders_cross(maker_direction: PositionDirection, maker_price: int, taker_price: int) -> bool:
    """A maker bid crosses a taker asking at most its price; a maker ask, a taker bidding at
    least its price."""
    if maker_direction == PositionDirection.Long:
        return taker_price <= maker_price
    return taker_price >= maker_price


def calculate_fill_for_matched_orders(
    maker_base_asset_amount: int,
    maker_price: int,
    taker_base_asset_amount: int,
    base_decimals: int,
    maker_direction: PositionDirection,
) -> tuple[int, int]:
    """``(base, quote)`` of a match: the smaller of the two sizes, priced at the maker's price."""
    base_asset_amount = min(maker_base_asset_amount, taker_base_asset_amount)
    quote_asset_amount = calculate_quote_asset_amount_for_maker_order(
        base_asset_amount, maker_price, base_decimals, maker_direction
    )
    return base_asset_amount, quote_asset_amount
