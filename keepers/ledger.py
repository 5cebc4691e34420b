"""The node's sequencer: one :class:`~protocol.program.Program` and its durable journal.

``await ledger.submit(raw, clock)`` executes a signed transaction and, if the program accepts
it, appends it to the journal and returns only once that entry is durable: an acknowledgement
always means "survives a crash". Rejected transactions change nothing and are not journaled.

Single writer
-------------
The ledger *is* the sequencer. Every state change happens inside
:meth:`Ledger.execute_reserved`, after ``await ledger.reserve()`` made room in the journal: a
method with no ``await`` in it, on one event loop, that executes and appends. So transactions
execute one at a time, and the journal order is the execution order. :meth:`submit_receipt`
is reserve + execute + wait until durable; a caller that wants many transactions in flight (the
node's single sequencer task) calls the two halves itself (:meth:`try_reserve` first: it does
not suspend while there is room) and learns of commits from each entry's ``durable`` future or,
one call per group commit, from :meth:`add_durable_listener`, so it never waits for a commit
before executing the next transaction.
Nothing else may call ``program.execute`` or mutate ``ledger.state``; reads (``state``,
``simulate``) may see transactions that are executed but not yet durable, which is harmless
because nothing is acknowledged before it is durable, and an acknowledged transaction's
predecessors are durable too (they commit in the same or an earlier group).

Restore
-------
:meth:`Ledger.open` checks the journal was made from the given genesis (snapshot 0), loads
the newest snapshot, re-registers the ids of entries committed before it that are still inside
the replay window (``State.max_transaction_age_slots``; :meth:`Program.remember`), then
re-executes every later entry with the clock it was recorded with. Each must be accepted again,
start at its recorded record sequence number and emit its recorded number of records; each
recorded state-hash checkpoint must match. Any difference is a :class:`ReplayError` naming the
entry: a restart never silently diverges. The journal's slots never decrease
(:meth:`submit_receipt` refuses a clock that goes back) so that window is a suffix of it.

Snapshots are taken every ``snapshot_every`` entries and on :meth:`close`; encoding runs in the
sequencer (it must see a consistent state), so its cost is paid by the submit that triggers it.
A periodic snapshot that fails is logged and counted (``snapshot_failures``), not fatal: the
journal alone restores everything. State-hash checkpoints (every ``checkpoint_every`` entries)
cost one :func:`~protocol.state_hash.state_hash` walk each.
If the journal fails (a disk error), the in-memory state may be ahead of the disk: the ledger
refuses everything afterwards (:class:`JournalFailedError`) and the node must restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog

from keepers.journal import (
    DurableListener,
    Journal,
    JournalError,
    JournalFailedError,
    JournalMetrics,
    StoredSnapshot,
    WriterMode,
)
from keepers.snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot
from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.errors import ProtocolError, Rejected
from protocol.program import Executed, Program
from protocol.state_hash import state_hash
from protocol.transaction import VerifiedTransaction, parse_transaction

__all__ = [
    "Ledger",
    "LedgerConfig",
    "Pending",
    "Receipt",
    "ReplayError",
    "Restored",
]

log = structlog.get_logger(__name__)


class ReplayError(JournalError):
    """Re-executing journal entry ``index`` did not reproduce what was recorded."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"replay of journal entry {index}: {detail}")
        self.index = index
        self.detail = detail


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """``snapshot_every`` / ``checkpoint_every``: entries between snapshots / state-hash
    checkpoints (0 = never, except the snapshot at close); ``max_pending``: the journal's
    bound on entries executed but not yet durable."""

    snapshot_every: int = 10_000
    checkpoint_every: int = 1_000
    keep_snapshots: int = 2
    max_pending: int = 4_096
    writer: WriterMode = "thread"


@dataclass(frozen=True, slots=True)
class Receipt:
    """An acknowledged transaction: durable as journal entry ``index``."""

    index: int
    executed: Executed


@dataclass(frozen=True, slots=True)
class Pending:
    """An executed transaction appended as journal entry ``index``, durable once ``durable``
    completes (with :class:`~keepers.journal.JournalFailedError` if the write failed)."""

    index: int
    executed: Executed
    durable: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class Restored:
    """What :meth:`Ledger.open` did: the snapshot it started from, how many entries it
    re-executed and how many ids it re-registered, and the resulting state hash."""

    snapshot_index: int
    replayed: int
    remembered: int
    state_hash: str
    clean_shutdown: bool


