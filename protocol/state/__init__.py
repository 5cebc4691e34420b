"""Account state of the program: global config, markets, users, oracles."""

from protocol.state.oracle import (
    HistoricalIndexData,
    HistoricalOracleData,
    OracleAccount,
    OraclePriceData,
)
from protocol.state.order_params import OrderParams
from protocol.state.perp_market import AMM, InsuranceClaim, PerpMarket
from protocol.state.spot_market import InsuranceFund, PoolBalance, SpotMarket
from protocol.state.state import (
    FeeStructure,
    FeeTier,
    OracleGuardRails,
    OrderFillerRewardStructure,
    PriceDivergenceGuardRails,
    State,
    ValidityGuardRails,
)
from protocol.state.user import (
    Order,
    PerpPosition,
    SpotPosition,
    User,
    UserFees,
    UserKey,
    UserStats,
)

__all__ = [
    "AMM",
    "FeeStructure",
    "FeeTier",
    "HistoricalIndexData",
    "HistoricalOracleData",
    "InsuranceClaim",
    "InsuranceFund",
    "OracleAccount",
    "OracleGuardRails",
    "OraclePriceData",
    "Order",
    "OrderFillerRewardStructure",
    "OrderParams",
    "PerpMarket",
    "PerpPosition",
    "PoolBalance",
    "PriceDivergenceGuardRails",
    "SpotMarket",
    "SpotPosition",
    "State",
    "User",
    "UserFees",
    "UserKey",
    "UserStats",
    "ValidityGuardRails",
]
