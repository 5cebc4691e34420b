"""What the node puts on the bus after each commit, and the queue that gets it there.

:class:`EventBuilder` turns an executed transaction's records into wire messages, in record
order, at execution time (on the sequencer, so its counters advance in journal order):

* every record -> a :class:`~keepers.bus.schemas.RecordMessage` on ``records/{kind}`` (its JSON
  is also what the HTTP answer carries, encoded once);
* an ``OrderActionRecord`` -> an :class:`~keepers.bus.schemas.OrderEvent` on
  ``orders/{perp|spot}/{market_index}``, with ``seq`` the record's global sequence number and
  ``market_seq`` that market's own counter (1, 2, 3, ... over its order events only). The order
  is the copy the record carries (see :class:`protocol.records.OrderActionRecord`);
* an ``OracleUpdateRecord`` -> a retained :class:`~keepers.bus.schemas.OracleMessage` on
  ``oracle/{oracle_id}``.

The counters are a function of the journal alone: :meth:`EventBuilder.observe` counts an
executed transaction without building anything, which is how a restart restores them by
re-executing the journal's entries (see :func:`keepers.node.restore_market_seqs`).

:class:`Publisher` sends them, QoS 1, in commit order, from one task. It never blocks its
callers: :meth:`Publisher.publish` appends to a bounded queue and returns. The task takes up to
``batch`` messages at a time, issues them together (the transport keeps their order on the
connection) and waits for every PUBACK before the next batch. When the broker is unreachable
or a publish fails, the batch goes back to the front of the queue and waits for the bus
client to reconnect; messages may then reach the broker twice (QoS 1 is at least once;
subscribers drop what they have by sequence number).

At the bound (``max_pending`` messages held, e.g. a long broker outage), the *oldest* message is
dropped for each new one and counted (``dropped``); subscribers see the gap in ``market_seq`` /
``seq`` and resync from the node's order snapshot, which is the design's recovery path for
any loss. Retained topics never lose their latest value: the last payload of each (slot, every
oracle) is remembered and re-sent whenever one of its messages was dropped and after every
reconnect (a broker without persistence forgets retained messages when it restarts). The slot
message is not queued at all, only remembered: a slot that was never sent is not worth sending
late. A re-sent retained value can briefly precede an older queued message of the same topic;
the newest is always sent last.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import structlog

from keepers.bus import topics
from keepers.bus.client import BusClient
from keepers.bus.schemas import (
    OracleMessage,
    OrderAction,
    OrderEvent,
    SlotMessage,
    encode,
    record_to_message,
)
from keepers.bus.transport import TransportError
from keepers.node_metrics import PublisherStats
from protocol.clock import Clock
from protocol.program import Executed
from protocol.records import OracleUpdateRecord, OrderActionRecord
from protocol.state.user import Order
from protocol.types import MarketType

__all__ = ["Built", "EventBuilder", "Outgoing", "Publisher"]

log = structlog.get_logger(__name__)

MarketKey = tuple[MarketType, int]


@dataclass(slots=True)
class Outgoing:
    """One message for the broker: its topic, encoded payload, whether it is retained, and
    when it was committed (``time.monotonic``; publish lag is measured from it)."""

    topic: str
    payload: bytes
    retain: bool = False
    committed_at: float = 0.0


@dataclass(slots=True)
class Built:
    """One transaction's messages: the record JSONs (for the HTTP answer) and what to publish."""

    records: list[msgspec.Raw]
    outgoing: list[Outgoing] = field(default_factory=list)


def _order_from_record(record: OrderActionRecord) -> Order:
    """The order an action record describes. Records carry a copy of the order; one built by
    hand (older code) has only the record's fields, which are enough to place or remove it."""
    if record.order is not None:
        return record.order
    return Order(
        order_id=record.order_id,
        market_index=record.market_index,
        market_type=record.market_type,
        order_type=record.order_type,
        direction=record.direction,
        base_asset_amount=record.base_asset_amount,
        slot=record.slot,
        price=record.price,
        base_asset_amount_filled=record.base_asset_amount_filled,
    )


