"""A world for the risk bots' tests: the test exchange (USDC, SOL, SOL-PERP at $100) with
users whose deposits, borrows and perp positions are written straight into genesis state, the
way ``tests/protocol/test_bankruptcy.py`` builds its crash, plus the conservation checks.

Genesis bookkeeping is kept exact so the checks can hold with equality: every spot balance
is counted in its market's deposit or borrow balance, a borrow's tokens have left the vault,
every perp long is matched by a short at the same price (the AMM holds no position), and the
USDC market charges no interest (its token amounts never round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keepers.runtime.executor import TxResultLike
from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.constants import LIQUIDATION_FEE_PRECISION, QUOTE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import UpdateOracle
from protocol.keys import Keypair
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed, Program
from protocol.state import User, UserStats
from protocol.state.spot_market import InsuranceFund, PoolBalance, SpotMarket
from protocol.state.user import PerpPosition, SpotPosition
from protocol.transaction import Transaction
from protocol.types import SpotBalanceType
from tests.protocol.world import (
    ORACLE_AUTHORITY,
    SOL,
    SOL_PERP,
    START_SLOT,
    START_TS,
    USDC,
    make_state,
)

Q = QUOTE_PRECISION
SOL_UNIT = 10**9
USDC_TO_SCALED = 1_000  # USDC scaled balance per token at the initial interest index
BORROW = SpotBalanceType.Borrow


@dataclass(frozen=True, slots=True)
class Account:
    """A genesis account: USDC and SOL (negative: a borrow, in tokens) and a SOL-PERP
    position of ``perp_base`` (BASE_PRECISION) entered at ``entry_price`` (PRICE_PRECISION)."""

    keypair: Keypair
    usdc: int = 0
    sol: int = 0
    perp_base: int = 0
    entry_price: int = 100 * 10**6
    lp_shares: int = 0


def _spot(market_index: int, tokens: int, scale: int) -> SpotPosition:
    balance_type = BORROW if tokens < 0 else SpotBalanceType.Deposit
    return SpotPosition(
        market_index,
        scaled_balance=abs(tokens) * scale,
        balance_type=balance_type,
        cumulative_deposits=tokens,
    )


def risk_state(
    accounts: list[Account],
    *,
    insurance_fund: int = 1_000 * Q,
    fee_pool: int = 50 * Q,
    quote_max_insurance: int = 100 * Q,
    liquidator_fee: int = LIQUIDATION_FEE_PRECISION // 100,
) -> ProgramState:
    """Genesis with ``accounts``; perp longs and shorts must net to zero at equal prices."""
    state = make_state()
    usdc = state.spot_markets[USDC]
    sol = state.spot_markets[SOL]
    perp = state.perp_markets[SOL_PERP]
    usdc.optimal_borrow_rate = 0
    usdc.max_borrow_rate = 0
    usdc_deposits = usdc_borrows = sol_deposits = sol_borrows = 0
    longs = shorts = 0
    users_with_base = 0
    for account in accounts:
        authority = account.keypair.pubkey
        user = User(authority=authority)
        if account.usdc:
            user.spot_positions.append(_spot(USDC, account.usdc, USDC_TO_SCALED))
        if account.sol:
            user.spot_positions.append(_spot(SOL, account.sol, 1))
        if account.perp_base or account.lp_shares:
            quote = -account.perp_base * account.entry_price // 10**9
            user.perp_positions.append(
                PerpPosition(
                    SOL_PERP,
                    base_asset_amount=account.perp_base,
                    quote_asset_amount=quote,
                    quote_entry_amount=quote,
                    quote_break_even_amount=quote,
                    lp_shares=account.lp_shares,
                )
            )
            users_with_base += account.perp_base != 0
        state.users[(authority, 0)] = user
        state.user_stats[authority] = UserStats(authority=authority, number_of_sub_accounts=1)
        usdc_deposits += max(account.usdc, 0)
        usdc_borrows += max(-account.usdc, 0)
        sol_deposits += max(account.sol, 0)
        sol_borrows += max(-account.sol, 0)
        longs += max(account.perp_base, 0)
        shorts += min(account.perp_base, 0)
    if longs + shorts != 0:
        raise ValueError("genesis perp positions must net to zero")
    usdc.deposit_balance = (usdc_deposits + fee_pool) * USDC_TO_SCALED
    usdc.borrow_balance = usdc_borrows * USDC_TO_SCALED
    usdc.vault_amount = usdc_deposits - usdc_borrows + fee_pool
    usdc.insurance_fund = InsuranceFund(vault_amount=insurance_fund, total_shares=insurance_fund)
    sol.deposit_balance = sol_deposits
    sol.borrow_balance = sol_borrows
    sol.vault_amount = sol_deposits - sol_borrows
    amm = perp.amm
    amm.fee_pool = PoolBalance(fee_pool * USDC_TO_SCALED, 0)
    amm.base_asset_amount_long, amm.base_asset_amount_short = longs, shorts
    for account in accounts:
        quote = -account.perp_base * account.entry_price // 10**9
        if account.perp_base > 0:
            amm.quote_entry_amount_long += quote
            amm.quote_break_even_amount_long += quote
        elif account.perp_base < 0:
            amm.quote_entry_amount_short += quote
            amm.quote_break_even_amount_short += quote
    perp.number_of_users = sum(1 for a in accounts if a.perp_base or a.lp_shares)
    perp.number_of_users_with_base = users_with_base
    perp.liquidator_fee = perp.if_liquidation_fee = liquidator_fee
    perp.insurance_claim.quote_max_insurance = quote_max_insurance
    return state


def _signed_tokens(market: SpotMarket, position: SpotPosition) -> int:
    amount = get_token_amount(position.scaled_balance, market, position.balance_type)
    return -amount if position.balance_type == BORROW else amount


def quote_claims(state: ProgramState) -> int:
    """What the USDC vault owes: every user's USDC (deposits less borrows) plus the pnl and
    fee pools of every perp market and the USDC revenue pool."""
    usdc = state.spot_markets[USDC]
    users = sum(
        _signed_tokens(usdc, p)
        for u in state.users.values()
        for p in u.spot_positions
        if p.market_index == USDC
    )
    pools = [usdc.revenue_pool.scaled_balance]
    for perp in state.perp_markets.values():
        pools += [perp.pnl_pool.scaled_balance, perp.amm.fee_pool.scaled_balance]
    return users + sum(get_token_amount(s, usdc, SpotBalanceType.Deposit) for s in pools)


def sol_claims(state: ProgramState) -> int:
    sol = state.spot_markets[SOL]
    users = sum(
        _signed_tokens(sol, p)
        for u in state.users.values()
        for p in u.spot_positions
        if p.market_index == SOL
    )
    return users + get_token_amount(sol.revenue_pool.scaled_balance, sol, SpotBalanceType.Deposit)


def check_conservation(state: ProgramState, quote_total: int, sol_total: int) -> None:
    """Quote (USDC) and SOL tokens held by the program never change (nobody deposits or
    withdraws), the vaults hold exactly what users and pools are owed, and the perp positions
    add up to the market's totals."""
    usdc = state.spot_markets[USDC]
    sol = state.spot_markets[SOL]
    assert usdc.vault_amount + usdc.insurance_fund.vault_amount == quote_total
    assert sol.vault_amount + sol.insurance_fund.vault_amount == sol_total
    assert quote_claims(state) == usdc.vault_amount
    assert sol_claims(state) == sol.vault_amount
    perp = state.perp_markets[SOL_PERP]
    positions = [p for u in state.users.values() for p in u.perp_positions]
    assert sum(p.quote_asset_amount for p in positions) == perp.amm.quote_asset_amount
    assert sum(p.base_asset_amount for p in positions if p.base_asset_amount > 0) == (
        perp.amm.base_asset_amount_long
    )
    assert sum(p.base_asset_amount for p in positions if p.base_asset_amount < 0) == (
        perp.amm.base_asset_amount_short
    )


