"""Simulated resting makers: post-only quotes around the oracle price, refreshed as it moves.

Every ``requote_every`` slots (with a seeded offset per maker, so makers do not all requote
in the same slot) a :class:`Maker` replaces its quotes in each of its markets with one
transaction: ``CancelOrders`` for the market, then a ladder of post-only limit orders at
fixed offsets from the current oracle price (``levels``: basis points and notional per level,
both sides) and, with ``pegged_bps``, one oracle-pegged order per side (a limit order at an
``oracle_price_offset``, which floats with the oracle between requotes). The order is
``TryPostOnly``: a quote that would take (cross the vAMM or a resting order) is silently not
placed rather than failing the whole requote.

With ``lp_shares`` the maker also becomes a BAL provider at start: ``AddPerpLpShares`` in
its first market, so the vAMM's trades move part of their base and fees to it (settled by
the LP settler).

Units: offsets in basis points of the oracle price, notionals QUOTE_PRECISION, shares
AMM_RESERVE_PRECISION.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keepers.demo.actors import MarketView, Sender
from keepers.demo.traders import MarketInfo, base_for_notional, offset_price, round_to
from protocol.constants import QUOTE_PRECISION
from protocol.instructions import CancelOrders, PlacePerpOrder
from protocol.instructions.lp import AddPerpLpShares
from protocol.keys import Keypair
from protocol.numeric import div_trunc
from protocol.state import OrderParams
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam

BPS = 10_000
DEFAULT_LEVELS: tuple[tuple[int, int], ...] = (
    (2, 1_500 * QUOTE_PRECISION),
    (5, 4_000 * QUOTE_PRECISION),
    (12, 10_000 * QUOTE_PRECISION),
)


@dataclass(frozen=True, slots=True)
class MakerProfile:
    name: str
    collateral: int  # QUOTE_PRECISION
    markets: tuple[int, ...] = (0,)
    levels: tuple[tuple[int, int], ...] = DEFAULT_LEVELS  # (bps from the oracle, notional)
    pegged_bps: int | None = 8
    pegged_notional: int = 2_000 * QUOTE_PRECISION
    requote_every: int = 5  # slots
    lp_shares: int = 0  # AMM_RESERVE_PRECISION; 0: not a BAL provider


def quote_orders(profile: MakerProfile, market: MarketInfo, oracle_price: int) -> list[OrderParams]:
    """The maker's quotes in ``market`` around ``oracle_price``: for each level a bid below
    and an ask above, then the pegged pair."""
    tick = market.order_tick_size
    index = market.market_index
    orders: list[OrderParams] = []
    for bps, notional in profile.levels:
        base = base_for_notional(notional, oracle_price, market)
        for direction, sign in ((PositionDirection.Long, -1), (PositionDirection.Short, 1)):
            price = offset_price(oracle_price, sign * bps, tick)
            if sign > 0 and price <= oracle_price:
                price += tick  # an ask strictly above the oracle even for tiny offsets
            orders.append(
                OrderParams(
                    OrderType.Limit,
                    MarketType.Perp,
                    direction,
                    base,
                    index,
                    price=price,
                    post_only=PostOnlyParam.TryPostOnly,
                )
            )
    if profile.pegged_bps is not None:
        base = base_for_notional(profile.pegged_notional, oracle_price, market)
        offset = max(tick, round_to(div_trunc(oracle_price * profile.pegged_bps, BPS), tick))
        for direction, sign in ((PositionDirection.Long, -1), (PositionDirection.Short, 1)):
            orders.append(
                OrderParams(
                    OrderType.Limit,
                    MarketType.Perp,
                    direction,
                    base,
                    index,
                    oracle_price_offset=sign * offset,
                    post_only=PostOnlyParam.TryPostOnly,
                )
            )
    return orders


class Maker:
    def __init__(
        self,
        profile: MakerProfile,
        keypair: Keypair,
        *,
        sender: Sender,
        view: MarketView,
        markets: Mapping[int, MarketInfo],
        seed: int,
    ) -> None:
        self.profile = profile
        self.keypair = keypair
        self._sender = sender
        self._view = view
        self._markets: Sequence[MarketInfo] = [markets[i] for i in profile.markets if i in markets]
        rng = random.Random(f"maker/{seed}/{profile.name}")  # noqa: S311 -- simulation
        self._phase = rng.randrange(profile.requote_every)
        self.requotes = 0
        self.lp_added = False
        self.steps = 0

    @property
    def authority(self) -> bytes:
        return self.keypair.pubkey

    async def add_liquidity(self) -> bool:
        """Become a BAL provider in the first market (``lp_shares`` > 0)."""
        if self.profile.lp_shares <= 0 or not self._markets:
            return False
        market = self._markets[0]
        result = await self._sender.send(
            "add_perp_lp_shares",
            [AddPerpLpShares(self.authority, 0, market.market_index, self.profile.lp_shares)],
            [self.keypair],
        )
        self.lp_added = result is not None and result.ok
        return self.lp_added

    async def requote(self) -> None:
        for market in self._markets:
            price = self._view.price(market.oracle_id)
            if price is None:
                continue
            instructions: list[object] = [
                CancelOrders(self.authority, 0, MarketType.Perp, market.market_index)
            ]
            instructions += [
                PlacePerpOrder(self.authority, 0, params)
                for params in quote_orders(self.profile, market, price)
            ]
            result = await self._sender.send("requote", instructions, [self.keypair])
            if result is not None and result.ok:
                self.requotes += 1

    async def run(self) -> None:
        await self.requote()
        while True:
            await self._view.next_slot()
            self.steps += 1
            if (self.steps + self._phase) % self.profile.requote_every == 0:
                await self.requote()


def default_maker_profiles(
    count: int, markets: Sequence[int], *, lp_shares: int = 0
) -> list[MakerProfile]:
    """``count`` makers quoting every market; the first is also a BAL provider in the first
    market with ``lp_shares`` (AMM_RESERVE_PRECISION; 0: none)."""
    profiles = []
    for i in range(count):
        widen = i  # later makers quote a little wider: the book gets depth, not a crowd
        profiles.append(
            MakerProfile(
                name=f"maker-{i}",
                collateral=500_000 * QUOTE_PRECISION,
                markets=tuple(markets),
                levels=tuple((bps + widen, notional) for bps, notional in DEFAULT_LEVELS),
                pegged_bps=8 + widen,
                requote_every=4 + i,
                lp_shares=lp_shares if i == 0 else 0,
            )
        )
    return profiles
