"""Checks a new order must pass before it rests on a user account (``validation/order.rs``).

Each check raises :class:`~protocol.errors.ProtocolError` with the program's ``ErrorCode`` and
``field`` set to the :class:`~protocol.state.order_params.OrderParams` field at fault, so a
caller can report exactly what to change without parsing a message. The checks run in the
program's order, so when several fields are wrong the same one is reported first.

Units: perp sizes BASE_PRECISION with the AMM's ``order_step_size`` / ``min_order_size``;
spot sizes the mint's units with the spot market's; prices PRICE_PRECISION (auction prices of
oracle-offset auctions are signed offsets).

A post-only perp limit order is checked against the AMM: it fails
(``PlacePostOnlyLimitFailure``) if the AMM could fill any of it at its limit price now, unless
the oracle is already through the limit (then it would not take from the AMM at fill time
either). The program skips that check while AMM fills are paused (its ``AmmFill`` paused
operation); this model has no paused-operations bitmask and uses ``MarketStatus.AmmPaused``.
"""

from __future__ import annotations

from protocol.constants import MAX_PREDICTION_MARKET_PRICE
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.auction import force_get_limit_price
from protocol.math.orders import (
    calculate_base_asset_amount_to_fill_up_to_limit_price,
    is_jit_maker,
    is_multiple_of_step_size,
)
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import PerpMarket
from protocol.state.user import Order
from protocol.types import (
    ContractType,
    MarketStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)


def _reject(code: ErrorCode, field: str, detail: str) -> ProtocolError:
    return ProtocolError(code, detail, field=field)


def validate_order(
    order: Order, market: PerpMarket, valid_oracle_price: int | None, slot: int
) -> None:
    """Validate a new perp order against its market (``validation::order::validate_order``)."""
    step_size = market.amm.order_step_size
    min_order_size = market.amm.min_order_size
    if order.order_type == OrderType.Market:
        validate_market_order(order, step_size, min_order_size)
    elif order.order_type == OrderType.Limit:
        validate_limit_order(order, market, valid_oracle_price, slot)
    elif order.order_type == OrderType.TriggerMarket:
        validate_trigger_market_order(order, step_size, min_order_size)
    elif order.order_type == OrderType.TriggerLimit:
        validate_trigger_limit_order(order, step_size, min_order_size)
    else:
        validate_oracle_order(order, step_size, min_order_size)

    if market.contract_type == ContractType.Prediction:
        _validate_prediction_market_order(order)


def _validate_prediction_market_order(order: Order) -> None:
    """Prices and offsets of a prediction market stay within its $0..$1 range."""
    code = ErrorCode.InvalidPredictionMarketOrder
    if order.price > MAX_PREDICTION_MARKET_PRICE:
        raise _reject(code, "price", "prediction market price must be <= 1")
    if abs(order.auction_start_price) > MAX_PREDICTION_MARKET_PRICE:
        raise _reject(code, "auction_start_price", "prediction market auction start abs > 1")
    if abs(order.auction_end_price) > MAX_PREDICTION_MARKET_PRICE:
        raise _reject(code, "auction_end_price", "prediction market auction end abs > 1")
    if abs(order.oracle_price_offset) > MAX_PREDICTION_MARKET_PRICE:
        raise _reject(code, "oracle_price_offset", "prediction market oracle offset abs > 1")


def validate_market_order(order: Order, step_size: int, min_order_size: int) -> None:
    validate_base_asset_amount(order, step_size, min_order_size, order.reduce_only)
    if not (order.auction_start_price > 0 and order.auction_end_price > 0):
        raise _reject(
            ErrorCode.InvalidOrderAuction,
            "auction_start_price",
            "market order auction start and end price must be greater than 0",
        )
    validate_auction_params(order)
    if order.trigger_price > 0:
        raise _reject(
            ErrorCode.InvalidOrderTrigger, "trigger_price", "market order has a trigger price"
        )
    if order.post_only:
        raise _reject(
            ErrorCode.InvalidOrderPostOnly, "post_only", "market order can not be post only"
        )
    if order.has_oracle_price_offset():
        raise _reject(
            ErrorCode.InvalidOrderOracleOffset,
            "oracle_price_offset",
            "market order can not have an oracle offset",
        )
    if order.immediate_or_cancel:
        raise _reject(
            ErrorCode.InvalidOrderIOC,
            "immediate_or_cancel",
            "market order can not be immediate or cancel",
        )


