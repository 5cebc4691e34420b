"""The exchange's operator: keeps each traded vAMM's price near its oracle with admin repegs.

The default markets have no formulaic repeg (``curve_update_intensity`` 0): a vAMM's price
moves only with the trades against it, so after an oracle move it can sit far from the oracle,
where the program refuses funding (``block_operation``: mark and oracle too divergent) and PnL
settlement (``PriceBandsBreached``). An operator watching the markets repegs them with
``RepegAmmCurve``, signed by the exchange's admin key (``State.admin``), every
``every`` slots for each market whose reserve price is more than ``threshold_bps`` from the
oracle.

:func:`repeg_candidate` picks the peg with the program's own math: it aims the curve's terminal
price (where the users' net position would close) at the near edge of the oracle's confidence
band and halves the move back toward the current peg until the program's
``calculate_repeg_validity`` accepts it and the repeg costs the market nothing (a repeg that
would have to be paid from fees is left to a later one). The program checks everything again.

Units: prices PRICE_PRECISION, pegs PEG_PRECISION, basis points of the oracle price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from keepers.demo.actors import MarketView, Sender
from keepers.demo.traders import MarketInfo
from protocol.instructions import RepegAmmCurve
from protocol.keys import Keypair
from protocol.math.amm import calculate_terminal_price_and_reserves, reserve_price
from protocol.math.repeg import adjust_peg_cost, calculate_repeg_validity
from protocol.numeric import div_trunc
from protocol.state import PerpMarket
from protocol.state.oracle import OraclePriceData

BPS = 10_000
MAX_HALVINGS = 24


class MarketReader(Protocol):
    async def perp_market(self, market_index: int) -> PerpMarket | None: ...


def repeg_candidate(
    market: PerpMarket, oracle: OraclePriceData, *, threshold_bps: int = 30
) -> int | None:
    """The peg to repeg ``market`` to, or ``None`` (close enough, or no free valid repeg)."""
    amm = market.amm
    price = oracle.price
    if price <= 0 or abs(reserve_price(amm) - price) * BPS <= price * threshold_bps:
        return None
    terminal_before, _, _ = calculate_terminal_price_and_reserves(amm)
    if terminal_before <= 0:
        return None
    # the terminal price is proportional to the peg: aim it just outside the confidence band
    if price > terminal_before:
        target = price - oracle.confidence - 1
    else:
        target = price + oracle.confidence + 1
    peg = amm.peg_multiplier
    candidate = max(1, div_trunc(peg * target, terminal_before))
    for _ in range(MAX_HALVINGS):
        if candidate == peg:
            return None
        repegged, cost = adjust_peg_cost(market, candidate)
        _, direction_ok, profitable, impact_ok = calculate_repeg_validity(
            repegged, oracle, True, terminal_before
        )
        if direction_ok and profitable and impact_ok and cost <= 0:
            return candidate
        candidate = peg + div_trunc(candidate - peg, 2)
    return None


class Operator:
    """Repegs the traded markets toward their oracles (see the module docstring)."""

    def __init__(
        self,
        sender: Sender,
        admin: Keypair,
        view: MarketView,
        reader: MarketReader,
        markets: Mapping[int, MarketInfo],
        *,
        every: int = 10,
        threshold_bps: int = 30,
    ) -> None:
        self._sender = sender
        self._admin = admin
        self._view = view
        self._reader = reader
        self._markets = dict(markets)
        self._every = every
        self._threshold_bps = threshold_bps
        self.repegs = 0
        self.steps = 0

    async def repeg_all(self) -> None:
        for index, info in sorted(self._markets.items()):
            message = self._view.oracles.get(info.oracle_id)
            market = await self._reader.perp_market(index)
            if message is None or market is None:
                continue
            oracle = OraclePriceData(price=message.price, confidence=message.confidence, delay=0)
            peg = repeg_candidate(market, oracle, threshold_bps=self._threshold_bps)
            if peg is None:
                continue
            result = await self._sender.send(
                "repeg_amm_curve", [RepegAmmCurve(index, peg)], [self._admin]
            )
            if result is not None and result.ok:
                self.repegs += 1

    async def run(self) -> None:
        while True:
            await self._view.next_slot()
            self.steps += 1
            if self.steps % self._every == 0:
                await self.repeg_all()
