"""User instructions at their refusals: bankrupt users, paused and reduce-only markets, the deposit
cap, reduce-only withdraws, the vault, delegates, sub-account limits and liquidation exits.

Fixture: Alice lends 1,000 USDC; Bob holds 10 SOL at $100. Token units: USDC 1e6, SOL 1e9. At
an interest index of 1e10 a USDC scaled balance is token units * 1e3.
"""

from __future__ import annotations

import pytest

from protocol.constants import PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    Deposit,
    InitializeUser,
    TransferDeposit,
    UpdateUserDelegate,
    Withdraw,
)
from protocol.program import Executed
from protocol.records import DepositRecord
from protocol.state_hash import state_hash
from protocol.types import MarketStatus, SpotBalanceType, UserStatus
from tests.protocol.world import SOL, SOL_UNIT, USDC, USDC_UNIT, World, keypair

ALICE = keypair(1)
BOB = keypair(2)
CAROL = keypair(3)


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    w.new_user(BOB, sol=10 * SOL_UNIT)
    return w


def fingerprint(w: World) -> str:
    return state_hash(w.program.state, w.program.next_seq)


def refused(w: World, *ixs: object, signer: object, code: ErrorCode, field: str | None) -> None:
    """The transaction is rejected with ``code`` naming ``field`` and changes nothing."""
    before = fingerprint(w)
    result = w.send(*ixs, signers=(signer,))  # type: ignore[arg-type]
    assert isinstance(result, Rejected), result
    assert (result.code, result.field) == (code, field)
    assert fingerprint(w) == before


def deposited_record(result: Executed) -> DepositRecord:
    [record] = [r.record for r in result.records if isinstance(r.record, DepositRecord)]
    return record


# --- bankrupt users -------------------------------------------------------------------------------


def test_bankrupt_user_can_neither_deposit_withdraw_nor_transfer(world: World) -> None:
    world.ok(InitializeUser(BOB.pubkey, 1), signers=(BOB,))
    world.program.state.users[(BOB.pubkey, 0)].status = UserStatus.Bankrupt
    code, field = ErrorCode.UserBankrupt, "authority"
    refused(world, Deposit(BOB.pubkey, 0, SOL, SOL_UNIT), signer=BOB, code=code, field=field)
    refused(world, Withdraw(BOB.pubkey, 0, SOL, SOL_UNIT), signer=BOB, code=code, field=field)
    # bankrupt on either side of a transfer
    refused(
        world, TransferDeposit(BOB.pubkey, 0, 1, SOL, SOL_UNIT), signer=BOB, code=code, field=field
    )
    refused(
        world, TransferDeposit(BOB.pubkey, 1, 0, SOL, SOL_UNIT), signer=BOB, code=code, field=field
    )


# --- market status and the deposit cap --------------------------------------------------------


def test_new_deposits_into_a_reduce_only_market_are_paused(world: World) -> None:
    world.program.state.spot_markets[USDC].status = MarketStatus.ReduceOnly
    refused(
        world,
        Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT),
        signer=ALICE,
        code=ErrorCode.MarketActionPaused,
        field="market_index",
    )


def test_reduce_only_market_forces_a_repayment_to_stop_at_the_borrow(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 100 * USDC_UNIT), signers=(BOB,))
    world.program.state.spot_markets[USDC].status = MarketStatus.ReduceOnly
    # not flagged reduce-only, yet the market caps it: a borrow of scaled 1e11 + 1 is
    # ceil(100.000000001 USDC) = 100_000_001 units owed, so 150 USDC repays just that
    result = world.ok(Deposit(BOB.pubkey, 0, USDC, 150 * USDC_UNIT), signers=(BOB,))
    assert deposited_record(result).amount == 100_000_001
    usdc = world.program.state.spot_markets[USDC]
    assert usdc.vault_amount == 900 * USDC_UNIT + 100_000_001
    assert usdc.borrow_balance == 0
    # the repaid position is still a borrow of zero (the program flips the side only when a
    # deposit exceeds the borrow), so a further deposit is capped to that zero and moves nothing
    again = world.ok(Deposit(BOB.pubkey, 0, USDC, USDC_UNIT), signers=(BOB,))
    assert deposited_record(again).amount == 0
    assert world.program.state.spot_markets[USDC].vault_amount == 900 * USDC_UNIT + 100_000_001


def test_deposit_cap_admits_exactly_the_cap_and_not_one_unit_more(world: World) -> None:
    usdc = world.program.state.spot_markets[USDC]
    usdc.max_token_deposits = 1_000 * USDC_UNIT + 5
    world.ok(Deposit(ALICE.pubkey, 0, USDC, 5), signers=(ALICE,))  # 1_000_000_005 == cap
    refused(
        world,
        Deposit(ALICE.pubkey, 0, USDC, 1),
        signer=ALICE,
        code=ErrorCode.MaxDeposit,
        field="amount",
    )
    assert world.program.state.spot_markets[USDC].vault_amount == 1_000 * USDC_UNIT + 5


# --- reduce-only withdraws ---------------------------------------------------------------------


def test_reduce_only_withdraw_of_a_borrow_is_refused(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 100 * USDC_UNIT), signers=(BOB,))
    refused(
        world,
        Withdraw(BOB.pubkey, 0, USDC, USDC_UNIT, reduce_only=True),
        signer=BOB,
        code=ErrorCode.ReduceOnlyWithdrawIncreasedRisk,
        field="reduce_only",
    )


