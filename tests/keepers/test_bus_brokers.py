"""The brokers the project starts itself, its Mosquitto configuration, and transport selection."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from keepers.bus import DEFAULT_TRANSPORT, TRANSPORTS, make_transport, parse_broker_url, topics
from keepers.bus.aiomqtt_transport import AiomqttTransport
from keepers.bus.brokers import (
    BrokerStartError,
    EmbeddedBroker,
    MosquittoBroker,
    RunningBroker,
    find_mosquitto,
    free_port,
    local_broker,
    mosquitto_config,
)
from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.bus.transport import (
    BrokerAddress,
    Transport,
    TransportDisconnected,
    TransportError,
)
from protocol.types import MarketType

ROOT = Path(__file__).resolve().parents[2]


def test_the_docker_config_is_the_one_the_tests_run() -> None:
    assert (ROOT / "docker" / "mosquitto.conf").read_text() == mosquitto_config(1883)


def test_the_config_keeps_messages_and_disables_nagle() -> None:
    lines = mosquitto_config(4000, "127.0.0.1").splitlines()
    settings = dict(
        line.split(" ", 1) for line in lines if line and not line.startswith("#") and " " in line
    )
    assert settings["listener"] == "4000 127.0.0.1"
    assert settings["set_tcp_nodelay"] == "true"
    assert settings["persistence"] == "false"
    assert int(settings["max_queued_messages"]) >= 100_000  # the default 1000 dropped messages
    assert int(settings["max_inflight_messages"]) > 20
    assert "listener 1883" in mosquitto_config(1883).splitlines()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884)),
        ("mqtt://broker", BrokerAddress("broker", 1883)),
        ("mqtt://broker/", BrokerAddress("broker", 1883)),
    ],
)
def test_broker_urls_parse(url: str, address: BrokerAddress) -> None:
    assert parse_broker_url(url) == address


@pytest.mark.parametrize(
    "url",
    ["mqtts://h:8883", "tcp://h:1883", "mqtt://", "mqtt://h:port", "mqtt://h:1/x", "h:1883"],
)
def test_unsupported_broker_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        parse_broker_url(url)


def test_transports_are_chosen_by_name_and_the_default_is_gmqtt() -> None:
    assert TRANSPORTS == ("gmqtt", "aiomqtt")
    assert DEFAULT_TRANSPORT == "gmqtt"  # the faster in benchmarks/mqtt_transports.py
    url = "mqtt://127.0.0.1:1"
    assert isinstance(make_transport(None, url, "a"), GmqttTransport)
    assert isinstance(make_transport("gmqtt", url, "a"), GmqttTransport)
    assert isinstance(make_transport("aiomqtt", url, "a"), AiomqttTransport)
    assert isinstance(make_transport("gmqtt", url, "a"), Transport)
    with pytest.raises(ValueError, match="paho"):
        make_transport("paho", url, "a")


@pytest.mark.asyncio
@pytest.mark.parametrize("client", TRANSPORTS)
async def test_connecting_to_nothing_raises_a_transport_error(client: str) -> None:
    transport = make_transport(client, f"mqtt://127.0.0.1:{free_port()}", "lonely")
    with pytest.raises(TransportError):
        async with asyncio.timeout(10):
            await transport.connect()
    assert not transport.is_connected
    await transport.close()


@pytest.mark.asyncio
async def test_mosquitto_stops_restarts_on_its_port_and_leaves_no_process() -> None:
    if find_mosquitto() is None:
        pytest.fail("the mosquitto binary is part of the test environment")
    async with MosquittoBroker() as broker:
        first_pid, port = broker.pid, broker.port
        assert broker.running
        assert broker.url == f"mqtt://127.0.0.1:{port}"
        await broker.restart()
        assert broker.running
        assert broker.port == port
        assert broker.pid != first_pid
        second_pid = broker.pid
        with pytest.raises(BrokerStartError):
            # The same port again while the broker holds it: the new process exits.
            async with MosquittoBroker(port):
                pass
    assert not broker.running
    for pid in (first_pid, second_pid):
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("client", TRANSPORTS)
async def test_a_killed_broker_is_reported_as_a_lost_connection(
    client: str, mosquitto_broker: RunningBroker
) -> None:
    transport = make_transport(client, mosquitto_broker.url, "victim")
    await transport.connect()
    await mosquitto_broker.kill()
    try:
        with pytest.raises(TransportDisconnected):
            async with asyncio.timeout(10):
                async for _ in transport.messages():
                    pass
        with pytest.raises(TransportDisconnected):
            await transport.publish(topics.slot("k"), b"x", 1)
    finally:
        await transport.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("client", TRANSPORTS)
async def test_mosquitto_queues_a_burst_for_an_offline_subscriber_without_dropping(
    client: str,
) -> None:
    """5,000 messages, five times Mosquitto's default ``max_queued_messages``, all arrive (with
    the default, 4,000 of them were dropped). About Mosquitto's configuration, so Mosquitto."""
    if find_mosquitto() is None:
        pytest.fail("the mosquitto binary is part of the test environment")
    async with MosquittoBroker() as broker:
        await _burst_to_an_offline_subscriber(client, broker.url)


