"""Funding-rate updates and per-position funding settlement (the program's
``controller/funding.rs``).

Units: rates FUNDING_RATE_PRECISION (1e9) per base unit, payments QUOTE_PRECISION, prices
PRICE_PRECISION, ``now`` unix seconds, ``slot`` slots.

:func:`update_funding_rate` runs at most once per ``funding_period``, aligned to the period's
boundaries (:func:`~protocol.math.funding.on_the_hour_update`). It refreshes the oracle and
mark TWAPs, takes their gap plus a small positive offset (1/FUNDING_RATE_OFFSET_DENOMINATOR of
the oracle TWAP, 7.3% a year for hourly funding), clamps it by contract tier, scales it to one
period of a 24-hour rate, splits it into long and short rates (the market's fee pool covers any
imbalance, :func:`~protocol.math.funding.calculate_funding_rate_long_short`), and adds them to
the cumulative rates. Positions accrue against the cumulative rate of their side and realise
it into ``quote_asset_amount`` when settled (:func:`settle_funding_payment`).

Invariant: after :func:`settle_funding_payment`, a position's ``last_cumulative_funding_rate``
equals its side's cumulative rate, and ``amm.net_unsettled_funding_pnl`` has moved by exactly
minus the payment credited to it.

Where the program returns ``Ok(false)`` / does nothing, these functions return ``None``;
``FundingWasNotUpdated`` is the instruction's error for a ``None`` update, as in the program.
Errors the program returns (``InvalidFundingProfitability``, ``InvalidOracle``,
``InvalidMarkTwapUpdateDetected``, math and casting errors) are raised as
:class:`~protocol.errors.ProtocolError`.

Deviations:

* The records are returned rather than emitted; the instruction emits them.
* The program's ``update_funding_rate`` calls ``formulaic_update_k`` when
  ``amm.curve_update_intensity > 0``; curve (k) updates are not modelled here, so that step is
  skipped.
* The caller passes the market's :class:`OraclePriceData` (the program reads it from its oracle
  map); as in the program's instruction, the AMM update (``_update_amm``, which sets
  ``amm.last_update_slot``) is expected to run first: :func:`update_funding_rate` refuses to
  update an AMM last updated more than ``funding_period`` slots ago.
"""

from __future__ import annotations

from protocol.accounts import MarketReader
from protocol.constants import (
    FUNDING_RATE_BUFFER,
    FUNDING_RATE_OFFSET_DENOMINATOR,
    ONE_HOUR,
    TWENTY_FOUR_HOUR,
)
from protocol.controller.position import update_quote_asset_and_break_even_amount
from protocol.math.amm import (
    ask_price,
    bid_price,
    get_sanitize_clamp_denominator,
    reserve_price,
    update_mark_twap_from_estimates,
    update_oracle_price_twap,
)
from protocol.math.funding import (
    calculate_funding_payment,
    calculate_funding_rate_long_short,
    get_max_price_divergence_for_funding_rate,
    on_the_hour_update,
)
from protocol.math.oracle import block_operation
from protocol.math.stats import calculate_new_twap
from protocol.numeric import cast_i64, clamp, div_trunc
from protocol.records import FundingPaymentRecord, FundingRateRecord
from protocol.state.oracle import OraclePriceData
from protocol.state.perp_market import PerpMarket
from protocol.state.state import OracleGuardRails
from protocol.state.user import PerpPosition, User, UserKey
from protocol.types import PositionDirection


