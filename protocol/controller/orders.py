"""Placing, cancelling, expiring and modifying orders (the program's ``controller/orders.rs``).

Every function takes the transaction's :class:`~protocol.accounts.Accounts` view and the user's
key; it mutates the accounts it touches in place and emits an
:class:`~protocol.records.OrderActionRecord` per order event. A :class:`ProtocolError` leaves the
transaction to be discarded as a whole, so there is no partial state to undo here. Signer
checks are the instruction layer's; these functions assume the caller may act for the user.

Units: perp orders are sized in BASE_PRECISION and checked against the perp market's
``amm.order_step_size`` / ``amm.order_tick_size`` / ``amm.min_order_size``; spot orders in the
mint's units against the spot market's ``order_step_size`` / ``order_tick_size`` /
``min_order_size``. A position's ``open_bids`` (>= 0) and ``open_asks`` (<= 0) are the base
(perp) or token (spot) amount its open orders could add or remove; untriggered trigger orders
are not counted (``update_open_bids_and_asks``).

Outcomes that are not errors, as in the program: an order whose ``max_ts`` is already past, and
a ``TryPostOnly`` order that would take, are silently not placed (the place functions return
``None`` instead of the new order id). ``cancel_order_by_order_id`` /
``cancel_order_by_user_order_id`` do nothing for an unknown id, as the program's cancel
instructions do; :func:`cancel_order` is the strict form (``OrderDoesNotExist``).

Records: ``"place"`` for a new order, ``"cancel"`` for a cancellation, ``"expire"`` (reason
``"order_expired"``) for an order cancelled because its ``max_ts`` passed. A modification is a
``"cancel"`` of the old order and a ``"place"`` of its replacement, both with reason
``"modify"`` (the program logs the same pair), so a book built from records needs no special
case for it.

Deviations from the program, and why:

* cross margin only (see :mod:`protocol.math.margin`): no isolated positions, no high-leverage
  mode, no builder/revenue-share orders, no user pools, no protected-maker offsets.
* ``base_asset_amount == u64::MAX`` ("max leverage order") is rejected (``InvalidOrder``): the
  program sizes it with ``calculate_max_perp_order_size``, which this model does not have yet.
* the program also keeps user-level ``open_orders`` / ``open_auctions`` counters; this model
  counts open orders per position only (``user.orders`` is the user-level list).
* ``validate_user_not_being_liquidated`` is ``math/liquidation.rs`` and
  ``validate_spot_margin_trading`` is ``math/margin.rs``; they are here because only order
  placement uses them so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts, MarketReader
from protocol.constants import QUOTE_SPOT_MARKET_INDEX
from protocol.controller.position import (
    decrease_open_bids_and_asks,
    increase_open_bids_and_asks,
)
from protocol.controller.spot_position import (
    decrease_spot_open_bids_and_asks,
    increase_spot_open_bids_and_asks,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.auction import calculate_auction_prices, update_perp_auction_params
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    meets_place_order_margin_requirement,
)
from protocol.math.orders import (
    get_base_asset_amount_unfilled,
    get_posted_slot_from_clock_slot,
    get_price_for_perp_order,
    is_multiple_of_step_size,
    is_new_order_risk_increasing,
    set_order_bit_flag,
    should_expire_order,
    standardize_base_asset_amount,
    standardize_price,
    standardize_price_i64,
    update_open_bids_and_asks,
)
from protocol.math.spot_balance import get_signed_token_amount, get_token_amount, get_token_value
from protocol.numeric import U64_MAX, div_trunc
from protocol.records import OrderActionRecord
from protocol.state.margin_calculation import MarginContext
from protocol.state.oracle import OraclePriceData
from protocol.state.order_params import ModifyOrderParams, OrderParams
from protocol.state.perp_market import PerpMarket
from protocol.state.user import Order, PerpPosition, SpotPosition, User, UserKey
from protocol.types import (
    ContractTier,
    MarketStatus,
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from protocol.validation.order import (
    validate_order,
    validate_order_for_force_reduce_only,
    validate_spot_order,
)

# OrderActionRecord.reason values (the program's OrderActionExplanation, snake_case).
EXPLANATION_NONE = ""
EXPLANATION_ORDER_EXPIRED = "order_expired"
EXPLANATION_MODIFY = "modify"
EXPLANATION_LIQUIDATION = "liquidation"


@dataclass(frozen=True, slots=True)
class PlaceOrderOptions:
    """How a placement is run (the program's ``PlaceOrderOptions``).

    ``enforce_margin_check=False`` lets a caller placing several orders check margin once after
    the last; ``risk_increasing`` carries that the batch increased risk. A liquidation
    placement (``explanation == "liquidation"``) skips the being-liquidated check, auction
    sanitizing and the margin check. ``signed_msg_taker_order_slot`` backdates a signed-message
    order's auction to the slot the taker signed at.
    """

    try_expire_orders: bool = True
    enforce_margin_check: bool = True
    risk_increasing: bool = False
    explanation: str = EXPLANATION_NONE
    existing_position_direction_override: PositionDirection | None = None
    signed_msg_taker_order_slot: int | None = None

    def is_liquidation(self) -> bool:
        return self.explanation == EXPLANATION_LIQUIDATION

    def is_signed_msg_order(self) -> bool:
        return self.signed_msg_taker_order_slot is not None

    def get_order_slot(self, order_slot: int) -> int:
        if self.signed_msg_taker_order_slot is None:
            return order_slot
        return min(order_slot, self.signed_msg_taker_order_slot)


# --- account-level checks -------------------------------------------------------------------------
def validate_user_not_being_liquidated(user: User, reader: MarketReader) -> None:
    """A user flagged as being liquidated may not place orders, unless its margin (with the
    liquidation buffer) has recovered, in which case the flag is cleared first."""
    if not user.is_being_liquidated():
        return
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.liquidation(reader.state.liquidation_margin_buffer_ratio)
    )
    if calculation.can_exit_liquidation():
        user.exit_cross_margin_liquidation()
        return
    raise ProtocolError(
        ErrorCode.UserIsBeingLiquidated, "user is being liquidated", field="authority"
    )


def validate_spot_margin_trading(user: User, reader: MarketReader) -> None:
    """A user without margin trading enabled may not have open orders that could create a
    borrow: asks beyond its deposit, or bids worth more than its quote deposit. With margin
    trading enabled, no position may be in an isolated-tier perp market."""
    if user.is_margin_trading_enabled:
        for perp_position in user.perp_positions:
            if perp_position.is_available():
                continue
            perp_market = reader.perp_market(perp_position.market_index)
            if perp_market.contract_tier == ContractTier.Isolated:
                raise ProtocolError(
                    ErrorCode.IsolatedAssetTierViolation,
                    f"isolated perp market {perp_market.market_index} does not allow margin "
                    "trading",
                    field="market_index",
                )
        return

    total_open_bids_value = 0
    quote_token_amount = 0
    for spot_position in user.spot_positions:
        spot_market = reader.spot_market(spot_position.market_index)
        signed_token_amount = get_signed_token_amount(
            get_token_amount(spot_position.scaled_balance, spot_market, spot_position.balance_type),
            spot_position.balance_type,
        )
        if spot_position.market_index == QUOTE_SPOT_MARKET_INDEX:
            quote_token_amount = signed_token_amount
        if spot_position.open_asks < 0 and signed_token_amount + spot_position.open_asks < 0:
            raise ProtocolError(
                ErrorCode.MarginTradingDisabled,
                f"open asks could borrow in spot market {spot_position.market_index}",
                field="base_asset_amount",
            )
        if spot_position.open_bids > 0:
            oracle_price = reader.oracle_price_data(spot_market.oracle).price
            total_open_bids_value += get_token_value(
                -spot_position.open_bids, spot_market.decimals, oracle_price
            )
    if total_open_bids_value != 0 and quote_token_amount + total_open_bids_value < 0:
        raise ProtocolError(
            ErrorCode.MarginTradingDisabled,
            "open bids could borrow in the quote spot market",
            field="base_asset_amount",
        )


# --- records ----------------------------------------------------------------------------------
def _emit_order_action(
    accounts: Accounts,
    user: User,
    order: Order,
    action: str,
    explanation: str,
    *,
    filler: UserKey | None = None,
    filler_reward: int = 0,
) -> None:
    accounts.emit(
        OrderActionRecord(
            action=action,
            authority=user.authority,
            sub_account_id=user.sub_account_id,
            order_id=order.order_id,
            market_index=order.market_index,
            market_type=order.market_type,
            order_type=order.order_type,
            direction=order.direction,
            base_asset_amount=order.base_asset_amount,
            base_asset_amount_filled=order.base_asset_amount_filled,
            price=order.price,
            reason=explanation,
            slot=accounts.clock.slot,
            ts=accounts.clock.unix_timestamp,
            filler=filler,
            filler_reward=filler_reward,
            # a copy: later instructions of the same transaction may change the live order
            order=order.clone(),
        )
    )


def _update_last_active_slot(user: User, slot: int) -> None:
    if not user.is_being_liquidated():
        user.last_active_slot = slot


# --- auctions ---------------------------------------------------------------------------------
def get_auction_params(
    params: OrderParams,
    oracle_price_data: OraclePriceData,
    tick_size: int,
    min_auction_duration: int,
) -> tuple[int, int, int]:
    """(start, end, duration) the new order is stored with, tick-standardized.

    A limit order keeps an auction only if it names all three params (a non-zero duration is
    raised to ``min_auction_duration``). Market and oracle orders always have an auction of at
    least ``min_auction_duration``; an oracle order must name its start/end offsets, a market
    order without them gets ``calculate_auction_prices``. Trigger orders get theirs when they
    trigger.
    """
    if params.order_type not in (OrderType.Market, OrderType.Oracle, OrderType.Limit):
        return 0, 0, 0

    if params.order_type == OrderType.Limit:
        if (
            params.auction_start_price is None
            or params.auction_end_price is None
            or params.auction_duration is None
        ):
            return 0, 0, 0
        duration = params.auction_duration
        if duration != 0:
            duration = max(duration, min_auction_duration)
        return (
            standardize_price_i64(params.auction_start_price, tick_size, params.direction),
            standardize_price_i64(params.auction_end_price, tick_size, params.direction),
            duration,
        )

    duration = max(params.auction_duration or 0, min_auction_duration)
    if params.auction_start_price is not None and params.auction_end_price is not None:
        start, end = params.auction_start_price, params.auction_end_price
    elif params.order_type == OrderType.Oracle:
        raise ProtocolError(
            ErrorCode.InvalidOrderAuction,
            "oracle order must specify auction start and end price offsets",
            field="auction_start_price",
        )
    else:
        start, end = calculate_auction_prices(oracle_price_data, params.direction, params.price)
    return (
        standardize_price_i64(start, tick_size, params.direction),
        standardize_price_i64(end, tick_size, params.direction),
        duration,
    )


# --- placing ----------------------------------------------------------------------------------
def _check_new_order_slot(user: User, params: OrderParams) -> None:
    if not user.has_room_for_new_order():
        raise ProtocolError(
            ErrorCode.MaxNumberOfOrders, "user has no free order slot", field="order_type"
        )
    if params.user_order_id > 0 and any(
        o.user_order_id == params.user_order_id and o.status == OrderStatus.Open
        for o in user.orders
    ):
        raise ProtocolError(
            ErrorCode.UserOrderIdAlreadyInUse,
            f"user_order_id {params.user_order_id} is already in use",
            field="user_order_id",
        )


def _check_user_reduce_only(user: User, params: OrderParams) -> None:
    if user.is_reduce_only() and not params.reduce_only:
        raise ProtocolError(
            ErrorCode.UserReduceOnly, "user is reduce only: order must be", field="reduce_only"
        )


def _reject_max_size(params: OrderParams) -> None:
    if params.base_asset_amount == U64_MAX and not (
        params.order_type in (OrderType.TriggerMarket, OrderType.TriggerLimit)
        and params.reduce_only
    ):
        raise ProtocolError(
            ErrorCode.InvalidOrder,
            "max-size (u64::MAX) orders are not supported",
            field="base_asset_amount",
        )


def _is_in_settlement(market: PerpMarket, now: int) -> bool:
    in_settlement = market.status in (MarketStatus.Settlement, MarketStatus.Delisted)
    return in_settlement or (market.expiry_ts != 0 and now >= market.expiry_ts)


def _is_trigger_order(params: OrderParams) -> bool:
    return params.order_type in (OrderType.TriggerMarket, OrderType.TriggerLimit)


def place_perp_order(
    accounts: Accounts,
    user_key: UserKey,
    params: OrderParams,
    options: PlaceOrderOptions | None = None,
) -> int | None:
    """Place a perp order for the user; the new order id, or ``None`` if it was skipped.

    In the program's order: the user may not be being liquidated (``UserIsBeingLiquidated``)
    or bankrupt (``UserBankrupt``); expired orders are cancelled; a reduce-only user must place
    reduce-only (``UserReduceOnly``); there must be a free order slot (``MaxNumberOfOrders``);
    the market must be live (``MarketBeingInitialized``, ``MarketPlaceOrderPaused``); the size
    is at least a step (``OrderAmountTooSmall``) and is rounded down to one; auction params are
    derived or sanitized; the order is validated (``validate_order``); it is added to the open
    bids/asks; then the margin check (``InsufficientCollateral``, Initial if the order is risk
    increasing, else Maintenance), reduce-only market rules (``InvalidOrderNotRiskReducing``)
    and the open interest cap (``MaxOpenInterest``).
    """
    options = options or PlaceOrderOptions()
    now = accounts.clock.unix_timestamp
    slot = accounts.clock.slot
    state = accounts.state
    user = accounts.user(user_key)

    if not options.is_liquidation():
        validate_user_not_being_liquidated(user, accounts)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user is bankrupt", field="authority")

    if options.try_expire_orders:
        expire_orders(accounts, user_key)

    _check_user_reduce_only(user, params)
    _check_new_order_slot(user, params)

    market_index = params.market_index
    market = accounts.perp_market(market_index)
    force_reduce_only = market.status == MarketStatus.ReduceOnly
    if market.status == MarketStatus.Initialized:
        raise ProtocolError(
            ErrorCode.MarketBeingInitialized, "market is being initialized", field="market_index"
        )
    if _is_in_settlement(market, now):
        raise ProtocolError(
            ErrorCode.MarketPlaceOrderPaused, "market is in settlement", field="market_index"
        )

    position = user.force_get_perp_position_mut(market_index)

    if params.base_asset_amount < market.amm.order_step_size:
        raise ProtocolError(
            ErrorCode.OrderAmountTooSmall,
            f"base_asset_amount {params.base_asset_amount} < order step size "
            f"{market.amm.order_step_size}",
            field="base_asset_amount",
        )
    _reject_max_size(params)
    order_base_asset_amount = standardize_base_asset_amount(
        params.base_asset_amount, market.amm.order_step_size
    )
    if options.existing_position_direction_override is not None:
        existing_position_direction = options.existing_position_direction_override
    else:
        existing_position_direction = (
            PositionDirection.Long if position.base_asset_amount >= 0 else PositionDirection.Short
        )

    oracle_price_data = accounts.oracle_price_data(market.amm.oracle)

    if not options.is_liquidation():
        params = update_perp_auction_params(
            params, market, oracle_price_data.price, options.is_signed_msg_order()
        )

    auction_start_price, auction_end_price, auction_duration = get_auction_params(
        params, oracle_price_data, market.amm.order_tick_size, state.min_perp_auction_duration
    )

    if params.max_ts is not None:
        max_ts = params.max_ts
    elif params.order_type in (OrderType.Market, OrderType.Oracle):
        # long enough for the auction to finish, and never under 30 seconds
        max_ts = now + max(30, div_trunc(auction_duration, 2) + 10)
    else:
        max_ts = 0
    if max_ts != 0 and max_ts < now:
        user.prune_perp_position(market_index)
        return None

    if params.market_type != MarketType.Perp:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a perp order", field="market_type"
        )

    reduce_only = params.reduce_only or force_reduce_only
    bit_flags = set_order_bit_flag(0, options.is_signed_msg_order(), OrderBitFlag.SignedMessage)
    bit_flags = set_order_bit_flag(
        bit_flags, _is_trigger_order(params) and reduce_only, OrderBitFlag.NewTriggerReduceOnly
    )

    order_id = user.next_order_id
    new_order = Order(
        order_id=order_id,
        market_index=market_index,
        market_type=params.market_type,
        order_type=params.order_type,
        direction=params.direction,
        base_asset_amount=order_base_asset_amount,
        slot=options.get_order_slot(slot),
        price=get_price_for_perp_order(
            params.price, params.direction, params.post_only, market.amm
        ),
        trigger_price=standardize_price(
            params.trigger_price or 0, market.amm.order_tick_size, params.direction
        ),
        trigger_condition=params.trigger_condition,
        auction_start_price=auction_start_price,
        auction_end_price=auction_end_price,
        auction_duration=auction_duration,
        max_ts=max_ts,
        oracle_price_offset=params.oracle_price_offset or 0,
        user_order_id=params.user_order_id,
        existing_position_direction=existing_position_direction,
        status=OrderStatus.Open,
        reduce_only=reduce_only,
        post_only=params.post_only != PostOnlyParam.None_,
        immediate_or_cancel=params.immediate_or_cancel,
        posted_slot_tail=get_posted_slot_from_clock_slot(slot),
        bit_flags=bit_flags,
    )

    try:
        validate_order(new_order, market, oracle_price_data.price, slot)
    except ProtocolError as err:
        if (
            err.code == ErrorCode.PlacePostOnlyLimitFailure
            and params.post_only == PostOnlyParam.TryPostOnly
        ):
            user.prune_perp_position(market_index)
            return None
        raise

    risk_increasing = is_new_order_risk_increasing(
        new_order, position.base_asset_amount, position.open_bids, position.open_asks
    )

    user.next_order_id += 1
    user.orders.append(new_order)
    position.open_orders += 1
    if update_open_bids_and_asks(new_order):
        increase_open_bids_and_asks(position, params.direction, order_base_asset_amount)

    if options.enforce_margin_check and not options.is_liquidation():
        meets_place_order_margin_requirement(
            user, accounts, options.risk_increasing or risk_increasing
        )

    if force_reduce_only:
        validate_order_for_force_reduce_only(new_order, position.base_asset_amount)

    max_oi = market.amm.max_open_interest
    if max_oi != 0 and risk_increasing:
        if params.direction == PositionDirection.Long:
            oi_plus_order = abs(market.amm.base_asset_amount_long + order_base_asset_amount)
        else:
            oi_plus_order = abs(market.amm.base_asset_amount_short - order_base_asset_amount)
        if oi_plus_order > max_oi:
            raise ProtocolError(
                ErrorCode.MaxOpenInterest,
                f"order of {order_base_asset_amount} could breach the max open interest "
                f"{max_oi} of perp market {market_index}",
                field="base_asset_amount",
            )

    _emit_order_action(accounts, user, new_order, "place", options.explanation)
    _update_last_active_slot(user, slot)
    return order_id


def place_spot_order(
    accounts: Accounts,
    user_key: UserKey,
    params: OrderParams,
    options: PlaceOrderOptions | None = None,
) -> int | None:
    """Place a spot order for the user; the new order id, or ``None`` if it was skipped.

    As :func:`place_perp_order`, with the spot market's step/tick/min size (sizes in the mint's
    units; ``InvalidOrderSizeTooSmall`` below one step), the market's ``orders_enabled``
    (``SpotOrdersDisabled``), no orders on the quote asset (``InvalidOrderBaseQuoteAsset``), the
    existing position measured by the signed token balance, and the spot margin-trading rule
    (``MarginTradingDisabled``). Spot auctions are not derived from the AMM: a market order
    without auction params gets ``calculate_auction_prices`` over
    ``state.default_spot_auction_duration`` slots.
    """
    options = options or PlaceOrderOptions()
    now = accounts.clock.unix_timestamp
    slot = accounts.clock.slot
    state = accounts.state
    user = accounts.user(user_key)

    validate_user_not_being_liquidated(user, accounts)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user is bankrupt", field="authority")

    if options.try_expire_orders:
        expire_orders(accounts, user_key)

    _check_user_reduce_only(user, params)

    if params.max_ts is not None:
        max_ts = params.max_ts
    elif params.order_type in (OrderType.Market, OrderType.Oracle):
        max_ts = now + 30
    else:
        max_ts = 0
    if max_ts != 0 and max_ts < now:
        return None

    _check_new_order_slot(user, params)

    market_index = params.market_index
    spot_market = accounts.spot_market(market_index)
    force_reduce_only = spot_market.status == MarketStatus.ReduceOnly
    step_size = spot_market.order_step_size
    if spot_market.status == MarketStatus.Initialized:
        raise ProtocolError(
            ErrorCode.MarketBeingInitialized, "market is being initialized", field="market_index"
        )

    spot_position = user.force_get_spot_position_mut(market_index)
    signed_token_amount = get_signed_token_amount(
        get_token_amount(spot_position.scaled_balance, spot_market, spot_position.balance_type),
        spot_position.balance_type,
    )
    oracle_price_data = accounts.oracle_price_data(spot_market.oracle)

    if params.base_asset_amount < step_size:
        raise ProtocolError(
            ErrorCode.InvalidOrderSizeTooSmall,
            f"base_asset_amount {params.base_asset_amount} < order step size {step_size}",
            field="base_asset_amount",
        )
    _reject_max_size(params)
    order_base_asset_amount = standardize_base_asset_amount(params.base_asset_amount, step_size)
    if not is_multiple_of_step_size(order_base_asset_amount, step_size):
        raise ProtocolError(
            ErrorCode.InvalidOrderNotStepSizeMultiple,
            f"base_asset_amount {order_base_asset_amount} is not a multiple of {step_size}",
            field="base_asset_amount",
        )
    existing_position_direction = (
        PositionDirection.Long if signed_token_amount >= 0 else PositionDirection.Short
    )

    auction_start_price, auction_end_price, auction_duration = get_auction_params(
        params, oracle_price_data, spot_market.order_tick_size, state.default_spot_auction_duration
    )

    if not spot_market.orders_enabled:
        raise ProtocolError(
            ErrorCode.SpotOrdersDisabled, "spot orders are disabled", field="market_index"
        )
    if market_index == QUOTE_SPOT_MARKET_INDEX:
        raise ProtocolError(
            ErrorCode.InvalidOrderBaseQuoteAsset,
            "can not place an order for the quote asset",
            field="market_index",
        )
    if params.market_type != MarketType.Spot:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a spot order", field="market_type"
        )

    reduce_only = params.reduce_only or force_reduce_only
    bit_flags = set_order_bit_flag(
        0, _is_trigger_order(params) and reduce_only, OrderBitFlag.NewTriggerReduceOnly
    )

    order_id = user.next_order_id
    new_order = Order(
        order_id=order_id,
        market_index=market_index,
        market_type=params.market_type,
        order_type=params.order_type,
        direction=params.direction,
        base_asset_amount=order_base_asset_amount,
        slot=slot,
        price=standardize_price(params.price, spot_market.order_tick_size, params.direction),
        trigger_price=standardize_price(
            params.trigger_price or 0, spot_market.order_tick_size, params.direction
        ),
        trigger_condition=params.trigger_condition,
        auction_start_price=auction_start_price,
        auction_end_price=auction_end_price,
        auction_duration=auction_duration,
        max_ts=max_ts,
        oracle_price_offset=params.oracle_price_offset or 0,
        user_order_id=params.user_order_id,
        existing_position_direction=existing_position_direction,
        status=OrderStatus.Open,
        reduce_only=reduce_only,
        post_only=params.post_only != PostOnlyParam.None_,
        immediate_or_cancel=params.immediate_or_cancel,
        posted_slot_tail=get_posted_slot_from_clock_slot(slot),
        bit_flags=bit_flags,
    )

    validate_spot_order(new_order, spot_market.order_step_size, spot_market.min_order_size)

    risk_increasing = is_new_order_risk_increasing(
        new_order, signed_token_amount, spot_position.open_bids, spot_position.open_asks
    )

    user.next_order_id += 1
    user.orders.append(new_order)
    spot_position.open_orders += 1
    if update_open_bids_and_asks(new_order):
        increase_spot_open_bids_and_asks(spot_position, params.direction, order_base_asset_amount)

    if options.enforce_margin_check:
        meets_place_order_margin_requirement(
            user, accounts, options.risk_increasing or risk_increasing
        )

    validate_spot_margin_trading(user, accounts)

    if force_reduce_only:
        validate_order_for_force_reduce_only(new_order, signed_token_amount)

    _emit_order_action(accounts, user, new_order, "place", options.explanation)
    _update_last_active_slot(user, slot)
    return order_id


# --- cancelling -------------------------------------------------------------------------------
def _cancel(
    accounts: Accounts,
    user: User,
    order: Order,
    action: str,
    explanation: str,
    *,
    filler: UserKey | None = None,
    filler_reward: int = 0,
) -> None:
    """Take an open order off the user, releasing its open bids/asks. ``filler`` and
    ``filler_reward`` name the keeper paid for it, if any, in the record."""
    if order.status != OrderStatus.Open:
        raise ProtocolError(
            ErrorCode.OrderNotOpen, f"order {order.order_id} is not open", field="order_id"
        )
    _emit_order_action(
        accounts, user, order, action, explanation, filler=filler, filler_reward=filler_reward
    )

    unfilled = get_base_asset_amount_unfilled(order)
    position: PerpPosition | SpotPosition | None
    if order.market_type == MarketType.Perp:
        position = user.get_perp_position(order.market_index)
        if position is None:
            raise ProtocolError(
                ErrorCode.UserHasNoPositionInMarket,
                f"no perp position for order {order.order_id}",
                field="market_index",
            )
        if update_open_bids_and_asks(order):
            decrease_open_bids_and_asks(position, order.direction, unfilled)
        position.open_orders -= 1
    else:
        position = user.get_spot_position(order.market_index)
        if position is None:
            raise ProtocolError(
                ErrorCode.UserHasNoPositionInMarket,
                f"no spot position for order {order.order_id}",
                field="market_index",
            )
        if update_open_bids_and_asks(order):
            decrease_spot_open_bids_and_asks(position, order.direction, unfilled)
        position.open_orders -= 1

    order.status = OrderStatus.Canceled
    user.orders = [o for o in user.orders if o is not order]
    # the program leaves an emptied position slot for reuse; this model drops it
    if order.market_type == MarketType.Perp:
        user.prune_perp_position(order.market_index)
    else:
        user.prune_spot_position(order.market_index)


def _find_order(
    user: User, order_id: int | None, user_order_id: int | None, *, open_only: bool
) -> Order | None:
    """The user's order with that id (an open one first); with ``open_only`` only open ones."""
    if (order_id is None) == (user_order_id is None):
        raise ProtocolError(
            ErrorCode.InvalidParameter,
            "give exactly one of order_id and user_order_id",
            field="order_id",
        )
    matches = [
        o
        for o in user.orders
        if (o.order_id == order_id if order_id is not None else o.user_order_id == user_order_id)
    ]
    for order in matches:
        if order.status == OrderStatus.Open:
            return order
    return None if open_only or not matches else matches[0]


