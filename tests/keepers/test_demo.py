"""``keepers demo``: its parts (the oracle walk, the participants' orders, the statistics, the
invariant check, the book comparison) with exact numbers, and one whole short run through the
command line with its JSON summary."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from keepers.bus.schemas import OrderAction, OrderEvent
from keepers.cli import main as keepers_main
from keepers.demo import build_parser, config_from_args
from keepers.demo.actors import demo_keypair
from keepers.demo.books import diff_orders
from keepers.demo.invariants import QuoteFlows, check_invariants
from keepers.demo.makers import MakerProfile, quote_orders
from keepers.demo.operator import repeg_candidate
from keepers.demo.oracle import PriceWalk, Shock
from keepers.demo.report import (
    DemoStats,
    IntentLatency,
    InvariantResult,
    LiveSummary,
    order_kind,
    percentile,
)
from keepers.demo.run import CORE_BOTS, DemoConfig, available_bots, bot_config, with_extra
from keepers.demo.traders import (
    MarketInfo,
    OrderKind,
    Trader,
    TraderProfile,
    base_for_notional,
    build_intent_params,
    build_order,
    offset_price,
)
from keepers.keys import LoadedKeypair
from keepers.runtime.process import prepare_bots
from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.instructions import Deposit, InitializeUser, PlacePerpOrder
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef
from protocol.keys import Keypair
from protocol.markets import default_program_state
from protocol.program import Executed, Program
from protocol.records import FillRecord, OrderActionRecord, SequencedRecord, TriggerRecord
from protocol.signed_intent import OrderIntent, verify_intent
from protocol.state import OrderParams, State
from protocol.state.oracle import OraclePriceData
from protocol.state.user import Order
from protocol.transaction import Transaction
from protocol.types import (
    MarketType,
    OrderBitFlag,
    OrderTriggerCondition,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)
from tests.protocol.fill_world import (
    FILLER,
    MAKER_1,
    TAKER,
    fill_records,
    new_world,
    perp_limit,
    place,
    step,
    user_of,
)
from tests.protocol.world import World

P = PRICE_PRECISION
LONG, SHORT = PositionDirection.Long, PositionDirection.Short
SOL_PERP = MarketInfo(
    market_index=0,
    oracle_id="SOL/USD",
    order_step_size=BASE_PRECISION // 100,
    order_tick_size=100,
    min_order_size=BASE_PRECISION // 100,
)


class LowestDraw:
    """A stand-in for ``random.Random`` whose draws are always the lowest allowed."""

    def randint(self, a: int, b: int) -> int:
        return a


# --- the oracle walk -----------------------------------------------------------------------------
def test_a_shock_moves_price_and_anchor_in_integer_steps() -> None:
    walk = PriceWalk(
        "SOL/USD",
        100 * P,
        seed=7,
        vol_ppm=0,
        reversion_ppm=500_000,
        shocks=(Shock(at_step=2, ppm=-160_000, steps=2),),
    )
    path = [walk.step() for _ in range(6)]
    # steps 0, 1: no noise, no gap to the anchor; steps 2, 3: -8% each (-160_000 / 2 ppm):
    # 100e6 - 100e6 * 80_000 / 1e6 = 92_000_000; 92e6 - 92e6 * 0.08 = 84_640_000. The anchor
    # moved with the shock, so the 50% pull back to it is zero afterwards.
    assert path == [100 * P, 100 * P, 92_000_000, 84_640_000, 84_640_000, 84_640_000]
    assert walk.anchor == 84_640_000
    assert walk.confidence == 8_464  # 1 bp


def test_a_walk_is_a_function_of_its_seed() -> None:
    def path(seed: int) -> list[int]:
        walk = PriceWalk("SOL/USD", 150 * P, seed=seed, vol_ppm=500)
        return [walk.step() for _ in range(50)]

    assert path(1) == path(1)
    assert path(1) != path(2)
    # each step moves at most 500 ppm plus the reversion pull (2% of a gap of at most ~2.5%)
    steps = list(zip([150 * P, *path(1)], path(1), strict=False))
    assert all(abs(b - a) <= a * 1_000 // 1_000_000 for a, b in steps)


def test_a_shock_cannot_take_the_price_to_zero() -> None:
    with pytest.raises(ValueError, match="zero"):
        Shock(at_step=0, ppm=-1_000_000)


# --- the participants' orders --------------------------------------------------------------------
def test_prices_and_sizes_on_the_market_grid() -> None:
    # 150 * (1 + 10 bps) = 150.15; 150 * (1 - 7 bps) = 149.895
    assert offset_price(150 * P, 10, 100) == 150_150_000
    assert offset_price(150 * P, -7, 100) == 149_895_000
    # 1e6 + 1 bp = 1_000_100, not on a 1_000 tick: rounded down
    assert offset_price(P, 1, 1_000) == P
    # $1,500 at $150 = 10 SOL; $1,000 at $150 = 6.666.. SOL -> 6.66 on the 0.01 step
    assert base_for_notional(1_500 * QUOTE_PRECISION, 150 * P, SOL_PERP) == 10 * BASE_PRECISION
    assert base_for_notional(1_000 * QUOTE_PRECISION, 150 * P, SOL_PERP) == 6_660_000_000
    # never below the market's minimum order size
    assert base_for_notional(1, 150 * P, SOL_PERP) == BASE_PRECISION // 100


def test_every_order_kind_with_the_lowest_draws() -> None:
    rng = LowestDraw()
    base = BASE_PRECISION

    def build(kind: OrderKind, direction: PositionDirection) -> OrderParams:
        return build_order(kind, direction, base, SOL_PERP, 150 * P, rng=rng, now_ts=1_000)  # type: ignore[arg-type]

    assert build(OrderKind.MARKET, LONG) == OrderParams(
        OrderType.Market, MarketType.Perp, LONG, base, 0
    )
    # 15 bps through the oracle: 150 * 1.0015 = 150.225
    assert build(OrderKind.LIMIT_TAKE, LONG).price == 150_225_000
    rest = build(OrderKind.LIMIT_REST, LONG)  # 3 bps behind: 149.955, expiring 2 s on
    assert (rest.price, rest.max_ts, rest.post_only) == (
        149_955_000,
        1_002,
        PostOnlyParam.TryPostOnly,
    )
    pegged = build(OrderKind.ORACLE_PEGGED, SHORT)  # 2 bps above the oracle: +0.03
    assert (pegged.price, pegged.oracle_price_offset) == (0, 30_000)
    oracle = build(OrderKind.ORACLE_MARKET, LONG)
    # limit 15 bps (0.225) over the oracle, auction from 5 bps (0.075) under it, 10 slots
    assert (
        oracle.order_type,
        oracle.oracle_price_offset,
        oracle.auction_start_price,
        oracle.auction_end_price,
        oracle.auction_duration,
    ) == (OrderType.Oracle, 225_000, -75_000, 225_000, 10)
    stop = build(OrderKind.STOP_MARKET, LONG)  # a buy stop 1 bp above: 150.015
    assert (stop.order_type, stop.trigger_price, stop.trigger_condition) == (
        OrderType.TriggerMarket,
        150_015_000,
        OrderTriggerCondition.Above,
    )
    stop_limit = build(OrderKind.STOP_LIMIT, SHORT)
    # a sell stop 1 bp below: 149.985; its limit 30 bps under that: 149.985 - 0.449955 =
    # 149.535045 -> 149.535000 on the tick
    assert (stop_limit.trigger_price, stop_limit.price, stop_limit.trigger_condition) == (
        149_985_000,
        149_535_000,
        OrderTriggerCondition.Below,
    )
    with pytest.raises(ValueError, match="intent"):
        build(OrderKind.INTENT, LONG)


def _program_with_trader() -> tuple[Program, Keypair, int]:
    oracle = Keypair.from_seed(b"\x01" * 32)
    program = Program(
        default_program_state(
            now=1_700_000_000, slot=5_000, state=State(oracle_authority=oracle.pubkey)
        )
    )
    trader = Keypair.from_seed(b"\x02" * 32)
    slot = 5_001
    tx = Transaction.sign(
        (InitializeUser(trader.pubkey, 0), Deposit(trader.pubkey, 0, 0, 50_000 * QUOTE_PRECISION)),
        slot,
        [trader],
    )
    assert isinstance(program.execute(tx, Clock(slot, 1_700_000_000)), Executed)
    return program, trader, slot


def test_the_program_accepts_every_order_kind_the_traders_build() -> None:
    program, trader, slot = _program_with_trader()
    rng = LowestDraw()
    for kind in OrderKind:
        if kind is OrderKind.INTENT:
            continue
        for direction in (LONG, SHORT):
            params = build_order(
                kind,
                direction,
                BASE_PRECISION,
                SOL_PERP,
                150 * P,
                rng=rng,
                now_ts=1_700_000_000,  # type: ignore[arg-type]
            )
            slot += 1
            tx = Transaction.sign((PlacePerpOrder(trader.pubkey, 0, params),), slot, [trader])
            result = program.execute(tx, Clock(slot, 1_700_000_000))
            assert isinstance(result, Executed), (kind, direction, result)


def test_a_trader_intent_verifies() -> None:
    program, trader, slot = _program_with_trader()
    params = build_intent_params(
        LONG,
        BASE_PRECISION,
        SOL_PERP,
        150 * P,
        rng=LowestDraw(),
        user_order_id=7,  # type: ignore[arg-type]
    )
    # limit 15 bps over (150.225), auction from 5 bps under (149.925), 8 slots
    assert (params.price, params.auction_start_price, params.auction_end_price) == (
        150_225_000,
        149_925_000,
        150_225_000,
    )
    assert (params.auction_duration, params.user_order_id) == (8, 7)
    intent = OrderIntent(trader.pubkey, 0, params, slot, b"\x05" * 8)
    user = program.state.users[(trader.pubkey, 0)]
    verified = verify_intent(user, intent, trader.pubkey, intent.sign(trader), slot)
    assert verified.intent == intent


def test_maker_quotes_around_the_oracle() -> None:
    profile = MakerProfile(
        name="m",
        collateral=0,
        levels=((2, 1_500 * QUOTE_PRECISION),),
        pegged_bps=8,
        pegged_notional=2_000 * QUOTE_PRECISION,
    )
    bid, ask, pegged_bid, pegged_ask = quote_orders(profile, SOL_PERP, 150 * P)
    # 2 bps of $150 = $0.03; $1,500 / $150 = 10 SOL
    assert (bid.direction, bid.price, bid.base_asset_amount) == (
        LONG,
        149_970_000,
        10 * BASE_PRECISION,
    )
    assert (ask.direction, ask.price) == (SHORT, 150_030_000)
    # 8 bps of $150 = $0.12; $2,000 / $150 = 13.33 SOL on the 0.01 step
    assert (pegged_bid.oracle_price_offset, pegged_ask.oracle_price_offset) == (-120_000, 120_000)
    assert pegged_bid.base_asset_amount == 13_330_000_000
    assert all(o.post_only == PostOnlyParam.TryPostOnly for o in (bid, ask, pegged_bid, pegged_ask))


def test_keys_derive_from_the_seed() -> None:
    assert demo_keypair(1, "trader", 0).pubkey == demo_keypair(1, "trader", 0).pubkey
    keys = {
        demo_keypair(seed, role, i).pubkey for seed in (1, 2) for role in ("a", "b") for i in (0, 1)
    }
    assert len(keys) == 8


# --- statistics ----------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def _order(order_id: int, **changes: object) -> Order:
    base = Order(
        order_id=order_id,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=OrderType.Market,
        direction=LONG,
        base_asset_amount=BASE_PRECISION,
        slot=10,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_order_kinds() -> None:
    assert order_kind(_order(1)) == "market"
    assert order_kind(_order(1, bit_flags=OrderBitFlag.SignedMessage)) == "signed_intent"
    assert order_kind(_order(1, order_type=OrderType.Limit)) == "limit"
    assert order_kind(_order(1, order_type=OrderType.Limit, oracle_price_offset=-5)) == (
        "oracle_pegged_limit"
    )
    assert order_kind(_order(1, order_type=OrderType.Oracle)) == "oracle"
    assert order_kind(_order(1, order_type=OrderType.TriggerMarket)) == "trigger_market"
    assert order_kind(_order(1, order_type=OrderType.TriggerLimit)) == "trigger_limit"


ALICE = (b"\xaa" * 32, 0)
FILLER_KEY = (b"\xff" * 32, 0)


def _place(seq: int, order: Order) -> SequencedRecord:
    record = OrderActionRecord(
        action="place",
        authority=ALICE[0],
        sub_account_id=0,
        order_id=order.order_id,
        market_index=0,
        market_type=MarketType.Perp,
        order_type=order.order_type,
        direction=order.direction,
        base_asset_amount=order.base_asset_amount,
        base_asset_amount_filled=0,
        price=0,
        reason="",
        slot=10,
        ts=0,
        order=order,
    )
    return SequencedRecord(seq=seq, slot=10, record=record)


def _fill(seq: int, order_id: int, layer: str, reward: int) -> SequencedRecord:
    record = FillRecord(
        fill_record_id=seq,
        market_type=MarketType.Perp,
        market_index=0,
        layer=layer,
        taker=ALICE,
        taker_order_id=order_id,
        taker_direction=LONG,
        maker=None,
        maker_order_id=None,
        base_asset_amount=BASE_PRECISION,
        quote_asset_amount=150 * QUOTE_PRECISION,
        fill_price=150 * P,
        taker_fee=150_000,
        maker_rebate=0,
        filler_reward=reward,
        referrer_reward=0,
        fee_to_market=150_000 - reward,
        quote_asset_amount_surplus=30_000 if layer == "amm" else 0,
        oracle_price=150 * P,
        filler=FILLER_KEY,
        slot=11,
        ts=0,
    )
    return SequencedRecord(seq=seq, slot=11, record=record)


def test_stats_count_records_once_and_measure_intent_latency() -> None:
    now = [0]
    stats = DemoStats(roles={FILLER_KEY[0]: "filler"}, clock_ns=lambda: now[0])
    stats.latency.on_publish(ALICE[0], 7, 1_000_000)
    signed = _order(3, bit_flags=OrderBitFlag.SignedMessage, user_order_id=7)
    stats.apply(_place(1, signed))
    stats.apply(_place(2, _order(4)))
    now[0] = 5_500_000
    stats.apply(_fill(3, 3, "jit", 0))
    stats.apply(_fill(3, 3, "jit", 0))  # a QoS 1 duplicate: same seq
    now[0] = 9_000_000
    stats.apply(_fill(4, 3, "dlob", 10_000))  # a second fill of the intent's order: no sample
    stats.apply(_fill(6, 4, "amm", 20_000))
    trigger = TriggerRecord(
        authority=ALICE[0],
        sub_account_id=0,
        order_id=9,
        market_type=MarketType.Perp,
        market_index=0,
        trigger_price=150 * P,
        oracle_price=150 * P,
        filler=FILLER_KEY,
        filler_reward=5_000,
        slot=12,
        ts=0,
    )
    stats.apply(SequencedRecord(seq=7, slot=12, record=trigger))
    assert stats.orders_by_type == {"signed_intent": 1, "market": 1}
    assert stats.fills_by_layer == {"jit": 1, "dlob": 1, "amm": 1}
    assert stats.rewards == {"filler": 10_000 + 20_000 + 5_000}
    assert stats.triggers == 1
    assert stats.latency.samples_ms == [4.5]  # (5_500_000 - 1_000_000) ns
    assert stats.volume == 3 * 150 * QUOTE_PRECISION
    # the vAMM took a buyer's $150 less its $0.03 spread surplus as its cost basis
    assert stats.amm_cost_basis == {0: 150 * QUOTE_PRECISION - 30_000}
    assert stats.missing(7) == 1  # seq 5 was never seen


def test_intent_latency_ignores_orders_not_placed_from_an_intent() -> None:
    latency = IntentLatency()
    latency.on_publish(ALICE[0], 7, 0)
    latency.on_place(ALICE, _order(1, user_order_id=7))  # not flagged SignedMessage
    latency.on_fill(ALICE, 1, 1_000)
    assert latency.samples_ms == []
    assert latency.summary() == {"p50": None, "p99": None, "samples": 0}


def test_live_summary_redraws_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    summary = LiveSummary(out)
    summary.draw(["a", "b", "c", "d"], 0.0)
    summary.draw(["e", "f", "g", "h"], 0.1)
    # the second frame moves the cursor up over the 4 lines drawn and clears to the end
    assert out.getvalue() == "a\nb\nc\nd\n\x1b[4F\x1b[Je\nf\ng\nh\n"
    plain = io.StringIO()
    lines = LiveSummary(plain, every_s=2.0)
    lines.draw(["head", "x", "y", "fills"], 0.0)
    lines.draw(["head2", "x", "y", "fills2"], 1.0)  # within 2 s: nothing
    lines.draw(["head3", "x", "y", "fills3"], 2.5)
    assert plain.getvalue() == "head | fills\nhead3 | fills3\n"


# --- invariants ----------------------------------------------------------------------------------
def _filled_world() -> World:
    w, _ = _filled_world_and_fills()
    return w


def _filled_world_and_fills() -> tuple[World, list[FillRecord]]:
    # tests/protocol/test_waterfall.py's set-up: a $100.20 resting ask of 4 SOL and a market
    # buy of 10 SOL; after the auction the filler crosses it with the ask, the vAMM the rest
    w = new_world(amm_price=100 * P)
    market = w.program.state.perp_markets[0]
    market.amm.base_spread = 10_000
    market.amm.max_spread = 50_000
    step(w)
    maker_order = place(w, MAKER_1, perp_limit(SHORT, 100_200_000, 4 * BASE_PRECISION))
    taker_order = place(
        w,
        TAKER,
        OrderParams(
            OrderType.Market,
            MarketType.Perp,
            LONG,
            10 * BASE_PRECISION,
            0,
            price=100_800_000,
            auction_duration=20,
            auction_start_price=99_800_000,
            auction_end_price=100_800_000,
        ),
    )
    step(w, 45)
    refs = (MakerOrderRef(MAKER_1.pubkey, 0, maker_order),)
    fill = FillPerpOrder(FILLER.pubkey, 0, TAKER.pubkey, 0, taker_order, refs)
    fills = fill_records(w.send(fill, signers=(FILLER,)))
    assert [f.layer for f in fills] == ["dlob", "amm"]
    return w, fills


def test_invariants_hold_after_fills_and_catch_a_broken_position() -> None:
    w = _filled_world()
    state = w.program.state
    # new_world funds four users with $20,000 each and no insurance stake
    deposits = {0: 4 * 20_000 * QUOTE_PRECISION}
    results = check_invariants(state, deposits=deposits, insurance_stakes={}, records_complete=True)
    assert results and all(r.ok for r in results), results
    taker = user_of(w, TAKER)
    taker.perp_positions[0].base_asset_amount += 1
    broken = check_invariants(state, deposits=deposits, insurance_stakes={}, records_complete=True)
    failed = [r.name for r in broken if not r.ok]
    assert failed == ["perp 0 (SOL-PERP) positions sum to zero with the AMM"]
    short = check_invariants(
        state, deposits={0: deposits[0] + 1}, insurance_stakes={}, records_complete=True
    )
    assert "spot 0 (USDC) tokens conserved" in [r.name for r in short if not r.ok]


def test_quote_flows_through_fills_add_up_to_zero() -> None:
    w, fills = _filled_world_and_fills()
    amm_fill = fills[1]
    # a buyer paid the vAMM's curve its quote less the spread surplus the market kept
    basis = amm_fill.quote_asset_amount - amm_fill.quote_asset_amount_surplus
    flows = QuoteFlows(
        amm_cost_basis={0: basis},
        settled_pnl={},
        lp_settled_quote={},
        liquidation_if_fees={},
        repeg_costs={},
        other={},
    )
    state = w.program.state
    deposits = {0: 4 * 20_000 * QUOTE_PRECISION}

    def quote_flow() -> list[InvariantResult]:
        results = check_invariants(
            state, deposits=deposits, insurance_stakes={}, records_complete=True, flows=flows
        )
        return [r for r in results if "through fills" in r.name]

    [result] = quote_flow()
    assert result.ok, result
    assert result.detail.endswith("= 0")
    user_of(w, MAKER_1).perp_positions[0].quote_asset_amount += 1
    [broken] = quote_flow()
    assert not broken.ok
    assert broken.detail.endswith("= 1")


def test_book_differences_are_named() -> None:
    order = _order(1, order_type=OrderType.Limit, price=150 * P)
    node = {(ALICE, 1): order, (ALICE, 2): _order(2)}
    assert diff_orders(dict(node), node) == ""
    book = {(ALICE, 1): replace(order, base_asset_amount_filled=1), (FILLER_KEY, 3): _order(3)}
    text = diff_orders(book, node)
    assert "1 missing from the book" in text
    assert "1 not on the node" in text
    assert "1 differ" in text


def test_order_events_round_trip_into_the_compared_orders() -> None:
    order = _order(5, order_type=OrderType.Limit, price=150 * P, post_only=True)
    event = OrderEvent.from_order(
        order,
        seq=1,
        market_seq=1,
        slot=10,
        ts=0,
        action=OrderAction.PLACE,
        authority=ALICE[0],
        sub_account_id=0,
    )
    assert event.to_order() == order


# --- the command line ----------------------------------------------------------------------------
def test_arguments_become_a_config() -> None:
    args = build_parser().parse_args(
        [
            "--slots",
            "30",
            "--seed",
            "9",
            "--markets",
            "0,2",
            "--crash-at",
            "off",
            "--fast-forward-at",
            "0.5,0.8",
            "--bots",
            "filler, trigger",
        ]
    )
    config = config_from_args(args)
    assert (config.slots, config.seed, config.markets, config.crash_at) == (30, 9, (0, 2), None)
    assert config.bots == ("filler", "trigger")
    assert config.crash_step is None
    assert config.fast_forward_steps == (15, 24)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--markets", "x"])


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert keepers_main(["demo", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--slots", "--seed", "--summary", "--broker", "--slot-ms"):
        assert flag in text


REQUIRED_KEYS = (
    "orders_by_type",
    "fills_by_layer",
    "rewards",
    "funding_updates",
    "rejections_by_code",
    "latency_ms",
    "invariants_ok",
    "liquidations",
    "bankruptcies",
    "insurance_fund",
    "revenue_settled",
)


def test_a_short_demo_fills_in_every_layer_and_keeps_the_invariants(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    out = io.StringIO()
    from keepers.demo import main as demo_main

    status = demo_main(
        ["--slots", "140", "--seed", "1", "--summary", str(summary), "--no-live"], out=out
    )
    report = json.loads(summary.read_text())
    assert status == 0, out.getvalue()
    for key in REQUIRED_KEYS:
        assert key in report
    assert set(report["fills_by_layer"]) == {"jit", "dlob", "amm"}
    assert all(report["fills_by_layer"][layer] > 0 for layer in ("jit", "dlob", "amm")), report
    assert report["invariants_ok"] is True
    assert set(report["latency_ms"]) >= {"p50", "p99"}
    assert set(report["insurance_fund"]) >= {"before", "after"}
    assert report["insurance_fund"]["before"] == 250_000 * QUOTE_PRECISION
    assert report["records"]["missing"] == 0
    # the traders placed every kind of order the exchange has
    assert {"market", "limit", "signed_intent"} <= set(report["orders_by_type"])
    assert report["funding_updates"] >= 1  # after the fast-forward to the next funding time
    assert "invariants hold" in out.getvalue()


# --- a trader's exposure -------------------------------------------------------------------------
class _Nothing:
    """A sender, view and reader the decisions under test never reach."""


def _trader(profile: TraderProfile) -> Trader:
    nothing: Any = _Nothing()
    return Trader(
        profile,
        Keypair.from_seed(b"\x03" * 32),
        sender=nothing,
        view=nothing,
        reader=nothing,
        markets={0: SOL_PERP},
        publish_intent=nothing,
        on_intent=lambda *_: None,
        seed=1,
    )


def test_a_trader_counts_open_orders_and_unconfirmed_ones_against_its_cap() -> None:
    # $10,000 at 300% is $30,000 of SOL at $150: a cap of 200 SOL
    profile = TraderProfile(name="t", collateral=10_000 * QUOTE_PRECISION, max_leverage_pct=300)
    trader = _trader(replace(profile, long_pct=100))
    trader.positions = {0: 150 * BASE_PRECISION}
    trader.open_bids = {0: 30 * BASE_PRECISION}
    trader.pending = {(0, LONG): 5 * BASE_PRECISION}
    assert trader.exposure(0, LONG) == 185 * BASE_PRECISION
    assert trader.choose_direction(0, 150 * P) == (LONG, False, 15 * BASE_PRECISION)
    trader.pending[(0, LONG)] = 20 * BASE_PRECISION  # 205 SOL could be long: nothing to add
    assert trader.choose_direction(0, 150 * P) is None
    # past the cap a trader that does not hold trades back down, reduce-only
    trader.positions = {0: 201 * BASE_PRECISION}
    assert trader.choose_direction(0, 150 * P) == (SHORT, True, 0)
    holder = _trader(replace(profile, long_pct=100, hold_at_cap=True))
    holder.positions = {0: 201 * BASE_PRECISION}
    assert holder.choose_direction(0, 150 * P) is None
    # a short's exposure counts the open asks (negative) the other way
    trader.positions = {0: -10 * BASE_PRECISION}
    trader.open_asks = {0: -40 * BASE_PRECISION}
    trader.pending = {}
    assert trader.exposure(0, SHORT) == 50 * BASE_PRECISION


# --- the bots' configuration ---------------------------------------------------------------------
def test_the_demo_configures_every_bot_it_finds() -> None:
    names, missing = available_bots([*CORE_BOTS, "no-such-bot"])
    assert names == list(CORE_BOTS)
    assert missing == {"no-such-bot": "not available in this install"}
    config = bot_config(
        DemoConfig(markets=(0, 2)),
        cluster="demo",
        node_url="http://127.0.0.1:1",
        broker_url="mqtt://127.0.0.1:2",
        bot_names=names,
    )
    assert config.bus.url == "mqtt://127.0.0.1:2"
    assert config.bot("filler").interval_s == 0.1
    keys = {name: demo_keypair(1, f"bot/{name}") for name in names}
    prepared = prepare_bots(
        config,
        names,
        load_key=lambda path: LoadedKeypair(
            keys[path.removeprefix("demo-key:")], Path(path), too_open=False
        ),
    )
    jit = next(p for p in prepared if p.setup.name == "jit_maker")
    assert jit.setup.context.params.perp_markets == (0, 2)
    assert jit.setup.context.params.spread_bps == 3
    extended = with_extra(jit, {"users": {}})
    assert extended.setup.context.extra == {"users": {}}
    assert extended.setup.keypair.pubkey == keys["jit_maker"].pubkey


# --- the operator's repeg ------------------------------------------------------------------------
def test_the_operator_repegs_to_the_near_edge_of_the_oracle_band() -> None:
    market = default_program_state(now=1_700_000_000).perp_markets[0]  # SOL-PERP, pegged at $150
    # an oracle at $130 with a 1 bp confidence band ($0.013): the curve's terminal price (the
    # reserve price, no one holds a position) comes down to just above the band's top,
    # 130.013001; with balanced reserves the price is the peg itself
    oracle = OraclePriceData(price=130 * P, confidence=13_000, delay=0)
    assert repeg_candidate(market, oracle) == 130_013_001
    # within 30 bps of the oracle: left alone
    near = OraclePriceData(price=150_300_000, confidence=15_030, delay=0)
    assert repeg_candidate(market, near) is None
