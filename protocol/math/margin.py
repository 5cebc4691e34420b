"""Cross-margin math: asset/liability weights, perp margin ratios, and the account-wide
margin calculation (the program's ``math/margin.rs``, with the weight methods of
``state/spot_market.rs`` / ``state/perp_market.rs`` and the worst-case helpers of
``state/user.rs`` written as free functions taking the account first).

Units: weights and margin ratios MARGIN_PRECISION = SPOT_WEIGHT_PRECISION (1e4 = 100%); IMF
factors SPOT_IMF_PRECISION (1e6); prices PRICE_PRECISION; perp base BASE_PRECISION; spot token
amounts the mint's decimals; values, collateral and requirements QUOTE_PRECISION. Every division
is the program's: ``div_trunc`` where it uses ``/``/``safe_div`` (also on signed values: a
weighted liability truncates toward zero exactly as in Rust).

Mapping of program methods (``Type::method``) to the free functions here:

* ``SpotMarket::get_scaled_initial_asset_weight`` -> :func:`get_scaled_initial_asset_weight`,
  also exported as ``calculate_scaled_initial_asset_weight``
* ``SpotMarket::get_asset_weight`` / ``get_liability_weight`` -> :func:`get_asset_weight` /
  :func:`get_liability_weight`
* ``SpotMarket::get_margin_ratio`` -> :func:`get_spot_market_margin_ratio`
* ``PerpMarket::get_margin_ratio`` -> :func:`get_margin_ratio`
* ``PerpMarket::get_unrealized_asset_weight`` -> :func:`get_unrealized_asset_weight`
* ``SpotPosition::get_worst_case_fill_simulation`` / ``simulate_fills_both_sides`` -> same names
* ``PerpPosition::worst_case_liability_value`` / ``worst_case_base_asset_amount`` -> same names
* ``{Spot,Perp}Position::margin_requirement_for_open_orders`` ->
  :func:`margin_requirement_for_open_orders`
* ``PerpPosition::simulate_settled_lp_position`` / ``margin_requirement_for_lp_shares`` (the
  program's versions with BAL providers) -> :mod:`protocol.math.lp`, same names
* ``StrictOraclePrice`` (``state/oracle.rs``), ``OrderFillSimulation`` (``state/user.rs``) ->
  classes of the same names
* ``User::meets_withdraw_margin_requirement_and_increment_fuel_bonus`` ->
  :func:`meets_withdraw_margin_requirement` (without fuel)
* ``calculate_margin_requirement_and_total_collateral_and_liability_info`` -> same name, also
  exported as ``calculate_margin_requirement_and_total_collateral``
* the liquidation entry checks of ``controller/liquidation.rs`` and
  ``math/liquidation.rs::is_cross_margin_being_liquidated`` -> :func:`can_be_liquidated`,
  :func:`is_cross_margin_being_liquidated`

Deviations from the program, and why:

* cross margin only: no isolated perp positions, no high-leverage mode, no user pools, no fuel
  bonus. The program's ``MarginTypeConfig::CrossMarginOverride`` that placing a risk-increasing
  order uses therefore reduces to a plain ``Initial`` requirement.
* ``PerpPosition.max_margin_ratio`` (a per-position custom ratio) does not exist in this model;
  only ``User.max_margin_ratio`` applies.
* oracles are read through ``MarketReader.oracle_price_data``; a ``QuoteAsset`` oracle is the
  fixed $1 price the program's ``OracleMap`` returns for it (always valid). Validity is
  :func:`protocol.math.oracle.oracle_validity` judged for ``DriftAction.MarginCalc``; perp
  oracles use that module's default AMM slot-delay overrides (this AMM has no per-market ones),
  which cannot change a ``MarginCalc`` verdict.
* ``calculate_net_user_pnl`` (used by ``unrealized_pnl_max_imbalance``) has no LP-unsettled or
  unsettled-funding cost-basis terms: this model's AMM does not track them.
* ``validation::position::validate_spot_position`` lives here until a module of its own
  exists. The ``math/position.rs`` helpers this module uses
  (:func:`calculate_base_asset_value_with_oracle_price`, :func:`calculate_perp_liability_value`,
  :func:`calculate_base_asset_value_and_pnl_with_oracle_price`) live in
  :mod:`protocol.math.position` and are re-exported here for existing callers.

Faithful to the program where a caller might not expect it:

* a market whose oracle TWAPs were never seeded (0) has its oracle judged ``TooVolatile`` (so
  invalid for margin), and in strict mode (placing orders, withdrawing) its 5-minute TWAP of 0
  raises ``InvalidOracle``. Markets should start from :meth:`HistoricalOracleData.seeded`, as
  :mod:`protocol.markets` does. A spot position's oracle price of 0 or below raises
  ``InvalidOracle``; a perp market's is judged ``NonPositive`` (invalid for margin) and values
  its positions at 0.
* an order that does not increase risk still needs the Maintenance requirement met.

How the account walk stays fast (a liquidator re-checks every account: see
``benchmarks/liquidator_margin.py``) without changing any result:

* a market's oracle reading, validity and strict price are read once per calculation (the
  quote market's serve every perp position). Nothing read from a market is kept from one
  calculation to the next: markets are mutable and change in place within a transaction.
* the ``MarginCalc`` verdict on an oracle reading is remembered across calculations, keyed on
  the reading and the guard rails (frozen values, by identity) and the plain values it reads.
* positions without open bids or asks (perps also without BAL shares, in markets neither in
  settlement nor of prediction contracts) skip the worst-case simulations, perp positions and
  spot deposits add to the totals in place, and hot divisions are written out (truncating
  toward zero, as ``div_trunc``). ``tests/protocol/test_margin_fast_paths.py`` holds every
  shortcut to the general function it stands for, and the whole walk to a plain reference
  walk, on random accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import isqrt
from typing import TYPE_CHECKING

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    AMM_TO_QUOTE_PRECISION_RATIO,
    MARGIN_PRECISION,
    MAX_OPEN_ORDERS,
    MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN,
    OPEN_ORDER_MARGIN_REQUIREMENT,
    PRICE_PRECISION,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_IMF_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.funding import calculate_funding_payment
from protocol.math.lp import margin_requirement_for_lp_shares, simulate_settled_lp_position
from protocol.math.oracle import (
    MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_ASSET_TIER,
    MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_CONTRACT_TIER,
    DriftAction,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.position import (
    calculate_base_asset_value_and_pnl_with_oracle_price,
    calculate_base_asset_value_with_oracle_price,
    calculate_perp_liability_value,
)
from protocol.math.spot_balance import (
    get_signed_token_amount,
    get_strict_token_value,
    get_token_amount,
    get_token_value,
)
from protocol.numeric import U32_MAX, cast_u32, cast_u128, div_trunc, sqrt
from protocol.state.margin_calculation import (
    MarginCalculation,
    MarginContext,
    MarketIdentifier,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.state import ValidityGuardRails
from protocol.types import (
    AssetTier,
    ContractTier,
    ContractType,
    MarginRequirementType,
    MarketStatus,
    MarketType,
    OracleSource,
    SpotBalanceType,
)

if TYPE_CHECKING:
    from protocol.accounts import MarketReader
    from protocol.state.perp_market import AMM, PerpMarket
    from protocol.state.spot_market import SpotMarket
    from protocol.state.user import PerpPosition, SpotPosition, User

__all__ = [
    "OrderFillSimulation",
    "StrictOraclePrice",
    "calculate_base_asset_value_and_pnl_with_oracle_price",
    "calculate_base_asset_value_with_oracle_price",
    "calculate_free_collateral",
    "calculate_margin_requirement_and_total_collateral",
    "calculate_margin_requirement_and_total_collateral_and_liability_info",
    "calculate_net_user_pnl",
    "calculate_perp_liability_value",
    "calculate_perp_position_value_and_pnl",
    "calculate_scaled_initial_asset_weight",
    "calculate_size_discount_asset_weight",
    "calculate_size_premium_liability_weight",
    "calculate_user_equity",
    "can_be_liquidated",
    "get_asset_weight",
    "get_liability_weight",
    "get_margin_ratio",
    "get_scaled_initial_asset_weight",
    "get_spot_market_margin_ratio",
    "get_unrealized_asset_weight",
    "get_worst_case_fill_simulation",
    "is_cross_margin_being_liquidated",
    "margin_requirement_for_open_orders",
    "meets_initial_margin_requirement",
    "meets_maintenance_margin_requirement",
    "meets_place_order_margin_requirement",
    "meets_settle_pnl_maintenance_margin_requirement",
    "meets_withdraw_margin_requirement",
    "simulate_fills_both_sides",
    "validate_any_isolated_tier_requirements",
    "worst_case_base_asset_amount",
    "worst_case_liability_value",
]


# --- size-dependent weights (IMF) -------------------------------------------------------------
def calculate_size_premium_liability_weight(
    size: int,
    imf_factor: int,
    liability_weight: int,
    precision: int,
    is_bounded: bool = True,
) -> int:
    """Liability weight (or margin ratio) grown with ``sqrt(size)``.

    ``size`` is AMM_RESERVE_PRECISION; ``precision`` is the weight's (SPOT_WEIGHT_PRECISION for
    spot, MARGIN_PRECISION for perps). The premium starts from 80% of ``liability_weight`` so
    small sizes never reach it; bounded, the result is never below ``liability_weight``.
    """
    if imf_factor == 0:
        return liability_weight
    if size >= 0 and imf_factor > 0 and liability_weight >= 0 and precision == MARGIN_PRECISION:
        # every margin call: the program's unsigned operands at the usual precision, where
        # floor division is its truncation
        size_premium_liability_weight = (
            liability_weight
            - liability_weight // 5
            + isqrt(size * 10 + 1) * imf_factor // _SIZE_PREMIUM_DIVISOR
        )
        if size_premium_liability_weight > U32_MAX:
            cast_u32(size_premium_liability_weight)  # raises, as the program's cast
    else:
        size_sqrt = sqrt(size * 10 + 1)  # 1e9 -> 1e10 -> sqrt: 1e5
        liability_weight_numerator = liability_weight - div_trunc(liability_weight, 5)
        size_premium_liability_weight = cast_u32(
            liability_weight_numerator
            + div_trunc(size_sqrt * imf_factor, div_trunc(100_000 * SPOT_IMF_PRECISION, precision))
        )
    if is_bounded:
        return max(liability_weight, size_premium_liability_weight)
    return size_premium_liability_weight


_SIZE_PREMIUM_DIVISOR = 100_000 * SPOT_IMF_PRECISION // MARGIN_PRECISION
_IMF_NUMERATOR = SPOT_IMF_PRECISION + SPOT_IMF_PRECISION // 10  # 1.1


def calculate_size_discount_asset_weight(size: int, imf_factor: int, asset_weight: int) -> int:
    """``min(asset_weight, 1.1 / (1 + imf_factor * sqrt(size)))`` in SPOT_WEIGHT_PRECISION.

    ``size`` is AMM_RESERVE_PRECISION (1e9 = one whole token).
    """
    if imf_factor == 0:
        return asset_weight
    if size >= 0 and imf_factor > 0:
        # every margin call: the program's unsigned operands, where floor division is its
        # truncation; the quotient is at most 1.1 * SPOT_WEIGHT_PRECISION, a u32
        size_discount_asset_weight = (
            _IMF_NUMERATOR
            * SPOT_WEIGHT_PRECISION
            // (SPOT_IMF_PRECISION + isqrt(size * 10 + 1) * imf_factor // 100_000)
        )
    else:
        size_sqrt = sqrt(size * 10 + 1)  # 1e9 -> 1e10 -> sqrt: 1e5
        size_discount_asset_weight = cast_u32(
            div_trunc(
                _IMF_NUMERATOR * SPOT_WEIGHT_PRECISION,
                SPOT_IMF_PRECISION + div_trunc(size_sqrt * imf_factor, 100_000),
            )
        )
    return min(asset_weight, size_discount_asset_weight)


# --- spot market weights --------------------------------------------------------------------
def _size_in_amm_reserve_precision(size: int, decimals: int) -> int:
    size_precision: int = 10**decimals
    if size_precision > AMM_RESERVE_PRECISION:
        return div_trunc(size, div_trunc(size_precision, AMM_RESERVE_PRECISION))
    # the program's ``size * AMM_RESERVE_PRECISION / size_precision``: an exact division here
    return size * (AMM_RESERVE_PRECISION // size_precision)


def get_scaled_initial_asset_weight(spot_market: SpotMarket, oracle_price: int) -> int:
    """Initial asset weight, scaled down once the market's total deposits are worth more than
    ``scale_initial_asset_weight_start``: ``weight * start / deposit_value`` (truncated)."""
    if spot_market.scale_initial_asset_weight_start == 0:
        return spot_market.initial_asset_weight
    deposits = get_token_amount(spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit)
    deposit_value = cast_u128(get_token_value(deposits, spot_market.decimals, oracle_price))
    if deposit_value < spot_market.scale_initial_asset_weight_start:
        return spot_market.initial_asset_weight
    return cast_u32(
        div_trunc(
            spot_market.initial_asset_weight * spot_market.scale_initial_asset_weight_start,
            deposit_value,
        )
    )


calculate_scaled_initial_asset_weight = get_scaled_initial_asset_weight


def get_asset_weight(
    spot_market: SpotMarket,
    size: int,
    oracle_price: int,
    margin_requirement_type: MarginRequirementType,
) -> int:
    """Asset weight for a deposit of ``size`` tokens (mint decimals); Fill is the mean of the
    scaled initial and the maintenance weight (truncated)."""
    size_in_amm_reserve_precision = _size_in_amm_reserve_precision(size, spot_market.decimals)
    if margin_requirement_type == MarginRequirementType.Initial:
        default_asset_weight = get_scaled_initial_asset_weight(spot_market, oracle_price)
    elif margin_requirement_type == MarginRequirementType.Fill:
        default_asset_weight = div_trunc(
            get_scaled_initial_asset_weight(spot_market, oracle_price)
            + spot_market.maintenance_asset_weight,
            2,
        )
    else:
        default_asset_weight = spot_market.maintenance_asset_weight
    size_based_asset_weight = calculate_size_discount_asset_weight(
        size_in_amm_reserve_precision, spot_market.imf_factor, default_asset_weight
    )
    return min(size_based_asset_weight, default_asset_weight)


def get_liability_weight(
    spot_market: SpotMarket, size: int, margin_requirement_type: MarginRequirementType
) -> int:
    """Liability weight for a borrow of ``size`` tokens (mint decimals), with the IMF premium."""
    size_in_amm_reserve_precision = _size_in_amm_reserve_precision(size, spot_market.decimals)
    if margin_requirement_type == MarginRequirementType.Initial:
        default_liability_weight = spot_market.initial_liability_weight
    elif margin_requirement_type == MarginRequirementType.Fill:
        default_liability_weight = div_trunc(
            spot_market.initial_liability_weight + spot_market.maintenance_liability_weight, 2
        )
    else:
        default_liability_weight = spot_market.maintenance_liability_weight
    size_based_liability_weight = calculate_size_premium_liability_weight(
        size_in_amm_reserve_precision,
        spot_market.imf_factor,
        default_liability_weight,
        SPOT_WEIGHT_PRECISION,
    )
    return max(size_based_liability_weight, default_liability_weight)


def get_spot_market_margin_ratio(
    spot_market: SpotMarket, margin_requirement_type: MarginRequirementType
) -> int:
    """The liability weight expressed as a perp-style margin ratio (weight - 100%)."""
    if margin_requirement_type == MarginRequirementType.Initial:
        liability_weight = spot_market.initial_liability_weight
    elif margin_requirement_type == MarginRequirementType.Maintenance:
        liability_weight = spot_market.maintenance_liability_weight
    else:
        raise ProtocolError(ErrorCode.DefaultError, "no spot margin ratio for Fill")
    return liability_weight - MARGIN_PRECISION


# --- perp market weights --------------------------------------------------------------------
def get_margin_ratio(perp_market: PerpMarket, size: int, margin_type: MarginRequirementType) -> int:
    """Perp margin ratio for a position of ``size`` base (BASE_PRECISION, unsigned), with the
    IMF premium; 0 for a market in settlement."""
    if perp_market.status == MarketStatus.Settlement:
        return 0
    if margin_type == MarginRequirementType.Initial:
        default_margin_ratio = perp_market.margin_ratio_initial
    elif margin_type == MarginRequirementType.Fill:
        default_margin_ratio = div_trunc(
            perp_market.margin_ratio_initial + perp_market.margin_ratio_maintenance, 2
        )
    else:
        default_margin_ratio = perp_market.margin_ratio_maintenance
    size_adj_margin_ratio = calculate_size_premium_liability_weight(
        size, perp_market.imf_factor, default_margin_ratio, MARGIN_PRECISION
    )
    return max(default_margin_ratio, size_adj_margin_ratio)


def calculate_net_user_pnl(amm: AMM, oracle_price: int) -> int:
    """Users' aggregate unrealized PnL against the AMM at ``oracle_price`` (QUOTE_PRECISION)."""
    if oracle_price <= 0:
        raise ProtocolError(ErrorCode.InvalidOracle, "oracle_price <= 0")
    net_user_base_asset_value = div_trunc(
        (amm.base_asset_amount_with_amm + amm.base_asset_amount_with_unsettled_lp) * oracle_price,
        PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
    )
    return net_user_base_asset_value + amm.quote_asset_amount


