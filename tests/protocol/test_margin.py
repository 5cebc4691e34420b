"""Cross-margin math: weights, margin ratios, worst-case fills and the account calculation.

Vectors marked "program" reproduce the program's own unit tests (``math/margin/tests.rs``,
``state/perp_market/tests.rs``, ``state/user/tests.rs``) with the same inputs and outputs; the
rest are worked by hand in the comments.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    FUNDING_RATE_PRECISION,
    MARGIN_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_IMF_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.markets import default_program_state
from protocol.math.margin import (
    OrderFillSimulation,
    StrictOraclePrice,
    calculate_base_asset_value_and_pnl_with_oracle_price,
    calculate_free_collateral,
    calculate_margin_requirement_and_total_collateral,
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    calculate_perp_position_value_and_pnl,
    calculate_scaled_initial_asset_weight,
    calculate_size_discount_asset_weight,
    calculate_size_premium_liability_weight,
    calculate_user_equity,
    can_be_liquidated,
    get_asset_weight,
    get_liability_weight,
    get_margin_ratio,
    get_scaled_initial_asset_weight,
    get_spot_market_margin_ratio,
    get_unrealized_asset_weight,
    get_worst_case_fill_simulation,
    is_cross_margin_being_liquidated,
    margin_requirement_for_open_orders,
    meets_initial_margin_requirement,
    meets_maintenance_margin_requirement,
    meets_place_order_margin_requirement,
    meets_withdraw_margin_requirement,
    worst_case_liability_value,
)
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OracleAccount,
    OraclePriceData,
    PerpMarket,
    PerpPosition,
    SpotMarket,
    SpotPosition,
    State,
    User,
)
from protocol.state.margin_calculation import MarginCalculation, MarginContext, MarketIdentifier
from protocol.types import (
    ContractTier,
    ContractType,
    MarginRequirementType,
    MarketStatus,
    OracleSource,
    SpotBalanceType,
    UserStatus,
)

INITIAL = MarginRequirementType.Initial
FILL = MarginRequirementType.Fill
MAINTENANCE = MarginRequirementType.Maintenance


# --- fixtures -----------------------------------------------------------------------------------
def usdc_market(**overrides: Any) -> SpotMarket:
    fields: dict[str, Any] = {
        "market_index": 0,
        "name": "USDC",
        "oracle": "USDC/USD",
        "decimals": 6,
        "oracle_source": OracleSource.QuoteAsset,
        "historical_oracle_data": HistoricalOracleData.seeded(PRICE_PRECISION, 0),
    }
    fields.update(overrides)
    return SpotMarket(**fields)


def sol_market(price: int = 100 * PRICE_PRECISION, **overrides: Any) -> SpotMarket:
    """The program's ``SpotMarket::default_base_market`` weights (80/90/120/110%)."""
    fields: dict[str, Any] = {
        "market_index": 1,
        "name": "SOL",
        "oracle": "SOL/USD",
        "decimals": 9,
        "initial_asset_weight": 8_000,
        "maintenance_asset_weight": 9_000,
        "initial_liability_weight": 12_000,
        "maintenance_liability_weight": 11_000,
        "historical_oracle_data": HistoricalOracleData.seeded(price, 0),
    }
    fields.update(overrides)
    return SpotMarket(**fields)


def sol_perp(**overrides: Any) -> PerpMarket:
    fields: dict[str, Any] = {
        "market_index": 0,
        "name": "SOL-PERP",
        "amm": AMM(
            oracle="SOL/USD",
            base_asset_reserve=100 * AMM_RESERVE_PRECISION,
            quote_asset_reserve=100 * AMM_RESERVE_PRECISION,
            sqrt_k=100 * AMM_RESERVE_PRECISION,
            peg_multiplier=100 * PEG_PRECISION,
            order_step_size=10_000_000,
        ),
        "margin_ratio_initial": 1_000,
        "margin_ratio_maintenance": 500,
        "status": MarketStatus.Initialized,
    }
    fields.update(overrides)
    return PerpMarket(**fields)


def reader(
    spot_markets: list[SpotMarket],
    perp_markets: list[PerpMarket] | None = None,
    prices: dict[str, int] | None = None,
    slot: int = 0,
) -> Accounts:
    oracles = {
        oracle_id: OracleAccount(oracle_id, price, 0, slot)
        for oracle_id, price in (prices or {"SOL/USD": 100 * PRICE_PRECISION}).items()
    }
    state = ProgramState(
        state=State(),
        spot_markets={m.market_index: m for m in spot_markets},
        perp_markets={m.market_index: m for m in perp_markets or []},
        oracles=oracles,
    )
    return Accounts(state, Clock(slot=slot, unix_timestamp=0))


def spot(market_index: int, tokens_scaled: int, borrow: bool = False, **kw: Any) -> SpotPosition:
    balance_type = SpotBalanceType.Borrow if borrow else SpotBalanceType.Deposit
    return SpotPosition(
        market_index=market_index, scaled_balance=tokens_scaled, balance_type=balance_type, **kw
    )


# --- size premium / discount ----------------------------------------------------------------------
def test_seed_worked_example_2000_sol_initial_weight() -> None:
    # Seed 003: min(0.80, 1.1 / (1 + 0.003 * sqrt(2000))) = 0.80. In integers:
    # size 2000e9 -> sqrt(2000e9 * 10 + 1) = isqrt(20_000_000_000_001) = 4_472_135;
    # 4_472_135 * 3_000 / 100_000 = 134_164 (truncated from 134_164.05);
    # 1.1e6 * 1e4 / (1e6 + 134_164) = 11_000_000_000 / 1_134_164 = 9_698.77 -> 9_698.
    assert calculate_size_discount_asset_weight(2_000 * BASE_PRECISION, 3_000, 10_000) == 9_698
    assert calculate_size_discount_asset_weight(2_000 * BASE_PRECISION, 3_000, 8_000) == 8_000


