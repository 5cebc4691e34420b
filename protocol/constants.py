"""The program's fixed-point precisions and protocol constants.

Every amount in ``protocol/`` is an ``int`` at one of these precisions; the names match the
program's ``math/constants.rs`` (without the ``_I128``/``_U64`` width suffixes, which Python's
unbounded ints make redundant; widths are enforced by the checked casts in
:mod:`protocol.numeric` where the program stores a value).
"""

from __future__ import annotations

from typing import Final

# --- indices and account limits -------------------------------------------------------------
QUOTE_SPOT_MARKET_INDEX: Final = 0
MAX_SPOT_POSITIONS: Final = 8
MAX_PERP_POSITIONS: Final = 8
MAX_OPEN_ORDERS: Final = 32

# --- precisions (value = 10**exponent) --------------------------------------------------------
AMM_RESERVE_PRECISION: Final = 10**9
BASE_PRECISION: Final = AMM_RESERVE_PRECISION
PERP_DECIMALS: Final = 9  # base amounts of perp markets are BASE_PRECISION
PRICE_PRECISION: Final = 10**6
PEG_PRECISION: Final = 10**6
QUOTE_PRECISION: Final = 10**6
FUNDING_RATE_BUFFER: Final = 10**3
MARGIN_PRECISION: Final = 10**4
SPOT_WEIGHT_PRECISION: Final = MARGIN_PRECISION
LIQUIDATION_PCT_PRECISION: Final = 10**4
SPOT_BALANCE_PRECISION: Final = 10**9
SPOT_CUMULATIVE_INTEREST_PRECISION: Final = 10**10
PERCENTAGE_PRECISION: Final = 10**6
BID_ASK_SPREAD_PRECISION: Final = PERCENTAGE_PRECISION
CONCENTRATION_PRECISION: Final = PERCENTAGE_PRECISION
IF_FACTOR_PRECISION: Final = PERCENTAGE_PRECISION
SPOT_UTILIZATION_PRECISION: Final = PERCENTAGE_PRECISION
SPOT_RATE_PRECISION: Final = PERCENTAGE_PRECISION
LIQUIDATION_FEE_PRECISION: Final = PERCENTAGE_PRECISION
SPOT_IMF_PRECISION: Final = PERCENTAGE_PRECISION
FUNDING_RATE_PRECISION: Final = PRICE_PRECISION * FUNDING_RATE_BUFFER  # 1e9

TEN_BPS: Final = PERCENTAGE_PRECISION // 1000
TWO_PT_TWO_PCT: Final = 22_000

# --- precision ratios ------------------------------------------------------------------------
PRICE_TO_PEG_PRECISION_RATIO: Final = PRICE_PRECISION // PEG_PRECISION
AMM_TO_QUOTE_PRECISION_RATIO: Final = AMM_RESERVE_PRECISION // QUOTE_PRECISION  # 1e3
AMM_TIMES_PEG_TO_QUOTE_PRECISION_RATIO: Final = (
    AMM_RESERVE_PRECISION * PEG_PRECISION // QUOTE_PRECISION
)  # 1e9
PRICE_TO_QUOTE_PRECISION_RATIO: Final = PRICE_PRECISION // QUOTE_PRECISION
PRICE_TIMES_AMM_TO_QUOTE_PRECISION_RATIO: Final = (
    PRICE_PRECISION * AMM_RESERVE_PRECISION // QUOTE_PRECISION
)  # 1e9
LIQUIDATION_FEE_TO_MARGIN_PRECISION_RATIO: Final = LIQUIDATION_FEE_PRECISION // MARGIN_PRECISION
FUNDING_RATE_TO_QUOTE_PRECISION_PRECISION_RATIO: Final = FUNDING_RATE_PRECISION // QUOTE_PRECISION
# base (1e9) * funding rate (1e9) / this = quote (1e6)
QUOTE_TO_BASE_AMT_FUNDING_PRECISION: Final = (
    AMM_RESERVE_PRECISION * FUNDING_RATE_PRECISION // QUOTE_PRECISION
)  # 1e12

# --- time (seconds) ----------------------------------------------------------------------------
ONE_MINUTE: Final = 60
FIVE_MINUTE: Final = 5 * 60
ONE_HOUR: Final = 3600
TWENTY_FOUR_HOUR: Final = 24 * 3600
THIRTEEN_DAY: Final = 13 * TWENTY_FOUR_HOUR
EPOCH_DURATION: Final = 28 * TWENTY_FOUR_HOUR
THIRTY_DAY: Final = 30 * TWENTY_FOUR_HOUR
ONE_YEAR: Final = 31_536_000

# --- quote amounts -----------------------------------------------------------------------------
ONE_HUNDRED_MILLION_QUOTE: Final = 100_000_000 * QUOTE_PRECISION
TEN_MILLION_QUOTE: Final = 10_000_000 * QUOTE_PRECISION
FIVE_MILLION_QUOTE: Final = 5_000_000 * QUOTE_PRECISION
ONE_MILLION_QUOTE: Final = 1_000_000 * QUOTE_PRECISION
TWO_HUNDRED_FIFTY_THOUSAND_QUOTE: Final = 250_000 * QUOTE_PRECISION
ONE_HUNDRED_THOUSAND_QUOTE: Final = 100_000 * QUOTE_PRECISION
TWENTY_FIVE_THOUSAND_QUOTE: Final = 25_000 * QUOTE_PRECISION
TEN_THOUSAND_QUOTE: Final = 10_000 * QUOTE_PRECISION
ONE_THOUSAND_QUOTE: Final = 1_000 * QUOTE_PRECISION
TWO_HUNDRED_FIFTY_QUOTE: Final = 250 * QUOTE_PRECISION

