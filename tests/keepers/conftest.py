"""Fixtures for the keepers tests: a real MQTT broker of the tests' own.

``mosquitto_broker`` starts the real ``mosquitto`` binary on a free port with the project's
configuration (``docker/mosquitto.conf`` with the listener changed), so tests never touch a
broker someone else runs on 1883. Only when no binary exists does it fall back to the embedded
amqtt broker: the tests then run against amqtt rather than being skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from keepers.bus.brokers import EmbeddedBroker, MosquittoBroker, RunningBroker, find_mosquitto


@pytest_asyncio.fixture
async def mosquitto_broker() -> AsyncIterator[RunningBroker]:
    broker: RunningBroker = MosquittoBroker() if find_mosquitto() is not None else EmbeddedBroker()
    async with broker:
        yield broker


@pytest_asyncio.fixture
async def mosquitto(mosquitto_broker: RunningBroker) -> str:
    """The URL (``mqtt://127.0.0.1:PORT``) of a broker started for this test."""
    return mosquitto_broker.url