def test_size_premium_liability_weight_program_vectors() -> None:
    # program (state/perp_market/tests.rs new_hlm_imf_size): a 50 (0.5%) ratio with imf 50:
    # 3000 base: isqrt(3e13 + 1) = 5_477_225; 5_477_225 * 50 / (1e5 * 1e6 / 1e4 = 1e7) = 27;
    # 80% of 50 is 40, 40 + 27 = 67.
    assert (
        calculate_size_premium_liability_weight(3_000 * BASE_PRECISION, 50, 50, MARGIN_PRECISION)
        == 67
    )
    # 300_000 base: isqrt(3e15 + 1) = 54_772_255; * 50 / 1e7 = 273; 40 + 273 = 313.
    assert (
        calculate_size_premium_liability_weight(300_000 * BASE_PRECISION, 50, 50, MARGIN_PRECISION)
        == 313
    )
    # small size: the unbounded premium (40 + 0) is below the weight, the bounded one is not
    assert calculate_size_premium_liability_weight(BASE_PRECISION, 50, 50, MARGIN_PRECISION) == 50
    assert (
        calculate_size_premium_liability_weight(
            BASE_PRECISION, 50, 50, MARGIN_PRECISION, is_bounded=False
        )
        == 40
    )
    assert (
        calculate_size_premium_liability_weight(10**20, 0, 11_000, SPOT_WEIGHT_PRECISION) == 11_000
    )


@given(
    st.integers(0, 10**15),
    st.integers(0, 10**15),
    st.integers(1, SPOT_IMF_PRECISION - 1),
    st.integers(0, SPOT_WEIGHT_PRECISION),
)
def test_size_discount_never_exceeds_weight_and_falls_with_size(
    a: int, b: int, imf: int, weight: int
) -> None:
    small, large = sorted((a, b))
    w_small = calculate_size_discount_asset_weight(small, imf, weight)
    w_large = calculate_size_discount_asset_weight(large, imf, weight)
    assert 0 <= w_large <= w_small <= weight


@given(
    st.integers(0, 10**15),
    st.integers(0, 10**15),
    st.integers(1, SPOT_IMF_PRECISION - 1),
    st.integers(SPOT_WEIGHT_PRECISION, 2 * SPOT_WEIGHT_PRECISION),
)
def test_size_premium_never_below_weight_and_grows_with_size(
    a: int, b: int, imf: int, weight: int
) -> None:
    small, large = sorted((a, b))
    w_small = calculate_size_premium_liability_weight(small, imf, weight, SPOT_WEIGHT_PRECISION)
    w_large = calculate_size_premium_liability_weight(large, imf, weight, SPOT_WEIGHT_PRECISION)
    assert weight <= w_small <= w_large


# --- spot weights -------------------------------------------------------------------------------
def test_spot_market_asset_and_liability_weight_program_vectors() -> None:
    # program: math/margin/tests.rs spot_market_asset_weight. The program's default market has
    # maintenance liability weight 0, which is what the 31_622 vector below measures.
    market = SpotMarket(
        market_index=1,
        name="X",
        oracle="X",
        decimals=6,
        initial_asset_weight=9_000,
        initial_liability_weight=11_000,
        maintenance_liability_weight=0,
    )
    size = 1_000 * QUOTE_PRECISION
    price = PRICE_PRECISION
    assert get_asset_weight(market, size, price, INITIAL) == 9_000
    assert get_liability_weight(market, size, INITIAL) == 11_000

    market.imf_factor = 10
    assert get_asset_weight(market, size, price, INITIAL) == 9_000
    assert get_liability_weight(market, size, INITIAL) == 11_000
    assert get_asset_weight(market, size * 1_000_000, price, INITIAL) == 8_357

    market.imf_factor = 10_000
    assert get_asset_weight(market, size, price, INITIAL) == 8_357
    assert get_liability_weight(market, size, INITIAL) == 11_962

    market.imf_factor = SPOT_IMF_PRECISION // 10
    assert get_asset_weight(market, size, price, INITIAL) == 2_642
    assert get_liability_weight(market, size, INITIAL) == 40_422
    assert get_liability_weight(market, size, MAINTENANCE) == 31_622

    market2 = SpotMarket(
        market_index=2,
        name="Y",
        oracle="Y",
        decimals=6,
        initial_asset_weight=1_500,
        maintenance_asset_weight=7_500,
        initial_liability_weight=15_000,
        maintenance_liability_weight=12_500,
    )
    size = 100_000 * QUOTE_PRECISION
    price = PRICE_PRECISION // 2
    assert get_asset_weight(market2, size, price, INITIAL) == 1_500
    assert get_asset_weight(market2, size, price, FILL) == 4_500  # (1500 + 7500) / 2
    assert get_asset_weight(market2, size, price, MAINTENANCE) == 7_500
    market2.imf_factor = SPOT_IMF_PRECISION // 10
    for margin_type in (INITIAL, FILL, MAINTENANCE):
        assert get_asset_weight(market2, size, price, margin_type) == 337


def test_liability_weight_fill_is_mean_and_spot_margin_ratio() -> None:
    market = sol_market()
    # (12000 + 11000) / 2
    assert get_liability_weight(market, BASE_PRECISION, FILL) == 11_500
    assert get_spot_market_margin_ratio(market, INITIAL) == 2_000
    assert get_spot_market_margin_ratio(market, MAINTENANCE) == 1_000
    with pytest.raises(ProtocolError):
        get_spot_market_margin_ratio(market, FILL)


