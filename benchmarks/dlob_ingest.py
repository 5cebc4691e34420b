"""DLOB ingest from a real Mosquitto: events applied to the book per second, beside the bare
receive rate of the fastest MQTT client (gmqtt) on the same stream in the same run.

``python -m benchmarks.dlob_ingest [--events N] [--prefill K] [--rounds R]``

Against a Mosquitto this benchmark starts itself (``keepers.bus.brokers.MosquittoBroker``, the
project's configuration):

* the stream: ``N`` (default 50,000) order events of :class:`benchmarks.dlob_stream.OrderStream`
  over three markets (two perp, one spot): places of every order kind, partial and full fills,
  cancels, modifies and triggers, numbered as the node numbers them, on top of a book of ``K``
  (default 5,000) orders per market placed before the stream;
* every stage below holds the stream at the broker the same way: its subscriber connects and
  subscribes (QoS 1), stops reading its socket, the stream is published (the broker queues
  what the socket buffers cannot hold), then reading resumes and the clock starts. So every
  stage starts from the same broker state and none pays for connecting;
* **bare receive**: the payloads through the gmqtt transport's ``messages()`` alone;
* **bus receive**: through :class:`keepers.bus.BusClient` (decoded once, bounded queue);
* **DLOB ingest**: through a :class:`keepers.dlob_feed.DlobFeed` on a BusClient, synced first
  (its snapshot over HTTP is the book before the stream, ``market_seq`` ``K`` per market),
  timed until the last event is applied; the book is then checked equal, order by order, to
  the stream's.

Rates are the median over ``--rounds`` rounds (the stages alternate within a round, the broker
restarted before each so no stage inherits another's sessions); CPU is this process's
(``time.process_time``; the broker is another process). The process runs with the DLOB
server's GC thresholds (:func:`keepers.dlob_server.tune_gc`) for every stage, unless
``--default-gc``. The goal is an ingest rate of at least 80% of the bare receive rate.

A run with the defaults and ``--rounds 5`` on the reference machine (2 cores shared with
Mosquitto and with other work: load average ~3)::

    stage (gmqtt)                      msg/s  CPU us/msg  of bare
    -------------------------------------------------------------
    bare receive (messages())        110,420         6.0     100%
    bus receive (BusClient)           81,351         8.5      74%
    DLOB ingest (applied)             48,829        16.5      44%
    ingest / bare receive = 44% (misses the 80% goal)
    per round: 43%, 52%, 44%, 45%, 50%

and with ``--default-gc``: bare 117,288, bus 80,299, ingest 43,316 msg/s (37%; 18.7 us/msg).

Why the goal is missed: the bare receiver is broker-bound (6 us of CPU per message, the
process two-thirds idle), while ingest is CPU-bound in one Python process at ~16.5 us per
event: gmqtt's ~6 us (it writes one PUBACK per message to the socket), the bus client's
decode and queue ~2.5-3 us (the bus stage alone reaches only ~75% of bare), and the feed's
~5.5 us per applied event (measured inside its writer), about half of it the book's own
insert/remove into its sorted containers and half sequencing, order conversion and dispatch.
80% of bare would need ~11 us per event all told, less than the bus stage already spends.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from benchmarks.dlob_stream import (
    TICK_SIZE,
    MarketKey,
    OrderStream,
    book_orders,
    stream_orders,
)
from benchmarks.mqtt_transports import Receive, publish_all
from keepers.bus import BusClient, topics
from keepers.bus.brokers import MosquittoBroker
from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.dlob_feed import DlobFeed, FollowedMarket, HttpSnapshotLoader
from keepers.dlob_server import tune_gc
from protocol.types import MarketType

CLUSTER = "bench"
MARKETS: tuple[MarketKey, ...] = ((MarketType.Perp, 0), (MarketType.Perp, 1), (MarketType.Spot, 1))
FILTERS = [topics.orders(CLUSTER, t, i) for t, i in MARKETS]
WAIT = 300.0


@dataclass(frozen=True, slots=True)
class Workload:
    stream: OrderStream
    payloads: list[tuple[str, bytes]]
    snapshots: dict[tuple[str, str], bytes]  # (market type level, index) -> body at the cut


def workload(events: int, prefill: int, seed: int) -> Workload:
    stream = OrderStream(list(MARKETS), CLUSTER, users=200, seed=seed, max_open=prefill * 2)
    stream.prefill(prefill)
    snapshots = {
        ("perp" if m[0] == MarketType.Perp else "spot", str(m[1])): stream.snapshot_body(*m)
        for m in MARKETS
    }
    payloads = [(e.topic, e.payload) for e in stream.events(events)]
    return Workload(stream, payloads, snapshots)


async def serve_snapshots(snapshots: dict[tuple[str, str], bytes]) -> tuple[web.AppRunner, str]:
    """``GET /v1/orders/snapshot`` answering the cut before the stream."""

    async def handle(request: web.Request) -> web.Response:
        key = (request.query.get("market_type", ""), request.query.get("market_index", ""))
        body = snapshots.get(key)
        if body is None:
            return web.json_response({"ok": False}, status=404)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/orders/snapshot", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _transport(url: str) -> GmqttTransport:
    # No high-water pause while the stream is held: the stage resumes reading itself.
    return GmqttTransport(url, f"bench-{random.randrange(10**9)}", high_water=10**7)


async def _hold_and_publish(transport: GmqttTransport, url: str, work: Workload) -> None:
    """Stop reading ``transport``'s socket and publish the stream: the broker holds it.

    The pause is the transport's own flow-control hook (what its receive buffer calls at its
    high-water mark), used here to hold the stream until the clock starts."""
    transport._pause_reading()
    await publish_all(url, work.payloads)


async def bare(url: str, work: Workload) -> Receive:
    sub = _transport(url)
    await sub.connect()
    try:
        await sub.subscribe(FILTERS, 1)
        await _hold_and_publish(sub, url, work)
        expected, received = len(work.payloads), 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        sub._resume_reading()
        async with asyncio.timeout(WAIT):
            async for _topic, _payload in sub.messages():
                received += 1
                if received == expected:
                    break
        wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await sub.close()
    return Receive(wall1 - wall0, cpu1 - cpu0, received)


async def bus(url: str, work: Workload) -> Receive:
    transport = _transport(url)
    client = BusClient(transport)
    await client.subscribe(FILTERS)
    await client.start()
    try:
        await client.wait_connected()
        await _hold_and_publish(transport, url, work)
        expected, received = len(work.payloads), 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        transport._resume_reading()
        async with asyncio.timeout(WAIT):
            async for _delivery in client:
                received += 1
                if received == expected:
                    break
        wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await client.close()
    return Receive(wall1 - wall0, cpu1 - cpu0, received)


async def ingest(url: str, node_url: str, work: Workload) -> Receive:
    transport = _transport(url)
    client = BusClient(transport)
    loader = HttpSnapshotLoader(node_url)
    feed = DlobFeed(
        client, loader, [FollowedMarket(t, i, TICK_SIZE) for t, i in MARKETS], cluster=CLUSTER
    )
    stream = work.stream
    await feed.start()
    await client.start()
    try:
        async with asyncio.timeout(WAIT):
            await feed.wait_synced()
        await _hold_and_publish(transport, url, work)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        transport._resume_reading()
        async with asyncio.timeout(WAIT):
            for market in MARKETS:
                await feed.wait_for_market_seq(*market, stream.market_seq[market])
        wall1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await feed.close()
        await client.close()
        await loader.close()
    if book_orders(feed.dlob) != stream_orders(stream):
        raise RuntimeError("the feed's book differs from the stream's")
    if feed.stats.applied != len(work.payloads) or feed.stats.resyncs != len(MARKETS):
        raise RuntimeError(f"expected every event applied in sync: {feed.stats}")
    return Receive(wall1 - wall0, cpu1 - cpu0, feed.stats.applied)


async def main(args: argparse.Namespace) -> None:
    if not args.default_gc:
        tune_gc()  # the DLOB server's process setting, for every stage alike
    work = workload(args.events, args.prefill, args.seed)
    size = statistics.mean(len(p) for _, p in work.payloads)
    runner, node_url = await serve_snapshots(work.snapshots)
    stages: dict[str, list[Receive]] = {"bare": [], "bus": [], "ingest": []}
    try:
        async with MosquittoBroker() as broker:
            print(
                f"mosquitto {broker.url}; {args.events:,} order events of {size:.0f} B (QoS 1), "
                f"{len(MARKETS)} markets, {args.prefill:,} orders per market before the stream; "
                f"gc thresholds {gc.get_threshold()}"
            )
            for _ in range(args.rounds):
                await broker.restart()
                stages["bare"].append(await bare(broker.url, work))
                await broker.restart()
                stages["bus"].append(await bus(broker.url, work))
                await broker.restart()
                stages["ingest"].append(await ingest(broker.url, node_url, work))
    finally:
        await runner.cleanup()

    def med(rows: Sequence[Receive], attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in rows)

    header = f"{'stage (gmqtt)':<30} {'msg/s':>9} {'CPU us/msg':>11} {'of bare':>8}"
    print(header)
    print("-" * len(header))
    base = med(stages["bare"], "rate")
    names = {
        "bare": "bare receive (messages())",
        "bus": "bus receive (BusClient)",
        "ingest": "DLOB ingest (applied)",
    }
    for key, rows in stages.items():
        rate = med(rows, "rate")
        print(f"{names[key]:<30} {rate:>9,.0f} {med(rows, 'cpu_us'):>11.1f} {rate / base:>8.0%}")
    ratio = med(stages["ingest"], "rate") / base
    verdict = "meets" if ratio >= 0.8 else "misses"
    print(f"ingest / bare receive = {ratio:.0%} ({verdict} the 80% goal)")
    rounds = ", ".join(
        f"{i / b:.0%}"
        for i, b in zip(
            (r.rate for r in stages["ingest"]), (r.rate for r in stages["bare"]), strict=True
        )
    )
    print(f"per round: {rounds}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--prefill", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's GC thresholds instead of the DLOB server's (tune_gc)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