def cancel_order(
    accounts: Accounts,
    user_key: UserKey,
    order_id: int | None = None,
    *,
    user_order_id: int | None = None,
    explanation: str = EXPLANATION_NONE,
) -> None:
    """Cancel one open order by ``order_id`` or ``user_order_id``: ``OrderDoesNotExist`` if the
    user has no such order, ``OrderNotOpen`` if it is no longer open."""
    user = accounts.user(user_key)
    order = _find_order(user, order_id, user_order_id, open_only=False)
    if order is None:
        raise ProtocolError(
            ErrorCode.OrderDoesNotExist,
            f"no open order with order_id={order_id} user_order_id={user_order_id}",
            field="order_id" if order_id is not None else "user_order_id",
        )
    _cancel(accounts, user, order, "cancel", explanation)
    _update_last_active_slot(user, accounts.clock.slot)


def cancel_order_by_order_id(accounts: Accounts, user_key: UserKey, order_id: int) -> bool:
    """The program's cancel instruction: an unknown id is not an error. True if cancelled."""
    user = accounts.user(user_key)
    order = _find_order(user, order_id, None, open_only=True)
    if order is None:
        return False
    _cancel(accounts, user, order, "cancel", EXPLANATION_NONE)
    _update_last_active_slot(user, accounts.clock.slot)
    return True