def get_unrealized_asset_weight(
    perp_market: PerpMarket, unrealized_pnl: int, margin_type: MarginRequirementType
) -> int:
    """Weight of a position's PnL as collateral: losses always count in full; gains at the
    market's initial/maintenance weight, discounted by ``unrealized_pnl_imf_factor`` on the size
    of the gain (Initial/Fill) and by the users' net PnL imbalance when it exceeds
    ``unrealized_pnl_max_imbalance``."""
    if margin_type == MarginRequirementType.Maintenance:
        margin_asset_weight = perp_market.unrealized_pnl_maintenance_asset_weight
    else:
        margin_asset_weight = perp_market.unrealized_pnl_initial_asset_weight

    if (
        margin_asset_weight > 0
        and margin_type != MarginRequirementType.Maintenance
        and perp_market.unrealized_pnl_max_imbalance > 0
    ):
        net_unsettled_pnl = calculate_net_user_pnl(
            perp_market.amm, perp_market.amm.historical_oracle_data.last_oracle_price
        )
        if net_unsettled_pnl > perp_market.unrealized_pnl_max_imbalance:
            margin_asset_weight = cast_u32(
                div_trunc(
                    margin_asset_weight * perp_market.unrealized_pnl_max_imbalance,
                    abs(net_unsettled_pnl),
                )
            )

    if unrealized_pnl <= 0:
        return SPOT_WEIGHT_PRECISION
    if margin_type == MarginRequirementType.Maintenance:
        return perp_market.unrealized_pnl_maintenance_asset_weight
    if margin_asset_weight == 0:
        return 0
    return calculate_size_discount_asset_weight(
        abs(unrealized_pnl) * AMM_TO_QUOTE_PRECISION_RATIO,
        perp_market.unrealized_pnl_imf_factor,
        margin_asset_weight,
    )


