"""Injected time for the runtime: a :class:`Timer` gives ``monotonic()`` and ``sleep()``.

Every wait the runtime makes for scheduling (tick intervals, restart backoff, retry backoff,
watchdog ages, the slot-stall check) goes through a :class:`Timer`, never through
``time.monotonic`` or a bare ``asyncio.sleep``. Live processes use :class:`SystemTimer`; tests
use :class:`ManualTimer` and move time forward with :meth:`ManualTimer.advance`, so a test of a
30-second backoff takes microseconds and never flakes.

Times are float seconds on a monotonic scale with an arbitrary origin: they order and measure
intervals, and mean nothing as dates. (Floats are fine here: these are durations at the I/O
edge, not amounts.)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Timer(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemTimer:
    """The event loop's real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualTimer:
    """Time that moves only when a test calls :meth:`advance`.

    ``sleep(s)`` waits until :meth:`advance` has moved :meth:`monotonic` to at least
    ``now + s``; sleepers wake in deadline order. ``sleep(0)`` (or less) just yields once.
    :meth:`advance` first lets runnable tasks reach their next wait, then moves time, yielding
    after each wake-up, so a test sees the effects of the time it advanced when it returns.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.slept: list[float] = []  # every duration asked for, in call order

    def monotonic(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        """Sleepers still waiting (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every sleeper that is now due run (in deadline order)."""
        if seconds < 0:
            raise ValueError("time does not go back")
        await _settle()  # tasks started just before get to their sleeps at the current time
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 50) -> None:
    """Yield to the loop enough times for woken tasks to run to their next wait (a wake-up
    that goes through a few futures and tasks takes several loop iterations)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_event_or_timeout(event: asyncio.Event, seconds: float, timer: Timer) -> bool:
    """Wait until ``event`` is set (True) or ``seconds`` of ``timer`` time pass (False).

    With the loop's own clock (:class:`SystemTimer`) the caller waits on the event itself
    under ``asyncio.timeout``: one future, and the caller runs on the loop's next turn after
    ``set()`` (an event-driven bot's tick starts that much sooner). Any other timer races two
    inner tasks; both are cancelled and awaited before returning, also when the caller is
    cancelled, so nothing is left running."""
    if event.is_set():
        return True
    if type(timer) is SystemTimer:
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(timer.sleep(seconds))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            if not task.done():
                task.cancel()
        for task in (waiter, sleeper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return event.is_set()
