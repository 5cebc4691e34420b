"""Liquidation math (``protocol/math/liquidation.py``).

Vectors marked "program" reproduce ``math/liquidation/tests.rs`` (same inputs, same outputs);
the others are worked by hand in the comments.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol.constants import (
    BASE_PRECISION,
    FUNDING_RATE_PRECISION,
    LIQUIDATION_FEE_PRECISION,
    LIQUIDATION_PCT_PRECISION,
    MARGIN_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.liquidation import (
    LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS,
    LiquidationMultiplierType,
    calculate_asset_transfer_for_liability_transfer,
    calculate_base_asset_amount_to_cover_margin_shortage,
    calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy,
    calculate_funding_rate_deltas_to_resolve_bankruptcy,
    calculate_liability_transfer_implied_by_asset_amount,
    calculate_liability_transfer_to_cover_margin_shortage,
    calculate_liquidation_multiplier,
    calculate_max_pct_to_liquidate,
    calculate_perp_if_fee,
    calculate_spot_if_fee,
    calculate_swap_price,
    get_liquidation_fee,
    get_max_liquidation_fee,
    is_as_safe_as,
    is_as_safe_as_asset,
    validate_swap_within_liquidation_boundaries,
    validate_transfer_satisfies_limit_price,
)
from protocol.numeric import U64_MAX, U128_MAX
from protocol.state import AMM, PerpMarket, SpotMarket, User
from protocol.types import AssetTier, ContractTier

Q = QUOTE_PRECISION
P = PRICE_PRECISION
LFP = LIQUIDATION_FEE_PRECISION
W = SPOT_WEIGHT_PRECISION


# --- calculate_base_asset_amount_to_cover_margin_shortage ----------------------------------------
def test_base_to_cover_zero_percent_fee() -> None:
    # program: $10 shortage at 10x, no fee, $100 -> 1 base
    assert (
        calculate_base_asset_amount_to_cover_margin_shortage(
            10 * Q, MARGIN_PRECISION // 10, 0, 0, 100 * P, P
        )
        == BASE_PRECISION
    )


def test_base_to_cover_usdc_not_one() -> None:
    # program: the quote asset at $0.99 / $1.01
    assert (
        calculate_base_asset_amount_to_cover_margin_shortage(
            10 * Q, MARGIN_PRECISION // 10, 0, 0, 100 * P, 99 * 10_000
        )
        == 1_010_101_010
    )
    assert (
        calculate_base_asset_amount_to_cover_margin_shortage(
            10 * Q, MARGIN_PRECISION // 10, 0, 0, 100 * P, 101 * 10_000
        )
        == 990_099_009
    )


def test_base_to_cover_one_percent_fee() -> None:
    # program: each base frees $10 of margin but pays $1 of fee -> 10/9 base
    base = calculate_base_asset_amount_to_cover_margin_shortage(
        10 * Q, MARGIN_PRECISION // 10, LFP // 100, 0, 100 * P, P
    )
    assert base == BASE_PRECISION * 10 // 9
    value = base * 100 * P // P // 1000
    assert value * 1000 // 10_000 - value * 10_000 // LFP == 10_000_000


def test_base_to_cover_one_percent_fee_and_if_fee() -> None:
    # program: $10 - $1 - $1 freed per base -> 1.25 base
    assert (
        calculate_base_asset_amount_to_cover_margin_shortage(
            10 * Q, MARGIN_PRECISION // 10, LFP // 100, LFP // 100, 100 * P, P
        )
        == 1_250_000_000
    )


def test_base_to_cover_no_limit_when_fee_eats_the_margin() -> None:
    # 5% margin ratio = 50_000 in fee precision; a 5% fee frees nothing
    assert (
        calculate_base_asset_amount_to_cover_margin_shortage(10 * Q, 500, 50_000, 0, 100 * P, P)
        == U64_MAX
    )
    assert calculate_base_asset_amount_to_cover_margin_shortage(10 * Q, 500, 0, 0, 0, P) == U64_MAX


def test_base_to_cover_if_fee_above_freed_margin_is_a_math_error() -> None:
    # per base at $100: margin 10% less the 1% fee frees $9, the 10% if fee takes $10
    with pytest.raises(MathError):
        calculate_base_asset_amount_to_cover_margin_shortage(
            10 * Q, MARGIN_PRECISION // 10, LFP // 100, LFP // 10, 100 * P, P
        )


# --- calculate_liability_transfer_to_cover_margin_shortage ---------------------------------------
def test_liability_transfer_zero_fees() -> None:
    # program: .8 asset / 1.2 liability weights, $10 / ($100 * .4) = .25 SOL
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            10 * Q, 8 * W // 10, LFP, 12 * W // 10, LFP, 9, 100 * P, 0
        )
        == 250_000_000
    )


def test_liability_transfer_ten_percent_fees() -> None:
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            10 * Q, 8 * W // 10, 110 * LFP // 100, 12 * W // 10, 90 * LFP // 100, 9, 100 * P, 0
        )
        == 449_984_250
    )


def test_liability_transfer_with_if_fee() -> None:
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            10 * Q, 8 * W // 10, LFP, 12 * W // 10, LFP, 9, 100 * P, LFP // 100
        )
        == 257_731_958
    )
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            10 * Q,
            8 * W // 10,
            110 * LFP // 100,
            12 * W // 10,
            90 * LFP // 100,
            9,
            100 * P,
            LFP // 100,
        )
        == 475_669_504
    )


def test_liability_transfer_unbounded_when_asset_side_weighs_more() -> None:
    # program: weights 1 / 1 with a .75 liability multiplier
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            10 * Q, W, LFP, W, 75 * LFP // 100, 6, 100 * P, 0
        )
        == U128_MAX
    )
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(10 * Q, W, LFP, W, LFP, 6, P, 0)
        == U128_MAX
    )


def test_liability_transfer_is_at_least_one() -> None:
    # a 1-unit shortage on a 6-decimal liability at $1000: 1 * 1e11 / (1e9 * 4_000) = 0 -> 1
    assert (
        calculate_liability_transfer_to_cover_margin_shortage(
            1, 8 * W // 10, LFP, 12 * W // 10, LFP, 6, 1000 * P, 0
        )
        == 1
    )


# --- implied / asset transfers --------------------------------------------------------------------
def test_liability_transfer_implied_by_asset_amount() -> None:
    # program: $10 buys .1 SOL at $100; with 1%/1% multipliers 10 * .99 / 1.01 / 100
    assert (
        calculate_liability_transfer_implied_by_asset_amount(10 * Q, LFP, 6, P, LFP, 9, 100 * P)
        == 100_000_000
    )
    assert (
        calculate_liability_transfer_implied_by_asset_amount(
            10 * Q, 101 * LFP // 100, 6, P, 99 * LFP // 100, 9, 100 * P
        )
        == 98_019_802
    )


def test_asset_transfer_for_liability_transfer() -> None:
    # program vectors
    assert (
        calculate_asset_transfer_for_liability_transfer(
            100 * Q, LFP, 6, P, BASE_PRECISION, LFP, 9, 100 * P
        )
        == 100_000_000
    )
    assert (
        calculate_asset_transfer_for_liability_transfer(
            200 * Q, 101 * LFP // 100, 6, P, BASE_PRECISION, 99 * LFP // 100, 9, 100 * P
        )
        == 102_020_202
    )
    assert (
        calculate_asset_transfer_for_liability_transfer(200 * 10**6, LFP, 6, P, 10**6, LFP, 6, P)
        == 1_000_000
    )
    assert (
        calculate_asset_transfer_for_liability_transfer(200 * 10**5, LFP, 5, P, 10**6, LFP, 6, P)
        == 100_000
    )
    assert (
        calculate_asset_transfer_for_liability_transfer(200 * 10**6, LFP, 6, P, 10**5, LFP, 5, P)
        == 1_000_000
    )


def test_asset_transfer_snaps_to_the_whole_deposit_within_a_dollar() -> None:
    # $100.5 of deposit, $100 of liability: the $0.50 left would be dust, so all of it goes
    assert (
        calculate_asset_transfer_for_liability_transfer(
            100_500_000, LFP, 6, P, BASE_PRECISION, LFP, 9, 100 * P
        )
        == 100_500_000
    )
    # $101 of deposit: exactly $1 left, kept
    assert (
        calculate_asset_transfer_for_liability_transfer(
            101 * Q, LFP, 6, P, BASE_PRECISION, LFP, 9, 100 * P
        )
        == 100 * Q
    )


# --- bankruptcy deltas ----------------------------------------------------------------------------
def test_funding_rate_deltas_to_resolve_bankruptcy() -> None:
    # program: $100 over 7 + 4 base, rounded up: ceil(100e6 * 1e9 / 11e9) = 9_090_910, * 1e3
    market = PerpMarket(
        0,
        "X",
        AMM(
            oracle="X",
            base_asset_amount_long=7 * BASE_PRECISION,
            base_asset_amount_short=-4 * BASE_PRECISION,
        ),
    )
    assert calculate_funding_rate_deltas_to_resolve_bankruptcy(-100 * Q, market) == 9_090_910_000
    # $100 over 10 base is exactly $10 per base = 10 * FUNDING_RATE_PRECISION
    market.amm.base_asset_amount_long = 5 * BASE_PRECISION
    market.amm.base_asset_amount_short = -5 * BASE_PRECISION
    assert (
        calculate_funding_rate_deltas_to_resolve_bankruptcy(-100 * Q, market)
        == 10 * FUNDING_RATE_PRECISION
    )


def test_funding_rate_deltas_without_open_interest_fail() -> None:
    market = PerpMarket(0, "X", AMM(oracle="X"))
    with pytest.raises(ProtocolError) as err:
        calculate_funding_rate_deltas_to_resolve_bankruptcy(-Q, market)
    assert err.value.code == ErrorCode.CantResolvePerpBankruptcy


def test_cumulative_deposit_interest_delta_to_resolve_bankruptcy() -> None:
    # program: no deposits -> 0
    empty = SpotMarket(
        0,
        "USDC",
        "USDC/USD",
        6,
        cumulative_deposit_interest=1111 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
    )
    assert calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy(100 * Q, empty) == 0
    # program: 11 over 120 deposits: ceil(1e10 * 11e6 / 120e6) = 916_666_667
    market = SpotMarket(0, "USDC", "USDC/USD", 6, deposit_balance=120 * SPOT_BALANCE_PRECISION)
    assert (
        calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy(11 * Q, market)
        == 916_666_667
    )


# --- limit prices ---------------------------------------------------------------------------------
def test_transfer_limit_price_sol_asset_usdc_liability() -> None:
    # program: 1 SOL for $100 meets a limit of 0.01 SOL per $; 0.1 SOL does not
    validate_transfer_satisfies_limit_price(10**9, 100 * Q, 9, 6, P // 100)
    with pytest.raises(ProtocolError) as err:
        validate_transfer_satisfies_limit_price(10**8, 100 * Q, 9, 6, P // 100)
    assert err.value.code == ErrorCode.LiquidationDoesntSatisfyLimitPrice
    validate_transfer_satisfies_limit_price(10**8, 100 * Q, 9, 6, None)


def test_transfer_limit_price_usdc_asset_sol_liability() -> None:
    validate_transfer_satisfies_limit_price(100 * Q, 10**9, 6, 9, 100 * P)
    with pytest.raises(ProtocolError):
        validate_transfer_satisfies_limit_price(10 * Q, 10**9, 6, 9, 100 * P)
    # $100 per SOL in PRICE_PRECISION
    assert calculate_swap_price(100 * Q, 10**9, 6, 9) == 100 * P


def test_swap_within_liquidation_boundaries() -> None:
    # program: 1 SOL at $200 with a 1% premium is worth at least $198.01; $200 passes, $198 fails
    validate_swap_within_liquidation_boundaries(
        10**9, 200 * 10**6, 9, 6, 200 * P, P, LFP * 101 // 100, LFP
    )
    with pytest.raises(ProtocolError) as err:
        validate_swap_within_liquidation_boundaries(
            10**9, 198 * 10**6, 9, 6, 200 * P, P, LFP * 101 // 100, LFP
        )
    assert err.value.code == ErrorCode.InvalidLiquidation


# --- insurance-fund fees --------------------------------------------------------------------------
def test_perp_if_fee() -> None:
    # program: 5% margin, 1% liquidator fee, 10 base at $100
    args = (10 * BASE_PRECISION, MARGIN_PRECISION // 20, LFP // 100, 100 * P, P, LFP // 20)
    assert calculate_perp_if_fee(20 * Q, *args) == 19_000  # (5% - 1% - 2%) * .95
    assert calculate_perp_if_fee(Q, *args) == 37_050  # (5% - 1% - .1%) * .95
    assert calculate_perp_if_fee(1000 * Q, *args) == 0
    base, ratio, _, price, quote, cap = args
    assert calculate_perp_if_fee(20 * Q, base, ratio, LFP // 10, price, quote, cap) == 0
    assert calculate_perp_if_fee(20 * Q, base, ratio, LFP // 100, 0, quote, cap) == 0
    assert calculate_perp_if_fee(20 * Q, base, ratio, LFP // 100, price, 0, cap) == 0
    assert calculate_perp_if_fee(20 * Q, 0, ratio, LFP // 100, price, quote, cap) == 0


def test_perp_if_fee_is_capped_by_the_market() -> None:
    # (5% - 1% - .1%) * .95 = 3.705% > a 1% cap
    assert (
        calculate_perp_if_fee(
            Q, 10 * BASE_PRECISION, MARGIN_PRECISION // 20, LFP // 100, 100 * P, P, LFP // 100
        )
        == LFP // 100
    )


def test_spot_if_fee() -> None:
    # program: weights 1 / 1.1, asset premium 1%, 1 token at $100
    def fee(shortage: int, token_amount: int = 10**9, **kw: int) -> int:
        args = {
            "asset_weight": W,
            "asset_liquidation_multiplier": 101 * LFP // 100,
            "liability_weight": 11 * W // 10,
            "liability_liquidation_multiplier": LFP,
        }
        args.update(kw)
        return calculate_spot_if_fee(
            shortage,
            token_amount,
            args["asset_weight"],
            args["asset_liquidation_multiplier"],
            args["liability_weight"],
            args["liability_liquidation_multiplier"],
            9,
            100 * P,
            LFP // 20,
        )

    assert fee(5 * Q) == 36_363  # (110% - 101% - 5%) / 1.1
    assert fee(100 * Q) == 0
    assert fee(Q) == LFP // 20
    assert fee(Q, asset_weight=2 * W) == 0
    assert fee(5 * Q, liability_weight=0) == 0
    assert fee(5 * Q, token_amount=0) == 0
    assert fee(5 * Q, liability_liquidation_multiplier=0) == 0


# --- the escalating liquidator fee ----------------------------------------------------------------
def test_get_liquidation_fee() -> None:
    # program: base 2%, max 5%
    base, cap = 2 * LFP // 100, 5 * LFP // 100
    assert get_liquidation_fee(base, cap, 0, 100_000) == cap
    assert get_liquidation_fee(base, cap, 0, 10) == base
    assert get_liquidation_fee(base, cap, 0, 10_000) == 3 * LFP // 100  # 2% + 10_000 * .01bps


def test_liquidation_fee_grace_period_boundary() -> None:
    base, cap = 10_000, 50_000
    start = 1_000
    last_grace = start + LIQUIDATION_FEE_ADJUST_GRACE_PERIOD_SLOTS - 1
    assert get_liquidation_fee(base, cap, start, last_grace) == base
    # the first slot past the grace period adds all 1_500 elapsed slots at once
    assert get_liquidation_fee(base, cap, start, last_grace + 1) == base + 1_500
    with pytest.raises(MathError):
        get_liquidation_fee(base, cap, start, start - 1)


def test_get_max_liquidation_fee() -> None:
    # 3x the 1% base fee = 3%, under the 5% maintenance ratio (50_000 in fee precision)
    market = PerpMarket(0, "X", AMM(oracle="X"), liquidator_fee=10_000)
    assert get_max_liquidation_fee(market) == 30_000
    # a 2% base fee would reach 6%: capped at the 5% maintenance ratio
    market.liquidator_fee = 20_000
    assert get_max_liquidation_fee(market) == 50_000


def test_liquidation_multiplier() -> None:
    assert calculate_liquidation_multiplier(10_000, LiquidationMultiplierType.Premium) == 1_010_000
    assert calculate_liquidation_multiplier(10_000, LiquidationMultiplierType.Discount) == 990_000
    with pytest.raises(MathError):
        calculate_liquidation_multiplier(LFP + 1, LiquidationMultiplierType.Discount)


# --- pacing ---------------------------------------------------------------------------------------
def test_max_pct_small_shortage_all_at_once() -> None:
    # program: a $49 shortage may be covered in one go
    user = User(authority=bytes(32))
    assert (
        calculate_max_pct_to_liquidate(user, 49 * Q, 1, LIQUIDATION_PCT_PRECISION // 10, 10)
        == LIQUIDATION_PCT_PRECISION
    )


def test_max_pct_grows_with_time_and_counts_what_was_freed() -> None:
    user = User(authority=bytes(32), last_active_slot=100)
    # at the start: the initial 10% of a $1000 shortage
    assert calculate_max_pct_to_liquidate(user, 1000 * Q, 100, 1_000, 150) == 1_000
    # 75 of 150 slots: 10% + 50% = 60%
    assert calculate_max_pct_to_liquidate(user, 1000 * Q, 175, 1_000, 150) == 6_000
    # $400 already freed of a $1400 whole: 60% of 1400 = 840, 440 more of the 1000 left = 44%
    user.liquidation_margin_freed = 400 * Q
    assert calculate_max_pct_to_liquidate(user, 1000 * Q, 175, 1_000, 150) == 4_400
    # freed more than the time allows: nothing now
    user.liquidation_margin_freed = 2000 * Q
    assert calculate_max_pct_to_liquidate(user, 1000 * Q, 175, 1_000, 150) == 0
    # no duration: no pacing
    user.liquidation_margin_freed = 0
    assert calculate_max_pct_to_liquidate(user, 1000 * Q, 100, 1_000, 0) == 10_000


# --- tiers ----------------------------------------------------------------------------------------
def test_contract_tier_safety() -> None:
    assert is_as_safe_as_asset(ContractTier.Speculative, AssetTier.Unlisted)
    assert is_as_safe_as_asset(ContractTier.C, AssetTier.Cross)
    assert not is_as_safe_as_asset(ContractTier.Speculative, AssetTier.Cross)
    assert not is_as_safe_as_asset(ContractTier.A, AssetTier.Collateral)
    assert is_as_safe_as(ContractTier.B, ContractTier.B, AssetTier.Unlisted)
    assert not is_as_safe_as(ContractTier.C, ContractTier.B, AssetTier.Unlisted)


# --- properties -----------------------------------------------------------------------------------
@given(
    shortage=st.integers(1, 10**12),
    margin_ratio=st.integers(100, MARGIN_PRECISION),
    fee_bps=st.integers(0, 99),
    price=st.integers(10_000, 10**10),
)
def test_base_to_cover_is_the_least_base_that_frees_the_shortage(
    shortage: int, margin_ratio: int, fee_bps: int, price: int
) -> None:
    """With ``d`` the margin one whole base frees net of the fee (QUOTE per 1e9 base), the
    returned base frees at most the shortage and one base unit more frees at least it.

    Markets keep the liquidator fee well under the maintenance margin ratio (the program
    validates it); with the two nearly equal the base needed overflows u64, which the program
    refuses too, so such inputs are outside this property."""
    fee = min(fee_bps * 100, margin_ratio * 100 - 1)
    assume(fee * 2 <= margin_ratio * 100)
    base = calculate_base_asset_amount_to_cover_margin_shortage(
        shortage, margin_ratio, fee, 0, price, P
    )
    d = price * (margin_ratio * 100 - fee) // LFP
    assert base * d // BASE_PRECISION <= shortage
    assert (base + 1) * d // BASE_PRECISION >= shortage
