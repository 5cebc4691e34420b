"""Fill fees (``protocol/math/fees.py``).

Vectors marked "program" reproduce ``math/fees/tests.rs`` and ``math/matching/tests.rs``; the
rest are worked by hand in the comments. Quote amounts QUOTE_PRECISION (1e6); fee numerators
over FEE_DENOMINATOR (1e5); the filler multiplier in TEN_BPS (1000 = 1x).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import (
    FEE_DENOMINATOR,
    FEE_PERCENTAGE_DENOMINATOR,
    MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import CastingError, MathError
from protocol.math.fees import (
    FillFees,
    calculate_fee_for_fulfillment_with_amm,
    calculate_fee_for_fulfillment_with_match,
    calculate_filler_multiplier_for_matched_orders,
    calculate_filler_reward,
    calculate_maker_rebate,
    calculate_taker_fee,
    determine_perp_fee_tier,
    determine_spot_fee_tier,
    determine_user_fee_tier,
)
from protocol.state.state import FeeStructure, FeeTier, OrderFillerRewardStructure
from protocol.state.user import UserFees, UserStats
from protocol.types import MarketType, PositionDirection

Q = QUOTE_PRECISION
AUTHORITY = bytes(32)
HUNDRED = 100 * Q


def _stats(**fields: int) -> UserStats:
    return UserStats(authority=AUTHORITY, **fields)


def _test_default() -> FeeStructure:
    """The program's ``FeeStructure::test_default()``: one tier (10 bps taker, 6 bps maker,
    10% referrer, 10% referee discount), the other tiers zero; filler 10% of the fee with a
    1-cent time-based floor."""
    return FeeStructure(
        fee_tiers=(
            FeeTier(
                fee_numerator=100,
                maker_rebate_numerator=60,
                referrer_reward_numerator=10,
                referee_fee_numerator=10,
            ),
        ),
        filler_reward_structure=OrderFillerRewardStructure(
            reward_numerator=10,
            reward_denominator=FEE_PERCENTAGE_DENOMINATOR,
            time_based_reward_lower_bound=10_000,
        ),
    )


def _with_filler(fs: FeeStructure, **fields: int) -> FeeStructure:
    return replace(fs, filler_reward_structure=replace(fs.filler_reward_structure, **fields))


def _match(
    fs: FeeStructure,
    *,
    clock_slot: int = 0,
    multiplier: int = 0,
    referrer: bool = False,
    fee_adjustment: int = 0,
    hlm: bool = False,
) -> FillFees:
    return calculate_fee_for_fulfillment_with_match(
        _stats(),
        _stats(),
        HUNDRED,
        fs,
        0,
        clock_slot,
        multiplier,
        referrer,
        None,
        MarketType.Perp,
        fee_adjustment,
        hlm,
    )


def _amm(
    fs: FeeStructure,
    *,
    reward_filler: bool = False,
    referrer: bool = False,
    fee_adjustment: int = 0,
    hlm: bool = False,
    surplus: int = 0,
    post_only: bool = False,
    clock_slot: int = 60,
    referrer_stats: UserStats | None = None,
) -> FillFees:
    return calculate_fee_for_fulfillment_with_amm(
        _stats(),
        HUNDRED,
        fs,
        0,
        clock_slot,
        reward_filler,
        referrer,
        referrer_stats,
        surplus,
        post_only,
        fee_adjustment,
        hlm,
    )


def _split(f: FillFees) -> tuple[int, int, int, int, int, int]:
    return (
        f.user_fee,
        f.maker_rebate,
        f.fee_to_market,
        f.filler_reward,
        f.referrer_reward,
        f.referee_discount,
    )


# --- taker matched with a maker (program: calculate_fee_for_taker_and_maker) --------------------


@pytest.mark.parametrize(
    ("kwargs", "filler_fields", "expected"),
    [
        # no_filler: 10 bps of $100 = 100_000; 6 bps rebate = 60_000; the market keeps 40_000
        ({}, {}, (100_000, 60_000, 40_000, 0, 0, 0)),
        # filler_size_reward: a huge time floor makes the size share (10% of the fee) win
        (
            {"multiplier": 1},
            {"time_based_reward_lower_bound": 10**16},
            (100_000, 60_000, 30_000, 10_000, 0, 0),
        ),
        # time_reward_no_time_passed: the share is the whole fee; 1 slot: 4th root(1e8) = 100,
        # 100 * 10_000 / 100 = 10_000
        (
            {"multiplier": 1},
            {"reward_numerator": 1, "reward_denominator": 1},
            (100_000, 60_000, 30_000, 10_000, 0, 0),
        ),
        # time_reward_time_passed: 60 slots: 4th root(6e9) = 278, 278 * 10_000 / 100 = 27_800
        (
            {"multiplier": 1, "clock_slot": 60},
            {"reward_numerator": 1, "reward_denominator": 1},
            (100_000, 60_000, 12_200, 27_800, 0, 0),
        ),
        # referrer: 10% off the taker fee, 10% of the (undiscounted) fee to the referrer
        ({"referrer": True}, {}, (90_000, 60_000, 20_000, 0, 10_000, 10_000)),
        # fee_adjustment -50: fee 100_000 - 50_000, rebate 60_000 - 30_000
        ({"fee_adjustment": -50}, {}, (50_000, 30_000, 20_000, 0, 0, 0)),
        ({"fee_adjustment": 50}, {}, (150_000, 90_000, 60_000, 0, 0, 0)),
        (
            {"fee_adjustment": -50, "referrer": True},
            {},
            (45_000, 30_000, 10_000, 0, 5_000, 5_000),
        ),
        # filler: 10% of the discounted 45_000 = 4_500 (the 1-slot time reward is 10_000)
        (
            {"fee_adjustment": -50, "referrer": True, "multiplier": 1},
            {},
            (45_000, 30_000, 5_500, 4_500, 5_000, 5_000),
        ),
        # fee_adjustment_free: -100 makes everything free, whatever else applies
        ({"fee_adjustment": -100}, {}, (0, 0, 0, 0, 0, 0)),
        ({"fee_adjustment": -100, "hlm": True}, {}, (0, 0, 0, 0, 0, 0)),
        ({"fee_adjustment": -100, "referrer": True}, {}, (0, 0, 0, 0, 0, 0)),
        ({"fee_adjustment": -100, "referrer": True, "multiplier": 1}, {}, (0, 0, 0, 0, 0, 0)),
        # high_leverage_mode: the taker pays double (2 * 50_000); the maker's rebate does not
        # double; the filler gets 10% of 100_000
        (
            {"fee_adjustment": -50, "hlm": True, "multiplier": 1},
            {},
            (100_000, 30_000, 60_000, 10_000, 0, 0),
        ),
    ],
)
def test_fee_for_fulfillment_with_match_program_vectors(
    kwargs: dict[str, int], filler_fields: dict[str, int], expected: tuple[int, ...]
) -> None:
    fs = _with_filler(_test_default(), **filler_fields)
    fees = _match(fs, **kwargs)
    assert _split(fees) == expected
    assert fees.fee_to_market_for_lp == 0


def test_match_uses_the_makers_own_tier_for_the_rebate() -> None:
    # perps_default tiers: tier 0 (volume < $2M) rebate 20, tier 5 (volume >= $200M) rebate 20,
    # but a $50K stake raises a maker's rebate 20% (20 + 20/5 = 24): 100e6 * 24 / 1e5 = 24_000.
    fs = FeeStructure.perps_default()
    maker = _stats(if_staked_quote_asset_amount=50_000 * Q)
    fees = calculate_fee_for_fulfillment_with_match(
        _stats(), maker, HUNDRED, fs, 0, 0, 0, False, None, MarketType.Perp, 0
    )
    assert (fees.user_fee, fees.maker_rebate, fees.fee_to_market) == (100_000, 24_000, 76_000)
    # without the maker's stats the taker's (unstaked) tier decides: rebate 20_000
    fees = calculate_fee_for_fulfillment_with_match(
        _stats(), None, HUNDRED, fs, 0, 0, 0, False, None, MarketType.Perp, 0
    )
    assert fees.maker_rebate == 20_000


def test_match_fee_to_market_cannot_go_negative() -> None:
    # a rebate above the fee (maker 15 bps vs taker 10 bps) would leave the market -50_000
    fs = FeeStructure(fee_tiers=(FeeTier(fee_numerator=100, maker_rebate_numerator=150),))
    with pytest.raises(MathError):
        _match(fs)


# --- against the AMM (program: calculate_fee_for_order_fulfill_against_amm) ----------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # referrer: taker pays 90_000; 10_000 to the referrer; 80_000 to the market
        ({"referrer": True}, (90_000, 0, 80_000, 0, 10_000, 10_000)),
        ({"fee_adjustment": -50}, (50_000, 0, 50_000, 0, 0, 0)),
        ({"fee_adjustment": 50}, (150_000, 0, 150_000, 0, 0, 0)),
        ({"fee_adjustment": -50, "referrer": True}, (45_000, 0, 40_000, 0, 5_000, 5_000)),
        # filler: min(10% of 45_000, 60-slot time reward 27_800) = 4_500
        (
            {"fee_adjustment": -50, "referrer": True, "reward_filler": True},
            (45_000, 0, 35_500, 4_500, 5_000, 5_000),
        ),
        # high_leverage_mode: 2 * 50_000
        ({"fee_adjustment": -50, "hlm": True}, (100_000, 0, 100_000, 0, 0, 0)),
    ],
)
def test_fee_for_fulfillment_with_amm_program_vectors(
    kwargs: dict[str, int], expected: tuple[int, ...]
) -> None:
    assert _split(_amm(_test_default(), **kwargs)) == expected


def test_amm_taker_surplus_goes_to_the_market_not_the_lp_share() -> None:
    # fee 100_000 + the AMM's 25_000 surplus over the fill price: the market gets 125_000, of
    # which 100_000 came from fees
    fees = _amm(_test_default(), surplus=25_000)
    assert (fees.user_fee, fees.fee_to_market, fees.fee_to_market_for_lp) == (
        100_000,
        125_000,
        100_000,
    )


def test_amm_post_only_maker_is_paid_from_the_surplus() -> None:
    # A post-only order filled by the AMM pays nothing; its rebate (6 bps = 60_000) comes out
    # of the AMM's surplus 100_000, leaving 40_000. Filler: min(10% = 4_000, 1 slot = 10_000).
    fees = _amm(_test_default(), post_only=True, surplus=100_000, reward_filler=True, clock_slot=0)
    assert _split(fees) == (0, 60_000, 36_000, 4_000, 0, 0)
    assert fees.fee_to_market_for_lp == 0


def test_amm_post_only_surplus_must_cover_the_rebate() -> None:
    with pytest.raises(MathError):
        _amm(_test_default(), post_only=True, surplus=59_999)
    with pytest.raises(CastingError) as excinfo:
        _amm(_test_default(), post_only=True, surplus=-1)
    assert excinfo.value.code == ErrorCode.CastingFailure


def test_referrer_reward_capped_by_the_epoch_allowance() -> None:
    # perps_default tier 0: fee 100_000; referee discount 5% = 5_000; referrer 15% = 15_000,
    # but only 3_000 is left of the referrer's epoch allowance. Market: 95_000 - 3_000.
    referrer = _stats(
        fees=UserFees(current_epoch_referrer_reward=MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND - 3_000)
    )
    fees = _amm(FeeStructure.perps_default(), referrer=True, referrer_stats=referrer)
    assert _split(fees) == (95_000, 0, 92_000, 0, 3_000, 5_000)
    # an allowance already spent pays nothing (saturating, not negative)
    spent = _stats(
        fees=UserFees(current_epoch_referrer_reward=MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND + 1)
    )
    assert (
        _amm(FeeStructure.perps_default(), referrer=True, referrer_stats=spent).referrer_reward == 0
    )


# --- the pieces ---------------------------------------------------------------------------------


def test_taker_fee_rounds_up_and_rebate_rounds_down() -> None:
    tier = FeeTier(fee_numerator=100, maker_rebate_numerator=20)
    # $0.000001 * 10 bps = 0.001 units: the fee rounds up to 1, the rebate down to 0
    assert calculate_taker_fee(1, tier, 0) == 1
    assert calculate_maker_rebate(1, tier, 0) == 0
    # 12_345 * 100 / 1e5 = 12.345 -> 13 ; 12_345 * 20 / 1e5 = 2.469 -> 2
    assert calculate_taker_fee(12_345, tier, 0) == 13
    assert calculate_maker_rebate(12_345, tier, 0) == 2
    # adjustments: fee 13 -33% cuts trunc(4.29)=4 -> 9; +33% adds ceil(4.29)=5 -> 18;
    # rebate 2 -33% cuts ceil(0.66)=1 -> 1; +33% adds trunc(0.66)=0 -> 2
    assert calculate_taker_fee(12_345, tier, -33) == 9
    assert calculate_taker_fee(12_345, tier, 33) == 18
    assert calculate_maker_rebate(12_345, tier, -33) == 1
    assert calculate_maker_rebate(12_345, tier, 33) == 2


def test_filler_reward_size_branch_and_time_branch() -> None:
    frs = OrderFillerRewardStructure(
        reward_numerator=10, reward_denominator=100, time_based_reward_lower_bound=10_000
    )
    # size branch: 10% of 50_000 = 5_000 < 1-slot time reward 10_000
    assert calculate_filler_reward(50_000, 100, 100, 0, frs) == 5_000
    # time branch: 2 slots: 4th root(2e8) = 118 (118^4 = 193_877_776 <= 2e8 < 119^4);
    # 118 * 10_000 / 100 = 11_800 < 10% of 1_000_000
    assert calculate_filler_reward(1_000_000, 100, 102, 0, frs) == 11_800
    # order slot == clock slot counts as one slot
    assert calculate_filler_reward(1_000_000, 7, 7, 0, frs) == 10_000


def test_filler_reward_multiplier_scales_the_time_floor_between_1x_and_100x() -> None:
    frs = OrderFillerRewardStructure(
        reward_numerator=1, reward_denominator=1, time_based_reward_lower_bound=10_000
    )
    fee = 10 * Q
    # 2x (2_000): floor 20_000; one slot: 100 * 20_000 / 100
    assert calculate_filler_reward(fee, 0, 0, 2_000, frs) == 20_000
    # below 1x counts as 1x
    assert calculate_filler_reward(fee, 0, 0, 1, frs) == 10_000
    # 100x: 1_000_000; above 100x is capped there
    assert calculate_filler_reward(fee, 0, 0, 100_000, frs) == 1_000_000
    assert calculate_filler_reward(fee, 0, 0, 10**9, frs) == 1_000_000


def test_filler_reward_rejects_an_order_from_the_future() -> None:
    with pytest.raises(MathError):
        calculate_filler_reward(1, 10, 9, 0, OrderFillerRewardStructure())


@pytest.mark.parametrize(
    ("maker_price", "direction", "expected"),
    [
        # program filler_multiplier_maker_long: oracle $34
        (34 * PRICE_PRECISION, PositionDirection.Long, 2_000),  # at the oracle: 2x
        (34 * PRICE_PRECISION - 3_400, PositionDirection.Long, 1_900),  # 1 bp worse: 1.9x
        (40 * PRICE_PRECISION, PositionDirection.Long, 100_000),  # far better: capped 100x
        (30 * PRICE_PRECISION, PositionDirection.Long, 1_000),  # far worse: floored 1x
        # program filler_multiplier_maker_short
        (30 * PRICE_PRECISION, PositionDirection.Short, 100_000),
        (40 * PRICE_PRECISION, PositionDirection.Short, 1_000),
        (34 * PRICE_PRECISION + 3_400, PositionDirection.Short, 1_900),
        (34 * PRICE_PRECISION - 3_400, PositionDirection.Short, 2_100),
    ],
)
def test_filler_multiplier_for_matched_orders_program_vectors(
    maker_price: int, direction: PositionDirection, expected: int
) -> None:
    assert (
        calculate_filler_multiplier_for_matched_orders(maker_price, direction, 34 * PRICE_PRECISION)
        == expected
    )


# --- fee tiers (program: calcuate_fee_tiers::test_calc_taker_tiers) ------------------------------


def _tier(fee_numerator: int, fee_denominator: int = FEE_DENOMINATOR) -> FeeTier:
    return FeeTier(
        fee_numerator=fee_numerator,
        fee_denominator=fee_denominator,
        maker_rebate_numerator=25,
        maker_rebate_denominator=FEE_DENOMINATOR * 10,
        referrer_reward_numerator=10,
        referee_fee_numerator=5,
    )


PROGRAM_TIERS = FeeStructure(
    fee_tiers=(
        _tier(35),
        _tier(30),
        _tier(275, FEE_DENOMINATOR * 10),
        _tier(25),
        _tier(225, FEE_DENOMINATOR * 10),
        _tier(20),
    )
)


@pytest.mark.parametrize(
    ("taker_volume", "stake", "hlm", "fee", "rebate"),
    [
        (0, 0, False, 35, 25),
        # $70M volume: tier 3 (below $80M)
        (70_000_000 * Q, 0, False, 25, 25),
        # a $50K stake less 0.00897 still counts (the threshold is $49,999): 20% off via the
        # fast path: 25 - ceil(25/5) = 20; rebate 25 + 25/5 = 30
        (70_000_000 * Q, 50_000 * Q - 8_970, False, 20, 30),
        # $150K stake: the 100K step, 30%: ceil(25 * 70 / 100) = 18; 25 * 130 / 100 = 32
        (70_000_000 * Q, 150_000 * Q - 8_970, False, 18, 32),
        # $800K: 40%: 25 * 60 / 100 = 15; 25 * 140 / 100 = 35
        (70_000_000 * Q, 800_000 * Q, False, 15, 35),
        # $280M volume: the top tier (20), 40% off: 12; rebate 35
        (280_000_000 * Q, 800_000 * Q, False, 12, 35),
        # high-leverage mode always pays the first tier, no stake benefit
        (280_000_000 * Q, 800_000 * Q, True, 35, 25),
    ],
)
def test_determine_user_fee_tier_program_vectors(
    taker_volume: int, stake: int, hlm: bool, fee: int, rebate: int
) -> None:
    stats = _stats(taker_volume_30d=taker_volume, if_staked_quote_asset_amount=stake)
    tier = determine_user_fee_tier(stats, PROGRAM_TIERS, MarketType.Perp, hlm)
    assert (tier.fee_numerator, tier.fee_denominator) == (fee, 100_000)
    assert (tier.maker_rebate_numerator, tier.maker_rebate_denominator) == (rebate, 1_000_000)


def test_volume_tiers_count_maker_and_taker_volume() -> None:
    fs = FeeStructure.perps_default()
    # $1.5M taker + $0.5M maker = $2M: not below $2M, so tier 1 (9 bps)
    stats = _stats(taker_volume_30d=1_500_000 * Q, maker_volume_30d=500_000 * Q)
    assert determine_perp_fee_tier(stats, fs).fee_numerator == 90
    assert determine_perp_fee_tier(replace(stats, maker_volume_30d=0), fs).fee_numerator == 100


def test_spot_always_uses_the_first_tier() -> None:
    stats = _stats(taker_volume_30d=10**9 * Q, if_staked_quote_asset_amount=10**6 * Q)
    fs = FeeStructure.perps_default()
    assert determine_spot_fee_tier(stats, fs) == fs.fee_tiers[0]
    assert determine_user_fee_tier(stats, fs, MarketType.Spot) == fs.fee_tiers[0]


def test_tier_past_the_defined_ones_is_free() -> None:
    # a structure with one tier: $5M of volume reaches tier 1, whose slot is FeeTier defaults
    fs = _test_default()
    tier = determine_perp_fee_tier(_stats(taker_volume_30d=5_000_000 * Q), fs)
    assert (tier.fee_numerator, tier.maker_rebate_numerator) == (0, 0)


# --- properties ---------------------------------------------------------------------------------

amounts = st.integers(min_value=0, max_value=10**13)
adjustments = st.integers(min_value=-100, max_value=100)


@given(
    quote=amounts,
    fee_adjustment=adjustments,
    referrer=st.booleans(),
    multiplier=st.integers(min_value=0, max_value=200_000),
    slots=st.integers(min_value=0, max_value=10**6),
    hlm=st.booleans(),
)
def test_match_split_adds_up(
    quote: int, fee_adjustment: int, referrer: bool, multiplier: int, slots: int, hlm: bool
) -> None:
    fees = calculate_fee_for_fulfillment_with_match(
        _stats(),
        None,
        quote,
        FeeStructure.perps_default(),
        0,
        slots,
        multiplier,
        referrer,
        None,
        MarketType.Perp,
        fee_adjustment,
        hlm,
    )
    # the taker's fee pays everyone; nothing is created or lost
    assert fees.user_fee == (
        fees.fee_to_market + fees.filler_reward + fees.referrer_reward + fees.maker_rebate
    )
    assert fees.fee_to_market >= 0
    assert fees.filler_reward * 10 <= fees.user_fee  # at most the 10% size share


@given(
    quote=amounts,
    fee_adjustment=adjustments,
    referrer=st.booleans(),
    reward_filler=st.booleans(),
    surplus=st.integers(min_value=-(10**9), max_value=10**9),
)
def test_amm_taker_split_adds_up(
    quote: int, fee_adjustment: int, referrer: bool, reward_filler: bool, surplus: int
) -> None:
    fees = calculate_fee_for_fulfillment_with_amm(
        _stats(),
        quote,
        FeeStructure.perps_default(),
        0,
        30,
        reward_filler,
        referrer,
        None,
        surplus,
        False,
        fee_adjustment,
    )
    assert fees.user_fee + surplus == (
        fees.fee_to_market + fees.filler_reward + fees.referrer_reward
    )
    assert fees.fee_to_market_for_lp == fees.fee_to_market - surplus
    assert fees.maker_rebate == 0
