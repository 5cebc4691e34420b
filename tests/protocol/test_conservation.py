"""Property: tokens are conserved across random deposit / withdraw / borrow / transfer flows.

A hypothesis state machine sends real signed transactions through ``Program.execute`` and,
after every step, checks at the program's precision that

* each market's ``deposit_balance`` equals the users' scaled deposits plus the revenue pool,
  and ``borrow_balance`` the users' scaled borrows (so the sum of users' signed balances is
  ``deposit_balance - borrow_balance`` less the pool);
* the vault holds exactly what came in minus what went out;
* the vault covers deposits minus borrows in tokens (the market is solvent);
* a rejected transaction changed nothing.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.constants import PRICE_PRECISION
from protocol.errors import Rejected
from protocol.instructions import Deposit, InitializeUser, TransferDeposit, Withdraw
from protocol.math.spot_balance import get_token_amount
from protocol.program import Executed
from protocol.state_hash import state_hash
from protocol.types import SpotBalanceType
from tests.protocol.world import SOL, SOL_UNIT, USDC, USDC_UNIT, World, keypair

KEYS = [keypair(10 + i) for i in range(3)]
UNITS = {USDC: USDC_UNIT, SOL: SOL_UNIT}

amounts = st.integers(1, 5_000).map(lambda n: n * 10**5)  # 0.1 .. 500 whole tokens / 10


class Conservation(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.world = World()
        self.flow = {USDC: 0, SOL: 0}
        for kp in KEYS:
            self.world.ok(InitializeUser(kp.pubkey, 0), InitializeUser(kp.pubkey, 1), signers=(kp,))

    def _send(self, ix: object, signer: int) -> Executed | Rejected:
        before = state_hash(self.world.program.state, self.world.program.next_seq)
        result = self.world.send(ix, signers=(KEYS[signer],))
        if isinstance(result, Rejected):
            assert state_hash(self.world.program.state, self.world.program.next_seq) == before
        self.world.advance(1, seconds=0)  # a fresh recent_slot per transaction
        return result

    @rule(
        who=st.integers(0, 2),
        sub=st.integers(0, 1),
        market=st.sampled_from([USDC, SOL]),
        amount=amounts,
    )
    def deposit(self, who: int, sub: int, market: int, amount: int) -> None:
        amount = amount * UNITS[market] // 10**6
        ix = Deposit(KEYS[who].pubkey, sub, market, amount)
        result = self._send(ix, who)
        if isinstance(result, Executed):
            self.flow[market] += sum(
                r.record.amount
                for r in result.records
                if getattr(r.record, "direction", "") == "deposit"
            )

    @rule(
        who=st.integers(0, 2),
        sub=st.integers(0, 1),
        market=st.sampled_from([USDC, SOL]),
        amount=amounts,
        reduce_only=st.booleans(),
    )
    def withdraw(self, who: int, sub: int, market: int, amount: int, reduce_only: bool) -> None:
        amount = amount * UNITS[market] // 10**6
        ix = Withdraw(KEYS[who].pubkey, sub, market, amount, reduce_only)
        result = self._send(ix, who)
        if isinstance(result, Executed):
            self.flow[market] -= sum(
                r.record.amount
                for r in result.records
                if getattr(r.record, "direction", "") == "withdraw"
            )

    @rule(
        who=st.integers(0, 2),
        market=st.sampled_from([USDC, SOL]),
        amount=amounts,
        forward=st.booleans(),
    )
    def transfer(self, who: int, market: int, amount: int, forward: bool) -> None:
        amount = amount * UNITS[market] // 10**6
        src, dst = (0, 1) if forward else (1, 0)
        self._send(TransferDeposit(KEYS[who].pubkey, src, dst, market, amount), who)

    @rule(seconds=st.integers(1, 3 * 86_400), move_bps=st.integers(-800, 800))
    def time_passes(self, seconds: int, move_bps: int) -> None:
        self.world.advance(slots=seconds * 10 // 4, seconds=seconds)
        sol = self.world.program.state.oracles["SOL/USD"]
        price = max(sol.price * (10_000 + move_bps) // 10_000, PRICE_PRECISION)
        self.world.set_price("SOL/USD", price, confidence=price // 1000)
        self.world.set_price("USDC/USD", PRICE_PRECISION)

    @invariant()
    def balances_add_up(self) -> None:
        state = self.world.program.state
        for index, market in state.spot_markets.items():
            deposits = borrows = 0
            for user in state.users.values():
                pos = user.get_spot_position(index)
                if pos is None:
                    continue
                if pos.balance_type == SpotBalanceType.Deposit:
                    deposits += pos.scaled_balance
                else:
                    borrows += pos.scaled_balance
            assert market.deposit_balance == deposits + market.revenue_pool.scaled_balance
            assert market.borrow_balance == borrows
            assert market.vault_amount == self.flow[index]
            deposit_tokens = get_token_amount(
                market.deposit_balance, market, SpotBalanceType.Deposit
            )
            borrow_tokens = get_token_amount(market.borrow_balance, market, SpotBalanceType.Borrow)
            assert market.vault_amount >= deposit_tokens - borrow_tokens


Conservation.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_token_conservation = Conservation.TestCase
