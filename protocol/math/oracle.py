"""Oracle validity (the program's ``math/oracle.rs``).

An oracle reading (:class:`~protocol.state.OraclePriceData`: price and confidence at
PRICE_PRECISION, ``delay`` in slots) is judged against the exchange's
:class:`~protocol.state.ValidityGuardRails` and the market's last oracle TWAP. The verdict is
one :class:`OracleValidity`, the worst that applies, in the program's order of severity:
``NonPositive``, ``TooVolatile``, ``TooUncertain``, ``StaleForMargin``,
``InsufficientDataPoints``, ``StaleForAMM(immediate, low_risk)``, ``Valid``. Each action
(:class:`DriftAction`) then tolerates a different set of verdicts
(:func:`is_oracle_valid_for_action`).

Two places a reader might not expect:

* a price of zero or below is judged ``NonPositive`` before anything divides by it. The
  program divides by the price first (so such a reading fails its instruction with
  ``MathError``/``CastingFailure``); here oracle accounts are written by an authority that may
  publish anything, so the reading is classified and each action's rules block what they must;
* the AMM's "immediate" staleness threshold is the per-market override
  (``slots_before_stale_for_amm_immediate_override``): 0 means *always* stale-for-immediate and
  a negative value means "stale after 0 slots". The program initialises a market's override to
  -1, so that is this module's default; the low-risk override defaults to 0, which means "use
  ``slots_before_stale_for_amm``".

Deviations: the program's log mode is not modelled (it only writes log lines). A perp market's
"UpdateFunding paused" operation flag is ``MarketStatus.FundingPaused`` here (markets have one
status rather than a paused-operations bit set). The stable-coin sources (the program's
``PythStableCoinPull`` / ``PythLazerStableCoin``) are ``OracleSource.PythStableCoin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import ClassVar

from protocol.constants import BID_ASK_SPREAD_PRECISION
from protocol.error_codes import ErrorCode
from protocol.math.amm import (
    calculate_oracle_twap_5min_price_spread_pct,
    is_oracle_mark_too_divergent,
)
from protocol.numeric import cast_u64, div_trunc
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.state import OracleGuardRails, ValidityGuardRails
from protocol.types import AssetTier, ContractTier, MarketStatus, MarketType, OracleSource


class OracleValidityKind(IntEnum):
    """The verdicts, ordered by severity (most severe first), as the program's enum."""

    NonPositive = 0
    TooVolatile = 1
    TooUncertain = 2
    StaleForMargin = 3
    InsufficientDataPoints = 4
    StaleForAMM = 5
    Valid = 6


_ERROR_CODES = {
    OracleValidityKind.NonPositive: ErrorCode.OracleNonPositive,
    OracleValidityKind.TooVolatile: ErrorCode.OracleTooVolatile,
    OracleValidityKind.TooUncertain: ErrorCode.OracleTooUncertain,
    OracleValidityKind.StaleForMargin: ErrorCode.OracleStaleForMargin,
    OracleValidityKind.InsufficientDataPoints: ErrorCode.OracleInsufficientDataPoints,
    OracleValidityKind.StaleForAMM: ErrorCode.OracleStaleForAMM,
}


