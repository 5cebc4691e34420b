"""Changing the AMM's depth ``k`` (the program's ``math/cp_curve.rs``).

Units: ``sqrt_k`` and reserves AMM_RESERVE_PRECISION (1e9); peg PEG_PRECISION; budgets and
costs QUOTE_PRECISION (a positive cost is paid by the market, a negative one earned); k scale
factors are ``(numerator, denominator)`` pairs with denominator K_BPS_UPDATE_SCALE (1e6).

Changing ``sqrt_k`` scales both reserves by ``new / old`` (keeping the price up to rounding).
Its cost is the change in what closing users' net position through the curve would pay:
raising k lowers slippage, so when users hold a net position the market pays; lowering k
earns. :func:`calculate_budgeted_k_scale` solves for the k scale whose cost is ``budget``,
bounded per call by ``k_pct_upper_bound`` / ``k_pct_lower_bound``.

Rounding as the program's: the ``sqrt_k`` ratio is truncated and, when shrinking, bumped by one
unit so the base reserve shrinks slightly less; the new quote reserve is ``k / base`` truncated.

Deviations: ``calculate_budgeted_k_scale`` takes the market read-only (the program's ``&mut`` is
not used to write). The program ``assert!``s that the solved scale is positive (a panic); here
that raises :class:`~protocol.errors.MathError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    AMM_TO_QUOTE_PRECISION_RATIO,
    K_BPS_UPDATE_SCALE,
    MAX_K_BPS_DECREASE,
    MAX_SQRT_K,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    calculate_base_asset_value,
    calculate_base_asset_value_and_pnl,
    calculate_bid_ask_bounds,
    calculate_terminal_reserves,
    reserve_price,
)
from protocol.math.amm_spread import update_spreads
from protocol.numeric import cast_i128, cast_u128, div_trunc, unsigned_abs
from protocol.state.perp_market import PerpMarket
from protocol.types import MarketStatus


@dataclass(frozen=True, slots=True)
class UpdateKResult:
    """The curve after a k change (AMM_RESERVE_PRECISION)."""

    sqrt_k: int
    base_asset_reserve: int
    quote_asset_reserve: int


def calculate_budgeted_k_scale(
    market: PerpMarket, budget: int, k_pct_upper_bound: int, k_pct_lower_bound: int
) -> tuple[int, int]:
    """The ``(numerator, denominator)`` k scale whose cost to the market is about ``budget``
    (QUOTE; positive: spend to raise k, negative: earn by lowering it), bounded to
    ``[k_pct_lower_bound, k_pct_upper_bound] / K_BPS_UPDATE_SCALE``. ``InvalidUpdateK`` if
    the upper bound is below 1x or the lower bound outside ``[1x - MAX_K_BPS_DECREASE, 1x]``."""
    if not k_pct_upper_bound >= K_BPS_UPDATE_SCALE:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK,
            f"invalid k_pct_upper_bound={k_pct_upper_bound} > {K_BPS_UPDATE_SCALE}",
        )
    if not K_BPS_UPDATE_SCALE - MAX_K_BPS_DECREASE <= k_pct_lower_bound <= K_BPS_UPDATE_SCALE:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK,
            f"invalid k_pct_lower_bound={k_pct_lower_bound} vs "
            f"{K_BPS_UPDATE_SCALE - MAX_K_BPS_DECREASE}",
        )
    return _calculate_budgeted_k_scale(
        market.amm.base_asset_reserve,
        market.amm.quote_asset_reserve,
        budget,
        market.amm.peg_multiplier,
        market.amm.base_asset_amount_with_amm,
        k_pct_upper_bound,
        k_pct_lower_bound,
    )


def _calculate_budgeted_k_scale(
    x: int,
    y: int,
    budget: int,
    q: int,
    d: int,
    k_pct_upper_bound: int,
    k_pct_lower_bound: int,
) -> tuple[int, int]:
    """The closed-form solve behind :func:`calculate_budgeted_k_scale`: ``x``/``y`` the base and
    quote reserves, ``q`` the peg, ``d`` users' net base position."""
    c = -budget
    q = cast_i128(q)
    c_sign = 1 if c > 0 else -1
    d_sign = 1 if d > 0 else -1
    rounding_bias = c_sign * d_sign

    x_d = cast_i128(x) + d
    if x_d < 0:
        raise MathError(f"x + d = {x_d} is negative")

    x_times_x_d = div_trunc(x * x_d, AMM_RESERVE_PRECISION)
    x_times_x_d_c = cast_u128(div_trunc(x_times_x_d * unsigned_abs(c), QUOTE_PRECISION))
    c_times_x_d_d = cast_u128(
        div_trunc(
            div_trunc(unsigned_abs(c) * x_d, QUOTE_PRECISION) * unsigned_abs(d),
            AMM_RESERVE_PRECISION,
        )
    )
    pegged_quote_times_dd = cast_i128(
        cast_u128(
            div_trunc(
                div_trunc(
                    div_trunc(y * unsigned_abs(d), AMM_RESERVE_PRECISION) * unsigned_abs(d),
                    AMM_RESERVE_PRECISION,
                )
                * q,
                PEG_PRECISION,
            )
        )
    )

    numer1 = pegged_quote_times_dd
    numer2 = cast_i128(c_times_x_d_d) * rounding_bias
    denom1 = cast_i128(x_times_x_d_c) * c_sign
    denom2 = pegged_quote_times_dd

    # spending to raise k: past this point the solution is unstable, take the upper bound
    if c_sign < 0 and x_times_x_d_c > unsigned_abs(pegged_quote_times_dd):
        return cast_u128(k_pct_upper_bound), cast_u128(K_BPS_UPDATE_SCALE)

    numerator = div_trunc(numer1 - numer2, AMM_TO_QUOTE_PRECISION_RATIO)
    denominator = div_trunc(denom1 + denom2, AMM_TO_QUOTE_PRECISION_RATIO)
    if numerator < 0 and denominator < 0:
        numerator, denominator = abs(numerator), abs(denominator)
    if not (numerator > 0 and denominator > 0):
        raise MathError(f"budgeted k scale {numerator}/{denominator} is not positive")

    current_pct_change = div_trunc(numerator * PERCENTAGE_PRECISION, denominator)
    if numerator > denominator:
        maximum_pct_change = div_trunc(k_pct_upper_bound * PERCENTAGE_PRECISION, K_BPS_UPDATE_SCALE)
        if current_pct_change > maximum_pct_change:
            result = (k_pct_upper_bound, K_BPS_UPDATE_SCALE)
        else:
            result = (current_pct_change, K_BPS_UPDATE_SCALE)
    else:
        maximum_pct_change = div_trunc(k_pct_lower_bound * PERCENTAGE_PRECISION, K_BPS_UPDATE_SCALE)
        if current_pct_change < maximum_pct_change:
            result = (k_pct_lower_bound, K_BPS_UPDATE_SCALE)
        else:
            result = (current_pct_change, K_BPS_UPDATE_SCALE)
    return cast_u128(result[0]), cast_u128(result[1])


