"""The shape every bus-fed replica shares: one writer task, snapshots loaded beside it.

A replica (:class:`keepers.dlob_feed.DlobFeed`: the order book; :class:`keepers.user_feed.UserFeed`:
every user account) keeps state the node publishes as a sequenced stream, and reloads a
snapshot from the node whenever the stream cannot be trusted (start, reconnect, gap).
:class:`FeedWriter` is the part that does not depend on what is replicated:

* the writer: one task, the bus client's one consumer, and the only code that mutates the
  replica. It hands each delivery's message to :meth:`FeedWriter._on_delivery`, and between
  two deliveries does the work other tasks signalled (:meth:`FeedWriter._signal_work`): a new
  connection generation (:meth:`FeedWriter._on_new_connection`), snapshots that finished
  loading (:meth:`FeedWriter._apply_ready`);
* a new connection is noticed twice over, by the bus's connect listener and by the first
  delivery of a later generation, and handled once: whatever was published while there was no
  connection is lost with a clean session, so the subclass resyncs;
* snapshot loads (:meth:`FeedWriter._load_with_retry`) run in tasks of their own, retried
  with jittered exponential backoff forever, each attempt bounded by a timeout; their results
  go back to the writer, never straight into the replica;
* waiting readers (:meth:`FeedWriter._wait`) are woken whenever the writer has drained the
  queue or a sync state changes, and get the subclass's ``failed_error`` when the writer
  stopped on an error or the feed was closed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import structlog

from keepers.bus.client import Backoff, BusClient, BusClosed, Delivery

__all__ = ["FeedWriter"]

T = TypeVar("T")

_log = structlog.get_logger("keepers.feed_writer")


class FeedWriter:
    """Base of a bus-fed replica; see the module docstring.

    Subclasses set ``writer_name`` (the writer task's name, also in log lines) and
    ``failed_error`` (raised to waiting readers), and implement :meth:`topic_filters`,
    :meth:`_on_delivery`, :meth:`_on_new_connection` and :meth:`_apply_ready`.
    Lifecycle: build, :meth:`start` (subscribes and starts the writer), then start the bus
    client (or have it running already); :meth:`close` stops the writer and the loads but
    leaves the bus to its owner. ``async with`` does both.
    """

    writer_name: ClassVar[str] = "feed-writer"
    failed_error: ClassVar[type[Exception]] = RuntimeError

    def __init__(
        self,
        bus: BusClient,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._bus = bus
        self._backoff = backoff or Backoff(initial=0.05, maximum=5.0)
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._sleep = sleep
        self._generation = 0  # the connection generation the replica is consistent with
        self._connect_generation = 0  # the newest one the connect listener reported
        self._work = False  # something other than a delivery waits for the writer
        self._wake: asyncio.Future[None] | None = None
        self._changed: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._closed = False

    # --- what a subclass provides ----------------------------------------------------------
    def topic_filters(self) -> list[str]:
        """Every topic the feed subscribes to."""
        raise NotImplementedError

    def _on_delivery(self, message: object) -> None:
        """One decoded message, in delivery order (on the writer)."""
        raise NotImplementedError

    def _on_new_connection(self, first: bool) -> None:
        """A new connection generation (``first``: the first ever): resync (on the writer)."""
        raise NotImplementedError

    def _apply_ready(self) -> None:
        """Apply the snapshots whose loads finished and are still wanted (on the writer)."""
        raise NotImplementedError

    def _background_tasks(self) -> list[asyncio.Task[Any]]:
        """Tasks besides the writer that :meth:`close` cancels (the loads in flight)."""
        return []

    def _wake_waiters(self) -> None:
        """Wake every waiting reader (a subclass with more kinds of waiters extends it)."""
        self._notify()

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._bus.add_connect_listener(self._on_connect)
        await self._bus.subscribe(self.topic_filters())
        if self._bus.generation > 0 and self._bus.is_connected:
            # Already connected: the subscription just made is live, so a snapshot loaded now
            # holds everything it did not see.
            self._on_connect(self._bus.generation)
        self._writer = asyncio.create_task(self._write(), name=self.writer_name)
        self._writer.add_done_callback(self._writer_done)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = self._background_tasks()
        if self._writer is not None:
            tasks.append(self._writer)
        for task in tasks:
            task.cancel()
        # A writer that failed has its error in ``failure`` already; nothing to raise here.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._wake_waiters()

    async def join(self) -> None:
        """Until the writer ends: returns once the bus client closed; ``failed_error`` if the
        writer stopped on an error."""
        if self._writer is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        try:
            await asyncio.shield(self._writer)
        except asyncio.CancelledError:
            if self._writer.cancelled() and not self._closed:
                raise self.failed_error("the feed's writer was cancelled") from None
            raise
        except Exception as exc:
            raise self.failed_error(repr(exc)) from exc

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
            _log.error("feed writer failed", writer=self.writer_name, error=repr(self.failure))
        self._wake_waiters()

    @property
    def malformed(self) -> int:
        """Payloads the bus client could not decode (counted and dead-lettered there)."""
        return self._bus.stats.malformed_total

    # --- readers waiting -------------------------------------------------------------------
    async def _wait(self, done: Callable[[], bool], closed_detail: str) -> None:
        """Until ``done()`` holds, checked whenever the writer has drained its queue or a sync
        state changes; ``failed_error`` if the writer stopped or the feed closed first."""
        while True:
            if self.failure is not None:
                raise self.failed_error(repr(self.failure)) from self.failure
            if done():
                return
            if self._closed:
                raise self.failed_error(closed_detail)
            await self._changes()

    def _changes(self) -> asyncio.Future[None]:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return asyncio.shield(self._changed)

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    # --- the writer ------------------------------------------------------------------------
    def _on_connect(self, generation: int) -> None:
        """Bus listener, called after each (re)connect once subscriptions are sent."""
        if generation > self._connect_generation:
            self._connect_generation = generation
            self._signal_work()

    def _signal_work(self) -> None:
        self._work = True
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _write(self) -> None:
        get_nowait = self._bus.get_nowait
        on_delivery = self._on_delivery
        try:
            while True:
                if self._work:
                    self._do_work()
                delivery = get_nowait()
                if delivery is None:
                    delivery = await self._next_delivery()
                    if delivery is None:
                        continue
                if delivery.generation > self._generation:
                    self._new_generation(delivery.generation)
                on_delivery(delivery.message)
        except BusClosed:
            return

    async def _next_delivery(self) -> Delivery | None:
        """The next delivery, or ``None`` when woken for other work first."""
        self._notify()  # the queue is drained: wake whoever waits for the replica to catch up
        wake = asyncio.get_running_loop().create_future()
        self._wake = wake
        get = asyncio.ensure_future(self._bus.get())
        try:
            await asyncio.wait((get, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake = None
            if not get.done():
                get.cancel()
                # The queue keeps an item a cancelled get() had been woken for.
                try:
                    await get
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # this task is being cancelled, not only ``get``
        if get.cancelled():
            return None
        return get.result()

    def _do_work(self) -> None:
        self._work = False
        if self._connect_generation > self._generation:
            self._new_generation(self._connect_generation)
        self._apply_ready()

    def _new_generation(self, generation: int) -> None:
        self._generation = max(generation, self._generation)
        self._connect_generation = max(generation, self._connect_generation)
        self._on_new_connection(generation == 1)

    # --- loads -----------------------------------------------------------------------------
    async def _load_with_retry(
        self,
        fetch: Callable[[], Awaitable[T]],
        *,
        attempt_timeout: float,
        on_failure: Callable[[], None],
        event: str,
        **log_fields: object,
    ) -> T:
        """``await fetch()`` until it succeeds, each attempt within ``attempt_timeout``
        seconds, with jittered backoff between attempts; each failure counted (``on_failure``)
        and logged as ``event`` with its cause."""
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(attempt_timeout):
                    return await fetch()
            except Exception as exc:  # any loader failure is retried; logged with its cause
                on_failure()
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                _log.warning(
                    event,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=repr(exc),
                    **log_fields,
                )
                await self._sleep(delay)
