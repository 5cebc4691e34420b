"""JSON for protocol accounts: what the node serves and :class:`keepers.rpc.NodeClient` decodes.

One codec for both ends, so a ``User`` read over HTTP decodes back into a ``User`` *equal* to
the node's. The JSON is the dataclass itself, field by field in declaration order:

* ``int`` stays an integer at its program precision (JSON carries the u128/i128 amounts;
  msgspec reads them back exactly), ``bool`` and ``str`` as themselves;
* ``bytes`` (public keys) as lowercase hex;
* enums (``IntEnum`` and ``IntFlag``) as their integer values;
* lists and tuples as arrays; nested dataclasses as objects; ``None`` as ``null``.

Decoding (:func:`from_builtins`, :func:`decode_account`) walks the class's type hints and is
strict: a wrong JSON type, a bool where an int belongs, non-hex bytes, an unknown enum value or
an unknown field is an :class:`AccountDecodeError` naming the path (``$.orders[2].price``). A
missing field that has a default takes it (a node one version older that lacks a new field still
decodes); a missing field without one is an error. Dict-typed fields are not part of any account
and are refused on both sides.
"""

from __future__ import annotations

import dataclasses
import typing
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Any, Final, TypeVar, Union, get_args, get_origin

import msgspec

__all__ = [
    "AccountDecodeError",
    "decode_account",
    "encode_account",
    "from_builtins",
    "to_builtins",
]

T = TypeVar("T")

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder()


class AccountDecodeError(ValueError):
    """JSON that is not a valid account of the expected class; ``path`` locates the problem."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@cache
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, has a default) of each field, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def to_builtins(value: object) -> Any:
    """``value`` as JSON-ready builtins (see the module docstring)."""
    kind: type[Any] = type(value)
    if value is None or kind is int or kind is bool or kind is str:
        return value
    if kind is bytes:
        return value.hex()  # type: ignore[attr-defined]
    if isinstance(value, Enum):
        return value.value
    if kind is list or kind is tuple:
        return [to_builtins(item) for item in value]  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_builtins(getattr(value, name)) for name in _field_names(kind)}
    raise TypeError(f"cannot encode a {kind.__name__} as account JSON")


def encode_account(value: object) -> bytes:
    """The JSON bytes of an account (any protocol state dataclass)."""
    return _encoder.encode(to_builtins(value))


def decode_account(cls: type[T], raw: bytes) -> T:
    """The ``cls`` instance ``raw`` (JSON) holds; :class:`AccountDecodeError` if it does not."""
    try:
        obj = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise AccountDecodeError("$", f"not JSON: {exc}") from None
    return from_builtins(cls, obj)


def from_builtins(tp: type[T], obj: object, path: str = "$") -> T:
    """Rebuild a value of type ``tp`` (a dataclass, usually) from :func:`to_builtins` output."""
    value: T = _from(tp, obj, path)
    return value


def _from(tp: Any, obj: Any, path: str) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, UnionType) or origin is Union:
        options = get_args(tp)
        if obj is None and NoneType in options:
            return None
        real = [o for o in options if o is not NoneType]
        if len(real) != 1:
            raise TypeError(f"unsupported union {tp!r} in an account")
        return _from(real[0], obj, path)
    if origin is list or origin is tuple:
        if not isinstance(obj, list):
            raise AccountDecodeError(path, f"expected an array, got {_json_type(obj)}")
        args = get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_from(args[0], item, f"{path}[{i}]") for i, item in enumerate(obj)]
            return items if origin is list else tuple(items)
        if len(args) != len(obj):
            raise AccountDecodeError(path, f"expected {len(args)} items, got {len(obj)}")
        return tuple(
            _from(a, item, f"{path}[{i}]")
            for i, (a, item) in enumerate(zip(args, obj, strict=True))
        )
    if origin is not None:
        raise TypeError(f"unsupported type {tp!r} in an account")
    if tp is bool:
        if type(obj) is not bool:
            raise AccountDecodeError(path, f"expected a bool, got {_json_type(obj)}")
        return obj
    if tp is int:
        if type(obj) is not int:
            raise AccountDecodeError(path, f"expected an integer, got {_json_type(obj)}")
        return obj
    if tp is str:
        if type(obj) is not str:
            raise AccountDecodeError(path, f"expected a string, got {_json_type(obj)}")
        return obj
    if tp is bytes:
        if type(obj) is not str:
            raise AccountDecodeError(path, f"expected hex, got {_json_type(obj)}")
        try:
            return bytes.fromhex(obj)
        except ValueError:
            raise AccountDecodeError(path, "not hex") from None
    if isinstance(tp, type) and issubclass(tp, Enum):
        if type(obj) is not int:
            raise AccountDecodeError(path, f"expected an integer, got {_json_type(obj)}")
        try:
            return tp(obj)
        except ValueError:
            raise AccountDecodeError(path, f"{obj} is not a {tp.__name__}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, obj, path)
    raise TypeError(f"unsupported type {tp!r} in an account")


def _dataclass(cls: type, obj: Any, path: str) -> Any:
    if not isinstance(obj, dict):
        raise AccountDecodeError(path, f"expected an object, got {_json_type(obj)}")
    fields = _fields(cls)
    known = {name for name, _, _ in fields}
    for key in obj:
        if key not in known:
            raise AccountDecodeError(f"{path}.{key}", f"{cls.__name__} has no such field")
    kwargs: dict[str, Any] = {}
    for name, hint, has_default in fields:
        if name in obj:
            kwargs[name] = _from(hint, obj[name], f"{path}.{name}")
        elif not has_default:
            raise AccountDecodeError(f"{path}.{name}", f"missing ({cls.__name__} needs it)")
    return cls(**kwargs)


def _json_type(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a bool"
    if isinstance(obj, int):
        return "an integer"
    if isinstance(obj, float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    return "an object"
