"""The account JSON codec: every account decodes back into an equal dataclass; bad JSON is an
error naming where."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepers.accounts_json import (
    AccountDecodeError,
    decode_account,
    encode_account,
    from_builtins,
    to_builtins,
)
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.markets import default_program_state
from protocol.state import (
    OracleAccount,
    PerpMarket,
    SpotMarket,
    State,
    User,
    UserStats,
)
from protocol.state.user import Order, PerpPosition, SpotPosition
from protocol.types import (
    MarketType,
    OrderStatus,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    SpotBalanceType,
    UserStatus,
)

AUTHORITY = bytes(range(32))


def a_user() -> User:
    return User(
        authority=AUTHORITY,
        sub_account_id=3,
        delegate=b"\xff" * 32,
        name="maker",
        spot_positions=[
            SpotPosition(0, scaled_balance=5 * 10**15, cumulative_deposits=5_000_000_000),
            SpotPosition(1, scaled_balance=7, balance_type=SpotBalanceType.Borrow, open_asks=-3),
        ],
        perp_positions=[
            PerpPosition(0, base_asset_amount=-2 * BASE_PRECISION, quote_asset_amount=301_000_000)
        ],
        orders=[
            Order(
                order_id=9,
                market_index=0,
                market_type=MarketType.Perp,
                order_type=OrderType.TriggerLimit,
                direction=PositionDirection.Short,
                base_asset_amount=BASE_PRECISION,
                slot=77,
                price=151 * PRICE_PRECISION,
                trigger_price=149 * PRICE_PRECISION,
                trigger_condition=OrderTriggerCondition.Below,
                auction_start_price=-5,
                oracle_price_offset=-20_000,
                reduce_only=True,
            )
        ],
        status=UserStatus.BeingLiquidated | UserStatus.Bankrupt,
        next_order_id=10,
        settled_perp_pnl=-(2**70),  # beyond 64 bits: JSON carries it exactly
    )


def test_a_user_round_trips_to_an_equal_dataclass() -> None:
    user = a_user()
    decoded = decode_account(User, encode_account(user))
    assert decoded == user
    assert decoded.status == UserStatus.BeingLiquidated | UserStatus.Bankrupt
    assert type(decoded.orders[0].direction) is PositionDirection


def test_the_json_is_the_dataclass_field_by_field() -> None:
    obj = msgspec.json.decode(encode_account(a_user()))
    assert obj["authority"] == AUTHORITY.hex()
    assert obj["delegate"] == "ff" * 32
    assert obj["orders"][0]["direction"] == 1  # Short
    assert obj["orders"][0]["trigger_condition"] == int(OrderTriggerCondition.Below)
    assert obj["status"] == int(UserStatus.BeingLiquidated | UserStatus.Bankrupt)
    assert obj["settled_perp_pnl"] == -(2**70)
    assert list(obj)[:4] == ["authority", "sub_account_id", "delegate", "name"]


def test_every_default_market_and_oracle_round_trips() -> None:
    state = default_program_state(now=1_700_000_000, slot=9)
    for market in state.perp_markets.values():
        assert decode_account(PerpMarket, encode_account(market)) == market
    for spot in state.spot_markets.values():
        assert decode_account(SpotMarket, encode_account(spot)) == spot
    for oracle in state.oracles.values():
        assert decode_account(OracleAccount, encode_account(oracle)) == oracle
    # a frozen dataclass with a tuple of nested frozen ones
    assert decode_account(State, encode_account(state.state)) == state.state


def test_user_stats_round_trip() -> None:
    stats = UserStats(AUTHORITY, referrer=b"\x01" * 32, taker_volume_30d=12_345)
    assert decode_account(UserStats, encode_account(stats)) == stats


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"sub_account_id": True}, "$.sub_account_id"),  # a bool is not an int
        ({"sub_account_id": "3"}, "$.sub_account_id"),
        ({"authority": "zz"}, "$.authority"),
        ({"status": 1.5}, "$.status"),
        ({"nope": 1}, "$.nope"),
        ({"orders": {}}, "$.orders"),
    ],
)
def test_wrong_values_name_their_path(change: dict[str, Any], path: str) -> None:
    obj = to_builtins(a_user())
    obj.update(change)
    with pytest.raises(AccountDecodeError) as err:
        from_builtins(User, obj)
    assert err.value.path == path


def test_a_bad_nested_value_names_its_path() -> None:
    obj = to_builtins(a_user())
    obj["orders"][0]["order_type"] = 99
    with pytest.raises(AccountDecodeError) as err:
        from_builtins(User, obj)
    assert err.value.path == "$.orders[0].order_type"
    assert "OrderType" in err.value.detail


def test_missing_fields_take_their_defaults_unless_they_have_none() -> None:
    obj = to_builtins(a_user())
    del obj["next_order_id"]
    assert from_builtins(User, obj).next_order_id == 1  # User's default
    del obj["authority"]
    with pytest.raises(AccountDecodeError) as err:
        from_builtins(User, obj)
    assert err.value.path == "$.authority"


def test_not_json_is_an_error() -> None:
    with pytest.raises(AccountDecodeError) as err:
        decode_account(User, b"{not json")
    assert err.value.path == "$"


def test_values_outside_an_account_are_refused() -> None:
    with pytest.raises(TypeError):
        to_builtins({"a": 1})
    with pytest.raises(TypeError):
        to_builtins(1.5)


orders = st.builds(
    Order,
    order_id=st.integers(0, 2**32 - 1),
    market_index=st.integers(0, 2**16 - 1),
    market_type=st.sampled_from(MarketType),
    order_type=st.sampled_from(OrderType),
    direction=st.sampled_from(PositionDirection),
    base_asset_amount=st.integers(0, 2**64 - 1),
    slot=st.integers(0, 2**64 - 1),
    price=st.integers(0, 2**64 - 1),
    base_asset_amount_filled=st.integers(0, 2**64 - 1),
    auction_start_price=st.integers(-(2**63), 2**63 - 1),
    status=st.sampled_from(OrderStatus),
    reduce_only=st.booleans(),
    post_only=st.booleans(),
)


@given(st.lists(orders, max_size=5), st.integers(-(2**127), 2**127 - 1))
def test_any_user_round_trips(user_orders: list[Order], pnl: int) -> None:
    user = User(AUTHORITY, orders=user_orders, settled_perp_pnl=pnl)
    assert decode_account(User, encode_account(user)) == user
