"""The node's event builder (per-market counters, message shapes), its publisher (order, the
bound, retained values) over the in-process broker, and the signature verify pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest
import pytest_asyncio

import keepers.verify_pool
from keepers.bus import topics
from keepers.bus.client import Backoff, BusClient
from keepers.bus.inprocess import InProcessBroker, InProcessTransport
from keepers.bus.schemas import (
    OracleMessage,
    OrderEvent,
    decode,
    record_to_message,
)
from keepers.bus.transport import TransportDisconnected
from keepers.node_publisher import EventBuilder, Outgoing, Publisher
from keepers.verify_pool import VerifyPool
from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.program import Executed
from protocol.records import OracleUpdateRecord, OrderActionRecord, SequencedRecord
from protocol.state.user import Order
from protocol.transaction import Transaction, VerifiedTransaction, parse_transaction
from protocol.types import MarketType, OrderType, PositionDirection
from tests.keepers.node_helpers import deposit, keypair

CLUSTER = "unit"
ALICE = keypair(1)


def action(seq: int, market_type: MarketType, market_index: int, kind: str) -> SequencedRecord:
    order = Order(
        order_id=seq,
        market_index=market_index,
        market_type=market_type,
        order_type=OrderType.Limit,
        direction=PositionDirection.Long,
        base_asset_amount=10**9,
        slot=7,
        price=100 * 10**6,
    )
    record = OrderActionRecord(
        action=kind,
        authority=ALICE.pubkey,
        sub_account_id=0,
        order_id=order.order_id,
        market_index=market_index,
        market_type=market_type,
        order_type=order.order_type,
        direction=order.direction,
        base_asset_amount=order.base_asset_amount,
        base_asset_amount_filled=0,
        price=order.price,
        reason="",
        slot=7,
        ts=1_700_000_000,
        order=order,
    )
    return SequencedRecord(seq, 7, record)


def executed(*records: SequencedRecord) -> Executed:
    return Executed(b"\x01" * 64, 7, tuple(records))


# --- EventBuilder ---------------------------------------------------------------------------
def test_market_seq_counts_each_markets_order_events_from_one() -> None:
    builder = EventBuilder(CLUSTER, {(MarketType.Perp, 0): 10})
    built = builder.build(
        executed(
            action(1, MarketType.Perp, 0, "place"),
            action(2, MarketType.Perp, 1, "place"),
            action(3, MarketType.Spot, 0, "place"),
            action(4, MarketType.Perp, 0, "cancel"),
        ),
        publish=True,
    )
    events = [decode(o.topic, o.payload) for o in built.outgoing if "/orders/" in o.topic]
    assert [(e.market_type, e.market_index, e.market_seq, e.seq) for e in events] == [  # type: ignore[union-attr]
        (MarketType.Perp, 0, 11, 1),
        (MarketType.Perp, 1, 1, 2),
        (MarketType.Spot, 0, 1, 3),
        (MarketType.Perp, 0, 12, 4),
    ]
    assert builder.market_seq(MarketType.Perp, 0) == 12
    assert builder.market_seq(MarketType.Spot, 5) == 0


def test_observe_counts_exactly_what_build_numbers() -> None:
    result = executed(action(1, MarketType.Perp, 2, "place"), action(2, MarketType.Perp, 2, "fill"))
    counted = EventBuilder(CLUSTER)
    counted.observe(result)
    numbered = EventBuilder(CLUSTER)
    numbered.build(result, publish=False)
    assert counted.market_seqs == numbered.market_seqs == {(MarketType.Perp, 2): 2}


def test_each_record_goes_out_once_as_a_record_and_once_as_its_event() -> None:
    place = action(5, MarketType.Perp, 0, "place")
    oracle = SequencedRecord(6, 7, OracleUpdateRecord("SOL/USD", 151 * 10**6, 10_000, 7))
    built = EventBuilder(CLUSTER).build(executed(place, oracle), publish=True)
    assert [(o.topic, o.retain) for o in built.outgoing] == [
        (topics.orders(CLUSTER, MarketType.Perp, 0), False),
        (topics.records(CLUSTER, "order_action"), False),
        (topics.oracle(CLUSTER, "SOL/USD"), True),
        (topics.records(CLUSTER, "oracle_update"), False),
    ]
    event = decode(built.outgoing[0].topic, built.outgoing[0].payload)
    assert isinstance(event, OrderEvent) and event.to_order() == place.record.order  # type: ignore[union-attr]
    assert decode(built.outgoing[2].topic, built.outgoing[2].payload) == OracleMessage(
        oracle_id="SOL/USD", price=151 * 10**6, confidence=10_000, slot=7
    )
    # the HTTP answer's record JSON is the bus payload, byte for byte
    assert [bytes(r) for r in built.records] == [
        msgspec.json.encode(record_to_message(place)),
        msgspec.json.encode(record_to_message(oracle)),
    ]
    assert built.outgoing[1].payload == bytes(built.records[0])


def test_nothing_is_built_for_the_bus_without_one() -> None:
    built = EventBuilder(CLUSTER).build(
        executed(action(1, MarketType.Perp, 0, "place")), publish=False
    )
    assert built.outgoing == [] and len(built.records) == 1


def test_a_record_without_its_order_still_makes_an_event() -> None:
    sequenced = action(1, MarketType.Perp, 0, "cancel")
    bare = OrderActionRecord(**{**_fields(sequenced.record), "order": None})
    built = EventBuilder(CLUSTER).build(executed(SequencedRecord(1, 7, bare)), publish=True)
    event = decode(built.outgoing[0].topic, built.outgoing[0].payload)
    assert isinstance(event, OrderEvent)
    assert (event.order.order_id, event.order.price, event.order.slot) == (1, 100 * 10**6, 7)


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


# --- Publisher ------------------------------------------------------------------------------
@pytest_asyncio.fixture
async def broker() -> InProcessBroker:
    return InProcessBroker()


@pytest_asyncio.fixture
async def node_bus(broker: InProcessBroker) -> AsyncIterator[BusClient]:
    bus = BusClient(broker.transport("node"), backoff=Backoff(0.001, 0.01))
    yield bus
    await bus.close()


def order_item(n: int) -> Outgoing:
    return Outgoing(topics.records(CLUSTER, "n"), str(n).encode())


@pytest.mark.asyncio
async def test_messages_go_out_in_order_and_are_counted(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    lags: list[float] = []
    publisher = Publisher(node_bus, window=3, observe_lag=lags.append)
    seen: list[bytes] = []
    watcher = broker.transport("raw")
    await watcher.connect()
    await watcher.subscribe([topics.all_records(CLUSTER)])
    runner = asyncio.create_task(publisher.run())
    await node_bus.start()
    publisher.publish([order_item(i) for i in range(8)])
    async with asyncio.timeout(5):
        await publisher.wait_idle()
        async for _topic, payload in watcher.messages():
            seen.append(payload)
            if len(seen) == 8:
                break
    runner.cancel()
    await watcher.close()
    assert seen == [str(i).encode() for i in range(8)]
    assert (publisher.stats.published, publisher.stats.dropped, len(lags)) == (8, 0, 8)


@pytest.mark.asyncio
async def test_past_the_bound_the_oldest_are_dropped_and_retained_values_survive(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    broker.accepting = False  # the broker is unreachable: everything is held
    publisher = Publisher(node_bus, max_pending=4)
    runner = asyncio.create_task(publisher.run())
    await node_bus.start()
    oracle_topic = topics.oracle(CLUSTER, "SOL/USD")
    publisher.publish([Outgoing(oracle_topic, b"price-1", retain=True)])
    publisher.publish([order_item(i) for i in range(5)])  # 6 held, bound 4: 2 dropped
    assert (publisher.stats.dropped, publisher.depth) == (2, 4 + 1)  # + the oracle refresh
    raw = broker.transport("raw")
    broker.accepting = True
    await raw.connect()
    await raw.subscribe([topics.all_records(CLUSTER)])
    async with asyncio.timeout(5):
        await node_bus.wait_connected()
        await publisher.wait_idle()
    runner.cancel()
    # the oldest order messages (0 and the oracle's place in line) went; the oracle's value
    # did not: it is the retained one
    assert broker.retained(oracle_topic) == b"price-1"
    got = []
    async with asyncio.timeout(5):
        async for _topic, payload in raw.messages():
            got.append(payload)
            if len(got) == 4:
                break
    await raw.close()
    assert got == [b"1", b"2", b"3", b"4"]


@pytest.mark.asyncio
async def test_retained_values_are_sent_again_after_a_reconnect(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    publisher = Publisher(node_bus)
    runner = asyncio.create_task(publisher.run())
    await node_bus.start()
    slot_topic = topics.slot(CLUSTER)
    publisher.publish_retained(Outgoing(slot_topic, b"slot-1", retain=True))
    publisher.publish_retained(Outgoing(slot_topic, b"slot-2", retain=True))
    async with asyncio.timeout(5):
        await node_bus.wait_connected()
        await publisher.wait_idle()
    assert broker.retained(slot_topic) == b"slot-2"
    reconnected = asyncio.Event()
    node_bus.add_connect_listener(lambda generation: reconnected.set())
    # the broker restarts without persistence: the connection drops, retained values are gone
    broker.accepting = False
    broker.drop("node")
    other = broker.transport("other")
    broker.accepting = True
    await other.connect()
    await other.publish(slot_topic, b"", retain=True)  # an empty retained payload deletes it
    await other.close()
    assert broker.retained(slot_topic) is None
    async with asyncio.timeout(5):
        await reconnected.wait()
        await publisher.wait_idle()
    runner.cancel()
    assert broker.retained(slot_topic) == b"slot-2"


class _Withheld(InProcessTransport):
    """Delivers at once but holds every PUBACK until the test resolves it; a lost connection
    fails the ones still held (the transport contract)."""

    def __init__(self, broker: InProcessBroker, client_id: str) -> None:
        super().__init__(broker, client_id)
        self.acks: list[asyncio.Future[None]] = []

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        super().publish_nowait(topic, payload, qos, retain)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    def _lose(self, cause: BaseException) -> None:
        for ack in self.acks:
            if not ack.done():
                ack.set_exception(TransportDisconnected(str(cause)))
        super()._lose(cause)


@pytest.mark.asyncio
async def test_publish_writes_through_and_a_loss_sends_the_unacknowledged_again(
    broker: InProcessBroker,
) -> None:
    transport = _Withheld(broker, "node")
    bus = BusClient(transport, backoff=Backoff(0.001, 0.01))
    publisher = Publisher(bus, window=2)
    raw = broker.transport("raw")
    await raw.connect()
    await raw.subscribe([topics.all_records(CLUSTER)])
    runner = asyncio.create_task(publisher.run())
    await bus.start()
    async with asyncio.timeout(5):
        await bus.wait_connected()
    publisher.publish([order_item(i) for i in range(3)])
    # written before publish() returned, as far as the window goes: 0 and 1; 2 waits
    assert (broker.published, publisher.unacknowledged, publisher.depth) == (2, 2, 1)
    transport.acks[0].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (broker.published, publisher.stats.published) == (3, 1)  # 2 took 0's place
    reconnected = asyncio.Event()
    bus.add_connect_listener(lambda generation: reconnected.set())
    broker.drop("node")  # 1 and 2 were never acknowledged: they go again, in order
    async with asyncio.timeout(5):
        await reconnected.wait()
    # the publisher's own connect listener (registered first) wrote them again already
    assert (len(transport.acks), publisher.unacknowledged) == (5, 2)
    for ack in transport.acks[3:]:
        ack.set_result(None)
    async with asyncio.timeout(5):
        await publisher.wait_idle()
    runner.cancel()
    await bus.close()
    got = []
    async with asyncio.timeout(5):
        async for _topic, payload in raw.messages():
            got.append(payload)
            if len(got) == 5:
                break
    await raw.close()
    assert got == [b"0", b"1", b"2", b"1", b"2"]
    assert (publisher.stats.published, publisher.stats.failures) == (3, 1)


# --- VerifyPool -----------------------------------------------------------------------------
def signed(n: int) -> Transaction:
    return parse_transaction(deposit(ALICE, 1, n + 1))


def forged(n: int) -> Transaction:
    raw = bytearray(deposit(ALICE, 1, n + 1))
    raw[10] ^= 0xFF
    return parse_transaction(bytes(raw))


@pytest.mark.asyncio
async def test_verdicts_come_back_in_order_with_rejections(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = keepers.verify_pool.verify_batch

    def counting(txs: Sequence[Transaction]) -> list[Any]:
        sizes.append(len(txs))
        return real(txs)

    monkeypatch.setattr(keepers.verify_pool, "verify_batch", counting)
    outcomes: list[tuple[int, Any]] = []
    done = asyncio.Event()

    def on_verified(tag: int, outcome: Any) -> None:
        outcomes.append((tag, outcome))
        if len(outcomes) == 6:
            done.set()

    # the idle path off: the first of the burst would be checked on the loop
    pool: VerifyPool[int] = VerifyPool(on_verified, workers=1, inline_when_idle=False)
    for n in range(6):
        pool.submit(forged(n) if n % 3 == 2 else signed(n), n)
    async with asyncio.timeout(5):
        await done.wait()
    await pool.close()
    assert [tag for tag, _ in outcomes] == list(range(6))
    kinds = [type(o).__name__ for _, o in outcomes]
    assert kinds == ["VerifiedTransaction", "VerifiedTransaction", "Rejected"] * 2
    rejected = outcomes[2][1]
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.InvalidSignature
    assert isinstance(outcomes[0][1], VerifiedTransaction)
    # submitted in one burst: one batch, one hand-off to the worker
    assert sizes == [6]


@pytest.mark.asyncio
async def test_a_broken_verifier_reports_the_exception_for_its_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(txs: Sequence[Transaction]) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(keepers.verify_pool, "verify_batch", broken)
    outcomes: list[Any] = []
    done = asyncio.Event()

    def on_verified(tag: int, outcome: Any) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:
            done.set()

    pool: VerifyPool[int] = VerifyPool(on_verified)
    pool.submit(signed(0), 0)
    pool.submit(signed(1), 1)
    async with asyncio.timeout(5):
        await done.wait()
    await pool.close()
    assert all(isinstance(o, RuntimeError) for o in outcomes)


@pytest.mark.asyncio
async def test_a_lone_submission_to_an_idle_thread_pool_is_verified_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keepers.verify_pool, "IDLE_AFTER", 60.0)  # only the first is idle
    sizes: list[int] = []
    real = keepers.verify_pool.verify_batch

    def counting(txs: Sequence[Transaction]) -> list[Any]:
        sizes.append(len(txs))
        return real(txs)

    monkeypatch.setattr(keepers.verify_pool, "verify_batch", counting)
    outcomes: list[tuple[int, Any]] = []
    done = asyncio.Event()

    def on_verified(tag: int, outcome: Any) -> None:
        outcomes.append((tag, outcome))
        if len(outcomes) == 2:
            done.set()

    pool: VerifyPool[int] = VerifyPool(on_verified, workers=1)
    pool.submit(forged(0), 0)
    assert (pool.inline, [tag for tag, _ in outcomes]) == (1, [0])  # inside submit()
    pool.submit(signed(1), 1)  # right after: a thread takes it
    async with asyncio.timeout(5):
        await done.wait()
    await pool.close()
    assert (pool.inline, sizes) == (1, [1, 1])  # the first on the loop, the second a batch
    rejected = outcomes[0][1]
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.InvalidSignature
    assert isinstance(outcomes[1][1], VerifiedTransaction)


def test_the_slot_message_is_retained() -> None:
    item = EventBuilder(CLUSTER).slot_message(Clock(9, 1_700_000_003))
    assert item.retain and item.topic == topics.slot(CLUSTER)
    assert msgspec.json.decode(item.payload) == {
        "type": "slot",
        "v": 1,
        "slot": 9,
        "ts": 1_700_000_003,
    }
