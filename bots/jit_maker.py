"""The JIT maker: answers takers' auctions with a place-and-make order at its own quote.

It ticks on order events, signed intents, slots and oracle updates. Each tick, per followed
perp market:

1. **Quote.** ``bid = oracle * (1 - spread)`` rounded down to the tick, ``ask = oracle *
   (1 + spread)`` rounded up (``spread_bps``). A market whose oracle is volatile is skipped:
   confidence above ``max_oracle_confidence_bps`` of the price, the price more than
   ``max_oracle_twap_divergence_bps`` from the market's 5-minute oracle TWAP, or older than
   ``max_oracle_delay_slots``.
2. **Capacity.** How much it may still sell or buy (:func:`max_fill_base`): its position in the
   market may reach ``max_position_base`` either way, the notional of all its perp positions
   at oracle prices may reach ``max_leverage_bps`` of its equity (``calculate_user_equity``),
   and what grows its position must fit its free collateral at the initial margin ratio.
   Answers within one tick use up the capacity in turn.
3. **Auctions.** For every order in its auction (:meth:`dlob.DLOB.find_jit_auction_nodes`,
   on-chain orders and signed intents), except its own authority's, it finds the first slot
   from now at which the taker's auction price crosses its quote (:func:`first_crossing_slot`:
   a buyer's rising price reaches the ask, a seller's falling price the bid). At that slot it
   answers, with a post-only, immediate-or-cancel limit order at its quote, of at most
   ``max_order_base`` and the taker's unfilled size (step-rounded, at least the market's
   minimum): ``PlaceAndMakePerpOrder`` for an on-chain order, ``PlaceSignedOrder`` +
   ``PlaceAndMakeSignedOrder`` (atomically: place the intent, then make against it) for an
   intent. A crossing slot still ahead is kept in :attr:`JitMaker.scheduled` and acted on when
   a tick reaches it. The program fills the taker at the maker's price, so the maker trades
   at its quote whenever it answers; answering at the first crossing slot is what wins the
   auction against later makers.

Learning from outcomes: an auction is answered once (``answered`` until it ends); the program
refusing the price (``InvalidOrderFillPrice``: the auction or oracle moved) re-evaluates it at
the next slot; a taker that is gone is dropped; ``InsufficientCollateral`` pauses the market
for ``margin_backoff_slots``.

Known limits: perp markets only. The margin bound uses the market's flat initial margin ratio
(no size premium): the program's fill-margin check stays the final word (an answer it refuses
comes back as ``InsufficientCollateral``). The margin math reads the default ``State`` unless
the bot's context carries the node's (``extra["state"]``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from bots.common import (
    BPS,
    IntentCache,
    MissingAccount,
    NodeKey,
    SlotTtl,
    ViewReader,
    bot_params,
    node_key,
    rejection,
    short_hex,
)
from dlob import DLOBNode, do_orders_cross
from keepers.dlob_feed import DlobReader
from keepers.runtime.bot import Action, BotContext, Stream, Subscriptions
from keepers.runtime.executor import Outcome
from keepers.runtime.registry import register
from keepers.runtime.view import View
from protocol.constants import BASE_PRECISION, MARGIN_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions.fills import (
    PlaceAndMakePerpOrder,
    PlaceAndMakeSignedOrder,
    PlaceSignedOrder,
)
from protocol.math.auction import calculate_auction_price, has_auction_price
from protocol.math.margin import calculate_free_collateral, calculate_user_equity
from protocol.math.orders import standardize_base_asset_amount, standardize_price
from protocol.numeric import div_trunc, safe_div_ceil
from protocol.state.oracle import OraclePriceData
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import PerpMarket
from protocol.state.state import State
from protocol.state.user import Order, User
from protocol.types import (
    ContractType,
    MarginRequirementType,
    MarketStatus,
    MarketType,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

PLACE_AND_MAKE_KIND: Final = "place_and_make_perp_order"
PLACE_AND_MAKE_SIGNED_KIND: Final = "place_and_make_signed_order"


_FILLABLE_STATUSES: Final = frozenset({MarketStatus.Active, MarketStatus.ReduceOnly})

TAKER_GONE: Final = frozenset(
    {
        ErrorCode.OrderDoesNotExist,
        ErrorCode.OrderNotOpen,
        ErrorCode.SignedMsgOrderDoesNotExist,
        ErrorCode.InvalidSignedMsgOrderId,  # placed by someone else: it shows up as an order
        ErrorCode.InvalidSignedMsgOrderParam,
    }
)


@dataclass(frozen=True, slots=True)
class JitMakerParams:
    """``[bots.jit_maker]`` parameters. Sizes are BASE_PRECISION (1e9 = one unit).

    ``sub_account_id``: the maker's user account. ``perp_markets``: markets to make.
    ``spread_bps``: quote distance from the oracle. ``max_position_base``: the largest
    position either way per market. ``max_leverage_bps``: perp notional over equity
    (10_000 = 1x). ``max_order_base``: the largest answer. Volatility guards:
    ``max_oracle_confidence_bps``, ``max_oracle_twap_divergence_bps``,
    ``max_oracle_delay_slots``. ``margin_backoff_slots``: pause after ``InsufficientCollateral``.
    ``gone_ttl_slots``: how long a taker the program says is gone is left alone.
    """

    sub_account_id: int = field(default=0, metadata={"minimum": 0})
    perp_markets: tuple[int, ...] = (0,)
    spread_bps: int = field(default=10, metadata={"minimum": 0})
    max_position_base: int = field(default=10 * BASE_PRECISION, metadata={"minimum": 0})
    max_leverage_bps: int = field(default=20_000, metadata={"minimum": 0})
    max_order_base: int = field(default=BASE_PRECISION, metadata={"minimum": 0})
    max_oracle_confidence_bps: int = field(default=50, metadata={"minimum": 0})
    max_oracle_twap_divergence_bps: int = field(default=150, metadata={"minimum": 0})
    max_oracle_delay_slots: int = field(default=10, metadata={"minimum": 0})
    margin_backoff_slots: int = field(default=10, metadata={"minimum": 1})
    gone_ttl_slots: int = field(default=150, metadata={"minimum": 1})
    simulate: bool = False


@dataclass(frozen=True, slots=True)
class JitAttempt:
    taker: NodeKey
    market_index: int
    slot: int


def jit_quote(oracle_price: int, spread_bps: int, tick_size: int) -> tuple[int, int]:
    """``(bid, ask)``: ``spread_bps`` either side of the oracle, on the tick grid, rounded away
    from the oracle (the bid down, the ask up), so the spread is never narrower than asked."""
    bid = standardize_price(
        div_trunc(oracle_price * (BPS - spread_bps), BPS), tick_size, PositionDirection.Long
    )
    ask = standardize_price(
        safe_div_ceil(oracle_price * (BPS + spread_bps), BPS), tick_size, PositionDirection.Short
    )
    return bid, ask


def is_oracle_volatile(
    oracle: OraclePriceData,
    oracle_twap_5min: int,
    max_confidence_bps: int,
    max_twap_divergence_bps: int,
    max_delay_slots: int,
) -> bool:
    """Too uncertain, too far from its 5-minute TWAP, or too old to quote around."""
    price = oracle.price
    if price <= 0 or oracle.delay > max_delay_slots:
        return True
    if oracle.confidence * BPS > price * max_confidence_bps:
        return True
    return oracle_twap_5min > 0 and (
        abs(price - oracle_twap_5min) * BPS > oracle_twap_5min * max_twap_divergence_bps
    )


def first_crossing_slot(
    order: Order,
    maker_price: int,
    slot: int,
    tick_size: int,
    oracle_price: int,
    is_prediction_market: bool = False,
) -> int | None:
    """The first slot at or after ``slot`` (and within the order's auction) at which the
    taker's auction price crosses ``maker_price``; ``None`` if it never does.

    The auction price moves monotonically against the taker (a buyer's rises, a seller's
    falls; an oracle-offset auction at today's oracle price), so the scan stops at the first
    crossing; at most ``auction_duration + 1`` slots are priced."""
    maker_direction = order.direction.opposite()
    end = order.slot + order.auction_duration
    for candidate in range(max(slot, order.slot), end + 1):
        if not has_auction_price(order, order.slot, order.auction_duration, candidate):
            continue
        price = calculate_auction_price(
            order, candidate, tick_size, oracle_price, is_prediction_market
        )
        if do_orders_cross(maker_direction, maker_price, price):
            return candidate
    return None


def perp_notional(base: int, price: int) -> int:
    """``|base| * price`` in QUOTE_PRECISION (base BASE_PRECISION, price PRICE_PRECISION)."""
    return div_trunc(abs(base) * price, BASE_PRECISION)


def max_fill_base(
    user: User,
    market_index: int,
    maker_direction: PositionDirection,
    reader: ViewReader,
    max_position_base: int,
    max_leverage_bps: int,
) -> int:
    """How much base the maker may still trade in ``maker_direction`` in the market.

    Three bounds, all at oracle prices:

    * position: it may end anywhere in ``[-limit, limit]``, ``limit`` the lesser of
      ``max_position_base`` and the base whose notional, added to its other perp positions'
      notional, reaches ``max_leverage_bps`` of its equity (``calculate_user_equity``);
    * margin: the part of the trade that grows the position (beyond closing what it holds on
      the other side) must fit its free collateral at the market's initial margin ratio
      (``calculate_free_collateral`` for ``Initial``; the program checks the laxer fill
      requirement, so this is the conservative side).

    0 when the account is underwater or a price it needs is missing."""
    try:
        equity = calculate_user_equity(user, reader)
        free_collateral = calculate_free_collateral(user, reader, MarginRequirementType.Initial)
        market = reader.perp_market(market_index)
        price = reader.oracle_price_data(market.amm.oracle).price
        other_notional = 0
        for position in user.perp_positions:
            if position.is_available() or position.market_index == market_index:
                continue
            other = reader.perp_market(position.market_index)
            other_price = reader.oracle_price_data(other.amm.oracle).price
            other_notional += perp_notional(position.base_asset_amount, other_price)
    except MissingAccount:
        return 0
    if price <= 0:
        return 0
    room_notional = div_trunc(equity * max_leverage_bps, BPS) - other_notional
    limit = min(max_position_base, div_trunc(max(room_notional, 0) * BASE_PRECISION, price))
    own = user.get_perp_position(market_index)
    base = 0 if own is None else own.base_asset_amount
    sign = 1 if maker_direction == PositionDirection.Long else -1
    by_position = limit - sign * base
    closing = max(-sign * base, 0)  # what the trade takes off the other side first
    if market.margin_ratio_initial > 0:
        by_margin = closing + div_trunc(
            free_collateral * MARGIN_PRECISION * BASE_PRECISION,
            price * market.margin_ratio_initial,
        )
    else:
        by_margin = by_position
    return max(min(by_position, by_margin), 0)


@register("jit-maker")
@register("jit_maker")
class JitMaker:
    """The JIT maker bot (see the module docstring)."""

    params_type: ClassVar[type[JitMakerParams]] = JitMakerParams

    def __init__(self, context: BotContext) -> None:
        params = bot_params(context.params, JitMakerParams, "jit_maker")
        self.name = context.name
        self.authority = context.authority
        self.params = params
        state = context.extra.get("state")
        self.state: State | None = state if isinstance(state, State) else None
        self.subscriptions = Subscriptions(
            streams=frozenset({Stream.ORDERS, Stream.INTENTS, Stream.SLOT, Stream.ORACLE}),
            perp_markets=params.perp_markets,
            spot_markets=(),
            sub_account_ids=(params.sub_account_id,),
            dlob=True,
        )
        self.answered: SlotTtl[NodeKey] = SlotTtl()
        self.gone: SlotTtl[NodeKey] = SlotTtl()
        self.paused_markets: SlotTtl[int] = SlotTtl()
        self.scheduled: dict[NodeKey, int] = {}  # auctions whose crossing slot is ahead
        self.attempts: dict[str, JitAttempt] = {}
        self.intents = IntentCache()
        self._ids = itertools.count(1)

    def decide(self, view: View) -> list[Action]:
        self.intents.ingest(view.events)
        for ttl in (self.answered, self.gone, self.paused_markets):
            ttl.prune(view.slot)
        self.intents.prune(view.slot)
        horizon = view.slot - self.params.gone_ttl_slots
        for cid in [c for c, a in self.attempts.items() if a.slot < horizon]:
            del self.attempts[cid]
        self.scheduled = {}
        book = view.dlob
        user = view.user(self.params.sub_account_id)
        if book is None or user is None:
            return []
        reader = ViewReader(view, self.state)
        slot = max(view.slot, book.slot)
        followed = {i for kind, i in book.markets() if kind == MarketType.Perp}
        actions: list[Action] = []
        for market_index in self.params.perp_markets:
            if market_index not in followed or self.paused_markets.blocked(market_index, view.slot):
                continue
            market = view.perp_markets.get(market_index)
            oracle = view.perp_oracle(market_index)
            if market is None or oracle is None or market.status not in _FILLABLE_STATUSES:
                continue
            if is_oracle_volatile(
                oracle,
                market.amm.historical_oracle_data.last_oracle_price_twap_5min,
                self.params.max_oracle_confidence_bps,
                self.params.max_oracle_twap_divergence_bps,
                self.params.max_oracle_delay_slots,
            ):
                continue
            actions.extend(self._market(view, book, user, reader, market, oracle.price, slot))
        return actions

    def _market(
        self,
        view: View,
        book: DlobReader,
        user: User,
        reader: ViewReader,
        market: PerpMarket,
        oracle_price: int,
        slot: int,
    ) -> list[Action]:
        params = self.params
        amm = market.amm
        tick_size = amm.order_tick_size
        is_prediction = market.contract_type == ContractType.Prediction
        bid, ask = jit_quote(oracle_price, params.spread_bps, tick_size)
        capacity = {
            direction: max_fill_base(
                user,
                market.market_index,
                direction,
                reader,
                params.max_position_base,
                params.max_leverage_bps,
            )
            for direction in (PositionDirection.Long, PositionDirection.Short)
        }
        actions: list[Action] = []
        for auction in book.find_jit_auction_nodes(
            MarketType.Perp, market.market_index, oracle_price, slot
        ):
            node = auction.node
            key = node_key(node)
            if (
                node.user[0] == self.authority
                or self.answered.blocked(key, view.slot)
                or self.gone.blocked(key, view.slot)
            ):
                continue
            maker_direction = node.direction.opposite()
            quote = ask if maker_direction == PositionDirection.Short else bid
            crossing = first_crossing_slot(
                node.order, quote, slot, tick_size, oracle_price, is_prediction
            )
            if crossing is None:
                continue
            if crossing > slot:
                self.scheduled[key] = crossing
                continue
            size = standardize_base_asset_amount(
                min(
                    node.base_asset_amount_unfilled(),
                    params.max_order_base,
                    capacity[maker_direction],
                ),
                amm.order_step_size,
            )
            if size < max(amm.min_order_size, amm.order_step_size, 1):
                continue
            action = self._answer(view, market.market_index, node, maker_direction, quote, size)
            if action is None:
                continue
            capacity[maker_direction] -= size
            actions.append(action)
        return actions

    def _answer(
        self,
        view: View,
        market_index: int,
        node: DLOBNode,
        maker_direction: PositionDirection,
        price: int,
        size: int,
    ) -> Action | None:
        params = self.params
        order_params = OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            maker_direction,
            size,
            market_index,
            price=price,
            post_only=PostOnlyParam.MustPostOnly,
            immediate_or_cancel=True,
        )
        taker_authority, taker_sub = node.user
        instructions: tuple[Any, ...]
        if node.uuid is not None:
            message = self.intents.get(node.user, node.uuid)
            if message is None:
                return None  # the signed bytes were not seen here: the intent cannot be placed
            instructions = (
                PlaceSignedOrder(
                    message.to_intent(), message.signer_bytes, message.signature_bytes
                ),
                PlaceAndMakeSignedOrder(
                    self.authority,
                    params.sub_account_id,
                    order_params,
                    taker_authority,
                    taker_sub,
                    node.uuid,
                ),
            )
            kind = PLACE_AND_MAKE_SIGNED_KIND
            ident = node.uuid.hex()
        else:
            instructions = (
                PlaceAndMakePerpOrder(
                    self.authority,
                    params.sub_account_id,
                    order_params,
                    taker_authority,
                    taker_sub,
                    node.order_id,
                ),
            )
            kind = PLACE_AND_MAKE_KIND
            ident = str(node.order_id)
        key = node_key(node)
        correlation_id = (
            f"{self.name}-{view.slot}-{short_hex(taker_authority)}.{taker_sub}.{ident}"
            f"-{next(self._ids)}"
        )
        self.attempts[correlation_id] = JitAttempt(key, market_index, view.slot)
        # one answer per auction: held until the auction is over
        order = node.order
        self.answered.block(key, max(order.slot + order.auction_duration, view.slot) + 1)
        return Action(
            instructions=instructions,
            kind=kind,
            dedupe_key=("jit", key),
            correlation_id=correlation_id,
            simulate=params.simulate,
        )

    def on_outcome(self, outcome: Outcome) -> None:
        attempt = self.attempts.pop(outcome.correlation_id, None)
        if attempt is None:
            return
        code = rejection(outcome)
        if code is None:
            return
        if code == ErrorCode.InvalidOrderFillPrice:
            self.answered.set(attempt.taker, attempt.slot + 1)
        elif code in TAKER_GONE:
            self.answered.release(attempt.taker)
            self.gone.block(attempt.taker, attempt.slot + self.params.gone_ttl_slots)
        elif code == ErrorCode.InsufficientCollateral:
            self.answered.release(attempt.taker)
            self.paused_markets.block(
                attempt.market_index, attempt.slot + self.params.margin_backoff_slots
            )


__all__ = [
    "PLACE_AND_MAKE_KIND",
    "PLACE_AND_MAKE_SIGNED_KIND",
    "JitAttempt",
    "JitMaker",
    "JitMakerParams",
    "first_crossing_slot",
    "is_oracle_volatile",
    "jit_quote",
    "max_fill_base",
    "perp_notional",
]