def validate_oracle_order(order: Order, step_size: int, min_order_size: int) -> None:
    validate_base_asset_amount(order, step_size, min_order_size, order.reduce_only)
    validate_oracle_auction_params(order)
    if order.trigger_price > 0:
        raise _reject(
            ErrorCode.InvalidOrderTrigger, "trigger_price", "oracle order has a trigger price"
        )
    if order.post_only:
        raise _reject(
            ErrorCode.InvalidOrderPostOnly, "post_only", "oracle order can not be post only"
        )
    if order.price > 0:
        raise _reject(
            ErrorCode.InvalidOrderLimitPrice, "price", "oracle order can not have a price"
        )
    if order.immediate_or_cancel:
        raise _reject(
            ErrorCode.InvalidOrderIOC,
            "immediate_or_cancel",
            "oracle order can not be immediate or cancel",
        )


def validate_limit_order(
    order: Order, market: PerpMarket, valid_oracle_price: int | None, slot: int
) -> None:
    validate_base_asset_amount(
        order,
        market.amm.order_step_size,
        market.amm.min_order_size,
        order.reduce_only or is_jit_maker(order),
    )
    if order.price == 0 and not order.has_oracle_price_offset():
        raise _reject(ErrorCode.InvalidOrderLimitPrice, "price", "limit order price == 0")
    if order.has_oracle_price_offset() and order.price != 0:
        raise _reject(
            ErrorCode.InvalidOrderLimitPrice,
            "price",
            "limit order with an oracle offset must have price 0",
        )
    if order.trigger_price > 0:
        raise _reject(
            ErrorCode.InvalidOrderTrigger, "trigger_price", "limit order has a trigger price"
        )
    if order.post_only:
        if order.has_auction():
            raise _reject(
                ErrorCode.InvalidOrder, "auction_duration", "post only limit order has an auction"
            )
        validate_post_only_order(order, market, valid_oracle_price, slot)
    validate_limit_order_auction_params(order)


def validate_limit_order_auction_params(order: Order) -> None:
    if order.has_auction():
        if order.has_oracle_price_offset():
            validate_oracle_auction_params(order)
        else:
            validate_auction_params(order)
        return
    if order.auction_start_price != 0:
        raise _reject(
            ErrorCode.InvalidOrder,
            "auction_start_price",
            "limit order without auction can not have an auction start price",
        )
    if order.auction_end_price != 0:
        raise _reject(
            ErrorCode.InvalidOrder,
            "auction_end_price",
            "limit order without auction can not have an auction end price",
        )


def validate_post_only_order(
    order: Order, market: PerpMarket, valid_oracle_price: int | None, slot: int
) -> None:
    """A post-only order must not be immediately fillable by the AMM at its limit price."""
    if is_jit_maker(order):
        return  # a JIT maker is allowed to fill against the AMM
    if market.status == MarketStatus.AmmPaused:
        return
    limit_price = force_get_limit_price(
        order,
        valid_oracle_price,
        None,
        slot,
        market.amm.order_tick_size,
        market.contract_type == ContractType.Prediction,
    )
    base_asset_amount_market_can_fill = calculate_base_asset_amount_to_fill_up_to_limit_price(
        order, market, limit_price, None
    )
    if base_asset_amount_market_can_fill == 0:
        return
    if valid_oracle_price is not None and (
        (valid_oracle_price > limit_price and order.direction == PositionDirection.Long)
        or (valid_oracle_price < limit_price and order.direction == PositionDirection.Short)
    ):
        return
    raise _reject(
        ErrorCode.PlacePostOnlyLimitFailure,
        "post_only",
        f"post-only order could immediately fill {base_asset_amount_market_can_fill} "
        f"against the AMM at {limit_price}",
    )


def _validate_trigger_condition(order: Order) -> None:
    if order.trigger_condition not in (OrderTriggerCondition.Above, OrderTriggerCondition.Below):
        raise _reject(
            ErrorCode.InvalidTriggerOrderCondition,
            "trigger_condition",
            "trigger condition must be Above or Below",
        )


