"""Liquidations (``protocol/controller/liquidation.py`` and the liquidation instructions).

Vectors marked "program" reproduce ``controller/liquidation/tests.rs`` on the same accounts: a
perp market with 100/100 reserves at peg and oracle $100, step 0.01, margin 10% / 5%, a 1%
liquidator fee and a 1% insurance-fund fee; a USDC market and (for spot liquidations) a
6-decimal SOL market at $100 with weights .8/.9 (assets) and 1.2/1.1 (liabilities). The
program's tests keep emptied positions as available slots; this model drops them
(``get_*_position`` returns ``None``). Other vectors are worked by hand in the comments.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    LIQUIDATION_FEE_PRECISION,
    LIQUIDATION_PCT_PRECISION,
    MARGIN_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    ONE_HOUR,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.controller.liquidation import (
    liquidate_borrow_for_perp_pnl,
    liquidate_perp,
    liquidate_perp_pnl_for_deposit,
    liquidate_spot,
    set_user_status_to_being_liquidated,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.instructions import LiquidatePerp, LiquidateSpot, SetUserStatusToBeingLiquidated
from protocol.keys import Keypair
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
)
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.records import LiquidationRecord, OrderActionRecord
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OracleAccount,
    PerpMarket,
    SpotMarket,
    State,
    User,
    UserStats,
)
from protocol.state.margin_calculation import MarginContext
from protocol.state.user import Order, PerpPosition, SpotPosition
from protocol.transaction import Transaction
from protocol.types import (
    ContractTier,
    MarketType,
    OracleSource,
    OrderType,
    PositionDirection,
    SpotBalanceType,
    UserStatus,
)

Q = QUOTE_PRECISION
R = AMM_RESERVE_PRECISION
SBP = SPOT_BALANCE_PRECISION
LFP = LIQUIDATION_FEE_PRECISION
W = SPOT_WEIGHT_PRECISION
USER = Keypair.from_seed(bytes([1]) * 32)
LIQUIDATOR = Keypair.from_seed(bytes([2]) * 32)
UK = (USER.pubkey, 0)
LK = (LIQUIDATOR.pubkey, 0)
DEPOSIT = SpotBalanceType.Deposit
BORROW = SpotBalanceType.Borrow


# --- fixtures ------------------------------------------------------------------------------------
def _perp_market(**fields: Any) -> PerpMarket:
    amm_fields = fields.pop("amm", {})
    amm = AMM(
        **{
            "oracle": "SOL/USD",
            "base_asset_reserve": 100 * R,
            "quote_asset_reserve": 100 * R,
            "bid_base_asset_reserve": 101 * R,
            "bid_quote_asset_reserve": 99 * R,
            "ask_base_asset_reserve": 99 * R,
            "ask_quote_asset_reserve": 101 * R,
            "sqrt_k": 100 * R,
            "terminal_quote_asset_reserve": 100 * R,
            "peg_multiplier": 100 * PEG_PRECISION,
            "order_step_size": 10_000_000,
            "quote_asset_amount": -150 * Q,
            "base_asset_amount_with_amm": BASE_PRECISION,
            "historical_oracle_data": HistoricalOracleData.seeded(100 * PRICE_PRECISION, 0),
            "funding_period": ONE_HOUR,
            **amm_fields,
        }
    )
    return PerpMarket(
        **{
            "market_index": 0,
            "name": "SOL-PERP",
            "amm": amm,
            "contract_tier": ContractTier.HighlySpeculative,
            "margin_ratio_initial": 1000,
            "margin_ratio_maintenance": 500,
            "number_of_users_with_base": 1,
            "liquidator_fee": LFP // 100,
            "if_liquidation_fee": LFP // 100,
            **fields,
        }
    )


def _usdc(**fields: Any) -> SpotMarket:
    return SpotMarket(
        **{
            "market_index": 0,
            "name": "USDC",
            "oracle": "USDC/USD",
            "decimals": 6,
            "oracle_source": OracleSource.QuoteAsset,
            "historical_oracle_data": HistoricalOracleData.seeded(PRICE_PRECISION, 0),
            "deposit_balance": 200 * SBP,
            **fields,
        }
    )


def _sol(**fields: Any) -> SpotMarket:
    twap = 99 * PRICE_PRECISION
    return SpotMarket(
        **{
            "market_index": 1,
            "name": "SOL",
            "oracle": "SOL/USD",
            "decimals": 6,
            "historical_oracle_data": HistoricalOracleData(100 * PRICE_PRECISION, 0, 0, twap, twap),
            "initial_asset_weight": 8 * W // 10,
            "maintenance_asset_weight": 9 * W // 10,
            "initial_liability_weight": 12 * W // 10,
            "maintenance_liability_weight": 11 * W // 10,
            "deposit_balance": SBP,
            "borrow_balance": SBP,
            "liquidator_fee": LFP // 1000,
            **fields,
        }
    )


def _usdc_deposit(amount: int) -> SpotPosition:
    return SpotPosition(0, scaled_balance=amount * SBP)


def _long_order(
    base: int, order_id: int = 1, direction: PositionDirection = PositionDirection.Long
) -> Order:
    return Order(
        order_id=order_id,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=direction,
        base_asset_amount=base,
        slot=0,
    )


def _state(
    user: User,
    liquidator: User,
    *,
    perp: PerpMarket | None = None,
    spot: tuple[SpotMarket, ...] | None = None,
    state: State | None = None,
    sol_price: int = 100 * PRICE_PRECISION,
) -> ProgramState:
    markets = spot if spot is not None else (_usdc(),)
    return ProgramState(
        state=state
        if state is not None
        else State(liquidation_margin_buffer_ratio=10, initial_pct_to_liquidate=10_000),
        spot_markets={m.market_index: m for m in markets},
        perp_markets={} if perp is None else {0: perp},
        oracles={
            "USDC/USD": OracleAccount("USDC/USD", PRICE_PRECISION, 0, 0),
            "SOL/USD": OracleAccount("SOL/USD", sol_price, 0, 0),
        },
        users={UK: user, LK: liquidator},
        user_stats={
            USER.pubkey: UserStats(authority=USER.pubkey),
            LIQUIDATOR.pubkey: UserStats(authority=LIQUIDATOR.pubkey),
        },
    )


def _user(**fields: Any) -> User:
    return User(authority=USER.pubkey, **fields)


def _liquidator(usdc: int = 50) -> User:
    return User(authority=LIQUIDATOR.pubkey, spot_positions=[_usdc_deposit(usdc)])


def _run(state: ProgramState, slot: int = 0, ts: int = 0) -> Accounts:
    return Accounts(state, Clock(slot, ts), signers=(LIQUIDATOR.pubkey,))


def _liquidate_perp(
    state: ProgramState, max_base: int, limit_price: int | None = None, slot: int = 0, ts: int = 0
) -> Accounts:
    accounts = _run(state, slot, ts)
    liquidate_perp(accounts, 0, max_base, limit_price, UK, LK)
    accounts.commit()
    return accounts


def _code(fn: Any) -> ErrorCode:
    with pytest.raises(ProtocolError) as err:
        fn()
    code: ErrorCode = err.value.code
    return code


def _long_user_state(limit_fee_state: State | None = None) -> ProgramState:
    """program: 1 long bought for $150, a 1-base open bid, no deposit; liquidator $50."""
    user = _user(
        orders=[_long_order(BASE_PRECISION)],
        next_order_id=2,
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-150 * Q,
                quote_entry_amount=-150 * Q,
                quote_break_even_amount=-150 * Q,
                open_orders=1,
                open_bids=BASE_PRECISION,
            )
        ],
    )
    perp = _perp_market(amm={"base_asset_amount_long": BASE_PRECISION})
    return _state(user, _liquidator(), perp=perp, state=limit_fee_state)


# --- liquidate_perp: program vectors --------------------------------------------------------------
def test_liquidate_long_perp() -> None:
    # program successful_liquidation_long_perp: shortage ~$55 needs more than the position, so
    # all of it goes at $100: the user realizes -150 + 100 and pays the 1% fee; the if fee is 0
    # (the shortage per unit of notional exceeds the margin ratio)
    state = _long_user_state()
    accounts = _liquidate_perp(state, BASE_PRECISION)
    user = state.users[UK]
    position = user.get_perp_position(0)
    assert position is not None
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -51 * Q)
    assert (position.open_orders, position.open_bids) == (0, 0)
    assert user.orders == []
    liq = state.users[LK].get_perp_position(0)
    assert liq is not None
    assert (liq.base_asset_amount, liq.quote_asset_amount) == (BASE_PRECISION, -99 * Q)
    assert state.perp_markets[0].amm.total_liquidation_fee == 0
    # liquidation territory: collateral -51 with nothing left to take but no deposit either
    assert user.is_bankrupt()
    records = accounts.records
    assert [r.action for r in records if isinstance(r, OrderActionRecord)] == ["cancel"]
    (record,) = [r for r in records if isinstance(r, LiquidationRecord)]
    assert record.liquidation_type == "liquidate_perp"
    assert record.liquidation_id == 1
    assert record.canceled_order_ids == (1,)
    assert record.bankrupt
    assert record.liquidate_perp is not None
    assert record.liquidate_perp.base_asset_amount == -BASE_PRECISION
    assert record.liquidate_perp.quote_asset_amount == 100 * Q
    assert record.liquidate_perp.liquidator_fee == Q
    assert record.liquidate_perp.user_order_id == 2
    assert record.liquidate_perp.fill_record_id == 1


def test_liquidate_short_perp() -> None:
    # program successful_liquidation_short_perp: short sold for $50, bought back at $100 + 1%
    user = _user(
        orders=[_long_order(BASE_PRECISION, direction=PositionDirection.Short)],
        next_order_id=2,
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=-BASE_PRECISION,
                quote_asset_amount=50 * Q,
                quote_entry_amount=50 * Q,
                quote_break_even_amount=50 * Q,
                open_orders=1,
                open_asks=-BASE_PRECISION,
            )
        ],
    )
    perp = _perp_market(
        amm={"quote_asset_amount": 50 * Q, "base_asset_amount_short": -BASE_PRECISION}
    )
    state = _state(user, _liquidator(), perp=perp)
    _liquidate_perp(state, BASE_PRECISION)
    position = state.users[UK].get_perp_position(0)
    assert position is not None
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -51 * Q)
    assert (position.open_orders, position.open_asks) == (0, 0)
    liq = state.users[LK].get_perp_position(0)
    assert liq is not None
    assert (liq.base_asset_amount, liq.quote_asset_amount) == (-BASE_PRECISION, 101 * Q)
    assert state.perp_markets[0].amm.total_liquidation_fee == 0


def test_liquidate_perp_up_to_liquidator_max() -> None:
    # program successful_liquidation_up_to_max_liquidator_base_asset_amount (2% buffer): half
    # the position at $100 with a $0.50 fee; entry -150 halves to -75, break-even -75.5
    state = _long_user_state(
        State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50, initial_pct_to_liquidate=10_000
        )
    )
    _liquidate_perp(state, BASE_PRECISION // 2)
    position = state.users[UK].get_perp_position(0)
    assert position is not None
    assert position.base_asset_amount == BASE_PRECISION // 2
    assert position.quote_asset_amount == -100_500_000
    assert position.quote_entry_amount == -75_000_000
    assert position.quote_break_even_amount == -75_500_000
    liq = state.users[LK].get_perp_position(0)
    assert liq is not None
    assert (liq.base_asset_amount, liq.quote_asset_amount) == (BASE_PRECISION // 2, -49_500_000)
    assert state.users[UK].is_being_liquidated() and not state.users[UK].is_bankrupt()


def test_liquidate_perp_to_cover_margin_shortage() -> None:
    # program successful_liquidation_to_cover_margin_shortage: 2 long for $200, $5 deposit, 2%
    # buffer. After cancelling the bid the buffered shortage is 5% * 200 + 2% * 200 - 5 = $9.
    # Each base frees 7% * 100 less the 1% fee and the 1% if fee = $5: 1.8 base
    user = _user(
        orders=[_long_order(BASE_PRECISION)],
        next_order_id=2,
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=2 * BASE_PRECISION,
                quote_asset_amount=-200 * Q,
                quote_entry_amount=-200 * Q,
                quote_break_even_amount=-200 * Q,
                open_orders=1,
                open_bids=BASE_PRECISION,
            )
        ],
        spot_positions=[_usdc_deposit(5)],
    )
    perp = _perp_market(amm={"base_asset_amount_long": 2 * BASE_PRECISION})
    state = _state(
        user,
        _liquidator(),
        perp=perp,
        state=State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50, initial_pct_to_liquidate=10_000
        ),
    )
    accounts = _liquidate_perp(state, 10 * BASE_PRECISION)
    position = state.users[UK].get_perp_position(0)
    assert position is not None
    assert position.base_asset_amount == 200_000_000
    assert position.quote_asset_amount == -23_600_000
    assert position.quote_entry_amount == -20_000_000
    assert position.quote_break_even_amount == -23_600_000
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        state.users[UK], accounts, MarginContext.liquidation(MARGIN_PRECISION // 50)
    )
    # out of liquidation territory exactly: 5 - 3.6 = 1.4 = 7% of $20
    assert calculation.total_collateral == calculation.margin_requirement_plus_buffer == 1_400_000
    assert not state.users[UK].is_being_liquidated()
    liq = state.users[LK].get_perp_position(0)
    assert liq is not None
    assert (liq.base_asset_amount, liq.quote_asset_amount) == (1_800_000_000, -178_200_000)
    assert state.perp_markets[0].amm.total_liquidation_fee == 1_800_000


def test_liquidate_perp_over_multiple_slots() -> None:
    # program liquidation_over_multiple_slots: 20 long for $2000, a 10-base bid, $50 deposit,
    # 2% buffer, 10% initially then +1/150 per slot
    user = _user(
        orders=[_long_order(10 * BASE_PRECISION)],
        next_order_id=2,
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=20 * BASE_PRECISION,
                quote_asset_amount=-2000 * Q,
                quote_entry_amount=-2000 * Q,
                quote_break_even_amount=-2000 * Q,
                open_orders=1,
                open_bids=10 * BASE_PRECISION,
            )
        ],
        spot_positions=[_usdc_deposit(50)],
    )
    perp = _perp_market(amm={"base_asset_amount_long": 20 * BASE_PRECISION})
    program_state = State(
        liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50,
        initial_pct_to_liquidate=LIQUIDATION_PCT_PRECISION // 10,
        liquidation_duration=150,
    )
    state = _state(user, _liquidator(500), perp=perp, state=program_state)
    u = state.users

    # slot 1: cancelling the bid frees 5% * 1000 + 2% * 1000 + $0.01 = $70.01, more than the
    # 10% of the whole shortage allowed so far: no base moves
    _liquidate_perp(state, 10 * BASE_PRECISION, slot=1, ts=1)
    assert u[UK].last_active_slot == 1
    assert u[UK].liquidation_margin_freed == 70_010_000
    assert _base(state, UK) == 20 * BASE_PRECISION

    # slot 76: 60% of $160.01 may be freed
    _liquidate_perp(state, 10 * BASE_PRECISION, slot=76, ts=1)
    assert u[UK].liquidation_margin_freed == 95_802_000
    assert _base(state, UK) == 14_800_000_000

    # same slot: only the rounding of the last step left
    _liquidate_perp(state, 100 * BASE_PRECISION, slot=76, ts=1)
    assert u[UK].liquidation_margin_freed == 96_000_400
    assert _base(state, UK) == 14_760_000_000

    _liquidate_perp(state, 100 * BASE_PRECISION, slot=101, ts=1)
    assert u[UK].liquidation_margin_freed == 122_486_800
    assert _base(state, UK) == 9_420_000_000

    # slot 136: the rest of the shortage; the user leaves liquidation
    _liquidate_perp(state, 100 * BASE_PRECISION, slot=136, ts=1)
    assert u[UK].status == UserStatus.Active
    assert u[UK].last_active_slot == 1
    assert u[UK].liquidation_margin_freed == 0
    assert _base(state, UK) == 1_910_000_000


def _base(state: ProgramState, key: tuple[bytes, int]) -> int:
    position = state.users[key].get_perp_position(0)
    return 0 if position is None else position.base_asset_amount


def test_liquidate_perp_half_of_if_fee() -> None:
    # program successful_liquidation_half_of_if_fee: short 1 sold for $100, $1.5 deposit at $100:
    # implied if fee (5.1% - 1% - 3.61%) * .95 = .4655% -> the whole base pays $0.4655...
    user = _user(
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=-BASE_PRECISION,
                quote_asset_amount=100 * Q,
                quote_entry_amount=100 * Q,
                quote_break_even_amount=100 * Q,
            )
        ],
        spot_positions=[SpotPosition(0, scaled_balance=15 * SBP // 10)],
    )
    perp = _perp_market(
        number_of_users=1,
        amm={"quote_asset_amount": 50 * Q, "base_asset_amount_short": -BASE_PRECISION},
    )
    state = _state(user, _liquidator(), perp=perp)
    _liquidate_perp(state, BASE_PRECISION)
    # .5% * 100 * .95 = $0.475 (program)
    assert state.perp_markets[0].amm.total_liquidation_fee == 475_000


def test_liquidate_perp_limit_price() -> None:
    # program fail_liquidating_long_perp_due_to_limit_price: a long transfers at $100 - 1% = $99,
    # above a $50 limit
    state = _long_user_state()
    assert (
        _code(lambda: liquidate_perp(_run(state), 0, BASE_PRECISION, 50 * PRICE_PRECISION, UK, LK))
        == ErrorCode.LiquidationDoesntSatisfyLimitPrice
    )
    # $99 is acceptable
    _liquidate_perp(state, BASE_PRECISION, 99 * PRICE_PRECISION)
    assert _base(state, UK) == 0


def test_clear_being_liquidated_without_a_position() -> None:
    # program clear_being_liquidated_when_position_fully_liquidated: $100 deposit, no position
    user = _user(spot_positions=[_usdc_deposit(100)], status=UserStatus.BeingLiquidated)
    state = _state(user, _liquidator(), perp=_perp_market(amm={"quote_asset_amount": 150 * Q}))
    _liquidate_perp(state, BASE_PRECISION)
    assert state.users[UK].status == UserStatus.Active


# --- liquidate_perp: refusals ---------------------------------------------------------------------
def test_liquidate_perp_refusals() -> None:
    healthy = _user(
        spot_positions=[_usdc_deposit(100)],
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-100 * Q,
                quote_entry_amount=-100 * Q,
                quote_break_even_amount=-100 * Q,
            )
        ],
    )
    state = _state(healthy, _liquidator(), perp=_perp_market())
    assert (
        _code(lambda: liquidate_perp(_run(state), 0, BASE_PRECISION, None, UK, LK))
        == ErrorCode.SufficientCollateral
    )
    assert (
        _code(lambda: liquidate_perp(_run(state), 0, BASE_PRECISION, None, UK, UK))
        == ErrorCode.UserCantLiquidateThemself
    )
    bankrupt = _state(_user(status=UserStatus.Bankrupt), _liquidator(), perp=_perp_market())
    assert (
        _code(lambda: liquidate_perp(_run(bankrupt), 0, BASE_PRECISION, None, UK, LK))
        == ErrorCode.UserBankrupt
    )
    # below the step size
    assert (
        _code(lambda: liquidate_perp(_run(_long_user_state()), 0, 9_999_999, None, UK, LK))
        == ErrorCode.InvalidBaseAssetAmountForLiquidatePerp
    )


def test_liquidator_must_meet_initial_margin() -> None:
    # a liquidator with $5 cannot hold a $100 long (10% initial = $10)
    state = _long_user_state()
    state.users[LK] = _liquidator(5)
    assert (
        _code(lambda: liquidate_perp(_run(state), 0, BASE_PRECISION, None, UK, LK))
        == ErrorCode.InsufficientCollateral
    )


def test_escalating_liquidator_fee() -> None:
    # in liquidation since slot 0; 3_000 slots later the 1% fee has grown by 3_000 * .01 bps to
    # 1.3% (cap 3%): the half base taken at $100 pays $0.65
    state = _long_user_state(
        State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50, initial_pct_to_liquidate=10_000
        )
    )
    state.users[UK].status = UserStatus.BeingLiquidated
    _liquidate_perp(state, BASE_PRECISION // 2, slot=3_000, ts=1_200)
    liq = state.users[LK].get_perp_position(0)
    assert liq is not None
    assert liq.quote_asset_amount == -50 * Q + 650_000


# --- seed 004: BAL shares go first ----------------------------------------------------------------
def test_liquidation_burns_lp_shares_before_the_position() -> None:
    # The user provides 10 of the market's 100 sqrt_k as BAL shares, holds 1 long bought for
    # $150 and no deposit. The LPs have taken on nothing since it last settled, so burning
    # settles nothing; sqrt_k shrinks to 90: ratio 90/100 -> 900_000_000 (+1 as it shrinks),
    # base reserve 100e9 * 900_000_001 / 1e9 = 90_000_000_100, quote 90e9^2 / that, floored
    # = 89_999_999_900.
    user = _user(
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-150 * Q,
                quote_entry_amount=-150 * Q,
                quote_break_even_amount=-150 * Q,
                lp_shares=10 * R,
            )
        ],
    )
    perp = _perp_market(
        amm={
            "base_asset_amount_long": BASE_PRECISION,
            "user_lp_shares": 10 * R,
            "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        }
    )
    state = _state(user, _liquidator(), perp=perp)
    accounts = _liquidate_perp(state, BASE_PRECISION)
    amm = state.perp_markets[0].amm
    assert (amm.sqrt_k, amm.user_lp_shares) == (90 * R, 0)
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (90_000_000_100, 89_999_999_900)
    position = state.users[UK].get_perp_position(0)
    assert position is not None
    assert position.lp_shares == 0
    # then the position is liquidated as before: -150 + 100 - 1
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -51 * Q)
    (record,) = [r for r in accounts.records if isinstance(r, LiquidationRecord)]
    assert record.liquidate_perp is not None
    assert record.liquidate_perp.lp_shares == 10 * R


def test_burning_lp_shares_settles_the_lp_position_and_charges_the_remainder() -> None:
    # Since the user last settled, the LPs took -0.0505 base and +$5.05 per share (1e9): on 10
    # shares -0.505 base and +$50.50. Settling gives the long 1 -> 0.5 base (-0.5 in whole
    # 0.01 steps, entry -150 -> -75) and quote -150 + 50.5 = -99.5; the -0.005 left under a
    # step is charged at $100: 0.005 * 100 = $0.50 + 1 unit. The market's users were 0.505 long
    # against unsettled LPs: 0 now, and the AMM takes the 0.005 back (1 -> 1.005 base).
    # Then the 0.5 long goes at $100 with a 1% fee: quote -100.000001 + 50 - 0.5.
    user = _user(
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-150 * Q,
                quote_entry_amount=-150 * Q,
                quote_break_even_amount=-150 * Q,
                lp_shares=10 * R,
            )
        ],
    )
    perp = _perp_market(
        amm={
            "base_asset_amount_long": BASE_PRECISION,
            "base_asset_amount_with_unsettled_lp": 505_000_000,
            "base_asset_amount_per_lp": -50_500_000,
            "quote_asset_amount_per_lp": 5_050_000,
            "user_lp_shares": 10 * R,
            "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        }
    )
    state = _state(user, _liquidator(), perp=perp)
    _liquidate_perp(state, BASE_PRECISION)
    position = state.users[UK].get_perp_position(0)
    assert position is not None
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -50_500_001)
    assert (position.lp_shares, position.remainder_base_asset_amount) == (0, 0)
    assert (position.last_base_asset_amount_per_lp, position.last_quote_asset_amount_per_lp) == (
        -50_500_000,
        5_050_000,
    )
    assert _base(state, LK) == BASE_PRECISION // 2
    amm = state.perp_markets[0].amm
    assert amm.base_asset_amount_with_unsettled_lp == 0
    assert amm.base_asset_amount_with_amm == 1_005_000_000
    assert (amm.sqrt_k, amm.user_lp_shares) == (90 * R, 0)


def test_lp_shares_alone_can_be_liquidated_and_restore_margin() -> None:
    # No base: shares, a 10-base bid and a $10 deposit. The share is 1/100 of sqrt_k and the
    # base reserve could fall by all of its 100 (min bound 0): 1 base of LP open bids, so the
    # worst case is 11 base ($1100). Requirement 5% of $1100 = $55 plus the $0.01 open-order
    # charge plus the $1 LP-share minimum plus the 0.1% buffer of $1100 = $57.11: shortage
    # $47.11. Cancelling the bid and burning the share frees all of it; nothing is taken over.
    user = _user(
        orders=[_long_order(10 * BASE_PRECISION)],
        next_order_id=2,
        spot_positions=[_usdc_deposit(10)],
        perp_positions=[PerpPosition(0, open_orders=1, open_bids=10 * BASE_PRECISION, lp_shares=R)],
    )
    perp = _perp_market(
        amm={"user_lp_shares": R, "concentration_coef": MAX_CONCENTRATION_COEFFICIENT}
    )
    state = _state(user, _liquidator(), perp=perp)
    accounts = _liquidate_perp(state, BASE_PRECISION)
    assert state.users[UK].status == UserStatus.Active
    assert state.users[UK].get_perp_position(0) is None
    assert state.perp_markets[0].amm.sqrt_k == 99 * R
    assert state.users[LK].get_perp_position(0) is None
    (record,) = [r for r in accounts.records if isinstance(r, LiquidationRecord)]
    assert record.liquidate_perp is not None
    assert (record.liquidate_perp.lp_shares, record.liquidate_perp.base_asset_amount) == (R, 0)
    assert record.margin_freed == 47_110_000


# --- liquidate_spot -------------------------------------------------------------------------------
def _spot_state(
    usdc_deposit: int, liquidator_usdc: int = 100, buffer: int = 10, **sol: Any
) -> ProgramState:
    user = _user(
        spot_positions=[
            _usdc_deposit(usdc_deposit),
            SpotPosition(1, scaled_balance=SBP, balance_type=BORROW),
        ]
    )
    return _state(
        user,
        _liquidator(liquidator_usdc),
        spot=(_usdc(), _sol(**sol)),
        state=State(liquidation_margin_buffer_ratio=buffer, initial_pct_to_liquidate=10_000),
    )


def test_liquidate_spot_liability_transfer_implied_by_asset_amount() -> None:
    # program: the $100 deposit buys 100 * .999 / 100 SOL of the borrow at a .1% discount
    state = _spot_state(100)
    accounts = _run(state)
    liquidate_spot(accounts, 0, 1, 10**6, None, UK, LK)
    accounts.commit()
    user = state.users[UK]
    assert user.get_spot_position(0) is None  # the whole deposit went
    borrow = user.get_spot_position(1)
    assert borrow is not None and borrow.scaled_balance == 999_999
    liquidator = state.users[LK]
    assert liquidator.spot_positions[0].scaled_balance == 200 * SBP
    liq_borrow = liquidator.get_spot_position(1)
    assert liq_borrow is not None
    assert (liq_borrow.balance_type, liq_borrow.scaled_balance) == (BORROW, 999_000_001)


def test_liquidate_spot_to_cover_margin_shortage() -> None:
    # program successful_liquidation_liability_transfer_to_cover_margin_shortage: $105 deposit,
    # 1 SOL borrowed, 2% buffer, .1% if fee withheld into the revenue pool
    state = _spot_state(105, buffer=MARGIN_PRECISION // 50, if_liquidation_fee=LFP // 1000)
    accounts = _run(state)
    liquidate_spot(accounts, 0, 1, 10**6, None, UK, LK)
    accounts.commit()
    user = state.users[UK]
    assert user.spot_positions[0].scaled_balance == 45_558_159_000
    assert user.spot_positions[1].scaled_balance == 406_768_999
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, accounts, MarginContext.liquidation(MARGIN_PRECISION // 50)
    )
    assert calculation.margin_requirement == 44_744_590
    assert calculation.total_collateral == 45_558_159
    assert calculation.margin_requirement_plus_buffer == 45_558_128
    assert not user.is_being_liquidated()
    liquidator = state.users[LK]
    assert liquidator.spot_positions[0].scaled_balance == 159_441_841_000
    assert liquidator.spot_positions[1].scaled_balance == 593_824_001
    sol = state.spot_markets[1]
    assert get_token_amount(sol.revenue_pool.scaled_balance, sol, DEPOSIT) == 593
    # the borrow moved in full: the liquidator's plus the user's less the revenue pool's cut
    assert (
        liquidator.spot_positions[1].scaled_balance
        + user.spot_positions[1].scaled_balance
        - sol.revenue_pool.scaled_balance
        == SBP
    )
    (record,) = [r for r in accounts.records if isinstance(r, LiquidationRecord)]
    assert record.liquidate_spot is not None
    assert record.liquidate_spot.if_fee == 593


def test_liquidate_spot_limit_price() -> None:
    # the deposit pays 100 / .999... USDC per SOL: a limit of $101 of asset per SOL refuses it
    state = _spot_state(100)
    assert (
        _code(lambda: liquidate_spot(_run(state), 0, 1, 10**6, 101 * PRICE_PRECISION, UK, LK))
        == ErrorCode.LiquidationDoesntSatisfyLimitPrice
    )


def test_liquidate_spot_wrong_sides() -> None:
    state = _spot_state(100)
    # USDC is a deposit, not a borrow
    assert (
        _code(lambda: liquidate_spot(_run(state), 1, 0, 10**6, None, UK, LK))
        == ErrorCode.WrongSpotBalanceType
    )


# --- perp pnl -------------------------------------------------------------------------------------
def test_liquidate_borrow_for_perp_pnl_to_cover_margin_shortage() -> None:
    # program successful_liquidation_liability_transfer_to_cover_margin_shortage (borrow for
    # pnl): $105 of settled-able pnl, 1 SOL borrowed, 2% buffer
    user = _user(
        perp_positions=[PerpPosition(0, quote_asset_amount=105 * Q)],
        spot_positions=[SpotPosition(1, scaled_balance=SBP, balance_type=BORROW)],
    )
    perp = _perp_market(
        unrealized_pnl_initial_asset_weight=9000,
        unrealized_pnl_maintenance_asset_weight=10_000,
        if_liquidation_fee=0,
        amm={"quote_asset_amount": 150 * Q},
    )
    state = _state(
        user,
        _liquidator(100),
        perp=perp,
        spot=(_usdc(), _sol(if_liquidation_fee=LFP // 1000)),
        state=State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50,
            initial_pct_to_liquidate=PERCENTAGE_PRECISION,
        ),
    )
    accounts = _run(state)
    liquidate_borrow_for_perp_pnl(accounts, 0, 1, 2 * 10**6, None, UK, LK)
    accounts.commit()
    user = state.users[UK]
    assert user.spot_positions[0].scaled_balance == 357_739_999
    position = user.get_perp_position(0)
    assert position is not None and position.quote_asset_amount == 40_066_807
    calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, accounts, MarginContext.liquidation(MARGIN_PRECISION // 50)
    )
    assert calculation.total_collateral == 40_066_807
    assert calculation.margin_requirement_plus_buffer == 40_066_880
    liquidator = state.users[LK]
    liq_borrow = liquidator.get_spot_position(1)
    assert liq_borrow is not None
    assert (liq_borrow.balance_type, liq_borrow.scaled_balance) == (BORROW, 642_260_001)
    liq_position = liquidator.get_perp_position(0)
    assert liq_position is not None and liq_position.quote_asset_amount == 64_933_193
    assert state.spot_markets[1].revenue_pool.scaled_balance == 0


def test_liquidate_perp_pnl_for_deposit_to_cover_margin_shortage() -> None:
    # program successful_liquidation_pnl_transfer_to_cover_margin_shortage: -$91 of pnl against
    # 1 SOL deposited, 2% buffer
    user = _user(
        perp_positions=[PerpPosition(0, quote_asset_amount=-91 * Q)],
        spot_positions=[SpotPosition(1, scaled_balance=SBP)],
    )
    perp = _perp_market(
        unrealized_pnl_initial_asset_weight=9000,
        unrealized_pnl_maintenance_asset_weight=10_000,
        amm={"quote_asset_amount": 150 * Q},
    )
    state = _state(
        user,
        _liquidator(100),
        perp=perp,
        spot=(_usdc(), _sol(borrow_balance=0)),
        state=State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50,
            initial_pct_to_liquidate=PERCENTAGE_PRECISION,
        ),
    )
    accounts = _run(state)
    liquidate_perp_pnl_for_deposit(accounts, 0, 1, 200 * 10**6, None, UK, LK)
    accounts.commit()
    user = state.users[UK]
    assert user.spot_positions[0].scaled_balance == 740_788_000
    position = user.get_perp_position(0)
    assert position is not None and position.quote_asset_amount == -65_363_637
    liquidator = state.users[LK]
    liq_deposit = liquidator.get_spot_position(1)
    assert liq_deposit is not None
    assert (liq_deposit.balance_type, liq_deposit.scaled_balance) == (DEPOSIT, 259_212_000)
    liq_position = liquidator.get_perp_position(0)
    assert liq_position is not None and liq_position.quote_asset_amount == -25_636_363
    assert state.perp_markets[0].amm.total_liquidation_fee == 0


def test_perp_pnl_liquidations_need_a_flat_position() -> None:
    user = _user(
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=BASE_PRECISION,
                quote_asset_amount=-191 * Q,
                quote_entry_amount=-191 * Q,
                quote_break_even_amount=-191 * Q,
            )
        ],
        spot_positions=[SpotPosition(1, scaled_balance=SBP)],
    )
    perp = _perp_market(amm={"base_asset_amount_long": BASE_PRECISION})
    state = _state(user, _liquidator(100), perp=perp, spot=(_usdc(), _sol(borrow_balance=0)))
    assert (
        _code(lambda: liquidate_perp_pnl_for_deposit(_run(state), 0, 1, 10**9, None, UK, LK))
        == ErrorCode.InvalidPerpPositionToLiquidate
    )


# --- set_user_status_to_being_liquidated ----------------------------------------------------------
def test_set_user_status_to_being_liquidated() -> None:
    # program: 1 long for $150 and no deposit is below maintenance
    state = _long_user_state()
    accounts = _run(state, slot=7)
    set_user_status_to_being_liquidated(accounts, UK)
    accounts.commit()
    assert state.users[UK].status == UserStatus.BeingLiquidated
    assert state.users[UK].last_active_slot == 7
    assert (
        _code(lambda: set_user_status_to_being_liquidated(_run(state), UK))
        == ErrorCode.UserIsBeingLiquidated
    )
    state.users[UK].status = UserStatus.Bankrupt
    assert (
        _code(lambda: set_user_status_to_being_liquidated(_run(state), UK))
        == ErrorCode.UserBankrupt
    )
    # program failure_sufficient_collateral: 1 long with +$100 of quote and $1000 deposited
    healthy = _state(
        _user(
            spot_positions=[_usdc_deposit(1000)],
            perp_positions=[
                PerpPosition(0, base_asset_amount=BASE_PRECISION, quote_asset_amount=100 * Q)
            ],
        ),
        _liquidator(),
        perp=_perp_market(amm={"base_asset_amount_long": BASE_PRECISION}),
    )
    assert (
        _code(lambda: set_user_status_to_being_liquidated(_run(healthy), UK))
        == ErrorCode.SufficientCollateral
    )


# --- instructions ---------------------------------------------------------------------------------
def _send(program: Program, signer: Keypair, *ixs: Any, slot: int = 1) -> Executed | Rejected:
    return program.execute(Transaction.sign(ixs, slot, (signer,)), Clock(slot, 1))


def test_liquidate_perp_instruction() -> None:
    program = Program(_long_user_state())
    ix = LiquidatePerp(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, BASE_PRECISION)
    # the liquidator must sign
    rejected = _send(program, USER, ix)
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.UnauthorizedSigner
    result = _send(program, LIQUIDATOR, ix)
    assert isinstance(result, Executed)
    assert [type(r.record).__name__ for r in result.records][-1] == "LiquidationRecord"
    assert _base(program.state, LK) == BASE_PRECISION
    # self-liquidation
    rejected = _send(program, LIQUIDATOR, replace(ix, user_authority=LIQUIDATOR.pubkey), slot=2)
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.UserCantLiquidateThemself


def test_liquidate_spot_and_status_instructions() -> None:
    program = Program(_spot_state(100))
    ix = LiquidateSpot(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, 1, 10**6)
    result = _send(program, LIQUIDATOR, ix)
    assert isinstance(result, Executed)
    # the deposit is gone and 999_999 scaled of the borrow is left: bankrupt
    user = program.state.users[UK]
    assert user.get_spot_position(0) is None and user.is_bankrupt()
    flag = _send(program, USER, SetUserStatusToBeingLiquidated(USER.pubkey, 0), slot=2)
    assert isinstance(flag, Rejected) and flag.code == ErrorCode.UserBankrupt
    # anyone may flag a user below maintenance
    other = Program(_long_user_state())
    assert isinstance(_send(other, USER, SetUserStatusToBeingLiquidated(USER.pubkey, 0)), Executed)
    assert other.state.users[UK].status == UserStatus.BeingLiquidated


# --- properties -----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    base_steps=st.integers(1, 5_000),  # 0.01 .. 50 base
    deposit=st.integers(0, 2_000),
    price=st.integers(40, 100),
    max_steps=st.integers(1, 10_000),
    slot=st.integers(0, 400),
)
def test_liquidate_perp_moves_quote_without_losing_any(
    base_steps: int, deposit: int, price: int, max_steps: int, slot: int
) -> None:
    """One liquidation step on a long bought at $100: the base the user gives up is the base
    the liquidator gets; the user's quote change is exactly the liquidator's plus the
    insurance-fund fee the market keeps; the market's totals still equal the positions'; and
    the user's buffered shortage does not grow."""
    base = base_steps * 10_000_000
    quote = -base * 100 // 1000  # $100 per base, QUOTE_PRECISION
    user = _user(
        spot_positions=[_usdc_deposit(deposit)] if deposit else [],
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=base,
                quote_asset_amount=quote,
                quote_entry_amount=quote,
                quote_break_even_amount=quote,
            )
        ],
    )
    # the oracle has been at ``price`` long enough for its TWAPs to follow
    perp = _perp_market(
        amm={
            "base_asset_amount_long": base,
            "quote_asset_amount": quote,
            "historical_oracle_data": HistoricalOracleData.seeded(price * PRICE_PRECISION, 0),
        },
    )
    state = _state(
        user,
        _liquidator(1_000_000),
        perp=perp,
        state=State(liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50),
        sol_price=price * PRICE_PRECISION,
    )
    before = calculate_margin_requirement_and_total_collateral_and_liability_info(
        state.users[UK], _run(state, slot), MarginContext.liquidation(MARGIN_PRECISION // 50)
    )
    accounts = _run(state, slot)
    try:
        liquidate_perp(accounts, 0, max_steps * 10_000_000, None, UK, LK)
    except ProtocolError as err:
        assert err.code == ErrorCode.SufficientCollateral
        assert before.meets_margin_requirement()
        return
    accounts.commit()
    assert not before.meets_margin_requirement()
    user_position = state.users[UK].get_perp_position(0)
    liq_position = state.users[LK].get_perp_position(0)
    assert user_position is not None
    taken = 0 if liq_position is None else liq_position.base_asset_amount
    assert user_position.base_asset_amount + taken == base
    assert taken <= max_steps * 10_000_000
    liq_quote = 0 if liq_position is None else liq_position.quote_asset_amount
    amm = state.perp_markets[0].amm
    assert user_position.quote_asset_amount + liq_quote + amm.total_liquidation_fee == quote
    assert amm.quote_asset_amount == user_position.quote_asset_amount + liq_quote
    assert amm.base_asset_amount_long == base
    after = calculate_margin_requirement_and_total_collateral_and_liability_info(
        state.users[UK], _run(state, slot), MarginContext.liquidation(MARGIN_PRECISION // 50)
    )
    assert after.margin_shortage() <= before.margin_shortage()
