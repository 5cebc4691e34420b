"""When a user is bankrupt (the program's ``math/bankruptcy.rs``).

A user is bankrupt when liquidation has taken everything it can: the account still owes
something (a spot borrow or negative perp PnL) and holds nothing a liquidator could take for it
(no deposit, no perp base, no positive PnL, no open orders, no BAL shares). What is left is
resolved by ``resolve_perp_bankruptcy`` / ``resolve_spot_bankruptcy``.

Deviation: the current program has dropped BAL (LP) shares; this model keeps them (seed 004),
so a position with ``lp_shares`` is not bankrupt, as in the program's versions with BAL
providers (``is_user_bankrupt`` checked ``is_lp``). Cross margin only: the program's
``is_isolated_margin_bankrupt`` has no counterpart.
"""

from __future__ import annotations

from protocol.state.user import User
from protocol.types import SpotBalanceType

__all__ = ["is_cross_margin_bankrupt", "is_user_bankrupt"]


def is_cross_margin_bankrupt(user: User) -> bool:
    """Liabilities and nothing to liquidate for them."""
    has_liability = False
    for spot_position in user.spot_positions:
        if spot_position.scaled_balance > 0:
            if spot_position.balance_type == SpotBalanceType.Deposit:
                return False
            has_liability = True

    for perp_position in user.perp_positions:
        if (
            perp_position.base_asset_amount != 0
            or perp_position.quote_asset_amount > 0
            or perp_position.open_orders != 0
            or perp_position.open_bids != 0
            or perp_position.open_asks != 0
            or perp_position.lp_shares > 0
        ):
            return False
        if perp_position.quote_asset_amount < 0:
            has_liability = True

    return has_liability


# The program's name before it had isolated positions.
is_user_bankrupt = is_cross_margin_bankrupt
