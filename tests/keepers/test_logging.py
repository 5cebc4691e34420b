"""Structured logs: one JSON object per line, correlation ids bound, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from keepers import logging as keepers_logging
from keepers.logging import bind_correlation, configure_logging, level_number


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("info", json=True, stream=out)
    try:
        yield out
    finally:
        installed = keepers_logging._installed_handler
        if installed is not None:
            root.removeHandler(installed)
            keepers_logging._installed_handler = None
        root.setLevel(level)
        structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_with_correlation_and_without_secrets(stream: io.StringIO) -> None:
    log = structlog.get_logger("keepers.test")
    with bind_correlation("fill-42", bot="filler"):
        log.info("transaction accepted", slot=7, seed="00" * 32)
    log.info("outside")
    log.debug("filtered out at info")
    first, second = lines(stream)
    assert first["correlation_id"] == "fill-42"
    assert first["bot"] == "filler"
    assert first["slot"] == 7
    assert first["seed"] == keepers_logging.REDACTED
    assert first["level"] == "info"
    assert "timestamp" in first
    assert "correlation_id" not in second


def test_standard_library_loggers_come_out_as_json_too(stream: io.StringIO) -> None:
    logging.getLogger("aiohttp.access").warning("peer %s went away", "1.2.3.4")
    [line] = lines(stream)
    assert line["logger"] == "aiohttp.access"
    assert line["level"] == "warning"


def test_levels() -> None:
    assert level_number("debug") == logging.DEBUG
    assert level_number(logging.ERROR) == logging.ERROR
    with pytest.raises(ValueError, match="log level"):
        level_number("loud")
