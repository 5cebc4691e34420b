"""Where the runtime finds bots: a name -> factory mapping filled by importing bot modules.

``keepers`` never imports ``bots`` (imports point ``bots -> keepers``); it imports bot modules
by *name*, at run time, with :mod:`importlib`:

* a bot module registers its factories at import: ``@register("filler")`` on the class (or
  ``register("filler", make_filler)``), which fills :data:`BOTS`;
* :func:`load_bot` imports ``"package.module:attr"`` and returns the attribute (the
  ``entry`` key of ``[bots.<name>]`` names one explicitly);
* :func:`resolve_bot` finds a bot by name: an explicit entry, else :data:`BOTS`, else it
  imports ``bots.<name>`` (``-`` read as ``_``) and then the ``bots`` package, whose import may
  register everything, and looks again.

A factory is a bot class or function taking a :class:`~keepers.runtime.bot.BotContext`; it may
declare ``params_type`` (a frozen dataclass) for its ``[bots.<name>]`` parameters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final, TypeVar

from keepers.runtime.bot import BotFactory

BOTS: dict[str, BotFactory] = {}
"""Registered bot factories by name."""

BOT_PACKAGE: Final = "bots"

_F = TypeVar("_F", bound=Callable[..., Any])


class UnknownBot(LookupError):
    def __init__(self, name: str, known: list[str], detail: str = "") -> None:
        listing = ", ".join(known) if known else "none registered"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"unknown bot {name!r}{extra}; known bots: {listing}")
        self.name = name
        self.known = known


class BotLoadError(ImportError):
    """An ``entry`` that does not name an importable callable."""

    def __init__(self, spec: str, detail: str) -> None:
        super().__init__(f"cannot load bot {spec!r}: {detail}")
        self.spec = spec
        self.detail = detail


def register(name: str, factory: _F | None = None) -> Any:
    """Register ``factory`` under ``name``; without ``factory``, a class/function decorator.

    Registering the same object twice is harmless (a module imported again); another object
    under a taken name is a ``ValueError``."""

    def add(target: _F) -> _F:
        existing = BOTS.get(name)
        if existing is not None and existing is not target:
            same = getattr(existing, "__qualname__", None) == getattr(
                target, "__qualname__", None
            ) and getattr(existing, "__module__", None) == getattr(target, "__module__", None)
            if not same:
                raise ValueError(f"bot name {name!r} is registered already by {existing!r}")
        BOTS[name] = target
        return target

    if factory is not None:
        return add(factory)
    return add


def load_bot(spec: str) -> BotFactory:
    """Import ``"package.module:attr"`` (attr may be dotted) and return the factory."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BotLoadError(spec, "expected 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BotLoadError(spec, f"no module named {exc.name!r}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BotLoadError(spec, f"{module_name} has no attribute {attr!r}") from None
    if not callable(target):
        raise BotLoadError(spec, f"{attr} is not callable")
    factory: BotFactory = target
    return factory


def _import_optional(module_name: str) -> None:
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only "this module does not exist" is optional; a bot module that exists but fails
        # to import is an error worth seeing.
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise


def resolve_bot(name: str, entry: str | None = None) -> BotFactory:
    if entry is not None:
        return load_bot(entry)
    found = BOTS.get(name)
    if found is not None:
        return found
    _import_optional(f"{BOT_PACKAGE}.{name.replace('-', '_')}")
    _import_optional(BOT_PACKAGE)
    found = BOTS.get(name)
    if found is None:
        raise UnknownBot(name, sorted(BOTS))
    return found
