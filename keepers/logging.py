"""Structured logs: structlog, one JSON object per line on stderr.

:func:`configure_logging` sets up structlog and routes the standard library's loggers (aiohttp,
asyncio, amqtt) through the same renderer, so every line a keeper process writes is one JSON
object (or a readable console line with ``json=False``). Context bound with
:func:`bind_correlation` (the correlation id of a fill attempt or any other action) and
:func:`bound` is added to every line logged inside the block, in any task started from it.

Secrets: a processor drops the value of any key that names secret material (``seed``,
``secret``, ``private_key``, ``signing_key``, ...) and writes ``"[redacted]"`` instead, so a
careless ``log.info(..., seed=...)`` never reaches the log. Keypairs themselves print only a
prefix of their public key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# Libraries that log every state transition at info: shown from warning up unless debugging.
_CHATTY: Final = ("amqtt", "transitions", "gmqtt")
REDACTED: Final = "[redacted]"
_SECRET_WORDS: Final = ("seed", "secret", "private_key", "privkey", "signing_key", "password")


_installed_handler: logging.Handler | None = None


def _redact_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key in list(event):
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            event[key] = REDACTED
    return event


def level_number(level: str | int) -> int:
    """``"info"`` -> ``logging.INFO``; ``ValueError`` names the accepted levels."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None or level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    return number


def configure_logging(
    level: str | int = "info", json: bool = True, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging; safe to call again."""
    number = level_number(level)
    out = stream if stream is not None else sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Module-level loggers (``structlog.get_logger`` at import) must pick up a later
        # configuration, so they are not cached on first use.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    global _installed_handler  # noqa: PLW0603 -- one handler per process, replaced on reconfigure
    if _installed_handler is not None:
        root.removeHandler(_installed_handler)
    root.addHandler(handler)
    _installed_handler = handler
    root.setLevel(number)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(number if number <= logging.DEBUG else logging.WARNING)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Add ``values`` to every log line inside the block (context variables: per task)."""
    with structlog.contextvars.bound_contextvars(**values):
        yield


@contextmanager
def bind_correlation(correlation_id: str, **values: Any) -> Iterator[None]:
    """Bind ``correlation_id`` (and ``values``) to every log line of one action's life."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **values):
        yield


def redact(event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The secret-dropping processor, for callers that build their own chain."""
    return _redact_secrets(None, "", event)
