"""The AMM crank and admin curve instructions through signed transactions and
:meth:`Program.execute`: who may send them, what they change, their records, and that a
rejected one leaves the state bit-for-bit unchanged.

Units: peg PEG_PRECISION (1e6), prices PRICE_PRECISION, reserves AMM_RESERVE_PRECISION (1e9),
costs QUOTE_PRECISION (1e6).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import RepegAmmCurve, UpdateAmm, UpdateK
from protocol.math.amm import bid_ask_price, calculate_bid_ask_bounds, reserve_price
from protocol.program import Executed, Program
from protocol.records import CurveRecord
from protocol.state_hash import state_hash
from protocol.types import MarketStatus
from tests.protocol.world import SOL_PERP, World, keypair, make_state

A = AMM_RESERVE_PRECISION
ADMIN = keypair(9)
KEEPER = keypair(10)
MALLORY = keypair(11)


def _world(**amm_changes: Any) -> World:
    """The test exchange with ``ADMIN`` as admin and the SOL perp's AMM changed as given;
    the curve is a valid one (sqrt(2) concentration, bounds around its terminal state)."""
    state = make_state()
    state.state = replace(state.state, admin=ADMIN.pubkey)
    amm = state.perp_markets[SOL_PERP].amm
    amm.concentration_coef = MAX_CONCENTRATION_COEFFICIENT
    for name, value in amm_changes.items():
        setattr(amm, name, value)
    # bounds around the balanced (terminal) reserve, as the program initialises them
    amm.min_base_asset_reserve, amm.max_base_asset_reserve = calculate_bid_ask_bounds(
        amm.concentration_coef, amm.sqrt_k
    )
    return World(program=Program(state))


def _net_short_world(**amm_changes: Any) -> World:
    """Users net short 100 SOL of a 1000-unit curve pegged at $100: base 1100e9, quote
    1e24 // 1100e9 = 909090909090; closing the short returns the curve to balance."""
    return _world(
        base_asset_reserve=1100 * A,
        quote_asset_reserve=909090909090,
        sqrt_k=1000 * A,
        terminal_quote_asset_reserve=1000 * A,
        peg_multiplier=100 * PEG_PRECISION,
        base_asset_amount_with_amm=-100 * A,
        base_asset_amount_short=-100 * A,
        **amm_changes,
    )


def _rejected(world: World, ix: Any, signer: Any, code: ErrorCode) -> None:
    before = state_hash(world.program.state, 0)
    result = world.send(ix, signers=(signer,))
    assert isinstance(result, Rejected), result
    assert result.code == code, result
    assert state_hash(world.program.state, 0) == before


def _curve_records(result: Executed) -> list[CurveRecord]:
    return [r.record for r in result.records if isinstance(r.record, CurveRecord)]


# --- UpdateAmm -------------------------------------------------------------------------------


def test_any_keeper_can_crank_the_formulaic_repeg() -> None:
    world = _world(curve_update_intensity=100, base_spread=1000, max_spread=20_000)
    world.advance()
    world.set_price("SOL/USD", 105 * PRICE_PRECISION)
    result = world.ok(UpdateAmm(SOL_PERP), signers=(KEEPER,))
    assert result.records == ()
    amm = world.program.state.perp_markets[SOL_PERP].amm
    # no net position: the repeg is free, so the peg goes straight to the oracle
    # (105e6 * 10_000e9 / 10_000e9, rounded half up over PRICE_TO_PEG 1)
    assert amm.peg_multiplier == 105 * PEG_PRECISION
    assert reserve_price(amm) == 105 * PRICE_PRECISION
    assert amm.total_fee_minus_distributions == 0
    assert amm.last_update_slot == world.slot
    assert amm.last_oracle_valid
    assert amm.historical_oracle_data.last_oracle_price == 105 * PRICE_PRECISION
    bid, ask = bid_ask_price(amm, reserve_price(amm))
    assert bid < reserve_price(amm) < ask


