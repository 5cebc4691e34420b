"""BAL provider math (:mod:`protocol.math.lp`): LP open bids/asks (seed 004's worked numbers),
settlement amounts, the per-LP split of a fill and its 80% fee slice, the simulated settled
position and the margin it needs.

Vectors marked "program" reproduce the inputs and outputs of the program's
``math/lp/tests.rs`` and ``controller/position/tests.rs`` (its versions with BAL providers).
"""

from __future__ import annotations

from typing import Any

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    MARGIN_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.math.amm import can_lower_k, get_lower_bound_sqrt_k
from protocol.math.lp import (
    calculate_lp_base_delta,
    calculate_lp_open_bids_asks,
    calculate_per_lp_delta,
    calculate_settle_lp_metrics,
    calculate_settled_lp_base_quote,
    get_proportion_i128,
    margin_requirement_for_lp_shares,
    simulate_settled_lp_position,
)
from protocol.math.margin import calculate_perp_position_value_and_pnl
from protocol.math.orders import PositionDelta
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import PerpPosition
from protocol.types import MarginRequirementType

R = AMM_RESERVE_PRECISION
B = BASE_PRECISION
Q = QUOTE_PRECISION


def _market(**amm_fields: Any) -> PerpMarket:
    fields: dict[str, Any] = {
        "oracle": "SOL/USD",
        "base_asset_reserve": 100 * R,
        "quote_asset_reserve": 100 * R,
        "sqrt_k": 100 * R,
        "peg_multiplier": PEG_PRECISION,
        "order_step_size": 1,
        **amm_fields,
    }
    return PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(**fields))


# --- seed 004: LP open bids/asks ------------------------------------------------------------------
def test_seed_reserves_mid_bounds_give_equal_open_bids_and_asks() -> None:
    # bounds 0 / 100, base reserve 50, the LP holds all of sqrt_k: the reserve can fall by 50
    # (bids) or rise by 50 (asks) -> 50 open bids, 50 open asks
    market = _market(
        base_asset_reserve=50 * R, min_base_asset_reserve=0, max_base_asset_reserve=100 * R
    )
    market.amm.sqrt_k = 50 * R
    position = PerpPosition(0, lp_shares=50 * R)
    assert calculate_lp_open_bids_asks(position, market) == (50 * B, -50 * B)


def test_seed_reserves_at_a_quarter_give_more_asks_than_bids() -> None:
    # bounds 0 / 100, base reserve 25, all of the liquidity: bids 25 - 0 = 25, asks
    # 100 - 25 = 75
    market = _market(
        base_asset_reserve=25 * R, min_base_asset_reserve=0, max_base_asset_reserve=100 * R
    )
    market.amm.sqrt_k = 50 * R
    position = PerpPosition(0, lp_shares=50 * R)
    assert calculate_lp_open_bids_asks(position, market) == (25 * B, -75 * B)


def test_lp_open_orders_scale_with_the_share_of_liquidity() -> None:
    # the same reserves with half of sqrt_k: 25 / 2 = 12.5 bids, 75 / 2 = 37.5 asks
    market = _market(
        base_asset_reserve=25 * R, min_base_asset_reserve=0, max_base_asset_reserve=100 * R
    )
    market.amm.sqrt_k = 50 * R
    position = PerpPosition(0, lp_shares=25 * R)
    assert calculate_lp_open_bids_asks(position, market) == (12_500_000_000, -37_500_000_000)


def test_program_lp_open_bids_asks_vectors() -> None:
    # program: 100 of 200 shares; reserve 10 in [0, 100] -> bids 10 * 100 / 200 = 5,
    # asks -90 * 100 / 200 = -45; at reserve 0 no more bids, asks -100 / 2 = -50; at the max
    # bound 10 no more asks
    position = PerpPosition(0, lp_shares=100)
    simple = _market(base_asset_reserve=10, max_base_asset_reserve=100, sqrt_k=200)
    assert calculate_lp_open_bids_asks(position, simple) == (5, -45)
    max_ask = _market(base_asset_reserve=0, max_base_asset_reserve=100, sqrt_k=200)
    assert calculate_lp_open_bids_asks(position, max_ask) == (0, -50)
    max_bid = _market(base_asset_reserve=10, max_base_asset_reserve=10, sqrt_k=200)
    assert calculate_lp_open_bids_asks(position, max_bid) == (5, 0)