@dataclass(frozen=True, slots=True)
class OracleValidity:
    """The program's ``OracleValidity``. Only ``StaleForAMM`` carries its two flags (whether the
    reading is too old for immediate AMM fills, and for low-risk ones); they are False for every
    other verdict. Use the class constants (``OracleValidity.Valid``, ...) and
    :meth:`stale_for_amm` rather than building values by hand."""

    kind: OracleValidityKind
    immediate: bool = False
    low_risk: bool = False

    NonPositive: ClassVar[OracleValidity]
    TooVolatile: ClassVar[OracleValidity]
    TooUncertain: ClassVar[OracleValidity]
    StaleForMargin: ClassVar[OracleValidity]
    InsufficientDataPoints: ClassVar[OracleValidity]
    Valid: ClassVar[OracleValidity]

    def __post_init__(self) -> None:
        if self.kind is not OracleValidityKind.StaleForAMM and (self.immediate or self.low_risk):
            raise ValueError(f"{self.kind.name} carries no staleness flags")

    @staticmethod
    def stale_for_amm(immediate: bool, low_risk: bool) -> OracleValidity:
        return OracleValidity(OracleValidityKind.StaleForAMM, immediate, low_risk)

    @property
    def name(self) -> str:
        """The variant's name (``StaleForAMM`` whatever its flags)."""
        return self.kind.name

    def get_error_code(self) -> ErrorCode:
        """The error an instruction returns for this verdict (there is none for ``Valid``)."""
        if self.kind is OracleValidityKind.Valid:
            raise ValueError("a valid oracle has no error code")
        return _ERROR_CODES[self.kind]

    def to_u8(self) -> int:
        """The program's ``u8`` encoding. ``StaleForAMM`` that is stale for neither fill kind
        encodes as ``Valid`` (7); stale for low-risk fills but not immediate ones has no
        encoding (the program treats it as unreachable)."""
        if self.kind is not OracleValidityKind.StaleForAMM:
            return 7 if self.kind is OracleValidityKind.Valid else int(self.kind)
        if self.immediate:
            return 5 if self.low_risk else 6
        if self.low_risk:
            raise ValueError("StaleForAMM(immediate=False, low_risk=True) has no u8 encoding")
        return 7

    @staticmethod
    def from_u8(value: int) -> OracleValidity:
        if 0 <= value <= 4:
            return OracleValidity(OracleValidityKind(value))
        if value == 5:
            return OracleValidity.stale_for_amm(immediate=True, low_risk=True)
        if value == 6:
            return OracleValidity.stale_for_amm(immediate=True, low_risk=False)
        if value == 7:
            return OracleValidity.Valid
        raise ValueError(f"invalid OracleValidity encoding {value}")

    def __str__(self) -> str:
        if self.kind is OracleValidityKind.StaleForAMM:
            if self.immediate:
                return "StaleForAMM (immediate)"
            if self.low_risk:
                return "StaleForAMM (low risk)"
        return self.kind.name


OracleValidity.NonPositive = OracleValidity(OracleValidityKind.NonPositive)
OracleValidity.TooVolatile = OracleValidity(OracleValidityKind.TooVolatile)
OracleValidity.TooUncertain = OracleValidity(OracleValidityKind.TooUncertain)
OracleValidity.StaleForMargin = OracleValidity(OracleValidityKind.StaleForMargin)
OracleValidity.InsufficientDataPoints = OracleValidity(OracleValidityKind.InsufficientDataPoints)
OracleValidity.Valid = OracleValidity(OracleValidityKind.Valid)


class DriftAction(IntEnum):
    """What an oracle reading is about to be used for (the program's variant order)."""

    UpdateFunding = 0
    SettlePnl = 1
    TriggerOrder = 2
    FillOrderMatch = 3
    FillOrderAmmLowRisk = 4
    FillOrderAmmImmediate = 5
    Liquidate = 6
    MarginCalc = 7
    UpdateTwap = 8
    UpdateAMMCurve = 9
    OracleOrderPrice = 10
    UseMMOraclePrice = 11
    UpdateAmmCache = 12
    UpdateLpPoolAum = 13
    LpPoolSwap = 14


_K = OracleValidityKind

# The verdicts each action accepts. Staleness is relaxed for funding (the funding update
# separately requires a recent AMM update) and for settling pnl.
_ACCEPTED: dict[DriftAction, frozenset[OracleValidityKind]] = {
    DriftAction.FillOrderAmmImmediate: frozenset({_K.Valid}),
    DriftAction.UpdateFunding: frozenset(
        {_K.Valid, _K.StaleForAMM, _K.InsufficientDataPoints, _K.StaleForMargin}
    ),
    DriftAction.OracleOrderPrice: frozenset({_K.Valid, _K.StaleForAMM, _K.InsufficientDataPoints}),
    DriftAction.MarginCalc: frozenset(_K)
    - {_K.NonPositive, _K.TooVolatile, _K.TooUncertain, _K.StaleForMargin},
    DriftAction.TriggerOrder: frozenset(_K) - {_K.NonPositive, _K.TooVolatile},
    DriftAction.SettlePnl: frozenset(
        {_K.Valid, _K.StaleForAMM, _K.InsufficientDataPoints, _K.StaleForMargin}
    ),
    DriftAction.FillOrderMatch: frozenset(_K) - {_K.NonPositive, _K.TooVolatile, _K.TooUncertain},
    DriftAction.UpdateAmmCache: frozenset(_K) - {_K.NonPositive, _K.TooVolatile, _K.TooUncertain},
    DriftAction.UpdateLpPoolAum: frozenset(_K) - {_K.NonPositive, _K.TooVolatile, _K.TooUncertain},
    DriftAction.LpPoolSwap: frozenset(_K) - {_K.NonPositive, _K.TooVolatile, _K.TooUncertain},
    DriftAction.Liquidate: frozenset(_K) - {_K.NonPositive, _K.TooVolatile},
    DriftAction.UpdateTwap: frozenset(_K) - {_K.NonPositive},
    DriftAction.UpdateAMMCurve: frozenset(_K) - {_K.NonPositive},
    DriftAction.UseMMOraclePrice: frozenset(_K) - {_K.NonPositive, _K.TooVolatile},
}


