"""Test-suite-wide settings."""

from hypothesis import settings

# Property tests check correctness, not speed (speed lives in benchmarks/): a wall-clock deadline
# only makes them flaky on a loaded two-core machine.
settings.register_profile("drift-keepers", deadline=None)
settings.load_profile("drift-keepers")
