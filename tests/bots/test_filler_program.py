"""The filler end to end: its actions, signed with its keypair, through the real program.

The world is :mod:`tests.protocol.fill_world`: SOL-PERP with the oracle at $100, every trader
with $20,000, the filler with an empty account. The book is a copy of every open order in the
program (what a synced DLOB feed holds); the view is cut from the program's accounts.
"""

from __future__ import annotations

from dataclasses import replace

from bots.filler import EXPIRE_KIND, FILL_SIGNED_KIND, Filler, FillerParams
from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import CancelOrder
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef
from protocol.program import Executed
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams
from protocol.types import MarketType, OrderType
from tests.bots.helpers import (
    book_of_state,
    context,
    execute,
    intent_delivery,
    intent_order,
    outcome_of,
    world_view,
)
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    MAKER_2,
    SHORT,
    TAKER,
    P,
    actions,
    fill_records,
    new_world,
    perp_limit,
    perp_position,
    place,
    step,
    user_of,
)
from tests.protocol.world import World

B = BASE_PRECISION


def market_buy(size: int = B) -> OrderParams:
    # auction from $100.00 to $100.20 over 20 slots: +$0.01 a slot
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


def tick(bot: Filler, w: World, **kw: object) -> list[Executed | Rejected]:
    """One tick of the bot on a fresh book, its actions run, the outcomes learned."""
    book = book_of_state(w.program.state, w.slot)
    sent = bot.decide(world_view(w, FILLER, dlob=book, **kw))  # type: ignore[arg-type]
    results = execute(w, FILLER, sent)
    for action, result in zip(sent, results, strict=True):
        bot.on_outcome(outcome_of(action, result))
    return results


def test_the_fills_the_filler_sends_settle_against_the_best_makers() -> None:
    w = new_world(amm_price=101 * P)  # the AMM quotes $101: only the makers cross
    m1 = place(w, MAKER_1, perp_limit(SHORT, 100_100_000))
    m2 = place(w, MAKER_2, perp_limit(SHORT, 100_050_000))
    taker = place(w, TAKER, market_buy(2 * B))
    bot = Filler(context("filler", FILLER, FillerParams()))
    for _ in range(4):
        step(w)
        assert tick(bot, w) == []  # $100.01 ... $100.04: nothing crosses
    step(w)  # slot 1_005: $100.05 reaches maker 2 only
    [result] = tick(bot, w)
    [record] = fill_records(result)
    assert (record.maker, record.maker_order_id, record.taker_order_id) == (
        (MAKER_2.pubkey, 0),
        m2,
        taker,
    )
    assert (record.base_asset_amount, record.quote_asset_amount, record.layer) == (
        B,
        100_050_000,
        "dlob",
    )
    # the filler earns 10% of the 100_050 taker fee; the age-based cap is higher
    # (fourth root of 5 slots = 1.49 -> 14_900)
    assert record.filler == (FILLER.pubkey, 0)
    assert record.filler_reward == 10_005
    for _ in range(5):
        step(w)
        results = tick(bot, w)
    # slot 1_010: $100.10 reaches maker 1 for the second SOL
    [record] = fill_records(results[-1])
    assert (record.maker, record.maker_order_id, record.quote_asset_amount) == (
        (MAKER_1.pubkey, 0),
        m1,
        100_100_000,
    )
    assert user_of(w, TAKER).orders == []
    assert perp_position(w, TAKER).base_asset_amount == 2 * B
    assert perp_position(w, FILLER).quote_asset_amount == 10_005 + 10_010


def test_a_taker_only_the_amm_crosses_is_filled_by_the_amm_after_the_minimum_auction() -> None:
    w = new_world()  # the AMM quotes $100.00
    taker = place(w, TAKER, market_buy())
    bot = Filler(context("filler", FILLER, FillerParams()))
    for _ in range(10):
        step(w)
        assert tick(bot, w) == []  # makers get the first 10 slots
    step(w)
    [result] = tick(bot, w)
    [record] = fill_records(result)
    assert (record.layer, record.taker_order_id, record.base_asset_amount) == ("amm", taker, B)


