"""Finding bots by name without ``keepers`` importing ``bots``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keepers.runtime.bot import BotContext
from keepers.runtime.registry import (
    BOTS,
    BotLoadError,
    UnknownBot,
    load_bot,
    register,
    resolve_bot,
)
from tests.keepers.runtime_fakes import ScriptedBot


class ContextBot(ScriptedBot):
    """A bot class that is a factory: built from a :class:`BotContext`."""

    def __init__(self, context: BotContext) -> None:
        super().__init__(context.name)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = dict(BOTS)
    try:
        yield
    finally:
        BOTS.clear()
        BOTS.update(before)


def test_load_bot_imports_module_and_attribute() -> None:
    assert load_bot("tests.keepers.test_runtime_registry:ContextBot") is ContextBot
    with pytest.raises(BotLoadError, match="no module named"):
        load_bot("tests.keepers.nowhere:Bot")
    with pytest.raises(BotLoadError, match="has no attribute"):
        load_bot("tests.keepers.runtime_fakes:Missing")
    with pytest.raises(BotLoadError, match="not callable"):
        load_bot("tests.keepers.runtime_fakes:CLUSTER")
    with pytest.raises(BotLoadError, match=r"package\.module:name"):
        load_bot("no_colon")


def test_register_and_resolve(clean_registry: None) -> None:
    @register("test-scripted")
    class Registered(ContextBot):
        pass

    assert resolve_bot("test-scripted") is Registered
    assert resolve_bot("anything", "tests.keepers.test_runtime_registry:ContextBot") is ContextBot
    register("test-scripted", Registered)  # the same object again: harmless
    with pytest.raises(ValueError, match="registered already"):
        register("test-scripted", ContextBot)
    built = resolve_bot("test-scripted")(BotContext(name="n", authority=bytes(32)))
    assert built.name == "n"


def test_unknown_bot_lists_the_known_ones(clean_registry: None) -> None:
    register("test-known", ContextBot)
    with pytest.raises(UnknownBot) as info:
        resolve_bot("test-never-registered")
    assert "test-known" in info.value.known
    assert "test-never-registered" in str(info.value)
