"""The perp fill engine, trigger orders and signed-intent placement (the program's fill path in
``controller/orders.rs``, ``state/fill_mode.rs`` and the signed-message placement of
``instructions/keeper.rs``).

Units: base BASE_PRECISION; quote, fees and rewards QUOTE_PRECISION; prices PRICE_PRECISION;
``now`` unix seconds, ``slot`` slots.

The program as a *verifier*. A filler proposes a match it found off-chain: a taker order and
the maker orders (:class:`MakerOrderRef`) to cross it with. Everything that settles is
re-derived here from the users' own orders: the taker's limit (its auction price at this slot),
each maker's price at this slot, sizes, sides, flags and margin. The filler may add only an
upper bound on the base to fill. Where the program silently skips an unsuitable maker, this
engine rejects the whole transaction with a specific code, so a filler never has a fill
settled on terms it did not expect:

* the same maker order named twice: ``InvalidMaker``; a maker that is the taker's own user
  account: ``MakerCantFulfillOwnOrder``; no such user: ``MakerNotFound``; no such open order:
  ``MakerOrderNotFound``; another market or the taker's side, or a maker being liquidated:
  ``InvalidMaker``; an untriggered trigger order: ``OrderMustBeTriggeredFirst``; an order that
  is not resting (a market order, or a limit order still in its auction and not post-only, or a
  resting limit order younger than a resting taker): ``MakerOrderMustBePostOnly``;
* a maker price that does not cross the taker's price at this slot (its limit, its auction
  price during the auction, or for a market order past its auction the AMM fallback price):
  ``InvalidOrderFillPrice``, the program's code for a fill worse than a limit (the legacy
  ``AuctionPriceDoesNotSatisfyMaker`` is not used: the auction price *is* the taker's limit);
* a reduce-only maker that can no longer reduce its position: ``ReduceOnlyOrderIncreasedRisk``.

Makers are matched best price first (a stable sort, so equal prices keep the filler's order;
the program's order among equal prices depends on account addresses). Each fills at its own
price; the taker pays the maker's price. While the AMM is available it takes part as the
program lets it: ahead of any maker it beats (up to that maker's price) and for what is left
at the end if it crosses the taker's limit (:mod:`protocol.math.fulfillment`). AMM availability
is the program's ``amm_can_fill_order`` (oracle valid for a low-risk AMM fill and the order older
than the oracle's delay, or else valid for an immediate fill with an AMM that wants the other
side, has low inventory and is profitable; too much drawdown blocks it).

The taker: ``OrderDoesNotExist`` (no open order with the id; filled and cancelled orders leave
the user's order list), ``InvalidOrderMarketType``, ``MarketFillOrderPaused`` (market not
active or reduce-only, or in settlement), ``OrderMustBeTriggeredFirst``,
``CantMatchTwoPostOnlys`` (a post-only order never takes; the program would let the AMM fill it
as a maker, this model does not), ``UserBankrupt`` / ``UserIsBeingLiquidated`` (the program
returns without filling), ``ImpossibleFill`` for a ``max_base_asset_amount`` of 0 or larger
than the order's unfilled size, ``InvalidOrderNotStepSizeMultiple`` for one that is not a
step multiple, ``ReduceOnlyOrderIncreasedRisk`` for a reduce-only order that cannot reduce
(the program cancels it and pays the filler).

An expired taker order (``max_ts`` passed) is cancelled instead of filled (an ``"expire"``
record), and the user pays the filler the flat filler fee (``pay_keeper_flat_reward_for_perps``).
An expired maker order, or one whose price has crossed the oracle by the market's initial margin
ratio, is cancelled the same way, as in the program, and the fill goes on without it.

After the fill, in the program's order: the taker must meet the Fill margin requirement
(Maintenance if the order only reduces), every maker the Fill requirement (Maintenance if its
position shrank) — ``InsufficientCollateral``, as the program —; with a stale oracle the
requirement becomes 100% for risk-increasing sides and open interest may not grow
(``InvalidOracle``); the oracle must not be 50% or more away from its 5-minute TWAP and the
average fill price must be within the price bands (``PriceBandsBreached``: the program declines
to fill on a divergent oracle before filling; here the check comes after the margin checks, the
outcome being a rejection either way); open interest may not pass ``max_open_interest``
(``MaxOpenInterest``). A reduce-only remainder that can no longer reduce is cancelled with the
flat filler fee, untriggered reduce-only trigger orders of a closed position are cancelled, an
immediate-or-cancel remainder is cancelled, and the funding rate is updated if due.

Fees and rewards: :func:`protocol.math.fees.calculate_fee_for_fulfillment_with_match` (taker fee
by tier, maker rebate by the maker's tier, filler reward with the matched-fill multiplier,
referrer share) and :func:`~protocol.math.fees.calculate_fee_for_fulfillment_with_amm` (filler
reward the lesser of a share of the fee and the time-based reward). The market keeps
``fee_to_market`` (``total_fee``, ``total_fee_minus_distributions``, ``net_revenue_since_last
_funding``; against the AMM also ``total_exchange_fee`` = the taker fee and ``total_mm_fee`` = the
spread surplus). With BAL providers, an AMM fill's opposite side and 80% of
``fee_to_market_for_lp`` are split to them pro rata (:mod:`protocol.controller.lp`; their
fee share stays in the market's fee totals, as in the program, and reaches them through their
positions' quote). The filler's reward goes to its perp position's quote (the filler must sign
the transaction; a filler that is the taker, a named maker or of the taker's authority earns
nothing; when the AMM fills part of a place-and-make, the JIT maker earns the filler reward).
The referrer (``UserStats.referrer``; paid to its sub-account 0) earns its share; a referrer
without a user account or stats earns nothing (the program fails the transaction). Volumes
(30-day taker/maker/filler, 24-hour market volume), the mark TWAP (from the fill prices) and
``last_fill_price`` are updated as the program does.

Records, per fill: a :class:`~protocol.records.FillRecord` (``layer`` "jit" for the maker order
placed by place-and-make in this transaction, "dlob" for other resting orders, "amm"), then an
``OrderActionRecord`` ``"fill"`` for the taker order and, for a match, one for the maker order
(the program logs one record holding both orders).

Deviations not listed above: no AMM JIT liquidity inside a match (``amm_jit_intensity``), no
protected-maker offsets, no builder codes, no fuel, no isolated positions, no high-leverage
mode, no liquidation fill mode; user pausing of AMM fills is not modelled (a user may always
skip the auction duration). The program's many account arguments are bundled in
:class:`PerpFillContext`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.accounts import Accounts
from protocol.constants import (
    BASE_PRECISION,
    DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT,
    EPOCH_DURATION,
    MARGIN_PRECISION,
    MAX_PERP_POSITIONS,
    PERCENTAGE_PRECISION,
    THIRTY_DAY,
    TWENTY_FOUR_HOUR,
)
from protocol.controller.amm import update_amm
from protocol.controller.funding import settle_funding_payment, update_funding_rate
from protocol.controller.lp import update_lp_market_position
from protocol.controller.orders import (
    EXPLANATION_ORDER_EXPIRED,
    PlaceOrderOptions,
    _cancel,
    _emit_order_action,
    _update_last_active_slot,
    place_perp_order,
    validate_user_not_being_liquidated,
)
from protocol.controller.position import (
    decrease_open_bids_and_asks,
    increase_open_bids_and_asks,
    update_position_and_market,
    update_position_with_base_asset_amount,
    update_quote_asset_amount,
    update_quote_asset_and_break_even_amount,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    _calculate_market_open_bids_asks,
    ask_price,
    bid_price,
    calculate_amm_available_liquidity,
    calculate_bid_ask_bounds,
    calculate_terminal_reserves,
    get_sanitize_clamp_denominator,
    reserve_price,
    update_amm_long_short_intensity,
    update_mark_twap_from_estimates,
)
from protocol.math.auction import (
    calculate_auction_params_for_trigger_order,
    calculate_auction_price,
    force_get_limit_price,
    get_limit_price,
)
from protocol.math.fees import (
    calculate_fee_for_fulfillment_with_amm,
    calculate_fee_for_fulfillment_with_match,
    determine_user_fee_tier,
)
from protocol.math.fulfillment import (
    AMMFulfillment,
    MakerOrderInfo,
    determine_perp_fulfillment_methods,
)
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    meets_initial_margin_requirement,
    worst_case_liability_value,
)
from protocol.math.matching import (
    are_orders_same_market_but_different_sides,
    calculate_fill_for_matched_orders,
    calculate_filler_multiplier_for_matched_orders,
    do_orders_cross,
    is_maker_for_taker,
)
from protocol.math.oracle import (
    DriftAction,
    OracleValidity,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.orders import (
    calculate_base_asset_amount_for_amm_to_fulfill,
    calculate_fill_price,
    get_base_asset_amount_unfilled,
    get_position_delta_for_fill,
    is_jit_maker,
    is_oracle_too_divergent_with_twap_5min,
    is_order_position_reducing,
    limit_price_breaches_maker_oracle_price_bands,
    order_satisfies_trigger_condition,
    select_margin_type_for_perp_maker,
    should_cancel_reduce_only_order,
    should_expire_order,
    standardize_base_asset_amount,
    update_open_bids_and_asks,
    validate_fill_price,
    validate_fill_price_within_price_bands,
)
from protocol.math.stats import calculate_rolling_sum
from protocol.numeric import cast_i64, cast_u64, clamp, div_trunc, unsigned_abs
from protocol.records import FillRecord, TriggerRecord
from protocol.signed_intent import VerifiedIntent
from protocol.state.margin_calculation import MarginContext
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import FeeStructure, OracleGuardRails, State
from protocol.state.user import Order, PerpPosition, User, UserKey, UserStats
from protocol.types import (
    ContractTier,
    ContractType,
    MarginRequirementType,
    MarketStatus,
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

__all__ = [
    "EXPLANATION_ORDER_FILLED_WITH_AMM",
    "EXPLANATION_ORDER_FILLED_WITH_MATCH",
    "EXPLANATION_ORDER_FILLED_WITH_MATCH_JIT",
    "FillMode",
    "FillResult",
    "MakerOrderRef",
    "PerpFillContext",
    "amm_can_fill_order",
    "can_reward_user_with_perp_pnl",
    "cancel_reduce_only_trigger_orders",
    "credit_filler_perp_pnl",
    "emit_trigger_records",
    "fill_perp_order",
    "find_open_order",
    "find_triggerable_order",
    "fulfill_perp_order",
    "fulfill_perp_order_with_amm",
    "fulfill_perp_order_with_match",
    "get_fallback_price",
    "get_limit_price_for_fill_mode",
    "get_maker_orders_info",
    "increment_total_fees",
    "increment_total_rebate",
    "increment_total_referee_discount",
    "increment_total_referrer_reward",
    "max_oracle_twap_5min_percent_divergence",
    "pay_keeper_flat_reward_for_perps",
    "place_signed_msg_taker_order",
    "prepare_perp_fill",
    "trigger_order",
    "update_filler_volume",
    "update_maker_volume_30d",
    "update_order_after_fill",
    "update_taker_volume_30d",
    "update_trigger_order_params",
    "update_volume_24h",
]

PERP_DECIMALS = 9  # BASE_PRECISION == 10**PERP_DECIMALS

# OrderActionRecord.reason values (the program's OrderActionExplanation, snake_case).
EXPLANATION_ORDER_FILLED_WITH_AMM = "order_filled_with_amm"
EXPLANATION_ORDER_FILLED_WITH_MATCH = "order_filled_with_match"
EXPLANATION_ORDER_FILLED_WITH_MATCH_JIT = "order_filled_with_match_jit"
EXPLANATION_REDUCE_ONLY_ORDER_INCREASED_POSITION = "reduce_only_order_increased_position"
EXPLANATION_ORACLE_PRICE_BREACHED_LIMIT_PRICE = "oracle_price_breached_limit_price"
EXPLANATION_INSUFFICIENT_FREE_COLLATERAL = "insufficient_free_collateral"
EXPLANATION_IMMEDIATE_OR_CANCEL = ""

# A trigger order's auction lasts at least this many slots (the program's literal 20).
TRIGGER_ORDER_MIN_AUCTION_DURATION = 20
# A reduce-only trigger order resting longer than this before it fires is a "safe" trigger.
SAFE_TRIGGER_ORDER_MIN_AGE_SLOTS = 150
# FillMode::PlaceAndTake prices the taker at the end of its auction (no optional params).
PLACE_AND_TAKE_AUCTION_DURATION_PERCENTAGE = 100


class FillMode(IntEnum):
    """``state/fill_mode.rs``: how the taker's limit price is read."""

    Fill = 0
    PlaceAndMake = 1
    PlaceAndTake = 2


