"""Withdraw and borrow guards of a spot market (the program's ``math/spot_withdraw.rs``).

Units: token amounts are in the mint's units (``10**decimals`` per token); utilizations are
SPOT_UTILIZATION_PRECISION and the twap percentage and borrow multiple PERCENTAGE_PRECISION
(both 1e6 = 100%). Every guard parameter is read from the market's own fields.

The guards, as seed 001 ("Withdraw/Borrow Limits") states them, are checked after a
withdrawal or borrow has been applied to the market's balances:

* Withdraw limit: total deposits stay at least ``deposit_token_twap`` (the 1-day deposit EMA)
  minus ``max(twap * (100% - withdraw_limit_deposit_twap_pct), min(withdraw_guard_threshold,
  twap))``. With the seed's 80% a day can drain at most 20% of the EMA, and moves smaller than
  ``withdraw_guard_threshold`` never trip it.
* Borrow limit: with ``lesser = min(deposits, deposit_token_twap)``, borrows may reach
  ``max(lesser * borrow_limit_utilization_floor, borrow_token_twap *
  borrow_limit_borrow_twap_multiple)`` but never ``lesser * borrow_limit_max_utilization``;
  the limit is never below ``withdraw_guard_threshold`` and never above ``max_token_borrows``
  (``max_token_deposits * max_token_borrows_fraction / 1e4`` when the fraction is set). With the
  seed's numbers: free growth to 15% utilization, then 1.2x the 1-day borrow EMA, none past 90%.
* Utilization limits (:func:`calculate_token_utilization_limits`, as the current program):
  a withdrawal may not push utilization past ``max(optimal_utilization, utilization_twap +
  (100% - utilization_twap) / 2)``; the stricter of these and the twap limits applies.
* Small-account exemption: a position whose token amount plus the amount withdrawn is below
  ``withdraw_guard_threshold / small_account_exemption_divisor`` may withdraw past the global
  limits while the user's lifetime net deposits and the position's ``cumulative_deposits`` are
  non-negative and the position is (still) a deposit.

Deviation from the current program source, on purpose (the seed wins): the program today
keeps 75% of the deposit twap (``twap - max(twap / 4, ...)``) where the seed keeps 80% -- the
program's earlier rule ``twap - max(twap / 5, min(threshold, twap))``, which the defaults
reproduce exactly; and the program's borrow limit is ``max(lesser / 3, borrow_twap + lesser / 5)``
capped at ``lesser - lesser / 14`` (main pool; ``/2``, ``/3``, ``/20`` for isolated pools) where
the seed's is ``max(15% of lesser, 1.2 x borrow twap)`` capped at 90% of lesser, for every pool.
The exemption divisor (10) is a market field rather than a literal. Rounding is the program's:
every division truncates.
"""

from __future__ import annotations

from protocol.constants import PERCENTAGE_PRECISION, SPOT_UTILIZATION_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.spot_balance import get_token_amount
from protocol.numeric import U128_MAX, cast_i64, cast_u64, div_trunc
from protocol.state.spot_market import SpotMarket
from protocol.state.user import SpotPosition, User
from protocol.types import SpotBalanceType


def _sub_u(a: int, b: int) -> int:
    """Unsigned ``safe_sub``: fails rather than going negative."""
    if b > a:
        raise MathError(f"unsigned subtraction underflow: {a} - {b}")
    return a - b


def _saturating_sub(a: int, b: int) -> int:
    return a - b if a > b else 0


def _max_token_borrows(spot_market: SpotMarket) -> int:
    """Absolute borrow cap in tokens; unbounded (u128::MAX) when no fraction is set."""
    if spot_market.max_token_borrows_fraction > 0:
        return cast_u64(
            div_trunc(
                spot_market.max_token_deposits * spot_market.max_token_borrows_fraction, 10_000
            )
        )
    return U128_MAX


def _user_spot_position(user: User, market_index: int) -> SpotPosition:
    position = user.get_spot_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.CouldNotFindSpotPosition,
            f"user has no position in spot market {market_index}",
        )
    return position


def calculate_min_deposit_token_amount(
    deposit_token_twap: int, withdraw_guard_threshold: int, withdraw_limit_deposit_twap_pct: int
) -> int:
    """Least total deposits a withdrawal may leave: the twap less the larger of the drainable
    share (``100% - pct`` of the twap) and the guard threshold (capped at the twap)."""
    drainable_share = _sub_u(PERCENTAGE_PRECISION, withdraw_limit_deposit_twap_pct)
    drainable = div_trunc(deposit_token_twap * drainable_share, PERCENTAGE_PRECISION)
    return _sub_u(
        deposit_token_twap, max(drainable, min(withdraw_guard_threshold, deposit_token_twap))
    )


