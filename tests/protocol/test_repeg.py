"""Repeg math and the AMM update: the program's ``math/repeg/tests.rs`` and
``controller/repeg/tests.rs`` vectors, plus the admin repeg / k update checks worked by hand.

Units: peg PEG_PRECISION (1e6), prices PRICE_PRECISION (1e6), reserves AMM_RESERVE_PRECISION
(1e9), costs QUOTE_PRECISION (1e6; positive: the market paid).
"""

from __future__ import annotations

import pytest

from protocol.constants import (
    AMM_RESERVE_PRECISION,
    MAX_CONCENTRATION_COEFFICIENT,
    PEG_PRECISION,
    PRICE_PRECISION,
    QUOTE_PRECISION,
)
from protocol.controller.amm import update_amm, update_amm_and_check_validity, update_amm_with_cost
from protocol.controller.repeg import apply_cost_to_market, repeg, update_k
from protocol.error_codes import ErrorCode
from protocol.errors import ProtocolError
from protocol.math.amm import (
    bid_ask_price,
    calculate_bid_ask_bounds,
    calculate_oracle_twap_5min_price_spread_pct,
    calculate_swap_output,
    calculate_terminal_reserves,
    is_oracle_mark_too_divergent,
    is_recent_oracle_valid,
    reserve_price,
)
from protocol.math.amm_spread import calculate_max_target_spread
from protocol.math.funding import calculate_fee_pool
from protocol.math.oracle import DriftAction, OracleValidity
from protocol.math.repeg import (
    adjust_amm,
    calculate_optimal_peg_and_budget,
    calculate_peg_from_target_price,
    calculate_per_peg_cost,
    calculate_repeg_cost,
)
from protocol.state import HistoricalOracleData, OraclePriceData, PerpMarket, State
from protocol.state.state import (
    OracleGuardRails,
    PriceDivergenceGuardRails,
    ValidityGuardRails,
)
from protocol.types import ContractTier, MarketStatus, SwapDirection
from tests.protocol.amm_defaults import default_btc_test_market, program_amm, program_market

A = AMM_RESERVE_PRECISION
P = PRICE_PRECISION


def _state(confidence_interval_max_size: int) -> State:
    return State(
        oracle_guard_rails=OracleGuardRails(
            price_divergence=PriceDivergenceGuardRails(
                mark_oracle_percent_divergence=1, oracle_twap_5min_percent_divergence=10
            ),
            validity=ValidityGuardRails(
                slots_before_stale_for_amm=10,
                slots_before_stale_for_margin=120,
                confidence_interval_max_size=confidence_interval_max_size,
                too_volatile_ratio=5,
            ),
        )
    )


def _oracle(price: int, confidence: int = 0, delay: int = 0) -> OraclePriceData:
    return OraclePriceData(price=price, confidence=confidence, delay=delay)


def _btc_like(**changes: int) -> PerpMarket:
    """The program's btc-esque repeg market: users net short 1 unit at a $19,400 peg."""
    fields = {
        "base_asset_reserve": 65 * A,
        "quote_asset_reserve": 63015384615,
        "terminal_quote_asset_reserve": 64 * A,
        "sqrt_k": 64 * A,
        "peg_multiplier": 19_400_000_000,
        "base_asset_amount_with_amm": -A,
        "mark_std": P,
        "curve_update_intensity": 100,
        **changes,
    }
    return program_market(program_amm(**fields))


