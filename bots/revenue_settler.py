"""The revenue settler: sends ``SettleRevenueToInsuranceFund`` for each spot market when a
settlement is due.

A settlement is due when the market's insurance fund has a ``revenue_settle_period``, the
program's :func:`~protocol.math.funding.on_the_hour_update` says no wait is left since
``insurance_fund.last_revenue_settle_ts`` (settlements land on the hour), and the revenue pool
holds tokens (``revenue_pool.scaled_balance`` as a deposit, the mint's units). A market whose
``user_factor`` exceeds its ``total_factor`` is skipped: the program refuses it.

Time is the view's ``ts`` (the node's unix time of the latest slot), so the bot and the
program judge "on the hour" against the same clock. A refused settlement
(``NoRevenueToSettleToIF``, ``RevenueSettingsCannotSettleToIF``) is not retried until that
market's account changes or ``retry_after_s`` of node time have passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keepers.runtime import Action, BotContext, Outcome, Status, Subscriptions, View
from keepers.runtime.registry import register
from protocol.instructions import SettleRevenueToInsuranceFund
from protocol.math.funding import on_the_hour_update
from protocol.math.spot_balance import get_token_amount
from protocol.state import SpotMarket
from protocol.types import SpotBalanceType

__all__ = ["RevenueSettler", "RevenueSettlerParams", "revenue_settlement_due"]


@dataclass(frozen=True, slots=True)
class RevenueSettlerParams:
    """``[bots.revenue_settler]``: ``retry_after_s`` node seconds before a refused market is
    tried again (unless its account changed first)."""

    retry_after_s: int = field(default=60, metadata={"minimum": 0})


def revenue_settlement_due(market: SpotMarket, now: int) -> bool:
    """Whether ``SettleRevenueToInsuranceFund`` would settle something in ``market`` at unix
    time ``now``: on the hour per the settle period, with tokens in the revenue pool."""
    fund = market.insurance_fund
    if fund.revenue_settle_period <= 0 or fund.user_factor > fund.total_factor:
        return False
    if on_the_hour_update(now, fund.last_revenue_settle_ts, fund.revenue_settle_period) != 0:
        return False
    pool = get_token_amount(market.revenue_pool.scaled_balance, market, SpotBalanceType.Deposit)
    return pool > 0


@register("revenue-settler")
@register("revenue_settler")
class RevenueSettler:
    params_type = RevenueSettlerParams

    def __init__(self, context: BotContext) -> None:
        self._name = context.name
        params = context.params
        self.params = params if isinstance(params, RevenueSettlerParams) else RevenueSettlerParams()
        # market index -> (account refused with, node time it was refused at)
        self._refused: dict[int, tuple[SpotMarket, int]] = {}
        self._ts = 0
        self._markets: dict[int, SpotMarket] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def subscriptions(self) -> Subscriptions:
        return Subscriptions()

    def decide(self, view: View) -> list[Action]:
        self._ts = view.ts
        self._markets = dict(view.spot_markets)
        actions = []
        for index, market in sorted(view.spot_markets.items()):
            refused = self._refused.get(index)
            if refused is not None:
                account, at = refused
                # the runtime hands over fresh copies: compare the account, not the object
                if account == market and view.ts < at + self.params.retry_after_s:
                    continue
                del self._refused[index]
            if revenue_settlement_due(market, view.ts):
                actions.append(
                    Action(
                        instructions=(SettleRevenueToInsuranceFund(index),),
                        kind="settle_revenue_to_insurance_fund",
                        dedupe_key=("settle_revenue", index),
                    )
                )
        return actions

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.status is not Status.REJECTED:
            return
        ix = outcome.action.instructions[0]
        if isinstance(ix, SettleRevenueToInsuranceFund):
            market = self._markets.get(ix.spot_market_index)
            if market is not None:
                self._refused[ix.spot_market_index] = (market, self._ts)
