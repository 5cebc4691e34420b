"""An in-process broker and transport with the same interface, for unit tests and one-process runs.

:class:`InProcessBroker` keeps MQTT's semantics that the bus relies on:

* filters with ``+`` and ``#`` (:func:`keepers.bus.topics.matches`), one copy per client
  however many of its filters match;
* retained messages: the last retained payload per topic is sent to each new matching
  subscription; an empty retained payload deletes it;
* shared subscriptions ``$share/{group}/{filter}``: each message goes to one member of the
  group, round-robin in the order members subscribed; retained messages are not sent to
  shared subscriptions (as MQTT 5 specifies);
* a second connection with a client id that is connected takes over (the first is dropped);
* clean sessions only: a dropped client loses its subscriptions.

Delivery is synchronous and in publish order. Tests simulate failures with :meth:`drop`
(connection lost) and :attr:`accepting` (connections refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from keepers.bus import topics
from keepers.bus.transport import (
    BufferedTransport,
    TransportDisconnected,
    TransportError,
    check_qos,
)


@dataclass(slots=True)
class _Group:
    members: list[str] = field(default_factory=list)
    next: int = 0


class InProcessBroker:
    def __init__(self) -> None:
        self.accepting = True
        self._clients: dict[str, InProcessTransport] = {}
        self._filters: dict[str, dict[str, int]] = {}  # client id -> filter -> qos
        self._groups: dict[tuple[str, str], _Group] = {}  # (group, filter) -> members
        self._retained: dict[str, bytes] = {}
        self.published = 0

    def transport(self, client_id: str) -> InProcessTransport:
        return InProcessTransport(self, client_id)

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def retained(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def drop(self, client_id: str) -> None:
        """Lose the client's connection, as a network failure would."""
        client = self._clients.get(client_id)
        if client is not None:
            self._remove(client_id)
            client._lose(ConnectionResetError(f"{client_id} dropped by the broker"))

    def drop_all(self) -> None:
        for client_id in list(self._clients):
            self.drop(client_id)

    # --- called by InProcessTransport --------------------------------------------------------
    def _connect(self, client: InProcessTransport) -> None:
        if not self.accepting:
            raise TransportError("the in-process broker refuses connections")
        if client.client_id in self._clients:
            self.drop(client.client_id)
        self._clients[client.client_id] = client
        self._filters[client.client_id] = {}

    def _remove(self, client_id: str) -> None:
        self._clients.pop(client_id, None)
        self._filters.pop(client_id, None)
        for group in self._groups.values():
            if client_id in group.members:
                group.members.remove(client_id)

    def _subscribe(
        self, client: InProcessTransport, topic_filters: Sequence[str], qos: int
    ) -> None:
        for topic_filter in topic_filters:
            topics.validate_filter(topic_filter)
        for topic_filter in topic_filters:
            group_name, plain = topics.split_shared(topic_filter)
            if group_name is not None:
                group = self._groups.setdefault((group_name, plain), _Group())
                if client.client_id not in group.members:
                    group.members.append(client.client_id)
                continue
            self._filters[client.client_id][plain] = qos
            for topic, payload in self._retained.items():
                if topics.matches(plain, topic):
                    client._deliver(topic, payload)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if not topic or "+" in topic or "#" in topic:
            raise topics.TopicError(topic, "cannot publish to a filter")
        self.published += 1
        if retain:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
        for client_id, filters in self._filters.items():
            if any(topics.matches(f, topic) for f in filters):
                self._clients[client_id]._deliver(topic, payload)
        for (_name, plain), group in self._groups.items():
            if group.members and topics.matches(plain, topic):
                member = group.members[group.next % len(group.members)]
                group.next += 1
                self._clients[member]._deliver(topic, payload)


class InProcessTransport(BufferedTransport):
    name = "inprocess"

    def __init__(self, broker: InProcessBroker, client_id: str) -> None:
        super().__init__(client_id)
        self._broker = broker
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        if self._connected:
            await self.close()
        self._broker._connect(self)
        self._connected = True
        self._opened()

    async def close(self) -> None:
        was_connected = self._connected
        if was_connected:
            self._connected = False
            self._broker._remove(self.client_id)
        self._closing()
        if was_connected:
            self._connection_lost(None)

    def _lose(self, cause: BaseException) -> None:
        self._connected = False
        self._connection_lost(cause)

    def _live(self) -> None:
        if not self._connected:
            raise TransportDisconnected(f"{self.client_id} is not connected")

    async def subscribe(self, topic_filters: Sequence[str], qos: int = 1) -> None:
        check_qos(qos)
        self._live()
        self._broker._subscribe(self, topic_filters, qos)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.publish_nowait(topic, payload, qos, retain)
        if qos == 1:
            # A real QoS 1 publish waits a round trip; yielding here lets readers run likewise.
            await asyncio.sleep(0)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Delivered before returning: the acknowledgement is already there."""
        check_qos(qos)
        self._live()
        self._broker._publish(topic, payload, retain)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked
