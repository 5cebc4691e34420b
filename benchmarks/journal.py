"""Node throughput with journaling on: accepted transactions per second through
:meth:`keepers.ledger.Ledger.submit`, beside the bare ed25519 verify rate of the same run.

``python -m benchmarks.journal [--txs N] [--users U] [--submitters 1,16,64,256]
[--offered-rate R] [--fsync-ms F] [--repeat K] [--dir D]``

Every transaction is a real signed ``Deposit`` (the cheapest accepted transaction, so what the
journal adds is most visible). Rows:

* ``verify``: PyNaCl ``VerifyKey.verify`` over the same signed messages, one core: the ceiling
  a node that verifies every signature on the sequencer can never pass;
* ``execute``: ``Program.execute_bytes`` alone (parse, verify, execute, commit in memory);
* ``<writer> xC``: ``C`` concurrent submitters each awaiting ``Ledger.submit`` (execute, then
  group-commit append, acknowledged once durable): a closed loop;
* ``<writer> @R/s``: an open loop: transactions arrive at ``R`` per second whatever the
  acknowledgements do, as HTTP requests would; ``loop stall`` is the longest the event loop
  went without running a 0.5 ms ticker (what an HTTP server or slot clock on that loop feels).

Both journal writers are measured: ``thread`` (commits on a dedicated thread) and ``inline``
(commits on the event loop thread). ``entries/fsync`` is the mean group size (one SQLite commit
= one WAL fsync, ``synchronous=FULL``); latency is from arrival to acknowledgement.
``--fsync-ms`` adds that many milliseconds to every commit (a ``time.sleep`` beside the real
commit, which like ``fsync`` blocks its thread without holding the GIL) to show a disk slower
than the one the benchmark runs on; the table header says when it is on. Each row is the best
of ``--repeat`` runs (other load on the machine only ever slows a run down).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

import keepers.journal
from keepers.journal import WriterMode
from keepers.ledger import Ledger, LedgerConfig
from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.instructions import Deposit, InitializeUser
from protocol.keys import Keypair
from protocol.markets import default_program_state
from protocol.program import Executed, Program
from protocol.transaction import Transaction, parse_transaction

START_TS = 1_700_000_000
START_SLOT = 1_000
USDC = 0


@dataclass(frozen=True, slots=True)
class Workload:
    setup: list[bytes]  # sign-ups, executed before timing
    txs: list[bytes]  # timed deposits
    clock: Clock


def genesis() -> ProgramState:
    return default_program_state(now=START_TS, slot=START_SLOT)


def build(n_users: int, n_txs: int) -> Workload:
    clock = Clock(START_SLOT, START_TS)
    users = [Keypair.from_seed(i.to_bytes(4, "little") * 8) for i in range(n_users)]
    setup = [
        Transaction.sign(
            [InitializeUser(kp.pubkey, 0), Deposit(kp.pubkey, 0, USDC, 10**12)], clock.slot, [kp]
        ).to_bytes()
        for kp in users
    ]
    txs = [
        Transaction.sign(
            [Deposit(users[i % n_users].pubkey, 0, USDC, 1 + i)], clock.slot, [users[i % n_users]]
        ).to_bytes()
        for i in range(n_txs)
    ]
    return Workload(setup, txs, clock)


def verify_rate(txs: Sequence[bytes]) -> float:
    parsed = [parse_transaction(raw) for raw in txs]
    items = [(VerifyKey(tx.signers[0]), tx.message(), tx.signatures[0]) for tx in parsed]
    started = time.perf_counter()
    for key, message, signature in items:
        key.verify(message, signature)
    return len(items) / (time.perf_counter() - started)


def execute_rate(work: Workload) -> float:
    program = Program(genesis())
    for raw in work.setup:
        assert isinstance(program.execute_bytes(raw, work.clock), Executed)
    started = time.perf_counter()
    for raw in work.txs:
        assert isinstance(program.execute_bytes(raw, work.clock), Executed)
    return len(work.txs) / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class LedgerRun:
    rate: float
    entries_per_commit: float
    p50_ms: float
    p99_ms: float
    stall_ms: float


async def _open_ledger(work: Workload, path: Path, writer: WriterMode) -> Ledger:
    config = LedgerConfig(snapshot_every=0, checkpoint_every=0, writer=writer)
    ledger = Ledger.open(path, genesis(), config=config)
    for raw in work.setup:
        assert isinstance(await ledger.submit(raw, work.clock), Executed)
    return ledger


class _StallMeter:
    """The longest gap between runs of a ticker that asks to run every ``period`` seconds."""

    def __init__(self, period: float = 0.0005) -> None:
        self.period = period
        self.worst = 0.0
        self.running = True

    async def run(self) -> None:
        while self.running:
            asked = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - asked - self.period)


async def _finish(
    ledger: Ledger,
    work: Workload,
    started: float,
    base: tuple[int, int],
    latencies: list[float],
    stall: float,
) -> LedgerRun:
    elapsed = time.perf_counter() - started
    commits = ledger.metrics.commits - base[0]
    entries = ledger.metrics.entries - base[1]
    await ledger.close()
    cuts = statistics.quantiles(latencies, n=100)
    return LedgerRun(
        rate=len(work.txs) / elapsed,
        entries_per_commit=entries / commits,
        p50_ms=cuts[49] * 1e3,
        p99_ms=cuts[98] * 1e3,
        stall_ms=stall * 1e3,
    )


async def closed_loop(work: Workload, path: Path, writer: WriterMode, submitters: int) -> LedgerRun:
    """``submitters`` tasks, each submitting its next transaction once the last is acked."""
    ledger = await _open_ledger(work, path, writer)
    queue = iter(work.txs)
    latencies: list[float] = []
    meter = _StallMeter()

    async def submitter() -> None:
        for raw in queue:  # a shared iterator: each transaction is taken by one submitter
            t0 = time.perf_counter()
            result = await ledger.submit(raw, work.clock)
            latencies.append(time.perf_counter() - t0)
            assert isinstance(result, Executed), result

    base = (ledger.metrics.commits, ledger.metrics.entries)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        ticker = group.create_task(meter.run(), name="stall-meter")
        async with asyncio.TaskGroup() as submitting:
            for i in range(submitters):
                submitting.create_task(submitter(), name=f"submitter-{i}")
        meter.running = False
        await ticker
    return await _finish(ledger, work, started, base, latencies, meter.worst)


async def open_loop(work: Workload, path: Path, writer: WriterMode, rate: int) -> LedgerRun:
    """Transaction ``i`` arrives at ``i / rate`` seconds, acknowledged or not; latency counts
    from its arrival time."""
    ledger = await _open_ledger(work, path, writer)
    latencies: list[float] = []
    meter = _StallMeter()

    async def one(raw: bytes, arrival: float) -> None:
        result = await ledger.submit(raw, work.clock)
        latencies.append(time.perf_counter() - arrival)
        assert isinstance(result, Executed), result

    base = (ledger.metrics.commits, ledger.metrics.entries)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        ticker = group.create_task(meter.run(), name="stall-meter")
        async with asyncio.TaskGroup() as arrivals:
            sent = 0
            while sent < len(work.txs):
                due = min(len(work.txs), int((time.perf_counter() - started) * rate) + 1)
                for i in range(sent, due):
                    arrivals.create_task(one(work.txs[i], started + i / rate))
                sent = due
                await asyncio.sleep(0.0005)
        meter.running = False
        await ticker
    return await _finish(ledger, work, started, base, latencies, meter.worst)


def _slow_disk(extra_ms: float) -> None:
    """Add ``extra_ms`` to every journal commit (see the module docstring)."""
    original = keepers.journal._write_items

    def slower(*args: Any, **kwargs: Any) -> float:
        time.sleep(extra_ms / 1000)
        return original(*args, **kwargs) + extra_ms / 1000

    keepers.journal._write_items = slower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--submitters", default="1,16,64,256")
    parser.add_argument("--offered-rate", type=int, default=5_000, help="open-loop tx/s")
    parser.add_argument("--fsync-ms", type=float, default=0.0, help="simulated extra fsync ms")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; the best is shown")
    parser.add_argument("--dir", type=Path, default=None, help="where the journal files go")
    args = parser.parse_args()
    if args.fsync_ms:
        _slow_disk(args.fsync_ms)
    writers: tuple[WriterMode, ...] = ("thread", "inline")

    work = build(args.users, args.txs)
    verify = max(verify_rate(work.txs) for _ in range(args.repeat))
    execute = max(execute_rate(work) for _ in range(args.repeat))
    rows: list[tuple[str, float, LedgerRun | None]] = [
        ("verify (PyNaCl, 1 core)", verify, None),
        ("execute (Program, no journal)", execute, None),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        runs = 0

        def path() -> Path:
            nonlocal runs
            runs += 1
            return Path(tmp) / f"run-{runs}.db"

        for writer in writers:
            for c in (int(x) for x in args.submitters.split(",")):
                best = max(
                    (asyncio.run(closed_loop(work, path(), writer, c)) for _ in range(args.repeat)),
                    key=lambda r: r.rate,
                )
                rows.append((f"{writer} x{c}", best.rate, best))
        for writer in writers:
            best = min(
                (
                    asyncio.run(open_loop(work, path(), writer, args.offered_rate))
                    for _ in range(args.repeat)
                ),
                key=lambda r: r.p99_ms,
            )
            rows.append((f"{writer} @{args.offered_rate}/s", best.rate, best))

    disk = f", +{args.fsync_ms} ms simulated per fsync" if args.fsync_ms else ""
    print(f"{args.txs} signed deposits, {args.users} users{disk}")
    print(
        f"{'':<31}{'tx/s':>9}{'% verify':>10}{'entries/fsync':>15}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'loop stall ms':>15}"
    )
    print("-" * 98)
    for name, rate, run in rows:
        line = f"{name:<31}{rate:>9,.0f}{100 * rate / verify:>9.0f}%"
        if run is not None:
            line += (
                f"{run.entries_per_commit:>15.1f}{run.p50_ms:>9.2f}{run.p99_ms:>9.2f}"
                f"{run.stall_ms:>15.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
