"""Signature verification off the event loop, in batches, on worker processes or threads.

The node verifies every transaction's signatures before its sequencer sees it. Submissions
are grouped the way the journal groups commits: a batch goes to a worker as soon as one has
room, and everything that arrives meanwhile forms the next batch, so under load the hand-off
is paid once per batch, not once per transaction, and when idle a transaction waits for no
one. Results come back on the event loop through the ``on_verified`` callback in submission
order, across batches and workers too (a batch answered early waits for those sent before
it), so verified transactions reach the sequencer in the order they were admitted. The
outcome is a verdict (a :class:`~protocol.transaction.VerifiedTransaction` or a
:class:`~protocol.errors.Rejected`) or the exception that broke verification (a bug, or a
worker that died).

The idle path. A submission that finds the pool idle (nothing waiting or in flight, and no
other submission in the last :data:`IDLE_AFTER`) is verified on the loop, inside
:meth:`~ProcessVerifyPool.submit`: a hand-off to a worker is a round trip between two
processes (or threads) that were asleep, plus a turn of the loop, which on the project's
2-core machine took ~0.35-0.4 ms against ~0.1 ms for the check itself (measured through
``python -m benchmarks.intent_latency``, one intent every 20 ms). Under load submissions
come closer together than that, so batches still go to the workers and the loop keeps its
time for execution; the first of a burst after a quiet spell is the only one checked here.
``inline_when_idle=False`` turns the idle path off.

Two pools, one interface (:class:`Verifier`):

* :class:`ProcessVerifyPool` (the node's default): each worker is a process
  (:mod:`keepers.verify_worker`) fed batches of wire bytes over a pipe; it checks them with
  :func:`protocol.envelope.check_envelope` and the pool turns each acceptance into
  :func:`~protocol.transaction.verified_after_envelope_check` of the transaction the node
  parsed. Up to ``max_in_flight`` batches are queued per worker, so a worker never waits for
  the loop to read its last answer. A worker that dies fails its batches (the exception is
  their outcome) and is replaced.
* :class:`VerifyPool`: worker threads calling :func:`protocol.transaction.verify_transaction`.
  libsodium releases the GIL while it checks a signature, but each check must take the GIL
  back to go on, and while the loop thread is busy CPython hands it over only every switch
  interval (5 ms): a verifying thread beside a busy loop managed about 200 checks/s here, so
  verification and execution take turns instead of overlapping. Kept for in-process use
  where no child process is wanted; ``benchmarks/node_throughput.py`` shows the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec
import structlog

from keepers.verify_worker import HEADER
from protocol.envelope import check_envelope
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.transaction import (
    Transaction,
    VerifiedTransaction,
    verified_after_envelope_check,
    verify_transaction,
)

__all__ = [
    "Outcome",
    "ProcessVerifyPool",
    "Verdict",
    "Verifier",
    "VerifyPool",
    "WorkerExitedError",
    "verify_batch",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

STOP_TIMEOUT: Final = 5.0  # seconds a closing worker gets to finish its batches and exit
IDLE_AFTER: Final = 0.001  # seconds without a submission after which the pool counts as idle
# where `python -m keepers.verify_worker` finds this very package
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parent.parent)

Verdict = VerifiedTransaction | Rejected
Outcome = Verdict | BaseException  # an exception: verification itself broke (a bug)


class Verifier(Protocol[T_contra]):
    """What the node needs of a pool: start, submit ``(tx, tag)``, close."""

    async def start(self) -> None: ...

    def submit(self, tx: Transaction, tag: T_contra) -> None: ...

    async def close(self) -> None: ...


class WorkerExitedError(RuntimeError):
    """A verify worker process ended while batches were queued on it."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"verify worker exited with code {returncode}")
        self.returncode = returncode


def verify_batch(txs: Sequence[Transaction]) -> list[Verdict]:
    """Each transaction verified, or the rejection saying why not (runs on a worker)."""
    out: list[Verdict] = []
    for tx in txs:
        try:
            out.append(verify_transaction(tx))
        except ProtocolError as exc:
            out.append(exc.to_rejected())
    return out


def _verify_here(verify: Callable[[Transaction], Outcome], tx: Transaction) -> Outcome:
    """The outcome a worker would hand back for ``tx``, computed on this thread."""
    try:
        return verify(tx)
    except Exception as exc:  # verification itself broke: the outcome, as from a worker
        return exc


