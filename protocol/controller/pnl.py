"""Settling a perp position's PnL into the user's quote balance (the program's
``controller/pnl.rs::settle_pnl``, with the pool bookkeeping of ``controller/amm.rs``).

Units: QUOTE_PRECISION (1e6) amounts, which are also the quote (USDC) spot market's token
units; PRICE_PRECISION prices; ``now`` unix seconds.

A perp position's ``quote_asset_amount`` is PnL the market owes the user (or the user owes the
market). Settling moves it into real tokens: a gain is paid from the market's pnl pool into the
user's quote deposit; a loss is taken from the user's quote balance (turning into a borrow if
the deposit is short) and paid into the pnl pool, except a 1/100 share that tops up the AMM's
fee pool while that pool is below its target. Every token moves inside the quote spot market,
so its deposits minus borrows (its TVL) is unchanged up to rounding (at most 10 units, checked).

Limits, in order (:func:`settle_pnl`):

* a bankrupt user cannot settle (``UserBankrupt``); the market's price must be within its
  bands (``PriceBandsBreached``); funding is settled first;
* a user with a loss must meet the maintenance requirement at strict prices
  (``InsufficientCollateralForSettlingPNL``): a user in liquidation territory is the
  liquidator's business;
* while ``amm.curve_update_intensity > 0`` and the AMM was not updated with a valid oracle this
  slot, the oracle must be usable for ``SettlePnl`` and close to its 5-minute TWAP, else the
  oracle's error (when the last AMM update saw an invalid oracle) or
  ``AMMNotUpdatedInSameSlot``. Markets whose curve never moves
  (``curve_update_intensity == 0``) skip this gate, as in the program;
* with base the market must be Active; without, Active or ReduceOnly
  (``InvalidMarketStatusToSettlePnl``);
* a gain is capped by :func:`~protocol.math.pnl.get_claimable_pnl` (realized part plus the
  pool's excess over what all users are owed) and by what the pnl pool holds; a loss by how
  much the user may withdraw or borrow (no borrowing past the market's utilization limits);
* nothing to settle: ``NoUnsettledPnl``; nothing the pool can pay: ``PnlPoolCantSettleUser``;
* anyone may settle anyone's loss, and a gain while the pool is in excess; otherwise a gain
  is only settled by the user's authority or delegate
  (``UserMustSettleTheirOwnPositiveUnsettledPNL``), except a flat position of a user in
  liquidation.

Deviations from the program, and why:

* markets have one status and no ``paused_operations`` bits, so the program's
  ``SettlePnl``/``SettlePnlWithPosition``/``SettleRevPool`` pauses are not modelled (the status
  rules above still apply); positions are cross-margin only (no isolated deposits); the
  ``settle_expired_position`` path for a market in settlement is not modelled.
* the program's ``validate_perp_market`` after settling checks the AMM's base totals and
  reserves, which settling never changes; only the position's own check
  (``validate_perp_position_with_perp_market``) is repeated here.
* :func:`update_pool_balances`, :func:`calculate_revenue_pool_transfer` (``controller/amm.rs``)
  and :func:`validate_market_within_price_band` (``controller/orders.rs``) live here because
  settling pnl is their first user.
* positions and spot positions left empty are pruned (this model's lists hold live entries
  only; the program leaves an available slot).
"""

from __future__ import annotations

from enum import IntEnum