def cancel_order_by_user_order_id(
    accounts: Accounts, user_key: UserKey, user_order_id: int
) -> bool:
    """As :func:`cancel_order_by_order_id`, by the user's own order id."""
    user = accounts.user(user_key)
    order = _find_order(user, None, user_order_id, open_only=True)
    if order is None:
        return False
    _cancel(accounts, user, order, "cancel", EXPLANATION_NONE)
    _update_last_active_slot(user, accounts.clock.slot)
    return True


def cancel_orders(
    accounts: Accounts,
    user_key: UserKey,
    market_type: MarketType | None = None,
    market_index: int | None = None,
    direction: PositionDirection | None = None,
    explanation: str = EXPLANATION_NONE,
) -> list[int]:
    """Cancel every open order matching the filters; the cancelled order ids, in order.

    The market filter applies only when both ``market_type`` and ``market_index`` are given (as
    in the program); ``direction`` filters on its own.
    """
    user = accounts.user(user_key)
    cancelled: list[int] = []
    for order in list(user.orders):
        if order.status != OrderStatus.Open:
            continue
        if (
            market_type is not None
            and market_index is not None
            and (order.market_type != market_type or order.market_index != market_index)
        ):
            continue
        if direction is not None and order.direction != direction:
            continue
        cancelled.append(order.order_id)
        _cancel(accounts, user, order, "cancel", explanation)
    _update_last_active_slot(user, accounts.clock.slot)
    return cancelled


