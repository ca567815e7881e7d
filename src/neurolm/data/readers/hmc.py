"""HMC sleep staging (PhysioNet, the Netherlands: 50 Hz mains): ``SNxxx.edf`` + ``SNxxx_sleepscoring.txt|.edf``."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import mne

from ...errors import NeuroLMError
from .base import DatasetReader, Event, Recording, Segment, read_raw

STAGES = {"Sleep stage W": 0, "Sleep stage N1": 1, "Sleep stage N2": 2, "Sleep stage N3": 3, "Sleep stage R": 4}


class HMC(DatasetReader):
    """30 s scoring epochs of F4-M1, C4-M1, O2-M1, C3-M2; sorted recordings split 100 / 25 / rest (of 151)."""

    name = "hmc"

    def find(self, root: Path) -> list[Recording]:
        recs = []
        for edf in sorted(root.rglob("SN*.edf")):
            if edf.stem.endswith("_sleepscoring"):
                continue
            txt = edf.with_name(f"{edf.stem}_sleepscoring.txt")
            ann = txt if txt.is_file() else edf.with_name(f"{edf.stem}_sleepscoring.edf")
            recs.append(Recording(edf, edf.stem, None, (ann,)))
        return recs

    def read(self, rec: Recording) -> Iterator[Segment]:
        scoring = rec.extras[0]
        if not scoring.is_file():
            raise NeuroLMError(f"{rec.path}: scoring file {rec.path.stem}_sleepscoring.txt/.edf is missing")
        rows = _read_txt(scoring) if scoring.suffix == ".txt" else _read_edf_annotations(scoring)
        events = [Event(onset, onset + dur, STAGES[desc]) for onset, dur, desc in rows
                  if desc in STAGES and abs(dur - self.window_s) < 1e-6]
        if not events:
            raise NeuroLMError(f"{scoring}: no 30 s sleep-stage rows")
        yield Segment(read_raw(rec.path), events)


def _read_txt(path: Path) -> list[tuple[float, float, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        fields = {f.strip(): f for f in reader.fieldnames or []}
        if not {"Recording onset", "Duration", "Annotation"} <= fields.keys():
            raise NeuroLMError(f"{path}: expected columns 'Recording onset, Duration, Annotation', "
                               f"got {reader.fieldnames}")
        return [(float(r[fields["Recording onset"]]), float(r[fields["Duration"]]), r[fields["Annotation"]].strip())
                for r in reader]


def _read_edf_annotations(path: Path) -> list[tuple[float, float, str]]:
    ann = mne.read_annotations(path)
    return [(float(o), float(d), str(s).strip()) for o, d, s in zip(ann.onset, ann.duration, ann.description)]
