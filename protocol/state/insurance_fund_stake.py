"""One authority's stake in one spot market's insurance fund (the program's
``state/insurance_fund_stake.rs::InsuranceFundStake``).

Units: ``if_shares`` and ``last_withdraw_request_shares`` are insurance-fund shares at the
exponent ``if_base`` (see :func:`protocol.controller.insurance.apply_rebase_to_insurance_fund`);
``last_withdraw_request_value`` and ``cost_basis`` are tokens in the mint's units; timestamps
unix seconds.

Invariant: shares are only read or changed while ``if_base`` equals the market's
``insurance_fund.shares_base`` (``InvalidIFRebase`` otherwise); a stake whose base is behind
is first rebased by the controller. ``last_withdraw_request_shares == 0`` means no unstake
request is pending.

Deviation: the program keeps ``if_shares`` private behind accessors; here it is a plain field
(accounts are dataclasses), and the accessors below are what the controller uses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.numeric import cast_u128
from protocol.state.spot_market import SpotMarket

InsuranceFundStakeKey = tuple[bytes, int]
"""``(authority, market_index)``: the program derives the stake account from both."""


@dataclass(slots=True)
class InsuranceFundStake:
    authority: bytes
    market_index: int
    if_shares: int = 0
    last_withdraw_request_shares: int = 0  # 0 when no request is pending
    last_withdraw_request_value: int = 0  # tokens the pending request is worth at most
    last_withdraw_request_ts: int = 0
    if_base: int = 0  # exponent of the shares (rebase count, in powers of ten)
    cost_basis: int = 0  # tokens staked minus tokens withdrawn (i64 in the program)
    last_valid_ts: int = 0

    @classmethod
    def new(cls, authority: bytes, market_index: int, now: int) -> InsuranceFundStake:
        return cls(authority=authority, market_index=market_index, last_valid_ts=now)

    @property
    def key(self) -> InsuranceFundStakeKey:
        return (self.authority, self.market_index)

    def clone(self) -> InsuranceFundStake:
        return copy.copy(self)

    def validate_base(self, spot_market: SpotMarket) -> None:
        if self.if_base != spot_market.insurance_fund.shares_base:
            raise ProtocolError(
                ErrorCode.InvalidIFRebase,
                f"if stake bases mismatch. user base: {self.if_base} "
                f"market base {spot_market.insurance_fund.shares_base}",
            )

    def checked_if_shares(self, spot_market: SpotMarket) -> int:
        self.validate_base(spot_market)
        return self.if_shares

    def unchecked_if_shares(self) -> int:
        return self.if_shares

    def increase_if_shares(self, delta: int, spot_market: SpotMarket) -> None:
        self.validate_base(spot_market)
        self.if_shares = cast_u128(self.if_shares + delta)

    def decrease_if_shares(self, delta: int, spot_market: SpotMarket) -> None:
        self.validate_base(spot_market)
        if delta > self.if_shares:
            raise MathError(f"if_shares {self.if_shares} cannot decrease by {delta}")
        self.if_shares -= delta

    def update_if_shares(self, new_shares: int, spot_market: SpotMarket) -> None:
        self.validate_base(spot_market)
        self.if_shares = new_shares
