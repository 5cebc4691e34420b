"""The spot fill engine and spot trigger orders (the program's ``fill_spot_order``,
``fulfill_spot_order``, ``fulfill_spot_order_with_match``, ``pay_keeper_flat_reward_for_spot``
and ``trigger_spot_order`` in ``controller/orders.rs``, with ``math/spot_swap.rs::
select_margin_type_for_swap``).

Units: base amounts in the base mint's units; quote amounts, fees and rewards in the quote
mint's (QUOTE_PRECISION for USDC); prices PRICE_PRECISION.

Spot orders match resting spot orders only: there is no AMM and no external venue. A filler
names the maker orders; the program re-derives and checks everything, exactly as the perp
engine does (:mod:`protocol.controller.fills`, whose module docstring lists the rejection codes:
the same codes apply here). Differences from perps, as in the program: a spot taker without a
limit price crosses nothing (no fallback price); a match is bounded by what each side can
afford (``get_max_fill_amounts``: the quote a buyer can spend or the base a seller can sell,
own balance plus what the market could lend); a maker that is also the filler earns nothing.

Settlement: base moves between the two users' base-market balances and quote between their
quote balances (``update_spot_balances_and_cumulative_deposits``); the taker pays the taker fee
on top (a buyer) or out of the proceeds (a seller), the maker earns its rebate, the filler's
reward is deposited to its quote balance, and the rest (``fee_to_market``) is deposited to the
base market's ``spot_fee_pool`` (a balance in the quote market) and counted in
``total_spot_fee``. Spot fees use the spot fee structure's first tier
(:func:`~protocol.math.fees.determine_spot_fee_tier`); there is no referrer reward on spot.

After the match every side must meet the Fill margin requirement if the swap lowered its
(initial-weighted, strict-priced) free collateral, else Maintenance
(``InsufficientCollateral``); with a stale oracle the requirement is 100% for a
risk-increasing side and taker and maker may not both increase risk (``InvalidOracle``). The
fill price must be within the base market's price bands (``PriceBandsBreached``) and deposits
within ``max_token_deposits`` (``MaxDeposit``). A reduce-only remainder that can no longer
reduce, or an order that can no longer borrow what it needs (``no_borrow_liquidity``), is
cancelled with the flat filler fee; an immediate-or-cancel remainder is cancelled.

Records as for perps: a :class:`~protocol.records.FillRecord` (``market_type`` Spot,
``layer`` "jit" or "dlob") and an ``OrderActionRecord`` ``"fill"`` per order.

Deviations: as in the perp engine (strict maker validation, post-only takers rejected with
``CantMatchTwoPostOnlys``, bankrupt / liquidated takers rejected rather than skipped, no fuel);
external fulfillment (Serum/Phoenix/OpenBook) is out of scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.accounts import Accounts
from protocol.constants import MARGIN_PRECISION, QUOTE_SPOT_MARKET_INDEX, SPOT_WEIGHT_PRECISION
from protocol.controller.fills import (
    EXPLANATION_IMMEDIATE_OR_CANCEL,
    EXPLANATION_INSUFFICIENT_FREE_COLLATERAL,
    EXPLANATION_ORACLE_PRICE_BREACHED_LIMIT_PRICE,
    EXPLANATION_ORDER_FILLED_WITH_MATCH,
    EXPLANATION_ORDER_FILLED_WITH_MATCH_JIT,
    EXPLANATION_REDUCE_ONLY_ORDER_INCREASED_POSITION,
    TRIGGER_ORDER_MIN_AUCTION_DURATION,
    FillResult,
    MakerOrderRef,
    emit_trigger_records,
    find_open_order,
    find_triggerable_order,
    increment_total_fees,
    increment_total_rebate,
    max_oracle_twap_5min_percent_divergence,
    update_filler_volume,
    update_maker_volume_30d,
    update_order_after_fill,
    update_taker_volume_30d,
    update_trigger_order_params,
    validate_named_maker,
)
from protocol.controller.orders import (
    EXPLANATION_ORDER_EXPIRED,
    _cancel,
    _emit_order_action,
    _update_last_active_slot,
    validate_user_not_being_liquidated,
)
from protocol.controller.spot_balance import (
    update_spot_balances,
    update_spot_market_cumulative_interest,
)
from protocol.controller.spot_position import (
    decrease_spot_open_bids_and_asks,
    increase_spot_open_bids_and_asks,
    update_spot_balances_and_cumulative_deposits,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.auction import force_get_limit_price, get_limit_price
from protocol.math.fees import calculate_fee_for_fulfillment_with_match
from protocol.math.fulfillment import MakerOrderInfo, determine_spot_fulfillment_methods
from protocol.math.margin import (
    StrictOraclePrice,
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    get_asset_weight,
    get_liability_weight,
    get_spot_market_margin_ratio,
    get_worst_case_fill_simulation,
    meets_initial_margin_requirement,
)
from protocol.math.matching import (
    are_orders_same_market_but_different_sides,
    calculate_fill_for_matched_orders,
    calculate_filler_multiplier_for_matched_orders,
    do_orders_cross,
)
from protocol.math.oracle import (
    DriftAction,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.orders import (
    calculate_fill_price,
    get_base_asset_amount_unfilled,
    get_max_fill_amounts,
    get_standardized_base_asset_amount_unfilled,
    is_jit_maker,
    is_oracle_too_divergent_with_twap_5min,
    limit_price_breaches_maker_oracle_price_bands,
    order_satisfies_trigger_condition,
    should_cancel_reduce_only_order,
    should_expire_order,
    standardize_base_asset_amount,
    update_open_bids_and_asks,
    validate_fill_price,
    validate_fill_price_within_price_bands,
)
from protocol.math.spot_balance import (
    get_signed_token_amount,
    get_strict_token_value,
    get_token_amount,
)
from protocol.numeric import cast_i64, cast_u64, div_trunc, unsigned_abs
from protocol.records import FillRecord
from protocol.state.margin_calculation import MarginContext
from protocol.state.spot_market import SpotMarket
from protocol.state.state import State
from protocol.state.user import Order, SpotPosition, User, UserKey, UserStats
from protocol.types import (
    MarginRequirementType,
    MarketStatus,
    MarketType,
    OrderStatus,
    PositionDirection,
    SpotBalanceType,
)

__all__ = [
    "SpotFillContext",
    "fill_spot_order",
    "fulfill_spot_order",
    "fulfill_spot_order_with_match",
    "pay_keeper_flat_reward_for_spot",
    "select_margin_type_for_swap",
    "trigger_spot_order",
]

EXPLANATION_NO_BORROW_LIQUIDITY = "no_borrow_liquidity"


# --- helpers -------------------------------------------------------------------------------------
def _signed_token_amount(position: SpotPosition | None, market: SpotMarket) -> int:
    if position is None:
        return 0
    return get_signed_token_amount(
        get_token_amount(position.scaled_balance, market, position.balance_type),
        position.balance_type,
    )


def _spot_position(user: User, market_index: int) -> SpotPosition:
    position = user.get_spot_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.UserHasNoPositionInMarket,
            f"no spot position in market {market_index}",
            field="market_index",
        )
    return position


def _update_direction(order: Order, is_base: bool) -> SpotBalanceType:
    """``Order::get_spot_position_update_direction``: a buy deposits base and borrows quote."""
    buys = order.direction == PositionDirection.Long
    return SpotBalanceType.Deposit if buys == is_base else SpotBalanceType.Borrow


def _remove_closed_orders(user: User, market_index: int) -> None:
    user.orders = [o for o in user.orders if o.status == OrderStatus.Open]
    user.prune_spot_position(market_index)
    user.prune_spot_position(QUOTE_SPOT_MARKET_INDEX)


def pay_keeper_flat_reward_for_spot(
    user: User, filler: User | None, quote_market: SpotMarket, filler_reward: int, slot: int
) -> int:
    """Move the flat ``filler_reward`` from the user's quote balance to the filler's; the amount
    paid (0 without a filler)."""
    if filler is None:
        return 0
    update_spot_balances(
        filler_reward,
        SpotBalanceType.Deposit,
        quote_market,
        filler.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
        False,
    )
    _update_last_active_slot(filler, slot)
    filler.cumulative_spot_fees = cast_i64(filler.cumulative_spot_fees + filler_reward)
    update_spot_balances(
        filler_reward,
        SpotBalanceType.Borrow,
        quote_market,
        user.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
        False,
    )
    user.cumulative_spot_fees = cast_i64(user.cumulative_spot_fees - filler_reward)
    return filler_reward


def select_margin_type_for_swap(
    in_market: SpotMarket,
    out_market: SpotMarket,
    in_strict_price: StrictOraclePrice,
    out_strict_price: StrictOraclePrice,
    in_token_amount_before: int,
    out_token_amount_before: int,
    in_token_amount_after: int,
    out_token_amount_after: int,
    strict_margin_type: MarginRequirementType,
) -> tuple[MarginRequirementType, bool]:
    """``(requirement, risk increasing)`` for a swap: Maintenance if it raised the two balances'
    initial-weighted free-collateral contribution, else ``strict_margin_type``."""

    def contribution(market: SpotMarket, price: StrictOraclePrice, token_amount: int) -> int:
        token_value = get_strict_token_value(
            token_amount, market.decimals, price.min(), price.max()
        )
        if token_amount >= 0:
            weight = get_asset_weight(
                market, unsigned_abs(token_amount), price.current, MarginRequirementType.Initial
            )
        else:
            weight = get_liability_weight(
                market, unsigned_abs(token_amount), MarginRequirementType.Initial
            )
        return div_trunc(token_value * weight, SPOT_WEIGHT_PRECISION)

    before = contribution(in_market, in_strict_price, in_token_amount_before) + contribution(
        out_market, out_strict_price, out_token_amount_before
    )
    after = contribution(in_market, in_strict_price, in_token_amount_after) + contribution(
        out_market, out_strict_price, out_token_amount_after
    )
    if after > before:
        return MarginRequirementType.Maintenance, False
    return strict_margin_type, True


@dataclass(slots=True)
class SpotFillContext:
    """The accounts and readings one spot fill works with."""

    accounts: Accounts
    state: State
    base_market: SpotMarket
    quote_market: SpotMarket
    user: User
    user_key: UserKey
    user_stats: UserStats
    order: Order
    filler_key: UserKey
    filler: User | None
    filler_stats: UserStats | None
    oracle_price: int
    now: int
    slot: int
    oracle_stale_for_margin: bool
    jit_maker: MakerOrderRef | None
    makers: dict[UserKey, User] = field(default_factory=dict)
    maker_fills: dict[UserKey, int] = field(default_factory=dict)


def _cancel_with_flat_reward(
    ctx: SpotFillContext, user: User, order: Order, action: str, explanation: str
) -> None:
    reward = pay_keeper_flat_reward_for_spot(
        user,
        ctx.filler,
        ctx.quote_market,
        ctx.state.spot_fee_structure.flat_filler_fee,
        ctx.slot,
    )
    _cancel(
        ctx.accounts,
        user,
        order,
        action,
        explanation,
        filler=ctx.filler.key if ctx.filler is not None else None,
        filler_reward=reward,
    )


def get_spot_maker_orders_info(
    ctx: SpotFillContext, makers: Sequence[MakerOrderRef], taker_price: int | None
) -> tuple[list[MakerOrderInfo], int]:
    """Validate every named spot maker (the perp rules) and return ``(the makers' orders best
    price first, how many maker orders were cancelled)``."""
    accounts = ctx.accounts
    market = ctx.base_market
    taker_order = ctx.order
    maker_direction = taker_order.direction.opposite()
    initial_margin_ratio = get_spot_market_margin_ratio(market, MarginRequirementType.Initial)
    infos: list[MakerOrderInfo] = []
    seen: set[MakerOrderRef] = set()
    cancelled = 0
    for i, ref in enumerate(makers):
        where = f"makers[{i}]"
        maker, maker_order = validate_named_maker(
            accounts, ref, where, seen, ctx.user_key, taker_order, ctx.slot
        )
        maker_price = force_get_limit_price(
            maker_order, ctx.oracle_price, None, ctx.slot, market.order_tick_size
        )
        _update_last_active_slot(maker, ctx.slot)

        if limit_price_breaches_maker_oracle_price_bands(
            maker_price, maker_order.direction, ctx.oracle_price, initial_margin_ratio
        ):
            _cancel_with_flat_reward(
                ctx, maker, maker_order, "cancel", EXPLANATION_ORACLE_PRICE_BREACHED_LIMIT_PRICE
            )
            cancelled += 1
            continue
        if should_expire_order(maker_order, ctx.now):
            _cancel_with_flat_reward(ctx, maker, maker_order, "expire", EXPLANATION_ORDER_EXPIRED)
            cancelled += 1
            continue
        existing = _signed_token_amount(maker.get_spot_position(market.market_index), market)
        if should_cancel_reduce_only_order(maker_order, existing, market.order_step_size):
            raise ProtocolError(
                ErrorCode.ReduceOnlyOrderIncreasedRisk,
                "reduce-only maker order can no longer reduce its position",
                field=where,
            )
        if taker_price is None or not do_orders_cross(maker_direction, maker_price, taker_price):
            raise ProtocolError(
                ErrorCode.InvalidOrderFillPrice,
                f"maker price {maker_price} does not cross the taker's price {taker_price} "
                f"at slot {ctx.slot}",
                field=where,
            )
        ctx.makers[ref.user_key] = maker
        infos.append((ref.user_key, ref.order_id, maker_price))

    if maker_direction == PositionDirection.Short:
        infos.sort(key=lambda info: info[2])
    else:
        infos.sort(key=lambda info: -info[2])
    return infos, cancelled


def _cap_by_affordable(
    user: User,
    order: Order,
    base_market: SpotMarket,
    quote_market: SpotMarket,
    base_asset_amount: int,
    maker_price: int,
) -> int:
    max_base, max_quote = get_max_fill_amounts(user, order, base_market, quote_market, False)
    if max_quote is not None:
        implied_max_base = standardize_base_asset_amount(
            cast_u64(div_trunc(max_quote * base_market.get_precision(), maker_price)),
            base_market.order_step_size,
        )
        return min(base_asset_amount, implied_max_base)
    if max_base is not None:
        return min(base_asset_amount, max_base)
    return base_asset_amount


def fulfill_spot_order_with_match(
    ctx: SpotFillContext,
    maker_key: UserKey,
    maker_order_id: int,
    max_base_asset_amount: int | None,
) -> tuple[int, int]:
    """Match the taker order with one resting spot order at the maker's price; ``(base,
    quote)`` filled."""
    base_market, quote_market = ctx.base_market, ctx.quote_market
    taker, order = ctx.user, ctx.order
    maker = ctx.makers[maker_key]
    maker_order = find_open_order(maker, maker_order_id)
    if maker_order is None or not are_orders_same_market_but_different_sides(maker_order, order):
        return 0, 0

    market_index = order.market_index
    tick_size = base_market.order_tick_size
    step_size = base_market.order_step_size
    taker_price = get_limit_price(order, ctx.oracle_price, None, ctx.slot, tick_size)
    if taker_price is None:
        return 0, 0

    taker_position = _spot_position(taker, market_index)
    taker_base_asset_amount = get_standardized_base_asset_amount_unfilled(
        order, _signed_token_amount(taker_position, base_market), step_size
    )
    if max_base_asset_amount is not None:
        taker_base_asset_amount = min(taker_base_asset_amount, max_base_asset_amount)
    taker_direction = order.direction

    maker_price = force_get_limit_price(maker_order, ctx.oracle_price, None, ctx.slot, tick_size)
    maker_direction = maker_order.direction
    maker_position = _spot_position(maker, market_index)
    maker_base_asset_amount = get_standardized_base_asset_amount_unfilled(
        maker_order, _signed_token_amount(maker_position, base_market), step_size
    )

    if not do_orders_cross(maker_direction, maker_price, taker_price):
        return 0, 0

    taker_base_asset_amount = _cap_by_affordable(
        taker, order, base_market, quote_market, taker_base_asset_amount, maker_price
    )
    maker_base_asset_amount = _cap_by_affordable(
        maker, maker_order, base_market, quote_market, maker_base_asset_amount, maker_price
    )

    base_asset_amount, quote_asset_amount = calculate_fill_for_matched_orders(
        maker_base_asset_amount,
        maker_price,
        taker_base_asset_amount,
        base_market.decimals,
        maker_direction,
    )
    if base_asset_amount == 0:
        return 0, 0

    base_precision = base_market.get_precision()
    validate_fill_price(
        quote_asset_amount, base_asset_amount, base_precision, taker_direction, taker_price, True
    )
    validate_fill_price(
        quote_asset_amount, base_asset_amount, base_precision, maker_direction, maker_price, False
    )

    maker_stats = (
        None if maker.authority == taker.authority else ctx.accounts.user_stats(maker.authority)
    )
    filler_multiplier = (
        calculate_filler_multiplier_for_matched_orders(
            maker_price, maker_direction, ctx.oracle_price
        )
        if ctx.filler is not None
        else 0
    )
    fees = calculate_fee_for_fulfillment_with_match(
        ctx.user_stats,
        maker_stats,
        quote_asset_amount,
        ctx.state.spot_fee_structure,
        order.slot,
        ctx.slot,
        filler_multiplier,
        False,
        None,
        MarketType.Spot,
        base_market.fee_adjustment,
    )
    taker_fee, maker_rebate = fees.user_fee, fees.maker_rebate

    # the taker
    update_spot_balances_and_cumulative_deposits(
        base_asset_amount,
        _update_direction(order, is_base=True),
        base_market,
        taker_position,
        False,
    )
    if taker_direction == PositionDirection.Long:
        taker_quote_asset_amount_delta = quote_asset_amount + taker_fee
    else:
        taker_quote_asset_amount_delta = cast_u64(quote_asset_amount - taker_fee)
    update_spot_balances_and_cumulative_deposits(
        taker_quote_asset_amount_delta,
        _update_direction(order, is_base=False),
        quote_market,
        taker.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
        False,
        quote_asset_amount,
    )
    taker.cumulative_spot_fees = cast_i64(taker.cumulative_spot_fees - taker_fee)
    update_order_after_fill(order, base_asset_amount, quote_asset_amount)
    if update_open_bids_and_asks(order):
        decrease_spot_open_bids_and_asks(taker_position, taker_direction, base_asset_amount)
    update_taker_volume_30d(ctx.user_stats, quote_asset_amount, ctx.now)
    increment_total_fees(ctx.user_stats, taker_fee)

    # the maker
    update_spot_balances_and_cumulative_deposits(
        base_asset_amount,
        _update_direction(maker_order, is_base=True),
        base_market,
        maker_position,
        False,
    )
    if maker_direction == PositionDirection.Long:
        maker_quote_asset_amount_delta = cast_u64(quote_asset_amount - maker_rebate)
    else:
        maker_quote_asset_amount_delta = quote_asset_amount + maker_rebate
    update_spot_balances_and_cumulative_deposits(
        maker_quote_asset_amount_delta,
        _update_direction(maker_order, is_base=False),
        quote_market,
        maker.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
        False,
        quote_asset_amount,
    )
    maker.cumulative_spot_fees = cast_i64(maker.cumulative_spot_fees + maker_rebate)
    update_order_after_fill(maker_order, base_asset_amount, quote_asset_amount)
    if update_open_bids_and_asks(maker_order):
        decrease_spot_open_bids_and_asks(maker_position, maker_direction, base_asset_amount)
    maker_volume_stats = maker_stats if maker_stats is not None else ctx.user_stats
    update_maker_volume_30d(maker_volume_stats, quote_asset_amount, ctx.now)
    increment_total_rebate(maker_volume_stats, maker_rebate)

    # the filler
    if ctx.filler is not None and ctx.filler_stats is not None:
        if fees.filler_reward > 0:
            update_spot_balances(
                fees.filler_reward,
                SpotBalanceType.Deposit,
                quote_market,
                ctx.filler.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
                False,
            )
            ctx.filler.cumulative_spot_fees = cast_i64(
                ctx.filler.cumulative_spot_fees + fees.filler_reward
            )
        _update_last_active_slot(ctx.filler, ctx.slot)
        update_filler_volume(ctx.filler_stats, quote_asset_amount, ctx.now)

    # the market keeps the rest in its spot fee pool
    base_market.total_spot_fee += fees.fee_to_market
    update_spot_balances(
        fees.fee_to_market, SpotBalanceType.Deposit, quote_market, base_market.spot_fee_pool, False
    )

    fill_record_id = base_market.next_fill_record_id
    base_market.next_fill_record_id = fill_record_id + 1
    is_jit = ctx.jit_maker == MakerOrderRef(maker_key, maker_order_id)
    ctx.accounts.emit(
        FillRecord(
            fill_record_id=fill_record_id,
            market_type=MarketType.Spot,
            market_index=market_index,
            layer="jit" if is_jit else "dlob",
            taker=ctx.user_key,
            taker_order_id=order.order_id,
            taker_direction=taker_direction,
            maker=maker_key,
            maker_order_id=maker_order_id,
            base_asset_amount=base_asset_amount,
            quote_asset_amount=quote_asset_amount,
            fill_price=calculate_fill_price(quote_asset_amount, base_asset_amount, base_precision),
            taker_fee=taker_fee,
            maker_rebate=maker_rebate,
            filler_reward=fees.filler_reward,
            referrer_reward=0,
            fee_to_market=fees.fee_to_market,
            quote_asset_amount_surplus=0,
            oracle_price=ctx.oracle_price,
            filler=ctx.filler_key,
            slot=ctx.slot,
            ts=ctx.now,
        )
    )
    explanation = (
        EXPLANATION_ORDER_FILLED_WITH_MATCH_JIT
        if is_jit_maker(maker_order)
        else EXPLANATION_ORDER_FILLED_WITH_MATCH
    )
    _emit_order_action(ctx.accounts, taker, order, "fill", explanation)
    _emit_order_action(ctx.accounts, maker, maker_order, "fill", explanation)

    if get_base_asset_amount_unfilled(order) == 0:
        order.status = OrderStatus.Filled
        taker_position.open_orders -= 1
    if get_base_asset_amount_unfilled(maker_order) == 0:
        maker_order.status = OrderStatus.Filled
        maker_position.open_orders -= 1

    signed = base_asset_amount if maker_direction == PositionDirection.Long else -base_asset_amount
    ctx.maker_fills[maker_key] = ctx.maker_fills.get(maker_key, 0) + signed
    return base_asset_amount, quote_asset_amount


def _meets_spot_fill_margin(
    ctx: SpotFillContext, user: User, margin_type: MarginRequirementType, ratio_override: bool
) -> bool:
    context = MarginContext.standard(margin_type)
    if ratio_override:
        context = context.with_margin_ratio_override(MARGIN_PRECISION)
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, ctx.accounts, context
    ).meets_margin_requirement()


def _token_amounts(ctx: SpotFillContext, user: User) -> tuple[int, int]:
    """(base, quote) signed token amounts of ``user``."""
    base_market, quote_market = ctx.base_market, ctx.quote_market
    return (
        _signed_token_amount(user.get_spot_position(base_market.market_index), base_market),
        _signed_token_amount(user.get_spot_position(QUOTE_SPOT_MARKET_INDEX), quote_market),
    )


def _swap_margin_type(
    ctx: SpotFillContext,
    direction: PositionDirection,
    before: tuple[int, int],
    after: tuple[int, int],
) -> tuple[MarginRequirementType, bool]:
    base_market, quote_market = ctx.base_market, ctx.quote_market
    strict_base_price = StrictOraclePrice.new(
        ctx.oracle_price, base_market.historical_oracle_data.last_oracle_price_twap_5min, True
    )
    quote_price = ctx.accounts.oracle_price_data(quote_market.oracle).price
    strict_quote_price = StrictOraclePrice.new(
        quote_price, quote_market.historical_oracle_data.last_oracle_price_twap_5min, True
    )
    (base_before, quote_before), (base_after, quote_after) = before, after
    if direction == PositionDirection.Long:  # sells quote, buys base
        return select_margin_type_for_swap(
            quote_market,
            base_market,
            strict_quote_price,
            strict_base_price,
            quote_before,
            base_before,
            quote_after,
            base_after,
            MarginRequirementType.Fill,
        )
    return select_margin_type_for_swap(
        base_market,
        quote_market,
        strict_base_price,
        strict_quote_price,
        base_before,
        quote_before,
        base_after,
        quote_after,
        MarginRequirementType.Fill,
    )


def fulfill_spot_order(
    ctx: SpotFillContext,
    maker_orders_info: Sequence[MakerOrderInfo],
    max_base_asset_amount: int | None,
) -> tuple[int, int]:
    """Match the taker order with the makers, best first, then check every side's margin;
    ``(base, quote)`` filled."""
    order = ctx.order
    taker_before = _token_amounts(ctx, ctx.user)
    makers_before = {key: _token_amounts(ctx, ctx.makers[key]) for key, _, _ in maker_orders_info}
    limit_price = get_limit_price(
        order, ctx.oracle_price, None, ctx.slot, ctx.base_market.order_tick_size
    )
    methods = determine_spot_fulfillment_methods(order, maker_orders_info, limit_price)

    base_asset_amount = 0
    quote_asset_amount = 0
    for method in methods:
        if order.status != OrderStatus.Open:
            break
        remaining = None
        if max_base_asset_amount is not None:
            remaining = max_base_asset_amount - base_asset_amount
            if remaining <= 0:
                break
        fill_base, fill_quote = fulfill_spot_order_with_match(
            ctx, method.maker_key, method.maker_order_id, remaining
        )
        base_asset_amount += fill_base
        quote_asset_amount += fill_quote

    if (base_asset_amount > 0) != (quote_asset_amount > 0):
        raise ProtocolError(
            ErrorCode.DefaultError,
            f"invalid fill base = {base_asset_amount} quote = {quote_asset_amount}",
        )

    margin_type, taker_risk_increasing = _swap_margin_type(
        ctx, order.direction, taker_before, _token_amounts(ctx, ctx.user)
    )
    if not _meets_spot_fill_margin(
        ctx, ctx.user, margin_type, ctx.oracle_stale_for_margin and taker_risk_increasing
    ):
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"taker breached the {margin_type.name} margin requirement",
            field="taker",
        )

    maker_direction = order.direction.opposite()
    for maker_key in ctx.maker_fills:
        maker = ctx.makers[maker_key]
        margin_type, maker_risk_increasing = _swap_margin_type(
            ctx, maker_direction, makers_before[maker_key], _token_amounts(ctx, maker)
        )
        if ctx.oracle_stale_for_margin and maker_risk_increasing and taker_risk_increasing:
            raise ProtocolError(
                ErrorCode.InvalidOracle,
                "maker or taker must be reducing position if oracle stale for margin",
            )
        if not _meets_spot_fill_margin(
            ctx, maker, margin_type, ctx.oracle_stale_for_margin and maker_risk_increasing
        ):
            raise ProtocolError(
                ErrorCode.InsufficientCollateral,
                f"maker {maker_key[0].hex()[:16]}.. breached the {margin_type.name} margin "
                "requirement",
                field="makers",
            )
    return base_asset_amount, quote_asset_amount


def fill_spot_order(
    accounts: Accounts,
    user_key: UserKey,
    order_id: int,
    filler_key: UserKey,
    makers: Sequence[MakerOrderRef] = (),
    max_base_asset_amount: int | None = None,
    jit_maker: MakerOrderRef | None = None,
) -> FillResult:
    """Fill the user's spot order ``order_id`` against the named resting spot orders; see the
    module docstring. The caller checks that ``filler_key``'s authority signed."""
    state = accounts.state
    now = accounts.clock.unix_timestamp
    slot = accounts.clock.slot

    user = accounts.user(user_key)
    user_stats = accounts.user_stats(user.authority)
    order = find_open_order(user, order_id)
    if order is None:
        raise ProtocolError(
            ErrorCode.OrderDoesNotExist, f"no open order {order_id}", field="taker_order_id"
        )
    if order.market_type != MarketType.Spot:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a spot order", field="taker_order_id"
        )
    market_index = order.market_index
    base_market = accounts.spot_market(market_index)
    if base_market.status not in (MarketStatus.Active, MarketStatus.ReduceOnly):
        raise ProtocolError(
            ErrorCode.MarketFillOrderPaused,
            "market unavailable for fills",
            field="market_index",
        )
    if order.must_be_triggered() and not order.triggered():
        raise ProtocolError(
            ErrorCode.OrderMustBeTriggeredFirst,
            f"order {order_id} must be triggered first",
            field="taker_order_id",
        )
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "taker is bankrupt", field="taker")
    validate_user_not_being_liquidated(user, accounts)

    step_size = base_market.order_step_size
    if max_base_asset_amount is not None:
        unfilled = get_base_asset_amount_unfilled(order)
        if max_base_asset_amount == 0 or max_base_asset_amount > unfilled:
            raise ProtocolError(
                ErrorCode.ImpossibleFill,
                f"max_base_asset_amount {max_base_asset_amount} is not within the order's "
                f"unfilled {unfilled}",
                field="max_base_asset_amount",
            )
        if max_base_asset_amount % step_size != 0:
            raise ProtocolError(
                ErrorCode.InvalidOrderNotStepSizeMultiple,
                f"max_base_asset_amount {max_base_asset_amount} is not a multiple of the step "
                f"size {step_size}",
                field="max_base_asset_amount",
            )

    filler: User | None = None
    filler_stats: UserStats | None = None
    maker_keys = {ref.user_key for ref in makers}
    if filler_key != user_key and filler_key not in maker_keys:
        candidate = accounts.user(filler_key)
        if candidate.authority != user.authority:
            filler, filler_stats = candidate, accounts.user_stats(candidate.authority)

    quote_market = accounts.spot_market(QUOTE_SPOT_MARKET_INDEX)
    base_price_data = accounts.oracle_price_data(base_market.oracle)
    oracle_price = base_price_data.price
    ctx = SpotFillContext(
        accounts=accounts,
        state=state,
        base_market=base_market,
        quote_market=quote_market,
        user=user,
        user_key=user_key,
        user_stats=user_stats,
        order=order,
        filler_key=filler_key,
        filler=filler,
        filler_stats=filler_stats,
        oracle_price=oracle_price,
        now=now,
        slot=slot,
        oracle_stale_for_margin=(
            base_price_data.delay > state.oracle_guard_rails.validity.slots_before_stale_for_margin
        ),
        jit_maker=jit_maker,
    )
    taker_price = get_limit_price(order, oracle_price, None, slot, base_market.order_tick_size)
    if order.post_only and not should_expire_order(order, now):
        raise ProtocolError(
            ErrorCode.CantMatchTwoPostOnlys,
            f"order {order_id} is post-only: it makes, it never takes",
            field="taker_order_id",
        )
    maker_orders_info, cancelled = get_spot_maker_orders_info(ctx, makers, taker_price)

    for market in (quote_market, base_market):
        record = update_spot_market_cumulative_interest(
            market, accounts.oracle_price_data(market.oracle), now
        )
        if record is not None:
            accounts.emit(record)

    def finish(result: FillResult) -> FillResult:
        _remove_closed_orders(user, market_index)
        for maker in ctx.makers.values():
            _remove_closed_orders(maker, market_index)
        return result

    if should_expire_order(order, now):
        _cancel_with_flat_reward(ctx, user, order, "expire", EXPLANATION_ORDER_EXPIRED)
        return finish(FillResult(0, 0, cancelled + 1))
    if order.reduce_only and should_cancel_reduce_only_order(
        order, _signed_token_amount(user.get_spot_position(market_index), base_market), step_size
    ):
        raise ProtocolError(
            ErrorCode.ReduceOnlyOrderIncreasedRisk,
            f"reduce-only order {order_id} cannot reduce the position",
            field="taker_order_id",
        )

    base_asset_amount, quote_asset_amount = fulfill_spot_order(
        ctx, maker_orders_info, max_base_asset_amount
    )

    if base_asset_amount != 0:
        fill_price = calculate_fill_price(
            quote_asset_amount, base_asset_amount, base_market.get_precision()
        )
        oracle_twap_5min = base_market.historical_oracle_data.last_oracle_price_twap_5min
        max_divergence = max_oracle_twap_5min_percent_divergence(state.oracle_guard_rails)
        if is_oracle_too_divergent_with_twap_5min(oracle_price, oracle_twap_5min, max_divergence):
            raise ProtocolError(
                ErrorCode.PriceBandsBreached,
                f"oracle {oracle_price} too divergent from its 5-minute twap {oracle_twap_5min}",
            )
        validate_fill_price_within_price_bands(
            fill_price,
            oracle_price,
            oracle_twap_5min,
            get_spot_market_margin_ratio(base_market, MarginRequirementType.Initial),
            max_divergence,
            False,
        )

    if order.status == OrderStatus.Open:
        token_amount = _signed_token_amount(user.get_spot_position(market_index), base_market)
        if order.reduce_only and should_cancel_reduce_only_order(order, token_amount, step_size):
            _cancel_with_flat_reward(
                ctx, user, order, "cancel", EXPLANATION_REDUCE_ONLY_ORDER_INCREASED_POSITION
            )
            cancelled += 1
        else:
            max_base, max_quote = get_max_fill_amounts(
                user, order, base_market, quote_market, False
            )
            if max_base == 0 or max_quote == 0:
                _cancel_with_flat_reward(
                    ctx, user, order, "cancel", EXPLANATION_NO_BORROW_LIQUIDITY
                )
                cancelled += 1
    if base_asset_amount > 0 and order.status == OrderStatus.Open and order.immediate_or_cancel:
        _cancel(accounts, user, order, "cancel", EXPLANATION_IMMEDIATE_OR_CANCEL)
        cancelled += 1

    if base_market.max_token_deposits > 0:
        deposits = get_token_amount(
            base_market.deposit_balance, base_market, SpotBalanceType.Deposit
        )
        if deposits > base_market.max_token_deposits:
            raise ProtocolError(
                ErrorCode.MaxDeposit,
                f"deposits {deposits} exceed max_token_deposits {base_market.max_token_deposits}",
            )

    _update_last_active_slot(user, slot)
    return finish(FillResult(base_asset_amount, quote_asset_amount, cancelled))


