"""Property: random perp order flow conserves positions and quote.

A hypothesis state machine places resting maker orders and market orders for four users, lets a
filler cross them (choosing makers the way a keeper would: those crossing the taker's price now,
best first) with the vAMM taking what is left, cancels orders and moves the oracle. After every
step:

* base: the users' positions plus the AMM's own position (``-base_asset_amount_with_amm``) sum
  to zero, and the market's long/short totals equal the users' sums;
* quote: the users' perp quote, plus what the market kept in fees (the AMM's
  ``total_fee_minus_distributions``, which includes its spread surplus), plus the quote the AMM's
  curve took in for its position (its cost basis), plus the fee, PnL and revenue pools, is zero
  — nothing is created or lost, only moved;
* ``amm.quote_asset_amount`` equals the users' summed quote (the program's running aggregate);
* no token moves: the USDC vault still holds exactly what was deposited;
* a rejected transaction changed nothing.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.constants import BASE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import CancelOrder
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef
from protocol.math.auction import get_limit_price
from protocol.program import Executed
from protocol.records import FillRecord
from protocol.state import OrderParams
from protocol.state_hash import state_hash
from protocol.types import MarketType, OrderType, PositionDirection
from tests.protocol.fill_world import FILLER, LONG, SHORT, P, new_world, perp_limit, step
from tests.protocol.world import USDC, USDC_UNIT, keypair

USERS = [keypair(60 + i) for i in range(4)]
TICK = 100


class OrderFlow(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.w = new_world(amm_price=100 * P)
        market = self.w.program.state.perp_markets[0]
        market.amm.base_spread = 2_000
        market.amm.max_spread = 20_000
        for kp in USERS:
            self.w.new_user(kp, usdc=5_000 * USDC_UNIT)
        self.deposited = self.w.program.state.spot_markets[USDC].vault_amount
        self.amm_cost_basis = 0
        self.oracle = 100 * P
        step(self.w, 1, self.oracle)

    def _send(self, ix: object, signer: object) -> Executed | Rejected:
        before = state_hash(self.w.program.state, self.w.program.next_seq)
        result = self.w.send(ix, signers=(signer,))  # type: ignore[arg-type]
        if isinstance(result, Rejected):
            assert state_hash(self.w.program.state, self.w.program.next_seq) == before
        else:
            for r in result.records:
                fill = r.record
                if isinstance(fill, FillRecord) and fill.layer == "amm":
                    if fill.taker_direction == LONG:
                        self.amm_cost_basis += (
                            fill.quote_asset_amount - fill.quote_asset_amount_surplus
                        )
                    else:
                        self.amm_cost_basis -= (
                            fill.quote_asset_amount + fill.quote_asset_amount_surplus
                        )
        self.w.advance(1, seconds=0)
        return result

    @rule(
        who=st.integers(0, 3),
        side=st.sampled_from([LONG, SHORT]),
        offset_bps=st.integers(5, 150),
        tenths=st.integers(1, 30),
    )
    def rest(self, who: int, side: PositionDirection, offset_bps: int, tenths: int) -> None:
        sign = -1 if side == LONG else 1
        price = self.oracle * (10_000 + sign * offset_bps) // 10_000 // TICK * TICK
        kp = USERS[who]
        from protocol.instructions import PlacePerpOrder

        self._send(
            PlacePerpOrder(kp.pubkey, 0, perp_limit(side, price, tenths * BASE_PRECISION // 10)), kp
        )

    @rule(
        who=st.integers(0, 3),
        side=st.sampled_from([LONG, SHORT]),
        tenths=st.integers(1, 40),
        wait=st.integers(0, 40),
    )
    def take(self, who: int, side: PositionDirection, tenths: int, wait: int) -> None:
        """A market order, then ``wait`` slots, then a keeper sweep."""
        from protocol.instructions import PlacePerpOrder

        kp = USERS[who]
        params = OrderParams(
            OrderType.Market, MarketType.Perp, side, tenths * BASE_PRECISION // 10, 0
        )
        self._send(PlacePerpOrder(kp.pubkey, 0, params), kp)
        self.keeper_sweeps(wait)

    def _fill_one(self, taker_key: tuple[bytes, int], order_id: int) -> None:
        state = self.w.program.state
        user = state.users[taker_key]
        order = user.get_order(order_id)
        if order is None:
            return
        tick = state.perp_markets[0].amm.order_tick_size
        limit = get_limit_price(order, self.oracle, None, self.w.slot, tick)
        makers = []
        for m_user in state.users.values():
            for m in m_user.orders:
                if m_user.key == user.key or not m.post_only or m.direction == order.direction:
                    continue
                crosses = limit is None or (
                    m.price <= limit if order.direction == LONG else m.price >= limit
                )
                if crosses:
                    makers.append((m.price, m_user.key, m.order_id))
        makers.sort(reverse=order.direction == SHORT)
        refs = tuple(MakerOrderRef(k[0], k[1], oid) for _, k, oid in makers[:4])
        ix = FillPerpOrder(
            FILLER.pubkey, 0, user.authority, user.sub_account_id, order.order_id, refs
        )
        self._send(ix, FILLER)

    @rule(slots=st.integers(0, 40))
    def keeper_sweeps(self, slots: int) -> None:
        """Time passes, then the filler tries every taker order, as a keeper would each slot."""
        step(self.w, slots + 1, self.oracle)
        takers = [
            (u.key, o.order_id)
            for u in self.w.program.state.users.values()
            for o in u.orders
            if not o.post_only
        ]
        for key, order_id in takers:
            self._fill_one(key, order_id)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        orders = [(u, o) for u in self.w.program.state.users.values() for o in u.orders]
        if not orders:
            return
        user, order = data.draw(st.sampled_from(orders), label="order")
        kp = next(k for k in USERS if k.pubkey == user.authority)
        self._send(CancelOrder(user.authority, 0, order_id=order.order_id), kp)

    @rule(slots=st.integers(1, 30), move_bps=st.integers(-50, 50))
    def time_passes(self, slots: int, move_bps: int) -> None:
        self.oracle = self.oracle * (10_000 + move_bps) // 10_000 // TICK * TICK
        step(self.w, slots, self.oracle)

    @invariant()
    def conserved(self) -> None:
        state = self.w.program.state
        market = state.perp_markets[0]
        amm = market.amm
        positions = [p for u in state.users.values() for p in u.perp_positions]
        users_base = sum(p.base_asset_amount for p in positions)
        users_quote = sum(p.quote_asset_amount for p in positions)
        assert users_base + (-amm.base_asset_amount_with_amm) == 0
        assert amm.base_asset_amount_long == sum(
            p.base_asset_amount for p in positions if p.base_asset_amount > 0
        )
        assert amm.base_asset_amount_short == sum(
            p.base_asset_amount for p in positions if p.base_asset_amount < 0
        )
        assert amm.quote_asset_amount == users_quote
        pools = (
            market.pnl_pool.scaled_balance
            + amm.fee_pool.scaled_balance
            + state.spot_markets[USDC].revenue_pool.scaled_balance
        )
        assert users_quote + amm.total_fee_minus_distributions + self.amm_cost_basis + pools == 0
        assert state.spot_markets[USDC].vault_amount == self.deposited


OrderFlow.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_order_flow_conserves_positions_and_quote = OrderFlow.TestCase
