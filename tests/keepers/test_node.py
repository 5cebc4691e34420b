"""The node end to end: a real aiohttp server on a free port, a real journal, a manual clock;
publishing over a real Mosquitto (the ``mosquitto`` fixture).

Expected values are worked out from the inputs: genesis slot 5,000 at unix 1,700,000,000 and
400 ms slots, so slot 5,000 + n is at 1,700,000,000 + n * 400 // 1000; deposits of 10,000 USDC
are 10,000 * 10**6 base units; order events are counted per market by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

import keepers.journal
from keepers.accounts_json import from_builtins
from keepers.bus import make_transport, topics
from keepers.bus.brokers import free_port
from keepers.bus.client import BusClient
from keepers.bus.schemas import OracleMessage, OrderEvent, RecordMessage, SlotMessage
from keepers.journal import JournalError
from keepers.node import Node, NodeFailedError, build_genesis, run_node
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.state import OracleAccount, PerpMarket, SpotMarket, User, UserStats
from protocol.types import MarketType, OrderStatus, PositionDirection
from tests.keepers.node_helpers import (
    BTC_PERP,
    GENESIS_SLOT,
    GENESIS_TS,
    SOL_PERP,
    bid,
    cancel,
    deposit,
    keypair,
    node_config,
    open_account,
    oracle_update,
    sol_bid,
)

ALICE = keypair(1)
BOB = keypair(2)
SLOT1 = GENESIS_SLOT + 1  # the slot after the first tick


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True) as running:
        running.clock.advance()
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, node: Node, raw: bytes, path: str = "/v1/tx"
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/octet-stream"}
    async with asyncio.timeout(10):
        async with http.post(node.url + path, data=raw, headers=headers) as response:
            return response.status, msgspec.json.decode(await response.read())


async def get(http: aiohttp.ClientSession, node: Node, path: str) -> tuple[int, Any]:
    async with asyncio.timeout(10):
        async with http.get(node.url + path) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, msgspec.json.decode(body)
            return response.status, body.decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


# --- readiness ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_health_is_503_until_the_first_slot_then_200(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True) as node:
        status, body = await get(http, node, "/health")
        assert (status, body["status"]) == (503, "starting")
        status, body = await post(http, node, open_account(ALICE, GENESIS_SLOT))
        assert status == 503 and body["ok"] is False
        node.clock.advance()
        status, body = await get(http, node, "/health")
        assert status == 200
        assert body == {
            "status": "ok",
            "slot": SLOT1,
            "last_index": 0,
            "queue_depth": 0,
            "bus": "off",
        }


@pytest.mark.asyncio
async def test_slot_follows_the_clock(node: Node, http: aiohttp.ClientSession) -> None:
    assert await get(http, node, "/v1/slot") == (200, {"slot": 5_001, "ts": 1_700_000_000})
    node.clock.advance(4)  # slot 5,005: 5 slots of 400 ms after genesis = 2 s
    assert await get(http, node, "/v1/slot") == (200, {"slot": 5_005, "ts": 1_700_000_002})


# --- transactions -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_accepted_transaction_is_durable_and_answers_its_records(
    node: Node, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, node, open_account(ALICE, SLOT1))
    assert status == 200
    assert (body["ok"], body["slot"]) == (True, SLOT1)
    kinds = [(r["seq"], r["kind"]) for r in body["records"]]
    assert kinds == [(1, "new_user"), (2, "deposit")]
    deposit_record = body["records"][1]["payload"]
    assert deposit_record["amount"] == 10_000 * QUOTE_PRECISION
    assert deposit_record["authority"] == ALICE.pubkey.hex()
    assert deposit_record["direction"] == "deposit"
    # acknowledged only once durable: the journal holds it
    [entry] = list(node.ledger.journal.entries())
    assert entry.index == 1 and entry.slot == SLOT1 and entry.record_count == 2
    assert bytes.fromhex(body["signature"]) == entry.tx[6:70]


@pytest.mark.asyncio
async def test_a_replayed_transaction_is_a_duplicate(
    node: Node, http: aiohttp.ClientSession
) -> None:
    raw = open_account(ALICE, SLOT1)
    assert (await post(http, node, raw))[0] == 200
    status, body = await post(http, node, raw)
    assert status == 422
    assert body == {
        "ok": False,
        "code": int(ErrorCode.DuplicateTransaction),
        "code_name": "DuplicateTransaction",
        "detail": "already executed",
        "field": "signatures[0]",
    }


@pytest.mark.asyncio
async def test_a_malformed_body_is_422_naming_the_field_and_nothing_stops(
    node: Node, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, node, b"not a transaction")
    assert status == 422
    assert (body["code_name"], body["field"]) == ("MalformedTransaction", "magic")
    assert body["code"] == int(ErrorCode.MalformedTransaction)
    good = open_account(ALICE, SLOT1)
    status, body = await post(http, node, good[:-3])  # the last instruction cut short
    assert (status, body["code_name"], body["field"]) == (
        422,
        "MalformedTransaction",
        "instructions[1]",
    )
    status, body = await post(http, node, good + b"\x00")
    assert (status, body["code_name"], body["field"]) == (
        422,
        "MalformedTransaction",
        "transaction",
    )
    assert (await post(http, node, good))[0] == 200
    _, text = await get(http, node, "/metrics")
    assert metric(text, 'keepers_node_tx_rejected_total{code="MalformedTransaction"}') == 3
    assert metric(text, "keepers_node_tx_accepted_total") == 1


@pytest.mark.asyncio
async def test_a_bad_signature_is_422_invalid_signature_and_nothing_stops(
    node: Node, http: aiohttp.ClientSession
) -> None:
    good = open_account(ALICE, SLOT1)
    forged = bytearray(good)
    forged[6] ^= 0x01  # first byte of the first signature
    status, body = await post(http, node, bytes(forged))
    assert status == 422
    assert (body["code_name"], body["field"]) == ("InvalidSignature", "signatures[0]")
    assert node.ledger.last_index == 0
    assert (await post(http, node, good))[0] == 200
    _, text = await get(http, node, "/metrics")
    assert metric(text, 'keepers_node_tx_rejected_total{code="InvalidSignature"}') == 1


@pytest.mark.asyncio
async def test_an_oversized_body_is_a_malformed_transaction(
    node: Node, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, node, b"\x00" * (600 * 1024))
    assert (status, body["code_name"], body["field"]) == (
        422,
        "MalformedTransaction",
        "transaction",
    )


@pytest.mark.asyncio
async def test_simulate_commits_nothing(node: Node, http: aiohttp.ClientSession) -> None:
    raw = open_account(ALICE, SLOT1)
    hash_before = node.ledger.state_hash()
    status, body = await post(http, node, raw, "/v1/simulate")
    assert status == 200
    assert [(r["seq"], r["kind"]) for r in body["records"]] == [(1, "new_user"), (2, "deposit")]
    assert node.ledger.state_hash() == hash_before
    assert node.ledger.last_index == 0
    # the id was not consumed: the real send is accepted, with the same sequence numbers
    status, body = await post(http, node, raw)
    assert status == 200 and [r["seq"] for r in body["records"]] == [1, 2]
    status, body = await post(http, node, deposit(ALICE, SLOT1, 7), "/v1/simulate")
    assert status == 200 and body["records"][0]["payload"]["amount"] == 7
    status, body = await post(http, node, b"junk", "/v1/simulate")
    assert (status, body["code_name"]) == (422, "MalformedTransaction")


@pytest.mark.asyncio
async def test_a_full_pipeline_answers_503_and_counts_it(tmp_path: Path) -> None:
    config = node_config(tmp_path / "node.db", max_queue=2)
    async with Node(config, manual_clock=True) as node:
        node.clock.advance()
        # submit() admits synchronously; nothing is answered until the loop runs again
        first = node.submit(open_account(ALICE, SLOT1))
        second = node.submit(open_account(BOB, SLOT1))
        third = node.submit(deposit(ALICE, SLOT1, 1))
        assert isinstance(first, asyncio.Future) and isinstance(second, asyncio.Future)
        assert not isinstance(third, asyncio.Future)
        assert third.status == 503
        assert node.queue_depth == 2
        async with asyncio.timeout(10):
            answers = [await first, await second]
        assert [a.status for a in answers] == [200, 200]
        assert node.queue_depth == 0
        assert node.metrics.registry.get_sample_value("keepers_node_backpressure_total") == 1


@pytest.mark.asyncio
async def test_a_caller_that_gives_up_still_gets_its_transaction_executed(node: Node) -> None:
    waiting = node.submit(open_account(ALICE, SLOT1))
    assert isinstance(waiting, asyncio.Future)
    waiting.cancel()  # the HTTP client went away
    async with asyncio.timeout(10):
        await node.wait_durable(1)  # resolved by the same callback that answers it
    assert node.queue_depth == 0
    assert (ALICE.pubkey, 0) in node.ledger.state.users


def break_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> float:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keepers.journal, "_write_items", failing)


@pytest.mark.asyncio
async def test_a_failed_journal_stops_all_acceptance(
    node: Node, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_the_disk(monkeypatch)
    status, body = await post(http, node, open_account(ALICE, SLOT1))
    assert (status, body["ok"]) == (503, False)  # executed in memory, never acknowledged
    async with asyncio.timeout(5):
        failure = await node.wait_failed()
    assert isinstance(failure, keepers.journal.JournalFailedError)
    status, body = await get(http, node, "/health")
    assert (status, body["status"]) == (503, "failed")
    status, _ = await post(http, node, open_account(BOB, SLOT1))
    assert status == 503


@pytest.mark.asyncio
async def test_run_node_is_ready_after_the_first_slot_and_raises_when_its_journal_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = node_config(tmp_path / "node.db", port=port, slot_ms=20)
    ready = asyncio.Event()
    running = asyncio.create_task(run_node(config, ready=ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        async with http.get(f"http://127.0.0.1:{port}/health") as response:
            assert response.status == 200
        break_the_disk(monkeypatch)
        headers = {"Content-Type": "application/octet-stream"}
        async with http.post(
            f"http://127.0.0.1:{port}/v1/tx", data=open_account(ALICE, SLOT1), headers=headers
        ) as response:
            assert response.status == 503
        with pytest.raises(NodeFailedError):
            async with asyncio.timeout(10):
                await running
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, NodeFailedError):
            await running


# --- reads --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_account_reads_decode_to_the_nodes_dataclasses(
    node: Node, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, node, open_account(ALICE, SLOT1)))[0] == 200
    assert (await post(http, node, sol_bid(ALICE, SLOT1, 140)))[0] == 200
    state = node.ledger.state

    status, body = await get(http, node, f"/v1/users/{ALICE.pubkey.hex()}/0")
    assert status == 200
    user = from_builtins(User, body)
    assert user == state.users[(ALICE.pubkey, 0)]
    assert user.orders[0].price == 140 * PRICE_PRECISION
    assert body["orders"][0]["direction"] == int(PositionDirection.Long)

    status, body = await get(http, node, f"/v1/user-stats/{ALICE.pubkey.hex()}")
    assert status == 200 and from_builtins(UserStats, body) == state.user_stats[ALICE.pubkey]
    status, body = await get(http, node, "/v1/markets/perp/0")
    assert status == 200 and from_builtins(PerpMarket, body) == state.perp_markets[SOL_PERP]
    status, body = await get(http, node, "/v1/markets/spot/1")
    assert status == 200 and from_builtins(SpotMarket, body) == state.spot_markets[1]
    assert await get(http, node, "/v1/markets") == (
        200,
        {"perp": [0, 1, 2], "spot": list(range(12))},
    )
    status, body = await get(http, node, "/v1/oracles/SOL%2FUSD")
    assert status == 200
    oracle = from_builtins(OracleAccount, body)
    assert (oracle.oracle_id, oracle.price, oracle.confidence, oracle.publish_slot) == (
        "SOL/USD",
        150 * PRICE_PRECISION,
        15_000,  # the default confidence: 1 bp of $150
        GENESIS_SLOT,
    )


@pytest.mark.asyncio
async def test_unknown_accounts_are_404_and_bad_paths_400(
    node: Node, http: aiohttp.ClientSession
) -> None:
    status, body = await get(http, node, f"/v1/users/{BOB.pubkey.hex()}/0")
    assert status == 404 and body["ok"] is False
    assert (await get(http, node, f"/v1/user-stats/{BOB.pubkey.hex()}"))[0] == 404
    assert (await get(http, node, "/v1/markets/perp/7"))[0] == 404
    assert (await get(http, node, "/v1/markets/spot/99"))[0] == 404
    assert (await get(http, node, "/v1/oracles/DOGE%2FUSD"))[0] == 404
    assert (await get(http, node, "/v1/users/zz/0"))[0] == 400
    assert (await get(http, node, f"/v1/users/{BOB.pubkey.hex()}/x"))[0] == 400
    assert (await get(http, node, "/v1/orders/snapshot?market_type=perp"))[0] == 400
    assert (await get(http, node, "/v1/orders/snapshot?market_type=x&market_index=0"))[0] == 400


@pytest.mark.asyncio
async def test_the_order_snapshot_is_the_open_orders_at_the_markets_event_count(
    node: Node, http: aiohttp.ClientSession
) -> None:
    for raw in (
        open_account(ALICE, SLOT1),
        open_account(BOB, SLOT1),
        sol_bid(ALICE, SLOT1, 140),  # alice #1
        sol_bid(ALICE, SLOT1, 141),  # alice #2
        sol_bid(BOB, SLOT1, 139),  # bob #1
        bid(ALICE, SLOT1, BTC_PERP, 50_000 * PRICE_PRECISION, BASE_PRECISION // 1000),  # #3
        cancel(ALICE, SLOT1, 1),
    ):
        assert (await post(http, node, raw))[0] == 200
    node.clock.advance()
    status, body = await get(http, node, "/v1/orders/snapshot?market_type=perp&market_index=0")
    assert status == 200
    # SOL-PERP events: place, place, place, cancel
    assert (body["market_type"], body["market_index"], body["market_seq"], body["slot"]) == (
        "perp",
        0,
        4,
        SLOT1 + 1,
    )
    orders = [msgspec.convert(o, OrderEvent) for o in body["orders"]]
    found = sorted((e.user_key[0], e.order.order_id, e.order.price) for e in orders)
    assert found == sorted(
        [(ALICE.pubkey, 2, 141 * PRICE_PRECISION), (BOB.pubkey, 1, 139 * PRICE_PRECISION)]
    )
    assert {(e.action, e.market_seq, e.order.status) for e in orders} == {
        ("place", 4, OrderStatus.Open)
    }
    status, body = await get(http, node, "/v1/orders/snapshot?market_type=perp&market_index=1")
    assert (status, body["market_seq"], len(body["orders"])) == (200, 1, 1)
    status, body = await get(http, node, "/v1/orders/snapshot?market_type=spot&market_index=1")
    assert (status, body["market_seq"], body["orders"]) == (200, 0, [])


@pytest.mark.asyncio
async def test_metrics_expose_the_pipeline_and_the_journal(
    node: Node, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, node, open_account(ALICE, SLOT1)))[0] == 200
    status, text = await get(http, node, "/metrics")
    assert status == 200
    assert metric(text, "keepers_node_tx_accepted_total") == 1
    assert metric(text, "keepers_node_queue_depth") == 0
    assert metric(text, "keepers_node_slot") == SLOT1
    assert metric(text, "keepers_node_journal_entries_total") == 1
    assert metric(text, 'keepers_node_journal_batch_size_bucket{le="1"}') == 1
    assert metric(text, "keepers_node_journal_batch_size_count") == 1


# --- restart ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_restart_restores_the_state_hash_and_continues_market_seq(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = node_config(tmp_path / "node.db", snapshot_every=3)
    async with Node(config, manual_clock=True) as node:
        node.clock.advance()
        for raw in (
            open_account(ALICE, SLOT1),
            sol_bid(ALICE, SLOT1, 140),
            sol_bid(ALICE, SLOT1, 141),
            cancel(ALICE, SLOT1, 1),
        ):
            assert (await post(http, node, raw))[0] == 200
        node.clock.advance(2)
    assert node.final_hash is not None
    async with Node(config, manual_clock=True) as again:
        assert again.restored_hash == node.final_hash
        assert again.events.market_seq(MarketType.Perp, SOL_PERP) == 3
        # the clock resumes at the last journaled slot; time stood still while down
        assert again.clock.slot == SLOT1
        again.clock.advance()
        assert (await post(http, again, sol_bid(ALICE, SLOT1 + 1, 142)))[0] == 200
        _, snapshot = await get(http, again, "/v1/orders/snapshot?market_type=perp&market_index=0")
        assert snapshot["market_seq"] == 4
        assert sorted(o["order"]["order_id"] for o in snapshot["orders"]) == [2, 3]


@pytest.mark.asyncio
async def test_a_journal_from_another_genesis_is_refused(tmp_path: Path) -> None:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True):
        pass
    other = node_config(tmp_path / "node.db", genesis_prices={"SOL/USD": 151 * PRICE_PRECISION})
    with pytest.raises(JournalError, match="different genesis"):
        async with Node(other, manual_clock=True):
            pass


@pytest.mark.asyncio
async def test_a_node_that_cannot_listen_fails_to_start_and_releases_its_journal(
    tmp_path: Path,
) -> None:
    async with Node(node_config(tmp_path / "a.db"), manual_clock=True) as first:
        taken = node_config(tmp_path / "b.db", port=first.port)
        with pytest.raises(OSError):
            async with Node(taken, manual_clock=True):
                pass
    # the second journal was closed cleanly: it opens again
    async with Node(node_config(tmp_path / "b.db"), manual_clock=True) as again:
        assert again.ledger.restored.clean_shutdown


def test_genesis_is_the_default_table_with_the_configured_keys(tmp_path: Path) -> None:
    config = node_config(tmp_path / "x.db", genesis_prices={"SOL/USD": 151 * PRICE_PRECISION})
    genesis = build_genesis(config)
    assert genesis.state.oracle_authority == config.oracle_authority
    assert genesis.oracles["SOL/USD"].price == 151 * PRICE_PRECISION
    assert genesis.oracles["BTC/USD"].price == 60_000 * PRICE_PRECISION
    assert genesis.oracles["SOL/USD"].publish_slot == GENESIS_SLOT
    assert genesis.spot_markets[0].last_interest_ts == GENESIS_TS


# --- the bus --------------------------------------------------------------------------------
async def collect(bus: BusClient, done: Any, seconds: float = 10.0) -> list[Any]:
    """Deliveries until ``done(received)`` holds (bounded)."""
    received: list[Any] = []
    async with asyncio.timeout(seconds):
        while not done(received):
            received.append(await bus.get())
    return received


async def connected(node: Node) -> None:
    assert node.bus is not None
    async with asyncio.timeout(10):
        await node.bus.wait_connected()


async def subscriber(url: str, name: str, filters: list[str]) -> BusClient:
    bus = BusClient(make_transport(None, url, name))
    await bus.subscribe(filters)
    await bus.start()
    async with asyncio.timeout(10):
        await bus.wait_connected()
    return bus


@pytest.mark.asyncio
async def test_order_events_reach_mosquitto_with_gap_free_market_seq(
    tmp_path: Path, mosquitto: str, http: aiohttp.ClientSession
) -> None:
    cluster = "t1"
    config = node_config(tmp_path / "node.db", broker_url=mosquitto, cluster=cluster)
    watcher = await subscriber(
        mosquitto, "watcher", [topics.all_orders(cluster), topics.all_records(cluster)]
    )
    try:
        async with Node(config, manual_clock=True) as node:
            node.clock.advance()
            await connected(node)
            answers = []
            for raw in (
                open_account(ALICE, SLOT1),
                open_account(BOB, SLOT1),
                sol_bid(ALICE, SLOT1, 140),
                sol_bid(ALICE, SLOT1, 141),
                sol_bid(BOB, SLOT1, 139),
                bid(ALICE, SLOT1, BTC_PERP, 50_000 * PRICE_PRECISION, BASE_PRECISION // 1000),
                cancel(ALICE, SLOT1, 1),
                oracle_update(SLOT1, "SOL/USD", 151 * PRICE_PRECISION),
            ):
                status, body = await post(http, node, raw)
                assert status == 200, body
                answers.append(body)
            committed = [r for body in answers for r in body["records"]]

            def everything(got: list[Any]) -> bool:
                return sum(1 for d in got if isinstance(d.message, RecordMessage)) == len(committed)

            deliveries = await collect(watcher, everything)
            events = [d.message for d in deliveries if isinstance(d.message, OrderEvent)]
            records = [d.message for d in deliveries if isinstance(d.message, RecordMessage)]
            # every committed record, in commit order, with its global seq
            assert [(r.seq, r.kind) for r in records] == [(r["seq"], r["kind"]) for r in committed]
            by_market: dict[tuple[MarketType, int], list[tuple[int, str]]] = {}
            for event in events:
                key = (event.market_type, event.market_index)
                by_market.setdefault(key, []).append((event.market_seq, event.action.value))
            assert by_market == {
                (MarketType.Perp, SOL_PERP): [
                    (1, "place"),
                    (2, "place"),
                    (3, "place"),
                    (4, "cancel"),
                ],
                (MarketType.Perp, BTC_PERP): [(1, "place")],
            }
            # each event's seq is its order_action record's
            order_seqs = [r["seq"] for r in committed if r["kind"] == "order_action"]
            assert [e.seq for e in events] == order_seqs
            cancelled = events[-1]
            assert (cancelled.order.order_id, cancelled.order.price) == (1, 140 * PRICE_PRECISION)
            _, snapshot = await get(
                http, node, "/v1/orders/snapshot?market_type=perp&market_index=0"
            )
            assert snapshot["market_seq"] == by_market[(MarketType.Perp, SOL_PERP)][-1][0]
            async with asyncio.timeout(10):
                await node.publisher.wait_idle()  # type: ignore[union-attr]
            stats = node.publisher.stats  # type: ignore[union-attr]
            assert stats.dropped == 0
            lags = node.metrics.registry.get_sample_value("keepers_node_publish_lag_seconds_count")
            assert lags == stats.published >= len(committed) + len(events) + 1  # + the oracle
    finally:
        await watcher.close()


@pytest.mark.asyncio
async def test_slot_and_oracle_are_retained_for_late_subscribers(
    tmp_path: Path, mosquitto: str, http: aiohttp.ClientSession
) -> None:
    cluster = "t2"
    config = node_config(tmp_path / "node.db", broker_url=mosquitto, cluster=cluster)
    async with Node(config, manual_clock=True) as node:
        await connected(node)
        node.clock.advance()
        status, _ = await post(http, node, oracle_update(SLOT1, "SOL/USD", 152 * PRICE_PRECISION))
        assert status == 200
        node.clock.advance(2)  # slot 5,003 at 1,700,000,001
        async with asyncio.timeout(10):
            await node.publisher.wait_idle()  # type: ignore[union-attr]
        late = await subscriber(
            mosquitto, "late", [topics.slot(cluster), topics.oracle(cluster, "SOL/USD")]
        )
        try:
            got = await collect(late, lambda got: len(got) == 2)
        finally:
            await late.close()
    messages = {type(d.message): d.message for d in got}
    assert messages[SlotMessage] == SlotMessage(slot=5_003, ts=1_700_000_001)
    assert messages[OracleMessage] == OracleMessage(
        oracle_id="SOL/USD", price=152 * PRICE_PRECISION, confidence=15_200, slot=SLOT1
    )


class BrokerLink:
    """A TCP relay between the node and the broker that a test can cut: while it is cut,
    nothing listens on its port (connections are refused) and live connections are dropped,
    as if the broker were unreachable; the test's own subscriber stays connected directly."""

    def __init__(self, broker_url: str) -> None:
        host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
        self._host, self._port = host, int(port)
        self._listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BrokerLink:
        await self.restore()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()
        for task in list(self._pipes):
            task.cancel()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self._listen_port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self._listen_port, reuse_address=True
        )
        self._listen_port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


