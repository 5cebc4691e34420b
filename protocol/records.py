"""Records an instruction emits (the program's events), in the order they happened.

Every record is a frozen dataclass. :class:`protocol.program.Program` wraps each in a
:class:`SequencedRecord` with a gap-free sequence number when its transaction commits;
records of rejected transactions are discarded with the rest of the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.state.user import Order
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
    """An order was placed, cancelled, modified, expired, triggered or filled.

    ``order`` is a copy of the whole order as it was when the record was emitted (after the
    change; for a cancel or expire, as it left the book). Not a field of the program's record,
    whose indexers join it with the account; here the node publishes it as the order event
    without a second state read, which could not see an order placed and fully filled in one
    transaction. Left out of equality so records compare by what the program logs.
    """

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
    # the keeper paid for this action (an expiry or a cancel by a filler) and what it was paid,
    # as the program's record carries them
    filler: tuple[bytes, int] | None = None
    filler_reward: int = 0
    order: Order | None = field(default=None, compare=False, repr=False)


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


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One fill of a taker order: against a maker's order or against the AMM (``maker`` None).

    ``layer`` is where the liquidity came from: ``"jit"`` (a maker order placed by
    place-and-make in the same transaction), ``"dlob"`` (a resting order) or ``"amm"``.
    ``base_asset_amount`` is BASE_PRECISION (perp) or the mint's units (spot);
    ``quote_asset_amount``, fees and rewards are QUOTE_PRECISION; prices PRICE_PRECISION.
    ``taker_fee == maker_rebate + filler_reward + referrer_reward + fee_to_market -
    quote_asset_amount_surplus`` (the surplus is the AMM's spread revenue, 0 for a match).
    ``fill_record_id`` is the market's running fill counter; ``filler`` is the user account
    credited with the filler reward (the transaction's filler, even when it earned nothing).
    """

    fill_record_id: int
    market_type: MarketType
    market_index: int
    layer: str  # "jit" | "dlob" | "amm"
    taker: tuple[bytes, int]
    taker_order_id: int
    taker_direction: PositionDirection
    maker: tuple[bytes, int] | None
    maker_order_id: int | None
    base_asset_amount: int
    quote_asset_amount: int
    fill_price: int
    taker_fee: int
    maker_rebate: int
    filler_reward: int
    referrer_reward: int
    fee_to_market: int
    quote_asset_amount_surplus: int
    oracle_price: int
    filler: tuple[bytes, int]
    slot: int
    ts: int


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """A trigger order fired: the oracle price crossed ``trigger_price`` (PRICE_PRECISION).
    ``filler_reward`` (QUOTE_PRECISION) is the flat fee the user paid the keeper."""

    authority: bytes
    sub_account_id: int
    order_id: int
    market_type: MarketType
    market_index: int
    trigger_price: int
    oracle_price: int
    filler: tuple[bytes, int]
    filler_reward: int
    slot: int
    ts: int


@dataclass(frozen=True, slots=True)
class InsuranceFundRecord:
    """Tokens moved into (``amount > 0``: a revenue settlement) or out of (``amount < 0``) a
    spot market's insurance fund vault, in the mint's units. ``perp_market_index`` is the perp
    market drawing on the fund (0 for a revenue settlement, as in the program);
    ``vault_amount_before`` is the spot market's vault. Factors are IF_FACTOR_PRECISION."""

    ts: int
    spot_market_index: int
    perp_market_index: int
    user_if_factor: int
    total_if_factor: int
    vault_amount_before: int
    insurance_vault_amount_before: int
    total_if_shares_before: int
    total_if_shares_after: int
    amount: int


@dataclass(frozen=True, slots=True)
class InsuranceFundStakeRecord:
    """An insurance-fund staker's action. ``action`` is ``"stake"``, ``"unstake_request"``,
    ``"unstake_cancel_request"``, ``"unstake"``, ``"unstake_transfer"``, ``"stake_transfer"``
    or ``"admin_deposit"`` (the program's ``StakeAction``); ``amount`` is tokens staked,
    requested or paid out (mint units); shares are at the fund's ``shares_base``."""

    ts: int
    user_authority: bytes
    action: str
    amount: int
    market_index: int
    insurance_vault_amount_before: int
    if_shares_before: int
    user_if_shares_before: int
    total_if_shares_before: int
    if_shares_after: int
    user_if_shares_after: int
    total_if_shares_after: int


@dataclass(frozen=True, slots=True)
class LiquidatePerpRecord:
    """A perp position taken over at ``oracle_price`` (PRICE_PRECISION). ``base_asset_amount``
    and ``quote_asset_amount`` are the liquidated user's position delta (BASE / QUOTE
    precision); ``lp_shares`` the BAL shares burned first; fees QUOTE_PRECISION."""

    market_index: int
    oracle_price: int
    base_asset_amount: int
    quote_asset_amount: int
    lp_shares: int
    user_order_id: int
    liquidator_order_id: int
    fill_record_id: int
    liquidator_fee: int
    if_fee: int


