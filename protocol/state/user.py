"""User accounts (one per authority and sub-account) and per-authority stats.

Positions and orders are kept as short lists of live entries (at most ``MAX_SPOT_POSITIONS``,
``MAX_PERP_POSITIONS`` and ``MAX_OPEN_ORDERS``) rather than the program's fixed arrays with
"available" slots: the limits and error codes are the same, the empty slots are implicit.
A spot position exists while it has a balance or open orders; a perp position while it has
base, quote, open orders or LP shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.constants import MAX_OPEN_ORDERS, MAX_PERP_POSITIONS, MAX_SPOT_POSITIONS
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.state.copying import shallow_copy
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    SpotBalanceType,
    UserStatus,
)

UserKey = tuple[bytes, int]
"""A user account's address: (authority public key, sub-account id)."""


@dataclass(slots=True)
class SpotPosition:
    market_index: int
    scaled_balance: int = 0  # SPOT_BALANCE_PRECISION, always >= 0; sign is balance_type
    balance_type: SpotBalanceType = SpotBalanceType.Deposit
    open_bids: int = 0  # token amount that open bids would add (>= 0)
    open_asks: int = 0  # token amount that open asks would remove (<= 0)
    cumulative_deposits: int = 0  # net tokens deposited, for the withdraw exemption
    open_orders: int = 0

    def is_available(self) -> bool:
        return self.scaled_balance == 0 and self.open_orders == 0


@dataclass(slots=True)
class PerpPosition:
    market_index: int
    base_asset_amount: int = 0  # BASE_PRECISION, signed
    quote_asset_amount: int = 0  # QUOTE_PRECISION, signed
    quote_break_even_amount: int = 0
    quote_entry_amount: int = 0
    last_cumulative_funding_rate: int = 0
    open_bids: int = 0  # base that open bids would add (>= 0)
    open_asks: int = 0  # base that open asks would remove (<= 0)
    settled_pnl: int = 0
    lp_shares: int = 0
    last_base_asset_amount_per_lp: int = 0
    last_quote_asset_amount_per_lp: int = 0
    remainder_base_asset_amount: int = 0
    open_orders: int = 0

    def is_available(self) -> bool:
        return (
            self.base_asset_amount == 0
            and self.quote_asset_amount == 0
            and self.open_orders == 0
            and self.lp_shares == 0
        )

    def is_open_position(self) -> bool:
        return self.base_asset_amount != 0

    def get_direction(self) -> PositionDirection:
        return PositionDirection.Short if self.base_asset_amount < 0 else PositionDirection.Long


@dataclass(slots=True)
class Order:
    """A live order. Prices PRICE_PRECISION, amounts BASE_PRECISION (perp) or mint units (spot)."""

    order_id: int
    market_index: int
    market_type: MarketType
    order_type: OrderType
    direction: PositionDirection
    base_asset_amount: int
    slot: int
    price: int = 0
    base_asset_amount_filled: int = 0
    quote_asset_amount_filled: int = 0
    trigger_price: int = 0
    trigger_condition: OrderTriggerCondition = OrderTriggerCondition.Above
    auction_start_price: int = 0
    auction_end_price: int = 0
    auction_duration: int = 0
    max_ts: int = 0
    oracle_price_offset: int = 0
    user_order_id: int = 0
    existing_position_direction: PositionDirection = PositionDirection.Long
    status: OrderStatus = OrderStatus.Open
    reduce_only: bool = False
    post_only: bool = False
    immediate_or_cancel: bool = False
    posted_slot_tail: int = 0
    bit_flags: int = 0

    def get_base_asset_amount_unfilled(self) -> int:
        return self.base_asset_amount - self.base_asset_amount_filled

    def is_market_order(self) -> bool:
        return self.order_type in (OrderType.Market, OrderType.TriggerMarket, OrderType.Oracle)

    def is_limit_order(self) -> bool:
        return self.order_type in (OrderType.Limit, OrderType.TriggerLimit)

    def must_be_triggered(self) -> bool:
        return self.order_type in (OrderType.TriggerMarket, OrderType.TriggerLimit)

    def triggered(self) -> bool:
        return self.trigger_condition in (
            OrderTriggerCondition.TriggeredAbove,
            OrderTriggerCondition.TriggeredBelow,
        )

    def has_oracle_price_offset(self) -> bool:
        return self.oracle_price_offset != 0

    def has_auction(self) -> bool:
        return self.auction_duration != 0

    def is_auction_complete(self, slot: int) -> bool:
        """The program's ``is_auction_complete``: duration elapsed (strictly) or no auction."""
        return self.auction_duration == 0 or slot - self.slot > self.auction_duration

    def has_auction_price(self, order_slot: int, auction_duration: int, slot: int) -> bool:
        return not (self.auction_duration == 0 or slot - order_slot > auction_duration)

    def is_resting_limit_order(self, slot: int) -> bool:
        return self.is_limit_order() and (self.post_only or self.is_auction_complete(slot))

    def is_available(self) -> bool:
        return self.status != OrderStatus.Open

    def clone(self) -> Order:
        return shallow_copy(self)


