"""The one executor every bot's actions go through: sign, maybe simulate, send, record.

For each :class:`~keepers.runtime.bot.Action`:

1. **Dedupe.** An action whose ``(bot, dedupe_key)`` is already in flight is not sent
   (:attr:`Status.SKIPPED`, counted as skipped ``duplicate``).
2. **Sign** with the bot's keypair (:meth:`protocol.transaction.Transaction.sign`) at a fresh
   ``recent_slot``: the runtime's latest slot at signing time. A bot that built an instruction
   the codec cannot encode gets the exception (a bug in the bot: the supervisor restarts it).
3. **Simulate** through the node when the action asks for it, and always in dry-run mode. A
   rejected simulation is the outcome (never sent); in dry-run mode an accepted one is the
   outcome too (:attr:`Status.SIMULATED`): dry-run never sends.
4. **Send** (``NodeClient.send_tx``) and record the outcome by error code name.

The three kinds of failure are kept apart:

* a **rejection** (the program's error code) is a value: :class:`Outcome` with ``code`` and
  ``code_name``, counted in ``keepers_tx_rejected_total{code=...}``; never retried here (the bot
  decides what a code means to it);
* **transient I/O** (connection refused or reset, timeouts, HTTP 5xx/429: :func:`is_transient`)
  is retried with jittered exponential backoff, re-sending the *same signed bytes*, so a
  transaction that was committed but whose answer was lost is not executed twice: the node's
  replay protection answers ``DuplicateTransaction``, which after a retry means "accepted".
  Out of retries, the outcome is :attr:`Status.FAILED` (unknown whether it committed);
* anything else escapes: a broken invariant, for the supervisor.

Rewards: the sum of ``filler_reward`` over the accepted transaction's records that name the
bot's authority as ``filler`` (fills and triggers), QUOTE_PRECISION.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
import structlog

from keepers.bus.client import Backoff
from keepers.logging import bind_correlation
from keepers.rpc import NodeError, NodeUnavailableError
from keepers.runtime.bot import Action
from keepers.runtime.metrics import RuntimeMetrics
from keepers.runtime.timing import SystemTimer, Timer
from protocol.error_codes import ErrorCode
from protocol.keys import Keypair
from protocol.transaction import Transaction

_log = structlog.get_logger("keepers.executor")


class TxResultLike(Protocol):
    """The fields of ``keepers.rpc.TxResult`` the executor reads."""

    @property
    def ok(self) -> bool: ...

    @property
    def signature(self) -> object: ...

    @property
    def slot(self) -> object: ...

    @property
    def records(self) -> object: ...

    @property
    def code(self) -> object: ...

    @property
    def code_name(self) -> object: ...

    @property
    def detail(self) -> object: ...

    @property
    def field(self) -> object: ...


class NodeSender(Protocol):
    """The part of ``keepers.rpc.NodeClient`` the executor uses."""

    async def send_tx(self, raw: bytes) -> TxResultLike: ...

    async def simulate(self, raw: bytes) -> TxResultLike: ...


class Status(StrEnum):
    ACCEPTED = "accepted"  # committed by the node
    REJECTED = "rejected"  # the program refused it (``code``), in a send or a simulation
    SIMULATED = "simulated"  # dry run: the simulation was accepted; nothing was sent
    FAILED = "failed"  # transient errors outlived the retries: unknown whether committed
    SKIPPED = "skipped"  # an action with the same dedupe key was in flight


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    status: Status
    correlation_id: str
    code: int | None = None
    code_name: str | None = None
    detail: str = ""
    field: str | None = None
    signature: bytes = b""  # the transaction id (its first signature)
    slot: int | None = None  # the slot it executed at (accepted)
    attempts: int = 0  # requests made to the node for this action
    simulated: bool = False  # the outcome is a simulation's (a rejected simulation or dry run)
    records: tuple[Any, ...] = ()
    reward: int = 0  # QUOTE_PRECISION

    @property
    def ok(self) -> bool:
        return self.status in (Status.ACCEPTED, Status.SIMULATED)

    @property
    def error_code(self) -> ErrorCode | None:
        """The code as the protocol's enum (``None`` if absent or not one of ours)."""
        if self.code is None:
            return None
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


