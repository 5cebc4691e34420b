"""Payload schemas of the bus: frozen msgspec structs in one tagged union, decoded once at ingress.

Every payload is a JSON object with a ``"type"`` tag naming its struct and a schema version
``"v"`` (:data:`SCHEMA_VERSION`; always written, absent on reading means 1). In the nested
order and order-params objects, fields equal to their default are left out of the encoding (a
smaller payload decodes faster) and decode back to the same default. Structs forbid unknown
fields, so a payload from a newer schema is rejected with a :class:`DecodeError` naming the
problem rather than half-read. Which struct may arrive on which topic is fixed
(:data:`TOPIC_MESSAGE`), and the market in the topic must equal the market in the payload.

Encoding is msgspec JSON. Measured with ``benchmarks/bus_codec.py`` over 10,000 order events,
msgpack round-trips (encode + decode into the union) in ~1.8 us against JSON's ~2.0 us (runs
gave 1.80-1.84 against 1.93-2.08), with payloads of 382 against 485 bytes: a difference lost
beside the MQTT client's own cost per message (6 us for gmqtt, 40 us for aiomqtt), while JSON
can be read with ``mosquitto_sub`` and carries the u128/i128 amounts of protocol records, which
msgpack cannot (64-bit integers only).

User accounts (:class:`UsersMessage`) are the one exception to field-by-field schemas: each
is the protocol's :class:`~protocol.state.user.User` dataclass as msgspec encodes a dataclass
(its fields by name in declaration order, ints exact at any width, enums as their values, the
public keys as base64) and decodes it back, in C, into an equal ``User``. Measured with
``python -m benchmarks.users_feed`` (best of 9, two runs) on a user with a perp, a spot
position and three orders (2.5 KB): 5.0 us to encode and 9-10 us to decode, against 38 us and
140-176 us for the field walk of :mod:`keepers.accounts_json` (hex keys) that the node's
one-account reads use; a keeper decoding 100,000 accounts spends ~1 s instead of ~15 s.
Unknown fields inside an account are ignored (msgspec does not forbid them on dataclasses).

Units are the protocol's: every amount is an int at its program precision (prices
PRICE_PRECISION, base BASE_PRECISION, ...), enums travel as their integer values, public keys,
uuids and signatures as lowercase hex. ``ts`` fields from the protocol are unix seconds (the
program clock); ``received_ts`` fields are the receiver's wall clock in unix nanoseconds.
Integer fields carry the program's widths (u8 ... i64) and are range-checked when decoded.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from enum import Enum, StrEnum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, Final, Union, get_args, get_origin

import msgspec

from keepers.bus import topics
from keepers.bus.topics import TopicError, TopicKind
from protocol.records import Record, SequencedRecord
from protocol.signed_intent import OrderIntent
from protocol.state.order_params import OrderParams
from protocol.state.user import Order, User
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

SCHEMA_VERSION: Final = 1

# The program's integer widths, checked at decode. msgspec cannot bound an int above int64, so
# u64 fields are checked for sign only; the protocol's codec rejects a u64 overflow when it
# builds signing bytes, and the node never produces one.
U8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
U16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]
I32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
PubkeyHex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
UuidHex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
SignatureHex = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{128}$")]
StreamId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]


# gc=False: decoded messages are trees of scalars and nested structs, never cycles, so the cyclic
# garbage collector need not track them (it measurably slows ingest of busy order streams).
class _Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="type",
    gc=False,
):
    v: int = SCHEMA_VERSION


class _Fields(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    gc=False,
):
    """A nested, untagged group of fields."""


class OrderAction(StrEnum):
    PLACE = "place"
    CANCEL = "cancel"
    FILL = "fill"
    EXPIRE = "expire"
    TRIGGER = "trigger"
    MODIFY = "modify"


class OrderFields(_Fields, frozen=True):
    """Every field of :class:`protocol.state.user.Order`, same names and units."""

    order_id: U32
    market_index: U16
    market_type: MarketType
    order_type: OrderType
    direction: PositionDirection
    base_asset_amount: U64
    slot: U64
    price: U64 = 0
    base_asset_amount_filled: U64 = 0
    quote_asset_amount_filled: U64 = 0
    trigger_price: U64 = 0
    trigger_condition: OrderTriggerCondition = OrderTriggerCondition.Above
    auction_start_price: I64 = 0
    auction_end_price: I64 = 0
    auction_duration: U8 = 0
    max_ts: I64 = 0
    oracle_price_offset: I32 = 0
    user_order_id: U8 = 0
    existing_position_direction: PositionDirection = PositionDirection.Long
    status: OrderStatus = OrderStatus.Open
    reduce_only: bool = False
    post_only: bool = False
    immediate_or_cancel: bool = False
    posted_slot_tail: U8 = 0
    bit_flags: U8 = 0

    @classmethod
    def from_order(cls, order: Order) -> OrderFields:
        return cls(**{name: getattr(order, name) for name in _ORDER_FIELD_NAMES})

    def to_order(self) -> Order:
        return Order(**{name: getattr(self, name) for name in _ORDER_FIELD_NAMES})


_ORDER_FIELD_NAMES: Final = tuple(f.name for f in dataclasses.fields(Order))


class OrderEvent(_Message, tag="order", frozen=True):
    """An order changed. ``seq`` is the node's gap-free record sequence (global, across every
    record kind); ``market_seq`` counts this market's order events only, gap-free from 1, so a
    subscriber to one market's topic can detect a lost event (the node's order snapshot of a
    market reports the ``market_seq`` it includes). ``slot``/``ts`` when the change happened;
    ``order`` the order as it is after the change (for ``cancel``, ``fill`` to zero and
    ``expire``: as it was when it left the book)."""

    seq: int
    market_seq: int
    slot: U64
    ts: I64
    action: OrderAction
    authority: PubkeyHex
    sub_account_id: U16
    order: OrderFields

    @classmethod
    def from_order(
        cls,
        order: Order,
        *,
        seq: int,
        market_seq: int,
        slot: int,
        ts: int,
        action: OrderAction,
        authority: bytes,
        sub_account_id: int,
    ) -> OrderEvent:
        return cls(
            seq=seq,
            market_seq=market_seq,
            slot=slot,
            ts=ts,
            action=action,
            authority=authority.hex(),
            sub_account_id=sub_account_id,
            order=OrderFields.from_order(order),
        )

    def to_order(self) -> Order:
        return self.order.to_order()

    @property
    def user_key(self) -> tuple[bytes, int]:
        """The protocol's :data:`~protocol.state.user.UserKey`."""
        return bytes.fromhex(self.authority), self.sub_account_id

    @property
    def market_type(self) -> MarketType:
        return self.order.market_type

    @property
    def market_index(self) -> int:
        return self.order.market_index


