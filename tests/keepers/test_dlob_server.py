"""The DLOB server: /l2, /l3, /orders, /health and /metrics over a real aiohttp server on a free
port, and the top of book on the bus at most once per slot per market.

The book in these tests, perp market 0 (tick $0.001, oracle $100.00), every size in whole base
units (1e9):

* bids: Alice #1 2 @ $99.00 and Bob #1 3 @ $99.00 (same order id, two users), Alice #2 1 @
  $98.50, Carol #1 4 pegged at -$2.00 (= $98.00 at the oracle's $100.00);
* asks: Bob #2 5 @ $101.00;
* Alice #3: an untriggered trigger order (in ``/orders``, never in L2/L3).

The vAMM is the AMM of ``tests/dlob/test_book.py::test_vamm_quotes_and_levels_from_reserves``:
two levels of 50 each way, bids $95.238 and $86.580, asks $105.264 and $116.960 (worked out
there by hand).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from benchmarks.dlob_stream import OrderStream, SnapshotService, publish
from keepers.accounts_json import encode_account
from keepers.bus import BusClient, make_transport, topics
from keepers.bus.client import Backoff
from keepers.bus.inprocess import InProcessBroker
from keepers.bus.schemas import (
    OracleMessage,
    OrderAction,
    OrderEvent,
    SlotMessage,
    TopOfBook,
    decode,
    encode,
)
from keepers.dlob_feed import DlobFeed, FollowedMarket
from keepers.dlob_server import (
    GC_THRESHOLDS,
    DlobServer,
    DlobServerConfig,
    followed_market,
    parse_market,
    run_dlob_server,
    tune_gc,
)
from protocol.constants import AMM_RESERVE_PRECISION, BASE_PRECISION, PRICE_PRECISION
from protocol.state.oracle import HistoricalOracleData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import Order, UserKey
from protocol.types import (
    ContractType,
    MarketType,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)
from tests.keepers.dlob_helpers import StreamLoader, until

CLUSTER = "srv"
FAST = Backoff(initial=0.001, maximum=0.005)
TICK = PRICE_PRECISION // 1000
ORACLE_ID = "SOL-PERP"
ALICE: UserKey = (b"\xaa" * 32, 0)
BOB: UserKey = (b"\xbb" * 32, 0)
CAROL: UserKey = (b"\xcc" * 32, 0)
LONG, SHORT = PositionDirection.Long, PositionDirection.Short
_ids = itertools.count()


def usd(dollars: str) -> int:
    whole, _, cents = dollars.partition(".")
    return int(whole) * PRICE_PRECISION + int((cents + "000000")[:6])


def base(units: int) -> int:
    return units * BASE_PRECISION


def amm() -> AMM:
    reserve = 1_000 * AMM_RESERVE_PRECISION
    return AMM(
        oracle=ORACLE_ID,
        base_asset_reserve=reserve,
        quote_asset_reserve=reserve,
        sqrt_k=reserve,
        peg_multiplier=100 * PRICE_PRECISION,
        min_base_asset_reserve=900 * AMM_RESERVE_PRECISION,
        max_base_asset_reserve=1_100 * AMM_RESERVE_PRECISION,
        long_spread=1_000,
        short_spread=1_000,
        order_step_size=BASE_PRECISION // 1000,
        order_tick_size=TICK,
    )


class FakeNode:
    """The node's market reads (``keepers.rpc.NodeClient`` in production)."""

    def __init__(self) -> None:
        self.perp = PerpMarket(market_index=0, name="SOL-PERP", amm=amm())
        self.spot = SpotMarket(
            market_index=1,
            name="ETH",
            oracle="ETH/USD",
            decimals=9,
            order_tick_size=TICK,
            historical_oracle_data=HistoricalOracleData(last_oracle_price=usd("2000")),
        )
        self.reads = 0

    async def perp_market(self, index: int) -> PerpMarket:
        self.reads += 1
        if index != 0:
            raise LookupError(index)
        return self.perp

    async def spot_market(self, index: int) -> SpotMarket:
        self.reads += 1
        if index != 1:
            raise LookupError(index)
        return self.spot


def order(
    order_id: int, direction: PositionDirection, size: int, price: int, **fields: Any
) -> Order:
    values: dict[str, Any] = {"post_only": True, "slot": 1_000, **fields}
    return Order(
        order_id=order_id,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=values.pop("order_type", OrderType.Limit),
        direction=direction,
        base_asset_amount=base(size),
        price=price,
        **values,
    )