_RETRY_BACKOFF = Backoff(initial=0.05, maximum=1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``attempts`` calls of the node client per action; backoff between them
    (seconds). The client retries transient failures itself first (a few quick attempts), so
    these are the slower, outer retries of an action whose node stayed away."""

    attempts: int = 3
    backoff: Backoff = _RETRY_BACKOFF

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")


def is_transient(exc: BaseException) -> bool:
    """Whether a node call's exception is transient I/O worth retrying.

    :class:`~keepers.rpc.NodeUnavailableError` is (the client retried already and the node
    stayed away); any other :class:`~keepers.rpc.NodeError` is not (the node answered
    something unusable: a bug, for the supervisor). An exception may say so itself with a
    boolean ``transient`` attribute; one carrying an HTTP ``status`` is transient for 5xx and
    429; otherwise connection errors and timeouts are."""
    if isinstance(exc, NodeUnavailableError):
        return True
    if isinstance(exc, NodeError):
        return False
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status >= 500 or status == 429
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


def reward_from_records(records: Sequence[Any], authority: bytes) -> int:
    """Sum of ``filler_reward`` over records whose ``filler`` is ``(authority, _)``.

    Records are bus :class:`~keepers.bus.schemas.RecordMessage` (``payload`` dict, bytes as
    hex) or protocol record dataclasses."""
    total = 0
    hex_authority = authority.hex()
    for record in records:
        payload = getattr(record, "payload", record)
        if isinstance(payload, Mapping):
            filler = payload.get("filler")
            reward = payload.get("filler_reward")
        else:
            filler = getattr(payload, "filler", None)
            reward = getattr(payload, "filler_reward", None)
        if not isinstance(reward, int) or not isinstance(filler, list | tuple) or not filler:
            continue
        who = filler[0]
        if who in (authority, hex_authority):
            total += reward
    return total


class Executor:
    def __init__(
        self,
        node: NodeSender,
        metrics: RuntimeMetrics,
        *,
        slot: Callable[[], int],
        dry_run: bool = False,
        retry: RetryPolicy | None = None,
        timer: Timer | None = None,
        rng: random.Random | None = None,
        max_concurrency: int = 16,
        on_accepted: Callable[[str], None] | None = None,
    ) -> None:
        self._node = node
        self._metrics = metrics
        self._slot = slot
        self.dry_run = dry_run
        self._retry = retry or RetryPolicy()
        self._timer = timer or SystemTimer()
        self._rng = rng or random.Random()  # noqa: S311 -- backoff jitter, not cryptography
        self._limit = asyncio.Semaphore(max_concurrency)
        self._on_accepted = on_accepted
        self._in_flight: set[tuple[str, Hashable]] = set()
        self._ids = itertools.count(1)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def execute(self, bot: str, keypair: Keypair, actions: Sequence[Action]) -> list[Outcome]:
        """Run a tick's actions concurrently (at most ``max_concurrency`` at once); the
        outcomes come back in action order."""
        if not actions:
            return []
        if len(actions) == 1:
            return [await self.execute_one(bot, keypair, actions[0])]
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self.execute_one(bot, keypair, action), name=f"execute-{bot}-{i}")
                for i, action in enumerate(actions)
            ]
        return [task.result() for task in tasks]

    async def execute_one(self, bot: str, keypair: Keypair, action: Action) -> Outcome:
        correlation_id = action.correlation_id or f"{bot}-{next(self._ids)}"
        self._metrics.actions.labels(bot, action.kind).inc()
        key = (bot, action.dedupe_key)
        with bind_correlation(correlation_id, bot=bot, kind=action.kind):
            if key in self._in_flight:
                self._metrics.actions_skipped.labels(bot, action.kind, "duplicate").inc()
                _log.debug("action skipped: same dedupe key in flight")
                return Outcome(action, Status.SKIPPED, correlation_id, detail="duplicate")
            self._in_flight.add(key)
            try:
                async with self._limit:
                    outcome = await self._run(bot, keypair, action, correlation_id)
            finally:
                self._in_flight.discard(key)
            self._record(bot, outcome)
        return outcome

    async def _run(
        self, bot: str, keypair: Keypair, action: Action, correlation_id: str
    ) -> Outcome:
        recent_slot = self._slot()
        tx = Transaction.sign(action.instructions, recent_slot, [keypair])
        raw = tx.to_bytes()
        attempts = 0
        if self.dry_run or action.simulate:
            result, used = await self._call(self._node.simulate, raw, bot, action.kind)
            attempts += used
            if isinstance(result, BaseException):
                return self._failed(action, correlation_id, tx, attempts, result)
            name = _code_name(result)
            self._metrics.tx_simulated.labels(bot, action.kind, "ok" if result.ok else name).inc()
            if not result.ok or self.dry_run:
                return self._from_result(
                    action, correlation_id, tx, result, attempts, simulated=True, authority=b""
                )
        self._metrics.tx_sent.labels(bot, action.kind).inc()
        _log.debug("transaction sent", recent_slot=recent_slot, signature=tx.signature.hex())
        sent = self._timer.monotonic()
        result, used = await self._call(self._node.send_tx, raw, bot, action.kind)
        self._metrics.tx_seconds.labels(bot, action.kind).observe(self._timer.monotonic() - sent)
        attempts += used
        if isinstance(result, BaseException):
            return self._failed(action, correlation_id, tx, attempts, result)
        if (
            not result.ok
            and (used > 1 or _client_attempts(result) > 1)
            and result.code == ErrorCode.DuplicateTransaction
        ):
            # An earlier attempt (ours or the client's own retry) was committed and its
            # answer lost.
            return Outcome(
                action,
                Status.ACCEPTED,
                correlation_id,
                detail="committed by an earlier attempt",
                signature=tx.signature,
                attempts=attempts,
            )
        return self._from_result(
            action,
            correlation_id,
            tx,
            result,
            attempts,
            simulated=False,
            authority=keypair.pubkey,
        )

    async def _call(
        self, call: Callable[[bytes], Any], raw: bytes, bot: str, kind: str
    ) -> tuple[TxResultLike | BaseException, int]:
        """``call(raw)`` with retries on transient errors: (result or last error, requests)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result: TxResultLike = await call(raw)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt >= self._retry.attempts:
                    return exc, attempt
                delay = self._retry.backoff.delay(attempt - 1, self._rng)
                _log.info(
                    "transient node error; retrying",
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=repr(exc),
                )
                self._metrics.tx_retries.labels(bot, kind).inc()
                await self._timer.sleep(delay)
                continue
            return result, attempt

    def _failed(
        self,
        action: Action,
        correlation_id: str,
        tx: Transaction,
        attempts: int,
        error: BaseException,
    ) -> Outcome:
        return Outcome(
            action,
            Status.FAILED,
            correlation_id,
            detail=repr(error),
            signature=tx.signature,
            attempts=attempts,
        )

    def _from_result(
        self,
        action: Action,
        correlation_id: str,
        tx: Transaction,
        result: TxResultLike,
        attempts: int,
        *,
        simulated: bool,
        authority: bytes,
    ) -> Outcome:
        slot = result.slot if isinstance(result.slot, int) else None
        records_value = result.records
        records = tuple(records_value) if isinstance(records_value, list | tuple) else ()
        if result.ok:
            status = Status.SIMULATED if simulated else Status.ACCEPTED
            return Outcome(
                action,
                status,
                correlation_id,
                signature=tx.signature,
                slot=slot,
                attempts=attempts,
                simulated=simulated,
                records=records,
                reward=0 if simulated else reward_from_records(records, authority),
            )
        code = result.code if isinstance(result.code, int) else None
        detail = result.detail if isinstance(result.detail, str) else ""
        field_name = result.field if isinstance(result.field, str) else None
        return Outcome(
            action,
            Status.REJECTED,
            correlation_id,
            code=code,
            code_name=_code_name(result),
            detail=detail,
            field=field_name,
            signature=tx.signature,
            attempts=attempts,
            simulated=simulated,
        )

    def _record(self, bot: str, outcome: Outcome) -> None:
        kind = outcome.action.kind
        metrics = self._metrics
        if outcome.status is Status.ACCEPTED:
            metrics.tx_accepted.labels(bot, kind).inc()
            if outcome.reward:
                metrics.rewards.labels(bot).inc(outcome.reward)
            _log.info(
                "transaction accepted",
                slot=outcome.slot,
                reward=outcome.reward,
                expected_reward=outcome.action.expected_reward,
            )
            if self._on_accepted is not None:
                self._on_accepted(bot)
        elif outcome.status is Status.REJECTED:
            if not outcome.simulated:
                metrics.tx_rejected.labels(bot, kind, outcome.code_name or "unknown").inc()
            _log.debug(
                "transaction rejected",
                code=outcome.code,
                code_name=outcome.code_name,
                detail=outcome.detail,
                field=outcome.field,
                simulated=outcome.simulated,
            )
        elif outcome.status is Status.FAILED:
            metrics.tx_failed.labels(bot, kind).inc()
            _log.warning("transaction outcome unknown", attempts=outcome.attempts)


def _client_attempts(result: TxResultLike) -> int:
    """How many requests the node client made for this answer (it retries on its own)."""
    attempts = getattr(result, "attempts", 1)
    return attempts if isinstance(attempts, int) else 1


def _code_name(result: TxResultLike) -> str:
    if isinstance(result.code_name, str) and result.code_name:
        return result.code_name
    if isinstance(result.code, int):
        try:
            return ErrorCode(result.code).name
        except ValueError:
            return str(result.code)
    return "unknown"
