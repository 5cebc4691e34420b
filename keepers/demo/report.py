"""What the demo shows: statistics kept from the node's records, a live one-screen summary, and
the final report (text and JSON).

:class:`DemoStats` is fed every committed record the node publishes (``records/{kind}`` on the
bus, QoS 1; duplicates are dropped by their gap-free ``seq``, and :meth:`DemoStats.missing`
counts the seqs never seen). From them it counts orders by type, fills by layer (``FillRecord.
layer``: ``jit``, ``dlob``, ``amm``), keeper rewards, funding updates, liquidations,
bankruptcies and insurance-fund flows, and keeps the token and per-market quote flows the
invariant check needs (:mod:`keepers.demo.invariants`).

:class:`IntentLatency` measures intent-to-fill latency on the monotonic wall clock: from the
moment a trader publishes a signed intent to the moment the first ``FillRecord`` of the order
placed from it is observed on the bus. The intent is matched to its order by the trader's
``user_order_id`` (unique per trader among its live intents) through the ``place`` record of
the order, which carries the ``SignedMessage`` flag.

Amounts in the report are ints at the protocol's precision (QUOTE_PRECISION for rewards and
insurance amounts); latencies are milliseconds (floats: measurements, not amounts).
"""

from __future__ import annotations

import math
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from keepers.bus.client import Delivery
from keepers.bus.schemas import DecodeError, RecordMessage, record_from_message
from protocol.constants import PRICE_PRECISION, QUOTE_PRECISION
from protocol.records import (
    BankruptcyRecord,
    CurveRecord,
    DepositRecord,
    FillRecord,
    FundingRateRecord,
    InsuranceFundRecord,
    InsuranceFundStakeRecord,
    LiquidationRecord,
    LPRecord,
    OrderActionRecord,
    SequencedRecord,
    SettlePnlRecord,
    TriggerRecord,
)
from protocol.state.user import Order
from protocol.types import OrderBitFlag, OrderType

LAYERS = ("jit", "dlob", "amm")
UserKey = tuple[bytes, int]