def test_scaled_initial_asset_weight_program_vectors() -> None:
    # program: spot_market_scale_initial_asset_weight. $25 SOL, scaling from $500k deposits.
    market = sol_market(
        initial_asset_weight=9_000,
        initial_liability_weight=11_000,
        scale_initial_asset_weight_start=500_000 * QUOTE_PRECISION,
    )
    price = 25 * PRICE_PRECISION
    market.deposit_balance = SPOT_BALANCE_PRECISION  # $25
    assert get_scaled_initial_asset_weight(market, price) == 9_000
    market.deposit_balance = 20_000 * SPOT_BALANCE_PRECISION  # $500k: 9000 * 500k / 500k
    assert get_scaled_initial_asset_weight(market, price) == 9_000
    market.deposit_balance = 40_000 * SPOT_BALANCE_PRECISION  # $1M: 9000 * 500k / 1M
    assert get_scaled_initial_asset_weight(market, price) == 4_500
    market.deposit_balance = 60_000 * SPOT_BALANCE_PRECISION  # $1.5M: 9000 / 3
    assert calculate_scaled_initial_asset_weight(market, price) == 3_000
    # Initial uses the scaled weight, Fill its mean with maintenance, Maintenance is unscaled:
    # (3000 + 9000) / 2 = 6000
    assert get_asset_weight(market, BASE_PRECISION, price, INITIAL) == 3_000
    assert get_asset_weight(market, BASE_PRECISION, price, FILL) == 6_000
    assert get_asset_weight(market, BASE_PRECISION, price, MAINTENANCE) == 9_000


# --- perp weights -----------------------------------------------------------------------------
def test_perp_margin_ratio_program_vectors() -> None:
    # program: state/perp_market/tests.rs get_margin_ratio::test
    market = sol_perp(margin_ratio_initial=1_000, margin_ratio_maintenance=500)
    assert get_margin_ratio(market, BASE_PRECISION, INITIAL) == 1_000
    assert get_margin_ratio(market, BASE_PRECISION, FILL) == 750
    assert get_margin_ratio(market, BASE_PRECISION, MAINTENANCE) == 500
    # new_hlm_imf_size: 1e6 base with imf 50: isqrt(1e16 + 1) = 1e8; 1e8 * 50 / 1e7 = 500;
    # 800 + 500 = 1300
    market.imf_factor = 50
    assert get_margin_ratio(market, BASE_PRECISION * 1_000_000, INITIAL) == 1_300
    market.status = MarketStatus.Settlement
    assert get_margin_ratio(market, BASE_PRECISION * 1_000_000, INITIAL) == 0


def test_perp_margin_ratio_imf_threshold_program_vector() -> None:
    # program: new_hlm_imf_size_loop: 5% initial, imf 50; of sizes 1k..999k base the premium
    # exceeds the plain ratio for exactly 959 of them.
    market = sol_perp(
        margin_ratio_initial=MARGIN_PRECISION // 20,
        margin_ratio_maintenance=MARGIN_PRECISION // 33,
        imf_factor=50,
    )
    count = sum(
        1
        for i in range(1, 1_000)
        if get_margin_ratio(market, BASE_PRECISION * i * 1_000, INITIAL) != 500
    )
    assert count == 959


def _equity_test_market() -> PerpMarket:
    # program: math/margin/tests.rs calculate_user_equity_value_tests
    return sol_perp(
        margin_ratio_initial=1_000,
        margin_ratio_maintenance=500,
        imf_factor=1_000,
        unrealized_pnl_imf_factor=1_000,
        unrealized_pnl_initial_asset_weight=10_000,
        unrealized_pnl_maintenance_asset_weight=10_000,
    )


def test_unrealized_asset_weight_program_vectors() -> None:
    market = _equity_test_market()
    # 22_699_050_905 * 1e3 -> isqrt(2.2699e14 + 1) = 15_066_204; * 1000 / 1e5 = 150_662;
    # 1.1e10 / 1_150_662 = 9_559
    assert get_unrealized_asset_weight(market, 22_699_050_905, INITIAL) == 9_559
    upnl = 24_282_786_896
    expected = {1: 9_516, 10: 7_368, 100: 4_299, 1_000: 1_855, 10_000: 663, 800_000: 78}
    for multiple, weight in expected.items():
        assert get_unrealized_asset_weight(market, upnl * multiple, INITIAL) == weight
    # Maintenance has no size discount; losses always count in full
    assert get_unrealized_asset_weight(market, upnl * 10_000, MAINTENANCE) == 10_000
    assert get_unrealized_asset_weight(market, -upnl, INITIAL) == SPOT_WEIGHT_PRECISION
    market.unrealized_pnl_initial_asset_weight = 0
    assert get_unrealized_asset_weight(market, upnl, INITIAL) == 0


def test_unrealized_asset_weight_scaled_by_max_imbalance() -> None:
    market = _equity_test_market()
    market.unrealized_pnl_imf_factor = 0
    market.unrealized_pnl_max_imbalance = 1_000 * QUOTE_PRECISION
    # users are net long 100 base against the AMM at cost $9,000; at $100 they are up $1,000,
    # exactly the cap: weight untouched
    market.amm.base_asset_amount_with_amm = 100 * BASE_PRECISION
    market.amm.quote_asset_amount = -9_000 * QUOTE_PRECISION
    market.amm.historical_oracle_data = HistoricalOracleData.seeded(100 * PRICE_PRECISION, 0)
    assert get_unrealized_asset_weight(market, QUOTE_PRECISION, INITIAL) == 10_000
    # at $140 they are up $5,000: 10000 * 1000 / 5000 = 2000
    market.amm.historical_oracle_data = HistoricalOracleData.seeded(140 * PRICE_PRECISION, 0)
    assert get_unrealized_asset_weight(market, QUOTE_PRECISION, INITIAL) == 2_000
    assert get_unrealized_asset_weight(market, QUOTE_PRECISION, MAINTENANCE) == 10_000


