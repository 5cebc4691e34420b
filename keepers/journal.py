"""The node's durable journal: every accepted transaction, in order, in one SQLite file.

Tables
------
``entries``: one row per accepted transaction, ``idx`` 1, 2, 3, ... with no gap, holding the
clock it executed at (``slot``, ``unix_timestamp``), the exact wire bytes, the sequence number
of its first record and how many records it emitted, and optionally a state-hash checkpoint
(:func:`protocol.state_hash.state_hash` after it). ``snapshots``: full program states
(:mod:`keepers.snapshot`) taken *after* entry ``idx`` (``0`` is genesis). ``meta``: the format
version and whether the last process closed the journal cleanly.

Durability and group commit
---------------------------
``await journal.append(...)`` returns only once the entry is on disk. Appends go into a bounded
buffer (``max_pending`` entries written or waiting; room is reserved first, first come first
served, without suspending when there is some: :meth:`Journal.try_reserve`); the writer takes
*everything* pending, writes it in one SQLite transaction and one commit (one fsync), then
resolves every append's future and calls the durable listeners once with the last index
written (:meth:`Journal.add_durable_listener`: how a caller tracking many entries learns of a
commit without a callback per entry). Under load many entries share one fsync; when idle an
entry waits for exactly one. The entries of a group go in multi-row INSERT statements (up to
``_ROWS_PER_INSERT`` rows each), so the writer thread gives the GIL up and takes it back once
per statement rather than once per row. One group is written at a time; a write is started
with ``call_soon``, after the callbacks already queued on the loop, so a burst of submitters
woken together shares one commit.

The writer is a dedicated thread owning its own connection (``writer="thread"``, the default):
the sqlite3 module releases the GIL inside SQLite, so while a group commits and fsyncs the
event loop keeps running (executing the next group's transactions, and whatever else shares
the loop: HTTP, the bus, the slot clock). ``"inline"`` commits on the event loop thread, which
stops the loop for every fsync. ``benchmarks/journal.py`` measured both: with a 2 ms fsync
(``--fsync-ms 2``) and transactions arriving at 5,000/s, ``thread`` acknowledged at p50 5.5 ms /
p99 8.0 ms with the loop never stalled more than 2.3 ms, ``inline`` at 6.8 / 9.1 ms with 5.5 ms
stalls; closed-loop throughput was the same within noise. On a disk whose fsync is nearly
free ``inline`` saves the thread hop (about 60 us per commit), which only shows with a single
submitter; it is kept for that comparison.

One exception in thread mode, for the idle path: a group of a single entry, when no commit
ended in the last :data:`IDLE_INLINE_AFTER` seconds, is written on the loop thread (with the
writer's connection; the writer thread has nothing in flight then, so the connection is never
used by both at once). Nothing else is waiting to run, and the hand-off to a sleeping thread
and back cost ~0.2-0.3 ms on the project's 2-core machine against a ~0.6 ms commit there
(``python -m benchmarks.intent_latency``, one intent every 20 ms). Under load the groups are
larger or the commits closer together, so they go to the thread; at most one commit per
``IDLE_INLINE_AFTER`` holds the loop for its fsync. ``inline_when_idle=False`` turns it off.

Invariants
----------
* Entries are written in the order :meth:`Journal.append_reserved` was called; an entry is
  never durable unless every entry before it is (they share or precede its commit).
* ``idx`` is gap-free from 1, ``first_seq`` of each entry is the previous entry's
  ``first_seq + record_count``, and slots never decrease. :meth:`Journal.open` checks all three
  over the whole table and refuses a journal that breaks them (:class:`JournalGapError`,
  naming the index).
* A crash mid-commit loses the whole uncommitted group, never part of it: SQLite's WAL frames
  are checksummed and a commit without its commit frame is discarded on recovery. What a crash
  can lose is therefore only entries no caller was told were durable. An unclean shutdown is
  reported by :attr:`Journal.clean_shutdown`.
* After any write fails the journal is *failed*: pending and later appends raise
  :class:`JournalFailedError`. The caller's in-memory state may now be ahead of the disk, so
  the only recovery is a restart that replays what is durable.

Known limits: entries are never compacted (the journal is the history); only the genesis
snapshot and the newest ``keep_snapshots`` are kept. A journal is used by one process at a time.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "DurableListener",
    "Journal",
    "JournalCorruptError",
    "JournalEntry",
    "JournalError",
    "JournalFailedError",
    "JournalGapError",
    "JournalMetrics",
    "StoredSnapshot",
    "WriterMode",
]

FORMAT_VERSION: Final = 1
# Thread mode writes a lone entry on the loop when no commit ended this recently (seconds).
IDLE_INLINE_AFTER: Final = 0.005

WriterMode = Literal["thread", "inline"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    unix_timestamp INTEGER NOT NULL,
    tx BLOB NOT NULL,
    first_seq INTEGER NOT NULL,
    record_count INTEGER NOT NULL CHECK (record_count >= 0),
    state_hash TEXT
);
CREATE TABLE IF NOT EXISTS snapshots (
    idx INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    state BLOB NOT NULL,
    state_hash TEXT NOT NULL
);
"""

