"""Every instruction the program accepts. Importing this package registers them all."""

from protocol.instructions import funding, oracle, orders, user
from protocol.instructions.funding import SettleFundingPayment, UpdateFundingRate
from protocol.instructions.oracle import UpdateOracle
from protocol.instructions.orders import (
    CancelOrder,
    CancelOrders,
    ModifyOrder,
    PlacePerpOrder,
    PlaceSpotOrder,
)
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
    "SettleFundingPayment",
    "TransferDeposit",
    "UpdateFundingRate",
    "UpdateOracle",
    "UpdateUserDelegate",
    "Withdraw",
    "funding",
    "oracle",
    "orders",
    "user",
]