class Ledger:
    """Program + Journal. Build with :meth:`open`; use from one event loop."""

    __slots__ = (
        "_closed",
        "_config",
        "_failure",
        "_journal",
        "_last_snapshot_index",
        "_program",
        "restored",
        "snapshot_failures",
    )

    def __init__(
        self, program: Program, journal: Journal, config: LedgerConfig, restored: Restored
    ) -> None:
        self._program = program
        self._journal = journal
        self._config = config
        self.restored = restored
        self._last_snapshot_index = restored.snapshot_index
        self._closed = False
        self._failure: BaseException | None = None
        self.snapshot_failures = 0
        journal.add_durable_listener(self._on_durable)

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        genesis: ProgramState,
        *,
        genesis_next_seq: int = 1,
        genesis_slot: int = 0,
        config: LedgerConfig | None = None,
    ) -> Ledger:
        """Open the ledger at ``path``, creating it from ``genesis`` if new, else restoring
        the state it held. ``genesis`` is never mutated (the ledger works on a copy)."""
        config = config if config is not None else LedgerConfig()
        if config.snapshot_every < 0 or config.checkpoint_every < 0:
            raise ValueError("snapshot_every and checkpoint_every must be >= 0")
        journal = Journal.open(
            path,
            max_pending=config.max_pending,
            writer=config.writer,
            keep_snapshots=config.keep_snapshots,
        )
        try:
            program, restored = _restore(
                journal, genesis, genesis_next_seq=genesis_next_seq, genesis_slot=genesis_slot
            )
        except BaseException:
            journal.close_sync()
            raise
        log.info(
            "ledger.restored",
            path=str(path),
            snapshot_index=restored.snapshot_index,
            replayed=restored.replayed,
            remembered=restored.remembered,
            last_index=journal.last_index,
            state_hash=restored.state_hash,
            clean_shutdown=restored.clean_shutdown,
        )
        return cls(program, journal, config, restored)

    # --- reads ---------------------------------------------------------------------------
    @property
    def state(self) -> ProgramState:
        """The executed state (possibly ahead of the durable one). Read it; never mutate it."""
        return self._program.state

    @property
    def next_seq(self) -> int:
        return self._program.next_seq

    @property
    def last_index(self) -> int:
        return self._journal.last_index

    @property
    def journal(self) -> Journal:
        return self._journal

    @property
    def metrics(self) -> JournalMetrics:
        return self._journal.metrics

    def state_hash(self) -> str:
        return state_hash(self._program.state, self._program.next_seq)

    def simulate(
        self, raw: bytes, clock: Clock, *, verified: VerifiedTransaction | None = None
    ) -> Executed | Rejected:
        """Run without committing (no id consumed, no sequence number, nothing journaled);
        ``verified`` as in :meth:`execute_reserved`."""
        if verified is not None:
            if not _same_transaction(raw, verified):
                raise ValueError("the verified transaction is not the one in raw")
            return self._program.simulate_verified(verified, clock)
        try:
            tx = parse_transaction(raw)
        except ProtocolError as exc:
            return exc.to_rejected()
        return self._program.simulate(tx, clock)

    # --- the sequencer -------------------------------------------------------------------
    async def submit(
        self, raw: bytes, clock: Clock, *, verified: VerifiedTransaction | None = None
    ) -> Executed | Rejected:
        """Execute ``raw``; if accepted, return only once it is durable in the journal."""
        result = await self.submit_receipt(raw, clock, verified=verified)
        return result.executed if isinstance(result, Receipt) else result

    async def submit_receipt(
        self, raw: bytes, clock: Clock, *, verified: VerifiedTransaction | None = None
    ) -> Receipt | Rejected:
        """:meth:`submit`, also telling the journal index the transaction was written at."""
        await self.reserve()
        pending = self.execute_reserved(raw, clock, verified=verified)
        if isinstance(pending, Rejected):
            return pending
        await asyncio.shield(pending.durable)
        return Receipt(pending.index, pending.executed)

    async def reserve(self) -> None:
        """Wait for room in the journal's bounded buffer; follow with exactly one
        :meth:`execute_reserved`, with no ``await`` in between.

        Waiting happens *before* executing: a wait after executing could let a later
        transaction reach the journal first. Waiters are served first come, first served, so
        a caller that never awaits anything else between transactions (the node's sequencer)
        keeps its own order."""
        if not self.try_reserve():
            await self._journal.reserve()

    def try_reserve(self) -> bool:
        """:meth:`reserve` if it would not wait (``True``: follow with
        :meth:`execute_reserved`); ``False``: nothing reserved, ``await reserve()``."""
        self._raise_if_unusable()
        if not self._journal.started:
            self._journal.start()
        return self._journal.try_reserve()

    def add_durable_listener(self, listener: DurableListener) -> None:
        """``listener(durable_index, failure)`` after every group commit (and once if the
        journal fails): see :meth:`keepers.journal.Journal.add_durable_listener`."""
        self._journal.add_durable_listener(listener)

    def execute_reserved(
        self, raw: bytes, clock: Clock, *, verified: VerifiedTransaction | None = None
    ) -> Pending | Rejected:
        """The single-writer section: execute ``raw`` and, if accepted, append it to the
        journal, using the room :meth:`reserve` waited for. Returns at once; the result's
        ``durable`` future completes once the entry is on disk (only then may it be
        acknowledged). ``verified``, if given, must be ``raw`` as
        :func:`~protocol.transaction.verify_transaction` returned it: its signatures are then
        not checked again (a restart re-verifies everything it replays)."""
        # --- no await in this method: this is the single-writer section ---
        try:
            self._raise_if_unusable()
            if clock.slot < self._journal.last_slot:
                raise ValueError(
                    f"clock slot {clock.slot} is before the last journaled slot "
                    f"{self._journal.last_slot}"
                )
            first_seq = self._program.next_seq
            # the program commits nothing unless the whole transaction succeeds, so even an
            # unexpected exception here leaves the state as it was
            if verified is None:
                result = self._program.execute_bytes(raw, clock)
            else:
                if not _same_transaction(raw, verified):
                    raise ValueError("the verified transaction is not the one in raw")
                result = self._program.execute_verified(verified, clock)
        except BaseException:
            self._journal.release_reservation()
            raise
        if isinstance(result, Rejected):
            self._journal.release_reservation()
            return result
        try:
            index = self._journal.last_index + 1
            every = self._config.checkpoint_every
            checkpoint = self.state_hash() if every and index % every == 0 else None
            index, durable = self._journal.append_reserved(
                clock.slot,
                clock.unix_timestamp,
                bytes(raw),
                first_seq,
                self._program.next_seq - first_seq,
                checkpoint,
            )
        except BaseException as exc:
            # executed in memory but not journaled: memory is now ahead of the disk
            self._failure = exc
            raise
        every = self._config.snapshot_every
        if every and index % every == 0:
            self._periodic_snapshot(clock.slot)
        return Pending(index, result, durable)

    def _on_durable(self, durable_index: int, failure: BaseException | None) -> None:
        if failure is not None and self._failure is None:
            self._failure = failure

    def _periodic_snapshot(self, slot: int) -> None:
        # A snapshot only shortens the next restore; the journal alone restores everything.
        # So a failing one (a state value no snapshot can hold, which is a bug) is logged and
        # counted, and the transaction it followed is still acknowledged once durable.
        try:
            self._snapshot(slot)
        except (TypeError, ValueError, JournalError):
            self.snapshot_failures += 1
            log.exception("ledger.snapshot_failed", index=self._journal.last_index, slot=slot)

    def _snapshot(self, slot: int) -> None:
        program = self._program
        index = self._journal.last_index
        data = encode_snapshot(Snapshot(program.state, program.next_seq, slot))
        stored = StoredSnapshot(index, slot, program.next_seq, data, self.state_hash())
        if self._journal.started:
            self._journal.append_snapshot(stored)
        else:
            self._journal.write_snapshot(stored)
        self._last_snapshot_index = index

    def _raise_if_unusable(self) -> None:
        if self._failure is not None:
            raise JournalFailedError("the ledger's journal failed; restart to recover") from (
                self._failure
            )
        if self._closed:
            raise JournalError("ledger is closed")

    # --- closing -------------------------------------------------------------------------
    async def close(self) -> str:
        """Snapshot the final state (if anything was appended since the last snapshot), make
        everything durable, release the file; returns (and logs) the final state hash."""
        if self._closed:
            return self.state_hash()
        self._closed = True
        final = self.state_hash()
        try:
            if (
                self._failure is None
                and not self._journal.failed
                and self._journal.last_index != self._last_snapshot_index
            ):
                self._snapshot(self._journal.last_slot)
        finally:
            await self._journal.close()
        log.info(
            "ledger.closed",
            path=str(self._journal.path),
            last_index=self._journal.last_index,
            state_hash=final,
            # after a journal failure the state in memory is ahead of what a restart restores
            journal_failed=self._failure is not None or self._journal.failed,
        )
        return final


