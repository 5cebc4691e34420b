"""The executor: outcomes by code, retries of transient I/O only, dry run, dedupe, rewards."""

from __future__ import annotations

import asyncio

import pytest

from keepers.bus.schemas import RecordMessage
from keepers.rpc import NodeError, NodeUnavailableError, TxResult
from keepers.runtime.executor import Executor, RetryPolicy, Status, is_transient
from keepers.runtime.metrics import RuntimeMetrics
from protocol.error_codes import ErrorCode
from protocol.instructions.funding import UpdateFundingRate
from protocol.keys import Keypair
from tests.keepers.runtime_fakes import (
    FakeNode,
    InstantTimer,
    TransientNodeError,
    accepted,
    funding_action,
    parsed,
    rejected,
)

KEYPAIR = Keypair.from_seed(bytes(range(32)))
BOT = "filler"


def make(
    node: FakeNode, *, dry_run: bool = False, slot: int = 500, attempts: int = 4
) -> tuple[Executor, RuntimeMetrics, InstantTimer]:
    metrics = RuntimeMetrics()
    timer = InstantTimer()
    executor = Executor(
        node,
        metrics,
        slot=lambda: slot,
        dry_run=dry_run,
        retry=RetryPolicy(attempts=attempts),
        timer=timer,
    )
    return executor, metrics, timer


def counter(metrics: RuntimeMetrics, name: str, **labels: str) -> float:
    return metrics.value(f"{name}_total", **labels)


@pytest.mark.asyncio
async def test_accepted_action_is_signed_at_the_current_slot_and_counted() -> None:
    node = FakeNode()
    executor, metrics, _ = make(node, slot=512)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action(3))
    assert outcome.status is Status.ACCEPTED
    assert outcome.attempts == 1
    assert len(node.sent) == 1
    tx = parsed(node.sent[0])
    assert tx.recent_slot == 512
    assert tx.signers == (KEYPAIR.pubkey,)
    assert tx.instructions == (UpdateFundingRate(market_index=3),)
    assert outcome.signature == tx.signature
    labels = {"bot": BOT, "kind": "update_funding_rate"}
    assert counter(metrics, "keepers_tx_sent", **labels) == 1
    assert counter(metrics, "keepers_tx_accepted", **labels) == 1
    assert counter(metrics, "keepers_bot_actions", **labels) == 1


@pytest.mark.asyncio
async def test_rejection_is_a_value_recorded_by_code_name_and_not_retried() -> None:
    node = FakeNode()
    node.send_answers.append(rejected(ErrorCode.OrderDoesNotExist, "order 9 gone"))
    executor, metrics, timer = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.REJECTED
    assert outcome.code == int(ErrorCode.OrderDoesNotExist)
    assert outcome.error_code is ErrorCode.OrderDoesNotExist
    assert outcome.code_name == "OrderDoesNotExist"
    assert outcome.detail == "order 9 gone"
    assert outcome.attempts == 1
    assert len(node.sent) == 1
    assert timer.slept == []
    assert (
        counter(
            metrics,
            "keepers_tx_rejected",
            bot=BOT,
            kind="update_funding_rate",
            code="OrderDoesNotExist",
        )
        == 1
    )
    assert counter(metrics, "keepers_tx_accepted", bot=BOT, kind="update_funding_rate") == 0


@pytest.mark.asyncio
async def test_transient_errors_are_retried_with_the_same_signed_bytes() -> None:
    node = FakeNode()
    node.send_answers.extend([TransientNodeError("reset"), TimeoutError(), accepted(9)])
    executor, metrics, timer = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.ACCEPTED
    assert outcome.slot == 9
    assert outcome.attempts == 3
    assert len(node.sent) == 3
    assert node.sent[0] == node.sent[1] == node.sent[2]
    # Equal jitter: attempt n waits in [c/2, c] with c = 0.05 * 2**n.
    assert len(timer.slept) == 2
    assert 0.025 <= timer.slept[0] <= 0.05
    assert 0.05 <= timer.slept[1] <= 0.1
    assert counter(metrics, "keepers_tx_retries", bot=BOT, kind="update_funding_rate") == 2