@dataclass(frozen=True, slots=True)
class MakerOrderRef:
    """A maker order the filler names: its user account and order id."""

    user_key: UserKey
    order_id: int


@dataclass(frozen=True, slots=True)
class FillResult:
    """What one fill instruction did: base and quote filled, and orders it cancelled."""

    base_asset_amount: int = 0
    quote_asset_amount: int = 0
    orders_cancelled: int = 0

    def updated_state(self) -> bool:
        return self.base_asset_amount > 0 or self.orders_cancelled > 0


# --- UserStats and AMM counters (``impl UserStats`` / ``impl AMM`` in the program) -------------
def update_maker_volume_30d(user_stats: UserStats, quote_asset_amount: int, now: int) -> None:
    since_last = max(1, now - user_stats.last_maker_volume_30d_ts)
    user_stats.maker_volume_30d = calculate_rolling_sum(
        user_stats.maker_volume_30d, quote_asset_amount, since_last, THIRTY_DAY
    )
    user_stats.last_maker_volume_30d_ts = now


def update_taker_volume_30d(user_stats: UserStats, quote_asset_amount: int, now: int) -> None:
    since_last = max(1, now - user_stats.last_taker_volume_30d_ts)
    user_stats.taker_volume_30d = calculate_rolling_sum(
        user_stats.taker_volume_30d, quote_asset_amount, since_last, THIRTY_DAY
    )
    user_stats.last_taker_volume_30d_ts = now


def update_filler_volume(user_stats: UserStats, quote_asset_amount: int, now: int) -> None:
    since_last = max(1, now - user_stats.last_filler_volume_30d_ts)
    user_stats.filler_volume_30d = calculate_rolling_sum(
        user_stats.filler_volume_30d, quote_asset_amount, since_last, THIRTY_DAY
    )
    user_stats.last_filler_volume_30d_ts = now


def increment_total_fees(user_stats: UserStats, fee: int) -> None:
    user_stats.fees.total_fee_paid = cast_u64(user_stats.fees.total_fee_paid + fee)


def increment_total_rebate(user_stats: UserStats, fee: int) -> None:
    user_stats.fees.total_fee_rebate = cast_u64(user_stats.fees.total_fee_rebate + fee)


def increment_total_referee_discount(user_stats: UserStats, discount: int) -> None:
    user_stats.fees.total_referee_discount = cast_u64(
        user_stats.fees.total_referee_discount + discount
    )


def increment_total_referrer_reward(user_stats: UserStats, reward: int, now: int) -> None:
    """Add to the referrer's totals; the epoch counter resets once ``now`` passes
    ``next_epoch_ts`` (which then advances by whole epochs). A ``next_epoch_ts`` of 0 (stats
    created without one) starts the first epoch now."""
    fees = user_stats.fees
    if user_stats.next_epoch_ts == 0:
        user_stats.next_epoch_ts = now + EPOCH_DURATION
    fees.total_referrer_reward = cast_u64(fees.total_referrer_reward + reward)
    fees.current_epoch_referrer_reward = cast_u64(fees.current_epoch_referrer_reward + reward)
    if now > user_stats.next_epoch_ts:
        n_epoch_durations = div_trunc(now - user_stats.next_epoch_ts, EPOCH_DURATION) + 1
        user_stats.next_epoch_ts += EPOCH_DURATION * n_epoch_durations
        fees.current_epoch_referrer_reward = 0


def update_volume_24h(
    amm: AMM, quote_asset_amount: int, position_direction: PositionDirection, now: int
) -> None:
    """``AMM::update_volume_24h``: fold a fill into the 24-hour volume and the long/short
    intensity sums."""
    since_last = max(1, now - amm.last_trade_ts)
    update_amm_long_short_intensity(amm, now, quote_asset_amount, position_direction)
    amm.volume_24h = calculate_rolling_sum(
        amm.volume_24h, quote_asset_amount, since_last, TWENTY_FOUR_HOUR
    )
    amm.last_trade_ts = now


def max_oracle_twap_5min_percent_divergence(guard_rails: OracleGuardRails) -> int:
    """``OracleGuardRails::max_oracle_twap_5min_percent_divergence``: never below 50%."""
    return max(
        guard_rails.price_divergence.oracle_twap_5min_percent_divergence,
        PERCENTAGE_PRECISION // 2,
    )


# --- the AMM's own rules -------------------------------------------------------------------------
def _has_too_much_drawdown(market: PerpMarket) -> bool:
    amm = market.amm
    tier_a_or_b = market.contract_tier in (ContractTier.A, ContractTier.B)
    quote_drawdown_limit = DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT * (
        400 if tier_a_or_b else 200
    )
    if amm.net_revenue_since_last_funding > quote_drawdown_limit:
        return False
    percent_drawdown = div_trunc(
        amm.net_revenue_since_last_funding * PERCENTAGE_PRECISION,
        max(amm.total_fee_minus_distributions, 1),
    )
    limit_divisor = {ContractTier.A: 50, ContractTier.B: 33, ContractTier.C: 25}.get(
        market.contract_tier, 20
    )
    return percent_drawdown <= -div_trunc(PERCENTAGE_PRECISION, limit_divisor)