def _same_transaction(raw: bytes, verified: VerifiedTransaction) -> bool:
    """Whether ``raw`` carries ``verified``'s first signature and its signed message: the
    bytes journaled must be the bytes whose signatures were checked. (A cheap comparison of
    what the signatures cover; the full parse already happened when ``verified`` was made.)"""
    signature = verified.signature
    return raw.endswith(verified.message) and raw[6 : 6 + len(signature)] == signature


def _restore(
    journal: Journal, genesis: ProgramState, *, genesis_next_seq: int, genesis_slot: int
) -> tuple[Program, Restored]:
    genesis_hash = state_hash(genesis, genesis_next_seq)
    stored_genesis = journal.snapshot_at(0)
    if stored_genesis is None:
        if journal.last_index:
            raise JournalError(f"{journal.path}: entries but no genesis snapshot")
        data = encode_snapshot(Snapshot(genesis, genesis_next_seq, genesis_slot))
        journal.write_snapshot(
            StoredSnapshot(0, genesis_slot, genesis_next_seq, data, genesis_hash)
        )
    elif stored_genesis.state_hash != genesis_hash:
        raise JournalError(
            f"{journal.path} was made from a different genesis "
            f"(stored {stored_genesis.state_hash}, given {genesis_hash})"
        )
    latest = journal.latest_snapshot()
    if latest is None:  # cannot happen: genesis was just checked or written
        raise JournalError(f"{journal.path}: no snapshot")
    try:
        snap = decode_snapshot(latest.data)
    except SnapshotError as exc:
        raise SnapshotError(f"snapshot after entry {latest.index}: {exc}") from exc
    if snap.next_seq != latest.next_seq or snap.slot != latest.slot:
        raise SnapshotError(f"snapshot after entry {latest.index} disagrees with its row")
    loaded_hash = state_hash(snap.state, snap.next_seq)
    if loaded_hash != latest.state_hash:
        raise SnapshotError(
            f"snapshot after entry {latest.index} hashes {loaded_hash}, "
            f"recorded {latest.state_hash}"
        )
    program = Program(snap.state, next_seq=snap.next_seq)
    remembered = _remember_window(journal, program, latest.index, snap.slot)
    replayed = _replay(journal, program, after=latest.index)
    restored = Restored(
        snapshot_index=latest.index,
        replayed=replayed,
        remembered=remembered,
        state_hash=state_hash(program.state, program.next_seq),
        clean_shutdown=journal.clean_shutdown,
    )
    return program, restored


