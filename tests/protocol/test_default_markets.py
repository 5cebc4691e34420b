"""The default market table against seed 003's margin parameters and LTV table.

The expected values below are the seed's printed numbers, copied as text (percentages, IMF
decimals, LTVs to 0.1%) and converted to the program's precisions with integer arithmetic.
"""

from __future__ import annotations

import pytest

from protocol.accounts import Accounts
from protocol.clock import Clock
from protocol.constants import (
    BASE_PRECISION,
    LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO,
    MAX_MARGIN_RATIO,
    MIN_MARGIN_RATIO,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_IMF_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.markets import (
    DEFAULT_PRICES,
    default_oracles,
    default_perp_markets,
    default_program_state,
    default_spot_markets,
)
from protocol.math.amm import calculate_price
from protocol.math.margin import (
    calculate_free_collateral,
    get_asset_weight,
    get_liability_weight,
    get_scaled_initial_asset_weight,
)
from protocol.math.oracle import (
    DriftAction,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.state import SpotPosition, State, User
from protocol.types import MarginRequirementType, MarketType, OracleSource

# Seed 003, "Margin Parameters": asset, initial asset weight (* = scaled by deposits),
# maintenance asset weight, initial liability weight, maintenance liability weight, IMF factor.
SEED_MARGIN_PARAMETERS = [
    ("USDC", "100%", "100%", "100%", "100%", "0"),
    ("SOL", "80%*", "90%", "120%", "110%", "0.003"),
    ("mSOL", "80%*", "90%", "120%", "110%", "0.003"),
    ("wBTC", "80%*", "90%", "120%", "110%", "0.105"),
    ("wETH", "80%*", "90%", "120%", "110%", "0.025"),
    ("USDT", "90%", "95%", "110%", "105%", "0.0004"),
    ("JitoSOL", "80%*", "90%", "120%", "110%", "0.00055"),
    ("PYTH", "50%*", "75%", "150%", "125%", "0.00055"),
    ("bSOL", "80%*", "90%", "120%", "110%", "0.00055"),
    ("JTO", "50%*", "75%", "150%", "125%", "0.00055"),
    ("WIF", "25%*", "50%", "175%", "150%", "0.00055"),
    ("JUP", "50%*", "75%", "150%", "125%", "0.00055"),
]

# Seed 003, "ltv = 1 / liability weight": asset, Initial LTV, Max LTV.
SEED_LTV = [
    ("USDC", "100%", "100%"),
    ("SOL", "83.3%", "90.9%"),
    ("mSOL", "83.3%", "90.9%"),
    ("wBTC", "83.3%", "90.9%"),
    ("wETH", "83.3%", "90.9%"),
    ("USDT", "90.9%", "95.2%"),
    ("JitoSOL", "83.3%", "90.9%"),
    ("PYTH", "66.7%", "80.0%"),
    ("bSOL", "83.3%", "90.9%"),
    ("JTO", "66.7%", "80.0%"),
    ("WIF", "57.1%", "66.7%"),
    ("JUP", "66.7%", "80.0%"),
]

# The real mints' decimals.
MINT_DECIMALS = {
    "USDC": 6,
    "SOL": 9,
    "mSOL": 9,
    "wBTC": 8,
    "wETH": 8,
    "USDT": 6,
    "JitoSOL": 9,
    "PYTH": 6,
    "bSOL": 9,
    "JTO": 9,
    "WIF": 6,
    "JUP": 6,
}

NOW = 1_700_000_000


def decimal_to_int(text: str, precision: int) -> int:
    """'0.00055' at 1e6 -> 550, without floats."""
    whole, _, frac = text.partition(".")
    digits = len(str(precision)) - 1
    assert len(frac) <= digits
    return int(whole) * precision + int((frac or "0").ljust(digits, "0"))


def percent_to_weight(text: str) -> int:
    return decimal_to_int(text.rstrip("*%"), SPOT_WEIGHT_PRECISION // 100)


def percent_to_per_mille(text: str) -> int:
    return decimal_to_int(text.rstrip("%"), 10)


def test_helpers_convert_without_floats() -> None:
    assert decimal_to_int("0.00055", SPOT_IMF_PRECISION) == 550
    assert decimal_to_int("0.105", SPOT_IMF_PRECISION) == 105_000
    assert percent_to_weight("80%*") == 8_000
    assert percent_to_per_mille("83.3%") == 833
    assert percent_to_per_mille("100%") == 1_000


@pytest.mark.parametrize("row", SEED_MARGIN_PARAMETERS, ids=lambda r: r[0])
def test_spot_market_weights_are_the_seed_table(row: tuple[str, ...]) -> None:
    name, iaw, maw, ilw, mlw, imf = row
    markets = {m.name: m for m in default_spot_markets(NOW).values()}
    market = markets[name]
    assert market.initial_asset_weight == percent_to_weight(iaw)
    assert market.maintenance_asset_weight == percent_to_weight(maw)
    assert market.initial_liability_weight == percent_to_weight(ilw)
    assert market.maintenance_liability_weight == percent_to_weight(mlw)
    assert market.imf_factor == decimal_to_int(imf, SPOT_IMF_PRECISION)
    assert market.decimals == MINT_DECIMALS[name]
    # the asterisk: the initial asset weight scales down past some deposit notional
    assert (market.scale_initial_asset_weight_start > 0) == iaw.endswith("*")


@pytest.mark.parametrize("row", SEED_LTV, ids=lambda r: r[0])
def test_ltv_table(row: tuple[str, str, str]) -> None:
    # LTV = 1 / liability weight. In 1e4: 1e8 // weight (12_000 -> 8_333), then rounded half
    # up to the seed's 0.1% (8_333 -> 833 per mille; 15_000 -> 6_666 -> 667).
    name, initial_ltv, max_ltv = row
    markets = {m.name: m for m in default_spot_markets(NOW).values()}
    market = markets[name]

    def ltv_per_mille(liability_weight: int) -> int:
        ltv_1e4 = SPOT_WEIGHT_PRECISION * SPOT_WEIGHT_PRECISION // liability_weight
        return (ltv_1e4 + 5) // 10

    assert ltv_per_mille(market.initial_liability_weight) == percent_to_per_mille(initial_ltv)
    assert ltv_per_mille(market.maintenance_liability_weight) == percent_to_per_mille(max_ltv)


def test_market_order_and_quote_market() -> None:
    markets = default_spot_markets(NOW)
    assert [markets[i].name for i in range(12)] == [r[0] for r in SEED_MARGIN_PARAMETERS]
    usdc = markets[0]
    assert usdc.oracle_source == OracleSource.QuoteAsset
    assert not usdc.orders_enabled
    assert markets[1].oracle == "SOL/USD"
    assert markets[5].oracle_source == OracleSource.PythStableCoin  # USDT


def test_seed_worked_example_on_default_sol_market() -> None:
    # 2000 SOL: min(0.80, 1.1 / (1 + 0.003 * sqrt(2000)) ~ 0.9698) = 0.80
    sol = default_spot_markets(NOW)[1]
    price = DEFAULT_PRICES["SOL/USD"]
    assert get_asset_weight(sol, 2_000 * BASE_PRECISION, price, MarginRequirementType.Initial) == (
        8_000
    )
    # the same size with a 100% base weight exposes the discount: 9_698 (see test_margin)
    sol.initial_asset_weight = SPOT_WEIGHT_PRECISION
    assert get_asset_weight(sol, 2_000 * BASE_PRECISION, price, MarginRequirementType.Initial) == (
        9_698
    )


def test_scaled_initial_weight_hook_on_default_sol() -> None:
    sol = default_spot_markets(NOW)[1]
    price = 150 * PRICE_PRECISION
    # $50M threshold. 500_000 SOL at $150 = $75M: 8000 * 50M / 75M = 5333 (truncated)
    sol.deposit_balance = 500_000 * SPOT_BALANCE_PRECISION
    assert get_scaled_initial_asset_weight(sol, price) == 5_333
    assert get_asset_weight(sol, BASE_PRECISION, price, MarginRequirementType.Maintenance) == 9_000
    # below the threshold, the seed's base weight
    sol.deposit_balance = 1_000 * SPOT_BALANCE_PRECISION
    assert get_scaled_initial_asset_weight(sol, price) == 8_000


def test_spot_weights_pass_the_programs_initialization_rules() -> None:
    # validation/margin.rs validate_margin_weights
    for index, m in default_spot_markets(NOW).items():
        if index == 0:
            weights = {
                m.initial_asset_weight,
                m.maintenance_asset_weight,
                m.initial_liability_weight,
                m.maintenance_liability_weight,
            }
            assert weights == {SPOT_WEIGHT_PRECISION}
        else:
            assert m.initial_asset_weight <= m.maintenance_asset_weight <= SPOT_WEIGHT_PRECISION
            assert m.maintenance_asset_weight > 0
            assert (
                m.initial_liability_weight
                >= m.maintenance_liability_weight
                >= SPOT_WEIGHT_PRECISION
            )
        assert m.imf_factor < SPOT_IMF_PRECISION
        # a borrow of one whole token is weighted at least at its base liability weight
        assert (
            get_liability_weight(m, m.get_precision(), MarginRequirementType.Initial)
            == m.initial_liability_weight
        )


def test_perp_markets_pass_the_programs_margin_rules_and_peg_at_oracle() -> None:
    prices = {"SOL/USD": 123_456_789}
    perps = default_perp_markets(NOW, prices, slot=7)
    assert [p.name for p in perps.values()] == ["SOL-PERP", "BTC-PERP", "ETH-PERP"]
    for market in perps.values():
        # validation/margin.rs validate_margin
        assert MIN_MARGIN_RATIO <= market.margin_ratio_maintenance < market.margin_ratio_initial
        assert market.margin_ratio_initial <= MAX_MARGIN_RATIO
        assert (
            market.margin_ratio_maintenance * LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO
            > market.liquidator_fee
        )
        assert market.margin_ratio_initial * 100 > market.amm.max_spread
        amm = market.amm
        price = prices.get(amm.oracle, DEFAULT_PRICES[amm.oracle])
        assert calculate_price(
            amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier
        ) == (price)
        assert amm.historical_oracle_data.last_oracle_price_twap == price
        assert amm.min_base_asset_reserve < amm.base_asset_reserve < amm.max_base_asset_reserve
        assert amm.last_update_slot == 7
        assert market.amm.order_step_size > 0
        assert market.amm.order_tick_size > 0


def test_default_oracles_are_valid_for_margin() -> None:
    state = State()
    oracles = default_oracles(slot=10)
    markets = default_spot_markets(NOW)
    spot_oracles = {m.oracle for m in markets.values()}
    perp_oracles = {p.amm.oracle for p in default_perp_markets(NOW).values()}
    assert spot_oracles | perp_oracles <= set(oracles)
    for market in markets.values():
        data = oracles[market.oracle].price_data(10)
        validity = oracle_validity(
            MarketType.Spot,
            market.market_index,
            market.historical_oracle_data.last_oracle_price_twap,
            data,
            state.oracle_guard_rails.validity,
            get_max_confidence_interval_multiplier(market),
            market.oracle_source,
        )
        assert is_oracle_valid_for_action(validity, DriftAction.MarginCalc), market.name


def test_default_program_state_wires_everything() -> None:
    program_state = default_program_state(
        now=NOW, slot=3, prices={"SOL/USD": 100 * PRICE_PRECISION}
    )
    assert program_state.state == State()
    assert len(program_state.spot_markets) == 12
    assert len(program_state.perp_markets) == 3
    assert program_state.oracles["SOL/USD"].price == 100 * PRICE_PRECISION
    assert program_state.oracles["BTC/USD"].price == DEFAULT_PRICES["BTC/USD"]
    assert program_state.spot_markets[1].historical_oracle_data.last_oracle_price == (
        100 * PRICE_PRECISION
    )
    assert program_state.perp_markets[0].amm.peg_multiplier == 100 * PRICE_PRECISION
    # a 10 SOL deposit is worth $800 of initial collateral at $100
    user = User(
        authority=b"u",
        spot_positions=[SpotPosition(market_index=1, scaled_balance=10 * SPOT_BALANCE_PRECISION)],
    )
    accounts = Accounts(program_state, Clock(slot=3, unix_timestamp=NOW))
    assert calculate_free_collateral(user, accounts, MarginRequirementType.Initial) == (
        800 * QUOTE_PRECISION
    )
