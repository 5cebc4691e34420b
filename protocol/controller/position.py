"""Perp position bookkeeping (the program's ``controller/position.rs``).

Units: base BASE_PRECISION (1e9, signed: long > 0); quote QUOTE_PRECISION (1e6, signed: what
the position received); funding rates FUNDING_RATE_PRECISION. Every function mutates the
position and market it is handed; instructions hand in the copy-on-write clones of
:class:`~protocol.accounts.Accounts`, so an error part-way leaves committed state untouched.

:func:`update_position_and_market` applies one fill (a :class:`PositionDelta`) to a position
and to the market's open-interest totals, and returns the PnL the fill realized:

* Open / Increase: the fill's quote is added to the entry and break-even amounts; no PnL.
* Reduce / Close: entry and break-even shrink by the reduced fraction of the base (the removed
  share truncates toward zero, as the program's ``i128`` division does); the PnL is the fill's
  quote minus the removed entry.
* Flip: the old position closes in full and the remainder opens at the fill's price: the new
  entry (and break-even) is the fill's quote less the share that closed the old base (that
  share truncated); the PnL is the old entry plus the closing share.

The market keeps, per side, the users' base (``base_asset_amount_long`` >= 0,
``base_asset_amount_short`` <= 0), entry and break-even totals, the sum of all users' quote
(``amm.quote_asset_amount``), how many users hold any position (``number_of_users``) and how
many hold base (``number_of_users_with_base``). Invariants kept for every sequence of calls:
each side's totals equal the sums over the positions on that side, and a fill applied to two
users with opposite deltas leaves ``base_asset_amount_long + base_asset_amount_short`` and
``amm.quote_asset_amount`` unchanged. ``base_asset_amount_with_amm`` (the users' net position
against the AMM) is not touched by it: only a fill the AMM takes the other side of changes it,
in :func:`update_position_with_base_asset_amount` (swap through the curve, apply the delta,
move the AMM's net position, re-derive the spread reserves).

A position must have settled its funding before it changes (``last_cumulative_funding_rate``
equal to its side's cumulative rate, else ``InvalidPositionLastFundingRate``); a position that
opens, grows or flips takes its new side's current rate, and one that closes resets it to 0.

Deviations from the program, and why:

* positions are entries of ``User.perp_positions`` (no fixed array), so the program's
  ``position_index`` arguments (``user, position_index`` in
  ``update_position_with_base_asset_amount``) are the
  :class:`~protocol.state.user.PerpPosition` itself, and ``add_new_position`` /
  ``get_position_index`` are ``User.force_get_perp_position_mut`` / ``User.get_perp_position``.
* :class:`PositionDelta` (``controller::position::PositionDelta`` in the program) is defined in
  :mod:`protocol.math.orders`, which builds it (``get_position_delta_for_fill``) and which this
  module imports, so it cannot import back from here; it is re-exported from this module.
* the program validates a position's funding rate and step size after it has already updated
  the market's totals; a failure discards the whole transaction either way, so the checks run
  first here and a rejected update leaves the position and market as they were.
"""

from __future__ import annotations

from protocol.constants import MAX_BASE_ASSET_AMOUNT_WITH_AMM, PERP_DECIMALS
from protocol.controller.amm import swap_base_asset, update_spread_reserves
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.orders import (
    PositionDelta,
    calculate_quote_asset_amount_for_maker_order,
    get_position_delta_for_fill,
    is_multiple_of_step_size,
)
from protocol.math.position import (
    PositionUpdateType,
    get_new_position_amounts,
    get_position_update_type,
)
from protocol.numeric import cast_i64, div_trunc
from protocol.state.perp_market import PerpMarket
from protocol.state.user import PerpPosition, User
from protocol.types import PositionDirection, SwapDirection

__all__ = [
    "PositionDelta",
    "decrease_open_bids_and_asks",
    "increase_open_bids_and_asks",
    "update_position_and_market",
    "update_position_settled_pnl",
    "update_position_with_base_asset_amount",
    "update_quote_asset_amount",
    "update_quote_asset_and_break_even_amount",
    "update_quote_break_even_amount",
    "update_settled_pnl",
    "update_user_settled_pnl",
]