def test_calculate_peg_from_target_price_vectors() -> None:
    px = 19401125456
    assert calculate_peg_from_target_price(A, A, px) == 19401125456
    assert calculate_peg_from_target_price(A - 10000, A + 10000, px) == 19401513482
    assert calculate_peg_from_target_price(A + 10000, A - 10000, px) == 19400737437
    assert calculate_peg_from_target_price(A // 2, A * 2, px) == 77604501824
    px2 = P + (P // 10000) * 5
    assert calculate_peg_from_target_price(A, A, px2) == 1000500
    assert calculate_peg_from_target_price(A, A, px2 - 1) == 1000499
    assert calculate_peg_from_target_price(1, A, 0) == 1  # never below 1


def test_repeg_cost_and_per_peg_cost() -> None:
    market = _btc_like()
    # (63015384615 - 64e9) * (19401e6 - 19400e6) / 1e9 = -984615.385 -> -984615 (toward zero)
    assert calculate_repeg_cost(market.amm, 19_401_000_000) == -984615
    # (63015384615 - 64e9) / 1000 = -984615.385 -> ceil -984615, then one more: -984616
    assert calculate_per_peg_cost(63015384615, 64 * A) == -984616
    assert calculate_per_peg_cost(64 * A + 1, 64 * A) == 2  # ceil(0.001) = 1, then 2
    assert calculate_per_peg_cost(64 * A, 64 * A) == 0


def test_calculate_optimal_peg_and_budget_vectors() -> None:
    market = _btc_like(
        base_spread=250,
        max_spread=500 * 100,
        total_exchange_fee=QUOTE_PRECISION,
        total_fee_minus_distributions=40 * QUOTE_PRECISION,
    )
    market.margin_ratio_initial = 500
    assert reserve_price(market.amm) == 18807668638

    # far below the reserve price and unaffordable: aim half a max spread short of the oracle
    peg, budget, check_lb = calculate_optimal_peg_and_budget(market, _oracle(12_400 * P))
    assert (peg, budget, check_lb) == (13110290527, 6192944714, False)

    # within half a max spread: the fee pool (40 - 1/2 fee lower bound = 39.5) is the budget
    for price, confidence, expected_peg in (
        (18_901 * P, 167, 19496270752),
        (18_601 * P, 167, 19186822509),
        (20_400 * P, 1234567, 21042480468),
        (42_400 * P, 0, 43735351562),  # repegging up earns against a net short
    ):
        assert calculate_optimal_peg_and_budget(market, _oracle(price, confidence)) == (
            expected_peg,
            39_500_000,
            True,
        )

    market.amm.base_asset_amount_with_amm = A
    quote, _ = calculate_swap_output(A, market.amm.base_asset_reserve, SwapDirection.Add, 64 * A)
    market.amm.terminal_quote_asset_reserve = quote
    # now users are net long: the same repeg costs $2219.032405, paid regardless of the bound
    assert calculate_optimal_peg_and_budget(market, _oracle(42_400 * P)) == (
        42641967773,
        22190932405,
        False,
    )


def test_optimal_peg_with_negative_fee_pool_and_update_amm_cost() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=2270516211133,
            quote_asset_reserve=2270925669621,
            terminal_quote_asset_reserve=2270688451627,
            sqrt_k=2270720931148,
            peg_multiplier=17723081263,
            base_asset_amount_with_amm=237200000,
            mark_std=43112524,
            base_spread=250,
            curve_update_intensity=100,
            max_spread=500 * 100,
            total_exchange_fee=298628987,
            total_fee_minus_distributions=-242668966,
            total_fee_withdrawn=124247717,
            concentration_coef=1020710,
            historical_oracle_data=HistoricalOracleData(
                last_oracle_price_twap=17765940050, last_oracle_price_twap_5min=17763317077
            ),
        ),
        margin_ratio_initial=500,
    )
    quote, base = calculate_terminal_reserves(market.amm)
    market.amm.terminal_quote_asset_reserve = quote
    market.amm.min_base_asset_reserve, market.amm.max_base_asset_reserve = calculate_bid_ask_bounds(
        market.amm.concentration_coef, base
    )
    oracle = _oracle(17_800 * P, 10233)
    assert calculate_optimal_peg_and_budget(market, oracle) == (17796790576, 0, False)

    assert market.amm.last_update_slot == 0
    validity, cost = update_amm_with_cost(market, oracle, _state(1000), 1, 1337)
    assert validity == OracleValidity.Valid
    assert cost == 442
    assert market.amm.last_update_slot == 1337
    assert is_recent_oracle_valid(market.amm, 1337)
    assert not is_recent_oracle_valid(market.amm, 1338)
    assert not is_recent_oracle_valid(market.amm, 1336)


def test_adjust_amm_repeg_in_favour() -> None:
    market = _btc_like(base_asset_amount_with_amm=A)
    prev_price = reserve_price(market.amm)
    optimal_peg = calculate_peg_from_target_price(
        market.amm.quote_asset_reserve, market.amm.base_asset_reserve, 20_401_125_456
    )
    assert optimal_peg > market.amm.peg_multiplier
    repegged, cost = adjust_amm(market, optimal_peg, 0, True)
    assert cost == -1618354580
    assert repegged.amm.peg_multiplier == optimal_peg
    assert reserve_price(repegged.amm) - prev_price == 1593456817
    assert market.amm.peg_multiplier == 19_400_000_000  # the input is not modified


