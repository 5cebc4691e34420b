"""An incremental margin view of every user, for the liquidator.

The view holds every user account it was given and, per user, the contribution of each of its
positions to the four totals the liquidation path reads (the program's ``MarginContext::
liquidation``: maintenance total collateral and requirement, and their liquidation-buffer
parts) and to the two initial-margin totals (``MarginContext::standard(Initial)``). A user's
totals are the sums of its positions' contributions: that is exactly how
:func:`protocol.math.margin.calculate_margin_requirement_and_total_collateral_and_liability_info`
builds them (one ``add_cross_margin_*`` per position, nothing shared between positions), so the
sums agree with it to the unit. The property tests hold the view to that.

Positions are stored per market, one row per position, in columnar numpy ``int64`` arrays
(``_PerpRows`` / ``_SpotRows``), so that

* an oracle move re-values only the rows of the markets priced by that oracle, in a handful of
  vector operations, and adds each row's change to its user's totals (a user holds at most one
  row per market, so the scatter-add is a plain fancy-index add);
* a market account change re-derives that market's row constants only if what they read moved
  (funding rates, interest indexes, margin ratios, IMF factors), re-values its rows only if
  what the valuation reads moved (status, PnL weights, ...), and otherwise re-values only the
  rows the protocol's own function values (BAL shares read the whole AMM);
* a user account change (a fill, a deposit, a liquidation) replaces only that user's rows,
  and a batch of them is derived and valued one market at a time;
* nothing is ever rescanned in full, except by :meth:`MarginView.rebuild` (which pauses the
  cyclic garbage collector while it loads: see :func:`_gc_paused`).

Units: every total is QUOTE_PRECISION (``int``); prices PRICE_PRECISION; perp base
BASE_PRECISION; spot token amounts the mint's decimals; weights and ratios
SPOT_WEIGHT_PRECISION = MARGIN_PRECISION.

Exactness. Row values are computed with the program's integer rules: every product-then-divide
goes through :func:`_mul_div_floor`, an exact ``floor(x * m / d)`` on ``int64`` for ``d < 2**31``
(no overflow for the bounds below), with Rust's truncation toward zero or the liability rounding
(away from zero) applied on the sign; the square roots of the size-dependent (IMF) weights are
exact integer square roots (a float estimate, corrected in integers: the only float anywhere).
A row the vector path cannot value exactly is valued by the protocol's own function on a
one-position account ("generic" rows): positions with BAL shares, spot positions with open
bids/asks, markets in settlement or of prediction contracts, a quote market whose oracle is not
the fixed quote asset, mints with more than 9 decimals, ratios or weights above 100x, and values
too large for the ``int64`` bounds (a notional above 2**50 quote units, about $1.1bn per
position). Those rows are exact too, only slower.

Deviations from the full calculation, and why:

* only the totals are kept, not the liability counts, oracle-validity flags or tier flags of
  ``MarginCalculation``: the liquidator needs collateral, requirement and shortage, and the
  program re-checks everything else when it executes.
* a user whose calculation would raise (an invalid oracle price, a broken position) is
  flagged (:meth:`MarginView.errors`) instead of raising; its totals exclude the positions that
  raised, and it is never offered as a liquidation candidate.
* the view takes the program's ``State`` for the liquidation buffer; a keeper that is wrong
  about it only mis-ranks candidates (the program decides).

Invariant: for every live user without errors, the six totals equal the full protocol
calculation against the markets and oracle prices the view was last given.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    AMM_TO_QUOTE_PRECISION_RATIO,
    FUNDING_RATE_PRECISION,
    MARGIN_PRECISION,
    MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN,
    OPEN_ORDER_MARGIN_REQUIREMENT,
    PRICE_PRECISION,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_IMF_PRECISION,
    SPOT_WEIGHT_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.funding import calculate_funding_payment
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    get_scaled_initial_asset_weight,
    get_unrealized_asset_weight,
)
from protocol.math.spot_balance import get_token_amount
from protocol.numeric import U32_MAX
from protocol.state import OraclePriceData, PerpMarket, SpotMarket, State, User, UserKey
from protocol.state.margin_calculation import MarginContext
from protocol.state.user import PerpPosition, SpotPosition
from protocol.types import (
    ContractType,
    MarginRequirementType,
    MarketStatus,
    MarketType,
    OracleSource,
    SpotBalanceType,
    UserStatus,
)

__all__ = [
    "MappingUserSource",
    "MarginView",
    "MarketSnapshot",
    "UserMargin",
    "UserSource",
    "user_source",
]

I64Array: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Selection: TypeAlias = slice | npt.NDArray[np.intp]

# contribution columns
TC: Final = 0  # maintenance total collateral
TCB: Final = 1  # its liquidation-buffer part (<= 0)
MR: Final = 2  # maintenance margin requirement
MRB: Final = 3  # maintenance requirement plus the liquidation buffer of each liability
TCI: Final = 4  # initial total collateral
MRI: Final = 5  # initial margin requirement
N_COLUMNS: Final = 6

_LIMB: Final = 31
_LIMB_MASK: Final = (1 << _LIMB) - 1
_MAX_DIVISOR: Final = 1 << _LIMB
# A row's notional (and a spot row's value) must stay below this for the vector path; above it
# (about $1.1bn per position) the row is valued by the protocol's own function.
_VALUE_LIMIT: Final = 1 << 50
_AMOUNT_LIMIT: Final = 1 << 53  # |base|, |token amount|, |quote + funding| for the vector path
_WEIGHT_LIMIT: Final = 1 << 20  # ratios and weights above 100x are left to the protocol
_NO_CAP: Final = 1 << 40  # "no cap" for a weight cap column
_MAX_DECIMALS: Final = 9  # 10**decimals must stay below _MAX_DIVISOR
_BULK: Final = 10_000  # accounts in one update above which the garbage collector is paused
_BANKRUPT: Final = int(UserStatus.Bankrupt)
_BEING_LIQUIDATED_OR_BANKRUPT: Final = int(UserStatus.BeingLiquidated | UserStatus.Bankrupt)


# --- exact integer vector arithmetic ---------------------------------------------------------
def _mul_div_floor(x: I64Array, m: I64Array | int, d: int) -> tuple[I64Array, I64Array]:
    """``(floor(x * m / d), (x * m) % d)`` exactly, for ``x >= 0``, ``0 <= m < 2**62`` and
    ``0 < d < 2**31``, provided the quotient fits in ``int64`` (callers bound their inputs).

    ``x = xh*d + xl`` and ``m = mh*2**31 + ml`` split the product so that no partial product
    reaches 2**63: ``x*m/d = xh*m + (xl*mh*2**31 + xl*ml)/d``, and ``xl*mh = qa*d + ra`` moves
    the high part out of the division."""
    xh, xl = np.divmod(x, d)
    mh = np.right_shift(m, _LIMB)
    ml = np.bitwise_and(m, _LIMB_MASK)
    qa, ra = np.divmod(xl * mh, d)
    ql, rl = np.divmod(ra * _MAX_DIVISOR + xl * ml, d)
    return xh * m + qa * _MAX_DIVISOR + ql, rl


def _mul_div_trunc(x: I64Array, m: I64Array | int, d: int) -> I64Array:
    """``x * m / d`` truncated toward zero (the program's ``/``) for signed ``x``, ``m >= 0``."""
    q, _ = _mul_div_floor(np.abs(x), m, d)
    return np.where(x < 0, -q, q)


def _mul_div_away(x: I64Array, m: int, d: int) -> I64Array:
    """``x * m / d`` with a negative result rounded away from zero (``safe_div_floor``), a
    positive one truncated: the program's token value of a deposit or a borrow."""
    q, r = _mul_div_floor(np.abs(x), m, d)
    return np.where(x < 0, -(q + (r != 0)), q)


def _isqrt(n: I64Array) -> I64Array:
    """Exact ``floor(sqrt(n))`` for ``0 <= n < 2**62``: a float estimate, corrected in
    integers (the estimate is off by at most one at these sizes)."""
    s = np.sqrt(n.astype(np.float64)).astype(np.int64)
    s = np.where(s * s > n, s - 1, s)
    return np.where((s + 1) * (s + 1) <= n, s + 1, s)


def _size_sqrt(size: I64Array) -> I64Array:
    """``sqrt(size * 10 + 1)`` of the program's IMF weights (size AMM_RESERVE_PRECISION)."""
    return _isqrt(size * 10 + 1)


def _size_discount_cap(size: I64Array, imf_factor: int) -> tuple[I64Array, BoolArray]:
    """The size term of ``calculate_size_discount_asset_weight``: ``1.1 / (1 + imf*sqrt(size))``
    (SPOT_WEIGHT_PRECISION), which the weight is capped at; and the rows it cannot value."""
    if imf_factor == 0:
        return np.full(size.shape, _NO_CAP, dtype=np.int64), np.zeros(size.shape, dtype=np.bool_)
    bad = size >= (1 << 58)
    size_sqrt = _size_sqrt(np.where(bad, 0, size))
    imf_numerator = SPOT_IMF_PRECISION + SPOT_IMF_PRECISION // 10
    denominator = SPOT_IMF_PRECISION + size_sqrt * imf_factor // 100_000
    return (imf_numerator * SPOT_WEIGHT_PRECISION) // denominator, bad


def _size_premium(
    size: I64Array, imf_factor: int, default: int, precision: int
) -> tuple[I64Array, BoolArray]:
    """``max(default, calculate_size_premium_liability_weight(size, imf, default, precision))``
    (the bounded premium), and the rows whose premium overflows the program's ``u32``."""
    if imf_factor == 0:
        return np.full(size.shape, default, dtype=np.int64), np.zeros(size.shape, dtype=np.bool_)
    bad = size >= (1 << 58)
    size_sqrt = _size_sqrt(np.where(bad, 0, size))
    numerator = default - default // 5
    premium = numerator + size_sqrt * imf_factor // ((100_000 * SPOT_IMF_PRECISION) // precision)
    bad |= premium > U32_MAX
    return np.maximum(premium, default), bad


@contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector around a bulk load: loading 100,000 accounts
    allocates millions of small objects, and the collections they trigger re-scan every
    account already loaded (half the cost of a rebuild). Nothing built here forms a cycle."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _int64(values: Sequence[int], limit: int) -> tuple[I64Array, BoolArray]:
    """Python ints as an ``int64`` column; values at or beyond ``limit`` become 0 and are
    flagged (the row goes to the protocol's own function)."""
    n = len(values)
    if n == 0 or (-limit < min(values) and max(values) < limit):  # the common case, in C
        return np.array(values, dtype=np.int64).reshape(n), np.zeros(n, dtype=np.bool_)
    bad = np.fromiter((abs(v) >= limit for v in values), dtype=np.bool_, count=n)
    values = [0 if b else v for v, b in zip(values, bad.tolist(), strict=True)]
    return np.array(values, dtype=np.int64).reshape(n), bad


# --- market access ------------------------------------------------------------------------
class MarketSnapshot:
    """The markets and oracle prices the view values against (a
    :class:`protocol.accounts.MarketReader`). A missing market or oracle raises the program's
    ``UnknownMarket`` / ``UnknownOracle``."""

    def __init__(self, state: State) -> None:
        self._state = state
        self.perp_markets: dict[int, PerpMarket] = {}
        self.spot_markets: dict[int, SpotMarket] = {}
        self.oracles: dict[str, OraclePriceData] = {}

    @property
    def state(self) -> State:
        return self._state

    def spot_market(self, market_index: int) -> SpotMarket:
        market = self.spot_markets.get(market_index)
        if market is None:
            raise ProtocolError(ErrorCode.UnknownMarket, f"no spot market {market_index}")
        return market

    def perp_market(self, market_index: int) -> PerpMarket:
        market = self.perp_markets.get(market_index)
        if market is None:
            raise ProtocolError(ErrorCode.UnknownMarket, f"no perp market {market_index}")
        return market

    def oracle_price_data(self, oracle_id: str) -> OraclePriceData:
        data = self.oracles.get(oracle_id)
        if data is None:
            raise ProtocolError(ErrorCode.UnknownOracle, f"no oracle {oracle_id!r}")
        return data

    def spot_price(self, market: SpotMarket) -> int:
        """The price the margin calculation values the market at (the quote asset is $1)."""
        if market.oracle_source == OracleSource.QuoteAsset:
            return PRICE_PRECISION
        return self.oracle_price_data(market.oracle).price


# --- results -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserMargin:
    """One user's totals (QUOTE_PRECISION) as the liquidation path measures them
    (``MarginContext::liquidation(margin_buffer)``), plus its initial-margin totals."""

    user: User
    total_collateral: int
    total_collateral_buffer: int
    margin_requirement: int
    margin_requirement_plus_buffer: int
    initial_total_collateral: int
    initial_margin_requirement: int
    margin_buffer: int  # MARGIN_PRECISION

    @property
    def key(self) -> UserKey:
        return self.user.key

    @property
    def margin_shortage(self) -> int:
        """``MarginCalculation::margin_shortage`` (with a zero buffer: the plain shortage)."""
        if self.margin_buffer == 0:
            return max(self.margin_requirement - self.total_collateral, 0)
        return max(
            self.margin_requirement_plus_buffer
            - (self.total_collateral + self.total_collateral_buffer),
            0,
        )

    def can_be_liquidated(self) -> bool:
        """:func:`protocol.math.margin.can_be_liquidated` from the totals: below maintenance,
        or, once being liquidated, below maintenance plus the buffer."""
        if self.user.is_being_liquidated():
            return (
                self.total_collateral + self.total_collateral_buffer
                < self.margin_requirement_plus_buffer
            )
        return self.total_collateral < self.margin_requirement

    @property
    def free_collateral(self) -> int:
        """Initial total collateral above the initial requirement (>= 0)."""
        return max(self.initial_total_collateral - self.initial_margin_requirement, 0)


# --- rows --------------------------------------------------------------------------------
Contribution: TypeAlias = tuple[int, int, int, int, int, int]
_Position: TypeAlias = PerpPosition | SpotPosition


class _Rows:
    """The positions of one market, one row each, packed in ``[0, n)``.

    ``user`` is the owner's slot; ``contrib`` the row's last contribution (what its user's
    totals hold for it); ``error`` whether its valuation raised; ``rawgen`` / ``rgen`` whether
    the position itself / its market-derived constants send it to the protocol's own function.
    New rows are reserved first and written in one batch by :meth:`flush`."""

    RAW: tuple[str, ...] = ()
    DERIVED: tuple[str, ...] = ()

    def __init__(self, market_index: int) -> None:
        self.market_index = market_index
        self.n = 0
        names = self.RAW + self.DERIVED
        self.cols: dict[str, I64Array] = {c: np.zeros(0, dtype=np.int64) for c in names}
        self.user: I64Array = np.zeros(0, dtype=np.int64)
        self.custom: I64Array = np.zeros(0, dtype=np.int64)
        self.contrib: I64Array = np.zeros((N_COLUMNS, 0), dtype=np.int64)
        self.error: BoolArray = np.zeros(0, dtype=np.bool_)
        self.rawgen: BoolArray = np.zeros(0, dtype=np.bool_)
        self.rgen: BoolArray = np.zeros(0, dtype=np.bool_)
        self.positions: list[_Position] = []
        self._pending_slots: list[int] = []
        self._pending_positions: list[_Position] = []
        self._pending_customs: list[int] = []
        self.derive_signature: object = None
        self.value_signature: object = None

    def _arrays(self) -> list[str]:
        return ["user", "custom", "contrib", "error", "rawgen", "rgen"]

    def _reserve_capacity(self, needed: int) -> None:
        cap = len(self.user)
        if needed <= cap:
            return
        cap = max(16, 2 * cap, needed)
        for name, a in [*self.cols.items(), *((n, getattr(self, n)) for n in self._arrays())]:
            out = np.zeros((*a.shape[:-1], cap), dtype=a.dtype)
            out[..., : a.shape[-1]] = a
            if name in self.cols:
                self.cols[name] = out
            else:
                setattr(self, name, out)

    def reserve(self, slot: int, position: _Position, custom: int) -> int:
        """The index the position will have once :meth:`flush` writes it."""
        self._pending_slots.append(slot)
        self._pending_positions.append(position)
        self._pending_customs.append(custom)
        return self.n + len(self._pending_slots) - 1

    def flush(self) -> npt.NDArray[np.intp]:
        """Write the reserved rows; their indexes."""
        slots, positions, customs = (
            self._pending_slots,
            self._pending_positions,
            self._pending_customs,
        )
        self._pending_slots, self._pending_positions, self._pending_customs = [], [], []
        k = len(slots)
        start = self.n
        self._reserve_capacity(start + k)
        sel = slice(start, start + k)
        self.user[sel] = slots
        self.custom[sel] = customs
        self.contrib[:, sel] = 0
        self.error[sel] = False
        self.positions.extend(positions)
        self.n = start + k
        self.rawgen[sel] = self._write_raw(sel, positions)
        self.rgen[sel] = True  # until derived
        return np.arange(start, start + k, dtype=np.intp)

    def _write_raw(self, sel: slice, positions: list[_Position]) -> BoolArray:
        raise NotImplementedError

    def remove(self, i: int) -> int | None:
        """Drop row ``i`` (its contribution must already be out of the totals); the last row
        moves into its place: returns that row's owner slot, or ``None`` if nothing moved."""
        last = self.n - 1
        moved: int | None = None
        if i != last:
            for a in self.cols.values():
                a[i] = a[last]
            for name in self._arrays():
                a = getattr(self, name)
                a[..., i] = a[..., last]
            self.positions[i] = self.positions[last]
            moved = int(self.user[i])
        self.positions.pop()
        self.n = last
        return moved

    def selected_positions(self, sel: Selection) -> list[_Position]:
        if isinstance(sel, slice):
            return self.positions[sel]
        return [self.positions[i] for i in sel.tolist()]


class _PerpRows(_Rows):
    """Perp positions. Raw columns: ``base``, ``ask_base`` / ``bid_base`` (base if every open
    ask / bid filled), ``orders_req`` (the open orders' flat requirement), ``quote``,
    ``last_rate`` (cumulative funding rate at the last settlement). Derived from the market:
    ``pnl_const`` (quote plus unsettled funding) and ``rm_a``/``rm_b``, ``ri_a``/``ri_b``
    (maintenance / initial margin ratio at the ask / bid worst case; the user's custom ratio
    applied to the initial one)."""

    RAW = ("base", "ask_base", "bid_base", "orders_req", "quote", "last_rate")
    DERIVED = ("pnl_const", "rm_a", "rm_b", "ri_a", "ri_b")

    def _write_raw(self, sel: slice, positions: list[_Position]) -> BoolArray:
        perps = cast(list[PerpPosition], positions)  # a perp store holds perp positions
        cols = self.cols
        base, bad = _int64([p.base_asset_amount for p in perps], _AMOUNT_LIMIT)
        ask_base, bad_a = _int64([p.base_asset_amount + p.open_asks for p in perps], _AMOUNT_LIMIT)
        bid_base, bad_b = _int64([p.base_asset_amount + p.open_bids for p in perps], _AMOUNT_LIMIT)
        quote, bad_q = _int64([p.quote_asset_amount for p in perps], _AMOUNT_LIMIT)
        last_rate, bad_r = _int64([p.last_cumulative_funding_rate for p in perps], 1 << 61)
        orders, bad_o = _int64([p.open_orders for p in perps], 1 << 20)
        lp = np.array([p.lp_shares > 0 for p in perps], dtype=np.bool_).reshape(len(perps))
        cols["base"][sel] = base
        cols["ask_base"][sel] = ask_base
        cols["bid_base"][sel] = bid_base
        cols["quote"][sel] = quote
        cols["last_rate"][sel] = last_rate
        cols["orders_req"][sel] = orders * OPEN_ORDER_MARGIN_REQUIREMENT
        return bad | bad_a | bad_b | bad_q | bad_r | bad_o | lp


class _SpotRows(_Rows):
    """Spot positions. Raw columns: ``scaled`` (scaled balance), ``is_borrow``,
    ``orders_req``. Derived from the market: ``token`` (signed token amount), ``wm``
    (maintenance asset or liability weight), ``wi`` (initial liability weight, or the cap on
    the initial asset weight that does not depend on the price: size discount and the user's
    custom ratio)."""

    RAW = ("scaled", "is_borrow", "orders_req")
    DERIVED = ("token", "wm", "wi")

    def _write_raw(self, sel: slice, positions: list[_Position]) -> BoolArray:
        spots = cast(list[SpotPosition], positions)  # a spot store holds spot positions
        quote = self.market_index == QUOTE_SPOT_MARKET_INDEX
        cols = self.cols
        scaled, bad = _int64([p.scaled_balance for p in spots], _AMOUNT_LIMIT)
        orders, bad_o = _int64([p.open_orders for p in spots], 1 << 20)
        cols["scaled"][sel] = scaled
        cols["is_borrow"][sel] = [p.balance_type == SpotBalanceType.Borrow for p in spots]
        cols["orders_req"][sel] = 0 if quote else orders * OPEN_ORDER_MARGIN_REQUIREMENT
        # validate_spot_position refuses these; open bids/asks need the fill simulation
        odd = np.array(
            [
                p.open_bids < 0
                or p.open_asks > 0
                or (not quote and (p.open_bids != 0 or p.open_asks != 0))
                for p in spots
            ],
            dtype=np.bool_,
        ).reshape(len(spots))
        return bad | bad_o | odd


_Store: TypeAlias = _PerpRows | _SpotRows
_StoreKey: TypeAlias = tuple[MarketType, int]


def _initial_pnl_weight(market: PerpMarket) -> int:
    """The initial asset weight of a gain before its size discount: the market's weight,
    discounted by the users' net PnL imbalance (``get_unrealized_asset_weight`` without the
    IMF factor, which the valuation applies row by row)."""
    without_imf = dataclasses.replace(market, unrealized_pnl_imf_factor=0)
    return get_unrealized_asset_weight(without_imf, 1, MarginRequirementType.Initial)


def _perp_signatures(market: PerpMarket) -> tuple[object, object]:
    """What the derived columns and what the valuation read of a perp market: a row needs
    re-deriving / re-valuing only when one of them changed."""
    derive = (
        market.amm.cumulative_funding_rate_long,
        market.amm.cumulative_funding_rate_short,
        market.imf_factor,
        market.margin_ratio_initial,
        market.margin_ratio_maintenance,
    )
    try:
        weight_i: object = _initial_pnl_weight(market)
    except ProtocolError as exc:
        weight_i = exc.code
    value = (
        market.status,
        market.contract_type,
        market.expiry_price,
        market.quote_spot_market_index,
        market.amm.oracle,
        market.unrealized_pnl_maintenance_asset_weight,
        market.unrealized_pnl_imf_factor,
        weight_i,
    )
    return derive, value


def _spot_signatures(market: SpotMarket) -> tuple[object, object]:
    derive = (
        market.cumulative_deposit_interest,
        market.cumulative_borrow_interest,
        market.decimals,
        market.imf_factor,
        market.maintenance_asset_weight,
        market.maintenance_liability_weight,
        market.initial_liability_weight,
    )
    scaled_start = market.scale_initial_asset_weight_start
    value = (
        market.oracle,
        market.oracle_source,
        market.initial_asset_weight,
        scaled_start,
        market.deposit_balance if scaled_start else 0,
    )
    return derive, value


# --- the view -------------------------------------------------------------------------------
class MarginView:
    """Every user's margin totals, kept current incrementally. Single-threaded: call it from
    one task (the liquidator's ``decide``)."""

    def __init__(self, state: State | None = None) -> None:
        self.markets = MarketSnapshot(state if state is not None else State())
        self._buffer = self.markets.state.liquidation_margin_buffer_ratio
        self._liquidation_context = MarginContext.liquidation(self._buffer)
        self._initial_context = MarginContext.standard(MarginRequirementType.Initial)
        self._perp: dict[int, _PerpRows] = {}
        self._spot: dict[int, _SpotRows] = {}
        self._oracle_stores: dict[str, set[_StoreKey]] = {}
        # users by slot
        self._slot_of: dict[UserKey, int] = {}
        self._users: list[User | None] = []
        self._rows_of: list[dict[_StoreKey, int]] = []
        self._free: list[int] = []
        self._totals: I64Array = np.zeros((N_COLUMNS, 0), dtype=np.int64)
        self._errors: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._live: BoolArray = np.zeros(0, dtype=np.bool_)
        self._being: BoolArray = np.zeros(0, dtype=np.bool_)
        self._bankrupt: BoolArray = np.zeros(0, dtype=np.bool_)
        self.rows_valued = 0  # rows re-valued since construction (a work counter)

    @property
    def margin_buffer(self) -> int:
        """``State.liquidation_margin_buffer_ratio`` the view measures with (MARGIN_PRECISION)."""
        return self._buffer

    # --- inputs: markets and oracles ----------------------------------------------------------
    def sync_markets(
        self, perp_markets: Mapping[int, PerpMarket], spot_markets: Mapping[int, SpotMarket]
    ) -> None:
        """Take the latest market accounts. Accounts are replaced, never mutated, so an
        account object the view already holds is unchanged."""
        for spot in spot_markets.values():
            if self.markets.spot_markets.get(spot.market_index) is not spot:
                self.update_spot_market(spot)
        for perp in perp_markets.values():
            if self.markets.perp_markets.get(perp.market_index) is not perp:
                self.update_perp_market(perp)

    def sync_oracles(self, prices: Mapping[str, OraclePriceData]) -> int:
        """:meth:`update_oracle` for each reading; the rows re-valued."""
        return sum(self.update_oracle(oracle_id, data) for oracle_id, data in prices.items())

    def update_perp_market(self, market: PerpMarket) -> None:
        """A perp market account changed: re-derive its rows if funding or margin ratios moved,
        re-value them if what the valuation reads moved, else re-value only the rows the
        protocol's own function values (BAL shares read the whole AMM)."""
        old = self.markets.perp_markets.get(market.market_index)
        self.markets.perp_markets[market.market_index] = market
        if old is None or old.amm.oracle != market.amm.oracle:
            self._index_oracles()
        store = self._perp.get(market.market_index)
        if store is not None:
            self._market_changed(store, _perp_signatures(market))

    def update_spot_market(self, market: SpotMarket) -> None:
        """A spot market account changed (interest, weights): as :meth:`update_perp_market`.
        Perps quoted in it are re-valued only when its oracle source decides their quote
        price (the quote asset is $1 whatever its account says)."""
        old = self.markets.spot_markets.get(market.market_index)
        self.markets.spot_markets[market.market_index] = market
        if old is None or (old.oracle, old.oracle_source) != (market.oracle, market.oracle_source):
            self._index_oracles()
        store = self._spot.get(market.market_index)
        if store is not None:
            self._market_changed(store, _spot_signatures(market))
        if (
            old is None
            or old.oracle_source != market.oracle_source
            or market.oracle_source != OracleSource.QuoteAsset
        ):
            for perp_store in self._perp.values():
                perp = self.markets.perp_markets.get(perp_store.market_index)
                if perp is not None and perp.quote_spot_market_index == market.market_index:
                    self._value(perp_store, slice(0, perp_store.n))

    def _market_changed(self, store: _Store, signatures: tuple[object, object]) -> None:
        derive, value = signatures
        everything = slice(0, store.n)
        if derive != store.derive_signature:
            store.derive_signature, store.value_signature = derive, value
            self._derive(store, everything)
            self._value(store, everything)
        elif value != store.value_signature:
            store.value_signature = value
            self._value(store, everything)
        else:
            generic = np.flatnonzero(store.rgen[: store.n])
            if len(generic):
                self._value(store, generic)

    def update_oracle(self, oracle_id: str, price_data: OraclePriceData) -> int:
        """A new oracle reading; re-values the rows priced by it when the price moved (the
        totals depend on the price only). Returns the number of rows re-valued."""
        known = self.markets.oracles.get(oracle_id)
        self.markets.oracles[oracle_id] = price_data
        if known is not None and known.price == price_data.price:
            return 0
        valued = 0
        for kind, index in sorted(self._oracle_stores.get(oracle_id, ())):
            store: _Store | None = (
                self._perp.get(index) if kind == MarketType.Perp else self._spot.get(index)
            )
            if store is not None and store.n:
                self._value(store, slice(0, store.n))
                valued += store.n
        return valued

    def _index_oracles(self) -> None:
        """oracle id -> the markets whose rows it prices (a quote-asset oracle prices none)."""
        index: dict[str, set[_StoreKey]] = {}
        spots = self.markets.spot_markets
        for i, spot in spots.items():
            if spot.oracle_source != OracleSource.QuoteAsset:
                index.setdefault(spot.oracle, set()).add((MarketType.Spot, i))
        for i, perp in self.markets.perp_markets.items():
            index.setdefault(perp.amm.oracle, set()).add((MarketType.Perp, i))
            quote = spots.get(perp.quote_spot_market_index)
            if quote is not None and quote.oracle_source != OracleSource.QuoteAsset:
                index.setdefault(quote.oracle, set()).add((MarketType.Perp, i))
        self._oracle_stores = index

    # --- inputs: users ------------------------------------------------------------------------
    def update_user(self, user: User) -> None:
        self.update_users((user,))

    def update_users(self, users: Iterable[User]) -> None:
        """Replace the accounts of ``users`` (new users are added; the last account of a key
        wins): their old rows go, rows for their current positions come, and only those rows
        are derived and valued, one batch per market."""
        batch = {user.key: user for user in users}
        if not batch:
            return
        with _gc_paused(len(batch) >= _BULK):
            self._update_users(batch)

    def _update_users(self, batch: dict[UserKey, User]) -> None:
        slot_of, rows_of, accounts = self._slot_of, self._rows_of, self._users
        slots: list[int] = []
        new_slots: list[int] = []
        for key in batch:
            slot = slot_of.get(key)
            if slot is None:
                slot = self._new_slot(key)
                new_slots.append(slot)
            elif rows_of[slot]:
                self._drop_rows(slot)
            slots.append(slot)
        if new_slots:
            self._open_slots(new_slots)
        touched: dict[_StoreKey, _Store] = {}
        statuses: list[int] = []
        for slot, user in zip(slots, batch.values(), strict=True):
            accounts[slot] = user
            statuses.append(int(user.status))
            rows = rows_of[slot]
            custom = user.max_margin_ratio
            for spot_position in user.spot_positions:
                # SpotPosition.is_available, inlined: this loop runs once per position
                if spot_position.scaled_balance == 0 and spot_position.open_orders == 0:
                    continue
                store_key = (MarketType.Spot, spot_position.market_index)
                store: _Store = self._spot.get(store_key[1]) or self._spot_store(store_key[1])
                rows[store_key] = store.reserve(slot, spot_position, custom)
                touched[store_key] = store
            for perp_position in user.perp_positions:
                if perp_position.is_available():
                    continue
                store_key = (MarketType.Perp, perp_position.market_index)
                store = self._perp.get(store_key[1]) or self._perp_store(store_key[1])
                rows[store_key] = store.reserve(slot, perp_position, custom)
                touched[store_key] = store
        # User.is_being_liquidated / is_bankrupt on the status bits, for the whole batch
        status = np.array(statuses, dtype=np.int64)
        index = np.array(slots, dtype=np.intp)
        self._being[index] = (status & _BEING_LIQUIDATED_OR_BANKRUPT) != 0
        self._bankrupt[index] = (status & _BANKRUPT) != 0
        for store in touched.values():
            sel = store.flush()
            self._derive(store, sel)
            self._value(store, sel)

    def remove_user(self, key: UserKey) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        self._drop_rows(slot)
        self._users[slot] = None
        self._live[slot] = False
        self._being[slot] = False
        self._bankrupt[slot] = False
        self._totals[:, slot] = 0
        self._errors[slot] = 0
        self._free.append(slot)

    def rebuild(self, users: Iterable[User]) -> None:
        """Forget every user and load ``users`` (markets and oracles are kept): the full
        rebuild, derived and valued one market at a time."""
        self._perp.clear()
        self._spot.clear()
        self._slot_of.clear()
        self._users.clear()
        self._rows_of.clear()
        self._free.clear()
        self._totals[:] = 0
        self._errors[:] = 0
        self._live[:] = False
        self._being[:] = False
        self._bankrupt[:] = False
        self.update_users(users)

    def _new_slot(self, key: UserKey) -> int:
        """A slot for ``key``; the caller sizes and clears the slot arrays
        (:meth:`_open_slots`) before using them."""
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._users)
            self._users.append(None)
            self._rows_of.append({})
        self._slot_of[key] = slot
        return slot

    def _open_slots(self, slots: list[int]) -> None:
        """Grow the slot arrays to hold every slot, and start ``slots`` at zero."""
        cap = self._totals.shape[1]
        if len(self._users) > cap:
            cap = max(64, 2 * cap, len(self._users))
            totals = np.zeros((N_COLUMNS, cap), dtype=np.int64)
            totals[:, : self._totals.shape[1]] = self._totals
            self._totals = totals
            self._errors = _grown(self._errors, cap)
            self._live = _grown(self._live, cap)
            self._being = _grown(self._being, cap)
            self._bankrupt = _grown(self._bankrupt, cap)
        index = np.array(slots, dtype=np.intp)
        self._live[index] = True
        self._totals[:, index] = 0
        self._errors[index] = 0

    def _drop_rows(self, slot: int) -> None:
        rows = self._rows_of[slot]
        for key, i in rows.items():
            store = self._store(key)
            self._totals[:, slot] -= store.contrib[:, i]
            self._errors[slot] -= int(store.error[i])
            moved = store.remove(i)
            if moved is not None:
                self._rows_of[moved][key] = i
        rows.clear()

    def _perp_store(self, index: int) -> _PerpRows:
        store = self._perp.get(index)
        if store is None:
            store = self._perp[index] = _PerpRows(index)
        return store

    def _spot_store(self, index: int) -> _SpotRows:
        store = self._spot.get(index)
        if store is None:
            store = self._spot[index] = _SpotRows(index)
        return store

    def _store(self, key: _StoreKey) -> _Store:
        kind, index = key
        return self._perp[index] if kind == MarketType.Perp else self._spot[index]

    # --- derived constants ----------------------------------------------------------------------
    def _derive(self, store: _Store, sel: Selection) -> None:
        """Recompute the market-dependent columns of rows ``sel`` (a missing market leaves
        them to the protocol's function, which reports the market missing)."""
        if isinstance(store, _PerpRows):
            perp = self.markets.perp_markets.get(store.market_index)
            if perp is None:
                store.rgen[sel] = True
                return
            if store.derive_signature is None:  # a new store; market changes keep it current
                store.derive_signature, store.value_signature = _perp_signatures(perp)
            store.rgen[sel] = store.rawgen[sel] | self._derive_perp(store, perp, sel)
        else:
            spot = self.markets.spot_markets.get(store.market_index)
            if spot is None:
                store.rgen[sel] = True
                return
            if store.derive_signature is None:  # a new store; market changes keep it current
                store.derive_signature, store.value_signature = _spot_signatures(spot)
            store.rgen[sel] = store.rawgen[sel] | self._derive_spot(store, spot, sel)

    def _derive_perp(self, store: _PerpRows, market: PerpMarket, sel: Selection) -> BoolArray:
        cols = store.cols
        base = cols["base"][sel]
        pnl_const, bad = self._quote_plus_funding(store, market, sel, base)
        cols["pnl_const"][sel] = pnl_const
        custom = store.custom[sel]
        for side, column in (("a", "ask_base"), ("b", "bid_base")):
            size = np.abs(cols[column][sel])
            # get_margin_ratio: the market's ratio, raised by the IMF premium on the size
            rm, bad_m = _size_premium(
                size, market.imf_factor, market.margin_ratio_maintenance, MARGIN_PRECISION
            )
            ri, bad_i = _size_premium(
                size, market.imf_factor, market.margin_ratio_initial, MARGIN_PRECISION
            )
            ri = np.maximum(ri, custom)
            cols[f"rm_{side}"][sel] = rm
            cols[f"ri_{side}"][sel] = ri
            bad |= bad_m | bad_i | (rm >= _WEIGHT_LIMIT) | (ri >= _WEIGHT_LIMIT)
        return bad

    def _quote_plus_funding(
        self, store: _PerpRows, market: PerpMarket, sel: Selection, base: I64Array
    ) -> tuple[I64Array, BoolArray]:
        """``quote_asset_amount + calculate_funding_payment(...)`` per row.

        The payment is ``-sign(base) * sign(delta) * floor(|delta| * |base| / 1e12)``: the
        program's two truncations (by PRICE_PRECISION * FUNDING_RATE_BUFFER, then by
        AMM_TO_QUOTE_PRECISION_RATIO) of a non-negative magnitude nest into one floor."""
        cols = store.cols
        rate_long = market.amm.cumulative_funding_rate_long
        rate_short = market.amm.cumulative_funding_rate_short
        quote = cols["quote"][sel]
        if max(abs(rate_long), abs(rate_short)) < (1 << 61):
            delta = np.where(base > 0, rate_long, rate_short) - cols["last_rate"][sel]
            abs_base = np.abs(base)
            abs_delta = np.abs(delta)
            if len(base) == 0 or (int(abs_base.max()) // FUNDING_RATE_PRECISION + 1) * int(
                abs_delta.max()
            ) < (1 << 62):
                magnitude, _ = _mul_div_floor(abs_base, abs_delta, FUNDING_RATE_PRECISION)
                magnitude //= AMM_TO_QUOTE_PRECISION_RATIO
                payment = np.where((base > 0) == (delta > 0), -magnitude, magnitude)
                payment = np.where(delta == 0, 0, payment)
                total = quote + payment
                bad = np.abs(total) >= _AMOUNT_LIMIT
                return np.where(bad, 0, total), bad
        # beyond int64: the protocol's own function, row by row
        positions = cast(list[PerpPosition], store.selected_positions(sel))
        values = [
            p.quote_asset_amount
            + calculate_funding_payment(rate_long if p.base_asset_amount > 0 else rate_short, p)
            for p in positions
        ]
        return _int64(values, _AMOUNT_LIMIT)

    def _derive_spot(self, store: _SpotRows, market: SpotMarket, sel: Selection) -> BoolArray:
        cols = store.cols
        token, bad = self._token_amounts(store, market, sel)
        # the program refuses a balance that rounds to no tokens
        bad |= (token == 0) & (cols["scaled"][sel] != 0)
        cols["token"][sel] = token
        if store.market_index == QUOTE_SPOT_MARKET_INDEX:
            return bad
        decimals = market.decimals
        amount = np.abs(token)
        # _size_in_amm_reserve_precision
        if decimals > _MAX_DECIMALS:
            size = amount // 10 ** (decimals - _MAX_DECIMALS)
        else:
            scale = 10 ** (_MAX_DECIMALS - decimals)
            bad |= amount >= (1 << 62) // scale
            size = np.where(bad, 0, amount) * scale
        borrow = token < 0
        cap, bad_cap = _size_discount_cap(size, market.imf_factor)
        lm, bad_lm = _size_premium(
            size, market.imf_factor, market.maintenance_liability_weight, SPOT_WEIGHT_PRECISION
        )
        li, bad_li = _size_premium(
            size, market.imf_factor, market.initial_liability_weight, SPOT_WEIGHT_PRECISION
        )
        # OrderFillSimulation::apply_user_custom_margin_ratio (Initial weights only)
        custom = store.custom[sel]
        li = np.where(custom != 0, np.maximum(li, custom + SPOT_WEIGHT_PRECISION), li)
        asset_cap = np.where(
            custom != 0, np.minimum(cap, np.maximum(SPOT_WEIGHT_PRECISION - custom, 0)), cap
        )
        wm = np.where(borrow, lm, np.minimum(cap, market.maintenance_asset_weight))
        wi = np.where(borrow, li, asset_cap)
        cols["wm"][sel] = wm
        cols["wi"][sel] = wi
        bad |= np.where(borrow, bad_lm | bad_li | (wi >= _WEIGHT_LIMIT), bad_cap)
        bad |= wm >= _WEIGHT_LIMIT
        return bad

    def _token_amounts(
        self, store: _SpotRows, market: SpotMarket, sel: Selection
    ) -> tuple[I64Array, BoolArray]:
        """Signed ``get_token_amount`` per row: ``scaled * interest / 10**(19 - decimals)``,
        deposits rounded down, borrows up. The division is split as ``/1e9`` then the rest:
        nested floors (and nested ceilings) of positive integers compose exactly."""
        cols = store.cols
        scaled = cols["scaled"][sel]
        borrow = cols["is_borrow"][sel] != 0
        precision_decrease = 19 - market.decimals
        rates = (market.cumulative_deposit_interest, market.cumulative_borrow_interest)
        if (
            precision_decrease >= 9
            and max(rates) < (1 << 62)
            and min(rates) >= 0
            and (len(scaled) == 0 or (int(scaled.max()) // 10**9 + 1) * max(rates) < (1 << 62))
        ):
            interest = np.where(borrow, rates[1], rates[0])
            q, r = _mul_div_floor(scaled, interest, 10**9)
            rest = 10 ** (precision_decrease - 9)
            q = np.where(borrow, q + (r != 0), q)
            q2, r2 = np.divmod(q, rest)
            amount = np.where(borrow, q2 + (r2 != 0), q2)
            return np.where(borrow, -amount, amount), np.zeros(len(scaled), dtype=np.bool_)
        try:
            positions = cast(list[SpotPosition], store.selected_positions(sel))
            values = [
                get_token_amount(p.scaled_balance, market, p.balance_type)
                * (-1 if p.balance_type == SpotBalanceType.Borrow else 1)
                for p in positions
            ]
        except ProtocolError:
            k = len(scaled)
            return np.zeros(k, dtype=np.int64), np.ones(k, dtype=np.bool_)
        return _int64(values, _AMOUNT_LIMIT)

    # --- valuation -----------------------------------------------------------------------------
    def _value(self, store: _Store, sel: Selection) -> None:
        """Re-value rows ``sel`` and move the change into their users' totals."""
        users = store.user[sel]
        k = len(users)
        if k == 0:
            return
        self.rows_valued += k
        new = np.zeros((N_COLUMNS, k), dtype=np.int64)
        err = np.zeros(k, dtype=np.bool_)
        try:
            if isinstance(store, _PerpRows):
                generic = self._value_perp(store, sel, new)
            else:
                generic = self._value_spot(store, sel, new)
        except ProtocolError:
            generic = np.ones(k, dtype=np.bool_)
        if generic.any():
            positions = store.selected_positions(sel)
            custom = store.custom[sel]
            for j in np.flatnonzero(generic).tolist():
                result = self._protocol_contribution(positions[j], int(custom[j]))
                if result is None:
                    new[:, j] = 0
                    err[j] = True
                else:
                    new[:, j] = result
        self._totals[:, users] += new - store.contrib[:, sel]
        self._errors[users] += err.astype(np.int32) - store.error[sel].astype(np.int32)
        store.contrib[:, sel] = new
        store.error[sel] = err

    def _protocol_contribution(self, position: _Position, custom: int) -> Contribution | None:
        """The row valued by the protocol's own calculation on a one-position account
        (``None``: the calculation raises, so the user's does too)."""
        if isinstance(position, PerpPosition):
            account = User(authority=bytes(32), max_margin_ratio=custom, perp_positions=[position])
        else:
            account = User(authority=bytes(32), max_margin_ratio=custom, spot_positions=[position])
        try:
            liquidation = calculate_margin_requirement_and_total_collateral_and_liability_info(
                account, self.markets, self._liquidation_context
            )
            initial = calculate_margin_requirement_and_total_collateral_and_liability_info(
                account, self.markets, self._initial_context
            )
        except ProtocolError:
            return None
        values = (
            liquidation.total_collateral,
            liquidation.total_collateral_buffer,
            liquidation.margin_requirement,
            liquidation.margin_requirement_plus_buffer,
            initial.total_collateral,
            initial.margin_requirement,
        )
        if any(abs(v) >= (1 << 62) for v in values):
            return None  # beyond what the int64 totals hold: not measurable here
        return values

    def _liability_buffer(self, liability: I64Array) -> I64Array:
        """``liability_value * margin_buffer / MARGIN_PRECISION`` (liability >= 0)."""
        buffer, _ = _mul_div_floor(liability, self._buffer, MARGIN_PRECISION)
        return buffer

    def _value_perp(self, store: _PerpRows, sel: Selection, out: I64Array) -> BoolArray:
        """Fill ``out`` for rows ``sel`` (``_add_perp_position`` of the margin calculation);
        returns the rows left to the protocol's function."""
        k = out.shape[1]
        markets = self.markets
        market = markets.perp_market(store.market_index)
        quote_market = markets.spot_market(market.quote_spot_market_index)
        price = markets.oracle_price_data(market.amm.oracle).price
        weight_m = market.unrealized_pnl_maintenance_asset_weight
        weight_i = _initial_pnl_weight(market)
        pnl_imf = market.unrealized_pnl_imf_factor
        if (
            market.status == MarketStatus.Settlement
            or market.contract_type == ContractType.Prediction
            or quote_market.oracle_source != OracleSource.QuoteAsset
            or not 0 < price < _VALUE_LIMIT
            or not 0 <= self._buffer < _WEIGHT_LIMIT
            or not 0 <= weight_m < _WEIGHT_LIMIT
            or not 0 <= weight_i < _WEIGHT_LIMIT
        ):
            return np.ones(k, dtype=np.bool_)

        cols = store.cols
        base = cols["base"][sel]
        ask_base = np.abs(cols["ask_base"][sel])
        bid_base = np.abs(cols["bid_base"][sel])
        # a notional past _VALUE_LIMIT would overflow the int64 arithmetic below
        limit = (_VALUE_LIMIT * PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO) // price
        generic: BoolArray = store.rgen[sel] | (
            np.maximum(np.abs(base), np.maximum(ask_base, bid_base)) >= limit
        )
        base = np.where(generic, 0, base)
        ask_base = np.where(generic, 0, ask_base)
        bid_base = np.where(generic, 0, bid_base)

        # calculate_base_asset_value_and_pnl_with_oracle_price, funding included
        pnl = _mul_div_trunc(base, price, AMM_RESERVE_PRECISION) + np.where(
            generic, 0, cols["pnl_const"][sel]
        )
        # worst_case_liability_value: the side whose fills leave the larger notional; asks
        # win a tie. The quote asset is $1, so the value is not rescaled.
        value_a, _ = _mul_div_floor(ask_base, price, PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO)
        value_b, _ = _mul_div_floor(bid_base, price, PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO)
        asks = value_a >= value_b
        worst_value = np.where(asks, value_a, value_b)
        ratio_m = np.where(asks, cols["rm_a"][sel], cols["rm_b"][sel])
        ratio_i = np.where(asks, cols["ri_a"][sel], cols["ri_b"][sel])
        orders_req = np.where(generic, 0, cols["orders_req"][sel])
        req_m = _mul_div_floor(worst_value, ratio_m, MARGIN_PRECISION)[0] + orders_req
        req_i = _mul_div_floor(worst_value, ratio_i, MARGIN_PRECISION)[0] + orders_req

        # get_unrealized_asset_weight: losses count in full, gains at the market's weight
        gain = np.maximum(pnl, 0)
        weighted_m = pnl
        if weight_m != SPOT_WEIGHT_PRECISION:
            weighted_m = np.where(
                pnl > 0, _mul_div_floor(gain, weight_m, SPOT_WEIGHT_PRECISION)[0], pnl
            )
        # initial: the weight shrinks with the size of the gain (the size discount on the gain
        # in AMM_RESERVE_PRECISION), else it is the market's
        if pnl_imf != 0:
            too_big = gain >= (1 << 58) // AMM_TO_QUOTE_PRECISION_RATIO
            discount, bad = _size_discount_cap(
                np.where(too_big, 0, gain) * AMM_TO_QUOTE_PRECISION_RATIO, pnl_imf
            )
            generic |= too_big | bad
            row_weight_i = np.minimum(discount, weight_i)
            weighted_i = np.where(
                pnl > 0, _mul_div_floor(gain, row_weight_i, SPOT_WEIGHT_PRECISION)[0], pnl
            )
        elif weight_i != SPOT_WEIGHT_PRECISION:
            weighted_i = np.where(
                pnl > 0, _mul_div_floor(gain, weight_i, SPOT_WEIGHT_PRECISION)[0], pnl
            )
        else:
            weighted_i = pnl
        weighted_i = np.minimum(weighted_i, MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN)

        out[TC] = weighted_m
        out[MR] = req_m
        if self._buffer > 0:
            # a negative contribution's buffer share truncates toward zero
            out[TCB] = -_mul_div_floor(np.maximum(-weighted_m, 0), self._buffer, MARGIN_PRECISION)[
                0
            ]
            out[MRB] = req_m + self._liability_buffer(worst_value)
        out[TCI] = weighted_i
        out[MRI] = req_i
        return generic

    def _value_spot(self, store: _SpotRows, sel: Selection, out: I64Array) -> BoolArray:
        """Fill ``out`` for rows ``sel`` (``_add_spot_position`` / ``_add_quote_spot_position``
        without open bids or asks); returns the rows left to the protocol's function."""
        k = out.shape[1]
        markets = self.markets
        market = markets.spot_market(store.market_index)
        price = markets.spot_price(market)
        decimals = market.decimals
        quote = store.market_index == QUOTE_SPOT_MARKET_INDEX
        initial_default = 0 if quote else get_scaled_initial_asset_weight(market, price)
        if (
            decimals > _MAX_DECIMALS
            or not 0 < price < _VALUE_LIMIT
            or not 0 <= self._buffer < _WEIGHT_LIMIT
            or not 0 <= initial_default < _WEIGHT_LIMIT
        ):
            return np.ones(k, dtype=np.bool_)
        cols = store.cols
        token = cols["token"][sel]
        limit = (_VALUE_LIMIT * 10**decimals) // price
        generic: BoolArray = store.rgen[sel] | (np.abs(token) >= limit)
        token = np.where(generic, 0, token)
        # get_strict_token_value without a TWAP: a borrow's value rounds away from zero
        value = _mul_div_away(token, price, 10**decimals)
        borrow = value < 0
        liability = np.where(borrow, -value, 0)

        if quote:
            # the quote asset counts at face value, with no orders to simulate
            deposit = np.where(borrow, 0, value)
            out[TC] = deposit
            out[MR] = liability
            out[TCI] = deposit
            out[MRI] = liability
            if self._buffer > 0:
                out[MRB] = liability + self._liability_buffer(liability)
            return generic

        orders_req = np.where(generic, 0, cols["orders_req"][sel])
        wm = np.where(generic, 0, cols["wm"][sel])
        wi = np.where(generic, 0, cols["wi"][sel])
        # the initial asset weight: the price-scaled default under the size and custom caps
        wi = np.where(borrow, wi, np.minimum(wi, initial_default))
        weighted_m, _ = _mul_div_floor(np.abs(value), wm, SPOT_WEIGHT_PRECISION)
        weighted_i, _ = _mul_div_floor(np.abs(value), wi, SPOT_WEIGHT_PRECISION)
        # a liability weighted below its value (or to nothing) raises in the program
        generic |= borrow & ((weighted_m < liability) | (weighted_i < liability))
        out[TC] = np.where(borrow, 0, weighted_m)
        out[MR] = np.where(borrow, weighted_m, 0) + orders_req
        out[TCI] = np.where(borrow, 0, weighted_i)
        out[MRI] = np.where(borrow, weighted_i, 0) + orders_req
        if self._buffer > 0:
            out[MRB] = out[MR] + self._liability_buffer(liability)
        return generic

    # --- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def user(self, key: UserKey) -> User | None:
        slot = self._slot_of.get(key)
        return None if slot is None else self._users[slot]

    def users(self) -> Iterator[User]:
        for slot in self._slot_of.values():
            user = self._users[slot]
            if user is not None:
                yield user

    def _margin_at(self, slot: int) -> UserMargin:
        user = self._users[slot]
        if user is None:
            raise KeyError(slot)
        t = self._totals[:, slot].tolist()
        return UserMargin(
            user=user,
            total_collateral=t[TC],
            total_collateral_buffer=t[TCB],
            margin_requirement=t[MR],
            margin_requirement_plus_buffer=t[MRB],
            initial_total_collateral=t[TCI],
            initial_margin_requirement=t[MRI],
            margin_buffer=self._buffer,
        )

    def margin(self, key: UserKey) -> UserMargin | None:
        """The user's totals, or ``None`` if unknown or not measurable (see :meth:`errors`)."""
        slot = self._slot_of.get(key)
        if slot is None or self._errors[slot]:
            return None
        return self._margin_at(slot)

    def errors(self) -> list[UserKey]:
        """Users whose calculation would raise in the program (bad oracle, broken position)."""
        n = len(self._users)
        live_errors = np.flatnonzero(self._live[:n] & (self._errors[:n] != 0))
        return [self._margin_at(slot).key for slot in live_errors.tolist()]

    def _candidates(self) -> tuple[npt.NDArray[np.intp], I64Array]:
        """Slots a liquidator may act on, and their margin shortages."""
        n = len(self._users)
        tc, tcb, mr, mrb = (self._totals[c, :n] for c in (TC, TCB, MR, MRB))
        below = np.where(self._being[:n], tc + tcb < mrb, tc < mr)
        candidates = self._live[:n] & (self._errors[:n] == 0) & ~self._bankrupt[:n] & below
        slots = np.flatnonzero(candidates)
        if self._buffer == 0:
            return slots, mr[slots] - tc[slots]
        return slots, mrb[slots] - (tc[slots] + tcb[slots])

    def count_liquidatable(self) -> int:
        return len(self._candidates()[0])

    def liquidatable(self, limit: int | None = None) -> list[UserMargin]:
        """Users a liquidator may act on now (measurable, not bankrupt, and
        :meth:`UserMargin.can_be_liquidated`), most underwater (largest margin shortage)
        first, ties in slot order; at most ``limit`` of them (only those are materialised)."""
        slots, shortage = self._candidates()
        if limit is not None and limit < len(slots):
            if limit <= 0:
                return []
            top = np.argpartition(-shortage, limit - 1)[:limit]
            slots, shortage = slots[top], shortage[top]
        order = np.lexsort((slots, -shortage))
        return [self._margin_at(slot) for slot in slots[order].tolist()]

    def bankrupt(self) -> list[User]:
        """Users flagged bankrupt, in slot order."""
        n = len(self._users)
        slots = np.flatnonzero(self._live[:n] & self._bankrupt[:n]).tolist()
        return [self._margin_at(slot).user for slot in slots]

    def users_in_market(self, market_type: MarketType, market_index: int) -> int:
        """How many users hold a position in the market."""
        store: _Store | None = (
            self._perp.get(market_index)
            if market_type == MarketType.Perp
            else self._spot.get(market_index)
        )
        return 0 if store is None else store.n


def _grown(a: npt.NDArray[np.generic], cap: int) -> npt.NDArray[Any]:
    out = np.zeros(cap, dtype=a.dtype)
    out[: len(a)] = a
    return out


# --- where user accounts come from ---------------------------------------------------------
@runtime_checkable
class UserSource(Protocol):
    """Every user account, as it changes. ``changed_users`` returns the accounts that changed
    since the previous call (the first call: all of them). A keeper process passes one to the
    bots that watch every user (``Subscriptions.users``) as ``BotContext.extra["users"]``: a
    cursor of its :class:`keepers.user_feed.UserFeed` (the node's accounts over HTTP and the
    bus), or a :class:`MappingUserSource` over an embedded node's accounts (the demo)."""

    def changed_users(self) -> list[User]: ...


class MappingUserSource:
    """A :class:`UserSource` over a live mapping whose accounts are replaced, never mutated
    (the embedded node's ``ProgramState.users``, which the program's commit replaces): an
    account object not seen before is a change. A scan is O(users) identity checks."""

    def __init__(self, users: Mapping[UserKey, User]) -> None:
        self._users = users
        self._seen: dict[UserKey, User] = {}

    def changed_users(self) -> list[User]:
        seen = self._seen
        changed: list[User] = []
        for key, user in self._users.items():
            if seen.get(key) is not user:
                seen[key] = user
                changed.append(user)
        return changed


def user_source(value: object) -> UserSource | None:
    """``BotContext.extra["users"]`` as a :class:`UserSource`: a source as is, a mapping of
    accounts wrapped in a :class:`MappingUserSource`, ``None`` as ``None``."""
    if value is None:
        return None
    if isinstance(value, UserSource):
        return value
    if isinstance(value, Mapping):
        return MappingUserSource(value)
    raise TypeError(f"not a user source: {type(value).__name__}")
