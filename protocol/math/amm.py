"""The virtual AMM's price, swap and TWAP math (the program's ``math/amm.rs``).

Units: reserves and ``sqrt_k`` AMM_RESERVE_PRECISION (1e9), peg PEG_PRECISION (1e6), prices
PRICE_PRECISION (1e6), quote amounts QUOTE_PRECISION (1e6), base amounts BASE_PRECISION (1e9),
spreads BID_ASK_SPREAD_PRECISION (1e6).

The curve is ``base_asset_reserve * quote_asset_reserve = sqrt_k**2``, priced at
``quote * peg / base``. The program's ``U192`` intermediates are Python ints here; every
division truncates as the program's unsigned division does, and the checked casts raise where
the program's ``try_to_u128`` / ``cast`` would.

Rounding favours the AMM: a swap's new output reserve is ``k / new_input`` truncated, so the
AMM keeps the remainder; a user removing base (buying) pays one extra reserve unit and one
extra quote unit (:func:`calculate_quote_asset_amount_swapped`). Hence a buy followed by a sell
of the same base never leaves the AMM with less quote.

Sections: curve and swap math (bounds, swaps, terminal reserves, open liquidity), the AMM
accessors the program defines as ``AMM`` methods (free functions taking the AMM first),
position valuation against the curve (the program's ``math/position.rs`` and ``math/pnl.rs``
functions that value a base amount by swapping it back through the reserves, kept here beside
the swap they wrap), and the oracle and mark TWAPs.
"""

from __future__ import annotations

from enum import IntEnum

from protocol.constants import (
    BID_ASK_SPREAD_PRECISION,
    CONCENTRATION_PRECISION,
    DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR,
    FIVE_MINUTE,
    ONE_HOUR,
    ONE_MINUTE,
    PERCENTAGE_PRECISION,
    PRICE_TO_PEG_PRECISION_RATIO,
)
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.quote_asset import reserve_to_asset_amount
from protocol.math.stats import (
    calculate_new_twap,
    calculate_rolling_sum,
    calculate_weighted_average,
)
from protocol.numeric import (
    U64_MAX,
    cast_i32,
    cast_i64,
    cast_i128,
    cast_u64,
    cast_u128,
    clamp,
    div_trunc,
    sign,
    unsigned_abs,
)
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.state import PriceDivergenceGuardRails
from protocol.types import ContractTier, PositionDirection, SwapDirection


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
# Curve and swap math
# =============================================================================================


def get_proportion_u128(value: int, numerator: int, denominator: int) -> int:
    """``helpers.rs::get_proportion_u128``: ``value * numerator / denominator``, truncated.

    The program splits this into branches to stay inside ``u128``; every branch yields the
    truncated quotient, which Python's unbounded ints compute directly.
    """
    if numerator == denominator:
        return value
    return cast_u128(div_trunc(value * numerator, denominator))


def calculate_bid_ask_bounds(concentration_coef: int, sqrt_k: int) -> tuple[int, int]:
    """``(min_base_asset_reserve, max_base_asset_reserve)``: how far the base reserve may move
    from ``sqrt_k`` (a balanced curve's reserve) if every bid, or every ask, were filled."""
    if not concentration_coef > CONCENTRATION_PRECISION:
        raise ProtocolError(
            ErrorCode.InvalidConcentrationCoef,
            f"concentration_coef={concentration_coef} <= "
            f"CONCENTRATION_PRECISION={CONCENTRATION_PRECISION}",
        )
    ask_bounded_base = get_proportion_u128(sqrt_k, concentration_coef, CONCENTRATION_PRECISION)
    bid_bounded_base = get_proportion_u128(sqrt_k, CONCENTRATION_PRECISION, concentration_coef)
    return bid_bounded_base, ask_bounded_base