def _amm_wants_to_jit_make(amm: AMM, taker_direction: PositionDirection) -> bool:
    if taker_direction == PositionDirection.Long:
        wants = amm.base_asset_amount_with_amm < -amm.order_step_size
    else:
        wants = amm.base_asset_amount_with_amm > amm.order_step_size
    return wants and amm.amm_jit_intensity > 0


def _amm_has_low_enough_inventory(amm: AMM, amm_wants_to_jit_make: bool) -> bool:
    if not amm_wants_to_jit_make:
        return True
    max_bids, max_asks = _calculate_market_open_bids_asks(
        amm.base_asset_reserve, amm.min_base_asset_reserve, amm.max_base_asset_reserve
    )
    protocol_owned_min_side_liquidity = min(max_bids, abs(max_asks))
    return abs(amm.base_asset_amount_with_amm) < div_trunc(protocol_owned_min_side_liquidity, 10)


def _is_low_risk_for_amm(
    order: Order, oracle_delay: int, clock_slot: int, user_can_skip_auction_duration: bool
) -> bool:
    clock_minus_delay = clock_slot - oracle_delay
    if user_can_skip_auction_duration:
        older_than_oracle_delay = clock_minus_delay >= order.slot
    else:
        older_than_oracle_delay = clock_minus_delay > order.slot
    return older_than_oracle_delay or bool(order.bit_flags & OrderBitFlag.SafeTriggerOrder)


def amm_can_fill_order(
    market: PerpMarket,
    order: Order,
    clock_slot: int,
    safe_oracle_validity: OracleValidity,
    oracle_price_data: OraclePriceData,
    user_can_skip_auction_duration: bool = True,
) -> bool:
    """``PerpMarket::amm_can_fill_order`` without the market-maker oracle (none here)."""
    if market.status == MarketStatus.AmmPaused or _has_too_much_drawdown(market):
        return False
    if not is_oracle_valid_for_action(safe_oracle_validity, DriftAction.FillOrderAmmLowRisk):
        return False
    if _is_low_risk_for_amm(
        order, oracle_price_data.delay, clock_slot, user_can_skip_auction_duration
    ):
        return True
    if not user_can_skip_auction_duration:
        return False
    if not is_oracle_valid_for_action(safe_oracle_validity, DriftAction.FillOrderAmmImmediate):
        return False
    amm = market.amm
    wants_to_jit_make = _amm_wants_to_jit_make(amm, order.direction)
    if not wants_to_jit_make:
        return False
    low_inventory = _amm_has_low_enough_inventory(amm, wants_to_jit_make)
    if not low_inventory:
        return False
    # PerpMarket::can_skip_auction_duration
    return amm.net_revenue_since_last_funding >= DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT


def get_fallback_price(
    market: PerpMarket,
    direction: PositionDirection,
    amm_available_liquidity: int,
    oracle_price: int,
    seconds_til_order_expiry: int,
) -> int:
    """``AMM::get_fallback_price``: the price a market order without a limit price may trade
    at: the AMM's quote plus a buffer that shrinks as the order nears expiry, or without AMM
    liquidity the oracle plus the recent premium and a larger buffer."""
    amm = market.amm
    if amm_available_liquidity >= amm.min_order_size:
        reserve = reserve_price(amm)
        buffer_divisor = clamp(seconds_til_order_expiry * 20, 100, 200)
        if direction == PositionDirection.Long:
            amm_ask_price = ask_price(amm, reserve)
            return cast_u64(amm_ask_price + div_trunc(amm_ask_price, buffer_divisor))
        amm_bid_price = bid_price(amm, reserve)
        return cast_u64(amm_bid_price - div_trunc(amm_bid_price, buffer_divisor))
    buffer_divisor = clamp(seconds_til_order_expiry * 2, 10, 50)
    oracle_twap = amm.historical_oracle_data.last_oracle_price_twap
    if direction == PositionDirection.Long:
        premium = max(amm.last_ask_price_twap - oracle_twap, 0)
        return cast_u64(oracle_price + premium + div_trunc(oracle_price, buffer_divisor))
    discount = min(amm.last_bid_price_twap - oracle_twap, 0)
    return cast_u64(max(oracle_price + discount - div_trunc(oracle_price, buffer_divisor), 0))


def _seconds_til_expiry(order: Order, now: int) -> int:
    return max(order.max_ts - now, 0)


def get_limit_price_for_fill_mode(
    fill_mode: FillMode,
    order: Order,
    valid_oracle_price: int | None,
    slot: int,
    tick_size: int,
    is_prediction_market: bool,
) -> int | None:
    """``FillMode::get_limit_price``: place-and-take prices an auctioning order at the end of
    its auction; other modes at this slot."""
    if fill_mode == FillMode.PlaceAndTake and order.has_auction():
        auction_duration = div_trunc(
            order.auction_duration * min(PLACE_AND_TAKE_AUCTION_DURATION_PERCENTAGE, 100), 100
        )
        return calculate_auction_price(
            order,
            order.slot + auction_duration,
            tick_size,
            valid_oracle_price,
            is_prediction_market,
        )
    return get_limit_price(order, valid_oracle_price, None, slot, tick_size, is_prediction_market)


# --- small account helpers -----------------------------------------------------------------------
def find_open_order(user: User, order_id: int) -> Order | None:
    for order in user.orders:
        if order.order_id == order_id and order.status == OrderStatus.Open:
            return order
    return None


def validate_named_maker(
    accounts: Accounts,
    ref: MakerOrderRef,
    where: str,
    seen: set[MakerOrderRef],
    taker_key: UserKey,
    taker_order: Order,
    slot: int,
) -> tuple[User, Order]:
    """The checks every maker a filler names must pass, perp or spot (the verifier refuses the
    transaction where the program would skip the maker): named once, not the taker's user, an
    existing user not being liquidated, an open order in the taker's market on the other side,
    triggered if it is a trigger order, and resting (``is_maker_for_taker``). ``where`` is the
    field reported (``makers[i]``); ``ref`` is added to ``seen``."""
    if ref in seen:
        raise ProtocolError(ErrorCode.InvalidMaker, "maker order named twice", field=where)
    seen.add(ref)
    if ref.user_key == taker_key:
        raise ProtocolError(
            ErrorCode.MakerCantFulfillOwnOrder, "the maker is the taker's user", field=where
        )
    if not accounts.has_user(ref.user_key):
        raise ProtocolError(ErrorCode.MakerNotFound, "no such maker user", field=where)
    maker = accounts.user(ref.user_key)
    if maker.is_being_liquidated():
        raise ProtocolError(ErrorCode.InvalidMaker, "maker is being liquidated", field=where)
    maker_order = find_open_order(maker, ref.order_id)
    if maker_order is None:
        raise ProtocolError(
            ErrorCode.MakerOrderNotFound, f"no open order {ref.order_id}", field=where
        )
    if not are_orders_same_market_but_different_sides(maker_order, taker_order):
        raise ProtocolError(
            ErrorCode.InvalidMaker,
            "maker order is in another market or on the taker's side",
            field=where,
        )
    if maker_order.must_be_triggered() and not maker_order.triggered():
        raise ProtocolError(
            ErrorCode.OrderMustBeTriggeredFirst, "maker order not triggered", field=where
        )
    if not is_maker_for_taker(maker_order, taker_order, slot):
        raise ProtocolError(
            ErrorCode.MakerOrderMustBePostOnly,
            "maker order is not a resting limit order older than the taker",
            field=where,
        )
    return maker, maker_order


def _perp_position(user: User, market_index: int) -> PerpPosition:
    position = user.get_perp_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.UserHasNoPositionInMarket,
            f"no perp position in market {market_index}",
            field="market_index",
        )
    return position


def _is_prediction_market(market: PerpMarket) -> bool:
    return market.contract_type == ContractType.Prediction


def _remove_closed_orders(user: User, market_index: int) -> None:
    """Filled orders leave the user's order list (as cancelled ones do), and a position left
    with nothing is dropped (the program marks such slots available)."""
    user.orders = [o for o in user.orders if o.status == OrderStatus.Open]
    user.prune_perp_position(market_index)


def can_reward_user_with_perp_pnl(user: User | None, market_index: int) -> bool:
    """Whether ``user`` exists and has (or has room for) a position in ``market_index``."""
    if user is None:
        return False
    return (
        user.get_perp_position(market_index) is not None
        or len(user.perp_positions) < MAX_PERP_POSITIONS
    )


