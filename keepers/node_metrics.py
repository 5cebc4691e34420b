"""Prometheus metrics of one node, in a registry of its own (several nodes can share a process).

Counted on the hot path: accepted transactions (one ``inc`` per group commit, by the number
it made durable), rejected ones (by error-code name: ``MalformedTransaction``,
``InvalidSignature``, ``DuplicateTransaction`` ...), simulations by outcome, requests refused
for backpressure, unexpected errors, the time from a request's arrival to its answer and the
sequencer's time per transaction (each a :class:`LatencyHistogram`: a bucket count and a sum
per observation, no lock, rendered as a Prometheus histogram at scrape time;
``prometheus_client``'s own costs a few microseconds an observation, which at thousands of
answers a second is worth saving). Read at scrape time from the objects that own them (no
per-event cost): the pipeline's depth, the slot, the journal's group commits
(:class:`~keepers.journal.JournalMetrics`: commits, entries, those written on the loop when
idle, a batch size histogram, time inside SQLite) and the publisher's queue, drops and lag.

Every name starts with ``keepers_node_``; Prometheus adds ``_total`` to counters.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from keepers.journal import JournalMetrics

__all__ = ["BATCH_BUCKETS", "EXECUTE_BUCKETS", "LatencyHistogram", "NodeMetrics", "PublisherStats"]

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
EXECUTE_BUCKETS: Final = (
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
)  # fmt: skip


@dataclass(slots=True)
class PublisherStats:
    """The publisher's counters (owned by :class:`keepers.node_publisher.Publisher`)."""

    queued: int = 0
    published: int = 0
    dropped: int = 0  # held past the bound while the broker was away or slow
    failures: int = 0  # losses met with messages unacknowledged (they are sent again)
    depth: int = 0


class LatencyHistogram(Collector):
    """A histogram observed from the event loop only: ``observe`` adds to one bucket's count
    and the sum (no lock); :meth:`collect` renders the cumulative buckets (``le``: at most
    the bound, as Prometheus means it)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterable[HistogramMetricFamily]:
        cumulative = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), total))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=cumulative, sum_value=self._sum
        )


class NodeMetrics:
    """The node's metrics; ``registry`` is what ``/metrics`` renders."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tx_accepted = Counter(
            "keepers_node_tx_accepted", "Transactions accepted and durable", registry=r
        )
        self.tx_rejected = Counter(
            "keepers_node_tx_rejected",
            "Transactions rejected, by error code name",
            ["code"],
            registry=r,
        )
        self.simulations = Counter(
            "keepers_node_simulations", "Simulations, by outcome", ["outcome"], registry=r
        )
        self.backpressure = Counter(
            "keepers_node_backpressure",
            "Requests refused with 503 because the pipeline was full",
            registry=r,
        )
        self.internal_errors = Counter(
            "keepers_node_internal_errors",
            "Transactions that raised an unexpected exception (state unchanged)",
            registry=r,
        )
        self.tx_seconds = LatencyHistogram(
            "keepers_node_tx_seconds",
            "From a transaction's arrival to its answer (durable for accepted ones)",
            LATENCY_BUCKETS,
        )
        r.register(self.tx_seconds)
        self.execute_seconds = LatencyHistogram(
            "keepers_node_execute_seconds",
            "Sequencer time per transaction: its execution and, if accepted, its bus messages",
            EXECUTE_BUCKETS,
        )
        r.register(self.execute_seconds)
        self.publish_lag = Histogram(
            "keepers_node_publish_lag_seconds",
            "From a message's commit (durable) to the broker's acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.restored_entries = Gauge(
            "keepers_node_restored_entries",
            "Journal entries re-executed at the last start",
            registry=r,
        )

    def watch(
        self,
        *,
        queue_depth: Callable[[], int],
        slot: Callable[[], int],
        last_index: Callable[[], int],
        journal: Callable[[], JournalMetrics],
        publisher: Callable[[], PublisherStats | None],
    ) -> None:
        """Register the scrape-time views (call once, when the node's parts exist)."""
        self.registry.register(_NodeCollector(queue_depth, slot, last_index, journal, publisher))


class _NodeCollector(Collector):
    def __init__(
        self,
        queue_depth: Callable[[], int],
        slot: Callable[[], int],
        last_index: Callable[[], int],
        journal: Callable[[], JournalMetrics],
        publisher: Callable[[], PublisherStats | None],
    ) -> None:
        self._queue_depth = queue_depth
        self._slot = slot
        self._last_index = last_index
        self._journal = journal
        self._publisher = publisher

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        yield GaugeMetricFamily(
            "keepers_node_queue_depth",
            "Transactions admitted and not yet answered (verifying or waiting to execute)",
            value=self._queue_depth(),
        )
        yield GaugeMetricFamily("keepers_node_slot", "The node's current slot", value=self._slot())
        yield GaugeMetricFamily(
            "keepers_node_journal_last_index",
            "Last journal entry appended",
            value=self._last_index(),
        )
        journal = self._journal()
        yield CounterMetricFamily(
            "keepers_node_journal_commits",
            "Journal group commits (one fsync each)",
            journal.commits,
        )
        yield CounterMetricFamily(
            "keepers_node_journal_entries", "Journal entries committed", journal.entries
        )
        yield CounterMetricFamily(
            "keepers_node_journal_idle_inline",
            "Commits of a lone entry after a quiet spell, written on the loop, not the thread",
            journal.idle_inline,
        )
        yield CounterMetricFamily(
            "keepers_node_journal_commit_seconds",
            "Seconds spent inside SQLite committing, fsync included",
            journal.commit_seconds,
        )
        yield _batch_histogram(journal)
        stats = self._publisher()
        if stats is None:
            return
        yield CounterMetricFamily(
            "keepers_node_published", "Bus messages acknowledged by the broker", stats.published
        )
        yield CounterMetricFamily(
            "keepers_node_publish_dropped",
            "Bus messages dropped at the publisher's bound (subscribers see a sequence gap)",
            stats.dropped,
        )
        yield CounterMetricFamily(
            "keepers_node_publish_failures", "Publish rounds that failed and were retried",
            stats.failures,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "keepers_node_publish_queue_depth", "Bus messages waiting to be published", stats.depth
        )


def _batch_histogram(journal: JournalMetrics) -> HistogramMetricFamily:
    """The journal's entries-per-commit counts as a cumulative histogram."""
    cumulative = []
    total = 0
    sizes = sorted(journal.batch_sizes.items())
    i = 0
    for bound in BATCH_BUCKETS:
        while i < len(sizes) and sizes[i][0] <= bound:
            total += sizes[i][1]
            i += 1
        cumulative.append((str(bound), total))
    count = sum(journal.batch_sizes.values())
    cumulative.append(("+Inf", count))
    return HistogramMetricFamily(
        "keepers_node_journal_batch_size",
        "Entries per journal commit",
        buckets=cumulative,
        sum_value=sum(size * n for size, n in journal.batch_sizes.items()),
    )
