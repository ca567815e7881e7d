"""Reading a run's ``log.jsonl`` (written by :class:`~neurolm.train.loop.MetricLog`): one reader for the loop's resume,
every stage's report and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``log.jsonl``; a torn last line (a crash while appending) is skipped."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