def pay_keeper_flat_reward_for_perps(
    user: User, filler: User | None, market: PerpMarket, filler_reward: int, slot: int
) -> int:
    """Move the flat ``filler_reward`` from ``user``'s position quote to the filler's; the
    amount paid (0 without a filler). As in the program, a filler with no room for a position
    in the market is not paid although the user is charged."""
    if filler is None:
        return 0
    user_position = _perp_position(user, market.market_index)
    update_quote_asset_and_break_even_amount(user_position, market, -filler_reward)
    _update_last_active_slot(filler, slot)
    if not can_reward_user_with_perp_pnl(filler, market.market_index):
        return 0
    filler_position = filler.force_get_perp_position_mut(market.market_index)
    update_quote_asset_amount(filler_position, market, filler_reward)
    return filler_reward


def credit_filler_perp_pnl(
    filler: User,
    filler_stats: UserStats | None,
    market: PerpMarket,
    filler_reward: int,
    quote_asset_amount: int,
    now: int,
    slot: int,
) -> None:
    """Credit the filler's reward to its position quote in the market and count the fill in its
    30-day filler volume."""
    if filler_reward > 0:
        filler_position = filler.force_get_perp_position_mut(market.market_index)
        update_quote_asset_amount(filler_position, market, cast_i64(filler_reward))
        if filler_stats is None:
            raise MathError("filler rewarded without user stats")
        update_filler_volume(filler_stats, quote_asset_amount, now)
    _update_last_active_slot(filler, slot)


def update_order_after_fill(order: Order, base_asset_amount: int, quote_asset_amount: int) -> bool:
    """Add a fill to the order; whether it is now completely filled."""
    order.base_asset_amount_filled = cast_u64(order.base_asset_amount_filled + base_asset_amount)
    order.quote_asset_amount_filled = cast_u64(order.quote_asset_amount_filled + quote_asset_amount)
    is_filled = get_base_asset_amount_unfilled(order) == 0
    if is_filled:
        order.status = OrderStatus.Filled
    return is_filled


def _next_fill_record_id(market: PerpMarket) -> int:
    record_id = market.next_fill_record_id
    market.next_fill_record_id = record_id + 1
    return record_id


# --- the fill context --------------------------------------------------------------------------
@dataclass(slots=True)
class PerpFillContext:
    """The accounts and readings one perp fill works with (the program's argument list)."""

    accounts: Accounts
    state: State
    fill_mode: FillMode
    market: PerpMarket
    user: User
    user_key: UserKey
    user_stats: UserStats
    order: Order
    filler_key: UserKey
    filler: User | None
    filler_stats: UserStats | None
    # a maker that is the transaction's filler (place-and-make): it earns the AMM's filler reward
    maker_as_filler: User | None
    maker_as_filler_stats: UserStats | None
    referrer: User | None
    referrer_stats: UserStats | None
    fee_structure: FeeStructure
    reserve_price_before: int
    oracle_price: int
    valid_oracle_price: int | None
    now: int
    slot: int
    amm_is_available: bool
    oracle_stale_for_margin: bool
    jit_maker: MakerOrderRef | None
    makers: dict[UserKey, User] = field(default_factory=dict)
    maker_fills: dict[UserKey, int] = field(default_factory=dict)


def _referrer(accounts: Accounts, user_stats: UserStats) -> tuple[User | None, UserStats | None]:
    if user_stats.referrer == bytes(32):
        return None, None
    referrer_key = (user_stats.referrer, 0)
    if not accounts.has_user(referrer_key) or not accounts.has_user_stats(user_stats.referrer):
        return None, None
    referrer = accounts.user(referrer_key)
    _update_last_active_slot(referrer, accounts.clock.slot)
    return referrer, accounts.user_stats(user_stats.referrer)


def _emit_fill(
    ctx: PerpFillContext,
    *,
    fill_record_id: int,
    layer: str,
    maker_key: UserKey | None,
    maker_order: Order | None,
    base_asset_amount: int,
    quote_asset_amount: int,
    taker_fee: int,
    maker_rebate: int,
    filler_reward: int,
    referrer_reward: int,
    fee_to_market: int,
    quote_asset_amount_surplus: int,
    explanation: str,
) -> None:
    accounts = ctx.accounts
    accounts.emit(
        FillRecord(
            fill_record_id=fill_record_id,
            market_type=MarketType.Perp,
            market_index=ctx.market.market_index,
            layer=layer,
            taker=ctx.user_key,
            taker_order_id=ctx.order.order_id,
            taker_direction=ctx.order.direction,
            maker=maker_key,
            maker_order_id=None if maker_order is None else maker_order.order_id,
            base_asset_amount=base_asset_amount,
            quote_asset_amount=quote_asset_amount,
            fill_price=calculate_fill_price(quote_asset_amount, base_asset_amount, BASE_PRECISION),
            taker_fee=taker_fee,
            maker_rebate=maker_rebate,
            filler_reward=filler_reward,
            referrer_reward=referrer_reward,
            fee_to_market=fee_to_market,
            quote_asset_amount_surplus=quote_asset_amount_surplus,
            oracle_price=ctx.oracle_price,
            filler=ctx.filler_key,
            slot=ctx.slot,
            ts=ctx.now,
        )
    )
    _emit_order_action(accounts, ctx.user, ctx.order, "fill", explanation)
    if maker_key is not None and maker_order is not None:
        _emit_order_action(accounts, ctx.makers[maker_key], maker_order, "fill", explanation)


# --- makers ---------------------------------------------------------------------------------------
def _cancel_with_flat_reward(
    accounts: Accounts,
    user: User,
    order: Order,
    filler: User | None,
    market: PerpMarket,
    action: str,
    explanation: str,
) -> None:
    reward = pay_keeper_flat_reward_for_perps(
        user, filler, market, accounts.state.perp_fee_structure.flat_filler_fee, accounts.clock.slot
    )
    _cancel(
        accounts,
        user,
        order,
        action,
        explanation,
        filler=filler.key if filler is not None else None,
        filler_reward=reward,
    )


def get_maker_orders_info(
    ctx: PerpFillContext, makers: Sequence[MakerOrderRef], taker_price: int | None
) -> tuple[list[MakerOrderInfo], int]:
    """Validate every named maker (see the module docstring) and return ``(the makers' orders
    best price first, how many maker orders were cancelled)``."""
    accounts = ctx.accounts
    market = ctx.market
    taker_order = ctx.order
    maker_direction = taker_order.direction.opposite()
    tick_size = market.amm.order_tick_size
    infos: list[MakerOrderInfo] = []
    seen: set[MakerOrderRef] = set()
    cancelled = 0
    for i, ref in enumerate(makers):
        where = f"makers[{i}]"
        maker, maker_order = validate_named_maker(
            accounts, ref, where, seen, ctx.user_key, taker_order, ctx.slot
        )
        maker_price = force_get_limit_price(
            maker_order,
            ctx.oracle_price,
            None,
            ctx.slot,
            tick_size,
            _is_prediction_market(market),
        )

        _update_last_active_slot(maker, ctx.slot)
        record = settle_funding_payment(maker, ref.user_key, market, ctx.now)
        if record is not None:
            accounts.emit(record)

        breaches = limit_price_breaches_maker_oracle_price_bands(
            maker_price, maker_order.direction, ctx.oracle_price, market.margin_ratio_initial
        )
        if breaches:
            _cancel_with_flat_reward(
                accounts,
                maker,
                maker_order,
                ctx.filler,
                market,
                "cancel",
                EXPLANATION_ORACLE_PRICE_BREACHED_LIMIT_PRICE,
            )
            cancelled += 1
            continue
        if should_expire_order(maker_order, ctx.now):
            _cancel_with_flat_reward(
                accounts,
                maker,
                maker_order,
                ctx.filler,
                market,
                "expire",
                EXPLANATION_ORDER_EXPIRED,
            )
            cancelled += 1
            continue
        maker_position = maker.get_perp_position(market.market_index)
        existing = 0 if maker_position is None else maker_position.base_asset_amount
        if should_cancel_reduce_only_order(maker_order, existing, market.amm.order_step_size):
            raise ProtocolError(
                ErrorCode.ReduceOnlyOrderIncreasedRisk,
                "reduce-only maker order can no longer reduce its position",
                field=where,
            )
        if taker_price is not None and not do_orders_cross(
            maker_direction, maker_price, taker_price
        ):
            raise ProtocolError(
                ErrorCode.InvalidOrderFillPrice,
                f"maker price {maker_price} does not cross the taker's price {taker_price} "
                f"at slot {ctx.slot}",
                field=where,
            )
        ctx.makers[ref.user_key] = maker
        infos.append((ref.user_key, ref.order_id, maker_price))

    # best price for the taker first: asks ascending, bids descending (stable among equals)
    if maker_direction == PositionDirection.Short:
        infos.sort(key=lambda info: info[2])
    else:
        infos.sort(key=lambda info: -info[2])
    return infos, cancelled


