"""The liquidator bot's decisions (``bots/liquidator.py``): which instruction for which kind
of position, sized within its collateral budget, with which limit price; bankruptcies;
derisking; what it learns from outcomes. Every decided instruction is also executed against
the real program to show the program accepts it.

Markets: the test world (USDC; SOL spot 90%/80% asset weights; SOL-PERP 5%/10% margin, 0.01
SOL steps) with 1% liquidator and insurance fees; the liquidation buffer is 2%.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bots.liquidator import Liquidator, LiquidatorParams
from keepers.config import ConfigError, build_params
from keepers.runtime.bot import Action
from keepers.runtime.registry import resolve_bot
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions import (
    LiquidateBorrowForPerpPnl,
    LiquidatePerp,
    LiquidatePerpPnlForDeposit,
    LiquidateSpot,
    PlacePerpOrder,
    ResolvePerpBankruptcy,
    ResolveSpotBankruptcy,
)
from protocol.program import Executed, Program
from protocol.state.user import Order, PerpPosition
from protocol.transaction import Transaction
from protocol.types import MarketType, OrderType, PositionDirection, UserStatus
from tests.bots.helpers import context, rejected, view_of_state
from tests.bots.risk_world import Account, ProgramNode, Q, risk_state
from tests.protocol.world import SOL_PERP, keypair

SOL = BASE_PRECISION
L, X, Y, W, B = (keypair(n) for n in (41, 42, 43, 44, 45))


def _world(
    accounts: list[Account], price: int, **params: Any
) -> tuple[Program, ProgramNode, Liquidator]:
    program = Program(risk_state(accounts))
    node = ProgramNode(program)
    node.advance(10)
    node.publish("SOL/USD", price)
    bot = Liquidator(
        context(
            "liquidator",
            L,
            LiquidatorParams(**params),
            users=program.state.users,
            state=program.state.state,
        )
    )
    return program, node, bot


def _decide(program: Program, node: ProgramNode, bot: Liquidator) -> list[Action]:
    return bot.decide(view_of_state(program.state, authority=L.pubkey, slot=node.slot, ts=node.ts))


def _run(node: ProgramNode, action: Action) -> None:
    result = node.run(Transaction.sign(action.instructions, node.slot, (L,)))
    assert isinstance(result, Executed), result


def _only(actions: list[Action]) -> Any:
    (action,) = actions
    (ix,) = action.instructions
    return ix


def test_found_by_name_with_typed_params() -> None:
    assert resolve_bot("liquidator") is Liquidator
    params = build_params(
        LiquidatorParams,
        {"max_position_value": 5_000_000, "derisk_order_type": "limit"},
        "bots.liquidator",
    )
    assert params == LiquidatorParams(max_position_value=5_000_000, derisk_order_type="limit")
    with pytest.raises(ConfigError, match="derisk_order_type"):
        build_params(LiquidatorParams, {"derisk_order_type": "twap"}, "bots.liquidator")
    with pytest.raises(ValueError, match="<= 100"):
        LiquidatorParams(max_position_takeover_pct_of_collateral=101)


def test_perp_positions_most_underwater_first_within_the_budget() -> None:
    # X: long 100 SOL-PERP on $1000, Y: long 50 on $500; at $94 their shortages are $270 and
    # $135 (see test_margin_view). L has $1000: free collateral $1000.
    program, node, bot = _world(
        [
            Account(X, usdc=1_000 * Q, perp_base=100 * SOL),
            Account(Y, usdc=500 * Q, perp_base=50 * SOL),
            Account(B, usdc=100_000 * Q, perp_base=-150 * SOL),
            Account(L, usdc=1_000 * Q),
        ],
        94 * PRICE_PRECISION,
    )
    first, second = (_only([a]) for a in _decide(program, node, bot))
    # X: 50% of $1000 = $500 at the 10% initial ratio carries $5000 of notional:
    # 5000e6 * 1e9 / 94e6 = 53.1914 -> 53.19 SOL; limit 1% above the oracle
    assert first == LiquidatePerp(L.pubkey, 0, X.pubkey, 0, SOL_PERP, 53_190_000_000, 94_940_000)
    # it uses 10% of 53.19 * 94 = $4999.86: $499.986; half of the $500.014 left carries
    # 2500.07e6 * 1e9 / 94e6 = 26.5965 -> 26.59 SOL of Y's 50
    assert second == LiquidatePerp(L.pubkey, 0, Y.pubkey, 0, SOL_PERP, 26_590_000_000, 94_940_000)
    _run(node, Action(instructions=(first,), kind="liquidate_perp", dedupe_key=1))
    x_position = program.state.users[(X.pubkey, 0)].get_perp_position(SOL_PERP)
    assert x_position is not None and x_position.base_asset_amount < 100 * SOL


def test_a_rich_liquidator_is_bounded_by_the_position() -> None:
    program, node, bot = _world(
        [
            Account(X, usdc=1_000 * Q, perp_base=100 * SOL),
            Account(B, usdc=100_000 * Q, perp_base=-100 * SOL),
            Account(L, usdc=1_000_000 * Q),
        ],
        94 * PRICE_PRECISION,
        limit_price_slippage_bps=50,
    )
    ix = _only(_decide(program, node, bot))
    assert (ix.max_base_asset_amount, ix.limit_price) == (100 * SOL, 94_470_000)


def test_a_short_is_bought_back_with_a_limit_below_the_oracle() -> None:
    # X short 100 at $100 on $1000; at $106 it has lost $600
    program, node, bot = _world(
        [
            Account(X, usdc=1_000 * Q, perp_base=-100 * SOL),
            Account(B, usdc=100_000 * Q, perp_base=100 * SOL),
            Account(L, usdc=1_000_000 * Q),
        ],
        106 * PRICE_PRECISION,
    )
    ix = _only(_decide(program, node, bot))
    assert isinstance(ix, LiquidatePerp)
    assert ix.limit_price == 106 * PRICE_PRECISION * 9_900 // 10_000
    _run(node, Action(instructions=(ix,), kind="liquidate_perp", dedupe_key=1))


def test_a_borrow_is_liquidated_for_the_deposit() -> None:
    # W: 100 SOL against $6000 borrowed; at $65: $5850 of collateral
    program, node, bot = _world(
        [
            Account(W, sol=100 * SOL, usdc=-6_000 * Q),
            Account(L, usdc=50_000 * Q),
            Account(B, usdc=10_000 * Q),
        ],
        65 * PRICE_PRECISION,
    )
    ix = _only(_decide(program, node, bot))
    # asset SOL per USDC: 1e6 * 1e6 / 65e6 = 15384 (0.015384 SOL per $), 1% less: 15230
    assert ix == LiquidateSpot(L.pubkey, 0, W.pubkey, 0, 1, 0, 6_000 * Q, 15_230)
    _run(node, Action(instructions=(ix,), kind="liquidate_spot", dedupe_key=1))
    w = program.state.users[(W.pubkey, 0)]
    assert w.is_being_liquidated() or w.status == UserStatus.Active


def test_flat_losses_and_gains_are_swapped_for_deposits_and_borrows() -> None:
    # X: flat with a $700 loss and 10 SOL ($585 of collateral at $65): its loss for its SOL.
    # Y: flat with a $500 gain, 10 SOL borrowed ($715 required): its borrow for its gain.
    accounts = [
        Account(X, sol=10 * SOL),
        Account(Y, sol=-10 * SOL),
        Account(W, sol=20 * SOL, usdc=10_000 * Q),
        Account(L, usdc=50_000 * Q),
    ]
    state = risk_state(accounts)
    users = state.users
    users[(X.pubkey, 0)].perp_positions = [PerpPosition(SOL_PERP, quote_asset_amount=-700 * Q)]
    users[(Y.pubkey, 0)].perp_positions = [PerpPosition(SOL_PERP, quote_asset_amount=500 * Q)]
    users[(W.pubkey, 0)].perp_positions = [PerpPosition(SOL_PERP, quote_asset_amount=200 * Q)]
    program = Program(state)
    node = ProgramNode(program)
    node.advance(10)
    node.publish("SOL/USD", 65 * PRICE_PRECISION)
    bot = Liquidator(context("liquidator", L, users=users, state=state.state))
    by_user = {a.dedupe_key[1]: _only([a]) for a in _decide(program, node, bot)}
    assert by_user[(X.pubkey, 0)] == LiquidatePerpPnlForDeposit(
        L.pubkey, 0, X.pubkey, 0, SOL_PERP, 1, 700 * Q, 15_230
    )
    # 50% of $50,000 is more than the $500 gain: 500e6 * 1e9 / 65e6 = 7.6923 SOL of the 10;
    # the least $ of pnl per SOL accepted: 65e6 * 1e6 / 1e6 = 65e6, 1% less
    assert by_user[(Y.pubkey, 0)] == LiquidateBorrowForPerpPnl(
        L.pubkey, 0, Y.pubkey, 0, SOL_PERP, 1, 7_692_307_692, 64_350_000
    )
    for ix in by_user.values():
        _run(node, Action(instructions=(ix,), kind="liquidate", dedupe_key=1))


def test_bankrupt_users_are_resolved_once_per_liability() -> None:
    program, node, bot = _world(
        [Account(X, usdc=-100 * Q), Account(W, usdc=1_000 * Q), Account(L, usdc=10_000 * Q)],
        65 * PRICE_PRECISION,
    )
    x = program.state.users[(X.pubkey, 0)]
    x.perp_positions = [PerpPosition(SOL_PERP, quote_asset_amount=-50 * Q)]
    program.state.users[(W.pubkey, 0)].perp_positions = [
        PerpPosition(SOL_PERP, quote_asset_amount=50 * Q)
    ]
    # not yet flagged: owing and holding nothing is enough
    resolutions = [_only([a]) for a in _decide(program, node, bot)]
    assert resolutions == [
        ResolvePerpBankruptcy(L.pubkey, 0, X.pubkey, 0, SOL_PERP),
        ResolveSpotBankruptcy(L.pubkey, 0, X.pubkey, 0, 0),
    ]
    # flagged: resolved from the bankrupt list
    program.state.users[(X.pubkey, 0)] = dataclasses.replace(x, status=UserStatus.Bankrupt)
    assert [_only([a]) for a in _decide(program, node, bot)] == resolutions
    for ix in resolutions:
        _run(node, Action(instructions=(ix,), kind="resolve", dedupe_key=1))
    assert program.state.users[(X.pubkey, 0)].status == UserStatus.Active
    assert _decide(program, node, bot) == []


def test_a_refusal_drops_the_user_until_its_account_changes() -> None:
    program, node, bot = _world(
        [
            Account(X, usdc=1_000 * Q, perp_base=100 * SOL),
            Account(B, usdc=100_000 * Q, perp_base=-100 * SOL),
            Account(L, usdc=10_000 * Q),
        ],
        94 * PRICE_PRECISION,
    )
    (action,) = _decide(program, node, bot)
    bot.on_outcome(rejected(action, ErrorCode.SufficientCollateral))
    assert bot.throttled == {(X.pubkey, 0)}
    assert _decide(program, node, bot) == []
    users = program.state.users
    users[(X.pubkey, 0)] = users[(X.pubkey, 0)].clone()  # any new account
    assert [a.dedupe_key[1] for a in _decide(program, node, bot)] == [(X.pubkey, 0)]


def test_a_takeover_refused_for_own_collateral_pauses_until_own_account_changes() -> None:
    program, node, bot = _world(
        [
            Account(X, usdc=1_000 * Q, perp_base=100 * SOL),
            Account(B, usdc=100_000 * Q, perp_base=-100 * SOL),
            Account(L, usdc=10_000 * Q),
        ],
        94 * PRICE_PRECISION,
    )
    (action,) = _decide(program, node, bot)
    bot.on_outcome(rejected(action, ErrorCode.InsufficientCollateral, field="liquidator"))
    assert bot.throttled == frozenset()
    assert _decide(program, node, bot) == []
    # a fresh copy of the same account changes nothing; a deposit does
    users = program.state.users
    users[(L.pubkey, 0)] = users[(L.pubkey, 0)].clone()
    assert _decide(program, node, bot) == []
    richer = users[(L.pubkey, 0)].clone()
    richer.spot_positions[0].scaled_balance *= 2
    users[(L.pubkey, 0)] = richer
    assert len(_decide(program, node, bot)) == 1


@pytest.mark.parametrize("order_type", ["market", "limit"])
def test_derisk_sells_the_excess_not_already_on_the_book(order_type: str) -> None:
    program, node, bot = _world(
        [
            Account(L, usdc=10_000 * Q, perp_base=50 * SOL),
            Account(B, usdc=10_000 * Q, perp_base=-50 * SOL),
        ],
        94 * PRICE_PRECISION,
        max_position_value=1_000 * Q,
        derisk_order_type=order_type,
    )
    ix = _only(_decide(program, node, bot))
    assert isinstance(ix, PlacePerpOrder)
    params = ix.params
    # $1000 at $94: 1000e6 * 1e9 / 94e6 = 10.638 -> 10.63 SOL kept, 39.37 sold
    assert (params.direction, params.base_asset_amount, params.reduce_only) == (
        PositionDirection.Short,
        39_370_000_000,
        True,
    )
    if order_type == "limit":
        # 0.5% under the oracle, on a tick: 94e6 * 0.995 = 93.53e6
        assert (params.order_type, params.price) == (OrderType.Limit, 93_530_000)
    else:
        assert (params.order_type, params.price) == (OrderType.Market, 0)
    _run(node, Action(instructions=(ix,), kind="derisk_perp", dedupe_key=1))
    # the order now rests: nothing more to sell
    assert _decide(program, node, bot) == []


def test_derisk_counts_open_asks_as_sold() -> None:
    program, node, bot = _world(
        [
            Account(L, usdc=10_000 * Q, perp_base=50 * SOL),
            Account(B, usdc=10_000 * Q, perp_base=-50 * SOL),
        ],
        94 * PRICE_PRECISION,
        max_position_value=1_000 * Q,
    )
    own = program.state.users[(L.pubkey, 0)]
    own.perp_positions[0].open_asks = -20 * SOL
    own.perp_positions[0].open_orders = 1
    own.orders = [
        Order(
            order_id=1,
            market_index=SOL_PERP,
            market_type=MarketType.Perp,
            order_type=OrderType.Limit,
            direction=PositionDirection.Short,
            base_asset_amount=20 * SOL,
            price=120 * PRICE_PRECISION,
            slot=0,
        )
    ]
    ix = _only(_decide(program, node, bot))
    assert ix.params.base_asset_amount == 19_370_000_000  # 39.37 - 20


def test_nothing_without_an_own_account_or_users() -> None:
    program, node, _ = _world([Account(X, usdc=Q)], 94 * PRICE_PRECISION)
    lonely = Liquidator(context("liquidator", L))
    assert (
        lonely.decide(view_of_state(program.state, authority=L.pubkey, slot=node.slot, ts=node.ts))
        == []
    )