# The first row that breaks index, sequence or slot continuity, if any.
_CONTINUITY: Final = """
SELECT idx, prev_idx, first_seq, prev_end, slot, prev_slot FROM (
    SELECT idx, slot, first_seq,
           LAG(idx) OVER w AS prev_idx,
           LAG(first_seq + record_count) OVER w AS prev_end,
           LAG(slot) OVER w AS prev_slot
    FROM entries WINDOW w AS (ORDER BY idx)
)
WHERE (prev_idx IS NULL AND idx != 1)
   OR idx != prev_idx + 1 OR first_seq != prev_end OR slot < prev_slot
ORDER BY idx LIMIT 1
"""

_ENTRY_COLUMNS: Final = "idx, slot, unix_timestamp, tx, first_seq, record_count, state_hash"
# rows per multi-row INSERT: 7 parameters each, under SQLite's default limit of 32,766 (>= 3.32)
_ROWS_PER_INSERT: Final = 1_024 if sqlite3.sqlite_version_info >= (3, 32, 0) else 128
_SNAPSHOT_COLUMNS: Final = "idx, slot, next_seq, state, state_hash"


class JournalError(Exception):
    """The journal cannot be used as asked."""


class JournalCorruptError(JournalError):
    """The file is not a readable journal (SQLite reports it malformed, or it is not ours)."""


class JournalGapError(JournalError):
    """Continuity is broken at ``index``: a missing entry, a sequence gap, a slot going back."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"journal entry {index}: {detail}")
        self.index = index
        self.detail = detail


class JournalFailedError(JournalError):
    """A write failed earlier; nothing more is accepted until the process restarts."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One accepted transaction. ``tx`` is the wire bytes exactly as received."""

    index: int
    slot: int
    unix_timestamp: int
    tx: bytes
    first_seq: int
    record_count: int
    state_hash: str | None = None


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """A snapshot row: the state after entry ``index`` (``0``: genesis)."""

    index: int
    slot: int
    next_seq: int
    data: bytes
    state_hash: str


@dataclass(slots=True)
class JournalMetrics:
    """Counters for the group commit; ``batch_sizes`` maps entries-per-commit to a count."""

    commits: int = 0
    entries: int = 0
    idle_inline: int = 0  # thread-mode commits written on the loop (the idle path)
    snapshots: int = 0
    max_batch: int = 0
    commit_seconds: float = 0.0  # wall time inside SQLite, fsync included
    batch_sizes: Counter[int] = field(default_factory=Counter)

    @property
    def entries_per_commit(self) -> float:
        return self.entries / self.commits if self.commits else 0.0


CommitHook = Callable[[int, float], None]  # (entries in the commit, seconds it took)
# (index of the last durable entry, the failure if the journal just failed); see
# Journal.add_durable_listener
DurableListener = Callable[[int, BaseException | None], None]

