"""Order sizing, pricing and classification (the program's ``math/orders.rs``).

Units: perp base amounts BASE_PRECISION (1e9); spot base amounts the mint's units; prices
PRICE_PRECISION (1e6); quote QUOTE_PRECISION (1e6). ``step_size`` / ``tick_size`` are the
market's ``order_step_size`` / ``order_tick_size`` in those units.

Rounding: sizes are standardized *down* to a step multiple (``standardize_base_asset_amount``)
unless the ``_ceil`` variant is asked for; prices are standardized toward the passive side of
the book (a bid rounds down, an ask rounds up) so standardizing never makes an order more
aggressive. The program takes remainders with ``rem_euclid``, which for a positive step or tick
is exactly Python's ``%`` (also on negative oracle offsets); that is the only use of ``%`` here.

The AMM's quotes (``protocol.math.amm.bid_price`` / ``ask_price``) read the spreads stored on
the AMM (``long_spread``, ``short_spread``), which the spread model keeps up to date; while
those are zero the bid and the ask both equal the reserve price. ``last_ask_premium`` and
``last_bid_discount`` (``AMM`` methods in the program) are here because only order math uses
them.

``calculate_base_asset_amount_to_trade_to_price`` is the program's ``math/amm_spread.rs``
function of that name; it sits here because only order math uses it so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import PEG_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import ask_price, bid_price, reserve_price
from protocol.numeric import cast_u64, div_trunc, sqrt, unsigned_abs
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order
from protocol.types import (
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    PositionDirection,
    PostOnlyParam,
)


def _checked_rem_euclid(value: int, step: int) -> int:
    # Rust's checked_rem_euclid returns None (a MathError in the program) for a zero step.
    if step <= 0:
        raise MathError(f"step/tick size must be positive, got {step}")
    return value % step


# --- sizes ------------------------------------------------------------------------------------
def standardize_base_asset_amount_with_remainder_i128(
    base_asset_amount: int, step_size: int
) -> tuple[int, int]:
    """Split a signed amount into (a step multiple toward zero, the signed remainder)."""
    remainder = _checked_rem_euclid(unsigned_abs(base_asset_amount), step_size)
    if base_asset_amount < 0:
        remainder = -remainder
    return base_asset_amount - remainder, remainder


def standardize_base_asset_amount(base_asset_amount: int, step_size: int) -> int:
    """Round an unsigned amount down to a multiple of ``step_size``."""
    return base_asset_amount - _checked_rem_euclid(base_asset_amount, step_size)


def standardize_base_asset_amount_ceil(base_asset_amount: int, step_size: int) -> int:
    """Round an unsigned amount up to a multiple of ``step_size``."""
    remainder = _checked_rem_euclid(base_asset_amount, step_size)
    if remainder == 0:
        return base_asset_amount
    return base_asset_amount + step_size - remainder


def is_multiple_of_step_size(base_asset_amount: int, step_size: int) -> bool:
    return _checked_rem_euclid(base_asset_amount, step_size) == 0


# --- prices -----------------------------------------------------------------------------------
def standardize_price(price: int, tick_size: int, direction: PositionDirection) -> int:
    """Round a price to a tick, toward the passive side (bids down, asks up); 0 stays 0."""
    if price == 0:
        return 0
    remainder = _checked_rem_euclid(price, tick_size)
    if remainder == 0:
        return price
    if direction == PositionDirection.Long:
        return cast_u64(price - remainder)
    return cast_u64(price + tick_size - remainder)


def standardize_price_i64(price: int, tick_size: int, direction: PositionDirection) -> int:
    """``standardize_price`` for signed prices (oracle offsets): the same rounding direction."""
    if price == 0:
        return 0
    remainder = _checked_rem_euclid(price, tick_size)
    if remainder == 0:
        return price
    if direction == PositionDirection.Long:
        return price - remainder
    return price + tick_size - remainder


# --- the AMM's quotes ---------------------------------------------------------------------
def last_ask_premium(amm: AMM) -> int:
    """``AMM::last_ask_premium``: how far the AMM's ask sits above the last oracle price."""
    ask = ask_price(amm, reserve_price(amm))
    return ask - amm.historical_oracle_data.last_oracle_price


def last_bid_discount(amm: AMM) -> int:
    """``AMM::last_bid_discount``: how far the AMM's bid sits below the last oracle price."""
    bid = bid_price(amm, reserve_price(amm))
    return amm.historical_oracle_data.last_oracle_price - bid


