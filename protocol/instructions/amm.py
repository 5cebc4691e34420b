"""AMM curve instructions: the permissionless AMM update crank and the admin repeg and k update.

``UpdateAmm`` may be sent by anyone (a keeper): it runs the program's AMM update for one market
(oracle TWAPs, spreads and, with ``curve_update_intensity > 0``, the formulaic repeg toward the
oracle within the fee budget; see :func:`protocol.controller.amm.update_amm`). It succeeds even
when nothing moved, as the program's ``update_amms`` does.

``RepegAmmCurve`` and ``UpdateK`` must be signed by ``state.admin`` (the program's ``has_one =
admin`` accounts constraint); each refuses a delisted market (``MarketDelisted``) and emits a
:class:`~protocol.records.CurveRecord`. Their limits and rejection codes are those of
:func:`protocol.controller.repeg.repeg` and :func:`protocol.controller.repeg.update_k`.

Wire: ``new_peg_candidate`` (PEG_PRECISION) and ``sqrt_k`` (AMM_RESERVE_PRECISION) are ``u128``
as in the program.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import U16, U128
from protocol.controller.amm import update_amm
from protocol.controller.repeg import curve_record, repeg, snapshot_curve, update_k
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.instructions.registry import handler, instruction
from protocol.state.perp_market import PerpMarket
from protocol.types import MarketStatus


@instruction(40)
@dataclass(frozen=True, slots=True)
class UpdateAmm:
    market_index: U16


@instruction(41)
@dataclass(frozen=True, slots=True)
class RepegAmmCurve:
    market_index: U16
    new_peg_candidate: U128


@instruction(42)
@dataclass(frozen=True, slots=True)
class UpdateK:
    market_index: U16
    sqrt_k: U128


def _admin_perp_market(accounts: Accounts, market_index: int) -> PerpMarket:
    accounts.require_signer(accounts.state.admin, "admin")
    market = accounts.perp_market(market_index)
    if market.status == MarketStatus.Delisted:
        raise ProtocolError(ErrorCode.MarketDelisted, "market is delisted", field="market_index")
    return market


@handler(UpdateAmm)
def handle_update_amm(accounts: Accounts, ix: UpdateAmm) -> None:
    clock = accounts.clock
    market = accounts.perp_market(ix.market_index)
    price_data = accounts.oracle_price_data(market.amm.oracle)
    update_amm(market, price_data, accounts.state, clock.unix_timestamp, clock.slot)


@handler(RepegAmmCurve)
def handle_repeg_amm_curve(accounts: Accounts, ix: RepegAmmCurve) -> None:
    market = _admin_perp_market(accounts, ix.market_index)
    price_data = accounts.oracle_price_data(market.amm.oracle)
    before = snapshot_curve(market.amm)
    adjustment_cost = repeg(
        market, price_data, ix.new_peg_candidate, accounts.state.oracle_guard_rails
    )
    accounts.emit(
        curve_record(
            market,
            before,
            adjustment_cost,
            price_data.price,
            accounts.clock.unix_timestamp,
            market.number_of_users,
            market.next_fill_record_id,
        )
    )


@handler(UpdateK)
def handle_update_k(accounts: Accounts, ix: UpdateK) -> None:
    market = _admin_perp_market(accounts, ix.market_index)
    price_data = accounts.oracle_price_data(market.amm.oracle)
    # the program reads the user count before the change
    number_of_users = market.number_of_users_with_base
    before = snapshot_curve(market.amm)
    adjustment_cost = update_k(market, ix.sqrt_k)
    accounts.emit(
        curve_record(
            market,
            before,
            adjustment_cost,
            price_data.price,
            accounts.clock.unix_timestamp,
            number_of_users,
            0,
        )
    )
