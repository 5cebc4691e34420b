"""Typed failures of the protocol layer.

Three kinds, kept apart:

* :class:`ProtocolError` (and subclasses) is raised inside an instruction when the program
  would return an ``ErrorCode``. :meth:`protocol.program.Program.execute` turns it into a
  :class:`Rejected` value and discards every change the transaction made.
* :class:`InvalidParameter` is a :class:`ProtocolError` for malformed input; it always names the
  offending field, so callers never have to parse a message.
* Anything else escaping an instruction is a bug in this model (a broken invariant) and is not
  caught: it propagates to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.error_codes import ErrorCode

__all__ = [
    "CastingError",
    "ErrorCode",
    "InvalidParameter",
    "MathError",
    "ProtocolError",
    "Rejected",
]


class ProtocolError(Exception):
    """An expected rejection with the program's error code."""

    code: ErrorCode
    detail: str
    field: str | None

    def __init__(self, code: ErrorCode, detail: str = "", *, field: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.field = field
        where = f" [{field}]" if field else ""
        super().__init__(f"{code.name}{where}: {detail}" if detail else f"{code.name}{where}")

    def to_rejected(self) -> Rejected:
        return Rejected(self.code, self.detail, self.field)


class MathError(ProtocolError):
    """Division by zero or an impossible operation (``ErrorCode::MathError``)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(ErrorCode.MathError, detail)


class CastingError(ProtocolError):
    """A value that does not fit the program's storage width (``ErrorCode::CastingFailure``)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(ErrorCode.CastingFailure, detail)


class InvalidParameter(ProtocolError):
    """Malformed input; ``field`` names what was wrong."""

    def __init__(
        self, field: str, detail: str, code: ErrorCode = ErrorCode.InvalidParameter
    ) -> None:
        super().__init__(code, detail, field=field)


@dataclass(frozen=True, slots=True)
class Rejected:
    """The result of a transaction the program refused. State is unchanged."""

    code: ErrorCode
    detail: str = ""
    field: str | None = None

    def __bool__(self) -> bool:  # a rejection is falsy so `if result:` reads naturally
        return False
