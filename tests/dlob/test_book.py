"""Unit tests of the book: exact prices, sizes and results worked out by hand in comments."""

from __future__ import annotations

from typing import Any

import pytest

from dlob import (
    DLOB,
    DuplicateOrder,
    NodeKind,
    SlotInThePast,
    UnbookableOrder,
    UnknownMarket,
    VammLevels,
    amm_can_fill_rule,
    get_vamm_l2_levels,
    is_fallback_available_liquidity_source,
    vamm_bid_ask,
)
from protocol.constants import AMM_RESERVE_PRECISION, BASE_PRECISION, PRICE_PRECISION
from protocol.math.oracle import OracleValidity
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order, UserKey
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

PERP = MarketType.Perp
LONG, SHORT = PositionDirection.Long, PositionDirection.Short
TICK = PRICE_PRECISION // 100  # $0.01
ORACLE = 100 * PRICE_PRECISION  # $100.00
SLOT = 1_000
TS = 500
ALICE: UserKey = (b"\xaa" * 32, 0)
BOB: UserKey = (b"\xbb" * 32, 0)
CAROL: UserKey = (b"\xcc" * 32, 0)
ALICE_SUB: UserKey = (b"\xaa" * 32, 1)


def usd(dollars: str) -> int:
    """``"99.95"`` -> 99_950_000 (PRICE_PRECISION), exactly."""
    whole, _, cents = dollars.partition(".")
    return int(whole) * PRICE_PRECISION + int((cents + "000000")[:6])


def base(units: int) -> int:
    return units * BASE_PRECISION


def order(
    order_id: int,
    direction: PositionDirection,
    size: int = 1,
    *,
    order_type: OrderType = OrderType.Limit,
    slot: int = SLOT - 10,
    **fields: Any,
) -> Order:
    return Order(
        order_id=order_id,
        market_index=0,
        market_type=PERP,
        order_type=order_type,
        direction=direction,
        base_asset_amount=base(size),
        slot=slot,
        **fields,
    )


def book() -> DLOB:
    b = DLOB(SLOT)
    b.add_market(PERP, 0, tick_size=TICK)
    return b


def ids(nodes: Any) -> list[tuple[UserKey, int]]:
    return [(n.user, n.order.order_id) for n in nodes]


# --- identity ------------------------------------------------------------------------------
def test_two_users_with_the_same_order_ids_are_two_orders() -> None:
    # Both peers key their lists by order id alone when unlinking a node, so deleting Alice's
    # order 1 there can drop Bob's order 1 from the list. Ids are per user account.
    b = book()
    b.insert(ALICE, order(1, LONG, price=usd("99.00"), post_only=True))
    b.insert(BOB, order(1, LONG, price=usd("99.50"), post_only=True))
    b.insert(ALICE, order(2, SHORT, price=usd("101.00"), post_only=True))
    b.insert(BOB, order(2, SHORT, price=usd("100.50"), post_only=True))

    assert b.remove(BOB, 1) is not None  # Bob's best bid, also head of the bid list
    assert b.remove(ALICE, 2) is not None

    assert b.get(ALICE, 1) is not None and b.get(BOB, 1) is None
    assert b.get(BOB, 2) is not None and b.get(ALICE, 2) is None
    l3 = b.get_l3(PERP, 0, ORACLE, SLOT)
    assert [(x.user, x.order_id, x.price) for x in l3.bids] == [(ALICE, 1, usd("99.00"))]
    assert [(x.user, x.order_id, x.price) for x in l3.asks] == [(BOB, 2, usd("100.50"))]
    assert b.best_bid(PERP, 0, ORACLE, SLOT) == usd("99.00")
    assert len(b) == 2
    assert b.remove(BOB, 1) is None  # already gone


def test_a_sub_account_is_another_user() -> None:
    b = book()
    b.insert(ALICE, order(7, LONG, price=usd("99.00"), post_only=True))
    b.insert(ALICE_SUB, order(7, LONG, price=usd("98.00"), post_only=True))
    assert b.remove(ALICE_SUB, 7) is not None
    assert b.get(ALICE, 7) is not None


