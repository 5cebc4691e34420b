"""BusClient: one connection to the bus, kept alive, with typed messages in a bounded queue.

What it adds to a :class:`~keepers.bus.transport.Transport`:

* **Reconnect.** A supervisor task connects, and after every loss reconnects with jittered
  exponential backoff (:class:`Backoff`, a seeded ``random.Random``), forever, until
  :meth:`BusClient.close`. Each successful connection increments :attr:`BusClient.generation`;
  every :class:`Delivery` carries the generation it arrived on, so a consumer that must resync
  after a reconnect (the DLOB loads a snapshot) sees the change in order with the messages.
* **Re-subscribe.** Subscriptions are remembered and re-sent after every reconnect (neither
  MQTT client does it).
* **Decode once, at ingress.** Payloads become typed messages (:func:`keepers.bus.schemas.decode`)
  in the reader, before they are queued. A payload that does not decode is counted by reason,
  logged (throttled) and published as a :class:`~keepers.bus.schemas.DeadLetter` to the dead-
  letter topic by a separate task, so a bad payload never stops or slows the reader.
* **Bounded ingress.** One bounded queue into the consumer. When it is full the reader waits
  (backpressure: the transport's buffer fills, gmqtt's then stops reading its socket and the
  broker queues), counts the wait and logs a warning at most once per ``warn_interval``.

Deliveries are in arrival order. One consumer (``async for delivery in bus``) is the intended
use; several tasks calling :meth:`BusClient.get` each get distinct deliveries.

Timing: backoff sleeps and the warning throttle use the injected ``sleep`` and ``monotonic``
(I/O edge, not protocol time), so tests can run them without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

import msgspec
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keepers.bus import schemas, topics
from keepers.bus.schemas import DeadLetter, DecodeError, DecodeReason, Message
from keepers.bus.transport import Transport, TransportDisconnected, TransportError, check_qos

_log = structlog.get_logger("keepers.bus")

_T = TypeVar("_T")


class BusClosed(Exception):
    """The bus client was closed; no more deliveries."""


class BusFailed(Exception):
    """The bus client stopped on an error it cannot retry (e.g. a refused subscription)."""


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """A decoded message, the topic it came on, and the connection generation (1, 2, ...).

    A msgspec struct rather than a dataclass: one is built per message on the reader's hot
    path, and a frozen dataclass costs several times as much to construct."""

    topic: str
    message: Message
    generation: int


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt ``n`` waits between half and all of
    ``min(maximum, initial * multiplier**n)`` seconds, so reconnecting clients spread out but
    never retry in a tight loop."""

    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(slots=True)
class BusStats:
    """Counters, read by tests and by the Prometheus collector (:class:`BusCollector`)."""

    received: int = 0
    delivered: int = 0
    malformed: Counter[DecodeReason] = field(default_factory=Counter)
    deadlettered: int = 0
    deadletter_dropped: int = 0  # the dead-letter backlog was full
    deadletter_failed: int = 0  # publishing the dead letter failed
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    backpressure_waits: int = 0
    queue_full_warnings: int = 0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


class _Closed:
    """Queued behind the last delivery when the client closes or fails."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class BoundedQueue(Generic[_T]):
    """A FIFO with a soft bound: :meth:`put` waits while ``maxsize`` items are queued;
    :meth:`put_nowait` always appends (the reader checks :meth:`full` first; end markers must
    get in even when the queue is full). Cheaper than ``asyncio.Queue`` on the hot path."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[_T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, item: _T) -> None:
        self._items.append(item)
        _wake_first(self._getters)

    async def put(self, item: _T) -> None:
        while len(self._items) >= self.maxsize:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
                raise
        self.put_nowait(item)

    def get_nowait(self) -> _T:
        item = self._items.popleft()  # IndexError when empty
        if self._putters and len(self._items) < self.maxsize:
            _wake_first(self._putters)
        return item

    async def get(self) -> _T:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)
                # Pass a wake-up we may have consumed on to the next getter.
                if self._items:
                    _wake_first(self._getters)
                raise
        return self.get_nowait()


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class _Throttle:
    """True at most once per ``interval`` seconds."""

    def __init__(self, interval: float, monotonic: Callable[[], float]) -> None:
        self._interval = interval
        self._monotonic = monotonic
        self._last: float | None = None

    def ready(self) -> bool:
        now = self._monotonic()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


DEADLETTER_BACKLOG: Final = 1_000

ConnectListener = Callable[[int], None]


