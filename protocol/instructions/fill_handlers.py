"""Handlers of the fill instructions (:mod:`protocol.instructions.fills` holds their wire shapes).

Each handler checks who signed, then runs the fill engine (:mod:`protocol.controller.fills`,
:mod:`protocol.controller.spot_fills`), which verifies the proposal against the users' own
orders and signed intents:

* ``FillPerpOrder`` / ``FillSpotOrder`` / ``TriggerOrder`` / ``FillSignedOrder``: the filler's
  authority must sign (``UnauthorizedSigner``: a filler cannot claim a reward for an account
  it does not control) and the filler account must exist (``UserNotFound``). A fill that
  neither fills nor cancels anything is refused (``FillOrderDidNotUpdateState``; the program
  accepts it as a no-op), so a stale proposal is reported to the filler instead of costing it
  a transaction for nothing.
* ``PlaceAndTakePerpOrder`` / ``PlaceAndTakeSpotOrder``: the taker (authority or delegate)
  signs; a post-only order cannot take (``InvalidOrderPostOnly``); the order is placed, filled
  against the named makers (perp: and the AMM) with the taker's limit read at the end of its
  auction (the program's place-and-take fill mode), and an immediate-or-cancel remainder is
  cancelled. A non-IOC remainder rests on the book.
* ``PlaceAndMakePerpOrder`` / ``PlaceAndMakeSpotOrder`` / ``PlaceAndMakeSignedOrder``: the maker
  signs; its params must be a post-only, immediate-or-cancel limit order
  (``InvalidOrderIOCPostOnly``); the order is placed, filled against the named taker order as
  its only maker (layer ``"jit"``), and its remainder is cancelled. The signed variant finds the
  taker order by the uuid of the intent it was placed from (``SignedMsgOrderDoesNotExist``).
* ``PlaceSignedOrder``: anyone may relay a user's signed intent; it is verified
  (:func:`~protocol.signed_intent.verify_intent`: ``SigVerificationFailed``,
  ``SignedMsgUserContextUserMismatch``, ``InvalidSignedMsgOrderParam``), its uuid spent
  (``InvalidSignedMsgOrderId``) and the order placed exactly as signed. ``FillSignedOrder``
  does that and fills the order in the same instruction (an immediate-or-cancel remainder is
  cancelled). The signature is checked before the user account is looked up, so an intent
  whose signed sub-account was changed is a ``SigVerificationFailed``, not a missing user. A
  signed price off the market's tick grid is refused (``InvalidOrderLimitPrice``), as for
  ``PlacePerpOrder``.

Perp fill instructions first bring the market's AMM up to date with its oracle, as the
program's handlers do (``update_amm``); placing a signed intent does not.
"""

from __future__ import annotations

from protocol.accounts import Accounts
from protocol.controller.fills import (
    FillMode,
    FillResult,
    MakerOrderRef,
    fill_perp_order,
    place_signed_msg_taker_order,
    prepare_perp_fill,
    trigger_order,
)
from protocol.controller.orders import (
    cancel_order_by_order_id,
    place_perp_order,
    place_spot_order,
)
from protocol.controller.spot_fills import fill_spot_order, trigger_spot_order
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.instructions.fills import (
    FillPerpOrder,
    FillSignedOrder,
    FillSpotOrder,
    PlaceAndMakePerpOrder,
    PlaceAndMakeSignedOrder,
    PlaceAndMakeSpotOrder,
    PlaceAndTakePerpOrder,
    PlaceAndTakeSpotOrder,
    PlaceSignedOrder,
    TriggerOrder,
)
from protocol.instructions.fills import MakerOrderRef as WireMakerOrderRef
from protocol.instructions.orders import _check_on_tick
from protocol.instructions.registry import handler
from protocol.keys import verify_signature
from protocol.signed_intent import OrderIntent, VerifiedIntent, verify_intent
from protocol.state.order_params import OrderParams
from protocol.state.user import User, UserKey
from protocol.types import MarketType, OrderStatus, PostOnlyParam
from protocol.validation.order import validate_place_and_make_order_params


# --- shared checks -------------------------------------------------------------------------------
def _filler(accounts: Accounts, authority: bytes, sub_account_id: int) -> UserKey:
    """The filler's account key, once its authority is known to have signed and it exists."""
    accounts.require_signer(authority, "filler_authority")
    key = (authority, sub_account_id)
    accounts.user(key)
    return key


def _makers(refs: tuple[WireMakerOrderRef, ...]) -> tuple[MakerOrderRef, ...]:
    return tuple(MakerOrderRef((ref.authority, ref.sub_account_id), ref.order_id) for ref in refs)


def _order_market(accounts: Accounts, user_key: UserKey, order_id: int) -> tuple[MarketType, int]:
    for order in accounts.user(user_key).orders:
        if order.order_id == order_id and order.status == OrderStatus.Open:
            return order.market_type, order.market_index
    raise ProtocolError(
        ErrorCode.OrderDoesNotExist, f"no open order {order_id}", field="taker_order_id"
    )


