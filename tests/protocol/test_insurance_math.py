"""Insurance-fund share math (``protocol.math.insurance``).

Vectors marked "program" reproduce ``math/insurance/tests.rs`` (basic_stake_if_test,
if_shares_lost_test); the rest are worked by hand in the comments.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.constants import PRICE_PRECISION, QUOTE_PRECISION, SPOT_CUMULATIVE_INTEREST_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.insurance import (
    calculate_if_shares_lost,
    calculate_rebase_info,
    calculate_share_price,
    if_shares_to_vault_amount,
    log10_iter,
    vault_amount_to_if_shares,
)
from protocol.state.insurance_fund_stake import InsuranceFundStake
from protocol.state.spot_market import InsuranceFund, SpotMarket

Q = QUOTE_PRECISION


def _market(**fields: Any) -> SpotMarket:
    base: dict[str, Any] = {"market_index": 0, "name": "test", "oracle": "oracle", "decimals": 0}
    base.update(fields)
    return SpotMarket(**base)


# --- conversions ----------------------------------------------------------------------------------


def test_vault_amount_to_if_shares_by_hand() -> None:
    # empty fund: one share per token
    assert vault_amount_to_if_shares(1_234, 0, 0) == 1_234
    # 1000 shares over 1500 tokens: 300 tokens buy 300 * 1000 / 1500 = 200 shares
    assert vault_amount_to_if_shares(300, 1_000, 1_500) == 200
    # 1 token buys 1000 / 1500 = 0.66 -> 0 shares (the buyer never gets more than it paid for)
    assert vault_amount_to_if_shares(1, 1_000, 1_500) == 0
    # a non-empty vault with no shares: 0 shares (the program's get_proportion with 0 numerator)
    assert vault_amount_to_if_shares(100, 0, 2_315) == 0


def test_vault_amount_to_if_shares_refuses_shares_over_an_empty_vault() -> None:
    with pytest.raises(ProtocolError) as exc:
        vault_amount_to_if_shares(100, 5, 0)
    assert exc.value.code == ErrorCode.InvalidIFSharesDetected


def test_if_shares_to_vault_amount_by_hand() -> None:
    # 200 of 1000 shares over 1501 tokens: 1501 * 200 / 1000 = 300.2 -> 300
    assert if_shares_to_vault_amount(200, 1_000, 1_501) == 300
    assert if_shares_to_vault_amount(0, 0, 1_000) == 0  # no shares: worth nothing
    assert if_shares_to_vault_amount(1_000, 1_000, 1_501) == 1_501
    with pytest.raises(ProtocolError) as exc:
        if_shares_to_vault_amount(1_001, 1_000, 1_501)
    assert exc.value.code == ErrorCode.InvalidIFSharesDetected


def test_calculate_share_price_by_hand() -> None:
    # 1501 tokens over 1000 shares: 1.501 tokens per share
    assert calculate_share_price(1_000, 1_501) == 1_501_000
    assert calculate_share_price(3, 1) == PRICE_PRECISION // 3
    assert calculate_share_price(0, 1_000) == 0


def test_log10_iter() -> None:
    # program: basic_stake_if_test (log10_iter(100) == 2)
    assert [log10_iter(n) for n in (0, 9, 10, 99, 100, 101, 10**13 - 1)] == [0, 0, 1, 1, 2, 2, 12]


# --- rebases --------------------------------------------------------------------------------------


def test_calculate_rebase_info_program_vectors() -> None:
    # program: basic_stake_if_test
    cases = [
        ((10_000, 10_000), (0, 1)),
        ((20_000, 10_000), (0, 1)),
        ((60_078, 10_000), (0, 1)),
        ((60_078, 9_999), (0, 1)),
        ((60_078, 6_008), (0, 1)),
        ((60_078, 6_007), (0, 1)),
        ((60_078, 6_006), (0, 1)),
        ((60_078, 606), (0, 1)),
        ((60_078, 600), (1, 10)),
        ((60_078 * Q, 600 * Q + 19_234), (1, 10)),
        ((60_078 * Q, 601 * Q + 19_234), (0, 1)),
        ((800_000_078 * Q, 1), (13, 10_000_000_000_000)),  # $800M goes to 1e-6 of a dollar
        ((99_999, 100), (1, 10)),
        ((100_000, 100), (2, 100)),
        ((100_001, 100), (2, 100)),
        ((1_242_418_900_000, 1), (11, 100_000_000_000)),
        ((12_412, 83_295_723_895_729_080), (0, 1)),  # never rebases upward
    ]
    for (total_shares, vault), expected in cases:
        assert calculate_rebase_info(total_shares, vault) == expected, (total_shares, vault)


def test_calculate_rebase_info_empty_vault_is_a_math_error() -> None:
    with pytest.raises(MathError):
        calculate_rebase_info(1_000, 0)


# --- shares lost on cancel ----------------------------------------------------------------------


def test_calculate_if_shares_lost_program_vectors() -> None:
    # program: if_shares_lost_test
    market = _market(
        cumulative_deposit_interest=1111 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        insurance_fund=InsuranceFund(
            unstaking_period=0, total_shares=1000 * Q, user_shares=1000 * Q
        ),
    )
    fund = market.insurance_fund
    stake = InsuranceFundStake.new(bytes(32), 0, 0)
    stake.update_if_shares(100 * Q, market)
    stake.last_withdraw_request_shares = 100 * Q
    stake.last_withdraw_request_value = 100 * Q - 1

    if_balance = 1000 * Q
    # unchanged balance: the request was worth 1 unit less than the shares
    assert calculate_if_shares_lost(stake, market, if_balance) == 2

    if_balance += 100 * Q
    fund.total_shares += 100 * Q
    fund.user_shares += 100 * Q
    assert calculate_if_shares_lost(stake, market, if_balance) == 2

    if_balance -= 100 * Q
    fund.total_shares -= 100 * Q
    fund.user_shares -= 100 * Q
    assert calculate_if_shares_lost(stake, market, if_balance) == 2

    # the fund gained $100 (10%) while the request was pending: giving up the $10 of gains
    if_balance = 1100 * Q
    assert calculate_if_shares_lost(stake, market, if_balance) == 10_000_001

    # nothing is lost when the fund lost value
    stake.last_withdraw_request_value = 200 * Q
    assert calculate_if_shares_lost(stake, market, if_balance) == 0
    stake.last_withdraw_request_value = 100 * Q - 1

    # total shares doubled without the staker: giving up $5 of gains
    if_balance = 2100 * Q
    fund.total_shares *= 2
    assert calculate_if_shares_lost(stake, market, if_balance) == 5_000_001

    if_balance = 2100 * Q * 10
    assert if_balance * 100 // 2000 == 1_050_000_000  # the gain had there been no loss
    lost = calculate_if_shares_lost(stake, market, if_balance)
    assert lost == 90_909_092
    assert 9_090_908 * if_balance // (fund.total_shares - lost) < stake.last_withdraw_request_value


def test_calculate_if_shares_lost_by_hand() -> None:
    # 100 of 1000 shares requested at a value of 100 tokens; the vault has grown from 1000 to
    # 2000 tokens, so the 100 shares are worth 200. The 100 tokens buy
    # 100 * (1000 - 100) / (2000 - 100) = 47.36 -> 47 shares of the rest: 53 shares are lost.
    market = _market(insurance_fund=InsuranceFund(total_shares=1_000, user_shares=1_000))
    stake = InsuranceFundStake(bytes(32), 0, if_shares=100)
    stake.last_withdraw_request_shares = 100
    stake.last_withdraw_request_value = 100
    assert calculate_if_shares_lost(stake, market, 2_000) == 53


@given(
    total=st.integers(1, 10**15),
    requested_pct=st.integers(1, 100),
    vault=st.integers(2, 10**15),
    growth_pct=st.integers(0, 1_000),
)
def test_cancelling_never_leaves_a_staker_with_more_than_its_request(
    total: int, requested_pct: int, vault: int, growth_pct: int
) -> None:
    # After the cancel the kept shares must be worth at most the value the request locked in
    # (plus one unit of rounding), priced over the fund as it stands after the burn.
    requested = max(1, total * requested_pct // 100)
    market = _market(insurance_fund=InsuranceFund(total_shares=total, user_shares=total))
    stake = InsuranceFundStake(bytes(32), 0, if_shares=total)
    stake.last_withdraw_request_shares = requested
    stake.last_withdraw_request_value = min(
        if_shares_to_vault_amount(requested, total, vault), vault - 1
    )
    vault_now = vault + vault * growth_pct // 100
    lost = calculate_if_shares_lost(stake, market, vault_now)
    assert 0 <= lost <= requested
    kept = requested - lost
    value_kept = if_shares_to_vault_amount(kept, total - lost, vault_now)
    assert value_kept <= stake.last_withdraw_request_value + 1
