"""The time a transaction executes at. The protocol never reads a wall clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    slot: int
    unix_timestamp: int  # seconds
