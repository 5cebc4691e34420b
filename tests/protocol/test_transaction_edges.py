"""Every malformed-wire branch of the transaction parser, and the signer-side validations.

The reference transaction is one signer and one ``Deposit`` (tag 3, 45-byte body: pubkey 32 +
sub_account u16 + market u16 + amount u64 + reduce_only bool). Its wire layout, by hand:

    [0:4]     b"DKTX"            [70]       message version
    [4]       version            [71:79]    recent_slot u64
    [5]       signature count    [79]       signer count
    [6:70]    signature          [80:112]   signer pubkey
                                 [112:114]  instruction count u16
                                 [114:116]  tag u16, [116:120] length u32, [120:165] body

so the whole transaction is 165 bytes. Each malformed variant is rejected with a stable code
and the field it names, and (through ``execute_bytes``) leaves the program state untouched.
"""

from __future__ import annotations

import pytest

from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError, Rejected
from protocol.instructions import Deposit
from protocol.program import Executed
from protocol.state_hash import state_hash
from protocol.transaction import (
    MAX_INSTRUCTIONS,
    MAX_SIGNERS,
    Transaction,
    message_bytes,
    parse_transaction,
    verify_transaction,
)
from tests.protocol.world import USDC, USDC_UNIT, World, keypair

ALICE = keypair(1)
BOB = keypair(2)

SIG_AT = 6
MSG_AT = 70
N_SIGNERS_AT = 79
COUNT_AT = 112
TAG_AT = 114
LEN_AT = 116
BODY_AT = 120
TOTAL = 165


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    return w


def deposit(amount: int = 5) -> Deposit:
    return Deposit(ALICE.pubkey, 0, USDC, amount)


def reference_wire(world: World) -> bytes:
    raw = world.tx(deposit(), signers=(ALICE,)).to_bytes()
    assert len(raw) == TOTAL
    return raw


def rejected_with(raw: bytes, code: ErrorCode, field: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        parse_transaction(raw)
    assert err.value.code == code
    assert err.value.field == field


def test_reference_layout_is_what_the_parser_reads(world: World) -> None:
    raw = reference_wire(world)
    assert raw[COUNT_AT:TAG_AT] == (1).to_bytes(2, "little")
    assert raw[TAG_AT:LEN_AT] == (3).to_bytes(2, "little")
    assert raw[LEN_AT:BODY_AT] == (45).to_bytes(4, "little")
    assert raw[80:112] == ALICE.pubkey
    parsed = Transaction.from_bytes(raw)
    assert parsed.instructions == (deposit(),)
    assert parsed.recent_slot == world.slot


@pytest.mark.parametrize("raw", [b"", b"DKT", b"DKTY\x01\x01", b"dktx\x01\x01"])
def test_wrong_magic_is_not_a_transaction(raw: bytes) -> None:
    rejected_with(raw, ErrorCode.MalformedTransaction, "magic")


@pytest.mark.parametrize("raw", [b"DKTX", b"DKTX\x01"])
def test_magic_without_a_full_header_is_truncated(raw: bytes) -> None:
    rejected_with(raw, ErrorCode.MalformedTransaction, "header")


def test_unknown_envelope_version_is_unsupported(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[4] = 2
    rejected_with(bytes(raw), ErrorCode.UnsupportedVersion, "version")


@pytest.mark.parametrize("count", [0, MAX_SIGNERS + 1])
def test_signature_count_outside_one_to_eight_is_malformed(world: World, count: int) -> None:
    raw = bytearray(reference_wire(world))
    raw[5] = count
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "signatures")


def test_signature_count_beyond_the_buffer_is_malformed(world: World) -> None:
    # two signatures need bytes [6:134]; keep only 6 + 64 + 10 = 80 bytes
    raw = bytearray(reference_wire(world)[:80])
    raw[5] = 2
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "signatures")


def test_message_shorter_than_its_fixed_header_is_truncated(world: World) -> None:
    # the message header is version + slot + signer count = 10 bytes; give it 9
    raw = reference_wire(world)[: MSG_AT + 9]
    rejected_with(raw, ErrorCode.MalformedTransaction, "message")


