"""Liquidation math (the program's ``math/liquidation.rs``, with the liquidation helpers of
``state/perp_market.rs``, ``math/margin.rs`` and ``math/spot_swap.rs`` it relies on).

Units: margin shortages and values QUOTE_PRECISION (1e6); prices PRICE_PRECISION (1e6); perp
base BASE_PRECISION (1e9); spot amounts the mint's units (``*_decimals`` says which); margin
ratios MARGIN_PRECISION (1e4); asset/liability weights SPOT_WEIGHT_PRECISION (1e4); liquidator
and insurance-fund fees, and the liquidation multipliers built from them,
LIQUIDATION_FEE_PRECISION (1e6); percentages to liquidate LIQUIDATION_PCT_PRECISION (1e4).

Every quantity here is unsigned in the program (``u32``/``u64``/``u128``) except the funding
delta; the functions take and return non-negative ints. Where the program subtracts unsigned
values with ``safe_sub`` an underflow is a :class:`~protocol.errors.MathError`; where it uses
``saturating_sub`` the result stops at 0; ``safe_div`` by zero is a ``MathError``; casting a
negative price to ``u128`` is a :class:`~protocol.errors.CastingError`. "No limit" results are
the program's sentinels ``u64::MAX`` / ``u128::MAX`` (:data:`~protocol.numeric.U64_MAX`,
:data:`~protocol.numeric.U128_MAX`).

Mapping of program items that are not free functions there:

* ``PerpMarket::get_base_liquidator_fee`` / ``get_max_liquidation_fee`` ->
  :func:`get_base_liquidator_fee` / :func:`get_max_liquidation_fee`
* ``ContractTier::is_as_safe_as`` / ``is_as_safe_as_asset`` -> same names, taking the tier
  first (``is_as_safe_as_contract`` lives in :mod:`protocol.math.auction`)
* ``math/margin.rs::calculate_user_safest_position_tiers`` and
  ``math/spot_swap.rs::calculate_swap_price`` -> same names here, as liquidation is their only
  user so far.

Deviations: there is no high-leverage mode, so :func:`get_base_liquidator_fee` is always the
market's ``liquidator_fee``. ``get_liquidation_order_params`` (used only by the program's
``liquidate_perp_with_fill``) is not modelled.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    FUNDING_RATE_TO_QUOTE_PRECISION_PRECISION_RATIO,
    LIQUIDATION_FEE_INCREASE_PER_SLOT,
    LIQUIDATION_FEE_PRECISION,
    LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO,
    LIQUIDATION_PCT_PRECISION,
    MARGIN_PRECISION,
    MAX_LIQUIDATION_MULTIPLIER,
    PRICE_PRECISION,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
    QUOTE_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.auction import is_as_safe_as_contract
from protocol.math.spot_balance import get_token_amount
from protocol.numeric import (
    U32_MAX,
    U64_MAX,
    U128_MAX,
    cast_u32,
    cast_u64,
    cast_u128,
    div_trunc,
    safe_div_ceil,
)
from protocol.types import AssetTier, ContractTier, SpotBalanceType

if TYPE_CHECKING:
    from protocol.accounts import MarketReader
    from protocol.state.perp_market import PerpMarket
    from protocol.state.spot_market import SpotMarket
    from protocol.state.user import User

__all__ = [
    "LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS",
    "LiquidationMultiplierType",
    "calculate_asset_transfer_for_liability_transfer",
    "calculate_base_asset_amount_to_cover_margin_shortage",
    "calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy",
    "calculate_funding_rate_deltas_to_resolve_bankruptcy",
    "calculate_liability_transfer_implied_by_asset_amount",
    "calculate_liability_transfer_to_cover_margin_shortage",
    "calculate_liquidation_multiplier",
    "calculate_max_pct_to_liquidate",
    "calculate_perp_if_fee",
    "calculate_spot_if_fee",
    "calculate_swap_price",
    "calculate_user_safest_position_tiers",
    "get_base_liquidator_fee",
    "get_liquidation_fee",
    "get_max_liquidation_fee",
    "is_as_safe_as",
    "is_as_safe_as_asset",
    "validate_swap_within_liquidation_boundaries",
    "validate_transfer_satisfies_limit_price",
]

# After this many slots in liquidation (~10 minutes) the liquidator fee starts to grow.
LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS = 1_500


def _sub_u(a: int, b: int, what: str) -> int:
    # an unsigned safe_sub: underflow is the program's MathError
    if b > a:
        raise MathError(f"{what}: {a} - {b} underflows")
    return a - b


def _decimal_scales(numerator_decimals: int, denominator_decimals: int) -> tuple[int, int]:
    """``(10^(n-d), 1)`` when ``n > d``, else ``(1, 10^(d-n))``: the factors that bring an
    amount with ``denominator_decimals`` to ``numerator_decimals``."""
    if numerator_decimals > denominator_decimals:
        return 10 ** (numerator_decimals - denominator_decimals), 1
    return 1, 10 ** (denominator_decimals - numerator_decimals)


# --- how much to take over ----------------------------------------------------------------------
def calculate_base_asset_amount_to_cover_margin_shortage(
    margin_shortage: int,
    margin_ratio: int,
    liquidation_fee: int,
    if_liquidation_fee: int,
    oracle_price: int,
    quote_oracle_price: int,
) -> int:
    """Base (BASE_PRECISION) whose transfer frees ``margin_shortage``: each unit frees its
    value times ``margin_ratio`` (MARGIN_PRECISION, with the liquidation buffer) less the
    liquidator fee it pays, less the insurance-fund fee. ``u64::MAX`` when a transfer frees
    nothing (fee at or above the margin ratio, or no price)."""
    margin_ratio = margin_ratio * LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO
    if oracle_price == 0 or margin_ratio <= liquidation_fee:
        return U64_MAX
    price = cast_u128(oracle_price)
    freed_per_base = div_trunc(
        div_trunc(price * cast_u128(quote_oracle_price), PRICE_PRECISION)
        * (margin_ratio - liquidation_fee),
        LIQUIDATION_FEE_PRECISION,
    )
    if_fee_per_base = div_trunc(price * if_liquidation_fee, LIQUIDATION_FEE_PRECISION)
    denominator = _sub_u(freed_per_base, if_fee_per_base, "base to cover margin shortage")
    return cast_u64(
        div_trunc(margin_shortage * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO, denominator)
    )


def calculate_liability_transfer_to_cover_margin_shortage(
    margin_shortage: int,
    asset_weight: int,
    asset_liquidation_multiplier: int,
    liability_weight: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
    if_liquidation_fee: int,
) -> int:
    """Liability tokens (mint units) whose transfer, with the asset it buys at the liquidation
    multipliers, frees ``margin_shortage``; at least 1. ``u128::MAX`` when the asset side
    weighs as much as the liability side (no transfer can free margin). Weights carry an extra
    factor 10 for precision, as in the program."""
    if asset_weight >= liability_weight:
        return U128_MAX
    numerator_scale, denominator_scale = _decimal_scales(liability_decimals, 6)

    liability_weight_component = liability_weight * 10
    asset_weight_component = div_trunc(
        asset_weight * 10 * asset_liquidation_multiplier, liability_liquidation_multiplier
    )
    if asset_weight_component >= liability_weight_component:
        return U128_MAX

    price = cast_u128(liability_price)
    if_fee_component = (
        div_trunc(price * if_liquidation_fee, LIQUIDATION_FEE_PRECISION) * liability_weight * 10
    )
    denominator = _sub_u(
        price * (liability_weight_component - asset_weight_component),
        if_fee_component,
        "liability transfer to cover margin shortage",
    )
    transfer = div_trunc(
        margin_shortage * numerator_scale * PRICE_PRECISION * SPOT_WEIGHT_PRECISION * 10,
        denominator,
    )
    return max(div_trunc(transfer, denominator_scale), 1)


def calculate_liability_transfer_implied_by_asset_amount(
    asset_amount: int,
    asset_liquidation_multiplier: int,
    asset_decimals: int,
    asset_price: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
) -> int:
    """The liability (mint units) that ``asset_amount`` pays for at the liquidation
    multipliers; rounded up, so the whole asset may go."""
    numerator_scale, denominator_scale = _decimal_scales(liability_decimals, asset_decimals)
    transfer = safe_div_ceil(
        asset_amount * numerator_scale * cast_u128(asset_price) * liability_liquidation_multiplier,
        cast_u128(liability_price) * asset_liquidation_multiplier,
    )
    return safe_div_ceil(transfer, denominator_scale)


def calculate_asset_transfer_for_liability_transfer(
    asset_amount: int,
    asset_liquidation_multiplier: int,
    asset_decimals: int,
    asset_price: int,
    liability_transfer: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
) -> int:
    """The asset (mint units, at least 1) the liquidator receives for ``liability_transfer``;
    snapped to the whole ``asset_amount`` when the two differ by less than $1 so no dust
    deposit is left behind."""
    numerator_scale, denominator_scale = _decimal_scales(asset_decimals, liability_decimals)
    asset_transfer = max(
        div_trunc(
            div_trunc(
                liability_transfer
                * numerator_scale
                * cast_u128(liability_price)
                * asset_liquidation_multiplier,
                cast_u128(asset_price) * liability_liquidation_multiplier,
            ),
            denominator_scale,
        ),
        1,
    )
    value_numerator_scale, value_denominator_scale = _decimal_scales(asset_decimals, 6)
    asset_delta = abs(asset_transfer - asset_amount)
    asset_value_delta = div_trunc(
        div_trunc(asset_delta * cast_u128(asset_price), PRICE_PRECISION) * value_numerator_scale,
        value_denominator_scale,
    )
    if asset_value_delta < QUOTE_PRECISION:
        asset_transfer = asset_amount
    return asset_transfer


# --- fees -----------------------------------------------------------------------------------------
class LiquidationMultiplierType(IntEnum):
    Discount = 0
    Premium = 1


def calculate_liquidation_multiplier(
    liquidation_fee: int, multiplier_type: LiquidationMultiplierType
) -> int:
    """1 + fee (``Premium``, for the asset the liquidator receives) or 1 - fee (``Discount``,
    for the liability it takes), LIQUIDATION_FEE_PRECISION."""
    if multiplier_type is LiquidationMultiplierType.Premium:
        return cast_u32(LIQUIDATION_FEE_PRECISION + liquidation_fee)
    return _sub_u(LIQUIDATION_FEE_PRECISION, liquidation_fee, "liquidation multiplier")


def calculate_perp_if_fee(
    margin_shortage: int,
    user_base_asset_amount: int,
    margin_ratio: int,
    liquidator_fee: int,
    oracle_price: int,
    quote_oracle_price: int,
    max_if_liquidation_fee: int,
) -> int:
    """The insurance-fund fee (LIQUIDATION_FEE_PRECISION) on a perp liquidation: what is left
    of the margin ratio after the liquidator fee and the shortage per unit of notional, times
    95% (so the fee cannot itself make the user bankrupt), capped at the market's
    ``if_liquidation_fee``."""
    margin_ratio = margin_ratio * LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO
    if (
        oracle_price == 0
        or quote_oracle_price == 0
        or margin_ratio <= liquidator_fee
        or user_base_asset_amount == 0
    ):
        return 0
    price = div_trunc(cast_u128(oracle_price) * cast_u128(quote_oracle_price), PRICE_PRECISION)
    shortage_ratio = div_trunc(
        div_trunc(margin_shortage * BASE_PRECISION, user_base_asset_amount) * PRICE_PRECISION,
        price,
    )
    shortage_ratio = min(shortage_ratio, U32_MAX)  # the program's cast::<u32>().unwrap_or(MAX)
    implied_if_fee = div_trunc(max(margin_ratio - liquidator_fee - shortage_ratio, 0) * 19, 20)
    return min(max_if_liquidation_fee, implied_if_fee)


def calculate_spot_if_fee(
    margin_shortage: int,
    token_amount: int,
    asset_weight: int,
    asset_liquidation_multiplier: int,
    liability_weight: int,
    liability_liquidation_multiplier: int,
    liability_decimals: int,
    liability_price: int,
    max_if_fee: int,
) -> int:
    """The insurance-fund fee (LIQUIDATION_FEE_PRECISION) on a spot liquidation: the weight gap
    left after the liquidator's premium and the shortage per unit of liability value, as a
    share of the liability weight, capped at ``max_if_fee``."""
    if (
        asset_weight >= liability_weight
        or liability_price == 0
        or token_amount == 0
        or liability_liquidation_multiplier == 0
    ):
        return 0
    token_precision = 10**liability_decimals
    weight_scale = LIQUIDATION_FEE_PRECISION // SPOT_WEIGHT_PRECISION
    liability_weight = liability_weight * weight_scale
    asset_weight = asset_weight * weight_scale

    weight_gap = max(
        liability_weight
        - div_trunc(asset_weight * asset_liquidation_multiplier, liability_liquidation_multiplier),
        0,
    )
    # price and quote precision are the same, so the quotient is a fee-precision ratio
    shortage_ratio = div_trunc(
        div_trunc(margin_shortage * LIQUIDATION_FEE_PRECISION * token_precision, token_amount),
        cast_u128(liability_price),
    )
    implied_if_fee = div_trunc(
        max(weight_gap - shortage_ratio, 0) * LIQUIDATION_FEE_PRECISION, liability_weight
    )
    return min(max_if_fee, implied_if_fee, U32_MAX)


def get_liquidation_fee(
    base_liquidation_fee: int,
    max_liquidation_fee: int,
    last_active_user_slot: int,
    current_slot: int,
) -> int:
    """The liquidator fee after ``current_slot - last_active_user_slot`` slots in liquidation:
    the base fee for the first LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS, then growing by
    LIQUIDATION_FEE_INCREASE_PER_SLOT per slot elapsed, capped at ``max_liquidation_fee``."""
    slots_elapsed = _sub_u(current_slot, last_active_user_slot, "slots in liquidation")
    if slots_elapsed < LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS:
        return base_liquidation_fee
    increase = min(slots_elapsed * LIQUIDATION_FEE_INCREASE_PER_SLOT, U32_MAX)
    liquidation_fee = min(base_liquidation_fee + increase, U32_MAX)  # saturating u32 add
    return min(liquidation_fee, max_liquidation_fee)


def get_base_liquidator_fee(perp_market: PerpMarket) -> int:
    """``PerpMarket::get_base_liquidator_fee`` without high-leverage mode."""
    return perp_market.liquidator_fee


def get_max_liquidation_fee(perp_market: PerpMarket) -> int:
    """The most the escalating liquidator fee may reach: ``MAX_LIQUIDATION_MULTIPLIER`` times
    the base fee, and never more than the maintenance margin ratio (in fee precision)."""
    margin_ratio_cap = min(
        perp_market.margin_ratio_maintenance * (LIQUIDATION_FEE_PRECISION // MARGIN_PRECISION),
        U32_MAX,
    )
    return min(cast_u32(perp_market.liquidator_fee * MAX_LIQUIDATION_MULTIPLIER), margin_ratio_cap)


# --- pacing ---------------------------------------------------------------------------------------
def calculate_max_pct_to_liquidate(
    user: User,
    margin_shortage: int,
    slot: int,
    initial_pct_to_liquidate: int,
    liquidation_duration: int,
) -> int:
    """How much of ``margin_shortage`` (LIQUIDATION_PCT_PRECISION) may be freed now.

    A shortage under $50 may go at once. Otherwise the freeable share of the whole liquidation
    (this shortage plus ``user.liquidation_margin_freed``) starts at ``initial_pct_to_liquidate``
    and grows linearly to 100% over ``liquidation_duration`` slots from the user's
    ``last_active_slot`` (pinned when the liquidation began); what was already freed counts
    against it.
    """
    if margin_shortage < 50 * QUOTE_PRECISION:
        return LIQUIDATION_PCT_PRECISION
    slots_elapsed = _sub_u(slot, user.last_active_slot, "slots in liquidation")
    if liquidation_duration == 0:
        pct_from_time = LIQUIDATION_PCT_PRECISION  # a zero duration means no pacing
    else:
        pct_from_time = div_trunc(slots_elapsed * LIQUIDATION_PCT_PRECISION, liquidation_duration)
    pct_freeable = min(pct_from_time + initial_pct_to_liquidate, LIQUIDATION_PCT_PRECISION)

    total_margin_shortage = margin_shortage + user.liquidation_margin_freed
    max_margin_freed = div_trunc(total_margin_shortage * pct_freeable, LIQUIDATION_PCT_PRECISION)
    margin_freeable = max(max_margin_freed - user.liquidation_margin_freed, 0)
    return div_trunc(margin_freeable * LIQUIDATION_PCT_PRECISION, margin_shortage)


# --- bankruptcy -----------------------------------------------------------------------------------
def calculate_funding_rate_deltas_to_resolve_bankruptcy(loss: int, market: PerpMarket) -> int:
    """The cumulative funding rate change (FUNDING_RATE_PRECISION per base, >= 0) that charges
    ``|loss|`` (QUOTE_PRECISION) to every open position in proportion to its size, rounded up;
    ``CantResolvePerpBankruptcy`` when the market has no open interest."""
    total_base_asset_amount = abs(market.amm.base_asset_amount_long) + abs(
        market.amm.base_asset_amount_short
    )
    if total_base_asset_amount == 0:
        raise ProtocolError(
            ErrorCode.CantResolvePerpBankruptcy,
            f"perp market {market.market_index} has no open interest to socialise a loss over",
        )
    return (
        safe_div_ceil(abs(loss) * AMM_RESERVE_PRECISION, total_base_asset_amount)
        * FUNDING_RATE_TO_QUOTE_PRECISION_PRECISION_RATIO
    )


def calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy(
    borrow: int, spot_market: SpotMarket
) -> int:
    """How far to lower ``cumulative_deposit_interest`` (SPOT_CUMULATIVE_INTEREST_PRECISION) so
    depositors absorb ``borrow`` tokens, rounded up; 0 when the market has no deposits (the
    program's ``or(Ok(0))`` on the division)."""
    total_deposits = get_token_amount(
        spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit
    )
    if total_deposits == 0:
        return 0
    return safe_div_ceil(spot_market.cumulative_deposit_interest * borrow, total_deposits)


# --- limit prices ---------------------------------------------------------------------------------
def calculate_swap_price(
    amount_out: int, amount_in: int, out_decimals: int, in_decimals: int
) -> int:
    """``amount_out`` per ``amount_in`` in PRICE_PRECISION (``math/spot_swap.rs``)."""
    return div_trunc(
        div_trunc(amount_out * PRICE_PRECISION, 10**out_decimals) * 10**in_decimals, amount_in
    )


def validate_transfer_satisfies_limit_price(
    asset_transfer: int,
    liability_transfer: int,
    asset_decimals: int,
    liability_decimals: int,
    limit_price: int | None,
) -> None:
    """The liquidator's limit: at least ``limit_price`` (PRICE_PRECISION) of asset per unit of
    liability, else ``LiquidationDoesntSatisfyLimitPrice``."""
    if limit_price is None:
        return
    swap_price = calculate_swap_price(
        asset_transfer, liability_transfer, asset_decimals, liability_decimals
    )
    if swap_price < limit_price:
        raise ProtocolError(
            ErrorCode.LiquidationDoesntSatisfyLimitPrice,
            f"transfer price {swap_price} < limit price {limit_price}",
            field="limit_price",
        )


def validate_swap_within_liquidation_boundaries(
    asset_transfer: int,
    liability_transfer: int,
    asset_decimals: int,
    liability_decimals: int,
    asset_price: int,
    liability_price: int,
    asset_liquidation_multiplier: int,
    liability_liquidation_multiplier: int,
) -> None:
    """A liquidation swap may not pay less liability per asset than the oracle prices with the
    liquidation multipliers allow (``InvalidLiquidation``)."""
    swap_price = div_trunc(
        div_trunc(liability_transfer * PRICE_PRECISION, 10**liability_decimals)
        * 10**asset_decimals,
        asset_transfer,
    )
    worst_case_price = div_trunc(
        div_trunc(
            cast_u128(asset_price) * PRICE_PRECISION * liability_liquidation_multiplier,
            cast_u128(liability_price),
        ),
        asset_liquidation_multiplier,
    )
    if swap_price < worst_case_price:
        raise ProtocolError(
            ErrorCode.InvalidLiquidation,
            f"swap price {swap_price} < worst case price {worst_case_price}",
        )


# --- tiers ----------------------------------------------------------------------------------------
def is_as_safe_as_asset(tier: ContractTier, other: AssetTier) -> bool:
    """Contract tiers A-C rank above spot liabilities of ``Cross`` tier or riskier."""
    if other == AssetTier.Unlisted:
        return True
    return other >= AssetTier.Cross and tier <= ContractTier.C


def is_as_safe_as(tier: ContractTier, best_contract: ContractTier, best_asset: AssetTier) -> bool:
    return is_as_safe_as_contract(tier, best_contract) and is_as_safe_as_asset(tier, best_asset)


def calculate_user_safest_position_tiers(
    user: User, reader: MarketReader
) -> tuple[AssetTier, ContractTier]:
    """The safest tier among the user's spot borrows (``Unlisted`` if none) and among its perp
    positions (``HighlySpeculative`` if none)."""
    safest_tier_spot_liability = AssetTier.Unlisted
    safest_tier_perp_liability = ContractTier.HighlySpeculative
    for spot_position in user.spot_positions:
        if spot_position.is_available() or spot_position.balance_type == SpotBalanceType.Deposit:
            continue
        spot_market = reader.spot_market(spot_position.market_index)
        safest_tier_spot_liability = min(safest_tier_spot_liability, spot_market.asset_tier)
    for market_position in user.perp_positions:
        if market_position.is_available():
            continue
        market = reader.perp_market(market_position.market_index)
        safest_tier_perp_liability = min(safest_tier_perp_liability, market.contract_tier)
    return safest_tier_spot_liability, safest_tier_perp_liability
