"""``keepers demo``: the whole system in one process, with simulated traders and makers.

One command, no set-up: the node (with a journal in a temporary directory), an embedded MQTT
broker (or ``--broker mqtt://host:port``), a seeded oracle random walk per market, simulated
traders placing every order type (market, limit, stop, oracle-pegged, signed intents),
resting makers quoting around the oracle (one of them a BAL provider), and every bot the
runtime knows (filler, trigger, JIT maker, funding-rate updater, and the liquidator and the
revenue/PnL/LP settlers where installed), all as tasks of one ``asyncio.TaskGroup``.

While it runs, a one-screen summary is redrawn in place (a line now and then when stdout is
not a terminal). At the end it prints a report: orders by type, fills by layer (JIT, DLOB,
vAMM), keeper rewards, funding updates, rejections by code, intent-to-fill latency p50/p99,
liquidations, bankruptcies and the insurance fund, and an invariant check (positions sum to
zero with the AMM, quote conserved). ``--summary FILE`` also writes the report as JSON.

The scenario: ordinary trading, then a crash (a sharp oracle move) that puts two leveraged
traders under water (liquidations, and a bankruptcy the insurance fund pays), and twice a
fast-forward of protocol time to the next funding period (funding, revenue and LP settlement
are hourly). ``--slots N --seed S`` make the run reproducible: the oracle walk, the
participants' keys and their choices all derive from the seed.

Exit status: 0 when the invariants hold, 1 when they do not (or the run failed), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from keepers.config import ConfigError
from keepers.demo.report import DemoReport, format_report
from keepers.demo.run import CORE_BOTS, RISK_BOTS, DemoConfig, run_demo
from keepers.logging import configure_logging

__all__ = ["DemoConfig", "DemoReport", "build_parser", "main", "run_demo"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _markets(text: str) -> tuple[int, ...]:
    try:
        indexes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected perp market indexes like 0,1,2, got {text!r}"
        ) from None
    if not indexes or any(i < 0 for i in indexes):
        raise argparse.ArgumentTypeError(f"expected perp market indexes like 0,1,2, got {text!r}")
    return indexes


def _fraction_or_off(text: str) -> float | None:
    if text.lower() in ("off", "none", "no"):
        return None
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or 'off', got {text!r}")
    return value


def _fractions_or_off(text: str) -> tuple[float, ...]:
    if text.lower() in ("off", "none", "no"):
        return ()
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.6,0.9, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions in (0, 1) or 'off', got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog="keepers demo",
        description="Start the node, an embedded broker, a simulated oracle, traders and makers, "
        "and every bot, in one process; print a live summary and a final report.",
        epilog="Exit status: 0 the invariants hold, 1 they do not (or the run failed), "
        "2 usage error.",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=defaults.slots,
        metavar="N",
        help=f"how many slots to run (default {defaults.slots})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        metavar="S",
        help="seed of the oracle walk, the participants' keys and their choices "
        f"(default {defaults.seed})",
    )
    parser.add_argument(
        "--slot-ms",
        type=int,
        default=defaults.slot_ms,
        metavar="MS",
        help=f"slot length in milliseconds (default {defaults.slot_ms})",
    )
    parser.add_argument(
        "--summary", type=Path, metavar="FILE", help="also write the final report as JSON"
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="use this MQTT broker (mqtt://host:port) instead of the embedded one",
    )
    parser.add_argument("--transport", metavar="NAME", help="MQTT client: gmqtt or aiomqtt")
    parser.add_argument(
        "--traders", type=int, default=defaults.traders, metavar="N", help="ordinary traders"
    )
    parser.add_argument(
        "--makers", type=int, default=defaults.makers, metavar="N", help="resting makers"
    )
    parser.add_argument(
        "--markets",
        type=_markets,
        default=defaults.markets,
        metavar="LIST",
        help="perp markets to trade, e.g. 0,1,2 (default: all three)",
    )
    parser.add_argument(
        "--crash-at",
        type=_fraction_or_off,
        default=defaults.crash_at,
        metavar="FRACTION",
        help="when the oracle crash happens, as a fraction of the run, or 'off' "
        f"(default {defaults.crash_at})",
    )
    parser.add_argument(
        "--fast-forward-at",
        type=_fractions_or_off,
        default=defaults.fast_forward_at,
        metavar="FRACTIONS",
        help="when protocol time jumps to the next funding period (comma-separated "
        "fractions of the run), or 'off' (default "
        f"{','.join(str(f) for f in defaults.fast_forward_at)})",
    )
    parser.add_argument(
        "--bots",
        metavar="LIST",
        help="comma-separated bots to run (default: every available one of "
        f"{', '.join(CORE_BOTS + RISK_BOTS)})",
    )
    parser.add_argument(
        "--separate-bots",
        action="store_true",
        help="run each bot with its own bus connection, node client and DLOB",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="no live summary, only the final report"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level (logs are JSON lines on stderr; default warning)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    bots = None
    if args.bots is not None:
        bots = tuple(name.strip() for name in args.bots.split(",") if name.strip())
    return DemoConfig(
        slots=args.slots,
        seed=args.seed,
        slot_ms=args.slot_ms,
        broker=args.broker,
        transport=args.transport,
        traders=args.traders,
        makers=args.makers,
        markets=args.markets,
        crash_at=args.crash_at,
        fast_forward_at=args.fast_forward_at,
        bots=bots,
        separate_bots=args.separate_bots,
        live=not args.no_live,
    )


async def _run_until_signal(config: DemoConfig, out: TextIO) -> DemoReport:
    """The demo. A first SIGINT/SIGTERM ends the trading early (the run drains and reports
    what ran); a second one cancels it outright."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_demo(config, out, stop=stop))

    def interrupt() -> None:
        if stop.is_set():
            task.cancel()
        else:
            stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupt)
            installed.append(sig)
    try:
        return await task
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def write_summary(report: DemoReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``keepers demo [options]``; returns the exit status."""
    stream = out if out is not None else sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"keepers demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.summary is not None and not args.summary.parent.exists():
        print(f"keepers demo: no directory for --summary {args.summary}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level, json=True)
    try:
        report = asyncio.run(_run_until_signal(config, stream))
    except asyncio.CancelledError:
        print("keepers demo: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"keepers demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stream.write(format_report(report) + "\n")
    stream.flush()
    if args.summary is not None:
        write_summary(report, args.summary)
    return EXIT_OK if report.invariants_ok else EXIT_FAILED


def with_defaults(**changes: object) -> DemoConfig:
    """A :class:`DemoConfig` with ``changes`` over the defaults (for tests and scripts)."""
    return replace(DemoConfig(), **changes)  # type: ignore[arg-type]
