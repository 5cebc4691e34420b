"""What a bot sees: a read-only :class:`View` per tick, cut from the runtime's market state.

The runtime keeps one :class:`MarketState` per process, with two writers that never overlap
(both run on the one event loop, neither awaits mid-update):

* the bus dispatcher applies slot and oracle messages as they arrive (:meth:`MarketState.apply`);
* the :class:`AccountRefresher` replaces the cached market accounts and the bots' own user
  accounts with fresh copies from the node, on an interval and on request (after a bot's
  transaction is accepted, its accounts changed).

Before each tick the supervisor cuts a :class:`View` (:meth:`MarketState.view`): the latest
slot, the node's unix time of that slot, oracle prices, market accounts, the bot's own users,
the DLOB (``book`` of a :class:`DlobSource`), and the bus events that arrived since the bot's last
tick. The view's mappings are read-only copies; the account objects in them are replaced,
never mutated, by the refresher, and bots must not mutate them either (they are plain protocol
dataclasses, so nothing stops a bot but this rule). The DLOB is the live book: it only changes
between ticks' awaits, so within one synchronous ``decide`` it is consistent.

Units are the protocol's: slots, unix seconds, prices at PRICE_PRECISION. ``View.now`` is the
runtime's monotonic time in seconds (the injected :class:`~keepers.runtime.timing.Timer`), for
bots' own TTLs (a filler throttling an order it just tried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from keepers.bus.client import Delivery
from keepers.bus.schemas import OracleMessage, SlotMessage
from keepers.runtime.timing import SystemTimer, Timer, wait_event_or_timeout
from protocol.clock import Clock
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import User, UserKey

if TYPE_CHECKING:
    from keepers.dlob_feed import DlobReader

_log = structlog.get_logger("keepers.runtime")


class DlobSource(Protocol):
    """Anything holding a live DLOB: :class:`keepers.dlob_feed.DlobFeed`, whose ``book`` is
    the book's query methods only."""

    @property
    def book(self) -> DlobReader: ...


class NodeReader(Protocol):
    """The reads of :class:`keepers.rpc.NodeClient` the account cache uses (``None``: the
    node has no such account)."""

    async def slot(self) -> Clock: ...

    async def markets(self) -> Any: ...

    async def perp_market(self, market_index: int) -> PerpMarket | None: ...

    async def spot_market(self, market_index: int) -> SpotMarket | None: ...

    async def user(self, authority: bytes, sub_account_id: int = 0) -> User | None: ...


@dataclass(frozen=True, slots=True)
class View:
    bot: str
    authority: bytes
    tick: int  # this bot's tick number, from 1
    slot: int
    ts: int  # unix seconds of ``slot`` (the node's clock)
    now: float  # runtime monotonic seconds
    oracles: Mapping[str, OracleMessage]
    perp_markets: Mapping[int, PerpMarket]
    spot_markets: Mapping[int, SpotMarket]
    users: Mapping[int, User]  # the bot's own accounts by sub_account_id
    events: tuple[Delivery, ...]  # bus messages since the last tick, in arrival order
    dlob: DlobReader | None = None
    dry_run: bool = False

    def user(self, sub_account_id: int = 0) -> User | None:
        return self.users.get(sub_account_id)

    def user_key(self, sub_account_id: int = 0) -> UserKey:
        return (self.authority, sub_account_id)

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData | None:
        """The latest price of ``oracle_id`` with ``delay`` = slots since it was published."""
        message = self.oracles.get(oracle_id)
        if message is None:
            return None
        return OraclePriceData(
            price=message.price,
            confidence=message.confidence,
            delay=max(0, self.slot - message.slot),
        )

    def perp_oracle(self, market_index: int) -> OraclePriceData | None:
        market = self.perp_markets.get(market_index)
        return None if market is None else self.oracle_price_data(market.amm.oracle)

    def spot_oracle(self, market_index: int) -> OraclePriceData | None:
        market = self.spot_markets.get(market_index)
        return None if market is None else self.oracle_price_data(market.oracle)