def get_price_for_perp_order(
    price: int, direction: PositionDirection, post_only: PostOnlyParam, amm: AMM
) -> int:
    """A perp order's stored limit price: tick-standardized, and for ``Slide`` moved one tick
    behind the AMM's opposing quote if it would otherwise cross it."""
    limit_price = standardize_price(price, amm.order_tick_size, direction)
    if post_only == PostOnlyParam.Slide:
        amm_reserve_price = reserve_price(amm)
        if direction == PositionDirection.Long:
            amm_ask = ask_price(amm, amm_reserve_price)
            if limit_price >= amm_ask:
                limit_price = cast_u64(amm_ask - amm.order_tick_size)
        else:
            amm_bid = bid_price(amm, amm_reserve_price)
            if limit_price <= amm_bid:
                limit_price = amm_bid + amm.order_tick_size
    return limit_price


def calculate_base_asset_amount_to_trade_to_price(
    amm: AMM, limit_price: int, direction: PositionDirection
) -> tuple[int, PositionDirection]:
    """Base the AMM would trade to move its price to ``limit_price``, and that trade's direction.

    From the constant product: at price ``p`` the base reserve is
    ``sqrt(k * PRICE_PRECISION / p * peg / PEG_PRECISION)`` (each division truncating, as the
    program's U192 math does). Measured from the spread-adjusted reserve of ``direction`` when
    the AMM has a base spread.
    """
    if limit_price <= 0:
        raise ProtocolError(ErrorCode.InvalidOrderLimitPrice, "limit_price <= 0", field="price")
    invariant = amm.sqrt_k * amm.sqrt_k
    new_base_asset_reserve_squared = div_trunc(
        div_trunc(invariant * PRICE_PRECISION, limit_price) * amm.peg_multiplier, PEG_PRECISION
    )
    new_base_asset_reserve = sqrt(new_base_asset_reserve_squared)

    if amm.base_spread > 0:
        base_asset_reserve_before = (
            amm.ask_base_asset_reserve
            if direction == PositionDirection.Long
            else amm.bid_base_asset_reserve
        )
    else:
        base_asset_reserve_before = amm.base_asset_reserve

    u64_max = 2**64 - 1  # the program saturates an out-of-range amount to u64::MAX here
    if new_base_asset_reserve > base_asset_reserve_before:
        amount = new_base_asset_reserve - base_asset_reserve_before
        return min(amount, u64_max), PositionDirection.Short
    amount = base_asset_reserve_before - new_base_asset_reserve
    return min(amount, u64_max), PositionDirection.Long


def get_base_asset_amount_unfilled(order: Order, existing_position: int | None = None) -> int:
    """``Order::get_base_asset_amount_unfilled``.

    With ``existing_position`` a reduce-only order counts only what would reduce that position
    (0 if it would grow it or there is none).
    """
    unfilled = order.base_asset_amount - order.base_asset_amount_filled
    if unfilled < 0:
        raise MathError("order filled more than its size")
    if existing_position is None or not order.reduce_only:
        return unfilled
    if existing_position == 0:
        return 0
    if order.direction == PositionDirection.Long:
        return 0 if existing_position > 0 else min(unfilled, unsigned_abs(existing_position))
    return 0 if existing_position < 0 else min(unfilled, unsigned_abs(existing_position))


def calculate_base_asset_amount_to_fill_up_to_limit_price(
    order: Order,
    market: PerpMarket,
    limit_price: int | None,
    existing_base_asset_amount: int | None,
) -> int:
    """How much of the order the AMM could fill without its price passing ``limit_price``
    (stopping one tick short of it), standardized to the step size."""
    base_asset_amount_unfilled = get_base_asset_amount_unfilled(order, existing_base_asset_amount)
    if limit_price is not None:
        if order.direction == PositionDirection.Long:
            adjusted_limit_price = limit_price - market.amm.order_tick_size
        else:
            adjusted_limit_price = limit_price + market.amm.order_tick_size
        max_trade_base_asset_amount, max_trade_direction = (
            calculate_base_asset_amount_to_trade_to_price(
                market.amm, cast_u64(adjusted_limit_price), order.direction
            )
        )
    else:
        max_trade_base_asset_amount, max_trade_direction = (
            base_asset_amount_unfilled,
            order.direction,
        )
    if max_trade_direction != order.direction or max_trade_base_asset_amount == 0:
        return 0
    return standardize_base_asset_amount(
        min(base_asset_amount_unfilled, max_trade_base_asset_amount), market.amm.order_step_size
    )


# --- fills and positions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PositionDelta:
    """A fill's signed change to a position (``controller::position::PositionDelta``)."""

    quote_asset_amount: int  # QUOTE_PRECISION; negative when buying
    base_asset_amount: int  # BASE_PRECISION; positive when buying


