"""``neurolm prepare``: read a dataset's native files, preprocess them, cut windows and write the window store.

Every source file is processed on its own into a shard (written atomically), so an interrupted run resumes where it
stopped and a file that fails is reported with its reason in the manifest without stopping the others. When all files
are done, the shards are gathered into the store's splits and removed. Re-running a finished preparation with the
same inputs and settings does nothing.

Interruptions: SIGTERM (a scheduler's or ``kill``'s stop) is turned into the KeyboardInterrupt that Ctrl-C raises
while a preparation runs, so both end the same clean way: the shard being written is deleted (never half-written),
finished shards stay, no manifest is written, and ``neurolm prepare`` exits with status 130 and says to re-run it.
A hard kill (SIGKILL) may leave one dot-named temporary file, in ``.shards/`` or beside a split file; the re-run
writes the same name again and renames it, and removes ``.shards/`` at the end. Shards carry no checksums (the rename
makes them whole); the split files built from them do, in the manifest (``WindowStore.verify``).

Bad inputs: a file that cannot be used is skipped with a reason naming the fault (see the readers and
:mod:`~neurolm.data.preprocess`); a file repaired instead (a flat channel dropped where the channel set is free, an
EDF truncated mid-record read up to its last whole record, events past the recording's ends dropped) is kept, and its
:class:`~neurolm.data.preprocess.RepairWarning` notes are listed under ``files.repaired`` in the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import NeuroLMError
from .channels import channel_indices
from .preprocess import PreprocessConfig, RepairWarning, flat_rows, preprocess_raw
from .readers import SPLITS, DatasetReader, Recording, Segment, get_reader
from .store import MANIFEST, SplitBuffer, atomic_path, atomic_write_bytes, write_split

SHARDS = ".shards"


def cut_windows(data: np.ndarray, start: float, stop: float, window_s: float, stride_s: float | None,
                sfreq: float) -> list[int]:
    """Start samples of the whole windows inside ``[start, stop)`` seconds; none if the stretch leaves the data.

    The count comes from the stretch's length in seconds (with a tolerance), not from rounded sample indices, so a
    5 s event window at a fractional onset is never lost to rounding.
    """
    w = int(round(window_s * sfreq))
    hop_s = stride_s or window_s
    hop = int(round(hop_s * sfreq))
    n = int(np.floor((stop - start - window_s) / hop_s + 1e-6)) + 1
    a = int(round(start * sfreq))
    if n <= 0 or a < 0:
        return []
    starts = [a + k * hop for k in range(n)]
    if starts[-1] + w > data.shape[1]:
        if starts[-1] + w > data.shape[1] + 1:  # one sample of slack for rounding of the recording's end
            return []
        starts = [min(s, data.shape[1] - w) for s in starts]
    return starts


def process_recording(reader: DatasetReader, rec: Recording, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """All windows of one recording as arrays (the content of its shard), with the notes of any repair made.

    Every :class:`RepairWarning` raised while reading (by the reader or here) is still shown, and its message is kept
    in ``notes`` for the manifest.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RepairWarning)
        arrays = _windows(reader, rec, config)
    notes = []
    for w in caught:
        if issubclass(w.category, RepairWarning):
            notes.append(str(w.message).removeprefix(f"{rec.path}: "))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return arrays | {"notes": np.array(notes, dtype=str)}


def _windows(reader: DatasetReader, rec: Recording, config: PreprocessConfig) -> dict[str, np.ndarray]:
    signals, labels, starts, splits, dropped, outside = [], [], [], [], 0, 0
    chans = None
    for seg in reader.read(rec):
        reader.pick(seg)
        drop_flat_channels(seg, rec.path, config, fixed=reader.channels is not None)
        idx = np.array(channel_indices(seg.names), dtype=np.int16)
        if chans is not None and not np.array_equal(chans, idx):
            raise NeuroLMError(f"{rec.path}: channel set changes between segments")
        chans = idx
        try:
            data = preprocess_raw(seg.raw, seg.labels, config)
        except NeuroLMError as exc:
            raise NeuroLMError(f"{rec.path}: {exc}") from exc
        w_s = reader.window_seconds(len(idx))
        seconds = seg.raw.n_times / seg.raw.info["sfreq"]
        for ev in seg.events:
            found = cut_windows(data, ev.start, ev.stop, w_s, reader.stride_s, config.sfreq)
            dropped += not found
            outside += not found and (ev.start < 0 or ev.stop > seconds + 1 / seg.raw.info["sfreq"])
            w = int(round(w_s * config.sfreq))
            for s in found:
                signals.append(data[:, s : s + w])
                labels.append(ev.label)
                starts.append(s / config.sfreq)
                splits.append(ev.split or "")
    if not signals:
        raise NeuroLMError(f"{rec.path}: no complete window (recording shorter than its events or windows)")
    if outside:
        warnings.warn(f"{rec.path}: {outside} event(s) reach past the recording's start or end; their windows are "
                      "dropped", RepairWarning)
    return {
        "signals": np.stack(signals), "labels": np.array(labels, np.int16), "starts": np.array(starts),
        "splits": np.array(splits, dtype=str), "chans": chans, "dropped": np.array(dropped),
    }


