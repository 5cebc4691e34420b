"""Spot balance, interest and TWAP state changes (the program's ``controller/spot_balance.rs``).

Units: token amounts in the mint's units; scaled balances SPOT_BALANCE_PRECISION; interest
indices SPOT_CUMULATIVE_INTEREST_PRECISION; ``now`` unix seconds. Every function mutates the
objects it is handed; instructions hand in the copy-on-write clones of
:class:`~protocol.accounts.Accounts`, so a failure part-way leaves committed state untouched.

Invariants kept here: each scaled delta applied to a balance (a user's ``SpotPosition`` or a
market ``PoolBalance``) is applied in the same step to the market's ``deposit_balance`` or
``borrow_balance`` of the same type, so the market totals always equal the sum of the balances
held against it (users' positions plus the revenue pool). Rounding favours the pool, as the
program's does: a new or grown borrow rounds its scaled balance up, and so does a partial
reduction of a borrow or of any balance whose tokens leave the program (``is_leaving_drift``);
a deposit rounds down. Reducing a balance by at least its whole token amount clears it exactly
and the rest opens the opposite side.

Deviations from the program: a ``PoolBalance`` carries no balance type and is always a deposit
(flipping it fails with ``CantUpdateSpotBalanceType``, as the program's does). Markets here have
no ``paused_operations`` bit field, so interest accrual is never paused (the program skips it
under ``SpotOperation::UpdateCumulativeInterest``). The program emits a ``SpotInterestRecord``
from inside :func:`update_spot_market_cumulative_interest`; this function has no record sink and
returns the record for the calling instruction to emit (so does
:func:`update_spot_market_and_check_validity`). Reducing a balance worth less than one token
unit (dust) by any amount clears the dust before the rest opens the other side; the program
flips the dust to the other side, where the market still counts it on the first side.
"""

from __future__ import annotations

