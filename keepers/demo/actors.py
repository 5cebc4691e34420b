"""What every simulated participant of the demo shares: keys, a view of the market, a sender.

* :func:`demo_keypair` derives every key of a run from its seed (``role`` and ``index`` name
  the participant), so ``--seed`` alone fixes who is who.
* :class:`MarketView` is the participants' picture of the exchange, fed from the bus (the
  node's retained slot and oracle messages): the latest slot, its unix time, the oracle prices.
  Nobody reads the node's memory: the simulated traders see what a remote client would.
* :class:`Sender` signs a transaction for one participant, sends it to the node through
  :class:`~keepers.rpc.NodeClient` and counts the outcome (accepted, or rejected by the
  program's error-code name, or failed in transit) in an :class:`ActorStats`.

Units are the protocol's: prices PRICE_PRECISION, base BASE_PRECISION, quote QUOTE_PRECISION.
Randomness is a ``random.Random`` per participant, seeded from the run's seed, used only for
the participants' choices (never for keys or amounts the protocol checks).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog

from keepers.bus.client import Delivery
from keepers.bus.schemas import OracleMessage, SlotMessage
from keepers.rpc import NodeError, TxResult
from protocol.keys import Keypair
from protocol.transaction import Transaction

_log = structlog.get_logger("keepers.demo")

KEY_DOMAIN = b"drift-keepers-demo/v1"


def demo_keypair(seed: int, role: str, index: int = 0) -> Keypair:
    """The keypair of participant ``role``/``index`` in the run seeded with ``seed``."""
    digest = hashlib.sha256(KEY_DOMAIN + f"/{seed}/{role}/{index}".encode()).digest()
    return Keypair.from_seed(digest)


class TxSender(Protocol):
    """The part of :class:`keepers.rpc.NodeClient` a participant sends with."""

    async def send_tx(self, raw: bytes) -> TxResult: ...


@dataclass(slots=True)
class ActorStats:
    """Outcomes of one group of participants' transactions (traders, makers, the oracle)."""

    accepted: Counter[str] = field(default_factory=Counter)  # by label
    rejected: Counter[str] = field(default_factory=Counter)  # by error-code name
    failed: int = 0  # transport errors: unknown whether committed

    @property
    def sent(self) -> int:
        return sum(self.accepted.values()) + sum(self.rejected.values()) + self.failed


class MarketView:
    """The latest slot and oracle prices as the bus tells them (single writer: :meth:`apply`)."""

    def __init__(self) -> None:
        self.slot = 0
        self.ts = 0
        self.oracles: dict[str, OracleMessage] = {}
        self._changed = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []

    def apply(self, delivery: Delivery) -> None:
        message = delivery.message
        if isinstance(message, SlotMessage):
            self.set_slot(message.slot, message.ts)
        elif isinstance(message, OracleMessage):
            known = self.oracles.get(message.oracle_id)
            if known is None or message.slot >= known.slot:
                self.oracles[message.oracle_id] = message

    def set_slot(self, slot: int, ts: int) -> None:
        if slot <= self.slot:
            return
        self.slot = slot
        self.ts = ts
        ready = [(s, f) for s, f in self._waiters if s <= slot]
        if ready:
            self._waiters = [(s, f) for s, f in self._waiters if s > slot]
            for _, future in ready:
                if not future.done():
                    future.set_result(slot)

    def price(self, oracle_id: str) -> int | None:
        message = self.oracles.get(oracle_id)
        return None if message is None else message.price

    async def wait_for_slot(self, slot: int) -> int:
        """Until the view's slot reaches ``slot``; returns the slot it got to."""
        if self.slot >= slot:
            return self.slot
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((slot, future))
        return await future

    async def next_slot(self) -> int:
        return await self.wait_for_slot(self.slot + 1)


class Sender:
    """Signs, sends and counts one participant group's transactions."""

    def __init__(self, node: TxSender, view: MarketView, stats: ActorStats) -> None:
        self._node = node
        self._view = view
        self.stats = stats

    async def send(
        self, label: str, instructions: Sequence[Any], signers: Sequence[Keypair]
    ) -> TxResult | None:
        """The node's answer (``ok`` or a rejection), or ``None`` if it could not be sent."""
        tx = Transaction.sign(tuple(instructions), self._view.slot, list(signers))
        try:
            result = await self._node.send_tx(tx.to_bytes())
        except (NodeError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats.failed += 1
            _log.debug("demo transaction failed", label=label, error=repr(exc))
            return None
        if result.ok:
            self.stats.accepted[label] += 1
        else:
            self.stats.rejected[result.code_name or str(result.code)] += 1
            _log.debug(
                "demo transaction rejected",
                label=label,
                code=result.code_name,
                detail=result.detail,
            )
        return result


def wall_ns() -> int:
    """Monotonic nanoseconds: intent-to-fill latency is measured on this clock."""
    return time.monotonic_ns()