# --- get_proportion_i128 --------------------------------------------------------------------------
def test_get_proportion_i128_truncates_toward_zero() -> None:
    # -7 * 1 / 2 = -3.5: Rust truncates to -3 (Python's floor division would give -4)
    assert get_proportion_i128(-7, 1, 2) == -3
    assert get_proportion_i128(7, 1, 2) == 3
    # numerator > denominator / 2 (the program's ceiling branch) still yields the truncation:
    # -10 * 8 / 10 = -8, -9 * 8 / 10 = -7.2 -> -7
    assert get_proportion_i128(-10, 8, 10) == -8
    assert get_proportion_i128(-9, 8, 10) == -7


# --- settlement amounts ---------------------------------------------------------------------------
def test_program_settled_lp_base_quote() -> None:
    # program: 100 shares (BASE_PRECISION each), per-share totals +10 / -10 since the last
    # settlement -> 10 * 100 base, -10 * 100 quote; and the short mirror
    position = PerpPosition(0, lp_shares=100 * B)
    long_amm = _market(base_asset_amount_per_lp=10, quote_asset_amount_per_lp=-10).amm
    assert calculate_settled_lp_base_quote(long_amm, position) == (1_000, -1_000)
    short_amm = _market(base_asset_amount_per_lp=-10, quote_asset_amount_per_lp=10).amm
    assert calculate_settled_lp_base_quote(short_amm, position) == (-1_000, 1_000)


def test_settled_lp_base_quote_counts_only_the_change_since_the_last_settlement() -> None:
    # totals -50_000 / 5_003 per share, last seen -20_000 / 1_000: on 3 shares (3e9)
    # (-30_000 * 3e9) / 1e9 = -90_000 base, (4_003 * 3e9) / 1e9 = 12_009 quote
    position = PerpPosition(
        0,
        lp_shares=3 * R,
        last_base_asset_amount_per_lp=-20_000,
        last_quote_asset_amount_per_lp=1_000,
    )
    amm = _market(base_asset_amount_per_lp=-50_000, quote_asset_amount_per_lp=5_003).amm
    assert calculate_settled_lp_base_quote(amm, position) == (-90_000, 12_009)


def test_program_settle_lp_metrics_steps_and_remainders() -> None:
    # program: step 1 -> all 1_000 base settles; step 5_000 -> none, 1_000 remainder;
    # 1 share with per-share 10 and step 3 -> 9 base, 1 remainder
    amm = _market(base_asset_amount_per_lp=10, quote_asset_amount_per_lp=-10).amm
    position = PerpPosition(0, lp_shares=100 * B)
    metrics = calculate_settle_lp_metrics(amm, position)
    assert (metrics.base_asset_amount, metrics.quote_asset_amount) == (1_000, -1_000)
    assert metrics.remainder_base_asset_amount == 0

    amm.order_step_size = 5_000
    metrics = calculate_settle_lp_metrics(amm, position)
    assert (metrics.base_asset_amount, metrics.quote_asset_amount) == (0, -1_000)
    assert metrics.remainder_base_asset_amount == 1_000

    amm.order_step_size = 3
    metrics = calculate_settle_lp_metrics(amm, PerpPosition(0, lp_shares=B))
    assert (metrics.base_asset_amount, metrics.quote_asset_amount) == (9, -10)
    assert metrics.remainder_base_asset_amount == 1


def test_settle_lp_metrics_remainder_keeps_the_sign_of_a_short() -> None:
    # -9_900_000 base (0.0099 short) with step 10_000_000: no whole step, remainder -9_900_000
    amm = _market(base_asset_amount_per_lp=-100_000, order_step_size=10_000_000).amm
    metrics = calculate_settle_lp_metrics(amm, PerpPosition(0, lp_shares=99 * R))
    assert (metrics.base_asset_amount, metrics.remainder_base_asset_amount) == (0, -9_900_000)


