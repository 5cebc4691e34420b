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
  :mod:`protocol.markets` does. A price of 0 or below raises from ``oracle_validity``.
* an order that does not increase risk still needs the Maintenance requirement met.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    DriftAction,
    get_max_confidence_interval_multiplier,
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
from protocol.numeric import cast_u32, cast_u128, div_trunc, sqrt
from protocol.state.margin_calculation import (
    MarginCalculation,
    MarginContext,
    MarketIdentifier,
)
from protocol.state.oracle import OraclePriceData
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
    size_sqrt = sqrt(size * 10 + 1)  # 1e9 -> 1e10 -> sqrt: 1e5
    liability_weight_numerator = liability_weight - div_trunc(liability_weight, 5)
    size_premium_liability_weight = cast_u32(
        liability_weight_numerator
        + div_trunc(size_sqrt * imf_factor, div_trunc(100_000 * SPOT_IMF_PRECISION, precision))
    )
    if is_bounded:
        return max(liability_weight, size_premium_liability_weight)
    return size_premium_liability_weight


def calculate_size_discount_asset_weight(size: int, imf_factor: int, asset_weight: int) -> int:
    """``min(asset_weight, 1.1 / (1 + imf_factor * sqrt(size)))`` in SPOT_WEIGHT_PRECISION.

    ``size`` is AMM_RESERVE_PRECISION (1e9 = one whole token).
    """
    if imf_factor == 0:
        return asset_weight
    size_sqrt = sqrt(size * 10 + 1)  # 1e9 -> 1e10 -> sqrt: 1e5
    imf_numerator = SPOT_IMF_PRECISION + div_trunc(SPOT_IMF_PRECISION, 10)
    size_discount_asset_weight = cast_u32(
        div_trunc(
            imf_numerator * SPOT_WEIGHT_PRECISION,
            SPOT_IMF_PRECISION + div_trunc(size_sqrt * imf_factor, 100_000),
        )
    )
    return min(asset_weight, size_discount_asset_weight)


# --- spot market weights --------------------------------------------------------------------
def _size_in_amm_reserve_precision(size: int, decimals: int) -> int:
    size_precision = 10**decimals
    if size_precision > AMM_RESERVE_PRECISION:
        return div_trunc(size, div_trunc(size_precision, AMM_RESERVE_PRECISION))
    return div_trunc(size * AMM_RESERVE_PRECISION, size_precision)


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


def _get_price_data_and_validity(
    reader: MarketReader,
    market_type: MarketType,
    market: SpotMarket | PerpMarket,
    oracle_id: str,
    oracle_source: OracleSource,
    last_oracle_price_twap: int,
    slot_delay_overrides: tuple[int, int],
) -> tuple[OraclePriceData, bool]:
    """The oracle's price and whether it is valid for a margin calculation (the program's
    ``OracleMap::get_price_data_and_validity`` then ``MarginCalc`` validity)."""
    if oracle_source == OracleSource.QuoteAsset:
        return _QUOTE_ASSET_PRICE_DATA, True
    price_data = reader.oracle_price_data(oracle_id)
    validity = oracle_validity(
        market_type,
        market.market_index,
        last_oracle_price_twap,
        price_data,
        reader.state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        oracle_source,
        *slot_delay_overrides,
    )
    return price_data, is_oracle_valid_for_action(validity, DriftAction.MarginCalc)


def _spot_price_data_and_validity(
    reader: MarketReader, spot_market: SpotMarket
) -> tuple[OraclePriceData, bool]:
    return _get_price_data_and_validity(
        reader,
        MarketType.Spot,
        spot_market,
        spot_market.oracle,
        spot_market.oracle_source,
        spot_market.historical_oracle_data.last_oracle_price_twap,
        (0, 0),  # the program passes no AMM-staleness overrides for spot oracles
    )


