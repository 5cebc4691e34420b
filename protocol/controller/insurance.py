"""Insurance-fund staking and revenue settlement (the program's ``controller/insurance.rs``).

Units: token amounts in the spot market's mint units; shares at the fund's ``shares_base``
exponent; factors IF_FACTOR_PRECISION (1e6); ``now`` unix seconds.

Each spot market's ``insurance_fund`` holds ``total_shares`` over its vault
(``insurance_fund.vault_amount``); ``user_shares`` of them belong to stakers (one
:class:`~protocol.state.insurance_fund_stake.InsuranceFundStake` per authority and market) and
the rest, ``total_shares - user_shares``, to the protocol. A share is worth
``vault * 1 / total_shares`` (:func:`~protocol.math.insurance.if_shares_to_vault_amount`).

Invariants kept here:

* ``user_shares <= total_shares``, and ``user_shares`` is the sum of the stakes' shares (each
  rebased to the fund's base; a stake's rebase truncates, so after a rebase the sum may fall
  short of ``user_shares`` by less than one share per stake);
* every holder's value is truncated, so the values of all holders sum to at most the vault;
* when shares have grown to more than ten per vault token the fund *rebases*: every share
  count is divided by ``10 ** expo_diff`` and ``shares_base`` grows by ``expo_diff``; stakes
  follow lazily (:func:`apply_rebase_to_insurance_fund_stake`) the next time they are used.

Unstaking is two-step: a request fixes the shares and the most they will pay
(``last_withdraw_request_value``, at most the vault less one token), and the tokens can be
removed once ``insurance_fund.unstaking_period`` has passed. Losses during the wait are the
staker's; gains are not (the payout is the lesser of the request's value and the shares'
value at removal). Cancelling gives up the shares whose gain the request locked out
(:func:`~protocol.math.insurance.calculate_if_shares_lost`).

The functions here take the vault balances as arguments and return the records they would
emit, as the program's take token accounts; the one that moves tokens between the spot market
vault and the insurance fund vault (:func:`attempt_settle_revenue_to_insurance_fund`, the
program's token transfer) says so.

Deviations from the program, and why:

* ``update_user_stats_if_stake_amount`` tracks only the quote market
  (``UserStats.if_staked_quote_asset_amount``); this model's ``UserStats`` has no
  governance-token stake field and no fuel, so other markets are skipped.
* ``resolve_perp_pnl_deficit`` and the bankruptcy draws live with the liquidation code
  (they draw on the fund, which only reads ``insurance_fund.vault_amount``); the insurance
  fund swap and protocol-share-to-revenue-pool transfers (``IfRebalanceConfig``) are not
  modelled.
* records are returned to the caller (these functions have no record sink).
"""

from __future__ import annotations

