"""A stand-in for the node's order stream: an authoritative book, its events, and its snapshots.

Used by the DLOB feed's tests and by ``benchmarks/dlob_ingest.py`` until they run against the
node itself. :class:`OrderStream` keeps the open orders of some markets as the node would and
changes them with seeded random events (place, partial and full fills, cancels, modifies,
triggers), numbering each as the node does: ``seq`` global, ``market_seq`` per market, gap-free
from 1. Every event is *committed* to the stream's own book when made; whether it is also
published is up to the caller (skipping one is how tests inject a gap). :meth:`snapshot_body`
answers ``GET /v1/orders/snapshot`` from the committed book, a consistent cut by construction,
and :func:`snapshot_app` serves it over aiohttp.

The orders are the kinds the book keeps apart: fixed-price and oracle-pegged resting limit
orders, limit orders still in their auction, market orders, and untriggered trigger orders.
Users share order ids (each user numbers its own orders from 1), the case where a book keyed by
order id alone loses orders. Units are the program's (PRICE_PRECISION, BASE_PRECISION).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import msgspec
from aiohttp import web

from dlob import DLOB
from keepers.bus import topics
from keepers.bus.schemas import OrderAction, OrderEvent, SlotMessage, encode
from keepers.bus.transport import Transport
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.state.user import Order, UserKey
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

MarketKey = tuple[MarketType, int]

TICK_SIZE = 1_000  # $0.001
STEP_SIZE = BASE_PRECISION // 1_000
ORACLE_PRICE = 100 * PRICE_PRECISION
TS0 = 1_700_000_000
_LEVEL = {MarketType.Perp: "perp", MarketType.Spot: "spot"}


@dataclass(slots=True)
class StreamEvent:
    """One committed event: its topic, payload and the message itself."""

    topic: str
    payload: bytes
    event: OrderEvent


@dataclass(slots=True)
class OrderStream:
    """The authoritative side of the stream (see the module docstring)."""

    markets: Sequence[MarketKey]
    cluster: str
    users: int = 6
    seed: int = 1
    slot: int = 1_000
    events_per_slot: int = 4
    max_open: int = 400  # per market: past it, places give way to fills and cancels
    rng: random.Random = field(init=False)
    seq: int = field(init=False, default=0)
    market_seq: dict[MarketKey, int] = field(init=False)
    orders: dict[MarketKey, dict[tuple[UserKey, int], Order]] = field(init=False)
    user_keys: list[UserKey] = field(init=False)
    _next_id: dict[UserKey, int] = field(init=False)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.market_seq = dict.fromkeys(self.markets, 0)
        self.orders = {market: {} for market in self.markets}
        self.user_keys = [
            (self.rng.randbytes(32), self.rng.randrange(2)) for _ in range(self.users)
        ]
        self._next_id = dict.fromkeys(self.user_keys, 1)

    @property
    def ts(self) -> int:
        return TS0 + self.slot * 2 // 5

    # --- events -----------------------------------------------------------------------------
    def next_event(self) -> StreamEvent:
        """Make, commit and return the next event."""
        self._count += 1
        if self._count % self.events_per_slot == 0:
            self.slot += 1
        market = self.markets[self.rng.randrange(len(self.markets))]
        book = self.orders[market]
        roll = self.rng.random()
        if not book or (roll < 0.5 and len(book) < self.max_open):
            return self._place(market)
        key = self.rng.choice(list(book))
        order = book[key]
        if order.must_be_triggered() and not order.triggered() and roll < 0.6:
            return self._trigger(market, key)
        if roll < 0.75:
            return self._fill(market, key)
        if roll < 0.8 and order.is_limit_order() and order.price != 0:
            return self._modify(market, key)
        return self._leave(market, key, OrderAction.CANCEL)

    def events(self, n: int) -> list[StreamEvent]:
        return [self.next_event() for _ in range(n)]

    def prefill(self, per_market: int) -> None:
        """Commit ``per_market`` placements in every market (history for a first snapshot)."""
        for market in self.markets:
            for _ in range(per_market):
                self._place(market)

    def _commit(
        self, market: MarketKey, user: UserKey, order: Order, action: OrderAction
    ) -> StreamEvent:
        self.seq += 1
        self.market_seq[market] += 1
        event = OrderEvent.from_order(
            order,
            seq=self.seq,
            market_seq=self.market_seq[market],
            slot=self.slot,
            ts=self.ts,
            action=action,
            authority=user[0],
            sub_account_id=user[1],
        )
        return StreamEvent(topics.orders(self.cluster, *market), encode(event), event)

    def _place(self, market: MarketKey) -> StreamEvent:
        rng = self.rng
        user = rng.choice(self.user_keys)
        order_id = self._next_id[user]
        self._next_id[user] = order_id + 1
        direction = rng.choice((PositionDirection.Long, PositionDirection.Short))
        sign = 1 if direction == PositionDirection.Long else -1
        size = rng.randrange(1, 200) * STEP_SIZE * 10
        away = rng.randrange(1, 400) * TICK_SIZE * 10  # how far from the oracle, passive side
        price = ORACLE_PRICE - sign * away
        kind = rng.random()
        order = Order(
            order_id=order_id,
            market_index=market[1],
            market_type=market[0],
            order_type=OrderType.Limit,
            direction=direction,
            base_asset_amount=size,
            slot=self.slot,
            price=price,
            status=OrderStatus.Open,
            post_only=True,
        )
        if kind < 0.15:  # oracle-pegged
            order.price = 0
            order.oracle_price_offset = -sign * away
        elif kind < 0.25:  # a limit order still in its auction
            order.post_only = False
            order.auction_duration = rng.randrange(2, 12)
            order.auction_start_price = ORACLE_PRICE - sign * 5 * TICK_SIZE
            order.auction_end_price = price
        elif kind < 0.32:  # a market order with its auction
            order.order_type = OrderType.Market
            order.post_only = False
            order.auction_duration = 10
            order.auction_start_price = ORACLE_PRICE
            order.auction_end_price = ORACLE_PRICE + sign * 50 * TICK_SIZE
            order.price = ORACLE_PRICE + sign * 60 * TICK_SIZE
            order.max_ts = self.ts + 30
        elif kind < 0.4:  # an untriggered trigger limit order
            order.order_type = OrderType.TriggerLimit
            order.post_only = False
            order.trigger_price = ORACLE_PRICE + rng.choice((-1, 1)) * away
            order.trigger_condition = rng.choice(
                (OrderTriggerCondition.Above, OrderTriggerCondition.Below)
            )
        self.orders[market][(user, order_id)] = order
        return self._commit(market, user, order.clone(), OrderAction.PLACE)

    def _fill(self, market: MarketKey, key: tuple[UserKey, int]) -> StreamEvent:
        order = self.orders[market][key]
        left = order.base_asset_amount - order.base_asset_amount_filled
        if self.rng.random() < 0.4:
            base = left
        else:
            base = max(STEP_SIZE, left // self.rng.randrange(2, 5) // STEP_SIZE * STEP_SIZE)
        order.base_asset_amount_filled += base
        order.quote_asset_amount_filled += base * ORACLE_PRICE // BASE_PRECISION
        if order.base_asset_amount_filled >= order.base_asset_amount:
            del self.orders[market][key]
        return self._commit(market, key[0], order.clone(), OrderAction.FILL)

    def _modify(self, market: MarketKey, key: tuple[UserKey, int]) -> StreamEvent:
        order = self.orders[market][key]
        sign = 1 if order.direction == PositionDirection.Long else -1
        changed = replace(order, price=order.price - sign * TICK_SIZE * self.rng.randrange(1, 20))
        self.orders[market][key] = changed
        return self._commit(market, key[0], changed.clone(), OrderAction.MODIFY)

    def _trigger(self, market: MarketKey, key: tuple[UserKey, int]) -> StreamEvent:
        order = self.orders[market][key]
        fired = (
            OrderTriggerCondition.TriggeredAbove
            if order.trigger_condition == OrderTriggerCondition.Above
            else OrderTriggerCondition.TriggeredBelow
        )
        changed = replace(order, trigger_condition=fired, slot=self.slot)
        self.orders[market][key] = changed
        return self._commit(market, key[0], changed.clone(), OrderAction.TRIGGER)

    def _leave(
        self, market: MarketKey, key: tuple[UserKey, int], action: OrderAction
    ) -> StreamEvent:
        order = self.orders[market].pop(key)
        gone = replace(order, status=OrderStatus.Canceled)
        return self._commit(market, key[0], gone, action)

    def slot_message(self) -> tuple[str, bytes]:
        return topics.slot(self.cluster), encode(SlotMessage(slot=self.slot, ts=self.ts))

    # --- what the node would answer ---------------------------------------------------------
    def snapshot_body(self, market_type: MarketType, market_index: int) -> bytes:
        market = (market_type, market_index)
        market_seq = self.market_seq[market]
        orders = [
            OrderEvent.from_order(
                order,
                seq=self.seq,
                market_seq=market_seq,
                slot=self.slot,
                ts=self.ts,
                action=OrderAction.PLACE,
                authority=user[0],
                sub_account_id=user[1],
            )
            for (user, _), order in sorted(self.orders[market].items(), key=lambda kv: kv[0])
        ]
        return msgspec.json.encode(
            {
                "market_type": _LEVEL[market_type],
                "market_index": market_index,
                "market_seq": market_seq,
                "slot": self.slot,
                "orders": orders,
            }
        )

    def reference_book(self) -> DLOB:
        """A book built from the committed orders, to compare a subscriber's with."""
        book = DLOB()
        for market_type, market_index in self.markets:
            book.add_market(market_type, market_index, tick_size=TICK_SIZE)
        for market in self.markets:
            for (user, _), order in self.orders[market].items():
                book.insert(user, order.clone())
        if self.slot > book.slot:
            book.advance_slot(self.slot)
        return book