@dataclass(frozen=True, slots=True)
class LiquidateSpotRecord:
    """A borrow (liability) taken over for a deposit (asset), both in their mints' units;
    ``if_fee`` (liability units) went to the liability market's revenue pool."""

    asset_market_index: int
    asset_price: int
    asset_transfer: int
    liability_market_index: int
    liability_price: int
    liability_transfer: int
    if_fee: int


@dataclass(frozen=True, slots=True)
class LiquidateBorrowForPerpPnlRecord:
    """A borrow taken over for positive perp PnL (``pnl_transfer``, QUOTE_PRECISION)."""

    perp_market_index: int
    market_oracle_price: int
    pnl_transfer: int
    liability_market_index: int
    liability_price: int
    liability_transfer: int


@dataclass(frozen=True, slots=True)
class LiquidatePerpPnlForDepositRecord:
    """Negative perp PnL (``pnl_transfer``, QUOTE_PRECISION) taken over for a deposit."""

    perp_market_index: int
    market_oracle_price: int
    pnl_transfer: int
    asset_market_index: int
    asset_price: int
    asset_transfer: int


@dataclass(frozen=True, slots=True)
class LiquidationRecord:
    """One liquidation step (the program's ``LiquidationRecord``). ``liquidation_type`` is
    ``"liquidate_perp"``, ``"liquidate_spot"``, ``"liquidate_borrow_for_perp_pnl"`` or
    ``"liquidate_perp_pnl_for_deposit"``, and only the matching detail is set.
    ``margin_requirement`` / ``total_collateral`` are the user's before the step (QUOTE);
    ``margin_freed`` what the step freed; ``bankrupt`` the user's status after it."""

    liquidation_type: str
    liquidation_id: int
    user: tuple[bytes, int]
    liquidator: tuple[bytes, int]
    margin_requirement: int
    total_collateral: int
    margin_freed: int
    bankrupt: bool
    canceled_order_ids: tuple[int, ...]
    liquidate_perp: LiquidatePerpRecord | None
    liquidate_spot: LiquidateSpotRecord | None
    liquidate_borrow_for_perp_pnl: LiquidateBorrowForPerpPnlRecord | None
    liquidate_perp_pnl_for_deposit: LiquidatePerpPnlForDepositRecord | None
    slot: int
    ts: int


@dataclass(frozen=True, slots=True)
class PerpBankruptcyRecord:
    """A bankrupt user's negative perp PnL (``pnl`` < 0, QUOTE_PRECISION) cleared: paid by the
    insurance fund (``if_payment``), then the market's fee pool (``fee_pool_payment``), the rest
    (``loss_socialized``) through ``cumulative_funding_rate_delta`` (FUNDING_RATE_PRECISION)."""

    market_index: int
    pnl: int
    if_payment: int
    fee_pool_payment: int
    loss_socialized: int
    cumulative_funding_rate_delta: int


@dataclass(frozen=True, slots=True)
class SpotBankruptcyRecord:
    """A bankrupt user's borrow (``borrow_amount``, mint units) cleared: ``if_payment`` from the
    market's insurance fund, the rest taken from depositors by lowering the cumulative deposit
    interest by ``cumulative_deposit_interest_delta``."""

    market_index: int
    borrow_amount: int
    if_payment: int
    cumulative_deposit_interest_delta: int


@dataclass(frozen=True, slots=True)
class BankruptcyRecord:
    """A bankruptcy resolved (the program's ``LiquidationRecord`` of type ``PerpBankruptcy`` or
    ``SpotBankruptcy``). ``bankruptcy_type`` is ``"perp"`` or ``"spot"`` and only the matching
    detail is set; ``margin_requirement`` / ``total_collateral`` are the user's maintenance
    figures before it (QUOTE_PRECISION)."""

    bankruptcy_type: str
    liquidation_id: int
    user: tuple[bytes, int]
    liquidator: tuple[bytes, int]
    margin_requirement: int
    total_collateral: int
    perp_bankruptcy: PerpBankruptcyRecord | None
    spot_bankruptcy: SpotBankruptcyRecord | None
    slot: int
    ts: int


@dataclass(frozen=True, slots=True)
class LPRecord:
    """BAL shares added, removed, or settled (the program's ``LPRecord``). ``action`` is
    ``"add_liquidity"``, ``"remove_liquidity"`` or ``"settle_liquidity"``; ``n_shares``
    (AMM_RESERVE_PRECISION) the shares added or burned (0 for a settlement); the deltas
    (BASE / QUOTE_PRECISION) what moved into the perp position and ``pnl`` what it realized."""

    action: str
    authority: bytes
    sub_account_id: int
    market_index: int
    n_shares: int
    delta_base_asset_amount: int
    delta_quote_asset_amount: int
    pnl: int
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
    | FillRecord
    | TriggerRecord
    | LiquidationRecord
    | BankruptcyRecord
    | InsuranceFundRecord
    | InsuranceFundStakeRecord
    | LPRecord
)


@dataclass(frozen=True, slots=True)
class SequencedRecord:
    """A committed record: ``seq`` is gap-free across the program's whole history."""

    seq: int
    slot: int
    record: Record
