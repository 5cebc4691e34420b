"""Enumerations of the program, with the program's variant order (their ``u8`` encoding)."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class PositionDirection(IntEnum):
    Long = 0
    Short = 1

    def opposite(self) -> PositionDirection:
        return PositionDirection.Short if self is PositionDirection.Long else PositionDirection.Long


class SwapDirection(IntEnum):
    """Which way base moves into the AMM: ``Add`` base (a user sells), ``Remove`` base (buys)."""

    Add = 0
    Remove = 1


class MarketType(IntEnum):
    Spot = 0
    Perp = 1


class OrderType(IntEnum):
    Market = 0
    Limit = 1
    TriggerMarket = 2
    TriggerLimit = 3
    Oracle = 4


class OrderStatus(IntEnum):
    Init = 0
    Open = 1
    Filled = 2
    Canceled = 3


class OrderTriggerCondition(IntEnum):
    Above = 0
    Below = 1
    TriggeredAbove = 2
    TriggeredBelow = 3


class PostOnlyParam(IntEnum):
    """What placing a post-only order does when it would cross (``OrderParams.post_only``)."""

    None_ = 0  # not post-only
    MustPostOnly = 1  # the transaction fails if the order would take
    TryPostOnly = 2  # the order is silently not placed if it would take
    Slide = 3  # the price is moved to rest just behind the best opposing price


class OrderBitFlag(IntFlag):
    SignedMessage = 0b001
    OracleTriggerMarket = 0b010
    SafeTriggerOrder = 0b100
    NewTriggerReduceOnly = 0b1000


class SpotBalanceType(IntEnum):
    Deposit = 0
    Borrow = 1


class MarketStatus(IntEnum):
    Initialized = 0
    Active = 1
    FundingPaused = 2
    AmmPaused = 3
    FillPaused = 4
    WithdrawPaused = 5
    ReduceOnly = 6
    Settlement = 7
    Delisted = 8


class ContractType(IntEnum):
    Perpetual = 0
    Future = 1
    Prediction = 2


class ContractTier(IntEnum):
    A = 0
    B = 1
    C = 2
    Speculative = 3
    HighlySpeculative = 4
    Isolated = 5


class AssetTier(IntEnum):
    Collateral = 0
    Protected = 1
    Cross = 2
    Isolated = 3
    Unlisted = 4


class OracleSource(IntEnum):
    """Only the distinctions the validity rules make: stable coins get a longer margin staleness."""

    Pyth = 0
    QuoteAsset = 1
    PythStableCoin = 2


class UserStatus(IntFlag):
    Active = 0
    BeingLiquidated = 0b00001
    Bankrupt = 0b00010
    ReduceOnly = 0b00100
    AdvancedLp = 0b01000
    ProtectedMakerOrders = 0b10000


class MarginRequirementType(IntEnum):
    Initial = 0
    Fill = 1
    Maintenance = 2


class SpotFulfillmentType(IntEnum):
    Match = 0
