"""The settle-pnl instruction: move a user's perp PnL between its USDC balance and the
market's pnl pool (the program's ``handle_settle_pnl``).

Permissionless: any signer may send it for any user, as keepers do; the controller
(:func:`protocol.controller.pnl.settle_pnl`) still reserves settling a gain the pool is not in
excess of to the user's authority or delegate. The AMM is brought up to date with its oracle
first (:func:`protocol.controller.amm.update_amm`), as the program's instruction does.

Deviation: a market in settlement (the program's ``settle_expired_position`` path) is not
modelled; such a market is refused with ``InvalidMarketStatusToSettlePnl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, Pubkey
from protocol.constants import QUOTE_SPOT_MARKET_INDEX
from protocol.controller.amm import update_amm
from protocol.controller.pnl import settle_pnl
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.math.spot_withdraw import validate_spot_market_vault_amount
from protocol.state.user import User
from protocol.types import MarketStatus


@instruction(50)
@dataclass(frozen=True, slots=True)
class SettlePnl:
    """Settle the PnL of the user ``(authority, sub_account_id)`` in ``market_index``."""

    authority: Pubkey
    sub_account_id: U16
    market_index: U16


def _acting_key(accounts: Accounts, user: User) -> bytes:
    """The signer settling: the user's authority or delegate when either signed, else another
    signer (whose only power is over losses and pool-excess gains)."""
    if user.authority in accounts.signers:
        return user.authority
    if user.delegate != bytes(32) and user.delegate in accounts.signers:
        return user.delegate
    return min(accounts.signers, default=bytes(32))


@handler(SettlePnl)
def handle_settle_pnl(accounts: Accounts, ix: SettlePnl) -> None:
    clock = accounts.clock
    user_key = (ix.authority, ix.sub_account_id)
    user = accounts.user(user_key)
    market = accounts.perp_market(ix.market_index)
    if market.status == MarketStatus.Settlement:
        raise ProtocolError(
            ErrorCode.InvalidMarketStatusToSettlePnl,
            "settling an expired market's positions is not supported",
            field="market_index",
        )
    price_data = accounts.oracle_price_data(market.amm.oracle)
    update_amm(market, price_data, accounts.state, clock.unix_timestamp, clock.slot)

    settle_pnl(accounts, user_key, ix.market_index, _acting_key(accounts, user))

    quote_market = accounts.spot_market(QUOTE_SPOT_MARKET_INDEX)
    validate_spot_market_vault_amount(quote_market, quote_market.vault_amount)
