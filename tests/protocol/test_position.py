"""Perp position accounting (``protocol/math/position.py`` and
``protocol/controller/position.py``).

Vectors marked "program" reproduce ``controller/position/tests.rs`` (position and market
before, the fill's delta, and every asserted field after); others are worked by hand in the
comments. Amounts are raw integers as in the program's tests (base BASE_PRECISION units, quote
QUOTE_PRECISION units).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.constants import (
    BASE_PRECISION,
    MAX_BASE_ASSET_AMOUNT_WITH_AMM,
    PEG_PRECISION,
    PRICE_PRECISION,
)
from protocol.controller.position import (
    PositionDelta,
    decrease_open_bids_and_asks,
    increase_open_bids_and_asks,
    update_position_and_market,
    update_position_with_base_asset_amount,
    update_quote_asset_amount,
    update_quote_asset_and_break_even_amount,
    update_settled_pnl,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.orders import get_position_delta_for_fill
from protocol.math.position import (
    PositionUpdateType,
    calculate_base_asset_value_and_pnl_with_oracle_price,
    calculate_base_asset_value_with_expiry_price,
    calculate_base_asset_value_with_oracle_price,
    calculate_perp_liability_value,
    get_breakeven_price,
    get_cost_basis,
    get_entry_price,
    get_position_update_type,
)
from protocol.numeric import div_trunc
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import PerpPosition, User
from protocol.types import ContractType, PositionDirection

POSITION_FIELDS = (
    "base_asset_amount",
    "quote_asset_amount",
    "quote_entry_amount",
    "quote_break_even_amount",
    "last_cumulative_funding_rate",
)
AMM_FIELDS = (
    "base_asset_amount_long",
    "base_asset_amount_short",
    "base_asset_amount_with_amm",
    "quote_asset_amount",
    "quote_entry_amount_long",
    "quote_entry_amount_short",
    "quote_break_even_amount_long",
    "quote_break_even_amount_short",
)


def _market(number_of_users_with_base: int = 0, **amm_fields: Any) -> PerpMarket:
    return PerpMarket(
        market_index=0,
        name="TEST-PERP",
        amm=AMM(**{"oracle": "oracle", "order_step_size": 1, **amm_fields}),
        number_of_users_with_base=number_of_users_with_base,
    )


def _position(**fields: int) -> PerpPosition:
    return PerpPosition(market_index=0, **fields)


# Each case: (position before, delta (base, quote), market amm before, users with base before,
#             expected position, expected pnl, expected amm, users with base after).
# Position and AMM tuples follow POSITION_FIELDS / AMM_FIELDS; an AMM field not given is 0.
CASES: dict[str, tuple[Any, ...]] = {
    "increase_long_from_no_position": (
        {},
        (1, -1),
        {"cumulative_funding_rate_long": 1},
        0,
        (1, -1, -1, -1, 1),
        0,
        (1, 0, 0, -1, -1, 0, -1, 0),
        1,
    ),
    "increase_short_from_no_position": (
        {},
        (-1, 1),
        {"cumulative_funding_rate_short": 1},
        0,
        (-1, 1, 1, 1, 1),
        0,
        (0, -1, 0, 1, 0, 1, 0, 1),
        1,
    ),
    "increase_long": (
        {
            "base_asset_amount": 1,
            "quote_asset_amount": -1,
            "quote_break_even_amount": -2,
            "quote_entry_amount": -1,
            "last_cumulative_funding_rate": 1,
        },
        (1, -1),
        {
            "base_asset_amount_with_amm": 1,
            "base_asset_amount_long": 1,
            "quote_asset_amount": -1,
            "quote_break_even_amount_long": -2,
            "quote_entry_amount_long": -1,
            "cumulative_funding_rate_long": 1,
        },
        1,
        (2, -2, -2, -3, 1),
        0,
        # base_asset_amount_with_amm is the AMM's business, untouched here
        (2, 0, 1, -2, -2, 0, -3, 0),
        1,
    ),
    "increase_short": (
        {
            "base_asset_amount": -1,
            "quote_asset_amount": 1,
            "quote_break_even_amount": 2,
            "quote_entry_amount": 1,
            "last_cumulative_funding_rate": 1,
        },
        (-1, 1),
        {
            "base_asset_amount_short": -1,
            "quote_asset_amount": 1,
            "quote_entry_amount_short": 1,
            "quote_break_even_amount_short": 2,
            "cumulative_funding_rate_short": 1,
        },
        1,
        (-2, 2, 2, 3, 1),
        0,
        (0, -2, 0, 2, 0, 2, 0, 3),
        1,
    ),
    # entry -10 loses 1/10 = -1 -> -9; break-even -12 loses trunc(-1.2) = -1 -> -11;
    # pnl = -10 - (-9) + 5 = 4
    "reduce_long_profitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -10,
            "quote_break_even_amount": -12,
            "last_cumulative_funding_rate": 1,
        },
        (-1, 5),
        {
            "base_asset_amount_with_amm": 10,
            "base_asset_amount_long": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount_long": -10,
            "quote_break_even_amount_long": -12,
            "cumulative_funding_rate_long": 1,
        },
        1,
        (9, -5, -9, -11, 1),
        4,
        (9, 0, 10, -5, -9, 0, -11, 0),
        1,
    ),
    "reduce_long_unprofitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -100,
            "quote_entry_amount": -100,
            "quote_break_even_amount": -200,
            "last_cumulative_funding_rate": 1,
        },
        (-1, 5),
        {
            "base_asset_amount_with_amm": 10,
            "base_asset_amount_long": 10,
            "quote_asset_amount": -100,
            "quote_entry_amount_long": -100,
            "quote_break_even_amount_long": -200,
            "cumulative_funding_rate_long": 1,
        },
        1,
        (9, -95, -90, -180, 1),
        -5,
        (9, 0, 10, -95, -90, 0, -180, 0),
        1,
    ),
    # closing share of the 22 received: trunc(22 * 10 / 11) = 20, so the new short's entry and
    # break-even are 2; pnl = -10 + (22 - 2) = 10; the short side's funding rate (2) applies
    "flip_long_to_short_profitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -10,
            "quote_break_even_amount": -12,
            "last_cumulative_funding_rate": 1,
        },
        (-11, 22),
        {
            "base_asset_amount_with_amm": 10,
            "base_asset_amount_long": 10,
            "quote_asset_amount": -10,
            "quote_break_even_amount_long": -12,
            "quote_entry_amount_long": -10,
            "cumulative_funding_rate_short": 2,
            "cumulative_funding_rate_long": 1,
        },
        1,
        (-1, 12, 2, 2, 2),
        10,
        (0, -1, 10, 12, 0, 2, 0, 2),
        1,
    ),
    # trunc(10 * 10 / 11) = 9 closes; new entry 1; pnl = -10 + (10 - 1) = -1
    "flip_long_to_short_unprofitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -10,
            "quote_break_even_amount": -12,
            "last_cumulative_funding_rate": 1,
        },
        (-11, 10),
        {
            "base_asset_amount_with_amm": 10,
            "base_asset_amount_long": 10,
            "quote_asset_amount": -10,
            "quote_break_even_amount_long": -12,
            "quote_entry_amount_long": -10,
            "cumulative_funding_rate_short": 2,
            "cumulative_funding_rate_long": 1,
        },
        1,
        (-1, 0, 1, 1, 2),
        -1,
        (0, -1, 10, 0, 0, 1, 0, 1),
        1,
    ),
    "reduce_short_profitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount": 100,
            "quote_break_even_amount": 200,
            "last_cumulative_funding_rate": 1,
        },
        (1, -5),
        {
            "base_asset_amount_short": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount_short": 100,
            "quote_break_even_amount_short": 200,
            "cumulative_funding_rate_short": 1,
        },
        1,
        (-9, 95, 90, 180, 1),
        5,
        (0, -9, 0, 95, 0, 90, 0, 180),
        1,
    ),
    "decrease_short_unprofitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount": 100,
            "quote_break_even_amount": 200,
            "last_cumulative_funding_rate": 1,
        },
        (1, -15),
        {
            "base_asset_amount_short": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount_short": 100,
            "quote_break_even_amount_short": 200,
            "cumulative_funding_rate_short": 1,
        },
        1,
        (-9, 85, 90, 180, 1),
        -5,
        (0, -9, 0, 85, 0, 90, 0, 180),
        1,
    ),
    # trunc(-60 * 10 / 11) = -54 closes the short; new long entry -60 + 54 = -6;
    # pnl = 100 + (-60 + 6) = 46
    "flip_short_to_long_profitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount": 100,
            "quote_break_even_amount": 200,
            "last_cumulative_funding_rate": 1,
        },
        (11, -60),
        {
            "base_asset_amount_with_amm": -10,
            "base_asset_amount_short": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount_short": 100,
            "quote_break_even_amount_short": 200,
            "cumulative_funding_rate_long": 2,
            "cumulative_funding_rate_short": 1,
        },
        1,
        (1, 40, -6, -6, 2),
        46,
        (1, 0, -10, 40, -6, 0, -6, 0),
        1,
    ),
    # trunc(-120 * 10 / 11) = -109; entry -11; pnl = 100 + (-120 + 11) = -9
    "flip_short_to_long_unprofitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount": 100,
            "quote_break_even_amount": 200,
            "last_cumulative_funding_rate": 1,
        },
        (11, -120),
        {
            "base_asset_amount_with_amm": -10,
            "base_asset_amount_short": -10,
            "quote_asset_amount": 100,
            "quote_entry_amount_short": 100,
            "quote_break_even_amount_short": 200,
            "cumulative_funding_rate_long": 2,
            "cumulative_funding_rate_short": 1,
        },
        1,
        (1, -20, -11, -11, 2),
        -9,
        (1, 0, -10, -20, -11, 0, -11, 0),
        1,
    ),
    # another user holds 1 long: the market keeps that user's base/entry after this one closes
    "close_long_profitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -10,
            "quote_break_even_amount": -12,
            "last_cumulative_funding_rate": 1,
        },
        (-10, 15),
        {
            "base_asset_amount_with_amm": 11,
            "base_asset_amount_long": 11,
            "quote_asset_amount": -11,
            "quote_entry_amount_long": -11,
            "quote_break_even_amount_long": -13,
            "cumulative_funding_rate_long": 1,
        },
        2,
        (0, 5, 0, 0, 0),
        5,
        (1, 0, 11, 4, -1, 0, -1, 0),
        1,
    ),
    "close_long_unprofitable": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -10,
            "quote_break_even_amount": -12,
            "last_cumulative_funding_rate": 1,
        },
        (-10, 5),
        {
            "base_asset_amount_with_amm": 11,
            "base_asset_amount_long": 11,
            "quote_asset_amount": -11,
            "quote_entry_amount_long": -11,
            "quote_break_even_amount_long": -13,
            "cumulative_funding_rate_long": 1,
        },
        2,
        (0, -5, 0, 0, 0),
        -5,
        (1, 0, 11, -6, -1, 0, -1, 0),
        1,
    ),
    "close_short_profitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 10,
            "quote_entry_amount": 10,
            "quote_break_even_amount": 12,
            "last_cumulative_funding_rate": 1,
        },
        (10, -5),
        {
            "base_asset_amount_short": -11,
            "quote_asset_amount": 11,
            "quote_entry_amount_short": 11,
            "quote_break_even_amount_short": 13,
            "cumulative_funding_rate_short": 1,
        },
        2,
        (0, 5, 0, 0, 0),
        5,
        (0, -1, 0, 6, 0, 1, 0, 1),
        1,
    ),
    "close_short_unprofitable": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 10,
            "quote_entry_amount": 10,
            "quote_break_even_amount": 12,
            "last_cumulative_funding_rate": 1,
        },
        (10, -15),
        {
            "base_asset_amount_short": -11,
            "quote_asset_amount": 11,
            "quote_entry_amount_short": 11,
            "quote_break_even_amount_short": 13,
            "cumulative_funding_rate_short": 1,
        },
        2,
        (0, -5, 0, 0, 0),
        -5,
        (0, -1, 0, -4, 0, 1, 0, 1),
        1,
    ),
    # the realized pnl is against the entry (-8), not the quote balance (-10): -8 + 5 = -3
    "close_long_with_quote_break_even_amount_less_than_quote_asset_amount": (
        {
            "base_asset_amount": 10,
            "quote_asset_amount": -10,
            "quote_entry_amount": -8,
            "quote_break_even_amount": -9,
            "last_cumulative_funding_rate": 1,
        },
        (-10, 5),
        {
            "base_asset_amount_with_amm": 11,
            "base_asset_amount_long": 11,
            "quote_asset_amount": -11,
            "quote_entry_amount_long": -8,
            "quote_break_even_amount_long": -9,
            "cumulative_funding_rate_long": 1,
        },
        2,
        (0, -5, 0, 0, 0),
        -3,
        (1, 0, 11, -6, 0, 0, 0, 0),
        1,
    ),
    "close_short_with_quote_break_even_amount_more_than_quote_asset_amount": (
        {
            "base_asset_amount": -10,
            "quote_asset_amount": 10,
            "quote_entry_amount": 15,
            "quote_break_even_amount": 17,
            "last_cumulative_funding_rate": 1,
        },
        (10, -15),
        {
            "base_asset_amount_short": -11,
            "quote_asset_amount": 11,
            "quote_entry_amount_short": 15,
            "quote_break_even_amount_short": 17,
            "cumulative_funding_rate_short": 1,
        },
        2,
        (0, -5, 0, 0, 0),
        0,
        (0, -1, 0, -4, 0, 0, 0, 0),
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_update_position_and_market_program_vectors(name: str) -> None:
    (
        position_before,
        (delta_base, delta_quote),
        amm_before,
        users_with_base_before,
        expected_position,
        expected_pnl,
        expected_amm,
        users_with_base_after,
    ) = CASES[name]
    position = _position(**position_before)
    market = _market(users_with_base_before, **amm_before)

    pnl = update_position_and_market(position, market, PositionDelta(delta_quote, delta_base))

    assert pnl == expected_pnl
    assert tuple(getattr(position, f) for f in POSITION_FIELDS) == expected_position
    assert tuple(getattr(market.amm, f) for f in AMM_FIELDS) == expected_amm
    assert market.number_of_users_with_base == users_with_base_after


def test_position_entry_sim_program_vector() -> None:
    # program test_position_entry_sim: open 0.5 long for $49.6725 (entry $99.345), reduce 0.2
    # for $19.849 (entry stays $99.345: removed share trunc(-49_672_500 * 0.2 / 0.5) =
    # -19_869_000; pnl 19_849_000 - 19_869_000 = -20_000), then sell 1.0 for $99.345: the
    # 0.3 long closes with trunc(99_345_000 * 0.3) = 29_803_500 and the 0.7 short opens at
    # 69_541_500 / 0.7 = $99.345; pnl -29_803_500 + 29_803_500 = 0.
    position = _position()
    market = _market(cumulative_funding_rate_long=1, order_step_size=BASE_PRECISION // 10)
    market.amm.sqrt_k = 1

    pnl = update_position_and_market(
        position, market, PositionDelta(-99_345_000 // 2, BASE_PRECISION // 2)
    )
    assert pnl == 0
    assert get_entry_price(position) == 99_345_000

    pnl = update_position_and_market(
        position, market, PositionDelta(99_245_000 // 5, -BASE_PRECISION // 5)
    )
    assert pnl == -20_000
    assert position.base_asset_amount == 300_000_000
    assert get_entry_price(position) == 99_345_000
    assert get_breakeven_price(position) == 99_345_000

    pnl = update_position_and_market(position, market, PositionDelta(99_345_000, -BASE_PRECISION))
    assert pnl == 0
    assert position.base_asset_amount == -700_000_000
    assert get_entry_price(position) == 99_345_000
    assert get_breakeven_price(position) == 99_345_000


def test_open_and_close_count_users() -> None:
    # open from an empty position: a new user and a new user with base
    position = _position()
    market = _market()
    update_position_and_market(position, market, PositionDelta(-100, 1))
    assert (market.number_of_users, market.number_of_users_with_base) == (1, 1)
    # closing at a different price leaves quote behind: still a user, no longer with base
    update_position_and_market(position, market, PositionDelta(90, -1))
    assert (position.base_asset_amount, position.quote_asset_amount) == (0, -10)
    assert (market.number_of_users, market.number_of_users_with_base) == (1, 0)
    # re-opening a position that still has quote does not count a new user
    update_position_and_market(position, market, PositionDelta(-100, 1))
    assert (market.number_of_users, market.number_of_users_with_base) == (1, 1)
    # closing flat (quote back to 0: -110 + 110) removes the user
    update_position_and_market(position, market, PositionDelta(110, -1))
    assert (position.quote_asset_amount, market.number_of_users) == (0, 0)


def test_quote_only_delta_is_all_pnl() -> None:
    position = _position(quote_asset_amount=5)
    market = _market()
    market.number_of_users = 1
    assert update_position_and_market(position, market, PositionDelta(-5, 0)) == -5
    assert (position.quote_asset_amount, market.amm.quote_asset_amount) == (0, -5)
    assert market.number_of_users == 0


def test_stale_funding_rate_is_rejected_without_changes() -> None:
    position = _position(
        base_asset_amount=10, quote_asset_amount=-10, quote_entry_amount=-10,
        quote_break_even_amount=-10, last_cumulative_funding_rate=1,
    )  # fmt: skip
    market = _market(1, base_asset_amount_long=10, cumulative_funding_rate_long=2)
    with pytest.raises(ProtocolError) as excinfo:
        update_position_and_market(position, market, PositionDelta(5, -1))
    assert excinfo.value.code == ErrorCode.InvalidPositionLastFundingRate
    assert (position.base_asset_amount, market.amm.base_asset_amount_long) == (10, 10)
    assert market.amm.quote_asset_amount == 0


def test_position_off_the_step_size_is_rejected() -> None:
    position = _position(base_asset_amount=15, quote_asset_amount=-15, quote_entry_amount=-15)
    market = _market(1, base_asset_amount_long=15, order_step_size=10)
    with pytest.raises(ProtocolError) as excinfo:
        update_position_and_market(position, market, PositionDelta(-10, 10))
    assert excinfo.value.code == ErrorCode.InvalidPerpPositionDetected


@pytest.mark.parametrize(
    ("base", "delta_base", "expected"),
    [
        (0, 5, PositionUpdateType.Open),
        (0, -5, PositionUpdateType.Open),
        (3, 5, PositionUpdateType.Increase),
        (-3, -5, PositionUpdateType.Increase),
        (10, -5, PositionUpdateType.Reduce),
        (-10, 5, PositionUpdateType.Reduce),
        (5, -5, PositionUpdateType.Close),
        (-5, 5, PositionUpdateType.Close),
        (5, -6, PositionUpdateType.Flip),
        (-5, 6, PositionUpdateType.Flip),
    ],
)
def test_get_position_update_type(base: int, delta_base: int, expected: PositionUpdateType) -> None:
    position = _position(base_asset_amount=base)
    assert get_position_update_type(position, PositionDelta(0, delta_base)) is expected


def test_quote_asset_and_break_even_amount_follow_the_side() -> None:
    market = _market()
    short = _position(base_asset_amount=-1, quote_asset_amount=100, quote_break_even_amount=100)
    update_quote_asset_and_break_even_amount(short, market, -3)  # a fee or funding paid
    assert (short.quote_asset_amount, short.quote_break_even_amount) == (97, 97)
    assert (market.amm.quote_asset_amount, market.amm.quote_break_even_amount_short) == (-3, -3)
    # a flat position has no break-even to move
    flat = _position(quote_asset_amount=7)
    update_quote_asset_and_break_even_amount(flat, market, 4)
    assert (flat.quote_asset_amount, flat.quote_break_even_amount) == (11, 0)
    assert market.amm.quote_break_even_amount_long == 0


def test_update_quote_asset_amount_counts_a_user_joining_and_leaving() -> None:
    market = _market()
    position = _position()
    update_quote_asset_amount(position, market, 0)  # nothing to do
    assert market.number_of_users == 0
    update_quote_asset_amount(position, market, 9)
    assert market.number_of_users == 1
    update_quote_asset_amount(position, market, -9)
    assert market.number_of_users == 0


def test_update_settled_pnl_moves_user_and_position_totals() -> None:
    user = User(authority=bytes(32), settled_perp_pnl=10)
    position = _position(settled_pnl=-4)
    update_settled_pnl(user, position, 25)
    assert (user.settled_perp_pnl, position.settled_pnl) == (35, 21)


def test_open_bids_and_asks_clamp_at_zero() -> None:
    position = _position()
    increase_open_bids_and_asks(position, PositionDirection.Long, 7)
    increase_open_bids_and_asks(position, PositionDirection.Short, 5)
    increase_open_bids_and_asks(position, PositionDirection.Short, 5, update=False)
    assert (position.open_bids, position.open_asks) == (7, -5)
    decrease_open_bids_and_asks(position, PositionDirection.Long, 9)
    decrease_open_bids_and_asks(position, PositionDirection.Short, 2)
    decrease_open_bids_and_asks(position, PositionDirection.Short, 2, update=False)
    assert (position.open_bids, position.open_asks) == (0, -3)


# --- valuation ------------------------------------------------------------------------------------


def test_valuation_with_oracle_and_expiry_prices() -> None:
    # 1.5 short at $20.000001: |base| * price / 1e9 = 30_000_001.5 -> 30_000_001
    assert calculate_base_asset_value_with_oracle_price(-1_500_000_000, 20_000_001) == 30_000_001
    assert calculate_base_asset_value_with_oracle_price(5, -1) == 0
    position = _position(base_asset_amount=-1_500_000_000, quote_asset_amount=31_000_000)
    # signed value -30_000_001.5 truncates toward zero: -30_000_001; pnl = 999_999
    assert calculate_base_asset_value_and_pnl_with_oracle_price(position, 20_000_001) == (
        30_000_001,
        999_999,
    )
    assert calculate_base_asset_value_with_expiry_price(position, 20_000_001) == -30_000_001
    # a prediction short can lose at most $1 - price per share
    assert calculate_perp_liability_value(
        -2 * BASE_PRECISION, 300_000, ContractType.Prediction
    ) == (1_400_000)


def test_entry_breakeven_and_cost_basis_prices() -> None:
    position = _position(
        base_asset_amount=-3 * BASE_PRECISION,
        quote_asset_amount=301_000_000,
        quote_entry_amount=300_000_000,
        quote_break_even_amount=299_000_001,
    )
    assert get_entry_price(position) == 100 * PRICE_PRECISION
    # 299_000_001 / 3 = 99_666_667 exactly; 301_000_000 / 3 = 100_333_333.3 -> 100_333_333
    assert get_breakeven_price(position) == 99_666_667
    assert get_cost_basis(position) == 100_333_333
    assert get_entry_price(_position()) == 0


# --- property: two users trading with each other --------------------------------------------------

STEP = 10_000_000  # 0.01 base

trades = st.lists(
    st.tuples(
        st.booleans(),  # whether user A buys
        st.integers(min_value=1, max_value=300),  # size in steps
        st.integers(min_value=1, max_value=200 * PRICE_PRECISION),  # fill price
    ),
    min_size=1,
    max_size=30,
)


def _fill(
    market: PerpMarket, buyer: PerpPosition, seller: PerpPosition, base: int, price: int
) -> tuple[int, int]:
    quote = div_trunc(base * price, BASE_PRECISION)
    buy = get_position_delta_for_fill(base, quote, PositionDirection.Long)
    sell = get_position_delta_for_fill(base, quote, PositionDirection.Short)
    return (
        update_position_and_market(buyer, market, buy),
        update_position_and_market(seller, market, sell),
    )


def _check_market_totals(market: PerpMarket, positions: list[PerpPosition]) -> None:
    amm = market.amm
    longs = [p for p in positions if p.base_asset_amount > 0]
    shorts = [p for p in positions if p.base_asset_amount < 0]
    assert amm.base_asset_amount_long == sum(p.base_asset_amount for p in longs)
    assert amm.base_asset_amount_short == sum(p.base_asset_amount for p in shorts)
    assert amm.quote_entry_amount_long == sum(p.quote_entry_amount for p in longs)
    assert amm.quote_entry_amount_short == sum(p.quote_entry_amount for p in shorts)
    assert amm.quote_break_even_amount_long == sum(p.quote_break_even_amount for p in longs)
    assert amm.quote_break_even_amount_short == sum(p.quote_break_even_amount for p in shorts)
    assert amm.quote_asset_amount == sum(p.quote_asset_amount for p in positions)
    assert market.number_of_users_with_base == len(longs) + len(shorts)


@settings(max_examples=200, deadline=None)
@given(trades=trades, close_price=st.integers(min_value=1, max_value=200 * PRICE_PRECISION))
def test_two_users_trading_conserve_base_and_quote(
    trades: list[tuple[bool, int, int]], close_price: int
) -> None:
    market = _market(order_step_size=STEP)
    a, b = _position(), _position()
    realized = {"a": 0, "b": 0}
    for a_buys, steps, price in trades:
        buyer, seller = (a, b) if a_buys else (b, a)
        pnl_buyer, pnl_seller = _fill(market, buyer, seller, steps * STEP, price)
        realized["a" if a_buys else "b"] += pnl_buyer
        realized["b" if a_buys else "a"] += pnl_seller

        assert a.base_asset_amount + b.base_asset_amount == 0
        assert a.quote_asset_amount + b.quote_asset_amount == 0
        # realized pnl is exactly what the quote balance holds beyond the open entry
        assert a.quote_asset_amount - a.quote_entry_amount == realized["a"]
        assert b.quote_asset_amount - b.quote_entry_amount == realized["b"]
        _check_market_totals(market, [a, b])

    # flatten both at one price: all pnl is realized, and one's gain is the other's loss
    if a.base_asset_amount != 0:
        buyer, seller = (b, a) if a.base_asset_amount > 0 else (a, b)
        pnl_buyer, pnl_seller = _fill(market, buyer, seller, abs(a.base_asset_amount), close_price)
        realized["a" if buyer is a else "b"] += pnl_buyer
        realized["b" if buyer is a else "a"] += pnl_seller
    assert a.base_asset_amount == b.base_asset_amount == 0
    assert (a.quote_entry_amount, b.quote_entry_amount) == (0, 0)
    assert realized["a"] == a.quote_asset_amount == -realized["b"]
    assert (a.last_cumulative_funding_rate, b.last_cumulative_funding_rate) == (0, 0)
    _check_market_totals(market, [a, b])
    assert market.amm.base_asset_amount_long == market.amm.base_asset_amount_short == 0


# --- filling against the AMM ----------------------------------------------------------------------

R = 10**9  # AMM_RESERVE_PRECISION


def _curve_market() -> PerpMarket:
    """A $100 curve (100/100 reserves, peg 100) without spreads: the ask and bid reserves are the
    curve's own."""
    return _market(
        base_asset_reserve=100 * R,
        quote_asset_reserve=100 * R,
        sqrt_k=100 * R,
        terminal_quote_asset_reserve=100 * R,
        ask_base_asset_reserve=100 * R,
        ask_quote_asset_reserve=100 * R,
        bid_base_asset_reserve=100 * R,
        bid_quote_asset_reserve=100 * R,
        peg_multiplier=100 * PEG_PRECISION,
        max_base_asset_reserve=200 * R,
        min_base_asset_reserve=50 * R,
    )