def expire_orders(accounts: Accounts, user_key: UserKey) -> list[int]:
    """Cancel the user's orders whose ``max_ts`` has passed (records with action ``"expire"``)."""
    user = accounts.user(user_key)
    now = accounts.clock.unix_timestamp
    expired: list[int] = []
    for order in list(user.orders):
        if should_expire_order(order, now):
            expired.append(order.order_id)
            _cancel(accounts, user, order, "expire", EXPLANATION_ORDER_EXPIRED)
    return expired


# --- modifying --------------------------------------------------------------------------------
def merge_modify_order_params_with_existing_order(
    existing_order: Order, modify_order_params: ModifyOrderParams
) -> OrderParams | None:
    """The params of the replacement order: each given field replaces the existing order's.

    ``None`` when ``ExcludePreviousFill`` leaves nothing to place. Without a new size the
    replacement is for what is still unfilled. A triggered order goes back to its untriggered
    condition. Auction params carry over only when all three are given.
    """
    if modify_order_params.base_asset_amount is None:
        base_asset_amount = get_base_asset_amount_unfilled(existing_order)
    elif modify_order_params.exclude_previous_fill():
        base_asset_amount = max(
            modify_order_params.base_asset_amount - existing_order.base_asset_amount_filled, 0
        )
        if base_asset_amount == 0:
            return None
    else:
        base_asset_amount = modify_order_params.base_asset_amount

    if modify_order_params.post_only is not None:
        post_only = modify_order_params.post_only
    else:
        post_only = PostOnlyParam.MustPostOnly if existing_order.post_only else PostOnlyParam.None_

    if modify_order_params.trigger_condition is not None:
        trigger_condition = modify_order_params.trigger_condition
    elif existing_order.trigger_condition in (
        OrderTriggerCondition.TriggeredAbove,
        OrderTriggerCondition.Above,
    ):
        trigger_condition = OrderTriggerCondition.Above
    else:
        trigger_condition = OrderTriggerCondition.Below

    auction: tuple[int | None, int | None, int | None] = (None, None, None)
    if (
        modify_order_params.auction_duration is not None
        and modify_order_params.auction_start_price is not None
        and modify_order_params.auction_end_price is not None
    ):
        auction = (
            modify_order_params.auction_duration,
            modify_order_params.auction_start_price,
            modify_order_params.auction_end_price,
        )

    def pick(new: int | None, old: int) -> int:
        return old if new is None else new

    return OrderParams(
        order_type=existing_order.order_type,
        market_type=existing_order.market_type,
        direction=(
            existing_order.direction
            if modify_order_params.direction is None
            else modify_order_params.direction
        ),
        base_asset_amount=base_asset_amount,
        market_index=existing_order.market_index,
        price=pick(modify_order_params.price, existing_order.price),
        user_order_id=existing_order.user_order_id,
        reduce_only=(
            existing_order.reduce_only
            if modify_order_params.reduce_only is None
            else modify_order_params.reduce_only
        ),
        post_only=post_only,
        # the program re-derives IOC from bit_flags, which a merge resets to 0
        immediate_or_cancel=False,
        bit_flags=0,
        max_ts=pick(modify_order_params.max_ts, existing_order.max_ts),
        trigger_price=pick(modify_order_params.trigger_price, existing_order.trigger_price),
        trigger_condition=trigger_condition,
        oracle_price_offset=pick(
            modify_order_params.oracle_price_offset, existing_order.oracle_price_offset
        ),
        auction_duration=auction[0],
        auction_start_price=auction[1],
        auction_end_price=auction[2],
    )


