"""Payload schemas: exact round trips to the protocol's types, the wire shape, and every way a
payload can be malformed, each reported as a DecodeError with its reason and path."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepers.bus import topics
from keepers.bus.schemas import (
    RECORD_TYPES,
    DeadLetter,
    DecodeError,
    DecodeReason,
    IntentMessage,
    OracleMessage,
    OrderAction,
    OrderEvent,
    OrderFields,
    OrderParamsFields,
    RecordMessage,
    SlotMessage,
    TopOfBook,
    UsersMessage,
    decode,
    encode,
    record_from_message,
    record_kind,
    record_to_message,
)
from protocol.keys import Keypair, verify_signature
from protocol.records import OrderActionRecord, Record, SequencedRecord
from protocol.signed_intent import OrderIntent
from protocol.state.order_params import OrderParams
from protocol.state.user import Order, PerpPosition, SpotPosition, User
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
    SpotBalanceType,
    UserStatus,
)

CLUSTER = "test"
USER = bytes(range(32))


def u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2**bits - 1)


def i(bits: int) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


orders = st.builds(
    Order,
    order_id=u(32),
    market_index=u(16),
    market_type=st.sampled_from(MarketType),
    order_type=st.sampled_from(OrderType),
    direction=st.sampled_from(PositionDirection),
    base_asset_amount=u(64),
    slot=u(64),
    price=u(64),
    base_asset_amount_filled=u(64),
    quote_asset_amount_filled=u(64),
    trigger_price=u(64),
    trigger_condition=st.sampled_from(OrderTriggerCondition),
    auction_start_price=i(64),
    auction_end_price=i(64),
    auction_duration=u(8),
    max_ts=i(64),
    oracle_price_offset=i(32),
    user_order_id=u(8),
    existing_position_direction=st.sampled_from(PositionDirection),
    status=st.sampled_from(OrderStatus),
    reduce_only=st.booleans(),
    post_only=st.booleans(),
    immediate_or_cancel=st.booleans(),
    posted_slot_tail=u(8),
    bit_flags=u(8),
)


def order_params(market_type: st.SearchStrategy[MarketType]) -> st.SearchStrategy[OrderParams]:
    return st.builds(
        OrderParams,
        order_type=st.sampled_from(OrderType),
        market_type=market_type,
        direction=st.sampled_from(PositionDirection),
        base_asset_amount=u(64),
        market_index=u(16),
        price=u(64),
        user_order_id=u(8),
        reduce_only=st.booleans(),
        post_only=st.sampled_from(PostOnlyParam),
        immediate_or_cancel=st.booleans(),
        bit_flags=u(8),
        max_ts=st.none() | i(64),
        trigger_price=st.none() | u(64),
        trigger_condition=st.sampled_from(OrderTriggerCondition),
        oracle_price_offset=st.none() | i(32),
        auction_duration=st.none() | u(8),
        auction_start_price=st.none() | i(64),
        auction_end_price=st.none() | i(64),
    )


def test_order_fields_are_exactly_the_orders_fields() -> None:
    assert set(OrderFields.__struct_fields__) == {f.name for f in dataclasses.fields(Order)}
    assert set(OrderParamsFields.__struct_fields__) == {
        f.name for f in dataclasses.fields(OrderParams)
    }


@given(orders)
def test_from_order_to_order_is_exact(order: Order) -> None:
    assert OrderFields.from_order(order).to_order() == order


@given(orders, st.sampled_from(OrderAction), u(64), i(64), st.binary(min_size=32, max_size=32))
def test_order_events_survive_the_wire_exactly(
    order: Order, action: OrderAction, slot: int, ts: int, authority: bytes
) -> None:
    event = OrderEvent.from_order(
        order,
        seq=9,
        market_seq=9,
        slot=slot,
        ts=ts,
        action=action,
        authority=authority,
        sub_account_id=3,
    )
    topic = topics.orders(CLUSTER, order.market_type, order.market_index)
    decoded = decode(topic, encode(event))
    assert decoded == event
    assert isinstance(decoded, OrderEvent)
    assert decoded.to_order() == order
    assert decoded.user_key == (authority, 3)
    # Enums come back as the protocol's enums, not bare ints.
    assert type(decoded.to_order().order_type) is OrderType


def test_order_event_wire_shape_leaves_out_order_defaults() -> None:
    order = Order(
        order_id=7,
        market_index=1,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=PositionDirection.Short,
        base_asset_amount=2_000_000_000,
        slot=100,
        price=25_500_000,
    )
    event = OrderEvent.from_order(
        order, seq=41, market_seq=41, slot=101, ts=1_700_000_000, action=OrderAction.PLACE,
        authority=USER, sub_account_id=0,
    )  # fmt: skip
    assert json.loads(encode(event)) == {
        "type": "order",
        "v": 1,
        "seq": 41,
        "market_seq": 41,
        "slot": 101,
        "ts": 1_700_000_000,
        "action": "place",
        "authority": USER.hex(),
        "sub_account_id": 0,
        "order": {
            "order_id": 7,
            "market_index": 1,
            "market_type": 1,  # MarketType.Perp
            "order_type": 1,  # OrderType.Limit
            "direction": 1,  # PositionDirection.Short
            "base_asset_amount": 2_000_000_000,
            "slot": 100,
            "price": 25_500_000,
        },
    }


def test_small_messages_have_their_documented_encoding() -> None:
    assert encode(SlotMessage(slot=5, ts=7)) == b'{"type":"slot","slot":5,"ts":7,"v":1}'
    oracle = OracleMessage(oracle_id="SOL/USD", price=150_000_000, confidence=15_000, slot=9)
    assert json.loads(encode(oracle)) == {
        "type": "oracle",
        "v": 1,
        "oracle_id": "SOL/USD",
        "price": 150_000_000,
        "confidence": 15_000,
        "slot": 9,
    }
    top = TopOfBook(
        market_type=MarketType.Perp, market_index=0, slot=3, seq=8, oracle_price=1, best_bid=None
    )
    assert decode(topics.dlob_top(CLUSTER, MarketType.Perp, 0), encode(top)) == top


@settings(max_examples=50)
@given(order_params(st.just(MarketType.Perp)), u(64), st.binary(min_size=8, max_size=8))
def test_signed_intents_survive_the_wire_with_a_verifiable_signature(
    params: OrderParams, slot: int, uuid: bytes
) -> None:
    keypair = Keypair.from_seed(bytes(32))
    intent = OrderIntent(
        authority=keypair.pubkey, sub_account_id=1, params=params, slot=slot, uuid=uuid
    )
    signature = intent.sign(keypair)
    message = IntentMessage.from_intent(intent, keypair.pubkey, signature, received_ts=5)
    decoded = decode(topics.intents(CLUSTER, params.market_index), encode(message))
    assert isinstance(decoded, IntentMessage)
    assert decoded.to_intent() == intent
    assert decoded.signer_bytes == keypair.pubkey
    assert verify_signature(
        decoded.signer_bytes, decoded.to_intent().signing_bytes(), decoded.signature_bytes
    )


def test_a_tampered_intent_still_decodes_but_no_longer_verifies() -> None:
    keypair = Keypair.from_seed(bytes(32))
    params = OrderParams(
        order_type=OrderType.Market,
        market_type=MarketType.Perp,
        direction=PositionDirection.Long,
        base_asset_amount=1_000_000_000,
        market_index=0,
    )
    intent = OrderIntent(keypair.pubkey, 0, params, slot=10, uuid=b"abcdefgh")
    message = msgspec.to_builtins(
        IntentMessage.from_intent(intent, keypair.pubkey, intent.sign(keypair))
    )
    message["params"]["base_asset_amount"] = 9_000_000_000  # a keeper inflating the size
    decoded = decode(topics.intents(CLUSTER, 0), msgspec.json.encode(message))
    assert isinstance(decoded, IntentMessage)
    assert not verify_signature(
        decoded.signer_bytes, decoded.to_intent().signing_bytes(), decoded.signature_bytes
    )


def test_every_record_type_has_a_kind_and_a_topic() -> None:
    assert RECORD_TYPES["order_action"] is OrderActionRecord
    assert set(RECORD_TYPES.values()) == set(Record.__args__)
    for kind in RECORD_TYPES:
        assert topics.parse(topics.records(CLUSTER, kind)).record_kind == kind


@pytest.mark.parametrize("record_type", list(RECORD_TYPES.values()), ids=list(RECORD_TYPES))
@settings(max_examples=25)
@given(data=st.data(), seq=u(64), slot=u(64))
def test_records_survive_the_wire_exactly(
    record_type: type[Any], data: st.DataObject, seq: int, slot: int
) -> None:
    record = data.draw(st.from_type(record_type))
    sequenced = SequencedRecord(seq=seq, slot=slot, record=record)
    message = record_to_message(sequenced)
    topic = topics.records(CLUSTER, record_kind(record))
    decoded = decode(topic, encode(message))
    assert isinstance(decoded, RecordMessage)
    assert record_from_message(decoded, topic) == sequenced


def test_record_payloads_carry_hex_bytes_and_enum_values() -> None:
    record = OrderActionRecord(
        action="fill",
        authority=b"\x01" * 32,
        sub_account_id=0,
        order_id=4,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=OrderType.Market,
        direction=PositionDirection.Short,
        base_asset_amount=10**9,
        base_asset_amount_filled=10**9,
        price=2**70,  # beyond 64 bits: JSON carries it, msgpack could not
        reason="",
        slot=5,
        ts=6,
    )
    message = record_to_message(SequencedRecord(seq=3, slot=5, record=record))
    assert message.kind == "order_action"
    assert message.payload["authority"] == "01" * 32
    assert message.payload["market_type"] == 1
    assert message.payload["direction"] == 1
    assert json.loads(encode(message))["payload"]["price"] == 2**70


def order_action_payload() -> dict[str, Any]:
    record = OrderActionRecord(
        action="place",
        authority=USER,
        sub_account_id=0,
        order_id=1,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=PositionDirection.Long,
        base_asset_amount=1,
        base_asset_amount_filled=0,
        price=1,
        reason="",
        slot=1,
        ts=1,
    )
    return record_to_message(SequencedRecord(seq=1, slot=1, record=record)).payload


@pytest.mark.parametrize(
    ("changes", "removed", "kind", "reason", "path"),
    [
        ({"authority": "zz"}, None, "order_action", DecodeReason.INVALID_VALUE, "authority"),
        ({"market_type": 9}, None, "order_action", DecodeReason.INVALID_VALUE, "market_type"),
        ({"slot": True}, None, "order_action", DecodeReason.INVALID_VALUE, "slot"),
        ({"reason": 3}, None, "order_action", DecodeReason.INVALID_VALUE, "reason"),
        ({"extra": 1}, None, "order_action", DecodeReason.UNKNOWN_FIELD, "extra"),
        ({}, "ts", "order_action", DecodeReason.MISSING_FIELD, "ts"),
        ({}, None, "no_such_kind", DecodeReason.INVALID_VALUE, "kind"),
    ],
)
def test_record_messages_with_bad_payloads_raise_decode_errors(
    changes: dict[str, Any], removed: str | None, kind: str, reason: DecodeReason, path: str
) -> None:
    payload = {**order_action_payload(), **changes}
    if removed is not None:
        del payload[removed]
    bad = RecordMessage(seq=1, slot=1, kind=kind, payload=payload)
    with pytest.raises(DecodeError) as info:
        record_from_message(bad, "t")
    assert info.value.reason is reason
    assert info.value.path.rsplit(".", 1)[-1] == path


# --- malformed payloads ----------------------------------------------------------------------
ORDER_TOPIC = topics.orders(CLUSTER, MarketType.Perp, 1)


def valid_order_event() -> dict[str, Any]:
    order = Order(
        order_id=7,
        market_index=1,
        market_type=MarketType.Perp,
        order_type=OrderType.Limit,
        direction=PositionDirection.Long,
        base_asset_amount=10**9,
        slot=100,
        price=25_000_000,
    )
    event = OrderEvent.from_order(
        order,
        seq=1,
        market_seq=1,
        slot=100,
        ts=5,
        action=OrderAction.PLACE,
        authority=USER,
        sub_account_id=0,
    )
    built: dict[str, Any] = msgspec.to_builtins(event)
    return built


def with_changes(**changes: Any) -> bytes:
    payload = valid_order_event()
    for key, value in changes.items():
        if key.startswith("order__"):
            payload["order"][key.removeprefix("order__")] = value
        else:
            payload[key] = value
    return msgspec.json.encode(payload)


def without(field: str) -> bytes:
    payload = valid_order_event()
    del payload[field]
    return msgspec.json.encode(payload)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "path"),
    [
        (ORDER_TOPIC, b"{not json", DecodeReason.MALFORMED, "$"),
        (ORDER_TOPIC, b"\xff\xfe\x00", DecodeReason.MALFORMED, "$"),
        (ORDER_TOPIC, b"", DecodeReason.MALFORMED, "$"),
        (ORDER_TOPIC, b"[1, 2]", DecodeReason.NOT_AN_OBJECT, "$"),
        (ORDER_TOPIC, b'"order"', DecodeReason.NOT_AN_OBJECT, "$"),
        (ORDER_TOPIC, with_changes(type="trade"), DecodeReason.UNKNOWN_TAG, "$.type"),
        (ORDER_TOPIC, without("type"), DecodeReason.UNKNOWN_TAG, "$.type"),
        (ORDER_TOPIC, with_changes(v=2), DecodeReason.WRONG_VERSION, "$.v"),
        # A newer schema's extra field is reported as the version, not the field.
        (ORDER_TOPIC, with_changes(v=2, extra=1), DecodeReason.WRONG_VERSION, "$.v"),
        (ORDER_TOPIC, with_changes(extra=1), DecodeReason.UNKNOWN_FIELD, "$.extra"),
        (ORDER_TOPIC, with_changes(order__extra=1), DecodeReason.UNKNOWN_FIELD, "$.order.extra"),
        (ORDER_TOPIC, without("seq"), DecodeReason.MISSING_FIELD, "$.seq"),
        (ORDER_TOPIC, with_changes(seq="1"), DecodeReason.INVALID_VALUE, "$.seq"),
        (ORDER_TOPIC, with_changes(action="explode"), DecodeReason.INVALID_VALUE, "$.action"),
        (ORDER_TOPIC, with_changes(authority="AB" * 32), DecodeReason.INVALID_VALUE, "$.authority"),
        (ORDER_TOPIC, with_changes(order__price=-1), DecodeReason.INVALID_VALUE, "$.order.price"),
        (ORDER_TOPIC, with_changes(order__order_type=9), DecodeReason.INVALID_VALUE,
         "$.order.order_type"),
        (ORDER_TOPIC, with_changes(order__auction_duration=256), DecodeReason.INVALID_VALUE,
         "$.order.auction_duration"),
        (ORDER_TOPIC, with_changes(order__post_only=1), DecodeReason.INVALID_VALUE,
         "$.order.post_only"),
        (ORDER_TOPIC, with_changes(order=[]), DecodeReason.INVALID_VALUE, "$.order"),
        (ORDER_TOPIC, encode(SlotMessage(slot=1, ts=1)), DecodeReason.TOPIC_MISMATCH, "$.type"),
        (topics.orders(CLUSTER, MarketType.Perp, 2), with_changes(), DecodeReason.TOPIC_MISMATCH,
         "$"),
        (topics.orders(CLUSTER, MarketType.Spot, 1), with_changes(), DecodeReason.TOPIC_MISMATCH,
         "$"),
        ("keepers/v1/test/trades/1", with_changes(), DecodeReason.UNKNOWN_TOPIC, "$"),
    ],
)  # fmt: skip
def test_malformed_payloads_raise_a_decode_error_naming_the_problem(
    topic: str, payload: bytes, reason: DecodeReason, path: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(topic, payload)
    assert info.value.reason is reason
    assert info.value.path == path
    assert info.value.topic == topic


def test_the_base_payload_of_the_malformed_cases_is_valid() -> None:
    decoded = decode(ORDER_TOPIC, with_changes())
    assert isinstance(decoded, OrderEvent)
    assert decoded.order.price == 25_000_000


def test_a_payload_without_a_version_is_read_as_version_one() -> None:
    payload = valid_order_event()
    del payload["v"]
    decoded = decode(ORDER_TOPIC, msgspec.json.encode(payload))
    assert isinstance(decoded, OrderEvent)
    assert decoded.v == 1


def test_dead_letters_carry_the_raw_payload() -> None:
    letter = DeadLetter(
        topic=ORDER_TOPIC,
        reason=DecodeReason.MALFORMED.value,
        path="$",
        detail="bad",
        payload=b"\xff{",
        received_ts=1,
    )
    decoded = decode(topics.deadletter(CLUSTER), encode(letter))
    assert decoded == letter


# --- user accounts ---------------------------------------------------------------------------
def typed(value: object) -> object:
    """``value`` as a tree that also names every leaf's type: equal trees mean the same values
    *and* the same types (an enum back as an enum, not as an equal int)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value).__name__, [typed(getattr(value, f.name)) for f in fields])
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


