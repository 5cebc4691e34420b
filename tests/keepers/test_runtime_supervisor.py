"""The supervisor: restarts with backoff, ticks that never overlap, coalesced events,
intervals on injected time, watchdogs, once mode."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import pytest

from keepers.bus.client import Backoff
from keepers.runtime.bot import Action, Bot, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Executor, Outcome, Status
from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.supervisor import BotCrashed, BotSetup, Supervisor, Watchdog
from keepers.runtime.timing import ManualTimer, SystemTimer, Timer
from keepers.runtime.view import MarketState, View
from protocol.keys import Keypair
from protocol.state.user import User
from protocol.types import MarketType
from tests.keepers.runtime_fakes import (
    FakeNode,
    InstantTimer,
    ScriptedBot,
    eventually,
    funding_action,
    oracle_delivery,
    order_delivery,
    slot_delivery,
)

KEYPAIR = Keypair.from_seed(b"\x07" * 32)


def setup_for(
    factory: Callable[[BotContext], Bot],
    name: str = "bot",
    *,
    interval: float = 1.0,
    watchdog: float = 30.0,
    max_events: int = 10_000,
) -> BotSetup:
    return BotSetup(
        name=name,
        factory=factory,
        context=BotContext(name=name, authority=KEYPAIR.pubkey),
        keypair=KEYPAIR,
        interval=interval,
        watchdog_timeout=watchdog,
        max_events=max_events,
    )


def supervisor_for(
    setups: Sequence[BotSetup],
    *,
    timer: Timer,
    node: FakeNode | None = None,
    once: bool = False,
    backoff: Backoff | None = None,
) -> tuple[Supervisor, RuntimeMetrics, FakeNode]:
    fake = node or FakeNode()
    metrics = RuntimeMetrics()
    state = MarketState(timer)
    executor = Executor(fake, metrics, slot=lambda: state.slot, timer=timer)
    supervisor = Supervisor(
        setups,
        executor=executor,
        state=state,
        metrics=metrics,
        timer=timer,
        once=once,
        restart_backoff=backoff or Backoff(initial=0.5, maximum=30.0),
    )
    return supervisor, metrics, fake


async def run_until(supervisor: Supervisor, done: Callable[[], bool], seconds: float = 2.0) -> None:
    task = asyncio.create_task(supervisor.run())
    try:
        await eventually(done, seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class CrashingBot:
    """Crashes on the ticks whose (global, across rebuilds) number is in ``crash_on``."""

    builds = 0
    ticks = 0

    def __init__(self, crash_on: set[int]) -> None:
        self.name = "crashy"
        self.subscriptions = Subscriptions()
        self._crash_on = crash_on
        type(self).builds += 1

    def decide(self, view: View) -> list[Action]:
        type(self).ticks += 1
        if type(self).ticks in self._crash_on:
            raise RuntimeError(f"invariant broken on tick {type(self).ticks}")
        return []


def crashing_factory(crash_on: set[int]) -> type[CrashingBot]:
    cls = type("Crashy", (CrashingBot,), {"builds": 0, "ticks": 0})

    def build(_context: BotContext) -> CrashingBot:
        bot: CrashingBot = cls(crash_on)
        return bot

    build.cls = cls  # type: ignore[attr-defined]
    return build  # type: ignore[return-value]


@pytest.mark.asyncio
async def test_a_crashing_bot_is_rebuilt_with_backoff_and_counted() -> None:
    factory = crashing_factory({1, 2})
    timer = InstantTimer()
    supervisor, metrics, _ = supervisor_for([setup_for(factory, "crashy")], timer=timer)
    runner = supervisor.runners["crashy"]
    await run_until(supervisor, lambda: runner.ticks >= 1)
    assert runner.restarts == 2
    assert metrics.value("keepers_bot_restarts_total", bot="crashy") == 2
    assert factory.cls.builds == 3  # type: ignore[attr-defined]  # a fresh bot per restart
    # Backoff(0.5, 30): restart n waits between half and all of 0.5 * 2**n seconds.
    restart_sleeps = timer.slept[:2]
    assert 0.25 <= restart_sleeps[0] <= 0.5
    assert 0.5 <= restart_sleeps[1] <= 1.0
    assert isinstance(runner.failure, RuntimeError)


@pytest.mark.asyncio
async def test_restart_backoff_resets_after_a_successful_tick() -> None:
    factory = crashing_factory({1, 3})
    timer = InstantTimer()
    supervisor, _, _ = supervisor_for([setup_for(factory, "crashy")], timer=timer)
    runner = supervisor.runners["crashy"]
    await run_until(supervisor, lambda: runner.ticks >= 2)
    assert runner.restarts == 2
    crash_delays = [s for s in timer.slept if 0.25 <= s <= 0.5]
    # Both restarts waited the first step: the success in between reset the backoff.
    assert len(crash_delays) >= 2
    assert all(s < 0.5 + 1e-9 for s in crash_delays)


@pytest.mark.asyncio
async def test_a_crashing_bot_does_not_stop_the_others() -> None:
    factory = crashing_factory({1, 2, 3})
    healthy = ScriptedBot("healthy")
    timer = InstantTimer()
    supervisor, _, _ = supervisor_for(
        [setup_for(factory, "crashy"), setup_for(lambda _c: healthy, "healthy", interval=0.01)],
        timer=timer,
    )
    crashy = supervisor.runners["crashy"]
    await run_until(supervisor, lambda: crashy.ticks >= 1)
    assert crashy.restarts == 3
    # The healthy bot kept ticking on its interval while the other crashed and backed off.
    assert supervisor.runners["healthy"].ticks > 3


@pytest.mark.asyncio
async def test_decide_returning_garbage_is_a_crash() -> None:
    bot = ScriptedBot("bad", script=lambda _v: "not a list")  # type: ignore[arg-type,return-value]
    timer = InstantTimer()
    supervisor, _, _ = supervisor_for([setup_for(lambda _c: bot, "bad")], timer=timer)
    runner = supervisor.runners["bad"]
    await run_until(supervisor, lambda: runner.restarts >= 1)
    assert isinstance(runner.failure, BotCrashed)
    assert runner.ticks == 0


class SlowEventBot:
    """Event-driven; each tick awaits and sends one action; tracks concurrency."""

    def __init__(self, node: FakeNode) -> None:
        self.name = "slow"
        self.subscriptions = Subscriptions(streams=frozenset({Stream.ORDERS}))
        self.node = node
        self.active = 0
        self.max_active = 0
        self.event_counts: list[int] = []
        self.sends_at_decide: list[int] = []
        self.outcomes: list[Outcome] = []

    async def decide(self, view: View) -> list[Action]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.sends_at_decide.append(len(self.node.sent))
        self.event_counts.append(len(view.events))
        await asyncio.sleep(0.002)
        self.active -= 1
        return [funding_action(0, key=("tick", view.tick))]

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.asyncio
async def test_ticks_never_overlap_and_events_are_coalesced() -> None:
    node = FakeNode()
    bot = SlowEventBot(node)
    supervisor, metrics, _ = supervisor_for(
        [setup_for(lambda _c: bot, "slow", interval=60.0)], timer=SystemTimer(), node=node
    )
    runner = supervisor.runners["slow"]
    task = asyncio.create_task(supervisor.run())
    try:
        await eventually(lambda: runner.ticks >= 1)
        for i in range(200):
            supervisor.dispatch(order_delivery(0, order_id=i + 1))
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await eventually(lambda: sum(bot.event_counts) >= 200 and not runner.in_tick, 5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert bot.max_active == 1
    assert sum(bot.event_counts) == 200  # none lost, none twice
    assert runner.ticks < 100  # coalesced: far fewer ticks than events
    # Every tick's send finished before the next decide began (outcomes before next tick).
    assert bot.sends_at_decide == list(range(len(bot.sends_at_decide)))
    assert len(bot.outcomes) == runner.ticks
    assert all(o.status is Status.ACCEPTED for o in bot.outcomes)
    assert metrics.value("keepers_bot_ticks_total", bot="slow") == runner.ticks


@pytest.mark.asyncio
async def test_interval_bot_ticks_on_injected_time_only() -> None:
    timer = ManualTimer()
    bot = ScriptedBot("periodic")
    supervisor, _, _ = supervisor_for([setup_for(lambda _c: bot, "periodic")], timer=timer)
    runner = supervisor.runners["periodic"]
    task = asyncio.create_task(supervisor.run())
    try:
        await timer.advance(0)
        assert runner.ticks == 1  # at start
        supervisor.dispatch(slot_delivery(5))  # not subscribed: no tick
        await timer.advance(0.999)
        assert runner.ticks == 1
        await timer.advance(0.001)
        assert runner.ticks == 2
        await timer.advance(3.0)
        assert runner.ticks == 5
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [v.tick for v in bot.views] == [1, 2, 3, 4, 5]
    assert bot.views[-1].slot == 5
    assert bot.views[-1].now == 4.0


@pytest.mark.asyncio
async def test_event_bot_wakes_on_its_streams_and_markets_only() -> None:
    timer = ManualTimer()
    subs = Subscriptions(
        streams=frozenset({Stream.ORDERS, Stream.ORACLE}), perp_markets=(0,), spot_markets=()
    )
    bot = ScriptedBot("events", subscriptions=subs)
    supervisor, _, _ = supervisor_for([setup_for(lambda _c: bot, "events")], timer=timer)
    runner = supervisor.runners["events"]
    task = asyncio.create_task(supervisor.run())
    try:
        await timer.advance(0)
        assert runner.ticks == 1
        supervisor.dispatch(order_delivery(1))  # another perp market
        supervisor.dispatch(order_delivery(0, market_type=MarketType.Spot))  # spot: none wanted
        supervisor.dispatch(slot_delivery(9))  # slot: not subscribed
        await timer.advance(0)
        assert runner.ticks == 1
        supervisor.dispatch(order_delivery(0, order_id=4))
        supervisor.dispatch(oracle_delivery("SOL/USD", 150 * 10**6, 9))
        await timer.advance(0)
        assert runner.ticks == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    last = bot.views[-1]
    assert [type(d.message).__name__ for d in last.events] == ["OrderEvent", "OracleMessage"]
    assert last.slot == 9
    assert last.oracles["SOL/USD"].price == 150 * 10**6
    price = last.oracle_price_data("SOL/USD")
    assert price is not None
    assert (price.price, price.delay) == (150 * 10**6, 0)


@pytest.mark.asyncio
async def test_a_full_event_buffer_drops_the_oldest_and_counts() -> None:
    timer = ManualTimer()
    bot = ScriptedBot("events", subscriptions=Subscriptions(streams=frozenset({Stream.ORDERS})))
    supervisor, metrics, _ = supervisor_for(
        [setup_for(lambda _c: bot, "events", max_events=2)], timer=timer
    )
    runner = supervisor.runners["events"]
    task = asyncio.create_task(supervisor.run())
    try:
        await timer.advance(0)
        for order_id in range(1, 6):
            supervisor.dispatch(order_delivery(0, order_id=order_id))
        await timer.advance(0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    kept = [d.message.order.order_id for d in bot.views[-1].events]  # type: ignore[union-attr]
    assert kept == [4, 5]
    assert runner.events_dropped == 3
    assert metrics.value("keepers_bot_events_dropped_total", bot="events") == 3


def test_watchdog_expires_without_feeding() -> None:
    timer = ManualTimer()
    dog = Watchdog("bot", 5.0, timer)
    assert not dog.expired
    timer._now = 5.0  # exactly the timeout: not yet
    assert not dog.expired
    timer._now = 5.5
    assert dog.expired
    dog.feed()
    assert not dog.expired
    assert dog.age() == 0.0
    assert dog.feeds == 1
    with pytest.raises(ValueError, match="> 0"):
        Watchdog("bot", 0.0, timer)


@pytest.mark.asyncio
async def test_ticks_feed_the_watchdog_and_a_stuck_bot_lets_it_expire() -> None:
    timer = ManualTimer()
    gate = asyncio.Event()

    class Stuck:
        name = "stuck"
        subscriptions = Subscriptions()

        def __init__(self) -> None:
            self.calls = 0

        async def decide(self, view: View) -> list[Action]:
            self.calls += 1
            if self.calls >= 2:
                await gate.wait()
            return []

    bot = Stuck()
    supervisor, _, _ = supervisor_for(
        [setup_for(lambda _c: bot, "stuck", interval=1.0, watchdog=3.0)], timer=timer
    )
    dog = supervisor.runners["stuck"].watchdog
    task = asyncio.create_task(supervisor.run())
    try:
        await timer.advance(0)
        assert dog.feeds == 1
        await timer.advance(1.0)  # second tick starts and hangs
        assert bot.calls == 2
        await timer.advance(2.0)
        assert not dog.expired  # 3.0 since the last feed (the first tick): at the limit
        await timer.advance(0.5)
        assert dog.expired
        gate.set()
        await timer.advance(0)
        assert not dog.expired
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_once_mode_ticks_each_bot_once_and_reports_crashes() -> None:
    good = ScriptedBot("good", script=lambda _v: [funding_action(0)])
    factory = crashing_factory({1})
    timer = InstantTimer()
    supervisor, _, node = supervisor_for(
        [setup_for(lambda _c: good, "good"), setup_for(factory, "crashy")],
        timer=timer,
        once=True,
    )
    async with asyncio.timeout(2):
        await supervisor.run()
    assert supervisor.runners["good"].ticks == 1
    assert len(node.sent) == 1
    assert len(good.outcomes) == 1
    assert supervisor.runners["crashy"].restarts == 0
    assert set(supervisor.failures) == {"crashy"}


@pytest.mark.asyncio
async def test_configured_sub_accounts_pick_the_users_in_the_view() -> None:
    bot = ScriptedBot("subs")  # the bot's own choice: sub-account 0
    setup = dataclasses.replace(setup_for(lambda _c: bot, "subs"), sub_account_ids=(1,))
    timer = InstantTimer()
    supervisor, _, _ = supervisor_for([setup], timer=timer, once=True)
    supervisor.state.users = {
        (KEYPAIR.pubkey, 0): User(authority=KEYPAIR.pubkey),
        (KEYPAIR.pubkey, 1): User(authority=KEYPAIR.pubkey, sub_account_id=1),
    }
    async with asyncio.timeout(2):
        await supervisor.run()
    assert list(bot.views[0].users) == [1]


def test_bot_names_must_be_unique() -> None:
    bot = ScriptedBot()
    with pytest.raises(ValueError, match="unique"):
        supervisor_for(
            [setup_for(lambda _c: bot, "same"), setup_for(lambda _c: bot, "same")],
            timer=InstantTimer(),
        )
