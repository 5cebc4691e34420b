"""The decentralized limit order book: pure, synchronous, built incrementally from order events.

Imports only :mod:`protocol` (layering: ``bots -> keepers -> dlob -> protocol``). The matching
predicates the book uses, ``do_orders_cross`` and ``is_maker_for_taker``, are the protocol's
(``protocol.math.matching``), re-exported here for the book's users.
"""

from dlob.book import DEFAULT_L2_DEPTH, DLOB, MAX_AUCTION_DURATION
from dlob.errors import DLOBError, DuplicateOrder, SlotInThePast, UnbookableOrder, UnknownMarket
from dlob.node import (
    DLOBNode,
    JitAuctionNode,
    L2Level,
    L2OrderBook,
    L3Level,
    L3OrderBook,
    MarketKey,
    NodeKind,
    NodeToFill,
)
from dlob.vamm import (
    VammLevels,
    amm_can_fill_rule,
    get_vamm_l2_levels,
    is_fallback_available_liquidity_source,
    vamm_bid_ask,
)
from protocol.math.matching import do_orders_cross, is_maker_for_taker

__all__ = [
    "DEFAULT_L2_DEPTH",
    "DLOB",
    "MAX_AUCTION_DURATION",
    "DLOBError",
    "DLOBNode",
    "DuplicateOrder",
    "JitAuctionNode",
    "L2Level",
    "L2OrderBook",
    "L3Level",
    "L3OrderBook",
    "MarketKey",
    "NodeKind",
    "NodeToFill",
    "SlotInThePast",
    "UnbookableOrder",
    "UnknownMarket",
    "VammLevels",
    "amm_can_fill_rule",
    "do_orders_cross",
    "get_vamm_l2_levels",
    "is_fallback_available_liquidity_source",
    "is_maker_for_taker",
    "vamm_bid_ask",
]
