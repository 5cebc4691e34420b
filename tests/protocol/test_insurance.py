"""Insurance-fund staking: the controller (``protocol.controller.insurance``) and the signed
staking instructions through ``Program.execute``.

Vectors marked "program" reproduce ``controller/insurance/tests.rs`` test by test; the
instruction tests are worked by hand in their comments. The property test at the end runs
random stake / request / cancel / remove / settle sequences (with revenue inflows and
insurance payouts between them) and checks after every step that the fund's shares price to
its vault and that the vault's tokens are all accounted for.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.constants import (
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
    THIRTEEN_DAY,
)
from protocol.controller.insurance import (
    add_insurance_fund_stake,
    admin_remove_insurance_fund_stake,
    cancel_request_remove_insurance_fund_stake,
    remove_insurance_fund_stake,
    request_remove_insurance_fund_stake,
    settle_revenue_to_insurance_fund,
    transfer_protocol_insurance_fund_stake,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.instructions import (
    AddInsuranceFundStake,
    CancelRequestRemoveInsuranceFundStake,
    InitializeInsuranceFundStake,
    RemoveInsuranceFundStake,
    RequestRemoveInsuranceFundStake,
    SettleRevenueToInsuranceFund,
)
from protocol.math.insurance import if_shares_to_vault_amount, vault_amount_to_if_shares
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.records import InsuranceFundRecord, InsuranceFundStakeRecord
from protocol.state.insurance_fund_stake import InsuranceFundStake
from protocol.state.spot_market import InsuranceFund, PoolBalance, SpotMarket
from protocol.state.user import UserStats
from protocol.state_hash import state_hash
from protocol.types import SpotBalanceType
from tests.protocol.world import START_TS, USDC, World, keypair, make_state

Q = QUOTE_PRECISION
SBP = SPOT_BALANCE_PRECISION
NOW = 7_842_193_748

# --- controller: program vectors ------------------------------------------------------------------


def _market(**fund: Any) -> SpotMarket:
    """The program tests' market: ``SpotMarket::default()`` with a 1.111 deposit index."""
    fund.setdefault("unstaking_period", 0)
    return SpotMarket(
        market_index=0,
        name="test",
        oracle="oracle",
        decimals=0,
        optimal_utilization=0,
        optimal_borrow_rate=0,
        max_borrow_rate=0,
        cumulative_deposit_interest=1111 * SPOT_CUMULATIVE_INTEREST_PRECISION // 1000,
        insurance_fund=InsuranceFund(**fund),
    )


def _stake() -> InsuranceFundStake:
    return InsuranceFundStake.new(bytes(32), 0, 0)


def _stats(**fields: Any) -> UserStats:
    return UserStats(authority=bytes(32), **fields)


def _add(
    amount: int,
    vault: int,
    stake: InsuranceFundStake,
    stats: UserStats,
    market: SpotMarket,
    now: int = 0,
) -> InsuranceFundStakeRecord:
    return add_insurance_fund_stake(amount, vault, stake, stats, market, now, False)


def _remove(
    vault: int, stake: InsuranceFundStake, stats: UserStats, market: SpotMarket, now: int = 0
) -> int:
    amount, _ = remove_insurance_fund_stake(vault, stake, stats, market, now)
    return amount


def _code(exc: pytest.ExceptionInfo[ProtocolError]) -> ErrorCode:
    return exc.value.code


def test_basic_stake_program_vector() -> None:
    # program: basic_stake_if_test
    market, stake, stats = _market(), _stake(), _stats()
    amount = Q
    record = _add(amount, 0, stake, stats, market)
    assert stake.unchecked_if_shares() == amount
    assert record == InsuranceFundStakeRecord(
        ts=0,
        user_authority=bytes(32),
        action="stake",
        amount=amount,
        market_index=0,
        insurance_vault_amount_before=0,
        if_shares_before=0,
        user_if_shares_before=0,
        total_if_shares_before=0,
        if_shares_after=amount,
        user_if_shares_after=amount,
        total_if_shares_after=amount,
    )
    if_balance = amount

    with pytest.raises(ProtocolError) as exc:  # must request first
        _remove(if_balance, stake, stats, market)
    assert _code(exc) == ErrorCode.InvalidIFUnstake
    assert stake.unchecked_if_shares() == amount
    assert (market.insurance_fund.total_shares, market.insurance_fund.shares_base) == (amount, 0)

    request_remove_insurance_fund_stake(
        stake.unchecked_if_shares(), if_balance, stake, stats, market, 0
    )
    assert stake.last_withdraw_request_shares == stake.unchecked_if_shares()
    assert stake.last_withdraw_request_value == if_balance - 1  # rounding in favour of the fund
    assert stake.unchecked_if_shares() == amount
    assert market.insurance_fund.total_shares == amount

    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == amount - 1
    if_balance -= amount_returned
    assert stake.unchecked_if_shares() == 0
    assert stake.cost_basis == 1
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    assert (market.insurance_fund.total_shares, market.insurance_fund.shares_base) == (0, 0)
    assert if_balance == 1

    _add(1234, if_balance, stake, stats, market)
    assert stake.cost_basis == 1234
    assert market.insurance_fund.user_shares == 1234
    assert market.insurance_fund.total_shares == 1235  # the protocol claims the 1 left over


def test_basic_seeded_stake_program_vector() -> None:
    # program: basic_seeded_stake_if_test
    if_balance = 1000 * Q
    market, stake, stats = _market(), _stake(), _stats()
    amount = Q
    _add(amount, if_balance, stake, stats, market)
    assert market.insurance_fund.total_shares == 1001 * Q  # seeded with the vault
    assert market.insurance_fund.user_shares == Q
    assert stake.unchecked_if_shares() == amount
    if_balance += amount

    with pytest.raises(ProtocolError):
        _remove(if_balance, stake, stats, market)
    request_remove_insurance_fund_stake(
        stake.unchecked_if_shares(), if_balance, stake, stats, market, 0
    )
    assert stake.last_withdraw_request_shares == stake.unchecked_if_shares()
    assert stake.last_withdraw_request_value == 1_000_000

    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == amount
    if_balance -= amount_returned
    assert stake.unchecked_if_shares() == 0
    assert stake.cost_basis == 0
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    assert if_balance == 1_000_000_000

    _add(1234, if_balance, stake, stats, market)
    assert stake.cost_basis == 1234


