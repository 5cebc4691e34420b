"""The envelope check a verifier in another process runs (:func:`check_envelope`) gives the
verdict :func:`verify_transaction` gives, and :func:`verified_after_envelope_check` makes the
same :class:`VerifiedTransaction`.

The reference transaction is two signers (ALICE, BOB) over ``Deposit`` + ``InitializeUser``;
its layout: ``[0:4]`` magic, ``[4]`` version, ``[5]`` signature count, ``[6:134]`` the two
signatures, then the message from byte 134 (version, recent_slot ``[135:143]``, signer count
``[143]``, signers ``[144:208]``, instructions).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelope import check_envelope, parse_envelope
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions import Deposit, InitializeUser
from protocol.keys import Keypair
from protocol.transaction import (
    Transaction,
    parse_transaction,
    verified_after_envelope_check,
    verify_transaction,
)

ALICE = Keypair.from_seed(bytes([1]) * 32)
BOB = Keypair.from_seed(bytes([2]) * 32)
SLOT = 77
REFERENCE = Transaction.sign(
    [Deposit(ALICE.pubkey, 0, 0, 5), InitializeUser(BOB.pubkey, 0)], SLOT, [ALICE, BOB]
).to_bytes()


def verdict_of_the_program(raw: bytes) -> tuple[ErrorCode, str | None] | None:
    """What parse + verify say about ``raw``: ``None`` accepted, else (code, field)."""
    try:
        verify_transaction(parse_transaction(raw))
    except ProtocolError as exc:
        return exc.code, exc.field
    return None


def verdict_of_the_envelope(raw: bytes) -> tuple[ErrorCode, str | None] | None:
    try:
        check_envelope(raw)
    except ProtocolError as exc:
        return exc.code, exc.field
    return None


def test_the_envelope_is_read_where_the_layout_says() -> None:
    envelope = parse_envelope(REFERENCE)
    assert envelope.signatures == (REFERENCE[6:70], REFERENCE[70:134])
    assert envelope.signers == (ALICE.pubkey, BOB.pubkey)
    assert envelope.recent_slot == SLOT
    assert (envelope.message_start, envelope.instructions_start) == (134, 208)
    assert REFERENCE[134:] == parse_transaction(REFERENCE).wire_message


def test_a_good_transaction_passes_both_and_makes_the_same_verified_value() -> None:
    assert verdict_of_the_envelope(REFERENCE) is None
    parsed = parse_transaction(REFERENCE)
    assert verified_after_envelope_check(parsed) == verify_transaction(parsed)


def test_each_bad_signature_is_named_alike() -> None:
    for at, field in ((6, "signatures[0]"), (70, "signatures[1]")):
        raw = bytearray(REFERENCE)
        raw[at + 5] ^= 0x40
        expected = (ErrorCode.InvalidSignature, field)
        assert verdict_of_the_envelope(bytes(raw)) == expected
        assert verdict_of_the_program(bytes(raw)) == expected


def test_a_duplicate_signer_is_malformed_for_both() -> None:
    raw = Transaction.sign([Deposit(ALICE.pubkey, 0, 0, 5)], SLOT, [ALICE, ALICE]).to_bytes()
    expected = (ErrorCode.MalformedTransaction, "signers")
    assert verdict_of_the_envelope(raw) == verdict_of_the_program(raw) == expected


def test_a_transaction_built_in_memory_is_not_taken_as_checked() -> None:
    built = Transaction.sign([Deposit(ALICE.pubkey, 0, 0, 5)], SLOT, [ALICE])
    with pytest.raises(ValueError, match="only a parsed transaction"):
        verified_after_envelope_check(built)


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, len(REFERENCE) - 1), flip=st.integers(1, 255))
def test_for_bytes_the_parser_takes_the_verdicts_agree(at: int, flip: int) -> None:
    raw = bytearray(REFERENCE)
    raw[at] ^= flip
    try:
        parse_transaction(bytes(raw))
    except ProtocolError:
        return  # the node refuses these at admission: no verifier ever sees them
    assert verdict_of_the_envelope(bytes(raw)) == verdict_of_the_program(bytes(raw))
