"""The funding crank and funding settlement through signed transactions.

World's start time 1_700_000_000 is 800 s past an hour boundary (1_700_000_000 % 3600 == 800),
so the first hourly update is due at 1_700_002_800, the next boundary.
"""

from __future__ import annotations

import pytest

from protocol.constants import BASE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import Rejected
from protocol.instructions import SettleFundingPayment, UpdateFundingRate
from protocol.records import FundingPaymentRecord, FundingRateRecord
from protocol.state import PerpPosition
from tests.protocol.world import SOL_PERP, START_TS, USDC_UNIT, World, keypair

KEEPER = keypair(9)
ALICE = keypair(1)
NEXT_HOUR = START_TS + 2_800


@pytest.fixture
def world() -> World:
    w = World()
    w.new_user(ALICE, usdc=1_000 * USDC_UNIT)
    w.new_user(KEEPER)
    # Alice holds 1 SOL long in SOL-PERP (entered at $100); the AMM holds the other side.
    alice = w.program.state.users[(ALICE.pubkey, 0)]
    alice.perp_positions.append(
        PerpPosition(
            SOL_PERP,
            base_asset_amount=BASE_PRECISION,
            quote_asset_amount=-100 * USDC_UNIT,
            quote_entry_amount=-100 * USDC_UNIT,
            quote_break_even_amount=-100 * USDC_UNIT,
        )
    )
    amm = w.program.state.perp_markets[SOL_PERP].amm
    amm.base_asset_amount_long = BASE_PRECISION
    amm.base_asset_amount_with_amm = BASE_PRECISION
    w.program.state.perp_markets[SOL_PERP].number_of_users_with_base = 1
    return w


def crank(w: World) -> Rejected | list[FundingRateRecord]:
    result = w.send(UpdateFundingRate(SOL_PERP), signers=(KEEPER,))
    if isinstance(result, Rejected):
        return result
    return [r.record for r in result.records if isinstance(r.record, FundingRateRecord)]


def test_funding_waits_for_the_hour(world: World) -> None:
    world.advance(slots=10, seconds=2_799)
    result = crank(world)
    assert isinstance(result, Rejected)
    assert result.code == ErrorCode.FundingWasNotUpdated
    assert result.field == "market_index"


def test_funding_on_the_hour_charges_longs_the_offset_rate(world: World) -> None:
    world.advance(slots=10, seconds=NEXT_HOUR - START_TS)
    world.set_price("SOL/USD", 100 * 10**6)
    records = crank(world)
    assert not isinstance(records, Rejected), records
    [record] = records
    # The oracle stayed at $100, but the program's weighted average biases a TWAP update by
    # one unit toward the side with the larger weighted product: the oracle TWAP becomes
    # 99_999_999, and the mark TWAP, updated the same way, 99_999_998.
    assert (record.oracle_price_twap, record.mark_price_twap) == (99_999_999, 99_999_998)
    # spread = mark - oracle + oracle / 5000 = -1 + 19_999 = 19_998 (PRICE_PRECISION);
    # hourly rate = 19_998 * FUNDING_RATE_BUFFER (1e3) / 24 = 833_250 (FUNDING_RATE_PRECISION)
    assert record.funding_rate == 833_250
    assert record.cumulative_funding_rate_long == 833_250
    assert world.program.state.perp_markets[SOL_PERP].amm.last_funding_rate_ts == NEXT_HOUR

    # a second crank in the same hour is too early
    world.advance(slots=1, seconds=60)
    again = crank(world)
    assert isinstance(again, Rejected)
    assert again.code == ErrorCode.FundingWasNotUpdated

    settled = world.ok(SettleFundingPayment(ALICE.pubkey, 0), signers=(KEEPER,))
    [payment] = [r.record for r in settled.records if isinstance(r.record, FundingPaymentRecord)]
    # a long pays: -(1e9 base * 833_250) / 1e12 = -833.25 -> truncated to -833 (QUOTE)
    assert payment.funding_payment == -833
    position = world.program.state.users[(ALICE.pubkey, 0)].perp_positions[0]
    assert position.quote_asset_amount == -100 * USDC_UNIT - 833
    assert position.last_cumulative_funding_rate == 833_250
