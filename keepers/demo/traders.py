"""Simulated traders: every order type the exchange has, placed through signed transactions.

Each :class:`Trader` owns a keypair and a funded account. On each slot it sees it acts with a
probability (``activity_pct``) and picks one of :class:`OrderKind` by its weights:

* ``market``        a market order; the program derives its auction (JIT makers answer it,
  the filler crosses it with resting makers and, after the auction, the vAMM);
* ``limit_take``    a limit order priced through the market (it gets an auction too);
* ``limit_rest``    a passive limit order with a short expiry (``max_ts``): it rests on the
  book, may be taken, and the filler cancels it for a reward once it expires;
* ``oracle_pegged`` a resting limit order at a fixed offset from the oracle price;
* ``oracle_market`` an ``Oracle`` order: a market order whose auction and limit are offsets
  from the oracle price;
* ``stop_market`` / ``stop_limit`` trigger orders a few bps from the oracle price, which
  the trigger bot fires once the oracle crosses them;
* ``intent``        a signed order intent (:class:`~protocol.signed_intent.OrderIntent`),
  never sent to the node by the trader: it is signed and published on the bus's intents topic
  as an :class:`~keepers.bus.schemas.IntentMessage`, for a filler or JIT maker to place and
  fill.

A trader keeps what its position could become (the position, plus its open orders' worst
case, plus what it placed or published since it last read its account) within
``max_leverage_pct`` of its collateral. Past that it trades only to reduce (``reduce_only``
market orders), or, with ``hold_at_cap`` (the crash scenario's leveraged traders), it waits.
It re-reads its own account from the node every few slots and cancels its oldest order when
it holds too many.

Every amount is an int at the protocol's precision; the trader's *choices* come from a
``random.Random`` seeded from the run's seed and the trader's name.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog

from keepers.bus.schemas import IntentMessage
from keepers.demo.actors import MarketView, Sender, wall_ns
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.instructions import CancelOrder, PlacePerpOrder
from protocol.keys import Keypair
from protocol.numeric import div_trunc
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams, User
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

_log = structlog.get_logger("keepers.demo")

BPS = 10_000
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
INTENT_USER_ORDER_IDS = range(1, 256)  # user_order_id 0 means "none"


class OrderKind(StrEnum):
    MARKET = "market"
    LIMIT_TAKE = "limit_take"
    LIMIT_REST = "limit_rest"
    ORACLE_PEGGED = "oracle_pegged"
    ORACLE_MARKET = "oracle_market"
    STOP_MARKET = "stop_market"
    STOP_LIMIT = "stop_limit"
    INTENT = "intent"


DEFAULT_WEIGHTS: Mapping[OrderKind, int] = {
    OrderKind.MARKET: 22,
    OrderKind.LIMIT_TAKE: 8,
    OrderKind.LIMIT_REST: 8,
    OrderKind.ORACLE_PEGGED: 6,
    OrderKind.ORACLE_MARKET: 6,
    OrderKind.STOP_MARKET: 8,
    OrderKind.STOP_LIMIT: 5,
    OrderKind.INTENT: 22,
}


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """What a participant needs of a perp market (from the node's market account)."""

    market_index: int
    oracle_id: str
    order_step_size: int  # BASE_PRECISION
    order_tick_size: int  # PRICE_PRECISION
    min_order_size: int  # BASE_PRECISION


@dataclass(frozen=True, slots=True)
class TraderProfile:
    """How one trader behaves. ``collateral`` QUOTE_PRECISION; ``order_notional`` the range of
    an order's value (QUOTE_PRECISION); ``long_pct`` the chance that an order which may add to
    the position is a buy; ``weights`` per :class:`OrderKind`; ``markets``: the perp market
    indexes it trades (the first listed most, each next one half as often)."""

    name: str
    collateral: int
    max_leverage_pct: int = 300
    activity_pct: int = 35
    order_notional: tuple[int, int] = (300 * QUOTE_PRECISION, 3_000 * QUOTE_PRECISION)
    long_pct: int = 50  # chance that a position-increasing order is a buy
    weights: Mapping[OrderKind, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    markets: tuple[int, ...] = (0,)
    max_open_orders: int = 8
    refresh_every: int = 4  # slots between reads of its own account
    active_until_step: int | None = None  # stop trading after this many slots (None: never)
    hold_at_cap: bool = False  # at the position cap: wait (True) or trade it back down


# --- pure order construction -----------------------------------------------------------------
def round_to(value: int, unit: int) -> int:
    """``value`` rounded down to a multiple of ``unit`` (both > 0)."""
    return value - value % unit


def offset_price(price: int, bps: int, tick: int) -> int:
    """``price`` moved by ``bps`` basis points (negative: down), on the tick grid."""
    return max(tick, round_to(price + div_trunc(price * bps, BPS), tick))


def base_for_notional(notional: int, price: int, market: MarketInfo) -> int:
    """Base (BASE_PRECISION) worth ``notional`` (QUOTE_PRECISION) at ``price``, on the step
    grid and at least the market's minimum order size."""
    raw = notional * BASE_PRECISION * PRICE_PRECISION // (price * QUOTE_PRECISION)
    return max(market.min_order_size, round_to(raw, market.order_step_size))


def pick_direction(rng: random.Random, long_pct: int) -> PositionDirection:
    return LONG if rng.randrange(100) < long_pct else SHORT


def opposite(direction: PositionDirection) -> PositionDirection:
    return SHORT if direction == LONG else LONG


def sign_of(direction: PositionDirection) -> int:
    return 1 if direction == LONG else -1


def build_order(
    kind: OrderKind,
    direction: PositionDirection,
    base: int,
    market: MarketInfo,
    oracle_price: int,
    *,
    rng: random.Random,
    now_ts: int,
) -> OrderParams:
    """The params of one order of ``kind`` (not an intent: see :func:`build_intent_params`)."""
    s = sign_of(direction)
    tick = market.order_tick_size
    index = market.market_index
    if kind is OrderKind.MARKET:
        return OrderParams(OrderType.Market, MarketType.Perp, direction, base, index)
    if kind is OrderKind.LIMIT_TAKE:
        price = offset_price(oracle_price, s * rng.randint(15, 40), tick)
        return OrderParams(OrderType.Limit, MarketType.Perp, direction, base, index, price=price)
    if kind is OrderKind.LIMIT_REST:
        price = offset_price(oracle_price, -s * rng.randint(3, 25), tick)
        return OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            direction,
            base,
            index,
            price=price,
            post_only=PostOnlyParam.TryPostOnly,
            max_ts=now_ts + rng.randint(2, 6),
        )
    if kind is OrderKind.ORACLE_PEGGED:
        offset = -s * div_trunc(oracle_price * rng.randint(2, 15), BPS)
        return OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            direction,
            base,
            index,
            oracle_price_offset=round_to(offset, tick) if offset > 0 else -round_to(-offset, tick),
            post_only=PostOnlyParam.TryPostOnly,
        )
    if kind is OrderKind.ORACLE_MARKET:
        limit = div_trunc(oracle_price * rng.randint(15, 40), BPS)
        start = div_trunc(oracle_price * 5, BPS)
        return OrderParams(
            OrderType.Oracle,
            MarketType.Perp,
            direction,
            base,
            index,
            oracle_price_offset=s * round_to(limit, tick),
            auction_duration=rng.randint(10, 20),
            auction_start_price=-s * round_to(start, tick),
            auction_end_price=s * round_to(limit, tick),
        )
    if kind in (OrderKind.STOP_MARKET, OrderKind.STOP_LIMIT):
        # a buy stop above the price, a sell stop below: it fires when the oracle moves on
        trigger = offset_price(oracle_price, s * rng.randint(1, 8), tick)
        condition = OrderTriggerCondition.Above if s > 0 else OrderTriggerCondition.Below
        if kind is OrderKind.STOP_MARKET:
            return OrderParams(
                OrderType.TriggerMarket,
                MarketType.Perp,
                direction,
                base,
                index,
                trigger_price=trigger,
                trigger_condition=condition,
            )
        return OrderParams(
            OrderType.TriggerLimit,
            MarketType.Perp,
            direction,
            base,
            index,
            price=offset_price(trigger, s * 30, tick),
            trigger_price=trigger,
            trigger_condition=condition,
        )
    raise ValueError(f"{kind} is not placed through a transaction")