@pytest.mark.parametrize(
    ("direction", "fill_price", "quote", "surplus"),
    [
        # buy 1: base reserve 100 -> 99, quote reserve 1e22 / 99e9 = 101_010_101_010; the buyer
        # pays the change plus a reserve unit, $101.0101011 truncated, plus a quote unit
        (PositionDirection.Long, None, 101_010_102, 0),
        # at a limit price of $101.10 the buyer pays that; the AMM keeps 101_100_000 - 101_010_102
        (PositionDirection.Long, 101_100_000, 101_100_000, 89_898),
        # sell 1: base 100 -> 101, quote 1e22 / 101e9 = 99_009_900_990; change 990_099_010 is
        # $99.009901
        (PositionDirection.Short, None, 99_009_901, 0),
        # at $98.00 the seller gets 98_000_000; the AMM keeps 99_009_901 - 98_000_000
        (PositionDirection.Short, 98_000_000, 98_000_000, 1_009_901),
    ],
)
def test_update_position_with_base_asset_amount(
    direction: PositionDirection, fill_price: int | None, quote: int, surplus: int
) -> None:
    market = _curve_market()
    position = _position()
    result = update_position_with_base_asset_amount(
        BASE_PRECISION, direction, market, position, fill_price
    )
    assert result == (quote, surplus, 0)
    sign = 1 if direction == PositionDirection.Long else -1
    assert (position.base_asset_amount, position.quote_asset_amount) == (
        sign * BASE_PRECISION,
        -sign * quote,
    )
    # the AMM took the other side: the users' net position against it moved with the fill
    assert market.amm.base_asset_amount_with_amm == sign * BASE_PRECISION
    assert market.amm.base_asset_reserve == (99 if sign == 1 else 101) * R
    assert market.amm.quote_asset_reserve == (101_010_101_010 if sign == 1 else 99_009_900_990)


def test_update_position_with_base_asset_amount_caps_the_amms_position() -> None:
    market = _curve_market()
    market.amm.base_asset_amount_with_amm = MAX_BASE_ASSET_AMOUNT_WITH_AMM
    market.amm.base_asset_amount_long = MAX_BASE_ASSET_AMOUNT_WITH_AMM
    with pytest.raises(ProtocolError) as excinfo:
        update_position_with_base_asset_amount(
            BASE_PRECISION, PositionDirection.Long, market, _position(), None
        )
    assert excinfo.value.code == ErrorCode.InvalidAmmDetected
