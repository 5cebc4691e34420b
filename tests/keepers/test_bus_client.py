"""BusClient over the in-process broker: decoding once, dead letters, reconnect and
re-subscribe with jittered backoff, backpressure with a throttled warning, shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from keepers.bus import topics
from keepers.bus.client import (
    Backoff,
    BoundedQueue,
    BusClient,
    BusClosed,
    BusCollector,
    BusFailed,
    Delivery,
)
from keepers.bus.inprocess import InProcessBroker, InProcessTransport
from keepers.bus.schemas import (
    DeadLetter,
    DecodeReason,
    OrderAction,
    OrderEvent,
    SlotMessage,
    decode,
    encode,
)
from keepers.bus.transport import TransportDisconnected, TransportError
from protocol.state.user import Order
from protocol.types import MarketType, OrderType, PositionDirection

CLUSTER = "unit"
ORDERS = topics.orders(CLUSTER, MarketType.Perp, 0)
DEADLETTER = topics.deadletter(CLUSTER)


def event(seq: int) -> bytes:
    order = Order(
        order_id=seq,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=PositionDirection.Long,
        base_asset_amount=10**9,
        slot=seq,
        price=100_000_000 + seq,
    )
    return encode(
        OrderEvent.from_order(
            order,
            seq=seq,
            market_seq=seq,
            slot=seq,
            ts=seq,
            action=OrderAction.PLACE,
            authority=bytes(32),
            sub_account_id=0,
        )
    )


def seq_of(delivery: Delivery) -> int:
    assert isinstance(delivery.message, OrderEvent)
    return delivery.message.seq


class Sleeps:
    """An injected ``sleep`` that records each delay and returns at once."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.delays: list[float] = []
        self._on_sleep = on_sleep

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._on_sleep is not None:
            self._on_sleep(len(self.delays))
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not predicate():  # noqa: ASYNC110 -- the bus's counters are what the tests watch
            await asyncio.sleep(0)


async def take(bus: BusClient, n: int) -> list[Delivery]:
    async with asyncio.timeout(2):
        return [await bus.get() for _ in range(n)]


async def started(
    broker: InProcessBroker, client_id: str, *filters: str, **kw: object
) -> BusClient:
    bus = BusClient(broker.transport(client_id), sleep=Sleeps(), **kw)  # type: ignore[arg-type]
    await bus.subscribe(filters)
    await bus.start()
    async with asyncio.timeout(2):
        await bus.wait_connected()
    return bus


async def publisher(broker: InProcessBroker) -> InProcessTransport:
    transport = broker.transport("publisher")
    await transport.connect()
    return transport


@pytest.mark.asyncio
async def test_payloads_are_decoded_once_and_delivered_in_order() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    async with await started(broker, "sub", topics.all_orders(CLUSTER)) as bus:
        for seq in range(1, 201):
            await pub.publish(ORDERS, event(seq))
        deliveries = await take(bus, 200)
    assert [seq_of(d) for d in deliveries] == list(range(1, 201))
    assert {d.topic for d in deliveries} == {ORDERS}
    assert {d.generation for d in deliveries} == {1}
    assert (bus.stats.received, bus.stats.delivered, bus.stats.malformed_total) == (200, 200, 0)


@pytest.mark.asyncio
async def test_malformed_payloads_are_counted_and_dead_lettered_while_the_reader_goes_on() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    watcher = broker.transport("watcher")
    await watcher.connect()
    await watcher.subscribe([DEADLETTER])
    bad = [
        b"{not json",
        event(2).replace(b'"seq":2', b'"seq":2,"extra":1'),
        event(2).replace(b'"v":1', b'"v":7'),
        b'{"type":"bogus"}',
        event(2).replace(b'"seq":2', b'"seq":"2"'),
        encode(SlotMessage(slot=1, ts=1)),  # valid, but not on an orders topic
    ]
    async with await started(
        broker, "sub", topics.all_orders(CLUSTER), deadletter_topic=DEADLETTER
    ) as bus:
        await pub.publish(ORDERS, event(1))
        for payload in bad:
            await pub.publish(ORDERS, payload)
        await pub.publish(ORDERS, event(3))
        deliveries = await take(bus, 2)
        await until(lambda: bus.stats.deadlettered == len(bad))
    assert [seq_of(d) for d in deliveries] == [1, 3]
    assert dict(bus.stats.malformed) == {
        DecodeReason.MALFORMED: 1,
        DecodeReason.UNKNOWN_FIELD: 1,
        DecodeReason.WRONG_VERSION: 1,
        DecodeReason.UNKNOWN_TAG: 1,
        DecodeReason.INVALID_VALUE: 1,
        DecodeReason.TOPIC_MISMATCH: 1,
    }
    letters = []
    async with asyncio.timeout(2):
        async for topic, payload in watcher.messages():
            letter = decode(topic, payload)
            assert isinstance(letter, DeadLetter)
            letters.append(letter)
            if len(letters) == len(bad):
                break
    assert [letter.payload for letter in letters] == bad
    assert {letter.topic for letter in letters} == {ORDERS}
    assert [letter.reason for letter in letters] == [
        "malformed",
        "unknown_field",
        "wrong_version",
        "unknown_tag",
        "invalid_value",
        "topic_mismatch",
    ]
    assert letters[1].path == "$.extra"


