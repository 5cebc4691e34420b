"""Benchmark of the DLOB on a shared workload (``../shared/bench``), phase by phase.

    python -m benchmarks.dlob [WORKLOAD.json] [--runs 5] [--peers]

Runs the phases of ``../shared/bench/README.md`` in order on a fresh book per run and prints
microseconds per operation under the same phase names, the median over runs: ``insert``,
``cancel`` and ``trig_insert`` are means over all their orders; query phases (``best`` = one
best-bid or best-ask call, ``l2`` top ``l2_depth``, ``l3``, ``fill_none``, ``fill_taker``,
``fill_vamm``, ``trigger``) are medians over repeated calls; ``fill_taker`` times the find
with the taker in the book (our find writes nothing back, so there is nothing to undo; for
driftpy, whose find writes virtual fills into its makers, the undo is outside the timing).
Orders are decoded from JSON
before timing (decoding happens once at ingress, not per book operation). The answers are
checked against ``expected.py`` from the shared directory when it is there.

``--peers``: also runs driftpy's ``DLOB`` (``pip install driftpy``) on the same file in the same
process and prints its figures and the ratio driftpy / ours. driftpy's inserts are O(n) and
its find-nodes-to-fill walks the whole book, so at N = 100,000 a single peer run takes minutes;
``--peer-runs`` (default 1) bounds it.

This is a benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.workload import SHARED_BENCH_DIR, Workload, load_workload
from dlob import DLOB, NodeToFill

PHASES = (
    "insert",
    "best",
    "l2",
    "l3",
    "cancel",
    "fill_none",
    "fill_taker",
    "fill_vamm",
    "trig_insert",
    "trigger",
)
DEFAULT_WORKLOAD = SHARED_BENCH_DIR / "workload-10000.json"


def time_calls(fn: Callable[[], object], reps: int, budget_s: float = 2.0) -> float:
    """Median µs of ``fn()`` over ``reps`` calls (fewer if ``budget_s`` runs out; at least 1)."""
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return statistics.median(samples) * 1e6


# --- ours ------------------------------------------------------------------------------------
def run_ours(w: Workload) -> tuple[dict[str, float], dict[str, Any]]:
    """One pass over the phases on a fresh book: (µs per phase, answers)."""
    mt, mi, oracle, slot, ts = w.market_type, w.market_index, w.oracle_price, w.slot, w.ts
    book = DLOB(slot)
    book.add_market(mt, mi, tick_size=w.tick_size)
    us: dict[str, float] = {}
    answers: dict[str, Any] = {}

    resting = [(o.user, o.order()) for o in w.resting]
    t0 = time.perf_counter()
    for user, order in resting:
        book.insert(user, order)
    us["insert"] = (time.perf_counter() - t0) / len(resting) * 1e6

    answers["best_bid"] = book.best_bid(mt, mi, oracle, slot)
    answers["best_ask"] = book.best_ask(mt, mi, oracle, slot)
    us["best"] = statistics.median(
        (
            time_calls(lambda: book.best_bid(mt, mi, oracle, slot), 2000),
            time_calls(lambda: book.best_ask(mt, mi, oracle, slot), 2000),
        )
    )

    l2 = book.get_l2(mt, mi, oracle, slot, w.l2_depth)
    answers["l2_bid_levels"], answers["l2_ask_levels"] = len(l2.bids), len(l2.asks)
    answers["l2_bid_top"] = [l2.bids[0].price, l2.bids[0].size] if l2.bids else None
    answers["l2_ask_top"] = [l2.asks[0].price, l2.asks[0].size] if l2.asks else None
    answers["l2_bid_size_sum"] = sum(level.size for level in l2.bids)
    answers["l2_ask_size_sum"] = sum(level.size for level in l2.asks)
    us["l2"] = time_calls(lambda: book.get_l2(mt, mi, oracle, slot, w.l2_depth), 300)

    l3 = book.get_l3(mt, mi, oracle, slot)
    answers["l3_bids"], answers["l3_asks"] = len(l3.bids), len(l3.asks)
    us["l3"] = time_calls(lambda: book.get_l3(mt, mi, oracle, slot), 5)

    cancels = [(w.resting[i].user, w.resting[i].raw["order_id"]) for i in w.cancel]
    t0 = time.perf_counter()
    for user, order_id in cancels:
        book.remove(user, order_id)
    us["cancel"] = (time.perf_counter() - t0) / len(cancels) * 1e6
    l3 = book.get_l3(mt, mi, oracle, slot)
    answers["after_cancel_l3"] = [len(l3.bids), len(l3.asks)]

    answers["fill_none_nodes"] = len(book.find_nodes_to_fill(mt, mi, oracle, slot, ts))
    us["fill_none"] = time_calls(lambda: book.find_nodes_to_fill(mt, mi, oracle, slot, ts), 2000)

    book.insert(w.taker.user, w.taker.order())
    taker_fills = book.find_nodes_to_fill(mt, mi, oracle, slot, ts)
    answers["fill_taker_makers"] = [len(f.makers) for f in taker_fills]
    us["fill_taker"] = time_calls(lambda: book.find_nodes_to_fill(mt, mi, oracle, slot, ts), 500)
    book.remove(w.taker.user, w.taker.raw["order_id"])  # the query filled nothing: no undo

    def fill_vamm() -> list[NodeToFill]:
        return book.find_nodes_to_fill(
            mt, mi, oracle, slot, ts, fallback_bid=w.vamm_bid, fallback_ask=w.vamm_ask
        )

    answers["fill_vamm_nodes"] = len(fill_vamm())
    us["fill_vamm"] = time_calls(fill_vamm, 2000)

    triggers = [(o.user, o.order()) for o in w.triggers]
    t0 = time.perf_counter()
    for user, order in triggers:
        book.insert(user, order)
    us["trig_insert"] = (time.perf_counter() - t0) / len(triggers) * 1e6

    fired = book.find_nodes_to_trigger(mt, mi, w.trigger_oracle_price)
    answers["trigger_nodes"] = len(fired)
    answers["trigger_ids"] = sorted(node.order_id for node in fired)
    us["trigger"] = time_calls(
        lambda: book.find_nodes_to_trigger(mt, mi, w.trigger_oracle_price), 2000
    )
    return us, answers


def expected_answers(w: Workload) -> dict[str, Any] | None:
    """The shared ``expected.py`` answers for this workload, if that script is available."""
    path = SHARED_BENCH_DIR / "expected.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("shared_bench_expected", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.expected(w.raw)
    return result


# --- driftpy ---------------------------------------------------------------------------------
def run_driftpy(w: Workload) -> tuple[dict[str, float], dict[str, Any]]:
    """The same phases on driftpy's ``DLOB`` (its public API as of driftpy 0.8.x)."""
    from driftpy.dlob.dlob import DLOB as PeerDLOB  # noqa: PLC0415 - optional peer
    from driftpy.types import (  # noqa: PLC0415
        MarketStatus,
        MarketType,
        OraclePriceData,
        Order,
        OrderStatus,
        OrderTriggerCondition,
        OrderType,
        PositionDirection,
    )
    from solders.pubkey import Pubkey  # noqa: PLC0415

    variants = {
        "order_type": {
            "market": OrderType.Market,
            "limit": OrderType.Limit,
            "trigger_market": OrderType.TriggerMarket,
            "trigger_limit": OrderType.TriggerLimit,
            "oracle": OrderType.Oracle,
        },
        "direction": {"long": PositionDirection.Long, "short": PositionDirection.Short},
        "existing_position_direction": {
            "long": PositionDirection.Long,
            "short": PositionDirection.Short,
        },
        "trigger_condition": {
            "above": OrderTriggerCondition.Above,
            "below": OrderTriggerCondition.Below,
        },
        "status": {"open": OrderStatus.Open},
        "market_type": {"perp": MarketType.Perp, "spot": MarketType.Spot},
    }
    pubkeys = {user: Pubkey.from_bytes(user[0]) for user in w.users}

    def peer_order(raw: dict[str, Any]) -> Any:
        fields = {k: v for k, v in raw.items() if k != "user"}
        for name, table in variants.items():
            fields[name] = table[fields[name]]()
        return Order(**fields)

    class Active(int):
        # driftpy reads State.exchange_status both as bit flags (``& FillPaused``) and as a
        # sum-type variant (``is_variant(..., "Active")``): an int subclass named Active is both.
        pass

    fee_tier = SimpleNamespace(maker_rebate_numerator=0, maker_rebate_denominator=1)
    state = SimpleNamespace(
        exchange_status=Active(1),
        min_perp_auction_duration=10,
        perp_fee_structure=SimpleNamespace(fee_tiers=[fee_tier]),
        spot_fee_structure=SimpleNamespace(fee_tiers=[fee_tier]),
    )
    market = SimpleNamespace(status=MarketStatus.Active(), fee_adjustment=0)
    mt, mi, slot, ts = MarketType.Perp(), w.market_index, w.slot, w.ts
    oracle = OraclePriceData(
        price=w.oracle_price,
        slot=slot,
        confidence=int(w.raw["oracle"]["confidence"]),
        twap=w.oracle_price,
        twap_confidence=0,
        has_sufficient_number_of_data_points=True,
    )
    book = PeerDLOB()
    us: dict[str, float] = {}
    answers: dict[str, Any] = {}

    resting = [(pubkeys[o.user], peer_order(o.raw)) for o in w.resting]
    t0 = time.perf_counter()
    for user, order in resting:
        book.insert_order(order, user, slot)
    us["insert"] = (time.perf_counter() - t0) / len(resting) * 1e6

    answers["best_bid"] = book.get_best_bid(mi, slot, mt, oracle)
    answers["best_ask"] = book.get_best_ask(mi, slot, mt, oracle)
    us["best"] = statistics.median(
        (
            time_calls(lambda: book.get_best_bid(mi, slot, mt, oracle), 2000),
            time_calls(lambda: book.get_best_ask(mi, slot, mt, oracle), 2000),
        )
    )
    us["l2"] = time_calls(lambda: book.get_l2(mi, mt, slot, oracle, w.l2_depth), 300)
    us["l3"] = time_calls(lambda: book.get_l3(mi, mt, slot, oracle), 5)

    by_index = dict(enumerate(resting))
    t0 = time.perf_counter()
    for i in w.cancel:
        user, order = by_index[i]
        book.delete(order, user, slot)
    us["cancel"] = (time.perf_counter() - t0) / len(w.cancel) * 1e6

    def fill(bid: int | None = None, ask: int | None = None) -> Any:
        return book.find_nodes_to_fill(mi, slot, ts, mt, oracle, state, market, bid, ask)

    us["fill_none"] = time_calls(fill, 50, budget_s=10.0)

    taker = peer_order(w.taker.raw)
    taker_user = pubkeys[w.taker.user]
    cancelled = set(w.cancel)
    makers = [by_index[i] for i in range(len(resting)) if i not in cancelled]

    def fill_taker_once() -> Any:
        # driftpy's find writes virtual fills into its makers; put them back afterwards
        book.insert_order(taker, taker_user, slot)
        t0 = time.perf_counter()
        result = fill()
        elapsed = time.perf_counter() - t0
        book.delete(taker, taker_user, slot)
        for node_to_fill in result:
            for maker in node_to_fill.maker:
                original = next(
                    o
                    for u, o in makers
                    if u == maker.user_account and o.order_id == maker.order.order_id
                )
                book.get_list_for_order(original, slot).update(original, maker.user_account)
        return elapsed

    samples = [fill_taker_once() for _ in range(5)]
    us["fill_taker"] = statistics.median(samples) * 1e6
    us["fill_vamm"] = time_calls(lambda: fill(w.vamm_bid, w.vamm_ask), 50, budget_s=10.0)

    triggers = [(pubkeys[o.user], peer_order(o.raw)) for o in w.triggers]
    t0 = time.perf_counter()
    for user, order in triggers:
        book.insert_order(order, user, slot)
    us["trig_insert"] = (time.perf_counter() - t0) / len(triggers) * 1e6
    fired = book.find_nodes_to_trigger(mi, w.trigger_oracle_price, mt, state)
    answers["trigger_nodes"] = len(fired)
    us["trigger"] = time_calls(
        lambda: book.find_nodes_to_trigger(mi, w.trigger_oracle_price, mt, state), 2000
    )
    return us, answers