def _perp_price_data_and_validity(
    reader: MarketReader, perp_market: PerpMarket
) -> tuple[OraclePriceData, bool]:
    # This model's AMM has no per-market slot-delay overrides: the program's initial values.
    return _get_price_data_and_validity(
        reader,
        MarketType.Perp,
        perp_market,
        perp_market.amm.oracle,
        perp_market.amm.oracle_source,
        perp_market.amm.historical_oracle_data.last_oracle_price_twap,
        (-1, 0),
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
    return get_signed_token_amount(
        get_token_amount(position.scaled_balance, spot_market, position.balance_type),
        position.balance_type,
    )


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

    return margin_requirement, weighted_unrealized_pnl, worst_case_value, base_asset_value


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
def _add_quote_spot_position(
    calculation: MarginCalculation,
    spot_position: SpotPosition,
    spot_market: SpotMarket,
    strict_oracle_price: StrictOraclePrice,
    oracle_valid: bool,
) -> None:
    """The quote market counts at face value (weight 1) and has no orders to simulate."""
    token_amount = _get_signed_token_amount(spot_position, spot_market)
    if token_amount == 0 and spot_position.scaled_balance != 0:
        raise ProtocolError(
            ErrorCode.InvalidMarginRatio,
            f"scaled_balance={spot_position.scaled_balance} when token_amount=0",
        )
    token_value = get_strict_token_value(
        token_amount, spot_market.decimals, strict_oracle_price.min(), strict_oracle_price.max()
    )
    if spot_position.balance_type == SpotBalanceType.Deposit:
        if calculation.context.ignore_invalid_deposit_oracles and not oracle_valid:
            token_value = 0
        calculation.add_cross_margin_total_collateral(token_value)
        calculation.update_all_deposit_oracles_valid(oracle_valid)
        calculation.add_spot_asset_value(token_value)
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
    strict_oracle_price: StrictOraclePrice,
    oracle_valid: bool,
    margin_requirement_type: MarginRequirementType,
    user_custom_margin_ratio: int,
) -> None:
    signed_token_amount = _get_signed_token_amount(spot_position, spot_market)
    simulation = get_worst_case_fill_simulation(
        spot_position,
        spot_market,
        strict_oracle_price,
        signed_token_amount,
        margin_requirement_type,
    ).apply_user_custom_margin_ratio(
        spot_market, strict_oracle_price.current, user_custom_margin_ratio
    )
    if simulation.token_amount == 0 and spot_position.scaled_balance != 0:
        raise ProtocolError(
            ErrorCode.InvalidMarginRatio,
            f"scaled_balance={spot_position.scaled_balance} when worst_case_token_amount=0 "
            f"in spot market {spot_market.market_index}",
        )

    calculation.add_cross_margin_margin_requirement(
        margin_requirement_for_open_orders(spot_position),
        0,
        MarketIdentifier.spot(spot_market.market_index),
    )

    is_isolated_tier = spot_market.asset_tier == AssetTier.Isolated
    weighted_token_value = simulation.weighted_token_value
    if simulation.token_value > 0:
        if calculation.context.ignore_invalid_deposit_oracles and not oracle_valid:
            weighted_token_value = 0
        calculation.add_cross_margin_total_collateral(weighted_token_value)
        calculation.update_all_deposit_oracles_valid(oracle_valid)
        calculation.add_spot_asset_value(simulation.token_value)
    elif simulation.token_value < 0:
        if abs(weighted_token_value) < abs(simulation.token_value):
            raise ProtocolError(
                ErrorCode.InvalidMarginRatio,
                f"weighted_token_value < |token_value| in spot market {spot_market.market_index}",
            )
        if weighted_token_value == 0:
            raise ProtocolError(
                ErrorCode.InvalidOracle,
                f"weighted_token_value=0 for worst_case_token_amount={simulation.token_amount} "
                f"in spot market {spot_market.market_index}",
            )
        calculation.add_cross_margin_margin_requirement(
            abs(weighted_token_value),
            abs(simulation.token_value),
            MarketIdentifier.spot(spot_market.market_index),
        )
        calculation.add_spot_liability()
        calculation.update_with_spot_isolated_liability(is_isolated_tier)
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.add_spot_liability_value(abs(simulation.token_value))
    elif _spot_has_open_order(spot_position):
        calculation.add_spot_liability()
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.update_with_spot_isolated_liability(is_isolated_tier)

    orders_value = simulation.orders_value
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
    user: User,
    market_position: PerpPosition,
    reader: MarketReader,
) -> None:
    context = calculation.context
    market = reader.perp_market(market_position.market_index)

    quote_spot_market = reader.spot_market(market.quote_spot_market_index)
    quote_price_data, quote_oracle_valid = _spot_price_data_and_validity(reader, quote_spot_market)
    strict_quote_price = StrictOraclePrice.new(
        quote_price_data.price,
        quote_spot_market.historical_oracle_data.last_oracle_price_twap_5min,
        context.strict,
    )
    oracle_price_data, oracle_valid = _perp_price_data_and_validity(reader, market)

    margin_type = context.margin_requirement_type
    custom_margin_ratio = (
        user.max_margin_ratio if margin_type == MarginRequirementType.Initial else 0
    )
    if context.margin_ratio_override is not None:
        custom_margin_ratio = max(context.margin_ratio_override, custom_margin_ratio)

    margin_requirement, weighted_pnl, liability_value, _ = calculate_perp_position_value_and_pnl(
        market_position,
        market,
        oracle_price_data,
        strict_quote_price,
        margin_type,
        custom_margin_ratio,
    )
    calculation.add_cross_margin_margin_requirement(
        margin_requirement, liability_value, MarketIdentifier.perp(market.market_index)
    )
    calculation.add_cross_margin_total_collateral(weighted_pnl)
    calculation.add_perp_liability_value(liability_value)
    calculation.add_perp_pnl(weighted_pnl)

    has_perp_liability = (
        market_position.base_asset_amount != 0
        or market_position.quote_asset_amount < 0
        or _perp_has_open_order(market_position)
        or market_position.lp_shares > 0
    )
    if has_perp_liability:
        calculation.add_perp_liability()
        calculation.update_with_perp_isolated_liability(
            market.contract_tier == ContractTier.Isolated
        )
    if has_perp_liability or margin_type != MarginRequirementType.Initial:
        calculation.update_all_liability_oracles_valid(quote_oracle_valid)
        calculation.update_all_liability_oracles_valid(oracle_valid)


