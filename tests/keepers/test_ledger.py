"""The ledger: acknowledgement after durability, restore to the exact state, crash safety."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from itertools import accumulate
from pathlib import Path

import pytest

from keepers.journal import JournalError
from keepers.ledger import Ledger, LedgerConfig, Receipt, ReplayError
from keepers.snapshot import SnapshotError
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import Deposit, InitializeUser, Withdraw
from protocol.program import Executed, Program
from protocol.state_hash import state_hash
from protocol.transaction import Transaction
from tests.keepers.scenario import Round, build_rounds, clock_at, genesis
from tests.protocol.world import USDC, USDC_UNIT, keypair

ROOT = Path(__file__).resolve().parents[2]
ALICE = keypair(1)


def signup(kp_seed: int, slot: int, usdc: int = 100) -> bytes:
    kp = keypair(kp_seed)
    return Transaction.sign(
        [InitializeUser(kp.pubkey, 0), Deposit(kp.pubkey, 0, USDC, usdc * USDC_UNIT)],
        slot,
        [kp],
    ).to_bytes()


def deposit(kp_seed: int, slot: int, usdc: int) -> bytes:
    kp = keypair(kp_seed)
    return Transaction.sign([Deposit(kp.pubkey, 0, USDC, usdc * USDC_UNIT)], slot, [kp]).to_bytes()


async def run_rounds(ledger: Ledger, rounds: list[Round]) -> None:
    for rnd in rounds:
        results = await asyncio.gather(*(ledger.submit(raw, rnd.clock) for raw in rnd.txs))
        assert all(isinstance(r, Executed) for r in results), results


def reference_hash(rounds: list[Round], count: int) -> str:
    """The state after the first ``count`` transactions, executed by a bare Program."""
    program = Program(genesis())
    done = 0
    for rnd in rounds:
        for raw in rnd.txs:
            if done == count:
                return state_hash(program.state, program.next_seq)
            assert program.execute_bytes(raw, rnd.clock)
            done += 1
    assert done == count
    return state_hash(program.state, program.next_seq)


@pytest.mark.asyncio
async def test_an_accepted_transaction_is_journaled_before_it_is_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(path, genesis())
    raw = signup(1, clock_at(0).slot)
    receipt = await ledger.submit_receipt(raw, clock_at(0))
    assert isinstance(receipt, Receipt)
    assert receipt.index == 1
    # visible to another connection the moment the ack returns
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT idx, slot, tx, first_seq, record_count FROM entries").fetchall()
    conn.close()
    assert row == [(1, clock_at(0).slot, raw, 1, len(receipt.executed.records))]
    assert receipt.executed.records[0].seq == 1
    assert ledger.next_seq == 1 + len(receipt.executed.records)
    await ledger.close()


@pytest.mark.asyncio
async def test_rejections_are_not_journaled_and_change_nothing(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.db", genesis())
    await ledger.submit(signup(1, clock_at(0).slot), clock_at(0))
    before = ledger.state_hash()
    over = Transaction.sign(
        [Withdraw(ALICE.pubkey, 0, USDC, 10**9 * USDC_UNIT)], clock_at(0).slot, [ALICE]
    ).to_bytes()
    result = await ledger.submit(over, clock_at(0))
    assert isinstance(result, Rejected)
    garbage = await ledger.submit(b"DKTX\x01", clock_at(0))
    assert isinstance(garbage, Rejected)
    assert garbage.code == ErrorCode.MalformedTransaction
    assert ledger.state_hash() == before
    assert ledger.last_index == 1
    assert ledger.journal.count() == 1
    await ledger.close()


@pytest.mark.asyncio
async def test_simulate_commits_nothing(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.db", genesis())
    raw = signup(1, clock_at(0).slot)
    before = ledger.state_hash()
    simulated = ledger.simulate(raw, clock_at(0))
    assert isinstance(simulated, Executed)
    assert ledger.state_hash() == before
    assert ledger.last_index == 0
    assert isinstance(ledger.simulate(b"junk", clock_at(0)), Rejected)
    assert isinstance(await ledger.submit(raw, clock_at(0)), Executed)  # id not consumed
    await ledger.close()


@pytest.mark.asyncio
async def test_concurrent_submits_group_commit_in_submission_order(tmp_path: Path) -> None:
    rounds, hashes = build_rounds(seed=3, n_users=6, n_rounds=12, per_round=25)
    ledger = Ledger.open(tmp_path / "ledger.db", genesis())
    await run_rounds(ledger, rounds)
    expected = [raw for rnd in rounds for raw in rnd.txs]
    assert [e.tx for e in ledger.journal.entries()] == expected
    assert ledger.state_hash() == hashes[-1]
    m = ledger.metrics
    assert m.entries == len(expected)
    assert m.commits < len(expected) / 5  # each round's transactions share commits
    await ledger.close()


@pytest.mark.asyncio
async def test_close_and_reopen_restores_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    rounds, hashes = build_rounds(seed=4, n_users=5, n_rounds=8, per_round=10)
    ledger = Ledger.open(path, genesis(), config=LedgerConfig(snapshot_every=25))
    await run_rounds(ledger, rounds)
    closing_hash = await ledger.close()
    assert closing_hash == hashes[-1]

    again = Ledger.open(path, genesis())
    assert again.restored.clean_shutdown
    assert again.restored.snapshot_index == again.last_index  # the snapshot taken at close
    assert again.restored.replayed == 0
    assert again.state_hash() == closing_hash
    assert again.restored.state_hash == closing_hash
    await again.close()


def _drop_snapshots_after(path: Path, index: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM snapshots WHERE idx > ?", (index,))
    conn.close()


@pytest.mark.asyncio
async def test_restore_replays_entries_after_the_newest_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    rounds, hashes = build_rounds(seed=5, n_users=5, n_rounds=8, per_round=10)
    config = LedgerConfig(snapshot_every=20, checkpoint_every=7, keep_snapshots=3)
    ledger = Ledger.open(path, genesis(), config=config)
    await run_rounds(ledger, rounds)
    total = ledger.last_index
    await ledger.close()
    assert total == 5 + 7 * 10  # 5 sign-ups, then 10 per round

    _drop_snapshots_after(path, 60)  # as if the process died after entry 75 unsnapshotted
    again = Ledger.open(path, genesis(), config=config)
    assert again.restored.snapshot_index == 60
    assert again.restored.replayed == 15
    assert again.state_hash() == hashes[-1]
    await again.close()

    _drop_snapshots_after(path, 0)  # only genesis left: replay everything
    from_genesis = Ledger.open(path, genesis(), config=config)
    assert from_genesis.restored.snapshot_index == 0
    assert from_genesis.restored.replayed == total
    assert from_genesis.state_hash() == hashes[-1]
    await from_genesis.close()


@pytest.mark.asyncio
async def test_restore_keeps_the_replay_window_across_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(path, genesis(), config=LedgerConfig(snapshot_every=1))
    early = signup(1, clock_at(0).slot)
    await ledger.submit(early, clock_at(0))
    late = signup(2, clock_at(100).slot)
    await ledger.submit(late, clock_at(100))
    await ledger.close()  # snapshot after entry 2, taken at slot START_SLOT + 100

    again = Ledger.open(path, genesis())
    assert again.restored.snapshot_index == 2
    assert again.restored.replayed == 0
    # max_transaction_age_slots is 150: both entries (slots +0 and +100) are inside
    # [slot - 150, slot] of the snapshot's slot +100, so both ids are re-registered
    assert again.restored.remembered == 2
    result = await again.submit(early, clock_at(120))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.DuplicateTransaction
    result = await again.submit(late, clock_at(120))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.DuplicateTransaction
    # once the window has passed `early` is refused for its age instead
    result = await again.submit(early, clock_at(151))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.StaleTransaction
    await again.close()

    third = Ledger.open(path, genesis())
    # snapshot still after entry 2 at slot +100: window reaches back to slot -50, both in
    assert third.restored.remembered == 2
    await third.close()


@pytest.mark.asyncio
async def test_a_journal_from_another_genesis_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(path, genesis())
    await ledger.close()
    other = genesis()
    other.oracles["SOL/USD"].price += 1
    with pytest.raises(JournalError, match="different genesis"):
        Ledger.open(path, other)


def _tamper(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(sql, args)
    conn.close()


async def _ledger_with_entries(path: Path, *, checkpoint_every: int = 0) -> None:
    config = LedgerConfig(snapshot_every=0, checkpoint_every=checkpoint_every)
    ledger = Ledger.open(path, genesis(), config=config)
    for i in range(4):
        await ledger.submit(signup(1 + i, clock_at(i).slot), clock_at(i))
    await ledger.close()
    _drop_snapshots_after(path, 0)


@pytest.mark.asyncio
async def test_a_tampered_entry_fails_replay_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await _ledger_with_entries(path)
    # a valid transaction, but not the recorded one: one record where a sign-up emitted more
    other = deposit(1, clock_at(2).slot, 5)
    _tamper(path, "UPDATE entries SET tx = ? WHERE idx = 3", other)
    with pytest.raises(ReplayError, match="replay of journal entry 3: emitted 1 records") as info:
        Ledger.open(path, genesis())
    assert info.value.index == 3
    flipped = bytearray(signup(3, clock_at(2).slot))
    flipped[10] ^= 1  # inside the first signature
    _tamper(path, "UPDATE entries SET tx = ? WHERE idx = 3", bytes(flipped))
    with pytest.raises(ReplayError, match="entry 3: rejected on replay: InvalidSignature"):
        Ledger.open(path, genesis())


@pytest.mark.asyncio
async def test_a_wrong_checkpoint_fails_replay_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await _ledger_with_entries(path, checkpoint_every=2)
    conn = sqlite3.connect(path)
    checkpoints = conn.execute("SELECT idx FROM entries WHERE state_hash IS NOT NULL").fetchall()
    conn.close()
    assert checkpoints == [(2,), (4,)]
    _tamper(path, "UPDATE entries SET state_hash = ? WHERE idx = 4", "00" * 32)
    with pytest.raises(ReplayError, match="entry 4: state hash") as info:
        Ledger.open(path, genesis())
    assert info.value.index == 4


@pytest.mark.asyncio
async def test_a_substituted_entry_is_caught_at_the_next_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    await _ledger_with_entries(path, checkpoint_every=2)
    # user 9 signs up where user 3 did: as many records, a different state
    _tamper(path, "UPDATE entries SET tx = ? WHERE idx = 3", signup(9, clock_at(2).slot))
    with pytest.raises(ReplayError, match="entry 4: state hash"):
        Ledger.open(path, genesis())


@pytest.mark.asyncio
async def test_a_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(path, genesis())
    await ledger.submit(signup(1, clock_at(0).slot), clock_at(0))
    await ledger.close()
    _tamper(path, "UPDATE snapshots SET state_hash = ? WHERE idx = 1", "11" * 32)
    with pytest.raises(SnapshotError, match="snapshot after entry 1 hashes"):
        Ledger.open(path, genesis())
    _tamper(path, "UPDATE snapshots SET state = ? WHERE idx = 1", b"\x93\x01\x02\x03")
    with pytest.raises(SnapshotError, match="snapshot after entry 1: not a snapshot"):
        Ledger.open(path, genesis())


@pytest.mark.asyncio
async def test_a_clock_going_back_is_refused_before_executing(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.db", genesis())
    await ledger.submit(signup(1, clock_at(5).slot), clock_at(5))
    before = ledger.state_hash()
    with pytest.raises(ValueError, match="before the last journaled slot"):
        await ledger.submit(signup(2, clock_at(4).slot), clock_at(4))
    assert ledger.state_hash() == before
    assert isinstance(await ledger.submit(deposit(1, clock_at(5).slot, 5), clock_at(5)), Executed)
    await ledger.close()
    with pytest.raises(JournalError, match="closed"):
        await ledger.submit(deposit(1, clock_at(5).slot, 6), clock_at(5))


# --- a real crash ---------------------------------------------------------------------------
SEED, USERS, ROUNDS, PER_ROUND, SNAPSHOT_EVERY, ROUND_MS = 7, 8, 40, 20, 97, 4


@pytest.mark.timeout(60)
def test_sigkill_mid_run_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    args = [str(a) for a in (path, SEED, USERS, ROUNDS, PER_ROUND, SNAPSHOT_EVERY, ROUND_MS)]
    proc = subprocess.Popen(  # noqa: S603 -- our own helper module, fixed arguments
        [sys.executable, "-m", "tests.keepers.crash_node", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the reference inputs, built while the node process starts up on the other core
    rounds, hashes = build_rounds(SEED, USERS, ROUNDS, PER_ROUND)
    acked: list[int] = []
    printed: dict[int, str] = {}
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            word, *rest = line.split()
            if word == "ack":
                acked.append(int(rest[0]))
            elif word == "hash":
                printed[int(rest[0])] = rest[1]
            elif word == "done":
                break
            if len(acked) >= 300:  # about 40% through: kill mid-run
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr
    assert len(acked) >= 300, stderr

    inputs = [raw for rnd in rounds for raw in rnd.txs]

    async def reopen() -> None:
        ledger = Ledger.open(path, genesis(), config=LedgerConfig(snapshot_every=SNAPSHOT_EVERY))
        restored = ledger.restored
        assert not restored.clean_shutdown
        durable = ledger.last_index
        assert durable < len(inputs)  # killed mid-run
        # every acknowledged transaction survived, at the index it was acknowledged with
        assert max(acked) <= durable
        assert sorted(acked) == list(range(1, len(acked) + 1))
        # the journal is exactly the submitted inputs, in submission order
        assert [e.tx for e in ledger.journal.entries()] == inputs[:durable]
        # restored from a periodic snapshot, then the entries after it replayed
        assert restored.snapshot_index == durable // SNAPSHOT_EVERY * SNAPSHOT_EVERY
        assert restored.replayed == durable - restored.snapshot_index
        # the state equals an independent re-execution of the same inputs
        assert ledger.state_hash() == reference_hash(rounds, durable)
        if durable in printed:
            assert ledger.state_hash() == printed[durable]
        # every hash the process printed (after each round) is the reference's for that round
        ends = list(accumulate(len(rnd.txs) for rnd in rounds))
        assert printed
        assert all(printed[index] == hashes[ends.index(index)] for index in printed)
        # an acknowledged transaction cannot be executed twice after the restart
        clocks = [rnd.clock for rnd in rounds for _ in rnd.txs]
        repeat = await ledger.submit(inputs[durable - 1], clocks[durable - 1])
        assert isinstance(repeat, Rejected)
        assert repeat.code == ErrorCode.DuplicateTransaction
        # and the node carries on: the remaining inputs bring it to the scenario's final state
        done = 0
        for rnd in rounds:
            for raw in rnd.txs:
                done += 1
                if done > durable:
                    assert isinstance(await ledger.submit(raw, rnd.clock), Executed)
        assert ledger.state_hash() == hashes[-1]
        await ledger.close()

    asyncio.run(reopen())


@pytest.mark.asyncio
async def test_a_crashing_handler_changes_nothing_and_frees_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protocol.instructions.registry import HANDLERS

    # one place in the journal buffer: a leaked reservation would block the next submit forever
    ledger = Ledger.open(tmp_path / "ledger.db", genesis(), config=LedgerConfig(max_pending=1))
    await ledger.submit(signup(1, clock_at(0).slot), clock_at(0))
    before = ledger.state_hash()

    def broken(accounts: object, ix: object) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setitem(HANDLERS, Deposit, broken)
    with pytest.raises(RuntimeError, match="handler bug"):
        await ledger.submit(deposit(1, clock_at(0).slot, 7), clock_at(0))
    monkeypatch.undo()
    assert ledger.state_hash() == before
    async with asyncio.timeout(5):
        result = await ledger.submit(deposit(1, clock_at(0).slot, 8), clock_at(0))
    assert isinstance(result, Executed)
    assert ledger.last_index == 2
    await ledger.close()


@pytest.mark.asyncio
async def test_a_failing_periodic_snapshot_is_counted_and_the_journal_still_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keepers.ledger

    def unencodable(snapshot: object) -> bytes:
        raise TypeError("state.users: cannot snapshot a set")

    path = tmp_path / "ledger.db"
    ledger = Ledger.open(path, genesis(), config=LedgerConfig(snapshot_every=1))
    monkeypatch.setattr(keepers.ledger, "encode_snapshot", unencodable)
    receipt = await ledger.submit_receipt(signup(1, clock_at(0).slot), clock_at(0))
    assert isinstance(receipt, Receipt)
    assert ledger.snapshot_failures == 1
    assert ledger.journal.snapshot_indexes() == [0]
    expected = ledger.state_hash()
    monkeypatch.undo()
    await ledger.close()
    _drop_snapshots_after(path, 0)
    again = Ledger.open(path, genesis())
    assert again.restored.replayed == 1
    assert again.state_hash() == expected
    await again.close()
