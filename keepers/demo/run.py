"""One demo run: the node, a broker, the oracle, traders, makers and every bot, in one process.

:func:`run_demo` owns everything it starts, in this order, and stops it in reverse:

1. a temporary directory for the node's journal;
2. the broker: an embedded amqtt broker (:class:`~keepers.bus.brokers.EmbeddedBroker`) on a
   free port, unless ``broker`` names one (``mqtt://host:port``);
3. the node (:class:`keepers.node.Node`) on a free port, publishing on that broker, with the
   run's oracle authority;
4. an observer on the bus (slot, oracle prices, every record) feeding the participants'
   :class:`~keepers.demo.actors.MarketView` and the report's
   :class:`~keepers.demo.report.DemoStats`;
5. set-up transactions: every participant's account and collateral, the insurance fund's
   stake, the first oracle prices, a maker's BAL shares;
6. the bots (filler, trigger, JIT maker, funding-rate updater, and the liquidator and the
   settlers where the ``bots`` package provides them), each a task of a
   :class:`~keepers.runtime.process.BotProcess` over the broker and the node's HTTP API, as a
   deployed keeper would run: one process for all of them, or (``separate_bots``) one per bot;
7. the oracle feed, the traders, the makers and the live summary, until ``slots`` slots passed.

Everything runs as tasks of one ``asyncio.TaskGroup``. The director counts the node's slots
and plays the scenario: the crash (the oracle walk's shock, scheduled by step in the walk
itself), then fast-forwards of protocol time to the next funding period. Hourly things
(funding, revenue settlement, LP settlement) need the program's clock to cross an hour
boundary, which a one-minute demo's slots never do; at each ``fast_forward_at`` the director
therefore advances the node's slot clock by the slots that take its timestamp past the next
funding time (``SlotClock.advance``), as if the exchange had been quiet for that long, and
says so in the report. Two by default: the first shows funding and the LP settlement, the
second also settles to the insurance fund the revenue the crash's liquidations brought in.
After the last slot the participants stop, the bots get ``drain_s`` to finish
(expired orders, last fills, settlements), the invariants are computed from the node's state,
and everything is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from keepers.bus import TRANSPORTS, BusClient, make_transport, parse_broker_url, topics
from keepers.bus.brokers import EmbeddedBroker
from keepers.bus.schemas import IntentMessage
from keepers.config import ConfigError, KeepersConfig, load_config
from keepers.demo.actors import ActorStats, MarketView, Sender, demo_keypair, wall_ns
from keepers.demo.books import book_orders, compare_book
from keepers.demo.invariants import QuoteFlows, check_invariants
from keepers.demo.makers import Maker, MakerProfile, default_maker_profiles
from keepers.demo.operator import Operator
from keepers.demo.oracle import OracleFeed, PriceWalk, Shock
from keepers.demo.report import DemoReport, DemoStats, InvariantResult, LiveSummary, summary_lines
from keepers.demo.traders import MarketInfo, Trader, TraderProfile, default_profiles
from keepers.keys import LoadedKeypair
from keepers.node import Node, NodeConfig
from keepers.rpc import NodeClient
from keepers.runtime.process import BotProcess, PreparedBot, make_bus, prepare_bots
from keepers.runtime.registry import BotLoadError, UnknownBot, resolve_bot
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    QUOTE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
)
from protocol.instructions import (
    AddInsuranceFundStake,
    Deposit,
    InitializeInsuranceFundStake,
    InitializeUser,
)
from protocol.keys import Keypair
from protocol.math.funding import on_the_hour_update
from protocol.numeric import div_trunc

CORE_BOTS = ("filler", "trigger", "jit_maker", "funding_rate_updater")
RISK_BOTS = ("liquidator", "revenue_settler", "pnl_settler", "lp_settler")
FUNDED_BOTS: Mapping[str, int] = {
    "jit_maker": 1_000_000 * QUOTE_PRECISION,
    "liquidator": 1_000_000 * QUOTE_PRECISION,
}
BOT_INTERVALS: Mapping[str, float] = {
    "filler": 0.1,
    "trigger": 0.1,
    "jit_maker": 0.1,
    "funding_rate_updater": 0.5,
    "liquidator": 0.2,
    "revenue_settler": 0.5,
    "pnl_settler": 0.5,
    "lp_settler": 0.5,
}
INSURANCE_STAKE = 250_000 * QUOTE_PRECISION  # the insurer's stake in the USDC insurance fund
LP_SHARES = 2_000 * AMM_RESERVE_PRECISION  # the BAL provider's shares in the first market
RECORDS_GRACE_S = 5.0  # how long the observer may take to see the node's last records


def default_bot_params(markets: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The bots' own parameters in the demo: the JIT maker quotes every traded market 3 bps
    from the oracle (inside most resting quotes, so it wins part of the auctions), with room
    for a few hundred units of position and answers of up to 30 units."""
    return {
        "jit_maker": {
            "perp_markets": tuple(markets),
            "spread_bps": 3,
            "max_position_base": 500 * BASE_PRECISION,
            "max_order_base": 30 * BASE_PRECISION,
            "max_leverage_bps": 30_000,
        },
    }


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """A demo run. ``crash_at``: the fraction of ``slots`` at which the scenario's oracle crash
    happens (``None``: none); ``fast_forward_at``: the fractions at which protocol time jumps
    to the next funding period (empty: never).
    ``crash_ppm``: the crash's size in parts per million of the price (first market; the
    others move a third as much). ``bots``: the bots to run (``None``: every one available).
    ``bot_params``: extra ``[bots.<name>]`` keys (the bots' own parameters)."""

    slots: int = 200
    seed: int = 1
    slot_ms: int = 100
    broker: str | None = None
    transport: str | None = None
    cluster: str | None = None  # None: "demo", or "demo-<random>" on a shared broker
    traders: int = 6
    makers: int = 3
    markets: tuple[int, ...] = (0, 1, 2)
    crash_at: float | None = 0.45
    crash_ppm: int = -180_000
    fast_forward_at: tuple[float, ...] = (0.65, 0.9)
    bots: tuple[str, ...] | None = None
    bot_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    separate_bots: bool = False
    live: bool = True
    drain_s: float = 1.5
    oracle_vol_ppm: int = 300
    journal_dir: Path | None = None
    check_books: bool = True
    repeg_every: int = 10  # slots between the operator's repegs (0: no operator)

    def __post_init__(self) -> None:
        if self.slots < 10:
            raise ValueError("a demo needs at least 10 slots")
        if self.slot_ms < 10:
            raise ValueError("slot_ms must be at least 10")
        fractions = [self.crash_at, *self.fast_forward_at]
        if any(value is not None and not 0 < value < 1 for value in fractions):
            raise ValueError("crash_at and fast_forward_at must be fractions in (0, 1)")
        if not self.markets:
            raise ValueError("trade at least one market")
        if self.transport is not None and self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.broker is not None:
            parse_broker_url(self.broker)  # ValueError naming what is wrong with it

    def cluster_name(self) -> str:
        """A broker of our own holds nothing else; on a shared one, retained messages of an
        earlier run (its slot, its prices) must not be mistaken for this run's."""
        if self.cluster is not None:
            return self.cluster
        return "demo" if self.broker is None else f"demo-{os.urandom(4).hex()}"

    @property
    def crash_step(self) -> int | None:
        return None if self.crash_at is None else max(1, int(self.slots * self.crash_at))

    @property
    def fast_forward_steps(self) -> tuple[int, ...]:
        return tuple(sorted({max(1, int(self.slots * f)) for f in self.fast_forward_at}))


