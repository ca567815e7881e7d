"""``neurolm prepare``: read a dataset's native files, preprocess them, cut windows and write the window store.

Streaming: ``--workers`` processes (default: the CPU cores available) each turn one recording into a shard (written
atomically); this process, the single writer, appends the shards' windows to their splits' files in the sorted
order of the recordings, as soon as the next one in that order is done, and deletes the shard. Memory is one
recording per worker plus the writer's one, whatever the corpus size; the store does not depend on the number of
workers (same windows, same order, same checksums). The progress bar shows files/s, hours of EEG per second and the
ETA. ``--dtype float16`` stores samples at half the size (reads return float32 either way).

Resume: after each recording's windows are written and synced, a line is appended to ``.journal.jsonl`` (the
recording's provenance plus the split files' lengths). A re-run with the same inputs and settings cuts the split
files back to the last whole line, reuses finished shards, and carries on; a finished preparation is not redone.
The manifest, which alone makes the store readable (``complete``), is written last, after the split files are renamed
into place; the journal and ``.shards/`` are then removed.

Interruptions: SIGTERM (a scheduler's or ``kill``'s stop) is turned into the KeyboardInterrupt that Ctrl-C raises
while a preparation runs, so both end the same clean way: the workers finish the recordings in progress, nothing is
written half, no manifest is written, and ``neurolm prepare`` exits with status 130 and says to re-run it. A hard kill
(SIGKILL) may leave dot-named temporary files, a torn journal line or windows written after the last journal line;
the re-run ignores or cuts them (the workers of a killed run exit within a second, see :mod:`.workers`).

Bad inputs: a file that cannot be used is skipped with a reason naming the fault (see the readers and
:mod:`~neurolm.data.preprocess`); a file repaired instead (a flat or degenerate channel dropped where the channel set
is free, an EDF truncated mid-record read up to its last whole record, EDF+ annotations read as Latin-1, events past
the recording's ends or implausible windows dropped) is kept, and its :class:`~neurolm.data.preprocess.RepairWarning`
notes are listed under ``files.repaired`` in the manifest. ``sources`` lists every file with its status (prepared /
repaired / skipped), reason or notes, subject, duration, size and windows per split (and ``renamed``: the task's
channels read under the other name of their electrode, T3 for T7, with the file's label); ``warnings`` names the splits
that came out empty.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import NeuroLMError
from ..lock import directory_lock
from ..report import Paragraph, Table, to_text
from .datasets import DATASETS
from .labels import TaskFileReader
from .preprocess import PreprocessConfig
from .readers import SPLITS, DatasetReader, Recording, get_reader
from .taskfile import load_task_file, spec_summary
from .store import DTYPES, MANIFEST, Group, SplitWriter, atomic_path, atomic_write_bytes, recorded_sizes
from .windows import process_recording
from .workers import available_cpus, ordered_map

log = logging.getLogger(__name__)

SHARDS = ".shards"
JOURNAL = ".journal.jsonl"


def _fingerprint(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_key(rec: Recording, root: Path) -> list:
    files = [rec.path, *rec.extras]
    return [[_relative(p, root), *((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (None, None))]
            for p in files]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (see the module docstring); outside, its handler is as
    before. Signal handlers can only be set from the main thread: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, *, mains: float | None = None,
                    seed: int | None = None, progress: bool = True, workers: int = 1, dtype: str = "float32",
                    overwrite: bool = False, scale: float | None = None, allow_low_rate: bool = False) -> dict:
    """Prepare one dataset; return its manifest. See the module docstring for resume, interruptions and failure
    handling; ``workers`` processes read the recordings (the store does not depend on how many). A finished store
    of other inputs or settings in ``out_dir`` is replaced only with ``overwrite``. ``scale``: a declared factor for
    samples not in the unit their files state, ``allow_low_rate`` accepts recordings at or below 150 Hz with a lower
    low-pass (:class:`~.preprocess.PreprocessConfig`)."""
    return _checked(get_reader(name), raw_dir, out_dir, mains, 0 if seed is None else seed, progress, workers,
                    dtype, None, overwrite, scale, allow_low_rate)


def prepare_task_file(task_file: str | Path, raw_dir: str | Path, out_dir: str | Path, *, mains: float | None = None,
                      seed: int | None = None, progress: bool = True, workers: int = 1, dtype: str = "float32",
                      overwrite: bool = False, scale: float | None = None, allow_low_rate: bool = False) -> dict:
    """Prepare the recordings a task file describes (docs/own-tasks.md), like :func:`prepare_dataset`; the split
    seed is the file's ``split.seed`` and the scale its ``scale`` unless ``seed`` / ``scale`` are given, low rates
    are allowed by its ``allow_low_rate`` or by ``allow_low_rate``, and the manifest's ``task`` holds the definition."""
    spec = load_task_file(task_file)
    return _checked(TaskFileReader(spec), raw_dir, out_dir, mains, spec.split_seed if seed is None else seed,
                    progress, workers, dtype, spec_summary(spec), overwrite, scale, allow_low_rate)


