"""Shared pieces of the node tests: a config, fixed keys and signed transactions.

Genesis is the default market table (:func:`protocol.markets.default_program_state`) with
SOL at $150 and BTC at $60,000; SOL-PERP (perp 0) has tick 100 ($0.0001) and step 0.01 SOL,
BTC-PERP (perp 1) tick 100_000 ($0.10) and step 0.0001 BTC. Keys come from fixed seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keepers.node import NodeConfig
from protocol.constants import BASE_PRECISION, PRICE_PRECISION, QUOTE_PRECISION
from protocol.instructions import (
    CancelOrder,
    Deposit,
    InitializeUser,
    PlacePerpOrder,
    UpdateOracle,
)
from protocol.keys import Keypair
from protocol.state import OrderParams
from protocol.transaction import Transaction
from protocol.types import MarketType, OrderType, PositionDirection, PostOnlyParam

GENESIS_SLOT = 5_000
GENESIS_TS = 1_700_000_000
USDC = 0
SOL_PERP = 0
BTC_PERP = 1
SOL_PRICE = 150 * PRICE_PRECISION
BTC_PRICE = 60_000 * PRICE_PRECISION


def keypair(n: int) -> Keypair:
    return Keypair.from_seed(bytes([n]) * 32)


ORACLE = keypair(200)


def node_config(journal: Path, **changes: Any) -> NodeConfig:
    values: dict[str, Any] = {
        "journal": journal,
        "port": 0,
        "genesis_slot": GENESIS_SLOT,
        "genesis_ts": GENESIS_TS,
        "oracle_authority": ORACLE.pubkey,
        "verify_workers": 1,
    }
    values.update(changes)
    return NodeConfig(**values)


def sign(ixs: list[Any], slot: int, *signers: Keypair) -> bytes:
    return Transaction.sign(ixs, slot, list(signers)).to_bytes()


def open_account(kp: Keypair, slot: int, usdc: int = 10_000) -> bytes:
    """Sign up and deposit ``usdc`` whole USDC."""
    return sign(
        [InitializeUser(kp.pubkey, 0), Deposit(kp.pubkey, 0, USDC, usdc * QUOTE_PRECISION)],
        slot,
        kp,
    )


def deposit(kp: Keypair, slot: int, amount: int) -> bytes:
    """Deposit ``amount`` USDC base units (QUOTE_PRECISION)."""
    return sign([Deposit(kp.pubkey, 0, USDC, amount)], slot, kp)


def limit_params(
    market_index: int, direction: PositionDirection, price: int, base: int, uid: int = 0
) -> OrderParams:
    return OrderParams(
        OrderType.Limit,
        MarketType.Perp,
        direction,
        base,
        market_index,
        price=price,
        user_order_id=uid,
        post_only=PostOnlyParam.MustPostOnly,
    )


def bid(kp: Keypair, slot: int, market_index: int, price: int, base: int, uid: int = 0) -> bytes:
    """A resting post-only bid."""
    params = limit_params(market_index, PositionDirection.Long, price, base, uid)
    return sign([PlacePerpOrder(kp.pubkey, 0, params)], slot, kp)


def sol_bid(kp: Keypair, slot: int, dollars: int, uid: int = 0) -> bytes:
    """Bid for 0.1 SOL-PERP at ``dollars`` (below the $150 oracle: it rests)."""
    return bid(kp, slot, SOL_PERP, dollars * PRICE_PRECISION, BASE_PRECISION // 10, uid)


def cancel(kp: Keypair, slot: int, order_id: int) -> bytes:
    return sign([CancelOrder(kp.pubkey, 0, order_id=order_id)], slot, kp)


def oracle_update(slot: int, oracle_id: str, price: int) -> bytes:
    return sign([UpdateOracle(oracle_id, price, price // 10_000)], slot, ORACLE)
