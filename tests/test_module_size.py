"""docs/architecture.md's module-size rule, checked: every module in src/ is at most 400 lines or is listed in the
architecture page's table with its reason, and the table names no module that has come back under the limit."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "neurolm"
PAGE = ROOT / "docs" / "architecture.md"
LIMIT = 400


def listed_modules(text: str) -> dict[str, str]:
    """``module → reason`` from the table under the heading "Modules above 400 lines"."""
    section = text.split("### Modules above 400 lines", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([^`]+\.py)` \| (.+?) \|$", section, flags=re.MULTILINE)
    return dict(rows)


def long_modules() -> dict[str, int]:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    return {name: n for name, n in sizes.items() if n > LIMIT}


def test_every_long_module_is_named_with_its_reason():
    listed, long = listed_modules(PAGE.read_text(encoding="utf-8")), long_modules()
    unexplained = {name: n for name, n in long.items() if name not in listed}
    assert not unexplained, f"over {LIMIT} lines and not in docs/architecture.md's table: {unexplained}"
    assert all(len(reason) > 20 for reason in listed.values())


def test_the_table_lists_no_short_module():
    listed, long = listed_modules(PAGE.read_text(encoding="utf-8")), long_modules()
    stale = sorted(set(listed) - set(long))
    assert not stale, f"now at most {LIMIT} lines (or gone): remove from docs/architecture.md's table: {stale}"


def test_the_table_parser_reads_rows():
    text = ("### Modules above 400 lines\n\n| module | why |\n|---|---|\n"
            "| `a/b.py` | a reason long enough here |\n\n## Next")
    assert listed_modules(text) == {"a/b.py": "a reason long enough here"}
