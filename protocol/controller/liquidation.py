"""Liquidations and bankruptcy resolution (the program's ``controller/liquidation.rs``).

A user whose collateral falls below its maintenance requirement may be liquidated by any other
user (the liquidator), step by step, until the maintenance requirement plus the liquidation
buffer (``State.liquidation_margin_buffer_ratio`` of every liability) is met again:

* :func:`liquidate_perp` -- the liquidator takes over part of a perp position at the oracle
  price; the user pays the liquidator fee and an insurance-fund fee (kept by the market in
  ``amm.total_liquidation_fee``, which the pool rebalancing moves into the fee pool and on to the
  revenue pool). Before touching the position the user's open orders are cancelled and its BAL
  shares in the market burned (seed 004), either of which may already restore margin.
* :func:`liquidate_spot` -- the liquidator takes a borrow and receives a deposit for it, the
  deposit at a premium and the borrow at a discount (each market's ``liquidator_fee``); the
  insurance-fund fee is a cut of the repaid borrow paid into the liability market's revenue pool.
* :func:`liquidate_borrow_for_perp_pnl` / :func:`liquidate_perp_pnl_for_deposit` -- the same
  swap with a flat perp position's positive / negative PnL as one side.

Every step is bounded by what restores margin (``calculate_*_to_cover_margin_shortage``), by
the liquidator's own maximum and limit price, and by the share of the shortage the elapsed time
allows (:func:`~protocol.math.liquidation.calculate_max_pct_to_liquidate`); a perp
liquidation's liquidator fee escalates the longer the liquidation runs
(:func:`~protocol.math.liquidation.get_liquidation_fee`). The first step flags the user
``BeingLiquidated`` and pins ``last_active_slot``; the flag clears once margin is restored. A
user left with liabilities and nothing to take for them is flagged ``Bankrupt``
(:func:`~protocol.math.bankruptcy.is_user_bankrupt`), which only resolution clears:

* :func:`resolve_perp_bankruptcy` -- the negative PnL is paid by the quote market's insurance
  fund up to the perp market's ``quote_max_insurance`` (tracked in ``quote_settled_insurance``),
  then by the market's AMM fee pool, and only the rest is socialised through the cumulative
  funding rates (seed 002's waterfall).
* :func:`resolve_spot_bankruptcy` -- the borrow is paid by that market's insurance fund, the
  rest socialised by lowering the cumulative deposit interest.

Both return the insurance-fund payment; the instruction moves those tokens from
``insurance_fund.vault_amount`` into the market's ``vault_amount`` (the program's token
transfer), so the tokens the program holds are conserved.

Units: QUOTE_PRECISION values and PnL, BASE_PRECISION perp base, the mint's units for spot
amounts, PRICE_PRECISION prices, LIQUIDATION_FEE_PRECISION fees. Every function works on the
transaction's copy-on-write :class:`~protocol.accounts.Accounts`; a :class:`ProtocolError`
discards the whole transaction, so nothing here undoes a half-done step.

Deviations from the program, and why:

* seed 002's fee-pool step: the program takes the fee-pool payment out of ``amm.fee_pool``
  without crediting it anywhere, so the pnl pool stays short of the cleared debt and the tokens
  are left in the vault unowned. Here the fee pool pays the pnl pool (the seed: the market
  "resorts to the AMM fee pool" to cover the loss), keeping deposits, pools and vault in step.
  The program also computes the funding-rate delta even when nothing is left to socialise,
  which fails (``CantResolvePerpBankruptcy``) for a market without open interest; here the
  delta is computed only for a loss that remains (the seed: social loss "only then").
* seed 004 / the program's versions with BAL providers: :func:`liquidate_perp` burns the user's
  LP shares in the market first (:func:`remove_perp_lp_shares_in_liquidation`); a position with
  only shares may be liquidated, and ``lp_shares`` is reported in the record. The current
  program has no BAL providers.
* cross margin only (no isolated positions, no high-leverage mode, no pool ids, no fuel), and
  markets have no ``paused_operations`` bits, so the per-market liquidation pause is absent.
* ``UserCantLiquidateThemself`` is checked here rather than in the instruction handlers, so
  every caller gets it.
* the program logs a liquidation's perp transfer as an order pair and a fill
  (``OrderRecord`` x2, ``OrderActionRecord``); here the :class:`LiquidationRecord` carries the
  order and fill ids it reserves, and no order events are emitted for orders that never rest.
* ``liquidate_perp_with_fill`` and ``liquidate_spot_with_swap`` are not modelled.
"""

from __future__ import annotations

from protocol.accounts import Accounts, MarketReader
from protocol.constants import (
    LIQUIDATION_FEE_PRECISION,
    LIQUIDATION_PCT_PRECISION,
    MAX_PERP_POSITIONS,
    MAX_SPOT_POSITIONS,
    QUOTE_PRECISION,
    QUOTE_SPOT_MARKET_INDEX,
    SPOT_WEIGHT_PRECISION,
)
from protocol.controller.amm import update_amm_and_check_validity
from protocol.controller.fills import (
    max_oracle_twap_5min_percent_divergence,
    update_maker_volume_30d,
    update_taker_volume_30d,
)
from protocol.controller.funding import settle_funding_payment
from protocol.controller.lp import burn_lp_shares
from protocol.controller.orders import EXPLANATION_LIQUIDATION, cancel_orders
from protocol.controller.position import (
    update_position_and_market,
    update_quote_asset_amount,
    update_quote_asset_and_break_even_amount,
)
from protocol.controller.spot_balance import (
    transfer_spot_balances,
    update_revenue_pool_balances,
    update_spot_balances,
    update_spot_market_and_check_validity,
    update_spot_market_cumulative_interest,
)
from protocol.controller.spot_position import update_spot_balances_and_cumulative_deposits
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.bankruptcy import is_user_bankrupt
from protocol.math.liquidation import (
    LiquidationMultiplierType,
    calculate_asset_transfer_for_liability_transfer,
    calculate_base_asset_amount_to_cover_margin_shortage,
    calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy,
    calculate_funding_rate_deltas_to_resolve_bankruptcy,
    calculate_liability_transfer_implied_by_asset_amount,
    calculate_liability_transfer_to_cover_margin_shortage,
    calculate_liquidation_multiplier,
    calculate_max_pct_to_liquidate,
    calculate_perp_if_fee,
    calculate_spot_if_fee,
    calculate_user_safest_position_tiers,
    get_base_liquidator_fee,
    get_liquidation_fee,
    get_max_liquidation_fee,
    is_as_safe_as,
    validate_transfer_satisfies_limit_price,
)
from protocol.math.margin import (
    calculate_margin_requirement_and_total_collateral_and_liability_info,
    get_margin_ratio,
    get_unrealized_asset_weight,
    meets_initial_margin_requirement,
)
from protocol.math.oracle import DriftAction
from protocol.math.orders import (
    PositionDelta,
    get_position_delta_for_fill,
    is_multiple_of_step_size,
    is_oracle_too_divergent_with_twap_5min,
    standardize_base_asset_amount,
    standardize_base_asset_amount_ceil,
)
from protocol.math.position import calculate_base_asset_value_with_oracle_price
from protocol.math.spot_balance import get_token_amount, get_token_value
from protocol.numeric import U64_MAX, cast_u64, div_trunc
from protocol.records import (
    BankruptcyRecord,
    LiquidateBorrowForPerpPnlRecord,
    LiquidatePerpPnlForDepositRecord,
    LiquidatePerpRecord,
    LiquidateSpotRecord,
    LiquidationRecord,
    PerpBankruptcyRecord,
    SpotBankruptcyRecord,
)
from protocol.state.margin_calculation import MarginCalculation, MarginContext, MarketIdentifier
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.user import PerpPosition, SpotPosition, User, UserKey
from protocol.types import (
    MarginRequirementType,
    MarketStatus,
    PositionDirection,
    SpotBalanceType,
)

__all__ = [
    "calculate_margin_freed",
    "liquidate_borrow_for_perp_pnl",
    "liquidate_perp",
    "liquidate_perp_pnl_for_deposit",
    "liquidate_spot",
    "remove_perp_lp_shares_in_liquidation",
    "resolve_perp_bankruptcy",
    "resolve_spot_bankruptcy",
    "set_user_status_to_being_liquidated",
]

