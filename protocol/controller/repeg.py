"""Moving the AMM's curve on request: the admin repeg and k update, and charging curve costs to
the market's fees (the program's ``controller/repeg.rs`` and the ``handle_update_k`` body of
``instructions/admin.rs``).

Units: peg PEG_PRECISION, ``sqrt_k`` and reserves AMM_RESERVE_PRECISION, prices
PRICE_PRECISION, costs QUOTE_PRECISION (positive: the market pays from
``total_fee_minus_distributions``; negative: it earns).

Invariants: a repeg moves the terminal price only toward the oracle, never past the near edge
of its confidence band, and only when the market's fees above the protected lower bound
(half the exchange fees, plus liquidation fees, less fees withdrawn) pay for it. An admin k
change costs at most those fees, moves the reserve price by at most MAX_UPDATE_K_PRICE_CHANGE,
never raises ``sqrt_k`` to MAX_SQRT_K or beyond and never more than halves k at once.

The formulaic (keeper-cranked) repeg lives in :mod:`protocol.controller.amm` with the rest of
the AMM update; it reuses :func:`apply_cost_to_market` from here.

Deviations: :func:`repeg` takes the oracle's price data read at the current slot instead of the
program's oracle account and slot. Like the program, these functions change the market before
their last checks; a failure raises and the transaction (``Program.execute``) discards the
changes, as a failed program instruction does.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import MAX_SQRT_K, MAX_UPDATE_K_PRICE_CHANGE
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.amm import calculate_price, calculate_terminal_price_and_reserves
from protocol.math.cp_curve import adjust_k_cost, get_update_k_result
from protocol.math.cp_curve import update_k as apply_update_k
from protocol.math.funding import get_total_fee_lower_bound
from protocol.math.repeg import adjust_peg_cost, calculate_repeg_validity_from_oracle_account
from protocol.numeric import sqrt, unsigned_abs
from protocol.records import CurveRecord
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import OracleGuardRails


def apply_cost_to_market(market: PerpMarket, cost: int, check_lower_bound: bool) -> bool:
    """Charge ``cost`` (QUOTE; negative: revenue) to ``total_fee_minus_distributions`` and the
    period's net revenue. With ``check_lower_bound`` an expense that would take the fees
    below the protected lower bound is refused (returns False, nothing changes)."""
    amm = market.amm
    if cost > 0:
        new_total_fee_minus_distributions = amm.total_fee_minus_distributions - cost
        fee_reserved_for_protocol = (
            get_total_fee_lower_bound(market) + amm.total_liquidation_fee - amm.total_fee_withdrawn
        )
        if check_lower_bound and new_total_fee_minus_distributions < fee_reserved_for_protocol:
            return False
        amm.total_fee_minus_distributions = new_total_fee_minus_distributions
    else:
        amm.total_fee_minus_distributions += abs(cost)
    amm.net_revenue_since_last_funding -= cost
    return True


def repeg(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    new_peg_candidate: int,
    oracle_guard_rails: OracleGuardRails,
) -> int:
    """Set the peg to ``new_peg_candidate`` (the admin repeg); returns the cost charged.

    Rejected with ``InvalidRepegRedundant`` (same peg), ``InvalidOracle`` (the oracle is not
    ``Valid``), ``InvalidRepegDirection`` (the terminal price moves away from the oracle) or
    ``InvalidRepegProfitability`` (it overshoots the confidence band, the reserve price
    overshoots the far edge, or the fees cannot pay).
    """
    if new_peg_candidate == market.amm.peg_multiplier:
        raise ProtocolError(ErrorCode.InvalidRepegRedundant, "new peg equals the current peg")
    terminal_price_before, _, _ = calculate_terminal_price_and_reserves(market.amm)
    repegged_market, adjustment_cost = adjust_peg_cost(market, new_peg_candidate)
    oracle_is_valid, direction_valid, profitability_valid, price_impact_valid = (
        calculate_repeg_validity_from_oracle_account(
            repegged_market, oracle_price_data, terminal_price_before, oracle_guard_rails
        )
    )
    if not oracle_is_valid:
        raise ProtocolError(ErrorCode.InvalidOracle, "repeg needs a valid oracle")
    if not direction_valid:
        raise ProtocolError(
            ErrorCode.InvalidRepegDirection, "terminal price would move away from the oracle"
        )
    if not profitability_valid:
        raise ProtocolError(
            ErrorCode.InvalidRepegProfitability,
            "terminal price would pass the oracle confidence band",
        )
    if not price_impact_valid:
        # the program has no separate price-impact code and reports profitability
        raise ProtocolError(
            ErrorCode.InvalidRepegProfitability,
            "reserve price would pass the far edge of the oracle confidence band",
        )
    if not apply_cost_to_market(market, adjustment_cost, True):
        raise ProtocolError(
            ErrorCode.InvalidRepegProfitability,
            f"repeg cost {adjustment_cost} exceeds the fees available",
        )
    market.amm.peg_multiplier = new_peg_candidate
    return adjustment_cost


def update_k(market: PerpMarket, sqrt_k: int) -> int:
    """Set ``sqrt_k`` (the admin k update), scaling both reserves; returns the cost charged to
    the market's fees. Rejected with ``InvalidUpdateK`` when k would more than halve, the
    cost's sign does not match the direction (raising k costs, lowering earns), the cost
    exceeds the fees above the lower bound, ``sqrt_k`` would reach MAX_SQRT_K, the reserve
    price would move by more than MAX_UPDATE_K_PRICE_CHANGE, or the reserves' product would
    drift from ``sqrt_k**2`` by more than 100 units of ``sqrt_k``."""
    amm = market.amm
    price_before = calculate_price(
        amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier
    )
    k_increasing = sqrt_k > amm.sqrt_k

    update_k_result = get_update_k_result(market, sqrt_k, True)
    adjustment_cost = adjust_k_cost(market, update_k_result)
    apply_update_k(market, update_k_result)

    if k_increasing and adjustment_cost < 0:
        raise ProtocolError(ErrorCode.InvalidUpdateK, "adjustment_cost negative when k increased")
    if not k_increasing and adjustment_cost > 0:
        raise ProtocolError(ErrorCode.InvalidUpdateK, "adjustment_cost positive when k decreased")
    if adjustment_cost > 0:
        max_cost = (
            amm.total_fee_minus_distributions
            - get_total_fee_lower_bound(market)
            - amm.total_fee_withdrawn
        )
        if adjustment_cost > max_cost:
            raise ProtocolError(
                ErrorCode.InvalidUpdateK,
                f"adjustment_cost={adjustment_cost} > max_cost={max_cost} for k change",
            )
    if k_increasing and not amm.sqrt_k < MAX_SQRT_K:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK, f"cannot increase sqrt_k={amm.sqrt_k} past MAX_SQRT_K"
        )

    amm.total_fee_minus_distributions -= adjustment_cost
    amm.net_revenue_since_last_funding -= adjustment_cost

    price_after = calculate_price(
        amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier
    )
    if unsigned_abs(price_before - price_after) > MAX_UPDATE_K_PRICE_CHANGE:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK,
            f"{price_before} -> {price_after} (> {MAX_UPDATE_K_PRICE_CHANGE})",
        )
    k_sqrt_check = sqrt(amm.base_asset_reserve * amm.quote_asset_reserve)
    k_err = k_sqrt_check - amm.sqrt_k
    if unsigned_abs(k_err) > 100:
        raise ProtocolError(
            ErrorCode.InvalidUpdateK, f"k_err={k_err}, {k_sqrt_check} != {amm.sqrt_k}"
        )
    return adjustment_cost


# --- curve records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurveSnapshot:
    """The curve before a change, for its :class:`~protocol.records.CurveRecord`."""

    peg_multiplier: int
    base_asset_reserve: int
    quote_asset_reserve: int
    sqrt_k: int


def snapshot_curve(amm: AMM) -> CurveSnapshot:
    return CurveSnapshot(
        amm.peg_multiplier, amm.base_asset_reserve, amm.quote_asset_reserve, amm.sqrt_k
    )


def curve_record(
    market: PerpMarket,
    before: CurveSnapshot,
    adjustment_cost: int,
    oracle_price: int,
    now: int,
    number_of_users: int,
    fill_record: int,
) -> CurveRecord:
    """The record of a curve change; takes the market's next curve record id."""
    amm = market.amm
    record_id = market.next_curve_record_id
    market.next_curve_record_id = record_id + 1
    return CurveRecord(
        ts=now,
        record_id=record_id,
        market_index=market.market_index,
        peg_multiplier_before=before.peg_multiplier,
        base_asset_reserve_before=before.base_asset_reserve,
        quote_asset_reserve_before=before.quote_asset_reserve,
        sqrt_k_before=before.sqrt_k,
        peg_multiplier_after=amm.peg_multiplier,
        base_asset_reserve_after=amm.base_asset_reserve,
        quote_asset_reserve_after=amm.quote_asset_reserve,
        sqrt_k_after=amm.sqrt_k,
        base_asset_amount_long=unsigned_abs(amm.base_asset_amount_long),
        base_asset_amount_short=unsigned_abs(amm.base_asset_amount_short),
        base_asset_amount_with_amm=amm.base_asset_amount_with_amm,
        number_of_users=number_of_users,
        total_fee=amm.total_fee,
        total_fee_minus_distributions=amm.total_fee_minus_distributions,
        adjustment_cost=adjustment_cost,
        oracle_price=oracle_price,
        fill_record=fill_record,
    )
