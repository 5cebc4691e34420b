"""The incremental margin view (``bots/margin_view.py``) against the protocol's full margin
calculation.

The reference is :func:`protocol.math.margin.calculate_margin_requirement_and_total_collateral`
itself, run on the same markets and prices: in the liquidation context (maintenance totals and
their buffer parts) and the initial context. The property tests drive the view through random
users, oracle moves, market changes (funding, interest, margin parameters) and account
updates, and after every step every user's six totals must equal the full calculation's to
the unit, and a user must be flagged exactly when the full calculation raises.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bots import margin_view as mv
from bots.margin_view import MappingUserSource, MarginView, user_source
from protocol.constants import (
    BASE_PRECISION,
    MARGIN_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.errors import ProtocolError
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    calculate_size_discount_asset_weight,
    calculate_size_premium_liability_weight,
)
from protocol.math.spot_balance import get_token_value
from protocol.numeric import div_trunc
from protocol.state import (
    AMM,
    HistoricalOracleData,
    OraclePriceData,
    PerpMarket,
    SpotMarket,
    State,
    User,
)
from protocol.state.margin_calculation import MarginContext
from protocol.state.user import PerpPosition, SpotPosition
from protocol.types import MarginRequirementType, MarketType, SpotBalanceType
from tests.protocol.world import make_state

Q = QUOTE_PRECISION
BORROW = SpotBalanceType.Borrow
BUFFER = State().liquidation_margin_buffer_ratio  # 2%


# --- markets: the test world plus a BTC spot and perp with every weight knob turned ---------
def _btc_spot() -> SpotMarket:
    return SpotMarket(
        market_index=2,
        name="BTC",
        oracle="BTC/USD",
        decimals=8,
        historical_oracle_data=HistoricalOracleData.seeded(30_000 * PRICE_PRECISION, 0),
        initial_asset_weight=7_500,
        maintenance_asset_weight=8_500,
        initial_liability_weight=13_000,
        maintenance_liability_weight=11_500,
        imf_factor=10_000,
        scale_initial_asset_weight_start=500_000 * Q,
        deposit_balance=100 * 10**9,  # 100 BTC deposited: $3m > the $500k start
    )


def _btc_perp() -> PerpMarket:
    return PerpMarket(
        market_index=1,
        name="BTC-PERP",
        amm=AMM(
            oracle="BTC/USD",
            order_step_size=BASE_PRECISION // 1000,
            historical_oracle_data=HistoricalOracleData.seeded(30_000 * PRICE_PRECISION, 0),
            base_asset_amount_with_amm=BASE_PRECISION,
            quote_asset_amount=-20_000 * Q,
            cumulative_funding_rate_long=7_000_000,
            cumulative_funding_rate_short=-6_000_000,
        ),
        margin_ratio_initial=1_000,
        margin_ratio_maintenance=625,
        imf_factor=2_000,
        unrealized_pnl_initial_asset_weight=8_000,
        unrealized_pnl_maintenance_asset_weight=9_000,
        unrealized_pnl_imf_factor=5_000,
        unrealized_pnl_max_imbalance=5_000 * Q,  # users net +$10k: initial weight halved
    )


def _view(state: State | None = None) -> MarginView:
    genesis = make_state()
    genesis.spot_markets[2] = _btc_spot()
    genesis.perp_markets[1] = _btc_perp()
    view = MarginView(state or genesis.state)
    view.sync_markets(genesis.perp_markets, genesis.spot_markets)
    view.sync_oracles(
        {
            "USDC/USD": OraclePriceData(PRICE_PRECISION, 0, 0),
            "SOL/USD": OraclePriceData(100 * PRICE_PRECISION, 0, 0),
            "BTC/USD": OraclePriceData(30_000 * PRICE_PRECISION, 0, 0),
        }
    )
    return view


def _full(view: MarginView, user: User) -> tuple[int, ...] | None:
    """The six totals by the protocol's full calculation; ``None`` if it raises."""
    try:
        liquidation = calculate_margin_requirement_and_total_collateral_and_liability_info(
            user, view.markets, MarginContext.liquidation(view.margin_buffer)
        )
        initial = calculate_margin_requirement_and_total_collateral_and_liability_info(
            user, view.markets, MarginContext.standard(MarginRequirementType.Initial)
        )
    except ProtocolError:
        return None
    return (
        liquidation.total_collateral,
        liquidation.total_collateral_buffer,
        liquidation.margin_requirement,
        liquidation.margin_requirement_plus_buffer,
        initial.total_collateral,
        initial.margin_requirement,
    )


