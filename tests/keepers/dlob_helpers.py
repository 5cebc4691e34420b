"""Shared pieces of the DLOB feed and server tests: a snapshot loader over an
:class:`~benchmarks.dlob_stream.OrderStream`, bounded waits, and the feed's followed markets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.dlob_stream import TICK_SIZE, MarketKey, OrderStream
from keepers.dlob_feed import (
    FollowedMarket,
    MarketOrdersSnapshot,
    SnapshotUnavailable,
    parse_orders_snapshot,
)
from protocol.types import MarketType

PERP0: MarketKey = (MarketType.Perp, 0)
SPOT0: MarketKey = (MarketType.Spot, 0)


def followed(*markets: MarketKey, oracle_id: str | None = "SOL/USD") -> list[FollowedMarket]:
    return [FollowedMarket(m[0], m[1], TICK_SIZE, oracle_id=oracle_id) for m in markets]


@dataclass
class StreamLoader:
    """The node's snapshot endpoint, in process: the cut is taken when a request arrives (as
    the node takes it); ``hold`` keeps answers back until set; ``fail_next`` fails that many."""

    stream: OrderStream
    hold: asyncio.Event | None = None
    fail_next: int = 0
    calls: int = 0
    cuts: list[int] = field(default_factory=list)

    async def orders_snapshot(
        self, market_type: MarketType, market_index: int
    ) -> MarketOrdersSnapshot:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise SnapshotUnavailable(market_type, market_index, "node not ready")
        snapshot = parse_orders_snapshot(
            self.stream.snapshot_body(market_type, market_index), market_type, market_index
        )
        self.cuts.append(snapshot.market_seq)
        if self.hold is not None:
            await self.hold.wait()
        return snapshot


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 -- watching state the feed exposes
            await asyncio.sleep(0.002)
