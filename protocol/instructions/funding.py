"""Funding instructions: the permissionless funding-rate crank and per-user settlement.

``UpdateFundingRate`` may be sent by anyone (a keeper); it succeeds only when the program's
on-the-hour rule says an update is due, and is otherwise rejected with
``FundingWasNotUpdated`` so a keeper can tell "too early" from success. ``SettleFundingPayment``
moves a user's accrued funding into their perp quote amounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, Pubkey
from protocol.controller.amm import update_amm
from protocol.controller.funding import settle_funding_payments, update_funding_rate
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.types import MarketStatus


@instruction(30)
@dataclass(frozen=True, slots=True)
class UpdateFundingRate:
    market_index: U16


@instruction(31)
@dataclass(frozen=True, slots=True)
class SettleFundingPayment:
    """Settle every perp position of the user; anyone may send it."""

    authority: Pubkey
    sub_account_id: U16


@handler(UpdateFundingRate)
def handle_update_funding_rate(accounts: Accounts, ix: UpdateFundingRate) -> None:
    clock = accounts.clock
    market = accounts.perp_market(ix.market_index)
    price_data = accounts.oracle_price_data(market.amm.oracle)
    update_amm(market, price_data, accounts.state, clock.unix_timestamp, clock.slot)
    if market.status not in (
        MarketStatus.Active,
        MarketStatus.ReduceOnly,
        MarketStatus.FundingPaused,
    ):
        raise ProtocolError(
            ErrorCode.MarketActionPaused, "market funding is paused", field="market_index"
        )
    record = update_funding_rate(
        ix.market_index,
        market,
        price_data,
        clock.unix_timestamp,
        clock.slot,
        accounts.state.oracle_guard_rails,
        market.status == MarketStatus.FundingPaused,
    )
    if record is None:
        raise ProtocolError(
            ErrorCode.FundingWasNotUpdated, "no funding update is due yet", field="market_index"
        )
    accounts.emit(record)


@handler(SettleFundingPayment)
def handle_settle_funding_payment(accounts: Accounts, ix: SettleFundingPayment) -> None:
    user = accounts.user((ix.authority, ix.sub_account_id))
    for record in settle_funding_payments(user, user.key, accounts, accounts.clock.unix_timestamp):
        accounts.emit(record)
