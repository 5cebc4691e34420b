"""Records an instruction emits (the program's events), in the order they happened.

Every record is a frozen dataclass. :class:`protocol.program.Program` wraps each in a
:class:`SequencedRecord` with a gap-free sequence number when its transaction commits;
records of rejected transactions are discarded with the rest of the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.types import (
    MarketType,
    OrderType,
    PositionDirection,
)


@dataclass(frozen=True, slots=True)
class NewUserRecord:
    authority: bytes
    sub_account_id: int
    ts: int


@dataclass(frozen=True, slots=True)
class DepositRecord:
    """A deposit (``direction == "deposit"``) or withdrawal, in the mint's token units."""

    authority: bytes
    sub_account_id: int
    direction: str  # "deposit" | "withdraw"
    market_index: int
    amount: int
    oracle_price: int
    market_deposit_balance: int
    market_withdraw_balance: int
    market_cumulative_deposit_interest: int
    market_cumulative_borrow_interest: int
    total_deposits_after: int
    total_withdraws_after: int
    deposit_record_id: int
    transfer_user: tuple[bytes, int] | None
    ts: int


@dataclass(frozen=True, slots=True)
class OrderActionRecord:
    """An order was placed, cancelled, modified, expired, triggered or filled."""

    action: str  # "place" | "cancel" | "modify" | "expire" | "trigger" | "fill"
    authority: bytes
    sub_account_id: int
    order_id: int
    market_index: int
    market_type: MarketType
    order_type: OrderType
    direction: PositionDirection
    base_asset_amount: int
    base_asset_amount_filled: int
    price: int
    reason: str
    slot: int
    ts: int


@dataclass(frozen=True, slots=True)
class FundingRateRecord:
    record_id: int
    market_index: int
    funding_rate: int
    funding_rate_long: int
    funding_rate_short: int
    cumulative_funding_rate_long: int
    cumulative_funding_rate_short: int
    oracle_price_twap: int
    mark_price_twap: int
    period_revenue: int
    base_asset_amount_with_amm: int
    base_asset_amount_with_unsettled_lp: int
    ts: int


@dataclass(frozen=True, slots=True)
class FundingPaymentRecord:
    authority: bytes
    sub_account_id: int
    market_index: int
    funding_payment: int  # QUOTE_PRECISION, what the user received (negative: paid)
    base_asset_amount: int
    user_last_cumulative_funding: int
    amm_cumulative_funding_long: int
    amm_cumulative_funding_short: int
    ts: int


@dataclass(frozen=True, slots=True)
class OracleUpdateRecord:
    oracle_id: str
    price: int
    confidence: int
    slot: int


@dataclass(frozen=True, slots=True)
class SpotInterestRecord:
    market_index: int
    deposit_balance: int
    cumulative_deposit_interest: int
    borrow_balance: int
    cumulative_borrow_interest: int
    optimal_utilization: int
    optimal_borrow_rate: int
    max_borrow_rate: int
    ts: int


@dataclass(frozen=True, slots=True)
class CurveRecord:
    """The AMM's curve moved (repeg, k change). Reserves AMM_RESERVE_PRECISION, peg
    PEG_PRECISION, ``adjustment_cost`` QUOTE_PRECISION (positive: the market paid)."""

    ts: int
    record_id: int
    market_index: int
    peg_multiplier_before: int
    base_asset_reserve_before: int
    quote_asset_reserve_before: int
    sqrt_k_before: int
    peg_multiplier_after: int
    base_asset_reserve_after: int
    quote_asset_reserve_after: int
    sqrt_k_after: int
    base_asset_amount_long: int
    base_asset_amount_short: int
    base_asset_amount_with_amm: int
    number_of_users: int
    total_fee: int
    total_fee_minus_distributions: int
    adjustment_cost: int
    oracle_price: int
    fill_record: int


@dataclass(frozen=True, slots=True)
class SettlePnlRecord:
    """A user's perp PnL moved between its quote (USDC) balance and the market's pnl pool.

    ``pnl`` (QUOTE_PRECISION) is what the user received (negative: paid into the pool);
    ``quote_asset_amount_after`` and ``quote_entry_amount`` are the position's after settling;
    ``settle_price`` the oracle price used (PRICE_PRECISION). ``explanation`` is ``""`` for an
    ordinary settlement (the program's ``SettlePnlExplanation::None``) or
    ``"expired_position"``.
    """

    authority: bytes
    sub_account_id: int
    market_index: int
    pnl: int
    base_asset_amount: int
    quote_asset_amount_after: int
    quote_entry_amount: int
    settle_price: int
    explanation: str
    ts: int


Record = (
    NewUserRecord
    | DepositRecord
    | OrderActionRecord
    | FundingRateRecord
    | FundingPaymentRecord
    | OracleUpdateRecord
    | SpotInterestRecord
    | SettlePnlRecord
    | CurveRecord
)


@dataclass(frozen=True, slots=True)
class SequencedRecord:
    """A committed record: ``seq`` is gap-free across the program's whole history."""

    seq: int
    slot: int
    record: Record