from protocol.constants import (
    GOV_SPOT_MARKET_INDEX,
    MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT,
    MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT_GOV,
    ONE_YEAR,
    PERCENTAGE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
    SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_DENOMINATOR,
    SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_NUMERATOR,
)
from protocol.controller.spot_balance import (
    update_revenue_pool_balances,
    update_spot_market_cumulative_interest,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import get_proportion_u128
from protocol.math.funding import on_the_hour_update
from protocol.math.insurance import (
    calculate_if_shares_lost,
    calculate_rebase_info,
    if_shares_to_vault_amount,
    vault_amount_to_if_shares,
)
from protocol.math.spot_balance import get_token_amount
from protocol.math.spot_withdraw import validate_spot_market_vault_amount
from protocol.numeric import cast_i64, cast_u32, cast_u64, cast_u128, div_trunc
from protocol.records import InsuranceFundRecord, InsuranceFundStakeRecord, Record
from protocol.state.insurance_fund_stake import InsuranceFundStake
from protocol.state.spot_market import SpotMarket
from protocol.state.user import UserStats
from protocol.types import SpotBalanceType

STAKE = "stake"
UNSTAKE_REQUEST = "unstake_request"
UNSTAKE_CANCEL_REQUEST = "unstake_cancel_request"
UNSTAKE = "unstake"
UNSTAKE_TRANSFER = "unstake_transfer"
STAKE_TRANSFER = "stake_transfer"
ADMIN_DEPOSIT = "admin_deposit"


def _sub_u(a: int, b: int, what: str) -> int:
    # the program's unsigned safe_sub: underflow is a MathError
    if b > a:
        raise MathError(f"{what}: {a} - {b} underflows")
    return a - b


def _stake_record(
    now: int,
    authority: bytes,
    action: str,
    amount: int,
    spot_market: SpotMarket,
    insurance_vault_amount: int,
    if_shares_before: int,
    user_if_shares_before: int,
    total_if_shares_before: int,
    if_shares_after: int,
) -> InsuranceFundStakeRecord:
    return InsuranceFundStakeRecord(
        ts=now,
        user_authority=authority,
        action=action,
        amount=amount,
        market_index=spot_market.market_index,
        insurance_vault_amount_before=insurance_vault_amount,
        if_shares_before=if_shares_before,
        user_if_shares_before=user_if_shares_before,
        total_if_shares_before=total_if_shares_before,
        if_shares_after=if_shares_after,
        user_if_shares_after=spot_market.insurance_fund.user_shares,
        total_if_shares_after=spot_market.insurance_fund.total_shares,
    )


# --- stakes -------------------------------------------------------------------------------------


def update_user_stats_if_stake_amount(
    if_stake_amount_delta: int,
    insurance_vault_amount: int,
    insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
) -> None:
    """Refresh ``user_stats.if_staked_quote_asset_amount``: the stake's value once the vault has
    moved by ``if_stake_amount_delta`` tokens (the deposit or withdrawal under way)."""
    del now  # the program reads it only for fuel, which this model does not have
    if spot_market.market_index != QUOTE_SPOT_MARKET_INDEX:
        return
    if if_stake_amount_delta >= 0:
        vault_after = insurance_vault_amount + if_stake_amount_delta
    else:
        vault_after = _sub_u(
            insurance_vault_amount, -if_stake_amount_delta, "insurance vault - withdrawal"
        )
    user_stats.if_staked_quote_asset_amount = if_shares_to_vault_amount(
        insurance_fund_stake.checked_if_shares(spot_market),
        spot_market.insurance_fund.total_shares,
        cast_u64(vault_after),
    )


def apply_rebase_to_insurance_fund(
    insurance_fund_vault_balance: int, spot_market: SpotMarket
) -> None:
    """Rebase the fund's share counts down by a power of ten when there are more than ten
    shares per vault token; seed ``total_shares`` with the vault balance when a non-empty vault
    has no shares (the protocol owns tokens nobody holds shares in)."""
    fund = spot_market.insurance_fund
    if insurance_fund_vault_balance != 0 and insurance_fund_vault_balance < fund.total_shares:
        expo_diff, rebase_divisor = calculate_rebase_info(
            fund.total_shares, insurance_fund_vault_balance
        )
        fund.total_shares = div_trunc(fund.total_shares, rebase_divisor)
        fund.user_shares = div_trunc(fund.user_shares, rebase_divisor)
        fund.shares_base = cast_u128(fund.shares_base + expo_diff)
    if insurance_fund_vault_balance != 0 and fund.total_shares == 0:
        fund.total_shares = insurance_fund_vault_balance


def apply_rebase_to_insurance_fund_stake(
    insurance_fund_stake: InsuranceFundStake, spot_market: SpotMarket
) -> None:
    """Bring a stake to the fund's ``shares_base``: divide its shares and its pending request
    by ten for every step the fund rebased since the stake was last touched (truncating)."""
    shares_base = spot_market.insurance_fund.shares_base
    if shares_base == insurance_fund_stake.if_base:
        return
    if shares_base < insurance_fund_stake.if_base:
        raise ProtocolError(ErrorCode.InvalidIFRebase, "Rebase expo out of bounds")
    expo_diff = cast_u32(shares_base - insurance_fund_stake.if_base)
    rebase_divisor = 10**expo_diff
    insurance_fund_stake.if_base = shares_base
    new_if_shares = div_trunc(insurance_fund_stake.unchecked_if_shares(), rebase_divisor)
    insurance_fund_stake.update_if_shares(new_if_shares, spot_market)
    insurance_fund_stake.last_withdraw_request_shares = div_trunc(
        insurance_fund_stake.last_withdraw_request_shares, rebase_divisor
    )


def add_insurance_fund_stake(
    amount: int,
    insurance_vault_amount: int,
    insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
    admin_deposit: bool,
) -> InsuranceFundStakeRecord:
    """Mint shares for ``amount`` tokens at the current price (``insurance_vault_amount`` is
    the vault before the deposit; the caller moves the tokens). A fund whose vault is empty
    while shares exist takes no new stakes (``InvalidIFForNewStakes``): the new tokens would
    be handed to the old holders. The stake's cost basis restarts when it held no shares."""
    fund = spot_market.insurance_fund
    if insurance_vault_amount == 0 and fund.total_shares != 0:
        raise ProtocolError(
            ErrorCode.InvalidIFForNewStakes,
            "Insurance Fund balance should be non-zero for new stakers to enter",
        )
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    apply_rebase_to_insurance_fund_stake(insurance_fund_stake, spot_market)

    if_shares_before = insurance_fund_stake.checked_if_shares(spot_market)
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares

    n_shares = vault_amount_to_if_shares(amount, fund.total_shares, insurance_vault_amount)
    if if_shares_before == 0:
        insurance_fund_stake.cost_basis = cast_i64(amount)
    else:
        insurance_fund_stake.cost_basis = cast_i64(insurance_fund_stake.cost_basis + amount)
    insurance_fund_stake.increase_if_shares(n_shares, spot_market)
    fund.total_shares = cast_u128(fund.total_shares + n_shares)
    fund.user_shares = cast_u128(fund.user_shares + n_shares)

    update_user_stats_if_stake_amount(
        amount, insurance_vault_amount, insurance_fund_stake, user_stats, spot_market, now
    )
    return _stake_record(
        now,
        user_stats.authority,
        ADMIN_DEPOSIT if admin_deposit else STAKE,
        amount,
        spot_market,
        insurance_vault_amount,
        if_shares_before,
        user_if_shares_before,
        total_if_shares_before,
        insurance_fund_stake.checked_if_shares(spot_market),
    )


def request_remove_insurance_fund_stake(
    n_shares: int,
    insurance_vault_amount: int,
    insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
) -> InsuranceFundStakeRecord:
    """Start the unstaking cooldown for ``n_shares`` (shares at the stake's current base): the
    request is worth at most their value now, and never the whole vault (at most the vault
    less one token), so the fund cannot be emptied by its stakers."""
    insurance_fund_stake.last_withdraw_request_shares = n_shares
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    apply_rebase_to_insurance_fund_stake(insurance_fund_stake, spot_market)

    fund = spot_market.insurance_fund
    if_shares_before = insurance_fund_stake.checked_if_shares(spot_market)
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares

    if insurance_fund_stake.last_withdraw_request_shares > if_shares_before:
        raise ProtocolError(
            ErrorCode.InvalidInsuranceUnstakeSize,
            "last_withdraw_request_shares exceeds if_shares "
            f"{insurance_fund_stake.last_withdraw_request_shares} > {if_shares_before}",
        )
    insurance_fund_stake.validate_base(spot_market)

    insurance_fund_stake.last_withdraw_request_value = min(
        if_shares_to_vault_amount(
            insurance_fund_stake.last_withdraw_request_shares,
            fund.total_shares,
            insurance_vault_amount,
        ),
        max(insurance_vault_amount - 1, 0),
    )
    value = insurance_fund_stake.last_withdraw_request_value
    if not (value == 0 or value < insurance_vault_amount):
        raise ProtocolError(
            ErrorCode.InvalidIFUnstakeSize,
            "Requested withdraw value is not below Insurance Fund balance",
        )

    if_shares_after = insurance_fund_stake.checked_if_shares(spot_market)
    update_user_stats_if_stake_amount(
        0, insurance_vault_amount, insurance_fund_stake, user_stats, spot_market, now
    )
    record = _stake_record(
        now,
        user_stats.authority,
        UNSTAKE_REQUEST,
        value,
        spot_market,
        insurance_vault_amount,
        if_shares_before,
        user_if_shares_before,
        total_if_shares_before,
        if_shares_after,
    )
    insurance_fund_stake.last_withdraw_request_ts = now
    return record


def cancel_request_remove_insurance_fund_stake(
    insurance_vault_amount: int,
    insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
) -> InsuranceFundStakeRecord:
    """Drop the pending unstake request, burning the shares whose gain since the request the
    staker had given up (:func:`~protocol.math.insurance.calculate_if_shares_lost`); the
    burned shares' value stays in the vault for the other holders. Restarts the cooldown."""
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    apply_rebase_to_insurance_fund_stake(insurance_fund_stake, spot_market)

    fund = spot_market.insurance_fund
    if_shares_before = insurance_fund_stake.checked_if_shares(spot_market)
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares

    insurance_fund_stake.validate_base(spot_market)
    if insurance_fund_stake.last_withdraw_request_shares == 0:
        raise ProtocolError(ErrorCode.InvalidIFUnstakeCancel, "No withdraw request in progress")

    if_shares_lost = calculate_if_shares_lost(
        insurance_fund_stake, spot_market, insurance_vault_amount
    )
    insurance_fund_stake.decrease_if_shares(if_shares_lost, spot_market)
    fund.total_shares = _sub_u(fund.total_shares, if_shares_lost, "total_shares")
    fund.user_shares = _sub_u(fund.user_shares, if_shares_lost, "user_shares")

    if_shares_after = insurance_fund_stake.checked_if_shares(spot_market)
    update_user_stats_if_stake_amount(
        0, insurance_vault_amount, insurance_fund_stake, user_stats, spot_market, now
    )
    record = _stake_record(
        now,
        user_stats.authority,
        UNSTAKE_CANCEL_REQUEST,
        0,
        spot_market,
        insurance_vault_amount,
        if_shares_before,
        user_if_shares_before,
        total_if_shares_before,
        if_shares_after,
    )
    insurance_fund_stake.last_withdraw_request_shares = 0
    insurance_fund_stake.last_withdraw_request_value = 0
    insurance_fund_stake.last_withdraw_request_ts = now
    return record


def remove_insurance_fund_stake(
    insurance_vault_amount: int,
    insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
) -> tuple[int, InsuranceFundStakeRecord]:
    """Burn the requested shares once ``unstaking_period`` has passed since the request
    (``TryingToRemoveLiquidityTooFast``) and return the tokens owed: the lesser of the
    shares' value now and the value fixed at the request. The caller pays them out."""
    fund = spot_market.insurance_fund
    time_since_withdraw_request = now - insurance_fund_stake.last_withdraw_request_ts
    if time_since_withdraw_request < fund.unstaking_period:
        raise ProtocolError(
            ErrorCode.TryingToRemoveLiquidityTooFast,
            f"{time_since_withdraw_request}s since the request, the cooldown is "
            f"{fund.unstaking_period}s",
        )
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    apply_rebase_to_insurance_fund_stake(insurance_fund_stake, spot_market)

    if_shares_before = insurance_fund_stake.checked_if_shares(spot_market)
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares

    n_shares = insurance_fund_stake.last_withdraw_request_shares
    if n_shares == 0:
        raise ProtocolError(
            ErrorCode.InvalidIFUnstake, "Must submit withdraw request and wait the escrow period"
        )
    if if_shares_before < n_shares:
        raise ProtocolError(
            ErrorCode.InsufficientIFShares, f"if_shares {if_shares_before} < {n_shares}"
        )

    amount = if_shares_to_vault_amount(n_shares, fund.total_shares, insurance_vault_amount)
    # the program computes the shares lost here only for its validation
    calculate_if_shares_lost(insurance_fund_stake, spot_market, insurance_vault_amount)
    withdraw_amount = min(amount, insurance_fund_stake.last_withdraw_request_value)

    insurance_fund_stake.decrease_if_shares(n_shares, spot_market)
    insurance_fund_stake.cost_basis = cast_i64(insurance_fund_stake.cost_basis - withdraw_amount)
    fund.total_shares = _sub_u(fund.total_shares, n_shares, "total_shares")
    fund.user_shares = _sub_u(fund.user_shares, n_shares, "user_shares")

    insurance_fund_stake.last_withdraw_request_shares = 0
    insurance_fund_stake.last_withdraw_request_value = 0
    insurance_fund_stake.last_withdraw_request_ts = now

    if_shares_after = insurance_fund_stake.checked_if_shares(spot_market)
    update_user_stats_if_stake_amount(
        -withdraw_amount,
        insurance_vault_amount,
        insurance_fund_stake,
        user_stats,
        spot_market,
        now,
    )
    record = _stake_record(
        now,
        user_stats.authority,
        UNSTAKE,
        withdraw_amount,
        spot_market,
        insurance_vault_amount,
        if_shares_before,
        user_if_shares_before,
        total_if_shares_before,
        if_shares_after,
    )
    return withdraw_amount, record


def admin_remove_insurance_fund_stake(
    insurance_vault_amount: int,
    n_shares: int,
    spot_market: SpotMarket,
    now: int,
    admin_pubkey: bytes,
) -> tuple[int, InsuranceFundStakeRecord]:
    """Burn ``n_shares`` of the protocol's own shares and return their value (the caller pays
    it out); at most the protocol's shares (``InsufficientIFShares``)."""
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    fund = spot_market.insurance_fund
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares
    if_shares_before = _sub_u(total_if_shares_before, user_if_shares_before, "protocol shares")
    if if_shares_before < n_shares:
        raise ProtocolError(
            ErrorCode.InsufficientIFShares,
            f"if_shares_before={if_shares_before} < n_shares={n_shares}",
        )
    withdraw_amount = if_shares_to_vault_amount(n_shares, fund.total_shares, insurance_vault_amount)
    fund.total_shares = _sub_u(fund.total_shares, n_shares, "total_shares")
    if_shares_after = _sub_u(fund.total_shares, user_if_shares_before, "protocol shares")
    record = _stake_record(
        now,
        admin_pubkey,
        UNSTAKE,
        withdraw_amount,
        spot_market,
        insurance_vault_amount,
        if_shares_before,
        user_if_shares_before,
        total_if_shares_before,
        if_shares_after,
    )
    return withdraw_amount, record


def transfer_protocol_insurance_fund_stake(
    insurance_vault_amount: int,
    n_shares: int,
    target_insurance_fund_stake: InsuranceFundStake,
    user_stats: UserStats,
    spot_market: SpotMarket,
    now: int,
    signer_pubkey: bytes,
) -> tuple[int, list[InsuranceFundStakeRecord]]:
    """Hand ``n_shares`` of the protocol's shares to a staker (they become user shares);
    returns their value and the two records (the protocol's unstake, the staker's stake)."""
    apply_rebase_to_insurance_fund(insurance_vault_amount, spot_market)
    fund = spot_market.insurance_fund
    total_if_shares_before = fund.total_shares
    user_if_shares_before = fund.user_shares
    if_shares_before = _sub_u(total_if_shares_before, user_if_shares_before, "protocol shares")
    target_if_shares_before = target_insurance_fund_stake.checked_if_shares(spot_market)
    if if_shares_before < n_shares:
        raise ProtocolError(
            ErrorCode.InsufficientIFShares,
            f"if_shares_before={if_shares_before} < n_shares={n_shares}",
        )
    fund.user_shares = cast_u128(fund.user_shares + n_shares)
    target_insurance_fund_stake.increase_if_shares(n_shares, spot_market)
    target_if_shares_after = target_insurance_fund_stake.checked_if_shares(spot_market)
    if spot_market.market_index == QUOTE_SPOT_MARKET_INDEX:
        user_stats.if_staked_quote_asset_amount = if_shares_to_vault_amount(
            target_if_shares_after, fund.total_shares, insurance_vault_amount
        )
    withdraw_amount = if_shares_to_vault_amount(n_shares, fund.total_shares, insurance_vault_amount)
    protocol_if_shares_after = _sub_u(fund.total_shares, fund.user_shares, "protocol shares")
    records = [
        _stake_record(
            now,
            signer_pubkey,
            UNSTAKE_TRANSFER,
            withdraw_amount,
            spot_market,
            insurance_vault_amount,
            if_shares_before,
            user_if_shares_before,
            total_if_shares_before,
            protocol_if_shares_after,
        ),
        _stake_record(
            now,
            target_insurance_fund_stake.authority,
            STAKE_TRANSFER,
            withdraw_amount,
            spot_market,
            insurance_vault_amount,
            target_if_shares_before,
            user_if_shares_before,
            total_if_shares_before,
            target_if_shares_after,
        ),
    ]
    return withdraw_amount, records


# --- revenue --------------------------------------------------------------------------------------


def settle_revenue_to_insurance_fund(
    spot_market_vault_amount: int,
    insurance_vault_amount: int,
    spot_market: SpotMarket,
    now: int,
    check_invariants: bool,
) -> tuple[int, list[Record]]:
    """Take the revenue pool's tokens for the insurance fund; returns the tokens (the caller
    moves them from the spot market vault to the insurance fund vault) and the records.

    Interest is accrued first. A market with ``revenue_settle_period == 0`` settles nothing.
    ``user_factor > total_factor`` refuses (``RevenueSettingsCannotSettleToIF``). The amount is
    the revenue pool's tokens, halved down to half the depositors' net claim when the market's
    utilization leaves less than that for withdrawals. With stakers in the fund it is capped
    at a tenth of that and at ``MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT`` (1000%)
    a year of the vault, pro rata per settle period; without stakers there is no cap. The
    protocol's part (``total_factor - user_factor`` of ``total_factor``) is minted to it as
    shares at the price before the inflow; the rest raises the value of every share.
    ``check_invariants`` refuses a settlement of nothing (``NoRevenueToSettleToIF``).
    """
    records: list[Record] = []
    interest_record = update_spot_market_cumulative_interest(spot_market, None, now)
    if interest_record is not None:
        records.append(interest_record)

    fund = spot_market.insurance_fund
    if fund.revenue_settle_period == 0:
        return 0, records
    if fund.user_factor > fund.total_factor:
        raise ProtocolError(
            ErrorCode.RevenueSettingsCannotSettleToIF,
            f"invalid if_factor settings on spot market {spot_market.market_index}: "
            f"user_factor {fund.user_factor} > total_factor {fund.total_factor}",
        )

    depositors_claim = validate_spot_market_vault_amount(spot_market, spot_market_vault_amount)
    token_amount = get_token_amount(
        spot_market.revenue_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )
    if depositors_claim < token_amount:
        # only half of what depositors could withdraw may go while utilization is high
        token_amount = div_trunc(max(depositors_claim, 0), 2)

    if fund.user_shares > 0:
        max_apr_per_revenue_settle = (
            MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT_GOV
            if spot_market.market_index == GOV_SPOT_MARKET_INDEX
            else MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT
        )
        settles_per_year = max(div_trunc(ONE_YEAR, fund.revenue_settle_period), 1)
        capped_apr_amount = div_trunc(
            div_trunc(insurance_vault_amount * max_apr_per_revenue_settle, PERCENTAGE_PRECISION),
            settles_per_year,
        )
        capped_token_pct_amount = div_trunc(token_amount, 10)
        token_amount = min(capped_token_pct_amount, capped_apr_amount)

    insurance_fund_token_amount = cast_u64(
        get_proportion_u128(
            token_amount,
            SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_NUMERATOR,
            SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_DENOMINATOR,
        )
    )
    if check_invariants and insurance_fund_token_amount == 0:
        raise ProtocolError(
            ErrorCode.NoRevenueToSettleToIF, "no amount to settle to insurance fund"
        )

    fund.last_revenue_settle_ts = now

    protocol_if_factor = _sub_u(fund.total_factor, fund.user_factor, "protocol if factor")
    if protocol_if_factor > 0:
        n_shares = vault_amount_to_if_shares(
            div_trunc(insurance_fund_token_amount * protocol_if_factor, fund.total_factor),
            fund.total_shares,
            insurance_vault_amount,
        )
        fund.total_shares = cast_u128(fund.total_shares + n_shares)

    # as in the program, "before" is read after the protocol's shares were minted
    total_if_shares_before = fund.total_shares
    update_revenue_pool_balances(insurance_fund_token_amount, SpotBalanceType.Borrow, spot_market)

    records.append(
        InsuranceFundRecord(
            ts=now,
            spot_market_index=spot_market.market_index,
            perp_market_index=0,
            user_if_factor=fund.user_factor,
            total_if_factor=fund.total_factor,
            vault_amount_before=spot_market_vault_amount,
            insurance_vault_amount_before=insurance_vault_amount,
            total_if_shares_before=total_if_shares_before,
            total_if_shares_after=fund.total_shares,
            amount=cast_i64(insurance_fund_token_amount),
        )
    )
    return insurance_fund_token_amount, records


def transfer_spot_market_vault_to_insurance_fund_vault(
    spot_market: SpotMarket, token_amount: int
) -> None:
    """The token transfer of a revenue settlement: ``token_amount`` leaves the spot market's
    vault for its insurance fund vault (the program's ``send_from_program_vault``)."""
    if token_amount > spot_market.vault_amount:
        raise ProtocolError(
            ErrorCode.SpotMarketVaultInvariantViolated,
            f"spot market vault holds {spot_market.vault_amount} < {token_amount}",
        )
    spot_market.vault_amount -= token_amount
    spot_market.insurance_fund.vault_amount += token_amount


def attempt_settle_revenue_to_insurance_fund(
    spot_market: SpotMarket, now: int
) -> tuple[int, list[Record]]:
    """Settle revenue to the insurance fund if a settlement is due now (on the hour, per
    :func:`~protocol.math.funding.on_the_hour_update`), moving the tokens between the vaults;
    nothing otherwise. Staking calls this first so a new staker buys shares at the price
    after the revenue due, not before it."""
    fund = spot_market.insurance_fund
    valid_revenue_settle_time = (
        fund.revenue_settle_period > 0
        and on_the_hour_update(now, fund.last_revenue_settle_ts, fund.revenue_settle_period) == 0
    )
    if not valid_revenue_settle_time:
        return 0, []
    token_amount, records = settle_revenue_to_insurance_fund(
        spot_market.vault_amount, fund.vault_amount, spot_market, now, False
    )
    if token_amount > 0:
        transfer_spot_market_vault_to_insurance_fund_vault(spot_market, token_amount)
    fund.last_revenue_settle_ts = now
    return token_amount, records