LIQUIDATION_TYPE_PERP = "liquidate_perp"
LIQUIDATION_TYPE_SPOT = "liquidate_spot"
LIQUIDATION_TYPE_BORROW_FOR_PERP_PNL = "liquidate_borrow_for_perp_pnl"
LIQUIDATION_TYPE_PERP_PNL_FOR_DEPOSIT = "liquidate_perp_pnl_for_deposit"
BANKRUPTCY_TYPE_PERP = "perp"
BANKRUPTCY_TYPE_SPOT = "spot"

# Positions worth no more than these may be taken whole, so no dust is left behind.
_MIN_PERP_POSITION_VALUE_FOR_PARTIAL = 50 * QUOTE_PRECISION
_MIN_LIABILITY_VALUE_FOR_PARTIAL = 10 * QUOTE_PRECISION


# --- shared steps ---------------------------------------------------------------------------------
def _liquidation_calculation(
    user: User, reader: MarketReader, track: MarketIdentifier | None = None
) -> MarginCalculation:
    context = MarginContext.liquidation(reader.state.liquidation_margin_buffer_ratio)
    if track is not None:
        context = context.track_market_margin_requirement(track)
    return calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, context
    )


def calculate_margin_freed(
    user: User,
    reader: MarketReader,
    liquidation_margin_buffer_ratio: int,
    initial_margin_shortage: int,
) -> tuple[int, MarginCalculation]:
    """How much of ``initial_margin_shortage`` the user's account no longer lacks (>= 0), and
    the margin calculation after the step."""
    margin_calculation_after = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, reader, MarginContext.liquidation(liquidation_margin_buffer_ratio)
    )
    new_margin_shortage = margin_calculation_after.margin_shortage()
    margin_freed = cast_u64(max(initial_margin_shortage - new_margin_shortage, 0))
    return margin_freed, margin_calculation_after


def _increment_margin_freed(user: User, margin_freed: int) -> None:
    user.liquidation_margin_freed = cast_u64(user.liquidation_margin_freed + margin_freed)


def _check_users(user_key: UserKey, liquidator_key: UserKey) -> None:
    if user_key == liquidator_key:
        raise ProtocolError(
            ErrorCode.UserCantLiquidateThemself, "user and liquidator are the same account"
        )


def _check_liquidator_not_bankrupt(liquidator: User) -> None:
    if liquidator.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "liquidator bankrupt", field="liquidator")


def _check_room_for_perp_position(liquidator: User, market_index: int) -> None:
    if (
        liquidator.get_perp_position(market_index) is None
        and len(liquidator.perp_positions) >= MAX_PERP_POSITIONS
    ):
        raise ProtocolError(
            ErrorCode.MaxNumberOfPositions,
            f"liquidator has no free perp position for market {market_index}",
            field="liquidator",
        )


def _check_room_for_spot_position(liquidator: User, market_index: int) -> None:
    if (
        liquidator.get_spot_position(market_index) is None
        and len(liquidator.spot_positions) >= MAX_SPOT_POSITIONS
    ):
        raise ProtocolError(
            ErrorCode.MaxNumberOfPositions,
            f"liquidator has no free spot position for market {market_index}",
            field="liquidator",
        )


def _spot_position(user: User, market_index: int, side: str) -> SpotPosition:
    position = user.get_spot_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.CouldNotFindSpotPosition,
            f"user has no spot balance for {side} market {market_index}",
            field=f"{side}_market_index",
        )
    return position


def _perp_position(user: User, market_index: int) -> PerpPosition:
    position = user.get_perp_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.UserHasNoPositionInMarket,
            f"user has no position in perp market {market_index}",
            field="market_index",
        )
    return position


def _spot_token_amount(
    position: SpotPosition, market: SpotMarket, expected: SpotBalanceType
) -> int:
    if position.balance_type != expected:
        side = "deposit" if expected == SpotBalanceType.Deposit else "borrow"
        raise ProtocolError(
            ErrorCode.WrongSpotBalanceType,
            f"user does not have a {side} in spot market {market.market_index}",
        )
    token_amount = get_token_amount(position.scaled_balance, market, position.balance_type)
    if token_amount == 0:
        raise ProtocolError(
            ErrorCode.InvalidSpotPosition,
            f"token amount zero for spot market {market.market_index}",
        )
    return token_amount


def _update_spot_market(accounts: Accounts, market: SpotMarket) -> int:
    """Accrue interest and check the oracle may be used to liquidate; the oracle price."""
    price_data = accounts.oracle_price_data(market.oracle)
    record = update_spot_market_and_check_validity(
        market,
        price_data,
        accounts.state.oracle_guard_rails.validity,
        accounts.clock.unix_timestamp,
        DriftAction.Liquidate,
    )
    if record is not None:
        accounts.emit(record)
    return price_data.price


def _quote_oracle_price(accounts: Accounts, market: PerpMarket) -> int:
    quote_market = accounts.spot_market(market.quote_spot_market_index)
    return accounts.oracle_price_data(quote_market.oracle).price


def _settle_funding(accounts: Accounts, user: User, key: UserKey, market: PerpMarket) -> None:
    record = settle_funding_payment(user, key, market, accounts.clock.unix_timestamp)
    if record is not None:
        accounts.emit(record)


def _enter_bankruptcy_or_exit(user: User, covered: bool) -> None:
    """After a step: out of liquidation when it covered the whole shortage, else bankrupt if
    nothing is left to liquidate."""
    if covered:
        user.exit_cross_margin_liquidation()
    elif is_user_bankrupt(user):
        user.enter_cross_margin_bankruptcy()


def _require_liquidator_initial_margin(liquidator: User, reader: MarketReader, what: str) -> None:
    if not meets_initial_margin_requirement(liquidator, reader):
        raise ProtocolError(
            ErrorCode.InsufficientCollateral,
            f"liquidator does not have enough collateral to take over {what}",
            field="liquidator",
        )


def _check_price_band(accounts: Accounts, price: int, twap_5min: int, what: str) -> None:
    max_divergence = max_oracle_twap_5min_percent_divergence(accounts.state.oracle_guard_rails)
    if is_oracle_too_divergent_with_twap_5min(price, twap_5min, max_divergence):
        raise ProtocolError(ErrorCode.PriceBandsBreached, f"{what} oracle too divergent")


def _liquidation_record(
    accounts: Accounts,
    liquidation_type: str,
    liquidation_id: int,
    user_key: UserKey,
    liquidator_key: UserKey,
    margin_calculation: MarginCalculation,
    margin_freed: int,
    bankrupt: bool,
    canceled_order_ids: list[int],
    *,
    liquidate_perp: LiquidatePerpRecord | None = None,
    liquidate_spot: LiquidateSpotRecord | None = None,
    liquidate_borrow_for_perp_pnl: LiquidateBorrowForPerpPnlRecord | None = None,
    liquidate_perp_pnl_for_deposit: LiquidatePerpPnlForDepositRecord | None = None,
) -> LiquidationRecord:
    return LiquidationRecord(
        liquidation_type=liquidation_type,
        liquidation_id=liquidation_id,
        user=user_key,
        liquidator=liquidator_key,
        margin_requirement=margin_calculation.margin_requirement,
        total_collateral=margin_calculation.total_collateral,
        margin_freed=margin_freed,
        bankrupt=bankrupt,
        canceled_order_ids=tuple(canceled_order_ids),
        liquidate_perp=liquidate_perp,
        liquidate_spot=liquidate_spot,
        liquidate_borrow_for_perp_pnl=liquidate_borrow_for_perp_pnl,
        liquidate_perp_pnl_for_deposit=liquidate_perp_pnl_for_deposit,
        slot=accounts.clock.slot,
        ts=accounts.clock.unix_timestamp,
    )


def _start_liquidation(user: User, margin_calculation: MarginCalculation) -> bool:
    """The entry rule every liquidation shares: a user not yet in liquidation must be below
    maintenance (``SufficientCollateral``); one already in liquidation whose buffered
    requirement is met leaves it, and the step ends there (returns False)."""
    if not user.is_being_liquidated() and margin_calculation.meets_margin_requirement():
        raise ProtocolError(
            ErrorCode.SufficientCollateral,
            f"total_collateral={margin_calculation.total_collateral} >= "
            f"margin_requirement={margin_calculation.margin_requirement}",
        )
    if user.is_being_liquidated() and margin_calculation.can_exit_liquidation():
        user.exit_cross_margin_liquidation()
        return False
    return True