async def _burst_to_an_offline_subscriber(client: str, url: str) -> None:
    topic = topics.slot("burst")
    offline = make_transport(client, url, f"offline-{client}", clean_session=False)
    await offline.connect()
    await offline.subscribe([topic], 1)
    await offline.close()
    publisher = make_transport("gmqtt", url, "burst-pub")
    await publisher.connect()
    sent = [n.to_bytes(4, "big") for n in range(5_000)]
    async with asyncio.timeout(20):
        for start in range(0, len(sent), 1_000):
            await asyncio.gather(
                *(publisher.publish(topic, p, 1) for p in sent[start : start + 1_000])
            )
    await publisher.close()
    got: list[bytes] = []
    await offline.connect()
    incoming = offline.messages()
    try:
        while len(got) < len(sent):
            try:
                # A dropping broker goes quiet early: stop after a second of silence.
                async with asyncio.timeout(1.0):
                    _topic, payload = await anext(incoming)
            except TimeoutError:
                break
            got.append(payload)
    finally:
        await offline.close()
    assert got == sent


@pytest.mark.asyncio
@pytest.mark.parametrize("client", TRANSPORTS)
async def test_the_embedded_broker_serves_both_clients_and_cuts_them_when_stopped(
    client: str,
) -> None:
    async with EmbeddedBroker() as broker:
        sub = make_transport(client, broker.url, f"sub-{client}")
        pub = make_transport(client, broker.url, f"pub-{client}")
        await sub.connect()
        await pub.connect()
        await pub.publish(topics.slot("e"), b"retained", 1, retain=True)
        await sub.subscribe([topics.slot("e"), topics.all_orders("e")], 1)
        for n in range(100):
            await pub.publish(topics.records("e", "x"), b"not subscribed", 0)
            await pub.publish(topics.orders("e", MarketType.Perp, 0), str(n).encode(), 1)
        got: list[bytes] = []
        async with asyncio.timeout(10):
            async for _topic, payload in sub.messages():
                got.append(payload)
                if len(got) == 101:
                    break
        assert got == [b"retained", *(str(n).encode() for n in range(100))]
        port = broker.port
        await broker.stop()
        with pytest.raises(TransportDisconnected):
            async with asyncio.timeout(10):
                async for _ in sub.messages():
                    pass
        await broker.start()  # the port was freed
        assert broker.port == port
        await sub.close()
        await pub.close()


@pytest.mark.asyncio
async def test_local_broker_prefers_mosquitto_when_installed() -> None:
    async with local_broker() as broker:
        expected = MosquittoBroker if find_mosquitto() is not None else EmbeddedBroker
        assert isinstance(broker, expected)
    async with local_broker(prefer_mosquitto=False) as broker:
        assert isinstance(broker, EmbeddedBroker)
