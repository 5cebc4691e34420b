"""Oracle validity (``protocol/math/oracle.py``).

The "program" vector reproduces ``math/oracle/tests.rs``; the rest are worked by hand against
the rules in ``math/oracle.rs`` (thresholds are strict ``>`` comparisons on truncated ratios).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import AMM_RESERVE_PRECISION, PEG_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.math.amm import reserve_price, update_oracle_price_twap
from protocol.math.oracle import (
    DriftAction,
    OracleValidity,
    OracleValidityKind,
    block_operation,
    get_max_confidence_interval_multiplier,
    get_oracle_status,
    is_oracle_valid,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.state.oracle import HistoricalOracleData, OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.state import OracleGuardRails, PriceDivergenceGuardRails, ValidityGuardRails
from protocol.types import AssetTier, ContractTier, MarketStatus, MarketType, OracleSource

P = PRICE_PRECISION
R = AMM_RESERVE_PRECISION
RAILS = ValidityGuardRails(
    slots_before_stale_for_amm=10,
    slots_before_stale_for_margin=120,
    confidence_interval_max_size=20_000,  # 2%
    too_volatile_ratio=5,
)


def _validity(
    price: int,
    *,
    conf: int = 0,
    delay: int = 0,
    twap: int = 100 * P,
    enough_points: bool = True,
    multiplier: int = 1,
    source: OracleSource = OracleSource.Pyth,
    overrides: tuple[int, int] = (-1, 0),
) -> OracleValidity:
    return oracle_validity(
        MarketType.Perp,
        0,
        twap,
        OraclePriceData(price, conf, delay, enough_points),
        RAILS,
        multiplier,
        source,
        *overrides,
    )


def test_calculate_oracle_valid_program_vectors() -> None:
    # program: calculate_oracle_valid
    prev = 1656682258
    now = prev + 3600
    px = 32 * P
    amm = AMM(
        oracle="oracle",
        base_asset_reserve=2 * R,
        quote_asset_reserve=2 * R,
        peg_multiplier=33 * PEG_PRECISION,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price_twap_5min=px,
            last_oracle_price_twap=px - 1000,
            last_oracle_price_twap_ts=prev,
        ),
        mark_std=P,
        last_mark_price_twap_ts=prev,
        funding_period=3600,
    )
    market = PerpMarket(market_index=0, name="m", amm=amm, contract_tier=ContractTier.B)
    rails = OracleGuardRails(
        price_divergence=PriceDivergenceGuardRails(
            mark_oracle_percent_divergence=1, oracle_twap_5min_percent_divergence=10
        ),
        validity=RAILS,
    )
    reading = OraclePriceData(34 * P, P // 100, 1)

    status = get_oracle_status(market, reading, rails, reserve_price(amm))
    assert status.oracle_validity == OracleValidity.Valid
    assert status.oracle_reserve_price_spread_pct == 30303  # (33 - 32) / 33
    assert not status.mark_too_divergent

    update_oracle_price_twap(amm, now, reading)
    assert amm.historical_oracle_data.last_oracle_price_twap == 34 * P - P // 100

    status = get_oracle_status(market, OraclePriceData(34 * P, P // 100, 11), rails, 33 * P)
    assert status.oracle_validity != OracleValidity.Valid

    reading = OraclePriceData(34 * P, P // 100, 8)
    amm.historical_oracle_data.last_oracle_price_twap_5min = 32 * P
    amm.historical_oracle_data.last_oracle_price_twap = 21 * P
    status = get_oracle_status(market, reading, rails, reserve_price(amm))
    assert status.oracle_validity == OracleValidity.Valid
    assert not status.mark_too_divergent

    amm.historical_oracle_data.last_oracle_price_twap_5min = 29 * P
    status = get_oracle_status(market, reading, rails, reserve_price(amm))
    assert status.mark_too_divergent
    assert status.oracle_validity == OracleValidity.Valid

    status = get_oracle_status(market, OraclePriceData(34 * P, P, 8), rails, reserve_price(amm))
    assert status.mark_too_divergent
    assert status.oracle_validity == OracleValidity.TooUncertain


def test_valid_reading() -> None:
    assert _validity(100 * P, conf=P // 10) == OracleValidity.Valid


@pytest.mark.parametrize(
    ("price", "twap", "expected"),
    [
        # max / min, truncated, must exceed 5
        (60 * P, 10 * P, OracleValidity.TooVolatile),  # 60 / 10 = 6
        (59 * P, 10 * P, OracleValidity.Valid),  # 5.9 -> 5
        (16 * P // 10, 10 * P, OracleValidity.TooVolatile),  # 10 / 1.6 = 6.25 -> 6
        (19 * P // 10, 10 * P, OracleValidity.Valid),  # 10 / 1.9 = 5.26 -> 5
        (10 * P, 0, OracleValidity.TooVolatile),  # no TWAP yet: 10e6 / max(0, 1)
    ],
)
def test_too_volatile(price: int, twap: int, expected: OracleValidity) -> None:
    assert _validity(price, twap=twap) == expected


@pytest.mark.parametrize(
    ("conf", "multiplier", "expected"),
    [
        # conf * 1e6 / price must exceed 20_000 * multiplier
        (2 * P, 1, OracleValidity.Valid),  # exactly 2%
        (2 * P + 99, 1, OracleValidity.Valid),  # 20_000.99 -> 20_000
        (2 * P + 100, 1, OracleValidity.TooUncertain),  # 20_001
        (4 * P, 2, OracleValidity.Valid),  # tier C doubles the limit
        (4 * P + 100, 2, OracleValidity.TooUncertain),
    ],
)
def test_too_uncertain(conf: int, multiplier: int, expected: OracleValidity) -> None:
    assert _validity(100 * P, conf=conf, multiplier=multiplier) == expected


@pytest.mark.parametrize(
    ("delay", "source", "expected"),
    [
        (120, OracleSource.Pyth, OracleValidity.stale_for_amm(True, True)),
        (121, OracleSource.Pyth, OracleValidity.StaleForMargin),
        # stable coins: three times the margin staleness
        (360, OracleSource.PythStableCoin, OracleValidity.stale_for_amm(True, True)),
        (361, OracleSource.PythStableCoin, OracleValidity.StaleForMargin),
    ],
)
def test_stale_for_margin(delay: int, source: OracleSource, expected: OracleValidity) -> None:
    assert _validity(100 * P, delay=delay, source=source) == expected


@pytest.mark.parametrize(
    ("delay", "overrides", "expected"),
    [
        # the market's default overrides (-1, 0): immediate fills need a same-slot price,
        # low-risk fills one at most slots_before_stale_for_amm (10) old
        (0, (-1, 0), OracleValidity.Valid),
        (1, (-1, 0), OracleValidity.stale_for_amm(immediate=True, low_risk=False)),
        (10, (-1, 0), OracleValidity.stale_for_amm(immediate=True, low_risk=False)),
        (11, (-1, 0), OracleValidity.stale_for_amm(immediate=True, low_risk=True)),
        # an immediate override of 0 means "always stale for immediate fills"
        (0, (0, 0), OracleValidity.stale_for_amm(immediate=True, low_risk=False)),
        # positive overrides replace both thresholds
        (4, (5, 3), OracleValidity.stale_for_amm(immediate=False, low_risk=True)),
        (5, (5, 6), OracleValidity.Valid),
    ],
)
def test_stale_for_amm(delay: int, overrides: tuple[int, int], expected: OracleValidity) -> None:
    assert _validity(100 * P, delay=delay, overrides=overrides) == expected


def test_insufficient_data_points_outranks_amm_staleness() -> None:
    assert (
        _validity(100 * P, delay=50, enough_points=False) == OracleValidity.InsufficientDataPoints
    )


def test_verdicts_follow_severity() -> None:
    # too volatile, too uncertain and stale for margin at once: the most severe wins
    assert _validity(600 * P, conf=300 * P, delay=500) == OracleValidity.TooVolatile
    assert _validity(100 * P, conf=30 * P, delay=500) == OracleValidity.TooUncertain
    assert _validity(100 * P, delay=500, enough_points=False) == OracleValidity.StaleForMargin


def test_non_positive_price_is_classified_before_any_division() -> None:
    # the program would divide by the price here; the model classifies the reading instead
    assert _validity(0) == OracleValidity.NonPositive
    assert _validity(-1) == OracleValidity.NonPositive
    assert _validity(-1, conf=10**12, delay=10**6) == OracleValidity.NonPositive


_ALL = [
    OracleValidity.NonPositive,
    OracleValidity.TooVolatile,
    OracleValidity.TooUncertain,
    OracleValidity.StaleForMargin,
    OracleValidity.InsufficientDataPoints,
    OracleValidity.stale_for_amm(immediate=True, low_risk=True),
    OracleValidity.stale_for_amm(immediate=True, low_risk=False),
    OracleValidity.Valid,
]
_NP, _TV, _TU, _SM, _ID, _SA_LOW, _SA_IMM, _VALID = _ALL

# Transcribed from the program's is_oracle_valid_for_action: which verdicts each action accepts.
_ACCEPTS: dict[DriftAction | None, set[OracleValidity]] = {
    None: {_VALID},
    DriftAction.FillOrderAmmImmediate: {_VALID},
    DriftAction.FillOrderAmmLowRisk: {_VALID, _SA_IMM},
    DriftAction.UpdateFunding: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.SettlePnl: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.OracleOrderPrice: {_VALID, _SA_LOW, _SA_IMM, _ID},
    DriftAction.MarginCalc: {_VALID, _SA_LOW, _SA_IMM, _ID},
    DriftAction.TriggerOrder: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM, _TU},
    DriftAction.Liquidate: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM, _TU},
    DriftAction.UseMMOraclePrice: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM, _TU},
    DriftAction.FillOrderMatch: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.UpdateAmmCache: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.UpdateLpPoolAum: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.LpPoolSwap: {_VALID, _SA_LOW, _SA_IMM, _ID, _SM},
    DriftAction.UpdateTwap: set(_ALL) - {_NP},
    DriftAction.UpdateAMMCurve: set(_ALL) - {_NP},
}


@pytest.mark.parametrize("action", list(_ACCEPTS))
def test_is_oracle_valid_for_action(action: DriftAction | None) -> None:
    for validity in _ALL:
        assert is_oracle_valid_for_action(validity, action) == (validity in _ACCEPTS[action]), (
            action,
            validity,
        )


def test_every_action_is_covered() -> None:
    assert set(DriftAction) <= set(_ACCEPTS)


def test_u8_encoding_and_error_codes() -> None:
    assert [v.to_u8() for v in _ALL] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert [OracleValidity.from_u8(i) for i in range(8)] == _ALL
    with pytest.raises(ValueError, match="invalid OracleValidity encoding"):
        OracleValidity.from_u8(8)
    # stale for neither kind of fill encodes as Valid
    assert OracleValidity.stale_for_amm(False, False).to_u8() == 7
    with pytest.raises(ValueError, match="no u8 encoding"):
        OracleValidity.stale_for_amm(False, True).to_u8()
    assert [v.get_error_code() for v in _ALL[:7]] == [
        ErrorCode.OracleNonPositive,
        ErrorCode.OracleTooVolatile,
        ErrorCode.OracleTooUncertain,
        ErrorCode.OracleStaleForMargin,
        ErrorCode.OracleInsufficientDataPoints,
        ErrorCode.OracleStaleForAMM,
        ErrorCode.OracleStaleForAMM,
    ]
    with pytest.raises(ValueError, match="no error code"):
        OracleValidity.Valid.get_error_code()
    assert str(_SA_IMM) == "StaleForAMM (immediate)"
    assert str(OracleValidity.stale_for_amm(False, True)) == "StaleForAMM (low risk)"
    assert _SA_LOW.name == "StaleForAMM"
    with pytest.raises(ValueError, match="carries no staleness flags"):
        OracleValidity(OracleValidityKind.Valid, immediate=True)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (ContractTier.A, 1),
        (ContractTier.B, 1),
        (ContractTier.C, 2),
        (ContractTier.Speculative, 10),
        (ContractTier.HighlySpeculative, 50),
        (ContractTier.Isolated, 50),
    ],
)
def test_perp_confidence_multiplier(tier: ContractTier, expected: int) -> None:
    market = PerpMarket(market_index=0, name="m", amm=AMM(oracle="o"), contract_tier=tier)
    assert get_max_confidence_interval_multiplier(market) == expected


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (AssetTier.Collateral, 1),
        (AssetTier.Protected, 1),
        (AssetTier.Cross, 5),
        (AssetTier.Isolated, 50),
        (AssetTier.Unlisted, 50),
    ],
)
def test_spot_confidence_multiplier(tier: AssetTier, expected: int) -> None:
    market = SpotMarket(market_index=1, name="s", oracle="o", decimals=9, asset_tier=tier)
    assert get_max_confidence_interval_multiplier(market) == expected


def test_is_oracle_valid_convenience() -> None:
    stale_5 = OraclePriceData(100 * P, 0, 5)
    assert not is_oracle_valid(stale_5, 100 * P, RAILS, DriftAction.FillOrderAmmImmediate)
    assert is_oracle_valid(stale_5, 100 * P, RAILS, DriftAction.FillOrderAmmLowRisk)
    assert is_oracle_valid(stale_5, 100 * P, RAILS, DriftAction.MarginCalc)
    uncertain = OraclePriceData(100 * P, 3 * P, 0)
    assert not is_oracle_valid(uncertain, 100 * P, RAILS, DriftAction.MarginCalc)
    assert is_oracle_valid(
        uncertain, 100 * P, RAILS, DriftAction.MarginCalc, max_confidence_interval_multiplier=2
    )


def _funding_market() -> PerpMarket:
    # reserve price 100e6; oracle TWAPs at 100e6; AMM updated at slot 1000
    amm = AMM(
        oracle="o",
        base_asset_reserve=1000 * R,
        quote_asset_reserve=1000 * R,
        peg_multiplier=100 * PEG_PRECISION,
        historical_oracle_data=HistoricalOracleData.seeded(100 * P, 0),
        last_update_slot=1000,
        funding_period=3600,
    )
    return PerpMarket(market_index=0, name="m", amm=amm)


@pytest.mark.parametrize(
    ("change", "slot", "blocked"),
    [
        ("none", 1000, False),
        ("none", 1000 + 3600, False),  # exactly funding_period slots since the AMM update
        ("none", 1000 + 3601, True),  # more than that
        ("paused", 1000, True),
        ("uncertain", 1000, True),  # TooUncertain is not acceptable for funding
        ("stale_for_margin", 1000, False),  # staleness is tolerated for funding
        ("divergent", 1000, True),  # reserve 100 vs 5-min oracle TWAP 80: 20% > 10% floor
    ],
)
def test_block_operation(change: str, slot: int, blocked: bool) -> None:
    market = _funding_market()
    reading = OraclePriceData(100 * P, 0, 0)
    if change == "paused":
        market.status = MarketStatus.FundingPaused
    elif change == "uncertain":
        reading = OraclePriceData(100 * P, 3 * P, 0)
    elif change == "stale_for_margin":
        reading = OraclePriceData(100 * P, 0, 500)
    elif change == "divergent":
        market.amm.historical_oracle_data.last_oracle_price_twap_5min = 80 * P
    rails = OracleGuardRails(validity=RAILS)
    assert block_operation(market, reading, rails, 100 * P, slot) is blocked


@given(
    price=st.integers(1, 10**13),
    twap=st.integers(0, 10**13),
    conf=st.integers(0, 10**12),
    delay=st.integers(0, 1000),
)
def test_margin_calc_accepts_exactly_what_the_thresholds_allow(
    price: int, twap: int, conf: int, delay: int
) -> None:
    # naive reference for MarginCalc: not too volatile, not too uncertain, not stale for margin
    volatile = max(price, twap) // max(min(price, twap), 1) > RAILS.too_volatile_ratio
    uncertain = conf * 1_000_000 // price > RAILS.confidence_interval_max_size
    stale = delay > RAILS.slots_before_stale_for_margin
    validity = _validity(price, conf=conf, delay=delay, twap=twap)
    expected = not (volatile or uncertain or stale)
    assert is_oracle_valid_for_action(validity, DriftAction.MarginCalc) == expected
