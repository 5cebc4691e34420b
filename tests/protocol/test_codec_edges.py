"""The codec's remaining refusals: every wrong type, width, length, tag and count names its field.

Encoding errors are ``InvalidParameter`` (the signer built a bad value); decoding errors are
``MalformedTransaction`` (the bytes on the wire are not a canonical encoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from protocol.codec import (
    MAX_STR_BYTES,
    U8,
    U16,
    Pubkey,
    Signature,
    check_encodable,
    decode,
    encode,
    struct_codec,
)
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter
from protocol.types import PositionDirection


@dataclass(frozen=True, slots=True)
class Named:
    label: str


@dataclass(frozen=True, slots=True)
class Flagged:
    flag: bool
    side: PositionDirection


@dataclass(frozen=True, slots=True)
class Keyed:
    key: Pubkey
    sig: Signature | None


@dataclass(frozen=True, slots=True)
class Many:
    items: tuple[U8, ...]


@dataclass(frozen=True, slots=True)
class Wrapper:
    inner: Many
    note: Annotated[U16, "documentation only"]
    memo: Annotated[str, "free text"]


def encode_error(value: Any, path: str = "") -> InvalidParameter:
    with pytest.raises(InvalidParameter) as err:
        encode(value, path)
    assert err.value.code == ErrorCode.InvalidParameter
    return err.value


def decode_error(cls: type, data: bytes) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as err:
        decode(cls, data)
    assert err.value.code == ErrorCode.MalformedTransaction
    return err.value


# --- strings ------------------------------------------------------------------------------------


def test_string_at_the_byte_limit_round_trips_and_one_more_is_refused() -> None:
    # the limit is on UTF-8 bytes, not characters: 128 two-byte characters are exactly 256 bytes
    at_limit = Named("é" * (MAX_STR_BYTES // 2))
    raw = encode(at_limit)
    assert raw[:2] == (256).to_bytes(2, "little")
    assert len(raw) == 2 + 256
    assert decode(Named, raw) == at_limit
    err = encode_error(Named("é" * (MAX_STR_BYTES // 2) + "a"), "memo")
    assert err.field == "memo.label"


def test_non_string_is_refused_when_encoding() -> None:
    assert encode_error(Named(b"abc")).field == "label"  # type: ignore[arg-type]


def test_declared_string_longer_than_the_limit_is_malformed() -> None:
    # 257 bytes follow, so only the limit (not the buffer) can reject it
    raw = (257).to_bytes(2, "little") + b"a" * 257
    assert decode_error(Named, raw).field == "label"


@pytest.mark.parametrize("raw", [b"", b"\x05"])
def test_string_without_a_full_length_prefix_is_malformed(raw: bytes) -> None:
    assert decode_error(Named, raw).field == "label"


def test_string_bytes_that_are_not_utf8_are_malformed() -> None:
    raw = (2).to_bytes(2, "little") + b"\xc3\x28"  # a lead byte followed by a non-continuation
    err = decode_error(Named, raw)
    assert err.field == "label"
    assert err.detail == "string is not UTF-8"


# --- bool and enum ------------------------------------------------------------------------------


def test_integer_is_not_accepted_as_a_bool() -> None:
    assert encode_error(Flagged(1, PositionDirection.Long)).field == "flag"  # type: ignore[arg-type]


def test_plain_integer_is_not_accepted_as_an_enum() -> None:
    # 1 has the value of PositionDirection.Short, but only a member is an enum value
    assert encode_error(Flagged(True, 1)).field == "side"  # type: ignore[arg-type]


def test_missing_bool_and_enum_bytes_are_truncated() -> None:
    assert decode_error(Flagged, b"").field == "flag"
    assert decode_error(Flagged, b"\x01").field == "side"


def test_bool_byte_other_than_zero_or_one_is_malformed() -> None:
    assert decode_error(Flagged, b"\x02\x00").field == "flag"


# --- fixed-width bytes and options ----------------------------------------------------------------


@pytest.mark.parametrize("key", [b"\x01" * 31, b"\x01" * 33, "01" * 32])
def test_pubkey_of_wrong_length_or_type_is_refused(key: Any) -> None:
    assert encode_error(Keyed(key, None)).field == "key"


def test_present_signature_of_wrong_length_is_refused() -> None:
    assert encode_error(Keyed(b"\x01" * 32, b"\x02" * 63)).field == "sig"


def test_option_round_trips_both_ways() -> None:
    absent = Keyed(b"\x01" * 32, None)
    present = Keyed(b"\x01" * 32, b"\x02" * 64)
    assert encode(absent) == b"\x01" * 32 + b"\x00"
    assert encode(present) == b"\x01" * 32 + b"\x01" + b"\x02" * 64
    assert decode(Keyed, encode(present)) == present


def test_short_pubkey_and_short_option_payload_are_truncated() -> None:
    assert decode_error(Keyed, b"\x01" * 31).field == "key"
    assert decode_error(Keyed, b"\x01" * 32 + b"\x01" + b"\x02" * 63).field == "sig"
    assert decode_error(Keyed, b"\x01" * 32 + b"\x03").field == "sig"


# --- tuples and nested structs ------------------------------------------------------------------


def test_tuple_of_sixty_four_items_round_trips_and_sixty_five_is_refused() -> None:
    full = Many(tuple(range(64)))
    raw = encode(full)
    assert raw[:2] == (64).to_bytes(2, "little")
    assert decode(Many, raw) == full
    assert encode_error(Many(tuple(range(65))), "batch").field == "batch.items"


def test_list_is_not_accepted_as_a_tuple() -> None:
    assert encode_error(Many([1, 2])).field == "items"  # type: ignore[arg-type]


def test_item_out_of_range_is_named_by_index() -> None:
    assert encode_error(Many((1, 256))).field == "items[1]"


def test_declared_count_over_the_limit_is_malformed_even_with_the_bytes() -> None:
    raw = (65).to_bytes(2, "little") + bytes(65)
    assert decode_error(Many, raw).field == "items"


def test_tuple_count_cut_short_is_truncated() -> None:
    assert decode_error(Many, b"\x01").field == "items"


def test_nested_struct_of_the_wrong_type_names_its_path() -> None:
    err = encode_error(Wrapper(Named("x"), 1, ""))  # type: ignore[arg-type]
    assert err.field == "inner"


def test_top_level_value_of_the_wrong_type_is_refused_by_class_name() -> None:
    codec = struct_codec(Many)
    with pytest.raises(InvalidParameter) as err:
        codec.encode(Named("x"), bytearray(), "")
    assert err.value.field == "Many"


def test_annotation_metadata_without_a_width_keeps_the_inner_encoding() -> None:
    # Annotated[U16, "..."] keeps the u16 width (two bytes little-endian) and
    # Annotated[str, "..."] the string encoding (u16 length, then UTF-8)
    value = Wrapper(Many(()), 513, "ok")
    assert encode(value) == b"\x00\x00" + b"\x01\x02" + b"\x02\x00ok"
    assert decode(Wrapper, encode(value)) == value
    assert encode_error(Wrapper(Many(()), 2**16, "")).field == "note"
    assert encode_error(Wrapper(Many(()), 1, 7)).field == "memo"  # type: ignore[arg-type]


def test_check_encodable_names_the_bad_field_and_accepts_a_good_value() -> None:
    check_encodable(Many((255,)))
    with pytest.raises(InvalidParameter) as err:
        check_encodable(Many((-1,)), "params")
    assert err.value.field == "params.items[0]"


def test_only_optional_unions_and_homogeneous_tuples_are_encodable() -> None:
    @dataclass(frozen=True)
    class Either:
        x: U8 | str

    @dataclass(frozen=True)
    class Pair:
        x: tuple[U8, U8]

    with pytest.raises(TypeError, match=r"only `X \| None` unions"):
        struct_codec(Either)
    with pytest.raises(TypeError, match=r"tuple\[X, \.\.\.\]"):
        struct_codec(Pair)