def test_unknown_message_version_is_unsupported(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[MSG_AT] = 0
    rejected_with(bytes(raw), ErrorCode.UnsupportedVersion, "message.version")


def test_signer_count_must_equal_signature_count(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[N_SIGNERS_AT] = 2
    with pytest.raises(InvalidParameter) as err:
        parse_transaction(bytes(raw))
    assert err.value.code == ErrorCode.MalformedTransaction
    assert err.value.field == "signers"
    assert err.value.detail == "2 signers but 1 signatures"


def test_signers_cut_short_are_truncated(world: World) -> None:
    # the signer block plus the u16 count ends at byte 114; stop one byte early
    raw = reference_wire(world)[: COUNT_AT + 1]
    rejected_with(raw, ErrorCode.MalformedTransaction, "signers")


@pytest.mark.parametrize("count", [0, MAX_INSTRUCTIONS + 1])
def test_instruction_count_outside_one_to_sixty_four_is_malformed(world: World, count: int) -> None:
    raw = bytearray(reference_wire(world))
    raw[COUNT_AT:TAG_AT] = count.to_bytes(2, "little")
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "instructions")


def test_missing_second_instruction_header_is_truncated(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[COUNT_AT:TAG_AT] = (2).to_bytes(2, "little")
    # the first instruction parses; the second has no 6-byte header at all
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "instructions[1]")


def test_partial_instruction_header_is_truncated(world: World) -> None:
    raw = reference_wire(world)[: TAG_AT + 5]  # 5 of the 6 header bytes
    rejected_with(raw, ErrorCode.MalformedTransaction, "instructions[0]")


def test_oversized_instruction_length_is_malformed(world: World) -> None:
    raw = bytearray(reference_wire(world))
    # 4097 > MAX_INSTRUCTION_BYTES, even with enough bytes behind it
    raw[LEN_AT:BODY_AT] = (4097).to_bytes(4, "little")
    raw += bytes(4097 - 45)
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "instructions[0]")


def test_instruction_length_past_the_end_is_malformed(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[LEN_AT:BODY_AT] = (46).to_bytes(4, "little")  # one byte more than there is
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "instructions[0]")


def test_instruction_body_too_short_names_the_missing_field(world: World) -> None:
    raw = bytearray(reference_wire(world))
    # declare 44 bytes and drop the final reduce_only byte: the body ends before that field
    raw[LEN_AT:BODY_AT] = (44).to_bytes(4, "little")
    rejected_with(bytes(raw[:-1]), ErrorCode.MalformedTransaction, "instructions[0].reduce_only")


def test_instruction_body_with_extra_byte_is_malformed(world: World) -> None:
    raw = bytearray(reference_wire(world))
    raw[LEN_AT:BODY_AT] = (46).to_bytes(4, "little")
    raw.append(0)
    rejected_with(bytes(raw), ErrorCode.MalformedTransaction, "instructions[0]")


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 7])
def test_trailing_bytes_after_the_last_instruction_are_malformed(
    world: World, extra: bytes
) -> None:
    raw = reference_wire(world) + extra
    with pytest.raises(InvalidParameter) as err:
        parse_transaction(raw)
    assert err.value.code == ErrorCode.MalformedTransaction
    assert err.value.field == "transaction"
    assert err.value.detail == f"{len(extra)} trailing bytes"


def test_malformed_bytes_through_the_program_change_nothing(world: World) -> None:
    before = state_hash(world.program.state, world.program.next_seq)
    raw = reference_wire(world) + b"\x00"
    result = world.program.execute_bytes(raw, world.clock)
    assert isinstance(result, Rejected)
    assert (result.code, result.field) == (ErrorCode.MalformedTransaction, "transaction")
    assert state_hash(world.program.state, world.program.next_seq) == before
    # the well-formed original still executes: the rejection consumed nothing
    assert isinstance(world.program.execute_bytes(raw[:-1], world.clock), Executed)


# --- the signer's side: message_bytes and to_bytes ---------------------------------------------


