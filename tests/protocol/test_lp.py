"""BAL providers (:mod:`protocol.controller.lp`, :mod:`protocol.instructions.lp`): the per-LP
split of AMM fills, settlement, share minting and burning with the remainder charge, the
cooldown, funding on unsettled positions, the instructions through signed transactions and
an AMM fill shared with an LP, and a property test that base is conserved.

Vectors marked "program" reproduce the inputs and outputs of the program's
``controller/lp/tests.rs`` and ``controller/position/tests.rs`` (versions with BAL providers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    BASE_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.controller.funding import settle_funding_payment
from protocol.controller.lp import (
    add_perp_lp_shares,
    burn_lp_shares,
    mint_lp_shares,
    remove_perp_lp_shares,
    settle_lp,
    settle_lp_position,
    update_lp_market_position,
)
from protocol.controller.position import (
    update_position_and_market,
    update_position_with_base_asset_amount,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError, Rejected
from protocol.instructions import Deposit, FillPerpOrder, PlacePerpOrder
from protocol.instructions.lp import AddPerpLpShares, RemovePerpLpShares, SettleLp
from protocol.math.amm import calculate_bid_ask_bounds, calculate_terminal_reserves, reserve_price
from protocol.math.amm_spread import update_spreads
from protocol.math.lp import calculate_settled_lp_base_quote
from protocol.math.orders import PositionDelta
from protocol.program import Executed, Program
from protocol.records import FundingPaymentRecord, LPRecord
from protocol.state import OrderParams
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import PerpPosition, User
from protocol.state_hash import state_hash
from protocol.types import MarketStatus, MarketType, OrderType, PositionDirection
from tests.protocol.world import SOL_PERP, USDC, USDC_UNIT, World, keypair, make_state

R = AMM_RESERVE_PRECISION
B = BASE_PRECISION
Q = QUOTE_PRECISION
P = PRICE_PRECISION
LONG = PositionDirection.Long
SHORT = PositionDirection.Short
STEP = B // 100  # SOL-PERP's order step, 0.01


def _market(**amm_fields: Any) -> PerpMarket:
    # the program's AMM::default_test: 100 / 100 reserves, peg 1, the widest concentration
    fields: dict[str, Any] = {
        "oracle": "SOL/USD",
        "base_asset_reserve": 100 * R,
        "quote_asset_reserve": 100 * R,
        "sqrt_k": 100 * R,
        "terminal_quote_asset_reserve": 100 * R,
        "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        "max_base_asset_reserve": 2**64 - 1,
        "peg_multiplier": PEG_PRECISION,
        "order_step_size": 1,
        "max_spread": 1_000,
        **amm_fields,
    }
    return PerpMarket(market_index=0, name="SOL-PERP", amm=AMM(**fields))


def _user(n: int) -> User:
    return User(authority=bytes([n]) * 32)


# --- the per-LP split of a fill -------------------------------------------------------------------
def test_program_amm_split_without_lps_leaves_the_amm_position() -> None:
    # program (full_amm_split): no LP shares -> nothing moves
    market = _market(base_asset_amount_with_amm=10 * B)
    delta = PositionDelta(quote_asset_amount=-10 * B, base_asset_amount=10 * B)
    assert update_lp_market_position(market, delta, 0) == 0
    amm = market.amm
    assert (amm.base_asset_amount_with_amm, amm.base_asset_amount_with_unsettled_lp) == (10 * B, 0)
    assert (amm.base_asset_amount_per_lp, amm.quote_asset_amount_per_lp) == (0, 0)


def test_program_full_and_half_lp_split() -> None:
    # program (full_lp_split): all of sqrt_k 100 is LPs'; a user long 10 for -10 (1e9 units):
    # per share base -10e9 / 100 = -1e8, quote +1e8; the AMM's 10 moves to the LPs
    delta = PositionDelta(quote_asset_amount=-10 * B, base_asset_amount=10 * B)
    full = _market(user_lp_shares=100 * R, base_asset_amount_with_amm=10 * B)
    assert update_lp_market_position(full, delta, 0) == 10 * B
    amm = full.amm
    assert (amm.base_asset_amount_per_lp, amm.quote_asset_amount_per_lp) == (-B // 10, B // 10)
    assert (amm.base_asset_amount_with_amm, amm.base_asset_amount_with_unsettled_lp) == (0, 10 * B)
    # program (half_half_amm_lp_split): 100 of sqrt_k 200 -> 5 each
    half = _market(user_lp_shares=100 * R, sqrt_k=200 * R, base_asset_amount_with_amm=10 * B)
    update_lp_market_position(half, delta, 0)
    assert (half.amm.base_asset_amount_with_amm, half.amm.base_asset_amount_with_unsettled_lp) == (
        5 * B,
        5 * B,
    )


def test_seed_short_at_100_plus_one_dollar_fee_has_cost_basis_101() -> None:
    # seed 004: the LP owns all 100 of sqrt_k; a user buys 1 SOL from the AMM for $100 and the
    # fee to the market is $1.25, of which 80% = $1 goes to the LPs.
    # per share: base 1e9 * 1e9 / 100e9 = 1e7 (LP: -1e7), quote 100e6 * 1e9 / 100e9 = 1e6,
    # fee 1_000_000 * 1e9 / 100e9 = 10_000 -> quote per share 1_010_000.
    market = _market(
        user_lp_shares=100 * R,
        base_asset_amount_long=B,
        base_asset_amount_with_amm=B,
        order_step_size=STEP,
    )
    lp = PerpPosition(0, lp_shares=100 * R)
    update_lp_market_position(
        market, PositionDelta(quote_asset_amount=-100 * Q, base_asset_amount=B), 1_250_000
    )
    assert (market.amm.base_asset_amount_per_lp, market.amm.quote_asset_amount_per_lp) == (
        -10_000_000,
        1_010_000,
    )
    # settled: -1e7 * 100 = 1 SOL short, 1_010_000 * 100 = $101 received: cost basis $101
    delta, pnl = settle_lp_position(lp, market)
    assert (delta.base_asset_amount, delta.quote_asset_amount, pnl) == (-B, 101 * Q, 0)
    assert (lp.base_asset_amount, lp.quote_asset_amount, lp.quote_entry_amount) == (
        -B,
        101 * Q,
        101 * Q,
    )
    assert lp.quote_entry_amount * B // -lp.base_asset_amount == 101 * Q  # $ per SOL
    amm = market.amm
    assert (amm.base_asset_amount_with_amm, amm.base_asset_amount_with_unsettled_lp) == (0, 0)
    assert amm.base_asset_amount_long + amm.base_asset_amount_short == 0


def test_seed_fee_slice_full_and_half_collateralised() -> None:
    # seed 004: a user buys 10 SOL for $1,000; the fee to the market after the filler reward
    # is $1 (10 bps). sqrt_k 200.
    # Fully LP-collateralised (200 shares): the LPs get 800_000 * 1e9 / 200e9 = 4_000 per
    # share -> $0.80 (8 bps) and all 10 SOL short, quote 1_000e6 * 1e9 / 200e9 = 5e6 per share
    # -> $1,000 + $0.80.
    # Half (100 shares): $0.40 (4 bps) and half the position, 5 SOL for $500.
    delta = PositionDelta(quote_asset_amount=-1_000 * Q, base_asset_amount=10 * B)
    results = []
    for lp_shares in (200 * R, 100 * R):
        market = _market(
            sqrt_k=200 * R,
            base_asset_reserve=200 * R,
            quote_asset_reserve=200 * R,
            user_lp_shares=lp_shares,
            base_asset_amount_long=10 * B,
            base_asset_amount_with_amm=10 * B,
        )
        lp = PerpPosition(0, lp_shares=lp_shares)
        update_lp_market_position(market, delta, Q)
        settle_lp_position(lp, market)
        results.append((lp.base_asset_amount, lp.quote_asset_amount))
    assert results == [(-10 * B, 1_000_800_000), (-5 * B, 500_400_000)]


# --- settlement -----------------------------------------------------------------------------------
def test_program_full_long_settle_then_burn() -> None:
    # program (test_full_long_settle): mint 1 share, per-share +10 / -10 -> long 10 for -10;
    # burning every share restores sqrt_k
    market = _market()
    position = PerpPosition(0)
    mint_lp_shares(position, market, B)
    assert (market.amm.sqrt_k, market.amm.user_lp_shares, position.lp_shares) == (101 * R, B, B)
    market.amm.base_asset_amount_per_lp = 10
    market.amm.quote_asset_amount_per_lp = -10
    market.amm.base_asset_amount_with_unsettled_lp = -10
    market.amm.base_asset_amount_short = -10
    settle_lp_position(position, market)
    assert (position.last_base_asset_amount_per_lp, position.last_quote_asset_amount_per_lp) == (
        10,
        -10,
    )
    assert (position.base_asset_amount, position.quote_asset_amount) == (10, -10)
    assert market.amm.base_asset_amount_with_unsettled_lp == 0
    assert market.amm.base_asset_amount_with_amm == 0  # the AMM's own position did not move
    burn_lp_shares(position, market, position.lp_shares, 0)
    assert (position.lp_shares, market.amm.sqrt_k, market.amm.user_lp_shares) == (0, 100 * R, 0)


def test_program_partial_short_settle_keeps_the_remainder() -> None:
    # program (test_partial_short_settle): step 3, per-share -10 / +10 on 1 share -> -10 base:
    # -9 settles, -1 stays as remainder; the users' 10 against unsettled LPs drop to 1
    market = _market(order_step_size=3)
    position = PerpPosition(0)
    mint_lp_shares(position, market, B)
    market.amm.base_asset_amount_per_lp = -10
    market.amm.quote_asset_amount_per_lp = 10
    market.amm.base_asset_amount_with_unsettled_lp = 10
    market.amm.base_asset_amount_long = 10
    settle_lp_position(position, market)
    assert (position.base_asset_amount, position.quote_asset_amount) == (-9, 10)
    assert position.remainder_base_asset_amount == -1
    assert market.amm.base_asset_amount_with_unsettled_lp == 1
    # the last LP out closes its -1 remainder against the AMM
    burn_lp_shares(position, market, position.lp_shares, 0)
    assert position.lp_shares == 0
    amm = market.amm
    assert (amm.base_asset_amount_with_unsettled_lp, amm.base_asset_amount_with_amm) == (0, 1)


def test_program_remainder_burned_at_the_oracle_price() -> None:
    # program (test_remainder_long_settle_too_large_order_step_size): step 5 SOL, 10 units of
    # base all remainder, quote -10. Burning at price 22: 10 * 22 / 1e9 = 0, +1 -> quote -11.
    market = _market(order_step_size=5 * B)
    position = PerpPosition(0)
    mint_lp_shares(position, market, B)
    market.amm.base_asset_amount_per_lp = 10
    market.amm.quote_asset_amount_per_lp = -10
    market.amm.base_asset_amount_with_unsettled_lp = -10
    market.amm.base_asset_amount_short = -10
    settle_lp_position(position, market)
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -10)
    assert position.remainder_base_asset_amount == 10
    assert market.amm.base_asset_amount_with_unsettled_lp == -10
    delta, pnl = burn_lp_shares(position, market, position.lp_shares, 22)
    assert (position.quote_asset_amount, position.base_asset_amount) == (-11, 0)
    assert position.remainder_base_asset_amount == 0
    assert (delta.quote_asset_amount, pnl) == (-1, -1)
    assert market.amm.sqrt_k == 100 * R


def test_program_large_remainder_and_the_i32_limit() -> None:
    # program (test_remainder_overflows_too_large_order_step_size and
    # test_remainder_burn_large_order_step_size): step 5 SOL; per-share +1e9 + 1 on 1 share
    # is all remainder, 1_000_000_001, which fits the i32; moving to 3e9 + 1 would carry
    # 3_000_000_001 > 2_147_483_647 and the settle fails. Burning the 1_000_000_001 at price 22
    # charges 1_000_000_001 * 22 / 1e9 = 22, +1 = 23.
    market = _market(order_step_size=5 * B)
    position = PerpPosition(0)
    mint_lp_shares(position, market, B)
    market.amm.base_asset_amount_per_lp = B + 1
    market.amm.quote_asset_amount_per_lp = -16_900_000_000
    market.amm.base_asset_amount_with_unsettled_lp = -(B + 1)
    market.amm.base_asset_amount_short = -(B + 1)
    settle_lp_position(position, market)
    assert (position.base_asset_amount, position.remainder_base_asset_amount) == (0, 1_000_000_001)
    assert position.quote_asset_amount == -16_900_000_000

    too_far = market.clone()
    too_far.amm.base_asset_amount_per_lp = 3 * B + 1
    with pytest.raises(ProtocolError) as exc:
        settle_lp_position(PerpPosition(**_fields(position)), too_far)
    assert exc.value.code == ErrorCode.CastingFailure

    burn_lp_shares(position, market, position.lp_shares, 22)
    assert (position.quote_asset_amount, position.remainder_base_asset_amount) == (
        -16_900_000_023,
        0,
    )


def _fields(position: PerpPosition) -> dict[str, Any]:
    return {name: getattr(position, name) for name in PerpPosition.__slots__}


def test_program_lp_wont_settle_with_unsettled_funding() -> None:
    # program (test_lp_wont_collect_improper_funding): a long whose funding is behind the
    # market's cumulative rate cannot settle its LP slice
    market = _market()
    position = PerpPosition(0, base_asset_amount=1)
    mint_lp_shares(position, market, B)
    market.amm.base_asset_amount_per_lp = 10
    market.amm.cumulative_funding_rate_long = -10
    with pytest.raises(ProtocolError) as exc:
        settle_lp_position(position, market)
    assert exc.value.code == ErrorCode.InvalidPerpPositionDetected


# --- seed 004: the remainder burn -----------------------------------------------------------------
def test_seed_sub_step_remainder_is_charged_at_the_oracle_price() -> None:
    # SOL-PERP step 0.01. The LP owns 99 of sqrt_k 100; a user buys 0.01 SOL for $1:
    # per share 1e7 * 1e9 / 100e9 = 100_000 base and 1e6 * 1e9 / 100e9 = 10_000 quote;
    # the LPs take 100_000 * 99e9 / 1e9 = 9_900_000 = 0.0099 SOL short, for $0.99.
    market = _market(order_step_size=STEP, base_asset_amount_long=STEP)
    market.amm.base_asset_amount_with_amm = STEP  # the user's side of the fill
    market.amm.user_lp_shares = 99 * R
    lp_user = _user(7)
    lp = lp_user.force_get_perp_position_mut(0)
    lp.lp_shares = 99 * R
    update_lp_market_position(
        market, PositionDelta(quote_asset_amount=-Q, base_asset_amount=STEP), 0
    )
    assert market.amm.base_asset_amount_with_unsettled_lp == 9_900_000
    # burning every share at $100: the -0.0099 is below a step, so it is charged at cost,
    # 0.0099 * $100 = 990_000, +1 unit against the LP; the LP had received 990_000
    records = remove_perp_lp_shares(lp_user, market, 99 * R, 100 * P, 1_000, 30)
    assert (lp.base_asset_amount, lp.quote_asset_amount, lp.remainder_base_asset_amount) == (
        0,
        -1,
        0,
    )
    [record] = records
    assert isinstance(record, LPRecord)
    assert (record.action, record.n_shares) == ("remove_liquidity", 99 * R)
    assert (record.delta_base_asset_amount, record.delta_quote_asset_amount, record.pnl) == (
        0,
        -1,
        -1,
    )
    # the AMM takes the 0.0099 back: the users' 0.01 long is all against it again
    amm = market.amm
    assert (amm.base_asset_amount_with_amm, amm.base_asset_amount_with_unsettled_lp) == (STEP, 0)
    assert (amm.sqrt_k, amm.user_lp_shares) == (R, 0)


# --- imbalance ------------------------------------------------------------------------------------
def test_burning_is_blocked_when_k_would_fall_below_the_users_net_position() -> None:
    # users are 20 long against the AMM; the LP holds 90 of sqrt_k 100. Burning all 90 would
    # leave sqrt_k 10 < 20: refused. Burning 50 leaves 50 > 20.
    market = _market(
        base_asset_amount_long=20 * B,
        base_asset_amount_with_amm=20 * B,
        user_lp_shares=90 * R,
    )
    lp_user = _user(8)
    lp_user.force_get_perp_position_mut(0).lp_shares = 90 * R
    blocked = market.clone()
    with pytest.raises(ProtocolError) as exc:
        remove_perp_lp_shares(lp_user.clone(), blocked, 90 * R, P, 100, 30)
    assert exc.value.code == ErrorCode.InvalidUpdateK
    remove_perp_lp_shares(lp_user, market, 50 * R, P, 100, 30)
    assert (market.amm.sqrt_k, market.amm.user_lp_shares) == (50 * R, 40 * R)


def test_remove_rejects_more_shares_than_held_and_unknown_positions() -> None:
    market = _market(user_lp_shares=10 * R)
    lp_user = _user(9)
    lp_user.force_get_perp_position_mut(0).lp_shares = 10 * R
    with pytest.raises(ProtocolError) as exc:
        remove_perp_lp_shares(lp_user, market, 11 * R, P, 100, 30)
    assert exc.value.code == ErrorCode.InsufficientLPTokens
    with pytest.raises(ProtocolError) as exc:
        remove_perp_lp_shares(_user(10), market, R, P, 100, 30)
    assert exc.value.code == ErrorCode.UserHasNoPositionInMarket


def test_add_requires_an_active_market_and_a_step_of_shares() -> None:
    market = _market(order_step_size=STEP)
    with pytest.raises(ProtocolError) as exc:
        add_perp_lp_shares(_user(11), market, STEP - 1, 0)
    assert exc.value.code == ErrorCode.NewLPSizeTooSmall
    market.status = MarketStatus.ReduceOnly
    with pytest.raises(ProtocolError) as exc:
        add_perp_lp_shares(_user(11), market, STEP, 0)
    assert exc.value.code == ErrorCode.MarketStatusInvalidForNewLP


def test_add_rounds_shares_down_to_the_step_and_starts_the_cooldown() -> None:
    # 1.015 shares with step 0.01 -> 1.01 minted; sqrt_k 100 -> 101.01
    market = _market(order_step_size=STEP)
    user = _user(12)
    [record] = add_perp_lp_shares(user, market, 1_015_000_000, 1_234)
    assert isinstance(record, LPRecord)
    assert (record.action, record.n_shares) == ("add_liquidity", 1_010_000_000)
    assert (market.amm.sqrt_k, market.amm.user_lp_shares) == (101_010_000_000, 1_010_000_000)
    assert user.last_add_perp_lp_shares_ts == 1_234


# --- seed 004: funding ----------------------------------------------------------------------------
def test_seed_unsettled_lp_positions_earn_no_funding() -> None:
    # The LP owns all of sqrt_k 100 (step 0.01). A user buys 1 SOL for $100: the LP holds an
    # unsettled 1 SOL short. The cumulative funding rates then rise by 1e9 (longs pay
    # shorts $1 per SOL): the user pays $1, the unsettled LP receives nothing.
    market = _market(order_step_size=STEP, user_lp_shares=100 * R)
    trader, lp_user = _user(20), _user(21)
    fill = PositionDelta(quote_asset_amount=-100 * Q, base_asset_amount=B)
    update_position_and_market(trader.force_get_perp_position_mut(0), market, fill)
    market.amm.base_asset_amount_with_amm += B
    update_lp_market_position(market, fill, 0)
    lp_user.force_get_perp_position_mut(0).lp_shares = 100 * R
    assert market.amm.base_asset_amount_with_unsettled_lp == B

    market.amm.cumulative_funding_rate_long += 1_000_000_000
    market.amm.cumulative_funding_rate_short += 1_000_000_000
    trader_record = settle_funding_payment(trader, trader.key, market, 10)
    assert isinstance(trader_record, FundingPaymentRecord)
    assert trader_record.funding_payment == -Q
    assert settle_funding_payment(lp_user, lp_user.key, market, 10) is None

    # settling opens the short at the current rate: no retroactive funding
    record = settle_lp(lp_user, lp_user.key, market, 11)
    assert isinstance(record, LPRecord)
    lp = lp_user.perp_positions[0]
    assert (lp.base_asset_amount, lp.quote_asset_amount) == (-B, 100 * Q)
    assert lp.last_cumulative_funding_rate == 1_000_000_000
    assert settle_funding_payment(lp_user, lp_user.key, market, 12) is None

    # from now on it earns funding like any short: another +1e9 pays it $1
    market.amm.cumulative_funding_rate_short += 1_000_000_000
    lp_record = settle_funding_payment(lp_user, lp_user.key, market, 13)
    assert isinstance(lp_record, FundingPaymentRecord)
    assert lp_record.funding_payment == Q


# --- instructions through signed transactions -----------------------------------------------------
LP = keypair(61)
TAKER = keypair(62)
FILLER = keypair(63)
KEEPER = keypair(64)


def _lp_world(lp_usdc: int = 25_001) -> World:
    # World's SOL-PERP (10_000 / 10_000 reserves at $100, step 0.01, initial margin 10%) with
    # a 1.25 concentration coefficient: bounds 10_000 / 1.25 = 8_000 and 10_000 * 1.25 = 12_500
    state = make_state()
    amm = state.perp_markets[SOL_PERP].amm
    amm.concentration_coef = 1_250_000
    amm.min_base_asset_reserve = 8_000 * R
    amm.max_base_asset_reserve = 12_500 * R
    w = World(program=Program(state))
    w.new_user(LP, usdc=lp_usdc * USDC_UNIT)
    w.new_user(TAKER, usdc=20_000 * USDC_UNIT)
    w.new_user(FILLER)
    w.new_user(KEEPER)
    return w


def _records(result: Executed | Rejected) -> list[Any]:
    assert isinstance(result, Executed), result
    return [r.record for r in result.records]


def _lp_position(w: World) -> PerpPosition:
    position = w.program.state.users[(LP.pubkey, 0)].get_perp_position(SOL_PERP)
    assert position is not None
    return position


def test_adding_shares_needs_initial_margin_for_the_lp_open_orders() -> None:
    # Adding 10_000 shares doubles sqrt_k (ratio exactly 2): reserves 20_000 / 20_000, bounds
    # 20_000 / 1.25 = 16_000 and 20_000 * 1.25 = 25_000. The LP's half of the liquidity stands
    # for bids (20_000 - 16_000) / 2 = 2_000 and asks (25_000 - 20_000) / 2 = 2_500 SOL; the
    # worst case is 2_500 SOL = $250_000, 10% = $25_000, plus the $1 LP minimum: $25_001.
    w = _lp_world(lp_usdc=25_000)
    before = state_hash(w.program.state, w.program.next_seq)
    result = w.send(AddPerpLpShares(LP.pubkey, 0, SOL_PERP, 10_000 * R), signers=(LP,))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.InsufficientCollateral
    assert state_hash(w.program.state, w.program.next_seq) == before

    w.ok(Deposit(LP.pubkey, 0, USDC, USDC_UNIT), signers=(LP,))
    [record] = _records(w.send(AddPerpLpShares(LP.pubkey, 0, SOL_PERP, 10_000 * R), signers=(LP,)))
    assert isinstance(record, LPRecord)
    assert (record.action, record.n_shares, record.ts) == ("add_liquidity", 10_000 * R, w.ts)
    amm = w.program.state.perp_markets[SOL_PERP].amm
    assert (amm.sqrt_k, amm.base_asset_reserve, amm.quote_asset_reserve) == (
        20_000 * R,
        20_000 * R,
        20_000 * R,
    )
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (16_000 * R, 25_000 * R)
    assert amm.user_lp_shares == 10_000 * R
    assert _lp_position(w).lp_shares == 10_000 * R


def test_only_the_user_may_add_or_remove_shares() -> None:
    w = _lp_world()
    result = w.send(AddPerpLpShares(LP.pubkey, 0, SOL_PERP, R), signers=(KEEPER,))
    assert isinstance(result, Rejected) and result.code == ErrorCode.UnauthorizedSigner
    result = w.send(RemovePerpLpShares(LP.pubkey, 0, SOL_PERP, R), signers=(KEEPER,))
    assert isinstance(result, Rejected) and result.code == ErrorCode.UnauthorizedSigner


def test_seed_cooldown_of_30_seconds_after_adding() -> None:
    w = _lp_world()
    w.ok(AddPerpLpShares(LP.pubkey, 0, SOL_PERP, 100 * R), signers=(LP,))
    added_at = w.ts
    w.advance(slots=70, seconds=29)
    result = w.send(RemovePerpLpShares(LP.pubkey, 0, SOL_PERP, 100 * R), signers=(LP,))
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.TryingToRemoveLiquidityTooFast
    w.advance(slots=3, seconds=1)
    assert w.ts - added_at == 30
    [record] = _records(w.send(RemovePerpLpShares(LP.pubkey, 0, SOL_PERP, 100 * R), signers=(LP,)))
    assert isinstance(record, LPRecord)
    assert (record.action, record.n_shares) == ("remove_liquidity", 100 * R)
    amm = w.program.state.perp_markets[SOL_PERP].amm
    assert (amm.sqrt_k, amm.user_lp_shares) == (10_000 * R, 0)
    # nothing left in the position: it leaves the account
    assert w.program.state.users[(LP.pubkey, 0)].get_perp_position(SOL_PERP) is None


def _auction_buy() -> OrderParams:
    # a market buy of 1 SOL whose auction runs $100.00 -> $100.20 over 20 slots, limit $100.60
    return OrderParams(
        OrderType.Market,
        MarketType.Perp,
        LONG,
        B,
        SOL_PERP,
        price=100_600_000,
        auction_duration=20,
        auction_start_price=100 * P,
        auction_end_price=100_200_000,
    )


def _step(w: World, slots: int) -> None:
    w.advance(slots)
    w.set_price("SOL/USD", 100 * P, 100 * P // 1000)


def test_amm_fill_shared_with_an_lp_then_settled_by_a_keeper_and_removed() -> None:
    w = _lp_world()
    w.ok(AddPerpLpShares(LP.pubkey, 0, SOL_PERP, 10_000 * R), signers=(LP,))
    added_at = w.ts
    w.ok(PlacePerpOrder(TAKER.pubkey, 0, _auction_buy()), signers=(TAKER,))
    order_id = w.program.state.users[(TAKER.pubkey, 0)].orders[-1].order_id
    _step(w, 25)
    fill = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, order_id, ())
    records = _records(w.send(fill, signers=(FILLER,)))

    # The AMM sells 1 SOL from 20_000 / 20_000 (k = 4e26, peg $100): quote reserve
    # 4e26 // 19_999e9 = 20_001_000_050_002, change 1_000_050_002 + 1 = 1_000_050_003,
    # * 100e6 // 1e9 = 100_005_000, + 1 = 100_005_001. Fee ceil(100_005.001) = 100_006, filler
    # 10% = 10_000 (time reward 22_300), to the market 90_006 (no spread surplus).
    [fill_record] = [r for r in records if type(r).__name__ == "FillRecord"]
    assert (fill_record.quote_asset_amount, fill_record.fee_to_market) == (100_005_001, 90_006)
    amm = w.program.state.perp_markets[SOL_PERP].amm
    # LPs hold 10_000 of sqrt_k 20_000. Per share: base 1e9 * 1e9 / 20_000e9 = 50_000;
    # quote 100_005_001 * 1e9 / 20_000e9 = 5_000 (5_000.25 truncated); fee
    # 90_006 * 8 / 10 = 72_004 (72_004.8), * 1e9 / 20_000e9 = 3 (3.6) -> 5_003 per share.
    assert (amm.base_asset_amount_per_lp, amm.quote_asset_amount_per_lp) == (-50_000, 5_003)
    # the LPs' 50_000 * 10_000e9 / 1e9 = 0.5 SOL leaves the AMM's own position
    assert (amm.base_asset_amount_with_amm, amm.base_asset_amount_with_unsettled_lp) == (
        B // 2,
        B // 2,
    )
    # the AMM now nets 0.5 SOL: closing it adds 0.5 to the 19_999 base reserve: terminal
    # quote 4e26 // 19_999.5e9 = 20_000_500_012_500; bounds 19_999.5 / 1.25 = 15_999.6 and
    # 19_999.5 * 1.25 = 24_999.375
    assert amm.terminal_quote_asset_reserve == 20_000_500_012_500
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (
        15_999_600_000_000,
        24_999_375_000_000,
    )
    assert _lp_position(w).base_asset_amount == 0  # unsettled until someone settles it

    # anyone may settle: -50_000 * 10_000 = 0.5 SOL short, 5_003 * 10_000 = $50.03
    [settle_record] = _records(w.send(SettleLp(LP.pubkey, 0, SOL_PERP), signers=(KEEPER,)))
    assert isinstance(settle_record, LPRecord)
    assert settle_record.action == "settle_liquidity"
    assert (settle_record.delta_base_asset_amount, settle_record.delta_quote_asset_amount) == (
        -B // 2,
        50_030_000,
    )
    lp = _lp_position(w)
    assert (lp.base_asset_amount, lp.quote_asset_amount) == (-B // 2, 50_030_000)
    assert (lp.last_base_asset_amount_per_lp, lp.last_quote_asset_amount_per_lp) == (
        -50_000,
        5_003,
    )
    amm = w.program.state.perp_markets[SOL_PERP].amm
    assert amm.base_asset_amount_with_unsettled_lp == 0
    assert (amm.base_asset_amount_long, amm.base_asset_amount_short) == (B, -B // 2)
    # settling again moves nothing and records nothing
    w.advance()
    assert _records(w.send(SettleLp(LP.pubkey, 0, SOL_PERP), signers=(KEEPER,))) == []

    # after the cooldown the LP takes its shares out and keeps its short
    w.advance(slots=1, seconds=added_at + 30 - w.ts)
    [remove_record] = _records(
        w.send(RemovePerpLpShares(LP.pubkey, 0, SOL_PERP, 10_000 * R), signers=(LP,))
    )
    assert isinstance(remove_record, LPRecord)
    assert (remove_record.n_shares, remove_record.delta_base_asset_amount) == (10_000 * R, 0)
    amm = w.program.state.perp_markets[SOL_PERP].amm
    assert (amm.sqrt_k, amm.user_lp_shares) == (10_000 * R, 0)
    lp = _lp_position(w)
    assert (lp.lp_shares, lp.base_asset_amount) == (0, -B // 2)


# --- property: base is conserved ------------------------------------------------------------------
@dataclass
class _Book:
    market: PerpMarket
    traders: list[User] = field(default_factory=list)
    lps: list[User] = field(default_factory=list)
    fills: int = 0
    settles: int = 0


def _amm_fill(
    market: PerpMarket, trader: User, direction: PositionDirection, size: int, fee: int
) -> None:
    # the AMM side of fulfill_perp_order_with_amm: swap, the LPs' split, then the terminal
    # reserves and bounds that follow the AMM's own position
    position = trader.force_get_perp_position_mut(0)
    quote, _, _ = update_position_with_base_asset_amount(size, direction, market, position, None)
    sign = 1 if direction == LONG else -1
    update_lp_market_position(market, PositionDelta(-sign * quote, sign * size), fee)
    amm = market.amm
    if amm.user_lp_shares > 0:
        amm.terminal_quote_asset_reserve, terminal_base = calculate_terminal_reserves(amm)
        amm.min_base_asset_reserve, amm.max_base_asset_reserve = calculate_bid_ask_bounds(
            amm.concentration_coef, terminal_base
        )


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["fill", "add", "remove", "settle"]),
        st.integers(0, 2),  # which trader / LP
        st.integers(1, 60),  # fill size in steps of 0.01
        st.integers(1, 6_000),  # shares added / removed in steps of 0.01 (truncations show)
        st.booleans(),  # long / short
        st.integers(0, 2_000_000),  # fee to the market for LPs (QUOTE)
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60)
@given(ops=_OPS)
def test_base_is_conserved_over_fills_adds_removes_and_settles(
    ops: list[tuple[str, int, int, int, bool, int]],
) -> None:
    book = _Book(
        market=_market(
            base_asset_reserve=1_000 * R,
            quote_asset_reserve=1_000 * R,
            sqrt_k=1_000 * R,
            terminal_quote_asset_reserve=1_000 * R,
            peg_multiplier=100 * PEG_PRECISION,
            order_step_size=STEP,
            min_order_size=STEP,
            min_base_asset_reserve=708 * R,
            max_base_asset_reserve=1_414 * R,
            max_spread=0,
        ),
        traders=[_user(30 + i) for i in range(3)],
        lps=[_user(40 + i) for i in range(3)],
    )
    update_spreads(book.market, reserve_price(book.market.amm), None)
    for now, (op, who, size, shares, is_long, fee) in enumerate(ops):
        market = book.market.clone()
        trader = book.traders[who].clone()
        lp_user = book.lps[who].clone()
        try:
            if op == "fill":
                _amm_fill(market, trader, LONG if is_long else SHORT, size * STEP, fee)
            elif op == "add":
                add_perp_lp_shares(lp_user, market, shares * STEP, now)
            elif op == "remove":
                remove_perp_lp_shares(lp_user, market, shares * STEP, 100 * P, now, 0)
            else:
                settle_lp(lp_user, lp_user.key, market, now)
        except ProtocolError:
            continue  # rejected: nothing changes
        book.market = market
        book.traders[who] = trader
        book.lps[who] = lp_user
        book.fills += op == "fill"
        book.settles += op != "fill"
        _check_conservation(book)


def _check_conservation(book: _Book) -> None:
    amm = book.market.amm
    users = book.traders + book.lps
    users_base = sum(p.base_asset_amount for u in users for p in u.perp_positions)
    # every user's base is on the long/short totals ...
    assert users_base == amm.base_asset_amount_long + amm.base_asset_amount_short
    # ... which the AMM and the unsettled LPs are exactly the other side of
    assert users_base == amm.base_asset_amount_with_amm + amm.base_asset_amount_with_unsettled_lp
    lp_positions = [p for u in book.lps for p in u.perp_positions]
    assert amm.user_lp_shares == sum(p.lp_shares for p in lp_positions)
    assert amm.sqrt_k >= amm.user_lp_shares
    # the LPs' own unsettled base (slices since their last settlement plus carried remainders)
    # matches the market's total to within the truncations: one unit per fill split and per
    # LP settlement computed
    lps_unsettled = sum(
        calculate_settled_lp_base_quote(amm, p)[0] + p.remainder_base_asset_amount
        for p in lp_positions
        if p.lp_shares > 0
    ) + sum(p.remainder_base_asset_amount for p in lp_positions if p.lp_shares == 0)
    # users' base + the LPs' unsettled base + the AMM's own position (-with_amm) = 0
    imbalance = users_base + lps_unsettled - amm.base_asset_amount_with_amm
    assert abs(imbalance) <= book.fills + book.settles + len(lp_positions)
    if amm.user_lp_shares == 0:
        assert amm.base_asset_amount_with_unsettled_lp == 0
