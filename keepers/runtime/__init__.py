"""The keeper runtime every bot runs in.

A bot is a decider (:class:`Bot`: ``decide(view) -> list[Action]``); the runtime does the rest:

* :mod:`keepers.runtime.view`: the read-only :class:`View` a bot decides from (slot, oracle
  prices, market accounts, its own users, the DLOB, the bus events since its last tick); a bot
  that watches every user gets them from :mod:`keepers.user_feed` (``Subscriptions.users``);
* :mod:`keepers.runtime.executor`: the one :class:`Executor` that signs, optionally
  simulates, sends and records each action's :class:`Outcome` by error code;
* :mod:`keepers.runtime.supervisor`: one task per bot in an ``asyncio.TaskGroup``, ticks that
  never overlap, watchdogs, restarts with backoff;
* :mod:`keepers.runtime.health` / :mod:`keepers.runtime.metrics`: ``/health``, ``/metrics``;
* :mod:`keepers.runtime.registry`: bots by name (``@register("filler")``);
* :mod:`keepers.runtime.process`: a whole keeper process from configuration;
* :mod:`keepers.runtime.timing`: injected time (:class:`ManualTimer` for tests).

A bot module needs only what this package exports.
"""

from keepers.runtime.bot import (
    Action,
    Bot,
    BotContext,
    BotFactory,
    LearnsFromOutcomes,
    Stream,
    Subscriptions,
)
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.registry import BOTS, load_bot, register, resolve_bot
from keepers.runtime.timing import ManualTimer, SystemTimer, Timer
from keepers.runtime.view import View

__all__ = [
    "BOTS",
    "Action",
    "Bot",
    "BotContext",
    "BotFactory",
    "LearnsFromOutcomes",
    "ManualTimer",
    "Outcome",
    "Status",
    "Stream",
    "Subscriptions",
    "SystemTimer",
    "Timer",
    "View",
    "load_bot",
    "register",
    "resolve_bot",
]
