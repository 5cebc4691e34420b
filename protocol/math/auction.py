"""Order auctions: their prices over time, and the params the program derives for them.

Mirrors the program's ``math/auction.rs``, the auction-param logic of ``state/order_params.rs``
(``OrderParams::update_perp_auction_params`` and the ``derive_*`` / ``get_perp_baseline_*``
helpers) and ``Order::get_limit_price`` from ``state/user.rs``.

Units: prices PRICE_PRECISION (1e6). A *fixed* auction (market, trigger and plain limit
orders) stores absolute start/end prices; an *oracle-offset* auction (oracle orders, limit
orders with an ``oracle_price_offset``, oracle trigger-market orders) stores signed offsets
from the oracle price. ``auction_duration`` is in slots (a ``u8``: 0..255).

Auction timing: the price moves linearly from start to end over ``auction_duration`` slots
(``slots_elapsed * delta / duration``, truncating toward zero as Rust does), is the end price
from ``slots_elapsed == duration`` on, and the auction is *complete* only strictly after that
(``slots_elapsed > duration``), so the end price is offered for exactly one slot as an auction
price before the order becomes a plain limit order.

Derived auctions start near where the AMM has recently been trading relative to the oracle
(mark/bid/ask TWAPs against the oracle TWAPs) and end a volatility/spread buffer beyond it;
the duration grows with the price distance covered (``get_auction_duration``). Params are
frozen, so ``update_perp_auction_params`` returns new ``OrderParams`` (``dataclasses.replace``)
instead of mutating; whether it "sanitized" anything is ``new != old``.

Deviations: the program skips sanitizing market-order auctions on ``Prelaunch`` oracles; this
model has no prelaunch oracle source, so it always sanitizes. Protected-maker price offsets in
``get_limit_price`` are not modelled (no protected-maker config).
"""

from __future__ import annotations

from dataclasses import replace

