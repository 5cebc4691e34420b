"""Insurance-fund share math (the program's ``math/insurance.rs``).

Units: ``amount`` and vault balances are tokens in the mint's units (``u64`` in the program);
shares are ``u128`` at the fund's ``shares_base`` exponent; a share price is PRICE_PRECISION.

Shares are claims on the insurance fund vault pro rata: ``n`` shares of ``total_if_shares``
are worth ``vault * n / total_if_shares`` tokens, truncated, so a holder is never paid more
than its exact share and the sum of every holder's value never exceeds the vault. New shares
for a deposit are ``amount * total_if_shares / vault``, truncated (the depositor gets at most
what it paid for). An empty vault with no shares mints one share per token.

``log10_iter`` is the program's ``math/helpers.rs::log10_iter``, kept here because the rebase
math is its only user.
"""

from __future__ import annotations

from protocol.constants import PRICE_PRECISION
from protocol.error_codes import ErrorCode
from protocol.errors import MathError, ProtocolError
from protocol.math.amm import get_proportion_u128
from protocol.numeric import cast_u32, cast_u64, div_trunc
from protocol.state.insurance_fund_stake import InsuranceFundStake
from protocol.state.spot_market import SpotMarket


def _sub_u(a: int, b: int, what: str) -> int:
    # the program's unsigned safe_sub: underflow is a MathError
    if b > a:
        raise MathError(f"{what}: {a} - {b} underflows")
    return a - b


def log10_iter(n: int) -> int:
    """How many times ``n`` divides by ten before it drops below ten (0 for ``n < 10``)."""
    result = 0
    while n >= 10:
        result += 1
        n = div_trunc(n, 10)
    return result


def vault_amount_to_if_shares(
    amount: int, total_if_shares: int, insurance_fund_vault_balance: int
) -> int:
    """Shares ``amount`` tokens buy: ``amount * total_if_shares / vault`` (truncated), or one
    share per token when the vault is empty, which requires there to be no shares
    (``InvalidIFSharesDetected``): shares over an empty vault would be worthless and a deposit
    would be handed to their holders."""
    if insurance_fund_vault_balance > 0:
        return get_proportion_u128(amount, total_if_shares, insurance_fund_vault_balance)
    if total_if_shares != 0:
        raise ProtocolError(
            ErrorCode.InvalidIFSharesDetected,
            f"vault is empty but total_if_shares={total_if_shares}",
        )
    return amount


def if_shares_to_vault_amount(
    n_shares: int, total_if_shares: int, insurance_fund_vault_balance: int
) -> int:
    """Tokens ``n_shares`` are worth: ``vault * n_shares / total_if_shares`` (truncated), 0 when
    there are no shares. ``n_shares`` may not exceed the total (``InvalidIFSharesDetected``)."""
    if n_shares > total_if_shares:
        raise ProtocolError(
            ErrorCode.InvalidIFSharesDetected,
            f"n_shares({n_shares}) > total_if_shares({total_if_shares})",
        )
    if total_if_shares == 0:
        return 0
    return cast_u64(get_proportion_u128(insurance_fund_vault_balance, n_shares, total_if_shares))


def calculate_rebase_info(
    total_if_shares: int, insurance_fund_vault_balance: int
) -> tuple[int, int]:
    """``(expo_diff, rebase_divisor)``: the power of ten to divide every share count by when
    shares have grown to more than ten per vault token, so share counts stay within range
    after the vault is drained. ``rebase_divisor == 10 ** expo_diff``; ``(0, 1)`` means no
    rebase. The program never rebases upward. An empty vault is a ``MathError``."""
    rebase_divisor_full = div_trunc(div_trunc(total_if_shares, 10), insurance_fund_vault_balance)
    expo_diff = cast_u32(log10_iter(rebase_divisor_full))
    return expo_diff, 10**expo_diff


def calculate_if_shares_lost(
    insurance_fund_stake: InsuranceFundStake,
    spot_market: SpotMarket,
    insurance_fund_vault_balance: int,
) -> int:
    """Shares a staker gives up when it cancels its unstake request.

    A request locks in at most ``last_withdraw_request_value`` tokens. If the requested shares
    are now worth more (the fund gained while the request was pending), cancelling must not
    let the staker keep that gain: it keeps only as many of the requested shares as its
    locked-in value buys from the rest of the fund, and loses the difference. If the fund lost
    value meanwhile, nothing is lost.
    """
    n_shares = insurance_fund_stake.last_withdraw_request_shares
    total_shares = spot_market.insurance_fund.total_shares
    amount = if_shares_to_vault_amount(n_shares, total_shares, insurance_fund_vault_balance)
    if amount <= insurance_fund_stake.last_withdraw_request_value:
        return 0
    new_n_shares = vault_amount_to_if_shares(
        insurance_fund_stake.last_withdraw_request_value,
        _sub_u(total_shares, n_shares, "total_shares - requested shares"),
        _sub_u(
            insurance_fund_vault_balance,
            insurance_fund_stake.last_withdraw_request_value,
            "vault - requested value",
        ),
    )
    if new_n_shares > n_shares:
        raise ProtocolError(
            ErrorCode.InvalidIFSharesDetected,
            "Issue calculating delta if_shares after canceling request "
            f"{new_n_shares} < {n_shares}",
        )
    return n_shares - new_n_shares


def calculate_share_price(total_if_shares: int, insurance_fund_vault_balance: int) -> int:
    """Tokens per share, PRICE_PRECISION (0 when there are no shares)."""
    if total_if_shares == 0:
        return 0
    return cast_u64(div_trunc(insurance_fund_vault_balance * PRICE_PRECISION, total_if_shares))