# --- oracle prices for margin -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StrictOraclePrice:
    """An oracle price, and in strict mode the 5-minute TWAP too: assets are then valued at the
    lower of the two and liabilities at the higher, so a momentary spike cannot be borrowed
    against."""

    current: int
    twap_5min: int | None = None

    @classmethod
    def new(cls, price: int, twap_5min: int, enabled: bool) -> StrictOraclePrice:
        return cls(price, twap_5min if enabled else None)

    def max(self) -> int:
        return self.current if self.twap_5min is None else max(self.current, self.twap_5min)

    def min(self) -> int:
        return self.current if self.twap_5min is None else min(self.current, self.twap_5min)

    def validate(self) -> None:
        if self.current <= 0:
            raise ProtocolError(ErrorCode.InvalidOracle, f"oracle price {self.current} <= 0")
        if self.twap_5min is not None and self.twap_5min <= 0:
            raise ProtocolError(ErrorCode.InvalidOracle, f"oracle twap {self.twap_5min} <= 0")


_QUOTE_ASSET_PRICE_DATA = OraclePriceData(
    price=PRICE_PRECISION, confidence=1, delay=0, has_sufficient_number_of_data_points=True
)


# Every account's margin check asks the same question of a market's oracle until the oracle is
# written again or the market's TWAP moves: remember the verdicts. Readings and guard rails are
# frozen values, matched by identity (hashing them field by field costs more than the verdict
# saves); an entry holds both, so their ids cannot be reused while it lives. Everything else the
# verdict depends on is a plain value in the key (the market's type and index only label the
# program's log lines).
_MARGIN_CALC_VALIDITY_ENTRIES = 4096
_margin_calc_validity: dict[
    tuple[int, int, int, int, OracleSource, int, int],
    tuple[OraclePriceData, ValidityGuardRails, bool],
] = {}


def _is_oracle_valid_for_margin_calc(
    market_type: MarketType,
    market_index: int,
    last_oracle_price_twap: int,
    price_data: OraclePriceData,
    guard_rails: ValidityGuardRails,
    max_confidence_interval_multiplier: int,
    oracle_source: OracleSource,
    slots_before_stale_for_amm_immediate_override: int,
    oracle_low_risk_slot_delay_override: int,
) -> bool:
    """``is_oracle_valid_for_action(oracle_validity(...), DriftAction.MarginCalc)``."""
    key = (
        id(price_data),
        id(guard_rails),
        last_oracle_price_twap,
        max_confidence_interval_multiplier,
        oracle_source,
        slots_before_stale_for_amm_immediate_override,
        oracle_low_risk_slot_delay_override,
    )
    entry = _margin_calc_validity.get(key)
    if entry is not None and entry[0] is price_data and entry[1] is guard_rails:
        return entry[2]
    validity = oracle_validity(
        market_type,
        market_index,
        last_oracle_price_twap,
        price_data,
        guard_rails,
        max_confidence_interval_multiplier,
        oracle_source,
        slots_before_stale_for_amm_immediate_override,
        oracle_low_risk_slot_delay_override,
    )
    valid = is_oracle_valid_for_action(validity, DriftAction.MarginCalc)
    if len(_margin_calc_validity) >= _MARGIN_CALC_VALIDITY_ENTRIES:
        _margin_calc_validity.clear()
    _margin_calc_validity[key] = (price_data, guard_rails, valid)
    return valid


def _spot_price_data_and_validity(
    reader: MarketReader, spot_market: SpotMarket, guard_rails: ValidityGuardRails
) -> tuple[OraclePriceData, bool]:
    """The oracle's price and whether it is valid for a margin calculation (the program's
    ``OracleMap::get_price_data_and_validity`` then ``MarginCalc`` validity);
    ``guard_rails`` is ``reader.state.oracle_guard_rails.validity``."""
    if spot_market.oracle_source == OracleSource.QuoteAsset:
        return _QUOTE_ASSET_PRICE_DATA, True
    price_data = reader.oracle_price_data(spot_market.oracle)
    return price_data, _is_oracle_valid_for_margin_calc(
        MarketType.Spot,
        spot_market.market_index,
        spot_market.historical_oracle_data.last_oracle_price_twap,
        price_data,
        guard_rails,
        MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_ASSET_TIER[spot_market.asset_tier],
        spot_market.oracle_source,
        0,  # the program passes no AMM-staleness overrides for spot oracles
        0,
    )


