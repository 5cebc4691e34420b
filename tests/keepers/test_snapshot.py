"""Snapshots: exact, deterministic round trips of the whole program state."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepers.snapshot import Snapshot, SnapshotError, decode_snapshot, encode_snapshot
from protocol.accounts import ProgramState, SignedMsgOrderId
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.instructions import CancelOrders, Deposit, PlacePerpOrder
from protocol.markets import default_program_state
from protocol.program import Program
from protocol.state import FeeStructure, FeeTier, Order, State, User, UserStats
from protocol.state_hash import state_hash
from protocol.types import (
    MarketType,
    OrderType,
    PositionDirection,
    PostOnlyParam,
    UserStatus,
)
from tests.protocol.world import SOL, SOL_PERP, SOL_UNIT, USDC, USDC_UNIT, World, keypair

ALICE = keypair(1)
BOB = keypair(2)


def roundtrip(state: ProgramState, next_seq: int = 1, slot: int = 0) -> Snapshot:
    return decode_snapshot(encode_snapshot(Snapshot(state, next_seq, slot)))


def tree(state: ProgramState) -> list[Any]:
    """The encoded state tree: element 4 of the snapshot body (magic, version, classes,
    enums, state, next_seq, slot)."""
    body = msgspec.msgpack.decode(encode_snapshot(Snapshot(state, 1, 0)))
    assert body[0] == "drift-keepers/snapshot"
    result: list[Any] = body[4]
    return result


def test_default_markets_round_trip_equal_with_the_same_hash() -> None:
    state = default_program_state(now=1_700_000_000, slot=5)
    back = roundtrip(state, next_seq=42, slot=77)
    assert back.state == state
    assert (back.next_seq, back.slot) == (42, 77)
    assert state_hash(back.state, 42) == state_hash(state, 42)
    assert len(back.state.spot_markets) == 12
    assert len(back.state.perp_markets) == 3


def test_encoding_is_deterministic_and_stable_through_a_round_trip() -> None:
    state = default_program_state()
    raw = encode_snapshot(Snapshot(state, 9, 3))
    assert encode_snapshot(Snapshot(state, 9, 3)) == raw
    assert encode_snapshot(decode_snapshot(raw)) == raw


def test_genesis_is_not_shared_with_the_decoded_copy() -> None:
    state = World().program.state
    back = roundtrip(state).state
    back.spot_markets[USDC].deposit_balance += 1
    assert back.spot_markets[USDC] != state.spot_markets[USDC]


def _rich_state() -> ProgramState:
    w = World()
    w.new_user(BOB, usdc=10 * USDC_UNIT)
    w.new_user(ALICE, usdc=500 * USDC_UNIT, sol=2 * SOL_UNIT)
    state = w.program.state
    # i128 amounts beyond MessagePack's 64-bit integers, both signs
    state.perp_markets[SOL_PERP].amm.sqrt_k = 2**100 + 7
    state.perp_markets[SOL_PERP].amm.cumulative_funding_rate_long = -(2**70)
    alice = state.users[(ALICE.pubkey, 0)]
    alice.status = UserStatus.BeingLiquidated | UserStatus.Bankrupt  # a flag combination
    alice.orders.append(
        Order(
            order_id=3,
            market_index=SOL_PERP,
            market_type=MarketType.Perp,
            order_type=OrderType.Limit,
            direction=PositionDirection.Short,
            base_asset_amount=BASE_PRECISION,
            slot=1_001,
            price=101 * PRICE_PRECISION,
        )
    )
    state.signed_msg_uuids[(ALICE.pubkey, 0)] = {
        b"\x01" * 8: SignedMsgOrderId(1_050, 3),
        b"\x00" * 8: SignedMsgOrderId(1_020, 0),
    }
    state.state = dataclasses.replace(
        state.state,
        perp_fee_structure=FeeStructure(fee_tiers=(FeeTier(fee_numerator=7),)),
        max_transaction_age_slots=33,
    )
    return state


def test_every_kind_of_value_comes_back_as_itself() -> None:
    state = _rich_state()
    back = roundtrip(state).state
    assert back == state
    assert state_hash(back, 1) == state_hash(state, 1)
    assert back.perp_markets[SOL_PERP].amm.sqrt_k == 2**100 + 7
    assert back.perp_markets[SOL_PERP].amm.cumulative_funding_rate_long == -(2**70)
    alice = back.users[(ALICE.pubkey, 0)]
    assert type(alice) is User
    assert alice.status is UserStatus.BeingLiquidated | UserStatus.Bankrupt
    assert type(alice.status) is UserStatus
    assert type(alice.orders) is list
    assert alice.orders[-1].direction is PositionDirection.Short
    assert type(back.state) is State
    assert type(back.state.perp_fee_structure.fee_tiers) is tuple
    assert back.state.perp_fee_structure.fee_tiers == (FeeTier(fee_numerator=7),)
    assert back.state.max_transaction_age_slots == 33
    assert type(back.user_stats[ALICE.pubkey]) is UserStats
    key = next(iter(back.signed_msg_uuids))
    assert key == (ALICE.pubkey, 0)
    assert type(key) is tuple
    assert type(key[0]) is bytes
    assert back.signed_msg_uuids[key][b"\x01" * 8] == SignedMsgOrderId(1_050, 3)


def test_dict_iteration_order_is_kept() -> None:
    state = _rich_state()  # BOB was created before ALICE
    back = roundtrip(state).state
    assert list(back.users) == [(BOB.pubkey, 0), (ALICE.pubkey, 0)]
    assert list(back.signed_msg_uuids[(ALICE.pubkey, 0)]) == [b"\x01" * 8, b"\x00" * 8]


def _find_field(node: list[Any], path: list[int]) -> Any:
    for i in path:
        node = node[i]
    return node


def test_ints_beyond_64_bits_are_tagged_two_complement_bytes() -> None:
    state = World().program.state
    amm = state.perp_markets[SOL_PERP].amm
    amm.sqrt_k = 2**64  # one past u64::MAX: 0x01 followed by eight zero bytes
    amm.cumulative_funding_rate_long = -(2**63) - 1  # one below i64::MIN
    amm.cumulative_funding_rate_short = 2**64 - 1  # u64::MAX: still a native integer
    amm.base_asset_amount_long = -(2**63)  # i64::MIN: native
    back = roundtrip(state).state.perp_markets[SOL_PERP].amm
    assert back.sqrt_k == 2**64
    assert back.cumulative_funding_rate_long == -(2**63) - 1
    assert back.cumulative_funding_rate_short == 2**64 - 1
    assert back.base_asset_amount_long == -(2**63)

    fields = [f.name for f in dataclasses.fields(type(amm))]
    program_state = tree(state)  # [OBJ=0, class id, state, spot_markets, perp_markets, ...]
    perp_dict = program_state[2 + 2]  # the perp_markets field: [DICT=3, key, value]
    assert perp_dict[:2] == [3, SOL_PERP]
    market = perp_dict[2]
    amm_node = market[
        2 + [f.name for f in dataclasses.fields(type(state.perp_markets[0]))].index("amm")
    ]
    assert amm_node[2 + fields.index("sqrt_k")] == [5, b"\x01" + bytes(8)]
    # -(2**63) - 1 in 9 bytes: 2**72 - 2**63 - 1 = 0xff 7f ff ff ff ff ff ff ff
    assert amm_node[2 + fields.index("cumulative_funding_rate_long")] == [
        5,
        b"\xff\x7f" + b"\xff" * 7,
    ]
    assert amm_node[2 + fields.index("cumulative_funding_rate_short")] == 2**64 - 1
    assert amm_node[2 + fields.index("base_asset_amount_long")] == -(2**63)


def test_a_value_no_snapshot_can_hold_is_refused_with_its_path() -> None:
    state = World().program.state
    state.spot_markets[SOL].name = {"SOL"}  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"state\.spot_markets\[1\]\.name: cannot snapshot a set"):
        encode_snapshot(Snapshot(state, 1, 0))


def test_garbage_is_a_snapshot_error() -> None:
    with pytest.raises(SnapshotError, match="not a snapshot"):
        decode_snapshot(b"\xc1 definitely not msgpack")
    with pytest.raises(SnapshotError, match="not a snapshot"):
        decode_snapshot(msgspec.msgpack.encode(["something", 1]))


def _body(state: ProgramState) -> list[Any]:
    body: list[Any] = msgspec.msgpack.decode(encode_snapshot(Snapshot(state, 1, 0)))
    return body


def test_a_changed_field_layout_is_refused_naming_the_class() -> None:
    body = _body(World().program.state)
    classes = body[2]
    for entry in classes:
        if entry[0] == "OracleAccount":
            entry[1] = [*entry[1], "new_field"]
    with pytest.raises(SnapshotError, match="OracleAccount fields differ"):
        decode_snapshot(msgspec.msgpack.encode(body))


def test_an_unknown_class_or_bad_id_is_refused() -> None:
    body = _body(World().program.state)
    body[2][0][0] = "Nonexistent"
    with pytest.raises(SnapshotError, match="class Nonexistent"):
        decode_snapshot(msgspec.msgpack.encode(body))
    body = _body(World().program.state)
    body[4][1] = -1  # would wrap around to the last class in a Python list
    with pytest.raises(SnapshotError, match="bad class or enum id -1"):
        decode_snapshot(msgspec.msgpack.encode(body))


def test_an_unsupported_format_version_is_refused() -> None:
    body = _body(World().program.state)
    body[1] = 99
    with pytest.raises(SnapshotError, match="unsupported snapshot format 99"):
        decode_snapshot(msgspec.msgpack.encode(body))


# --- property: states reached by random signed transactions -------------------------------
OPS = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(1, 60)), max_size=25)


def _drive(w: World, ops: list[tuple[int, int, int]]) -> None:
    users = [keypair(1), keypair(2), keypair(3)]
    for kp in users:
        w.new_user(kp, usdc=1_000 * USDC_UNIT)
    for kind, who, amount in ops:
        kp = users[who]
        if kind == 0:
            w.send(Deposit(kp.pubkey, 0, USDC, amount * USDC_UNIT), signers=(kp,))
        elif kind == 1:
            w.withdraw(kp, USDC, amount * USDC_UNIT)
        elif kind == 2:
            w.send(Deposit(kp.pubkey, 0, SOL, amount * SOL_UNIT // 10), signers=(kp,))
        elif kind == 3:
            direction = PositionDirection.Long if amount % 2 else PositionDirection.Short
            away = (amount % 20 + 5) * PRICE_PRECISION
            price = 100 * PRICE_PRECISION + (-away if amount % 2 else away)
            params = _post_only(direction, price, amount * BASE_PRECISION // 100)
            w.send(PlacePerpOrder(kp.pubkey, 0, params), signers=(kp,))
        elif kind == 4:
            w.send(CancelOrders(kp.pubkey, 0), signers=(kp,))
        else:
            w.set_price("SOL/USD", (90 + amount % 20) * PRICE_PRECISION, 1_000)
        w.advance(1 + amount % 3)


def _post_only(direction: PositionDirection, price: int, size: int) -> Any:
    from protocol.state import OrderParams

    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        direction,
        size,
        SOL_PERP,
        price=price,
        post_only=PostOnlyParam.MustPostOnly,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, OPS)
def test_random_histories_round_trip_and_continue_identically(
    ops: list[tuple[int, int, int]], more: list[tuple[int, int, int]]
) -> None:
    w = World()
    _drive(w, ops)
    program = w.program
    back = roundtrip(program.state, program.next_seq, w.slot)
    assert back.state == program.state
    assert state_hash(back.state, back.next_seq) == state_hash(program.state, program.next_seq)
    # the restored program behaves exactly like the original from here on
    twin = World(Program(back.state, next_seq=back.next_seq), slot=w.slot, ts=w.ts)
    w.advance(200)  # past the replay window, so re-creating users is not a duplicate id
    twin.advance(200)
    _drive_more = [(k, who, amount) for k, who, amount in more if k != 5]
    for world in (w, twin):
        for kind, who, amount in _drive_more:
            kp = [keypair(1), keypair(2), keypair(3)][who]
            if kind == 0:
                world.send(Deposit(kp.pubkey, 0, USDC, amount * USDC_UNIT), signers=(kp,))
            elif kind == 1:
                world.withdraw(kp, USDC, amount * USDC_UNIT)
            else:
                world.send(CancelOrders(kp.pubkey, 0), signers=(kp,))
            world.advance(1)
    assert twin.program.next_seq == w.program.next_seq
    assert state_hash(twin.program.state, twin.program.next_seq) == state_hash(
        w.program.state, w.program.next_seq
    )