@dataclass(slots=True)
class User:
    authority: bytes
    sub_account_id: int = 0
    delegate: bytes = bytes(32)
    name: str = ""
    spot_positions: list[SpotPosition] = field(default_factory=list)
    perp_positions: list[PerpPosition] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    status: UserStatus = UserStatus.Active
    next_order_id: int = 1
    next_liquidation_id: int = 1
    total_deposits: int = 0  # lifetime, QUOTE_PRECISION notional at deposit time
    total_withdraws: int = 0
    total_social_loss: int = 0
    settled_perp_pnl: int = 0
    cumulative_spot_fees: int = 0
    cumulative_perp_funding: int = 0
    liquidation_margin_freed: int = 0
    last_active_slot: int = 0
    last_add_perp_lp_shares_ts: int = 0
    max_margin_ratio: int = 0
    is_margin_trading_enabled: bool = True

    @property
    def key(self) -> UserKey:
        return (self.authority, self.sub_account_id)

    def clone(self) -> User:
        new = shallow_copy(self)
        new.spot_positions = [shallow_copy(p) for p in self.spot_positions]
        new.perp_positions = [shallow_copy(p) for p in self.perp_positions]
        new.orders = [shallow_copy(o) for o in self.orders]
        return new

    # --- status ---------------------------------------------------------------------------
    def is_being_liquidated(self) -> bool:
        return bool(self.status & (UserStatus.BeingLiquidated | UserStatus.Bankrupt))

    def is_bankrupt(self) -> bool:
        return bool(self.status & UserStatus.Bankrupt)

    def exit_cross_margin_liquidation(self) -> None:
        self.status &= ~(UserStatus.BeingLiquidated | UserStatus.Bankrupt)
        self.liquidation_margin_freed = 0

    def enter_cross_margin_liquidation(self, slot: int) -> int:
        """Flag the user as being liquidated; the liquidation's id. A liquidation already under
        way keeps its id; a new one restarts ``liquidation_margin_freed`` and pins
        ``last_active_slot`` to ``slot`` (the clock the escalating fee and the max percentage to
        liquidate run on)."""
        if self.is_being_liquidated():
            return self.next_liquidation_id - 1
        self.status |= UserStatus.BeingLiquidated
        self.liquidation_margin_freed = 0
        self.last_active_slot = slot
        liquidation_id = self.next_liquidation_id
        # a u16 in the program, wrapping to 1
        self.next_liquidation_id = liquidation_id + 1 if liquidation_id < 0xFFFF else 1
        return liquidation_id

    def enter_cross_margin_bankruptcy(self) -> None:
        self.status = (self.status & ~UserStatus.BeingLiquidated) | UserStatus.Bankrupt

    def exit_cross_margin_bankruptcy(self) -> None:
        self.exit_cross_margin_liquidation()

    def is_reduce_only(self) -> bool:
        return bool(self.status & UserStatus.ReduceOnly)

    # --- spot positions -----------------------------------------------------------------
    def get_spot_position(self, market_index: int) -> SpotPosition | None:
        for p in self.spot_positions:
            if p.market_index == market_index:
                return p
        return None

    def force_get_spot_position_mut(self, market_index: int) -> SpotPosition:
        """The position in ``market_index``, added if missing (``MaxNumberOfPositions`` if full)."""
        p = self.get_spot_position(market_index)
        if p is not None:
            return p
        if len(self.spot_positions) >= MAX_SPOT_POSITIONS:
            raise ProtocolError(ErrorCode.MaxNumberOfPositions, "all spot positions in use")
        p = SpotPosition(market_index=market_index)
        self.spot_positions.append(p)
        self.spot_positions.sort(key=lambda s: s.market_index)
        return p

    def prune_spot_position(self, market_index: int) -> None:
        """Drop the position if it holds nothing (the program marks such slots available)."""
        self.spot_positions = [
            p
            for p in self.spot_positions
            if p.market_index != market_index or not p.is_available()
        ]

    # --- perp positions -----------------------------------------------------------------
    def get_perp_position(self, market_index: int) -> PerpPosition | None:
        for p in self.perp_positions:
            if p.market_index == market_index:
                return p
        return None

    def force_get_perp_position_mut(self, market_index: int) -> PerpPosition:
        p = self.get_perp_position(market_index)
        if p is not None:
            return p
        if len(self.perp_positions) >= MAX_PERP_POSITIONS:
            raise ProtocolError(ErrorCode.MaxNumberOfPositions, "all perp positions in use")
        p = PerpPosition(market_index=market_index)
        self.perp_positions.append(p)
        self.perp_positions.sort(key=lambda s: s.market_index)
        return p

    def prune_perp_position(self, market_index: int) -> None:
        self.perp_positions = [
            p
            for p in self.perp_positions
            if p.market_index != market_index or not p.is_available()
        ]

    # --- orders -----------------------------------------------------------------------------
    def get_order(self, order_id: int) -> Order | None:
        for o in self.orders:
            if o.order_id == order_id:
                return o
        return None

    def get_order_by_user_order_id(self, user_order_id: int) -> Order | None:
        for o in self.orders:
            if user_order_id != 0 and o.user_order_id == user_order_id:
                return o
        return None

    def has_room_for_new_order(self) -> bool:
        return len(self.orders) < MAX_OPEN_ORDERS


@dataclass(slots=True)
class UserFees:
    total_fee_paid: int = 0
    total_fee_rebate: int = 0
    total_token_discount: int = 0
    total_referee_discount: int = 0
    total_referrer_reward: int = 0
    current_epoch_referrer_reward: int = 0


@dataclass(slots=True)
class UserStats:
    """Per-authority statistics shared by its sub-accounts."""

    authority: bytes
    referrer: bytes = bytes(32)
    fees: UserFees = field(default_factory=UserFees)
    maker_volume_30d: int = 0
    taker_volume_30d: int = 0
    filler_volume_30d: int = 0
    last_maker_volume_30d_ts: int = 0
    last_taker_volume_30d_ts: int = 0
    last_filler_volume_30d_ts: int = 0
    if_staked_quote_asset_amount: int = 0
    next_epoch_ts: int = 0  # when current_epoch_referrer_reward resets (unix seconds)
    number_of_sub_accounts: int = 0
    number_of_sub_accounts_created: int = 0

    def clone(self) -> UserStats:
        new = shallow_copy(self)
        new.fees = shallow_copy(self.fees)
        return new