def _validate_last_funding_rate(position: PerpPosition, market: PerpMarket) -> None:
    amm = market.amm
    if position.base_asset_amount > 0:
        expected = amm.cumulative_funding_rate_long
    elif position.base_asset_amount < 0:
        expected = amm.cumulative_funding_rate_short
    else:
        return
    if position.last_cumulative_funding_rate != expected:
        raise ProtocolError(
            ErrorCode.InvalidPositionLastFundingRate,
            f"market {market.market_index}: position.last_cumulative_funding_rate "
            f"{position.last_cumulative_funding_rate} != amm cumulative rate {expected}",
        )


def update_position_and_market(
    position: PerpPosition, market: PerpMarket, delta: PositionDelta
) -> int:
    """Apply ``delta`` to ``position`` and ``market``; the PnL it realized (QUOTE_PRECISION).

    A delta without base only moves quote (:func:`update_quote_asset_amount`) and is all PnL.
    """
    if delta.base_asset_amount == 0:
        update_quote_asset_amount(position, market, delta.quote_asset_amount)
        return delta.quote_asset_amount

    update_type = get_position_update_type(position, delta)
    new_base_asset_amount, new_quote_asset_amount = get_new_position_amounts(position, delta)

    _validate_last_funding_rate(position, market)
    # the program checks the position as it was before this delta
    if not is_multiple_of_step_size(abs(position.base_asset_amount), market.amm.order_step_size):
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionDetected,
            f"market {market.market_index}: position base {position.base_asset_amount} is not "
            f"a multiple of the step size {market.amm.order_step_size}",
        )

    if update_type in (PositionUpdateType.Open, PositionUpdateType.Increase):
        new_quote_entry_amount = cast_i64(position.quote_entry_amount + delta.quote_asset_amount)
        new_quote_break_even_amount = cast_i64(
            position.quote_break_even_amount + delta.quote_asset_amount
        )
        pnl = 0
    elif update_type in (PositionUpdateType.Reduce, PositionUpdateType.Close):
        current_base = abs(position.base_asset_amount)
        delta_base = abs(delta.base_asset_amount)
        new_quote_entry_amount = cast_i64(
            position.quote_entry_amount
            - cast_i64(div_trunc(position.quote_entry_amount * delta_base, current_base))
        )
        new_quote_break_even_amount = cast_i64(
            position.quote_break_even_amount
            - cast_i64(div_trunc(position.quote_break_even_amount * delta_base, current_base))
        )
        pnl = cast_i64(
            position.quote_entry_amount - new_quote_entry_amount + delta.quote_asset_amount
        )
    else:  # Flip
        current_base = abs(position.base_asset_amount)
        delta_base = abs(delta.base_asset_amount)
        closing_quote = cast_i64(div_trunc(delta.quote_asset_amount * current_base, delta_base))
        new_quote_break_even_amount = cast_i64(delta.quote_asset_amount - closing_quote)
        new_quote_entry_amount = new_quote_break_even_amount
        pnl = cast_i64(
            position.quote_entry_amount + delta.quote_asset_amount - new_quote_break_even_amount
        )

    # how many users hold a position, and how many hold base
    if update_type is PositionUpdateType.Open:
        if position.quote_asset_amount == 0 and position.base_asset_amount == 0:
            market.number_of_users += 1
        market.number_of_users_with_base += 1
    elif update_type is PositionUpdateType.Close:
        if new_base_asset_amount == 0 and new_quote_asset_amount == 0:
            market.number_of_users = max(market.number_of_users - 1, 0)
        market.number_of_users_with_base = max(market.number_of_users_with_base - 1, 0)

    amm = market.amm
    amm.quote_asset_amount += delta.quote_asset_amount

    if update_type in (PositionUpdateType.Open, PositionUpdateType.Increase):
        if new_base_asset_amount > 0:
            amm.base_asset_amount_long += delta.base_asset_amount
            amm.quote_entry_amount_long += delta.quote_asset_amount
            amm.quote_break_even_amount_long += delta.quote_asset_amount
        else:
            amm.base_asset_amount_short += delta.base_asset_amount
            amm.quote_entry_amount_short += delta.quote_asset_amount
            amm.quote_break_even_amount_short += delta.quote_asset_amount
    elif update_type in (PositionUpdateType.Reduce, PositionUpdateType.Close):
        removed_entry = position.quote_entry_amount - new_quote_entry_amount
        removed_break_even = position.quote_break_even_amount - new_quote_break_even_amount
        if position.base_asset_amount > 0:
            amm.base_asset_amount_long += delta.base_asset_amount
            amm.quote_entry_amount_long -= removed_entry
            amm.quote_break_even_amount_long -= removed_break_even
        else:
            amm.base_asset_amount_short += delta.base_asset_amount
            amm.quote_entry_amount_short -= removed_entry
            amm.quote_break_even_amount_short -= removed_break_even
    elif new_base_asset_amount > 0:  # Flip from short to long
        amm.base_asset_amount_short -= position.base_asset_amount
        amm.base_asset_amount_long += new_base_asset_amount
        amm.quote_entry_amount_short -= position.quote_entry_amount
        amm.quote_entry_amount_long += new_quote_entry_amount
        amm.quote_break_even_amount_short -= position.quote_break_even_amount
        amm.quote_break_even_amount_long += new_quote_break_even_amount
    else:  # Flip from long to short
        amm.base_asset_amount_long -= position.base_asset_amount
        amm.base_asset_amount_short += new_base_asset_amount
        amm.quote_entry_amount_long -= position.quote_entry_amount
        amm.quote_entry_amount_short += new_quote_entry_amount
        amm.quote_break_even_amount_long -= position.quote_break_even_amount
        amm.quote_break_even_amount_short += new_quote_break_even_amount

    if update_type is PositionUpdateType.Close:
        position.last_cumulative_funding_rate = 0
    elif update_type is not PositionUpdateType.Reduce:
        position.last_cumulative_funding_rate = cast_i64(
            amm.cumulative_funding_rate_long
            if new_base_asset_amount > 0
            else amm.cumulative_funding_rate_short
        )

    position.base_asset_amount = new_base_asset_amount
    position.quote_asset_amount = new_quote_asset_amount
    position.quote_entry_amount = new_quote_entry_amount
    position.quote_break_even_amount = new_quote_break_even_amount
    return pnl