def test_crank_without_curve_intensity_only_refreshes_spreads() -> None:
    world = _world(base_spread=1000)
    world.advance()
    world.set_price("SOL/USD", 105 * PRICE_PRECISION)
    world.ok(UpdateAmm(SOL_PERP), signers=(KEEPER,))
    amm = world.program.state.perp_markets[SOL_PERP].amm
    assert amm.peg_multiplier == 100 * PEG_PRECISION
    # half the base spread each side: $100 * (1 -+ 0.0005)
    assert (amm.long_spread, amm.short_spread) == (500, 500)
    assert bid_ask_price(amm, reserve_price(amm)) == (99_950_000, 100_050_000)
    # ask reserve: 10_000e9 + 10_000e9 / (1e6 / 250) = 10_002_500_000_000
    assert amm.ask_quote_asset_reserve == 10_002_500_000_000
    assert amm.last_update_slot == world.slot


def test_crank_of_an_unknown_market_is_rejected() -> None:
    world = _world()
    _rejected(world, UpdateAmm(7), KEEPER, ErrorCode.UnknownMarket)


# --- RepegAmmCurve ---------------------------------------------------------------------------


def test_admin_repeg_moves_the_peg_and_books_the_cost() -> None:
    world = _net_short_world()
    world.advance()
    world.set_price("SOL/USD", 102 * PRICE_PRECISION)
    result = world.ok(RepegAmmCurve(SOL_PERP, 101 * PEG_PRECISION), signers=(ADMIN,))
    # buying the short back costs (1e12 - 909090909090 + 1) = 90909090911 reserve units:
    # 90909090911 * 100 // 1000 + 1 = 9090909092 at the old peg,
    # 90909090911 * 101 // 1000 + 1 = 9181818183 at the new: users lose 90909091
    [record] = _curve_records(result)
    assert record.adjustment_cost == -90909091
    assert (record.peg_multiplier_before, record.peg_multiplier_after) == (
        100 * PEG_PRECISION,
        101 * PEG_PRECISION,
    )
    assert (record.base_asset_reserve_after, record.quote_asset_reserve_after) == (
        1100 * A,
        909090909090,
    )
    assert record.sqrt_k_before == record.sqrt_k_after == 1000 * A
    assert (record.base_asset_amount_short, record.base_asset_amount_with_amm) == (
        100 * A,
        -100 * A,
    )
    assert record.oracle_price == 102 * PRICE_PRECISION
    assert (record.record_id, record.fill_record, record.ts) == (1, 1, world.ts)
    market = world.program.state.perp_markets[SOL_PERP]
    assert market.amm.peg_multiplier == 101 * PEG_PRECISION
    assert market.amm.total_fee_minus_distributions == 90909091
    assert market.next_curve_record_id == 2


@pytest.mark.parametrize(
    ("price", "confidence", "new_peg", "code"),
    [
        (102, 0, 100, ErrorCode.InvalidRepegRedundant),
        (102, 0, 99, ErrorCode.InvalidRepegDirection),  # away from the oracle
        (102, 2, 101, ErrorCode.InvalidRepegProfitability),  # into the band [100, 104]
        (102, 0, 103, ErrorCode.InvalidRepegDirection),  # past the oracle
    ],
)
def test_admin_repeg_rejections(price: int, confidence: int, new_peg: int, code: ErrorCode) -> None:
    world = _net_short_world()
    world.advance()
    world.set_price("SOL/USD", price * PRICE_PRECISION, confidence * PRICE_PRECISION)
    _rejected(world, RepegAmmCurve(SOL_PERP, new_peg * PEG_PRECISION), ADMIN, code)


def test_repeg_with_a_stale_oracle_is_rejected() -> None:
    world = _net_short_world()
    world.set_price("SOL/USD", 102 * PRICE_PRECISION)
    world.advance()  # published a slot ago: not Valid for a repeg
    _rejected(world, RepegAmmCurve(SOL_PERP, 101 * PEG_PRECISION), ADMIN, ErrorCode.InvalidOracle)