from protocol.accounts import Accounts
from protocol.constants import FEE_POOL_TO_REVENUE_POOL_THRESHOLD, QUOTE_SPOT_MARKET_INDEX
from protocol.controller.funding import settle_funding_payment
from protocol.controller.position import update_quote_asset_amount, update_settled_pnl
from protocol.controller.spot_balance import (
    transfer_revenue_pool_to_spot_balance,
    transfer_spot_balance_to_revenue_pool,
    transfer_spot_balances,
    update_spot_balances,
    update_spot_market_cumulative_interest,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    calculate_oracle_twap_5min_price_spread_pct,
    is_oracle_mark_too_divergent,
    is_recent_oracle_valid,
    reserve_price,
)
from protocol.math.funding import get_total_fee_lower_bound
from protocol.math.margin import (
    calculate_net_user_pnl,
    meets_settle_pnl_maintenance_margin_requirement,
)
from protocol.math.oracle import (
    DriftAction,
    get_max_confidence_interval_multiplier,
    is_oracle_valid_for_action,
    oracle_validity,
)
from protocol.math.orders import is_multiple_of_step_size
from protocol.math.pnl import (
    get_claimable_pnl,
    get_unrealized_pnl,
    is_price_divergence_ok_for_settle_pnl,
)
from protocol.math.spot_balance import get_signed_token_amount, get_token_amount
from protocol.math.spot_withdraw import (
    get_max_withdraw_for_market_with_token_amount,
    validate_spot_balances,
)
from protocol.numeric import cast_i64, cast_u128, div_trunc
from protocol.records import SettlePnlRecord
from protocol.state.perp_market import PerpMarket
from protocol.state.spot_market import SpotMarket
from protocol.state.state import State
from protocol.state.user import PerpPosition, UserKey
from protocol.types import ContractType, MarketStatus, MarketType, SpotBalanceType

# SettlePnlRecord.explanation for an ordinary settlement (the program's None).
SETTLE_PNL_EXPLANATION_NONE = ""


class SettlePnlMode(IntEnum):
    """``MustSettle``: every refusal is an error. ``TrySettle``: a refusal ends this settlement
    quietly (for settling several markets in one instruction), unless the settlement already
    moved spot balances, which switches it to ``MustSettle``."""

    MustSettle = 0
    TrySettle = 1

    def result(self, error_code: ErrorCode, market_index: int, detail: str) -> None:
        """Refuse: raise in ``MustSettle`` mode, return in ``TrySettle`` mode."""
        if self is SettlePnlMode.MustSettle:
            raise ProtocolError(error_code, f"market {market_index}: {detail}")


def _sub_u(a: int, b: int, what: str) -> int:
    # the program's unsigned safe_sub: underflow is a MathError
    if b > a:
        raise MathError(f"{what}: {a} - {b} underflows")
    return a - b


def _get_tvl(spot_market: SpotMarket) -> int:
    """``SpotMarket::get_tvl``: deposit tokens minus borrow tokens."""
    deposits = get_token_amount(spot_market.deposit_balance, spot_market, SpotBalanceType.Deposit)
    borrows = get_token_amount(spot_market.borrow_balance, spot_market, SpotBalanceType.Borrow)
    return _sub_u(deposits, borrows, "tvl")


def validate_market_within_price_band(market: PerpMarket, state: State, oracle_price: int) -> bool:
    """Whichever of the reserve price and the oracle price is further from the 5-minute oracle
    TWAP must stay within the exchange's mark/oracle divergence guard rail
    (``PriceBandsBreached``). Prediction markets are exempt. Returns ``True`` when within."""
    if market.contract_type == ContractType.Prediction:
        return True
    reserve_spread_pct = calculate_oracle_twap_5min_price_spread_pct(
        market.amm, reserve_price(market.amm)
    )
    oracle_spread_pct = calculate_oracle_twap_5min_price_spread_pct(market.amm, abs(oracle_price))
    if abs(reserve_spread_pct) > abs(oracle_spread_pct):
        spread, which = reserve_spread_pct, "reserve"
    else:
        spread, which = oracle_spread_pct, "oracle"
    if is_oracle_mark_too_divergent(spread, state.oracle_guard_rails.price_divergence):
        raise ProtocolError(
            ErrorCode.PriceBandsBreached,
            f"perp market {market.market_index}: {which} price is {spread} "
            "(BID_ASK_SPREAD_PRECISION) from the 5-minute oracle TWAP",
        )
    return True


