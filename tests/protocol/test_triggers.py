"""Trigger orders: stop-market and stop-limit orders fired by a keeper when the oracle crosses
their trigger price, the keeper's flat reward ($0.01, ``flat_filler_fee``), the auction they
get, the reduce-only stop orders a closed position cancels, and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import FillPerpOrder, MakerOrderRef, TriggerOrder
from protocol.keys import Keypair
from protocol.program import Executed
from protocol.records import TriggerRecord
from protocol.state import OrderParams
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
)
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    MAKER_2,
    SHORT,
    TAKER,
    P,
    actions,
    fill_records,
    new_world,
    perp_limit,
    perp_position,
    place,
    rejected_without_change,
    spot_position,
    step,
    user_of,
)
from tests.protocol.world import SOL, USDC, World

B = BASE_PRECISION
ABOVE = OrderTriggerCondition.Above
BELOW = OrderTriggerCondition.Below


def stop(
    order_type: OrderType,
    direction: PositionDirection,
    trigger_price: int,
    condition: OrderTriggerCondition,
    *,
    price: int = 0,
    market_type: MarketType = MarketType.Perp,
    reduce_only: bool = False,
) -> OrderParams:
    return OrderParams(
        order_type,
        market_type,
        direction,
        B,
        SOL if market_type == MarketType.Spot else 0,
        price=price,
        trigger_price=trigger_price,
        trigger_condition=condition,
        reduce_only=reduce_only,
    )


def trigger(w: World, kp: Keypair, order_id: int) -> Executed | Rejected:
    ix = TriggerOrder(FILLER.pubkey, 0, kp.pubkey, 0, order_id)
    return w.send(ix, signers=(FILLER,))


def test_stop_market_triggers_above_and_pays_the_keeper() -> None:
    w = new_world()
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    assert perp_position(w, TAKER).open_bids == 0  # an untriggered order does not count
    step(w, 1, 106 * P)
    result = trigger(w, TAKER, t)
    assert isinstance(result, Executed), result
    [record] = [r.record for r in result.records if isinstance(r.record, TriggerRecord)]
    assert (record.trigger_price, record.oracle_price, record.filler_reward) == (
        106 * P,
        106 * P,
        10_000,
    )
    assert record.filler == (FILLER.pubkey, 0)
    assert actions(result) == [("trigger", t, "")]

    [order] = user_of(w, TAKER).orders
    assert order.trigger_condition == OrderTriggerCondition.TriggeredAbove
    assert order.slot == w.slot  # its auction starts now
    assert order.auction_duration >= 20
    assert order.bit_flags & OrderBitFlag.OracleTriggerMarket
    position = perp_position(w, TAKER)
    assert (position.open_bids, position.quote_asset_amount) == (B, -10_000)
    assert perp_position(w, FILLER).quote_asset_amount == 10_000


def test_stop_limit_triggers_below_with_an_auction_bounded_by_its_limit() -> None:
    w = new_world()
    t = place(w, TAKER, stop(OrderType.TriggerLimit, SHORT, 95 * P, BELOW, price=94 * P))
    step(w, 1, 94_500_000)
    trigger(w, TAKER, t)
    [order] = user_of(w, TAKER).orders
    assert order.trigger_condition == OrderTriggerCondition.TriggeredBelow
    assert not order.bit_flags & OrderBitFlag.OracleTriggerMarket
    # a sell's auction falls from its start to its end, never below the limit
    assert order.auction_start_price >= order.auction_end_price >= 94 * P
    assert order.auction_duration >= 20
    assert perp_position(w, TAKER).open_asks == -B


def test_triggered_stop_limit_fills_against_a_maker() -> None:
    w = new_world(amm_price=103 * P)  # the AMM is out of the way
    t = place(w, TAKER, stop(OrderType.TriggerLimit, LONG, 101 * P, ABOVE, price=102 * P))
    m = place(w, MAKER_1, perp_limit(SHORT, 101_500_000))
    step(w, 1, 101_200_000)
    trigger(w, TAKER, t)
    step(w, 25, 101_200_000)  # past the auction: the limit is $102
    ix = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, t, (MakerOrderRef(MAKER_1.pubkey, 0, m),))
    [record] = fill_records(w.send(ix, signers=(FILLER,)))
    assert (record.base_asset_amount, record.quote_asset_amount) == (B, 101_500_000)
    # ceil(101_500_000 * 100 / 100_000) = 101_500
    assert record.taker_fee == 101_500
    assert perp_position(w, TAKER).base_asset_amount == B


def test_spot_stop_market_gets_the_oracle_auction_and_pays_from_quote() -> None:
    w = new_world(sol=10 * B)
    t = place(
        w, TAKER, stop(OrderType.TriggerMarket, SHORT, 95 * P, BELOW, market_type=MarketType.Spot)
    )
    step(w, 1, 94 * P)
    trigger(w, TAKER, t)
    [order] = user_of(w, TAKER).orders
    # calculate_auction_prices without a limit: from the oracle to 0.5% beyond it,
    # 94_000_000 - 94_000_000 / 200 = 93_530_000, over the minimum 20 slots
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        94 * P,
        93_530_000,
        20,
    )
    assert order.trigger_condition == OrderTriggerCondition.TriggeredBelow
    assert spot_position(w, TAKER, SOL).open_asks == -B
    # the spot flat filler fee: 20_000 USDC - 0.01 for the user, 0.01 for the keeper
    assert spot_position(w, TAKER, USDC).scaled_balance == 19_999_990_000 * 1_000
    assert spot_position(w, FILLER, USDC).scaled_balance == 10_000 * 1_000


def test_closing_a_position_cancels_its_reduce_only_stop_orders() -> None:
    w = new_world()
    m = place(w, MAKER_1, perp_limit(SHORT, 100 * P))
    t = place(w, TAKER, perp_limit(LONG, 100 * P, post_only=False))
    step(w)
    fill_records(
        w.send(
            FillPerpOrder(
                FILLER.pubkey, 0, TAKER.pubkey, 0, t, (MakerOrderRef(MAKER_1.pubkey, 0, m),)
            ),
            signers=(FILLER,),
        )
    )
    stop_loss = place(
        w, TAKER, stop(OrderType.TriggerMarket, SHORT, 90 * P, BELOW, reduce_only=True)
    )
    bid = place(w, MAKER_2, perp_limit(LONG, 100 * P))
    close = place(w, TAKER, perp_limit(SHORT, 100 * P, post_only=False))
    step(w)
    result = w.send(
        FillPerpOrder(
            FILLER.pubkey, 0, TAKER.pubkey, 0, close, (MakerOrderRef(MAKER_2.pubkey, 0, bid),)
        ),
        signers=(FILLER,),
    )
    assert ("cancel", stop_loss, "reduce_only_order_increased_position") in actions(result)
    assert user_of(w, TAKER).orders == []
    assert perp_position(w, TAKER).base_asset_amount == 0


Scenario = Callable[[World], tuple[Any, tuple[Keypair, ...]]]


def _trigger_ix(order_id: int) -> TriggerOrder:
    return TriggerOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, order_id)


def not_a_trigger_order(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, perp_limit(LONG, 99 * P, post_only=False))
    return _trigger_ix(t), (FILLER,)


def already_triggered(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    step(w, 1, 106 * P)
    w.ok(_trigger_ix(t), signers=(FILLER,))
    step(w, 1, 106 * P)
    return _trigger_ix(t), (FILLER,)


def condition_not_met(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    step(w, 1, 105 * P)  # strictly above is required
    return _trigger_ix(t), (FILLER,)


def keeper_not_signing(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    step(w, 1, 106 * P)
    return _trigger_ix(t), (MAKER_1,)


def oracle_too_volatile(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    step(w, 1, 600 * P)  # 6x its TWAP
    return _trigger_ix(t), (FILLER,)


def oracle_far_from_its_5min_twap(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    t = place(w, TAKER, stop(OrderType.TriggerMarket, LONG, 105 * P, ABOVE))
    step(w, 1, 160 * P)  # 60% from the $100 5-minute TWAP
    return _trigger_ix(t), (FILLER,)


def unknown_order(w: World) -> tuple[Any, tuple[Keypair, ...]]:
    return _trigger_ix(42), (FILLER,)


REJECTIONS: list[tuple[Scenario, ErrorCode]] = [
    (not_a_trigger_order, ErrorCode.OrderNotTriggerable),
    (already_triggered, ErrorCode.OrderNotTriggerable),
    (condition_not_met, ErrorCode.OrderDidNotSatisfyTriggerCondition),
    (keeper_not_signing, ErrorCode.UnauthorizedSigner),
    (oracle_too_volatile, ErrorCode.InvalidOracle),
    (oracle_far_from_its_5min_twap, ErrorCode.OrderBreachesOraclePriceLimits),
    (unknown_order, ErrorCode.OrderDoesNotExist),
]


@pytest.mark.parametrize(("scenario", "code"), REJECTIONS, ids=[s.__name__ for s, _ in REJECTIONS])
def test_trigger_rejections_leave_the_state_untouched(scenario: Scenario, code: ErrorCode) -> None:
    w = new_world()
    ix, signers = scenario(w)
    refused = rejected_without_change(w, ix, signers=signers)
    assert refused.code == code, refused