# --- fixed and oracle-pegged merged the right way round ------------------------------------------
def test_best_bid_and_ask_merge_fixed_and_pegged_orders() -> None:
    # bids: fixed $99.90, pegged oracle - $0.05; asks: fixed $100.20, pegged oracle + $0.10.
    # At oracle $100.00: pegged bid $99.95 > fixed $99.90, pegged ask $100.10 < fixed $100.20.
    # Merging the two lists the wrong way round (keeping the *worse* head, as driftpy's
    # comparator does) would answer $99.90 / $100.20.
    b = book()
    b.insert(ALICE, order(1, LONG, price=usd("99.90"), post_only=True))
    b.insert(BOB, order(1, LONG, oracle_price_offset=-usd("0.05"), post_only=True))
    b.insert(ALICE, order(2, SHORT, price=usd("100.20"), post_only=True))
    b.insert(BOB, order(2, SHORT, oracle_price_offset=usd("0.10"), post_only=True))

    assert b.best_bid(PERP, 0, ORACLE, SLOT) == usd("99.95")
    assert b.best_ask(PERP, 0, ORACLE, SLOT) == usd("100.10")
    l2 = b.get_l2(PERP, 0, ORACLE, SLOT, depth=5)
    assert [(x.price, x.size) for x in l2.bids] == [
        (usd("99.95"), base(1)),
        (usd("99.90"), base(1)),
    ]
    assert [(x.price, x.size) for x in l2.asks] == [
        (usd("100.10"), base(1)),
        (usd("100.20"), base(1)),
    ]

    # The oracle falls to $99.80: pegged bid $99.75 < fixed $99.90, pegged ask $99.90; no
    # re-sort happened, the pegged orders just price off the new oracle.
    oracle = usd("99.80")
    assert b.best_bid(PERP, 0, oracle, SLOT) == usd("99.90")
    assert b.best_ask(PERP, 0, oracle, SLOT) == usd("99.90")
    # and the vAMM's quotes take part only when asked for and better
    assert b.best_bid(PERP, 0, oracle, SLOT, vamm_bid=usd("99.85")) == usd("99.90")
    assert b.best_bid(PERP, 0, oracle, SLOT, vamm_bid=usd("99.92")) == usd("99.92")
    assert b.best_ask(PERP, 0, oracle, SLOT, vamm_ask=usd("99.89")) == usd("99.89")


def test_pegged_prices_round_to_the_tick_and_floor_at_one_tick() -> None:
    # oracle $100.003: bid offset -$0.05 -> $99.953 rounds down to $99.95; ask offset +$0.05 ->
    # $100.053 rounds up to $100.06 (standardize_price rounds toward the passive side).
    b = book()
    b.insert(ALICE, order(1, LONG, oracle_price_offset=-usd("0.05"), post_only=True))
    b.insert(BOB, order(1, SHORT, oracle_price_offset=usd("0.05"), post_only=True))
    oracle = usd("100.003")
    assert b.best_bid(PERP, 0, oracle, SLOT) == usd("99.95")
    assert b.best_ask(PERP, 0, oracle, SLOT) == usd("100.06")
    # oracle $0.03 and a -$0.05 offset: -$0.02 is floored at one tick, $0.01
    assert b.best_bid(PERP, 0, usd("0.03"), SLOT) == usd("0.01")


def test_l3_orders_ties_by_slot_then_user_then_id() -> None:
    b = book()
    b.insert(BOB, order(5, LONG, price=usd("99.00"), slot=990, post_only=True))
    b.insert(ALICE, order(9, LONG, price=usd("99.00"), slot=990, post_only=True))
    b.insert(CAROL, order(1, LONG, price=usd("99.00"), slot=980, post_only=True))
    b.insert(ALICE, order(3, LONG, price=usd("99.10"), slot=999, post_only=True))
    l3 = b.get_l3(PERP, 0, ORACLE, SLOT)
    assert [(x.user, x.order_id) for x in l3.bids] == [
        (ALICE, 3),  # best price
        (CAROL, 1),  # older slot
        (ALICE, 9),  # same slot: Alice's key sorts before Bob's
        (BOB, 5),
    ]


# --- updates ------------------------------------------------------------------------------------
def test_partial_fill_shrinks_the_level_and_a_full_fill_removes() -> None:
    b = book()
    b.insert(ALICE, order(1, SHORT, 3, price=usd("100.50"), post_only=True))
    b.insert(BOB, order(1, SHORT, 2, price=usd("100.50"), post_only=True))
    b.insert(CAROL, order(1, SHORT, 4, oracle_price_offset=usd("0.70"), post_only=True))
    b.update_fill(ALICE, 1, base(1))  # 3 - 1 = 2 left at $100.50
    b.update_fill(CAROL, 1, base(3))  # 4 - 3 = 1 left at $100.70
    l2 = b.get_l2(PERP, 0, ORACLE, SLOT)
    assert [(x.price, x.size) for x in l2.asks] == [
        (usd("100.50"), base(4)),
        (usd("100.70"), base(1)),
    ]
    b.update_fill(BOB, 1, base(2))  # filled: gone
    b.update_fill(CAROL, 1, base(3))  # unchanged amount: no-op
    assert b.get(BOB, 1) is None
    l2 = b.get_l2(PERP, 0, ORACLE, SLOT)
    assert [(x.price, x.size) for x in l2.asks] == [
        (usd("100.50"), base(2)),
        (usd("100.70"), base(1)),
    ]
    b.update_fill(BOB, 1, base(1))  # unknown order: ignored