@dataclass(slots=True)
class _Participants:
    oracle: Keypair
    admin: Keypair
    insurer: Keypair
    traders: list[tuple[TraderProfile, Keypair]]
    makers: list[tuple[MakerProfile, Keypair]]
    bots: dict[str, Keypair]


def available_bots(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The bots of ``names`` the runtime can build, and why each other one is not run."""
    found: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        try:
            resolve_bot(name)
        except UnknownBot:
            missing[name] = "not available in this install"
        except BotLoadError as exc:
            missing[name] = f"cannot load: {exc.detail}"
        else:
            found.append(name)
    return found, missing


def _participants(config: DemoConfig, bot_names: Sequence[str]) -> _Participants:
    seed = config.seed
    leveraged = config.crash_at is not None
    traders = default_profiles(
        config.traders, config.markets, leveraged=leveraged, leveraged_until=config.crash_step
    )
    makers = default_maker_profiles(config.makers, config.markets, lp_shares=LP_SHARES)
    return _Participants(
        oracle=demo_keypair(seed, "oracle"),
        admin=demo_keypair(seed, "admin"),
        insurer=demo_keypair(seed, "insurer"),
        traders=[(p, demo_keypair(seed, "trader", i)) for i, p in enumerate(traders)],
        makers=[(p, demo_keypair(seed, "maker", i)) for i, p in enumerate(makers)],
        bots={name: demo_keypair(seed, f"bot/{name}") for name in bot_names},
    )


# --- configuration of the bots -------------------------------------------------------------------
def bot_config(
    config: DemoConfig,
    *,
    cluster: str,
    node_url: str,
    broker_url: str,
    bot_names: Sequence[str],
) -> KeepersConfig:
    """The keepers configuration the demo's bots run with (nothing read from the environment:
    the demo is self-contained)."""
    overrides: list[tuple[str, Any, str]] = [
        ("node.url", node_url, "demo"),
        ("node.request_timeout_s", 5.0, "demo"),
        ("bus.url", broker_url, "demo"),
        ("bus.cluster", cluster, "demo"),
        ("metrics.enabled", False, "demo"),
        ("runtime.seed", config.seed, "demo"),
        ("runtime.log_json", True, "demo"),
        ("runtime.account_refresh_s", 0.5, "demo"),
        ("runtime.startup_timeout_s", 20.0, "demo"),
        ("runtime.restart_initial_s", 0.1, "demo"),
        ("runtime.restart_max_s", 2.0, "demo"),
    ]
    if config.transport is not None:
        overrides.append(("bus.transport", config.transport, "demo"))
    defaults = default_bot_params(config.markets)
    for name in bot_names:
        overrides.append((f"keys.{name}", f"demo-key:{name}", "demo"))
        overrides.append((f"bots.{name}.interval_s", BOT_INTERVALS.get(name, 0.5), "demo"))
        params = {**defaults.get(name, {}), **config.bot_params.get(name, {})}
        for key, value in params.items():
            overrides.append((f"bots.{name}.{key}", value, "demo"))
    return load_config(env={}, overrides=overrides)


def _key_loader(keys: Mapping[str, Keypair]) -> Callable[[str], LoadedKeypair]:
    def load(path: str) -> LoadedKeypair:
        name = path.removeprefix("demo-key:")
        return LoadedKeypair(keypair=keys[name], path=Path(path), too_open=False)

    return load


# --- the run -------------------------------------------------------------------------------
class DemoRun:
    """The state of one run (see the module docstring); :func:`run_demo` drives it."""

    def __init__(self, config: DemoConfig, out: TextIO | None) -> None:
        self.config = config
        self.cluster = config.cluster_name()
        self.out = out
        self.view = MarketView()
        self.stats = DemoStats(clock_ns=wall_ns)
        self.actor_stats: dict[str, ActorStats] = {
            "setup": ActorStats(),
            "oracle": ActorStats(),
            "operator": ActorStats(),
            "traders": ActorStats(),
            "makers": ActorStats(),
        }
        self.bot_status: dict[str, str] = {}
        self.processes: dict[str, BotProcess] = {}
        self.ticks = 0
        self.phase = "starting"
        self.scenario: dict[str, Any] = {}
        self.started_at = time.monotonic()
        self.node: Node | None = None
        self.feed: OracleFeed | None = None
        self.operator: Operator | None = None
        self.traders: list[Trader] = []
        self.makers: list[Maker] = []
        self.delivered = asyncio.Event()
        self.stop = asyncio.Event()

    # --- rejections ----------------------------------------------------------------------------
    def rejections_by_source(self) -> dict[str, dict[str, int]]:
        sources: dict[str, dict[str, int]] = {}
        for name, stats in self.actor_stats.items():
            if stats.rejected:
                sources[name] = dict(sorted(stats.rejected.items()))
        for process in self.processes.values():
            for metric in process.metrics.tx_rejected.collect():
                for sample in metric.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    bot = sample.labels["bot"]
                    codes = sources.setdefault(f"bot:{bot}", {})
                    code = sample.labels["code"]
                    codes[code] = codes.get(code, 0) + int(sample.value)
        return sources

    def rejections_by_code(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for codes in self.rejections_by_source().values():
            total.update(codes)
        return dict(total)

    # --- observer ------------------------------------------------------------------------------
    async def observe(self, bus: BusClient) -> None:
        async for delivery in bus:
            self.view.apply(delivery)
            self.stats.apply_delivery(delivery)
            self.delivered.set()

    async def draw(self, summary: LiveSummary) -> None:
        total = self.config.slots
        while True:
            self.draw_once(summary, total)
            await asyncio.sleep(0.25 if summary.is_tty else 0.5)

    def draw_once(self, summary: LiveSummary, total: int) -> None:
        prices = {}
        if self.feed is not None:
            prices = {walk.oracle_id: walk.price for walk in self.feed.walks}
        lines = summary_lines(
            self.stats,
            slot=self.view.slot,
            ticks=self.ticks,
            total_ticks=total,
            elapsed_s=time.monotonic() - self.started_at,
            prices=prices,
            rejections=self.rejections_by_code(),
            phase=self.phase,
        )
        summary.draw(lines, time.monotonic())


async def _send_setup(
    sender: Sender, label: str, instructions: Sequence[Any], signer: Keypair
) -> None:
    result = await sender.send(label, instructions, [signer])
    if result is None or not result.ok:
        detail = "no answer" if result is None else f"{result.code_name}: {result.detail}"
        raise RuntimeError(f"demo set-up failed at {label}: {detail}")


async def _market_infos(client: NodeClient, indexes: Sequence[int]) -> dict[int, MarketInfo]:
    infos: dict[int, MarketInfo] = {}
    for index in indexes:
        market = await client.perp_market(index)
        if market is None:
            raise ConfigError("--markets", f"the node has no perp market {index}")
        amm = market.amm
        infos[index] = MarketInfo(
            market_index=index,
            oracle_id=amm.oracle,
            order_step_size=amm.order_step_size,
            order_tick_size=amm.order_tick_size,
            min_order_size=amm.min_order_size,
        )
    return infos


async def _fast_forward(client: NodeClient, node: Node, markets: Sequence[int]) -> int:
    """Advance the node's slot clock past the next funding time of ``markets`` and the quote
    market's next revenue settlement; returns the slots skipped."""
    now = node.clock.now
    waits = []
    for index in markets:
        market = await client.perp_market(index)
        if market is not None:
            amm = market.amm
            waits.append(
                on_the_hour_update(now.unix_timestamp, amm.last_funding_rate_ts, amm.funding_period)
            )
    quote = await client.spot_market(QUOTE_SPOT_MARKET_INDEX)
    if quote is not None and quote.insurance_fund.revenue_settle_period > 0:
        fund = quote.insurance_fund
        waits.append(
            on_the_hour_update(
                now.unix_timestamp, fund.last_revenue_settle_ts, fund.revenue_settle_period
            )
        )
    seconds = max(waits, default=0) + 1
    slots = math.ceil(seconds * 1000 / node.clock.slot_ms) + 1
    node.clock.advance(slots)
    return slots


