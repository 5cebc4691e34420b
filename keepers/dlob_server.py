"""The DLOB server (``keepers dlob-server``): a :class:`~keepers.dlob_feed.DlobFeed` over HTTP.

Endpoints (aiohttp), query parameters as the protocol's public DLOB server names them:

* ``GET /l2?marketIndex=&marketType=perp|spot&depth=&includeVamm=true|false``: the best
  ``depth`` price levels per side (default 10, at most 100), each
  ``{"price", "size", "sources": {"dlob": size, "vamm": size}}``; ``includeVamm`` (perp only)
  merges ``depth`` levels of the vAMM's liquidity (:func:`dlob.get_vamm_l2_levels`).
* ``GET /l3?marketIndex=&marketType=``: every resting order, best first, each
  ``{"price", "size", "maker", "subAccountId", "orderId"}``.
* ``GET /orders?marketIndex=&marketType=``: every order and signed intent in the market's book,
  with all order fields (camelCase names, enums as lower-camel variant names, as the public
  server's ``/orders/json``), sorted by user and order id.
* ``GET /health``: 200 once every followed market loaded its first snapshot, 503 before.
* ``GET /metrics``: Prometheus text from this server's own ``CollectorRegistry`` (the bus
  client's, the feed's and the server's series).

Amounts are ints at the program's precisions (prices PRICE_PRECISION, sizes the market's base
units), written as JSON strings where they can exceed 2**53 (``price``, ``size``, every order
amount), as the public server writes its BNs. Every book answer carries ``slot`` (the slot the
query was made at: the book's), ``oracle`` (the oracle price it used), ``marketSeq`` and
``synced`` (false while the market reloads a snapshot after a gap or a reconnect).
Errors: 400 for a bad parameter, 404 for a market not followed, 503 while the market has no
snapshot, no oracle price, or (``includeVamm``) no AMM yet; bodies ``{"error": ...}``.

Where the vAMM comes from: the bus carries no market accounts, so the server fetches each
followed perp market from the node (``GET /v1/markets/perp/{i}`` through the node client's
``perp_market``) every ``market_refresh_interval`` seconds; vAMM levels are computed from the
latest fetched AMM, hence up to that interval old. The oracle price is the feed's (bus, last
``OracleMessage``), falling back to the fetched market's ``last_oracle_price``.

Top of book: each time the feed's slot advances, the server publishes a
:class:`~keepers.bus.schemas.TopOfBook` per synced market on ``dlob/top/{type}/{index}``
(QoS 0, retained: a newcomer gets the latest at once), at most once per slot per market. It is
the book's own resting orders (no vAMM), at the book's slot and the feed's oracle price.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from dlob import DLOBNode, get_vamm_l2_levels
from keepers.bus import BusClient, make_transport, topics
from keepers.bus.client import Backoff, BusCollector
from keepers.bus.schemas import TopOfBook
from keepers.bus.transport import TransportError
from keepers.dlob_feed import (
    DlobFeed,
    DlobFeedCollector,
    FollowedMarket,
    HttpSnapshotLoader,
    SnapshotLoader,
)
from keepers.rpc import NodeClient
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import Order
from protocol.types import ContractType, MarketType

_log = structlog.get_logger("keepers.dlob_server")

DEFAULT_DEPTH: Final = 10
MAX_DEPTH: Final = 100
DEFAULT_PORT: Final = 8900

MarketKey = tuple[MarketType, int]

_LEVEL: Final = {MarketType.Perp: "perp", MarketType.Spot: "spot"}
_FROM_LEVEL: Final = {"perp": MarketType.Perp, "spot": MarketType.Spot}


class NodeMarkets(Protocol):
    """The node reads the server needs (:class:`keepers.rpc.NodeClient` has them); ``None``
    for a market the node does not have."""

    async def perp_market(self, market_index: int) -> PerpMarket | None: ...

    async def spot_market(self, market_index: int) -> SpotMarket | None: ...


def parse_market(text: str) -> MarketKey:
    """``"perp:0"`` / ``"spot-1"`` -> ``(MarketType, index)``; ``ValueError`` if not one."""
    for separator in (":", "-", "/"):
        if separator in text:
            kind, _, index = text.partition(separator)
            break
    else:
        raise ValueError(f"market must be perp:<index> or spot:<index>, got {text!r}")
    market_type = _FROM_LEVEL.get(kind.strip().lower())
    if market_type is None or not index.strip().isdecimal():
        raise ValueError(f"market must be perp:<index> or spot:<index>, got {text!r}")
    return market_type, int(index)


@dataclass(frozen=True, slots=True)
class DlobServerConfig:
    """What ``keepers dlob-server`` runs with. ``markets``: the markets to follow (at least
    one); ``transport``: the MQTT client (``None``: the bus's default); ``port`` 0 picks a
    free one."""

    node_url: str
    broker_url: str
    markets: tuple[MarketKey, ...]
    cluster: str = "local"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    transport: str | None = None
    client_id: str | None = None
    market_refresh_interval: float = 2.0
    queue_size: int = 10_000
    publish_top_of_book: bool = True
    tune_gc: bool = True  # see :func:`tune_gc`


GC_THRESHOLDS: Final = (10_000, 20, 20)


def tune_gc() -> None:
    """Collect the young generation every 10,000 allocations instead of 700 (process-wide).

    The writer allocates a handful of tracked objects per event (the decoded message, the
    order, its node and sort entries) and keeps most of them, so with the default threshold
    a young collection runs every ~100 events and the book's growth drives older ones. With
    :data:`GC_THRESHOLDS`, ``benchmarks/dlob_ingest.py`` measured 15.9-16.9 us of CPU per
    applied event against 17.1-20.3 us with the defaults (50,000 events, a 15,000-order
    book). The feed makes almost no cyclic garbage (a node's entry cycle is cut when it
    leaves the book), so the memory held back is small."""
    gc.set_threshold(*GC_THRESHOLDS)


def followed_market(market_type: MarketType, account: PerpMarket | SpotMarket) -> FollowedMarket:
    """What the feed needs of a market account: tick size, oracle, prediction-market flag."""
    if isinstance(account, PerpMarket):
        return FollowedMarket(
            market_type=market_type,
            market_index=account.market_index,
            tick_size=account.amm.order_tick_size,
            oracle_id=account.amm.oracle,
            is_prediction_market=account.contract_type == ContractType.Prediction,
        )
    return FollowedMarket(
        market_type=market_type,
        market_index=account.market_index,
        tick_size=account.order_tick_size,
        oracle_id=account.oracle,
    )


class _BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _variant(value: Any) -> str:
    name: str = value.name
    return name[:1].lower() + name[1:]


def _order_json(order: Order) -> dict[str, Any]:
    return {
        "status": _variant(order.status),
        "orderType": _variant(order.order_type),
        "marketType": _LEVEL[order.market_type],
        "slot": str(order.slot),
        "orderId": order.order_id,
        "userOrderId": order.user_order_id,
        "marketIndex": order.market_index,
        "price": str(order.price),
        "baseAssetAmount": str(order.base_asset_amount),
        "baseAssetAmountFilled": str(order.base_asset_amount_filled),
        "quoteAssetAmountFilled": str(order.quote_asset_amount_filled),
        "direction": _variant(order.direction),
        "reduceOnly": order.reduce_only,
        "triggerPrice": str(order.trigger_price),
        "triggerCondition": _variant(order.trigger_condition),
        "existingPositionDirection": _variant(order.existing_position_direction),
        "postOnly": order.post_only,
        "immediateOrCancel": order.immediate_or_cancel,
        "oraclePriceOffset": order.oracle_price_offset,
        "auctionDuration": order.auction_duration,
        "auctionStartPrice": str(order.auction_start_price),
        "auctionEndPrice": str(order.auction_end_price),
        "maxTs": str(order.max_ts),
        "postedSlotTail": order.posted_slot_tail,
        "bitFlags": order.bit_flags,
    }


def _node_json(node: DLOBNode) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user": node.user[0].hex(),
        "subAccountId": node.user[1],
        "order": _order_json(node.order),
    }
    if node.uuid is not None:
        out["uuid"] = node.uuid.hex()
    return out


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise _BadRequest(400, f"{name} must be true or false, got {value!r}")


class DlobServer:
    """The HTTP app and the top-of-book publisher over one feed.

    ``markets``: where perp/spot market accounts come from (vAMM levels, oracle fallback);
    ``None`` serves without them (``includeVamm`` answers 503). ``bus``: publishes the top of
    book (``None``: not published). Call :meth:`start` / :meth:`close` around serving
    :attr:`app`.
    """

    def __init__(
        self,
        feed: DlobFeed,
        *,
        cluster: str,
        bus: BusClient | None = None,
        markets: NodeMarkets | None = None,
        registry: CollectorRegistry | None = None,
        market_refresh_interval: float = 2.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.feed = feed
        self._cluster = cluster
        self._bus = bus
        self._market_source = markets
        self._refresh_interval = market_refresh_interval
        self._backoff = backoff or Backoff(initial=0.1, maximum=5.0)
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self.perp_markets: dict[int, PerpMarket] = {}
        self.spot_markets: dict[int, SpotMarket] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(DlobFeedCollector(feed))
        if bus is not None:
            self.registry.register(BusCollector(bus, "dlob-server"))
        self._requests = Counter(
            "keepers_dlob_http_requests",
            "HTTP requests answered, by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self._tops = Counter(
            "keepers_dlob_tops_published",
            "Top-of-book messages published",
            ["market_type", "market_index"],
            registry=self.registry,
        )
        self._top_failures = Counter(
            "keepers_dlob_top_publish_failures",
            "Top-of-book messages not published (bus down)",
            registry=self.registry,
        )
        self.published_slots: dict[MarketKey, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/l2", self._l2),
                web.get("/l3", self._l3),
                web.get("/orders", self._orders),
                web.get("/health", self._health),
                web.get("/metrics", self._metrics),
            ]
        )

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("DlobServer already started")
        if self._market_source is not None:
            await self.refresh_markets()
            self._tasks.append(
                asyncio.create_task(self._refresh_markets_forever(), name="dlob-server-markets")
            )
        if self._bus is not None:
            self._tasks.append(
                asyncio.create_task(self._publish_tops_forever(), name="dlob-server-top")
            )

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- market accounts ---------------------------------------------------------------------
    async def refresh_markets(self) -> None:
        """Fetch every followed market's account once; a failure keeps the last one (logged)."""
        source = self._market_source
        if source is None:
            return
        for market in self.feed.markets:
            try:
                account = await _market_account(source, market.market_type, market.market_index)
            except Exception as exc:  # transient node trouble: keep the last account, retry
                _log.warning(
                    "market refresh failed",
                    market_type=market.market_type.name,
                    market_index=market.market_index,
                    error=repr(exc),
                )
                continue
            if isinstance(account, PerpMarket):
                self.perp_markets[market.market_index] = account
            else:
                self.spot_markets[market.market_index] = account

    async def _refresh_markets_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            await self.refresh_markets()

    # --- prices ------------------------------------------------------------------------------
    def oracle_price(self, market_type: MarketType, market_index: int) -> int | None:
        """The feed's oracle price, else the fetched market's last oracle price."""
        price = self.feed.oracle_price(market_type, market_index)
        if price is not None:
            return price
        account: PerpMarket | SpotMarket | None
        if market_type == MarketType.Perp:
            perp = self.perp_markets.get(market_index)
            if perp is not None:
                last = perp.amm.historical_oracle_data.last_oracle_price
                return last if last > 0 else None
            return None
        account = self.spot_markets.get(market_index)
        if account is not None:
            last = account.historical_oracle_data.last_oracle_price
            return last if last > 0 else None
        return None

    def query_slot(self) -> int:
        """The slot queries are made at: the book's (never before it)."""
        return max(self.feed.book.slot, self.feed.slot)

    def top_of_book(self, market_type: MarketType, market_index: int) -> TopOfBook | None:
        """The market's best resting bid and ask now; ``None`` without an oracle price."""
        oracle = self.oracle_price(market_type, market_index)
        if oracle is None:
            return None
        slot = self.query_slot()
        l2 = self.feed.book.get_l2(market_type, market_index, oracle, slot, 1)
        return TopOfBook(
            market_type=market_type,
            market_index=market_index,
            slot=slot,
            seq=self.feed.last_seq(market_type, market_index),
            oracle_price=oracle,
            best_bid=l2.bids[0].price if l2.bids else None,
            best_ask=l2.asks[0].price if l2.asks else None,
            best_bid_size=l2.bids[0].size if l2.bids else 0,
            best_ask_size=l2.asks[0].size if l2.asks else 0,
        )

    async def publish_tops(self) -> int:
        """Publish the top of book of every synced market not yet published at this slot."""
        bus = self._bus
        if bus is None:
            return 0
        published = 0
        slot = self.query_slot()
        for market in self.feed.markets:
            key = market.key
            if not self.feed.has_synced(*key) or self.published_slots.get(key, -1) >= slot:
                continue
            top = self.top_of_book(*key)
            if top is None:
                continue
            try:
                await bus.publish(topics.dlob_top(self._cluster, *key), top, qos=0, retain=True)
            except TransportError as exc:
                self._top_failures.inc()
                _log.debug("top of book not published", error=repr(exc))
                continue
            self.published_slots[key] = top.slot
            self._tops.labels(_LEVEL[key[0]], str(key[1])).inc()
            published += 1
        return published

    async def _publish_tops_forever(self) -> None:
        last = 0
        while True:
            last = await self.feed.wait_for_slot(last)
            await self.publish_tops()

    # --- HTTP --------------------------------------------------------------------------------
    def _market(self, request: web.Request) -> tuple[MarketType, int]:
        query = request.query
        raw_type = query.get("marketType")
        raw_index = query.get("marketIndex")
        if raw_type is None or raw_index is None:
            raise _BadRequest(400, "marketIndex and marketType must be supplied")
        market_type = _FROM_LEVEL.get(raw_type.lower())
        if market_type is None:
            raise _BadRequest(400, f"marketType must be perp or spot, got {raw_type!r}")
        if not raw_index.isascii() or not raw_index.isdecimal():
            raise _BadRequest(400, f"marketIndex must be a non-negative integer, got {raw_index!r}")
        market_index = int(raw_index)
        if self.feed.market(market_type, market_index) is None:
            raise _BadRequest(404, f"market {raw_type.lower()} {market_index} is not followed")
        if not self.feed.has_synced(market_type, market_index):
            raise _BadRequest(503, "the market's book has not loaded its first snapshot")
        return market_type, market_index

    def _oracle(self, market_type: MarketType, market_index: int) -> int:
        oracle = self.oracle_price(market_type, market_index)
        if oracle is None:
            raise _BadRequest(503, "no oracle price for the market yet")
        return oracle

    def _header(self, market_type: MarketType, market_index: int, slot: int) -> dict[str, Any]:
        return {
            "marketType": _LEVEL[market_type],
            "marketIndex": market_index,
            "slot": slot,
            "marketSeq": self.feed.market_seq(market_type, market_index),
            # false while the market resyncs: the answer is the book as of ``marketSeq``
            "synced": self.feed.is_synced(market_type, market_index),
        }

    def _answer(
        self, request: web.Request, build: Callable[[web.Request], dict[str, Any]]
    ) -> web.Response:
        try:
            body = build(request)
            status = 200
        except _BadRequest as exc:
            body = {"error": exc.detail}
            status = exc.status
        self._requests.labels(request.path, str(status)).inc()
        return web.json_response(body, status=status)

    async def _l2(self, request: web.Request) -> web.Response:
        return self._answer(request, self._l2_body)

    def _l2_body(self, request: web.Request) -> dict[str, Any]:
        market_type, market_index = self._market(request)
        raw_depth = request.query.get("depth", str(DEFAULT_DEPTH))
        if not raw_depth.isascii() or not raw_depth.isdecimal():
            raise _BadRequest(400, f"depth must be a non-negative integer, got {raw_depth!r}")
        depth = min(int(raw_depth), MAX_DEPTH)
        include_vamm = _flag(request.query.get("includeVamm"), "includeVamm")
        oracle = self._oracle(market_type, market_index)
        vamm = None
        if include_vamm and market_type == MarketType.Perp:
            market = self.perp_markets.get(market_index)
            if market is None:
                raise _BadRequest(503, "the market's AMM has not been loaded from the node yet")
            vamm = get_vamm_l2_levels(market.amm, depth)
        slot = self.query_slot()
        l2 = self.feed.book.get_l2(market_type, market_index, oracle, slot, depth, vamm=vamm)

        def levels(side: Iterable[Any]) -> list[dict[str, Any]]:
            return [
                {
                    "price": str(level.price),
                    "size": str(level.size),
                    "sources": {source: str(size) for source, size in level.sources},
                }
                for level in side
            ]

        body = self._header(market_type, market_index, slot)
        body["oracle"] = oracle
        body["bids"] = levels(l2.bids)
        body["asks"] = levels(l2.asks)
        return body

    async def _l3(self, request: web.Request) -> web.Response:
        return self._answer(request, self._l3_body)

    def _l3_body(self, request: web.Request) -> dict[str, Any]:
        market_type, market_index = self._market(request)
        oracle = self._oracle(market_type, market_index)
        slot = self.query_slot()
        l3 = self.feed.book.get_l3(market_type, market_index, oracle, slot)

        def levels(side: Iterable[Any]) -> list[dict[str, Any]]:
            return [
                {
                    "price": str(level.price),
                    "size": str(level.size),
                    "maker": level.user[0].hex(),
                    "subAccountId": level.user[1],
                    "orderId": level.order_id,
                }
                for level in side
            ]

        body = self._header(market_type, market_index, slot)
        body["oracle"] = oracle
        body["bids"] = levels(l3.bids)
        body["asks"] = levels(l3.asks)
        return body

    async def _orders(self, request: web.Request) -> web.Response:
        return self._answer(request, self._orders_body)

    def _orders_body(self, request: web.Request) -> dict[str, Any]:
        market_type, market_index = self._market(request)
        orders: list[DLOBNode] = []
        intents: list[DLOBNode] = []
        for node in self.feed.book.nodes():
            order = node.order
            if order.market_index == market_index and order.market_type == market_type:
                (intents if node.uuid is not None else orders).append(node)
        orders.sort(key=lambda n: (n.user, n.order.order_id))
        intents.sort(key=lambda n: (n.user, n.uuid or b""))
        body = self._header(market_type, market_index, self.query_slot())
        body["orders"] = [_node_json(node) for node in orders]
        body["intents"] = [_node_json(node) for node in intents]
        return body

    async def _health(self, request: web.Request) -> web.Response:
        feed = self.feed
        ready = feed.is_ready and feed.failure is None
        markets = [
            {
                "marketType": _LEVEL[m.market_type],
                "marketIndex": m.market_index,
                "synced": feed.is_synced(m.market_type, m.market_index),
                "hasSnapshot": feed.has_synced(m.market_type, m.market_index),
                "marketSeq": feed.market_seq(m.market_type, m.market_index),
            }
            for m in feed.markets
        ]
        body = {
            "status": "ok" if ready else "syncing",
            "ready": ready,
            "connected": self._bus.is_connected if self._bus is not None else None,
            "slot": feed.book.slot,
            "orders": len(feed.book),
            "markets": markets,
        }
        status = 200 if ready else 503
        self._requests.labels(request.path, str(status)).inc()
        return web.json_response(body, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._requests.labels(request.path, "200").inc()
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


# --- running it ------------------------------------------------------------------------------
class MarketNotFound(LookupError):
    """The node has no such market."""

    def __init__(self, market_type: MarketType, market_index: int) -> None:
        super().__init__(f"the node has no {_LEVEL[market_type]} market {market_index}")
        self.market_type = market_type
        self.market_index = market_index


async def _market_account(
    source: NodeMarkets, market_type: MarketType, market_index: int
) -> PerpMarket | SpotMarket:
    account: PerpMarket | SpotMarket | None
    if market_type == MarketType.Perp:
        account = await source.perp_market(market_index)
    else:
        account = await source.spot_market(market_index)
    if account is None:
        raise MarketNotFound(market_type, market_index)
    return account


async def _load_followed(
    source: NodeMarkets,
    markets: Iterable[MarketKey],
    backoff: Backoff,
    rng: random.Random,
) -> list[FollowedMarket]:
    """Each market's account from the node, retried with backoff until the node answers (it
    may still be starting, or not have created the market yet)."""
    followed: list[FollowedMarket] = []
    for market_type, market_index in markets:
        attempt = 0
        while True:
            try:
                account = await _market_account(source, market_type, market_index)
            except Exception as exc:  # retried: logged with its cause
                delay = backoff.delay(attempt, rng)
                attempt += 1
                _log.warning(
                    "market account not loaded",
                    market_type=market_type.name,
                    market_index=market_index,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=repr(exc),
                )
                await asyncio.sleep(delay)
                continue
            followed.append(followed_market(market_type, account))
            break
    return followed


async def run_dlob_server(
    config: DlobServerConfig,
    *,
    ready: Callable[[str], object] | None = None,
    node: NodeMarkets | None = None,
    loader: SnapshotLoader | None = None,
) -> None:
    """Run the DLOB server until cancelled (or until its feed fails: :class:`FeedFailed`).

    ``ready`` is called with the server's base URL (``http://host:port``, the real port when
    ``config.port`` is 0) once it listens and the feed is subscribed. ``node`` (market
    accounts) and ``loader`` (order snapshots) default to one
    :class:`keepers.rpc.NodeClient` on ``config.node_url``; with ``node`` given and no
    ``loader``, snapshots come through :class:`~keepers.dlob_feed.HttpSnapshotLoader`.
    """
    if not config.markets:
        raise ValueError("the DLOB server needs at least one market to follow")
    if config.tune_gc:
        tune_gc()
    rng = random.Random()  # noqa: S311 -- jitter, not cryptography
    backoff = Backoff(initial=0.1, maximum=5.0)
    client: NodeClient | None = None
    source: NodeMarkets
    if node is None:
        source = client = NodeClient(config.node_url)
    else:
        source = node
    snapshots: SnapshotLoader
    own_loader: HttpSnapshotLoader | None = None
    if loader is not None:
        snapshots = loader
    elif client is not None:
        snapshots = client
    else:
        snapshots = own_loader = HttpSnapshotLoader(config.node_url)
    client_id = config.client_id or f"dlob-server-{rng.randrange(16**8):08x}"
    bus = BusClient(
        make_transport(config.transport, config.broker_url, client_id),
        deadletter_topic=topics.deadletter(config.cluster),
        queue_size=config.queue_size,
    )
    runner: web.AppRunner | None = None
    feed: DlobFeed | None = None
    server: DlobServer | None = None
    try:
        followed = await _load_followed(source, config.markets, backoff, rng)
        feed = DlobFeed(bus, snapshots, followed, cluster=config.cluster)
        server = DlobServer(
            feed,
            cluster=config.cluster,
            bus=bus if config.publish_top_of_book else None,
            markets=source,
            market_refresh_interval=config.market_refresh_interval,
        )
        await feed.start()
        await bus.start()
        await server.start()
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = _bound_port(runner, config.port)
        url = f"http://{config.host}:{port}"
        _log.info("dlob server listening", url=url, markets=len(followed))
        if ready is not None:
            ready(url)
        await feed.join()
    finally:
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            await server.close()
        if feed is not None:
            await feed.close()
        await bus.close()
        if own_loader is not None:
            await own_loader.close()
        if client is not None:
            await client.close()


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port: int = address[1]
            return port
    return configured
