"""A whole keeper process against a fake node and the in-process bus: configuration to bots,
startup, once mode, the DLOB shared over one bus connection, startup failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from keepers.bus import topics
from keepers.bus.inprocess import InProcessBroker, InProcessTransport
from keepers.bus.schemas import OrderEvent, SlotMessage, encode
from keepers.config import ConfigError, KeepersConfig, load_config
from keepers.dlob_feed import MarketOrdersSnapshot
from keepers.keys import write_keypair_file
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.process import (
    BotProcess,
    PreparedBot,
    TappedBusClient,
    prepare_bots,
    topic_filters,
)
from keepers.runtime.registry import BOTS, register
from keepers.runtime.view import View
from protocol.keys import Keypair
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import User
from protocol.types import MarketType
from tests.keepers.runtime_fakes import (
    CLUSTER,
    FakeNode,
    eventually,
    funding_action,
    order_delivery,
)

SEED = b"\x05" * 32
KEYPAIR = Keypair.from_seed(SEED)


@dataclass(frozen=True, slots=True)
class EchoParams:
    market_index: int = 0
    dlob: bool = False
    crash: bool = False


class EchoBot:
    """Sends one funding update per tick for its market; watches the book if asked."""

    params_type = EchoParams
    built: ClassVar[list[EchoBot]] = []

    def __init__(self, context: BotContext) -> None:
        self.name = context.name
        self.params: EchoParams = context.params
        self.authority = context.authority
        self.subscriptions = Subscriptions(
            streams=frozenset({Stream.ORDERS}),
            perp_markets=(0,),
            spot_markets=(),
            dlob=self.params.dlob,
        )
        self.views: list[View] = []
        self.seen_in_book: list[bool] = []
        self.outcomes: list[Outcome] = []
        EchoBot.built.append(self)

    def decide(self, view: View) -> list[Action]:
        if self.params.crash:
            raise RuntimeError("broken")
        self.views.append(view)
        for delivery in view.events:
            event = delivery.message
            assert isinstance(event, OrderEvent)
            assert view.dlob is not None
            self.seen_in_book.append(
                view.dlob.get(event.user_key, event.order.order_id) is not None
            )
        if view.dlob is not None:
            return []
        return [funding_action(self.params.market_index, key=("echo", view.tick))]

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@pytest.fixture
def echo() -> Iterator[str]:
    name = "test-echo"
    register(name, EchoBot)
    EchoBot.built.clear()
    try:
        yield name
    finally:
        BOTS.pop(name, None)


def config_for(tmp_path: Path, *lines: str, **overrides: Any) -> KeepersConfig:
    key = tmp_path / "bot.json"
    if not key.exists():
        write_keypair_file(key, KEYPAIR)
    body = "\n".join(
        [
            "[keys]",
            f'default = "{key}"',
            "[bus]",
            f'cluster = "{CLUSTER}"',
            "[metrics]",
            "port = 0",
            "[runtime]",
            "startup_timeout_s = 2.0",
            "account_refresh_s = 0.05",
            *lines,
        ]
    )
    path = tmp_path / "keepers.toml"
    path.write_text(body + "\n")
    return load_config(
        path, env={}, overrides=[(k.replace("__", "."), v, "test") for k, v in overrides.items()]
    )


def fake_node() -> FakeNode:
    node = FakeNode()
    node.perp[0] = PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(oracle="SOL/USD"))
    node.spot[0] = SpotMarket(market_index=0, name="USDC", oracle="USDC/USD", decimals=6)
    node.users[(KEYPAIR.pubkey, 0)] = User(authority=KEYPAIR.pubkey)
    return node


class EmptySnapshots:
    def __init__(self) -> None:
        self.calls = 0

    async def orders_snapshot(
        self, market_type: MarketType, market_index: int
    ) -> MarketOrdersSnapshot:
        self.calls += 1
        return MarketOrdersSnapshot(market_type, market_index, 0, 1, ())


async def publisher(broker: InProcessBroker) -> InProcessTransport:
    transport = broker.transport("publisher")
    await transport.connect()
    return transport


def bus_on(broker: InProcessBroker) -> TappedBusClient:
    return TappedBusClient(broker.transport("bots"), deadletter_topic=topics.deadletter(CLUSTER))


# --- preparation -----------------------------------------------------------------------------
def test_prepare_validates_params_keys_and_names(tmp_path: Path, echo: str) -> None:
    config = config_for(
        tmp_path, f"[bots.{echo}]", "market_index = 3", "interval_s = 0.5", "sub_accounts = [0, 2]"
    )
    [prepared] = prepare_bots(config, [echo])
    assert prepared.subscriptions.sub_account_ids == (0, 2)  # the config's, over the bot's
    assert prepared.setup.sub_account_ids == (0, 2)
    assert prepared.setup.name == echo
    assert prepared.setup.interval == 0.5
    assert prepared.setup.keypair.pubkey == KEYPAIR.pubkey
    assert prepared.setup.context.params == EchoParams(market_index=3)
    assert prepared.setup.context.cluster == CLUSTER
    assert prepared.subscriptions.perp_markets == (0,)

    bad_param = config_for(tmp_path, f"[bots.{echo}]", "market_indx = 3")
    with pytest.raises(ConfigError) as info:
        prepare_bots(bad_param, [echo])
    assert info.value.path == f"bots.{echo}.market_indx"

    with pytest.raises(ConfigError) as unknown:
        prepare_bots(config, ["no-such-bot"])
    assert unknown.value.path == "bots.no-such-bot"
    assert echo in unknown.value.detail  # lists the known bots

    with pytest.raises(ConfigError) as no_key:
        prepare_bots(load_config(env={}), [echo])
    assert no_key.value.path == f"bots.{echo}.key"

    (tmp_path / "broken.json").write_text("{}")
    broken = load_config(
        env={},
        overrides=[
            ("keys.mine", str(tmp_path / "broken.json"), "t"),
            (f"bots.{echo}.key", "mine", "t"),
        ],
    )
    with pytest.raises(ConfigError) as bad_key:
        prepare_bots(broken, [echo])
    assert bad_key.value.path == "keys.mine"

    with pytest.raises(ConfigError) as bad_entry:
        prepare_bots(config_for(tmp_path, "[bots.x]", 'entry = "nowhere.at_all:Bot"'), ["x"])
    assert bad_entry.value.path == "bots.x.entry"


def test_topic_filters_cover_slot_oracles_and_each_bots_streams() -> None:
    subs = [
        Subscriptions(streams=frozenset({Stream.ORDERS}), perp_markets=(1,), spot_markets=None),
        Subscriptions(streams=frozenset({Stream.INTENTS, Stream.RECORDS})),
    ]
    base = f"keepers/v1/{CLUSTER}"
    assert topic_filters(CLUSTER, subs) == sorted(
        [
            f"{base}/slot",
            f"{base}/oracle/+",
            f"{base}/orders/perp/1",
            f"{base}/orders/spot/+",
            f"{base}/intents/perp/+",
            f"{base}/records/+",
        ]
    )


# --- running ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_once_mode_runs_each_bot_one_tick_and_exits_0(tmp_path: Path, echo: str) -> None:
    config = config_for(tmp_path, f"[bots.{echo}]", "market_index = 2", runtime__once=True)
    prepared = prepare_bots(config, [echo])
    broker = InProcessBroker()
    pub = await publisher(broker)
    await pub.publish(topics.slot(CLUSTER), encode(SlotMessage(slot=321, ts=5)), 1, True)
    node = fake_node()
    process = BotProcess(config, prepared, node=node, bus=bus_on(broker))
    async with asyncio.timeout(5):
        assert await process.run() == 0
    bot = EchoBot.built[-1]
    [view] = bot.views
    assert view.users[0].authority == KEYPAIR.pubkey
    assert set(view.perp_markets) == {0}
    assert view.slot in (100, 321)  # the node's slot, or the bus's if it came first
    [outcome] = bot.outcomes
    assert outcome.status is Status.ACCEPTED
    assert len(node.sent) == 1
    assert (
        process.metrics.value("keepers_tx_accepted_total", bot=echo, kind="update_funding_rate")
        == 1
    )


@pytest.mark.asyncio
async def test_dry_run_never_sends(tmp_path: Path, echo: str) -> None:
    config = config_for(tmp_path, f"[bots.{echo}]", runtime__once=True, runtime__dry_run=True)
    node = fake_node()
    process = BotProcess(
        config, prepare_bots(config, [echo]), node=node, bus=bus_on(InProcessBroker())
    )
    async with asyncio.timeout(5):
        assert await process.run() == 0
    assert node.sent == []
    assert len(node.simulated) == 1
    assert EchoBot.built[-1].outcomes[0].status is Status.SIMULATED


@pytest.mark.asyncio
async def test_a_crash_in_once_mode_exits_1(tmp_path: Path, echo: str) -> None:
    config = config_for(tmp_path, f"[bots.{echo}]", "crash = true", runtime__once=True)
    process = BotProcess(
        config, prepare_bots(config, [echo]), node=fake_node(), bus=bus_on(InProcessBroker())
    )
    async with asyncio.timeout(5):
        assert await process.run() == 1


@pytest.mark.asyncio
async def test_an_unreachable_node_fails_startup_with_1(tmp_path: Path, echo: str) -> None:
    config = config_for(tmp_path, f"[bots.{echo}]", runtime__startup_timeout_s=0.3)
    node = fake_node()
    node.fail_reads = ConnectionRefusedError("node down")
    process = BotProcess(
        config, prepare_bots(config, [echo]), node=node, bus=bus_on(InProcessBroker())
    )
    async with asyncio.timeout(5):
        assert await process.run() == 1
    assert node.reads >= 2  # retried
    assert node.sent == []


@pytest.mark.asyncio
async def test_a_bot_woken_by_an_order_event_finds_it_in_the_book(
    tmp_path: Path, echo: str
) -> None:
    config = config_for(tmp_path, f"[bots.{echo}]", "dlob = true", "interval_s = 60.0")
    prepared: list[PreparedBot] = prepare_bots(config, [echo])
    broker = InProcessBroker()
    pub = await publisher(broker)
    await pub.publish(topics.slot(CLUSTER), encode(SlotMessage(slot=10, ts=5)), 1, True)
    snapshots = EmptySnapshots()
    process = BotProcess(
        config, prepared, node=fake_node(), bus=bus_on(broker), snapshot_loader=snapshots
    )
    task = asyncio.create_task(process.run())
    try:
        await eventually(lambda: process.ready.is_set() and bool(EchoBot.built[-1].views), 5.0)
        bot = EchoBot.built[-1]
        for order_id in (1, 2, 3):
            delivery = order_delivery(0, order_id=order_id)
            await pub.publish(delivery.topic, encode(delivery.message), 1, False)
        await eventually(lambda: len(bot.seen_in_book) == 3, 5.0)
        assert bot.seen_in_book == [True, True, True]
        assert snapshots.calls == 1
        assert process.health is not None
        healthy, body = process.health.check.evaluate()
        assert healthy, body
        assert body["dlob_synced"] is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.done()


@pytest.mark.asyncio
async def test_the_tap_sees_a_delivery_once_its_consumer_comes_back_for_the_next() -> None:
    broker = InProcessBroker()
    pub = await publisher(broker)
    bus = bus_on(broker)
    tapped: list[Any] = []
    bus.tap = tapped.append
    await bus.subscribe([topics.slot(CLUSTER)])
    await bus.start()
    try:
        async with asyncio.timeout(5):
            await bus.wait_connected()
            for slot in (1, 2):
                await pub.publish(topics.slot(CLUSTER), encode(SlotMessage(slot=slot, ts=5)))
            first = await bus.get()
            assert tapped == []  # taken by the consumer, not applied yet
            second = await bus.get()
            assert tapped == [first]
            assert bus.get_nowait() is None
            assert tapped == [first, second]
    finally:
        await bus.close()
    assert [d.message.slot for d in tapped] == [1, 2]