def _cancel_orders_and_remeasure(
    accounts: Accounts,
    user: User,
    user_key: UserKey,
    margin_calculation: MarginCalculation,
    track: MarketIdentifier | None,
) -> tuple[list[int], MarginCalculation, int]:
    """Cancel all the user's orders; when any were cancelled, measure again and count what that
    freed. ``(cancelled ids, calculation to continue from, margin freed)``."""
    canceled_order_ids = cancel_orders(accounts, user_key, explanation=EXPLANATION_LIQUIDATION)
    if not canceled_order_ids:
        return canceled_order_ids, margin_calculation, 0
    intermediate = _liquidation_calculation(user, accounts, track)
    margin_freed = cast_u64(
        max(margin_calculation.margin_shortage() - intermediate.margin_shortage(), 0)
    )
    _increment_margin_freed(user, margin_freed)
    return canceled_order_ids, intermediate, margin_freed


def _prune(user: User, perp_markets: tuple[int, ...], spot_markets: tuple[int, ...]) -> None:
    # this model keeps live positions only; the program leaves emptied slots for reuse
    for index in perp_markets:
        user.prune_perp_position(index)
    for index in spot_markets:
        user.prune_spot_position(index)


# --- BAL shares -----------------------------------------------------------------------------------
def remove_perp_lp_shares_in_liquidation(
    position: PerpPosition, market: PerpMarket, shares_to_burn: int, oracle_price: int
) -> tuple[PositionDelta, int]:
    """Burn ``shares_to_burn`` of the position's BAL shares before liquidating it (seed 004):
    :func:`protocol.controller.lp.burn_lp_shares` (settle the position's LP slice, charge any
    sub-step remainder at the oracle price, shrink ``sqrt_k`` and ``amm.user_lp_shares``).
    There is no cooldown here: the program's liquidation path burns the shares directly.

    Returns the settled position delta (with the remainder charge in its quote) and the PnL it
    realized.
    """
    return burn_lp_shares(position, market, shares_to_burn, oracle_price)


# --- perp -----------------------------------------------------------------------------------------
def liquidate_perp(
    accounts: Accounts,
    market_index: int,
    liquidator_max_base_asset_amount: int,
    limit_price: int | None,
    user_key: UserKey,
    liquidator_key: UserKey,
) -> None:
    """Transfer up to ``liquidator_max_base_asset_amount`` (BASE_PRECISION) of the user's
    position in ``market_index`` to the liquidator at the oracle price.

    The user pays the liquidator fee (escalating with time in liquidation) and the
    insurance-fund fee out of its quote; the amount is the least of the user's position, the
    liquidator's maximum, the base that covers the buffered shortage and the share of it time
    allows (a position worth $50 or less may go whole), rounded up to the step size.
    ``limit_price`` is the worst price the liquidator accepts: for a long being liquidated, the
    oracle price less the fee must not exceed it; for a short, the oracle price plus the fee must
    not be below it (``LiquidationDoesntSatisfyLimitPrice``). The liquidator must meet its
    initial margin requirement afterwards.
    """
    _check_users(user_key, liquidator_key)
    state = accounts.state
    slot = accounts.clock.slot
    now = accounts.clock.unix_timestamp
    buffer_ratio = state.liquidation_margin_buffer_ratio
    track = MarketIdentifier.perp(market_index)

    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="user")
    _check_liquidator_not_bankrupt(liquidator)

    market = accounts.perp_market(market_index)
    _settle_funding(accounts, user, user_key, market)
    _settle_funding(accounts, liquidator, liquidator_key, market)

    margin_calculation = _liquidation_calculation(user, accounts, track)
    if not _start_liquidation(user, margin_calculation):
        return

    position = _perp_position(user, market_index)
    _check_room_for_perp_position(liquidator, market_index)

    liquidation_id = user.enter_cross_margin_liquidation(slot)
    if not (
        position.is_open_position()
        or position.open_orders != 0
        or position.open_bids != 0
        or position.open_asks != 0
        or position.lp_shares > 0
    ):
        raise ProtocolError(
            ErrorCode.PositionDoesntHaveOpenPositionOrOrders,
            f"nothing to liquidate in perp market {market_index}",
        )

    canceled_order_ids = cancel_orders(accounts, user_key, explanation=EXPLANATION_LIQUIDATION)

    oracle_price_data = accounts.oracle_price_data(market.amm.oracle)
    update_amm_and_check_validity(
        market, oracle_price_data, state, now, slot, DriftAction.Liquidate
    )
    oracle_price = (
        market.expiry_price if market.status == MarketStatus.Settlement else oracle_price_data.price
    )

    # burning BAL shares removes the open bids/asks they stand for before any position is taken
    position_or_none = user.get_perp_position(market_index)
    lp_shares = 0 if position_or_none is None else position_or_none.lp_shares
    if position_or_none is not None and lp_shares > 0:
        remove_perp_lp_shares_in_liquidation(position_or_none, market, lp_shares, oracle_price)

    margin_freed = 0
    if canceled_order_ids or lp_shares > 0:
        intermediate = _liquidation_calculation(user, accounts, track)
        margin_freed = cast_u64(
            max(margin_calculation.margin_shortage() - intermediate.margin_shortage(), 0)
        )
        _increment_margin_freed(user, margin_freed)
        if intermediate.can_exit_liquidation():
            user.exit_cross_margin_liquidation()
            accounts.emit(
                _liquidation_record(
                    accounts,
                    LIQUIDATION_TYPE_PERP,
                    liquidation_id,
                    user_key,
                    liquidator_key,
                    margin_calculation,
                    margin_freed,
                    user.is_bankrupt(),
                    canceled_order_ids,
                    liquidate_perp=LiquidatePerpRecord(
                        market_index=market_index,
                        oracle_price=oracle_price,
                        base_asset_amount=0,
                        quote_asset_amount=0,
                        lp_shares=lp_shares,
                        user_order_id=0,
                        liquidator_order_id=0,
                        fill_record_id=0,
                        liquidator_fee=0,
                        if_fee=0,
                    ),
                )
            )
            _prune(user, (market_index,), ())
            return
    else:
        intermediate = margin_calculation

    position_or_none = user.get_perp_position(market_index)
    if position_or_none is None or position_or_none.base_asset_amount == 0:
        _prune(user, (market_index,), ())
        return
    position = position_or_none

    liquidator_max_base_asset_amount = standardize_base_asset_amount(
        liquidator_max_base_asset_amount, market.amm.order_step_size
    )
    if liquidator_max_base_asset_amount == 0:
        raise ProtocolError(
            ErrorCode.InvalidBaseAssetAmountForLiquidatePerp,
            "liquidator_max_base_asset_amount must be at least the step size",
            field="max_base_asset_amount",
        )

    if market.status != MarketStatus.Settlement:
        _check_price_band(
            accounts,
            oracle_price,
            market.amm.historical_oracle_data.last_oracle_price_twap_5min,
            "perp",
        )

    user_base_asset_amount = abs(position.base_asset_amount)
    margin_ratio = get_margin_ratio(
        market, user_base_asset_amount, MarginRequirementType.Maintenance
    )
    margin_ratio_with_buffer = margin_ratio + buffer_ratio
    margin_shortage = intermediate.margin_shortage()
    quote_oracle_price = _quote_oracle_price(accounts, market)

    liquidator_fee = get_liquidation_fee(
        get_base_liquidator_fee(market),
        get_max_liquidation_fee(market),
        user.last_active_slot,
        slot,
    )
    if_liquidation_fee = calculate_perp_if_fee(
        intermediate.tracked_market_margin_shortage(margin_shortage),
        user_base_asset_amount,
        margin_ratio_with_buffer,
        liquidator_fee,
        oracle_price,
        quote_oracle_price,
        market.if_liquidation_fee,
    )
    base_asset_amount_to_cover_margin_shortage = (
        calculate_base_asset_amount_to_cover_margin_shortage(
            margin_shortage,
            margin_ratio_with_buffer,
            liquidator_fee,
            if_liquidation_fee,
            oracle_price,
            quote_oracle_price,
        )
    )
    if base_asset_amount_to_cover_margin_shortage != U64_MAX:
        base_asset_amount_to_cover_margin_shortage = standardize_base_asset_amount_ceil(
            base_asset_amount_to_cover_margin_shortage, market.amm.order_step_size
        )

    max_pct_allowed = calculate_max_pct_to_liquidate(
        user,
        margin_shortage,
        slot,
        state.initial_pct_to_liquidate,
        state.liquidation_duration,
    )
    max_base_asset_amount_allowed_to_be_transferred = cast_u64(
        div_trunc(
            base_asset_amount_to_cover_margin_shortage * max_pct_allowed,
            LIQUIDATION_PCT_PRECISION,
        )
    )
    if max_base_asset_amount_allowed_to_be_transferred == 0:
        _prune(user, (market_index,), ())
        return

    base_asset_value = cast_u64(
        calculate_base_asset_value_with_oracle_price(user_base_asset_amount, oracle_price)
    )
    min_base_asset_amount = (
        0 if base_asset_value > _MIN_PERP_POSITION_VALUE_FOR_PARTIAL else user_base_asset_amount
    )
    base_asset_amount = min(
        user_base_asset_amount,
        liquidator_max_base_asset_amount,
        max(max_base_asset_amount_allowed_to_be_transferred, min_base_asset_amount),
    )
    base_asset_amount = standardize_base_asset_amount_ceil(
        base_asset_amount, market.amm.order_step_size
    )

    user_direction = position.get_direction()
    if limit_price is not None:
        fee = div_trunc(oracle_price * liquidator_fee, LIQUIDATION_FEE_PRECISION)
        if user_direction == PositionDirection.Long:
            transfer_price = oracle_price - fee
            if transfer_price > limit_price:
                raise ProtocolError(
                    ErrorCode.LiquidationDoesntSatisfyLimitPrice,
                    f"limit price {limit_price} < transfer price {transfer_price}",
                    field="limit_price",
                )
        else:
            transfer_price = oracle_price + fee
            if transfer_price < limit_price:
                raise ProtocolError(
                    ErrorCode.LiquidationDoesntSatisfyLimitPrice,
                    f"limit price {limit_price} > transfer price {transfer_price}",
                    field="limit_price",
                )

    base_asset_value = cast_u64(
        calculate_base_asset_value_with_oracle_price(base_asset_amount, oracle_price)
    )
    liquidator_fee_amount = -div_trunc(base_asset_value * liquidator_fee, LIQUIDATION_FEE_PRECISION)
    if_fee = -div_trunc(base_asset_value * if_liquidation_fee, LIQUIDATION_FEE_PRECISION)

    update_taker_volume_30d(accounts.user_stats(user.authority), base_asset_value, now)
    update_maker_volume_30d(accounts.user_stats(liquidator.authority), base_asset_value, now)

    direction_to_close = user_direction.opposite()
    user_position_delta = get_position_delta_for_fill(
        base_asset_amount, base_asset_value, direction_to_close
    )
    liquidator_position_delta = get_position_delta_for_fill(
        base_asset_amount, base_asset_value, user_direction
    )

    update_position_and_market(position, market, user_position_delta)
    update_quote_asset_and_break_even_amount(position, market, liquidator_fee_amount)
    update_quote_asset_and_break_even_amount(position, market, if_fee)
    _check_step_size(position, market)

    liquidator_position = liquidator.force_get_perp_position_mut(market_index)
    update_position_and_market(liquidator_position, market, liquidator_position_delta)
    update_quote_asset_and_break_even_amount(liquidator_position, market, -liquidator_fee_amount)
    _check_step_size(liquidator_position, market)

    market.amm.total_liquidation_fee += abs(if_fee)

    margin_freed_for_perp_position, _ = calculate_margin_freed(
        user, accounts, buffer_ratio, margin_shortage
    )
    margin_freed = cast_u64(margin_freed + margin_freed_for_perp_position)
    _increment_margin_freed(user, margin_freed_for_perp_position)
    _enter_bankruptcy_or_exit(user, base_asset_amount >= base_asset_amount_to_cover_margin_shortage)

    _prune(user, (market_index,), ())
    _prune(liquidator, (market_index,), ())
    _require_liquidator_initial_margin(liquidator, accounts, "the perp position")

    user_order_id = user.next_order_id
    user.next_order_id += 1
    liquidator_order_id = liquidator.next_order_id
    liquidator.next_order_id += 1
    fill_record_id = market.next_fill_record_id
    market.next_fill_record_id += 1

    accounts.emit(
        _liquidation_record(
            accounts,
            LIQUIDATION_TYPE_PERP,
            liquidation_id,
            user_key,
            liquidator_key,
            margin_calculation,
            margin_freed,
            user.is_bankrupt(),
            canceled_order_ids,
            liquidate_perp=LiquidatePerpRecord(
                market_index=market_index,
                oracle_price=oracle_price,
                base_asset_amount=user_position_delta.base_asset_amount,
                quote_asset_amount=user_position_delta.quote_asset_amount,
                lp_shares=lp_shares,
                user_order_id=user_order_id,
                liquidator_order_id=liquidator_order_id,
                fill_record_id=fill_record_id,
                liquidator_fee=abs(liquidator_fee_amount),
                if_fee=abs(if_fee),
            ),
        )
    )


