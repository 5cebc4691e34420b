"""Canonical, versioned byte encoding of instructions and other signed messages.

The encoding is Borsh-like and fully determined by the *declared* field order of a frozen
dataclass and each field's declared width; it never depends on ``repr``, dict order or the
Python version:

* ``U8``..``U128`` / ``I8``..``I128``: little-endian fixed width; a value outside the width is
  rejected with :class:`~protocol.errors.InvalidParameter` naming the field.
* ``bool`` and ``IntEnum`` subclasses: one byte (an enum's value must be a member).
* ``Pubkey`` (32 bytes), ``Signature`` (64 bytes): raw bytes of exactly that length.
* ``str``: ``u16`` length + UTF-8 (at most :data:`MAX_STR_BYTES`).
* ``X | None``: a ``u8`` tag (0 = None, 1 = present) then ``X``.
* ``tuple[X, ...]``: ``u16`` count then the items.
* a nested frozen dataclass: its fields in order.

A bare ``int`` field is a programming error (no width), caught when the class is compiled.
Decoding rejects trailing bytes, unknown enum values, bad tags and short buffers, always
naming the field path (``params.base_asset_amount``). A struct whose fields are all fixed-width
(integers up to 64 bits, fixed bytes, bools, enums: most instructions) decodes in one
:func:`struct.unpack_from`; whatever that cannot take is decoded again field by field, so
values and refusals are exactly those of the field-by-field decoder.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter

MAX_STR_BYTES = 256


@dataclass(frozen=True, slots=True)
class IntWidth:
    name: str
    size: int
    signed: bool

    @property
    def lo(self) -> int:
        return -(1 << (8 * self.size - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (8 * self.size - 1)) - 1 if self.signed else (1 << (8 * self.size)) - 1


@dataclass(frozen=True, slots=True)
class FixedBytes:
    size: int


U8 = Annotated[int, IntWidth("u8", 1, False)]
U16 = Annotated[int, IntWidth("u16", 2, False)]
U32 = Annotated[int, IntWidth("u32", 4, False)]
U64 = Annotated[int, IntWidth("u64", 8, False)]
U128 = Annotated[int, IntWidth("u128", 16, False)]
I8 = Annotated[int, IntWidth("i8", 1, True)]
I16 = Annotated[int, IntWidth("i16", 2, True)]
I32 = Annotated[int, IntWidth("i32", 4, True)]
I64 = Annotated[int, IntWidth("i64", 8, True)]
I128 = Annotated[int, IntWidth("i128", 16, True)]
Pubkey = Annotated[bytes, FixedBytes(32)]
Signature = Annotated[bytes, FixedBytes(64)]


def _malformed(path: str, detail: str) -> InvalidParameter:
    return InvalidParameter(path, detail, ErrorCode.MalformedTransaction)


def _invalid(path: str, detail: str) -> InvalidParameter:
    return InvalidParameter(path, detail, ErrorCode.InvalidParameter)


Encoder = Callable[[Any, bytearray, str], None]
Decoder = Callable[[memoryview, int, str], tuple[Any, int]]


@dataclass(frozen=True, slots=True)
class _Fixed:
    """How a fixed-width field reads with :mod:`struct`: its format and what the raw value
    must pass (``"bool"``: 0 or 1; a dict: an enum's members by value; ``None``: anything)."""

    fmt: str
    check: str | dict[int, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Codec:
    encode: Encoder
    decode: Decoder
    fixed: _Fixed | None = None  # set for fields a flat struct can read in one unpack


_STRUCT_INT_FORMATS: Final = {
    (1, False): "B",
    (2, False): "H",
    (4, False): "I",
    (8, False): "Q",
    (1, True): "b",
    (2, True): "h",
    (4, True): "i",
    (8, True): "q",
}


def _int_codec(width: IntWidth) -> _Codec:
    size, signed, lo, hi = width.size, width.signed, width.lo, width.hi

    def enc(value: Any, out: bytearray, path: str) -> None:
        if type(value) is not int:  # bool is an int subclass; refuse it here
            raise _invalid(path, f"expected an integer ({width.name}), got {type(value).__name__}")
        if not lo <= value <= hi:
            raise _invalid(path, f"{value} is out of range for {width.name}")
        out += value.to_bytes(size, "little", signed=signed)

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        end = off + size
        if end > len(buf):
            raise _malformed(path, f"truncated: {width.name} needs {size} bytes")
        return int.from_bytes(buf[off:end], "little", signed=signed), end

    fmt = _STRUCT_INT_FORMATS.get((size, signed))
    return _Codec(enc, dec, _Fixed(fmt) if fmt is not None else None)


def _bool_codec() -> _Codec:
    def enc(value: Any, out: bytearray, path: str) -> None:
        if type(value) is not bool:
            raise _invalid(path, f"expected a bool, got {type(value).__name__}")
        out.append(1 if value else 0)

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        if off >= len(buf):
            raise _malformed(path, "truncated: bool")
        b = buf[off]
        if b > 1:
            raise _malformed(path, f"bool byte must be 0 or 1, got {b}")
        return b == 1, off + 1

    return _Codec(enc, dec, _Fixed("B", "bool"))


def _enum_codec(enum_type: type[IntEnum]) -> _Codec:
    members = {m.value: m for m in enum_type}

    def enc(value: Any, out: bytearray, path: str) -> None:
        if not isinstance(value, enum_type):
            raise _invalid(path, f"expected {enum_type.__name__}, got {value!r}")
        out.append(int(value))

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        if off >= len(buf):
            raise _malformed(path, f"truncated: {enum_type.__name__}")
        member = members.get(buf[off])
        if member is None:
            raise _malformed(path, f"{buf[off]} is not a {enum_type.__name__}")
        return member, off + 1

    return _Codec(enc, dec, _Fixed("B", members))


def _bytes_codec(size: int) -> _Codec:
    def enc(value: Any, out: bytearray, path: str) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            got = len(value) if isinstance(value, bytes) else type(value).__name__
            raise _invalid(path, f"expected {size} bytes, got {got}")
        out += value

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        end = off + size
        if end > len(buf):
            raise _malformed(path, f"truncated: {size} bytes")
        return bytes(buf[off:end]), end

    return _Codec(enc, dec, _Fixed(f"{size}s"))


def _str_codec() -> _Codec:
    def enc(value: Any, out: bytearray, path: str) -> None:
        if not isinstance(value, str):
            raise _invalid(path, f"expected a string, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > MAX_STR_BYTES:
            raise _invalid(path, f"longer than {MAX_STR_BYTES} bytes")
        out += len(raw).to_bytes(2, "little") + raw

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        if off + 2 > len(buf):
            raise _malformed(path, "truncated: string length")
        n = int.from_bytes(buf[off : off + 2], "little")
        end = off + 2 + n
        if n > MAX_STR_BYTES or end > len(buf):
            raise _malformed(path, "bad string length")
        try:
            return bytes(buf[off + 2 : end]).decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise _malformed(path, "string is not UTF-8") from exc

    return _Codec(enc, dec)


def _option_codec(inner: _Codec) -> _Codec:
    def enc(value: Any, out: bytearray, path: str) -> None:
        if value is None:
            out.append(0)
        else:
            out.append(1)
            inner.encode(value, out, path)

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        if off >= len(buf):
            raise _malformed(path, "truncated: option tag")
        tag = buf[off]
        if tag == 0:
            return None, off + 1
        if tag != 1:
            raise _malformed(path, f"option tag must be 0 or 1, got {tag}")
        return inner.decode(buf, off + 1, path)

    return _Codec(enc, dec)


def _tuple_codec(inner: _Codec, max_items: int = 64) -> _Codec:
    def enc(value: Any, out: bytearray, path: str) -> None:
        if not isinstance(value, tuple):
            raise _invalid(path, f"expected a tuple, got {type(value).__name__}")
        if len(value) > max_items:
            raise _invalid(path, f"more than {max_items} items")
        out += len(value).to_bytes(2, "little")
        for i, item in enumerate(value):
            inner.encode(item, out, f"{path}[{i}]")

    def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        if off + 2 > len(buf):
            raise _malformed(path, "truncated: count")
        n = int.from_bytes(buf[off : off + 2], "little")
        if n > max_items:
            raise _malformed(path, f"more than {max_items} items")
        off += 2
        items = []
        for i in range(n):
            item, off = inner.decode(buf, off, f"{path}[{i}]")
            items.append(item)
        return tuple(items), off

    return _Codec(enc, dec)


_CACHE: dict[type, _Codec] = {}


def _codec_for(tp: Any, owner: str) -> _Codec:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        for m in meta:
            if isinstance(m, IntWidth):
                return _int_codec(m)
            if isinstance(m, FixedBytes):
                return _bytes_codec(m.size)
        return _codec_for(base, owner)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(get_args(tp)) != 2:
            raise TypeError(f"{owner}: only `X | None` unions are encodable, got {tp}")
        return _option_codec(_codec_for(args[0], owner))
    if origin is tuple:
        targs = get_args(tp)
        if len(targs) != 2 or targs[1] is not Ellipsis:
            raise TypeError(f"{owner}: only tuple[X, ...] is encodable, got {tp}")
        return _tuple_codec(_codec_for(targs[0], owner))
    if tp is bool:
        return _bool_codec()
    if tp is str:
        return _str_codec()
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        return _enum_codec(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return struct_codec(tp)
    raise TypeError(f"{owner}: no canonical encoding for {tp!r} (give ints a width, e.g. U64)")


def struct_codec(cls: type) -> _Codec:
    """The (cached) codec of a frozen dataclass: its fields in declaration order."""
    cached = _CACHE.get(cls)
    if cached is not None:
        return cached
    hints = get_type_hints(cls, include_extras=True)
    fields = [
        (f.name, _codec_for(hints[f.name], f"{cls.__name__}.{f.name}"))
        for f in dataclasses.fields(cls)
    ]

    def enc(value: Any, out: bytearray, path: str) -> None:
        if type(value) is not cls:
            raise _invalid(path or cls.__name__, f"expected {cls.__name__}")
        prefix = f"{path}." if path else ""
        for name, codec in fields:
            codec.encode(getattr(value, name), out, prefix + name)

    def dec_fields(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
        prefix = f"{path}." if path else ""
        kwargs: dict[str, Any] = {}
        for name, codec in fields:
            kwargs[name], off = codec.decode(buf, off, prefix + name)
        return cls(**kwargs), off

    dec = dec_fields
    flat = _compile_flat(cls, fields)
    if flat is not None:
        read, size = flat

        def dec(buf: memoryview, off: int, path: str) -> tuple[Any, int]:
            # One unpack for a struct of fixed-width fields; anything it cannot take (a short
            # buffer, a bad bool or enum byte) is read again field by field, which names it.
            if off + size <= len(buf):
                value = read(buf, off)
                if value is not None:
                    return value, off + size
            return dec_fields(buf, off, path)

    codec = _Codec(enc, dec)
    _CACHE[cls] = codec
    return codec


def _compile_flat(
    cls: type, fields: list[tuple[str, _Codec]]
) -> tuple[Callable[[memoryview, int], Any], int] | None:
    """For a struct whose fields are all fixed-width: a function reading one from a buffer at
    an offset in a single :func:`struct.unpack_from` (``None`` if a bool or enum byte is out
    of range), and its size. ``None`` for any other struct."""
    if not fields or any(codec.fixed is None for _, codec in fields):
        return None
    if any(not f.init or f.kw_only for f in dataclasses.fields(cls)):
        return None
    fixed = [codec.fixed for _, codec in fields if codec.fixed is not None]
    layout = struct.Struct("<" + "".join(f.fmt for f in fixed))
    names = [f"v{i}" for i in range(len(fixed))]
    lines = ["def read(buf, off):", f"    {', '.join(names)}, = unpack_from(buf, off)"]
    namespace: dict[str, Any] = {"unpack_from": layout.unpack_from, "cls": cls}
    for i, spec in enumerate(fixed):
        if spec.check == "bool":
            lines += [f"    if v{i} > 1:", "        return None", f"    v{i} = v{i} == 1"]
        elif isinstance(spec.check, dict):
            namespace[f"members{i}"] = spec.check
            lines += [
                f"    v{i} = members{i}.get(v{i})",
                f"    if v{i} is None:",
                "        return None",
            ]
    lines.append(f"    return cls({', '.join(names)})")
    exec("\n".join(lines), namespace)  # noqa: S102 -- built from the class's own field list
    read: Callable[[memoryview, int], Any] = namespace["read"]
    return read, layout.size


T = TypeVar("T")


def encode(value: Any, path: str = "") -> bytes:
    """Canonical bytes of a frozen dataclass value."""
    out = bytearray()
    struct_codec(type(value)).encode(value, out, path)
    return bytes(out)


def decode(cls: type[T], data: bytes | memoryview, path: str = "") -> T:
    """Decode exactly ``data`` as ``cls``; trailing bytes are malformed."""
    buf = memoryview(data)
    value, end = struct_codec(cls).decode(buf, 0, path)
    if end != len(buf):
        raise _malformed(path or cls.__name__, f"{len(buf) - end} trailing bytes")
    return typing.cast(T, value)


def check_encodable(value: Any, path: str = "") -> None:
    """Raise :class:`InvalidParameter` (naming the field) unless ``value`` encodes."""
    struct_codec(type(value)).encode(value, bytearray(), path)


__all__ = [
    "I8",
    "I16",
    "I32",
    "I64",
    "I128",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "FixedBytes",
    "IntWidth",
    "Pubkey",
    "Signature",
    "check_encodable",
    "decode",
    "encode",
    "struct_codec",
]