class MarketState:
    """The runtime's latest slot, oracle prices and cached accounts (single-loop writers)."""

    def __init__(self, timer: Timer | None = None) -> None:
        self._timer = timer or SystemTimer()
        self.slot = 0
        self.ts = 0
        self.slot_advanced_at: float | None = None  # monotonic time the slot last went up
        self.oracles: dict[str, OracleMessage] = {}
        self.perp_markets: dict[int, PerpMarket] = {}
        self.spot_markets: dict[int, SpotMarket] = {}
        self.users: dict[UserKey, User] = {}
        self.slot_seen = asyncio.Event()

    def set_slot(self, slot: int, ts: int) -> None:
        """Slots only move forward (a retained or replayed older slot is ignored)."""
        if self.slot_seen.is_set() and slot <= self.slot:
            return
        self.slot = slot
        self.ts = ts
        self.slot_advanced_at = self._timer.monotonic()
        self.slot_seen.set()

    def apply(self, delivery: Delivery) -> None:
        message = delivery.message
        if isinstance(message, SlotMessage):
            self.set_slot(message.slot, message.ts)
        elif isinstance(message, OracleMessage):
            known = self.oracles.get(message.oracle_id)
            if known is None or message.slot >= known.slot:
                self.oracles[message.oracle_id] = message

    def slot_age(self) -> float | None:
        """Seconds since the slot last advanced (``None``: no slot seen yet)."""
        if self.slot_advanced_at is None:
            return None
        return self._timer.monotonic() - self.slot_advanced_at

    def view(
        self,
        *,
        bot: str,
        authority: bytes,
        tick: int,
        sub_account_ids: Iterable[int],
        events: tuple[Delivery, ...] = (),
        dlob: DlobReader | None = None,
        dry_run: bool = False,
    ) -> View:
        users = {
            sub: user
            for sub in sub_account_ids
            if (user := self.users.get((authority, sub))) is not None
        }
        return View(
            bot=bot,
            authority=authority,
            tick=tick,
            slot=self.slot,
            ts=self.ts,
            now=self._timer.monotonic(),
            oracles=MappingProxyType(dict(self.oracles)),
            perp_markets=MappingProxyType(dict(self.perp_markets)),
            spot_markets=MappingProxyType(dict(self.spot_markets)),
            users=MappingProxyType(users),
            events=events,
            dlob=dlob,
            dry_run=dry_run,
        )


def _is_not_found(exc: BaseException) -> bool:
    """The node answered 404 (the client's error carries the HTTP status)."""
    return getattr(exc, "status", None) == 404 or getattr(exc, "status_code", None) == 404


def _field(result: Any, name: str) -> Any:
    """``result.name`` or ``result[name]`` (``NodeClient.markets`` answers a dataclass)."""
    if isinstance(result, Mapping):
        return result[name]
    return getattr(result, name)


class AccountRefresher:
    """Keeps :class:`MarketState`'s accounts fresh from the node: every ``interval`` seconds
    and whenever :meth:`request` is called. A failed refresh (node down, timeout) keeps the
    previous copies, is logged (throttled to one line per failure streak) and retried at the
    next interval: stale accounts are a transient condition, not a crash."""

    def __init__(
        self,
        node: NodeReader,
        state: MarketState,
        *,
        interval: float = 1.0,
        timeout: float = 5.0,
        timer: Timer | None = None,
    ) -> None:
        self._node = node
        self._state = state
        self._interval = interval
        self._timeout = timeout
        self._timer = timer or SystemTimer()
        self._wanted = asyncio.Event()
        self.user_keys: set[UserKey] = set()
        self.refreshes = 0
        self.failures = 0
        self._failing = False

    def watch_users(self, keys: Iterable[UserKey]) -> None:
        self.user_keys.update(keys)

    def request(self) -> None:
        """Refresh as soon as the running loop gets to it."""
        self._wanted.set()

    async def refresh_once(self) -> None:
        """Fetch the slot (if the bus has not given one yet), every market and every watched
        user; install them all at once. Raises what the node client raised."""
        node = self._node
        async with asyncio.timeout(self._timeout):
            if not self._state.slot_seen.is_set():
                clock = await node.slot()
                self._state.set_slot(clock.slot, clock.unix_timestamp)
            listing = await node.markets()
            perp_indexes = [int(i) for i in _field(listing, "perp")]
            spot_indexes = [int(i) for i in _field(listing, "spot")]
            perps = await asyncio.gather(*(node.perp_market(i) for i in perp_indexes))
            spots = await asyncio.gather(*(node.spot_market(i) for i in spot_indexes))
            keys = sorted(self.user_keys)
            users = await asyncio.gather(
                *(node.user(key[0], key[1]) for key in keys), return_exceptions=True
            )
        fresh: dict[UserKey, User] = {}
        for key, user in zip(keys, users, strict=True):
            if isinstance(user, User):
                fresh[key] = user
            elif isinstance(user, BaseException) and not _is_not_found(user):
                raise user
            # A user the node does not know yet (``None``: not initialised) is absent.
        # A market listed but gone by the time it was read (``None``) is left out.
        self._state.perp_markets = {
            i: m for i, m in zip(perp_indexes, perps, strict=True) if m is not None
        }
        self._state.spot_markets = {
            i: m for i, m in zip(spot_indexes, spots, strict=True) if m is not None
        }
        self._state.users = fresh
        self.refreshes += 1

    async def run(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transient: keep the old copies, retry next interval
                self.failures += 1
                if not self._failing:
                    _log.warning("account refresh failed", error=repr(exc))
                self._failing = True
            else:
                if self._failing:
                    _log.info("account refresh recovered", failures=self.failures)
                self._failing = False
            await wait_event_or_timeout(self._wanted, self._interval, self._timer)
            self._wanted.clear()