def test_a_limit_order_moves_from_taking_to_resting_when_its_auction_ends() -> None:
    # A bid placed at slot 1000 with a 5-slot auction from $99.00 to $100.00, limit $100.00.
    b = book()
    node = b.insert(
        ALICE,
        order(
            1,
            LONG,
            slot=SLOT,
            price=usd("100.00"),
            auction_duration=5,
            auction_start_price=usd("99.00"),
            auction_end_price=usd("100.00"),
        ),
    )
    assert node.kind is NodeKind.TakingLimit
    assert b.get_l3(PERP, 0, ORACLE, SLOT).bids == ()
    # slot 1002: $99.00 + $1.00 * 2 / 5 = $99.40
    jit = b.find_jit_auction_nodes(PERP, 0, ORACLE, 1002)
    assert [(j.node, j.auction_price) for j in jit] == [(node, usd("99.40"))]
    # slot 1005: the end price, still an auction price (complete only after 5 slots)
    jit = b.find_jit_auction_nodes(PERP, 0, ORACLE, 1005)
    assert [j.auction_price for j in jit] == [usd("100.00")]
    assert b.get_l3(PERP, 0, ORACLE, 1005).bids == ()
    # slot 1006: resting at its limit price, seen by a query before the book moves...
    assert [x.price for x in b.get_l3(PERP, 0, ORACLE, 1006).bids] == [usd("100.00")]
    assert b.best_bid(PERP, 0, ORACLE, 1006) == usd("100.00")
    assert b.find_jit_auction_nodes(PERP, 0, ORACLE, 1006) == []
    assert node.kind is NodeKind.TakingLimit  # queries do not move it
    # ...and after it
    b.advance_slot(1006)
    assert b.get(ALICE, 1) is node
    assert node.kind in {NodeKind.RestingLimit}
    assert [x.price for x in b.get_l3(PERP, 0, ORACLE, 1006).bids] == [usd("100.00")]
    l2 = b.get_l2(PERP, 0, ORACLE, 1006)
    assert [(x.price, x.size) for x in l2.bids] == [(usd("100.00"), base(1))]


def test_a_trigger_order_replaced_by_its_triggered_self_becomes_a_taker() -> None:
    b = book()
    b.insert(
        ALICE,
        order(
            4,
            SHORT,
            order_type=OrderType.TriggerMarket,
            trigger_price=usd("95.00"),
            trigger_condition=OrderTriggerCondition.Below,
        ),
    )
    assert ids(b.find_nodes_to_trigger(PERP, 0, usd("95.00"))) == []  # strictly below
    fired = b.find_nodes_to_trigger(PERP, 0, usd("94.99"))
    assert ids(fired) == [(ALICE, 4)]
    triggered = fired[0].order.clone()
    triggered.trigger_condition = OrderTriggerCondition.TriggeredBelow
    triggered.slot = SLOT
    node = b.replace_order(ALICE, triggered)
    assert node.kind is NodeKind.Market
    assert b.find_nodes_to_trigger(PERP, 0, usd("90.00")) == []


def test_trigger_above_and_below_fire_in_the_order_the_oracle_reaches_them() -> None:
    b = book()
    for oid, price in ((1, "101.00"), (2, "100.50"), (3, "102.00")):
        b.insert(
            ALICE,
            order(
                oid,
                LONG,
                order_type=OrderType.TriggerMarket,
                trigger_price=usd(price),
                trigger_condition=OrderTriggerCondition.Above,
            ),
        )
    for oid, price in ((4, "99.00"), (5, "99.50")):
        b.insert(
            BOB,
            order(
                oid,
                SHORT,
                order_type=OrderType.TriggerLimit,
                price=usd("98.00"),
                trigger_price=usd(price),
                trigger_condition=OrderTriggerCondition.Below,
            ),
        )
    assert ids(b.find_nodes_to_trigger(PERP, 0, usd("101.50"))) == [(ALICE, 2), (ALICE, 1)]
    assert ids(b.find_nodes_to_trigger(PERP, 0, usd("98.50"))) == [(BOB, 5), (BOB, 4)]
    assert b.find_nodes_to_trigger(PERP, 0, usd("100.00")) == []
    # untriggered orders are not part of the book's sides
    assert b.get_l3(PERP, 0, ORACLE, SLOT).asks == ()


