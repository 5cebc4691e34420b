"""The in-process broker and transport: MQTT's wildcard, retained and shared-subscription
semantics, and the transport contract (order, loss marking, listeners) the MQTT clients share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from keepers.bus.inprocess import InProcessBroker, InProcessTransport
from keepers.bus.topics import TopicError
from keepers.bus.transport import Transport, TransportDisconnected, TransportError


async def received(transport: InProcessTransport) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    iterator: AsyncIterator[tuple[str, bytes]] = transport.messages()
    while True:
        try:
            async with asyncio.timeout(0.01):
                out.append(await anext(iterator))
        except TimeoutError:
            return out


async def connected(broker: InProcessBroker, client_id: str, *filters: str) -> InProcessTransport:
    transport = broker.transport(client_id)
    await transport.connect()
    if filters:
        await transport.subscribe(list(filters))
    return transport


@pytest.mark.asyncio
async def test_it_implements_the_transport_protocol() -> None:
    transport = InProcessBroker().transport("a")
    assert isinstance(transport, Transport)
    assert transport.name == "inprocess"
    assert not transport.is_connected


@pytest.mark.asyncio
async def test_wildcards_deliver_in_publish_order_one_copy_per_client() -> None:
    broker = InProcessBroker()
    perp_1 = await connected(broker, "perp1", "k/orders/+/1")
    everything = await connected(broker, "all", "k/#", "k/orders/#")  # overlapping filters
    publisher = await connected(broker, "pub")
    for topic, payload in [
        ("k/orders/perp/1", b"1"),
        ("k/orders/spot/1", b"2"),
        ("k/orders/perp/2", b"3"),
        ("k/slot", b"4"),
    ]:
        await publisher.publish(topic, payload)
    assert await received(perp_1) == [("k/orders/perp/1", b"1"), ("k/orders/spot/1", b"2")]
    assert [p for _, p in await received(everything)] == [b"1", b"2", b"3", b"4"]
    assert broker.published == 4


@pytest.mark.asyncio
async def test_retained_messages_reach_late_subscribers_and_empty_payloads_delete_them() -> None:
    broker = InProcessBroker()
    publisher = await connected(broker, "pub")
    await publisher.publish("k/slot", b"1", retain=True)
    await publisher.publish("k/slot", b"2", retain=True)  # replaces 1
    await publisher.publish("k/oracle/SOL", b"150", retain=True)
    await publisher.publish("k/oracle/SOL", b"151")  # not retained: the retained stays 150
    late = await connected(broker, "late", "k/slot", "k/oracle/+")
    assert await received(late) == [("k/slot", b"2"), ("k/oracle/SOL", b"150")]
    await publisher.publish("k/slot", b"", retain=True)
    assert broker.retained("k/slot") is None
    assert await received(late) == [("k/slot", b"")]  # the deletion is delivered as usual
    later = await connected(broker, "later", "k/slot")
    assert await received(later) == []


@pytest.mark.asyncio
async def test_shared_subscriptions_round_robin_and_skip_retained() -> None:
    broker = InProcessBroker()
    publisher = await connected(broker, "pub")
    await publisher.publish("k/orders/perp/0", b"retained", retain=True)
    members = [await connected(broker, name, "$share/fill/k/orders/#") for name in "abc"]
    plain = await connected(broker, "plain", "k/orders/#")
    assert await received(plain) == [("k/orders/perp/0", b"retained")]
    for n in range(6):
        await publisher.publish(f"k/orders/perp/{n}", str(n).encode())
    assert [[p for _, p in await received(m)] for m in members] == [
        [b"0", b"3"],
        [b"1", b"4"],
        [b"2", b"5"],
    ]
    assert len(await received(plain)) == 6
    broker.drop("b")
    for n in range(2):
        await publisher.publish("k/orders/perp/9", str(n).encode())
    a = [p for _, p in await received(members[0])]
    c = [p for _, p in await received(members[2])]
    assert (len(a), len(c)) == (1, 1)
    assert sorted(a + c) == [b"0", b"1"]


@pytest.mark.asyncio
async def test_a_dropped_group_member_leaves_the_rotation() -> None:
    broker = InProcessBroker()
    publisher = await connected(broker, "pub")
    a = await connected(broker, "a", "$share/g/t")
    b = await connected(broker, "b", "$share/g/t")
    broker.drop("a")
    with pytest.raises(TransportDisconnected):
        await received(a)
    for n in range(3):
        await publisher.publish("t", str(n).encode())
    assert [p for _, p in await received(b)] == [b"0", b"1", b"2"]


@pytest.mark.asyncio
async def test_messages_received_before_a_loss_are_yielded_before_the_loss() -> None:
    broker = InProcessBroker()
    subscriber = await connected(broker, "sub", "t")
    publisher = await connected(broker, "pub")
    causes: list[BaseException | None] = []
    subscriber.add_disconnect_listener(causes.append)
    await publisher.publish("t", b"1")
    await publisher.publish("t", b"2")
    broker.drop("sub")
    assert not subscriber.is_connected
    iterator = subscriber.messages()
    assert await anext(iterator) == ("t", b"1")
    assert await anext(iterator) == ("t", b"2")
    with pytest.raises(TransportDisconnected):
        await anext(iterator)
    assert len(causes) == 1
    assert isinstance(causes[0], ConnectionResetError)
    # After reconnecting the session is clean: nothing arrives until it subscribes again.
    await subscriber.connect()
    await publisher.publish("t", b"3")
    assert await received(subscriber) == []
    await subscriber.subscribe(["t"])
    await publisher.publish("t", b"4")
    assert await received(subscriber) == [("t", b"4")]


@pytest.mark.asyncio
async def test_close_ends_the_message_stream_and_tells_listeners_with_none() -> None:
    broker = InProcessBroker()
    subscriber = await connected(broker, "sub", "t")
    causes: list[BaseException | None] = []
    subscriber.add_disconnect_listener(causes.append)
    reader = asyncio.ensure_future(received_until_end(subscriber))
    await asyncio.sleep(0)
    await subscriber.close()
    async with asyncio.timeout(1):
        assert await reader == []
    assert causes == [None]
    assert broker.client_ids == []


async def received_until_end(transport: InProcessTransport) -> list[tuple[str, bytes]]:
    return [item async for item in transport.messages()]


@pytest.mark.asyncio
async def test_a_second_connection_with_the_same_client_id_takes_over() -> None:
    broker = InProcessBroker()
    first = await connected(broker, "same", "t")
    second = await connected(broker, "same", "t")
    with pytest.raises(TransportDisconnected):
        await received(first)
    publisher = await connected(broker, "pub")
    await publisher.publish("t", b"x")
    assert await received(second) == [("t", b"x")]


@pytest.mark.asyncio
async def test_refused_connections_and_use_while_disconnected_raise_transport_errors() -> None:
    broker = InProcessBroker()
    broker.accepting = False
    transport = broker.transport("a")
    with pytest.raises(TransportError):
        await transport.connect()
    with pytest.raises(TransportDisconnected):
        await transport.publish("t", b"x")
    with pytest.raises(TransportDisconnected):
        await transport.subscribe(["t"])


@pytest.mark.asyncio
async def test_bad_filters_topics_and_qos_are_rejected() -> None:
    broker = InProcessBroker()
    transport = await connected(broker, "a")
    with pytest.raises(TopicError):
        await transport.subscribe(["a/#/b"])
    with pytest.raises(TopicError):
        await transport.publish("a/+", b"x")
    with pytest.raises(ValueError, match="qos"):
        await transport.publish("a", b"x", qos=2)