def _calculate_market_open_bids_asks(
    base_asset_reserve: int, min_base_asset_reserve: int, max_base_asset_reserve: int
) -> tuple[int, int]:
    """``(max_bids, max_asks)`` (BASE_PRECISION): the base the AMM can still buy (>= 0) and
    sell (<= 0) before its reserve reaches a bound."""
    if base_asset_reserve < max_base_asset_reserve:
        max_asks = -cast_i128(max_base_asset_reserve - base_asset_reserve)
    else:
        max_asks = 0
    if base_asset_reserve > min_base_asset_reserve:
        max_bids = cast_i128(base_asset_reserve - min_base_asset_reserve)
    else:
        max_bids = 0
    return max_bids, max_asks


def calculate_market_open_bids_asks(amm: AMM) -> tuple[int, int]:
    return _calculate_market_open_bids_asks(
        amm.base_asset_reserve, amm.min_base_asset_reserve, amm.max_base_asset_reserve
    )


def calculate_swap_output(
    swap_amount: int, input_asset_reserve: int, direction: SwapDirection, invariant_sqrt: int
) -> tuple[int, int]:
    """``(new_output_asset_reserve, new_input_asset_reserve)`` after adding or removing
    ``swap_amount`` of the input asset, keeping ``input * output = invariant_sqrt**2``.

    The output reserve is truncated, so the curve's product never grows past ``k`` at the
    swapper's expense. Removing more than the reserve holds is ``TradeSizeTooLarge``.
    """
    invariant = invariant_sqrt * invariant_sqrt
    if direction is SwapDirection.Remove and swap_amount > input_asset_reserve:
        raise ProtocolError(ErrorCode.TradeSizeTooLarge, f"{swap_amount} > {input_asset_reserve}")
    if direction is SwapDirection.Add:
        new_input_asset_reserve = cast_u128(input_asset_reserve + swap_amount)
    else:
        new_input_asset_reserve = input_asset_reserve - swap_amount
    new_output_asset_reserve = cast_u128(div_trunc(invariant, new_input_asset_reserve))
    return new_output_asset_reserve, new_input_asset_reserve


def _unsigned_sub(a: int, b: int, what: str) -> int:
    # the program subtracts these as u128, which fails rather than going negative
    if a < b:
        raise MathError(f"{what}: {a} - {b} underflows")
    return a - b


def calculate_quote_asset_amount_swapped(
    quote_asset_reserve_before: int,
    quote_asset_reserve_after: int,
    swap_direction: SwapDirection,
    peg_multiplier: int,
) -> int:
    """The quote amount (QUOTE_PRECISION) a swap moved, given the quote reserve before and
    after. ``swap_direction`` is the *base* side's: ``Add`` base (the user sells, the quote
    reserve falls) or ``Remove`` base (the user buys, the quote reserve rises).

    A buyer pays one extra reserve unit and then one extra quote unit: rounding favours the AMM.
    """
    if swap_direction is SwapDirection.Add:
        quote_asset_reserve_change = _unsigned_sub(
            quote_asset_reserve_before, quote_asset_reserve_after, "quote reserve change"
        )
    else:
        quote_asset_reserve_change = (
            _unsigned_sub(
                quote_asset_reserve_after, quote_asset_reserve_before, "quote reserve change"
            )
            + 1
        )
    quote_asset_amount = reserve_to_asset_amount(quote_asset_reserve_change, peg_multiplier)
    if swap_direction is SwapDirection.Remove:
        quote_asset_amount += 1
    return quote_asset_amount


def calculate_terminal_reserves(amm: AMM) -> tuple[int, int]:
    """``(terminal_quote_reserve, terminal_base_reserve)``: the reserves once every user
    position is closed against the AMM (the net position swapped back through the curve)."""
    swap_direction = (
        SwapDirection.Add if amm.base_asset_amount_with_amm > 0 else SwapDirection.Remove
    )
    return calculate_swap_output(
        unsigned_abs(amm.base_asset_amount_with_amm),
        amm.base_asset_reserve,
        swap_direction,
        amm.sqrt_k,
    )


def calculate_terminal_price_and_reserves(amm: AMM) -> tuple[int, int, int]:
    """``(terminal_price, terminal_quote_reserve, terminal_base_reserve)``."""
    new_quote_asset_amount, new_base_asset_amount = calculate_terminal_reserves(amm)
    terminal_price = calculate_price(
        new_quote_asset_amount, new_base_asset_amount, amm.peg_multiplier
    )
    return terminal_price, new_quote_asset_amount, new_base_asset_amount


