"""Both MQTT transports over a real broker started by the test (Mosquitto; amqtt only when no
mosquitto binary exists): QoS 1 order, retained messages, TCP_NODELAY, and BusClient surviving
a broker restart and a cut socket by reconnecting and re-subscribing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from keepers.bus import BusClient, make_transport, topics
from keepers.bus.aiomqtt_transport import AiomqttTransport
from keepers.bus.brokers import RunningBroker
from keepers.bus.client import Backoff, Delivery
from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.bus.schemas import (
    DeadLetter,
    DecodeReason,
    OracleMessage,
    SlotMessage,
    decode,
    encode,
)
from keepers.bus.transport import Transport, TransportDisconnected

CLIENTS = ["gmqtt", "aiomqtt"]
CLUSTER = "it"
_ids = itertools.count()

pytestmark = pytest.mark.parametrize("client", CLIENTS)


def transport(client: str, url: str, **options: object) -> GmqttTransport | AiomqttTransport:
    made = make_transport(client, url, f"test-{client}-{next(_ids)}", **options)
    assert isinstance(made, GmqttTransport | AiomqttTransport)
    return made


async def take(source: Transport, n: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    if n == 0:
        return out
    async with asyncio.timeout(10):
        async for item in source.messages():
            out.append(item)
            if len(out) == n:
                break
    return out


async def take_deliveries(bus: BusClient, n: int) -> list[Delivery]:
    async with asyncio.timeout(10):
        return [await bus.get() for _ in range(n)]


async def until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 -- watching connection state the bus exposes
            await asyncio.sleep(0.005)


def slot(n: int) -> bytes:
    return encode(SlotMessage(slot=n, ts=n))


@pytest.mark.asyncio
async def test_qos1_delivers_thousands_of_messages_in_publish_order(
    client: str, mosquitto: str
) -> None:
    sub = transport(client, mosquitto)
    pub = transport(client, mosquitto)
    await sub.connect()
    await pub.connect()
    try:
        await sub.subscribe([f"keepers/v1/{CLUSTER}/records/+"], 1)
        sent = [(topics.records(CLUSTER, f"k{n % 3}"), n.to_bytes(4, "big")) for n in range(3000)]
        async with asyncio.timeout(20):
            for start in range(0, len(sent), 500):
                await asyncio.gather(*(pub.publish(t, p, 1) for t, p in sent[start : start + 500]))
        assert await take(sub, len(sent)) == sent
    finally:
        await pub.close()
        await sub.close()


@pytest.mark.asyncio
async def test_retained_messages_reach_a_late_subscriber(client: str, mosquitto: str) -> None:
    pub = transport(client, mosquitto)
    await pub.connect()
    oracle = encode(OracleMessage(oracle_id="SOL/USD", price=150_000_000, confidence=1, slot=7))
    await pub.publish(topics.slot(CLUSTER), slot(6), 1, retain=True)
    await pub.publish(topics.slot(CLUSTER), slot(7), 1, retain=True)
    await pub.publish(topics.oracle(CLUSTER, "SOL/USD"), oracle, 1, retain=True)
    await pub.close()

    late = transport(client, mosquitto)
    await late.connect()
    try:
        await late.subscribe([topics.slot(CLUSTER), topics.all_oracles(CLUSTER)], 1)
        got = dict(await take(late, 2))
        assert got == {topics.slot(CLUSTER): slot(7), topics.oracle(CLUSTER, "SOL/USD"): oracle}
    finally:
        await late.close()


@pytest.mark.asyncio
async def test_tcp_nodelay_is_set_on_the_socket(client: str, mosquitto: str) -> None:
    on = transport(client, mosquitto)
    off = transport(client, mosquitto, tcp_nodelay=False)
    assert not on.tcp_nodelay_enabled()  # no socket yet
    await on.connect()
    await off.connect()
    try:
        assert on.tcp_nodelay_enabled()
        assert not off.tcp_nodelay_enabled()  # the read-back is real, not a constant
    finally:
        await on.close()
        await off.close()


@pytest.mark.asyncio
async def test_a_lost_connection_ends_the_stream_after_what_arrived_and_fails_publishes(
    client: str, mosquitto_broker: RunningBroker
) -> None:
    sub = transport(client, mosquitto_broker.url)
    pub = transport(client, mosquitto_broker.url)
    losses: list[BaseException | None] = []
    sub.add_disconnect_listener(losses.append)
    await sub.connect()
    await pub.connect()
    try:
        await sub.subscribe([topics.slot(CLUSTER)], 1)
        for n in range(5):
            await pub.publish(topics.slot(CLUSTER), slot(n), 1)
        await until(lambda: sub.is_connected)
        await asyncio.sleep(0.05)  # let the five arrive before the cut
        sub.abort()
        got = []
        with pytest.raises(TransportDisconnected):
            async with asyncio.timeout(10):
                async for _topic, payload in sub.messages():
                    got.append(payload)
        assert got == [slot(n) for n in range(5)]
        assert len(losses) == 1
        assert losses[0] is not None
        assert not sub.is_connected
        with pytest.raises(TransportDisconnected):
            await sub.publish(topics.slot(CLUSTER), slot(9), 1)
    finally:
        await pub.close()
        await sub.close()


def bus(client: str, url: str, **options: object) -> BusClient:
    return BusClient(
        transport(client, url),
        backoff=Backoff(initial=0.02, maximum=0.2),
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_bus_client_reconnects_and_resubscribes_after_a_broker_restart(
    client: str, mosquitto_broker: RunningBroker
) -> None:
    url = mosquitto_broker.url
    async with bus(client, url) as subscriber, bus(client, url) as publisher:
        await subscriber.subscribe([topics.slot(CLUSTER)])
        async with asyncio.timeout(10):
            await subscriber.wait_connected()
            await publisher.wait_connected()
        for n in range(1, 51):
            await publisher.publish(topics.slot(CLUSTER), SlotMessage(slot=n, ts=n))
        before = await take_deliveries(subscriber, 50)

        await mosquitto_broker.restart()  # every connection dropped; same port
        await until(lambda: subscriber.generation == 2 and subscriber.is_connected)
        await until(lambda: publisher.generation == 2 and publisher.is_connected)
        for n in range(51, 101):
            await publisher.publish(topics.slot(CLUSTER), SlotMessage(slot=n, ts=n))
        after = await take_deliveries(subscriber, 50)

    assert [d.message for d in before] == [SlotMessage(slot=n, ts=n) for n in range(1, 51)]
    assert [d.message for d in after] == [SlotMessage(slot=n, ts=n) for n in range(51, 101)]
    assert {d.generation for d in before} == {1}
    assert {d.generation for d in after} == {2}
    assert subscriber.stats.disconnects == 1


@pytest.mark.asyncio
async def test_bus_client_reconnects_after_its_socket_is_cut(client: str, mosquitto: str) -> None:
    async with bus(client, mosquitto) as subscriber, bus(client, mosquitto) as publisher:
        await subscriber.subscribe([topics.slot(CLUSTER)])
        async with asyncio.timeout(10):
            await subscriber.wait_connected()
            await publisher.wait_connected()
        await publisher.publish(topics.slot(CLUSTER), SlotMessage(slot=1, ts=1))
        await take_deliveries(subscriber, 1)
        cut = subscriber.transport
        assert isinstance(cut, GmqttTransport | AiomqttTransport)
        cut.abort()
        await until(lambda: subscriber.generation == 2 and subscriber.is_connected)
        await publisher.publish(topics.slot(CLUSTER), SlotMessage(slot=2, ts=2))
        (delivery,) = await take_deliveries(subscriber, 1)
    assert delivery.message == SlotMessage(slot=2, ts=2)
    assert delivery.generation == 2


@pytest.mark.asyncio
async def test_malformed_payloads_are_dead_lettered_over_the_broker(
    client: str, mosquitto: str
) -> None:
    watcher = transport(client, mosquitto)
    await watcher.connect()
    await watcher.subscribe([topics.deadletter(CLUSTER)], 1)
    try:
        async with (
            bus(client, mosquitto, deadletter_topic=topics.deadletter(CLUSTER)) as subscriber,
            bus(client, mosquitto) as publisher,
        ):
            await subscriber.subscribe([topics.slot(CLUSTER)])
            async with asyncio.timeout(10):
                await subscriber.wait_connected()
                await publisher.wait_connected()
            await publisher.publish_raw(topics.slot(CLUSTER), b'{"type":"slot","slot":1}')
            await publisher.publish(topics.slot(CLUSTER), SlotMessage(slot=2, ts=2))
            (delivery,) = await take_deliveries(subscriber, 1)
            ((topic, payload),) = await take(watcher, 1)
        assert delivery.message == SlotMessage(slot=2, ts=2)
        letter = decode(topic, payload)
        assert isinstance(letter, DeadLetter)
        assert letter.payload == b'{"type":"slot","slot":1}'
        assert subscriber.stats.malformed == {DecodeReason.MISSING_FIELD: 1}
        assert letter.reason == "missing_field"
        assert letter.path == "$.ts"
    finally:
        await watcher.close()


@pytest.mark.asyncio
async def test_a_full_receive_buffer_stops_reading_and_loses_nothing(
    client: str, mosquitto: str
) -> None:
    sub = transport(client, mosquitto, high_water=50, low_water=10)
    pub = transport(client, mosquitto)
    await sub.connect()
    await pub.connect()
    try:
        await sub.subscribe([topics.slot(CLUSTER)], 1)
        # 2 MB: far more than one socket read (64 KiB), so a pause shows.
        sent = [n.to_bytes(4, "big") * 250 for n in range(2_000)]
        async with asyncio.timeout(20):
            await asyncio.gather(*(pub.publish(topics.slot(CLUSTER), p, 1) for p in sent))
        await until(lambda: sub.buffered >= 50)
        assert sub.reading_paused
        if client == "gmqtt":
            # gmqtt stops reading its socket: the rest waits at the broker, not in this process.
            await asyncio.sleep(0.1)
            assert sub.buffered < len(sent) // 2, sub.buffered
        got = [payload for _topic, payload in await take(sub, len(sent))]
        assert got == sent
        assert not sub.reading_paused
    finally:
        await pub.close()
        await sub.close()
