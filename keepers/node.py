"""The node: the single sequencer around the protocol, its HTTP API and its bus publisher.

``python -m keepers.node --journal node.db --port 8899 [--broker mqtt://127.0.0.1:1883]``, or
``await run_node(NodeConfig(...))`` (the ``keepers node`` command builds the config).
The API is the node contract (``/v1/tx``, ``/v1/txs`` (many transactions in one request,
framed as :mod:`keepers.tx_batch` says), ``/v1/simulate``, reads, ``/v1/orders/snapshot``,
``/v1/users`` (pages of every account; :mod:`keepers.node_users`), ``/health``,
``/metrics``); :class:`keepers.rpc.NodeClient` is its client.

A transaction's path
--------------------
1. **Admission** (HTTP handler): refused with 503 while the node is not ready, or when
   ``max_queue`` transactions are already admitted and unanswered (backpressure; counted).
   The body is parsed (:func:`~protocol.transaction.parse_transaction`); a malformed one is a
   422 ``MalformedTransaction`` naming the field, like every other rejection.
2. **Verification** in worker processes (:class:`keepers.verify_pool.ProcessVerifyPool`), in
   batches, beside the loop, verdicts in admission order; a bad signature is a 422
   ``InvalidSignature``. A transaction that finds the pool idle is checked on the loop instead
   (the hand-off to a sleeping worker costs more than the check). The sequencer never checks
   a signature.
3. **Sequencing**: one task, :meth:`Node._sequence`, takes verified transactions in order and
   runs each through :meth:`keepers.ledger.Ledger.execute_reserved` at the slot clock's current
   :class:`~protocol.clock.Clock` (freshness and replay are checked there, against the state at
   execution). Under load it never waits for the disk: the journal commits groups on its
   writer thread while the sequencer executes the next transactions. When its queue runs
   empty it starts the commit of what it executed at once
   (:meth:`keepers.journal.Journal.flush`); a lone transaction after a quiet spell is
   committed right there, on the loop (see :mod:`keepers.journal`). The order-event
   counters advance here, in execution order, so an order snapshot (read on the same loop)
   always matches them.
4. **Acknowledgement**: after each group commit the journal calls :meth:`Node._on_commit`
   once with the last durable index; for every request up to it, in journal order, it hands
   the bus messages to the publisher, which writes them to the broker connection at once
   (:mod:`keepers.node_publisher`), then answers the request (200 with the records). So
   publishing is in commit order, and a subscriber waiting for a fill never waits for the
   HTTP answer to be written first. (One call per commit, not a callback per entry: under
   load a commit holds hundreds of entries.)

Nothing on this path blocks the loop for long: the sequencer yields every
``SEQUENCER_SLICE`` transactions so HTTP, the slot clock and the publisher keep running (the
idle commit holds it for one fsync, when nothing else is waiting).

The slot clock (:mod:`keepers.clock`) ticks every ``slot_ms``; each tick publishes the
retained slot message. Oracle prices change only through ``UpdateOracle`` transactions signed
by the configured oracle authority: the node has no price source of its own.

Start and restart
-----------------
:meth:`Ledger.open` restores the state from the journal (newest snapshot, then the entries
after it) and logs its ``state_hash``. The order-event counters are not part of the program
state, so :func:`restore_market_seqs` re-executes the whole journal from genesis to count
them, and checks that it arrives at the same state hash (a second, independent check of the
restore). That costs a full replay per start: fine for the journal sizes this project runs;
persisting the counters beside each snapshot would make it proportional to the tail instead.
The clock resumes at the last journaled slot (protocol time stands still while the node is
down). At shutdown the ledger is closed (final snapshot) and the state hash logged again.

``/health`` is 503 until the ledger is open, the HTTP server is up and the clock has ticked
once, and again while stopping or after the journal failed (a failed journal means memory may
be ahead of the disk: the node refuses everything and :func:`run_node` raises, so a supervisor
restarts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import msgspec
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keepers.accounts_json import to_builtins
from keepers.bus import make_transport
from keepers.bus.client import BusClient
from keepers.bus.schemas import OrderAction, OrderEvent
from keepers.clock import DEFAULT_SLOT_MS, SlotClock
from keepers.journal import JournalError, WriterMode
from keepers.ledger import Ledger, LedgerConfig
from keepers.logging import configure_logging
from keepers.node_metrics import NodeMetrics
from keepers.node_publisher import Built, EventBuilder, Publisher
from keepers.node_users import UsersStream, parse_page_query
from keepers.tx_batch import MAX_BATCH_BYTES, MAX_TX_BYTES, BatchError, split_batch
from keepers.verify_pool import Outcome, ProcessVerifyPool, Verifier, VerifyPool
from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.markets import default_program_state
from protocol.program import Executed, Program
from protocol.state import State
from protocol.state_hash import state_hash
from protocol.transaction import Transaction, VerifiedTransaction, parse_transaction
from protocol.types import MarketType, OrderStatus

__all__ = [
    "DEFAULT_GENESIS_TS",
    "DEFAULT_PORT",
    "Answer",
    "Node",
    "NodeConfig",
    "NodeFailedError",
    "build_genesis",
    "main",
    "restore_market_seqs",
    "run_node",
]

log = structlog.get_logger("keepers.node")

DEFAULT_PORT: Final = 8899
DEFAULT_GENESIS_TS: Final = 1_700_000_000
SEQUENCER_SLICE: Final = 64  # transactions executed between yields to the loop
MAX_BODY_BYTES: Final = MAX_TX_BYTES  # > the largest valid transaction (64 x 4 KiB instructions)
SNAPSHOT_DURABLE_TIMEOUT: Final = 10.0

_encoder: Final = msgspec.json.Encoder()
_JOURNAL_FAILED: Final = b'{"ok":false,"detail":"journal failed"}'
_MARKET_TYPES: Final = {"perp": MarketType.Perp, "spot": MarketType.Spot}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs; the ``keepers node`` command builds one from its flags.

    ``port`` 0 picks a free port (:attr:`Node.port` says which). ``broker_url`` ``None``: no
    bus (nothing is published). The genesis fields must stay the same for the life of a
    journal (it records a hash of genesis and refuses another). ``verify_workers`` 0: one per
    core but one (at least one); ``verifier``: whether they are processes (the default: they
    check signatures beside the loop, see :mod:`keepers.verify_pool`) or threads (which take
    turns with a busy loop for the GIL). ``max_publish_backlog``: bus messages held while the broker
    is away before the oldest are dropped (see :mod:`keepers.node_publisher`).
    """

    journal: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    broker_url: str | None = None
    cluster: str = "local"
    slot_ms: int = DEFAULT_SLOT_MS
    genesis_prices: Mapping[str, int] = field(default_factory=dict)
    genesis_slot: int = 0
    genesis_ts: int = DEFAULT_GENESIS_TS
    oracle_authority: bytes = bytes(32)
    admin: bytes = bytes(32)
    snapshot_every: int = 10_000
    checkpoint_every: int = 1_000
    transport: str | None = None
    max_queue: int = 10_000
    verify_workers: int = 0
    verifier: Literal["process", "thread"] = "process"
    max_publish_backlog: int = 100_000
    journal_writer: WriterMode = "thread"

    def genesis(self) -> ProgramState:
        return build_genesis(self)


