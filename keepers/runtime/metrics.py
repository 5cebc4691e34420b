"""Prometheus metrics of a keeper process, in a registry of its own.

Each process (or test) builds one :class:`RuntimeMetrics` with a fresh ``CollectorRegistry``,
so two runtimes in one test never share counters and nothing lands in the global default
registry. Every series is labelled by ``bot`` (the bot's instance name).

Series (names as exported; counters get ``_total``):

* ``keepers_bot_ticks_total{bot}``; ``keepers_bot_tick_duration_seconds{bot}`` (histogram);
* ``keepers_bot_actions_total{bot,kind}``: actions decided;
* ``keepers_bot_actions_skipped_total{bot,kind,reason}``: not sent (``duplicate`` in flight);
* ``keepers_tx_sent_total{bot,kind}``; ``keepers_tx_accepted_total{bot,kind}``;
  ``keepers_tx_seconds{bot,kind}`` (histogram): from sending a transaction to the node's
  answer (retries included);
  ``keepers_tx_rejected_total{bot,kind,code}`` (``code`` is the error code *name*);
  ``keepers_tx_failed_total{bot,kind}``: transient I/O that outlived its retries;
  ``keepers_tx_retries_total{bot,kind}``;
* ``keepers_tx_simulated_total{bot,kind,result}`` (``result`` is ``ok`` or the code name);
* ``keepers_bot_rewards_earned_total{bot}``: rewards in QUOTE_PRECISION units (a Prometheus
  counter is a float; exact below 2**53 units, i.e. nine billion dollars);
* ``keepers_bot_restarts_total{bot}``; ``keepers_bot_events_dropped_total{bot}``;
* ``keepers_bot_last_tick_age_seconds{bot}`` (read at scrape time from the watchdogs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TX_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.ticks = Counter("keepers_bot_ticks", "Ticks completed", ["bot"], registry=r)
        self.tick_duration = Histogram(
            "keepers_bot_tick_duration_seconds",
            "Tick duration (decide and execute)",
            ["bot"],
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "keepers_bot_actions", "Actions decided", ["bot", "kind"], registry=r
        )
        self.actions_skipped = Counter(
            "keepers_bot_actions_skipped",
            "Actions not sent",
            ["bot", "kind", "reason"],
            registry=r,
        )
        self.tx_sent = Counter("keepers_tx_sent", "Transactions sent", ["bot", "kind"], registry=r)
        self.tx_seconds = Histogram(
            "keepers_tx_seconds",
            "From sending a transaction to the node's answer (retries included)",
            ["bot", "kind"],
            buckets=TX_BUCKETS,
            registry=r,
        )
        self.tx_accepted = Counter(
            "keepers_tx_accepted", "Transactions accepted", ["bot", "kind"], registry=r
        )
        self.tx_rejected = Counter(
            "keepers_tx_rejected",
            "Transactions rejected, by error code name",
            ["bot", "kind", "code"],
            registry=r,
        )
        self.tx_failed = Counter(
            "keepers_tx_failed",
            "Transactions whose outcome is unknown after retrying transient errors",
            ["bot", "kind"],
            registry=r,
        )
        self.tx_retries = Counter(
            "keepers_tx_retries", "Retries after transient errors", ["bot", "kind"], registry=r
        )
        self.tx_simulated = Counter(
            "keepers_tx_simulated",
            "Simulations, by result (ok or the error code name)",
            ["bot", "kind", "result"],
            registry=r,
        )
        self.rewards = Counter(
            "keepers_bot_rewards_earned",
            "Rewards earned (QUOTE_PRECISION units)",
            ["bot"],
            registry=r,
        )
        self.restarts = Counter(
            "keepers_bot_restarts", "Bot restarts after a crash", ["bot"], registry=r
        )
        self.events_dropped = Counter(
            "keepers_bot_events_dropped",
            "Bus events dropped from a bot's pending buffer (it was full)",
            ["bot"],
            registry=r,
        )

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def watch_ticks(self, ages: Callable[[], Iterable[tuple[str, float]]]) -> None:
        """Export ``keepers_bot_last_tick_age_seconds`` from ``ages()`` at scrape time."""
        self.registry.register(_TickAgeCollector(ages))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0.0 if absent): for tests and the demo's report."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


class _TickAgeCollector(Collector):
    def __init__(self, ages: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self._ages = ages

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "keepers_bot_last_tick_age_seconds", "Seconds since the bot's last tick", labels=["bot"]
        )
        for bot, age in self._ages():
            family.add_metric([bot], age)
        yield family
