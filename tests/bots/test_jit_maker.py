"""The JIT maker: its quote, the crossing slot, its capacity, its decisions, and its answers
through the program.

Market: SOL-PERP of :func:`tests.protocol.world.make_state` (tick 100, step and minimum
order 0.01 SOL), oracle $100. Takers buy with an auction from $100.00 to $100.20 over 20
slots from slot 1_000 (+$0.01 a slot); with a 10 bps spread the maker asks $100.10, which the
auction reaches at slot 1_010.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.common import ViewReader
from bots.jit_maker import (
    PLACE_AND_MAKE_KIND,
    PLACE_AND_MAKE_SIGNED_KIND,
    JitMaker,
    JitMakerParams,
    first_crossing_slot,
    is_oracle_volatile,
    jit_quote,
    max_fill_base,
)
from dlob import DLOB
from keepers.bus.client import Delivery
from keepers.config import ConfigError, build_params
from keepers.runtime.bot import Action, Bot, LearnsFromOutcomes, Stream
from keepers.runtime.view import View
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import (
    PlaceAndMakePerpOrder,
    PlaceAndMakeSignedOrder,
    PlaceSignedOrder,
)
from protocol.keys import Keypair
from protocol.records import FillRecord
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams, PerpPosition, User
from protocol.state.oracle import OraclePriceData
from protocol.state.user import Order
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam
from tests.bots.helpers import (
    book_of_state,
    context,
    empty_book,
    execute,
    intent_delivery,
    intent_order,
    make_view,
    oracle_messages,
    outcome_of,
    rejected,
    world_view,
)
from tests.protocol import fill_world
from tests.protocol.world import USDC_UNIT, World, keypair, make_state

B = BASE_PRECISION
P = PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
MAKER = keypair(101)
TAKER = keypair(102)
TAKER_2 = keypair(103)
STATE = make_state()


def auction_buy(order_id: int = 1, size: int = 3 * B, **kw: object) -> Order:
    fields: dict[str, object] = {
        "price": 100_600_000,
        "auction_start_price": 100 * P,
        "auction_end_price": 100_200_000,
        "auction_duration": 20,
        "max_ts": 1_700_000_030,
    }
    fields.update(kw)
    return Order(order_id, 0, MarketType.Perp, OrderType.Market, LONG, size, 1_000, **fields)  # type: ignore[arg-type]


def auction_sell(order_id: int = 1, size: int = 3 * B) -> Order:
    return replace(
        auction_buy(order_id, size), direction=SHORT, price=0, auction_end_price=99_800_000
    )


# --- pure functions ----------------------------------------------------------------------------
def test_the_quote_is_the_spread_around_the_oracle_rounded_outward() -> None:
    assert jit_quote(100 * P, 10, 100) == (99_900_000, 100_100_000)
    # 100_012_345 * 0.999 = 99_912_332.655 -> truncated, then down to the tick: 99_912_300;
    # 100_012_345 * 1.001 = 100_112_357.345 -> rounded up, then up to the tick: 100_112_400
    assert jit_quote(100_012_345, 10, 100) == (99_912_300, 100_112_400)
    assert jit_quote(100_012_345, 0, 100) == (100_012_300, 100_012_400)


def test_first_crossing_slot_of_fixed_auctions() -> None:
    buy = auction_buy()
    assert first_crossing_slot(buy, 100_100_000, 1_000, 100, 100 * P) == 1_010
    assert first_crossing_slot(buy, 100_100_000, 1_012, 100, 100 * P) == 1_012
    assert first_crossing_slot(buy, 100_105_000, 1_000, 100, 100 * P) == 1_011
    assert first_crossing_slot(buy, 99_950_000, 1_000, 100, 100 * P) == 1_000
    assert first_crossing_slot(buy, 100_200_000, 1_000, 100, 100 * P) == 1_020
    assert first_crossing_slot(buy, 100_300_000, 1_000, 100, 100 * P) is None
    # a seller's price falls $0.01 a slot: it reaches a $99.90 bid at slot 1_010
    assert first_crossing_slot(auction_sell(), 99_900_000, 1_000, 100, 100 * P) == 1_010
    assert first_crossing_slot(auction_sell(), 100_100_000, 1_005, 100, 100 * P) == 1_005


def test_first_crossing_slot_of_an_oracle_offset_auction() -> None:
    # an oracle order: its auction runs from oracle - $0.10 to oracle + $0.10 over 20 slots
    oracle_buy = replace(
        auction_buy(),
        order_type=OrderType.Oracle,
        price=0,
        auction_start_price=-100_000,
        auction_end_price=100_000,
    )
    assert first_crossing_slot(oracle_buy, 100 * P, 1_000, 100, 100 * P) == 1_010
    # the oracle at $99.95: the auction runs $99.85 .. $100.05 and reaches $100 at slot 1_015
    assert first_crossing_slot(oracle_buy, 100 * P, 1_000, 100, 99_950_000) == 1_015


@given(
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(1, 60),
    st.integers(-50, 250),
    st.integers(990, 1_070),
)
def test_first_crossing_slot_is_the_earliest_crossing_in_the_auction(
    start_ticks: int, span_ticks: int, duration: int, quote_ticks: int, slot: int
) -> None:
    # a buy whose fixed auction rises from $99.00 + start to that + span, on a $0.01 grid;
    # reference: walk the auction slot by slot with its linear formula (start + span * n / d;
    # the program then rounds down to the tick, which cannot take a price that reaches a quote
    # on the $0.01 grid below it)
    start = 99 * P + start_ticks * 10_000
    end = start + span_ticks * 10_000
    buy = auction_buy(auction_start_price=start, auction_end_price=end, auction_duration=duration)
    quote = 99 * P + quote_ticks * 10_000
    expected = next(
        (
            s
            for s in range(max(slot, 1_000), 1_000 + duration + 1)
            if start + (end - start) * (s - 1_000) // duration >= quote
        ),
        None,
    )
    assert first_crossing_slot(buy, quote, slot, 100, 100 * P) == expected


def test_volatility_guards() -> None:
    def volatile(price: int, confidence: int, twap: int, delay: int = 0) -> bool:
        return is_oracle_volatile(OraclePriceData(price, confidence, delay), twap, 50, 150, 10)

    # confidence: 50 bps of $100 is $0.50 = 500_000
    assert not volatile(100 * P, 500_000, 100 * P)
    assert volatile(100 * P, 500_001, 100 * P)
    # divergence: 150 bps of a $100 TWAP is $1.50
    assert not volatile(101_500_000, 0, 100 * P)
    assert volatile(101_500_001, 0, 100 * P)
    assert volatile(98_499_999, 0, 100 * P)
    assert not volatile(120 * P, 0, 0)  # no TWAP yet: only the other guards apply
    assert volatile(100 * P, 0, 100 * P, delay=11)
    assert volatile(0, 0, 0)


def _maker_world(usdc: int = 1_000) -> World:
    w = World()
    w.new_user(MAKER, usdc=usdc * USDC_UNIT)
    return w


def test_capacity_is_bounded_by_position_and_leverage() -> None:
    w = _maker_world()
    user = w.program.state.users[(MAKER.pubkey, 0)]
    # 3 SOL long entered at $100 (no PnL at the $100 oracle): equity $1,000
    user.perp_positions.append(
        PerpPosition(
            0,
            base_asset_amount=3 * B,
            quote_asset_amount=-300 * USDC_UNIT,
            quote_entry_amount=-300 * USDC_UNIT,
            quote_break_even_amount=-300 * USDC_UNIT,
        )
    )
    view = world_view(w, MAKER)
    mine = view.user(0)
    assert mine is not None
    reader = ViewReader(view)
    # 2x of $1,000 is $2,000 = 20 SOL at $100; the position cap of 10 SOL is tighter:
    # the position may go from +3 down to -10 (sell 13) or up to +10 (buy 7)
    assert max_fill_base(mine, 0, SHORT, reader, 10 * B, 20_000) == 13 * B
    assert max_fill_base(mine, 0, LONG, reader, 10 * B, 20_000) == 7 * B
    # with a loose position cap the leverage binds: [-20, +20]
    assert max_fill_base(mine, 0, SHORT, reader, 100 * B, 20_000) == 23 * B
    assert max_fill_base(mine, 0, LONG, reader, 100 * B, 20_000) == 17 * B
    # 0.2x of $1,000 = 2 SOL: already past it long, so only selling is possible
    assert max_fill_base(mine, 0, LONG, reader, 100 * B, 2_000) == 0
    assert max_fill_base(mine, 0, SHORT, reader, 100 * B, 2_000) == 5 * B
    # margin: $1,000 collateral less 10% of the $300 position = $970 free; at 10% initial
    # margin that carries $9,700 = 97 SOL more of position: selling may first close the 3
    # long, so 100 SOL; buying 97
    assert max_fill_base(mine, 0, SHORT, reader, 1_000 * B, 1_000_000) == 100 * B
    assert max_fill_base(mine, 0, LONG, reader, 1_000 * B, 1_000_000) == 97 * B
    no_oracle = make_view(
        authority=MAKER.pubkey,
        slot=view.slot,
        ts=view.ts,
        oracles={},
        perp_markets=view.perp_markets,
        spot_markets=view.spot_markets,
    )
    assert max_fill_base(mine, 0, SHORT, ViewReader(no_oracle), 10 * B, 20_000) == 0


# --- decisions -----------------------------------------------------------------------------------
def _user() -> User:
    return _maker_world(20_000).program.state.users[(MAKER.pubkey, 0)].clone()


USER = _user()


def book(*orders: tuple[tuple[bytes, int], Order]) -> DLOB:
    dlob = empty_book(STATE, 990)
    for user, order in orders:
        dlob.insert(user, order)
    return dlob


def view(
    dlob: DLOB,
    slot: int,
    *,
    confidence: int = 10_000,
    events: tuple[Delivery, ...] = (),
) -> View:
    return make_view(
        authority=MAKER.pubkey,
        slot=slot,
        ts=1_700_000_000,
        oracles=oracle_messages({"SOL/USD": (100 * P, confidence, slot)}),
        perp_markets=STATE.perp_markets,
        spot_markets=STATE.spot_markets,
        users={0: USER},
        dlob=dlob,
        events=events,
    )


def maker(**params: object) -> JitMaker:
    return JitMaker(context("jit_maker", MAKER, JitMakerParams(**params)))  # type: ignore[arg-type]


def ask_params(size: int = B, price: int = 100_100_000) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        SHORT,
        size,
        0,
        price=price,
        post_only=PostOnlyParam.MustPostOnly,
        immediate_or_cancel=True,
    )


def test_answers_an_auction_at_the_first_slot_its_price_crosses_the_quote() -> None:
    dlob = book(((TAKER.pubkey, 0), auction_buy()))
    bot = maker()
    taker = ((TAKER.pubkey, 0), 1)
    for slot in range(1_000, 1_010):
        assert bot.decide(view(dlob, slot)) == []
        assert bot.scheduled == {taker: 1_010}
    [action] = bot.decide(view(dlob, 1_010))
    assert action == Action(
        instructions=(PlaceAndMakePerpOrder(MAKER.pubkey, 0, ask_params(), TAKER.pubkey, 0, 1),),
        kind=PLACE_AND_MAKE_KIND,
        dedupe_key=("jit", taker),
        correlation_id=f"jit_maker-1010-{TAKER.pubkey[:4].hex()}.0.1-1",
    )
    assert bot.decide(view(dlob, 1_011)) == []  # one answer per auction


def test_answers_a_seller_with_a_bid() -> None:
    dlob = book(((TAKER.pubkey, 0), auction_sell(size=B // 2)))
    [action] = maker().decide(view(dlob, 1_010))
    expected = replace(ask_params(B // 2, 99_900_000), direction=LONG)
    assert action.instructions == (
        PlaceAndMakePerpOrder(MAKER.pubkey, 0, expected, TAKER.pubkey, 0, 1),
    )


def test_skips_its_own_orders_and_volatile_oracles() -> None:
    dlob = book(((MAKER.pubkey, 1), auction_buy()))  # another sub-account of its own
    assert maker().decide(view(dlob, 1_010)) == []
    dlob = book(((TAKER.pubkey, 0), auction_buy()))
    # confidence $0.51 on $100 is above the 50 bps guard
    assert maker().decide(view(dlob, 1_010, confidence=510_000)) == []
    assert len(maker().decide(view(dlob, 1_010, confidence=500_000))) == 1


def test_sizes_are_bounded_by_the_order_the_taker_and_the_capacity() -> None:
    dlob = book(
        ((TAKER.pubkey, 0), auction_buy(size=3 * B)),
        ((TAKER_2.pubkey, 0), auction_buy(size=3 * B)),
    )
    # max position 1.5 SOL: the first answer takes 1 SOL (max_order_base), the second 0.5
    sent = maker(max_position_base=3 * B // 2).decide(view(dlob, 1_010))
    assert [a.instructions[0].params.base_asset_amount for a in sent] == [B, B // 2]
    # a taker smaller than max_order_base is answered for its size
    small = book(((TAKER.pubkey, 0), auction_buy(size=B // 4)))
    [action] = maker().decide(view(small, 1_010))
    assert action.instructions[0].params.base_asset_amount == B // 4
    # below the market's minimum order (0.01 SOL) after step rounding: no answer
    assert maker(max_order_base=B // 200).decide(view(dlob, 1_010)) == []


def _signed_buy() -> tuple[OrderIntent, bytes]:
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
    intent = OrderIntent(TAKER.pubkey, 0, params, 1_000, b"\x09" * 8)
    return intent, intent.sign(TAKER)


def test_answers_a_signed_intent_by_placing_it_first() -> None:
    intent, signature = _signed_buy()
    dlob = book()
    dlob.insert_signed_intent((TAKER.pubkey, 0), intent.uuid, intent_order(intent))
    assert maker().decide(view(dlob, 1_010)) == []  # the signed bytes were never seen
    event = intent_delivery(intent, TAKER.pubkey, signature)
    [action] = maker().decide(view(dlob, 1_010, events=(event,)))
    assert action.kind == PLACE_AND_MAKE_SIGNED_KIND
    assert action.instructions == (
        PlaceSignedOrder(intent, TAKER.pubkey, signature),
        PlaceAndMakeSignedOrder(MAKER.pubkey, 0, ask_params(), TAKER.pubkey, 0, intent.uuid),
    )


def test_learns_from_the_program() -> None:
    dlob = book(
        ((TAKER.pubkey, 0), auction_buy()),
        ((TAKER_2.pubkey, 0), auction_buy()),
    )
    bot = maker(margin_backoff_slots=4)
    first, second = bot.decide(view(dlob, 1_010))
    # the price moved: re-evaluated at the next slot (not again in this one)
    bot.on_outcome(rejected(first, ErrorCode.InvalidOrderFillPrice, "makers[0]"))
    # the second taker's order is gone: dropped
    bot.on_outcome(rejected(second, ErrorCode.OrderDoesNotExist, "taker_order_id"))
    assert bot.decide(view(dlob, 1_010)) == []
    [again] = bot.decide(view(dlob, 1_011))
    assert again.dedupe_key == first.dedupe_key
    # short of margin: the market pauses for 4 slots
    bot.on_outcome(rejected(again, ErrorCode.InsufficientCollateral, "makers"))
    for slot in range(1_011, 1_015):
        assert bot.decide(view(dlob, slot)) == []
    assert [a.dedupe_key for a in bot.decide(view(dlob, 1_015))] == [first.dedupe_key]


def test_shape_and_params() -> None:
    bot = maker(perp_markets=(0, 2), sub_account_id=3)
    assert isinstance(bot, Bot)
    assert isinstance(bot, LearnsFromOutcomes)
    subs = bot.subscriptions
    assert subs.streams == frozenset({Stream.ORDERS, Stream.INTENTS, Stream.SLOT, Stream.ORACLE})
    assert (subs.perp_markets, subs.spot_markets, subs.sub_account_ids, subs.dlob) == (
        (0, 2),
        (),
        (3,),
        True,
    )
    params = build_params(JitMakerParams, {"spread_bps": 25, "perp_markets": [1]}, "bots.jit")
    assert params == JitMakerParams(spread_bps=25, perp_markets=(1,))
    with pytest.raises(ConfigError) as info:
        build_params(JitMakerParams, {"spread_bps": -1}, "bots.jit")
    assert info.value.path == "bots.jit.spread_bps"


# --- through the program ------------------------------------------------------------------------
def _market_buy(size: int) -> OrderParams:
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        size,
        0,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )


def _jit_fills(result: object) -> list[FillRecord]:
    records = fill_world.fill_records(result)  # type: ignore[arg-type]
    return [r for r in records if r.layer == "jit"]


def test_place_and_make_fills_at_the_crossing_slot() -> None:
    w = fill_world.new_world(amm_price=101 * P)  # the AMM never crosses this auction
    taker_order = fill_world.place(w, fill_world.TAKER, _market_buy(2 * B))
    jit_key: Keypair = fill_world.OTHER  # $20,000 of collateral
    bot = JitMaker(context("jit_maker", jit_key, JitMakerParams()))
    sent_at: list[int] = []
    for _ in range(12):
        fill_world.step(w)
        actions = bot.decide(world_view(w, jit_key, dlob=book_of_state(w.program.state, w.slot)))
        if actions:
            sent_at.append(w.slot)
            results = execute(w, jit_key, actions)
            for action, result in zip(actions, results, strict=True):
                bot.on_outcome(outcome_of(action, result))
            [record] = _jit_fills(results[0])
    assert sent_at == [1_010]  # $100.10 reaches the $100.10 ask ten slots in
    assert (record.slot, record.fill_price, record.base_asset_amount) == (1_010, 100_100_000, B)
    assert (record.maker, record.taker_order_id) == ((jit_key.pubkey, 0), taker_order)
    assert fill_world.perp_position(w, jit_key).base_asset_amount == -B
    [left] = fill_world.user_of(w, fill_world.TAKER).orders
    assert left.base_asset_amount_filled == B


def test_a_signed_intent_is_placed_and_made_in_one_transaction() -> None:
    w = fill_world.new_world(amm_price=101 * P)
    jit_key: Keypair = fill_world.OTHER
    intent = OrderIntent(fill_world.TAKER.pubkey, 0, _market_buy(B), w.slot, b"\x0a" * 8)
    signature = intent.sign(fill_world.TAKER)
    bot = JitMaker(context("jit_maker", jit_key, JitMakerParams()))
    fill_world.step(w, 10)
    dlob = book_of_state(w.program.state, w.slot)
    dlob.insert_signed_intent((fill_world.TAKER.pubkey, 0), intent.uuid, intent_order(intent))
    event = intent_delivery(intent, fill_world.TAKER.pubkey, signature)
    [action] = bot.decide(world_view(w, jit_key, dlob=dlob, events=(event,)))
    [result] = execute(w, jit_key, [action])
    [record] = _jit_fills(result)
    assert (record.fill_price, record.base_asset_amount, record.taker) == (
        100_100_000,
        B,
        (fill_world.TAKER.pubkey, 0),
    )
    assert fill_world.user_of(w, fill_world.TAKER).orders == []
