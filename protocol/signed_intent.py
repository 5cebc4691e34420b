"""Off-chain signed order intents (the program's signed-message orders).

A user signs an :class:`OrderIntent` — order params, their authority and sub-account, the slot
they signed at and a random 8-byte uuid — and broadcasts it; a keeper submits it inside its own
transaction, and the program places (and fills) it atomically. The keeper signs the
transaction; it cannot change a byte of the intent, because everything that matters comes from
the user's signed bytes.

Signing bytes are ``INTENT_DOMAIN + codec.encode(intent)``: the domain prefix keeps an intent
signature from ever verifying as a transaction signature and vice versa.

:func:`verify_intent` is the only way to a :class:`VerifiedIntent`; order placement accepts only
that type (parse, don't validate). It checks, in order, each failure a distinct code:

* the signature is the claimed signer's over these exact bytes (``SigVerificationFailed``);
* the signer is the user's authority or delegate (``SignedMsgUserContextUserMismatch``);
* a perp order with valid auction params (``InvalidSignedMsgOrderParam``, field named);
* signed at most ``MAX_INTENT_AGE_SLOTS`` ago and its auction (``max_slot``) not over
  (``InvalidSignedMsgOrderParam``, field ``intent.slot``);
* the uuid not used by this user before (``InvalidSignedMsgOrderId``) — checked by the caller
  against :class:`~protocol.accounts.Accounts`, which remembers uuids until their ``max_slot``
  passes (after that the intent is expired anyway, so forgetting it is safe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.codec import U16, U64, FixedBytes, Pubkey, encode
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.keys import Keypair, verify_signature
from protocol.math.auction import has_valid_auction_params
from protocol.state.order_params import OrderParams
from protocol.state.user import User
from protocol.types import MarketType, OrderType

INTENT_DOMAIN = b"DKINTENT\x01"
MAX_INTENT_AGE_SLOTS = 500  # the program's "within 500 slots of the current slot"
UUID_LEN = 8

Uuid = Annotated[bytes, FixedBytes(UUID_LEN)]


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What the user signs."""

    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    slot: U64  # the slot the user signed at; the auction starts here
    uuid: Uuid

    def signing_bytes(self) -> bytes:
        return INTENT_DOMAIN + encode(self)

    def max_slot(self) -> int:
        """The last slot the intent may be placed at: the end of its auction."""
        return self.slot + (self.params.auction_duration or 0)

    def sign(self, keypair: Keypair) -> bytes:
        return keypair.sign(self.signing_bytes())


@dataclass(frozen=True, slots=True)
class VerifiedIntent:
    """An intent whose signature, signer, params and freshness were checked at ``slot``."""

    intent: OrderIntent
    signer: bytes
    signature: bytes
    verified_at_slot: int


def verify_intent(
    user: User, intent: OrderIntent, signer: bytes, signature: bytes, slot: int
) -> VerifiedIntent:
    """Check everything about an intent except uuid reuse; see the module docstring."""
    if not verify_signature(signer, intent.signing_bytes(), signature):
        raise ProtocolError(
            ErrorCode.SigVerificationFailed,
            "the intent's signature does not verify for the signer",
            field="intent_signature",
        )
    if (intent.authority, intent.sub_account_id) != user.key:
        raise ProtocolError(ErrorCode.SignedMsgUserContextUserMismatch, field="intent.authority")
    is_delegate = user.delegate != bytes(32) and signer == user.delegate
    if signer != user.authority and not is_delegate:
        raise ProtocolError(
            ErrorCode.SignedMsgUserContextUserMismatch,
            "the intent's signer is neither the user's authority nor its delegate",
            field="intent_signer",
        )
    params = intent.params
    if params.market_type != MarketType.Perp:
        raise InvalidParameter(
            "intent.params.market_type",
            "signed intents are perp orders",
            ErrorCode.InvalidSignedMsgOrderParam,
        )
    if not has_valid_auction_params(params) or (
        params.order_type != OrderType.Limit and params.auction_duration is None
    ):
        raise InvalidParameter(
            "intent.params.auction_duration",
            "a signed intent needs complete auction params moving the order's way",
            ErrorCode.InvalidSignedMsgOrderParam,
        )
    if intent.slot + MAX_INTENT_AGE_SLOTS < slot:
        raise InvalidParameter(
            "intent.slot",
            f"signed at slot {intent.slot}, more than {MAX_INTENT_AGE_SLOTS} slots ago",
            ErrorCode.InvalidSignedMsgOrderParam,
        )
    if intent.max_slot() < slot:
        raise InvalidParameter(
            "intent.slot",
            f"expired: its auction ended at slot {intent.max_slot()}",
            ErrorCode.InvalidSignedMsgOrderParam,
        )
    if intent.slot > slot:
        raise InvalidParameter(
            "intent.slot",
            f"signed for slot {intent.slot}, ahead of slot {slot}",
            ErrorCode.InvalidSignedMsgOrderParam,
        )
    return VerifiedIntent(intent, signer, signature, slot)