def test_adjust_amm_with_sufficient_fees() -> None:
    market = program_market(
        program_amm(
            order_step_size=1000,
            base_asset_reserve=60437939720095,
            quote_asset_reserve=60440212459368,
            terminal_quote_asset_reserve=60439072663003,
            sqrt_k=60439076079049,
            peg_multiplier=34353000,
            base_asset_amount_with_amm=A,
            last_mark_price_twap=34128370,
            last_mark_price_twap_ts=165705,
            curve_update_intensity=100,
            base_spread=1000,
            total_fee_minus_distributions=304289,
            total_fee=607476,
            total_exchange_fee=0,
            funding_period=3600,
            concentration_coef=MAX_CONCENTRATION_COEFFICIENT,
        ),
        next_curve_record_id=1,
        next_fill_record_id=4,
        margin_ratio_initial=1000,
        margin_ratio_maintenance=500,
    )
    quote, base = calculate_terminal_reserves(market.amm)
    market.amm.terminal_quote_asset_reserve = quote
    market.amm.min_base_asset_reserve, market.amm.max_base_asset_reserve = calculate_bid_ask_bounds(
        market.amm.concentration_coef, base
    )
    optimal_peg = calculate_peg_from_target_price(
        market.amm.quote_asset_reserve, market.amm.base_asset_reserve, 35768 * P // 1000
    )
    fee_budget = calculate_fee_pool(market)
    assert fee_budget > 0
    repegged, cost = adjust_amm(market, optimal_peg, fee_budget, True)
    # the budget falls short of the optimal peg: the peg moves as far as it pays for
    assert repegged.amm.peg_multiplier == 34657283
    assert cost == 304289


def test_update_amm_repegs_toward_a_far_oracle() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=65 * A,
            quote_asset_reserve=63015384615,
            terminal_quote_asset_reserve=64 * A,
            sqrt_k=64 * A,
            peg_multiplier=19_400 * PEG_PRECISION,
            base_asset_amount_with_amm=-A,
            mark_std=P,
            historical_oracle_data=HistoricalOracleData(
                last_oracle_price_twap=19_400 * P, last_oracle_price_twap_5min=19_400 * P
            ),
            base_spread=250,
            curve_update_intensity=100,
            max_spread=55500,
            concentration_coef=31020710,
        ),
        contract_tier=ContractTier.B,
        margin_ratio_initial=555,
    )
    amm = market.amm
    quote, base = calculate_terminal_reserves(amm)
    assert quote == 64000000000
    amm.min_base_asset_reserve, amm.max_base_asset_reserve = calculate_bid_ask_bounds(
        amm.concentration_coef, base
    )
    state = _state(1000)
    now, slot = 10000, 81680085
    oracle = _oracle(12_400 * P, delay=2)

    reserve_before = reserve_price(amm)
    assert reserve_before == 18807668638
    amm.historical_oracle_data.last_oracle_price_twap_5min = 18907668639
    amm.historical_oracle_data.last_oracle_price_twap_ts = now - (167 + 6)
    pct = calculate_oracle_twap_5min_price_spread_pct(amm, reserve_before)
    assert pct == -5316
    assert not is_oracle_mark_too_divergent(pct, state.oracle_guard_rails.price_divergence)

    _, cost = update_amm_with_cost(market, oracle, state, now, slot)

    assert amm.sqrt_k == 63936000000  # k lowered 0.1% to stretch the budget
    reserve_after = reserve_price(amm)
    assert reserve_after == 12743902015
    assert amm.historical_oracle_data.last_oracle_price == 12400000000
    assert amm.last_oracle_normalised_price == 15520000000  # clamped to 20% (tier B) of the twap
    assert amm.historical_oracle_data.last_oracle_price_twap == 15520000000
    assert amm.historical_oracle_data.last_oracle_price_twap_5min == 16954113056
    pct = calculate_oracle_twap_5min_price_spread_pct(amm, reserve_after)
    assert pct == -330370
    assert is_oracle_mark_too_divergent(pct, state.oracle_guard_rails.price_divergence)

    # the oracle is so far off the peg is forced toward it at the market's expense
    assert amm.peg_multiplier == 13145260284
    assert amm.total_fee_minus_distributions == -6158609264
    assert -cost == amm.total_fee_minus_distributions

    bid, ask = bid_ask_price(amm, reserve_after)
    assert amm.long_spread + amm.short_spread == 453312
    assert (bid, ask) == (7404359997, 13181323707)
    assert bid < oracle.price <= ask
    assert (ask - bid) * 1000000 // reserve_after == 453311