def _require_update(result: FillResult) -> None:
    if not result.updated_state():
        raise ProtocolError(
            ErrorCode.FillOrderDidNotUpdateState,
            "nothing crossed: the fill would neither fill nor cancel an order",
        )


def _check_market_type(params: OrderParams, market_type: MarketType) -> None:
    if params.market_type != market_type:
        raise InvalidParameter(
            "params.market_type",
            f"{params.market_type.name} order sent to a {market_type.name} instruction",
            ErrorCode.InvalidOrderMarketType,
        )


def _check_perp_params(accounts: Accounts, params: OrderParams) -> None:
    _check_market_type(params, MarketType.Perp)
    _check_on_tick(params, accounts.perp_market(params.market_index).amm.order_tick_size)


def _check_spot_params(accounts: Accounts, params: OrderParams) -> None:
    _check_market_type(params, MarketType.Spot)
    _check_on_tick(params, accounts.spot_market(params.market_index).order_tick_size)


def _check_take_params(params: OrderParams) -> None:
    if params.post_only != PostOnlyParam.None_:
        raise InvalidParameter(
            "params.post_only",
            "a post-only order cannot be used in place-and-take",
            ErrorCode.InvalidOrderPostOnly,
        )


def _is_open(accounts: Accounts, user_key: UserKey, order_id: int) -> bool:
    return any(
        o.order_id == order_id and o.status == OrderStatus.Open
        for o in accounts.user(user_key).orders
    )


def _cancel_if_open(accounts: Accounts, user_key: UserKey, order_id: int) -> None:
    if _is_open(accounts, user_key, order_id):
        cancel_order_by_order_id(accounts, user_key, order_id)


def _placed(order_id: int | None) -> int:
    if order_id is None:
        raise ProtocolError(
            ErrorCode.InvalidOrder,
            "the order was not placed (expired, or a post-only order that would take)",
            field="params",
        )
    return order_id


# --- perp -----------------------------------------------------------------------------------------
@handler(FillPerpOrder)
def handle_fill_perp_order(accounts: Accounts, ix: FillPerpOrder) -> None:
    filler_key = _filler(accounts, ix.filler_authority, ix.filler_sub_account_id)
    taker_key = (ix.taker_authority, ix.taker_sub_account_id)
    market_type, market_index = _order_market(accounts, taker_key, ix.taker_order_id)
    if market_type != MarketType.Perp:
        raise ProtocolError(
            ErrorCode.InvalidOrderMarketType, "must be a perp order", field="taker_order_id"
        )
    prepare_perp_fill(accounts, market_index)
    result = fill_perp_order(
        accounts,
        taker_key,
        ix.taker_order_id,
        filler_key,
        _makers(ix.makers),
        FillMode.Fill,
        ix.max_base_asset_amount,
    )
    _require_update(result)


