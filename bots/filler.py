"""The filler: matches takers with the best resting makers (or the vAMM) and sends the fills.

Event-driven: it ticks on order events, signed intents, slots and oracle updates. Each tick,
per followed perp market, it asks its DLOB for everything fillable at the current slot and
oracle price (:meth:`dlob.DLOB.find_nodes_to_fill`, with the vAMM's bid/ask from the cached
market as the fallback) and turns each node into one transaction:

* a taker with crossing makers or the vAMM: ``FillPerpOrder`` (an on-chain order) or
  ``FillSignedOrder`` (a signed intent still off-chain: placed and filled in one instruction);
* an expired order: ``FillPerpOrder`` with no makers: the program cancels it and pays the
  filler the flat fee.

Makers. At most ``max_makers`` per fill, best price first, and exactly those whose price at
this slot crosses the taker's price as the program computes it (:func:`taker_price_for_fill`:
the taker's limit or auction price, or for a market order past its auction the AMM fallback
price): the program rejects the whole fill for one named maker that does not cross
(``InvalidOrderFillPrice``), so a maker the book lists but the program would refuse is left
out.

Dedupe and throttles, all in slots (:class:`bots.common.SlotTtl`):

* a node (``(user, order id)``, or ``(user, uuid)`` for an intent) that was just tried is not
  tried again for ``node_ttl_slots`` (the order event of an accepted fill has to reach the
  book first), and never twice in one slot;
* a node the program says is gone (``OrderDoesNotExist``, ``OrderNotOpen``, a spent or
  unplaceable intent) is dropped for ``gone_ttl_slots``; a maker order that is gone
  (``MakerOrderNotFound`` / ``MakerNotFound``) is dropped likewise, and the taker retried at
  once with the others;
* a user short of margin (``InsufficientCollateral``: the taker, or the makers when the
  program names them) is left alone for ``user_ttl_slots``;
* ``InvalidOrderFillPrice`` (prices moved between the book and the program) re-evaluates the
  node at the next slot.

Each fill attempt carries a correlation id (``Action.correlation_id``), bound into every log
line about it and the key under which the bot matches the outcome to what it tried.

Known limits: perp markets only (spot fills are not attempted); the AMM's availability for a
fill is the book's keeper-side rule, and a fill the AMM then declines comes back as
``FillOrderDidNotUpdateState`` and is simply retried after the node TTL.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from bots.common import (
    IntentCache,
    NodeKey,
    SlotTtl,
    bot_params,
    field_index,
    node_key,
    rejection,
    require,
    short_hex,
)
from dlob import DLOBNode, NodeToFill, do_orders_cross, vamm_bid_ask
from keepers.dlob_feed import DlobReader
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Outcome
from keepers.runtime.registry import register
from keepers.runtime.view import View
from protocol.controller.fills import get_fallback_price
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import (
    MAX_MAKERS,
    FillPerpOrder,
    FillSignedOrder,
    MakerOrderRef,
)
from protocol.math.amm import calculate_amm_available_liquidity
from protocol.math.auction import get_limit_price
from protocol.state.perp_market import PerpMarket
from protocol.state.state import State
from protocol.state.user import Order, UserKey
from protocol.types import ContractType, MarketStatus, MarketType, PositionDirection

FILL_KIND: Final = "fill_perp_order"
FILL_SIGNED_KIND: Final = "fill_signed_order"
EXPIRE_KIND: Final = "expire_order"

_FILLABLE_STATUSES: Final = frozenset({MarketStatus.Active, MarketStatus.ReduceOnly})

TAKER_GONE: Final = frozenset(
    {
        ErrorCode.OrderDoesNotExist,
        ErrorCode.OrderNotOpen,
        ErrorCode.SignedMsgOrderDoesNotExist,
        ErrorCode.InvalidSignedMsgOrderId,  # the intent's uuid is spent: it was placed
        ErrorCode.InvalidSignedMsgOrderParam,  # the intent can no longer be placed
    }
)
MAKER_GONE: Final = frozenset({ErrorCode.MakerOrderNotFound, ErrorCode.MakerNotFound})


@dataclass(frozen=True, slots=True)
class FillerParams:
    """``[bots.filler]`` parameters.

    ``sub_account_id``: the filler's own user account (it must exist: rewards are paid to it).
    ``perp_markets``: the markets to fill (unset: every perp market the book follows).
    ``max_makers``: makers named per fill (the program takes at most 8).
    ``node_ttl_slots`` / ``user_ttl_slots`` / ``gone_ttl_slots``: see the module docstring.
    ``max_fills_per_tick``: fills sent per tick at most (the rest wait for the next tick).
    ``min_auction_duration``: the exchange's ``State.min_perp_auction_duration`` (slots a
    taker is kept from the vAMM so makers get it first).
    ``fill_expired`` / ``fill_intents``: cancel expired orders for the reward; fill signed
    intents. ``simulate``: simulate every fill before sending it.
    """

    sub_account_id: int = field(default=0, metadata={"minimum": 0})
    perp_markets: tuple[int, ...] | None = None
    max_makers: int = field(default=4, metadata={"minimum": 0})
    node_ttl_slots: int = field(default=2, metadata={"minimum": 1})
    user_ttl_slots: int = field(default=10, metadata={"minimum": 1})
    gone_ttl_slots: int = field(default=150, metadata={"minimum": 1})
    max_fills_per_tick: int = field(default=32, metadata={"minimum": 1})
    min_auction_duration: int = field(
        default=State().min_perp_auction_duration, metadata={"minimum": 0}
    )
    fill_expired: bool = True
    fill_intents: bool = True
    simulate: bool = False

    def __post_init__(self) -> None:
        require(
            self.max_makers <= MAX_MAKERS,
            "max_makers",
            f"the program takes at most {MAX_MAKERS} makers per fill, got {self.max_makers}",
        )


@dataclass(frozen=True, slots=True)
class FillAttempt:
    """What one fill action tried, to read its outcome against."""

    taker: NodeKey
    makers: tuple[NodeKey, ...]
    slot: int
    market_index: int


def taker_price_for_fill(
    order: Order, market: PerpMarket, oracle_price: int, slot: int, now: int
) -> int:
    """The taker's price the program checks every named maker against in ``fill_perp_order``:
    its limit price at ``slot`` (the auction price during its auction, ``oracle + offset``
    for an oracle-pegged order), or for an order without one (a market order past its
    auction) the AMM's fallback price (``get_fallback_price``, with ``now`` for the
    seconds left before the order expires)."""
    amm = market.amm
    price = get_limit_price(
        order,
        oracle_price,
        None,
        slot,
        amm.order_tick_size,
        market.contract_type == ContractType.Prediction,
    )
    if price is not None:
        return price
    return get_fallback_price(
        market,
        order.direction,
        calculate_amm_available_liquidity(amm, order.direction),
        oracle_price,
        max(order.max_ts - now, 0),
    )


def crossing_makers(
    taker: Order,
    makers: tuple[DLOBNode, ...],
    market: PerpMarket,
    oracle_price: int,
    slot: int,
    now: int,
    max_makers: int,
) -> list[DLOBNode]:
    """The makers (at most ``max_makers``) whose price at ``slot`` crosses the taker's, best
    price first; equal prices keep the book's order."""
    if max_makers == 0 or not makers:
        return []
    taker_price = taker_price_for_fill(taker, market, oracle_price, slot, now)
    maker_direction = taker.direction.opposite()
    tick_size = market.amm.order_tick_size
    is_prediction = market.contract_type == ContractType.Prediction
    priced: list[tuple[int, DLOBNode]] = []
    for maker in makers:
        price = get_limit_price(maker.order, oracle_price, None, slot, tick_size, is_prediction)
        if price is not None and do_orders_cross(maker_direction, price, taker_price):
            priced.append((price, maker))
    # best for the taker first: asks ascending, bids descending (sorted() is stable)
    sign = 1 if maker_direction == PositionDirection.Short else -1
    priced = sorted(priced, key=lambda entry: sign * entry[0])
    return [maker for _, maker in priced[:max_makers]]


