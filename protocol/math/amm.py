"""The virtual AMM's price math (the program's ``math/amm.rs``).

Units: reserves AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION (1e6), prices PRICE_PRECISION.
"""

from __future__ import annotations

from enum import IntEnum

from protocol.constants import (
    BID_ASK_SPREAD_PRECISION,
    DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR,
    FIVE_MINUTE,
    ONE_HOUR,
    ONE_MINUTE,
    PERCENTAGE_PRECISION,
    PRICE_TO_PEG_PRECISION_RATIO,
)
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.stats import (
    calculate_new_twap,
    calculate_rolling_sum,
    calculate_weighted_average,
)
from protocol.numeric import cast_i64, cast_u64, cast_u128, clamp, div_trunc, sign, unsigned_abs
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import PriceDivergenceGuardRails
from protocol.types import ContractTier, PositionDirection


def calculate_price(quote_asset_reserve: int, base_asset_reserve: int, peg_multiplier: int) -> int:
    """Reserve price: ``quote_reserve * peg / base_reserve`` (PRICE_PRECISION), truncated."""
    peg_quote_asset_amount = quote_asset_reserve * peg_multiplier
    return cast_u64(
        div_trunc(peg_quote_asset_amount * PRICE_TO_PEG_PRECISION_RATIO, base_asset_reserve)
    )


def sanitize_new_price(
    new_price: int, last_price_twap: int, sanitize_clamp_denominator: int | None
) -> int:
    """Clamp an oracle update to ``last_price_twap +/- last_price_twap / denominator`` before it
    enters a TWAP (``None`` = ``DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR``; 0 or a zero
    TWAP = no clamp), so one outlying print cannot drag the TWAP far."""
    if last_price_twap == 0:
        return new_price
    denominator = (
        DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR
        if sanitize_clamp_denominator is None
        else sanitize_clamp_denominator
    )
    if denominator == 0:
        return new_price
    band = div_trunc(last_price_twap, denominator)
    if abs(new_price - last_price_twap) > abs(band):
        return last_price_twap + band if new_price > last_price_twap else last_price_twap - band
    return new_price


# =============================================================================================
# Oracle and mark TWAPs
#
# The program's ``math/amm.rs`` TWAP functions and the AMM accessors they use (``AMM::
# reserve_price``, ``bid_price``, ``ask_price``, ``get_new_oracle_conf_pct``), as free functions
# taking the AMM first. A perp market keeps two pairs of averages (PRICE_PRECISION, ``*_ts`` unix
# seconds):
#
# * oracle: ``historical_oracle_data.last_oracle_price_twap`` over ``funding_period`` and
#   ``last_oracle_price_twap_5min`` over five minutes, fed with the oracle price normalised
#   toward the reserve price by its confidence and clamped to a band around the current TWAP;
# * mark: ``last_bid_price_twap`` / ``last_ask_price_twap`` over ``funding_period`` (their mid is
#   ``last_mark_price_twap``) and ``last_mark_price_twap_5min``, fed with a bid/ask pair.
#
# When one side has gone without updates (an invalid oracle, no trades) for longer than the
# other, the stale side is first pulled toward the other side's TWAP, as the program does.
#
# Deviations: the program feeds the oracle TWAP from ``MMOraclePriceData`` (a market maker's
# price with the exchange oracle as fallback); markets here have no market-maker oracle, which
# is the program's behaviour when none is set, so the exchange :class:`OraclePriceData` is
# passed directly. ``AMM.reference_price_offset`` does not exist here (it is 0).
# =============================================================================================


class TwapPeriod(IntEnum):
    FundingPeriod = 0
    FiveMin = 1


def reserve_price(amm: AMM) -> int:
    """``AMM::reserve_price``: the curve's price (PRICE_PRECISION)."""
    return calculate_price(amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier)


def bid_price(amm: AMM, reserve_price: int) -> int:
    """``AMM::bid_price``: ``reserve_price * (1 - short_spread)``, truncated."""
    multiplier = BID_ASK_SPREAD_PRECISION - amm.short_spread
    return cast_u64(div_trunc(reserve_price * cast_u128(multiplier), BID_ASK_SPREAD_PRECISION))


def ask_price(amm: AMM, reserve_price: int) -> int:
    """``AMM::ask_price``: ``reserve_price * (1 + long_spread)``, truncated."""
    multiplier = BID_ASK_SPREAD_PRECISION + amm.long_spread
    return cast_u64(div_trunc(reserve_price * cast_u128(multiplier), BID_ASK_SPREAD_PRECISION))