def test_update_amm_with_a_stale_oracle_changes_nothing_but_the_flag() -> None:
    market = program_market(
        program_amm(
            base_asset_reserve=65 * A,
            quote_asset_reserve=630153846154000,
            terminal_quote_asset_reserve=64 * A,
            sqrt_k=64 * A,
            peg_multiplier=19_400_000,
            base_asset_amount_with_amm=-A,
            mark_std=P,
            concentration_coef=1020710,
            historical_oracle_data=HistoricalOracleData(last_oracle_price_twap=19_400 * P),
            base_spread=250,
            curve_update_intensity=100,
            max_spread=55500,
        ),
        margin_ratio_initial=555,
    )
    validity = update_amm(market, _oracle(12_400 * P, delay=12), _state(20000), 10000, 81680085)
    assert validity == OracleValidity.stale_for_amm(immediate=True, low_risk=True)
    assert not market.amm.last_oracle_valid
    assert market.amm.last_update_slot == 0


def test_update_amm_with_large_confidence() -> None:
    now, slot = 1662800000 + 60, 81680085
    market = default_btc_test_market()
    amm = market.amm
    state = _state(20000)
    assert reserve_price(amm) == 18807668638
    assert (amm.long_spread, amm.short_spread) == (0, 0)

    _, cost = update_amm_with_cost(market, _oracle(18_850 * P, delay=9), state, now, slot)
    assert cost == -42992787  # repegging up earns against users' net short
    assert (amm.short_spread, amm.long_spread) == (12576, 125)
    assert reserve_price(amm) == 18849999999

    _, cost = update_amm_with_cost(market, _oracle(18_850 * P, 100 * P, delay=1), state, now, slot)
    assert cost == 0
    mrk = reserve_price(amm)
    assert bid_ask_price(amm, mrk) == (18351342099, 18892167448)
    assert mrk == 18849999999
    assert (amm.long_spread, amm.peg_multiplier, amm.short_spread) == (2237, 19443664550, 26454)

    oracle = _oracle(18_820 * P, 100 * P, delay=1)
    assert amm.total_fee_minus_distributions == 42992787
    assert calculate_fee_pool(market) == 42992787
    optimal_peg = calculate_peg_from_target_price(
        amm.quote_asset_reserve, amm.base_asset_reserve, oracle.price
    )
    assert optimal_peg == 19412719726
    assert calculate_repeg_cost(amm, optimal_peg) == 30468749
    _, cost = update_amm_with_cost(market, oracle, state, now, slot)
    assert cost == 30468749
    assert (amm.long_spread, amm.short_spread) == (1888, 28443)
    mrk = reserve_price(amm)
    assert (bid_ask_price(amm, mrk), mrk) == ((18284702739, 18855532158), 18819999999)

    oracle = _oracle(18_823 * P, 121 * P, delay=1)
    _, cost = update_amm_with_cost(market, oracle, state, now, slot)
    assert cost == -3046875
    assert (amm.long_spread, amm.short_spread) == (1877, 28289)
    mrk = reserve_price(amm)
    assert (bid_ask_price(amm, mrk), mrk) == ((18290516152, 18858330769), 18822999999)