# --- filling --------------------------------------------------------------------------------------
def test_a_market_bid_takes_the_best_asks_up_to_its_size_skipping_its_own() -> None:
    b = book()
    b.insert(ALICE, order(1, SHORT, 2, price=usd("100.10"), post_only=True))
    b.insert(CAROL, order(1, SHORT, 1, price=usd("100.05"), post_only=True))  # taker's own
    b.insert(BOB, order(1, SHORT, 1, oracle_price_offset=usd("0.20"), post_only=True))
    b.insert(BOB, order(2, SHORT, 5, price=usd("100.60"), post_only=True))
    taker = b.insert(
        CAROL,
        order(2, LONG, 4, order_type=OrderType.Market, price=usd("100.50"), slot=SLOT - 50),
    )
    fills = b.find_nodes_to_fill(PERP, 0, ORACLE, SLOT, TS)
    # 4 to buy up to $100.50: Carol's own $100.05 is skipped, Alice 2 @ $100.10, Bob 1 @
    # $100.20 (pegged); 1 left but the next ask ($100.60) is beyond the limit.
    assert len(fills) == 1
    assert fills[0].node is taker
    assert ids(fills[0].makers) == [(ALICE, 1), (BOB, 1)]
    assert not fills[0].amm and not fills[0].expired

    # with the vAMM asking $100.40 and no minimum auction, the AMM can take the rest
    fills = b.find_nodes_to_fill(
        PERP, 0, ORACLE, SLOT, TS, fallback_bid=usd("99.60"), fallback_ask=usd("100.40")
    )
    assert [(f.node, ids(f.makers), f.amm) for f in fills] == [
        (taker, [(ALICE, 1), (BOB, 1)], True)
    ]
    # a 60-slot minimum auction keeps the AMM out for an order 50 slots old
    fills = b.find_nodes_to_fill(
        PERP,
        0,
        ORACLE,
        SLOT,
        TS,
        fallback_bid=usd("99.60"),
        fallback_ask=usd("100.40"),
        min_auction_duration=60,
    )
    assert [f.amm for f in fills] == [False]
    # the queries filled nothing
    alice = b.get(ALICE, 1)
    assert alice is not None and alice.order.base_asset_amount_filled == 0


def test_makers_at_one_price_are_taken_oldest_first_across_pegged_offsets() -> None:
    # Oracle $100.003, tick $0.01. Bob asks at oracle + $0.005 -> $100.008 -> $100.01 (slot 990);
    # Alice at oracle + $0.002 -> $100.005 -> $100.01 (slot 995). Same price; the offset
    # order (Alice's is smaller) must not decide: Bob is older and goes first.
    b = book()
    b.insert(ALICE, order(1, SHORT, 1, oracle_price_offset=usd("0.002"), slot=995, post_only=True))
    b.insert(BOB, order(1, SHORT, 1, oracle_price_offset=usd("0.005"), slot=990, post_only=True))
    b.insert(CAROL, order(1, LONG, 1, order_type=OrderType.Market, price=usd("100.01")))
    fills = b.find_nodes_to_fill(PERP, 0, usd("100.003"), SLOT, TS)
    assert [ids(f.makers) for f in fills] == [[(BOB, 1)]]
    l3 = b.get_l3(PERP, 0, usd("100.003"), SLOT)
    assert [(x.user, x.price) for x in l3.asks] == [(BOB, usd("100.01")), (ALICE, usd("100.01"))]
    # the same with a worse pegged ask behind them (the tied pair is then not the last run)
    b.insert(ALICE_SUB, order(1, SHORT, 1, oracle_price_offset=usd("0.50"), post_only=True))
    fills = b.find_nodes_to_fill(PERP, 0, usd("100.003"), SLOT, TS)
    assert [ids(f.makers) for f in fills] == [[(BOB, 1)]]