def test_perp_position_value_and_pnl_program_vectors() -> None:
    market = _equity_test_market()
    position = PerpPosition(
        market_index=0,
        base_asset_amount=-(12_295_081_967 // 2),
        quote_asset_amount=153_688_524_588,  # $25,000 entry
    )
    oracle = OraclePriceData(price=22_050 * PRICE_PRECISION, confidence=0, delay=2)
    # liability 6_147_540_983 * 22_050 / 1e3 = 135_553_278_675 (trunc); ratio 1000 (the IMF
    # premium, 800 + 24, stays below it); positive pnl capped at $100 for Initial
    pmr, upnl, liability, base_value = calculate_perp_position_value_and_pnl(
        position, market, oracle, StrictOraclePrice(QUOTE_PRECISION), INITIAL, 0
    )
    assert (pmr, upnl) == (13_555_327_867, 100_000_000)
    assert liability == base_value == 135_553_278_675

    oracle = OraclePriceData(price=21_050 * PRICE_PRECISION, confidence=PRICE_PRECISION, delay=2)
    _, position_upnl = calculate_base_asset_value_and_pnl_with_oracle_price(position, oracle.price)
    assert position_upnl == 24_282_786_896
    pmr_2, upnl_2, _, _ = calculate_perp_position_value_and_pnl(
        position, market, oracle, PRICE_PRECISION, INITIAL, 0
    )
    assert (pmr_2, upnl_2) == (12_940_573_769, 100_000_000)
    assert pmr - pmr_2 == 614_754_098


def test_perp_position_custom_ratio_settlement_and_quote_price() -> None:
    market = sol_perp()
    position = PerpPosition(
        market_index=0, base_asset_amount=-BASE_PRECISION, quote_asset_amount=110 * QUOTE_PRECISION
    )
    oracle = OraclePriceData(price=100 * PRICE_PRECISION, confidence=0, delay=0)
    # a user ratio of 50% beats the market's 10%: $100 * 0.5
    pmr, pnl, _, _ = calculate_perp_position_value_and_pnl(
        position, market, oracle, PRICE_PRECISION, INITIAL, 5_000
    )
    assert (pmr, pnl) == (50 * QUOTE_PRECISION, 10 * QUOTE_PRECISION)
    # strict quote price $1.02 current / $0.98 TWAP: the liability uses the max (1.02), a gain
    # the min (0.98): $100 * 1.02 * 10% = $10.20; $10 * 0.98 = $9.80
    strict = StrictOraclePrice(1_020_000, 980_000)
    pmr, pnl, liability, _ = calculate_perp_position_value_and_pnl(
        position, market, oracle, strict, INITIAL, 0
    )
    assert (pmr, pnl, liability) == (10_200_000, 9_800_000, 102 * QUOTE_PRECISION)
    # in settlement: valued at the expiry price, no requirement
    market.status = MarketStatus.Settlement
    market.expiry_price = 90 * PRICE_PRECISION
    pmr, pnl, _, _ = calculate_perp_position_value_and_pnl(
        position, market, oracle, PRICE_PRECISION, INITIAL, 0
    )
    assert (pmr, pnl) == (0, 20 * QUOTE_PRECISION)


# --- worst cases --------------------------------------------------------------------------------
def test_perp_worst_case_liability_value() -> None:
    # long 1 with bids 2 and asks 5: all bids -> 3 ($300), all asks -> -4 ($400): asks
    position = PerpPosition(
        market_index=0,
        base_asset_amount=BASE_PRECISION,
        open_bids=2 * BASE_PRECISION,
        open_asks=-5 * BASE_PRECISION,
        open_orders=2,
    )
    price = 100 * PRICE_PRECISION
    assert worst_case_liability_value(position, price, ContractType.Perpetual) == (
        -4 * BASE_PRECISION,
        400 * QUOTE_PRECISION,
    )
    # asks -4 -> -3 ($300) ties all bids (3, $300): the asks win the tie
    position.open_asks = -4 * BASE_PRECISION
    assert worst_case_liability_value(position, price, ContractType.Perpetual) == (
        -3 * BASE_PRECISION,
        300 * QUOTE_PRECISION,
    )
    # prediction market short 2 at $0.30: what it could lose is (1 - 0.3) per share
    position = PerpPosition(market_index=0, base_asset_amount=-2 * BASE_PRECISION)
    assert worst_case_liability_value(position, 300_000, ContractType.Prediction) == (
        -2 * BASE_PRECISION,
        1_400_000,
    )
    assert margin_requirement_for_open_orders(PerpPosition(0, open_orders=3)) == 30_000


_SIM_PRICES = {
    "none": StrictOraclePrice(100 * PRICE_PRECISION),
    "twap110": StrictOraclePrice(100 * PRICE_PRECISION, 110 * PRICE_PRECISION),
    "twap90": StrictOraclePrice(100 * PRICE_PRECISION, 90 * PRICE_PRECISION),
}


@pytest.mark.parametrize(
    ("scaled_balance", "open_bids", "open_asks", "price", "expected"),
    [
        # program: state/user/tests.rs get_worst_case_fill_simulation (values in whole $)
        (0, 10**9, 0, "none", (10**9, -100, 100, 80, -20)),
        (0, 10**9, 0, "twap110", (10**9, -110, 110, 88, -22)),
        (0, 10**9, 0, "twap90", (10**9, -100, 100, 80, -20)),
        (0, 0, -(10**9), "none", (-(10**9), 100, -100, -120, -20)),
        (0, 0, -(10**9), "twap110", (-(10**9), 110, -110, -132, -22)),
        (0, 0, -(10**9), "twap90", (-(10**9), 100, -100, -120, -20)),
        (2, 0, -(10**9), "none", (2 * 10**9, 0, 200, 160, 160)),
        (2, 0, -(10**9), "twap110", (2 * 10**9, 0, 200, 160, 160)),
        (2, 0, -(10**9), "twap90", (2 * 10**9, 0, 180, 144, 144)),
        (1, 0, -2 * 10**9, "none", (-(10**9), 200, -100, -120, 80)),
        (1, 0, -2 * 10**9, "twap110", (-(10**9), 220, -120, -144, 76)),
        (1, 0, -2 * 10**9, "twap90", (-(10**9), 200, -110, -132, 68)),
        (2, 10**9, 0, "none", (3 * 10**9, -100, 300, 240, 140)),
        (2, 10**9, 0, "twap110", (3 * 10**9, -110, 310, 248, 138)),
        (2, 10**9, 0, "twap90", (3 * 10**9, -100, 280, 224, 124)),
    ],
)
def test_worst_case_fill_simulation_program_vectors(
    scaled_balance: int,
    open_bids: int,
    open_asks: int,
    price: str,
    expected: tuple[int, int, int, int, int],
) -> None:
    position = SpotPosition(
        market_index=1,
        scaled_balance=scaled_balance * SPOT_BALANCE_PRECISION,
        open_orders=1,
        open_bids=open_bids,
        open_asks=open_asks,
    )
    sim = get_worst_case_fill_simulation(position, sol_market(), _SIM_PRICES[price], None, INITIAL)
    token_amount, *dollars = expected
    assert sim == OrderFillSimulation(token_amount, *(d * QUOTE_PRECISION for d in dollars))


def test_apply_user_custom_margin_ratio() -> None:
    market = sol_market()
    # $100 liability at 120%: a 50% custom ratio lifts it to 150% -> -150
    liability = OrderFillSimulation(-(10**9), 0, -100 * QUOTE_PRECISION, -120 * QUOTE_PRECISION, 0)
    adjusted = liability.apply_user_custom_margin_ratio(market, 100 * PRICE_PRECISION, 5_000)
    assert adjusted.weighted_token_value == -150 * QUOTE_PRECISION
    assert adjusted.free_collateral_contribution == -150 * QUOTE_PRECISION
    # $100 asset at 80%: the custom ratio caps it at 50%
    asset = OrderFillSimulation(
        10**9, 0, 100 * QUOTE_PRECISION, 80 * QUOTE_PRECISION, 80 * QUOTE_PRECISION
    )
    adjusted = asset.apply_user_custom_margin_ratio(market, 100 * PRICE_PRECISION, 5_000)
    assert adjusted.weighted_token_value == 50 * QUOTE_PRECISION
    assert asset.apply_user_custom_margin_ratio(market, 100 * PRICE_PRECISION, 0) is asset
    assert asset.risk_increasing(adjusted)


def test_strict_oracle_price_validate() -> None:
    StrictOraclePrice(1, 1).validate()
    with pytest.raises(ProtocolError) as err:
        StrictOraclePrice(PRICE_PRECISION, 0).validate()
    assert err.value.code == ErrorCode.InvalidOracle
    with pytest.raises(ProtocolError):
        StrictOraclePrice(0).validate()
    assert StrictOraclePrice.new(5, 7, enabled=False) == StrictOraclePrice(5)


# --- the account calculation: program vectors ----------------------------------------------------
def _calc(user: User, accounts: Accounts, context: MarginContext) -> MarginCalculation:
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, accounts, context
    )


