"""In which order a taker order meets its liquidity (the program's ``math/fulfillment.rs``).

Units: prices PRICE_PRECISION.

``maker_orders_info`` is the list of candidate maker orders ``(maker user key, maker order id,
maker price)``, best price first for the taker (asks ascending for a buy, bids descending for a
sell). The result is the sequence the fill engine walks:

* perp: each maker that crosses the taker's limit price, in order; while the AMM is available,
  the AMM is put in front of every maker it beats (``AMMFulfillment(maker_price)``: the AMM
  fills only up to that maker's price), and after the makers it takes whatever is left if its
  own price crosses the taker's limit (``AMMFulfillment(None)``). A taker without a limit price
  crosses everything. At most seven methods are produced, as in the program.
* a post-only order (only ever filled by the AMM) gets the AMM if the AMM's price crosses it.
* spot: each crossing maker, in order; a taker without a limit price crosses nothing.

Deviations: a maker is named by its order id rather than its index in the user's order array
(this model keeps orders as a list without free slots, so indexes move when an order leaves).
There are no external spot venues, so the spot path never yields an external fulfillment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import MathError
from protocol.math.amm import ask_price, bid_price
from protocol.math.matching import do_orders_cross
from protocol.state.perp_market import AMM
from protocol.state.user import Order, UserKey
from protocol.types import PositionDirection

__all__ = [
    "AMMFulfillment",
    "MakerOrderInfo",
    "MatchFulfillment",
    "PerpFulfillmentMethod",
    "SpotFulfillmentMethod",
    "determine_perp_fulfillment_methods",
    "determine_spot_fulfillment_methods",
]

MAX_FULFILLMENT_METHODS = 7  # the program stops adding makers once it has more than six methods

MakerOrderInfo = tuple[UserKey, int, int]
"""(maker user key, maker order id, maker price)"""


@dataclass(frozen=True, slots=True)
class AMMFulfillment:
    """``PerpFulfillmentMethod::AMM``: the AMM fills, up to ``maker_price`` if one is given."""

    maker_price: int | None


@dataclass(frozen=True, slots=True)
class MatchFulfillment:
    """``PerpFulfillmentMethod::Match`` / ``SpotFulfillmentMethod::Match``."""

    maker_key: UserKey
    maker_order_id: int
    maker_price: int


PerpFulfillmentMethod = AMMFulfillment | MatchFulfillment
SpotFulfillmentMethod = MatchFulfillment


def determine_perp_fulfillment_methods(
    order: Order,
    maker_orders_info: Sequence[MakerOrderInfo],
    amm: AMM,
    amm_reserve_price: int,
    limit_price: int | None,
    amm_is_available: bool,
) -> list[PerpFulfillmentMethod]:
    """The fill sequence for a perp taker order; see the module docstring."""
    if order.post_only:
        return _determine_perp_fulfillment_methods_for_maker(
            order, amm, amm_reserve_price, limit_price, amm_is_available
        )

    fulfillment_methods: list[PerpFulfillmentMethod] = []
    maker_direction = order.direction.opposite()
    amm_price = (
        bid_price(amm, amm_reserve_price)
        if maker_direction == PositionDirection.Long
        else ask_price(amm, amm_reserve_price)
    )

    for maker_key, maker_order_id, maker_price in maker_orders_info:
        if limit_price is not None and not do_orders_cross(
            maker_direction, maker_price, limit_price
        ):
            break
        if amm_is_available:
            if order.direction == PositionDirection.Long:
                maker_better_than_amm = maker_price <= amm_price
            else:
                maker_better_than_amm = maker_price >= amm_price
            if not maker_better_than_amm:
                fulfillment_methods.append(AMMFulfillment(maker_price))
                amm_price = maker_price
        fulfillment_methods.append(MatchFulfillment(maker_key, maker_order_id, maker_price))
        if len(fulfillment_methods) >= MAX_FULFILLMENT_METHODS:
            break

    if amm_is_available and (
        limit_price is None or do_orders_cross(maker_direction, amm_price, limit_price)
    ):
        fulfillment_methods.append(AMMFulfillment(None))
    return fulfillment_methods


def _determine_perp_fulfillment_methods_for_maker(
    order: Order,
    amm: AMM,
    amm_reserve_price: int,
    limit_price: int | None,
    amm_is_available: bool,
) -> list[PerpFulfillmentMethod]:
    if not amm_is_available:
        return []
    maker_direction = order.direction
    amm_price = (
        ask_price(amm, amm_reserve_price)
        if maker_direction == PositionDirection.Long
        else bid_price(amm, amm_reserve_price)
    )
    if limit_price is None:
        raise MathError("a post-only order without a limit price")
    if do_orders_cross(maker_direction, limit_price, amm_price):
        return [AMMFulfillment(None)]
    return []


def determine_spot_fulfillment_methods(
    order: Order,
    maker_orders_info: Sequence[MakerOrderInfo],
    limit_price: int | None,
) -> list[SpotFulfillmentMethod]:
    """The fill sequence for a spot taker order: the crossing makers, best first."""
    fulfillment_methods: list[SpotFulfillmentMethod] = []
    maker_direction = order.direction.opposite()
    for maker_key, maker_order_id, maker_price in maker_orders_info:
        if limit_price is None or not do_orders_cross(maker_direction, maker_price, limit_price):
            break
        fulfillment_methods.append(MatchFulfillment(maker_key, maker_order_id, maker_price))
        if len(fulfillment_methods) >= MAX_FULFILLMENT_METHODS:
            break
    return fulfillment_methods
