"""Withdraw/borrow guards with seed 001's parameters (80% deposit twap, 1.2x borrow twap above a
15% utilization floor, 90% utilization cap, small-account exemption at threshold / 10).

Where a vector comes from the program's ``controller/spot_balance/tests.rs`` and does not depend
on the guard parameterisation it is reproduced as is; where the program's 75%-twap rule gives a
different number, the seed's number is worked by hand in the comment.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import (
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
)
from protocol.controller.spot_balance import update_spot_balances
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.spot_withdraw import (
    calculate_max_borrow_token_amount,
    calculate_min_deposit_token_amount,
    calculate_token_utilization_limits,
    check_user_exception_to_withdraw_limits,
    check_withdraw_limits,
    get_max_withdraw_for_market_with_token_amount,
    validate_spot_balances,
    validate_spot_market_vault_amount,
)
from protocol.numeric import U128_MAX
from protocol.state.spot_market import SpotMarket
from protocol.state.user import SpotPosition, User
from protocol.types import AssetTier, SpotBalanceType

SEED_PCT = 800_000  # withdraw_limit_deposit_twap_pct
SEED_MULTIPLE = 1_200_000  # borrow_limit_borrow_twap_multiple
SEED_FLOOR = 150_000  # borrow_limit_utilization_floor
SEED_MAX_UTIL = 900_000  # borrow_limit_max_utilization


def _market(**fields: Any) -> SpotMarket:
    """The program's ``SpotMarket::default()`` rate fields (zero) with the seed's guard fields
    (the model's defaults)."""
    base: dict[str, Any] = {
        "market_index": 0,
        "name": "test",
        "oracle": "oracle",
        "decimals": 6,
        "asset_tier": AssetTier.Unlisted,
        "optimal_utilization": 0,
        "optimal_borrow_rate": 0,
        "max_borrow_rate": 0,
    }
    base.update(fields)
    return SpotMarket(**base)


def _user(*positions: SpotPosition, total_deposits: int = 0, total_withdraws: int = 0) -> User:
    return User(
        authority=b"\x01" * 32,
        spot_positions=list(positions),
        total_deposits=total_deposits,
        total_withdraws=total_withdraws,
    )


def _max_borrow(deposits: int, deposit_twap: int, borrow_twap: int, threshold: int = 0) -> int:
    return calculate_max_borrow_token_amount(
        deposits,
        deposit_twap,
        borrow_twap,
        threshold,
        U128_MAX,
        SEED_MULTIPLE,
        SEED_FLOOR,
        SEED_MAX_UTIL,
    )


def test_market_defaults_are_the_seed_parameters() -> None:
    market = _market()
    assert market.withdraw_limit_deposit_twap_pct == SEED_PCT
    assert market.borrow_limit_borrow_twap_multiple == SEED_MULTIPLE
    assert market.borrow_limit_utilization_floor == SEED_FLOOR
    assert market.borrow_limit_max_utilization == SEED_MAX_UTIL
    assert market.small_account_exemption_divisor == 10


# --- withdraw limit: 80% of the deposit twap ---------------------------------------------------


def test_min_deposit_keeps_80_percent_of_twap() -> None:
    # 1e6 - max(1e6 * 20%, min(0, 1e6)) = 800_000
    assert calculate_min_deposit_token_amount(QUOTE_PRECISION, 0, SEED_PCT) == 800_000


def test_min_deposit_with_75_percent_is_the_current_program_vector() -> None:
    # program: test_check_withdraw_limits, mdt == QUOTE_PRECISION - QUOTE_PRECISION / 4
    assert calculate_min_deposit_token_amount(QUOTE_PRECISION, 0, 750_000) == (
        QUOTE_PRECISION - QUOTE_PRECISION // 4
    )


def test_min_deposit_guard_threshold_allows_more_than_20_percent() -> None:
    # threshold 300_000 > 20% of twap: 1e6 - max(200_000, 300_000) = 700_000
    assert calculate_min_deposit_token_amount(1_000_000, 300_000, SEED_PCT) == 700_000
    # threshold at or above the twap: the whole twap may leave
    assert calculate_min_deposit_token_amount(1_000_000, 2_000_000, SEED_PCT) == 0
    # threshold below 20%: the 20% share binds
    assert calculate_min_deposit_token_amount(1_000_000, 100_000, SEED_PCT) == 800_000


@given(
    twap=st.integers(min_value=0, max_value=10**18),
    threshold=st.integers(min_value=0, max_value=10**18),
)
def test_min_deposit_at_80_percent_equals_the_programs_older_rule(
    twap: int, threshold: int
) -> None:
    # the program's earlier rule, written independently: twap - max(twap / 5, min(threshold, twap))
    older = twap - max(twap // 5, min(threshold, twap))
    assert calculate_min_deposit_token_amount(twap, threshold, SEED_PCT) == older


# --- borrow limit: 15% floor, 1.2x twap, 90% cap -------------------------------------------------


def test_max_borrow_floor_at_15_percent_utilization() -> None:
    # no borrow history: 1e6 * 15% = 150_000 beats 0 * 1.2
    assert _max_borrow(1_000_000, 1_000_000, 0) == 150_000


def test_max_borrow_follows_1_2x_borrow_twap() -> None:
    # twap 500_000 * 1.2 = 600_000 > 150_000 and < 900_000
    assert _max_borrow(1_000_000, 1_000_000, 500_000) == 600_000


def test_max_borrow_capped_at_90_percent_utilization() -> None:
    # twap 800_000 * 1.2 = 960_000 > 1e6 * 90%
    assert _max_borrow(1_000_000, 1_000_000, 800_000) == 900_000


def test_max_borrow_uses_lesser_of_deposits_and_deposit_twap() -> None:
    # a deposit spike does not raise the limit: lesser = min(2e6, 1e6) = 1e6 -> 15% = 150_000
    assert _max_borrow(2_000_000, 1_000_000, 0) == 150_000
    # a deposit drain lowers it at once: lesser = 500_000 -> cap 450_000 < 1.2 * 400_000
    assert _max_borrow(500_000, 1_000_000, 400_000) == 450_000


def test_max_borrow_never_below_guard_threshold() -> None:
    # threshold 950_000 lifts the limit even past the 90% cap (as the program orders it)
    assert _max_borrow(1_000_000, 1_000_000, 0, threshold=950_000) == 950_000


def test_max_borrow_capped_by_max_token_borrows() -> None:
    limit = calculate_max_borrow_token_amount(
        1_000_000, 1_000_000, 500_000, 950_000, 100_000, SEED_MULTIPLE, SEED_FLOOR, SEED_MAX_UTIL
    )
    assert limit == 100_000


def test_max_borrow_seed_versus_program_vector() -> None:
    # program: test_check_withdraw_limits gives 700_000 for (1e6, 1e6, 5e5) with its
    # max(lesser/3, twap + lesser/5) rule; the seed's max(15%, 1.2x twap) gives 600_000
    assert _max_borrow(QUOTE_PRECISION, QUOTE_PRECISION, QUOTE_PRECISION // 2) == 600_000


# --- small-account exemption ---------------------------------------------------------------


def _exempt_market() -> SpotMarket:
    # threshold 1_000_000 tokens -> exemption below 100_000
    return _market(deposit_balance=10 * SPOT_BALANCE_PRECISION, withdraw_guard_threshold=1_000_000)


def _depositor(scaled_balance: int, cumulative_deposits: int = 100_000) -> User:
    position = SpotPosition(
        market_index=0, scaled_balance=scaled_balance, cumulative_deposits=cumulative_deposits
    )
    return _user(position, total_deposits=100 * QUOTE_PRECISION, total_withdraws=0)


def test_exemption_small_depositor_is_exempt() -> None:
    # 50_000 tokens left (scaled 5e7 at index 1, decimals 6) + 40_000 withdrawn < 100_000
    user = _depositor(50_000_000)
    assert check_user_exception_to_withdraw_limits(_exempt_market(), user, 40_000)


def test_exemption_boundary_is_strict() -> None:
    # 50_000 + 50_000 == 100_000 is not below the limit
    user = _depositor(50_000_000)
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), user, 50_000)


def test_exemption_divisor_is_read_from_the_market() -> None:
    market = _exempt_market()
    market.small_account_exemption_divisor = 20  # limit 50_000
    assert not check_user_exception_to_withdraw_limits(market, _depositor(50_000_000), 40_000)
    assert check_user_exception_to_withdraw_limits(market, _depositor(5_000_000), 40_000)


def test_exemption_refused_for_negative_lifetime_net_deposits() -> None:
    user = _depositor(50_000_000)
    user.total_withdraws = user.total_deposits + 1
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), user, 40_000)


