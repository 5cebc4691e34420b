"""Oracle accounts and the price data read from them.

An oracle account is written by the oracle authority (an ``update_oracle`` instruction);
readers see :class:`OraclePriceData` whose ``delay`` is the age in slots at the reading slot,
which is what the program's validity rules judge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OraclePriceData:
    """A price as read at some slot (PRICE_PRECISION)."""

    price: int
    confidence: int
    delay: int  # slots since the price was published
    has_sufficient_number_of_data_points: bool = True


@dataclass(slots=True)
class OracleAccount:
    """The stored oracle: last published price, confidence and the slot it was published in."""

    oracle_id: str
    price: int
    confidence: int
    publish_slot: int
    has_sufficient_number_of_data_points: bool = True

    def price_data(self, slot: int) -> OraclePriceData:
        return OraclePriceData(
            price=self.price,
            confidence=self.confidence,
            delay=max(slot - self.publish_slot, 0),
            has_sufficient_number_of_data_points=self.has_sufficient_number_of_data_points,
        )

    def clone(self) -> OracleAccount:
        return OracleAccount(
            self.oracle_id,
            self.price,
            self.confidence,
            self.publish_slot,
            self.has_sufficient_number_of_data_points,
        )


@dataclass(slots=True)
class HistoricalOracleData:
    """Oracle history a market keeps (PRICE_PRECISION; ``*_ts`` unix seconds)."""

    last_oracle_price: int = 0
    last_oracle_conf: int = 0
    last_oracle_delay: int = 0
    last_oracle_price_twap: int = 0
    last_oracle_price_twap_5min: int = 0
    last_oracle_price_twap_ts: int = 0

    def clone(self) -> HistoricalOracleData:
        return HistoricalOracleData(
            self.last_oracle_price,
            self.last_oracle_conf,
            self.last_oracle_delay,
            self.last_oracle_price_twap,
            self.last_oracle_price_twap_5min,
            self.last_oracle_price_twap_ts,
        )

    @classmethod
    def seeded(cls, price: int, ts: int) -> HistoricalOracleData:
        """History that starts at ``price`` (as a market initialised with a live oracle does)."""
        return cls(price, 0, 0, price, price, ts)


@dataclass(slots=True)
class HistoricalIndexData:
    """A spot market's index bid/ask history (PRICE_PRECISION)."""

    last_index_bid_price: int = 0
    last_index_ask_price: int = 0
    last_index_price_twap: int = 0
    last_index_price_twap_5min: int = 0
    last_index_price_twap_ts: int = 0

    def clone(self) -> HistoricalIndexData:
        return HistoricalIndexData(
            self.last_index_bid_price,
            self.last_index_ask_price,
            self.last_index_price_twap,
            self.last_index_price_twap_5min,
            self.last_index_price_twap_ts,
        )