def test_large_num_seeded_stake_program_vector() -> None:
    # program: large_num_seeded_stake_if_test (with a revenue settlement in the middle)
    if_balance = 199_000_000 * Q
    stake, stats = _stake(), _stats()
    amount = 199_000_001
    market = _market(revenue_settle_period=1)
    market.deposit_balance = 100 * SBP
    market.revenue_pool = PoolBalance(100 * SBP, 0)

    _add(amount, if_balance, stake, stats, market)
    assert market.insurance_fund.total_shares == 199_000_199_000_001  # seeded
    assert market.insurance_fund.user_shares == 199_000_001
    assert stake.unchecked_if_shares() == amount
    if_balance += amount

    with pytest.raises(ProtocolError):
        _remove(if_balance, stake, stats, market)
    spot_market_vault_amount = get_token_amount(
        market.deposit_balance, market, SpotBalanceType.Deposit
    )
    assert spot_market_vault_amount == 111

    flow, records = settle_revenue_to_insurance_fund(
        spot_market_vault_amount, if_balance, market, 1, True
    )
    assert flow == 11  # stakers: capped at a tenth of the pool
    assert market.revenue_pool.scaled_balance == 90_099_009_901
    assert get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit) == 100
    assert records == [
        InsuranceFundRecord(
            ts=1,
            spot_market_index=0,
            perp_market_index=0,
            user_if_factor=0,
            total_if_factor=0,
            vault_amount_before=111,
            insurance_vault_amount_before=199_000_199_000_001,
            total_if_shares_before=199_000_199_000_001,
            total_if_shares_after=199_000_199_000_001,
            amount=11,
        )
    ]
    if_balance += flow

    request_remove_insurance_fund_stake(
        stake.unchecked_if_shares(), if_balance, stake, stats, market, 0
    )
    assert stake.last_withdraw_request_shares == stake.unchecked_if_shares()
    assert stake.last_withdraw_request_value == 199_000_001

    amount_returned = _remove(if_balance, stake, stats, market, 1)
    assert amount_returned == amount
    if_balance -= amount_returned
    assert stake.unchecked_if_shares() == 0
    assert stake.cost_basis == 0
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    assert if_balance == 199_000_000_000_011
    assert market.insurance_fund.user_shares == 0
    assert market.insurance_fund.total_shares == 199_000_000_000_000

    market.revenue_pool.scaled_balance = 100 * SBP
    _add(199_033_744_205_760, if_balance, stake, stats, market, 20)
    assert stake.cost_basis == 199_033_744_205_760
    assert market.insurance_fund.user_shares == 199_033_744_205_748
    _add(199_033_744_205_760, if_balance, stake, stats, market, 30)
    assert stake.cost_basis == 398_067_488_411_520
    assert market.insurance_fund.user_shares == 597_134_982_544_960