def test_resting_orders_that_cross_match_with_the_older_as_maker() -> None:
    # A pegged bid at oracle + $0.30 rests (slot 990); the oracle rises so that it crosses a
    # fixed ask at $100.20 (slot 980). Neither is post-only: the one whose auction ended first
    # (slot + duration: 980 < 990) is the maker.
    b = book()
    bid = b.insert(ALICE, order(1, LONG, 2, oracle_price_offset=usd("0.30"), slot=990))
    ask = b.insert(BOB, order(1, SHORT, 1, price=usd("100.20"), slot=980))
    assert b.find_crossing_resting_limit_orders(PERP, 0, usd("99.80"), SLOT, TS) == []  # $100.10
    fills = b.find_crossing_resting_limit_orders(PERP, 0, ORACLE, SLOT, TS)  # $100.30 >= $100.20
    assert [(f.node, f.makers) for f in fills] == [(bid, (ask,))]
    # a post-only bid is always the maker
    b.remove(ALICE, 1)
    bid = b.insert(ALICE, order(2, LONG, 2, oracle_price_offset=usd("0.30"), post_only=True))
    fills = b.find_crossing_resting_limit_orders(PERP, 0, ORACLE, SLOT, TS)
    assert [(f.node, f.makers) for f in fills] == [(ask, (bid,))]
    # two non-post-only orders whose auctions ended in the same slot: either may make; the
    # book names the ask as maker
    b.remove(ALICE, 2)
    bid = b.insert(ALICE, order(4, LONG, 2, oracle_price_offset=usd("0.30"), slot=980))
    fills = b.find_crossing_resting_limit_orders(PERP, 0, ORACLE, SLOT, TS)
    assert [(f.node, f.makers) for f in fills] == [(bid, (ask,))]
    # and the same account never matches itself (Alice's bid 4 against her own ask)
    b.remove(BOB, 1)
    b.insert(ALICE, order(3, SHORT, 1, price=usd("100.20")))
    assert b.find_crossing_resting_limit_orders(PERP, 0, ORACLE, SLOT, TS) == []
    assert b.best_bid(PERP, 0, ORACLE, SLOT) == usd("100.30")  # they do cross


def test_resting_orders_crossing_the_vamm_and_expired_orders() -> None:
    b = book()
    b.insert(ALICE, order(1, LONG, price=usd("100.45")))  # crosses a $100.40 vAMM ask
    b.insert(ALICE, order(2, LONG, price=usd("100.30")))
    b.insert(BOB, order(3, LONG, price=usd("100.42"), post_only=True))  # crosses, never takes
    b.insert(BOB, order(1, SHORT, price=usd("101.00"), max_ts=TS - 1))  # expired at TS
    b.insert(BOB, order(2, SHORT, price=usd("101.50"), max_ts=TS))  # expires after TS
    fills = b.find_nodes_to_fill(
        PERP, 0, ORACLE, SLOT, TS, fallback_bid=usd("99.60"), fallback_ask=usd("100.40")
    )
    assert [(ids([f.node]), f.makers, f.amm, f.expired) for f in fills] == [
        ([(ALICE, 1)], (), True, False),
        ([(BOB, 1)], (), False, True),
    ]
    assert ids(b.find_expired_nodes(PERP, 0, TS + 1)) == [(BOB, 1), (BOB, 2)]


def test_nothing_crossing_finds_nothing() -> None:
    b = book()
    b.insert(ALICE, order(1, LONG, price=usd("99.00"), post_only=True))
    b.insert(BOB, order(1, SHORT, price=usd("101.00"), post_only=True))
    b.insert(CAROL, order(1, LONG, order_type=OrderType.Market, price=usd("100.50")))
    assert b.find_nodes_to_fill(PERP, 0, ORACLE, SLOT, TS) == []