# --- fulfillment ----------------------------------------------------------------------------------
def fulfill_perp_order_with_amm(
    ctx: PerpFillContext,
    limit_price: int | None,
    override_fill_price: int | None,
    max_base_asset_amount: int | None,
) -> tuple[int, int]:
    """Fill (part of) the taker order against the AMM; ``(base, quote)`` filled.

    ``override_fill_price``: a maker's price the AMM must not pass (it fills ahead of that
    maker). ``max_base_asset_amount`` caps the size (the filler's bound), step-rounded.
    """
    user, order, market = ctx.user, ctx.order, ctx.market
    amm = market.amm
    position = _perp_position(user, market.market_index)
    existing_base_asset_amount = position.base_asset_amount

    fee_tier = determine_user_fee_tier(ctx.user_stats, ctx.fee_structure, MarketType.Perp)
    base_asset_amount, limit_price = calculate_base_asset_amount_for_amm_to_fulfill(
        order, market, limit_price, override_fill_price, existing_base_asset_amount, fee_tier
    )
    fill_price = limit_price if order.post_only else None
    if max_base_asset_amount is not None:
        base_asset_amount = standardize_base_asset_amount(
            min(base_asset_amount, max_base_asset_amount), amm.order_step_size
        )

    if not order.reduce_only and unsigned_abs(existing_base_asset_amount) > amm.min_order_size:
        amm_size_threshold = amm.min_order_size
    else:
        amm_size_threshold = amm.order_step_size
    if base_asset_amount < amm_size_threshold:
        return 0, 0

    direction = order.direction
    # validate_amm_account_for_fill
    if direction == PositionDirection.Long and amm.base_asset_reserve < amm.min_base_asset_reserve:
        raise ProtocolError(
            ErrorCode.InvalidAmmForFillDetected, "base reserve below min_base_asset_reserve"
        )
    if direction == PositionDirection.Short and amm.base_asset_reserve > amm.max_base_asset_reserve:
        raise ProtocolError(
            ErrorCode.InvalidAmmForFillDetected, "base reserve above max_base_asset_reserve"
        )

    if direction == PositionDirection.Long:
        market_side_price = ask_price(amm, ctx.reserve_price_before)
    else:
        market_side_price = bid_price(amm, ctx.reserve_price_before)
    update_mark_twap_from_estimates(
        amm, ctx.now, market_side_price, direction, get_sanitize_clamp_denominator(market)
    )

    quote_asset_amount, quote_asset_amount_surplus, _ = update_position_with_base_asset_amount(
        base_asset_amount, direction, market, position, fill_price
    )
    if limit_price is not None:
        validate_fill_price(
            quote_asset_amount,
            base_asset_amount,
            BASE_PRECISION,
            direction,
            limit_price,
            not order.post_only,
        )

    reward_referrer = can_reward_user_with_perp_pnl(ctx.referrer, market.market_index)
    reward_filler = can_reward_user_with_perp_pnl(
        ctx.filler, market.market_index
    ) or can_reward_user_with_perp_pnl(ctx.maker_as_filler, market.market_index)
    fees = calculate_fee_for_fulfillment_with_amm(
        ctx.user_stats,
        quote_asset_amount,
        ctx.fee_structure,
        order.slot,
        ctx.slot,
        reward_filler,
        reward_referrer,
        ctx.referrer_stats,
        quote_asset_amount_surplus,
        order.post_only,
        market.fee_adjustment,
    )

    # BAL providers (seed 004): the LPs take their share (user_lp_shares / sqrt_k) of the AMM's
    # side of this fill and 80% of the fee to the market, per LP share; their part leaves the
    # AMM's own net position, so its terminal reserves and reserve bounds follow
    update_lp_market_position(
        market,
        get_position_delta_for_fill(base_asset_amount, quote_asset_amount, direction),
        fees.fee_to_market_for_lp,
    )
    if amm.user_lp_shares > 0:
        amm.terminal_quote_asset_reserve, new_terminal_base_reserve = calculate_terminal_reserves(
            amm
        )
        amm.min_base_asset_reserve, amm.max_base_asset_reserve = calculate_bid_ask_bounds(
            amm.concentration_coef, new_terminal_base_reserve
        )

    amm.total_fee += fees.fee_to_market
    amm.total_exchange_fee += fees.user_fee
    amm.total_mm_fee += quote_asset_amount_surplus
    amm.total_fee_minus_distributions += fees.fee_to_market
    amm.net_revenue_since_last_funding += fees.fee_to_market

    increment_total_fees(ctx.user_stats, fees.user_fee)
    increment_total_rebate(ctx.user_stats, fees.maker_rebate)
    increment_total_referee_discount(ctx.user_stats, fees.referee_discount)

    if ctx.referrer is not None and ctx.referrer_stats is not None and reward_referrer:
        # only a paid reward takes a position: the program's empty slot stays available, and
        # this model keeps live positions only
        if fees.referrer_reward > 0:
            referrer_position = ctx.referrer.force_get_perp_position_mut(market.market_index)
            update_quote_asset_amount(referrer_position, market, fees.referrer_reward)
        increment_total_referrer_reward(ctx.referrer_stats, fees.referrer_reward, ctx.now)

    if fees.user_fee != 0:
        update_quote_asset_and_break_even_amount(position, market, -fees.user_fee)
    if fees.maker_rebate != 0:
        update_quote_asset_and_break_even_amount(position, market, fees.maker_rebate)

    if order.post_only:
        update_maker_volume_30d(ctx.user_stats, quote_asset_amount, ctx.now)
    else:
        update_taker_volume_30d(ctx.user_stats, quote_asset_amount, ctx.now)

    if ctx.filler is not None:
        credit_filler_perp_pnl(
            ctx.filler,
            ctx.filler_stats,
            market,
            fees.filler_reward,
            quote_asset_amount,
            ctx.now,
            ctx.slot,
        )
    elif ctx.maker_as_filler is not None:
        credit_filler_perp_pnl(
            ctx.maker_as_filler,
            ctx.maker_as_filler_stats,
            market,
            fees.filler_reward,
            quote_asset_amount,
            ctx.now,
            ctx.slot,
        )

    update_order_after_fill(order, base_asset_amount, quote_asset_amount)
    decrease_open_bids_and_asks(
        position, direction, base_asset_amount, update_open_bids_and_asks(order)
    )

    _emit_fill(
        ctx,
        fill_record_id=_next_fill_record_id(market),
        layer="amm",
        maker_key=None,
        maker_order=None,
        base_asset_amount=base_asset_amount,
        quote_asset_amount=quote_asset_amount,
        taker_fee=fees.user_fee,
        maker_rebate=fees.maker_rebate,
        filler_reward=fees.filler_reward,
        referrer_reward=fees.referrer_reward,
        fee_to_market=fees.fee_to_market,
        quote_asset_amount_surplus=quote_asset_amount_surplus,
        explanation=EXPLANATION_ORDER_FILLED_WITH_AMM,
    )

    if get_base_asset_amount_unfilled(order) == 0:
        order.status = OrderStatus.Filled
        position.open_orders -= 1
    return base_asset_amount, quote_asset_amount