def calculate_amm_available_liquidity(amm: AMM, order_direction: PositionDirection) -> int:
    """The most base one AMM fill may take (BASE_PRECISION): at most
    ``1 / max_fill_reserve_fraction`` of the base reserve and half the room left to the
    reserve's bound on the taker's side, rounded down to the step size."""
    max_fill_size = min(div_trunc(amm.base_asset_reserve, amm.max_fill_reserve_fraction), U64_MAX)
    if order_direction is PositionDirection.Long:
        room = max(amm.base_asset_reserve - amm.min_base_asset_reserve, 0)
    else:
        room = max(amm.max_base_asset_reserve - amm.base_asset_reserve, 0)
    max_base_asset_amount_on_side = cast_u64(div_trunc(room, 2))
    amount = min(max_fill_size, max_base_asset_amount_on_side)
    # standardize_base_asset_amount (protocol.math.orders imports this module, so the step
    # rounding is spelled out here): down to a multiple of the step
    if amm.order_step_size <= 0:
        raise MathError(f"step size must be positive, got {amm.order_step_size}")
    return amount - amount % amm.order_step_size


def update_amm_long_short_intensity(
    amm: AMM, now: int, quote_asset_amount: int, direction: PositionDirection
) -> bool:
    """Fold a fill's quote volume into the hourly long/short intensity sums the spread
    model's volatility term weighs."""
    since_last = max(1, now - amm.last_trade_ts)
    if direction is PositionDirection.Long:
        long_quote_amount, short_quote_amount = quote_asset_amount, 0
    else:
        long_quote_amount, short_quote_amount = 0, quote_asset_amount
    amm.long_intensity_volume = calculate_rolling_sum(
        amm.long_intensity_volume, long_quote_amount, since_last, ONE_HOUR
    )
    amm.short_intensity_volume = calculate_rolling_sum(
        amm.short_intensity_volume, short_quote_amount, since_last, ONE_HOUR
    )
    return True


# =============================================================================================
# AMM accessors (``impl AMM`` in the program's ``state/perp_market.rs``)
# =============================================================================================


def can_lower_k(amm: AMM) -> bool:
    """``AMM::can_lower_k``: k may shrink only while users' net position could still be
    closed on either side and stays below the protocol-owned part of ``sqrt_k`` (BAL
    providers' shares excluded, as in the program's versions with them)."""
    max_bids, max_asks = calculate_market_open_bids_asks(amm)
    net = unsigned_abs(amm.base_asset_amount_with_amm)
    return (
        net < min(unsigned_abs(max_bids), unsigned_abs(max_asks))
        and max(net, amm.min_order_size) < amm.sqrt_k - amm.user_lp_shares
        and amm.min_order_size < max(unsigned_abs(max_bids), unsigned_abs(max_asks))
    )


def get_lower_bound_sqrt_k(amm: AMM) -> int:
    """``AMM::get_lower_bound_sqrt_k``: the smallest ``sqrt_k`` a formulaic decrease may reach
    (the largest of users' net position, the minimum order size and the BAL providers' shares
    plus 0.1%, as in the program's versions with them)."""
    lp_shares_bound = amm.user_lp_shares + amm.user_lp_shares // 1000
    return min(
        amm.sqrt_k,
        max(lp_shares_bound, amm.min_order_size, unsigned_abs(amm.base_asset_amount_with_amm)),
    )


def get_protocol_owned_position(amm: AMM) -> int:
    """``AMM::get_protocol_owned_position``: users' net position the AMM is counterparty to."""
    return cast_i64(amm.base_asset_amount_with_amm)


def get_max_reference_price_offset(amm: AMM) -> int:
    """``AMM::get_max_reference_price_offset`` (BID_ASK_SPREAD_PRECISION): 0 unless
    ``curve_update_intensity > 100``; then ``(intensity - 100)`` bps capped at half the max
    spread, and from intensity 200 half the max spread but at least 1%."""
    if amm.curve_update_intensity <= 100:
        return 0
    if amm.curve_update_intensity >= 200:
        return max(div_trunc(amm.max_spread, 2), 10_000)
    lower_bound_multiplier = amm.curve_update_intensity - 100
    lb_bps = div_trunc(PERCENTAGE_PRECISION, 10_000) * lower_bound_multiplier
    return min(div_trunc(amm.max_spread, 2), lb_bps)


