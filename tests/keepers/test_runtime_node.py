"""The runtime against a real node and its real client: slot, markets and users read over HTTP,
an action signed, sent and its outcome recorded by the program's code."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from keepers.bus import topics
from keepers.bus.inprocess import InProcessBroker
from keepers.config import load_config
from keepers.node import Node
from keepers.rpc import NodeClient
from keepers.runtime.bot import Action, BotContext, Subscriptions
from keepers.runtime.executor import Outcome, Status
from keepers.runtime.process import BotProcess, TappedBusClient, prepare_bots
from keepers.runtime.registry import BOTS, register
from keepers.runtime.view import View
from protocol.instructions.funding import UpdateFundingRate
from protocol.keys import Keypair
from tests.keepers.node_helpers import GENESIS_SLOT, node_config, open_account

BOT = Keypair.from_seed(b"\x33" * 32)
ROOT = Path(__file__).resolve().parents[2]


class FundingOnce:
    """Asks for a funding update of SOL-PERP on each tick."""

    last: FundingOnce | None = None

    def __init__(self, context: BotContext) -> None:
        self.name = context.name
        self.subscriptions = Subscriptions()
        self.views: list[View] = []
        self.outcomes: list[Outcome] = []
        FundingOnce.last = self

    def decide(self, view: View) -> list[Action]:
        self.views.append(view)
        return [
            Action(
                instructions=(UpdateFundingRate(market_index=0),),
                kind="update_funding_rate",
                dedupe_key=("funding", 0),
            )
        ]

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.asyncio
@pytest.mark.parametrize("dry_run", [False, True])
async def test_once_against_a_real_node(tmp_path: Path, dry_run: bool) -> None:
    key = tmp_path / "bot.json"
    key.write_text(f'{{"version": 1, "pubkey": "{BOT.pubkey.hex()}", "seed": "{BOT.seed.hex()}"}}')
    name = "test-funding-once"
    register(name, FundingOnce)
    try:
        async with (
            Node(node_config(tmp_path / "journal.sqlite")) as node,
            NodeClient(node.url) as client,
        ):
            opened = await client.send_tx(open_account(BOT, GENESIS_SLOT))
            assert opened.ok, opened
            config = load_config(
                env={},
                overrides=[
                    ("node.url", node.url, "test"),
                    ("keys.default", str(key), "test"),
                    ("metrics.enabled", False, "test"),
                    ("runtime.once", True, "test"),
                    ("runtime.dry_run", dry_run, "test"),
                    ("bus.cluster", "test", "test"),
                ],
            )
            bus = TappedBusClient(
                InProcessBroker().transport("bots"),
                deadletter_topic=topics.deadletter("test"),
            )
            process = BotProcess(config, prepare_bots(config, [name]), node=client, bus=bus)
            async with asyncio.timeout(10):
                assert await process.run() == 0
    finally:
        BOTS.pop(name, None)
    bot = FundingOnce.last
    assert bot is not None
    [view] = bot.views
    assert view.slot >= GENESIS_SLOT  # from the node: no slot on this bus
    assert 0 in view.perp_markets
    assert view.perp_markets[0].amm.oracle == "SOL/USD"
    user = view.user(0)
    assert user is not None
    assert user.authority == BOT.pubkey
    [outcome] = bot.outcomes
    # Funding updates only on the hour: right after genesis the program refuses, with its code.
    assert outcome.status is Status.REJECTED
    assert outcome.code_name == "FundingWasNotUpdated"
    assert outcome.simulated is dry_run
    kind = {"bot": name, "kind": "update_funding_rate"}
    if dry_run:
        assert process.metrics.value("keepers_tx_sent_total", **kind) == 0
        assert (
            process.metrics.value("keepers_tx_simulated_total", result=outcome.code_name, **kind)
            == 1
        )
    else:
        assert (
            process.metrics.value("keepers_tx_rejected_total", code=outcome.code_name, **kind) == 1
        )


@pytest.mark.asyncio
async def test_keepers_bot_once_as_a_process(tmp_path: Path, mosquitto: str) -> None:
    """``keepers bot NAME --once`` end to end: config file, keypair file, the real client and
    a real broker; the bot module is found through its ``entry``."""
    key = tmp_path / "bot.json"
    key.write_text(f'{{"version": 1, "pubkey": "{BOT.pubkey.hex()}", "seed": "{BOT.seed.hex()}"}}')
    key.chmod(0o600)
    async with Node(node_config(tmp_path / "journal.sqlite")) as node:
        config = tmp_path / "keepers.toml"
        config.write_text(
            "\n".join(
                [
                    "[node]",
                    f'url = "{node.url}"',
                    "[bus]",
                    f'url = "{mosquitto}"',
                    "[keys]",
                    f'default = "{key}"',
                    "[metrics]",
                    "port = 0",
                    "[bots.fund]",
                    'entry = "tests.keepers.test_runtime_node:FundingOnce"',
                ]
            )
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keepers.cli",
            "bot",
            "fund",
            "--once",
            "--config",
            str(config),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    ready = [line for line in lines if line.get("event") == "keeper process ready"]
    assert ready
    assert ready[0]["bots"] == ["fund"]
