"""The running totals of one margin calculation (the program's ``state/margin_calculation.rs``).

Units: ``total_collateral`` and every ``*_value`` are QUOTE_PRECISION (signed where a value can
be negative); ``margin_requirement`` is QUOTE_PRECISION and never negative; ``margin_buffer`` is
MARGIN_PRECISION (1e4 = 100%).

:class:`MarginContext` says *how* to measure (which requirement type, strict TWAP-aware
prices, whether deposits behind an invalid oracle count, the liquidation buffer);
:class:`MarginCalculation` accumulates the result while
``protocol.math.margin.calculate_margin_requirement_and_total_collateral_and_liability_info``
walks the user's positions.

Deviations from the program, all because this model has only cross margin:

* no isolated perp positions, so there is one requirement type instead of the program's
  ``MarginTypeConfig`` and no ``IsolatedMarginCalculation`` map. The program's cross-only names
  (``get_cross_free_collateral``, ``can_exit_cross_margin_liquidation``,
  ``cross_margin_margin_shortage``, ``get_cross_total_collateral_plus_buffer``) are kept as aliases
  of the shorter names the program used before it had isolated positions.
* no fuel bonus accounting (the program's ``fuel_*`` fields and ``update_fuel_*_bonus``).
* the asset/liability value totals the program only tracks under its ``drift-rs`` feature are
  always tracked here (bots read them).

Invariant: with ``margin_buffer == 0`` the ``*_buffer`` totals stay 0 and only
:meth:`MarginCalculation.meets_margin_requirement` is meaningful.

On its hot paths (perp positions, spot deposits) the account walk in ``protocol/math/margin.py``
adds to the totals in place, exactly as ``add_cross_margin_margin_requirement``,
``add_cross_margin_total_collateral`` and the one-line ``add_*``/``update_*`` methods do: a
change to those belongs there too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

from protocol.constants import MARGIN_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.numeric import div_trunc
from protocol.types import MarginRequirementType, MarketType


class MarginCalculationMode(IntEnum):
    Standard = 0
    Liquidation = 1


@dataclass(frozen=True, slots=True)
class MarketIdentifier:
    market_type: MarketType
    market_index: int

    # A margin calculation names the market of every position it adds; identifiers are frozen
    # values, so each is built once and shared.
    @classmethod
    def spot(cls, market_index: int) -> MarketIdentifier:
        identifier = _SPOT_IDENTIFIERS.get(market_index)
        if identifier is None:
            identifier = _SPOT_IDENTIFIERS[market_index] = cls(MarketType.Spot, market_index)
        return identifier

    @classmethod
    def perp(cls, market_index: int) -> MarketIdentifier:
        identifier = _PERP_IDENTIFIERS.get(market_index)
        if identifier is None:
            identifier = _PERP_IDENTIFIERS[market_index] = cls(MarketType.Perp, market_index)
        return identifier


_SPOT_IDENTIFIERS: dict[int, MarketIdentifier] = {}
_PERP_IDENTIFIERS: dict[int, MarketIdentifier] = {}


@dataclass(frozen=True, slots=True)
class MarginContext:
    """How to measure an account.

    ``strict`` values assets at min(oracle, 5-minute TWAP) and liabilities at the max (the program
    turns it on for placing orders and withdrawing). ``margin_buffer`` (MARGIN_PRECISION) is added
    on top of the requirement, proportionally to liability value, in the ``*_plus_buffer`` totals:
    the liquidation path passes ``State.liquidation_margin_buffer_ratio``.
    """

    margin_requirement_type: MarginRequirementType
    mode: MarginCalculationMode = MarginCalculationMode.Standard
    strict: bool = False
    ignore_invalid_deposit_oracles: bool = False
    margin_buffer: int = 0
    margin_ratio_override: int | None = None
    market_to_track_margin_requirement: MarketIdentifier | None = None

    @classmethod
    def standard(cls, margin_requirement_type: MarginRequirementType) -> MarginContext:
        return cls(margin_requirement_type)

    @classmethod
    def liquidation(cls, margin_buffer: int) -> MarginContext:
        """Maintenance requirement with the liquidation buffer (``MarginContext::liquidation``)."""
        return cls(
            MarginRequirementType.Maintenance,
            mode=MarginCalculationMode.Liquidation,
            margin_buffer=margin_buffer,
        )

    # The program's builder methods; renamed with ``with_`` because the fields keep its names.
    def with_strict(self, strict: bool) -> MarginContext:
        return dataclasses.replace(self, strict=strict)

    def with_ignore_invalid_deposit_oracles(self, ignore: bool) -> MarginContext:
        return dataclasses.replace(self, ignore_invalid_deposit_oracles=ignore)

    def with_margin_buffer(self, margin_buffer: int) -> MarginContext:
        return dataclasses.replace(self, margin_buffer=margin_buffer)

    def with_margin_ratio_override(self, margin_ratio_override: int) -> MarginContext:
        return dataclasses.replace(self, margin_ratio_override=margin_ratio_override)

    def track_market_margin_requirement(self, market_identifier: MarketIdentifier) -> MarginContext:
        if self.mode != MarginCalculationMode.Liquidation:
            raise ProtocolError(
                ErrorCode.InvalidMarginCalculation, "can only track a market in liquidation mode"
            )
        return dataclasses.replace(self, market_to_track_margin_requirement=market_identifier)


@dataclass(slots=True)
class MarginCalculation:
    context: MarginContext
    total_collateral: int = 0
    total_collateral_buffer: int = 0  # <= 0: the buffer share of negative collateral
    margin_requirement: int = 0
    margin_requirement_plus_buffer: int = 0
    num_spot_liabilities: int = 0
    num_perp_liabilities: int = 0
    all_deposit_oracles_valid: bool = True
    all_liability_oracles_valid: bool = True
    with_perp_isolated_liability: bool = False
    with_spot_isolated_liability: bool = False
    total_spot_asset_value: int = 0
    total_spot_liability_value: int = 0
    total_perp_liability_value: int = 0
    total_perp_pnl: int = 0
    tracked_market_margin_requirement: int = field(default=0)

    # --- accumulation ---------------------------------------------------------------------
    def add_cross_margin_total_collateral(self, total_collateral: int) -> None:
        self.total_collateral += total_collateral
        if total_collateral < 0 and self.context.margin_buffer > 0:
            # Rust `/` on a negative i128: truncates toward zero.
            self.total_collateral_buffer += div_trunc(
                total_collateral * self.context.margin_buffer, MARGIN_PRECISION
            )

    def add_cross_margin_margin_requirement(
        self, margin_requirement: int, liability_value: int, market_identifier: MarketIdentifier
    ) -> None:
        self.margin_requirement += margin_requirement
        if self.context.margin_buffer > 0:
            self.margin_requirement_plus_buffer += margin_requirement + div_trunc(
                liability_value * self.context.margin_buffer, MARGIN_PRECISION
            )
        tracked = self.context.market_to_track_margin_requirement
        if tracked is not None and tracked == market_identifier:
            self.tracked_market_margin_requirement += margin_requirement

    def add_spot_liability(self) -> None:
        self.num_spot_liabilities += 1

    def add_perp_liability(self) -> None:
        self.num_perp_liabilities += 1

    def add_spot_asset_value(self, spot_asset_value: int) -> None:
        self.total_spot_asset_value += spot_asset_value

    def add_spot_liability_value(self, spot_liability_value: int) -> None:
        self.total_spot_liability_value += spot_liability_value

    def add_perp_liability_value(self, perp_liability_value: int) -> None:
        self.total_perp_liability_value += perp_liability_value

    def add_perp_pnl(self, perp_pnl: int) -> None:
        self.total_perp_pnl += perp_pnl

    def update_all_deposit_oracles_valid(self, valid: bool) -> None:
        self.all_deposit_oracles_valid &= valid

    def update_all_liability_oracles_valid(self, valid: bool) -> None:
        self.all_liability_oracles_valid &= valid

    def update_with_spot_isolated_liability(self, isolated: bool) -> None:
        self.with_spot_isolated_liability |= isolated

    def update_with_perp_isolated_liability(self, isolated: bool) -> None:
        self.with_perp_isolated_liability |= isolated

    def validate_num_spot_liabilities(self) -> None:
        """A spot liability always carries a positive requirement; a zero one means a weight or
        price of zero slipped through."""
        if self.num_spot_liabilities > 0 and self.margin_requirement <= 0:
            raise ProtocolError(
                ErrorCode.InvalidMarginRatio,
                f"num_spot_liabilities={self.num_spot_liabilities} but margin_requirement=0",
            )

    # --- queries --------------------------------------------------------------------------
    @property
    def all_oracles_valid(self) -> bool:
        return self.all_deposit_oracles_valid and self.all_liability_oracles_valid

    def get_num_of_liabilities(self) -> int:
        return self.num_spot_liabilities + self.num_perp_liabilities

    def get_total_collateral_plus_buffer(self) -> int:
        return self.total_collateral + self.total_collateral_buffer

    def meets_margin_requirement(self) -> bool:
        return self.total_collateral >= self.margin_requirement

    def meets_margin_requirement_with_buffer(self) -> bool:
        return self.get_total_collateral_plus_buffer() >= self.margin_requirement_plus_buffer

    def is_liquidation_mode(self) -> bool:
        return self.context.mode == MarginCalculationMode.Liquidation

    def can_exit_liquidation(self) -> bool:
        """A user being liquidated leaves liquidation only once the buffered requirement is met."""
        if not self.is_liquidation_mode():
            raise ProtocolError(ErrorCode.InvalidMarginCalculation, "not in liquidation mode")
        return self.meets_margin_requirement_with_buffer()

    def margin_shortage(self) -> int:
        """How much buffered requirement is not covered (QUOTE_PRECISION, >= 0)."""
        if self.context.margin_buffer == 0:
            raise ProtocolError(ErrorCode.InvalidMarginCalculation, "margin buffer not enabled")
        return max(self.margin_requirement_plus_buffer - self.get_total_collateral_plus_buffer(), 0)

    def tracked_market_margin_shortage(self, margin_shortage: int) -> int:
        """The tracked market's pro-rata share of ``margin_shortage`` (truncated)."""
        if self.context.market_to_track_margin_requirement is None:
            raise ProtocolError(
                ErrorCode.InvalidMarginCalculation, "no market to track margin requirement"
            )
        if self.margin_requirement == 0:
            return 0
        return div_trunc(
            margin_shortage * self.tracked_market_margin_requirement, self.margin_requirement
        )

    def get_free_collateral(self) -> int:
        """``max(total_collateral - margin_requirement, 0)`` (QUOTE_PRECISION)."""
        return max(self.total_collateral - self.margin_requirement, 0)

    # The program's current, cross-margin-specific names.
    get_cross_free_collateral = get_free_collateral
    get_cross_total_collateral_plus_buffer = get_total_collateral_plus_buffer
    meets_cross_margin_requirement = meets_margin_requirement
    meets_cross_margin_requirement_with_buffer = meets_margin_requirement_with_buffer
    can_exit_cross_margin_liquidation = can_exit_liquidation
    cross_margin_margin_shortage = margin_shortage