def order_kind(order: Order) -> str:
    """The report's name for an order's type."""
    if order.bit_flags & OrderBitFlag.SignedMessage:
        return "signed_intent"
    if order.order_type == OrderType.Market:
        return "market"
    if order.order_type == OrderType.Oracle:
        return "oracle"
    if order.order_type == OrderType.TriggerMarket:
        return "trigger_market"
    if order.order_type == OrderType.TriggerLimit:
        return "trigger_limit"
    if order.oracle_price_offset != 0:
        return "oracle_pegged_limit"
    return "limit"


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class IntentLatency:
    """Intent published -> first fill observed, per intent (see the module docstring)."""

    def __init__(self) -> None:
        self._published: dict[tuple[bytes, int], int] = {}
        self._orders: dict[tuple[UserKey, int], int] = {}
        self.samples_ms: list[float] = []
        self.published = 0
        self.placed = 0

    def on_publish(self, authority: bytes, user_order_id: int, at_ns: int) -> None:
        self._published[(authority, user_order_id)] = at_ns
        self.published += 1

    def on_place(self, user: UserKey, order: Order) -> None:
        if not order.bit_flags & OrderBitFlag.SignedMessage or order.user_order_id == 0:
            return
        started = self._published.pop((user[0], order.user_order_id), None)
        if started is not None:
            self._orders[(user, order.order_id)] = started
            self.placed += 1

    def on_fill(self, taker: UserKey, order_id: int, at_ns: int) -> None:
        started = self._orders.pop((taker, order_id), None)
        if started is not None:
            self.samples_ms.append((at_ns - started) / 1e6)

    def summary(self) -> dict[str, Any]:
        return {
            "p50": _round(percentile(self.samples_ms, 50)),
            "p99": _round(percentile(self.samples_ms, 99)),
            "samples": len(self.samples_ms),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(slots=True)
class DemoStats:
    """Counts kept from the records (see the module docstring)."""

    roles: Mapping[bytes, str] = field(default_factory=dict)  # authority -> bot/actor name
    latency: IntentLatency = field(default_factory=IntentLatency)
    clock_ns: Callable[[], int] | None = None
    seen: set[int] = field(default_factory=set)
    orders_by_type: Counter[str] = field(default_factory=Counter)
    order_actions: Counter[str] = field(default_factory=Counter)
    fills_by_layer: Counter[str] = field(default_factory=Counter)
    fills_by_market: Counter[int] = field(default_factory=Counter)
    volume: int = 0  # QUOTE_PRECISION
    rewards: Counter[str] = field(default_factory=Counter)  # QUOTE_PRECISION, by role
    triggers: int = 0
    funding_updates: Counter[int] = field(default_factory=Counter)
    liquidations: Counter[str] = field(default_factory=Counter)
    bankruptcies: Counter[str] = field(default_factory=Counter)
    insurance_payments: int = 0  # paid by insurance funds to bankruptcies
    loss_socialized: int = 0
    revenue_settled: int = 0
    settle_pnl: int = 0
    lp_actions: Counter[str] = field(default_factory=Counter)
    deposits: Counter[int] = field(default_factory=Counter)  # net token flow by spot market
    insurance_stakes: Counter[int] = field(default_factory=Counter)  # net stake by market
    amm_cost_basis: Counter[int] = field(default_factory=Counter)  # by perp market
    settled_pnl: Counter[int] = field(default_factory=Counter)  # by perp market, QUOTE
    lp_settled_quote: Counter[int] = field(default_factory=Counter)  # by perp market, QUOTE
    liquidation_if_fees: Counter[int] = field(default_factory=Counter)  # by perp market, QUOTE
    repeg_costs: Counter[int] = field(default_factory=Counter)  # by perp market, QUOTE
    # perp markets whose quote moved outside fills, funding and settlement, and why
    other_quote_flows: dict[int, set[str]] = field(default_factory=dict)
    undecodable: int = 0

    # --- intake ----------------------------------------------------------------------------------
    def apply_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        if not isinstance(message, RecordMessage):
            return
        try:
            record = record_from_message(message, delivery.topic)
        except DecodeError:
            self.undecodable += 1
            return
        self.apply(record)

    def apply(self, sequenced: SequencedRecord) -> None:
        if sequenced.seq in self.seen:
            return  # QoS 1 may deliver twice
        self.seen.add(sequenced.seq)
        record = sequenced.record
        now = self.clock_ns() if self.clock_ns is not None else 0
        if isinstance(record, OrderActionRecord):
            self._order_action(record)
        elif isinstance(record, FillRecord):
            self._fill(record, now)
        elif isinstance(record, TriggerRecord):
            self.triggers += 1
            self.rewards[self._role(record.filler[0], "filler")] += record.filler_reward
        elif isinstance(record, FundingRateRecord):
            self.funding_updates[record.market_index] += 1
            if record.funding_rate_long != record.funding_rate_short:
                self._other_flow(record.market_index, "capped funding")
        elif isinstance(record, LiquidationRecord):
            self.liquidations[record.liquidation_type] += 1
            if record.liquidate_perp is not None:
                detail = record.liquidate_perp
                self.liquidation_if_fees[detail.market_index] += detail.if_fee
            if record.liquidate_perp_pnl_for_deposit is not None:
                index = record.liquidate_perp_pnl_for_deposit.perp_market_index
                self._other_flow(index, "PnL liquidated for a deposit")
            if record.liquidate_borrow_for_perp_pnl is not None:
                index = record.liquidate_borrow_for_perp_pnl.perp_market_index
                self._other_flow(index, "a borrow liquidated for PnL")
            if record.liquidate_perp is not None:
                role = self._role(record.liquidator[0], "liquidator")
                self.rewards[role] += record.liquidate_perp.liquidator_fee
        elif isinstance(record, BankruptcyRecord):
            self._bankruptcy(record)
        elif isinstance(record, InsuranceFundRecord):
            self.revenue_settled += record.amount
        elif isinstance(record, InsuranceFundStakeRecord):
            # only "stake" and "unstake" move tokens; requests and cancels move none
            if record.action == "stake":
                self.insurance_stakes[record.market_index] += record.amount
            elif record.action == "unstake":
                self.insurance_stakes[record.market_index] -= record.amount
        elif isinstance(record, DepositRecord):
            sign = 1 if record.direction == "deposit" else -1
            if record.transfer_user is None:
                self.deposits[record.market_index] += sign * record.amount
        elif isinstance(record, SettlePnlRecord):
            self.settle_pnl += 1
            self.settled_pnl[record.market_index] += record.pnl
        elif isinstance(record, LPRecord):
            self.lp_actions[record.action] += 1
            self.lp_settled_quote[record.market_index] += record.delta_quote_asset_amount
        elif isinstance(record, CurveRecord):
            self.repeg_costs[record.market_index] += record.adjustment_cost

    def _role(self, authority: bytes, fallback: str) -> str:
        return self.roles.get(authority, fallback)

    def _order_action(self, record: OrderActionRecord) -> None:
        self.order_actions[record.action] += 1
        if record.action == "place" and record.order is not None:
            self.orders_by_type[order_kind(record.order)] += 1
            self.latency.on_place((record.authority, record.sub_account_id), record.order)

    def _fill(self, record: FillRecord, now: int) -> None:
        self.fills_by_layer[record.layer] += 1
        self.fills_by_market[record.market_index] += 1
        self.volume += record.quote_asset_amount
        if record.filler_reward:
            self.rewards[self._role(record.filler[0], "filler")] += record.filler_reward
        if record.layer == "amm":
            # what the vAMM's curve took in for its position: the cost basis of the AMM's side
            if record.taker_direction.name == "Long":
                basis = record.quote_asset_amount - record.quote_asset_amount_surplus
            else:
                basis = -(record.quote_asset_amount + record.quote_asset_amount_surplus)
            self.amm_cost_basis[record.market_index] += basis
        self.latency.on_fill(record.taker, record.taker_order_id, now)

    def _other_flow(self, market_index: int, why: str) -> None:
        self.other_quote_flows.setdefault(market_index, set()).add(why)

    def _bankruptcy(self, record: BankruptcyRecord) -> None:
        self.bankruptcies[record.bankruptcy_type] += 1
        if record.perp_bankruptcy is not None:
            self._other_flow(record.perp_bankruptcy.market_index, "bankruptcy")
            self.insurance_payments += record.perp_bankruptcy.if_payment
            self.loss_socialized += record.perp_bankruptcy.loss_socialized
        if record.spot_bankruptcy is not None:
            self.insurance_payments += record.spot_bankruptcy.if_payment

    # --- reading -------------------------------------------------------------------------------
    def missing(self, last_seq: int) -> int:
        """How many of the seqs 1..``last_seq`` were never seen."""
        return last_seq - sum(1 for seq in self.seen if seq <= last_seq)

    def fills_total(self) -> int:
        return sum(self.fills_by_layer.values())


# --- formatting -----------------------------------------------------------------------------------
def usd(amount: int | None, precision: int = QUOTE_PRECISION) -> str:
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), precision)
    cents = frac * 100 // precision
    return f"{sign}${whole:,}.{cents:02d}"


