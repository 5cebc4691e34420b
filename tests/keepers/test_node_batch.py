"""``POST /v1/txs`` end to end (a real node, journal and verify worker process), its framing
(:mod:`keepers.tx_batch`) and :meth:`keepers.rpc.NodeClient.send_txs`.

Expected values come from the inputs: an account is opened with 10,000 USDC (10,000 * 10**6
base units) and USDC's oracle is $1, so a deposit's notional equals its amount.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from keepers.node import Node
from keepers.rpc import NodeClient
from keepers.tx_batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_TXS,
    MAX_TX_BYTES,
    BatchError,
    join_batch,
    split_batch,
)
from protocol.constants import QUOTE_PRECISION
from protocol.error_codes import ErrorCode
from tests.keepers.node_helpers import GENESIS_SLOT, deposit, keypair, node_config, open_account

ALICE = keypair(1)
BOB = keypair(2)
CAROL = keypair(3)
SLOT1 = GENESIS_SLOT + 1
OPENED = 10_000 * QUOTE_PRECISION


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True) as running:
        running.clock.advance()
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_batch(http: aiohttp.ClientSession, node: Node, body: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/octet-stream"}
    async with asyncio.timeout(10):
        # a stream: aiohttp warns about (and the warning fails) raw bodies over 1 MiB
        data = io.BytesIO(body)
        async with http.post(node.url + "/v1/txs", data=data, headers=headers) as response:
            return response.status, msgspec.json.decode(await response.read())


async def metric(http: aiohttp.ClientSession, node: Node, name: str) -> float:
    async with http.get(node.url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def malformed_count(http: aiohttp.ClientSession, node: Node) -> float:
    return await metric(http, node, 'keepers_node_tx_rejected_total{code="MalformedTransaction"}')


def forged(raw: bytes) -> bytes:
    bad = bytearray(raw)
    bad[6] ^= 0x01  # the first byte of the first signature
    return bytes(bad)


# --- the endpoint -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_batch_of_good_transactions_is_accepted_in_order_and_durable(
    node: Node, http: aiohttp.ClientSession
) -> None:
    # the deposit needs the account the transaction before it opens: order matters
    txs = [open_account(ALICE, SLOT1), deposit(ALICE, SLOT1, 7), open_account(BOB, SLOT1)]
    status, body = await post_batch(http, node, join_batch(txs))
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [200, 200, 200]
    assert [r["answer"]["ok"] for r in results] == [True, True, True]
    seqs = [[(rec["seq"], rec["kind"]) for rec in r["answer"]["records"]] for r in results]
    assert seqs == [
        [(1, "new_user"), (2, "deposit")],
        [(3, "deposit")],
        [(4, "new_user"), (5, "deposit")],
    ]
    assert [bytes.fromhex(r["answer"]["signature"]) for r in results] == [t[6:70] for t in txs]
    # answered only once durable: the journal holds every one, in the batch's order
    assert [e.tx for e in node.ledger.journal.entries()] == txs
    users = node.ledger.state.users
    assert users[(ALICE.pubkey, 0)].total_deposits == OPENED + 7
    assert users[(BOB.pubkey, 0)].total_deposits == OPENED
    assert await metric(http, node, "keepers_node_tx_accepted_total") == 3
    assert await metric(http, node, "keepers_node_tx_seconds_count") == 3


@pytest.mark.asyncio
async def test_each_transaction_of_a_mixed_batch_gets_its_own_answer(
    node: Node, http: aiohttp.ClientSession
) -> None:
    good = open_account(ALICE, SLOT1)
    txs = [
        good,
        forged(open_account(BOB, SLOT1)),
        deposit(CAROL, SLOT1, 5),  # no account for CAROL
        good,  # the same id again
        b"junk",
        open_account(BOB, SLOT1),
    ]
    status, body = await post_batch(http, node, join_batch(txs))
    assert status == 200
    answers = [(r["status"], r["answer"].get("code_name")) for r in body["results"]]
    assert answers == [
        (200, None),
        (422, "InvalidSignature"),
        (422, "UserNotFound"),
        (422, "DuplicateTransaction"),
        (422, "MalformedTransaction"),
        (200, None),
    ]
    assert body["results"][1]["answer"]["field"] == "signatures[0]"
    assert body["results"][2]["answer"]["code"] == int(ErrorCode.UserNotFound)
    assert [e.tx for e in node.ledger.journal.entries()] == [txs[0], txs[5]]
    assert set(node.ledger.state.users) == {(ALICE.pubkey, 0), (BOB.pubkey, 0)}


@pytest.mark.asyncio
async def test_broken_framing_is_400_naming_the_problem_and_counted(
    node: Node, http: aiohttp.ClientSession
) -> None:
    good = open_account(ALICE, SLOT1)
    cut = join_batch([good])[:-1]  # the frame's length promises one byte more than is there
    status, body = await post_batch(http, node, cut)
    assert status == 400
    assert body == {
        "ok": False,
        "detail": f"frame 0 at byte 0: length {len(good)} runs past the end of the body "
        f"({len(good) - 1} bytes left)",
    }
    status, body = await post_batch(http, node, join_batch([good]) + b"\x00\x00")
    assert (status, body["detail"]) == (
        400,
        f"frame 1 at byte {4 + len(good)}: 2 bytes, too short for a length",
    )
    status, body = await post_batch(http, node, bytes(4))
    assert (status, body["detail"]) == (400, "frame 0 at byte 0: length 0 (an empty frame)")
    status, body = await post_batch(http, node, b"")
    assert status == 400 and body["detail"].startswith("empty batch")
    assert await malformed_count(http, node) == 4
    assert node.ledger.last_index == 0  # a refused batch executes nothing, not even its head


@pytest.mark.asyncio
async def test_an_oversize_batch_is_413_naming_the_limit(
    node: Node, http: aiohttp.ClientSession
) -> None:
    one = (1).to_bytes(4, "little") + b"x"
    status, body = await post_batch(http, node, one * (MAX_BATCH_TXS + 1))
    assert status == 413
    assert body["detail"] == f"more than the limit of {MAX_BATCH_TXS} transactions in one batch"
    huge = (MAX_TX_BYTES + 1).to_bytes(4, "little") + bytes(MAX_TX_BYTES + 1)
    status, body = await post_batch(http, node, huge)
    assert status == 413
    assert body["detail"] == (
        f"frame 0 at byte 0: length {MAX_TX_BYTES + 1} exceeds the limit of "
        f"{MAX_TX_BYTES} bytes per transaction"
    )
    status, body = await post_batch(http, node, bytes(MAX_BATCH_BYTES + 1))
    assert status == 413
    assert body["detail"] == f"batch body larger than the limit of {MAX_BATCH_BYTES} bytes"
    assert await malformed_count(http, node) == 3
    assert node.ledger.last_index == 0


@pytest.mark.asyncio
async def test_a_batch_before_the_first_slot_is_503(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with Node(node_config(tmp_path / "node.db"), manual_clock=True) as node:
        status, body = await post_batch(http, node, join_batch([open_account(ALICE, SLOT1)]))
        assert (status, body) == (503, {"ok": False, "detail": "the node is not ready"})


@pytest.mark.asyncio
async def test_items_past_the_queue_bound_are_503_each(tmp_path: Path) -> None:
    async with (
        Node(node_config(tmp_path / "node.db", max_queue=2), manual_clock=True) as node,
        aiohttp.ClientSession() as http,
    ):
        node.clock.advance()
        txs = [open_account(ALICE, SLOT1), open_account(BOB, SLOT1), open_account(CAROL, SLOT1)]
        status, body = await post_batch(http, node, join_batch(txs))
        assert status == 200
        assert [r["status"] for r in body["results"]] == [200, 200, 503]
        assert body["results"][2]["answer"] == {"ok": False, "detail": "the node is busy"}


# --- the client ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_send_txs_returns_one_result_per_transaction_in_order(node: Node) -> None:
    txs = [open_account(ALICE, SLOT1), forged(open_account(BOB, SLOT1)), deposit(ALICE, SLOT1, 3)]
    async with NodeClient(node.url) as client:
        results = await client.send_txs(txs)
        assert [(r.ok, r.error_code, r.attempts) for r in results] == [
            (True, None, 1),
            (False, ErrorCode.InvalidSignature, 1),
            (True, None, 1),
        ]
        assert [r.signature for r in results] == [txs[0][6:70], None, txs[2][6:70]]
        assert [r.seq for r in results[2].sequenced_records()] == [3]
        with pytest.raises(BatchError, match="1 to 1024 transactions, not 0"):
            await client.send_txs([])


@pytest.mark.asyncio
async def test_send_txs_resends_what_the_node_was_too_busy_for(tmp_path: Path) -> None:
    async with Node(node_config(tmp_path / "node.db", max_queue=1), manual_clock=True) as node:
        node.clock.advance()
        txs = [open_account(ALICE, SLOT1), open_account(BOB, SLOT1), open_account(CAROL, SLOT1)]
        async with NodeClient(node.url) as client:
            results = await client.send_txs(txs)
        # one admitted per round: the other two come back 503 and go again
        assert [(r.ok, r.attempts) for r in results] == [(True, 1), (True, 2), (True, 3)]
        assert [e.tx for e in node.ledger.journal.entries()] == txs


@pytest.mark.asyncio
async def test_send_txs_gives_up_on_busy_items_after_its_attempts(tmp_path: Path) -> None:
    async with Node(node_config(tmp_path / "node.db", max_queue=1), manual_clock=True) as node:
        node.clock.advance()
        txs = [open_account(ALICE, SLOT1), open_account(BOB, SLOT1), open_account(CAROL, SLOT1)]
        async with NodeClient(node.url, attempts=2) as client:
            results = await client.send_txs(txs)
        assert [(r.ok, r.code, r.detail, r.attempts) for r in results] == [
            (True, None, "", 1),
            (True, None, "", 2),
            (False, None, "the node is busy", 2),
        ]


@pytest.mark.asyncio
async def test_a_batch_past_a_limit_is_refused_before_it_is_sent(
    node: Node, http: aiohttp.ClientSession
) -> None:
    async with NodeClient(node.url) as client:
        with pytest.raises(BatchError, match=f"transaction 0 is {MAX_TX_BYTES + 1} bytes") as why:
            await client.send_txs([b"x" * (MAX_TX_BYTES + 1)])
    assert why.value.status == 413
    assert await malformed_count(http, node) == 0  # the node never saw it


# --- the framing --------------------------------------------------------------------------
def test_split_batch_returns_what_join_batch_framed() -> None:
    txs = [b"a", b"bc" * 300, bytes(range(256))]
    body = join_batch(txs)
    assert body[:5] == b"\x01\x00\x00\x00a"
    assert len(body) == 4 * 3 + 1 + 600 + 256
    assert split_batch(body) == txs


def test_join_batch_refuses_what_the_node_would() -> None:
    with pytest.raises(BatchError, match="1 to 1024 transactions, not 1025") as too_many:
        join_batch([b"x"] * (MAX_BATCH_TXS + 1))
    assert too_many.value.status == 413
    with pytest.raises(BatchError, match="transaction 1 is 0 bytes"):
        join_batch([b"x", b""])
    big = [bytes(MAX_TX_BYTES)] * 9  # each allowed, together past MAX_BATCH_BYTES
    with pytest.raises(BatchError, match=f"exceeds {MAX_BATCH_BYTES}"):
        join_batch(big)
