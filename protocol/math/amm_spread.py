"""The AMM's spread model (the program's ``math/amm_spread.rs``) and the spread update that
stores its result (the program's ``controller::amm::update_spreads`` /
``update_spread_reserves``).

Units: spreads and percentages BID_ASK_SPREAD_PRECISION = PERCENTAGE_PRECISION (1e6, so
1_000 is 10 bps); reserves AMM_RESERVE_PRECISION (1e9); prices PRICE_PRECISION; quote amounts
QUOTE_PRECISION; base amounts BASE_PRECISION.

The long spread widens the ask, the short spread lowers the bid. :func:`calculate_spread`
starts from half the base spread (or the volatility term, whichever is larger) on each side,
then widens:

* toward the oracle: if the reserve price sits below the oracle, longs pay the gap (and
  symmetrically);
* with inventory: the side that would grow the AMM's position is scaled by how much of the
  curve's liquidity that position already uses (:func:`calculate_spread_inventory_scale`), and
  by the market's effective leverage against its fee pool
  (:func:`calculate_spread_leverage_scale`); an empty fee pool multiplies both sides by 10;
* with losses: a funding period losing more than $25 adds a revenue retreat;

and finally caps the pair so ``long + short <= max target spread``
(:func:`cap_to_max_spread`), where the target is the market's ``max_spread`` unless the oracle
gap, confidence or volatility call for more. Invariant: every spread pair returned is within
``[0, max target spread]`` in total.

Spread reserves: each side's quotes come from a shifted curve with the same ``k`` whose quote
reserve is moved by ``quote_reserve * spread / 2`` (:func:`calculate_spread_reserves`), so
swapping against the ask/bid reserves fills at the spread prices.

Deviations:

* :func:`update_spreads` and :func:`update_spread_reserves` live here rather than in a
  controller module: the program's ``math::cp_curve::update_k`` calls them, and keeping them
  beside the math avoids an import cycle. ``protocol.controller.amm`` re-exports them under the
  program's path.
* ``calculate_base_asset_amount_to_trade_to_price`` (the program's ``math/amm_spread.rs``) is in
  :mod:`protocol.math.orders`, which held it first; it reads the same spread reserves as
  :func:`get_spread_reserves`.
* Struct methods are free functions taking the struct first
  (``PerpMarket::get_quote_asset_reserve_prediction_market_bounds``).

Rounding: every division truncates as the program's (signed values through ``div_trunc``);
``saturating_*`` and ``unwrap_or(MAX)`` fallbacks are reproduced where the program has them.
"""

from __future__ import annotations

