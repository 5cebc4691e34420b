"""Deterministic streams of signed transactions for the ledger tests and the crash helper.

Built on :mod:`tests.protocol.world`: the same genesis (``make_state``), keys and clock
convention. :func:`build_rounds` produces rounds of wire-format transactions, one round per
slot, by running every candidate through a shadow :class:`~protocol.program.Program` and
keeping only those it accepts, so executing the rounds in order accepts every transaction.
The same ``(seed, ...)`` always yields the same bytes (ed25519 signing is deterministic).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from protocol.accounts import ProgramState
from protocol.clock import Clock
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.instructions import (
    CancelOrder,
    Deposit,
    InitializeUser,
    PlacePerpOrder,
    UpdateOracle,
    Withdraw,
)
from protocol.keys import Keypair
from protocol.program import Executed, Program
from protocol.state import OrderParams
from protocol.state_hash import state_hash
from protocol.transaction import Transaction
from protocol.types import MarketType, OrderStatus, OrderType, PositionDirection, PostOnlyParam
from tests.protocol.world import (
    ORACLE_AUTHORITY,
    SOL,
    SOL_PERP,
    SOL_UNIT,
    START_SLOT,
    START_TS,
    USDC,
    USDC_UNIT,
    keypair,
    make_state,
)

SOL_PRICE = 100 * PRICE_PRECISION


def clock_at(round_index: int) -> Clock:
    """Round ``r`` runs at slot START_SLOT + r, 400 ms per slot (World.advance's rounding)."""
    return Clock(START_SLOT + round_index, START_TS + (round_index * 4 + 9) // 10)


@dataclass
class Round:
    clock: Clock
    txs: list[bytes] = field(default_factory=list)


def _limit(direction: PositionDirection, price: int, size: int, uid: int) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        direction,
        size,
        SOL_PERP,
        price=price,
        user_order_id=uid,
        post_only=PostOnlyParam.MustPostOnly,
    )


def _candidate(rng: random.Random, kp: Keypair, program: Program) -> Any:
    user = program.state.users[(kp.pubkey, 0)]
    open_ids = [o.order_id for o in user.orders if o.status == OrderStatus.Open]
    kind = rng.randrange(6)
    if kind == 0:
        return Deposit(kp.pubkey, 0, USDC, rng.randrange(1, 50) * USDC_UNIT)
    if kind == 1:
        return Withdraw(kp.pubkey, 0, USDC, rng.randrange(1, 20) * USDC_UNIT)
    if kind == 2 and open_ids:
        return CancelOrder(kp.pubkey, 0, order_id=rng.choice(open_ids))
    if kind == 3:
        return Deposit(kp.pubkey, 0, SOL, rng.randrange(1, 10) * SOL_UNIT // 10)
    # resting post-only orders 5-15% away from the oracle, on tick (100)
    direction = rng.choice((PositionDirection.Long, PositionDirection.Short))
    away = SOL_PRICE * rng.randrange(5, 16) // 100
    price = SOL_PRICE - away if direction == PositionDirection.Long else SOL_PRICE + away
    size = rng.randrange(1, 20) * BASE_PRECISION // 100
    return PlacePerpOrder(kp.pubkey, 0, _limit(direction, price, size, rng.randrange(1, 200)))


def build_rounds(
    seed: int, n_users: int, n_rounds: int, per_round: int
) -> tuple[list[Round], list[str]]:
    """Rounds of accepted transactions, and the expected state hash after each round
    (computed by the shadow program, an in-process reference)."""
    rng = random.Random(seed)
    program = Program(genesis())
    users = [keypair(10 + i) for i in range(n_users)]
    rounds: list[Round] = []
    hashes: list[str] = []

    def accept(rnd: Round, tx: Transaction) -> None:
        result = program.execute(tx, rnd.clock)
        if isinstance(result, Executed):
            rnd.txs.append(tx.to_bytes())

    first = Round(clock_at(0))
    for kp in users:
        accept(
            first,
            Transaction.sign(
                [
                    InitializeUser(kp.pubkey, 0),
                    Deposit(kp.pubkey, 0, USDC, 1_000 * USDC_UNIT),
                ],
                first.clock.slot,
                [kp],
            ),
        )
    rounds.append(first)
    hashes.append(state_hash(program.state, program.next_seq))
    for r in range(1, n_rounds):
        rnd = Round(clock_at(r))
        if r % 7 == 0:
            price = SOL_PRICE + rng.randrange(-2, 3) * PRICE_PRECISION // 10
            oracle = UpdateOracle("SOL/USD", price, price // 1000)
            accept(rnd, Transaction.sign([oracle], rnd.clock.slot, [ORACLE_AUTHORITY]))
        for _ in range(per_round * 10):  # bounded: rejected candidates are retried
            if len(rnd.txs) >= per_round:
                break
            kp = rng.choice(users)
            accept(rnd, Transaction.sign([_candidate(rng, kp, program)], rnd.clock.slot, [kp]))
        rounds.append(rnd)
        hashes.append(state_hash(program.state, program.next_seq))
    return rounds, hashes


def genesis() -> ProgramState:
    """The scenario's genesis: the test world's markets with SOL at $100."""
    return make_state(SOL_PRICE)
