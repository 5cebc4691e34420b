"""Property: no sequence of instructions changes a user's collateral without a record.

A hypothesis state machine sends random signed transactions — deposits, withdrawals, orders,
keeper fills against makers and the vAMM, oracle moves (including crashes), liquidations of
perp and spot positions, bankruptcy resolution, PnL and funding settlement — through
``Program.execute``. After every executed transaction, every user whose stored collateral
changed (any spot position's market, balance type or scaled balance; any perp position's base,
quote or LP shares) must be named by one of that transaction's records. Interest and socialised
losses move through market-wide indices, not stored balances, so they need no per-user record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from protocol.constants import BASE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import (
    Deposit,
    PlacePerpOrder,
    SettleFundingPayment,
    UpdateFundingRate,
    Withdraw,
)
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef
from protocol.instructions.liquidation import (
    LiquidatePerp,
    LiquidateSpot,
    ResolvePerpBankruptcy,
)
from protocol.instructions.pnl import SettlePnl
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.state import OrderParams
from protocol.state.user import UserKey
from protocol.types import MarketType, OrderType, PositionDirection
from tests.protocol.fill_world import FILLER, LONG, SHORT, P, new_world, perp_limit, step
from tests.protocol.world import SOL, SOL_PERP, SOL_UNIT, USDC, USDC_UNIT, keypair

USERS = [keypair(80 + i) for i in range(4)]
LIQUIDATOR = keypair(90)


def named_users(records: list[Any]) -> set[UserKey]:
    """Every user a record names: an ``authority``/``sub_account_id`` pair, or a field holding
    an ``(authority, sub_account_id)`` tuple (``taker``, ``maker``, ``filler``, ``user``,
    ``liquidator``, ``transfer_user``, ...)."""
    found: set[UserKey] = set()
    for record in records:
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        if isinstance(values.get("authority"), bytes) and "sub_account_id" in values:
            found.add((values["authority"], values["sub_account_id"]))
        for value in values.values():
            if (
                isinstance(value, tuple)
                and len(value) == 2
                and isinstance(value[0], bytes)
                and isinstance(value[1], int)
            ):
                found.add((value[0], value[1]))
    return found


def collateral(state: Any) -> dict[UserKey, tuple[Any, ...]]:
    return {
        key: (
            tuple((p.market_index, p.balance_type, p.scaled_balance) for p in user.spot_positions),
            tuple(
                (p.market_index, p.base_asset_amount, p.quote_asset_amount, p.lp_shares)
                for p in user.perp_positions
            ),
        )
        for key, user in state.users.items()
    }


class CollateralRecords(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.w = new_world(amm_price=100 * P, sol=20 * SOL_UNIT)
        for kp in USERS:
            self.w.new_user(kp, usdc=500 * USDC_UNIT, sol=2 * SOL_UNIT)
        self.w.new_user(LIQUIDATOR, usdc=100_000 * USDC_UNIT)
        self.oracle = 100 * P
        step(self.w, 1, self.oracle)

    def _send(self, ix: Any, signer: Keypair) -> None:
        before = collateral(self.w.program.state)
        result = self.w.send(ix, signers=(signer,))
        self.w.advance(1, seconds=0)
        if isinstance(result, Rejected):
            assert collateral(self.w.program.state) == before
            return
        assert isinstance(result, Executed)
        after = collateral(self.w.program.state)
        changed = {k for k in after if after[k] != before.get(k)}
        unexplained = changed - named_users([r.record for r in result.records])
        assert not unexplained, (type(ix).__name__, unexplained)

    @rule(who=st.integers(0, 3), market=st.sampled_from([USDC, SOL]), units=st.integers(1, 400))
    def deposit(self, who: int, market: int, units: int) -> None:
        amount = units * (USDC_UNIT if market == USDC else SOL_UNIT // 100)
        self._send(Deposit(USERS[who].pubkey, 0, market, amount), USERS[who])

    @rule(who=st.integers(0, 3), market=st.sampled_from([USDC, SOL]), units=st.integers(1, 600))
    def withdraw(self, who: int, market: int, units: int) -> None:
        amount = units * (USDC_UNIT if market == USDC else SOL_UNIT // 100)
        self._send(Withdraw(USERS[who].pubkey, 0, market, amount), USERS[who])

    @rule(
        who=st.integers(0, 3),
        side=st.sampled_from([LONG, SHORT]),
        bps=st.integers(5, 100),
        tenths=st.integers(1, 60),
    )
    def rest(self, who: int, side: PositionDirection, bps: int, tenths: int) -> None:
        sign = -1 if side == LONG else 1
        price = self.oracle * (10_000 + sign * bps) // 10_000 // 100 * 100
        params = perp_limit(side, price, tenths * BASE_PRECISION // 10)
        self._send(PlacePerpOrder(USERS[who].pubkey, 0, params), USERS[who])

    @rule(
        who=st.integers(0, 3),
        side=st.sampled_from([LONG, SHORT]),
        tenths=st.integers(1, 60),
        wait=st.integers(0, 40),
    )
    def take(self, who: int, side: PositionDirection, tenths: int, wait: int) -> None:
        kp = USERS[who]
        params = OrderParams(
            OrderType.Market, MarketType.Perp, side, tenths * BASE_PRECISION // 10, 0
        )
        self._send(PlacePerpOrder(kp.pubkey, 0, params), kp)
        step(self.w, wait + 1, self.oracle)
        state = self.w.program.state
        user = state.users[(kp.pubkey, 0)]
        for order in [o for o in user.orders if not o.post_only]:
            makers = sorted(
                (m.price, k, m.order_id)
                for k, u in state.users.items()
                if k != user.key
                for m in u.orders
                if m.post_only
                and m.direction != order.direction
                and (
                    m.price <= self.oracle * 102 // 100
                    if order.direction == LONG
                    else m.price >= self.oracle * 98 // 100
                )
            )
            if order.direction == SHORT:
                makers.reverse()
            refs = tuple(MakerOrderRef(k[0], k[1], oid) for _, k, oid in makers[:2])
            self._send(FillPerpOrder(FILLER.pubkey, 0, kp.pubkey, 0, order.order_id, refs), FILLER)

    @rule(
        who=st.integers(0, 3),
        side=st.sampled_from([LONG, SHORT]),
        tenths=st.integers(300, 600),
        crash_bps=st.integers(800, 3_000),
        steps=st.integers(1, 4),
    )
    def leverage_then_crash(
        self, who: int, side: PositionDirection, tenths: int, crash_bps: int, steps: int
    ) -> None:
        """A leveraged position filled by the vAMM, an oracle move against it, then the
        liquidator takes it over in steps and resolves any bankruptcy."""
        self.take(who, side, tenths, 40)
        self.oracle_moves(-crash_bps if side == LONG else crash_bps)
        for _ in range(steps):
            self.liquidate_perp(who, 600)
            step(self.w, 3, self.oracle)
        self.resolve_bankruptcy(who)

    @rule(move_bps=st.sampled_from([-3_000, -1_500, -500, 300, 800, 2_000]))
    def oracle_moves(self, move_bps: int) -> None:
        self.oracle = max(self.oracle * (10_000 + move_bps) // 10_000 // 100 * 100, P)
        step(self.w, 2, self.oracle)

    @rule(who=st.integers(0, 3), tenths=st.integers(1, 400))
    def liquidate_perp(self, who: int, tenths: int) -> None:
        ix = LiquidatePerp(
            LIQUIDATOR.pubkey, 0, USERS[who].pubkey, 0, SOL_PERP, tenths * BASE_PRECISION // 10
        )
        self._send(ix, LIQUIDATOR)

    @rule(who=st.integers(0, 3), asset=st.sampled_from([USDC, SOL]), units=st.integers(1, 500))
    def liquidate_spot(self, who: int, asset: int, units: int) -> None:
        liability = SOL if asset == USDC else USDC
        ix = LiquidateSpot(
            LIQUIDATOR.pubkey, 0, USERS[who].pubkey, 0, asset, liability, units * USDC_UNIT
        )
        self._send(ix, LIQUIDATOR)

    @rule(who=st.integers(0, 3))
    def resolve_bankruptcy(self, who: int) -> None:
        ix = ResolvePerpBankruptcy(LIQUIDATOR.pubkey, 0, USERS[who].pubkey, 0, SOL_PERP)
        self._send(ix, LIQUIDATOR)

    @rule(who=st.integers(0, 3))
    def settle(self, who: int) -> None:
        self._send(SettlePnl(USERS[who].pubkey, 0, SOL_PERP), FILLER)
        self._send(SettleFundingPayment(USERS[who].pubkey, 0), FILLER)

    @rule(hours=st.integers(1, 3))
    def funding(self, hours: int) -> None:
        step(self.w, hours * 9_000, self.oracle)
        self._send(UpdateFundingRate(SOL_PERP), FILLER)


CollateralRecords.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]
)
test_no_collateral_change_without_a_record = CollateralRecords.TestCase