class OrderParamsFields(_Fields, frozen=True):
    """Every field of :class:`protocol.state.order_params.OrderParams`; ``None`` where the user
    left a value for the program to derive."""

    order_type: OrderType
    market_type: MarketType
    direction: PositionDirection
    base_asset_amount: U64
    market_index: U16
    price: U64 = 0
    user_order_id: U8 = 0
    reduce_only: bool = False
    post_only: PostOnlyParam = PostOnlyParam.None_
    immediate_or_cancel: bool = False
    bit_flags: U8 = 0
    max_ts: I64 | None = None
    trigger_price: U64 | None = None
    trigger_condition: OrderTriggerCondition = OrderTriggerCondition.Above
    oracle_price_offset: I32 | None = None
    auction_duration: U8 | None = None
    auction_start_price: I64 | None = None
    auction_end_price: I64 | None = None

    @classmethod
    def from_params(cls, params: OrderParams) -> OrderParamsFields:
        return cls(**{name: getattr(params, name) for name in _PARAMS_FIELD_NAMES})

    def to_params(self) -> OrderParams:
        return OrderParams(**{name: getattr(self, name) for name in _PARAMS_FIELD_NAMES})


_PARAMS_FIELD_NAMES: Final = tuple(f.name for f in dataclasses.fields(OrderParams))


class IntentMessage(_Message, tag="intent", frozen=True):
    """A signed order intent as a trader broadcast it (unverified: verification is the
    protocol's :func:`protocol.signed_intent.verify_intent`, with the user account)."""

    authority: PubkeyHex
    sub_account_id: U16
    params: OrderParamsFields
    slot: U64
    uuid: UuidHex
    signer: PubkeyHex
    signature: SignatureHex
    received_ts: int = 0

    @classmethod
    def from_intent(
        cls, intent: OrderIntent, signer: bytes, signature: bytes, received_ts: int = 0
    ) -> IntentMessage:
        return cls(
            authority=intent.authority.hex(),
            sub_account_id=intent.sub_account_id,
            params=OrderParamsFields.from_params(intent.params),
            slot=intent.slot,
            uuid=intent.uuid.hex(),
            signer=signer.hex(),
            signature=signature.hex(),
            received_ts=received_ts,
        )

    def to_intent(self) -> OrderIntent:
        return OrderIntent(
            authority=bytes.fromhex(self.authority),
            sub_account_id=self.sub_account_id,
            params=self.params.to_params(),
            slot=self.slot,
            uuid=bytes.fromhex(self.uuid),
        )

    @property
    def signer_bytes(self) -> bytes:
        return bytes.fromhex(self.signer)

    @property
    def signature_bytes(self) -> bytes:
        return bytes.fromhex(self.signature)

    @property
    def market_type(self) -> MarketType:
        return self.params.market_type

    @property
    def market_index(self) -> int:
        return self.params.market_index