async def _wait_ready(processes: Iterable[BotProcess], tasks: Iterable[asyncio.Task[int]]) -> None:
    """Until every bot process is ready or has ended (a failed start ends its task)."""
    pending = list(zip(processes, tasks, strict=True))
    while pending:
        pending = [(p, t) for p, t in pending if not p.ready.is_set() and not t.done()]
        if pending:
            await asyncio.sleep(0.05)


async def run_demo(
    config: DemoConfig, out: TextIO | None = None, *, stop: asyncio.Event | None = None
) -> DemoReport:
    """Run the demo; returns its report (the caller prints or saves it). Setting ``stop``
    ends the trading early: the run then drains and reports as after its last slot."""
    run = DemoRun(config, out)
    if stop is not None:
        run.stop = stop
    with tempfile.TemporaryDirectory(prefix="keepers-demo-") as tmp:
        journal_dir = config.journal_dir or Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            if config.broker is None:
                broker = await stack.enter_async_context(EmbeddedBroker())
                broker_url = broker.url
            else:
                broker_url = config.broker
            return await _run(run, stack, broker_url, journal_dir / "journal.sqlite")
    raise AssertionError("unreachable")  # pragma: no cover -- for type checkers


async def _run(
    run: DemoRun, stack: contextlib.AsyncExitStack, broker_url: str, journal: Path
) -> DemoReport:
    config = run.config
    requested = config.bots if config.bots is not None else CORE_BOTS + RISK_BOTS
    bot_names, missing = available_bots(requested)
    for name, why in missing.items():
        run.bot_status[name] = why
    people = _participants(config, bot_names)
    node = await stack.enter_async_context(
        Node(
            NodeConfig(
                journal=journal,
                port=0,
                broker_url=broker_url,
                cluster=run.cluster,
                slot_ms=config.slot_ms,
                oracle_authority=people.oracle.pubkey,
                admin=people.admin.pubkey,
                verify_workers=2,
                transport=config.transport,
            )
        )
    )
    run.node = node
    client = await stack.enter_async_context(NodeClient(node.url))
    observer = BusClient(
        make_transport(config.transport, broker_url, f"keepers-demo-{os.urandom(4).hex()}"),
        queue_size=100_000,
    )
    await observer.start()
    stack.push_async_callback(observer.close)
    cluster = run.cluster
    await observer.subscribe(
        [topics.slot(cluster), topics.all_oracles(cluster), topics.all_records(cluster)]
    )
    roles = {kp.pubkey: name for name, kp in people.bots.items()}
    run.stats.roles = roles

    async def publish_intent(market_index: int, message: IntentMessage) -> None:
        await observer.publish(topics.intents(cluster, market_index), message)

    async with asyncio.TaskGroup() as group:
        observe = group.create_task(run.observe(observer), name="demo-observer")
        async with asyncio.timeout(20):
            await observer.wait_connected()
            await run.view.wait_for_slot(1)
        markets = await _market_infos(client, config.markets)
        run.phase = "set-up"
        await _setup(run, client, people, markets)
        quote = await client.spot_market(QUOTE_SPOT_MARKET_INDEX)
        if_before = quote.insurance_fund.vault_amount if quote is not None else 0

        # The bots that watch every user (liquidator, settlers) read the embedded node's
        # accounts, which each commit replaces (never mutates); every bot reads the
        # exchange's configuration from it too.
        state = node.ledger.state
        extra = {"users": state.users, "state": state.state}
        processes, bot_tasks = _start_bots(run, group, config, node.url, broker_url, people, extra)
        async with asyncio.timeout(30):
            await _wait_ready(processes, bot_tasks)
        for process in run.processes.values():
            for prepared in process.bots:
                status = "running" if process.ready.is_set() else "failed to start"
                run.bot_status[prepared.setup.name] = status

        actors = _start_actors(run, group, client, people, markets, publish_intent)
        summary = LiveSummary(run.out) if config.live else None
        drawing = (
            group.create_task(run.draw(summary), name="demo-summary")
            if summary is not None
            else None
        )
        run.phase = "trading"
        await _direct(run, client, node, markets)
        for actor in actors:
            actor.cancel()
        run.phase = "draining"
        await asyncio.sleep(config.drain_s)
        book_checks = await _compare_books(run, client) if config.check_books else []
        for bot_task in bot_tasks:
            bot_task.cancel()
        await asyncio.gather(*bot_tasks, return_exceptions=True)
        async with asyncio.timeout(10):
            await node.wait_durable(node.ledger.last_index)
        await _quiesce_records(run, node)
        if summary is not None and drawing is not None:
            drawing.cancel()
            run.draw_once(summary, config.slots)
        observe.cancel()

    quote_after = node.ledger.state.spot_markets[QUOTE_SPOT_MARKET_INDEX]
    last_seq = node.ledger.next_seq - 1
    missing_records = run.stats.missing(last_seq)
    stats = run.stats
    invariants = check_invariants(
        node.ledger.state,
        deposits=stats.deposits,
        insurance_stakes=stats.insurance_stakes,
        records_complete=missing_records == 0,
        flows=QuoteFlows(
            amm_cost_basis=stats.amm_cost_basis,
            settled_pnl=stats.settled_pnl,
            lp_settled_quote=stats.lp_settled_quote,
            liquidation_if_fees=stats.liquidation_if_fees,
            repeg_costs=stats.repeg_costs,
            other=stats.other_quote_flows,
        ),
    )
    invariants += book_checks
    if missing_records:
        invariants.append(
            InvariantResult(
                "every record observed",
                False,
                f"{missing_records} of {last_seq} records never reached the observer",
            )
        )
    return DemoReport(
        seed=config.seed,
        slots=config.slots,
        slot_ms=config.slot_ms,
        duration_s=time.monotonic() - run.started_at,
        stats=run.stats,
        rejections_by_code=run.rejections_by_code(),
        rejections_by_source=run.rejections_by_source(),
        insurance_fund_before=if_before,
        insurance_fund_after=quote_after.insurance_fund.vault_amount,
        invariants=invariants,
        bots=dict(sorted(run.bot_status.items())),
        scenario=run.scenario,
        records_missing=missing_records,
        extra={
            "broker": "embedded amqtt" if config.broker is None else config.broker,
            "participants": {
                "traders": len(people.traders),
                "makers": len(people.makers),
                "intents_published": sum(t.intents_published for t in run.traders),
                "operator_repegs": run.operator.repegs if run.operator is not None else 0,
            },
            "transactions": {
                name: {
                    "accepted": sum(s.accepted.values()),
                    "rejected": sum(s.rejected.values()),
                    "failed": s.failed,
                }
                for name, s in run.actor_stats.items()
            },
        },
    )