def test_exemption_refused_for_negative_cumulative_deposits() -> None:
    user = _depositor(50_000_000, cumulative_deposits=-1)
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), user, 40_000)


def test_exemption_refused_for_a_borrow() -> None:
    user = _depositor(50_000_000)
    user.spot_positions[0].balance_type = SpotBalanceType.Borrow
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), user, 40_000)


def test_exemption_needs_a_user_and_an_amount() -> None:
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), None, 40_000)
    assert not check_user_exception_to_withdraw_limits(_exempt_market(), _depositor(0), None)


def test_exemption_without_a_position_is_an_error() -> None:
    with pytest.raises(ProtocolError) as err:
        check_user_exception_to_withdraw_limits(_exempt_market(), _user(), 1)
    assert err.value.code == ErrorCode.CouldNotFindSpotPosition


# --- utilization limits (current program, reproduced vectors) -------------------------------


def _sol_market(**fields: Any) -> SpotMarket:
    # program: test_check_withdraw_limits_{below,above}_optimal_utilization
    base: dict[str, Any] = {
        "market_index": 1,
        "decimals": 9,
        "cumulative_deposit_interest": 1020 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        "cumulative_borrow_interest": 1222 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        "optimal_utilization": 700_000,
        "optimal_borrow_rate": 60_000,
        "max_borrow_rate": 1_000_000,
        "deposit_balance": 200_000 * SPOT_BALANCE_PRECISION,
        "deposit_token_twap": 204_000_000_000_000,
    }
    base.update(fields)
    return _market(**base)


