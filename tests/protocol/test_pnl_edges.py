"""Settle-pnl edges: quiet refusals in ``TrySettle`` mode (and when they stop being quiet), a
margin verdict passed in, prediction markets and the price band, and the revenue-pool period.

Accounts are those of :mod:`tests.protocol.test_settle_pnl` (the program's
``controller/pnl/tests.rs`` market: reserves 100/100, users net 1 long for $150, a $50 pnl pool,
USDC with $100 of deposits).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from protocol.accounts import ProgramState
from protocol.constants import BASE_PRECISION, PEG_PRECISION, PRICE_PRECISION
from protocol.controller.pnl import (
    SettlePnlMode,
    calculate_revenue_pool_transfer,
    settle_pnl,
    update_pool_balances,
    validate_market_within_price_band,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.records import SettlePnlRecord
from protocol.state import HistoricalOracleData, State
from protocol.state.spot_market import PoolBalance
from protocol.types import ContractType, MarketStatus
from tests.protocol.test_settle_pnl import (
    KEEPER,
    KEY,
    SBP,
    USER,
    Q,
    _accounts,
    _perp_market,
    _pos,
    _state,
    _summary,
    _usdc,
)

P = PRICE_PRECISION


def _stale_oracle_state(last_oracle_valid: bool) -> ProgramState:
    # the curve moves (intensity 100), the oracle is 100_000 slots old and 5% from its
    # 5-minute twap: not usable for settling, so the AMM must have been updated this slot
    position = _pos(
        base_asset_amount=-BASE_PRECISION,
        quote_asset_amount=50 * Q,
        quote_entry_amount=50 * Q,
        quote_break_even_amount=50 * Q,
    )
    return _state(
        position,
        number_of_users=0,
        amm={
            "quote_asset_amount": 150 * Q,
            "curve_update_intensity": 100,
            "last_oracle_valid": last_oracle_valid,
            "last_update_slot": 0,
            "historical_oracle_data": replace(
                HistoricalOracleData.seeded(100 * P, 0), last_oracle_price_twap_5min=95 * P
            ),
        },
    )


def _with_base(status: MarketStatus) -> ProgramState:
    position = _pos(
        base_asset_amount=BASE_PRECISION, quote_asset_amount=-90 * Q, quote_entry_amount=-100 * Q
    )
    return _state(position, status=status)


QUIET_REFUSALS: list[tuple[str, Any, ErrorCode]] = [
    ("no_position", lambda: _state(None, deposit=50 * SBP), ErrorCode.UserHasNoPositionInMarket),
    (
        "below_maintenance",
        lambda: _state(_pos(quote_asset_amount=-120 * Q)),
        ErrorCode.InsufficientCollateralForSettlingPNL,
    ),
    (
        "oracle_invalid_last_update",
        lambda: _stale_oracle_state(False),
        ErrorCode.OracleStaleForMargin,
    ),
    (
        "amm_not_updated_this_slot",
        lambda: _stale_oracle_state(True),
        ErrorCode.AMMNotUpdatedInSameSlot,
    ),
    (
        "base_in_reduce_only_market",
        lambda: _with_base(MarketStatus.ReduceOnly),
        ErrorCode.InvalidMarketStatusToSettlePnl,
    ),
    (
        "flat_in_fill_paused_market",
        lambda: _state(_pos(quote_asset_amount=-5 * Q), status=MarketStatus.FillPaused),
        ErrorCode.InvalidMarketStatusToSettlePnl,
    ),
    (
        "nothing_to_settle",
        lambda: _state(
            _pos(
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-100 * Q,
                quote_entry_amount=-100 * Q,
            )
        ),
        ErrorCode.NoUnsettledPnl,
    ),
]


@pytest.mark.parametrize(
    ("build", "code"),
    [(build, code) for _, build, code in QUIET_REFUSALS],
    ids=[name for name, _, _ in QUIET_REFUSALS],
)
def test_try_settle_declines_quietly_where_must_settle_fails(build: Any, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as err:
        settle_pnl(_accounts(build(), slot=100_000, ts=19_929_299), KEY, 0, USER.pubkey)
    assert err.value.code == code

    accounts = _accounts(build(), slot=100_000, ts=19_929_299)
    before = _summary(accounts)
    assert settle_pnl(accounts, KEY, 0, USER.pubkey, mode=SettlePnlMode.TrySettle) is None
    assert not [r for r in accounts.records if isinstance(r, SettlePnlRecord)]
    assert _summary(accounts) == before


def test_try_settle_turns_loud_once_the_pools_have_moved() -> None:
    # a keeper settling a user's $50 gain while the pool is not in excess: the pnl pool has
    # already paid out by the time the refusal is known, so it cannot be a quiet no-op
    position = _pos(
        base_asset_amount=-BASE_PRECISION, quote_asset_amount=100 * Q, quote_entry_amount=50 * Q
    )
    state = _state(
        position, oracle_price=50 * P, peg=51 * PEG_PRECISION, amm={"quote_asset_amount": 150 * Q}
    )
    with pytest.raises(ProtocolError) as err:
        settle_pnl(_accounts(state), KEY, 0, KEEPER.pubkey, mode=SettlePnlMode.TrySettle)
    assert err.value.code == ErrorCode.UserMustSettleTheirOwnPositiveUnsettledPNL


def test_a_margin_verdict_passed_in_is_used_as_given() -> None:
    # $100 deposited, -$50 of pnl: healthy, and settles when measured (test_settle_pnl); a
    # caller that already found it below maintenance is believed
    accounts = _accounts(_state(_pos(quote_asset_amount=-50 * Q)))
    before = _summary(accounts)
    with pytest.raises(ProtocolError) as err:
        settle_pnl(accounts, KEY, 0, USER.pubkey, meets_margin_requirement=False)
    assert err.value.code == ErrorCode.InsufficientCollateralForSettlingPNL
    assert _summary(accounts) == before


def test_prediction_markets_are_exempt_from_the_price_band() -> None:
    # reserve $121 against a $150 5-minute twap: 23.9% apart, past the 10% band
    market = _perp_market(150 * P, 121 * PEG_PRECISION)
    with pytest.raises(ProtocolError) as err:
        validate_market_within_price_band(market, State(), 150 * P)
    assert err.value.code == ErrorCode.PriceBandsBreached
    market.contract_type = ContractType.Prediction
    assert validate_market_within_price_band(market, State(), 150 * P)


# --- the revenue pool -------------------------------------------------------------------------


def _surplus_market(since_last_settle: int) -> Any:
    # test_settle_pnl's fee-surplus market: $300 may move per period, of which
    # ``since_last_settle`` (negative: sent) is already used
    market = _perp_market(
        100 * P,
        100 * PEG_PRECISION,
        amm={
            "total_fee_minus_distributions": 1_000 * Q,
            "total_exchange_fee": 1_000 * Q,
            "net_revenue_since_last_funding": 400 * Q,
            "fee_pool": PoolBalance(600 * SBP, 0),
        },
    )
    claim = market.insurance_claim
    claim.max_revenue_withdraw_per_period = 300 * Q
    claim.revenue_withdraw_since_last_settle = since_last_settle
    claim.last_revenue_withdraw_ts = 500
    return market


def test_a_spent_revenue_allowance_sends_nothing() -> None:
    market = _surplus_market(-300 * Q)
    spot = _usdc(deposit_balance=650 * SBP)
    # min(-300 + 300, 400) = 0 left this period
    assert update_pool_balances(market, spot, 0, 0, now=1_000) == 0
    assert market.amm.fee_pool.scaled_balance == 600 * SBP
    assert spot.revenue_pool.scaled_balance == 0


def test_an_insurance_fund_settlement_opens_a_new_revenue_period() -> None:
    market = _surplus_market(-300 * Q)
    spot = _usdc(deposit_balance=650 * SBP)
    spot.insurance_fund.last_revenue_settle_ts = 900  # after the market's last draw at 500
    update_pool_balances(market, spot, 0, 0, now=1_000)
    # the used allowance resets, so min(0 + 300, 400, 600 - 250, 500) = 300 moves
    assert spot.revenue_pool.scaled_balance == 300 * SBP
    assert market.amm.fee_pool.scaled_balance == 300 * SBP
    assert market.insurance_claim.revenue_withdraw_since_last_settle == -300 * Q
    assert market.insurance_claim.last_revenue_withdraw_ts == 1_000


def test_a_revenue_settlement_in_the_future_is_a_clock_inconsistency() -> None:
    market = _surplus_market(-300 * Q)
    spot = _usdc(deposit_balance=650 * SBP)
    spot.insurance_fund.last_revenue_settle_ts = 900
    with pytest.raises(ProtocolError) as err:
        update_pool_balances(market, spot, 0, 0, now=800)
    assert err.value.code == ErrorCode.BlockchainClockInconsistency


@pytest.mark.parametrize(("fees", "expected"), [(250 * Q, 0), (249 * Q, -Q)])
def test_revenue_pool_tops_up_the_fee_pool_only_below_the_threshold(
    fees: int, expected: int
) -> None:
    # the AMM's fees net of withdrawals against the $250 threshold: at it, nothing moves either
    # way; $1 short of it, the revenue pool ($10, allowance $5) sends back that $1
    market = _perp_market(100 * P, 100 * PEG_PRECISION, amm={"total_fee_minus_distributions": fees})
    market.insurance_claim.max_revenue_withdraw_per_period = 5 * Q
    spot = _usdc(deposit_balance=110 * SBP, revenue_pool=PoolBalance(10 * SBP, 0))
    assert calculate_revenue_pool_transfer(market, spot, 0, fees) == expected
