"""The supervisor: every bot of a process in a named task of one ``asyncio.TaskGroup``.

Per bot (:class:`BotRunner`):

* **Ticks never overlap.** One loop per bot runs its ticks one after another; a tick is
  ``decide(view)`` then the executor's outcomes for every action it returned, then
  ``on_outcome`` for each. Nothing else calls ``decide``.
* **When it ticks.** Immediately at start; then when its interval has passed since the last
  tick started; and, for an event-driven bot (``subscriptions.streams`` not empty), as soon as
  a bus message of one of its streams arrives. Messages that arrive during a tick wait in a
  bounded per-bot buffer and are handed to the next tick together (coalesced). A full buffer
  drops its oldest message and counts it: events are hints, the DLOB and the state are the
  truth.
* **Watchdog.** Each completed tick feeds the bot's :class:`Watchdog`; ``/health`` fails when
  one has not been fed for its timeout (a hung or crash-looping bot).
* **Crashes.** An exception out of a tick (``decide``, ``on_outcome``, a signing failure, a
  tick longer than ``tick_timeout``) or out of the bot's factory is a broken invariant: it is
  logged with its traceback, counted (``keepers_bot_restarts_total``), and the bot is rebuilt
  from its factory (fresh state) after a jittered exponential backoff that resets once a tick
  succeeds. Other bots keep running.
* **Once.** With ``once`` each bot ticks exactly once and its task ends; a crash then is not
  retried but reported (:attr:`BotRunner.failure`), and the process exits non-zero.

Cancellation (shutdown) cancels every bot task; a bot is never interrupted except by it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from keepers.bus.client import Backoff, Delivery
from keepers.bus.topics import TopicError, TopicKind, parse
from keepers.logging import bound
from keepers.runtime.bot import (
    Action,
    Bot,
    BotContext,
    BotFactory,
    LearnsFromOutcomes,
    Stream,
    Subscriptions,
)
from keepers.runtime.executor import Executor
from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.timing import SystemTimer, Timer, wait_event_or_timeout
from keepers.runtime.view import DlobSource, MarketState
from protocol.keys import Keypair
from protocol.types import MarketType

_log = structlog.get_logger("keepers.supervisor")

_STREAM_OF_KIND = {
    TopicKind.ORDERS: Stream.ORDERS,
    TopicKind.INTENTS: Stream.INTENTS,
    TopicKind.SLOT: Stream.SLOT,
    TopicKind.ORACLE: Stream.ORACLE,
    TopicKind.RECORDS: Stream.RECORDS,
}

DEFAULT_RESTART_BACKOFF = Backoff(initial=0.5, maximum=30.0)


class Watchdog:
    """Fed by every completed tick; expired when not fed for ``timeout`` seconds. Starts fed
    (a bot gets one timeout to complete its first tick)."""

    def __init__(self, name: str, timeout: float, timer: Timer | None = None) -> None:
        if timeout <= 0:
            raise ValueError("watchdog timeout must be > 0")
        self.name = name
        self.timeout = timeout
        self._timer = timer or SystemTimer()
        self._fed_at = self._timer.monotonic()
        self.feeds = 0

    def feed(self) -> None:
        self._fed_at = self._timer.monotonic()
        self.feeds += 1

    def age(self) -> float:
        return self._timer.monotonic() - self._fed_at

    @property
    def expired(self) -> bool:
        return self.age() > self.timeout


@dataclass(frozen=True, slots=True)
class BotSetup:
    """Everything needed to (re)build and run one bot."""

    name: str
    factory: BotFactory
    context: BotContext
    keypair: Keypair
    interval: float = 1.0
    watchdog_timeout: float = 30.0
    max_events: int = 10_000
    sub_account_ids: tuple[int, ...] | None = None  # overrides the bot's own choice

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"bot {self.name}: interval must be > 0")
        if self.max_events < 1:
            raise ValueError(f"bot {self.name}: max_events must be >= 1")


def effective_subscriptions(subs: Subscriptions, setup: BotSetup) -> Subscriptions:
    """The bot's subscriptions with the configuration's sub-accounts, if it names any."""
    if setup.sub_account_ids is None:
        return subs
    return dataclasses.replace(subs, sub_account_ids=setup.sub_account_ids)


class BotCrashed(Exception):
    """A bot broke an invariant of the runtime (e.g. ``decide`` returned something that is
    not a list of actions); raised inside its tick, so it is restarted like any crash."""

    def __init__(self, bot: str, detail: str) -> None:
        super().__init__(f"bot {bot}: {detail}")
        self.bot = bot
        self.detail = detail


class BotRunner:
    def __init__(
        self,
        setup: BotSetup,
        *,
        executor: Executor,
        state: MarketState,
        metrics: RuntimeMetrics,
        timer: Timer,
        dlob: DlobSource | None = None,
        once: bool = False,
        dry_run: bool = False,
        tick_timeout: float = 30.0,
        restart_backoff: Backoff = DEFAULT_RESTART_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.setup = setup
        self.name = setup.name
        self._executor = executor
        self._state = state
        self._metrics = metrics
        self._timer = timer
        self._dlob = dlob
        self._once = once
        self._dry_run = dry_run
        self._tick_timeout = tick_timeout
        self._backoff = restart_backoff
        self._rng = rng or random.Random()  # noqa: S311 -- backoff jitter, not cryptography
        self.watchdog = Watchdog(setup.name, setup.watchdog_timeout, timer)
        self.bot: Bot | None = None
        self.subscriptions = Subscriptions()
        self._pending: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self.ticks = 0
        self.restarts = 0
        self.events_dropped = 0
        self.failure: BaseException | None = None
        self.in_tick = False

    # --- events ------------------------------------------------------------------------------
    def offer(self, delivery: Delivery) -> None:
        """Keep ``delivery`` for the next tick if the bot subscribed to it, and wake it."""
        subs = self.subscriptions
        if not subs.streams or not _wanted(subs, delivery.topic):
            return
        if len(self._pending) >= self.setup.max_events:
            self._pending.popleft()
            self.events_dropped += 1
            self._metrics.events_dropped.labels(self.name).inc()
        self._pending.append(delivery)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- lifecycle ---------------------------------------------------------------------------
    def _build(self) -> Bot:
        bot = self.setup.factory(self.setup.context)
        if not isinstance(bot, Bot):
            raise BotCrashed(self.name, f"factory returned {type(bot).__name__}, not a Bot")
        self.subscriptions = effective_subscriptions(bot.subscriptions, self.setup)
        return bot

    async def supervise(self) -> None:
        """Run the bot, restarting it after crashes; returns only in ``once`` mode."""
        attempt = 0
        while True:
            ticks_before = self.ticks
            try:
                self.bot = self._build()
                await self._loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.bot = None
                self.failure = exc
                _log.error("bot crashed", bot=self.name, restarts=self.restarts, exc_info=exc)
                if self._once:
                    return
                if self.ticks > ticks_before:
                    attempt = 0
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
                self.restarts += 1
                self._metrics.restarts.labels(self.name).inc()
                await self._timer.sleep(delay)
                _log.info("bot restarting", bot=self.name, restarts=self.restarts)

    async def _loop(self) -> None:
        timer = self._timer
        interval = self.setup.interval
        next_due = timer.monotonic()
        while True:
            wait = next_due - timer.monotonic()
            if self.subscriptions.event_driven:
                if wait > 0:
                    await wait_event_or_timeout(self._wake, wait, timer)
            elif wait > 0:
                await timer.sleep(wait)
            next_due = timer.monotonic() + interval
            await self.tick()
            if self._once:
                return

    async def tick(self) -> None:
        """One tick: cut the view, decide, execute, report outcomes, feed the watchdog."""
        bot = self.bot
        if bot is None:
            raise RuntimeError(f"bot {self.name} is not built")
        if self.in_tick:
            raise RuntimeError(f"bot {self.name}: overlapping tick")
        self.in_tick = True
        try:
            self._wake.clear()
            events = tuple(self._pending)
            self._pending.clear()
            started = self._timer.monotonic()
            number = self.ticks + 1
            view = self._state.view(
                bot=self.name,
                authority=self.setup.keypair.pubkey,
                tick=number,
                sub_account_ids=self.subscriptions.sub_account_ids,
                events=events,
                dlob=self._dlob.book if self._dlob is not None else None,
                dry_run=self._dry_run,
            )
            with bound(bot=self.name, tick=number):
                async with asyncio.timeout(self._tick_timeout):
                    decided = bot.decide(view)
                    if inspect.isawaitable(decided):
                        decided = await decided
                    actions = self._check_actions(decided)
                    outcomes = await self._executor.execute(self.name, self.setup.keypair, actions)
                if isinstance(bot, LearnsFromOutcomes):
                    for outcome in outcomes:
                        bot.on_outcome(outcome)
            self.ticks = number
            self._metrics.ticks.labels(self.name).inc()
            self._metrics.tick_duration.labels(self.name).observe(
                max(0.0, self._timer.monotonic() - started)
            )
            self.watchdog.feed()
        finally:
            self.in_tick = False

    def _check_actions(self, decided: object) -> Sequence[Action]:
        if not isinstance(decided, list | tuple):
            raise BotCrashed(self.name, f"decide returned {type(decided).__name__}, not a list")
        for item in decided:
            if not isinstance(item, Action):
                raise BotCrashed(self.name, f"decide returned a {type(item).__name__} action")
        return decided


def _wanted(subs: Subscriptions, topic: str) -> bool:
    try:
        parsed = parse(topic)
    except TopicError:
        return False
    stream = _STREAM_OF_KIND.get(parsed.kind)
    if stream is None or stream not in subs.streams:
        return False
    if parsed.market_index is None:
        return True
    markets = subs.perp_markets if parsed.market_type is MarketType.Perp else subs.spot_markets
    return markets is None or parsed.market_index in markets


class Supervisor:
    """Owns the :class:`BotRunner` of every bot of the process."""

    def __init__(
        self,
        setups: Sequence[BotSetup],
        *,
        executor: Executor,
        state: MarketState,
        metrics: RuntimeMetrics,
        timer: Timer | None = None,
        dlob: DlobSource | None = None,
        once: bool = False,
        dry_run: bool = False,
        tick_timeout: float = 30.0,
        restart_backoff: Backoff = DEFAULT_RESTART_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        names = [s.name for s in setups]
        if len(set(names)) != len(names):
            raise ValueError(f"bot names must be unique, got {names}")
        chosen_timer = timer or SystemTimer()
        seeded = rng or random.Random()  # noqa: S311 -- backoff jitter, not cryptography
        self.state = state
        self.metrics = metrics
        self.runners = {
            setup.name: BotRunner(
                setup,
                executor=executor,
                state=state,
                metrics=metrics,
                timer=chosen_timer,
                dlob=dlob,
                once=once,
                dry_run=dry_run,
                tick_timeout=tick_timeout,
                restart_backoff=restart_backoff,
                rng=random.Random(seeded.getrandbits(64)),  # noqa: S311 -- jitter
            )
            for setup in setups
        }
        metrics.watch_ticks(self._tick_ages)

    def _tick_ages(self) -> Iterable[tuple[str, float]]:
        return [(name, runner.watchdog.age()) for name, runner in self.runners.items()]

    @property
    def watchdogs(self) -> list[Watchdog]:
        return [runner.watchdog for runner in self.runners.values()]

    @property
    def failures(self) -> dict[str, BaseException]:
        """Bots whose last run ended in a crash (in ``once`` mode: the process failed)."""
        return {n: r.failure for n, r in self.runners.items() if r.failure is not None}

    def dispatch(self, delivery: Delivery) -> None:
        """Apply a bus message to the state and hand it to every bot that wants it."""
        self.state.apply(delivery)
        for runner in self.runners.values():
            runner.offer(delivery)

    async def run(self) -> None:
        """Run every bot until cancelled (or, in ``once`` mode, until each ticked once)."""
        async with asyncio.TaskGroup() as group:
            for name, runner in self.runners.items():
                group.create_task(runner.supervise(), name=f"bot:{name}")
