"""Time-weighted averages (the program's ``math/stats.rs``).

The protocol's "TWAPs" are exponential-style moving averages updated on every touch: the new
value weighs the current observation by the seconds since the last update (``since_last``) and
the previous average by what is left of the window (``max(1, period - since_last)``). Inputs and
outputs are in whatever unit the caller averages (prices at PRICE_PRECISION, token amounts in
the mint's units, utilization at SPOT_UTILIZATION_PRECISION). Division truncates toward zero
as Rust's does; the program then adds a one-unit bias (see :func:`calculate_weighted_average`),
mirrored exactly because the program's own TWAP test vectors depend on it.
"""

from __future__ import annotations

from protocol.numeric import cast_i64, cast_u64, div_trunc


def calculate_rolling_sum(data1: int, data2: int, weight1_numer: int, weight1_denom: int) -> int:
    """Decay ``data1`` by ``(denom - numer) / denom`` (never below zero) and add ``data2``;
    missing time is treated as zero activity."""
    keep = max(0, weight1_denom - weight1_numer)
    prev_decayed = div_trunc(data1 * keep, weight1_denom)
    return cast_u64(cast_u64(prev_decayed) + data2)


def calculate_weighted_average(
    data1: int, data2: int, weight1: int, weight2: int, bias: int | None = None
) -> int:
    """``(data1 * weight1 + data2 * weight2) / (weight1 + weight2)`` with the program's bias.

    ``data1`` is the new observation, ``data2`` the previous average. Without an explicit
    ``bias``, when ``weight2 > 1`` the truncated result gets +1 if the previous-average term
    ``data2 * weight2`` is the larger weighted term and -1 if it is the smaller (0 if equal);
    a -1 is not applied to a zero result.
    """
    if weight1 == 0:
        return data2
    if weight2 == 0:
        return data1
    prev_weighted = data1 * weight1
    latest_weighted = data2 * weight2
    if bias is None:
        if weight2 > 1:
            if latest_weighted < prev_weighted:
                bias = -1
            elif latest_weighted > prev_weighted:
                bias = 1
            else:
                bias = 0
        else:
            bias = 0
    twap = cast_i64(div_trunc(prev_weighted + latest_weighted, weight1 + weight2))
    if twap == 0 and bias < 0:
        return twap
    return cast_i64(twap + bias)


def calculate_new_twap(
    current_price: int, current_ts: int, last_twap: int, last_ts: int, period: int
) -> int:
    """Fold ``current_price`` observed at ``current_ts`` into a ``period``-second TWAP."""
    since_last = max(0, current_ts - last_ts)
    from_start = max(1, period - since_last)
    return calculate_weighted_average(current_price, last_twap, since_last, from_start)
