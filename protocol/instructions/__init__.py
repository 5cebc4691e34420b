"""Every instruction the program accepts. Importing this package registers them all."""

from protocol.instructions import oracle, user
from protocol.instructions.oracle import UpdateOracle
from protocol.instructions.user import (
    Deposit,
    InitializeUser,
    TransferDeposit,
    UpdateUserDelegate,
    Withdraw,
)

__all__ = [
    "Deposit",
    "InitializeUser",
    "TransferDeposit",
    "UpdateOracle",
    "UpdateUserDelegate",
    "Withdraw",
    "oracle",
    "user",
]