def bid_ask_price(amm: AMM, reserve_price: int) -> tuple[int, int]:
    return bid_price(amm, reserve_price), ask_price(amm, reserve_price)


def get_sanitize_clamp_denominator(market: PerpMarket) -> int | None:
    """``PerpMarket::get_sanitize_clamp_denominator``: how far (1/n of the TWAP) one update may
    move the TWAPs, by contract tier. ``None`` means the default band,
    ``DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR``."""
    return {
        ContractTier.A: 10,  # 10%
        ContractTier.B: 5,  # 20%
        ContractTier.C: 2,  # 50%
    }.get(market.contract_tier)


def normalise_oracle_price(
    amm: AMM, oracle_price_data: OraclePriceData, precomputed_reserve_price: int | None = None
) -> int:
    """Move the oracle price toward the reserve price by at most its confidence, but never
    past 2.5 bps short of the reserve price (keeps funding sane while the oracle is noisy)."""
    oracle_price = oracle_price_data.price
    reserve = cast_i64(
        reserve_price(amm) if precomputed_reserve_price is None else precomputed_reserve_price
    )
    reserve_price_2p5_bps = div_trunc(reserve, 4000)
    conf_int = cast_i64(oracle_price_data.confidence)
    if reserve > oracle_price:
        return min(max(reserve - reserve_price_2p5_bps, oracle_price), oracle_price + conf_int)
    return max(min(reserve + reserve_price_2p5_bps, oracle_price), oracle_price - conf_int)


def calculate_oracle_reserve_price_spread(
    amm: AMM, oracle_price_data: OraclePriceData, precomputed_reserve_price: int | None = None
) -> tuple[int, int]:
    """``(oracle_price, reserve_price - oracle_price)``."""
    reserve = cast_i64(
        reserve_price(amm) if precomputed_reserve_price is None else precomputed_reserve_price
    )
    oracle_price = oracle_price_data.price
    return oracle_price, reserve - oracle_price


def calculate_oracle_reserve_price_spread_pct(
    amm: AMM, oracle_price_data: OraclePriceData, precomputed_reserve_price: int | None = None
) -> int:
    """``(reserve - oracle) / reserve`` in BID_ASK_SPREAD_PRECISION, truncated toward zero."""
    reserve = reserve_price(amm) if precomputed_reserve_price is None else precomputed_reserve_price
    _, price_spread = calculate_oracle_reserve_price_spread(amm, oracle_price_data, reserve)
    return cast_i64(div_trunc(price_spread * BID_ASK_SPREAD_PRECISION, reserve))


def calculate_oracle_twap_5min_price_spread_pct(amm: AMM, other_price: int) -> int:
    """``(other - oracle_twap_5min) / other`` in BID_ASK_SPREAD_PRECISION, truncated."""
    price_spread = cast_i64(other_price) - amm.historical_oracle_data.last_oracle_price_twap_5min
    return cast_i64(div_trunc(price_spread * BID_ASK_SPREAD_PRECISION, other_price))


def is_oracle_mark_too_divergent(
    price_spread_pct: int, oracle_guard_rails: PriceDivergenceGuardRails
) -> bool:
    """The guard rail is floored at 10%: a tighter configured value is not applied."""
    max_divergence = max(
        oracle_guard_rails.mark_oracle_percent_divergence, PERCENTAGE_PRECISION // 10
    )
    return unsigned_abs(price_spread_pct) > max_divergence


def get_new_oracle_conf_pct(amm: AMM, confidence: int, reserve_price: int, now: int) -> int:
    """``AMM::get_new_oracle_conf_pct``: the confidence as a share of the reserve price
    (BID_ASK_SPREAD_PRECISION), floored by the previous value decayed by 1/(21 - seconds
    elapsed) (at least 1/5) so a single tight print cannot collapse it."""
    upper_bound_divisor = 21
    lower_bound_divisor = 5
    since_last = max(now - amm.historical_oracle_data.last_oracle_price_twap_ts, 0)
    if since_last > 0:
        saturated_divisor = max(upper_bound_divisor - cast_u64(since_last), 0)
        confidence_divisor = max(saturated_divisor, lower_bound_divisor)
        confidence_lower_bound = amm.last_oracle_conf_pct - div_trunc(
            amm.last_oracle_conf_pct, confidence_divisor
        )
    else:
        confidence_lower_bound = amm.last_oracle_conf_pct
    return max(
        div_trunc(confidence * BID_ASK_SPREAD_PRECISION, reserve_price), confidence_lower_bound
    )