def update_position_with_base_asset_amount(
    base_asset_amount: int,
    direction: PositionDirection,
    market: PerpMarket,
    position: PerpPosition,
    fill_price: int | None,
) -> tuple[int, int, int]:
    """Fill ``base_asset_amount`` of ``position`` against the AMM; ``(quote_asset_amount,
    quote_asset_amount_surplus, pnl)``.

    The base swaps through the curve (a long removes base, a short adds it). With a
    ``fill_price`` (a limit order the AMM fills at the order's price) the user trades at that
    price and the AMM keeps the difference from the swap as surplus; without, the user pays the
    swap's quote and the surplus is the swap's spread. The AMM's net position moves with the
    user's (``InvalidAmmDetected`` past MAX_BASE_ASSET_AMOUNT_WITH_AMM) and its spread reserves
    are re-derived from the new curve.
    """
    swap_direction = (
        SwapDirection.Remove if direction == PositionDirection.Long else SwapDirection.Add
    )
    quote_asset_swapped, quote_asset_amount_surplus = swap_base_asset(
        market, base_asset_amount, swap_direction
    )
    if fill_price is not None:
        quote_asset_amount, quote_asset_amount_surplus = _calculate_quote_asset_amount_surplus(
            direction, quote_asset_swapped, base_asset_amount, fill_price
        )
    else:
        quote_asset_amount = quote_asset_swapped

    position_delta = get_position_delta_for_fill(base_asset_amount, quote_asset_amount, direction)
    pnl = update_position_and_market(position, market, position_delta)

    market.amm.base_asset_amount_with_amm += position_delta.base_asset_amount
    if abs(market.amm.base_asset_amount_with_amm) > MAX_BASE_ASSET_AMOUNT_WITH_AMM:
        raise ProtocolError(
            ErrorCode.InvalidAmmDetected,
            f"market {market.market_index}: base_asset_amount_with_amm="
            f"{market.amm.base_asset_amount_with_amm} exceeds MAX_BASE_ASSET_AMOUNT_WITH_AMM",
        )
    update_spread_reserves(market)
    return quote_asset_amount, quote_asset_amount_surplus, pnl


