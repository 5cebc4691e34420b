"""Bankruptcy (``protocol/math/bankruptcy.py``, ``resolve_*_bankruptcy`` and their instructions),
and a crash scenario through signed transactions.

Vectors marked "program" reproduce ``math/bankruptcy/tests.rs`` and the
``resolve_*_bankruptcy`` tests of ``controller/liquidation/tests.rs``: a perp market with 5
long and 5 short open, cumulative funding at +/-1000, a bankrupt user owing $100. Where seed
002 changes the waterfall (the fee pool pays the pnl pool) the adapted expectation says so.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    FUNDING_RATE_PRECISION,
    LIQUIDATION_FEE_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
    SPOT_CUMULATIVE_INTEREST_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.controller.funding import settle_funding_payment
from protocol.controller.liquidation import resolve_perp_bankruptcy, resolve_spot_bankruptcy
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.instructions import (
    LiquidatePerp,
    LiquidatePerpPnlForDeposit,
    ResolvePerpBankruptcy,
    ResolveSpotBankruptcy,
    SettleFundingPayment,
    UpdateOracle,
)
from protocol.keys import Keypair
from protocol.math.bankruptcy import is_user_bankrupt
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.records import BankruptcyRecord
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
from protocol.state.spot_market import InsuranceFund, PoolBalance
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
from tests.protocol.world import ORACLE_AUTHORITY, START_SLOT, START_TS, make_state

Q = QUOTE_PRECISION
R = AMM_RESERVE_PRECISION
SBP = SPOT_BALANCE_PRECISION
FRP = FUNDING_RATE_PRECISION
USER = Keypair.from_seed(bytes([1]) * 32)
LIQUIDATOR = Keypair.from_seed(bytes([2]) * 32)
UK = (USER.pubkey, 0)
LK = (LIQUIDATOR.pubkey, 0)
BORROW = SpotBalanceType.Borrow


# --- is_user_bankrupt -----------------------------------------------------------------------------
def _u(**fields: Any) -> User:
    return User(authority=USER.pubkey, **fields)


def test_is_user_bankrupt() -> None:
    # program math/bankruptcy/tests.rs
    assert not is_user_bankrupt(_u(perp_positions=[PerpPosition(0, base_asset_amount=1)]))
    assert not is_user_bankrupt(_u(perp_positions=[PerpPosition(0, quote_asset_amount=1)]))
    assert not is_user_bankrupt(_u(spot_positions=[SpotPosition(0, scaled_balance=1)]))
    assert is_user_bankrupt(_u(perp_positions=[PerpPosition(0, quote_asset_amount=-1)]))
    assert is_user_bankrupt(
        _u(spot_positions=[SpotPosition(0, scaled_balance=1, balance_type=BORROW)])
    )
    assert not is_user_bankrupt(_u())
    assert not is_user_bankrupt(
        _u(perp_positions=[PerpPosition(0, quote_asset_amount=-1, open_orders=1)])
    )


def test_bal_shares_are_not_bankrupt() -> None:
    # seed 004: shares can still be burned for margin
    assert not is_user_bankrupt(
        _u(perp_positions=[PerpPosition(0, quote_asset_amount=-1, lp_shares=1)])
    )


# --- fixtures ------------------------------------------------------------------------------------
def _perp_market(fee_pool: int = 0, **fields: Any) -> PerpMarket:
    """program: 100/100 reserves, 5 long / 5 short open, cumulative funding +/-1000, users owe
    the AMM $150; ``PerpMarket::default()`` tier."""
    amm = AMM(
        oracle="SOL/USD",
        base_asset_reserve=100 * R,
        quote_asset_reserve=100 * R,
        bid_base_asset_reserve=101 * R,
        bid_quote_asset_reserve=99 * R,
        ask_base_asset_reserve=99 * R,
        ask_quote_asset_reserve=101 * R,
        sqrt_k=100 * R,
        terminal_quote_asset_reserve=100 * R,
        peg_multiplier=100 * PEG_PRECISION,
        order_step_size=10_000_000,
        quote_asset_amount=-150 * Q,
        base_asset_amount_long=5 * BASE_PRECISION,
        base_asset_amount_short=-5 * BASE_PRECISION,
        base_asset_amount_with_amm=BASE_PRECISION,
        cumulative_funding_rate_long=1000 * FRP,
        cumulative_funding_rate_short=-1000 * FRP,
        fee_pool=PoolBalance(fee_pool * SBP, 0),
        historical_oracle_data=HistoricalOracleData.seeded(100 * PRICE_PRECISION, 0),
    )
    return PerpMarket(
        **{
            "market_index": 0,
            "name": "SOL-PERP",
            "amm": amm,
            "contract_tier": ContractTier.HighlySpeculative,
            "margin_ratio_initial": 1000,
            "margin_ratio_maintenance": 500,
            "liquidator_fee": LIQUIDATION_FEE_PRECISION // 100,
            "number_of_users": 1,
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
            "initial_asset_weight": SPOT_WEIGHT_PRECISION,
            **fields,
        }
    )


def _bankrupt_perp_user() -> User:
    """program: owes $100 in the perp market, still has an open 1-base bid, status Bankrupt."""
    return User(
        authority=USER.pubkey,
        orders=[
            Order(
                order_id=1,
                market_index=0,
                market_type=MarketType.Perp,
                order_type=OrderType.Limit,
                direction=PositionDirection.Long,
                base_asset_amount=BASE_PRECISION,
                slot=0,
            )
        ],
        perp_positions=[
            PerpPosition(
                0,
                quote_asset_amount=-100 * Q,
                quote_entry_amount=-100 * Q,
                quote_break_even_amount=-100 * Q,
                open_orders=1,
                open_bids=BASE_PRECISION,
            )
        ],
        status=UserStatus.Bankrupt,
        next_liquidation_id=2,
        next_order_id=2,
    )


def _state(user: User, perp: PerpMarket | None, usdc: SpotMarket) -> ProgramState:
    liquidator = User(
        authority=LIQUIDATOR.pubkey, spot_positions=[SpotPosition(0, scaled_balance=50 * SBP)]
    )
    return ProgramState(
        state=State(),
        spot_markets={0: usdc},
        perp_markets={} if perp is None else {0: perp},
        oracles={
            "USDC/USD": OracleAccount("USDC/USD", PRICE_PRECISION, 0, 0),
            "SOL/USD": OracleAccount("SOL/USD", 100 * PRICE_PRECISION, 0, 0),
        },
        users={UK: user, LK: liquidator},
        user_stats={
            USER.pubkey: UserStats(authority=USER.pubkey),
            LIQUIDATOR.pubkey: UserStats(authority=LIQUIDATOR.pubkey),
        },
    )


def _resolve_perp(state: ProgramState, if_vault: int) -> tuple[int, Accounts]:
    accounts = Accounts(state, Clock(0, 0), signers=(LIQUIDATOR.pubkey,))
    payment = resolve_perp_bankruptcy(accounts, 0, UK, LK, if_vault)
    accounts.commit()
    return payment, accounts


def _affected(state: ProgramState, base: int, quote: int, rate: int) -> tuple[int, int]:
    """(quote after settling funding, funding paid) of a position holding ``base``."""
    user = User(
        authority=bytes(32),
        perp_positions=[
            PerpPosition(
                0,
                base_asset_amount=base,
                quote_asset_amount=quote,
                quote_entry_amount=quote,
                quote_break_even_amount=quote,
                last_cumulative_funding_rate=rate,
            )
        ],
    )
    settle_funding_payment(user, (bytes(32), 0), state.perp_markets[0].clone(), 0)
    return user.perp_positions[0].quote_asset_amount, user.cumulative_perp_funding


# --- resolve_perp_bankruptcy ----------------------------------------------------------------------
def test_resolve_perp_bankruptcy_socialises_everything_without_insurance() -> None:
    # program successful_resolve_perp_bankruptcy: no insurance, no fee pool: $100 over 10 base
    # = +10 on both cumulative rates, i.e. $50 from the 5 long and $50 from the 5 short
    state = _state(_bankrupt_perp_user(), _perp_market(), _usdc())
    payment, accounts = _resolve_perp(state, 0)
    assert payment == 0
    user = state.users[UK]
    assert user.status == UserStatus.Active
    position = user.get_perp_position(0)
    assert position is not None and position.quote_asset_amount == 0  # the bid keeps it
    assert user.total_social_loss == 100 * Q
    amm = state.perp_markets[0].amm
    assert amm.cumulative_funding_rate_long == 1010 * FRP
    assert amm.cumulative_funding_rate_short == -1010 * FRP
    assert amm.total_social_loss == 100 * Q
    assert amm.quote_asset_amount == -50 * Q
    assert state.perp_markets[0].number_of_users == 0
    assert _affected(state, 5 * BASE_PRECISION, -500 * Q, 1000 * FRP) == (-550 * Q, -50 * Q)
    assert _affected(state, -5 * BASE_PRECISION, 500 * Q, -1000 * FRP) == (450 * Q, -50 * Q)
    (record,) = [r for r in accounts.records if isinstance(r, BankruptcyRecord)]
    assert record.bankruptcy_type == "perp" and record.liquidation_id == 1
    assert record.perp_bankruptcy is not None
    assert record.perp_bankruptcy.pnl == -100 * Q
    assert record.perp_bankruptcy.loss_socialized == 100 * Q
    assert record.perp_bankruptcy.cumulative_funding_rate_delta == 10 * FRP


def test_resolve_perp_bankruptcy_with_fee_pool() -> None:
    # program successful_resolve_perp_bankruptcy_with_fee_pool: the $50 fee pool pays half, the
    # other $50 is socialised (+5 on the rates, $25 per side). Seed 002: the fee pool pays the
    # pnl pool (the program only empties the fee pool), so the pnl pool ends with the $50.
    usdc = _usdc(deposit_balance=500 * SBP)
    state = _state(_bankrupt_perp_user(), _perp_market(fee_pool=50), usdc)
    payment, accounts = _resolve_perp(state, 0)
    assert payment == 0
    market = state.perp_markets[0]
    assert market.amm.fee_pool.scaled_balance == 0
    assert market.pnl_pool.scaled_balance == 50 * SBP
    assert state.spot_markets[0].deposit_balance == 500 * SBP  # tokens moved, none vanished
    assert market.amm.cumulative_funding_rate_long == 1005 * FRP
    assert market.amm.cumulative_funding_rate_short == -1005 * FRP
    assert market.amm.total_social_loss == 50 * Q
    assert state.users[UK].total_social_loss == 100 * Q
    assert _affected(state, 5 * BASE_PRECISION, -500 * Q, 1000 * FRP) == (-525 * Q, -25 * Q)
    assert _affected(state, -5 * BASE_PRECISION, 500 * Q, -1000 * FRP) == (475 * Q, -25 * Q)
    (record,) = [r for r in accounts.records if isinstance(r, BankruptcyRecord)]
    assert record.perp_bankruptcy is not None
    assert (record.perp_bankruptcy.fee_pool_payment, record.perp_bankruptcy.loss_socialized) == (
        50 * Q,
        50 * Q,
    )


def test_resolve_perp_bankruptcy_waterfall() -> None:
    # seed 002: insurance up to quote_max_insurance - quote_settled_insurance = 40 - 10 = $30,
    # then the $50 fee pool, then $20 socialised: 20e6 * 1e9 / 10e9 * 1e3 = +2 on the rates
    usdc = _usdc(deposit_balance=500 * SBP)
    perp = _perp_market(fee_pool=50)
    perp.insurance_claim.quote_max_insurance = 40 * Q
    perp.insurance_claim.quote_settled_insurance = 10 * Q
    state = _state(_bankrupt_perp_user(), perp, usdc)
    payment, _ = _resolve_perp(state, 1000 * Q)
    assert payment == 30 * Q
    market = state.perp_markets[0]
    assert market.insurance_claim.quote_settled_insurance == 40 * Q
    assert market.pnl_pool.scaled_balance == 80 * SBP  # $30 insurance + $50 fee pool
    assert market.amm.fee_pool.scaled_balance == 0
    assert market.amm.cumulative_funding_rate_long == 1002 * FRP
    assert market.amm.total_social_loss == 20 * Q


def test_resolve_perp_bankruptcy_insurance_keeps_one_token() -> None:
    # a $41.000001 fund pays at most $41 (one token stays); the cap is not binding
    perp = _perp_market()
    perp.insurance_claim.quote_max_insurance = 1000 * Q
    state = _state(_bankrupt_perp_user(), perp, _usdc())
    payment, _ = _resolve_perp(state, 41 * Q + 1)
    assert payment == 41 * Q
    assert state.perp_markets[0].amm.total_social_loss == 59 * Q


def test_fully_insured_bankruptcy_needs_no_open_interest() -> None:
    # seed 002: nothing left to socialise, so a market without open interest is fine (the
    # program would fail computing a funding delta it does not use)
    perp = _perp_market()
    perp.amm.base_asset_amount_long = 0
    perp.amm.base_asset_amount_short = 0
    perp.insurance_claim.quote_max_insurance = 1000 * Q
    state = _state(_bankrupt_perp_user(), perp, _usdc())
    payment, _ = _resolve_perp(state, 1000 * Q)
    assert payment == 100 * Q
    assert state.perp_markets[0].amm.cumulative_funding_rate_long == 1000 * FRP
    # an uninsured one cannot be socialised without open interest
    perp = _perp_market()
    perp.amm.base_asset_amount_long = 0
    perp.amm.base_asset_amount_short = 0
    state = _state(_bankrupt_perp_user(), perp, _usdc())
    with pytest.raises(ProtocolError) as err:
        _resolve_perp(state, 0)
    assert err.value.code == ErrorCode.CantResolvePerpBankruptcy


def test_resolve_perp_bankruptcy_refusals() -> None:
    solvent = _bankrupt_perp_user()
    solvent.status = UserStatus.Active
    solvent.spot_positions = [SpotPosition(0, scaled_balance=SBP)]
    state = _state(solvent, _perp_market(), _usdc())
    with pytest.raises(ProtocolError) as err:
        _resolve_perp(state, 0)
    assert err.value.code == ErrorCode.UserNotBankrupt
    state = _state(_bankrupt_perp_user(), _perp_market(), _usdc())
    state.users[LK].status = UserStatus.BeingLiquidated
    with pytest.raises(ProtocolError) as err:
        _resolve_perp(state, 0)
    assert err.value.code == ErrorCode.UserIsBeingLiquidated


def test_bankruptcy_is_detected_when_resolving() -> None:
    # a user that owes and holds nothing is flagged and resolved in the same step
    user = _bankrupt_perp_user()
    user.status = UserStatus.Active
    user.orders = []
    user.perp_positions[0].open_orders = 0
    user.perp_positions[0].open_bids = 0
    state = _state(user, _perp_market(), _usdc())
    _resolve_perp(state, 0)
    assert state.users[UK].status == UserStatus.Active
    assert state.users[UK].get_perp_position(0) is None


# --- resolve_spot_bankruptcy ----------------------------------------------------------------------
def _bankrupt_borrower(usdc: SpotMarket) -> ProgramState:
    user = User(
        authority=USER.pubkey,
        spot_positions=[SpotPosition(0, scaled_balance=100 * SBP, balance_type=BORROW)],
        status=UserStatus.Bankrupt,
        next_liquidation_id=2,
    )
    return _state(user, None, usdc)


def test_resolve_spot_bankruptcy_socialises_through_deposit_interest() -> None:
    # program successful_resolve_spot_bankruptcy: a $100 borrow against $1000 of deposits
    # lowers the deposit index by 10%: 1e10 * 100 / 1000 = 1e9
    usdc = _usdc(deposit_balance=1000 * SBP, borrow_balance=100 * SBP)
    state = _bankrupt_borrower(usdc)
    accounts = Accounts(state, Clock(0, 0), signers=(LIQUIDATOR.pubkey,))
    assert resolve_spot_bankruptcy(accounts, 0, UK, LK, 0) == 0
    accounts.commit()
    user = state.users[UK]
    assert user.status == UserStatus.Active
    assert user.get_spot_position(0) is None
    assert user.total_social_loss == 100 * Q
    market = state.spot_markets[0]
    assert market.borrow_balance == 0
    assert market.cumulative_deposit_interest == 9 * SPOT_CUMULATIVE_INTEREST_PRECISION // 10
    assert (market.total_social_loss, market.total_quote_social_loss) == (100 * Q, 100 * Q)
    assert get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit) == 900 * Q


def test_resolve_spot_bankruptcy_with_insurance() -> None:
    # a $60 fund pays $59.999999 (one token stays); $40.000001 over $1000 of deposits:
    # ceil(1e10 * 40_000_001 / 1e9) = 400_000_010
    usdc = _usdc(deposit_balance=1000 * SBP, borrow_balance=100 * SBP)
    state = _bankrupt_borrower(usdc)
    accounts = Accounts(state, Clock(0, 0), signers=(LIQUIDATOR.pubkey,))
    assert resolve_spot_bankruptcy(accounts, 0, UK, LK, 60 * Q) == 60 * Q - 1
    accounts.commit()
    market = state.spot_markets[0]
    assert market.cumulative_deposit_interest == SPOT_CUMULATIVE_INTEREST_PRECISION - 400_000_010
    assert market.total_social_loss == 100 * Q  # the whole borrow is written off


# --- instructions: the insurance fund pays in tokens ---------------------------------------------
def _send(program: Program, *ixs: Any, slot: int = 1) -> Executed | Rejected:
    return program.execute(Transaction.sign(ixs, slot, (LIQUIDATOR,)), Clock(slot, 1))


def test_resolve_spot_bankruptcy_instruction_moves_insurance_tokens() -> None:
    # the user's $100 borrow was paid out of the vault; $1000 of deposits remain claimed on
    # $900 of tokens. The $60 fund pays $59.999999 into the vault.
    usdc = _usdc(
        deposit_balance=1000 * SBP,
        borrow_balance=100 * SBP,
        vault_amount=900 * Q,
        insurance_fund=InsuranceFund(vault_amount=60 * Q, total_shares=60 * Q),
    )
    program = Program(_bankrupt_borrower(usdc))
    ix = ResolveSpotBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0)
    result = _send(program, ix)
    assert isinstance(result, Executed)
    market = program.state.spot_markets[0]
    assert market.insurance_fund.vault_amount == 1
    assert market.vault_amount == 960 * Q - 1
    assert market.vault_amount + market.insurance_fund.vault_amount == 960 * Q
    # the depositors' $1000 now hold 959.999999: they bore the $40.000001 the fund could not
    deposits = get_token_amount(market.deposit_balance, market, SpotBalanceType.Deposit)
    assert deposits == 960 * Q - 1  # 1000e6 * (1e10 - 400_000_010) / 1e10, floored
    # a second resolution has nothing to resolve
    again = _send(program, ix, slot=2)
    assert isinstance(again, Rejected) and again.code == ErrorCode.UserNotBankrupt


def test_resolve_perp_bankruptcy_instruction_moves_insurance_tokens() -> None:
    usdc = _usdc(
        deposit_balance=100 * SBP,
        vault_amount=100 * Q,
        insurance_fund=InsuranceFund(vault_amount=500 * Q, total_shares=500 * Q),
    )
    perp = _perp_market()
    perp.insurance_claim.quote_max_insurance = 70 * Q
    state = _state(_bankrupt_perp_user(), perp, usdc)
    state.users[LK].spot_positions = [SpotPosition(0, scaled_balance=100 * SBP)]
    program = Program(state)
    result = _send(program, ResolvePerpBankruptcy(LIQUIDATOR.pubkey, 0, USER.pubkey, 0, 0))
    assert isinstance(result, Executed)
    market = program.state.spot_markets[0]
    assert (market.insurance_fund.vault_amount, market.vault_amount) == (430 * Q, 170 * Q)
    assert program.state.perp_markets[0].pnl_pool.scaled_balance == 70 * SBP
    assert program.state.perp_markets[0].amm.total_social_loss == 30 * Q
    # the user signs nothing, but may not resolve itself as its own liquidator
    rejected = program.execute(
        Transaction.sign((ResolvePerpBankruptcy(USER.pubkey, 0, USER.pubkey, 0, 0),), 2, (USER,)),
        Clock(2, 1),
    )
    assert isinstance(rejected, Rejected)
    assert rejected.code == ErrorCode.UserCantLiquidateThemself


# --- a crash, end to end through signed transactions ---------------------------------------------
A = Keypair.from_seed(bytes([11]) * 32)  # leveraged long
B = Keypair.from_seed(bytes([12]) * 32)  # the short on the other side
LIQ = Keypair.from_seed(bytes([13]) * 32)
AK, BK, LQK = (A.pubkey, 0), (B.pubkey, 0), (LIQ.pubkey, 0)
IF_START = 1_000 * Q
FEE_POOL_START = 50 * Q


def _crash_genesis() -> ProgramState:
    """The test world's markets (USDC, SOL, SOL-PERP at $100) with: A long 100 SOL-PERP bought
    at $100 on $2000 of USDC (5x), B short the same 100 on $3000, a liquidator with $10_000, a
    $1000 USDC insurance fund, $50 in the perp market's fee pool; 1% liquidator and 1%
    insurance-fund fees, the market may draw $100 from the insurance fund."""
    state = make_state()
    usdc = state.spot_markets[0]
    perp = state.perp_markets[0]
    deposits = {AK: 2_000 * Q, BK: 3_000 * Q, LQK: 10_000 * Q}
    for (authority, sub), amount in deposits.items():
        state.users[(authority, sub)] = User(
            authority=authority,
            sub_account_id=sub,
            spot_positions=[
                SpotPosition(0, scaled_balance=amount * 1000, cumulative_deposits=amount)
            ],
        )
        state.user_stats[authority] = UserStats(authority=authority, number_of_sub_accounts=1)
    usdc.deposit_balance = (sum(deposits.values()) + FEE_POOL_START) * 1000
    usdc.vault_amount = sum(deposits.values()) + FEE_POOL_START
    usdc.insurance_fund = InsuranceFund(vault_amount=IF_START, total_shares=IF_START)
    perp.amm.fee_pool = PoolBalance(FEE_POOL_START * 1000, 0)

    base, quote = 100 * BASE_PRECISION, 10_000 * Q
    state.users[AK].perp_positions = [
        PerpPosition(
            0,
            base_asset_amount=base,
            quote_asset_amount=-quote,
            quote_entry_amount=-quote,
            quote_break_even_amount=-quote,
        )
    ]
    state.users[BK].perp_positions = [
        PerpPosition(
            0,
            base_asset_amount=-base,
            quote_asset_amount=quote,
            quote_entry_amount=quote,
            quote_break_even_amount=quote,
        )
    ]
    amm = perp.amm
    amm.base_asset_amount_long, amm.base_asset_amount_short = base, -base
    amm.quote_entry_amount_long = amm.quote_break_even_amount_long = -quote
    amm.quote_entry_amount_short = amm.quote_break_even_amount_short = quote
    perp.number_of_users = perp.number_of_users_with_base = 2
    perp.liquidator_fee = perp.if_liquidation_fee = LIQUIDATION_FEE_PRECISION // 100
    perp.insurance_claim.quote_max_insurance = 100 * Q
    return state


def _check_conservation(program: Program) -> None:
    """Tokens: the USDC vault plus the insurance fund vault never change (no deposits or
    withdrawals happen), and the vault holds exactly the users' USDC plus the market pools.
    Perps: the users' positions add up to the market's totals."""
    state = program.state
    usdc = state.spot_markets[0]
    perp = state.perp_markets[0]
    assert (
        usdc.vault_amount + usdc.insurance_fund.vault_amount
        == 15_000 * Q + FEE_POOL_START + IF_START
    )

    def tokens(scaled: int, balance_type: SpotBalanceType) -> int:
        amount = get_token_amount(scaled, usdc, balance_type)
        return amount if balance_type == SpotBalanceType.Deposit else -amount

    users = [
        tokens(p.scaled_balance, p.balance_type)
        for u in state.users.values()
        for p in u.spot_positions
        if p.market_index == 0
    ]
    pools = [
        perp.pnl_pool.scaled_balance,
        perp.amm.fee_pool.scaled_balance,
        usdc.revenue_pool.scaled_balance,
    ]
    claims = sum(users) + sum(tokens(s, SpotBalanceType.Deposit) for s in pools)
    assert claims == usdc.vault_amount
    positions = [p for u in state.users.values() for p in u.perp_positions if p.market_index == 0]
    assert sum(p.quote_asset_amount for p in positions) == perp.amm.quote_asset_amount
    assert sum(p.base_asset_amount for p in positions) == (
        perp.amm.base_asset_amount_long + perp.amm.base_asset_amount_short
    )
    assert sum(p.base_asset_amount for p in positions if p.base_asset_amount > 0) == (
        perp.amm.base_asset_amount_long
    )


def test_crash_liquidation_then_bankruptcy() -> None:
    program = Program(_crash_genesis())
    clock = {"slot": START_SLOT, "ts": START_TS}

    def send(signer: Keypair, *ixs: Any, slots: int = 10) -> Executed | Rejected:
        clock["slot"] += slots
        clock["ts"] += slots * 4 // 10
        c = Clock(clock["slot"], clock["ts"])
        program.execute(
            Transaction.sign((UpdateOracle("SOL/USD", price[0], 0),), c.slot, (ORACLE_AUTHORITY,)),
            c,
        )
        return program.execute(Transaction.sign(ixs, c.slot, (signer,)), c)

    users = program.state.users
    price = [100 * PRICE_PRECISION]
    liquidate = LiquidatePerp(LIQ.pubkey, 0, A.pubkey, 0, 0, 1_000 * BASE_PRECISION)
    _check_conservation(program)

    # at $100 A is healthy: $2000 against a 5% requirement of $500
    rejected = send(LIQ, liquidate)
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.SufficientCollateral

    # $83: equity 2000 - 1700 = $300 < 5% * 8300 = $415. With the 2% buffer on the $8300
    # liability and on the $1700 loss the shortage is 415 + 166 - (300 - 34) = $315. Each base
    # frees 83 * (7% - 1% fee - 1% if fee) = $4.15: 315e15 / 4_150_000 = 75_903_614_457 base,
    # 75.91 in steps; the first step may free 10%: 7.591 -> 7.6 base, worth $630.80, paying
    # $6.308 to L and $6.308 to the market.
    price[0] = 83 * PRICE_PRECISION
    result = send(LIQ, liquidate, slots=30)
    assert isinstance(result, Executed), result
    _check_conservation(program)
    a_position = users[AK].perp_positions[0]
    assert (a_position.base_asset_amount, a_position.quote_asset_amount) == (
        92_400_000_000,
        -10_000 * Q + 630_800_000 - 2 * 6_308_000,
    )
    l_position = users[LQK].perp_positions[0]
    assert (l_position.base_asset_amount, l_position.quote_asset_amount) == (
        7_600_000_000,
        -630_800_000 + 6_308_000,
    )
    assert program.state.perp_markets[0].amm.total_liquidation_fee == 6_308_000
    assert users[AK].status == UserStatus.BeingLiquidated
    steps = 1
    while True:
        result = send(LIQ, liquidate, slots=30)
        assert isinstance(result, Executed), result
        _check_conservation(program)
        if users[AK].status == UserStatus.Active:
            break
        steps += 1
        assert users[AK].status == UserStatus.BeingLiquidated
        assert steps < 10
    # paced: it took several steps, the first limited to 10% of the shortage
    assert steps >= 2
    a_base = users[AK].perp_positions[0].base_asset_amount
    assert 0 < a_base < 100 * BASE_PRECISION
    assert users[LQK].perp_positions[0].base_asset_amount == 100 * BASE_PRECISION - a_base
    fees_after_phase_one = program.state.perp_markets[0].amm.total_liquidation_fee
    assert fees_after_phase_one > 0
    # out of liquidation with the buffer met: liquidating again is refused
    rejected = send(LIQ, liquidate)
    assert isinstance(rejected, Rejected) and rejected.code == ErrorCode.SufficientCollateral

    # $65: A's remaining long is under water beyond its deposit
    price[0] = 65 * PRICE_PRECISION
    for _ in range(20):
        if users[AK].perp_positions[0].base_asset_amount == 0:
            break
        result = send(LIQ, liquidate, slots=30)
        assert isinstance(result, Executed), result
        _check_conservation(program)
    position = users[AK].perp_positions[0]
    assert position.base_asset_amount == 0 and position.quote_asset_amount < 0
    assert users[AK].is_being_liquidated() and not users[AK].is_bankrupt()

    # the deposit pays part of the negative pnl, then A has nothing left: bankrupt
    take_pnl = LiquidatePerpPnlForDeposit(LIQ.pubkey, 0, A.pubkey, 0, 0, 0, 10**12)
    for _ in range(20):
        if users[AK].is_bankrupt():
            break
        result = send(LIQ, take_pnl, slots=30)
        assert isinstance(result, Executed), result
        _check_conservation(program)
    assert users[AK].is_bankrupt()
    assert users[AK].get_spot_position(0) is None
    loss = -users[AK].perp_positions[0].quote_asset_amount
    assert loss > 150 * Q  # more than the insurance cap and the fee pool together

    market = program.state.perp_markets[0]
    rate_before = market.amm.cumulative_funding_rate_long
    b_quote = users[BK].perp_positions[0].quote_asset_amount
    result = send(LIQ, ResolvePerpBankruptcy(LIQ.pubkey, 0, A.pubkey, 0, 0))
    assert isinstance(result, Executed), result
    _check_conservation(program)
    (record,) = [r.record for r in result.records if isinstance(r.record, BankruptcyRecord)]
    detail = record.perp_bankruptcy
    assert detail is not None
    # seed 002: insurance up to quote_max_insurance, then the fee pool, then social loss
    assert (detail.pnl, detail.if_payment, detail.fee_pool_payment) == (
        -loss,
        100 * Q,
        FEE_POOL_START,
    )
    assert detail.loss_socialized == loss - 150 * Q
    usdc = program.state.spot_markets[0]
    assert usdc.insurance_fund.vault_amount == IF_START - 100 * Q
    market = program.state.perp_markets[0]
    assert market.insurance_claim.quote_settled_insurance == 100 * Q
    assert market.amm.fee_pool.scaled_balance == 0
    assert market.amm.total_social_loss == loss - 150 * Q
    # the rest is spread over the 200 base still open (L's 100 long, B's 100 short), rounded up
    expected_delta = -(-(loss - 150 * Q) * AMM_RESERVE_PRECISION // (200 * BASE_PRECISION)) * 1000
    assert market.amm.cumulative_funding_rate_long == rate_before + expected_delta
    assert users[AK].status == UserStatus.Active
    assert users[AK].get_perp_position(0) is None
    assert users[AK].total_social_loss == loss
    # B pays its share when it settles funding: 100e9 base * delta / 1e12 = delta / 10
    assert isinstance(send(B, SettleFundingPayment(B.pubkey, 0)), Executed)
    assert users[BK].perp_positions[0].quote_asset_amount == b_quote - expected_delta // 10
    _check_conservation(program)