def validate_trigger_limit_order(order: Order, step_size: int, min_order_size: int) -> None:
    validate_base_asset_amount(order, step_size, min_order_size, order.reduce_only)
    _validate_trigger_condition(order)
    if order.price == 0:
        raise _reject(ErrorCode.InvalidOrderLimitPrice, "price", "trigger limit order price == 0")
    if order.trigger_price == 0:
        raise _reject(ErrorCode.InvalidOrderTrigger, "trigger_price", "trigger price == 0")
    if order.post_only:
        raise _reject(
            ErrorCode.InvalidOrderPostOnly, "post_only", "trigger limit order can not be post only"
        )
    if order.has_oracle_price_offset():
        raise _reject(
            ErrorCode.InvalidOrderOracleOffset,
            "oracle_price_offset",
            "trigger limit order can not have an oracle offset",
        )


def validate_trigger_market_order(order: Order, step_size: int, min_order_size: int) -> None:
    validate_base_asset_amount(order, step_size, min_order_size, order.reduce_only)
    _validate_trigger_condition(order)
    if order.price > 0:
        raise _reject(
            ErrorCode.InvalidOrderLimitPrice, "price", "trigger market order can not have a price"
        )
    if order.trigger_price == 0:
        raise _reject(
            ErrorCode.InvalidOrderTrigger,
            "trigger_price",
            "trigger market order trigger price == 0",
        )
    if order.post_only:
        raise _reject(
            ErrorCode.InvalidOrderPostOnly,
            "post_only",
            "trigger market order can not be post only",
        )
    if order.has_oracle_price_offset():
        raise _reject(
            ErrorCode.InvalidOrderOracleOffset,
            "oracle_price_offset",
            "trigger market order can not have an oracle offset",
        )


def validate_base_asset_amount(
    order: Order, step_size: int, min_order_size: int, reduce_only_or_jit_maker: bool
) -> None:
    """Non-zero, a step multiple, and at least ``min_order_size`` unless reduce-only or a JIT
    maker (those may be small: they close what is there)."""
    if order.base_asset_amount == 0:
        raise _reject(
            ErrorCode.InvalidOrderSizeTooSmall, "base_asset_amount", "order size can not be 0"
        )
    if not is_multiple_of_step_size(order.base_asset_amount, step_size):
        raise _reject(
            ErrorCode.InvalidOrderNotStepSizeMultiple,
            "base_asset_amount",
            f"order size {order.base_asset_amount} is not a multiple of step size {step_size}",
        )
    if not reduce_only_or_jit_maker and order.base_asset_amount < min_order_size:
        raise _reject(
            ErrorCode.InvalidOrderMinOrderSize,
            "base_asset_amount",
            f"order size {order.base_asset_amount} < min order size {min_order_size}",
        )


def validate_auction_params(order: Order) -> None:
    """A fixed auction: non-zero prices that move the way an auction does (a bid's price rises,
    an ask's falls) and end within the order's limit price."""
    code = ErrorCode.InvalidOrderAuction
    if order.auction_start_price == 0:
        raise _reject(code, "auction_start_price", "auction start price was 0")
    if order.auction_end_price == 0:
        raise _reject(code, "auction_end_price", "auction end price was 0")
    if order.direction == PositionDirection.Long:
        if order.auction_start_price > order.auction_end_price:
            raise _reject(
                code,
                "auction_start_price",
                f"auction start price {order.auction_start_price} > "
                f"auction end price {order.auction_end_price}",
            )
        if order.price != 0 and order.price < order.auction_end_price:
            raise _reject(
                code,
                "auction_end_price",
                f"order price {order.price} < auction end price {order.auction_end_price}",
            )
    else:
        if order.auction_start_price < order.auction_end_price:
            raise _reject(
                code,
                "auction_start_price",
                f"auction start price {order.auction_start_price} < "
                f"auction end price {order.auction_end_price}",
            )
        if order.price != 0 and order.price > order.auction_end_price:
            raise _reject(
                code,
                "auction_end_price",
                f"order price {order.price} > auction end price {order.auction_end_price}",
            )


