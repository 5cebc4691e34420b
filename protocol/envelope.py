"""The signed envelope of a transaction: everything checking its signatures needs.

A transaction (see :mod:`protocol.transaction` for the whole wire format) starts::

    b"DKTX" | version:u8 | n:u8 | signature[64] * n | message
    message = version:u8 | recent_slot:u64 | n:u8 | signer[32] * n | instructions ...

:func:`parse_envelope` reads that far and no further; :func:`check_signatures` is the signature
check of :func:`protocol.transaction.verify_transaction`. Both are here, apart from the
instruction codecs, so that a verifier in another process (the node's verify workers,
:mod:`keepers.verify_worker`) checks a transaction's wire bytes with the very code the program
uses, while importing only this module and libsodium.

Invariant: for bytes :func:`protocol.transaction.parse_transaction` accepts, ``check_envelope``
raises exactly what ``verify_transaction(parse_transaction(raw))`` raises (the parser keeps the
message bytes it read, and those are what :func:`check_signatures` checks in both).
"""

from __future__ import annotations

from typing import NamedTuple

from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.keys import PUBKEY_LEN, SIGNATURE_LEN, verify_signature

__all__ = [
    "MAGIC",
    "MAX_SIGNERS",
    "VERSION",
    "Envelope",
    "check_envelope",
    "check_signatures",
    "parse_envelope",
]

MAGIC = b"DKTX"
VERSION = 1
MAX_SIGNERS = 8


def _malformed(field: str, detail: str) -> InvalidParameter:
    return InvalidParameter(field, detail, ErrorCode.MalformedTransaction)


class Envelope(NamedTuple):
    """The signatures and signers of a transaction and where its parts start in the bytes:
    the message at ``message_start``, the instruction count at ``instructions_start``."""

    signatures: tuple[bytes, ...]
    recent_slot: int
    signers: tuple[bytes, ...]
    message_start: int
    instructions_start: int


def parse_envelope(raw: bytes) -> Envelope:
    """Strictly parse the envelope of ``raw`` (the bytes after it are not looked at, except
    that the two-byte instruction count must be there). :class:`InvalidParameter` names the
    field: ``MalformedTransaction``, or ``UnsupportedVersion`` for an unknown version."""
    if type(raw) is not bytes:
        raw = bytes(raw)  # slices below must be bytes (hashable, comparable) whatever came in
    if raw[:4] != MAGIC:
        raise _malformed("magic", "not a transaction")
    size = len(raw)
    if size < 6:
        raise _malformed("header", "truncated")
    if raw[4] != VERSION:
        raise InvalidParameter(
            "version", f"unsupported version {raw[4]}", ErrorCode.UnsupportedVersion
        )
    n_sig = raw[5]
    off = 6
    if not 1 <= n_sig <= MAX_SIGNERS or off + n_sig * SIGNATURE_LEN > size:
        raise _malformed("signatures", "bad signature count")
    signatures = _split(raw, off, n_sig, SIGNATURE_LEN)
    off = message_start = off + n_sig * SIGNATURE_LEN
    if off + 10 > size:
        raise _malformed("message", "truncated")
    if raw[off] != VERSION:
        raise InvalidParameter(
            "message.version", f"unsupported version {raw[off]}", ErrorCode.UnsupportedVersion
        )
    recent_slot = int.from_bytes(raw[off + 1 : off + 9], "little")
    n_signers = raw[off + 9]
    off += 10
    if n_signers != n_sig:
        raise _malformed("signers", f"{n_signers} signers but {n_sig} signatures")
    if off + n_signers * PUBKEY_LEN + 2 > size:
        raise _malformed("signers", "truncated")
    signers = _split(raw, off, n_signers, PUBKEY_LEN)
    return Envelope(signatures, recent_slot, signers, message_start, off + n_signers * PUBKEY_LEN)


def _split(raw: bytes, start: int, count: int, width: int) -> tuple[bytes, ...]:
    """``count`` consecutive ``width``-byte fields from ``start`` (most transactions have one
    signer: that case skips building a list)."""
    if count == 1:
        return (raw[start : start + width],)
    return tuple([raw[at : at + width] for at in range(start, start + count * width, width)])


def check_signatures(
    signers: tuple[bytes, ...], signatures: tuple[bytes, ...], message: bytes
) -> None:
    """Every signer's signature of ``message`` checks; else :class:`ProtocolError`
    (``MissingSignature``, a duplicate signer ``MalformedTransaction``, ``InvalidSignature``
    naming the first bad one, in that order)."""
    if len(signatures) != len(signers) or not signers:
        raise ProtocolError(
            ErrorCode.MissingSignature, "one signature per signer", field="signatures"
        )
    if len(set(signers)) != len(signers):
        raise _malformed("signers", "duplicate signer")
    for i, (pubkey, sig) in enumerate(zip(signers, signatures, strict=True)):
        if not verify_signature(pubkey, message, sig):
            raise ProtocolError(
                ErrorCode.InvalidSignature,
                f"signature {i} does not verify",
                field=f"signatures[{i}]",
            )


def check_envelope(raw: bytes) -> None:
    """Parse the envelope of transaction bytes ``raw`` and check its signatures over its
    message (everything after the signatures); raises as the two steps do."""
    envelope = parse_envelope(raw)
    check_signatures(envelope.signers, envelope.signatures, raw[envelope.message_start :])