spot_positions = st.builds(
    SpotPosition,
    market_index=u(16),
    scaled_balance=u(128),
    balance_type=st.sampled_from(SpotBalanceType),
    open_bids=i(64),
    open_asks=i(64),
    cumulative_deposits=i(64),
    open_orders=u(8),
)
perp_positions = st.builds(
    PerpPosition,
    market_index=u(16),
    base_asset_amount=i(64),
    quote_asset_amount=i(64),
    last_cumulative_funding_rate=i(128),
    lp_shares=u(64),
    open_orders=u(8),
)
users = st.builds(
    User,
    authority=st.binary(min_size=32, max_size=32),
    sub_account_id=u(16),
    name=st.text(max_size=32),
    spot_positions=st.lists(spot_positions, max_size=3),
    perp_positions=st.lists(perp_positions, max_size=3),
    orders=st.lists(orders, max_size=4),
    status=st.sampled_from(list(UserStatus))
    | st.just(UserStatus.BeingLiquidated | UserStatus.Bankrupt),
    settled_perp_pnl=i(128),
    total_social_loss=u(128),
    is_margin_trading_enabled=st.booleans(),
)


@settings(max_examples=50)
@given(st.lists(users, max_size=4), u(63))
def test_user_accounts_survive_the_wire_exactly_type_for_type(
    accounts: list[User], seq: int
) -> None:
    message = UsersMessage(stream="0123456789abcdef", seq=seq + 1, slot=7, users=accounts)
    decoded = decode(topics.users(CLUSTER), encode(message))
    assert isinstance(decoded, UsersMessage)
    assert decoded == message
    assert typed(decoded.users) == typed(accounts)