def validate_oracle_auction_params(order: Order) -> None:
    """An oracle-offset auction moves the right way and ends no worse than the order's offset."""
    code = ErrorCode.InvalidOrderAuction
    if order.direction == PositionDirection.Long:
        if order.auction_start_price > order.auction_end_price:
            raise _reject(
                code,
                "auction_start_price",
                f"auction start offset {order.auction_start_price} > "
                f"auction end offset {order.auction_end_price}",
            )
        if order.has_oracle_price_offset() and order.auction_end_price > order.oracle_price_offset:
            raise _reject(
                code,
                "auction_end_price",
                f"auction end offset {order.auction_end_price} > "
                f"oracle price offset {order.oracle_price_offset}",
            )
    else:
        if order.auction_start_price < order.auction_end_price:
            raise _reject(
                code,
                "auction_start_price",
                f"auction start offset {order.auction_start_price} < "
                f"auction end offset {order.auction_end_price}",
            )
        if order.has_oracle_price_offset() and order.auction_end_price < order.oracle_price_offset:
            raise _reject(
                code,
                "auction_end_price",
                f"auction end offset {order.auction_end_price} < "
                f"oracle price offset {order.oracle_price_offset}",
            )


def validate_spot_order(order: Order, step_size: int, min_order_size: int) -> None:
    """Validate a new spot order (``validation::order::validate_spot_order``)."""
    if order.order_type == OrderType.Market:
        validate_market_order(order, step_size, min_order_size)
    elif order.order_type == OrderType.Limit:
        validate_spot_limit_order(order, step_size, min_order_size)
    elif order.order_type == OrderType.TriggerMarket:
        validate_trigger_market_order(order, step_size, min_order_size)
    elif order.order_type == OrderType.TriggerLimit:
        validate_trigger_limit_order(order, step_size, min_order_size)
    else:
        validate_oracle_order(order, step_size, min_order_size)


def validate_spot_limit_order(order: Order, step_size: int, min_order_size: int) -> None:
    validate_base_asset_amount(order, step_size, min_order_size, order.reduce_only)
    if order.price == 0 and not order.has_oracle_price_offset():
        raise _reject(ErrorCode.InvalidOrderLimitPrice, "price", "limit order price == 0")
    if order.has_oracle_price_offset() and order.price != 0:
        # the program reports this one as an offset error on spot (a price error on perps)
        raise _reject(
            ErrorCode.InvalidOrderOracleOffset,
            "oracle_price_offset",
            "limit order with an oracle offset must have price 0",
        )
    if order.trigger_price > 0:
        raise _reject(
            ErrorCode.InvalidOrderTrigger, "trigger_price", "limit order has a trigger price"
        )
    if order.post_only and order.has_auction():
        raise _reject(
            ErrorCode.InvalidOrder, "auction_duration", "post only limit order has an auction"
        )
    validate_limit_order_auction_params(order)


def validate_order_for_force_reduce_only(order: Order, existing_position: int) -> None:
    """In a reduce-only market an order must be reduce-only and against an existing position."""
    code = ErrorCode.InvalidOrderNotRiskReducing
    if not order.reduce_only:
        raise _reject(code, "reduce_only", "market is reduce only: order must be reduce only")
    if existing_position == 0:
        raise _reject(
            code, "reduce_only", "market is reduce only: user must have a position to reduce"
        )
    existing_position_direction = (
        PositionDirection.Long if existing_position > 0 else PositionDirection.Short
    )
    if order.direction == existing_position_direction:
        raise _reject(
            code,
            "direction",
            "market is reduce only: order must be opposite the existing position",
        )


def validate_place_and_make_order_params(params: OrderParams) -> None:
    """A place-and-make order is an immediate-or-cancel post-only limit order (the program's
    check in ``handle_place_and_make_perp_order`` / ``..._spot_order``)."""
    if (
        not params.immediate_or_cancel
        or params.post_only == PostOnlyParam.None_
        or params.order_type != OrderType.Limit
    ):
        field = (
            "immediate_or_cancel"
            if not params.immediate_or_cancel
            else "post_only"
            if params.post_only == PostOnlyParam.None_
            else "order_type"
        )
        raise _reject(
            ErrorCode.InvalidOrderIOCPostOnly,
            field,
            "place and make must use an immediate-or-cancel post-only limit order",
        )
