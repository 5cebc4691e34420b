"""BAL provider instructions: add and remove LP shares, settle an LP position (the program's
``handle_add_perp_lp_shares``, ``handle_remove_perp_lp_shares`` and ``handle_settle_lp``).

* ``AddPerpLpShares`` -- signed by the user's authority or delegate. Refused for a bankrupt
  user (``UserBankrupt``) or one still being liquidated (``UserIsBeingLiquidated``); after the
  shares are minted the user must meet the initial margin requirement, which counts the base
  the shares could take on as open orders (``InsufficientCollateral``).
* ``RemovePerpLpShares`` -- signed by the user's authority or delegate; the remainder charge is
  priced at the market's oracle price; ``State.lp_cooldown_time`` seconds must have passed since
  the user's last addition (``TryingToRemoveLiquidityTooFast``). No margin check, as in the
  program.
* ``SettleLp`` -- permissionless (as ``SettlePnl``): anyone, typically a keeper, may settle any
  user's funding and then its LP position in a market, each funding period, so that the LP
  earns funding on what it has taken on.

Each updates the user's ``last_active_slot`` (unless it is being liquidated) and emits the
funding payment and :class:`~protocol.records.LPRecord` records of the controller
(:mod:`protocol.controller.lp`). As in the program, none of them brings the AMM up to date with
its oracle first.

Deviation: the program's state-level pause flags (``amm_not_paused``) and per-market paused
operations are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, U64, Pubkey
from protocol.controller.lp import (
    add_perp_lp_shares,
    remove_perp_lp_shares,
    settle_funding_payment_then_lp,
)
from protocol.controller.orders import _update_last_active_slot, validate_user_not_being_liquidated
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.math.margin import meets_initial_margin_requirement


@instruction(90)
@dataclass(frozen=True, slots=True)
class AddPerpLpShares:
    """Mint ``n_shares`` (AMM_RESERVE_PRECISION, rounded down to the order step) of BAL shares
    in ``market_index`` for the user ``(authority, sub_account_id)``."""

    authority: Pubkey
    sub_account_id: U16
    market_index: U16
    n_shares: U64


@instruction(91)
@dataclass(frozen=True, slots=True)
class RemovePerpLpShares:
    """Burn ``n_shares`` (AMM_RESERVE_PRECISION) of the user's BAL shares in ``market_index``
    (rounded down to the order step unless it is all of them)."""

    authority: Pubkey
    sub_account_id: U16
    market_index: U16
    n_shares: U64


@instruction(92)
@dataclass(frozen=True, slots=True)
class SettleLp:
    """Settle the user's funding and LP position in ``market_index``; anyone may send it."""

    authority: Pubkey
    sub_account_id: U16
    market_index: U16


@handler(AddPerpLpShares)
def handle_add_perp_lp_shares(accounts: Accounts, ix: AddPerpLpShares) -> None:
    clock = accounts.clock
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="authority")
    validate_user_not_being_liquidated(user, accounts)

    market = accounts.perp_market(ix.market_index)
    records = add_perp_lp_shares(user, market, ix.n_shares, clock.unix_timestamp)

    if not meets_initial_margin_requirement(user, accounts):
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            "user does not meet the initial margin requirement with the new LP shares",
            field="n_shares",
        )
    _update_last_active_slot(user, clock.slot)
    for record in records:
        accounts.emit(record)


@handler(RemovePerpLpShares)
def handle_remove_perp_lp_shares(accounts: Accounts, ix: RemovePerpLpShares) -> None:
    clock = accounts.clock
    user = accounts.authorized_user((ix.authority, ix.sub_account_id))
    market = accounts.perp_market(ix.market_index)
    oracle_price = accounts.oracle_price_data(market.amm.oracle).price
    records = remove_perp_lp_shares(
        user,
        market,
        ix.n_shares,
        oracle_price,
        clock.unix_timestamp,
        accounts.state.lp_cooldown_time,
    )
    _update_last_active_slot(user, clock.slot)
    for record in records:
        accounts.emit(record)


@handler(SettleLp)
def handle_settle_lp(accounts: Accounts, ix: SettleLp) -> None:
    clock = accounts.clock
    user_key = (ix.authority, ix.sub_account_id)
    user = accounts.user(user_key)
    market = accounts.perp_market(ix.market_index)
    records = settle_funding_payment_then_lp(user, user_key, market, clock.unix_timestamp)
    _update_last_active_slot(user, clock.slot)
    for record in records:
        accounts.emit(record)
