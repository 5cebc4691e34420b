"""The trigger bot: decisions on hand-built books, and its triggers through the program.

Stops of :func:`tests.protocol.world.make_state`'s SOL-PERP and SOL spot market: a stop-loss
sell that fires when the oracle falls below $95 (``Below``) and a stop buy above $105.
"""

from __future__ import annotations

import pytest

from bots.trigger import TRIGGER_KIND, Trigger, TriggerParams
from dlob import DLOB
from keepers.config import ConfigError, build_params
from keepers.runtime.bot import Action, Bot, LearnsFromOutcomes, Stream
from keepers.runtime.view import View
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import TriggerOrder
from protocol.keys import Keypair
from protocol.records import TriggerRecord
from protocol.state import OrderParams, User
from protocol.state.user import Order
from protocol.types import (
    MarketType,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)
from tests.bots.helpers import (
    accepted,
    book_of_state,
    context,
    empty_book,
    execute,
    make_view,
    oracle_messages,
    outcome_of,
    rejected,
    world_view,
)
from tests.protocol.fill_world import FILLER, TAKER, new_world, place, step, user_of
from tests.protocol.world import SOL, keypair, make_state

B = BASE_PRECISION
P = PRICE_PRECISION
KEEPER = keypair(91)
ALICE = keypair(92)
BOB = keypair(93)
STATE = make_state()
BELOW = OrderTriggerCondition.Below
ABOVE = OrderTriggerCondition.Above


def stop(
    order_id: int,
    direction: PositionDirection,
    trigger_price: int,
    condition: OrderTriggerCondition,
    market_type: MarketType = MarketType.Perp,
) -> Order:
    return Order(
        order_id,
        SOL if market_type == MarketType.Spot else 0,
        market_type,
        OrderType.TriggerMarket,
        direction,
        B,
        990,
        trigger_price=trigger_price,
        trigger_condition=condition,
    )


def book(*orders: tuple[Keypair, Order]) -> DLOB:
    dlob = empty_book(STATE, 990)
    for kp, order in orders:
        dlob.insert((kp.pubkey, 0), order)
    return dlob


def view(dlob: DLOB, slot: int, sol: int, *, with_user: bool = True) -> View:
    return make_view(
        authority=KEEPER.pubkey,
        slot=slot,
        ts=0,
        oracles=oracle_messages({"SOL/USD": (sol, 0, slot), "USDC/USD": (P, 0, slot)}),
        perp_markets=STATE.perp_markets,
        spot_markets=STATE.spot_markets,
        users={0: User(KEEPER.pubkey)} if with_user else {},
        dlob=dlob,
    )


def trigger_ix(kp: Keypair, order_id: int) -> TriggerOrder:
    return TriggerOrder(KEEPER.pubkey, 0, kp.pubkey, 0, order_id)


def bot(**params: object) -> Trigger:
    return Trigger(context("trigger", KEEPER, TriggerParams(**params)))  # type: ignore[arg-type]


def test_triggers_the_stops_the_oracle_has_crossed() -> None:
    dlob = book(
        (ALICE, stop(1, PositionDirection.Short, 95 * P, BELOW)),
        (BOB, stop(1, PositionDirection.Long, 105 * P, ABOVE)),
        (BOB, stop(2, PositionDirection.Short, 95 * P, BELOW, MarketType.Spot)),
    )
    assert bot().decide(view(dlob, 1_000, 95 * P)) == []  # "below" is strict
    sent = bot().decide(view(dlob, 1_000, 94_999_900))
    # perp markets first, then spot; one action per stop
    assert [a.instructions for a in sent] == [(trigger_ix(ALICE, 1),), (trigger_ix(BOB, 2),)]
    assert sent[0] == Action(
        instructions=(trigger_ix(ALICE, 1),),
        kind=TRIGGER_KIND,
        dedupe_key=("trigger", ((ALICE.pubkey, 0), 1)),
        correlation_id=f"trigger-1000-{ALICE.pubkey[:4].hex()}.0.1-1",
    )
    above = bot().decide(view(dlob, 1_000, 105_000_100))
    assert [a.instructions for a in above] == [(trigger_ix(BOB, 1),)]
    only_perp = bot(spot_markets=()).decide(view(dlob, 1_000, 94 * P))
    assert [a.instructions for a in only_perp] == [(trigger_ix(ALICE, 1),)]


def test_nothing_without_a_keeper_account() -> None:
    dlob = book((ALICE, stop(1, PositionDirection.Short, 95 * P, BELOW)))
    assert bot().decide(view(dlob, 1_000, 94 * P, with_user=False)) == []


