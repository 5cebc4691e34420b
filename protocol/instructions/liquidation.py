"""Liquidation and bankruptcy instructions (the program's ``handle_liquidate_*`` /
``handle_resolve_*_bankruptcy`` / ``handle_set_user_status_to_being_liquidated``).

The liquidator is a user account whose authority (or delegate) signs: it receives what it
takes over and must meet its initial margin requirement afterwards. The liquidated user signs
nothing. A user may not liquidate itself (``UserCantLiquidateThemself``).

| tag | instruction | signer |
|---|---|---|
| 70 | :class:`LiquidatePerp` | the liquidator |
| 71 | :class:`LiquidateSpot` | the liquidator |
| 72 | :class:`LiquidateBorrowForPerpPnl` | the liquidator |
| 73 | :class:`LiquidatePerpPnlForDeposit` | the liquidator |
| 74 | :class:`ResolvePerpBankruptcy` | the liquidator |
| 75 | :class:`ResolveSpotBankruptcy` | the liquidator |
| 76 | :class:`SetUserStatusToBeingLiquidated` | anyone |

Resolving a bankruptcy pays from the market's insurance fund: the handler moves the payment
from ``insurance_fund.vault_amount`` into the market's ``vault_amount`` (the program's token
transfer out of the insurance vault), refuses a payment the fund cannot make while keeping at
least one token (``InsufficientCollateral`` / ``InvalidIFDetected``), and checks the market's
vault still covers its depositors before and after.

Amounts: ``max_base_asset_amount`` BASE_PRECISION; ``max_liability_transfer`` the liability
mint's units; ``max_pnl_transfer`` QUOTE_PRECISION; ``limit_price`` PRICE_PRECISION (``None``:
no limit).

Deviation: the program's bankruptcy handlers first settle the revenue pool into the insurance
fund when a settlement is due (``attempt_settle_revenue_to_insurance_fund``); that belongs to
the insurance-fund controller and is not called here.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, U64, U128, Pubkey
from protocol.constants import QUOTE_SPOT_MARKET_INDEX
from protocol.controller.liquidation import (
    liquidate_borrow_for_perp_pnl,
    liquidate_perp,
    liquidate_perp_pnl_for_deposit,
    liquidate_spot,
    resolve_perp_bankruptcy,
    resolve_spot_bankruptcy,
    set_user_status_to_being_liquidated,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.math.spot_withdraw import validate_spot_market_vault_amount
from protocol.state.spot_market import SpotMarket
from protocol.state.user import UserKey


@instruction(70)
@dataclass(frozen=True, slots=True)
class LiquidatePerp:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    market_index: U16
    max_base_asset_amount: U64
    limit_price: U64 | None = None


@instruction(71)
@dataclass(frozen=True, slots=True)
class LiquidateSpot:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    asset_market_index: U16
    liability_market_index: U16
    max_liability_transfer: U128
    limit_price: U64 | None = None


@instruction(72)
@dataclass(frozen=True, slots=True)
class LiquidateBorrowForPerpPnl:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    perp_market_index: U16
    liability_market_index: U16
    max_liability_transfer: U128
    limit_price: U64 | None = None


@instruction(73)
@dataclass(frozen=True, slots=True)
class LiquidatePerpPnlForDeposit:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    perp_market_index: U16
    asset_market_index: U16
    max_pnl_transfer: U128
    limit_price: U64 | None = None


@instruction(74)
@dataclass(frozen=True, slots=True)
class ResolvePerpBankruptcy:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    market_index: U16


@instruction(75)
@dataclass(frozen=True, slots=True)
class ResolveSpotBankruptcy:
    liquidator_authority: Pubkey
    liquidator_sub_account_id: U16
    user_authority: Pubkey
    user_sub_account_id: U16
    market_index: U16


@instruction(76)
@dataclass(frozen=True, slots=True)
class SetUserStatusToBeingLiquidated:
    user_authority: Pubkey
    user_sub_account_id: U16


_Liquidation = (
    LiquidatePerp
    | LiquidateSpot
    | LiquidateBorrowForPerpPnl
    | LiquidatePerpPnlForDeposit
    | ResolvePerpBankruptcy
    | ResolveSpotBankruptcy
)


def _keys(accounts: Accounts, ix: _Liquidation) -> tuple[UserKey, UserKey]:
    """(user, liquidator) keys, once a signer may act for the liquidator."""
    liquidator_key = (ix.liquidator_authority, ix.liquidator_sub_account_id)
    accounts.authorized_user(liquidator_key)
    return (ix.user_authority, ix.user_sub_account_id), liquidator_key


@handler(LiquidatePerp)
def handle_liquidate_perp(accounts: Accounts, ix: LiquidatePerp) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    liquidate_perp(
        accounts,
        ix.market_index,
        ix.max_base_asset_amount,
        ix.limit_price,
        user_key,
        liquidator_key,
    )


@handler(LiquidateSpot)
def handle_liquidate_spot(accounts: Accounts, ix: LiquidateSpot) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    liquidate_spot(
        accounts,
        ix.asset_market_index,
        ix.liability_market_index,
        ix.max_liability_transfer,
        ix.limit_price,
        user_key,
        liquidator_key,
    )


@handler(LiquidateBorrowForPerpPnl)
def handle_liquidate_borrow_for_perp_pnl(accounts: Accounts, ix: LiquidateBorrowForPerpPnl) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    liquidate_borrow_for_perp_pnl(
        accounts,
        ix.perp_market_index,
        ix.liability_market_index,
        ix.max_liability_transfer,
        ix.limit_price,
        user_key,
        liquidator_key,
    )


@handler(LiquidatePerpPnlForDeposit)
def handle_liquidate_perp_pnl_for_deposit(
    accounts: Accounts, ix: LiquidatePerpPnlForDeposit
) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    liquidate_perp_pnl_for_deposit(
        accounts,
        ix.perp_market_index,
        ix.asset_market_index,
        ix.max_pnl_transfer,
        ix.limit_price,
        user_key,
        liquidator_key,
    )


def _pay_from_insurance_fund(spot_market: SpotMarket, payment: int) -> None:
    """Move ``payment`` tokens from the market's insurance fund vault into its vault; the fund
    must keep at least one token."""
    insurance_fund = spot_market.insurance_fund
    if payment >= insurance_fund.vault_amount:
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"insurance fund balance {insurance_fund.vault_amount} cannot pay {payment}",
        )
    insurance_fund.vault_amount -= payment
    spot_market.vault_amount += payment
    if insurance_fund.vault_amount == 0:
        raise ProtocolError(ErrorCode.InvalidIFDetected, "insurance fund vault must remain > 0")


@handler(ResolvePerpBankruptcy)
def handle_resolve_perp_bankruptcy(accounts: Accounts, ix: ResolvePerpBankruptcy) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    quote_market = accounts.spot_market(QUOTE_SPOT_MARKET_INDEX)
    validate_spot_market_vault_amount(quote_market, quote_market.vault_amount)
    payment = resolve_perp_bankruptcy(
        accounts,
        ix.market_index,
        user_key,
        liquidator_key,
        quote_market.insurance_fund.vault_amount,
    )
    if payment > 0:
        _pay_from_insurance_fund(quote_market, payment)
    validate_spot_market_vault_amount(quote_market, quote_market.vault_amount)


@handler(ResolveSpotBankruptcy)
def handle_resolve_spot_bankruptcy(accounts: Accounts, ix: ResolveSpotBankruptcy) -> None:
    user_key, liquidator_key = _keys(accounts, ix)
    spot_market = accounts.spot_market(ix.market_index)
    validate_spot_market_vault_amount(spot_market, spot_market.vault_amount)
    payment = resolve_spot_bankruptcy(
        accounts,
        ix.market_index,
        user_key,
        liquidator_key,
        spot_market.insurance_fund.vault_amount,
    )
    if payment > 0:
        _pay_from_insurance_fund(spot_market, payment)
    validate_spot_market_vault_amount(spot_market, spot_market.vault_amount)


@handler(SetUserStatusToBeingLiquidated)
def handle_set_user_status_to_being_liquidated(
    accounts: Accounts, ix: SetUserStatusToBeingLiquidated
) -> None:
    set_user_status_to_being_liquidated(accounts, (ix.user_authority, ix.user_sub_account_id))