def _perp_price_data_and_validity(
    reader: MarketReader, perp_market: PerpMarket, guard_rails: ValidityGuardRails
) -> tuple[OraclePriceData, bool]:
    """As :func:`_spot_price_data_and_validity`, for a perp market's AMM oracle."""
    amm = perp_market.amm
    if amm.oracle_source == OracleSource.QuoteAsset:
        return _QUOTE_ASSET_PRICE_DATA, True
    price_data = reader.oracle_price_data(amm.oracle)
    return price_data, _is_oracle_valid_for_margin_calc(
        MarketType.Perp,
        perp_market.market_index,
        amm.historical_oracle_data.last_oracle_price_twap,
        price_data,
        guard_rails,
        MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_CONTRACT_TIER[perp_market.contract_tier],
        amm.oracle_source,
        -1,  # this model's AMM has no per-market slot-delay overrides: the program's initial
        0,  # values
    )


# --- positions: values, funding, worst cases -----------------------------------------------------
def margin_requirement_for_open_orders(position: SpotPosition | PerpPosition) -> int:
    """A flat OPEN_ORDER_MARGIN_REQUIREMENT ($0.01) per open order, so an account with orders
    always has a positive requirement."""
    return position.open_orders * OPEN_ORDER_MARGIN_REQUIREMENT


def _spot_has_open_order(position: SpotPosition) -> bool:
    return position.open_orders != 0 or position.open_bids != 0 or position.open_asks != 0


def _perp_has_open_order(position: PerpPosition) -> bool:
    return position.open_orders != 0 or position.open_bids != 0 or position.open_asks != 0


def _spot_is_borrow(position: SpotPosition) -> bool:
    return position.scaled_balance > 0 and position.balance_type == SpotBalanceType.Borrow


def _get_signed_token_amount(position: SpotPosition, spot_market: SpotMarket) -> int:
    """``get_signed_token_amount(get_token_amount(...))``: deposits positive, borrows negative
    (rounded up in magnitude)."""
    balance_type = position.balance_type
    if spot_market.decimals <= 19:
        # Inline for every real balance (a non-negative balance times a non-negative index),
        # where floor division is the truncation of a deposit and the negated ceiling of a
        # borrow. _interest_precision_factor's exponent:
        precision_decrease: int = 10 ** (19 - spot_market.decimals)
        if balance_type == SpotBalanceType.Deposit:
            amount = position.scaled_balance * spot_market.cumulative_deposit_interest
            if amount >= 0:
                return amount // precision_decrease
        else:
            amount = position.scaled_balance * spot_market.cumulative_borrow_interest
            if amount >= 0:
                return -amount // precision_decrease
    token_amount = get_token_amount(position.scaled_balance, spot_market, balance_type)
    return get_signed_token_amount(token_amount, balance_type)


def _get_strict_token_value(
    token_amount: int, decimals: int, strict_price_min: int, strict_price_max: int
) -> int:
    """``get_strict_token_value``: an asset at the lower price, a liability at the higher.
    For a mint's decimals (>= 0) ``get_token_value``'s rounding (an asset's value truncated, a
    liability's away from zero) is floor division."""
    if decimals < 0:
        return get_strict_token_value(token_amount, decimals, strict_price_min, strict_price_max)
    price = strict_price_min if token_amount > 0 else strict_price_max
    precision_decrease: int = 10**decimals
    return token_amount * price // precision_decrease


def _validate_spot_position(position: SpotPosition) -> None:
    """``validation::position::validate_spot_position``."""
    if position.open_orders > MAX_OPEN_ORDERS:
        detail = f"open_orders={position.open_orders} > {MAX_OPEN_ORDERS}"
    elif position.open_bids < 0:
        detail = f"open_bids={position.open_bids} < 0"
    elif position.open_asks > 0:
        detail = f"open_asks={position.open_asks} > 0"
    else:
        return
    raise ProtocolError(
        ErrorCode.InvalidSpotPositionDetected,
        f"spot market {position.market_index}: {detail}",
        field="spot_position",
    )


def worst_case_liability_value(
    market_position: PerpPosition, oracle_price: int, contract_type: ContractType
) -> tuple[int, int]:
    """(base, liability value) if every open bid or every open ask filled, whichever is larger;
    asks win a tie."""
    base_asset_amount_all_bids_fill = market_position.base_asset_amount + market_position.open_bids
    base_asset_amount_all_asks_fill = market_position.base_asset_amount + market_position.open_asks
    liability_value_all_bids_fill = calculate_perp_liability_value(
        base_asset_amount_all_bids_fill, oracle_price, contract_type
    )
    liability_value_all_asks_fill = calculate_perp_liability_value(
        base_asset_amount_all_asks_fill, oracle_price, contract_type
    )
    if liability_value_all_asks_fill >= liability_value_all_bids_fill:
        return base_asset_amount_all_asks_fill, liability_value_all_asks_fill
    return base_asset_amount_all_bids_fill, liability_value_all_bids_fill


def worst_case_base_asset_amount(
    market_position: PerpPosition, oracle_price: int, contract_type: ContractType
) -> int:
    return worst_case_liability_value(market_position, oracle_price, contract_type)[0]


def calculate_perp_position_value_and_pnl(
    market_position: PerpPosition,
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    strict_quote_price: StrictOraclePrice | int,
    margin_requirement_type: MarginRequirementType,
    user_custom_margin_ratio: int,
) -> tuple[int, int, int, int]:
    """(margin requirement, weighted unrealized PnL incl. funding, worst-case liability value,
    base asset value), all QUOTE_PRECISION.

    ``strict_quote_price`` is the quote asset's price (a plain int means no TWAP). The
    requirement is the worst-case notional (valued at the higher quote price) times the larger
    of the user's custom ratio and the market's size-adjusted ratio, plus $0.01 per open order.
    A position with BAL shares is valued as if settled, its shares' open bids/asks in its worst
    case, and needs at least $1 more (:mod:`protocol.math.lp`). Positive PnL is weighted and,
    for Initial, capped at MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN.
    """
    if isinstance(strict_quote_price, int):
        strict_quote_price = StrictOraclePrice(strict_quote_price)

    if market.status == MarketStatus.Settlement:
        valuation_price = market.expiry_price
    else:
        valuation_price = oracle_price_data.price

    # Funding is owed on the position as it stands, before any PnL simulation.
    unrealized_funding = calculate_funding_payment(
        market.amm.cumulative_funding_rate_long
        if market_position.base_asset_amount > 0
        else market.amm.cumulative_funding_rate_short,
        market_position,
    )
    # BAL shares: the position as if its LP share were settled, with the base the shares could
    # still take on as open bids/asks (so the worst case includes LP open orders)
    market_position = simulate_settled_lp_position(market_position, market, valuation_price)
    base_asset_value, unrealized_pnl = calculate_base_asset_value_and_pnl_with_oracle_price(
        market_position, valuation_price
    )
    total_unrealized_pnl = unrealized_pnl + unrealized_funding

    worst_case_base, worst_case_value = worst_case_liability_value(
        market_position, oracle_price_data.price, market.contract_type
    )
    # A liability: value it at the higher of the quote price and its TWAP.
    worst_case_value = div_trunc(worst_case_value * strict_quote_price.max(), PRICE_PRECISION)

    if market.status == MarketStatus.Settlement:
        margin_requirement = 0
    else:
        margin_ratio = max(
            user_custom_margin_ratio,
            get_margin_ratio(market, abs(worst_case_base), margin_requirement_type),
        )
        margin_requirement = div_trunc(worst_case_value * margin_ratio, MARGIN_PRECISION)
    margin_requirement += margin_requirement_for_open_orders(market_position)
    margin_requirement += margin_requirement_for_lp_shares(
        market_position, market.amm.order_step_size, valuation_price
    )

    unrealized_asset_weight = get_unrealized_asset_weight(
        market, total_unrealized_pnl, margin_requirement_type
    )
    if total_unrealized_pnl > 0:
        quote_price = strict_quote_price.min()
    elif total_unrealized_pnl < 0:
        quote_price = strict_quote_price.max()
    else:
        quote_price = strict_quote_price.current

    weighted_unrealized_pnl = _weighted_unrealized_pnl(
        total_unrealized_pnl, unrealized_asset_weight, quote_price, margin_requirement_type
    )
    return margin_requirement, weighted_unrealized_pnl, worst_case_value, base_asset_value


