"""The process verify pool: real worker processes (:mod:`keepers.verify_worker`) checking real
signatures; outcomes in submission order, a dead worker's batches failed and the worker
replaced, everything submitted answered on close."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import msgspec
import pytest

import keepers.verify_pool
from keepers.verify_pool import ProcessVerifyPool, WorkerExitedError
from keepers.verify_worker import verify_frame
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import Deposit
from protocol.transaction import Transaction, VerifiedTransaction, parse_transaction
from tests.keepers.node_helpers import deposit, keypair

ALICE = keypair(1)
BOB = keypair(2)


def signed(n: int) -> Transaction:
    return parse_transaction(deposit(ALICE, 1, n + 1))


def forged(n: int) -> Transaction:
    raw = bytearray(deposit(ALICE, 1, n + 1))
    raw[10] ^= 0xFF  # inside the first signature
    return parse_transaction(bytes(raw))


class Outcomes:
    """Collects ``(tag, outcome)``; ``await wait(n)`` until ``n`` arrived."""

    def __init__(self) -> None:
        self.got: list[tuple[int, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, tag: int, outcome: Any) -> None:
        self.got.append((tag, outcome))
        self._changed.set()

    async def wait(self, n: int) -> None:
        async with asyncio.timeout(20):
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()


@pytest.mark.asyncio
async def test_outcomes_come_back_in_submission_order_across_workers_and_batches() -> None:
    outcomes = Outcomes()
    pool: ProcessVerifyPool[int] = ProcessVerifyPool(outcomes, workers=2, max_batch=8)
    await pool.start()
    try:
        assert len(pool.pids) == 2
        txs = [forged(n) if n % 7 == 3 else signed(n) for n in range(100)]
        for n, tx in enumerate(txs):
            pool.submit(tx, n)
        await outcomes.wait(100)
    finally:
        await pool.close()
    assert [tag for tag, _ in outcomes.got] == list(range(100))
    for n, outcome in outcomes.got:
        if n % 7 == 3:
            assert outcome == Rejected(
                ErrorCode.InvalidSignature, "signature 0 does not verify", "signatures[0]"
            )
        else:
            assert isinstance(outcome, VerifiedTransaction)
            assert outcome.transaction is txs[n]
            assert outcome.message == txs[n].wire_message


@pytest.mark.asyncio
async def test_a_dead_worker_fails_its_batches_and_is_replaced() -> None:
    outcomes = Outcomes()
    # the idle path off: the lone submission below must wait for the replacement worker
    pool: ProcessVerifyPool[int] = ProcessVerifyPool(outcomes, workers=1, inline_when_idle=False)
    await pool.start()
    try:
        [pid] = pool.pids
        os.kill(pid, signal.SIGSTOP)  # it reads nothing more: the batch below stays queued
        pool.submit(signed(0), 0)
        pool.submit(signed(1), 1)
        await asyncio.sleep(0)  # the batch goes down the pipe
        os.kill(pid, signal.SIGKILL)
        await outcomes.wait(2)
        assert [tag for tag, _ in outcomes.got] == [0, 1]
        for _, outcome in outcomes.got:
            assert isinstance(outcome, WorkerExitedError)
            assert outcome.returncode == -signal.SIGKILL
        pool.submit(signed(2), 2)  # waits for the replacement, which takes it when it is up
        await outcomes.wait(3)
        assert isinstance(outcomes.got[2][1], VerifiedTransaction)
        assert pool.restarts == 1
        assert len(pool.pids) == 1 and pool.pids != [pid]
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_close_answers_everything_submitted() -> None:
    outcomes = Outcomes()
    pool: ProcessVerifyPool[int] = ProcessVerifyPool(outcomes, workers=1, max_batch=4)
    await pool.start()
    for n in range(20):
        pool.submit(signed(n), n)
    await pool.close()  # before the loop ran once: nothing was even dispatched yet
    assert [tag for tag, _ in outcomes.got] == list(range(20))
    assert all(isinstance(o, VerifiedTransaction) for _, o in outcomes.got)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(signed(0), 0)


@pytest.mark.asyncio
async def test_a_transaction_built_in_memory_is_an_error_outcome_not_a_hang() -> None:
    outcomes = Outcomes()
    pool: ProcessVerifyPool[int] = ProcessVerifyPool(outcomes, workers=1)
    await pool.start()
    try:
        built = Transaction.sign([Deposit(ALICE.pubkey, 0, 0, 5)], 1, [ALICE])
        pool.submit(built, 0)  # signed correctly, but never parsed: no wire message
        pool.submit(signed(1), 1)
        await outcomes.wait(2)
    finally:
        await pool.close()
    first, second = (o for _, o in outcomes.got)
    assert isinstance(first, ValueError)
    assert isinstance(second, VerifiedTransaction)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["signed", "forged", "never parsed"])
async def test_a_submission_that_finds_the_pool_idle_is_verified_on_the_loop(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(keepers.verify_pool, "IDLE_AFTER", 60.0)  # only the first is idle
    tx = {
        "signed": signed(0),
        "forged": forged(0),
        "never parsed": Transaction.sign([Deposit(ALICE.pubkey, 0, 0, 5)], 1, [ALICE]),
    }[kind]
    outcomes = Outcomes()
    pool: ProcessVerifyPool[int] = ProcessVerifyPool(outcomes, workers=1)
    await pool.start()
    try:
        pool.submit(tx, 0)
        assert (pool.inline, len(outcomes.got)) == (1, 1)  # answered inside submit()
        pool.submit(signed(1), 1)  # not a quiet spell since: the worker takes it
        assert len(outcomes.got) == 1
        await outcomes.wait(2)
        assert pool.inline == 1
    finally:
        await pool.close()
    assert [tag for tag, _ in outcomes.got] == [0, 1]
    outcome = outcomes.got[0][1]
    # what a worker's verdict would have made of it
    if kind == "signed":
        assert isinstance(outcome, VerifiedTransaction)
        assert (outcome.transaction, outcome.message) == (tx, tx.wire_message)
    elif kind == "forged":
        assert outcome == Rejected(
            ErrorCode.InvalidSignature, "signature 0 does not verify", "signatures[0]"
        )
    else:
        assert isinstance(outcome, ValueError)
    assert isinstance(outcomes.got[1][1], VerifiedTransaction)


def test_the_worker_answers_one_verdict_per_transaction() -> None:
    two_signers = Transaction.sign([Deposit(ALICE.pubkey, 0, 0, 5)], 1, [ALICE, BOB])
    wrong_second = bytearray(two_signers.to_bytes())
    wrong_second[6 + 64] ^= 0x01  # the second signature
    request = msgspec.msgpack.encode(
        [signed(0).to_bytes(), forged(1).to_bytes(), bytes(wrong_second), b"nonsense"]
    )
    assert msgspec.msgpack.decode(verify_frame(request)) == [
        None,
        [int(ErrorCode.InvalidSignature), "signature 0 does not verify", "signatures[0]"],
        [int(ErrorCode.InvalidSignature), "signature 1 does not verify", "signatures[1]"],
        [int(ErrorCode.MalformedTransaction), "not a transaction", "magic"],
    ]
