"""NodeClient: the node's HTTP API from Python (the client side of :mod:`keepers.node`).

Reads go through one :class:`aiohttp.ClientSession` with a connection pool; it keeps no
cookies (the node sets none, and aiohttp's cookie jar cost ~80 us of CPU per request, more
than a third of a small request's client-side cost). Transactions (``POST /v1/tx``,
``/v1/txs``, ``/v1/simulate``) go through a :class:`~keepers.http11.KeepAlivePoster` of the
client's own, which writes a request to its keep-alive connection in one call: the step every
keeper's latency waits on (see :mod:`keepers.http11` for the figures). Both set TCP_NODELAY on
every connection they open (aiohttp through ``aiohttp.tcp_helpers.tcp_nodelay``, asyncio for
the poster; tests read it back), so small requests are not held back by Nagle's algorithm.

Failures, by kind:

* **Rejections** (422) are answers, returned as a :class:`TxResult` with ``ok=False`` and the
  program's error code; never retried (the same bytes would be refused the same way).
* **Transient** failures (the node unreachable, a connection reset, a timeout, 503 while it
  starts or is busy) are retried with jittered exponential backoff
  (:class:`keepers.bus.client.Backoff`), up to ``attempts`` tries, then raised as
  :class:`NodeUnavailableError`. Re-sending a transaction is safe: the node executes an id at
  most once. If an earlier attempt was executed but its answer lost, the retry comes back as
  ``DuplicateTransaction`` with ``attempts > 1``: the transaction *was* accepted.
* Anything else (400, 500, a body that does not decode) is a :class:`NodeError` with the
  status; not retried.

:meth:`NodeClient.send_txs` sends many transactions in one ``POST /v1/txs``
(:mod:`keepers.tx_batch`) and returns one :class:`TxResult` per transaction, in order; the
transactions the node was too busy for are sent again, the same way.

Reads return the protocol's own dataclasses (:mod:`keepers.accounts_json` decodes them), or
``None`` for an account the node does not have (404). :meth:`NodeClient.users_page` reads the
``GET /v1/users`` pages of every account (:class:`UsersPage`; see :mod:`keepers.node_users`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

from keepers.accounts_json import AccountDecodeError, from_builtins
from keepers.bus.client import Backoff
from keepers.bus.schemas import OrderEvent, RecordMessage, record_from_message
from keepers.http11 import KeepAlivePoster, MalformedAnswer
from keepers.tx_batch import join_batch
from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.records import SequencedRecord
from protocol.state import OracleAccount, PerpMarket, SpotMarket, User, UserStats
from protocol.state.user import Order, UserKey
from protocol.types import MarketType

__all__ = [
    "Health",
    "Markets",
    "NodeClient",
    "NodeError",
    "NodeUnavailableError",
    "OrdersSnapshot",
    "TxResult",
    "UsersPage",
]

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=10.0, connect=2.0, sock_read=10.0)
_OCTET: Final = {"Content-Type": "application/octet-stream"}
_MARKET_LEVEL: Final = {MarketType.Perp: "perp", MarketType.Spot: "spot"}


class NodeError(Exception):
    """The node answered something this client cannot use (``status`` 0: no answer)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"node answered {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class NodeUnavailableError(NodeError):
    """The node stayed unreachable or unready through every retry."""


class _TxBody(msgspec.Struct, forbid_unknown_fields=True):
    ok: bool
    signature: str | None = None
    slot: int | None = None
    records: list[RecordMessage] = []
    code: int | None = None
    code_name: str | None = None
    detail: str = ""
    field: str | None = None


class _BatchItem(msgspec.Struct, forbid_unknown_fields=True):
    status: int
    answer: _TxBody


class _BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    results: list[_BatchItem]


class _SnapshotBody(msgspec.Struct, forbid_unknown_fields=True):
    market_type: str
    market_index: int
    market_seq: int
    slot: int
    orders: list[OrderEvent]


class _SlotBody(msgspec.Struct):
    slot: int
    ts: int


class _MarketsBody(msgspec.Struct):
    perp: list[int]
    spot: list[int]


@dataclass(frozen=True, slots=True)
class TxResult:
    """The node's answer to a transaction (or a simulation). ``ok``: accepted (durable, for
    :meth:`NodeClient.send_tx`) with its ``records``; otherwise refused with ``code``.
    ``attempts``: how many sends it took (see the module docstring)."""

    ok: bool
    signature: bytes | None = None
    slot: int | None = None
    records: tuple[RecordMessage, ...] = ()
    code: int | None = None
    code_name: str | None = None
    detail: str = ""
    field: str | None = None
    attempts: int = 1

    @property
    def error_code(self) -> ErrorCode | None:
        if self.code is None:
            return None
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None

    def sequenced_records(self) -> list[SequencedRecord]:
        """The records as the protocol's own values."""
        return [record_from_message(r) for r in self.records]


# A transaction sent again after these is safe: the node executes an id at most once.
_POST_TRANSIENT: Final = (OSError, asyncio.IncompleteReadError)