def _sol_below_optimal() -> SpotMarket:
    return _sol_market(
        borrow_balance=100_000 * SPOT_BALANCE_PRECISION,
        borrow_token_twap=122_200_000_000_000,
        utilization_twap=100_000,
    )


def _sol_above_optimal() -> SpotMarket:
    return _sol_market(
        borrow_balance=160_000 * SPOT_BALANCE_PRECISION,
        borrow_token_twap=199_200_000_000_000,
        utilization_twap=929_000,
    )


def test_withdraw_limits_below_optimal_utilization() -> None:
    market = _sol_below_optimal()
    deposits, borrows = 204_000_000_000_000, 122_200_000_000_000  # program: tokens at 1.02/1.222
    assert calculate_token_utilization_limits(deposits, borrows, market) == (
        174_571_428_571_428,  # program
        142_800_000_000_000,  # program
    )
    # seed: 204e12 - 20% = 163.2e12 (the program's 75% gives 153e12)
    assert calculate_min_deposit_token_amount(204_000_000_000_000, 0, SEED_PCT) == (
        163_200_000_000_000
    )
    # seed: max(204e12 * 15%, 122.2e12 * 1.2 = 146.64e12), under 90% = 183.6e12
    assert _max_borrow(deposits, deposits, 122_200_000_000_000) == 146_640_000_000_000
    # deposits 204e12 >= max(163.2e12, 174.57e12); borrows 122.2e12 <= min(146.64e12, 142.8e12)
    assert check_withdraw_limits(market, None, None)

    # program: deposits cut to 174571428571428 / 1020 * 1000 scaled -> the utilization floor
    market.deposit_balance = 174_571_428_571_428 // 1020 * 1000
    deposits = 174_571_428_570_660  # program
    assert calculate_token_utilization_limits(deposits, borrows, market) == (
        174_571_428_570_660,  # program: capped at deposits - threshold
        122_199_999_999_462,  # program
    )
    # borrows 122.2e12 > 122_199_999_999_462: refused, as in the program
    assert not check_withdraw_limits(market, None, None)