def fulfill_perp_order_with_match(
    ctx: PerpFillContext,
    maker_key: UserKey,
    maker_order_id: int,
    maker_price: int,
    taker_limit_price: int | None,
    max_base_asset_amount: int | None,
) -> tuple[int, int, int]:
    """Match the taker order with one maker order at the maker's price; ``(base, quote,
    base filled by the maker)`` (the program's third value differs from the first only with
    AMM JIT liquidity, which is not modelled)."""
    market, taker, order = ctx.market, ctx.user, ctx.order
    maker = ctx.makers[maker_key]
    maker_order = find_open_order(maker, maker_order_id)
    if maker_order is None or not are_orders_same_market_but_different_sides(maker_order, order):
        return 0, 0, 0

    taker_direction = order.direction
    if taker_limit_price is not None:
        taker_price = taker_limit_price
    else:
        taker_price = get_fallback_price(
            market,
            taker_direction,
            calculate_amm_available_liquidity(market.amm, taker_direction),
            ctx.oracle_price,
            _seconds_til_expiry(order, ctx.now),
        )

    taker_position = _perp_position(taker, market.market_index)
    taker_base_asset_amount = get_base_asset_amount_unfilled(
        order, taker_position.base_asset_amount
    )
    if max_base_asset_amount is not None:
        taker_base_asset_amount = min(taker_base_asset_amount, max_base_asset_amount)

    maker_direction = maker_order.direction
    maker_position = _perp_position(maker, market.market_index)
    maker_base_asset_amount = get_base_asset_amount_unfilled(
        maker_order, maker_position.base_asset_amount
    )

    if not do_orders_cross(maker_direction, maker_price, taker_price):
        return 0, 0, 0

    base_asset_amount, quote_asset_amount = calculate_fill_for_matched_orders(
        maker_base_asset_amount,
        maker_price,
        taker_base_asset_amount,
        PERP_DECIMALS,
        maker_direction,
    )
    if base_asset_amount == 0:
        return 0, 0, 0

    update_mark_twap_from_estimates(
        market.amm,
        ctx.now,
        maker_price,
        taker_direction,
        get_sanitize_clamp_denominator(market),
    )

    validate_fill_price(
        quote_asset_amount, base_asset_amount, BASE_PRECISION, taker_direction, taker_price, True
    )
    validate_fill_price(
        quote_asset_amount, base_asset_amount, BASE_PRECISION, maker_direction, maker_price, False
    )

    # maker stats are the taker's when both accounts belong to one authority
    maker_stats = (
        None if maker.authority == taker.authority else ctx.accounts.user_stats(maker.authority)
    )

    update_position_and_market(
        maker_position,
        market,
        get_position_delta_for_fill(base_asset_amount, quote_asset_amount, maker_direction),
    )
    update_maker_volume_30d(
        maker_stats if maker_stats is not None else ctx.user_stats, quote_asset_amount, ctx.now
    )

    update_position_and_market(
        taker_position,
        market,
        get_position_delta_for_fill(base_asset_amount, quote_asset_amount, taker_direction),
    )
    update_taker_volume_30d(ctx.user_stats, quote_asset_amount, ctx.now)

    referrer, referrer_stats = ctx.referrer, ctx.referrer_stats
    if referrer is not None and maker.authority == referrer.authority:
        referrer, referrer_stats = None, None
    reward_referrer = can_reward_user_with_perp_pnl(referrer, market.market_index)
    reward_filler = can_reward_user_with_perp_pnl(ctx.filler, market.market_index)
    filler_multiplier = (
        calculate_filler_multiplier_for_matched_orders(
            maker_price, maker_direction, ctx.oracle_price
        )
        if reward_filler
        else 0
    )
    fees = calculate_fee_for_fulfillment_with_match(
        ctx.user_stats,
        maker_stats,
        quote_asset_amount,
        ctx.fee_structure,
        order.slot,
        ctx.slot,
        filler_multiplier,
        reward_referrer,
        referrer_stats,
        MarketType.Perp,
        market.fee_adjustment,
    )

    amm = market.amm
    amm.total_fee += fees.fee_to_market
    amm.total_exchange_fee += fees.fee_to_market
    amm.total_fee_minus_distributions += fees.fee_to_market
    amm.net_revenue_since_last_funding += fees.fee_to_market

    update_quote_asset_and_break_even_amount(taker_position, market, -fees.user_fee)
    increment_total_fees(ctx.user_stats, fees.user_fee)
    increment_total_referee_discount(ctx.user_stats, fees.referee_discount)

    update_quote_asset_and_break_even_amount(maker_position, market, fees.maker_rebate)
    increment_total_rebate(
        maker_stats if maker_stats is not None else ctx.user_stats, fees.maker_rebate
    )

    if ctx.filler is not None:
        credit_filler_perp_pnl(
            ctx.filler,
            ctx.filler_stats,
            market,
            fees.filler_reward,
            quote_asset_amount,
            ctx.now,
            ctx.slot,
        )

    if referrer is not None and referrer_stats is not None and reward_referrer:
        if fees.referrer_reward > 0:  # as for AMM fills: no empty position for a zero reward
            referrer_position = referrer.force_get_perp_position_mut(market.market_index)
            update_quote_asset_amount(referrer_position, market, fees.referrer_reward)
        increment_total_referrer_reward(referrer_stats, fees.referrer_reward, ctx.now)

    update_order_after_fill(order, base_asset_amount, quote_asset_amount)
    decrease_open_bids_and_asks(
        taker_position, taker_direction, base_asset_amount, update_open_bids_and_asks(order)
    )
    update_order_after_fill(maker_order, base_asset_amount, quote_asset_amount)
    decrease_open_bids_and_asks(
        maker_position, maker_direction, base_asset_amount, update_open_bids_and_asks(maker_order)
    )

    is_jit = ctx.jit_maker == MakerOrderRef(maker_key, maker_order_id)
    _emit_fill(
        ctx,
        fill_record_id=_next_fill_record_id(market),
        layer="jit" if is_jit else "dlob",
        maker_key=maker_key,
        maker_order=maker_order,
        base_asset_amount=base_asset_amount,
        quote_asset_amount=quote_asset_amount,
        taker_fee=fees.user_fee,
        maker_rebate=fees.maker_rebate,
        filler_reward=fees.filler_reward,
        referrer_reward=fees.referrer_reward,
        fee_to_market=fees.fee_to_market,
        quote_asset_amount_surplus=0,
        explanation=(
            EXPLANATION_ORDER_FILLED_WITH_MATCH_JIT
            if is_jit_maker(maker_order)
            else EXPLANATION_ORDER_FILLED_WITH_MATCH
        ),
    )

    if get_base_asset_amount_unfilled(order) == 0:
        order.status = OrderStatus.Filled
        taker_position.open_orders -= 1
    if get_base_asset_amount_unfilled(maker_order) == 0:
        maker_order.status = OrderStatus.Filled
        maker_position.open_orders -= 1

    signed = base_asset_amount if maker_direction == PositionDirection.Long else -base_asset_amount
    ctx.maker_fills[maker_key] = ctx.maker_fills.get(maker_key, 0) + signed
    return base_asset_amount, quote_asset_amount, base_asset_amount


def _open_interest(market: PerpMarket) -> int:
    """``PerpMarket::get_open_interest``: the larger side's base."""
    return max(abs(market.amm.base_asset_amount_long), abs(market.amm.base_asset_amount_short))


def _meets_fill_margin(
    ctx: PerpFillContext, user: User, margin_type: MarginRequirementType, ratio_override: bool
) -> bool:
    context = MarginContext.standard(margin_type)
    if ratio_override:
        context = context.with_margin_ratio_override(MARGIN_PRECISION)
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, ctx.accounts, context
    ).meets_margin_requirement()


def fulfill_perp_order(
    ctx: PerpFillContext,
    maker_orders_info: Sequence[MakerOrderInfo],
    max_base_asset_amount: int | None,
) -> tuple[int, int]:
    """Walk the fulfillment methods, then check the taker's and every maker's margin;
    ``(base, quote)`` filled."""
    user, order, market = ctx.user, ctx.order, ctx.market
    market_index = market.market_index
    position_before = _perp_position(user, market_index).base_asset_amount
    user_order_position_decreasing = is_order_position_reducing(
        order.direction, get_base_asset_amount_unfilled(order, position_before), position_before
    )
    limit_price = get_limit_price_for_fill_mode(
        ctx.fill_mode,
        order,
        ctx.valid_oracle_price,
        ctx.slot,
        market.amm.order_tick_size,
        _is_prediction_market(market),
    )
    open_interest_before = _open_interest(market)

    fulfillment_methods = determine_perp_fulfillment_methods(
        order,
        maker_orders_info,
        market.amm,
        ctx.reserve_price_before,
        limit_price,
        ctx.amm_is_available,
    )
    if not fulfillment_methods:
        return 0, 0

    base_asset_amount = 0
    quote_asset_amount = 0
    for method in fulfillment_methods:
        if order.status != OrderStatus.Open:
            break
        remaining = None
        if max_base_asset_amount is not None:
            remaining = max_base_asset_amount - base_asset_amount
            if remaining <= 0:
                break
        order_direction = order.direction
        if isinstance(method, AMMFulfillment):
            fill_base, fill_quote = fulfill_perp_order_with_amm(
                ctx, limit_price, method.maker_price, remaining
            )
        else:
            fill_base, fill_quote, _ = fulfill_perp_order_with_match(
                ctx,
                method.maker_key,
                method.maker_order_id,
                method.maker_price,
                limit_price,
                remaining,
            )
        base_asset_amount += fill_base
        quote_asset_amount += fill_quote
        update_volume_24h(market.amm, fill_quote, order_direction, ctx.now)

    if (base_asset_amount > 0) != (quote_asset_amount > 0):
        raise ProtocolError(
            ErrorCode.DefaultError,
            f"invalid fill base = {base_asset_amount} quote = {quote_asset_amount}",
        )
    total_maker_fill = sum(ctx.maker_fills.values())
    if unsigned_abs(total_maker_fill) > base_asset_amount:
        raise ProtocolError(
            ErrorCode.DefaultError,
            f"invalid total maker fill {total_maker_fill} total fill {base_asset_amount}",
        )

    taker_margin_type = (
        MarginRequirementType.Maintenance
        if user_order_position_decreasing
        else MarginRequirementType.Fill
    )
    if not _meets_fill_margin(
        ctx,
        user,
        taker_margin_type,
        ctx.oracle_stale_for_margin and not user_order_position_decreasing,
    ):
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"taker breached the {taker_margin_type.name} margin requirement",
            field="taker",
        )

    for maker_key, maker_base_asset_amount_filled in ctx.maker_fills.items():
        maker = ctx.makers[maker_key]
        margin_type, maker_risk_increasing = select_margin_type_for_perp_maker(
            maker, maker_base_asset_amount_filled, market_index
        )
        if (
            ctx.oracle_stale_for_margin
            and not user_order_position_decreasing
            and maker_risk_increasing
        ):
            raise ProtocolError(
                ErrorCode.InvalidOracle,
                "taker or maker must be reducing position if oracle stale for margin",
            )
        if not _meets_fill_margin(
            ctx, maker, margin_type, ctx.oracle_stale_for_margin and maker_risk_increasing
        ):
            raise ProtocolError(
                ErrorCode.InsufficientCollateral,
                f"maker {maker_key[0].hex()[:16]}.. breached the {margin_type.name} margin "
                "requirement",
                field="makers",
            )

    if ctx.oracle_stale_for_margin and _open_interest(market) > open_interest_before:
        raise ProtocolError(
            ErrorCode.InvalidOracle, "oracle stale for margin but open interest increased"
        )
    return base_asset_amount, quote_asset_amount