@pytest.mark.asyncio
async def test_a_bad_dead_letter_is_counted_but_never_dead_lettered_again() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    async with await started(broker, "sub", DEADLETTER, deadletter_topic=DEADLETTER) as bus:
        await pub.publish(DEADLETTER, b"garbage")
        await until(lambda: bus.stats.malformed_total == 1)
        for _ in range(10):
            await asyncio.sleep(0)
        assert bus.stats.deadlettered == 0
        assert broker.published == 1


@pytest.mark.asyncio
async def test_after_a_drop_it_reconnects_resubscribes_and_bumps_the_generation() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    generations: list[int] = []
    bus = BusClient(broker.transport("sub"), sleep=Sleeps(), rng=random.Random(1))
    bus.add_connect_listener(generations.append)
    await bus.subscribe([topics.all_orders(CLUSTER)])
    async with bus:
        await until(lambda: bus.is_connected)
        await pub.publish(ORDERS, event(1))
        broker.drop("sub")
        await until(lambda: bus.generation == 2 and bus.is_connected)
        await pub.publish(ORDERS, event(2))
        deliveries = await take(bus, 2)
    assert [(seq_of(d), d.generation) for d in deliveries] == [(1, 1), (2, 2)]
    assert generations == [1, 2]
    assert (bus.stats.connects, bus.stats.disconnects) == (2, 1)


