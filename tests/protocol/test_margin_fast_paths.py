"""The margin calculation's fast paths against the general code they specialize.

:func:`~protocol.math.margin.calculate_margin_requirement_and_total_collateral_and_liability_info`
inlines the common cases of its position walk (no open bids/asks, no BAL shares, non-negative
operands where floor division is Rust's truncation). Here a straightforward reference walk
(:func:`reference_calculation`: every position through the general functions, every total
through the ``MarginCalculation`` methods, as the program writes it) must agree with it to the
unit on random accounts, markets, oracle readings and contexts, including when and how it
raises; and each inlined helper must agree with the general function it replaces, over
arguments well outside the program's ranges too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MARGIN_PRECISION,
    PRICE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_IMF_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import CastingError, MathError, ProtocolError
from protocol.markets import default_program_state
from protocol.math import margin
from protocol.math.margin import (
    StrictOraclePrice,
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    calculate_perp_position_value_and_pnl,
    calculate_size_discount_asset_weight,
    calculate_size_premium_liability_weight,
    get_worst_case_fill_simulation,
    margin_requirement_for_open_orders,
)
from protocol.math.oracle import (
    DriftAction,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.spot_balance import (
    get_signed_token_amount,
    get_strict_token_value,
    get_token_amount,
)
from protocol.numeric import cast_u32, div_trunc, sqrt
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OraclePriceData,
    PerpMarket,
    PerpPosition,
    SpotMarket,
    SpotPosition,
    State,
    User,
)
from protocol.state.margin_calculation import MarginCalculation, MarginContext, MarketIdentifier
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

Q = PRICE_PRECISION
ORACLES = ("SOL/USD", "BTC/USD", "USDC/USD")


# --- the reference walk -----------------------------------------------------------------------
@dataclass
class Reader:
    """A :class:`protocol.accounts.MarketReader` over fixed markets and readings."""

    state: State
    spot_markets: dict[int, SpotMarket]
    perp_markets: dict[int, PerpMarket]
    oracles: dict[str, OraclePriceData]

    def spot_market(self, market_index: int) -> SpotMarket:
        return self.spot_markets[market_index]

    def perp_market(self, market_index: int) -> PerpMarket:
        return self.perp_markets[market_index]

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData:
        return self.oracles[oracle_id]


def _price_and_validity(
    reader: Reader, market: SpotMarket | PerpMarket
) -> tuple[OraclePriceData, bool]:
    if isinstance(market, SpotMarket):
        market_type, oracle, source = MarketType.Spot, market.oracle, market.oracle_source
        twap, overrides = market.historical_oracle_data.last_oracle_price_twap, (0, 0)
    else:
        market_type, oracle, source = MarketType.Perp, market.amm.oracle, market.amm.oracle_source
        twap, overrides = market.amm.historical_oracle_data.last_oracle_price_twap, (-1, 0)
    if source == OracleSource.QuoteAsset:
        return OraclePriceData(PRICE_PRECISION, 1, 0), True
    price_data = reader.oracle_price_data(oracle)
    validity = oracle_validity(
        market_type,
        market.market_index,
        twap,
        price_data,
        reader.state.oracle_guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        source,
        *overrides,
    )
    return price_data, is_oracle_valid_for_action(validity, DriftAction.MarginCalc)


def _reference_spot(
    calculation: MarginCalculation,
    position: SpotPosition,
    market: SpotMarket,
    strict_price: StrictOraclePrice,
    oracle_valid: bool,
    custom_margin_ratio: int,
) -> None:
    context = calculation.context
    token_amount = get_signed_token_amount(
        get_token_amount(position.scaled_balance, market, position.balance_type),
        position.balance_type,
    )
    spot_id = MarketIdentifier.spot(market.market_index)
    if market.market_index == QUOTE_SPOT_MARKET_INDEX:
        if token_amount == 0 and position.scaled_balance != 0:
            raise ProtocolError(ErrorCode.InvalidMarginRatio)
        value = get_strict_token_value(
            token_amount, market.decimals, strict_price.min(), strict_price.max()
        )
        if position.balance_type == SpotBalanceType.Deposit:
            if context.ignore_invalid_deposit_oracles and not oracle_valid:
                value = 0
            calculation.add_cross_margin_total_collateral(value)
            calculation.update_all_deposit_oracles_valid(oracle_valid)
            calculation.add_spot_asset_value(value)
            return
        if value == 0:
            raise ProtocolError(ErrorCode.InvalidMarginRatio)
        calculation.add_cross_margin_margin_requirement(abs(value), abs(value), spot_id)
        calculation.add_spot_liability()
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.add_spot_liability_value(abs(value))
        return

    simulation = get_worst_case_fill_simulation(
        position, market, strict_price, token_amount, context.margin_requirement_type
    ).apply_user_custom_margin_ratio(market, strict_price.current, custom_margin_ratio)
    if simulation.token_amount == 0 and position.scaled_balance != 0:
        raise ProtocolError(ErrorCode.InvalidMarginRatio)
    calculation.add_cross_margin_margin_requirement(
        margin_requirement_for_open_orders(position), 0, spot_id
    )
    isolated = market.asset_tier == AssetTier.Isolated
    weighted = simulation.weighted_token_value
    if simulation.token_value > 0:
        if context.ignore_invalid_deposit_oracles and not oracle_valid:
            weighted = 0
        calculation.add_cross_margin_total_collateral(weighted)
        calculation.update_all_deposit_oracles_valid(oracle_valid)
        calculation.add_spot_asset_value(simulation.token_value)
    elif simulation.token_value < 0:
        if abs(weighted) < abs(simulation.token_value):
            raise ProtocolError(ErrorCode.InvalidMarginRatio)
        if weighted == 0:
            raise ProtocolError(ErrorCode.InvalidOracle)
        calculation.add_cross_margin_margin_requirement(
            abs(weighted), abs(simulation.token_value), spot_id
        )
        calculation.add_spot_liability()
        calculation.update_with_spot_isolated_liability(isolated)
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.add_spot_liability_value(abs(simulation.token_value))
    elif position.open_orders != 0 or position.open_bids != 0 or position.open_asks != 0:
        calculation.add_spot_liability()
        calculation.update_all_liability_oracles_valid(oracle_valid)
        calculation.update_with_spot_isolated_liability(isolated)
    orders_value = simulation.orders_value
    if orders_value > 0:
        if context.ignore_invalid_deposit_oracles and not oracle_valid:
            orders_value = 0
        calculation.add_cross_margin_total_collateral(orders_value)
        calculation.add_spot_asset_value(orders_value)
    elif orders_value < 0:
        calculation.add_cross_margin_margin_requirement(
            abs(orders_value), abs(orders_value), MarketIdentifier.spot(QUOTE_SPOT_MARKET_INDEX)
        )
        calculation.add_spot_liability_value(abs(orders_value))


def _reference_perp(
    calculation: MarginCalculation, position: PerpPosition, reader: Reader, custom_ratio: int
) -> None:
    context = calculation.context
    market = reader.perp_market(position.market_index)
    quote_market = reader.spot_market(market.quote_spot_market_index)
    quote_price_data, quote_valid = _price_and_validity(reader, quote_market)
    strict_quote_price = StrictOraclePrice.new(
        quote_price_data.price,
        quote_market.historical_oracle_data.last_oracle_price_twap_5min,
        context.strict,
    )
    price_data, oracle_valid = _price_and_validity(reader, market)
    requirement, weighted_pnl, liability_value, _ = calculate_perp_position_value_and_pnl(
        position,
        market,
        price_data,
        strict_quote_price,
        context.margin_requirement_type,
        custom_ratio,
    )
    calculation.add_cross_margin_margin_requirement(
        requirement, liability_value, MarketIdentifier.perp(market.market_index)
    )
    calculation.add_cross_margin_total_collateral(weighted_pnl)
    calculation.add_perp_liability_value(liability_value)
    calculation.add_perp_pnl(weighted_pnl)
    has_liability = (
        position.base_asset_amount != 0
        or position.quote_asset_amount < 0
        or position.open_orders != 0
        or position.open_bids != 0
        or position.open_asks != 0
        or position.lp_shares > 0
    )
    if has_liability:
        calculation.add_perp_liability()
        calculation.update_with_perp_isolated_liability(
            market.contract_tier == ContractTier.Isolated
        )
    if has_liability or context.margin_requirement_type != MarginRequirementType.Initial:
        calculation.update_all_liability_oracles_valid(quote_valid)
        calculation.update_all_liability_oracles_valid(oracle_valid)


def reference_calculation(user: User, reader: Reader, context: MarginContext) -> MarginCalculation:
    """The account walk written plainly: the program's structure, no shortcuts."""
    calculation = MarginCalculation(context)
    custom_ratio = (
        user.max_margin_ratio
        if context.margin_requirement_type == MarginRequirementType.Initial
        else 0
    )
    if context.margin_ratio_override is not None:
        custom_ratio = max(context.margin_ratio_override, custom_ratio)
    for position in user.spot_positions:
        margin._validate_spot_position(position)
        if position.is_available():
            continue
        market = reader.spot_market(position.market_index)
        price_data, oracle_valid = _price_and_validity(reader, market)
        strict_price = StrictOraclePrice.new(
            price_data.price,
            market.historical_oracle_data.last_oracle_price_twap_5min,
            context.strict,
        )
        strict_price.validate()
        _reference_spot(calculation, position, market, strict_price, oracle_valid, custom_ratio)
    for perp_position in user.perp_positions:
        if not perp_position.is_available():
            _reference_perp(calculation, perp_position, reader, custom_ratio)
    calculation.validate_num_spot_liabilities()
    return calculation


