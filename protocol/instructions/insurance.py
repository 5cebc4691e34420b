"""Insurance-fund instructions: revenue settlement, staking, and the admin's IF factors
(the program's ``handle_settle_revenue_to_insurance_fund`` in ``instructions/keeper.rs``,
``instructions/if_staker.rs`` and ``handle_update_spot_market_if_factor``).

``SettleRevenueToInsuranceFund`` is permissionless (any signer, as keepers send it). It runs
at most once per ``insurance_fund.revenue_settle_period`` (hourly by default), on the hour by
the program's :func:`~protocol.math.funding.on_the_hour_update`; too early is refused with
``RevenueSettingsCannotSettleToIF`` and nothing to settle with ``NoRevenueToSettleToIF``. The
tokens move from the spot market's ``vault_amount`` to ``insurance_fund.vault_amount``.

Staking instructions must be signed by the stake's authority. Tokens staked come from, and
tokens unstaked go to, the authority's wallet, which is outside this model exactly as for
:class:`~protocol.instructions.user.Deposit` and ``Withdraw``: ``insurance_fund.vault_amount``
grows by the amount staked and shrinks by the amount paid out, and each movement is in an
``InsuranceFundStakeRecord`` (``"stake"`` / ``"unstake"`` amounts). So the vault always equals
what the stake and unstake records, the revenue settlements (``InsuranceFundRecord``) and any
insurance draws say went in and out, and no user's deposit or margin is touched by staking.

``UpdateInsuranceFundFactors`` must be signed by ``state.admin``; ``user_factor`` above
``total_factor``, or ``total_factor`` above 100%, is refused with the program's
``DefaultError`` (the program has no more specific code for it).

Deviations from the program, and why:

* the program's ``initialize_user_stats`` is a separate instruction; here, as
  :class:`~protocol.instructions.user.InitializeUser` does, ``InitializeInsuranceFundStake``
  creates the authority's ``UserStats`` when it has none.
* markets have no ``paused_operations`` bits, so ``InsuranceFundOperationPaused`` never
  applies; the exchange has no global withdraw pause.
* a stake is looked up by ``(authority, market_index)``, so the program's
  ``IncorrectSpotMarketAccountPassed`` (a stake passed with the wrong market) cannot occur.
* as in the program, a request to unstake is refused with ``InvalidIFRebase`` while the stake
  is behind a rebase of its fund; any stake addition (or a cancel or removal of a pending
  request) brings the stake up to date.

Known limit, kept from the program: a pending request so small that a rebase of its fund
truncates it to zero shares can be neither cancelled (``InvalidIFUnstakeCancel``) nor removed
(``InvalidIFUnstake``), and blocks new stakes and requests for that stake.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, U32, U64, Pubkey
from protocol.constants import IF_FACTOR_PRECISION
from protocol.controller.insurance import (
    add_insurance_fund_stake,
    attempt_settle_revenue_to_insurance_fund,
    cancel_request_remove_insurance_fund_stake,
    remove_insurance_fund_stake,
    request_remove_insurance_fund_stake,
    settle_revenue_to_insurance_fund,
    transfer_spot_market_vault_to_insurance_fund_vault,
)
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.math.funding import on_the_hour_update
from protocol.math.insurance import vault_amount_to_if_shares
from protocol.math.spot_balance import calculate_spot_market_utilization
from protocol.math.spot_withdraw import validate_spot_balances, validate_spot_market_vault_amount
from protocol.state.insurance_fund_stake import InsuranceFundStake
from protocol.state.spot_market import SpotMarket
from protocol.state.user import UserStats
from protocol.types import MarketStatus

# the program's SpotMarket::is_healthy_utilization threshold (90%, SPOT_UTILIZATION_PRECISION)
UNHEALTHY_UTILIZATION = 900_000


@instruction(80)
@dataclass(frozen=True, slots=True)
class SettleRevenueToInsuranceFund:
    """Move the spot market's settleable revenue into its insurance fund; anyone may send it."""

    spot_market_index: U16


@instruction(81)
@dataclass(frozen=True, slots=True)
class InitializeInsuranceFundStake:
    authority: Pubkey
    market_index: U16


@instruction(82)
@dataclass(frozen=True, slots=True)
class AddInsuranceFundStake:
    """Stake ``amount`` tokens (mint units) from the authority's wallet."""

    authority: Pubkey
    market_index: U16
    amount: U64