def _calculate_quote_asset_amount_surplus(
    position_direction: PositionDirection,
    quote_asset_swapped: int,
    base_asset_amount: int,
    fill_price: int,
) -> tuple[int, int]:
    """``(quote_asset_amount at fill_price, surplus the AMM keeps over the swap)``."""
    quote_asset_amount = calculate_quote_asset_amount_for_maker_order(
        base_asset_amount, fill_price, PERP_DECIMALS, position_direction
    )
    if position_direction == PositionDirection.Long:
        surplus = cast_i64(quote_asset_amount - quote_asset_swapped)
    else:
        surplus = cast_i64(quote_asset_swapped - quote_asset_amount)
    return quote_asset_amount, surplus


def update_quote_asset_and_break_even_amount(
    position: PerpPosition, market: PerpMarket, delta: int
) -> None:
    """Credit ``delta`` (fees, funding) to the position's quote and, while it holds base, to
    its break-even amount, with the market's matching totals."""
    update_quote_asset_amount(position, market, delta)
    update_quote_break_even_amount(position, market, delta)


def update_quote_asset_amount(position: PerpPosition, market: PerpMarket, delta: int) -> None:
    """Add ``delta`` to the position's and the market's quote; a position that becomes (or
    stops being) entirely empty leaves (or joins) ``number_of_users``."""
    if delta == 0:
        return
    if position.quote_asset_amount == 0 and position.base_asset_amount == 0:
        market.number_of_users += 1
    position.quote_asset_amount = cast_i64(position.quote_asset_amount + delta)
    market.amm.quote_asset_amount += delta
    if position.quote_asset_amount == 0 and position.base_asset_amount == 0:
        market.number_of_users = max(market.number_of_users - 1, 0)


def update_quote_break_even_amount(position: PerpPosition, market: PerpMarket, delta: int) -> None:
    """Add ``delta`` to the break-even amount of a position with base and to its side's total;
    a flat position has no break-even to move."""
    if delta == 0 or position.base_asset_amount == 0:
        return
    position.quote_break_even_amount = cast_i64(position.quote_break_even_amount + delta)
    if position.get_direction() is PositionDirection.Long:
        market.amm.quote_break_even_amount_long += delta
    else:
        market.amm.quote_break_even_amount_short += delta


def update_settled_pnl(user: User, position: PerpPosition, delta: int) -> None:
    """Record ``delta`` of settled PnL on the user and on its position."""
    update_user_settled_pnl(user, delta)
    update_position_settled_pnl(position, delta)


def update_position_settled_pnl(position: PerpPosition, delta: int) -> None:
    position.settled_pnl = cast_i64(position.settled_pnl + delta)


def update_user_settled_pnl(user: User, delta: int) -> None:
    user.settled_perp_pnl = cast_i64(user.settled_perp_pnl + delta)


def increase_open_bids_and_asks(
    position: PerpPosition,
    direction: PositionDirection,
    base_asset_amount_unfilled: int,
    update: bool = True,
) -> None:
    """Count an order's unfilled base in the position's open bids (>= 0) or asks (<= 0);
    ``update=False`` (an order that does not count, e.g. an untriggered trigger) does nothing."""
    if not update:
        return
    if direction == PositionDirection.Long:
        position.open_bids = cast_i64(position.open_bids + base_asset_amount_unfilled)
    else:
        position.open_asks = cast_i64(position.open_asks - base_asset_amount_unfilled)


def decrease_open_bids_and_asks(
    position: PerpPosition,
    direction: PositionDirection,
    base_asset_amount_unfilled: int,
    update: bool = True,
) -> None:
    """Undo :func:`increase_open_bids_and_asks`, clamped at zero like the program so a stale
    amount never flips the sign."""
    if not update:
        return
    if direction == PositionDirection.Long:
        position.open_bids = max(position.open_bids - base_asset_amount_unfilled, 0)
    else:
        position.open_asks = min(position.open_asks + base_asset_amount_unfilled, 0)