async def _setup(
    run: DemoRun, client: NodeClient, people: _Participants, markets: Mapping[int, MarketInfo]
) -> None:
    """Accounts, collateral, the insurance fund's stake and the first oracle prices."""
    sender = Sender(client, run.view, run.actor_stats["setup"])
    funded: list[tuple[str, Keypair, int]] = []
    funded += [(p.name, kp, p.collateral) for p, kp in people.traders]
    funded += [(p.name, kp, p.collateral) for p, kp in people.makers]
    funded += [(f"bot/{n}", kp, FUNDED_BOTS.get(n, 0)) for n, kp in people.bots.items()]

    async def open_account(label: str, keypair: Keypair, amount: int) -> None:
        instructions: list[Any] = [InitializeUser(keypair.pubkey, 0)]
        if amount:
            instructions.append(Deposit(keypair.pubkey, 0, QUOTE_SPOT_MARKET_INDEX, amount))
        await _send_setup(sender, f"open {label}", instructions, keypair)

    await asyncio.gather(*(open_account(*item) for item in funded))
    await _send_setup(
        sender,
        "stake the insurance fund",
        [
            InitializeInsuranceFundStake(people.insurer.pubkey, QUOTE_SPOT_MARKET_INDEX),
            AddInsuranceFundStake(people.insurer.pubkey, QUOTE_SPOT_MARKET_INDEX, INSURANCE_STAKE),
        ],
        people.insurer,
    )
    prices: dict[str, int] = {}
    for info in markets.values():
        oracle = await client.oracle(info.oracle_id)
        if oracle is None:
            raise RuntimeError(f"the node has no oracle {info.oracle_id}")
        prices[info.oracle_id] = oracle.price
    crashed = markets[run.config.markets[0]].oracle_id
    run.feed = _oracle_feed(run, client, people.oracle, prices, crashed)
    if not await run.feed.publish():
        raise RuntimeError("demo set-up failed: the first oracle update was refused")


