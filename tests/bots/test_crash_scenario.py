"""A crash, end to end: the liquidator bot against a real :class:`Program`, through the real
executor (sign, send, outcome), with signed transactions only.

Genesis (SOL at $100, SOL-PERP 5% maintenance / 10% initial, 1% liquidator and 1% insurance
fees, a $1000 USDC insurance fund the perp market may draw $100 from, $50 in its fee pool):

* A: $2000 USDC, long 100 SOL-PERP at $100 (5x);
* C: $380 USDC, long 10 SOL-PERP at $100;
* D: 100 SOL deposited, $6000 USDC borrowed;
* E: 10 SOL deposited, long 20 SOL-PERP at $100;
* F: $100,000 USDC, long 1000 SOL-PERP (healthy throughout: it spreads the social loss);
* B: $100,000 USDC, short the 1130 SOL-PERP the others are long;
* L (the liquidator): $50,000 USDC.

SOL falls to $65 (a 35% crash, inside the program's 50% oracle/TWAP band). Then, with the
2% liquidation buffer on every liability (shortage = requirement plus buffer less collateral
plus its buffer share):

* A: collateral 2000 - 3500 = -$1500 (buffer -$70), requirement 5% of $6500 = $325 (+$130):
  shortage $2025; liquidated to nothing, bankrupt;
* D: 100 * 65 * 90% = $5850 of collateral, $6000 borrowed (+$120): shortage $270; part of its
  SOL is taken for part of its borrow; restored;
* E: 585 - 700 = -$115 (buffer -$14), requirement $65 (+$26): shortage $220; its base, then
  its SOL for its loss; bankrupt;
* C: 380 - 350 = $30 (buffer -$7), requirement $32.50 (+$13): shortage $22.50; restored;
* the bankruptcies draw the insurance fund up to the market's $100 cap, then the fee pool,
  and the rest is socialised through the cumulative funding rates.

After every executed transaction (the oracle's too) the USDC and SOL the program holds are
unchanged and its vaults hold exactly what users and pools are owed
(:func:`tests.bots.risk_world.check_conservation`).
"""

from __future__ import annotations

import pytest

from bots.liquidator import Liquidator, LiquidatorParams
from keepers.runtime.executor import Executor, Status
from keepers.runtime.metrics import RuntimeMetrics
from protocol.accounts import Accounts
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.math.bankruptcy import is_user_bankrupt
from protocol.math.margin import can_be_liquidated
from protocol.program import Program
from protocol.records import BankruptcyRecord, LiquidationRecord
from protocol.types import UserStatus
from tests.bots.helpers import context, view_of_state
from tests.bots.risk_world import (
    Account,
    ProgramNode,
    Q,
    check_conservation,
    risk_state,
    tokens_held,
)
from tests.protocol.world import SOL_PERP, keypair

A, B, C, D, E, F, L = (keypair(n) for n in (31, 32, 33, 34, 35, 37, 36))
SOL = BASE_PRECISION
CRASH_PRICE = 65 * PRICE_PRECISION


def _genesis() -> Program:
    return Program(
        risk_state(
            [
                Account(A, usdc=2_000 * Q, perp_base=100 * SOL),
                Account(C, usdc=380 * Q, perp_base=10 * SOL),
                Account(D, sol=100 * SOL, usdc=-6_000 * Q),
                Account(E, sol=10 * SOL, perp_base=20 * SOL),
                Account(F, usdc=100_000 * Q, perp_base=1_000 * SOL),
                Account(B, usdc=100_000 * Q, perp_base=-1_130 * SOL),
                Account(L, usdc=50_000 * Q),
            ]
        )
    )


