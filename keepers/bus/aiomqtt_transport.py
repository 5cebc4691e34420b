"""The :class:`~keepers.bus.transport.Transport` over aiomqtt 2.x (paho-mqtt on the event loop).

Used the way aiomqtt documents it: ``async with Client(...)`` (entered and exited by hand,
because the connection outlives one block) and ``async for message in client.messages``, in a
pump task that moves each message into the shared receive buffer. aiomqtt's own iterator
creates a task per message, which is most of its cost per message; see
``benchmarks/mqtt_transports.py`` for the figures against gmqtt.

* TCP_NODELAY through aiomqtt's ``socket_options`` (applied right after paho's connect);
  :meth:`AiomqttTransport.tcp_nodelay_enabled` reads it back from paho's socket.
* aiomqtt neither reconnects nor re-subscribes (:class:`~keepers.bus.client.BusClient` does),
  and stops its iterator when the connection drops; what it had queued by then is moved into
  the buffer before the loss is marked, so nothing received is dropped.
* A QoS 1 ``publish`` waits for the PUBACK (aiomqtt's own behaviour), and fails as soon as
  the connection is lost instead of waiting out aiomqtt's operation timeout. aiomqtt has no
  synchronous publish, so ``publish_nowait`` is that publish in a task: the message is
  written when the task first runs, on the loop's next turn (tasks start in creation order,
  so the order holds).
* The receive buffer cannot stop paho reading its socket, so past the high-water mark it just
  grows (gmqtt's transport pauses the socket instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt import client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from keepers.bus.transport import (
    BufferedTransport,
    TransportDisconnected,
    TransportError,
    check_qos,
    parse_broker_url,
)

_SUBACK_FAILURE = 0x80
_T = TypeVar("_T")


class AiomqttTransport(BufferedTransport):
    name = "aiomqtt"

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        tcp_nodelay: bool = True,
        clean_session: bool = True,
        keepalive: int = 30,
        connect_timeout: float = 5.0,
        max_inflight: int = 1000,
        high_water: int = 50_000,
        low_water: int = 10_000,
    ) -> None:
        super().__init__(client_id, high_water=high_water, low_water=low_water)
        self._address = parse_broker_url(url)
        self._tcp_nodelay = tcp_nodelay
        self._clean_session = clean_session
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._max_inflight = max_inflight
        self._client: aiomqtt.Client | None = None
        self._pump: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._lost is not None and not self._lost.done()

    async def connect(self) -> None:
        await self._drop_client()
        client = aiomqtt.Client(
            self._address.host,
            self._address.port,
            identifier=self._client_id,
            clean_session=self._clean_session,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=self._keepalive,
            timeout=self._connect_timeout,
            max_inflight_messages=self._max_inflight,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self._tcp_nodelay))],
        )
        # aiomqtt logs a warning per call beyond 10 concurrent ones; concurrent QoS 1 publishes
        # are how this transport reaches throughput, so warn only far beyond the in-flight cap.
        client.pending_calls_threshold = 10 * self._max_inflight
        self._opened()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.__aenter__()
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self._address.url}: {exc!r}") from exc
        self._client = client
        self._lost = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(
            self._pump_messages(client, self._lost), name=f"aiomqtt-pump-{self._client_id}"
        )

    async def close(self) -> None:
        had_connection = await self._drop_client()
        self._closing()
        if had_connection:
            self._connection_lost(None)

    async def _drop_client(self) -> bool:
        """Disconnect the live client, if any, without reporting a loss; whether there was one."""
        client, self._client = self._client, None
        pump, self._pump = self._pump, None
        lost, self._lost = self._lost, None
        if client is None:
            return False
        was_live = lost is not None and not lost.done()
        if lost is not None and not lost.done():
            lost.set_result(None)
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        # After a loss aiomqtt's __aexit__ only releases its lock; otherwise it says goodbye.
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await client.__aexit__(None, None, None)
        return was_live

    async def _pump_messages(self, client: aiomqtt.Client, lost: asyncio.Future[None]) -> None:
        cause: BaseException
        try:
            async for message in client.messages:
                self._deliver(message.topic.value, _payload_bytes(message.payload))
        except aiomqtt.MqttError as exc:
            cause = exc
        else:  # pragma: no cover -- aiomqtt's iterator only ends by raising
            cause = ConnectionError("aiomqtt's message iterator ended")
        # aiomqtt stops iterating as soon as it sees the loss, possibly with messages still in
        # its queue (no public way to read them): hand them over first, in order.
        queue = client._queue
        while not queue.empty():
            message = queue.get_nowait()
            self._deliver(message.topic.value, _payload_bytes(message.payload))
        if lost.done():
            return  # closed or replaced on purpose
        lost.set_result(None)
        if self._client is client:
            self._client = None
            self._pump = None
            self._connection_lost(cause)

    async def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None:
        check_qos(qos)
        if not topic_filters:
            return
        client = self._live_client()
        granted = await self._until_lost(client.subscribe([(f, qos) for f in topic_filters]))
        failed = [
            g.is_failure if isinstance(g, ReasonCode) else g >= _SUBACK_FAILURE for g in granted
        ]
        refused = [f for f, bad in zip(topic_filters, failed, strict=False) if bad]
        if refused or len(failed) != len(topic_filters):
            raise TransportError(f"broker refused subscriptions {refused or list(topic_filters)}")

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        check_qos(qos)
        client = self._live_client()
        await self._until_lost(client.publish(topic, payload, qos=qos, retain=retain))

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        check_qos(qos)
        self._live_client()  # not connected: raise now, as the other transports do
        return asyncio.ensure_future(self.publish(topic, payload, qos, retain))

    async def _until_lost(self, operation: Coroutine[Any, Any, _T]) -> _T:
        """Await an aiomqtt call, failing with :class:`TransportDisconnected` as soon as the
        connection is lost (aiomqtt itself would wait for its timeout)."""
        lost = self._lost
        task = asyncio.ensure_future(operation)
        if lost is None:
            task.cancel()
            raise TransportDisconnected(f"not connected to {self._address.url}")
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            try:
                return task.result()
            except aiomqtt.MqttError as exc:
                no_connection = getattr(exc, "rc", None) == mqtt.MQTT_ERR_NO_CONN
                if no_connection or lost.done():
                    raise TransportDisconnected(f"connection to {self._address.url} lost") from exc
                raise TransportError(str(exc)) from exc
        task.cancel()
        raise TransportDisconnected(f"connection to {self._address.url} lost")

    def _live_client(self) -> aiomqtt.Client:
        if self._client is None or not self.is_connected:
            raise TransportDisconnected(f"not connected to {self._address.url}")
        return self._client

    def abort(self) -> None:
        """Cut the TCP connection without an MQTT DISCONNECT, as a network failure would: the
        loss is reported like any other (a reader sees :class:`TransportDisconnected`)."""
        sock = self._paho_socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _paho_socket(self) -> socket.socket | None:
        if self._client is None:
            return None
        # paho's socket is reachable only through aiomqtt's private client attribute.
        sock = self._client._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def tcp_nodelay_enabled(self) -> bool:
        """Whether the live socket has TCP_NODELAY set (read back with getsockopt)."""
        sock = self._paho_socket()
        return sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