def _oracle_feed(
    run: DemoRun,
    client: NodeClient,
    authority: Keypair,
    prices: Mapping[str, int],
    crashed: str,
) -> OracleFeed:
    """A walk per oracle; the crash hits ``crashed`` (the first traded market's oracle, where
    the leveraged traders are) by ``crash_ppm`` and the others by a third of it."""
    config = run.config
    walks = []
    for oracle_id in sorted(prices):
        shocks: tuple[Shock, ...] = ()
        if config.crash_step is not None:
            size = config.crash_ppm if oracle_id == crashed else div_trunc(config.crash_ppm, 3)
            shocks = (Shock(at_step=config.crash_step, ppm=size, steps=1),)
        walks.append(
            PriceWalk(
                oracle_id,
                prices[oracle_id],
                seed=config.seed,
                vol_ppm=config.oracle_vol_ppm,
                shocks=shocks,
            )
        )
    sender = Sender(client, run.view, run.actor_stats["oracle"])
    return OracleFeed(sender, authority, run.view, walks, steps_due=lambda: run.ticks)


def with_extra(prepared: PreparedBot, extra: Mapping[str, Any]) -> PreparedBot:
    """``prepared`` with ``extra`` in its bot context (what a bot that watches every user
    reads: ``"users"``, the accounts, and ``"state"``, the exchange's configuration)."""
    context = dataclasses.replace(
        prepared.setup.context, extra={**prepared.setup.context.extra, **extra}
    )
    return dataclasses.replace(prepared, setup=dataclasses.replace(prepared.setup, context=context))