def calculate_revenue_pool_transfer(
    market: PerpMarket,
    spot_market: SpotMarket,
    amm_fee_pool_token_amount_after: int,
    terminal_state_surplus: int,
) -> int:
    """Tokens to move from the AMM's fee pool to the quote market's revenue pool (positive) or
    back (negative).

    With a fee surplus above FEE_POOL_TO_REVENUE_POOL_THRESHOLD the market sends on its share
    of fees (its fee lower bound plus the liquidation fees the insurance claim allows, less what
    it already sent), keeping the threshold and its social losses in the fee pool and sending
    at most this period's allowance. Below the threshold it draws back up to the gap, limited by
    the period's withdraw allowance and the revenue pool's balance.
    """
    claim = market.insurance_claim
    amm_budget_surplus = terminal_state_surplus - FEE_POOL_TO_REVENUE_POOL_THRESHOLD
    if amm_budget_surplus > 0:
        fee_pool_threshold = max(
            amm_fee_pool_token_amount_after
            - (FEE_POOL_TO_REVENUE_POOL_THRESHOLD + market.amm.total_social_loss),
            0,
        )
        total_liq_fees_for_revenue_pool = min(
            market.amm.total_liquidation_fee,
            claim.quote_settled_insurance + claim.quote_max_insurance,
        )
        max_revenue_to_settle = max(
            min(
                claim.revenue_withdraw_since_last_settle + claim.max_revenue_withdraw_per_period,
                market.amm.net_revenue_since_last_funding,
            ),
            0,
        )
        total_fee_for_if = get_total_fee_lower_bound(market)
        revenue_pool_transfer = min(
            max(
                total_fee_for_if + total_liq_fees_for_revenue_pool - market.amm.total_fee_withdrawn,
                0,
            ),
            fee_pool_threshold,
            max_revenue_to_settle,
        )
        if revenue_pool_transfer < 0:
            raise ProtocolError(
                ErrorCode.InsufficientPerpPnlPool,
                f"revenue_pool_transfer negative ({revenue_pool_transfer})",
            )
        return revenue_pool_transfer
    if amm_budget_surplus < 0:
        max_revenue_withdraw_allowed = min(
            cast_u128(
                cast_i64(claim.max_revenue_withdraw_per_period)
                - claim.revenue_withdraw_since_last_settle
            ),
            get_token_amount(
                spot_market.revenue_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
            ),
            claim.max_revenue_withdraw_per_period,
        )
        if max_revenue_withdraw_allowed > 0:
            return -min(abs(amm_budget_surplus), max_revenue_withdraw_allowed)
    return 0


