"""Benchmarks: run as scripts (``python -m benchmarks.dlob``); not part of the test suite."""