@dataclass(frozen=True)
class Raised:
    error: str
    code: object


def _outcome(fn: Any, *args: Any) -> object:
    """The result, or the kind of error (class and code) it raised."""
    try:
        return fn(*args)
    except (ProtocolError, MathError, CastingError) as error:
        return Raised(type(error).__name__, getattr(error, "code", None))


# --- random worlds ----------------------------------------------------------------------------
prices = st.one_of(st.integers(1, 200_000 * Q), st.sampled_from([0, -Q, Q, 150 * Q]))
weights = st.integers(0, 3 * SPOT_WEIGHT_PRECISION)
imf_factors = st.one_of(st.sampled_from([0, 1, 500, 3_000, 105_000]), st.integers(0, 10**6))


@st.composite
def histories(draw: st.DrawFn, price: int) -> HistoricalOracleData:
    twap = st.one_of(st.just(price), st.integers(0, 300_000 * Q))
    return HistoricalOracleData(
        last_oracle_price=draw(st.one_of(st.just(price), prices)),
        last_oracle_price_twap=draw(twap),
        last_oracle_price_twap_5min=draw(twap),
    )


@st.composite
def spot_markets(draw: st.DrawFn, market_index: int, oracle: str, price: int) -> SpotMarket:
    quote = market_index == QUOTE_SPOT_MARKET_INDEX
    sources = [OracleSource.QuoteAsset, OracleSource.Pyth] if quote else list(OracleSource)
    initial_asset_weight = draw(st.integers(0, SPOT_WEIGHT_PRECISION))
    maintenance_liability_weight = draw(
        st.integers(SPOT_WEIGHT_PRECISION, 3 * SPOT_WEIGHT_PRECISION)
    )
    return SpotMarket(
        market_index=market_index,
        name=oracle,
        oracle=oracle,
        decimals=draw(st.sampled_from([6, 8, 9, 12]) if not quote else st.sampled_from([6, 9])),
        oracle_source=draw(st.sampled_from(sources)),
        asset_tier=draw(st.sampled_from(list(AssetTier))),
        historical_oracle_data=draw(histories(price)),
        deposit_balance=draw(st.integers(0, 10**20)),
        cumulative_deposit_interest=draw(st.integers(10**10, 3 * 10**10)),
        cumulative_borrow_interest=draw(st.integers(10**10, 3 * 10**10)),
        initial_asset_weight=initial_asset_weight,
        maintenance_asset_weight=draw(st.integers(initial_asset_weight, SPOT_WEIGHT_PRECISION)),
        initial_liability_weight=draw(
            st.integers(maintenance_liability_weight, 4 * SPOT_WEIGHT_PRECISION)
        ),
        maintenance_liability_weight=maintenance_liability_weight,
        imf_factor=draw(imf_factors),
        scale_initial_asset_weight_start=draw(st.sampled_from([0, 10**6, 10**12])),
    )


