"""A keeper process whose bot watches every user (``Subscriptions.users``): the process starts
one user feed and builds the bot with a cursor of it; a bot rebuilt after a crash gets a fresh
cursor; accounts the caller already put in ``extra["users"]`` are left as they are."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from keepers.bus import topics
from keepers.bus.client import BusClient
from keepers.bus.inprocess import InProcessBroker
from keepers.bus.schemas import UsersMessage, encode
from keepers.rpc import UsersPage
from keepers.runtime.bot import Action, BotContext, Subscriptions
from keepers.runtime.process import BotProcess, needs_user_feed, prepare_bots
from keepers.runtime.registry import BOTS, register
from keepers.runtime.view import View
from keepers.user_feed import UserCursor
from protocol.state.user import User, UserKey
from tests.keepers.runtime_fakes import CLUSTER, eventually
from tests.keepers.test_runtime_process import bus_on, config_for, fake_node

STREAM = "0123456789abcdef"


def account(n: int) -> User:
    return User(authority=bytes([n]) * 32, name=f"user {n}")


@dataclass(frozen=True, slots=True)
class WatcherParams:
    crash_first: bool = False


class Watcher:
    """Reads every user through ``extra["users"]`` each tick; may crash on its first tick."""

    params_type = WatcherParams
    built: ClassVar[list[Watcher]] = []
    crashed: ClassVar[int] = 0

    def __init__(self, context: BotContext) -> None:
        self.name = context.name
        self.params: WatcherParams = context.params
        self.source: Any = context.extra.get("users")
        self.subscriptions = Subscriptions(users=True)
        self.seen: list[list[str]] = []
        Watcher.built.append(self)

    def decide(self, view: View) -> list[Action]:
        if isinstance(self.source, UserCursor):
            self.seen.append([u.name for u in self.source.changed_users()])
        if self.params.crash_first and Watcher.crashed == 0:
            Watcher.crashed += 1
            raise RuntimeError("broken once")
        return []


@pytest.fixture
def watcher() -> Iterator[str]:
    name = "test-watcher"
    register(name, Watcher)
    Watcher.built.clear()
    Watcher.crashed = 0
    try:
        yield name
    finally:
        BOTS.pop(name, None)


class OnePage:
    """``/v1/users`` with every account on one page, at ``seq`` 1 of :data:`STREAM`."""

    def __init__(self, *users: User) -> None:
        self.users = list(users)
        self.reads = 0

    async def users_page(self, offset: int, limit: int) -> UsersPage:
        self.reads += 1
        return UsersPage(
            stream=STREAM,
            seq=1,
            slot=1,
            offset=offset,
            total=len(self.users),
            next=None,
            users=self.users[offset : offset + limit],
        )


async def stop(task: asyncio.Task[int]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_a_bot_that_watches_every_user_reads_the_process_user_feed(
    tmp_path: Path, watcher: str
) -> None:
    config = config_for(tmp_path, f"[bots.{watcher}]", "interval_s = 0.02")
    prepared = prepare_bots(config, [watcher])
    assert needs_user_feed(prepared[0])
    broker = InProcessBroker()
    users_bus = BusClient(broker.transport("users"))
    pages = OnePage(account(1), account(2))
    process = BotProcess(
        config,
        prepared,
        node=fake_node(),
        bus=bus_on(broker),
        users_bus=users_bus,
        users_loader=pages,
    )
    task = asyncio.create_task(process.run(), name="process")
    try:
        await eventually(lambda: bool(Watcher.built) and bool(Watcher.built[-1].seen), 5.0)
        bot = Watcher.built[-1]
        assert isinstance(bot.source, UserCursor)
        assert bot.seen[0] == ["user 1", "user 2"]
        node = broker.transport("node")
        await node.connect()
        message = UsersMessage(stream=STREAM, seq=2, slot=2, users=[account(3)])
        await node.publish(topics.users(CLUSTER), encode(message), 1, False)
        await eventually(lambda: ["user 3"] in bot.seen, 5.0)
        assert [names for names in bot.seen if names] == [["user 1", "user 2"], ["user 3"]]
        assert process.user_feed is not None and pages.reads == 1
        assert process.health is not None
        healthy, body = process.health.check.evaluate()
        assert healthy, body
        assert body["users_synced"] is True
        assert process.metrics.value("keepers_users_accounts") == 3
    finally:
        await stop(task)


@pytest.mark.asyncio
async def test_a_rebuilt_bot_gets_a_fresh_cursor_that_starts_with_every_account(
    tmp_path: Path, watcher: str
) -> None:
    config = config_for(
        tmp_path,
        f"[bots.{watcher}]",
        "interval_s = 0.02",
        "crash_first = true",
        runtime__restart_initial_s=0.01,
    )
    broker = InProcessBroker()
    process = BotProcess(
        config,
        prepare_bots(config, [watcher]),
        node=fake_node(),
        bus=bus_on(broker),
        users_bus=BusClient(broker.transport("users")),
        users_loader=OnePage(account(1)),
    )
    task = asyncio.create_task(process.run(), name="process")
    try:
        # the first built by prepare_bots (no cursor), then one per supervised build
        await eventually(lambda: len(Watcher.built) == 3 and bool(Watcher.built[-1].seen), 5.0)
        first, again = Watcher.built[1], Watcher.built[2]
        assert Watcher.built[0].source is None
        assert first.source is not again.source
        assert first.seen[0] == again.seen[0] == ["user 1"]
    finally:
        await stop(task)


@pytest.mark.asyncio
async def test_accounts_the_caller_gave_are_kept_and_no_feed_is_started(
    tmp_path: Path, watcher: str
) -> None:
    config = config_for(tmp_path, f"[bots.{watcher}]", "interval_s = 0.02")
    given: dict[UserKey, User] = {account(1).key: account(1)}
    [prepared] = prepare_bots(config, [watcher])
    context = dataclasses.replace(prepared.setup.context, extra={"users": given})
    prepared = dataclasses.replace(
        prepared, setup=dataclasses.replace(prepared.setup, context=context)
    )
    assert not needs_user_feed(prepared)
    broker = InProcessBroker()
    users_bus = BusClient(broker.transport("users"))
    process = BotProcess(
        config, [prepared], node=fake_node(), bus=bus_on(broker), users_bus=users_bus
    )
    task = asyncio.create_task(process.run(), name="process")
    try:
        await eventually(lambda: process.ready.is_set() and len(Watcher.built) == 2, 5.0)
        assert Watcher.built[-1].source is given
        assert process.user_feed is None
        assert users_bus.generation == 0  # never started
    finally:
        await stop(task)