def get_reference_price_offset_deadband_pct(amm: AMM) -> int:
    """``AMM::get_reference_price_offset_deadband_pct`` (PERCENTAGE_PRECISION)."""
    return div_trunc(PERCENTAGE_PRECISION * amm.reference_price_offset_deadband_pct, 100)


def is_recent_oracle_valid(amm: AMM, current_slot: int) -> bool:
    """``AMM::is_recent_oracle_valid``: the AMM was updated with a valid oracle this slot."""
    return amm.last_oracle_valid and current_slot == amm.last_update_slot


# =============================================================================================
# Valuing a position against the curve (``math/position.rs``, ``math/pnl.rs``)
# =============================================================================================


def swap_direction_to_close_position(base_asset_amount: int) -> SwapDirection:
    """A long closes by adding base to the AMM, a short by removing it."""
    return SwapDirection.Add if base_asset_amount >= 0 else SwapDirection.Remove


def calculate_pnl(exit_value: int, entry_value: int, swap_direction_to_close: SwapDirection) -> int:
    """PnL of closing at ``exit_value`` a position entered at ``entry_value`` (QUOTE)."""
    if swap_direction_to_close is SwapDirection.Add:
        return exit_value - entry_value
    return entry_value - exit_value


def calculate_base_asset_value(base_asset_amount: int, amm: AMM) -> int:
    """What ``base_asset_amount`` would fetch (long) or cost (short) if swapped back through the
    curve now, spreads ignored (QUOTE_PRECISION)."""
    if base_asset_amount == 0:
        return 0
    swap_direction = swap_direction_to_close_position(base_asset_amount)
    new_quote_asset_reserve, _ = calculate_swap_output(
        unsigned_abs(base_asset_amount), amm.base_asset_reserve, swap_direction, amm.sqrt_k
    )
    return calculate_quote_asset_amount_swapped(
        amm.quote_asset_reserve, new_quote_asset_reserve, swap_direction, amm.peg_multiplier
    )


def calculate_base_asset_value_and_pnl(
    base_asset_amount: int, quote_asset_amount: int, amm: AMM
) -> tuple[int, int]:
    """``(base_asset_value, pnl)`` of a position entered for ``quote_asset_amount``."""
    if base_asset_amount == 0:
        return 0, 0
    swap_direction = swap_direction_to_close_position(base_asset_amount)
    base_asset_value = calculate_base_asset_value(base_asset_amount, amm)
    pnl = calculate_pnl(base_asset_value, quote_asset_amount, swap_direction)
    return base_asset_value, pnl


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
# passed directly.
# =============================================================================================


class TwapPeriod(IntEnum):
    FundingPeriod = 0
    FiveMin = 1


def reserve_price(amm: AMM) -> int:
    """``AMM::reserve_price``: the curve's price (PRICE_PRECISION)."""
    return calculate_price(amm.quote_asset_reserve, amm.base_asset_reserve, amm.peg_multiplier)


def bid_price(amm: AMM, reserve_price: int) -> int:
    """``AMM::bid_price``: ``reserve_price * (1 - short_spread + reference_price_offset)``,
    truncated."""
    adjusted_spread = -cast_i32(amm.short_spread) + amm.reference_price_offset
    multiplier = BID_ASK_SPREAD_PRECISION + adjusted_spread
    return cast_u64(div_trunc(reserve_price * cast_u128(multiplier), BID_ASK_SPREAD_PRECISION))


def ask_price(amm: AMM, reserve_price: int) -> int:
    """``AMM::ask_price``: ``reserve_price * (1 + long_spread + reference_price_offset)``,
    truncated."""
    adjusted_spread = cast_i32(amm.long_spread) + amm.reference_price_offset
    multiplier = BID_ASK_SPREAD_PRECISION + adjusted_spread
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