@handler(PlaceAndTakePerpOrder)
def handle_place_and_take_perp_order(accounts: Accounts, ix: PlaceAndTakePerpOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _check_perp_params(accounts, ix.params)
    _check_take_params(ix.params)
    prepare_perp_fill(accounts, ix.params.market_index)
    order_id = _placed(place_perp_order(accounts, user.key, ix.params))
    fill_perp_order(
        accounts, user.key, order_id, user.key, _makers(ix.makers), FillMode.PlaceAndTake
    )
    if ix.params.immediate_or_cancel:
        _cancel_if_open(accounts, user.key, order_id)


def _place_and_make_perp(
    accounts: Accounts, maker: User, params: OrderParams, taker_key: UserKey, taker_order_id: int
) -> None:
    validate_place_and_make_order_params(params)
    _check_perp_params(accounts, params)
    prepare_perp_fill(accounts, params.market_index)
    order_id = _placed(place_perp_order(accounts, maker.key, params))
    jit = MakerOrderRef(maker.key, order_id)
    fill_perp_order(
        accounts, taker_key, taker_order_id, maker.key, (jit,), FillMode.PlaceAndMake, None, jit
    )
    _cancel_if_open(accounts, maker.key, order_id)


@handler(PlaceAndMakePerpOrder)
def handle_place_and_make_perp_order(accounts: Accounts, ix: PlaceAndMakePerpOrder) -> None:
    maker = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _place_and_make_perp(
        accounts, maker, ix.params, (ix.taker_authority, ix.taker_sub_account_id), ix.taker_order_id
    )


@handler(TriggerOrder)
def handle_trigger_order(accounts: Accounts, ix: TriggerOrder) -> None:
    filler_key = _filler(accounts, ix.filler_authority, ix.filler_sub_account_id)
    user_key = (ix.authority, ix.sub_account_id)
    for order in accounts.user(user_key).orders:
        if order.order_id == ix.order_id and order.status == OrderStatus.Open:
            if order.market_type == MarketType.Perp:
                trigger_order(accounts, user_key, ix.order_id, filler_key)
            else:
                trigger_spot_order(accounts, user_key, ix.order_id, filler_key)
            return
    raise ProtocolError(
        ErrorCode.OrderDoesNotExist, f"no open order {ix.order_id}", field="order_id"
    )


# --- signed intents ------------------------------------------------------------------------------
def _verified_intent(
    accounts: Accounts, intent: OrderIntent, signer: bytes, signature: bytes
) -> VerifiedIntent:
    key = (intent.authority, intent.sub_account_id)
    if not accounts.has_user(key) and not verify_signature(
        signer, intent.signing_bytes(), signature
    ):
        # a forged sub-account must read as a bad signature, not as a missing account
        raise ProtocolError(
            ErrorCode.SigVerificationFailed,
            "the intent's signature does not verify for the signer",
            field="intent_signature",
        )
    verified = verify_intent(accounts.user(key), intent, signer, signature, accounts.clock.slot)
    # as for any placement, a price off the tick grid is refused rather than rounded
    _check_perp_params(accounts, intent.params)
    return verified


@handler(PlaceSignedOrder)
def handle_place_signed_order(accounts: Accounts, ix: PlaceSignedOrder) -> None:
    verified = _verified_intent(accounts, ix.intent, ix.intent_signer, ix.intent_signature)
    place_signed_msg_taker_order(accounts, verified)


@handler(FillSignedOrder)
def handle_fill_signed_order(accounts: Accounts, ix: FillSignedOrder) -> None:
    filler_key = _filler(accounts, ix.filler_authority, ix.filler_sub_account_id)
    verified = _verified_intent(accounts, ix.intent, ix.intent_signer, ix.intent_signature)
    order_id = place_signed_msg_taker_order(accounts, verified)
    taker_key = (ix.intent.authority, ix.intent.sub_account_id)
    prepare_perp_fill(accounts, ix.intent.params.market_index)
    result = fill_perp_order(
        accounts, taker_key, order_id, filler_key, _makers(ix.makers), FillMode.Fill
    )
    if ix.intent.params.immediate_or_cancel:
        _cancel_if_open(accounts, taker_key, order_id)
    _require_update(result)


@handler(PlaceAndMakeSignedOrder)
def handle_place_and_make_signed_order(accounts: Accounts, ix: PlaceAndMakeSignedOrder) -> None:
    maker = accounts.authorized_user((ix.authority, ix.sub_account_id))
    taker_key = (ix.taker_authority, ix.taker_sub_account_id)
    taker_order_id = accounts.signed_msg_order_id(taker_key, ix.taker_uuid)
    if taker_order_id is None:
        raise ProtocolError(
            ErrorCode.SignedMsgOrderDoesNotExist,
            f"no order placed from intent {ix.taker_uuid.hex()}",
            field="taker_uuid",
        )
    _place_and_make_perp(accounts, maker, ix.params, taker_key, taker_order_id)


# --- spot -----------------------------------------------------------------------------------------
@handler(FillSpotOrder)
def handle_fill_spot_order(accounts: Accounts, ix: FillSpotOrder) -> None:
    filler_key = _filler(accounts, ix.filler_authority, ix.filler_sub_account_id)
    taker_key = (ix.taker_authority, ix.taker_sub_account_id)
    result = fill_spot_order(
        accounts,
        taker_key,
        ix.taker_order_id,
        filler_key,
        _makers(ix.makers),
        ix.max_base_asset_amount,
    )
    _require_update(result)


@handler(PlaceAndTakeSpotOrder)
def handle_place_and_take_spot_order(accounts: Accounts, ix: PlaceAndTakeSpotOrder) -> None:
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    _check_spot_params(accounts, ix.params)
    _check_take_params(ix.params)
    order_id = _placed(place_spot_order(accounts, user.key, ix.params))
    fill_spot_order(accounts, user.key, order_id, user.key, _makers(ix.makers))
    if ix.params.immediate_or_cancel:
        _cancel_if_open(accounts, user.key, order_id)


@handler(PlaceAndMakeSpotOrder)
def handle_place_and_make_spot_order(accounts: Accounts, ix: PlaceAndMakeSpotOrder) -> None:
    maker = accounts.authorized_user((ix.authority, ix.sub_account_id))
    validate_place_and_make_order_params(ix.params)
    _check_spot_params(accounts, ix.params)
    order_id = _placed(place_spot_order(accounts, maker.key, ix.params))
    jit = MakerOrderRef(maker.key, order_id)
    fill_spot_order(
        accounts,
        (ix.taker_authority, ix.taker_sub_account_id),
        ix.taker_order_id,
        maker.key,
        (jit,),
        None,
        jit,
    )
    _cancel_if_open(accounts, maker.key, order_id)
