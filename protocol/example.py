"""A scripted exchange session through signed transactions: ``python -m protocol.example``.

It builds the default markets (the seed's 12 spot assets and three perps), then has a lender,
a borrower and a trader deposit, borrow, place and cancel orders, lets an hour pass for the
funding crank, and tries three things the program must refuse (a forged signature, a replay,
a borrow past initial margin). Every step is a real ed25519-signed transaction executed by
:class:`~protocol.program.Program`; the output shows what the program recorded or why it
refused, and each account's margin at the end. Deterministic: fixed keys, a manual clock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from protocol.accounts import Accounts
from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import (
    CancelOrder,
    Deposit,
    InitializeUser,
    PlacePerpOrder,
    UpdateFundingRate,
    UpdateOracle,
    Withdraw,
)
from protocol.keys import Keypair
from protocol.markets import default_program_state
from protocol.math.margin import calculate_margin_requirement_and_total_collateral
from protocol.program import Executed, Program
from protocol.state import OrderParams, State
from protocol.state.margin_calculation import MarginContext
from protocol.transaction import Transaction
from protocol.types import (
    MarginRequirementType,
    MarketType,
    OrderType,
    PositionDirection,
    PostOnlyParam,
)

USDC, SOL = 0, 1
SOL_PERP = 0
START_TS = 1_700_000_400  # 400 s past an hour boundary
START_SLOT = 300_000_000


def _price(price: int) -> str:
    whole, frac = divmod(price, PRICE_PRECISION)
    return f"{whole}.{frac:06d}"


def _usd(amount: int) -> str:
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), QUOTE_PRECISION)
    return f"{sign}${whole:,}.{frac:06d}"


class Session:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.oracle_authority = Keypair.from_seed(b"o" * 32)
        state = default_program_state(
            now=START_TS,
            slot=START_SLOT,
            state=State(oracle_authority=self.oracle_authority.pubkey),
        )
        self.program = Program(state)
        self.slot, self.ts = START_SLOT, START_TS

    @property
    def clock(self) -> Clock:
        return Clock(self.slot, self.ts)

    def tick(self, slots: int = 1, seconds: int = 0) -> None:
        self.slot += slots
        self.ts += seconds

    def send(
        self, label: str, ixs: Sequence[Any], signers: Sequence[Keypair]
    ) -> Executed | Rejected:
        tx = Transaction.sign(ixs, self.slot, signers)
        return self.run(label, tx)

    def run(self, label: str, tx: Transaction) -> Executed | Rejected:
        result = self.program.execute(tx, self.clock)
        if isinstance(result, Executed):
            kinds = ", ".join(
                type(r.record).__name__.removesuffix("Record") for r in result.records
            )
            seqs = f"#{result.records[0].seq}-{result.records[-1].seq}" if result.records else ""
            self.out.write(f"slot {self.slot}  ok       {label:<52} {seqs:>9}  {kinds}\n")
        else:
            where = f" [{result.field}]" if result.field else ""
            self.out.write(f"slot {self.slot}  REFUSED  {label:<52} {result.code.name}{where}\n")
        self.tick()
        return result

    def margin_line(self, name: str, kp: Keypair) -> str:
        user = self.program.state.users[(kp.pubkey, 0)]
        view = Accounts(self.program.state, self.clock)
        calc = calculate_margin_requirement_and_total_collateral(
            user, view, MarginContext.standard(MarginRequirementType.Initial)
        )
        return (
            f"  {name:<7} collateral {_usd(calc.total_collateral):>16}   initial requirement "
            f"{_usd(calc.margin_requirement):>14}   free {_usd(calc.get_free_collateral()):>16}"
        )


def main(out: TextIO = sys.stdout) -> int:
    s = Session(out)
    alice, bob, carol = (Keypair.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
    out.write("drift-keepers protocol example: signed transactions through the program\n\n")

    s.send(
        "Alice opens an account, lends 10,000 USDC",
        [InitializeUser(alice.pubkey, 0), Deposit(alice.pubkey, 0, USDC, 10_000 * QUOTE_PRECISION)],
        [alice],
    )
    s.send(
        "Bob opens an account, deposits 20 SOL",
        [InitializeUser(bob.pubkey, 0), Deposit(bob.pubkey, 0, SOL, 20 * BASE_PRECISION)],
        [bob],
    )
    s.send(
        "Bob borrows 1,000 USDC against his SOL",
        [Withdraw(bob.pubkey, 0, USDC, 1_000 * QUOTE_PRECISION)],
        [bob],
    )
    s.send(
        "Bob tries to borrow 5,000 USDC more",
        [Withdraw(bob.pubkey, 0, USDC, 5_000 * QUOTE_PRECISION)],
        [bob],
    )

    s.send(
        "Carol opens an account, deposits 2,000 USDC",
        [InitializeUser(carol.pubkey, 0), Deposit(carol.pubkey, 0, USDC, 2_000 * QUOTE_PRECISION)],
        [carol],
    )
    sol_price = s.program.state.oracles["SOL/USD"].price
    bid = OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        PositionDirection.Long,
        5 * BASE_PRECISION,
        SOL_PERP,
        price=sol_price - sol_price // 100,
        post_only=PostOnlyParam.MustPostOnly,
    )
    s.send(
        "Carol bids for 5 SOL-PERP 1% under the oracle",
        [PlacePerpOrder(carol.pubkey, 0, bid)],
        [carol],
    )
    market = OrderParams(
        OrderType.Market, MarketType.Perp, PositionDirection.Short, BASE_PRECISION, SOL_PERP
    )
    s.send(
        "Carol sells 1 SOL-PERP at market (auction derived)",
        [PlacePerpOrder(carol.pubkey, 0, market)],
        [carol],
    )
    order = s.program.state.users[(carol.pubkey, 0)].orders[-1]
    out.write(
        f"{'':>17}auction {_price(order.auction_start_price)} -> "
        f"{_price(order.auction_end_price)} over {order.auction_duration} slots\n"
    )
    s.send("Carol cancels her bid", [CancelOrder(carol.pubkey, 0, order_id=1)], [carol])

    forged = Transaction.sign([Withdraw(alice.pubkey, 0, USDC, QUOTE_PRECISION)], s.slot, [carol])
    forged = Transaction(
        forged.instructions, forged.recent_slot, (alice.pubkey,), forged.signatures
    )
    s.run("Carol forges Alice's signature on a withdraw", forged)
    deposit = Transaction.sign([Deposit(alice.pubkey, 0, USDC, QUOTE_PRECISION)], s.slot, [alice])
    s.run("Alice deposits 1 USDC", deposit)
    s.run("... and someone replays that transaction", deposit)

    s.tick(slots=9_000, seconds=3_600)
    s.send(
        "The oracle publishes SOL",
        [UpdateOracle("SOL/USD", sol_price + sol_price // 50, sol_price // 1000)],
        [s.oracle_authority],
    )
    s.send("A keeper cranks SOL-PERP funding on the hour", [UpdateFundingRate(SOL_PERP)], [carol])
    s.send("... and again, too early", [UpdateFundingRate(SOL_PERP)], [carol])

    out.write("\nMargin (initial) at the end:\n")
    for name, kp in (("Alice", alice), ("Bob", bob), ("Carol", carol)):
        out.write(s.margin_line(name, kp) + "\n")
    out.write(f"\n{s.program.next_seq - 1} records committed, gap-free.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