def _poster_for(
    base_url: str, max_connections: int, connect_timeout: float | None
) -> KeepAlivePoster | None:
    """The keep-alive poster for an ``http://host:port[/prefix]`` node URL (``None`` for any
    other scheme: aiohttp sends those POSTs too)."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname is None:
        return None
    return KeepAlivePoster(
        parts.hostname,
        parts.port or 80,
        base_path=parts.path,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
    )


def _tx_result(parsed: _TxBody, attempts: int) -> TxResult:
    return TxResult(
        ok=parsed.ok,
        signature=bytes.fromhex(parsed.signature) if parsed.signature else None,
        slot=parsed.slot,
        records=tuple(parsed.records),
        code=parsed.code,
        code_name=parsed.code_name,
        detail=parsed.detail,
        field=parsed.field,
        attempts=attempts,
    )


@dataclass(frozen=True, slots=True)
class OrdersSnapshot:
    """Every open order of one market at ``market_seq`` (that market's order-event counter):
    events with ``market_seq`` up to it are reflected, none after."""

    market_type: MarketType
    market_index: int
    market_seq: int
    slot: int
    orders: list[tuple[UserKey, Order]]
    events: list[OrderEvent] = field(default_factory=list)


class UsersPage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One page of ``GET /v1/users``: the accounts at positions ``[offset, offset + len)`` of
    the node's ``total``, consistent with message ``seq`` of the users stream ``stream`` (it
    holds every change up to it); ``next`` is the next page's offset, ``None`` on the last."""

    stream: str
    seq: int
    slot: int
    offset: int
    total: int
    next: int | None
    users: list[User]


@dataclass(frozen=True, slots=True)
class Markets:
    perp: list[int]
    spot: list[int]


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    status: str
    detail: dict[str, Any]


class NodeClient:
    """``async with NodeClient("http://127.0.0.1:8899") as node: await node.slot()``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        attempts: int = 5,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 100,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff or Backoff(initial=0.05, maximum=2.0)
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._sleep = sleep
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._poster = _poster_for(self.base_url, max_connections, timeout.connect)

    async def __aenter__(self) -> NodeClient:
        self.session  # noqa: B018 -- opens the session inside the running loop
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._poster is not None:
            await self._poster.close()

    # --- transport ---------------------------------------------------------------------------
    async def _request(
        self, method: str, path: str, *, data: bytes | None = None, retry_503: bool = True
    ) -> tuple[int, bytes, int]:
        """``(status, body, attempts)``, retrying transient failures."""
        url = self.base_url + path
        last: str = ""
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._backoff.delay(attempt - 1, self._rng))
            try:
                if data is not None and method == "POST" and self._poster is not None:
                    status, body = await self._post(path, data)
                else:
                    async with self.session.request(
                        method, url, data=data, headers=_OCTET if data is not None else None
                    ) as response:
                        body = await response.read()
                        status = response.status
            except (aiohttp.ClientConnectionError, TimeoutError, *_POST_TRANSIENT) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if status == 503 and retry_503:
                last = f"503 {body[:200]!r}"
                continue
            return status, body, attempt + 1
        raise NodeUnavailableError(0, f"{method} {url} failed {self._attempts} times: {last}")

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        poster = self._poster
        if poster is None:
            raise RuntimeError("no poster for this node URL")
        timeout = self._timeout.total or self._timeout.sock_read
        try:
            async with asyncio.timeout(timeout):
                return await poster.post(path, body)
        except MalformedAnswer as exc:
            raise NodeError(0, f"POST {self.base_url}{path}: {exc}") from None

    def _decode(self, kind: type[T], status: int, body: bytes) -> T:
        try:
            return msgspec.json.decode(body, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise NodeError(status, f"undecodable answer: {exc}") from None

    async def _get_account(self, kind: type[T], path: str) -> T | None:
        status, body, _ = await self._request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise NodeError(status, body[:200].decode(errors="replace"))
        try:
            obj = msgspec.json.decode(body)
            return from_builtins(kind, obj)
        except (msgspec.DecodeError, AccountDecodeError) as exc:
            raise NodeError(status, f"undecodable {kind.__name__}: {exc}") from None

    # --- transactions --------------------------------------------------------------------------
    async def send_tx(self, raw: bytes) -> TxResult:
        """Send a signed transaction; accepted means durable on the node."""
        return await self._tx("/v1/tx", raw)

    async def simulate(self, raw: bytes) -> TxResult:
        """Run a transaction without committing it."""
        return await self._tx("/v1/simulate", raw)

    async def send_txs(self, raws: Sequence[bytes]) -> list[TxResult]:
        """Send signed transactions in one ``POST /v1/txs``; one result per transaction, in
        order, each what :meth:`send_tx` would return for it (accepted means durable).

        The batch goes whole or not at all: a batch the node refuses (400/413: framing or a
        limit of :mod:`keepers.tx_batch`; :class:`~keepers.tx_batch.BatchError` before sending
        if this side already sees it) is a :class:`NodeError`, and transient failures of the
        whole request are retried like :meth:`send_tx`'s. Transactions the node answered 503
        (busy) are sent again, in a smaller batch, with backoff, up to ``attempts`` rounds;
        one still refused then (or answered another status, e.g. 500) comes back with
        ``ok=False``, no ``code`` and the node's ``detail``.
        """
        results: list[TxResult | None] = [None] * len(raws)
        todo = list(range(len(raws)))
        sent = 0  # sends before this round (each round may itself retry the whole request)
        for round_ in range(self._attempts):
            if round_:
                await self._sleep(self._backoff.delay(round_ - 1, self._rng))
            body = join_batch([raws[i] for i in todo])
            status, answer, attempts = await self._request("POST", "/v1/txs", data=body)
            if status != 200:
                raise NodeError(status, answer[:200].decode(errors="replace"))
            parsed = self._decode(_BatchBody, status, answer)
            if len(parsed.results) != len(todo):
                raise NodeError(status, f"{len(parsed.results)} answers for {len(todo)} txs")
            sent += attempts
            busy: list[int] = []
            last_round = round_ == self._attempts - 1
            for i, item in zip(todo, parsed.results, strict=True):
                if item.status == 503 and not last_round:
                    busy.append(i)
                else:
                    results[i] = _tx_result(item.answer, sent)
            todo = busy
            if not todo:
                break
        return [r for r in results if r is not None]

    async def _tx(self, path: str, raw: bytes) -> TxResult:
        status, body, attempts = await self._request("POST", path, data=raw)
        if status not in (200, 422):
            raise NodeError(status, body[:200].decode(errors="replace"))
        return _tx_result(self._decode(_TxBody, status, body), attempts)

    # --- reads ---------------------------------------------------------------------------------
    async def slot(self) -> Clock:
        status, body, _ = await self._request("GET", "/v1/slot")
        if status != 200:
            raise NodeError(status, body[:200].decode(errors="replace"))
        parsed = self._decode(_SlotBody, status, body)
        return Clock(parsed.slot, parsed.ts)

    async def oracle(self, oracle_id: str) -> OracleAccount | None:
        return await self._get_account(OracleAccount, f"/v1/oracles/{quote(oracle_id, safe='')}")

    async def user(self, authority: bytes, sub_account_id: int = 0) -> User | None:
        return await self._get_account(User, f"/v1/users/{authority.hex()}/{sub_account_id}")

    async def user_stats(self, authority: bytes) -> UserStats | None:
        return await self._get_account(UserStats, f"/v1/user-stats/{authority.hex()}")

    async def perp_market(self, market_index: int) -> PerpMarket | None:
        return await self._get_account(PerpMarket, f"/v1/markets/perp/{market_index}")

    async def spot_market(self, market_index: int) -> SpotMarket | None:
        return await self._get_account(SpotMarket, f"/v1/markets/spot/{market_index}")

    async def markets(self) -> Markets:
        status, body, _ = await self._request("GET", "/v1/markets")
        if status != 200:
            raise NodeError(status, body[:200].decode(errors="replace"))
        parsed = self._decode(_MarketsBody, status, body)
        return Markets(parsed.perp, parsed.spot)

    async def users_page(self, offset: int = 0, limit: int = 1_000) -> UsersPage:
        """Up to ``limit`` accounts from position ``offset`` of ``GET /v1/users``."""
        status, body, _ = await self._request("GET", f"/v1/users?offset={offset}&limit={limit}")
        if status != 200:
            raise NodeError(status, body[:200].decode(errors="replace"))
        return self._decode(UsersPage, status, body)

    async def orders_snapshot(
        self, market_type: MarketType | str, market_index: int
    ) -> OrdersSnapshot:
        level = market_type if isinstance(market_type, str) else _MARKET_LEVEL[market_type]
        path = f"/v1/orders/snapshot?market_type={level}&market_index={market_index}"
        status, body, _ = await self._request("GET", path)
        if status != 200:
            raise NodeError(status, body[:200].decode(errors="replace"))
        parsed = self._decode(_SnapshotBody, status, body)
        return OrdersSnapshot(
            market_type=MarketType.Perp if parsed.market_type == "perp" else MarketType.Spot,
            market_index=parsed.market_index,
            market_seq=parsed.market_seq,
            slot=parsed.slot,
            orders=[(event.user_key, event.to_order()) for event in parsed.orders],
            events=parsed.orders,
        )

    async def health(self) -> Health:
        """The node's health; never retried (a 503 is the answer)."""
        status, body, _ = await self._request("GET", "/health", retry_503=False)
        try:
            detail = msgspec.json.decode(body)
        except msgspec.DecodeError:
            detail = {}
        if not isinstance(detail, dict):
            detail = {}
        return Health(ok=status == 200, status=str(detail.get("status", status)), detail=detail)