@st.composite
def perp_markets(draw: st.DrawFn, market_index: int, oracle: str, price: int) -> PerpMarket:
    reserve = 1_000 * AMM_RESERVE_PRECISION
    margin_ratio_maintenance = draw(st.integers(0, MARGIN_PRECISION))
    return PerpMarket(
        market_index=market_index,
        name=f"{oracle}-PERP",
        amm=AMM(
            oracle=oracle,
            historical_oracle_data=draw(histories(price)),
            base_asset_reserve=reserve,
            quote_asset_reserve=reserve,
            sqrt_k=reserve,
            min_base_asset_reserve=reserve // 2,
            max_base_asset_reserve=reserve * 2,
            base_asset_amount_with_amm=draw(st.integers(-(10**13), 10**13)),
            quote_asset_amount=draw(st.integers(-(10**13), 10**13)),
            cumulative_funding_rate_long=draw(st.integers(-(10**12), 10**12)),
            cumulative_funding_rate_short=draw(st.integers(-(10**12), 10**12)),
            base_asset_amount_per_lp=draw(st.integers(-(10**10), 10**10)),
            quote_asset_amount_per_lp=draw(st.integers(-(10**10), 10**10)),
            order_step_size=draw(st.sampled_from([1, 10**6, 10**7])),
        ),
        status=draw(
            st.sampled_from(
                [MarketStatus.Active, MarketStatus.Initialized, MarketStatus.Settlement]
            )
        ),
        contract_type=draw(st.sampled_from(list(ContractType))),
        contract_tier=draw(st.sampled_from(list(ContractTier))),
        margin_ratio_initial=draw(st.integers(margin_ratio_maintenance, 2 * MARGIN_PRECISION)),
        margin_ratio_maintenance=margin_ratio_maintenance,
        imf_factor=draw(imf_factors),
        unrealized_pnl_initial_asset_weight=draw(st.integers(0, SPOT_WEIGHT_PRECISION)),
        unrealized_pnl_maintenance_asset_weight=draw(st.integers(0, SPOT_WEIGHT_PRECISION)),
        unrealized_pnl_imf_factor=draw(imf_factors),
        unrealized_pnl_max_imbalance=draw(st.sampled_from([0, 10**6, 10**12])),
        expiry_price=draw(prices),
    )