def book_orders(book: DLOB) -> dict[tuple[MarketKey, UserKey, int], Order]:
    """Every on-chain order of a book by (market, user, order id)."""
    return {
        ((n.order.market_type, n.order.market_index), n.user, n.order.order_id): n.order
        for n in book.nodes()
        if n.uuid is None
    }


def stream_orders(stream: OrderStream) -> dict[tuple[MarketKey, UserKey, int], Order]:
    return {
        (market, user, order_id): order
        for market, orders in stream.orders.items()
        for (user, order_id), order in orders.items()
    }


@dataclass(slots=True)
class SnapshotService:
    """``GET /v1/orders/snapshot`` from an :class:`OrderStream`; ``delay`` (seconds) holds each
    answer back, ``fail_next`` answers that many requests with a 503 first."""

    stream: OrderStream
    delay: float = 0.0
    fail_next: int = 0
    served: int = 0
    failed: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        market_type = {"perp": MarketType.Perp, "spot": MarketType.Spot}.get(
            request.query.get("market_type", "")
        )
        raw_index = request.query.get("market_index", "")
        if market_type is None or not raw_index.isdecimal():
            return web.json_response({"ok": False, "detail": "bad market"}, status=400)
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            return web.json_response({"ok": False, "detail": "not ready"}, status=503)
        # The cut is taken when the request arrives, as the node takes it; the delay only
        # holds the answer back, so events committed meanwhile are the subscriber's to buffer.
        body = self.stream.snapshot_body(market_type, int(raw_index))
        if self.delay:
            await asyncio.sleep(self.delay)
        self.served += 1
        return web.Response(body=body, content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/orders/snapshot", self.handle)
        return app


async def publish(
    transport: Transport, items: Iterable[tuple[str, bytes]], window: int = 500
) -> None:
    """Publish at QoS 1 in order, ``window`` in flight at a time."""
    batch: list[tuple[str, bytes]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= window:
            await asyncio.gather(*(transport.publish(t, p, 1) for t, p in batch))
            batch = []
    if batch:
        await asyncio.gather(*(transport.publish(t, p, 1) for t, p in batch))
