"""The DLOB fed over the bus: order events and signed intents in, one incrementally kept book out.

:class:`DlobFeed` follows a set of markets. It subscribes (through a
:class:`~keepers.bus.client.BusClient`) to each market's order events, to the perp markets'
signed intents, to the slot and to the markets' oracles, and applies what arrives to one
:class:`dlob.DLOB` that it alone writes.

Ingress. The bus client's bounded queue is the one queue; the feed's writer task is its one
consumer and the only code that mutates the book. Snapshot loads run in tasks of their own and
hand their result back to the writer, which applies it between two deliveries; nothing else
touches the book. Readers get :attr:`DlobFeed.book`, typed :class:`DlobReader` (the book's query
methods only; queries never mutate the book).

Sequencing, per market (``OrderEvent.market_seq``, gap-free from 1 per market):

* in sync, an event with ``market_seq == last + 1`` is applied; ``<= last`` is a duplicate and
  ignored (QoS 1 may deliver twice); ``> last + 1`` is a gap;
* on a gap, and for every market on each (re)connect of the bus (a new connection
  generation: events published while it was down are lost with a clean session), the market
  *resyncs*: its incoming events are buffered, a snapshot is loaded from the node (``GET
  /v1/orders/snapshot``, through a :class:`SnapshotLoader`), that market's on-chain orders
  in the book are replaced by the snapshot's, ``last`` becomes the snapshot's ``market_seq``,
  and the buffered events are replayed in ``market_seq`` order through the rule above (so
  only those past the snapshot apply, and a gap among them resyncs again);
* a snapshot is requested only after the bus has (re)subscribed, so it includes every event
  the subscription missed; a snapshot requested before a later reconnect is discarded and
  requested again;
* a failed snapshot load is retried with jittered exponential backoff, forever, until the
  feed closes; past ``max_buffer`` buffered events the buffer is dropped and a fresh snapshot
  requested (it covers every event received so far).

Malformed payloads never reach the feed: :class:`~keepers.bus.client.BusClient` counts and
dead-letters them at ingress (:attr:`FeedStats` reads its count). Reconnecting with jittered
backoff is the bus client's job too.

Applying an event (the node publishes an order as it is *after* the change): ``place`` inserts,
``fill`` records the cumulative fill (a fully filled or no longer open order leaves the book),
``cancel`` / ``expire`` remove, ``trigger`` / ``modify`` replace the order (its keys change).
An event the book cannot hold (:class:`dlob.DLOBError`) is counted (``unbookable``) and
skipped; the node only publishes orders the program accepted, so this means a schema drift,
not a transport fault.

Signed intents (:class:`~keepers.bus.schemas.IntentMessage`) are not sequenced: each is checked
(signed by the user's authority with a valid ed25519 signature, auction params as the program
requires, a perp market followed here, signed at most :data:`INTENT_SLOT_LEAD` slots ahead of
the feed's slot, auction not over) and inserted with :meth:`dlob.DLOB.insert_signed_intent`.
An intent leaves the book when the slot passes its ``max_slot`` (``slot + auction_duration``,
after which the program refuses it), or when the node publishes the order placed from it (a
``place`` of the same user with the ``SignedMessage`` flag, market, direction, size and signed
slot).

Deviations and known limits:

* An intent is booked only when its signer is the user's authority: telling a delegate from
  a forger needs the user account, which the feed does not hold, so delegate-signed intents
  are refused (``not_authority``) rather than letting anyone fill every book with intents for
  accounts that are not theirs. The node checks everything again at placement.
* An intent's order is built from its signed params as they are (:func:`intent_order`): the
  program's placement may still sanitize auction prices toward the user and round the size to
  the step size; the book shows what was signed.
* Oracle prices are the last :class:`~keepers.bus.schemas.OracleMessage` per oracle id; the
  feed does not judge their validity (the program does, per action).
* ``TopOfBook.seq``-style global sequence: :meth:`DlobFeed.last_seq` is the global ``seq`` of
  the last order event applied to a market (0 before any; unchanged by a snapshot).
* A resync walks the whole book once to drop that market's on-chain orders (O(orders); the
  book has no per-market clear), then inserts the snapshot's.

Slots. The book's slot follows the node's :class:`~keepers.bus.schemas.SlotMessage` (and an
inserted order's slot, which the book moves up to itself); order events do not move it, which
keeps the writer's hot path free of slot work. Queries are made at ``max(book slot, feed
slot)``, never before the book's.

Units are the protocol's throughout (prices PRICE_PRECISION, sizes the market's base units).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

import aiohttp
import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dlob import (
    DLOB,
    DLOBError,
    DLOBNode,
    DuplicateOrder,
    JitAuctionNode,
    L2OrderBook,
    L3OrderBook,
    MarketKey,
    NodeToFill,
    VammLevels,
)
from keepers.bus import topics
from keepers.bus.client import Backoff, BusClient
from keepers.bus.schemas import (
    IntentMessage,
    OracleMessage,
    OrderAction,
    OrderEvent,
    OrderFields,
    SlotMessage,
)
from keepers.feed_writer import FeedWriter
from protocol.keys import verify_signature
from protocol.math.auction import has_valid_auction_params
from protocol.signed_intent import OrderIntent
from protocol.state.user import Order, UserKey
from protocol.types import MarketType, OrderBitFlag, OrderStatus, PostOnlyParam

_log = structlog.get_logger("keepers.dlob_feed")

INTENT_SLOT_LEAD: Final = 5
"""How many slots ahead of the feed's slot an intent may be signed (the trader's view of the
slot may be a tick ahead of ours). Further ahead it is refused: inserting it would move the
book's slot, which every query must then not be before."""