def test_withdraw_limits_above_optimal_utilization() -> None:
    market = _sol_above_optimal()
    deposits, borrows = 204_000_000_000_000, 195_520_000_000_000  # program
    min_dep, max_bor = calculate_token_utilization_limits(deposits, borrows, market)
    assert (min_dep, max_bor) == (202_716_433_385_173, 196_758_000_000_000)  # program
    # seed twap limit: 199.2e12 * 1.2 = 239.04e12 capped at 90% of 204e12 = 183.6e12
    # (the program's own rule gives 189_428_571_428_572)
    assert _max_borrow(deposits, deposits, 199_200_000_000_000) == 183_600_000_000_000
    # no user: borrows 195.52e12 > min(183.6e12, 196.758e12) -> refused (program: refused too)
    assert not check_withdraw_limits(market, None, None)

    # a depositor's withdrawal is judged on deposits only: 204e12 >= 202.7e12 -> allowed
    user = _user(
        SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION),
        SpotPosition(market_index=1, scaled_balance=SPOT_BALANCE_PRECISION),
    )
    assert check_withdraw_limits(market, user, None)

    # program: deposits cut to min_dep / 1020 * 1000 scaled = 198_741_601_358_000, whose token
    # amount 202_716_433_385_160 is below the utilization floor 202_716_433_385_173
    market.deposit_balance = min_dep // 1020 * 1000
    assert not check_withdraw_limits(market, None, None)


def test_check_withdraw_limits_program_markets() -> None:
    # program: test_check_withdraw_limits, recomputed with the seed's 80%
    usdc = _market(deposit_balance=SPOT_BALANCE_PRECISION, deposit_token_twap=QUOTE_PRECISION // 2)
    sol = _market(
        market_index=1,
        decimals=10,
        deposit_balance=2 * SPOT_BALANCE_PRECISION,
        borrow_balance=SPOT_BALANCE_PRECISION,
        deposit_token_twap=28_000_000_000,
    )
    user = _user(
        SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION),
        SpotPosition(market_index=1, scaled_balance=SPOT_BALANCE_PRECISION),
    )
    # usdc: deposits 1e6 >= max(5e5 - 1e5, utilization floor 0)
    assert check_withdraw_limits(usdc, user, 0)
    # sol: deposits 2e10 < 28e9 - 5.6e9 = 22.4e9; threshold 0 gives no exemption
    assert not check_withdraw_limits(sol, user, 10_000_000_000)
    assert not check_withdraw_limits(sol, None, None)


def test_check_withdraw_limits_small_account_exemption_applies() -> None:
    # deposits 1e6 far below the twap floor 0.8 * 1e7; a 40_000-token depositor is excused
    market = _market(
        deposit_balance=SPOT_BALANCE_PRECISION,
        deposit_token_twap=10_000_000,
        withdraw_guard_threshold=1_000_000,
    )
    # floor = 1e7 - max(2e6, min(1e6, 1e7)) = 8e6 > 1e6
    assert not check_withdraw_limits(market, None, None)
    assert check_withdraw_limits(market, _depositor(40_000_000), 40_000)
    assert not check_withdraw_limits(market, _depositor(40_000_000), 60_000)


def test_check_withdraw_limits_without_the_users_position_is_an_error() -> None:
    with pytest.raises(ProtocolError) as err:
        check_withdraw_limits(_market(), _user(), 0)
    assert err.value.code == ErrorCode.CouldNotFindSpotPosition


# --- end to end with update_spot_balances (program's test_daily_withdraw_limits, seed rules) ---


def _withdraw(market: SpotMarket, user: User, amount: int) -> bool:
    position = user.force_get_spot_position_mut(market.market_index)
    update_spot_balances(amount, SpotBalanceType.Borrow, market, position, True)
    return check_withdraw_limits(market, user, amount)


def test_daily_withdraw_limit_drains_at_most_20_percent_of_twap() -> None:
    market = _market(
        deposit_balance=SPOT_BALANCE_PRECISION, deposit_token_twap=QUOTE_PRECISION // 2
    )
    user = _user(SpotPosition(market_index=0, scaled_balance=SPOT_BALANCE_PRECISION))
    # floor: 500_000 - 500_000 / 5 = 400_000 tokens

    # withdrawing everything leaves 0 < floor
    trial_market, trial_user = market.clone(), user.clone()
    assert not _withdraw(trial_market, trial_user, QUOTE_PRECISION)

    # program: 500_000 out -> scaled 1e9 - (5e8 + 1) = 499_999_999; 499_999 >= floor
    assert _withdraw(market, user, 500_000)
    assert user.spot_positions[0].scaled_balance == 499_999_999
    assert market.deposit_balance == 499_999_999

    # 99_998 out -> 499_999_999 - 99_998_001 = 400_001_998 -> 400_001 tokens >= floor
    assert _withdraw(market, user, 99_998)
    assert market.deposit_balance == 400_001_998

    # 2 more -> 400_001_998 - 2_001 = 399_999_997 -> 399_999 tokens < floor
    assert not _withdraw(market, user, 2)
    assert market.deposit_balance == 399_999_997