def update_amm_mark_std(amm: AMM, now: int, price: int, ewma: int, ewma_5min: int) -> bool:
    """``mark_std`` := the larger distance of ``price`` from the two mark TWAPs.

    The rolling sum's decay weight is ``max(ONE_HOUR, since_last)`` over ONE_HOUR, which keeps
    nothing of the previous value: the program's formula, mirrored as written.
    """
    since_last = max(1, now - amm.last_mark_price_twap_ts)
    price_change_abs = max(
        unsigned_abs(cast_i64(price) - cast_i64(ewma)),
        unsigned_abs(cast_i64(price) - cast_i64(ewma_5min)),
    )
    amm.mark_std = calculate_rolling_sum(
        amm.mark_std, price_change_abs, max(ONE_HOUR, since_last), ONE_HOUR
    )
    return True


def update_amm_oracle_std(amm: AMM, now: int, price: int, ewma: int, ewma_5min: int) -> bool:
    """``oracle_std``, as :func:`update_amm_mark_std` for the oracle TWAPs."""
    since_last = max(1, now - amm.historical_oracle_data.last_oracle_price_twap_ts)
    price_change_abs = max(
        abs(cast_i64(price) - cast_i64(ewma)), abs(cast_i64(price) - cast_i64(ewma_5min))
    )
    amm.oracle_std = calculate_rolling_sum(
        amm.oracle_std, price_change_abs, max(ONE_HOUR, since_last), ONE_HOUR
    )
    return True


def calculate_new_oracle_price_twap(
    amm: AMM, now: int, oracle_price: int, twap_period: TwapPeriod
) -> int:
    """The oracle TWAP over ``twap_period`` after folding in ``oracle_price`` at ``now``.

    If the mark TWAP was updated after the oracle TWAP (the oracle was invalid meanwhile), the
    new observation is first blended with the mark TWAP for the time the oracle missed.
    """
    hod = amm.historical_oracle_data
    if twap_period is TwapPeriod.FundingPeriod:
        last_mark_twap, last_oracle_twap = amm.last_mark_price_twap, hod.last_oracle_price_twap
        period = amm.funding_period
    else:
        last_mark_twap = amm.last_mark_price_twap_5min
        last_oracle_twap = hod.last_oracle_price_twap_5min
        period = FIVE_MINUTE

    since_last = max(1 if period == 0 else 0, now - hod.last_oracle_price_twap_ts)
    from_start = max(0, period - since_last)

    if amm.last_mark_price_twap_ts > hod.last_oracle_price_twap_ts:
        since_last_valid = amm.last_mark_price_twap_ts - hod.last_oracle_price_twap_ts
        from_start_valid = max(1, period - since_last_valid)
        interpolated_oracle_price = calculate_weighted_average(
            cast_i64(last_mark_twap), oracle_price, since_last_valid, from_start_valid
        )
    else:
        interpolated_oracle_price = oracle_price

    return calculate_weighted_average(
        interpolated_oracle_price, cast_i64(last_oracle_twap), since_last, from_start
    )


def update_oracle_price_twap(
    amm: AMM,
    now: int,
    oracle_price_data: OraclePriceData,
    precomputed_reserve_price: int | None = None,
    sanitize_clamp: int | None = None,
) -> int:
    """Fold an oracle reading into both oracle TWAPs and the AMM's oracle statistics; returns
    the funding-period TWAP. A non-positive (normalised or clamped) price changes nothing."""
    reserve = reserve_price(amm) if precomputed_reserve_price is None else precomputed_reserve_price
    hod = amm.historical_oracle_data
    oracle_confidence = oracle_price_data.confidence
    oracle_price = normalise_oracle_price(amm, oracle_price_data, reserve)
    capped_oracle_update_price = sanitize_new_price(
        oracle_price, hod.last_oracle_price_twap, sanitize_clamp
    )

    if not (capped_oracle_update_price > 0 and oracle_price > 0):
        return hod.last_oracle_price_twap

    oracle_price_twap = calculate_new_oracle_price_twap(
        amm, now, capped_oracle_update_price, TwapPeriod.FundingPeriod
    )
    oracle_price_twap_5min = calculate_new_oracle_price_twap(
        amm, now, capped_oracle_update_price, TwapPeriod.FiveMin
    )

    amm.last_oracle_normalised_price = capped_oracle_update_price
    hod.last_oracle_price = oracle_price_data.price
    # reads the previous twap timestamp, so it runs before the timestamps move
    amm.last_oracle_conf_pct = get_new_oracle_conf_pct(amm, oracle_confidence, reserve, now)
    hod.last_oracle_delay = oracle_price_data.delay
    amm.last_oracle_reserve_price_spread_pct = calculate_oracle_reserve_price_spread_pct(
        amm, oracle_price_data, reserve
    )
    update_amm_oracle_std(
        amm,
        now,
        cast_u64(oracle_price),
        cast_u64(hod.last_oracle_price_twap),
        cast_u64(hod.last_oracle_price_twap_5min),
    )

    hod.last_oracle_price_twap_5min = oracle_price_twap_5min
    hod.last_oracle_price_twap = oracle_price_twap
    hod.last_oracle_price_twap_ts = now
    return oracle_price_twap