BOOK: list[tuple[UserKey, Order]] = [
    (ALICE, order(1, LONG, 2, usd("99.00"))),
    (BOB, order(1, LONG, 3, usd("99.00"))),
    (ALICE, order(2, LONG, 1, usd("98.50"))),
    (CAROL, order(1, LONG, 4, 0, oracle_price_offset=-usd("2.00"))),
    (BOB, order(2, SHORT, 5, usd("101.00"))),
    (
        ALICE,
        order(
            3,
            SHORT,
            1,
            usd("90.00"),
            order_type=OrderType.TriggerLimit,
            post_only=False,
            trigger_price=usd("95.00"),
            trigger_condition=OrderTriggerCondition.Below,
        ),
    ),
]


def book_events() -> list[tuple[str, bytes]]:
    out = []
    for seq, (user, placed) in enumerate(BOOK, start=1):
        event = OrderEvent.from_order(
            placed,
            seq=seq,
            market_seq=seq,
            slot=1_000,
            ts=0,
            action=OrderAction.PLACE,
            authority=user[0],
            sub_account_id=user[1],
        )
        out.append((topics.orders(CLUSTER, MarketType.Perp, 0), encode(event)))
    return out


def oracle_message(price: int = usd("100.00")) -> tuple[str, bytes]:
    message = OracleMessage(oracle_id=ORACLE_ID, price=price, confidence=1, slot=1_000)
    return topics.oracle(CLUSTER, ORACLE_ID), encode(message)


def slot_message(slot: int) -> tuple[str, bytes]:
    return topics.slot(CLUSTER), encode(SlotMessage(slot=slot, ts=slot))


MARKETS = [
    FollowedMarket(MarketType.Perp, 0, TICK, oracle_id=ORACLE_ID),
    FollowedMarket(MarketType.Spot, 1, TICK, oracle_id="ETH/USD"),
]


class Served:
    """A DlobServer over the in-process bus, listening on a free port."""

    def __init__(self, *, node: FakeNode | None, hold: asyncio.Event | None = None) -> None:
        self.broker = InProcessBroker()
        self.bus = BusClient(self.broker.transport(f"srv-{next(_ids)}"), backoff=FAST)
        # the node's snapshots: both markets empty at market_seq 0 (the events come by bus)
        self.loader = StreamLoader(
            OrderStream([(MarketType.Perp, 0), (MarketType.Spot, 1)], CLUSTER), hold=hold
        )
        self.feed = DlobFeed(self.bus, self.loader, MARKETS, cluster=CLUSTER, backoff=FAST)
        self.server = DlobServer(self.feed, cluster=CLUSTER, bus=self.bus, markets=node)
        self.runner = web.AppRunner(self.server.app)
        self.publisher = self.broker.transport(f"pub-{next(_ids)}")
        self.http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        await self.publisher.connect()
        await self.feed.start()
        await self.bus.start()
        await self.server.start()
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        await self.runner.cleanup()
        await self.server.close()
        await self.feed.close()
        await self.bus.close()
        await self.publisher.close()

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.get(self.url + path, params=params) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def fill_book(self) -> None:
        await publish(self.publisher, [oracle_message(), *book_events()])
        await until(
            lambda: (
                self.feed.market_seq(MarketType.Perp, 0) == len(BOOK)
                and self.feed.oracle_price(MarketType.Perp, 0) is not None
            )
        )


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    made = Served(node=FakeNode())
    await made.start()
    try:
        async with asyncio.timeout(5):
            await made.feed.wait_synced()
        await made.fill_book()
        yield made
    finally:
        await made.close()


PERP = {"marketType": "perp", "marketIndex": "0"}


def level(price: str, size: int, **sources: int) -> dict[str, Any]:
    return {
        "price": str(usd(price)),
        "size": str(base(size)),
        "sources": {k: str(base(v)) for k, v in sources.items()},
    }


@pytest.mark.asyncio
async def test_l2_aggregates_levels_and_merges_the_vamm(served: Served) -> None:
    status, body = await served.get("/l2", **PERP, depth="2")
    assert status == 200
    assert body["marketType"] == "perp"
    assert body["marketIndex"] == 0
    assert body["oracle"] == usd("100.00")
    assert body["marketSeq"] == 6
    assert body["synced"] is True
    assert body["slot"] == 1_000
    # $99.00: Alice 2 + Bob 3; Carol's pegged $98.00 is third, past depth 2
    assert body["bids"] == [level("99.00", 5, dlob=5), level("98.50", 1, dlob=1)]
    assert body["asks"] == [level("101.00", 5, dlob=5)]
    status, body = await served.get("/l2", **PERP, depth="2", includeVamm="true")
    assert status == 200
    assert body["bids"] == [level("99.00", 5, dlob=5), level("98.50", 1, dlob=1)]
    assert body["asks"] == [level("101.00", 5, dlob=5), level("105.264", 50, vamm=50)]
    status, body = await served.get("/l2", **PERP)  # default depth 10
    assert [b["price"] for b in body["bids"]] == [str(usd(p)) for p in ("99.00", "98.50", "98.00")]


