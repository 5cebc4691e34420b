"""Spot balances, token amounts and values (the program's ``math/spot_balance.rs``).

Units: ``balance`` is SPOT_BALANCE_PRECISION (1e9) scaled by the cumulative interest index
(SPOT_CUMULATIVE_INTEREST_PRECISION, 1e10); token amounts are in the mint's decimals; values are
QUOTE_PRECISION. Rounding follows the program: a deposit's token amount truncates, a borrow's
rounds up (the protocol never under-counts what is owed).
"""

from __future__ import annotations

from protocol.errors import MathError
from protocol.numeric import div_trunc, safe_div_ceil, safe_div_floor
from protocol.state.spot_market import SpotMarket
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