def test_borrow_limit_15_percent_floor_on_the_programs_sol_market() -> None:
    # program: test_daily_withdraw_limits' SOL market (50 SOL deposited, twap 50 SOL, no borrow
    # history); seed limit = max(500e9 * 15%, 0) = 75e9 tokens (7.5 SOL), under 90%
    market = _market(
        market_index=1,
        decimals=10,
        deposit_balance=50 * SPOT_BALANCE_PRECISION,
        borrow_balance=SPOT_BALANCE_PRECISION,
        deposit_token_twap=500 * SPOT_BALANCE_PRECISION,
        optimal_utilization=1_000_000,
        optimal_borrow_rate=200_000,
        max_borrow_rate=1_000_000,
    )
    user = _user()
    # 1 SOL: position 1e9 + 1 scaled; market borrows 2_000_000_001 -> 20_000_000_010 tokens
    assert _withdraw(market, user, 10_000_000_000)
    assert user.spot_positions[0].scaled_balance == 1_000_000_001
    assert user.spot_positions[0].balance_type == SpotBalanceType.Borrow

    # +6 SOL (the program allows it): 8_000_000_002 scaled -> 80_000_000_020 tokens > 75e9
    trial_market, trial_user = market.clone(), user.clone()
    assert not _withdraw(trial_market, trial_user, 60_000_000_000)
    assert trial_market.borrow_balance == 8_000_000_002

    # +5 SOL: 7_000_000_002 scaled -> 70_000_000_020 tokens <= 75e9
    assert _withdraw(market, user, 50_000_000_000)
    assert market.borrow_balance == 7_000_000_002


# --- max withdraw --------------------------------------------------------------------------


def test_max_withdraw_for_market() -> None:
    market = _market(deposit_balance=SPOT_BALANCE_PRECISION, deposit_token_twap=QUOTE_PRECISION)
    # leaving: floor max(1e6 - 2e5, utilization floor 0) = 8e5 -> 2e5 may leave, < 5e5 held
    assert get_max_withdraw_for_market_with_token_amount(market, 500_000, True) == 200_000
    # not leaving: the whole 5e5 plus borrow room min(15% of 1e6 - 0, 1e6 - 0) = 150_000
    assert get_max_withdraw_for_market_with_token_amount(market, 500_000, False) == 650_000
    # a borrower (negative amount) only gets the borrow room; leaving, the utilization limit
    # (50% of 1e6 = 5e5, from utilization_twap 0) is looser than the twap's 150_000
    assert get_max_withdraw_for_market_with_token_amount(market, -10, True) == 150_000


def test_max_withdraw_respects_max_token_borrows() -> None:
    market = _market(
        deposit_balance=SPOT_BALANCE_PRECISION,
        borrow_balance=SPOT_BALANCE_PRECISION // 20,  # 50_000 tokens borrowed
        deposit_token_twap=QUOTE_PRECISION,
        borrow_token_twap=50_000,
        max_token_deposits=1_000_000,
        max_token_borrows_fraction=1_000,  # 10% of 1e6 = 100_000 tokens
    )
    # twap room: max(150_000, 60_000) capped by max_token_borrows 100_000 -> 100_000 - 50_000
    assert get_max_withdraw_for_market_with_token_amount(market, 0, False) == 50_000


# --- vault invariants --------------------------------------------------------------------


def test_validate_spot_balances() -> None:
    market = _market(
        deposit_balance=3 * SPOT_BALANCE_PRECISION, borrow_balance=SPOT_BALANCE_PRECISION
    )
    market.revenue_pool.scaled_balance = SPOT_BALANCE_PRECISION
    assert validate_spot_balances(market) == 2_000_000  # 3e6 - 1e6 tokens
    assert validate_spot_market_vault_amount(market, 2_000_000) == 2_000_000
    with pytest.raises(ProtocolError) as err:
        validate_spot_market_vault_amount(market, 1_999_999)
    assert err.value.code == ErrorCode.SpotMarketVaultInvariantViolated

    market.revenue_pool.scaled_balance = 3 * SPOT_BALANCE_PRECISION + 1000
    with pytest.raises(ProtocolError) as err:
        validate_spot_balances(market)
    assert err.value.code == ErrorCode.SpotMarketVaultInvariantViolated
