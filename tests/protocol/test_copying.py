"""``shallow_copy``: a new instance whose every field is the same object, for plain and frozen
slotted dataclasses alike; the copy is independent at the top level only."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from protocol.state.copying import shallow_copy


@dataclass(slots=True)
class Plain:
    a: int
    items: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Frozen:
    a: int
    items: list[int] = field(default_factory=list)


@pytest.mark.parametrize("cls", [Plain, Frozen])
def test_the_copy_is_a_new_object_sharing_each_field(cls: type[Plain] | type[Frozen]) -> None:
    original = cls(7, [1, 2])
    copy = shallow_copy(original)
    assert copy == original and copy is not original and type(copy) is cls
    assert copy.items is original.items  # shallow: nested members are shared


def test_a_plain_copy_changes_apart_from_its_original() -> None:
    original = Plain(7, [1])
    copy = shallow_copy(original)
    copy.a = 8
    assert (original.a, copy.a) == (7, 8)
