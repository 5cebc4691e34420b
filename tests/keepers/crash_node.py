"""A ledger process for the crash test: submits rounds of signed transactions until killed.

``python -m tests.keepers.crash_node PATH SEED USERS ROUNDS PER_ROUND SNAPSHOT_EVERY ROUND_MS``

Builds the rounds of :func:`tests.keepers.scenario.build_rounds`, prints ``ready``, then for
each round submits its transactions concurrently (one slot per round, paced ``ROUND_MS`` apart
like a node's slot clock) and prints ``ack INDEX`` as soon as each one is acknowledged
(durable), then ``hash INDEX STATE_HASH`` once the round is done. After the last round it
prints ``done`` and waits to be killed without closing the ledger, so every run ends in a crash.
"""

from __future__ import annotations

import asyncio
import sys

from keepers.ledger import Ledger, LedgerConfig, Receipt
from protocol.clock import Clock
from tests.keepers.scenario import build_rounds, genesis


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _submit(ledger: Ledger, raw: bytes, clock: Clock) -> None:
    result = await ledger.submit_receipt(raw, clock)
    if not isinstance(result, Receipt):
        raise SystemExit(f"rejected: {result}")
    _out(f"ack {result.index}")


async def _run(argv: list[str]) -> None:
    path, seed, users, n_rounds, per_round, snapshot_every, round_ms = argv
    rounds, _ = build_rounds(int(seed), int(users), int(n_rounds), int(per_round))
    config = LedgerConfig(snapshot_every=int(snapshot_every), checkpoint_every=50)
    ledger = Ledger.open(path, genesis(), config=config)
    _out("ready")
    for rnd in rounds:
        async with asyncio.TaskGroup() as group:
            for raw in rnd.txs:
                group.create_task(_submit(ledger, raw, rnd.clock))
        _out(f"hash {ledger.last_index} {ledger.state_hash()}")
        await asyncio.sleep(int(round_ms) / 1000)  # the slot clock of this stand-in node
    _out("done")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_run(sys.argv[1:]))