def build_genesis(config: NodeConfig) -> ProgramState:
    """The default markets at the configured prices, slot and time, with the configured admin
    and oracle authority: deterministic, so a restart can check the journal was made from it."""
    return default_program_state(
        now=config.genesis_ts,
        slot=config.genesis_slot,
        prices=dict(config.genesis_prices) or None,
        state=State(admin=config.admin, oracle_authority=config.oracle_authority),
    )


class NodeFailedError(RuntimeError):
    """The node stopped serving because its journal failed; restart it to recover."""


def restore_market_seqs(
    ledger: Ledger, genesis: ProgramState, builder: EventBuilder, *, genesis_next_seq: int = 1
) -> int:
    """Count every journaled order event into ``builder`` by re-executing the journal from
    ``genesis``; check the result hashes like the ledger's restored state. Returns the number
    of entries re-executed; :class:`~keepers.journal.JournalError` on any disagreement."""
    program = Program(genesis, next_seq=genesis_next_seq)
    count = 0
    for entry in ledger.journal.entries():
        result = program.execute_bytes(entry.tx, Clock(entry.slot, entry.unix_timestamp))
        if isinstance(result, Rejected):
            raise JournalError(
                f"journal entry {entry.index} rejected on re-execution: {result.code.name}"
            )
        builder.observe(result)
        count += 1
    got = state_hash(program.state, program.next_seq)
    if got != ledger.restored.state_hash:
        raise JournalError(
            f"re-executing the journal gives state hash {got}, "
            f"the ledger restored {ledger.restored.state_hash}"
        )
    return count


class _Submission:
    """One transaction on its way through the node (see the module docstring)."""

    __slots__ = ("answered", "arrived", "future", "raw", "simulate", "tx", "verified")

    def __init__(self, raw: bytes, tx: Transaction, simulate: bool, arrived: float) -> None:
        self.raw = raw
        self.tx = tx
        self.simulate = simulate
        self.arrived = arrived
        self.verified: VerifiedTransaction | None = None
        self.answered = False
        # the waiter may give up (its future cancelled): the transaction still goes through
        self.future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()


class _BatchResult(msgspec.Struct, frozen=True):
    """One transaction's answer in a ``/v1/txs`` response: ``/v1/tx``'s status and body."""

    status: int
    answer: msgspec.Raw


