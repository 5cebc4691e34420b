"""Every topic name on the bus, in one place: builders, a parser and MQTT filter matching.

Layout (``v1`` is the topic schema version; a breaking change to a topic or a payload moves
everything to ``v2`` so old and new readers never see each other's messages)::

    keepers/v1/{cluster}/orders/{perp|spot}/{market_index}   order events (QoS 1)
    keepers/v1/{cluster}/intents/perp/{market_index}         signed order intents (QoS 1)
    keepers/v1/{cluster}/oracle/{oracle_id}                  oracle prices (retained)
    keepers/v1/{cluster}/slot                                the node's slot (retained)
    keepers/v1/{cluster}/records/{kind}                      other protocol records (QoS 1)
    keepers/v1/{cluster}/dlob/top/{perp|spot}/{market_index} top of book (at most once a slot)
    keepers/v1/{cluster}/users                               changed user accounts (QoS 1)
    keepers/v1/{cluster}/deadletter                          payloads a reader could not decode

A topic level cannot contain ``/``, ``+`` or ``#``. Oracle ids do (``"SOL/USD"``), so the
oracle level is percent-encoded (``SOL%2FUSD``) and :func:`parse` decodes it back; cluster
names and record kinds must be plain (no ``/ + # %``, not empty), else :class:`TopicError`.

Replicas of a bot share work through MQTT shared subscriptions, :func:`shared`
(``$share/{group}/{filter}``): the broker hands each message to one member of the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from urllib.parse import quote, unquote

from protocol.types import MarketType

ROOT = "keepers"
TOPIC_VERSION = "v1"
SHARE_PREFIX = "$share"

_FORBIDDEN_IN_LEVEL = frozenset("/+#%\x00")


class TopicError(ValueError):
    """A topic or a topic level that the bus does not accept; ``topic`` is what was given."""

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"{detail}: {topic!r}")
        self.topic = topic
        self.detail = detail


class TopicKind(StrEnum):
    ORDERS = "orders"
    INTENTS = "intents"
    ORACLE = "oracle"
    SLOT = "slot"
    RECORDS = "records"
    DLOB_TOP = "dlob/top"
    USERS = "users"
    DEADLETTER = "deadletter"


_MARKET_LEVEL = {MarketType.Perp: "perp", MarketType.Spot: "spot"}
_LEVEL_MARKET = {level: market for market, level in _MARKET_LEVEL.items()}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic. Fields that the kind does not have are ``None``."""

    cluster: str
    kind: TopicKind
    market_type: MarketType | None = None
    market_index: int | None = None
    oracle_id: str | None = None
    record_kind: str | None = None


def _level(value: str, what: str) -> str:
    if not value or any(ch in _FORBIDDEN_IN_LEVEL for ch in value):
        raise TopicError(value, f"{what} must be a non-empty topic level without / + # %")
    return value


def _market_index(value: int) -> str:
    if value < 0:
        raise TopicError(str(value), "market_index must be >= 0")
    return str(value)


def base(cluster: str) -> str:
    """``keepers/v1/{cluster}``: the prefix of every topic of one cluster."""
    return f"{ROOT}/{TOPIC_VERSION}/{_level(cluster, 'cluster')}"


def orders(cluster: str, market_type: MarketType, market_index: int) -> str:
    return f"{base(cluster)}/orders/{_MARKET_LEVEL[market_type]}/{_market_index(market_index)}"


def intents(cluster: str, market_index: int) -> str:
    """Signed intents are perp orders only (the protocol rejects spot intents)."""
    return f"{base(cluster)}/intents/perp/{_market_index(market_index)}"


def oracle(cluster: str, oracle_id: str) -> str:
    if not oracle_id:
        raise TopicError(oracle_id, "oracle_id must not be empty")
    return f"{base(cluster)}/oracle/{quote(oracle_id, safe='')}"


def slot(cluster: str) -> str:
    return f"{base(cluster)}/slot"


def records(cluster: str, kind: str) -> str:
    return f"{base(cluster)}/records/{_level(kind, 'record kind')}"


def dlob_top(cluster: str, market_type: MarketType, market_index: int) -> str:
    market = _MARKET_LEVEL[market_type]
    return f"{base(cluster)}/dlob/top/{market}/{_market_index(market_index)}"


def users(cluster: str) -> str:
    """The node's one stream of changed user accounts (one sequence, so one topic)."""
    return f"{base(cluster)}/users"


def deadletter(cluster: str) -> str:
    return f"{base(cluster)}/deadletter"