@register("filler")
class Filler:
    """The filler bot (see the module docstring)."""

    params_type: ClassVar[type[FillerParams]] = FillerParams

    def __init__(self, context: BotContext) -> None:
        params = bot_params(context.params, FillerParams, "filler")
        self.name = context.name
        self.authority = context.authority
        self.params = params
        self.subscriptions = Subscriptions(
            streams=frozenset({Stream.ORDERS, Stream.INTENTS, Stream.SLOT, Stream.ORACLE}),
            perp_markets=params.perp_markets,
            spot_markets=(),
            sub_account_ids=(params.sub_account_id,),
            dlob=True,
        )
        self.tried: SlotTtl[NodeKey] = SlotTtl()
        self.gone: SlotTtl[NodeKey] = SlotTtl()
        self.throttled_users: SlotTtl[UserKey] = SlotTtl()
        self.attempts: dict[str, FillAttempt] = {}
        self.intents = IntentCache()
        self._ids = itertools.count(1)
        self._pruned_slot = -1

    # --- deciding ----------------------------------------------------------------------------
    def decide(self, view: View) -> list[Action]:
        self.intents.ingest(view.events)
        self._prune(view.slot)
        book = view.dlob
        if book is None or view.user(self.params.sub_account_id) is None:
            # no book yet, or no filler account to be paid into: the program would refuse
            return []
        # The book may be a slot ahead (an intent signed for the next slot moves it); queries
        # may not be behind it.
        slot = max(view.slot, book.slot)
        actions: list[Action] = []
        for market_index in self._markets(book):
            market = view.perp_markets.get(market_index)
            oracle = view.perp_oracle(market_index)
            if market is None or oracle is None or market.status not in _FILLABLE_STATUSES:
                continue
            fallback_bid, fallback_ask = vamm_bid_ask(market.amm)
            nodes = book.find_nodes_to_fill(
                MarketType.Perp,
                market_index,
                oracle.price,
                slot,
                view.ts,
                fallback_bid=fallback_bid,
                fallback_ask=fallback_ask,
                min_auction_duration=self.params.min_auction_duration,
            )
            for node_to_fill in nodes:
                if len(actions) >= self.params.max_fills_per_tick:
                    return actions
                action = self._fill(view, market, oracle.price, slot, node_to_fill)
                if action is not None:
                    actions.append(action)
        return actions

    def _markets(self, book: DlobReader) -> list[int]:
        followed = sorted(i for kind, i in book.markets() if kind == MarketType.Perp)
        if self.params.perp_markets is None:
            return followed
        wanted = set(self.params.perp_markets)
        return [i for i in followed if i in wanted]

    def _held_back(self, key: NodeKey, slot: int) -> bool:
        return (
            self.gone.blocked(key, slot)
            or self.tried.blocked(key, slot)
            or self.throttled_users.blocked(key[0], slot)
        )

    def _maker_held_back(self, maker: DLOBNode, slot: int) -> bool:
        return self.gone.blocked(node_key(maker), slot) or self.throttled_users.blocked(
            maker.user, slot
        )

    def _fill(
        self, view: View, market: PerpMarket, oracle_price: int, slot: int, nt: NodeToFill
    ) -> Action | None:
        node = nt.node
        key = node_key(node)
        if self._held_back(key, view.slot):
            return None
        params = self.params
        taker_authority, taker_sub = node.user
        ix: Any
        makers: list[DLOBNode] = []
        if nt.expired:
            if node.is_signed_intent or not params.fill_expired:
                return None  # an intent never reached the chain: nothing to cancel
            ix = FillPerpOrder(
                self.authority, params.sub_account_id, taker_authority, taker_sub, node.order_id
            )
            kind = EXPIRE_KIND
        else:
            usable = tuple(m for m in nt.makers if not self._maker_held_back(m, view.slot))
            makers = crossing_makers(
                node.order, usable, market, oracle_price, slot, view.ts, params.max_makers
            )
            if not makers and not nt.amm:
                return None
            refs = tuple(MakerOrderRef(m.user[0], m.user[1], m.order_id) for m in makers)
            if node.uuid is not None:
                message = self.intents.get(node.user, node.uuid)
                if message is None or not params.fill_intents:
                    return None
                ix = FillSignedOrder(
                    self.authority,
                    params.sub_account_id,
                    message.to_intent(),
                    message.signer_bytes,
                    message.signature_bytes,
                    refs,
                )
                kind = FILL_SIGNED_KIND
            else:
                ix = FillPerpOrder(
                    self.authority,
                    params.sub_account_id,
                    taker_authority,
                    taker_sub,
                    node.order_id,
                    refs,
                )
                kind = FILL_KIND
        ident = node.uuid.hex() if node.uuid is not None else str(node.order_id)
        correlation_id = (
            f"{self.name}-{view.slot}-{short_hex(taker_authority)}.{taker_sub}.{ident}"
            f"-{next(self._ids)}"
        )
        self.attempts[correlation_id] = FillAttempt(
            taker=key,
            makers=tuple(node_key(m) for m in makers),
            slot=view.slot,
            market_index=market.market_index,
        )
        self.tried.block(key, view.slot + params.node_ttl_slots)
        return Action(
            instructions=(ix,),
            kind=kind,
            dedupe_key=("fill", key),
            correlation_id=correlation_id,
            simulate=params.simulate,
        )

    def _prune(self, slot: int) -> None:
        # Everything here ends at a slot: nothing more ends until the slot moves, so the
        # scans (hundreds of cached intents) run once per slot, not once per tick.
        if slot == self._pruned_slot:
            return
        self._pruned_slot = slot
        self.tried.prune(slot)
        self.gone.prune(slot)
        self.throttled_users.prune(slot)
        self.intents.prune(slot)
        stale = [
            cid
            for cid, attempt in self.attempts.items()
            if attempt.slot + self.params.gone_ttl_slots < slot
        ]
        for cid in stale:
            del self.attempts[cid]

    # --- learning ----------------------------------------------------------------------------
    def on_outcome(self, outcome: Outcome) -> None:
        attempt = self.attempts.pop(outcome.correlation_id, None)
        if attempt is None:
            return
        code = rejection(outcome)
        if code is None:
            return  # accepted, skipped, or unknown: the node TTL already holds it back
        params = self.params
        if code in TAKER_GONE:
            self.gone.block(attempt.taker, attempt.slot + params.gone_ttl_slots)
        elif code in MAKER_GONE:
            index = field_index(outcome.field, "makers")
            named = (
                (attempt.makers[index],)
                if index is not None and index < len(attempt.makers)
                else attempt.makers
            )
            for maker in named:
                self.gone.block(maker, attempt.slot + params.gone_ttl_slots)
            self.tried.release(attempt.taker)  # the taker itself is fine: retry at once
        elif code == ErrorCode.InsufficientCollateral:
            if outcome.field == "makers":
                users = {maker[0] for maker in attempt.makers}
            else:
                users = {attempt.taker[0]}
            for user in users:
                self.throttled_users.block(user, attempt.slot + params.user_ttl_slots)
        elif code == ErrorCode.InvalidOrderFillPrice:
            self.tried.set(attempt.taker, attempt.slot + 1)


__all__ = [
    "EXPIRE_KIND",
    "FILL_KIND",
    "FILL_SIGNED_KIND",
    "FillAttempt",
    "Filler",
    "FillerParams",
    "crossing_makers",
    "taker_price_for_fill",
]
