"""Temple University Hospital corpora: TUAB (abnormal), TUEV (events) and TUSL (slowing), all EDF at US mains (60 Hz).

Subjects are the 8-letter TUH patient ids that start every file name (``aaaaamye_s001_t000.edf``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ...errors import NeuroLMError
from .base import DatasetReader, Event, Recording, Segment, read_raw


def _subject(path: Path) -> str:
    return path.stem.split("_")[0]


def _layout_split(path: Path, root: Path) -> str | None:
    parts = {p.lower() for p in path.relative_to(root).parts[:-1]}
    return "test" if "eval" in parts else None


def _with_sidecar(root: Path, suffix: str) -> list[Recording]:
    """EDF files that have an annotation file of the same stem; an EDF without one is reported, not skipped."""
    recs = []
    for edf in sorted(root.rglob("*.edf")):
        sidecar = edf.with_suffix(suffix)
        recs.append(Recording(edf, _subject(edf), _layout_split(edf, root), (sidecar,)))
    return recs


def _sidecar(rec: Recording) -> Path:
    path = rec.extras[0]
    if not path.is_file():
        raise NeuroLMError(f"{rec.path}: annotation file {path.name} is missing")
    return path


class TUAB(DatasetReader):
    """TUH Abnormal: ``{train,eval}/{normal,abnormal}/01_tcp_ar/*.edf``, one label per recording, 10 s windows."""

    name = "tuab"

    def find(self, root: Path) -> list[Recording]:
        return [Recording(p, _subject(p), _layout_split(p, root)) for p in sorted(root.rglob("*.edf"))]

    def read(self, rec: Recording) -> Iterator[Segment]:
        parts = [p.lower() for p in rec.path.parts]
        if "abnormal" in parts:
            label = 1
        elif "normal" in parts:
            label = 0
        else:
            raise NeuroLMError(f"{rec.path}: no normal/abnormal directory in its path")
        raw = read_raw(rec.path)
        yield Segment(raw, [Event(0.0, raw.times[-1] + 1 / raw.info["sfreq"], label)])


class TUEV(DatasetReader):
    """TUH Events: EDF + ``.rec`` rows ``channel,start,stop,label`` (1..6); one 5 s window per event (event ± 2 s).

    Ours: the reference wraps around the recording for events near its edges; we drop such windows (counted in the
    manifest). An event marked on several channels is one window (the reference repeats the same window per channel
    row, which weights multi-channel events more and duplicates samples).
    """

    name = "tuev"
    context_s = 2.0

    def find(self, root: Path) -> list[Recording]:
        return _with_sidecar(root, ".rec")

    def read(self, rec: Recording) -> Iterator[Segment]:
        events: dict[tuple[float, float, int], None] = {}
        with open(_sidecar(rec), newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip():
                    continue
                try:
                    _, start, stop, label = row[:4]
                    key = (float(start), float(stop), int(float(label)))
                except ValueError as exc:
                    raise NeuroLMError(f"{rec.extras[0]}:{lineno}: expected 'channel,start,stop,label', "
                                       f"got {row}") from exc
                if not 1 <= key[2] <= 6:
                    raise NeuroLMError(f"{rec.extras[0]}:{lineno}: label {key[2]} is not in 1..6")
                events[key] = None
        raw = read_raw(rec.path)
        c = self.context_s
        yield Segment(raw, [Event(s - c, e + c, lab - 1) for s, e, lab in events])


class TUSL(DatasetReader):
    """TUH Slowing: EDF + ``.tse_agg`` (two header lines, then ``start stop label prob``); 10 s windows per event.

    Split by recording order: first 60 % train, next 20 % test, last 20 % val. Ours: sorted by path (the reference
    takes the file system's listing order, which is not reproducible).
    """

    name = "tusl"

    def find(self, root: Path) -> list[Recording]:
        return _with_sidecar(root, ".tse_agg")

    def read(self, rec: Recording) -> Iterator[Segment]:
        events = []
        path = _sidecar(rec)
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if len(fields) != 4 or line.startswith("version"):
                continue
            start, stop, name, _ = fields
            if name not in self.classes:
                raise NeuroLMError(f"{path}:{lineno}: unknown label {name!r} (expected one of {self.classes})")
            events.append(Event(float(start), float(stop), self.classes.index(name)))
        if not events:
            raise NeuroLMError(f"{path}: no 'start stop label prob' rows")
        yield Segment(read_raw(rec.path), events)