# --- trigger orders ------------------------------------------------------------------------------
def trigger_spot_order(
    accounts: Accounts, user_key: UserKey, order_id: int, filler_key: UserKey
) -> None:
    """Fire the user's spot trigger order: as :func:`protocol.controller.fills.trigger_order`
    with the spot oracle, the spot auction (:func:`~protocol.math.auction.
    calculate_auction_prices` over 20 slots), the spot flat filler fee paid from the user's
    quote balance to the keeper's, and the risk check on the worst-case fill of its orders."""
    state = accounts.state
    slot = accounts.clock.slot
    user = accounts.user(user_key)
    order = find_triggerable_order(user, order_id)
    if order.market_type != MarketType.Spot:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a spot order", field="order_id"
        )
    validate_user_not_being_liquidated(user, accounts)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user is bankrupt", field="authority")

    spot_market = accounts.spot_market(order.market_index)
    oracle_price_data = accounts.oracle_price_data(spot_market.oracle)
    validity = oracle_validity(
        MarketType.Spot,
        spot_market.market_index,
        spot_market.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(spot_market),
        spot_market.oracle_source,
        0,
        0,
    )
    strict_oracle_price = StrictOraclePrice(
        oracle_price_data.price, spot_market.historical_oracle_data.last_oracle_price_twap_5min
    )
    if not is_oracle_valid_for_action(validity, DriftAction.TriggerOrder):
        raise ProtocolError(
            ErrorCode.InvalidOracle,
            f"oracle {validity} of spot market {spot_market.market_index} cannot trigger orders",
        )
    oracle_price = oracle_price_data.price
    if is_oracle_too_divergent_with_twap_5min(
        oracle_price,
        spot_market.historical_oracle_data.last_oracle_price_twap_5min,
        max_oracle_twap_5min_percent_divergence(state.oracle_guard_rails),
    ):
        raise ProtocolError(
            ErrorCode.OrderBreachesOraclePriceLimits, "oracle price vs twap too divergent"
        )
    trigger_price = unsigned_abs(oracle_price)
    if not order_satisfies_trigger_condition(order, trigger_price):
        raise ProtocolError(
            ErrorCode.OrderDidNotSatisfyTriggerCondition,
            f"oracle {trigger_price} does not satisfy {order.trigger_condition.name} "
            f"{order.trigger_price}",
            field="order_id",
        )

    position = _spot_position(user, spot_market.market_index)
    signed_token_amount = _signed_token_amount(position, spot_market)
    worst_case_simulation_before = get_worst_case_fill_simulation(
        position,
        spot_market,
        strict_oracle_price,
        signed_token_amount,
        MarginRequirementType.Initial,
    )
    update_trigger_order_params(
        order, oracle_price_data, slot, TRIGGER_ORDER_MIN_AUCTION_DURATION, None
    )
    if update_open_bids_and_asks(order):
        increase_spot_open_bids_and_asks(position, order.direction, order.base_asset_amount)

    filler = None if filler_key == user_key else accounts.user(filler_key)
    filler_reward = pay_keeper_flat_reward_for_spot(
        user,
        filler,
        accounts.spot_market(QUOTE_SPOT_MARKET_INDEX),
        state.spot_fee_structure.flat_filler_fee,
        slot,
    )
    emit_trigger_records(
        accounts, user, order, trigger_price, oracle_price, filler_key, filler_reward
    )

    worst_case_simulation_after = get_worst_case_fill_simulation(
        position,
        spot_market,
        strict_oracle_price,
        signed_token_amount,
        MarginRequirementType.Initial,
    )
    if (
        worst_case_simulation_before.risk_increasing(worst_case_simulation_after)
        and not order.reduce_only
        and not meets_initial_margin_requirement(user, accounts)
    ):
        _cancel(accounts, user, order, "cancel", EXPLANATION_INSUFFICIENT_FREE_COLLATERAL)
    _update_last_active_slot(user, slot)
