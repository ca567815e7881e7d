"""The docs run: every command's ``--help`` works, every flag the README and docs/ show exists, and the README's
Python example runs as written."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from neurolm.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_plain_help(command):
    text = _help(command)
    assert f"usage: neurolm {command}" in text
    assert "``" not in text and ":func:" not in text  # no reST markup leaks into the terminal


def _shown_invocations() -> list[tuple[str, str, str]]:
    """``(page, command, flag)`` for every ``neurolm COMMAND ... --flag`` in a code block or inline code."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
        lines = [ln for block in blocks for ln in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`(neurolm [^`]+)`", text)
        for line in lines:
            for m in re.finditer(r"(?:^|[\s;&|(])neurolm ([a-z-]+)((?:\s+[^\s#;|&]+)*)", line.split(" # ")[0]):
                command, rest = m.group(1), m.group(2)
                if command not in COMMANDS:
                    continue
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                    found.append((page.name, command, flag))
    return found


def test_every_flag_the_docs_show_exists():
    shown = _shown_invocations()
    assert len(shown) > 30, "the flag scan found too little: the pattern no longer matches the docs"
    helps: dict[str, str] = {}
    missing = []
    for page, command, flag in shown:
        text = helps.setdefault(command, _help(command))
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
            missing.append(f"{page}: neurolm {command} {flag}")
    assert missing == []


def test_the_flag_scan_catches_a_wrong_flag(tmp_path, monkeypatch):
    page = tmp_path / "x.md"
    page.write_text("```bash\nneurolm instruct --model m --data s --out o --no-such-flag\n```\n")
    monkeypatch.setattr(f"{__name__}.PAGES", [page])
    with pytest.raises(AssertionError):
        test_every_flag_the_docs_show_exists()


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_python_example_runs(tmp_path):
    code = _readme_python()
    assert "evaluate(" in code and ".ask(" in code
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    finally:
        os.chdir(cwd)
    assert (tmp_path / "runs" / "eval").is_dir()
    assert namespace["answers"] and namespace["answers"][0].probabilities
    assert out.getvalue().strip()


def test_shown_commands_are_parseable_lines():
    """Every documented invocation splits as a shell line (no unbalanced quotes)."""
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                shlex.split(line, comments=True)
