"""The journal: durable, ordered, gap-free group-commit appends in SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

import keepers.journal
from keepers.journal import (
    Journal,
    JournalCorruptError,
    JournalEntry,
    JournalError,
    JournalFailedError,
    JournalGapError,
    StoredSnapshot,
    WriterMode,
)

MODES: list[WriterMode] = ["thread", "inline"]


def tx(i: int) -> bytes:
    return b"tx-" + i.to_bytes(4, "little")


async def fill(journal: Journal, n: int, *, records: int = 2, slot: int = 10) -> list[int]:
    """``n`` concurrent appends; entry i (1-based) starts at seq 1 + 2 (i - 1)."""
    journal.start()

    async def one(i: int) -> int:
        await journal.reserve()
        index, done = journal.append_reserved(slot, 1_000 + i, tx(i), 1 + records * i, records)
        await done
        return index

    return await asyncio.gather(*(one(i) for i in range(n)))


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_appends_read_back_exactly_after_reopen(tmp_path: Path, mode: WriterMode) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path, writer=mode)
    journal.start()
    assert await journal.append(5, 100, b"first", 1, 3, "ab" * 32) == 1
    assert await journal.append(7, 101, b"second", 4, 0) == 2
    assert await journal.append(7, 102, b"third", 4, 1) == 3
    await journal.close()

    again = Journal.open(path, writer=mode)
    assert again.clean_shutdown
    assert again.last_index == 3
    assert again.last_slot == 7
    assert list(again.entries()) == [
        JournalEntry(1, 5, 100, b"first", 1, 3, "ab" * 32),
        JournalEntry(2, 7, 101, b"second", 4, 0, None),
        JournalEntry(3, 7, 102, b"third", 4, 1, None),
    ]
    assert [e.index for e in again.entries(after=1)] == [2, 3]
    assert again.entry(2) == JournalEntry(2, 7, 101, b"second", 4, 0, None)
    assert again.entry(4) is None
    again.close_sync()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_appends_share_commits_and_keep_call_order(
    tmp_path: Path, mode: WriterMode
) -> None:
    commits: list[tuple[int, float]] = []
    journal = Journal.open(
        tmp_path / "j.db", writer=mode, on_commit=lambda n, s: commits.append((n, s))
    )
    indexes = await fill(journal, 300)
    assert indexes == list(range(1, 301))
    m = journal.metrics
    assert m.entries == 300
    assert sum(size * count for size, count in m.batch_sizes.items()) == 300
    assert m.commits == len(commits) == sum(m.batch_sizes.values())
    # 300 appends issued before the writer ran even once: far fewer commits than entries
    assert m.commits < 30
    assert m.max_batch > 10
    assert m.entries_per_commit == 300 / m.commits
    assert Counter(n for n, _ in commits) == m.batch_sizes  # the hook saw every commit
    assert all(seconds > 0 for _, seconds in commits)
    assert [e.tx for e in journal.entries()] == [tx(i) for i in range(300)]
    await journal.close()


@pytest.mark.asyncio
async def test_append_returns_only_once_another_connection_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    journal.start()
    await journal.reserve()
    index, done = journal.append_reserved(1, 2, b"x", 1, 1)
    other = raw(path)
    assert other.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)  # not yet written
    await done
    assert other.execute("SELECT idx, tx FROM entries").fetchall() == [(index, b"x")]
    other.close()
    await journal.close()


@pytest.mark.asyncio
async def test_the_buffer_is_bounded_by_max_pending(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db", max_pending=3)
    await fill(journal, 10)
    assert journal.metrics.max_batch <= 3
    assert journal.metrics.entries == 10
    assert [e.tx for e in journal.entries()] == [tx(i) for i in range(10)]
    await journal.close()


@pytest.mark.asyncio
async def test_a_cancelled_appender_does_not_lose_or_break_the_commit(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    journal.start()
    task = asyncio.create_task(journal.append(1, 1, b"a", 1, 1))
    await asyncio.sleep(0)  # the task has queued its entry and waits for the commit
    task.cancel()
    assert await journal.append(1, 1, b"b", 2, 1) == 2
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.tx for e in journal.entries()] == [b"a", b"b"]
    await journal.close()


@pytest.mark.asyncio
async def test_out_of_order_appends_are_refused(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    journal.start()
    await journal.append(10, 1, b"a", 1, 2)
    with pytest.raises(JournalError, match="first record seq 4, journal expects 3"):
        await journal.append(10, 1, b"b", 4, 1)
    with pytest.raises(JournalError, match="slot 9 is before the last entry's slot 10"):
        await journal.append(9, 1, b"b", 3, 1)
    with pytest.raises(JournalError, match="record_count must be >= 0"):
        await journal.append(10, 1, b"b", 3, -1)
    assert await journal.append(10, 1, b"b", 3, 1) == 2  # reservations were given back
    await journal.close()


@pytest.mark.asyncio
async def test_a_failed_write_fails_the_append_and_everything_after(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    journal.start()
    other = raw(path)
    other.execute("INSERT INTO entries VALUES (1, 0, 0, x'00', 1, 0, NULL)")  # steals idx 1
    other.close()
    with pytest.raises(JournalFailedError, match="write failed"):
        await journal.append(1, 1, b"a", 1, 1)
    assert journal.failed
    with pytest.raises(JournalFailedError):
        await journal.append(1, 1, b"b", 2, 1)
    await journal.close()
    # a failed journal is not marked clean: the next open knows
    reopened = Journal.open(path)
    assert not reopened.clean_shutdown
    reopened.close_sync()


@pytest.mark.asyncio
async def test_an_unclosed_journal_is_reported_unclean(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal.open(path)
    first.start()
    await first.append(1, 1, b"a", 1, 1)
    second = Journal.open(path)  # as a restarted process would, before `first` closes
    assert not second.clean_shutdown
    assert second.last_index == 1
    second.close_sync()
    await first.close()


def _journal_with_rows(path: Path, rows: list[tuple[int, int, int, int]]) -> None:
    """rows: (idx, slot, first_seq, record_count)"""
    Journal.open(path).close_sync()
    conn = raw(path)
    conn.executemany(
        "INSERT INTO entries VALUES (?, ?, 0, x'00', ?, ?, NULL)",
        rows,
    )
    conn.close()


def test_a_missing_entry_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _journal_with_rows(path, [(1, 1, 1, 2), (2, 1, 3, 1), (4, 2, 4, 1)])
    with pytest.raises(JournalGapError, match="journal entry 3: missing: entry 4 follows entry 2"):
        Journal.open(path)
    try:
        Journal.open(path)
    except JournalGapError as exc:
        assert exc.index == 3


def test_a_journal_not_starting_at_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _journal_with_rows(path, [(2, 1, 1, 1)])
    with pytest.raises(JournalGapError, match="journal entry 2: the journal does not start"):
        Journal.open(path)


def test_a_sequence_gap_is_refused_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    # entry 2 ends at seq 3 + 1 = 4, entry 3 claims to start at 5
    _journal_with_rows(path, [(1, 1, 1, 2), (2, 1, 3, 1), (3, 1, 5, 1)])
    with pytest.raises(JournalGapError, match="journal entry 3: first record seq 5, expected 4"):
        Journal.open(path)


def test_a_slot_going_back_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _journal_with_rows(path, [(1, 5, 1, 1), (2, 4, 2, 1)])
    with pytest.raises(JournalGapError, match="journal entry 2: slot 4 is before"):
        Journal.open(path)


def test_a_lost_tail_under_a_later_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    _journal_with_rows(path, [(1, 5, 1, 1)])
    conn = raw(path)
    conn.execute("INSERT INTO snapshots VALUES (3, 5, 4, x'00', 'h')")
    conn.close()
    with pytest.raises(JournalGapError, match="journal entry 2: missing: a snapshot"):
        Journal.open(path)


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"not sqlite at all " * 300)
    with pytest.raises(JournalCorruptError, match="file is not a database"):
        Journal.open(path)


@pytest.mark.asyncio
async def test_a_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    await fill(journal, 300)
    await journal.close()  # checkpoints the WAL into the main file
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(JournalCorruptError, match="malformed"):
        Journal.open(path)


@pytest.mark.asyncio
async def test_snapshots_are_pruned_to_genesis_and_the_newest(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db", keep_snapshots=2)
    journal.write_snapshot(StoredSnapshot(0, 0, 1, b"genesis", "g"))
    journal.start()
    for i in range(1, 5):
        await journal.reserve()
        journal.append_reserved(i, i, tx(i), i, 1)
        journal.append_snapshot(StoredSnapshot(i, i, i + 1, b"s", f"h{i}"))
    await journal.append(5, 5, tx(5), 5, 1)  # after the last snapshot's commit
    assert journal.snapshot_indexes() == [0, 3, 4]
    latest = journal.latest_snapshot()
    assert latest == StoredSnapshot(4, 4, 5, b"s", "h4")
    assert journal.latest_snapshot_index == 4
    assert journal.metrics.snapshots == 4
    with pytest.raises(JournalError, match="snapshot at entry 4, but the last entry is 5"):
        journal.append_snapshot(StoredSnapshot(4, 4, 5, b"s", "x"))
    with pytest.raises(JournalError, match="synchronous writes only before"):
        journal.write_snapshot(StoredSnapshot(5, 5, 6, b"s", "x"))
    await journal.close()


def test_the_first_entry_must_continue_the_genesis_sequence(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    journal.write_snapshot(StoredSnapshot(0, 0, 10, b"g", "g"))
    journal.close_sync()
    conn = raw(path)
    conn.execute("INSERT INTO entries VALUES (1, 1, 0, x'00', 11, 1, NULL)")
    conn.close()
    with pytest.raises(JournalGapError, match="first record seq 11, genesis next_seq 10"):
        Journal.open(path)


def test_appending_needs_a_started_writer(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    with pytest.raises(JournalError, match="writer not started"):
        journal.append_reserved(1, 1, b"a", 1, 1)
    journal.close_sync()
    with pytest.raises(JournalError, match="closed"):
        journal.start()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Journal.open(tmp_path / "j.db", max_pending=0)
    with pytest.raises(ValueError, match="unknown writer mode"):
        Journal.open(tmp_path / "j.db", writer="fast")  # type: ignore[arg-type]


# --- room, durable listeners and large groups ---------------------------------------------
@pytest.mark.asyncio
async def test_room_is_handed_out_first_come_first_served(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db", max_pending=2)
    journal.start()
    assert journal.try_reserve() and journal.try_reserve()
    assert not journal.try_reserve()  # full: the next one has to wait
    order: list[str] = []

    async def waiter(name: str) -> None:
        await journal.reserve()
        order.append(name)

    first = asyncio.create_task(waiter("first"))
    cancelled = asyncio.create_task(waiter("cancelled"))
    last = asyncio.create_task(waiter("last"))
    await asyncio.sleep(0)
    cancelled.cancel()
    journal.release_reservation()
    journal.release_reservation()
    await asyncio.gather(first, last, return_exceptions=True)
    assert order == ["first", "last"]
    assert cancelled.cancelled()
    assert not journal.try_reserve()  # both rooms went to the two live waiters
    journal.release_reservation()
    journal.release_reservation()
    await journal.close()


@pytest.mark.asyncio
async def test_room_handed_to_a_waiter_cancelled_at_once_passes_to_the_next(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path / "j.db", max_pending=1)
    journal.start()
    assert journal.try_reserve()
    first = asyncio.create_task(journal.reserve())
    second = asyncio.create_task(journal.reserve())
    await asyncio.sleep(0)
    journal.release_reservation()  # goes to `first` ...
    first.cancel()  # ... which is cancelled before it runs again
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await second  # so the room went on to `second`
    assert first.cancelled()
    assert not journal.try_reserve()
    journal.release_reservation()
    await journal.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_durable_listeners_hear_once_per_commit_with_the_last_index(
    tmp_path: Path, mode: WriterMode
) -> None:
    journal = Journal.open(tmp_path / "j.db", writer=mode)
    heard: list[tuple[int, BaseException | None]] = []
    journal.add_durable_listener(lambda index, failure: heard.append((index, failure)))
    await fill(journal, 5)
    assert journal.metrics.commits == len(heard)
    assert heard[-1] == (5, None)
    assert [index for index, _ in heard] == sorted({index for index, _ in heard})
    assert journal.durable_index == 5
    await journal.close()


@pytest.mark.asyncio
async def test_a_failure_reaches_the_durable_listeners_once(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    await fill(journal, 2)
    heard: list[tuple[int, BaseException | None]] = []
    journal.add_durable_listener(lambda index, failure: heard.append((index, failure)))
    other = raw(path)
    other.execute("INSERT INTO entries VALUES (3, 0, 0, x'00', 5, 0, NULL)")  # steals idx 3
    other.close()
    with pytest.raises(JournalFailedError):
        await journal.append(10, 1, b"c", 5, 1)
    [(index, failure)] = heard
    assert index == 2 and isinstance(failure, JournalFailedError)
    await journal.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_a_group_larger_than_one_insert_statement_reads_back_exactly(
    tmp_path: Path, mode: WriterMode
) -> None:
    n = keepers.journal._ROWS_PER_INSERT * 2 + 7
    journal = Journal.open(tmp_path / "j.db", writer=mode, max_pending=n)
    journal.start()
    futures = []
    for i in range(n):
        assert journal.try_reserve()
        checkpoint = f"hash-{i}" if i % 500 == 0 else None
        futures.append(journal.append_reserved(10, i, tx(i), 1 + i, 1, checkpoint)[1])
    await asyncio.gather(*futures)
    assert journal.metrics.commits == 1  # one group, three INSERT statements
    entries = list(journal.entries())
    assert [e.tx for e in entries] == [tx(i) for i in range(n)]
    assert [e.unix_timestamp for e in entries] == list(range(n))
    assert [e.state_hash for e in entries if e.state_hash] == [
        f"hash-{i}" for i in range(0, n, 500)
    ]
    await journal.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("inline_when_idle", [True, False])
async def test_a_lone_entry_after_a_quiet_spell_is_committed_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_when_idle: bool
) -> None:
    monkeypatch.setattr(keepers.journal, "IDLE_INLINE_AFTER", 60.0)  # only the first is idle
    path = tmp_path / "j.db"
    journal = Journal.open(path, writer="thread", inline_when_idle=inline_when_idle)
    journal.start()
    assert await journal.append(1, 100, b"lone", 1, 1) == 1  # nothing committed before
    assert await journal.append(1, 101, b"soon after", 2, 1) == 2  # 60 s have not passed
    await asyncio.gather(
        journal.append(2, 102, b"burst-1", 3, 1), journal.append(2, 103, b"burst-2", 4, 1)
    )
    metrics = journal.metrics
    assert (metrics.idle_inline, metrics.commits, metrics.entries) == (
        (1 if inline_when_idle else 0),
        3,
        4,
    )
    await journal.close()
    reopened = Journal.open(path)
    assert [e.tx for e in reopened.entries()] == [b"lone", b"soon after", b"burst-1", b"burst-2"]
    reopened.close_sync()


@pytest.mark.asyncio
@pytest.mark.parametrize("flush", [True, False])
async def test_flush_starts_the_commit_before_the_loop_turns(tmp_path: Path, flush: bool) -> None:
    journal = Journal.open(tmp_path / "j.db", writer="thread", inline_when_idle=False)
    journal.start()
    await journal.append(1, 100, b"connects the writer", 1, 0)
    await journal.reserve()
    _, first = journal.append_reserved(1, 101, b"first", 1, 0)
    if flush:
        journal.flush()  # the group [first] goes to the writer thread now
    await journal.reserve()
    _, second = journal.append_reserved(1, 102, b"second", 1, 0)
    await asyncio.gather(first, second)
    # flushed: "second" came too late for the group in flight; otherwise both shared one
    assert journal.metrics.batch_sizes == (Counter({1: 3}) if flush else Counter({1: 1, 2: 1}))
    await journal.close()