@pytest.mark.asyncio
async def test_transient_errors_past_the_retries_give_a_failed_outcome() -> None:
    node = FakeNode()
    node.send_answers.extend([TransientNodeError("down")] * 3)
    executor, metrics, _ = make(node, attempts=3)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.FAILED
    assert outcome.attempts == 3
    assert "down" in outcome.detail
    assert counter(metrics, "keepers_tx_failed", bot=BOT, kind="update_funding_rate") == 1


@pytest.mark.asyncio
async def test_duplicate_after_a_lost_answer_means_accepted() -> None:
    node = FakeNode()
    node.send_answers.extend([TransientNodeError("lost"), rejected(ErrorCode.DuplicateTransaction)])
    executor, metrics, _ = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.ACCEPTED
    assert outcome.attempts == 2
    assert counter(metrics, "keepers_tx_accepted", bot=BOT, kind="update_funding_rate") == 1


@pytest.mark.asyncio
async def test_duplicate_after_the_clients_own_retry_means_accepted() -> None:
    node = FakeNode()
    node.send_answers.append(
        TxResult(
            ok=False,
            code=int(ErrorCode.DuplicateTransaction),
            code_name="DuplicateTransaction",
            attempts=2,
        )
    )
    executor, _, _ = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.ACCEPTED


@pytest.mark.asyncio
async def test_duplicate_on_the_first_attempt_is_a_rejection() -> None:
    node = FakeNode()
    node.send_answers.append(rejected(ErrorCode.DuplicateTransaction))
    executor, _, _ = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.status is Status.REJECTED
    assert outcome.code_name == "DuplicateTransaction"


@pytest.mark.asyncio
async def test_an_unexpected_exception_escapes_for_the_supervisor() -> None:
    node = FakeNode()
    node.send_answers.append(ValueError("bug in the client"))
    executor, _, _ = make(node)
    with pytest.raises(ValueError, match="bug in the client"):
        await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert executor.in_flight == 0


@pytest.mark.asyncio
async def test_dry_run_simulates_and_never_sends() -> None:
    node = FakeNode()
    node.simulate_answers.extend([accepted(), rejected(ErrorCode.InsufficientCollateral)])
    executor, metrics, _ = make(node, dry_run=True)
    first = await executor.execute_one(BOT, KEYPAIR, funding_action(0))
    second = await executor.execute_one(BOT, KEYPAIR, funding_action(1))
    assert node.sent == []
    assert len(node.simulated) == 2
    assert first.status is Status.SIMULATED
    assert first.simulated
    assert second.status is Status.REJECTED
    assert second.simulated
    assert second.code_name == "InsufficientCollateral"
    labels = {"bot": BOT, "kind": "update_funding_rate"}
    assert counter(metrics, "keepers_tx_sent", **labels) == 0
    assert counter(metrics, "keepers_tx_simulated", result="ok", **labels) == 1
    assert counter(metrics, "keepers_tx_simulated", result="InsufficientCollateral", **labels) == 1
    # A simulated rejection is not a sent transaction's rejection.
    assert counter(metrics, "keepers_tx_rejected", code="InsufficientCollateral", **labels) == 0


@pytest.mark.asyncio
async def test_simulate_flag_sends_only_after_an_accepted_simulation() -> None:
    node = FakeNode()
    node.simulate_answers.extend([rejected(ErrorCode.OrderDoesNotExist), accepted()])
    executor, _, _ = make(node)
    refused = await executor.execute_one(BOT, KEYPAIR, funding_action(0, simulate=True))
    sent = await executor.execute_one(BOT, KEYPAIR, funding_action(1, simulate=True))
    assert refused.status is Status.REJECTED
    assert refused.simulated
    assert sent.status is Status.ACCEPTED
    assert not sent.simulated
    assert len(node.simulated) == 2
    assert len(node.sent) == 1
    assert node.sent[0] == node.simulated[1]


