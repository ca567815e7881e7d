"""The README stays a front page: at most 150 lines, and every number in a table row links the dated results page
that measured it; every relative link in the README and docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 150
# a measured figure: a decimal with two or more places (balanced accuracies, intervals); 0.1–75 Hz is a setting
NUMBER = re.compile(r"\b\d\.\d{2,}\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def unlinked_rows(text: str) -> list[str]:
    """Table rows that show a measured number without a link into docs/results/."""
    return [line for line in text.splitlines()
            if line.lstrip().startswith("|") and NUMBER.search(line) and "docs/results/" not in line]


def broken_links(page: Path) -> list[str]:
    found = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            found.append(f"{page.relative_to(ROOT)} -> {target}")
    return found


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move narrative into docs/"


def test_every_number_in_a_readme_table_links_a_results_page():
    rows = unlinked_rows(README.read_text(encoding="utf-8"))
    assert not rows, "link the dated docs/results/ page in each row:\n" + "\n".join(rows)


def test_the_row_check_can_fail():
    assert unlinked_rows("| task | 0.670 ± 0.055 |\n| prepare | 0.1–75 Hz |") == ["| task | 0.670 ± 0.055 |"]
    assert unlinked_rows("| task | 0.670 | [page](docs/results/2026-12-03-x.md) |") == []


def test_relative_links_resolve():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [b for page in pages for b in broken_links(page)]
    assert not broken, "\n".join(broken)