def build_intent_params(
    direction: PositionDirection,
    base: int,
    market: MarketInfo,
    oracle_price: int,
    *,
    rng: random.Random,
    user_order_id: int,
) -> OrderParams:
    """A market order with explicit auction params moving the order's way (as a signed intent
    requires): from 5 bps better to 5 bps worse than the oracle (an eager trader starts where
    resting makers already fill it) up to 15-40 bps worse, over 8-20 slots."""
    s = sign_of(direction)
    tick = market.order_tick_size
    limit = offset_price(oracle_price, s * rng.randint(15, 40), tick)
    start = offset_price(oracle_price, s * rng.randint(-5, 5), tick)
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        direction,
        base,
        market.market_index,
        price=limit,
        user_order_id=user_order_id,
        auction_duration=rng.randint(8, 20),
        auction_start_price=start,
        auction_end_price=limit,
    )


# --- the trader --------------------------------------------------------------------------------
IntentPublisher = Callable[[int, IntentMessage], Awaitable[None]]
"""``publish(market_index, message)``: put a signed intent on the bus."""


class UserReader(Protocol):
    """What a trader reads of the node (``NodeClient.user``)."""

    async def user(self, authority: bytes, sub_account_id: int = 0) -> User | None: ...


class Trader:
    """One simulated trader (see the module docstring)."""

    def __init__(
        self,
        profile: TraderProfile,
        keypair: Keypair,
        *,
        sender: Sender,
        view: MarketView,
        reader: UserReader,
        markets: Mapping[int, MarketInfo],
        publish_intent: IntentPublisher,
        on_intent: Callable[[bytes, int, int], None],
        seed: int,
    ) -> None:
        self.profile = profile
        self.keypair = keypair
        self._sender = sender
        self._view = view
        self._reader = reader
        self._markets = {i: markets[i] for i in profile.markets if i in markets}
        self._publish_intent = publish_intent
        self._on_intent = on_intent
        self._rng = random.Random(f"trader/{seed}/{profile.name}")  # noqa: S311 -- simulation
        self._kinds = [k for k, w in profile.weights.items() if w > 0]
        self._kind_weights = [profile.weights[k] for k in self._kinds]
        self._market_ids = list(self._markets)
        count = len(self._market_ids)
        self._market_weights = [2 ** (count - i) for i in range(count)]
        self._next_user_order_id = 0
        self.positions: dict[int, int] = {}  # market index -> base (BASE_PRECISION)
        self.open_bids: dict[int, int] = {}  # market index -> base its open buys may add
        self.open_asks: dict[int, int] = {}  # market index -> base its open sells may take (<= 0)
        # placed or published since the last read of the account (not in open_* yet)
        self.pending: dict[tuple[int, PositionDirection], int] = {}
        self.open_orders: list[tuple[int, int]] = []  # (order id, slot placed), oldest first
        self.unconfirmed_orders = 0  # placed since the last read of the account
        self.steps = 0
        self.placed: dict[str, int] = {}  # by OrderKind, accepted
        self.intents_published = 0

    @property
    def authority(self) -> bytes:
        return self.keypair.pubkey

    # --- state ---------------------------------------------------------------------------------
    async def refresh(self) -> None:
        try:
            user = await self._reader.user(self.authority, 0)
        except Exception as exc:  # a failed read keeps the old picture; the next one retries
            _log.debug("trader refresh failed", trader=self.profile.name, error=repr(exc))
            return
        if user is None:
            return
        self.positions = {p.market_index: p.base_asset_amount for p in user.perp_positions}
        self.open_bids = {p.market_index: p.open_bids for p in user.perp_positions}
        self.open_asks = {p.market_index: p.open_asks for p in user.perp_positions}
        self.pending.clear()
        self.unconfirmed_orders = 0
        self.open_orders = sorted(
            (o.order_id, o.slot) for o in user.orders if o.status == OrderStatus.Open
        )

    def _collateral_cap(self, price: int) -> int:
        """The largest position (BASE_PRECISION) the profile allows at ``price``."""
        notional = self.profile.collateral * self.profile.max_leverage_pct // 100
        return notional * BASE_PRECISION * PRICE_PRECISION // (price * QUOTE_PRECISION)

    def exposure(self, market_index: int, direction: PositionDirection) -> int:
        """The largest position (BASE_PRECISION, >= 0 means that way) ``direction``'s orders
        could leave: the position, plus the open orders' worst case, plus what was placed
        since the account was last read."""
        position = self.positions.get(market_index, 0)
        pending = self.pending.get((market_index, direction), 0)
        if direction == LONG:
            return position + self.open_bids.get(market_index, 0) + pending
        return -(position + self.open_asks.get(market_index, 0)) + pending

    def choose_direction(
        self, market_index: int, price: int
    ) -> tuple[PositionDirection, bool, int] | None:
        """The direction to trade, whether the order must only reduce the position, and the
        most base it may add (BASE_PRECISION); ``None``: nothing to do (at the cap)."""
        position = self.positions.get(market_index, 0)
        cap = self._collateral_cap(price)
        if not self.profile.hold_at_cap:
            if position >= cap:
                return SHORT, True, 0
            if position <= -cap:
                return LONG, True, 0
        direction = pick_direction(self._rng, self.profile.long_pct)
        room = cap - self.exposure(market_index, direction)
        if room <= 0:
            return None
        return direction, False, room

    def _user_order_id(self) -> int:
        ids = INTENT_USER_ORDER_IDS
        self._next_user_order_id = self._next_user_order_id % len(ids) + 1
        return self._next_user_order_id

    # --- acting --------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.refresh()
        while True:
            await self._view.next_slot()
            self.steps += 1
            if self.steps % self.profile.refresh_every == 0:
                await self.refresh()
            until = self.profile.active_until_step
            if until is not None and self.steps > until:
                continue
            if self._rng.randrange(100) >= self.profile.activity_pct:
                continue
            await self.act()

    async def act(self) -> None:
        if len(self.open_orders) + self.unconfirmed_orders >= self.profile.max_open_orders:
            if self.open_orders:
                order_id, _ = self.open_orders.pop(0)
                cancel = CancelOrder(self.authority, 0, order_id=order_id)
                await self._sender.send("cancel_order", [cancel], [self.keypair])
            return
        market_index = self._rng.choices(self._market_ids, self._market_weights)[0]
        market = self._markets[market_index]
        price = self._view.price(market.oracle_id)
        if price is None or self._view.slot == 0:
            return
        chosen = self.choose_direction(market_index, price)
        if chosen is None:
            return
        direction, reduce_only, room = chosen
        low, high = self.profile.order_notional
        base = base_for_notional(self._rng.randint(low, high), price, market)
        if not reduce_only:
            base = min(base, round_to(room, market.order_step_size))
            if base < market.min_order_size:
                return
        if reduce_only:
            held = abs(self.positions.get(market_index, 0))
            base = min(base, round_to(held, market.order_step_size))
            if base < market.min_order_size:
                return
            params = OrderParams(
                OrderType.Market,
                MarketType.Perp,
                direction,
                base,
                market_index,
                reduce_only=True,
            )
            await self._place(OrderKind.MARKET, params)
            return
        kind = self._rng.choices(self._kinds, self._kind_weights)[0]
        if kind is OrderKind.INTENT:
            await self._publish(direction, base, market, price)
            return
        params = build_order(
            kind, direction, base, market, price, rng=self._rng, now_ts=self._view.ts
        )
        await self._place(kind, params)

    async def _place(self, kind: OrderKind, params: OrderParams) -> None:
        result = await self._sender.send(
            f"place_{kind.value}", [PlacePerpOrder(self.authority, 0, params)], [self.keypair]
        )
        if result is not None and result.ok:
            self.placed[kind.value] = self.placed.get(kind.value, 0) + 1
            if not params.reduce_only:
                key = (params.market_index, params.direction)
                self.pending[key] = self.pending.get(key, 0) + params.base_asset_amount
            if params.order_type != OrderType.Market:
                self.unconfirmed_orders += 1  # its id arrives with the next read

    async def _publish(
        self, direction: PositionDirection, base: int, market: MarketInfo, price: int
    ) -> None:
        user_order_id = self._user_order_id()
        params = build_intent_params(
            direction, base, market, price, rng=self._rng, user_order_id=user_order_id
        )
        intent = OrderIntent(
            authority=self.authority,
            sub_account_id=0,
            params=params,
            slot=self._view.slot,
            uuid=os.urandom(8),
        )
        signature = intent.sign(self.keypair)
        message = IntentMessage.from_intent(intent, self.authority, signature)
        self._on_intent(self.authority, user_order_id, wall_ns())
        try:
            await self._publish_intent(market.market_index, message)
        except Exception as exc:  # the bus is down: the intent is simply lost, as on a network
            _log.debug("intent not published", trader=self.profile.name, error=repr(exc))
            return
        self.intents_published += 1
        key = (market.market_index, direction)
        self.pending[key] = self.pending.get(key, 0) + base
        _log.debug(
            "intent published",
            trader=self.profile.name,
            uuid=intent.uuid.hex(),
            slot=intent.slot,
            market=market.market_index,
        )