def driftpy_available() -> bool:
    return importlib.util.find_spec("driftpy") is not None


# --- report ----------------------------------------------------------------------------------
def median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    return {phase: statistics.median(run[phase] for run in runs) for phase in PHASES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DLOB benchmark on a shared workload file")
    parser.add_argument("workload", nargs="?", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--runs", type=int, default=5, help="runs of ours (median reported)")
    parser.add_argument("--peers", action="store_true", help="also run driftpy's DLOB")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs of driftpy")
    args = parser.parse_args(argv)

    w = load_workload(args.workload)
    print(f"{args.workload.name}: N = {w.n:,} resting, {len(w.triggers):,} triggers")

    ours_runs: list[dict[str, float]] = []
    answers: dict[str, Any] = {}
    for _ in range(args.runs):
        us, answers = run_ours(w)
        ours_runs.append(us)
    ours = median_runs(ours_runs)

    expected = expected_answers(w)
    if expected is None:
        print("answers: not checked (expected.py not found)")
    else:
        wrong = {k: (answers.get(k), v) for k, v in expected.items() if answers.get(k) != v}
        print("answers: match expected.py" if not wrong else f"answers: MISMATCH {wrong}")
    print(f"fill_taker: 1 taker against {answers['fill_taker_makers']} makers")

    peer: dict[str, float] | None = None
    if args.peers:
        if driftpy_available():
            peer_runs = []
            peer_answers: dict[str, Any] = {}
            for _ in range(max(1, args.peer_runs)):
                us, peer_answers = run_driftpy(w)
                peer_runs.append(us)
            peer = median_runs(peer_runs)
            print(
                f"driftpy best bid/ask {peer_answers['best_bid']}/{peer_answers['best_ask']} "
                f"(ours {answers['best_bid']}/{answers['best_ask']}); "
                f"driftpy triggers {peer_answers['trigger_nodes']} "
                f"(ours {answers['trigger_nodes']})"
            )
        else:
            print("--peers: driftpy is not installed (pip install driftpy); peer column omitted")

    header = f"{'phase':<12} {'ours µs/op':>12}"
    if peer is not None:
        header += f" {'driftpy µs/op':>14} {'driftpy/ours':>13}"
    print(f"median of {args.runs} runs")
    print(header)
    for phase in PHASES:
        line = f"{phase:<12} {ours[phase]:>12,.2f}"
        if peer is not None:
            line += f" {peer[phase]:>14,.2f} {peer[phase] / ours[phase]:>12,.0f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