def _weighted_unrealized_pnl(
    total_unrealized_pnl: int,
    unrealized_asset_weight: int,
    quote_price: int,
    margin_requirement_type: MarginRequirementType,
) -> int:
    """The tail of ``calculate_perp_position_value_and_pnl``: the PnL weighted and priced in
    the quote asset, capped for the initial requirement."""
    weighted_unrealized_pnl = total_unrealized_pnl
    if unrealized_asset_weight != SPOT_WEIGHT_PRECISION:
        weighted_unrealized_pnl = div_trunc(
            weighted_unrealized_pnl * unrealized_asset_weight, SPOT_WEIGHT_PRECISION
        )
    if quote_price != PRICE_PRECISION:
        weighted_unrealized_pnl = div_trunc(weighted_unrealized_pnl * quote_price, PRICE_PRECISION)
    if margin_requirement_type == MarginRequirementType.Initial:
        # guard against a dangerously configured market lending against paper gains
        weighted_unrealized_pnl = min(weighted_unrealized_pnl, MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN)
    return weighted_unrealized_pnl


def _perp_position_value_and_pnl_without_orders(
    market_position: PerpPosition,
    market: PerpMarket,
    oracle_price: int,
    strict_quote_price: StrictOraclePrice,
    margin_requirement_type: MarginRequirementType,
    user_custom_margin_ratio: int,
) -> tuple[int, int, int]:
    """:func:`calculate_perp_position_value_and_pnl`'s first three results (margin
    requirement, weighted unrealized PnL, worst-case liability value) for the common position:
    no open bids or asks and no BAL shares, in a market neither in settlement nor of prediction
    contracts. The same steps, with what those zeros make of them written in:

    * no BAL shares: the position is its own settled simulation, with no LP requirement;
    * no open bids/asks: both worst cases are the position itself;
    * not in settlement: valued at the oracle price, with the size-adjusted margin ratio;
    * not a prediction market: the liability value is |base| * price, which is also the base
      asset value's magnitude (AMM_RESERVE_PRECISION is PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO).
    """
    base_asset_amount = market_position.base_asset_amount
    amm = market.amm
    cumulative_funding_rate = (
        amm.cumulative_funding_rate_long
        if base_asset_amount > 0
        else amm.cumulative_funding_rate_short
    )
    if cumulative_funding_rate == market_position.last_cumulative_funding_rate:
        unrealized_funding = 0  # calculate_funding_payment's zero rate delta
    else:
        unrealized_funding = calculate_funding_payment(cumulative_funding_rate, market_position)

    # |base| * price (a non-positive price values it at 0), truncated; the base asset value
    # truncates toward zero with the sign of the base
    liability_value = abs(base_asset_amount) * (oracle_price if oracle_price > 0 else 0)
    liability_value //= AMM_RESERVE_PRECISION
    base_asset_value = liability_value if base_asset_amount > 0 else -liability_value
    total_unrealized_pnl = (
        base_asset_value + market_position.quote_asset_amount + unrealized_funding
    )

    quote_price = strict_quote_price.current
    quote_twap_5min = strict_quote_price.twap_5min
    if quote_twap_5min is None:
        quote_price_min = quote_price_max = quote_price
    else:
        quote_price_min = min(quote_price, quote_twap_5min)
        quote_price_max = max(quote_price, quote_twap_5min)

    if quote_price_max != PRICE_PRECISION:  # (times one: unchanged)
        liability_value = div_trunc(liability_value * quote_price_max, PRICE_PRECISION)

    if margin_requirement_type == MarginRequirementType.Initial:
        margin_ratio = market.margin_ratio_initial
    elif margin_requirement_type == MarginRequirementType.Fill:
        margin_ratio = div_trunc(market.margin_ratio_initial + market.margin_ratio_maintenance, 2)
    else:
        margin_ratio = market.margin_ratio_maintenance
    if market.imf_factor != 0:  # get_margin_ratio's size premium (bounded: never below it)
        margin_ratio = calculate_size_premium_liability_weight(
            abs(base_asset_amount), market.imf_factor, margin_ratio, MARGIN_PRECISION
        )
    margin_ratio = max(margin_ratio, user_custom_margin_ratio)
    margin_requirement = liability_value * margin_ratio  # div_trunc by MARGIN_PRECISION:
    if margin_requirement >= 0:
        margin_requirement //= MARGIN_PRECISION
    else:
        margin_requirement = -(-margin_requirement // MARGIN_PRECISION)
    margin_requirement += market_position.open_orders * OPEN_ORDER_MARGIN_REQUIREMENT

    if margin_requirement_type == MarginRequirementType.Maintenance:
        # get_unrealized_asset_weight's Maintenance case (no imbalance or IMF scaling)
        if total_unrealized_pnl <= 0:
            unrealized_asset_weight = SPOT_WEIGHT_PRECISION
        else:
            unrealized_asset_weight = market.unrealized_pnl_maintenance_asset_weight
    else:
        unrealized_asset_weight = get_unrealized_asset_weight(
            market, total_unrealized_pnl, margin_requirement_type
        )
    if total_unrealized_pnl > 0:
        quote_price = quote_price_min
    elif total_unrealized_pnl < 0:
        quote_price = quote_price_max

    weighted_unrealized_pnl = _weighted_unrealized_pnl(
        total_unrealized_pnl, unrealized_asset_weight, quote_price, margin_requirement_type
    )
    return margin_requirement, weighted_unrealized_pnl, liability_value


# --- spot open orders: worst-case fill simulation ------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderFillSimulation:
    """A spot position as if one side of its open orders filled at the (strict) oracle price.

    ``token_amount`` mint decimals; the rest QUOTE_PRECISION. ``orders_value`` is the quote the
    fill pays (<0, bids) or receives (>0, asks); ``free_collateral_contribution`` is
    ``weighted_token_value + orders_value``.
    """

    token_amount: int = 0
    orders_value: int = 0
    token_value: int = 0
    weighted_token_value: int = 0
    free_collateral_contribution: int = 0

    @staticmethod
    def riskier_side(ask: OrderFillSimulation, bid: OrderFillSimulation) -> OrderFillSimulation:
        return ask if ask.free_collateral_contribution <= bid.free_collateral_contribution else bid

    def risk_increasing(self, after: OrderFillSimulation) -> bool:
        return after.free_collateral_contribution < self.free_collateral_contribution

    def apply_user_custom_margin_ratio(
        self, spot_market: SpotMarket, oracle_price: int, user_custom_margin_ratio: int
    ) -> OrderFillSimulation:
        """Re-weight with the user's self-imposed ratio: at least ``1 + ratio`` on a liability,
        at most ``1 - ratio`` on an asset (Initial weights)."""
        if user_custom_margin_ratio == 0:
            return self
        weighted_token_value = self.weighted_token_value
        if weighted_token_value < 0:
            max_liability_weight = max(
                get_liability_weight(
                    spot_market, abs(self.token_amount), MarginRequirementType.Initial
                ),
                user_custom_margin_ratio + SPOT_WEIGHT_PRECISION,
            )
            weighted_token_value = div_trunc(
                self.token_value * max_liability_weight, SPOT_WEIGHT_PRECISION
            )
        elif weighted_token_value > 0:
            min_asset_weight = min(
                get_asset_weight(
                    spot_market,
                    abs(self.token_amount),
                    oracle_price,
                    MarginRequirementType.Initial,
                ),
                max(SPOT_WEIGHT_PRECISION - user_custom_margin_ratio, 0),
            )
            weighted_token_value = div_trunc(
                self.token_value * min_asset_weight, SPOT_WEIGHT_PRECISION
            )
        return OrderFillSimulation(
            token_amount=self.token_amount,
            orders_value=self.orders_value,
            token_value=self.token_value,
            weighted_token_value=weighted_token_value,
            free_collateral_contribution=weighted_token_value + self.orders_value,
        )


def _calculate_weighted_token_value(
    spot_market: SpotMarket,
    strict_oracle_price: StrictOraclePrice,
    margin_type: MarginRequirementType,
    token_amount: int,
    token_value: int,
) -> int:
    if token_value > 0:
        asset_weight = get_asset_weight(
            spot_market, abs(token_amount), strict_oracle_price.current, margin_type
        )
        return div_trunc(token_value * asset_weight, SPOT_WEIGHT_PRECISION)
    if token_value < 0:
        liability_weight = get_liability_weight(spot_market, abs(token_amount), margin_type)
        return div_trunc(token_value * liability_weight, SPOT_WEIGHT_PRECISION)
    return 0


def simulate_fills_both_sides(
    spot_position: SpotPosition,
    spot_market: SpotMarket,
    strict_oracle_price: StrictOraclePrice,
    token_amount: int | None,
    margin_type: MarginRequirementType,
) -> tuple[OrderFillSimulation, OrderFillSimulation]:
    """(all bids filled, all asks filled). Orders fill at the higher strict price, the
    resulting balance is valued like any deposit or borrow."""
    if token_amount is None:
        token_amount = _get_signed_token_amount(spot_position, spot_market)
    token_value = get_strict_token_value(
        token_amount, spot_market.decimals, strict_oracle_price.min(), strict_oracle_price.max()
    )

    if spot_position.open_bids == 0 and spot_position.open_asks == 0:
        weighted = _calculate_weighted_token_value(
            spot_market, strict_oracle_price, margin_type, token_amount, token_value
        )
        calculation = OrderFillSimulation(
            token_amount=token_amount,
            orders_value=0,
            token_value=token_value,
            weighted_token_value=weighted,
            free_collateral_contribution=weighted,
        )
        return calculation, calculation

    def simulate_side(open_orders: int) -> OrderFillSimulation:
        order_value = get_token_value(-open_orders, spot_market.decimals, strict_oracle_price.max())
        token_amount_after_fill = token_amount + open_orders
        token_value_after_fill = token_value - order_value
        weighted_after_fill = _calculate_weighted_token_value(
            spot_market,
            strict_oracle_price,
            margin_type,
            token_amount_after_fill,
            token_value_after_fill,
        )
        return OrderFillSimulation(
            token_amount=token_amount_after_fill,
            orders_value=order_value,
            token_value=token_value_after_fill,
            weighted_token_value=weighted_after_fill,
            free_collateral_contribution=weighted_after_fill + order_value,
        )

    return simulate_side(spot_position.open_bids), simulate_side(spot_position.open_asks)


def get_worst_case_fill_simulation(
    spot_position: SpotPosition,
    spot_market: SpotMarket,
    strict_oracle_price: StrictOraclePrice,
    token_amount: int | None,
    margin_type: MarginRequirementType,
) -> OrderFillSimulation:
    """The side of the open orders that leaves the least free collateral (asks on a tie)."""
    bid_simulation, ask_simulation = simulate_fills_both_sides(
        spot_position, spot_market, strict_oracle_price, token_amount, margin_type
    )
    return OrderFillSimulation.riskier_side(ask_simulation, bid_simulation)


# --- the account-wide calculation ---------------------------------------------------------------
# Strict prices are frozen values, and every position priced by one oracle reading asks for the
# same one: build each once, with its bounds.
@lru_cache(maxsize=4096)
def _strict_oracle_price(
    price: int, twap_5min: int, strict: bool
) -> tuple[StrictOraclePrice, int, int]:
    strict_oracle_price = StrictOraclePrice.new(price, twap_5min, strict)
    return strict_oracle_price, strict_oracle_price.min(), strict_oracle_price.max()


_SpotPrice = tuple[bool, StrictOraclePrice, int, int]


def _strict_spot_price(
    reader: MarketReader, spot_market: SpotMarket, strict: bool, guard_rails: ValidityGuardRails
) -> _SpotPrice:
    """What every position in a spot market, or quoted in it, reads of its oracle: (valid for
    margin, the strict oracle price, its ``min()``, its ``max()``)."""
    oracle_price_data, oracle_valid = _spot_price_data_and_validity(
        reader, spot_market, guard_rails
    )
    strict_oracle_price, price_min, price_max = _strict_oracle_price(
        oracle_price_data.price,
        spot_market.historical_oracle_data.last_oracle_price_twap_5min,
        strict,
    )
    return oracle_valid, strict_oracle_price, price_min, price_max


def _add_quote_spot_position(
    calculation: MarginCalculation,
    spot_position: SpotPosition,
    spot_market: SpotMarket,
    spot_price: _SpotPrice,
) -> None:
    """The quote market counts at face value (weight 1) and has no orders to simulate."""
    oracle_valid, _, price_min, price_max = spot_price
    token_amount = _get_signed_token_amount(spot_position, spot_market)
    if token_amount == 0 and spot_position.scaled_balance != 0:
        raise ProtocolError(
            ErrorCode.InvalidMarginRatio,
            f"scaled_balance={spot_position.scaled_balance} when token_amount=0",
        )
    token_value = _get_strict_token_value(token_amount, spot_market.decimals, price_min, price_max)
    if spot_position.balance_type == SpotBalanceType.Deposit:
        if calculation.context.ignore_invalid_deposit_oracles and not oracle_valid:
            token_value = 0
        calculation.add_cross_margin_total_collateral(token_value)
        # update_all_deposit_oracles_valid, add_spot_asset_value
        calculation.all_deposit_oracles_valid &= oracle_valid
        calculation.total_spot_asset_value += token_value
        return
    liability_value = abs(token_value)
    if liability_value == 0:
        raise ProtocolError(
            ErrorCode.InvalidMarginRatio,
            f"token_value=0 for token_amount={token_amount} in spot market "
            f"{spot_market.market_index}",
        )
    calculation.add_cross_margin_margin_requirement(
        liability_value, liability_value, MarketIdentifier.spot(QUOTE_SPOT_MARKET_INDEX)
    )
    calculation.add_spot_liability()
    calculation.update_all_liability_oracles_valid(oracle_valid)
    calculation.add_spot_liability_value(liability_value)


def _add_spot_position(
    calculation: MarginCalculation,
    spot_position: SpotPosition,
    spot_market: SpotMarket,
    spot_price: _SpotPrice,
    margin_requirement_type: MarginRequirementType,
    user_custom_margin_ratio: int,
) -> None:
    oracle_valid, strict_oracle_price, price_min, price_max = spot_price
    token_amount = _get_signed_token_amount(spot_position, spot_market)
    if (
        spot_position.open_bids == 0
        and spot_position.open_asks == 0
        and user_custom_margin_ratio == 0
    ):
        # The common case, without building simulations: with no bids or asks the worst case
        # is the balance itself, as simulate_fills_both_sides' no-orders case values it (and
        # no orders value), and a custom ratio of 0 leaves it as it is.
        token_value = _get_strict_token_value(
            token_amount, spot_market.decimals, price_min, price_max
        )
        weighted_token_value = _calculate_weighted_token_value(
            spot_market, strict_oracle_price, margin_requirement_type, token_amount, token_value
        )
        orders_value = 0
    else:
        simulation = get_worst_case_fill_simulation(
            spot_position,
            spot_market,
            strict_oracle_price,
            token_amount,
            margin_requirement_type,
        ).apply_user_custom_margin_ratio(
            spot_market, strict_oracle_price.current, user_custom_margin_ratio
        )
        token_amount = simulation.token_amount
        token_value = simulation.token_value
        weighted_token_value = simulation.weighted_token_value
        orders_value = simulation.orders_value
    if token_amount == 0 and spot_position.scaled_balance != 0:
        raise ProtocolError(
            ErrorCode.InvalidMarginRatio,
            f"scaled_balance={spot_position.scaled_balance} when worst_case_token_amount=0 "
            f"in spot market {spot_market.market_index}",
        )

    if spot_position.open_orders != 0:  # (a zero requirement would change no total)
        calculation.add_cross_margin_margin_requirement(
            margin_requirement_for_open_orders(spot_position),
            0,
            MarketIdentifier.spot(spot_market.market_index),
        )

    if token_value > 0:
        if calculation.context.ignore_invalid_deposit_oracles and not oracle_valid:
            weighted_token_value = 0
        calculation.add_cross_margin_total_collateral(weighted_token_value)
        # update_all_deposit_oracles_valid, add_spot_asset_value
        calculation.all_deposit_oracles_valid &= oracle_valid
        calculation.total_spot_asset_value += token_value
    elif token_value < 0:
        if abs(weighted_token_value) < abs(token_value):
            raise ProtocolError(
                ErrorCode.InvalidMarginRatio,
                f"weighted_token_value < |token_value| in spot market {spot_market.market_index}",
            )
        if weighted_token_value == 0:
            raise ProtocolError(
                ErrorCode.InvalidOracle,
                f"weighted_token_value=0 for worst_case_token_amount={token_amount} "
                f"in spot market {spot_market.market_index}",
            )
        calculation.add_cross_margin_margin_requirement(
            abs(weighted_token_value),
            abs(token_value),
            MarketIdentifier.spot(spot_market.market_index),
        )
        calculation.add_spot_liability()
        calculation.update_with_spot_isolated_liability(
            spot_market.asset_tier == AssetTier.Isolated
        )
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.add_spot_liability_value(abs(token_value))
    elif _spot_has_open_order(spot_position):
        calculation.add_spot_liability()
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.update_with_spot_isolated_liability(
            spot_market.asset_tier == AssetTier.Isolated
        )

    if orders_value > 0:
        if calculation.context.ignore_invalid_deposit_oracles and not oracle_valid:
            orders_value = 0
        calculation.add_cross_margin_total_collateral(orders_value)
        calculation.add_spot_asset_value(orders_value)
    elif orders_value < 0:
        # The quote a filled bid would spend is owed in the quote market.
        calculation.add_cross_margin_margin_requirement(
            abs(orders_value), abs(orders_value), MarketIdentifier.spot(QUOTE_SPOT_MARKET_INDEX)
        )
        calculation.add_spot_liability_value(abs(orders_value))


def _add_perp_position(
    calculation: MarginCalculation,
    market_position: PerpPosition,
    reader: MarketReader,
    guard_rails: ValidityGuardRails,
    user_custom_margin_ratio: int,
    spot_prices: dict[int, _SpotPrice],
) -> None:
    """``spot_prices``: the spot markets already priced in this calculation, by index (the
    quote market of every perp usually is)."""
    context = calculation.context
    market = reader.perp_market(market_position.market_index)

    quote_spot_market_index = market.quote_spot_market_index
    quote_price = spot_prices.get(quote_spot_market_index)
    if quote_price is None:
        quote_price = spot_prices[quote_spot_market_index] = _strict_spot_price(
            reader, reader.spot_market(quote_spot_market_index), context.strict, guard_rails
        )
    quote_oracle_valid, strict_quote_price, _, _ = quote_price
    oracle_price_data, oracle_valid = _perp_price_data_and_validity(reader, market, guard_rails)

    margin_type = context.margin_requirement_type
    if (
        market_position.open_bids == 0
        and market_position.open_asks == 0
        and market_position.lp_shares == 0
        and market.status != MarketStatus.Settlement
        and market.contract_type != ContractType.Prediction
    ):
        margin_requirement, weighted_pnl, liability_value = (
            _perp_position_value_and_pnl_without_orders(
                market_position,
                market,
                oracle_price_data.price,
                strict_quote_price,
                margin_type,
                user_custom_margin_ratio,
            )
        )
    else:
        margin_requirement, weighted_pnl, liability_value, _ = (
            calculate_perp_position_value_and_pnl(
                market_position,
                market,
                oracle_price_data,
                strict_quote_price,
                margin_type,
                user_custom_margin_ratio,
            )
        )
    # The hottest path, so the MarginCalculation one-liners are written in:
    # add_cross_margin_margin_requirement(margin_requirement, liability_value, this market),
    # add_cross_margin_total_collateral(weighted_pnl), add_perp_liability_value, add_perp_pnl.
    # Their buffer shares truncate toward zero (div_trunc).
    calculation.margin_requirement += margin_requirement
    calculation.total_collateral += weighted_pnl
    margin_buffer = context.margin_buffer
    if margin_buffer > 0:
        buffer = liability_value * margin_buffer
        buffer = buffer // MARGIN_PRECISION if buffer >= 0 else -(-buffer // MARGIN_PRECISION)
        calculation.margin_requirement_plus_buffer += margin_requirement + buffer
        if weighted_pnl < 0:
            calculation.total_collateral_buffer -= -weighted_pnl * margin_buffer // MARGIN_PRECISION
    tracked = context.market_to_track_margin_requirement
    if tracked is not None and tracked == MarketIdentifier.perp(market.market_index):
        calculation.tracked_market_margin_requirement += margin_requirement
    calculation.total_perp_liability_value += liability_value
    calculation.total_perp_pnl += weighted_pnl

    has_perp_liability = (
        market_position.base_asset_amount != 0
        or market_position.quote_asset_amount < 0
        or _perp_has_open_order(market_position)
        or market_position.lp_shares > 0
    )
    if has_perp_liability:
        # add_perp_liability, update_with_perp_isolated_liability
        calculation.num_perp_liabilities += 1
        if market.contract_tier == ContractTier.Isolated:
            calculation.with_perp_isolated_liability = True
    if (has_perp_liability or margin_type != MarginRequirementType.Initial) and not (
        quote_oracle_valid and oracle_valid
    ):
        # update_all_liability_oracles_valid, for the quote oracle and the market's
        calculation.all_liability_oracles_valid = False


def calculate_margin_requirement_and_total_collateral_and_liability_info(
    user: User, reader: MarketReader, context: MarginContext
) -> MarginCalculation:
    """Walk every spot and perp position of ``user`` and total its collateral and requirement.

    Spot: the quote market at face value; other deposits at their (IMF- and deposit-scaled) asset
    weight and borrows at their (IMF-premium) liability weight, each after the riskier side of
    its open orders fills. Perps: worst-case notional times the size-adjusted margin ratio, plus
    the weighted unrealized PnL (funding included) as collateral.

    Each market's oracle reading, validity and strict price are read once per calculation (the
    quote market's serve every perp); nothing about a market is kept from one calculation to
    the next, so one changed in place is always read afresh.
    """
    calculation = MarginCalculation(context)
    margin_type = context.margin_requirement_type
    strict = context.strict
    guard_rails = reader.state.oracle_guard_rails.validity

    user_custom_margin_ratio = (
        user.max_margin_ratio if margin_type == MarginRequirementType.Initial else 0
    )
    if context.margin_ratio_override is not None:
        user_custom_margin_ratio = max(context.margin_ratio_override, user_custom_margin_ratio)

    spot_prices: dict[int, _SpotPrice] = {}
    for spot_position in user.spot_positions:
        if (
            spot_position.open_orders > MAX_OPEN_ORDERS
            or spot_position.open_bids < 0
            or spot_position.open_asks > 0
        ):
            _validate_spot_position(spot_position)  # raises: what it rejects
        if spot_position.scaled_balance == 0 and spot_position.open_orders == 0:
            continue  # is_available()
        market_index = spot_position.market_index
        spot_market = reader.spot_market(market_index)
        spot_price = spot_prices[market_index] = _strict_spot_price(
            reader, spot_market, strict, guard_rails
        )
        _, strict_oracle_price, price_min, _ = spot_price
        if price_min <= 0:  # (StrictOraclePrice.validate raises exactly then)
            strict_oracle_price.validate()

        if spot_market.market_index == QUOTE_SPOT_MARKET_INDEX:
            _add_quote_spot_position(calculation, spot_position, spot_market, spot_price)
        else:
            _add_spot_position(
                calculation,
                spot_position,
                spot_market,
                spot_price,
                margin_type,
                user_custom_margin_ratio,
            )

    for market_position in user.perp_positions:
        if (
            market_position.base_asset_amount == 0
            and market_position.quote_asset_amount == 0
            and market_position.open_orders == 0
            and market_position.lp_shares == 0
        ):
            continue  # is_available()
        _add_perp_position(
            calculation, market_position, reader, guard_rails, user_custom_margin_ratio, spot_prices
        )

    calculation.validate_num_spot_liabilities()
    return calculation


calculate_margin_requirement_and_total_collateral = (
    calculate_margin_requirement_and_total_collateral_and_liability_info
)


# --- checks the instructions call -----------------------------------------------------------------
def validate_any_isolated_tier_requirements(user: User, calculation: MarginCalculation) -> None:
    """An isolated-tier liability must be the account's only liability of its kind (plus, for
    a perp, at most a quote borrow) unless the user is reduce-only."""
    if calculation.with_perp_isolated_liability and not user.is_reduce_only():
        if calculation.num_perp_liabilities > 1:
            raise ProtocolError(
                ErrorCode.IsolatedAssetTierViolation,
                "more than one perp liability with an isolated tier liability",
            )
        if user.is_margin_trading_enabled:
            raise ProtocolError(
                ErrorCode.IsolatedAssetTierViolation,
                "isolated tier liability with margin trading enabled",
            )
        if calculation.num_spot_liabilities > 0:
            quote_position = user.get_spot_position(QUOTE_SPOT_MARKET_INDEX)
            quote_is_borrow = quote_position is not None and _spot_is_borrow(quote_position)
            if not (calculation.num_spot_liabilities == 1 and quote_is_borrow):
                raise ProtocolError(
                    ErrorCode.IsolatedAssetTierViolation,
                    "spot liabilities beyond the quote asset with an isolated tier liability",
                )
    if (
        calculation.with_spot_isolated_liability
        and not user.is_reduce_only()
        and not (calculation.num_perp_liabilities == 0 and calculation.num_spot_liabilities == 1)
    ):
        raise ProtocolError(
            ErrorCode.IsolatedAssetTierViolation,
            "other liabilities with an isolated tier spot liability",
        )


def meets_initial_margin_requirement(user: User, reader: MarketReader) -> bool:
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.standard(MarginRequirementType.Initial)
    ).meets_margin_requirement()


