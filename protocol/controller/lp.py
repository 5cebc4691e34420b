"""BAL providers: adding and removing LP shares, the per-LP split of AMM fills, and settling
LP positions (the program's ``controller/lp.rs`` from its versions with BAL providers, with
``controller/position.rs::update_lp_market_position``).

Units: shares and ``sqrt_k`` AMM_RESERVE_PRECISION; base BASE_PRECISION; quote, fees and PnL
QUOTE_PRECISION; prices PRICE_PRECISION; times unix seconds. Every function mutates the
accounts it is handed (the transaction's copy-on-write clones); an error discards the whole
transaction, so nothing here undoes a half-done step.

The life of an LP (seed 004):

* :func:`add_perp_lp_shares` / :func:`mint_lp_shares`: ``sqrt_k`` grows by the shares (both
  reserves scale, keeping the price), the market's ``user_lp_shares`` with it, and the position
  starts tracking the per-share totals from now (an LP adding to its shares settles first).
  The instruction then requires the initial margin, which counts the base the shares could
  take on (:func:`protocol.math.lp.calculate_lp_open_bids_asks`) as open orders.
* :func:`update_lp_market_position`, on every AMM fill: the LPs take ``user_lp_shares /
  sqrt_k`` of the AMM's side, recorded per share, and 80% of the fill's fee to the market
  (before the spread surplus) pro rata over ``sqrt_k``. The LPs' part leaves the AMM's own net
  position (``base_asset_amount_with_amm``) for ``base_asset_amount_with_unsettled_lp``.
* :func:`settle_lp` / :func:`settle_lp_position`: the position's slice since it last settled
  becomes part of its perp position in whole order steps; the sub-step rest is carried in
  ``remainder_base_asset_amount`` until it completes a step. Until then the LP position earns
  and pays no funding: funding settles on ``base_asset_amount`` only, and a settled slice opens
  (or grows) at the current cumulative rate, after the position's funding was settled.
* :func:`remove_perp_lp_shares` / :func:`burn_lp_shares`: only ``lp_cooldown_time`` seconds or
  more after the last addition; settles, charges any sub-step remainder at the oracle price (+1
  unit) to the position's quote and hands that base back to the AMM, then shrinks ``sqrt_k``
  and ``user_lp_shares``. A burn that would leave ``sqrt_k`` no larger than the users' net
  position against the AMM is refused (``InvalidUpdateK`` / ``InvalidAmmDetected``): in large
  imbalances shares cannot be burned.

Invariant kept by every function here and by the fill path:
``base_asset_amount_long + base_asset_amount_short == base_asset_amount_with_amm +
base_asset_amount_with_unsettled_lp``, and ``-base_asset_amount_with_unsettled_lp`` equals the
LPs' unsettled base (per-share slices plus remainders) up to the per-fill and per-position
truncations.

Deviations from the program, and why:

* ``add_perp_lp_shares`` / ``remove_perp_lp_shares`` are the program's instruction bodies
  (``handle_add_perp_lp_shares`` and ``controller::lp::remove_perp_lp_shares``) without the
  account loading; the margin check after adding, which needs every market, is in the
  instruction (:mod:`protocol.instructions.lp`). They return the records to emit.
* no per-LP rebasing and no AMM JIT split (see :mod:`protocol.math.lp`); no
  ``quote_asset_amount_with_unsettled_lp`` or ``total_fee_earned_per_lp`` statistics.
* ``burn_lp_shares`` returns the remainder charge inside the delta's quote and the PnL (as the
  program's later versions do), so the removal record shows it.
* the program's ``validate_perp_market`` after a k change is reduced to its check that
  ``sqrt_k`` stays above the users' net position against the AMM (outside reduce-only).
* a position left with nothing (no shares, base, quote or orders) after a removal leaves the
  user's position list, as this model keeps only live positions.
"""

from __future__ import annotations