def test_a_sent_trigger_waits_and_learns_from_the_program() -> None:
    dlob = book(
        (ALICE, stop(1, PositionDirection.Short, 95 * P, BELOW)),
        (BOB, stop(1, PositionDirection.Short, 96 * P, BELOW)),
    )
    keeper = bot(retry_slots=3, gone_ttl_slots=20)
    first = keeper.decide(view(dlob, 1_000, 94 * P))
    # among "below" stops the highest trigger price comes first: BOB's $96, ALICE's $95
    assert [a.instructions for a in first] == [(trigger_ix(BOB, 1),), (trigger_ix(ALICE, 1),)]
    assert keeper.decide(view(dlob, 1_002, 94 * P)) == []  # within retry_slots
    # BOB's trigger was accepted (a second outcome for the same attempt is ignored); the
    # program saw ALICE's oracle back above $95: she is tried again at the next slot
    keeper.on_outcome(accepted(first[0]))
    keeper.on_outcome(rejected(first[0], ErrorCode.OrderDoesNotExist))
    keeper.on_outcome(rejected(first[1], ErrorCode.OrderDidNotSatisfyTriggerCondition))
    retry = keeper.decide(view(dlob, 1_001, 94 * P))
    assert [a.instructions for a in retry] == [(trigger_ix(ALICE, 1),)]
    # now ALICE's order is already triggered: dropped for gone_ttl_slots (until 1_021)
    keeper.on_outcome(rejected(retry[0], ErrorCode.OrderNotTriggerable))
    assert [a.instructions for a in keeper.decide(view(dlob, 1_020, 94 * P))] == [
        (trigger_ix(BOB, 1),)
    ]
    assert keeper.decide(view(dlob, 1_020, 94 * P)) == []
    assert [a.instructions for a in keeper.decide(view(dlob, 1_021, 94 * P))] == [
        (trigger_ix(ALICE, 1),)
    ]


def test_an_oracle_the_program_will_not_trigger_on_pauses_the_market() -> None:
    dlob = book((ALICE, stop(1, PositionDirection.Short, 95 * P, BELOW)))
    keeper = bot(oracle_backoff_slots=7)
    [action] = keeper.decide(view(dlob, 1_000, 94 * P))
    keeper.on_outcome(rejected(action, ErrorCode.InvalidOracle))
    assert keeper.decide(view(dlob, 1_006, 94 * P)) == []
    assert len(keeper.decide(view(dlob, 1_007, 94 * P))) == 1


def test_shape_and_params() -> None:
    keeper = bot(perp_markets=(0,), spot_markets=())
    assert isinstance(keeper, Bot)
    assert isinstance(keeper, LearnsFromOutcomes)
    assert keeper.subscriptions.streams == frozenset({Stream.ORDERS, Stream.ORACLE, Stream.SLOT})
    assert (keeper.subscriptions.perp_markets, keeper.subscriptions.spot_markets) == ((0,), ())
    assert keeper.subscriptions.dlob
    assert build_params(TriggerParams, {"retry_slots": 4}, "bots.trigger") == TriggerParams(
        retry_slots=4
    )
    with pytest.raises(ConfigError):
        build_params(TriggerParams, {"retry_slots": 0}, "bots.trigger")


def test_the_trigger_it_sends_fires_the_stop_in_the_program() -> None:
    w = new_world()
    stop_loss = OrderParams(
        OrderType.TriggerMarket,
        MarketType.Perp,
        PositionDirection.Short,
        B,
        0,
        trigger_price=95 * P,
        trigger_condition=BELOW,
    )
    order_id = place(w, TAKER, stop_loss)
    keeper = Trigger(context("trigger", FILLER, TriggerParams()))
    step(w, price=96 * P)
    book_now = book_of_state(w.program.state, w.slot)
    assert keeper.decide(world_view(w, FILLER, dlob=book_now)) == []
    step(w, price=94 * P)
    book_now = book_of_state(w.program.state, w.slot)
    [action] = keeper.decide(world_view(w, FILLER, dlob=book_now))
    [result] = execute(w, FILLER, [action])
    keeper.on_outcome(outcome_of(action, result))
    [record] = [r.record for r in result.records if isinstance(r.record, TriggerRecord)]  # type: ignore[union-attr]
    assert (record.order_id, record.oracle_price, record.filler) == (
        order_id,
        94 * P,
        (FILLER.pubkey, 0),
    )
    assert record.filler_reward == 10_000  # the $0.01 flat fee
    [order] = user_of(w, TAKER).orders
    assert order.trigger_condition == OrderTriggerCondition.TriggeredBelow
    # the book catches up (the order is now a triggered market order): nothing to trigger
    step(w, 2, price=94 * P)
    assert keeper.decide(world_view(w, FILLER, dlob=book_of_state(w.program.state, w.slot))) == []
