"""Spot balances, token amounts and values (the program's ``math/spot_balance.rs``).

Units: ``balance`` is SPOT_BALANCE_PRECISION (1e9) scaled by the cumulative interest index
(SPOT_CUMULATIVE_INTEREST_PRECISION, 1e10); token amounts are in the mint's decimals; values are
QUOTE_PRECISION. Rounding follows the program: a deposit's token amount truncates, a borrow's
rounds up (the protocol never under-counts what is owed).

Interest: utilization and rates are SPOT_UTILIZATION_PRECISION / SPOT_RATE_PRECISION (1e6 =
100%, rates annual). Below ``optimal_utilization`` the borrow rate rises linearly to
``optimal_borrow_rate``; above it the remaining ``max_borrow_rate - optimal_borrow_rate`` is
spread over the segments of ``INTEREST_RATE_SEGMENT_AND_WEIGHTS`` (weights in thousandths), and
the result is never below the market's ``min_borrow_rate``. Accrued borrow interest always
rounds up by one unit of the index and deposit interest truncates, so the borrow index grows at
least as fast as the deposit index and the pool can never owe depositors more than borrowers
owe it. Like the program, a market whose ``optimal_utilization`` exceeds the first segment
breakpoint (85%) cannot price utilization above optimal (:class:`MathError`).

``calculate_deposit_rate`` exists in the program only for off-chain readers (its ``drift-rs``
feature); it is kept here for keepers' reporting and is not used by any instruction.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import (
    INTEREST_RATE_SEGMENT_AND_WEIGHTS,
    ONE_YEAR,
    PERCENTAGE_PRECISION,
    SPOT_RATE_PRECISION,
    SPOT_UTILIZATION_PRECISION,
)
from protocol.errors import MathError
from protocol.numeric import cast_u128, div_trunc, safe_div_ceil, safe_div_floor
from protocol.state.oracle import OraclePriceData
from protocol.state.spot_market import SpotMarket
from protocol.state.user import SpotPosition
from protocol.types import SpotBalanceType


def _interest_precision_factor(spot_market: SpotMarket) -> int:
    if spot_market.decimals > 19:
        raise MathError(f"decimals {spot_market.decimals} > 19")
    return int(10 ** (19 - spot_market.decimals))


def get_spot_balance(
    token_amount: int,
    spot_market: SpotMarket,
    balance_type: SpotBalanceType,
    round_up: bool,
) -> int:
    """Scaled balance for ``token_amount`` at the current interest index."""
    precision_increase = _interest_precision_factor(spot_market)
    cumulative_interest = (
        spot_market.cumulative_deposit_interest
        if balance_type == SpotBalanceType.Deposit
        else spot_market.cumulative_borrow_interest
    )
    balance = div_trunc(token_amount * precision_increase, cumulative_interest)
    if round_up and balance != 0:
        balance += 1
    return balance


def get_token_amount(balance: int, spot_market: SpotMarket, balance_type: SpotBalanceType) -> int:
    """Token amount of a scaled balance; borrows round up."""
    precision_decrease = _interest_precision_factor(spot_market)
    if balance_type == SpotBalanceType.Deposit:
        return div_trunc(balance * spot_market.cumulative_deposit_interest, precision_decrease)
    return safe_div_ceil(balance * spot_market.cumulative_borrow_interest, precision_decrease)


def get_signed_token_amount(token_amount: int, balance_type: SpotBalanceType) -> int:
    """Deposits positive, borrows negative."""
    return token_amount if balance_type == SpotBalanceType.Deposit else -token_amount


def get_interest_token_amount(balance: int, spot_market: SpotMarket, interest: int) -> int:
    return div_trunc(balance * interest, _interest_precision_factor(spot_market))


def get_token_value(token_amount: int, spot_decimals: int, oracle_price: int) -> int:
    """QUOTE value of a signed token amount; a liability's value rounds away from zero."""
    if token_amount == 0:
        return 0
    precision_decrease = int(10**spot_decimals)
    token_with_oracle = token_amount * oracle_price
    if token_with_oracle < 0:
        return safe_div_floor(token_with_oracle, precision_decrease)
    return div_trunc(token_with_oracle, precision_decrease)


def get_strict_token_value(
    token_amount: int, spot_decimals: int, strict_price_min: int, strict_price_max: int
) -> int:
    """Like :func:`get_token_value` but an asset uses the lower of oracle and TWAP price, a
    liability the higher (the program's ``StrictOraclePrice``)."""
    if token_amount == 0:
        return 0
    price = strict_price_min if token_amount > 0 else strict_price_max
    return get_token_value(token_amount, spot_decimals, price)


def _sub_u(a: int, b: int) -> int:
    """Unsigned ``safe_sub``: the program's u128 subtraction fails rather than going negative."""
    if b > a:
        raise MathError(f"unsigned subtraction underflow: {a} - {b}")
    return a - b


@dataclass(frozen=True, slots=True)
class InterestAccumulated:
    """Growth of the two cumulative interest indices (SPOT_CUMULATIVE_INTEREST_PRECISION)."""

    borrow_interest: int
    deposit_interest: int


