"""Signed intents placed and filled: the order is exactly what the user signed, its auction
started at the slot the user signed at, its uuid is spent once, and a JIT maker finds it by
uuid. Relayers and fillers cannot change any of it."""

from __future__ import annotations

from dataclasses import replace

from protocol.accounts import SignedMsgOrderId
from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions import (
    FillSignedOrder,
    MakerOrderRef,
    PlaceAndMakeSignedOrder,
    PlaceSignedOrder,
    UpdateUserDelegate,
)
from protocol.keys import Keypair
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams
from protocol.types import MarketType, OrderBitFlag, OrderType
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    OTHER,
    SHORT,
    TAKER,
    P,
    actions,
    fill_records,
    new_world,
    perp_limit,
    place,
    rejected_without_change,
    step,
    user_of,
)
from tests.protocol.world import World, keypair

B = BASE_PRECISION
UUID = b"\x07" * 8


def signed_buy(w: World, signer: Keypair = TAKER, **changes: object) -> tuple[OrderIntent, bytes]:
    # a market buy whose auction runs from $100.00 to $100.20 over 20 slots from the slot the
    # user signs at (the AMM quotes $101, so resting asks in between are better)
    params = OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        B,
        0,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )
    intent = OrderIntent(TAKER.pubkey, 0, replace(params, **changes), w.slot, UUID)  # type: ignore[arg-type]
    return intent, intent.sign(signer)


def test_a_relayed_intent_is_placed_exactly_as_signed() -> None:
    w = new_world(amm_price=101 * P)
    intent, signature = signed_buy(w)
    signed_at = w.slot
    step(w, 3)
    result = w.send(PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(OTHER,))
    [order] = user_of(w, TAKER).orders
    assert actions(result) == [("place", order.order_id, "")]
    assert order.slot == signed_at  # the auction started when the user signed
    assert order.bit_flags & OrderBitFlag.SignedMessage
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        100 * P,
        100_200_000,
        20,
    )
    assert (order.base_asset_amount, order.price, order.direction) == (B, 100_600_000, LONG)
    # the uuid is spent until the auction's last slot, and remembers the order it placed
    assert w.program.state.signed_msg_uuids[(TAKER.pubkey, 0)] == {
        UUID: SignedMsgOrderId(signed_at + 20, order.order_id)
    }


def test_fill_signed_order_places_and_fills_at_the_signed_auction_price() -> None:
    w = new_world(amm_price=101 * P)
    m = place(w, MAKER_1, perp_limit(SHORT, 100_100_000))
    intent, signature = signed_buy(w)
    step(w, 10)  # ten slots after signing the auction is at $100.10
    ix = FillSignedOrder(
        FILLER.pubkey, 0, intent, TAKER.pubkey, signature, (MakerOrderRef(MAKER_1.pubkey, 0, m),)
    )
    result = w.send(ix, signers=(FILLER,))
    [record] = fill_records(result)
    # 1 SOL at $100.10: fee 100_100, rebate 20_020; the order is ten slots old, so the filler
    # earns min(10_010, 1x * 10_000 * 177 / 100 = 17_700) = 10_010
    assert (record.quote_asset_amount, record.taker_fee, record.filler_reward) == (
        100_100_000,
        100_100,
        10_010,
    )
    assert record.taker == (TAKER.pubkey, 0)
    assert user_of(w, TAKER).orders == []
    # a second fill of the same intent is a replay
    step(w)
    refused = rejected_without_change(w, ix, signers=(FILLER,))
    assert refused.code == ErrorCode.InvalidSignedMsgOrderId


