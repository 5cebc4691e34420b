"""Keeper configuration: a TOML file, then the environment, then command-line flags.

Precedence is ``file < environment < flags``: each layer overrides single keys of the one
before, and the merged result is validated once, at start, into frozen dataclasses
(:class:`KeepersConfig`). Every error is a :class:`ConfigError` that names the key by its
table path (``bots.filler.interval_s``) and where the bad value came from (the file, an
environment variable, a flag); the CLI prints it and exits 2.

File layout (every table and key optional; defaults below)::

    [node]        url, host, port, journal, slot_ms, request_timeout_s, admin,
                  oracle_authority, genesis_prices, genesis_slot, genesis_ts, snapshot_every,
                  checkpoint_every, max_queue, verify_workers, verifier
    [bus]         url ("embedded" or mqtt://host:port), transport, cluster, queue_size,
                  embedded_port
    [keys]        <name> = "<keypair file path>"   (free names; bots pick one by name)
    [metrics]     enabled, host, port, slot_stall_s
    [dlob_server] host, port, markets, market_refresh_s, publish_top_of_book
    [runtime]     dry_run, once, log_level, log_json, account_refresh_s, tick_timeout_s,
                  startup_timeout_s, restart_initial_s, restart_max_s, seed
    [bots.<name>] enabled, entry, key, interval_s, watchdog_s, sub_accounts, max_events,
                  and the bot's own parameters (any other key)

Unknown tables and keys are errors, except inside ``[keys]`` (names are free) and the bot's
own parameters, which are validated against the bot's declared ``params_type`` when the bot
is built (:func:`build_params`; still at start, still naming ``bots.<name>.<key>``).

Environment: ``KEEPERS_<SECTION>__<KEY>`` (double underscore between levels, any case), e.g.
``KEEPERS_NODE__URL``, ``KEEPERS_BOTS__FILLER__INTERVAL_S``; ``KEEPERS_CONFIG`` names the
file. Any other ``KEEPERS_*`` variable is an error (a typo must not be silently ignored).
Values from the environment and from ``--set`` flags are text, converted to the key's type
(``true``/``false``, numbers, ``0,1`` for lists, ``none`` for an empty optional).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, Union, get_args, get_origin

ENV_PREFIX: Final = "KEEPERS_"
ENV_CONFIG: Final = "KEEPERS_CONFIG"
EMBEDDED: Final = "embedded"
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ConfigError(Exception):
    """A configuration problem at ``path`` (a dotted table path, or a file name, or a flag)."""

    def __init__(self, path: str, detail: str, source: str | None = None) -> None:
        where = f" (from {source})" if source else ""
        super().__init__(f"{path}: {detail}{where}")
        self.path = path
        self.detail = detail
        self.source = source


class _Text(str):
    """A value given as text (environment, flags): converted to the key's type."""

    __slots__ = ()


def _check(*, minimum: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    return {"minimum": minimum, "choices": choices}


# --- sections --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeSection:
    """The node: where bots reach it (``url``) and how ``keepers node`` runs it.

    ``journal``: the SQLite journal file (its directory is created). ``admin`` and
    ``oracle_authority``: hex public keys (32 bytes). ``genesis_prices``: oracle id -> price
    (PRICE_PRECISION) at genesis; empty: the node's defaults. ``genesis_ts`` unset: the node's
    default. Genesis values must stay the same for the life of a journal.
    """

    url: str = "http://127.0.0.1:8899"
    host: str = "127.0.0.1"
    port: int = field(default=8899, metadata=_check(minimum=0))
    journal: str = "data/node/journal.sqlite"
    slot_ms: int = field(default=400, metadata=_check(minimum=1))
    request_timeout_s: float = field(default=5.0, metadata=_check(minimum=0.001))
    admin: str = "00" * 32
    oracle_authority: str = "00" * 32
    genesis_prices: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    genesis_slot: int = field(default=0, metadata=_check(minimum=0))
    genesis_ts: int | None = None
    snapshot_every: int = field(default=10_000, metadata=_check(minimum=1))
    checkpoint_every: int = field(default=1_000, metadata=_check(minimum=1))
    max_queue: int = field(default=10_000, metadata=_check(minimum=1))
    verify_workers: int = field(default=0, metadata=_check(minimum=0))
    # "process": signatures checked in worker processes, beside the node's loop (the default);
    # "thread": worker threads, which contend with the loop for the GIL
    verifier: str = field(default="process", metadata=_check(choices=("process", "thread")))

    def validate(self, path: str) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}.url", f"must be an http:// URL, got {self.url!r}")
        for name in ("admin", "oracle_authority"):
            value = getattr(self, name)
            if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
                raise ConfigError(f"{path}.{name}", "must be a public key: 64 hex characters")
        for oracle_id, price in self.genesis_prices.items():
            if price <= 0:
                raise ConfigError(f"{path}.genesis_prices.{oracle_id}", "must be > 0")


