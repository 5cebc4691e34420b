"""Regenerate ``protocol/math/__init__.py``: re-export every public function and class that a
``protocol.math`` module defines itself (run after adding math; the docstring is kept).

    python -m tools.gen_math_exports
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import protocol.math as pm

ALIASES = {
    "margin": [
        "calculate_scaled_initial_asset_weight",
        "calculate_margin_requirement_and_total_collateral",
    ]
}


def main() -> None:
    path = Path(pm.__file__)
    source = path.read_text()
    doc = source[: source.index('"""', 3) + 3]
    blocks: list[str] = []
    names: set[str] = set()
    for info in sorted(pkgutil.iter_modules(pm.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"protocol.math.{info.name}")
        own = sorted(
            n
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__
            and n not in names
        )
        own += [a for a in ALIASES.get(info.name, []) if a not in own]
        if not own:
            continue
        names.update(own)
        blocks.append(
            f"from protocol.math.{info.name} import (\n"
            + "".join(f"    {n},\n" for n in sorted(own))
            + ")"
        )
    body = "\n".join(blocks)
    exported = "".join(f'    "{n}",\n' for n in sorted(names))
    path.write_text(f"{doc}\n\n{body}\n\n__all__ = [\n{exported}]\n")


if __name__ == "__main__":
    main()