def cancel_reduce_only_trigger_orders(
    accounts: Accounts, user: User, perp_market_index: int
) -> int:
    """Cancel the user's untriggered reduce-only trigger orders in the market (its position is
    closed: they could only open one); how many were cancelled."""
    cancelled = 0
    for order in list(user.orders):
        if (
            order.status != OrderStatus.Open
            or order.market_type != MarketType.Perp
            or order.market_index != perp_market_index
            or not order.must_be_triggered()
            or order.triggered()
            or not order.reduce_only
        ):
            continue
        _cancel(accounts, user, order, "cancel", EXPLANATION_REDUCE_ONLY_ORDER_INCREASED_POSITION)
        cancelled += 1
    return cancelled


def _resolve_filler(
    accounts: Accounts,
    user: User,
    user_key: UserKey,
    filler_key: UserKey,
    maker_keys: set[UserKey],
) -> tuple[User | None, UserStats | None, User | None, UserStats | None]:
    """``(filler, filler stats, maker as filler, its stats)``: a filler that is the taker, a
    maker or of the taker's authority earns no filler reward; a maker filling earns the
    reward of what the AMM fills (both as the program)."""
    if filler_key == user_key:
        return None, None, None, None
    filler = accounts.user(filler_key)
    if filler.authority == user.authority:
        return None, None, None, None
    stats = accounts.user_stats(filler.authority)
    if filler_key in maker_keys:
        return None, None, filler, stats
    return filler, stats, None, None


