"""Funding-rate math (the program's ``math/funding.rs``, with the fee-pool bounds from
``math/repeg.rs``, the funding clamp from ``PerpMarket`` and the schedule from
``math/helpers.rs``).

Units: funding rates FUNDING_RATE_PRECISION (1e9) per base unit (PRICE_PRECISION times
FUNDING_RATE_BUFFER), base amounts BASE_PRECISION (1e9), payments and fees QUOTE_PRECISION (1e6),
prices PRICE_PRECISION, times unix seconds.

Sign convention: a positive funding rate means longs pay shorts. A payment is what the holder
*receives* (negative: pays).

Rounding, as the program: a funding payment's magnitude is ``|rate delta| * |base| / 1e6 /
1e3`` truncated, then divided by AMM_TO_QUOTE_PRECISION_RATIO (1e3) with truncation toward
zero, so both payers and receivers are rounded toward zero (a payer pays up to one quote unit
less; the program does not use a floor here). A capped funding rate derived from a pnl limit
moves a negative limit one unit toward zero before dividing, also truncating.

The per-side split exists because the AMM may hold the other side of users' net position: when
users on net *receive* funding, the market's fee pool pays it, at most a third of the pool
(above the half of exchange fees the market must keep) per period; the receiving side's rate is
then capped so the pool plus what the paying side pays covers it.
"""

from __future__ import annotations