def _start_bots(
    run: DemoRun,
    group: asyncio.TaskGroup,
    config: DemoConfig,
    node_url: str,
    broker_url: str,
    people: _Participants,
    extra: Mapping[str, Any],
) -> tuple[list[BotProcess], list[asyncio.Task[int]]]:
    names = list(people.bots)
    if not names:
        return [], []
    keepers_config = bot_config(
        config, cluster=run.cluster, node_url=node_url, broker_url=broker_url, bot_names=names
    )
    prepared = [
        with_extra(bot, extra)
        for bot in prepare_bots(keepers_config, names, load_key=_key_loader(people.bots))
    ]
    groups: list[tuple[str, list[PreparedBot]]] = (
        [(p.setup.name, [p]) for p in prepared] if config.separate_bots else [("bots", prepared)]
    )
    processes: list[BotProcess] = []
    tasks: list[asyncio.Task[int]] = []
    for label, members in groups:
        client = NodeClient(node_url, timeout=aiohttp.ClientTimeout(total=5.0))
        bus = make_bus(keepers_config, f"demo-{label}")
        process = BotProcess(keepers_config, members, node=client, bus=bus, snapshot_loader=client)
        run.processes[label] = process
        processes.append(process)
        tasks.append(group.create_task(_run_process(process, client), name=f"demo-bots-{label}"))
    return processes, tasks