def calculate_utilization(deposit_token_amount: int, borrow_token_amount: int) -> int:
    """``borrows / deposits`` in SPOT_UTILIZATION_PRECISION; borrows with no deposits count as
    100% and an empty market as 0%. Not capped: borrows above deposits read above 100%."""
    if deposit_token_amount == 0:
        return 0 if borrow_token_amount == 0 else SPOT_UTILIZATION_PRECISION
    return div_trunc(borrow_token_amount * SPOT_UTILIZATION_PRECISION, deposit_token_amount)


def calculate_spot_market_utilization(spot_market: SpotMarket) -> int:
    deposit_token_amount = get_token_amount(
        spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
    )
    borrow_token_amount = get_token_amount(
        spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow
    )
    return calculate_utilization(deposit_token_amount, borrow_token_amount)


def calculate_accumulated_interest(spot_market: SpotMarket, now: int) -> InterestAccumulated:
    """Index growth from ``last_interest_ts`` to ``now`` (unix seconds) at the current rate.

    Nothing accrues at zero utilization or when ``now`` is not after ``last_interest_ts``.
    The rate is multiplied by the elapsed seconds before dividing by ONE_YEAR (one truncation
    per index, as the program orders it); the borrow side then adds one unit.
    """
    if now <= spot_market.last_interest_ts:
        return InterestAccumulated(borrow_interest=0, deposit_interest=0)

    utilization = calculate_spot_market_utilization(spot_market)
    if utilization == 0:
        return InterestAccumulated(borrow_interest=0, deposit_interest=0)

    borrow_rate = calculate_borrow_rate(spot_market, utilization)
    time_since_last_update = now - spot_market.last_interest_ts

    modified_borrow_rate = borrow_rate * time_since_last_update
    modified_deposit_rate = div_trunc(
        modified_borrow_rate * utilization, SPOT_UTILIZATION_PRECISION
    )

    borrow_interest = (
        div_trunc(
            div_trunc(spot_market.cumulative_borrow_interest * modified_borrow_rate, ONE_YEAR),
            SPOT_RATE_PRECISION,
        )
        + 1
    )
    deposit_interest = div_trunc(
        div_trunc(spot_market.cumulative_deposit_interest * modified_deposit_rate, ONE_YEAR),
        SPOT_RATE_PRECISION,
    )
    return InterestAccumulated(borrow_interest=borrow_interest, deposit_interest=deposit_interest)


def calculate_borrow_rate(spot_market: SpotMarket, utilization: int) -> int:
    """Annual borrow rate (SPOT_RATE_PRECISION) at ``utilization`` (SPOT_UTILIZATION_PRECISION)."""
    optimal_util = spot_market.optimal_utilization
    optimal_rate = spot_market.optimal_borrow_rate
    max_rate = spot_market.max_borrow_rate
    min_rate = spot_market.get_min_borrow_rate()
    weights_divisor = 1000

    if utilization <= optimal_util:
        slope = div_trunc(optimal_rate * SPOT_UTILIZATION_PRECISION, optimal_util)
        borrow_rate = div_trunc(utilization * slope, SPOT_UTILIZATION_PRECISION)
    else:
        total_extra_rate = _sub_u(max_rate, optimal_rate)
        borrow_rate = optimal_rate
        segment_start = optimal_util
        for segment_end, weight in INTEREST_RATE_SEGMENT_AND_WEIGHTS:
            segment_range = _sub_u(segment_end, segment_start)
            segment_rate_total = div_trunc(total_extra_rate * weight, weights_divisor)
            if utilization <= segment_end:
                partial_util = _sub_u(utilization, segment_start)
                borrow_rate += div_trunc(segment_rate_total * partial_util, segment_range)
                break
            borrow_rate += segment_rate_total
            segment_start = segment_end

    return max(borrow_rate, min_rate)


def calculate_deposit_rate(spot_market: SpotMarket, utilization: int, borrow_rate: int) -> int:
    """Annual rate depositors earn: the borrow rate times utilization, less the insurance
    fund's ``total_factor`` share (SPOT_RATE_PRECISION)."""
    lenders_share = _sub_u(PERCENTAGE_PRECISION, spot_market.insurance_fund.total_factor)
    return div_trunc(
        div_trunc(borrow_rate * lenders_share * utilization, SPOT_UTILIZATION_PRECISION),
        PERCENTAGE_PRECISION,
    )


def get_balance_value_and_token_amount(
    spot_position: SpotPosition, spot_market: SpotMarket, oracle_price_data: OraclePriceData
) -> tuple[int, int]:
    """(unsigned QUOTE value at the oracle price, token amount) of a position's balance."""
    token_amount = get_token_amount(
        spot_position.scaled_balance, spot_market, spot_position.balance_type
    )
    precision_decrease = int(10**spot_market.decimals)
    value = div_trunc(token_amount * cast_u128(oracle_price_data.price), precision_decrease)
    return value, token_amount


def get_balance_value(
    spot_position: SpotPosition, spot_market: SpotMarket, oracle_price_data: OraclePriceData
) -> int:
    value, _ = get_balance_value_and_token_amount(spot_position, spot_market, oracle_price_data)
    return value
