"""Order nodes of the DLOB and the values its queries return.

A node is one live order (or one off-chain signed intent) of one user account, held by exactly
one sorted container of its market. Its ``order`` is the protocol's own
:class:`protocol.state.user.Order`, so every price the book reports is computed by the
protocol's functions on the very object the program would see.

Units are the program's: prices PRICE_PRECISION (1e6), sizes BASE_PRECISION (1e9) for perp
markets and the mint's units for spot markets. Sizes in results are *unfilled* amounts
(``base_asset_amount - base_asset_amount_filled``), always > 0 for a node in the book.

Identity: an on-chain order is ``(user, order_id)`` (order ids are per user account, so two
users may share one); a signed intent is ``(user, uuid)`` and lives in its own index, so an
intent and an on-chain order of the same user never collide either.

Sort entries: every container holds 5-tuples ``(primary, secondary, user, id, node)``. The
first four fields are unique within a container (``secondary`` separates on-chain orders from
intents where both share a container), so tuple comparison never reaches ``node``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocol.state.user import Order, UserKey
from protocol.types import MarketType, PositionDirection


class NodeKind(IntEnum):
    """The container a node lives in (one per category, per market and side)."""

    RestingLimit = 0  # fixed-price limit order that can make: key price, then slot
    FloatingLimit = 1  # oracle-pegged limit order that can make: key oracle_price_offset
    TakingLimit = 2  # limit order still in its auction (a taker): key slot
    Market = 3  # market, oracle and triggered trigger-market orders: key slot
    TriggerAbove = 4  # untriggered, fires when oracle > trigger price: key trigger price
    TriggerBelow = 5  # untriggered, fires when oracle < trigger price: key trigger price
    SignedIntent = 6  # off-chain signed order not yet placed (a taker): key slot


RESTING_KINDS = frozenset({NodeKind.RestingLimit, NodeKind.FloatingLimit})
TAKING_KINDS = frozenset({NodeKind.TakingLimit, NodeKind.Market, NodeKind.SignedIntent})

MarketKey = tuple[MarketType, int]
"""A market: (market type, market index)."""

Entry = tuple[int, int, UserKey, int, "DLOBNode"]
"""A sort entry: (primary key, secondary key, user, order id or intent uuid, node)."""


@dataclass(slots=True, eq=False)
class DLOBNode:
    """One order in the book. Hashes by identity; ``alive`` turns False when it leaves."""

    user: UserKey
    order: Order
    kind: NodeKind
    entry: Entry | None = None
    uuid: bytes | None = None  # signed intents only
    alive: bool = True

    @property
    def is_signed_intent(self) -> bool:
        return self.uuid is not None

    @property
    def order_id(self) -> int:
        return self.order.order_id

    @property
    def direction(self) -> PositionDirection:
        return self.order.direction

    def base_asset_amount_unfilled(self) -> int:
        return self.order.base_asset_amount - self.order.base_asset_amount_filled


@dataclass(frozen=True, slots=True)
class NodeToFill:
    """A fill a keeper can submit: ``node`` as taker against ``makers`` (best first).

    ``amm``: the vAMM may fill it too (its price crosses the vAMM's and the AMM is an available
    liquidity source for it). ``expired``: its ``max_ts`` has passed, so a fill cancels it
    (the program pays the filler for that); such a node has no makers and no ``amm``.
    """

    node: DLOBNode
    makers: tuple[DLOBNode, ...] = ()
    amm: bool = False
    expired: bool = False


@dataclass(frozen=True, slots=True)
class JitAuctionNode:
    """An order in its auction and its auction price at the queried slot."""

    node: DLOBNode
    auction_price: int


@dataclass(frozen=True, slots=True)
class L2Level:
    """Aggregated size at one price; ``sources`` splits it, e.g. ``(("dlob", x), ("vamm", y))``."""

    price: int
    size: int
    sources: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class L2OrderBook:
    """Best ``depth`` price levels per side, best first (bids high to low, asks low to high)."""

    bids: tuple[L2Level, ...]
    asks: tuple[L2Level, ...]
    slot: int


@dataclass(frozen=True, slots=True)
class L3Level:
    """One resting order: its current limit price, unfilled size and owner."""

    price: int
    size: int
    user: UserKey
    order_id: int


@dataclass(frozen=True, slots=True)
class L3OrderBook:
    """Every resting order, best first; ties in price by slot, then user, then order id."""

    bids: tuple[L3Level, ...]
    asks: tuple[L3Level, ...]
    slot: int