class EventBuilder:
    """Per-market order-event counters and the messages of each executed transaction."""

    def __init__(self, cluster: str, market_seqs: dict[MarketKey, int] | None = None) -> None:
        topics.base(cluster)  # checks the name once: TopicError now, not on the first commit
        self._cluster = cluster
        self._market_seqs: dict[MarketKey, int] = dict(market_seqs or {})
        self._order_topics: dict[MarketKey, str] = {}
        self._record_topics: dict[str, str] = {}

    @property
    def market_seqs(self) -> dict[MarketKey, int]:
        return dict(self._market_seqs)

    def market_seq(self, market_type: MarketType, market_index: int) -> int:
        """The market's last order-event number (0: none yet)."""
        return self._market_seqs.get((market_type, market_index), 0)

    def observe(self, executed: Executed) -> None:
        """Count ``executed``'s order events (a restart re-executing the journal)."""
        seqs = self._market_seqs
        for sequenced in executed.records:
            record = sequenced.record
            if type(record) is OrderActionRecord:
                key = (record.market_type, record.market_index)
                seqs[key] = seqs.get(key, 0) + 1

    @staticmethod
    def record_payloads(executed: Executed) -> list[msgspec.Raw]:
        """The record JSONs alone (a simulation: no counter moves, nothing published)."""
        return [msgspec.Raw(encode(record_to_message(r))) for r in executed.records]

    def build(self, executed: Executed, *, publish: bool) -> Built:
        """``executed``'s record JSONs and, if ``publish``, its bus messages; advances the
        counters either way."""
        built = Built(records=[])
        seqs = self._market_seqs
        for sequenced in executed.records:
            record = sequenced.record
            message = record_to_message(sequenced)
            payload = encode(message)
            built.records.append(msgspec.Raw(payload))
            if type(record) is OrderActionRecord:
                key = (record.market_type, record.market_index)
                market_seq = seqs[key] = seqs.get(key, 0) + 1
                if publish:
                    event = OrderEvent.from_order(
                        _order_from_record(record),
                        seq=sequenced.seq,
                        market_seq=market_seq,
                        slot=record.slot,
                        ts=record.ts,
                        action=OrderAction(record.action),
                        authority=record.authority,
                        sub_account_id=record.sub_account_id,
                    )
                    built.outgoing.append(Outgoing(self._orders_topic(key), encode(event)))
            elif publish and type(record) is OracleUpdateRecord:
                oracle = OracleMessage(
                    oracle_id=record.oracle_id,
                    price=record.price,
                    confidence=record.confidence,
                    slot=record.slot,
                )
                topic = topics.oracle(self._cluster, record.oracle_id)
                built.outgoing.append(Outgoing(topic, encode(oracle), retain=True))
            if publish:
                built.outgoing.append(Outgoing(self._records_topic(message.kind), payload))
        return built

    def slot_message(self, clock: Clock) -> Outgoing:
        payload = encode(SlotMessage(slot=clock.slot, ts=clock.unix_timestamp))
        return Outgoing(topics.slot(self._cluster), payload, retain=True)

    def _orders_topic(self, key: MarketKey) -> str:
        topic = self._order_topics.get(key)
        if topic is None:
            topic = self._order_topics[key] = topics.orders(self._cluster, key[0], key[1])
        return topic

    def _records_topic(self, kind: str) -> str:
        topic = self._record_topics.get(kind)
        if topic is None:
            topic = self._record_topics[kind] = topics.records(self._cluster, kind)
        return topic