def test_usdc_deposit_and_5x_sol_bid_program_vector() -> None:
    # $10k USDC, bid 500 SOL at $100: the fill adds $50k of SOL at 80% ($40k collateral) and
    # owes $50k of USDC; plus $0.01 for the open order.
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 10_000 * SPOT_BALANCE_PRECISION),
            spot(1, 0, open_orders=1, open_bids=500 * 10**9),
        ],
    )
    accounts = reader([usdc_market(), sol_market()])
    calc = _calc(user, accounts, MarginContext.standard(INITIAL))
    assert calc.margin_requirement == 50_000_010_000
    assert calc.total_collateral == 50_000_000_000


def test_usdc_deposit_and_5x_sol_ask_program_vector() -> None:
    # ask 500 SOL: a -500 SOL borrow ($50k * 120% = $60k) against $50k of USDC received
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 10_000 * SPOT_BALANCE_PRECISION),
            spot(1, 0, open_orders=1, open_asks=-500 * 10**9),
        ],
    )
    calc = _calc(user, reader([usdc_market(), sol_market()]), MarginContext.standard(INITIAL))
    assert calc.margin_requirement == 60_000_010_000
    assert calc.total_collateral == 60_000_000_000
    assert calc.num_spot_liabilities == 1


def test_sol_deposit_and_5x_sol_ask_program_vector() -> None:
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 0),
            spot(1, 500 * SPOT_BALANCE_PRECISION, open_orders=1, open_asks=-3_000 * 10**9),
        ],
    )
    # the program's market has 10k SOL of deposits, far below any scaling threshold
    sol = sol_market(deposit_balance=10_000 * SPOT_BALANCE_PRECISION)
    calc = _calc(user, reader([usdc_market(), sol]), MarginContext.standard(INITIAL))
    assert calc.margin_requirement == 300_000_010_000
    assert calc.total_collateral == 300_000_000_000


def test_strict_maintenance_program_vector() -> None:
    # USDC 5-min TWAP $0.90, SOL TWAP $110: strict values the deposit at 0.90 and the 100 SOL
    # borrow at 110: $11,000 * 110% = $12,100
    usdc = usdc_market()
    usdc.historical_oracle_data.last_oracle_price_twap_5min = 900_000
    sol = sol_market()
    sol.historical_oracle_data.last_oracle_price_twap_5min = 110 * PRICE_PRECISION
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 10_000 * SPOT_BALANCE_PRECISION),
            spot(1, 100 * SPOT_BALANCE_PRECISION, borrow=True),
        ],
    )
    context = MarginContext.standard(MAINTENANCE).with_strict(True)
    calc = _calc(user, reader([usdc, sol]), context)
    assert calc.total_collateral == 9_000_000_000
    assert calc.margin_requirement == 12_100_000_000
    # not strict: $10,000 against 100 * $100 * 110%
    calc = _calc(user, reader([usdc, sol]), MarginContext.standard(MAINTENANCE))
    assert (calc.total_collateral, calc.margin_requirement) == (10_000_000_000, 11_000_000_000)


def test_no_perp_position_but_trigger_order_program_vector() -> None:
    user = User(
        authority=b"u",
        spot_positions=[spot(0, 100 * SPOT_BALANCE_PRECISION)],
        perp_positions=[PerpPosition(market_index=0, open_orders=1)],
    )
    calc = _calc(
        user, reader([usdc_market(), sol_market()], [sol_perp()]), MarginContext.standard(INITIAL)
    )
    assert calc.margin_requirement == QUOTE_PRECISION // 100
    assert calc.get_num_of_liabilities() == 1
    assert not calc.with_perp_isolated_liability
    assert not calc.with_spot_isolated_liability