def test_gains_stake_program_vector() -> None:
    # program: gains_stake_if_test
    market, stake, stats = _market(), _stake(), _stats()
    amount = Q
    _add(amount, 0, stake, stats, market)
    if_balance = amount
    if_balance += amount // 19  # gains
    n_shares = stake.unchecked_if_shares()
    expected_amount_returned = (amount + amount // 19) // 3 - 1

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == expected_amount_returned
    assert stake.unchecked_if_shares() == n_shares * 2 // 3 + 1
    if_balance -= amount_returned

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert stake.unchecked_if_shares() == n_shares // 3 + 1
    assert amount_returned == expected_amount_returned
    if_balance -= amount_returned

    request_remove_insurance_fund_stake(1, if_balance, stake, stats, market, 0)
    assert _remove(if_balance, stake, stats, market) == 1

    request_remove_insurance_fund_stake(n_shares // 3 - 1, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == expected_amount_returned + 1
    if_balance -= amount_returned
    assert if_balance == 2


def test_losses_stake_program_vector() -> None:
    # program: losses_stake_if_test
    market, stake, stats = _market(), _stake(), _stats()
    amount = Q
    _add(amount, 0, stake, stats, market)
    if_balance = amount - amount // 19  # losses
    n_shares = stake.unchecked_if_shares()
    expected_amount_returned = (amount - amount // 19) // 3

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == expected_amount_returned
    assert stake.unchecked_if_shares() == n_shares * 2 // 3 + 1
    if_balance -= amount_returned

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert stake.unchecked_if_shares() == n_shares // 3 + 1
    assert amount_returned == expected_amount_returned
    if_balance -= amount_returned

    request_remove_insurance_fund_stake(1, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert stake.unchecked_if_shares() == n_shares // 3
    assert amount_returned == 0

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, 0)
    amount_returned = _remove(if_balance, stake, stats, market)
    assert amount_returned == expected_amount_returned + 1
    assert stake.cost_basis == 52_632
    assert stake.unchecked_if_shares() == 0
    if_balance -= amount_returned
    assert if_balance == 1


def test_escrow_losses_stake_program_vector() -> None:
    # program: escrow_losses_stake_if_test: losses during the cooldown are the staker's
    market, stake, stats = _market(unstaking_period=60 * 60 * 24 * 7), _stake(), _stats()
    amount = 100_000 * Q
    _add(amount, 0, stake, stats, market)
    if_balance = amount - amount // 19  # losses
    n_shares = stake.unchecked_if_shares()
    expected_amount_returned = (amount - amount // 19) // 3
    o = if_shares_to_vault_amount(n_shares // 3, market.insurance_fund.total_shares, if_balance)
    assert stake.last_withdraw_request_shares == 0

    request_remove_insurance_fund_stake(n_shares // 3, if_balance, stake, stats, market, NOW)
    assert stake.last_withdraw_request_shares == 33_333_333_333
    assert stake.last_withdraw_request_value == expected_amount_returned
    assert expected_amount_returned == o == 31_578_947_368

    with pytest.raises(ProtocolError) as exc:  # not enough time for withdraw
        _remove(if_balance, stake, stats, market, NOW + 60 * 60 * 24)
    assert _code(exc) == ErrorCode.TryingToRemoveLiquidityTooFast

    if_balance -= if_balance // 2  # more losses
    amount_returned = _remove(if_balance, stake, stats, market, NOW + 60 * 60 * 24 * 7 + 3254)
    if_balance -= amount_returned
    assert amount_returned < expected_amount_returned - 1
    assert amount_returned == 15_789_473_684
    assert stake.unchecked_if_shares() == n_shares * 2 // 3 + 1
    assert stake.cost_basis == 84_210_526_316
    assert if_balance == 31_578_947_369


def test_escrow_gains_stake_program_vector() -> None:
    # program: escrow_gains_stake_if_test: gains during the cooldown are not the staker's
    market = _market(unstaking_period=60 * 60 * 24 * 7, total_shares=1, user_shares=0)
    stake, stats = _stake(), _stats()
    amount = 100_000_384_939

    # other holders have a claim on an empty fund: a new stake would be handed to them
    with pytest.raises(ProtocolError) as exc:
        _add(amount, 0, stake, stats, market)
    assert _code(exc) == ErrorCode.InvalidIFForNewStakes

    if_balance = 1
    _add(amount, if_balance, stake, stats, market)
    assert stake.unchecked_if_shares() == amount
    if_balance += amount
    assert if_balance == 100_000_384_940
    if_balance += amount // 13 - 1  # gains
    assert if_balance == 107_692_722_242

    n_shares = stake.unchecked_if_shares()
    expected_amount_returned = if_balance * n_shares // market.insurance_fund.total_shares
    o = if_shares_to_vault_amount(n_shares, market.insurance_fund.total_shares, if_balance)
    request_remove_insurance_fund_stake(n_shares, if_balance, stake, stats, market, NOW)
    value_at_req = stake.last_withdraw_request_value
    assert value_at_req == o == 107_692_722_240

    with pytest.raises(ProtocolError):
        _remove(if_balance, stake, stats, market, NOW + 60 * 60 * 24)

    if_balance += if_balance // 412  # more gains
    ideal_amount_returned = if_balance * n_shares // market.insurance_fund.total_shares
    amount_returned = _remove(if_balance, stake, stats, market, NOW + 60 * 60 * 24 * 7 + 3254)
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    if_balance -= amount_returned
    assert ideal_amount_returned - amount_returned == 261_390_102
    assert amount_returned == value_at_req == expected_amount_returned
    assert stake.unchecked_if_shares() == 0
    assert if_balance == 261_390_104  # for the protocol and the other stakers


def test_drained_fund_rebases_on_new_add_program_vector() -> None:
    # program: drained_stake_if_test_rebase_on_new_add
    market = _market(
        unstaking_period=60 * 60 * 24 * 7, total_shares=100_000 * Q, user_shares=80_000 * Q
    )
    stake, stats = _stake(), _stats()
    amount = 100_000_384_939
    orig_stake = _stake()
    orig_stake.update_if_shares(80_000 * Q, market)
    orig_stats = _stats(if_staked_quote_asset_amount=80_000 * Q)

    with pytest.raises(ProtocolError):  # the fund is empty but has holders
        _add(amount, 0, stake, stats, market)
    assert stake.unchecked_if_shares() == 0
    assert market.insurance_fund.total_shares == 100_000_000_000
    assert market.insurance_fund.user_shares == 80_000 * Q

    if_balance = 1
    _add(amount, if_balance, stake, stats, market)
    if_balance += amount

    # 1e11 shares over one token: rebased by 10^10
    assert market.insurance_fund.total_shares == 1_000_003_849_400
    assert market.insurance_fund.user_shares == 1_000_003_849_398
    assert stake.unchecked_if_shares() == 1_000_003_849_390
    assert market.insurance_fund.user_shares - stake.unchecked_if_shares() == 8
    assert (market.insurance_fund.shares_base, stake.if_base) == (10, 10)

    # the old stake is untouched until it is used
    assert (orig_stake.if_base, orig_stake.unchecked_if_shares()) == (0, 80_000_000_000)
    expected_shares_for_amount = vault_amount_to_if_shares(
        1, market.insurance_fund.total_shares, if_balance
    )
    assert expected_shares_for_amount == 10

    _add(1, if_balance, orig_stake, orig_stats, market)
    assert (market.insurance_fund.shares_base, orig_stake.if_base) == (10, 10)
    assert orig_stake.unchecked_if_shares() == 80_000_000_000 // 10_000_000_000 + 10 == 18


def test_drained_fund_rebases_on_remove_all_program_vector() -> None:
    # program: drained_stake_if_test_rebase_on_old_remove_all
    market = _market(total_shares=100_000 * Q, user_shares=80_000 * Q)
    stake = _stake()
    stake.update_if_shares(80_000 * Q, market)
    stats = _stats(if_staked_quote_asset_amount=80_000 * Q)
    if_balance = 0

    request_remove_insurance_fund_stake(
        stake.unchecked_if_shares(), if_balance, stake, stats, market, 0
    )
    assert _remove(if_balance, stake, stats, market) == 0
    assert market.insurance_fund.total_shares == 20_000_000_000
    assert market.insurance_fund.user_shares == 0

    if_balance = 1
    _add(10_000_000_000_000, if_balance, stake, stats, market)  # 10 mil
    assert market.insurance_fund.shares_base == 9
    assert market.insurance_fund.total_shares == 200_000_000_000_020
    assert market.insurance_fund.user_shares == 200_000_000_000_000


def test_drained_fund_rebases_on_partial_removal_program_vector() -> None:
    # program: drained_stake_if_test_rebase_on_old_remove_all_2
    market = _market(total_shares=100_930_021_053, user_shares=83_021 * Q + 135_723)
    stake = _stake()
    stake.update_if_shares(80_000 * Q, market)
    stats = _stats(if_staked_quote_asset_amount=80_000 * Q)
    if_balance = 0

    request_remove_insurance_fund_stake(
        stake.unchecked_if_shares() // 2, if_balance, stake, stats, market, 0
    )
    assert _remove(if_balance, stake, stats, market) == 0
    fund = market.insurance_fund
    assert (fund.total_shares, fund.user_shares, fund.shares_base) == (
        60_930_021_053,
        43_021_135_723,
        0,
    )

    if_balance = Q
    unstake_amt = stake.unchecked_if_shares() // 2
    assert unstake_amt == 20_000_000_000
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    assert stake.last_withdraw_request_ts == 0

    request_remove_insurance_fund_stake(unstake_amt, if_balance, stake, stats, market, 10)
    # the request rebases (by 10^3) the shares passed in as well
    assert stake.last_withdraw_request_shares == unstake_amt // 1000
    assert stake.unchecked_if_shares() == 40_000_000
    assert stake.last_withdraw_request_value == 328_245
    assert stake.last_withdraw_request_ts == 10
    assert (fund.total_shares, fund.user_shares, fund.shares_base) == (60_930_021, 43_021_135, 3)
    assert (
        if_shares_to_vault_amount(stake.unchecked_if_shares() // 2, fund.total_shares, if_balance)
        == stake.last_withdraw_request_value
    )

    user_before_double = if_shares_to_vault_amount(fund.user_shares, fund.total_shares, if_balance)
    protocol_shares = fund.total_shares - fund.user_shares
    protocol_before_double = if_shares_to_vault_amount(
        protocol_shares, fund.total_shares, if_balance
    )
    assert (user_before_double, protocol_before_double) == (706_074, 293_925)
    assert user_before_double + protocol_before_double == if_balance - 1  # rounding

    if_balance *= 2  # the vault doubles before the removal
    protocol_after_double = if_shares_to_vault_amount(
        protocol_shares, fund.total_shares, if_balance
    )
    user_after_double = if_shares_to_vault_amount(fund.user_shares, fund.total_shares, if_balance)
    amount_returned = _remove(if_balance, stake, stats, market, 10)
    protocol_after_user_withdraw = if_shares_to_vault_amount(
        fund.total_shares - fund.user_shares, fund.total_shares, if_balance
    )

    assert stake.unchecked_if_shares() == 20_000_000
    assert stake.if_base == fund.shares_base
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    assert amount_returned == 328_245  # the doubling after the request is not the staker's
    assert (fund.total_shares, fund.user_shares, fund.shares_base) == (40_930_021, 23_021_135, 3)
    assert protocol_after_double == protocol_before_double * 2
    assert user_after_double - 1 == user_before_double * 2
    assert user_after_double + protocol_after_double == if_balance - 1
    assert protocol_after_user_withdraw == 875_097
    assert protocol_after_user_withdraw > protocol_after_double

    _add(10_000_000_000_000, if_balance, stake, stats, market)
    if_balance += 10_000_000_000_000
    assert (fund.total_shares, fund.user_shares, fund.shares_base) == (
        204_650_145_930_021,
        204_650_128_021_135,
        3,
    )
    assert if_balance == 10_000_002_000_000


def test_multiple_stakes_and_rebase_program_vector() -> None:
    # program: multiple_if_stakes_and_rebase
    market = _market()
    stake_1, stats_1, stake_2, stats_2 = _stake(), _stats(), _stake(), _stats()
    amount = 100_000 * Q
    _add(amount, 0, stake_1, stats_1, market)
    _add(amount, amount, stake_2, stats_2, market)

    if_balance = Q  # the fund is drained
    assert (stake_1.if_base, market.insurance_fund.shares_base) == (0, 0)
    request_remove_insurance_fund_stake(
        stake_1.unchecked_if_shares(), if_balance, stake_1, stats_1, market, 0
    )
    assert (stake_1.if_base, market.insurance_fund.shares_base) == (4, 4)
    amount_returned = _remove(if_balance, stake_1, stats_1, market)
    assert amount_returned == 500_000
    if_balance -= amount_returned

    assert (stake_2.if_base, market.insurance_fund.shares_base) == (0, 4)
    request_remove_insurance_fund_stake(
        stake_2.unchecked_if_shares(), if_balance, stake_2, stats_2, market, 0
    )
    assert (stake_2.if_base, market.insurance_fund.shares_base) == (4, 4)
    assert stake_2.unchecked_if_shares() == market.insurance_fund.user_shares
    assert if_balance == 500_000

    amount_returned = _remove(if_balance, stake_2, stats_2, market)
    assert amount_returned == if_balance - 1
    if_balance -= amount_returned
    assert if_balance == 1
    assert (market.insurance_fund.user_shares, market.insurance_fund.total_shares) == (0, 0)


def test_multiple_stakes_rebase_and_admin_remove_program_vector() -> None:
    # program: multiple_if_stakes_and_rebase_and_admin_remove
    if_balance = 100 * Q
    market = _market()
    stake_1, stats_1, stake_2, stats_2 = _stake(), _stats(), _stake(), _stats()
    amount = 100_000 * Q

    amount_returned, _ = admin_remove_insurance_fund_stake(
        if_balance, if_balance // 2, market, 1, bytes(32)
    )
    if_balance -= amount_returned
    assert amount_returned == 50 * Q
    assert (market.insurance_fund.user_shares, market.insurance_fund.total_shares) == (0, 50 * Q)
    if_balance += amount_returned  # add it back

    _add(amount, if_balance, stake_1, stats_1, market)
    if_balance += amount
    _add(amount, if_balance, stake_2, stats_2, market)

    if_balance = Q  # the fund is drained
    request_remove_insurance_fund_stake(
        stake_1.unchecked_if_shares(), if_balance, stake_1, stats_1, market, 0
    )
    assert (stake_1.if_base, market.insurance_fund.shares_base) == (4, 4)
    amount_returned = _remove(if_balance, stake_1, stats_1, market)
    assert amount_returned == 499_750
    if_balance -= amount_returned

    request_remove_insurance_fund_stake(
        stake_2.unchecked_if_shares(), if_balance, stake_2, stats_2, market, 0
    )
    assert (stake_2.if_base, market.insurance_fund.shares_base) == (4, 4)
    assert stake_2.unchecked_if_shares() == market.insurance_fund.user_shares
    assert if_balance == 500_250

    fund = market.insurance_fund
    amount_returned, _ = admin_remove_insurance_fund_stake(
        if_balance, fund.total_shares - fund.user_shares, market, 1, bytes(32)
    )
    if_balance -= amount_returned
    assert amount_returned == 499
    assert fund.user_shares == fund.total_shares

    if_balance += 249  # half of it back
    amount_returned = _remove(if_balance, stake_2, stats_2, market)
    assert amount_returned == 499_750
    if_balance -= amount_returned
    assert if_balance == 250
    assert (fund.user_shares, fund.total_shares) == (0, 0)

    amount_returned, _ = admin_remove_insurance_fund_stake(if_balance, 250, market, 1, bytes(32))
    assert amount_returned == 250
    assert (fund.user_shares, fund.total_shares) == (0, 0)


def test_transfer_protocol_owned_stake_program_vector() -> None:
    # program: test_transfer_protocol_owned_stake
    if_balance = 199_000 * Q
    stake_2, stats_2 = _stake(), _stats()
    market = _market()
    market.insurance_fund.total_shares = 42_210_407_198  # a share price != 1

    amount_returned, _ = admin_remove_insurance_fund_stake(
        if_balance, market.insurance_fund.total_shares // 2, market, 1, bytes(32)
    )
    if_balance -= amount_returned
    assert amount_returned == 99_500_000_000
    assert (market.insurance_fund.user_shares, market.insurance_fund.total_shares) == (
        0,
        21_105_203_599,
    )

    now = 6_969_696_969
    transferred, _ = transfer_protocol_insurance_fund_stake(
        if_balance, 0, stake_2, stats_2, market, now, bytes(32)
    )
    assert (transferred, market.insurance_fund.user_shares) == (0, 0)
    transferred, records = transfer_protocol_insurance_fund_stake(
        if_balance, 1, stake_2, stats_2, market, now, bytes(32)
    )
    assert (transferred, market.insurance_fund.user_shares) == (4, 1)
    assert market.insurance_fund.total_shares == 21_105_203_599
    assert [r.action for r in records] == ["unstake_transfer", "stake_transfer"]

    with pytest.raises(ProtocolError) as exc:  # more than the protocol holds
        transfer_protocol_insurance_fund_stake(
            if_balance, market.insurance_fund.total_shares, stake_2, stats_2, market, now, bytes(32)
        )
    assert _code(exc) == ErrorCode.InsufficientIFShares

    fund = market.insurance_fund
    transferred, _ = transfer_protocol_insurance_fund_stake(
        if_balance, fund.total_shares - fund.user_shares, stake_2, stats_2, market, now, bytes(32)
    )
    assert fund.total_shares == fund.user_shares
    assert transferred == 99_499_999_995
    expected = _stake()
    expected.increase_if_shares(21_105_203_599, market)
    assert stats_2.if_staked_quote_asset_amount == 99_500_000_000
    assert stake_2 == expected

    with pytest.raises(ProtocolError):
        transfer_protocol_insurance_fund_stake(
            if_balance, fund.total_shares, stake_2, stats_2, market, now, bytes(32)
        )


def test_cancel_burns_the_gain_the_request_gave_up() -> None:
    # Two stakers of 100 tokens each; one asks to unstake 50 (value 50). The fund doubles
    # to 400. Cancelling: the 50 requested shares are worth 100 > 50, so only the shares 50
    # tokens buy from the rest of the fund are kept: 50 * (200 - 50) / (400 - 50) = 21.4 -> 21;
    # 29 shares are burned, and their value stays in the vault for every holder.
    market, stats = _market(), _stats()
    alice, bob = _stake(), _stake()
    _add(100, 0, alice, stats, market)
    _add(100, 100, bob, stats, market)
    request_remove_insurance_fund_stake(50, 200, alice, stats, market, 5)
    assert (alice.last_withdraw_request_shares, alice.last_withdraw_request_value) == (50, 50)
    with pytest.raises(ProtocolError) as exc:  # a cancel without a request is refused
        cancel_request_remove_insurance_fund_stake(400, bob, stats, market, 6)
    assert _code(exc) == ErrorCode.InvalidIFUnstakeCancel

    record = cancel_request_remove_insurance_fund_stake(400, alice, stats, market, 6)
    assert alice.unchecked_if_shares() == 71
    assert (market.insurance_fund.total_shares, market.insurance_fund.user_shares) == (171, 171)
    assert (alice.last_withdraw_request_shares, alice.last_withdraw_request_value) == (0, 0)
    assert alice.last_withdraw_request_ts == 6  # the cooldown restarts
    assert (record.action, record.amount, record.if_shares_before, record.if_shares_after) == (
        "unstake_cancel_request",
        0,
        100,
        71,
    )
    # 400 * 71 / 171 = 166.08 -> 166 and 400 * 100 / 171 = 233.9 -> 233
    assert if_shares_to_vault_amount(71, 171, 400) == 166
    assert if_shares_to_vault_amount(100, 171, 400) == 233


# --- instructions ---------------------------------------------------------------------------------

ALICE = keypair(31)
BOB = keypair(32)
KEEPER = keypair(33)


def _world(revenue: int = 0, **fund: Any) -> World:
    """The test exchange; ``revenue`` USDC tokens sit in the USDC revenue pool (counted in the
    market's deposits and held in its vault, as revenue always is)."""
    state = make_state()
    usdc = state.spot_markets[USDC]
    if revenue:
        scaled = revenue * (SBP // Q)  # the deposit index is 1.0
        usdc.revenue_pool = PoolBalance(scaled, USDC)
        usdc.deposit_balance += scaled
        usdc.vault_amount += revenue
    for name, value in fund.items():
        setattr(usdc.insurance_fund, name, value)
    return World(program=Program(state))


def _send(world: World, ix: Any, signer: Any) -> Executed | Rejected:
    result = world.send(ix, signers=(signer,))
    world.advance(1, seconds=0)  # a fresh recent_slot for the next transaction
    return result


def _ok(world: World, ix: Any, signer: Any) -> Executed:
    result = _send(world, ix, signer)
    assert isinstance(result, Executed), result
    return result


def _rejected(world: World, ix: Any, signer: Any, code: ErrorCode) -> None:
    before = state_hash(world.program.state, world.program.next_seq)
    result = _send(world, ix, signer)
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    assert state_hash(world.program.state, world.program.next_seq) == before


def _stake_of(world: World, kp: Any) -> InsuranceFundStake:
    return world.program.state.insurance_fund_stakes[(kp.pubkey, USDC)]


def _fund(world: World) -> InsuranceFund:
    return world.program.state.spot_markets[USDC].insurance_fund


def test_stake_request_cooldown_and_remove_through_the_program() -> None:
    world = _world()
    result = world.ok(
        InitializeInsuranceFundStake(ALICE.pubkey, USDC),
        AddInsuranceFundStake(ALICE.pubkey, USDC, 1_000 * Q),
        signers=(ALICE,),
    )
    world.advance(1, seconds=0)
    # staking first settles the revenue due (none here), then mints 1 share per token
    assert [type(r.record) for r in result.records] == [
        InsuranceFundRecord,
        InsuranceFundStakeRecord,
    ]
    assert result.records[1].record == InsuranceFundStakeRecord(
        ts=START_TS,
        user_authority=ALICE.pubkey,
        action="stake",
        amount=1_000 * Q,
        market_index=USDC,
        insurance_vault_amount_before=0,
        if_shares_before=0,
        user_if_shares_before=0,
        total_if_shares_before=0,
        if_shares_after=1_000 * Q,
        user_if_shares_after=1_000 * Q,
        total_if_shares_after=1_000 * Q,
    )
    assert _fund(world).vault_amount == 1_000 * Q
    assert world.program.state.user_stats[ALICE.pubkey].if_staked_quote_asset_amount == 1_000 * Q

    _ok(world, InitializeInsuranceFundStake(BOB.pubkey, USDC), BOB)
    _ok(world, AddInsuranceFundStake(BOB.pubkey, USDC, 500 * Q), BOB)
    assert _stake_of(world, BOB).if_shares == 500 * Q  # 500 * 1000 / 1000

    # 400 tokens of 1500 are 400 * 1500 / 1500 = 400 shares, worth 400 tokens
    _ok(world, RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, 400 * Q), ALICE)
    stake = _stake_of(world, ALICE)
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (
        400 * Q,
        400 * Q,
    )
    assert stake.last_withdraw_request_ts == START_TS
    # a second request, or a new stake, while one is pending
    _rejected(
        world,
        RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, Q),
        ALICE,
        ErrorCode.IFWithdrawRequestInProgress,
    )
    _rejected(
        world,
        AddInsuranceFundStake(ALICE.pubkey, USDC, Q),
        ALICE,
        ErrorCode.IFWithdrawRequestInProgress,
    )

    # the cooldown is 13 days
    world.advance(1, seconds=THIRTEEN_DAY - 1)
    _rejected(
        world,
        RemoveInsuranceFundStake(ALICE.pubkey, USDC),
        ALICE,
        ErrorCode.TryingToRemoveLiquidityTooFast,
    )
    world.advance(1, seconds=1)
    result = _ok(world, RemoveInsuranceFundStake(ALICE.pubkey, USDC), ALICE)
    record = result.records[0].record
    assert isinstance(record, InsuranceFundStakeRecord)
    assert (record.action, record.amount, record.if_shares_after) == ("unstake", 400 * Q, 600 * Q)
    assert _fund(world).vault_amount == 1_100 * Q
    stake = _stake_of(world, ALICE)
    assert (stake.if_shares, stake.cost_basis, stake.last_withdraw_request_shares) == (
        600 * Q,
        600 * Q,
        0,
    )
    assert (_fund(world).total_shares, _fund(world).user_shares) == (1_100 * Q, 1_100 * Q)
    assert world.program.state.user_stats[ALICE.pubkey].if_staked_quote_asset_amount == 600 * Q
    # the removal restarted the clock; once it has run, there is still nothing requested
    _rejected(
        world,
        RemoveInsuranceFundStake(ALICE.pubkey, USDC),
        ALICE,
        ErrorCode.TryingToRemoveLiquidityTooFast,
    )
    world.advance(1, seconds=THIRTEEN_DAY)
    _rejected(
        world, RemoveInsuranceFundStake(ALICE.pubkey, USDC), ALICE, ErrorCode.InvalidIFUnstake
    )


def test_staking_settles_the_revenue_due_first() -> None:
    # 100,000 USDC of revenue waits in the pool and a settlement is due. Alice's stake
    # settles it first: with no stakers there is no cap, so all of it moves to the fund,
    # which then holds 100,000e6 tokens and no shares: the protocol owns them (total_shares
    # is seeded with the vault). Alice's 1000e6 tokens buy 1000e6 * 100000e6 / 100000e6 =
    # 1000e6 shares; the protocol keeps the 100,000e6 it had.
    world = _world(revenue=100_000 * Q)
    result = world.ok(
        InitializeInsuranceFundStake(ALICE.pubkey, USDC),
        AddInsuranceFundStake(ALICE.pubkey, USDC, 1_000 * Q),
        signers=(ALICE,),
    )
    world.advance(1, seconds=0)
    settled = result.records[0].record
    assert isinstance(settled, InsuranceFundRecord)
    assert (settled.amount, settled.vault_amount_before, settled.insurance_vault_amount_before) == (
        100_000 * Q,
        100_000 * Q,
        0,
    )
    fund = _fund(world)
    assert (fund.vault_amount, fund.total_shares, fund.user_shares) == (
        101_000 * Q,
        101_000 * Q,
        1_000 * Q,
    )
    assert fund.last_revenue_settle_ts == START_TS
    market = world.program.state.spot_markets[USDC]
    assert (market.vault_amount, market.revenue_pool.scaled_balance) == (0, 0)
    assert _stake_of(world, ALICE).if_shares == 1_000 * Q

    # Bob stakes in the same hour: nothing is due, so no settlement runs
    world.ok(
        InitializeInsuranceFundStake(BOB.pubkey, USDC),
        AddInsuranceFundStake(BOB.pubkey, USDC, 1_000 * Q),
        signers=(BOB,),
    )
    assert _stake_of(world, BOB).if_shares == 1_000 * Q  # 1000e6 * 101000e6 / 101000e6
    assert (_fund(world).vault_amount, _fund(world).total_shares) == (102_000 * Q, 102_000 * Q)


def test_cancel_with_equal_stakers_after_a_revenue_settlement() -> None:
    world = _world(revenue=100_000 * Q, last_revenue_settle_ts=START_TS)
    for kp in (ALICE, BOB):
        world.ok(
            InitializeInsuranceFundStake(kp.pubkey, USDC),
            AddInsuranceFundStake(kp.pubkey, USDC, 1_000 * Q),
            signers=(kp,),
        )
        world.advance(1, seconds=0)
    _ok(world, RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, 500 * Q), ALICE)
    # START_TS is 800 s past the hour: the next settlement is due 2800 s later
    world.advance(1, seconds=2_800)
    _ok(world, SettleRevenueToInsuranceFund(USDC), KEEPER)
    assert _fund(world).vault_amount == 2_002_283_105

    result = _ok(world, CancelRequestRemoveInsuranceFundStake(ALICE.pubkey, USDC), ALICE)
    record = result.records[0].record
    assert isinstance(record, InsuranceFundStakeRecord)
    assert (record.if_shares_before, record.if_shares_after) == (1_000 * Q, 999_240_121)
    fund = _fund(world)
    assert (fund.total_shares, fund.user_shares) == (1_999_240_121, 1_999_240_121)
    # Alice: 2002283105 * 999240121 / 1999240121 = 1,000,761,034; Bob's untouched 1000e6
    # shares rose from 1,001,141,552 to 2002283105 * 1000e6 / 1999240121 = 1,001,522,070
    assert if_shares_to_vault_amount(999_240_121, fund.total_shares, fund.vault_amount) == (
        1_000_761_034
    )
    assert if_shares_to_vault_amount(1_000 * Q, fund.total_shares, fund.vault_amount) == (
        1_001_522_070
    )
    stake = _stake_of(world, ALICE)
    assert (stake.last_withdraw_request_shares, stake.last_withdraw_request_value) == (0, 0)
    _rejected(
        world,
        CancelRequestRemoveInsuranceFundStake(ALICE.pubkey, USDC),
        ALICE,
        ErrorCode.NoIFWithdrawRequestInProgress,
    )


def test_staking_instructions_refuse_bad_requests_and_change_nothing() -> None:
    world = _world()
    # no stake account yet
    _rejected(
        world,
        AddInsuranceFundStake(ALICE.pubkey, USDC, Q),
        ALICE,
        ErrorCode.UnableToLoadAccountLoader,
    )
    _rejected(world, InitializeInsuranceFundStake(ALICE.pubkey, 9), ALICE, ErrorCode.UnknownMarket)
    # only the authority may create or use its stake
    _rejected(
        world,
        InitializeInsuranceFundStake(ALICE.pubkey, USDC),
        BOB,
        ErrorCode.UnauthorizedSigner,
    )
    _ok(world, InitializeInsuranceFundStake(ALICE.pubkey, USDC), ALICE)
    _rejected(
        world, InitializeInsuranceFundStake(ALICE.pubkey, USDC), ALICE, ErrorCode.UserAlreadyExists
    )
    _rejected(
        world, AddInsuranceFundStake(ALICE.pubkey, USDC, Q), BOB, ErrorCode.UnauthorizedSigner
    )
    _rejected(
        world, AddInsuranceFundStake(ALICE.pubkey, USDC, 0), ALICE, ErrorCode.InsufficientDeposit
    )
    _ok(world, AddInsuranceFundStake(ALICE.pubkey, USDC, 10 * Q), ALICE)
    _rejected(
        world,
        RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, 0),
        ALICE,
        ErrorCode.IFWithdrawRequestTooSmall,
    )
    _rejected(
        world,
        RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, 11 * Q),
        ALICE,
        ErrorCode.InsufficientIFShares,
    )
    _rejected(
        world,
        RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, Q),
        BOB,
        ErrorCode.UnauthorizedSigner,
    )
    _rejected(
        world,
        CancelRequestRemoveInsuranceFundStake(ALICE.pubkey, USDC),
        ALICE,
        ErrorCode.NoIFWithdrawRequestInProgress,
    )


def test_remove_is_refused_while_the_market_is_over_90_percent_utilized() -> None:
    world = _world(unstaking_period=0)
    _ok(world, InitializeInsuranceFundStake(ALICE.pubkey, USDC), ALICE)
    _ok(world, AddInsuranceFundStake(ALICE.pubkey, USDC, 10 * Q), ALICE)
    _ok(world, RequestRemoveInsuranceFundStake(ALICE.pubkey, USDC, 5 * Q), ALICE)
    world.program.state.spot_markets[USDC].utilization_twap = 900_001
    _rejected(
        world,
        RemoveInsuranceFundStake(ALICE.pubkey, USDC),
        ALICE,
        ErrorCode.SpotMarketInsufficientDeposits,
    )
    world.program.state.spot_markets[USDC].utilization_twap = 900_000
    _ok(world, RemoveInsuranceFundStake(ALICE.pubkey, USDC), ALICE)
    assert _fund(world).vault_amount == 5 * Q


# --- property: shares always price to the vault --------------------------------------------------

STAKERS = [keypair(40 + i) for i in range(3)]


def _rebased(stake: InsuranceFundStake, shares_base: int) -> int:
    """The stake's shares at the fund's base (a stale stake is rebased lazily)."""
    divisor: int = 10 ** (shares_base - stake.if_base)
    return stake.if_shares // divisor


class InsuranceFundShares(RuleBasedStateMachine):
    """Random staking through signed transactions, with revenue arriving in the pool and
    insurance payouts leaving the vault (standing for the bankruptcy code's draws, which
    only lower ``insurance_fund.vault_amount``)."""

    @initialize(
        protocol_pct=st.integers(0, 100),
        user_pct=st.integers(0, 100),
        stakes=st.lists(st.integers(0, 10**10), min_size=len(STAKERS), max_size=len(STAKERS)),
    )
    def setup(self, protocol_pct: int, user_pct: int, stakes: list[int]) -> None:
        total_factor = protocol_pct * 10_000
        self.world = _world(
            revenue=50_000 * Q,
            total_factor=total_factor,
            user_factor=total_factor * user_pct // 100,
        )
        self.staked = 0  # tokens staked minus tokens paid out, per the records
        self.settled = 0  # revenue settled into the fund, per the records
        self.paid_out = 0  # insurance payouts
        self.outside = 0  # revenue that arrived from outside the market
        state = self.world.program.state
        self.tokens_at_start = (
            state.spot_markets[USDC].vault_amount
            + state.spot_markets[USDC].insurance_fund.vault_amount
        )
        for kp, amount in zip(STAKERS, stakes, strict=True):
            _ok(self.world, InitializeInsuranceFundStake(kp.pubkey, USDC), kp)
            if amount:
                self._send(AddInsuranceFundStake(kp.pubkey, USDC, amount), kp)

    def _send(self, ix: Any, signer: Any) -> Executed | Rejected:
        before = state_hash(self.world.program.state, self.world.program.next_seq)
        result = _send(self.world, ix, signer)
        if isinstance(result, Rejected):
            assert state_hash(self.world.program.state, self.world.program.next_seq) == before
            return result
        for sequenced in result.records:
            record = sequenced.record
            if isinstance(record, InsuranceFundStakeRecord):
                if record.action == "stake":
                    self.staked += record.amount
                elif record.action == "unstake":
                    self.staked -= record.amount
            elif isinstance(record, InsuranceFundRecord):
                self.settled += record.amount
        return result

    @rule(who=st.integers(0, 2), amount=st.integers(1, 10**10))
    def add(self, who: int, amount: int) -> None:
        self._send(AddInsuranceFundStake(STAKERS[who].pubkey, USDC, amount), STAKERS[who])

    @rule(who=st.integers(0, 2), pct=st.integers(0, 110))
    def request(self, who: int, pct: int) -> None:
        # ask for a part of what the stake is worth (above 100%: more than it holds)
        state = self.world.program.state
        fund = state.spot_markets[USDC].insurance_fund
        shares = _rebased(
            state.insurance_fund_stakes[(STAKERS[who].pubkey, USDC)], fund.shares_base
        )
        value = if_shares_to_vault_amount(shares, fund.total_shares, fund.vault_amount)
        amount = value * pct // 100
        self._send(RequestRemoveInsuranceFundStake(STAKERS[who].pubkey, USDC, amount), STAKERS[who])

    @rule(who=st.integers(0, 2))
    def cancel(self, who: int) -> None:
        self._send(CancelRequestRemoveInsuranceFundStake(STAKERS[who].pubkey, USDC), STAKERS[who])

    @rule(who=st.integers(0, 2), after_cooldown=st.booleans())
    def remove(self, who: int, after_cooldown: bool) -> None:
        if after_cooldown:
            self.world.advance(1, seconds=THIRTEEN_DAY)
        self._send(RemoveInsuranceFundStake(STAKERS[who].pubkey, USDC), STAKERS[who])

    @rule()
    def settle(self) -> None:
        self._send(SettleRevenueToInsuranceFund(USDC), KEEPER)

    @rule(seconds=st.sampled_from([60, 1_800, 3_600, 86_400, THIRTEEN_DAY]))
    def wait(self, seconds: int) -> None:
        self.world.advance(1, seconds=seconds)

    @rule(amount=st.integers(1, 10**10))
    def revenue_arrives(self, amount: int) -> None:
        # fees or interest landing in the revenue pool: tokens and a deposit of the pool
        market = self.world.program.state.spot_markets[USDC]
        scaled = amount * (SBP // Q)
        market.revenue_pool.scaled_balance += scaled
        market.deposit_balance += scaled
        market.vault_amount += amount
        self.outside += amount

    @rule(pct=st.integers(1, 100))
    def insurance_payout(self, pct: int) -> None:
        # a bankruptcy draws on the fund, at most all but one token unit
        fund = self.world.program.state.spot_markets[USDC].insurance_fund
        amount = min(fund.vault_amount * pct // 100, max(fund.vault_amount - 1, 0))
        fund.vault_amount -= amount
        self.paid_out += amount

    @invariant()
    def shares_price_to_the_vault(self) -> None:
        state = self.world.program.state
        fund = state.spot_markets[USDC].insurance_fund
        vault, total, users = fund.vault_amount, fund.total_shares, fund.user_shares
        stakes = [
            _rebased(state.insurance_fund_stakes[(kp.pubkey, USDC)], fund.shares_base)
            for kp in STAKERS
        ]
        assert users <= total
        assert sum(stakes) <= users
        # a stake's lazy rebase truncates: less than one share per stake goes astray
        assert users - sum(stakes) < len(STAKERS)
        if total == 0:
            assert users == 0
            return
        values = [if_shares_to_vault_amount(s, total, vault) for s in stakes]
        protocol_value = if_shares_to_vault_amount(total - users, total, vault)
        orphan_value = if_shares_to_vault_amount(users - sum(stakes), total, vault)
        # never more than the vault; short of it by rounding only (< 1 unit per holder)
        assert sum(values) + protocol_value <= vault
        assert vault - (sum(values) + protocol_value) <= orphan_value + len(STAKERS) + 2

    @invariant()
    def tokens_are_accounted_for(self) -> None:
        market = self.world.program.state.spot_markets[USDC]
        fund = market.insurance_fund
        assert fund.vault_amount == self.staked + self.settled - self.paid_out
        # a settlement moves tokens between the two vaults and creates none
        assert (
            market.vault_amount + fund.vault_amount
            == self.tokens_at_start + self.outside + self.staked - self.paid_out
        )
        # the market still holds what its depositors (and the revenue pool) are owed
        deposits = get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit)
        assert market.vault_amount >= deposits


TestInsuranceFundShares = InsuranceFundShares.TestCase
TestInsuranceFundShares.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
