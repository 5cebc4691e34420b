"""Admin repeg edge: a peg that brings the terminal price to the oracle but drags the reserve
price past the far edge of the oracle's confidence band is refused.

The market is the program's ``PerpMarket::default_btc_test()``: users net short 1 BTC, so the
AMM holds 65 base against 63.015384615 quote (reserve price 63015384615 / 65e9 * 19_400 =
$18,807.69) while the terminal reserves are 64 / 64 (terminal price = the peg, $19,400).
"""

from __future__ import annotations

import pytest

from protocol.constants import PEG_PRECISION, PRICE_PRECISION
from protocol.controller.repeg import repeg
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.state import OraclePriceData, State
from tests.protocol.amm_defaults import default_btc_test_market

P = PRICE_PRECISION


def test_repeg_that_drags_the_reserve_price_past_the_band_is_refused() -> None:
    market = default_btc_test_market()
    before = market.amm.clone()
    # oracle $19,000 (no confidence): lowering the peg to 19,100 moves the terminal price from
    # 19,400 toward it without passing it (direction and profitability hold), but the reserve
    # price becomes 63015384615 * 19_100 / 65e9 = $18,517.6, below the band's bottom of $19,000
    with pytest.raises(ProtocolError) as err:
        repeg(
            market,
            OraclePriceData(price=19_000 * P, confidence=0, delay=0),
            19_100 * PEG_PRECISION,
            State().oracle_guard_rails,
        )
    assert err.value.code == ErrorCode.InvalidRepegProfitability
    assert "far edge" in err.value.detail
    assert market.amm == before
