"""Signed transactions: canonical bytes, signing, parsing and verification.

Wire format (version 1)::

    transaction = b"DKTX" | version:u8 | n:u8 | signature[64] * n | message
    message     = version:u8 | recent_slot:u64 | n:u8 | signer[32] * n
                | count:u16 | (tag:u16 | length:u32 | body) * count

``signature[i]`` is ``signer[i]``'s ed25519 signature of ``message``; the first signature is
the transaction id (what replay protection remembers). Instruction bodies are the canonical
encoding of :mod:`protocol.codec`. Parsing is strict: unknown versions, tags, short or trailing
bytes are :class:`~protocol.errors.InvalidParameter` with code ``MalformedTransaction`` and the
offending field named. :func:`verify_transaction` is the way to a :class:`VerifiedTransaction`,
which is all the program executes; a verifier in another process checks the wire bytes with
:func:`protocol.envelope.check_envelope` (the same signature check) and its caller then takes
:func:`verified_after_envelope_check` of the parsed transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.codec import decode, encode
from protocol.envelope import (
    MAGIC,
    MAX_SIGNERS,
    VERSION,
    check_signatures,
    parse_envelope,
)
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.instructions.registry import TAG_BY_TYPE, TYPE_BY_TAG
from protocol.keys import PUBKEY_LEN, SIGNATURE_LEN, Keypair

__all__ = [
    "MAGIC",
    "MAX_INSTRUCTIONS",
    "MAX_INSTRUCTION_BYTES",
    "MAX_SIGNERS",
    "VERSION",
    "Transaction",
    "VerifiedTransaction",
    "message_bytes",
    "parse_transaction",
    "verified_after_envelope_check",
    "verify_transaction",
]

MAX_INSTRUCTIONS = 64
MAX_INSTRUCTION_BYTES = 4096


def _malformed(field: str, detail: str) -> InvalidParameter:
    return InvalidParameter(field, detail, ErrorCode.MalformedTransaction)


@dataclass(frozen=True, slots=True)
class Transaction:
    instructions: tuple[Any, ...]
    recent_slot: int
    signers: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    # The exact message bytes a parsed transaction arrived with. Decoding is injective (every
    # value has one encoding and the parser rejects any other), so these equal the canonical
    # re-encoding; keeping them saves re-encoding on the hot path. Not part of equality.
    wire_message: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def sign(
        cls, instructions: Sequence[Any], recent_slot: int, keypairs: Sequence[Keypair]
    ) -> Transaction:
        """Build and sign; the first keypair's signature is the transaction id."""
        signers = tuple(k.pubkey for k in keypairs)
        message = message_bytes(tuple(instructions), recent_slot, signers)
        return cls(
            tuple(instructions), recent_slot, signers, tuple(k.sign(message) for k in keypairs)
        )

    @property
    def signature(self) -> bytes:
        """The transaction id: the first signature."""
        return self.signatures[0] if self.signatures else b""

    def message(self) -> bytes:
        if self.wire_message is not None:
            return self.wire_message
        return message_bytes(self.instructions, self.recent_slot, self.signers)

    def to_bytes(self) -> bytes:
        if len(self.signatures) != len(self.signers):
            raise _malformed("signatures", "one signature per signer")
        for i, sig in enumerate(self.signatures):
            if len(sig) != SIGNATURE_LEN:
                raise _malformed(f"signatures[{i}]", f"must be {SIGNATURE_LEN} bytes")
        header = MAGIC + bytes([VERSION, len(self.signatures)])
        return header + b"".join(self.signatures) + self.message()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Transaction:
        return parse_transaction(raw)


