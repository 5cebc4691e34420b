"""The funding-rate updater: cranks ``UpdateFundingRate`` per perp market when it is due.

It ticks on slots (and its interval). A market is due when the program's on-the-hour rule
says so: :func:`protocol.math.funding.on_the_hour_update` of the node's unix time, the
market's ``last_funding_rate_ts`` and its ``funding_period`` is 0. Markets that are not
``Active`` or ``ReduceOnly`` (funding paused, initialised, settling, ...) or have no funding
period are skipped, as the program would refuse or ignore them.

After an update is accepted, the cached market still shows the old ``last_funding_rate_ts``
until the account cache refreshes; the market is left alone until it does, so one boundary
gives one update.

Retrying known transient rejections, in slots:

* ``FundingWasNotUpdated`` right at the boundary (the node's clock had not reached it, or the
  cached market lagged): retried at the next slot, up to ``boundary_retries`` times in a row;
  beyond that it is treated like the next kind (the program keeps refusing: e.g. its oracle
  guard blocks funding);
* ``InvalidFundingProfitability``, oracle rejections (``InvalidOracle``, ``OracleNotFound``,
  ``AMMNotUpdatedInSameSlot``) and any other code: retried after an exponential backoff,
  ``backoff_slots * 2**(n-1)`` slots after the ``n``-th failure in a row, at most
  ``max_backoff_slots``. An accepted update resets the count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Final

from bots.common import SlotTtl, bot_params, rejection
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.registry import register
from keepers.runtime.view import View
from protocol.error_codes import ErrorCode
from protocol.instructions.funding import UpdateFundingRate
from protocol.math.funding import on_the_hour_update
from protocol.state.perp_market import PerpMarket
from protocol.types import MarketStatus

FUNDING_KIND: Final = "update_funding_rate"

_UPDATABLE_STATUSES: Final = frozenset({MarketStatus.Active, MarketStatus.ReduceOnly})


@dataclass(frozen=True, slots=True)
class FundingRateUpdaterParams:
    """``[bots.funding_rate_updater]`` parameters.

    ``perp_markets``: the markets to crank (unset: every perp market the node lists).
    ``boundary_retries``, ``backoff_slots``, ``max_backoff_slots``: see the module docstring.
    """

    perp_markets: tuple[int, ...] | None = None
    boundary_retries: int = field(default=5, metadata={"minimum": 0})
    backoff_slots: int = field(default=10, metadata={"minimum": 1})
    max_backoff_slots: int = field(default=1_500, metadata={"minimum": 1})
    simulate: bool = False


@dataclass(frozen=True, slots=True)
class FundingAttempt:
    market_index: int
    slot: int
    last_funding_rate_ts: int  # the market's, as cached when the update was sent


@register("funding-rate-updater")
@register("funding_rate_updater")
class FundingRateUpdater:
    """The funding-rate updater bot (see the module docstring)."""

    params_type: ClassVar[type[FundingRateUpdaterParams]] = FundingRateUpdaterParams

    def __init__(self, context: BotContext) -> None:
        params = bot_params(context.params, FundingRateUpdaterParams, "funding_rate_updater")
        self.name = context.name
        self.params = params
        self.subscriptions = Subscriptions(
            streams=frozenset({Stream.SLOT}),
            perp_markets=params.perp_markets,
            spot_markets=(),
            sub_account_ids=(),
            dlob=False,
        )
        self.backoff: SlotTtl[int] = SlotTtl()
        self.failures: dict[int, int] = {}  # market index -> rejections in a row
        # market index -> the cached last_funding_rate_ts an accepted update replaced
        self.updated_from: dict[int, int] = {}
        self.attempts: dict[str, FundingAttempt] = {}
        self._ids = itertools.count(1)

    def is_due(self, market: PerpMarket, now: int) -> bool:
        """The program's rule: an update is allowed at ``now`` (unix seconds)."""
        amm = market.amm
        if market.status not in _UPDATABLE_STATUSES or amm.funding_period <= 0:
            return False
        return on_the_hour_update(now, amm.last_funding_rate_ts, amm.funding_period) == 0

    def decide(self, view: View) -> list[Action]:
        self.backoff.prune(view.slot)
        horizon = view.slot - self.params.max_backoff_slots
        for cid in [c for c, a in self.attempts.items() if a.slot < horizon]:
            del self.attempts[cid]
        actions: list[Action] = []
        for market_index in sorted(view.perp_markets):
            if (
                self.params.perp_markets is not None
                and market_index not in self.params.perp_markets
            ):
                continue
            market = view.perp_markets[market_index]
            last_ts = market.amm.last_funding_rate_ts
            replaced = self.updated_from.get(market_index)
            if replaced is not None:
                if replaced == last_ts:
                    continue  # updated already; the cached market has not caught up
                del self.updated_from[market_index]
            if self.backoff.blocked(market_index, view.slot) or not self.is_due(market, view.ts):
                continue
            correlation_id = f"{self.name}-{view.slot}-perp{market_index}-{next(self._ids)}"
            self.attempts[correlation_id] = FundingAttempt(market_index, view.slot, last_ts)
            # one attempt per slot at most, whatever the outcome
            self.backoff.block(market_index, view.slot + 1)
            actions.append(
                Action(
                    instructions=(UpdateFundingRate(market_index),),
                    kind=FUNDING_KIND,
                    dedupe_key=("funding", market_index),
                    correlation_id=correlation_id,
                    simulate=self.params.simulate,
                )
            )
        return actions

    def on_outcome(self, outcome: Outcome) -> None:
        attempt = self.attempts.pop(outcome.correlation_id, None)
        if attempt is None:
            return
        market_index = attempt.market_index
        if outcome.status is Status.ACCEPTED:
            self.failures.pop(market_index, None)
            self.updated_from[market_index] = attempt.last_funding_rate_ts
            return
        code = rejection(outcome)
        if code is None:
            return  # skipped, simulated or unknown: the next due tick tries again
        failures = self.failures.get(market_index, 0) + 1
        self.failures[market_index] = failures
        params = self.params
        if code == ErrorCode.FundingWasNotUpdated and failures <= params.boundary_retries:
            self.backoff.set(market_index, attempt.slot + 1)
            return
        if code == ErrorCode.FundingWasNotUpdated:
            failures -= params.boundary_retries  # the backoff starts after the quick retries
        # the exponent is capped so a long outage cannot build a huge integer
        delay = min(params.backoff_slots * 2 ** min(failures - 1, 32), params.max_backoff_slots)
        self.backoff.set(market_index, attempt.slot + delay)


__all__ = [
    "FUNDING_KIND",
    "FundingAttempt",
    "FundingRateUpdater",
    "FundingRateUpdaterParams",
]