def estimate_best_bid_ask_price(
    amm: AMM, precomputed_trade_price: int | None, direction: PositionDirection | None
) -> tuple[int, int]:
    """Estimate the best bid and ask around a trade at ``precomputed_trade_price`` (default: the
    last oracle price): a trade above the oracle was a buy, so the bid sat at most
    ``min(base_spread, short_spread / 2)`` below the oracle; symmetrically for a sell. The
    estimates never lie outside the AMM's own bid/ask."""
    base_spread_u64 = cast_u64(amm.base_spread)
    last_oracle_price = amm.historical_oracle_data.last_oracle_price
    last_oracle_price_u64 = cast_u64(last_oracle_price)
    trade_price = (
        last_oracle_price_u64 if precomputed_trade_price is None else precomputed_trade_price
    )
    trade_premium = cast_i64(trade_price) - last_oracle_price
    if not last_oracle_price > 0:
        raise ProtocolError(
            ErrorCode.InvalidOracle, "amm.historical_oracle_data.last_oracle_price <= 0"
        )

    amm_bid_price, amm_ask_price = bid_ask_price(amm, reserve_price(amm))

    if trade_premium > 0:  # a buy
        discount = min(base_spread_u64, div_trunc(cast_u64(amm.short_spread), 2))
        discounted = max(last_oracle_price_u64 - min(discount, unsigned_abs(trade_premium)), 0)
        best_bid_estimate = max(discounted, amm.order_tick_size)
    else:
        best_bid_estimate = trade_price
    best_bid_estimate = max(best_bid_estimate, amm_bid_price)

    if trade_premium < 0:  # a sell
        premium = min(base_spread_u64, div_trunc(cast_u64(amm.long_spread), 2))
        best_ask_estimate = last_oracle_price_u64 + min(premium, unsigned_abs(trade_premium))
    else:
        best_ask_estimate = trade_price
    best_ask_estimate = min(best_ask_estimate, amm_ask_price)

    if direction is PositionDirection.Long:
        bid, ask = best_bid_estimate, max(trade_price, best_bid_estimate)
    elif direction is PositionDirection.Short:
        bid, ask = min(trade_price, best_ask_estimate), best_ask_estimate
    else:
        bid = ask = min(max(trade_price, amm_bid_price), amm_ask_price)

    if bid > ask:
        raise ProtocolError(
            ErrorCode.InvalidMarkTwapUpdateDetected,
            f"bid_price({best_bid_estimate}, {bid}) not <= ask_price({ask}, {best_ask_estimate})",
        )
    return bid, ask