@pytest.mark.asyncio
async def test_l3_lists_every_resting_order_best_first(served: Served) -> None:
    status, body = await served.get("/l3", **PERP)
    assert status == 200

    def row(price: str, size: int, user: UserKey, order_id: int) -> dict[str, Any]:
        return {
            "price": str(usd(price)),
            "size": str(base(size)),
            "maker": user[0].hex(),
            "subAccountId": user[1],
            "orderId": order_id,
        }

    # equal prices by slot, then user: Alice's 0xaa.. before Bob's 0xbb..
    assert body["bids"] == [
        row("99.00", 2, ALICE, 1),
        row("99.00", 3, BOB, 1),
        row("98.50", 1, ALICE, 2),
        row("98.00", 4, CAROL, 1),
    ]
    assert body["asks"] == [row("101.00", 5, BOB, 2)]
    # the oracle moves to $101: Carol's bid follows to $99.00 (same price as the fixed ones,
    # later in the slot, user order: Alice, Bob, Carol)
    await publish(served.publisher, [oracle_message(usd("101.00"))])
    await until(lambda: served.feed.oracle_price(MarketType.Perp, 0) == usd("101.00"))
    status, body = await served.get("/l3", **PERP)
    assert [(b["price"], b["orderId"]) for b in body["bids"]][:3] == [
        (str(usd("99.00")), 1),
        (str(usd("99.00")), 1),
        (str(usd("99.00")), 1),
    ]
    assert [b["maker"] for b in body["bids"]][:3] == [ALICE[0].hex(), BOB[0].hex(), CAROL[0].hex()]


@pytest.mark.asyncio
async def test_orders_lists_every_order_with_its_fields(served: Served) -> None:
    status, body = await served.get("/orders", **PERP)
    assert status == 200
    keys = [(o["user"], o["order"]["orderId"]) for o in body["orders"]]
    assert keys == sorted((u[0].hex(), o.order_id) for u, o in BOOK)
    trigger = next(o for o in body["orders"] if o["order"]["orderType"] == "triggerLimit")
    assert trigger["order"] == {
        "status": "open",
        "orderType": "triggerLimit",
        "marketType": "perp",
        "slot": "1000",
        "orderId": 3,
        "userOrderId": 0,
        "marketIndex": 0,
        "price": str(usd("90.00")),
        "baseAssetAmount": str(base(1)),
        "baseAssetAmountFilled": "0",
        "quoteAssetAmountFilled": "0",
        "direction": "short",
        "reduceOnly": False,
        "triggerPrice": str(usd("95.00")),
        "triggerCondition": "below",
        "existingPositionDirection": "long",
        "postOnly": False,
        "immediateOrCancel": False,
        "oraclePriceOffset": 0,
        "auctionDuration": 0,
        "auctionStartPrice": "0",
        "auctionEndPrice": "0",
        "maxTs": "0",
        "postedSlotTail": 0,
        "bitFlags": 0,
    }
    assert trigger["user"] == ALICE[0].hex()
    assert trigger["subAccountId"] == 0
    assert body["intents"] == []


@pytest.mark.asyncio
async def test_bad_requests_name_the_problem(served: Served) -> None:
    cases = [
        ({}, 400),
        ({"marketType": "perp"}, 400),
        ({"marketType": "futures", "marketIndex": "0"}, 400),
        ({"marketType": "perp", "marketIndex": "-1"}, 400),
        ({"marketType": "perp", "marketIndex": "7"}, 404),
        ({**PERP, "depth": "ten"}, 400),
        ({**PERP, "includeVamm": "maybe"}, 400),
    ]
    for params, expected in cases:
        status, body = await served.get("/l2", **params)
        assert (status, sorted(body)) == (expected, ["error"]), params
    # spot market 1 has no oracle message: the node's last oracle price ($2000) stands in
    status, body = await served.get("/l2", marketType="spot", marketIndex="1")
    assert status == 200
    assert body["oracle"] == usd("2000")
    assert body["bids"] == body["asks"] == []