def test_an_expired_order_is_cancelled_and_the_filler_paid_the_flat_fee() -> None:
    w = new_world()
    order_id = place(w, TAKER, replace(perp_limit(LONG, 99 * P), max_ts=w.ts + 5))
    bot = Filler(context("filler", FILLER, FillerParams()))
    step(w, 20)  # 8 seconds later
    book = book_of_state(w.program.state, w.slot)
    [action] = bot.decide(world_view(w, FILLER, dlob=book))
    assert action.kind == EXPIRE_KIND
    [result] = execute(w, FILLER, [action])
    assert actions(result) == [("expire", order_id, "order_expired")]
    assert user_of(w, TAKER).orders == []
    assert perp_position(w, FILLER).quote_asset_amount == 10_000  # the $0.01 flat fee


def test_a_maker_gone_from_the_chain_is_learned_and_the_taker_filled_with_the_rest() -> None:
    w = new_world(amm_price=101 * P)
    m1 = place(w, MAKER_1, perp_limit(SHORT, 100_050_000))
    m2 = place(w, MAKER_2, perp_limit(SHORT, 100_020_000))
    taker = place(w, TAKER, market_buy(2 * B))
    stale_book = book_of_state(w.program.state, w.slot)
    # maker 2 cancels; the bot's book has not seen the event yet
    w.ok(CancelOrder(MAKER_2.pubkey, 0, m2), signers=(MAKER_2,))
    bot = Filler(context("filler", FILLER, FillerParams()))
    step(w, 5)  # $100.05: both makers cross in the stale book
    [first] = bot.decide(world_view(w, FILLER, dlob=stale_book))
    assert first.instructions == (
        FillPerpOrder(
            FILLER.pubkey,
            0,
            TAKER.pubkey,
            0,
            taker,
            (MakerOrderRef(MAKER_2.pubkey, 0, m2), MakerOrderRef(MAKER_1.pubkey, 0, m1)),
        ),
    )
    [refused] = execute(w, FILLER, [first])
    assert isinstance(refused, Rejected)
    assert (refused.code, refused.field) == (ErrorCode.MakerOrderNotFound, "makers[0]")
    bot.on_outcome(outcome_of(first, refused))
    # the same stale book, the same slot: maker 2 is left out and the fill goes through
    [second] = bot.decide(world_view(w, FILLER, dlob=stale_book, tick=2))
    [result] = execute(w, FILLER, [second])
    [record] = fill_records(result)
    assert (record.maker, record.maker_order_id, record.quote_asset_amount) == (
        (MAKER_1.pubkey, 0),
        m1,
        100_050_000,
    )


def test_a_signed_intent_is_placed_and_filled_through_fill_signed_order() -> None:
    w = new_world(amm_price=101 * P)
    place(w, MAKER_1, perp_limit(SHORT, 100_100_000))
    intent = OrderIntent(TAKER.pubkey, 0, market_buy(), w.slot, b"\x07" * 8)
    signature = intent.sign(TAKER)
    event = intent_delivery(intent, TAKER.pubkey, signature)
    bot = Filler(context("filler", FILLER, FillerParams()))
    step(w, 10)  # ten slots after signing the auction is at $100.10
    book = book_of_state(w.program.state, w.slot)
    book.insert_signed_intent((TAKER.pubkey, 0), intent.uuid, intent_order(intent))
    [action] = bot.decide(world_view(w, FILLER, dlob=book, events=(event,)))
    assert action.kind == FILL_SIGNED_KIND
    [result] = execute(w, FILLER, [action])
    [record] = fill_records(result)
    # 1 SOL at $100.10: taker fee 100_100, the filler 10% of it
    assert (record.quote_asset_amount, record.taker_fee, record.filler_reward) == (
        100_100_000,
        100_100,
        10_010,
    )
    assert record.taker == (TAKER.pubkey, 0)
    # placed and filled: the same intent again (a book that has not caught up, once the
    # node TTL has passed) is spent, and the bot drops it
    bot.on_outcome(outcome_of(action, result))
    step(w, 2)
    [again] = bot.decide(world_view(w, FILLER, dlob=book, tick=2))
    [replayed] = execute(w, FILLER, [again])
    assert isinstance(replayed, Rejected)
    assert replayed.code == ErrorCode.InvalidSignedMsgOrderId
    bot.on_outcome(outcome_of(again, replayed))
    step(w, 2)
    assert bot.decide(world_view(w, FILLER, dlob=book, tick=3)) == []