def calculate_max_borrow_token_amount(
    deposit_token_amount: int,
    deposit_token_twap: int,
    borrow_token_twap: int,
    withdraw_guard_threshold: int,
    max_token_borrows: int,
    borrow_twap_multiple: int,
    utilization_floor: int,
    max_utilization: int,
) -> int:
    """Most total borrows a withdrawal may leave (see the module docstring for the rule)."""
    lesser_deposit_amount = min(deposit_token_amount, deposit_token_twap)
    floor_borrows = div_trunc(lesser_deposit_amount * utilization_floor, SPOT_UTILIZATION_PRECISION)
    twap_borrows = div_trunc(borrow_token_twap * borrow_twap_multiple, PERCENTAGE_PRECISION)
    cap_borrows = div_trunc(lesser_deposit_amount * max_utilization, SPOT_UTILIZATION_PRECISION)
    return min(
        max(withdraw_guard_threshold, min(max(floor_borrows, twap_borrows), cap_borrows)),
        max_token_borrows,
    )


def check_user_exception_to_withdraw_limits(
    spot_market: SpotMarket, user: User | None, token_amount_withdrawn: int | None
) -> bool:
    """Whether a small depositor may withdraw past the global limits (principal and winnings)."""
    if user is None:
        return False
    spot_position = _user_spot_position(user, spot_market.market_index)
    net_deposits = user.total_deposits - user.total_withdraws
    if not (
        net_deposits >= 0
        and spot_position.cumulative_deposits >= 0
        and spot_position.balance_type == SpotBalanceType.Deposit
    ):
        return False
    if token_amount_withdrawn is None:
        return False
    user_deposit_token_amount = get_token_amount(
        spot_position.scaled_balance, spot_market, spot_position.balance_type
    )
    exemption_limit = div_trunc(
        spot_market.withdraw_guard_threshold, spot_market.small_account_exemption_divisor
    )
    return user_deposit_token_amount + token_amount_withdrawn < exemption_limit


def calculate_token_utilization_limits(
    deposit_token_amount: int, borrow_token_amount: int, spot_market: SpotMarket
) -> tuple[int, int]:
    """(least deposits, most borrows) a withdrawal may leave so utilization stays under
    ``max(optimal_utilization, utilization_twap + (100% - utilization_twap) / 2)``.

    Neither limit binds for moves below ``withdraw_guard_threshold``.
    """
    max_withdraw_utilization = max(
        spot_market.optimal_utilization,
        spot_market.utilization_twap
        + div_trunc(_saturating_sub(SPOT_UTILIZATION_PRECISION, spot_market.utilization_twap), 2),
    )
    min_deposit_tokens_for_utilization = min(
        div_trunc(borrow_token_amount * SPOT_UTILIZATION_PRECISION, max_withdraw_utilization),
        _saturating_sub(deposit_token_amount, spot_market.withdraw_guard_threshold),
    )
    max_borrow_tokens_for_utilization = max(
        div_trunc(max_withdraw_utilization * deposit_token_amount, SPOT_UTILIZATION_PRECISION),
        spot_market.withdraw_guard_threshold,
    )
    return min_deposit_tokens_for_utilization, max_borrow_tokens_for_utilization


def _max_borrow_token_for_twap(spot_market: SpotMarket, deposit_token_amount: int) -> int:
    return calculate_max_borrow_token_amount(
        deposit_token_amount,
        spot_market.deposit_token_twap,
        spot_market.borrow_token_twap,
        spot_market.withdraw_guard_threshold,
        _max_token_borrows(spot_market),
        spot_market.borrow_limit_borrow_twap_multiple,
        spot_market.borrow_limit_utilization_floor,
        spot_market.borrow_limit_max_utilization,
    )


def _min_deposit_token_for_twap(spot_market: SpotMarket) -> int:
    return calculate_min_deposit_token_amount(
        spot_market.deposit_token_twap,
        spot_market.withdraw_guard_threshold,
        spot_market.withdraw_limit_deposit_twap_pct,
    )


