"""Re-pegging the AMM toward the oracle (the program's ``math/repeg.rs``).

Units: peg PEG_PRECISION (1e6); prices PRICE_PRECISION; reserves AMM_RESERVE_PRECISION; budgets
and costs QUOTE_PRECISION (a positive cost is paid out of the market's fees, a negative one
earned).

The peg multiplies every quote reserve, so moving it moves the price without touching the
reserves. What it costs depends on users' net position: the curve's liability to close it is
``(quote_reserve - terminal_quote_reserve) * peg``, so a repeg costs
``(quote_reserve - terminal_quote_reserve) * (new_peg - peg) / 1e9``
(:func:`calculate_repeg_cost`). The formulaic repeg aims the peg at the oracle
(:func:`calculate_optimal_peg_and_budget`); if the fee pool cannot pay for that, it moves as
far as the budget allows (:func:`adjust_amm`), first lowering k by 0.1% for intensity-100
markets to earn a little more budget.

``calculate_fee_pool`` and ``get_total_fee_lower_bound`` (``math/repeg.rs`` in the program) are
defined in :mod:`protocol.math.funding`, which needed them first; this module uses them from
there.

Deviations:

* ``calculate_optimal_peg_and_budget`` takes the exchange :class:`OraclePriceData`: markets here
  have no market-maker oracle, which is the program's ``MMOraclePriceData`` with none set.
* ``calculate_repeg_validity_from_oracle_account`` takes the oracle's price data as read at the
  current slot in place of the program's oracle account and slot.
* Markets have no ``MarketConfigFlag``: the formulaic k decrease in :func:`adjust_amm` is never
  disabled by a flag.
* ``adjust_amm`` and ``adjust_peg_cost`` return a modified copy of the market, as the program's
  ``Box<PerpMarket>`` / value copies.
"""

