"""The reader of a task file (:mod:`neurolm.data.taskfile`): its recordings, subjects and labels, from any of the
label sources, for the preparation every built-in reader goes through.

- ``annotations``: the recording's own annotations as MNE reads them (EDF+, BrainVision markers, EEGLAB events,
  FIF); ``bids_events``: the recording's BIDS ``events.tsv`` (column ``trial_type`` unless ``column``). A labelled
  event at least a window long is cut into windows (with the task's stride); a shorter one gives the one window
  centred on it.
- ``events``: an MNE events file beside each recording (``mne.read_events``: FIF or text, as MNE writes them with
  ``mne.write_events``), whose event ids are the label values, each lasting ``duration_s`` from its onset. Its sample
  numbers count from the acquisition start, as MNE's do, so the recording's ``first_samp`` is taken off.
- ``filename``: the label is a group of ``pattern`` searched in the path relative to RAW_DIR without its extension
  (EEGMAT's ``_1`` / ``_2``); ``subject_table``: a table of subject → label (a BIDS root's ``participants.tsv``
  by default). Both label the whole recording, or its last ``last_s`` seconds.
- ``csv``: a table with columns ``file, start, stop, label`` (seconds; ``file`` relative to RAW_DIR).

A BIDS root (a ``dataset_description.json`` in RAW_DIR) is read through ``mne-bids``: its EEG recordings, subjects
(``sub-`` entity; sessions and runs are recordings of the subject) and ``participants.tsv``.

Before anything is filtered, :meth:`TaskFileReader.find` reads every recording's header and labels and refuses a task
file whose label source matches nothing, a class without a single labelled event, or channels that no recording has.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import mne

from ..errors import NeuroLMError
from .channels import map_channels
from .readers.base import DatasetReader, Event, Recording, Segment, read_raw
from .readers.muse import is_muse_csv, read_muse_csv
from .taskfile import TaskSpec

READABLE = (".edf", ".bdf", ".gdf", ".vhdr", ".set", ".fif", ".cnt")
"""File suffixes a task file's recordings may have (what MNE reads); also Muse CSVs (:mod:`.readers.muse`)."""
BIDS_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]
_EVENT_SOURCES = ("annotations", "bids_events", "events", "csv")
EVENT_FILES = ("{stem}-eve.fif", "{stem}_eve.fif", "{stem}-eve.txt", "{stem}.eve")
"""``events`` label source: where a recording's events file is looked for, by default (``{stem}``: its name without
extension and a trailing ``_raw`` / ``-raw``, MNE's naming)."""
_RAW_SUFFIX = re.compile(r"[-_]raw$")


def is_bids_root(root: Path) -> bool:
    return (root / "dataset_description.json").is_file()


def _mne_bids():
    try:
        import mne_bids
    except ImportError:
        raise NeuroLMError("reading a BIDS dataset needs mne-bids: pip install 'neurolm[bids]'") from None
    return mne_bids


def _read_table(path: Path, delimiter: str | None = None) -> list[dict[str, str]]:
    if not path.is_file():
        raise NeuroLMError(f"{path}: no such label table")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # guessing a code page could turn labels into other labels silently
        raise NeuroLMError(f"{path}: not UTF-8 text (byte {exc.start}); save the label table as UTF-8") from None
    delimiter = delimiter or ("\t" if path.suffix == ".tsv" else ",")
    return list(csv.DictReader(text.splitlines(), delimiter=delimiter))


def _column(rows: list[dict], path: Path, name: str) -> None:
    if rows and name not in rows[0]:
        raise NeuroLMError(f"{path}: no column {name!r} (columns: {', '.join(rows[0])})")


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    return rel.with_suffix("").as_posix()


def _group(m: re.Match, name: str) -> str:
    return m.group(name) if name in m.re.groupindex else m.group(1) if m.re.groups else m.group(0)


