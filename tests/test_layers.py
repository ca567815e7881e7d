"""The package's imports flow one way (data/train → tokenizer → lm → instruct → demo/cli/api): `lint-imports`
checks the contracts in pyproject.toml, so plain `pytest` (CI) fails on an import that points up the stack or closes
a circle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_layers_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: the same contracts over a copy of the package with one import pointing up."""
    import shutil

    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    spectral = tmp_path / "src" / "neurolm" / "lm" / "spectral.py"
    spectral.write_text(spectral.read_text() + "\n\ndef _up():\n    from ..instruct import tasks  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "neurolm.lm is not allowed to import neurolm.instruct" in result.stdout
    assert "neurolm.lm.spectral -> neurolm.instruct.tasks" in result.stdout