def _check_step_size(position: PerpPosition, market: PerpMarket) -> None:
    if not is_multiple_of_step_size(abs(position.base_asset_amount), market.amm.order_step_size):
        raise ProtocolError(
            ErrorCode.InvalidPerpPosition,
            f"base asset amount {position.base_asset_amount} is not a multiple of the step size "
            f"{market.amm.order_step_size}",
        )


# --- spot -----------------------------------------------------------------------------------------
def liquidate_spot(
    accounts: Accounts,
    asset_market_index: int,
    liability_market_index: int,
    liquidator_max_liability_transfer: int,
    limit_price: int | None,
    user_key: UserKey,
    liquidator_key: UserKey,
) -> None:
    """Take over up to ``liquidator_max_liability_transfer`` (liability mint units) of the
    user's borrow in ``liability_market_index`` for its deposit in ``asset_market_index``.

    The deposit goes to the liquidator at the asset market's premium and the borrow at the
    liability market's discount (their ``liquidator_fee``); the liability market's
    insurance-fund fee is withheld from the repayment and paid into its revenue pool. The
    amount is the least of the borrow, the liquidator's maximum, what covers the buffered
    shortage (times the share time allows; a borrow worth $10 or less may go whole) and what
    the deposit can pay for. ``limit_price``: the least asset per liability (PRICE_PRECISION)
    the liquidator accepts.
    """
    _check_users(user_key, liquidator_key)
    state = accounts.state
    slot = accounts.clock.slot
    buffer_ratio = state.liquidation_margin_buffer_ratio
    track = MarketIdentifier.spot(liability_market_index)

    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="user")
    _check_liquidator_not_bankrupt(liquidator)

    asset_market = accounts.spot_market(asset_market_index)
    liability_market = accounts.spot_market(liability_market_index)
    user_asset_position = _spot_position(user, asset_market_index, "asset")
    user_liability_position = _spot_position(user, liability_market_index, "liability")
    _check_room_for_spot_position(liquidator, asset_market_index)
    _check_room_for_spot_position(liquidator, liability_market_index)

    asset_price = _update_spot_market(accounts, asset_market)
    asset_amount = _spot_token_amount(user_asset_position, asset_market, SpotBalanceType.Deposit)
    asset_decimals = asset_market.decimals
    asset_weight = asset_market.maintenance_asset_weight
    asset_liquidation_multiplier = calculate_liquidation_multiplier(
        asset_market.liquidator_fee, LiquidationMultiplierType.Premium
    )

    liability_price = _update_spot_market(accounts, liability_market)
    liability_amount = _spot_token_amount(
        user_liability_position, liability_market, SpotBalanceType.Borrow
    )
    liability_decimals = liability_market.decimals
    liability_weight = liability_market.maintenance_liability_weight
    liability_liquidation_multiplier = calculate_liquidation_multiplier(
        liability_market.liquidator_fee, LiquidationMultiplierType.Discount
    )

    margin_calculation = _liquidation_calculation(user, accounts, track)
    if not _start_liquidation(user, margin_calculation):
        return
    liquidation_id = user.enter_cross_margin_liquidation(slot)

    canceled_order_ids, intermediate, margin_freed = _cancel_orders_and_remeasure(
        accounts, user, user_key, margin_calculation, track
    )
    if canceled_order_ids and intermediate.can_exit_liquidation():
        accounts.emit(
            _liquidation_record(
                accounts,
                LIQUIDATION_TYPE_SPOT,
                liquidation_id,
                user_key,
                liquidator_key,
                margin_calculation,
                margin_freed,
                user.is_bankrupt(),
                canceled_order_ids,
                liquidate_spot=LiquidateSpotRecord(
                    asset_market_index=asset_market_index,
                    asset_price=asset_price,
                    asset_transfer=0,
                    liability_market_index=liability_market_index,
                    liability_price=liability_price,
                    liability_transfer=0,
                    if_fee=0,
                ),
            )
        )
        user.exit_cross_margin_liquidation()
        return

    margin_shortage = intermediate.margin_shortage()
    liability_weight_with_buffer = liability_weight + buffer_ratio
    liquidation_if_fee = calculate_spot_if_fee(
        intermediate.tracked_market_margin_shortage(margin_shortage),
        liability_amount,
        asset_weight,
        asset_liquidation_multiplier,
        liability_weight_with_buffer,
        liability_liquidation_multiplier,
        liability_decimals,
        liability_price,
        liability_market.if_liquidation_fee,
    )
    liability_transfer_to_cover_margin_shortage = (
        calculate_liability_transfer_to_cover_margin_shortage(
            margin_shortage,
            asset_weight,
            asset_liquidation_multiplier,
            liability_weight_with_buffer,
            liability_liquidation_multiplier,
            liability_decimals,
            liability_price,
            liquidation_if_fee,
        )
    )
    max_pct_allowed = calculate_max_pct_to_liquidate(
        user, margin_shortage, slot, state.initial_pct_to_liquidate, state.liquidation_duration
    )
    max_liability_allowed_to_be_transferred = div_trunc(
        liability_transfer_to_cover_margin_shortage * max_pct_allowed, LIQUIDATION_PCT_PRECISION
    )
    if max_liability_allowed_to_be_transferred == 0:
        return

    liability_transfer_implied_by_asset_amount = (
        calculate_liability_transfer_implied_by_asset_amount(
            asset_amount,
            asset_liquidation_multiplier,
            asset_decimals,
            asset_price,
            liability_liquidation_multiplier,
            liability_decimals,
            liability_price,
        )
    )
    liability_value = get_token_value(liability_amount, liability_decimals, liability_price)
    minimum_liability_transfer = (
        0 if liability_value > _MIN_LIABILITY_VALUE_FOR_PARTIAL else liability_amount
    )
    liability_transfer = min(
        liquidator_max_liability_transfer,
        liability_amount,
        max(max_liability_allowed_to_be_transferred, minimum_liability_transfer),
        liability_transfer_implied_by_asset_amount,
    )
    asset_transfer = calculate_asset_transfer_for_liability_transfer(
        asset_amount,
        asset_liquidation_multiplier,
        asset_decimals,
        asset_price,
        liability_transfer,
        liability_liquidation_multiplier,
        liability_decimals,
        liability_price,
    )
    if asset_transfer == 0 or liability_transfer == 0:
        raise ProtocolError(
            ErrorCode.InvalidLiquidation,
            f"asset_transfer={asset_transfer} liability_transfer={liability_transfer}",
        )

    _check_price_band(
        accounts,
        liability_price,
        liability_market.historical_oracle_data.last_oracle_price_twap_5min,
        "liability",
    )
    _check_price_band(
        accounts,
        asset_price,
        asset_market.historical_oracle_data.last_oracle_price_twap_5min,
        "asset",
    )
    validate_transfer_satisfies_limit_price(
        asset_transfer, liability_transfer, asset_decimals, liability_decimals, limit_price
    )

    if_fee = div_trunc(liability_transfer * liquidation_if_fee, LIQUIDATION_FEE_PRECISION)
    repaid = liability_transfer - if_fee
    update_spot_balances_and_cumulative_deposits(
        repaid, SpotBalanceType.Deposit, liability_market, user_liability_position, False, repaid
    )
    update_revenue_pool_balances(if_fee, SpotBalanceType.Deposit, liability_market)
    update_spot_balances_and_cumulative_deposits(
        liability_transfer,
        SpotBalanceType.Borrow,
        liability_market,
        liquidator.force_get_spot_position_mut(liability_market_index),
        False,
        liability_transfer,
    )
    update_spot_balances_and_cumulative_deposits(
        asset_transfer,
        SpotBalanceType.Deposit,
        asset_market,
        liquidator.force_get_spot_position_mut(asset_market_index),
        False,
        asset_transfer,
    )
    update_spot_balances_and_cumulative_deposits(
        asset_transfer,
        SpotBalanceType.Borrow,
        asset_market,
        user_asset_position,
        False,
        asset_transfer,
    )

    margin_freed_from_liability, _ = calculate_margin_freed(
        user, accounts, buffer_ratio, margin_shortage
    )
    margin_freed = cast_u64(margin_freed + margin_freed_from_liability)
    _increment_margin_freed(user, margin_freed_from_liability)
    _enter_bankruptcy_or_exit(
        user, liability_transfer >= liability_transfer_to_cover_margin_shortage
    )

    markets = (asset_market_index, liability_market_index)
    _prune(user, (), markets)
    _prune(liquidator, (), markets)
    _require_liquidator_initial_margin(liquidator, accounts, "the borrow")

    accounts.emit(
        _liquidation_record(
            accounts,
            LIQUIDATION_TYPE_SPOT,
            liquidation_id,
            user_key,
            liquidator_key,
            margin_calculation,
            margin_freed,
            user.is_bankrupt(),
            canceled_order_ids,
            liquidate_spot=LiquidateSpotRecord(
                asset_market_index=asset_market_index,
                asset_price=asset_price,
                asset_transfer=asset_transfer,
                liability_market_index=liability_market_index,
                liability_price=liability_price,
                liability_transfer=liability_transfer,
                if_fee=if_fee,
            ),
        )
    )


