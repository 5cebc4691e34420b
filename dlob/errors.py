"""Errors the book raises on input it cannot hold. Each carries the fields it is about."""

from __future__ import annotations

from protocol.state.user import UserKey
from protocol.types import MarketType


class DLOBError(ValueError):
    """Base of the book's input errors."""


class UnknownMarket(DLOBError):
    def __init__(self, market_type: MarketType, market_index: int) -> None:
        super().__init__(f"market {market_type.name} {market_index} was not added to the book")
        self.market_type = market_type
        self.market_index = market_index


class DuplicateOrder(DLOBError):
    def __init__(self, user: UserKey, order_id: int | bytes) -> None:
        super().__init__(
            f"order {order_id!r} of user {user[0].hex()[:16]}/{user[1]} is in the book"
        )
        self.user = user
        self.order_id = order_id


class UnbookableOrder(DLOBError):
    """An order the book cannot place (not open, nothing left, or inconsistent fields)."""

    def __init__(self, user: UserKey, order_id: int | bytes, reason: str) -> None:
        super().__init__(f"order {order_id!r} of user {user[0].hex()[:16]}/{user[1]}: {reason}")
        self.user = user
        self.order_id = order_id
        self.reason = reason


class SlotInThePast(DLOBError):
    """A query or slot update for a slot before the one the book has already reached."""

    def __init__(self, slot: int, book_slot: int) -> None:
        super().__init__(f"slot {slot} is before the book's slot {book_slot}")
        self.slot = slot
        self.book_slot = book_slot