def _got(view: MarginView, user: User) -> tuple[int, ...] | None:
    m = view.margin(user.key)
    if m is None:
        return None
    return (
        m.total_collateral,
        m.total_collateral_buffer,
        m.margin_requirement,
        m.margin_requirement_plus_buffer,
        m.initial_total_collateral,
        m.initial_margin_requirement,
    )


def _assert_agrees(view: MarginView, users: dict[bytes, User]) -> None:
    assert len(view) == len(users)
    for user in users.values():
        assert _got(view, user) == _full(view, user), user
    assert sorted(view.errors()) == sorted(u.key for u in users.values() if _full(view, u) is None)


# --- strategies ---------------------------------------------------------------------------------
_perp_position = st.builds(
    lambda market, base, quote, rate, bids, asks, orders, lp: PerpPosition(
        market,
        base_asset_amount=base * (10**7 if market == 0 else 10**6),
        quote_asset_amount=quote,
        last_cumulative_funding_rate=rate,
        open_bids=bids,
        open_asks=-asks,
        open_orders=orders,
        lp_shares=lp,
    ),
    st.sampled_from([0, 1]),
    st.integers(-(10**8), 10**8) | st.integers(-(10**9), 10**9),
    st.integers(-(10**12), 10**12),
    st.integers(-(10**10), 10**10),
    st.sampled_from([0, 0, 0, BASE_PRECISION, 3 * BASE_PRECISION]),
    st.sampled_from([0, 0, 0, 2 * BASE_PRECISION]),
    st.integers(0, 3),
    st.sampled_from([0, 0, 0, 0, 0, BASE_PRECISION]),
)
_spot_position = st.builds(
    lambda market, scaled, borrow, bids, asks, orders: SpotPosition(
        market,
        scaled_balance=scaled,
        balance_type=BORROW if borrow else SpotBalanceType.Deposit,
        open_bids=bids,
        open_asks=-asks,
        open_orders=orders,
    ),
    st.sampled_from([0, 1, 2]),
    st.integers(1, 10**15) | st.integers(1, 10**6),
    st.booleans(),
    st.sampled_from([0, 0, 0, 0, 10**9]),
    st.sampled_from([0, 0, 0, 0, 10**9]),
    st.integers(0, 2),
)


@st.composite
def _users(draw: Any, n: int) -> list[User]:
    users = []
    for i in range(n):
        spots = {p.market_index: p for p in draw(st.lists(_spot_position, max_size=3))}
        perps = {p.market_index: p for p in draw(st.lists(_perp_position, max_size=2))}
        users.append(
            User(
                authority=bytes([i + 1]) * 32,
                spot_positions=sorted(spots.values(), key=lambda p: p.market_index),
                perp_positions=sorted(perps.values(), key=lambda p: p.market_index),
                max_margin_ratio=draw(st.sampled_from([0, 0, 500, 2_500])),
            )
        )
    return users


_price = st.integers(1, 10**6) | st.integers(10**6, 10**11) | st.just(0)
_step = st.one_of(
    st.tuples(st.just("oracle"), st.sampled_from(["SOL/USD", "BTC/USD", "USDC/USD"]), _price),
    st.tuples(st.just("user"), st.integers(0, 5), _users(1)),
    st.tuples(st.just("funding"), st.sampled_from([0, 1]), st.integers(-(10**9), 10**9)),
    st.tuples(st.just("interest"), st.sampled_from([0, 1, 2]), st.integers(0, 10**9)),
    st.tuples(st.just("ratios"), st.sampled_from([0, 1]), st.integers(0, 3_000)),
    st.tuples(st.just("remove"), st.integers(0, 5), st.none()),
)


