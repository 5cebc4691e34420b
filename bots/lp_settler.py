"""The LP settler: sends ``SettleLp`` for every BAL provider (a perp position with
``lp_shares > 0``) once per funding period of its market.

Seed 004: an LP's share of the AMM's position stays unsettled, earning no funding, until
``settle_lp`` moves it into the LP's own position. So the bot settles each market's providers
right after each funding update: when the market's ``amm.last_funding_rate_ts`` has moved past
the one it last settled the market at (and once, for the providers it has not settled yet,
when it first sees the market).

Batching: up to ``max_settles_per_tx`` ``SettleLp`` instructions of one market per
transaction; a refused batch sends its settlements one per transaction from then on, a
refused single settlement waits for that user's account to change.

Users come from ``BotContext.extra["users"]`` (a :class:`~bots.margin_view.UserSource` or a
live mapping of accounts); the bot asks for every user (``Subscriptions.users``), so a keeper
process gives it a cursor of its :class:`~keepers.user_feed.UserFeed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bots.common import settle_groups
from bots.margin_view import UserSource, user_source
from keepers.runtime import Action, BotContext, Outcome, Status, Subscriptions, View
from keepers.runtime.registry import register
from protocol.error_codes import ErrorCode
from protocol.instructions.lp import SettleLp
from protocol.state import User, UserKey

__all__ = ["LpSettler", "LpSettlerParams"]

_Item = tuple[UserKey, int]


@dataclass(frozen=True, slots=True)
class LpSettlerParams:
    max_settles_per_tx: int = field(default=4, metadata={"minimum": 1})
    max_txs_per_tick: int = field(default=16, metadata={"minimum": 1})


@register("lp-settler")
@register("lp_settler")
class LpSettler:
    params_type = LpSettlerParams

    def __init__(self, context: BotContext) -> None:
        self._name = context.name
        params = context.params
        self.params = params if isinstance(params, LpSettlerParams) else LpSettlerParams()
        self._source: UserSource | None = user_source(context.extra.get("users"))
        self.providers: dict[int, dict[UserKey, User]] = {}  # market -> BAL providers
        self._settled_at: dict[_Item, int] = {}  # last_funding_rate_ts settled at
        self._solo: set[_Item] = set()
        self._throttled: set[_Item] = set()
        self._pending: dict[_Item, int] = {}  # in flight: the funding ts being settled

    @property
    def name(self) -> str:
        return self._name

    @property
    def subscriptions(self) -> Subscriptions:
        return Subscriptions(users=True)

    def _sync(self) -> None:
        if self._source is None:
            return
        for user in self._source.changed_users():
            key = user.key
            self._throttled = {i for i in self._throttled if i[0] != key}
            for providers in self.providers.values():
                providers.pop(key, None)
            for position in user.perp_positions:
                if position.lp_shares > 0:
                    self.providers.setdefault(position.market_index, {})[key] = user

    def due(self, view: View) -> list[_Item]:
        """(provider, market) pairs not settled since the market's last funding update."""
        items = []
        for market_index, providers in sorted(self.providers.items()):
            market = view.perp_markets.get(market_index)
            if market is None:
                continue
            funding_ts = market.amm.last_funding_rate_ts
            for key in sorted(providers):
                item = (key, market_index)
                if item in self._throttled:
                    continue
                if self._settled_at.get(item, -1) < funding_ts:
                    items.append(item)
        return items

    def decide(self, view: View) -> list[Action]:
        self._sync()
        params = self.params
        groups = settle_groups(self.due(view), self._solo, params.max_settles_per_tx)
        actions = []
        for group in groups[: params.max_txs_per_tick]:
            for item in group:
                self._pending[item] = view.perp_markets[item[1]].amm.last_funding_rate_ts
            actions.append(
                Action(
                    instructions=tuple(SettleLp(key[0], key[1], market) for key, market in group),
                    kind="settle_lp",
                    dedupe_key=("settle_lp", tuple(group)),
                )
            )
        return actions

    def on_outcome(self, outcome: Outcome) -> None:
        items = [
            ((ix.authority, ix.sub_account_id), ix.market_index)
            for ix in outcome.action.instructions
            if isinstance(ix, SettleLp)
        ]
        if outcome.ok:
            for item in items:
                funding_ts = self._pending.pop(item, None)
                if funding_ts is not None:
                    self._settled_at[item] = funding_ts
            return
        for item in items:
            self._pending.pop(item, None)
        if outcome.code in (ErrorCode.DuplicateTransaction, ErrorCode.StaleTransaction):
            return  # the envelope (slot, id) was refused, not the settlements: retry them
        if outcome.status is Status.REJECTED:
            if len(items) > 1:
                self._solo.update(items)
            else:
                self._throttled.update(items)
