"""BAL provider (LP share) math: per-LP accounting, settlement amounts and LP open orders (the
program's ``math/lp.rs`` from its versions with BAL providers, with the per-LP methods of
``state/perp_market.rs`` (``AMM::calculate_per_lp_delta``, ``AMM::calculate_lp_base_delta``)
and ``state/user.rs`` (``PerpPosition::simulate_settled_lp_position``,
``PerpPosition::margin_requirement_for_lp_shares``) written as free functions taking the
account first, and ``math/helpers.rs::get_proportion_i128``).

Units: LP shares and ``sqrt_k`` AMM_RESERVE_PRECISION (1e9; one share is one unit of
``sqrt_k``); ``base_asset_amount_per_lp`` BASE_PRECISION per AMM_RESERVE_PRECISION of shares,
``quote_asset_amount_per_lp`` QUOTE_PRECISION per AMM_RESERVE_PRECISION of shares; base amounts
BASE_PRECISION; quote amounts QUOTE_PRECISION; prices PRICE_PRECISION.

The model (seed 004): the LPs own ``user_lp_shares / sqrt_k`` of the AMM's liquidity and take
that fraction of the opposite side of every AMM fill. The market keeps running totals per
share (``base_asset_amount_per_lp`` / ``quote_asset_amount_per_lp``); a position remembers the
totals when it last settled (``last_*_per_lp``), so its unsettled LP position is the difference
times its shares. 80% (LP_FEE_SLICE_NUMERATOR / LP_FEE_SLICE_DENOMINATOR) of the fee the AMM
keeps (after filler and referrer rewards, before the spread surplus) is added to the quote per
share, pro rata over all of ``sqrt_k``: the LPs' part is their fraction of liquidity.

Rounding is the program's: every product/quotient truncates toward zero (``get_proportion_i128``
truncates the magnitude and restores the sign); a fill in which the users sell (the LPs buy)
adds one unit to the LPs' per-share quote cost, so rounding never favours the LPs.

Deviations from the program, and why:

* no per-LP rebasing (``per_lp_base`` / ``apply_lp_rebase_*``): this model's per-share totals
  are unbounded Python ints checked against the program's i128/i64 widths, so the base unit is
  always AMM_RESERVE_PRECISION (the program's ``get_per_lp_base_unit`` for ``per_lp_base = 0``).
* no AMM JIT liquidity split (``AMMLiquiditySplit``): this model's AMM takes no JIT fills, so
  every split is the program's ``Shared`` case (pro rata over ``sqrt_k``).
* :func:`simulate_settled_lp_position` includes in the simulated base the whole steps that the
  accumulated remainder would settle; the program adds them to a local it no longer reads, so
  its margin view lags the settlement by those steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    LP_FEE_SLICE_DENOMINATOR,
    LP_FEE_SLICE_NUMERATOR,
    PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO,
    QUOTE_PRECISION,
)
from protocol.math.amm import calculate_market_open_bids_asks, get_proportion_u128
from protocol.math.orders import PositionDelta, standardize_base_asset_amount_with_remainder_i128
from protocol.math.position import calculate_base_asset_value_with_oracle_price
from protocol.numeric import cast_i64, cast_i128, cast_u128, div_trunc, sign, unsigned_abs
from protocol.state.copying import shallow_copy
from protocol.state.perp_market import AMM, PerpMarket
from protocol.state.user import PerpPosition

__all__ = [
    "LPMetrics",
    "calculate_lp_base_delta",
    "calculate_lp_open_bids_asks",
    "calculate_per_lp_delta",
    "calculate_settle_lp_metrics",
    "calculate_settled_lp_base_quote",
    "get_proportion_i128",
    "margin_requirement_for_lp_shares",
    "simulate_settled_lp_position",
]

# the program's ``get_per_lp_base_unit`` with ``per_lp_base == 0`` (no rebasing here)
_PER_LP_BASE_UNIT = AMM_RESERVE_PRECISION


@dataclass(frozen=True, slots=True)
class LPMetrics:
    """A position's unsettled LP share: ``base_asset_amount`` in whole order steps (BASE),
    ``quote_asset_amount`` (QUOTE) and the sub-step ``remainder_base_asset_amount`` (BASE)."""

    base_asset_amount: int
    quote_asset_amount: int
    remainder_base_asset_amount: int


def get_proportion_i128(value: int, numerator: int, denominator: int) -> int:
    """``helpers.rs::get_proportion_i128``: ``value * numerator / denominator`` with the
    magnitude truncated and the sign of ``value`` kept (truncation toward zero)."""
    return cast_i128(sign(value) * get_proportion_u128(unsigned_abs(value), numerator, denominator))


def calculate_settled_lp_base_quote(amm: AMM, position: PerpPosition) -> tuple[int, int]:
    """``(base, quote)`` the position's shares took on since it last settled: the change in
    the per-share totals times its shares, each truncated toward zero."""
    n_shares = position.lp_shares
    amm_net_base_asset_amount_per_lp = amm.base_asset_amount_per_lp - (
        position.last_base_asset_amount_per_lp
    )
    base_asset_amount = div_trunc(amm_net_base_asset_amount_per_lp * n_shares, _PER_LP_BASE_UNIT)
    amm_net_quote_asset_amount_per_lp = amm.quote_asset_amount_per_lp - (
        position.last_quote_asset_amount_per_lp
    )
    quote_asset_amount = div_trunc(amm_net_quote_asset_amount_per_lp * n_shares, _PER_LP_BASE_UNIT)
    return cast_i128(base_asset_amount), cast_i128(quote_asset_amount)


def calculate_settle_lp_metrics(amm: AMM, position: PerpPosition) -> LPMetrics:
    """:func:`calculate_settled_lp_base_quote` with the base split into whole order steps
    (toward zero) and the signed remainder below one step."""
    base_asset_amount, quote_asset_amount = calculate_settled_lp_base_quote(amm, position)
    standardized_base_asset_amount, remainder_base_asset_amount = (
        standardize_base_asset_amount_with_remainder_i128(base_asset_amount, amm.order_step_size)
    )
    return LPMetrics(
        base_asset_amount=standardized_base_asset_amount,
        quote_asset_amount=quote_asset_amount,
        remainder_base_asset_amount=remainder_base_asset_amount,
    )


def calculate_lp_open_bids_asks(
    market_position: PerpPosition, market: PerpMarket
) -> tuple[int, int]:
    """``(open_bids >= 0, open_asks <= 0)`` (BASE) the position's shares stand for: its
    fraction ``lp_shares / sqrt_k`` of the base the AMM could still take on before its base
    reserve reaches ``min_base_asset_reserve`` (bids) or ``max_base_asset_reserve`` (asks)."""
    total_lp_shares = market.amm.sqrt_k
    lp_shares = market_position.lp_shares
    max_bids, max_asks = calculate_market_open_bids_asks(market.amm)
    open_asks = get_proportion_i128(max_asks, lp_shares, total_lp_shares)
    open_bids = get_proportion_i128(max_bids, lp_shares, total_lp_shares)
    return cast_i64(open_bids), cast_i64(open_asks)


def calculate_per_lp_delta(
    amm: AMM, delta: PositionDelta, fee_to_market: int
) -> tuple[int, int, int]:
    """``AMM::calculate_per_lp_delta`` (``Shared`` split): ``(per_lp_delta_base,
    per_lp_delta_quote, per_lp_fee)`` for a user fill ``delta`` against the AMM.

    The deltas are the user's side per share of ``sqrt_k`` (the LPs take the negation); when
    the user sells, the LPs' per-share quote cost is rounded up by one unit. ``per_lp_fee`` is
    80% of a positive ``fee_to_market`` (QUOTE) per share of ``sqrt_k``.
    """
    total_lp_shares = amm.sqrt_k
    per_lp_delta_base = get_proportion_i128(
        delta.base_asset_amount, _PER_LP_BASE_UNIT, total_lp_shares
    )
    per_lp_delta_quote = get_proportion_i128(
        delta.quote_asset_amount, _PER_LP_BASE_UNIT, total_lp_shares
    )
    if per_lp_delta_base < 0:
        # the user sold, so the LPs bought: they pay one unit more per share
        per_lp_delta_quote += 1
    if fee_to_market > 0:
        per_lp_fee = div_trunc(
            get_proportion_i128(fee_to_market, LP_FEE_SLICE_NUMERATOR, LP_FEE_SLICE_DENOMINATOR)
            * _PER_LP_BASE_UNIT,
            cast_i128(total_lp_shares),
        )
    else:
        per_lp_fee = 0
    return per_lp_delta_base, cast_i128(per_lp_delta_quote), cast_i128(per_lp_fee)


def calculate_lp_base_delta(amm: AMM, per_lp_delta_base: int) -> int:
    """``AMM::calculate_lp_base_delta``: the user-side base ``per_lp_delta_base`` scaled to all
    LP shares (``user_lp_shares``), truncated toward zero."""
    return get_proportion_i128(per_lp_delta_base, amm.user_lp_shares, _PER_LP_BASE_UNIT)


def simulate_settled_lp_position(
    position: PerpPosition, market: PerpMarket, valuation_price: int
) -> PerpPosition:
    """``PerpPosition::simulate_settled_lp_position``: a copy of the position as the margin
    calculation sees it (the position itself is not modified; one without shares comes back
    as is).

    Its unsettled LP base (whole steps, including those the accumulated remainder completes)
    and quote are added as if settled; a remainder still below one step is charged at
    ``valuation_price`` (+1 unit, against the LP, as burning the shares would); and the base
    the shares could still take on (:func:`calculate_lp_open_bids_asks`) is added to the open
    bids and asks, so the worst case includes the LP's open orders.
    """
    if position.lp_shares == 0:
        return position
    amm = market.amm
    lp_metrics = calculate_settle_lp_metrics(amm, position)
    lp_base_asset_amount = lp_metrics.base_asset_amount
    new_remainder_base_asset_amount = (
        position.remainder_base_asset_amount + lp_metrics.remainder_base_asset_amount
    )
    if unsigned_abs(new_remainder_base_asset_amount) >= amm.order_step_size:
        standardized_remainder, new_remainder_base_asset_amount = (
            standardize_base_asset_amount_with_remainder_i128(
                new_remainder_base_asset_amount, amm.order_step_size
            )
        )
        lp_base_asset_amount += standardized_remainder

    quote_asset_amount = position.quote_asset_amount + lp_metrics.quote_asset_amount
    if new_remainder_base_asset_amount != 0:
        dust_base_asset_value = (
            calculate_base_asset_value_with_oracle_price(
                new_remainder_base_asset_amount, valuation_price
            )
            + 1
        )
        quote_asset_amount -= dust_base_asset_value

    lp_bids, lp_asks = calculate_lp_open_bids_asks(position, market)
    settled_position: PerpPosition = shallow_copy(position)
    settled_position.base_asset_amount = cast_i64(position.base_asset_amount + lp_base_asset_amount)
    settled_position.quote_asset_amount = cast_i64(quote_asset_amount)
    settled_position.open_bids = cast_i64(position.open_bids + lp_bids)
    settled_position.open_asks = cast_i64(position.open_asks + lp_asks)
    return settled_position


def margin_requirement_for_lp_shares(
    position: PerpPosition, order_step_size: int, valuation_price: int
) -> int:
    """``PerpPosition::margin_requirement_for_lp_shares`` (QUOTE): a position with shares needs
    at least $1, or one order step's value at ``valuation_price`` if more; 0 without shares."""
    if position.lp_shares == 0:
        return 0
    return max(
        QUOTE_PRECISION,
        div_trunc(
            order_step_size * cast_u128(valuation_price), PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO
        ),
    )