def check_withdraw_limits(
    spot_market: SpotMarket, user: User | None, token_amount_withdrawn: int | None
) -> bool:
    """Whether the market's balances (already updated for the withdrawal) are within limits.

    With a user, a depositor's withdrawal is judged on deposits only and a borrower's on both;
    without one, both are judged. A failure may still be excused by the small-account
    exemption. Call this before pruning the user's position (its fields are read).
    """
    deposit_token_amount = get_token_amount(
        spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
    )
    borrow_token_amount = get_token_amount(
        spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow
    )

    min_deposit_token_for_utilization, max_borrow_token_for_utilization = (
        calculate_token_utilization_limits(deposit_token_amount, borrow_token_amount, spot_market)
    )
    max_borrow_token = min(
        _max_borrow_token_for_twap(spot_market, deposit_token_amount),
        max_borrow_token_for_utilization,
    )
    min_deposit_token = max(
        _min_deposit_token_for_twap(spot_market), min_deposit_token_for_utilization
    )

    deposits_ok = deposit_token_amount >= min_deposit_token
    borrows_ok = borrow_token_amount <= max_borrow_token
    if user is not None:
        position = _user_spot_position(user, spot_market.market_index)
        if position.balance_type == SpotBalanceType.Borrow:
            valid_global_withdrawal = borrows_ok and deposits_ok
        else:
            valid_global_withdrawal = deposits_ok
    else:
        valid_global_withdrawal = deposits_ok and borrows_ok

    if valid_global_withdrawal:
        return True
    return check_user_exception_to_withdraw_limits(spot_market, user, token_amount_withdrawn)


def get_max_withdraw_for_market_with_token_amount(
    spot_market: SpotMarket, token_amount: int, is_leaving_drift: bool
) -> int:
    """Most a position holding signed ``token_amount`` may withdraw (or sell) now: its deposit
    (capped by the withdraw limit when tokens leave the program) plus the borrow headroom."""
    deposit_token_amount = get_token_amount(
        spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
    )
    borrow_token_amount = get_token_amount(
        spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow
    )

    # Utilization only matters when tokens actually leave; an in-program trade keeps them.
    if is_leaving_drift:
        min_deposit_token_for_utilization, max_borrow_token_for_utilization = (
            calculate_token_utilization_limits(
                deposit_token_amount, borrow_token_amount, spot_market
            )
        )
    else:
        min_deposit_token_for_utilization, max_borrow_token_for_utilization = 0, U128_MAX

    max_withdraw_amount = 0
    if token_amount > 0:
        min_deposit_token = max(
            _min_deposit_token_for_twap(spot_market), min_deposit_token_for_utilization
        )
        withdraw_limit = _saturating_sub(deposit_token_amount, min_deposit_token)
        if withdraw_limit <= token_amount and is_leaving_drift:
            return withdraw_limit
        max_withdraw_amount = token_amount

    max_borrow_token = min(
        _max_borrow_token_for_twap(spot_market, deposit_token_amount),
        max_borrow_token_for_utilization,
    )
    borrow_limit = min(
        _saturating_sub(max_borrow_token, borrow_token_amount),
        _saturating_sub(deposit_token_amount, borrow_token_amount),
    )
    if spot_market.max_token_borrows_fraction > 0:
        borrow_limit = min(
            borrow_limit, _saturating_sub(_max_token_borrows(spot_market), borrow_token_amount)
        )
    return max_withdraw_amount + borrow_limit


def validate_spot_balances(spot_market: SpotMarket) -> int:
    """Depositors' net claim on the vault (deposits - borrows, tokens); fails with
    ``SpotMarketVaultInvariantViolated`` if the revenue pool exceeds all deposits."""
    depositors_amount = cast_u64(
        get_token_amount(spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit)
    )
    borrowers_amount = cast_u64(
        get_token_amount(spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow)
    )
    revenue_amount = cast_u64(
        get_token_amount(
            spot_market.revenue_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
        )
    )
    depositors_claim = cast_i64(depositors_amount) - cast_i64(borrowers_amount)
    if revenue_amount > depositors_amount:
        raise ProtocolError(
            ErrorCode.SpotMarketVaultInvariantViolated,
            f"revenue_amount={revenue_amount} > depositors_amount={depositors_amount}",
        )
    return depositors_claim


def validate_spot_market_vault_amount(spot_market: SpotMarket, vault_amount: int) -> int:
    """:func:`validate_spot_balances`, and the vault must hold at least the depositors' claim."""
    depositors_claim = validate_spot_balances(spot_market)
    if cast_i64(vault_amount) < depositors_claim:
        raise ProtocolError(
            ErrorCode.SpotMarketVaultInvariantViolated,
            f"vault holds {vault_amount} < depositors' claim {depositors_claim}",
        )
    return depositors_claim