def meets_maintenance_margin_requirement(user: User, reader: MarketReader) -> bool:
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.standard(MarginRequirementType.Maintenance)
    ).meets_margin_requirement()


def meets_settle_pnl_maintenance_margin_requirement(user: User, reader: MarketReader) -> bool:
    """The maintenance requirement at strict prices (assets at the lower, liabilities at the
    higher of oracle and 5-minute TWAP): what a user must meet to settle negative pnl."""
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.standard(MarginRequirementType.Maintenance).with_strict(True)
    ).meets_margin_requirement()


def meets_place_order_margin_requirement(
    user: User, reader: MarketReader, risk_increasing: bool
) -> None:
    """After placing an order: a risk-increasing order needs the Initial requirement met, any
    other order still needs Maintenance (with strict prices either way). Raises
    ``InsufficientCollateral``."""
    margin_type = (
        MarginRequirementType.Initial if risk_increasing else MarginRequirementType.Maintenance
    )
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.standard(margin_type).with_strict(True)
    )
    if not calculation.meets_margin_requirement():
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"total_collateral={calculation.total_collateral} < "
            f"{margin_type.name} margin_requirement={calculation.margin_requirement}",
        )
    validate_any_isolated_tier_requirements(user, calculation)


def meets_withdraw_margin_requirement(
    user: User,
    reader: MarketReader,
    margin_requirement_type: MarginRequirementType = MarginRequirementType.Initial,
) -> None:
    """After a withdraw or borrow: Initial requirement at strict prices, deposits behind an
    invalid oracle not counted, and no withdrawal at all against liabilities whose oracle is
    invalid. Raises ``InvalidOracle`` / ``IsolatedAssetTierViolation`` /
    ``InsufficientCollateral``."""
    strict = margin_requirement_type == MarginRequirementType.Initial
    context = (
        MarginContext.standard(margin_requirement_type)
        .with_strict(strict)
        .with_ignore_invalid_deposit_oracles(True)
    )
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, context
    )
    if (
        calculation.margin_requirement > 0 or calculation.get_num_of_liabilities() > 0
    ) and not calculation.all_liability_oracles_valid:
        raise ProtocolError(
            ErrorCode.InvalidOracle,
            "withdrawing with outstanding liabilities while an oracle is invalid",
        )
    validate_any_isolated_tier_requirements(user, calculation)
    if not calculation.meets_margin_requirement():
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"total_collateral={calculation.total_collateral} < "
            f"margin_requirement={calculation.margin_requirement}",
        )


