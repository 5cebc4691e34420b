"""One taker order filled by all three layers: a JIT maker, a resting DLOB order, the vAMM.

Setup (oracle $100, SOL-PERP AMM pegged at $100 with a 1% base spread: bid $99.50, ask $100.50):
a maker rests a post-only ask for 4 SOL at $100.20; the taker sends a market buy for 10 SOL
(limit $100.80), whose auction the program sets to $99.80 -> $100.20 over 40 slots.

1. 25 slots in (auction price $100.05) a JIT maker answers with place-and-make: 3 SOL at $100.00.
2. After the auction a filler fills the rest: 4 SOL from the resting $100.20 ask (better than
   the AMM's $100.50), and the last 3 SOL from the vAMM.

Every number below is derived in the comments from the program's rules: taker fee 10 bps rounded
up, maker rebate 2 bps truncated, filler reward min(10% of the taker fee, the time-based reward),
the time-based reward 1 cent * floor(fourth root(slots * 1e8)) / 100 (1x multiplier), and the
vAMM's constant-product swap on its ask reserves with the buyer paying the rounding.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.constants import BASE_PRECISION
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef, PlaceAndMakePerpOrder
from protocol.state import OrderParams
from protocol.types import MarketType, OrderType
from tests.protocol.fill_world import (
    FILLER,
    LONG,
    MAKER_1,
    MAKER_2,
    SHORT,
    TAKER,
    P,
    fill_records,
    new_world,
    perp_limit,
    perp_position,
    place,
    step,
    user_of,
)

SOL = BASE_PRECISION


def test_jit_then_dlob_then_vamm() -> None:
    w = new_world(amm_price=100 * P)
    market = w.program.state.perp_markets[0]
    market.amm.base_spread = 10_000  # 1%: half on each side
    market.amm.max_spread = 50_000
    step(w)

    dlob_maker_order = place(w, MAKER_1, perp_limit(SHORT, 100_200_000, 4 * SOL))
    taker_order = place(
        w,
        TAKER,
        OrderParams(
            OrderType.Market,
            MarketType.Perp,
            LONG,
            10 * SOL,
            0,
            price=100_800_000,
            auction_duration=20,
            auction_start_price=99_800_000,
            auction_end_price=100_800_000,
        ),
    )
    order = user_of(w, TAKER).orders[-1]
    assert (order.auction_start_price, order.auction_end_price, order.auction_duration) == (
        99_800_000,
        100_200_000,
        40,
    )

    # --- 1. JIT ---------------------------------------------------------------------------
    step(w, 25)  # auction price 99.80 + 0.40 * 25/40 = $100.05 >= the JIT ask of $100.00
    jit = replace(perp_limit(SHORT, 100 * P, 3 * SOL), immediate_or_cancel=True)
    [jit_fill] = fill_records(
        w.send(
            PlaceAndMakePerpOrder(MAKER_2.pubkey, 0, jit, TAKER.pubkey, 0, taker_order),
            signers=(MAKER_2,),
        )
    )
    assert jit_fill.layer == "jit"
    assert (jit_fill.base_asset_amount, jit_fill.quote_asset_amount) == (3 * SOL, 300_000_000)
    assert jit_fill.taker_fee == 300_000  # 300.00 * 10 bps
    assert jit_fill.maker_rebate == 60_000  # 300.00 * 2 bps
    assert jit_fill.filler_reward == 0  # the maker answered itself: no filler
    assert jit_fill.fee_to_market == 240_000

    # --- 2. DLOB, then the vAMM --------------------------------------------------------------
    step(w, 20)  # 45 slots after placement: the 40-slot auction is over
    amm = w.program.state.perp_markets[0].amm
    ask_base, ask_quote, peg = (
        amm.ask_base_asset_reserve,
        amm.ask_quote_asset_reserve,
        amm.peg_multiplier,
    )
    assert (ask_base, ask_quote, peg) == (9_975_062_344_139, 10_025_000_000_000, 100_000_000)
    refs = (MakerOrderRef(MAKER_1.pubkey, 0, dlob_maker_order),)
    dlob_fill, amm_fill = fill_records(
        w.send(
            FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order, refs), signers=(FILLER,)
        )
    )
    # the time-based filler reward 45 slots after the order: floor((45e8) ** 0.25) = 259,
    # 1 cent * 259 / 100 = 25_900 (QUOTE)
    time_reward = 25_900

    assert dlob_fill.layer == "dlob"
    assert (dlob_fill.base_asset_amount, dlob_fill.quote_asset_amount) == (4 * SOL, 400_800_000)
    assert dlob_fill.taker_fee == 400_800  # 400.80 * 10 bps
    assert dlob_fill.maker_rebate == 80_160  # 400.80 * 2 bps
    assert dlob_fill.filler_reward == min(400_800 // 10, time_reward) == 25_900
    assert dlob_fill.fee_to_market == 400_800 - 80_160 - 25_900 == 294_740

    # vAMM on its ask reserves: k = 9_975_062_344_139 * 10_025_000_000_000; taking 3e9 base
    # leaves base 9_972_062_344_139 and quote ceil(k / that) = 10_028_015_925_790, a quote
    # reserve change of 3_015_925_790 -> * peg / 1e9 = 301_592_579 (exact), plus the unit the
    # buyer pays for rounding = 301_592_580.
    assert amm_fill.layer == "amm"
    assert amm_fill.maker is None
    assert (amm_fill.base_asset_amount, amm_fill.quote_asset_amount) == (3 * SOL, 301_592_580)
    assert amm_fill.taker_fee == 301_593  # ceil(301_592.58)
    assert amm_fill.filler_reward == min(301_593 // 10, time_reward) == 25_900
    # the same 3 SOL on the spreadless curve (1e13 * 1e13 reserves) would cost
    # 1e26 / 9_997e9 - 1e13 = 3_000_900_270 -> 300_090_027 + 1 = 300_090_028; the AMM
    # keeps the difference as spread revenue (the surplus), and its fee net of the filler
    assert amm_fill.quote_asset_amount_surplus == 301_592_580 - 300_090_028 == 1_502_552
    assert amm_fill.fee_to_market == 301_593 - 25_900 + 1_502_552 == 1_778_245

    # --- positions -------------------------------------------------------------------------
    taker = perp_position(w, TAKER)
    assert taker.base_asset_amount == 10 * SOL
    assert taker.quote_entry_amount == -(300_000_000 + 400_800_000 + 301_592_580)
    assert taker.quote_asset_amount == -1_002_392_580 - (300_000 + 400_800 + 301_593)
    assert perp_position(w, MAKER_2).base_asset_amount == -3 * SOL
    assert perp_position(w, MAKER_2).quote_asset_amount == 300_000_000 + 60_000
    assert perp_position(w, MAKER_1).base_asset_amount == -4 * SOL
    assert perp_position(w, MAKER_1).quote_asset_amount == 400_800_000 + 80_160
    assert perp_position(w, FILLER).quote_asset_amount == 2 * 25_900
    amm = w.program.state.perp_markets[0].amm
    assert amm.base_asset_amount_with_amm == 3 * SOL  # users are net long 3 SOL against it
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (9_997 * SOL, 10_003_000_900_270)
    assert user_of(w, TAKER).orders == []  # filled in full
