"""The settler bots: revenue to the insurance fund on the hour, users' PnL in batches (losses
always, gains only where the pool allows), BAL providers once per funding period. Each decided
transaction is executed against the real program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bots.lp_settler import LpSettler, LpSettlerParams
from bots.pnl_settler import PnlSettler, PnlSettlerParams, max_pnl_pool_excess
from bots.revenue_settler import RevenueSettler, revenue_settlement_due
from keepers.runtime.bot import Action
from keepers.runtime.registry import resolve_bot
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import SettlePnl, SettleRevenueToInsuranceFund
from protocol.instructions.lp import AddPerpLpShares, SettleLp
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.state.spot_market import PoolBalance, SpotMarket
from protocol.state.user import PerpPosition
from protocol.transaction import Transaction
from tests.bots.helpers import accepted, context, rejected, view_of_state
from tests.bots.risk_world import Account, ProgramNode, Q, check_conservation, risk_state
from tests.bots.risk_world import tokens_held as held
from tests.protocol.world import SOL_PERP, START_TS, USDC, keypair

SOL = BASE_PRECISION
KEEPER = keypair(60)
USERS = [keypair(61 + i) for i in range(6)]
HOUR = 3_600
PRICE = 99 * PRICE_PRECISION
ON_THE_HOUR = START_TS - START_TS % HOUR  # the last hour boundary before the world starts


def _view(program: Program, node: ProgramNode, keeper: Keypair = KEEPER) -> Any:
    return view_of_state(program.state, authority=keeper.pubkey, slot=node.slot, ts=node.ts)


def _run(node: ProgramNode, action: Action, signer: Keypair = KEEPER) -> Executed | Rejected:
    return node.run(Transaction.sign(action.instructions, node.slot, (signer,)))


@pytest.mark.parametrize(
    "name", ["revenue_settler", "revenue-settler", "pnl_settler", "pnl-settler", "lp_settler"]
)
def test_found_by_name(name: str) -> None:
    bot = resolve_bot(name)(context(name, KEEPER))
    assert bot.name == name and bot.subscriptions.streams == frozenset()


# --- revenue ------------------------------------------------------------------------------------
def _usdc_with_revenue(pool: int, last_settle: int = ON_THE_HOUR) -> SpotMarket:
    usdc = risk_state([]).spot_markets[USDC]
    usdc.revenue_pool = PoolBalance(pool * 1_000, 0)
    usdc.insurance_fund.last_revenue_settle_ts = last_settle
    return usdc


def test_revenue_settlement_is_due_on_the_hour_with_a_pool() -> None:
    # settled on the hour: due again at the next hour, not a second before
    usdc = _usdc_with_revenue(100 * Q)
    assert not revenue_settlement_due(usdc, ON_THE_HOUR + HOUR - 1)
    assert revenue_settlement_due(usdc, ON_THE_HOUR + HOUR)
    # settled 1000 s late (within a third of the period): due at the next hour still
    late = _usdc_with_revenue(100 * Q, ON_THE_HOUR + 1_000)
    assert not revenue_settlement_due(late, ON_THE_HOUR + HOUR - 1)
    assert revenue_settlement_due(late, ON_THE_HOUR + HOUR)
    # 2000 s late (more than a third): the hour after
    later = _usdc_with_revenue(100 * Q, ON_THE_HOUR + 2_000)
    assert not revenue_settlement_due(later, ON_THE_HOUR + 2 * HOUR - 1)
    assert revenue_settlement_due(later, ON_THE_HOUR + 2 * HOUR)
    # nothing in the pool, no period, or inconsistent factors: never
    assert not revenue_settlement_due(_usdc_with_revenue(0), ON_THE_HOUR + HOUR)
    usdc.insurance_fund.revenue_settle_period = 0
    assert not revenue_settlement_due(usdc, ON_THE_HOUR + HOUR)
    usdc = _usdc_with_revenue(100 * Q)
    usdc.insurance_fund.user_factor, usdc.insurance_fund.total_factor = 2, 1
    assert not revenue_settlement_due(usdc, ON_THE_HOUR + HOUR)


def test_revenue_settles_into_the_insurance_fund_once_per_hour() -> None:
    state = risk_state([Account(USERS[0], usdc=1_000 * Q)])
    usdc = state.spot_markets[USDC]
    # $100 of fees in the revenue pool: claimed on the vault like any deposit
    usdc.revenue_pool = PoolBalance(100 * Q * 1_000, 0)
    usdc.deposit_balance += 100 * Q * 1_000
    usdc.vault_amount += 100 * Q
    usdc.insurance_fund.last_revenue_settle_ts = ON_THE_HOUR
    program = Program(state)
    node = ProgramNode(program)
    bot = RevenueSettler(context("revenue_settler", KEEPER))
    assert bot.decide(_view(program, node)) == []  # 800 s into the hour
    node.advance(10_000)  # 4000 s later: past the next hour
    (action,) = bot.decide(_view(program, node))
    assert action.instructions == (SettleRevenueToInsuranceFund(USDC),)
    assert isinstance(_run(node, action), Executed)
    # no stakers, no cap: the whole pool moves from the vault to the fund
    usdc = program.state.spot_markets[USDC]
    assert (usdc.insurance_fund.vault_amount, usdc.vault_amount) == (1_100 * Q, 1_050 * Q)
    assert usdc.revenue_pool.scaled_balance == 0
    assert bot.decide(_view(program, node)) == []


def test_a_refused_revenue_settlement_waits() -> None:
    state = risk_state([])
    state.spot_markets[USDC].revenue_pool = PoolBalance(Q * 1_000, 0)
    program = Program(state)
    node = ProgramNode(program)
    bot = RevenueSettler(context("revenue_settler", KEEPER))
    (action,) = bot.decide(_view(program, node))
    bot.on_outcome(rejected(action, ErrorCode.NoRevenueToSettleToIF))
    assert bot.decide(_view(program, node)) == []
    node.advance(150)  # 60 s of node time
    assert len(bot.decide(_view(program, node))) == 1


# --- pnl ------------------------------------------------------------------------------------
def _pnl_world(
    accounts: list[Account], price: int, **params: Any
) -> tuple[Program, ProgramNode, PnlSettler, tuple[int, int]]:
    program = Program(risk_state(accounts))
    totals = held(program.state)
    node = ProgramNode(
        program, after_each=lambda state: check_conservation(state, totals[0], totals[1])
    )
    node.advance(10)
    node.publish("SOL/USD", price)
    bot = PnlSettler(
        context(
            "pnl_settler",
            KEEPER,
            PnlSettlerParams(**params),
            users=program.state.users,
            state=program.state.state,
        )
    )
    return program, node, bot, totals


def _settles(actions: list[Action]) -> list[list[tuple[bytes, int]]]:
    return [[(ix.authority, ix.market_index) for ix in a.instructions] for a in actions]


def _realized_world(fee_pool: int) -> tuple[Program, ProgramNode, PnlSettler]:
    """Z closed a position $100 down, Y one $100 up (flat positions with realized PnL);
    X long and W short 100 SOL-PERP at $100 (no PnL at $99.. they only make the market)."""
    x, y, z, w = USERS[:4]
    state = risk_state(
        [
            Account(x, usdc=1_000 * Q, perp_base=100 * SOL),
            Account(w, usdc=1_000 * Q, perp_base=-100 * SOL),
            Account(y, usdc=1_000 * Q),
            Account(z, usdc=1_000 * Q),
        ],
        fee_pool=fee_pool,
    )
    state.users[(y.pubkey, 0)].perp_positions = [PerpPosition(SOL_PERP, quote_asset_amount=100 * Q)]
    state.users[(z.pubkey, 0)].perp_positions = [
        PerpPosition(SOL_PERP, quote_asset_amount=-100 * Q)
    ]
    program = Program(state)
    totals = held(program.state)
    node = ProgramNode(
        program, after_each=lambda state: check_conservation(state, totals[0], totals[1])
    )
    bot = PnlSettler(
        context("pnl_settler", KEEPER, users=program.state.users, state=program.state.state)
    )
    return program, node, bot


def test_losses_first_then_gains_out_of_the_pool_excess() -> None:
    _, y, z, _ = USERS[:4]
    program, node, bot = _realized_world(fee_pool=50 * Q)
    market, usdc = program.state.perp_markets[SOL_PERP], program.state.spot_markets[USDC]
    # users net $0 owed; the pool is empty but a fifth of the $50 fee pool is $10 of excess:
    # Y may claim, but nothing pays it yet
    assert max_pnl_pool_excess(market, usdc, 100 * PRICE_PRECISION) == 10 * Q
    (loss,) = bot.decide(_view(program, node))
    assert _settles([loss]) == [[(z.pubkey, SOL_PERP)]]
    assert isinstance(_run(node, loss), Executed)
    # Z's $100 and the fee pool's $50 are in the pnl pool; users are owed Y's $100: $50 over
    market, usdc = program.state.perp_markets[SOL_PERP], program.state.spot_markets[USDC]
    assert market.pnl_pool.scaled_balance == 150 * Q * 1_000
    assert max_pnl_pool_excess(market, usdc, 100 * PRICE_PRECISION) == 50 * Q
    (gain,) = bot.decide(_view(program, node))
    assert _settles([gain]) == [[(y.pubkey, SOL_PERP)]]
    assert isinstance(_run(node, gain), Executed)
    # Y's realized $100 (realized part plus excess, within the pool) is now USDC
    y_user = program.state.users[(y.pubkey, 0)]
    assert y_user.perp_positions == []
    assert y_user.spot_positions[0].scaled_balance == 1_100 * Q * 1_000
    assert bot.decide(_view(program, node)) == []


def test_a_gain_the_pool_has_no_excess_for_is_left_to_the_user() -> None:
    _, y, z, _ = USERS[:4]
    program, node, bot = _realized_world(fee_pool=0)
    (loss,) = bot.decide(_view(program, node))
    assert _settles([loss]) == [[(z.pubkey, SOL_PERP)]]
    assert isinstance(_run(node, loss), Executed)
    # the pool holds Z's $100 and users are owed Y's $100: no excess, so only Y itself may
    # settle its gain
    market, usdc = program.state.perp_markets[SOL_PERP], program.state.spot_markets[USDC]
    assert market.pnl_pool.scaled_balance == 100 * Q * 1_000
    assert max_pnl_pool_excess(market, usdc, 100 * PRICE_PRECISION) == 0
    assert bot.decide(_view(program, node)) == []
    settle_y = Action(instructions=(SettlePnl(y.pubkey, 0, SOL_PERP),), kind="x", dedupe_key=1)
    refused = _run(node, settle_y)
    assert isinstance(refused, Rejected)
    assert refused.code == ErrorCode.UserMustSettleTheirOwnPositiveUnsettledPNL
    assert isinstance(_run(node, settle_y, y), Executed)


def test_losses_go_in_batches_and_a_refused_batch_goes_one_by_one() -> None:
    losers = USERS[:5]
    program, node, bot, _ = _pnl_world(
        [Account(kp, usdc=1_000 * Q, perp_base=10 * (i + 1) * SOL) for i, kp in enumerate(losers)]
        + [Account(USERS[5], usdc=10_000 * Q, perp_base=-150 * SOL)],
        PRICE,
        max_settles_per_tx=2,
    )
    actions = bot.decide(_view(program, node))
    # largest loss first: 50 SOL lost $50, ... 10 SOL $10
    order = [kp.pubkey for kp in reversed(losers)]
    assert _settles(actions) == [
        [(order[0], 0), (order[1], 0)],
        [(order[2], 0), (order[3], 0)],
        [(order[4], 0)],
    ]
    bot.on_outcome(rejected(actions[0], ErrorCode.InsufficientCollateralForSettlingPNL))
    again = bot.decide(_view(program, node))
    assert _settles(again) == [
        [(order[2], 0), (order[3], 0)],
        [(order[4], 0)],
        [(order[0], 0)],
        [(order[1], 0)],
    ]
    bot.on_outcome(rejected(again[2], ErrorCode.InsufficientCollateralForSettlingPNL))
    for action in again[:2] + again[3:]:
        bot.on_outcome(accepted(action))
        assert isinstance(_run(node, action), Executed)
    # the losses paid the pool (and the $50 fee pool joined it): $200 against the short's
    # $150 gain, $50 over. A keeper may settle $50 of the gain at a time (it is unrealized:
    # claimable is the excess), and the excess stays $50 as pool and debt shrink together,
    # so three rounds settle all of it. The refused loser waits for its account to change.
    short = (USERS[5].pubkey, 0)
    for _ in range(3):
        node.advance(1)  # a new slot: the same settlement is a new transaction
        (gain,) = bot.decide(_view(program, node))
        assert _settles([gain]) == [[(short[0], 0)]]
        assert isinstance(_run(node, gain), Executed)
    assert program.state.users[short].perp_positions[0].settled_pnl == 150 * Q
    assert bot.decide(_view(program, node)) == []
    users = program.state.users
    users[(order[0], 0)] = users[(order[0], 0)].clone()
    (last,) = bot.decide(_view(program, node))
    assert _settles([last]) == [[(order[0], 0)]]
    assert isinstance(_run(node, last), Executed)


def test_users_below_maintenance_are_left_to_the_liquidator() -> None:
    x = USERS[0]
    program, node, bot, _ = _pnl_world(
        [
            # $100 against a $100 loss at $99 and a 5% requirement of $9900: under water
            Account(x, usdc=100 * Q, perp_base=100 * SOL),
            Account(USERS[1], usdc=1_000 * Q, perp_base=-100 * SOL),
        ],
        PRICE,
    )
    assert bot.decide(_view(program, node)) == []
    # a crash outside the price band: nothing in that market either
    node.publish("SOL/USD", 80 * PRICE_PRECISION)
    program.state.users[(x.pubkey, 0)] = dataclasses.replace(
        program.state.users[(x.pubkey, 0)], spot_positions=[]
    )
    assert bot.decide(_view(program, node)) == []


# --- LP -------------------------------------------------------------------------------------
def _lp_program(accounts: list[Account]) -> Program:
    """The world's SOL-PERP with a 1.25 concentration coefficient (reserve bounds 8000 and
    12,500 around 10,000), so BAL shares can be added."""
    state = risk_state(accounts)
    amm = state.perp_markets[SOL_PERP].amm
    amm.concentration_coef = 1_250_000
    amm.min_base_asset_reserve, amm.max_base_asset_reserve = 8_000 * SOL, 12_500 * SOL
    return Program(state)


def test_providers_are_settled_once_per_funding_period_in_batches() -> None:
    providers = USERS[:3]
    program = _lp_program([Account(kp, usdc=10_000 * Q) for kp in providers])
    node = ProgramNode(program)
    for kp in providers:
        add = AddPerpLpShares(kp.pubkey, 0, SOL_PERP, 100 * SOL)
        assert isinstance(node.run(Transaction.sign((add,), node.slot, (kp,))), Executed)
    bot = LpSettler(
        context(
            "lp_settler",
            KEEPER,
            LpSettlerParams(max_settles_per_tx=2),
            users=program.state.users,
        )
    )
    actions = bot.decide(_view(program, node))
    keys = sorted(kp.pubkey for kp in providers)
    assert [list(a.instructions) for a in actions] == [
        [SettleLp(keys[0], 0, SOL_PERP), SettleLp(keys[1], 0, SOL_PERP)],
        [SettleLp(keys[2], 0, SOL_PERP)],
    ]
    for action in actions:
        assert isinstance(_run(node, action), Executed)
        bot.on_outcome(accepted(action))
    assert bot.decide(_view(program, node)) == []
    # the next funding period: all three again
    perp = program.state.perp_markets[SOL_PERP].clone()
    perp.amm.last_funding_rate_ts += HOUR
    program.state.perp_markets[SOL_PERP] = perp
    again = bot.decide(_view(program, node))
    assert sum(len(a.instructions) for a in again) == 3
    # a refused batch goes one by one; a refused single waits for its user
    bot.on_outcome(rejected(again[0], ErrorCode.InvalidPerpPositionDetected))
    bot.on_outcome(accepted(again[1]))
    singles = bot.decide(_view(program, node))
    assert [list(a.instructions) for a in singles] == [
        [SettleLp(keys[0], 0, SOL_PERP)],
        [SettleLp(keys[1], 0, SOL_PERP)],
    ]
    bot.on_outcome(rejected(singles[0], ErrorCode.InvalidPerpPositionDetected))
    bot.on_outcome(accepted(singles[1]))
    assert bot.decide(_view(program, node)) == []


def test_a_provider_that_left_is_forgotten() -> None:
    kp = USERS[0]
    program = _lp_program([Account(kp, usdc=10_000 * Q)])
    node = ProgramNode(program)
    add = AddPerpLpShares(kp.pubkey, 0, SOL_PERP, 100 * SOL)
    assert isinstance(node.run(Transaction.sign((add,), node.slot, (kp,))), Executed)
    bot = LpSettler(context("lp_settler", KEEPER, users=program.state.users))
    assert len(bot.decide(_view(program, node))) == 1
    users = program.state.users
    gone = users[(kp.pubkey, 0)].clone()
    gone.perp_positions = []
    users[(kp.pubkey, 0)] = gone
    assert bot.decide(_view(program, node)) == []
