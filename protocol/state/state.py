"""Global configuration: fee structures, oracle guard rails, exchange-wide parameters.

Mirrors the program's ``State`` account. It is configuration, so it is frozen: changing it
is an admin act that builds a new value (``dataclasses.replace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.constants import (
    DEFAULT_LIQUIDATION_MARGIN_BUFFER_RATIO,
    FEE_DENOMINATOR,
    FEE_PERCENTAGE_DENOMINATOR,
    MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND,
)


@dataclass(frozen=True, slots=True)
class FeeTier:
    fee_numerator: int = 0
    fee_denominator: int = FEE_DENOMINATOR
    maker_rebate_numerator: int = 0
    maker_rebate_denominator: int = FEE_DENOMINATOR
    referrer_reward_numerator: int = 0
    referrer_reward_denominator: int = FEE_PERCENTAGE_DENOMINATOR
    referee_fee_numerator: int = 0
    referee_fee_denominator: int = FEE_PERCENTAGE_DENOMINATOR


@dataclass(frozen=True, slots=True)
class OrderFillerRewardStructure:
    reward_numerator: int = 10
    reward_denominator: int = FEE_PERCENTAGE_DENOMINATOR
    time_based_reward_lower_bound: int = 10_000  # 1 cent (QUOTE_PRECISION)


def _perp_fee_tiers() -> tuple[FeeTier, ...]:
    # taker fee 10/9/8/7/6/5 (in FEE_DENOMINATOR units = 1e5), maker rebate 2bps,
    # referrer 15% of taker fee, referee discount 5% -- the program's perps_default().
    return tuple(
        FeeTier(
            fee_numerator=n,
            maker_rebate_numerator=20,
            referrer_reward_numerator=15,
            referee_fee_numerator=5,
        )
        for n in (100, 90, 80, 70, 60, 50)
    )


@dataclass(frozen=True, slots=True)
class FeeStructure:
    fee_tiers: tuple[FeeTier, ...] = field(default_factory=_perp_fee_tiers)
    filler_reward_structure: OrderFillerRewardStructure = field(
        default_factory=OrderFillerRewardStructure
    )
    referrer_reward_epoch_upper_bound: int = MAX_REFERRER_REWARD_EPOCH_UPPER_BOUND
    flat_filler_fee: int = 10_000

    @classmethod
    def perps_default(cls) -> FeeStructure:
        return cls()

    @classmethod
    def spot_default(cls) -> FeeStructure:
        return cls(fee_tiers=(FeeTier(fee_numerator=100, maker_rebate_numerator=20),))


@dataclass(frozen=True, slots=True)
class PriceDivergenceGuardRails:
    mark_oracle_percent_divergence: int = 100_000  # 10% (PERCENTAGE_PRECISION)
    oracle_twap_5min_percent_divergence: int = 500_000  # 50%


@dataclass(frozen=True, slots=True)
class ValidityGuardRails:
    slots_before_stale_for_amm: int = 10  # ~4 s
    slots_before_stale_for_margin: int = 120  # ~48 s
    confidence_interval_max_size: int = 20_000  # 2% of price (BID_ASK_SPREAD_PRECISION)
    too_volatile_ratio: int = 5  # 5x up or 80% down versus the TWAP


@dataclass(frozen=True, slots=True)
class OracleGuardRails:
    price_divergence: PriceDivergenceGuardRails = field(default_factory=PriceDivergenceGuardRails)
    validity: ValidityGuardRails = field(default_factory=ValidityGuardRails)


@dataclass(frozen=True, slots=True)
class State:
    """Exchange-wide configuration. ``admin`` and ``oracle_authority`` are ed25519 public keys."""

    admin: bytes = bytes(32)
    oracle_authority: bytes = bytes(32)
    perp_fee_structure: FeeStructure = field(default_factory=FeeStructure.perps_default)
    spot_fee_structure: FeeStructure = field(default_factory=FeeStructure.spot_default)
    oracle_guard_rails: OracleGuardRails = field(default_factory=OracleGuardRails)
    liquidation_margin_buffer_ratio: int = DEFAULT_LIQUIDATION_MARGIN_BUFFER_RATIO
    min_perp_auction_duration: int = 10  # slots
    default_market_order_time_in_force: int = 60  # seconds
    default_spot_auction_duration: int = 10  # slots
    liquidation_duration: int = 150  # slots
    initial_pct_to_liquidate: int = 1_000  # LIQUIDATION_PCT_PRECISION: 10%
    max_number_of_sub_accounts: int = 8  # per authority
    # How many slots a transaction's recent_slot stays valid (Solana's blockhash window).
    max_transaction_age_slots: int = 150
    # Seconds after a user's last BAL share addition before it may burn shares (seed 004).
    lp_cooldown_time: int = 30
