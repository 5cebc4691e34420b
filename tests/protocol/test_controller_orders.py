"""Placing, cancelling, expiring and modifying orders (``protocol.controller.orders``).

The exchange here is built by hand: USDC (spot 0, $1), SOL (spot 1, 9 decimals) and a SOL perp
(perp 0) whose AMM sits exactly at the $100 oracle with zero spreads, and whose TWAPs all equal
the oracle with $1M of 24h volume, so derived auctions are easy to work out by hand. Each step
runs in its own :class:`Accounts` view and is committed only if it succeeds, as a transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from protocol.accounts import Accounts, ProgramState
from protocol.clock import Clock
from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    MAX_OPEN_ORDERS,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_BALANCE_PRECISION,
)
from protocol.controller.orders import (
    PlaceOrderOptions,
    cancel_order,
    cancel_order_by_order_id,
    cancel_order_by_user_order_id,
    cancel_orders,
    expire_orders,
    get_auction_params,
    modify_order,
    place_perp_order,
    place_spot_order,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.records import OrderActionRecord
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OracleAccount,
    PerpMarket,
    SpotMarket,
    State,
    User,
)
from protocol.state.order_params import ModifyOrderParams, ModifyOrderPolicy, OrderParams
from protocol.state.user import PerpPosition, SpotPosition, UserKey
from protocol.types import (
    ContractTier,
    MarketStatus,
    MarketType,
    OracleSource,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
    UserStatus,
)

P = PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
USDC, SOL, SOL_PERP = 0, 1, 0
TS, SLOT = 1_700_000_000, 1_000
ALICE: UserKey = (b"\x01" * 32, 0)
PERP_STEP = BASE_PRECISION // 100
PERP_TICK = 100

T = TypeVar("T")


def make_state(usdc_deposit: int = 10_000) -> ProgramState:
    """The exchange above, with ALICE holding ``usdc_deposit`` whole USDC."""
    usdc = SpotMarket(
        market_index=USDC,
        name="USDC",
        oracle="USDC/USD",
        decimals=6,
        oracle_source=OracleSource.QuoteAsset,
        historical_oracle_data=HistoricalOracleData.seeded(P, TS),
        deposit_balance=usdc_deposit * SPOT_BALANCE_PRECISION,
        vault_amount=usdc_deposit * QUOTE_PRECISION,
    )
    sol = SpotMarket(
        market_index=SOL,
        name="SOL",
        oracle="SOL/USD",
        decimals=9,
        historical_oracle_data=HistoricalOracleData.seeded(100 * P, TS),
        initial_asset_weight=8_000,
        maintenance_asset_weight=9_000,
        initial_liability_weight=12_000,
        maintenance_liability_weight=11_000,
        order_step_size=10_000_000,  # 0.01 SOL
        order_tick_size=100,
        min_order_size=10_000_000,
    )
    sqrt_k = 10_000 * AMM_RESERVE_PRECISION
    amm = AMM(
        oracle="SOL/USD",
        historical_oracle_data=HistoricalOracleData.seeded(100 * P, TS),
        base_asset_reserve=sqrt_k,
        quote_asset_reserve=sqrt_k,
        sqrt_k=sqrt_k,
        terminal_quote_asset_reserve=sqrt_k,
        peg_multiplier=100 * PEG_PRECISION,
        order_step_size=PERP_STEP,
        order_tick_size=PERP_TICK,
        min_order_size=PERP_STEP,
        last_mark_price_twap=100 * P,
        last_mark_price_twap_5min=100 * P,
        last_mark_price_twap_ts=TS,
        last_bid_price_twap=100 * P,
        last_ask_price_twap=100 * P,
        volume_24h=1_000_000 * QUOTE_PRECISION,
        max_base_asset_reserve=2 * sqrt_k,
        min_base_asset_reserve=sqrt_k // 2,
    )
    perp = PerpMarket(
        market_index=SOL_PERP,
        name="SOL-PERP",
        amm=amm,
        contract_tier=ContractTier.A,
        margin_ratio_initial=1_000,
        margin_ratio_maintenance=500,
    )
    alice = User(
        authority=ALICE[0],
        sub_account_id=ALICE[1],
        spot_positions=[
            SpotPosition(market_index=USDC, scaled_balance=usdc_deposit * SPOT_BALANCE_PRECISION)
        ],
    )
    return ProgramState(
        state=State(),
        spot_markets={USDC: usdc, SOL: sol},
        perp_markets={SOL_PERP: perp},
        oracles={
            "USDC/USD": OracleAccount("USDC/USD", P, 0, SLOT),
            "SOL/USD": OracleAccount("SOL/USD", 100 * P, 10_000, SLOT),
        },
        users={ALICE: alice},
    )


def run(
    state: ProgramState, action: Callable[[Accounts], T], *, slot: int = SLOT, ts: int = TS
) -> tuple[T, list[OrderActionRecord]]:
    """Execute ``action`` as one transaction; commit and return its result and order records."""
    accounts = Accounts(state, Clock(slot, ts))
    result = action(accounts)
    accounts.commit()
    return result, [r for r in accounts.records if isinstance(r, OrderActionRecord)]


def rejected(state: ProgramState, action: Callable[[Accounts], object], **kw: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        run(state, action, **kw)
    return err.value


def perp_params(**fields: Any) -> OrderParams:
    """A 1 SOL-PERP limit bid at $90 (does not cross the $100 AMM)."""
    base: dict[str, Any] = {
        "order_type": OrderType.Limit,
        "market_type": MarketType.Perp,
        "direction": LONG,
        "base_asset_amount": BASE_PRECISION,
        "market_index": SOL_PERP,
        "price": 90 * P,
    }
    base.update(fields)
    return OrderParams(**base)


def spot_params(**fields: Any) -> OrderParams:
    """A 1 SOL spot limit bid at $90."""
    base: dict[str, Any] = {
        "order_type": OrderType.Limit,
        "market_type": MarketType.Spot,
        "direction": LONG,
        "base_asset_amount": BASE_PRECISION,
        "market_index": SOL,
        "price": 90 * P,
    }
    base.update(fields)
    return OrderParams(**base)


def place(state: ProgramState, params: OrderParams, **kw: int) -> int | None:
    place_fn = place_perp_order if params.market_type == MarketType.Perp else place_spot_order
    order_id, _ = run(state, lambda a: place_fn(a, ALICE, params), **kw)
    return order_id


def alice(state: ProgramState) -> User:
    return state.users[ALICE]


def perp_position(state: ProgramState) -> PerpPosition:
    position = alice(state).get_perp_position(SOL_PERP)
    assert position is not None
    return position


# --- placing: the happy path and bookkeeping ----------------------------------------------------
def test_place_perp_limit_order_records_and_books_open_bids() -> None:
    state = make_state()
    order_id, records = run(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert order_id == 1
    user = alice(state)
    assert user.next_order_id == 2
    (order,) = user.orders
    assert (order.order_id, order.price, order.base_asset_amount, order.status) == (
        1,
        90 * P,
        BASE_PRECISION,
        OrderStatus.Open,
    )
    assert (order.auction_duration, order.max_ts, order.slot) == (0, 0, SLOT)
    assert order.posted_slot_tail == SLOT % 256
    position = perp_position(state)
    assert (position.open_bids, position.open_asks, position.open_orders) == (BASE_PRECISION, 0, 1)
    assert records == [
        OrderActionRecord(
            action="place",
            authority=ALICE[0],
            sub_account_id=0,
            order_id=1,
            market_index=SOL_PERP,
            market_type=MarketType.Perp,
            order_type=OrderType.Limit,
            direction=LONG,
            base_asset_amount=BASE_PRECISION,
            base_asset_amount_filled=0,
            price=90 * P,
            reason="",
            slot=SLOT,
            ts=TS,
        )
    ]
    assert user.last_active_slot == SLOT


def test_size_and_price_are_standardized_down_to_step_and_tick() -> None:
    state = make_state()
    # 1.234567 SOL -> 1.23 (step 0.01); $90.00015 bid -> $90.0001 (tick 0.0001)
    place(state, perp_params(base_asset_amount=1_234_567_000, price=90_000_150))
    (order,) = alice(state).orders
    assert (order.base_asset_amount, order.price) == (1_230_000_000, 90_000_100)
    place(state, perp_params(direction=SHORT, price=110_000_150))
    assert alice(state).orders[1].price == 110_000_200  # an ask rounds up


def test_open_bids_and_asks_after_place_cancel_and_modify() -> None:
    state = make_state()
    bid = place(state, perp_params())
    ask = place(
        state, perp_params(direction=SHORT, base_asset_amount=2 * BASE_PRECISION, price=110 * P)
    )
    position = perp_position(state)
    assert (position.open_bids, position.open_asks, position.open_orders) == (
        BASE_PRECISION,
        -2 * BASE_PRECISION,
        2,
    )

    _, records = run(state, lambda a: cancel_order(a, ALICE, bid))
    assert [(r.action, r.order_id) for r in records] == [("cancel", bid)]
    position = perp_position(state)
    assert (position.open_bids, position.open_asks, position.open_orders) == (
        0,
        -2 * BASE_PRECISION,
        1,
    )

    modify = ModifyOrderParams(base_asset_amount=3 * BASE_PRECISION, price=111 * P)
    new_id, records = run(state, lambda a: modify_order(a, ALICE, modify, ask))
    assert new_id == 3
    assert [(r.action, r.order_id, r.reason) for r in records] == [
        ("cancel", ask, "modify"),
        ("place", 3, "modify"),
    ]
    position = perp_position(state)
    assert (position.open_bids, position.open_asks, position.open_orders) == (
        0,
        -3 * BASE_PRECISION,
        1,
    )
    (order,) = alice(state).orders
    assert (order.order_id, order.direction, order.price, order.base_asset_amount) == (
        3,
        SHORT,
        111 * P,
        3 * BASE_PRECISION,
    )

    run(state, lambda a: cancel_orders(a, ALICE))
    assert alice(state).orders == []
    assert alice(state).get_perp_position(SOL_PERP) is None  # emptied position is released


def test_spot_open_bids_and_asks_are_token_amounts() -> None:
    state = make_state()
    bid = place(state, spot_params(base_asset_amount=1_500_000_000))
    place(state, spot_params(direction=SHORT, base_asset_amount=20_000_000, price=120 * P))
    position = alice(state).get_spot_position(SOL)
    assert position is not None
    assert (position.open_bids, position.open_asks, position.open_orders) == (
        1_500_000_000,
        -20_000_000,
        2,
    )
    assert run(state, lambda a: cancel_order_by_order_id(a, ALICE, bid))[0] is True
    assert (position := alice(state).get_spot_position(SOL)) is not None
    assert (position.open_bids, position.open_asks, position.open_orders) == (0, -20_000_000, 1)


def test_trigger_orders_do_not_count_in_open_bids() -> None:
    state = make_state()
    params = perp_params(
        order_type=OrderType.TriggerMarket,
        price=0,
        trigger_price=95 * P,
        trigger_condition=OrderTriggerCondition.Below,
    )
    order_id = place(state, params)
    position = perp_position(state)
    assert (position.open_bids, position.open_orders) == (0, 1)
    run(state, lambda a: cancel_order(a, ALICE, order_id))
    assert alice(state).get_perp_position(SOL_PERP) is None


def test_thirty_third_order_fails_with_max_number_of_orders() -> None:
    state = make_state()
    for i in range(MAX_OPEN_ORDERS):
        assert place(state, perp_params(price=(80 + i) * P)) == i + 1
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert (err.code, err.field) == (ErrorCode.MaxNumberOfOrders, "order_type")
    assert len(alice(state).orders) == MAX_OPEN_ORDERS
    assert perp_position(state).open_bids == MAX_OPEN_ORDERS * BASE_PRECISION


def test_user_order_id_must_be_unique_among_open_orders() -> None:
    state = make_state()
    place(state, perp_params(user_order_id=7))
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params(user_order_id=7)))
    assert (err.code, err.field) == (ErrorCode.UserOrderIdAlreadyInUse, "user_order_id")
    assert run(state, lambda a: cancel_order_by_user_order_id(a, ALICE, 7))[0] is True
    assert place(state, perp_params(user_order_id=7)) == 2


# --- market orders: derived auctions and expiry ---------------------------------------------------
def test_market_order_without_auction_params_gets_derived_params() -> None:
    # Tier A, every TWAP at the $100 oracle, zero spreads and stds: the baseline start offset
    # is 0; the end offset is the smallest buffer the tier allows, 100e6 / 1000 = 100_000.
    # A market order starts 25 bps (100e6 * 2_500 / 1e6 = 250_000) more passive:
    #   bid: 99_750_000 -> 100_100_000; the 350_000 span is 0.35% -> 0.35 * 100 = 35 slots.
    #   max_ts = now + max(30, 35 / 2 + 10 = 27) = now + 30.
    state = make_state()
    place(state, perp_params(order_type=OrderType.Market, price=0))
    (order,) = alice(state).orders
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        99_750_000,
        100_100_000,
        35,
    )
    assert order.max_ts == TS + 30
    # ask: 100_250_000 -> 99_900_000 (the bid TWAP less the buffer), also 35 slots
    place(state, perp_params(order_type=OrderType.Market, price=0, direction=SHORT))
    order = alice(state).orders[1]
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        100_250_000,
        99_900_000,
        35,
    )


def test_market_order_auction_is_capped_at_its_limit_price() -> None:
    # limit $100.05: the end (buffer doubled, still clamped to 100_000) is capped at the limit;
    # the 300_000 span is 30 slots
    state = make_state()
    place(state, perp_params(order_type=OrderType.Market, price=100_050_000))
    (order,) = alice(state).orders
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        99_750_000,
        100_050_000,
        30,
    )


def test_spot_market_order_uses_the_default_auction() -> None:
    # no AMM: oracle -> oracle + 0.5% over state.default_spot_auction_duration (10) slots;
    # spot market orders expire 30 s after placement
    state = make_state()
    place(state, spot_params(order_type=OrderType.Market, price=0))
    (order,) = alice(state).orders
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        100 * P,
        100_500_000,
        10,
    )
    assert order.max_ts == TS + 30


def test_get_auction_params_for_an_oracle_order_needs_offsets() -> None:
    oracle = OracleAccount("o", 100 * P, 0, SLOT).price_data(SLOT)
    with pytest.raises(ProtocolError) as err:
        get_auction_params(perp_params(order_type=OrderType.Oracle, price=0), oracle, 100, 10)
    assert (err.value.code, err.value.field) == (
        ErrorCode.InvalidOrderAuction,
        "auction_start_price",
    )
    # a limit order's non-zero duration is raised to the minimum; prices tick-standardized
    limit = perp_params(
        auction_duration=3, auction_start_price=89_000_050, auction_end_price=90 * P
    )
    assert get_auction_params(limit, oracle, 100, 10) == (89_000_000, 90 * P, 10)
    assert get_auction_params(perp_params(), oracle, 100, 10) == (0, 0, 0)


def test_expired_orders_are_cancelled_on_the_next_placement() -> None:
    state = make_state()
    market_id = place(state, perp_params(order_type=OrderType.Market, price=0))
    position = perp_position(state)
    assert position.open_bids == BASE_PRECISION
    # at max_ts the order is still live; one second later it expires
    assert run(state, lambda a: expire_orders(a, ALICE), ts=TS + 30)[0] == []
    _, records = run(
        state, lambda a: place_perp_order(a, ALICE, perp_params()), slot=SLOT + 80, ts=TS + 31
    )
    assert [(r.action, r.order_id, r.reason) for r in records] == [
        ("expire", market_id, "order_expired"),
        ("place", 2, ""),
    ]
    position = perp_position(state)
    assert (position.open_bids, position.open_orders) == (BASE_PRECISION, 1)


def test_an_already_expired_order_is_silently_not_placed() -> None:
    state = make_state()
    order_id, records = run(state, lambda a: place_perp_order(a, ALICE, perp_params(max_ts=TS - 1)))
    assert (order_id, records) == (None, [])
    assert alice(state).orders == [] and alice(state).get_perp_position(SOL_PERP) is None
    assert place(state, spot_params(max_ts=TS - 1)) is None


# --- post-only ------------------------------------------------------------------------------------
def test_post_only_against_the_amm() -> None:
    state = make_state()
    crossing = perp_params(price=101 * P, post_only=PostOnlyParam.MustPostOnly)
    err = rejected(state, lambda a: place_perp_order(a, ALICE, crossing))
    assert (err.code, err.field) == (ErrorCode.PlacePostOnlyLimitFailure, "post_only")
    # TryPostOnly: not placed, not an error, nothing recorded
    try_params = replace(crossing, post_only=PostOnlyParam.TryPostOnly)
    order_id, records = run(state, lambda a: place_perp_order(a, ALICE, try_params))
    assert (order_id, records) == (None, [])
    assert alice(state).get_perp_position(SOL_PERP) is None
    # Slide: the bid moves one tick under the $100 AMM ask and rests
    place(state, replace(crossing, post_only=PostOnlyParam.Slide))
    (order,) = alice(state).orders
    assert (order.price, order.post_only) == (100 * P - PERP_TICK, True)
    # a non-crossing post-only bid is placed as given
    place(state, replace(crossing, price=99 * P))
    assert alice(state).orders[1].price == 99 * P


# --- reduce-only ----------------------------------------------------------------------------------
def _with_long_position(state: ProgramState, base: int, quote_entry: int, usdc: int) -> None:
    user = alice(state)
    user.spot_positions[0].scaled_balance = usdc * SPOT_BALANCE_PRECISION
    user.perp_positions = [
        PerpPosition(
            market_index=SOL_PERP,
            base_asset_amount=base,
            quote_asset_amount=-quote_entry,
            quote_entry_amount=-quote_entry,
            quote_break_even_amount=-quote_entry,
        )
    ]
    state.perp_markets[SOL_PERP].amm.base_asset_amount_long = base
    state.perp_markets[SOL_PERP].number_of_users_with_base = 1


def test_reduce_only_orders_are_checked_at_maintenance_margin() -> None:
    # long 10 SOL entered at $100 (no PnL), $60 collateral: the initial requirement is
    # 10 * $100 * 10% = $100 (> $60), maintenance 5% = $50 (+ $0.01 per open order) <= $60.
    state = make_state()
    _with_long_position(state, 10 * BASE_PRECISION, 1_000 * QUOTE_PRECISION, 60)
    growing = perp_params(direction=SHORT, base_asset_amount=20 * BASE_PRECISION, price=110 * P)
    err = rejected(state, lambda a: place_perp_order(a, ALICE, growing))
    assert err.code == ErrorCode.InsufficientCollateral
    # the same order reduce-only does not increase risk: only maintenance is required
    # (worst case either side is 10 SOL)
    assert place(state, replace(growing, reduce_only=True)) == 1
    assert alice(state).orders[0].reduce_only
    assert perp_position(state).open_asks == -20 * BASE_PRECISION


def test_closing_the_whole_position_is_not_risk_increasing() -> None:
    state = make_state()
    _with_long_position(state, 10 * BASE_PRECISION, 1_000 * QUOTE_PRECISION, 60)
    closing = perp_params(direction=SHORT, base_asset_amount=10 * BASE_PRECISION, price=111 * P)
    assert place(state, closing) == 1
    assert not alice(state).orders[0].reduce_only


def test_reduce_only_user_must_place_reduce_only() -> None:
    state = make_state()
    alice(state).status = UserStatus.ReduceOnly
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert (err.code, err.field) == (ErrorCode.UserReduceOnly, "reduce_only")
    assert place(state, perp_params(reduce_only=True)) == 1


def test_reduce_only_market_accepts_only_orders_against_the_position() -> None:
    state = make_state()
    state.perp_markets[SOL_PERP].status = MarketStatus.ReduceOnly
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderNotRiskReducing, "reduce_only")
    _with_long_position(state, 10 * BASE_PRECISION, 1_000 * QUOTE_PRECISION, 10_000)
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderNotRiskReducing, "direction")
    # a short against the long is placed, and marked reduce-only by the market
    place(state, perp_params(direction=SHORT, price=110 * P))
    assert alice(state).orders[0].reduce_only


# --- account and market state ---------------------------------------------------------------------
def test_user_being_liquidated_can_not_place() -> None:
    # $1 of collateral against a 10 SOL long: far below maintenance, so the flag stays
    state = make_state()
    _with_long_position(state, 10 * BASE_PRECISION, 1_000 * QUOTE_PRECISION, 1)
    alice(state).status = UserStatus.BeingLiquidated
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params(reduce_only=True)))
    assert err.code == ErrorCode.UserIsBeingLiquidated
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params()))
    assert err.code == ErrorCode.UserIsBeingLiquidated


def test_user_whose_margin_recovered_leaves_liquidation_and_places() -> None:
    state = make_state()
    alice(state).status = UserStatus.BeingLiquidated
    assert place(state, perp_params()) == 1
    assert not alice(state).is_being_liquidated()


def test_bankrupt_user_can_not_place_even_in_a_liquidation() -> None:
    state = make_state(usdc_deposit=0)
    _with_long_position(state, 10 * BASE_PRECISION, 2_000 * QUOTE_PRECISION, 0)
    alice(state).status = UserStatus.Bankrupt | UserStatus.BeingLiquidated
    options = PlaceOrderOptions(explanation="liquidation")
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params(), options))
    assert err.code == ErrorCode.UserBankrupt


@pytest.mark.parametrize(
    ("status", "expiry_ts", "code"),
    [
        (MarketStatus.Initialized, 0, ErrorCode.MarketBeingInitialized),
        (MarketStatus.Settlement, 0, ErrorCode.MarketPlaceOrderPaused),
        (MarketStatus.Active, TS, ErrorCode.MarketPlaceOrderPaused),
    ],
)
def test_perp_market_must_be_live(status: MarketStatus, expiry_ts: int, code: ErrorCode) -> None:
    state = make_state()
    state.perp_markets[SOL_PERP].status = status
    state.perp_markets[SOL_PERP].expiry_ts = expiry_ts
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params()))
    assert (err.code, err.field) == (code, "market_index")


def test_perp_size_below_one_step_and_wrong_market_type() -> None:
    state = make_state()
    err = rejected(
        state, lambda a: place_perp_order(a, ALICE, perp_params(base_asset_amount=PERP_STEP - 1))
    )
    assert (err.code, err.field) == (ErrorCode.OrderAmountTooSmall, "base_asset_amount")
    err = rejected(
        state, lambda a: place_perp_order(a, ALICE, perp_params(market_type=MarketType.Spot))
    )
    assert (err.code, err.field) == (ErrorCode.InvalidOrderMarketType, "market_type")
    err = rejected(
        state, lambda a: place_perp_order(a, ALICE, perp_params(base_asset_amount=2**64 - 1))
    )
    assert (err.code, err.field) == (ErrorCode.InvalidOrder, "base_asset_amount")


def test_validation_errors_surface_from_placement() -> None:
    state = make_state()
    err = rejected(state, lambda a: place_perp_order(a, ALICE, perp_params(price=0)))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderLimitPrice, "price")
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params(trigger_price=P)))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")


def test_margin_check_includes_the_new_order() -> None:
    # $100 of collateral: a 9 SOL bid needs 9 * $100 * 10% + $0.01 = $90.01 (ok),
    # a further 1.5 SOL bid makes it $105.02 (> $100)
    state = make_state(usdc_deposit=100)
    place(state, perp_params(base_asset_amount=9 * BASE_PRECISION))
    err = rejected(
        state, lambda a: place_perp_order(a, ALICE, perp_params(base_asset_amount=1_500_000_000))
    )
    assert err.code == ErrorCode.InsufficientCollateral
    assert len(alice(state).orders) == 1  # the rejected transaction left nothing behind


def test_max_open_interest_caps_risk_increasing_orders() -> None:
    state = make_state()
    state.perp_markets[SOL_PERP].amm.max_open_interest = 5 * BASE_PRECISION
    place(state, perp_params(base_asset_amount=5 * BASE_PRECISION))
    err = rejected(
        state,
        lambda a: place_perp_order(a, ALICE, perp_params(base_asset_amount=6 * BASE_PRECISION)),
    )
    assert (err.code, err.field) == (ErrorCode.MaxOpenInterest, "base_asset_amount")


# --- spot-specific rejections ---------------------------------------------------------------------
def test_spot_rejections() -> None:
    state = make_state()
    err = rejected(
        state, lambda a: place_spot_order(a, ALICE, spot_params(base_asset_amount=9_999_999))
    )
    assert (err.code, err.field) == (ErrorCode.InvalidOrderSizeTooSmall, "base_asset_amount")
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params(market_index=USDC)))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderBaseQuoteAsset, "market_index")
    err = rejected(
        state, lambda a: place_spot_order(a, ALICE, spot_params(market_type=MarketType.Perp))
    )
    assert (err.code, err.field) == (ErrorCode.InvalidOrderMarketType, "market_type")
    err = rejected(
        state,
        lambda a: place_spot_order(a, ALICE, spot_params(order_type=OrderType.Oracle, price=0)),
    )
    assert (err.code, err.field) == (ErrorCode.InvalidOrderAuction, "auction_start_price")
    state.spot_markets[SOL].orders_enabled = False
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params()))
    assert (err.code, err.field) == (ErrorCode.SpotOrdersDisabled, "market_index")
    state.spot_markets[SOL].orders_enabled = True
    state.spot_markets[SOL].status = MarketStatus.Initialized
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params()))
    assert (err.code, err.field) == (ErrorCode.MarketBeingInitialized, "market_index")


def test_spot_margin_trading_disabled_forbids_orders_that_could_borrow() -> None:
    state = make_state(usdc_deposit=100)
    alice(state).is_margin_trading_enabled = False
    # selling SOL the user does not hold could borrow it
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params(direction=SHORT)))
    assert err.code == ErrorCode.MarginTradingDisabled
    # bids are valued at the $100 oracle: one 1 SOL bid is exactly covered by $100 of USDC,
    # two are not
    place(state, spot_params())
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params()))
    assert err.code == ErrorCode.MarginTradingDisabled


def test_spot_reduce_only_market() -> None:
    state = make_state()
    state.spot_markets[SOL].status = MarketStatus.ReduceOnly
    err = rejected(state, lambda a: place_spot_order(a, ALICE, spot_params()))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderNotRiskReducing, "reduce_only")


# --- cancel -------------------------------------------------------------------------------------
def test_cancel_unknown_order() -> None:
    state = make_state()
    err = rejected(state, lambda a: cancel_order(a, ALICE, 42))
    assert (err.code, err.field) == (ErrorCode.OrderDoesNotExist, "order_id")
    err = rejected(state, lambda a: cancel_order(a, ALICE, user_order_id=3))
    assert (err.code, err.field) == (ErrorCode.OrderDoesNotExist, "user_order_id")
    # the program's cancel instructions treat an unknown id as nothing to do
    assert run(state, lambda a: cancel_order_by_order_id(a, ALICE, 42)) == (False, [])
    assert run(state, lambda a: cancel_order_by_user_order_id(a, ALICE, 3)) == (False, [])


def test_cancel_an_order_that_is_not_open() -> None:
    state = make_state()
    order_id = place(state, perp_params())
    alice(state).orders[0].status = OrderStatus.Filled
    err = rejected(state, lambda a: cancel_order(a, ALICE, order_id))
    assert (err.code, err.field) == (ErrorCode.OrderNotOpen, "order_id")
    assert run(state, lambda a: cancel_order_by_order_id(a, ALICE, order_id or 0))[0] is False


def test_cancel_orders_filters() -> None:
    state = make_state()
    perp_bid = place(state, perp_params())
    perp_ask = place(state, perp_params(direction=SHORT, price=110 * P))
    spot_bid = place(state, spot_params())
    ids, records = run(state, lambda a: cancel_orders(a, ALICE, direction=SHORT))
    assert ids == [perp_ask] and [r.order_id for r in records] == [perp_ask]
    # a market filter needs both type and index
    ids, _ = run(state, lambda a: cancel_orders(a, ALICE, market_type=MarketType.Spot))
    assert ids == [perp_bid, spot_bid]


# --- modify -------------------------------------------------------------------------------------
def test_modify_keeps_unset_fields_and_the_unfilled_size() -> None:
    state = make_state()
    order_id = place(state, perp_params(user_order_id=5, price=90 * P))
    alice(state).orders[0].base_asset_amount_filled = 400_000_000
    perp_position(state).open_bids = 600_000_000  # what a fill of 0.4 would leave
    new_id, _ = run(
        state, lambda a: modify_order(a, ALICE, ModifyOrderParams(price=91 * P), order_id)
    )
    (order,) = alice(state).orders
    assert (order.order_id, order.user_order_id, order.price) == (new_id, 5, 91 * P)
    assert (order.base_asset_amount, order.base_asset_amount_filled) == (600_000_000, 0)
    assert perp_position(state).open_bids == 600_000_000


def test_modify_excluding_previous_fill() -> None:
    state = make_state()
    order_id = place(state, perp_params())
    alice(state).orders[0].base_asset_amount_filled = 400_000_000
    policy = ModifyOrderPolicy.ExcludePreviousFill
    params = ModifyOrderParams(base_asset_amount=BASE_PRECISION, policy=policy)
    new_id, _ = run(state, lambda a: modify_order(a, ALICE, params, order_id))
    assert alice(state).orders[0].base_asset_amount == 600_000_000
    # asking for no more than was already filled cancels without replacing
    params = ModifyOrderParams(base_asset_amount=100_000_000, policy=policy)
    alice(state).orders[0].base_asset_amount_filled = 100_000_000
    assert run(state, lambda a: modify_order(a, ALICE, params, new_id))[0] is None
    assert alice(state).orders == []


def test_modify_by_user_order_id_and_must_modify() -> None:
    state = make_state()
    place(state, perp_params(user_order_id=9, post_only=PostOnlyParam.MustPostOnly))
    new_id, _ = run(
        state,
        lambda a: modify_order(
            a, ALICE, ModifyOrderParams(direction=SHORT, price=120 * P), user_order_id=9
        ),
    )
    (order,) = alice(state).orders
    assert (order.order_id, order.direction, order.price, order.post_only) == (
        new_id,
        SHORT,
        120 * P,
        True,
    )
    # a missing order is nothing to do, unless the policy says it must exist
    assert run(state, lambda a: modify_order(a, ALICE, ModifyOrderParams(), 99)) == (None, [])
    must = ModifyOrderParams(policy=ModifyOrderPolicy.MustModify)
    err = rejected(state, lambda a: modify_order(a, ALICE, must, 99))
    assert (err.code, err.field) == (ErrorCode.OrderDoesNotExist, "order_id")


def test_modified_order_that_fails_validation_rolls_back_the_cancel() -> None:
    state = make_state()
    order_id = place(state, perp_params())
    err = rejected(
        state, lambda a: modify_order(a, ALICE, ModifyOrderParams(base_asset_amount=0), order_id)
    )
    assert err.code == ErrorCode.OrderAmountTooSmall
    (order,) = alice(state).orders
    assert order.order_id == order_id and perp_position(state).open_bids == BASE_PRECISION


def test_order_type_of_modified_trigger_is_untriggered_again() -> None:
    state = make_state()
    order_id = place(
        state,
        perp_params(
            order_type=OrderType.TriggerLimit,
            trigger_price=95 * P,
            trigger_condition=OrderTriggerCondition.Below,
        ),
    )
    alice(state).orders[0].trigger_condition = OrderTriggerCondition.TriggeredBelow
    perp_position(state).open_bids = BASE_PRECISION  # a triggered order counts
    run(state, lambda a: modify_order(a, ALICE, ModifyOrderParams(trigger_price=96 * P), order_id))
    (order,) = alice(state).orders
    assert (order.trigger_condition, order.trigger_price) == (OrderTriggerCondition.Below, 96 * P)
    assert perp_position(state).open_bids == 0