def test_update_amm_with_large_confidence_and_negative_fee_pool() -> None:
    now, slot = 1662800000 + 60, 81680085
    market = default_btc_test_market()
    amm = market.amm
    amm.concentration_coef = 1414213
    amm.total_fee_minus_distributions = -(10000 * QUOTE_PRECISION)
    state = _state(20000)

    _, cost = update_amm_with_cost(market, _oracle(18_850 * P, delay=9), state, now, slot)
    assert is_recent_oracle_valid(amm, slot)
    assert cost == -42992787
    assert (amm.sqrt_k, amm.base_asset_reserve, amm.quote_asset_reserve) == (
        64000000000,
        65000000000,
        63015384615,
    )
    assert amm.terminal_quote_asset_reserve == 64000000000
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (45254851991, 90509632000)
    assert amm.peg_multiplier == 19443664550
    assert amm.total_fee_minus_distributions == -9957007213
    assert amm.long_spread == 1250
    max_target = calculate_max_target_spread(
        reserve_price(amm),
        amm.last_oracle_reserve_price_spread_pct,
        amm.last_oracle_conf_pct,
        amm.mark_std,
        amm.oracle_std,
        amm.max_spread,
    )
    assert max_target == 29177
    assert amm.short_spread == 16020
    assert reserve_price(amm) == 18849999999

    _, cost = update_amm_with_cost(market, _oracle(18_850 * P, 100 * P, delay=1), state, now, slot)
    assert cost == 0
    mrk = reserve_price(amm)
    assert (bid_ask_price(amm, mrk), mrk) == ((18524950599, 19065775948), 18849999999)
    assert (amm.long_spread, amm.short_spread) == (11447, 17244)

    oracle = _oracle(18_820 * P, 100 * P, delay=1)
    assert calculate_fee_pool(market) == 0
    _, cost = update_amm_with_cost(market, oracle, state, now, slot)
    # no budget: k is lowered 0.1% and what that earns pays part of the repeg
    assert cost == 21459587
    assert (amm.sqrt_k, amm.base_asset_reserve, amm.quote_asset_reserve) == (
        63936000000,
        64935000065,
        62952369167,
    )
    assert amm.terminal_quote_asset_reserve == 63936999950
    assert (amm.min_base_asset_reserve, amm.max_base_asset_reserve) == (45208890078, 90417708246)
    assert amm.peg_multiplier == 19421869997
    assert (amm.last_oracle_valid, amm.last_update_slot) == (True, slot)
    assert (amm.long_spread, amm.short_spread) == (11397, 18698)
    max_target = calculate_max_target_spread(
        reserve_price(amm),
        amm.last_oracle_reserve_price_spread_pct,
        amm.last_oracle_conf_pct,
        amm.mark_std,
        amm.oracle_std,
        amm.max_spread,
    )
    assert max_target == 30095
    mrk = reserve_price(amm)
    assert (bid_ask_price(amm, mrk), mrk) == ((18476808623, 19043463492), 18828870851)

    _, cost = update_amm_with_cost(market, _oracle(18_823 * P, 121 * P, delay=1), state, now, slot)
    assert cost == 299367
    assert (amm.long_spread, amm.short_spread) == (11685, 18426)
    mrk = reserve_price(amm)
    assert (bid_ask_price(amm, mrk), mrk) == ((18481640718, 19048587972), 18828576061)


def test_update_amm_skips_settled_markets_and_checks_validity() -> None:
    market = default_btc_test_market()
    market.status = MarketStatus.Settlement
    before = market.amm.clone()
    assert update_amm_with_cost(market, _oracle(18_850 * P), _state(20000), 1, 1) == (None, 0)
    assert market.amm == before

    market = default_btc_test_market()
    with pytest.raises(ProtocolError) as err:  # delay 1 is stale for immediate AMM fills
        update_amm_and_check_validity(
            market,
            _oracle(19_400 * P, delay=1),
            _state(20000),
            1662800060,
            5,
            DriftAction.FillOrderAmmImmediate,
        )
    assert err.value.code == ErrorCode.InvalidOracle
    update_amm_and_check_validity(
        market,
        _oracle(19_400 * P, delay=1),
        _state(20000),
        1662800060,
        5,
        DriftAction.FillOrderAmmLowRisk,
    )
    assert market.amm.last_update_slot == 5


# --- apply_cost_to_market, the admin repeg and k update ----------------------------------------