from protocol.constants import (
    AUCTION_DERIVE_PRICE_FRACTION,
    MAX_PREDICTION_MARKET_PRICE,
    ONE_HUNDRED_THOUSAND_QUOTE,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.orders import last_ask_premium, last_bid_discount, standardize_price
from protocol.numeric import (
    cast_i32,
    cast_i64,
    cast_u64,
    clamp,
    div_trunc,
    safe_div_ceil,
    unsigned_abs,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import PerpMarket
from protocol.state.user import Order
from protocol.types import (
    ContractTier,
    ContractType,
    MarketType,
    OrderBitFlag,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

# 25 bps of the oracle price: how much more passive than the baseline a derived
# market/oracle auction starts (the program's PERCENTAGE_PRECISION_I64 / 400).
MARKET_ORDER_AUCTION_START_BUFFER = PERCENTAGE_PRECISION // 400


def is_as_safe_as_contract(tier: ContractTier, other: ContractTier) -> bool:
    """``ContractTier::is_as_safe_as_contract``: tier A is the safest."""
    return tier <= other


def _is_prediction_market(perp_market: PerpMarket) -> bool:
    return perp_market.contract_type == ContractType.Prediction


def _elapsed(slot: int, order_slot: int) -> int:
    # u64 safe_sub in the program: an order from the future is a math error, not a price.
    if slot < order_slot:
        raise MathError(f"slot {slot} is before the order's slot {order_slot}")
    return slot - order_slot


# --- auction timing and price -------------------------------------------------------------------
def is_auction_complete(order_slot: int, auction_duration: int, slot: int) -> bool:
    """No auction, or strictly more than ``auction_duration`` slots since the order's slot."""
    if auction_duration == 0:
        return True
    return _elapsed(slot, order_slot) > auction_duration


def has_auction_price(order: Order, order_slot: int, auction_duration: int, slot: int) -> bool:
    """``Order::has_auction_price``: the auction is running and has a non-zero start or end."""
    auction_complete = is_auction_complete(order_slot, auction_duration, slot)
    has_auction_prices = order.auction_start_price != 0 or order.auction_end_price != 0
    return not auction_complete and has_auction_prices


def calculate_auction_prices(
    oracle_price_data: OraclePriceData, direction: PositionDirection, limit_price: int
) -> tuple[int, int]:
    """Default (start, end) of a fixed auction from the oracle and an optional limit price.

    Without a limit price: from the oracle to 0.5% (1/AUCTION_DERIVE_PRICE_FRACTION) beyond it.
    A limit better than the oracle starts 0.5% better than the more passive of the two and ends
    at the limit; a limit worse than the oracle starts at the oracle and ends at the limit,
    capped 0.5% beyond the oracle.
    """
    oracle_price = oracle_price_data.price
    limit_price = cast_i64(limit_price)
    fraction = AUCTION_DERIVE_PRICE_FRACTION
    if limit_price > 0:
        if direction == PositionDirection.Long:
            if limit_price < oracle_price:
                limit_derive_start_price = limit_price - div_trunc(limit_price, fraction)
                oracle_derive_start_price = oracle_price - div_trunc(oracle_price, fraction)
                return min(limit_derive_start_price, oracle_derive_start_price), limit_price
            oracle_derive_end_price = oracle_price + div_trunc(oracle_price, fraction)
            return oracle_price, min(limit_price, oracle_derive_end_price)
        if limit_price > oracle_price:
            limit_derive_start_price = limit_price + div_trunc(limit_price, fraction)
            oracle_derive_start_price = oracle_price + div_trunc(oracle_price, fraction)
            return max(limit_derive_start_price, oracle_derive_start_price), limit_price
        oracle_derive_end_price = oracle_price - div_trunc(oracle_price, fraction)
        return oracle_price, max(limit_price, oracle_derive_end_price)

    if direction == PositionDirection.Long:
        return oracle_price, oracle_price + div_trunc(oracle_price, fraction)
    return oracle_price, oracle_price - div_trunc(oracle_price, fraction)


def calculate_auction_price(
    order: Order,
    slot: int,
    tick_size: int,
    valid_oracle_price: int | None,
    is_prediction_market: bool = False,
) -> int:
    """The order's auction price at ``slot`` (fixed or oracle-offset, by order type)."""
    if order.order_type == OrderType.TriggerMarket and (
        order.bit_flags & OrderBitFlag.OracleTriggerMarket
    ):
        return calculate_auction_price_for_oracle_offset_auction(
            order, slot, tick_size, valid_oracle_price, is_prediction_market
        )
    if order.order_type in (OrderType.Market, OrderType.TriggerMarket, OrderType.TriggerLimit):
        return calculate_auction_price_for_fixed_auction(order, slot, tick_size)
    if order.order_type == OrderType.Limit and not order.has_oracle_price_offset():
        return calculate_auction_price_for_fixed_auction(order, slot, tick_size)
    return calculate_auction_price_for_oracle_offset_auction(
        order, slot, tick_size, valid_oracle_price, is_prediction_market
    )


def calculate_auction_price_for_fixed_auction(order: Order, slot: int, tick_size: int) -> int:
    slots_elapsed = _elapsed(slot, order.slot)
    delta_numerator = min(slots_elapsed, order.auction_duration)
    delta_denominator = order.auction_duration
    auction_start_price = cast_u64(order.auction_start_price)
    auction_end_price = cast_u64(order.auction_end_price)

    if delta_denominator == 0:
        return standardize_price(auction_end_price, tick_size, order.direction)

    # u64 subtraction in the program: an auction moving the wrong way is a math error.
    if order.direction == PositionDirection.Long:
        span = auction_end_price - auction_start_price
    else:
        span = auction_start_price - auction_end_price
    if span < 0:
        raise MathError("auction moves against the order's direction")
    price_delta = div_trunc(span * delta_numerator, delta_denominator)

    if order.direction == PositionDirection.Long:
        price = auction_start_price + price_delta
    else:
        price = auction_start_price - price_delta
    return standardize_price(price, tick_size, order.direction)


def calculate_auction_price_for_oracle_offset_auction(
    order: Order,
    slot: int,
    tick_size: int,
    valid_oracle_price: int | None,
    is_prediction_market: bool = False,
) -> int:
    if valid_oracle_price is None:
        raise ProtocolError(
            ErrorCode.OracleNotFound, "no valid oracle price for an oracle-offset auction"
        )
    oracle_price = valid_oracle_price
    slots_elapsed = _elapsed(slot, order.slot)
    delta_numerator = min(slots_elapsed, order.auction_duration)
    delta_denominator = order.auction_duration
    start_offset = order.auction_start_price
    end_offset = order.auction_end_price

    if delta_denominator == 0:
        price_offset = end_offset
    elif order.direction == PositionDirection.Long:
        delta = div_trunc((end_offset - start_offset) * delta_numerator, delta_denominator)
        price_offset = start_offset + delta
    else:
        delta = div_trunc((start_offset - end_offset) * delta_numerator, delta_denominator)
        price_offset = start_offset - delta

    price = cast_u64(max(oracle_price + price_offset, tick_size))
    if is_prediction_market:
        price = min(price, MAX_PREDICTION_MARKET_PRICE)
    return standardize_price(price, tick_size, order.direction)


# --- limit price ----------------------------------------------------------------------------
def get_limit_price(
    order: Order,
    valid_oracle_price: int | None,
    fallback_price: int | None,
    slot: int,
    tick_size: int,
    is_prediction_market: bool = False,
) -> int | None:
    """``Order::get_limit_price``: the price the order may trade at in ``slot``.

    During its auction: the auction price. Otherwise an oracle-offset order floats at
    ``oracle + offset`` (at least one tick); a fixed order uses its price; an order without a
    price (a market order after its auction) uses ``fallback_price`` if one is given, else has
    no limit price (``None``).
    """
    if has_auction_price(order, order.slot, order.auction_duration, slot):
        return calculate_auction_price(
            order, slot, tick_size, valid_oracle_price, is_prediction_market
        )
    if order.has_oracle_price_offset():
        if valid_oracle_price is None:
            raise ProtocolError(
                ErrorCode.OracleNotFound, "no valid oracle price for an oracle-offset order"
            )
        limit_price = cast_u64(max(valid_oracle_price + order.oracle_price_offset, tick_size))
        if is_prediction_market:
            limit_price = min(limit_price, MAX_PREDICTION_MARKET_PRICE)
        return standardize_price(limit_price, tick_size, order.direction)
    if order.price == 0:
        if fallback_price is None:
            return None
        return standardize_price(fallback_price, tick_size, order.direction)
    return order.price


def force_get_limit_price(
    order: Order,
    valid_oracle_price: int | None,
    fallback_price: int | None,
    slot: int,
    tick_size: int,
    is_prediction_market: bool = False,
) -> int:
    """``get_limit_price`` that must produce a price (``UnableToGetLimitPrice`` otherwise)."""
    price = get_limit_price(
        order, valid_oracle_price, fallback_price, slot, tick_size, is_prediction_market
    )
    if price is None:
        raise ProtocolError(
            ErrorCode.UnableToGetLimitPrice, f"order {order.order_id} has no limit price"
        )
    return price


def has_limit_price(order: Order, slot: int) -> bool:
    """``Order::has_limit_price``."""
    return (
        order.price > 0
        or order.has_oracle_price_offset()
        or not is_auction_complete(order.slot, order.auction_duration, slot)
    )


# --- derived auction params --------------------------------------------------------------------
def get_auction_duration(price_diff: int, price: int, contract_tier: ContractTier) -> int:
    """Slots for an auction covering ``price_diff`` at ``price``: 100 slots per 1% of price on
    tier A/B markets, 60 on riskier tiers, rounded up, clamped to 1..180."""
    if price == 0:
        raise MathError("auction duration at a zero price")
    percent_diff = div_trunc(price_diff * PERCENTAGE_PRECISION, price)
    slots_per_pct = 100 if is_as_safe_as_contract(contract_tier, ContractTier.B) else 60
    return clamp(safe_div_ceil(percent_diff * slots_per_pct, PERCENTAGE_PRECISION // 100), 1, 180)


def get_auction_end_min_max_divisors(contract_tier: ContractTier) -> tuple[int, int]:
    """``PerpMarket::get_auction_end_min_max_divisors``: the end buffer is clamped to
    ``[oracle_twap / min_divisor, oracle_twap / max_divisor]``."""
    return {
        ContractTier.A: (1000, 50),  # 10 bps .. 2%
        ContractTier.B: (1000, 20),  # 10 bps .. 5%
        ContractTier.C: (500, 20),  # 20 bps .. 5%
        ContractTier.Speculative: (100, 10),  # 1% .. 10%
        ContractTier.HighlySpeculative: (50, 5),  # 2% .. 20%
        ContractTier.Isolated: (50, 5),  # 2% .. 20%
    }[contract_tier]


def get_perp_baseline_start_price_offset(
    perp_market: PerpMarket, direction: PositionDirection
) -> int:
    """Where a derived auction starts, as an offset from the oracle price.

    Normally the mark-vs-oracle premium (5-minute, or blended with the slow bid/ask TWAP and a
    tenth of the AMM's spread when the two agree within 0.5%). When the mark and oracle TWAPs
    were updated a minute or more apart, or 24h volume is at most $100k, the TWAPs are not
    trusted and a fixed fraction of the bid (long) / ask (short) TWAP is used instead.
    """
    amm = perp_market.amm
    oracle_data = amm.historical_oracle_data
    if (
        abs(oracle_data.last_oracle_price_twap_ts - amm.last_mark_price_twap_ts) >= 60
        or amm.volume_24h <= ONE_HUNDRED_THOUSAND_QUOTE
    ):
        price_divisor = (
            500 if is_as_safe_as_contract(perp_market.contract_tier, ContractTier.B) else 100
        )
        if direction == PositionDirection.Long:
            return div_trunc(amm.last_bid_price_twap, price_divisor)
        return -div_trunc(amm.last_ask_price_twap, price_divisor)

    mark_twap_slow = (
        amm.last_bid_price_twap if direction == PositionDirection.Long else amm.last_ask_price_twap
    )
    offset_fast = amm.last_mark_price_twap_5min - oracle_data.last_oracle_price_twap_5min
    offset_slow = mark_twap_slow - oracle_data.last_oracle_price_twap

    if abs(offset_slow - offset_fast) <= div_trunc(amm.last_mark_price_twap_5min, 200):
        frac_of_long_spread_in_price = div_trunc(
            amm.long_spread * mark_twap_slow, PRICE_PRECISION * 10
        )
        frac_of_short_spread_in_price = div_trunc(
            amm.short_spread * mark_twap_slow, PRICE_PRECISION * 10
        )
        if direction == PositionDirection.Long:
            return min(
                offset_slow + frac_of_long_spread_in_price,
                offset_fast - frac_of_short_spread_in_price,
            )
        return max(
            offset_slow - frac_of_short_spread_in_price,
            offset_fast + frac_of_long_spread_in_price,
        )
    return offset_fast


def get_perp_baseline_start_end_price_offset(
    perp_market: PerpMarket, direction: PositionDirection, end_buffer_scalar: int
) -> tuple[int, int]:
    """(start, end) offsets from the oracle for a derived auction.

    The end is the bid (short) / ask (long) TWAP pushed out by a buffer: the larger of the mark
    and oracle standard deviations and the AMM's spread on that side, times
    ``end_buffer_scalar``, clamped by contract tier; never more passive than the start.
    """
    amm = perp_market.amm
    oracle_twap_signed = amm.historical_oracle_data.last_oracle_price_twap
    oracle_twap = unsigned_abs(oracle_twap_signed)
    baseline_start_price_offset = get_perp_baseline_start_price_offset(perp_market, direction)
    min_divisor, max_divisor = get_auction_end_min_max_divisors(perp_market.contract_tier)

    amm_spread_side_pct = (
        amm.short_spread if direction == PositionDirection.Short else amm.long_spread
    )
    baseline_end_price_buffer = max(
        amm.mark_std,
        amm.oracle_std,
        div_trunc(amm_spread_side_pct * oracle_twap, PERCENTAGE_PRECISION),
    )
    if end_buffer_scalar >= 1:
        baseline_end_price_buffer *= end_buffer_scalar
    baseline_end_price_buffer = clamp(
        baseline_end_price_buffer,
        div_trunc(oracle_twap, min_divisor),
        div_trunc(oracle_twap, max_divisor),
    )

    if direction == PositionDirection.Short:
        bid_minus_buffer = amm.last_bid_price_twap - baseline_end_price_buffer
        if bid_minus_buffer < 0:  # u64 subtraction in the program
            raise MathError("auction end buffer exceeds the bid TWAP")
        auction_end_price = cast_i64(bid_minus_buffer) - oracle_twap_signed
        return baseline_start_price_offset, min(auction_end_price, baseline_start_price_offset)
    auction_end_price = (
        cast_i64(amm.last_ask_price_twap + baseline_end_price_buffer) - oracle_twap_signed
    )
    return baseline_start_price_offset, max(auction_end_price, baseline_start_price_offset)


def _apply_start_buffer(
    start: int, end: int, direction: PositionDirection, oracle_price: int, start_buffer: int
) -> tuple[int, int]:
    """Move the start ``start_buffer`` (PERCENTAGE_PRECISION of the oracle) more passive; a
    negative buffer makes the auction more aggressive and then moves the end too."""
    if start_buffer == 0:
        return start, end
    start_buffer_price = div_trunc(oracle_price * start_buffer, PERCENTAGE_PRECISION)
    if direction == PositionDirection.Long:
        start -= start_buffer_price
        if start_buffer < 0:
            end -= start_buffer_price
    else:
        start += start_buffer_price
        if start_buffer < 0:
            end += start_buffer_price
    return start, end


def derive_market_order_auction_params(
    perp_market: PerpMarket,
    direction: PositionDirection,
    oracle_price: int,
    limit_price: int,
    start_buffer: int,
) -> tuple[int, int, int]:
    """(start price, end price, duration) of a market order's auction, in absolute prices.

    The baseline offsets from the oracle (end buffer doubled when the order has a limit price),
    the start buffer, the prediction-market $1 cap, then never beyond the limit price.
    """
    end_buffer_scalar = 2 if limit_price != 0 else 1
    start_offset, end_offset = get_perp_baseline_start_end_price_offset(
        perp_market, direction, end_buffer_scalar
    )
    auction_start_price = oracle_price + start_offset
    auction_end_price = oracle_price + end_offset
    auction_start_price, auction_end_price = _apply_start_buffer(
        auction_start_price, auction_end_price, direction, oracle_price, start_buffer
    )
    if _is_prediction_market(perp_market):
        auction_start_price = min(auction_start_price, MAX_PREDICTION_MARKET_PRICE)
        auction_end_price = min(auction_end_price, MAX_PREDICTION_MARKET_PRICE)
    if limit_price != 0:
        if direction == PositionDirection.Long:
            auction_start_price = min(auction_start_price, limit_price)
            auction_end_price = min(auction_end_price, limit_price)
        else:
            auction_start_price = max(auction_start_price, limit_price)
            auction_end_price = max(auction_end_price, limit_price)
    auction_duration = get_auction_duration(
        unsigned_abs(auction_end_price - auction_start_price),
        unsigned_abs(oracle_price),
        perp_market.contract_tier,
    )
    return auction_start_price, auction_end_price, auction_duration


def derive_oracle_order_auction_params(
    perp_market: PerpMarket,
    direction: PositionDirection,
    oracle_price: int,
    oracle_price_offset: int | None,
    start_buffer: int,
) -> tuple[int, int, int]:
    """(start offset, end offset, duration) of an oracle order's auction.

    With an ``oracle_price_offset`` the auction ends at it and starts at the baseline start
    (no more aggressive than the offset); without one, the baseline start and end.
    """
    if oracle_price_offset is not None:
        start = get_perp_baseline_start_price_offset(perp_market, direction)
        if direction == PositionDirection.Long:
            start = min(start, oracle_price_offset)
        else:
            start = max(start, oracle_price_offset)
        end = oracle_price_offset
    else:
        start, end = get_perp_baseline_start_end_price_offset(perp_market, direction, 1)
    start, end = _apply_start_buffer(start, end, direction, oracle_price, start_buffer)
    auction_duration = get_auction_duration(
        unsigned_abs(end - start), unsigned_abs(oracle_price), perp_market.contract_tier
    )
    return start, end, auction_duration


def calculate_auction_params_for_trigger_order(
    order: Order,
    oracle_price_data: OraclePriceData,
    min_auction_duration: int,
    perp_market: PerpMarket | None,
) -> tuple[int, int, int]:
    """(duration, start, end) for a trigger order's auction when it fires.

    Perp: the derived market (trigger-limit) or oracle (trigger-market) auction with a crossing
    start buffer (-5 bps on tier A/B, -35 bps otherwise), at least ``min_auction_duration``
    long. Spot: ``calculate_auction_prices`` over ``min_auction_duration``.
    """
    if perp_market is not None:
        auction_start_buffer = (
            -500 if is_as_safe_as_contract(perp_market.contract_tier, ContractTier.B) else -3_500
        )
        if order.order_type == OrderType.TriggerMarket:
            start, end, derived_duration = derive_oracle_order_auction_params(
                perp_market, order.direction, oracle_price_data.price, None, auction_start_buffer
            )
        else:
            start, end, derived_duration = derive_market_order_auction_params(
                perp_market,
                order.direction,
                oracle_price_data.price,
                order.price,
                auction_start_buffer,
            )
        return max(min_auction_duration, derived_duration), start, end

    start, end = calculate_auction_prices(oracle_price_data, order.direction, order.price)
    return min_auction_duration, start, end


# --- OrderParams auction sanitizing -------------------------------------------------------------
def has_valid_auction_params(params: OrderParams) -> bool:
    """``OrderParams::has_valid_auction_params``: all three given and moving the right way, or
    a limit order with none."""
    if (
        params.auction_duration is not None
        and params.auction_start_price is not None
        and params.auction_end_price is not None
    ):
        if params.direction == PositionDirection.Long:
            return params.auction_start_price <= params.auction_end_price
        return params.auction_start_price >= params.auction_end_price
    return (
        params.order_type == OrderType.Limit
        and params.auction_duration is None
        and params.auction_start_price is None
        and params.auction_end_price is None
    )


def get_auction_start_price_offset(params: OrderParams, oracle_price: int) -> int:
    if params.order_type == OrderType.Oracle:
        return params.auction_start_price or 0
    if params.auction_start_price is not None:
        return params.auction_start_price - oracle_price
    return 0


def get_auction_end_price_offset(params: OrderParams, oracle_price: int) -> int:
    if params.order_type == OrderType.Oracle:
        return params.auction_end_price or 0
    if params.auction_end_price is not None:
        return params.auction_end_price - oracle_price
    return 0


def _updated_auction_duration(
    params: OrderParams, perp_market: PerpMarket, oracle_price: int, is_signed_msg: bool
) -> int | None:
    """The program's closing step: lengthen the duration to what the final prices need.

    A signed-message order keeps its own duration unless it is off by more than 10 slots.
    """
    if params.auction_start_price is None or params.auction_end_price is None:
        raise MathError("auction prices missing after sanitizing")
    before = params.auction_duration or 0
    new_auction_duration = get_auction_duration(
        unsigned_abs(params.auction_end_price - params.auction_start_price),
        unsigned_abs(oracle_price),
        perp_market.contract_tier,
    )
    if abs(before - new_auction_duration) > 10 or not is_signed_msg:
        return max(before, new_auction_duration)
    return params.auction_duration


def update_perp_auction_params_limit_orders(
    params: OrderParams, perp_market: PerpMarket, oracle_price: int, is_signed_msg: bool
) -> OrderParams:
    """Give a crossing (taker) limit order an auction, or tighten the one it asked for.

    Post-only orders and limit orders without a price or offset are left alone. With no
    auction, an order that crosses the AMM's estimated ask (bid) gets an auction from the
    baseline start (no worse than that quote) to its limit. With an auction, a start more
    aggressive than the baseline is moved to the baseline (signed messages get 0.1% slack), and
    a missing end becomes the limit. Start and end never pass the limit.
    """
    if params.post_only != PostOnlyParam.None_:
        return params

    oracle_price_offset = params.oracle_price_offset or 0
    is_oracle_offset_oracle = oracle_price_offset != 0
    if not is_oracle_offset_oracle and params.price == 0:
        return params

    auction_start_price_offset = get_perp_baseline_start_price_offset(perp_market, params.direction)
    new_auction_start_price = oracle_price + auction_start_price_offset
    if _is_prediction_market(perp_market):
        new_auction_start_price = min(new_auction_start_price, MAX_PREDICTION_MARKET_PRICE)

    start = params.auction_start_price
    end = params.auction_end_price

    if (params.auction_duration or 0) == 0:
        if params.direction == PositionDirection.Long:
            est_ask = cast_u64(oracle_price + last_ask_premium(perp_market.amm))
            if is_oracle_offset_oracle:
                crosses = oracle_price_offset > est_ask - oracle_price
            else:
                crosses = params.price > est_ask
            if not crosses:
                return params
            crossing_start = min(new_auction_start_price, est_ask)
        else:
            est_bid = cast_u64(oracle_price - last_bid_discount(perp_market.amm))
            if is_oracle_offset_oracle:
                crosses = oracle_price_offset < est_bid - oracle_price
            else:
                crosses = params.price < est_bid
            if not crosses:
                return params
            crossing_start = max(new_auction_start_price, est_bid)
        if is_oracle_offset_oracle:
            start = crossing_start - oracle_price
            end = oracle_price_offset
        else:
            start = crossing_start
            end = params.price
    else:
        if start is not None:
            slack = div_trunc(abs(start), 1000) if is_signed_msg else 0
            improves_long = (
                params.direction == PositionDirection.Long
                and new_auction_start_price < start - slack
            )
            improves_short = (
                params.direction == PositionDirection.Short
                and new_auction_start_price > start + slack
            )
            if improves_long or improves_short:
                start = (
                    auction_start_price_offset
                    if is_oracle_offset_oracle
                    else new_auction_start_price
                )
        else:
            start = (
                auction_start_price_offset if is_oracle_offset_oracle else new_auction_start_price
            )
        if end is None:
            end = oracle_price_offset if is_oracle_offset_oracle else params.price

    worst_price = oracle_price_offset if is_oracle_offset_oracle else params.price
    if params.direction == PositionDirection.Long:
        start = None if start is None else min(start, worst_price)
        end = None if end is None else min(end, worst_price)
    else:
        start = None if start is None else max(start, worst_price)
        end = None if end is None else max(end, worst_price)

    updated = replace(params, auction_start_price=start, auction_end_price=end)
    return replace(
        updated,
        auction_duration=_updated_auction_duration(
            updated, perp_market, oracle_price, is_signed_msg
        ),
    )


def update_perp_auction_params_market_and_oracle_orders(
    params: OrderParams,
    perp_market: PerpMarket,
    oracle_price: int,
    is_market_order: bool,
    is_signed_msg: bool,
) -> OrderParams:
    """Derive a market/oracle order's auction if any param is missing; otherwise pull a start
    or end more aggressive than the baseline (end buffer doubled) back to it and lengthen the
    duration to fit. Tier C-and-riskier markets and signed messages get 0.1% of the oracle as
    slack before a price is pulled back.
    """
    if (
        params.auction_duration is None
        or params.auction_start_price is None
        or params.auction_end_price is None
    ):
        if is_market_order:
            derived = derive_market_order_auction_params(
                perp_market,
                params.direction,
                oracle_price,
                params.price,
                MARKET_ORDER_AUCTION_START_BUFFER,
            )
        else:
            derived = derive_oracle_order_auction_params(
                perp_market,
                params.direction,
                oracle_price,
                params.oracle_price_offset,
                MARKET_ORDER_AUCTION_START_BUFFER,
            )
        return replace(
            params,
            auction_start_price=derived[0],
            auction_end_price=derived[1],
            auction_duration=derived[2],
        )

    start = params.auction_start_price
    end = params.auction_end_price
    new_start_offset, new_end_offset = get_perp_baseline_start_end_price_offset(
        perp_market, params.direction, 2
    )
    current_start_offset = get_auction_start_price_offset(params, oracle_price)
    current_end_offset = get_auction_end_price_offset(params, oracle_price)
    is_tail_mkt = not is_as_safe_as_contract(perp_market.contract_tier, ContractTier.B)
    slack = div_trunc(abs(oracle_price), 1000) if (is_signed_msg or is_tail_mkt) else 0
    # oracle orders store offsets; market orders store absolute prices
    base = 0 if not is_market_order else oracle_price

    if params.direction == PositionDirection.Long:
        if current_start_offset > new_start_offset + slack:
            start = new_start_offset + base
        if current_end_offset > new_end_offset + slack:
            end = new_end_offset + base
    else:
        if current_start_offset < new_start_offset - slack:
            start = new_start_offset + base
        if current_end_offset < new_end_offset - slack:
            end = new_end_offset + base

    updated = replace(params, auction_start_price=start, auction_end_price=end)
    return replace(
        updated,
        auction_duration=_updated_auction_duration(
            updated, perp_market, oracle_price, is_signed_msg
        ),
    )


def update_perp_auction_params(
    params: OrderParams, perp_market: PerpMarket, oracle_price: int, is_signed_msg: bool = False
) -> OrderParams:
    """``OrderParams::update_perp_auction_params``: the params a perp order is placed with.

    Limit orders may gain or have tightened an auction; market and oracle orders get derived
    auction params when any is missing and sanitized ones otherwise; trigger orders are left
    alone (their auction is set when they trigger).
    """
    if params.order_type == OrderType.Limit:
        return update_perp_auction_params_limit_orders(
            params, perp_market, oracle_price, is_signed_msg
        )
    if params.order_type in (OrderType.Market, OrderType.Oracle):
        return update_perp_auction_params_market_and_oracle_orders(
            params,
            perp_market,
            oracle_price,
            params.order_type == OrderType.Market,
            is_signed_msg,
        )
    return params


def get_close_perp_params(
    market: PerpMarket, direction_to_close: PositionDirection, base_asset_amount: int
) -> OrderParams:
    """``OrderParams::get_close_perp_params``: a reduce-only oracle order with an 80-slot
    auction over the baseline offsets, ending (and resting) at the baseline end offset."""
    start, end = get_perp_baseline_start_end_price_offset(market, direction_to_close, 1)
    return OrderParams(
        order_type=OrderType.Oracle,
        market_type=MarketType.Perp,
        direction=direction_to_close,
        base_asset_amount=base_asset_amount,
        market_index=market.market_index,
        reduce_only=True,
        auction_start_price=start,
        auction_end_price=end,
        auction_duration=80,
        oracle_price_offset=cast_i32(end),
    )