def fill_perp_order(
    accounts: Accounts,
    user_key: UserKey,
    order_id: int,
    filler_key: UserKey,
    makers: Sequence[MakerOrderRef] = (),
    fill_mode: FillMode = FillMode.Fill,
    max_base_asset_amount: int | None = None,
    jit_maker: MakerOrderRef | None = None,
) -> FillResult:
    """Fill the user's perp order ``order_id`` against the named makers and the AMM; see the
    module docstring for every check. ``filler_key`` is the account that earns the filler
    reward (the caller checks that its authority signed)."""
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
    if order.market_type != MarketType.Perp:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a perp order", field="taker_order_id"
        )
    market_index = order.market_index
    market = accounts.perp_market(market_index)
    record = settle_funding_payment(user, user_key, market, now)
    if record is not None:
        accounts.emit(record)

    if market.status not in (MarketStatus.Active, MarketStatus.ReduceOnly) or (
        market.expiry_ts != 0 and now >= market.expiry_ts
    ):
        raise ProtocolError(
            ErrorCode.MarketFillOrderPaused, "market not active", field="market_index"
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

    step_size = market.amm.order_step_size
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

    amm = market.amm
    oracle_price_data = accounts.oracle_price_data(amm.oracle)
    safe_oracle_validity = oracle_validity(
        MarketType.Perp,
        market_index,
        amm.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        amm.oracle_source,
    )
    amm_is_available = amm_can_fill_order(
        market, order, slot, safe_oracle_validity, oracle_price_data
    )
    oracle_stale_for_margin = (
        oracle_price_data.delay > state.oracle_guard_rails.validity.slots_before_stale_for_margin
    )
    oracle_price = oracle_price_data.price
    valid_oracle_price = (
        oracle_price
        if is_oracle_valid_for_action(safe_oracle_validity, DriftAction.OracleOrderPrice)
        else None
    )

    maker_keys = {ref.user_key for ref in makers}
    filler, filler_stats, maker_as_filler, maker_as_filler_stats = _resolve_filler(
        accounts, user, user_key, filler_key, maker_keys
    )
    referrer, referrer_stats = _referrer(accounts, user_stats)

    ctx = PerpFillContext(
        accounts=accounts,
        state=state,
        fill_mode=fill_mode,
        market=market,
        user=user,
        user_key=user_key,
        user_stats=user_stats,
        order=order,
        filler_key=filler_key,
        filler=filler,
        filler_stats=filler_stats,
        maker_as_filler=maker_as_filler,
        maker_as_filler_stats=maker_as_filler_stats,
        referrer=referrer,
        referrer_stats=referrer_stats,
        fee_structure=state.perp_fee_structure,
        reserve_price_before=reserve_price(amm),
        oracle_price=oracle_price,
        valid_oracle_price=valid_oracle_price,
        now=now,
        slot=slot,
        amm_is_available=amm_is_available,
        oracle_stale_for_margin=oracle_stale_for_margin,
        jit_maker=jit_maker,
    )

    taker_price = get_limit_price_for_fill_mode(
        fill_mode,
        order,
        valid_oracle_price,
        slot,
        amm.order_tick_size,
        _is_prediction_market(market),
    )
    if taker_price is None:
        taker_price = get_fallback_price(
            market,
            order.direction,
            calculate_amm_available_liquidity(amm, order.direction),
            oracle_price,
            _seconds_til_expiry(order, now),
        )
    if order.post_only and not should_expire_order(order, now):
        raise ProtocolError(
            ErrorCode.CantMatchTwoPostOnlys,
            f"order {order_id} is post-only: it makes, it never takes",
            field="taker_order_id",
        )
    maker_orders_info, cancelled = get_maker_orders_info(ctx, makers, taker_price)

    def finish(result: FillResult) -> FillResult:
        _remove_closed_orders(user, market_index)
        for maker in ctx.makers.values():
            _remove_closed_orders(maker, market_index)
        return result

    if should_expire_order(order, now):
        _cancel_with_flat_reward(
            accounts, user, order, filler, market, "expire", EXPLANATION_ORDER_EXPIRED
        )
        return finish(FillResult(0, 0, cancelled + 1))

    if should_cancel_reduce_only_order(
        order, _perp_position(user, market_index).base_asset_amount, step_size
    ):
        raise ProtocolError(
            ErrorCode.ReduceOnlyOrderIncreasedRisk,
            f"reduce-only order {order_id} cannot reduce the position",
            field="taker_order_id",
        )

    base_asset_amount, quote_asset_amount = fulfill_perp_order(
        ctx, maker_orders_info, max_base_asset_amount
    )

    if base_asset_amount != 0:
        fill_price = calculate_fill_price(quote_asset_amount, base_asset_amount, BASE_PRECISION)
        oracle_twap_5min = amm.historical_oracle_data.last_oracle_price_twap_5min
        max_divergence = max_oracle_twap_5min_percent_divergence(state.oracle_guard_rails)
        if not _is_prediction_market(market) and is_oracle_too_divergent_with_twap_5min(
            oracle_price, oracle_twap_5min, max_divergence
        ):
            raise ProtocolError(
                ErrorCode.PriceBandsBreached,
                f"oracle {oracle_price} too divergent from its 5-minute twap {oracle_twap_5min}",
            )
        validate_fill_price_within_price_bands(
            fill_price,
            oracle_price,
            oracle_twap_5min,
            market.margin_ratio_initial,
            max_divergence,
            _is_prediction_market(market),
        )
        market.last_fill_price = fill_price

    position_after = user.get_perp_position(market_index)
    base_asset_amount_after = 0 if position_after is None else position_after.base_asset_amount
    if should_cancel_reduce_only_order(order, base_asset_amount_after, step_size):
        _cancel_with_flat_reward(
            accounts,
            user,
            order,
            filler,
            market,
            "cancel",
            EXPLANATION_REDUCE_ONLY_ORDER_INCREASED_POSITION,
        )
        cancelled += 1
    position_after = user.get_perp_position(market_index)
    if position_after is None or (
        position_after.base_asset_amount == 0
        and position_after.open_asks == 0
        and position_after.open_bids == 0
    ):
        cancelled += cancel_reduce_only_trigger_orders(accounts, user, market_index)
    if base_asset_amount > 0 and order.status == OrderStatus.Open and order.immediate_or_cancel:
        _cancel(accounts, user, order, "cancel", EXPLANATION_IMMEDIATE_OR_CANCEL)
        cancelled += 1

    if base_asset_amount == 0:
        return finish(FillResult(0, 0, cancelled))

    max_open_interest = amm.max_open_interest
    open_interest = _open_interest(market)
    if max_open_interest != 0 and open_interest >= max_open_interest:
        raise ProtocolError(
            ErrorCode.MaxOpenInterest,
            f"open interest ({open_interest}) >= max open interest ({max_open_interest})",
        )

    funding_record = update_funding_rate(
        market_index,
        market,
        oracle_price_data,
        now,
        slot,
        state.oracle_guard_rails,
        False,
        ctx.reserve_price_before,
    )
    if funding_record is not None:
        accounts.emit(funding_record)

    _update_last_active_slot(user, slot)
    return finish(FillResult(base_asset_amount, quote_asset_amount, cancelled))


def prepare_perp_fill(accounts: Accounts, market_index: int) -> None:
    """What the fill instructions do before filling: bring the market's AMM up to date with
    its oracle (``controller::repeg::update_amm``)."""
    clock = accounts.clock
    market = accounts.perp_market(market_index)
    update_amm(
        market,
        accounts.oracle_price_data(market.amm.oracle),
        accounts.state,
        clock.unix_timestamp,
        clock.slot,
    )


# --- trigger orders ------------------------------------------------------------------------------
def update_trigger_order_params(
    order: Order,
    oracle_price_data: OraclePriceData,
    slot: int,
    min_auction_duration: int,
    perp_market: PerpMarket | None,
) -> None:
    """Fire a trigger order: mark it triggered at ``slot`` and give it its auction (perp
    trigger-market orders get an oracle-offset auction, ``OracleTriggerMarket``); a reduce-only
    order that waited more than 150 slots becomes a ``SafeTriggerOrder``."""
    if order.trigger_condition == OrderTriggerCondition.Above:
        order.trigger_condition = OrderTriggerCondition.TriggeredAbove
    elif order.trigger_condition == OrderTriggerCondition.Below:
        order.trigger_condition = OrderTriggerCondition.TriggeredBelow
    else:
        raise ProtocolError(
            ErrorCode.InvalidTriggerOrderCondition,
            f"order {order.order_id} is already triggered",
            field="order_id",
        )
    if slot - order.slot > SAFE_TRIGGER_ORDER_MIN_AGE_SLOTS and order.reduce_only:
        order.bit_flags |= int(OrderBitFlag.SafeTriggerOrder)
    order.slot = slot
    auction_duration, auction_start_price, auction_end_price = (
        calculate_auction_params_for_trigger_order(
            order, oracle_price_data, min_auction_duration, perp_market
        )
    )
    order.auction_duration = auction_duration
    order.auction_start_price = auction_start_price
    order.auction_end_price = auction_end_price
    # Deviation: the program flags spot trigger-market orders too, although their auction
    # (calculate_auction_prices) holds absolute prices, not oracle offsets; only perp ones are.
    if order.order_type == OrderType.TriggerMarket and perp_market is not None:
        order.bit_flags |= int(OrderBitFlag.OracleTriggerMarket)


def find_triggerable_order(user: User, order_id: int) -> Order:
    order = find_open_order(user, order_id)
    if order is None:
        raise ProtocolError(
            ErrorCode.OrderDoesNotExist, f"no open order {order_id}", field="order_id"
        )
    if not order.must_be_triggered():
        raise ProtocolError(
            ErrorCode.OrderNotTriggerable, f"order {order_id} is not triggerable", field="order_id"
        )
    if order.triggered():
        raise ProtocolError(
            ErrorCode.OrderNotTriggerable,
            f"order {order_id} is already triggered",
            field="order_id",
        )
    return order


def emit_trigger_records(
    accounts: Accounts,
    user: User,
    order: Order,
    trigger_price: int,
    oracle_price: int,
    filler_key: UserKey,
    filler_reward: int,
) -> None:
    _emit_order_action(accounts, user, order, "trigger", "")
    accounts.emit(
        TriggerRecord(
            authority=user.authority,
            sub_account_id=user.sub_account_id,
            order_id=order.order_id,
            market_type=order.market_type,
            market_index=order.market_index,
            trigger_price=trigger_price,
            oracle_price=oracle_price,
            filler=filler_key,
            filler_reward=filler_reward,
            slot=accounts.clock.slot,
            ts=accounts.clock.unix_timestamp,
        )
    )


def trigger_order(
    accounts: Accounts, user_key: UserKey, order_id: int, filler_key: UserKey
) -> None:
    """Fire the user's perp trigger order if the oracle has crossed its trigger price.

    ``OrderDoesNotExist``, ``OrderNotTriggerable`` (not a trigger order, or already triggered:
    the program returns without error for a triggered perp order), ``InvalidOrderMarketType``,
    ``UserIsBeingLiquidated`` / ``UserBankrupt``, ``InvalidOracle`` (oracle not valid for
    triggering), ``OrderBreachesOraclePriceLimits`` (oracle 50% or more from its 5-minute
    TWAP), ``OrderDidNotSatisfyTriggerCondition``. The order gets its auction
    (:func:`~protocol.math.auction.calculate_auction_params_for_trigger_order`), counts in the
    open bids/asks, and the user pays the keeper the flat filler fee. A triggered order that
    increases risk for a user below initial margin is cancelled (as the program).
    """
    state = accounts.state
    slot = accounts.clock.slot
    user = accounts.user(user_key)
    order = find_triggerable_order(user, order_id)
    if order.market_type != MarketType.Perp:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a perp order", field="order_id"
        )
    validate_user_not_being_liquidated(user, accounts)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user is bankrupt", field="authority")

    market = accounts.perp_market(order.market_index)
    oracle_price_data = accounts.oracle_price_data(market.amm.oracle)
    validity = oracle_validity(
        MarketType.Perp,
        market.market_index,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        market.amm.oracle_source,
    )
    if not is_oracle_valid_for_action(validity, DriftAction.TriggerOrder):
        raise ProtocolError(ErrorCode.InvalidOracle, f"oracle {validity} cannot trigger orders")
    oracle_price = oracle_price_data.price
    if is_oracle_too_divergent_with_twap_5min(
        oracle_price,
        market.amm.historical_oracle_data.last_oracle_price_twap_5min,
        max_oracle_twap_5min_percent_divergence(state.oracle_guard_rails),
    ):
        raise ProtocolError(
            ErrorCode.OrderBreachesOraclePriceLimits, "oracle price vs twap too divergent"
        )
    trigger_price = cast_u64(oracle_price)  # the program's median trigger price is off
    if not order_satisfies_trigger_condition(order, trigger_price):
        raise ProtocolError(
            ErrorCode.OrderDidNotSatisfyTriggerCondition,
            f"oracle {trigger_price} does not satisfy {order.trigger_condition.name} "
            f"{order.trigger_price}",
            field="order_id",
        )

    position = _perp_position(user, market.market_index)
    _, worst_case_liability_value_before = worst_case_liability_value(
        position, oracle_price, market.contract_type
    )
    update_trigger_order_params(
        order, oracle_price_data, slot, TRIGGER_ORDER_MIN_AUCTION_DURATION, market
    )
    increase_open_bids_and_asks(
        position, order.direction, order.base_asset_amount, update_open_bids_and_asks(order)
    )

    filler = None if filler_key == user_key else accounts.user(filler_key)
    filler_reward = pay_keeper_flat_reward_for_perps(
        user, filler, market, state.perp_fee_structure.flat_filler_fee, slot
    )
    emit_trigger_records(
        accounts, user, order, trigger_price, oracle_price, filler_key, filler_reward
    )

    _, worst_case_liability_value_after = worst_case_liability_value(
        position, oracle_price, market.contract_type
    )
    is_risk_increasing = worst_case_liability_value_after > worst_case_liability_value_before
    if (
        is_risk_increasing
        and not order.reduce_only
        and not meets_initial_margin_requirement(user, accounts)
    ):
        _cancel(accounts, user, order, "cancel", EXPLANATION_INSUFFICIENT_FREE_COLLATERAL)
    _update_last_active_slot(user, slot)


# --- signed intents ------------------------------------------------------------------------------
def place_signed_msg_taker_order(accounts: Accounts, verified: VerifiedIntent) -> int:
    """Place the order a user signed, exactly from its signed params: marked
    ``SignedMessage`` and backdated to the slot the user signed at (its auction started then);
    the uuid is spent (``InvalidSignedMsgOrderId`` on reuse) and remembered with the order id.
    The program's auction sanitizing applies (it only ever moves a price toward the user).
    ``InvalidSignedMsgOrderParam`` if the order could not be placed (the program silently
    places nothing)."""
    intent = verified.intent
    key = (intent.authority, intent.sub_account_id)
    user = accounts.user(key)
    accounts.use_signed_msg_uuid(key, intent.uuid, intent.max_slot(), user.next_order_id)
    order_id = place_perp_order(
        accounts,
        key,
        intent.params,
        PlaceOrderOptions(signed_msg_taker_order_slot=intent.slot),
    )
    if order_id is None:
        raise ProtocolError(
            ErrorCode.InvalidSignedMsgOrderParam,
            "the signed order could not be placed (expired or a post-only order that would take)",
            field="intent.params",
        )
    return order_id
