"""Property: the book answers every query exactly as a naive list-based reference model does.

A hypothesis state machine drives :class:`dlob.DLOB` and :class:`Reference` (a plain list of
orders; every query classifies each order afresh at the query's slot with the program's
predicates, prices it with ``get_limit_price`` and sorts with ``sorted``) through random
inserts of fixed, oracle-pegged, market, oracle, trigger orders and signed intents by several
users whose order ids collide, partial and full fills, cancels, triggers, oracle moves, slot
advances and queries at slots ahead of the book's. After every step it compares best bid/ask,
L2 top-N (with and without vAMM levels), L3, crossing resting orders, nodes to fill (with and
without a vAMM and a minimum auction duration), nodes to trigger, JIT auction nodes and
expired orders.

The reference is written from the rules, not from the book: its matching predicates below are
transcribed from the program's ``math/matching.rs`` on their own; a post-only order is never
offered to the vAMM (the fill engine refuses post-only takers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dlob import DLOB, NodeToFill, VammLevels
from protocol.math.auction import calculate_auction_price, get_limit_price, has_auction_price
from protocol.math.orders import order_satisfies_trigger_condition, should_expire_order
from protocol.state.user import Order, UserKey
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

LONG, SHORT = PositionDirection.Long, PositionDirection.Short
PERP = MarketType.Perp
MARKET = 0
TICK = 1_000
STEP = 1_000
BASE_ORACLE = 100_000
# Three accounts; two share an authority (sub-accounts 0 and 1), which may trade with each other.
USERS: list[UserKey] = [(b"\x01" * 32, 0), (b"\x01" * 32, 1), (b"\x02" * 32, 0)]
ORDER_IDS = st.integers(1, 5)  # per-user ids, so users collide on them all the time
UUIDS = st.sampled_from([bytes([i]) * 8 for i in range(1, 4)])

Ident = tuple[UserKey, int, bool]  # (user, order id or uuid as int, is intent)


# --- the program's rules, transcribed independently -------------------------------------------
def ref_is_maker_for_taker(maker: Order, taker: Order, slot: int) -> bool:
    if taker.post_only:
        return False
    maker_resting = maker.is_limit_order() and (maker.post_only or maker.is_auction_complete(slot))
    if not maker_resting:
        return False
    taker_resting = taker.is_limit_order() and (taker.post_only or taker.is_auction_complete(slot))
    if not taker_resting or maker.post_only:
        return True
    return maker.slot + maker.auction_duration <= taker.slot + taker.auction_duration


def ref_crosses(maker_direction: PositionDirection, maker_price: int, taker_price: int) -> bool:
    return taker_price <= maker_price if maker_direction == LONG else taker_price >= maker_price


def ref_amm_available(order: Order, min_auction_duration: int, slot: int) -> bool:
    return (
        min_auction_duration == 0
        or bool(order.bit_flags & OrderBitFlag.SafeTriggerOrder)
        or slot - order.slot > min_auction_duration
    )


@dataclass
class RefOrder:
    user: UserKey
    order: Order
    uuid: bytes | None = None

    @property
    def ident(self) -> Ident:
        if self.uuid is not None:
            return (self.user, int.from_bytes(self.uuid, "big"), True)
        return (self.user, self.order.order_id, False)

    def unfilled(self) -> int:
        return self.order.base_asset_amount - self.order.base_asset_amount_filled


@dataclass
class Reference:
    orders: list[RefOrder] = field(default_factory=list)

    def find(self, user: UserKey, order_id: int) -> RefOrder | None:
        for r in self.orders:
            if r.uuid is None and r.user == user and r.order.order_id == order_id:
                return r
        return None

    def find_intent(self, user: UserKey, uuid: bytes) -> RefOrder | None:
        for r in self.orders:
            if r.uuid == uuid and r.user == user:
                return r
        return None

    # classification at a slot
    @staticmethod
    def is_untriggered(r: RefOrder) -> bool:
        o = r.order
        return o.order_type in (OrderType.TriggerMarket, OrderType.TriggerLimit) and (
            o.trigger_condition in (OrderTriggerCondition.Above, OrderTriggerCondition.Below)
        )

    def is_resting(self, r: RefOrder, slot: int) -> bool:
        o = r.order
        return (
            r.uuid is None
            and not self.is_untriggered(r)
            and o.order_type in (OrderType.Limit, OrderType.TriggerLimit)
            and (o.post_only or o.auction_duration == 0 or slot - o.slot > o.auction_duration)
        )

    def is_taker(self, r: RefOrder, slot: int) -> bool:
        return not self.is_untriggered(r) and not self.is_resting(r, slot)

    @staticmethod
    def price(r: RefOrder, oracle: int, slot: int) -> int | None:
        return get_limit_price(r.order, oracle, None, slot, TICK)

    def resting(self, direction: PositionDirection, oracle: int, slot: int) -> list[RefOrder]:
        """Resting orders of one side, best first, ties by slot, user, order id."""
        side = [r for r in self.orders if r.order.direction == direction]
        side = [r for r in side if self.is_resting(r, slot)]
        sign = -1 if direction == LONG else 1

        def key(r: RefOrder) -> tuple[Any, ...]:
            price = self.price(r, oracle, slot)
            assert price is not None
            return (sign * price, r.order.slot, r.user, r.order.order_id)

        return sorted(side, key=key)

    def takers(self, direction: PositionDirection, slot: int) -> list[RefOrder]:
        side = [r for r in self.orders if r.order.direction == direction]
        side = [r for r in side if self.is_taker(r, slot)]
        return sorted(side, key=lambda r: (r.order.slot, r.uuid is not None, r.ident[:2]))

    # queries
    def best(self, direction: PositionDirection, oracle: int, slot: int) -> int | None:
        prices = [self.price(r, oracle, slot) for r in self.resting(direction, oracle, slot)]
        if not prices:
            return None
        return (
            max(p for p in prices if p is not None)
            if direction == LONG
            else min(p for p in prices if p is not None)
        )

    def l2(
        self,
        direction: PositionDirection,
        oracle: int,
        slot: int,
        depth: int,
        vamm: tuple[tuple[int, int], ...],
    ) -> list[tuple[int, int, tuple[tuple[str, int], ...]]]:
        book: dict[int, int] = {}
        for r in self.resting(direction, oracle, slot):
            price = self.price(r, oracle, slot)
            assert price is not None
            book[price] = book.get(price, 0) + r.unfilled()
        amm: dict[int, int] = {}
        for price, size in vamm:
            amm[price] = amm.get(price, 0) + size
        prices = sorted(set(book) | set(amm), reverse=direction == LONG)[:depth]
        out = []
        for p in prices:
            sources = tuple(
                (name, size)
                for name, size in (("dlob", book.get(p, 0)), ("vamm", amm.get(p, 0)))
                if size
            )
            out.append((p, book.get(p, 0) + amm.get(p, 0), sources))
        return out

    def l3(self, direction: PositionDirection, oracle: int, slot: int) -> list[tuple[Any, ...]]:
        return [
            (self.price(r, oracle, slot), r.unfilled(), r.user, r.order.order_id)
            for r in self.resting(direction, oracle, slot)
        ]

    def triggers(self, oracle: int) -> list[Ident]:
        above = [
            r
            for r in self.orders
            if self.is_untriggered(r)
            and r.order.trigger_condition == OrderTriggerCondition.Above
            and oracle > r.order.trigger_price
        ]
        below = [
            r
            for r in self.orders
            if self.is_untriggered(r)
            and r.order.trigger_condition == OrderTriggerCondition.Below
            and oracle < r.order.trigger_price
        ]
        above.sort(key=lambda r: (r.order.trigger_price, r.order.slot, r.user, r.order.order_id))
        below.sort(key=lambda r: (-r.order.trigger_price, r.order.slot, r.user, r.order.order_id))
        return [r.ident for r in above + below]

    def expired(self, ts: int) -> list[Ident]:
        out = [
            r
            for r in self.orders
            if r.order.order_type not in (OrderType.TriggerMarket, OrderType.TriggerLimit)
            and r.order.max_ts != 0
            and ts > r.order.max_ts
        ]
        out.sort(key=lambda r: (r.order.max_ts, r.uuid is not None, r.ident[:2]))
        return [r.ident for r in out]

    def jit(self, oracle: int, slot: int) -> list[tuple[Ident, int]]:
        out = []
        for direction in (LONG, SHORT):
            for r in self.takers(direction, slot):
                o = r.order
                if has_auction_price(o, o.slot, o.auction_duration, slot):
                    out.append((r.ident, calculate_auction_price(o, slot, TICK, oracle)))
        return out

    def fills(
        self,
        oracle: int,
        slot: int,
        ts: int,
        fallback_bid: int | None,
        fallback_ask: int | None,
        min_auction_duration: int,
        *,
        crossing_only: bool = False,
    ) -> list[tuple[Any, ...]]:
        left: dict[int, int] = {}  # id(RefOrder) -> virtual unfilled
        entries: dict[int, tuple[RefOrder, list[RefOrder], list[bool]]] = {}
        order_seen: list[int] = []

        def rem(r: RefOrder) -> int:
            return left.get(id(r), r.unfilled())

        def touch(r: RefOrder) -> tuple[RefOrder, list[RefOrder], list[bool]]:
            if id(r) not in entries:
                entries[id(r)] = (r, [], [False])
                order_seen.append(id(r))
            return entries[id(r)]

        def expired(r: RefOrder) -> bool:
            return should_expire_order(r.order, ts)

        def price(r: RefOrder) -> int:
            p = self.price(r, oracle, slot)
            assert p is not None
            return p

        bids = self.resting(LONG, oracle, slot)
        asks = self.resting(SHORT, oracle, slot)
        # resting orders crossing each other
        if bids and asks and price(bids[0]) >= price(asks[0]):
            best_bid = price(bids[0])
            for ask in asks:
                if price(ask) > best_bid:
                    break
                ask_left = rem(ask)
                if ask_left == 0 or expired(ask):
                    continue
                for bid in bids:
                    if price(bid) < price(ask):
                        break
                    bid_left = rem(bid)
                    if bid_left == 0 or bid.user == ask.user or expired(bid):
                        continue
                    if ref_is_maker_for_taker(ask.order, bid.order, slot):
                        touch(bid)[1].append(ask)
                    elif ref_is_maker_for_taker(bid.order, ask.order, slot):
                        touch(ask)[1].append(bid)
                    else:
                        continue
                    base = min(ask_left, bid_left)
                    ask_left -= base
                    left[id(bid)] = bid_left - base
                    if ask_left == 0:
                        break
                left[id(ask)] = ask_left
        if crossing_only:
            return [self._fill_key(entries[i]) for i in order_seen]
        # takers against makers and the vAMM
        for taker_dir, makers, fallback in (
            (LONG, asks, fallback_ask),
            (SHORT, bids, fallback_bid),
        ):
            maker_dir = SHORT if taker_dir == LONG else LONG
            for taker in self.takers(taker_dir, slot):
                o = taker.order
                if o.post_only or expired(taker):
                    continue
                tp = self.price(taker, oracle, slot)
                if makers and (tp is None or ref_crosses(maker_dir, price(makers[0]), tp)):
                    taker_left = rem(taker)
                    for maker in makers:
                        if taker_left == 0:
                            break
                        if tp is not None and not ref_crosses(maker_dir, price(maker), tp):
                            break
                        maker_left = rem(maker)
                        if (
                            maker_left == 0
                            or maker.user == taker.user
                            or expired(maker)
                            or not ref_is_maker_for_taker(maker.order, o, slot)
                        ):
                            continue
                        base = min(taker_left, maker_left)
                        taker_left -= base
                        left[id(maker)] = maker_left - base
                        touch(taker)[1].append(maker)
                    left[id(taker)] = taker_left
                if (
                    fallback is not None
                    and (tp is None or ref_crosses(maker_dir, fallback, tp))
                    and ref_amm_available(o, min_auction_duration, slot)
                ):
                    touch(taker)[2][0] = True
        # resting orders crossing the vAMM
        for side, fallback, vamm_dir in ((asks, fallback_bid, LONG), (bids, fallback_ask, SHORT)):
            if fallback is None:
                continue
            for r in side:
                if not ref_crosses(vamm_dir, fallback, price(r)):
                    break
                if r.order.post_only or rem(r) == 0 or expired(r):
                    continue
                if ref_amm_available(r.order, min_auction_duration, slot):
                    touch(r)[2][0] = True
        out = [self._fill_key(entries[i]) for i in order_seen]
        out.extend((ident, (), False, True) for ident in self._expired_idents(ts))
        return out

    def _expired_idents(self, ts: int) -> list[Ident]:
        return self.expired(ts)

    @staticmethod
    def _fill_key(entry: tuple[RefOrder, list[RefOrder], list[bool]]) -> tuple[Any, ...]:
        taker, makers, amm = entry
        return (taker.ident, tuple(m.ident for m in makers), amm[0], False)


def node_ident(n: Any) -> Ident:
    if n.uuid is not None:
        return (n.user, int.from_bytes(n.uuid, "big"), True)
    return (n.user, n.order.order_id, False)


def fill_key(f: NodeToFill) -> tuple[Any, ...]:
    return (node_ident(f.node), tuple(node_ident(m) for m in f.makers), f.amm, f.expired)


# --- strategies --------------------------------------------------------------------------------


class Ticks(int):
    """A fixed price drawn as ticks away from the oracle; placed at that distance from the
    oracle of the moment (at least one tick), so that fixed and pegged orders interleave."""

    def at(self, oracle: int) -> int:
        return max(TICK, oracle - oracle % TICK + int(self) * TICK)


prices = st.one_of(st.integers(-15, 15), st.integers(-100, 100)).map(Ticks)
# offsets deliberately off the tick grid: several offsets then round to one price
offsets = (
    st.one_of(st.integers(-12, 12), st.integers(-150, 150), st.integers(-300, 300))
    .filter(lambda x: x != 0)
    .map(lambda x: x * 100)
)
sizes = st.integers(1, 5).map(lambda k: k * STEP)
directions = st.sampled_from([LONG, SHORT])


@st.composite
def order_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["fixed", "fixed", "pegged", "pegged", "market", "oracle", "trigger", "triggered"]
        )
    )
    direction = draw(directions)
    spec: dict[str, Any] = {
        "direction": direction,
        "base_asset_amount": draw(sizes),
        "age": draw(st.one_of(st.integers(0, 2), st.integers(0, 12))),
        "max_ts_delta": draw(st.one_of(st.none(), st.integers(-4, 12))),
    }
    if kind in ("fixed", "pegged"):
        spec["order_type"] = OrderType.Limit
        post_only = draw(st.booleans())
        spec["post_only"] = post_only
        if kind == "fixed":
            spec["price"] = draw(prices)
        else:
            spec["oracle_price_offset"] = draw(offsets)
        if not post_only and draw(st.booleans()):
            spec["auction_duration"] = draw(st.integers(1, 8))
            if kind == "fixed":
                a, b = sorted(draw(st.tuples(prices, prices)))
                start, end = (a, b) if direction == LONG else (b, a)
            else:
                a, b = sorted(draw(st.tuples(offsets, offsets)))
                start, end = (a, b) if direction == LONG else (b, a)
            spec["auction_start_price"], spec["auction_end_price"] = start, end
    elif kind == "market":
        spec["order_type"] = OrderType.Market
        spec["price"] = draw(st.one_of(st.just(0), prices))
        spec["auction_duration"] = draw(st.integers(0, 8))
        a, b = sorted(draw(st.tuples(prices, prices)))
        spec["auction_start_price"], spec["auction_end_price"] = (
            (a, b) if direction == LONG else (b, a)
        )
    elif kind == "oracle":
        spec["order_type"] = OrderType.Oracle
        spec["oracle_price_offset"] = draw(st.one_of(st.just(0), offsets))
        spec["auction_duration"] = draw(st.integers(0, 8))
        a, b = sorted(draw(st.tuples(offsets, offsets)))
        spec["auction_start_price"], spec["auction_end_price"] = (
            (a, b) if direction == LONG else (b, a)
        )
    else:
        limit = draw(st.booleans())
        spec["order_type"] = OrderType.TriggerLimit if limit else OrderType.TriggerMarket
        spec["trigger_price"] = draw(prices)
        condition = draw(
            st.sampled_from([OrderTriggerCondition.Above, OrderTriggerCondition.Below])
        )
        if kind == "triggered":
            condition = (
                OrderTriggerCondition.TriggeredAbove
                if condition == OrderTriggerCondition.Above
                else OrderTriggerCondition.TriggeredBelow
            )
            spec["auction_duration"] = draw(st.integers(0, 8))
            a, b = sorted(draw(st.tuples(prices, prices)))
            spec["auction_start_price"], spec["auction_end_price"] = (
                (a, b) if direction == LONG else (b, a)
            )
        spec["trigger_condition"] = condition
        if limit:
            spec["price"] = draw(prices)
        if draw(st.booleans()):
            spec["bit_flags"] = int(OrderBitFlag.SafeTriggerOrder)
    return spec


@st.composite
def intent_specs(draw: st.DrawFn) -> dict[str, Any]:
    direction = draw(directions)
    kind = draw(st.sampled_from(["market", "limit"]))
    a, b = sorted(draw(st.tuples(prices, prices)))
    spec: dict[str, Any] = {
        "direction": direction,
        "base_asset_amount": draw(sizes),
        "age": draw(st.one_of(st.integers(0, 2), st.integers(0, 12))),
        "max_ts_delta": draw(st.one_of(st.none(), st.integers(-4, 12))),
        "order_type": OrderType.Market if kind == "market" else OrderType.Limit,
        "price": draw(prices) if kind == "limit" else draw(st.one_of(st.just(0), prices)),
        "auction_duration": draw(st.integers(0, 8)),
        "auction_start_price": a if direction == LONG else b,
        "auction_end_price": b if direction == LONG else a,
        "bit_flags": int(OrderBitFlag.SignedMessage),
    }
    return spec


def build_order(spec: dict[str, Any], order_id: int, slot: int, ts: int, oracle: int) -> Order:
    fields = {
        k: v.at(oracle) if isinstance(v, Ticks) else v
        for k, v in spec.items()
        if k not in ("age", "max_ts_delta")
    }
    max_ts_delta = spec["max_ts_delta"]
    return Order(
        order_id=order_id,
        market_index=MARKET,
        market_type=PERP,
        slot=slot - spec["age"],
        max_ts=0 if max_ts_delta is None else ts + max_ts_delta,
        status=OrderStatus.Open,
        **fields,
    )


class BookVersusReference(RuleBasedStateMachine):
    @initialize(
        batch=st.lists(
            st.tuples(order_specs(), st.sampled_from(USERS), ORDER_IDS), min_size=3, max_size=12
        )
    )
    def setup(self, batch: list[tuple[dict[str, Any], UserKey, int]]) -> None:
        self.slot = 1_000
        self.lag = 0  # queries look this many slots past the book's slot
        self.oracle = BASE_ORACLE
        self.fallback: tuple[int, int] | None = None
        self.min_auction_duration = 0
        self.vamm = VammLevels(bids=(), asks=())
        self.book = DLOB(self.slot)
        self.book.add_market(PERP, MARKET, tick_size=TICK)
        self.ref = Reference()
        self.insert(batch)

    @property
    def ts(self) -> int:
        return self.slot // 2  # 400 ms slots: half a second per slot, rounded

    # --- updates -------------------------------------------------------------------------------
    @rule(
        batch=st.lists(
            st.tuples(order_specs(), st.sampled_from(USERS), ORDER_IDS), min_size=1, max_size=4
        )
    )
    def insert(self, batch: list[tuple[dict[str, Any], UserKey, int]]) -> None:
        for spec, user, order_id in batch:
            if self.ref.find(user, order_id) is not None:
                continue
            order = build_order(spec, order_id, self.slot, self.ts, self.oracle)
            self.book.insert(user, copy.copy(order))
            self.ref.orders.append(RefOrder(user, order))

    @rule(spec=intent_specs(), user=st.sampled_from(USERS), uuid=UUIDS)
    def insert_intent(self, spec: dict[str, Any], user: UserKey, uuid: bytes) -> None:
        if self.ref.find_intent(user, uuid) is not None:
            return
        order = build_order(spec, 0, self.slot, self.ts, self.oracle)
        self.book.insert_signed_intent(user, uuid, copy.copy(order))
        self.ref.orders.append(RefOrder(user, order, uuid))

    @rule(data=st.data(), user=st.sampled_from(USERS), order_id=ORDER_IDS)
    def cancel(self, data: st.DataObject, user: UserKey, order_id: int) -> None:
        on_chain = [r for r in self.ref.orders if r.uuid is None]
        pick_existing: bool = data.draw(st.booleans())
        if on_chain and pick_existing:
            picked = data.draw(st.sampled_from(on_chain))
            user, order_id = picked.user, picked.order.order_id
        r = self.ref.find(user, order_id)
        removed = self.book.remove(user, order_id)
        assert (removed is None) == (r is None)
        if r is not None:
            assert removed is not None and removed.order_id == order_id
            self.ref.orders.remove(r)
        assert self.book.get(user, order_id) is None

    @rule(user=st.sampled_from(USERS), uuid=UUIDS)
    def cancel_intent(self, user: UserKey, uuid: bytes) -> None:
        r = self.ref.find_intent(user, uuid)
        removed = self.book.remove_signed_intent(user, uuid)
        assert (removed is None) == (r is None)
        if r is not None:
            self.ref.orders.remove(r)

    @rule(data=st.data(), fraction=st.integers(1, 8))
    def fill(self, data: st.DataObject, fraction: int) -> None:
        on_chain = [r for r in self.ref.orders if r.uuid is None]
        if not on_chain:
            return
        r = data.draw(st.sampled_from(on_chain))
        o = r.order
        # a fraction of eighths of what is left: 8/8 fills the order and removes it
        filled = o.base_asset_amount_filled + max(1, r.unfilled() * fraction // 8)
        self.book.update_fill(r.user, o.order_id, filled)
        if filled >= o.base_asset_amount:
            self.ref.orders.remove(r)
            assert self.book.get(r.user, o.order_id) is None
        else:
            o.base_asset_amount_filled = filled
            node = self.book.get(r.user, o.order_id)
            assert node is not None and node.order.base_asset_amount_filled == filled

    @rule(data=st.data(), duration=st.integers(0, 6))
    def trigger(self, data: st.DataObject, duration: int) -> None:
        untriggered = [r for r in self.ref.orders if self.ref.is_untriggered(r)]
        if not untriggered:
            return
        r = data.draw(st.sampled_from(untriggered))
        o = copy.copy(r.order)
        above = o.trigger_condition == OrderTriggerCondition.Above
        o.trigger_condition = (
            OrderTriggerCondition.TriggeredAbove if above else OrderTriggerCondition.TriggeredBelow
        )
        o.slot = self.slot
        o.auction_duration = duration
        lo, hi = sorted((o.trigger_price, o.trigger_price + 5 * TICK))
        o.auction_start_price, o.auction_end_price = (lo, hi) if o.direction == LONG else (hi, lo)
        self.book.replace_order(r.user, copy.copy(o))
        r.order = o

    @rule(delta=st.one_of(st.integers(-3_000, 3_000), st.integers(-20_000, 20_000)))
    def move_oracle(self, delta: int) -> None:
        # off the tick grid on purpose; low enough at times that a pegged bid hits the floor
        self.oracle = max(1, self.oracle + delta)

    @rule(data=st.data())
    def move_oracle_onto_a_price(self, data: st.DataObject) -> None:
        # exactly onto an order's trigger or limit price: the strict/inclusive boundaries
        prices = sorted(
            {r.order.trigger_price for r in self.ref.orders}
            | {r.order.price for r in self.ref.orders} - {0}
        )
        if prices:
            self.oracle = data.draw(st.sampled_from(prices))

    @rule(slots=st.integers(0, 6))
    def advance_slot(self, slots: int) -> None:
        self.slot += self.lag + slots
        self.lag = 0
        self.book.advance_slot(self.slot)

    @rule(lag=st.integers(0, 10))
    def look_ahead(self, lag: int) -> None:
        self.lag = lag

    @rule(
        fallback=st.one_of(st.none(), st.tuples(prices, st.integers(0, 20))),
        min_auction_duration=st.sampled_from([0, 0, 3]),
    )
    def set_vamm(self, fallback: tuple[int, int] | None, min_auction_duration: int) -> None:
        if fallback is None:
            self.fallback = None
            self.vamm = VammLevels(bids=(), asks=())
        else:
            bid = Ticks(fallback[0]).at(self.oracle)
            ask = bid + fallback[1] * TICK
            self.fallback = (bid, ask)
            self.vamm = VammLevels(
                bids=((bid, 2 * STEP), (bid - TICK, 3 * STEP)),
                asks=((ask, 2 * STEP), (ask + 2 * TICK, 3 * STEP)),
            )
        self.min_auction_duration = min_auction_duration

    @rule(data=st.data())
    def duplicate_insert_is_refused(self, data: st.DataObject) -> None:
        if not self.ref.orders:
            return
        r = data.draw(st.sampled_from(self.ref.orders))
        if r.uuid is not None:
            return
        try:
            self.book.insert(r.user, copy.copy(r.order))
        except ValueError:
            return
        raise AssertionError("a second order with the same (user, order id) was accepted")

    # --- comparisons ----------------------------------------------------------------------------
    @invariant()
    def same_size(self) -> None:
        if not hasattr(self, "book"):
            return
        assert len(self.book) == len(self.ref.orders)

    @invariant()
    def same_prices_and_levels(self) -> None:
        if not hasattr(self, "book"):
            return
        s, oracle = self.slot + self.lag, self.oracle
        assert self.book.best_bid(PERP, MARKET, oracle, s) == self.ref.best(LONG, oracle, s)
        assert self.book.best_ask(PERP, MARKET, oracle, s) == self.ref.best(SHORT, oracle, s)
        for depth, vamm in ((1, None), (3, None), (5, self.vamm)):
            l2 = self.book.get_l2(PERP, MARKET, oracle, s, depth, vamm=vamm)
            levels = () if vamm is None else vamm.bids
            assert [(x.price, x.size, x.sources) for x in l2.bids] == self.ref.l2(
                LONG, oracle, s, depth, levels
            )
            levels = () if vamm is None else vamm.asks
            assert [(x.price, x.size, x.sources) for x in l2.asks] == self.ref.l2(
                SHORT, oracle, s, depth, levels
            )
        l3 = self.book.get_l3(PERP, MARKET, oracle, s)
        assert [(x.price, x.size, x.user, x.order_id) for x in l3.bids] == self.ref.l3(
            LONG, oracle, s
        )
        assert [(x.price, x.size, x.user, x.order_id) for x in l3.asks] == self.ref.l3(
            SHORT, oracle, s
        )

    @invariant()
    def same_fills_triggers_and_auctions(self) -> None:
        if not hasattr(self, "book"):
            return
        s, oracle, ts = self.slot + self.lag, self.oracle, self.ts
        crossing = self.book.find_crossing_resting_limit_orders(PERP, MARKET, oracle, s, ts)
        assert [fill_key(f) for f in crossing] == self.ref.fills(
            oracle, s, ts, None, None, 0, crossing_only=True
        )
        assert [
            fill_key(f) for f in self.book.find_nodes_to_fill(PERP, MARKET, oracle, s, ts)
        ] == self.ref.fills(oracle, s, ts, None, None, 0)
        if self.fallback is not None:
            bid, ask = self.fallback
            book_fills = self.book.find_nodes_to_fill(
                PERP,
                MARKET,
                oracle,
                s,
                ts,
                fallback_bid=bid,
                fallback_ask=ask,
                min_auction_duration=self.min_auction_duration,
            )
            assert [fill_key(f) for f in book_fills] == self.ref.fills(
                oracle, s, ts, bid, ask, self.min_auction_duration
            )
        triggered = self.book.find_nodes_to_trigger(PERP, MARKET, oracle)
        assert [node_ident(n) for n in triggered] == self.ref.triggers(oracle)
        for n in triggered:
            assert order_satisfies_trigger_condition(n.order, oracle)
        jit = self.book.find_jit_auction_nodes(PERP, MARKET, oracle, s)
        assert [(node_ident(j.node), j.auction_price) for j in jit] == self.ref.jit(oracle, s)
        expired = self.book.find_expired_nodes(PERP, MARKET, ts)
        assert [node_ident(n) for n in expired] == self.ref.expired(ts)


BookVersusReference.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookVersusReference = BookVersusReference.TestCase
