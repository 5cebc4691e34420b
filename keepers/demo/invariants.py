"""The demo's end-of-run invariant check, computed from the node's final state and the records.

The same identities the protocol's property tests hold after every step
(``tests/protocol/test_fill_conservation.py``, ``tests/protocol/test_bankruptcy.py``), checked
once over a whole run of real order flow, liquidations and settlements:

Quote conserved through the fills, per perp market: the fill-conservation identity carried
across funding, PnL settlement and BAL providers (:func:`_perp_quote_flow`), where nothing
else (a capped funding update, a repeg, a liquidation, a bankruptcy) moved that market's quote.

Positions sum to zero with the AMM, per perp market:

* ``base``: the users' positions add up to the AMM's counterparty position plus what the BAL
  providers hold unsettled (``base_asset_amount_with_amm + base_asset_amount_with_unsettled_lp``)
  and to the market's long and short totals;
* ``quote``: the users' perp quote adds up to ``amm.quote_asset_amount`` (the program's running
  aggregate).

Quote conserved, per spot market with flows (USDC above all):

* ``tokens``: the market vault plus its insurance-fund vault hold exactly what came in (net
  deposits, from the ``DepositRecord`` stream) plus the net insurance stakes (``stake`` minus
  ``unstake`` records): fees, PnL settlement, revenue settlement and bankruptcy payments only
  move tokens between them;
* ``claims``: the vault covers every claim on it: users' deposits minus borrows, the revenue
  pool, and (for the quote market) each perp market's PnL pool and fee pool, to within one
  token unit per balance (each token amount is a rounded conversion of a scaled balance).

The token identity needs every record: it is only asserted when no record was missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from keepers.demo.report import InvariantResult
from protocol.accounts import ProgramState
from protocol.constants import QUOTE_SPOT_MARKET_INDEX
from protocol.math.spot_balance import get_signed_token_amount, get_token_amount
from protocol.types import SpotBalanceType

DEPOSIT = SpotBalanceType.Deposit


@dataclass(frozen=True, slots=True)
class QuoteFlows:
    """Per perp market, from the records (QUOTE_PRECISION): what the vAMM's curve took in for
    its position (``amm_cost_basis``, from the ``amm`` fills), the PnL settled out to users'
    USDC (``settled_pnl``), the quote moved into BAL providers' positions
    (``lp_settled_quote``), the insurance-fund fees of perp liquidations
    (``liquidation_if_fees``), the repegs' costs (``repeg_costs``), and the markets whose
    quote also moved another way (``other``, with why)."""

    amm_cost_basis: Mapping[int, int]
    settled_pnl: Mapping[int, int]
    lp_settled_quote: Mapping[int, int]
    liquidation_if_fees: Mapping[int, int]
    repeg_costs: Mapping[int, int]
    other: Mapping[int, Set[str]]


def check_invariants(
    state: ProgramState,
    *,
    deposits: Mapping[int, int],
    insurance_stakes: Mapping[int, int],
    records_complete: bool,
    flows: QuoteFlows | None = None,
) -> list[InvariantResult]:
    results: list[InvariantResult] = []
    results += _perp_positions(state)
    if flows is not None and records_complete:
        results += _perp_quote_flow(state, flows)
    results += _spot_tokens(state, deposits, insurance_stakes, records_complete)
    return results


def _perp_positions(state: ProgramState) -> list[InvariantResult]:
    results = []
    for index, market in sorted(state.perp_markets.items()):
        positions = [
            p
            for user in state.users.values()
            for p in user.perp_positions
            if p.market_index == index
        ]
        if not positions:
            continue
        amm = market.amm
        base = sum(p.base_asset_amount for p in positions)
        longs = sum(p.base_asset_amount for p in positions if p.base_asset_amount > 0)
        shorts = sum(p.base_asset_amount for p in positions if p.base_asset_amount < 0)
        quote = sum(p.quote_asset_amount for p in positions)
        counterparty = amm.base_asset_amount_with_amm + amm.base_asset_amount_with_unsettled_lp
        base_ok = (
            base == counterparty
            and longs == amm.base_asset_amount_long
            and shorts == amm.base_asset_amount_short
        )
        results.append(
            InvariantResult(
                f"perp {index} ({market.name}) positions sum to zero with the AMM",
                base_ok,
                f"users {base} = with_amm {amm.base_asset_amount_with_amm} + unsettled lp "
                f"{amm.base_asset_amount_with_unsettled_lp}; longs {longs} / "
                f"{amm.base_asset_amount_long}, shorts {shorts} / {amm.base_asset_amount_short}",
            )
        )
        results.append(
            InvariantResult(
                f"perp {index} ({market.name}) quote adds up",
                quote == amm.quote_asset_amount,
                f"users {quote} = amm.quote_asset_amount {amm.quote_asset_amount}",
            )
        )
    return results


def _perp_quote_flow(state: ProgramState, flows: QuoteFlows) -> list[InvariantResult]:
    """Per market, the fill-conservation identity (the test's: users' quote + the market's
    fees + the vAMM's cost basis = 0), carried across what else moves a perp market's quote:
    ``sum(users' quote) + total_fee_minus_distributions + vAMM cost basis + settled PnL +
    net_unsettled_funding_pnl - quote settled into LP positions + liquidations' insurance fees
    + repeg costs = 0``, exactly.

    Not checked for a market where a capped funding update (long and short rates differ: the
    fee pool pays the gap), a bankruptcy (the fund's payment, a socialized loss) or a
    liquidation of PnL against a deposit or a borrow moved quote: flows this sum does not
    carry (the result says which markets were left out and why)."""
    results = []
    left_out = []
    for index, market in sorted(state.perp_markets.items()):
        positions = [
            p
            for user in state.users.values()
            for p in user.perp_positions
            if p.market_index == index
        ]
        if not positions:
            continue
        if index in flows.other:
            left_out.append(f"perp {index} ({', '.join(sorted(flows.other[index]))})")
            continue
        amm = market.amm
        users = sum(p.quote_asset_amount for p in positions)
        terms = {
            "fees": amm.total_fee_minus_distributions,
            "vAMM cost basis": flows.amm_cost_basis.get(index, 0),
            "settled": flows.settled_pnl.get(index, 0),
            "unsettled funding": amm.net_unsettled_funding_pnl,
            "LP settled": -flows.lp_settled_quote.get(index, 0),
            "liquidation fees": flows.liquidation_if_fees.get(index, 0),
            "repegs": flows.repeg_costs.get(index, 0),
        }
        total = users + sum(terms.values())
        shown = " + ".join(f"{name} {value}" for name, value in terms.items() if value)
        results.append(
            InvariantResult(
                f"perp {index} ({market.name}) quote conserved through fills",
                total == 0,
                f"users {users} + {shown} = {total}",
            )
        )
    if left_out:
        results.append(
            InvariantResult(
                "quote flow identity not summed for",
                True,
                "; ".join(left_out),
                note=True,
            )
        )
    return results


def _spot_tokens(
    state: ProgramState,
    deposits: Mapping[int, int],
    insurance_stakes: Mapping[int, int],
    records_complete: bool,
) -> list[InvariantResult]:
    results = []
    for index, spot in sorted(state.spot_markets.items()):
        inflow = deposits.get(index, 0) + insurance_stakes.get(index, 0)
        held = spot.vault_amount + spot.insurance_fund.vault_amount
        if inflow == 0 and held == 0:
            continue
        if records_complete:
            results.append(
                InvariantResult(
                    f"spot {index} ({spot.name}) tokens conserved",
                    held == inflow,
                    f"vault {spot.vault_amount} + insurance fund "
                    f"{spot.insurance_fund.vault_amount} = deposits in {deposits.get(index, 0)}"
                    f" + stakes {insurance_stakes.get(index, 0)}",
                )
            )
        claims = 0
        balances = 0
        for user in state.users.values():
            for position in user.spot_positions:
                if position.market_index == index and position.scaled_balance:
                    amount = get_token_amount(position.scaled_balance, spot, position.balance_type)
                    claims += get_signed_token_amount(amount, position.balance_type)
                    balances += 1
        pools = [spot.revenue_pool.scaled_balance]
        if index == QUOTE_SPOT_MARKET_INDEX:
            for market in state.perp_markets.values():
                pools += [market.pnl_pool.scaled_balance, market.amm.fee_pool.scaled_balance]
        for scaled in pools:
            if scaled:
                claims += get_token_amount(scaled, spot, DEPOSIT)
                balances += 1
        gap = spot.vault_amount - claims
        results.append(
            InvariantResult(
                f"spot {index} ({spot.name}) vault covers every claim",
                0 <= gap <= balances + 1,
                f"vault {spot.vault_amount} - claims {claims} = {gap} "
                f"(rounding allowance {balances + 1} over {balances} balances)",
            )
        )
    return results
