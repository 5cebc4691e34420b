"""/health and /metrics over a real aiohttp server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from keepers.runtime.bot import Action, BotContext, Subscriptions
from keepers.runtime.executor import Executor
from keepers.runtime.health import HealthCheck, HealthServer
from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.supervisor import BotSetup, Supervisor, Watchdog
from keepers.runtime.timing import ManualTimer
from keepers.runtime.view import MarketState, View
from protocol.keys import Keypair
from tests.keepers.runtime_fakes import FakeNode

KEYPAIR = Keypair.from_seed(b"\x09" * 32)


async def get(server: HealthServer, path: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as response:
        if response.content_type == "application/json":
            return response.status, await response.json(), response.content_type
        return response.status, await response.text(), response.content_type


@pytest.mark.asyncio
async def test_health_is_ok_while_every_check_passes() -> None:
    timer = ManualTimer()
    state = MarketState(timer)
    state.set_slot(10, 1_700_000_000)
    dog = Watchdog("filler", 5.0, timer)
    check = HealthCheck(
        watchdogs=lambda: [dog],
        bus_connected=lambda: True,
        slot=lambda: state.slot,
        slot_age=state.slot_age,
        slot_stall_s=2.0,
    )
    async with HealthServer(check, RuntimeMetrics(), port=0) as server:
        assert server.port > 0
        status, body, _ = await get(server, "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["problems"] == []
    assert body["slot"] == 10
    assert body["bus_connected"] is True
    assert body["bots"]["filler"]["expired"] is False


@pytest.mark.asyncio
async def test_bus_disconnect_and_stalled_slot_fail_health() -> None:
    timer = ManualTimer()
    state = MarketState(timer)
    connected = [True]
    check = HealthCheck(
        bus_connected=lambda: connected[0],
        slot=lambda: state.slot,
        slot_age=state.slot_age,
        slot_stall_s=2.0,
    )
    async with HealthServer(check, RuntimeMetrics(), port=0) as server:
        status, body, _ = await get(server, "/health")
        assert status == 503  # no slot seen yet
        assert body["slot_age_s"] is None
        state.set_slot(5, 0)
        status, _, _ = await get(server, "/health")
        assert status == 200
        await timer.advance(2.5)
        status, body, _ = await get(server, "/health")
        assert status == 503
        assert body["slot_age_s"] == 2.5
        state.set_slot(5, 0)  # the same slot again is no progress
        status, _, _ = await get(server, "/health")
        assert status == 503
        state.set_slot(6, 0)
        status, _, _ = await get(server, "/health")
        assert status == 200
        connected[0] = False
        status, body, _ = await get(server, "/health")
        assert status == 503
        assert body["bus_connected"] is False
        assert body["status"] == "unhealthy"
        assert len(body["problems"]) == 1


@pytest.mark.asyncio
async def test_a_hung_bot_trips_health_through_its_watchdog() -> None:
    timer = ManualTimer()
    gate = asyncio.Event()

    class Hangs:
        name = "hangs"
        subscriptions = Subscriptions()
        calls = 0

        async def decide(self, view: View) -> list[Action]:
            Hangs.calls += 1
            if Hangs.calls >= 2:
                await gate.wait()
            return []

    metrics = RuntimeMetrics()
    state = MarketState(timer)
    state.set_slot(1, 0)
    supervisor = Supervisor(
        [
            BotSetup(
                name="hangs",
                factory=lambda _c: Hangs(),
                context=BotContext(name="hangs", authority=KEYPAIR.pubkey),
                keypair=KEYPAIR,
                interval=1.0,
                watchdog_timeout=3.0,
            )
        ],
        executor=Executor(FakeNode(), metrics, slot=lambda: state.slot, timer=timer),
        state=state,
        metrics=metrics,
        timer=timer,
    )
    check = HealthCheck(watchdogs=lambda: supervisor.watchdogs)
    task = asyncio.create_task(supervisor.run())
    try:
        async with HealthServer(check, metrics, port=0) as server:
            await timer.advance(0)
            status, _, _ = await get(server, "/health")
            assert status == 200
            await timer.advance(1.0)  # the second tick hangs
            await timer.advance(2.0)
            status, _, _ = await get(server, "/health")
            assert status == 200  # 3.0 s without a tick: at the limit
            await timer.advance(0.5)
            status, body, _ = await get(server, "/health")
            assert status == 503
            assert body["bots"]["hangs"]["expired"] is True
            assert body["bots"]["hangs"]["ticks"] == 1
            status, text, content_type = await get(server, "/metrics")
            assert status == 200
            assert content_type == "text/plain"
            assert 'keepers_bot_ticks_total{bot="hangs"} 1.0' in text
            assert 'keepers_bot_last_tick_age_seconds{bot="hangs"} 3.5' in text
            gate.set()
            await timer.advance(0)
            status, _, _ = await get(server, "/health")
            assert status == 200
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