def update_pool_balances(
    market: PerpMarket,
    spot_market: SpotMarket,
    user_quote_token_amount: int,
    user_unsettled_pnl: int,
    now: int,
) -> int:
    """Rebalance the market's fee and pnl pools, then move the part of
    ``user_unsettled_pnl`` that can settle into or out of the pnl pool; returns that part
    (positive: the user is paid). The caller moves the same amount on the user's side.

    Before settling: fees above the AMM's target (total fees net of distributions and
    withdrawals) move from the fee pool to the pnl pool; a fee pool below its lower bound is
    topped up from the pnl pool; then fees flow to or from the revenue pool
    (:func:`calculate_revenue_pool_transfer`). A gain settles up to the pnl pool's balance; a
    loss up to what the user's quote balance may give (``user_quote_token_amount`` signed,
    with the market's borrow limits); while the fee pool is under target, 1/100 of a loss goes
    to it instead of to the pnl pool.
    """
    amm = market.amm
    amm_fee_pool_token_amount = get_token_amount(
        amm.fee_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )

    fraction_for_amm = 100
    amm_target_max_fee_pool_token_amount = (
        amm.total_fee_minus_distributions + amm.total_liquidation_fee - amm.total_fee_withdrawn
    )
    if amm_target_max_fee_pool_token_amount <= amm_fee_pool_token_amount:
        # the fee pool holds more than the AMM is owed: the excess belongs to the pnl pool
        pnl_pool_addition = max(0, amm_target_max_fee_pool_token_amount) - amm_fee_pool_token_amount
        if pnl_pool_addition < 0:
            transfer_spot_balances(
                abs(pnl_pool_addition), spot_market, amm.fee_pool, market.pnl_pool
            )
        fraction_for_amm = 0

    amm_target_min_fee_pool_token_amount = _sub_u(
        get_total_fee_lower_bound(market) + amm.total_liquidation_fee,
        amm.total_fee_withdrawn,
        "fee pool lower bound",
    )
    amm_fee_pool_token_amount = get_token_amount(
        amm.fee_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )
    if amm_fee_pool_token_amount < amm_target_min_fee_pool_token_amount:
        pnl_pool_token_amount = get_token_amount(
            market.pnl_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
        )
        pnl_pool_removal = min(
            amm_target_min_fee_pool_token_amount - amm_fee_pool_token_amount,
            pnl_pool_token_amount,
        )
        if pnl_pool_removal > 0:
            transfer_spot_balances(pnl_pool_removal, spot_market, market.pnl_pool, amm.fee_pool)

    amm_fee_pool_token_amount_after = get_token_amount(
        amm.fee_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )
    terminal_state_surplus = amm.total_fee_minus_distributions - amm.total_fee_withdrawn

    claim = market.insurance_claim
    # a revenue settlement to the insurance fund since the market last drew opens a new period
    if spot_market.insurance_fund.last_revenue_settle_ts > claim.last_revenue_withdraw_ts:
        if not (
            now >= claim.last_revenue_withdraw_ts
            and now >= spot_market.insurance_fund.last_revenue_settle_ts
        ):
            raise ProtocolError(
                ErrorCode.BlockchainClockInconsistency,
                f"now {now} < last_revenue_withdraw_ts={claim.last_revenue_withdraw_ts} or "
                f"last_revenue_settle_ts={spot_market.insurance_fund.last_revenue_settle_ts}",
            )
        claim.revenue_withdraw_since_last_settle = 0

    revenue_pool_transfer = calculate_revenue_pool_transfer(
        market, spot_market, amm_fee_pool_token_amount_after, terminal_state_surplus
    )
    if revenue_pool_transfer > 0:
        transfer_spot_balance_to_revenue_pool(revenue_pool_transfer, spot_market, amm.fee_pool)
        amm.total_fee_withdrawn += revenue_pool_transfer
    elif revenue_pool_transfer < 0:
        transfer_revenue_pool_to_spot_balance(abs(revenue_pool_transfer), spot_market, amm.fee_pool)
    if revenue_pool_transfer != 0:
        amm.total_fee_minus_distributions -= revenue_pool_transfer
        claim.revenue_withdraw_since_last_settle = cast_i64(
            claim.revenue_withdraw_since_last_settle - revenue_pool_transfer
        )
        claim.last_revenue_withdraw_ts = now

    pnl_pool_token_amount = get_token_amount(
        market.pnl_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )
    if user_unsettled_pnl > 0:
        pnl_to_settle_with_user = min(user_unsettled_pnl, pnl_pool_token_amount)
    else:
        # a loss settles only as far as the user could withdraw or borrow (utilization limits)
        max_withdraw_amount = -get_max_withdraw_for_market_with_token_amount(
            spot_market, user_quote_token_amount, False
        )
        pnl_to_settle_with_user = max(max_withdraw_amount, user_unsettled_pnl)

    pnl_fraction_for_amm = 0
    if fraction_for_amm > 0 and pnl_to_settle_with_user < 0:
        pnl_fraction_for_amm = div_trunc(pnl_to_settle_with_user, fraction_for_amm)
        update_spot_balances(
            abs(pnl_fraction_for_amm), SpotBalanceType.Deposit, spot_market, amm.fee_pool, False
        )

    pnl_to_settle_with_market = -(pnl_to_settle_with_user - pnl_fraction_for_amm)
    update_spot_balances(
        abs(pnl_to_settle_with_market),
        SpotBalanceType.Deposit if pnl_to_settle_with_market >= 0 else SpotBalanceType.Borrow,
        spot_market,
        market.pnl_pool,
        False,
    )

    validate_spot_balances(spot_market)
    return pnl_to_settle_with_user


def _validate_perp_position_with_perp_market(position: PerpPosition, market: PerpMarket) -> None:
    # validation/position.rs::validate_perp_position_with_perp_market
    if position.market_index != market.market_index:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionDetected, "position/market market_index unequal"
        )
    if not is_multiple_of_step_size(abs(position.base_asset_amount), market.amm.order_step_size):
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionDetected, "position not multiple of stepsize"
        )