def tokens_held(state: ProgramState) -> tuple[int, int]:
    """(USDC, SOL) tokens the program holds: vaults plus insurance funds."""
    usdc = state.spot_markets[USDC]
    sol = state.spot_markets[SOL]
    return (
        usdc.vault_amount + usdc.insurance_fund.vault_amount,
        sol.vault_amount + sol.insurance_fund.vault_amount,
    )


@dataclass(frozen=True, slots=True)
class Result:
    """What ``keepers.rpc.TxResult`` carries, for the executor."""

    ok: bool
    signature: bytes = b""
    slot: int | None = None
    records: tuple[Any, ...] = ()
    code: int | None = None
    code_name: str | None = None
    detail: str | None = None
    field: str | None = None


@dataclass
class ProgramNode:
    """A node in the test's process: executes signed transactions on a :class:`Program` at a
    manual clock and runs ``after_each`` after every executed transaction."""

    program: Program
    slot: int = START_SLOT
    ts: int = START_TS
    after_each: Callable[[ProgramState], None] | None = None
    executed: list[Executed] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        return Clock(self.slot, self.ts)

    def advance(self, slots: int) -> None:
        self.slot += slots
        self.ts += (slots * 4 + 9) // 10

    def run(self, tx: Transaction) -> Executed | Rejected:
        result = self.program.execute(tx, self.clock)
        if isinstance(result, Executed):
            self.executed.append(result)
            if self.after_each is not None:
                self.after_each(self.program.state)
        else:
            self.rejected.append(result)
        return result

    def publish(self, oracle_id: str, price: int) -> None:
        tx = Transaction.sign((UpdateOracle(oracle_id, price, 0),), self.slot, (ORACLE_AUTHORITY,))
        result = self.run(tx)
        assert isinstance(result, Executed), result

    async def send_tx(self, raw: bytes) -> TxResultLike:
        result = self.run(Transaction.from_bytes(raw))
        if isinstance(result, Executed):
            return Result(
                ok=True,
                signature=result.signature,
                slot=result.slot,
                records=tuple(r.record for r in result.records),
            )
        return Result(
            ok=False,
            code=int(result.code),
            code_name=result.code.name,
            detail=result.detail,
            field=result.field,
        )

    async def simulate(self, raw: bytes) -> TxResultLike:
        raise AssertionError("the scenario sends without simulating")