def test_reduce_only_market_refuses_a_withdraw_that_would_borrow(world: World) -> None:
    world.program.state.spot_markets[USDC].status = MarketStatus.ReduceOnly
    # Bob has no USDC: in a reduce-only market a withdraw may only shrink a deposit, and his
    # (new, empty) position is a deposit of zero, so the amount is capped to nothing
    refused(
        world,
        Withdraw(BOB.pubkey, 0, USDC, USDC_UNIT),
        signer=BOB,
        code=ErrorCode.InsufficientDeposit,
        field="amount",
    )


def test_reduce_only_withdraw_is_capped_at_the_deposit(world: World) -> None:
    result = world.ok(
        Withdraw(ALICE.pubkey, 0, USDC, 1_500 * USDC_UNIT, reduce_only=True), signers=(ALICE,)
    )
    assert deposited_record(result).amount == 1_000 * USDC_UNIT
    alice = world.program.state.users[(ALICE.pubkey, 0)]
    assert alice.get_spot_position(USDC) is None  # emptied, so pruned; never a borrow
    usdc = world.program.state.spot_markets[USDC]
    assert (usdc.vault_amount, usdc.deposit_balance, usdc.borrow_balance) == (0, 0, 0)


def test_withdraw_larger_than_the_vault_is_refused(world: World) -> None:
    # the books say Alice owns 1,000 USDC; the vault holds only 10 of them
    world.program.state.spot_markets[USDC].vault_amount = 10 * USDC_UNIT
    refused(
        world,
        Withdraw(ALICE.pubkey, 0, USDC, 100 * USDC_UNIT),
        signer=ALICE,
        code=ErrorCode.SpotMarketInsufficientDeposits,
        field="amount",
    )
    assert isinstance(world.withdraw(ALICE, USDC, 10 * USDC_UNIT), Executed)
    assert world.program.state.spot_markets[USDC].vault_amount == 0


# --- delegates and sub-accounts ----------------------------------------------------------------


def test_delegate_may_not_replace_the_delegate_or_move_funds(world: World) -> None:
    world.ok(InitializeUser(ALICE.pubkey, 1), signers=(ALICE,))
    world.ok(UpdateUserDelegate(ALICE.pubkey, 0, BOB.pubkey), signers=(ALICE,))
    refused(
        world,
        UpdateUserDelegate(ALICE.pubkey, 0, CAROL.pubkey),
        signer=BOB,
        code=ErrorCode.UnauthorizedSigner,
        field="authority",
    )
    refused(
        world,
        TransferDeposit(ALICE.pubkey, 0, 1, USDC, USDC_UNIT),
        signer=BOB,
        code=ErrorCode.UnauthorizedSigner,
        field="authority",
    )
    assert world.program.state.users[(ALICE.pubkey, 0)].delegate == BOB.pubkey


def test_ninth_sub_account_is_refused(world: World) -> None:
    world.ok(*(InitializeUser(ALICE.pubkey, i) for i in range(1, 8)), signers=(ALICE,))
    assert world.program.state.user_stats[ALICE.pubkey].number_of_sub_accounts == 8
    refused(
        world,
        InitializeUser(ALICE.pubkey, 8),
        signer=ALICE,
        code=ErrorCode.MaxNumberOfUsers,
        field="sub_account_id",
    )


def test_initialize_user_needs_the_authority_to_sign(world: World) -> None:
    refused(
        world,
        InitializeUser(CAROL.pubkey, 0),
        signer=ALICE,
        code=ErrorCode.UnauthorizedSigner,
        field="authority",
    )


# --- leaving liquidation ----------------------------------------------------------------------


def test_deposit_releases_a_user_who_is_no_longer_liquidatable(world: World) -> None:
    # Alice has only a deposit: nothing to liquidate, so any deposit clears a stale flag
    world.program.state.users[(ALICE.pubkey, 0)].status = UserStatus.BeingLiquidated
    world.ok(Deposit(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,))
    assert world.program.state.users[(ALICE.pubkey, 0)].status == UserStatus.Active


def test_deposit_too_small_to_cure_keeps_the_user_in_liquidation(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 700 * USDC_UNIT), signers=(BOB,))
    world.set_price("SOL/USD", 50 * PRICE_PRECISION)
    bob = world.program.state.users[(BOB.pubkey, 0)]
    bob.status = UserStatus.BeingLiquidated
    # after the deposit: 11 SOL * $50 * 0.9 maintenance weight = $495 against $700 owed
    world.ok(Deposit(BOB.pubkey, 0, SOL, SOL_UNIT), signers=(BOB,))
    bob = world.program.state.users[(BOB.pubkey, 0)]
    assert bob.status == UserStatus.BeingLiquidated
    position = bob.get_spot_position(SOL)
    assert position is not None
    assert position.balance_type == SpotBalanceType.Deposit
    assert position.scaled_balance == 11 * SOL_UNIT


def test_withdraw_that_passes_initial_margin_ends_a_liquidation(world: World) -> None:
    world.program.state.users[(ALICE.pubkey, 0)].status = UserStatus.BeingLiquidated
    world.ok(Withdraw(ALICE.pubkey, 0, USDC, USDC_UNIT), signers=(ALICE,))
    alice = world.program.state.users[(ALICE.pubkey, 0)]
    assert alice.status == UserStatus.Active
    assert alice.liquidation_margin_freed == 0