@pytest.mark.asyncio
async def test_without_a_market_source_there_is_no_vamm_and_no_oracle_fallback() -> None:
    made = Served(node=None)
    await made.start()
    try:
        async with asyncio.timeout(5):
            await made.feed.wait_synced()
        await made.fill_book()
        status, body = await made.get("/l2", **PERP, includeVamm="true")
        assert status == 503
        assert "AMM" in body["error"]
        status, body = await made.get("/l3", marketType="spot", marketIndex="1")
        assert status == 503
        assert "oracle" in body["error"]
    finally:
        await made.close()


@pytest.mark.asyncio
async def test_health_is_ready_only_after_the_first_snapshot_of_every_market() -> None:
    hold = asyncio.Event()
    made = Served(node=FakeNode(), hold=hold)
    await made.start()
    try:
        await until(lambda: made.loader.calls == 2)
        status, body = await made.get("/health")
        assert status == 503
        assert body["status"] == "syncing"
        assert [m["hasSnapshot"] for m in body["markets"]] == [False, False]
        status, body = await made.get("/l2", **PERP)
        assert status == 503
        hold.set()
        async with asyncio.timeout(5):
            await made.feed.wait_synced()
        status, body = await made.get("/health")
        assert status == 200
        assert body["status"] == "ok"
        assert body["connected"] is True
        assert [m["synced"] for m in body["markets"]] == [True, True]
    finally:
        await made.close()


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text_of_the_feed_bus_and_server(served: Served) -> None:
    await served.get("/l2", **PERP)
    status, text = await served.get("/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert "keepers_dlob_events_applied_total 6.0" in lines
    assert "keepers_dlob_orders 6.0" in lines
    assert 'keepers_dlob_market_seq{market_index="0",market_type="perp"} 6.0' in lines
    assert 'keepers_dlob_synced{market_index="1",market_type="spot"} 1.0' in lines
    assert 'keepers_dlob_http_requests_total{path="/l2",status="200"} 1.0' in lines
    assert 'keepers_bus_connected{client="dlob-server"} 1.0' in lines


@pytest.mark.asyncio
async def test_top_of_book_is_published_at_most_once_per_slot_per_market(served: Served) -> None:
    watcher = served.broker.transport("watcher")
    await watcher.connect()
    await watcher.subscribe([f"{topics.base(CLUSTER)}/dlob/top/#"], 1)
    tops: list[TopOfBook] = []

    async def collect() -> None:
        async for topic, payload in watcher.messages():
            message = decode(topic, payload)
            assert isinstance(message, TopOfBook)
            tops.append(message)

    reader = asyncio.create_task(collect())
    try:
        await publish(served.publisher, [slot_message(1_001)] * 3)
        await until(lambda: served.feed.stats.slot_updates == 3)
        await until(lambda: len(tops) == 2)
        await asyncio.sleep(0.02)
        # spot 1 too: it has no oracle message, but the node's account has a last price
        assert {(t.market_type, t.slot) for t in tops} == {
            (MarketType.Perp, 1_001),
            (MarketType.Spot, 1_001),
        }
        perp = next(t for t in tops if t.market_type == MarketType.Perp)
        assert perp == TopOfBook(
            market_type=MarketType.Perp,
            market_index=0,
            slot=1_001,
            seq=6,
            oracle_price=usd("100.00"),
            best_bid=usd("99.00"),
            best_ask=usd("101.00"),
            best_bid_size=base(5),
            best_ask_size=base(5),
        )
        count = len(tops)
        await publish(served.publisher, [slot_message(1_001), slot_message(1_002)])
        await until(lambda: len(tops) == 2 * count)
        await asyncio.sleep(0.02)
        assert len(tops) == 2 * count  # one more per market for slot 1002, none for 1001
        assert served.server.published_slots[(MarketType.Perp, 0)] == 1_002
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await watcher.close()


def test_market_accounts_become_followed_markets() -> None:
    node = FakeNode()
    node.perp.contract_type = ContractType.Prediction
    assert followed_market(MarketType.Perp, node.perp) == FollowedMarket(
        MarketType.Perp, 0, TICK, oracle_id=ORACLE_ID, is_prediction_market=True
    )
    assert followed_market(MarketType.Spot, node.spot) == FollowedMarket(
        MarketType.Spot, 1, TICK, oracle_id="ETH/USD"
    )


def test_tune_gc_sets_the_servers_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS == (10_000, 20, 20)
    finally:
        gc.set_threshold(*before)


def test_parse_market() -> None:
    assert parse_market("perp:0") == (MarketType.Perp, 0)
    assert parse_market("SPOT-12") == (MarketType.Spot, 12)
    for bad in ("perp", "perp:x", "futures:1", "perp:-1"):
        with pytest.raises(ValueError, match="perp:<index>"):
            parse_market(bad)


# --- the whole server over a real Mosquitto -------------------------------------------------
def fake_node_app(stream: OrderStream, node: FakeNode) -> web.Application:
    """The node's HTTP reads the server makes: order snapshots and market accounts (the
    node's own JSON codec), so :class:`keepers.rpc.NodeClient` reads them as from the node."""
    service = SnapshotService(stream)

    async def perp(request: web.Request) -> web.Response:
        account = await node.perp_market(int(request.match_info["index"]))
        return web.Response(body=encode_account(account), content_type="application/json")

    async def spot(request: web.Request) -> web.Response:
        account = await node.spot_market(int(request.match_info["index"]))
        return web.Response(body=encode_account(account), content_type="application/json")

    app = service.app()
    app.router.add_get("/v1/markets/perp/{index}", perp)
    app.router.add_get("/v1/markets/spot/{index}", spot)
    return app


@pytest.mark.asyncio
@pytest.mark.parametrize("node_source", ["node_client", "injected"])
async def test_run_dlob_server_answers_over_mosquitto(mosquitto: str, node_source: str) -> None:
    stream = OrderStream([(MarketType.Perp, 0), (MarketType.Spot, 1)], CLUSTER)
    fake = FakeNode()
    node_runner = web.AppRunner(fake_node_app(stream, fake))
    await node_runner.setup()
    await web.TCPSite(node_runner, "127.0.0.1", 0).start()
    node_url = f"http://127.0.0.1:{node_runner.addresses[0][1]}"
    config = DlobServerConfig(
        node_url=node_url,
        broker_url=mosquitto,
        markets=((MarketType.Perp, 0), (MarketType.Spot, 1)),
        cluster=CLUSTER,
        port=0,
        market_refresh_interval=0.05,
        tune_gc=False,  # process-wide: not in the shared test process
    )
    urls: list[str] = []
    # "node_client": market accounts and snapshots through keepers.rpc.NodeClient over HTTP;
    # "injected": the accounts from the object, snapshots through HttpSnapshotLoader
    injected = fake if node_source == "injected" else None
    task = asyncio.create_task(run_dlob_server(config, ready=urls.append, node=injected))
    publisher = make_transport("gmqtt", mosquitto, f"pub-{next(_ids)}")
    watcher = make_transport("gmqtt", mosquitto, f"watch-{next(_ids)}")
    await publisher.connect()
    await watcher.connect()
    await watcher.subscribe([topics.dlob_top(CLUSTER, MarketType.Perp, 0)], 1)
    try:
        await until(lambda: bool(urls) or task.done(), 10)
        assert urls[0].startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:

            async def get(path: str, **params: str) -> tuple[int, Any]:
                async with http.get(urls[0] + path, params=params) as response:
                    return response.status, await response.json()

            for _ in range(500):
                status, _health = await get("/health")
                if status == 200:
                    break
                await asyncio.sleep(0.01)
            assert status == 200
            await publish(publisher, [oracle_message(), *book_events(), slot_message(1_001)])
            for _ in range(500):
                status, body = await get("/l2", **PERP, depth="2", includeVamm="true")
                if status == 200 and body["marketSeq"] == len(BOOK):
                    break
                await asyncio.sleep(0.01)
            assert body["bids"] == [level("99.00", 5, dlob=5), level("98.50", 1, dlob=1)]
            assert body["asks"] == [level("101.00", 5, dlob=5), level("105.264", 50, vamm=50)]
            status, l3 = await get("/l3", **PERP)
            assert status == 200
            assert [(b["price"], b["size"]) for b in l3["bids"]] == [
                (str(usd("99.00")), str(base(2))),
                (str(usd("99.00")), str(base(3))),
                (str(usd("98.50")), str(base(1))),
                (str(usd("98.00")), str(base(4))),
            ]
            status, orders = await get("/orders", **PERP)
            assert status == 200
            assert len(orders["orders"]) == len(BOOK)
        tops: list[TopOfBook] = []
        async with asyncio.timeout(5):
            async for topic, payload in watcher.messages():
                message = decode(topic, payload)
                assert isinstance(message, TopOfBook)
                tops.append(message)
                if message.seq == len(BOOK):
                    break
        assert (tops[-1].best_bid, tops[-1].best_ask) == (usd("99.00"), usd("101.00"))
        await until(lambda: fake.reads >= 6, 5)  # two markets, read again every 0.05 s
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await publisher.close()
        await watcher.close()
        await node_runner.cleanup()