from protocol.controller.funding import settle_funding_payment
from protocol.controller.position import update_position_and_market, update_quote_asset_amount
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.cp_curve import get_update_k_result, update_k
from protocol.math.lp import (
    calculate_lp_base_delta,
    calculate_per_lp_delta,
    calculate_settle_lp_metrics,
)
from protocol.math.orders import (
    PositionDelta,
    standardize_base_asset_amount,
    standardize_base_asset_amount_with_remainder_i128,
)
from protocol.math.position import calculate_base_asset_value_with_oracle_price
from protocol.numeric import cast_i32, cast_i64, cast_i128, cast_u64, cast_u128, unsigned_abs
from protocol.records import FundingPaymentRecord, LPRecord
from protocol.state.perp_market import PerpMarket
from protocol.state.user import PerpPosition, User, UserKey
from protocol.types import ContractType, MarketStatus

__all__ = [
    "LP_ACTION_ADD",
    "LP_ACTION_REMOVE",
    "LP_ACTION_SETTLE",
    "add_perp_lp_shares",
    "burn_lp_shares",
    "mint_lp_shares",
    "remove_perp_lp_shares",
    "settle_funding_payment_then_lp",
    "settle_lp",
    "settle_lp_position",
    "update_lp_market_position",
]

# the program's LPAction variants, as LPRecord.action strings
LP_ACTION_ADD = "add_liquidity"
LP_ACTION_REMOVE = "remove_liquidity"
LP_ACTION_SETTLE = "settle_liquidity"


def _validate_k_above_net_position(market: PerpMarket) -> None:
    # validate_perp_market's k check: users' net position must stay closable through the curve
    amm = market.amm
    if market.status != MarketStatus.ReduceOnly and not amm.sqrt_k > unsigned_abs(
        amm.base_asset_amount_with_amm
    ):
        raise ProtocolError(
            ErrorCode.InvalidAmmDetected,
            f"market {market.market_index} k out of whack: sqrt_k={amm.sqrt_k}, "
            f"base_asset_amount_with_amm={amm.base_asset_amount_with_amm}",
        )


# --- the per-LP split of AMM fills --------------------------------------------------------------
def update_lp_market_position(market: PerpMarket, delta: PositionDelta, fee_to_market: int) -> int:
    """Give the LPs their share of a user's AMM fill ``delta``; the base (user side) moved from
    the AMM's own net position to the users' position against unsettled LPs (0 without LPs).

    ``fee_to_market`` is the fill's ``fee_to_market_for_lp`` (QUOTE): 80% of it, per share of
    ``sqrt_k``, improves the LPs' per-share quote, i.e. their cost basis.
    """
    amm = market.amm
    if amm.user_lp_shares == 0:
        return 0
    per_lp_delta_base, per_lp_delta_quote, per_lp_fee = calculate_per_lp_delta(
        amm, delta, fee_to_market
    )
    lp_delta_base = calculate_lp_base_delta(amm, per_lp_delta_base)

    # the LPs take the opposite side of the user
    amm.base_asset_amount_per_lp = cast_i128(amm.base_asset_amount_per_lp - per_lp_delta_base)
    amm.quote_asset_amount_per_lp = cast_i128(amm.quote_asset_amount_per_lp - per_lp_delta_quote)
    amm.quote_asset_amount_per_lp = cast_i128(amm.quote_asset_amount_per_lp + per_lp_fee)

    amm.base_asset_amount_with_amm = cast_i128(amm.base_asset_amount_with_amm - lp_delta_base)
    amm.base_asset_amount_with_unsettled_lp = cast_i128(
        amm.base_asset_amount_with_unsettled_lp + lp_delta_base
    )
    return lp_delta_base


# --- shares --------------------------------------------------------------------------------------
def mint_lp_shares(position: PerpPosition, market: PerpMarket, n_shares: int) -> None:
    """Add ``n_shares`` to the position and to ``sqrt_k`` (both reserves scale by the new
    ``sqrt_k`` ratio, so the price stays put) and to ``amm.user_lp_shares``. A position that
    already has shares settles them first; a new LP starts from the current per-share totals."""
    amm = market.amm
    if position.lp_shares > 0:
        settle_lp_position(position, market)
    else:
        position.last_base_asset_amount_per_lp = cast_i64(amm.base_asset_amount_per_lp)
        position.last_quote_asset_amount_per_lp = cast_i64(amm.quote_asset_amount_per_lp)

    position.lp_shares = cast_u64(position.lp_shares + n_shares)

    update_k(market, get_update_k_result(market, amm.sqrt_k + n_shares, True))
    amm.user_lp_shares = cast_u128(amm.user_lp_shares + n_shares)

    _validate_k_above_net_position(market)


