"""The liquidator's margin re-check after one oracle move: full scan versus incremental.

    python -m benchmarks.liquidator_margin [--users 100000] [--moves 5] [--seed 7]

Every user has four positions across five markets of the default market table
(:mod:`protocol.markets`): a USDC deposit, and three of SOL deposits or borrows, wBTC deposits
or borrows, SOL-PERP, BTC-PERP and ETH-PERP positions, built directly as protocol state (no
transactions). Then ETH/USD moves (-10%, then a few more moves), and the liquidator must know
again who is liquidatable, most underwater first:

* **full scan**: the protocol's own calculation
  (``calculate_margin_requirement_and_total_collateral_and_liability_info`` in the liquidation
  context, which ``can_be_liquidated`` runs) for every user;
* **margin_view rebuild**: :meth:`bots.margin_view.MarginView.rebuild`, every position re-read
  and re-valued in columns;
* **incremental**: :meth:`~bots.margin_view.MarginView.update_oracle` re-values only the
  ETH-PERP positions and moves the change into their users' totals, then
  :meth:`~bots.margin_view.MarginView.liquidatable` ranks the top candidates.

Goals (issue 6): incremental <= 50 ms for the users touching the moved market; full scan <= 2 s.
The run also checks the view against the full scan: the same users liquidatable, and the exact
totals of a sample of users.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from bots.margin_view import MarginView
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.markets import default_program_state
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
)
from protocol.state import OraclePriceData, User
from protocol.state.margin_calculation import MarginContext
from protocol.state.user import PerpPosition, SpotPosition
from protocol.types import MarginRequirementType, MarketType, SpotBalanceType

Q = QUOTE_PRECISION
USDC, SOL, WBTC = 0, 1, 3
SOL_PERP, BTC_PERP, ETH_PERP = 0, 1, 2
KINDS = ("sol", "wbtc", "sol_perp", "btc_perp", "eth_perp")
PRICES = {"SOL/USD": 150, "BTC/USD": 60_000, "ETH/USD": 3_000}


def _perp(rng: random.Random, market: int, price: int, max_base: int, step: int) -> PerpPosition:
    base = rng.randint(1, max_base // step) * step * rng.choice((1, -1))
    entry = price * rng.randint(95, 105) // 100
    quote = -base * entry * PRICE_PRECISION // BASE_PRECISION
    return PerpPosition(market, base_asset_amount=base, quote_asset_amount=quote)


def make_users(n: int, seed: int) -> list[User]:
    rng = random.Random(seed)
    users = []
    for i in range(n):
        spot = [SpotPosition(USDC, scaled_balance=rng.randint(1_000, 20_000) * Q * 1_000)]
        perps = []
        for kind in sorted(rng.sample(KINDS, 3)):
            if kind == "sol":  # 1..100 SOL deposited or 1..20 borrowed (scaled = tokens)
                borrow = rng.random() < 0.3
                tokens = rng.randint(1, 20 if borrow else 100) * BASE_PRECISION
                balance_type = SpotBalanceType.Borrow if borrow else SpotBalanceType.Deposit
                spot.append(SpotPosition(SOL, scaled_balance=tokens, balance_type=balance_type))
            elif kind == "wbtc":  # 8 decimals: scaled = tokens * 10
                borrow = rng.random() < 0.3
                tokens = rng.randint(100_000, 10_000_000 if borrow else 50_000_000)
                balance_type = SpotBalanceType.Borrow if borrow else SpotBalanceType.Deposit
                spot.append(
                    SpotPosition(WBTC, scaled_balance=tokens * 10, balance_type=balance_type)
                )
            elif kind == "sol_perp":
                perps.append(_perp(rng, SOL_PERP, 150, 200 * BASE_PRECISION, BASE_PRECISION // 100))
            elif kind == "btc_perp":
                perps.append(_perp(rng, BTC_PERP, 60_000, BASE_PRECISION, BASE_PRECISION // 10_000))
            else:
                perps.append(
                    _perp(rng, ETH_PERP, 3_000, 20 * BASE_PRECISION, BASE_PRECISION // 1_000)
                )
        users.append(
            User(
                authority=i.to_bytes(32, "big"),
                spot_positions=sorted(spot, key=lambda p: p.market_index),
                perp_positions=perps,
            )
        )
    return users


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    genesis = default_program_state(prices={k: v * PRICE_PRECISION for k, v in PRICES.items()})
    users = make_users(args.users, args.seed)
    view = MarginView(genesis.state)
    view.sync_markets(genesis.perp_markets, genesis.spot_markets)
    view.sync_oracles({k: o.price_data(0) for k, o in genesis.oracles.items()})
    reader = view.markets
    context = MarginContext.liquidation(view.margin_buffer)

    rebuild_s, rebuild_cpu = _timed(lambda: view.rebuild(users))
    touching = view.users_in_market(MarketType.Perp, ETH_PERP)

    # the moves: -10% first, then small steps around it
    eth = PRICES["ETH/USD"] * PRICE_PRECISION
    moves = [eth * 90 // 100] + [eth * (88 + k % 5) // 100 for k in range(args.moves - 1)]
    incremental: list[float] = []
    incremental_cpu: list[float] = []
    ranked = []
    for price in moves:
        wall, cpu = time.perf_counter(), time.process_time()
        valued = view.update_oracle("ETH/USD", OraclePriceData(price, 0, 0))
        ranked = view.liquidatable(limit=64)
        incremental.append(time.perf_counter() - wall)
        incremental_cpu.append(time.process_time() - cpu)
        assert valued == touching

    def full_scan() -> set[tuple[bytes, int]]:
        out = set()
        for user in users:
            calc = calculate_margin_requirement_and_total_collateral_and_liability_info(
                user, reader, context
            )
            if not calc.meets_margin_requirement():
                out.add(user.key)
        return out

    scanned: set[tuple[bytes, int]] = set()

    def run_scan() -> None:
        scanned.update(full_scan())

    full_s, full_cpu = _timed(run_scan)

    # the view against the protocol: the same users liquidatable, exact totals on a sample
    listed = {m.key for m in view.liquidatable()}
    assert listed == scanned, (len(listed), len(scanned))
    assert [m.key for m in ranked] == [m.key for m in view.liquidatable(limit=64)]
    initial = MarginContext.standard(MarginRequirementType.Initial)
    for user in random.Random(args.seed).sample(users, min(1_000, len(users))):
        calc = calculate_margin_requirement_and_total_collateral_and_liability_info(
            user, reader, context
        )
        init = calculate_margin_requirement_and_total_collateral_and_liability_info(
            user, reader, initial
        )
        m = view.margin(user.key)
        assert m is not None
        assert (m.total_collateral, m.margin_requirement) == (
            calc.total_collateral,
            calc.margin_requirement,
        )
        assert (m.total_collateral_buffer, m.margin_requirement_plus_buffer) == (
            calc.total_collateral_buffer,
            calc.margin_requirement_plus_buffer,
        )
        assert (m.initial_total_collateral, m.initial_margin_requirement) == (
            init.total_collateral,
            init.margin_requirement,
        )

    one_user = statistics.median(_timed(lambda u=u: view.update_user(u))[0] for u in users[:200])
    rows = sum(len(u.spot_positions) + len(u.perp_positions) for u in users)
    median_ms = statistics.median(incremental) * 1e3
    median_cpu_ms = statistics.median(incremental_cpu) * 1e3
    print(
        f"liquidator margin re-check after one ETH/USD move: {len(users):,} users, "
        f"{rows:,} positions in 5 markets"
    )
    print(f"{'path':<44} {'users':>9} {'wall':>10} {'cpu':>10} {'goal':>9}")
    print(
        f"{'full scan (protocol calculation, every user)':<44} {len(users):>9,} "
        f"{full_s:>8.2f} s {full_cpu:>8.2f} s {'<= 2 s':>9}"
    )
    print(
        f"{'margin_view rebuild (every position)':<44} {len(users):>9,} "
        f"{rebuild_s:>8.2f} s {rebuild_cpu:>8.2f} s {'':>9}"
    )
    print(
        f"{'incremental (margin_view, ETH-PERP users)':<44} {touching:>9,} "
        f"{median_ms:>7.1f} ms {median_cpu_ms:>7.1f} ms {'<= 50 ms':>9}"
    )
    print(
        f"(incremental: median of {len(incremental)} moves, wall min {min(incremental) * 1e3:.1f}"
        f" / max {max(incremental) * 1e3:.1f} ms, re-valuing {touching:,} positions and ranking "
        f"the top 64 of {view.count_liquidatable():,} liquidatable; one account update: "
        f"{one_user * 1e6:.0f} us. The view matched the full scan on who is liquidatable and on "
        f"all six totals of 1,000 sampled users.)"
    )


if __name__ == "__main__":
    main()