def price_text(price: int | None) -> str:
    return usd(price, PRICE_PRECISION)


def _counts(counter: Mapping[str, int], empty: str = "none") -> str:
    items = [f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if v]
    return ", ".join(items) if items else empty


def summary_lines(
    stats: DemoStats,
    *,
    slot: int,
    ticks: int,
    total_ticks: int,
    elapsed_s: float,
    prices: Mapping[str, int],
    rejections: Mapping[str, int],
    phase: str,
) -> list[str]:
    """The live one-screen summary."""
    latency = stats.latency.summary()
    fills = stats.fills_by_layer
    price_line = "  ".join(f"{name} {price_text(p)}" for name, p in sorted(prices.items()))
    p50 = "-" if latency["p50"] is None else f"{latency['p50']:.1f} ms"
    p99 = "-" if latency["p99"] is None else f"{latency['p99']:.1f} ms"
    rewards = ", ".join(f"{k} {usd(v)}" for k, v in sorted(stats.rewards.items())) or "none"
    return [
        f"keepers demo  slot {slot}  step {ticks}/{total_ticks}  {elapsed_s:5.1f} s  {phase}",
        f"  oracle   {price_line}",
        f"  orders   {_counts(stats.orders_by_type)}",
        f"  fills    jit {fills['jit']}  dlob {fills['dlob']}  amm {fills['amm']}"
        f"   volume {usd(stats.volume)}",
        f"  intents  {stats.latency.published} published, {len(stats.latency.samples_ms)} "
        f"filled   latency p50 {p50}  p99 {p99}",
        f"  keepers  rewards {rewards}   triggers {stats.triggers}"
        f"   funding updates {sum(stats.funding_updates.values())}",
        f"  risk     liquidations {sum(stats.liquidations.values())}"
        f"  bankruptcies {sum(stats.bankruptcies.values())}"
        f"  insurance paid {usd(stats.insurance_payments)}"
        f"  revenue settled {usd(stats.revenue_settled)}",
        f"  rejected {_counts(rejections)}",
    ]