class OracleMessage(_Message, tag="oracle", frozen=True):
    """An oracle price (PRICE_PRECISION) published at ``slot``."""

    oracle_id: str
    price: I64
    confidence: U64
    slot: U64


class SlotMessage(_Message, tag="slot", frozen=True):
    """The node's current slot and its unix time (seconds)."""

    slot: U64
    ts: I64


class RecordMessage(_Message, tag="record", frozen=True):
    """A committed protocol record (``protocol.records``); ``payload`` holds its fields with
    bytes as hex, enums as ints and tuples as lists. See :func:`record_to_message`."""

    seq: int
    slot: U64
    kind: str
    payload: dict[str, Any]


class TopOfBook(_Message, tag="top", frozen=True):
    """A DLOB's best bid and ask (PRICE_PRECISION; sizes in base units) at ``slot``, after it
    applied the node's records up to ``seq``. ``None``: that side is empty."""

    market_type: MarketType
    market_index: U16
    slot: U64
    seq: int
    oracle_price: I64
    best_bid: U64 | None = None
    best_ask: U64 | None = None
    best_bid_size: U64 = 0
    best_ask_size: U64 = 0


class UsersMessage(_Message, tag="users", frozen=True):
    """User accounts that changed, as they are at one cut of the node's committed state.

    ``stream`` names the node process that publishes (a new id each time the node starts);
    ``seq`` counts this stream's messages, gap-free from 1, so a subscriber detects a lost one
    and resyncs from ``GET /v1/users`` (which reports the ``seq`` it is consistent with).
    ``slot`` is the node's slot at the cut. ``users``: every account that changed since the
    previous cut, once each, as of this cut (a cut of many accounts spans several messages,
    each with its own ``seq``); empty in a new stream's first message and in heartbeats. Only
    durable state is published: a cut is sent once every transaction in it is journaled."""

    stream: StreamId
    seq: Annotated[int, msgspec.Meta(ge=1)]
    slot: U64
    users: list[User]


class DeadLetter(_Message, tag="deadletter", frozen=True):
    """A payload a reader could not decode, with why (``reason`` is a :class:`DecodeReason`
    value) and the raw bytes."""

    topic: str
    reason: str
    path: str
    detail: str
    payload: bytes
    received_ts: int


Message = (
    OrderEvent
    | IntentMessage
    | OracleMessage
    | SlotMessage
    | RecordMessage
    | TopOfBook
    | UsersMessage
    | DeadLetter
)

TOPIC_MESSAGE: Final[dict[TopicKind, type[_Message]]] = {
    TopicKind.ORDERS: OrderEvent,
    TopicKind.INTENTS: IntentMessage,
    TopicKind.ORACLE: OracleMessage,
    TopicKind.SLOT: SlotMessage,
    TopicKind.RECORDS: RecordMessage,
    TopicKind.DLOB_TOP: TopOfBook,
    TopicKind.USERS: UsersMessage,
    TopicKind.DEADLETTER: DeadLetter,
}
"""The one message type each kind of topic carries."""

_TAGS: Final[dict[str, type[_Message]]] = {
    typing.cast(str, cls.__struct_config__.tag): cls for cls in get_args(Message)
}


# --- errors ----------------------------------------------------------------------------------
class DecodeReason(StrEnum):
    UNKNOWN_TOPIC = "unknown_topic"
    MALFORMED = "malformed"  # not JSON (or not UTF-8)
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TAG = "unknown_tag"
    WRONG_VERSION = "wrong_version"
    TOPIC_MISMATCH = "topic_mismatch"  # a valid message of another type, or another market
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    INVALID_VALUE = "invalid_value"  # wrong JSON type, out of range, bad enum value or pattern


class DecodeError(Exception):
    """A payload that is not a valid message for its topic.

    ``path`` locates the problem in the payload (``$.order.price``; ``$`` for the whole).
    """

    def __init__(self, reason: DecodeReason, topic: str, path: str, detail: str) -> None:
        super().__init__(f"{reason.value} at {path} on {topic}: {detail}")
        self.reason = reason
        self.topic = topic
        self.path = path
        self.detail = detail


