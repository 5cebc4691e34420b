"""Signed transactions through ``Program.execute``: signatures, replay, staleness, atomicity."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, Rejected
from protocol.instructions import Deposit, InitializeUser, UpdateUserDelegate, Withdraw
from protocol.program import Executed
from protocol.records import DepositRecord, NewUserRecord
from protocol.state_hash import state_hash
from protocol.transaction import MAGIC, Transaction, message_bytes, parse_transaction
from tests.protocol.world import SOL, USDC, USDC_UNIT, World, keypair

ALICE = keypair(1)
BOB = keypair(2)


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    return w


def snapshot(w: World) -> tuple[str, object]:
    return state_hash(w.program.state, w.program.next_seq), copy.deepcopy(w.program.state)


def test_wire_round_trip_is_exact(world: World) -> None:
    tx = world.tx(
        Deposit(ALICE.pubkey, 0, USDC, 5), InitializeUser(BOB.pubkey, 0), signers=(ALICE, BOB)
    )
    raw = tx.to_bytes()
    assert raw[:4] == MAGIC
    assert parse_transaction(raw) == tx
    assert parse_transaction(raw).to_bytes() == raw


def test_records_carry_a_gap_free_sequence(world: World) -> None:
    first = world.ok(InitializeUser(BOB.pubkey, 0), Deposit(BOB.pubkey, 0, USDC, 7), signers=(BOB,))
    second = world.ok(Deposit(BOB.pubkey, 0, USDC, 3), signers=(BOB,))
    seqs = [r.seq for r in first.records + second.records]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert isinstance(first.records[0].record, NewUserRecord)
    assert isinstance(second.records[0].record, DepositRecord)
    assert world.program.next_seq == seqs[-1] + 1


def test_replayed_transaction_is_rejected(world: World) -> None:
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    assert isinstance(world.program.execute(tx, world.clock), Executed)
    world.advance(3)
    result = world.program.execute(tx, world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.DuplicateTransaction


def test_stale_and_future_transactions_are_rejected(world: World) -> None:
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    max_age = world.program.state.state.max_transaction_age_slots
    world.advance(max_age + 1)
    stale = world.program.execute(tx, world.clock)
    assert isinstance(stale, Rejected)
    assert stale.code == ErrorCode.StaleTransaction
    assert stale.field == "recent_slot"
    future = Transaction.sign([Deposit(ALICE.pubkey, 0, USDC, 5)], world.slot + 1, [ALICE])
    result = world.program.execute(future, world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.StaleTransaction


def test_replay_memory_is_pruned_only_after_the_window(world: World) -> None:
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    world.program.execute(tx, world.clock)
    max_age = world.program.state.state.max_transaction_age_slots
    world.advance(max_age)  # still fresh: must still be remembered
    dup = world.program.execute(tx, world.clock)
    assert isinstance(dup, Rejected)
    assert dup.code == ErrorCode.DuplicateTransaction


def test_a_signer_who_is_not_authority_or_delegate_is_rejected(world: World) -> None:
    world.new_user(BOB)
    result = world.send(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(BOB,))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.UnauthorizedSigner
    assert result.field == "authority"


def test_delegate_may_deposit_but_never_withdraw(world: World) -> None:
    world.ok(UpdateUserDelegate(ALICE.pubkey, 0, BOB.pubkey), signers=(ALICE,))
    world.ok(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(BOB,))
    result = world.send(Withdraw(ALICE.pubkey, 0, USDC, 5), signers=(BOB,))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.UnauthorizedSigner


def test_signature_over_other_bytes_is_rejected(world: World) -> None:
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    forged = Transaction(
        (Deposit(ALICE.pubkey, 0, USDC, 500),), tx.recent_slot, tx.signers, tx.signatures
    )
    result = world.program.execute(forged, world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.InvalidSignature
    assert result.field == "signatures[0]"


def test_bad_signature_length_is_rejected_with_field(world: World) -> None:
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    short = Transaction(tx.instructions, tx.recent_slot, tx.signers, (tx.signatures[0][:63],))
    result = world.program.execute(short, world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.InvalidSignature


def test_unknown_instruction_tag_is_rejected(world: World) -> None:
    raw = bytearray(world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,)).to_bytes())
    tag_at = 4 + 2 + 64 + 1 + 8 + 1 + 32 + 2
    raw[tag_at : tag_at + 2] = (999).to_bytes(2, "little")
    result = world.program.execute_bytes(bytes(raw), world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.UnknownInstruction
    assert result.field == "instructions[0]"


def test_out_of_range_field_is_named(world: World) -> None:
    with pytest.raises(InvalidParameter) as err:  # the signer's side refuses to encode it
        Transaction.sign([Deposit(ALICE.pubkey, 0, USDC, -5)], world.slot, [ALICE])
    assert err.value.field == "instructions[0].amount"
    # and the program refuses a transaction carrying it, whatever its signatures say
    tx = Transaction(
        (Deposit(ALICE.pubkey, 0, USDC, -5),), world.slot, (ALICE.pubkey,), (bytes(64),)
    )
    result = world.program.execute(tx, world.clock)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.InvalidParameter
    assert result.field == "instructions[0].amount"


def test_rejected_transaction_leaves_state_identical(world: World) -> None:
    before_hash, before = snapshot(world)
    # the deposit succeeds inside the transaction, then the borrow fails: all or nothing
    result = world.send(
        Deposit(ALICE.pubkey, 0, USDC, 100 * USDC_UNIT),
        Withdraw(ALICE.pubkey, 0, SOL, 10**15),
        signers=(ALICE,),
    )
    assert isinstance(result, Rejected)
    after_hash, after = snapshot(world)
    assert after_hash == before_hash
    assert after == before


def test_simulate_commits_nothing(world: World) -> None:
    before_hash, _ = snapshot(world)
    tx = world.tx(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))
    sim = world.program.simulate(tx, world.clock)
    assert isinstance(sim, Executed)
    assert snapshot(world)[0] == before_hash
    real = world.program.execute(tx, world.clock)  # not consumed by simulate
    assert isinstance(real, Executed)
    assert [r.seq for r in real.records] == [r.seq for r in sim.records]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_is_rejected(world: World, data: st.DataObject) -> None:
    tx = world.tx(
        Deposit(ALICE.pubkey, 0, USDC, 5), InitializeUser(BOB.pubkey, 0), signers=(ALICE, BOB)
    )
    raw = bytearray(tx.to_bytes())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]), label="byte")
    raw[at] = new
    before_hash, _ = snapshot(world)
    result = world.program.execute_bytes(bytes(raw), world.clock)
    assert isinstance(result, Rejected)
    assert snapshot(world)[0] == before_hash


def test_parsed_wire_message_is_the_canonical_encoding(world: World) -> None:
    tx = world.tx(
        Deposit(ALICE.pubkey, 0, USDC, 5), InitializeUser(BOB.pubkey, 0), signers=(ALICE, BOB)
    )
    parsed = parse_transaction(tx.to_bytes())
    assert parsed.wire_message is not None
    assert parsed.wire_message == message_bytes(tx.instructions, tx.recent_slot, tx.signers)
