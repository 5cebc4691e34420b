"""A small exchange for the fill tests, on top of :mod:`tests.protocol.world`.

The SOL-PERP AMM gets reserve bounds (so it can take either side) and an optional peg away
from the oracle: with the AMM quoting $101 against a $100 oracle, resting orders between the
two are better than the AMM and a taker limit order below $101 does not cross the AMM (so it is
placed without an auction). Spreads are zero (no base spread, no max spread), so the AMM's bid
and ask are its reserve price. Every user starts with $20,000 USDC except the filler, which
has an empty account. The oracle is republished at each :func:`step` so it never goes stale.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocol.accounts import ProgramState
from protocol.constants import BASE_PRECISION, PEG_PRECISION, PRICE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import PlacePerpOrder, PlaceSpotOrder
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.records import FillRecord, OrderActionRecord
from protocol.state import OrderParams, PerpPosition, SpotPosition, User
from protocol.state_hash import state_hash
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam
from tests.protocol.world import SOL, SOL_PERP, USDC_UNIT, World, keypair, make_state

P = PRICE_PRECISION
TAKER = keypair(41)
MAKER_1 = keypair(42)
MAKER_2 = keypair(43)
FILLER = keypair(44)
OTHER = keypair(45)

LONG = PositionDirection.Long
SHORT = PositionDirection.Short


def fill_state(amm_price: int = 100 * P) -> ProgramState:
    state = make_state(100 * P)
    amm = state.perp_markets[SOL_PERP].amm
    reserve = amm.base_asset_reserve
    amm.min_base_asset_reserve = reserve // 2
    amm.max_base_asset_reserve = reserve * 2
    amm.peg_multiplier = amm_price * PEG_PRECISION // PRICE_PRECISION
    return state


def new_world(amm_price: int = 100 * P, sol: int = 0) -> World:
    w = World(program=Program(fill_state(amm_price)))
    for kp in (TAKER, MAKER_1, MAKER_2, OTHER):
        w.new_user(kp, usdc=20_000 * USDC_UNIT, sol=sol)
    w.new_user(FILLER)
    return w


def step(w: World, slots: int = 1, price: int = 100 * P) -> None:
    """Advance the clock and republish the SOL oracle (confidence 0.1%)."""
    w.advance(slots)
    w.set_price("SOL/USD", price, price // 1000)


def perp_limit(
    direction: PositionDirection,
    price: int,
    size: int = BASE_PRECISION,
    *,
    post_only: bool = True,
    **kw: Any,
) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        direction,
        size,
        SOL_PERP,
        price=price,
        post_only=PostOnlyParam.MustPostOnly if post_only else PostOnlyParam.None_,
        **kw,
    )


def spot_limit(
    direction: PositionDirection,
    price: int,
    size: int = BASE_PRECISION,
    *,
    post_only: bool = True,
    **kw: Any,
) -> OrderParams:
    return replace(
        perp_limit(direction, price, size, post_only=post_only, **kw),
        market_type=MarketType.Spot,
        market_index=SOL,
    )


def place(w: World, kp: Keypair, params: OrderParams) -> int:
    ix: Any = (
        PlacePerpOrder(kp.pubkey, 0, params)
        if params.market_type == MarketType.Perp
        else PlaceSpotOrder(kp.pubkey, 0, params)
    )
    w.ok(ix, signers=(kp,))
    return w.program.state.users[(kp.pubkey, 0)].orders[-1].order_id


def user_of(w: World, kp: Keypair) -> User:
    return w.program.state.users[(kp.pubkey, 0)]


def perp_position(w: World, kp: Keypair) -> PerpPosition:
    position = user_of(w, kp).get_perp_position(SOL_PERP)
    assert position is not None
    return position


def spot_position(w: World, kp: Keypair, market_index: int) -> SpotPosition:
    position = user_of(w, kp).get_spot_position(market_index)
    assert position is not None
    return position


def fill_records(result: Executed | Rejected) -> list[FillRecord]:
    assert isinstance(result, Executed), result
    return [r.record for r in result.records if isinstance(r.record, FillRecord)]


def actions(result: Executed | Rejected) -> list[tuple[str, int, str]]:
    """(action, order id, reason) of every order action record."""
    assert isinstance(result, Executed), result
    return [
        (r.record.action, r.record.order_id, r.record.reason)
        for r in result.records
        if isinstance(r.record, OrderActionRecord)
    ]


def rejected_without_change(w: World, *ixs: Any, signers: tuple[Keypair, ...]) -> Rejected:
    """Send, expect a rejection, and check the state did not move."""
    before = state_hash(w.program.state, w.program.next_seq)
    result = w.send(*ixs, signers=signers)
    assert isinstance(result, Rejected), result
    assert state_hash(w.program.state, w.program.next_seq) == before
    return result


__all__ = [
    "FILLER",
    "LONG",
    "MAKER_1",
    "MAKER_2",
    "OTHER",
    "SHORT",
    "TAKER",
    "USDC_UNIT",
    "P",
    "actions",
    "fill_records",
    "fill_state",
    "new_world",
    "perp_limit",
    "perp_position",
    "place",
    "rejected_without_change",
    "spot_limit",
    "spot_position",
    "step",
    "user_of",
]
