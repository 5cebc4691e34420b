"""The strategies: pure deciders the keeper runtime runs (``decide(view) -> list[Action]``).

Importing this package registers every bot with :mod:`keepers.runtime.registry`, by name:

* ``filler`` (:mod:`bots.filler`): fills takers against resting makers and the vAMM, fills
  signed intents, cancels expired orders for the reward;
* ``trigger`` (:mod:`bots.trigger`): fires trigger orders whose condition the oracle met;
* ``jit_maker`` / ``jit-maker`` (:mod:`bots.jit_maker`): answers auctions with place-and-make
  orders at its quote;
* ``funding_rate_updater`` / ``funding-rate-updater`` (:mod:`bots.funding_rate_updater`):
  cranks the funding rate on the hour;
* ``liquidator`` (:mod:`bots.liquidator`), ``pnl_settler`` (:mod:`bots.pnl_settler`),
  ``revenue_settler`` (:mod:`bots.revenue_settler`), ``lp_settler`` (:mod:`bots.lp_settler`).

Imports point one way (``bots -> keepers -> dlob -> protocol``): nothing imports ``bots``
except the registry, by name.
"""

from bots import (
    filler,
    funding_rate_updater,
    jit_maker,
    liquidator,
    lp_settler,
    pnl_settler,
    revenue_settler,
    trigger,
)

__all__ = [
    "filler",
    "funding_rate_updater",
    "jit_maker",
    "liquidator",
    "lp_settler",
    "pnl_settler",
    "revenue_settler",
    "trigger",
]