def _remember_window(journal: Journal, program: Program, upto: int, slot: int) -> int:
    """Re-register ids of entries up to ``upto`` that could still be fresh at ``slot`` or
    later: any whose execution slot is inside the window (its recent_slot is at most that)."""
    min_slot = slot - program.state.state.max_transaction_age_slots
    count = 0
    for entry in journal.entries_back_to_slot(upto, min_slot):
        try:
            tx = parse_transaction(entry.tx)
        except ProtocolError as exc:
            raise ReplayError(entry.index, f"stored bytes do not parse: {exc}") from exc
        program.remember(tx.signature, tx.recent_slot)
        count += 1
    return count


def _replay(journal: Journal, program: Program, *, after: int) -> int:
    count = 0
    for entry in journal.entries(after):
        if program.next_seq != entry.first_seq:
            raise ReplayError(
                entry.index,
                f"program is at seq {program.next_seq}, entry starts at {entry.first_seq}",
            )
        result = program.execute_bytes(entry.tx, Clock(entry.slot, entry.unix_timestamp))
        if isinstance(result, Rejected):
            raise ReplayError(
                entry.index, f"rejected on replay: {result.code.name} {result.detail}"
            )
        emitted = program.next_seq - entry.first_seq
        if emitted != entry.record_count:
            raise ReplayError(
                entry.index, f"emitted {emitted} records, journal recorded {entry.record_count}"
            )
        if entry.state_hash is not None:
            got = state_hash(program.state, program.next_seq)
            if got != entry.state_hash:
                raise ReplayError(entry.index, f"state hash {got}, checkpoint {entry.state_hash}")
        count += 1
    return count