def _checked(reader: DatasetReader, raw_dir: str | Path, out_dir: str | Path, mains: float | None, seed: int,
             progress: bool, workers: int, dtype: str, task: dict | None, overwrite: bool, scale: float | None,
             allow_low_rate: bool = False) -> dict:
    if dtype not in DTYPES:
        raise NeuroLMError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if workers < 1:
        raise NeuroLMError(f"--workers {workers}: needs at least 1")
    if scale is not None:
        if not 0 < scale < float("inf"):
            raise NeuroLMError(f"--scale {scale:g}: must be a positive factor (0.01: samples stored 100 times too "
                               "large)")
        reader.scale = float(scale)
    reader.allow_low_rate = reader.allow_low_rate or allow_low_rate
    if not Path(raw_dir).is_dir():  # before the lock creates OUT_DIR
        raise NeuroLMError(f"{raw_dir}: no such directory")
    with directory_lock(out_dir), _sigterm_as_interrupt():
        return _prepare(reader, Path(raw_dir), Path(out_dir), mains, seed, progress, workers, dtype, task, overwrite)


def _prepare(reader: DatasetReader, raw_dir: Path, out_dir: Path, mains: float | None, seed: int, progress: bool,
             workers: int, dtype: str, task: dict | None, overwrite: bool) -> dict:
    name = reader.name
    if not raw_dir.is_dir():
        raise NeuroLMError(f"{raw_dir}: no such directory")
    recordings = reader.find(raw_dir)
    if not recordings:
        raise NeuroLMError(f"{raw_dir}: no {name} recordings found (see `neurolm prepare --help` for the layout)")
    config = PreprocessConfig(mains=reader.mains if mains is None else mains, input_scale=reader.scale,
                              allow_low_rate=reader.allow_low_rate)
    settings = {"dataset": name, "preprocessing": config.to_dict(), "seed": seed, "dtype": dtype,
                "version": __version__, **({"task": task} if task is not None else {})}
    inputs = _fingerprint(settings, [_file_key(r, raw_dir) for r in recordings])
    manifest_path, shard_dir = out_dir / MANIFEST, out_dir / SHARDS
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):  # damaged: nothing finished to keep
            old = {}
        if old.get("complete") and old.get("fingerprint") != inputs and not overwrite:
            raise NeuroLMError(f"{out_dir} holds a finished {old.get('dataset')} store prepared from other files or "
                               "settings; pass --overwrite (overwrite=True) to replace it, or prepare into another "
                               "folder")
        if old.get("complete") and old.get("fingerprint") == inputs:
            shutil.rmtree(shard_dir, ignore_errors=True)  # left by a run stopped between its manifest and cleanup
            log.info(f"{name}: already prepared in {out_dir} (same files and settings); nothing to do")
            return old
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)

    t0 = time.time()
    rels = [_relative(r.path, raw_dir) for r in recordings]
    journal = Journal(out_dir / JOURNAL, inputs, rels)
    writers = {s: SplitWriter(out_dir, s, dtype, *journal.state(s)) for s in SPLITS}
    rec_split = reader.assign_splits(recordings, seed)
    todo = recordings[len(journal.entries):]
    tasks = [(reader, rec, config, shard_dir / f"{_fingerprint(settings, _file_key(rec, raw_dir))}.npz")
             for rec in todo]
    bar = tqdm(total=len(recordings), initial=len(journal.entries), desc=f"prepare {name}", unit="file",
               disable=None if progress else True)  # None: no bar in non-TTY logs
    hours = 0.0
    with closing(ordered_map(_process, tasks, workers, crashed=_crashed)) as results:  # closed at once on an interrupt
        for rec, rel, (_, _, _, shard), result in zip(todo, rels[len(journal.entries):], tasks, results):
            entry = _commit(rec, rel, shard, result, writers, rec_split.get(rec.path, ""))
            journal.append(entry)
            hours += entry.get("duration_s", 0) / 3600
            bar.update()
            bar.set_postfix_str(f"{hours / max(time.time() - t0, 1e-9):.3f} h EEG/s", refresh=False)
    bar.close()

    sources = [_provenance(e) for e in journal.entries]
    failures = [{"file": e["file"], "reason": e["reason"]} for e in sources if e["status"] == "skipped"]
    if len(failures) == len(recordings):
        reasons = "; ".join(f"{f['file']}: {f['reason']}" for f in failures[:5])
        raise NeuroLMError(f"{raw_dir}: every {name} file failed ({reasons})")
    checksums = {}
    for writer in writers.values():
        checksums |= writer.finish()
    splits = {s: _split_summary(out_dir, s, w, reader.classes) for s, w in writers.items()}
    manifest = {
        **settings,
        "complete": True,
        "fingerprint": inputs,
        "classes": list(reader.classes),
        "channels": list(reader.channels) if reader.channels else "all vocabulary channels present in each file",
        "window_s": reader.window_s or "floor(1024 / channels) s, at most 64 s",
        "stride_s": reader.stride_s or reader.window_s or "window",
        "splits": splits,
        "warnings": [f"split {s!r} is empty: no recording or window went to it (a layout folder missing, such as "
                     f"TUH's eval/ for the test split?)" for s, summary in splits.items() if not summary["windows"]]
                    + _missing_classes(splits, task),
        "files": {"found": len(recordings), "ok": len(recordings) - len(failures), "skipped": failures,
                  "repaired": [{"file": e["file"], "notes": e["notes"]} for e in sources if e["status"] == "repaired"]},
        "sources": sources,
        "band_hz": [config.l_freq, min([config.h_freq, *(e["low_pass_hz"] for e in sources if "low_pass_hz" in e)])],
        "events_without_window": sum(e.get("events_without_window", 0) for e in sources),
        "implausible_windows": sum(e.get("implausible_windows", 0) for e in sources),
        "checksums": checksums,
        "sizes": recorded_sizes(out_dir, checksums),
        "seconds": round(time.time() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    journal.path.unlink()
    shutil.rmtree(shard_dir, ignore_errors=True)
    return manifest


def _missing_classes(splits: dict[str, dict], task: dict | None) -> list[str]:
    """Own tasks only (the built-in datasets' splits are fixed): a class absent from a split that has windows, which
    its balanced accuracy cannot score (a label table or split that needs a look)."""
    if task is None:
        return []
    return [f"split {s!r} has no {c!r} window (check the labels and the split)" for s, summary in splits.items()
            if summary["windows"] for c, n in summary["classes"].items() if not n]


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _process(task: tuple[DatasetReader, Recording, PreprocessConfig, Path]) -> dict:
    """Worker side: the windows of one recording into its shard (written atomically under a name unique to this
    process, so an orphan of a killed run and its re-run never write one file); ``{"reason"}`` when it fails."""
    reader, rec, config, shard = task
    if shard.is_file():  # finished by a run that was stopped before writing it to the store
        return {}
    try:
        arrays = process_recording(reader, rec, config)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; the reason goes in the manifest
        return {"reason": _reason(exc, rec.path)}
    with atomic_path(shard, f".{shard.stem}.{os.getpid()}.tmp.npz") as tmp:
        np.savez(tmp, **arrays)
    return {}


def _crashed(task: tuple) -> dict:
    return {"reason": "the worker process reading it died (killed for lack of memory, or a crash in a reader library)"}


def _commit(rec: Recording, rel: str, shard: Path, result: dict, writers: dict[str, SplitWriter], split: str) -> dict:
    """Append one processed recording's windows to the split writers (the single writer, in recording order) and
    return its journal entry: its provenance plus what a resumed run needs to rebuild the writers."""
    files = [rec.path, *rec.extras]
    entry = {"file": rel, "subject": rec.subject, "bytes": sum(p.stat().st_size for p in files if p.is_file())}
    if "reason" in result:
        return entry | {"status": "skipped", "reason": result["reason"]}
    with np.load(shard) as sh:
        where = np.array([str(s) or rec.split or split for s in sh["splits"]])
        chans, signals, labels, starts = sh["chans"], sh["signals"], sh["labels"], sh["starts"]  # each read once
        windows = {}
        for s, writer in writers.items():
            keep = where == s
            if keep.any():
                writer.append(signals[keep], chans, labels[keep], starts[keep], rec.subject, rel)
                windows[s] = int(keep.sum())
        notes = sh["notes"].tolist()
        renamed = dict(r.split("=", 1) for r in sh["renamed"].tolist()) if "renamed" in sh else {}
        entry |= {"renamed": renamed} if renamed else {}  # a task's channel read under the file's other name
        if "low_pass" in sh and sh["low_pass"].size:  # a low rate, low-passed below its Nyquist frequency
            entry["low_pass_hz"] = float(sh["low_pass"][0])
        entry |= {"status": "repaired" if notes else "prepared", "notes": notes, "duration_s": float(sh["seconds"]),
                  "windows": windows, "events_without_window": int(sh["dropped"]),
                  "implausible_windows": int(sh["implausible"]), "chans": chans.tolist(),
                  "samples": {s: w.samples for s, w in writers.items()}}
    shard.unlink()
    return entry


def _provenance(entry: dict) -> dict:
    """A journal entry as the manifest lists it: without the writers' resume state."""
    out = {k: v for k, v in entry.items() if k not in ("chans", "samples")}
    if "chans" in entry:
        out["channels"] = len(entry["chans"])
    return out


class Journal:
    """``.journal.jsonl``: one line per recording written to the store, in recording order, appended (and synced)
    after its windows are: the resume state of an interrupted run.

    The first line holds the inputs' fingerprint; a journal of other inputs or settings is discarded. A torn last
    line (a kill mid-write) and anything not matching the recordings in order are cut off, and the split writers are
    cut back to what the remaining lines account for (:class:`~neurolm.data.store.SplitWriter`).
    """

    def __init__(self, path: Path, fingerprint: str, files: list[str]):
        self.path, self.entries = path, []
        lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
        kept = []
        if lines and _json_line(lines[0]) == {"fingerprint": fingerprint}:
            kept.append(lines[0])
            for line, file in zip(lines[1:], files):
                entry = _json_line(line)
                if entry is None or entry.get("file") != file:
                    break
                self.entries.append(entry)
                kept.append(line)
        else:
            kept = [json.dumps({"fingerprint": fingerprint}) + "\n"]
        atomic_write_bytes(path, "".join(kept).encode())

    def state(self, split: str) -> tuple[list[Group], int]:
        """The groups and sample count a split writer had when the last journaled recording was written."""
        groups = [Group(e["subject"], e["file"], e["chans"], e["windows"][split]) for e in self.entries
                  if e.get("windows", {}).get(split)]
        samples = next((e["samples"][split] for e in reversed(self.entries) if "samples" in e), 0)
        return groups, samples

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries.append(entry)


def _json_line(line: str) -> dict | None:
    if not line.endswith("\n"):
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _reason(exc: Exception, path: Path) -> str:
    text = str(exc).removeprefix(f"{path}: ")
    return text if isinstance(exc, NeuroLMError) else f"{type(exc).__name__}: {text}"


def _split_summary(out_dir: Path, split: str, writer: SplitWriter, classes: tuple[str, ...]) -> dict:
    labels = np.load(out_dir / f"{split}.npz")["label"]
    counts = Counter(labels.tolist())
    return {
        "windows": len(labels),
        "subjects": len({g.subject for g in writer.groups}),
        "files": len({g.file for g in writer.groups}),
        "classes": {c: counts.get(i, 0) for i, c in enumerate(classes)},
    }


def format_summary(manifest: dict) -> str:
    """Per-split, per-class table of a manifest, the files by status, the skipped and repaired files with their
    reasons, and the warnings."""
    classes = manifest["classes"]
    table = Table(["split", "windows", "subjects", *classes],
                  [[split, str(s["windows"]), str(s["subjects"]), *(str(s["classes"][c]) for c in classes)]
                   for split, s in manifest["splits"].items()])
    lines = []
    for f in manifest["files"]["skipped"]:
        lines.append(f"skipped {f['file']}: {f['reason']}")
    for f in manifest["files"]["repaired"]:
        lines += [f"repaired {f['file']}: {note}" for note in f["notes"]]
    sources = manifest.get("sources", [])
    if sources:
        status = Counter(e["status"] for e in sources)
        hours = sum(e.get("duration_s", 0) for e in sources) / 3600
        lines.append(f"files: {status['prepared']} prepared, {status['repaired']} repaired, {status['skipped']} "
                     f"skipped; {hours:.2f} h of EEG, {manifest.get('implausible_windows', 0)} implausible window(s) "
                     f"dropped; samples stored as {manifest.get('dtype', 'float32')}")
    lines += [f"warning: {w}" for w in manifest.get("warnings", [])]
    return to_text([table, *map(Paragraph, lines)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="?", choices=list(DATASETS), help="a built-in dataset (or give --task-file)")
    p.add_argument("raw_dir", type=Path, help="directory holding the dataset's native files (or a BIDS root)")
    p.add_argument("out_dir", type=Path, help="window store to write (resumable)")
    p.add_argument("--mains", type=float, choices=[50.0, 60.0], default=None,
                   help="notch frequency; default: the dataset's country (60 Hz TUH, 50 Hz HMC/EEGMAT/SEED)")
    p.add_argument("--task-file", type=Path, default=None, metavar="T.toml",
                   help="prepare your own labelled recordings as the TOML task file describes (docs/own-tasks.md)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the subject-wise splits (default 0; a task file's split.seed)")
    p.add_argument("--workers", type=int, default=available_cpus(),
                   help="processes reading recordings (default: the CPU cores available); the store is the same "
                        "for any number")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="sample type on disk (float16 halves the store; reads return float32 either way)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished store in OUT_DIR that was prepared from other files or settings")
    p.add_argument("--scale", type=float, default=None, metavar="F",
                   help="multiply the samples by F as they are read, for files not in the unit they state (0.01: "
                        "values stored 100 times too large); default: a task file's scale, else 1")
    p.add_argument("--allow-low-rate", action="store_true",
                   help="accept recordings at or below 150 Hz, low-passed below their Nyquist frequency (0.4 × the "
                        "rate) instead of at 75 Hz; the manifest records the band (default: a task file's "
                        "allow_low_rate)")


def run(args: argparse.Namespace) -> int:
    if (args.dataset is None) == (args.task_file is None):
        raise NeuroLMError("give a built-in DATASET or --task-file T.toml, not both or neither")
    prepare = prepare_dataset if args.task_file is None else prepare_task_file
    m = prepare(args.dataset or args.task_file, args.raw_dir, args.out_dir, mains=args.mains, seed=args.seed,
                workers=args.workers, dtype=args.dtype, overwrite=args.overwrite, scale=args.scale,
                allow_low_rate=args.allow_low_rate)
    print(format_summary(m))
    total = sum(s["windows"] for s in m["splits"].values())
    print(f"prepared {m['dataset']}: {total} windows from {m['files']['ok']}/{m['files']['found']} files "
          f"({len(m['files']['skipped'])} skipped) → {args.out_dir}")
    return 0
