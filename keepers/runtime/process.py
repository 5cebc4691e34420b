"""One keeper process: bots, the executor, the bus, the node client, a DLOB, ``/health``.

:func:`prepare_bots` turns configuration into :class:`~keepers.runtime.supervisor.BotSetup`
values (factory found by name, parameters validated, keypair loaded): every configuration
error surfaces here, before anything connects. :class:`BotProcess` then runs them:

1. ``/health`` and ``/metrics`` listen first (503 until the process is ready);
2. the node's markets and the bots' own accounts are loaded, retried until
   ``startup_timeout_s`` (the node may still be starting);
3. if any bot reads the book, a :class:`~keepers.dlob_feed.DlobFeed` follows the markets the
   bots name; if any bot watches every user (``Subscriptions.users``) and was not handed
   accounts already (``BotContext.extra["users"]``, as the demo does), one
   :class:`~keepers.user_feed.UserFeed` loads every account from the node (``GET /v1/users``)
   and follows the users stream over a bus connection of its own, and each such bot is built
   with a fresh cursor of it as ``extra["users"]`` (rebuilt after a crash: a fresh cursor,
   which starts with every account); the bus connects; the feeds load their snapshots;
4. one ``asyncio.TaskGroup`` runs the account refresher, the bus dispatcher and the supervisor
   (each bot a named task) until cancelled, or, with ``once``, until every bot ticked once.

The bus has one consumer. Without a DLOB it is the runtime's dispatcher; with one it is the
feed's writer, and a :class:`TappedBusClient` hands each delivery to the runtime at the moment
the feed takes it. The feed applies a delivery synchronously after taking it, and a bot's task
only runs once the writer awaits, so a bot woken by an order event or an intent always sees a
book that already holds it.

Exit status (:meth:`BotProcess.run`): 0 when stopped or every ``once`` tick succeeded, 1 when
startup failed or a ``once`` tick crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from keepers.bus import BusClient, make_transport, topics
from keepers.bus.client import Backoff, BusCollector, Delivery
from keepers.config import (
    ConfigError,
    KeepersConfig,
    build_params,
    raw_params,
)
from keepers.dlob_feed import DlobFeed, DlobFeedCollector, HttpSnapshotLoader, SnapshotLoader
from keepers.dlob_server import followed_market
from keepers.keys import KeyFileError, LoadedKeypair, load_keypair_file
from keepers.rpc import NodeClient
from keepers.runtime.bot import Bot, BotContext, BotFactory, Stream, Subscriptions
from keepers.runtime.executor import Executor, NodeSender
from keepers.runtime.health import HealthCheck, HealthServer
from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.registry import BotLoadError, UnknownBot, resolve_bot
from keepers.runtime.supervisor import BotSetup, Supervisor, Watchdog, effective_subscriptions
from keepers.runtime.timing import SystemTimer, Timer
from keepers.runtime.view import AccountRefresher, MarketState, NodeReader
from keepers.user_feed import USERS_QUEUE_SIZE, UserFeed, UserFeedCollector, UsersLoader
from protocol.types import MarketType

_log = structlog.get_logger("keepers.runtime")


class NodeApi(NodeSender, NodeReader, Protocol):
    """What a keeper process needs of ``keepers.rpc.NodeClient``."""


class StartupError(RuntimeError):
    """The process could not get ready (node or bus unreachable within the timeout)."""


class TappedBusClient(BusClient):
    """A :class:`BusClient` that shows each delivery to a ``tap`` once its consumer has
    applied it (the runtime watches the stream the DLOB feed consumes, over the same
    connection).

    The consumer (the feed's one writer) applies a delivery before it asks for the next, so a
    delivery is tapped when the consumer comes back to :meth:`get` or :meth:`get_nowait`: a
    bot woken by the tap finds what the message changed already in the book. (Tapped as it
    was taken, a bot could tick between the two and miss, say, the intent it was woken for.)
    """

    tap: Callable[[Delivery], None] | None = None
    _applied: Delivery | None = None  # taken by the consumer; tapped on its next call

    def _tap_applied(self) -> None:
        delivery, self._applied = self._applied, None
        if delivery is not None and self.tap is not None:
            self.tap(delivery)

    async def get(self) -> Delivery:
        self._tap_applied()
        delivery = await super().get()
        self._applied = delivery
        return delivery

    def get_nowait(self) -> Delivery | None:
        self._tap_applied()
        delivery = super().get_nowait()
        self._applied = delivery
        return delivery


# --- preparation -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PreparedBot:
    setup: BotSetup
    subscriptions: Subscriptions
    key_path: str
    key_too_open: bool


def prepare_bots(
    config: KeepersConfig,
    names: Sequence[str],
    *,
    load_key: Callable[[str], LoadedKeypair] = load_keypair_file,
) -> list[PreparedBot]:
    """Validate everything about ``names`` that can be checked before connecting.

    Raises :class:`ConfigError` naming the key (``bots.<name>.<key>``) for an unknown bot, a
    bad entry, a missing or unreadable keypair file, bad parameters, or a factory that does not
    build a bot."""
    if not names:
        raise ConfigError("bots", "no bots to run: add a [bots.<name>] table or name one")
    prepared: list[PreparedBot] = []
    for name in names:
        section = config.bot(name)
        path = f"bots.{name}"
        try:
            factory = resolve_bot(name, section.entry)
        except UnknownBot as exc:
            raise ConfigError(path, str(exc)) from None
        except BotLoadError as exc:
            raise ConfigError(f"{path}.entry", str(exc)) from None
        key_path = config.key_path(section)
        if key_path is None:
            raise ConfigError(
                f"{path}.key",
                f"no keypair for bot {name!r}: set keys.{section.key or name} or keys.default "
                "to a keypair file (create one with `keepers keygen --out FILE`)",
            )
        try:
            loaded = load_key(key_path)
        except KeyFileError as exc:
            key_name = section.key or (name if name in config.keys.paths else "default")
            raise ConfigError(f"keys.{key_name}", str(exc)) from None
        params_type = getattr(factory, "params_type", None)
        params: Any = (
            build_params(params_type, section.params, path)
            if params_type is not None
            else raw_params(section.params)
        )
        context = BotContext(
            name=name,
            authority=loaded.keypair.pubkey,
            params=params,
            cluster=config.bus.cluster,
            dry_run=config.runtime.dry_run,
            seed=config.runtime.seed,
        )
        bot = factory(context)
        if not isinstance(bot, Bot):
            raise ConfigError(path, f"{factory!r} built a {type(bot).__name__}, not a bot")
        setup = BotSetup(
            name=name,
            factory=factory,
            context=context,
            keypair=loaded.keypair,
            interval=section.interval_s,
            watchdog_timeout=section.watchdog_timeout_s,
            max_events=section.max_events,
            sub_account_ids=section.sub_accounts,
        )
        subscriptions = effective_subscriptions(bot.subscriptions, setup)
        prepared.append(PreparedBot(setup, subscriptions, key_path, loaded.too_open))
    return prepared


def topic_filters(cluster: str, subscriptions: Sequence[Subscriptions]) -> list[str]:
    """The runtime's own subscriptions: slot and oracles always, plus each bot's streams."""
    filters = {topics.slot(cluster), topics.all_oracles(cluster)}
    for subs in subscriptions:
        for stream in subs.streams:
            if stream is Stream.ORDERS:
                filters.update(_market_filters(cluster, subs, MarketType.Perp))
                filters.update(_market_filters(cluster, subs, MarketType.Spot))
            elif stream is Stream.INTENTS:
                if subs.perp_markets is None:
                    filters.add(topics.all_intents(cluster))
                else:
                    filters.update(topics.intents(cluster, i) for i in subs.perp_markets)
            elif stream is Stream.RECORDS:
                filters.add(topics.all_records(cluster))
    return sorted(filters)


def _market_filters(cluster: str, subs: Subscriptions, market_type: MarketType) -> list[str]:
    markets = subs.perp_markets if market_type is MarketType.Perp else subs.spot_markets
    if markets is None:
        return [topics.all_orders(cluster, market_type)]
    return [topics.orders(cluster, market_type, i) for i in markets]


def broker_url(config: KeepersConfig) -> str:
    """``[bus].url``; ``"embedded"`` is the broker embedded in a local node process."""
    if config.bus.embedded:
        return f"mqtt://127.0.0.1:{config.bus.embedded_port}"
    return config.bus.url


def make_bus(config: KeepersConfig, client_name: str) -> TappedBusClient:
    client_id = f"keepers-{client_name}-{os.urandom(4).hex()}"
    transport = make_transport(config.bus.transport, broker_url(config), client_id)
    return TappedBusClient(
        transport,
        deadletter_topic=topics.deadletter(config.bus.cluster),
        queue_size=config.bus.queue_size,
    )


def make_users_bus(config: KeepersConfig, client_name: str) -> BusClient:
    """The bus connection a :class:`~keepers.user_feed.UserFeed` consumes alone (its bounded
    queue is :data:`~keepers.user_feed.USERS_QUEUE_SIZE` messages)."""
    client_id = f"keepers-{client_name}-users-{os.urandom(4).hex()}"
    transport = make_transport(config.bus.transport, broker_url(config), client_id)
    return BusClient(
        transport,
        deadletter_topic=topics.deadletter(config.bus.cluster),
        queue_size=USERS_QUEUE_SIZE,
    )


class WithUserCursor:
    """A bot factory that builds each bot with a fresh cursor of ``feed`` as
    ``extra["users"]`` (a bot rebuilt after a crash starts over with every account)."""

    def __init__(self, factory: BotFactory, feed: UserFeed) -> None:
        self.factory = factory
        self.feed = feed

    def __call__(self, context: BotContext, /) -> Bot:
        extra = {**context.extra, "users": self.feed.cursor()}
        return self.factory(dataclasses.replace(context, extra=extra))


def needs_user_feed(prepared: PreparedBot) -> bool:
    """The bot watches every user and its context holds no accounts of the caller's."""
    return prepared.subscriptions.users and "users" not in prepared.setup.context.extra


# --- running ---------------------------------------------------------------------------------
class BotProcess:
    def __init__(
        self,
        config: KeepersConfig,
        bots: Sequence[PreparedBot],
        *,
        node: NodeApi,
        bus: BusClient,
        snapshot_loader: SnapshotLoader | None = None,
        timer: Timer | None = None,
        metrics: RuntimeMetrics | None = None,
        rng: random.Random | None = None,
        users_bus: BusClient | None = None,
        users_loader: UsersLoader | None = None,
    ) -> None:
        """``users_bus`` / ``users_loader``: the bus connection and the page reader of the
        user feed, if one is needed (defaults: a new connection to the configured broker, and
        ``node`` if it reads pages, else a client of its own to ``[node].url``). The process
        starts and closes both buses."""
        self.config = config
        self.bots = list(bots)
        self.node = node
        self.bus = bus
        self.users_bus = users_bus
        self._users_loader = users_loader
        self._own_users_loader: NodeClient | None = None
        self.timer = timer or SystemTimer()
        self.metrics = metrics or RuntimeMetrics()
        self._rng = rng or random.Random(config.runtime.seed)  # noqa: S311 -- jitter
        self._loader = snapshot_loader
        self._own_loader: HttpSnapshotLoader | None = None
        runtime = config.runtime
        self.state = MarketState(self.timer)
        self.refresher = AccountRefresher(
            node,
            self.state,
            interval=runtime.account_refresh_s,
            timeout=config.node.request_timeout_s,
            timer=self.timer,
        )
        for prepared in self.bots:
            authority = prepared.setup.keypair.pubkey
            self.refresher.watch_users(
                (authority, sub) for sub in prepared.subscriptions.sub_account_ids
            )
        self.executor = Executor(
            node,
            self.metrics,
            slot=lambda: self.state.slot,
            dry_run=runtime.dry_run,
            timer=self.timer,
            rng=random.Random(self._rng.getrandbits(64)),  # noqa: S311 -- jitter
            on_accepted=lambda _bot: self.refresher.request(),
        )
        self.feed: DlobFeed | None = None
        self.user_feed: UserFeed | None = None
        self.supervisor: Supervisor | None = None
        self.health: HealthServer | None = None
        self.ready = asyncio.Event()
        self.metrics.register(BusCollector(bus))

    @property
    def wants_dlob(self) -> bool:
        return any(p.subscriptions.dlob for p in self.bots)

    @property
    def wants_users(self) -> bool:
        return any(needs_user_feed(p) for p in self.bots)

    def health_check(self) -> HealthCheck:
        """Checks that read this process's parts at request time (they appear as it starts)."""

        def watchdogs() -> list[Watchdog]:
            return self.supervisor.watchdogs if self.supervisor is not None else []

        def not_ready() -> str | None:
            return None if self.ready.is_set() else "starting: not ready yet"

        def feed_failed() -> str | None:
            if self.feed is None or self.feed.failure is None:
                return None
            return f"dlob feed failed: {self.feed.failure!r}"

        def dlob_synced() -> bool | None:
            return None if self.feed is None else self.feed.is_synced_all

        def user_feed_failed() -> str | None:
            if self.user_feed is None or self.user_feed.failure is None:
                return None
            return f"user feed failed: {self.user_feed.failure!r}"

        def users_synced() -> bool | None:
            return None if self.user_feed is None else self.user_feed.is_synced

        return HealthCheck(
            watchdogs=watchdogs,
            bus_connected=lambda: self.bus.is_connected,
            slot=lambda: self.state.slot,
            slot_age=self.state.slot_age,
            slot_stall_s=self.config.metrics.slot_stall_s,
            details={
                "ready": self.ready.is_set,
                "dlob_synced": dlob_synced,
                "users_synced": users_synced,
            },
            checks=[not_ready, feed_failed, user_feed_failed],
        )

    async def run(self) -> int:
        """Run until cancelled (0) or, in ``once`` mode, until each bot ticked (0, or 1 if one
        crashed); 1 if startup failed."""
        try:
            await self._start_health()
            try:
                await self._start()
            except StartupError as exc:
                _log.error("keeper process failed to start", error=str(exc))
                return 1
            return await self._run_bots()
        finally:
            await self._stop()

    async def _start_health(self) -> None:
        metrics_cfg = self.config.metrics
        if not metrics_cfg.enabled:
            return
        self.health = HealthServer(
            self.health_check(), self.metrics, host=metrics_cfg.host, port=metrics_cfg.port
        )
        await self.health.start()
        _log.info("health and metrics listening", url=self.health.url)

    async def _start(self) -> None:
        runtime = self.config.runtime
        try:
            async with asyncio.timeout(runtime.startup_timeout_s):
                await self._first_refresh()
                if self.wants_dlob:
                    if not isinstance(self.bus, TappedBusClient):
                        raise StartupError("a DLOB needs a TappedBusClient to share the bus")
                    self.feed = await self._make_feed()
                    self.metrics.register(DlobFeedCollector(self.feed))
                    self.bus.tap = self._dispatch
                    await self.feed.start()
                if self.wants_users:
                    self.user_feed = await self._start_user_feed()
                filters = topic_filters(
                    self.config.bus.cluster, [p.subscriptions for p in self.bots]
                )
                await self.bus.subscribe(filters)
                await self.bus.start()
                await self.bus.wait_connected()
                if self.feed is not None:
                    await self.feed.wait_synced()
                if self.user_feed is not None:
                    await self.user_feed.wait_synced()
        except TimeoutError:
            raise StartupError(
                f"not ready within {runtime.startup_timeout_s}s: "
                f"node at {self.config.node.url} answering: {self.refresher.refreshes > 0}, "
                f"bus connected: {self.bus.is_connected}, "
                f"users synced: {self.user_feed is None or self.user_feed.is_synced}"
            ) from None
        self.supervisor = Supervisor(
            [self._setup(p) for p in self.bots],
            executor=self.executor,
            state=self.state,
            metrics=self.metrics,
            timer=self.timer,
            dlob=self.feed,
            once=runtime.once,
            dry_run=runtime.dry_run,
            tick_timeout=runtime.tick_timeout_s,
            restart_backoff=Backoff(
                initial=runtime.restart_initial_s, maximum=runtime.restart_max_s
            ),
            rng=random.Random(self._rng.getrandbits(64)),  # noqa: S311 -- jitter
        )
        self.ready.set()
        _log.info(
            "keeper process ready",
            bots=[p.setup.name for p in self.bots],
            slot=self.state.slot,
            dry_run=runtime.dry_run,
            once=runtime.once,
        )

    async def _first_refresh(self) -> None:
        attempt = 0
        backoff = Backoff(initial=0.1, maximum=2.0)
        while True:
            try:
                await self.refresher.refresh_once()
            except Exception as exc:  # the node may not be up yet: retried until the timeout
                delay = backoff.delay(attempt, self._rng)
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    _log.warning("node not answering yet", attempt=attempt, error=repr(exc))
                await self.timer.sleep(delay)
                continue
            return

    def _setup(self, prepared: PreparedBot) -> BotSetup:
        if self.user_feed is None or not needs_user_feed(prepared):
            return prepared.setup
        factory = WithUserCursor(prepared.setup.factory, self.user_feed)
        return dataclasses.replace(prepared.setup, factory=factory)

    async def _start_user_feed(self) -> UserFeed:
        bus = self.users_bus
        if bus is None:
            names = "-".join(p.setup.name for p in self.bots if needs_user_feed(p))
            bus = self.users_bus = make_users_bus(self.config, names)
        loader = self._users_loader
        if loader is None and isinstance(self.node, UsersLoader):
            loader = self.node
        if loader is None:
            timeout = aiohttp.ClientTimeout(total=self.config.node.request_timeout_s)
            loader = self._own_users_loader = NodeClient(self.config.node.url, timeout=timeout)
        feed = UserFeed(bus, loader, cluster=self.config.bus.cluster)
        self.metrics.register(UserFeedCollector(feed))
        await feed.start()
        await bus.start()
        return feed

    async def _make_feed(self) -> DlobFeed:
        followed = []
        perp_wanted: set[int] | None = set()
        spot_wanted: set[int] | None = set()
        for prepared in self.bots:
            subs = prepared.subscriptions
            if not subs.dlob:
                continue
            perp_wanted = _union(perp_wanted, subs.perp_markets)
            spot_wanted = _union(spot_wanted, subs.spot_markets)
        for index, perp in sorted(self.state.perp_markets.items()):
            if perp_wanted is None or index in perp_wanted:
                followed.append(followed_market(MarketType.Perp, perp))
        for index, spot in sorted(self.state.spot_markets.items()):
            if spot_wanted is None or index in spot_wanted:
                followed.append(followed_market(MarketType.Spot, spot))
        if not followed:
            raise StartupError("the bots want a DLOB but the node lists none of their markets")
        loader = self._loader
        if loader is None:
            self._own_loader = HttpSnapshotLoader(self.config.node.url)
            loader = self._own_loader
        return DlobFeed(self.bus, loader, followed, cluster=self.config.bus.cluster)

    def _dispatch(self, delivery: Delivery) -> None:
        if self.supervisor is not None:
            self.supervisor.dispatch(delivery)
        else:
            self.state.apply(delivery)

    async def _consume_bus(self) -> None:
        async for delivery in self.bus:
            self._dispatch(delivery)

    async def _run_bots(self) -> int:
        supervisor = self.supervisor
        if supervisor is None:
            raise RuntimeError("not started")
        async with asyncio.TaskGroup() as group:
            background = [group.create_task(self.refresher.run(), name="account-refresher")]
            if self.feed is None:
                background.append(group.create_task(self._consume_bus(), name="bus-dispatcher"))
            await supervisor.run()
            for task in background:
                task.cancel()
        failures = supervisor.failures
        if self.config.runtime.once and failures:
            for name, error in failures.items():
                _log.error("bot tick failed", bot=name, error=repr(error))
            return 1
        return 0

    async def _stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.feed is not None:
                await self.feed.close()
        with contextlib.suppress(Exception):
            if self.user_feed is not None:
                await self.user_feed.close()
        await self.bus.close()
        if self.users_bus is not None:
            await self.users_bus.close()
        if self._own_users_loader is not None:
            await self._own_users_loader.close()
        if self._own_loader is not None:
            await self._own_loader.close()
        if self.health is not None:
            await self.health.stop()


def _union(acc: set[int] | None, markets: tuple[int, ...] | None) -> set[int] | None:
    if acc is None or markets is None:
        return None
    return acc | set(markets)


async def run_bots(config: KeepersConfig, prepared: Sequence[PreparedBot]) -> int:
    """The CLI's entry: connect to the configured node and bus and run the bots
    :func:`prepare_bots` made."""
    for bot in prepared:
        if bot.key_too_open:
            _log.warning(
                "keypair file readable by others; chmod 600 it",
                bot=bot.setup.name,
                path=bot.key_path,
            )
    timeout = aiohttp.ClientTimeout(total=config.node.request_timeout_s)
    bus = make_bus(config, "-".join(p.setup.name for p in prepared))
    async with NodeClient(config.node.url, timeout=timeout) as node:
        # The client reads order snapshots too: the DLOB resyncs over the same connections.
        process = BotProcess(config, prepared, node=node, bus=bus, snapshot_loader=node)
        return await process.run()
