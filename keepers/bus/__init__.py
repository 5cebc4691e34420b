"""The message bus every daemon and bot uses: MQTT topics, typed payloads, a resilient client.

* :mod:`keepers.bus.topics`: every topic name (versioned), builders and a parser.
* :mod:`keepers.bus.schemas`: msgspec payload structs, :func:`encode` / :func:`decode`.
* :mod:`keepers.bus.transport`: the small :class:`Transport` interface; implementations over
  gmqtt, aiomqtt and an in-process broker (:mod:`keepers.bus.inprocess`) for tests.
* :mod:`keepers.bus.client`: :class:`BusClient` (reconnect, re-subscribe, bounded ingress,
  dead letters).
* :mod:`keepers.bus.brokers`: a Mosquitto subprocess or an embedded amqtt broker.

:data:`DEFAULT_TRANSPORT` is the faster MQTT client as measured by
``benchmarks/mqtt_transports.py`` on the same stream (50,000 QoS 1 order events of ~490 bytes
from a local Mosquitto, 2-core machine): gmqtt received 89,700 msg/s at 5.9 us of CPU per
message, aiomqtt 15,300 msg/s at 40 us (5.9x the rate, 6.8x less CPU); QoS 1 round trip p50
0.046 ms against 0.155 ms. ``make_transport("aiomqtt", ...)`` selects the other; both pass the
same integration tests (``tests/keepers/test_bus_mqtt.py``).
"""

from __future__ import annotations

from typing import Any, Final

from keepers.bus.aiomqtt_transport import AiomqttTransport
from keepers.bus.client import Backoff, BusClient, BusStats, Delivery
from keepers.bus.gmqtt_transport import GmqttTransport
from keepers.bus.schemas import DecodeError, DecodeReason, Message, decode, encode
from keepers.bus.transport import (
    Transport,
    TransportDisconnected,
    TransportError,
    parse_broker_url,
)

TRANSPORTS: Final = ("gmqtt", "aiomqtt")
DEFAULT_TRANSPORT: Final = "gmqtt"


def make_transport(name: str | None, url: str, client_id: str, **options: Any) -> Transport:
    """A transport to the broker at ``url`` (``mqtt://host:port``) by client name
    (``None``: :data:`DEFAULT_TRANSPORT`). ``options`` go to the transport's constructor
    (``tcp_nodelay``, ``clean_session``, ``keepalive``, ``connect_timeout``, ...)."""
    chosen = DEFAULT_TRANSPORT if name is None else name
    if chosen == "gmqtt":
        return GmqttTransport(url, client_id, **options)
    if chosen == "aiomqtt":
        return AiomqttTransport(url, client_id, **options)
    raise ValueError(f"unknown MQTT transport {chosen!r}; choose one of {', '.join(TRANSPORTS)}")


__all__ = [
    "DEFAULT_TRANSPORT",
    "TRANSPORTS",
    "Backoff",
    "BusClient",
    "BusStats",
    "DecodeError",
    "DecodeReason",
    "Delivery",
    "Message",
    "Transport",
    "TransportDisconnected",
    "TransportError",
    "decode",
    "encode",
    "make_transport",
    "parse_broker_url",
]