class TaskFileReader(DatasetReader):
    """Reads the recordings and labels a :class:`~neurolm.data.taskfile.TaskSpec` describes (module notes)."""

    def __init__(self, spec: TaskSpec):
        d = spec.dataset
        self.spec, self.name, self.channels, self.classes = spec, d.name, d.channels, d.classes
        self.mains, self.window_s, self.stride_s, self.split = d.mains, d.window_s, d.stride_s, d.split
        self.scale, self.allow_low_rate = spec.scale, spec.allow_low_rate
        self.root: Path | None = None
        self.bids = False
        self.rows: dict[str, list[tuple[float, float, str]]] = {}
        """``csv``: relative path (no extension) → (start, stop, value) rows."""
        self.subject_labels: dict[str, str] = {}
        """``subject_table``: subject → value."""

    # --- finding recordings -------------------------------------------------------------------------------------
    def find(self, root: Path) -> list[Recording]:
        """The task's recordings, after checking that its labels and channels match something (module notes)."""
        self.root, self.bids = root, is_bids_root(root)
        recs = self._find_bids(root) if self.bids else self._find_files(root)
        src = self.spec.source
        if not recs:
            what = "BIDS EEG recordings" if self.bids else f"files matching recordings.glob = {self.spec.glob!r}"
            raise NeuroLMError(f"{src}: no {what} under {root}")
        self._load_tables(root)
        counts, seen, heads = Counter(), Counter(), {}
        labelled = []
        for rec in recs:
            try:
                raw = (read_muse_csv(rec.path) if is_muse_csv(rec.path)
                       else mne.io.read_raw(rec.path, preload=False, verbose="error"))
                heads[rec.path] = raw.ch_names
            except Exception:  # noqa: BLE001 - an unreadable file is skipped by prepare, with its reason
                raw = None
            values = self._values(rec, raw)
            if values is None:
                labelled.append(rec)
                continue
            seen.update(values)
            mapped = [self.spec.labels.map[v] for v in values if v in self.spec.labels.map]
            if mapped or self.spec.labels.source not in _EVENT_SOURCES:
                labelled.append(rec)
            counts.update(mapped)
        if self.spec.labels.source == "csv":
            unlabelled = [_rel(rec.path, root) for rec in recs if _rel(rec.path, root) not in self.rows]
            if unlabelled:
                more = " ..." if len(unlabelled) > 10 else ""
                warnings.warn(f"{self._table_path(root)}: no rows for {len(unlabelled)} of the {len(recs)} recordings "
                              f"(they are skipped): {', '.join(unlabelled[:10])}{more}", UserWarning, stacklevel=2)
        self._check_labels(root, recs, counts, seen)
        self._check_channels(heads)
        return labelled

    def _find_files(self, root: Path) -> list[Recording]:
        pattern = re.compile(self.spec.subject) if self.spec.subject else None
        glob = Path(self.spec.glob)
        if glob.is_absolute() or ".." in glob.parts:  # a task file reads below RAW_DIR only
            raise NeuroLMError(f"{self.spec.source}: recordings.glob = {self.spec.glob!r}: must stay below RAW_DIR "
                               f"({root}): no absolute path, no '..'")
        files = sorted(p for p in root.glob(self.spec.glob) if p.suffix.lower() in READABLE or is_muse_csv(p))
        lab = self.spec.labels
        if lab.source == "events":  # a glob as wide as **/*.fif also matches the events files themselves
            events = {e for p in files for e in self._events_file(p)}
            files = [p for p in files if p not in events]
        if lab.source == "filename" and files and not any(re.search(lab.pattern, _rel(p, root)) for p in files):
            raise NeuroLMError(f"{self.spec.source}: labels.pattern = {lab.pattern!r}: matches none of the "
                               f"{len(files)} recordings under {root} (e.g. {_rel(files[0], root)})")
        recs = []
        for path in files:
            rel = _rel(path, root)
            if lab.source == "filename" and not re.search(lab.pattern, rel):
                continue  # not a file of this task (EEGMAT's reader ignores other files the same way)
            m = pattern.search(rel) if pattern else None
            if pattern and m is None:
                raise NeuroLMError(f"{self.spec.source}: recordings.subject = {self.spec.subject!r}: does not match "
                                   f"{rel}")
            recs.append(Recording(path, _group(m, "subject") if m else path.stem, None,
                                  (*self._extras(root), *self._events_file(path))))
        return recs

    def _find_bids(self, root: Path) -> list[Recording]:
        mne_bids = _mne_bids()
        paths = mne_bids.find_matching_paths(root, datatypes="eeg", suffixes="eeg", extensions=BIDS_EXTENSIONS)
        recs = []
        for bp in sorted(paths, key=lambda b: str(b.fpath)):
            events = bp.copy().update(suffix="events", extension=".tsv").fpath
            extras = (*self._extras(root), *((Path(events),) if Path(events).is_file() else ()))
            recs.append(Recording(Path(bp.fpath), bp.subject, None, extras))
        return recs

    def _table_path(self, root: Path) -> Path | None:
        lab = self.spec.labels
        if lab.source == "events":
            return None  # labels.file names each recording's own events file (_events_file)
        if lab.source == "subject_table" and not lab.file:
            return root / "participants.tsv"
        if not lab.file:
            return None
        path = Path(os.path.normpath(root / lab.file))  # an absolute lab.file replaces root
        if not path.is_relative_to(os.path.normpath(root)):  # a task file reads below RAW_DIR only
            raise NeuroLMError(f"{self.spec.source}: labels.file = {lab.file!r}: outside RAW_DIR ({root}); copy the "
                               "table into RAW_DIR and name it relative to it")
        return path

    def _events_file(self, path: Path) -> tuple[Path, ...]:
        """``events``: the recording's events file, if one exists (module notes); a recording without one has no
        labelled event."""
        if self.spec.labels.source != "events":
            return ()
        stem = _RAW_SUFFIX.sub("", path.stem)
        for name in (self.spec.labels.file,) if self.spec.labels.file else EVENT_FILES:
            candidate = path.parent / name.format(stem=stem)
            if candidate.is_file():
                return (candidate,)
        return ()

    def _mne_events(self, rec: Recording, raw: mne.io.BaseRaw) -> list[tuple[float, float, str]]:
        """``events``: (start, stop, event id) of the recording's events file, in seconds from the recording start."""
        found = self._events_file(rec.path)
        if not found:
            return []
        (path,) = found
        try:
            events = mne.read_events(path, verbose="error")
        except Exception as exc:  # noqa: BLE001 - MNE raises ValueError/OSError/... for a file that is not events
            raise NeuroLMError(f"{path}: cannot be read as MNE events ({type(exc).__name__}: {exc})") from exc
        rate, first, length = raw.info["sfreq"], raw.first_samp, self.spec.labels.duration_s
        return [((s - first) / rate, (s - first) / rate + length, str(v)) for s, _, v in events]

    def _extras(self, root: Path) -> tuple[Path, ...]:
        table = self._table_path(root)
        return (table,) if table is not None else ()

    def _load_tables(self, root: Path) -> None:
        lab, path = self.spec.labels, self._table_path(root)
        if lab.source == "csv":
            rows = _read_table(path)
            for col in ("file", "start", "stop", "label"):
                _column(rows, path, col)
            lines: dict[str, list[tuple[float, float, str, int]]] = {}
            for i, row in enumerate(rows, start=2):
                try:
                    start, stop = float(row["start"]), float(row["stop"])
                except (TypeError, ValueError):
                    raise NeuroLMError(f"{path}: line {i}: start/stop {row['start']!r}, {row['stop']!r} are not "
                                       "seconds") from None
                if not (math.isfinite(start) and math.isfinite(stop) and 0 <= start < stop):
                    raise NeuroLMError(f"{path}: line {i}: start {start:g} s, stop {stop:g} s: needs "
                                       "0 ≤ start < stop")
                key = Path(row["file"]).with_suffix("").as_posix()
                lines.setdefault(key, []).append((start, stop, row["label"].strip(), i))
            for key, spans in lines.items():  # one moment, two different labels: which one is the answer?
                reach: dict[str, tuple[float, float, int]] = {}  # label → its span reaching furthest so far
                for b0, b1, b, j in sorted(spans):
                    for a, (a0, a1, i) in reach.items():
                        if a != b and b0 < a1:
                            (i, *x), (j, *y) = sorted([(i, a0, a1, a), (j, b0, b1, b)])  # in the file's order
                            raise NeuroLMError(f"{path}: lines {i} and {j}: {key} {x[0]:g}-{x[1]:g} s ({x[2]!r}) and "
                                               f"{y[0]:g}-{y[1]:g} s ({y[2]!r}) overlap with different labels")
                    if b not in reach or b1 > reach[b][1]:
                        reach[b] = (b0, b1, j)
                self.rows[key] = [(s0, s1, v) for s0, s1, v, _ in sorted(spans, key=lambda r: r[3])]
        elif lab.source == "subject_table":
            rows = _read_table(path)
            subject_col = lab.subject_column or ("participant_id" if self.bids else "subject")
            label_col = lab.column or "label"
            for col in (subject_col, label_col):
                _column(rows, path, col)
            self.subject_labels = {row[subject_col].strip().removeprefix("sub-"): row[label_col].strip()
                                   for row in rows}

    # --- labels -------------------------------------------------------------------------------------------------
    def _values(self, rec: Recording, raw: mne.io.BaseRaw | None) -> list[str] | None:
        """Label values of a recording's events (before mapping); None when it cannot be read."""
        lab = self.spec.labels
        if lab.source == "annotations":
            return None if raw is None else [str(d) for d in raw.annotations.description]
        if lab.source == "bids_events":
            return [v for _, _, v in self._bids_events(rec)]
        if lab.source == "events":
            return None if raw is None else [v for _, _, v in self._mne_events(rec, raw)]
        if lab.source == "csv":
            return [v for _, _, v in self.rows.get(_rel(rec.path, self.root), [])]
        if lab.source == "filename":
            return [_group(re.search(lab.pattern, _rel(rec.path, self.root)), "label")]
        value = self.subject_labels.get(rec.subject.removeprefix("sub-"))
        return [] if value is None else [value]

    def _bids_events(self, rec: Recording) -> list[tuple[float, float, str]]:
        tsv = next((p for p in rec.extras if p.name.endswith("_events.tsv")), None)
        if tsv is None:
            return []
        rows = _read_table(tsv)
        column = self.spec.labels.column or "trial_type"
        _column(rows, tsv, column)
        out = []
        for row in rows:
            onset = float(row["onset"])
            duration = float(row.get("duration") or 0) if row.get("duration") not in ("n/a", None) else 0.0
            out.append((onset, onset + duration, row[column].strip()))
        return out

    def _check_labels(self, root: Path, recs: list[Recording], counts: Counter, seen: Counter) -> None:
        lab, src = self.spec.labels, self.spec.source
        if not counts:
            what = {"filename": f"labels.pattern = {lab.pattern!r}", "csv": f"labels.file = {lab.file!r}"}.get(
                lab.source, f"labels.source = {lab.source!r}")
            found = ", ".join(repr(v) for v, _ in seen.most_common(10)) or "none"
            raise NeuroLMError(f"{src}: {what}: no label of labels.map {sorted(lab.map)} in the {len(recs)} "
                               f"recording(s) under {root} (values found: {found})")
        for cls in self.classes:
            if not counts[cls]:
                values = [v for v, c in lab.map.items() if c == cls]
                raise NeuroLMError(f"{src}: classes: {cls!r} has no labelled example under {root} (labels.map values "
                                   f"{values} for it occur nowhere)")
        if not lab.ignore_unmapped:
            unmapped = sorted(v for v in seen if v not in lab.map)
            if unmapped:
                raise NeuroLMError(f"{src}: labels.ignore_unmapped = false: values {unmapped} are not in labels.map")

    def _check_channels(self, heads: dict[Path, list[str]]) -> None:
        if self.channels is None or not heads:
            return
        for names in heads.values():
            try:
                map_channels(names, self.channels)
                return
            except NeuroLMError:
                continue
        found = [map_channels(names) for names in heads.values()]
        absent = [c for c in self.channels if all(c not in f for f in found)]
        path, names = next(iter(heads.items()))
        what = (f"{absent} missing from every recording" if absent else
                f"{list(self.channels)}: no recording has all of them")
        raise NeuroLMError(f"{self.spec.source}: channels: {what} (e.g. {path.name} has {', '.join(names)})")

    # --- reading ------------------------------------------------------------------------------------------------
    def read(self, rec: Recording) -> Iterator[Segment]:
        if self.bids:
            mne_bids = _mne_bids()
            raw = mne_bids.read_raw_bids(mne_bids.get_bids_path_from_fname(rec.path), verbose="error")
            raw.load_data(verbose="error")
        else:
            raw = read_raw(rec.path)
        duration = raw.n_times / raw.info["sfreq"]
        events = [Event(a, b, self.classes.index(self.spec.labels.map[v]))
                  for a, b, v in self._stretches(rec, raw, duration) if v in self.spec.labels.map]
        if not events:
            raise NeuroLMError(f"{rec.path}: no labelled event of the task")
        if self.split.kind == "within_trials":
            events = [part for ev in events for part in self._split_in_time(ev, duration)]
        yield Segment(raw, events)

    def _stretches(self, rec: Recording, raw: mne.io.BaseRaw, duration: float) -> list[tuple[float, float, str]]:
        """(start, stop, value) of the labelled stretches: events as windows (module notes), or the whole file."""
        lab = self.spec.labels
        if lab.source in _EVENT_SOURCES:
            if lab.source == "annotations":
                ann = raw.annotations  # onsets count from the measurement start when they have an orig_time
                offset = raw.first_time if ann.orig_time is not None else 0.0
                spans = [(float(o - offset), float(o - offset + d), str(v))
                         for o, d, v in zip(ann.onset, ann.duration, ann.description)]
            elif lab.source == "bids_events":
                spans = self._bids_events(rec)
            elif lab.source == "events":
                spans = self._mne_events(rec, raw)
            else:
                spans = self.rows.get(_rel(rec.path, self.root), [])
            return [self._event_window(a, b, v) for a, b, v in spans]
        (value,) = self._values(rec, raw)
        if lab.last_s is None:
            return [(0.0, duration, value)]
        if duration < lab.last_s:
            raise NeuroLMError(f"{rec.path}: {duration:.1f} s long, shorter than the labels.last_s = {lab.last_s:g} s")
        return [(duration - lab.last_s, duration, value)]

    def _event_window(self, start: float, stop: float, value: str) -> tuple[float, float, str]:
        if stop - start >= self.window_s:
            return start, stop, value
        centre = (start + stop) / 2
        return centre - self.window_s / 2, centre + self.window_s / 2, value

    def _split_in_time(self, ev: Event, duration: float) -> list[Event]:
        """``split.by = "time"``: a stretch long enough is cut in consecutive blocks of the fractions; a shorter one
        goes whole to the block of the recording's timeline its centre falls in."""
        blocks: Sequence[tuple[str, float]] = self.split.blocks
        length = ev.stop - ev.start
        if length >= self.window_s * len(blocks):
            parts, at = [], ev.start
            for name, frac in blocks:
                parts.append(Event(at, at + frac * length, ev.label, name))
                at += frac * length
            return parts
        where, acc = (ev.start + ev.stop) / 2 / max(duration, 1e-9), 0.0
        for name, frac in blocks:
            acc += frac
            if where < acc:
                return [Event(ev.start, ev.stop, ev.label, name)]
        return [Event(ev.start, ev.stop, ev.label, blocks[-1][0])]
