"""``/health`` and ``/metrics`` of a keeper process (aiohttp).

``GET /health`` answers 200 with ``{"status": "ok", ...}`` while the process is healthy and
503 with ``{"status": "unhealthy", "problems": [...]}`` when any of these holds:

* a bot's watchdog expired (no completed tick for its timeout: hung or crash-looping);
* the bus is disconnected;
* the slot stopped advancing (no new slot for ``slot_stall_s``), or none was seen yet;
* an extra check reports a problem (a keeper process adds one for its DLOB feed failing).

The body always lists every check (bots with their last-tick age, ticks and restarts; bus;
slot and its age), so an operator sees why. ``GET /metrics`` is the process's Prometheus
registry in the text format. Checks read the runtime's state at request time; nothing is
cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.supervisor import Watchdog


@dataclass(slots=True)
class HealthCheck:
    watchdogs: Callable[[], Iterable[Watchdog]] = list
    bus_connected: Callable[[], bool] | None = None
    slot: Callable[[], int] | None = None
    slot_age: Callable[[], float | None] | None = None
    slot_stall_s: float = 10.0
    details: dict[str, Callable[[], Any]] = field(default_factory=dict)
    checks: list[Callable[[], str | None]] = field(default_factory=list)  # a problem or None

    def evaluate(self) -> tuple[bool, dict[str, Any]]:
        problems: list[str] = []
        bots: dict[str, Any] = {}
        for dog in self.watchdogs():
            age = dog.age()
            bots[dog.name] = {
                "last_tick_age_s": round(age, 3),
                "timeout_s": dog.timeout,
                "ticks": dog.feeds,
                "expired": dog.expired,
            }
            if dog.expired:
                problems.append(f"bot {dog.name}: no tick for {age:.1f}s (> {dog.timeout}s)")
        body: dict[str, Any] = {"bots": bots}
        if self.bus_connected is not None:
            connected = self.bus_connected()
            body["bus_connected"] = connected
            if not connected:
                problems.append("bus disconnected")
        if self.slot_age is not None:
            slot_age = self.slot_age()
            body["slot"] = self.slot() if self.slot is not None else None
            body["slot_age_s"] = None if slot_age is None else round(slot_age, 3)
            if slot_age is None:
                problems.append("no slot seen yet")
            elif slot_age > self.slot_stall_s:
                problems.append(f"slot not advancing for {slot_age:.1f}s (> {self.slot_stall_s}s)")
        for check in self.checks:
            problem = check()
            if problem is not None:
                problems.append(problem)
        for name, read in self.details.items():
            body[name] = read()
        healthy = not problems
        body = {"status": "ok" if healthy else "unhealthy", "problems": problems, **body}
        return healthy, body


class HealthServer:
    """Serves :class:`HealthCheck` and :class:`RuntimeMetrics` on ``host:port`` (0: a free
    port; :attr:`port` is the bound one after :meth:`start`)."""

    def __init__(
        self,
        check: HealthCheck,
        metrics: RuntimeMetrics,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.check = check
        self.metrics = metrics
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/metrics", self._metrics)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self._port = int(addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _health(self, _request: web.Request) -> web.Response:
        healthy, body = self.check.evaluate()
        return web.json_response(body, status=200 if healthy else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
