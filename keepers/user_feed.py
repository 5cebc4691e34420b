"""Every user account, kept current from the node: a paged snapshot over HTTP, then the bus.

:class:`UserFeed` holds a copy of the node's ``ProgramState.users`` for the bots of a keeper
process that watch every user (the liquidator, the PnL and LP settlers): it loads
``GET /v1/users`` page by page (through a :class:`UsersLoader`, e.g.
:class:`keepers.rpc.NodeClient`), then applies the node's users stream
(:class:`~keepers.bus.schemas.UsersMessage` on ``keepers/v1/{cluster}/users``; see
:mod:`keepers.node_users` for what the node publishes and when). Each consuming bot gets its
own :class:`UserCursor` (:meth:`UserFeed.cursor`), whose ``changed_users()`` returns the
accounts that changed since its previous call (all of them the first time, and after each
resync): structurally the ``UserSource`` protocol of ``bots.margin_view``.

Ingress. The feed consumes its own :class:`~keepers.bus.client.BusClient` (the users stream
is bulky and must not hold up the order events a filler waits for): that client's bounded
queue is the one queue, and the feed's writer task its one consumer and the only code that
changes the accounts. Payloads that do not decode are counted and dead-lettered by the bus
client at ingress (:attr:`UserFeed.malformed`); any other message on that client is counted
(``ignored``). Snapshot loads run in a task of their own and hand their result to the writer.

Sequencing (``stream``: the node process's stream id; ``seq``: gap-free from 1 per stream):

* in sync, a message of the current stream with ``seq == last + 1`` is applied; ``<= last``
  is a duplicate (QoS 1 may deliver twice); ``> last + 1`` is a gap;
* a message of another stream means the node restarted (changes a crash kept from being
  published are then missing); the stream the feed was on is retired (its late messages are
  ignored) once the node's pages show a new one;
* on a gap, a new stream, a buffer overflow and every (re)connect of the bus, the feed
  *resyncs*: it buffers incoming messages (at most ``max_buffer``; past that the buffer is
  dropped and the load restarted), reads every page (all of one stream, else it reads again),
  replaces its accounts with them, and replays the buffered messages of that stream through
  the rule above, from the first page's ``seq``;
* an account from a page with ``seq = s`` already holds every change up to message ``s``, so
  until ``last`` reaches the last page's ``seq``, a message ``<= s`` is not applied to it: no
  account ever goes back to an older version;
* a failed load is retried with jittered exponential backoff until the feed closes; the
  accounts loaded before stay readable meanwhile.

Known limits: the bots' ``UserSource`` has no removal, so an account the node dropped (no
instruction does) would stay in a bot's view; the feed's own copy follows the pages. A lost
message is noticed at the next one, at worst the node's heartbeat (``heartbeat_slots``).
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Protocol, runtime_checkable

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keepers.bus import topics
from keepers.bus.client import Backoff, BusClient
from keepers.bus.schemas import UsersMessage
from keepers.feed_writer import FeedWriter
from protocol.state.user import User, UserKey

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_PAGE_SIZE",
    "USERS_QUEUE_SIZE",
    "UserCursor",
    "UserFeed",
    "UserFeedCollector",
    "UserFeedFailed",
    "UserFeedStats",
    "UsersLoader",
    "UsersPageView",
]

_log = structlog.get_logger("keepers.user_feed")

DEFAULT_PAGE_SIZE: Final = 1_000
DEFAULT_MAX_BUFFER: Final = 4_096  # messages held while a resync loads (256 accounts each)
DEFAULT_LOAD_TIMEOUT: Final = 120.0  # a whole load: 100,000 accounts take ~2 s
USERS_QUEUE_SIZE: Final = 256
"""The ingress bound of a users bus client (messages of up to 256 accounts): what a keeper
process passes as the users client's ``queue_size``."""


# --- where snapshots come from ---------------------------------------------------------------
class UsersPageView(Protocol):
    """One page of ``GET /v1/users`` (:class:`keepers.rpc.UsersPage` has these fields)."""

    @property
    def stream(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def next(self) -> int | None: ...

    @property
    def users(self) -> Sequence[User]: ...


@runtime_checkable
class UsersLoader(Protocol):
    """Pages of every account: :class:`keepers.rpc.NodeClient` has this method."""

    async def users_page(self, offset: int, limit: int) -> UsersPageView: ...


class UserFeedFailed(Exception):
    """The feed's writer stopped on an error."""


class _PagesMoved(Exception):
    """The node's stream changed between two pages: read them again."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stream: str
    first_seq: int  # the first page's seq: replay starts after it
    last_seq: int  # the last page's seq: the per-account floors hold until it is reached
    users: dict[UserKey, User]
    floors: dict[UserKey, int]  # accounts read at a seq past first_seq


@dataclass(slots=True)
class UserFeedStats:
    """Counters (read by tests and by :class:`UserFeedCollector`)."""

    messages_applied: int = 0
    accounts_applied: int = 0
    accounts_not_older: int = 0  # page accounts a replayed message did not move back
    duplicates: int = 0
    gaps: int = 0
    new_streams: int = 0
    stale: int = 0  # messages of a retired stream, or of another stream after a load
    resyncs: int = 0
    snapshots_applied: int = 0
    snapshot_failures: int = 0
    pages_read: int = 0
    buffer_overflows: int = 0
    ignored: int = 0  # messages of another kind on the feed's client


class _Reason(StrEnum):
    START = "start"
    RECONNECT = "reconnect"
    GAP = "gap"
    NEW_STREAM = "new_stream"
    OVERFLOW = "buffer_overflow"


class UserCursor:
    """One consumer's place in a :class:`UserFeed` (a ``bots.margin_view.UserSource``)."""

    __slots__ = ("__weakref__", "_all", "_dirty", "_feed")

    def __init__(self, feed: UserFeed) -> None:
        self._feed = feed
        self._all = True
        self._dirty: dict[UserKey, None] = {}  # insertion-ordered set: a stable order

    def changed_users(self) -> list[User]:
        """Accounts that changed since the previous call, each once, as they are now (the
        first call, and the first after a resync: every account)."""
        users = self._feed._users
        if self._all:
            self._all = False
            self._dirty.clear()
            return list(users.values())
        dirty, self._dirty = self._dirty, {}
        return [users[key] for key in dirty if key in users]

    @property
    def pending(self) -> int:
        """How many accounts the next call returns (at most)."""
        return len(self._feed._users) if self._all else len(self._dirty)

    def _mark(self, changed: dict[UserKey, None]) -> None:
        if not self._all:
            self._dirty.update(changed)

    def _mark_all(self) -> None:
        self._all = True
        self._dirty.clear()


class UserFeed(FeedWriter):
    """Every user account from the node; see the module docstring.

    Lifecycle (:class:`~keepers.feed_writer.FeedWriter`): build, :meth:`start` (subscribes and
    starts the writer), then start the bus client (or have it running already); :meth:`close`
    stops the writer and loads, leaving the bus to its owner. ``async with UserFeed(...)`` does
    both.
    """

    writer_name = "user-feed-writer"
    failed_error = UserFeedFailed

    def __init__(
        self,
        bus: BusClient,
        loader: UsersLoader,
        *,
        cluster: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if page_size < 1 or max_buffer < 1:
            raise ValueError("page_size and max_buffer must be at least 1")
        super().__init__(bus, backoff=backoff, rng=rng, sleep=sleep)
        self._loader = loader
        self._topic = topics.users(cluster)
        self._page_size = page_size
        self._max_buffer = max_buffer
        self._load_timeout = load_timeout
        self.stats = UserFeedStats()
        self._users: dict[UserKey, User] = {}
        self._cursors: weakref.WeakSet[UserCursor] = weakref.WeakSet()
        self.stream: str | None = None
        self.last = 0  # the last seq applied in ``stream``
        self._retired: set[str] = set()
        self._floors: dict[UserKey, int] | None = None
        self._floors_until = 0
        self._syncing = True
        self._synced_once = False
        self._buffer: list[UsersMessage] = []
        self._request = 0
        self._load_task: asyncio.Task[None] | None = None
        self._ready: tuple[int, _Snapshot] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> UserFeed:
        await self.start()
        return self

    @property
    def topic(self) -> str:
        return self._topic

    def topic_filters(self) -> list[str]:
        return [self._topic]

    def _background_tasks(self) -> list[asyncio.Task[None]]:
        return [self._load_task] if self._load_task is not None else []

    # --- reading -----------------------------------------------------------------------------
    def cursor(self) -> UserCursor:
        """A new consumer: its first ``changed_users()`` returns every account. The feed
        holds cursors weakly: a bot rebuilt after a crash gets a fresh one."""
        cursor = UserCursor(self)
        self._cursors.add(cursor)
        return cursor

    @property
    def users(self) -> Mapping[UserKey, User]:
        """Every account as the feed has it (read-only; the accounts are replaced, never
        mutated)."""
        return MappingProxyType(self._users)

    @property
    def is_synced(self) -> bool:
        """Loaded the pages at least once and not resyncing now."""
        return self._synced_once and not self._syncing

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def wait_synced(self) -> None:
        """Until in sync (bound it with ``asyncio.timeout``); :class:`UserFeedFailed` if the
        writer stopped."""
        await self.wait_until(lambda feed: feed.is_synced)

    async def wait_until(self, predicate: Callable[[UserFeed], bool]) -> None:
        """Until ``predicate(feed)`` holds, checked whenever the writer has drained its queue or
        a sync state changes (bound it with ``asyncio.timeout``)."""
        await self._wait(lambda: predicate(self), "the feed was closed")

    # --- the writer --------------------------------------------------------------------------
    def _on_delivery(self, message: object) -> None:
        if type(message) is UsersMessage:
            self._on_message(message)
        else:
            self.stats.ignored += 1

    def _apply_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] == self._request and self._syncing:
            self._apply_snapshot(ready[1])

    def _on_new_connection(self, first: bool) -> None:
        """Whatever was published while there was no connection is lost: reload."""
        self._start_resync(_Reason.START if first else _Reason.RECONNECT)

    def _start_resync(self, reason: _Reason) -> None:
        self.stats.resyncs += 1
        was_syncing = self._syncing
        self._syncing = True
        self._request += 1
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self._load_task = asyncio.create_task(self._load(self._request), name="user-feed-load")
        if not was_syncing:
            self._notify()
        _log.info(
            "user feed resync",
            reason=reason.value,
            stream=self.stream,
            last_seq=self.last,
            buffered=len(self._buffer),
        )

    # --- loading -----------------------------------------------------------------------------
    async def _load(self, request: int) -> None:
        snapshot = await self._load_with_retry(
            self._read_consistent_pages,
            attempt_timeout=self._load_timeout,
            on_failure=self._count_load_failure,
            event="user feed load failed",
        )
        self._ready = (request, snapshot)
        self._signal_work()

    def _count_load_failure(self) -> None:
        self.stats.snapshot_failures += 1

    async def _read_consistent_pages(self) -> _Snapshot:
        while True:
            try:
                return await self._read_pages()
            except _PagesMoved:
                continue  # the node restarted while its pages were read: read them again

    async def _read_pages(self) -> _Snapshot:
        users: dict[UserKey, User] = {}
        floors: dict[UserKey, int] = {}
        offset = 0
        page = await self._loader.users_page(offset, self._page_size)
        stream, first_seq = page.stream, page.seq
        while True:
            self.stats.pages_read += 1
            if page.stream != stream:
                raise _PagesMoved
            floor = page.seq if page.seq > first_seq else None
            for user in page.users:
                key = user.key
                users[key] = user
                if floor is not None:
                    floors[key] = floor
            last_seq = page.seq
            if page.next is None:
                return _Snapshot(stream, first_seq, last_seq, users, floors)
            if page.next <= offset:
                raise ValueError(f"the page at offset {offset} names {page.next} as the next")
            offset = page.next
            page = await self._loader.users_page(offset, self._page_size)

    def _apply_snapshot(self, snapshot: _Snapshot) -> None:
        if self.stream is not None and self.stream != snapshot.stream:
            self._retired.add(self.stream)
            self.stats.new_streams += 1
        self.stream = snapshot.stream
        self._users = snapshot.users
        self.last = snapshot.first_seq
        if snapshot.floors:
            self._floors, self._floors_until = snapshot.floors, snapshot.last_seq
        else:
            self._floors = None
        self._syncing = False
        self._synced_once = True
        self._load_task = None
        self.stats.snapshots_applied += 1
        for cursor in self._cursors:
            cursor._mark_all()
        _log.info(
            "user feed synced",
            stream=snapshot.stream,
            seq=snapshot.first_seq,
            users=len(snapshot.users),
            buffered=len(self._buffer),
        )
        buffered, self._buffer = self._buffer, []
        buffered.sort(key=_seq)
        for message in buffered:
            if message.stream == snapshot.stream:
                self._on_message(message)
            else:
                self.stats.stale += 1  # older than the pages, or noticed again when it goes on
        self._notify()

    # --- messages ----------------------------------------------------------------------------
    def _on_message(self, message: UsersMessage) -> None:
        if self._syncing:
            self._buffer.append(message)
            if len(self._buffer) > self._max_buffer:
                self.stats.buffer_overflows += 1
                self._buffer = []
                self._start_resync(_Reason.OVERFLOW)
            return
        if message.stream != self.stream:
            if message.stream in self._retired:
                self.stats.stale += 1
                return
            self._buffer.append(message)
            self._start_resync(_Reason.NEW_STREAM)
            return
        seq = message.seq
        if seq != self.last + 1:
            if seq <= self.last:
                self.stats.duplicates += 1
            else:
                self.stats.gaps += 1
                self._buffer.append(message)
                self._start_resync(_Reason.GAP)
            return
        self._apply(message)

    def _apply(self, message: UsersMessage) -> None:
        seq = message.seq
        self.last = seq
        users = self._users
        floors = self._floors
        keys: list[UserKey] = []
        for user in message.users:
            key = user.key
            if floors is not None and floors.get(key, 0) >= seq:
                self.stats.accounts_not_older += 1
                continue
            users[key] = user
            keys.append(key)
        if floors is not None and seq >= self._floors_until:
            self._floors = None
        if keys:
            changed = dict.fromkeys(keys)
            for cursor in self._cursors:
                cursor._mark(changed)
        self.stats.messages_applied += 1
        self.stats.accounts_applied += len(keys)


def _seq(message: UsersMessage) -> int:
    return message.seq


class UserFeedCollector(Collector):
    """Prometheus view of a :class:`UserFeed`, read at scrape time."""

    def __init__(self, feed: UserFeed) -> None:
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        feed = self._feed
        stats = feed.stats
        counters = (
            ("keepers_users_messages_applied", "Users messages applied", stats.messages_applied),
            ("keepers_users_accounts_applied", "User accounts updated", stats.accounts_applied),
            ("keepers_users_duplicates", "Users messages already applied", stats.duplicates),
            ("keepers_users_gaps", "Users stream gaps detected", stats.gaps),
            ("keepers_users_new_streams", "Node restarts seen on the stream", stats.new_streams),
            ("keepers_users_resyncs", "Snapshot loads started", stats.resyncs),
            ("keepers_users_snapshot_failures", "Snapshot loads failed", stats.snapshot_failures),
            ("keepers_users_buffer_overflows", "Resync buffers dropped", stats.buffer_overflows),
            ("keepers_users_malformed", "Payloads that did not decode", feed.malformed),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("keepers_users_accounts", "User accounts held", len(feed.users))
        yield GaugeMetricFamily("keepers_users_seq", "Last users seq applied", feed.last)
        yield GaugeMetricFamily("keepers_users_synced", "1 when in sync", int(feed.is_synced))