DEFAULT_MAX_BUFFER: Final = 100_000
DEFAULT_SNAPSHOT_TIMEOUT: Final = 30.0
_USER_KEY_CACHE_LIMIT: Final = 100_000

_MARKET_LEVEL: Final = {MarketType.Perp: "perp", MarketType.Spot: "spot"}


# --- snapshots -------------------------------------------------------------------------------
class OrdersSnapshotView(Protocol):
    """A consistent cut of one market's open orders: every order event with ``market_seq <=``
    this one's is reflected, none after. ``orders`` are ``(user, order)`` pairs."""

    @property
    def market_seq(self) -> int: ...

    @property
    def slot(self) -> int: ...

    @property
    def orders(self) -> Sequence[tuple[UserKey, Order]]: ...


class SnapshotLoader(Protocol):
    """Where snapshots come from: :class:`HttpSnapshotLoader`, or the node's RPC client
    (``keepers.rpc.NodeClient.orders_snapshot`` has this signature)."""

    async def orders_snapshot(
        self, market_type: MarketType, market_index: int
    ) -> OrdersSnapshotView: ...


class SnapshotUnavailable(Exception):
    """A snapshot could not be loaded (node unreachable, an error status, a malformed body)."""

    def __init__(self, market_type: MarketType, market_index: int, detail: str) -> None:
        super().__init__(f"snapshot of {market_type.name} {market_index}: {detail}")
        self.market_type = market_type
        self.market_index = market_index
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MarketOrdersSnapshot:
    """:class:`OrdersSnapshotView` as :class:`HttpSnapshotLoader` returns it."""

    market_type: MarketType
    market_index: int
    market_seq: int
    slot: int
    orders: tuple[tuple[UserKey, Order], ...]


class _SnapshotBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``GET /v1/orders/snapshot``. ``market_type`` is accepted as the query's
    ``perp``/``spot`` or as the enum's integer value."""

    market_type: str | int
    market_index: int
    market_seq: int
    slot: int
    orders: list[OrderEvent]


_snapshot_decoder: Final = msgspec.json.Decoder(_SnapshotBody)


def parse_orders_snapshot(
    body: bytes, market_type: MarketType, market_index: int
) -> MarketOrdersSnapshot:
    """The snapshot in a ``GET /v1/orders/snapshot`` body, checked to be of the market asked
    for; :class:`SnapshotUnavailable` if it is not a valid one."""
    try:
        parsed = _snapshot_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SnapshotUnavailable(market_type, market_index, f"malformed body: {exc}") from None
    if parsed.market_type not in (market_type.value, _MARKET_LEVEL[market_type]) or (
        parsed.market_index != market_index
    ):
        raise SnapshotUnavailable(
            market_type,
            market_index,
            f"the node answered for market {parsed.market_type!r} {parsed.market_index}",
        )
    orders: list[tuple[UserKey, Order]] = []
    for event in parsed.orders:
        if (event.market_type, event.market_index) != (market_type, market_index):
            raise SnapshotUnavailable(
                market_type,
                market_index,
                f"order {event.order.order_id} is of market "
                f"{event.market_type.name} {event.market_index}",
            )
        orders.append((event.user_key, _to_order(event.order)))
    return MarketOrdersSnapshot(
        market_type=market_type,
        market_index=market_index,
        market_seq=parsed.market_seq,
        slot=parsed.slot,
        orders=tuple(orders),
    )


