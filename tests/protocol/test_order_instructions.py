"""Placing, cancelling and modifying orders through signed transactions."""

from __future__ import annotations

import pytest

from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import (
    CancelOrder,
    CancelOrders,
    ModifyOrder,
    PlacePerpOrder,
    PlaceSpotOrder,
    UpdateUserDelegate,
)
from protocol.program import Executed
from protocol.records import OrderActionRecord
from protocol.state import OrderParams
from protocol.state.order_params import ModifyOrderParams
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam
from tests.protocol.world import SOL, SOL_PERP, USDC_UNIT, World, keypair

ALICE = keypair(1)
BOB = keypair(2)


def limit(
    price: int, size: int = BASE_PRECISION, direction: PositionDirection = PositionDirection.Long
) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        direction,
        size,
        SOL_PERP,
        price=price,
        post_only=PostOnlyParam.MustPostOnly,
    )


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    return w


def place(w: World, params: OrderParams) -> Executed | Rejected:
    return w.send(PlacePerpOrder(ALICE.pubkey, 0, params), signers=(ALICE,))


def rejected(result: Executed | Rejected, code: ErrorCode) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    return result


def test_place_records_the_order_and_open_bids(world: World) -> None:
    result = place(world, limit(99 * PRICE_PRECISION))
    assert isinstance(result, Executed)
    [record] = [r.record for r in result.records if isinstance(r.record, OrderActionRecord)]
    assert (record.action, record.order_id, record.price) == ("place", 1, 99 * PRICE_PRECISION)
    alice = world.program.state.users[(ALICE.pubkey, 0)]
    [order] = alice.orders
    assert order.order_id == 1
    assert order.base_asset_amount == BASE_PRECISION
    assert order.post_only
    [position] = alice.perp_positions
    assert (position.open_bids, position.open_asks, position.open_orders) == (BASE_PRECISION, 0, 1)
    assert alice.next_order_id == 2


def test_cancel_releases_open_bids_and_the_position(world: World) -> None:
    place(world, limit(99 * PRICE_PRECISION))
    result = world.ok(CancelOrder(ALICE.pubkey, 0, order_id=1), signers=(ALICE,))
    assert [r.record.action for r in result.records] == ["cancel"]  # type: ignore[union-attr]
    alice = world.program.state.users[(ALICE.pubkey, 0)]
    assert alice.orders == []
    assert alice.perp_positions == []


def test_cancel_of_a_missing_order_is_rejected(world: World) -> None:
    rejected(
        world.send(CancelOrder(ALICE.pubkey, 0, order_id=7), signers=(ALICE,)),
        ErrorCode.OrderDoesNotExist,
    )


def test_cancel_needs_exactly_one_id(world: World) -> None:
    result = rejected(
        world.send(CancelOrder(ALICE.pubkey, 0), signers=(ALICE,)), ErrorCode.InvalidParameter
    )
    assert result.field == "order_id"


def test_cancel_orders_by_direction(world: World) -> None:
    place(world, limit(99 * PRICE_PRECISION))
    place(world, limit(101 * PRICE_PRECISION, direction=PositionDirection.Short))
    world.ok(CancelOrders(ALICE.pubkey, 0, direction=PositionDirection.Long), signers=(ALICE,))
    [left] = world.program.state.users[(ALICE.pubkey, 0)].orders
    assert left.direction == PositionDirection.Short
    assert world.program.state.users[(ALICE.pubkey, 0)].perp_positions[0].open_bids == 0


def test_modify_replaces_the_order(world: World) -> None:
    place(world, limit(99 * PRICE_PRECISION))
    world.ok(
        ModifyOrder(ALICE.pubkey, 0, ModifyOrderParams(price=98 * PRICE_PRECISION), order_id=1),
        signers=(ALICE,),
    )
    [order] = world.program.state.users[(ALICE.pubkey, 0)].orders
    assert (order.order_id, order.price) == (2, 98 * PRICE_PRECISION)
    assert world.program.state.users[(ALICE.pubkey, 0)].perp_positions[0].open_bids == (
        BASE_PRECISION
    )


def test_delegate_may_place_orders(world: World) -> None:
    world.ok(UpdateUserDelegate(ALICE.pubkey, 0, BOB.pubkey), signers=(ALICE,))
    world.ok(PlacePerpOrder(ALICE.pubkey, 0, limit(99 * PRICE_PRECISION)), signers=(BOB,))
    assert len(world.program.state.users[(ALICE.pubkey, 0)].orders) == 1


def test_a_stranger_may_not_place_orders(world: World) -> None:
    rejected(
        world.send(PlacePerpOrder(ALICE.pubkey, 0, limit(99 * PRICE_PRECISION)), signers=(BOB,)),
        ErrorCode.UnauthorizedSigner,
    )


def test_price_off_tick_names_the_field(world: World) -> None:
    # SOL-PERP's tick is 100 (0.0001 USD)
    result = rejected(
        place(world, limit(99 * PRICE_PRECISION + 50)), ErrorCode.InvalidOrderLimitPrice
    )
    assert result.field == "params.price"


def test_zero_size_names_the_field(world: World) -> None:
    result = place(world, limit(99 * PRICE_PRECISION, size=0))
    assert isinstance(result, Rejected)
    assert result.field == "base_asset_amount"


def test_immediate_or_cancel_is_only_for_fills(world: World) -> None:
    params = OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Long,
        BASE_PRECISION,
        SOL_PERP,
        price=99 * PRICE_PRECISION,
        immediate_or_cancel=True,
    )
    result = rejected(place(world, params), ErrorCode.InvalidOrderIOC)
    assert result.field == "params.immediate_or_cancel"


def test_spot_params_sent_to_the_perp_instruction(world: World) -> None:
    params = OrderParams(
        OrderType.Limit,
        MarketType.Spot,
        PositionDirection.Long,
        BASE_PRECISION,
        SOL,
        price=99 * PRICE_PRECISION,
    )
    rejected(place(world, params), ErrorCode.InvalidOrderMarketType)


def test_an_order_beyond_initial_margin_is_rejected(world: World) -> None:
    # $1000 of collateral at 10x initial margin carries at most ~$10k of SOL: 200 SOL is $20k
    before = world.program.state.users[(ALICE.pubkey, 0)]
    rejected(
        place(world, limit(99 * PRICE_PRECISION, size=200 * BASE_PRECISION)),
        ErrorCode.InsufficientCollateral,
    )
    assert world.program.state.users[(ALICE.pubkey, 0)] == before


def test_market_order_gets_derived_auction_params(world: World) -> None:
    params = OrderParams(
        OrderType.Market, MarketType.Perp, PositionDirection.Long, BASE_PRECISION, SOL_PERP
    )
    assert isinstance(place(world, params), Executed)
    [order] = world.program.state.users[(ALICE.pubkey, 0)].orders
    assert order.auction_duration > 0
    assert order.auction_start_price < order.auction_end_price  # a buy's auction rises
    assert order.max_ts > world.ts


def test_spot_limit_order(world: World) -> None:
    params = OrderParams(
        OrderType.Limit,
        MarketType.Spot,
        PositionDirection.Long,
        10**9,
        SOL,
        price=99 * PRICE_PRECISION,
        post_only=PostOnlyParam.MustPostOnly,
    )
    world.ok(PlaceSpotOrder(ALICE.pubkey, 0, params), signers=(ALICE,))
    alice = world.program.state.users[(ALICE.pubkey, 0)]
    position = alice.get_spot_position(SOL)
    assert position is not None
    assert (position.open_bids, position.open_orders) == (10**9, 1)
