"""The user feed: pages then the stream, in order; duplicates, gaps and new streams resync;
accounts never go back to an older version; malformed payloads dead-lettered; bounded resync
buffer; load retries; reconnects; cursors. Over the in-process broker with scripted pages, and
against a real node (restarted mid-way) whose every account the feed must end up equal to."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio

from keepers.bus import topics
from keepers.bus.client import Backoff, BusClient
from keepers.bus.inprocess import InProcessBroker
from keepers.bus.schemas import DeadLetter, DecodeReason, UsersMessage, encode
from keepers.node import Node
from keepers.node_users import UsersStream
from keepers.rpc import NodeClient, UsersPage
from keepers.user_feed import UserFeed
from protocol.constants import QUOTE_PRECISION
from protocol.state.user import PerpPosition, User, UserKey
from tests.keepers.node_helpers import GENESIS_SLOT, deposit, keypair, node_config, open_account

CLUSTER = "unit"
TOPIC = topics.users(CLUSTER)
OLD, NEW = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def user(n: int, base: int = 0) -> User:
    return User(authority=bytes([n]) * 32, perp_positions=[PerpPosition(0, base_asset_amount=base)])


def key(n: int) -> UserKey:
    return (bytes([n]) * 32, 0)


def bases(users: Mapping[UserKey, User] | Iterable[User]) -> dict[int, int]:
    """``{authority byte: base}`` of a list or mapping of users built by :func:`user`."""
    values = users.values() if isinstance(users, Mapping) else users
    return {u.authority[0]: u.perp_positions[0].base_asset_amount for u in values}


@dataclass
class Pages:
    """The node's ``/v1/users`` as a script: ``users`` in order, each page at ``seq`` (or the
    next of ``page_seqs``); ``gate`` holds every read; ``failures`` reads raise."""

    stream: str = OLD
    seq: int = 0
    users: dict[UserKey, User] = field(default_factory=dict)
    page_seqs: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    failures: int = 0
    reads: list[int] = field(default_factory=list)

    async def users_page(self, offset: int, limit: int) -> UsersPage:
        self.reads.append(offset)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the node is down")
        values = list(self.users.values())
        chunk = values[offset : offset + limit]
        end = offset + len(chunk)
        return UsersPage(
            stream=self.stream,
            seq=self.page_seqs.pop(0) if self.page_seqs else self.seq,
            slot=1,
            offset=offset,
            total=len(values),
            next=end if end < len(values) else None,
            users=chunk,
        )


@pytest_asyncio.fixture
async def broker() -> InProcessBroker:
    return InProcessBroker()


@pytest_asyncio.fixture
async def node_bus(broker: InProcessBroker) -> AsyncIterator[BusClient]:
    client = BusClient(broker.transport("node"))
    await client.start()
    async with asyncio.timeout(5):
        await client.wait_connected()
    yield client
    await client.close()


def make_feed(broker: InProcessBroker, pages: Pages, **options: object) -> UserFeed:
    bus = BusClient(broker.transport("feed"), deadletter_topic=topics.deadletter(CLUSTER))
    backoff = Backoff(initial=0.001, maximum=0.004)
    return UserFeed(bus, pages, cluster=CLUSTER, page_size=2, backoff=backoff, **options)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def pages() -> Pages:
    return Pages(seq=3, users={key(n): user(n, n) for n in range(1, 6)})


@pytest_asyncio.fixture
async def feed(broker: InProcessBroker, pages: Pages) -> AsyncIterator[UserFeed]:
    running = make_feed(broker, pages)
    await running.start()
    await running._bus.start()
    async with asyncio.timeout(5):
        await running.wait_synced()
    yield running
    await running.close()
    await running._bus.close()


async def publish(bus: BusClient, seq: int, *users: User, stream: str = OLD) -> None:
    await bus.publish(TOPIC, UsersMessage(stream=stream, seq=seq, slot=seq, users=list(users)))


async def settle(feed: UserFeed, seq: int, stream: str = OLD) -> None:
    """Until the feed is in sync at ``seq`` of ``stream``."""
    async with asyncio.timeout(5):
        await feed.wait_until(lambda f: f.is_synced and f.stream == stream and f.last >= seq)


# --- in order ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_pages_then_the_stream_in_order_and_each_cursor_sees_every_change_once(
    feed: UserFeed, pages: Pages, node_bus: BusClient
) -> None:
    assert pages.reads == [0, 2, 4]
    assert (feed.stream, feed.last) == (OLD, 3)
    cursor = feed.cursor()
    assert bases(cursor.changed_users()) == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert cursor.changed_users() == []
    await publish(node_bus, 4, user(1, 10), user(6, 60))
    await publish(node_bus, 5, user(1, 11))
    await settle(feed, 5)
    assert cursor.pending == 2
    assert bases(cursor.changed_users()) == {1: 11, 6: 60}
    assert cursor.changed_users() == []
    await publish(node_bus, 5, user(1, 99))  # QoS 1 delivered it again: already applied
    await publish(node_bus, 6)  # a heartbeat
    await settle(feed, 6)
    assert feed.stats.duplicates == 1
    assert bases(feed.users) == {1: 11, 2: 2, 3: 3, 4: 4, 5: 5, 6: 60}
    late = feed.cursor()  # a bot built now starts with every account
    assert len(late.changed_users()) == 6
    assert (feed.stats.messages_applied, feed.stats.accounts_applied) == (3, 3)
    assert (feed.stats.resyncs, feed.stats.gaps) == (1, 0)


# --- gaps, new streams, never older -----------------------------------------------------------
@pytest.mark.asyncio
async def test_a_gap_resyncs_from_the_pages_and_replays_what_came_after(
    feed: UserFeed, pages: Pages, node_bus: BusClient
) -> None:
    cursor = feed.cursor()
    cursor.changed_users()
    # message 4 is lost; the node's pages now hold it (and 5)
    pages.seq = 5
    pages.users[key(2)] = user(2, 20)
    pages.users[key(7)] = user(7, 70)
    await publish(node_bus, 5, user(7, 70))
    await publish(node_bus, 6, user(2, 21))
    await settle(feed, 6)
    assert (feed.stats.gaps, feed.stats.resyncs, feed.stats.snapshots_applied) == (1, 2, 2)
    assert feed.stats.duplicates == 1  # message 5 was in the pages already
    assert bases(feed.users) == {1: 1, 2: 21, 3: 3, 4: 4, 5: 5, 7: 70}
    assert len(cursor.changed_users()) == 6  # after a resync: every account again


@pytest.mark.asyncio
async def test_an_account_from_a_later_page_is_never_moved_back_by_an_older_message(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    # the pages were read across messages 4 and 5: accounts 3 and 4 come from a page at seq 5
    gate = asyncio.Event()
    pages = Pages(
        seq=3,
        users={key(1): user(1, 1), key(2): user(2, 2), key(3): user(3, 35), key(4): user(4, 45)},
        page_seqs=[3, 5],
        gate=gate,
    )
    feed = make_feed(broker, pages)
    await feed.start()
    await feed._bus.start()
    try:
        async with asyncio.timeout(5):
            await feed._bus.wait_connected()
        await publish(node_bus, 4, user(3, 34), user(1, 14))  # buffered while the load waits
        await publish(node_bus, 5, user(4, 45), user(2, 25))
        gate.set()
        await settle(feed, 5)
        assert bases(feed.users) == {1: 14, 2: 25, 3: 35, 4: 45}
        assert feed.stats.accounts_not_older == 2  # 3 at 4 and 4 at 5 were not older
        await publish(node_bus, 6, user(3, 36))  # past every page: applied as usual
        await settle(feed, 6)
        assert bases(feed.users)[3] == 36
        assert feed.stats.accounts_not_older == 2
    finally:
        await feed.close()
        await feed._bus.close()


@pytest.mark.asyncio
async def test_a_new_stream_resyncs_and_the_old_streams_late_messages_are_ignored(
    feed: UserFeed, pages: Pages, node_bus: BusClient
) -> None:
    # the node restarted: a new stream, announced by its first message
    pages.stream, pages.seq = NEW, 1
    pages.users[key(1)] = user(1, 100)
    await publish(node_bus, 1, stream=NEW)
    await settle(feed, 1, NEW)
    assert (feed.stats.new_streams, feed.stats.resyncs) == (1, 2)
    assert bases(feed.users)[1] == 100
    await publish(node_bus, 4, user(1, -1))  # a late message of the old stream
    await publish(node_bus, 2, user(5, 50), stream=NEW)
    await settle(feed, 2, NEW)
    assert (feed.stats.stale, feed.stats.resyncs) == (1, 2)
    assert bases(feed.users) == {1: 100, 2: 2, 3: 3, 4: 4, 5: 50}


# --- bad input, bounds, failures ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_malformed_payloads_are_dead_lettered_counted_and_the_feed_goes_on(
    feed: UserFeed, broker: InProcessBroker, node_bus: BusClient
) -> None:
    watcher = BusClient(broker.transport("watcher"))
    await watcher.subscribe([topics.deadletter(CLUSTER)])
    await watcher.start()
    try:
        async with asyncio.timeout(5):
            await watcher.wait_connected()
        bad_stream = encode(UsersMessage(stream=OLD, seq=4, slot=1, users=[])).replace(
            OLD.encode(), b"not-a-stream-id!"
        )
        await node_bus.publish_raw(TOPIC, b"{not json")
        await node_bus.publish_raw(TOPIC, bad_stream)
        await publish(node_bus, 4, user(2, 42))
        await settle(feed, 4)
        assert feed.malformed == 2
        assert feed._bus.stats.malformed == {
            DecodeReason.MALFORMED: 1,
            DecodeReason.INVALID_VALUE: 1,
        }
        letters = []
        async with asyncio.timeout(5):
            for _ in range(2):
                letters.append((await watcher.get()).message)
        assert all(isinstance(letter, DeadLetter) for letter in letters)
        assert [(letter.topic, letter.reason, letter.path) for letter in letters] == [  # type: ignore[union-attr]
            (TOPIC, "malformed", "$"),
            (TOPIC, "invalid_value", "$.stream"),
        ]
        assert bases(feed.users)[2] == 42
        assert (feed.stats.gaps, feed.stats.resyncs) == (0, 1)
    finally:
        await watcher.close()


@pytest.mark.asyncio
async def test_a_full_resync_buffer_is_dropped_and_the_load_restarted(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    gate = asyncio.Event()
    pages = Pages(seq=3, users={key(1): user(1, 1)}, gate=gate)
    feed = make_feed(broker, pages, max_buffer=2)
    await feed.start()
    await feed._bus.start()
    try:
        async with asyncio.timeout(5):
            await feed._bus.wait_connected()
        for seq in (4, 5, 6):
            await publish(node_bus, seq, user(1, seq))
        async with asyncio.timeout(5):
            await feed.wait_until(lambda f: f.stats.buffer_overflows == 1)
        assert feed.buffered == 0
        pages.seq = 6
        pages.users[key(1)] = user(1, 6)
        gate.set()
        await settle(feed, 6)
        assert (feed.stats.resyncs, feed.stats.snapshots_applied) == (2, 1)
        assert bases(feed.users) == {1: 6}
    finally:
        await feed.close()
        await feed._bus.close()


@pytest.mark.asyncio
async def test_a_failed_load_is_retried_until_it_succeeds(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    pages = Pages(seq=1, users={key(1): user(1, 1)}, failures=3)
    feed = make_feed(broker, pages)
    await feed.start()
    await feed._bus.start()
    try:
        await settle(feed, 1)
        assert (feed.stats.snapshot_failures, feed.stats.resyncs) == (3, 1)
        assert pages.reads == [0, 0, 0, 0]
    finally:
        await feed.close()
        await feed._bus.close()


@pytest.mark.asyncio
async def test_pages_of_two_streams_are_read_again(
    broker: InProcessBroker, node_bus: BusClient
) -> None:
    pages = Pages(seq=1, users={key(n): user(n, n) for n in range(1, 4)})
    streams = iter([OLD, NEW, NEW, NEW])  # the node restarted after the first page

    original = pages.users_page

    async def restarting(offset: int, limit: int) -> UsersPage:
        pages.stream = next(streams)
        return await original(offset, limit)

    pages.users_page = restarting  # type: ignore[method-assign]
    feed = make_feed(broker, pages)
    await feed.start()
    await feed._bus.start()
    try:
        await settle(feed, 1, NEW)
        assert pages.reads == [0, 2, 0, 2]
        assert feed.stats.snapshot_failures == 0
    finally:
        await feed.close()
        await feed._bus.close()


@pytest.mark.asyncio
async def test_a_reconnect_resyncs(
    feed: UserFeed, broker: InProcessBroker, node_bus: BusClient
) -> None:
    broker.drop(feed._bus.transport.client_id)
    async with asyncio.timeout(5):
        await feed.wait_until(lambda f: f.stats.snapshots_applied == 2 and f.is_synced)
    assert feed.stats.resyncs == 2
    await publish(node_bus, 4, user(1, 41))
    await settle(feed, 4)
    assert bases(feed.users)[1] == 41


@pytest.mark.asyncio
async def test_cursors_are_held_weakly(feed: UserFeed, node_bus: BusClient) -> None:
    kept = feed.cursor()
    dropped = feed.cursor()
    del dropped
    gc.collect()
    assert list(feed._cursors) == [kept]
    await publish(node_bus, 4, user(3, 30))
    await settle(feed, 4)
    assert bases(kept.changed_users()) == {1: 1, 2: 2, 3: 30, 4: 4, 5: 5}


# --- against a real node --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_the_feed_holds_every_account_of_a_real_node_across_its_restart(
    tmp_path: Path, broker: InProcessBroker, node_bus: BusClient
) -> None:
    people = [keypair(n) for n in range(1, 6)]
    config = node_config(tmp_path / "node.db", cluster=CLUSTER, port=free_port())
    async with NodeClient(f"http://127.0.0.1:{config.port}") as client:
        feed = UserFeed(BusClient(broker.transport("feed")), client, cluster=CLUSTER, page_size=2)
        try:
            async with Node(config, manual_clock=True, bus=node_bus) as node:
                node.clock.advance()
                for kp in people[:3]:
                    assert (await client.send_tx(open_account(kp, GENESIS_SLOT))).ok
                await feed.start()
                await feed._bus.start()
                async with asyncio.timeout(5):
                    await feed.wait_synced()
                first_stream = feed.stream
                for kp in people[3:]:
                    assert (await client.send_tx(open_account(kp, GENESIS_SLOT))).ok
                for kp in people[1:]:
                    raw = deposit(kp, GENESIS_SLOT, 7 * QUOTE_PRECISION)
                    assert (await client.send_tx(raw)).ok
                node.clock.advance()
                state = node.ledger.state.users
                async with asyncio.timeout(5):
                    await feed.wait_until(lambda f: dict(f.users) == state)
            async with Node(config, manual_clock=True, bus=node_bus) as node:
                node.clock.advance()
                assert (await client.send_tx(deposit(people[0], GENESIS_SLOT + 1, 3))).ok
                node.clock.advance()
                state = node.ledger.state.users
                async with asyncio.timeout(5):
                    await feed.wait_until(lambda f: dict(f.users) == state and f.is_synced)
                assert feed.stream != first_stream
                assert feed.stats.new_streams == 1
                assert len(feed.users) == 5
        finally:
            await feed.close()
            await feed._bus.close()


@pytest.mark.asyncio
async def test_a_hundred_thousand_accounts_load_page_by_page(broker: InProcessBroker) -> None:
    accounts = {}
    for n in range(100_000):
        account = User(authority=n.to_bytes(32, "big"), total_deposits=n)
        accounts[account.key] = account
    stream = UsersStream(lambda: accounts, CLUSTER, new_stream_id=lambda: OLD)
    decoder = msgspec.json.Decoder(UsersPage)

    class NodePages:
        async def users_page(self, offset: int, limit: int) -> UsersPage:
            return decoder.decode(stream.page(offset, limit, 1))  # the node's bytes

    feed = UserFeed(BusClient(broker.transport("feed")), NodePages(), cluster=CLUSTER)
    await feed.start()
    await feed._bus.start()
    try:
        async with asyncio.timeout(60):
            await feed.wait_synced()
        assert feed.stats.pages_read == 100
        assert dict(feed.users) == accounts
        assert len(feed.cursor().changed_users()) == 100_000
    finally:
        await feed.close()
        await feed._bus.close()