def _verify_in_thread_pool(tx: Transaction) -> Outcome:
    return verify_batch([tx])[0]


def _verify_as_a_worker(tx: Transaction) -> Outcome:
    """What :class:`ProcessVerifyPool` makes of a worker's verdict on ``tx``'s wire bytes."""
    try:
        check_envelope(tx.to_bytes())
    except ProtocolError as exc:
        return exc.to_rejected()
    return verified_after_envelope_check(tx)  # ValueError for a transaction never parsed


class _Quiet:
    """Whether each submission comes after a quiet spell (none in the last
    :data:`IDLE_AFTER` seconds): the half of the idle rule a pool cannot see in its queues."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = float("-inf")  # time.monotonic() of the last submission

    def after_spell(self) -> bool:
        now = time.monotonic()
        quiet = now - self._last >= IDLE_AFTER
        self._last = now
        return quiet


class _Batch:
    """Submissions sent to a worker together, and their outcomes once it answered."""

    __slots__ = ("items", "outcomes")

    def __init__(self, items: list[tuple[Transaction, Any]]) -> None:
        self.items = items  # (tx, tag); tags are the pool's
        self.outcomes: list[Outcome] | None = None


class _InOrder:
    """Hands out outcomes in the order batches were sent, whichever worker answers first: a
    batch answered early waits for those before it, so what is verified reaches the
    sequencer in the order it was admitted."""

    __slots__ = ("_on_verified", "_sent")

    def __init__(self, on_verified: Callable[[Any, Outcome], None]) -> None:
        self._on_verified = on_verified
        self._sent: deque[_Batch] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    def sent(self, items: list[tuple[Transaction, Any]]) -> _Batch:
        batch = _Batch(items)
        self._sent.append(batch)
        return batch

    def deliver(self) -> None:
        """Hand out the outcomes of the oldest batches, as far as they are all answered."""
        sent = self._sent
        on_verified = self._on_verified
        while sent and sent[0].outcomes is not None:
            batch = sent.popleft()
            for (_, tag), outcome in zip(batch.items, batch.outcomes, strict=True):
                on_verified(tag, outcome)


class VerifyPool(Generic[T]):
    """Verifies ``(tx, tag)`` submissions on threads; calls ``on_verified(tag, outcome)`` on
    the loop, in submission order.

    ``tag`` is the caller's handle for the submission (the node's pending request); the
    outcome is a verdict, or the exception that broke verification (never a protocol
    rejection, which is a verdict). Use from one event loop; :meth:`close` waits for the
    batches in flight.
    """

    def __init__(
        self,
        on_verified: Callable[[T, Outcome], None],
        *,
        workers: int = 1,
        max_batch: int = 512,
        inline_when_idle: bool = True,
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("workers and max_batch must be at least 1")
        self._on_verified = on_verified
        self._inline_when_idle = inline_when_idle
        self._quiet = _Quiet()
        self.inline = 0  # submissions verified on the loop (the idle path)
        self._order = _InOrder(on_verified)
        self._workers = workers
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="node-verify")
        self._pending: list[tuple[Transaction, T]] = []
        self._in_flight = 0
        self._scheduled = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_flight(self) -> int:
        """Batches being verified right now."""
        return self._in_flight

    async def start(self) -> None:
        """Nothing to start: threads start with their first batch."""

    def submit(self, tx: Transaction, tag: T) -> None:
        if self._closed:
            raise RuntimeError("the verify pool is closed")
        if self._idle_now():
            self.inline += 1
            self._on_verified(tag, _verify_here(_verify_in_thread_pool, tx))
            return
        self._pending.append((tx, tag))
        if not self._scheduled and self._in_flight < self._workers:
            # After the callbacks already queued: a burst of requests read together shares
            # a batch instead of the first one taking a worker alone.
            self._scheduled = True
            self._loop = self._loop or asyncio.get_running_loop()
            self._loop.call_soon(self._dispatch)

    def _idle_now(self) -> bool:
        quiet = self._quiet.after_spell()
        return quiet and self._inline_when_idle and not self._pending and not self._order

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = self._loop
        if loop is None:
            return
        while self._pending and self._in_flight < self._workers:
            # Split what is waiting evenly over the free workers, up to max_batch each.
            free = self._workers - self._in_flight
            size = min(self._max_batch, -(-len(self._pending) // free))
            batch = self._order.sent(self._pending[:size])
            del self._pending[:size]
            self._in_flight += 1
            txs = [tx for tx, _ in batch.items]
            work = loop.run_in_executor(self._executor, verify_batch, txs)
            work.add_done_callback(functools.partial(self._done, batch))

    def _done(self, batch: _Batch, work: asyncio.Future[list[Verdict]]) -> None:
        self._in_flight -= 1
        failure: BaseException | None = (
            asyncio.CancelledError() if work.cancelled() else work.exception()
        )
        if failure is not None:
            batch.outcomes = [failure] * len(batch.items)
        else:
            verdicts: list[Outcome] = list(work.result())
            batch.outcomes = verdicts
        self._order.deliver()
        if self._pending:
            self._dispatch()

    async def close(self) -> None:
        """Stop taking submissions; wait for the batches in flight; release the threads."""
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))


_request_encoder: Final = msgspec.msgpack.Encoder()
_answer_decoder: Final = msgspec.msgpack.Decoder(list[tuple[int, str, str | None] | None])


class _Worker(asyncio.SubprocessProtocol):
    """One worker process: its pipes, the batches queued on it (oldest first) and the frames
    it answered, parsed out of its stdout as they arrive."""

    def __init__(self, on_answer: Callable[[_Worker, bytes], None]) -> None:
        self._on_answer = on_answer
        self._buffer = bytearray()
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.batches: deque[_Batch] = deque()
        self.lost: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)  # noqa: S101 -- asyncio's contract
        self.transport = transport
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)  # noqa: S101 -- stdin=PIPE
        self.stdin = stdin

    @property
    def alive(self) -> bool:
        return self.stdin is not None and not self.stdin.is_closing() and not self.lost.done()

    def send(self, batch: _Batch) -> None:
        if self.stdin is None:
            raise RuntimeError("the worker has no stdin")
        payload = _request_encoder.encode([tx.to_bytes() for tx, _ in batch.items])
        self.batches.append(batch)
        self.stdin.write(len(payload).to_bytes(HEADER, "little") + payload)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER:
            end = HEADER + int.from_bytes(buffer[:HEADER], "little")
            if len(buffer) < end:
                return
            payload = bytes(buffer[HEADER:end])
            del buffer[:end]
            self._on_answer(self, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        # asyncio calls this once the process exited *and* its pipes are drained, so every
        # answer it wrote has been delivered by now
        if not self.lost.done():
            code = self.transport.get_returncode() if self.transport is not None else None
            self.lost.set_result(code)


class ProcessVerifyPool(Generic[T]):
    """Verifies ``(tx, tag)`` submissions on ``workers`` processes; calls
    ``on_verified(tag, outcome)`` on the loop, in submission order.

    ``tx`` must be a parsed transaction (:func:`~protocol.transaction.parse_transaction`): the
    worker checks its wire bytes. ``await start()`` launches the workers (it does not wait for
    them to import anything; the first batch does). Use from one event loop; :meth:`close`
    lets the workers answer everything submitted, then stops them.
    """

    def __init__(
        self,
        on_verified: Callable[[T, Outcome], None],
        *,
        workers: int = 1,
        max_batch: int = 128,
        max_in_flight: int = 2,
        inline_when_idle: bool = True,
    ) -> None:
        if workers < 1 or max_batch < 1 or max_in_flight < 1:
            raise ValueError("workers, max_batch and max_in_flight must be at least 1")
        self._on_verified = on_verified
        self._inline_when_idle = inline_when_idle
        self._quiet = _Quiet()
        self.inline = 0  # submissions verified on the loop (the idle path)
        self._size = workers
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._workers: list[_Worker] = []
        self._pending: list[tuple[Transaction, T]] = []
        self._order = _InOrder(on_verified)
        self._scheduled = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self.restarts = 0

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet delivered."""
        return len(self._order)

    @property
    def pids(self) -> list[int]:
        return [w.transport.get_pid() for w in self._workers if w.transport is not None]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self._size - len(self._workers)):
            await self._spawn()

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, path]))}
        worker = _Worker(self._answered)
        await loop.subprocess_exec(
            lambda: worker,
            sys.executable,
            "-m",
            "keepers.verify_worker",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # a worker's traceback goes where the node's own stderr goes
            env=env,
        )
        self._workers.append(worker)
        watcher = loop.create_task(self._watch(worker), name="verify-worker-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        if self._pending:
            self._dispatch()

    async def _watch(self, worker: _Worker) -> None:
        """Until ``worker`` ends; if it was not asked to, fail its batches and replace it."""
        code = await worker.lost
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.transport is not None:
            worker.transport.close()
        failure = WorkerExitedError(code)
        while worker.batches:
            batch = worker.batches.popleft()
            batch.outcomes = [failure] * len(batch.items)
        self._order.deliver()
        if self._closed:
            return
        log.error("verify_pool.worker_exited", returncode=code, replacing=True)
        self.restarts += 1
        try:
            await self._spawn()
        except OSError as exc:  # cannot start one: what waits has no one to verify it
            log.error("verify_pool.spawn_failed", error=repr(exc))
            pending, self._pending = self._pending, []
            for _, tag in pending:
                self._on_verified(tag, exc)

    def submit(self, tx: Transaction, tag: T) -> None:
        if self._closed:
            raise RuntimeError("the verify pool is closed")
        if self._idle_now():
            self.inline += 1
            self._on_verified(tag, _verify_here(_verify_as_a_worker, tx))
            return
        self._pending.append((tx, tag))
        if not self._scheduled:
            # After the callbacks already queued: a burst read together shares a batch.
            self._scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._dispatch)

    def _idle_now(self) -> bool:
        quiet = self._quiet.after_spell()
        return quiet and self._inline_when_idle and not self._pending and not self._order

    def _dispatch(self, *, force: bool = False) -> None:
        self._scheduled = False
        limit = self._max_in_flight
        while self._pending:
            alive = [w for w in self._workers if w.alive]
            if not alive:
                return  # a replacement is starting; it dispatches when it is up
            worker = min(alive, key=lambda w: len(w.batches))
            room = sum(max(0, limit - len(w.batches)) for w in alive)
            if not room and not force:
                return  # every worker's queue is full; the next answer dispatches again
            # Split what is waiting evenly over the room there is, up to max_batch each.
            size = min(self._max_batch, -(-len(self._pending) // max(room, 1)))
            batch = self._order.sent(self._pending[:size])
            del self._pending[:size]
            worker.send(batch)

    def _answered(self, worker: _Worker, payload: bytes) -> None:
        batch = worker.batches.popleft()
        try:
            verdicts = _answer_decoder.decode(payload)
            if len(verdicts) != len(batch.items):
                raise ValueError(f"{len(verdicts)} verdicts for a batch of {len(batch.items)}")
        except (msgspec.DecodeError, ValueError) as exc:
            batch.outcomes = [exc] * len(batch.items)
        else:
            outcomes: list[Outcome] = []
            for (tx, _), verdict in zip(batch.items, verdicts, strict=True):
                if verdict is None:
                    try:
                        outcomes.append(verified_after_envelope_check(tx))
                    except ValueError as exc:  # not a parsed transaction: a caller's bug
                        outcomes.append(exc)
                else:
                    code, detail, field = verdict
                    outcomes.append(Rejected(ErrorCode(code), detail, field))
            batch.outcomes = outcomes
        self._order.deliver()
        if self._pending:
            self._dispatch()

    async def close(self) -> None:
        """Stop taking submissions; let the workers answer everything submitted (bounded by
        :data:`STOP_TIMEOUT`, then they are killed); wait for them to exit."""
        if self._closed:
            return
        self._closed = True
        self._dispatch(force=True)
        workers = list(self._workers)
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()  # end of input: the worker answers what it has and exits
        for worker in workers:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await asyncio.shield(worker.lost)
            except TimeoutError:
                if worker.transport is not None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.transport.kill()
                await worker.lost
        for watcher in list(self._watchers):
            await watcher
        for worker in workers:
            if worker.transport is not None:
                worker.transport.close()
        # nothing can answer what is still pending (no worker was alive to take it)
        pending, self._pending = self._pending, []
        closed = RuntimeError("the verify pool closed")
        for _, tag in pending:
            self._on_verified(tag, closed)