def liquidate_borrow_for_perp_pnl(
    accounts: Accounts,
    perp_market_index: int,
    liability_market_index: int,
    liquidator_max_liability_transfer: int,
    limit_price: int | None,
    user_key: UserKey,
    liquidator_key: UserKey,
) -> None:
    """Take over up to ``liquidator_max_liability_transfer`` of the user's borrow in exchange
    for the positive PnL of its flat position in ``perp_market_index`` (valued at the market's
    maintenance PnL weight, with the perp market's ``liquidator_fee`` as the premium). The
    position must hold no base (``InvalidPerpPositionToLiquidate``)."""
    _check_users(user_key, liquidator_key)
    state = accounts.state
    slot = accounts.clock.slot
    buffer_ratio = state.liquidation_margin_buffer_ratio

    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="user")
    _check_liquidator_not_bankrupt(liquidator)

    market = accounts.perp_market(perp_market_index)
    liability_market = accounts.spot_market(liability_market_index)
    user_position = _perp_position(user, perp_market_index)
    user_liability_position = _spot_position(user, liability_market_index, "liability")
    _check_room_for_perp_position(liquidator, perp_market_index)
    _check_room_for_spot_position(liquidator, liability_market_index)

    _settle_funding(accounts, user, user_key, market)
    _settle_funding(accounts, liquidator, liquidator_key, market)

    if user_position.base_asset_amount != 0:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionToLiquidate,
            f"cannot have an open perp position (base_asset_amount: "
            f"{user_position.base_asset_amount})",
        )
    pnl = user_position.quote_asset_amount
    if pnl <= 0:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionToLiquidate, "perp position must have positive pnl"
        )
    quote_price = _quote_oracle_price(accounts, market)
    quote_decimals = 6
    pnl_asset_weight = get_unrealized_asset_weight(market, pnl, MarginRequirementType.Maintenance)
    pnl_liquidation_multiplier = calculate_liquidation_multiplier(
        market.liquidator_fee, LiquidationMultiplierType.Premium
    )

    liability_price = _update_spot_market(accounts, liability_market)
    liability_amount = _spot_token_amount(
        user_liability_position, liability_market, SpotBalanceType.Borrow
    )
    liability_decimals = liability_market.decimals
    liability_weight = liability_market.maintenance_liability_weight
    liability_liquidation_multiplier = calculate_liquidation_multiplier(
        liability_market.liquidator_fee, LiquidationMultiplierType.Discount
    )

    margin_calculation = _liquidation_calculation(user, accounts)
    if not _start_liquidation(user, margin_calculation):
        return
    liquidation_id = user.enter_cross_margin_liquidation(slot)

    canceled_order_ids, intermediate, margin_freed = _cancel_orders_and_remeasure(
        accounts, user, user_key, margin_calculation, None
    )
    market_oracle_price = accounts.oracle_price_data(market.amm.oracle).price
    if canceled_order_ids and intermediate.can_exit_liquidation():
        accounts.emit(
            _liquidation_record(
                accounts,
                LIQUIDATION_TYPE_BORROW_FOR_PERP_PNL,
                liquidation_id,
                user_key,
                liquidator_key,
                margin_calculation,
                margin_freed,
                user.is_bankrupt(),
                canceled_order_ids,
                liquidate_borrow_for_perp_pnl=LiquidateBorrowForPerpPnlRecord(
                    perp_market_index=perp_market_index,
                    market_oracle_price=market_oracle_price,
                    pnl_transfer=0,
                    liability_market_index=liability_market_index,
                    liability_price=liability_price,
                    liability_transfer=0,
                ),
            )
        )
        user.exit_cross_margin_liquidation()
        return

    margin_shortage = intermediate.margin_shortage()
    liability_transfer_to_cover_margin_shortage = (
        calculate_liability_transfer_to_cover_margin_shortage(
            margin_shortage,
            pnl_asset_weight,
            pnl_liquidation_multiplier,
            liability_weight + buffer_ratio,
            liability_liquidation_multiplier,
            liability_decimals,
            liability_price,
            0,
        )
    )
    max_pct_allowed = calculate_max_pct_to_liquidate(
        user, margin_shortage, slot, state.initial_pct_to_liquidate, state.liquidation_duration
    )
    max_liability_allowed_to_be_transferred = div_trunc(
        liability_transfer_to_cover_margin_shortage * max_pct_allowed, LIQUIDATION_PCT_PRECISION
    )
    if max_liability_allowed_to_be_transferred == 0:
        return

    liability_transfer_implied_by_pnl = calculate_liability_transfer_implied_by_asset_amount(
        pnl,
        pnl_liquidation_multiplier,
        quote_decimals,
        quote_price,
        liability_liquidation_multiplier,
        liability_decimals,
        liability_price,
    )
    liability_value = get_token_value(liability_amount, liability_decimals, liability_price)
    minimum_liability_transfer = (
        0 if liability_value > _MIN_LIABILITY_VALUE_FOR_PARTIAL else liability_amount
    )
    liability_transfer = min(
        liquidator_max_liability_transfer,
        liability_amount,
        max(max_liability_allowed_to_be_transferred, minimum_liability_transfer),
        liability_transfer_implied_by_pnl,
    )
    pnl_transfer = calculate_asset_transfer_for_liability_transfer(
        pnl,
        pnl_liquidation_multiplier,
        quote_decimals,
        quote_price,
        liability_transfer,
        liability_liquidation_multiplier,
        liability_decimals,
        liability_price,
    )
    if liability_transfer == 0 or pnl_transfer == 0:
        raise ProtocolError(
            ErrorCode.InvalidLiquidation,
            f"liability_transfer={liability_transfer} pnl_transfer={pnl_transfer}",
        )
    validate_transfer_satisfies_limit_price(
        pnl_transfer, liability_transfer, quote_decimals, liability_decimals, limit_price
    )

    update_spot_balances_and_cumulative_deposits(
        liability_transfer,
        SpotBalanceType.Deposit,
        liability_market,
        user_liability_position,
        False,
        liability_transfer,
    )
    update_spot_balances_and_cumulative_deposits(
        liability_transfer,
        SpotBalanceType.Borrow,
        liability_market,
        liquidator.force_get_spot_position_mut(liability_market_index),
        False,
        liability_transfer,
    )
    liquidator_position = liquidator.force_get_perp_position_mut(perp_market_index)
    update_quote_asset_amount(liquidator_position, market, pnl_transfer)
    update_quote_asset_amount(user_position, market, -pnl_transfer)

    margin_freed_from_liability, _ = calculate_margin_freed(
        user, accounts, buffer_ratio, margin_shortage
    )
    margin_freed = cast_u64(margin_freed + margin_freed_from_liability)
    _increment_margin_freed(user, margin_freed_from_liability)
    _enter_bankruptcy_or_exit(
        user, liability_transfer >= liability_transfer_to_cover_margin_shortage
    )

    _prune(user, (perp_market_index,), (liability_market_index,))
    _prune(liquidator, (perp_market_index,), (liability_market_index,))
    _require_liquidator_initial_margin(liquidator, accounts, "the borrow")

    accounts.emit(
        _liquidation_record(
            accounts,
            LIQUIDATION_TYPE_BORROW_FOR_PERP_PNL,
            liquidation_id,
            user_key,
            liquidator_key,
            margin_calculation,
            margin_freed,
            user.is_bankrupt(),
            canceled_order_ids,
            liquidate_borrow_for_perp_pnl=LiquidateBorrowForPerpPnlRecord(
                perp_market_index=perp_market_index,
                market_oracle_price=market_oracle_price,
                pnl_transfer=pnl_transfer,
                liability_market_index=liability_market_index,
                liability_price=liability_price,
                liability_transfer=liability_transfer,
            ),
        )
    )


