"""A small exchange for tests: USDC and SOL spot markets, a SOL perp, oracles and keys.

Everything goes through real signed transactions and :meth:`Program.execute`; ``World``
only saves typing. Deterministic: keys come from fixed seeds, the clock is manual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    PEG_PRECISION,
    PRICE_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.errors import Rejected
from protocol.instructions import Deposit, InitializeUser, UpdateOracle, Withdraw
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.state import AMM, HistoricalOracleData, OracleAccount, PerpMarket, SpotMarket, State
from protocol.transaction import Transaction
from protocol.types import OracleSource

USDC = 0
SOL = 1
SOL_PERP = 0
USDC_UNIT = 10**6
SOL_UNIT = 10**9
START_TS = 1_700_000_000
START_SLOT = 1_000


def keypair(n: int) -> Keypair:
    return Keypair.from_seed(bytes([n]) * 32)


ORACLE_AUTHORITY = keypair(250)


def make_state(sol_price: int = 100 * PRICE_PRECISION) -> ProgramState:
    usdc = SpotMarket(
        market_index=USDC,
        name="USDC",
        oracle="USDC/USD",
        decimals=6,
        oracle_source=OracleSource.QuoteAsset,
        historical_oracle_data=HistoricalOracleData.seeded(PRICE_PRECISION, START_TS),
        optimal_utilization=800_000,
        optimal_borrow_rate=100_000,
        max_borrow_rate=1_000_000,
        last_interest_ts=START_TS,
        last_twap_ts=START_TS,
        order_step_size=1,
        order_tick_size=1,
        withdraw_guard_threshold=10_000 * 10**6,
    )
    sol = SpotMarket(
        market_index=SOL,
        name="SOL",
        oracle="SOL/USD",
        decimals=9,
        historical_oracle_data=HistoricalOracleData.seeded(sol_price, START_TS),
        initial_asset_weight=8_000,
        maintenance_asset_weight=9_000,
        initial_liability_weight=12_000,
        maintenance_liability_weight=11_000,
        imf_factor=3_000,
        optimal_utilization=700_000,
        optimal_borrow_rate=150_000,
        max_borrow_rate=2_000_000,
        last_interest_ts=START_TS,
        last_twap_ts=START_TS,
        order_step_size=10_000_000,
        order_tick_size=100,
        min_order_size=10_000_000,
        withdraw_guard_threshold=100 * 10**9,
    )
    sqrt_k = 10_000 * AMM_RESERVE_PRECISION
    perp = PerpMarket(
        market_index=SOL_PERP,
        name="SOL-PERP",
        amm=AMM(
            oracle="SOL/USD",
            historical_oracle_data=HistoricalOracleData.seeded(sol_price, START_TS),
            base_asset_reserve=sqrt_k,
            quote_asset_reserve=sqrt_k,
            sqrt_k=sqrt_k,
            terminal_quote_asset_reserve=sqrt_k,
            peg_multiplier=sol_price * PEG_PRECISION // PRICE_PRECISION,
            order_step_size=BASE_PRECISION // 100,
            order_tick_size=100,
            min_order_size=BASE_PRECISION // 100,
            last_funding_rate_ts=START_TS,
            last_mark_price_twap=sol_price,
            last_mark_price_twap_5min=sol_price,
            last_mark_price_twap_ts=START_TS,
            last_bid_price_twap=sol_price,
            last_ask_price_twap=sol_price,
        ),
        margin_ratio_initial=1_000,
        margin_ratio_maintenance=500,
        unrealized_pnl_initial_asset_weight=SPOT_WEIGHT_PRECISION,
        unrealized_pnl_maintenance_asset_weight=SPOT_WEIGHT_PRECISION,
    )
    oracles = {
        "USDC/USD": OracleAccount("USDC/USD", PRICE_PRECISION, 0, START_SLOT),
        "SOL/USD": OracleAccount("SOL/USD", sol_price, sol_price // 1000, START_SLOT),
    }
    return ProgramState(
        state=State(oracle_authority=ORACLE_AUTHORITY.pubkey),
        spot_markets={USDC: usdc, SOL: sol},
        perp_markets={SOL_PERP: perp},
        oracles=oracles,
    )


@dataclass
class World:
    program: Program = field(default_factory=lambda: Program(make_state()))
    slot: int = START_SLOT
    ts: int = START_TS

    @property
    def clock(self) -> Clock:
        return Clock(self.slot, self.ts)

    def advance(self, slots: int = 1, seconds: int | None = None) -> None:
        self.slot += slots
        self.ts += seconds if seconds is not None else (slots * 4 + 9) // 10  # 400 ms slots

    def tx(self, *ixs: Any, signers: tuple[Keypair, ...]) -> Transaction:
        return Transaction.sign(ixs, self.slot, signers)

    def send(self, *ixs: Any, signers: tuple[Keypair, ...]) -> Executed | Rejected:
        return self.program.execute(self.tx(*ixs, signers=signers), self.clock)

    def ok(self, *ixs: Any, signers: tuple[Keypair, ...]) -> Executed:
        result = self.send(*ixs, signers=signers)
        assert isinstance(result, Executed), result
        return result

    def new_user(self, kp: Keypair, usdc: int = 0, sol: int = 0, sub_account_id: int = 0) -> None:
        ixs: list[Any] = [InitializeUser(kp.pubkey, sub_account_id)]
        if usdc:
            ixs.append(Deposit(kp.pubkey, sub_account_id, USDC, usdc))
        if sol:
            ixs.append(Deposit(kp.pubkey, sub_account_id, SOL, sol))
        self.ok(*ixs, signers=(kp,))

    def set_price(self, oracle_id: str, price: int, confidence: int = 0) -> None:
        self.ok(UpdateOracle(oracle_id, price, confidence), signers=(ORACLE_AUTHORITY,))

    def withdraw(self, kp: Keypair, market: int, amount: int, sub: int = 0) -> Executed | Rejected:
        return self.send(Withdraw(kp.pubkey, sub, market, amount), signers=(kp,))