def settle_pnl(
    accounts: Accounts,
    user_key: UserKey,
    market_index: int,
    authority: bytes,
    meets_margin_requirement: bool | None = None,
    mode: SettlePnlMode = SettlePnlMode.MustSettle,
) -> SettlePnlRecord | None:
    """Settle the user's PnL in perp market ``market_index`` against its pnl pool.

    ``authority`` is the key acting (a signer of the transaction): only the user's authority or
    delegate may settle a gain the pool is not in excess of. ``meets_margin_requirement``
    passes an already computed strict maintenance check. Emits the interest, funding and
    settlement records; returns the settlement record, or ``None`` where ``TrySettle`` mode
    declined quietly.
    """
    state = accounts.state
    now = accounts.clock.unix_timestamp
    slot = accounts.clock.slot
    user = accounts.user(user_key)
    if user.is_bankrupt():
        raise ProtocolError(ErrorCode.UserBankrupt, "user is bankrupt")

    spot_market = accounts.spot_market(QUOTE_SPOT_MARKET_INDEX)
    interest_record = update_spot_market_cumulative_interest(spot_market, None, now)
    if interest_record is not None:
        accounts.emit(interest_record)
    tvl_before = _get_tvl(spot_market)
    deposits_balance_before = spot_market.deposit_balance
    borrows_balance_before = spot_market.borrow_balance

    perp_market = accounts.perp_market(market_index)
    oracle_price_data = accounts.oracle_price_data(perp_market.amm.oracle)
    oracle_price = oracle_price_data.price

    validate_market_within_price_band(perp_market, state, oracle_price)

    funding_record = settle_funding_payment(user, user_key, perp_market, now)
    if funding_record is not None:
        accounts.emit(funding_record)

    position = user.get_perp_position(market_index)
    if position is None:
        mode.result(ErrorCode.UserHasNoPositionInMarket, market_index, "user has no position")
        return None

    # a user in liquidation territory cannot pay a loss this way: that is the liquidator's job
    if get_unrealized_pnl(position, oracle_price) < 0:
        if meets_margin_requirement is None:
            meets_margin_requirement = meets_settle_pnl_maintenance_margin_requirement(
                user, accounts
            )
        if not meets_margin_requirement:
            mode.result(
                ErrorCode.InsufficientCollateralForSettlingPNL,
                market_index,
                "does not meet the maintenance margin requirement",
            )
            return None

    amm = perp_market.amm
    if amm.curve_update_intensity > 0 and not is_recent_oracle_valid(amm, slot):
        # both staleness overrides are 0, as the program passes them: never Valid, at best
        # stale for the AMM, which settling pnl tolerates
        validity = oracle_validity(
            MarketType.Perp,
            market_index,
            amm.historical_oracle_data.last_oracle_price_twap,
            oracle_price_data,
            state.oracle_guard_rails.validity,
            get_max_confidence_interval_multiplier(perp_market),
            amm.oracle_source,
            0,
            0,
        )
        if not is_oracle_valid_for_action(
            validity, DriftAction.SettlePnl
        ) or not is_price_divergence_ok_for_settle_pnl(perp_market, oracle_price):
            if not amm.last_oracle_valid:
                mode.result(
                    validity.get_error_code(),
                    market_index,
                    f"oracle {validity.name} on the last perp market update",
                )
                return None
            if slot != amm.last_update_slot:
                mode.result(
                    ErrorCode.AMMNotUpdatedInSameSlot,
                    market_index,
                    f"AMM must be updated in a prior instruction within the same slot "
                    f"(current={slot} != amm={amm.last_update_slot})",
                )
                return None

    base_asset_amount = position.base_asset_amount
    if base_asset_amount != 0:
        if perp_market.status != MarketStatus.Active:
            mode.result(
                ErrorCode.InvalidMarketStatusToSettlePnl,
                market_index,
                f"cannot settle pnl with a position under status {perp_market.status.name}",
            )
            return None
    elif perp_market.status not in (MarketStatus.Active, MarketStatus.ReduceOnly):
        mode.result(
            ErrorCode.InvalidMarketStatusToSettlePnl,
            market_index,
            f"cannot settle pnl under status {perp_market.status.name}",
        )
        return None

    pnl_pool_token_amount = get_token_amount(
        perp_market.pnl_pool.scaled_balance, spot_market, SpotBalanceType.Deposit
    )
    fraction_of_fee_pool_token_amount = div_trunc(
        get_token_amount(amm.fee_pool.scaled_balance, spot_market, SpotBalanceType.Deposit), 5
    )
    # a fifth of the fee pool counts as a buffer behind the pnl pool
    pnl_tokens_available = pnl_pool_token_amount + fraction_of_fee_pool_token_amount
    net_user_pnl = calculate_net_user_pnl(amm, oracle_price)
    if net_user_pnl < pnl_tokens_available:
        max_pnl_pool_excess = pnl_tokens_available - max(net_user_pnl, 0)
    else:
        max_pnl_pool_excess = 0

    user_unsettled_pnl = get_claimable_pnl(position, oracle_price, max_pnl_pool_excess)

    quote_spot_position = user.get_spot_position(QUOTE_SPOT_MARKET_INDEX)
    user_quote_token_amount = (
        0
        if quote_spot_position is None
        else get_signed_token_amount(
            get_token_amount(
                quote_spot_position.scaled_balance, spot_market, quote_spot_position.balance_type
            ),
            quote_spot_position.balance_type,
        )
    )

    pnl_to_settle_with_user = update_pool_balances(
        perp_market, spot_market, user_quote_token_amount, user_unsettled_pnl, now
    )

    # pool balances have moved: a quiet refusal would now leave them half-settled
    if mode is SettlePnlMode.TrySettle and (
        spot_market.deposit_balance != deposits_balance_before
        or spot_market.borrow_balance != borrows_balance_before
    ):
        mode = SettlePnlMode.MustSettle

    if user_unsettled_pnl == 0:
        mode.result(ErrorCode.NoUnsettledPnl, market_index, "user has no unsettled pnl")
        return None
    if pnl_to_settle_with_user == 0:
        mode.result(
            ErrorCode.PnlPoolCantSettleUser,
            market_index,
            "pnl pool cannot currently settle with user",
        )
        return None

    acting_for_user = authority == user.authority or (
        user.delegate != bytes(32) and authority == user.delegate
    )
    user_must_settle_themself = (
        pnl_to_settle_with_user >= 0
        and max_pnl_pool_excess <= 0
        and not (
            pnl_to_settle_with_user > 0 and base_asset_amount == 0 and user.is_being_liquidated()
        )
        and not acting_for_user
    )
    if user_must_settle_themself:
        mode.result(
            ErrorCode.UserMustSettleTheirOwnPositiveUnsettledPNL,
            market_index,
            "user must settle their own positive pnl while the pnl pool is not in excess",
        )
        return None

    update_spot_balances(
        abs(pnl_to_settle_with_user),
        SpotBalanceType.Deposit if pnl_to_settle_with_user > 0 else SpotBalanceType.Borrow,
        spot_market,
        user.force_get_spot_position_mut(QUOTE_SPOT_MARKET_INDEX),
        False,
    )
    update_quote_asset_amount(position, perp_market, -pnl_to_settle_with_user)
    update_settled_pnl(user, position, pnl_to_settle_with_user)

    _validate_perp_position_with_perp_market(position, perp_market)

    record = SettlePnlRecord(
        authority=user.authority,
        sub_account_id=user.sub_account_id,
        market_index=market_index,
        pnl=pnl_to_settle_with_user,
        base_asset_amount=base_asset_amount,
        quote_asset_amount_after=position.quote_asset_amount,
        quote_entry_amount=position.quote_entry_amount,
        settle_price=oracle_price,
        explanation=SETTLE_PNL_EXPLANATION_NONE,
        ts=now,
    )
    accounts.emit(record)

    user.prune_spot_position(QUOTE_SPOT_MARKET_INDEX)
    user.prune_perp_position(market_index)

    tvl_after = _get_tvl(spot_market)
    if tvl_before - tvl_after > 10:
        raise ProtocolError(
            ErrorCode.DefaultError,
            f"settle pnl TVL mismatch: before={tvl_before}, after={tvl_after}",
        )
    return record
