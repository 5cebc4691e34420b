"""The :class:`~keepers.bus.transport.Transport` over gmqtt (asyncio protocol, ~6 us CPU a message).

gmqtt parses packets in its asyncio protocol and calls ``on_message`` synchronously, which
appends to the shared receive buffer: no task or queue per message. What gmqtt does by
itself and this transport turns off or completes:

* gmqtt reconnects on its own (every 6 s, forever) and does not re-subscribe; here
  ``reconnect`` is a no-op, and :class:`~keepers.bus.client.BusClient` reconnects with jittered
  backoff and re-subscribes.
* gmqtt's ``publish`` returns before the broker acknowledges; here a QoS 1 ``publish`` waits
  for the PUBACK, seen through the client's in-flight message storage (removed on PUBACK),
  and ``publish_nowait`` returns that wait as a future (the packet is already written). A
  PUBACK that does not come within ``ack_timeout`` fails it and cuts the connection.
* Flow control: when the receive buffer passes its high-water mark the asyncio transport stops
  reading, so TCP pushes back and the broker queues (see ``max_queued_messages`` in
  ``docker/mosquitto.conf``).

TCP_NODELAY is set on the socket after connecting (asyncio sets it on TCP transports already;
it is set here explicitly because a QoS 1 round trip measured 88 ms with Nagle's algorithm
against 0.35 ms without). gmqtt has no public accessor for its asyncio transport, so
:meth:`GmqttTransport._asyncio_transport` reads it from the connection object (gmqtt 0.8).

MQTT 3.1.1 on the wire, as every broker the project runs (Mosquitto, amqtt) speaks it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import gmqtt  # type: ignore[import-untyped]
from gmqtt.mqtt.constants import MQTTv311  # type: ignore[import-untyped]
from gmqtt.mqtt.handler import MQTTConnectError  # type: ignore[import-untyped]
from gmqtt.storage import PersistentStorage  # type: ignore[import-untyped]

from keepers.bus.transport import (
    BufferedTransport,
    TransportDisconnected,
    TransportError,
    check_qos,
    parse_broker_url,
)

_SUBACK_FAILURE = 0x80


class _AckStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight storage, resolving a future per message id when its PUBACK arrives."""

    def __init__(self) -> None:
        super().__init__()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self.last: asyncio.Future[None] | None = None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        future = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        self.last = future

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(exc)
                # Nobody may be waiting any more (a cancelled publish); do not log it.
                future.exception()


class _Client(gmqtt.Client):  # type: ignore[misc]
    async def reconnect(self, delay: bool = False) -> None:
        """Reconnecting is :class:`~keepers.bus.client.BusClient`'s job, with backoff and
        re-subscription; gmqtt's own loop would do neither."""