def update_funding_rate(
    market_index: int,
    market: PerpMarket,
    oracle_price_data: OraclePriceData,
    now: int,
    slot: int,
    guard_rails: OracleGuardRails,
    funding_paused: bool,
    precomputed_reserve_price: int | None = None,
) -> FundingRateRecord | None:
    """Apply one period's funding to ``market`` if it is due and allowed; the record, or
    ``None`` when funding was not updated (paused, blocked by the oracle, or not yet due)."""
    amm = market.amm
    reserve = reserve_price(amm) if precomputed_reserve_price is None else precomputed_reserve_price
    block_funding_rate_update = block_operation(
        market, oracle_price_data, guard_rails, reserve, slot
    )
    time_until_next_update = on_the_hour_update(now, amm.last_funding_rate_ts, amm.funding_period)
    if funding_paused or block_funding_rate_update or time_until_next_update != 0:
        return None

    sanitize_clamp_denominator = get_sanitize_clamp_denominator(market)
    oracle_price_twap = update_oracle_price_twap(
        amm, now, oracle_price_data, reserve, sanitize_clamp_denominator
    )

    # the side whose spread is wider is where trades executed at a premium
    execution_premium_direction: PositionDirection | None
    if amm.long_spread > amm.short_spread:
        execution_premium_price = ask_price(amm, reserve)
        execution_premium_direction = PositionDirection.Long
    elif amm.long_spread < amm.short_spread:
        execution_premium_price = bid_price(amm, reserve)
        execution_premium_direction = PositionDirection.Short
    else:
        execution_premium_price = reserve
        execution_premium_direction = None
    mid_price_twap = update_mark_twap_from_estimates(
        amm,
        now,
        execution_premium_price,
        execution_premium_direction,
        sanitize_clamp_denominator,
    )

    # the gap is a 24-hour rate; each period pays its share of it
    period_adjustment = div_trunc(24 * ONE_HOUR, max(ONE_HOUR, amm.funding_period))
    price_spread = cast_i64(mid_price_twap) - oracle_price_twap
    price_spread_with_offset = price_spread + div_trunc(
        abs(oracle_price_twap), FUNDING_RATE_OFFSET_DENOMINATOR
    )
    max_price_spread = get_max_price_divergence_for_funding_rate(market, oracle_price_twap)
    clamped_price_spread = clamp(price_spread_with_offset, -max_price_spread, max_price_spread)
    funding_rate = cast_i64(
        div_trunc(clamped_price_spread * FUNDING_RATE_BUFFER, period_adjustment)
    )

    funding_rate_long, funding_rate_short, funding_imbalance_revenue = (
        calculate_funding_rate_long_short(market, funding_rate)
    )

    amm.cumulative_funding_rate_long += funding_rate_long
    amm.cumulative_funding_rate_short += funding_rate_short
    amm.last_funding_rate = funding_rate
    amm.last_funding_oracle_twap = oracle_price_twap
    amm.last_funding_rate_long = cast_i64(funding_rate_long)
    amm.last_funding_rate_short = cast_i64(funding_rate_short)
    amm.last_24h_avg_funding_rate = calculate_new_twap(
        funding_rate, now, amm.last_24h_avg_funding_rate, amm.last_funding_rate_ts, TWENTY_FOUR_HOUR
    )
    amm.net_unsettled_funding_pnl -= cast_i64(funding_imbalance_revenue)
    amm.last_funding_rate_ts = now

    record_id = market.next_funding_rate_record_id
    market.next_funding_rate_record_id = record_id + 1
    record = FundingRateRecord(
        record_id=record_id,
        market_index=market_index,
        funding_rate=funding_rate,
        funding_rate_long=funding_rate_long,
        funding_rate_short=funding_rate_short,
        cumulative_funding_rate_long=amm.cumulative_funding_rate_long,
        cumulative_funding_rate_short=amm.cumulative_funding_rate_short,
        oracle_price_twap=oracle_price_twap,
        mark_price_twap=mid_price_twap,
        period_revenue=amm.net_revenue_since_last_funding,
        base_asset_amount_with_amm=amm.base_asset_amount_with_amm,
        base_asset_amount_with_unsettled_lp=amm.base_asset_amount_with_unsettled_lp,
        ts=now,
    )
    amm.net_revenue_since_last_funding = 0
    return record


def settle_funding_payment(
    user: User, user_key: UserKey, market: PerpMarket, now: int
) -> FundingPaymentRecord | None:
    """Realise the funding ``user``'s position in ``market`` has accrued; the record, or
    ``None`` if there is no open position or nothing has accrued since it last settled."""
    position = user.get_perp_position(market.market_index)
    if position is None or position.base_asset_amount == 0:
        return None
    return _settle_position_funding(user, user_key, position, market, now)


def settle_funding_payments(
    user: User, user_key: UserKey, markets: MarketReader, now: int
) -> list[FundingPaymentRecord]:
    """:func:`settle_funding_payment` for every open perp position of ``user``, in position
    order; the records of the positions that had accrued funding."""
    records = []
    for position in user.perp_positions:
        if position.base_asset_amount == 0:
            continue
        market = markets.perp_market(position.market_index)
        record = _settle_position_funding(user, user_key, position, market, now)
        if record is not None:
            records.append(record)
    return records


def _settle_position_funding(
    user: User, user_key: UserKey, position: PerpPosition, market: PerpMarket, now: int
) -> FundingPaymentRecord | None:
    amm = market.amm
    amm_cumulative_funding_rate = (
        amm.cumulative_funding_rate_long
        if position.base_asset_amount > 0
        else amm.cumulative_funding_rate_short
    )
    if amm_cumulative_funding_rate == position.last_cumulative_funding_rate:
        return None

    market_funding_payment = calculate_funding_payment(amm_cumulative_funding_rate, position)
    user.cumulative_perp_funding = cast_i64(user.cumulative_perp_funding + market_funding_payment)

    # the record carries the position's rate from before this settlement, as the program's
    record = FundingPaymentRecord(
        authority=user.authority,
        sub_account_id=user_key[1],
        market_index=position.market_index,
        funding_payment=market_funding_payment,
        base_asset_amount=position.base_asset_amount,
        user_last_cumulative_funding=position.last_cumulative_funding_rate,
        amm_cumulative_funding_long=amm.cumulative_funding_rate_long,
        amm_cumulative_funding_short=amm.cumulative_funding_rate_short,
        ts=now,
    )
    position.last_cumulative_funding_rate = cast_i64(amm_cumulative_funding_rate)
    update_quote_asset_and_break_even_amount(position, market, market_funding_payment)
    amm.net_unsettled_funding_pnl -= market_funding_payment
    return record