from __future__ import annotations

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BID_ASK_SPREAD_PRECISION,
    PEG_PRECISION,
    PRICE_TO_PEG_PRECISION_RATIO,
)
from protocol.errors import MathError
from protocol.math.amm import (
    calculate_base_asset_value_and_pnl,
    calculate_price,
    calculate_terminal_price_and_reserves,
    can_lower_k,
    get_lower_bound_sqrt_k,
    reserve_price,
)
from protocol.math.cp_curve import adjust_k_cost_and_update, get_update_k_result
from protocol.math.funding import calculate_fee_pool
from protocol.math.oracle import OracleValidityKind, get_max_confidence_interval_multiplier
from protocol.math.oracle import oracle_validity as judge_oracle
from protocol.numeric import (
    cast_i64,
    cast_u64,
    cast_u128,
    div_trunc,
    safe_div_ceil,
    unsigned_abs,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import OracleGuardRails
from protocol.types import MarketType


def calculate_repeg_validity_from_oracle_account(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    terminal_price_before: int,
    oracle_guard_rails: OracleGuardRails,
) -> tuple[bool, bool, bool, bool]:
    """:func:`calculate_repeg_validity` with the oracle judged strictly (``Valid`` only)."""
    oracle_is_valid = (
        judge_oracle(
            MarketType.Perp,
            market.market_index,
            market.amm.historical_oracle_data.last_oracle_price_twap,
            oracle_price_data,
            oracle_guard_rails.validity,
            get_max_confidence_interval_multiplier(market),
            market.amm.oracle_source,
        ).kind
        is OracleValidityKind.Valid
    )
    return calculate_repeg_validity(
        market, oracle_price_data, oracle_is_valid, terminal_price_before
    )


def calculate_repeg_validity(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    oracle_is_valid: bool,
    terminal_price_before: int,
) -> tuple[bool, bool, bool, bool]:
    """``(oracle_is_valid, direction_valid, profitability_valid, price_impact_valid)`` for a
    market already repegged (``market``) whose terminal price was ``terminal_price_before``.

    The terminal price may only move toward the oracle and no further than the near edge of
    its confidence band; the reserve price no further than the far edge. An invalid oracle
    fails every check.
    """
    oracle_price = cast_u64(oracle_price_data.price)
    oracle_conf = oracle_price_data.confidence
    terminal_price_after, _, _ = calculate_terminal_price_and_reserves(market.amm)

    direction_valid = True
    price_impact_valid = True
    profitability_valid = True

    if oracle_is_valid:
        reserve_price_after = calculate_price(
            market.amm.quote_asset_reserve,
            market.amm.base_asset_reserve,
            market.amm.peg_multiplier,
        )
        oracle_conf_band_top = oracle_price + oracle_conf
        oracle_conf_band_bottom = oracle_price - oracle_conf
        if oracle_conf_band_bottom < 0:
            # an unsigned subtraction in the program
            raise MathError("oracle confidence exceeds the oracle price")

        if oracle_price > terminal_price_after:
            if terminal_price_after < terminal_price_before:
                direction_valid = False
            if oracle_conf_band_bottom < terminal_price_after:
                profitability_valid = False
            if reserve_price_after > oracle_conf_band_top:
                price_impact_valid = False
        elif oracle_price < terminal_price_after:
            if terminal_price_after > terminal_price_before:
                direction_valid = False
            if oracle_conf_band_top > terminal_price_after:
                profitability_valid = False
            if reserve_price_after < oracle_conf_band_bottom:
                price_impact_valid = False
    else:
        direction_valid = False
        price_impact_valid = False
        profitability_valid = False

    return oracle_is_valid, direction_valid, profitability_valid, price_impact_valid


def calculate_peg_from_target_price(
    quote_asset_reserve: int, base_asset_reserve: int, target_price: int
) -> int:
    """The peg (PEG_PRECISION, >= 1) at which the reserve price is ``target_price``, rounded
    half up."""
    new_peg = div_trunc(
        div_trunc(target_price * base_asset_reserve, quote_asset_reserve)
        + PRICE_TO_PEG_PRECISION_RATIO // 2,
        PRICE_TO_PEG_PRECISION_RATIO,
    )
    return max(cast_u128(new_peg), 1)


def adjust_peg_cost(market: PerpMarket, new_peg_candidate: int) -> tuple[PerpMarket, int]:
    """``(repegged copy, cost)`` of setting the peg to ``new_peg_candidate``, the cost measured
    as the change in value of users' net position closed through the curve."""
    market_clone = market.clone()
    if new_peg_candidate == market_clone.amm.peg_multiplier:
        return market_clone, 0
    current_net_market_value, _ = calculate_base_asset_value_and_pnl(
        market_clone.amm.base_asset_amount_with_amm, 0, market_clone.amm
    )
    market_clone.amm.peg_multiplier = new_peg_candidate
    _, cost = calculate_base_asset_value_and_pnl(
        market_clone.amm.base_asset_amount_with_amm, current_net_market_value, market_clone.amm
    )
    return market_clone, cost


def calculate_repeg_cost(amm: AMM, new_peg: int) -> int:
    """``(quote_reserve - terminal_quote_reserve) * (new_peg - peg) / 1e9`` (QUOTE),
    truncated toward zero."""
    return div_trunc(
        (amm.quote_asset_reserve - amm.terminal_quote_asset_reserve)
        * (new_peg - amm.peg_multiplier),
        AMM_RESERVE_PRECISION,
    )


def calculate_per_peg_cost(quote_asset_reserve: int, terminal_quote_asset_reserve: int) -> int:
    """Signed cost (QUOTE) of moving the peg by one PEG_PRECISION unit, rounded away from zero
    (the ceiling division, then one more unit of magnitude) so budgets are never overrun."""
    if quote_asset_reserve != terminal_quote_asset_reserve:
        per_peg_cost = safe_div_ceil(
            quote_asset_reserve - terminal_quote_asset_reserve,
            AMM_RESERVE_PRECISION // PEG_PRECISION,
        )
    else:
        per_peg_cost = 0
    if per_peg_cost > 0:
        return per_peg_cost + 1
    if per_peg_cost < 0:
        return per_peg_cost - 1
    return per_peg_cost


def adjust_amm(
    market: PerpMarket, optimal_peg: int, budget: int, adjust_k: bool
) -> tuple[PerpMarket, int]:
    """``(adjusted copy, cost)``: repeg toward ``optimal_peg``, all the way if that earns or
    fits within ``budget``, else as far as ``budget`` pays (after first lowering ``sqrt_k`` by
    0.1% when ``adjust_k`` and k may be lowered, adding what that earns to the budget)."""
    curve_update_intensity = min(market.amm.curve_update_intensity, 100)
    if optimal_peg == market.amm.peg_multiplier or curve_update_intensity == 0:
        return market.clone(), 0

    delta_peg = optimal_peg - market.amm.peg_multiplier
    per_peg_cost = calculate_per_peg_cost(
        market.amm.quote_asset_reserve, market.amm.terminal_quote_asset_reserve
    )
    market_clone = market.clone()
    budget_delta_peg_magnitude = 0
    if per_peg_cost != 0:
        budget_delta_peg = div_trunc(budget * PEG_PRECISION, per_peg_cost)
        budget_delta_peg_magnitude = unsigned_abs(budget_delta_peg)

    use_optimal_peg = (
        per_peg_cost == 0  # free
        or (per_peg_cost > 0 and delta_peg < 0)  # earns
        or (per_peg_cost < 0 and delta_peg > 0)  # earns
        or budget_delta_peg_magnitude > unsigned_abs(delta_peg)  # affordable
    )

    if use_optimal_peg:
        new_peg = optimal_peg
        cost = calculate_repeg_cost(market_clone.amm, new_peg)
    else:
        if adjust_k and can_lower_k(market.amm):
            new_sqrt_k_lower_bound = get_lower_bound_sqrt_k(market.amm)
            new_sqrt_k = max(
                market.amm.sqrt_k - div_trunc(market.amm.sqrt_k, 1000), new_sqrt_k_lower_bound
            )
            update_k_result = get_update_k_result(market, new_sqrt_k, True)
            adjustment_cost = adjust_k_cost_and_update(market_clone, update_k_result)
            per_peg_cost = calculate_per_peg_cost(
                market_clone.amm.quote_asset_reserve,
                market_clone.amm.terminal_quote_asset_reserve,
            )
        else:
            adjustment_cost = 0

        budget_delta_peg = div_trunc((budget + abs(adjustment_cost)) * PEG_PRECISION, per_peg_cost)
        budget_delta_peg_magnitude = unsigned_abs(budget_delta_peg)
        if budget_delta_peg > 0:
            new_peg = min(market.amm.peg_multiplier + budget_delta_peg_magnitude, 2**128 - 1)
        elif market.amm.peg_multiplier > budget_delta_peg_magnitude:
            new_peg = market.amm.peg_multiplier - budget_delta_peg_magnitude
        else:
            new_peg = 1
        cost = calculate_repeg_cost(market_clone.amm, new_peg)

    market_clone.amm.peg_multiplier = new_peg
    return market_clone, cost


def calculate_optimal_peg_and_budget(
    market: PerpMarket, oracle_price_data: OraclePriceData
) -> tuple[int, int, bool]:
    """``(optimal_peg, fee_budget, check_lower_bound)``.

    The optimal peg puts the reserve price at the oracle. If the fee pool cannot pay for it and
    the reserve price is more than half the max spread from the oracle, the target becomes
    the point half a max spread short of the oracle, its whole cost is budgeted and the fee
    lower bound is waived (``check_lower_bound`` False): the market must not be left that far
    off. An empty fee pool also waives the bound.
    """
    reserve_price_before = reserve_price(market.amm)
    fee_budget = calculate_fee_pool(market)
    target_price_i64 = oracle_price_data.price
    target_price = cast_u64(target_price_i64)
    optimal_peg = calculate_peg_from_target_price(
        market.amm.quote_asset_reserve, market.amm.base_asset_reserve, target_price
    )
    optimal_peg_cost = calculate_repeg_cost(market.amm, optimal_peg)

    check_lower_bound = True
    if fee_budget < max(0, optimal_peg_cost):
        half_max_price_spread = cast_i64(
            div_trunc(target_price * div_trunc(market.amm.max_spread, 2), BID_ASK_SPREAD_PRECISION)
        )
        target_price_gap = cast_i64(reserve_price_before) - target_price_i64
        if abs(target_price_gap) > half_max_price_spread:
            mark_adj = cast_u64(abs(target_price_gap) - half_max_price_spread)
            if target_price_gap < 0:
                new_target_price = reserve_price_before + mark_adj
            else:
                new_target_price = cast_u64(reserve_price_before - mark_adj)
            optimal_peg = calculate_peg_from_target_price(
                market.amm.quote_asset_reserve, market.amm.base_asset_reserve, new_target_price
            )
            fee_budget = cast_u128(calculate_repeg_cost(market.amm, optimal_peg))
            check_lower_bound = False
        elif fee_budget == 0:
            check_lower_bound = False

    return optimal_peg, fee_budget, check_lower_bound
