"""Exact, deterministic snapshots of the whole program state.

A snapshot is the :class:`~protocol.accounts.ProgramState` plus the program's next record
sequence number and the slot it was taken at, as bytes that decode back into *equal* objects
of the *same* types: every dataclass, list, tuple, dict, enum, ``bytes`` and ``int`` comes back
as itself, frozen :class:`~protocol.state.State` included. Nothing is pickled: the encoder walks
the dataclasses in field order (as :mod:`protocol.state_hash` does) into a plain tree that
msgspec writes as MessagePack, and the decoder rebuilds only classes it knows.

The tree
--------
Scalars are MessagePack's own: ``None``, ``bool``, ``str``, ``bytes``, and ``int`` within
``[-2**63, 2**64)``. Every other value is an array whose first element is a tag:

* ``[OBJ, class_id, field_0, field_1, ...]``: a dataclass, fields in declaration order;
* ``[LIST, item, ...]`` and ``[TUPLE, item, ...]``: kept apart, ``FeeStructure.fee_tiers`` is a
  tuple and ``User.orders`` a list;
* ``[DICT, key_0, value_0, key_1, value_1, ...]``: keys are trees too, so ``UserKey``
  ``(bytes, int)`` tuples and ``bytes`` keys need no string mangling;
* ``[ENUM, enum_id, value]``: an ``IntEnum`` / ``IntFlag`` member (flag combinations included);
* ``[BIGINT, two's-complement big-endian bytes]``: the ``u128`` / ``i128`` amounts MessagePack's
  64-bit integers cannot hold.

Invariants
----------
* ``decode(encode(s)).state == s.state`` and the decoded state hashes (``state_hash``) the same.
* ``encode`` is a function of the value *and* its dict insertion orders: dicts are written in
  iteration order, not sorted, so a restored state iterates exactly as the one that was saved
  did (the program's behaviour must never depend on it, but a restart must not be the first
  thing to find out). The same state built the same way always gives the same bytes.
* The classes and enums a snapshot may contain are the closed set reachable from
  ``ProgramState``'s type hints, discovered once at import. The snapshot carries that schema
  (class names with their field names, enum names); decoding a snapshot whose schema differs
  from the running code's is a :class:`SnapshotError` naming the class, never a silent
  misreading. Known limit: adding a state field therefore invalidates older snapshots; the
  journal still holds every transaction, so a node can be rebuilt from genesis.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import msgspec

from protocol.accounts import ProgramState

__all__ = [
    "FORMAT_VERSION",
    "Snapshot",
    "SnapshotError",
    "decode_snapshot",
    "encode_snapshot",
]

FORMAT_VERSION: Final = 1
_MAGIC: Final = "drift-keepers/snapshot"

# Tags: the first element of every array in the tree.
_OBJ: Final = 0
_LIST: Final = 1
_TUPLE: Final = 2
_DICT: Final = 3
_ENUM: Final = 4
_BIGINT: Final = 5

_I64_MIN: Final = -(2**63)
_U64_END: Final = 2**64


class SnapshotError(ValueError):
    """A snapshot that cannot be decoded: corrupt bytes, an unknown class or a schema change."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The program's full state at a point: what a restart resumes from.

    ``next_seq`` is :attr:`protocol.program.Program.next_seq`; ``slot`` the slot of the last
    transaction the state includes (the genesis slot for a genesis snapshot).
    """

    state: ProgramState
    next_seq: int
    slot: int


# --- the closed schema ------------------------------------------------------------------
def _discover() -> tuple[tuple[type[Any], ...], tuple[type[Enum], ...]]:
    """Every dataclass and enum reachable from ``ProgramState``'s field types, in a
    deterministic order (depth-first, fields in declaration order)."""
    classes: list[type[Any]] = []
    enums: list[type[Enum]] = []

    def walk(tp: Any) -> None:
        if typing.get_origin(tp) is not None:
            for arg in typing.get_args(tp):
                if arg is not Ellipsis:
                    walk(arg)
        elif isinstance(tp, type) and issubclass(tp, Enum):
            if tp not in enums:
                enums.append(tp)
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if tp in classes:
                return
            classes.append(tp)
            hints = typing.get_type_hints(tp)
            for f in dataclasses.fields(tp):
                if not f.init:
                    # decoding calls the constructor with every field; a non-init field
                    # would need a different path, so refuse at import rather than at restart
                    raise TypeError(f"{tp.__name__}.{f.name} is not an __init__ field")
                walk(hints[f.name])

    walk(ProgramState)
    return tuple(classes), tuple(enums)


_CLASSES, _ENUMS = _discover()
_CLASS_ID: Final = {cls: i for i, cls in enumerate(_CLASSES)}
_ENUM_ID: Final = {cls: i for i, cls in enumerate(_ENUMS)}
_FIELD_NAMES: Final = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES}
_SCHEMA: Final = (
    [[cls.__name__, list(_FIELD_NAMES[cls])] for cls in _CLASSES],
    [e.__name__ for e in _ENUMS],
)


# --- encoding ---------------------------------------------------------------------------
def _tree(value: Any, path: str) -> Any:
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is bytes:
        return value
    if kind is int:
        if _I64_MIN <= value < _U64_END:
            return value
        length = (value.bit_length() + 8) // 8  # +1 bit for the sign, rounded up to bytes
        return [_BIGINT, value.to_bytes(length, "big", signed=True)]
    if isinstance(value, Enum):
        enum_id = _ENUM_ID.get(kind)
        if enum_id is None:
            raise TypeError(f"{path}: enum {kind.__name__} is not part of the program state")
        return [_ENUM, enum_id, _tree(value.value, path)]
    class_id = _CLASS_ID.get(kind)
    if class_id is not None:
        return [
            _OBJ,
            class_id,
            *(_tree(getattr(value, name), f"{path}.{name}") for name in _FIELD_NAMES[kind]),
        ]
    if kind is list or kind is tuple:
        return [
            _LIST if kind is list else _TUPLE,
            *(_tree(item, f"{path}[{i}]") for i, item in enumerate(value)),
        ]
    if kind is dict:
        out: list[Any] = [_DICT]
        for key, item in value.items():
            out.append(_tree(key, f"{path}.<key>"))
            out.append(_tree(item, f"{path}[{key!r}]"))
        return out
    raise TypeError(f"{path}: cannot snapshot a {kind.__name__}")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The snapshot as bytes; ``TypeError`` naming the path if the state holds a value no
    snapshot can represent (a set, a float, a class outside the program state)."""
    if type(snapshot.state) is not ProgramState:
        raise TypeError("snapshot.state must be a ProgramState")
    body = [
        _MAGIC,
        FORMAT_VERSION,
        _SCHEMA[0],
        _SCHEMA[1],
        _tree(snapshot.state, "state"),
        snapshot.next_seq,
        snapshot.slot,
    ]
    return _encoder.encode(body)


