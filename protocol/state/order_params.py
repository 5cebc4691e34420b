"""What a user asks for when placing an order (the program's ``OrderParams``).

Frozen: params are part of a signed message, so nothing downstream may change them. Optional
fields are ``None`` when the user left them for the program to derive (auction params, expiry).
Field widths (``U64``...) are the program's and define the canonical signed encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from protocol.codec import I32, I64, U8, U16, U64
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
    base_asset_amount: U64
    market_index: U16
    price: U64 = 0
    user_order_id: U8 = 0
    reduce_only: bool = False
    post_only: PostOnlyParam = PostOnlyParam.None_
    immediate_or_cancel: bool = False
    bit_flags: U8 = 0
    max_ts: I64 | None = None
    trigger_price: U64 | None = None
    trigger_condition: OrderTriggerCondition = OrderTriggerCondition.Above
    oracle_price_offset: I32 | None = None
    auction_duration: U8 | None = None
    auction_start_price: I64 | None = None
    auction_end_price: I64 | None = None


class ModifyOrderPolicy(IntFlag):
    """``ModifyOrderParams.policy`` bits (the program's ``ModifyOrderPolicy``)."""

    MustModify = 0b01  # fail (OrderDoesNotExist) instead of doing nothing if the order is gone
    ExcludePreviousFill = 0b10  # the new size counts what the old order already filled


@dataclass(frozen=True, slots=True)
class ModifyOrderParams:
    """Changes to an open order; ``None`` keeps the existing order's value.

    Auction params replace the old ones only when all three are given (otherwise the new
    order derives its own, as a fresh placement would).
    """

    direction: PositionDirection | None = None
    base_asset_amount: U64 | None = None
    price: U64 | None = None
    reduce_only: bool | None = None
    post_only: PostOnlyParam | None = None
    bit_flags: U8 | None = None
    max_ts: I64 | None = None
    trigger_price: U64 | None = None
    trigger_condition: OrderTriggerCondition | None = None
    oracle_price_offset: I32 | None = None
    auction_duration: U8 | None = None
    auction_start_price: I64 | None = None
    auction_end_price: I64 | None = None
    policy: U8 | None = None

    def must_modify(self) -> bool:
        return bool((self.policy or 0) & ModifyOrderPolicy.MustModify)

    def exclude_previous_fill(self) -> bool:
        return bool((self.policy or 0) & ModifyOrderPolicy.ExcludePreviousFill)
