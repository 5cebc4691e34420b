"""Integer arithmetic with the program's (Rust's) semantics.

Python's ``//`` floors toward negative infinity; Rust's ``/`` truncates toward zero
(``-7 // 2 == -4`` in Python, ``-7 / 2 == -3`` in Rust). Protocol math never uses bare ``//``
on a value that can be negative: it calls the helpers here, named after the program's
``SafeMath`` methods so a reader can line them up:

* :func:`div_trunc`    -- ``safe_div``: truncating division.
* :func:`safe_div_ceil` -- ``checked_ceil_div``: truncate, then +1 if the remainder is positive.
* :func:`safe_div_floor` -- ``checked_floor_div``: truncate, then -1 if the remainder is non-zero.
  (The program applies the -1 for any non-zero remainder; it is only ever called on values
  where that equals mathematical floor, and we mirror it as written.)
* :func:`rem_trunc`     -- Rust ``%`` (sign follows the dividend).

Division by zero raises :class:`~protocol.errors.MathError`, as the program's ``safe_div``
returns ``ErrorCode::MathError``. Values are unbounded in Python; where the program stores a
value in a fixed-width field the checked casts (:func:`cast_u64`, ...) raise
:class:`~protocol.errors.CastingError` exactly where a Rust ``cast()`` would fail.
"""

from __future__ import annotations

from math import isqrt

from protocol.errors import CastingError, MathError

U8_MAX = 2**8 - 1
U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
I8_MIN, I8_MAX = -(2**7), 2**7 - 1
I16_MIN, I16_MAX = -(2**15), 2**15 - 1
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
I128_MIN, I128_MAX = -(2**127), 2**127 - 1


def div_trunc(a: int, b: int) -> int:
    """Rust integer division: the quotient truncated toward zero."""
    if b > 0 and a >= 0:  # the common case, where floor and truncation agree
        return a // b
    if b == 0:
        raise MathError("division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def rem_trunc(a: int, b: int) -> int:
    """Rust ``%``: ``a - b * div_trunc(a, b)``; the sign follows ``a``."""
    return a - b * div_trunc(a, b)


def safe_div_ceil(a: int, b: int) -> int:
    """The program's ``safe_div_ceil``: truncating quotient, +1 when the remainder is positive."""
    q = div_trunc(a, b)
    return q + 1 if a - b * q > 0 else q


def safe_div_floor(a: int, b: int) -> int:
    """The program's ``safe_div_floor``: truncating quotient, -1 when the remainder is non-zero."""
    q = div_trunc(a, b)
    return q - 1 if a - b * q != 0 else q


def sqrt(n: int) -> int:
    """``nth_root(2)`` of the program's integer types: the floor of the square root."""
    if n < 0:
        raise MathError("square root of a negative number")
    return isqrt(n)


def clamp(value: int, lo: int, hi: int) -> int:
    """``value.clamp(lo, hi)``."""
    if lo > hi:
        raise MathError(f"clamp bounds inverted: {lo} > {hi}")
    return lo if value < lo else hi if value > hi else value


def _cast(value: int, lo: int, hi: int, type_name: str) -> int:
    if lo <= value <= hi:
        return value
    raise CastingError(f"{value} does not fit in {type_name}")


def cast_u8(value: int) -> int:
    return _cast(value, 0, U8_MAX, "u8")


def cast_u16(value: int) -> int:
    return _cast(value, 0, U16_MAX, "u16")


def cast_u32(value: int) -> int:
    return _cast(value, 0, U32_MAX, "u32")


def cast_u64(value: int) -> int:
    return _cast(value, 0, U64_MAX, "u64")


def cast_u128(value: int) -> int:
    return _cast(value, 0, U128_MAX, "u128")


def cast_i32(value: int) -> int:
    return _cast(value, I32_MIN, I32_MAX, "i32")


def cast_i64(value: int) -> int:
    return _cast(value, I64_MIN, I64_MAX, "i64")


def cast_i128(value: int) -> int:
    return _cast(value, I128_MIN, I128_MAX, "i128")


def unsigned_abs(value: int) -> int:
    """``i64::unsigned_abs``."""
    return -value if value < 0 else value


def sign(value: int) -> int:
    """``signum``: -1, 0 or 1."""
    return (value > 0) - (value < 0)
