"""Shared pieces of the bot tests: views cut by hand or from a program's state, a book of the
program's open orders, and running a bot's actions through the real program.

A bot only ever sees a :class:`keepers.runtime.view.View`; these helpers build one the way the
runtime does (oracle prices as bus messages, read-only mappings of market and user copies,
the bot's own users only) so a decider test and an end-to-end test feed the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from dlob import DLOB
from keepers.bus import topics
from keepers.bus.client import Delivery
from keepers.bus.schemas import IntentMessage, OracleMessage, OrderParamsFields
from keepers.runtime.bot import Action, BotContext
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.view import View
from protocol.accounts import ProgramState
from protocol.errors import Rejected
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.signed_intent import OrderIntent
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import Order, User, UserKey
from protocol.types import MarketType, OrderStatus
from tests.protocol.world import World

CLUSTER = "test"


def context(name: str, keypair: Keypair, params: Any = None, **extra: Any) -> BotContext:
    return BotContext(name=name, authority=keypair.pubkey, params=params, extra=extra)


def oracle_messages(prices: Mapping[str, tuple[int, int, int]]) -> dict[str, OracleMessage]:
    """``{oracle_id: (price, confidence, published slot)}`` as bus messages."""
    return {
        oracle_id: OracleMessage(oracle_id=oracle_id, price=price, confidence=conf, slot=slot)
        for oracle_id, (price, conf, slot) in prices.items()
    }


def make_view(
    *,
    authority: bytes,
    slot: int,
    ts: int,
    oracles: Mapping[str, OracleMessage],
    perp_markets: Mapping[int, PerpMarket],
    spot_markets: Mapping[int, SpotMarket] | None = None,
    users: Mapping[int, User] | None = None,
    dlob: DLOB | None = None,
    events: Sequence[Delivery] = (),
    tick: int = 1,
    bot: str = "bot",
) -> View:
    return View(
        bot=bot,
        authority=authority,
        tick=tick,
        slot=slot,
        ts=ts,
        now=float(slot),
        oracles=MappingProxyType(dict(oracles)),
        perp_markets=MappingProxyType(dict(perp_markets)),
        spot_markets=MappingProxyType(dict(spot_markets or {})),
        users=MappingProxyType(dict(users or {})),
        events=tuple(events),
        dlob=dlob,
    )


def view_of_state(
    state: ProgramState,
    *,
    authority: bytes,
    slot: int,
    ts: int,
    sub_account_ids: Iterable[int] = (0,),
    dlob: DLOB | None = None,
    events: Sequence[Delivery] = (),
    tick: int = 1,
) -> View:
    """What the runtime would show a bot of ``authority`` given the program's accounts: copies
    (a bot must not see later changes), the bot's own users, every oracle as published."""
    users = {
        sub: state.users[(authority, sub)].clone()
        for sub in sub_account_ids
        if (authority, sub) in state.users
    }
    oracles = {
        oracle_id: (account.price, account.confidence, account.publish_slot)
        for oracle_id, account in state.oracles.items()
    }
    return make_view(
        authority=authority,
        slot=slot,
        ts=ts,
        oracles=oracle_messages(oracles),
        perp_markets={i: m.clone() for i, m in state.perp_markets.items()},
        spot_markets={i: m.clone() for i, m in state.spot_markets.items()},
        users=users,
        dlob=dlob,
        events=events,
        tick=tick,
    )


def world_view(
    w: World,
    keypair: Keypair,
    *,
    dlob: DLOB | None = None,
    events: Sequence[Delivery] = (),
    tick: int = 1,
) -> View:
    return view_of_state(
        w.program.state,
        authority=keypair.pubkey,
        slot=w.slot,
        ts=w.ts,
        dlob=dlob,
        events=events,
        tick=tick,
    )


def empty_book(state: ProgramState, slot: int = 0) -> DLOB:
    book = DLOB(slot)
    for index, perp in state.perp_markets.items():
        book.add_market(MarketType.Perp, index, tick_size=perp.amm.order_tick_size)
    for index, spot in state.spot_markets.items():
        book.add_market(MarketType.Spot, index, tick_size=spot.order_tick_size)
    return book


def book_of_state(state: ProgramState, slot: int) -> DLOB:
    """A book holding a copy of every open order of every user (what a synced feed holds)."""
    book = empty_book(state, slot)
    for key, user in sorted(state.users.items()):
        for order in user.orders:
            if order.status == OrderStatus.Open:
                book.insert(key, order.clone())
    return book


def intent_delivery(intent: OrderIntent, signer: bytes, signature: bytes) -> Delivery:
    message = IntentMessage.from_intent(intent, signer, signature)
    return Delivery(
        topic=topics.intents(CLUSTER, intent.params.market_index), message=message, generation=1
    )


def intent_order(intent: OrderIntent) -> Order:
    """The book's order for an intent (as :func:`keepers.dlob_feed.intent_order` builds it)."""
    from keepers.dlob_feed import intent_order as feed_intent_order

    return feed_intent_order(intent)


def outcome_of(action: Action, result: Executed | Rejected) -> Outcome:
    """The executor's :class:`Outcome` for a program result."""
    if isinstance(result, Executed):
        return Outcome(
            action,
            Status.ACCEPTED,
            action.correlation_id,
            signature=result.signature,
            slot=result.slot,
            attempts=1,
            records=tuple(result.records),
        )
    return Outcome(
        action,
        Status.REJECTED,
        action.correlation_id,
        code=int(result.code),
        code_name=result.code.name,
        detail=result.detail,
        field=result.field,
        attempts=1,
    )


def rejected(action: Action, code: Any, field: str | None = None) -> Outcome:
    """A rejection outcome as the executor reports it."""
    return Outcome(
        action,
        Status.REJECTED,
        action.correlation_id,
        code=int(code),
        code_name=code.name,
        field=field,
        attempts=1,
    )


def accepted(action: Action) -> Outcome:
    return Outcome(action, Status.ACCEPTED, action.correlation_id, attempts=1)


def execute(w: World, keypair: Keypair, actions: Sequence[Action]) -> list[Executed | Rejected]:
    """Sign each action with the bot's keypair at the world's slot and run it, in order."""
    return [w.send(*action.instructions, signers=(keypair,)) for action in actions]


def user_key(keypair: Keypair, sub_account_id: int = 0) -> UserKey:
    return (keypair.pubkey, sub_account_id)


__all__ = [
    "CLUSTER",
    "OrderParamsFields",
    "accepted",
    "book_of_state",
    "context",
    "empty_book",
    "execute",
    "intent_delivery",
    "intent_order",
    "make_view",
    "oracle_messages",
    "outcome_of",
    "rejected",
    "user_key",
    "view_of_state",
    "world_view",
]