@dataclass(frozen=True, slots=True)
class BusSection:
    url: str = EMBEDDED
    transport: str = "gmqtt"
    cluster: str = "local"
    queue_size: int = field(default=10_000, metadata=_check(minimum=1))
    embedded_port: int = field(default=1883, metadata=_check(minimum=0))

    @property
    def embedded(self) -> bool:
        return self.url == EMBEDDED

    def validate(self, path: str) -> None:
        # Imported here: the bus package pulls in both MQTT clients and the payload schemas,
        # which `keepers --help` and config-only tools should not pay for.
        from keepers.bus import TRANSPORTS, parse_broker_url  # noqa: PLC0415
        from keepers.bus.topics import TopicError, base  # noqa: PLC0415

        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"{path}.transport",
                f"must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}",
            )
        if not self.embedded:
            try:
                parse_broker_url(self.url)
            except ValueError as exc:
                raise ConfigError(f"{path}.url", f"{exc} (or {EMBEDDED!r})") from None
        try:
            base(self.cluster)
        except TopicError as exc:
            raise ConfigError(f"{path}.cluster", exc.detail) from None


@dataclass(frozen=True, slots=True)
class KeysSection:
    """Keypair files by name. A bot signs with ``[bots.<name>].key``, else the key named like
    the bot, else ``default``."""

    paths: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def path_for(self, *names: str | None) -> str | None:
        for name in names:
            if name is not None and name in self.paths:
                return self.paths[name]
        return None


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """``/health`` and ``/metrics`` of a keeper process (port 0: any free port)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=9100, metadata=_check(minimum=0))
    slot_stall_s: float = field(default=10.0, metadata=_check(minimum=0.001))


@dataclass(frozen=True, slots=True)
class DlobServerSection:
    """``keepers dlob-server``: ``markets`` to follow (``"perp:0"``, ``"spot:1"``; at least
    one), where it listens, how often it refreshes market accounts for vAMM levels, and
    whether it publishes top of book on the bus."""

    host: str = "127.0.0.1"
    port: int = field(default=8900, metadata=_check(minimum=0))
    markets: tuple[str, ...] = ()
    market_refresh_s: float = field(default=2.0, metadata=_check(minimum=0.001))
    publish_top_of_book: bool = True


@dataclass(frozen=True, slots=True)
class RuntimeSection:
    dry_run: bool = False
    once: bool = False
    log_level: str = field(default="info", metadata=_check(choices=LOG_LEVELS))
    log_json: bool = True
    account_refresh_s: float = field(default=1.0, metadata=_check(minimum=0.001))
    tick_timeout_s: float = field(default=30.0, metadata=_check(minimum=0.001))
    startup_timeout_s: float = field(default=30.0, metadata=_check(minimum=0.001))
    restart_initial_s: float = field(default=0.5, metadata=_check(minimum=0.0))
    restart_max_s: float = field(default=30.0, metadata=_check(minimum=0.0))
    seed: int = 0

    def validate(self, path: str) -> None:
        if self.restart_max_s < self.restart_initial_s:
            raise ConfigError(f"{path}.restart_max_s", "must be >= restart_initial_s")


BOT_RUNTIME_KEYS: Final = frozenset(
    {"enabled", "entry", "key", "interval_s", "watchdog_s", "sub_accounts", "max_events"}
)


@dataclass(frozen=True, slots=True)
class BotSection:
    """One bot instance. ``entry`` (``"package.module:attr"``) picks the bot's factory; without
    it the bot registered under ``name`` is used. ``interval_s``: the longest time between two
    ticks (event-driven bots also tick on events). ``watchdog_s``: how long without a tick
    before ``/health`` fails (default: ``max(30, 10 * interval_s)``). ``sub_accounts``: the
    bot's own user accounts the view carries (unset: the bot's own choice). ``max_events``: bus
    events kept for the next tick (older ones are dropped and counted). ``params``: every
    other key."""

    name: str
    enabled: bool = True
    entry: str | None = None
    key: str | None = None
    interval_s: float = field(default=1.0, metadata=_check(minimum=0.001))
    watchdog_s: float | None = field(default=None, metadata=_check(minimum=0.001))
    sub_accounts: tuple[int, ...] | None = None
    max_events: int = field(default=10_000, metadata=_check(minimum=1))
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def watchdog_timeout_s(self) -> float:
        return self.watchdog_s if self.watchdog_s is not None else max(30.0, 10 * self.interval_s)

    def validate(self, path: str) -> None:
        if self.entry is not None and not re.fullmatch(
            r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.entry
        ):
            raise ConfigError(f"{path}.entry", f"must be 'package.module:name', got {self.entry!r}")
        for i, sub in enumerate(self.sub_accounts or ()):
            if not 0 <= sub < 2**16:
                raise ConfigError(f"{path}.sub_accounts[{i}]", "must be a u16")


@dataclass(frozen=True, slots=True)
class KeepersConfig:
    node: NodeSection = field(default_factory=NodeSection)
    bus: BusSection = field(default_factory=BusSection)
    keys: KeysSection = field(default_factory=KeysSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    dlob_server: DlobServerSection = field(default_factory=DlobServerSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    bots: Mapping[str, BotSection] = field(default_factory=lambda: MappingProxyType({}))
    file: Path | None = None

    def bot(self, name: str) -> BotSection:
        """The ``[bots.<name>]`` section, or the defaults for a bot the file does not name."""
        found = self.bots.get(name)
        return found if found is not None else BotSection(name=name)

    def key_path(self, bot: BotSection) -> str | None:
        return self.keys.path_for(bot.key, bot.name, "default")

    @property
    def enabled_bots(self) -> list[BotSection]:
        return [b for b in self.bots.values() if b.enabled]


_SECTIONS: Final[dict[str, type[Any]]] = {
    "node": NodeSection,
    "bus": BusSection,
    "metrics": MetricsSection,
    "dlob_server": DlobServerSection,
    "runtime": RuntimeSection,
}
_TABLES: Final = (*_SECTIONS, "keys", "bots")


# --- loading ---------------------------------------------------------------------------------
Override = tuple[str, Any, str]  # (dotted path, value, source description)


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> KeepersConfig:
    """Read ``path`` (or ``$KEEPERS_CONFIG``; none: defaults only), overlay the environment
    (``os.environ`` unless ``env`` is given) and ``overrides`` (flags), and validate."""
    environment = os.environ if env is None else env
    file: Path | None = None
    if path is None and environment.get(ENV_CONFIG):
        file = Path(environment[ENV_CONFIG])
    elif path is not None:
        file = Path(path)
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file is not None:
        raw = read_toml(file)
        _record_sources(raw, "", f"file {str(file)!r}", sources)
    for dotted, value, source in env_overrides(environment):
        _set_path(raw, dotted, value, source, sources)
    for dotted, value, source in overrides:
        _set_path(raw, dotted, value, source, sources)
    return build_config(raw, sources, file)


def read_toml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(file), "config file does not exist") from None
    except OSError as exc:
        raise ConfigError(str(file), f"cannot read the config file: {exc.strerror}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(file), "config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML: {exc}") from None


def env_overrides(environment: Mapping[str, str]) -> list[Override]:
    """``KEEPERS_<A>__<B>[__<C>]=value`` as ``("a.b[.c]", value, "environment ...")``."""
    found: list[Override] = []
    for name in sorted(environment):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == ENV_CONFIG:
            continue
        levels = name[len(ENV_PREFIX) :].lower().split("__")
        if len(levels) < 2 or not all(levels):
            raise ConfigError(
                name,
                "unknown environment variable; use KEEPERS_<SECTION>__<KEY> "
                "(e.g. KEEPERS_NODE__URL, KEEPERS_BOTS__FILLER__INTERVAL_S) or KEEPERS_CONFIG",
            )
        found.append((".".join(levels), _Text(environment[name]), f"environment {name}"))
    return found


def parse_set_flag(text: str) -> Override:
    """``--set section.key=value`` as an override."""
    dotted, sep, value = text.partition("=")
    dotted = dotted.strip()
    if not sep or not dotted or any(not level for level in dotted.split(".")):
        raise ConfigError("--set", f"expected section.key=value, got {text!r}")
    return dotted, _Text(value), f"flag --set {dotted}"


def text(value: str) -> str:
    """Mark a flag's value as text to be converted to the key's type."""
    return _Text(value)


def _record_sources(
    table: Mapping[str, Any], prefix: str, source: str, out: dict[str, str]
) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        out[dotted] = source
        if isinstance(value, Mapping):
            _record_sources(value, dotted + ".", source, out)


def _set_path(
    raw: dict[str, Any], dotted: str, value: Any, source: str, sources: dict[str, str]
) -> None:
    levels = dotted.split(".")
    table = raw
    for depth, level in enumerate(levels[:-1]):
        child = table.setdefault(level, {})
        if not isinstance(child, dict):
            where = ".".join(levels[: depth + 1])
            raise ConfigError(where, "is a value, not a table", source)
        table = child
    table[levels[-1]] = value
    sources[dotted] = source


def build_config(
    raw: Mapping[str, Any], sources: Mapping[str, str] | None = None, file: Path | None = None
) -> KeepersConfig:
    """Validate a merged configuration table (see :func:`load_config`)."""
    src = sources or {}
    for key in raw:
        if key not in _TABLES:
            raise ConfigError(
                key,
                f"unknown table or key {key!r} at the top level; known: {', '.join(_TABLES)}",
                src.get(key),
            )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = _table(raw, name, src)
        sections[name] = build_dataclass(cls, table, name, src)
    keys = _build_keys(_table(raw, "keys", src), src)
    bots = _build_bots(_table(raw, "bots", src), src)
    config = KeepersConfig(keys=keys, bots=MappingProxyType(bots), file=file, **sections)
    checks: list[tuple[str, Any]] = [(name, sections[name]) for name in _SECTIONS]
    checks += [(f"bots.{name}", bot) for name, bot in bots.items()]
    for path, section in checks:
        validate = getattr(section, "validate", None)
        if validate is None:
            continue
        try:
            validate(path)
        except ConfigError as exc:
            raise _with_source(exc, src) from None
    return config


def _with_source(exc: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    key = exc.path.split("[", 1)[0]
    if exc.source is None and key in sources:
        return ConfigError(exc.path, exc.detail, sources[key])
    return exc


def _table(raw: Mapping[str, Any], name: str, sources: Mapping[str, str]) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"must be a table ([{name}])", sources.get(name))
    return value


def _build_keys(table: Mapping[str, Any], sources: Mapping[str, str]) -> KeysSection:
    paths: dict[str, str] = {}
    for name, value in table.items():
        path = f"keys.{name}"
        if not _NAME.match(name):
            raise ConfigError(path, "key names are lowercase letters, digits, _ and -")
        if not isinstance(value, str) or not value:
            raise ConfigError(path, "must be a keypair file path (a string)", sources.get(path))
        paths[name] = str(value)
    return KeysSection(MappingProxyType(paths))


def _build_bots(table: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, BotSection]:
    bots: dict[str, BotSection] = {}
    for name, value in table.items():
        path = f"bots.{name}"
        if not _NAME.match(name):
            raise ConfigError(path, "bot names are lowercase letters, digits, _ and -")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a table ([{path}])", sources.get(path))
        runtime = {k: v for k, v in value.items() if k in BOT_RUNTIME_KEYS}
        params = {k: v for k, v in value.items() if k not in BOT_RUNTIME_KEYS}
        bots[name] = build_dataclass(
            BotSection,
            {**runtime, "name": name, "params": MappingProxyType(params)},
            path,
            sources,
        )
    return bots


# --- typed construction ----------------------------------------------------------------------
_D = TypeVar("_D")


def build_dataclass(
    cls: type[_D],
    table: Mapping[str, Any],
    path: str,
    sources: Mapping[str, str] | None = None,
) -> _D:
    """``cls(**table)`` with every key known and every value of its field's type.

    Unknown keys and type errors are :class:`ConfigError` naming ``path.key``. Text values
    (from the environment or flags) are converted to the field's type."""
    src = sources or {}
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(k for k in fields if k not in ("name", "params")))
            table_name = f"[{path}]" if path else "the top level"
            raise ConfigError(
                f"{path}.{key}" if path else key,
                f"unknown key {key!r} in {table_name}; known keys: {known}",
                src.get(f"{path}.{key}" if path else key),
            )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}.{name}", "is required")
            continue
        key_path = f"{path}.{name}" if path else name
        source = src.get(key_path)
        value = convert(hints[name], table[name], key_path, source)
        _check_metadata(f.metadata, value, key_path, source)
        values[name] = value
    return cls(**values)


