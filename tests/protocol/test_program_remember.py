"""Program.remember: restoring the replay window without re-executing transactions."""

from __future__ import annotations

from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import Deposit
from protocol.program import Executed, Program
from tests.protocol.world import USDC, USDC_UNIT, World, keypair, make_state

ALICE = keypair(1)


def test_a_remembered_id_is_a_duplicate_until_its_window_passes() -> None:
    w = World()
    w.new_user(ALICE, usdc=10 * USDC_UNIT)
    tx = w.tx(Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,))
    # a program restored from a snapshot of the same accounts, with an empty window
    restored = Program(w.program.state, next_seq=w.program.next_seq)
    restored.remember(tx.signature, tx.recent_slot)
    restored.remember(tx.signature, tx.recent_slot)  # idempotent
    result = restored.execute(tx, w.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.DuplicateTransaction
    # max_transaction_age_slots = 150: at recent_slot + 150 the id is still fresh...
    w.advance(150)
    result = restored.execute(tx, w.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.DuplicateTransaction
    # ...and one slot later it is refused for its age, the remembered id long forgotten
    w.advance(1)
    result = restored.execute(tx, w.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.StaleTransaction


def test_remembering_changes_no_account_or_sequence_number() -> None:
    program = Program(make_state(), next_seq=7)
    before = make_state()
    program.remember(b"\x01" * 64, 1_000)
    assert program.state == before
    assert program.next_seq == 7


def test_without_remember_the_restored_program_would_accept_it_again() -> None:
    w = World()
    w.new_user(ALICE, usdc=10 * USDC_UNIT)
    tx = w.tx(Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,))
    assert isinstance(w.program.execute(tx, w.clock), Executed)
    forgetful = Program(w.program.state, next_seq=w.program.next_seq)
    assert isinstance(
        forgetful.execute(tx, w.clock), Executed
    )  # the double spend remember prevents