# --- encode / decode -------------------------------------------------------------------------
_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[Message]] = msgspec.json.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(topic: str, payload: bytes) -> Message:
    """The message ``payload`` holds, checked against ``topic``; :class:`DecodeError` if not."""
    try:
        parsed = topics.parse(topic)
    except TopicError as exc:
        raise DecodeError(DecodeReason.UNKNOWN_TOPIC, topic, "$", exc.detail) from None
    try:
        message = _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _diagnose(topic, parsed.kind, payload, exc) from None
    if message.v != SCHEMA_VERSION:
        raise DecodeError(
            DecodeReason.WRONG_VERSION,
            topic,
            "$.v",
            f"schema {message.v}, expected {SCHEMA_VERSION}",
        )
    expected = TOPIC_MESSAGE[parsed.kind]
    if type(message) is not expected:
        raise DecodeError(
            DecodeReason.TOPIC_MISMATCH,
            topic,
            "$.type",
            f"{_tag(type(message))!r} on a {parsed.kind.value} topic, expected {_tag(expected)!r}",
        )
    if parsed.market_index is not None and isinstance(message, _MARKET_MESSAGES):
        _check_market(topic, parsed, message)
    return message


_MARKET_MESSAGES: Final = (OrderEvent, IntentMessage, TopOfBook)


def _tag(cls: type[_Message]) -> str:
    return typing.cast(str, cls.__struct_config__.tag)


def _check_market(
    topic: str, parsed: topics.Topic, message: OrderEvent | IntentMessage | TopOfBook
) -> None:
    if (message.market_type, message.market_index) != (parsed.market_type, parsed.market_index):
        raise DecodeError(
            DecodeReason.TOPIC_MISMATCH,
            topic,
            "$",
            f"market {message.market_type.name} {message.market_index} on the topic of "
            f"{parsed.market_type.name if parsed.market_type is not None else '?'} "
            f"{parsed.market_index}",
        )


def _diagnose(topic: str, kind: TopicKind, payload: bytes, exc: Exception) -> DecodeError:
    """Why msgspec refused ``payload``, worked out from the payload's structure (never from
    the text of msgspec's message, which is kept only as the detail)."""
    try:
        obj = msgspec.json.decode(payload)
    except msgspec.DecodeError as bad_json:
        return DecodeError(DecodeReason.MALFORMED, topic, "$", str(bad_json))
    if not isinstance(obj, dict):
        return DecodeError(
            DecodeReason.NOT_AN_OBJECT, topic, "$", f"a JSON {type(obj).__name__}, not an object"
        )
    tag = obj.get("type")
    cls = _TAGS.get(tag) if isinstance(tag, str) else None
    if cls is None:
        return DecodeError(DecodeReason.UNKNOWN_TAG, topic, "$.type", f"type {tag!r}")
    version = obj.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return DecodeError(
            DecodeReason.WRONG_VERSION,
            topic,
            "$.v",
            f"schema {version!r}, expected {SCHEMA_VERSION}",
        )
    if cls is not TOPIC_MESSAGE[kind]:
        return DecodeError(
            DecodeReason.TOPIC_MISMATCH,
            topic,
            "$.type",
            f"{tag!r} on a {kind.value} topic, expected {_tag(TOPIC_MESSAGE[kind])!r}",
        )
    found = _diagnose_fields(cls, obj, "$", skip=frozenset({"type"}))
    if found is not None:
        reason, path, detail = found
        return DecodeError(reason, topic, path, detail)
    return DecodeError(DecodeReason.INVALID_VALUE, topic, "$", str(exc))