def adjust_k_cost(market: PerpMarket, update_k_result: UpdateKResult) -> int:
    """The cost to the market (QUOTE) of applying ``update_k_result``, measured on a copy:
    the change in value of users' net position closed through the curve. ``market`` is not
    modified."""
    market_clone = market.clone()
    current_net_market_value, _ = calculate_base_asset_value_and_pnl(
        market_clone.amm.base_asset_amount_with_amm, 0, market_clone.amm
    )
    update_k(market_clone, update_k_result)
    _, cost = calculate_base_asset_value_and_pnl(
        market_clone.amm.base_asset_amount_with_amm, current_net_market_value, market_clone.amm
    )
    return cost


def adjust_k_cost_and_update(market: PerpMarket, update_k_result: UpdateKResult) -> int:
    """As :func:`adjust_k_cost`, applying the change to ``market`` itself."""
    current_net_market_value = calculate_base_asset_value(
        market.amm.base_asset_amount_with_amm, market.amm
    )
    update_k(market, update_k_result)
    _, cost = calculate_base_asset_value_and_pnl(
        market.amm.base_asset_amount_with_amm, current_net_market_value, market.amm
    )
    return cost


def get_update_k_result(market: PerpMarket, new_sqrt_k: int, bound_update: bool) -> UpdateKResult:
    """The reserves for ``new_sqrt_k``. ``InvalidUpdateK`` when ``bound_update`` and k would
    more than halve in one step, when raising ``sqrt_k`` past MAX_SQRT_K, or (outside
    reduce-only) when shrinking it below users' net position."""
    old_sqrt_k = market.amm.sqrt_k
    sqrt_k_ratio = div_trunc(new_sqrt_k * AMM_RESERVE_PRECISION, old_sqrt_k)

    if bound_update and sqrt_k_ratio < 500_000_000:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK, f"sqrt_k ratio {sqrt_k_ratio} halves k in one update"
        )
    if sqrt_k_ratio < AMM_RESERVE_PRECISION:
        sqrt_k_ratio += 1

    sqrt_k = cast_u128(new_sqrt_k)
    if not (sqrt_k_ratio < AMM_RESERVE_PRECISION or sqrt_k <= MAX_SQRT_K):
        raise ProtocolError(
            ErrorCode.InvalidUpdateK, f"cannot increase sqrt_k={sqrt_k} past MAX_SQRT_K"
        )
    if (
        market.status != MarketStatus.ReduceOnly
        and new_sqrt_k < old_sqrt_k
        and unsigned_abs(market.amm.base_asset_amount_with_amm) > sqrt_k
    ):
        raise ProtocolError(
            ErrorCode.InvalidUpdateK, "new_sqrt_k too small relative to market imbalance"
        )

    base_asset_reserve = cast_u128(
        div_trunc(market.amm.base_asset_reserve * sqrt_k_ratio, AMM_RESERVE_PRECISION)
    )
    quote_asset_reserve = cast_u128(div_trunc(sqrt_k * sqrt_k, base_asset_reserve))
    return UpdateKResult(sqrt_k, base_asset_reserve, quote_asset_reserve)


def update_k(market: PerpMarket, update_k_result: UpdateKResult) -> None:
    """Install new reserves and ``sqrt_k``, then recompute what depends on them: the terminal
    quote reserve, the reserve bounds (from ``concentration_coef``) and the spreads."""
    amm = market.amm
    amm.base_asset_reserve = update_k_result.base_asset_reserve
    amm.quote_asset_reserve = update_k_result.quote_asset_reserve
    amm.sqrt_k = update_k_result.sqrt_k

    new_terminal_quote_reserve, new_terminal_base_reserve = calculate_terminal_reserves(amm)
    amm.terminal_quote_asset_reserve = new_terminal_quote_reserve

    min_base_asset_reserve, max_base_asset_reserve = calculate_bid_ask_bounds(
        amm.concentration_coef, new_terminal_base_reserve
    )
    amm.min_base_asset_reserve = min_base_asset_reserve
    amm.max_base_asset_reserve = max_base_asset_reserve

    update_spreads(market, reserve_price(amm), None)
