"""Rust integer semantics at the edges: casts at every bound, division signs, sqrt, clamp; keys.

Expected values are Rust's, written next to each case: ``/`` and ``%`` truncate toward zero
(the remainder takes the dividend's sign); ``checked_ceil_div`` adds one only when that
remainder is positive and ``checked_floor_div`` subtracts one whenever it is non-zero
(programs/drift/src/math/ceil_div.rs, floor_div.rs). With a negative divisor these differ from
the mathematical ceiling and floor, and the model must follow Rust, not mathematics.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.error_codes import ErrorCode
from protocol.errors import CastingError, MathError
from protocol.keys import PUBKEY_LEN, SIGNATURE_LEN, Keypair, verify_signature
from protocol.numeric import (
    cast_i32,
    cast_i64,
    cast_i128,
    cast_u8,
    cast_u16,
    cast_u32,
    cast_u64,
    cast_u128,
    clamp,
    div_trunc,
    rem_trunc,
    safe_div_ceil,
    safe_div_floor,
    sign,
    sqrt,
    unsigned_abs,
)

CASTS: list[tuple[Callable[[int], int], int, int]] = [
    (cast_u8, 0, 255),
    (cast_u16, 0, 65_535),
    (cast_u32, 0, 4_294_967_295),
    (cast_u64, 0, 18_446_744_073_709_551_615),
    (cast_u128, 0, 340_282_366_920_938_463_463_374_607_431_768_211_455),
    (cast_i32, -2_147_483_648, 2_147_483_647),
    (cast_i64, -9_223_372_036_854_775_808, 9_223_372_036_854_775_807),
    (
        cast_i128,
        -170_141_183_460_469_231_731_687_303_715_884_105_728,
        170_141_183_460_469_231_731_687_303_715_884_105_727,
    ),
]


@pytest.mark.parametrize(("cast", "lo", "hi"), CASTS, ids=lambda c: getattr(c, "__name__", ""))
def test_cast_accepts_both_bounds_and_refuses_one_past_either(
    cast: Callable[[int], int], lo: int, hi: int
) -> None:
    assert cast(lo) == lo
    assert cast(hi) == hi
    for outside in (lo - 1, hi + 1):
        with pytest.raises(CastingError) as err:
            cast(outside)
        assert err.value.code == ErrorCode.CastingFailure


@pytest.mark.parametrize("op", [div_trunc, rem_trunc, safe_div_ceil, safe_div_floor])
def test_division_by_zero_is_a_math_error(op: Callable[[int, int], int]) -> None:
    with pytest.raises(MathError) as err:
        op(7, 0)
    assert err.value.code == ErrorCode.MathError


@pytest.mark.parametrize(
    ("a", "b", "quotient", "remainder"),
    [
        (7, 2, 3, 1),  # Rust: 7 / 2 == 3, 7 % 2 == 1
        (-7, 2, -3, -1),  # Rust: -7 / 2 == -3, -7 % 2 == -1 (Python would give -4, 1)
        (7, -2, -3, 1),  # Rust: 7 / -2 == -3, 7 % -2 == 1
        (-7, -2, 3, -1),  # Rust: -7 / -2 == 3, -7 % -2 == -1
        (-8, 2, -4, 0),
        (0, -5, 0, 0),
    ],
)
def test_div_trunc_and_rem_trunc_follow_rust(a: int, b: int, quotient: int, remainder: int) -> None:
    assert div_trunc(a, b) == quotient
    assert rem_trunc(a, b) == remainder


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (155, 8, 20),  # 19 rem 3 > 0 -> 20
        (160, 8, 20),  # exact
        (-155, 8, -19),  # -19 rem -3: not positive -> -19 (the true ceiling too)
        (7, -2, -2),  # -3 rem 1 > 0 -> -2; mathematical ceil(-3.5) would be -3
        (-7, -2, 3),  # 3 rem -1: not positive -> 3; mathematical ceil(3.5) would be 4
        (0, 3, 0),
    ],
)
def test_safe_div_ceil_matches_rust_checked_ceil_div(a: int, b: int, expected: int) -> None:
    assert safe_div_ceil(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # the program's own unit test (math/safe_math.rs, safe_div_floor)
        (-155, 8, -20),
        (-159, 8, -20),
        (-160, 8, -20),
        (155, 8, 18),  # 19 rem 3 != 0 -> 18, although floor(19.375) is 19: Rust's rule
        (160, 8, 20),
        (7, -2, -4),  # -3 rem 1 != 0 -> -4 == floor(-3.5)
        (-7, -2, 2),  # 3 rem -1 != 0 -> 2, although floor(3.5) is 3: Rust's rule
    ],
)
def test_safe_div_floor_matches_rust_checked_floor_div(a: int, b: int, expected: int) -> None:
    assert safe_div_floor(a, b) == expected


@given(st.integers(-(10**30), 10**30), st.integers(-(10**12), 10**12).filter(lambda b: b != 0))
def test_truncating_division_identity(a: int, b: int) -> None:
    q, r = div_trunc(a, b), rem_trunc(a, b)
    assert a == b * q + r
    assert abs(r) < abs(b)
    assert r == 0 or (r > 0) == (a > 0)  # the remainder takes the dividend's sign
    assert abs(q) == abs(a) // abs(b)


def test_sqrt_floors_and_refuses_negative() -> None:
    assert [sqrt(n) for n in (0, 1, 3, 4, 99, 100, 10**36)] == [0, 1, 1, 2, 9, 10, 10**18]
    with pytest.raises(MathError):
        sqrt(-1)


def test_clamp_bounds_and_inverted_bounds() -> None:
    assert clamp(5, 1, 10) == 5
    assert clamp(-3, 1, 10) == 1
    assert clamp(11, 1, 10) == 10
    assert clamp(7, 7, 7) == 7
    with pytest.raises(MathError):
        clamp(5, 10, 1)  # Rust's Ord::clamp panics on min > max; the model refuses


def test_unsigned_abs_and_sign() -> None:
    assert unsigned_abs(-(2**63)) == 2**63  # i64::MIN.unsigned_abs() fits a u64
    assert unsigned_abs(5) == 5
    assert [sign(-9), sign(0), sign(9)] == [-1, 0, 1]


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_must_be_thirty_two_bytes(size: int) -> None:
    with pytest.raises(ValueError, match=f"got {size}"):
        Keypair.from_seed(b"\x07" * size)


def test_seed_round_trips_to_the_same_key() -> None:
    kp = Keypair.from_seed(b"\x07" * 32)
    again = Keypair.from_seed(kp.seed)
    assert again.pubkey == kp.pubkey
    assert kp.seed == b"\x07" * 32
    assert repr(kp) == f"Keypair({kp.pubkey.hex()[:16]}..)"


def test_generated_keys_differ_and_sign_verifiably() -> None:
    a, b = Keypair.generate(), Keypair.generate()
    assert a.pubkey != b.pubkey
    assert len(a.pubkey) == PUBKEY_LEN
    sig = a.sign(b"msg")
    assert len(sig) == SIGNATURE_LEN
    assert verify_signature(a.pubkey, b"msg", sig)
    assert not verify_signature(b.pubkey, b"msg", sig)


def test_verify_refuses_wrong_lengths_instead_of_raising() -> None:
    kp = Keypair.from_seed(b"\x07" * 32)
    sig = kp.sign(b"msg")
    assert verify_signature(kp.pubkey, b"msg", sig)
    assert not verify_signature(kp.pubkey[:31], b"msg", sig)
    assert not verify_signature(kp.pubkey + b"\x00", b"msg", sig)
    assert not verify_signature(kp.pubkey, b"msg", sig[:63])
    assert not verify_signature(kp.pubkey, b"msg", sig + b"\x00")


def test_verify_refuses_a_signature_under_a_small_order_key() -> None:
    # the identity point (y = 1) is a small-order key libsodium refuses outright
    identity = (1).to_bytes(32, "little")
    assert not verify_signature(identity, b"msg", bytes(64))
