"""Unlabeled pretraining corpora: every EEG file MNE reads and every Muse CSV (:mod:`.muse`; other ``.csv`` files are
passed over), every vocabulary channel, chunks of ≤ 1024 tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .base import DatasetReader, Event, Recording, Segment, read_raw
from .muse import is_muse_csv

EXTENSIONS = (".edf", ".bdf", ".fif", ".set", ".vhdr")
MAX_TOKENS = 1024
MAX_SECONDS = 64
"""Rows of the time-embedding table; the reference overflows it below 16 channels (1024/C > 64 s)."""


class Pretrain(DatasetReader):
    name = "pretrain"

    def find(self, root: Path) -> list[Recording]:
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in EXTENSIONS or p.name.endswith(".fif.gz") or is_muse_csv(p))
        return [Recording(p, p.stem) for p in files]

    def read(self, rec: Recording) -> Iterator[Segment]:
        raw = read_raw(rec.path)
        yield Segment(raw, [Event(0.0, raw.n_times / raw.info["sfreq"], -1)])

    def window_seconds(self, n_chans: int) -> float:
        return float(max(1, min(MAX_SECONDS, MAX_TOKENS // n_chans)))
