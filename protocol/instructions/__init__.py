"""Every instruction the program accepts. Importing this package registers them all."""

from protocol.instructions import amm, funding, oracle, orders, pnl, user
from protocol.instructions.amm import RepegAmmCurve, UpdateAmm, UpdateK
from protocol.instructions.funding import SettleFundingPayment, UpdateFundingRate
from protocol.instructions.oracle import UpdateOracle
from protocol.instructions.orders import (
    CancelOrder,
    CancelOrders,
    ModifyOrder,
    PlacePerpOrder,
    PlaceSpotOrder,
)
from protocol.instructions.pnl import SettlePnl
from protocol.instructions.user import (
    Deposit,
    InitializeUser,
    TransferDeposit,
    UpdateUserDelegate,
    Withdraw,
)

__all__ = [
    "CancelOrder",
    "CancelOrders",
    "Deposit",
    "InitializeUser",
    "ModifyOrder",
    "PlacePerpOrder",
    "PlaceSpotOrder",
    "RepegAmmCurve",
    "SettleFundingPayment",
    "SettlePnl",
    "TransferDeposit",
    "UpdateAmm",
    "UpdateFundingRate",
    "UpdateK",
    "UpdateOracle",
    "UpdateUserDelegate",
    "Withdraw",
    "amm",
    "funding",
    "oracle",
    "orders",
    "pnl",
    "user",
]
