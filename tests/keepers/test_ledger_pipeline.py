"""The ledger's two halves (reserve, then execute_reserved) as the node's sequencer uses them:
many transactions executed before the first is durable, signatures verified elsewhere."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keepers.ledger import Ledger, LedgerConfig, Pending
from protocol.errors import Rejected
from protocol.instructions import Deposit, InitializeUser
from protocol.program import Executed
from protocol.transaction import Transaction, parse_transaction, verify_transaction
from tests.keepers.scenario import clock_at, genesis
from tests.protocol.world import USDC, USDC_UNIT, keypair

ALICE = keypair(1)
BOB = keypair(2)
CLOCK = clock_at(0)


def signup(kp_seed: int) -> bytes:
    kp = keypair(kp_seed)
    return Transaction.sign(
        [InitializeUser(kp.pubkey, 0), Deposit(kp.pubkey, 0, USDC, 100 * USDC_UNIT)],
        CLOCK.slot,
        [kp],
    ).to_bytes()


@pytest.mark.asyncio
async def test_execution_runs_ahead_of_durability_in_order(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "j.db", genesis(), config=LedgerConfig(snapshot_every=0))
    pendings: list[Pending] = []
    for seed in (1, 2, 3):
        await ledger.reserve()
        pending = ledger.execute_reserved(signup(seed), CLOCK)
        assert isinstance(pending, Pending)
        pendings.append(pending)
    # all three executed (state and sequence numbers moved) before any is durable
    assert [p.index for p in pendings] == [1, 2, 3]
    assert [[r.seq for r in p.executed.records] for p in pendings] == [[1, 2], [3, 4], [5, 6]]
    assert not any(p.durable.done() for p in pendings)
    async with asyncio.timeout(10):
        await asyncio.gather(*(p.durable for p in pendings))
    assert [e.index for e in ledger.journal.entries()] == [1, 2, 3]
    assert ledger.metrics.commits == 1  # one group, one fsync
    await ledger.close()


@pytest.mark.asyncio
async def test_a_verified_transaction_skips_no_check_but_the_signatures(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "j.db", genesis())
    raw = signup(1)
    verified = verify_transaction(parse_transaction(raw))
    await ledger.reserve()
    pending = ledger.execute_reserved(raw, CLOCK, verified=verified)
    assert isinstance(pending, Pending)
    await pending.durable
    # replay protection still applies to a verified transaction
    await ledger.reserve()
    again = ledger.execute_reserved(raw, CLOCK, verified=verified)
    assert isinstance(again, Rejected) and again.code.name == "DuplicateTransaction"
    simulated = ledger.simulate(
        signup(2), CLOCK, verified=verify_transaction(parse_transaction(signup(2)))
    )
    assert isinstance(simulated, Executed) and ledger.last_index == 1
    await ledger.close()


@pytest.mark.asyncio
async def test_bytes_that_are_not_the_verified_transaction_are_refused(tmp_path: Path) -> None:
    # room for one entry: a reservation that was not given back would block the next submit
    ledger = Ledger.open(tmp_path / "j.db", genesis(), config=LedgerConfig(max_pending=1))
    hash_before = ledger.state_hash()
    verified_bob = verify_transaction(parse_transaction(signup(2)))
    await ledger.reserve()
    with pytest.raises(ValueError, match="not the one in raw"):
        ledger.execute_reserved(signup(1), CLOCK, verified=verified_bob)
    assert ledger.state_hash() == hash_before and ledger.last_index == 0
    async with asyncio.timeout(10):
        result = await ledger.submit(signup(1), CLOCK)
    assert isinstance(result, Executed)
    with pytest.raises(ValueError, match="not the one in raw"):
        ledger.simulate(signup(1), CLOCK, verified=verified_bob)
    await ledger.close()
