"""Fill instructions: the filler's match, verified by the program before anything settles.

A filler (keeper) proposes a match it found off-chain — a taker order and the maker orders to
cross it with, best price first — and signs the transaction with the key of the account that
receives its reward. The program re-derives and checks everything from the users' own orders
(or signed intents): prices at this slot, sizes, sides, flags and margin. It never takes a price
or size from the filler; the most a filler may add is an upper bound on how much to fill.

Wire shapes only; the handlers are registered by :mod:`protocol.instructions.fill_handlers`.

| tag | instruction | signer |
|---|---|---|
| 60 | :class:`FillPerpOrder` | the filler |
| 61 | :class:`PlaceAndTakePerpOrder` | the taker (authority or delegate) |
| 62 | :class:`PlaceAndMakePerpOrder` (a JIT maker answering an auction) | the maker |
| 63 | :class:`TriggerOrder` | the filler |
| 64 | :class:`PlaceSignedOrder` (a user's signed intent, placed by anyone) | anyone |
| 65 | :class:`FillSignedOrder` (place a signed intent and fill it atomically) | the filler |
| 66 | :class:`PlaceAndMakeSignedOrder` (a JIT maker answering a signed intent) | the maker |
| 67 | :class:`FillSpotOrder` | the filler |
| 68 | :class:`PlaceAndTakeSpotOrder` | the taker |
| 69 | :class:`PlaceAndMakeSpotOrder` | the maker |
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codec import U16, U32, U64, Pubkey, Signature
from protocol.instructions.registry import instruction
from protocol.signed_intent import OrderIntent, Uuid
from protocol.state.order_params import OrderParams

MAX_MAKERS = 8


@dataclass(frozen=True, slots=True)
class MakerOrderRef:
    """A resting order the filler wants the taker crossed with."""

    authority: Pubkey
    sub_account_id: U16
    order_id: U32


@instruction(60)
@dataclass(frozen=True, slots=True)
class FillPerpOrder:
    filler_authority: Pubkey
    filler_sub_account_id: U16
    taker_authority: Pubkey
    taker_sub_account_id: U16
    taker_order_id: U32
    makers: tuple[MakerOrderRef, ...] = ()
    # the most base to fill in this instruction (None: as much as the orders allow)
    max_base_asset_amount: U64 | None = None


@instruction(61)
@dataclass(frozen=True, slots=True)
class PlaceAndTakePerpOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    makers: tuple[MakerOrderRef, ...] = ()


@instruction(62)
@dataclass(frozen=True, slots=True)
class PlaceAndMakePerpOrder:
    """The maker's params must be post-only and immediate-or-cancel."""

    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    taker_authority: Pubkey
    taker_sub_account_id: U16
    taker_order_id: U32


@instruction(63)
@dataclass(frozen=True, slots=True)
class TriggerOrder:
    filler_authority: Pubkey
    filler_sub_account_id: U16
    authority: Pubkey
    sub_account_id: U16
    order_id: U32


@instruction(64)
@dataclass(frozen=True, slots=True)
class PlaceSignedOrder:
    intent: OrderIntent
    intent_signer: Pubkey
    intent_signature: Signature


@instruction(65)
@dataclass(frozen=True, slots=True)
class FillSignedOrder:
    filler_authority: Pubkey
    filler_sub_account_id: U16
    intent: OrderIntent
    intent_signer: Pubkey
    intent_signature: Signature
    makers: tuple[MakerOrderRef, ...] = ()


@instruction(66)
@dataclass(frozen=True, slots=True)
class PlaceAndMakeSignedOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    taker_authority: Pubkey
    taker_sub_account_id: U16
    taker_uuid: Uuid


@instruction(67)
@dataclass(frozen=True, slots=True)
class FillSpotOrder:
    filler_authority: Pubkey
    filler_sub_account_id: U16
    taker_authority: Pubkey
    taker_sub_account_id: U16
    taker_order_id: U32
    makers: tuple[MakerOrderRef, ...] = ()
    max_base_asset_amount: U64 | None = None


@instruction(68)
@dataclass(frozen=True, slots=True)
class PlaceAndTakeSpotOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    makers: tuple[MakerOrderRef, ...] = ()


@instruction(69)
@dataclass(frozen=True, slots=True)
class PlaceAndMakeSpotOrder:
    authority: Pubkey
    sub_account_id: U16
    params: OrderParams
    taker_authority: Pubkey
    taker_sub_account_id: U16
    taker_order_id: U32