def modify_order(
    accounts: Accounts,
    user_key: UserKey,
    modify_order_params: ModifyOrderParams,
    order_id: int | None = None,
    *,
    user_order_id: int | None = None,
) -> int | None:
    """Replace an open order: cancel it and place the merged params as a new order.

    Returns the new order id (``None`` if nothing was placed). If the order is not open, the
    ``MustModify`` policy makes that ``OrderDoesNotExist``; otherwise nothing happens.
    """
    user = accounts.user(user_key)
    existing_order = _find_order(user, order_id, user_order_id, open_only=True)
    if existing_order is None:
        if modify_order_params.must_modify():
            raise ProtocolError(
                ErrorCode.OrderDoesNotExist,
                f"no open order with order_id={order_id} user_order_id={user_order_id}",
                field="order_id" if order_id is not None else "user_order_id",
            )
        return None

    snapshot = existing_order.clone()
    _cancel(accounts, user, existing_order, "cancel", EXPLANATION_MODIFY)
    _update_last_active_slot(user, accounts.clock.slot)

    params = merge_modify_order_params_with_existing_order(snapshot, modify_order_params)
    if params is None:
        return None
    options = PlaceOrderOptions(explanation=EXPLANATION_MODIFY)
    if params.market_type == MarketType.Perp:
        return place_perp_order(accounts, user_key, params, options)
    return place_spot_order(accounts, user_key, params, options)