def liquidate_perp_pnl_for_deposit(
    accounts: Accounts,
    perp_market_index: int,
    asset_market_index: int,
    liquidator_max_pnl_transfer: int,
    limit_price: int | None,
    user_key: UserKey,
    liquidator_key: UserKey,
) -> None:
    """Take over up to ``liquidator_max_pnl_transfer`` (QUOTE_PRECISION) of the negative PnL of
    the user's flat position in ``perp_market_index`` for its deposit in ``asset_market_index``
    (the deposit at the asset market's premium, the PnL at the perp market's discount). Refused
    with ``TierViolationLiquidatingPerpPnl`` while the user has a liability in a safer tier,
    which must be liquidated first."""
    _check_users(user_key, liquidator_key)
    state = accounts.state
    slot = accounts.clock.slot
    buffer_ratio = state.liquidation_margin_buffer_ratio

    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="user")
    _check_liquidator_not_bankrupt(liquidator)

    market = accounts.perp_market(perp_market_index)
    asset_market = accounts.spot_market(asset_market_index)
    user_position = _perp_position(user, perp_market_index)
    user_asset_position = _spot_position(user, asset_market_index, "asset")
    _check_room_for_perp_position(liquidator, perp_market_index)
    _check_room_for_spot_position(liquidator, asset_market_index)

    _settle_funding(accounts, user, user_key, market)
    _settle_funding(accounts, liquidator, liquidator_key, market)

    asset_price = _update_spot_market(accounts, asset_market)
    asset_amount = _spot_token_amount(user_asset_position, asset_market, SpotBalanceType.Deposit)
    asset_decimals = asset_market.decimals
    asset_weight = asset_market.maintenance_asset_weight
    asset_liquidation_multiplier = calculate_liquidation_multiplier(
        asset_market.liquidator_fee, LiquidationMultiplierType.Premium
    )

    if user_position.base_asset_amount != 0:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionToLiquidate,
            f"cannot have an open perp position (base_asset_amount: "
            f"{user_position.base_asset_amount})",
        )
    if user_position.quote_asset_amount >= 0:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionToLiquidate, "perp position must have negative pnl"
        )
    unsettled_pnl = -user_position.quote_asset_amount
    quote_price = _quote_oracle_price(accounts, market)
    quote_decimals = 6
    pnl_liability_weight = SPOT_WEIGHT_PRECISION
    pnl_liquidation_multiplier = calculate_liquidation_multiplier(
        market.liquidator_fee, LiquidationMultiplierType.Discount
    )

    margin_calculation = _liquidation_calculation(user, accounts)
    if not _start_liquidation(user, margin_calculation):
        return
    liquidation_id = user.enter_cross_margin_liquidation(slot)

    canceled_order_ids = cancel_orders(accounts, user_key, explanation=EXPLANATION_LIQUIDATION)
    safest_tier_spot_liability, safest_tier_perp_liability = calculate_user_safest_position_tiers(
        user, accounts
    )
    is_contract_tier_violation = not is_as_safe_as(
        market.contract_tier, safest_tier_perp_liability, safest_tier_spot_liability
    )
    market_oracle_price = accounts.oracle_price_data(market.amm.oracle).price

    margin_freed = 0
    intermediate = margin_calculation
    if canceled_order_ids:
        intermediate = _liquidation_calculation(user, accounts)
        margin_freed = cast_u64(
            max(margin_calculation.margin_shortage() - intermediate.margin_shortage(), 0)
        )
        _increment_margin_freed(user, margin_freed)
        exiting_liq_territory = intermediate.can_exit_liquidation()
        if exiting_liq_territory or is_contract_tier_violation:
            accounts.emit(
                _liquidation_record(
                    accounts,
                    LIQUIDATION_TYPE_PERP_PNL_FOR_DEPOSIT,
                    liquidation_id,
                    user_key,
                    liquidator_key,
                    margin_calculation,
                    margin_freed,
                    user.is_bankrupt(),
                    canceled_order_ids,
                    liquidate_perp_pnl_for_deposit=LiquidatePerpPnlForDepositRecord(
                        perp_market_index=perp_market_index,
                        market_oracle_price=market_oracle_price,
                        pnl_transfer=0,
                        asset_market_index=asset_market_index,
                        asset_price=asset_price,
                        asset_transfer=0,
                    ),
                )
            )
            if exiting_liq_territory:
                user.exit_cross_margin_liquidation()
            return

    if is_contract_tier_violation:
        raise ProtocolError(
            ErrorCode.TierViolationLiquidatingPerpPnl,
            f"contract tier {market.contract_tier.name} pnl is riskier than outstanding "
            f"{safest_tier_perp_liability.name} / {safest_tier_spot_liability.name} liabilities",
        )

    margin_shortage = intermediate.margin_shortage()
    pnl_transfer_to_cover_margin_shortage = calculate_liability_transfer_to_cover_margin_shortage(
        margin_shortage,
        asset_weight,
        asset_liquidation_multiplier,
        pnl_liability_weight + buffer_ratio,
        pnl_liquidation_multiplier,
        quote_decimals,
        quote_price,
        0,
    )
    max_pct_allowed = calculate_max_pct_to_liquidate(
        user, margin_shortage, slot, state.initial_pct_to_liquidate, state.liquidation_duration
    )
    max_pnl_allowed_to_be_transferred = div_trunc(
        pnl_transfer_to_cover_margin_shortage * max_pct_allowed, LIQUIDATION_PCT_PRECISION
    )
    if max_pnl_allowed_to_be_transferred == 0:
        return

    pnl_transfer_implied_by_asset_amount = calculate_liability_transfer_implied_by_asset_amount(
        asset_amount,
        asset_liquidation_multiplier,
        asset_decimals,
        asset_price,
        pnl_liquidation_multiplier,
        quote_decimals,
        quote_price,
    )
    minimum_pnl_transfer = 0 if unsettled_pnl > _MIN_LIABILITY_VALUE_FOR_PARTIAL else unsettled_pnl
    pnl_transfer = min(
        liquidator_max_pnl_transfer,
        unsettled_pnl,
        max(max_pnl_allowed_to_be_transferred, minimum_pnl_transfer),
        pnl_transfer_implied_by_asset_amount,
    )
    asset_transfer = calculate_asset_transfer_for_liability_transfer(
        asset_amount,
        asset_liquidation_multiplier,
        asset_decimals,
        asset_price,
        pnl_transfer,
        pnl_liquidation_multiplier,
        quote_decimals,
        quote_price,
    )
    if asset_transfer == 0 or pnl_transfer == 0:
        raise ProtocolError(
            ErrorCode.InvalidLiquidation,
            f"asset_transfer={asset_transfer} pnl_transfer={pnl_transfer}",
        )
    validate_transfer_satisfies_limit_price(
        asset_transfer, pnl_transfer, asset_decimals, quote_decimals, limit_price
    )

    update_spot_balances_and_cumulative_deposits(
        asset_transfer,
        SpotBalanceType.Deposit,
        asset_market,
        liquidator.force_get_spot_position_mut(asset_market_index),
        False,
        asset_transfer,
    )
    update_spot_balances_and_cumulative_deposits(
        asset_transfer,
        SpotBalanceType.Borrow,
        asset_market,
        user_asset_position,
        False,
        asset_transfer,
    )
    liquidator_position = liquidator.force_get_perp_position_mut(perp_market_index)
    update_quote_asset_amount(liquidator_position, market, -pnl_transfer)
    update_quote_asset_amount(user_position, market, pnl_transfer)

    margin_freed_from_liability, _ = calculate_margin_freed(
        user, accounts, buffer_ratio, margin_shortage
    )
    margin_freed = cast_u64(margin_freed + margin_freed_from_liability)
    _increment_margin_freed(user, margin_freed_from_liability)
    _enter_bankruptcy_or_exit(user, pnl_transfer >= pnl_transfer_to_cover_margin_shortage)

    _prune(user, (perp_market_index,), (asset_market_index,))
    _prune(liquidator, (perp_market_index,), (asset_market_index,))
    _require_liquidator_initial_margin(liquidator, accounts, "the perp pnl")

    accounts.emit(
        _liquidation_record(
            accounts,
            LIQUIDATION_TYPE_PERP_PNL_FOR_DEPOSIT,
            liquidation_id,
            user_key,
            liquidator_key,
            margin_calculation,
            margin_freed,
            user.is_bankrupt(),
            canceled_order_ids,
            liquidate_perp_pnl_for_deposit=LiquidatePerpPnlForDepositRecord(
                perp_market_index=perp_market_index,
                market_oracle_price=market_oracle_price,
                pnl_transfer=pnl_transfer,
                asset_market_index=asset_market_index,
                asset_price=asset_price,
                asset_transfer=asset_transfer,
            ),
        )
    )


