"""Oracle and mark TWAPs of the AMM (``protocol/math/amm.py``, TWAP section).

Vectors marked "program" reproduce the program's unit tests in ``math/amm/tests.rs`` (with the
exchange oracle standing in for the program's market-maker oracle wrapper, which those tests
build so that it falls back to the exchange oracle). The rest are worked by hand in comments.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import AMM_RESERVE_PRECISION, PEG_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.amm import (
    TwapPeriod,
    ask_price,
    bid_price,
    calculate_new_oracle_price_twap,
    estimate_best_bid_ask_price,
    get_sanitize_clamp_denominator,
    normalise_oracle_price,
    reserve_price,
    update_amm_mark_std,
    update_mark_twap,
    update_mark_twap_crank,
    update_mark_twap_from_estimates,
    update_oracle_price_twap,
)
from protocol.state.oracle import HistoricalOracleData, OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.types import ContractTier, PositionDirection

P = PRICE_PRECISION
R = AMM_RESERVE_PRECISION


def _amm(**fields: Any) -> AMM:
    """An AMM with the program's ``AMM::default()`` zeros wherever a test leaves a field unset
    (our dataclass defaults describe a usable market instead)."""
    base: dict[str, Any] = {
        "oracle": "oracle",
        "base_asset_reserve": 0,
        "quote_asset_reserve": 0,
        "sqrt_k": 0,
        "peg_multiplier": 0,
        "terminal_quote_asset_reserve": 0,
        "funding_period": 0,
        "order_step_size": 0,
        "order_tick_size": 0,
        "max_fill_reserve_fraction": 0,
        "max_slippage_ratio": 0,
        "last_oracle_valid": False,
    }
    base.update(fields)
    return AMM(**base)


# --- program vectors --------------------------------------------------------------------------


def test_calc_oracle_twap_program_vectors() -> None:
    # program: calc_oracle_twap_tests
    prev = 1656682258
    now = prev + 3600
    amm = _amm(
        base_asset_reserve=2 * R,
        quote_asset_reserve=2 * R,
        peg_multiplier=PEG_PRECISION,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price_twap=32 * P, last_oracle_price_twap_ts=prev
        ),
        mark_std=P,
        last_mark_price_twap_ts=prev,
        funding_period=3600,
    )
    hod = amm.historical_oracle_data

    update_oracle_price_twap(amm, now, OraclePriceData(34 * P, P // 100, 1))
    assert hod.last_oracle_price_twap == 34 * P - P // 100

    amm.last_mark_price_twap_ts = now - 60
    hod.last_oracle_price_twap_ts = now - 60
    price_31 = OraclePriceData(31 * P, 0, 2)
    update_oracle_price_twap(amm, now, price_31)
    assert hod.last_oracle_price_twap == 33940167
    assert hod.last_oracle_price_twap_5min == 33392001
    assert amm.oracle_std == 2_990_000

    update_oracle_price_twap(amm, now + 60 * 5, price_31)
    assert hod.last_oracle_price_twap == 33695154
    assert hod.last_oracle_price_twap_5min == 31 * P
    assert amm.oracle_std == 2940167

    update_oracle_price_twap(amm, now + 60 * 5 + 60, OraclePriceData(32 * P, 0, 2))
    assert hod.last_oracle_price_twap_5min == 31200001
    assert amm.oracle_std == 1695154


def test_calc_oracle_twap_clamp_update_program_vectors() -> None:
    # program: calc_oracle_twap_clamp_update_tests -- the oracle jumps 10x; each one-second
    # update may move the TWAP input at most a third of the current TWAP.
    prev = 1667387000
    now = prev + 1
    amm = _amm(
        quote_asset_reserve=200 * R,
        base_asset_reserve=200 * R,
        peg_multiplier=13 * PEG_PRECISION,
        last_mark_price_twap=13 * P,
        last_bid_price_twap=13 * P,
        last_ask_price_twap=13 * P,
        last_mark_price_twap_ts=prev,
        funding_period=3600,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=13 * P,
            last_oracle_price_twap=13 * P,
            last_oracle_price_twap_5min=13 * P,
            last_oracle_price_twap_ts=prev,
        ),
    )
    hod = amm.historical_oracle_data
    reading = OraclePriceData(130 * P + 873, P // 10, 1)

    while now < prev + 3600:
        update_oracle_price_twap(amm, now, reading)
        now += 1
    assert hod.last_oracle_price_twap == 18_143_130
    assert hod.last_oracle_price_twap_5min == 23_536_961
    assert amm.last_oracle_normalised_price == 24_188_600

    while now < prev + 3600 * 2:
        update_oracle_price_twap(amm, now, reading)
        now += 1
    assert hod.last_oracle_price_twap == 25_322_529
    assert hod.last_oracle_price_twap_5min == 32_850_803
    assert amm.last_oracle_normalised_price == 33_760_245

    while now < prev + 3600 * 10:
        update_oracle_price_twap(amm, now, reading)
        now += 1
    assert hod.last_oracle_price_twap == 129_282_724
    assert hod.last_oracle_price_twap_5min == 129_900_874
    assert amm.last_oracle_normalised_price == 129_900_873


def test_last_oracle_conf_update_program_vectors() -> None:
    # program: test_last_oracle_conf_update
    prev = 1667387000
    now = prev + 1
    amm = _amm(
        quote_asset_reserve=200 * R,
        base_asset_reserve=200 * R,
        peg_multiplier=13 * PEG_PRECISION,
        last_mark_price_twap=13 * P,
        last_bid_price_twap=13 * P,
        last_ask_price_twap=13 * P,
        last_mark_price_twap_ts=prev,
        funding_period=3600,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=13 * P,
            last_oracle_price_twap=13 * P,
            last_oracle_price_twap_5min=13 * P,
            last_oracle_price_twap_ts=prev,
        ),
    )
    # 0.1 / 13 (reserve price) = 7692 in BID_ASK_SPREAD_PRECISION
    update_oracle_price_twap(amm, now, OraclePriceData(130 * P + 873, P // 10, 1))
    assert amm.last_oracle_conf_pct == 7692

    tight = OraclePriceData(130 * P + 873, 1, 5)
    update_oracle_price_twap(amm, now, tight)  # no time passed: the floor is the old value
    assert amm.last_oracle_conf_pct == 7692
    update_oracle_price_twap(amm, now + 1, tight)  # 1 s: decays by 1/(21 - 1)
    assert amm.last_oracle_conf_pct == 7692 - 7692 // 20  # 7308
    update_oracle_price_twap(amm, now + 60, tight)  # 59 s: divisor floored at 5
    assert amm.last_oracle_conf_pct == 7308 - 7308 // 5  # 5847


def test_calc_delayed_mark_twap_program_vector() -> None:
    # program: calc_delayed_mark_twap_tests -- the mark TWAP is an hour older than the oracle
    # TWAP, so it is first pulled toward it
    prev = 1656682258
    now = prev + 60
    px = 22850 * P
    amm = _amm(
        base_asset_reserve=2 * R,
        quote_asset_reserve=2 * R,
        peg_multiplier=px,
        base_spread=655,
        max_spread=65535,
        mark_std=P,
        last_bid_price_twap=21999 * P,
        last_ask_price_twap=22001 * P,
        last_mark_price_twap=22000 * P,
        last_mark_price_twap_ts=prev - 3600,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=22850 * P,
            last_oracle_price_twap=22900 * P,
            last_oracle_price_twap_ts=prev,
        ),
        funding_period=3600,
    )
    update_mark_twap_from_estimates(amm, now, px, PositionDirection.Long)
    assert amm.last_bid_price_twap == 22850013657
    assert amm.last_mark_price_twap == 22850013657
    assert amm.last_ask_price_twap == 22850013657
    assert amm.last_mark_price_twap - amm.historical_oracle_data.last_oracle_price_twap == -49986343


def test_update_mark_twap_program_vectors() -> None:
    # program: update_mark_twap_tests
    now = 1
    reading = OraclePriceData(40_021_280, P // 100, 1)
    amm = _amm(
        quote_asset_reserve=2 * R,
        base_asset_reserve=2 * R,
        peg_multiplier=40 * PEG_PRECISION,
        base_spread=800,
        max_spread=10000,
        last_mark_price_twap=40 * P,
        last_bid_price_twap=40 * P - 1,
        last_ask_price_twap=40 * P,
        last_mark_price_twap_ts=0,
        funding_period=3600,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=40 * P, last_oracle_price_twap=40 * P, last_oracle_price_twap_ts=0
        ),
    )
    hod = amm.historical_oracle_data
    update_oracle_price_twap(amm, now, reading)
    assert hod.last_oracle_price == 40_021_280

    trade_price = 40_051_280
    new_mark_twap = update_mark_twap_from_estimates(amm, now, trade_price, PositionDirection.Long)
    assert new_mark_twap == 40_000_010
    assert amm.last_ask_price_twap == 40_000_015
    assert amm.last_bid_price_twap == 40_000_005

    while now < 3600:
        now += 1
        update_oracle_price_twap(amm, now, reading)
        update_mark_twap_from_estimates(amm, now, trade_price, PositionDirection.Long)
    assert hod.last_oracle_price_twap == 40008161
    assert amm.last_bid_price_twap == 40014547
    assert amm.last_mark_price_twap == 40024054
    assert amm.last_ask_price_twap == 40033561
    assert amm.mark_std == 27230
    assert amm.oracle_std == 3120

    reading_2 = OraclePriceData(39_991_280, P // 80, 14)
    while now <= 3600 * 2:
        now += 1
        update_oracle_price_twap(amm, now, reading_2)
        if now % 200 == 0:
            update_mark_twap_from_estimates(amm, now, 39_971_280, PositionDirection.Short)
    assert amm.last_bid_price_twap == 39_989_386
    assert amm.last_ask_price_twap == 40_000_774
    assert (amm.last_bid_price_twap + amm.last_ask_price_twap) // 2 == amm.last_mark_price_twap
    assert hod.last_oracle_price_twap == 39_998_518
    assert amm.last_mark_price_twap == 39995080
    assert amm.oracle_std == 7240
    assert amm.mark_std == 24457


def test_calc_mark_std_program_vectors() -> None:
    # program: calc_mark_std_tests (first phase)
    prev = 1656682258
    now = prev + 60
    amm = _amm(
        base_asset_reserve=2 * R,
        quote_asset_reserve=2 * R,
        peg_multiplier=PEG_PRECISION,
        base_spread=65535,
        mark_std=P,
        historical_oracle_data=HistoricalOracleData(
            last_oracle_price=P, last_oracle_price_twap=P, last_oracle_price_twap_5min=P
        ),
        last_mark_price_twap_ts=prev,
    )
    hod = amm.historical_oracle_data
    update_amm_mark_std(amm, now, P * 23, 0, 0)
    assert amm.mark_std == 23_000_000
    amm.mark_std = P
    amm.last_mark_price_twap_ts = now - 60
    update_amm_mark_std(amm, now, P * 2, 0, 0)
    assert amm.mark_std == 2_000_000

    px = P
    stop_time = now + 3600 * 2
    while now <= stop_time:
        now += 1
        if now % 15 == 0:
            px = px * 1012 // 1000
            hod.last_oracle_price = hod.last_oracle_price * 10119 // 10000
        else:
            px = px * 100000 // 100133
            hod.last_oracle_price = hod.last_oracle_price * 100001 // 100133
        update_oracle_price_twap(amm, now, OraclePriceData(hod.last_oracle_price, 0, 2))
        amm.peg_multiplier = px
        update_mark_twap_from_estimates(amm, now, px, PositionDirection.Long)
    assert now == 1656689519
    assert px == 39397
    assert hod.last_oracle_price_twap == 40194
    assert amm.last_mark_price_twap == 39449
    assert hod.last_oracle_price_twap_5min == 46930
    assert amm.last_mark_price_twap_5min == 46051
    assert amm.last_bid_price_twap == 39449
    assert amm.last_ask_price_twap == 39449
    assert amm.mark_std == 6676


# --- hand-worked ------------------------------------------------------------------------------


def _amm_at_100() -> AMM:
    # equal reserves and a $100 peg: reserve price 1000e9 * 100e6 / 1000e9 = 100_000_000
    return _amm(
        base_asset_reserve=1000 * R,
        quote_asset_reserve=1000 * R,
        peg_multiplier=100 * PEG_PRECISION,
        funding_period=3600,
        order_tick_size=1,
    )


def test_bid_and_ask_prices_apply_the_spreads() -> None:
    amm = _amm_at_100()
    amm.long_spread = 1_000  # 0.1%
    amm.short_spread = 2_500  # 0.25%
    assert reserve_price(amm) == 100_000_000
    # 100e6 * (1e6 - 2_500) / 1e6 = 99_750_000; 100e6 * (1e6 + 1_000) / 1e6 = 100_100_000
    assert bid_price(amm, 100_000_000) == 99_750_000
    assert ask_price(amm, 100_000_000) == 100_100_000
    # 33 * 999_000 / 1e6 = 32.967 -> 32 (truncated)
    amm.short_spread = 1_000
    assert bid_price(amm, 33) == 32


@pytest.mark.parametrize(
    ("oracle", "conf", "expected"),
    [
        # reserve 100e6 above the oracle: oracle + conf, but at most reserve - 2.5 bps
        # (100e6 - 100e6/4000 = 99_975_000)
        (99 * P, 2 * P, 99_975_000),
        (99 * P, P // 2, 99_500_000),
        # reserve below the oracle: oracle - conf, but at least reserve + 2.5 bps
        (101 * P, 2 * P, 100_025_000),
        (101 * P, P // 4, 100_750_000),
        (100 * P, 5 * P, 100_000_000),  # equal: the oracle price
    ],
)
def test_normalise_oracle_price(oracle: int, conf: int, expected: int) -> None:
    assert normalise_oracle_price(_amm_at_100(), OraclePriceData(oracle, conf, 0)) == expected


def test_new_oracle_twap_blends_with_the_mark_twap_after_an_invalid_stretch() -> None:
    amm = _amm_at_100()
    amm.last_mark_price_twap = 100 * P
    amm.last_mark_price_twap_ts = 1200
    amm.historical_oracle_data.last_oracle_price_twap = 90 * P
    amm.historical_oracle_data.last_oracle_price_twap_ts = 0
    # The oracle missed the 1200 s the mark saw: first blend 96e6 with the mark TWAP,
    #   weights 1200 (mark) and max(1, 3600 - 1200) = 2400 (price):
    #   (100e6 * 1200 + 96e6 * 2400) / 3600 = 97_333_333.3 -> 97_333_333, +1 bias
    #   (the price term 230.4e9 > the mark term 120e9) = 97_333_334.
    # Then the TWAP over since_last = 2400 and from_start = 1200:
    #   (97_333_334 * 2400 + 90e6 * 1200) / 3600 = 94_888_889.3 -> 94_888_889, -1 bias = 94_888_888
    assert (
        calculate_new_oracle_price_twap(amm, 2400, 96 * P, TwapPeriod.FundingPeriod) == 94_888_888
    )


def test_oracle_twap_ignores_a_non_positive_normalised_price() -> None:
    amm = _amm_at_100()
    amm.historical_oracle_data = HistoricalOracleData.seeded(100 * P, 0)
    before = amm.clone()
    # normalised: min(max(reserve - 2.5 bps, -5), -5 + conf 0) = -5. The band clamp alone would
    # lift it to 100e6 - 100e6 / 3 = 66_666_667 > 0, but the raw normalised price must also be
    # positive, so nothing changes
    assert update_oracle_price_twap(amm, 60, OraclePriceData(-5, 0, 0)) == 100 * P
    assert amm == before


def test_update_mark_twap_from_a_bid_ask_pair() -> None:
    amm = _amm_at_100()
    amm.last_bid_price_twap = 99 * P
    amm.last_ask_price_twap = 101 * P
    amm.last_mark_price_twap = 100 * P
    amm.last_mark_price_twap_5min = 100 * P
    amm.last_mark_price_twap_ts = 1000
    amm.historical_oracle_data.last_oracle_price_twap_ts = 1000
    # 360 s later; the band (1/3 of each TWAP) does not bind.
    # bid: (102e6 * 360 + 99e6 * 3240) / 3600 = 99_300_000, +1 (old term larger) = 99_300_001
    # ask: (104e6 * 360 + 101e6 * 3240) / 3600 = 101_300_000, +1 = 101_300_001
    # mark: (99_300_001 + 101_300_001) / 2 = 100_300_001
    # 5-min: weights 360 and max(1, 300 - 360) = 1, no bias for a weight of 1:
    #   (103e6 * 360 + 100e6) / 361 = 102_991_689.7 -> 102_991_689
    # std: the mid 103e6 is 3e6 from both old TWAPs; nothing of the old std is kept
    assert update_mark_twap(amm, 1360, 102 * P, 104 * P) == 100_300_001
    assert amm.last_bid_price_twap == 99_300_001
    assert amm.last_ask_price_twap == 101_300_001
    assert amm.last_mark_price_twap == 100_300_001
    assert amm.last_mark_price_twap_5min == 102_991_689
    assert amm.mark_std == 3 * P
    assert amm.last_mark_price_twap_ts == 1360


def test_update_mark_twap_pulls_stale_sides_toward_the_oracle_twap() -> None:
    amm = _amm_at_100()
    amm.last_bid_price_twap = 99 * P
    amm.last_ask_price_twap = 101 * P
    amm.last_mark_price_twap_ts = 0
    amm.historical_oracle_data.last_oracle_price_twap = 110 * P
    amm.historical_oracle_data.last_oracle_price_twap_ts = 1800
    # the oracle TWAP is 1800 s newer (> max(3600 / 60, 60)): both sides first blend with it,
    # equal weights 1800/1800 and the bias toward the oracle TWAP (+1):
    #   bid (110e6 + 99e6) / 2 + 1 = 104_500_001; ask (110e6 + 101e6) / 2 + 1 = 105_500_001
    # then the new pair at now = 1800 (since_last 1800, from_start 1800):
    #   bid (104e6 + 104_500_001) / 2 = 104_250_000.5 -> 104_250_000, +1 (old larger) = 104_250_001
    #   ask (106e6 + 105_500_001) / 2 = 105_750_000.5 -> 105_750_000, -1 (old smaller) = 105_749_999
    #   mark (104_250_001 + 105_749_999) / 2 = 105_000_000
    assert update_mark_twap(amm, 1800, 104 * P, 106 * P) == 105_000_000
    assert amm.last_bid_price_twap == 104_250_001
    assert amm.last_ask_price_twap == 105_749_999


def test_update_mark_twap_rejects_a_crossed_pair() -> None:
    amm = _amm_at_100()
    with pytest.raises(ProtocolError) as err:
        update_mark_twap(amm, 10, 101 * P, 100 * P)
    assert err.value.code is ErrorCode.InvalidMarkTwapUpdateDetected


@pytest.mark.parametrize(
    ("trade_price", "direction", "expected"),
    [
        # AMM bid/ask 99.9 / 100.1 (0.1% spreads); oracle 100; base_spread 500 = 0.05%.
        # A buy 50_000 above the oracle: the bid was at most min(500, 1000/2) below the oracle.
        (100_050_000, PositionDirection.Long, (99_999_500, 100_050_000)),
        # A sell 50_000 below: the ask was at most 500 above the oracle.
        (99_950_000, PositionDirection.Short, (99_950_000, 100_000_500)),
        # No direction: the trade price clamped into the AMM's bid/ask.
        (100_200_000, None, (100_100_000, 100_100_000)),
        (99_000_000, None, (99_900_000, 99_900_000)),
    ],
)
def test_estimate_best_bid_ask_price(
    trade_price: int, direction: PositionDirection | None, expected: tuple[int, int]
) -> None:
    amm = _amm_at_100()
    amm.long_spread = amm.short_spread = 1_000
    amm.base_spread = 500
    amm.historical_oracle_data.last_oracle_price = 100 * P
    assert estimate_best_bid_ask_price(amm, trade_price, direction) == expected


def test_estimate_best_bid_ask_price_needs_an_oracle_price() -> None:
    amm = _amm_at_100()
    with pytest.raises(ProtocolError) as err:
        estimate_best_bid_ask_price(amm, 100 * P, None)
    assert err.value.code is ErrorCode.InvalidOracle


@pytest.mark.parametrize(
    ("oracle_price", "expected_twap"),
    [
        # book bid 101 > AMM ask 100: crossed. Basis 0 (both 5-min TWAPs 100).
        # bid 101 >= oracle 100 + 0: the pair collapses to the ask, 100 / 100; the TWAP stays 100.
        (100 * P, 100 * P),
        # bid 101 < oracle 102: the pair collapses to the bid, 101 / 101. Weights 3600 and
        # max(1, 3600 - 3600) = 1, no bias: (101e6 * 3600 + 100e6) / 3601 = 100_999_722.3
        (102 * P, 100_999_722),
    ],
)
def test_update_mark_twap_crank_uncrosses_the_book(oracle_price: int, expected_twap: int) -> None:
    amm = _amm_at_100()
    amm.last_bid_price_twap = amm.last_ask_price_twap = amm.last_mark_price_twap = 100 * P
    amm.last_mark_price_twap_5min = 100 * P
    amm.historical_oracle_data.last_oracle_price_twap_5min = 100 * P
    amm.last_mark_price_twap_ts = 0
    update_mark_twap_crank(amm, 3600, OraclePriceData(oracle_price, 0, 0), 101 * P, 102 * P)
    assert amm.last_bid_price_twap == expected_twap
    assert amm.last_ask_price_twap == expected_twap
    assert amm.last_mark_price_twap == expected_twap


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        (ContractTier.A, 10),
        (ContractTier.B, 5),
        (ContractTier.C, 2),
        (ContractTier.Speculative, None),
        (ContractTier.HighlySpeculative, None),
        (ContractTier.Isolated, None),
    ],
)
def test_sanitize_clamp_denominator_by_contract_tier(
    tier: ContractTier, expected: int | None
) -> None:
    market = PerpMarket(market_index=0, name="m", amm=_amm_at_100(), contract_tier=tier)
    assert get_sanitize_clamp_denominator(market) == expected


@given(
    last_twap=st.integers(1, 10**12),
    price=st.integers(1, 10**12),
    elapsed=st.integers(0, 10_000),
    period=st.sampled_from([TwapPeriod.FundingPeriod, TwapPeriod.FiveMin]),
)
def test_oracle_twap_stays_between_old_twap_and_new_price(
    last_twap: int, price: int, elapsed: int, period: TwapPeriod
) -> None:
    # with no mark-TWAP correction, the result is a weighted average of the two inputs, off by
    # at most the one-unit bias
    amm = _amm_at_100()
    amm.historical_oracle_data.last_oracle_price_twap = last_twap
    amm.historical_oracle_data.last_oracle_price_twap_5min = last_twap
    amm.historical_oracle_data.last_oracle_price_twap_ts = 1_000_000
    amm.last_mark_price_twap_ts = 1_000_000
    twap = calculate_new_oracle_price_twap(amm, 1_000_000 + elapsed, price, period)
    assert min(last_twap, price) - 1 <= twap <= max(last_twap, price) + 1
    if elapsed == 0:
        assert twap == last_twap
