"""Does a bot's DLOB, kept from the bus, hold exactly the node's open orders?

A keeper's book is event-sourced (``orders/...`` events, resynced from the node's snapshot on
a gap), so at any quiet moment it must equal the node's order snapshot of each market it
follows: the same orders, by ``(user, order_id)``, each identical field for field. Signed
intents are off-chain and not in a snapshot; they are left out of the comparison.

The node keeps executing while the comparison runs (a filler cancelling an expired order, a
JIT answer): :func:`compare_book` therefore compares only when the book has applied exactly
the snapshot's ``market_seq``, and takes a fresh snapshot when the book moved past it, for
at most ``attempts`` rounds.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from keepers.dlob_feed import DlobFeed
from keepers.rpc import OrdersSnapshot
from protocol.state.user import Order, UserKey
from protocol.types import MarketType

OrderMap = dict[tuple[UserKey, int], Order]


class SnapshotReader(Protocol):
    async def orders_snapshot(
        self, market_type: MarketType | str, market_index: int
    ) -> OrdersSnapshot: ...


def book_orders(feed: DlobFeed, market_type: MarketType, market_index: int) -> OrderMap:
    """The on-chain orders of one market in ``feed``'s book."""
    return {
        (node.user, node.order.order_id): node.order
        for node in feed.book.nodes()
        if not node.is_signed_intent
        and node.order.market_type == market_type
        and node.order.market_index == market_index
    }


def diff_orders(book: OrderMap, node: OrderMap) -> str:
    """Empty when equal, else what differs (counts and a few keys)."""
    missing = sorted(set(node) - set(book))
    extra = sorted(set(book) - set(node))
    changed = sorted(k for k in set(book) & set(node) if book[k] != node[k])
    if not (missing or extra or changed):
        return ""

    def keys(items: list[tuple[UserKey, int]]) -> str:
        shown = ", ".join(f"{user[0].hex()[:8]}/{user[1]}#{oid}" for user, oid in items[:3])
        return shown + (" ..." if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the book ({keys(missing)})")
    if extra:
        parts.append(f"{len(extra)} not on the node ({keys(extra)})")
    if changed:
        parts.append(f"{len(changed)} differ ({keys(changed)})")
    return "; ".join(parts)


async def compare_book(
    feed: DlobFeed,
    node: SnapshotReader,
    market_type: MarketType,
    market_index: int,
    *,
    attempts: int = 50,
    wait_s: float = 0.05,
) -> tuple[bool, str]:
    """``(equal, detail)`` for one market (see the module docstring)."""
    last_detail = "no comparison made"
    for _ in range(attempts):
        snapshot = await node.orders_snapshot(market_type, market_index)
        for _ in range(attempts):
            if feed.market_seq(market_type, market_index) >= snapshot.market_seq:
                break
            await asyncio.sleep(wait_s)
        if feed.market_seq(market_type, market_index) != snapshot.market_seq:
            last_detail = (
                f"book at market_seq {feed.market_seq(market_type, market_index)}, "
                f"snapshot at {snapshot.market_seq}"
            )
            continue
        ours = book_orders(feed, market_type, market_index)
        theirs = {(user, order.order_id): order for user, order in snapshot.orders}
        difference = diff_orders(ours, theirs)
        if not difference:
            return True, f"{len(theirs)} open orders at market_seq {snapshot.market_seq}"
        last_detail = f"at market_seq {snapshot.market_seq}: {difference}"
        await asyncio.sleep(wait_s)
    return False, last_detail