def test_negative_perp_pnl_liquidation_buffer_program_vector() -> None:
    # $100 USDC and $100 of unsettled perp loss: collateral 0, and with a 1% buffer the loss
    # counts 1% more: -100e6 * 100 / 1e4 = -1e6
    user = User(
        authority=b"u",
        spot_positions=[spot(0, 100 * SPOT_BALANCE_PRECISION)],
        perp_positions=[PerpPosition(market_index=0, quote_asset_amount=-100 * QUOTE_PRECISION)],
    )
    calc = _calc(
        user,
        reader([usdc_market(), sol_market()], [sol_perp()]),
        MarginContext.liquidation(MARGIN_PRECISION // 100),
    )
    assert calc.total_collateral == 0
    assert calc.get_cross_total_collateral_plus_buffer() == -QUOTE_PRECISION
    assert calc.margin_shortage() == QUOTE_PRECISION
    assert not calc.can_exit_liquidation()


# --- the account calculation: hand-computed accounts on the default markets -----------------------
SOL_SPOT = 1
SOL_PERP = 0


def default_accounts(sol_price: int = 150 * PRICE_PRECISION) -> Accounts:
    """The default markets (created with SOL at $150, so their TWAPs say $150) after the SOL
    oracle moved to ``sol_price``."""
    state = default_program_state(now=0, slot=0)
    state.oracles["SOL/USD"].price = sol_price
    return Accounts(state, Clock(slot=0, unix_timestamp=0))


def test_usdc_only_account() -> None:
    user = User(authority=b"u", spot_positions=[spot(0, 1_000 * SPOT_BALANCE_PRECISION)])
    accounts = default_accounts()
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    assert (calc.total_collateral, calc.margin_requirement) == (1_000 * QUOTE_PRECISION, 0)
    assert calc.get_num_of_liabilities() == 0
    assert calc.all_oracles_valid
    assert calculate_free_collateral(user, accounts, INITIAL) == 1_000 * QUOTE_PRECISION
    assert calculate_user_equity(user, accounts) == 1_000 * QUOTE_PRECISION
    assert meets_initial_margin_requirement(user, accounts)
    assert not can_be_liquidated(user, accounts)
    meets_withdraw_margin_requirement(user, accounts)
    # an empty account meets everything with nothing
    empty = User(authority=b"e")
    assert calculate_free_collateral(empty, accounts, MAINTENANCE) == 0
    assert meets_maintenance_margin_requirement(empty, accounts)


def _sol_collateral_user() -> User:
    # 10 SOL deposited, 600 USDC borrowed
    return User(
        authority=b"u",
        spot_positions=[
            spot(0, 600 * SPOT_BALANCE_PRECISION, borrow=True),
            spot(SOL_SPOT, 10 * SPOT_BALANCE_PRECISION),
        ],
    )


def test_sol_deposit_usdc_borrow() -> None:
    user = _sol_collateral_user()
    accounts = default_accounts()
    # 10 SOL at $150 = $1,500. IMF on 10 SOL: isqrt(1e11 + 1) = 316_227; * 3000 / 1e5 = 9_486;
    # 1.1e10 / 1_009_486 = 10_896 > 80%, so 80% applies: $1,200. The $600 borrow is owed at
    # face value.
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    assert calc.total_collateral == 1_200 * QUOTE_PRECISION
    assert calc.margin_requirement == 600 * QUOTE_PRECISION
    assert calc.num_spot_liabilities == 1
    assert calc.total_spot_asset_value == 1_500 * QUOTE_PRECISION
    assert calc.total_spot_liability_value == 600 * QUOTE_PRECISION
    assert calculate_free_collateral(user, accounts, INITIAL) == 600 * QUOTE_PRECISION
    # Maintenance: 90% -> $1,350
    assert calculate_free_collateral(user, accounts, MAINTENANCE) == 750 * QUOTE_PRECISION
    # Fill: (80% + 90%) / 2 = 85% -> $1,275
    assert calculate_free_collateral(user, accounts, FILL) == 675 * QUOTE_PRECISION
    assert calculate_user_equity(user, accounts) == 900 * QUOTE_PRECISION
    meets_withdraw_margin_requirement(user, accounts)
    meets_place_order_margin_requirement(user, accounts, risk_increasing=True)


def test_borrow_beyond_initial_is_refused() -> None:
    user = _sol_collateral_user()
    user.spot_positions[0].scaled_balance = 1_201 * SPOT_BALANCE_PRECISION  # owes $1,201 > $1,200
    accounts = default_accounts()
    with pytest.raises(ProtocolError) as err:
        meets_withdraw_margin_requirement(user, accounts)
    assert err.value.code == ErrorCode.InsufficientCollateral
    with pytest.raises(ProtocolError) as err:
        meets_place_order_margin_requirement(user, accounts, risk_increasing=True)
    assert err.value.code == ErrorCode.InsufficientCollateral
    # still above maintenance ($1,350), so a risk-reducing order may be placed
    meets_place_order_margin_requirement(user, accounts, risk_increasing=False)
    assert not meets_initial_margin_requirement(user, accounts)
    assert meets_maintenance_margin_requirement(user, accounts)


def test_withdraw_blocked_when_liability_oracle_invalid() -> None:
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 10_000 * SPOT_BALANCE_PRECISION),
            spot(SOL_SPOT, SPOT_BALANCE_PRECISION, borrow=True),
        ],
    )
    accounts = default_accounts()
    meets_withdraw_margin_requirement(user, accounts)
    # 121 slots without an update: stale for margin (limit 120)
    accounts.clock = Clock(slot=121, unix_timestamp=0)
    with pytest.raises(ProtocolError) as err:
        meets_withdraw_margin_requirement(user, accounts)
    assert err.value.code == ErrorCode.InvalidOracle
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    assert calc.all_deposit_oracles_valid  # USDC is the fixed quote price
    assert not calc.all_liability_oracles_valid