# --- fees --------------------------------------------------------------------------------------
ONE_BPS_DENOMINATOR: Final = 10_000
FEE_DENOMINATOR: Final = 10 * ONE_BPS_DENOMINATOR
FEE_PERCENTAGE_DENOMINATOR: Final = 100
FEE_ADJUSTMENT_MAX: Final = 100
OPEN_ORDER_MARGIN_REQUIREMENT: Final = QUOTE_PRECISION // 100
LP_FEE_SLICE_NUMERATOR: Final = 8
LP_FEE_SLICE_DENOMINATOR: Final = 10
MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND: Final = 150_000 * QUOTE_PRECISION
# Fee-pool surplus (QUOTE) above which a perp market's fees may flow to the revenue pool.
FEE_POOL_TO_REVENUE_POOL_THRESHOLD: Final = TWO_HUNDRED_FIFTY_QUOTE
# The share of exchange fees a perp market keeps out of reach of funding/repeg/k costs (1/2).
SHARE_OF_FEES_ALLOCATED_TO_DRIFT_NUMERATOR: Final = 1
SHARE_OF_FEES_ALLOCATED_TO_DRIFT_DENOMINATOR: Final = 2

# --- margin --------------------------------------------------------------------------------
MAX_MARGIN_RATIO: Final = MARGIN_PRECISION  # 1x leverage
MIN_MARGIN_RATIO: Final = 125  # 80x leverage
MAX_POSITIVE_UPNL_FOR_INITIAL_MARGIN: Final = 100 * QUOTE_PRECISION
DEFAULT_LIQUIDATION_MARGIN_BUFFER_RATIO: Final = MARGIN_PRECISION // 50  # 2%
MAX_LIQUIDATION_MULTIPLIER: Final = 3
LIQUIDATION_FEE_INCREASE_PER_SLOT: Final = LIQUIDATION_FEE_PRECISION // 1_000_000  # .01 bps

# --- AMM -----------------------------------------------------------------------------------
MAX_SQRT_K: Final = 10**21
MAX_BASE_ASSET_AMOUNT_WITH_AMM: Final = 4 * 10**17
MAX_CONCENTRATION_COEFFICIENT: Final = 1_414_200
MAX_BID_ASK_INVENTORY_SKEW_FACTOR: Final = 10 * BID_ASK_SPREAD_PRECISION
DEFAULT_MAX_TWAP_UPDATE_PRICE_BAND_DENOMINATOR: Final = 3
DEFAULT_BASE_ASSET_AMOUNT_STEP_SIZE: Final = BASE_PRECISION // 10_000
DEFAULT_QUOTE_ASSET_AMOUNT_TICK_SIZE: Final = PRICE_PRECISION // DEFAULT_BASE_ASSET_AMOUNT_STEP_SIZE
# k updates: scale factors are K_BPS_UPDATE_SCALE-based ratios (1e6 = unchanged)
K_BPS_UPDATE_SCALE: Final = PERCENTAGE_PRECISION
MAX_K_BPS_INCREASE: Final = TEN_BPS  # one formulaic step raises k by at most 0.1%
MAX_K_BPS_DECREASE: Final = TWO_PT_TWO_PCT  # ... and lowers it by at most 2.2%
HUNDRENTH_OF_CENT: Final = PRICE_PRECISION // 10_000  # the program's spelling
MAX_UPDATE_K_PRICE_CHANGE: Final = HUNDRENTH_OF_CENT  # admin k updates may move price <= $0.0001
# spreads widen 10x while the market's fee pool is empty
DEFAULT_LARGE_BID_ASK_FACTOR: Final = 10 * BID_ASK_SPREAD_PRECISION
# spreads start retreating once a funding period loses more than $25
DEFAULT_REVENUE_SINCE_LAST_FUNDING_SPREAD_RETREAT: Final = -25 * QUOTE_PRECISION

# --- funding -------------------------------------------------------------------------------
FUNDING_RATE_OFFSET_DENOMINATOR: Final = 5000  # 7.3% annualized for hourly funding

# --- orders --------------------------------------------------------------------------------
AUCTION_DERIVE_PRICE_FRACTION: Final = 200
MAX_PREDICTION_MARKET_PRICE: Final = PRICE_PRECISION  # a prediction share pays at most $1

# --- spot ------------------------------------------------------------------------------------
SPOT_MARKET_TOKEN_TWAP_WINDOW: Final = TWENTY_FOUR_HOUR
# Utilization breakpoints above optimal and the weight of each segment of the borrow-rate curve.
INTEREST_RATE_SEGMENT_AND_WEIGHTS: Final = (
    (850_000, 50),
    (900_000, 100),
    (950_000, 150),
    (990_000, 200),
    (995_000, 250),
    (1_000_000, 250),
)

# --- insurance ---------------------------------------------------------------------------------
MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT: Final = 10 * PERCENTAGE_PRECISION  # 1000% APR
# the governance token's insurance fund (market 15) is capped at 1/22 = 4.5% APR instead
MAX_APR_PER_REVENUE_SETTLE_TO_INSURANCE_FUND_VAULT_GOV: Final = PERCENTAGE_PRECISION // 22
GOV_SPOT_MARKET_INDEX: Final = 15
# share of each revenue settlement sent to the insurance fund vault (all of it)
SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_NUMERATOR: Final = 1
SHARE_OF_REVENUE_ALLOCATED_TO_INSURANCE_FUND_VAULT_DENOMINATOR: Final = 1