@pytest.mark.asyncio
async def test_crash_is_liquidated_and_bankruptcies_resolved_with_quote_conserved() -> None:
    program = _genesis()
    quote_total, sol_total = tokens_held(program.state)
    assert (quote_total, sol_total) == ((246_380 + 50 + 1_000) * Q, 110 * SOL)

    def conserved(state: object) -> None:
        check_conservation(program.state, quote_total, sol_total)

    node = ProgramNode(program, after_each=conserved)
    conserved(program.state)
    bot = Liquidator(
        context(
            "liquidator",
            L,
            LiquidatorParams(max_position_value=2_000 * Q),
            users=program.state.users,
            state=program.state.state,
        )
    )
    executor = Executor(node, RuntimeMetrics(), slot=lambda: node.slot)
    users = program.state.users
    keys = {name: (kp.pubkey, 0) for name, kp in zip("ABCDEFL", (A, B, C, D, E, F, L), strict=True)}

    async def tick(price: int) -> int:
        node.advance(30)
        node.publish("SOL/USD", price)
        view = view_of_state(program.state, authority=L.pubkey, slot=node.slot, ts=node.ts)
        actions = bot.decide(view)
        for outcome in await executor.execute("liquidator", L, actions):
            bot.on_outcome(outcome)
            assert outcome.status in (Status.ACCEPTED, Status.REJECTED), outcome
        return len(actions)

    # at $100 nobody is liquidatable: the bot sends nothing
    assert await tick(100 * PRICE_PRECISION) == 0
    assert bot.margin.count_liquidatable() == 0

    # the crash: four users under maintenance, most underwater first
    node.advance(1)
    node.publish("SOL/USD", CRASH_PRICE)
    bot.sync(view_of_state(program.state, authority=L.pubkey, slot=node.slot, ts=node.ts))
    ranked = [(m.key, m.margin_shortage) for m in bot.margin.liquidatable()]
    assert ranked == [
        (keys["A"], 2_025 * Q),
        (keys["D"], 270 * Q),
        (keys["E"], 220 * Q),
        (keys["C"], 22_500_000),
    ]

    for _ in range(80):
        if await tick(CRASH_PRICE) == 0:
            break
    else:
        pytest.fail("the liquidator never ran out of work")

    # everyone is out of liquidation and nobody owes what it cannot pay
    reader = Accounts(program.state, node.clock)
    for name in "ABCDEF":
        user = users[keys[name]]
        assert user.status == UserStatus.Active, name
        assert not can_be_liquidated(user, reader), name
        assert not is_user_bankrupt(user), name
    # C restored in one step: its $22.50 shortage (< $50) may go at once; each SOL taken frees
    # 65 * (5% + 2% buffer - 1% liquidator fee - 1% insurance fee) = $3.25, so 22.5 / 3.25 =
    # 6.923 -> 6.93 SOL in 0.01 steps, leaving 3.07 SOL and its USDC
    c = users[keys["C"]]
    assert c.perp_positions[0].base_asset_amount == 3_070_000_000
    assert c.get_spot_position(0) is not None
    # D restored: part of its SOL went for part of its borrow
    d = users[keys["D"]]
    d_sol, d_usdc = d.get_spot_position(1), d.get_spot_position(0)
    assert d_sol is not None and 0 < d_sol.scaled_balance < 100 * SOL
    assert d_usdc is not None and 0 < d_usdc.scaled_balance < 6_000 * Q * 1_000
    # A and E taken to bankruptcy and resolved: nothing left, the loss written off
    for name in "AE":
        user = users[keys[name]]
        assert user.perp_positions == [] and user.spot_positions == []
        assert user.total_social_loss > 0

    records = [r.record for executed in node.executed for r in executed.records]
    kinds = {r.liquidation_type for r in records if isinstance(r, LiquidationRecord)}
    assert {"liquidate_perp", "liquidate_spot", "liquidate_perp_pnl_for_deposit"} <= kinds
    bankruptcies = [r for r in records if isinstance(r, BankruptcyRecord)]
    assert {r.user for r in bankruptcies} == {keys["A"], keys["E"]}
    perp_bankruptcies = [r.perp_bankruptcy for r in bankruptcies if r.perp_bankruptcy]
    # seed 002's waterfall: the insurance fund pays up to the market's $100 cap, the fee pool
    # next, the rest is socialised; together they cover each loss
    assert sum(p.if_payment for p in perp_bankruptcies) == 100 * Q
    market = program.state.perp_markets[SOL_PERP]
    assert market.insurance_claim.quote_settled_insurance == 100 * Q
    assert program.state.spot_markets[0].insurance_fund.vault_amount == 900 * Q
    for p in perp_bankruptcies:
        assert p.if_payment + p.fee_pool_payment + p.loss_socialized == -p.pnl
    socialised = sum(p.loss_socialized for p in perp_bankruptcies)
    assert socialised > 0
    assert market.amm.total_social_loss == socialised
    for name in "AE":
        assert users[keys[name]].total_social_loss == sum(
            -p.pnl
            for r, p in zip(bankruptcies, perp_bankruptcies, strict=True)
            if r.user == keys[name]
        )

    # the liquidator sold down what it took over: reduce-only orders for all but $2000 of it,
    # 2000e6 * 1e9 / 65e6 = 30.769 -> 30.76 SOL in steps
    own = users[keys["L"]]
    position = own.get_perp_position(SOL_PERP)
    assert position is not None and position.base_asset_amount > 0
    assert all(o.reduce_only for o in own.orders)
    assert position.base_asset_amount + position.open_asks == 30_760_000_000
