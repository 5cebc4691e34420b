"""Keeping a perp market's AMM in step with its oracle, and trading against it (the program's
``controller/repeg.rs::_update_amm`` and ``controller/amm.rs``).

Units: reserves and ``sqrt_k`` AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION, base amounts
BASE_PRECISION, quote amounts and costs QUOTE_PRECISION, spreads BID_ASK_SPREAD_PRECISION.

:func:`update_amm` runs before anything that reads the AMM (funding, fills): it judges the
oracle; with ``curve_update_intensity > 0`` and an oracle usable for curve updates it repegs
toward the oracle within the fee budget (lowering k by 0.1% first when the budget falls short
and the intensity is 100); it folds a usable reading into the oracle TWAPs, recomputes the
spreads and spread reserves, and records whether the oracle was valid and the slot of the last
good update (funding and fills refuse an AMM that was not updated recently). A repeg the fee
pool cannot pay leaves the curve alone and does not advance ``last_update_slot``.

Swaps: :func:`swap_base_asset` moves base in or out of the curve and prices it on the spread
reserves of the taker's side (``ask_*`` for a buy, ``bid_*`` for a sell); the difference from
the spreadless curve price is the AMM's ``quote_asset_amount_surplus`` (its spread revenue).
Rounding favours the AMM (see :mod:`protocol.math.amm`).

Deviations:

* ``update_spreads`` / ``update_spread_reserves`` are defined in
  :mod:`protocol.math.amm_spread` (the program's ``math::cp_curve::update_k`` calls them, and a
  controller import there would be circular); they are re-exported here under the program's
  path.
* The oracle input is the exchange :class:`OraclePriceData` (markets have no market-maker
  oracle; the program's ``MMOraclePriceData`` with none set reads the same).
* :func:`update_amm` returns the oracle verdict (``None`` for a market in settlement) for the
  callers that branch on it; :func:`update_amm_with_cost` also returns the program's result, the
  cost of the curve update.
* :func:`formulaic_update_k` returns its :class:`CurveRecord` (or ``None``) instead of emitting
  it; markets have no ``MarketConfigFlag``, so it is never disabled by a flag.
"""

from __future__ import annotations

