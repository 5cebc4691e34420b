"""Perp position valuation and classification (the program's ``math/position.rs``, with the
``PerpPosition`` price accessors of ``state/user.rs`` as free functions taking the position).

Units: base amounts BASE_PRECISION (1e9, signed: long > 0); quote amounts QUOTE_PRECISION
(1e6, signed: what the position received, so a long's entry is negative); prices
PRICE_PRECISION (1e6). Valuations truncate toward zero as the program's integer division
does; a non-positive oracle price values base at zero.

A position's three quote amounts: ``quote_asset_amount`` is the running cash balance of the
position (fills, fees, funding, settled PnL); ``quote_entry_amount`` is what the open base cost
(fills only); ``quote_break_even_amount`` is the entry plus fees and funding paid while open.
:func:`get_position_update_type` classifies a fill's :class:`~protocol.math.orders.PositionDelta`
against the position; :func:`protocol.controller.position.update_position_and_market` applies
it.

Valuing a position by swapping it back through the AMM's curve (``calculate_base_asset_value``,
``calculate_base_asset_value_and_pnl``, ``swap_direction_to_close_position``) lives beside the
swap math in :mod:`protocol.math.amm`.
"""

from __future__ import annotations

from enum import IntEnum

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    AMM_TO_QUOTE_PRECISION_RATIO,
    BASE_PRECISION,
    MAX_PREDICTION_MARKET_PRICE,
    PRICE_PRECISION,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
)
from protocol.math.orders import PositionDelta
from protocol.numeric import cast_i64, div_trunc, sign
from protocol.state.user import PerpPosition
from protocol.types import ContractType

__all__ = [
    "PositionUpdateType",
    "calculate_base_asset_value_and_pnl_with_oracle_price",
    "calculate_base_asset_value_with_expiry_price",
    "calculate_base_asset_value_with_oracle_price",
    "calculate_perp_liability_value",
    "get_breakeven_price",
    "get_cost_basis",
    "get_entry_price",
    "get_new_position_amounts",
    "get_position_update_type",
]


def calculate_base_asset_value_with_oracle_price(base_asset_amount: int, oracle_price: int) -> int:
    """|base| * price in QUOTE_PRECISION (a non-positive price values the position at 0)."""
    if base_asset_amount == 0:
        return 0
    return div_trunc(
        abs(base_asset_amount) * max(oracle_price, 0), PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO
    )


def calculate_perp_liability_value(
    base_asset_amount: int, oracle_price: int, contract_type: ContractType
) -> int:
    """Notional the position could lose: base * price, or for a prediction market short,
    base * (max price - price)."""
    if contract_type != ContractType.Prediction:
        return calculate_base_asset_value_with_oracle_price(base_asset_amount, oracle_price)
    price = abs(oracle_price)
    if base_asset_amount < 0:
        per_base = max(MAX_PREDICTION_MARKET_PRICE - price, 0)
    else:
        per_base = price
    # PRICE_PRECISION equals QUOTE_PRECISION, so dividing by BASE_PRECISION lands in quote.
    return div_trunc(abs(base_asset_amount) * per_base, BASE_PRECISION)


def calculate_base_asset_value_and_pnl_with_oracle_price(
    market_position: PerpPosition, oracle_price: int
) -> tuple[int, int]:
    """(|base value|, base value + quote_asset_amount) in QUOTE_PRECISION; base value truncates
    toward zero."""
    if market_position.base_asset_amount == 0:
        return 0, market_position.quote_asset_amount
    base_asset_value = div_trunc(
        market_position.base_asset_amount * max(oracle_price, 0), AMM_RESERVE_PRECISION
    )
    pnl = base_asset_value + market_position.quote_asset_amount
    return abs(base_asset_value), pnl


def calculate_base_asset_value_with_expiry_price(
    market_position: PerpPosition, expiry_price: int
) -> int:
    """Signed base * expiry price (QUOTE_PRECISION), what an expired market pays the position."""
    if market_position.base_asset_amount == 0:
        return 0
    return cast_i64(
        div_trunc(
            market_position.base_asset_amount * expiry_price,
            PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
        )
    )


class PositionUpdateType(IntEnum):
    """How a fill changes a position: opens one from flat, adds to it, shrinks it, closes it
    exactly, or closes it and opens the other side (flip)."""

    Open = 0
    Increase = 1
    Reduce = 2
    Close = 3
    Flip = 4


def get_position_update_type(position: PerpPosition, delta: PositionDelta) -> PositionUpdateType:
    if position.base_asset_amount == 0:
        return PositionUpdateType.Open
    position_base = position.base_asset_amount
    delta_base = delta.base_asset_amount
    if sign(position_base) == sign(delta_base):
        return PositionUpdateType.Increase
    if abs(position_base) > abs(delta_base):
        return PositionUpdateType.Reduce
    if abs(position_base) == abs(delta_base):
        return PositionUpdateType.Close
    return PositionUpdateType.Flip


def get_new_position_amounts(position: PerpPosition, delta: PositionDelta) -> tuple[int, int]:
    """``(new_base_asset_amount, new_quote_asset_amount)``, each checked to fit an ``i64``."""
    new_quote_asset_amount = cast_i64(position.quote_asset_amount + delta.quote_asset_amount)
    new_base_asset_amount = cast_i64(position.base_asset_amount + delta.base_asset_amount)
    return new_base_asset_amount, new_quote_asset_amount


def _price_of(quote_amount: int, base_asset_amount: int) -> int:
    # -quote per base in PRICE_PRECISION: quote (1e6) * 1e6 * 1e3 / base (1e9)
    if base_asset_amount == 0:
        return 0
    return div_trunc(
        -quote_amount * PRICE_PRECISION * AMM_TO_QUOTE_PRECISION_RATIO, base_asset_amount
    )


def get_entry_price(position: PerpPosition) -> int:
    """``PerpPosition::get_entry_price``: what the open base cost per unit (PRICE_PRECISION,
    0 when flat)."""
    return _price_of(position.quote_entry_amount, position.base_asset_amount)


def get_breakeven_price(position: PerpPosition) -> int:
    """``PerpPosition::get_breakeven_price``: the price at which closing returns the position's
    fees and funding too (PRICE_PRECISION, 0 when flat)."""
    return _price_of(position.quote_break_even_amount, position.base_asset_amount)


def get_cost_basis(position: PerpPosition) -> int:
    """``PerpPosition::get_cost_basis``: the running quote balance per base (PRICE_PRECISION,
    0 when flat)."""
    return _price_of(position.quote_asset_amount, position.base_asset_amount)