def build_params(params_type: type[_D], raw: Mapping[str, Any], path: str) -> _D:
    """A bot's own parameters (the non-runtime keys of ``[bots.<name>]``) as ``params_type``."""
    return build_dataclass(params_type, raw, path)


def raw_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A bot's parameters for a bot without a ``params_type``: text values read as TOML
    literals (``"4"`` -> 4, ``"true"`` -> True), anything else as given."""
    return {k: _literal(v) if isinstance(v, _Text) else v for k, v in raw.items()}


def _literal(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return str(value)


def _check_metadata(metadata: Mapping[str, Any], value: Any, path: str, source: str | None) -> None:
    minimum = metadata.get("minimum")
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(path, f"must be >= {minimum}, got {value!r}", source)
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(path, f"must be one of {', '.join(choices)}, got {value!r}", source)


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def convert(tp: Any, value: Any, path: str, source: str | None = None) -> Any:
    """``value`` as type ``tp`` (bool, int, float, str, enums, ``X | None``, ``tuple[X, ...]``,
    ``Mapping[str, Any]``, nested frozen dataclasses); :class:`ConfigError` otherwise."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(
            path, f"expected {expected}, got {value!r} ({_type_name(value)})", source
        )

    origin = get_origin(tp)
    if origin is Union or isinstance(tp, types.UnionType):
        options = [o for o in get_args(tp) if o is not type(None)]
        if isinstance(value, _Text) and value.strip().lower() in ("", "none"):
            return None
        if value is None:
            return None
        if len(options) != 1:
            raise TypeError(f"unsupported union {tp!r} at {path}")
        return convert(options[0], value, path, source)
    if tp is Any:
        return _literal(value) if isinstance(value, _Text) else value
    if tp is bool:
        if isinstance(value, _Text):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise bad("true or false")
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, _Text):
            try:
                return int(value.strip(), 10)
            except ValueError:
                raise bad("an integer") from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, _Text):
            try:
                number = float(value.strip())
            except ValueError:
                raise bad("a number") from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise bad("a number")
        if not math.isfinite(number):
            raise bad("a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return str(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        raw = value
        if isinstance(value, _Text):
            raw = _literal(value)
        for member in tp:
            if raw == member.value or (isinstance(raw, str) and raw == member.name):
                return member
        raise bad("one of " + ", ".join(str(m.value) for m in tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"unsupported tuple type {tp!r} at {path}")
        items: Sequence[Any]
        if isinstance(value, _Text):
            stripped = value.strip().strip("[]")
            items = [_Text(part.strip()) for part in stripped.split(",")] if stripped else []
        elif isinstance(value, list | tuple):
            items = value
        else:
            raise bad("a list")
        return tuple(convert(args[0], item, f"{path}[{i}]", source) for i, item in enumerate(items))
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise bad("a table")
        args = get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return MappingProxyType(
                {
                    str(key): convert(args[1], item, f"{path}.{key}", source)
                    for key, item in value.items()
                }
            )
        return MappingProxyType(dict(value))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad("a table")
        return build_dataclass(tp, value, path)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _type_name(value: Any) -> str:
    if isinstance(value, _Text):
        return "text"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)