def test_can_be_liquidated_flips_as_sol_falls() -> None:
    user = _sol_collateral_user()
    # Maintenance: collateral 10 * P * 90% against $600 owed. At $67: $603 -> safe;
    # at $66: $594 -> liquidatable.
    assert not can_be_liquidated(user, default_accounts(67 * PRICE_PRECISION))
    assert can_be_liquidated(user, default_accounts(66 * PRICE_PRECISION))
    # Once in liquidation the 2% buffer applies to the $600 liability: $612 must be covered.
    # $67 -> $603 < $612: still liquidatable; $68 -> $612: out.
    user.status = UserStatus.BeingLiquidated
    assert can_be_liquidated(user, default_accounts(67 * PRICE_PRECISION))
    assert not can_be_liquidated(user, default_accounts(68 * PRICE_PRECISION))


def _perp_long_user() -> User:
    # $1,000 USDC; long 10 SOL-PERP entered at $135 (quote -1350), a 5 SOL bid resting
    return User(
        authority=b"u",
        spot_positions=[spot(0, 1_000 * SPOT_BALANCE_PRECISION)],
        perp_positions=[
            PerpPosition(
                market_index=SOL_PERP,
                base_asset_amount=10 * BASE_PRECISION,
                quote_asset_amount=-1_350 * QUOTE_PRECISION,
                open_bids=5 * BASE_PRECISION,
                open_orders=1,
            )
        ],
    )


def test_perp_long_with_unrealized_pnl_funding_and_open_orders() -> None:
    user = _perp_long_user()
    accounts = default_accounts()
    # Longs owe $0.10 per SOL of funding: rate delta 1e8 (FUNDING_RATE_PRECISION) * 10e9 base
    # / 1e6 / 1e3 = 1e9, / 1e3 -> $1.00 paid.
    accounts.perp_market(SOL_PERP).amm.cumulative_funding_rate_long = FUNDING_RATE_PRECISION // 10
    # PnL = 10 * $150 - $1,350 - $1 = $149.
    # Worst case: the bid fills -> 15 SOL, $2,250 of liability. IMF on 15 base:
    # isqrt(1.5e11 + 1) = 387_298; * 1000 / 1e7 = 38; 800 + 38 < 1000, so 10% -> $225 + $0.01.
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    assert calc.margin_requirement == 225_010_000
    # Initial: the gain's IMF (isqrt(149e9 * 10 + 1) = 1_220_655; * 1000 / 1e5 = 12_206;
    # 1.1e10 / 1_012_206 = 10_867) leaves 100%, but only $100 of paper gain counts.
    assert calc.total_collateral == 1_100 * QUOTE_PRECISION
    assert calc.total_perp_liability_value == 2_250 * QUOTE_PRECISION
    assert calc.num_perp_liabilities == 1
    assert calculate_free_collateral(user, accounts, INITIAL) == 874_990_000
    # Maintenance: 5% -> $112.50 + $0.01; the whole $149 counts
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(MAINTENANCE)
    )
    assert (calc.total_collateral, calc.margin_requirement) == (1_149_000_000, 112_510_000)
    # Equity is unweighted: $1,000 + $149
    assert calculate_user_equity(user, accounts) == 1_149_000_000


def test_perp_long_liquidation_flips_with_oracle() -> None:
    # $100 USDC, long 10 SOL entered at $150. Maintenance: 100 + 10 (P - 150) >= 10 P * 5%
    # <=> 9.5 P >= 1400 <=> P >= 147.37. At $148: $80 vs $74; at $147: $70 vs $73.50.
    user = User(
        authority=b"u",
        spot_positions=[spot(0, 100 * SPOT_BALANCE_PRECISION)],
        perp_positions=[
            PerpPosition(
                market_index=SOL_PERP,
                base_asset_amount=10 * BASE_PRECISION,
                quote_asset_amount=-1_500 * QUOTE_PRECISION,
            )
        ],
    )
    assert not can_be_liquidated(user, default_accounts(148 * PRICE_PRECISION))
    assert can_be_liquidated(user, default_accounts(147 * PRICE_PRECISION))
    # Being liquidated at $148: requirement $74 + 2% of $1,480 ($29.60) = $103.60 against
    # $100 + (-$20 loss, buffered by 2%: -$0.40) = $79.60: still liquidatable.
    accounts = default_accounts(148 * PRICE_PRECISION)
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.liquidation(accounts.state.liquidation_margin_buffer_ratio)
    )
    assert calc.margin_requirement_plus_buffer == 103_600_000
    assert calc.get_total_collateral_plus_buffer() == 79_600_000
    user.status = UserStatus.BeingLiquidated
    assert can_be_liquidated(user, accounts)


def test_spot_position_invariants_are_checked() -> None:
    user = User(authority=b"u", spot_positions=[spot(SOL_SPOT, 0, open_orders=1, open_bids=-1)])
    with pytest.raises(ProtocolError) as err:
        meets_initial_margin_requirement(user, default_accounts())
    assert err.value.code == ErrorCode.InvalidSpotPositionDetected


def test_user_max_margin_ratio_applies_to_initial_only() -> None:
    user = _sol_collateral_user()
    user.max_margin_ratio = 5_000  # at most 2x: assets count at <= 50%, borrows at >= 150%
    accounts = default_accounts()
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    # SOL at min(80%, 50%) = $750; the USDC borrow is in the quote market, at face value
    assert (calc.total_collateral, calc.margin_requirement) == (750_000_000, 600_000_000)
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(MAINTENANCE)
    )
    assert calc.total_collateral == 1_350_000_000


def test_place_order_and_withdraw_use_strict_prices() -> None:
    # 10 SOL ($1,200 of initial collateral at $150) against $1,190 borrowed. If SOL's 5-minute
    # TWAP is $140, strict valuation gives 10 * 140 * 80% = $1,120 < $1,190.
    user = _sol_collateral_user()
    user.spot_positions[0].scaled_balance = 1_190 * SPOT_BALANCE_PRECISION
    accounts = default_accounts()
    accounts.spot_market(SOL_SPOT).historical_oracle_data.last_oracle_price_twap_5min = (
        140 * PRICE_PRECISION
    )
    assert meets_initial_margin_requirement(user, accounts)
    with pytest.raises(ProtocolError) as err:
        meets_place_order_margin_requirement(user, accounts, risk_increasing=True)
    assert err.value.code == ErrorCode.InsufficientCollateral
    with pytest.raises(ProtocolError) as err:
        meets_withdraw_margin_requirement(user, accounts)
    assert err.value.code == ErrorCode.InsufficientCollateral