class _BatchAnswer(msgspec.Struct, frozen=True):
    results: list[_BatchResult]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the node answers a transaction with: the HTTP status and the JSON body."""

    status: int
    body: bytes


def _rejected_body(rejected: Rejected) -> bytes:
    return _encoder.encode(
        {
            "ok": False,
            "code": int(rejected.code),
            "code_name": rejected.code.name,
            "detail": rejected.detail,
            "field": rejected.field,
        }
    )


def _error(status: int, detail: str) -> web.Response:
    return web.Response(
        status=status,
        body=_encoder.encode({"ok": False, "detail": detail}),
        content_type="application/json",
    )


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


class Node:
    """A running node. ``async with Node(config) as node:`` starts everything and stops it on
    exit. ``manual_clock=True`` leaves the slot clock to the caller (``node.clock.advance()``):
    the node is not ready until the first advance. ``bus``: publish on this (started) client
    instead of connecting to ``config.broker_url`` (a one-process run over an in-process
    broker); the caller keeps owning it."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        manual_clock: bool = False,
        metrics: NodeMetrics | None = None,
        bus: BusClient | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self._manual_clock = manual_clock
        self._ledger: Ledger | None = None
        self._clock: SlotClock | None = None
        self._events: EventBuilder | None = None
        self._bus: BusClient | None = bus
        self._owns_bus = bus is None
        self._publisher: Publisher | None = None
        self._users: UsersStream | None = None
        self._verifier: Verifier[_Submission] | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._queue: deque[_Submission] = deque()
        # executed and journaled, waiting to be durable: (journal index, submission, its
        # result, its messages), in journal order; answered by _on_commit
        self._unacked: deque[tuple[int, _Submission, Executed, Built]] = deque()
        self._queue_wake = asyncio.Event()
        self._admitted = 0  # submissions admitted and not yet answered
        self._drained = asyncio.Event()  # set while _admitted is 0
        self._drained.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._durable_index = 0
        self._durable_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._started = False
        self._stopping = False
        self._sequencer_stopped = False
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.restored_hash: str | None = None
        self.final_hash: str | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("node already started")
        self._started = True
        config = self.config
        genesis = config.genesis()
        ledger_config = LedgerConfig(
            snapshot_every=config.snapshot_every,
            checkpoint_every=config.checkpoint_every,
            writer=config.journal_writer,
        )
        # synchronous on purpose: the journal's reading connection belongs to this thread
        ledger = Ledger.open(
            config.journal, genesis, genesis_slot=config.genesis_slot, config=ledger_config
        )
        self._ledger = ledger
        try:
            await self._start_parts(ledger)
        except BaseException:
            await self.stop()
            raise

    async def _start_parts(self, ledger: Ledger) -> None:
        config = self.config
        events = EventBuilder(config.cluster)
        # a fresh genesis: re-execution mutates the state it starts from
        replayed = restore_market_seqs(ledger, config.genesis(), events)
        self._events = events
        ledger.add_durable_listener(self._on_commit)
        self.metrics.restored_entries.set(replayed)
        self.restored_hash = ledger.restored.state_hash
        self._durable_index = ledger.last_index
        log.info(
            "node.restored",
            journal=str(config.journal),
            entries=ledger.last_index,
            replayed_from_genesis=replayed,
            state_hash=self.restored_hash,
            market_seqs={
                f"{mt.name.lower()}/{mi}": n for (mt, mi), n in sorted(events.market_seqs.items())
            },
        )
        last = ledger.journal.entry(ledger.last_index) if ledger.last_index else None
        anchor = (
            Clock(last.slot, last.unix_timestamp)
            if last is not None
            else Clock(config.genesis_slot, config.genesis_ts)
        )
        self._clock = SlotClock(anchor, slot_ms=config.slot_ms)
        self._clock.add_listener(self._on_slot)

        workers = config.verify_workers or max(1, (os.cpu_count() or 2) - 1)
        verifier: Verifier[_Submission]
        if config.verifier == "process":
            verifier = ProcessVerifyPool(self._on_verified, workers=workers)
        else:
            verifier = VerifyPool(self._on_verified, workers=workers)
        self._verifier = verifier
        await verifier.start()

        if self._bus is None and config.broker_url is not None:
            transport = make_transport(
                config.transport,
                config.broker_url,
                f"keepers-node-{config.cluster}-{os.getpid()}-{id(self) & 0xFFFF:04x}",
            )
            self._bus = BusClient(transport)
            await self._bus.start()  # connects in the background; publishing waits for it
        if self._bus is not None:
            self._publisher = Publisher(
                self._bus,
                max_pending=config.max_publish_backlog,
                observe_lag=self.metrics.publish_lag.observe,
            )
            self._spawn(self._publisher.run(), "node-publisher")
        self._users = UsersStream(lambda: ledger.state.users, config.cluster, slot=self._clock.slot)
        if self._publisher is not None:
            self._clock.add_listener(self._users.on_slot)
            users_run = self._users.run(
                self._publisher,
                last_index=lambda: ledger.last_index,
                wait_durable=self.wait_durable,
            )
            self._spawn(users_run, "node-users")

        self.metrics.watch(
            queue_depth=lambda: self._admitted,
            slot=lambda: self.clock.slot,
            last_index=lambda: ledger.last_index,
            journal=lambda: ledger.metrics,
            publisher=lambda: self._publisher.stats if self._publisher is not None else None,
        )
        self._spawn(self._sequence(), "node-sequencer")
        await self._serve_http()
        if not self._manual_clock:
            self._spawn(self._clock.run(), "node-slot-clock")
        log.info(
            "node.started",
            host=config.host,
            port=self.port,
            cluster=config.cluster,
            slot=self.clock.slot,
            slot_ms=config.slot_ms,
            broker=config.broker_url,
            verify_workers=workers,
            verifier=config.verifier,
        )

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None:
            log.error("node.task_failed", task=task.get_name(), error=repr(exc))
            self._fail(exc)

    async def _serve_http(self) -> None:
        # the largest body any route takes; /v1/tx and /v1/simulate check their own smaller one
        app = web.Application(client_max_size=MAX_BATCH_BYTES)
        app.add_routes(
            [
                web.post("/v1/tx", self._post_tx),
                web.post("/v1/txs", self._post_txs),
                web.post("/v1/simulate", self._post_simulate),
                web.get("/v1/slot", self._get_slot),
                web.get("/v1/oracles/{oracle_id}", self._get_oracle),
                web.get("/v1/users", self._get_users),
                web.get("/v1/users/{authority}/{sub_account_id}", self._get_user),
                web.get("/v1/user-stats/{authority}", self._get_user_stats),
                web.get("/v1/markets", self._get_markets),
                web.get("/v1/markets/perp/{index}", self._get_perp_market),
                web.get("/v1/markets/spot/{index}", self._get_spot_market),
                web.get("/v1/orders/snapshot", self._get_orders_snapshot),
                web.get("/health", self._get_health),
                web.get("/metrics", self._get_metrics),
            ]
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        server = site._server  # the bound port when 0 was asked for; aiohttp has no accessor
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self.config.port

    async def stop(self) -> None:
        """Drain what was admitted (bounded), stop serving, flush the bus (bounded), close the
        ledger (final snapshot) and log the final state hash. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._drained.wait()
        await _cancel([t for t in self._tasks if t.get_name() != "node-publisher"])
        self._sequencer_stopped = True
        self._refuse_remaining("the node is shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        if self._publisher is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._publisher.wait_idle()
        await _cancel(self._tasks)
        if self._bus is not None and self._owns_bus:
            await self._bus.close()
        if self._verifier is not None:
            await self._verifier.close()
        if self._ledger is not None:
            self.final_hash = await self._ledger.close()
            log.info(
                "node.stopped",
                journal=str(self.config.journal),
                entries=self._ledger.last_index,
                state_hash=self.final_hash,
                journal_failed=self._failure is not None,
            )

    def _refuse_remaining(self, detail: str) -> None:
        body = _encoder.encode({"ok": False, "detail": detail})
        while self._queue:
            self._answer(self._queue.popleft(), Answer(503, body))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("node.failed", error=repr(exc))
            self._failed.set()
        # the ledger refuses everything from now on; answer what waits instead of hanging
        self._refuse_remaining("the node's journal failed")

    async def wait_failed(self) -> BaseException:
        """Until the node fails (its journal, or one of its tasks); returns why."""
        await self._failed.wait()
        return self._failure if self._failure is not None else RuntimeError("failed")

    # --- state ----------------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("node not started")
        return self._ledger

    @property
    def clock(self) -> SlotClock:
        if self._clock is None:
            raise RuntimeError("node not started")
        return self._clock

    @property
    def events(self) -> EventBuilder:
        if self._events is None:
            raise RuntimeError("node not started")
        return self._events

    @property
    def publisher(self) -> Publisher | None:
        return self._publisher

    @property
    def bus(self) -> BusClient | None:
        return self._bus

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("node not serving")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ready(self) -> bool:
        return (
            self._runner is not None
            and self._clock is not None
            and self._clock.ticks > 0
            and not self._stopping
            and self._failure is None
        )

    @property
    def queue_depth(self) -> int:
        return self._admitted

    # --- the slot ---------------------------------------------------------------------------
    def _on_slot(self, clock: Clock) -> None:
        if self._publisher is not None and self._events is not None:
            self._publisher.publish_retained(self._events.slot_message(clock))

    # --- the pipeline ---------------------------------------------------------------------
    def submit(self, raw: bytes, *, simulate: bool = False) -> asyncio.Future[Answer] | Answer:
        """Admit ``raw``: an immediate answer (not ready, queue full, malformed), or a future
        that completes with the answer. What the HTTP handlers and in-process callers use."""
        if not self.ready:
            detail = "the node failed" if self._failure is not None else "the node is not ready"
            return Answer(503, _encoder.encode({"ok": False, "detail": detail}))
        if self._admitted >= self.config.max_queue:
            self.metrics.backpressure.inc()
            return Answer(503, _encoder.encode({"ok": False, "detail": "the node is busy"}))
        arrived = time.monotonic()
        try:
            tx = parse_transaction(raw)
        except ProtocolError as exc:
            rejected = exc.to_rejected()
            self._count_rejection(rejected, simulate)
            return Answer(422, _rejected_body(rejected))
        verifier = self._verifier
        if verifier is None:
            raise RuntimeError("node not started")
        submission = _Submission(raw, tx, simulate, arrived)
        self._admitted += 1
        self._drained.clear()
        verifier.submit(tx, submission)
        return submission.future

    def _on_verified(self, submission: _Submission, outcome: Outcome) -> None:
        if isinstance(outcome, BaseException):
            self._internal_error(submission, outcome)
        elif isinstance(outcome, Rejected):
            self._count_rejection(outcome, submission.simulate)
            self._answer(submission, Answer(422, _rejected_body(outcome)))
        elif submission.simulate:
            self._simulate(submission, outcome)
        elif self._sequencer_stopped or self._failure is not None:
            detail = "the node failed" if self._failure is not None else "shutting down"
            self._answer(submission, Answer(503, _encoder.encode({"ok": False, "detail": detail})))
        else:
            submission.verified = outcome
            self._queue.append(submission)
            self._queue_wake.set()

    def _simulate(self, submission: _Submission, verified: VerifiedTransaction) -> None:
        try:
            result = self.ledger.simulate(submission.raw, self.clock.now, verified=verified)
        except Exception as exc:  # a bug in an instruction: state is untouched (copy-on-write)
            self._internal_error(submission, exc)
            return
        if isinstance(result, Rejected):
            self.metrics.simulations.labels(outcome="rejected").inc()
            self._answer(submission, Answer(422, _rejected_body(result)))
            return
        self.metrics.simulations.labels(outcome="ok").inc()
        built = Built(records=EventBuilder.record_payloads(result))
        self._answer(submission, Answer(200, self._accepted_body(result, built)))

    async def _sequence(self) -> None:
        """The single sequencer: executes verified transactions one at a time, in order."""
        ledger = self.ledger
        queue = self._queue
        wake = self._queue_wake
        clock = self.clock
        events = self.events
        publishing = self._publisher is not None
        unacked = self._unacked
        execute_seconds = self.metrics.execute_seconds
        journal = ledger.journal
        executed = 0
        while True:
            if not queue:
                journal.flush()  # the burst is over: commit it now, not a loop turn later
                wake.clear()
                await wake.wait()
                continue
            if not ledger.try_reserve():
                await ledger.reserve()  # the journal's buffer is full: wait for a commit
                if not queue:  # stopped meanwhile: nothing left to execute (see stop())
                    ledger.journal.release_reservation()
                    continue
            submission = queue.popleft()
            started = time.perf_counter()
            try:
                pending = ledger.execute_reserved(
                    submission.raw, clock.now, verified=submission.verified
                )
            except JournalError as exc:
                self._answer(submission, Answer(503, _JOURNAL_FAILED))
                self._fail(exc)
                raise
            except Exception as exc:  # a bug in an instruction: state is untouched
                self._internal_error(submission, exc)
                continue
            if isinstance(pending, Rejected):
                self._count_rejection(pending, simulate=False)
                self._answer(submission, Answer(422, _rejected_body(pending)))
            else:
                built = events.build(pending.executed, publish=publishing)
                unacked.append((pending.index, submission, pending.executed, built))
            execute_seconds.observe(time.perf_counter() - started)
            executed += 1
            if executed % SEQUENCER_SLICE == 0:
                await asyncio.sleep(0)

    def _on_commit(self, durable_index: int, failure: BaseException | None) -> None:
        """The journal committed every entry up to ``durable_index`` (or failed). Answers the
        transactions waiting for that and queues their bus messages, in journal order: one
        call per group commit, the entries in the order they were executed."""
        unacked = self._unacked
        if failure is not None:
            self._fail(failure)
            while unacked:
                self._answer(unacked.popleft()[1], Answer(503, _JOURNAL_FAILED))
            return
        publisher = self._publisher
        accepted = 0
        while unacked and unacked[0][0] <= durable_index:
            _, submission, executed, built = unacked.popleft()
            if publisher is not None and built.outgoing:
                publisher.publish(built.outgoing)
            self._answer(submission, Answer(200, self._accepted_body(executed, built)))
            accepted += 1
        if accepted:
            self.metrics.tx_accepted.inc(accepted)
        self._durable_index = max(self._durable_index, durable_index)
        if self._durable_waiters:
            self._wake_durable_waiters()

    @staticmethod
    def _accepted_body(executed: Executed, built: Built) -> bytes:
        return _encoder.encode(
            {
                "ok": True,
                "signature": executed.signature.hex(),
                "slot": executed.slot,
                "records": built.records,
            }
        )

    def _answer(self, submission: _Submission, answer: Answer) -> None:
        if submission.answered:
            return
        submission.answered = True
        self._admitted -= 1
        if not self._admitted:
            self._drained.set()
        if not submission.future.done():
            submission.future.set_result(answer)
        self.metrics.tx_seconds.observe(time.monotonic() - submission.arrived)

    def _count_rejection(self, rejected: Rejected, simulate: bool) -> None:
        if simulate:
            self.metrics.simulations.labels(outcome="rejected").inc()
        else:
            self.metrics.tx_rejected.labels(code=rejected.code.name).inc()

    def _internal_error(self, submission: _Submission, exc: BaseException) -> None:
        self.metrics.internal_errors.inc()
        log.error(
            "node.internal_error",
            signature=submission.tx.signature.hex(),
            error=repr(exc),
            exc_info=exc,
        )
        body = _encoder.encode({"ok": False, "detail": f"internal error: {type(exc).__name__}"})
        self._answer(submission, Answer(500, body))

    async def wait_durable(self, index: int) -> None:
        """Until journal entry ``index`` (and every one before it) is acknowledged durable."""
        if self._durable_index >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((index, future))
        await future

    def _wake_durable_waiters(self) -> None:
        durable = self._durable_index
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for index, future in self._durable_waiters:
            if index <= durable:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((index, future))
        self._durable_waiters = keep

    # --- HTTP: transactions -----------------------------------------------------------------
    async def _post_tx(self, request: web.Request) -> web.Response:
        return await self._handle_submit(request, simulate=False)

    async def _post_simulate(self, request: web.Request) -> web.Response:
        return await self._handle_submit(request, simulate=True)

    async def _handle_submit(self, request: web.Request, *, simulate: bool) -> web.Response:
        try:
            raw = await request.read()  # bounded by the app's (batch) limit, then by ours
        except web.HTTPRequestEntityTooLarge:
            raw = None
        if raw is None or len(raw) > MAX_BODY_BYTES:
            rejected = Rejected(
                ErrorCode.MalformedTransaction,
                f"body larger than {MAX_BODY_BYTES} bytes",
                "transaction",
            )
            self._count_rejection(rejected, simulate)
            return _json(_rejected_body(rejected), 422)
        outcome = self.submit(raw, simulate=simulate)
        answer = outcome if isinstance(outcome, Answer) else await outcome
        return _json(answer.body, answer.status)

    async def _post_txs(self, request: web.Request) -> web.Response:
        """``POST /v1/txs``: a batch of signed transactions, ``application/octet-stream``
        framed as :mod:`keepers.tx_batch` says (``length:u32 little-endian | transaction``,
        repeated; at most ``MAX_BATCH_TXS`` of them and ``MAX_BATCH_BYTES`` in all).

        Each transaction goes the way one sent alone to ``/v1/tx`` goes (admitted, verified,
        sequenced, journaled), in the batch's order (other requests' may come between them).
        Answered once every accepted one is durable, with ``{"results": [{"status": s,
        "answer": {...}}, ...]}``: one item per transaction, in order, each the status and
        body ``/v1/tx`` would have answered it with (200, 422, 503 when the node is busy).
        A body that does not split is refused whole, nothing executed, counted as one
        ``MalformedTransaction`` rejection: 413 past a limit, 400 for broken framing, the
        ``detail`` naming the frame and the limit. 503 while the node is not ready.
        """
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            detail = f"batch body larger than the limit of {MAX_BATCH_BYTES} bytes"
            return self._refuse_batch(BatchError(413, detail))
        if not self.ready:
            detail = "the node failed" if self._failure is not None else "the node is not ready"
            return _error(503, detail)
        try:
            raws = split_batch(body)
        except BatchError as exc:
            return self._refuse_batch(exc)
        outcomes = [self.submit(raw) for raw in raws]
        results: list[_BatchResult] = []
        for outcome in outcomes:
            answer = outcome if isinstance(outcome, Answer) else await outcome
            results.append(_BatchResult(status=answer.status, answer=msgspec.Raw(answer.body)))
        return _json(_encoder.encode(_BatchAnswer(results=results)))

    def _refuse_batch(self, error: BatchError) -> web.Response:
        self._count_rejection(
            Rejected(ErrorCode.MalformedTransaction, error.detail, "batch"), simulate=False
        )
        return _error(error.status, error.detail)

    # --- HTTP: reads ------------------------------------------------------------------------
    def _not_ready(self) -> web.Response | None:
        if self._ledger is None or self._clock is None:
            return _error(503, "the node is not ready")
        return None

    async def _get_slot(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        now = self.clock.now
        return _json(_encoder.encode({"slot": now.slot, "ts": now.unix_timestamp}))

    async def _get_oracle(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        oracle_id = request.match_info["oracle_id"]
        oracle = self.ledger.state.oracles.get(oracle_id)
        if oracle is None:
            return _error(404, f"no oracle {oracle_id!r}")
        return _json(_encoder.encode(to_builtins(oracle)))

    async def _get_user(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        authority = _pubkey(request.match_info["authority"])
        sub_account_id = _index(request.match_info["sub_account_id"])
        if authority is None or sub_account_id is None:
            return _error(400, "expected /v1/users/{64 hex chars}/{sub-account id}")
        user = self.ledger.state.users.get((authority, sub_account_id))
        if user is None:
            return _error(404, f"no user {authority.hex()}/{sub_account_id}")
        return _json(_encoder.encode(to_builtins(user)))

    async def _get_users(self, request: web.Request) -> web.Response:
        users = self._users
        if (refused := self._not_ready()) is not None or users is None:
            return refused or _error(503, "the node is not ready")
        parsed = parse_page_query(request.query)
        if isinstance(parsed, str):
            return _error(400, parsed)
        # one synchronous read, answered once durable (as the order snapshot; see node_users)
        body = users.page(*parsed, slot=self.clock.slot)
        try:
            async with asyncio.timeout(SNAPSHOT_DURABLE_TIMEOUT):
                await self.wait_durable(self.ledger.last_index)
        except TimeoutError:
            return _error(503, "the journal is not keeping up")
        return _json(body)

    async def _get_user_stats(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        authority = _pubkey(request.match_info["authority"])
        if authority is None:
            return _error(400, "expected /v1/user-stats/{64 hex chars}")
        stats = self.ledger.state.user_stats.get(authority)
        if stats is None:
            return _error(404, f"no user stats for {authority.hex()}")
        return _json(_encoder.encode(to_builtins(stats)))

    async def _get_markets(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        state = self.ledger.state
        body = {"perp": sorted(state.perp_markets), "spot": sorted(state.spot_markets)}
        return _json(_encoder.encode(body))

    async def _get_perp_market(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        index = _index(request.match_info["index"])
        market = self.ledger.state.perp_markets.get(index) if index is not None else None
        if market is None:
            return _error(404, f"no perp market {request.match_info['index']!r}")
        return _json(_encoder.encode(to_builtins(market)))

    async def _get_spot_market(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        index = _index(request.match_info["index"])
        market = self.ledger.state.spot_markets.get(index) if index is not None else None
        if market is None:
            return _error(404, f"no spot market {request.match_info['index']!r}")
        return _json(_encoder.encode(to_builtins(market)))

    async def _get_orders_snapshot(self, request: web.Request) -> web.Response:
        if (refused := self._not_ready()) is not None:
            return refused
        query = request.query
        market_type = _MARKET_TYPES.get(query.get("market_type", ""))
        market_index = _index(query.get("market_index", ""))
        if market_type is None or market_index is None:
            return _error(400, "expected ?market_type=perp|spot&market_index=N")
        # One synchronous cut: the state, the market's event counter and the last executed
        # entry are read together, with nothing in between that could execute a transaction.
        body, executed_index = self.orders_snapshot(market_type, market_index)
        # ... answered only once that cut is durable, so it never shows a transaction a crash
        # could still take back (whose event numbers a restart would hand out again).
        try:
            async with asyncio.timeout(SNAPSHOT_DURABLE_TIMEOUT):
                await self.wait_durable(executed_index)
        except TimeoutError:
            return _error(503, "the journal is not keeping up")
        if self._failure is not None:
            return _error(503, "the node's journal failed")
        return _json(body)

    def orders_snapshot(self, market_type: MarketType, market_index: int) -> tuple[bytes, int]:
        """The order snapshot's JSON and the journal index it includes (see the contract)."""
        ledger = self.ledger
        now = self.clock.now
        market_seq = self.events.market_seq(market_type, market_index)
        seq = ledger.next_seq - 1
        orders = []
        for (authority, sub_account_id), user in ledger.state.users.items():
            for order in user.orders:
                if (
                    order.market_index == market_index
                    and order.market_type == market_type
                    and order.status == OrderStatus.Open
                ):
                    orders.append(
                        OrderEvent.from_order(
                            order,
                            seq=seq,
                            market_seq=market_seq,
                            slot=now.slot,
                            ts=now.unix_timestamp,
                            action=OrderAction.PLACE,
                            authority=authority,
                            sub_account_id=sub_account_id,
                        )
                    )
        body = _encoder.encode(
            {
                "market_type": market_type.name.lower(),
                "market_index": market_index,
                "market_seq": market_seq,
                "slot": now.slot,
                "orders": orders,
            }
        )
        return body, ledger.last_index

    # --- HTTP: operations ---------------------------------------------------------------------
    async def _get_health(self, request: web.Request) -> web.Response:
        if self._failure is not None:
            status = "failed"
        elif self._stopping:
            status = "stopping"
        elif not self.ready:
            status = "starting"
        else:
            status = "ok"
        body: dict[str, Any] = {"status": status}
        if self._clock is not None and self._ledger is not None:
            bus = self._bus
            body.update(
                slot=self._clock.slot,
                last_index=self._ledger.last_index,
                queue_depth=self._admitted,
                bus="off" if bus is None else ("connected" if bus.is_connected else "down"),
            )
        return _json(_encoder.encode(body), 200 if status == "ok" else 503)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel and await ``tasks``; a task that already failed was logged when it did."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _pubkey(text: str) -> bytes | None:
    if len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _index(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    return int(text)


# --- entry points --------------------------------------------------------------------------
async def run_node(config: NodeConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run a node until cancelled (a clean stop: final snapshot, state hash logged). Sets
    ``ready`` once it serves (HTTP up, first slot ticked). Raises :class:`NodeFailedError` if
    the node fails (its journal), after stopping it."""
    async with Node(config) as node:
        if ready is not None:
            await node.clock.wait_for_slot(node.clock.slot + 1)
            ready.set()
        failure = await node.wait_failed()
    raise NodeFailedError(f"the node failed: {failure!r}") from failure


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keepers.node",
        description="Run the node: the single sequencer, its HTTP API and its bus publisher.",
    )
    parser.add_argument("--journal", type=Path, required=True, help="journal file (SQLite)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: a free port")
    parser.add_argument("--broker", default=None, help="mqtt://host:port; omit for no bus")
    parser.add_argument("--transport", default=None, help="MQTT client: gmqtt or aiomqtt")
    parser.add_argument("--cluster", default="local")
    parser.add_argument("--slot-ms", type=int, default=DEFAULT_SLOT_MS)
    parser.add_argument(
        "--oracle-authority", default="00" * 32, help="hex public key allowed to update oracles"
    )
    parser.add_argument("--admin", default="00" * 32, help="hex public key of the admin")
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="ORACLE=PRICE",
        help="genesis oracle price in PRICE_PRECISION units, e.g. SOL/USD=150000000; repeatable",
    )
    parser.add_argument("--genesis-slot", type=int, default=0)
    parser.add_argument("--genesis-ts", type=int, default=DEFAULT_GENESIS_TS)
    parser.add_argument("--snapshot-every", type=int, default=10_000)
    parser.add_argument("--checkpoint-every", type=int, default=1_000)
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--verify-workers", type=int, default=0, help="0: one per core but one")
    parser.add_argument(
        "--verifier",
        choices=("process", "thread"),
        default="process",
        help="verify signatures in worker processes (default) or threads",
    )
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def _config_from_args(args: argparse.Namespace) -> NodeConfig:
    prices: dict[str, int] = {}
    for item in args.price:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.isdigit():
            raise SystemExit(f"--price must be ORACLE=INTEGER_PRICE, got {item!r}")
        prices[name] = int(value)
    try:
        oracle_authority = bytes.fromhex(args.oracle_authority)
        admin = bytes.fromhex(args.admin)
    except ValueError as exc:
        raise SystemExit(f"--oracle-authority and --admin must be hex: {exc}") from None
    if len(oracle_authority) != 32 or len(admin) != 32:
        raise SystemExit("--oracle-authority and --admin must be 32-byte public keys (64 hex)")
    return NodeConfig(
        journal=args.journal,
        host=args.host,
        port=args.port,
        broker_url=args.broker,
        cluster=args.cluster,
        slot_ms=args.slot_ms,
        genesis_prices=prices,
        genesis_slot=args.genesis_slot,
        genesis_ts=args.genesis_ts,
        oracle_authority=oracle_authority,
        admin=admin,
        snapshot_every=args.snapshot_every,
        checkpoint_every=args.checkpoint_every,
        transport=args.transport,
        max_queue=args.max_queue,
        verify_workers=args.verify_workers,
        verifier=args.verifier,
    )


async def _main_async(config: NodeConfig) -> None:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("must run inside a task")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_node(config)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m keepers.node``: run until SIGINT/SIGTERM; logs are JSON lines on stderr."""
    args = _parse_args(argv)
    configure_logging(args.log_level, json=True)
    config = _config_from_args(args)
    try:
        asyncio.run(_main_async(config))
    except NodeFailedError as exc:
        log.error("node.exit", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