from protocol.constants import (
    AMM_TO_QUOTE_PRECISION_RATIO,
    FUNDING_RATE_BUFFER,
    PRICE_PRECISION,
    QUOTE_TO_BASE_AMT_FUNDING_PRECISION,
    SHARE_OF_FEES_ALLOCATED_TO_DRIFT_DENOMINATOR,
    SHARE_OF_FEES_ALLOCATED_TO_DRIFT_NUMERATOR,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.numeric import I128_MAX, cast_i64, div_trunc, unsigned_abs
from protocol.state.perp_market import PerpMarket
from protocol.state.user import PerpPosition
from protocol.types import ContractTier

# --- fee pool (math/repeg.rs) --------------------------------------------------------------


def get_total_fee_lower_bound(market: PerpMarket) -> int:
    """The part of exchange fees the market keeps: funding and curve costs never dip below it."""
    return div_trunc(
        market.amm.total_exchange_fee * SHARE_OF_FEES_ALLOCATED_TO_DRIFT_NUMERATOR,
        SHARE_OF_FEES_ALLOCATED_TO_DRIFT_DENOMINATOR,
    )


def calculate_fee_pool(market: PerpMarket) -> int:
    """Fees above the lower bound (plus liquidation fees, minus fees withdrawn) that funding may
    spend (QUOTE_PRECISION, >= 0)."""
    bound = get_total_fee_lower_bound(market) + market.amm.total_liquidation_fee
    if bound < market.amm.total_fee_withdrawn:
        # an unsigned subtraction in the program
        raise MathError("total_fee_withdrawn exceeds the fee lower bound")
    total_fee_minus_distributions_lower_bound = bound - market.amm.total_fee_withdrawn
    if total_fee_minus_distributions_lower_bound > I128_MAX:
        total_fee_minus_distributions_lower_bound = 0  # the program's failed cast falls back to 0
    if market.amm.total_fee_minus_distributions > total_fee_minus_distributions_lower_bound:
        return market.amm.total_fee_minus_distributions - total_fee_minus_distributions_lower_bound
    return 0


# --- funding payments -----------------------------------------------------------------------


def _calculate_funding_payment(funding_rate_delta: int, base_asset_amount: int) -> int:
    """The payment for ``base_asset_amount`` over a rate change, in AMM_RESERVE precision (1e9
    quote units per quote unit x 1e3): magnitude truncated, then signed (longs pay when the
    rate rose)."""
    funding_rate_delta_sign = 1 if funding_rate_delta > 0 else -1
    magnitude = div_trunc(
        div_trunc(
            unsigned_abs(funding_rate_delta) * unsigned_abs(base_asset_amount), PRICE_PRECISION
        ),
        FUNDING_RATE_BUFFER,
    )
    funding_rate_payment_sign = -1 if base_asset_amount > 0 else 1
    return magnitude * funding_rate_payment_sign * funding_rate_delta_sign


def calculate_funding_payment_in_quote_precision(
    funding_rate_delta: int, base_asset_amount: int
) -> int:
    """What ``base_asset_amount`` receives over ``funding_rate_delta`` (QUOTE_PRECISION),
    truncated toward zero."""
    funding_payment = _calculate_funding_payment(funding_rate_delta, base_asset_amount)
    return div_trunc(funding_payment, AMM_TO_QUOTE_PRECISION_RATIO)


def calculate_funding_payment(
    amm_cumulative_funding_rate: int, market_position: PerpPosition
) -> int:
    """What the position receives for the funding accrued since it last settled
    (QUOTE_PRECISION, an i64), truncated toward zero."""
    funding_rate_delta = amm_cumulative_funding_rate - market_position.last_cumulative_funding_rate
    if funding_rate_delta == 0:
        return 0
    return cast_i64(
        div_trunc(
            _calculate_funding_payment(funding_rate_delta, market_position.base_asset_amount),
            AMM_TO_QUOTE_PRECISION_RATIO,
        )
    )


# --- long/short rates --------------------------------------------------------------------------


def calculate_funding_rate_from_pnl_limit(pnl_limit: int, base_asset_amount: int) -> int:
    """The rate at which ``base_asset_amount`` receives exactly ``pnl_limit`` (QUOTE) of funding."""
    if base_asset_amount == 0:
        return 0
    # a negative limit is moved one unit toward zero so the capped rate never overshoots it
    pnl_limit_biased = pnl_limit + 1 if pnl_limit < 0 else pnl_limit
    return div_trunc(pnl_limit_biased * QUOTE_TO_BASE_AMT_FUNDING_PRECISION, base_asset_amount)


def calculate_capped_funding_rate(
    market: PerpMarket, uncapped_funding_pnl: int, funding_rate: int
) -> tuple[int, int]:
    """``(capped_funding_rate, capped_funding_pnl)`` for the receiving side when the market
    would pay ``-uncapped_funding_pnl`` (> 0) of funding out of its fee pool.

    The market pays at most a third of its fee pool; if that is not enough, the receiving side's
    rate is set so it receives that third plus what the paying side pays.
    """
    fee_pool = calculate_fee_pool(market)
    funding_rate_pnl_limit = -div_trunc(fee_pool, 3)
    capped_funding_pnl = max(uncapped_funding_pnl, funding_rate_pnl_limit)

    if uncapped_funding_pnl < funding_rate_pnl_limit:
        paying_side = (
            market.amm.base_asset_amount_long
            if funding_rate > 0
            else market.amm.base_asset_amount_short
        )
        funding_payment_from_users = calculate_funding_payment_in_quote_precision(
            funding_rate, paying_side
        )
        funding_rate_pnl_limit -= abs(funding_payment_from_users)
        if funding_rate < 0:  # longs receive
            capped_funding_rate = calculate_funding_rate_from_pnl_limit(
                funding_rate_pnl_limit, market.amm.base_asset_amount_long
            )
        else:  # shorts receive
            capped_funding_rate = calculate_funding_rate_from_pnl_limit(
                funding_rate_pnl_limit, market.amm.base_asset_amount_short
            )
    else:
        capped_funding_rate = funding_rate
    return capped_funding_rate, capped_funding_pnl


def calculate_funding_rate_long_short(
    market: PerpMarket, funding_rate: int
) -> tuple[int, int, int]:
    """``(funding_rate_long, funding_rate_short, uncapped_funding_pnl)``.

    Books the market's side of the funding into ``total_fee_minus_distributions`` and
    ``net_revenue_since_last_funding``. If users' net position pays, the market receives the
    whole amount and both sides get ``funding_rate``. Otherwise the market pays at most what
    :func:`calculate_capped_funding_rate` allows and only the receiving side's rate is capped;
    paying past the fee lower bound raises ``InvalidFundingProfitability``.
    """
    amm = market.amm
    net_market_position_funding_payment = calculate_funding_payment_in_quote_precision(
        funding_rate, amm.base_asset_amount_with_amm
    )
    uncapped_funding_pnl = -net_market_position_funding_payment

    if uncapped_funding_pnl >= 0:
        amm.total_fee_minus_distributions += uncapped_funding_pnl
        amm.net_revenue_since_last_funding += uncapped_funding_pnl
        return funding_rate, funding_rate, uncapped_funding_pnl

    capped_funding_rate, capped_funding_pnl = calculate_capped_funding_rate(
        market, uncapped_funding_pnl, funding_rate
    )
    new_total_fee_minus_distributions = amm.total_fee_minus_distributions + capped_funding_pnl

    if capped_funding_pnl != 0:
        lower_bound = get_total_fee_lower_bound(market)
        if new_total_fee_minus_distributions < lower_bound:
            raise ProtocolError(
                ErrorCode.InvalidFundingProfitability,
                f"new_total_fee_minus_distributions={new_total_fee_minus_distributions}"
                f" < total_fee_minus_distributions_lower_bound={lower_bound}",
            )
    amm.total_fee_minus_distributions = new_total_fee_minus_distributions
    amm.net_revenue_since_last_funding -= unsigned_abs(capped_funding_pnl)

    funding_rate_long = capped_funding_rate if funding_rate < 0 else funding_rate
    funding_rate_short = capped_funding_rate if funding_rate > 0 else funding_rate
    return funding_rate_long, funding_rate_short, uncapped_funding_pnl


# --- schedule and clamps ---------------------------------------------------------------------


def get_max_price_divergence_for_funding_rate(market: PerpMarket, oracle_price_twap: int) -> int:
    """``PerpMarket::get_max_price_divergence_for_funding_rate``: the largest mark/oracle TWAP
    gap funding pays on (PRICE_PRECISION): 1/33 (~3%) of the oracle TWAP for tiers A and B,
    1/20 for C, 1/10 below, truncated."""
    if market.contract_tier <= ContractTier.B:
        return div_trunc(oracle_price_twap, 33)
    if market.contract_tier <= ContractTier.C:
        return div_trunc(oracle_price_twap, 20)
    return div_trunc(oracle_price_twap, 10)


def on_the_hour_update(now: int, last_update_ts: int, update_period: int) -> int:
    """Seconds until the next update is allowed (0: now) (``math/helpers.rs``).

    Updates land on multiples of ``update_period``. If the last one was late by at most a third
    of a period, the next is due at the following boundary; if later than that, the boundary
    after, so two updates are never squeezed into less than two-thirds of a period.
    """
    time_since_last_update = now - last_update_ts
    next_update_wait = update_period
    if update_period > 1:
        # Python's % with a positive divisor is Rust's rem_euclid (never negative)
        last_update_delay = last_update_ts % update_period
        if last_update_delay != 0:
            max_delay_for_next_period = div_trunc(update_period, 3)
            two_funding_periods = update_period * 2
            if last_update_delay > max_delay_for_next_period:
                next_update_wait = two_funding_periods - last_update_delay
            else:
                next_update_wait = update_period - last_update_delay
            if next_update_wait > two_funding_periods:
                next_update_wait -= update_period
    return max(next_update_wait - time_since_last_update, 0)