def _apply(view: MarginView, users: dict[bytes, User], step: tuple[Any, Any, Any]) -> None:
    kind, a, b = step
    markets = view.markets
    if kind == "oracle":
        view.update_oracle(a, OraclePriceData(b, 0, 0))
    elif kind == "user":
        (user,) = b
        user = dataclasses.replace(user, authority=bytes([a + 1]) * 32)
        users[user.authority] = user
        view.update_user(user)
    elif kind == "funding":
        perp = markets.perp_markets[a].clone()
        perp.amm.cumulative_funding_rate_long += b
        perp.amm.cumulative_funding_rate_short -= b // 2
        view.update_perp_market(perp)
    elif kind == "interest":
        spot = markets.spot_markets[a].clone()
        spot.cumulative_deposit_interest += b
        spot.cumulative_borrow_interest += 2 * b
        view.update_spot_market(spot)
    elif kind == "ratios":
        perp = markets.perp_markets[a].clone()
        perp.margin_ratio_maintenance = 300 + b
        perp.margin_ratio_initial = 600 + 2 * b
        view.update_perp_market(perp)
    else:
        authority = bytes([a + 1]) * 32
        if authority in users:
            del users[authority]
            view.remove_user((authority, 0))


@settings(max_examples=60)
@given(_users(6), st.lists(_step, max_size=8))
def test_view_agrees_with_the_full_calculation_after_every_step(
    initial: list[User], steps: list[tuple[Any, Any, Any]]
) -> None:
    view = _view()
    users = {u.authority: u for u in initial}
    view.update_users(initial)
    _assert_agrees(view, users)
    for step in steps:
        _apply(view, users, step)
        _assert_agrees(view, users)
    # a full rebuild gives the same totals
    view.rebuild(users.values())
    _assert_agrees(view, users)


@settings(max_examples=25)
@given(_users(4), st.integers(0, 4_000))
def test_view_agrees_with_any_liquidation_buffer(users: list[User], buffer: int) -> None:
    view = _view(State(liquidation_margin_buffer_ratio=buffer))
    view.update_users(users)
    _assert_agrees(view, {u.authority: u for u in users})


