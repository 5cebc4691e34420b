"""Liquidation and bankruptcy refusals, driven through the signed liquidation instructions.

The accounts are those of :mod:`tests.protocol.test_liquidation` (the program's
``controller/liquidation/tests.rs`` markets: a perp at $100 with 10% / 5% margin and 1% fees,
USDC, and a 6-decimal SOL at $100 with weights .8/.9 and 1.2/1.1) and
:mod:`tests.protocol.test_bankruptcy`. Each refusal names its code (and field where the model
gives one) and leaves the state as it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, MARGIN_PRECISION, PERCENTAGE_PRECISION
from protocol.constants import PRICE_PRECISION as P
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    LiquidateBorrowForPerpPnl,
    LiquidatePerp,
    LiquidatePerpPnlForDeposit,
    LiquidateSpot,
    ResolvePerpBankruptcy,
    ResolveSpotBankruptcy,
)
from protocol.program import Executed, Program
from protocol.records import BankruptcyRecord, LiquidationRecord, OrderActionRecord
from protocol.state import HistoricalOracleData, State
from protocol.state.spot_market import InsuranceFund
from protocol.state.user import PerpPosition, SpotPosition, User
from protocol.state_hash import state_hash
from protocol.transaction import Transaction
from protocol.types import UserStatus
from tests.protocol import test_bankruptcy as bk
from tests.protocol.test_liquidation import (
    BORROW,
    LIQUIDATOR,
    LK,
    SBP,
    UK,
    USER,
    Q,
    _liquidator,
    _long_order,
    _long_user_state,
    _perp_market,
    _sol,
    _spot_state,
    _state,
    _usdc,
    _usdc_deposit,
    _user,
)

B = BASE_PRECISION


def send(
    state: ProgramState, ix: Any, slot: int = 1, ts: int = 1
) -> tuple[Program, Executed | Rejected]:
    program = Program(state)
    result = program.execute(Transaction.sign([ix], slot, (LIQUIDATOR,)), Clock(slot, ts))
    return program, result


def refused(state: ProgramState, ix: Any, code: ErrorCode, field: str | None = None) -> None:
    program = Program(state)
    before = state_hash(program.state, program.next_seq)
    result = program.execute(Transaction.sign([ix], 1, (LIQUIDATOR,)), Clock(1, 1))
    assert isinstance(result, Rejected), result
    assert (result.code, result.field) == (code, field), result
    assert state_hash(program.state, program.next_seq) == before


def liquidate_perp(max_base: int = B, limit_price: int | None = None) -> LiquidatePerp:
    return LiquidatePerp(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, max_base, limit_price)


def liquidate_spot(max_transfer: int = 10**6) -> LiquidateSpot:
    return LiquidateSpot(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, 1, max_transfer)


def borrow_for_pnl(max_transfer: int = 2 * 10**6) -> LiquidateBorrowForPerpPnl:
    return LiquidateBorrowForPerpPnl(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, 1, max_transfer)


def pnl_for_deposit(max_transfer: int = 200 * Q) -> LiquidatePerpPnlForDeposit:
    return LiquidatePerpPnlForDeposit(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0, 1, max_transfer)


def usdc_and_sol_borrow(usdc: int) -> list[SpotPosition]:
    return [_usdc_deposit(usdc), SpotPosition(1, scaled_balance=SBP, balance_type=BORROW)]


# --- liquidate_perp -------------------------------------------------------------------------


def test_bankrupt_liquidator_is_refused() -> None:
    state = _long_user_state()
    state.users[LK].status = UserStatus.Bankrupt
    refused(state, liquidate_perp(), ErrorCode.UserBankrupt, "liquidator")


def test_liquidator_without_a_free_perp_position_is_refused() -> None:
    state = _long_user_state()
    for i in range(1, 9):
        state.perp_markets[i] = replace(_perp_market(), market_index=i)
    # eight positions in other markets: no slot left for the one it would take over
    state.users[LK].perp_positions = [PerpPosition(i, quote_asset_amount=Q) for i in range(1, 9)]
    refused(state, liquidate_perp(), ErrorCode.MaxNumberOfPositions, "liquidator")


def test_user_without_a_position_in_the_market_is_refused() -> None:
    # $100 of USDC against 1 SOL borrowed ($110 maintenance): liquidatable, but not in the perp
    user = _user(spot_positions=usdc_and_sol_borrow(100))
    state = _state(user, _liquidator(), perp=_perp_market(), spot=(_usdc(), _sol()))
    refused(state, liquidate_perp(), ErrorCode.UserHasNoPositionInMarket, "market_index")


def test_position_with_only_pnl_is_not_for_liquidate_perp() -> None:
    # $90 deposited, -$91 of realized PnL: below maintenance, but no base and no orders to take
    user = _user(
        spot_positions=[_usdc_deposit(90)],
        perp_positions=[PerpPosition(0, quote_asset_amount=-91 * Q)],
    )
    state = _state(user, _liquidator(), perp=_perp_market(amm={"quote_asset_amount": 91 * Q}))
    refused(state, liquidate_perp(), ErrorCode.PositionDoesntHaveOpenPositionOrOrders)


def _short_state() -> ProgramState:
    # program successful_liquidation_short_perp, without the order: short 1 sold for $50
    user = _user(
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=-B,
                quote_asset_amount=50 * Q,
                quote_entry_amount=50 * Q,
                quote_break_even_amount=50 * Q,
            )
        ]
    )
    perp = _perp_market(amm={"quote_asset_amount": 50 * Q, "base_asset_amount_short": -B})
    return _state(user, _liquidator(), perp=perp)


def test_short_transfer_price_below_the_limit_is_refused() -> None:
    # a short transfers at $100 + 1% = $101: a liquidator asking at least $101.000001 refuses
    refused(
        _short_state(),
        liquidate_perp(limit_price=101 * P + 1),
        ErrorCode.LiquidationDoesntSatisfyLimitPrice,
        "limit_price",
    )


def test_short_transfer_at_exactly_the_limit_goes_through() -> None:
    program, result = send(_short_state(), liquidate_perp(limit_price=101 * P))
    assert isinstance(result, Executed), result
    liquidator = program.state.users[LK].get_perp_position(0)
    assert liquidator is not None
    # it took the short at $100 and the $1 fee: quote +101
    assert (liquidator.base_asset_amount, liquidator.quote_asset_amount) == (-B, 101 * Q)


def test_oracle_half_away_from_its_five_minute_twap_blocks_the_transfer() -> None:
    # the long bought at $150 is under water at $40; the twap was last updated at this very
    # second, so the $40 reading leaves it at $100: (100 - 40) / 100 = 60% >= 50%
    perp = _perp_market(
        amm={
            "base_asset_amount_long": B,
            "historical_oracle_data": HistoricalOracleData.seeded(100 * P, 1),
        }
    )
    state = _long_user_state()
    state.perp_markets[0] = perp
    state.oracles["SOL/USD"] = replace(state.oracles["SOL/USD"], price=40 * P)
    refused(state, liquidate_perp(), ErrorCode.PriceBandsBreached)


def test_cancelling_the_orders_of_a_flat_position_ends_the_step_without_a_transfer() -> None:
    # no base, one open 1-SOL bid, and a SOL borrow that keeps the user under water
    user = _user(
        orders=[_long_order(B)],
        next_order_id=2,
        spot_positions=usdc_and_sol_borrow(100),
        perp_positions=[PerpPosition(0, open_orders=1, open_bids=B)],
    )
    state = _state(user, _liquidator(), perp=_perp_market(), spot=(_usdc(), _sol()))
    program, result = send(state, liquidate_perp())
    assert isinstance(result, Executed), result
    records = [r.record for r in result.records]
    assert [type(r) for r in records] == [OrderActionRecord]
    user_after = program.state.users[UK]
    assert user_after.orders == []
    assert user_after.get_perp_position(0) is None
    assert user_after.status == UserStatus.BeingLiquidated  # still short of margin
    assert program.state.users[LK].get_perp_position(0) is None


# --- liquidate_spot -------------------------------------------------------------------------


def test_spot_liquidation_of_a_bankrupt_user_is_refused() -> None:
    state = _spot_state(100)
    state.users[UK].status = UserStatus.Bankrupt
    refused(state, liquidate_spot(), ErrorCode.UserBankrupt, "user")


def test_spot_liquidation_needs_both_balances() -> None:
    borrow_only = _state(
        _user(spot_positions=usdc_and_sol_borrow(100)[1:]),
        _liquidator(),
        spot=(_usdc(), _sol()),
    )
    refused(borrow_only, liquidate_spot(), ErrorCode.CouldNotFindSpotPosition, "asset_market_index")
    deposit_only = _state(
        _user(spot_positions=[_usdc_deposit(100)]), _liquidator(), spot=(_usdc(), _sol())
    )
    refused(
        deposit_only, liquidate_spot(), ErrorCode.CouldNotFindSpotPosition, "liability_market_index"
    )


def test_empty_deposit_cannot_pay_for_a_borrow() -> None:
    user = _user(
        spot_positions=[
            SpotPosition(0, scaled_balance=0),
            SpotPosition(1, scaled_balance=SBP, balance_type=BORROW),
        ]
    )
    state = _state(user, _liquidator(), spot=(_usdc(), _sol()))
    refused(state, liquidate_spot(), ErrorCode.InvalidSpotPosition)


def test_zero_maximum_transfer_is_an_invalid_liquidation() -> None:
    refused(_spot_state(100), liquidate_spot(max_transfer=0), ErrorCode.InvalidLiquidation)


def test_user_back_above_the_buffered_requirement_leaves_liquidation_untouched() -> None:
    # $1000 against a $110 maintenance borrow: flagged from an earlier step, now healthy
    state = _spot_state(1000)
    state.users[UK].status = UserStatus.BeingLiquidated
    program, result = send(state, liquidate_spot())
    assert isinstance(result, Executed), result
    assert not [r for r in result.records if isinstance(r.record, LiquidationRecord)]
    user = program.state.users[UK]
    assert user.status == UserStatus.Active
    # nothing moved: the $1000 and the 1 SOL borrow are as they were
    assert [p.scaled_balance for p in user.spot_positions] == [1000 * SBP, SBP]
    assert [p.scaled_balance for p in program.state.users[LK].spot_positions] == [100 * SBP]


# --- liquidate_borrow_for_perp_pnl / liquidate_perp_pnl_for_deposit -------------------------


def _borrow_for_pnl_state(**position: Any) -> ProgramState:
    # program: $105 of PnL in a flat position, 1 SOL borrowed, 2% buffer
    user = _user(
        perp_positions=[PerpPosition(0, **{"quote_asset_amount": 105 * Q, **position})],
        spot_positions=[SpotPosition(1, scaled_balance=SBP, balance_type=BORROW)],
    )
    perp = _perp_market(
        unrealized_pnl_initial_asset_weight=9000,
        unrealized_pnl_maintenance_asset_weight=10_000,
        if_liquidation_fee=0,
        amm={"quote_asset_amount": 150 * Q},
    )
    return _state(
        user,
        _liquidator(100),
        perp=perp,
        spot=(_usdc(), _sol(if_liquidation_fee=1_000)),
        state=State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50,
            initial_pct_to_liquidate=PERCENTAGE_PRECISION,
        ),
    )


def test_borrow_for_perp_pnl_instruction_routes_both_markets() -> None:
    # the program vector of test_liquidation, through the signed instruction at the same clock
    # (slot 0, second 0: no interest accrues), so the same numbers
    program, result = send(_borrow_for_pnl_state(), borrow_for_pnl(), slot=0, ts=0)
    assert isinstance(result, Executed), result
    user = program.state.users[UK]
    assert user.spot_positions[0].scaled_balance == 357_739_999
    position = user.get_perp_position(0)
    assert position is not None and position.quote_asset_amount == 40_066_807
    liquidator = program.state.users[LK]
    liq_borrow = liquidator.get_spot_position(1)
    assert liq_borrow is not None and liq_borrow.scaled_balance == 642_260_001
    liq_position = liquidator.get_perp_position(0)
    assert liq_position is not None and liq_position.quote_asset_amount == 64_933_193


def test_borrow_for_perp_pnl_refusals() -> None:
    open_base = _borrow_for_pnl_state(base_asset_amount=B)
    refused(open_base, borrow_for_pnl(), ErrorCode.InvalidPerpPositionToLiquidate)
    no_pnl = _borrow_for_pnl_state(quote_asset_amount=0)
    refused(no_pnl, borrow_for_pnl(), ErrorCode.InvalidPerpPositionToLiquidate)
    bankrupt = _borrow_for_pnl_state()
    bankrupt.users[UK].status = UserStatus.Bankrupt
    refused(bankrupt, borrow_for_pnl(), ErrorCode.UserBankrupt, "user")
    refused(_borrow_for_pnl_state(), borrow_for_pnl(0), ErrorCode.InvalidLiquidation)


def _pnl_for_deposit_state(quote: int = -91 * Q) -> ProgramState:
    # program: -$91 of PnL in a flat position against 1 SOL deposited, 2% buffer
    user = _user(
        perp_positions=[PerpPosition(0, quote_asset_amount=quote)],
        spot_positions=[SpotPosition(1, scaled_balance=SBP)],
    )
    perp = _perp_market(
        unrealized_pnl_initial_asset_weight=9000,
        unrealized_pnl_maintenance_asset_weight=10_000,
        amm={"quote_asset_amount": 150 * Q},
    )
    return _state(
        user,
        _liquidator(100),
        perp=perp,
        spot=(_usdc(), _sol(borrow_balance=0)),
        state=State(
            liquidation_margin_buffer_ratio=MARGIN_PRECISION // 50,
            initial_pct_to_liquidate=PERCENTAGE_PRECISION,
        ),
    )


def test_perp_pnl_for_deposit_refusals() -> None:
    refused(
        _pnl_for_deposit_state(quote=5 * Q),
        pnl_for_deposit(),
        ErrorCode.InvalidPerpPositionToLiquidate,
    )
    bankrupt = _pnl_for_deposit_state()
    bankrupt.users[UK].status = UserStatus.Bankrupt
    refused(bankrupt, pnl_for_deposit(), ErrorCode.UserBankrupt, "user")
    refused(_pnl_for_deposit_state(), pnl_for_deposit(0), ErrorCode.InvalidLiquidation)


# --- resolving bankruptcies -----------------------------------------------------------------


def _bankrupt_perp_user_without_orders() -> User:
    # an open order is something to liquidate: without it, the $100 perp debt is bankruptcy
    user = bk._bankrupt_perp_user()
    user.orders = []
    user.perp_positions[0].open_orders = 0
    user.perp_positions[0].open_bids = 0
    return user


def test_resolving_one_debt_leaves_a_user_with_another_still_bankrupt() -> None:
    user = _bankrupt_perp_user_without_orders()
    user.spot_positions = [SpotPosition(0, scaled_balance=10 * SBP, balance_type=BORROW)]
    usdc = bk._usdc(deposit_balance=1000 * SBP, borrow_balance=10 * SBP, vault_amount=990 * Q)
    program, result = send(
        bk._state(user, bk._perp_market(), usdc),
        ResolvePerpBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0),
    )
    assert isinstance(result, Executed), result
    after = program.state.users[UK]
    assert after.get_perp_position(0) is None  # the $100 perp debt is written off
    assert after.total_social_loss == 100 * Q
    assert after.is_bankrupt()  # the $10 borrow still stands


def test_perp_bankruptcy_without_a_loss_in_that_market_is_refused() -> None:
    user = bk._bankrupt_perp_user()
    user.perp_positions[0].quote_asset_amount = 5 * Q
    refused(
        bk._state(user, bk._perp_market(), bk._usdc()),
        ResolvePerpBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0),
        ErrorCode.InvalidPerpPositionToLiquidate,
    )


def test_spot_bankruptcy_needs_a_borrow_in_that_market() -> None:
    # bankrupt through a perp debt; its USDC balance is a deposit, not a borrow
    user = bk._bankrupt_perp_user()
    user.spot_positions = [SpotPosition(0, scaled_balance=SBP)]
    refused(
        bk._state(user, bk._perp_market(), bk._usdc(deposit_balance=SBP, vault_amount=Q)),
        ResolveSpotBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0),
        ErrorCode.UserHasInvalidBorrow,
        "market_index",
    )


def test_spot_bankruptcy_with_an_empty_fund_moves_no_tokens_and_keeps_other_debts() -> None:
    user = _bankrupt_perp_user_without_orders()  # also owes $100 in the perp market
    user.spot_positions = [SpotPosition(0, scaled_balance=100 * SBP, balance_type=BORROW)]
    usdc = bk._usdc(
        deposit_balance=1000 * SBP,
        borrow_balance=100 * SBP,
        vault_amount=900 * Q,
        insurance_fund=InsuranceFund(vault_amount=0),
    )
    program, result = send(
        bk._state(user, bk._perp_market(), usdc),
        ResolveSpotBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0),
    )
    assert isinstance(result, Executed), result
    [record] = [r.record for r in result.records if isinstance(r.record, BankruptcyRecord)]
    assert record.spot_bankruptcy is not None
    assert (record.spot_bankruptcy.borrow_amount, record.spot_bankruptcy.if_payment) == (
        100 * Q,
        0,
    )
    market = program.state.spot_markets[0]
    assert (market.vault_amount, market.insurance_fund.vault_amount) == (900 * Q, 0)
    assert program.state.users[UK].is_bankrupt()  # the perp debt remains