def calculate_free_collateral(
    user: User, reader: MarketReader, requirement_type: MarginRequirementType
) -> int:
    """``max(total_collateral - margin_requirement, 0)`` for ``requirement_type``."""
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.standard(requirement_type)
    ).get_free_collateral()


def is_cross_margin_being_liquidated(
    user: User, reader: MarketReader, liquidation_margin_buffer_ratio: int
) -> bool:
    """Whether a user already in liquidation must stay there: the maintenance requirement plus
    ``liquidation_margin_buffer_ratio`` of every liability is not met."""
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.liquidation(liquidation_margin_buffer_ratio)
    )
    return not calculation.can_exit_liquidation()


def can_be_liquidated(user: User, reader: MarketReader) -> bool:
    """Whether a liquidator may act on ``user`` now, as ``liquidate_*`` decides it.

    A user not yet being liquidated can be once collateral is below the maintenance
    requirement; one already being liquidated stays liquidatable until collateral covers the
    maintenance requirement plus ``State.liquidation_margin_buffer_ratio`` of its liabilities
    (the hysteresis that stops a user bouncing in and out). Bankruptcy is the caller's concern.
    """
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.liquidation(reader.state.liquidation_margin_buffer_ratio)
    )
    if user.is_being_liquidated():
        return not calculation.can_exit_liquidation()
    return not calculation.meets_margin_requirement()


