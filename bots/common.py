"""Pieces the bots share: slot-based TTL sets, the signed intents seen on the bus, a market
reader over a :class:`~keepers.runtime.view.View`, and small outcome helpers.

Every bot here is a pure decider: what it remembers between ticks (what it tried, what the
program told it) lives in these small structures, keyed by slots, never by wall-clock time,
so a test drives them by handing over views with chosen slots.

Units are the protocol's: slots, unix seconds, prices PRICE_PRECISION, base BASE_PRECISION.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Set
from typing import Any, Final, Generic, TypeVar

from dlob import DLOBNode
from keepers.bus.client import Delivery
from keepers.bus.schemas import IntentMessage
from keepers.config import ConfigError
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.view import View
from protocol.error_codes import ErrorCode
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.state import State
from protocol.state.user import UserKey

BPS: Final = 10_000
"""Basis points in one (``spread_bps``, ``max_leverage_bps``, ... are out of this)."""

K = TypeVar("K", bound=Hashable)

NodeKey = tuple[UserKey, int | bytes]
"""An order in the book: ``(user, order id)``, or ``(user, uuid)`` for a signed intent."""


def node_key(node: DLOBNode) -> NodeKey:
    if node.uuid is not None:
        return (node.user, node.uuid)
    return (node.user, node.order_id)


class SlotTtl(Generic[K]):
    """Keys blocked until a slot: ``blocked(key, slot)`` while ``slot < until``.

    Blocking a key that is already blocked keeps the later of the two ends; :meth:`set`
    overwrites it (to shorten a block). :meth:`prune` forgets every block that has ended, so
    the set stays as small as the keys a bot is currently holding back.
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[K, int] = {}

    def block(self, key: K, until_slot: int) -> None:
        current = self._until.get(key)
        if current is None or until_slot > current:
            self._until[key] = until_slot

    def set(self, key: K, until_slot: int) -> None:
        self._until[key] = until_slot

    def release(self, key: K) -> None:
        self._until.pop(key, None)

    def blocked(self, key: K, slot: int) -> bool:
        until = self._until.get(key)
        return until is not None and slot < until

    def until(self, key: K) -> int | None:
        return self._until.get(key)

    def prune(self, slot: int) -> None:
        ended = [key for key, until in self._until.items() if until <= slot]
        for key in ended:
            del self._until[key]

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, key: object) -> bool:
        return key in self._until


class IntentCache:
    """Signed intents seen on the bus, by ``(user, uuid)``, kept until their auction ends.

    The DLOB holds an intent as an order; placing or filling it needs what the user signed
    (the intent, the signer and the signature), which only the bus message carries.
    """

    __slots__ = ("_intents",)

    def __init__(self) -> None:
        self._intents: dict[tuple[UserKey, bytes], IntentMessage] = {}

    def ingest(self, events: Iterable[Delivery]) -> None:
        for delivery in events:
            if isinstance(delivery.message, IntentMessage):
                self.add(delivery.message)

    def add(self, message: IntentMessage) -> None:
        user = (bytes.fromhex(message.authority), message.sub_account_id)
        self._intents[(user, bytes.fromhex(message.uuid))] = message

    def get(self, user: UserKey, uuid: bytes) -> IntentMessage | None:
        return self._intents.get((user, uuid))

    def prune(self, slot: int) -> None:
        """Forget intents whose auction ended before ``slot`` (the program refuses them)."""
        over = [
            key
            for key, message in self._intents.items()
            if message.slot + (message.params.auction_duration or 0) < slot
        ]
        for key in over:
            del self._intents[key]

    def __len__(self) -> int:
        return len(self._intents)


class MissingAccount(LookupError):
    """The view has no copy of a market or oracle the math asked for."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"the view holds no {kind} {key!r}")
        self.kind = kind
        self.key = key


class ViewReader:
    """A :class:`protocol.accounts.MarketReader` over a view's cached markets and oracles.

    ``state`` is the exchange configuration the margin math reads (oracle guard rails,
    liquidation buffer); the view does not carry it, so the defaults stand in unless a bot is
    given the node's. A missing market or oracle is :class:`MissingAccount`.
    """

    __slots__ = ("_state", "_view")

    def __init__(self, view: View, state: State | None = None) -> None:
        self._view = view
        self._state = state if state is not None else State()

    @property
    def state(self) -> State:
        return self._state

    def spot_market(self, market_index: int) -> SpotMarket:
        market = self._view.spot_markets.get(market_index)
        if market is None:
            raise MissingAccount("spot market", market_index)
        return market

    def perp_market(self, market_index: int) -> PerpMarket:
        market = self._view.perp_markets.get(market_index)
        if market is None:
            raise MissingAccount("perp market", market_index)
        return market

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData:
        data = self._view.oracle_price_data(oracle_id)
        if data is None:
            raise MissingAccount("oracle", oracle_id)
        return data


def rejection(outcome: Outcome) -> ErrorCode | None:
    """The program's code when ``outcome`` is a rejection (sent or simulated), else ``None``."""
    if outcome.status is not Status.REJECTED:
        return None
    return outcome.error_code


_INDEXED_FIELD: Final = re.compile(r"^(?P<name>\w+)\[(?P<index>\d+)\]$")


def field_index(field: str | None, name: str) -> int | None:
    """``3`` for the rejection field ``"makers[3]"`` when ``name`` is ``"makers"``.

    The program names the list entry at fault in the rejection's ``field`` (a structured
    value, not message text), e.g. the maker reference whose order is gone."""
    if field is None:
        return None
    match = _INDEXED_FIELD.match(field)
    if match is None or match.group("name") != name:
        return None
    return int(match.group("index"))


def require(condition: bool, key: str, detail: str) -> None:
    """A parameter check of a bot's params dataclass: :class:`ConfigError` naming ``key``."""
    if not condition:
        raise ConfigError(key, detail)


def short_hex(authority: bytes) -> str:
    """The first 8 hex digits of a public key, for correlation ids."""
    return authority[:4].hex()


P = TypeVar("P")


def bot_params(given: Any, params_type: type[P], bot: str) -> P:
    """A bot's validated parameters: ``given`` (``BotContext.params``), or the defaults when
    none were given; :class:`TypeError` naming the bot when they are of another type."""
    params = given if given is not None else params_type()
    if not isinstance(params, params_type):
        raise TypeError(f"{bot} params must be {params_type.__name__}, got {type(params).__name__}")
    return params


def settle_groups(
    items: Iterable[tuple[UserKey, int]],
    solo: Set[tuple[UserKey, int]],
    max_per_tx: int,
) -> list[list[tuple[UserKey, int]]]:
    """``(user, perp market)`` settlements grouped into transactions: those of one market
    batched up to ``max_per_tx`` (markets in index order, items in the order given), then each
    item in ``solo`` (one whose batch the program refused) in a transaction of its own."""
    by_market: dict[int, list[tuple[UserKey, int]]] = {}
    singles: list[tuple[UserKey, int]] = []
    for item in items:
        if item in solo:
            singles.append(item)
        else:
            by_market.setdefault(item[1], []).append(item)
    groups: list[list[tuple[UserKey, int]]] = []
    for market_index in sorted(by_market):
        batch = by_market[market_index]
        for start in range(0, len(batch), max_per_tx):
            groups.append(batch[start : start + max_per_tx])
    groups.extend([item] for item in singles)
    return groups