def test_recent_slot_bounds_are_those_of_a_u64() -> None:
    signers = (ALICE.pubkey,)
    top = message_bytes((deposit(),), 2**64 - 1, signers)
    assert top[1:9] == b"\xff" * 8
    for bad in (-1, 2**64):
        with pytest.raises(InvalidParameter) as err:
            message_bytes((deposit(),), bad, signers)
        assert err.value.field == "recent_slot"
        assert err.value.code == ErrorCode.InvalidParameter


def test_signer_count_bounds() -> None:
    eight = tuple(keypair(10 + i).pubkey for i in range(MAX_SIGNERS))
    # 1 version + 8 slot + 1 count + 8 * 32 keys + 2 ix count + 6 ix header + 45 body = 319
    assert len(message_bytes((deposit(),), 0, eight)) == 319
    for signers in ((), (*eight, ALICE.pubkey)):
        with pytest.raises(InvalidParameter) as err:
            message_bytes((deposit(),), 0, signers)
        assert err.value.field == "signers"


def test_signer_of_wrong_width_is_named_by_index() -> None:
    with pytest.raises(InvalidParameter) as err:
        message_bytes((deposit(),), 0, (ALICE.pubkey, b"\x01" * 31))
    assert err.value.field == "signers[1]"


def test_instruction_count_bounds() -> None:
    signers = (ALICE.pubkey,)
    # 1 + 8 + 1 + 32 + 2 + 64 * (6 + 45) = 3308
    assert len(message_bytes((deposit(),) * MAX_INSTRUCTIONS, 0, signers)) == 3308
    for ixs in ((), (deposit(),) * (MAX_INSTRUCTIONS + 1)):
        with pytest.raises(InvalidParameter) as err:
            message_bytes(ixs, 0, signers)
        assert err.value.field == "instructions"


def test_a_value_that_is_not_an_instruction_is_refused() -> None:
    with pytest.raises(InvalidParameter) as err:
        message_bytes((deposit(), "transfer"), 0, (ALICE.pubkey,))
    assert err.value.code == ErrorCode.UnknownInstruction
    assert err.value.field == "instructions[1]"


def test_to_bytes_requires_one_full_signature_per_signer(world: World) -> None:
    tx = world.tx(deposit(), signers=(ALICE,))
    missing = Transaction(
        tx.instructions, tx.recent_slot, (ALICE.pubkey, BOB.pubkey), tx.signatures
    )
    with pytest.raises(InvalidParameter) as err:
        missing.to_bytes()
    assert (err.value.code, err.value.field) == (ErrorCode.MalformedTransaction, "signatures")
    short = Transaction(tx.instructions, tx.recent_slot, tx.signers, (tx.signatures[0][:63],))
    with pytest.raises(InvalidParameter) as err:
        short.to_bytes()
    assert (err.value.code, err.value.field) == (ErrorCode.MalformedTransaction, "signatures[0]")


# --- verification ---------------------------------------------------------------------------


def test_fewer_signatures_than_signers_is_a_missing_signature(world: World) -> None:
    tx = world.tx(deposit(), signers=(ALICE,))
    unsigned = Transaction(
        tx.instructions, tx.recent_slot, (ALICE.pubkey, BOB.pubkey), tx.signatures
    )
    with pytest.raises(ProtocolError) as err:
        verify_transaction(unsigned)
    assert (err.value.code, err.value.field) == (ErrorCode.MissingSignature, "signatures")
    nobody = Transaction(tx.instructions, tx.recent_slot, (), ())
    result = world.program.execute(nobody, world.clock)
    assert isinstance(result, Rejected)
    assert (result.code, result.field) == (ErrorCode.MissingSignature, "signatures")


def test_duplicate_signer_is_malformed_and_changes_nothing(world: World) -> None:
    before = state_hash(world.program.state, world.program.next_seq)
    # every signature is genuine: the duplicate alone must sink it
    tx = Transaction.sign([deposit()], world.slot, [ALICE, ALICE])
    result = world.program.execute_bytes(tx.to_bytes(), world.clock)
    assert isinstance(result, Rejected)
    assert (result.code, result.field) == (ErrorCode.MalformedTransaction, "signers")
    assert state_hash(world.program.state, world.program.next_seq) == before