def test_only_the_admin_repegs() -> None:
    world = _net_short_world()
    world.advance()
    world.set_price("SOL/USD", 102 * PRICE_PRECISION)
    ix = RepegAmmCurve(SOL_PERP, 101 * PEG_PRECISION)
    _rejected(world, ix, MALLORY, ErrorCode.UnauthorizedSigner)
    _rejected(world, ix, KEEPER, ErrorCode.UnauthorizedSigner)


# --- UpdateK ----------------------------------------------------------------------------------


def test_admin_raises_k_paid_from_fees() -> None:
    world = _net_short_world(total_fee_minus_distributions=100 * QUOTE_PRECISION)
    result = world.ok(UpdateK(SOL_PERP, 1100 * A), signers=(ADMIN,))
    # +10%: base 1100e9 * 1.1 = 1210e9, quote 1.21e24 // 1210e9 = 1e12; buying the short back
    # then moves quote to 1.21e24 // 1110e9 = 1090090090090:
    # (1090090090090 - 1e12 + 1) * 100 // 1000 + 1 = 9009009010 against 9090909092 before
    [record] = _curve_records(result)
    assert record.adjustment_cost == 9090909092 - 9009009010 == 81900082
    assert (record.sqrt_k_before, record.sqrt_k_after) == (1000 * A, 1100 * A)
    assert (record.base_asset_reserve_after, record.quote_asset_reserve_after) == (1210 * A, 10**12)
    assert record.total_fee_minus_distributions == 100 * QUOTE_PRECISION - 81900082
    assert (record.fill_record, record.oracle_price) == (0, 100 * PRICE_PRECISION)
    amm = world.program.state.perp_markets[SOL_PERP].amm
    assert amm.terminal_quote_asset_reserve == 1090090090090
    assert reserve_price(amm) == 82644628  # unchanged: 1e12 * 1e8 // 1210e9


def test_admin_lowers_k_and_the_market_earns() -> None:
    world = _net_short_world()
    result = world.ok(UpdateK(SOL_PERP, 900 * A), signers=(ADMIN,))
    # -10% (ratio 900000001 when shrinking): base 990000001100, quote 818181817272; buying back
    # moves quote to 8.1e23 // 890000001100 = 910112358425: 9193054116 against 9090909092
    [record] = _curve_records(result)
    assert record.adjustment_cost == -102145024
    amm = world.program.state.perp_markets[SOL_PERP].amm
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (990000001100, 818181817272)
    assert amm.total_fee_minus_distributions == 102145024


@pytest.mark.parametrize(
    ("sqrt_k", "signer", "code"),
    [
        (1100 * A, ADMIN, ErrorCode.InvalidUpdateK),  # no fees to pay for a deeper curve
        (499 * A, ADMIN, ErrorCode.InvalidUpdateK),  # more than halves k
        (900 * A, MALLORY, ErrorCode.UnauthorizedSigner),
    ],
)
def test_update_k_rejections(sqrt_k: int, signer: Any, code: ErrorCode) -> None:
    world = _net_short_world()
    _rejected(world, UpdateK(SOL_PERP, sqrt_k), signer, code)


def test_delisted_markets_take_no_curve_changes() -> None:
    state = make_state()
    state.state = replace(state.state, admin=ADMIN.pubkey)
    state.perp_markets[SOL_PERP].status = MarketStatus.Delisted
    world = World(program=Program(state))
    _rejected(world, UpdateK(SOL_PERP, 11_000 * A), ADMIN, ErrorCode.MarketDelisted)
    _rejected(world, RepegAmmCurve(SOL_PERP, 101 * PEG_PRECISION), ADMIN, ErrorCode.MarketDelisted)
    # the crank is a no-op on a delisted market, as the program's
    before = state_hash(world.program.state, 0)
    world.ok(UpdateAmm(SOL_PERP), signers=(KEEPER,))
    assert state_hash(world.program.state, 0) == before
