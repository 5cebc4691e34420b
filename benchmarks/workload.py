"""Reading a shared DLOB workload (format ``peer-dlob-workload/1``) into protocol orders.

The format (see ``../shared/bench/README.md``) gives orders as JSON objects with the program's
snake_case field names and enum variants as lower-case strings; fields an order omits take
``order_defaults``. Users are base58 account addresses; here they become the protocol's
``UserKey`` (32-byte address, sub-account 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.state.user import Order, UserKey
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

FORMAT = "peer-dlob-workload/1"
SHARED_BENCH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "bench"

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ORDER_TYPES = {
    "market": OrderType.Market,
    "limit": OrderType.Limit,
    "trigger_market": OrderType.TriggerMarket,
    "trigger_limit": OrderType.TriggerLimit,
    "oracle": OrderType.Oracle,
}
_DIRECTIONS = {"long": PositionDirection.Long, "short": PositionDirection.Short}
_CONDITIONS = {
    "above": OrderTriggerCondition.Above,
    "below": OrderTriggerCondition.Below,
    "triggered_above": OrderTriggerCondition.TriggeredAbove,
    "triggered_below": OrderTriggerCondition.TriggeredBelow,
}
_STATUSES = {
    "init": OrderStatus.Init,
    "open": OrderStatus.Open,
    "filled": OrderStatus.Filled,
    "canceled": OrderStatus.Canceled,
}
_MARKET_TYPES = {"perp": MarketType.Perp, "spot": MarketType.Spot}


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + _B58.index(ch)
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


@dataclass(frozen=True, slots=True)
class WorkloadOrder:
    user: UserKey
    raw: dict[str, Any]

    def order(self) -> Order:
        """A fresh protocol ``Order`` (the book takes ownership of what it is given)."""
        o = self.raw
        return Order(
            order_id=o["order_id"],
            market_index=o["market_index"],
            market_type=_MARKET_TYPES[o["market_type"]],
            order_type=_ORDER_TYPES[o["order_type"]],
            direction=_DIRECTIONS[o["direction"]],
            base_asset_amount=o["base_asset_amount"],
            slot=o["slot"],
            price=o["price"],
            base_asset_amount_filled=o["base_asset_amount_filled"],
            quote_asset_amount_filled=o["quote_asset_amount_filled"],
            trigger_price=o["trigger_price"],
            trigger_condition=_CONDITIONS[o["trigger_condition"]],
            auction_start_price=o["auction_start_price"],
            auction_end_price=o["auction_end_price"],
            auction_duration=o["auction_duration"],
            max_ts=o["max_ts"],
            oracle_price_offset=o["oracle_price_offset"],
            user_order_id=o["user_order_id"],
            existing_position_direction=_DIRECTIONS[o["existing_position_direction"]],
            status=_STATUSES[o["status"]],
            reduce_only=o["reduce_only"],
            post_only=o["post_only"],
            immediate_or_cancel=o["immediate_or_cancel"],
            posted_slot_tail=o["posted_slot_tail"],
            bit_flags=o["bit_flags"],
        )


@dataclass(frozen=True, slots=True)
class Workload:
    raw: dict[str, Any]
    users: tuple[UserKey, ...]
    resting: tuple[WorkloadOrder, ...]
    cancel: tuple[int, ...]
    taker: WorkloadOrder
    triggers: tuple[WorkloadOrder, ...]

    @property
    def n(self) -> int:
        return int(self.raw["n"])

    @property
    def slot(self) -> int:
        return int(self.raw["slot"])

    @property
    def ts(self) -> int:
        return int(self.raw["ts"])

    @property
    def oracle_price(self) -> int:
        return int(self.raw["oracle"]["price"])

    @property
    def tick_size(self) -> int:
        return int(self.raw["market"]["tick_size"])

    @property
    def market_type(self) -> MarketType:
        return _MARKET_TYPES[self.raw["market"]["market_type"]]

    @property
    def market_index(self) -> int:
        return int(self.raw["market"]["market_index"])

    @property
    def vamm_bid(self) -> int:
        return int(self.raw["vamm"]["bid"])

    @property
    def vamm_ask(self) -> int:
        return int(self.raw["vamm"]["ask"])

    @property
    def l2_depth(self) -> int:
        return int(self.raw["l2_depth"])

    @property
    def trigger_oracle_price(self) -> int:
        return int(self.raw["trigger_oracle_price"])


def load_workload(path: Path) -> Workload:
    raw = json.loads(path.read_bytes())
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r}")
    users = tuple((b58decode(u), 0) for u in raw["users"])
    defaults = raw["order_defaults"]

    def wrap(o: dict[str, Any]) -> WorkloadOrder:
        return WorkloadOrder(users[o["user"]], {**defaults, **o})

    return Workload(
        raw=raw,
        users=users,
        resting=tuple(wrap(o) for o in raw["resting"]),
        cancel=tuple(raw["cancel"]),
        taker=wrap(raw["taker"]),
        triggers=tuple(wrap(o) for o in raw["triggers"]),
    )