def calculate_user_equity(user: User, reader: MarketReader) -> int:
    """Net account value at oracle prices, unweighted (QUOTE_PRECISION): deposits minus borrows
    plus perp PnL including unsettled funding."""
    guard_rails = reader.state.oracle_guard_rails.validity
    net_usd_value = 0
    for spot_position in user.spot_positions:
        if spot_position.is_available():
            continue
        spot_market = reader.spot_market(spot_position.market_index)
        oracle_price_data, _ = _spot_price_data_and_validity(reader, spot_market, guard_rails)
        token_amount = _get_signed_token_amount(spot_position, spot_market)
        net_usd_value += get_token_value(
            token_amount, spot_market.decimals, oracle_price_data.price
        )

    for market_position in user.perp_positions:
        if market_position.is_available():
            continue
        market = reader.perp_market(market_position.market_index)
        quote_spot_market = reader.spot_market(market.quote_spot_market_index)
        quote_price_data, _ = _spot_price_data_and_validity(reader, quote_spot_market, guard_rails)
        oracle_price_data, _ = _perp_price_data_and_validity(reader, market, guard_rails)
        if market.status == MarketStatus.Settlement:
            valuation_price = market.expiry_price
        else:
            valuation_price = oracle_price_data.price
        unrealized_funding = calculate_funding_payment(
            market.amm.cumulative_funding_rate_long
            if market_position.base_asset_amount > 0
            else market.amm.cumulative_funding_rate_short,
            market_position,
        )
        _, unrealized_pnl = calculate_base_asset_value_and_pnl_with_oracle_price(
            market_position, valuation_price
        )
        pnl = unrealized_pnl + unrealized_funding
        net_usd_value += div_trunc(pnl * quote_price_data.price, PRICE_PRECISION)
    return net_usd_value
