"""Signed order intents: what verification accepts and what it refuses, by code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.accounts import Accounts, ProgramState, SignedMsgOrderId
from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.signed_intent import INTENT_DOMAIN, OrderIntent, verify_intent
from protocol.state import OrderParams, State, User
from protocol.types import MarketType, OrderType, PositionDirection
from tests.protocol.world import keypair

ALICE = keypair(1)
DELEGATE = keypair(2)
MALLORY = keypair(3)
SLOT = 5_000


def market_buy(size: int = BASE_PRECISION) -> OrderParams:
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        PositionDirection.Long,
        size,
        0,
        price=101 * PRICE_PRECISION,
        auction_duration=20,
        auction_start_price=100 * PRICE_PRECISION,
        auction_end_price=101 * PRICE_PRECISION,
    )


def intent(**changes: object) -> OrderIntent:
    base = OrderIntent(ALICE.pubkey, 0, market_buy(), SLOT, b"\x01" * 8)
    return replace(base, **changes)  # type: ignore[arg-type]


USER = User(authority=ALICE.pubkey, delegate=DELEGATE.pubkey)


def refused(code: ErrorCode, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        verify_intent(*args)  # type: ignore[arg-type]
    assert err.value.code == code
    return err.value


def test_authority_and_delegate_signatures_verify() -> None:
    i = intent()
    assert verify_intent(USER, i, ALICE.pubkey, i.sign(ALICE), SLOT).intent == i
    assert verify_intent(USER, i, DELEGATE.pubkey, i.sign(DELEGATE), SLOT + 3).signer == (
        DELEGATE.pubkey
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"params": replace(market_buy(), price=105 * PRICE_PRECISION)},
        {"params": market_buy(size=2 * BASE_PRECISION)},
        {"params": replace(market_buy(), direction=PositionDirection.Short)},
        {"params": replace(market_buy(), market_index=1)},
        {"sub_account_id": 1},
        {"uuid": b"\x02" * 8},
        {"slot": SLOT + 1},
    ],
)
def test_any_change_to_the_signed_terms_breaks_the_signature(changed: dict[str, object]) -> None:
    signature = intent().sign(ALICE)
    err = refused(
        ErrorCode.SigVerificationFailed, USER, intent(**changed), ALICE.pubkey, signature, SLOT + 1
    )
    assert err.field == "intent_signature"


def test_a_stranger_cannot_sign_for_the_user() -> None:
    i = intent()
    refused(
        ErrorCode.SignedMsgUserContextUserMismatch, USER, i, MALLORY.pubkey, i.sign(MALLORY), SLOT
    )


def test_an_intent_signature_is_not_a_transaction_signature() -> None:
    # domain separation: the same key's transaction signature over other bytes never verifies
    i = intent()
    assert i.signing_bytes().startswith(INTENT_DOMAIN)
    bogus = ALICE.sign(i.signing_bytes()[len(INTENT_DOMAIN) :])
    refused(ErrorCode.SigVerificationFailed, USER, i, ALICE.pubkey, bogus, SLOT)


def test_expired_intent_is_refused() -> None:
    i = intent()  # auction of 20 slots from SLOT: placeable through SLOT + 20
    assert verify_intent(USER, i, ALICE.pubkey, i.sign(ALICE), SLOT + 20)
    err = refused(
        ErrorCode.InvalidSignedMsgOrderParam, USER, i, ALICE.pubkey, i.sign(ALICE), SLOT + 21
    )
    assert err.field == "intent.slot"


def test_limit_intent_without_auction_lives_500_slots_at_most() -> None:
    params = OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Long,
        BASE_PRECISION,
        0,
        price=99 * PRICE_PRECISION,
        auction_duration=255,
        auction_start_price=98 * PRICE_PRECISION,
        auction_end_price=99 * PRICE_PRECISION,
    )
    i = intent(params=params)
    refused(ErrorCode.InvalidSignedMsgOrderParam, USER, i, ALICE.pubkey, i.sign(ALICE), SLOT + 501)


def test_spot_or_auctionless_market_intents_are_refused() -> None:
    spot = intent(params=replace(market_buy(), market_type=MarketType.Spot))
    err = refused(
        ErrorCode.InvalidSignedMsgOrderParam, USER, spot, ALICE.pubkey, spot.sign(ALICE), SLOT
    )
    assert err.field == "intent.params.market_type"
    no_auction = intent(
        params=replace(
            market_buy(), auction_duration=None, auction_start_price=None, auction_end_price=None
        )
    )
    refused(
        ErrorCode.InvalidSignedMsgOrderParam,
        USER,
        no_auction,
        ALICE.pubkey,
        no_auction.sign(ALICE),
        SLOT,
    )


def test_uuid_is_single_use_until_the_intent_expires() -> None:
    base = ProgramState(State())
    key = (ALICE.pubkey, 0)
    view = Accounts(base, Clock(SLOT, 0))
    view.use_signed_msg_uuid(key, b"\x01" * 8, SLOT + 20)
    view.commit()
    again = Accounts(base, Clock(SLOT + 5, 0))
    with pytest.raises(ProtocolError) as err:
        again.use_signed_msg_uuid(key, b"\x01" * 8, SLOT + 25)
    assert err.value.code == ErrorCode.InvalidSignedMsgOrderId
    # a rejected use is not committed, and once expired the uuid is forgotten
    later = Accounts(base, Clock(SLOT + 21, 0))
    later.use_signed_msg_uuid(key, b"\x03" * 8, SLOT + 40)
    later.commit()
    assert base.signed_msg_uuids[key] == {b"\x03" * 8: SignedMsgOrderId(SLOT + 40, 0)}


def test_a_spent_uuid_remembers_the_order_it_placed() -> None:
    base = ProgramState(State())
    key = (ALICE.pubkey, 0)
    view = Accounts(base, Clock(SLOT, 0))
    view.use_signed_msg_uuid(key, b"\x01" * 8, SLOT + 20, 7)
    assert view.signed_msg_order_id(key, b"\x01" * 8) == 7
    assert view.signed_msg_order_id(key, b"\x02" * 8) is None
    view.commit()
    assert base.signed_msg_uuids[key] == {b"\x01" * 8: SignedMsgOrderId(SLOT + 20, 7)}