def calculate_margin_requirement_and_total_collateral_and_liability_info(
    user: User, reader: MarketReader, context: MarginContext
) -> MarginCalculation:
    """Walk every spot and perp position of ``user`` and total its collateral and requirement.

    Spot: the quote market at face value; other deposits at their (IMF- and deposit-scaled) asset
    weight and borrows at their (IMF-premium) liability weight, each after the riskier side of
    its open orders fills. Perps: worst-case notional times the size-adjusted margin ratio, plus
    the weighted unrealized PnL (funding included) as collateral.
    """
    calculation = MarginCalculation(context)
    margin_type = context.margin_requirement_type

    spot_user_custom_margin_ratio = (
        user.max_margin_ratio if margin_type == MarginRequirementType.Initial else 0
    )
    if context.margin_ratio_override is not None:
        spot_user_custom_margin_ratio = max(
            context.margin_ratio_override, spot_user_custom_margin_ratio
        )

    for spot_position in user.spot_positions:
        _validate_spot_position(spot_position)
        if spot_position.is_available():
            continue
        spot_market = reader.spot_market(spot_position.market_index)
        oracle_price_data, oracle_valid = _spot_price_data_and_validity(reader, spot_market)
        strict_oracle_price = StrictOraclePrice.new(
            oracle_price_data.price,
            spot_market.historical_oracle_data.last_oracle_price_twap_5min,
            context.strict,
        )
        strict_oracle_price.validate()

        if spot_market.market_index == QUOTE_SPOT_MARKET_INDEX:
            _add_quote_spot_position(
                calculation, spot_position, spot_market, strict_oracle_price, oracle_valid
            )
        else:
            _add_spot_position(
                calculation,
                spot_position,
                spot_market,
                strict_oracle_price,
                oracle_valid,
                margin_type,
                spot_user_custom_margin_ratio,
            )

    for market_position in user.perp_positions:
        if market_position.is_available():
            continue
        _add_perp_position(calculation, user, market_position, reader)

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
    net_usd_value = 0
    for spot_position in user.spot_positions:
        if spot_position.is_available():
            continue
        spot_market = reader.spot_market(spot_position.market_index)
        oracle_price_data, _ = _spot_price_data_and_validity(reader, spot_market)
        token_amount = _get_signed_token_amount(spot_position, spot_market)
        net_usd_value += get_token_value(
            token_amount, spot_market.decimals, oracle_price_data.price
        )

    for market_position in user.perp_positions:
        if market_position.is_available():
            continue
        market = reader.perp_market(market_position.market_index)
        quote_spot_market = reader.spot_market(market.quote_spot_market_index)
        quote_price_data, _ = _spot_price_data_and_validity(reader, quote_spot_market)
        oracle_price_data, _ = _perp_price_data_and_validity(reader, market)
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