def test_apply_cost_to_market_respects_the_fee_lower_bound() -> None:
    market = _btc_like(
        total_exchange_fee=100 * QUOTE_PRECISION,  # lower bound: half, $50
        total_fee_minus_distributions=60 * QUOTE_PRECISION,
    )
    amm = market.amm
    assert not apply_cost_to_market(market, 11 * QUOTE_PRECISION, True)  # 60 - 11 < 50
    assert amm.total_fee_minus_distributions == 60 * QUOTE_PRECISION
    assert apply_cost_to_market(market, 10 * QUOTE_PRECISION, True)  # exactly the bound
    assert amm.total_fee_minus_distributions == 50 * QUOTE_PRECISION
    assert amm.net_revenue_since_last_funding == -10 * QUOTE_PRECISION
    assert apply_cost_to_market(market, 70 * QUOTE_PRECISION, False)  # bound waived
    assert amm.total_fee_minus_distributions == -20 * QUOTE_PRECISION
    assert apply_cost_to_market(market, -5 * QUOTE_PRECISION, True)  # revenue always lands
    assert amm.total_fee_minus_distributions == -15 * QUOTE_PRECISION
    assert amm.net_revenue_since_last_funding == -75 * QUOTE_PRECISION


def _guard_rails() -> OracleGuardRails:
    return State().oracle_guard_rails


def test_admin_repeg_toward_the_oracle_earns_against_a_net_short() -> None:
    market = default_btc_test_market()
    amm = market.amm
    # terminal: remove users' 1e9 short from 65e9 base -> 64e9 base, 64e9 quote: price $19,400
    # closing the short costs users (64e9 - 63015384615 + 1) reserve units * peg / 1e9 + 1:
    #   at 19400: 984615386 * 19400 / 1000 = 19101538488 (+1) ; at 19450: 19150769257 (+1)
    # so raising the peg to 19450 costs users 49230769 and the market earns it
    cost = repeg(market, _oracle(19_500 * P), 19_450 * PEG_PRECISION, _guard_rails())
    assert cost == -49230769
    assert amm.peg_multiplier == 19_450 * PEG_PRECISION
    assert amm.total_fee_minus_distributions == 49230769
    assert amm.net_revenue_since_last_funding == 49230769


@pytest.mark.parametrize(
    ("oracle", "new_peg", "code"),
    [
        (_oracle(19_500 * P), 19_400 * PEG_PRECISION, ErrorCode.InvalidRepegRedundant),
        (_oracle(19_500 * P, delay=1), 19_450 * PEG_PRECISION, ErrorCode.InvalidOracle),
        # terminal price would fall from 19400 while the oracle is above it
        (_oracle(19_500 * P), 19_350 * PEG_PRECISION, ErrorCode.InvalidRepegDirection),
        # terminal 19450 lands inside the oracle's band [19400, 19600]
        (_oracle(19_500 * P, 100 * P), 19_450 * PEG_PRECISION, ErrorCode.InvalidRepegProfitability),
        # terminal 19600 overshoots the oracle: seen as moving away from it
        (_oracle(19_500 * P), 19_600 * PEG_PRECISION, ErrorCode.InvalidRepegDirection),
    ],
)
def test_admin_repeg_rejections(oracle: OraclePriceData, new_peg: int, code: ErrorCode) -> None:
    market = default_btc_test_market()
    before = market.amm.clone()
    with pytest.raises(ProtocolError) as err:
        repeg(market, oracle, new_peg, _guard_rails())
    assert err.value.code == code
    assert market.amm == before


def test_admin_repeg_the_fees_cannot_pay_for() -> None:
    market = default_btc_test_market()
    amm = market.amm
    # users net long 1e9 instead: terminal = add 1e9 base: 66e9 base, 64e9^2/66e9 quote
    amm.base_asset_amount_with_amm = A
    amm.terminal_quote_asset_reserve, _ = calculate_terminal_reserves(amm)
    # raising the peg now costs the market; its fee pool is empty
    with pytest.raises(ProtocolError) as err:
        repeg(market, _oracle(19_500 * P), 19_401 * PEG_PRECISION, _guard_rails())
    assert err.value.code == ErrorCode.InvalidRepegProfitability

    amm.total_fee_minus_distributions = 10 * QUOTE_PRECISION
    cost = repeg(market, _oracle(19_500 * P), 19_401 * PEG_PRECISION, _guard_rails())
    # closing the long adds 1e9 base: quote 63015384615 -> 4096e18 // 66e9 = 62060606060,
    # 954778555 reserve units: worth 954778555 * 19400 // 1000 = 18522703967 at the old peg and
    # 954778555 * 19401 // 1000 = 18523658745 at the new one; users gain the difference
    assert cost == 18523658745 - 18522703967 == 954778
    assert amm.total_fee_minus_distributions == 10 * QUOTE_PRECISION - 954778