@instruction(83)
@dataclass(frozen=True, slots=True)
class RequestRemoveInsuranceFundStake:
    """Start the cooldown to unstake the shares ``amount`` tokens buy at the current price."""

    authority: Pubkey
    market_index: U16
    amount: U64


@instruction(84)
@dataclass(frozen=True, slots=True)
class CancelRequestRemoveInsuranceFundStake:
    authority: Pubkey
    market_index: U16


@instruction(85)
@dataclass(frozen=True, slots=True)
class RemoveInsuranceFundStake:
    """Pay out the pending request once the cooldown has passed."""

    authority: Pubkey
    market_index: U16


@instruction(86)
@dataclass(frozen=True, slots=True)
class UpdateInsuranceFundFactors:
    """Admin: the share of borrow interest for the revenue pool (``total_factor``) and the part
    of it reserved for stakers (``user_factor``), both IF_FACTOR_PRECISION."""

    market_index: U16
    total_factor: U32
    user_factor: U32


def _staker(
    accounts: Accounts, authority: bytes, market_index: int
) -> tuple[InsuranceFundStake, UserStats, SpotMarket]:
    accounts.require_signer(authority, "authority")
    spot_market = accounts.spot_market(market_index)
    stake = accounts.insurance_fund_stake((authority, market_index))
    user_stats = accounts.user_stats(authority)
    return stake, user_stats, spot_market


@handler(SettleRevenueToInsuranceFund)
def handle_settle_revenue_to_insurance_fund(
    accounts: Accounts, ix: SettleRevenueToInsuranceFund
) -> None:
    spot_market = accounts.spot_market(ix.spot_market_index)
    fund = spot_market.insurance_fund
    if fund.revenue_settle_period <= 0:
        raise ProtocolError(
            ErrorCode.RevenueSettingsCannotSettleToIF,
            "invalid revenue_settle_period settings on spot market",
            field="spot_market_index",
        )
    now = accounts.clock.unix_timestamp
    time_until_next_update = on_the_hour_update(
        now, fund.last_revenue_settle_ts, fund.revenue_settle_period
    )
    if time_until_next_update != 0:
        raise ProtocolError(
            ErrorCode.RevenueSettingsCannotSettleToIF,
            f"Must wait {time_until_next_update} seconds until next available settlement time",
            field="spot_market_index",
        )
    token_amount, records = settle_revenue_to_insurance_fund(
        spot_market.vault_amount, fund.vault_amount, spot_market, now, True
    )
    fund.last_revenue_settle_ts = now
    transfer_spot_market_vault_to_insurance_fund_vault(spot_market, token_amount)
    validate_spot_market_vault_amount(spot_market, spot_market.vault_amount)
    for record in records:
        accounts.emit(record)


@handler(InitializeInsuranceFundStake)
def handle_initialize_insurance_fund_stake(
    accounts: Accounts, ix: InitializeInsuranceFundStake
) -> None:
    accounts.require_signer(ix.authority, "authority")
    accounts.spot_market(ix.market_index)  # the market must exist
    if not accounts.has_user_stats(ix.authority):
        accounts.add_user_stats(UserStats(authority=ix.authority))
    accounts.add_insurance_fund_stake(
        InsuranceFundStake.new(ix.authority, ix.market_index, accounts.clock.unix_timestamp)
    )


@handler(AddInsuranceFundStake)
def handle_add_insurance_fund_stake(accounts: Accounts, ix: AddInsuranceFundStake) -> None:
    if ix.amount == 0:
        raise InvalidParameter("amount", "must be greater than zero", ErrorCode.InsufficientDeposit)
    stake, user_stats, spot_market = _staker(accounts, ix.authority, ix.market_index)
    if spot_market.status == MarketStatus.Initialized:
        raise ProtocolError(
            ErrorCode.InvalidSpotMarketState,
            f"spot market = {spot_market.market_index} not active for insurance_fund_stake",
            field="market_index",
        )
    if stake.last_withdraw_request_shares != 0 or stake.last_withdraw_request_value != 0:
        raise ProtocolError(ErrorCode.IFWithdrawRequestInProgress, "withdraw request in progress")
    now = accounts.clock.unix_timestamp
    _, settle_records = attempt_settle_revenue_to_insurance_fund(spot_market, now)
    for record in settle_records:
        accounts.emit(record)
    validate_spot_market_vault_amount(spot_market, spot_market.vault_amount)

    fund = spot_market.insurance_fund
    record = add_insurance_fund_stake(
        ix.amount, fund.vault_amount, stake, user_stats, spot_market, now, False
    )
    fund.vault_amount += ix.amount  # received from the authority's wallet
    accounts.emit(record)