@pytest.mark.asyncio
async def test_same_dedupe_key_is_never_in_flight_twice() -> None:
    node = FakeNode()
    node.send_gate = asyncio.Event()
    executor, metrics, _ = make(node)
    first = asyncio.create_task(executor.execute_one(BOT, KEYPAIR, funding_action(0, key="k")))
    await asyncio.sleep(0)
    assert executor.in_flight == 1
    second = await executor.execute_one(BOT, KEYPAIR, funding_action(1, key="k"))
    assert second.status is Status.SKIPPED
    node.send_gate.set()
    assert (await first).status is Status.ACCEPTED
    assert len(node.sent) == 1
    assert executor.in_flight == 0
    skipped = metrics.value(
        "keepers_bot_actions_skipped_total",
        bot=BOT,
        kind="update_funding_rate",
        reason="duplicate",
    )
    assert skipped == 1
    # Once the first is done, the key is free again.
    again = await executor.execute_one(BOT, KEYPAIR, funding_action(2, key="k"))
    assert again.status is Status.ACCEPTED


@pytest.mark.asyncio
async def test_outcomes_come_back_in_action_order() -> None:
    node = FakeNode()
    node.send_answers.extend([accepted(1), rejected(ErrorCode.OrderDoesNotExist), accepted(3)])
    executor, _, _ = make(node)
    actions = [funding_action(i) for i in range(3)]
    outcomes = await executor.execute(BOT, KEYPAIR, actions)
    assert [o.action for o in outcomes] == actions
    assert sorted(o.status for o in outcomes) == sorted(
        [Status.ACCEPTED, Status.ACCEPTED, Status.REJECTED]
    )
    assert await executor.execute(BOT, KEYPAIR, []) == []


@pytest.mark.asyncio
async def test_rewards_are_the_filler_rewards_credited_to_the_bot() -> None:
    mine = RecordMessage(
        seq=1,
        slot=5,
        kind="fill",
        payload={"filler": [KEYPAIR.pubkey.hex(), 0], "filler_reward": 12_345},
    )
    theirs = RecordMessage(
        seq=2, slot=5, kind="fill", payload={"filler": ["00" * 32, 0], "filler_reward": 999}
    )
    trigger = RecordMessage(
        seq=3,
        slot=5,
        kind="trigger",
        payload={"filler": [KEYPAIR.pubkey.hex(), 1], "filler_reward": 55},
    )
    node = FakeNode()
    node.send_answers.append(accepted(5, [mine, theirs, trigger]))
    executor, metrics, _ = make(node)
    outcome = await executor.execute_one(BOT, KEYPAIR, funding_action())
    assert outcome.reward == 12_345 + 55
    assert metrics.value("keepers_bot_rewards_earned_total", bot=BOT) == 12_400


@pytest.mark.asyncio
async def test_accepted_transactions_ask_for_an_account_refresh() -> None:
    node = FakeNode()
    node.send_answers.extend([accepted(), rejected(ErrorCode.OrderDoesNotExist)])
    asked: list[str] = []
    executor = Executor(
        node, RuntimeMetrics(), slot=lambda: 1, timer=InstantTimer(), on_accepted=asked.append
    )
    await executor.execute_one(BOT, KEYPAIR, funding_action(0))
    await executor.execute_one(BOT, KEYPAIR, funding_action(1))
    assert asked == [BOT]


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Flagged(Exception):
    transient = True


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (_Status(503), True),
        (_Status(429), True),
        (_Status(422), False),
        (_Status(404), False),
        (_Flagged(), True),
        (ValueError(), False),
        (KeyError(), False),
        (NodeUnavailableError(0, "node away through every retry"), True),
        (NodeError(500, "node bug"), False),
        (NodeError(400, "bad request"), False),
    ],
)
def test_transient_classification(exc: BaseException, expected: bool) -> None:
    assert is_transient(exc) is expected