from protocol.constants import (
    AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO,
    AMM_TO_QUOTE_PRECISION_RATIO,
    BID_ASK_SPREAD_PRECISION,
    DEFAULT_LARGE_BID_ASK_FACTOR,
    DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT,
    FUNDING_RATE_BUFFER,
    FUNDING_RATE_OFFSET_DENOMINATOR,
    MAX_BID_ASK_INVENTORY_SKEW_FACTOR,
    PEG_PRECISION,
    PERCENTAGE_PRECISION,
    PRICE_PRECISION,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import (
    _calculate_market_open_bids_asks,
    get_max_reference_price_offset,
    get_protocol_owned_position,
    get_reference_price_offset_deadband_pct,
)
from protocol.numeric import (
    I128_MAX,
    U32_MAX,
    U64_MAX,
    cast_i32,
    cast_u32,
    cast_u64,
    cast_u128,
    clamp,
    div_trunc,
    safe_div_ceil,
    sign,
    sqrt,
    unsigned_abs,
)
from protocol.state.perp_market import AMM, PerpMarket
from protocol.types import ContractType, PositionDirection


def _saturating_sub(a: int, b: int) -> int:
    return max(a - b, 0)


def cap_to_max_spread(long_spread: int, short_spread: int, max_spread: int) -> tuple[int, int]:
    """Scale the pair down to ``max_spread`` in total, keeping the wider side's share (rounded
    up, the narrower side gets the rest). ``InvalidAmmMaxSpreadDetected`` if it cannot fit."""
    total_spread = long_spread + short_spread
    if total_spread > max_spread:
        if long_spread > short_spread:
            long_spread = safe_div_ceil(min(long_spread * max_spread, U64_MAX), total_spread)
            short_spread = max_spread - long_spread
        else:
            short_spread = safe_div_ceil(min(short_spread * max_spread, U64_MAX), total_spread)
            long_spread = max_spread - short_spread
        if long_spread < 0 or short_spread < 0:
            raise MathError("spread cap underflow")
    new_total_spread = long_spread + short_spread
    if new_total_spread > max_spread:
        raise ProtocolError(
            ErrorCode.InvalidAmmMaxSpreadDetected,
            f"new_total_spread({new_total_spread}) > max_spread({max_spread})",
        )
    return long_spread, short_spread


def calculate_long_short_vol_spread(
    last_oracle_conf_pct: int,
    reserve_price: int,
    mark_std: int,
    oracle_std: int,
    long_intensity_volume: int,
    short_intensity_volume: int,
    volume_24h: int,
) -> tuple[int, int]:
    """The volatility term per side: the larger of the oracle confidence and a quarter of the
    mean (mark, oracle) standard deviation as a share of price, weighted by that side's share
    of the day's volume (clamped to [1%, 100%]). An oracle confidence below 25 bps counts at a
    twentieth."""
    market_avg_std_pct = div_trunc(
        div_trunc((oracle_std + mark_std) * PERCENTAGE_PRECISION, reserve_price), 2
    )
    vol_spread = max(last_oracle_conf_pct, div_trunc(market_avg_std_pct, 4))

    factor_clamp_min = PERCENTAGE_PRECISION // 100
    factor_clamp_max = PERCENTAGE_PRECISION
    long_vol_spread_factor = clamp(
        div_trunc(long_intensity_volume * PERCENTAGE_PRECISION, max(volume_24h, 1)),
        factor_clamp_min,
        factor_clamp_max,
    )
    short_vol_spread_factor = clamp(
        div_trunc(short_intensity_volume * PERCENTAGE_PRECISION, max(volume_24h, 1)),
        factor_clamp_min,
        factor_clamp_max,
    )

    if last_oracle_conf_pct > PERCENTAGE_PRECISION // 400:
        conf_component = last_oracle_conf_pct
    else:
        conf_component = div_trunc(last_oracle_conf_pct, 20)

    return (
        max(
            conf_component,
            cast_u64(div_trunc(vol_spread * long_vol_spread_factor, PERCENTAGE_PRECISION)),
        ),
        max(
            conf_component,
            cast_u64(div_trunc(vol_spread * short_vol_spread_factor, PERCENTAGE_PRECISION)),
        ),
    )


def calculate_inventory_liquidity_ratio(
    base_asset_amount_with_amm: int,
    base_asset_reserve: int,
    min_base_asset_reserve: int,
    max_base_asset_reserve: int,
) -> int:
    """``min(1, |net position| / smaller side's open liquidity)`` (PERCENTAGE_PRECISION)."""
    max_bids, max_asks = _calculate_market_open_bids_asks(
        base_asset_reserve, min_base_asset_reserve, max_base_asset_reserve
    )
    min_side_liquidity = min(max_bids, abs(max_asks))
    if abs(base_asset_amount_with_amm) < min_side_liquidity:
        scaled = min(abs(base_asset_amount_with_amm) * PERCENTAGE_PRECISION, I128_MAX)
        return min(div_trunc(scaled, max(min_side_liquidity, 1)), PERCENTAGE_PRECISION)
    return PERCENTAGE_PRECISION


def calculate_inventory_liquidity_ratio_for_reference_price_offset(
    base_asset_amount_with_amm: int,
    base_asset_reserve: int,
    min_base_asset_reserve: int,
    max_base_asset_reserve: int,
) -> int:
    """As :func:`calculate_inventory_liquidity_ratio`, against the mean of both sides'
    open liquidity."""
    max_bids, max_asks = _calculate_market_open_bids_asks(
        base_asset_reserve, min_base_asset_reserve, max_base_asset_reserve
    )
    avg_liquidity = div_trunc(max_bids + abs(max_asks), 2)
    if abs(base_asset_amount_with_amm) < avg_liquidity:
        scaled = min(abs(base_asset_amount_with_amm) * PERCENTAGE_PRECISION, I128_MAX)
        return min(div_trunc(scaled, max(avg_liquidity, 1)), PERCENTAGE_PRECISION)
    return PERCENTAGE_PRECISION


def calculate_spread_inventory_scale(
    base_asset_amount_with_amm: int,
    base_asset_reserve: int,
    min_base_asset_reserve: int,
    max_base_asset_reserve: int,
    directional_spread: int,
    max_spread: int,
) -> int:
    """Multiplier (BID_ASK_SPREAD_PRECISION, >= 1x) for the side that would grow the AMM's
    position: ``1 + scale_max * inventory_ratio``, at most ``scale_max``, where ``scale_max``
    is the larger of 10x and what takes ``directional_spread`` to ``max_spread``."""
    if base_asset_amount_with_amm == 0:
        return BID_ASK_SPREAD_PRECISION
    amm_inventory_pct = calculate_inventory_liquidity_ratio(
        base_asset_amount_with_amm,
        base_asset_reserve,
        min_base_asset_reserve,
        max_base_asset_reserve,
    )
    inventory_scale_max = max(
        MAX_BID_ASK_INVENTORY_SKEW_FACTOR,
        div_trunc(cast_u64(max_spread * BID_ASK_SPREAD_PRECISION), max(directional_spread, 1)),
    )
    # the program saturates both the product and the sum at u64::MAX
    scaled = min(inventory_scale_max * cast_u64(unsigned_abs(amm_inventory_pct)), U64_MAX)
    scale = min(BID_ASK_SPREAD_PRECISION + div_trunc(scaled, PERCENTAGE_PRECISION), U64_MAX)
    return min(inventory_scale_max, scale)


def calculate_spread_leverage_scale(
    quote_asset_reserve: int,
    terminal_quote_asset_reserve: int,
    peg_multiplier: int,
    base_asset_amount_with_amm: int,
    reserve_price: int,
    total_fee_minus_distributions: int,
) -> int:
    """Multiplier (BID_ASK_SPREAD_PRECISION) from the AMM's effective leverage: the value of
    its position at the reserve price beyond what the curve would pay to close it, over the
    fee pool (``total_fee_minus_distributions``). ``1x + leverage + 1``, at most 10x."""
    net_base_asset_value = div_trunc(
        (quote_asset_reserve - terminal_quote_asset_reserve) * peg_multiplier,
        AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO,
    )
    local_base_asset_value = div_trunc(
        base_asset_amount_with_amm * reserve_price,
        AMM_TO_QUOTE_PRECISION_RATIO * PRICE_PRECISION,
    )
    effective_leverage = div_trunc(
        max(0, local_base_asset_value - net_base_asset_value) * BID_ASK_SPREAD_PRECISION,
        max(0, total_fee_minus_distributions) + 1,
    )
    return min(
        MAX_BID_ASK_INVENTORY_SKEW_FACTOR,
        BID_ASK_SPREAD_PRECISION + cast_u64(max(0, effective_leverage)) + 1,
    )


def calculate_spread_revenue_retreat_amount(
    base_spread: int, max_spread: int, net_revenue_since_last_funding: int
) -> int:
    """Extra spread once this funding period lost more than $25: the base spread per $25 lost,
    at most a tenth of ``max_spread`` (which applies outright past a $25,000 loss)."""
    if net_revenue_since_last_funding >= DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT:
        return 0
    max_retreat = div_trunc(max_spread, 10)
    if net_revenue_since_last_funding >= DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT * 1000:
        return min(
            max_retreat,
            div_trunc(
                base_spread * unsigned_abs(net_revenue_since_last_funding),
                unsigned_abs(DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT),
            ),
        )
    return max_retreat


def calculate_max_target_spread(
    reserve_price: int,
    last_oracle_reserve_price_spread_pct: int,
    last_oracle_conf_pct: int,
    mark_std: int,
    oracle_std: int,
    max_spread: int,
) -> int:
    """The cap on ``long + short``: ``max_spread``, or more when the oracle gap, twice the
    oracle confidence or the price volatility (at most 100%) is wider."""
    max_spread_baseline = max(
        unsigned_abs(last_oracle_reserve_price_spread_pct),
        min(
            max(
                last_oracle_conf_pct * 2,
                div_trunc(max(mark_std, oracle_std) * PERCENTAGE_PRECISION, reserve_price),
            ),
            BID_ASK_SPREAD_PRECISION,
        ),
    )
    return max(max_spread, max_spread_baseline)


def _apply_percent_adjustment(spread: int, adjustment: int) -> int:
    # shrink by floor(n%) or widen by ceil(n%), never below 1 (u64 saturating arithmetic)
    if adjustment < 0:
        cut = div_trunc(min(spread * -adjustment, U64_MAX), 100)
        return max(_saturating_sub(spread, cut), 1)
    add = safe_div_ceil(min(spread * adjustment, U64_MAX), 100)
    return max(min(spread + add, U64_MAX), 1)


def calculate_spread(
    base_spread: int,
    last_oracle_reserve_price_spread_pct: int,
    last_oracle_conf_pct: int,
    max_spread: int,
    quote_asset_reserve: int,
    terminal_quote_asset_reserve: int,
    peg_multiplier: int,
    base_asset_amount_with_amm: int,
    reserve_price: int,
    total_fee_minus_distributions: int,
    net_revenue_since_last_funding: int,
    base_asset_reserve: int,
    min_base_asset_reserve: int,
    max_base_asset_reserve: int,
    mark_std: int,
    oracle_std: int,
    long_intensity_volume: int,
    short_intensity_volume: int,
    volume_24h: int,
    amm_inventory_spread_adjustment: int,
) -> tuple[int, int]:
    """``(long_spread, short_spread)`` (BID_ASK_SPREAD_PRECISION, u32 each); see the module
    docstring for the terms. The total never exceeds :func:`calculate_max_target_spread`."""
    long_vol_spread, short_vol_spread = calculate_long_short_vol_spread(
        last_oracle_conf_pct,
        reserve_price,
        mark_std,
        oracle_std,
        long_intensity_volume,
        short_intensity_volume,
        volume_24h,
    )
    half_base_spread = div_trunc(base_spread, 2)
    long_spread = max(half_base_spread, long_vol_spread)
    short_spread = max(half_base_spread, short_vol_spread)

    max_target_spread = calculate_max_target_spread(
        reserve_price,
        last_oracle_reserve_price_spread_pct,
        last_oracle_conf_pct,
        mark_std,
        oracle_std,
        max_spread,
    )

    # reserve below oracle: a buyer would get a bargain, so the ask retreats by the gap
    if last_oracle_reserve_price_spread_pct < 0:
        long_spread = max(
            long_spread, unsigned_abs(last_oracle_reserve_price_spread_pct) + long_vol_spread
        )
    elif last_oracle_reserve_price_spread_pct > 0:
        short_spread = max(
            short_spread, unsigned_abs(last_oracle_reserve_price_spread_pct) + short_vol_spread
        )

    inventory_scale_capped = calculate_spread_inventory_scale(
        base_asset_amount_with_amm,
        base_asset_reserve,
        min_base_asset_reserve,
        max_base_asset_reserve,
        long_spread if base_asset_amount_with_amm > 0 else short_spread,
        max_target_spread,
    )
    if base_asset_amount_with_amm > 0:
        long_spread = div_trunc(long_spread * inventory_scale_capped, BID_ASK_SPREAD_PRECISION)
    elif base_asset_amount_with_amm < 0:
        short_spread = div_trunc(short_spread * inventory_scale_capped, BID_ASK_SPREAD_PRECISION)

    if total_fee_minus_distributions <= 0:
        long_spread = div_trunc(
            min(long_spread * DEFAULT_LARGE_BID_ASK_FACTOR, U64_MAX), BID_ASK_SPREAD_PRECISION
        )
        short_spread = div_trunc(
            min(short_spread * DEFAULT_LARGE_BID_ASK_FACTOR, U64_MAX), BID_ASK_SPREAD_PRECISION
        )
    else:
        effective_leverage_capped = calculate_spread_leverage_scale(
            quote_asset_reserve,
            terminal_quote_asset_reserve,
            peg_multiplier,
            base_asset_amount_with_amm,
            reserve_price,
            total_fee_minus_distributions,
        )
        if base_asset_amount_with_amm > 0:
            long_spread = div_trunc(
                long_spread * effective_leverage_capped, BID_ASK_SPREAD_PRECISION
            )
        elif base_asset_amount_with_amm < 0:
            short_spread = div_trunc(
                short_spread * effective_leverage_capped, BID_ASK_SPREAD_PRECISION
            )

    revenue_retreat_amount = calculate_spread_revenue_retreat_amount(
        base_spread, max_target_spread, net_revenue_since_last_funding
    )
    if revenue_retreat_amount != 0:
        half_retreat = div_trunc(revenue_retreat_amount, 2)
        if base_asset_amount_with_amm > 0:
            long_spread += revenue_retreat_amount
            short_spread += half_retreat
        elif base_asset_amount_with_amm < 0:
            long_spread += half_retreat
            short_spread += revenue_retreat_amount
        else:
            long_spread += half_retreat
            short_spread += half_retreat

    if amm_inventory_spread_adjustment != 0:
        # the adjusted spread never drops below the unadjusted base/volatility floor
        long_spread = max(
            half_base_spread,
            long_vol_spread,
            _apply_percent_adjustment(long_spread, amm_inventory_spread_adjustment),
        )
        short_spread = max(
            half_base_spread,
            short_vol_spread,
            _apply_percent_adjustment(short_spread, amm_inventory_spread_adjustment),
        )

    long_spread, short_spread = cap_to_max_spread(long_spread, short_spread, max_target_spread)
    return cast_u32(long_spread), cast_u32(short_spread)


# --- spread reserves -------------------------------------------------------------------------


def get_spread_reserves(amm: AMM, direction: PositionDirection) -> tuple[int, int]:
    """The stored ``(base, quote)`` reserves a taker of ``direction`` trades against: the ask
    reserves for a long, the bid reserves for a short."""
    if direction is PositionDirection.Long:
        return amm.ask_base_asset_reserve, amm.ask_quote_asset_reserve
    return amm.bid_base_asset_reserve, amm.bid_quote_asset_reserve


def get_quote_asset_reserve_prediction_market_bounds(
    market: PerpMarket, direction: PositionDirection
) -> tuple[int, int]:
    """``PerpMarket::get_quote_asset_reserve_prediction_market_bounds``: the quote reserve range
    that keeps a prediction market's quotes within $0.05..$1 (ask) or $0..$0.95 (bid)."""
    amm = market.amm
    peg_sqrt = sqrt(amm.peg_multiplier * PEG_PRECISION + 1) + 1
    quote_asset_reserve_lower_bound = 0
    quote_asset_reserve_upper_bound = div_trunc(amm.sqrt_k * peg_sqrt, amm.peg_multiplier)
    if direction is PositionDirection.Long:
        quote_asset_reserve_lower_bound = div_trunc(
            div_trunc(amm.sqrt_k * 22361 * peg_sqrt, 100000), amm.peg_multiplier
        )
    else:
        quote_asset_reserve_upper_bound = div_trunc(
            div_trunc(amm.sqrt_k * 97467 * peg_sqrt, 100000), amm.peg_multiplier
        )
    return quote_asset_reserve_lower_bound, quote_asset_reserve_upper_bound


def calculate_spread_reserves(market: PerpMarket, direction: PositionDirection) -> tuple[int, int]:
    """``(base, quote)`` reserves of the curve quoting ``direction``'s side: the quote reserve
    moved by ``quote_reserve / (1e6 / (spread / 2))`` (up for the ask, down for the bid,
    shifted by the reference price offset), the base reserve ``k / quote``."""
    amm = market.amm
    spread = amm.long_spread if direction is PositionDirection.Long else amm.short_spread
    if direction is PositionDirection.Short:
        spread_with_offset = cast_i32(-cast_i32(spread) + amm.reference_price_offset)
    else:
        spread_with_offset = cast_i32(cast_i32(spread) + amm.reference_price_offset)

    if abs(spread_with_offset) > 1:
        quote_reserve_divisor = div_trunc(
            BID_ASK_SPREAD_PRECISION, div_trunc(spread_with_offset, 2)
        )
        quote_asset_reserve_delta = div_trunc(amm.quote_asset_reserve, quote_reserve_divisor)
    else:
        quote_asset_reserve_delta = 0

    if quote_asset_reserve_delta > 0:
        quote_asset_reserve = cast_u128(amm.quote_asset_reserve + quote_asset_reserve_delta)
    else:
        quote_asset_reserve = amm.quote_asset_reserve - unsigned_abs(quote_asset_reserve_delta)
        if quote_asset_reserve < 0:
            raise MathError("spread quote reserve underflow")

    if market.contract_type is ContractType.Prediction:
        lower, upper = get_quote_asset_reserve_prediction_market_bounds(market, direction)
        quote_asset_reserve = clamp(quote_asset_reserve, lower, upper)

    invariant = amm.sqrt_k * amm.sqrt_k
    base_asset_reserve = cast_u128(div_trunc(invariant, quote_asset_reserve))
    return base_asset_reserve, quote_asset_reserve


def calculate_reference_price_offset(
    reserve_price: int,
    last_24h_avg_funding_rate: int,
    liquidity_fraction: int,
    min_order_size: int,
    oracle_twap_fast: int,
    mark_twap_fast: int,
    oracle_twap_slow: int,
    mark_twap_slow: int,
    max_offset_pct: int,
) -> int:
    """How far (BID_ASK_SPREAD_PRECISION, i32) to move both quotes off the reserve price: the
    mean of the 5-minute, hourly and 24-hour (funding) premia as a share of price, times half
    the signed inventory fraction, applied only when inventory and premium agree in sign,
    within ``+-max_offset_pct``. ``min_order_size`` is unused, as in the program."""
    del min_order_size
    if last_24h_avg_funding_rate == 0 or liquidity_fraction == 0:
        return 0

    max_offset_in_price = div_trunc(max_offset_pct * reserve_price, PERCENTAGE_PRECISION)
    mark_premium_minute = clamp(
        mark_twap_fast - oracle_twap_fast, -max_offset_in_price, max_offset_in_price
    )
    mark_premium_hour = clamp(
        mark_twap_slow - oracle_twap_slow, -max_offset_in_price, max_offset_in_price
    )
    # the 24h average funding rate back in price terms, less the funding offset
    mark_premium_day = clamp(
        div_trunc(last_24h_avg_funding_rate, FUNDING_RATE_BUFFER) * 24
        - div_trunc(abs(oracle_twap_slow), FUNDING_RATE_OFFSET_DENOMINATOR),
        -max_offset_in_price,
        max_offset_in_price,
    )
    mark_premium_avg = div_trunc(mark_premium_minute + mark_premium_hour + mark_premium_day, 3)
    mark_premium_avg_pct = div_trunc(mark_premium_avg * PRICE_PRECISION, reserve_price)

    if (mark_premium_avg_pct >= 0 and liquidity_fraction >= 0) or (
        mark_premium_avg_pct <= 0 and liquidity_fraction <= 0
    ):
        offset_pct = div_trunc(mark_premium_avg_pct * unsigned_abs(liquidity_fraction), 2)
    else:
        offset_pct = 0

    clamped_offset_pct = clamp(offset_pct, -max_offset_pct, max_offset_pct)
    if abs(clamped_offset_pct) > max_offset_pct:
        raise ProtocolError(
            ErrorCode.InvalidAmmDetected, f"clamp offset pct failed {clamped_offset_pct}"
        )
    return cast_i32(clamped_offset_pct)


# --- storing the spreads (the program's controller::amm) -----------------------------------------


def update_spread_reserves(market: PerpMarket) -> None:
    """Store the ask and bid reserves for the current spreads. Without a reference price
    offset they are kept on their own side of the curve's reserves (an ask never below the
    reserve price, a bid never above)."""
    amm = market.amm
    new_ask_base, new_ask_quote = calculate_spread_reserves(market, PositionDirection.Long)
    new_bid_base, new_bid_quote = calculate_spread_reserves(market, PositionDirection.Short)
    if amm.reference_price_offset == 0:
        amm.ask_base_asset_reserve = min(new_ask_base, amm.base_asset_reserve)
        amm.bid_base_asset_reserve = max(new_bid_base, amm.base_asset_reserve)
        amm.ask_quote_asset_reserve = max(new_ask_quote, amm.quote_asset_reserve)
        amm.bid_quote_asset_reserve = min(new_bid_quote, amm.quote_asset_reserve)
    else:
        amm.ask_base_asset_reserve = new_ask_base
        amm.bid_base_asset_reserve = new_bid_base
        amm.ask_quote_asset_reserve = new_ask_quote
        amm.bid_quote_asset_reserve = new_bid_quote


def _apply_spread_adjustment(spread: int, adjustment: int) -> int:
    # amm_spread_adjustment: +-n% on a u32 spread, saturating, never below 1
    if adjustment < 0:
        cut = div_trunc(min(spread * -adjustment, U32_MAX), 100)
        return max(_saturating_sub(spread, cut), 1)
    add = safe_div_ceil(min(spread * adjustment, U32_MAX), 100)
    return max(min(spread + add, U32_MAX), 1)


def update_spreads(market: PerpMarket, reserve_price: int, slot: int | None) -> tuple[int, int]:
    """``controller::amm::update_spreads``: recompute and store ``long_spread`` /
    ``short_spread``, the reference price offset and the spread reserves; returns the spreads
    before any reference-offset smoothing.

    With ``curve_update_intensity == 0`` each side is half the base spread. A reference
    offset that changes sign is approached gradually (at most 100 bps per slot, at least
    1 bp per update), the step added to the spreads meanwhile.
    """
    amm = market.amm
    max_ref_offset = get_max_reference_price_offset(amm)
    if max_ref_offset > 0:
        liquidity_ratio = calculate_inventory_liquidity_ratio_for_reference_price_offset(
            amm.base_asset_amount_with_amm,
            amm.base_asset_reserve,
            amm.min_base_asset_reserve,
            amm.max_base_asset_reserve,
        )
        signed_liquidity_ratio = liquidity_ratio * sign(get_protocol_owned_position(amm))
        deadband_pct = get_reference_price_offset_deadband_pct(amm)
        if unsigned_abs(signed_liquidity_ratio) <= deadband_pct:
            liquidity_fraction_after_deadband = 0
        else:
            liquidity_fraction_after_deadband = signed_liquidity_ratio - deadband_pct * sign(
                signed_liquidity_ratio
            )
        reference_price_offset = calculate_reference_price_offset(
            reserve_price,
            amm.last_24h_avg_funding_rate,
            liquidity_fraction_after_deadband,
            amm.min_order_size,
            amm.historical_oracle_data.last_oracle_price_twap_5min,
            amm.last_mark_price_twap_5min,
            amm.historical_oracle_data.last_oracle_price_twap,
            amm.last_mark_price_twap,
            max_ref_offset,
        )
    else:
        reference_price_offset = 0

    if amm.curve_update_intensity > 0:
        long_spread, short_spread = calculate_spread(
            amm.base_spread,
            amm.last_oracle_reserve_price_spread_pct,
            amm.last_oracle_conf_pct,
            amm.max_spread,
            amm.quote_asset_reserve,
            amm.terminal_quote_asset_reserve,
            amm.peg_multiplier,
            amm.base_asset_amount_with_amm,
            reserve_price,
            amm.total_fee_minus_distributions,
            amm.net_revenue_since_last_funding,
            amm.base_asset_reserve,
            amm.min_base_asset_reserve,
            amm.max_base_asset_reserve,
            amm.mark_std,
            amm.oracle_std,
            amm.long_intensity_volume,
            amm.short_intensity_volume,
            amm.volume_24h,
            amm.amm_inventory_spread_adjustment,
        )
    else:
        half_base_spread = div_trunc(amm.base_spread, 2)
        long_spread, short_spread = half_base_spread, half_base_spread

    if amm.amm_spread_adjustment != 0:
        long_spread = _apply_spread_adjustment(long_spread, amm.amm_spread_adjustment)
        short_spread = _apply_spread_adjustment(short_spread, amm.amm_spread_adjustment)

    amm.long_spread = long_spread
    amm.short_spread = short_spread

    do_reference_price_smooth = (
        sign(reference_price_offset) != sign(amm.reference_price_offset)
        and amm.curve_update_intensity > 100
    )
    if do_reference_price_smooth:
        slots_passed = 0 if slot is None else max(slot - amm.last_update_slot, 0)
        full_offset_delta = reference_price_offset - amm.reference_price_offset
        raw = cast_i32(div_trunc(min(abs(full_offset_delta), slots_passed * 1000), 10))
        step_cap = (
            abs(amm.reference_price_offset)
            if amm.reference_price_offset != 0
            else abs(reference_price_offset)
        )
        reference_price_delta = sign(full_offset_delta) * min(max(raw, 10), step_cap)
        amm.reference_price_offset = cast_i32(amm.reference_price_offset + reference_price_delta)
        if reference_price_delta < 0:
            amm.long_spread = cast_u32(amm.long_spread + unsigned_abs(reference_price_delta))
            amm.short_spread = cast_u32(amm.short_spread + unsigned_abs(amm.reference_price_offset))
        else:
            amm.short_spread = cast_u32(amm.short_spread + unsigned_abs(reference_price_delta))
            amm.long_spread = cast_u32(amm.long_spread + unsigned_abs(amm.reference_price_offset))
    else:
        amm.reference_price_offset = reference_price_offset

    update_spread_reserves(market)
    return long_spread, short_spread