def update_mark_twap(
    amm: AMM,
    now: int,
    bid_price: int,
    ask_price: int,
    precomputed_trade_price: int | None = None,
    sanitize_clamp: int | None = None,
) -> int:
    """Fold a best bid/ask pair into the mark TWAPs; returns the new ``last_mark_price_twap``.

    Each side is clamped to a band around its own TWAP first. If the oracle TWAP was updated
    more than ``max(funding_period / 60, ONE_MINUTE)`` after the mark TWAP, the stale bid/ask
    TWAPs are first pulled toward the oracle TWAP for the time they missed.
    """
    bid_price_capped_update = sanitize_new_price(
        cast_i64(bid_price), cast_i64(amm.last_bid_price_twap), sanitize_clamp
    )
    ask_price_capped_update = sanitize_new_price(
        cast_i64(ask_price), cast_i64(amm.last_ask_price_twap), sanitize_clamp
    )
    if bid_price_capped_update > ask_price_capped_update:
        raise ProtocolError(
            ErrorCode.InvalidMarkTwapUpdateDetected,
            "bid_price_capped_update not <= ask_price_capped_update",
        )

    hod = amm.historical_oracle_data
    last_valid_trade_since_oracle_twap_update = (
        hod.last_oracle_price_twap_ts - amm.last_mark_price_twap_ts
    )
    if last_valid_trade_since_oracle_twap_update > max(
        div_trunc(amm.funding_period, 60), ONE_MINUTE
    ):
        from_start_valid = max(0, amm.funding_period - last_valid_trade_since_oracle_twap_update)
        oracle_twap = cast_i64(hod.last_oracle_price_twap)
        last_bid_price_twap = calculate_weighted_average(
            oracle_twap,
            cast_i64(amm.last_bid_price_twap),
            last_valid_trade_since_oracle_twap_update,
            from_start_valid,
            sign(oracle_twap - amm.last_bid_price_twap),
        )
        last_ask_price_twap = calculate_weighted_average(
            oracle_twap,
            cast_i64(amm.last_ask_price_twap),
            last_valid_trade_since_oracle_twap_update,
            from_start_valid,
            sign(oracle_twap - amm.last_ask_price_twap),
        )
    else:
        last_bid_price_twap = cast_i64(amm.last_bid_price_twap)
        last_ask_price_twap = cast_i64(amm.last_ask_price_twap)

    bid_twap = calculate_new_twap(
        bid_price_capped_update,
        now,
        last_bid_price_twap,
        amm.last_mark_price_twap_ts,
        amm.funding_period,
    )
    amm.last_bid_price_twap = cast_u64(bid_twap)
    ask_twap = calculate_new_twap(
        ask_price_capped_update,
        now,
        last_ask_price_twap,
        amm.last_mark_price_twap_ts,
        amm.funding_period,
    )
    amm.last_ask_price_twap = cast_u64(ask_twap)

    mid_twap = div_trunc(bid_twap + ask_twap, 2)

    trade_price = (
        div_trunc(bid_price + ask_price, 2)
        if precomputed_trade_price is None
        else precomputed_trade_price
    )
    # measured against the TWAPs before this update, and before the timestamp moves
    update_amm_mark_std(
        amm, now, trade_price, amm.last_mark_price_twap, amm.last_mark_price_twap_5min
    )

    amm.last_mark_price_twap = cast_u64(mid_twap)
    amm.last_mark_price_twap_5min = cast_u64(
        calculate_new_twap(
            div_trunc(bid_price_capped_update + ask_price_capped_update, 2),
            now,
            cast_i64(amm.last_mark_price_twap_5min),
            amm.last_mark_price_twap_ts,
            FIVE_MINUTE,
        )
    )
    amm.last_mark_price_twap_ts = now
    return cast_u64(mid_twap)


def update_mark_twap_from_estimates(
    amm: AMM,
    now: int,
    precomputed_trade_price: int | None,
    direction: PositionDirection | None,
    sanitize_clamp: int | None = None,
) -> int:
    """Update the mark TWAPs from a trade price: the bid/ask pair is estimated around it
    (:func:`estimate_best_bid_ask_price`)."""
    bid, ask = estimate_best_bid_ask_price(amm, precomputed_trade_price, direction)
    return update_mark_twap(amm, now, bid, ask, precomputed_trade_price, sanitize_clamp)


def update_mark_twap_crank(
    amm: AMM,
    now: int,
    oracle_price_data: OraclePriceData,
    best_dlob_bid_price: int | None,
    best_dlob_ask_price: int | None,
    sanitize_clamp: int | None = None,
) -> None:
    """Update the mark TWAPs from the best of the order book's and the AMM's bid and ask.

    A crossed pair collapses to one side: to the ask if the bid is at or above the oracle price
    plus the market's basis (the 5-minute mark/oracle TWAP gap, capped at 1% of the oracle),
    else to the bid.
    """
    amm_bid_price, amm_ask_price = bid_ask_price(amm, reserve_price(amm))
    best_bid_price = (
        amm_bid_price if best_dlob_bid_price is None else max(best_dlob_bid_price, amm_bid_price)
    )
    best_ask_price = (
        amm_ask_price if best_dlob_ask_price is None else min(best_dlob_ask_price, amm_ask_price)
    )
    if best_bid_price > best_ask_price:
        oracle_price = oracle_price_data.price
        market_basis = clamp(
            cast_i64(amm.last_mark_price_twap_5min)
            - amm.historical_oracle_data.last_oracle_price_twap_5min,
            div_trunc(-oracle_price, 100),
            div_trunc(oracle_price, 100),
        )
        if best_bid_price >= cast_u64(oracle_price + market_basis):
            best_bid_price = best_ask_price
        else:
            best_ask_price = best_bid_price
    update_mark_twap(amm, now, best_bid_price, best_ask_price, None, sanitize_clamp)