class Publisher:
    """The bounded, ordered outgoing queue and the task that drains it (module docstring)."""

    def __init__(
        self,
        bus: BusClient,
        *,
        max_pending: int = 100_000,
        batch: int = 256,
        observe_lag: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        retry_delay: float = 0.05,
    ) -> None:
        if max_pending < 1 or batch < 1:
            raise ValueError("max_pending and batch must be at least 1")
        self.stats = PublisherStats()
        self._bus = bus
        self._max_pending = max_pending
        self._batch = batch
        self._observe_lag = observe_lag
        self._monotonic = monotonic
        self._retry_delay = retry_delay
        self._queue: deque[Outgoing] = deque()
        self._retained: dict[str, Outgoing] = {}  # topic -> its latest message
        self._refresh: dict[str, None] = {}  # retained topics to (re)send, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_drop_warning = -1e9
        bus.add_connect_listener(self._on_connect)

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._refresh)

    def publish(self, items: Iterable[Outgoing]) -> None:
        """Queue ``items`` (in commit order); never waits. Drops the oldest past the bound."""
        now = self._monotonic()
        queue = self._queue
        stats = self.stats
        for item in items:
            item.committed_at = now
            if item.retain:
                self._retained[item.topic] = item
            queue.append(item)
            stats.queued += 1
            if len(queue) > self._max_pending:
                self._drop_oldest()
        stats.depth = self.depth
        self._signal()

    def publish_retained(self, item: Outgoing) -> None:
        """Remember ``item`` as its topic's latest value and send it soon (not queued)."""
        item.committed_at = self._monotonic()
        self._retained[item.topic] = item
        self._refresh[item.topic] = None
        self.stats.depth = self.depth
        self._signal()

    def _signal(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _drop_oldest(self) -> None:
        dropped = self._queue.popleft()
        self.stats.dropped += 1
        if dropped.retain:
            self._refresh[dropped.topic] = None
        now = self._monotonic()
        if now - self._last_drop_warning >= 5.0:
            self._last_drop_warning = now
            log.warning(
                "node.publish_backlog_full",
                max_pending=self._max_pending,
                dropped=self.stats.dropped,
                bus_connected=self._bus.is_connected,
            )

    def _on_connect(self, generation: int) -> None:
        for topic in self._retained:
            self._refresh[topic] = None
        self._signal()

    async def wait_idle(self) -> None:
        """Until everything queued so far was acknowledged (bound it with a timeout)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Publish until cancelled."""
        while True:
            if not self._queue and not self._refresh:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._bus.wait_connected()
            batch = self._take()
            sent = await self._send(batch)
            if sent < len(batch):
                self._put_back(batch[sent:])
                self.stats.failures += 1
                # the bus client notices the loss and reconnects; wait_connected() waits for it
                await asyncio.sleep(self._retry_delay)
            self.stats.depth = self.depth

    def _take(self) -> list[Outgoing]:
        batch = [self._retained[topic] for topic in self._refresh]
        self._refresh.clear()
        queue = self._queue
        for _ in range(min(self._batch, len(queue))):
            batch.append(queue.popleft())
        return batch

    def _put_back(self, unsent: list[Outgoing]) -> None:
        queued = [item for item in unsent if item is not self._retained.get(item.topic)]
        for item in unsent:
            if item.retain and item is self._retained.get(item.topic):
                self._refresh[item.topic] = None
        self._queue.extendleft(reversed(queued))
        while len(self._queue) > self._max_pending:
            self._drop_oldest()

    async def _send(self, batch: list[Outgoing]) -> int:
        """Publish ``batch`` together; how many from the start were acknowledged."""
        bus = self._bus
        results = await asyncio.gather(
            *(bus.publish_raw(o.topic, o.payload, qos=1, retain=o.retain) for o in batch),
            return_exceptions=True,
        )
        now = self._monotonic()
        sent = 0
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, TransportError):
                    raise result
                break
            sent += 1
        self.stats.published += sent
        observe = self._observe_lag
        if observe is not None:
            for item in batch[:sent]:
                observe(now - item.committed_at)
        return sent
