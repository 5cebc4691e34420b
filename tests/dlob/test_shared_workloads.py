"""The book gives the shared workloads' reference answers (``../shared/bench/expected.py``).

The workload files and ``expected.py`` live in the ``shared/bench`` directory beside the
repository. ``expected.py`` computes its answers from the file alone with plain sorting and
counting; here the book is built from the same file phase by phase and must agree on every
answer, plus the orders the crossing taker is matched with, derived from the file directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from benchmarks.workload import Workload, load_workload
from dlob import DLOB

SHARED_BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "bench"


def _expected_module() -> ModuleType:
    path = SHARED_BENCH / "expected.py"
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared benchmark directory sits beside the repo")
    spec = importlib.util.spec_from_file_location("shared_bench_expected", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _answers(w: Workload) -> dict[str, Any]:
    """Run the workload's phases on a fresh book and collect expected.py's answer keys."""
    mt, mi, oracle, slot, ts = w.market_type, w.market_index, w.oracle_price, w.slot, w.ts
    book = DLOB(slot)
    book.add_market(mt, mi, tick_size=w.tick_size)
    out: dict[str, Any] = {}
    for o in w.resting:
        book.insert(o.user, o.order())
    out["best_bid"] = book.best_bid(mt, mi, oracle, slot)
    out["best_ask"] = book.best_ask(mt, mi, oracle, slot)
    l2 = book.get_l2(mt, mi, oracle, slot, w.l2_depth)
    out["l2_bid_levels"], out["l2_ask_levels"] = len(l2.bids), len(l2.asks)
    out["l2_bid_top"] = [l2.bids[0].price, l2.bids[0].size]
    out["l2_ask_top"] = [l2.asks[0].price, l2.asks[0].size]
    out["l2_bid_size_sum"] = sum(x.size for x in l2.bids)
    out["l2_ask_size_sum"] = sum(x.size for x in l2.asks)
    l3 = book.get_l3(mt, mi, oracle, slot)
    out["l3_bids"], out["l3_asks"] = len(l3.bids), len(l3.asks)
    for i in w.cancel:
        assert book.remove(w.resting[i].user, w.resting[i].raw["order_id"]) is not None
    l3 = book.get_l3(mt, mi, oracle, slot)
    out["after_cancel_l3"] = [len(l3.bids), len(l3.asks)]
    out["fill_none_nodes"] = len(book.find_nodes_to_fill(mt, mi, oracle, slot, ts))

    taker = book.insert(w.taker.user, w.taker.order())
    fills = book.find_nodes_to_fill(mt, mi, oracle, slot, ts)
    assert [f.node for f in fills] == [taker]
    out["taker_makers"] = [(m.user, m.order.order_id) for m in fills[0].makers]
    book.remove(w.taker.user, w.taker.raw["order_id"])

    vamm = book.find_nodes_to_fill(
        mt, mi, oracle, slot, ts, fallback_bid=w.vamm_bid, fallback_ask=w.vamm_ask
    )
    out["fill_vamm_nodes"] = len(vamm)
    for o in w.triggers:
        book.insert(o.user, o.order())
    fired = book.find_nodes_to_trigger(mt, mi, w.trigger_oracle_price)
    out["trigger_nodes"] = len(fired)
    out["trigger_ids"] = sorted(n.order.order_id for n in fired)
    return out


def _taker_makers_from_file(w: Workload) -> list[tuple[Any, int]]:
    """The ten best asks left after the cancels, by (price at the oracle, slot): the generator
    sized the taker to exactly these."""
    cancelled = set(w.cancel)
    asks = [
        o for i, o in enumerate(w.resting) if i not in cancelled and o.raw["direction"] == "short"
    ]

    def price(o: Any) -> int:
        raw = o.raw
        return int(raw["price"] or w.oracle_price + raw["oracle_price_offset"])

    asks.sort(key=lambda o: (price(o), o.raw["slot"]))
    return [(o.user, o.raw["order_id"]) for o in asks[:10]]


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_book_reproduces_the_shared_expected_answers(n: int) -> None:
    path = SHARED_BENCH / f"workload-{n}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared benchmark directory sits beside the repo")
    w = load_workload(path)
    expected = _expected_module().expected(w.raw)
    ours = _answers(w)
    assert {k: ours[k] for k in expected} == expected
    assert ours["taker_makers"] == _taker_makers_from_file(w)


def test_workload_1000_answers_pinned() -> None:
    # The 1k file's answers as printed by `python3 expected.py workload-1000.json`, pinned so a
    # change to the shared files cannot pass unnoticed.
    ours = _answers(load_workload(SHARED_BENCH / "workload-1000.json"))
    assert ours["best_bid"] == 99_980_000
    assert ours["best_ask"] == 100_010_000
    assert ours["l2_bid_top"] == [99_980_000, 21_900_000_000]
    assert ours["l2_ask_top"] == [100_010_000, 7_300_000_000]
    assert ours["l2_bid_size_sum"] == 239_100_000_000
    assert ours["l2_ask_size_sum"] == 190_900_000_000
    assert (ours["l3_bids"], ours["l3_asks"]) == (498, 502)
    assert ours["after_cancel_l3"] == [441, 459]
    assert ours["fill_none_nodes"] == 0
    assert ours["fill_vamm_nodes"] == 0
    assert ours["trigger_ids"] == [1038]
    assert len(ours["taker_makers"]) == 10
