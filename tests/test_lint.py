"""``ruff check`` over the source, tests and benchmarks with the rules in pyproject.toml (pyflakes and pycodestyle):
an unused import or variable, a shadowed name or an f-string without a field fails the suite, not a later review."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is in the dev extra: pip install -e '.[dev]'")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ruff_check_passes():
    result = ruff("check", "--no-cache", "src", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_can_fail(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "bad.py").write_text("import os\n")
    result = ruff("check", "--no-cache", "bad.py", cwd=tmp_path)
    assert result.returncode != 0 and "F401" in result.stdout