def settle_lp_position(position: PerpPosition, market: PerpMarket) -> tuple[PositionDelta, int]:
    """Move the position's unsettled LP slice into its perp position; ``(delta, pnl)``.

    Whole order steps of base (the slice's, plus any the carried remainder now completes) and
    all of the quote go through :func:`update_position_and_market`; the sub-step rest stays in
    ``remainder_base_asset_amount`` (an i32, as in the program: a larger remainder fails). The
    position's funding must be settled (``InvalidPerpPositionDetected`` otherwise).
    """
    amm = market.amm
    if position.base_asset_amount > 0:
        expected_rate = amm.cumulative_funding_rate_long
    elif position.base_asset_amount < 0:
        expected_rate = amm.cumulative_funding_rate_short
    else:
        expected_rate = position.last_cumulative_funding_rate
    if position.last_cumulative_funding_rate != expected_rate:
        raise ProtocolError(
            ErrorCode.InvalidPerpPositionDetected,
            f"market {market.market_index}: settle the position's funding before its LP shares",
        )

    lp_metrics = calculate_settle_lp_metrics(amm, position)
    base_asset_amount = lp_metrics.base_asset_amount
    new_remainder_base_asset_amount = cast_i64(
        position.remainder_base_asset_amount + lp_metrics.remainder_base_asset_amount
    )
    if unsigned_abs(new_remainder_base_asset_amount) >= amm.order_step_size:
        standardized_remainder, new_remainder_base_asset_amount = (
            standardize_base_asset_amount_with_remainder_i128(
                new_remainder_base_asset_amount, amm.order_step_size
            )
        )
        base_asset_amount += standardized_remainder
    position.remainder_base_asset_amount = cast_i32(new_remainder_base_asset_amount)

    position_delta = PositionDelta(
        quote_asset_amount=cast_i64(lp_metrics.quote_asset_amount),
        base_asset_amount=cast_i64(base_asset_amount),
    )
    pnl = update_position_and_market(position, market, position_delta)

    # the settled base no longer counts as users' position against unsettled LPs
    amm.base_asset_amount_with_unsettled_lp = cast_i128(
        amm.base_asset_amount_with_unsettled_lp + position_delta.base_asset_amount
    )

    position.last_base_asset_amount_per_lp = cast_i64(amm.base_asset_amount_per_lp)
    position.last_quote_asset_amount_per_lp = cast_i64(amm.quote_asset_amount_per_lp)
    return position_delta, pnl


