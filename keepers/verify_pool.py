"""Signature verification off the event loop, in batches, on worker threads.

The node verifies every transaction's signatures before its sequencer sees it
(:func:`protocol.transaction.verify_transaction`; libsodium releases the GIL while it checks a
signature, so workers run beside the loop on other cores). Submissions are grouped the way the
journal groups commits: a batch goes to a worker as soon as one is free, and everything that
arrives while all workers are busy forms the next batch, so under load the hand-off between
threads (two wake-ups of the loop) is paid once per batch, not once per transaction, and when
idle a transaction waits for no one.

Results come back on the event loop, in submission order within a batch, through the
callback given to :class:`VerifyPool`. Known limit: the workers share the GIL with the loop for
the Python parts of verification (parsing the verify key, building the result), so the speed-up
is below the number of workers; ``benchmarks/node_throughput.py`` reports what it is.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from protocol.errors import ProtocolError, Rejected
from protocol.transaction import Transaction, VerifiedTransaction, verify_transaction

__all__ = ["Outcome", "Verdict", "VerifyPool", "verify_batch"]

T = TypeVar("T")

Verdict = VerifiedTransaction | Rejected
Outcome = Verdict | BaseException  # an exception: verification itself broke (a bug)


def verify_batch(txs: Sequence[Transaction]) -> list[Verdict]:
    """Each transaction verified, or the rejection saying why not (runs on a worker)."""
    out: list[Verdict] = []
    for tx in txs:
        try:
            out.append(verify_transaction(tx))
        except ProtocolError as exc:
            out.append(exc.to_rejected())
    return out


class VerifyPool(Generic[T]):
    """Verifies ``(tx, tag)`` submissions; calls ``on_verified(tag, outcome)`` on the loop.

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
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("workers and max_batch must be at least 1")
        self._on_verified = on_verified
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

    def submit(self, tx: Transaction, tag: T) -> None:
        if self._closed:
            raise RuntimeError("the verify pool is closed")
        self._pending.append((tx, tag))
        if not self._scheduled and self._in_flight < self._workers:
            # After the callbacks already queued: a burst of requests read together shares
            # a batch instead of the first one taking a worker alone.
            self._scheduled = True
            self._loop = self._loop or asyncio.get_running_loop()
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = self._loop
        if loop is None:
            return
        while self._pending and self._in_flight < self._workers:
            # Split what is waiting evenly over the free workers, up to max_batch each.
            free = self._workers - self._in_flight
            size = min(self._max_batch, -(-len(self._pending) // free))
            batch, self._pending = self._pending[:size], self._pending[size:]
            self._in_flight += 1
            work = loop.run_in_executor(self._executor, verify_batch, [tx for tx, _ in batch])
            work.add_done_callback(functools.partial(self._done, batch))

    def _done(
        self, batch: list[tuple[Transaction, T]], work: asyncio.Future[list[Verdict]]
    ) -> None:
        self._in_flight -= 1
        failure: BaseException | None = (
            asyncio.CancelledError() if work.cancelled() else work.exception()
        )
        if failure is not None:
            for _, tag in batch:
                self._on_verified(tag, failure)
        else:
            for (_, tag), verdict in zip(batch, work.result(), strict=True):
                self._on_verified(tag, verdict)
        if self._pending:
            self._dispatch()

    async def close(self) -> None:
        """Stop taking submissions; wait for the batches in flight; release the threads."""
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(self._executor.shutdown, wait=True))
