"""Oracle updates: the oracle authority publishes a price and its confidence.

The program reads oracles it does not write (Pyth); in this model the exchange's oracle
authority key writes them with a signed transaction, so an oracle price is as verifiable as
any other input. A market's oracle TWAPs are updated when the market next reads the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.accounts import Accounts
from protocol.codec import I64, U64
from protocol.instructions.registry import handler, instruction
from protocol.records import OracleUpdateRecord


@instruction(20)
@dataclass(frozen=True, slots=True)
class UpdateOracle:
    oracle_id: str
    price: I64  # PRICE_PRECISION; non-positive prices are accepted and judged invalid by readers
    confidence: U64
    has_sufficient_number_of_data_points: bool = True


@handler(UpdateOracle)
def update_oracle(accounts: Accounts, ix: UpdateOracle) -> None:
    accounts.require_signer(accounts.state.oracle_authority, "oracle_authority")
    oracle = accounts.oracle(ix.oracle_id)
    oracle.price = ix.price
    oracle.confidence = ix.confidence
    oracle.publish_slot = accounts.clock.slot
    oracle.has_sufficient_number_of_data_points = ix.has_sufficient_number_of_data_points
    accounts.emit(OracleUpdateRecord(ix.oracle_id, ix.price, ix.confidence, accounts.clock.slot))