def test_fill_signed_order_that_fills_nothing_is_refused_and_keeps_the_uuid() -> None:
    w = new_world(amm_price=101 * P)
    m = place(w, MAKER_1, perp_limit(SHORT, 100_100_000))
    intent, signature = signed_buy(w)
    step(w, 2)  # $100.02: the maker does not cross yet
    ix = FillSignedOrder(
        FILLER.pubkey, 0, intent, TAKER.pubkey, signature, (MakerOrderRef(MAKER_1.pubkey, 0, m),)
    )
    refused = rejected_without_change(w, ix, signers=(FILLER,))
    assert refused.code == ErrorCode.InvalidOrderFillPrice
    assert w.program.state.signed_msg_uuids == {}
    step(w, 8)
    assert len(fill_records(w.send(ix, signers=(FILLER,)))) == 1


def test_jit_maker_answers_a_signed_intent_by_uuid() -> None:
    w = new_world(amm_price=101 * P)
    intent, signature = signed_buy(w)
    w.ok(PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(OTHER,))
    step(w, 10)
    jit = perp_limit(SHORT, 100_100_000, 2 * B, immediate_or_cancel=True)
    result = w.send(
        PlaceAndMakeSignedOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, UUID),
        signers=(MAKER_1,),
    )
    [record] = fill_records(result)
    assert (record.layer, record.base_asset_amount, record.quote_asset_amount) == (
        "jit",
        B,
        100_100_000,
    )
    assert user_of(w, MAKER_1).orders == []
    step(w)
    refused = rejected_without_change(
        w,
        PlaceAndMakeSignedOrder(MAKER_1.pubkey, 0, jit, TAKER.pubkey, 0, b"\x09" * 8),
        signers=(MAKER_1,),
    )
    assert refused.code == ErrorCode.SignedMsgOrderDoesNotExist


def test_a_delegate_may_sign_the_intent() -> None:
    w = new_world(amm_price=101 * P)
    delegate = keypair(77)
    w.ok(UpdateUserDelegate(TAKER.pubkey, 0, delegate.pubkey), signers=(TAKER,))
    intent, signature = signed_buy(w, signer=delegate)
    w.ok(PlaceSignedOrder(intent, delegate.pubkey, signature), signers=(OTHER,))
    [order] = user_of(w, TAKER).orders
    assert order.bit_flags & OrderBitFlag.SignedMessage


def test_relayers_cannot_change_what_was_signed() -> None:
    w = new_world(amm_price=101 * P)
    intent, signature = signed_buy(w)
    forged = [
        replace(intent, params=replace(intent.params, price=101 * P)),
        replace(intent, params=replace(intent.params, base_asset_amount=2 * B)),
        replace(intent, params=replace(intent.params, direction=SHORT)),
        replace(intent, slot=intent.slot + 1),
        replace(intent, sub_account_id=1),  # an account that does not exist
    ]
    for bad in forged:
        refused = rejected_without_change(
            w, PlaceSignedOrder(bad, TAKER.pubkey, signature), signers=(OTHER,)
        )
        assert (refused.code, refused.field) == (
            ErrorCode.SigVerificationFailed,
            "intent_signature",
        )
    stranger = keypair(78)
    own, own_signature = signed_buy(w, signer=stranger)
    refused = rejected_without_change(
        w, PlaceSignedOrder(own, stranger.pubkey, own_signature), signers=(OTHER,)
    )
    assert refused.code == ErrorCode.SignedMsgUserContextUserMismatch


def test_an_expired_intent_is_refused() -> None:
    w = new_world(amm_price=101 * P)
    intent, signature = signed_buy(w)
    step(w, 21)  # its auction ended at the signing slot + 20
    refused = rejected_without_change(
        w, PlaceSignedOrder(intent, TAKER.pubkey, signature), signers=(OTHER,)
    )
    assert (refused.code, refused.field) == (ErrorCode.InvalidSignedMsgOrderParam, "intent.slot")


def test_the_filler_must_sign_a_signed_fill() -> None:
    w = new_world(amm_price=101 * P)
    intent, signature = signed_buy(w)
    refused = rejected_without_change(
        w,
        FillSignedOrder(FILLER.pubkey, 0, intent, TAKER.pubkey, signature),
        signers=(OTHER,),
    )
    assert refused.code == ErrorCode.UnauthorizedSigner