def get_position_delta_for_fill(
    base_asset_amount: int, quote_asset_amount: int, direction: PositionDirection
) -> PositionDelta:
    if direction == PositionDirection.Long:
        return PositionDelta(-quote_asset_amount, base_asset_amount)
    return PositionDelta(quote_asset_amount, -base_asset_amount)


def calculate_existing_position_fields_for_order_action(
    base_asset_amount_filled: int, existing_position_params: tuple[int, int] | None
) -> tuple[int | None, int | None]:
    """For an action record: the part of the position's entry quote a fill closed, and the
    closed base if the fill flipped the position. ``existing_position_params`` is
    ``(quote_entry_amount, base_asset_amount)`` of the position the fill reduced, both unsigned.
    """
    if existing_position_params is None:
        return None, None
    quote_entry_amount, base_asset_amount = existing_position_params
    if base_asset_amount == 0:
        return None, None
    if base_asset_amount_filled > base_asset_amount:
        return quote_entry_amount, base_asset_amount
    return (
        cast_u64(div_trunc(quote_entry_amount * base_asset_amount_filled, base_asset_amount)),
        None,
    )


# --- order lifecycle predicates ---------------------------------------------------------------
def should_expire_order(order: Order, now: int) -> bool:
    """An open order with ``max_ts`` expires once ``now`` passes it; trigger orders never do."""
    if order.status != OrderStatus.Open or order.max_ts == 0 or order.must_be_triggered():
        return False
    return now > order.max_ts


def should_cancel_reduce_only_order(
    order: Order, existing_base_asset_amount: int, step_size: int
) -> bool:
    """A reduce-only order that can no longer reduce at least one step of the position."""
    return (
        order.status == OrderStatus.Open
        and order.reduce_only
        and get_base_asset_amount_unfilled(order, existing_base_asset_amount) < step_size
    )


def order_satisfies_trigger_condition(order: Order, oracle_price: int) -> bool:
    """Whether ``oracle_price`` fires an untriggered trigger order (strictly above / below)."""
    if order.trigger_condition == OrderTriggerCondition.Above:
        return oracle_price > order.trigger_price
    if order.trigger_condition == OrderTriggerCondition.Below:
        return oracle_price < order.trigger_price
    raise ProtocolError(
        ErrorCode.InvalidTriggerOrderCondition,
        f"order {order.order_id} is already triggered",
        field="trigger_condition",
    )


def is_new_order_risk_increasing(
    order: Order, position_base_asset_amount: int, position_bids: int, position_asks: int
) -> bool:
    """Whether the new order could grow the position beyond what it already has open.

    ``position_bids`` >= 0 and ``position_asks`` <= 0 are the position's open bids/asks before
    this order. A reduce-only order never increases risk.
    """
    if order.reduce_only:
        return False
    if order.direction == PositionDirection.Long:
        if position_base_asset_amount >= 0:
            return True
        return position_bids + order.base_asset_amount > abs(position_base_asset_amount)
    if position_base_asset_amount <= 0:
        return True
    return abs(position_asks - order.base_asset_amount) > position_base_asset_amount


def is_order_position_reducing(
    order_direction: PositionDirection,
    order_base_asset_amount: int,
    position_base_asset_amount: int,
) -> bool:
    """An order against the position and no larger than it."""
    if order_direction == PositionDirection.Long and position_base_asset_amount < 0:
        return order_base_asset_amount <= unsigned_abs(position_base_asset_amount)
    if order_direction == PositionDirection.Short and position_base_asset_amount > 0:
        return order_base_asset_amount <= unsigned_abs(position_base_asset_amount)
    return False


def is_jit_maker(order: Order) -> bool:
    """``Order::is_jit_maker``: post-only and immediate-or-cancel."""
    return order.post_only and order.immediate_or_cancel


def update_open_bids_and_asks(order: Order) -> bool:
    """``Order::update_open_bids_and_asks``: whether the order counts in open bids/asks.

    An untriggered trigger order does not; once triggered it does, except a reduce-only trigger
    order placed with ``NewTriggerReduceOnly`` (its size is only known at fill time).
    """
    if not order.must_be_triggered():
        return True
    return order.triggered() and not (
        order.reduce_only and bool(order.bit_flags & OrderBitFlag.NewTriggerReduceOnly)
    )


# --- encoding helpers ---------------------------------------------------------------------
def get_posted_slot_from_clock_slot(slot: int) -> int:
    """The low byte of the slot an order was posted in (``Order.posted_slot_tail``)."""
    return slot & 0xFF


def set_order_bit_flag(flags: int, value: bool, flag: OrderBitFlag) -> int:
    """Set or clear ``flag`` in a ``u8`` of order bit flags."""
    if value:
        return (flags | int(flag)) & 0xFF
    return flags & ~int(flag) & 0xFF