# --- bankruptcy -----------------------------------------------------------------------------------
def _check_can_resolve(user: User, liquidator: User) -> None:
    if not user.is_bankrupt() and is_user_bankrupt(user):
        user.enter_cross_margin_bankruptcy()
    if not user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserNotBankrupt, "user not bankrupt", field="user")
    _check_liquidator_not_bankrupt(liquidator)
    if liquidator.is_being_liquidated():
        raise ProtocolError(
            ErrorCode.UserIsBeingLiquidated, "liquidator being liquidated", field="liquidator"
        )


def _increment_total_socialized_loss(user: User, value: int) -> None:
    user.total_social_loss = min(user.total_social_loss + value, U64_MAX)  # saturating u64


def resolve_perp_bankruptcy(
    accounts: Accounts,
    market_index: int,
    user_key: UserKey,
    liquidator_key: UserKey,
    insurance_fund_vault_balance: int,
) -> int:
    """Clear a bankrupt user's negative PnL in ``market_index``; the insurance-fund payment.

    Seed 002's waterfall, in order: the quote market's insurance fund pays into the market's
    pnl pool, at most what ``quote_max_insurance - quote_settled_insurance`` still allows and
    always leaving 1 token in the fund (``insurance_fund_vault_balance``); then the market's AMM
    fee pool pays the pnl pool what it holds; whatever is left is socialised across every open
    position by moving both cumulative funding rates against their holders
    (``amm.total_social_loss`` grows by it). The user's debt is then written off
    (``User.total_social_loss`` grows by all of it) and, with nothing else owed, it leaves
    bankruptcy. The caller moves the returned amount from the insurance fund vault into the
    market vault.
    """
    _check_users(user_key, liquidator_key)
    now = accounts.clock.unix_timestamp
    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    _check_can_resolve(user, liquidator)

    market = accounts.perp_market(market_index)
    position = _perp_position(user, market_index)
    loss = position.quote_asset_amount
    if loss >= 0:
        raise ProtocolError(ErrorCode.InvalidPerpPositionToLiquidate, "user must have negative pnl")

    margin_calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, accounts, MarginContext.standard(MarginRequirementType.Maintenance)
    )

    claim = market.insurance_claim
    if claim.quote_settled_insurance > claim.quote_max_insurance:
        raise MathError(
            f"quote_settled_insurance {claim.quote_settled_insurance} > quote_max_insurance "
            f"{claim.quote_max_insurance}"
        )
    max_insurance_withdraw = claim.quote_max_insurance - claim.quote_settled_insurance
    if_payment = min(-loss, max(insurance_fund_vault_balance - 1, 0), max_insurance_withdraw)
    claim.quote_settled_insurance = cast_u64(claim.quote_settled_insurance + if_payment)

    quote_market = accounts.spot_market(QUOTE_SPOT_MARKET_INDEX)
    interest_record = update_spot_market_cumulative_interest(
        quote_market, accounts.oracle_price_data(quote_market.oracle), now
    )
    if interest_record is not None:
        accounts.emit(interest_record)
    update_spot_balances(if_payment, SpotBalanceType.Deposit, quote_market, market.pnl_pool, False)

    losses_remaining = loss + if_payment
    fee_pool_payment = 0
    if losses_remaining < 0:
        fee_pool_tokens = get_token_amount(
            market.amm.fee_pool.scaled_balance, quote_market, SpotBalanceType.Deposit
        )
        fee_pool_payment = min(-losses_remaining, fee_pool_tokens)
    if fee_pool_payment > 0:
        # seed 002: the fee pool covers the loss, so its tokens go where the debt was owed
        transfer_spot_balances(fee_pool_payment, quote_market, market.amm.fee_pool, market.pnl_pool)

    loss_to_socialize = losses_remaining + fee_pool_payment
    cumulative_funding_rate_delta = 0
    if loss_to_socialize < 0:
        cumulative_funding_rate_delta = calculate_funding_rate_deltas_to_resolve_bankruptcy(
            loss_to_socialize, market
        )
        market.amm.total_social_loss += -loss_to_socialize
        market.amm.cumulative_funding_rate_long += cumulative_funding_rate_delta
        market.amm.cumulative_funding_rate_short -= cumulative_funding_rate_delta

    quote_asset_amount = position.quote_asset_amount
    update_quote_asset_amount(position, market, -quote_asset_amount)
    _increment_total_socialized_loss(user, abs(quote_asset_amount))

    if not is_user_bankrupt(user):
        user.exit_cross_margin_bankruptcy()
    _prune(user, (market_index,), ())

    accounts.emit(
        BankruptcyRecord(
            bankruptcy_type=BANKRUPTCY_TYPE_PERP,
            liquidation_id=user.next_liquidation_id - 1,
            user=user_key,
            liquidator=liquidator_key,
            margin_requirement=margin_calculation.margin_requirement,
            total_collateral=margin_calculation.total_collateral,
            perp_bankruptcy=PerpBankruptcyRecord(
                market_index=market_index,
                pnl=loss,
                if_payment=if_payment,
                fee_pool_payment=fee_pool_payment,
                loss_socialized=-loss_to_socialize,
                cumulative_funding_rate_delta=cumulative_funding_rate_delta,
            ),
            spot_bankruptcy=None,
            slot=accounts.clock.slot,
            ts=now,
        )
    )
    return cast_u64(if_payment)


