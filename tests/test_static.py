"""Static checks over the source tree: layering, lint and types run with the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.layering import violations

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.static


def test_imports_point_one_way_only() -> None:
    assert violations(ROOT) == []


def test_layering_check_catches_a_backward_import(tmp_path: Path) -> None:
    for pkg in ("bots", "keepers", "dlob", "protocol"):
        (tmp_path / pkg).mkdir()
    (tmp_path / "protocol" / "bad.py").write_text("from dlob import book\n")
    (tmp_path / "dlob" / "ok.py").write_text("import protocol.math\n")
    assert violations(tmp_path) == ["protocol/bad.py:1: protocol imports dlob (outer layer)"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- fixed tool invocations on our own tree
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.timeout(300)
def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and _run("ruff", "--version").returncode != 0:
        pytest.fail("ruff is a test dependency; install with .[test]")
    result = _run("ruff", "check", "protocol", "dlob", "keepers", "bots", "tests", "tools")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_on_protocol_is_clean() -> None:
    result = _run("mypy", "--no-error-summary")
    assert result.returncode == 0, result.stdout + result.stderr
