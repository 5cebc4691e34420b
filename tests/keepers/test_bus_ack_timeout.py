"""A QoS 1 publish never waits forever for a PUBACK that does not come."""

from __future__ import annotations

import asyncio

import pytest

from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.bus.transport import TransportDisconnected

CONNACK = bytes([0x20, 0x02, 0x00, 0x00])  # MQTT 3.1.1: session not present, accepted


@pytest.mark.asyncio
async def test_publish_without_puback_fails_as_a_lost_connection() -> None:
    received = asyncio.Event()

    async def silent_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # CONNECT arrives
        writer.write(CONNACK)
        await writer.drain()
        while data := await reader.read(4096):  # PUBLISH arrives; never acknowledged
            if data[0] >> 4 == 3:
                received.set()
        writer.close()

    server = await asyncio.start_server(silent_broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = GmqttTransport(f"mqtt://127.0.0.1:{port}", "ack-timeout-test", ack_timeout=0.3)
    try:
        async with asyncio.timeout(10):
            await transport.connect()
            with pytest.raises(TransportDisconnected, match="no PUBACK"):
                await transport.publish("keepers/v1/test/x", b"{}", qos=1)
        assert received.is_set()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