# --- the per-LP split of a fill -------------------------------------------------------------------
def test_program_full_lp_split_per_share_amounts() -> None:
    # program (full_lp_split): a user long 10 base for -10 quote (both at 1e9) on sqrt_k 100:
    # per share 10e9 * 1e9 / 100e9 = 1e8 base and -1e8 quote (user side; the LPs take the
    # negation); all 100 shares are LPs' -> 1e8 * 100e9 / 1e9 = 10e9 base moved to them
    amm = _market(user_lp_shares=100 * R).amm
    delta = PositionDelta(quote_asset_amount=-10 * B, base_asset_amount=10 * B)
    assert calculate_per_lp_delta(amm, delta, 0) == (100_000_000, -100_000_000, 0)
    assert calculate_lp_base_delta(amm, 100_000_000) == 10 * B
    # half the liquidity (sqrt_k 200, 100 LP shares): 5e7 per share, 5e9 to the LPs
    half = _market(user_lp_shares=100 * R, sqrt_k=200 * R).amm
    assert calculate_per_lp_delta(half, delta, 0) == (50_000_000, -50_000_000, 0)
    assert calculate_lp_base_delta(half, 50_000_000) == 5 * B


def test_per_lp_quote_rounds_against_the_lps_when_they_buy() -> None:
    # a user sells 1 base for 3 quote on sqrt_k 7e9: per share base -1e9 * 1e9 / 7e9 =
    # -142_857_142 (truncated toward zero), quote 3 * 1e9 / 7e9 = 0, +1 because the LPs buy
    amm = _market(sqrt_k=7 * R, user_lp_shares=7 * R).amm
    delta = PositionDelta(quote_asset_amount=3, base_asset_amount=-B)
    assert calculate_per_lp_delta(amm, delta, 0) == (-142_857_142, 1, 0)


def test_seed_fee_slice_is_80_percent_pro_rata() -> None:
    # seed 004: a $1,000 fill whose fee to the market after the filler reward is $1 (10 bps).
    # 80% = 800_000 spread over sqrt_k 200e9: 800_000 * 1e9 / 200e9 = 4_000 per share.
    delta = PositionDelta(quote_asset_amount=-1_000 * Q, base_asset_amount=10 * B)
    full = _market(sqrt_k=200 * R, user_lp_shares=200 * R).amm
    _, _, per_lp_fee = calculate_per_lp_delta(full, delta, Q)
    assert per_lp_fee == 4_000
    # fully LP-collateralised: 4_000 * 200e9 / 1e9 = 800_000 = $0.80, 8 bps of $1,000
    assert per_lp_fee * full.user_lp_shares // R == 800_000
    # half collateralised (100 of 200): 4_000 * 100e9 / 1e9 = $0.40, 4 bps
    half = _market(sqrt_k=200 * R, user_lp_shares=100 * R).amm
    _, _, per_lp_fee = calculate_per_lp_delta(half, delta, Q)
    assert per_lp_fee * half.user_lp_shares // R == 400_000
    # no fee (or a negative one, which the market pays) gives the LPs nothing
    assert calculate_per_lp_delta(full, delta, 0)[2] == 0
    assert calculate_per_lp_delta(full, delta, -Q)[2] == 0


# --- the margin view ------------------------------------------------------------------------------
def test_simulated_settled_position_adds_lp_base_quote_dust_and_open_orders() -> None:
    # 99 of 100 shares with -100_000 / +10_000 per share unsettled: base -9_900_000 (under the
    # 10_000_000 step: all remainder), quote 10_000 * 99 = 990_000. The remainder is charged
    # at $100: 9_900_000 * 100e6 / 1e12 = 990_000, +1 -> quote 990_000 - 990_001 = -1.
    # Open orders: reserve 100 in [80, 125] -> bids 20 * 99 / 100 = 19.8, asks -24.75
    market = _market(
        base_asset_amount_per_lp=-100_000,
        quote_asset_amount_per_lp=10_000,
        order_step_size=10_000_000,
        min_base_asset_reserve=80 * R,
        max_base_asset_reserve=125 * R,
    )
    position = PerpPosition(0, lp_shares=99 * R, open_bids=B)
    settled = simulate_settled_lp_position(position, market, 100 * PRICE_PRECISION)
    assert (settled.base_asset_amount, settled.quote_asset_amount) == (0, -1)
    assert (settled.open_bids, settled.open_asks) == (B + 19_800_000_000, -24_750_000_000)
    assert settled is not position and position.open_bids == B  # the position is untouched