def is_oracle_valid_for_action(oracle_validity: OracleValidity, action: DriftAction | None) -> bool:
    """Whether ``action`` may use an oracle with this verdict (no action: only ``Valid``)."""
    if action is None:
        return oracle_validity.kind is _K.Valid
    if action is DriftAction.FillOrderAmmLowRisk:
        # stale-for-immediate is tolerated, stale-for-low-risk is not
        return oracle_validity.kind is _K.Valid or (
            oracle_validity.kind is _K.StaleForAMM and not oracle_validity.low_risk
        )
    return oracle_validity.kind in _ACCEPTED[action]


# Pure in hashable, frozen arguments, and a margin check asks it the same question for every
# position priced by the same oracle: cache the answers.
@lru_cache(maxsize=4096)
def oracle_validity(
    market_type: MarketType,
    market_index: int,
    last_oracle_twap: int,
    oracle_price_data: OraclePriceData,
    valid_oracle_guard_rails: ValidityGuardRails,
    max_confidence_interval_multiplier: int,
    oracle_source: OracleSource,
    slots_before_stale_for_amm_immediate_override: int = -1,
    oracle_low_risk_slot_delay_override: int = 0,
) -> OracleValidity:
    """Judge one oracle reading. ``market_type`` and ``market_index`` only label the program's
    log lines; they are kept so calls line up with the program's."""
    del market_type, market_index
    oracle_price = oracle_price_data.price
    oracle_conf = oracle_price_data.confidence
    oracle_delay = oracle_price_data.delay
    guard_rails = valid_oracle_guard_rails

    if oracle_price <= 0:
        # The program divides by the price before it classifies it, so a non-positive reading
        # fails the instruction with MathError/CastingFailure. Oracle accounts here are written
        # by an authority that may publish anything; classify the reading instead, so every
        # reader sees NonPositive and the usual per-action rules block what they must.
        return OracleValidity.NonPositive
    is_oracle_price_nonpositive = False

    # the larger of price and TWAP over the smaller (floored at 1), compared as a whole ratio
    is_oracle_price_too_volatile = (
        div_trunc(max(oracle_price, last_oracle_twap), max(min(last_oracle_twap, oracle_price), 1))
        > guard_rails.too_volatile_ratio
    )

    # the program divides by the price before it looks at its sign (see the module docstring)
    conf_pct_of_price = div_trunc(oracle_conf * BID_ASK_SPREAD_PRECISION, cast_u64(oracle_price))
    is_conf_too_large = (
        conf_pct_of_price
        > guard_rails.confidence_interval_max_size * max_confidence_interval_multiplier
    )

    if slots_before_stale_for_amm_immediate_override != 0:
        is_stale_for_amm_immediate = oracle_delay > max(
            slots_before_stale_for_amm_immediate_override, 0
        )
    else:
        is_stale_for_amm_immediate = True

    if oracle_low_risk_slot_delay_override != 0:
        is_stale_for_amm_low_risk = oracle_delay > max(oracle_low_risk_slot_delay_override, 0)
    else:
        is_stale_for_amm_low_risk = oracle_delay > guard_rails.slots_before_stale_for_amm

    if oracle_source is OracleSource.PythStableCoin:
        # stable coins move little, so a reading stays usable for margin three times as long
        is_stale_for_margin = oracle_delay > guard_rails.slots_before_stale_for_margin * 3
    else:
        is_stale_for_margin = oracle_delay > guard_rails.slots_before_stale_for_margin

    if is_oracle_price_nonpositive:
        return OracleValidity.NonPositive
    if is_oracle_price_too_volatile:
        return OracleValidity.TooVolatile
    if is_conf_too_large:
        return OracleValidity.TooUncertain
    if is_stale_for_margin:
        return OracleValidity.StaleForMargin
    if not oracle_price_data.has_sufficient_number_of_data_points:
        return OracleValidity.InsufficientDataPoints
    if is_stale_for_amm_immediate or is_stale_for_amm_low_risk:
        return OracleValidity.stale_for_amm(is_stale_for_amm_immediate, is_stale_for_amm_low_risk)
    return OracleValidity.Valid