def message_bytes(
    instructions: tuple[Any, ...], recent_slot: int, signers: tuple[bytes, ...]
) -> bytes:
    if not 0 <= recent_slot < 2**64:
        raise InvalidParameter("recent_slot", "must be a u64")
    if not 1 <= len(signers) <= MAX_SIGNERS:
        raise InvalidParameter("signers", f"1 to {MAX_SIGNERS} signers required")
    if not 1 <= len(instructions) <= MAX_INSTRUCTIONS:
        raise InvalidParameter("instructions", f"1 to {MAX_INSTRUCTIONS} instructions required")
    out = bytearray([VERSION])
    out += recent_slot.to_bytes(8, "little")
    out.append(len(signers))
    for i, s in enumerate(signers):
        if len(s) != PUBKEY_LEN:
            raise InvalidParameter(f"signers[{i}]", f"must be {PUBKEY_LEN} bytes")
        out += s
    out += len(instructions).to_bytes(2, "little")
    for i, ix in enumerate(instructions):
        tag = TAG_BY_TYPE.get(type(ix))
        if tag is None:
            raise InvalidParameter(
                f"instructions[{i}]",
                f"{type(ix).__name__} is not an instruction",
                ErrorCode.UnknownInstruction,
            )
        body = encode(ix, f"instructions[{i}]")
        out += tag.to_bytes(2, "little") + len(body).to_bytes(4, "little") + body
    return bytes(out)


def parse_transaction(raw: bytes) -> Transaction:
    """Strictly parse wire bytes (signatures are *not* checked here)."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    envelope = parse_envelope(raw)
    off = envelope.instructions_start
    size = len(raw)
    count = int.from_bytes(raw[off : off + 2], "little")
    off += 2
    if not 1 <= count <= MAX_INSTRUCTIONS:
        raise _malformed("instructions", f"bad instruction count {count}")
    buf = memoryview(raw)
    instructions: list[Any] = []
    for i in range(count):
        if off + 6 > size:
            raise _malformed(f"instructions[{i}]", "truncated header")
        tag = int.from_bytes(raw[off : off + 2], "little")
        length = int.from_bytes(raw[off + 2 : off + 6], "little")
        off += 6
        cls = TYPE_BY_TAG.get(tag)
        if cls is None:
            raise InvalidParameter(
                f"instructions[{i}]", f"unknown instruction tag {tag}", ErrorCode.UnknownInstruction
            )
        if length > MAX_INSTRUCTION_BYTES or off + length > size:
            raise _malformed(f"instructions[{i}]", "bad length")
        instructions.append(decode(cls, buf[off : off + length], f"instructions[{i}]"))
        off += length
    if off != size:
        raise _malformed("transaction", f"{size - off} trailing bytes")
    return Transaction(
        tuple(instructions),
        envelope.recent_slot,
        envelope.signers,
        envelope.signatures,
        raw[envelope.message_start :],
    )


@dataclass(frozen=True, slots=True)
class VerifiedTransaction:
    """A transaction whose every signature was checked against its canonical message.

    Only :func:`verify_transaction` and :func:`verified_after_envelope_check` build one;
    :class:`~protocol.program.Program` executes nothing else.
    """

    transaction: Transaction
    message: bytes

    @property
    def signers(self) -> tuple[bytes, ...]:
        return self.transaction.signers

    @property
    def signature(self) -> bytes:
        return self.transaction.signature


def verify_transaction(tx: Transaction) -> VerifiedTransaction:
    """Check structure and every signature; raise :class:`ProtocolError` if any fails."""
    if len(tx.signatures) != len(tx.signers) or not tx.signers:
        raise ProtocolError(
            ErrorCode.MissingSignature, "one signature per signer", field="signatures"
        )
    if len(set(tx.signers)) != len(tx.signers):
        raise _malformed("signers", "duplicate signer")
    message = tx.message()  # re-encodes: validates every field's width, names the bad one
    check_signatures(tx.signers, tx.signatures, message)
    return VerifiedTransaction(tx, message)


def verified_after_envelope_check(tx: Transaction) -> VerifiedTransaction:
    """The :class:`VerifiedTransaction` of a *parsed* ``tx`` whose wire bytes
    (``tx.to_bytes()``) :func:`protocol.envelope.check_envelope` accepted, in another process.

    The caller vouches for that check; it is :func:`verify_transaction`'s own signature check
    over the same message bytes (a parsed transaction keeps the message it arrived with), so
    the result is what ``verify_transaction(tx)`` would return. A transaction built in memory
    (no wire message) is refused: its bytes were never checked.
    """
    message = tx.wire_message
    if message is None:
        raise ValueError("only a parsed transaction carries the message its check covered")
    return VerifiedTransaction(tx, message)