def test_queries_touch_only_the_top_of_a_large_book(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 pegged orders per side, none crossing: every price the book computes goes through
    # get_limit_price, so counting its calls counts the orders a query looks at.
    import dlob.book

    b = book()
    for i in range(1, 2_001):
        b.insert(ALICE, order(i, LONG, oracle_price_offset=-i * TICK, post_only=True))
        b.insert(BOB, order(i, SHORT, oracle_price_offset=i * TICK, post_only=True))
    taker = b.insert(CAROL, order(1, LONG, 3, order_type=OrderType.Market, price=usd("100.02")))
    calls = 0
    real = dlob.book.get_limit_price

    def counting(*args: Any, **kwargs: Any) -> int | None:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(dlob.book, "get_limit_price", counting)
    assert b.best_bid(PERP, 0, ORACLE, SLOT) == usd("99.99")
    assert calls == 1
    calls = 0
    # the taker crosses the asks at $100.01 and $100.02 (1 each) and stops at $100.03
    fills = b.find_nodes_to_fill(PERP, 0, ORACLE, SLOT, TS)
    assert [(f.node, ids(f.makers)) for f in fills] == [(taker, [(BOB, 1), (BOB, 2)])]
    assert calls <= 10, calls  # two tops, the taker, the asks walked (one lookahead)
    calls = 0
    b.remove(CAROL, 1)
    assert b.find_nodes_to_fill(PERP, 0, ORACLE, SLOT, TS) == []
    assert calls <= 4, calls  # the top of each side, for each phase that looks
    calls = 0
    l2 = b.get_l2(PERP, 0, ORACLE, SLOT, depth=20)
    assert len(l2.bids) == len(l2.asks) == 20
    assert calls <= 2 * 21, calls  # one per offset level through the 21st price per side


def test_signed_intents_are_takers_keyed_by_uuid() -> None:
    b = book()
    b.insert(ALICE, order(1, SHORT, 1, price=usd("100.10"), post_only=True))
    uuid = b"\x01" * 8
    intent = order(
        1,  # the same id as an on-chain order of the same user: no collision
        LONG,
        1,
        order_type=OrderType.Market,
        slot=SLOT,
        price=usd("100.20"),
        auction_duration=10,
        auction_start_price=usd("100.00"),
        auction_end_price=usd("100.20"),
        bit_flags=int(OrderBitFlag.SignedMessage),
    )
    node = b.insert_signed_intent(BOB, uuid, intent)
    b.insert(BOB, order(1, LONG, price=usd("99.00"), post_only=True))
    # slot 1005: $100.00 + $0.20 * 5 / 10 = $100.10, reaching Alice's ask
    jit = b.find_jit_auction_nodes(PERP, 0, ORACLE, 1005)
    assert [(j.node, j.auction_price) for j in jit] == [(node, usd("100.10"))]
    fills = b.find_nodes_to_fill(PERP, 0, ORACLE, 1005, TS)
    assert [(f.node, ids(f.makers)) for f in fills] == [(node, [(ALICE, 1)])]
    assert b.get_signed_intent(BOB, uuid) is node
    assert b.remove_signed_intent(BOB, uuid) is intent
    assert b.remove_signed_intent(BOB, uuid) is None
    assert b.get(BOB, 1) is not None


# --- L2 with the vAMM -----------------------------------------------------------------------------
def test_l2_merges_vamm_levels_by_source() -> None:
    b = book()
    b.insert(ALICE, order(1, LONG, 2, price=usd("99.90"), post_only=True))
    b.insert(BOB, order(1, SHORT, 3, price=usd("100.10"), post_only=True))
    vamm = VammLevels(
        bids=((usd("99.90"), base(5)), (usd("99.80"), base(5))),
        asks=((usd("100.05"), base(5)),),
    )
    l2 = b.get_l2(PERP, 0, ORACLE, SLOT, depth=2, vamm=vamm)
    assert [(x.price, x.size, x.sources) for x in l2.bids] == [
        (usd("99.90"), base(7), (("dlob", base(2)), ("vamm", base(5)))),
        (usd("99.80"), base(5), (("vamm", base(5)),)),
    ]
    assert [(x.price, x.size, x.sources) for x in l2.asks] == [
        (usd("100.05"), base(5), (("vamm", base(5)),)),
        (usd("100.10"), base(3), (("dlob", base(3)),)),
    ]
    assert b.get_l2(PERP, 0, ORACLE, SLOT, depth=0).bids == ()


def test_vamm_quotes_and_levels_from_reserves() -> None:
    # Reserves 1,000 / 1,000 base, sqrt_k 1,000, peg $100: reserve price $100.00. Spreads of
    # 0.1% each: bid $100 * (1 - 0.001) = $99.90, ask $100.10.
    reserve = 1_000 * AMM_RESERVE_PRECISION
    amm = AMM(
        oracle="SOL",
        base_asset_reserve=reserve,
        quote_asset_reserve=reserve,
        sqrt_k=reserve,
        peg_multiplier=100 * PRICE_PRECISION,
        min_base_asset_reserve=900 * AMM_RESERVE_PRECISION,
        max_base_asset_reserve=1_100 * AMM_RESERVE_PRECISION,
        long_spread=1_000,
        short_spread=1_000,
        order_step_size=BASE_PRECISION // 1000,
        order_tick_size=PRICE_PRECISION // 1000,
    )
    assert vamm_bid_ask(amm) == (usd("99.90"), usd("100.10"))
    # 100 base of room each way, 2 levels of 50. Asks (base removed), k = 1e24:
    #   950e9 base -> quote 1e24 // 950e9 = 1_052_631_578_947; change + 1 = 52_631_578_948;
    #   quote 52_631_578_948 * 1e8 // 1e9 + 1 = 5_263_157_895; avg ceil(...e9 / 50e9) =
    #   105_263_158 -> up to the $0.001 tick: $105.264
    #   900e9 -> 1_111_111_111_111; change + 1 = 58_479_532_165; quote 5_847_953_217;
    #   avg 116_959_065 -> $116.960
    # Bids (base added):
    #   1050e9 -> 952_380_952_380; change 47_619_047_620; quote 4_761_904_762;
    #   avg 95_238_095 -> down to $95.238
    #   1100e9 -> 909_090_909_090; change 43_290_043_290; quote 4_329_004_329;
    #   avg 86_580_086 -> $86.580
    levels = get_vamm_l2_levels(amm, 2)
    assert levels.asks == ((usd("105.264"), base(50)), (usd("116.960"), base(50)))
    assert levels.bids == ((usd("95.238"), base(50)), (usd("86.580"), base(50)))
    assert get_vamm_l2_levels(amm, 0) == VammLevels(bids=(), asks=())


# --- refusals -------------------------------------------------------------------------------------
def test_refusals_carry_their_fields() -> None:
    b = book()
    b.insert(ALICE, order(1, LONG, price=usd("99.00"), post_only=True))
    with pytest.raises(DuplicateOrder) as dup:
        b.insert(ALICE, order(1, SHORT, price=usd("101.00"), post_only=True))
    assert (dup.value.user, dup.value.order_id) == (ALICE, 1)
    spot = order(2, LONG, price=usd("99.00"))
    spot.market_type = MarketType.Spot
    with pytest.raises(UnknownMarket) as unknown:
        b.insert(ALICE, spot)
    assert (unknown.value.market_type, unknown.value.market_index) == (MarketType.Spot, 0)
    with pytest.raises(UnknownMarket):
        b.best_bid(PERP, 3, ORACLE, SLOT)
    cases = [
        order(3, LONG, price=usd("99.00"), status=OrderStatus.Canceled),
        order(4, LONG, price=usd("99.00"), base_asset_amount_filled=base(1)),
        order(5, LONG, price=usd("99.00"), post_only=True, auction_duration=3),
        order(6, LONG),  # a limit order without price or offset
    ]
    for bad in cases:
        with pytest.raises(UnbookableOrder) as refused:
            b.insert(ALICE, bad)
        assert refused.value.order_id == bad.order_id
    with pytest.raises(UnbookableOrder):
        b.insert_signed_intent(BOB, b"\x02" * 8, order(7, LONG, price=usd("99"), post_only=True))
    with pytest.raises(UnbookableOrder):
        b.update_fill(ALICE, 1, -1)
    with pytest.raises(ValueError, match="tick_size"):
        b.add_market(PERP, 1, tick_size=0)
    assert len(b) == 1


def test_slots_only_move_forward() -> None:
    b = book()
    b.advance_slot(SLOT + 5)
    with pytest.raises(SlotInThePast) as past:
        b.advance_slot(SLOT)
    assert (past.value.slot, past.value.book_slot) == (SLOT, SLOT + 5)
    with pytest.raises(SlotInThePast):
        b.get_l2(PERP, 0, ORACLE, SLOT)
    # an order from a later slot than the book's moves the book up to it
    b.insert(ALICE, order(1, LONG, price=usd("99.00"), post_only=True, slot=SLOT + 9))
    assert b.slot == SLOT + 9
    assert b.markets() == [(PERP, 0)]


def test_lookups_and_bookkeeping() -> None:
    b = book()
    b.add_market(PERP, 0, tick_size=TICK * 5)  # already followed: kept as it was
    resting = b.insert(ALICE, order(1, LONG, price=usd("99.99"), post_only=True))
    assert resting.order_id == 1 and resting.direction == LONG and not resting.is_signed_intent
    # a limit order in its auction, cancelled before it would rest: the slot advance skips it
    b.insert(
        BOB,
        order(
            1,
            SHORT,
            slot=SLOT,
            price=usd("100.50"),
            auction_duration=2,
            auction_start_price=usd("101.00"),
            auction_end_price=usd("100.50"),
        ),
    )
    assert b.remove(BOB, 1) is not None
    b.advance_slot(SLOT + 3)
    assert b.get_l3(PERP, 0, ORACLE, SLOT + 3).asks == ()
    # an intent signed in a later slot than the book's moves the book up
    uuid = b"\x07" * 8
    intent = b.insert_signed_intent(
        CAROL, uuid, order(0, SHORT, order_type=OrderType.Market, slot=SLOT + 7)
    )
    assert intent.is_signed_intent and b.slot == SLOT + 7
    with pytest.raises(DuplicateOrder):
        b.insert_signed_intent(CAROL, uuid, order(0, SHORT, order_type=OrderType.Market))
    assert {(n.user, n.uuid) for n in b.nodes()} == {(ALICE, None), (CAROL, uuid)}
    assert b.best_bid(PERP, 0, ORACLE, SLOT + 7) == usd("99.99")  # tick unchanged


def test_vamm_asks_start_from_the_ask_reserves() -> None:
    # The AMM of the levels test, but its ask reserves already one 50-base step up the curve
    # (950e9 base, 1_052_631_578_947 quote). Its asks then start where the plain curve's second
    # level was: $116.960; the next step, 900e9 -> 850e9 base: quote 1e24 // 850e9 =
    # 1_176_470_588_235; change + 1 = 65_359_477_125; quote 6_535_947_713; avg ceil(...e9 /
    # 50e9) = 130_718_955 -> $130.719. The bid side has no spread reserves: the plain curve.
    reserve = 1_000 * AMM_RESERVE_PRECISION
    amm = AMM(
        oracle="SOL",
        base_asset_reserve=reserve,
        quote_asset_reserve=reserve,
        sqrt_k=reserve,
        peg_multiplier=100 * PRICE_PRECISION,
        min_base_asset_reserve=900 * AMM_RESERVE_PRECISION,
        max_base_asset_reserve=1_100 * AMM_RESERVE_PRECISION,
        ask_base_asset_reserve=950 * AMM_RESERVE_PRECISION,
        ask_quote_asset_reserve=1_052_631_578_947,
        order_step_size=BASE_PRECISION // 1000,
        order_tick_size=PRICE_PRECISION // 1000,
    )
    levels = get_vamm_l2_levels(amm, 2)
    assert levels.asks == ((usd("116.960"), base(50)), (usd("130.719"), base(50)))
    assert levels.bids == ((usd("95.238"), base(50)), (usd("86.580"), base(50)))


def test_the_protocols_amm_rule_decides_when_given() -> None:
    # The protocol's amm_can_fill_order: with a valid oracle read 2 slots late, an order from
    # before that delay is a low-risk AMM fill; a brand-new one is not (and this AMM, holding
    # no position, does not want to JIT-make it either).
    market = PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(oracle="SOL"))
    reading = OraclePriceData(price=ORACLE, confidence=0, delay=2)
    rule = amm_can_fill_rule(market, SLOT, OracleValidity.Valid, reading)
    b = book()
    old = b.insert(ALICE, order(1, LONG, order_type=OrderType.Market, slot=SLOT - 10))
    new = b.insert(BOB, order(1, LONG, order_type=OrderType.Market, slot=SLOT))
    fills = b.find_nodes_to_fill(
        PERP, 0, ORACLE, SLOT, TS, fallback_ask=usd("100.10"), amm_can_fill=rule
    )
    assert [(f.node, f.amm) for f in fills] == [(old, True)]
    # the keepers' rule with a 5-slot minimum auction agrees here; with none, both may go
    fills = b.find_nodes_to_fill(
        PERP, 0, ORACLE, SLOT, TS, fallback_ask=usd("100.10"), min_auction_duration=5
    )
    assert [(f.node, f.amm) for f in fills] == [(old, True)]
    fills = b.find_nodes_to_fill(PERP, 0, ORACLE, SLOT, TS, fallback_ask=usd("100.10"))
    assert [(f.node, f.amm) for f in fills] == [(old, True), (new, True)]
    # a safe trigger order may meet the AMM at once under the keepers' rule
    safe = order(2, LONG, slot=SLOT, bit_flags=int(OrderBitFlag.SafeTriggerOrder))
    assert is_fallback_available_liquidity_source(safe, 5, SLOT)
    assert not is_fallback_available_liquidity_source(new.order, 5, SLOT)


def test_two_post_only_orders_that_cross_do_not_match() -> None:
    # Pegged post-only orders can end up crossing when the oracle moves; neither may take.
    b = book()
    b.insert(ALICE, order(1, LONG, oracle_price_offset=usd("0.30"), post_only=True))
    b.insert(BOB, order(1, SHORT, price=usd("100.20"), post_only=True))
    assert b.best_bid(PERP, 0, ORACLE, SLOT) == usd("100.30")
    assert b.find_crossing_resting_limit_orders(PERP, 0, ORACLE, SLOT, TS) == []
