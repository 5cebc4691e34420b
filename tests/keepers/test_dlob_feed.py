"""The DLOB feed: sequencing, gap and reconnect resyncs, intents, slots and oracles.

Unit tests run over the in-process bus; the integration tests run over a real Mosquitto (the
``mosquitto`` fixture) with a publisher that keeps its own authoritative book
(:class:`benchmarks.dlob_stream.OrderStream`) and serves the node's snapshot endpoint from it
over HTTP. "Equal" books are compared order by order (every field of every order) and by L3
per market, against a book built afresh from the publisher's orders.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.dlob_stream import (
    ORACLE_PRICE,
    SnapshotService,
    StreamEvent,
    book_orders,
    publish,
    stream_orders,
)
from benchmarks.dlob_stream import OrderStream as Stream
from dlob import NodeKind
from keepers.bus import BusClient, make_transport, topics
from keepers.bus.brokers import RunningBroker
from keepers.bus.client import Backoff
from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.bus.inprocess import InProcessBroker
from keepers.bus.schemas import (
    DecodeReason,
    IntentMessage,
    OracleMessage,
    OrderAction,
    OrderEvent,
    SlotMessage,
    decode,
    encode,
)
from keepers.dlob_feed import (
    INTENT_SLOT_LEAD,
    DlobFeed,
    FeedFailed,
    FollowedMarket,
    HttpSnapshotLoader,
    IntentRejection,
    SnapshotUnavailable,
    intent_order,
    parse_orders_snapshot,
)
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.keys import Keypair
from protocol.signed_intent import OrderIntent
from protocol.state.order_params import OrderParams
from protocol.state.user import Order
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from tests.keepers.dlob_helpers import PERP0, SPOT0, StreamLoader, followed, until

CLUSTER = "t"
FAST = Backoff(initial=0.001, maximum=0.005)
_ids = itertools.count()


class Rig:
    """A feed over the in-process bus, with a publisher client on the same broker."""

    def __init__(self, stream: Stream, loader: StreamLoader, **feed_options: object) -> None:
        self.stream = stream
        self.loader = loader
        self.broker = InProcessBroker()
        self.client_id = f"feed-{next(_ids)}"
        self.bus = BusClient(
            self.broker.transport(self.client_id),
            deadletter_topic=topics.deadletter(CLUSTER),
            backoff=FAST,
        )
        self.feed = DlobFeed(
            self.bus,
            loader,
            followed(*stream.markets),
            cluster=CLUSTER,
            backoff=FAST,
            **feed_options,  # type: ignore[arg-type]
        )
        self.publisher = self.broker.transport(f"pub-{next(_ids)}")

    async def start(self) -> None:
        await self.publisher.connect()
        await self.feed.start()
        await self.bus.start()

    async def close(self) -> None:
        await self.feed.close()
        await self.bus.close()
        await self.publisher.close()

    async def send(self, events: list[StreamEvent]) -> None:
        await publish(self.publisher, [(e.topic, e.payload) for e in events])

    async def send_message(self, topic: str, payload: bytes) -> None:
        await self.publisher.publish(topic, payload, 1)

    async def caught_up(self, seconds: float = 5.0) -> None:
        """Until the feed is in sync at the stream's market_seq in every market."""
        feed, stream = self.feed, self.stream
        await until(
            lambda: (
                feed.is_synced_all
                and all(feed.market_seq(*m) == stream.market_seq[m] for m in stream.markets)
            ),
            seconds,
        )


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    stream = Stream([PERP0, SPOT0], CLUSTER, seed=3)
    made = Rig(stream, StreamLoader(stream))
    await made.start()
    try:
        yield made
    finally:
        await made.close()


def assert_same_book(feed: DlobFeed, stream: Stream) -> None:
    """Every order equal field by field, and L3 per market equal to a fresh book's."""
    assert book_orders(feed.dlob) == stream_orders(stream)
    reference = stream.reference_book()
    slot = max(feed.book.slot, reference.slot)
    for market in stream.markets:
        ours = feed.book.get_l3(*market, ORACLE_PRICE, slot)
        theirs = reference.get_l3(*market, ORACLE_PRICE, slot)
        assert ours.bids == theirs.bids
        assert ours.asks == theirs.asks