def _k_market(**changes: int) -> PerpMarket:
    """Users net short 100 units of a 1000-unit curve pegged at $100: the AMM holds 1100 base
    and 1e24 // 1100e9 = 909090909090 quote (reserve price $82.644628); closing the short
    takes the curve back to balance."""
    sqrt_k = 1000 * A
    base = 1100 * A
    fields = {
        "base_asset_reserve": base,
        "quote_asset_reserve": sqrt_k * sqrt_k // base,
        "sqrt_k": sqrt_k,
        "peg_multiplier": 100 * PEG_PRECISION,
        "concentration_coef": MAX_CONCENTRATION_COEFFICIENT,
        "base_asset_amount_with_amm": -100 * A,
        **changes,
    }
    market = program_market(program_amm(**fields))
    quote, base_t = calculate_terminal_reserves(market.amm)
    market.amm.terminal_quote_asset_reserve = quote
    market.amm.min_base_asset_reserve, market.amm.max_base_asset_reserve = calculate_bid_ask_bounds(
        MAX_CONCENTRATION_COEFFICIENT, base_t
    )
    return market


# Closing the short before any change: remove 100e9 base (1100e9 -> 1000e9), quote rises to
# 1e12: (1e12 - 909090909090 + 1) * 100e6 // 1e9 + 1 = 9090909092 to buy back.


def test_admin_update_k_increase_is_paid_from_fees() -> None:
    market = _k_market(total_fee_minus_distributions=100 * QUOTE_PRECISION)
    amm = market.amm
    cost = update_k(market, 1100 * A)
    # +10%: base 1100e9 * 1.1 = 1210e9, quote 1.21e24 // 1210e9 = 1e12; buying back now moves
    # base 1210e9 -> 1110e9, quote to 1.21e24 // 1110e9 = 1090090090090:
    # (1090090090090 - 1e12 + 1) * 100e6 // 1e9 + 1 = 9009009010, so users save 81900082
    assert (amm.sqrt_k, amm.base_asset_reserve, amm.quote_asset_reserve) == (
        1100 * A,
        1210 * A,
        10**12,
    )
    assert cost == 9090909092 - 9009009010 == 81900082
    assert amm.total_fee_minus_distributions == 100 * QUOTE_PRECISION - 81900082
    assert amm.net_revenue_since_last_funding == -81900082
    assert reserve_price(amm) == 82644628  # 1e12 * 1e8 // 1210e9, unchanged


def test_admin_update_k_decrease_earns() -> None:
    market = _k_market()
    amm = market.amm
    cost = update_k(market, 900 * A)
    # -10%: ratio 9e8 (+1 when shrinking) -> base 1100e9 * 900000001 // 1e9 = 990000001100,
    # quote 8.1e23 // 990000001100 = 818181817272; buying back: base 890000001100, quote
    # 8.1e23 // 890000001100 = 910112358425, (910112358425 - 818181817272 + 1) * 100e6 // 1e9
    # + 1 = 9193054116: users pay 102145024 more, which the market earns
    assert (amm.base_asset_reserve, amm.quote_asset_reserve) == (990000001100, 818181817272)
    assert cost == 9090909092 - 9193054116 == -102145024
    assert amm.total_fee_minus_distributions == 102145024
    assert reserve_price(amm) == 82644627  # one unit of rounding, within $0.0001


@pytest.mark.parametrize(
    ("sqrt_k", "tfmd", "detail"),
    [
        (1100 * A, 0, "adjustment_cost"),  # raising k with no fees to pay for it
        (499 * A, 0, "halves"),  # more than halving in one step
        (10**21 + 1, 10**15, "MAX_SQRT_K"),  # past MAX_SQRT_K
    ],
)
def test_admin_update_k_rejections(sqrt_k: int, tfmd: int, detail: str) -> None:
    market = _k_market(total_fee_minus_distributions=tfmd)
    with pytest.raises(ProtocolError) as err:
        update_k(market, sqrt_k)
    assert err.value.code == ErrorCode.InvalidUpdateK
    assert detail in err.value.detail