class GmqttTransport(BufferedTransport):
    name = "gmqtt"

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        tcp_nodelay: bool = True,
        clean_session: bool = True,
        keepalive: int = 30,
        connect_timeout: float = 5.0,
        ack_timeout: float = 10.0,
        high_water: int = 50_000,
        low_water: int = 10_000,
    ) -> None:
        super().__init__(client_id, high_water=high_water, low_water=low_water)
        self._address = parse_broker_url(url)
        self._tcp_nodelay = tcp_nodelay
        self._clean_session = clean_session
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._client: Any = None
        self._connecting: Any = None
        self._lost_while_connecting = False
        self._storage = _AckStorage()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

    @property
    def is_connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    async def connect(self) -> None:
        await self._drop_client()
        self._storage = _AckStorage()
        client = _Client(
            self._client_id, clean_session=self._clean_session, persistent_storage=self._storage
        )
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        self._opened()
        # A resumed session's queued messages arrive right after CONNACK, before connect()
        # returns: they are this connection's too.
        self._connecting = client
        self._lost_while_connecting = False
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.connect(
                    self._address.host,
                    self._address.port,
                    keepalive=self._keepalive,
                    version=MQTTv311,
                )
            if self._lost_while_connecting:
                raise ConnectionResetError("lost right after CONNACK")
        except (OSError, TimeoutError, MQTTConnectError) as exc:
            await _quietly_disconnect(client)
            raise TransportError(f"cannot connect to {self._address.url}: {exc!r}") from exc
        finally:
            self._connecting = None
        self._client = client
        self._set_nodelay()

    async def close(self) -> None:
        had_connection = await self._drop_client()
        self._closing()
        if had_connection:
            self._connection_lost(None)

    async def _drop_client(self) -> bool:
        """Disconnect the live client, if any, without reporting a loss; whether there was one."""
        client, self._client = self._client, None
        if client is None:
            return False
        self._storage.fail_all(TransportDisconnected("transport closed"))
        await _quietly_disconnect(client)
        return True

    async def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None:
        check_qos(qos)
        if not topic_filters:
            return
        client = self._live_client()
        subscriptions = [gmqtt.Subscription(f, qos=qos) for f in topic_filters]
        mid = client.subscribe(subscriptions)
        future = asyncio.get_running_loop().create_future()
        self._subacks[mid] = future
        try:
            granted = await future
        finally:
            self._subacks.pop(mid, None)
        refused = [f for f, g in zip(topic_filters, granted, strict=False) if g >= _SUBACK_FAILURE]
        if refused or len(granted) != len(topic_filters):
            raise TransportError(f"broker refused subscriptions {refused or list(topic_filters)}")

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        await self.publish_nowait(topic, payload, qos, retain)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """gmqtt writes the packet to the socket before returning; the future completes at its
        PUBACK (QoS 1), or is already done (QoS 0)."""
        check_qos(qos)
        client = self._live_client()
        client.publish(topic, payload, qos=qos, retain=retain)
        ack = self._storage.last
        self._storage.last = None
        loop = asyncio.get_running_loop()
        if qos == 0 or ack is None:
            sent: asyncio.Future[None] = loop.create_future()
            sent.set_result(None)
            return sent
        overdue = loop.call_later(self._ack_timeout, self._ack_overdue, ack)
        ack.add_done_callback(lambda _: overdue.cancel())
        return ack

    def _ack_overdue(self, ack: asyncio.Future[None]) -> None:
        """A broker that never acknowledges (amqtt can lose a PUBACK) would otherwise hold the
        publisher forever: treat the connection as broken, so the owner reconnects and
        re-sends; subscribers drop the duplicate by its sequence number."""
        if ack.done():
            return
        ack.set_exception(
            TransportDisconnected(
                f"no PUBACK within {self._ack_timeout} s from {self._address.url}"
            )
        )
        ack.exception()  # retrieved: the publisher may have stopped waiting for it
        self.abort()

    # --- gmqtt callbacks ---------------------------------------------------------------------
    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> None:
        if client is self._client or client is self._connecting:
            self._deliver(topic, payload)

    def _on_subscribe(
        self, client: Any, mid: int, granted: tuple[int, ...], properties: Any
    ) -> None:
        future = self._subacks.get(mid)
        if future is not None and not future.done():
            future.set_result(tuple(granted))

    def _on_disconnect(self, client: Any, packet: Any, exc: BaseException | None = None) -> None:
        if client is self._connecting:
            self._lost_while_connecting = True  # connect() fails instead
            return
        if client is not self._client:
            return  # a connection already given up (closed or replaced)
        self._client = None
        cause = ConnectionError(f"connection to {self._address.url} lost")
        self._storage.fail_all(TransportDisconnected(str(cause)))
        for future in self._subacks.values():
            if not future.done():
                future.set_exception(TransportDisconnected(str(cause)))
        self._connection_lost(cause)

    # --- socket ------------------------------------------------------------------------------
    def _live_client(self) -> Any:
        client = self._client
        if client is None or not client.is_connected:
            raise TransportDisconnected(f"not connected to {self._address.url}")
        return client

    def _asyncio_transport(self) -> asyncio.Transport | None:
        connection = getattr(self._client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        return transport if isinstance(transport, asyncio.Transport) else None

    def _socket(self) -> Any:
        """The connection's socket (asyncio's ``TransportSocket`` wrapper), or ``None``."""
        transport = self._asyncio_transport()
        return transport.get_extra_info("socket") if transport is not None else None

    def _set_nodelay(self) -> None:
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self._tcp_nodelay))

    def tcp_nodelay_enabled(self) -> bool:
        """Whether the live socket has TCP_NODELAY set (read back with getsockopt)."""
        sock = self._socket()
        return sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    def abort(self) -> None:
        """Cut the TCP connection without an MQTT DISCONNECT, as a network failure would: the
        loss is reported like any other (a reader sees :class:`TransportDisconnected`)."""
        transport = self._asyncio_transport()
        if transport is not None:
            transport.abort()

    def _pause_reading(self) -> None:
        transport = self._asyncio_transport()
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self._asyncio_transport()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


async def _quietly_disconnect(client: Any) -> None:
    """Close a gmqtt client whatever state its connection is in."""
    try:
        async with asyncio.timeout(2.0):
            await client.disconnect()
    except (OSError, TimeoutError, AttributeError, RuntimeError):
        # The socket is already gone (or never opened: no _connection); nothing to release.
        return
