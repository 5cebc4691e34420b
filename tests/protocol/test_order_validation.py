"""Order validation (``protocol.validation.order``): one test per rejection, code and field.

The prediction-market vectors are the program's (``validation/order/test.rs``); the rest are
constructed so that exactly one rule is broken.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    MAX_PREDICTION_MARKET_PRICE,
    PEG_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import Order
from protocol.types import (
    ContractType,
    MarketStatus,
    MarketType,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from protocol.validation.order import (
    validate_order,
    validate_order_for_force_reduce_only,
    validate_place_and_make_order_params,
    validate_spot_order,
)

P = 10**6
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
STEP = BASE_PRECISION // 100  # 0.01
MIN_SIZE = BASE_PRECISION // 10  # 0.1


def _market(**fields: Any) -> PerpMarket:
    """A $100 AMM (100/100 reserves, peg 100), step 0.01, tick 0.0001, min size 0.1."""
    amm = AMM(
        oracle="o",
        base_asset_reserve=100 * AMM_RESERVE_PRECISION,
        quote_asset_reserve=100 * AMM_RESERVE_PRECISION,
        sqrt_k=100 * AMM_RESERVE_PRECISION,
        peg_multiplier=100 * PEG_PRECISION,
        order_step_size=STEP,
        order_tick_size=100,
        min_order_size=MIN_SIZE,
    )
    return PerpMarket(market_index=0, name="t", amm=amm, **fields)


def _order(**fields: Any) -> Order:
    """A valid long market order: 1 base, auction 99 -> 101."""
    base: dict[str, Any] = {
        "order_id": 1,
        "market_index": 0,
        "market_type": MarketType.Perp,
        "order_type": OrderType.Market,
        "direction": LONG,
        "base_asset_amount": BASE_PRECISION,
        "slot": 0,
        "auction_duration": 10,
        "auction_start_price": 99 * P,
        "auction_end_price": 101 * P,
    }
    base.update(fields)
    return Order(**base)


def _limit(**fields: Any) -> Order:
    base: dict[str, Any] = {
        "order_type": OrderType.Limit,
        "price": 99 * P,
        "auction_duration": 0,
        "auction_start_price": 0,
        "auction_end_price": 0,
    }
    base.update(fields)
    return _order(**base)


def _trigger(order_type: OrderType, **fields: Any) -> Order:
    base: dict[str, Any] = {
        "order_type": order_type,
        "trigger_price": 95 * P,
        "trigger_condition": OrderTriggerCondition.Below,
        "price": 94 * P if order_type == OrderType.TriggerLimit else 0,
        "auction_duration": 0,
        "auction_start_price": 0,
        "auction_end_price": 0,
    }
    base.update(fields)
    return _order(**base)


def _oracle_order(**fields: Any) -> Order:
    base: dict[str, Any] = {
        "order_type": OrderType.Oracle,
        "auction_start_price": -P,
        "auction_end_price": P,
        "oracle_price_offset": 2 * P,
    }
    base.update(fields)
    return _order(**base)


def _rejected(order: Order, market: PerpMarket | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        validate_order(order, market or _market(), 100 * P, 0)
    return err.value


def test_valid_orders_of_every_type_pass() -> None:
    market = _market()
    for order in (
        _order(),
        _limit(),
        _limit(post_only=True, price=99 * P),
        _trigger(OrderType.TriggerMarket),
        _trigger(OrderType.TriggerLimit),
        _oracle_order(),
        _limit(price=0, oracle_price_offset=-P),
    ):
        validate_order(order, market, 100 * P, 0)


# --- size ---------------------------------------------------------------------------------------
def test_zero_size_is_too_small() -> None:
    err = _rejected(_order(base_asset_amount=0))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderSizeTooSmall, "base_asset_amount")


def test_size_must_be_a_step_multiple() -> None:
    err = _rejected(_order(base_asset_amount=BASE_PRECISION + 1))
    assert (err.code, err.field) == (
        ErrorCode.InvalidOrderNotStepSizeMultiple,
        "base_asset_amount",
    )


def test_size_below_minimum_unless_reduce_only_or_jit_maker() -> None:
    err = _rejected(_order(base_asset_amount=STEP))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderMinOrderSize, "base_asset_amount")
    validate_order(_order(base_asset_amount=STEP, reduce_only=True), _market(), 100 * P, 0)
    jit = _limit(base_asset_amount=STEP, post_only=True, immediate_or_cancel=True, price=99 * P)
    validate_order(jit, _market(), 100 * P, 0)


# --- auctions -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"auction_start_price": 0}, "auction_start_price"),  # market needs positive prices
        ({"auction_start_price": 102 * P}, "auction_start_price"),  # bid auction falls
        ({"price": 100 * P}, "auction_end_price"),  # ends beyond the limit
        (
            {"direction": SHORT, "auction_start_price": 99 * P, "auction_end_price": 101 * P},
            "auction_start_price",
        ),
        (
            {
                "direction": SHORT,
                "auction_start_price": 101 * P,
                "auction_end_price": 99 * P,
                "price": 100 * P,
            },
            "auction_end_price",
        ),
    ],
)
def test_market_auction_rejections(fields: dict[str, Any], field: str) -> None:
    err = _rejected(_order(**fields))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderAuction, field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"auction_start_price": 2 * P}, "auction_start_price"),
        ({"auction_end_price": 3 * P}, "auction_end_price"),  # beyond the 2.0 offset
        (
            {"direction": SHORT, "auction_start_price": -P, "auction_end_price": P},
            "auction_start_price",
        ),
        (
            {
                "direction": SHORT,
                "auction_start_price": P,
                "auction_end_price": -3 * P,
                "oracle_price_offset": -2 * P,
            },
            "auction_end_price",
        ),
    ],
)
def test_oracle_auction_rejections(fields: dict[str, Any], field: str) -> None:
    err = _rejected(_oracle_order(**fields))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderAuction, field)


def test_limit_auction_is_checked_fixed_or_by_offset() -> None:
    err = _rejected(_limit(auction_duration=10, auction_start_price=98 * P, auction_end_price=0))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderAuction, "auction_end_price")
    offset = _limit(
        price=0,
        oracle_price_offset=P,
        auction_duration=10,
        auction_start_price=2 * P,
        auction_end_price=P,
    )
    err = _rejected(offset)
    assert (err.code, err.field) == (ErrorCode.InvalidOrderAuction, "auction_start_price")


def test_limit_without_auction_can_not_carry_auction_prices() -> None:
    err = _rejected(_limit(auction_start_price=98 * P))
    assert (err.code, err.field) == (ErrorCode.InvalidOrder, "auction_start_price")
    err = _rejected(_limit(auction_end_price=98 * P))
    assert (err.code, err.field) == (ErrorCode.InvalidOrder, "auction_end_price")


# --- trigger ------------------------------------------------------------------------------------
def test_trigger_price_rules() -> None:
    err = _rejected(_order(trigger_price=P))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")
    err = _rejected(_limit(trigger_price=P))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")
    err = _rejected(_oracle_order(trigger_price=P))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")
    err = _rejected(_trigger(OrderType.TriggerMarket, trigger_price=0))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")
    err = _rejected(_trigger(OrderType.TriggerLimit, trigger_price=0))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderTrigger, "trigger_price")


def test_trigger_condition_must_be_untriggered() -> None:
    for order_type in (OrderType.TriggerMarket, OrderType.TriggerLimit):
        order = _trigger(order_type, trigger_condition=OrderTriggerCondition.TriggeredAbove)
        err = _rejected(order)
        assert (err.code, err.field) == (
            ErrorCode.InvalidTriggerOrderCondition,
            "trigger_condition",
        )


# --- post only, IOC, limit price, oracle offset -------------------------------------------------
@pytest.mark.parametrize(
    "order",
    [
        _order(post_only=True),
        _oracle_order(post_only=True),
        _trigger(OrderType.TriggerMarket, post_only=True),
        _trigger(OrderType.TriggerLimit, post_only=True),
    ],
)
def test_only_limit_orders_may_be_post_only(order: Order) -> None:
    err = _rejected(order)
    assert (err.code, err.field) == (ErrorCode.InvalidOrderPostOnly, "post_only")


def test_post_only_limit_can_not_have_an_auction() -> None:
    order = _limit(
        post_only=True, auction_duration=10, auction_start_price=98 * P, auction_end_price=99 * P
    )
    err = _rejected(order)
    assert (err.code, err.field) == (ErrorCode.InvalidOrder, "auction_duration")


def test_post_only_bid_that_would_take_from_the_amm_fails() -> None:
    # the AMM asks $100: a $100.50 post-only bid could buy right away
    err = _rejected(_limit(post_only=True, price=100_500_000))
    assert (err.code, err.field) == (ErrorCode.PlacePostOnlyLimitFailure, "post_only")
    # ... unless the oracle is already above the limit
    validate_order(_limit(post_only=True, price=100_500_000), _market(), 101 * P, 0)
    # ... or the AMM is paused
    validate_order(
        _limit(post_only=True, price=100_500_000),
        _market(status=MarketStatus.AmmPaused),
        100 * P,
        0,
    )
    # a bid one tick above the AMM can not move its price past the limit minus a tick
    validate_order(_limit(post_only=True, price=100 * P + 100), _market(), 100 * P, 0)


def test_post_only_ask_that_would_take_from_the_amm_fails() -> None:
    err = _rejected(_limit(post_only=True, price=99_500_000, direction=SHORT))
    assert (err.code, err.field) == (ErrorCode.PlacePostOnlyLimitFailure, "post_only")


def test_market_and_oracle_orders_can_not_be_immediate_or_cancel() -> None:
    err = _rejected(_order(immediate_or_cancel=True))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderIOC, "immediate_or_cancel")
    err = _rejected(_oracle_order(immediate_or_cancel=True))
    assert (err.code, err.field) == (ErrorCode.InvalidOrderIOC, "immediate_or_cancel")


@pytest.mark.parametrize(
    "order",
    [
        _limit(price=0),
        _limit(price=99 * P, oracle_price_offset=P),
        _oracle_order(price=P),
        _trigger(OrderType.TriggerMarket, price=P),
        _trigger(OrderType.TriggerLimit, price=0),
    ],
)
def test_limit_price_rules(order: Order) -> None:
    err = _rejected(order)
    assert (err.code, err.field) == (ErrorCode.InvalidOrderLimitPrice, "price")


@pytest.mark.parametrize(
    "order",
    [
        _order(oracle_price_offset=P),
        _trigger(OrderType.TriggerMarket, oracle_price_offset=P),
        _trigger(OrderType.TriggerLimit, oracle_price_offset=P),
    ],
)
def test_oracle_offset_only_on_limit_and_oracle_orders(order: Order) -> None:
    err = _rejected(order)
    assert (err.code, err.field) == (ErrorCode.InvalidOrderOracleOffset, "oracle_price_offset")


def test_place_and_make_needs_an_ioc_post_only_limit_order() -> None:
    params = OrderParams(
        order_type=OrderType.Limit,
        market_type=MarketType.Perp,
        direction=LONG,
        base_asset_amount=BASE_PRECISION,
        market_index=0,
        price=99 * P,
        post_only=PostOnlyParam.MustPostOnly,
        immediate_or_cancel=True,
    )
    validate_place_and_make_order_params(params)
    for bad, field in (
        (replace(params, immediate_or_cancel=False), "immediate_or_cancel"),
        (replace(params, post_only=PostOnlyParam.None_), "post_only"),
        (replace(params, order_type=OrderType.Market), "order_type"),
    ):
        with pytest.raises(ProtocolError) as err:
            validate_place_and_make_order_params(bad)
        assert (err.value.code, err.value.field) == (ErrorCode.InvalidOrderIOCPostOnly, field)


# --- spot ---------------------------------------------------------------------------------------
def test_spot_orders_use_the_given_step_and_minimum() -> None:
    spot = _order(market_type=MarketType.Spot, base_asset_amount=10_000)
    validate_spot_order(spot, 1_000, 10_000)
    with pytest.raises(ProtocolError) as err:
        validate_spot_order(replace(spot, base_asset_amount=10_500), 1_000, 10_000)
    assert err.value.code == ErrorCode.InvalidOrderNotStepSizeMultiple
    with pytest.raises(ProtocolError) as err:
        validate_spot_order(replace(spot, base_asset_amount=9_000), 1_000, 10_000)
    assert err.value.code == ErrorCode.InvalidOrderMinOrderSize


def test_spot_limit_with_offset_and_price_is_an_offset_error() -> None:
    spot = _limit(market_type=MarketType.Spot, price=99 * P, oracle_price_offset=P)
    with pytest.raises(ProtocolError) as err:
        validate_spot_order(spot, STEP, MIN_SIZE)
    assert (err.value.code, err.value.field) == (
        ErrorCode.InvalidOrderOracleOffset,
        "oracle_price_offset",
    )


def test_spot_post_only_limit_is_not_checked_against_an_amm() -> None:
    validate_spot_order(
        _limit(market_type=MarketType.Spot, post_only=True, price=200 * P), STEP, MIN_SIZE
    )
    with pytest.raises(ProtocolError) as err:
        validate_spot_order(
            _limit(
                market_type=MarketType.Spot,
                post_only=True,
                auction_duration=5,
                auction_start_price=98 * P,
                auction_end_price=99 * P,
            ),
            STEP,
            MIN_SIZE,
        )
    assert err.value.code == ErrorCode.InvalidOrder


# --- reduce-only markets ------------------------------------------------------------------------
def test_force_reduce_only_rules() -> None:
    short = _limit(direction=SHORT, price=101 * P, reduce_only=True)
    validate_order_for_force_reduce_only(short, 5 * BASE_PRECISION)
    for bad, position, field in (
        (replace(short, reduce_only=False), 5 * BASE_PRECISION, "reduce_only"),
        (short, 0, "reduce_only"),
        (short, -5 * BASE_PRECISION, "direction"),
    ):
        with pytest.raises(ProtocolError) as err:
            validate_order_for_force_reduce_only(bad, position)
        assert (err.value.code, err.value.field) == (ErrorCode.InvalidOrderNotRiskReducing, field)


# --- prediction markets (program) --------------------------------------------------------------
def test_prediction_market_fixed_auction_program_vector() -> None:
    market = _market(contract_type=ContractType.Prediction)
    market.amm.order_step_size = 1
    market.amm.min_order_size = 1
    order = _order(
        auction_start_price=MAX_PREDICTION_MARKET_PRICE - 1,
        auction_end_price=MAX_PREDICTION_MARKET_PRICE - 1,
        price=MAX_PREDICTION_MARKET_PRICE + 1,
    )
    oracle_price = MAX_PREDICTION_MARKET_PRICE // 2
    for bad, field in (
        (order, "price"),
        (replace(order, auction_end_price=MAX_PREDICTION_MARKET_PRICE + 1), "price"),
        (
            replace(
                order,
                auction_start_price=MAX_PREDICTION_MARKET_PRICE + 1,
                auction_end_price=MAX_PREDICTION_MARKET_PRICE + 1,
            ),
            "price",
        ),
        (
            replace(order, price=0, auction_end_price=MAX_PREDICTION_MARKET_PRICE + 1),
            "auction_end_price",
        ),
    ):
        with pytest.raises(ProtocolError) as err:
            validate_order(bad, market, oracle_price, 0)
        assert (err.value.code, err.value.field) == (ErrorCode.InvalidPredictionMarketOrder, field)


def test_prediction_market_oracle_auction_program_vector() -> None:
    market = _market(contract_type=ContractType.Prediction)
    market.amm.order_step_size = 1
    market.amm.min_order_size = 1
    oracle_price = MAX_PREDICTION_MARKET_PRICE // 2
    order = _oracle_order(
        auction_start_price=1,
        auction_end_price=1,
        oracle_price_offset=MAX_PREDICTION_MARKET_PRICE + 1,
    )
    short = replace(order, direction=SHORT, oracle_price_offset=-MAX_PREDICTION_MARKET_PRICE - 1)
    for bad, field in (
        (order, "oracle_price_offset"),
        (replace(order, auction_end_price=MAX_PREDICTION_MARKET_PRICE + 1), "auction_end_price"),
        (
            replace(
                order,
                auction_start_price=MAX_PREDICTION_MARKET_PRICE + 1,
                auction_end_price=MAX_PREDICTION_MARKET_PRICE + 1,
            ),
            "auction_start_price",
        ),
        (short, "oracle_price_offset"),
        (replace(short, auction_end_price=-MAX_PREDICTION_MARKET_PRICE - 1), "auction_end_price"),
        (
            replace(
                short,
                auction_start_price=-MAX_PREDICTION_MARKET_PRICE - 1,
                auction_end_price=-MAX_PREDICTION_MARKET_PRICE - 1,
            ),
            "auction_start_price",
        ),
    ):
        with pytest.raises(ProtocolError) as err:
            validate_order(bad, market, oracle_price, 0)
        assert (err.value.code, err.value.field) == (ErrorCode.InvalidPredictionMarketOrder, field)