class BusClient:
    def __init__(
        self,
        transport: Transport,
        *,
        deadletter_topic: str | None = None,
        queue_size: int = 10_000,
        qos: int = 1,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        warn_interval: float = 5.0,
        decode: Callable[[str, bytes], Message] = schemas.decode,
    ) -> None:
        check_qos(qos)
        self.transport = transport
        self.stats = BusStats()
        self.generation = 0
        self.failure: BaseException | None = None
        self._deadletter_topic = deadletter_topic
        self._queue: BoundedQueue[Delivery | _Closed] = BoundedQueue(queue_size)
        self._qos = qos
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._sleep = sleep
        self._wall_clock_ns = wall_clock_ns
        self._decode = decode
        self._subscriptions: dict[str, int] = {}
        self._connected = asyncio.Event()
        self._connect_listeners: list[ConnectListener] = []
        self._full_warning = _Throttle(warn_interval, monotonic)
        self._malformed_warning = _Throttle(warn_interval, monotonic)
        self._connect_warning = _Throttle(warn_interval, monotonic)
        self._deadletters: deque[DeadLetter] = deque()
        self._deadletter_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._done = False

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> BusClient:
        """Start (unless already started); leaving the block closes."""
        if not self._tasks:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting in the background; :meth:`wait_connected` waits for it."""
        if self._tasks:
            raise RuntimeError("BusClient already started")
        name = self.transport.client_id
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"bus-reader-{name}"),
            asyncio.create_task(self._publish_deadletters(), name=f"bus-deadletter-{name}"),
        ]

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()
        await self.transport.close()
        self._queue.put_nowait(_Closed(None))

    async def wait_connected(self) -> None:
        """Until connected and subscribed (bound it with ``asyncio.timeout``)."""
        await self._connected.wait()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set() and self.transport.is_connected

    def add_connect_listener(self, listener: ConnectListener) -> None:
        """Called with the new generation after each (re)connect, once subscriptions are sent."""
        self._connect_listeners.append(listener)

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # --- subscribe / publish -----------------------------------------------------------------
    async def subscribe(self, topic_filters: Iterable[str], qos: int | None = None) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        qos = self._qos if qos is None else qos
        check_qos(qos)
        filters = list(topic_filters)
        for topic_filter in filters:
            topics.validate_filter(topic_filter)
        new = [f for f in filters if self._subscriptions.get(f) != qos]
        for topic_filter in new:
            self._subscriptions[topic_filter] = qos
        # The transport's state, not _connected: a (re)connect may be re-subscribing right now
        # from a list that does not hold these yet. Subscribing twice is harmless in MQTT.
        if new and self.transport.is_connected:
            with contextlib.suppress(TransportDisconnected):
                # Lost meanwhile: the reconnect re-subscribes everything remembered.
                await self.transport.subscribe(new, qos)

    async def publish(
        self, topic: str, message: Message, *, qos: int | None = None, retain: bool = False
    ) -> None:
        """Encode and publish; raises :class:`TransportDisconnected` while disconnected."""
        await self.transport.publish(
            topic, schemas.encode(message), self._qos if qos is None else qos, retain
        )

    async def publish_raw(
        self, topic: str, payload: bytes, *, qos: int | None = None, retain: bool = False
    ) -> None:
        await self.transport.publish(topic, payload, self._qos if qos is None else qos, retain)

    def publish_raw_nowait(
        self, topic: str, payload: bytes, *, qos: int | None = None, retain: bool = False
    ) -> asyncio.Future[None]:
        """Hand ``payload`` to the connection now; the future completes at its acknowledgement
        (see :meth:`keepers.bus.transport.Transport.publish_nowait`). Raises
        :class:`TransportDisconnected` while disconnected."""
        return self.transport.publish_nowait(
            topic, payload, self._qos if qos is None else qos, retain
        )

    # --- consume -----------------------------------------------------------------------------
    async def get(self) -> Delivery:
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)  # every later get() ends the same way
            if item.error is not None:
                raise BusFailed(str(item.error)) from item.error
            raise BusClosed
        return item

    def get_nowait(self) -> Delivery | None:
        """The next delivery if one is queued, else ``None``."""
        try:
            item = self._queue.get_nowait()
        except IndexError:
            return None
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)
            return None
        return item

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.get()
            except BusClosed:
                return

    # --- the reader --------------------------------------------------------------------------
    async def _supervise(self) -> None:
        try:
            await self._connect_and_read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the consumer through get()
            self.failure = exc
            _log.error("bus reader failed", client_id=self.transport.client_id, error=repr(exc))
            self._queue.put_nowait(_Closed(exc))

    async def _connect_and_read(self) -> None:
        attempt = 0
        while True:
            try:
                await self.transport.connect()
            except TransportError as exc:
                self.stats.connect_failures += 1
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                if self._connect_warning.ready():
                    _log.warning(
                        "bus connect failed",
                        client_id=self.transport.client_id,
                        attempt=attempt,
                        retry_in_s=round(delay, 3),
                        error=repr(exc),
                    )
                await self._sleep(delay)
                continue
            attempt = 0
            await self._resubscribe()
            self.generation += 1
            self.stats.connects += 1
            self._connected.set()
            for listener in list(self._connect_listeners):
                listener(self.generation)
            try:
                await self._read()
            except TransportDisconnected as exc:
                self._connected.clear()
                self.stats.disconnects += 1
                _log.warning(
                    "bus connection lost",
                    client_id=self.transport.client_id,
                    generation=self.generation,
                    error=repr(exc.__cause__ or exc),
                )
                await self._sleep(self._backoff.delay(0, self._rng))
                continue
            return  # the transport was closed

    async def _resubscribe(self) -> None:
        by_qos: dict[int, list[str]] = {}
        for topic_filter, qos in self._subscriptions.items():
            by_qos.setdefault(qos, []).append(topic_filter)
        for qos, filters in by_qos.items():
            try:
                await self.transport.subscribe(filters, qos)
            except TransportDisconnected:
                return  # _read() meets the loss next and reconnects
            # Any other TransportError (a refused subscription) is not retried: it escapes.

    async def _read(self) -> None:
        stats = self.stats
        decode = self._decode
        queue = self._queue
        generation = self.generation
        async for topic, payload in self.transport.messages():
            stats.received += 1
            try:
                message = decode(topic, payload)
            except DecodeError as exc:
                self._malformed(topic, payload, exc)
                continue
            delivery = Delivery(topic, message, generation)
            if queue.full():
                stats.backpressure_waits += 1
                if self._full_warning.ready():
                    stats.queue_full_warnings += 1
                    _log.warning(
                        "bus ingress queue full; reader waiting",
                        client_id=self.transport.client_id,
                        depth=queue.qsize(),
                        waits=stats.backpressure_waits,
                    )
                await queue.put(delivery)
            else:
                queue.put_nowait(delivery)
            stats.delivered += 1

    # --- malformed payloads ------------------------------------------------------------------
    def _malformed(self, topic: str, payload: bytes, exc: DecodeError) -> None:
        self.stats.malformed[exc.reason] += 1
        if self._malformed_warning.ready():
            _log.warning(
                "malformed bus payload",
                client_id=self.transport.client_id,
                topic=topic,
                reason=exc.reason.value,
                path=exc.path,
                detail=exc.detail,
                malformed_total=self.stats.malformed_total,
            )
        if self._deadletter_topic is None or topic == self._deadletter_topic:
            return  # nowhere to send it, or it is a dead letter already: never loop
        if len(self._deadletters) >= DEADLETTER_BACKLOG:
            self.stats.deadletter_dropped += 1
            return
        self._deadletters.append(
            DeadLetter(
                topic=topic,
                reason=exc.reason.value,
                path=exc.path,
                detail=exc.detail,
                payload=payload,
                received_ts=self._wall_clock_ns(),
            )
        )
        self._deadletter_ready.set()

    async def _publish_deadletters(self) -> None:
        topic = self._deadletter_topic
        if topic is None:
            return
        while True:
            await self._deadletter_ready.wait()
            self._deadletter_ready.clear()
            while self._deadletters:
                await self._connected.wait()
                letter = self._deadletters.popleft()
                try:
                    await self.transport.publish(topic, schemas.encode(letter), 1, False)
                except TransportError as exc:
                    self.stats.deadletter_failed += 1
                    _log.warning("dead letter not published", topic=letter.topic, error=repr(exc))
                else:
                    self.stats.deadlettered += 1


class BusCollector(Collector):
    """Prometheus view of a :class:`BusClient`'s :class:`BusStats`, read at scrape time (no
    per-message metric calls on the reader's hot path). Register with
    ``registry.register(BusCollector(bus))``."""

    def __init__(self, bus: BusClient, name: str | None = None) -> None:
        self._bus = bus
        self._name = name or bus.transport.client_id

    def collect(self) -> Iterable[Metric]:
        stats = self._bus.stats
        label = ["client"]
        value = [self._name]

        def counter(metric: str, doc: str, amount: int) -> CounterMetricFamily:
            family = CounterMetricFamily(metric, doc, labels=label)
            family.add_metric(value, amount)
            return family

        yield counter("keepers_bus_received", "Payloads received", stats.received)
        yield counter("keepers_bus_delivered", "Messages queued to the consumer", stats.delivered)
        malformed = CounterMetricFamily(
            "keepers_bus_malformed", "Payloads that did not decode", labels=["client", "reason"]
        )
        for reason in DecodeReason:
            malformed.add_metric([self._name, reason.value], stats.malformed[reason])
        yield malformed
        yield counter("keepers_bus_deadlettered", "Dead letters published", stats.deadlettered)
        yield counter(
            "keepers_bus_deadletter_lost",
            "Dead letters dropped or not published",
            stats.deadletter_dropped + stats.deadletter_failed,
        )
        yield counter("keepers_bus_connects", "Connections made", stats.connects)
        yield counter("keepers_bus_disconnects", "Connections lost", stats.disconnects)
        yield counter(
            "keepers_bus_connect_failures", "Connection attempts failed", stats.connect_failures
        )
        yield counter(
            "keepers_bus_backpressure_waits",
            "Times the reader waited on a full ingress queue",
            stats.backpressure_waits,
        )
        depth = GaugeMetricFamily("keepers_bus_queue_depth", "Ingress queue depth", labels=label)
        depth.add_metric(value, self._bus.queue_depth)
        yield depth
        connected = GaugeMetricFamily("keepers_bus_connected", "1 when connected", labels=label)
        connected.add_metric(value, 1.0 if self._bus.is_connected else 0.0)
        yield connected