# ``get_max_confidence_interval_multiplier``'s tables, for callers that know the market's kind.
MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_CONTRACT_TIER: Mapping[ContractTier, int] = {
    ContractTier.A: 1,
    ContractTier.B: 1,
    ContractTier.C: 2,
    ContractTier.Speculative: 10,
    ContractTier.HighlySpeculative: 50,
    ContractTier.Isolated: 50,
}
MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_ASSET_TIER: Mapping[AssetTier, int] = {
    AssetTier.Collateral: 1,
    AssetTier.Protected: 1,
    AssetTier.Cross: 5,
    AssetTier.Isolated: 50,
    AssetTier.Unlisted: 50,
}


def get_max_confidence_interval_multiplier(market: PerpMarket | SpotMarket) -> int:
    """How many times ``confidence_interval_max_size`` a market tolerates: the program's
    ``PerpMarket::`` (by contract tier) and ``SpotMarket::get_max_confidence_interval_multiplier``
    (by asset tier)."""
    if isinstance(market, PerpMarket):
        return MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_CONTRACT_TIER[market.contract_tier]
    return MAX_CONFIDENCE_INTERVAL_MULTIPLIER_BY_ASSET_TIER[market.asset_tier]


def is_oracle_valid(
    oracle_price_data: OraclePriceData,
    last_oracle_twap: int,
    guard_rails: ValidityGuardRails,
    action: DriftAction | None,
    max_confidence_interval_multiplier: int = 1,
    oracle_source: OracleSource = OracleSource.Pyth,
) -> bool:
    """Convenience: :func:`oracle_validity` with the default overrides, then
    :func:`is_oracle_valid_for_action`."""
    validity = oracle_validity(
        MarketType.Perp,
        0,
        last_oracle_twap,
        oracle_price_data,
        guard_rails,
        max_confidence_interval_multiplier,
        oracle_source,
    )
    return is_oracle_valid_for_action(validity, action)


@dataclass(frozen=True, slots=True)
class OracleStatus:
    price_data: OraclePriceData
    oracle_reserve_price_spread_pct: int  # BID_ASK_SPREAD_PRECISION, vs the 5-min oracle TWAP
    mark_too_divergent: bool
    oracle_validity: OracleValidity


def get_oracle_status(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    guard_rails: OracleGuardRails,
    reserve_price: int,
) -> OracleStatus:
    """Validity (with both AMM staleness thresholds set to ``slots_before_stale_for_amm``) and
    whether the reserve price has strayed too far from the 5-minute oracle TWAP."""
    slot_delay_override = guard_rails.validity.slots_before_stale_for_amm
    validity = oracle_validity(
        MarketType.Perp,
        market.market_index,
        market.amm.historical_oracle_data.last_oracle_price_twap,
        oracle_price_data,
        guard_rails.validity,
        get_max_confidence_interval_multiplier(market),
        market.amm.oracle_source,
        slot_delay_override,
        slot_delay_override,
    )
    spread_pct = calculate_oracle_twap_5min_price_spread_pct(market.amm, reserve_price)
    return OracleStatus(
        price_data=oracle_price_data,
        oracle_reserve_price_spread_pct=spread_pct,
        mark_too_divergent=is_oracle_mark_too_divergent(spread_pct, guard_rails.price_divergence),
        oracle_validity=validity,
    )


def block_operation(
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    guard_rails: OracleGuardRails,
    reserve_price: int,
    slot: int,
) -> bool:
    """Whether the funding update must wait: the oracle is unusable for funding, the reserve
    price is too far from the oracle TWAP, funding is paused on the market, or the AMM has not
    been updated for more slots than ``funding_period`` has seconds."""
    status = get_oracle_status(market, oracle_price_data, guard_rails, reserve_price)
    is_valid = is_oracle_valid_for_action(status.oracle_validity, DriftAction.UpdateFunding)
    slots_since_amm_update = max(slot - market.amm.last_update_slot, 0)
    funding_paused_on_market = market.status is MarketStatus.FundingPaused
    return (
        slots_since_amm_update > market.amm.funding_period
        or not is_valid
        or status.mark_too_divergent
        or funding_paused_on_market
    )
