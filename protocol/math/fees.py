"""Fill fees: taker fees, maker rebates, filler and referrer rewards (the program's
``math/fees.rs``, with ``calculate_filler_multiplier_for_matched_orders`` of
``math/matching.rs``).

Units: quote amounts and fees QUOTE_PRECISION (1e6); fee tiers are fractions
``numerator / denominator`` (taker fee and maker rebate over FEE_DENOMINATOR = 1e5, i.e. a
numerator of 100 is 10 bps; referrer and referee shares over FEE_PERCENTAGE_DENOMINATOR =
100); ``fee_adjustment`` is a market's signed percent (-100 = free, +100 = double, over
FEE_ADJUSTMENT_MAX); the filler multiplier is in TEN_BPS units (1000 = 1x); slots are slots.

Rounding, as the program's: the taker fee rounds *up* (``safe_div_ceil``) and the maker rebate
*down*, so a matched fill never pays out more than it takes in. A negative fee adjustment takes
a truncated share off the taker fee and a ceiled share off the rebate; a positive one adds a
ceiled share to the fee and a truncated share to the rebate. The referee discount, the
referrer reward and the size-based filler reward truncate.

Invariants (for a taker with a maker): ``user_fee == fee_to_market + filler_reward +
referrer_reward + maker_rebate``; against the AMM, ``user_fee == fee_to_market -
quote_asset_amount_surplus + filler_reward + referrer_reward``. Every amount except
``fee_to_market`` (and ``fee_to_market_for_lp``) is non-negative; a split that would make
``fee_to_market`` negative raises ``MathError`` as the program's unsigned subtraction does.

Deviations from the program, and why:

* builder codes are not modelled (no ``builder_fee_bps`` argument, no ``builder_fee`` field);
  the external-venue fee function (``calculate_fee_for_fulfillment_with_external_market``) is
  out of scope, as spot fills here only match resting orders.
* the stake discount of :func:`determine_perp_fee_tier` reads the program's
  ``UserStats.if_staked_gov_token_amount``; this model's :class:`~protocol.state.UserStats`
  has no governance-token stake, so the insurance-fund stake it does hold,
  ``if_staked_quote_asset_amount`` (QUOTE_PRECISION, the same units and thresholds), stands in.
* ``FeeStructure.fee_tiers`` is a tuple of the tiers a structure defines rather than the
  program's fixed array of ten; a tier index past its end reads :class:`FeeTier` defaults (no
  fee, no rebate), as the program's unused array slots are ``FeeTier::default()``.
* the program's fee functions read a market's ``fee_adjustment`` field directly; so do callers
  here (``PerpMarket.fee_adjustment`` / ``SpotMarket.fee_adjustment``), there is no accessor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.constants import (
    BID_ASK_SPREAD_PRECISION,
    FEE_ADJUSTMENT_MAX,
    FIVE_MILLION_QUOTE,
    ONE_HUNDRED_MILLION_QUOTE,
    ONE_HUNDRED_THOUSAND_QUOTE,
    ONE_MILLION_QUOTE,
    ONE_THOUSAND_QUOTE,
    QUOTE_PRECISION,
    TEN_BPS,
    TEN_MILLION_QUOTE,
    TEN_THOUSAND_QUOTE,
    TWENTY_FIVE_THOUSAND_QUOTE,
    TWO_HUNDRED_FIFTY_THOUSAND_QUOTE,
)
from protocol.errors import MathError
from protocol.math.amm import get_proportion_u128
from protocol.numeric import (
    U64_MAX,
    cast_i64,
    cast_u32,
    cast_u64,
    div_trunc,
    safe_div_ceil,
    sqrt,
)
from protocol.state.state import FeeStructure, FeeTier, OrderFillerRewardStructure
from protocol.state.user import UserStats
from protocol.types import MarketType, PositionDirection

__all__ = [
    "FillFees",
    "calculate_fee_for_fulfillment_with_amm",
    "calculate_fee_for_fulfillment_with_match",
    "calculate_filler_multiplier_for_matched_orders",
    "calculate_filler_reward",
    "calculate_maker_rebate",
    "calculate_referee_fee_and_referrer_reward",
    "calculate_taker_fee",
    "determine_perp_fee_tier",
    "determine_spot_fee_tier",
    "determine_user_fee_tier",
]


@dataclass(frozen=True, slots=True)
class FillFees:
    """How one fill's quote amount is split (QUOTE_PRECISION).

    ``user_fee`` is what the taker pays (after any referee discount); ``fee_to_market`` is the
    market's share (against the AMM it includes the AMM's price surplus);
    ``fee_to_market_for_lp`` is the part of it that came from fees rather than surplus.
    """

    user_fee: int
    maker_rebate: int
    fee_to_market: int
    fee_to_market_for_lp: int
    filler_reward: int
    referrer_reward: int
    referee_discount: int


def _sub_u64(a: int, b: int) -> int:
    # the program's u64 safe_sub: an underflow is a MathError, never a negative amount
    if b > a:
        raise MathError(f"u64 subtraction underflow: {a} - {b}")
    return a - b


def calculate_fee_for_fulfillment_with_amm(
    user_stats: UserStats,
    quote_asset_amount: int,
    fee_structure: FeeStructure,
    order_slot: int,
    clock_slot: int,
    reward_filler: bool,
    reward_referrer: bool,
    referrer_stats: UserStats | None,
    quote_asset_amount_surplus: int,
    is_post_only: bool,
    fee_adjustment: int,
    user_high_leverage_mode: bool = False,
) -> FillFees:
    """Fees for a fill against the AMM.

    A taker pays its tier's fee (doubled in high-leverage mode), less the referee discount when
    ``reward_referrer``; the filler and referrer are paid out of it and the rest, plus the
    AMM's ``quote_asset_amount_surplus`` over the fill price, goes to the market. A post-only
    (maker) order filled by the AMM pays no fee: it earns the maker rebate out of the AMM's
    surplus, and the filler is paid from what remains of that surplus.
    """
    fee_tier = determine_user_fee_tier(
        user_stats, fee_structure, MarketType.Perp, user_high_leverage_mode
    )

    if is_post_only:
        maker_rebate = calculate_maker_rebate(quote_asset_amount, fee_tier, fee_adjustment)
        fee = _sub_u64(cast_u64(quote_asset_amount_surplus), maker_rebate)
        filler_reward = (
            calculate_filler_reward(
                fee, order_slot, clock_slot, 0, fee_structure.filler_reward_structure
            )
            if reward_filler
            else 0
        )
        return FillFees(
            user_fee=0,
            maker_rebate=maker_rebate,
            fee_to_market=cast_i64(_sub_u64(fee, filler_reward)),
            fee_to_market_for_lp=0,
            filler_reward=filler_reward,
            referrer_reward=0,
            referee_discount=0,
        )

    fee = calculate_taker_fee(quote_asset_amount, fee_tier, fee_adjustment)
    if user_high_leverage_mode:
        fee = cast_u64(fee * 2)

    if reward_referrer:
        fee, referee_discount, referrer_reward = calculate_referee_fee_and_referrer_reward(
            fee, fee_tier, fee_structure.referrer_reward_epoch_upper_bound, referrer_stats
        )
    else:
        referee_discount, referrer_reward = 0, 0

    filler_reward = (
        calculate_filler_reward(
            fee, order_slot, clock_slot, 0, fee_structure.filler_reward_structure
        )
        if reward_filler
        else 0
    )

    fee_to_market = cast_i64(
        cast_i64(_sub_u64(_sub_u64(fee, filler_reward), referrer_reward))
        + quote_asset_amount_surplus
    )
    fee_to_market_for_lp = cast_i64(fee_to_market - quote_asset_amount_surplus)
    return FillFees(
        user_fee=fee,
        maker_rebate=0,
        fee_to_market=fee_to_market,
        fee_to_market_for_lp=fee_to_market_for_lp,
        filler_reward=filler_reward,
        referrer_reward=referrer_reward,
        referee_discount=referee_discount,
    )


def calculate_taker_fee(quote_asset_amount: int, fee_tier: FeeTier, fee_adjustment: int) -> int:
    """The tier's fee on ``quote_asset_amount``, rounded up, then scaled by ``fee_adjustment``
    percent (a cut truncates, a surcharge rounds up; never below 0 or above ``u64::MAX``)."""
    taker_fee = cast_u64(
        safe_div_ceil(quote_asset_amount * fee_tier.fee_numerator, fee_tier.fee_denominator)
    )
    if fee_adjustment < 0:
        cut = div_trunc(taker_fee * -fee_adjustment, FEE_ADJUSTMENT_MAX)
        taker_fee = max(taker_fee - cut, 0)
    elif fee_adjustment > 0:
        surcharge = safe_div_ceil(taker_fee * fee_adjustment, FEE_ADJUSTMENT_MAX)
        taker_fee = min(taker_fee + surcharge, U64_MAX)
    return taker_fee


def calculate_maker_rebate(quote_asset_amount: int, fee_tier: FeeTier, fee_adjustment: int) -> int:
    """The tier's rebate on ``quote_asset_amount``, truncated, scaled by ``fee_adjustment`` in
    the direction that keeps it below the matching taker fee (a cut rounds up, a raise down)."""
    maker_fee = cast_u64(
        div_trunc(
            quote_asset_amount * fee_tier.maker_rebate_numerator, fee_tier.maker_rebate_denominator
        )
    )
    if fee_adjustment < 0:
        cut = safe_div_ceil(maker_fee * -fee_adjustment, FEE_ADJUSTMENT_MAX)
        maker_fee = max(maker_fee - cut, 0)
    elif fee_adjustment > 0:
        raise_ = div_trunc(maker_fee * fee_adjustment, FEE_ADJUSTMENT_MAX)
        maker_fee = min(maker_fee + raise_, U64_MAX)
    return maker_fee


def calculate_referee_fee_and_referrer_reward(
    fee: int,
    fee_tier: FeeTier,
    referrer_reward_epoch_upper_bound: int,
    referrer_stats: UserStats | None,
) -> tuple[int, int, int]:
    """``(referee_fee, referee_discount, referrer_reward)``: the referred taker pays the fee
    less the tier's referee discount; the referrer earns the tier's share of the undiscounted
    fee, capped by what it may still earn this epoch (when its stats are known)."""
    referee_discount = cast_u64(
        get_proportion_u128(fee, fee_tier.referee_fee_numerator, fee_tier.referee_fee_denominator)
    )
    max_referrer_reward_from_fee = cast_u64(
        get_proportion_u128(
            fee, fee_tier.referrer_reward_numerator, fee_tier.referrer_reward_denominator
        )
    )
    referee_fee = _sub_u64(fee, referee_discount)
    if referrer_stats is not None:
        max_referrer_reward_in_epoch = max(
            referrer_reward_epoch_upper_bound - referrer_stats.fees.current_epoch_referrer_reward,
            0,
        )
        referrer_reward = min(max_referrer_reward_from_fee, max_referrer_reward_in_epoch)
    else:
        referrer_reward = max_referrer_reward_from_fee
    return referee_fee, referee_discount, referrer_reward


def calculate_filler_reward(
    fee: int,
    order_slot: int,
    clock_slot: int,
    multiplier: int,
    filler_reward_structure: OrderFillerRewardStructure,
) -> int:
    """The lesser of a share of ``fee`` and a reward that grows with the order's age.

    The age reward is ``time_based_reward_lower_bound`` (scaled by ``multiplier`` in TEN_BPS
    units, clamped to 1x..100x) times the fourth root of the slots since the order was placed
    (at least one slot), so a keeper gains by filling old orders, not only large ones.
    """
    size_filler_reward = cast_u64(
        div_trunc(
            fee * filler_reward_structure.reward_numerator,
            filler_reward_structure.reward_denominator,
        )
    )

    multiplier_precision = TEN_BPS
    min_time_filler_reward = div_trunc(
        filler_reward_structure.time_based_reward_lower_bound
        * min(max(multiplier, multiplier_precision), multiplier_precision * 100),
        multiplier_precision,
    )

    if order_slot > clock_slot:
        raise MathError(f"order slot {order_slot} is after clock slot {clock_slot}")
    slots_since_order = max(1, clock_slot - order_slot)
    # the floor of the fourth root is the floor of the square root of the floored square root;
    # scaling by 1e8 first keeps two decimals, taken back out by the / 100
    fourth_root = sqrt(sqrt(slots_since_order * 100_000_000))
    time_filler_reward = cast_u64(div_trunc(fourth_root * min_time_filler_reward, 100))

    return min(size_filler_reward, time_filler_reward)


def calculate_fee_for_fulfillment_with_match(
    taker_stats: UserStats,
    maker_stats: UserStats | None,
    quote_asset_amount: int,
    fee_structure: FeeStructure,
    order_slot: int,
    clock_slot: int,
    filler_multiplier: int,
    reward_referrer: bool,
    referrer_stats: UserStats | None,
    market_type: MarketType,
    fee_adjustment: int,
    user_high_leverage_mode: bool = False,
) -> FillFees:
    """Fees for a taker matched with a maker's order.

    The taker pays its tier's fee (doubled in high-leverage mode, less any referee discount);
    the maker earns its own tier's rebate (the taker's tier without a high-leverage doubling
    when the maker's stats are unknown); a filler multiplier of 0 means no filler reward. The
    market keeps the rest.
    """
    taker_fee_tier = determine_user_fee_tier(
        taker_stats, fee_structure, market_type, user_high_leverage_mode
    )
    maker_fee_tier = determine_user_fee_tier(
        maker_stats if maker_stats is not None else taker_stats,
        fee_structure,
        market_type,
        False,
    )

    taker_fee = calculate_taker_fee(quote_asset_amount, taker_fee_tier, fee_adjustment)
    if user_high_leverage_mode:
        taker_fee = cast_u64(taker_fee * 2)

    if reward_referrer:
        taker_fee, referee_discount, referrer_reward = calculate_referee_fee_and_referrer_reward(
            taker_fee,
            taker_fee_tier,
            fee_structure.referrer_reward_epoch_upper_bound,
            referrer_stats,
        )
    else:
        referee_discount, referrer_reward = 0, 0

    maker_rebate = calculate_maker_rebate(quote_asset_amount, maker_fee_tier, fee_adjustment)

    filler_reward = (
        0
        if filler_multiplier == 0
        else calculate_filler_reward(
            taker_fee,
            order_slot,
            clock_slot,
            filler_multiplier,
            fee_structure.filler_reward_structure,
        )
    )

    fee_to_market = cast_i64(
        _sub_u64(_sub_u64(_sub_u64(taker_fee, filler_reward), referrer_reward), maker_rebate)
    )
    return FillFees(
        user_fee=taker_fee,
        maker_rebate=maker_rebate,
        fee_to_market=fee_to_market,
        fee_to_market_for_lp=0,
        filler_reward=filler_reward,
        referrer_reward=referrer_reward,
        referee_discount=referee_discount,
    )


def determine_user_fee_tier(
    user_stats: UserStats,
    fee_structure: FeeStructure,
    market_type: MarketType,
    user_high_leverage_mode: bool = False,
) -> FeeTier:
    """The fee tier that applies to ``user_stats``: perp tiers by 30-day volume and stake
    (high-leverage mode always pays the first tier), spot always the first tier."""
    if market_type == MarketType.Perp:
        if user_high_leverage_mode:
            return _fee_tier(fee_structure, 0)
        return determine_perp_fee_tier(user_stats, fee_structure)
    return determine_spot_fee_tier(user_stats, fee_structure)


def _fee_tier(fee_structure: FeeStructure, index: int) -> FeeTier:
    tiers = fee_structure.fee_tiers
    return tiers[index] if index < len(tiers) else FeeTier()


def _get_total_30d_volume(user_stats: UserStats) -> int:
    # UserStats::get_total_30d_volume: taker plus maker volume (fills as a keeper do not count)
    return cast_u64(user_stats.taker_volume_30d + user_stats.maker_volume_30d)


_TIER_LENGTH = 5
# 30-day taker+maker volume (QUOTE) below which each tier applies; past the last, tier 5.
_VOLUME_THRESHOLDS = (
    ONE_MILLION_QUOTE * 2,
    FIVE_MILLION_QUOTE * 2,
    TEN_MILLION_QUOTE * 2,
    TEN_MILLION_QUOTE * 8,
    ONE_HUNDRED_MILLION_QUOTE * 2,
)
# Stake (QUOTE) below which each discount step applies; a dollar (five at the top) of slack so
# a stake that rounds to the round number still qualifies.
_STAKE_THRESHOLDS = (
    ONE_THOUSAND_QUOTE - QUOTE_PRECISION,
    TEN_THOUSAND_QUOTE - QUOTE_PRECISION,
    TWENTY_FIVE_THOUSAND_QUOTE * 2 - QUOTE_PRECISION,
    ONE_HUNDRED_THOUSAND_QUOTE - QUOTE_PRECISION,
    TWO_HUNDRED_FIFTY_THOUSAND_QUOTE - QUOTE_PRECISION * 5,
)
# Percent off the taker fee and added to the maker rebate, by stake step.
_STAKE_BENEFIT_FRAC = (0, 5, 10, 20, 30, 40)
# 5%, 10% and 20% are applied as a division by these (the program's fast path); the results
# equal the general percentage formula's except for the rounding of each division.
_STAKE_BENEFIT_DIV_SCALAR = {5: 20, 10: 10, 20: 5}


def _first_index_below(value: int, thresholds: tuple[int, ...]) -> int:
    for i, threshold in enumerate(thresholds):
        if value < threshold:
            return i
    return _TIER_LENGTH


def determine_perp_fee_tier(user_stats: UserStats, fee_structure: FeeStructure) -> FeeTier:
    """The tier for the user's 30-day volume, improved by its stake: the taker fee numerator
    is cut by the stake's benefit percent and the maker rebate numerator raised by it (the fee
    numerator rounds down, i.e. the cut rounds up; the raised rebate truncates)."""
    fee_tier_index = _first_index_below(_get_total_30d_volume(user_stats), _VOLUME_THRESHOLDS)
    stake_benefit_index = _first_index_below(
        user_stats.if_staked_quote_asset_amount, _STAKE_THRESHOLDS
    )
    stake_benefit = _STAKE_BENEFIT_FRAC[stake_benefit_index]

    tier = _fee_tier(fee_structure, fee_tier_index)
    if stake_benefit == 0:
        return tier

    div_scalar = _STAKE_BENEFIT_DIV_SCALAR.get(stake_benefit)
    if div_scalar is not None:
        fee_numerator = max(tier.fee_numerator - safe_div_ceil(tier.fee_numerator, div_scalar), 0)
        maker_rebate_numerator = cast_u32(
            tier.maker_rebate_numerator + div_trunc(tier.maker_rebate_numerator, div_scalar)
        )
    else:
        fee_numerator = cast_u32(
            safe_div_ceil(tier.fee_numerator * max(100 - stake_benefit, 0), 100)
        )
        maker_rebate_numerator = cast_u32(
            div_trunc(tier.maker_rebate_numerator * (100 + stake_benefit), 100)
        )
    return replace(tier, fee_numerator=fee_numerator, maker_rebate_numerator=maker_rebate_numerator)


def determine_spot_fee_tier(user_stats: UserStats, fee_structure: FeeStructure) -> FeeTier:
    """Spot fills always use the first tier (``user_stats`` is kept for the program's
    signature)."""
    del user_stats
    return _fee_tier(fee_structure, 0)


def calculate_filler_multiplier_for_matched_orders(
    maker_price: int, maker_direction: PositionDirection, oracle_price: int
) -> int:
    """The filler-reward multiplier (TEN_BPS = 1x) for a matched fill: 2x at the oracle price,
    one more 1x per 10 bps the maker's price improves on the oracle (for the taker), one less
    per 10 bps it is worse; clamped to 1x..100x."""
    # how far the oracle is above the maker's price, in BID_ASK_SPREAD_PRECISION
    price_pct_diff = cast_i64(
        div_trunc((oracle_price - maker_price) * BID_ASK_SPREAD_PRECISION, oracle_price)
    )
    if maker_direction == PositionDirection.Long:
        multiplier = -price_pct_diff + TEN_BPS * 2
    else:
        multiplier = price_pct_diff + TEN_BPS * 2
    return cast_u64(min(max(multiplier, TEN_BPS), TEN_BPS * 100))
