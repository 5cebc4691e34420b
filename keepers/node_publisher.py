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

:class:`Publisher` sends them, QoS 1, in commit order. It never blocks its callers:
:meth:`Publisher.publish` appends to a bounded queue and, while connected, writes straight
through to the connection (:meth:`~keepers.bus.client.BusClient.publish_raw_nowait`) as long
as fewer than ``window`` messages await their PUBACK. No task hop and no task per message: a
commit's messages are on the wire before the node answers the requests it holds
(:meth:`keepers.node.Node._on_commit` publishes first), so a subscriber waiting for a fill does
not also wait for the HTTP answer to be written (on loopback that write wakes the client,
which can take the CPU from the node for a fraction of a millisecond). One task,
:meth:`Publisher.run`, takes the PUBACKs in order and refills the window. When the broker is
unreachable or a publish fails, everything written and not acknowledged goes back to the
front of the queue and waits for the bus client to reconnect; messages may then reach the
broker twice (QoS 1 is at least once; subscribers drop what they have by sequence number).

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
    """The bounded, ordered outgoing queue, written through to the connection (module
    docstring)."""

    def __init__(
        self,
        bus: BusClient,
        *,
        max_pending: int = 100_000,
        window: int = 256,
        observe_lag: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        retry_delay: float = 0.05,
    ) -> None:
        if max_pending < 1 or window < 1:
            raise ValueError("max_pending and window must be at least 1")
        self.stats = PublisherStats()
        self._bus = bus
        self._max_pending = max_pending
        self._window = window
        self._observe_lag = observe_lag
        self._monotonic = monotonic
        self._retry_delay = retry_delay
        self._queue: deque[Outgoing] = deque()  # not written yet
        self._retained: dict[str, Outgoing] = {}  # topic -> its latest message
        self._refresh: dict[str, None] = {}  # retained topics to (re)send, in order
        self._unacked: deque[tuple[Outgoing, asyncio.Future[None]]] = deque()  # written
        self._epoch = 0  # moves whenever the unacknowledged are taken back to be sent again
        self._held = False  # a write or an acknowledgement failed: wait for the connection
        self._failure: BaseException | None = None  # a bug met while writing, for run()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_drop_warning = -1e9
        bus.add_connect_listener(self._on_connect)

    @property
    def depth(self) -> int:
        """Messages not written yet (queued, and retained values to send again)."""
        return len(self._queue) + len(self._refresh)

    @property
    def unacknowledged(self) -> int:
        """Messages written whose PUBACK has not come yet."""
        return len(self._unacked)

    def publish(self, items: Iterable[Outgoing]) -> None:
        """Queue ``items`` (in commit order) and write what the window has room for; never
        waits. Drops the oldest past the bound."""
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
        self._write()

    def publish_retained(self, item: Outgoing) -> None:
        """Remember ``item`` as its topic's latest value and send it now (not queued: a value
        replaced before it could be sent is never sent)."""
        item.committed_at = self._monotonic()
        self._retained[item.topic] = item
        self._refresh[item.topic] = None
        self._write()

    def _write(self) -> None:
        """Write what waits, in order (retained values to refresh first), while fewer than
        ``window`` messages await their PUBACK, unless the connection is down."""
        self._idle.clear()
        self._wake.set()
        unacked = self._unacked
        if self._held or self._failure is not None or not self._bus.is_connected:
            self.stats.depth = self.depth
            return
        send = self._bus.publish_raw_nowait
        queue = self._queue
        refresh = self._refresh
        while (refresh or queue) and len(unacked) < self._window:
            if refresh:
                topic = next(iter(refresh))
                del refresh[topic]
                item = self._retained[topic]
            else:
                item = queue.popleft()
            try:
                ack = send(item.topic, item.payload, qos=1, retain=item.retain)
            except TransportError:
                self._put_back([item])
                self._held = True
                break
            except Exception as exc:  # a bug (e.g. a bad topic): run() raises it
                self._put_back([item])
                self._failure = exc
                break
            unacked.append((item, ack))
        self.stats.depth = self.depth

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
        # What the old connection did not acknowledge goes again, first; then every retained
        # value (a broker without persistence forgot them if it restarted).
        self._take_back()
        for topic in self._retained:
            self._refresh[topic] = None
        self._held = False
        self._write()

    def _take_back(self) -> None:
        """Every written, unacknowledged message back to the front of the line, in order."""
        if not self._unacked:
            return
        self._epoch += 1
        unsent = []
        for item, ack in self._unacked:
            unsent.append(item)
            ack.add_done_callback(_retrieve)  # failed with the connection; no one awaits it
        self._unacked.clear()
        self._put_back(unsent)

    async def wait_idle(self) -> None:
        """Until everything queued so far was acknowledged (bound it with a timeout)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Take the acknowledgements in order, and send again after a loss, until cancelled."""
        unacked = self._unacked
        while True:
            if self._failure is not None:
                raise self._failure
            if not unacked:
                if not self._queue and not self._refresh:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # something waits and nothing is in flight: the connection is (or was) down
                await self._bus.wait_connected()
                self._held = False
                self._write()
                if not unacked:
                    await asyncio.sleep(self._retry_delay)
                continue
            item, ack = unacked[0]
            epoch = self._epoch
            try:
                await ack
            except TransportError:
                if epoch != self._epoch:
                    continue  # a reconnect took it back already
                self._take_back()
                self._held = True
                self.stats.failures += 1
                # the bus client notices the loss and reconnects; wait_connected() waits for it
                await asyncio.sleep(self._retry_delay)
                continue
            if epoch != self._epoch:
                continue  # taken back meanwhile: it is sent again
            unacked.popleft()
            self.stats.published += 1
            if self._observe_lag is not None:
                self._observe_lag(self._monotonic() - item.committed_at)
            if self._queue or self._refresh:
                self._write()

    def _put_back(self, unsent: list[Outgoing]) -> None:
        queued = [item for item in unsent if item is not self._retained.get(item.topic)]
        for item in unsent:
            if item.retain and item is self._retained.get(item.topic):
                self._refresh[item.topic] = None
        self._queue.extendleft(reversed(queued))
        while len(self._queue) > self._max_pending:
            self._drop_oldest()


def _retrieve(ack: asyncio.Future[None]) -> None:
    """Mark a dropped acknowledgement's outcome as seen (asyncio logs unseen exceptions)."""
    if not ack.cancelled():
        ack.exception()
