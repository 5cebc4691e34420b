"""Check that imports between the project's packages point one way only.

``bots -> keepers -> dlob -> protocol``: a package may import itself and any package to its
right, never one to its left. Run as ``python -m tools.layering``; the test suite runs it too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = ("bots", "keepers", "dlob", "protocol")  # outermost first
ROOT = Path(__file__).resolve().parent.parent


def _imported_top_levels(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Every import that points outward, as ``path:line: a imports b``."""
    problems: list[str] = []
    for rank, package in enumerate(LAYERS):
        forbidden = set(LAYERS[:rank])
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for lineno, top in _imported_top_levels(tree):
                if top in forbidden:
                    rel = path.relative_to(root)
                    problems.append(f"{rel}:{lineno}: {package} imports {top} (outer layer)")
    return problems


def main() -> int:
    problems = violations()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