class HttpSnapshotLoader:
    """:class:`SnapshotLoader` over the node's HTTP API (aiohttp). One attempt per call, bounded
    by ``timeout``; :class:`DlobFeed` retries with backoff. Uses ``session`` if given (the
    caller closes it), else one of its own (:meth:`close`)."""

    def __init__(
        self,
        node_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
    ) -> None:
        self._url = node_url.rstrip("/") + "/v1/orders/snapshot"
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), timeout=self._timeout
            )
        return self._session

    async def orders_snapshot(
        self, market_type: MarketType, market_index: int
    ) -> MarketOrdersSnapshot:
        params = {"market_type": _MARKET_LEVEL[market_type], "market_index": str(market_index)}
        try:
            async with self._client().get(
                self._url, params=params, timeout=self._timeout
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SnapshotUnavailable(market_type, market_index, repr(exc)) from exc
        if status != 200:
            raise SnapshotUnavailable(
                market_type, market_index, f"HTTP {status}: {body[:200].decode(errors='replace')}"
            )
        return parse_orders_snapshot(body, market_type, market_index)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


# --- the read-only view ------------------------------------------------------------------------
class DlobReader(Protocol):
    """The book's queries (:class:`dlob.DLOB` has every one); none of them mutates the book."""

    @property
    def slot(self) -> int: ...

    def markets(self) -> list[MarketKey]: ...

    def __len__(self) -> int: ...

    def get(self, user: UserKey, order_id: int) -> DLOBNode | None: ...

    def get_signed_intent(self, user: UserKey, uuid: bytes) -> DLOBNode | None: ...

    def nodes(self) -> Iterator[DLOBNode]: ...

    def best_bid(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        *,
        vamm_bid: int | None = None,
    ) -> int | None: ...

    def best_ask(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        *,
        vamm_ask: int | None = None,
    ) -> int | None: ...

    def get_l2(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        depth: int = ...,
        *,
        vamm: VammLevels | None = None,
    ) -> L2OrderBook: ...

    def get_l3(
        self, market_type: MarketType, market_index: int, oracle_price: int, slot: int
    ) -> L3OrderBook: ...

    def find_crossing_resting_limit_orders(
        self, market_type: MarketType, market_index: int, oracle_price: int, slot: int, ts: int
    ) -> list[NodeToFill]: ...

    def find_nodes_to_fill(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        ts: int,
        *,
        fallback_bid: int | None = None,
        fallback_ask: int | None = None,
        min_auction_duration: int = 0,
    ) -> list[NodeToFill]: ...

    def find_expired_nodes(
        self, market_type: MarketType, market_index: int, ts: int
    ) -> list[DLOBNode]: ...

    def find_nodes_to_trigger(
        self, market_type: MarketType, market_index: int, oracle_price: int
    ) -> list[DLOBNode]: ...

    def find_jit_auction_nodes(
        self, market_type: MarketType, market_index: int, oracle_price: int, slot: int
    ) -> list[JitAuctionNode]: ...


# --- configuration and counters --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FollowedMarket:
    """A market the feed follows: ``tick_size`` is its ``order_tick_size`` (the book rounds
    prices to it), ``oracle_id`` its oracle (``None``: no oracle subscription)."""

    market_type: MarketType
    market_index: int
    tick_size: int
    oracle_id: str | None = None
    is_prediction_market: bool = False

    @property
    def key(self) -> MarketKey:
        return (self.market_type, self.market_index)


class IntentRejection(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    NOT_AUTHORITY = "not_authority"  # signed by a key other than the user's authority
    BAD_PARAMS = "bad_params"  # not a perp order, no valid auction, or a book-refused order
    TOO_EARLY = "too_early"  # signed for a slot too far ahead of the feed's
    EXPIRED = "expired"  # its auction is over
    DUPLICATE = "duplicate"  # the user's uuid is in the book already
    NOT_FOLLOWED = "not_followed"


@dataclass(slots=True)
class FeedStats:
    """Counters (read by tests and by :class:`DlobFeedCollector`)."""

    applied: int = 0  # order events applied to the book (in sync or replayed after a snapshot)
    duplicates: int = 0  # order events at or below the market's last applied market_seq
    gaps: int = 0  # order events past last + 1
    resyncs: int = 0  # snapshot loads started (first connect, reconnect, gap, overflow)
    snapshots_applied: int = 0
    snapshot_failures: int = 0
    snapshot_orders_skipped: int = 0  # snapshot orders the book refused
    buffer_overflows: int = 0
    unbookable: int = 0  # order events the book refused
    unfollowed: int = 0  # messages for markets the feed does not follow
    intents_inserted: int = 0
    intents_expired: int = 0
    intents_placed: int = 0  # removed because the node placed their order
    intents_rejected: dict[IntentRejection, int] = field(
        default_factory=lambda: dict.fromkeys(IntentRejection, 0)
    )
    oracle_updates: int = 0
    slot_updates: int = 0


class FeedFailed(Exception):
    """The feed's writer stopped on an error (the book's invariants may be broken)."""


class _ResyncReason(StrEnum):
    START = "start"
    RECONNECT = "reconnect"
    GAP = "gap"
    OVERFLOW = "buffer_overflow"


class _MarketSync:
    """Sequencing state of one market (owned by the writer)."""

    __slots__ = (
        "buffer",
        "last",
        "market",
        "request",
        "seq",
        "synced_once",
        "syncing",
        "task",
    )

    def __init__(self, market: FollowedMarket) -> None:
        self.market = market
        self.last = 0  # last market_seq applied
        self.seq = 0  # global seq of the last event applied
        # Until the first snapshot every event is buffered.
        self.syncing = True
        self.synced_once = False
        self.buffer: list[OrderEvent] = []
        self.request = 0  # id of the snapshot request whose answer is awaited
        self.task: asyncio.Task[None] | None = None


def intent_order(intent: OrderIntent) -> Order:
    """The order an intent stands for in the book: its signed params as they are, at the slot
    the user signed at, marked ``SignedMessage``; ``order_id`` 0 (the node assigns one when it
    places it). Units are the params' (PRICE_PRECISION, BASE_PRECISION)."""
    params = intent.params
    return Order(
        order_id=0,
        market_index=params.market_index,
        market_type=params.market_type,
        order_type=params.order_type,
        direction=params.direction,
        base_asset_amount=params.base_asset_amount,
        slot=intent.slot,
        price=params.price,
        trigger_price=params.trigger_price or 0,
        trigger_condition=params.trigger_condition,
        auction_start_price=params.auction_start_price or 0,
        auction_end_price=params.auction_end_price or 0,
        auction_duration=params.auction_duration or 0,
        max_ts=params.max_ts or 0,
        oracle_price_offset=params.oracle_price_offset or 0,
        user_order_id=params.user_order_id,
        status=OrderStatus.Open,
        reduce_only=params.reduce_only,
        post_only=params.post_only != PostOnlyParam.None_,
        immediate_or_cancel=params.immediate_or_cancel,
        bit_flags=int(OrderBitFlag.SignedMessage),
    )


def _fields_match_order() -> bool:
    return tuple(OrderFields.__struct_fields__) == tuple(f.name for f in dataclasses.fields(Order))


if _fields_match_order():
    _astuple = msgspec.structs.astuple

    def _to_order(fields: OrderFields) -> Order:
        """``fields.to_order()``, positionally: the schema lists ``Order``'s fields in its own
        order (checked at import), and this is ~5x cheaper than by name on the hot path."""
        return Order(*_astuple(fields))

else:  # pragma: no cover - only if the schema and the dataclass drift apart

    def _to_order(fields: OrderFields) -> Order:
        return fields.to_order()


_SIGNED = int(OrderBitFlag.SignedMessage)
_OPEN = OrderStatus.Open
_PLACE = OrderAction.PLACE
_FILL = OrderAction.FILL
_CANCEL = OrderAction.CANCEL
_EXPIRE = OrderAction.EXPIRE


# --- the feed --------------------------------------------------------------------------------
class DlobFeed(FeedWriter):
    """One DLOB kept from the bus; see the module docstring.

    Lifecycle (:class:`~keepers.feed_writer.FeedWriter`): build, :meth:`start` (subscribes and
    starts the writer), then start the bus client (or have it running already); :meth:`close`
    stops the writer and snapshot loads but leaves the bus to its owner. Use as ``async with
    DlobFeed(...)`` for start/close.
    """

    writer_name = "dlob-feed-writer"
    failed_error = FeedFailed

    def __init__(
        self,
        bus: BusClient,
        loader: SnapshotLoader,
        markets: Iterable[FollowedMarket],
        *,
        cluster: str,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        verify_intent_signatures: bool = True,
    ) -> None:
        followed = list(markets)
        if not followed:
            raise ValueError("a DLOB feed needs at least one market to follow")
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        super().__init__(bus, backoff=backoff, rng=rng, sleep=sleep)
        self._loader = loader
        self._cluster = cluster
        self._max_buffer = max_buffer
        self._snapshot_timeout = snapshot_timeout
        self._verify = verify_intent_signatures
        self.stats = FeedStats()
        self._book = DLOB()
        self._markets: dict[MarketKey, _MarketSync] = {}
        self._oracle_markets: dict[str, list[MarketKey]] = {}
        for market in followed:
            if market.key in self._markets:
                raise ValueError(f"market {market.market_type.name} {market.market_index} twice")
            self._book.add_market(
                market.market_type,
                market.market_index,
                tick_size=market.tick_size,
                is_prediction_market=market.is_prediction_market,
            )
            self._markets[market.key] = _MarketSync(market)
            if market.oracle_id is not None:
                self._oracle_markets.setdefault(market.oracle_id, []).append(market.key)
        self._oracles: dict[str, OracleMessage] = {}
        self.slot = 0  # the node's slot, from SlotMessage (0 until one arrives)
        self.ts = 0
        self._ready_snapshots: list[tuple[_MarketSync, int, OrdersSnapshotView]] = []
        self._slot_changed: asyncio.Future[None] | None = None
        self._user_keys: dict[tuple[str, int], UserKey] = {}
        # intents: expiry heap and per-user index (for removal when the node places them)
        self._intent_expiry: list[tuple[int, int, UserKey, bytes]] = []
        self._intent_seq = 0
        self._intents_by_user: dict[UserKey, dict[bytes, tuple[MarketKey, int, int, int]]] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> DlobFeed:
        await self.start()
        return self

    def topic_filters(self) -> list[str]:
        """Every topic the feed subscribes to."""
        cluster = self._cluster
        filters = [topics.slot(cluster)]
        for market_type, market_index in self._markets:
            filters.append(topics.orders(cluster, market_type, market_index))
            if market_type == MarketType.Perp:
                filters.append(topics.intents(cluster, market_index))
        filters.extend(topics.oracle(cluster, oracle_id) for oracle_id in self._oracle_markets)
        return filters

    def _background_tasks(self) -> list[asyncio.Task[None]]:
        return [ms.task for ms in self._markets.values() if ms.task is not None]

    def _wake_waiters(self) -> None:
        self._notify()
        self._notify_slot()

    # --- reading -----------------------------------------------------------------------------
    @property
    def book(self) -> DlobReader:
        """The book, for queries only (the writer is its only writer)."""
        return self._book

    @property
    def dlob(self) -> DLOB:
        """The book as the :class:`dlob.DLOB` class, for code typed against it (the runtime's
        view); read-only all the same: only the feed's writer may mutate it."""
        return self._book

    @property
    def markets(self) -> list[FollowedMarket]:
        return [ms.market for ms in self._markets.values()]

    def market(self, market_type: MarketType, market_index: int) -> FollowedMarket | None:
        ms = self._markets.get((market_type, market_index))
        return None if ms is None else ms.market

    def market_seq(self, market_type: MarketType, market_index: int) -> int:
        """The last ``market_seq`` applied to the market's book (the snapshot's after a load)."""
        return self._sync(market_type, market_index).last

    def last_seq(self, market_type: MarketType, market_index: int) -> int:
        """The global ``seq`` of the last order event applied to the market (0 before any)."""
        return self._sync(market_type, market_index).seq

    def is_synced(self, market_type: MarketType, market_index: int) -> bool:
        """Loaded a snapshot at least once and not resyncing now."""
        ms = self._sync(market_type, market_index)
        return ms.synced_once and not ms.syncing

    def has_synced(self, market_type: MarketType, market_index: int) -> bool:
        """Loaded a snapshot at least once (it may be resyncing now)."""
        return self._sync(market_type, market_index).synced_once

    @property
    def is_ready(self) -> bool:
        """Every followed market has loaded its first snapshot."""
        return all(ms.synced_once for ms in self._markets.values())

    @property
    def is_synced_all(self) -> bool:
        return all(ms.synced_once and not ms.syncing for ms in self._markets.values())

    def oracle_price(self, market_type: MarketType, market_index: int) -> int | None:
        """The market's last oracle price from the bus (PRICE_PRECISION), ``None`` if none yet."""
        oracle_id = self._sync(market_type, market_index).market.oracle_id
        if oracle_id is None:
            return None
        message = self._oracles.get(oracle_id)
        return None if message is None else message.price

    def oracle(self, oracle_id: str) -> OracleMessage | None:
        return self._oracles.get(oracle_id)

    @property
    def buffered(self) -> int:
        return sum(len(ms.buffer) for ms in self._markets.values())

    def _sync(self, market_type: MarketType, market_index: int) -> _MarketSync:
        ms = self._markets.get((market_type, market_index))
        if ms is None:
            raise KeyError(f"market {market_type.name} {market_index} is not followed")
        return ms

    async def wait_synced(self) -> None:
        """Until every market has loaded a snapshot and none is resyncing (bound it with
        ``asyncio.timeout``); :class:`FeedFailed` if the writer stopped on an error."""
        await self._wait(lambda: self.is_synced_all, "the feed was closed before it synced")

    async def wait_for_market_seq(
        self, market_type: MarketType, market_index: int, market_seq: int
    ) -> None:
        """Until the market is in sync with ``market_seq`` or more applied (checked whenever
        the writer has drained its queue or a sync state changes; bound it with
        ``asyncio.timeout``)."""
        ms = self._sync(market_type, market_index)
        await self._wait(
            lambda: ms.synced_once and not ms.syncing and ms.last >= market_seq,
            "the feed was closed",
        )

    async def wait_for_slot(self, after: int) -> int:
        """Until the feed's slot is past ``after``; the slot."""
        while self.slot <= after:
            if self.failure is not None:
                raise FeedFailed(repr(self.failure)) from self.failure
            if self._closed:
                raise FeedFailed("the feed was closed")
            if self._slot_changed is None:
                self._slot_changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._slot_changed)
        return self.slot

    # --- the writer --------------------------------------------------------------------------
    def _on_delivery(self, message: object) -> None:
        if type(message) is OrderEvent:
            self._on_order_event(message)
        else:
            self._on_other(message)

    def _apply_ready(self) -> None:
        ready, self._ready_snapshots = self._ready_snapshots, []
        for ms, request, snapshot in ready:
            if request == ms.request and ms.syncing:
                self._apply_snapshot(ms, snapshot)

    def _on_new_connection(self, first: bool) -> None:
        """Whatever was published while there was no connection is lost, so every market
        reloads its snapshot."""
        reason = _ResyncReason.START if first else _ResyncReason.RECONNECT
        for ms in self._markets.values():
            self._start_resync(ms, reason)

    def _start_resync(self, ms: _MarketSync, reason: _ResyncReason) -> None:
        self.stats.resyncs += 1
        was_syncing = ms.syncing
        ms.syncing = True
        ms.request += 1
        if ms.task is not None and not ms.task.done():
            ms.task.cancel()
        market = ms.market
        ms.task = asyncio.create_task(
            self._load(ms, ms.request),
            name=f"dlob-snapshot-{market.market_type.name}-{market.market_index}",
        )
        if not was_syncing:
            self._notify()
        _log.info(
            "dlob market resync",
            market_type=market.market_type.name,
            market_index=market.market_index,
            reason=reason.value,
            last_market_seq=ms.last,
            buffered=len(ms.buffer),
        )

    async def _load(self, ms: _MarketSync, request: int) -> None:
        market = ms.market
        snapshot = await self._load_with_retry(
            lambda: self._loader.orders_snapshot(market.market_type, market.market_index),
            attempt_timeout=self._snapshot_timeout,
            on_failure=self._count_snapshot_failure,
            event="dlob snapshot load failed",
            market_type=market.market_type.name,
            market_index=market.market_index,
        )
        self._ready_snapshots.append((ms, request, snapshot))
        self._signal_work()

    def _count_snapshot_failure(self) -> None:
        self.stats.snapshot_failures += 1

    def _apply_snapshot(self, ms: _MarketSync, snapshot: OrdersSnapshotView) -> None:
        book = self._book
        market = ms.market
        market_type, market_index = market.market_type, market.market_index
        stale = [
            node
            for node in book.nodes()
            if node.uuid is None
            and node.order.market_index == market_index
            and node.order.market_type == market_type
        ]
        for node in stale:
            book.remove(node.user, node.order.order_id)
        if snapshot.slot > book.slot:
            self._advance_slot(snapshot.slot)
        for user, order in snapshot.orders:
            try:
                book.insert(user, order)
            except DLOBError as exc:
                self.stats.snapshot_orders_skipped += 1
                _log.warning(
                    "snapshot order not bookable",
                    market_type=market_type.name,
                    market_index=market_index,
                    order_id=order.order_id,
                    error=str(exc),
                )
        if snapshot.market_seq < ms.last:
            _log.warning(
                "snapshot behind the events applied",
                market_type=market_type.name,
                market_index=market_index,
                snapshot_market_seq=snapshot.market_seq,
                last_market_seq=ms.last,
            )
        ms.last = snapshot.market_seq
        ms.syncing = False
        ms.synced_once = True
        ms.task = None
        self.stats.snapshots_applied += 1
        buffered, ms.buffer = ms.buffer, []
        buffered.sort(key=_market_seq)
        for event in buffered:
            self._on_order_event(event)
        self._notify()

    # --- order events ------------------------------------------------------------------------
    def _on_order_event(self, event: OrderEvent) -> None:
        """Sequence one order event and, in turn, apply it (the writer's hot path: one call
        per event, locals over attributes)."""
        fields = event.order
        ms = self._markets.get((fields.market_type, fields.market_index))
        if ms is None:
            self.stats.unfollowed += 1
            return
        if ms.syncing:
            ms.buffer.append(event)
            if len(ms.buffer) > self._max_buffer:
                self.stats.buffer_overflows += 1
                ms.buffer = []
                self._start_resync(ms, _ResyncReason.OVERFLOW)
            return
        seq = event.market_seq
        last = ms.last
        if seq != last + 1:
            if seq <= last:
                self.stats.duplicates += 1
            else:
                self.stats.gaps += 1
                ms.buffer.append(event)
                self._start_resync(ms, _ResyncReason.GAP)
            return
        ms.last = seq
        ms.seq = event.seq
        self.stats.applied += 1
        key = (event.authority, event.sub_account_id)
        user = self._user_keys.get(key)
        if user is None:
            user = self._user(key)
        book = self._book
        action = event.action
        try:
            if action is _PLACE:
                order = _to_order(fields)
                try:
                    book.insert(user, order)
                except DuplicateOrder:
                    book.replace_order(user, order)
                if order.bit_flags & _SIGNED:
                    self._drop_placed_intents(user, order)
            elif action is _FILL:
                filled = fields.base_asset_amount_filled
                if fields.status is not _OPEN or filled >= fields.base_asset_amount:
                    book.remove(user, fields.order_id)
                    return
                node = book.get(user, fields.order_id)
                if node is None:
                    book.insert(user, _to_order(fields))
                    return
                book.update_fill(user, fields.order_id, filled)
                # not a key of any container: set in place like the filled base
                node.order.quote_asset_amount_filled = fields.quote_asset_amount_filled
            elif action is _CANCEL or action is _EXPIRE:
                book.remove(user, fields.order_id)
            elif fields.status is _OPEN and fields.base_asset_amount_filled < (
                fields.base_asset_amount
            ):
                book.replace_order(user, _to_order(fields))  # trigger, modify: keys change
            else:
                book.remove(user, fields.order_id)
        except DLOBError as exc:
            self.stats.unbookable += 1
            _log.warning(
                "order event not bookable",
                market_type=fields.market_type.name,
                market_index=fields.market_index,
                market_seq=event.market_seq,
                action=action.value,
                order_id=fields.order_id,
                error=str(exc),
            )

    def _user(self, key: tuple[str, int]) -> UserKey:
        """The user key of ``(authority hex, sub account)``, remembered (a bounded cache)."""
        if len(self._user_keys) >= _USER_KEY_CACHE_LIMIT:
            self._user_keys.clear()
        user = (bytes.fromhex(key[0]), key[1])
        self._user_keys[key] = user
        return user

    # --- everything else ---------------------------------------------------------------------
    def _on_other(self, message: object) -> None:
        if type(message) is SlotMessage:
            self.stats.slot_updates += 1
            self.ts = message.ts
            if message.slot > self.slot:
                self.slot = message.slot
                if message.slot > self._book.slot:
                    self._advance_slot(message.slot)
                self._notify_slot()
        elif type(message) is OracleMessage:
            self.stats.oracle_updates += 1
            self._oracles[message.oracle_id] = message
        elif type(message) is IntentMessage:
            self._on_intent(message)
        else:
            self.stats.unfollowed += 1

    def _notify_slot(self) -> None:
        slot_changed, self._slot_changed = self._slot_changed, None
        if slot_changed is not None and not slot_changed.done():
            slot_changed.set_result(None)

    def _advance_slot(self, slot: int) -> None:
        self._book.advance_slot(slot)
        self._expire_intents(slot)

    def _on_intent(self, message: IntentMessage) -> None:
        rejected = self.stats.intents_rejected
        key = (message.market_type, message.market_index)
        if key not in self._markets:
            rejected[IntentRejection.NOT_FOLLOWED] += 1
            return
        intent = message.to_intent()
        if intent.params.market_type != MarketType.Perp or not has_valid_auction_params(
            intent.params
        ):
            rejected[IntentRejection.BAD_PARAMS] += 1
            return
        now = max(self._book.slot, self.slot)
        if intent.slot > now + INTENT_SLOT_LEAD:
            rejected[IntentRejection.TOO_EARLY] += 1
            return
        max_slot = intent.max_slot()
        if max_slot < now:
            rejected[IntentRejection.EXPIRED] += 1
            return
        signer = message.signer_bytes
        if signer != intent.authority:
            rejected[IntentRejection.NOT_AUTHORITY] += 1
            return
        if self._verify and not verify_signature(
            signer, intent.signing_bytes(), message.signature_bytes
        ):
            rejected[IntentRejection.BAD_SIGNATURE] += 1
            return
        user = (intent.authority, intent.sub_account_id)
        order = intent_order(intent)
        try:
            self._book.insert_signed_intent(user, intent.uuid, order)
        except DuplicateOrder:
            rejected[IntentRejection.DUPLICATE] += 1
            return
        except DLOBError:
            rejected[IntentRejection.BAD_PARAMS] += 1
            return
        self.stats.intents_inserted += 1
        self._intent_seq += 1
        heapq.heappush(self._intent_expiry, (max_slot, self._intent_seq, user, intent.uuid))
        self._intents_by_user.setdefault(user, {})[intent.uuid] = (
            key,
            intent.slot,
            int(order.direction),
            order.base_asset_amount,
        )

    def _remove_intent(self, user: UserKey, uuid: bytes) -> bool:
        removed = self._book.remove_signed_intent(user, uuid) is not None
        by_user = self._intents_by_user.get(user)
        if by_user is not None:
            by_user.pop(uuid, None)
            if not by_user:
                del self._intents_by_user[user]
        return removed

    def _expire_intents(self, slot: int) -> None:
        heap = self._intent_expiry
        while heap and heap[0][0] < slot:
            _max_slot, _seq, user, uuid = heapq.heappop(heap)
            if self._remove_intent(user, uuid):
                self.stats.intents_expired += 1

    def _drop_placed_intents(self, user: UserKey, order: Order) -> None:
        by_user = self._intents_by_user.get(user)
        if not by_user:
            return
        signed = (
            (order.market_type, order.market_index),
            order.slot,
            int(order.direction),
            order.base_asset_amount,
        )
        for uuid, described in list(by_user.items()):
            if described == signed and self._remove_intent(user, uuid):
                self.stats.intents_placed += 1


def _market_seq(event: OrderEvent) -> int:
    return event.market_seq


class DlobFeedCollector(Collector):
    """Prometheus view of a :class:`DlobFeed`, read at scrape time (no metric calls on the
    writer's path). Register with ``registry.register(DlobFeedCollector(feed))``."""

    def __init__(self, feed: DlobFeed) -> None:
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        feed = self._feed
        stats = feed.stats

        def counter(name: str, doc: str, value: int) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter("keepers_dlob_events_applied", "Order events applied", stats.applied)
        yield counter("keepers_dlob_duplicates", "Order events already applied", stats.duplicates)
        yield counter("keepers_dlob_gaps", "Sequence gaps detected", stats.gaps)
        yield counter("keepers_dlob_resyncs", "Snapshot resyncs started", stats.resyncs)
        yield counter(
            "keepers_dlob_snapshots_applied", "Snapshots applied", stats.snapshots_applied
        )
        yield counter(
            "keepers_dlob_snapshot_failures", "Snapshot loads failed", stats.snapshot_failures
        )
        yield counter(
            "keepers_dlob_buffer_overflows", "Resync buffers dropped", stats.buffer_overflows
        )
        yield counter("keepers_dlob_unbookable", "Order events the book refused", stats.unbookable)
        yield counter("keepers_dlob_malformed", "Payloads that did not decode", feed.malformed)
        yield counter(
            "keepers_dlob_intents_inserted", "Signed intents inserted", stats.intents_inserted
        )
        yield counter(
            "keepers_dlob_intents_expired", "Signed intents expired", stats.intents_expired
        )
        rejected = CounterMetricFamily(
            "keepers_dlob_intents_rejected", "Signed intents refused", labels=["reason"]
        )
        for reason, count in stats.intents_rejected.items():
            rejected.add_metric([reason.value], count)
        yield rejected
        orders = GaugeMetricFamily("keepers_dlob_orders", "Orders and intents in the book")
        orders.add_metric([], len(feed.book))
        yield orders
        yield GaugeMetricFamily("keepers_dlob_slot", "The book's slot", value=feed.book.slot)
        yield GaugeMetricFamily("keepers_dlob_buffered", "Events buffered", value=feed.buffered)
        labels = ["market_type", "market_index"]
        seq = GaugeMetricFamily("keepers_dlob_market_seq", "Last market_seq applied", labels=labels)
        synced = GaugeMetricFamily("keepers_dlob_synced", "1 when in sync", labels=labels)
        for market in feed.markets:
            value = [_MARKET_LEVEL[market.market_type], str(market.market_index)]
            seq.add_metric(value, feed.market_seq(market.market_type, market.market_index))
            synced.add_metric(
                value, 1.0 if feed.is_synced(market.market_type, market.market_index) else 0.0
            )
        yield seq
        yield synced
