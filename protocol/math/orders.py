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

Fill math (the section at the end): a fill's average price truncates
(``calculate_fill_price``); a fill may not be worse than the order's limit, a taker being given
one quote unit of slack for rounding (``validate_fill_price``, ``InvalidOrderFillPrice``); the
AMM's share of a fill is what its curve can give up to the limit (a post-only order's limit
moved inside by its rebate) and its available liquidity; fills must stay within the market's
price bands around the oracle and its 5-minute TWAP (``PriceBandsBreached``); a spot order is
bounded by what it can spend or sell (``get_max_fill_amounts``). ``select_margin_type_for_perp_
maker`` chooses the maker's margin check after a fill. The program's order-index arguments are
the :class:`~protocol.state.user.Order` itself here.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import (
    FEE_ADJUSTMENT_MAX,
    MARGIN_PRECISION,
    MAX_PREDICTION_MARKET_PRICE,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    ask_price,
    bid_price,
    calculate_amm_available_liquidity,
    reserve_price,
)
from protocol.math.spot_balance import get_signed_token_amount, get_token_amount
from protocol.math.spot_withdraw import get_max_withdraw_for_market_with_token_amount
from protocol.numeric import (
    U64_MAX,
    cast_u64,
    div_trunc,
    safe_div_ceil,
    sign,
    sqrt,
    unsigned_abs,
)
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.state import FeeTier
from protocol.state.user import Order, User
from protocol.types import (
    MarginRequirementType,
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


# =============================================================================================
# Fill math: prices and sizes of a fill, and the bands a fill must stay inside
# (``math/orders.rs``: the functions the fill path uses)
# =============================================================================================
def calculate_quote_asset_amount_for_maker_order(
    base_asset_amount: int,
    fill_price: int,
    base_decimals: int,
    position_direction: PositionDirection,
) -> int:
    """Quote of ``base_asset_amount`` at ``fill_price`` for the maker's side: a buyer pays the
    truncated notional, a seller receives the ceiled one (the rounding favours the maker)."""
    precision_decrease = 10**base_decimals
    notional = fill_price * base_asset_amount
    if position_direction == PositionDirection.Long:
        return cast_u64(div_trunc(notional, precision_decrease))
    return cast_u64(safe_div_ceil(notional, precision_decrease))


def calculate_limit_price_with_buffer(
    order: Order, limit_price: int | None, fee_tier: FeeTier, fee_adjustment: int
) -> int | None:
    """A post-only order filled by the AMM must still earn its rebate: its limit is moved
    inside by the rebate (scaled by ``fee_adjustment`` percent). A taker's limit is kept."""
    if not order.post_only:
        return limit_price
    if limit_price is None:
        return None
    buffer = div_trunc(
        limit_price * fee_tier.maker_rebate_numerator, fee_tier.maker_rebate_denominator
    )
    if fee_adjustment < 0:
        buffer = max(buffer - div_trunc(buffer * -fee_adjustment, FEE_ADJUSTMENT_MAX), 0)
    elif fee_adjustment > 0:
        buffer = min(buffer + div_trunc(buffer * fee_adjustment, FEE_ADJUSTMENT_MAX), U64_MAX)
    if order.direction == PositionDirection.Long:
        if buffer > limit_price:
            raise MathError(f"limit price {limit_price} below its rebate buffer {buffer}")
        return limit_price - buffer
    return cast_u64(limit_price + buffer)


def calculate_base_asset_amount_for_amm_to_fulfill(
    order: Order,
    market: PerpMarket,
    limit_price: int | None,
    override_fill_price: int | None,
    existing_base_asset_amount: int,
    fee_tier: FeeTier,
) -> tuple[int, int | None]:
    """``(base the AMM fills, the limit price it fills up to)``.

    ``override_fill_price`` (a maker's price the AMM must not go past, or better than) replaces
    the order's limit; it may not be worse than that limit (``InvalidAmmLimitPriceOverride``).
    An untriggered trigger order gets nothing. The size is what the curve can fill up to the
    (rebate-buffered) limit, capped by the AMM's available liquidity.
    """
    if override_fill_price is not None:
        if limit_price is not None and not (
            (limit_price >= override_fill_price and order.direction == PositionDirection.Long)
            or (limit_price <= override_fill_price and order.direction == PositionDirection.Short)
        ):
            raise ProtocolError(
                ErrorCode.InvalidAmmLimitPriceOverride,
                f"override_limit_price={override_fill_price} not better than "
                f"order_limit_price={limit_price}",
            )
        limit_price = override_fill_price

    if order.must_be_triggered() and not order.triggered():
        return 0, limit_price

    limit_price_with_buffer = calculate_limit_price_with_buffer(
        order, limit_price, fee_tier, market.fee_adjustment
    )
    base_asset_amount = calculate_base_asset_amount_to_fill_up_to_limit_price(
        order, market, limit_price_with_buffer, existing_base_asset_amount
    )
    max_base_asset_amount = calculate_amm_available_liquidity(market.amm, order.direction)
    return min(base_asset_amount, max_base_asset_amount), limit_price


def get_standardized_base_asset_amount_unfilled(
    order: Order, existing_position: int | None, step_size: int
) -> int:
    """``Order::get_standardized_base_asset_amount_unfilled``: the unfilled size (reduce-only
    orders trimmed to the position) rounded down to a step."""
    return standardize_base_asset_amount(
        get_base_asset_amount_unfilled(order, existing_position), step_size
    )


def calculate_fill_price(
    quote_asset_amount: int, base_asset_amount: int, base_precision: int
) -> int:
    """Average price of a fill (PRICE_PRECISION), truncated."""
    if base_asset_amount == 0:
        raise MathError("fill price of a fill with no base")
    return cast_u64(div_trunc(quote_asset_amount * base_precision, base_asset_amount))


def validate_fill_price(
    quote_asset_amount: int,
    base_asset_amount: int,
    base_precision: int,
    order_direction: PositionDirection,
    order_limit_price: int,
    is_taker: bool,
) -> None:
    """A fill must not be worse than the order's limit (``InvalidOrderFillPrice``). A taker is
    given one quote unit of slack in its favour for the rounding of the quote."""
    if is_taker:
        if order_direction == PositionDirection.Long:
            rounded_quote_asset_amount = max(quote_asset_amount - 1, 0)
        else:
            rounded_quote_asset_amount = min(quote_asset_amount + 1, U64_MAX)
    else:
        rounded_quote_asset_amount = quote_asset_amount
    fill_price = calculate_fill_price(rounded_quote_asset_amount, base_asset_amount, base_precision)
    if order_direction == PositionDirection.Long and fill_price > order_limit_price:
        raise ProtocolError(
            ErrorCode.InvalidOrderFillPrice,
            f"long fill price {fill_price} ({quote_asset_amount}/{base_asset_amount}) > limit "
            f"price {order_limit_price} (taker={is_taker})",
        )
    if order_direction == PositionDirection.Short and fill_price < order_limit_price:
        raise ProtocolError(
            ErrorCode.InvalidOrderFillPrice,
            f"short fill price {fill_price} ({quote_asset_amount}/{base_asset_amount}) < limit "
            f"price {order_limit_price} (taker={is_taker})",
        )


def get_max_fill_amounts(
    user: User,
    order: Order,
    base_market: SpotMarket,
    quote_market: SpotMarket,
    is_leaving_drift: bool,
) -> tuple[int | None, int | None]:
    """``(max base, max quote)`` a spot order may trade: a buy is bounded by the quote it can
    spend (``(None, max_quote)``), a sell by the base it can sell (``(max_base, None)``,
    step-rounded), each being the position plus what the market could lend.

    The program's ``user_order_index`` argument is the order itself here.
    """
    if order.direction == PositionDirection.Long:
        max_quote = cast_u64(_get_max_fill_amounts_for_market(user, quote_market, is_leaving_drift))
        return None, max_quote
    max_base = standardize_base_asset_amount(
        cast_u64(_get_max_fill_amounts_for_market(user, base_market, is_leaving_drift)),
        base_market.order_step_size,
    )
    return max_base, None


def _get_max_fill_amounts_for_market(user: User, market: SpotMarket, is_leaving_drift: bool) -> int:
    position = user.get_spot_position(market.market_index)
    token_amount = (
        0
        if position is None
        else get_signed_token_amount(
            get_token_amount(position.scaled_balance, market, position.balance_type),
            position.balance_type,
        )
    )
    return get_max_withdraw_for_market_with_token_amount(market, token_amount, is_leaving_drift)


def limit_price_breaches_maker_oracle_price_bands(
    order_limit_price: int,
    order_direction: PositionDirection,
    oracle_price: int,
    margin_ratio_initial: int,
) -> bool:
    """A maker bid at least ``margin_ratio_initial`` above the oracle (an ask as far below it)
    would open a position underwater by its whole initial margin: such an order is cancelled
    rather than filled."""
    oracle_price = unsigned_abs(oracle_price)
    if order_direction == PositionDirection.Long:
        if order_limit_price <= oracle_price:
            return False
        percent_diff = div_trunc(
            (order_limit_price - oracle_price) * MARGIN_PRECISION, oracle_price
        )
    else:
        if order_limit_price >= oracle_price:
            return False
        percent_diff = div_trunc(
            (oracle_price - order_limit_price) * MARGIN_PRECISION, oracle_price
        )
    return percent_diff >= margin_ratio_initial


def validate_fill_price_within_price_bands(
    fill_price: int,
    oracle_price: int,
    oracle_twap_5min: int,
    margin_ratio_initial: int,
    oracle_twap_5min_percent_divergence: int,
    is_prediction_market: bool,
    direction: PositionDirection | None = None,
) -> None:
    """A fill must be within ``margin_ratio_initial`` (MARGIN_PRECISION) of the oracle and
    within ``oracle_twap_5min_percent_divergence`` (PERCENTAGE_PRECISION) of the 5-minute
    oracle TWAP (``PriceBandsBreached``). With a ``direction``, a buy below both (a sell above
    both) is always allowed. A prediction market only caps the price at 1."""
    if is_prediction_market:
        if fill_price > MAX_PREDICTION_MARKET_PRICE:
            raise ProtocolError(
                ErrorCode.PriceBandsBreached,
                f"fill price {fill_price} above the prediction market cap",
            )
        return
    if direction is not None:
        if direction == PositionDirection.Long:
            if fill_price < oracle_price and fill_price < oracle_twap_5min:
                return
        elif fill_price > oracle_price and fill_price > oracle_twap_5min:
            return
    if oracle_price == 0 or oracle_twap_5min == 0:
        raise MathError("price band check against a zero oracle price or twap")
    percent_diff = unsigned_abs(
        div_trunc((fill_price - oracle_price) * MARGIN_PRECISION, oracle_price)
    )
    percent_diff_twap = unsigned_abs(
        div_trunc((fill_price - oracle_twap_5min) * PERCENTAGE_PRECISION, oracle_twap_5min)
    )
    if percent_diff >= margin_ratio_initial:
        raise ProtocolError(
            ErrorCode.PriceBandsBreached,
            f"fill price {fill_price} is {percent_diff}/{MARGIN_PRECISION} from the oracle "
            f"{oracle_price} (max {margin_ratio_initial})",
        )
    if percent_diff_twap >= oracle_twap_5min_percent_divergence:
        raise ProtocolError(
            ErrorCode.PriceBandsBreached,
            f"fill price {fill_price} is {percent_diff_twap}/{PERCENTAGE_PRECISION} from the "
            f"5-minute oracle twap {oracle_twap_5min} (max {oracle_twap_5min_percent_divergence})",
        )


def is_oracle_too_divergent_with_twap_5min(
    oracle_price: int, oracle_twap_5min: int, max_divergence: int
) -> bool:
    """Whether the oracle is ``max_divergence`` (PERCENTAGE_PRECISION) or more away from its
    5-minute TWAP."""
    if oracle_twap_5min == 0:
        raise MathError("oracle twap 5min is 0")
    percent_diff = div_trunc(
        abs(oracle_price - oracle_twap_5min) * PERCENTAGE_PRECISION, abs(oracle_twap_5min)
    )
    return percent_diff >= max_divergence


def select_margin_type_for_perp_maker(
    maker: User, base_asset_amount_filled: int, market_index: int
) -> tuple[MarginRequirementType, bool]:
    """``(requirement, risk increasing)`` for a maker after filling ``base_asset_amount_filled``
    (signed: the maker's base change): Maintenance if the fill closed or shrank its position,
    else the Fill requirement."""
    position = maker.get_perp_position(market_index)
    position_after_fill = 0 if position is None else position.base_asset_amount
    position_before = position_after_fill - base_asset_amount_filled
    if position_after_fill == 0:
        return MarginRequirementType.Maintenance, False
    if sign(position_after_fill) == sign(position_before) and abs(position_after_fill) < abs(
        position_before
    ):
        return MarginRequirementType.Maintenance, False
    return MarginRequirementType.Fill, True