class LiveSummary:
    """Redraws the summary in place on a terminal; prints a line now and then otherwise."""

    def __init__(self, out: TextIO | None = None, *, every_s: float = 2.0) -> None:
        self._out = out if out is not None else sys.stdout
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._drawn = 0
        self._every_s = every_s
        self._last_line_at = -math.inf

    @property
    def is_tty(self) -> bool:
        return self._tty

    def draw(self, lines: Sequence[str], now_s: float) -> None:
        if self._tty:
            # a line wider than the terminal would wrap and break the cursor arithmetic
            width = max(20, shutil.get_terminal_size().columns - 1)
            if self._drawn:
                self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._out.write("\n".join(line[:width] for line in lines) + "\n")
            self._drawn = len(lines)
        elif now_s - self._last_line_at >= self._every_s:
            self._last_line_at = now_s
            head = lines[0].strip()
            fills = lines[3].strip()
            self._out.write(f"{head} | {fills}\n")
        self._out.flush()


# --- the final report --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InvariantResult:
    """One check; ``note`` marks a line that only explains what was not checked."""

    name: str
    ok: bool
    detail: str
    note: bool = False


@dataclass(slots=True)
class DemoReport:
    """Everything the demo reports; :meth:`to_json` is the ``--summary`` file."""

    seed: int
    slots: int
    slot_ms: int
    duration_s: float
    stats: DemoStats
    rejections_by_code: dict[str, int]
    rejections_by_source: dict[str, dict[str, int]]
    insurance_fund_before: int
    insurance_fund_after: int
    invariants: list[InvariantResult]
    bots: dict[str, str]
    scenario: dict[str, Any]
    records_missing: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def invariants_ok(self) -> bool:
        return all(result.ok for result in self.invariants)

    def to_json(self) -> dict[str, Any]:
        stats = self.stats
        fills = {layer: stats.fills_by_layer.get(layer, 0) for layer in LAYERS}
        latency = stats.latency.summary()
        return {
            "seed": self.seed,
            "slots": self.slots,
            "slot_ms": self.slot_ms,
            "duration_s": round(self.duration_s, 3),
            "orders_by_type": dict(sorted(stats.orders_by_type.items())),
            "order_actions": dict(sorted(stats.order_actions.items())),
            "fills_by_layer": fills,
            "fills_total": stats.fills_total(),
            "volume_quote": stats.volume,
            "rewards": dict(sorted(stats.rewards.items())),
            "triggers": stats.triggers,
            "funding_updates": sum(stats.funding_updates.values()),
            "funding_updates_by_market": {
                str(k): v for k, v in sorted(stats.funding_updates.items())
            },
            "rejections_by_code": dict(sorted(self.rejections_by_code.items())),
            "rejections_by_source": self.rejections_by_source,
            "latency_ms": {"p50": latency["p50"], "p99": latency["p99"]},
            "intents": {
                "published": stats.latency.published,
                "placed": stats.latency.placed,
                "filled": latency["samples"],
            },
            "liquidations": sum(stats.liquidations.values()),
            "liquidations_by_type": dict(sorted(stats.liquidations.items())),
            "bankruptcies": sum(stats.bankruptcies.values()),
            "insurance_fund": {
                "before": self.insurance_fund_before,
                "after": self.insurance_fund_after,
                "paid_to_bankruptcies": stats.insurance_payments,
            },
            "loss_socialized": stats.loss_socialized,
            "revenue_settled": stats.revenue_settled,
            "pnl_settlements": stats.settle_pnl,
            "lp": dict(sorted(stats.lp_actions.items())),
            "invariants_ok": self.invariants_ok,
            "invariants": {
                r.name: {"ok": r.ok, "detail": r.detail, "note": r.note} for r in self.invariants
            },
            "records": {"seen": len(stats.seen), "missing": self.records_missing},
            "bots": self.bots,
            "scenario": self.scenario,
            "units": "amounts are integers at protocol precision: quote 1e6, price 1e6, base 1e9",
            **self.extra,
        }