def drop_flat_channels(seg: Segment, path: Path, config: PreprocessConfig, *, fixed: bool) -> None:
    """Drop the flat channels of a segment with a :class:`RepairWarning`, or raise where the channel set is fixed."""
    flat = flat_rows(seg.raw.get_data(picks=seg.labels, units="uV"), config)
    if not flat.any():
        return
    which = ", ".join(f"{n} ({lab})" for n, lab, f in zip(seg.names, seg.labels, flat) if f)
    what = f"flat channel(s) {which}: peak-to-peak below {config.flat_uv:g} µV over the whole recording"
    if fixed:
        raise NeuroLMError(f"{path}: {what}; the dataset needs every one of its channels")
    if flat.all():
        raise NeuroLMError(f"{path}: {what}; no channel is left")
    warnings.warn(f"{path}: {what}; dropped", RepairWarning)
    seg.names = [n for n, f in zip(seg.names, flat) if not f]
    seg.labels = [lab for lab, f in zip(seg.labels, flat) if not f]


def _fingerprint(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_key(rec: Recording, root: Path) -> list:
    files = [rec.path, *rec.extras]
    return [[str(p.relative_to(root)) if p.is_relative_to(root) else str(p), *( (p.stat().st_size, p.stat().st_mtime_ns)
             if p.exists() else (None, None))] for p in files]


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


def prepare_dataset(name: str, raw_dir: str | Path, out_dir: str | Path, *, mains: float | None = None, seed: int = 0,
                    progress: bool = True) -> dict:
    """Prepare one dataset; return its manifest. See the module docstring for resume, interruptions and failure
    handling."""
    with _sigterm_as_interrupt():
        return _prepare(name, Path(raw_dir), Path(out_dir), mains, seed, progress)


def _prepare(name: str, raw_dir: Path, out_dir: Path, mains: float | None, seed: int, progress: bool) -> dict:
    reader = get_reader(name)
    if not raw_dir.is_dir():
        raise NeuroLMError(f"{raw_dir}: no such directory")
    recordings = reader.find(raw_dir)
    if not recordings:
        raise NeuroLMError(f"{raw_dir}: no {name} recordings found (see `neurolm prepare --help` for the layout)")
    config = PreprocessConfig(mains=reader.mains if mains is None else mains)
    settings = {"dataset": name, "preprocessing": config.to_dict(), "seed": seed, "version": __version__}
    inputs = _fingerprint(settings, [_file_key(r, raw_dir) for r in recordings])
    manifest_path, shard_dir = out_dir / MANIFEST, out_dir / SHARDS
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("complete") and old.get("fingerprint") == inputs:
            shutil.rmtree(shard_dir, ignore_errors=True)  # left by a run stopped between its manifest and cleanup
            if progress:
                print(f"{name}: already prepared in {out_dir} (same files and settings); nothing to do")
            return old
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)

    t0, failures, shards = time.time(), [], {}
    for rec in tqdm(recordings, desc=f"prepare {name}", unit="file", disable=None if progress else True):  # None: no bar in non-TTY logs
        shard = shard_dir / f"{_fingerprint(settings, _file_key(rec, raw_dir))}.npz"
        shards[rec.path] = shard
        if shard.is_file():
            continue
        try:
            arrays = process_recording(reader, rec, config)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch; the reason goes in the manifest
            failures.append({"file": str(rec.path.relative_to(raw_dir)), "reason": _reason(exc, rec.path)})
            continue
        with atomic_path(shard, f".{shard.stem}.tmp.npz") as tmp:
            np.savez(tmp, **arrays)

    if len(failures) == len(recordings):
        reasons = "; ".join(f"{f['file']}: {f['reason']}" for f in failures[:5])
        raise NeuroLMError(f"{raw_dir}: every {name} file failed ({reasons})")
    rec_split = reader.assign_splits(recordings, seed)
    buffers = {s: SplitBuffer() for s in SPLITS}
    dropped, repaired = 0, []
    for rec in recordings:
        if not shards[rec.path].is_file():
            continue
        with np.load(shards[rec.path]) as sh:
            dropped += int(sh["dropped"])
            rel = str(rec.path.relative_to(raw_dir))
            if len(sh["notes"]):
                repaired.append({"file": rel, "notes": sh["notes"].tolist()})
            for sig, lab, st, sp in zip(sh["signals"], sh["labels"], sh["starts"], sh["splits"]):
                buffers[str(sp) or rec.split or rec_split[rec.path]].add(sig, sh["chans"], int(lab), float(st),
                                                                         rec.subject, rel)
    checksums = {}
    for split, buf in buffers.items():
        checksums |= write_split(out_dir, split, buf)
    manifest = {
        **settings,
        "complete": True,
        "fingerprint": inputs,
        "classes": list(reader.classes),
        "channels": list(reader.channels) if reader.channels else "all vocabulary channels present in each file",
        "window_s": reader.window_s or "floor(1024 / channels) s, at most 64 s",
        "stride_s": reader.stride_s or reader.window_s or "window",
        "splits": {s: _split_summary(b, reader.classes) for s, b in buffers.items()},
        "files": {"found": len(recordings), "ok": len(recordings) - len(failures), "skipped": failures,
                  "repaired": repaired},
        "events_without_window": dropped,
        "checksums": checksums,
        "seconds": round(time.time() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode())
    shutil.rmtree(shard_dir, ignore_errors=True)
    return manifest


def _reason(exc: Exception, path: Path) -> str:
    text = str(exc).removeprefix(f"{path}: ")
    return text if isinstance(exc, NeuroLMError) else f"{type(exc).__name__}: {text}"


def _split_summary(buf: SplitBuffer, classes: tuple[str, ...]) -> dict:
    counts = Counter(buf.labels)
    return {
        "windows": len(buf.labels),
        "subjects": len(set(buf.subjects)),
        "files": len(set(buf.files)),
        "classes": {c: counts.get(i, 0) for i, c in enumerate(classes)},
    }


def format_summary(manifest: dict) -> str:
    """Per-split, per-class table of a manifest, plus the skipped files and their reasons."""
    classes = manifest["classes"]
    head = f"{'split':<6}{'windows':>9}{'subjects':>9}" + "".join(f"{c:>11}" for c in classes)
    lines = [head]
    for split, s in manifest["splits"].items():
        lines.append(f"{split:<6}{s['windows']:>9}{s['subjects']:>9}" + "".join(f"{s['classes'][c]:>11}" for c in classes))
    for f in manifest["files"]["skipped"]:
        lines.append(f"skipped {f['file']}: {f['reason']}")
    for f in manifest["files"]["repaired"]:
        lines += [f"repaired {f['file']}: {note}" for note in f["notes"]]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["tuab", "tuev", "seed", "hmc", "workload", "tusl", "pretrain"])
    p.add_argument("raw_dir", type=Path, help="directory holding the dataset's native files")
    p.add_argument("out_dir", type=Path, help="window store to write (resumable)")
    p.add_argument("--mains", type=float, choices=[50.0, 60.0], default=None,
                   help="notch frequency; default: the dataset's country (60 Hz TUH, 50 Hz HMC/EEGMAT/SEED)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject-wise splits")


def run(args: argparse.Namespace) -> int:
    m = prepare_dataset(args.dataset, args.raw_dir, args.out_dir, mains=args.mains, seed=args.seed)
    print(format_summary(m))
    total = sum(s["windows"] for s in m["splits"].values())
    print(f"prepared {args.dataset}: {total} windows from {m['files']['ok']}/{m['files']['found']} files "
          f"({len(m['files']['skipped'])} skipped) → {args.out_dir}")
    return 0
