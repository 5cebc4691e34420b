"""The filler as a pure decider: hand-built books and views in, exact actions out.

Market: SOL-PERP of :func:`tests.protocol.world.make_state` (tick $0.0001 = 100, step 0.01
SOL, AMM pegged at $100 with no spread, so its bid and ask are both $100.00). Takers buy with
an auction from $100.00 to $100.20 over 20 slots from slot 1_000: $0.01 per slot, so the
auction price at slot ``1_000 + n`` is ``100_000_000 + 10_000 * n``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.filler import (
    EXPIRE_KIND,
    FILL_KIND,
    FILL_SIGNED_KIND,
    Filler,
    FillerParams,
    crossing_makers,
    taker_price_for_fill,
)
from dlob import DLOB, DLOBNode, NodeKind
from keepers.bus.client import Delivery
from keepers.config import ConfigError, build_params
from keepers.runtime.bot import Action, Bot, LearnsFromOutcomes, Stream
from keepers.runtime.view import View
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import FillPerpOrder, FillSignedOrder, MakerOrderRef
from protocol.keys import Keypair
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams, User
from protocol.state.user import Order
from protocol.types import MarketType, OrderType, PositionDirection
from tests.bots.helpers import (
    accepted,
    context,
    empty_book,
    intent_delivery,
    intent_order,
    make_view,
    oracle_messages,
    rejected,
)
from tests.protocol.world import START_TS, keypair, make_state

B = BASE_PRECISION
P = PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
FILLER = keypair(71)
TAKER = keypair(72)
MAKER_1 = keypair(73)
MAKER_2 = keypair(74)
MAKER_3 = keypair(75)
STATE = make_state()
MARKET = STATE.perp_markets[0]


def key(kp: Keypair) -> tuple[bytes, int]:
    return (kp.pubkey, 0)


def ask(order_id: int, price: int, size: int = B, slot: int = 990, **kw: object) -> Order:
    return Order(
        order_id, 0, MarketType.Perp, OrderType.Limit, SHORT, size, slot, price=price,
        post_only=True, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def bid(order_id: int, price: int, size: int = B, slot: int = 990, **kw: object) -> Order:
    return replace(ask(order_id, price, size, slot, **kw), direction=LONG)


def auction_buy(order_id: int, size: int, **kw: object) -> Order:
    fields: dict[str, object] = {
        "price": 100_600_000,
        "auction_start_price": 100 * P,
        "auction_end_price": 100_200_000,
        "auction_duration": 20,
        "max_ts": START_TS + 30,
    }
    fields.update(kw)
    return Order(order_id, 0, MarketType.Perp, OrderType.Market, LONG, size, 1_000, **fields)  # type: ignore[arg-type]


def book(*orders: tuple[Keypair, Order]) -> DLOB:
    dlob = empty_book(STATE, 990)
    for kp, order in orders:
        dlob.insert(key(kp), order)
    return dlob


def view(
    dlob: DLOB | None,
    slot: int,
    *,
    ts: int = START_TS,
    events: tuple[Delivery, ...] = (),
    with_user: bool = True,
) -> View:
    return make_view(
        authority=FILLER.pubkey,
        slot=slot,
        ts=ts,
        oracles=oracle_messages({"SOL/USD": (100 * P, 100_000, slot)}),
        perp_markets=STATE.perp_markets,
        spot_markets=STATE.spot_markets,
        users={0: User(FILLER.pubkey)} if with_user else {},
        dlob=dlob,
        events=events,
    )


def filler(**params: object) -> Filler:
    return Filler(context("filler", FILLER, FillerParams(**params)))  # type: ignore[arg-type]


def refs(*makers: tuple[Keypair, int]) -> tuple[MakerOrderRef, ...]:
    return tuple(MakerOrderRef(kp.pubkey, 0, order_id) for kp, order_id in makers)


def fill_ix(taker_order_id: int, *makers: tuple[Keypair, int]) -> FillPerpOrder:
    return FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order_id, refs(*makers))


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


# --- what it sends -------------------------------------------------------------------------------
def test_fills_a_taker_with_the_crossing_makers_best_price_first() -> None:
    dlob = book(
        (MAKER_1, ask(1, 100_100_000)),
        (MAKER_2, ask(1, 100_050_000)),
        (MAKER_3, ask(1, 100_300_000)),
        (TAKER, auction_buy(1, 3 * B)),
    )
    bot = filler()
    # slot 1_012: the auction is at $100.12, past $100.05 and $100.10 but not $100.30
    action = only(bot.decide(view(dlob, 1_012)))
    assert action == Action(
        instructions=(fill_ix(1, (MAKER_2, 1), (MAKER_1, 1)),),
        kind=FILL_KIND,
        dedupe_key=("fill", (key(TAKER), 1)),
        correlation_id=f"filler-1012-{TAKER.pubkey[:4].hex()}.0.1-1",
    )
    attempt = bot.attempts[action.correlation_id]
    assert attempt.taker == (key(TAKER), 1)
    assert attempt.makers == ((key(MAKER_2), 1), (key(MAKER_1), 1))


def test_makers_are_bounded_by_max_makers() -> None:
    makers = (MAKER_1, MAKER_2, MAKER_3, keypair(76))
    dlob = book(
        *((kp, ask(1, 100_010_000 + 10_000 * i)) for i, kp in enumerate(makers)),
        (TAKER, auction_buy(1, 4 * B)),
    )
    # slot 1_015: $100.15 crosses all four asks ($100.01 ... $100.04); two are named, best first
    action = only(filler(max_makers=2).decide(view(dlob, 1_015)))
    assert action.instructions == (fill_ix(1, (MAKER_1, 1), (MAKER_2, 1)),)


def test_a_market_order_past_its_auction_is_priced_at_the_amm_fallback() -> None:
    # A market buy without a limit price, its 10-slot auction over by slot 1_020: the program
    # checks makers against the AMM fallback price: the ask ($100.00) plus ask / divisor,
    # divisor = clamp(30 s to expiry * 20, 100, 200) = 200: 100_000_000 + 500_000.
    taker = auction_buy(
        1,
        2 * B,
        price=0,
        auction_start_price=99_900_000,
        auction_end_price=100_100_000,
        auction_duration=10,
    )
    assert taker_price_for_fill(taker, MARKET, 100 * P, 1_020, START_TS) == 100_500_000
    # 29 s left: divisor clamp(580, 100, 200) = 200 still; 4 s left: clamp(80, ...) = 100
    assert taker_price_for_fill(taker, MARKET, 100 * P, 1_020, START_TS + 26) == 101_000_000
    dlob = book(
        (MAKER_1, ask(1, 100_400_000)),
        (MAKER_2, ask(1, 100_600_000)),
        (TAKER, taker),
    )
    # the book (no fallback price for a market order) lists both; only $100.40 crosses $100.50
    [node_to_fill] = dlob.find_nodes_to_fill(MarketType.Perp, 0, 100 * P, 1_020, START_TS)
    assert len(node_to_fill.makers) == 2
    action = only(filler().decide(view(dlob, 1_020)))
    assert action.instructions == (fill_ix(1, (MAKER_1, 1)),)


def test_an_amm_only_fill_names_no_makers() -> None:
    # slot 1_011: the taker is 11 slots old (past the 10-slot minimum auction) and its $100.11
    # crosses the AMM's $100.00 ask; no maker rests
    dlob = book((TAKER, auction_buy(1, B)))
    assert filler().decide(view(dlob, 1_010)) == []  # 10 slots: makers still have it
    action = only(filler().decide(view(dlob, 1_011)))
    assert action.instructions == (fill_ix(1),)


def test_resting_orders_that_cross_are_filled_with_the_older_as_maker() -> None:
    # a post-only ask at $100.00 and a plain limit bid at $100.10 that rests (no auction)
    resting_bid = Order(1, 0, MarketType.Perp, OrderType.Limit, LONG, B, 995, price=100_100_000)
    dlob = book((MAKER_1, ask(1, 100 * P)), (TAKER, resting_bid))
    action = only(filler().decide(view(dlob, 1_000)))
    assert action.instructions == (fill_ix(1, (MAKER_1, 1)),)


def test_an_expired_order_is_cancelled_for_the_reward() -> None:
    dlob = book((TAKER, bid(4, 99 * P, max_ts=START_TS + 5)))
    assert filler().decide(view(dlob, 1_000, ts=START_TS + 5)) == []  # max_ts not yet passed
    action = only(filler().decide(view(dlob, 1_000, ts=START_TS + 6)))
    assert action.kind == EXPIRE_KIND
    assert action.instructions == (FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, 4),)
    assert filler(fill_expired=False).decide(view(dlob, 1_000, ts=START_TS + 6)) == []


def _signed_buy(uuid: bytes = b"\x07" * 8) -> tuple[OrderIntent, bytes]:
    params = OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        B,
        0,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )
    intent = OrderIntent(TAKER.pubkey, 0, params, 1_000, uuid)
    return intent, intent.sign(TAKER)


def test_a_signed_intent_is_placed_and_filled_with_what_the_user_signed() -> None:
    intent, signature = _signed_buy()
    dlob = book((MAKER_1, ask(1, 100_100_000)))
    dlob.insert_signed_intent(key(TAKER), intent.uuid, intent_order(intent))
    # without the signed bytes (never seen on the bus) the intent cannot be placed
    assert filler().decide(view(dlob, 1_010)) == []
    bot = filler()
    event = intent_delivery(intent, TAKER.pubkey, signature)
    action = only(bot.decide(view(dlob, 1_010, events=(event,))))
    assert action.kind == FILL_SIGNED_KIND
    assert action.instructions == (
        FillSignedOrder(FILLER.pubkey, 0, intent, TAKER.pubkey, signature, refs((MAKER_1, 1))),
    )
    assert action.dedupe_key == ("fill", (key(TAKER), intent.uuid))
    assert filler(fill_intents=False).decide(view(dlob, 1_010, events=(event,))) == []


def test_nothing_without_a_book_or_a_filler_account() -> None:
    dlob = book((MAKER_1, ask(1, 100_050_000)), (TAKER, auction_buy(1, B)))
    assert filler().decide(view(None, 1_010)) == []
    assert filler().decide(view(dlob, 1_010, with_user=False)) == []
    assert filler(perp_markets=(1,)).decide(view(dlob, 1_010)) == []
    assert only(filler(perp_markets=(0,)).decide(view(dlob, 1_010))).kind == FILL_KIND


def test_fills_per_tick_are_bounded() -> None:
    takers = [keypair(80 + i) for i in range(3)]
    dlob = book(*((kp, auction_buy(1, B)) for kp in takers))
    bot = filler(max_fills_per_tick=2)
    first = {a.instructions[0].taker_authority for a in bot.decide(view(dlob, 1_011))}
    assert len(first) == 2
    # the third was not tried, so the next tick sends it
    [action] = bot.decide(view(dlob, 1_011))
    assert {action.instructions[0].taker_authority} == {kp.pubkey for kp in takers} - first


# --- dedupe and learning -----------------------------------------------------------------------
def _book_of_two_makers(*more: tuple[Keypair, Order]) -> DLOB:
    return book(
        (MAKER_1, ask(1, 100_050_000)),
        (MAKER_2, ask(1, 100_080_000)),
        (TAKER, auction_buy(1, 2 * B)),
        *more,
    )


def test_a_tried_node_waits_for_its_ttl() -> None:
    dlob = _book_of_two_makers()
    bot = filler(node_ttl_slots=3)
    first = bot.decide(view(dlob, 1_010))
    assert [a.dedupe_key for a in first] == [("fill", (key(TAKER), 1))]
    assert bot.decide(view(dlob, 1_010)) == []  # same slot, next tick
    assert bot.decide(view(dlob, 1_012)) == []
    bot.on_outcome(accepted(first[0]))  # accepted: the order event will update the book
    assert bot.decide(view(dlob, 1_012)) == []
    again = bot.decide(view(dlob, 1_013))
    assert [a.dedupe_key for a in again] == [("fill", (key(TAKER), 1))]
    assert again[0].correlation_id != first[0].correlation_id


def test_a_taker_the_program_says_is_gone_is_dropped() -> None:
    dlob = _book_of_two_makers()
    bot = filler(gone_ttl_slots=50)
    action = only(bot.decide(view(dlob, 1_010)))
    bot.on_outcome(rejected(action, ErrorCode.OrderDoesNotExist, "taker_order_id"))
    assert bot.decide(view(dlob, 1_012)) == []
    assert bot.decide(view(dlob, 1_059)) == []
    assert only(bot.decide(view(dlob, 1_060))).dedupe_key == ("fill", (key(TAKER), 1))
    assert len(bot.attempts) == 1  # the rejected attempt is settled; the new one pending


def test_a_gone_maker_is_dropped_and_the_taker_retried_at_once() -> None:
    dlob = _book_of_two_makers()
    bot = filler()
    # $100.10 at slot 1_010 crosses both makers
    action = only(bot.decide(view(dlob, 1_010)))
    assert action.instructions == (fill_ix(1, (MAKER_1, 1), (MAKER_2, 1)),)
    bot.on_outcome(rejected(action, ErrorCode.MakerOrderNotFound, "makers[0]"))
    retry = only(bot.decide(view(dlob, 1_010)))
    assert retry.instructions == (fill_ix(1, (MAKER_2, 1)),)
    # without an index every maker of the attempt is suspect
    bot.on_outcome(rejected(retry, ErrorCode.MakerNotFound))
    assert bot.decide(view(dlob, 1_010)) == []  # no maker left and the AMM not yet available


def test_a_user_short_of_margin_is_throttled() -> None:
    # the taker also sells: a market sell from $100.00 down to $99.00, which only the AMM
    # takes (from slot 1_011)
    sell = replace(auction_buy(2, B), direction=SHORT, price=0, auction_end_price=99 * P)
    dlob = _book_of_two_makers((TAKER, sell))
    bot = filler(user_ttl_slots=5)
    action = only(bot.decide(view(dlob, 1_010)))
    bot.on_outcome(rejected(action, ErrorCode.InsufficientCollateral, "taker"))
    # the taker's other order is held back too
    assert bot.decide(view(dlob, 1_014)) == []
    keys = sorted(a.instructions[0].taker_order_id for a in bot.decide(view(dlob, 1_015)))
    assert keys == [1, 2]


def test_makers_short_of_margin_are_left_out() -> None:
    dlob = _book_of_two_makers()
    bot = filler(user_ttl_slots=5)
    action = only(bot.decide(view(dlob, 1_010)))
    bot.on_outcome(rejected(action, ErrorCode.InsufficientCollateral, "makers"))
    # both makers are throttled; at 1_012 the taker is past the AMM's minimum auction
    retry = bot.decide(view(dlob, 1_012))
    assert [a.instructions for a in retry] == [(fill_ix(1),)]


def test_a_price_the_program_refused_is_re_evaluated_at_the_next_slot() -> None:
    dlob = _book_of_two_makers()
    bot = filler(node_ttl_slots=5)
    action = only(bot.decide(view(dlob, 1_010)))
    bot.on_outcome(rejected(action, ErrorCode.InvalidOrderFillPrice, "makers[1]"))
    assert bot.decide(view(dlob, 1_010)) == []
    assert only(bot.decide(view(dlob, 1_011))).dedupe_key == ("fill", (key(TAKER), 1))


def test_an_outcome_it_did_not_ask_for_is_ignored() -> None:
    dlob = _book_of_two_makers()
    bot = filler()
    action = only(bot.decide(view(dlob, 1_010)))
    stranger = replace(action, correlation_id="someone-else")
    bot.on_outcome(rejected(stranger, ErrorCode.OrderDoesNotExist))
    assert action.correlation_id in bot.attempts
    assert not bot.gone


# --- the bot's shape and parameters ----------------------------------------------------------
def test_it_is_an_event_driven_bot_reading_the_book() -> None:
    bot = filler(sub_account_id=2, perp_markets=(0, 1))
    assert isinstance(bot, Bot)
    assert isinstance(bot, LearnsFromOutcomes)
    subs = bot.subscriptions
    assert subs.streams == frozenset({Stream.ORDERS, Stream.INTENTS, Stream.SLOT, Stream.ORACLE})
    assert (subs.perp_markets, subs.spot_markets, subs.sub_account_ids, subs.dlob) == (
        (0, 1),
        (),
        (2,),
        True,
    )


def test_params_are_validated_from_the_config_table() -> None:
    params = build_params(FillerParams, {"max_makers": 6, "perp_markets": [0]}, "bots.filler")
    assert params == FillerParams(max_makers=6, perp_markets=(0,))
    with pytest.raises(ConfigError) as too_many:
        build_params(FillerParams, {"max_makers": 9}, "bots.filler")
    assert too_many.value.path == "max_makers"
    with pytest.raises(ConfigError) as too_small:
        build_params(FillerParams, {"node_ttl_slots": 0}, "bots.filler")
    assert too_small.value.path == "bots.filler.node_ttl_slots"
    with pytest.raises(ConfigError) as unknown:
        build_params(FillerParams, {"max_maker": 2}, "bots.filler")
    assert unknown.value.path == "bots.filler.max_maker"


# --- maker selection against a naive model ------------------------------------------------------
def _maker(i: int, price: int) -> DLOBNode:
    return DLOBNode((keypair(100 + i).pubkey, 0), ask(1, price), NodeKind.RestingLimit)


@given(
    st.lists(st.integers(9_990, 10_010), min_size=0, max_size=10),
    st.integers(9_990, 10_010),
    st.integers(0, 8),
)
def test_crossing_makers_are_the_best_crossing_ones(
    ticks: list[int], limit_ticks: int, max_makers: int
) -> None:
    # prices on the $0.01 grid around $100; a resting limit buy at ``limit`` takes
    makers = tuple(_maker(i, t * 10_000) for i, t in enumerate(ticks))
    limit = limit_ticks * 10_000
    taker = Order(1, 0, MarketType.Perp, OrderType.Limit, LONG, B, 1_000, price=limit)
    chosen = crossing_makers(taker, makers, MARKET, 100 * P, 1_000, START_TS, max_makers)
    crossing = [m for m in makers if m.order.price <= limit]
    expected = sorted(crossing, key=lambda m: m.order.price)[:max_makers]
    assert chosen == expected