def test_a_users_message_carries_the_dataclass_with_base64_keys_and_enum_values() -> None:
    account = User(authority=USER, status=UserStatus.BeingLiquidated, settled_perp_pnl=-(2**70))
    message = UsersMessage(stream="0123456789abcdef", seq=1, slot=9, users=[account])
    body = json.loads(encode(message))
    assert {k: body[k] for k in ("type", "v", "stream", "seq", "slot")} == {
        "type": "users",
        "v": 1,
        "stream": "0123456789abcdef",
        "seq": 1,
        "slot": 9,
    }
    [wire] = body["users"]
    assert list(wire) == [f.name for f in dataclasses.fields(User)]
    assert wire["authority"] == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert (wire["status"], wire["settled_perp_pnl"]) == (1, -(2**70))


@pytest.mark.parametrize(
    ("change", "reason", "path"),
    [
        ({"stream": "ABCDEF0123456789"}, DecodeReason.INVALID_VALUE, "$.stream"),
        ({"seq": 0}, DecodeReason.INVALID_VALUE, "$.seq"),
        ({"users": [{"authority": 5}]}, DecodeReason.INVALID_VALUE, "$.users"),
        ({"extra": 1}, DecodeReason.UNKNOWN_FIELD, "$.extra"),
    ],
)
def test_bad_users_messages_name_their_problem(
    change: dict[str, Any], reason: DecodeReason, path: str
) -> None:
    body = {"type": "users", "stream": "0123456789abcdef", "seq": 1, "slot": 1, "users": []}
    with pytest.raises(DecodeError) as info:
        decode(topics.users(CLUSTER), json.dumps(body | change).encode())
    assert (info.value.reason, info.value.path) == (reason, path)
