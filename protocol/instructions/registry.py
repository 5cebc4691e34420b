"""Instruction types, their wire tags and their handlers.

An instruction is a frozen dataclass whose fields have codec widths (see :mod:`protocol.codec`);
``@instruction(tag)`` gives it a stable ``u16`` tag and ``@handler(Type)`` registers the function
that executes it against an :class:`~protocol.accounts.Accounts` view. Tags are part of the
signed encoding: never reuse or renumber one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from protocol.accounts import Accounts
from protocol.codec import struct_codec

T = TypeVar("T")
Handler = Callable[[Accounts, Any], None]

TYPE_BY_TAG: dict[int, type] = {}
TAG_BY_TYPE: dict[type, int] = {}
HANDLERS: dict[type, Handler] = {}


def instruction(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as the instruction with wire tag ``tag``."""

    def register(cls: type[T]) -> type[T]:
        if tag in TYPE_BY_TAG and TYPE_BY_TAG[tag] is not cls:
            raise ValueError(f"instruction tag {tag} used by {TYPE_BY_TAG[tag].__name__}")
        struct_codec(cls)  # compile now: a field without a width fails at import
        TYPE_BY_TAG[tag] = cls
        TAG_BY_TYPE[cls] = tag
        return cls

    return register


def handler(
    cls: type[T],
) -> Callable[[Callable[[Accounts, T], None]], Callable[[Accounts, T], None]]:
    """Register the function that executes instructions of type ``cls``."""

    def register(fn: Callable[[Accounts, T], None]) -> Callable[[Accounts, T], None]:
        HANDLERS[cls] = fn
        return fn

    return register