from protocol.constants import (
    CONCENTRATION_PRECISION,
    K_BPS_UPDATE_SCALE,
    MAX_CONCENTRATION_COEFFICIENT,
    MAX_K_BPS_INCREASE,
    MAX_SQRT_K,
)
from protocol.controller.repeg import apply_cost_to_market, curve_record, snapshot_curve
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    calculate_bid_ask_bounds,
    calculate_market_open_bids_asks,
    calculate_quote_asset_amount_swapped,
    calculate_swap_output,
    calculate_terminal_price_and_reserves,
    can_lower_k,
    get_sanitize_clamp_denominator,
    reserve_price,
    update_oracle_price_twap,
)
from protocol.math.amm_spread import get_spread_reserves, update_spread_reserves, update_spreads
from protocol.math.cp_curve import (
    UpdateKResult,
    adjust_k_cost,
    calculate_budgeted_k_scale,
    get_update_k_result,
    update_k,
)
from protocol.math.oracle import (
    DriftAction,
    OracleValidity,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.quote_asset import reserve_to_asset_amount
from protocol.math.repeg import adjust_amm, calculate_optimal_peg_and_budget
from protocol.numeric import cast_i64, cast_u64, div_trunc
from protocol.records import CurveRecord
from protocol.state import OraclePriceData, PerpMarket, State
from protocol.state.perp_market import AMM
from protocol.types import MarketStatus, MarketType, PositionDirection, SwapDirection

__all__ = [
    "calculate_base_swap_output_with_spread",
    "formulaic_update_k",
    "swap_base_asset",
    "update_amm",
    "update_amm_and_check_validity",
    "update_amm_with_cost",
    "update_concentration_coef",
    "update_spread_reserves",
    "update_spreads",
]


# --- the AMM update ------------------------------------------------------------------------------


def update_amm_with_cost(
    market: PerpMarket, oracle_price_data: OraclePriceData, state: State, now: int, slot: int
) -> tuple[OracleValidity | None, int]:
    """The program's ``_update_amm``: ``(oracle verdict, cost of the curve update)`` (the cost
    in QUOTE, positive when the market paid; ``None`` and 0 for a market in settlement)."""
    if market.status in (MarketStatus.Settlement, MarketStatus.Delisted):
        return None, 0
    validity = oracle_validity(
        MarketType.Perp,
        market.market_index,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        market.amm.oracle_source,
    )

    amm_update_cost = 0
    amm_not_successfully_updated = False
    if is_oracle_valid_for_action(validity, DriftAction.UpdateAMMCurve):
        curve_update_intensity = min(market.amm.curve_update_intensity, 100)
        if curve_update_intensity > 0:
            optimal_peg, fee_budget, check_lower_bound = calculate_optimal_peg_and_budget(
                market, oracle_price_data
            )
            repegged_market, repegged_cost = adjust_amm(
                market, optimal_peg, fee_budget, curve_update_intensity >= 100
            )
            if apply_cost_to_market(market, repegged_cost, check_lower_bound):
                # the reserves go in at the old peg, then the peg follows, as in the program
                update_k(
                    market,
                    UpdateKResult(
                        repegged_market.amm.sqrt_k,
                        repegged_market.amm.base_asset_reserve,
                        repegged_market.amm.quote_asset_reserve,
                    ),
                )
                market.amm.peg_multiplier = repegged_market.amm.peg_multiplier
                amm_update_cost = repegged_cost
            else:
                amm_not_successfully_updated = True

    price_after = reserve_price(market.amm)
    if is_oracle_valid_for_action(validity, DriftAction.UpdateTwap):
        update_oracle_price_twap(
            market.amm, now, oracle_price_data, price_after, get_sanitize_clamp_denominator(market)
        )

    update_spreads(market, price_after, slot)

    if is_oracle_valid_for_action(validity, DriftAction.FillOrderAmmLowRisk):
        if not amm_not_successfully_updated:
            market.amm.last_update_slot = slot
        market.amm.last_oracle_valid = True
    else:
        market.amm.last_oracle_valid = False
    return validity, amm_update_cost


def update_amm(
    market: PerpMarket, oracle_price_data: OraclePriceData, state: State, now: int, slot: int
) -> OracleValidity | None:
    """Repeg (per ``curve_update_intensity``), update the oracle TWAPs, spreads and validity
    flags; returns the oracle verdict (``None`` for a market in settlement, which the program
    leaves untouched)."""
    validity, _ = update_amm_with_cost(market, oracle_price_data, state, now, slot)
    return validity


def update_amm_and_check_validity(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    state: State,
    now: int,
    slot: int,
    action: DriftAction | None,
) -> None:
    """:func:`update_amm`, then require the oracle (judged against the updated TWAP) to be
    usable for ``action``; ``InvalidOracle`` otherwise."""
    update_amm_with_cost(market, oracle_price_data, state, now, slot)
    risk_ema_price = market.amm.historical_oracle_data.last_oracle_price_twap
    validity = oracle_validity(
        MarketType.Perp,
        market.market_index,
        risk_ema_price,
        oracle_price_data,
        state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        market.amm.oracle_source,
    )
    if not is_oracle_valid_for_action(validity, action):
        raise ProtocolError(
            ErrorCode.InvalidOracle,
            f"invalid oracle ({validity} vs ema={risk_ema_price}) for perp market index="
            f"{market.market_index} and action={action.name if action else None}",
        )


# --- swaps ----------------------------------------------------------------------------------------


def calculate_quote_asset_amount_surplus(
    quote_asset_reserve_before: int,
    quote_asset_reserve_after: int,
    swap_direction: SwapDirection,
    peg_multiplier: int,
    initial_quote_asset_amount: int,
    round_down: bool,
) -> int:
    """``|spreadless quote amount - initial_quote_asset_amount|`` (QUOTE): what the spread
    earned. ``round_down`` adds back the unit a buyer was charged extra."""
    if swap_direction is SwapDirection.Add:
        quote_asset_reserve_change = quote_asset_reserve_before - quote_asset_reserve_after
    else:
        quote_asset_reserve_change = quote_asset_reserve_after - quote_asset_reserve_before
    if quote_asset_reserve_change < 0:
        raise MathError("quote reserve change underflows")
    actual_quote_asset_amount = reserve_to_asset_amount(quote_asset_reserve_change, peg_multiplier)
    if round_down:
        actual_quote_asset_amount += 1
    return abs(actual_quote_asset_amount - initial_quote_asset_amount)


def calculate_base_swap_output_with_spread(
    amm: AMM, base_asset_swap_amount: int, direction: SwapDirection
) -> tuple[int, int, int, int]:
    """``(new_base_reserve, new_quote_reserve, quote_asset_amount, quote_asset_amount_surplus)``
    for swapping ``base_asset_swap_amount`` in (``Add``: the user sells) or out (``Remove``:
    the user buys). The user's quote amount is priced on the spread reserves; the curve's own
    reserves move by the spreadless swap."""
    taker_direction = (
        PositionDirection.Short if direction is SwapDirection.Add else PositionDirection.Long
    )
    base_asset_reserve_with_spread, quote_asset_reserve_with_spread = get_spread_reserves(
        amm, taker_direction
    )
    new_quote_asset_reserve_with_spread, _ = calculate_swap_output(
        base_asset_swap_amount, base_asset_reserve_with_spread, direction, amm.sqrt_k
    )
    quote_asset_amount = calculate_quote_asset_amount_swapped(
        quote_asset_reserve_with_spread,
        new_quote_asset_reserve_with_spread,
        direction,
        amm.peg_multiplier,
    )
    new_quote_asset_reserve, new_base_asset_reserve = calculate_swap_output(
        base_asset_swap_amount, amm.base_asset_reserve, direction, amm.sqrt_k
    )
    quote_asset_amount_surplus = calculate_quote_asset_amount_surplus(
        new_quote_asset_reserve,
        amm.quote_asset_reserve,
        SwapDirection.Add if direction is SwapDirection.Remove else SwapDirection.Remove,
        amm.peg_multiplier,
        quote_asset_amount,
        direction is SwapDirection.Remove,
    )
    return (
        new_base_asset_reserve,
        new_quote_asset_reserve,
        cast_u64(quote_asset_amount),
        cast_u64(quote_asset_amount_surplus),
    )


def swap_base_asset(
    market: PerpMarket, base_asset_swap_amount: int, direction: SwapDirection
) -> tuple[int, int]:
    """Swap base through the curve; ``(quote_asset_amount, quote_asset_amount_surplus)`` the
    user pays/receives and the spread the AMM earned (QUOTE)."""
    new_base_asset_reserve, new_quote_asset_reserve, quote_asset_amount, surplus = (
        calculate_base_swap_output_with_spread(market.amm, base_asset_swap_amount, direction)
    )
    market.amm.base_asset_reserve = new_base_asset_reserve
    market.amm.quote_asset_reserve = new_quote_asset_reserve
    return quote_asset_amount, cast_i64(surplus)


# --- k -------------------------------------------------------------------------------------------


def update_concentration_coef(market: PerpMarket, scale: int) -> None:
    """Set ``concentration_coef`` to ``1 + (MAX - 1) / scale`` and the reserve bounds from it;
    ``InvalidConcentrationCoef`` for a zero or too large scale, or if users' net position
    could no longer be closed within the new bounds."""
    if not scale > 0:
        raise ProtocolError(ErrorCode.InvalidConcentrationCoef, "invalid scale")
    new_concentration_coef = CONCENTRATION_PRECISION + div_trunc(
        MAX_CONCENTRATION_COEFFICIENT - CONCENTRATION_PRECISION, scale
    )
    if not CONCENTRATION_PRECISION < new_concentration_coef <= MAX_CONCENTRATION_COEFFICIENT:
        raise ProtocolError(ErrorCode.InvalidConcentrationCoef, "invalid new_concentration_coef")
    amm = market.amm
    amm.concentration_coef = new_concentration_coef

    _, terminal_quote_reserves, terminal_base_reserves = calculate_terminal_price_and_reserves(amm)
    if terminal_quote_reserves != amm.terminal_quote_asset_reserve:
        raise ProtocolError(ErrorCode.InvalidAmmDetected, "invalid terminal_quote_reserves")

    min_base_asset_reserve, max_base_asset_reserve = calculate_bid_ask_bounds(
        amm.concentration_coef, terminal_base_reserves
    )
    amm.max_base_asset_reserve = max_base_asset_reserve
    amm.min_base_asset_reserve = min_base_asset_reserve

    update_spreads(market, reserve_price(amm), None)

    max_bids, max_asks = calculate_market_open_bids_asks(amm)
    if not (
        max_bids > amm.base_asset_amount_with_amm and max_asks < amm.base_asset_amount_with_amm
    ):
        raise ProtocolError(
            ErrorCode.InvalidConcentrationCoef,
            "amm.base_asset_amount_with_amm exceeds the unload liquidity available after "
            "concentration adjustment",
        )


def formulaic_update_k(
    market: PerpMarket, oracle_price_data: OraclePriceData, funding_imbalance_cost: int, now: int
) -> CurveRecord | None:
    """Adjust k after a funding period (called by the funding update when
    ``curve_update_intensity > 0``); the :class:`CurveRecord`, or ``None`` if k did not change.

    ``funding_imbalance_cost`` (QUOTE) is what the market paid users in funding (negative: it
    received). Half of a receipt goes into raising k while spreads are at the base spread;
    half of a payment beyond the period's revenue is clawed back by lowering k. One step moves
    ``sqrt_k`` by at most ``MAX_K_BPS_INCREASE * intensity / 100`` either way.
    """
    del oracle_price_data  # the program takes it but does not read it
    amm = market.amm
    before = snapshot_curve(amm)
    funding_imbalance_cost_i64 = cast_i64(funding_imbalance_cost)

    if funding_imbalance_cost_i64 < 0:
        if max(amm.long_spread, amm.short_spread) <= amm.base_spread:
            budget = abs(div_trunc(funding_imbalance_cost_i64, 2))
        else:
            budget = 0
    elif amm.net_revenue_since_last_funding < funding_imbalance_cost_i64:
        budget = div_trunc(
            max(0, amm.net_revenue_since_last_funding) - funding_imbalance_cost_i64, 2
        )
    else:
        budget = 0

    if not ((budget > 0 and amm.sqrt_k < MAX_SQRT_K) or (budget < 0 and can_lower_k(amm))):
        return None

    k_pct_upper_bound = K_BPS_UPDATE_SCALE + div_trunc(
        MAX_K_BPS_INCREASE * amm.curve_update_intensity, 100
    )
    k_pct_lower_bound = K_BPS_UPDATE_SCALE - div_trunc(
        MAX_K_BPS_INCREASE * amm.curve_update_intensity, 100
    )
    k_scale_numerator, k_scale_denominator = calculate_budgeted_k_scale(
        market, budget, k_pct_upper_bound, k_pct_lower_bound
    )
    new_sqrt_k = div_trunc(amm.sqrt_k * k_scale_numerator, k_scale_denominator)
    update_k_result = get_update_k_result(market, new_sqrt_k, True)
    adjustment_cost = adjust_k_cost(market, update_k_result)
    if not apply_cost_to_market(market, adjustment_cost, True):
        return None
    update_k(market, update_k_result)
    return curve_record(
        market,
        before,
        adjustment_cost,
        amm.historical_oracle_data.last_oracle_price,
        now,
        market.number_of_users,
        market.next_fill_record_id,
    )