def burn_lp_shares(
    position: PerpPosition, market: PerpMarket, shares_to_burn: int, oracle_price: int
) -> tuple[PositionDelta, int]:
    """Settle the position, then burn ``shares_to_burn`` of its shares; ``(delta, pnl)`` of the
    settlement, with the remainder charge included.

    A remainder left below one step is closed: the AMM takes that base back and the position
    pays its value at ``oracle_price`` plus one unit. The last LP out also takes over whatever
    the market still holds against unsettled LPs (at most one step, else
    ``UnableToBurnLPTokens``). ``sqrt_k`` and ``user_lp_shares`` then shrink by the shares,
    which fails in a large imbalance (see the module notes).
    """
    if position.lp_shares < shares_to_burn:
        raise ProtocolError(
            ErrorCode.InsufficientLPTokens,
            f"position holds {position.lp_shares} shares < {shares_to_burn}",
        )
    position_delta, pnl = settle_lp_position(position, market)
    amm = market.amm

    unsettled_remainder = (
        amm.base_asset_amount_with_unsettled_lp + position.remainder_base_asset_amount
    )
    if shares_to_burn == amm.user_lp_shares and unsettled_remainder != 0:
        if unsigned_abs(unsettled_remainder) > amm.order_step_size:
            raise ProtocolError(
                ErrorCode.UnableToBurnLPTokens,
                f"unsettled base on the final burn {amm.base_asset_amount_with_unsettled_lp} "
                f"(remainder {position.remainder_base_asset_amount}) exceeds the step size "
                f"{amm.order_step_size}",
            )
        # the LPs hold the opposite of the users' position against them
        position.remainder_base_asset_amount = cast_i32(
            position.remainder_base_asset_amount - unsettled_remainder
        )

    if position.remainder_base_asset_amount != 0:
        base_asset_amount = position.remainder_base_asset_amount
        # the LP closes the dust against the AMM
        amm.base_asset_amount_with_amm = cast_i128(
            amm.base_asset_amount_with_amm - base_asset_amount
        )
        amm.base_asset_amount_with_unsettled_lp = cast_i128(
            amm.base_asset_amount_with_unsettled_lp + base_asset_amount
        )
        position.remainder_base_asset_amount = 0
        # rounded up, against the LP
        dust_base_asset_value = (
            calculate_base_asset_value_with_oracle_price(base_asset_amount, oracle_price) + 1
        )
        update_quote_asset_amount(position, market, -cast_i64(dust_base_asset_value))
        position_delta = PositionDelta(
            quote_asset_amount=cast_i64(position_delta.quote_asset_amount - dust_base_asset_value),
            base_asset_amount=position_delta.base_asset_amount,
        )
        pnl = cast_i64(pnl - dust_base_asset_value)

    position.last_base_asset_amount_per_lp = cast_i64(amm.base_asset_amount_per_lp)
    position.last_quote_asset_amount_per_lp = cast_i64(amm.quote_asset_amount_per_lp)

    position.lp_shares -= shares_to_burn
    if amm.user_lp_shares < shares_to_burn:
        raise MathError(f"amm.user_lp_shares {amm.user_lp_shares} < {shares_to_burn}")
    amm.user_lp_shares -= shares_to_burn

    update_k(market, get_update_k_result(market, amm.sqrt_k - shares_to_burn, False))
    _validate_k_above_net_position(market)
    return position_delta, pnl


# --- settlement ----------------------------------------------------------------------------------
def _lp_record(
    action: str,
    user_key: UserKey,
    market_index: int,
    n_shares: int,
    delta: PositionDelta,
    pnl: int,
    now: int,
) -> LPRecord:
    return LPRecord(
        action=action,
        authority=user_key[0],
        sub_account_id=user_key[1],
        market_index=market_index,
        n_shares=n_shares,
        delta_base_asset_amount=delta.base_asset_amount,
        delta_quote_asset_amount=delta.quote_asset_amount,
        pnl=pnl,
        ts=now,
    )


def settle_lp(user: User, user_key: UserKey, market: PerpMarket, now: int) -> LPRecord | None:
    """Settle the user's LP position in ``market`` if it has shares; the record, or ``None``
    when it has none or nothing moved."""
    position = user.get_perp_position(market.market_index)
    if position is None or position.lp_shares == 0:
        return None
    position_delta, pnl = settle_lp_position(position, market)
    if position_delta.base_asset_amount == 0 and position_delta.quote_asset_amount == 0:
        return None
    return _lp_record(LP_ACTION_SETTLE, user_key, market.market_index, 0, position_delta, pnl, now)


def settle_funding_payment_then_lp(
    user: User, user_key: UserKey, market: PerpMarket, now: int
) -> list[FundingPaymentRecord | LPRecord]:
    """Funding first (the settled LP slice may open a position, which must start at the
    current cumulative rate), then :func:`settle_lp`; the records, in that order."""
    records: list[FundingPaymentRecord | LPRecord] = []
    funding_record = settle_funding_payment(user, user_key, market, now)
    if funding_record is not None:
        records.append(funding_record)
    lp_record = settle_lp(user, user_key, market, now)
    if lp_record is not None:
        records.append(lp_record)
    return records


