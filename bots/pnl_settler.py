"""The PnL settler: sends ``SettlePnl`` for users' perp positions, in batches.

What it may settle follows :func:`protocol.controller.pnl.settle_pnl`:

* nothing in a market whose oracle is outside the price band around its 5-minute TWAP
  (``PriceBandsBreached`` for every settlement there);
* a **loss** of any user, as long as the user meets its maintenance requirement at strict
  prices (:func:`~protocol.math.margin.meets_settle_pnl_maintenance_margin_requirement`;
  otherwise it is the liquidator's business) and is not being liquidated or bankrupt;
* a **gain** only while the market's pnl pool is in excess of what all users are owed
  (``max_pnl_pool_excess > 0``: the pool plus a fifth of the fee pool above the users' net
  PnL): otherwise the program lets only the user itself settle its gain
  (``UserMustSettleTheirOwnPositiveUnsettledPNL``). The amount is what
  :func:`~protocol.math.pnl.get_claimable_pnl` allows (realized part plus the excess), and the
  gains sent per market in one tick never add up to more than the pool holds; the one
  exception the program makes, a flat position of a user being liquidated, is settled too.

A position's PnL is valued as the program will: base at the oracle price plus its quote
balance plus the funding it has not settled yet (settling pnl settles funding first). Amounts
under ``min_settle_amount`` (QUOTE_PRECISION) are left alone.

Batching: up to ``max_settles_per_tx`` ``SettlePnl`` instructions of one market per
transaction. A transaction runs all of its instructions or none, so a refused batch sends its
settlements one per transaction from then on; a refused single settlement is not retried until
that user's account changes.

Users come from ``BotContext.extra["users"]`` (a :class:`~bots.margin_view.UserSource` or a
live mapping of accounts); the bot asks for every user (``Subscriptions.users``), so a keeper
process gives it a cursor of its :class:`~keepers.user_feed.UserFeed`. Without one it settles
nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bots.common import settle_groups
from bots.margin_view import MarketSnapshot, UserSource, user_source
from keepers.runtime import Action, BotContext, Outcome, Status, Subscriptions, View
from keepers.runtime.registry import register
from protocol.constants import AMM_RESERVE_PRECISION, QUOTE_PRECISION
from protocol.controller.pnl import validate_market_within_price_band
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions import SettlePnl
from protocol.math.funding import calculate_funding_payment
from protocol.math.margin import (
    calculate_net_user_pnl,
    meets_settle_pnl_maintenance_margin_requirement,
)
from protocol.math.pnl import get_claimable_pnl
from protocol.math.spot_balance import get_token_amount
from protocol.numeric import div_trunc
from protocol.state import PerpMarket, SpotMarket, State, User, UserKey
from protocol.state.user import PerpPosition
from protocol.types import MarketStatus, SpotBalanceType

__all__ = [
    "PnlSettler",
    "PnlSettlerParams",
    "funding_settled",
    "max_pnl_pool_excess",
    "unsettled_pnl",
]

_Item = tuple[UserKey, int]  # (user, perp market)


@dataclass(frozen=True, slots=True)
class PnlSettlerParams:
    max_settles_per_tx: int = field(default=4, metadata={"minimum": 1})
    max_txs_per_tick: int = field(default=16, metadata={"minimum": 1})
    min_settle_amount: int = field(default=QUOTE_PRECISION, metadata={"minimum": 0})


def funding_settled(position: PerpPosition, market: PerpMarket) -> PerpPosition:
    """A copy of the position with its unsettled funding paid into its quote, as settling pnl
    first does (``settle_funding_payment``)."""
    rate = (
        market.amm.cumulative_funding_rate_long
        if position.base_asset_amount > 0
        else market.amm.cumulative_funding_rate_short
    )
    funding = calculate_funding_payment(rate, position)
    return dataclasses.replace(
        position,
        quote_asset_amount=position.quote_asset_amount + funding,
        last_cumulative_funding_rate=rate,
    )


def unsettled_pnl(position: PerpPosition, market: PerpMarket, oracle_price: int) -> int:
    """The position's PnL once its funding is settled: ``base * price`` (truncated toward
    zero) plus its quote plus the unsettled funding payment (QUOTE_PRECISION)."""
    settled = funding_settled(position, market)
    base_value = div_trunc(settled.base_asset_amount * max(oracle_price, 0), AMM_RESERVE_PRECISION)
    return base_value + settled.quote_asset_amount


def max_pnl_pool_excess(market: PerpMarket, quote_market: SpotMarket, oracle_price: int) -> int:
    """What the market's pnl pool (plus a fifth of its fee pool) holds above the users' net
    PnL, as :func:`protocol.controller.pnl.settle_pnl` computes it (QUOTE_PRECISION, >= 0)."""
    pnl_pool = get_token_amount(
        market.pnl_pool.scaled_balance, quote_market, SpotBalanceType.Deposit
    )
    fee_pool = get_token_amount(
        market.amm.fee_pool.scaled_balance, quote_market, SpotBalanceType.Deposit
    )
    available = pnl_pool + div_trunc(fee_pool, 5)
    net_user_pnl = calculate_net_user_pnl(market.amm, oracle_price)
    if net_user_pnl < available:
        return available - max(net_user_pnl, 0)
    return 0


@register("pnl-settler")
@register("pnl_settler")
class PnlSettler:
    params_type = PnlSettlerParams

    def __init__(self, context: BotContext) -> None:
        self._name = context.name
        params = context.params
        self.params = params if isinstance(params, PnlSettlerParams) else PnlSettlerParams()
        state = context.extra.get("state")
        self.markets = MarketSnapshot(state if isinstance(state, State) else State())
        self._source: UserSource | None = user_source(context.extra.get("users"))
        self.users: dict[UserKey, User] = {}
        self._solo: set[_Item] = set()  # settled one per transaction after a refused batch
        self._throttled: set[_Item] = set()  # refused alone: wait for the user to change

    @property
    def name(self) -> str:
        return self._name

    @property
    def subscriptions(self) -> Subscriptions:
        return Subscriptions(users=True)

    def _sync(self, view: View) -> None:
        markets = self.markets
        markets.perp_markets = dict(view.perp_markets)
        markets.spot_markets = dict(view.spot_markets)
        for oracle_id in view.oracles:
            data = view.oracle_price_data(oracle_id)
            if data is not None:
                markets.oracles[oracle_id] = data
        if self._source is not None:
            for user in self._source.changed_users():
                self.users[user.key] = user
                self._throttled = {i for i in self._throttled if i[0] != user.key}

    def candidates(self) -> list[tuple[_Item, int]]:
        """``((user, market), pnl)`` to settle: losses first (largest first), then gains
        (largest first) within each pool's tokens."""
        losses: list[tuple[_Item, int]] = []
        gains: list[tuple[_Item, int]] = []
        pools: dict[int, int] = {}
        for market_index, market in sorted(self.markets.perp_markets.items()):
            quote_market = self.markets.spot_markets.get(market.quote_spot_market_index)
            oracle = self.markets.oracles.get(market.amm.oracle)
            if quote_market is None or oracle is None or oracle.price <= 0:
                continue
            if market.status not in (MarketStatus.Active, MarketStatus.ReduceOnly):
                continue
            try:
                validate_market_within_price_band(market, self.markets.state, oracle.price)
            except ProtocolError:
                continue  # PriceBandsBreached for every settlement in the market
            excess = max_pnl_pool_excess(market, quote_market, oracle.price)
            pools[market_index] = get_token_amount(
                market.pnl_pool.scaled_balance, quote_market, SpotBalanceType.Deposit
            )
            for user in self.users.values():
                position = user.get_perp_position(market_index)
                if position is None or user.is_bankrupt():
                    continue
                item = (user.key, market_index)
                if item in self._throttled:
                    continue
                if position.base_asset_amount != 0 and market.status != MarketStatus.Active:
                    continue
                pnl = unsettled_pnl(position, market, oracle.price)
                if pnl <= -self.params.min_settle_amount and not user.is_being_liquidated():
                    losses.append((item, pnl))
                elif pnl >= self.params.min_settle_amount:
                    flat_in_liquidation = (
                        position.base_asset_amount == 0 and user.is_being_liquidated()
                    )
                    if excess <= 0 and not flat_in_liquidation:
                        continue
                    settled = funding_settled(position, market)
                    claimable = get_claimable_pnl(settled, oracle.price, excess)
                    if claimable >= self.params.min_settle_amount:
                        gains.append((item, claimable))
        losses.sort(key=lambda c: c[1])
        gains.sort(key=lambda c: -c[1])
        chosen = [c for c in losses if self._meets_margin(c[0][0])]
        for item, claimable in gains:
            left = pools.get(item[1], 0)
            if claimable <= left:
                pools[item[1]] = left - claimable
                chosen.append((item, claimable))
        return chosen

    def _meets_margin(self, key: UserKey) -> bool:
        try:
            return meets_settle_pnl_maintenance_margin_requirement(self.users[key], self.markets)
        except ProtocolError:
            return False

    def decide(self, view: View) -> list[Action]:
        self._sync(view)
        params = self.params
        groups = settle_groups(
            (item for item, _ in self.candidates()), self._solo, params.max_settles_per_tx
        )
        actions = []
        for group in groups[: params.max_txs_per_tick]:
            actions.append(
                Action(
                    instructions=tuple(
                        SettlePnl(key[0], key[1], market_index) for key, market_index in group
                    ),
                    kind="settle_pnl",
                    dedupe_key=("settle_pnl", tuple(group)),
                )
            )
        return actions

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.status is not Status.REJECTED:
            return
        if outcome.code in (ErrorCode.DuplicateTransaction, ErrorCode.StaleTransaction):
            return  # the envelope (slot, id) was refused, not the settlements: retry them
        items = [
            ((ix.authority, ix.sub_account_id), ix.market_index)
            for ix in outcome.action.instructions
            if isinstance(ix, SettlePnl)
        ]
        if len(items) > 1:
            self._solo.update(items)
        else:
            self._throttled.update(items)