from protocol.constants import (
    FIVE_MINUTE,
    IF_FACTOR_PRECISION,
    ONE_HOUR,
    ONE_MINUTE,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_MARKET_TOKEN_TWAP_WINDOW,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import sanitize_new_price
from protocol.math.oracle import (
    DriftAction,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.spot_balance import (
    calculate_accumulated_interest,
    calculate_utilization,
    get_interest_token_amount,
    get_spot_balance,
    get_token_amount,
)
from protocol.math.stats import calculate_new_twap, calculate_weighted_average
from protocol.numeric import cast_i64, cast_u64, cast_u128, div_trunc
from protocol.records import SpotInterestRecord
from protocol.state.oracle import OraclePriceData
from protocol.state.spot_market import PoolBalance, SpotMarket
from protocol.state.state import ValidityGuardRails
from protocol.state.user import SpotPosition
from protocol.types import MarketType, SpotBalanceType

SpotBalance = SpotPosition | PoolBalance
"""What the program's ``SpotBalance`` trait covers here: a user's position or a pool balance."""


# --- the SpotBalance trait over our two balance holders -----------------------------------------


def _balance_type(spot_balance: SpotBalance) -> SpotBalanceType:
    if isinstance(spot_balance, SpotPosition):
        return spot_balance.balance_type
    return SpotBalanceType.Deposit


def _increase_balance(spot_balance: SpotBalance, delta: int) -> None:
    if isinstance(spot_balance, SpotPosition):
        # a position stores its balance in a u64, a pool balance in a u128
        spot_balance.scaled_balance = cast_u64(spot_balance.scaled_balance + cast_u64(delta))
    else:
        spot_balance.scaled_balance = cast_u128(spot_balance.scaled_balance + delta)


def _decrease_balance(spot_balance: SpotBalance, delta: int) -> None:
    if delta > spot_balance.scaled_balance:
        raise MathError(f"balance {spot_balance.scaled_balance} cannot decrease by {delta}")
    spot_balance.scaled_balance -= delta


def _update_balance_type(spot_balance: SpotBalance, balance_type: SpotBalanceType) -> None:
    if isinstance(spot_balance, SpotPosition):
        spot_balance.balance_type = balance_type
        return
    raise ProtocolError(ErrorCode.CantUpdateSpotBalanceType, "a pool balance is always a deposit")


def increase_spot_balance(
    delta: int, spot_market: SpotMarket, balance_type: SpotBalanceType
) -> None:
    if balance_type == SpotBalanceType.Deposit:
        spot_market.deposit_balance = cast_u128(spot_market.deposit_balance + delta)
    else:
        spot_market.borrow_balance = cast_u128(spot_market.borrow_balance + delta)


def decrease_spot_balance(
    delta: int, spot_market: SpotMarket, balance_type: SpotBalanceType
) -> None:
    if balance_type == SpotBalanceType.Deposit:
        if delta > spot_market.deposit_balance:
            raise MathError(f"deposit_balance {spot_market.deposit_balance} < {delta}")
        spot_market.deposit_balance -= delta
    else:
        if delta > spot_market.borrow_balance:
            raise MathError(f"borrow_balance {spot_market.borrow_balance} < {delta}")
        spot_market.borrow_balance -= delta


# --- TWAPs and interest -------------------------------------------------------------------------


def update_spot_market_twap_stats(
    spot_market: SpotMarket, oracle_price_data: OraclePriceData | None, now: int
) -> None:
    """Fold the current deposits, borrows and utilization into their 1-day TWAPs and, with an
    oracle reading, the 1-hour and 5-minute oracle TWAPs; stamp ``last_twap_ts = now``."""
    since_last = max(0, now - spot_market.last_twap_ts)
    from_start = max(1, SPOT_MARKET_TOKEN_TWAP_WINDOW - since_last)

    deposit_token_amount = get_token_amount(
        spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
    )
    borrow_token_amount = get_token_amount(
        spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow
    )

    spot_market.deposit_token_twap = cast_u64(
        calculate_weighted_average(
            cast_i64(deposit_token_amount),
            cast_i64(spot_market.deposit_token_twap),
            since_last,
            from_start,
        )
    )
    spot_market.borrow_token_twap = cast_u64(
        calculate_weighted_average(
            cast_i64(borrow_token_amount),
            cast_i64(spot_market.borrow_token_twap),
            since_last,
            from_start,
        )
    )
    utilization = calculate_utilization(deposit_token_amount, borrow_token_amount)
    spot_market.utilization_twap = cast_u64(
        calculate_weighted_average(
            cast_i64(utilization),
            cast_i64(spot_market.utilization_twap),
            since_last,
            from_start,
        )
    )

    if oracle_price_data is not None:
        hist = spot_market.historical_oracle_data
        capped_oracle_update_price = sanitize_new_price(
            oracle_price_data.price,
            hist.last_oracle_price_twap,
            spot_market.get_sanitize_clamp_denominator(),
        )
        oracle_price_twap = calculate_new_twap(
            capped_oracle_update_price,
            now,
            hist.last_oracle_price_twap,
            hist.last_oracle_price_twap_ts,
            ONE_HOUR,
        )
        oracle_price_twap_5min = calculate_new_twap(
            capped_oracle_update_price,
            now,
            hist.last_oracle_price_twap_5min,
            hist.last_oracle_price_twap_ts,
            FIVE_MINUTE,
        )
        hist.last_oracle_price = oracle_price_data.price
        hist.last_oracle_conf = oracle_price_data.confidence
        hist.last_oracle_delay = oracle_price_data.delay
        # The twap timestamp only moves when the twap does (or a minute has passed), so repeated
        # updates in one second cannot keep resetting the window.
        if oracle_price_twap != hist.last_oracle_price_twap or since_last >= ONE_MINUTE:
            hist.last_oracle_price_twap = oracle_price_twap
            hist.last_oracle_price_twap_5min = oracle_price_twap_5min
            hist.last_oracle_price_twap_ts = now

    spot_market.last_twap_ts = cast_u64(now)


def update_spot_market_cumulative_interest(
    spot_market: SpotMarket, oracle_price_data: OraclePriceData | None, now: int
) -> SpotInterestRecord | None:
    """Accrue interest up to ``now`` and refresh the TWAPs.

    The insurance fund's ``total_factor`` share of the depositors' interest is not added to the
    deposit index; its token value is credited to the revenue pool instead. Returns the
    ``SpotInterestRecord`` the program would emit when the indices moved, else ``None``.
    """
    accumulated = calculate_accumulated_interest(spot_market, now)
    deposit_interest = accumulated.deposit_interest
    borrow_interest = accumulated.borrow_interest

    record: SpotInterestRecord | None = None
    # borrow_interest is at least 1 by construction; > 1 means a real accrual happened
    if deposit_interest > 0 and borrow_interest > 1:
        deposit_interest_for_stakers = div_trunc(
            deposit_interest * spot_market.insurance_fund.total_factor, IF_FACTOR_PRECISION
        )
        deposit_interest_for_lenders = deposit_interest - deposit_interest_for_stakers
        if deposit_interest_for_lenders > 0:
            spot_market.cumulative_deposit_interest += deposit_interest_for_lenders
            spot_market.cumulative_borrow_interest += borrow_interest
            spot_market.last_interest_ts = cast_u64(now)

            token_amount = get_interest_token_amount(
                spot_market.deposit_balance, spot_market, deposit_interest_for_stakers
            )
            update_revenue_pool_balances(token_amount, SpotBalanceType.Deposit, spot_market)

            record = SpotInterestRecord(
                market_index=spot_market.market_index,
                deposit_balance=spot_market.deposit_balance,
                cumulative_deposit_interest=spot_market.cumulative_deposit_interest,
                borrow_balance=spot_market.borrow_balance,
                cumulative_borrow_interest=spot_market.cumulative_borrow_interest,
                optimal_utilization=spot_market.optimal_utilization,
                optimal_borrow_rate=spot_market.optimal_borrow_rate,
                max_borrow_rate=spot_market.max_borrow_rate,
                ts=now,
            )

    update_spot_market_twap_stats(spot_market, oracle_price_data, now)
    return record


def update_spot_market_and_check_validity(
    spot_market: SpotMarket,
    oracle_price_data: OraclePriceData,
    validity_guard_rails: ValidityGuardRails,
    now: int,
    action: DriftAction | None,
) -> SpotInterestRecord | None:
    """Accrue interest and refresh the TWAPs, then require the oracle to be valid for
    ``action`` against the refreshed 1-hour oracle TWAP (``InvalidOracle``); the quote market
    is not checked.

    As in the program, the AMM staleness overrides are 0 here, so a spot oracle is never better
    than "stale for immediate AMM fills": ``action=None`` (only ``Valid`` accepted) always fails
    for a non-quote market.
    """
    record = update_spot_market_cumulative_interest(spot_market, oracle_price_data, now)
    if spot_market.market_index == QUOTE_SPOT_MARKET_INDEX:
        return record

    risk_ema_price = spot_market.historical_oracle_data.last_oracle_price_twap
    validity = oracle_validity(
        MarketType.Spot,
        spot_market.market_index,
        risk_ema_price,
        oracle_price_data,
        validity_guard_rails,
        get_max_confidence_interval_multiplier(spot_market),
        spot_market.oracle_source,
        0,
        0,
    )
    if not is_oracle_valid_for_action(validity, action):
        raise ProtocolError(
            ErrorCode.InvalidOracle,
            f"invalid oracle ({oracle_price_data} vs ema={risk_ema_price}) for spot market "
            f"{spot_market.market_index} and action {action!r}",
        )
    return record


# --- balance updates --------------------------------------------------------------------------


def update_revenue_pool_balances(
    token_amount: int, update_direction: SpotBalanceType, spot_market: SpotMarket
) -> None:
    """Credit (Deposit) or debit (Borrow) the market's revenue pool by ``token_amount``."""
    update_spot_balances(
        token_amount, update_direction, spot_market, spot_market.revenue_pool, False
    )


def update_spot_balances(
    token_amount: int,
    update_direction: SpotBalanceType,
    spot_market: SpotMarket,
    spot_balance: SpotBalance,
    is_leaving_drift: bool,
) -> None:
    """Move ``token_amount`` (>= 0) into (Deposit) or out of (Borrow) ``spot_balance``.

    Same direction as the balance: it grows. Opposite: the balance shrinks by up to its token
    amount and any remainder opens the other side. When tokens leave the program as a borrow,
    the market must still hold at least as many deposit tokens as borrow tokens
    (``SpotMarketInsufficientDeposits``).
    """
    token_amount = cast_u128(token_amount)
    balance_type = _balance_type(spot_balance)

    if update_direction == balance_type:
        round_up = balance_type == SpotBalanceType.Borrow
        balance_delta = get_spot_balance(token_amount, spot_market, update_direction, round_up)
        _increase_balance(spot_balance, balance_delta)
        increase_spot_balance(balance_delta, spot_market, update_direction)
    else:
        current_token_amount = get_token_amount(
            spot_balance.scaled_balance, spot_market, balance_type
        )
        if current_token_amount != 0:
            if current_token_amount > token_amount:
                round_up = is_leaving_drift or balance_type == SpotBalanceType.Borrow
                balance_delta = get_spot_balance(token_amount, spot_market, balance_type, round_up)
                token_delta = token_amount
            else:
                balance_delta = spot_balance.scaled_balance
                token_delta = current_token_amount
            decrease_spot_balance(balance_delta, spot_market, balance_type)
            _decrease_balance(spot_balance, balance_delta)
            token_amount -= token_delta

        if token_amount > 0:
            dust = spot_balance.scaled_balance
            if dust != 0:
                # Deviation: a balance worth less than one token unit would otherwise flip
                # sides with it, counted by the market as a deposit and by the position as a
                # borrow. The program does that; here the dust is cleared first, so market
                # totals always equal the positions (tests: conservation properties).
                decrease_spot_balance(dust, spot_market, balance_type)
                _decrease_balance(spot_balance, dust)
            _update_balance_type(spot_balance, update_direction)
            round_up = update_direction == SpotBalanceType.Borrow
            balance_delta = get_spot_balance(token_amount, spot_market, update_direction, round_up)
            _increase_balance(spot_balance, balance_delta)
            increase_spot_balance(balance_delta, spot_market, update_direction)

    if is_leaving_drift and update_direction == SpotBalanceType.Borrow:
        deposit_token_amount = get_token_amount(
            spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
        )
        borrow_token_amount = get_token_amount(
            spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow
        )
        if deposit_token_amount < borrow_token_amount:
            raise ProtocolError(
                ErrorCode.SpotMarketInsufficientDeposits,
                f"spot market {spot_market.market_index} has deposits {deposit_token_amount} "
                f"< borrows {borrow_token_amount}",
            )


def _market_index(spot_balance: SpotBalance) -> int:
    return spot_balance.market_index


def transfer_spot_balances(
    token_amount: int,
    spot_market: SpotMarket,
    from_spot_balance: SpotBalance,
    to_spot_balance: SpotBalance,
) -> None:
    """Move signed ``token_amount`` from one balance to another inside the program (positive:
    ``from`` pays ``to``; negative: the reverse). Tokens never leave, so no deposit check."""
    if _market_index(from_spot_balance) != _market_index(to_spot_balance):
        raise ProtocolError(
            ErrorCode.UnequalMarketIndexForSpotTransfer, "transfer market indexes are not equal"
        )
    if token_amount == 0:
        return
    if (
        _balance_type(from_spot_balance) == SpotBalanceType.Deposit
        and spot_market.deposit_balance < from_spot_balance.scaled_balance
    ):
        raise ProtocolError(
            ErrorCode.InvalidSpotMarketState,
            f"spot_market.deposit_balance={spot_market.deposit_balance} lower than "
            f"individual spot balance={from_spot_balance.scaled_balance}",
        )
    amount = abs(token_amount)
    if token_amount < 0:
        from_direction, to_direction = SpotBalanceType.Deposit, SpotBalanceType.Borrow
    else:
        from_direction, to_direction = SpotBalanceType.Borrow, SpotBalanceType.Deposit
    update_spot_balances(amount, from_direction, spot_market, from_spot_balance, False)
    update_spot_balances(amount, to_direction, spot_market, to_spot_balance, False)


def transfer_revenue_pool_to_spot_balance(
    token_amount: int, spot_market: SpotMarket, to_spot_balance: SpotBalance
) -> None:
    if _market_index(to_spot_balance) != spot_market.market_index:
        raise ProtocolError(
            ErrorCode.UnequalMarketIndexForSpotTransfer, "transfer market indexes are not equal"
        )
    update_revenue_pool_balances(token_amount, SpotBalanceType.Borrow, spot_market)
    update_spot_balances(token_amount, SpotBalanceType.Deposit, spot_market, to_spot_balance, False)


def transfer_spot_balance_to_revenue_pool(
    token_amount: int, spot_market: SpotMarket, from_spot_balance: SpotBalance
) -> None:
    if _market_index(from_spot_balance) != spot_market.market_index:
        raise ProtocolError(
            ErrorCode.UnequalMarketIndexForSpotTransfer, "transfer market indexes are not equal"
        )
    update_spot_balances(
        token_amount, SpotBalanceType.Borrow, spot_market, from_spot_balance, False
    )
    update_revenue_pool_balances(token_amount, SpotBalanceType.Deposit, spot_market)