# --- decoding ---------------------------------------------------------------------------
def _index(node: list[Any], count: int) -> int:
    # a negative id would silently wrap around in a Python list
    i = node[1] if len(node) > 1 else None
    if type(i) is not int or not 0 <= i < count:
        raise SnapshotError(f"bad class or enum id {i!r}")
    return i


class _Reader:
    """Maps the snapshot's own class/enum ids onto the running code's, checking each."""

    __slots__ = ("classes", "enums")

    def __init__(self, class_schema: Any, enum_schema: Any) -> None:
        by_name = {cls.__name__: cls for cls in _CLASSES}
        enums_by_name = {e.__name__: e for e in _ENUMS}
        if not isinstance(class_schema, list) or not isinstance(enum_schema, list):
            raise SnapshotError("malformed schema")
        self.classes: list[type[Any]] = []
        for entry in class_schema:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise SnapshotError("malformed schema entry")
            name, fields = entry
            cls = by_name.get(name)
            if cls is None:
                raise SnapshotError(f"snapshot has class {name}, which the program state lacks")
            if tuple(fields) != _FIELD_NAMES[cls]:
                raise SnapshotError(
                    f"{name} fields differ: snapshot {fields}, code {list(_FIELD_NAMES[cls])}"
                )
            self.classes.append(cls)
        self.enums: list[type[Enum]] = []
        for name in enum_schema:
            found = enums_by_name.get(name) if isinstance(name, str) else None
            if found is None:
                raise SnapshotError(f"snapshot has enum {name!r}, which the program state lacks")
            self.enums.append(found)

    def value(self, node: Any) -> Any:
        if type(node) is not list:
            return node
        if not node:
            raise SnapshotError("empty array in snapshot tree")
        tag = node[0]
        if tag == _OBJ:
            cls = self.classes[_index(node, len(self.classes))]
            args = [self.value(v) for v in node[2:]]
            if len(args) != len(_FIELD_NAMES[cls]):
                raise SnapshotError(f"{cls.__name__}: {len(args)} values for its fields")
            return cls(*args)
        if tag == _LIST:
            return [self.value(v) for v in node[1:]]
        if tag == _TUPLE:
            return tuple(self.value(v) for v in node[1:])
        if tag == _DICT:
            items = node[1:]
            if len(items) % 2:
                raise SnapshotError("dict with an odd number of keys and values")
            return {self.value(items[i]): self.value(items[i + 1]) for i in range(0, len(items), 2)}
        if tag == _ENUM:
            return self.enums[_index(node, len(self.enums))](node[2])
        if tag == _BIGINT:
            return int.from_bytes(node[1], "big", signed=True)
        raise SnapshotError(f"unknown tag {tag!r}")


def decode_snapshot(raw: bytes) -> Snapshot:
    """The snapshot ``raw`` encodes; :class:`SnapshotError` if it is corrupt or was written
    for a different state layout."""
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from exc
    if not (isinstance(body, list) and len(body) == 7 and body[0] == _MAGIC):
        raise SnapshotError("not a snapshot")
    if body[1] != FORMAT_VERSION:
        raise SnapshotError(f"unsupported snapshot format {body[1]!r}")
    reader = _Reader(body[2], body[3])
    try:
        state = reader.value(body[4])
    except SnapshotError:
        raise
    except (IndexError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed snapshot tree: {exc}") from exc
    next_seq, slot = body[5], body[6]
    if type(state) is not ProgramState or type(next_seq) is not int or type(slot) is not int:
        raise SnapshotError("snapshot does not hold a program state, next_seq and slot")
    return Snapshot(state, next_seq, slot)
