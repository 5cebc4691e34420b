"""Changes to a user's spot position (the program's ``controller/spot_position.rs``).

Open bids are token amounts an order could add (>= 0), open asks what it could remove (<= 0);
decreasing them clamps at zero as the program does, so a stale order never flips the sign.
"""

from __future__ import annotations

from protocol.controller.spot_balance import update_spot_balances
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.spot_withdraw import check_withdraw_limits
from protocol.state.spot_market import SpotMarket
from protocol.state.user import SpotPosition, User
from protocol.types import MarketStatus, PositionDirection, SpotBalanceType


def increase_spot_open_bids_and_asks(
    spot_position: SpotPosition, direction: PositionDirection, base_asset_amount_unfilled: int
) -> None:
    if direction == PositionDirection.Long:
        spot_position.open_bids += base_asset_amount_unfilled
    else:
        spot_position.open_asks -= base_asset_amount_unfilled


def decrease_spot_open_bids_and_asks(
    spot_position: SpotPosition, direction: PositionDirection, base_asset_amount_unfilled: int
) -> None:
    if direction == PositionDirection.Long:
        spot_position.open_bids = max(spot_position.open_bids - base_asset_amount_unfilled, 0)
    else:
        spot_position.open_asks = min(spot_position.open_asks + base_asset_amount_unfilled, 0)


def update_spot_balances_and_cumulative_deposits(
    token_amount: int,
    update_direction: SpotBalanceType,
    spot_market: SpotMarket,
    spot_position: SpotPosition,
    is_leaving_drift: bool,
    cumulative_deposit_delta: int | None = None,
) -> None:
    """Move ``token_amount`` into (Deposit) or out of (Borrow) the position, tracking the net
    tokens the user put in (``cumulative_deposits``, read by the small-account exemption)."""
    update_spot_balances(
        token_amount, update_direction, spot_market, spot_position, is_leaving_drift
    )
    delta = token_amount if cumulative_deposit_delta is None else cumulative_deposit_delta
    if update_direction == SpotBalanceType.Deposit:
        spot_position.cumulative_deposits += delta
    else:
        spot_position.cumulative_deposits -= delta


def update_spot_balances_and_cumulative_deposits_with_limits(
    token_amount: int, update_direction: SpotBalanceType, spot_market: SpotMarket, user: User
) -> None:
    """As above for tokens leaving the program, then enforce the global withdraw/borrow guards
    (``DailyWithdrawLimit``) and the market status (``MarketWithdrawPaused``)."""
    position = user.force_get_spot_position_mut(spot_market.market_index)
    update_spot_balances_and_cumulative_deposits(
        token_amount, update_direction, spot_market, position, True
    )
    if not check_withdraw_limits(spot_market, user, token_amount):
        raise ProtocolError(
            ErrorCode.DailyWithdrawLimit,
            f"spot market {spot_market.market_index} hit its withdraw limit "
            f"(attempted {token_amount})",
            field="amount",
        )
    if spot_market.status not in (
        MarketStatus.Active,
        MarketStatus.ReduceOnly,
        MarketStatus.Settlement,
    ):
        raise ProtocolError(
            ErrorCode.MarketWithdrawPaused,
            f"spot market {spot_market.market_index} withdraws are paused",
            field="market_index",
        )
