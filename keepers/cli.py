"""The ``keepers`` command.

::

    keepers node          the node: sequencer, HTTP API, journal, bus publisher
    keepers bot NAME      one bot in its own process
    keepers run           every enabled bot of a config file, in one process
    keepers dlob-server   a DLOB kept from the bus, served over HTTP
    keepers demo          the whole system in one process, with simulated traders
    keepers keygen        create a keypair file

Configuration comes from ``--config FILE`` (or ``$KEEPERS_CONFIG``), then ``KEEPERS_*``
environment variables, then flags (``--set section.key=value`` for any key); see
:mod:`keepers.config`. Exit status: 0 success (or stopped by SIGINT/SIGTERM), 2 a usage or
configuration error (the message names the key or flag), 1 a failure while running.

Subcommands whose modules other parts of the project provide (``node``, ``dlob-server``,
``demo``) import them only when run, so ``keepers --help`` and the other subcommands work
without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from keepers.config import (
    ConfigError,
    KeepersConfig,
    Override,
    load_config,
    parse_set_flag,
    text,
)
from keepers.keys import KeyFileError, write_keypair_file
from keepers.logging import configure_logging

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

PROG: Final = "keepers"
_log = structlog.get_logger("keepers.cli")


class _MissingComponent(Exception):
    def __init__(self, module: str, what: str) -> None:
        super().__init__(f"{what} is not available: module {module} is missing from this install")


# --- parser ----------------------------------------------------------------------------------
def _config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (file < environment < these flags)")
    group.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML config file (default: $KEEPERS_CONFIG, else built-in defaults)",
    )
    group.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="set_values",
        help="set any config key, e.g. --set bots.filler.interval_s=0.5 (repeatable)",
    )
    group.add_argument("--node-url", metavar="URL", help="the node's HTTP API (node.url)")
    group.add_argument(
        "--bus-url", metavar="URL", help='broker, mqtt://host:port or "embedded" (bus.url)'
    )
    group.add_argument("--cluster", metavar="NAME", help="bus cluster name (bus.cluster)")
    group.add_argument(
        "--transport", metavar="NAME", help="MQTT client: gmqtt or aiomqtt (bus.transport)"
    )
    group.add_argument(
        "--metrics-port",
        metavar="PORT",
        help="port of /health and /metrics, 0 for any free one (metrics.port)",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="debug, info, warning, error or critical (runtime.log_level)",
    )
    group.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="json (default: one object per line on stderr) or console (runtime.log_json)",
    )


def _bot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and simulate every action against the node, never send (runtime.dry_run)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="one tick per bot, then exit: 0 if every tick succeeded (runtime.once)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keeper and filler bots for a Drift-v2-style perpetuals exchange, "
        "with the node they run against.",
        epilog="Exit status: 0 ok, 2 usage or configuration error, 1 runtime failure. "
        "Run `keepers demo` to see everything working in one process.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = commands.add_parser(
        "node",
        help="run the node (sequencer, HTTP API, journal, bus publisher)",
        description="Run the node: the single sequencer that executes signed transactions, "
        "journals each accepted one before acknowledging it, serves the HTTP API at "
        "[node] host:port and publishes order events, records, slot and oracle prices on "
        "the bus.",
    )
    _config_options(node)
    node.add_argument("--host", help="listen address (node.host)")
    node.add_argument("--port", metavar="PORT", help="listen port (node.port)")
    node.add_argument("--journal", metavar="FILE", help="journal file, SQLite (node.journal)")
    node.add_argument("--slot-ms", metavar="MS", help="slot length in ms (node.slot_ms)")
    node.set_defaults(handler=_cmd_node)

    bot = commands.add_parser(
        "bot",
        help="run one bot",
        description="Run one bot in this process. NAME is a [bots.NAME] table of the config "
        "(if any) and the registered bot of that name (or its `entry`). The bot signs with "
        "the keypair file keys.<key or NAME> or keys.default. A bot that watches every user "
        "account (liquidator, pnl_settler, lp_settler) works on its own: the process loads "
        "every account from the node (GET /v1/users at node.url) and keeps them current from "
        "the node's users stream on the bus (bus.url), over a second bus connection.",
    )
    bot.add_argument(
        "name", metavar="NAME", help="the bot, e.g. filler, trigger, jit_maker, liquidator"
    )
    bot.add_argument("--key", metavar="FILE", help="keypair file to sign with (sets keys.NAME)")
    _bot_options(bot)
    _config_options(bot)
    bot.set_defaults(handler=_cmd_bot)

    run = commands.add_parser(
        "run",
        help="run every enabled bot of a config file in one process",
        description="Run every [bots.<name>] table with enabled = true (the default) from the "
        "config file (--config or $KEEPERS_CONFIG) in one process: one executor, one bus "
        "connection, one DLOB, one /health, and, if a bot watches every user (liquidator, "
        "settlers), one copy of every user account, loaded from the node and kept current "
        "from its users stream.",
    )
    _bot_options(run)
    _config_options(run)
    run.set_defaults(handler=_cmd_run)

    dlob = commands.add_parser(
        "dlob-server",
        help="serve a DLOB kept from the bus over HTTP",
        description="Follow markets' order events and signed intents on the bus, keep a DLOB, "
        "and serve /l2, /l3, /orders, /health and /metrics over HTTP.",
    )
    dlob.add_argument(
        "--market",
        action="append",
        default=[],
        metavar="MARKET",
        help="a market to follow, perp:N or spot:N (repeatable; dlob_server.markets)",
    )
    dlob.add_argument("--host", help="listen address (dlob_server.host)")
    dlob.add_argument("--port", metavar="PORT", help="listen port (dlob_server.port)")
    _config_options(dlob)
    dlob.set_defaults(handler=_cmd_dlob_server)

    commands.add_parser(
        "demo",
        help="the whole system in one process with simulated traders (see `keepers demo --help`)",
        description="Start the node, an embedded broker, simulated oracles, traders and "
        "makers, and every bot, in one process; print a live summary and a final report.",
        add_help=False,
    )

    keygen = commands.add_parser(
        "keygen",
        help="create a keypair file",
        description="Write a new ed25519 keypair to FILE (JSON with the seed and public key, "
        "mode 0600) and print its public key.",
    )
    keygen.add_argument("--out", metavar="FILE", type=Path, required=True, help="file to create")
    keygen.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    keygen.set_defaults(handler=_cmd_keygen)
    return parser


# --- configuration from flags ----------------------------------------------------------------
_FLAG_KEYS: Final = (
    ("node_url", "node.url", "--node-url"),
    ("bus_url", "bus.url", "--bus-url"),
    ("cluster", "bus.cluster", "--cluster"),
    ("transport", "bus.transport", "--transport"),
    ("metrics_port", "metrics.port", "--metrics-port"),
    ("log_level", "runtime.log_level", "--log-level"),
)


def flag_overrides(args: argparse.Namespace) -> list[Override]:
    overrides: list[Override] = []
    for attr, dotted, flag in _FLAG_KEYS:
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append((dotted, text(str(value)), f"flag {flag}"))
    log_format = getattr(args, "log_format", None)
    if log_format is not None:
        overrides.append(("runtime.log_json", log_format == "json", "flag --log-format"))
    for flag, dotted in (("dry_run", "runtime.dry_run"), ("once", "runtime.once")):
        if getattr(args, flag, False):
            overrides.append((dotted, True, f"flag --{flag.replace('_', '-')}"))
    for value in getattr(args, "set_values", []):
        overrides.append(parse_set_flag(value))
    return overrides


def _load(args: argparse.Namespace, extra: Sequence[Override] = ()) -> KeepersConfig:
    overrides = [*extra, *flag_overrides(args)]
    return load_config(args.config, overrides=overrides)


def _start_logging(config: KeepersConfig) -> None:
    """Configure logs once the configuration is known to be good, just before running."""
    configure_logging(config.runtime.log_level, json=config.runtime.log_json)


# --- running ---------------------------------------------------------------------------------
def run_async(factory: Callable[[], Awaitable[object]]) -> int:
    """Run ``factory()`` on a new event loop; SIGINT/SIGTERM cancel it and count as a clean
    stop (exit 0). An int result is the exit status; anything else is 0."""

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        stopping = False

        def stop() -> None:
            nonlocal stopping
            if not stopping and task is not None:
                stopping = True
                task.cancel()
                _log.info("stopping")

        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
                installed.append(sig)
        try:
            result = await factory()
        except asyncio.CancelledError:
            if not stopping:
                raise
            if task is not None:
                task.uncancel()
            return EXIT_OK
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK

    return asyncio.run(main())


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise _MissingComponent(module, what) from None
        raise


def _cmd_node(args: argparse.Namespace) -> int:
    extra: list[Override] = []
    for attr, dotted, flag in (
        ("host", "node.host", "--host"),
        ("port", "node.port", "--port"),
        ("journal", "node.journal", "--journal"),
        ("slot_ms", "node.slot_ms", "--slot-ms"),
    ):
        value = getattr(args, attr)
        if value is not None:
            extra.append((dotted, text(str(value)), f"flag {flag}"))
    config = _load(args, extra)
    node = _import("keepers.node", "`keepers node`")
    node_config = node_config_from(node.NodeConfig, config)
    Path(config.node.journal).parent.mkdir(parents=True, exist_ok=True)
    _start_logging(config)
    return run_async(lambda: _run_node(node, node_config, config))


def node_config_from(node_config_type: Any, config: KeepersConfig) -> Any:
    """The node's own config (``keepers.node.NodeConfig``) from ``[node]`` and ``[bus]``: its
    ``from_config(KeepersConfig)`` if it has one, else its fields filled by name. The bus is
    ``[bus].url``; ``"embedded"`` means the broker this command starts next to the node."""
    from_config = getattr(node_config_type, "from_config", None)
    if from_config is not None:
        return from_config(config)
    node = config.node
    values: dict[str, Any] = {
        "journal": Path(node.journal),
        "host": node.host,
        "port": node.port,
        "broker_url": _node_broker_url(config),
        "cluster": config.bus.cluster,
        "slot_ms": node.slot_ms,
        "genesis_prices": dict(node.genesis_prices),
        "genesis_slot": node.genesis_slot,
        "oracle_authority": bytes.fromhex(node.oracle_authority),
        "admin": bytes.fromhex(node.admin),
        "snapshot_every": node.snapshot_every,
        "checkpoint_every": node.checkpoint_every,
        "transport": config.bus.transport,
        "max_queue": node.max_queue,
        "verify_workers": node.verify_workers,
        "verifier": node.verifier,
    }
    if node.genesis_ts is not None:
        values["genesis_ts"] = node.genesis_ts
    accepted = {f.name for f in dataclasses.fields(node_config_type) if f.init}
    return node_config_type(**{k: v for k, v in values.items() if k in accepted})


def _node_broker_url(config: KeepersConfig) -> str:
    if config.bus.embedded:
        return f"mqtt://127.0.0.1:{config.bus.embedded_port}"
    return config.bus.url


async def _run_node(node: Any, node_config: Any, config: KeepersConfig) -> object:
    """The node, with an embedded broker beside it when ``[bus].url`` is ``"embedded"``."""
    if not config.bus.embedded:
        return await _maybe_await(node.run_node(node_config))
    from keepers.bus.brokers import EmbeddedBroker  # noqa: PLC0415 -- only for this case

    async with EmbeddedBroker(config.bus.embedded_port):
        _log.info("embedded broker listening", port=config.bus.embedded_port)
        return await _maybe_await(node.run_node(node_config))


async def _maybe_await(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


def _cmd_bot(args: argparse.Namespace) -> int:
    extra: list[Override] = []
    if args.key is not None:
        extra.append((f"keys.{args.name}", str(args.key), "flag --key"))
    config = _load(args, extra)
    # Imported once the configuration is good: a config error is reported without loading
    # the runtime (both MQTT clients, the protocol).
    from keepers.runtime.process import prepare_bots, run_bots  # noqa: PLC0415

    prepared = prepare_bots(config, [args.name])
    _start_logging(config)
    return run_async(lambda: run_bots(config, prepared))


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.file is None:
        raise ConfigError(
            "--config", "`keepers run` needs a config file naming its bots (or $KEEPERS_CONFIG)"
        )
    names = [bot.name for bot in config.enabled_bots]
    if not names:
        raise ConfigError("bots", f"{config.file} enables no bots: add [bots.<name>] tables")
    from keepers.runtime.process import prepare_bots, run_bots  # noqa: PLC0415 -- as in _cmd_bot

    prepared = prepare_bots(config, names)
    _start_logging(config)
    return run_async(lambda: run_bots(config, prepared))


def _cmd_dlob_server(args: argparse.Namespace) -> int:
    extra: list[Override] = []
    if args.market:
        extra.append(("dlob_server.markets", tuple(args.market), "flag --market"))
    for attr, dotted, flag in (
        ("host", "dlob_server.host", "--host"),
        ("port", "dlob_server.port", "--port"),
    ):
        value = getattr(args, attr)
        if value is not None:
            extra.append((dotted, text(str(value)), f"flag {flag}"))
    config = _load(args, extra)
    server = _import("keepers.dlob_server", "`keepers dlob-server`")
    section = config.dlob_server
    if not section.markets:
        raise ConfigError(
            "dlob_server.markets",
            'follow at least one market: --market perp:0 or markets = ["perp:0"]',
        )
    markets = []
    for i, market in enumerate(section.markets):
        try:
            markets.append(server.parse_market(market))
        except ValueError as exc:
            raise ConfigError(f"dlob_server.markets[{i}]", str(exc)) from None
    from keepers.runtime.process import broker_url  # noqa: PLC0415 -- keeps --help fast

    server_config = server.DlobServerConfig(
        node_url=config.node.url,
        broker_url=broker_url(config),
        markets=tuple(markets),
        cluster=config.bus.cluster,
        host=section.host,
        port=section.port,
        transport=config.bus.transport,
        market_refresh_interval=section.market_refresh_s,
        queue_size=config.bus.queue_size,
        publish_top_of_book=section.publish_top_of_book,
    )
    _start_logging(config)
    return run_async(lambda: server.run_dlob_server(server_config))


_DEMO_HELP: Final = """\
usage: keepers demo [options]

Start the node, an embedded broker, simulated oracles, traders and makers, and every bot,
in one process; print a live summary and a final report (--slots N --seed S --summary FILE
--broker mqtt://...).
"""


def _cmd_demo(argv: list[str]) -> int:
    try:
        demo = _import("keepers.demo", "`keepers demo`")
    except _MissingComponent as exc:
        if any(a in ("-h", "--help") for a in argv):
            print(_DEMO_HELP + f"\nnote: {exc}")
            return EXIT_OK
        raise
    result = demo.main(argv)
    if inspect.isawaitable(result):
        return run_async(lambda: _maybe_await(result))
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    keypair = write_keypair_file(args.out, overwrite=args.force)
    print(f"wrote {args.out} (mode 0600)")
    print(f"pubkey {keypair.pubkey.hex()}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        # `demo` takes its own options (its module parses them), so it is routed before
        # argparse sees them; `keepers --help` still lists it.
        if arguments[:1] == ["demo"]:
            return _cmd_demo(arguments[1:])
        args = build_parser().parse_args(arguments)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyFileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _MissingComponent as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        _log.error("keepers failed", error=repr(exc), exc_info=exc)
        print(f"{PROG}: error: {exc!r}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
