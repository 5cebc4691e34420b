"""Fakes for the runtime tests: a node that answers from scripts, and small bots."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keepers.bus import topics
from keepers.bus.client import Delivery
from keepers.bus.schemas import OracleMessage, OrderAction, OrderEvent, SlotMessage
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.view import View
from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.instructions.funding import UpdateFundingRate
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import Order, User
from protocol.transaction import Transaction
from protocol.types import MarketType, OrderType, PositionDirection


@dataclass(frozen=True, slots=True)
class FakeTxResult:
    ok: bool
    signature: str = ""
    slot: int | None = None
    records: list[Any] = field(default_factory=list)
    code: int | None = None
    code_name: str | None = None
    detail: str | None = None
    field: str | None = None


def accepted(slot: int = 7, records: list[Any] | None = None) -> FakeTxResult:
    return FakeTxResult(ok=True, signature="ab" * 64, slot=slot, records=records or [])


def rejected(code: ErrorCode, detail: str = "no") -> FakeTxResult:
    return FakeTxResult(ok=False, code=int(code), code_name=code.name, detail=detail)


class TransientNodeError(ConnectionError):
    """What a client raises when the node's connection drops."""


Answer = Any  # a TxResult-like value, an exception to raise, or a function of the raw bytes


class FakeNode:
    """Answers ``send_tx`` / ``simulate`` from scripted queues (default: accepted), and serves
    fixed markets and users. Records every raw transaction it was sent."""

    def __init__(self) -> None:
        self.send_answers: deque[Answer] = deque()
        self.simulate_answers: deque[Answer] = deque()
        self.sent: list[bytes] = []
        self.simulated: list[bytes] = []
        self.current_slot = 100
        self.current_ts = 1_700_000_000
        self.perp: dict[int, PerpMarket] = {}
        self.spot: dict[int, SpotMarket] = {}
        self.users: dict[tuple[bytes, int], User] = {}
        self.reads = 0
        self.fail_reads: BaseException | None = None
        self.send_gate: asyncio.Event | None = None

    async def _answer(self, queue: deque[Answer], raw: bytes) -> Any:
        answer = queue.popleft() if queue else accepted(self.current_slot)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(raw)
        return answer

    async def send_tx(self, raw: bytes) -> Any:
        self.sent.append(raw)
        if self.send_gate is not None:
            await self.send_gate.wait()
        return await self._answer(self.send_answers, raw)

    async def simulate(self, raw: bytes) -> Any:
        self.simulated.append(raw)
        return await self._answer(self.simulate_answers, raw)

    def _read(self) -> None:
        self.reads += 1
        if self.fail_reads is not None:
            raise self.fail_reads

    async def slot(self) -> Clock:
        self._read()
        return Clock(self.current_slot, self.current_ts)

    async def markets(self) -> dict[str, list[int]]:
        self._read()
        return {"perp": sorted(self.perp), "spot": sorted(self.spot)}

    async def perp_market(self, market_index: int) -> PerpMarket | None:
        self._read()
        return self.perp.get(market_index)

    async def spot_market(self, market_index: int) -> SpotMarket | None:
        self._read()
        return self.spot.get(market_index)

    async def user(self, authority: bytes, sub_account_id: int = 0) -> User | None:
        self._read()
        return self.users.get((authority, sub_account_id))


def funding_action(market_index: int = 0, key: object = None, **kw: Any) -> Action:
    return Action(
        instructions=(UpdateFundingRate(market_index=market_index),),
        kind="update_funding_rate",
        dedupe_key=("funding", market_index) if key is None else key,
        **kw,
    )


def parsed(raw: bytes) -> Transaction:
    return Transaction.from_bytes(raw)


class ScriptedBot:
    """A bot whose ``decide`` runs ``script(view)``; it records views and outcomes."""

    def __init__(
        self,
        name: str = "scripted",
        script: Callable[[View], list[Action]] | None = None,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self.name = name
        self.subscriptions = subscriptions or Subscriptions()
        self._script = script or (lambda _view: [])
        self.views: list[View] = []
        self.outcomes: list[Any] = []

    def decide(self, view: View) -> list[Action]:
        self.views.append(view)
        return self._script(view)

    def on_outcome(self, outcome: Any) -> None:
        self.outcomes.append(outcome)


def context(name: str = "scripted", authority: bytes = b"\x01" * 32) -> BotContext:
    return BotContext(name=name, authority=authority)


EVENT_STREAMS = frozenset({Stream.ORDERS, Stream.SLOT, Stream.ORACLE, Stream.INTENTS})


class InstantTimer:
    """Sleeps return at once (after one yield) and move time forward by what was asked."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


CLUSTER = "test"


def slot_delivery(slot: int, ts: int = 1_700_000_000, generation: int = 1) -> Delivery:
    return Delivery(topics.slot(CLUSTER), SlotMessage(slot=slot, ts=ts), generation)


def oracle_delivery(oracle_id: str, price: int, slot: int) -> Delivery:
    message = OracleMessage(oracle_id=oracle_id, price=price, confidence=1, slot=slot)
    return Delivery(topics.oracle(CLUSTER, oracle_id), message, 1)


def order_delivery(
    market_index: int, order_id: int = 1, market_type: MarketType = MarketType.Perp
) -> Delivery:
    order = Order(
        order_id=order_id,
        market_index=market_index,
        market_type=market_type,
        order_type=OrderType.Limit,
        direction=PositionDirection.Long,
        base_asset_amount=10**9,
        slot=1,
        price=100 * 10**6,
    )
    event = OrderEvent.from_order(
        order,
        seq=order_id,
        market_seq=order_id,
        slot=1,
        ts=0,
        action=OrderAction.PLACE,
        authority=b"\x02" * 32,
        sub_account_id=0,
    )
    return Delivery(topics.orders(CLUSTER, market_type, market_index), event, 1)


async def eventually(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    """Until ``predicate()`` holds (``TimeoutError`` after ``seconds``)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 -- watching counters the runtime exposes
            await asyncio.sleep(0.001)