def _struct_type(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct class of a field typed ``S`` or ``S | None``."""
    candidates = get_args(tp) if isinstance(tp, UnionType) or get_origin(tp) is Union else (tp,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            return candidate
    return None


def _diagnose_fields(
    cls: type[msgspec.Struct], obj: dict[str, Any], path: str, skip: frozenset[str] = frozenset()
) -> tuple[DecodeReason, str, str] | None:
    fields = msgspec.structs.fields(cls)
    known = {f.encode_name for f in fields} | skip
    for key in obj:
        if key not in known:
            return DecodeReason.UNKNOWN_FIELD, f"{path}.{key}", f"{cls.__name__} has no {key!r}"
    for f in fields:
        field_path = f"{path}.{f.encode_name}"
        if f.encode_name not in obj:
            if f.required:
                return DecodeReason.MISSING_FIELD, field_path, f"{cls.__name__} needs it"
            continue
        value = obj[f.encode_name]
        nested = _struct_type(f.type)
        if nested is not None and isinstance(value, dict):
            found = _diagnose_fields(nested, value, field_path)
            if found is not None:
                return found
            continue
        try:
            msgspec.convert(value, type=f.type, strict=True)
        except msgspec.ValidationError as exc:
            return DecodeReason.INVALID_VALUE, field_path, str(exc)
    return None


# --- protocol records ------------------------------------------------------------------------
def _record_kind(cls: type) -> str:
    """``OrderActionRecord`` -> ``order_action``."""
    name = cls.__name__.removesuffix("Record")
    # split before each capital that starts a word, keeping acronyms whole: LPRecord -> "lp"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


RECORD_TYPES: Final[dict[str, type[Any]]] = {_record_kind(cls): cls for cls in get_args(Record)}
"""Every record type of :data:`protocol.records.Record` by its ``kind`` (topic level)."""


_KIND_BY_TYPE: Final[dict[type[Any], str]] = {cls: kind for kind, cls in RECORD_TYPES.items()}


def record_kind(record: Record) -> str:
    kind = _KIND_BY_TYPE.get(type(record))
    return kind if kind is not None else _record_kind(type(record))


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    # dataclasses.fields() rebuilds its tuple on every call; the node encodes every record
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def record_to_message(sequenced: SequencedRecord) -> RecordMessage:
    record = sequenced.record
    payload = {name: _to_wire(getattr(record, name)) for name in _field_names(type(record))}
    return RecordMessage(
        seq=sequenced.seq, slot=sequenced.slot, kind=record_kind(record), payload=payload
    )


def record_from_message(message: RecordMessage, topic: str = "") -> SequencedRecord:
    """The :class:`SequencedRecord` a :class:`RecordMessage` carries, exactly as the node had it;
    :class:`DecodeError` if the kind is unknown or a field does not fit its type."""
    cls = RECORD_TYPES.get(message.kind)
    if cls is None:
        raise DecodeError(
            DecodeReason.INVALID_VALUE, topic, "$.kind", f"unknown record kind {message.kind!r}"
        )
    record = _from_wire(cls, message.payload, "$.payload", topic)
    return SequencedRecord(seq=message.seq, slot=message.slot, record=record)


def _to_wire(value: object) -> object:
    kind: type[Any] = type(value)
    if kind is int or kind is str or kind is bool or value is None:  # most fields: first
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_to_wire(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _to_wire(getattr(value, name)) for name in _field_names(kind)}
    raise TypeError(f"cannot put a {type(value).__name__} on the bus")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_wire(tp: Any, value: Any, path: str, topic: str) -> Any:
    def bad(detail: str) -> DecodeError:
        return DecodeError(DecodeReason.INVALID_VALUE, topic, path, detail)

    origin = get_origin(tp)
    if origin is Annotated:
        return _from_wire(get_args(tp)[0], value, path, topic)
    if isinstance(tp, UnionType) or origin is Union:
        options = get_args(tp)
        if value is None and NoneType in options:
            return None
        real = [o for o in options if o is not NoneType]
        if len(real) != 1:
            raise TypeError(f"unsupported union {tp!r} in a record")
        return _from_wire(real[0], value, path, topic)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise bad(f"expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _from_wire(args[0], item, f"{path}[{i}]", topic) for i, item in enumerate(value)
            )
        if len(args) != len(value):
            raise bad(f"expected {len(args)} items, got {len(value)}")
        return tuple(
            _from_wire(arg, item, f"{path}[{i}]", topic)
            for i, (arg, item) in enumerate(zip(args, value, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(f"expected a bool, got {type(value).__name__}")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise bad(f"{value!r} is not a {tp.__name__}") from None
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"expected an int, got {type(value).__name__}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad(f"expected a str, got {type(value).__name__}")
        return value
    if tp is bytes:
        if not isinstance(value, str):
            raise bad(f"expected hex, got {type(value).__name__}")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise bad("not hex") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad(f"expected an object, got {type(value).__name__}")
        hints = _hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = set(value) - set(names)
        if unknown:
            raise DecodeError(
                DecodeReason.UNKNOWN_FIELD, topic, f"{path}.{min(unknown)}", tp.__name__
            )
        missing = [n for n in names if n not in value]
        if missing:
            raise DecodeError(
                DecodeReason.MISSING_FIELD, topic, f"{path}.{missing[0]}", tp.__name__
            )
        return tp(**{n: _from_wire(hints[n], value[n], f"{path}.{n}", topic) for n in names})
    raise TypeError(f"unsupported type {tp!r} in a record")
