"""The transport interface: one MQTT connection, raw bytes in and out, nothing more.

A :class:`Transport` connects, subscribes, publishes and yields ``(topic, payload)`` pairs. It
does not decode, reconnect or re-subscribe: :class:`keepers.bus.client.BusClient` does those
for every transport alike, so the MQTT clients behind this interface stay interchangeable
(``gmqtt``, ``aiomqtt``, and :mod:`keepers.bus.inprocess` for unit tests).

Contract:

* ``connect()`` opens a fresh connection (a clean session unless the transport was built with
  ``clean_session=False``); after a loss it may be called again. Failing, it raises
  :class:`TransportError`.
* ``messages()`` yields what arrived, in arrival order, until the connection is lost, then
  raises :class:`TransportDisconnected` *after* yielding everything received before the loss;
  it returns after ``close()``. One reader at a time. Messages are not lost across a
  reconnect: the next ``messages()`` continues where the last one stopped, and a loss no
  reader has seen yet is raised by it, even after a reconnect, so none goes unnoticed.
* ``publish()`` returns once the broker acknowledged a QoS 1 message (PUBACK), or once a QoS 0
  message is written. ``publish_nowait()`` hands the message to the connection at once and
  returns a future of that acknowledgement instead (it raises :class:`TransportDisconnected`
  when not connected; the future fails with it when the connection is lost before the
  PUBACK): how a caller keeps many messages in flight without a task per message. Publishes
  issued one after another reach the broker in that order, whichever of the two issued them.
  Only QoS 0 and 1 are offered: every consumer of the bus is idempotent by sequence number.
* Disconnect listeners are called once per connection that ends: with the cause when it was
  lost, with ``None`` after ``close()``.

Known limit: QoS 1 is acknowledged to the broker as a message arrives, before the application
handles it (both MQTT clients do this); the node's gap-free sequence numbers and the DLOB's
snapshot resync, not the transport, make delivery whole.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

DEFAULT_PORT: Final = 1883

DisconnectListener = Callable[[BaseException | None], None]


class TransportError(Exception):
    """A connection could not be made or used (refused, timed out, reset)."""


class TransportDisconnected(TransportError):
    """The connection was lost (or never made) while an operation needed it."""


@runtime_checkable
class Transport(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None: ...

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None: ...

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]: ...

    def messages(self) -> AsyncIterator[tuple[str, bytes]]: ...

    def add_disconnect_listener(self, listener: DisconnectListener) -> None: ...


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (port 1883 by default). Other schemes (TLS, websockets) are not
    offered; ``ValueError`` names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt":
        raise ValueError(f"broker URL must be mqtt://host:port, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"broker URL must be only mqtt://host:port, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL has a bad port: {url!r}") from None
    return BrokerAddress(parts.hostname, port if port is not None else DEFAULT_PORT)


def check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise ValueError(f"qos must be 0 or 1, got {qos}")


class _Lost:
    """Marks, in the receive buffer, where a connection ended."""

    __slots__ = ("cause",)

    def __init__(self, cause: BaseException | None) -> None:
        self.cause = cause


class BufferedTransport:
    """The receive side shared by the transports: one FIFO buffer that the client's callback
    fills and :meth:`messages` drains, with connection losses marked in it in order.

    Flow control: past ``high_water`` buffered messages :meth:`_pause_reading` is called (a
    transport that can stop reading its socket does, so the broker queues instead of this
    process), and :meth:`_resume_reading` once the buffer is back under ``low_water``. While
    reading is paused the client sees no traffic: a pause longer than the keepalive (gmqtt
    gives up after twice it) ends in a reconnect, which the sequence numbers cover.
    """

    def __init__(self, client_id: str, *, high_water: int = 50_000, low_water: int = 10_000):
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self._client_id = client_id
        self._buffer: deque[tuple[str, bytes] | _Lost] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._paused = False
        self._high_water = high_water
        self._low_water = low_water
        self._listeners: list[DisconnectListener] = []

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def reading_paused(self) -> bool:
        """Whether the buffer is past its high-water mark and reading was asked to stop."""
        return self._paused

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken by :meth:`messages`."""
        return len(self._buffer)

    def add_disconnect_listener(self, listener: DisconnectListener) -> None:
        self._listeners.append(listener)

    # --- called by the concrete transports ---------------------------------------------------
    def _deliver(self, topic: str, payload: bytes) -> None:
        buffer = self._buffer
        buffer.append((topic, payload))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(buffer) >= self._high_water:
            # Asked again each time while above the mark: something else (gmqtt's stream
            # reader) may have resumed reading meanwhile. Pausing a paused socket is a no-op.
            self._paused = True
            self._pause_reading()

    def _connection_lost(self, cause: BaseException | None) -> None:
        """Record the end of a connection: in the stream if it was lost, and to listeners."""
        if cause is not None:
            self._buffer.append(_Lost(cause))
        self._wake()
        for listener in list(self._listeners):
            listener(cause)

    def _opened(self) -> None:
        self._closed = False

    def _closing(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self) -> None:
        """Stop reading the socket; the default cannot and only lets the buffer grow."""

    def _resume_reading(self) -> None:
        """Undo :meth:`_pause_reading`."""

    # --- the reader's side -------------------------------------------------------------------
    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        buffer = self._buffer
        while True:
            while buffer:
                item = buffer.popleft()
                if isinstance(item, _Lost):
                    raise TransportDisconnected(f"connection lost: {item.cause!r}") from item.cause
                if self._paused and len(buffer) <= self._low_water:
                    self._paused = False
                    self._resume_reading()
                yield item
            if self._closed:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter
