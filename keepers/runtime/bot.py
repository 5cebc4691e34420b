"""What a bot is to the runtime: a decider with a name and the bus streams it needs.

A bot implements :class:`Bot`: ``decide(view) -> list[Action]`` (sync or ``async``) reads a
:class:`~keepers.runtime.view.View` and returns the transactions it wants sent. It does no
I/O, signs nothing and sends nothing: the one :class:`~keepers.runtime.executor.Executor`
signs each :class:`Action` with the bot's keypair, optionally simulates it, sends it and hands
the :class:`~keepers.runtime.executor.Outcome` back. A bot that also implements
:class:`LearnsFromOutcomes` is told each outcome after its tick, before its next ``decide``
(a filler drops an order the program says is gone, throttles a user short of margin).

Invariants the runtime keeps for every bot:

* one tick in flight at a time: ``decide`` is never re-entered, and the outcomes of a tick's
  actions are known before the next tick;
* an exception out of ``decide`` (or ``on_outcome``) is a broken invariant: the supervisor
  counts it, rebuilds the bot from its factory (fresh state) and restarts it with backoff;
* expected rejections are values (:class:`~keepers.runtime.executor.Outcome` with a code),
  never exceptions.

Amounts in an :class:`Action` (``expected_reward``) are ints at the program's precision
(QUOTE_PRECISION for rewards).
"""

from __future__ import annotations

from collections.abc import Awaitable, Hashable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from keepers.runtime.executor import Outcome
    from keepers.runtime.view import View


class Stream(StrEnum):
    """Bus streams a bot can tick on (and that the runtime puts into ``View.events``)."""

    ORDERS = "orders"  # order events (place, cancel, fill, expire, trigger, modify)
    INTENTS = "intents"  # signed order intents traders broadcast
    SLOT = "slot"  # the node's slot ticks
    ORACLE = "oracle"  # oracle price updates
    RECORDS = "records"  # committed protocol records (fills, funding, ...)


@dataclass(frozen=True, slots=True)
class Subscriptions:
    """What a bot needs from the bus and the node.

    ``streams`` empty: the bot ticks on its interval only. Otherwise it also ticks as soon as
    a message of one of these streams arrives (coalesced: the messages that arrive during a
    tick make one next tick). ``perp_markets`` / ``spot_markets``: the markets whose order
    events and intents the bot wants (``None`` = every market), and the markets its DLOB
    follows. ``sub_account_ids``: the bot's own user accounts (under its keypair's authority)
    the view carries. ``dlob``: the bot reads the order book (``View.dlob``); the process then
    keeps one DLOB, fed from the bus, for every bot that asks. ``users``: the bot watches every
    user account (a liquidator, a settler); the process then keeps one
    :class:`~keepers.user_feed.UserFeed` (the node's ``GET /v1/users`` pages, then its users
    stream on the bus) and builds the bot with a cursor of it as ``BotContext.extra["users"]``
    (``changed_users()``: the accounts changed since the previous call, every account the
    first time), unless the caller put accounts there already.
    """

    streams: frozenset[Stream] = frozenset()
    perp_markets: tuple[int, ...] | None = None
    spot_markets: tuple[int, ...] | None = None
    sub_account_ids: tuple[int, ...] = (0,)
    dlob: bool = False
    users: bool = False

    @property
    def event_driven(self) -> bool:
        return bool(self.streams)


@dataclass(frozen=True, slots=True)
class Action:
    """One transaction a bot wants sent.

    ``instructions``: protocol instruction dataclasses, executed atomically in order.
    ``kind``: a short stable label for metrics and logs (``"fill_perp_order"``).
    ``dedupe_key``: actions with equal keys are never in flight together (the executor skips
    the later one); use e.g. ``("fill", authority, order_id)``.
    ``correlation_id``: bound into every log line about this action (the fill attempt);
    empty means the executor derives one.
    ``expected_reward``: what the bot expects to earn (QUOTE_PRECISION), for logs and ranking.
    ``simulate``: simulate against the node first and send only if the simulation is accepted.
    """

    instructions: tuple[Any, ...]
    kind: str
    dedupe_key: Hashable
    correlation_id: str = ""
    expected_reward: int = 0
    simulate: bool = False

    def __post_init__(self) -> None:
        if not self.instructions:
            raise ValueError("an action needs at least one instruction")
        if not self.kind:
            raise ValueError("an action needs a kind")


@runtime_checkable
class Bot(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    def decide(self, view: View) -> list[Action] | Awaitable[list[Action]]: ...


@runtime_checkable
class LearnsFromOutcomes(Protocol):
    """Optional: told every outcome of the bot's actions, after the tick, in action order."""

    def on_outcome(self, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class BotContext:
    """What a bot factory is given to build a bot.

    ``name``: the bot's instance name (the ``[bots.<name>]`` table). ``authority``: the public
    key of the keypair the executor signs with. ``params``: the bot's own parameters, already
    validated into the factory's ``params_type`` (a frozen dataclass) when it declares one,
    else the raw table. ``cluster``: the bus cluster name. ``dry_run``: nothing is sent.
    ``seed``: for a bot that wants a seeded ``random.Random`` (injected randomness).
    """

    name: str
    authority: bytes
    params: Any = None
    cluster: str = "local"
    dry_run: bool = False
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


class BotFactory(Protocol):
    """A bot class or a function: ``factory(context) -> Bot``. It may declare a class
    attribute ``params_type`` (a frozen dataclass) that the ``[bots.<name>]`` parameters are
    validated into."""

    def __call__(self, context: BotContext, /) -> Bot: ...
