"""The AMM spread model, replaying the program's ``math/amm_spread/tests.rs`` vectors (and the
``amm_spread_adj_logic`` test of ``math/cp_curve/tests.rs``), plus property tests: every spread
pair lies within ``[0, max target spread]`` and the spread reserves quote around the curve.

Units: spreads BID_ASK_SPREAD_PRECISION (1e6 = 100%), reserves AMM_RESERVE_PRECISION (1e9).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    BID_ASK_SPREAD_PRECISION,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.math.amm import (
    _calculate_market_open_bids_asks,
    bid_ask_price,
    calculate_price,
    get_max_reference_price_offset,
    reserve_price,
)
from protocol.math.amm_spread import (
    calculate_inventory_liquidity_ratio,
    calculate_inventory_liquidity_ratio_for_reference_price_offset,
    calculate_long_short_vol_spread,
    calculate_max_target_spread,
    calculate_reference_price_offset,
    calculate_spread,
    calculate_spread_inventory_scale,
    calculate_spread_leverage_scale,
    calculate_spread_reserves,
    calculate_spread_revenue_retreat_amount,
    cap_to_max_spread,
    update_spreads,
)
from protocol.state import HistoricalOracleData
from protocol.types import ContractType, PositionDirection
from tests.protocol.amm_defaults import default_test_amm, program_amm, program_market

A = AMM_RESERVE_PRECISION

# calculate_spread's 20 arguments, by name, as the program's test locals
_SPREAD_ARGS = (
    "base_spread",
    "last_oracle_reserve_price_spread_pct",
    "last_oracle_conf_pct",
    "max_spread",
    "quote_asset_reserve",
    "terminal_quote_asset_reserve",
    "peg_multiplier",
    "base_asset_amount_with_amm",
    "reserve_price",
    "total_fee_minus_distributions",
    "net_revenue_since_last_funding",
    "base_asset_reserve",
    "min_base_asset_reserve",
    "max_base_asset_reserve",
    "mark_std",
    "oracle_std",
    "long_intensity_volume",
    "short_intensity_volume",
    "volume_24h",
    "amm_inventory_spread_adjustment",
)


def spread(base: dict[str, int], **changes: int) -> tuple[int, int]:
    args = {**base, **changes}
    return calculate_spread(*(args[name] for name in _SPREAD_ARGS))


def test_cap_to_max_spread_vectors() -> None:
    assert cap_to_max_spread(3905832905, 3582930, 1000) == (1000, 0)
    assert cap_to_max_spread(9999, 1, 1000) == (1000, 0)
    assert cap_to_max_spread(999, 1, 1000) == (999, 1)
    assert cap_to_max_spread(444, 222, 1000) == (444, 222)
    # 2221 * 1000 / 2371 = 936.7 -> 937 (ceil) on the wider side, 63 left for the other
    assert cap_to_max_spread(150, 2221, 1000) == (63, 1000 - 63)
    assert cap_to_max_spread(2500 - 10, 11, 2500) == (2490, 10)
    assert cap_to_max_spread(2510, 110, 2500) == (2396, 104)


def test_reference_price_offset_vectors() -> None:
    rev_price = 4216 * 10000
    max_offset = 2500  # 25 bps
    f = calculate_reference_price_offset
    assert f(rev_price, 0, 0, 0, 0, 0, 0, 0, max_offset) == 0
    # one penny of premium: (10000 + 10000 - 8432) / 3 = 3856 -> 91 pct-units * 10 / 2
    assert (
        f(rev_price, 1, 10, 1, 4216 * 10000, 4217 * 10000, 4216 * 10000, 4217 * 10000, max_offset)
        == 455
    )
    assert (
        f(rev_price, 1, 10, 1, 4216 * 10000, 4219 * 10000, 4216 * 10000, 4219 * 10000, max_offset)
        == 2035
    )
    # inventory and premium disagree in sign: no offset
    assert (
        f(
            rev_price,
            -43_000_000,
            10,
            1,
            4216 * 10000,
            4218 * 10000,
            4216 * 10000,
            4218 * 10000,
            max_offset,
        )
        == 0
    )
    assert (
        f(
            rev_price,
            -43_000_000,
            -10000,
            1,
            4216 * 10000,
            4218 * 10000,
            4216 * 10000,
            4218 * 10000,
            max_offset,
        )
        == -2500
    )
    assert (
        f(
            rev_price,
            -43_000_000,
            -10,
            1,
            4216 * 10000,
            4214 * 10000,
            4216 * 10000,
            4214 * 10000,
            max_offset,
        )
        == -2500
    )
    assert (
        f(rev_price, 1, 10, 1, 4216 * 10000, 4223 * 10000, 4216 * 10000, 4223 * 10000, max_offset)
        == 2500
    )
    assert (
        f(
            rev_price,
            10_000_000,
            10,
            1,
            4216 * 10000,
            4233 * 10000,
            4216 * 10000,
            4233 * 10000,
            max_offset,
        )
        == 2500
    )
    assert (
        f(
            rev_price,
            -10_000_000,
            -10,
            1,
            4216 * 10000,
            4123 * 10000,
            4216 * 10000,
            4123 * 10000,
            max_offset,
        )
        == -2500
    )
    assert (
        f(rev_price, -10_000_000, -10, 1, 4216 * 10000, 4123 * 10000, 6 * 10000, 4123 * 10000, 0)
        == 0
    )
    # fast and slow premia cancel
    assert (
        f(rev_price, -1, 1, 1, 4216 * 10000, 4123 * 10000, 4123 * 10000, 4216 * 10000, max_offset)
        == 0
    )


def test_reference_price_offset_deadband() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=A * 11,
            quote_asset_reserve=A * 10,
            sqrt_k=A * 10,
            peg_multiplier=34_000_000,
            min_base_asset_reserve=A * 7,
            max_base_asset_reserve=A * 14,
            base_spread=1000,
            max_spread=20_000,
            curve_update_intensity=110,
            last_24h_avg_funding_rate=1,
            last_mark_price_twap_5min=4216 * 10000 + 2 * 10000,
            last_mark_price_twap=4216 * 10000 + 2 * 10000,
            historical_oracle_data=HistoricalOracleData(
                last_oracle_price_twap=4216 * 10000, last_oracle_price_twap_5min=4216 * 10000
            ),
        )
    )
    amm = market.amm
    price = 4216 * 10000
    amm.base_asset_amount_with_amm = A * 7 // 20
    # bids 4e9, asks 3e9: 0.35e9 / 3.5e9 = 10%
    assert (
        calculate_inventory_liquidity_ratio_for_reference_price_offset(
            amm.base_asset_amount_with_amm,
            amm.base_asset_reserve,
            amm.min_base_asset_reserve,
            amm.max_base_asset_reserve,
        )
        == 100_000
    )
    amm.reference_price_offset_deadband_pct = 10

    amm.base_asset_amount_with_amm = A * 8 // 20  # past the 10% deadband
    update_spreads(market, price, None)
    assert amm.reference_price_offset > 0

    amm.base_asset_amount_with_amm = A * 6 // 20  # inside it
    update_spreads(market, price, None)
    assert amm.reference_price_offset == 0

    amm.last_24h_avg_funding_rate = -1
    amm.last_mark_price_twap_5min = 4216 * 10000 - 2 * 10000
    amm.last_mark_price_twap = 4216 * 10000 - 2 * 10000
    amm.base_asset_amount_with_amm = -(A * 8 // 20)
    _, short = update_spreads(market, price, None)
    assert amm.reference_price_offset - short < 0

    amm.base_asset_amount_with_amm = -(A * 6 // 20)
    update_spreads(market, price, None)
    assert amm.reference_price_offset == 0


def _base_spread_inputs() -> dict[str, int]:
    return {
        "base_spread": 1000,
        "last_oracle_reserve_price_spread_pct": 0,
        "last_oracle_conf_pct": 0,
        "max_spread": 2000 * 100,
        "quote_asset_reserve": A * 10,
        "terminal_quote_asset_reserve": A * 10,
        "peg_multiplier": 34_000_000,
        "base_asset_amount_with_amm": 0,
        "reserve_price": 34_562_304,
        "total_fee_minus_distributions": 0,
        "net_revenue_since_last_funding": 0,
        "base_asset_reserve": A * 10,
        "min_base_asset_reserve": 0,
        "max_base_asset_reserve": A * 100_000,
        "mark_std": 0,
        "oracle_std": 0,
        "long_intensity_volume": 0,
        "short_intensity_volume": 0,
        "volume_24h": 0,
        "amm_inventory_spread_adjustment": 0,
    }


def test_calculate_spread_vectors() -> None:
    base = _base_spread_inputs()
    # an empty fee pool widens both halves of the base spread 10x
    assert spread(base) == (1000 * 10 // 2, 1000 * 10 // 2)

    base["terminal_quote_asset_reserve"] -= A
    base["base_asset_amount_with_amm"] += A
    assert spread(base, max_spread=1000 * 20) == (16667, 3333)

    # oracle 5% below the reserve price, 1% confidence
    base["last_oracle_reserve_price_spread_pct"] = BID_ASK_SPREAD_PRECISION // 20
    base["last_oracle_conf_pct"] = BID_ASK_SPREAD_PRECISION // 100
    base["total_fee_minus_distributions"] = QUOTE_PRECISION
    long3, short3 = spread(base)
    assert (long3, short3) == (46869, 60000)
    assert long3 + short3 == 106869

    base["last_oracle_reserve_price_spread_pct"] = -(BID_ASK_SPREAD_PRECISION // 777)
    base["last_oracle_conf_pct"] = 1
    assert spread(base) == (33255, 500)
    # a larger fee pool lowers the leverage scale on the long side only
    assert spread(base, total_fee_minus_distributions=2 * QUOTE_PRECISION) == (27270, 500)


def test_calculate_spread_btc_vectors() -> None:
    base = _base_spread_inputs()
    btc = {
        "base_spread": 500,
        "last_oracle_reserve_price_spread_pct": 62099,
        "last_oracle_conf_pct": 411,
        "quote_asset_reserve": 94280030695,
        "terminal_quote_asset_reserve": 94472846843,
        "peg_multiplier": 21966868000,
        "base_asset_amount_with_amm": -193160000,
        "reserve_price": 21927763871,
        "total_fee_minus_distributions": 50457675,
    }
    assert spread(base, **btc) == (250, 74117)
    btc1 = {
        **btc,
        "last_oracle_reserve_price_spread_pct": 70719,
        "last_oracle_conf_pct": 0,
        "quote_asset_reserve": 92113762421,
        "terminal_quote_asset_reserve": 92306488219,
        "peg_multiplier": 21754071000,
        "base_asset_amount_with_amm": -193060000,
        "reserve_price": 21671071573,
        "total_fee_minus_distributions": 4876326,
    }
    assert spread(base, **btc1) == (211, 200000 - 211)  # capped at max spread


def test_max_reference_price_offset_and_spread_reserves() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=2 * A,
            quote_asset_reserve=2 * A,
            sqrt_k=2 * A,
            peg_multiplier=PEG_PRECISION,
            long_spread=27270,
            short_spread=500,
            max_spread=1000,
            curve_update_intensity=100,
        )
    )
    amm = market.amm
    assert get_max_reference_price_offset(amm) == 0
    amm.curve_update_intensity = 110
    assert get_max_reference_price_offset(amm) == 500  # 10 bps capped at half the max spread
    amm.curve_update_intensity = 200
    assert get_max_reference_price_offset(amm) == 10_000  # at least 1%
    amm.max_spread = 50_000
    assert get_max_reference_price_offset(amm) == 25_000  # half the max spread

    assert calculate_price(amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier) == (
        PRICE_PRECISION
    )
    # ask: 1e6 / (27270 / 2) = 73 -> 2e9 / 73 = 27397260 more quote reserve
    bar_l, qar_l = calculate_spread_reserves(market, PositionDirection.Long)
    bar_s, qar_s = calculate_spread_reserves(market, PositionDirection.Short)
    assert (bar_s, bar_l, qar_l, qar_s) == (2000500125, 1972972973, 2027397260, 1999500000)
    assert calculate_price(qar_l, bar_l, amm.peg_multiplier) == 1027584
    assert calculate_price(qar_s, bar_s, amm.peg_multiplier) == 999500

    amm.reference_price_offset = 1000  # both quotes 10 bps up
    bar_l, qar_l = calculate_spread_reserves(market, PositionDirection.Long)
    bar_s, qar_s = calculate_spread_reserves(market, PositionDirection.Short)
    assert (bar_s, bar_l, qar_l, qar_s) == (1999500124, 1971830986, 2028571428, 2000500000)
    assert calculate_price(qar_l, bar_l, amm.peg_multiplier) == 1028775
    assert calculate_price(qar_s, bar_s, amm.peg_multiplier) == 1000500

    amm.reference_price_offset = -1000
    bar_l, qar_l = calculate_spread_reserves(market, PositionDirection.Long)
    bar_s, qar_s = calculate_spread_reserves(market, PositionDirection.Short)
    assert (bar_s, bar_l, qar_l, qar_s) == (2001501501, 1974025974, 2026315789, 1998499625)
    assert calculate_price(qar_l, bar_l, amm.peg_multiplier) == 1026488
    assert calculate_price(qar_s, bar_s, amm.peg_multiplier) == 998500


def test_calculate_spread_inventory_vectors() -> None:
    base = {
        **_base_spread_inputs(),
        "quote_asset_reserve": A * 9,
        "base_asset_amount_with_amm": -A,
        "total_fee_minus_distributions": 10000 * QUOTE_PRECISION,
        "base_asset_reserve": A * 11,
        "min_base_asset_reserve": A * 7,
        "max_base_asset_reserve": A * 14,
    }
    assert _calculate_market_open_bids_asks(A * 11, A * 7, A * 14) == (4 * A, -3 * A)
    assert spread(base) == (500, 67166)

    base["base_asset_amount_with_amm"] *= 2
    assert spread(base) == (500, 133833)

    base["terminal_quote_asset_reserve"] = A * 11
    base["reserve_price"] = 34_562_304 * 9 // 10
    assert spread(base, total_fee_minus_distributions=QUOTE_PRECISION * 5) == (345, 199655)
    base["total_fee_minus_distributions"] = QUOTE_PRECISION
    assert spread(base) == (110, 199890)

    # no volatility data at all: the volatility term is zero
    assert calculate_long_short_vol_spread(0, 34_562_304, 0, 0, 0, 0, 0)[0] == 0
    assert calculate_spread_inventory_scale(2 * A, A * 11, A * 7, A * 14, 0, 200_000) == (
        133334200000
    )

    net = -base["base_asset_amount_with_amm"]
    assert spread(base, base_asset_amount_with_amm=net) == (199926, 200000 - 199926)
    assert spread(base, base_asset_amount_with_amm=net * 5) == (199951, 200000 - 199951)
    assert spread(
        base,
        base_asset_amount_with_amm=net,
        min_base_asset_reserve=A * 7 // 2,
        max_base_asset_reserve=A * 28,
    ) == (199815, 185)


def test_inventory_liquidity_ratio_and_scale_vectors() -> None:
    ratio = calculate_inventory_liquidity_ratio
    assert ratio(1, 10, 0, 20) == PERCENTAGE_PRECISION // 10
    assert ratio(1000000000, 10000000000, 0, 20000000000) == PERCENTAGE_PRECISION // 10
    assert ratio(-1000000000, 10000000000, 0, 20000000000) == PERCENTAGE_PRECISION // 10
    assert ratio(-1000000000, 10000000000, 5000, 20000000000) == PERCENTAGE_PRECISION // 10
    assert ratio(-1000000000, 10000000000, 5000000, 20000000000) == 100050
    assert ratio(-1000000000, 10000000000, 9000000000, 20000000000) == 1_000_000
    assert ratio(-1000000000, 10000000000, 11000000000, 20000000000) == 1_000_000
    assert ratio(941291801615, 443370320987941, 435296619793629, 453513306290427) == 116587

    scale = calculate_spread_inventory_scale
    assert scale(100000, A + 100000, A // 2, A * 3 // 2, 250, 30000) == 1024000
    assert (
        scale(
            30228000000000000,
            2496788386034912600,
            2443167585342470000,
            2545411471321696000,
            3500,
            100000,
        )
        == 18762285
    )
    iscale = scale(941291801615, 443370320987941, 435296619793629, 453513306290427, 250, 300000)
    assert iscale // BID_ASK_SPREAD_PRECISION == 140
    assert 250 * iscale // BID_ASK_SPREAD_PRECISION == 35226
    assert scale(0, A, A // 10, A * 19 // 10, 250, 300000) == 1_000_000
    assert ratio(450000000, A, A // 10, A * 19 // 10) == 500_000
    iscale = scale(450000000, A, A // 10, A * 19 // 10, 250, 300_000)
    assert (250 * iscale // 1000000, iscale // 1000000) == (150250, 601)
    assert ratio(450000000, A + 450000000, A // 10, A * 19 // 10) == 1_000_000
    iscale = scale(450000000, A + 450000000, A // 10, A * 19 // 10, 250, 300_000)
    assert (250 * iscale // 1000000, iscale // 1000000) == (300000, 1200)


def test_leverage_scale_and_revenue_retreat_vectors() -> None:
    lev = calculate_spread_leverage_scale
    p12_5 = 12_500_000
    assert lev(A, A, 12 * PEG_PRECISION, BASE_PRECISION, p12_5, QUOTE_PRECISION) == 10_000_000
    assert lev(A, A, 12 * PEG_PRECISION, BASE_PRECISION, p12_5, QUOTE_PRECISION * 100) == 1125000
    assert lev(A, A, 12 * PEG_PRECISION, BASE_PRECISION // 100, p12_5, QUOTE_PRECISION) == 1125000
    assert (
        lev(
            A * 1000,
            A * 9999 // 10000,
            12 * PEG_PRECISION,
            BASE_PRECISION,
            12_100_000,
            QUOTE_PRECISION,
        )
        == 1000001
    )
    assert (
        lev(455362349720024, 454386986330347, 11760127, 968409950546, 11869992, 7978239165)
        == 1003087
    )

    rra = calculate_spread_revenue_retreat_amount
    assert rra(250, 30000, 15 * QUOTE_PRECISION + 835) == 0
    assert rra(2150, 30000, 0) == 0
    assert rra(340, 30000, -1) == 0
    assert rra(250, 30000, -10 * QUOTE_PRECISION) == 0
    assert rra(250, 30000, -91 * QUOTE_PRECISION) == 250 * 3 + 160  # 250 * 91 / 25
    assert rra(250, 30000, -14000 * QUOTE_PRECISION) == 30000 // 10


def _vol_inputs(**changes: int) -> dict[str, int]:
    return {
        **_base_spread_inputs(),
        "base_spread": 250,
        "mark_std": 34_000_000 // 50,
        "oracle_std": 34_000_000 // 150,
        "long_intensity_volume": QUOTE_PRECISION * 10_000,
        "short_intensity_volume": QUOTE_PRECISION * 30_000,
        "volume_24h": QUOTE_PRECISION * 40_000,
        **changes,
    }


def test_volatility_spread_vectors() -> None:
    base = _vol_inputs()
    assert calculate_long_short_vol_spread(
        0,
        34_562_304,
        680_000,
        226_666,
        QUOTE_PRECISION * 10_000,
        QUOTE_PRECISION * 30_000,
        QUOTE_PRECISION * 40_000,
    ) == (819, 2459)
    assert _calculate_market_open_bids_asks(A * 10, 0, A * 100_000) == (
        10000000000,
        -99990000000000,
    )
    assert spread(base) == (8190, 24590)  # empty fee pool: 10x the volatility spreads
    assert spread(base, amm_inventory_spread_adjustment=-50) == (4095, 12295)
    assert spread(base, amm_inventory_spread_adjustment=-100) == (819, 2459)
    assert spread(base, total_fee_minus_distributions=1000) == (819, 2459)
    assert spread(
        base, total_fee_minus_distributions=1000, base_asset_amount_with_amm=BASE_PRECISION
    ) == (
        197666,
        2334,
    )
    assert spread(
        base, total_fee_minus_distributions=1000, base_asset_amount_with_amm=-BASE_PRECISION
    ) == (
        819,
        22458,
    )


def test_volatility_with_oracle_gap_vectors() -> None:
    base = _vol_inputs(
        last_oracle_reserve_price_spread_pct=5000,
        last_oracle_conf_pct=250,
        terminal_quote_asset_reserve=A * 9,
        min_base_asset_reserve=A * 7,
        max_base_asset_reserve=A * 13,
    )
    assert calculate_long_short_vol_spread(
        250,
        34_562_304,
        680_000,
        226_666,
        QUOTE_PRECISION * 10_000,
        QUOTE_PRECISION * 30_000,
        QUOTE_PRECISION * 40_000,
    ) == (819, 2459)
    assert spread(base) == (8190, 74590)
    assert spread(base, total_fee_minus_distributions=1000) == (819, 7459)
    assert spread(
        base, total_fee_minus_distributions=1000, base_asset_amount_with_amm=BASE_PRECISION
    ) == (
        197814,
        2186,
    )
    assert spread(
        base, total_fee_minus_distributions=1000, base_asset_amount_with_amm=-BASE_PRECISION
    ) == (
        819,
        74125,
    )


def test_various_spread_vectors_match_the_sdk() -> None:
    assert calculate_spread(
        300,
        0,
        484,
        47500,
        923807816209694,
        925117623772584,
        13731157,
        -1314027016625,
        13667686,
        115876379475,
        91316628,
        928097825691666,
        907979542352912,
        945977491145601,
        161188,
        1459632439,
        12358265776,
        72230366233,
        432067603632,
        0,
    ) == (89746, 910254)
    assert calculate_spread(
        300,
        0,
        341,
        47500,
        923813838283625,
        925117620897828,
        13715312,
        -1307974136691,
        13652092,
        115857021791,
        71958944,
        928091775691666,
        907979545174412,
        945977494085178,
        11581,
        54284474,
        9520659647,
        53979922148,
        427588331503,
        0,
    ) == (11068, 135916)


@pytest.mark.parametrize(
    ("peg", "ask_price", "bid_price"),
    [
        (PEG_PRECISION // 30, 50001, 33000),  # the ask never quotes below $0.05
        (PEG_PRECISION - PEG_PRECISION // 1000, 1_000_000, 949981),  # $1 max, bid under $0.95
    ],
)
def test_prediction_market_spread_reserves(peg: int, ask_price: int, bid_price: int) -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=2 * A,
            quote_asset_reserve=2 * A,
            sqrt_k=2 * A,
            peg_multiplier=peg,
            long_spread=10000,
            short_spread=10000,
            base_spread=10000,
            max_spread=100000,
            curve_update_intensity=100,
        ),
        contract_type=ContractType.Prediction,
    )
    ask_b, ask_q = calculate_spread_reserves(market, PositionDirection.Long)
    bid_b, bid_q = calculate_spread_reserves(market, PositionDirection.Short)
    assert calculate_price(ask_q, ask_b, peg) == ask_price
    assert calculate_price(bid_q, bid_b, peg) == bid_price


def test_amm_spread_adjustment() -> None:
    # cp_curve/tests.rs amm_spread_adj_logic: intensity 0, so each side is half the base spread
    market = program_market(
        default_test_amm(
            terminal_quote_asset_reserve=999900009999000 * A,
            peg_multiplier=50_000_000_000,
            base_asset_amount_with_amm=A // 10,
            base_asset_amount_long=A // 10,
            order_step_size=5,
            base_spread=100,
            max_spread=10000,
        ),
        margin_ratio_initial=1000,
    )
    price = reserve_price(market.amm)
    for adjustment, expected in ((0, 50), (-100, 1), (100, 100), (20, 60), (120, 110)):
        market.amm.amm_spread_adjustment = adjustment
        update_spreads(market, price, None)
        assert (market.amm.long_spread, market.amm.short_spread) == (expected, expected)


def test_update_spreads_stores_reserves_on_their_sides() -> None:
    market = program_market(default_test_amm(base_spread=1000))
    update_spreads(market, reserve_price(market.amm), None)
    amm = market.amm
    assert (amm.long_spread, amm.short_spread) == (500, 500)
    # 1e6 / 250 = 4000 -> the quote reserve moves by 100e9 / 4000 = 25e6 each way
    assert amm.ask_quote_asset_reserve == 100 * A + 25_000_000
    assert amm.bid_quote_asset_reserve == 100 * A - 25_000_000
    assert amm.ask_base_asset_reserve == (100 * A) ** 2 // (100 * A + 25_000_000)
    assert amm.bid_base_asset_reserve == (100 * A) ** 2 // (100 * A - 25_000_000)
    # the stored spreads quote 5 bps either side of $1
    assert bid_ask_price(amm, reserve_price(amm)) == (999_500, 1_000_500)


_u32 = st.integers(min_value=0, max_value=200_000)


@settings(max_examples=300, deadline=None)
@given(
    base_spread=st.integers(min_value=0, max_value=20_000),
    oracle_gap=st.integers(min_value=-200_000, max_value=200_000),
    conf=st.integers(min_value=0, max_value=50_000),
    max_spread=st.integers(min_value=1, max_value=500_000),
    net=st.integers(min_value=-50 * A, max_value=50 * A),
    tfmd=st.integers(min_value=-(10**9), max_value=10**12),
    net_revenue=st.integers(min_value=-(10**11), max_value=10**9),
    mark_std=st.integers(min_value=0, max_value=10**7),
    oracle_std=st.integers(min_value=0, max_value=10**7),
    long_volume=st.integers(min_value=0, max_value=10**12),
    short_volume=st.integers(min_value=0, max_value=10**12),
    adjustment=st.integers(min_value=-100, max_value=100),
)
def test_spreads_always_within_max_target_spread(
    base_spread: int,
    oracle_gap: int,
    conf: int,
    max_spread: int,
    net: int,
    tfmd: int,
    net_revenue: int,
    mark_std: int,
    oracle_std: int,
    long_volume: int,
    short_volume: int,
    adjustment: int,
) -> None:
    reserve = 1000 * A - net
    price = 25_000_000
    args: dict[str, Any] = {
        "base_spread": base_spread,
        "last_oracle_reserve_price_spread_pct": oracle_gap,
        "last_oracle_conf_pct": conf,
        "max_spread": max_spread,
        "quote_asset_reserve": (1000 * A) ** 2 // reserve,
        "terminal_quote_asset_reserve": 1000 * A,
        "peg_multiplier": price,
        "base_asset_amount_with_amm": net,
        "reserve_price": price,
        "total_fee_minus_distributions": tfmd,
        "net_revenue_since_last_funding": net_revenue,
        "base_asset_reserve": reserve,
        "min_base_asset_reserve": 700 * A,
        "max_base_asset_reserve": 1400 * A,
        "mark_std": mark_std,
        "oracle_std": oracle_std,
        "long_intensity_volume": long_volume,
        "short_intensity_volume": short_volume,
        "volume_24h": long_volume + short_volume,
        "amm_inventory_spread_adjustment": adjustment,
    }
    long_spread, short_spread = spread(args)
    cap = calculate_max_target_spread(price, oracle_gap, conf, mark_std, oracle_std, max_spread)
    assert long_spread >= 0
    assert short_spread >= 0
    assert long_spread + short_spread <= cap


@settings(max_examples=300, deadline=None)
@given(long_spread=_u32, short_spread=_u32, max_spread=st.integers(0, 400_000))
def test_cap_to_max_spread_property(long_spread: int, short_spread: int, max_spread: int) -> None:
    capped_long, capped_short = cap_to_max_spread(long_spread, short_spread, max_spread)
    assert capped_long >= 0
    assert capped_short >= 0
    assert capped_long + capped_short <= max_spread
    if long_spread + short_spread <= max_spread:
        assert (capped_long, capped_short) == (long_spread, short_spread)
    else:
        assert capped_long + capped_short == max_spread