_Item = JournalEntry | StoredSnapshot


def _connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), so one
    # group is exactly one SQLite transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: every COMMIT fsyncs the WAL before returning. NORMAL (WAL's usual setting)
        # only syncs at checkpoints, so a power loss could drop commits whose appends had
        # already been acknowledged to clients; an acknowledgement must mean durable.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


class Journal:
    """The journal file: synchronous reads and restore-time writes, asynchronous group-commit
    appends. Use from one event loop; see the module docstring for the invariants."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        max_pending: int,
        writer: WriterMode,
        keep_snapshots: int,
        on_commit: CommitHook | None,
        inline_when_idle: bool = True,
    ) -> None:
        self.path = path
        self._inline_when_idle = inline_when_idle
        self._last_commit_end = float("-inf")  # time.monotonic() of the last commit
        self._conn = conn  # reads and pre-start writes, on the opening thread
        self._max_pending = max_pending
        self._writer_mode: WriterMode = writer
        self._keep_snapshots = keep_snapshots
        self._on_commit = on_commit
        self.metrics = JournalMetrics()
        self.clean_shutdown = True
        self._last_index = 0
        self._last_slot = 0
        self._next_first_seq: int | None = None
        self._latest_snapshot_index: int | None = None
        # writer state: everything below is touched on the event loop thread only, except
        # _writer_conn in thread mode, which only the writer thread uses
        self._pending: list[tuple[_Item, asyncio.Future[None] | None]] = []
        # room in the bounded buffer: a count, and the reservations waiting for it (in order)
        self._room = max_pending
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._durable_index = self._last_index
        self._durable_listeners: list[DurableListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._in_flight = False  # a group is being written (thread mode)
        self._flush_scheduled = False  # a flush is queued on the loop (inline mode)
        self._idle: asyncio.Future[None] | None = None  # what close() waits for
        self._stopping = False
        self._closed = False
        self._failure: BaseException | None = None

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        max_pending: int = 4096,
        writer: WriterMode = "thread",
        keep_snapshots: int = 2,
        on_commit: CommitHook | None = None,
        inline_when_idle: bool = True,
    ) -> Journal:
        """Open (or create) the journal at ``path`` and check its continuity.

        Raises :class:`JournalCorruptError` for a file SQLite cannot read or that is not a
        journal, :class:`JournalGapError` for broken continuity.
        """
        if max_pending < 1 or keep_snapshots < 1:
            raise ValueError("max_pending and keep_snapshots must be at least 1")
        if writer not in ("thread", "inline"):
            raise ValueError(f"unknown writer mode {writer!r}")
        path = Path(path)
        try:
            conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            raise JournalCorruptError(f"{path}: {exc}") from exc
        journal = cls(
            path,
            conn,
            max_pending=max_pending,
            writer=writer,
            keep_snapshots=keep_snapshots,
            on_commit=on_commit,
            inline_when_idle=inline_when_idle,
        )
        try:
            journal._initialise()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalCorruptError(f"{path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return journal

    def _initialise(self) -> None:
        conn = self._conn
        conn.executescript(_SCHEMA)
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = rows.get("format_version")
        if version is None:
            conn.execute("INSERT INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
        elif version != str(FORMAT_VERSION):
            raise JournalCorruptError(f"{self.path}: journal format {version}, expected 1")
        self.clean_shutdown = rows.get("clean_shutdown", "1") == "1"
        self._check_continuity()
        # From here until close() the journal counts as open; a crash leaves it unclean.
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean_shutdown', '0')")

    def _check_continuity(self) -> None:
        conn = self._conn
        bad = conn.execute(_CONTINUITY).fetchone()
        if bad is not None:
            idx, prev_idx, first_seq, prev_end, slot, prev_slot = bad
            if prev_idx is None:
                raise JournalGapError(idx, "the journal does not start at entry 1")
            if idx != prev_idx + 1:
                raise JournalGapError(
                    prev_idx + 1, f"missing: entry {idx} follows entry {prev_idx}"
                )
            if first_seq != prev_end:
                raise JournalGapError(
                    idx, f"first record seq {first_seq}, expected {prev_end} (sequence gap)"
                )
            raise JournalGapError(idx, f"slot {slot} is before the previous entry's {prev_slot}")
        last = conn.execute(
            "SELECT idx, slot, first_seq + record_count FROM entries ORDER BY idx DESC LIMIT 1"
        ).fetchone()
        if last is not None:
            self._last_index, self._last_slot, self._next_first_seq = last
        self._durable_index = self._last_index
        top = conn.execute("SELECT MAX(idx) FROM snapshots").fetchone()[0]
        self._latest_snapshot_index = top
        if top is not None and top > self._last_index:
            raise JournalGapError(
                self._last_index + 1,
                f"missing: a snapshot was taken after entry {top}, "
                f"but the journal ends at entry {self._last_index}",
            )
        genesis = self.snapshot_at(0)
        first = self.entry(1)
        if genesis is not None and first is not None and first.first_seq != genesis.next_seq:
            raise JournalGapError(
                1, f"first record seq {first.first_seq}, genesis next_seq {genesis.next_seq}"
            )
        if self._next_first_seq is None and genesis is not None:
            self._next_first_seq = genesis.next_seq

    # --- synchronous reads ----------------------------------------------------------------
    @property
    def last_index(self) -> int:
        """Index of the last entry appended (durable or not); 0 for an empty journal."""
        return self._last_index

    @property
    def last_slot(self) -> int:
        return self._last_slot

    @property
    def latest_snapshot_index(self) -> int | None:
        return self._latest_snapshot_index

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def entry(self, index: int) -> JournalEntry | None:
        row = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE idx = ?",  # noqa: S608 -- constant
            (index,),
        ).fetchone()
        return JournalEntry(*row) if row is not None else None

    def entries(self, after: int = 0) -> Iterator[JournalEntry]:
        """Durable entries with index > ``after``, in order."""
        cursor = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE idx > ? ORDER BY idx",  # noqa: S608
            (after,),
        )
        for row in cursor:
            yield JournalEntry(*row)

    def entries_back_to_slot(self, upto: int, min_slot: int) -> Iterator[JournalEntry]:
        """Entries with index <= ``upto``, newest first, while their slot is >= ``min_slot``
        (slots never decrease along the journal, so this is a suffix of it)."""
        cursor = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE idx <= ? ORDER BY idx DESC",  # noqa: S608
            (upto,),
        )
        for row in cursor:
            entry = JournalEntry(*row)
            if entry.slot < min_slot:
                return
            yield entry

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def snapshot_at(self, index: int) -> StoredSnapshot | None:
        row = self._conn.execute(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE idx = ?",  # noqa: S608
            (index,),
        ).fetchone()
        return StoredSnapshot(*row) if row is not None else None

    def latest_snapshot(self) -> StoredSnapshot | None:
        row = self._conn.execute(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots ORDER BY idx DESC LIMIT 1"  # noqa: S608
        ).fetchone()
        return StoredSnapshot(*row) if row is not None else None

    def snapshot_indexes(self) -> list[int]:
        return [r[0] for r in self._conn.execute("SELECT idx FROM snapshots ORDER BY idx")]

    def write_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Write a snapshot synchronously (genesis, or closing a journal never started)."""
        if self._loop is not None or self._closed:
            raise JournalError("synchronous writes only before the writer starts")
        self._check_snapshot(snapshot)
        _write_items(self._conn, [snapshot], self._keep_snapshots)
        self._latest_snapshot_index = snapshot.index

    def _check_snapshot(self, snapshot: StoredSnapshot) -> None:
        if snapshot.index != self._last_index:
            raise JournalError(
                f"snapshot at entry {snapshot.index}, but the last entry is {self._last_index}"
            )
        if self._next_first_seq is not None and snapshot.next_seq != self._next_first_seq:
            raise JournalError(
                f"snapshot next_seq {snapshot.next_seq}, journal expects {self._next_first_seq}"
            )
        if self._next_first_seq is None:
            self._next_first_seq = snapshot.next_seq

    # --- group-commit appends ---------------------------------------------------------------
    def start(self) -> None:
        """Start the writer on the running loop (idempotent)."""
        if self._closed:
            raise JournalError("journal is closed")
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        if self._writer_mode == "thread":
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
            # The connection is made, used and closed on the writer thread only. Jobs run in
            # submission order, so connecting counts as the first in-flight group.
            self._in_flight = True
            connecting = loop.run_in_executor(self._executor, self._connect_on_thread)
            connecting.add_done_callback(functools.partial(self._on_written, []))
        else:
            self._writer_conn = _connect(self.path)
        self._loop = loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def try_reserve(self) -> bool:
        """Take room in the bounded buffer if there is some and no one waits for it (then
        exactly as :meth:`reserve`, without suspending); ``False``: call :meth:`reserve`."""
        self._raise_if_unusable()
        if self._room and not self._room_waiters:
            self._room -= 1
            return True
        return False

    async def reserve(self) -> None:
        """Wait for room in the bounded buffer. Call before executing what will be appended,
        so that waiting can never reorder entries relative to execution. Waiters are served
        first come, first served."""
        if self.try_reserve():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release_reservation()  # handed room just as it was cancelled: pass it on
            raise
        if self._failure is not None:
            self.release_reservation()
            self._raise_if_unusable()

    def release_reservation(self) -> None:
        """Give back a reservation that will not be used (the transaction was rejected)."""
        waiters = self._room_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the room goes straight to the oldest waiter
                return
        self._room += 1

    @property
    def durable_index(self) -> int:
        """Index of the last entry on disk (this process's commits; at open, the last one)."""
        return self._durable_index

    def add_durable_listener(self, listener: DurableListener) -> None:
        """Call ``listener(durable_index, None)`` on the loop after every commit that wrote
        entries, once their futures are resolved, and ``listener(durable_index, failure)``
        once if the journal fails. One call per group commit, not per entry: what a caller
        that tracks many entries needs instead of a callback on each entry's future."""
        self._durable_listeners.append(listener)

    def append_reserved(
        self,
        slot: int,
        unix_timestamp: int,
        tx: bytes,
        first_seq: int,
        record_count: int,
        state_hash: str | None = None,
    ) -> tuple[int, asyncio.Future[None]]:
        """Queue the next entry (after :meth:`reserve`); returns its index and a future that
        completes once it is durable. Never suspends, so callers keep their own ordering."""
        self._raise_if_unusable()
        if slot < self._last_slot:
            raise JournalError(f"slot {slot} is before the last entry's slot {self._last_slot}")
        if self._next_first_seq is not None and first_seq != self._next_first_seq:
            raise JournalError(
                f"first record seq {first_seq}, journal expects {self._next_first_seq}"
            )
        if record_count < 0:
            raise JournalError("record_count must be >= 0")
        index = self._last_index + 1
        entry = JournalEntry(index, slot, unix_timestamp, tx, first_seq, record_count, state_hash)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, done))
        self._last_index = index
        self._last_slot = slot
        self._next_first_seq = first_seq + record_count
        self._kick()
        return index, done

    async def append(
        self,
        slot: int,
        unix_timestamp: int,
        tx: bytes,
        first_seq: int,
        record_count: int,
        state_hash: str | None = None,
    ) -> int:
        """Append one entry and return its index once it is durable."""
        self.start()
        await self.reserve()
        try:
            index, done = self.append_reserved(
                slot, unix_timestamp, tx, first_seq, record_count, state_hash
            )
        except BaseException:
            self.release_reservation()
            raise
        # shield: a cancelled caller must not cancel the shared commit's bookkeeping
        await asyncio.shield(done)
        return index

    def append_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Queue a snapshot of the state after the last appended entry; it commits with (or
        after) that entry. A failure fails the journal like any write."""
        self._raise_if_unusable()
        self._check_snapshot(snapshot)
        self._pending.append((snapshot, None))
        self._latest_snapshot_index = snapshot.index
        self._kick()

    def _raise_if_unusable(self) -> None:
        if self._failure is not None:
            raise JournalFailedError(f"{self.path}: an earlier write failed") from self._failure
        if self._closed or self._stopping:
            raise JournalError("journal is closing")
        if self._loop is None:
            raise JournalError("journal writer not started")

    def flush(self) -> None:
        """Start writing what is pending now, not after the callbacks already queued on the
        loop: for an appender that knows its burst is over (the node's sequencer when its
        queue is empty), so the commit does not wait a turn of the loop. No-op while a group is
        in flight (what is pending joins the next one) or when nothing is pending."""
        if self._pending and not self._in_flight and self._failure is None and self._loop:
            self._flush()

    def _kick(self) -> None:
        """Schedule writing what is pending, unless a group is already being written or a
        write is already scheduled.

        The write is deferred with ``call_soon`` until the callbacks already queued on the
        loop have run: a burst of submitters woken together executes and appends first, and
        the whole burst shares one commit. In thread mode the group then goes to the writer
        thread, and the loop keeps executing transactions (which form the next group) while
        it commits and fsyncs without the GIL; inline mode commits on the loop thread."""
        if self._in_flight or self._flush_scheduled or not self._pending:
            return
        if self._failure is not None or self._loop is None:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        loop = self._loop
        if self._in_flight or not self._pending or self._failure is not None or loop is None:
            self._settle_idle()
            return
        batch, self._pending = self._pending, []
        items = [item for item, _ in batch]
        if self._executor is not None:
            if not self._idle_single(batch):
                self._in_flight = True
                writing = loop.run_in_executor(self._executor, self._write_on_thread, items)
                writing.add_done_callback(functools.partial(self._on_written, batch))
                return
            self.metrics.idle_inline += 1
        conn = self._writer_conn
        try:
            if conn is None:
                raise JournalError("the writer has no connection")
            seconds = _write_items(conn, items, self._keep_snapshots)
        except Exception as exc:
            self._fail(exc, batch + self._pending)
            self._pending = []
        else:
            self._committed(batch, seconds)
        self._settle_idle()

    def _idle_single(self, batch: list[tuple[_Item, asyncio.Future[None] | None]]) -> bool:
        """Whether a thread-mode group is written on the loop instead (module docstring):
        one entry, and no commit for :data:`IDLE_INLINE_AFTER` seconds."""
        return (
            self._inline_when_idle
            and len(batch) == 1
            and type(batch[0][0]) is JournalEntry
            and time.monotonic() - self._last_commit_end >= IDLE_INLINE_AFTER
        )

    def _connect_on_thread(self) -> float:
        # used by one thread at a time: this one, or the loop for an idle single entry while
        # no group is in flight here
        self._writer_conn = _connect(self.path, check_same_thread=False)
        return 0.0

    def _write_on_thread(self, items: list[_Item]) -> float:
        conn = self._writer_conn
        if conn is None:
            raise JournalError("the writer has no connection")
        return _write_items(conn, items, self._keep_snapshots)

    def _close_on_thread(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            conn.close()

    def _on_written(
        self, batch: list[tuple[_Item, asyncio.Future[None] | None]], writing: asyncio.Future[float]
    ) -> None:
        self._in_flight = False
        exc: BaseException | None = (
            asyncio.CancelledError() if writing.cancelled() else writing.exception()
        )
        if exc is not None:
            self._fail(exc, batch + self._pending)
            self._pending = []
        elif batch:
            self._committed(batch, writing.result())
        self._kick()
        self._settle_idle()

    def _settle_idle(self) -> None:
        idle = self._idle
        if (
            idle is not None
            and not idle.done()
            and not (self._in_flight or self._flush_scheduled or self._pending)
        ):
            idle.set_result(None)

    def _committed(
        self, batch: list[tuple[_Item, asyncio.Future[None] | None]], seconds: float
    ) -> None:
        n_entries = 0
        last_entry = 0
        for item, done in batch:
            if type(item) is JournalEntry:
                n_entries += 1
                last_entry = item.index
                self.release_reservation()
            else:
                self.metrics.snapshots += 1
            if done is not None and not done.done():
                done.set_result(None)
        self._last_commit_end = time.monotonic()
        m = self.metrics
        m.commits += 1
        m.entries += n_entries
        m.commit_seconds += seconds
        m.batch_sizes[n_entries] += 1
        m.max_batch = max(m.max_batch, n_entries)
        if self._on_commit is not None:
            self._on_commit(n_entries, seconds)
        if n_entries:
            self._durable_index = last_entry
            for listener in self._durable_listeners:
                listener(last_entry, None)

    def _fail(
        self, exc: BaseException, batch: list[tuple[_Item, asyncio.Future[None] | None]]
    ) -> None:
        self._failure = exc
        error = JournalFailedError(f"{self.path}: write failed: {exc!r}")
        for _, done in batch:
            if done is not None and not done.done():
                done.set_exception(error)
        # wake everyone waiting for room: they see the failure and raise
        while self._room_waiters:
            self.release_reservation()
        for listener in self._durable_listeners:
            listener(self._durable_index, error)

    # --- closing ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Write everything pending, mark the journal cleanly closed, release the file."""
        if self._closed:
            return
        self._stopping = True
        loop = self._loop
        if loop is not None:
            if self._in_flight or self._flush_scheduled or self._pending:
                self._idle = loop.create_future()
                self._kick()
                await self._idle
            if self._executor is not None:
                await loop.run_in_executor(self._executor, self._close_on_thread)
                self._executor.shutdown(wait=True)
                self._executor = None
            elif self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None
        self._finish_close()

    def close_sync(self) -> None:
        """Close a journal whose writer was never started (restore-only use)."""
        if self._closed:
            return
        if self._loop is not None:
            raise JournalError("the writer is running: use `await close()`")
        self._finish_close()

    def _finish_close(self) -> None:
        self._closed = True
        try:
            if self._failure is None:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean_shutdown', '1')")
        finally:
            self._conn.close()


