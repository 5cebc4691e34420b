"""Kill the node (a real ``python -m keepers.node`` process, SIGKILL) in the middle of concurrent
traffic and restart it on the same journal: no acknowledged transaction is lost, the restored
state hash equals an independent re-execution of the journal, and each market's order-event
numbers continue without a gap (checked over a real Mosquitto).

Every user's deposits are distinct powers of two (deposit ``k`` is ``2**k`` USDC base units), so
a user's ``cumulative_deposits`` says exactly which of its deposits the node applied: that set
must contain every acknowledged one and nothing that was never sent. Orders carry distinct
``user_order_id`` values for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keepers.bus import make_transport, topics
from keepers.bus.brokers import free_port
from keepers.bus.client import BusClient
from keepers.bus.schemas import OrderEvent
from keepers.node import build_genesis
from keepers.rpc import NodeClient, NodeError
from protocol.clock import Clock
from protocol.constants import PRICE_PRECISION, QUOTE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.records import OrderActionRecord
from protocol.state_hash import state_hash
from protocol.types import MarketType
from tests.keepers.node_helpers import (
    GENESIS_SLOT,
    GENESIS_TS,
    ORACLE,
    SOL_PERP,
    bid,
    deposit,
    keypair,
    node_config,
    open_account,
)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "crash"
USERS = 12
DEPOSITS = 24  # per user: amounts 2**0 ... 2**23 base units
ORDER_EVERY = 3  # a resting bid after every third deposit
KILL_AFTER_ACKS = 120
INITIAL = 10_000 * QUOTE_PRECISION
MARKER_UID = 200
SLOT_MS = 100  # a 150-slot replay window is then 15 s: every acknowledged id is still fresh


@dataclass
class Sent:
    """What one user sent and what the node acknowledged."""

    deposits_sent: int = 0  # bitmask of amounts sent
    deposits_acked: int = 0
    orders_sent: set[int] = field(default_factory=set)  # user_order_ids
    orders_acked: set[int] = field(default_factory=set)
    acked_raw: list[bytes] = field(default_factory=list)


def node_args(journal: Path, port: int, broker: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "keepers.node",
        "--journal",
        str(journal),
        "--port",
        str(port),
        "--broker",
        broker,
        "--cluster",
        CLUSTER,
        "--slot-ms",
        str(SLOT_MS),
        "--genesis-slot",
        str(GENESIS_SLOT),
        "--genesis-ts",
        str(GENESIS_TS),
        "--oracle-authority",
        ORACLE.pubkey.hex(),
        "--snapshot-every",
        "50",  # restore starts from a snapshot, not from genesis
        "--checkpoint-every",
        "20",
        "--verify-workers",
        "1",
    ]


@contextlib.contextmanager
def node_process(
    journal: Path, port: int, broker: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 -- our own module, fixed arguments
            node_args(journal, port, broker), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def wait_healthy(client: NodeClient, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, "the node exited"
        with contextlib.suppress(NodeError):
            if (await client.health()).ok:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the node did not become healthy")


def log_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                events.append(obj)
    return events


def reexecute(journal: Path) -> tuple[str, dict[tuple[MarketType, int], int]]:
    """The state hash and per-market order-event counts of a bare Program that executes every
    journaled transaction from genesis, read straight from the SQLite file."""
    program = Program(build_genesis(node_config(journal)))
    counts: dict[tuple[MarketType, int], int] = {}
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        rows = conn.execute("SELECT slot, unix_timestamp, tx FROM entries ORDER BY idx")
        for slot, ts, raw in rows:
            result = program.execute_bytes(raw, Clock(slot, ts))
            assert isinstance(result, Executed), result
            for sequenced in result.records:
                record = sequenced.record
                if isinstance(record, OrderActionRecord):
                    key = (record.market_type, record.market_index)
                    counts[key] = counts.get(key, 0) + 1
    return state_hash(program.state, program.next_seq), counts


@dataclass
class Progress:
    acks: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)  # time to kill the node
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def ack(self) -> None:
        self.acks += 1
        if self.acks >= KILL_AFTER_ACKS:
            self.enough.set()


async def trade(client: NodeClient, kp: Keypair, sent: Sent, slot: int, progress: Progress) -> None:
    """One user's traffic: deposits of 2**k, a resting bid every few; stops at the first
    failure (the node died) or when told."""
    for k in range(DEPOSITS):
        if progress.stop.is_set():
            return
        raw = deposit(kp, slot, 2**k)
        sent.deposits_sent |= 2**k
        try:
            result = await client.send_tx(raw)
        except NodeError:
            return
        assert result.ok, result
        sent.deposits_acked |= 2**k
        sent.acked_raw.append(raw)
        progress.ack()
        if k % ORDER_EVERY == ORDER_EVERY - 1:
            uid = k // ORDER_EVERY + 1
            price = (100 + uid) * PRICE_PRECISION  # under the $150 oracle: rests
            raw = bid(kp, slot, SOL_PERP, price, 10**8, uid)  # 0.1 SOL
            sent.orders_sent.add(uid)
            try:
                result = await client.send_tx(raw)
            except NodeError:
                return
            assert result.ok, result
            sent.orders_acked.add(uid)
            sent.acked_raw.append(raw)


async def collect_events(bus: BusClient, into: list[OrderEvent], marker: asyncio.Event) -> None:
    """Order events as they arrive; ``marker`` is set by the post-restart order (uid 200)."""
    async for delivery in bus:
        if isinstance(delivery.message, OrderEvent):
            into.append(delivery.message)
            if delivery.message.order.user_order_id == MARKER_UID:
                marker.set()


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_sigkill_mid_run_loses_no_acknowledged_transaction(
    tmp_path: Path, mosquitto: str
) -> None:
    journal = tmp_path / "node.db"
    users = [keypair(10 + i) for i in range(USERS)]
    sent = {kp.pubkey: Sent() for kp in users}
    events: list[OrderEvent] = []
    watcher = BusClient(make_transport(None, mosquitto, "crash-watcher"))
    await watcher.subscribe([topics.all_orders(CLUSTER)])
    await watcher.start()
    async with asyncio.timeout(10):
        await watcher.wait_connected()
    marker = asyncio.Event()
    reader = asyncio.create_task(collect_events(watcher, events, marker))
    port = free_port()
    try:
        # --- first life: traffic, then SIGKILL while it flows ---------------------------------
        with node_process(journal, port, mosquitto, tmp_path / "node-1.log") as proc:
            async with NodeClient(f"http://127.0.0.1:{port}", attempts=1) as client:
                await wait_healthy(client, proc)
                slot = (await client.slot()).slot
                opened = await asyncio.gather(
                    *(client.send_tx(open_account(kp, slot)) for kp in users)
                )
                assert all(r.ok for r in opened)
                progress = Progress()
                traders = [
                    asyncio.create_task(trade(client, kp, sent[kp.pubkey], slot, progress))
                    for kp in users
                ]
                async with asyncio.timeout(30):
                    await progress.enough.wait()
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                assert proc.returncode == -signal.SIGKILL
                progress.stop.set()
                async with asyncio.timeout(30):
                    await asyncio.gather(*traders)
        assert progress.acks < USERS * DEPOSITS, "the kill came after the traffic ended"
        expected_hash, counts = reexecute(journal)
        published_before = len(events)

        # --- second life: restore, then check everything -------------------------------------
        log2 = tmp_path / "node-2.log"
        with node_process(journal, port, mosquitto, log2) as proc:
            async with NodeClient(f"http://127.0.0.1:{port}", attempts=1) as client:
                await wait_healthy(client, proc)
                restored = [e for e in log_events(log2) if e.get("event") == "node.restored"]
                assert [e["state_hash"] for e in restored] == [expected_hash]
                ledger_restored = [
                    e for e in log_events(log2) if e.get("event") == "ledger.restored"
                ]
                assert ledger_restored[0]["state_hash"] == expected_hash
                assert ledger_restored[0]["clean_shutdown"] is False

                for kp in users:
                    mine = sent[kp.pubkey]
                    user = await client.user(kp.pubkey, 0)
                    assert user is not None
                    [usdc] = [p for p in user.spot_positions if p.market_index == 0]
                    applied = usdc.cumulative_deposits - INITIAL
                    assert applied & mine.deposits_acked == mine.deposits_acked
                    assert applied & ~mine.deposits_sent == 0
                    resting = {o.user_order_id for o in user.orders}
                    assert mine.orders_acked <= resting <= mine.orders_sent
                    for raw in mine.acked_raw:
                        again = await client.send_tx(raw)
                        assert again.error_code == ErrorCode.DuplicateTransaction, again

                sol = (MarketType.Perp, SOL_PERP)
                snapshot = await client.orders_snapshot(MarketType.Perp, SOL_PERP)
                assert snapshot.market_seq == counts[sol]
                # one more order: its event continues the market's numbering
                now = (await client.slot()).slot
                more = await client.send_tx(
                    bid(users[0], now, SOL_PERP, 99 * PRICE_PRECISION, 10**8, MARKER_UID)
                )
                assert more.ok
                async with asyncio.timeout(10):
                    await marker.wait()
                assert events[-1].order.user_order_id == MARKER_UID
                assert events[-1].market_seq == counts[sol] + 1
                assert (await client.orders_snapshot(MarketType.Perp, SOL_PERP)).market_seq == (
                    counts[sol] + 1
                )
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
            assert proc.returncode == 0
            stopped = [e for e in log_events(log2) if e.get("event") == "node.stopped"]
            assert len(stopped) == 1 and stopped[0]["entries"] >= 1
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await watcher.close()

    # what reached the bus before the kill: every market's numbers from 1 with no gap
    before = events[:published_before]
    sol_seqs = [e.market_seq for e in before if (e.market_type, e.market_index) == sol]
    assert sol_seqs == list(range(1, len(sol_seqs) + 1))
    assert len(sol_seqs) <= counts[sol]
