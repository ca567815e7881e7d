"""The run's metric log: ``log.jsonl`` and ``log.csv`` in the output directory, one row per logged step."""

from __future__ import annotations

import csv
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


class MetricLog:
    """``log.jsonl`` (one JSON object per row) and ``log.csv`` (the same rows; the header grows when a key appears).

    Opening it for a run resumed at step ``s`` drops rows after ``s``: they were logged after the checkpoint and the
    resumed run logs them again.
    """

    def __init__(self, out_dir: Path, keep_until: int):
        self.jsonl, self.csv = out_dir / "log.jsonl", out_dir / "log.csv"
        self.rows = [r for r in read_rows(self.jsonl) if r["step"] <= keep_until]
        self.columns: list[str] = []
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        self._rewrite_csv()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        if any(k not in self.columns for k in row):
            self._rewrite_csv()
        else:
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, self.columns, restval="").writerow(row)

    def _rewrite_csv(self) -> None:
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        with open(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
