"""The decentralized limit order book: an incremental, event-fed book of the program's orders.

Layout. Per market (market type + index) and side, each order category of the program has its
own sorted container (``sortedcontainers.SortedList`` of sort entries, see :mod:`dlob.node`):

* resting limit (fixed price): key ``(price, slot, user, order_id)``, best first (bids by
  descending price);
* floating limit (oracle-pegged): key ``(oracle_price_offset, slot, ...)``. The limit price is
  a non-decreasing function of the offset at any oracle price, so an oracle move changes no
  order of the container and needs no re-sort;
* taking limit (a limit order still in its auction), market (market, oracle and triggered
  trigger-market orders) and signed intents (off-chain, not yet placed): key ``(slot, ...)``;
* per market, trigger above / trigger below (untriggered trigger orders): key trigger price,
  the order in which a moving oracle reaches them;
* per market, orders with a ``max_ts``: key ``max_ts``, for expiry.

An index ``(user, order_id) -> node`` (and ``(user, uuid)`` for intents) gives O(1) lookup;
insert, fill update and remove are O(log n). Resting sides also keep per-price (fixed) and
per-offset (floating) size aggregates, so L2 touches levels, not orders.

Slots. The book has a slot (``advance_slot``; an insert moves it up to the order's slot). A
limit order taking in its auction becomes resting once ``slot > order.slot + auction_duration``
(``Order.is_resting_limit_order``); ``advance_slot`` moves exactly the due orders, popped from
a heap keyed by that slot, never scanning the book. Queries take their own slot, which must not
be before the book's: orders due by the query's slot but not yet moved are read from the heap
(a pruned walk over its due prefix) and treated as resting, so a query never changes the book.
Invariant: every order's slot <= the book's slot <= every query's slot, which keeps the
protocol's auction math (it rejects a slot before the order's) total on the book.

Prices. Every limit price comes from ``protocol.math.auction.get_limit_price`` (and auction
prices from ``calculate_auction_price``), with the market's tick size, so the book and the
program never disagree. Amounts are ints at the program's precisions; no floats.

Known limits and deviations:

* The vAMM is represented by the fallback bid/ask prices a caller passes (see
  :mod:`dlob.vamm`). Whether the AMM may fill an order is the caller's ``amm_can_fill``
  (:func:`dlob.vamm.amm_can_fill_rule` binds the protocol's ``amm_can_fill_order`` to a market,
  slot and oracle reading), or by default the keepers' rule
  :func:`dlob.vamm.is_fallback_available_liquidity_source`. Post-only orders are never offered
  to the vAMM: the fill engine refuses to fill a post-only order as a taker.
* Reduce-only and margin are not checked (the book holds no positions); the program rejects
  such fills itself.
* A signed intent is only ever a taker; post-only or trigger intents are refused.
* Virtual fills: within one ``find_nodes_to_fill`` call a maker (and a taker) is used at most
  up to its unfilled size, in the order: resting orders crossing each other, takers (bids then
  asks, each oldest first), then resting orders crossing the vAMM. Nothing is written back.
* The taker list (market orders, limit orders in auction, intents) is walked whole: the program
  fills or expires takers within their auction, so it stays short; each taker costs O(1) when
  nothing crosses it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from sortedcontainers import SortedList

from dlob.errors import DuplicateOrder, SlotInThePast, UnbookableOrder, UnknownMarket
from dlob.node import (
    RESTING_KINDS,
    DLOBNode,
    Entry,
    JitAuctionNode,
    L2Level,
    L2OrderBook,
    L3Level,
    L3OrderBook,
    MarketKey,
    NodeKind,
    NodeToFill,
)
from dlob.vamm import VammLevels, is_fallback_available_liquidity_source
from protocol.math.auction import calculate_auction_price, get_limit_price, has_auction_price
from protocol.math.matching import do_orders_cross, is_maker_for_taker
from protocol.math.orders import order_satisfies_trigger_condition, should_expire_order
from protocol.state.user import Order, UserKey
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)

MAX_AUCTION_DURATION = 255  # Order.auction_duration is a u8
DEFAULT_L2_DEPTH = 20

_TAKING_ORDER_TYPES = frozenset({OrderType.Market, OrderType.TriggerMarket, OrderType.Oracle})
_ON_CHAIN = 0  # secondary key of taker entries: on-chain orders sort before intents
_INTENT = 1


class _Side:
    """One side (bids or asks) of one market."""

    __slots__ = (
        "direction",
        "fixed",
        "fixed_level_keys",
        "fixed_levels",
        "floating",
        "floating_level_keys",
        "floating_levels",
        "intents",
        "market",
        "sign",
        "taking",
    )

    def __init__(self, direction: PositionDirection) -> None:
        self.direction = direction
        # Keys are sign * price (or sign * offset) so that ascending order is best first.
        self.sign = -1 if direction == PositionDirection.Long else 1
        self.fixed: Any = SortedList()
        self.floating: Any = SortedList()
        self.taking: Any = SortedList()
        self.market: Any = SortedList()
        self.intents: Any = SortedList()
        # unfilled size per price key / offset key; a key is present iff its size is > 0
        self.fixed_levels: dict[int, int] = {}
        self.fixed_level_keys: Any = SortedList()
        self.floating_levels: dict[int, int] = {}
        self.floating_level_keys: Any = SortedList()


class _MarketBook:
    __slots__ = (
        "expiry",
        "is_prediction_market",
        "market_index",
        "market_type",
        "pending",
        "pending_seq",
        "sides",
        "tick_size",
        "trigger_above",
        "trigger_below",
    )

    def __init__(
        self,
        market_type: MarketType,
        market_index: int,
        tick_size: int,
        is_prediction_market: bool,
    ) -> None:
        self.market_type = market_type
        self.market_index = market_index
        self.tick_size = tick_size
        self.is_prediction_market = is_prediction_market
        # indexed by PositionDirection: 0 = bids (Long), 1 = asks (Short)
        self.sides = (_Side(PositionDirection.Long), _Side(PositionDirection.Short))
        self.trigger_above: Any = SortedList()  # (trigger_price, slot, user, id, node)
        self.trigger_below: Any = SortedList()  # (-trigger_price, slot, user, id, node)
        self.expiry: Any = SortedList()  # (max_ts, on-chain/intent, user, id, node)
        # (slot the auction completes, seq, node) for taking limit orders; lazily pruned
        self.pending: list[tuple[int, int, DLOBNode]] = []
        self.pending_seq = 0

    def limit_price(self, order: Order, oracle_price: int, slot: int) -> int | None:
        return get_limit_price(
            order, oracle_price, None, slot, self.tick_size, self.is_prediction_market
        )

    def resting_price(self, order: Order, oracle_price: int, slot: int) -> int:
        price = self.limit_price(order, oracle_price, slot)
        if price is None:  # refused at insert: a resting order always has a price
            raise AssertionError(f"resting order {order.order_id} has no limit price")
        return price


def _ident(node: DLOBNode) -> int:
    if node.uuid is not None:
        return int.from_bytes(node.uuid, "big")
    return node.order.order_id


def _classify(order: Order, slot: int) -> NodeKind:
    if order.must_be_triggered() and not order.triggered():
        if order.trigger_condition == OrderTriggerCondition.Above:
            return NodeKind.TriggerAbove
        return NodeKind.TriggerBelow
    if order.order_type in _TAKING_ORDER_TYPES:
        return NodeKind.Market
    if order.is_resting_limit_order(slot):
        return NodeKind.FloatingLimit if order.oracle_price_offset != 0 else NodeKind.RestingLimit
    return NodeKind.TakingLimit


def _add_level(levels: dict[int, int], keys: Any, key: int, size: int) -> None:
    current = levels.get(key)
    if current is None:
        levels[key] = size
        keys.add(key)
    else:
        levels[key] = current + size


def _sub_level(levels: dict[int, int], keys: Any, key: int, size: int) -> None:
    left = levels[key] - size
    if left == 0:
        del levels[key]
        keys.remove(key)
    else:
        levels[key] = left


class _Fills:
    """Accumulates fills per taker node, in first-seen order."""

    __slots__ = ("amm", "makers", "order")

    def __init__(self) -> None:
        self.order: list[DLOBNode] = []
        self.makers: dict[DLOBNode, list[DLOBNode]] = {}
        self.amm: dict[DLOBNode, bool] = {}

    def _touch(self, taker: DLOBNode) -> None:
        if taker not in self.makers:
            self.order.append(taker)
            self.makers[taker] = []
            self.amm[taker] = False

    def add_maker(self, taker: DLOBNode, maker: DLOBNode) -> None:
        self._touch(taker)
        self.makers[taker].append(maker)

    def add_amm(self, taker: DLOBNode) -> None:
        self._touch(taker)
        self.amm[taker] = True

    def result(self) -> list[NodeToFill]:
        return [NodeToFill(n, tuple(self.makers[n]), self.amm[n]) for n in self.order]


class DLOB:
    """The order book of every market a keeper follows. Pure and synchronous.

    The book takes ownership of the ``Order`` objects it is given (it updates
    ``base_asset_amount_filled`` in place on fills); pass a clone to keep one unchanged.
    """

    def __init__(self, slot: int = 0) -> None:
        self._markets: dict[MarketKey, _MarketBook] = {}
        self._orders: dict[tuple[UserKey, int], DLOBNode] = {}
        self._intents: dict[tuple[UserKey, bytes], DLOBNode] = {}
        self._slot = slot

    @property
    def slot(self) -> int:
        """The slot the book has reached (``advance_slot``, or the newest order's slot)."""
        return self._slot

    # --- markets --------------------------------------------------------------------------
    def add_market(
        self,
        market_type: MarketType,
        market_index: int,
        *,
        tick_size: int,
        is_prediction_market: bool = False,
    ) -> None:
        """Follow a market; ``tick_size`` is its ``order_tick_size`` (prices round to it)."""
        if tick_size <= 0:
            raise ValueError(f"tick_size must be positive, got {tick_size}")
        key = (market_type, market_index)
        if key not in self._markets:
            self._markets[key] = _MarketBook(
                market_type, market_index, tick_size, is_prediction_market
            )

    def markets(self) -> list[MarketKey]:
        return list(self._markets)

    def _market(self, market_type: MarketType, market_index: int) -> _MarketBook:
        mb = self._markets.get((market_type, market_index))
        if mb is None:
            raise UnknownMarket(market_type, market_index)
        return mb

    # --- lookups ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._orders) + len(self._intents)

    def get(self, user: UserKey, order_id: int) -> DLOBNode | None:
        return self._orders.get((user, order_id))

    def get_signed_intent(self, user: UserKey, uuid: bytes) -> DLOBNode | None:
        return self._intents.get((user, uuid))

    def nodes(self) -> Iterator[DLOBNode]:
        """Every node (orders, then intents), in no particular order."""
        yield from self._orders.values()
        yield from self._intents.values()

    # --- updates ------------------------------------------------------------------------------
    def insert(self, user: UserKey, order: Order) -> DLOBNode:
        """Add an open on-chain order of ``user``. O(log n)."""
        key = (user, order.order_id)
        if key in self._orders:
            raise DuplicateOrder(user, order.order_id)
        mb = self._market(order.market_type, order.market_index)
        self._check_bookable(user, order.order_id, order)
        if order.slot > self.slot:
            self.advance_slot(order.slot)
        node = DLOBNode(user, order, _classify(order, self.slot))
        self._orders[key] = node
        self._place(mb, node, order.order_id, _ON_CHAIN)
        return node

    def insert_signed_intent(self, user: UserKey, uuid: bytes, order: Order) -> DLOBNode:
        """Add an off-chain signed order of ``user`` (a taker until it is placed)."""
        key = (user, uuid)
        if key in self._intents:
            raise DuplicateOrder(user, uuid)
        mb = self._market(order.market_type, order.market_index)
        self._check_bookable(user, uuid, order)
        if order.post_only or order.must_be_triggered():
            raise UnbookableOrder(user, uuid, "a signed intent must be a taker order")
        if order.slot > self.slot:
            self.advance_slot(order.slot)
        node = DLOBNode(user, order, NodeKind.SignedIntent, uuid=uuid)
        self._intents[key] = node
        self._place(mb, node, int.from_bytes(uuid, "big"), _INTENT)
        return node

    def remove(self, user: UserKey, order_id: int) -> Order | None:
        """Drop an order (cancelled, filled, expired); ``None`` if it is not in the book."""
        node = self._orders.pop((user, order_id), None)
        if node is None:
            return None
        self._unplace(node)
        return node.order

    def remove_signed_intent(self, user: UserKey, uuid: bytes) -> Order | None:
        node = self._intents.pop((user, uuid), None)
        if node is None:
            return None
        self._unplace(node)
        return node.order

    def update_fill(self, user: UserKey, order_id: int, base_asset_amount_filled: int) -> None:
        """Record an order's cumulative filled base; a fully filled order leaves the book.

        O(1) for a partial fill: no key depends on the filled amount.
        """
        node = self._orders.get((user, order_id))
        if node is None:
            return
        order = node.order
        if base_asset_amount_filled >= order.base_asset_amount:
            self.remove(user, order_id)
            return
        if base_asset_amount_filled < 0:
            raise UnbookableOrder(user, order_id, "negative filled amount")
        delta = base_asset_amount_filled - order.base_asset_amount_filled
        if delta == 0:
            return
        if node.kind in RESTING_KINDS:
            mb = self._markets[(order.market_type, order.market_index)]
            side = mb.sides[order.direction]
            if node.kind is NodeKind.RestingLimit:
                levels, key = side.fixed_levels, side.sign * order.price
            else:
                levels, key = side.floating_levels, side.sign * order.oracle_price_offset
            # levels hold unfilled sizes; this order's own unfilled part keeps the level > 0
            levels[key] -= delta
        order.base_asset_amount_filled = base_asset_amount_filled

    def replace_order(self, user: UserKey, order: Order) -> DLOBNode:
        """Put ``order`` in place of the user's order with its id (e.g. after a trigger or a
        modify, which change keys); inserts it if there was none. O(log n)."""
        self.remove(user, order.order_id)
        return self.insert(user, order)

    def advance_slot(self, slot: int) -> None:
        """Move the book to ``slot``: limit orders whose auction has ended start resting."""
        if slot < self._slot:
            raise SlotInThePast(slot, self._slot)
        self._slot = slot
        for mb in self._markets.values():
            pending = mb.pending
            while pending and pending[0][0] <= slot:
                node = heapq.heappop(pending)[2]
                if not node.alive or node.kind is not NodeKind.TakingLimit:
                    continue
                self._unplace_entry(mb, node)
                order = node.order
                node.kind = (
                    NodeKind.FloatingLimit
                    if order.oracle_price_offset != 0
                    else NodeKind.RestingLimit
                )
                self._place_entry(mb, node, order.order_id, _ON_CHAIN)

    # --- placement ----------------------------------------------------------------------------
    @staticmethod
    def _check_bookable(user: UserKey, ident: int | bytes, order: Order) -> None:
        if order.status != OrderStatus.Open:
            raise UnbookableOrder(user, ident, f"status is {order.status.name}, not Open")
        if order.base_asset_amount_filled >= order.base_asset_amount:
            raise UnbookableOrder(user, ident, "nothing left to fill")
        if order.post_only and order.has_auction():
            raise UnbookableOrder(user, ident, "a post-only order cannot have an auction")
        if order.is_limit_order() and order.price == 0 and order.oracle_price_offset == 0:
            raise UnbookableOrder(user, ident, "a limit order needs a price or an oracle offset")

    def _place(self, mb: _MarketBook, node: DLOBNode, ident: int, secondary: int) -> None:
        self._place_entry(mb, node, ident, secondary)
        order = node.order
        if order.max_ts != 0 and not order.must_be_triggered():
            mb.expiry.add((order.max_ts, secondary, node.user, ident, node))

    def _place_entry(self, mb: _MarketBook, node: DLOBNode, ident: int, secondary: int) -> None:
        order = node.order
        kind = node.kind
        user = node.user
        entry: Entry
        if kind is NodeKind.RestingLimit:
            side = mb.sides[order.direction]
            key = side.sign * order.price
            entry = (key, order.slot, user, ident, node)
            side.fixed.add(entry)
            _add_level(
                side.fixed_levels,
                side.fixed_level_keys,
                key,
                order.base_asset_amount - order.base_asset_amount_filled,
            )
        elif kind is NodeKind.FloatingLimit:
            side = mb.sides[order.direction]
            key = side.sign * order.oracle_price_offset
            entry = (key, order.slot, user, ident, node)
            side.floating.add(entry)
            _add_level(
                side.floating_levels,
                side.floating_level_keys,
                key,
                order.base_asset_amount - order.base_asset_amount_filled,
            )
        elif kind is NodeKind.TakingLimit:
            entry = (order.slot, secondary, user, ident, node)
            mb.sides[order.direction].taking.add(entry)
            complete_slot = order.slot + order.auction_duration + 1
            heapq.heappush(mb.pending, (complete_slot, mb.pending_seq, node))
            mb.pending_seq += 1
        elif kind is NodeKind.Market:
            entry = (order.slot, secondary, user, ident, node)
            mb.sides[order.direction].market.add(entry)
        elif kind is NodeKind.SignedIntent:
            entry = (order.slot, secondary, user, ident, node)
            mb.sides[order.direction].intents.add(entry)
        elif kind is NodeKind.TriggerAbove:
            entry = (order.trigger_price, order.slot, user, ident, node)
            mb.trigger_above.add(entry)
        else:
            entry = (-order.trigger_price, order.slot, user, ident, node)
            mb.trigger_below.add(entry)
        node.entry = entry

    def _unplace(self, node: DLOBNode) -> None:
        order = node.order
        mb = self._markets[(order.market_type, order.market_index)]
        self._unplace_entry(mb, node)
        if order.max_ts != 0 and not order.must_be_triggered():
            secondary = _INTENT if node.uuid is not None else _ON_CHAIN
            mb.expiry.remove((order.max_ts, secondary, node.user, _ident(node), node))
        node.alive = False

    @staticmethod
    def _unplace_entry(mb: _MarketBook, node: DLOBNode) -> None:
        entry = node.entry
        kind = node.kind
        order = node.order
        if kind is NodeKind.RestingLimit:
            side = mb.sides[order.direction]
            side.fixed.remove(entry)
            _sub_level(
                side.fixed_levels,
                side.fixed_level_keys,
                side.sign * order.price,
                order.base_asset_amount - order.base_asset_amount_filled,
            )
        elif kind is NodeKind.FloatingLimit:
            side = mb.sides[order.direction]
            side.floating.remove(entry)
            _sub_level(
                side.floating_levels,
                side.floating_level_keys,
                side.sign * order.oracle_price_offset,
                order.base_asset_amount - order.base_asset_amount_filled,
            )
        elif kind is NodeKind.TakingLimit:
            mb.sides[order.direction].taking.remove(entry)  # its heap entry dies with it
        elif kind is NodeKind.Market:
            mb.sides[order.direction].market.remove(entry)
        elif kind is NodeKind.SignedIntent:
            mb.sides[order.direction].intents.remove(entry)
        elif kind is NodeKind.TriggerAbove:
            mb.trigger_above.remove(entry)
        else:
            mb.trigger_below.remove(entry)
        node.entry = None

    # --- views at a slot ----------------------------------------------------------------------
    def _check_slot(self, slot: int) -> None:
        if slot < self.slot:
            raise SlotInThePast(slot, self.slot)

    def _due(self, mb: _MarketBook, direction: PositionDirection, slot: int) -> list[DLOBNode]:
        """Taking limit orders of one side whose auction is over by ``slot`` but that
        ``advance_slot`` has not moved yet: the heap's entries <= ``slot``, found by walking
        only the part of the heap that is <= ``slot``."""
        pending = mb.pending
        if slot <= self.slot or not pending or pending[0][0] > slot:
            return []
        due: list[DLOBNode] = []
        stack = [0]
        size = len(pending)
        while stack:
            i = stack.pop()
            if i >= size or pending[i][0] > slot:
                continue
            node = pending[i][2]
            if node.alive and node.kind is NodeKind.TakingLimit and node.direction == direction:
                due.append(node)
            stack.append(2 * i + 1)
            stack.append(2 * i + 2)
        return due

    def _due_entries(
        self, mb: _MarketBook, side: _Side, oracle_price: int, slot: int
    ) -> list[Entry]:
        entries: list[Entry] = [
            (
                side.sign * mb.resting_price(node.order, oracle_price, slot),
                node.order.slot,
                node.user,
                node.order.order_id,
                node,
            )
            for node in self._due(mb, side.direction, slot)
        ]
        entries.sort()
        return entries

    def _iter_floating(
        self, mb: _MarketBook, side: _Side, oracle_price: int, slot: int
    ) -> Iterator[Entry]:
        """Floating orders as entries keyed by price, in (price, slot, user, id) order.

        The container is in offset order, which is price order; distinct offsets can share a
        price (tick rounding, the one-tick floor), so each run of equal prices is re-sorted.
        """
        sign = side.sign
        run: list[Entry] = []
        run_key: int | None = None
        mixed = False
        last_offset_key: int | None = None
        key = 0
        for offset_key, order_slot, user, ident, node in side.floating:
            if offset_key != last_offset_key:
                key = sign * mb.resting_price(node.order, oracle_price, slot)
                if key != run_key:
                    if mixed:
                        run.sort()
                    yield from run
                    run = []
                    run_key = key
                    mixed = False
                else:
                    mixed = True  # a second offset at the same price
                last_offset_key = offset_key
            run.append((key, order_slot, user, ident, node))
        if mixed:
            run.sort()
        yield from run

    def _iter_resting(
        self, mb: _MarketBook, side: _Side, oracle_price: int, slot: int
    ) -> Iterator[Entry]:
        """Resting orders of one side, best first, as (sign * price, slot, user, id, node)."""
        sources: list[Iterator[Entry]] = []
        if side.fixed:
            sources.append(iter(side.fixed))
        if side.floating:
            sources.append(self._iter_floating(mb, side, oracle_price, slot))
        due = self._due_entries(mb, side, oracle_price, slot)
        if due:
            sources.append(iter(due))
        if len(sources) == 1:
            return sources[0]
        return heapq.merge(*sources)

    def _best_key(self, mb: _MarketBook, side: _Side, oracle_price: int, slot: int) -> int | None:
        best: int | None = None
        if side.fixed:
            best = side.fixed[0][0]
        if side.floating:
            key = side.sign * mb.resting_price(side.floating[0][4].order, oracle_price, slot)
            if best is None or key < best:
                best = key
        for node in self._due(mb, side.direction, slot):
            key = side.sign * mb.resting_price(node.order, oracle_price, slot)
            if best is None or key < best:
                best = key
        return best

    def _iter_takers(self, mb: _MarketBook, side: _Side, slot: int) -> Iterator[DLOBNode]:
        """Takers of one side, oldest first: market orders, limit orders still in their
        auction at ``slot``, and signed intents."""
        for entry in heapq.merge(side.market, side.taking, side.intents):
            node = entry[4]
            if node.kind is NodeKind.TakingLimit and node.order.is_resting_limit_order(slot):
                continue  # its auction is over by ``slot``: it rests (see ``_due``)
            yield node

    # --- queries: prices ----------------------------------------------------------------------
    def best_bid(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        *,
        vamm_bid: int | None = None,
    ) -> int | None:
        """The highest resting bid (fixed or oracle-pegged), or the vAMM's bid if higher."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        key = self._best_key(mb, mb.sides[PositionDirection.Long], oracle_price, slot)
        best = None if key is None else -key
        if vamm_bid is not None and (best is None or vamm_bid > best):
            best = vamm_bid
        return best

    def best_ask(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        *,
        vamm_ask: int | None = None,
    ) -> int | None:
        """The lowest resting ask (fixed or oracle-pegged), or the vAMM's ask if lower."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        best = self._best_key(mb, mb.sides[PositionDirection.Short], oracle_price, slot)
        if vamm_ask is not None and (best is None or vamm_ask < best):
            best = vamm_ask
        return best

    def get_l2(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        depth: int = DEFAULT_L2_DEPTH,
        *,
        vamm: VammLevels | None = None,
    ) -> L2OrderBook:
        """The best ``depth`` price levels per side of the resting book, optionally merged
        with the vAMM's levels. Touches O(depth) levels, not orders."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        bids = self._l2_side(
            mb, mb.sides[0], oracle_price, slot, depth, None if vamm is None else vamm.bids
        )
        asks = self._l2_side(
            mb, mb.sides[1], oracle_price, slot, depth, None if vamm is None else vamm.asks
        )
        return L2OrderBook(bids=bids, asks=asks, slot=slot)

    def _l2_side(
        self,
        mb: _MarketBook,
        side: _Side,
        oracle_price: int,
        slot: int,
        depth: int,
        vamm_levels: tuple[tuple[int, int], ...] | None,
    ) -> tuple[L2Level, ...]:
        if depth <= 0:
            return ()
        sign = side.sign
        book: dict[int, int] = {}
        for key in side.fixed_level_keys.islice(0, depth):
            book[key] = side.fixed_levels[key]
        if side.floating_level_keys:
            # One order-shaped probe per offset level: its price is what get_limit_price gives
            # every resting order with that offset (no auction price, offset branch).
            probe = Order(
                order_id=0,
                market_index=mb.market_index,
                market_type=mb.market_type,
                order_type=OrderType.Limit,
                direction=side.direction,
                base_asset_amount=0,
                slot=0,
                post_only=True,
            )
            distinct = 0
            last_key: int | None = None
            for offset_key in side.floating_level_keys:
                probe.oracle_price_offset = sign * offset_key
                key = sign * mb.resting_price(probe, oracle_price, slot)
                if key != last_key:
                    distinct += 1
                    if distinct > depth:
                        break  # beyond this side's best ``depth`` floating prices
                    last_key = key
                book[key] = book.get(key, 0) + side.floating_levels[offset_key]
        for node in self._due(mb, side.direction, slot):
            key = sign * mb.resting_price(node.order, oracle_price, slot)
            book[key] = book.get(key, 0) + node.base_asset_amount_unfilled()
        vamm_book: dict[int, int] = {}
        for price, size in vamm_levels or ():
            if size > 0:
                vamm_book[sign * price] = vamm_book.get(sign * price, 0) + size
        keys = sorted(book.keys() | vamm_book.keys())[:depth]
        levels: list[L2Level] = []
        for key in keys:
            dlob_size = book.get(key, 0)
            vamm_size = vamm_book.get(key, 0)
            sources: list[tuple[str, int]] = []
            if dlob_size:
                sources.append(("dlob", dlob_size))
            if vamm_size:
                sources.append(("vamm", vamm_size))
            levels.append(L2Level(sign * key, dlob_size + vamm_size, tuple(sources)))
        return tuple(levels)

    def get_l3(
        self, market_type: MarketType, market_index: int, oracle_price: int, slot: int
    ) -> L3OrderBook:
        """Every resting order with its current limit price, best first per side."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        sides: list[tuple[L3Level, ...]] = []
        for side in mb.sides:
            entries: list[Entry] = list(side.fixed)
            entries.extend(self._iter_floating(mb, side, oracle_price, slot))
            entries.extend(self._due_entries(mb, side, oracle_price, slot))
            entries.sort()  # two or three sorted runs: a linear merge
            sign = side.sign
            sides.append(
                tuple(
                    L3Level(
                        sign * e[0],
                        e[4].order.base_asset_amount - e[4].order.base_asset_amount_filled,
                        e[2],
                        e[3],
                    )
                    for e in entries
                )
            )
        return L3OrderBook(bids=sides[0], asks=sides[1], slot=slot)

    # --- queries: what a keeper can do ------------------------------------------------------
    def find_crossing_resting_limit_orders(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        ts: int,
    ) -> list[NodeToFill]:
        """Resting orders crossing each other (best bid >= best ask), each as taker against
        its makers per the program's ``is_maker_for_taker``. O(1) when nothing crosses."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        fills = _Fills()
        self._match_resting(mb, oracle_price, slot, ts, {}, fills)
        return fills.result()

    def find_nodes_to_fill(
        self,
        market_type: MarketType,
        market_index: int,
        oracle_price: int,
        slot: int,
        ts: int,
        *,
        fallback_bid: int | None = None,
        fallback_ask: int | None = None,
        min_auction_duration: int = 0,
        amm_can_fill: Callable[[Order], bool] | None = None,
    ) -> list[NodeToFill]:
        """Everything a filler can submit in ``slot`` at unix time ``ts``.

        In order: resting orders crossing each other; takers (market orders, limit orders in
        their auction, signed intents) crossing resting makers, with ``amm`` set when the
        taker also crosses the vAMM (``fallback_ask`` for bids, ``fallback_bid`` for asks;
        ``None`` = no vAMM) and the AMM is available to it; resting orders (not post-only)
        crossing the vAMM; then expired orders (``max_ts`` passed) to cancel. One entry per
        taker node. Only crossing prices are walked: nothing crossing costs O(takers).

        AMM availability is ``amm_can_fill(order)`` when given (e.g.
        :func:`dlob.vamm.amm_can_fill_rule`, the protocol's own rule), else
        :func:`dlob.vamm.is_fallback_available_liquidity_source` with ``min_auction_duration``
        (``State.min_perp_auction_duration`` for perp markets, 0 for spot).
        """
        self._check_slot(slot)
        mb = self._market(market_type, market_index)

        def keepers_rule(order: Order) -> bool:
            return is_fallback_available_liquidity_source(order, min_auction_duration, slot)

        available = keepers_rule if amm_can_fill is None else amm_can_fill
        fills = _Fills()
        remaining: dict[DLOBNode, int] = {}
        self._match_resting(mb, oracle_price, slot, ts, remaining, fills)
        bids, asks = mb.sides
        for taker_side, maker_side, fallback in (
            (bids, asks, fallback_ask),
            (asks, bids, fallback_bid),
        ):
            self._match_takers(
                mb,
                taker_side,
                maker_side,
                fallback,
                oracle_price,
                slot,
                ts,
                available,
                remaining,
                fills,
            )
        if fallback_bid is not None:
            self._match_resting_with_vamm(
                mb,
                asks,
                fallback_bid,
                oracle_price,
                slot,
                ts,
                available,
                remaining,
                fills,
            )
        if fallback_ask is not None:
            self._match_resting_with_vamm(
                mb,
                bids,
                fallback_ask,
                oracle_price,
                slot,
                ts,
                available,
                remaining,
                fills,
            )
        result = fills.result()
        result.extend(NodeToFill(node, expired=True) for node in self._expired(mb, ts))
        return result

    def find_expired_nodes(
        self, market_type: MarketType, market_index: int, ts: int
    ) -> list[DLOBNode]:
        """Orders and intents whose ``max_ts`` is before ``ts`` (``should_expire_order``),
        earliest expiry first. O(expired)."""
        return self._expired(self._market(market_type, market_index), ts)

    @staticmethod
    def _expired(mb: _MarketBook, ts: int) -> list[DLOBNode]:
        expired: list[DLOBNode] = []
        for max_ts, _, _, _, node in mb.expiry:
            if max_ts >= ts:
                break
            if should_expire_order(node.order, ts):
                expired.append(node)
        return expired

    def _match_resting(
        self,
        mb: _MarketBook,
        oracle_price: int,
        slot: int,
        ts: int,
        remaining: dict[DLOBNode, int],
        fills: _Fills,
    ) -> None:
        bids, asks = mb.sides
        best_bid_key = self._best_key(mb, bids, oracle_price, slot)
        best_ask = self._best_key(mb, asks, oracle_price, slot)
        if best_bid_key is None or best_ask is None or -best_bid_key < best_ask:
            return
        best_bid = -best_bid_key
        for ask_price, _, _, _, ask in self._iter_resting(mb, asks, oracle_price, slot):
            if ask_price > best_bid:
                break  # no bid reaches this ask or any after it
            ask_left = remaining.get(ask)
            if ask_left is None:
                ask_left = ask.base_asset_amount_unfilled()
            if ask_left == 0 or should_expire_order(ask.order, ts):
                continue
            for bid_key, _, _, _, bid in self._iter_resting(mb, bids, oracle_price, slot):
                if -bid_key < ask_price:
                    break
                bid_left = remaining.get(bid)
                if bid_left is None:
                    bid_left = bid.base_asset_amount_unfilled()
                if bid_left == 0 or bid.user == ask.user or should_expire_order(bid.order, ts):
                    continue
                if is_maker_for_taker(ask.order, bid.order, slot):
                    fills.add_maker(bid, ask)
                elif is_maker_for_taker(bid.order, ask.order, slot):
                    fills.add_maker(ask, bid)
                else:
                    continue
                base = min(ask_left, bid_left)
                ask_left -= base
                remaining[bid] = bid_left - base
                if ask_left == 0:
                    break
            remaining[ask] = ask_left

    def _match_takers(
        self,
        mb: _MarketBook,
        taker_side: _Side,
        maker_side: _Side,
        fallback_price: int | None,
        oracle_price: int,
        slot: int,
        ts: int,
        amm_can_fill: Callable[[Order], bool],
        remaining: dict[DLOBNode, int],
        fills: _Fills,
    ) -> None:
        maker_direction = maker_side.direction
        maker_sign = maker_side.sign
        best_maker_key = self._best_key(mb, maker_side, oracle_price, slot)
        for taker in self._iter_takers(mb, taker_side, slot):
            order = taker.order
            if order.post_only or should_expire_order(order, ts):
                continue
            taker_price = mb.limit_price(order, oracle_price, slot)
            if best_maker_key is not None and (
                taker_price is None
                or do_orders_cross(maker_direction, maker_sign * best_maker_key, taker_price)
            ):
                taker_left = remaining.get(taker)
                if taker_left is None:
                    taker_left = taker.base_asset_amount_unfilled()
                for maker_key, _, _, _, maker in self._iter_resting(
                    mb, maker_side, oracle_price, slot
                ):
                    if taker_left == 0:
                        break
                    if taker_price is not None and not do_orders_cross(
                        maker_direction, maker_sign * maker_key, taker_price
                    ):
                        break
                    maker_left = remaining.get(maker)
                    if maker_left is None:
                        maker_left = maker.base_asset_amount_unfilled()
                    if (
                        maker_left == 0
                        or maker.user == taker.user
                        or should_expire_order(maker.order, ts)
                        or not is_maker_for_taker(maker.order, order, slot)
                    ):
                        continue
                    base = min(taker_left, maker_left)
                    taker_left -= base
                    remaining[maker] = maker_left - base
                    fills.add_maker(taker, maker)
                remaining[taker] = taker_left
            if (
                fallback_price is not None
                and (
                    taker_price is None
                    or do_orders_cross(maker_direction, fallback_price, taker_price)
                )
                and amm_can_fill(order)
            ):
                fills.add_amm(taker)

    def _match_resting_with_vamm(
        self,
        mb: _MarketBook,
        side: _Side,
        fallback_price: int,
        oracle_price: int,
        slot: int,
        ts: int,
        amm_can_fill: Callable[[Order], bool],
        remaining: dict[DLOBNode, int],
        fills: _Fills,
    ) -> None:
        """Resting orders of ``side`` that the vAMM's opposite quote crosses (post-only ones
        excepted: the fill engine never lets a post-only order take)."""
        vamm_direction = side.direction.opposite()
        sign = side.sign
        for key, _, _, _, node in self._iter_resting(mb, side, oracle_price, slot):
            if not do_orders_cross(vamm_direction, fallback_price, sign * key):
                break
            order = node.order
            if order.post_only or remaining.get(node, 1) == 0 or should_expire_order(order, ts):
                continue
            if amm_can_fill(order):
                fills.add_amm(node)

    def find_nodes_to_trigger(
        self, market_type: MarketType, market_index: int, oracle_price: int
    ) -> list[DLOBNode]:
        """Untriggered trigger orders the oracle price fires: above (oracle > trigger price)
        lowest trigger first, then below (oracle < trigger price) highest first.

        The boundary is found by bisection in the trigger-price order and confirmed with the
        program's ``order_satisfies_trigger_condition`` on both sides of it; O(log n + k).
        """
        mb = self._market(market_type, market_index)
        return self._triggered(mb.trigger_above, oracle_price, oracle_price) + self._triggered(
            mb.trigger_below, -oracle_price, oracle_price
        )

    @staticmethod
    def _triggered(container: Any, oracle_key: int, oracle_price: int) -> list[DLOBNode]:
        n = container.bisect_left((oracle_key,))
        boundary_holds = (
            n == 0 or order_satisfies_trigger_condition(container[n - 1][4].order, oracle_price)
        ) and (
            n == len(container)
            or not order_satisfies_trigger_condition(container[n][4].order, oracle_price)
        )
        if not boundary_holds:  # pragma: no cover - the key is the trigger price itself
            raise AssertionError("trigger container order disagrees with the trigger condition")
        return [entry[4] for entry in container.islice(0, n)]

    def find_jit_auction_nodes(
        self, market_type: MarketType, market_index: int, oracle_price: int, slot: int
    ) -> list[JitAuctionNode]:
        """Orders in their auction at ``slot`` with their auction price: bids then asks, oldest
        first. Only orders placed in the last ``MAX_AUCTION_DURATION`` slots are looked at."""
        self._check_slot(slot)
        mb = self._market(market_type, market_index)
        lowest = (slot - MAX_AUCTION_DURATION,)
        out: list[JitAuctionNode] = []
        for side in mb.sides:
            recent = heapq.merge(
                side.market.irange(lowest),
                side.taking.irange(lowest),
                side.intents.irange(lowest),
            )
            for entry in recent:
                node = entry[4]
                order = node.order
                if has_auction_price(order, order.slot, order.auction_duration, slot):
                    price = calculate_auction_price(
                        order, slot, mb.tick_size, oracle_price, mb.is_prediction_market
                    )
                    out.append(JitAuctionNode(node, price))
        return out
