"""User-account instructions: create sub-accounts, set a delegate, deposit, withdraw, transfer.

Tokens enter and leave through the market's ``vault_amount`` (the program's token vault).
Withdrawing more than the deposit borrows the difference, which passes only if the user still
meets initial margin afterwards and the market's global withdraw/borrow guards allow it
(seed 001). Seed 001's oracle guard is the program's withdraw margin check
(:func:`~protocol.math.margin.meets_withdraw_margin_requirement`): a user with liabilities
cannot withdraw while any liability oracle is invalid (``InvalidOracle``), a borrow in a market
with an invalid oracle is such a liability, and collateral behind an invalid oracle counts for
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, U64, Pubkey
from protocol.controller.spot_balance import update_spot_market_cumulative_interest
from protocol.controller.spot_position import (
    update_spot_balances_and_cumulative_deposits,
    update_spot_balances_and_cumulative_deposits_with_limits,
)
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.math.margin import (
    can_be_liquidated,
    meets_withdraw_margin_requirement,
)
from protocol.math.spot_balance import get_token_amount
from protocol.numeric import div_trunc
from protocol.records import DepositRecord, NewUserRecord
from protocol.state.oracle import OraclePriceData
from protocol.state.spot_market import SpotMarket
from protocol.state.user import User, UserStats
from protocol.types import MarketStatus, SpotBalanceType


@instruction(1)
@dataclass(frozen=True, slots=True)
class InitializeUser:
    """Create sub-account ``sub_account_id`` for ``authority`` (ids are created in order)."""

    authority: Pubkey
    sub_account_id: U16
    name: str = ""


@instruction(2)
@dataclass(frozen=True, slots=True)
class UpdateUserDelegate:
    authority: Pubkey
    sub_account_id: U16
    delegate: Pubkey


@instruction(3)
@dataclass(frozen=True, slots=True)
class Deposit:
    authority: Pubkey
    sub_account_id: U16
    market_index: U16
    amount: U64
    reduce_only: bool = False


@instruction(4)
@dataclass(frozen=True, slots=True)
class Withdraw:
    authority: Pubkey
    sub_account_id: U16
    market_index: U16
    amount: U64
    reduce_only: bool = False


@instruction(5)
@dataclass(frozen=True, slots=True)
class TransferDeposit:
    """Move tokens between two sub-accounts of the same authority."""

    authority: Pubkey
    from_sub_account_id: U16
    to_sub_account_id: U16
    market_index: U16
    amount: U64


def _token_value(amount: int, price: int, market: SpotMarket) -> int:
    """Notional of ``amount`` tokens (QUOTE_PRECISION), as ``increment_total_deposits``."""
    return div_trunc(amount * max(price, 0), market.get_precision())


def _deposit_record(
    accounts: Accounts,
    user: User,
    market: SpotMarket,
    direction: str,
    amount: int,
    price: int,
    transfer_user: tuple[bytes, int] | None = None,
) -> DepositRecord:
    record_id = market.next_deposit_record_id
    market.next_deposit_record_id += 1
    return DepositRecord(
        authority=user.authority,
        sub_account_id=user.sub_account_id,
        direction=direction,
        market_index=market.market_index,
        amount=amount,
        oracle_price=price,
        market_deposit_balance=market.deposit_balance,
        market_withdraw_balance=market.borrow_balance,
        market_cumulative_deposit_interest=market.cumulative_deposit_interest,
        market_cumulative_borrow_interest=market.cumulative_borrow_interest,
        total_deposits_after=user.total_deposits,
        total_withdraws_after=user.total_withdraws,
        deposit_record_id=record_id,
        transfer_user=transfer_user,
        ts=accounts.clock.unix_timestamp,
    )


def _accrue_interest(accounts: Accounts, market: SpotMarket, price_data: OraclePriceData) -> None:
    record = update_spot_market_cumulative_interest(
        market, price_data, accounts.clock.unix_timestamp
    )
    if record is not None:
        accounts.emit(record)


def _require_positive(amount: int) -> None:
    if amount == 0:
        raise InvalidParameter("amount", "must be greater than zero", ErrorCode.InsufficientDeposit)


@handler(InitializeUser)
def initialize_user(accounts: Accounts, ix: InitializeUser) -> None:
    accounts.require_signer(ix.authority, "authority")
    if not accounts.has_user_stats(ix.authority):
        accounts.add_user_stats(UserStats(authority=ix.authority))
    stats = accounts.user_stats(ix.authority)
    if ix.sub_account_id != stats.number_of_sub_accounts_created:
        raise InvalidParameter(
            "sub_account_id",
            f"next sub-account id is {stats.number_of_sub_accounts_created}",
            ErrorCode.InvalidUserSubAccountId,
        )
    if stats.number_of_sub_accounts >= accounts.state.max_number_of_sub_accounts:
        raise InvalidParameter(
            "sub_account_id", "too many sub-accounts", ErrorCode.MaxNumberOfUsers
        )
    accounts.add_user(
        User(
            authority=ix.authority,
            sub_account_id=ix.sub_account_id,
            name=ix.name,
            last_active_slot=accounts.clock.slot,
        )
    )
    stats.number_of_sub_accounts += 1
    stats.number_of_sub_accounts_created += 1
    accounts.emit(NewUserRecord(ix.authority, ix.sub_account_id, accounts.clock.unix_timestamp))


@handler(UpdateUserDelegate)
def update_user_delegate(accounts: Accounts, ix: UpdateUserDelegate) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id), allow_delegate=False)
    user.delegate = ix.delegate


@handler(Deposit)
def deposit(accounts: Accounts, ix: Deposit) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _require_positive(ix.amount)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, field="authority")
    market = accounts.spot_market(ix.market_index)
    price_data = accounts.oracle_price_data(market.oracle)
    _accrue_interest(accounts, market, price_data)

    amount = ix.amount
    position = user.force_get_spot_position_mut(ix.market_index)
    if (ix.reduce_only or market.status == MarketStatus.ReduceOnly) and (
        position.balance_type == SpotBalanceType.Borrow
    ):
        # reduce-only: repay at most the outstanding borrow
        borrowed = get_token_amount(position.scaled_balance, market, SpotBalanceType.Borrow)
        amount = min(amount, borrowed)

    user.total_deposits += _token_value(amount, price_data.price, market)
    update_spot_balances_and_cumulative_deposits(
        amount, SpotBalanceType.Deposit, market, position, False
    )
    market.vault_amount += amount
    if (
        position.balance_type == SpotBalanceType.Deposit
        and position.scaled_balance > 0
        and market.status != MarketStatus.Active
    ):
        raise ProtocolError(
            ErrorCode.MarketActionPaused, "spot market is not active", field="market_index"
        )
    if market.max_token_deposits > 0:
        total = get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit)
        if total > market.max_token_deposits:
            raise ProtocolError(
                ErrorCode.MaxDeposit,
                f"deposits {total} would exceed the cap {market.max_token_deposits}",
                field="amount",
            )
    if user.is_being_liquidated() and not can_be_liquidated(user, accounts):
        user.exit_cross_margin_liquidation()
    user.last_active_slot = accounts.clock.slot
    accounts.emit(_deposit_record(accounts, user, market, "deposit", amount, price_data.price))


@handler(Withdraw)
def withdraw(accounts: Accounts, ix: Withdraw) -> None:
    # delegates may trade for a user but never move funds out
    user = accounts.authorized_user((ix.authority, ix.sub_account_id), allow_delegate=False)
    _require_positive(ix.amount)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, field="authority")
    market = accounts.spot_market(ix.market_index)
    price_data = accounts.oracle_price_data(market.oracle)
    _accrue_interest(accounts, market, price_data)

    amount = ix.amount
    position = user.force_get_spot_position_mut(ix.market_index)
    if ix.reduce_only or market.status == MarketStatus.ReduceOnly:
        if position.balance_type != SpotBalanceType.Deposit:
            raise ProtocolError(ErrorCode.ReduceOnlyWithdrawIncreasedRisk, field="reduce_only")
        deposited = get_token_amount(position.scaled_balance, market, SpotBalanceType.Deposit)
        amount = min(amount, deposited)
        _require_positive(amount)

    user.total_withdraws += _token_value(amount, price_data.price, market)
    update_spot_balances_and_cumulative_deposits_with_limits(
        amount, SpotBalanceType.Borrow, market, user
    )
    if market.vault_amount < amount:
        raise ProtocolError(
            ErrorCode.SpotMarketInsufficientDeposits,
            f"vault holds {market.vault_amount}",
            field="amount",
        )
    market.vault_amount -= amount
    meets_withdraw_margin_requirement(user, accounts)
    if user.is_being_liquidated():
        # passing the initial-margin check above means the user is healthy again
        user.exit_cross_margin_liquidation()
    user.prune_spot_position(ix.market_index)
    user.last_active_slot = accounts.clock.slot
    accounts.emit(_deposit_record(accounts, user, market, "withdraw", amount, price_data.price))


@handler(TransferDeposit)
def transfer_deposit(accounts: Accounts, ix: TransferDeposit) -> None:
    if ix.from_sub_account_id == ix.to_sub_account_id:
        raise InvalidParameter(
            "to_sub_account_id",
            "must differ from from_sub_account_id",
            ErrorCode.CantTransferBetweenSameUserAccount,
        )
    from_user = accounts.authorized_user(
        (ix.authority, ix.from_sub_account_id), allow_delegate=False
    )
    to_user = accounts.authorized_user((ix.authority, ix.to_sub_account_id), allow_delegate=False)
    _require_positive(ix.amount)
    if from_user.is_bankrupt() or to_user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, field="authority")
    market = accounts.spot_market(ix.market_index)
    price_data = accounts.oracle_price_data(market.oracle)
    _accrue_interest(accounts, market, price_data)

    value = _token_value(ix.amount, price_data.price, market)
    from_user.total_withdraws += value
    update_spot_balances_and_cumulative_deposits_with_limits(
        ix.amount, SpotBalanceType.Borrow, market, from_user
    )
    meets_withdraw_margin_requirement(from_user, accounts)

    to_user.total_deposits += value
    to_position = to_user.force_get_spot_position_mut(ix.market_index)
    update_spot_balances_and_cumulative_deposits(
        ix.amount, SpotBalanceType.Deposit, market, to_position, False
    )
    from_user.prune_spot_position(ix.market_index)
    accounts.emit(
        _deposit_record(
            accounts, from_user, market, "withdraw", ix.amount, price_data.price, to_user.key
        )
    )
    accounts.emit(
        _deposit_record(
            accounts, to_user, market, "deposit", ix.amount, price_data.price, from_user.key
        )
    )