# --- sequencing ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_first_connect_loads_a_snapshot_then_applies_events_in_order(rig: Rig) -> None:
    before = rig.stream.events(300)  # committed before the feed exists: in its snapshot
    assert before
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
    assert rig.feed.stats.snapshots_applied == 2  # one per market
    assert rig.feed.is_ready
    after = rig.stream.events(500)
    await rig.send(after)
    await rig.caught_up()
    assert rig.feed.stats.applied == 500
    assert rig.feed.stats.duplicates == 0
    assert rig.feed.stats.gaps == 0
    assert_same_book(rig.feed, rig.stream)


@pytest.mark.asyncio
async def test_duplicates_are_ignored(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
    events = rig.stream.events(200)
    await rig.send(events)
    await rig.send(events[150:])  # QoS 1 redelivery: 50 again
    await rig.send(rig.stream.events(1))
    await rig.caught_up()
    assert rig.feed.stats.duplicates == 50
    assert rig.feed.stats.applied == 201
    assert rig.feed.stats.resyncs == 2  # the first snapshot of each market only
    assert_same_book(rig.feed, rig.stream)


@pytest.mark.asyncio
async def test_a_gap_resyncs_and_applies_only_buffered_events_past_the_snapshot() -> None:
    stream = Stream([PERP0], CLUSTER, seed=5)
    hold = asyncio.Event()
    loader = StreamLoader(stream)
    rig = Rig(stream, loader)
    await rig.start()
    try:
        async with asyncio.timeout(5):
            await rig.feed.wait_synced()
        await rig.send(stream.events(10))  # market_seq 1..10, applied
        await until(lambda: rig.feed.market_seq(*PERP0) == 10)
        stream.next_event()  # 11: committed, never published
        loader.hold = hold
        await rig.send([stream.next_event()])  # 12: a gap; the snapshot's cut is taken at 12
        await until(lambda: loader.calls == 2)
        assert loader.cuts[-1] == 12
        assert not rig.feed.is_synced(*PERP0)
        await rig.send(stream.events(2))  # 13, 14: buffered while the snapshot is held
        await until(lambda: rig.feed.buffered == 3)
        assert rig.feed.market_seq(*PERP0) == 10
        hold.set()
        await rig.caught_up()
        # 12 is in the snapshot (a duplicate when replayed); 13 and 14 apply after it
        assert rig.feed.stats.gaps == 1
        assert rig.feed.stats.duplicates == 1
        assert rig.feed.stats.applied == 10 + 2
        assert rig.feed.stats.resyncs == 2
        assert rig.feed.market_seq(*PERP0) == 14
        assert_same_book(rig.feed, stream)
    finally:
        await rig.close()


@pytest.mark.asyncio
async def test_reconnect_resyncs_every_market_and_recovers_what_was_missed(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
    await rig.send(rig.stream.events(100))
    await rig.caught_up()
    resyncs = rig.feed.stats.resyncs
    rig.broker.accepting = False
    rig.broker.drop(rig.client_id)
    await rig.send(rig.stream.events(150))  # published while the feed is away: lost to it
    rig.broker.accepting = True
    await until(lambda: rig.bus.generation == 2)
    await rig.send(rig.stream.events(50))
    await rig.caught_up()
    assert rig.feed.stats.resyncs == resyncs + 2
    assert rig.feed.stats.gaps == 0  # the reconnect resynced before any gap was seen
    assert_same_book(rig.feed, rig.stream)


@pytest.mark.asyncio
async def test_a_snapshot_requested_before_a_reconnect_is_discarded() -> None:
    stream = Stream([PERP0], CLUSTER, seed=7)
    rig = Rig(stream, StreamLoader(stream))
    await rig.start()
    try:
        async with asyncio.timeout(5):
            await rig.feed.wait_synced()
        await rig.send(stream.events(40))
        await rig.caught_up()
        hold = asyncio.Event()
        rig.loader.hold = hold
        stream.next_event()  # a gap: the resync's snapshot is held (cut at the gap)
        await rig.send([stream.next_event()])
        await until(lambda: rig.loader.calls == 2)
        rig.broker.drop(rig.client_id)
        await rig.send(stream.events(30))  # lost: the held snapshot does not have them
        rig.loader.hold = None  # the reconnect's snapshot answers at once
        await until(lambda: rig.loader.calls == 3)
        await until(lambda: rig.feed.is_synced(*PERP0))
        hold.set()  # the stale answer arrives last and must not be applied
        await asyncio.sleep(0.02)
        await rig.send(stream.events(5))
        await rig.caught_up()
        assert rig.feed.stats.snapshots_applied == 2
        assert_same_book(rig.feed, stream)
    finally:
        await rig.close()


@pytest.mark.asyncio
async def test_a_full_resync_buffer_is_dropped_for_a_fresh_snapshot() -> None:
    stream = Stream([PERP0], CLUSTER, seed=11)
    rig = Rig(stream, StreamLoader(stream), max_buffer=5)
    await rig.start()
    try:
        async with asyncio.timeout(5):
            await rig.feed.wait_synced()
        hold = asyncio.Event()
        rig.loader.hold = hold
        stream.next_event()
        await rig.send([stream.next_event()])  # gap: snapshot held, cut at market_seq 2
        await until(lambda: rig.loader.calls == 2)
        await rig.send(stream.events(5))  # 1 + 5 buffered: past 5, dropped; a new request
        await until(lambda: rig.loader.calls == 3)
        assert rig.feed.stats.buffer_overflows == 1
        assert rig.loader.cuts[-1] == 7
        hold.set()
        await rig.send(stream.events(3))
        await rig.caught_up()
        assert rig.feed.stats.snapshots_applied == 2
        assert_same_book(rig.feed, stream)
    finally:
        await rig.close()


@pytest.mark.asyncio
async def test_failed_snapshot_loads_are_retried() -> None:
    stream = Stream([PERP0], CLUSTER, seed=13)
    stream.events(20)
    rig = Rig(stream, StreamLoader(stream, fail_next=3))
    await rig.start()
    try:
        async with asyncio.timeout(5):
            await rig.feed.wait_synced()
        assert rig.feed.stats.snapshot_failures == 3
        assert rig.loader.calls == 4
        assert_same_book(rig.feed, stream)
    finally:
        await rig.close()


@pytest.mark.asyncio
async def test_malformed_payloads_are_counted_and_dead_lettered_without_stopping(
    rig: Rig,
) -> None:
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
    letters = rig.broker.transport("letters")
    await letters.connect()
    await letters.subscribe([topics.deadletter(CLUSTER)], 1)
    orders_topic = topics.orders(CLUSTER, *PERP0)
    await rig.send_message(orders_topic, b"{not json")
    await rig.send_message(orders_topic, encode(SlotMessage(slot=5, ts=5)))  # wrong type
    await rig.send(rig.stream.events(50))
    await rig.caught_up()
    assert rig.feed.malformed == 2
    assert rig.bus.stats.malformed[DecodeReason.MALFORMED] == 1
    assert rig.bus.stats.malformed[DecodeReason.TOPIC_MISMATCH] == 1
    await until(lambda: rig.bus.stats.deadlettered == 2)
    received = []
    async with asyncio.timeout(2):
        async for _topic, payload in letters.messages():
            received.append(payload)
            if len(received) == 2:
                break
    await letters.close()
    assert all(b'"type":"deadletter"' in p for p in received)
    assert_same_book(rig.feed, rig.stream)


# --- any delivery schedule ---------------------------------------------------------------------
Step = str  # "send" | "duplicate" | "drop" | "reconnect"


async def _schedule(seed: int, steps: list[Step]) -> None:
    stream = Stream([PERP0, SPOT0], CLUSTER, seed=seed, users=3)
    stream.events(seed % 50)  # some history before the feed starts
    rig = Rig(stream, StreamLoader(stream))
    await rig.start()
    try:
        async with asyncio.timeout(5):
            await rig.feed.wait_synced()
        sent: list[StreamEvent] = []
        for step in steps:
            if step == "send":
                batch = stream.events(15)
                await rig.send(batch)
                sent.extend(batch)
            elif step == "duplicate":
                await rig.send(sent[-10:])
            elif step == "drop":
                stream.events(3)  # committed, never published: a gap
            else:  # the connection drops while 10 events are published: lost to the feed
                generation = rig.bus.generation
                rig.broker.accepting = False
                rig.broker.drop(rig.client_id)
                await rig.send(stream.events(10))
                rig.broker.accepting = True
                await until(lambda g=generation: rig.bus.generation > g)  # type: ignore[misc]
        # Keep publishing until the feed is caught up: a gap shows only with a later event of
        # its market.
        async with asyncio.timeout(10):
            while not (
                rig.feed.is_synced_all
                and all(rig.feed.market_seq(*m) == stream.market_seq[m] for m in stream.markets)
            ):
                await rig.send(stream.events(10))
                await asyncio.sleep(0.005)
        assert_same_book(rig.feed, stream)
        assert rig.feed.stats.unbookable == 0
    finally:
        await rig.close()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    steps=st.lists(st.sampled_from(["send", "duplicate", "drop", "reconnect"]), max_size=12),
)
def test_any_schedule_of_duplicates_gaps_and_reconnects_ends_in_the_publishers_book(
    seed: int, steps: list[Step]
) -> None:
    asyncio.run(_schedule(seed, steps))


# --- applying events, one by one ---------------------------------------------------------------
ALICE = (b"\xaa" * 32, 0)
BOB = (b"\xbb" * 32, 0)


def limit(order_id: int, price: int, size: int = 2, **fields: Any) -> Order:
    """A long perp limit order at ``price``, post-only unless told otherwise."""
    values: dict[str, Any] = {
        "order_type": OrderType.Limit,
        "direction": PositionDirection.Long,
        "slot": 1_000,
        "post_only": True,
        **fields,
    }
    return Order(
        order_id=order_id,
        market_index=0,
        market_type=MarketType.Perp,
        base_asset_amount=size * BASE_PRECISION,
        price=price,
        **values,
    )


class Events:
    """Numbers hand-made events of perp market 0 as the node would."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(
        self, action: OrderAction, user: tuple[bytes, int], order: Order, slot: int = 1_000
    ) -> tuple[str, bytes]:
        self.seq += 1
        event = OrderEvent.from_order(
            order,
            seq=self.seq,
            market_seq=self.seq,
            slot=slot,
            ts=0,
            action=action,
            authority=user[0],
            sub_account_id=user[1],
        )
        return topics.orders(CLUSTER, *PERP0), encode(event)


@pytest_asyncio.fixture
async def empty() -> AsyncIterator[Rig]:
    stream = Stream([PERP0], CLUSTER)
    made = Rig(stream, StreamLoader(stream))
    await made.start()
    async with asyncio.timeout(5):
        await made.feed.wait_synced()
    try:
        yield made
    finally:
        await made.close()


async def send_all(rig: Rig, messages: list[tuple[str, bytes]]) -> None:
    """Publish hand-made events of perp market 0 and wait until the last one is applied."""
    await publish(rig.publisher, messages)
    final = decode(messages[-1][0], messages[-1][1])
    assert isinstance(final, OrderEvent)
    await until(lambda: rig.feed.market_seq(*PERP0) >= final.market_seq)


@pytest.mark.asyncio
async def test_each_action_changes_the_book_as_the_program_did(empty: Rig) -> None:
    ev = Events()
    usd = PRICE_PRECISION
    trigger = limit(
        3,
        99 * usd,
        order_type=OrderType.TriggerLimit,
        post_only=False,
        trigger_price=95 * usd,
        trigger_condition=OrderTriggerCondition.Below,
    )
    filled = limit(1, 99 * usd)
    filled.base_asset_amount_filled = BASE_PRECISION // 2
    filled.quote_asset_amount_filled = 49_500_000  # $49.50 for 0.5 at $99
    fired = limit(
        3,
        99 * usd,
        order_type=OrderType.TriggerLimit,
        post_only=False,
        trigger_price=95 * usd,
        trigger_condition=OrderTriggerCondition.TriggeredBelow,
    )
    moved = limit(2, 97 * usd)
    await send_all(
        empty,
        [
            ev(OrderAction.PLACE, ALICE, limit(1, 99 * usd)),
            ev(OrderAction.PLACE, BOB, limit(1, 98 * usd)),  # same id, another user
            ev(OrderAction.PLACE, ALICE, limit(2, 98 * usd)),
            ev(OrderAction.PLACE, ALICE, trigger),
            ev(OrderAction.FILL, ALICE, filled),
            ev(OrderAction.MODIFY, ALICE, moved),
            ev(OrderAction.TRIGGER, ALICE, fired),
        ],
    )
    book = empty.feed.book
    assert empty.feed.stats.applied == 7
    node = book.get(ALICE, 1)
    assert node is not None
    assert node.order.base_asset_amount_filled == BASE_PRECISION // 2
    assert node.order.quote_asset_amount_filled == 49_500_000
    triggered = book.get(ALICE, 3)
    assert triggered is not None and triggered.kind is NodeKind.RestingLimit
    l3 = book.get_l3(*PERP0, ORACLE_PRICE, book.slot)
    # bids best first: Alice's 1 ($99, 1.5 left) and 3 ($99, 2) by id; Bob's 1 ($98); Alice's
    # 2 moved to $97
    assert [(lv.price, lv.size, lv.user, lv.order_id) for lv in l3.bids] == [
        (99 * usd, 3 * BASE_PRECISION // 2, ALICE, 1),
        (99 * usd, 2 * BASE_PRECISION, ALICE, 3),
        (98 * usd, 2 * BASE_PRECISION, BOB, 1),
        (97 * usd, 2 * BASE_PRECISION, ALICE, 2),
    ]
    gone = limit(1, 99 * usd, status=OrderStatus.Canceled)
    all_filled = limit(1, 98 * usd)
    all_filled.base_asset_amount_filled = 2 * BASE_PRECISION
    await send_all(
        empty,
        [
            ev(OrderAction.CANCEL, ALICE, gone),
            ev(OrderAction.FILL, BOB, all_filled),
            ev(OrderAction.EXPIRE, ALICE, moved),
        ],
    )
    assert len(book) == 1
    assert book.get(ALICE, 3) is not None


@pytest.mark.asyncio
async def test_an_event_the_book_cannot_hold_is_counted_and_skipped(empty: Rig) -> None:
    ev = Events()
    no_price = limit(1, 0)  # a limit order with neither a price nor an offset
    await send_all(
        empty,
        [ev(OrderAction.PLACE, ALICE, no_price), ev(OrderAction.PLACE, ALICE, limit(2, 5))],
    )
    assert empty.feed.stats.unbookable == 1
    assert empty.feed.stats.applied == 2  # sequenced all the same: no resync
    assert len(empty.feed.book) == 1


# --- slot, oracle, intents ------------------------------------------------------------------
@pytest.mark.asyncio
async def test_slot_messages_advance_the_book_and_wake_slot_waiters(empty: Rig) -> None:
    waiter = asyncio.create_task(empty.feed.wait_for_slot(2_000))
    await empty.send_message(topics.slot(CLUSTER), encode(SlotMessage(slot=1_500, ts=9)))
    await until(lambda: empty.feed.slot == 1_500)
    assert not waiter.done()
    await empty.send_message(topics.slot(CLUSTER), encode(SlotMessage(slot=2_001, ts=10)))
    async with asyncio.timeout(2):
        assert await waiter == 2_001
    assert empty.feed.book.slot == 2_001
    assert empty.feed.ts == 10
    # an older slot never moves the book back
    await empty.send_message(topics.slot(CLUSTER), encode(SlotMessage(slot=1_999, ts=11)))
    await until(lambda: empty.feed.stats.slot_updates == 3)
    assert empty.feed.slot == 2_001


@pytest.mark.asyncio
async def test_oracle_messages_set_the_markets_oracle_price(empty: Rig) -> None:
    assert empty.feed.oracle_price(*PERP0) is None
    message = OracleMessage(oracle_id="SOL/USD", price=123_450_000, confidence=1, slot=7)
    await empty.send_message(topics.oracle(CLUSTER, "SOL/USD"), encode(message))
    await until(lambda: empty.feed.oracle_price(*PERP0) is not None)
    assert empty.feed.oracle_price(*PERP0) == 123_450_000
    assert empty.feed.oracle("SOL/USD") == message


KEY = Keypair.from_seed(b"\x01" * 32)


def signed_intent(
    slot: int, uuid: bytes, *, keypair: Keypair = KEY, start: int = 100, end: int = 101
) -> IntentMessage:
    params = OrderParams(
        order_type=OrderType.Market,
        market_type=MarketType.Perp,
        direction=PositionDirection.Long,
        base_asset_amount=BASE_PRECISION,
        market_index=0,
        price=102 * PRICE_PRECISION,
        auction_duration=10,
        auction_start_price=start * PRICE_PRECISION,
        auction_end_price=end * PRICE_PRECISION,
    )
    intent = OrderIntent(
        authority=KEY.pubkey, sub_account_id=0, params=params, slot=slot, uuid=uuid
    )
    return IntentMessage.from_intent(intent, keypair.pubkey, intent.sign(keypair))


def forged(message: IntentMessage) -> IntentMessage:
    """The same intent with the signature's first byte changed."""
    first = (int(message.signature[:2], 16) ^ 0xFF).to_bytes(1, "big").hex()
    return msgspec.structs.replace(message, signature=first + message.signature[2:])


@pytest.mark.asyncio
async def test_signed_intents_enter_the_book_and_leave_by_slot(empty: Rig) -> None:
    feed = empty.feed
    user = (KEY.pubkey, 0)
    topic = topics.intents(CLUSTER, 0)
    await empty.send_message(topics.slot(CLUSTER), encode(SlotMessage(slot=1_000, ts=1)))
    await until(lambda: feed.slot == 1_000)
    other = Keypair.from_seed(b"\x02" * 32)
    for message in (
        signed_intent(1_000, b"\x01" * 8),  # in
        signed_intent(1_000, b"\x01" * 8),  # the same uuid again
        signed_intent(1_000, b"\x02" * 8, keypair=other),  # signed by another key
        forged(signed_intent(1_000, b"\x07" * 8)),  # a signature that does not verify
        signed_intent(1_000 + INTENT_SLOT_LEAD + 1, b"\x03" * 8),  # too far ahead
        signed_intent(980, b"\x04" * 8),  # auction over at 990
        signed_intent(1_000, b"\x05" * 8, start=101, end=100),  # a long auction going down
        signed_intent(995, b"\x06" * 8),  # in, auction over after 1005
    ):
        await empty.send_message(topic, encode(message))
    await until(lambda: sum(feed.stats.intents_rejected.values()) == 6)
    rejected = feed.stats.intents_rejected
    assert rejected[IntentRejection.DUPLICATE] == 1
    assert rejected[IntentRejection.NOT_AUTHORITY] == 1
    assert rejected[IntentRejection.BAD_SIGNATURE] == 1
    assert rejected[IntentRejection.TOO_EARLY] == 1
    assert rejected[IntentRejection.EXPIRED] == 1
    assert rejected[IntentRejection.BAD_PARAMS] == 1
    assert feed.stats.intents_inserted == 2
    node = feed.book.get_signed_intent(user, b"\x01" * 8)
    assert node is not None and node.kind is NodeKind.SignedIntent
    # slot 1006: the intent signed at 995 (max slot 1005) is over; the other (1010) is not
    await empty.send_message(topics.slot(CLUSTER), encode(SlotMessage(slot=1_006, ts=2)))
    await until(lambda: feed.stats.intents_expired == 1)
    assert feed.book.get_signed_intent(user, b"\x06" * 8) is None
    assert feed.book.get_signed_intent(user, b"\x01" * 8) is not None
    # the node places the intent's order: the intent leaves the book, the order enters it
    placed = intent_order(signed_intent(1_000, b"\x01" * 8).to_intent())
    placed.order_id = 7
    ev = Events()
    await send_all(empty, [ev(OrderAction.PLACE, user, placed, slot=1_006)])
    assert feed.stats.intents_placed == 1
    assert feed.book.get_signed_intent(user, b"\x01" * 8) is None
    assert feed.book.get(user, 7) is not None


def test_intent_order_is_the_signed_params_at_the_signed_slot() -> None:
    params = OrderParams(
        order_type=OrderType.Limit,
        market_type=MarketType.Perp,
        direction=PositionDirection.Short,
        base_asset_amount=3 * BASE_PRECISION,
        market_index=2,
        price=0,
        user_order_id=9,
        post_only=PostOnlyParam.None_,
        max_ts=1_700_000_100,
        oracle_price_offset=-50_000,
        auction_duration=5,
        auction_start_price=-10_000,
        auction_end_price=-60_000,
    )
    intent = OrderIntent(
        authority=b"\x07" * 32, sub_account_id=1, params=params, slot=77, uuid=b"\x09" * 8
    )
    assert intent_order(intent) == Order(
        order_id=0,
        market_index=2,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=PositionDirection.Short,
        base_asset_amount=3 * BASE_PRECISION,
        slot=77,
        max_ts=1_700_000_100,
        oracle_price_offset=-50_000,
        auction_duration=5,
        auction_start_price=-10_000,
        auction_end_price=-60_000,
        user_order_id=9,
        bit_flags=int(OrderBitFlag.SignedMessage),
    )


# --- snapshots over HTTP ------------------------------------------------------------------------
def test_snapshot_bodies_are_checked_against_the_market_asked_for() -> None:
    stream = Stream([PERP0, SPOT0], CLUSTER, seed=2)
    stream.events(60)
    body = stream.snapshot_body(*PERP0)
    snapshot = parse_orders_snapshot(body, *PERP0)
    assert snapshot.market_seq == stream.market_seq[PERP0]
    assert snapshot.slot == stream.slot
    assert {(u, o.order_id): o for u, o in snapshot.orders} == {
        (u, i): o for (u, i), o in stream.orders[PERP0].items()
    }
    with pytest.raises(SnapshotUnavailable) as wrong:
        parse_orders_snapshot(body, *SPOT0)
    assert wrong.value.market_type == MarketType.Spot
    with pytest.raises(SnapshotUnavailable):
        parse_orders_snapshot(b"[1, 2", *PERP0)
    # the enum's integer value is accepted for market_type
    numeric = body.replace(b'"market_type":"perp"', b'"market_type":1')
    assert parse_orders_snapshot(numeric, *PERP0).market_seq == stream.market_seq[PERP0]


@pytest.mark.asyncio
async def test_http_loader_reads_the_node_endpoint_and_reports_failures() -> None:
    stream = Stream([PERP0], CLUSTER, seed=4)
    stream.events(30)
    service = SnapshotService(stream, fail_next=1)
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loader = HttpSnapshotLoader(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(SnapshotUnavailable) as failed:
            await loader.orders_snapshot(*PERP0)
        assert "HTTP 503" in failed.value.detail
        snapshot = await loader.orders_snapshot(*PERP0)
        assert snapshot.market_seq == stream.market_seq[PERP0]
        assert len(snapshot.orders) == len(stream.orders[PERP0])
    finally:
        await loader.close()
        await runner.cleanup()
    unreachable = HttpSnapshotLoader(f"http://127.0.0.1:{port}", timeout=1)
    try:
        with pytest.raises(SnapshotUnavailable):
            await unreachable.orders_snapshot(*PERP0)
    finally:
        await unreachable.close()


@pytest.mark.asyncio
async def test_wait_for_market_seq_returns_once_the_events_are_applied(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
    events = rig.stream.events(300)
    target = {m: rig.stream.market_seq[m] for m in rig.stream.markets}
    waiters = [
        asyncio.create_task(rig.feed.wait_for_market_seq(*m, seq)) for m, seq in target.items()
    ]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)  # committed, not yet published
    await rig.send(events)
    async with asyncio.timeout(5):
        await asyncio.gather(*waiters)
    assert all(rig.feed.market_seq(*m) >= seq for m, seq in target.items())


class _BrokenSnapshot:
    market_seq = 0
    slot = 0

    @property
    def orders(self) -> list[object]:
        raise TypeError("not a snapshot")


class _BrokenLoader:
    async def orders_snapshot(self, market_type: MarketType, market_index: int) -> Any:
        return _BrokenSnapshot()


@pytest.mark.asyncio
async def test_a_broken_invariant_stops_the_writer_and_is_reported() -> None:
    broker = InProcessBroker()
    bus = BusClient(broker.transport("broken"), backoff=FAST)
    feed = DlobFeed(bus, _BrokenLoader(), followed(PERP0), cluster=CLUSTER, backoff=FAST)
    await feed.start()
    await bus.start()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(FeedFailed):
                await feed.wait_synced()
            with pytest.raises(FeedFailed):
                await feed.join()
        assert isinstance(feed.failure, TypeError)
    finally:
        await feed.close()
        await bus.close()


@pytest.mark.asyncio
async def test_join_returns_when_the_bus_closes(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.feed.wait_synced()
        await rig.bus.close()
        await rig.feed.join()
    assert rig.feed.failure is None


def test_a_feed_needs_markets_and_distinct_ones() -> None:
    bus = BusClient(InProcessBroker().transport("x"))
    loader = StreamLoader(Stream([PERP0], CLUSTER))
    with pytest.raises(ValueError, match="at least one market"):
        DlobFeed(bus, loader, [], cluster=CLUSTER)
    twice = [FollowedMarket(MarketType.Perp, 0, 1), FollowedMarket(MarketType.Perp, 0, 1)]
    with pytest.raises(ValueError, match="twice"):
        DlobFeed(bus, loader, twice, cluster=CLUSTER)


# --- over a real Mosquitto --------------------------------------------------------------------
class MqttRig:
    """The feed on a real broker, snapshots over HTTP from the publisher's own book."""

    def __init__(self, url: str, client: str, stream: Stream, reconnect_gate: asyncio.Event):
        self.stream = stream
        self.service = SnapshotService(stream)
        self.runner = web.AppRunner(self.service.app())
        self.gate = reconnect_gate

        async def gated_sleep(delay: float) -> None:
            await reconnect_gate.wait()
            await asyncio.sleep(min(delay, 0.01))

        self.sub_transport = make_transport(client, url, f"dlob-sub-{next(_ids)}")
        self.bus = BusClient(self.sub_transport, backoff=FAST, sleep=gated_sleep)
        self.publisher = make_transport("gmqtt", url, f"dlob-pub-{next(_ids)}")
        self.loader: HttpSnapshotLoader | None = None
        self.feed: DlobFeed | None = None
        self.sent = 0

    async def start(self) -> DlobFeed:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.loader = HttpSnapshotLoader(f"http://127.0.0.1:{port}", timeout=5)
        self.feed = DlobFeed(
            self.bus, self.loader, followed(*self.stream.markets), cluster=CLUSTER, backoff=FAST
        )
        await self.publisher.connect()
        await self.feed.start()
        await self.bus.start()
        return self.feed

    async def send(self, events: list[StreamEvent]) -> None:
        await publish(self.publisher, [(e.topic, e.payload) for e in events])
        self.sent += len(events)

    async def stream_live(self, n: int, window: int = 100) -> None:
        """Commit and publish ``n`` events a window at a time, as the node does: a snapshot
        taken meanwhile has some of them, and the rest arrive after it."""
        for start in range(0, n, window):
            await self.send(self.stream.events(min(window, n - start)))

    async def close(self) -> None:
        self.gate.set()
        if self.feed is not None:
            await self.feed.close()
        await self.bus.close()
        await self.publisher.close()
        if self.loader is not None:
            await self.loader.close()
        await self.runner.cleanup()


async def caught_up(feed: DlobFeed, stream: Stream, seconds: float = 10.0) -> None:
    await until(
        lambda: (
            feed.is_synced_all
            and all(feed.market_seq(*m) == stream.market_seq[m] for m in stream.markets)
        ),
        seconds,
    )


@pytest.mark.asyncio
async def test_over_mosquitto_a_cut_connection_and_a_gap_end_in_the_publishers_book(
    mosquitto: str,
) -> None:
    stream = Stream([PERP0, SPOT0], CLUSTER, seed=21, users=5)
    stream.events(500)  # history before the subscriber starts: its first snapshot
    gate = asyncio.Event()
    gate.set()
    rig = MqttRig(mosquitto, "gmqtt", stream, gate)
    try:
        feed = await rig.start()
        async with asyncio.timeout(10):
            await feed.wait_synced()
        await rig.stream_live(2_000)
        await caught_up(feed, stream)
        assert feed.stats.applied == 2_000  # in sync all along: every event applied in turn
        # cut the subscriber's TCP connection; hold its reconnect while events flow past it
        gate.clear()
        assert isinstance(rig.sub_transport, GmqttTransport)
        rig.sub_transport.abort()
        await until(lambda: not rig.bus.is_connected)
        await rig.stream_live(1_000)
        gate.set()
        await rig.stream_live(1_000)
        assert rig.bus.generation == 2
        # a gap: five events committed and never published
        for _ in range(5):
            stream.next_event()
        await rig.stream_live(1_000)
        await caught_up(feed, stream)
        assert feed.stats.gaps >= 1
        assert feed.stats.resyncs >= 2 + 2 + 1  # first connect, reconnect, gap
        # events published during the outage never reached the feed: the snapshot had them
        assert rig.bus.stats.delivered < rig.sent
        assert rig.service.served == feed.stats.snapshots_applied
        assert_same_book(feed, stream)
    finally:
        await rig.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("client", ["gmqtt", "aiomqtt"])
async def test_over_mosquitto_a_broker_restart_ends_in_the_publishers_book(
    mosquitto_broker: RunningBroker, client: str
) -> None:
    stream = Stream([PERP0, SPOT0], CLUSTER, seed=23, users=4)
    gate = asyncio.Event()
    gate.set()
    rig = MqttRig(mosquitto_broker.url, client, stream, gate)
    try:
        feed = await rig.start()
        async with asyncio.timeout(10):
            await feed.wait_synced()
        await rig.stream_live(1_000)
        await caught_up(feed, stream)
        await rig.publisher.close()
        await mosquitto_broker.restart()
        stream.events(200)  # committed while the broker was down: only the snapshot has them
        await until(lambda: rig.bus.generation == 2, 10)
        rig.publisher = make_transport("gmqtt", mosquitto_broker.url, f"dlob-pub-{next(_ids)}")
        await rig.publisher.connect()
        await rig.stream_live(1_000)
        await caught_up(feed, stream)
        # the first snapshots and the reconnect's; a gap too if the reconnect's snapshot was
        # cut before the 200 events were committed
        assert feed.stats.resyncs >= 4
        assert feed.stats.snapshots_applied == rig.service.served
        assert_same_book(feed, stream)
    finally:
        await rig.close()
