"""Program.execute_verified / simulate_verified: signatures checked elsewhere (a node's worker
threads), freshness and replay still checked at execution."""

from __future__ import annotations

from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import Deposit, PlacePerpOrder
from protocol.program import Executed
from protocol.records import DepositRecord, OrderActionRecord
from protocol.state import OrderParams
from protocol.state_hash import state_hash
from protocol.transaction import verify_transaction
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam
from tests.protocol.world import SOL_PERP, USDC, USDC_UNIT, World, keypair

ALICE = keypair(1)


def test_execute_verified_commits_what_execute_would() -> None:
    w = World()
    w.new_user(ALICE, usdc=10 * USDC_UNIT)
    tx = w.tx(Deposit(ALICE.pubkey, 0, USDC, 3 * USDC_UNIT), signers=(ALICE,))
    result = w.program.execute_verified(verify_transaction(tx), w.clock)
    assert isinstance(result, Executed)
    [sequenced] = result.records
    assert isinstance(sequenced.record, DepositRecord)
    assert sequenced.record.amount == 3 * USDC_UNIT
    # the same transactions through execute() reach the same state
    reference = World()
    reference.new_user(ALICE, usdc=10 * USDC_UNIT)
    assert isinstance(reference.program.execute(tx, reference.clock), Executed)
    assert state_hash(reference.program.state, reference.program.next_seq) == state_hash(
        w.program.state, w.program.next_seq
    )


def test_replay_and_staleness_are_still_checked_at_execution() -> None:
    w = World()
    w.new_user(ALICE, usdc=10 * USDC_UNIT)
    verified = verify_transaction(w.tx(Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,)))
    assert isinstance(w.program.execute_verified(verified, w.clock), Executed)
    again = w.program.execute_verified(verified, w.clock)
    assert isinstance(again, Rejected) and again.code == ErrorCode.DuplicateTransaction
    stale = verify_transaction(w.tx(Deposit(ALICE.pubkey, 0, USDC, 2), signers=(ALICE,)))
    w.advance(151)  # max_transaction_age_slots = 150
    late = w.program.execute_verified(stale, w.clock)
    assert isinstance(late, Rejected) and late.code == ErrorCode.StaleTransaction


def test_simulate_verified_commits_nothing_and_consumes_no_id() -> None:
    w = World()
    w.new_user(ALICE, usdc=10 * USDC_UNIT)
    before = state_hash(w.program.state, w.program.next_seq)
    verified = verify_transaction(w.tx(Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,)))
    simulated = w.program.simulate_verified(verified, w.clock)
    assert isinstance(simulated, Executed)
    assert state_hash(w.program.state, w.program.next_seq) == before
    assert isinstance(w.program.execute_verified(verified, w.clock), Executed)


def test_an_order_action_record_carries_a_copy_of_the_order() -> None:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    params = OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Long,
        10**8,  # 0.1 SOL
        SOL_PERP,
        price=90 * 10**6,
        post_only=PostOnlyParam.MustPostOnly,
    )
    result = w.ok(PlacePerpOrder(ALICE.pubkey, 0, params), signers=(ALICE,))
    [record] = [r.record for r in result.records if isinstance(r.record, OrderActionRecord)]
    assert record.order is not None
    live = w.program.state.users[(ALICE.pubkey, 0)].orders[0]
    assert record.order == live
    assert record.order is not live  # a copy: later changes to the account do not reach it