@pytest.mark.asyncio
async def test_refused_connections_are_retried_with_growing_jittered_backoff() -> None:
    broker = InProcessBroker()
    broker.accepting = False

    def open_after_five(attempts: int) -> None:
        if attempts == 5:
            broker.accepting = True

    sleeps = Sleeps(open_after_five)
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0)
    bus = BusClient(broker.transport("sub"), sleep=sleeps, backoff=backoff)
    async with bus:
        await until(lambda: bus.is_connected)
    assert bus.stats.connect_failures == 5
    # Attempt n waits between half and all of min(1.0, 0.1 * 2**n) seconds.
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0]
    assert len(sleeps.delays) == 5
    for delay, ceiling in zip(sleeps.delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


class _Edge:
    """An rng whose jitter is always the lowest or the highest possible."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_backoff_is_exponential_capped_and_jittered_between_half_and_all() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0)
    high = [backoff.delay(n, _Edge(True)) for n in range(6)]  # type: ignore[arg-type]
    low = [backoff.delay(n, _Edge(False)) for n in range(6)]  # type: ignore[arg-type]
    assert high == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert low == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert backoff.delay(10_000, _Edge(True)) == pytest.approx(1.0)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_full_queue_makes_the_reader_wait_and_warn_at_most_once_per_interval() -> None:
    now = [0.0]
    broker = InProcessBroker()
    pub = await publisher(broker)
    async with await started(
        broker,
        "sub",
        topics.all_orders(CLUSTER),
        queue_size=2,
        monotonic=lambda: now[0],
        warn_interval=5.0,
    ) as bus:
        for seq in range(1, 6):
            await pub.publish(ORDERS, event(seq), qos=0)
        await until(lambda: bus.stats.backpressure_waits == 1)
        assert (bus.stats.delivered, bus.queue_depth, bus.stats.queue_full_warnings) == (2, 2, 1)
        first = await bus.get()  # room for 3; then 4 finds the queue full again
        await until(lambda: bus.stats.backpressure_waits == 2)
        assert bus.stats.queue_full_warnings == 1  # within the interval: counted, not logged
        now[0] = 6.0
        second = await bus.get()  # room for 4; then 5 waits, and the interval has passed
        await until(lambda: bus.stats.backpressure_waits == 3)
        assert bus.stats.queue_full_warnings == 2
        rest = await take(bus, 3)
    assert [seq_of(d) for d in [first, second, *rest]] == [1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_close_ends_iteration_and_every_later_get() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    bus = await started(broker, "sub", topics.all_orders(CLUSTER))
    seen: list[int] = []

    async def consume() -> None:
        async for delivery in bus:
            seen.append(seq_of(delivery))

    consumer = asyncio.create_task(consume())
    await pub.publish(ORDERS, event(1))
    await until(lambda: seen == [1])
    await bus.close()
    async with asyncio.timeout(2):
        await consumer
    with pytest.raises(BusClosed):
        await bus.get()
    assert bus.get_nowait() is None
    assert broker.client_ids == ["publisher"]


class _Refusing(InProcessTransport):
    async def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None:
        if any(f.startswith("forbidden/") for f in topic_filters):
            raise TransportError(f"broker refused {list(topic_filters)}")
        await super().subscribe(topic_filters, qos)


@pytest.mark.asyncio
async def test_a_refused_subscription_stops_the_bus_and_reaches_the_consumer() -> None:
    broker = InProcessBroker()
    bus = BusClient(_Refusing(broker, "sub"), sleep=Sleeps())
    await bus.subscribe(["forbidden/#"])
    async with bus:
        with pytest.raises(BusFailed):
            async with asyncio.timeout(2):
                await bus.get()
        with pytest.raises(BusFailed):
            await bus.get()
    assert isinstance(bus.failure, TransportError)


@pytest.mark.asyncio
async def test_subscribing_while_connected_takes_effect_now_and_after_reconnects() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    async with await started(broker, "sub") as bus:
        await bus.subscribe([topics.slot(CLUSTER)])
        await pub.publish(topics.slot(CLUSTER), encode(SlotMessage(slot=1, ts=1)))
        broker.drop("sub")
        await until(lambda: bus.generation == 2 and bus.is_connected)
        await pub.publish(topics.slot(CLUSTER), encode(SlotMessage(slot=2, ts=2)))
        deliveries = await take(bus, 2)
    assert [d.message for d in deliveries] == [SlotMessage(slot=1, ts=1), SlotMessage(slot=2, ts=2)]
    assert bus.subscriptions == [topics.slot(CLUSTER)]


@pytest.mark.asyncio
async def test_publish_encodes_messages_and_fails_fast_while_disconnected() -> None:
    broker = InProcessBroker()
    watcher = await publisher(broker)
    await watcher.subscribe([topics.slot(CLUSTER)])
    bus = BusClient(broker.transport("sub"), sleep=Sleeps())
    with pytest.raises(TransportDisconnected):
        await bus.publish(topics.slot(CLUSTER), SlotMessage(slot=1, ts=1))
    async with bus:
        await until(lambda: bus.is_connected)
        await bus.publish(topics.slot(CLUSTER), SlotMessage(slot=3, ts=4), retain=True)
    assert broker.retained(topics.slot(CLUSTER)) == b'{"type":"slot","slot":3,"ts":4,"v":1}'


@pytest.mark.asyncio
async def test_the_prometheus_collector_reads_the_counters() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    registry = CollectorRegistry()
    async with await started(
        broker, "sub", topics.all_orders(CLUSTER), deadletter_topic=DEADLETTER
    ) as bus:
        registry.register(BusCollector(bus, "filler"))
        await pub.publish(ORDERS, event(1))
        await pub.publish(ORDERS, b"junk")
        await take(bus, 1)
        await until(lambda: bus.stats.deadlettered == 1)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"client": "filler", **labels})

        assert sample("keepers_bus_received_total") == 2
        assert sample("keepers_bus_delivered_total") == 1
        assert sample("keepers_bus_malformed_total", reason="malformed") == 1
        assert sample("keepers_bus_malformed_total", reason="unknown_field") == 0
        assert sample("keepers_bus_deadlettered_total") == 1
        assert sample("keepers_bus_connected") == 1
        assert sample("keepers_bus_queue_depth") == 0


@pytest.mark.asyncio
async def test_bounded_queue_hands_a_wakeup_on_when_a_getter_is_cancelled() -> None:
    queue: BoundedQueue[int] = BoundedQueue(1)
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(7)
    first.cancel()
    async with asyncio.timeout(1):
        assert await second == 7
    assert first.cancelled()
    queue.put_nowait(8)
    blocked = asyncio.create_task(queue.put(9))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert queue.get_nowait() == 8
    async with asyncio.timeout(1):
        await blocked
    assert queue.get_nowait() == 9


def test_bus_client_needs_qos_0_or_1() -> None:
    with pytest.raises(ValueError, match="qos"):
        BusClient(InProcessBroker().transport("a"), qos=2)


def test_deliveries_are_immutable() -> None:
    delivery = Delivery("t", SlotMessage(slot=1, ts=1), 1)
    with pytest.raises(AttributeError):
        delivery.generation = 2  # type: ignore[misc]
    assert msgspec.structs.astuple(delivery) == ("t", SlotMessage(slot=1, ts=1), 1)
