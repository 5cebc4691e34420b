"""The trigger bot: fires stop (trigger) orders whose condition the oracle has met.

It ticks on order events, oracle updates and slots. Each tick, per followed market (perp and
spot), it asks its DLOB for the untriggered trigger orders the current oracle price fires
(:meth:`dlob.DLOB.find_nodes_to_trigger`, confirmed with the program's
``order_satisfies_trigger_condition``) and sends one ``TriggerOrder`` each; the program pays
the keeper the flat filler fee for it.

Dedupe and learning, in slots:

* an order just sent is not sent again for ``retry_slots`` (its trigger event has to reach
  the book), and never twice in one slot;
* ``OrderDoesNotExist`` / ``OrderNotTriggerable`` (gone, or already triggered): dropped for
  ``gone_ttl_slots``;
* ``OrderDidNotSatisfyTriggerCondition`` (the oracle moved back between the book and the
  program): tried again at the next slot if the book still says so;
* ``InvalidOracle`` / ``OrderBreachesOraclePriceLimits`` (the program will not trigger on this
  oracle): the market waits ``oracle_backoff_slots``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Final

from bots.common import SlotTtl, bot_params, rejection, short_hex
from keepers.dlob_feed import DlobReader
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Outcome
from keepers.runtime.registry import register
from keepers.runtime.view import View
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import TriggerOrder
from protocol.state.user import UserKey
from protocol.types import MarketType

TRIGGER_KIND: Final = "trigger_order"

OrderKey = tuple[UserKey, int]
MarketKey = tuple[MarketType, int]

ORDER_GONE: Final = frozenset({ErrorCode.OrderDoesNotExist, ErrorCode.OrderNotTriggerable})
ORACLE_REFUSED: Final = frozenset(
    {ErrorCode.InvalidOracle, ErrorCode.OrderBreachesOraclePriceLimits}
)


@dataclass(frozen=True, slots=True)
class TriggerParams:
    """``[bots.trigger]`` parameters.

    ``sub_account_id``: the keeper's own user account (it must exist: the reward is paid to
    it). ``perp_markets`` / ``spot_markets``: markets to watch (unset: every one the book
    follows; ``[]``: none). ``retry_slots``, ``gone_ttl_slots``, ``oracle_backoff_slots``: see
    the module docstring. ``max_triggers_per_tick``: triggers sent per tick at most.
    """

    sub_account_id: int = field(default=0, metadata={"minimum": 0})
    perp_markets: tuple[int, ...] | None = None
    spot_markets: tuple[int, ...] | None = None
    retry_slots: int = field(default=2, metadata={"minimum": 1})
    gone_ttl_slots: int = field(default=150, metadata={"minimum": 1})
    oracle_backoff_slots: int = field(default=10, metadata={"minimum": 1})
    max_triggers_per_tick: int = field(default=32, metadata={"minimum": 1})
    simulate: bool = False


@dataclass(frozen=True, slots=True)
class TriggerAttempt:
    order: OrderKey
    market: MarketKey
    slot: int


@register("trigger")
class Trigger:
    """The trigger bot (see the module docstring)."""

    params_type: ClassVar[type[TriggerParams]] = TriggerParams

    def __init__(self, context: BotContext) -> None:
        params = bot_params(context.params, TriggerParams, "trigger")
        self.name = context.name
        self.authority = context.authority
        self.params = params
        self.subscriptions = Subscriptions(
            streams=frozenset({Stream.ORDERS, Stream.ORACLE, Stream.SLOT}),
            perp_markets=params.perp_markets,
            spot_markets=params.spot_markets,
            sub_account_ids=(params.sub_account_id,),
            dlob=True,
        )
        self.tried: SlotTtl[OrderKey] = SlotTtl()
        self.gone: SlotTtl[OrderKey] = SlotTtl()
        self.paused_markets: SlotTtl[MarketKey] = SlotTtl()
        self.attempts: dict[str, TriggerAttempt] = {}
        self._ids = itertools.count(1)

    def decide(self, view: View) -> list[Action]:
        slot = view.slot
        for ttl in (self.tried, self.gone, self.paused_markets):
            ttl.prune(slot)
        horizon = slot - self.params.gone_ttl_slots
        for cid in [c for c, a in self.attempts.items() if a.slot < horizon]:
            del self.attempts[cid]
        book = view.dlob
        if book is None or view.user(self.params.sub_account_id) is None:
            return []
        actions: list[Action] = []
        for market in self._markets(book):
            if self.paused_markets.blocked(market, slot):
                continue
            market_type, market_index = market
            oracle = (
                view.perp_oracle(market_index)
                if market_type == MarketType.Perp
                else view.spot_oracle(market_index)
            )
            if oracle is None:
                continue
            for node in book.find_nodes_to_trigger(market_type, market_index, oracle.price):
                key = (node.user, node.order_id)
                if self.tried.blocked(key, slot) or self.gone.blocked(key, slot):
                    continue
                if len(actions) >= self.params.max_triggers_per_tick:
                    return actions
                actions.append(self._trigger(view, market, key))
        return actions

    def _markets(self, book: DlobReader) -> list[MarketKey]:
        wanted = {
            MarketType.Perp: self.params.perp_markets,
            MarketType.Spot: self.params.spot_markets,
        }
        markets: list[MarketKey] = []
        # perp markets first, then spot, each by index
        ordered = sorted(book.markets(), key=lambda m: (m[0] != MarketType.Perp, m[1]))
        for market_type, market_index in ordered:
            chosen = wanted[market_type]
            if chosen is None or market_index in chosen:
                markets.append((market_type, market_index))
        return markets

    def _trigger(self, view: View, market: MarketKey, key: OrderKey) -> Action:
        (authority, sub_account_id), order_id = key
        correlation_id = (
            f"{self.name}-{view.slot}-{short_hex(authority)}.{sub_account_id}.{order_id}"
            f"-{next(self._ids)}"
        )
        self.attempts[correlation_id] = TriggerAttempt(key, market, view.slot)
        self.tried.block(key, view.slot + self.params.retry_slots)
        return Action(
            instructions=(
                TriggerOrder(
                    self.authority, self.params.sub_account_id, authority, sub_account_id, order_id
                ),
            ),
            kind=TRIGGER_KIND,
            dedupe_key=("trigger", key),
            correlation_id=correlation_id,
            simulate=self.params.simulate,
        )

    def on_outcome(self, outcome: Outcome) -> None:
        attempt = self.attempts.pop(outcome.correlation_id, None)
        if attempt is None:
            return
        code = rejection(outcome)
        if code is None:
            return
        if code in ORDER_GONE:
            self.gone.block(attempt.order, attempt.slot + self.params.gone_ttl_slots)
        elif code == ErrorCode.OrderDidNotSatisfyTriggerCondition:
            self.tried.set(attempt.order, attempt.slot + 1)
        elif code in ORACLE_REFUSED:
            self.paused_markets.block(
                attempt.market, attempt.slot + self.params.oracle_backoff_slots
            )


__all__ = ["TRIGGER_KIND", "Trigger", "TriggerAttempt", "TriggerParams"]
