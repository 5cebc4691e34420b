"""The demo's oracle: a seeded random walk per oracle, published as signed ``UpdateOracle``.

The node has no price source of its own: prices change only through ``UpdateOracle``
transactions signed by the configured oracle authority (``State.oracle_authority``). The feed
holds that key and, on every slot it sees, moves each walk one step and sends one transaction
with an ``UpdateOracle`` per oracle (confidence 1 bp of the price).

A walk (:class:`PriceWalk`) is a pure function of its seed and step number: step ``k`` moves
the price by a uniform draw in ``[-vol_ppm, +vol_ppm]`` parts per million plus a pull of
``reversion_ppm`` per million of the distance back to its anchor (so a long run stays near its
start instead of wandering off), all in integer arithmetic at PRICE_PRECISION. A
:class:`Shock` moves it sharply over a few steps (the crash scenario) and moves the anchor with
it: the market settles at the new level. Steps are counted by the caller's ``steps_due`` (the
demo's slot count) and caught up in a burst when the feed fell behind, so a slow feed
publishes fewer of the intermediate prices, never a different path.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keepers.demo.actors import MarketView, Sender
from protocol.instructions import UpdateOracle
from protocol.keys import Keypair
from protocol.numeric import div_trunc

PPM = 1_000_000
CONFIDENCE_DIVISOR = 10_000  # confidence = 1 bp of the price


@dataclass(frozen=True, slots=True)
class Shock:
    """Move the price by ``ppm`` parts per million (negative: down) spread over ``steps`` steps,
    starting at step ``at_step``."""

    at_step: int
    ppm: int
    steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("a shock takes at least one step")
        if self.ppm <= -PPM:
            raise ValueError("a shock cannot take the price to zero or below")


class PriceWalk:
    """One oracle's seeded price path (PRICE_PRECISION)."""

    def __init__(
        self,
        oracle_id: str,
        start_price: int,
        *,
        seed: int,
        vol_ppm: int = 400,
        reversion_ppm: int = 20_000,
        shocks: Sequence[Shock] = (),
    ) -> None:
        if start_price <= 0:
            raise ValueError(f"{oracle_id}: start price must be > 0")
        self.oracle_id = oracle_id
        self.price = start_price
        self.anchor = start_price
        self.step_count = 0
        self._vol_ppm = vol_ppm
        self._reversion_ppm = reversion_ppm
        self._shocks = tuple(shocks)
        self._rng = random.Random(f"oracle/{seed}/{oracle_id}")  # noqa: S311 -- simulation

    def step(self) -> int:
        """Advance one step; returns the new price."""
        k = self.step_count
        self.step_count += 1
        gap_ppm = div_trunc((self.anchor - self.price) * PPM, self.price)
        move_ppm = self._rng.randint(-self._vol_ppm, self._vol_ppm) + div_trunc(
            gap_ppm * self._reversion_ppm, PPM
        )
        for shock in self._shocks:
            if shock.at_step <= k < shock.at_step + shock.steps:
                part = div_trunc(shock.ppm, shock.steps)
                move_ppm += part
                self.anchor += div_trunc(self.anchor * part, PPM)
        self.price = max(1, self.price + div_trunc(self.price * move_ppm, PPM))
        return self.price

    @property
    def confidence(self) -> int:
        return max(1, self.price // CONFIDENCE_DIVISOR)


class OracleFeed:
    """Publishes every walk once per slot, signed by the oracle authority."""

    def __init__(
        self,
        sender: Sender,
        authority: Keypair,
        view: MarketView,
        walks: Sequence[PriceWalk],
        *,
        steps_due: Callable[[], int] | None = None,
    ) -> None:
        self._sender = sender
        self._authority = authority
        self._view = view
        self.walks = list(walks)
        self.published = 0  # accepted update transactions
        self._steps_due = steps_due
        self._slots_seen = 0

    def prices(self) -> dict[str, int]:
        return {walk.oracle_id: walk.price for walk in self.walks}

    async def publish(self) -> bool:
        """Send the walks' current prices; ``True`` if the node accepted them."""
        instructions = [
            UpdateOracle(walk.oracle_id, walk.price, walk.confidence) for walk in self.walks
        ]
        result = await self._sender.send("update_oracle", instructions, [self._authority])
        if result is not None and result.ok:
            self.published += 1
            return True
        return False

    def catch_up(self) -> bool:
        """Step every walk up to the steps due; ``True`` if any price moved."""
        due = self._steps_due() if self._steps_due is not None else self._slots_seen
        moved = False
        for walk in self.walks:
            while walk.step_count < due:
                walk.step()
                moved = True
        return moved

    async def run(self) -> None:
        """On every slot seen: the walks catch up with the steps due (``steps_due``, default
        one per slot seen) and the latest prices are published, until cancelled."""
        while True:
            await self._view.next_slot()
            self._slots_seen += 1
            self.catch_up()
            await self.publish()