def default_profiles(
    count: int,
    markets: Sequence[int],
    *,
    leveraged: bool = True,
    leveraged_until: int | None = None,
) -> list[TraderProfile]:
    """``count`` ordinary traders over ``markets`` (each starting at a different market), plus,
    with ``leveraged``, two that build leveraged longs early and hold them until step
    ``leveraged_until`` (the crash), then stop: the crash scenario's liquidations and
    bankruptcy."""
    profiles: list[TraderProfile] = []
    for i in range(count):
        rotated = tuple(markets[(i + j) % len(markets)] for j in range(len(markets)))
        profiles.append(
            TraderProfile(
                name=f"trader-{i}",
                collateral=20_000 * QUOTE_PRECISION,
                max_leverage_pct=250,
                long_pct=(30, 50, 70)[i % 3],
                markets=rotated,
            )
        )
    if leveraged:
        build_only = {OrderKind.MARKET: 1}
        for name, leverage in (("leveraged-5x", 500), ("leveraged-9x", 900)):
            profiles.append(
                TraderProfile(
                    name=name,
                    collateral=10_000 * QUOTE_PRECISION,
                    max_leverage_pct=leverage,
                    activity_pct=60,
                    order_notional=(8_000 * QUOTE_PRECISION, 15_000 * QUOTE_PRECISION),
                    long_pct=100,
                    weights=build_only,
                    markets=(markets[0],),
                    hold_at_cap=True,
                    active_until_step=leveraged_until,
                )
            )
    return profiles
