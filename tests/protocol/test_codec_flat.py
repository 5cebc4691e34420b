"""A struct of fixed-width fields decodes in one unpack; the result, and every refusal, is
exactly what the field-by-field decoder gives (which still names the field)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import I8, I16, I32, I64, U8, U16, U32, U64, Pubkey, decode, encode
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter
from protocol.types import PositionDirection


@dataclass(frozen=True, slots=True)
class Flat:
    key: Pubkey
    a: U8
    b: U16
    c: U32
    d: U64
    e: I8
    f: I16
    g: I32
    h: I64
    flag: bool
    side: PositionDirection


SIZE = 32 + 1 + 2 + 4 + 8 + 1 + 2 + 4 + 8 + 1 + 1
SAMPLE = Flat(bytes(32), 1, 2, 3, 4, -1, -2, -3, -4, True, PositionDirection.Short)


def ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


flats = st.builds(
    Flat,
    key=st.binary(min_size=32, max_size=32),
    a=ints(8, False),
    b=ints(16, False),
    c=ints(32, False),
    d=ints(64, False),
    e=ints(8, True),
    f=ints(16, True),
    g=ints(32, True),
    h=ints(64, True),
    flag=st.booleans(),
    side=st.sampled_from(PositionDirection),
)


@given(flats)
def test_a_flat_struct_round_trips_with_the_same_types(value: Flat) -> None:
    raw = encode(value)
    assert len(raw) == SIZE
    back = decode(Flat, raw)
    assert back == value
    assert type(back.flag) is bool and type(back.side) is PositionDirection
    assert type(back.key) is bytes and type(back.h) is int


def test_a_short_buffer_is_truncated_at_the_first_missing_field() -> None:
    raw = encode(SAMPLE)
    with pytest.raises(InvalidParameter) as err:
        decode(Flat, raw[:38], "ix")  # key 32, a 1, b 2: c has 3 of its 4 bytes
    assert (err.value.code, err.value.field) == (ErrorCode.MalformedTransaction, "ix.c")


@pytest.mark.parametrize(
    ("at", "byte", "field", "detail"),
    [
        (SIZE - 2, 2, "ix.flag", "bool byte must be 0 or 1, got 2"),
        (SIZE - 1, 9, "ix.side", "9 is not a PositionDirection"),
    ],
)
def test_a_bad_bool_or_enum_byte_is_named(at: int, byte: int, field: str, detail: str) -> None:
    raw = bytearray(encode(SAMPLE))
    raw[at] = byte
    with pytest.raises(InvalidParameter) as err:
        decode(Flat, bytes(raw), "ix")
    assert (err.value.code, err.value.field, err.value.detail) == (
        ErrorCode.MalformedTransaction,
        field,
        detail,
    )
