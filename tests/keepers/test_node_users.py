"""The node's users stream: the identity cutter, gap-free messages, heartbeats, a new stream
when a key disappears, the ``/v1/users`` pages, and the node publishing each changed account
once per slot, durable, over the in-process broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio

from keepers.bus import topics
from keepers.bus.client import BusClient
from keepers.bus.inprocess import InProcessBroker
from keepers.bus.schemas import UsersMessage, decode
from keepers.node import Node
from keepers.node_users import UserCutter, UsersStream, parse_page_query
from keepers.rpc import NodeClient, NodeError, UsersPage
from protocol.constants import QUOTE_PRECISION
from protocol.state.user import PerpPosition, User, UserKey
from tests.keepers.node_helpers import GENESIS_SLOT, deposit, keypair, node_config, open_account

CLUSTER = "unit"
STREAMS = ("0123456789abcdef", "fedcba9876543210")


def user(n: int, base: int = 0) -> User:
    return User(authority=bytes([n]) * 32, perp_positions=[PerpPosition(0, base_asset_amount=base)])


def key(n: int) -> UserKey:
    return (bytes([n]) * 32, 0)


def accounts(*ns: int) -> dict[UserKey, User]:
    return {key(n): user(n) for n in ns}


def stream_ids() -> Iterator[str]:
    return iter(STREAMS)


def messages(outgoing: list[object], topic: str) -> list[UsersMessage]:
    decoded = []
    for item in outgoing:
        assert item.topic == topic  # type: ignore[attr-defined]
        message = decode(topic, item.payload)  # type: ignore[attr-defined]
        assert isinstance(message, UsersMessage)
        decoded.append(message)
    return decoded


# --- the cutter ------------------------------------------------------------------------------
def test_the_cutter_reports_each_replaced_or_added_account_once_in_order() -> None:
    users = accounts(1, 2, 3)
    cutter = UserCutter(users)
    assert cutter.cut() == []
    users[key(3)] = user(3, 10)
    users[key(4)] = user(4, 40)
    users[key(1)] = user(1, 5)
    latest = users[key(1)] = user(1, 6)  # written twice: reported once, as it is now
    changed = cutter.cut()
    assert changed is not None
    assert [u.key for u in changed] == [key(1), key(3), key(4)]
    assert changed[0] is latest
    assert cutter.cut() == []
    assert len(cutter) == 4


def test_an_equal_but_replaced_account_counts_as_changed_and_the_same_object_does_not() -> None:
    users = accounts(1, 2)
    cutter = UserCutter(users)
    users[key(2)] = users[key(2)].clone()  # a commit replaces even when nothing moved
    users[key(1)] = users[key(1)]
    changed = cutter.cut()
    assert changed is not None
    assert [u.key for u in changed] == [key(2)]


@pytest.mark.parametrize("added", [0, 1, 2])
def test_the_cutter_refuses_a_removed_key(added: int) -> None:
    users = accounts(1, 2, 3)
    cutter = UserCutter(users)
    del users[key(2)]
    for n in range(added):
        users[key(10 + n)] = user(10 + n)
    assert cutter.cut() is None


# --- the stream ------------------------------------------------------------------------------
def test_a_cut_is_split_into_gap_free_messages_of_the_changed_accounts() -> None:
    users = accounts(1, 2, 3, 4, 5)
    ids = stream_ids()
    stream = UsersStream(lambda: users, CLUSTER, max_per_message=2, new_stream_id=lambda: next(ids))
    [hello] = messages(stream.start(100), stream.topic)
    assert (hello.stream, hello.seq, hello.slot, hello.users) == (STREAMS[0], 1, 100, [])
    assert stream.cut(101) == []
    for n in (5, 1, 3):
        users[key(n)] = user(n, n)
    users[key(6)] = user(6, 6)
    published = messages(stream.cut(102), stream.topic)
    assert [m.seq for m in published] == [2, 3]
    assert [m.slot for m in published] == [102, 102]
    assert [u for m in published for u in m.users] == [
        users[key(1)],
        users[key(3)],
        users[key(5)],
        users[key(6)],
    ]
    assert (stream.seq, stream.cuts, stream.accounts_published) == (3, 2, 4)


def test_a_heartbeat_is_due_after_quiet_slots_and_takes_the_next_seq() -> None:
    users = accounts(1)
    stream = UsersStream(lambda: users, CLUSTER, heartbeat_slots=3, new_stream_id=lambda: "ab" * 8)
    stream.start(10)
    assert not stream.heartbeat_due(12)
    assert stream.heartbeat_due(13)
    [beat] = messages([stream.heartbeat(13)], stream.topic)
    assert (beat.seq, beat.slot, beat.users) == (2, 13, [])
    assert not stream.heartbeat_due(15)


def test_a_removed_account_starts_a_new_stream_that_subscribers_resync_on() -> None:
    users = accounts(1, 2)
    ids = stream_ids()
    stream = UsersStream(lambda: users, CLUSTER, new_stream_id=lambda: next(ids))
    stream.start(1)
    del users[key(1)]
    [first] = messages(stream.cut(2), stream.topic)
    assert (first.stream, first.seq, first.users) == (STREAMS[1], 1, [])
    assert (stream.stream, stream.seq, stream.new_streams) == (STREAMS[1], 1, 1)
    users[key(2)] = user(2, 7)
    [after] = messages(stream.cut(3), stream.topic)
    assert (after.stream, after.seq, after.users) == (STREAMS[1], 2, [users[key(2)]])


def test_pages_walk_every_account_in_order_with_the_streams_seq() -> None:
    users = accounts(1, 2, 3)
    stream = UsersStream(lambda: users, CLUSTER, new_stream_id=lambda: "ab" * 8)
    stream.start(1)
    # the client's body type decodes the node's page
    pages = [msgspec.json.decode(stream.page(o, 2, 9), type=UsersPage) for o in (0, 2, 4)]
    assert [(p.offset, p.total, p.next, p.seq, p.slot) for p in pages] == [
        (0, 3, 2, 1, 9),
        (2, 3, None, 1, 9),
        (4, 3, None, 1, 9),
    ]
    assert pages[0].users + pages[1].users == list(users.values())
    assert pages[2].users == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (0, 1_000)),
        ({"offset": "100000", "limit": "10000"}, (100_000, 10_000)),
        ({"limit": "0"}, "limit must be between 1 and 10000"),
        ({"limit": "10001"}, "limit must be between 1 and 10000"),
        ({"offset": "-1"}, "expected ?offset=N&limit=M, non-negative integers"),
        ({"offset": "1e3"}, "expected ?offset=N&limit=M, non-negative integers"),
    ],
)
def test_page_queries(query: dict[str, str], expected: object) -> None:
    assert parse_page_query(query) == expected


# --- the node ----------------------------------------------------------------------------------
@pytest_asyncio.fixture
async def broker() -> InProcessBroker:
    return InProcessBroker()


@pytest_asyncio.fixture
async def listener(broker: InProcessBroker) -> AsyncIterator[BusClient]:
    client = BusClient(broker.transport("listener"))
    await client.subscribe([topics.users(CLUSTER)])
    await client.start()
    async with asyncio.timeout(5):
        await client.wait_connected()
    yield client
    await client.close()


async def next_users(client: BusClient) -> UsersMessage:
    async with asyncio.timeout(5):
        delivery = await client.get()
    assert isinstance(delivery.message, UsersMessage)
    return delivery.message


@pytest.mark.asyncio
async def test_the_node_publishes_each_changed_account_once_per_slot_and_pages_them(
    tmp_path: Path, broker: InProcessBroker, listener: BusClient
) -> None:
    alice, bob = keypair(1), keypair(2)
    bus = BusClient(broker.transport("node"))
    await bus.start()
    config = node_config(tmp_path / "node.db", cluster=CLUSTER)
    try:
        async with (
            Node(config, manual_clock=True, bus=bus) as node,
            NodeClient(node.url) as client,
        ):
            node.clock.advance()
            hello = await next_users(listener)
            assert (hello.seq, hello.users) == (1, [])
            stream = hello.stream
            # three transactions in one slot, two of them Alice's: one message, each once
            for raw in (
                open_account(alice, GENESIS_SLOT),
                open_account(bob, GENESIS_SLOT),
                deposit(alice, GENESIS_SLOT, 5 * QUOTE_PRECISION),
            ):
                assert (await client.send_tx(raw)).ok
            assert listener.queue_depth == 0
            node.clock.advance()
            cut = await next_users(listener)
            state = node.ledger.state.users
            assert (cut.stream, cut.seq, cut.slot) == (stream, 2, GENESIS_SLOT + 2)
            assert cut.users == [state[(alice.pubkey, 0)], state[(bob.pubkey, 0)]]
            assert cut.users[0].total_deposits == 10_005 * QUOTE_PRECISION

            node.clock.advance(3)  # nothing executed: nothing published
            await asyncio.sleep(0.05)
            assert listener.queue_depth == 0

            first = await client.users_page(0, 1)
            second = await client.users_page(1, 1)
            assert (first.stream, first.seq, first.total, first.next) == (stream, 2, 2, 1)
            assert (second.offset, second.next) == (1, None)
            assert first.users + second.users == list(state.values())
            with pytest.raises(NodeError) as refused:
                await client.users_page(0, 0)
            assert refused.value.status == 400
    finally:
        await bus.close()


@pytest.mark.asyncio
async def test_a_quiet_node_sends_heartbeats(
    tmp_path: Path, broker: InProcessBroker, listener: BusClient
) -> None:
    bus = BusClient(broker.transport("node"))
    await bus.start()
    try:
        async with Node(
            node_config(tmp_path / "node.db", cluster=CLUSTER), manual_clock=True, bus=bus
        ) as node:
            node.clock.advance()
            hello = await next_users(listener)
            assert hello.slot == GENESIS_SLOT
            node.clock.advance(23)  # 24 slots since the first message
            await asyncio.sleep(0.05)
            assert listener.queue_depth == 0
            node.clock.advance(1)
            beat = await next_users(listener)
            assert (beat.stream, beat.seq, beat.slot, beat.users) == (
                hello.stream,
                2,
                GENESIS_SLOT + 25,
                [],
            )
    finally:
        await bus.close()
