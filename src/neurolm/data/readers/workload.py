"""Mental workload: PhysioNet EEGMAT (Ukraine, 50 Hz mains), ``SubjectNN_1.edf`` rest / ``SubjectNN_2.edf`` task."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import NeuroLMError
from .base import DatasetReader, Event, Recording, Segment, read_raw

_NAME = re.compile(r"^(Subject\d+)_([12])$", re.IGNORECASE)


class Workload(DatasetReader):
    """The last 60 s of each file in 4 s windows with a 2 s hop (29 windows); sorted subjects split 26 / 5 / rest."""

    name = "workload"
    last_s = 60.0

    def find(self, root: Path) -> list[Recording]:
        recs = []
        for edf in sorted(root.rglob("*.edf")):
            m = _NAME.match(edf.stem)
            if m:
                recs.append(Recording(edf, m.group(1)))
        return recs

    def read(self, rec: Recording) -> Iterator[Segment]:
        label = int(_NAME.match(rec.path.stem).group(2)) - 1
        raw = read_raw(rec.path)
        duration = raw.n_times / raw.info["sfreq"]
        if duration < self.last_s:
            raise NeuroLMError(f"{rec.path}: {duration:.1f} s long, shorter than the {self.last_s:g} s used")
        yield Segment(raw, [Event(duration - self.last_s, duration, label)])
