"""Settled fills per second through ``Program.execute``, with real ed25519 signatures.

    python -m benchmarks.fills [--fills 2000] [--repeat 3]

Two paths, each a signed transaction that settles exactly one maker-taker fill (position and
market updates, fees, rebate, filler reward, margin checks):

* ``fill_perp_order``: a filler fills a resting taker order against a resting maker ask (the
  taker orders are placed before timing starts);
* ``place_and_take``: the taker places a market-able order and it fills in the same instruction.

Printed beside the bare PyNaCl verify rate of the same transactions' messages, measured in the
same run: one signature check per transaction is the ceiling the program cannot beat on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from nacl.signing import VerifyKey

from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, PEG_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.instructions import Deposit, InitializeUser, PlacePerpOrder
from protocol.instructions.fills import FillPerpOrder, MakerOrderRef, PlaceAndTakePerpOrder
from protocol.keys import Keypair
from protocol.markets import default_program_state
from protocol.program import Executed, Program
from protocol.state import OrderParams, State
from protocol.transaction import Transaction
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam

SOL_PERP = 0
USDC = 0
START_SLOT, START_TS = 300_000_000, 1_700_000_400
ORACLE = Keypair.from_seed(b"o" * 32)
ORDER_SIZE = BASE_PRECISION // 10  # 0.1 SOL per fill


def _kp(tag: int, i: int) -> Keypair:
    return Keypair.from_seed(tag.to_bytes(1, "big") + i.to_bytes(31, "big"))


class Bench:
    def __init__(self, takers: int) -> None:
        state = default_program_state(
            now=START_TS, slot=START_SLOT, state=State(oracle_authority=ORACLE.pubkey)
        )
        self.price = state.oracles["SOL/USD"].price
        # the AMM quotes 1% above the oracle, so the maker's ask just above the oracle is better
        amm = state.perp_markets[SOL_PERP].amm
        amm.peg_multiplier = self.price * 101 // 100 * PEG_PRECISION // PRICE_PRECISION
        self.program = Program(state)
        self.slot, self.ts = START_SLOT, START_TS
        self.maker = _kp(1, 0)
        self.filler = _kp(2, 0)
        self.takers = [_kp(3, i) for i in range(takers)]
        for kp, usdc in [(self.maker, 10_000_000), (self.filler, 0)] + [
            (t, 1_000_000) for t in self.takers
        ]:
            ixs: list[object] = [InitializeUser(kp.pubkey, 0)]
            if usdc:
                ixs.append(Deposit(kp.pubkey, 0, USDC, usdc * QUOTE_PRECISION))
            self._ok(Transaction.sign(ixs, self.slot, [kp]))
        ask = OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            PositionDirection.Short,
            100_000 * BASE_PRECISION,
            SOL_PERP,
            price=self.price + self.price // 500,
            post_only=PostOnlyParam.MustPostOnly,
        )
        self._ok(
            Transaction.sign([PlacePerpOrder(self.maker.pubkey, 0, ask)], self.slot, [self.maker])
        )
        self.maker_order = self.program.state.users[(self.maker.pubkey, 0)].orders[-1].order_id

    @property
    def clock(self) -> Clock:
        return Clock(self.slot, self.ts)

    def _ok(self, tx: Transaction) -> Executed:
        result = self.program.execute(tx, self.clock)
        assert isinstance(result, Executed), result
        return result

    def buy(self, limit: int) -> OrderParams:
        return OrderParams(
            OrderType.Limit,
            MarketType.Perp,
            PositionDirection.Long,
            ORDER_SIZE,
            SOL_PERP,
            price=limit,
        )

    def filler_txs(self, n: int) -> list[Transaction]:
        """Place ``n`` taker orders (untimed), then sign one filler transaction per order."""
        limit = self.price + self.price // 100
        placed: list[tuple[Keypair, int]] = []
        while len(placed) < n:
            for t in self.takers:
                if len(placed) == n:
                    break
                self._ok(
                    Transaction.sign([PlacePerpOrder(t.pubkey, 0, self.buy(limit))], self.slot, [t])
                )
                placed.append((t, self.program.state.users[(t.pubkey, 0)].orders[-1].order_id))
            self.slot += 1
        self.slot += 40  # past every auction
        self.ts += 16
        maker = (MakerOrderRef(self.maker.pubkey, 0, self.maker_order),)
        return [
            Transaction.sign(
                [FillPerpOrder(self.filler.pubkey, 0, t.pubkey, 0, oid, maker)],
                self.slot,
                [self.filler],
            )
            for t, oid in placed
        ]

    def place_and_take_txs(self, n: int) -> list[Transaction]:
        limit = self.price + self.price // 100
        maker = (MakerOrderRef(self.maker.pubkey, 0, self.maker_order),)
        txs = []
        for i in range(n):
            t = self.takers[i % len(self.takers)]
            # a distinct user_order_id keeps otherwise identical transactions distinct
            params = self.buy(limit)
            params = OrderParams(
                **{
                    **{f: getattr(params, f) for f in params.__dataclass_fields__},
                    "user_order_id": (i // len(self.takers)) % 255 + 1,
                }
            )
            txs.append(
                Transaction.sign(
                    [PlaceAndTakePerpOrder(t.pubkey, 0, params, maker)],
                    self.slot - (i // 20_000),
                    [t],
                )
            )
        return txs

    def run(self, txs: list[Transaction]) -> float:
        start = time.perf_counter()
        for tx in txs:
            result = self.program.execute(tx, self.clock)
            assert isinstance(result, Executed), result
        return len(txs) / (time.perf_counter() - start)


def verify_rate(txs: list[Transaction]) -> float:
    keys = {pk: VerifyKey(pk) for tx in txs for pk in tx.signers}
    messages = [(keys[tx.signers[0]], tx.message(), tx.signatures[0]) for tx in txs]
    start = time.perf_counter()
    for key, message, sig in messages:
        key.verify(message, sig)
    return len(messages) / (time.perf_counter() - start)


def measure(
    label: str, make: Callable[[Bench, int], list[Transaction]], n: int, repeat: int
) -> tuple[float, float]:
    rates, ceilings = [], []
    for _ in range(repeat):
        bench = Bench(takers=min(n, 200))
        txs = make(bench, n)
        ceilings.append(verify_rate(txs))
        rates.append(bench.run(txs))
    return statistics.median(rates), statistics.median(ceilings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=2_000, help="fills per run (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; medians printed")
    args = parser.parse_args()
    rows = [
        ("fill_perp_order (filler)", *measure("fill", Bench.filler_txs, args.fills, args.repeat)),
        (
            "place_and_take (taker)",
            *measure("pat", Bench.place_and_take_txs, args.fills, args.repeat),
        ),
    ]
    print(f"{'path':<28} {'fills/s':>10} {'verify/s':>10} {'of ceiling':>10}")
    for label, rate, ceiling in rows:
        print(f"{label:<28} {rate:>10,.0f} {ceiling:>10,.0f} {rate / ceiling:>10.1%}")
    print(f"({args.fills} fills per run, median of {args.repeat}; one signature per transaction)")


if __name__ == "__main__":
    main()