async def _run_process(process: BotProcess, client: NodeClient) -> int:
    try:
        return await process.run()
    finally:
        await client.close()


def _start_actors(
    run: DemoRun,
    group: asyncio.TaskGroup,
    client: NodeClient,
    people: _Participants,
    markets: Mapping[int, MarketInfo],
    publish_intent: Callable[[int, IntentMessage], Awaitable[None]],
) -> list[asyncio.Task[None]]:
    config = run.config
    tasks: list[asyncio.Task[None]] = []
    if run.feed is not None:
        tasks.append(group.create_task(run.feed.run(), name="demo-oracle"))
    if config.repeg_every:
        run.operator = Operator(
            Sender(client, run.view, run.actor_stats["operator"]),
            people.admin,
            run.view,
            client,
            markets,
            every=config.repeg_every,
        )
        tasks.append(group.create_task(run.operator.run(), name="demo-operator"))
    trader_sender = Sender(client, run.view, run.actor_stats["traders"])
    for profile, keypair in people.traders:
        trader = Trader(
            profile,
            keypair,
            sender=trader_sender,
            view=run.view,
            reader=client,
            markets=markets,
            publish_intent=publish_intent,
            on_intent=run.stats.latency.on_publish,
            seed=config.seed,
        )
        run.traders.append(trader)
        tasks.append(group.create_task(trader.run(), name=f"demo-{profile.name}"))
    maker_sender = Sender(client, run.view, run.actor_stats["makers"])
    for maker_profile, maker_keypair in people.makers:
        maker = Maker(
            maker_profile,
            maker_keypair,
            sender=maker_sender,
            view=run.view,
            markets=markets,
            seed=config.seed,
        )
        run.makers.append(maker)
        tasks.append(group.create_task(_maker_run(maker), name=f"demo-{maker_profile.name}"))
    return tasks


