"""The liquidator on its own, over a real Mosquitto: a node with leveraged users, and the
liquidator run through the keeper runtime exactly as ``keepers run`` builds it (no
``extra["users"]``: its accounts come from the process's user feed, the node's ``/v1/users``
pages and its users stream).

SOL-PERP is 10% initial / 5% maintenance margin. A maker M sells 145 SOL at $150 to three
takers, each with $1,000 of USDC (taker fee 10 bps):

* A: long 60 SOL for $9,009 (before the liquidator starts: it learns A from the pages);
* B: long 30 SOL for $4,504.50 (before);
* C: long 55 SOL for $8,258.25 (after the liquidator synced: it learns C from the stream).

SOL then falls to $135. A's collateral is 1,000 + 8,100 - 9,009 = $91 against $405 of
maintenance; C's 1,000 + 7,425 - 8,258.25 = $166.75 against $371.25; B's $545.50 covers its
$202.50. The liquidator must take over part of A's and C's longs, B must be left alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bots.liquidator import Liquidator
from keepers.config import load_config
from keepers.node import Node
from keepers.rpc import NodeClient
from keepers.runtime.process import BotProcess, make_bus, prepare_bots
from keepers.user_feed import UserCursor
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.instructions import MakerOrderRef, PlaceAndTakePerpOrder, PlacePerpOrder
from protocol.keys import Keypair
from protocol.state import OrderParams, User
from protocol.types import MarketType, OrderType, PositionDirection
from tests.keepers.node_helpers import (
    SOL_PERP,
    keypair,
    limit_params,
    node_config,
    open_account,
    oracle_update,
    sign,
)

CLUSTER = "standalone"
M, A, B, C, L = (keypair(n) for n in (60, 61, 62, 63, 64))
SOL = BASE_PRECISION
Q = QUOTE_PRECISION


def _key_file(path: Path, kp: Keypair) -> Path:
    path.write_text(json.dumps({"version": 1, "pubkey": kp.pubkey.hex(), "seed": kp.seed.hex()}))
    path.chmod(0o600)
    return path


async def _take(client: NodeClient, taker: Keypair, base: int, maker_order_id: int) -> None:
    slot = (await client.slot()).slot
    params = OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Long,
        base,
        SOL_PERP,
        price=150 * PRICE_PRECISION,
    )
    maker = (MakerOrderRef(M.pubkey, 0, maker_order_id),)
    result = await client.send_tx(
        sign([PlaceAndTakePerpOrder(taker.pubkey, 0, params, maker)], slot, taker)
    )
    assert result.ok, result


async def poll(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Until ``check()`` holds, looking every 20 ms (the caller bounds it)."""
    while True:
        done = check()
        if done if isinstance(done, bool) else await done:
            return
        await asyncio.sleep(0.02)


def _perp(user: User | None) -> tuple[int, int]:
    assert user is not None
    position = user.get_perp_position(SOL_PERP)
    assert position is not None
    return position.base_asset_amount, position.quote_asset_amount


@pytest.mark.asyncio
async def test_standalone_liquidator_liquidates_from_the_user_feed(
    tmp_path: Path, mosquitto: str
) -> None:
    config_node = node_config(
        tmp_path / "journal.sqlite", broker_url=mosquitto, cluster=CLUSTER, slot_ms=50
    )
    async with Node(config_node) as node, NodeClient(node.url) as client:
        slot = (await client.slot()).slot
        for kp, usdc in ((M, 1_000_000), (A, 1_000), (B, 1_000), (C, 1_000), (L, 100_000)):
            opened = await client.send_tx(open_account(kp, slot, usdc=usdc))
            assert opened.ok, opened
        ask = limit_params(SOL_PERP, PositionDirection.Short, 150 * PRICE_PRECISION, 145 * SOL)
        placed = await client.send_tx(sign([PlacePerpOrder(M.pubkey, 0, ask)], slot, M))
        assert placed.ok, placed
        maker = await client.user(M.pubkey)
        assert maker is not None
        order_id = maker.orders[-1].order_id
        await _take(client, A, 60 * SOL, order_id)
        await _take(client, B, 30 * SOL, order_id)

        config = load_config(
            env={},
            overrides=[
                ("node.url", node.url, "test"),
                ("bus.url", mosquitto, "test"),
                ("bus.cluster", CLUSTER, "test"),
                ("keys.default", str(_key_file(tmp_path / "liquidator.json", L)), "test"),
                ("metrics.enabled", False, "test"),
                ("runtime.startup_timeout_s", 20.0, "test"),
                ("bots.liquidator.derisk", False, "test"),
            ],
        )
        # what `keepers run` does (keepers.runtime.process.run_bots), keeping the process
        prepared = prepare_bots(config, ["liquidator"])
        assert "users" not in prepared[0].setup.context.extra
        assert prepared[0].subscriptions.users
        process = BotProcess(
            config,
            prepared,
            node=client,
            bus=make_bus(config, "liquidator"),
            snapshot_loader=client,
        )
        running = asyncio.create_task(process.run(), name="liquidator-process")
        try:
            async with asyncio.timeout(20):
                await process.ready.wait()
            feed = process.user_feed
            assert feed is not None and feed.is_synced
            assert process.supervisor is not None
            runner = process.supervisor.runners["liquidator"]
            async with asyncio.timeout(10):
                await poll(lambda: runner.ticks > 0)
            assert isinstance(runner.bot, Liquidator)
            assert isinstance(runner.bot._source, UserCursor)  # the feed's, not the caller's
            assert runner.bot.margin.count_liquidatable() == 0
            assert _perp(feed.users[(A.pubkey, 0)]) == (60 * SOL, -9_009 * Q)

            # C trades after the feed loaded its pages: the users stream must bring it
            await _take(client, C, 55 * SOL, order_id)
            c_before = await client.user(C.pubkey)
            async with asyncio.timeout(10):
                await feed.wait_until(lambda f: f.users.get((C.pubkey, 0)) == c_before)
            assert feed.stats.accounts_applied >= 2  # C and the maker it traded with

            crash = await client.send_tx(oracle_update(slot, "SOL/USD", 135 * PRICE_PRECISION))
            assert crash.ok, crash

            async def liquidated() -> bool:
                a, c = await client.user(A.pubkey), await client.user(C.pubkey)
                return _perp(a)[0] < 60 * SOL and _perp(c)[0] < 55 * SOL

            async with asyncio.timeout(15):
                await poll(liquidated)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

        a_base, c_base = (
            _perp(await client.user(A.pubkey))[0],
            _perp(await client.user(C.pubkey))[0],
        )
        assert 0 <= a_base < 60 * SOL and 0 <= c_base < 55 * SOL
        # B was healthy: untouched; every base A and C gave up is now the liquidator's
        assert _perp(await client.user(B.pubkey)) == (30 * SOL, -4_504_500_000)
        taken = _perp(await client.user(L.pubkey))[0]
        assert taken == (60 * SOL - a_base) + (55 * SOL - c_base)
        accepted = process.metrics.value(
            "keepers_tx_accepted_total", bot="liquidator", kind="liquidate_perp"
        )
        assert accepted >= 2
