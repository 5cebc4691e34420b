"""Acceptance tests of the fill path, black-box through signed transactions.

* the seed's worked example (lesson 7): a buy of 100 SOL-PERP with the AMM at $150 and two
  makers at $149.50 and $149.00 fills entirely against the $149.00 maker; the AMM is untouched;
* the attack matrix: a filler, maker or relayer trying to make the program settle something a
  user did not sign is refused with a specific code, and state is byte-identical afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import CancelOrder, Deposit, PlacePerpOrder
from protocol.instructions.fills import (
    FillPerpOrder,
    FillSignedOrder,
    MakerOrderRef,
    PlaceAndMakePerpOrder,
    PlaceSignedOrder,
)
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.records import FillRecord
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams
from protocol.state_hash import state_hash
from protocol.types import (
    MarketType,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from tests.protocol.world import SOL, SOL_PERP, USDC_UNIT, World, keypair, make_state

TAKER = keypair(21)
MAKER_1 = keypair(22)
MAKER_2 = keypair(23)
FILLER = keypair(24)
OTHER_FILLER = keypair(25)
DELEGATE = keypair(26)
MALLORY = keypair(27)
P = PRICE_PRECISION


def ask(price: int, size: int = BASE_PRECISION, **kw: object) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Short,
        size,
        SOL_PERP,
        price=price,
        post_only=PostOnlyParam.MustPostOnly,
        **kw,  # type: ignore[arg-type]
    )


def bid(price: int, size: int = BASE_PRECISION, **kw: object) -> OrderParams:
    return replace(ask(price, size, **kw), direction=PositionDirection.Long)


def market_buy(size: int = BASE_PRECISION, **kw: object) -> OrderParams:
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        PositionDirection.Long,
        size,
        SOL_PERP,
        **kw,  # type: ignore[arg-type]
    )


def fills(result: Executed | Rejected) -> list[FillRecord]:
    assert isinstance(result, Executed), result
    return [r.record for r in result.records if isinstance(r.record, FillRecord)]


def new_world(sol_price: int = 100 * P, oracle_price: int | None = None) -> World:
    state = make_state(sol_price)
    if oracle_price is not None:
        # the AMM stays pegged at ``sol_price`` while the oracle reads ``oracle_price``
        state.oracles["SOL/USD"].price = oracle_price
        for hist in (
            state.perp_markets[SOL_PERP].amm.historical_oracle_data,
            state.spot_markets[SOL].historical_oracle_data,
        ):
            hist.last_oracle_price = hist.last_oracle_price_twap = oracle_price
            hist.last_oracle_price_twap_5min = oracle_price
    w = World(program=Program(state))
    for kp in (TAKER, MAKER_1, MAKER_2, MALLORY):
        w.new_user(kp, usdc=20_000 * USDC_UNIT)
    w.new_user(FILLER)
    w.new_user(OTHER_FILLER)
    return w


def place(w: World, kp: Keypair, params: OrderParams) -> int:
    w.ok(PlacePerpOrder(kp.pubkey, 0, params), signers=(kp,))
    return w.program.state.users[(kp.pubkey, 0)].orders[-1].order_id


def fill(
    w: World, taker_order_id: int, *makers: tuple[Keypair, int], **kw: object
) -> Executed | Rejected:
    refs = tuple(MakerOrderRef(kp.pubkey, 0, oid) for kp, oid in makers)
    ix = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order_id, refs, **kw)  # type: ignore[arg-type]
    return w.send(ix, signers=(FILLER,))


# --- the seed's worked example ----------------------------------------------------------------


def test_seed_example_best_maker_fills_and_the_amm_is_untouched() -> None:
    # The AMM quotes $150 (its curve is pegged there, with no spread), the oracle reads $148.90
    # and the two makers offer $149.50 and $149.00: both better for the buyer than the AMM.
    w = new_world(sol_price=150 * P, oracle_price=148_900_000)
    amm_before = w.program.state.perp_markets[SOL_PERP].amm.clone()
    m1 = place(w, MAKER_1, ask(149_500_000, 100 * BASE_PRECISION))
    m2 = place(w, MAKER_2, ask(149_000_000, 100 * BASE_PRECISION))
    taker = place(w, TAKER, market_buy(100 * BASE_PRECISION))
    # The buyer's auction runs from $148.8277 to $150.1489 over 89 slots; 50 slots in it is
    # ~$149.57, so both makers cross. The filler even names maker 1 first: the program matches
    # the best price first, so maker 2 takes the whole order.
    w.advance(50)
    [record] = fills(fill(w, taker, (MAKER_1, m1), (MAKER_2, m2)))

    assert record.maker == (MAKER_2.pubkey, 0)
    assert record.layer == "dlob"
    assert record.base_asset_amount == 100 * BASE_PRECISION
    assert record.quote_asset_amount == 14_900 * USDC_UNIT  # 100 SOL at $149.00
    state = w.program.state
    taker_pos = state.users[(TAKER.pubkey, 0)].perp_positions[0]
    assert taker_pos.base_asset_amount == 100 * BASE_PRECISION
    # the trader pays $149.00 per SOL plus the taker fee (tier 0: 10 bps of $14,900 = $14.90)
    assert record.taker_fee == 14_900_000
    assert taker_pos.quote_entry_amount == -14_900 * USDC_UNIT
    assert state.users[(MAKER_2.pubkey, 0)].perp_positions[0].base_asset_amount == (
        -100 * BASE_PRECISION
    )
    # maker 1's $149.50 order is untouched
    [m1_order] = state.users[(MAKER_1.pubkey, 0)].orders
    assert m1_order.base_asset_amount_filled == 0
    amm = state.perp_markets[SOL_PERP].amm
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (
        amm_before.base_asset_reserve,
        amm_before.quote_asset_reserve,
    )
    assert amm.base_asset_amount_with_amm == 0


# --- the attack matrix --------------------------------------------------------------------------

Attack = Callable[[World], Executed | Rejected]


def _setup_resting(w: World) -> tuple[int, int]:
    """A maker ask at $100.50 and a taker limit buy at $100 (not crossing)."""
    m = place(w, MAKER_1, ask(100_500_000))
    t = place(
        w,
        TAKER,
        OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            PositionDirection.Long,
            BASE_PRECISION,
            SOL_PERP,
            price=100 * P,
        ),
    )
    return m, t


def a_fill_worse_than_taker_limit(w: World) -> Executed | Rejected:
    m, t = _setup_resting(w)
    w.advance(50)
    return fill(w, t, (MAKER_1, m))


def a_fill_worse_than_auction_price_now(w: World) -> Executed | Rejected:
    # the buyer's auction starts near the oracle and rises; one slot in, $100.90 is above it
    m = place(w, MAKER_1, ask(100_900_000))
    t = place(
        w,
        TAKER,
        market_buy(
            auction_duration=60,
            auction_start_price=99 * P,
            auction_end_price=101 * P,
            price=101 * P,
        ),
    )
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_maker_bid_that_does_not_cross_a_sell(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, bid(95 * P))
    t = place(
        w,
        TAKER,
        OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            PositionDirection.Short,
            BASE_PRECISION,
            SOL_PERP,
            price=99 * P,
        ),
    )
    w.advance(50)
    return fill(w, t, (MAKER_1, m))


def a_size_larger_than_the_remainder(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P, 5 * BASE_PRECISION))
    t = place(w, TAKER, market_buy(BASE_PRECISION))
    w.advance(30)
    return fill(w, t, (MAKER_1, m), max_base_asset_amount=2 * BASE_PRECISION)


def _intent(
    w: World, signer: Keypair = TAKER, **params_changes: object
) -> tuple[OrderIntent, bytes]:
    params = market_buy(
        auction_duration=10, auction_start_price=99 * P, auction_end_price=101 * P, price=101 * P
    )
    intent = OrderIntent(TAKER.pubkey, 0, params, w.slot, b"\x07" * 8)
    return intent, intent.sign(signer)


def _tampered(field: str, value: object) -> Attack:
    def attack(w: World) -> Executed | Rejected:
        intent, signature = _intent(w)
        if field == "sub_account_id":
            forged = replace(intent, sub_account_id=1)
        else:
            forged = replace(intent, params=replace(intent.params, **{field: value}))
        return w.send(
            FillSignedOrder(FILLER.pubkey, 0, forged, TAKER.pubkey, signature), signers=(FILLER,)
        )

    attack.__name__ = f"a_signed_intent_with_changed_{field}"
    return attack


def a_replayed_intent_uuid(w: World) -> Executed | Rejected:
    intent, signature = _intent(w)
    w.ok(PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(FILLER,))
    w.advance(1)
    return w.send(PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(FILLER,))


def an_expired_intent(w: World) -> Executed | Rejected:
    intent, signature = _intent(w)
    w.advance(11)  # its 10-slot auction is over
    return w.send(PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(FILLER,))


def an_intent_signed_by_a_non_delegate(w: World) -> Executed | Rejected:
    intent, signature = _intent(w, signer=MALLORY)
    return w.send(PlaceSignedOrder(intent, MALLORY.pubkey, signature), signers=(FILLER,))


def a_post_only_order_used_as_taker(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(101 * P))
    t = place(w, TAKER, bid(99 * P))
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_reduce_only_fill_that_increases_a_position(w: World) -> Executed | Rejected:
    # the taker's reduce-only buy would open a long from flat
    m = place(w, MAKER_1, ask(100 * P))
    t = place(w, TAKER, replace(market_buy(), reduce_only=True))
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_self_trade(w: World) -> Executed | Rejected:
    m = place(w, TAKER, ask(100 * P))
    t = place(w, TAKER, market_buy())
    w.advance(30)
    return fill(w, t, (TAKER, m))


def a_fill_of_a_cancelled_order(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P))
    t = place(w, TAKER, market_buy())
    w.ok(CancelOrder(TAKER.pubkey, 0, order_id=t), signers=(TAKER,))
    return fill(w, t, (MAKER_1, m))


def a_fill_of_an_already_filled_order(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P, 5 * BASE_PRECISION))
    t = place(w, TAKER, market_buy())
    w.advance(30)
    assert isinstance(fill(w, t, (MAKER_1, m)), Executed)
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_filler_claiming_another_fillers_reward(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P))
    t = place(w, TAKER, market_buy())
    w.advance(30)
    ix = FillPerpOrder(
        OTHER_FILLER.pubkey, 0, TAKER.pubkey, 0, t, (MakerOrderRef(MAKER_1.pubkey, 0, m),)
    )
    return w.send(ix, signers=(FILLER,))


def _sol_collateral_user(w: World, kp: Keypair) -> None:
    w.ok(Deposit(kp.pubkey, 0, SOL, 40 * BASE_PRECISION), signers=(kp,))


def a_taker_left_below_initial_margin(w: World) -> Executed | Rejected:
    poor = keypair(30)
    w.new_user(poor)
    w.ok(Deposit(poor.pubkey, 0, SOL, 2 * BASE_PRECISION), signers=(poor,))  # $200 of SOL
    m = place(w, MAKER_1, ask(100 * P, 10 * BASE_PRECISION))
    w.ok(PlacePerpOrder(poor.pubkey, 0, market_buy(10 * BASE_PRECISION)), signers=(poor,))
    t = w.program.state.users[(poor.pubkey, 0)].orders[-1].order_id
    w.set_price("SOL/USD", 40 * P, confidence=40_000)  # the SOL collateral loses 60%
    w.advance(30)
    ix = FillPerpOrder(FILLER.pubkey, 0, poor.pubkey, 0, t, (MakerOrderRef(MAKER_1.pubkey, 0, m),))
    return w.send(ix, signers=(FILLER,))


def a_maker_left_below_initial_margin(w: World) -> Executed | Rejected:
    # a maker with $150 asks 10 SOL at $100 (enough initial margin when placed at oracle $100);
    # the oracle then rises to $109 and the short would leave it under initial margin
    poor = keypair(31)
    w.new_user(poor, usdc=150 * USDC_UNIT)
    w.ok(PlacePerpOrder(poor.pubkey, 0, ask(100 * P, 10 * BASE_PRECISION)), signers=(poor,))
    m = w.program.state.users[(poor.pubkey, 0)].orders[-1].order_id
    t = place(w, TAKER, market_buy(10 * BASE_PRECISION))
    w.set_price("SOL/USD", 109 * P, confidence=109_000)
    w.advance(30)
    ix = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, t, (MakerOrderRef(poor.pubkey, 0, m),))
    return w.send(ix, signers=(FILLER,))


def an_untriggered_stop_order_as_taker(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P))
    stop = OrderParams(
        OrderType.TriggerMarket,
        MarketType.Perp,
        PositionDirection.Long,
        BASE_PRECISION,
        SOL_PERP,
        trigger_price=110 * P,
        trigger_condition=OrderTriggerCondition.Above,
    )
    t = place(w, TAKER, stop)
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_maker_that_is_not_resting(w: World) -> Executed | Rejected:
    # a market order still in its auction cannot make
    m = place(w, MAKER_1, replace(market_buy(), direction=PositionDirection.Short))
    t = place(w, TAKER, market_buy())
    return fill(w, t, (MAKER_1, m))


def a_maker_on_the_same_side(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, bid(99 * P))
    t = place(w, TAKER, market_buy())
    w.advance(30)
    return fill(w, t, (MAKER_1, m))


def a_maker_named_twice(w: World) -> Executed | Rejected:
    m = place(w, MAKER_1, ask(100 * P))
    t = place(w, TAKER, market_buy(2 * BASE_PRECISION))
    w.advance(30)
    return fill(w, t, (MAKER_1, m), (MAKER_1, m))


def a_maker_order_that_does_not_exist(w: World) -> Executed | Rejected:
    t = place(w, TAKER, market_buy())
    w.advance(30)
    return fill(w, t, (MAKER_1, 77))


def a_jit_maker_that_is_not_post_only_ioc(w: World) -> Executed | Rejected:
    t = place(w, TAKER, market_buy())
    params = replace(ask(100 * P), post_only=PostOnlyParam.None_)
    return w.send(
        PlaceAndMakePerpOrder(MAKER_1.pubkey, 0, params, TAKER.pubkey, 0, t), signers=(MAKER_1,)
    )


ATTACKS: list[tuple[Attack, ErrorCode]] = [
    (a_fill_worse_than_taker_limit, ErrorCode.InvalidOrderFillPrice),
    (a_fill_worse_than_auction_price_now, ErrorCode.InvalidOrderFillPrice),
    (a_maker_bid_that_does_not_cross_a_sell, ErrorCode.InvalidOrderFillPrice),
    (a_size_larger_than_the_remainder, ErrorCode.ImpossibleFill),
    (_tampered("price", 110 * P), ErrorCode.SigVerificationFailed),
    (_tampered("base_asset_amount", 2 * BASE_PRECISION), ErrorCode.SigVerificationFailed),
    (_tampered("direction", PositionDirection.Short), ErrorCode.SigVerificationFailed),
    (_tampered("market_index", 1), ErrorCode.SigVerificationFailed),
    (_tampered("sub_account_id", 1), ErrorCode.SigVerificationFailed),
    (a_replayed_intent_uuid, ErrorCode.InvalidSignedMsgOrderId),
    (an_expired_intent, ErrorCode.InvalidSignedMsgOrderParam),
    (an_intent_signed_by_a_non_delegate, ErrorCode.SignedMsgUserContextUserMismatch),
    (a_post_only_order_used_as_taker, ErrorCode.CantMatchTwoPostOnlys),
    (a_reduce_only_fill_that_increases_a_position, ErrorCode.ReduceOnlyOrderIncreasedRisk),
    (a_self_trade, ErrorCode.MakerCantFulfillOwnOrder),
    (a_fill_of_a_cancelled_order, ErrorCode.OrderDoesNotExist),
    (a_fill_of_an_already_filled_order, ErrorCode.OrderDoesNotExist),
    (a_filler_claiming_another_fillers_reward, ErrorCode.UnauthorizedSigner),
    (a_taker_left_below_initial_margin, ErrorCode.InsufficientCollateral),
    (a_maker_left_below_initial_margin, ErrorCode.InsufficientCollateral),
    (an_untriggered_stop_order_as_taker, ErrorCode.OrderMustBeTriggeredFirst),
    (a_maker_that_is_not_resting, ErrorCode.MakerOrderMustBePostOnly),
    (a_maker_on_the_same_side, ErrorCode.InvalidMaker),
    (a_maker_named_twice, ErrorCode.InvalidMaker),
    (a_maker_order_that_does_not_exist, ErrorCode.MakerOrderNotFound),
    (a_jit_maker_that_is_not_post_only_ioc, ErrorCode.InvalidOrderIOCPostOnly),
]


class _Recorder:
    """Wraps ``World.send`` to hash the state right before the attack's last transaction."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.before: str | None = None
        self._send = w.send

    def __call__(self, *ixs: object, signers: tuple[Keypair, ...]) -> Executed | Rejected:
        self.before = state_hash(self.w.program.state, self.w.program.next_seq)
        return self._send(*ixs, signers=signers)


@pytest.mark.parametrize(("attack", "code"), ATTACKS, ids=[a.__name__ for a, _ in ATTACKS])
def test_attack_is_refused_and_changes_nothing(attack: Attack, code: ErrorCode) -> None:
    w = new_world()
    recorder = _Recorder(w)
    w.send = recorder  # type: ignore[method-assign]
    result = attack(w)
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    assert recorder.before == state_hash(w.program.state, w.program.next_seq)


def test_the_matrix_has_at_least_twenty_attacks() -> None:
    assert len(ATTACKS) >= 20
