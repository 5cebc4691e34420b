"""The bots' shared pieces: slot TTLs, the intent cache, the view reader, outcome helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.common import (
    IntentCache,
    MissingAccount,
    SlotTtl,
    ViewReader,
    field_index,
    rejection,
    require,
    short_hex,
)
from keepers.config import ConfigError
from keepers.runtime.bot import Action
from keepers.runtime.executor import Outcome, Status
from protocol.constants import BASE_PRECISION, PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.instructions.funding import UpdateFundingRate
from protocol.signed_intent import OrderIntent
from protocol.state import OrderParams
from protocol.state.state import State
from protocol.types import MarketType, OrderType, PositionDirection
from tests.bots.helpers import intent_delivery, make_view, oracle_messages
from tests.protocol.world import keypair, make_state

TRADER = keypair(61)


def test_slot_ttl_blocks_until_its_slot_and_keeps_the_later_end() -> None:
    ttl: SlotTtl[str] = SlotTtl()
    ttl.block("a", 105)
    assert ttl.blocked("a", 104)
    assert not ttl.blocked("a", 105)  # blocked while slot < until
    ttl.block("a", 103)  # an earlier end does not shorten a block
    assert ttl.until("a") == 105
    ttl.set("a", 103)  # set does
    assert ttl.until("a") == 103
    ttl.release("a")
    assert not ttl.blocked("a", 0)
    assert "a" not in ttl


def test_slot_ttl_prune_forgets_only_ended_blocks() -> None:
    ttl: SlotTtl[int] = SlotTtl()
    for key, until in ((1, 10), (2, 11), (3, 12)):
        ttl.block(key, until)
    ttl.prune(11)
    assert len(ttl) == 1
    assert 3 in ttl


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=30), st.integers(0, 60))
def test_slot_ttl_matches_a_max_per_key_model(blocks: list[tuple[int, int]], slot: int) -> None:
    ttl: SlotTtl[int] = SlotTtl()
    model: dict[int, int] = {}
    for key, until in blocks:
        ttl.block(key, until)
        model[key] = max(model.get(key, until), until)
    for key in range(6):
        assert ttl.blocked(key, slot) == (key in model and slot < model[key])


def _intent(slot: int, duration: int, uuid: bytes) -> OrderIntent:
    params = OrderParams(
        OrderType.Market,
        MarketType.Perp,
        PositionDirection.Long,
        BASE_PRECISION,
        0,
        auction_duration=duration,
        auction_start_price=100 * PRICE_PRECISION,
        auction_end_price=101 * PRICE_PRECISION,
    )
    return OrderIntent(TRADER.pubkey, 0, params, slot, uuid)


def test_intent_cache_keeps_intents_until_their_auction_is_over() -> None:
    cache = IntentCache()
    first = _intent(1_000, 10, b"\x01" * 8)
    second = _intent(1_005, 10, b"\x02" * 8)
    cache.ingest(
        [
            intent_delivery(first, TRADER.pubkey, first.sign(TRADER)),
            intent_delivery(second, TRADER.pubkey, second.sign(TRADER)),
        ]
    )
    found = cache.get((TRADER.pubkey, 0), b"\x01" * 8)
    assert found is not None
    assert found.to_intent() == first
    assert found.signature_bytes == first.sign(TRADER)
    cache.prune(1_010)  # the first auction's last slot: still placeable
    assert len(cache) == 2
    cache.prune(1_011)
    assert cache.get((TRADER.pubkey, 0), b"\x01" * 8) is None
    assert cache.get((TRADER.pubkey, 0), b"\x02" * 8) is not None


def test_view_reader_reads_the_view_and_names_what_is_missing() -> None:
    state = make_state()
    view = make_view(
        authority=TRADER.pubkey,
        slot=1_010,
        ts=0,
        oracles=oracle_messages({"SOL/USD": (101 * PRICE_PRECISION, 5, 1_004)}),
        perp_markets=state.perp_markets,
        spot_markets=state.spot_markets,
    )
    reader = ViewReader(view)
    assert reader.state == State()
    assert reader.perp_market(0) is state.perp_markets[0]
    assert reader.spot_market(1) is state.spot_markets[1]
    data = reader.oracle_price_data("SOL/USD")
    assert (data.price, data.confidence, data.delay) == (101 * PRICE_PRECISION, 5, 6)
    with pytest.raises(MissingAccount) as info:
        reader.oracle_price_data("BTC/USD")
    assert (info.value.kind, info.value.key) == ("oracle", "BTC/USD")
    with pytest.raises(MissingAccount):
        reader.perp_market(7)
    with pytest.raises(MissingAccount):
        reader.spot_market(7)


def test_field_index_reads_the_indexed_field_only() -> None:
    assert field_index("makers[3]", "makers") == 3
    assert field_index("makers", "makers") is None
    assert field_index("takers[1]", "makers") is None
    assert field_index(None, "makers") is None


def test_rejection_is_the_code_of_rejected_outcomes_only() -> None:
    action = Action((UpdateFundingRate(0),), "update_funding_rate", "k")
    refused = Outcome(action, Status.REJECTED, "c", code=int(ErrorCode.FundingWasNotUpdated))
    assert rejection(refused) == ErrorCode.FundingWasNotUpdated
    assert rejection(Outcome(action, Status.ACCEPTED, "c")) is None
    assert rejection(Outcome(action, Status.FAILED, "c")) is None


def test_require_raises_a_config_error_naming_the_key() -> None:
    require(True, "max_makers", "fine")
    with pytest.raises(ConfigError) as info:
        require(False, "max_makers", "too many")
    assert info.value.path == "max_makers"


def test_short_hex_is_the_first_four_bytes() -> None:
    assert short_hex(bytes(range(32))) == "00010203"