async def _maker_run(maker: Maker) -> None:
    await maker.add_liquidity()
    await maker.run()


async def _direct(
    run: DemoRun, client: NodeClient, node: Node, markets: Mapping[int, MarketInfo]
) -> None:
    """Count ``slots`` slot ticks of the node's clock and play the scenario."""
    config = run.config
    clock = node.clock
    start_ticks = clock.ticks
    crash = config.crash_step
    fast_forwards = list(config.fast_forward_steps)
    if crash is not None:
        run.scenario["crash"] = {
            "at_step": crash,
            "ppm": config.crash_ppm,
            "oracle": markets[config.markets[0]].oracle_id,
            "others_ppm": div_trunc(config.crash_ppm, 3),
        }
    while not run.stop.is_set():
        next_slot = asyncio.ensure_future(clock.wait_for_slot(clock.slot + 1))
        stopped = asyncio.ensure_future(run.stop.wait())
        await asyncio.wait((next_slot, stopped), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (next_slot, stopped):
            waiter.cancel()
        if run.stop.is_set():
            run.scenario["stopped_early_at_step"] = run.ticks
            return
        run.ticks = clock.ticks - start_ticks
        if crash is not None and run.ticks >= crash and "exposed" not in run.scenario["crash"]:
            run.phase = "crash"
            run.scenario["crash"]["exposed"] = {
                trader.profile.name: {
                    "collateral": trader.profile.collateral,
                    "positions": {str(i): base for i, base in trader.positions.items() if base},
                }
                for trader in run.traders
                if trader.profile.hold_at_cap
            }
        if fast_forwards and run.ticks >= fast_forwards[0]:
            fast_forwards.pop(0)
            slots = await _fast_forward(client, node, list(markets))
            run.scenario.setdefault("fast_forwards", []).append(
                {"at_step": run.ticks, "slots": slots, "seconds": slots * config.slot_ms // 1000}
            )
            run.phase = f"fast-forward {len(run.scenario['fast_forwards'])}"
        if run.ticks >= config.slots:
            return


async def _compare_books(run: DemoRun, client: NodeClient) -> list[InvariantResult]:
    """Each bot process's DLOB against the node's order snapshot, in every market it follows
    (one result per process)."""
    results = []
    for label, process in sorted(run.processes.items()):
        feed = process.feed
        if feed is None or not process.ready.is_set():
            continue
        failures = []
        orders = 0
        for market in feed.markets:
            kind = market.market_type.name.lower()
            equal, detail = await compare_book(
                feed, client, market.market_type, market.market_index
            )
            if equal:
                orders += len(book_orders(feed, market.market_type, market.market_index))
            else:
                failures.append(f"{kind} {market.market_index}: {detail}")
        detail = (
            "; ".join(failures)
            if failures
            else f"{len(feed.markets)} markets, {orders} open orders, each identical"
        )
        results.append(
            InvariantResult(f"{label} DLOB equals the node's order snapshots", not failures, detail)
        )
    return results


async def _quiesce_records(run: DemoRun, node: Node) -> None:
    """Give the observer the node's last records (published after the last commits), for at
    most ``RECORDS_GRACE_S``; what is still missing then is reported."""
    last = node.ledger.next_seq - 1
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(RECORDS_GRACE_S):
            while run.stats.missing(last):
                run.delivered.clear()
                await run.delivered.wait()