def _insert_entries(conn: sqlite3.Connection, entries: list[JournalEntry]) -> None:
    """One multi-row INSERT: SQLite runs it in one step, so the writer thread gives up the
    GIL once for the whole group, not once per row (``executemany`` steps each row, and
    with the loop thread busy each step can wait a switch interval to get the GIL back)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(entries))
    params: list[object] = []
    for e in entries:
        params.extend(
            (e.index, e.slot, e.unix_timestamp, e.tx, e.first_seq, e.record_count, e.state_hash)
        )
    conn.execute(f"INSERT INTO entries VALUES {values}", params)  # noqa: S608 -- placeholders


def _write_items(conn: sqlite3.Connection, items: list[_Item], keep_snapshots: int) -> float:
    """Write ``items`` in one transaction and one commit; returns the seconds it took."""
    started = time.perf_counter()
    entries = [e for e in items if type(e) is JournalEntry]
    snapshots = [
        (s.index, s.slot, s.next_seq, s.data, s.state_hash)
        for s in items
        if isinstance(s, StoredSnapshot)
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for at in range(0, len(entries), _ROWS_PER_INSERT):
            _insert_entries(conn, entries[at : at + _ROWS_PER_INSERT])
        if snapshots:
            conn.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)", snapshots)
            # genesis (idx 0) always stays: it proves which genesis the journal was made from
            conn.execute(
                "DELETE FROM snapshots WHERE idx > 0 AND idx NOT IN "
                "(SELECT idx FROM snapshots WHERE idx > 0 ORDER BY idx DESC LIMIT ?)",
                (keep_snapshots,),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return time.perf_counter() - started