@st.composite
def readers(draw: st.DrawFn) -> Reader:
    oracle_prices = {oracle: draw(prices) for oracle in ORACLES}
    oracles = {
        oracle: OraclePriceData(
            price,
            confidence=draw(st.sampled_from([0, 1, price // 10 if price > 0 else 0])),
            delay=draw(st.sampled_from([0, 5, 500])),
            has_sufficient_number_of_data_points=draw(st.booleans()),
        )
        for oracle, price in oracle_prices.items()
    }
    spot = {
        i: draw(spot_markets(i, oracle, oracle_prices[oracle]))
        for i, oracle in enumerate(("USDC/USD", "SOL/USD", "BTC/USD"))
    }
    perp = {
        i: draw(perp_markets(i, oracle, oracle_prices[oracle]))
        for i, oracle in enumerate(("SOL/USD", "BTC/USD"))
    }
    return Reader(State(), spot, perp, oracles)


amounts = st.one_of(st.just(0), st.integers(-(10**13), 10**13))
orders = st.one_of(st.just(0), st.integers(1, 40))


@st.composite
def spot_positions(draw: st.DrawFn, market_index: int) -> SpotPosition:
    with_orders = draw(st.booleans())
    return SpotPosition(
        market_index,
        scaled_balance=draw(st.one_of(st.just(0), st.integers(1, 10**16))),
        balance_type=draw(st.sampled_from(list(SpotBalanceType))),
        open_bids=draw(st.integers(0, 10**12)) if with_orders else 0,
        open_asks=draw(st.integers(-(10**12), 0)) if with_orders else 0,
        open_orders=draw(orders),
    )


@st.composite
def perp_positions(draw: st.DrawFn, market_index: int) -> PerpPosition:
    with_orders = draw(st.booleans())
    lp_shares = draw(st.sampled_from([0, 0, 0, 10**9, 10**11]))
    return PerpPosition(
        market_index,
        base_asset_amount=draw(amounts),
        quote_asset_amount=draw(amounts),
        last_cumulative_funding_rate=draw(st.integers(-(10**12), 10**12)),
        open_bids=draw(st.integers(0, 10**12)) if with_orders else 0,
        open_asks=draw(st.integers(-(10**12), 0)) if with_orders else 0,
        open_orders=draw(orders),
        lp_shares=lp_shares,
        last_base_asset_amount_per_lp=draw(st.integers(-(10**10), 10**10)),
        last_quote_asset_amount_per_lp=draw(st.integers(-(10**10), 10**10)),
        remainder_base_asset_amount=draw(st.integers(-(10**6), 10**6)) if lp_shares else 0,
    )


@st.composite
def users(draw: st.DrawFn) -> User:
    spot_indexes = draw(st.lists(st.sampled_from([0, 1, 2]), unique=True, max_size=3))
    perp_indexes = draw(st.lists(st.sampled_from([0, 1]), unique=True, max_size=2))
    return User(
        authority=bytes(32),
        spot_positions=[draw(spot_positions(i)) for i in sorted(spot_indexes)],
        perp_positions=[draw(perp_positions(i)) for i in perp_indexes],
        max_margin_ratio=draw(st.sampled_from([0, 0, 500, 5_000])),
    )


@st.composite
def contexts(draw: st.DrawFn) -> MarginContext:
    if draw(st.booleans()):
        context = MarginContext.liquidation(draw(st.sampled_from([0, 200, 10_000])))
        if draw(st.booleans()):
            kind = draw(st.sampled_from([MarketIdentifier.spot, MarketIdentifier.perp]))
            context = context.track_market_margin_requirement(kind(draw(st.sampled_from([0, 1]))))
    else:
        context = MarginContext.standard(draw(st.sampled_from(list(MarginRequirementType))))
        context = context.with_margin_buffer(draw(st.sampled_from([0, 300])))
    context = context.with_strict(draw(st.booleans()))
    context = context.with_ignore_invalid_deposit_oracles(draw(st.booleans()))
    if draw(st.booleans()):
        context = context.with_margin_ratio_override(draw(st.sampled_from([0, 1_000, 20_000])))
    return context


# --- the whole calculation ------------------------------------------------------------------
@settings(max_examples=300)
@given(readers(), users(), contexts())
def test_calculation_matches_the_reference_walk(
    reader: Reader, user: User, context: MarginContext
) -> None:
    expected = _outcome(reference_calculation, user, reader, context)
    got = _outcome(
        calculate_margin_requirement_and_total_collateral_and_liability_info, user, reader, context
    )
    assert got == expected


@st.composite
def live_accounts(draw: st.DrawFn) -> User:
    """Accounts as a live exchange holds them: a USDC deposit, deposits or borrows in the other
    spot markets without open orders, perp positions without BAL shares."""
    spot = [SpotPosition(0, scaled_balance=draw(st.integers(1, 10**16)))]
    for market_index in draw(st.lists(st.sampled_from([1, 2]), unique=True)):
        balance_type = draw(st.sampled_from(list(SpotBalanceType)))
        spot.append(
            SpotPosition(
                market_index,
                scaled_balance=draw(st.integers(1, 10**13)),
                balance_type=balance_type,
            )
        )
    perp = [
        PerpPosition(
            market_index,
            base_asset_amount=draw(amounts),
            quote_asset_amount=draw(amounts),
            open_orders=draw(st.sampled_from([0, 0, 2])),
        )
        for market_index in draw(st.lists(st.sampled_from([0, 1]), unique=True))
    ]
    return User(authority=bytes(32), spot_positions=spot, perp_positions=perp)


@settings(max_examples=250)
@given(readers(), live_accounts(), contexts())
def test_live_accounts_match_the_reference_walk(
    reader: Reader, user: User, context: MarginContext
) -> None:
    """The same on accounts shaped like the liquidator benchmark's, at positive prices, so
    that most examples take the fast paths and get past validation."""
    for oracle, data in reader.oracles.items():
        reader.oracles[oracle] = replace(data, price=abs(data.price) or Q)
    for market in reader.spot_markets.values():
        history = market.historical_oracle_data
        history.last_oracle_price_twap_5min = abs(history.last_oracle_price_twap_5min) or Q
    expected = _outcome(reference_calculation, user, reader, context)
    got = _outcome(
        calculate_margin_requirement_and_total_collateral_and_liability_info, user, reader, context
    )
    assert got == expected


# --- the inlined helpers ---------------------------------------------------------------------
def _reference_size_premium(
    size: int, imf_factor: int, liability_weight: int, precision: int, is_bounded: bool
) -> int:
    if imf_factor == 0:
        return liability_weight
    size_sqrt = sqrt(size * 10 + 1)
    liability_weight_numerator = liability_weight - div_trunc(liability_weight, 5)
    premium = cast_u32(
        liability_weight_numerator
        + div_trunc(size_sqrt * imf_factor, div_trunc(100_000 * SPOT_IMF_PRECISION, precision))
    )
    return max(liability_weight, premium) if is_bounded else premium


def _reference_size_discount(size: int, imf_factor: int, asset_weight: int) -> int:
    if imf_factor == 0:
        return asset_weight
    size_sqrt = sqrt(size * 10 + 1)
    imf_numerator = SPOT_IMF_PRECISION + div_trunc(SPOT_IMF_PRECISION, 10)
    discount = cast_u32(
        div_trunc(
            imf_numerator * SPOT_WEIGHT_PRECISION,
            SPOT_IMF_PRECISION + div_trunc(size_sqrt * imf_factor, 100_000),
        )
    )
    return min(asset_weight, discount)


wide = st.one_of(st.integers(-(10**6), 10**6), st.integers(-(10**30), 10**30))


@given(
    wide,
    wide,
    wide,
    st.sampled_from([MARGIN_PRECISION, 1, 10**6, 10**12]),
    st.booleans(),
)
def test_size_premium_liability_weight_matches_the_plain_formula(
    size: int, imf_factor: int, liability_weight: int, precision: int, is_bounded: bool
) -> None:
    args = (size, imf_factor, liability_weight, precision, is_bounded)
    assert _outcome(calculate_size_premium_liability_weight, *args) == _outcome(
        _reference_size_premium, *args
    )


@given(wide, wide, wide)
def test_size_discount_asset_weight_matches_the_plain_formula(
    size: int, imf_factor: int, asset_weight: int
) -> None:
    args = (size, imf_factor, asset_weight)
    assert _outcome(calculate_size_discount_asset_weight, *args) == _outcome(
        _reference_size_discount, *args
    )


@given(
    st.integers(-(10**20), 10**20),
    st.sampled_from(list(SpotBalanceType)),
    st.integers(0, 25),
    st.integers(-(10**11), 3 * 10**10),
    st.integers(-(10**11), 3 * 10**10),
)
def test_signed_token_amount_matches_get_token_amount(
    scaled_balance: int,
    balance_type: SpotBalanceType,
    decimals: int,
    deposit_interest: int,
    borrow_interest: int,
) -> None:
    market = SpotMarket(
        market_index=1,
        name="X",
        oracle="X",
        decimals=decimals,
        cumulative_deposit_interest=deposit_interest,
        cumulative_borrow_interest=borrow_interest,
    )
    position = SpotPosition(1, scaled_balance=scaled_balance, balance_type=balance_type)
    assert _outcome(margin._get_signed_token_amount, position, market) == _outcome(
        lambda: get_signed_token_amount(
            get_token_amount(scaled_balance, market, balance_type), balance_type
        )
    )


@given(
    st.integers(-(10**20), 10**20),
    st.integers(-3, 30),
    st.integers(-(10**12), 10**12),
    st.integers(-(10**12), 10**12),
)
def test_strict_token_value_matches_get_strict_token_value(
    token_amount: int, decimals: int, price_min: int, price_max: int
) -> None:
    args = (token_amount, decimals, price_min, price_max)
    assert _outcome(margin._get_strict_token_value, *args) == _outcome(
        get_strict_token_value, *args
    )


@given(st.integers(0, 30), st.integers(-(10**20), 10**20))
def test_size_in_amm_reserve_precision_matches_the_division(decimals: int, size: int) -> None:
    size_precision = 10**decimals
    if size_precision > AMM_RESERVE_PRECISION:
        expected = div_trunc(size, div_trunc(size_precision, AMM_RESERVE_PRECISION))
    else:
        expected = div_trunc(size * AMM_RESERVE_PRECISION, size_precision)
    assert margin._size_in_amm_reserve_precision(size, decimals) == expected


@settings(max_examples=250)
@given(
    readers(),
    st.sampled_from([0, 1]),
    amounts,
    amounts,
    st.integers(-(10**12), 10**12),
    orders,
    st.sampled_from(list(MarginRequirementType)),
    st.one_of(st.sampled_from([0, 500, 20_000]), st.integers(-1, 1)),
    st.one_of(st.just(None), st.integers(1, 2 * Q)),
    st.one_of(st.just(Q), st.integers(-Q, 3 * Q)),
)
def test_perp_fast_path_matches_calculate_perp_position_value_and_pnl(
    reader: Reader,
    market_index: int,
    base: int,
    quote: int,
    last_funding_rate: int,
    open_orders: int,
    margin_type: MarginRequirementType,
    custom_ratio: int,
    quote_twap: int | None,
    quote_price: int,
) -> None:
    market = replace(
        reader.perp_markets[market_index],
        status=MarketStatus.Active,
        contract_type=ContractType.Perpetual,
    )
    if custom_ratio in (-1, 0, 1):  # at the market's own ratio, and either side of it
        custom_ratio += margin.get_margin_ratio(market, abs(base), margin_type)
    position = PerpPosition(
        market_index,
        base_asset_amount=base,
        quote_asset_amount=quote,
        last_cumulative_funding_rate=last_funding_rate,
        open_orders=open_orders,
    )
    oracle = reader.oracles[market.amm.oracle]
    strict_quote_price = StrictOraclePrice(quote_price, quote_twap)
    fast = _outcome(
        margin._perp_position_value_and_pnl_without_orders,
        position,
        market,
        oracle.price,
        strict_quote_price,
        margin_type,
        custom_ratio,
    )
    general = _outcome(
        calculate_perp_position_value_and_pnl,
        position,
        market,
        oracle,
        strict_quote_price,
        margin_type,
        custom_ratio,
    )
    assert fast == (general if isinstance(general, Raised) else general[:3])  # type: ignore[index]


def test_market_identifiers_are_shared_values() -> None:
    assert MarketIdentifier.perp(3) is MarketIdentifier.perp(3)
    assert MarketIdentifier.perp(3) == MarketIdentifier(MarketType.Perp, 3)
    assert MarketIdentifier.spot(3) != MarketIdentifier.perp(3)


def test_strict_oracle_prices_are_built_once_per_reading() -> None:
    first = margin._strict_oracle_price(101 * Q, 99 * Q, True)
    assert first == (StrictOraclePrice(101 * Q, 99 * Q), 99 * Q, 101 * Q)
    assert margin._strict_oracle_price(101 * Q, 99 * Q, True) is first
    assert margin._strict_oracle_price(101 * Q, 99 * Q, False) == (
        StrictOraclePrice(101 * Q),
        101 * Q,
        101 * Q,
    )


@given(
    st.builds(
        OraclePriceData,
        prices,
        confidence=st.integers(0, 10**7),
        delay=st.integers(0, 300),
        has_sufficient_number_of_data_points=st.booleans(),
    ),
    st.integers(-(10**6), 300_000 * Q),
    st.sampled_from([1, 5, 50]),
    st.sampled_from(list(OracleSource)),
    st.sampled_from([(0, 0), (-1, 0), (10, 10)]),
    st.builds(
        ValidityGuardRails,
        slots_before_stale_for_amm=st.integers(0, 20),
        slots_before_stale_for_margin=st.integers(0, 200),
        confidence_interval_max_size=st.integers(0, 50_000),
        too_volatile_ratio=st.integers(1, 10),
    ),
)
def test_remembered_oracle_verdicts_match_oracle_validity(
    price_data: OraclePriceData,
    twap: int,
    multiplier: int,
    source: OracleSource,
    overrides: tuple[int, int],
    guard_rails: ValidityGuardRails,
) -> None:
    args = (MarketType.Perp, 0, twap, price_data, guard_rails, multiplier, source, *overrides)
    expected = is_oracle_valid_for_action(oracle_validity(*args), DriftAction.MarginCalc)
    assert margin._is_oracle_valid_for_margin_calc(*args) is expected
    assert margin._is_oracle_valid_for_margin_calc(*args) is expected  # remembered
    # the same values in a new reading: judged again, the same way
    copy = replace(price_data)
    assert copy is not price_data
    assert margin._is_oracle_valid_for_margin_calc(*args[:3], copy, *args[4:]) is expected


def test_remembered_oracle_verdicts_are_bounded() -> None:
    guard_rails = ValidityGuardRails()
    for price in range(1, margin._MARGIN_CALC_VALIDITY_ENTRIES + 10):
        reading = OraclePriceData(price * Q, 0, 0)
        assert margin._is_oracle_valid_for_margin_calc(
            MarketType.Spot, 1, price * Q, reading, guard_rails, 1, OracleSource.Pyth, 0, 0
        )
        assert len(margin._margin_calc_validity) <= margin._MARGIN_CALC_VALIDITY_ENTRIES


def test_markets_changed_in_place_are_read_afresh() -> None:
    """Within a transaction markets change in place between two margin checks: nothing the
    calculation remembers may outlive such a change."""
    genesis = default_program_state()
    reader = Reader(
        genesis.state,
        genesis.spot_markets,
        genesis.perp_markets,
        {oracle: account.price_data(0) for oracle, account in genesis.oracles.items()},
    )
    user = User(
        authority=bytes(32),
        spot_positions=[
            SpotPosition(0, scaled_balance=1_000 * 10**9),
            SpotPosition(1, scaled_balance=10**9, balance_type=SpotBalanceType.Borrow),
        ],
        perp_positions=[
            PerpPosition(0, base_asset_amount=-5 * 10**9, quote_asset_amount=760 * 10**6)
        ],
    )
    context = MarginContext.liquidation(genesis.state.liquidation_margin_buffer_ratio)
    sol, sol_perp = reader.spot_markets[1], reader.perp_markets[0]

    def changes() -> Iterator[None]:
        yield
        sol_perp.margin_ratio_maintenance *= 2
        yield
        sol_perp.amm.cumulative_funding_rate_short += 10**9
        yield
        sol.maintenance_liability_weight += 1_000
        yield
        sol.cumulative_borrow_interest += 10**9
        yield
        # a TWAP far from the price: the oracle turns too volatile for margin
        sol_perp.amm.historical_oracle_data.last_oracle_price_twap //= 10
        yield
        reader.oracles["SOL/USD"] = replace(reader.oracles["SOL/USD"], price=140 * Q)
        yield

    seen = []
    for _ in changes():
        got = calculate_margin_requirement_and_total_collateral_and_liability_info(
            user, reader, context
        )
        assert got == reference_calculation(user, reader, context)
        seen.append((got.total_collateral, got.margin_requirement, got.all_oracles_valid))
    assert len(set(seen)) == len(seen)  # every change moved the result
