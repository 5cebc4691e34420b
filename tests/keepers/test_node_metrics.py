"""The node's own latency histogram renders as Prometheus renders a histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from keepers.node_metrics import LatencyHistogram


def test_observations_land_in_the_first_bucket_at_or_above_them() -> None:
    registry = CollectorRegistry()
    histogram = LatencyHistogram("t_seconds", "test", (0.001, 0.01, 0.1))
    registry.register(histogram)
    for seconds in (0.0005, 0.001, 0.002, 0.01, 0.5, 0.5):
        histogram.observe(seconds)
    lines = [line for line in generate_latest(registry).decode().splitlines() if line[0] != "#"]
    assert lines == [
        't_seconds_bucket{le="0.001"} 2.0',  # a value equal to a bound is in its bucket
        't_seconds_bucket{le="0.01"} 4.0',
        't_seconds_bucket{le="0.1"} 4.0',
        't_seconds_bucket{le="+Inf"} 6.0',
        "t_seconds_count 6.0",
        "t_seconds_sum 1.0135",
    ]
