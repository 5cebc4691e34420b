"""Deposit, withdraw, borrow and transfer through signed transactions, with exact integers.

Units: USDC has 6 decimals, SOL 9; scaled balances are SPOT_BALANCE_PRECISION (1e9) at an
interest index of 1e10, so one whole token is a scaled balance of 1e9 until interest accrues.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.accounts import ProgramState
from protocol.constants import ONE_YEAR, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import Deposit, InitializeUser, TransferDeposit, Withdraw
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.records import DepositRecord, SpotInterestRecord
from protocol.state_hash import state_hash
from protocol.types import SpotBalanceType
from tests.protocol.world import (
    SOL,
    SOL_UNIT,
    USDC,
    USDC_UNIT,
    World,
    keypair,
    make_state,
)

ALICE = keypair(1)
BOB = keypair(2)
CAROL = keypair(3)


def rejected(result: Executed | Rejected, code: ErrorCode) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    return result


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)  # the USDC lender
    w.new_user(BOB, sol=10 * SOL_UNIT)  # SOL collateral, borrows USDC
    return w


def test_deposit_credits_scaled_balance_vault_and_notional(world: World) -> None:
    state = world.program.state
    alice = state.users[(ALICE.pubkey, 0)]
    usdc = state.spot_markets[USDC]
    [pos] = alice.spot_positions
    # 1000 USDC = 1e9 token units; scaled = 1e9 * 10**(19-6) / 1e10 = 1e12
    assert pos.scaled_balance == 1_000_000_000_000
    assert pos.balance_type == SpotBalanceType.Deposit
    assert pos.cumulative_deposits == 1_000 * USDC_UNIT
    assert usdc.deposit_balance == 1_000_000_000_000
    assert usdc.vault_amount == 1_000 * USDC_UNIT
    assert alice.total_deposits == 1_000 * USDC_UNIT  # $1000 at $1
    bob = state.users[(BOB.pubkey, 0)]
    assert bob.total_deposits == 1_000 * USDC_UNIT  # 10 SOL at $100
    assert state.spot_markets[SOL].deposit_balance == 10 * 10**9


def test_deposit_record(world: World) -> None:
    result = world.ok(Deposit(ALICE.pubkey, 0, USDC, 5 * USDC_UNIT), signers=(ALICE,))
    [record] = [r.record for r in result.records if isinstance(r.record, DepositRecord)]
    assert record.direction == "deposit"
    assert record.amount == 5 * USDC_UNIT
    assert record.total_deposits_after == 1_005 * USDC_UNIT
    assert record.market_deposit_balance == 1_005_000_000_000
    assert record.deposit_record_id == 2  # Alice's first deposit was record 1 in USDC


def test_withdraw_part_of_a_deposit(world: World) -> None:
    world.ok(Withdraw(ALICE.pubkey, 0, USDC, 400 * USDC_UNIT), signers=(ALICE,))
    state = world.program.state
    [pos] = state.users[(ALICE.pubkey, 0)].spot_positions
    # tokens leaving the program round the scaled decrease up: 1e12 - (4e11 + 1)
    assert pos.scaled_balance == 599_999_999_999
    assert state.spot_markets[USDC].vault_amount == 600 * USDC_UNIT
    assert state.users[(ALICE.pubkey, 0)].total_withdraws == 400 * USDC_UNIT


def test_withdrawing_everything_frees_the_position(world: World) -> None:
    world.ok(Withdraw(ALICE.pubkey, 0, USDC, 1_000 * USDC_UNIT), signers=(ALICE,))
    assert world.program.state.users[(ALICE.pubkey, 0)].spot_positions == []


def test_withdraw_past_the_deposit_borrows_when_margin_allows(world: World) -> None:
    # Bob: 10 SOL at $100 with initial asset weight 0.8 -> $800 of initial collateral
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 500 * USDC_UNIT), signers=(BOB,))
    state = world.program.state
    usdc_pos = state.users[(BOB.pubkey, 0)].get_spot_position(USDC)
    assert usdc_pos is not None
    assert usdc_pos.balance_type == SpotBalanceType.Borrow
    # a new borrow's scaled balance rounds up by one unit: 5e8 * 1e13 / 1e10 + 1
    assert usdc_pos.scaled_balance == 500_000_000_001
    assert state.spot_markets[USDC].borrow_balance == 500_000_000_001
    assert state.spot_markets[USDC].vault_amount == 500 * USDC_UNIT


def test_borrow_beyond_initial_margin_is_rejected_and_changes_nothing(world: World) -> None:
    before = state_hash(world.program.state, world.program.next_seq)
    # $900 borrowed against $800 of initial collateral
    rejected(world.withdraw(BOB, USDC, 900 * USDC_UNIT), ErrorCode.InsufficientCollateral)
    assert state_hash(world.program.state, world.program.next_seq) == before


def test_borrow_needs_deposits_in_the_market(world: World) -> None:
    world.new_user(CAROL, usdc=10_000 * USDC_UNIT)
    # nobody deposited more SOL than Bob's 10: borrowing 11 SOL would leave the market short
    result = world.withdraw(CAROL, SOL, 11 * SOL_UNIT)
    assert isinstance(result, Rejected)
    assert result.code in (ErrorCode.SpotMarketInsufficientDeposits, ErrorCode.DailyWithdrawLimit)


def test_invalid_oracle_blocks_a_risk_increasing_borrow(world: World) -> None:
    world.new_user(CAROL, usdc=5_000 * USDC_UNIT)
    # 5% confidence on a 2% limit: the SOL oracle is TooUncertain
    world.set_price("SOL/USD", 100 * PRICE_PRECISION, confidence=5 * PRICE_PRECISION)
    rejected(world.withdraw(CAROL, SOL, 1 * SOL_UNIT), ErrorCode.InvalidOracle)


def test_invalid_oracle_blocks_withdraws_with_liabilities(world: World) -> None:
    world.new_user(CAROL, usdc=5_000 * USDC_UNIT)
    world.ok(Withdraw(CAROL.pubkey, 0, SOL, 1 * SOL_UNIT), signers=(CAROL,))  # owes SOL
    world.set_price("SOL/USD", 100 * PRICE_PRECISION, confidence=5 * PRICE_PRECISION)
    rejected(world.withdraw(CAROL, USDC, 1 * USDC_UNIT), ErrorCode.InvalidOracle)


def test_collateral_behind_an_invalid_oracle_counts_for_nothing(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 100 * USDC_UNIT), signers=(BOB,))
    world.set_price("SOL/USD", 100 * PRICE_PRECISION, confidence=5 * PRICE_PRECISION)
    # Bob's only collateral is SOL: with its oracle invalid he cannot take anything out
    rejected(world.withdraw(BOB, SOL, 1 * SOL_UNIT), ErrorCode.InsufficientCollateral)
    rejected(world.withdraw(BOB, USDC, 1 * USDC_UNIT), ErrorCode.InsufficientCollateral)


def test_invalid_oracle_allows_a_withdraw_without_liabilities(world: World) -> None:
    world.set_price("SOL/USD", 100 * PRICE_PRECISION, confidence=5 * PRICE_PRECISION)
    assert isinstance(world.withdraw(BOB, SOL, 1 * SOL_UNIT), Executed)


def _world_with_usdc_twaps(deposit_twap: int, borrow_twap: int = 0) -> World:
    base = make_state()
    usdc = replace(
        base.spot_markets[USDC],
        deposit_token_twap=deposit_twap,
        borrow_token_twap=borrow_twap,
        withdraw_guard_threshold=0,
    )
    state = ProgramState(
        base.state, {USDC: usdc, SOL: base.spot_markets[SOL]}, base.perp_markets, base.oracles
    )
    return World(program=Program(state))


def test_global_withdraw_limit_keeps_deposits_above_80pct_of_the_twap() -> None:
    w = _world_with_usdc_twaps(deposit_twap=1_000 * USDC_UNIT)
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    # deposits may fall to 80% of the 1-day deposit EMA (800 USDC), no lower
    result = rejected(w.withdraw(ALICE, USDC, 300 * USDC_UNIT), ErrorCode.DailyWithdrawLimit)
    assert result.field == "amount"
    assert isinstance(w.withdraw(ALICE, USDC, 150 * USDC_UNIT), Executed)


def test_global_borrow_limit_is_1_2x_the_borrow_twap() -> None:
    w = _world_with_usdc_twaps(deposit_twap=100_000 * USDC_UNIT, borrow_twap=40_000 * USDC_UNIT)
    w.new_user(ALICE, usdc=100_000 * USDC_UNIT)
    w.new_user(BOB, sol=2_000 * SOL_UNIT)  # $200k of SOL
    # max borrows = max(15% of 100k, 1.2 * 40k) = 48k (below the 90% cap). A borrow's token
    # amount rounds up by one unit, so exactly 48k counts as 48_000.000001 and is refused.
    rejected(w.withdraw(BOB, USDC, 48_000 * USDC_UNIT), ErrorCode.DailyWithdrawLimit)
    assert isinstance(w.withdraw(BOB, USDC, 47_999 * USDC_UNIT), Executed)


def test_transfer_between_sub_accounts(world: World) -> None:
    world.ok(InitializeUser(ALICE.pubkey, 1), signers=(ALICE,))
    result = world.ok(TransferDeposit(ALICE.pubkey, 0, 1, USDC, 250 * USDC_UNIT), signers=(ALICE,))
    users = world.program.state.users
    # the sender's decrease rounds up (tokens leave its balance), the receiver's increase down
    assert users[(ALICE.pubkey, 0)].spot_positions[0].scaled_balance == 749_999_999_999
    assert users[(ALICE.pubkey, 1)].spot_positions[0].scaled_balance == 250_000_000_000
    assert world.program.state.spot_markets[USDC].vault_amount == 1_000 * USDC_UNIT
    directions = [r.record.direction for r in result.records if isinstance(r.record, DepositRecord)]
    assert directions == ["withdraw", "deposit"]


def test_transfer_to_the_same_sub_account_is_rejected(world: World) -> None:
    result = rejected(
        world.send(TransferDeposit(ALICE.pubkey, 0, 0, USDC, 1), signers=(ALICE,)),
        ErrorCode.CantTransferBetweenSameUserAccount,
    )
    assert result.field == "to_sub_account_id"


def test_sub_accounts_are_created_in_order(world: World) -> None:
    result = rejected(
        world.send(InitializeUser(ALICE.pubkey, 2), signers=(ALICE,)),
        ErrorCode.InvalidUserSubAccountId,
    )
    assert result.field == "sub_account_id"
    rejected(
        world.send(InitializeUser(ALICE.pubkey, 0), signers=(ALICE,)),
        ErrorCode.InvalidUserSubAccountId,
    )


def test_zero_amount_is_rejected_with_the_field(world: World) -> None:
    result = rejected(
        world.send(Deposit(ALICE.pubkey, 0, USDC, 0), signers=(ALICE,)),
        ErrorCode.InsufficientDeposit,
    )
    assert result.field == "amount"


def test_unknown_market_is_rejected_with_the_field(world: World) -> None:
    result = rejected(
        world.send(Deposit(ALICE.pubkey, 0, 42, 1), signers=(ALICE,)), ErrorCode.UnknownMarket
    )
    assert result.field == "market_index"


def test_reduce_only_deposit_repays_at_most_the_borrow(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 100 * USDC_UNIT), signers=(BOB,))
    world.ok(Deposit(BOB.pubkey, 0, USDC, 150 * USDC_UNIT, reduce_only=True), signers=(BOB,))
    bob = world.program.state.users[(BOB.pubkey, 0)]
    assert bob.get_spot_position(USDC) is None or bob.get_spot_position(USDC).scaled_balance == 0  # type: ignore[union-attr]
    # the borrow's scaled balance was 1e11 + 1 (rounded up), which is ceil(100.000000001) =
    # 100_000_001 token units owed: repaying takes that one extra unit into the vault
    assert world.program.state.spot_markets[USDC].vault_amount == 1_000 * USDC_UNIT + 1


def test_interest_accrues_to_lenders_from_borrowers(world: World) -> None:
    world.ok(Withdraw(BOB.pubkey, 0, USDC, 500 * USDC_UNIT), signers=(BOB,))
    world.advance(slots=10, seconds=ONE_YEAR)
    world.set_price("SOL/USD", 100 * PRICE_PRECISION)
    result = world.ok(Deposit(ALICE.pubkey, 0, USDC, 1), signers=(ALICE,))
    interest = [r.record for r in result.records if isinstance(r.record, SpotInterestRecord)]
    assert len(interest) == 1
    usdc = world.program.state.spot_markets[USDC]
    alice_pos = world.program.state.users[(ALICE.pubkey, 0)].spot_positions[0]
    bob_pos = world.program.state.users[(BOB.pubkey, 0)].get_spot_position(USDC)
    assert bob_pos is not None
    owed = get_token_amount(bob_pos.scaled_balance, usdc, SpotBalanceType.Borrow)
    lent = get_token_amount(alice_pos.scaled_balance, usdc, SpotBalanceType.Deposit)
    assert owed > 500 * USDC_UNIT  # a year of interest at 50% utilization
    assert lent > 1_000 * USDC_UNIT
    # lenders never earn more than borrowers pay
    assert lent - 1_000 * USDC_UNIT - 1 <= owed - 500 * USDC_UNIT
