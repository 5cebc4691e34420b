"""NodeClient against a real node (round trips decode into equal dataclasses) and against a
scripted server (retries with backoff, never for a rejection)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from keepers.bus.brokers import free_port
from keepers.bus.client import Backoff
from keepers.node import Node
from keepers.rpc import NodeClient, NodeError, NodeUnavailableError
from protocol.constants import PRICE_PRECISION, QUOTE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.records import DepositRecord, NewUserRecord
from protocol.types import MarketType
from tests.keepers.node_helpers import (
    GENESIS_SLOT,
    GENESIS_TS,
    SOL_PERP,
    cancel,
    keypair,
    node_config,
    open_account,
    sol_bid,
)

ALICE = keypair(1)
BOB = keypair(2)
SLOT1 = GENESIS_SLOT + 1


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True) as running:
        running.clock.advance()
        yield running


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[NodeClient]:
    async with NodeClient(node.url) as c:
        yield c


@pytest.mark.asyncio
async def test_send_and_simulate_return_typed_results(node: Node, client: NodeClient) -> None:
    raw = open_account(ALICE, SLOT1)
    simulated = await client.simulate(raw)
    assert simulated.ok and node.ledger.last_index == 0
    sent = await client.send_tx(raw)
    assert (sent.ok, sent.slot, sent.attempts, sent.code) == (True, SLOT1, 1, None)
    assert sent.signature == raw[6:70]
    records = sent.sequenced_records()
    assert [r.seq for r in records] == [1, 2]
    assert isinstance(records[0].record, NewUserRecord)
    assert isinstance(records[1].record, DepositRecord)
    assert records[1].record.amount == 10_000 * QUOTE_PRECISION
    assert records == simulated.sequenced_records()
    again = await client.send_tx(raw)
    assert (again.ok, again.error_code, again.field) == (
        False,
        ErrorCode.DuplicateTransaction,
        "signatures[0]",
    )
    junk = await client.send_tx(b"nope")
    assert (junk.ok, junk.code_name, junk.field) == (False, "MalformedTransaction", "magic")


@pytest.mark.asyncio
async def test_reads_decode_back_into_the_nodes_dataclasses(node: Node, client: NodeClient) -> None:
    for raw in (
        open_account(ALICE, SLOT1),
        open_account(BOB, SLOT1),
        sol_bid(ALICE, SLOT1, 140),
        sol_bid(BOB, SLOT1, 139),
        sol_bid(ALICE, SLOT1, 141),
        cancel(ALICE, SLOT1, 1),
    ):
        assert (await client.send_tx(raw)).ok
    state = node.ledger.state
    assert await client.slot() == node.clock.now
    assert (await client.slot()).unix_timestamp == GENESIS_TS
    assert await client.user(ALICE.pubkey, 0) == state.users[(ALICE.pubkey, 0)]
    assert await client.user_stats(BOB.pubkey) == state.user_stats[BOB.pubkey]
    assert await client.perp_market(SOL_PERP) == state.perp_markets[SOL_PERP]
    assert await client.spot_market(0) == state.spot_markets[0]
    assert await client.oracle("SOL/USD") == state.oracles["SOL/USD"]
    markets = await client.markets()
    assert (markets.perp, markets.spot) == ([0, 1, 2], list(range(12)))
    snapshot = await client.orders_snapshot(MarketType.Perp, SOL_PERP)
    assert (snapshot.market_type, snapshot.market_index, snapshot.market_seq) == (
        MarketType.Perp,
        SOL_PERP,
        4,  # place, place, place, cancel
    )
    expected = sorted(
        ((key, order) for key, user in state.users.items() for order in user.orders),
        key=lambda item: (item[0], item[1].order_id),
    )
    assert sorted(snapshot.orders, key=lambda item: (item[0], item[1].order_id)) == expected
    assert sorted(o.price for _, o in expected) == [139 * PRICE_PRECISION, 141 * PRICE_PRECISION]
    health = await client.health()
    assert (health.ok, health.status, health.detail["last_index"]) == (True, "ok", 6)


@pytest.mark.asyncio
async def test_unknown_accounts_are_none(client: NodeClient) -> None:
    assert await client.user(BOB.pubkey, 0) is None
    assert await client.user_stats(BOB.pubkey) is None
    assert await client.perp_market(9) is None
    assert await client.spot_market(99) is None
    assert await client.oracle("DOGE/USD") is None


@pytest.mark.asyncio
async def test_connections_have_tcp_nodelay() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"{")
        await release.wait()  # keeps the connection busy while the client looks at it
        await response.write(b"}")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/slot", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        async with (
            NodeClient(url) as client,
            asyncio.timeout(10),
            client.session.get(url + "/v1/slot") as response,
        ):
            assert response.connection is not None
            transport = response.connection.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            release.set()
            assert await response.read() == b"{}"
    finally:
        await runner.cleanup()


# --- a scripted server ----------------------------------------------------------------------
Answer = tuple[int, bytes]


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[Callable[[list[Answer]], tuple[str, list[str]]]]:
    """A server answering each request with the next of a list of (status, body)."""
    runners: list[web.AppRunner] = []

    async def serve(answers: list[Answer]) -> tuple[str, list[str]]:
        seen: list[str] = []

        async def handler(request: web.Request) -> web.Response:
            seen.append(f"{request.method} {request.path}")
            status, body = answers.pop(0)
            return web.Response(status=status, body=body, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}", seen

    yield serve  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


def quick_client(url: str, waits: list[float], attempts: int = 5) -> NodeClient:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return NodeClient(
        url, attempts=attempts, backoff=Backoff(0.1, 1.0), rng=random.Random(7), sleep=sleep
    )


BUSY = (503, b'{"ok":false,"detail":"the node is busy"}')
OK = (200, b'{"ok":true,"signature":"' + b"ab" * 64 + b'","slot":3,"records":[]}')


@pytest.mark.asyncio
async def test_503_is_retried_with_jittered_backoff(scripted: object) -> None:
    url, seen = await scripted([BUSY, BUSY, OK])  # type: ignore[operator]
    waits: list[float] = []
    async with quick_client(url, waits) as client:
        result = await client.send_tx(b"raw")
    assert (result.ok, result.slot, result.attempts) == (True, 3, 3)
    assert seen == ["POST /v1/tx"] * 3
    # attempt n waits between half and all of min(1.0, 0.1 * 2**n)
    assert len(waits) == 2
    assert 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2


@pytest.mark.asyncio
async def test_a_rejection_is_never_retried(scripted: object) -> None:
    rejected = (
        422,
        b'{"ok":false,"code":7001,"code_name":"InvalidSignature",'
        b'"detail":"signature 0 does not verify","field":"signatures[0]"}',
    )
    url, seen = await scripted([rejected])  # type: ignore[operator]
    waits: list[float] = []
    async with quick_client(url, waits) as client:
        result = await client.send_tx(b"raw")
    assert (result.ok, result.error_code, result.field) == (
        False,
        ErrorCode.InvalidSignature,
        "signatures[0]",
    )
    assert (len(seen), waits) == (1, [])


@pytest.mark.asyncio
async def test_other_errors_are_raised_with_their_status(scripted: object) -> None:
    url, seen = await scripted([(500, b"boom")])  # type: ignore[operator]
    async with quick_client(url, []) as client:
        with pytest.raises(NodeError) as err:
            await client.send_tx(b"raw")
    assert err.value.status == 500 and len(seen) == 1


@pytest.mark.asyncio
async def test_an_unreachable_node_is_unavailable_after_every_attempt() -> None:
    waits: list[float] = []
    async with quick_client(f"http://127.0.0.1:{free_port()}", waits, attempts=3) as client:
        with pytest.raises(NodeUnavailableError, match="failed 3 times"):
            await client.slot()
    assert len(waits) == 2