# --- the exact integer helpers --------------------------------------------------------------
@given(
    st.integers(0, 2**53),
    st.integers(0, 2**62 - 1),
    st.integers(1, 2**31 - 1),
)
def test_mul_div_floor_is_exact(x: int, m: int, d: int) -> None:
    assume(x * m // d < 2**62)  # callers bound the quotient
    q, r = mv._mul_div_floor(np.array([x], dtype=np.int64), m, d)
    assert (int(q[0]), int(r[0])) == divmod(x * m, d)


@given(st.integers(-(2**50), 2**50), st.integers(1, 10**11), st.integers(0, 9))
def test_signed_rounding_matches_the_program(x: int, price: int, decimals: int) -> None:
    assume(abs(x) * price // 10**decimals < 2**62)  # callers bound the quotient
    arr = np.array([x], dtype=np.int64)
    assert int(mv._mul_div_trunc(arr, price, 10**decimals)[0]) == div_trunc(x * price, 10**decimals)
    assert int(mv._mul_div_away(arr, price, 10**decimals)[0]) == get_token_value(x, decimals, price)


@given(st.integers(0, 2**62 - 1))
def test_isqrt_is_exact(n: int) -> None:
    assert int(mv._isqrt(np.array([n], dtype=np.int64))[0]) == math.isqrt(n)


@given(st.integers(0, 2**57), st.integers(0, 10**6), st.integers(1, 30_000))
def test_size_weights_match_the_program(size: int, imf: int, weight: int) -> None:
    arr = np.array([size], dtype=np.int64)
    premium, bad = mv._size_premium(arr, imf, weight, MARGIN_PRECISION)
    try:
        expected = calculate_size_premium_liability_weight(size, imf, weight, MARGIN_PRECISION)
    except ProtocolError:
        assert bad[0]
    else:
        assert not bad[0] and int(premium[0]) == expected
    cap, _ = mv._size_discount_cap(arr, imf)
    assert min(int(cap[0]), weight) == calculate_size_discount_asset_weight(size, imf, weight)


# --- worked examples ----------------------------------------------------------------------
def _perp_user(n: int, usdc: int, base: int, entry: int = 100) -> User:
    quote = -base * entry
    return User(
        authority=bytes([n]) * 32,
        spot_positions=[SpotPosition(0, scaled_balance=usdc * Q * 1_000)],
        perp_positions=[
            PerpPosition(0, base_asset_amount=base * BASE_PRECISION, quote_asset_amount=quote * Q)
        ],
    )


def test_most_underwater_first_with_hand_computed_shortages() -> None:
    view = _view()
    x = _perp_user(1, usdc=1_000, base=100)  # long 100 SOL at $100 on $1000
    y = _perp_user(2, usdc=500, base=50)
    z = _perp_user(3, usdc=2_000, base=-10)  # short: gains on the way down
    view.update_users([x, y, z])
    assert view.liquidatable() == []
    # $95: X has 1000 - 500 = $500 >= 5% of $9500 = $475: still not liquidatable
    view.update_oracle("SOL/USD", OraclePriceData(95 * PRICE_PRECISION, 0, 0))
    assert view.count_liquidatable() == 0
    # $94: X: collateral 1000 - 600 = $400 < $470; with the 2% buffer: requirement
    # 470 + 2% of 9400 = $658, collateral 400 - 2% of 600 = $388: shortage $270.
    # Y: 500 - 300 = $200 < $235; 235 + 94 = $329 vs 200 - 6 = $194: shortage $135.
    view.update_oracle("SOL/USD", OraclePriceData(94 * PRICE_PRECISION, 0, 0))
    ranked = view.liquidatable()
    assert [(m.key, m.margin_shortage) for m in ranked] == [
        (x.key, 270 * Q),
        (y.key, 135 * Q),
    ]
    mx = ranked[0]
    assert (mx.total_collateral, mx.total_collateral_buffer) == (400 * Q, -12 * Q)
    assert (mx.margin_requirement, mx.margin_requirement_plus_buffer) == (470 * Q, 658 * Q)
    # initial: 10% of $9400 = $940 against the same $400
    assert (mx.initial_total_collateral, mx.initial_margin_requirement) == (400 * Q, 940 * Q)
    assert mx.free_collateral == 0 and mx.can_be_liquidated()
    assert [m.key for m in view.liquidatable(limit=1)] == [x.key]
    # Z: 2000 + 60 = $2060 of collateral, free initial collateral 2060 - 94 = $1966
    mz = view.margin(z.key)
    assert mz is not None and mz.free_collateral == 1_966 * Q


def test_being_liquidated_users_stay_until_the_buffer_is_met() -> None:
    # collateral $476 >= requirement $470 but < $470 + $188 + $12: out of liquidation only
    # once the buffered requirement is met
    view = _view()
    user = _perp_user(1, usdc=1_076, base=100)
    view.update_user(user)
    view.update_oracle("SOL/USD", OraclePriceData(94 * PRICE_PRECISION, 0, 0))
    assert view.count_liquidatable() == 0
    flagged = dataclasses.replace(user, status=user.status.BeingLiquidated)
    view.update_user(flagged)
    (margin,) = view.liquidatable()
    assert margin.margin_shortage == (658 - (476 - 12)) * Q
    bankrupt = dataclasses.replace(user, status=user.status.Bankrupt)
    view.update_user(bankrupt)
    assert view.liquidatable() == [] and view.bankrupt() == [bankrupt]


def test_work_is_limited_to_the_rows_a_change_touches() -> None:
    view = _view()
    sol_perp = [_perp_user(n, usdc=1_000, base=n) for n in range(1, 6)]
    btc_perp = [
        User(
            authority=bytes([n]) * 32,
            perp_positions=[PerpPosition(1, base_asset_amount=n * BASE_PRECISION)],
        )
        for n in range(10, 13)
    ]
    view.update_users(sol_perp + btc_perp)
    start = view.rows_valued
    # BTC moves: the three BTC-PERP positions, nothing else
    assert view.update_oracle("BTC/USD", OraclePriceData(29_000 * PRICE_PRECISION, 0, 0)) == 3
    # the same price again (an age or confidence change): nothing
    assert view.update_oracle("BTC/USD", OraclePriceData(29_000 * PRICE_PRECISION, 5, 9)) == 0
    # the quote asset's feed prices nothing (the program holds it at $1)
    assert view.update_oracle("USDC/USD", OraclePriceData(990_000, 0, 0)) == 0
    assert view.rows_valued - start == 3
    # one user changes: its own two rows
    view.update_user(_perp_user(1, usdc=900, base=2))
    assert view.rows_valued - start == 5
    # a SOL-PERP account change that moves nothing it reads (its AMM reserves): nothing
    perp = view.markets.perp_markets[0].clone()
    perp.amm.base_asset_reserve += 1
    view.update_perp_market(perp)
    assert view.rows_valued - start == 5
    # funding moves: the five SOL-PERP rows
    perp = perp.clone()
    perp.amm.cumulative_funding_rate_long += 10**9
    view.update_perp_market(perp)
    assert view.rows_valued - start == 10
    assert view.users_in_market(MarketType.Perp, 0) == 5
    assert view.users_in_market(MarketType.Spot, 0) == 5
    _assert_agrees(view, {u.authority: u for u in view.users()})


def test_a_user_the_program_cannot_measure_is_flagged_not_ranked() -> None:
    # a SOL price of 0 makes the program's calculation raise for SOL deposits (InvalidOracle)
    view = _view()
    holder = User(
        authority=bytes([1]) * 32,
        spot_positions=[
            SpotPosition(0, scaled_balance=Q * 1_000, balance_type=BORROW),
            SpotPosition(1, scaled_balance=10**9),
        ],
    )
    other = _perp_user(2, usdc=10, base=1)
    view.update_users([holder, other])
    view.update_oracle("SOL/USD", OraclePriceData(0, 0, 0))
    assert view.errors() == [holder.key]
    assert view.margin(holder.key) is None
    assert [m.key for m in view.liquidatable()] == [other.key]  # perps value at 0 instead
    view.update_oracle("SOL/USD", OraclePriceData(100 * PRICE_PRECISION, 0, 0))
    assert view.errors() == []
    margin = view.margin(holder.key)
    # 1 SOL * $100 * 90% = $90 of collateral; $1 borrowed
    assert margin is not None and margin.total_collateral == 90 * Q
    assert margin.margin_requirement == Q


def test_mapping_source_reports_replaced_accounts_once() -> None:
    accounts = {u.key: u for u in (_perp_user(1, 10, 1), _perp_user(2, 10, 1))}
    source = user_source(accounts)
    assert isinstance(source, MappingUserSource)
    assert {u.key for u in source.changed_users()} == set(accounts)
    assert source.changed_users() == []
    replaced = _perp_user(1, 20, 1)
    accounts[replaced.key] = replaced
    assert source.changed_users() == [replaced]
    assert user_source(source) is source and user_source(None) is None


def test_spot_weights_in_the_example_market() -> None:
    # 100 SOL at $100: imf 3000 on 1e11 -> sqrt(1e12 + 1) = 1e6 -> 1.1 / (1 + 0.03) = 1.0679,
    # above the 90% maintenance weight: $9000; initial 80%: $8000
    view = _view()
    user = User(authority=bytes([1]) * 32, spot_positions=[SpotPosition(1, scaled_balance=10**11)])
    view.update_user(user)
    margin = view.margin(user.key)
    assert margin is not None
    assert (margin.total_collateral, margin.initial_total_collateral) == (9_000 * Q, 8_000 * Q)
    assert SPOT_WEIGHT_PRECISION * 11 // 10 * 10**6 // (10**6 + 30_000) == 10_679