def resolve_spot_bankruptcy(
    accounts: Accounts,
    market_index: int,
    user_key: UserKey,
    liquidator_key: UserKey,
    insurance_fund_vault_balance: int,
) -> int:
    """Clear a bankrupt user's borrow in ``market_index``; the insurance-fund payment.

    The market's insurance fund pays what it can (always leaving 1 token); the rest is taken
    from the market's depositors by lowering ``cumulative_deposit_interest`` so their deposits
    are worth that much less. The borrow is written off in full (the market's
    ``total_social_loss`` / ``total_quote_social_loss`` and the user's ``total_social_loss``
    grow by it) and, with nothing else owed, the user leaves bankruptcy. The caller moves the
    returned amount from the insurance fund vault into the market vault.
    """
    _check_users(user_key, liquidator_key)
    user = accounts.user(user_key)
    liquidator = accounts.user(liquidator_key)
    _check_can_resolve(user, liquidator)

    spot_market = accounts.spot_market(market_index)
    position = _spot_position(user, market_index, "liability")
    margin_calculation = calculate_margin_requirement_and_total_collateral_and_liability_info(
        user, accounts, MarginContext.standard(MarginRequirementType.Maintenance)
    )
    if position.balance_type != SpotBalanceType.Borrow or position.scaled_balance == 0:
        raise ProtocolError(
            ErrorCode.UserHasInvalidBorrow,
            f"user has no borrow in spot market {market_index}",
            field="market_index",
        )
    borrow_amount = get_token_amount(position.scaled_balance, spot_market, position.balance_type)

    if_payment = min(borrow_amount, max(insurance_fund_vault_balance - 1, 0))
    loss_to_socialize = borrow_amount - if_payment
    cumulative_deposit_interest_delta = (
        calculate_cumulative_deposit_interest_delta_to_resolve_bankruptcy(
            loss_to_socialize, spot_market
        )
    )

    oracle_price = accounts.oracle_price_data(spot_market.oracle).price
    quote_social_loss = abs(get_token_value(-borrow_amount, spot_market.decimals, oracle_price))
    _increment_total_socialized_loss(user, quote_social_loss)

    update_spot_balances_and_cumulative_deposits(
        borrow_amount, SpotBalanceType.Deposit, spot_market, position, False
    )
    if cumulative_deposit_interest_delta > spot_market.cumulative_deposit_interest:
        raise MathError(
            f"cumulative_deposit_interest {spot_market.cumulative_deposit_interest} < "
            f"{cumulative_deposit_interest_delta}"
        )
    spot_market.cumulative_deposit_interest -= cumulative_deposit_interest_delta
    spot_market.total_social_loss += borrow_amount
    spot_market.total_quote_social_loss += quote_social_loss

    if not is_user_bankrupt(user):
        user.exit_cross_margin_bankruptcy()
    _prune(user, (), (market_index,))

    accounts.emit(
        BankruptcyRecord(
            bankruptcy_type=BANKRUPTCY_TYPE_SPOT,
            liquidation_id=user.next_liquidation_id - 1,
            user=user_key,
            liquidator=liquidator_key,
            margin_requirement=margin_calculation.margin_requirement,
            total_collateral=margin_calculation.total_collateral,
            perp_bankruptcy=None,
            spot_bankruptcy=SpotBankruptcyRecord(
                market_index=market_index,
                borrow_amount=borrow_amount,
                if_payment=if_payment,
                cumulative_deposit_interest_delta=cumulative_deposit_interest_delta,
            ),
            slot=accounts.clock.slot,
            ts=accounts.clock.unix_timestamp,
        )
    )
    return cast_u64(if_payment)


def set_user_status_to_being_liquidated(accounts: Accounts, user_key: UserKey) -> None:
    """Flag a user below its maintenance requirement as being liquidated without taking
    anything (so it can no longer place orders or withdraw): ``UserBankrupt`` /
    ``UserIsBeingLiquidated`` if already flagged, ``SufficientCollateral`` if not below."""
    user = accounts.user(user_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user bankrupt", field="user")
    if user.is_being_liquidated():
        raise ProtocolError(
            ErrorCode.UserIsBeingLiquidated, "user is already being liquidated", field="user"
        )
    margin_calculation = _liquidation_calculation(user, accounts)
    if margin_calculation.meets_margin_requirement():
        raise ProtocolError(
            ErrorCode.SufficientCollateral,
            f"total_collateral={margin_calculation.total_collateral} >= "
            f"margin_requirement={margin_calculation.margin_requirement}",
        )
    user.enter_cross_margin_liquidation(accounts.clock.slot)