# --- filters ---------------------------------------------------------------------------------
def all_orders(cluster: str, market_type: MarketType | None = None) -> str:
    """Every order event of the cluster, or of one market type."""
    if market_type is None:
        return f"{base(cluster)}/orders/#"
    return f"{base(cluster)}/orders/{_MARKET_LEVEL[market_type]}/+"


def all_intents(cluster: str) -> str:
    return f"{base(cluster)}/intents/perp/+"


def all_oracles(cluster: str) -> str:
    return f"{base(cluster)}/oracle/+"


def all_records(cluster: str) -> str:
    return f"{base(cluster)}/records/+"


def shared(group: str, topic_filter: str) -> str:
    """``$share/{group}/{filter}``: each message goes to one subscriber of the group."""
    return f"{SHARE_PREFIX}/{_level(group, 'share group')}/{topic_filter}"


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``(group, filter)`` of a shared subscription, ``(None, filter)`` for a plain one."""
    if not topic_filter.startswith(SHARE_PREFIX + "/"):
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise TopicError(topic_filter, "a shared subscription is $share/{group}/{filter}")
    return parts[1], parts[2]


# --- parsing ---------------------------------------------------------------------------------
def _parse_index(topic: str, value: str) -> int:
    # isdigit() would accept non-ASCII digits that int() reads too; topics are ASCII.
    if not (value.isascii() and value.isdigit()) or (len(value) > 1 and value[0] == "0"):
        raise TopicError(topic, "market_index must be a decimal number without leading zeros")
    return int(value)


def _parse_level(topic: str, value: str, what: str) -> str:
    if not value or any(ch in _FORBIDDEN_IN_LEVEL for ch in value):
        raise TopicError(topic, f"{what} must be a non-empty topic level without / + # %")
    return value


def _parse_market(topic: str, value: str) -> MarketType:
    market = _LEVEL_MARKET.get(value)
    if market is None:
        raise TopicError(topic, "market type must be perp or spot")
    return market


@lru_cache(maxsize=4096)
def parse(topic: str) -> Topic:
    """The :class:`Topic` a concrete (wildcard-free) topic names; :class:`TopicError` otherwise.

    Cached: a reader sees the same few hundred topics over and over.
    """
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != ROOT or levels[1] != TOPIC_VERSION:
        raise TopicError(topic, f"not a {ROOT}/{TOPIC_VERSION} topic")
    cluster, kind, rest = levels[2], levels[3], levels[4:]
    _parse_level(topic, cluster, "cluster")
    if kind == "orders" and len(rest) == 2:
        return Topic(
            cluster,
            TopicKind.ORDERS,
            market_type=_parse_market(topic, rest[0]),
            market_index=_parse_index(topic, rest[1]),
        )
    if kind == "intents" and len(rest) == 2 and rest[0] == "perp":
        return Topic(
            cluster,
            TopicKind.INTENTS,
            market_type=MarketType.Perp,
            market_index=_parse_index(topic, rest[1]),
        )
    if kind == "oracle" and len(rest) == 1 and rest[0]:
        return Topic(cluster, TopicKind.ORACLE, oracle_id=unquote(rest[0]))
    if kind == "slot" and not rest:
        return Topic(cluster, TopicKind.SLOT)
    if kind == "records" and len(rest) == 1:
        record_kind = _parse_level(topic, rest[0], "record kind")
        return Topic(cluster, TopicKind.RECORDS, record_kind=record_kind)
    if kind == "dlob" and len(rest) == 3 and rest[0] == "top":
        return Topic(
            cluster,
            TopicKind.DLOB_TOP,
            market_type=_parse_market(topic, rest[1]),
            market_index=_parse_index(topic, rest[2]),
        )
    if kind == "users" and not rest:
        return Topic(cluster, TopicKind.USERS)
    if kind == "deadletter" and not rest:
        return Topic(cluster, TopicKind.DEADLETTER)
    raise TopicError(topic, "unknown topic layout")


def validate_filter(topic_filter: str) -> None:
    """MQTT's rules for a subscription filter: ``#`` only as the whole last level, ``+`` only
    as a whole level, not empty."""
    _group, plain = split_shared(topic_filter)
    if not plain:
        raise TopicError(topic_filter, "empty filter")
    levels = plain.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(topic_filter, "# must be the whole last level")
        if "+" in level and level != "+":
            raise TopicError(topic_filter, "+ must be a whole level")


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a concrete ``topic`` matches an MQTT ``topic_filter`` (without a ``$share``
    prefix). ``a/#`` matches ``a`` too; wildcards at the first level never match a topic that
    starts with ``$`` (MQTT 3.1.1 section 4.7.2)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