def scenario_text(scenario: Mapping[str, Any], slot_ms: int) -> str:
    parts = []
    crash = scenario.get("crash")
    if crash is not None:
        reached = "" if "exposed" in crash else " (not reached)"
        parts.append(
            f"crash {crash['ppm'] / 10_000:+.1f}% on {crash['oracle']} "
            f"({crash['others_ppm'] / 10_000:+.1f}% elsewhere) at step {crash['at_step']}"
            f"{reached}"
        )
    for jump in scenario.get("fast_forwards", []):
        parts.append(
            f"fast-forward at step {jump['at_step']}: +{jump['slots']} slots "
            f"(+{jump['slots'] * slot_ms // 1000} s of protocol time)"
        )
    if "stopped_early_at_step" in scenario:
        parts.append(f"stopped early at step {scenario['stopped_early_at_step']}")
    return "; ".join(parts) if parts else "plain trading"


def format_report(report: DemoReport) -> str:
    data = report.to_json()
    stats = report.stats
    fills = data["fills_by_layer"]
    latency = data["latency_ms"]
    rewards = ", ".join(f"{k} {usd(v)}" for k, v in data["rewards"].items()) or "none"
    lines = [
        "",
        f"drift-keepers demo: {report.slots} slots of {report.slot_ms} ms, seed {report.seed}, "
        f"{report.duration_s:.1f} s",
        "",
        f"orders by type     {_counts(stats.orders_by_type)}",
        f"fills by layer     JIT {fills['jit']}, DLOB {fills['dlob']}, vAMM {fills['amm']}"
        f"  (volume {usd(stats.volume)})",
        f"keeper rewards     {rewards}  (triggers fired: {stats.triggers})",
        f"funding updates    {data['funding_updates']}",
        f"rejections         {_counts(report.rejections_by_code)}",
        f"intent -> fill     p50 {latency['p50']} ms, p99 {latency['p99']} ms "
        f"({data['intents']['filled']} of {data['intents']['published']} intents filled; "
        "from the publish to the fill on the bus, waiting for the auction included)",
        f"liquidations       {data['liquidations']}  ({_counts(stats.liquidations)})",
        f"bankruptcies       {data['bankruptcies']}  (insurance fund paid "
        f"{usd(stats.insurance_payments)}, socialized {usd(stats.loss_socialized)})",
        f"insurance fund     {usd(report.insurance_fund_before)} -> "
        f"{usd(report.insurance_fund_after)}",
        f"revenue settled    {usd(stats.revenue_settled)} to the insurance fund",
        f"BAL providers      {_counts(stats.lp_actions)}",
        f"bots               {', '.join(f'{k} ({v})' for k, v in report.bots.items())}",
        f"scenario           {scenario_text(report.scenario, report.slot_ms)}",
        "",
        "invariants",
    ]
    for result in report.invariants:
        mark = "note" if result.note else ("ok  " if result.ok else "FAIL")
        lines.append(f"  {mark} {result.name}: {result.detail}")
    verdict = "hold" if report.invariants_ok else "DO NOT HOLD"
    lines += ["", f"invariants {verdict}", ""]
    return "\n".join(lines)
