"""The whole system over a real Mosquitto: the node and the four core bots (filler, trigger, JIT
maker, funding-rate updater) each in its own task with its own bus connection, node client
and DLOB, with simulated traders and makers placing orders for 80 slots.

At the end, once the traders stopped and the bots drained, each bot's DLOB (kept from the
bus alone) must equal the node's order snapshot in every market it follows, and the run's
invariants must hold: positions sum to zero with the AMM, every perp market's quote flows
through fills, funding and settlement and nothing else, tokens are conserved.
"""

from __future__ import annotations

import pytest

from keepers.demo.run import CORE_BOTS, DemoConfig, run_demo


@pytest.mark.asyncio
async def test_node_and_four_bots_over_mosquitto(mosquitto: str) -> None:
    # no crash: every market's quote must then flow through fills, funding and settlement
    # alone, and the quote-flow identity is checked for each one
    config = DemoConfig(
        slots=80,
        seed=11,
        slot_ms=100,
        broker=mosquitto,
        bots=CORE_BOTS,
        separate_bots=True,
        live=False,
        crash_at=None,
        fast_forward_at=(0.7,),
    )
    report = await run_demo(config)
    results = {r.name: r for r in report.invariants}
    assert report.bots == dict.fromkeys(sorted(CORE_BOTS), "running")
    books = [name for name in results if "DLOB equals the node's order snapshots" in name]
    # every bot that keeps a book compared it: the filler, the trigger bot and the JIT maker
    assert {name.split()[0] for name in books} >= {"filler", "trigger", "jit_maker"}
    for name in books:
        assert results[name].ok, results[name]
    assert report.invariants_ok, [r for r in report.invariants if not r.ok]
    flows = [name for name in results if "quote conserved through fills" in name]
    assert len(flows) == 3, list(results)  # SOL, BTC and ETH perps, each summed exactly
    assert report.stats.funding_updates  # the fast-forward made funding due: it was paid
    assert report.records_missing == 0
    stats = report.stats
    assert sum(stats.orders_by_type.values()) > 100
    assert stats.fills_total() > 0
    assert stats.latency.published > 0
