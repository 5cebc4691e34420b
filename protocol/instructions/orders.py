"""Order instructions: place (perp and spot), cancel, cancel many, modify.

The user's authority or delegate signs. Immediate-or-cancel orders only make sense inside a
fill (place-and-take / place-and-make), so plain placement rejects them (``InvalidOrderIOC``)
as the program does. Order logic and every rejection code live in
:mod:`protocol.controller.orders`; these handlers authorise, check the wire params and dispatch.

Deviation: the program accepts a limit or trigger price that is not a multiple of the market's
tick size and rounds it when the order is priced. Here such a price is bad input, rejected up
front with ``InvalidOrderLimitPrice`` naming ``params.price`` / ``params.trigger_price``, so what
a user signed is exactly what rests on the book.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U8, U16, U32, Pubkey
from protocol.controller.orders import (
    cancel_order,
    cancel_orders,
    modify_order,
    place_perp_order,
    place_spot_order,
)
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter
from protocol.instructions.registry import handler, instruction
from protocol.state.order_params import ModifyOrderParams, OrderParams
from protocol.types import MarketType, PositionDirection


@instruction(10)
@dataclass(frozen=True, slots=True)
class PlacePerpOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams


@instruction(11)
@dataclass(frozen=True, slots=True)
class PlaceSpotOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams


@instruction(12)
@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel one order by ``order_id`` or by the user's own ``user_order_id`` (one of them)."""

    authority: Pubkey
    sub_account_id: U16
    order_id: U32 | None = None
    user_order_id: U8 | None = None


@instruction(13)
@dataclass(frozen=True, slots=True)
class CancelOrders:
    """Cancel every open order, optionally only in one market and/or one direction."""

    authority: Pubkey
    sub_account_id: U16
    market_type: MarketType | None = None
    market_index: U16 | None = None
    direction: PositionDirection | None = None


@instruction(14)
@dataclass(frozen=True, slots=True)
class ModifyOrder:
    authority: Pubkey
    sub_account_id: U16
    params: ModifyOrderParams
    order_id: U32 | None = None
    user_order_id: U8 | None = None


def _check_on_tick(params: OrderParams, tick_size: int) -> None:
    if tick_size > 1 and params.price % tick_size != 0:
        raise InvalidParameter(
            "params.price",
            f"{params.price} is not a multiple of the tick size {tick_size}",
            ErrorCode.InvalidOrderLimitPrice,
        )
    if tick_size > 1 and params.trigger_price is not None and params.trigger_price % tick_size:
        raise InvalidParameter(
            "params.trigger_price",
            f"{params.trigger_price} is not a multiple of the tick size {tick_size}",
            ErrorCode.InvalidOrderLimitPrice,
        )


def _check_params(params: OrderParams, market_type: MarketType) -> None:
    if params.market_type != market_type:
        raise InvalidParameter(
            "params.market_type",
            f"{params.market_type.name} order sent to the {market_type.name} instruction",
            ErrorCode.InvalidOrderMarketType,
        )
    if params.immediate_or_cancel:
        raise InvalidParameter(
            "params.immediate_or_cancel",
            "immediate-or-cancel orders are only placed inside a fill",
            ErrorCode.InvalidOrderIOC,
        )


def _one_order_id(order_id: int | None, user_order_id: int | None) -> None:
    if (order_id is None) == (user_order_id is None):
        raise InvalidParameter("order_id", "give exactly one of order_id and user_order_id")


@handler(PlacePerpOrder)
def handle_place_perp_order(accounts: Accounts, ix: PlacePerpOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _check_params(ix.params, MarketType.Perp)
    _check_on_tick(ix.params, accounts.perp_market(ix.params.market_index).amm.order_tick_size)
    place_perp_order(accounts, user.key, ix.params)


@handler(PlaceSpotOrder)
def handle_place_spot_order(accounts: Accounts, ix: PlaceSpotOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _check_params(ix.params, MarketType.Spot)
    _check_on_tick(ix.params, accounts.spot_market(ix.params.market_index).order_tick_size)
    place_spot_order(accounts, user.key, ix.params)


@handler(CancelOrder)
def handle_cancel_order(accounts: Accounts, ix: CancelOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _one_order_id(ix.order_id, ix.user_order_id)
    cancel_order(accounts, user.key, ix.order_id, user_order_id=ix.user_order_id)


@handler(CancelOrders)
def handle_cancel_orders(accounts: Accounts, ix: CancelOrders) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    cancel_orders(accounts, user.key, ix.market_type, ix.market_index, ix.direction)


@handler(ModifyOrder)
def handle_modify_order(accounts: Accounts, ix: ModifyOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _one_order_id(ix.order_id, ix.user_order_id)
    modify_order(accounts, user.key, ix.params, ix.order_id, user_order_id=ix.user_order_id)