def test_simulated_position_settles_the_steps_a_carried_remainder_completes() -> None:
    # carried remainder -6_000_000 plus a new -9_900_000 = -15_900_000: one whole step of
    # -10_000_000 settles, -5_900_000 stays and is charged at $100: 590_000 + 1
    market = _market(
        base_asset_amount_per_lp=-100_000,
        quote_asset_amount_per_lp=10_000,
        order_step_size=10_000_000,
        max_base_asset_reserve=100 * R,
        min_base_asset_reserve=100 * R,
    )
    position = PerpPosition(0, lp_shares=99 * R, remainder_base_asset_amount=-6_000_000)
    settled = simulate_settled_lp_position(position, market, 100 * PRICE_PRECISION)
    assert settled.base_asset_amount == -10_000_000
    assert settled.quote_asset_amount == 990_000 - 590_001


def test_a_position_without_shares_is_its_own_simulation() -> None:
    position = PerpPosition(0, base_asset_amount=B, quote_asset_amount=-100 * Q)
    assert simulate_settled_lp_position(position, _market(), PRICE_PRECISION) is position


def test_margin_requirement_for_lp_shares_is_at_least_a_dollar() -> None:
    # one step of 0.01 at $100 is $1; at $250 it is $2.50; no shares need nothing
    lp = PerpPosition(0, lp_shares=1)
    assert margin_requirement_for_lp_shares(lp, 10_000_000, 100 * PRICE_PRECISION) == Q
    assert margin_requirement_for_lp_shares(lp, 10_000_000, 250 * PRICE_PRECISION) == 2_500_000
    assert margin_requirement_for_lp_shares(lp, 10_000_000, PRICE_PRECISION) == Q
    assert margin_requirement_for_lp_shares(PerpPosition(0), 10_000_000, 100 * Q) == 0


def test_seed_lp_margin_follows_the_larger_open_side() -> None:
    # seed 004: all of the liquidity, bounds 0 / 100, oracle $1, initial margin 10%.
    # Reserve 50: worst case 50 base -> $50 * 10% = $5, plus the $1 LP minimum = $6.
    # Reserve 25: asks 75 > bids 25 -> $75 * 10% = $7.50 + $1 = $8.50 (75 > 50).
    oracle = OraclePriceData(price=PRICE_PRECISION, confidence=0, delay=0)
    requirements = []
    for reserve in (50, 25):
        market = _market(
            base_asset_reserve=reserve * R,
            quote_asset_reserve=2_500 * R // reserve,
            sqrt_k=50 * R,
            min_base_asset_reserve=0,
            max_base_asset_reserve=100 * R,
        )
        market.margin_ratio_initial = MARGIN_PRECISION // 10
        position = PerpPosition(0, lp_shares=50 * R)
        requirement, pnl, liability, _ = calculate_perp_position_value_and_pnl(
            position, market, oracle, PRICE_PRECISION, MarginRequirementType.Initial, 0
        )
        assert pnl == 0
        requirements.append((requirement, liability))
    assert requirements == [(6 * Q, 50 * Q), (8_500_000, 75 * Q)]


# --- k changes leave the LPs' shares alone ------------------------------------------------------
def test_can_lower_k_only_within_the_protocol_owned_liquidity() -> None:
    # reserve 100 in [50, 200]: the AMM can still buy 50 and sell 100; users are 20 long.
    # Without LPs, 20 < min(50, 100) and max(20, 1) < sqrt_k 100: k may shrink. With 90 of the
    # 100 shares the LPs', the protocol owns only 10 < 20: it may not.
    market = _market(
        min_base_asset_reserve=50 * R,
        max_base_asset_reserve=200 * R,
        base_asset_amount_with_amm=20 * B,
        min_order_size=1,
    )
    assert can_lower_k(market.amm)
    market.amm.user_lp_shares = 90 * R
    assert not can_lower_k(market.amm)


def test_lower_bound_sqrt_k_keeps_the_lp_shares_plus_a_tenth_of_a_percent() -> None:
    # 50 LP shares: bound max(50e9 + 50e9 / 1000, 1, |20e9|) = 50_050_000_000 < sqrt_k 100e9
    market = _market(user_lp_shares=50 * R, base_asset_amount_with_amm=20 * B, min_order_size=1)
    assert get_lower_bound_sqrt_k(market.amm) == 50_050_000_000
    market.amm.user_lp_shares = 0
    assert get_lower_bound_sqrt_k(market.amm) == 20 * B