@handler(RequestRemoveInsuranceFundStake)
def handle_request_remove_insurance_fund_stake(
    accounts: Accounts, ix: RequestRemoveInsuranceFundStake
) -> None:
    stake, user_stats, spot_market = _staker(accounts, ix.authority, ix.market_index)
    if stake.last_withdraw_request_shares != 0:
        raise ProtocolError(
            ErrorCode.IFWithdrawRequestInProgress, "Withdraw request is already in progress"
        )
    fund = spot_market.insurance_fund
    n_shares = vault_amount_to_if_shares(ix.amount, fund.total_shares, fund.vault_amount)
    if n_shares == 0:
        raise ProtocolError(
            ErrorCode.IFWithdrawRequestTooSmall, "Requested lp_shares = 0", field="amount"
        )
    user_if_shares = stake.checked_if_shares(spot_market)
    if user_if_shares < n_shares:
        raise ProtocolError(
            ErrorCode.InsufficientIFShares,
            f"stake holds {user_if_shares} shares < {n_shares} requested",
            field="amount",
        )
    accounts.emit(
        request_remove_insurance_fund_stake(
            n_shares,
            fund.vault_amount,
            stake,
            user_stats,
            spot_market,
            accounts.clock.unix_timestamp,
        )
    )


@handler(CancelRequestRemoveInsuranceFundStake)
def handle_cancel_request_remove_insurance_fund_stake(
    accounts: Accounts, ix: CancelRequestRemoveInsuranceFundStake
) -> None:
    stake, user_stats, spot_market = _staker(accounts, ix.authority, ix.market_index)
    if stake.last_withdraw_request_shares == 0:
        raise ProtocolError(
            ErrorCode.NoIFWithdrawRequestInProgress, "No withdraw request in progress"
        )
    accounts.emit(
        cancel_request_remove_insurance_fund_stake(
            spot_market.insurance_fund.vault_amount,
            stake,
            user_stats,
            spot_market,
            accounts.clock.unix_timestamp,
        )
    )


def _is_healthy_utilization(spot_market: SpotMarket) -> bool:
    """``SpotMarket::is_healthy_utilization``: utilization and its TWAP at most 90%."""
    return (
        spot_market.utilization_twap <= UNHEALTHY_UTILIZATION
        and calculate_spot_market_utilization(spot_market) <= UNHEALTHY_UTILIZATION
    )


@handler(RemoveInsuranceFundStake)
def handle_remove_insurance_fund_stake(accounts: Accounts, ix: RemoveInsuranceFundStake) -> None:
    stake, user_stats, spot_market = _staker(accounts, ix.authority, ix.market_index)
    if not _is_healthy_utilization(spot_market):
        raise ProtocolError(
            ErrorCode.SpotMarketInsufficientDeposits,
            "spot market utilization above health threshold",
            field="market_index",
        )
    fund = spot_market.insurance_fund
    amount, record = remove_insurance_fund_stake(
        fund.vault_amount, stake, user_stats, spot_market, accounts.clock.unix_timestamp
    )
    fund.vault_amount -= amount  # paid to the authority's wallet
    if fund.vault_amount <= 0:
        raise ProtocolError(
            ErrorCode.InvalidIFDetected, "insurance_fund_vault.amount must remain > 0"
        )
    validate_spot_balances(spot_market)
    accounts.emit(record)


@handler(UpdateInsuranceFundFactors)
def handle_update_insurance_fund_factors(
    accounts: Accounts, ix: UpdateInsuranceFundFactors
) -> None:
    accounts.require_signer(accounts.state.admin, "admin")
    spot_market = accounts.spot_market(ix.market_index)
    if ix.user_factor > ix.total_factor:
        raise InvalidParameter(
            "user_factor",
            f"user_if_factor {ix.user_factor} must be <= total_if_factor {ix.total_factor}",
            ErrorCode.DefaultError,
        )
    if ix.total_factor > IF_FACTOR_PRECISION:
        raise InvalidParameter(
            "total_factor",
            f"total_if_factor {ix.total_factor} must be <= 100% ({IF_FACTOR_PRECISION})",
            ErrorCode.DefaultError,
        )
    spot_market.insurance_fund.user_factor = ix.user_factor
    spot_market.insurance_fund.total_factor = ix.total_factor
