"""A deterministic digest of the whole program state.

Two program states hash equal iff every account field is equal: the walk visits dataclass
fields in declaration order, dict entries in sorted key order, and tags every value with its
type, so ``0``, ``False`` and ``b""`` never collide. Used to prove a restart or a replay
reproduces the state bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
from enum import Enum
from typing import Any

from protocol.accounts import ProgramState


def _feed(h: Any, value: Any) -> None:
    if value is None:
        h.update(b"N")
    elif isinstance(value, bool):
        h.update(b"T" if value else b"F")
    elif isinstance(value, Enum):
        h.update(b"E" + type(value).__name__.encode() + b":" + str(value.value).encode() + b";")
    elif isinstance(value, int):
        h.update(b"I" + str(value).encode() + b";")
    elif isinstance(value, bytes):
        h.update(b"B" + len(value).to_bytes(4, "little") + value)
    elif isinstance(value, str):
        raw = value.encode()
        h.update(b"S" + len(raw).to_bytes(4, "little") + raw)
    elif isinstance(value, (list, tuple)):
        h.update(b"L" + len(value).to_bytes(4, "little"))
        for item in value:
            _feed(h, item)
    elif isinstance(value, dict):
        h.update(b"D" + len(value).to_bytes(4, "little"))
        for key in sorted(value):
            _feed(h, key)
            _feed(h, value[key])
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(b"C" + type(value).__name__.encode() + b"{")
        for f in dataclasses.fields(value):
            _feed(h, getattr(value, f.name))
        h.update(b"}")
    else:
        raise TypeError(f"cannot hash {type(value).__name__}")


def state_hash(state: ProgramState, next_seq: int) -> str:
    """Hex SHA-256 of the state and the next record sequence number."""
    h = hashlib.sha256()
    _feed(h, state)
    _feed(h, next_seq)
    return h.hexdigest()
