"""The program's account store and the copy-on-write view one transaction executes against.

:class:`ProgramState` is every account the program owns. A transaction never touches it
directly: it gets an :class:`Accounts` view whose accessors hand out *clones* of accounts on
first access. Nothing is written back unless the whole transaction succeeds
(:meth:`Accounts.commit`), so a rejected transaction leaves ``ProgramState`` identical by
construction, however far it got.

Instructions must therefore take every account through the view, never keep references across
transactions, and never mutate the frozen :class:`~protocol.state.State`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from protocol.clock import Clock
from protocol.error_codes import ErrorCode
from protocol.errors import InvalidParameter, ProtocolError
from protocol.records import Record
from protocol.state import (
    OracleAccount,
    OraclePriceData,
    PerpMarket,
    SpotMarket,
    State,
    User,
    UserKey,
    UserStats,
)
from protocol.state.insurance_fund_stake import InsuranceFundStake, InsuranceFundStakeKey


@dataclass(frozen=True, slots=True)
class SignedMsgOrderId:
    """A used signed-intent uuid (the program's ``SignedMsgOrderId``): the last slot its intent
    was placeable, and the id of the order it placed (0 if it placed none)."""

    max_slot: int
    order_id: int


@dataclass(slots=True)
class ProgramState:
    """Every account the program owns. Mutated only by :meth:`Accounts.commit`."""

    state: State
    spot_markets: dict[int, SpotMarket] = field(default_factory=dict)
    perp_markets: dict[int, PerpMarket] = field(default_factory=dict)
    oracles: dict[str, OracleAccount] = field(default_factory=dict)
    users: dict[UserKey, User] = field(default_factory=dict)
    user_stats: dict[bytes, UserStats] = field(default_factory=dict)
    # signed-intent uuids each user has used: until when the intent was placeable, its order
    signed_msg_uuids: dict[UserKey, dict[bytes, SignedMsgOrderId]] = field(default_factory=dict)
    insurance_fund_stakes: dict[InsuranceFundStakeKey, InsuranceFundStake] = field(
        default_factory=dict
    )


class MarketReader(Protocol):
    """What the margin and pricing math reads: markets, oracles and the global config."""

    @property
    def state(self) -> State: ...

    def spot_market(self, market_index: int) -> SpotMarket: ...

    def perp_market(self, market_index: int) -> PerpMarket: ...

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData: ...


class Accounts:
    """Copy-on-write access to :class:`ProgramState` for one transaction."""

    __slots__ = (
        "_base",
        "_if_stakes",
        "_oracles",
        "_perp",
        "_records",
        "_spot",
        "_user_stats",
        "_users",
        "_uuids",
        "clock",
        "signers",
    )

    def __init__(self, base: ProgramState, clock: Clock, signers: Iterable[bytes] = ()) -> None:
        self._base = base
        self.clock = clock
        self.signers = frozenset(signers)
        self._spot: dict[int, SpotMarket] = {}
        self._perp: dict[int, PerpMarket] = {}
        self._oracles: dict[str, OracleAccount] = {}
        self._users: dict[UserKey, User] = {}
        self._user_stats: dict[bytes, UserStats] = {}
        self._uuids: dict[UserKey, dict[bytes, SignedMsgOrderId]] = {}
        self._records: list[Record] = []
        self._if_stakes: dict[InsuranceFundStakeKey, InsuranceFundStake] = {}

    # --- global config ------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._base.state

    # --- markets ------------------------------------------------------------------------
    def spot_market(self, market_index: int) -> SpotMarket:
        m = self._spot.get(market_index)
        if m is None:
            base = self._base.spot_markets.get(market_index)
            if base is None:
                raise InvalidParameter(
                    "market_index", f"no spot market {market_index}", ErrorCode.UnknownMarket
                )
            m = self._spot[market_index] = base.clone()
        return m

    def perp_market(self, market_index: int) -> PerpMarket:
        m = self._perp.get(market_index)
        if m is None:
            base = self._base.perp_markets.get(market_index)
            if base is None:
                raise InvalidParameter(
                    "market_index", f"no perp market {market_index}", ErrorCode.UnknownMarket
                )
            m = self._perp[market_index] = base.clone()
        return m

    def spot_market_indexes(self) -> list[int]:
        return sorted(self._base.spot_markets)

    def perp_market_indexes(self) -> list[int]:
        return sorted(self._base.perp_markets)

    # --- oracles ------------------------------------------------------------------------
    def oracle(self, oracle_id: str) -> OracleAccount:
        o = self._oracles.get(oracle_id)
        if o is None:
            base = self._base.oracles.get(oracle_id)
            if base is None:
                raise InvalidParameter(
                    "oracle", f"no oracle {oracle_id!r}", ErrorCode.UnknownOracle
                )
            o = self._oracles[oracle_id] = base.clone()
        return o

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData:
        # a read: the committed account serves unless this transaction already cloned it
        oracle = self._oracles.get(oracle_id)
        if oracle is None:
            oracle = self._base.oracles.get(oracle_id)
        if oracle is None:
            raise InvalidParameter("oracle", f"no oracle {oracle_id!r}", ErrorCode.UnknownOracle)
        return oracle.price_data(self.clock.slot)

    # --- users ----------------------------------------------------------------------------
    def has_user(self, key: UserKey) -> bool:
        return key in self._users or key in self._base.users

    def user(self, key: UserKey) -> User:
        u = self._users.get(key)
        if u is None:
            base = self._base.users.get(key)
            if base is None:
                raise ProtocolError(
                    ErrorCode.UserNotFound,
                    f"no user for authority {key[0].hex()[:16]}.. sub-account {key[1]}",
                    field="user",
                )
            u = self._users[key] = base.clone()
        return u

    def add_user(self, user: User) -> None:
        if self.has_user(user.key):
            raise ProtocolError(ErrorCode.UserAlreadyExists, field="sub_account_id")
        self._users[user.key] = user

    def user_stats(self, authority: bytes) -> UserStats:
        s = self._user_stats.get(authority)
        if s is None:
            base = self._base.user_stats.get(authority)
            if base is None:
                raise ProtocolError(ErrorCode.UserStatsNotFound, field="authority")
            s = self._user_stats[authority] = base.clone()
        return s

    def has_user_stats(self, authority: bytes) -> bool:
        return authority in self._user_stats or authority in self._base.user_stats

    def add_user_stats(self, stats: UserStats) -> None:
        self._user_stats[stats.authority] = stats

    def authorized_user(self, key: UserKey, *, allow_delegate: bool = True) -> User:
        """The user at ``key``, if a signer of this transaction may act for it.

        The authority may always act; the delegate only where ``allow_delegate`` (the program
        lets delegates place and cancel orders but never withdraw).
        """
        user = self.user(key)
        if user.authority in self.signers:
            return user
        if allow_delegate and user.delegate != bytes(32) and user.delegate in self.signers:
            return user
        raise ProtocolError(
            ErrorCode.UnauthorizedSigner,
            "no signer is the user's authority" + (" or delegate" if allow_delegate else ""),
            field="authority",
        )

    def require_signer(self, pubkey: bytes, field_name: str) -> None:
        if pubkey not in self.signers:
            raise ProtocolError(ErrorCode.UnauthorizedSigner, "not a signer", field=field_name)

    # --- insurance fund stakes ------------------------------------------------------------
    def has_insurance_fund_stake(self, key: InsuranceFundStakeKey) -> bool:
        return key in self._if_stakes or key in self._base.insurance_fund_stakes

    def insurance_fund_stake(self, key: InsuranceFundStakeKey) -> InsuranceFundStake:
        s = self._if_stakes.get(key)
        if s is None:
            base = self._base.insurance_fund_stakes.get(key)
            if base is None:
                raise ProtocolError(
                    ErrorCode.UnableToLoadAccountLoader,
                    f"no insurance fund stake for authority {key[0].hex()[:16]}.. "
                    f"in spot market {key[1]}",
                    field="authority",
                )
            s = self._if_stakes[key] = base.clone()
        return s

    def add_insurance_fund_stake(self, stake: InsuranceFundStake) -> None:
        if self.has_insurance_fund_stake(stake.key):
            raise ProtocolError(
                ErrorCode.UserAlreadyExists, "insurance fund stake exists", field="market_index"
            )
        self._if_stakes[stake.key] = stake

    # --- signed intents ---------------------------------------------------------------------
    def _used_signed_msg_uuids(self, key: UserKey) -> dict[bytes, SignedMsgOrderId]:
        used = self._uuids.get(key)
        if used is None:
            slot = self.clock.slot
            used = {
                u: entry
                for u, entry in self._base.signed_msg_uuids.get(key, {}).items()
                if entry.max_slot >= slot
            }
            self._uuids[key] = used
        return used

    def use_signed_msg_uuid(
        self, key: UserKey, uuid: bytes, max_slot: int, order_id: int = 0
    ) -> None:
        """Record that ``key`` used ``uuid`` (placeable until ``max_slot``) for the order
        ``order_id``; a uuid still remembered is a replay (``InvalidSignedMsgOrderId``). Uuids
        whose intents have expired are forgotten here: an expired intent is refused for its
        age anyway."""
        used = self._used_signed_msg_uuids(key)
        if uuid in used:
            raise ProtocolError(
                ErrorCode.InvalidSignedMsgOrderId,
                f"uuid {uuid.hex()} was already used by this user",
                field="intent.uuid",
            )
        used[uuid] = SignedMsgOrderId(max_slot, order_id)

    def signed_msg_order_id(self, key: UserKey, uuid: bytes) -> int | None:
        """The order placed for ``key``'s intent ``uuid``, while the uuid is remembered."""
        entry = self._used_signed_msg_uuids(key).get(uuid)
        return None if entry is None else entry.order_id

    # --- records --------------------------------------------------------------------------
    def emit(self, record: Record) -> None:
        self._records.append(record)

    @property
    def records(self) -> list[Record]:
        return self._records

    # --- commit -------------------------------------------------------------------------
    def commit(self) -> None:
        """Write every account this transaction touched back into the program state."""
        base = self._base
        base.spot_markets.update(self._spot)
        base.perp_markets.update(self._perp)
        base.oracles.update(self._oracles)
        base.users.update(self._users)
        base.user_stats.update(self._user_stats)
        base.insurance_fund_stakes.update(self._if_stakes)
        for key, used in self._uuids.items():
            if used:
                base.signed_msg_uuids[key] = used
            else:
                base.signed_msg_uuids.pop(key, None)
