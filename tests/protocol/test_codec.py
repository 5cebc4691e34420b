"""The canonical encoding: exact bytes, strict decoding, and field-named errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import I32, I64, U8, U16, U64, Pubkey, decode, encode, struct_codec
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter
from protocol.state import OrderParams
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam


@dataclass(frozen=True, slots=True)
class Inner:
    a: U8
    b: I32 | None


@dataclass(frozen=True, slots=True)
class Outer:
    key: Pubkey
    amount: U64
    offset: I64
    flag: bool
    side: PositionDirection
    name: str
    inner: Inner
    items: tuple[U16, ...]


def test_exact_bytes_follow_declared_field_order() -> None:
    value = Outer(
        key=bytes(range(32)),
        amount=1_000_000_000,
        offset=-2,
        flag=True,
        side=PositionDirection.Short,
        name="ab",
        inner=Inner(7, -1),
        items=(1, 258),
    )
    expected = (
        bytes(range(32))
        + (1_000_000_000).to_bytes(8, "little")
        + (-2).to_bytes(8, "little", signed=True)
        + b"\x01"  # flag
        + b"\x01"  # Short
        + b"\x02\x00ab"
        + b"\x07"
        + b"\x01"
        + (-1).to_bytes(4, "little", signed=True)
        + b"\x02\x00"
        + b"\x01\x00"
        + b"\x02\x01"
    )
    assert encode(value) == expected
    assert decode(Outer, expected) == value


def test_out_of_range_value_names_the_field() -> None:
    bad = OrderParams(OrderType.Limit, MarketType.Perp, PositionDirection.Long, 10**9, 0, price=-5)
    with pytest.raises(InvalidParameter) as err:
        encode(bad, "params")
    assert err.value.field == "params.price"
    assert err.value.code == ErrorCode.InvalidParameter


def test_bool_is_not_accepted_as_an_integer() -> None:
    with pytest.raises(InvalidParameter) as err:
        encode(Inner(True, None))  # type: ignore[arg-type]
    assert err.value.field == "a"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\x07", "b"),  # missing option tag
        (b"\x07\x02", "b"),  # option tag must be 0 or 1
        (b"\x07\x01\x00", "b"),  # truncated i32
        (b"\x07\x00\x00", "Inner"),  # trailing byte
    ],
)
def test_malformed_bytes_are_rejected_with_the_field(data: bytes, field: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        decode(Inner, data)
    assert err.value.field == field
    assert err.value.code == ErrorCode.MalformedTransaction


def test_unknown_enum_value_is_malformed() -> None:
    raw = bytearray(
        encode(OrderParams(OrderType.Limit, MarketType.Perp, PositionDirection.Long, 1, 0))
    )
    raw[0] = 9  # order_type
    with pytest.raises(InvalidParameter) as err:
        decode(OrderParams, bytes(raw))
    assert err.value.field == "order_type"


def test_an_int_without_a_width_cannot_be_encoded() -> None:
    @dataclass(frozen=True)
    class NoWidth:
        x: int

    with pytest.raises(TypeError, match="width"):
        struct_codec(NoWidth)


order_params = st.builds(
    OrderParams,
    order_type=st.sampled_from(OrderType),
    market_type=st.sampled_from(MarketType),
    direction=st.sampled_from(PositionDirection),
    base_asset_amount=st.integers(0, 2**64 - 1),
    market_index=st.integers(0, 2**16 - 1),
    price=st.integers(0, 2**64 - 1),
    user_order_id=st.integers(0, 255),
    reduce_only=st.booleans(),
    post_only=st.sampled_from(PostOnlyParam),
    immediate_or_cancel=st.booleans(),
    max_ts=st.none() | st.integers(-(2**63), 2**63 - 1),
    trigger_price=st.none() | st.integers(0, 2**64 - 1),
    oracle_price_offset=st.none() | st.integers(-(2**31), 2**31 - 1),
    auction_duration=st.none() | st.integers(0, 255),
    auction_start_price=st.none() | st.integers(-(2**63), 2**63 - 1),
    auction_end_price=st.none() | st.integers(-(2**63), 2**63 - 1),
)


@given(order_params)
def test_order_params_round_trip(params: OrderParams) -> None:
    assert decode(OrderParams, encode(params)) == params