# --- the instruction bodies ----------------------------------------------------------------------
def add_perp_lp_shares(
    user: User, market: PerpMarket, n_shares: int, now: int
) -> list[FundingPaymentRecord | LPRecord]:
    """Mint ``n_shares`` (rounded down to the order step) for ``user`` in ``market``; the
    records. The market must be active and not a prediction market
    (``MarketStatusInvalidForNewLP``) and ``n_shares`` at least one step
    (``NewLPSizeTooSmall``). The user's funding in the market settles first; the addition
    restarts the removal cooldown (``user.last_add_perp_lp_shares_ts``). The caller checks the
    initial margin afterwards."""
    if market.status != MarketStatus.Active:
        raise ProtocolError(
            ErrorCode.MarketStatusInvalidForNewLP,
            f"market {market.market_index} status {market.status.name} does not allow new LP",
            field="market_index",
        )
    if market.contract_type == ContractType.Prediction:
        raise ProtocolError(
            ErrorCode.MarketStatusInvalidForNewLP,
            f"market {market.market_index}: prediction markets take no LP liquidity",
            field="market_index",
        )
    step_size = market.amm.order_step_size
    if n_shares < step_size:
        raise ProtocolError(
            ErrorCode.NewLPSizeTooSmall,
            f"minting {n_shares} shares is less than the step size {step_size}",
            field="n_shares",
        )

    records: list[FundingPaymentRecord | LPRecord] = []
    funding_record = settle_funding_payment(user, user.key, market, now)
    if funding_record is not None:
        records.append(funding_record)

    n_shares = standardize_base_asset_amount(n_shares, step_size)
    mint_lp_shares(user.force_get_perp_position_mut(market.market_index), market, n_shares)
    user.last_add_perp_lp_shares_ts = now

    records.append(
        _lp_record(
            LP_ACTION_ADD, user.key, market.market_index, n_shares, PositionDelta(0, 0), 0, now
        )
    )
    return records


def remove_perp_lp_shares(
    user: User,
    market: PerpMarket,
    n_shares: int,
    oracle_price: int,
    now: int,
    lp_cooldown_time: int,
) -> list[FundingPaymentRecord | LPRecord]:
    """Burn ``n_shares`` of the user's shares in ``market`` (rounded down to the order step,
    unless they are all of the position's shares); the records (none when that rounds to 0).

    ``TryingToRemoveLiquidityTooFast`` within ``lp_cooldown_time`` seconds of the user's last
    addition; ``UserHasNoPositionInMarket`` / ``InsufficientLPTokens`` without enough shares.
    The user's funding settles first; ``oracle_price`` prices the remainder charge.
    """
    market_index = market.market_index
    position = user.get_perp_position(market_index)
    if position is None:
        raise ProtocolError(
            ErrorCode.UserHasNoPositionInMarket,
            f"no position in perp market {market_index}",
            field="market_index",
        )
    # all of a position's shares may go even when they are not a step multiple
    if position.lp_shares == n_shares:
        shares_to_burn = n_shares
    else:
        shares_to_burn = standardize_base_asset_amount(n_shares, market.amm.order_step_size)
    if shares_to_burn == 0:
        return []

    time_since_last_add_liquidity = now - user.last_add_perp_lp_shares_ts
    if time_since_last_add_liquidity < lp_cooldown_time:
        raise ProtocolError(
            ErrorCode.TryingToRemoveLiquidityTooFast,
            f"{time_since_last_add_liquidity}s since the last addition < {lp_cooldown_time}s",
            field="n_shares",
        )

    records: list[FundingPaymentRecord | LPRecord] = []
    funding_record = settle_funding_payment(user, user.key, market, now)
    if funding_record is not None:
        records.append(funding_record)

    if position.lp_shares < shares_to_burn:
        raise ProtocolError(
            ErrorCode.InsufficientLPTokens,
            f"position holds {position.lp_shares} shares < {shares_to_burn}",
            field="n_shares",
        )
    position_delta, pnl = burn_lp_shares(position, market, shares_to_burn, oracle_price)
    records.append(
        _lp_record(
            LP_ACTION_REMOVE, user.key, market_index, shares_to_burn, position_delta, pnl, now
        )
    )
    user.prune_perp_position(market_index)
    return records
