"""Topic names: the exact strings, their parsing back, and MQTT filter matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepers.bus import topics
from keepers.bus.topics import Topic, TopicError, TopicKind
from protocol.types import MarketType


def test_every_topic_has_its_documented_name() -> None:
    assert topics.orders("main", MarketType.Perp, 0) == "keepers/v1/main/orders/perp/0"
    assert topics.orders("main", MarketType.Spot, 12) == "keepers/v1/main/orders/spot/12"
    assert topics.intents("main", 2) == "keepers/v1/main/intents/perp/2"
    assert topics.oracle("main", "SOL/USD") == "keepers/v1/main/oracle/SOL%2FUSD"
    assert topics.slot("main") == "keepers/v1/main/slot"
    assert topics.records("main", "funding_rate") == "keepers/v1/main/records/funding_rate"
    assert topics.dlob_top("main", MarketType.Perp, 1) == "keepers/v1/main/dlob/top/perp/1"
    assert topics.deadletter("main") == "keepers/v1/main/deadletter"
    assert topics.users("main") == "keepers/v1/main/users"
    assert topics.shared("fillers", topics.all_orders("main")) == (
        "$share/fillers/keepers/v1/main/orders/#"
    )
    assert topics.all_orders("main", MarketType.Spot) == "keepers/v1/main/orders/spot/+"
    assert topics.all_intents("main") == "keepers/v1/main/intents/perp/+"
    assert topics.all_oracles("main") == "keepers/v1/main/oracle/+"
    assert topics.all_records("main") == "keepers/v1/main/records/+"


def test_parse_reads_back_what_the_builders_wrote() -> None:
    assert topics.parse("keepers/v1/c/orders/spot/3") == Topic(
        "c", TopicKind.ORDERS, market_type=MarketType.Spot, market_index=3
    )
    assert topics.parse("keepers/v1/c/intents/perp/0") == Topic(
        "c", TopicKind.INTENTS, market_type=MarketType.Perp, market_index=0
    )
    assert topics.parse("keepers/v1/c/oracle/SOL%2FUSD") == Topic(
        "c", TopicKind.ORACLE, oracle_id="SOL/USD"
    )
    assert topics.parse("keepers/v1/c/slot") == Topic("c", TopicKind.SLOT)
    assert topics.parse("keepers/v1/c/records/curve") == Topic(
        "c", TopicKind.RECORDS, record_kind="curve"
    )
    assert topics.parse("keepers/v1/c/dlob/top/perp/7") == Topic(
        "c", TopicKind.DLOB_TOP, market_type=MarketType.Perp, market_index=7
    )
    assert topics.parse("keepers/v1/c/deadletter") == Topic("c", TopicKind.DEADLETTER)
    assert topics.parse("keepers/v1/c/users") == Topic("c", TopicKind.USERS)


@pytest.mark.parametrize(
    "topic",
    [
        "keepers/v2/c/slot",  # another topic version
        "other/v1/c/slot",
        "keepers/v1/c/orders/perp",  # missing market index
        "keepers/v1/c/orders/future/1",  # unknown market type
        "keepers/v1/c/orders/perp/01",  # leading zero: two spellings of one market
        "keepers/v1/c/orders/perp/-1",
        "keepers/v1/c/orders/perp/x",
        "keepers/v1/c/orders/perp/\u0661",  # a non-ASCII digit
        "keepers/v1/c/intents/spot/1",  # intents are perp only
        "keepers/v1/c/slot/extra",
        "keepers/v1/c/trades",
        "keepers/v1//slot",  # empty cluster
        "keepers/v1",
    ],
)
def test_parse_rejects_topics_outside_the_layout(topic: str) -> None:
    with pytest.raises(TopicError) as info:
        topics.parse(topic)
    assert info.value.topic == topic


@pytest.mark.parametrize("cluster", ["", "a/b", "a+", "#", "50%"])
def test_builders_reject_levels_that_would_change_the_layout(cluster: str) -> None:
    with pytest.raises(TopicError):
        topics.slot(cluster)


def test_builders_reject_negative_market_indexes_and_empty_oracle_ids() -> None:
    with pytest.raises(TopicError):
        topics.orders("c", MarketType.Perp, -1)
    with pytest.raises(TopicError):
        topics.oracle("c", "")
    with pytest.raises(TopicError):
        topics.records("c", "a/b")


@given(st.text(min_size=1, max_size=40))
def test_any_oracle_id_survives_the_topic(oracle_id: str) -> None:
    topic = topics.oracle("c", oracle_id)
    assert topic.count("/") == 4  # one level, whatever the id holds
    assert "+" not in topic and "#" not in topic
    assert topics.parse(topic).oracle_id == oracle_id


@given(st.sampled_from(list(MarketType)), st.integers(0, 2**16 - 1))
def test_market_topics_round_trip(market_type: MarketType, market_index: int) -> None:
    parsed = topics.parse(topics.orders("c", market_type, market_index))
    assert (parsed.market_type, parsed.market_index) == (market_type, market_index)
    parsed = topics.parse(topics.dlob_top("c", market_type, market_index))
    assert (parsed.kind, parsed.market_type, parsed.market_index) == (
        TopicKind.DLOB_TOP,
        market_type,
        market_index,
    )


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/#", "a", True),  # '#' includes the parent level (MQTT 3.1.1, 4.7.1.2)
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("+/+", "a/b", True),
        ("+", "a/b", False),
        ("a/+/+", "a//b", True),  # an empty level is a level
        ("#", "$SYS/uptime", False),  # wildcards never match $-topics at the first level
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
    ],
)
def test_filter_matching_follows_mqtt(topic_filter: str, topic: str, expected: bool) -> None:
    assert topics.matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["a/#/b", "a/b#", "a/b+/c", "", "$share/g/"])
def test_invalid_filters_are_rejected(bad: str) -> None:
    with pytest.raises(TopicError):
        topics.validate_filter(bad)


def test_shared_subscriptions_split_into_group_and_filter() -> None:
    assert topics.split_shared("$share/g1/a/+/c") == ("g1", "a/+/c")
    assert topics.split_shared("a/+/c") == (None, "a/+/c")
    with pytest.raises(TopicError):
        topics.shared("a/b", "x")
    with pytest.raises(TopicError):
        topics.split_shared("$share//a")