@pytest.mark.asyncio
async def test_events_are_held_while_the_broker_is_unreachable_and_delivered_after(
    tmp_path: Path, mosquitto: str, http: aiohttp.ClientSession
) -> None:
    cluster = "t3"
    watcher = await subscriber(mosquitto, "watcher3", [topics.all_orders(cluster)])
    try:
        async with BrokerLink(mosquitto) as link:
            config = node_config(tmp_path / "node.db", broker_url=link.url, cluster=cluster)
            async with Node(config, manual_clock=True) as node:
                node.clock.advance()
                await connected(node)
                assert node.bus is not None
                lost = asyncio.Event()
                node.bus.transport.add_disconnect_listener(lambda cause: lost.set())
                await link.cut()
                async with asyncio.timeout(10):
                    await lost.wait()
                # the node keeps serving while the broker is away; the events wait
                assert (await post(http, node, open_account(ALICE, SLOT1)))[0] == 200
                assert (await post(http, node, sol_bid(ALICE, SLOT1, 140)))[0] == 200
                assert (await post(http, node, sol_bid(ALICE, SLOT1, 141)))[0] == 200
                assert node.publisher is not None and node.publisher.depth > 0
                assert watcher.get_nowait() is None
                await link.restore()
                got = await collect(watcher, lambda got: len(got) >= 2, seconds=20)
                assert node.publisher.stats.dropped == 0
    finally:
        await watcher.close()
    events = [d.message for d in got]
    assert all(isinstance(e, OrderEvent) for e in events)
    assert [(e.market_seq, e.order.price) for e in events] == [
        (1, 140 * PRICE_PRECISION),
        (2, 141 * PRICE_PRECISION),
    ]