def test_tracked_market_margin_shortage() -> None:
    # the $100 USDC / long 10 SOL-PERP at $148 account: shortage $103.60 - $79.60 = $24, all of
    # it from the perp market, which carries the whole $74 requirement
    user = User(
        authority=b"u",
        spot_positions=[spot(0, 100 * SPOT_BALANCE_PRECISION)],
        perp_positions=[
            PerpPosition(
                market_index=SOL_PERP,
                base_asset_amount=10 * BASE_PRECISION,
                quote_asset_amount=-1_500 * QUOTE_PRECISION,
            )
        ],
    )
    accounts = default_accounts(148 * PRICE_PRECISION)
    context = MarginContext.liquidation(200).track_market_margin_requirement(
        MarketIdentifier.perp(SOL_PERP)
    )
    calc = calculate_margin_requirement_and_total_collateral(user, accounts, context)
    assert calc.tracked_market_margin_requirement == 74 * QUOTE_PRECISION
    assert calc.margin_shortage() == 24 * QUOTE_PRECISION
    assert calc.tracked_market_margin_shortage(calc.margin_shortage()) == 24 * QUOTE_PRECISION
    with pytest.raises(ProtocolError) as err:
        MarginContext.standard(MAINTENANCE).track_market_margin_requirement(
            MarketIdentifier.perp(SOL_PERP)
        )
    assert err.value.code == ErrorCode.InvalidMarginCalculation
    with pytest.raises(ProtocolError):
        calculate_margin_requirement_and_total_collateral(
            user, accounts, MarginContext.standard(MAINTENANCE)
        ).margin_shortage()


def test_stale_deposit_oracle_cannot_back_a_withdraw() -> None:
    # The $600 USDC borrow backed by 10 SOL. With the SOL oracle stale (121 slots > 120), a
    # withdraw ignores the SOL deposit: $0 against $600 owed. The liability (USDC) oracle is the
    # fixed quote price, so the refusal is for collateral, not for the oracle.
    user = _sol_collateral_user()
    accounts = default_accounts()
    accounts.clock = Clock(slot=121, unix_timestamp=0)
    with pytest.raises(ProtocolError) as err:
        meets_withdraw_margin_requirement(user, accounts)
    assert err.value.code == ErrorCode.InsufficientCollateral
    context = MarginContext.standard(INITIAL).with_ignore_invalid_deposit_oracles(True)
    calc = calculate_margin_requirement_and_total_collateral(user, accounts, context)
    assert (calc.total_collateral, calc.margin_requirement) == (0, 600 * QUOTE_PRECISION)
    assert not calc.all_deposit_oracles_valid
    assert calc.all_liability_oracles_valid
    # the ordinary calculation still counts it ($1,200) and only flags the oracle
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(INITIAL)
    )
    assert calc.total_collateral == 1_200 * QUOTE_PRECISION
    assert not calc.all_oracles_valid


def test_margin_ratio_override_and_open_orders_without_size() -> None:
    # long 1 SOL-PERP at $150 with a 50% override: $75 (plus nothing for orders). A SOL spot
    # position holding only an order count is a liability of $0.01.
    user = User(
        authority=b"u",
        spot_positions=[
            spot(0, 1_000 * SPOT_BALANCE_PRECISION),
            spot(SOL_SPOT, 0, open_orders=1),
        ],
        perp_positions=[
            PerpPosition(
                market_index=SOL_PERP,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-150 * QUOTE_PRECISION,
            )
        ],
    )
    accounts = default_accounts()
    context = MarginContext.standard(MAINTENANCE).with_margin_ratio_override(5_000)
    calc = calculate_margin_requirement_and_total_collateral(user, accounts, context)
    assert calc.margin_requirement == 75 * QUOTE_PRECISION + QUOTE_PRECISION // 100
    assert (calc.num_spot_liabilities, calc.num_perp_liabilities) == (1, 1)
    # without the override: 5% of $150
    calc = calculate_margin_requirement_and_total_collateral(
        user, accounts, MarginContext.standard(MAINTENANCE)
    )
    assert calc.margin_requirement == 7_500_000 + 10_000


def test_isolated_tier_perp_liability_rules() -> None:
    user = User(
        authority=b"u",
        spot_positions=[spot(0, 1_000 * SPOT_BALANCE_PRECISION)],
        perp_positions=[
            PerpPosition(
                market_index=SOL_PERP,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-150 * QUOTE_PRECISION,
            )
        ],
    )
    accounts = default_accounts()
    accounts.perp_market(SOL_PERP).contract_tier = ContractTier.Isolated
    with pytest.raises(ProtocolError) as err:
        meets_place_order_margin_requirement(user, accounts, risk_increasing=True)
    assert err.value.code == ErrorCode.IsolatedAssetTierViolation
    user.is_margin_trading_enabled = False
    meets_place_order_margin_requirement(user, accounts, risk_increasing=True)


def test_is_cross_margin_being_liquidated_uses_the_buffer() -> None:
    # the SOL-collateral account at $67: $603 covers the $600 requirement but not $612
    user = _sol_collateral_user()
    accounts = default_accounts(67 * PRICE_PRECISION)
    assert is_cross_margin_being_liquidated(user, accounts, 200)
    assert not is_cross_margin_being_liquidated(user, accounts, 0)
    assert meets_maintenance_margin_requirement(user, accounts)


def test_weights_for_mints_with_more_than_nine_decimals() -> None:
    # 12 decimals: 2000 tokens = 2000e12 units -> 2000e9 in AMM precision: the seed's 9_698
    market = sol_market(decimals=12, initial_asset_weight=10_000, imf_factor=3_000)
    assert get_asset_weight(market, 2_000 * 10**12, PRICE_PRECISION, INITIAL) == 9_698
