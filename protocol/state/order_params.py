"""What a user asks for when placing an order (the program's ``OrderParams``).

Frozen: params are part of a signed message, so nothing downstream may change them. Optional
fields are ``None`` when the user left them for the program to derive (auction params, expiry).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.types import (
    MarketType,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)


@dataclass(frozen=True, slots=True)
class OrderParams:
    order_type: OrderType
    market_type: MarketType
    direction: PositionDirection
    base_asset_amount: int
    market_index: int
    price: int = 0
    user_order_id: int = 0
    reduce_only: bool = False
    post_only: PostOnlyParam = PostOnlyParam.None_
    immediate_or_cancel: bool = False
    bit_flags: int = 0
    max_ts: int | None = None
    trigger_price: int | None = None
    trigger_condition: OrderTriggerCondition = OrderTriggerCondition.Above
    oracle_price_offset: int | None = None
    auction_duration: int | None = None
    auction_start_price: int | None = None
    auction_end_price: int | None = None
