"""The window store: every split written once as a flat float32 (or float16) file plus an index, read back by
memory mapping.

Layout of a store directory::

    manifest.json          dataset, preprocessing, counts per split/class, every source file's provenance, checksums
    train.bin  train.npz   samples of all windows back to back (C×T row-major each) + per-window index
    val.bin    val.npz
    test.bin   test.npz

Windows of one split may differ in shape (pretraining chunks depend on a file's channel count), so the index keeps
each window's offset, channel count and length, and the sample type (``dtype``; absent = float32). A split is
written as a stream (:class:`SplitWriter`): windows are appended as each recording is done. A random read is one
memmap slice: no per-sample files, no pickles. The memmap is opened lazily in the process that reads, so DataLoader
workers each get their own handle.

Every file is written under a temporary name beside its target and renamed onto it (:func:`atomic_path`): a killed
writer leaves either the old file or the new one, never half of one, and an interrupted one (SIGINT/SIGTERM) also
deletes its temporary file. A ``SIGKILL`` can leave a ``.<name>.tmp`` behind; the next write of the same file
reuses and renames it.

Opening a store checks it (:class:`WindowStore`): every file the manifest lists must exist with its recorded size,
and its sha256 must match, so that a changed byte is refused rather than trained on. Hashing a large store on every
run would cost minutes, so a verdict is cached in ``.verified.json`` (or, for a read-only store, in the user's cache
folder) under each file's size, mtime and inode: a file that any of these says was touched is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NeuroLMError
from .taskfile import remember

PATCH = 200
"""Samples per token: one second at the store's 200 Hz."""

MANIFEST = "manifest.json"
VERIFIED = ".verified.json"
"""The cached checksum verdicts of a store (see the module notes)."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: Path, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (default ``.<name>.tmp``); rename it onto ``path`` when the block
    succeeds, delete it when the block raises (KeyboardInterrupt included), so a reader never sees a half-written
    file and an interrupted writer leaves no litter. ``tmp_name`` keeps a suffix that a writer insists on (``.npz``).
    """
    tmp = path.with_name(tmp_name or f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename (:func:`atomic_path`), synced to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


DTYPES = ("float32", "float16")
"""Sample types a store can hold; reads return float32 either way. float16 halves the disk (µV/100 in float16 keeps
~0.05 µV resolution at typical EEG amplitudes, about the quantisation step of a 16-bit EDF)."""

INDEX_RECORD = np.dtype([("n_times", "<i4"), ("label", "<i2"), ("start", "<f8")])
"""Per-window fields that a :class:`SplitWriter` appends to its side file as it goes (fixed size: a resumed writer
truncates it to a whole number of records)."""


@dataclass
class Group:
    """Consecutive windows of one split that share a recording (its subject, file and channels)."""

    subject: str
    file: str
    chans: list[int]
    windows: int


class SplitWriter:
    """Appends the windows of one split to ``.<split>.bin.tmp`` as they arrive and renames it onto ``<split>.bin``
    with its index when :meth:`finish` is called: memory holds one append, not the split.

    Per-window fields go to a fixed-record side file (``.<split>.idx.tmp``) and per-recording fields to
    :attr:`groups` (a few dozen bytes per recording), so a writer killed mid-run can be rebuilt from the groups its
    caller had committed (passed to the constructor): the temporary files are cut back to exactly those windows (or
    taken back from a :meth:`finish` that was stopped half-way), and the checksum is recomputed over what remains.
    """

    def __init__(self, out_dir: Path, split: str, dtype: str = "float32", groups: Iterable[Group] = (),
                 samples: int = 0):
        """A fresh writer, or (``groups``, ``samples``: what a killed run had committed) one that carries on."""
        if dtype not in DTYPES:
            raise NeuroLMError(f"store dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        self.root, self.split, self.dtype = Path(out_dir), split, np.dtype(dtype)
        self.bin_tmp = self.root / f".{split}.bin.tmp"
        self.idx_tmp = self.root / f".{split}.idx.tmp"
        self.groups, self.samples, self._hash = list(groups), samples, hashlib.sha256()
        n_bytes, n_idx = samples * self.dtype.itemsize, self.windows * INDEX_RECORD.itemsize
        final_bin, final_idx = self.root / f"{split}.bin", self.root / f"{split}.npz"
        if self.windows and not self.bin_tmp.is_file() and final_bin.is_file():  # stopped while finishing the splits
            os.replace(final_bin, self.bin_tmp)
        if self.windows and not self.idx_tmp.is_file() and final_idx.is_file():
            with np.load(final_idx) as idx:
                rows = np.zeros(len(idx["label"]), INDEX_RECORD)
                rows["n_times"], rows["label"], rows["start"] = idx["n_times"], idx["label"], idx["start"]
            rows.tofile(self.idx_tmp)
        for path, size in ((self.bin_tmp, n_bytes), (self.idx_tmp, n_idx)):
            if size and (not path.is_file() or path.stat().st_size < size):
                raise NeuroLMError(f"{path}: shorter than the journal says ({size} bytes); cannot resume")
            with open(path, "ab") as fh:
                fh.truncate(size)
        with open(self.bin_tmp, "rb") as fh:
            while block := fh.read(1 << 22):
                self._hash.update(block)

    @property
    def windows(self) -> int:
        return sum(g.windows for g in self.groups)

    def append(self, signals: np.ndarray | list[np.ndarray], chans: np.ndarray, labels: np.ndarray,
               starts: np.ndarray, subject: str, file: str) -> None:
        """Append windows of one recording (``(N, C, T)`` or a list of ``(C, T)``) sharing ``chans``."""
        if not len(signals):
            return
        rows = np.zeros(len(signals), INDEX_RECORD)
        rows["n_times"] = [s.shape[1] for s in signals]
        rows["label"], rows["start"] = labels, starts
        with open(self.bin_tmp, "ab") as fh:
            for s in signals:
                block = np.ascontiguousarray(s, dtype=self.dtype).tobytes()
                self._hash.update(block)
                fh.write(block)
                self.samples += s.size
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.idx_tmp, "ab") as fh:
            fh.write(rows.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        self.groups.append(Group(subject, file, [int(c) for c in chans], len(signals)))

    def finish(self) -> dict[str, str]:
        """Write ``<split>.npz`` and rename the samples onto ``<split>.bin``; return both sha256 checksums."""
        rows = np.fromfile(self.idx_tmp, INDEX_RECORD)
        g_of = np.repeat(np.arange(len(self.groups)), [g.windows for g in self.groups]).astype(np.int64)
        n_chans = np.array([len(g.chans) for g in self.groups], np.int32)[g_of]
        sizes = n_chans.astype(np.int64) * rows["n_times"]
        offsets = (np.cumsum(sizes) - sizes).astype(np.int64)
        chan_offsets = (np.cumsum(n_chans) - n_chans).astype(np.int64)
        chans = [np.tile(np.array(g.chans, np.int16), g.windows) for g in self.groups]
        subjects, subject_id = np.unique(np.array([g.subject for g in self.groups], dtype=str), return_inverse=True)
        files, file_id = np.unique(np.array([g.file for g in self.groups], dtype=str), return_inverse=True)
        idx_path = self.root / f"{self.split}.npz"
        with atomic_path(idx_path, f".{self.split}.tmp.npz") as tmp_idx:
            np.savez(
                tmp_idx,
                offset=offsets, n_chans=n_chans, n_times=rows["n_times"], chan_offset=chan_offsets,
                chans=np.concatenate(chans) if chans else np.zeros(0, np.int16),
                label=rows["label"], start=rows["start"],
                subject_id=subject_id[g_of].astype(np.int32), subjects=subjects,
                file_id=file_id[g_of].astype(np.int32), files=files, dtype=np.array(self.dtype.name),
            )
        bin_path = self.root / f"{self.split}.bin"
        os.replace(self.bin_tmp, bin_path)
        self.idx_tmp.unlink(missing_ok=True)
        return {bin_path.name: self._hash.hexdigest(), idx_path.name: sha256_file(idx_path)}


@dataclass
class SplitBuffer:
    """Windows of one split collected in memory: a convenience for small hand-made stores (tests, examples);
    ``prepare`` streams through :class:`SplitWriter` instead."""

    signals: list[np.ndarray] = field(default_factory=list)
    chans: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def add(self, signal: np.ndarray, chans: np.ndarray, label: int, start: float, subject: str, file: str) -> None:
        self.signals.append(signal)
        self.chans.append(chans)
        self.labels.append(label)
        self.starts.append(start)
        self.subjects.append(subject)
        self.files.append(file)


def write_split(out_dir: Path, split: str, buf: SplitBuffer, dtype: str = "float32") -> dict[str, str]:
    """Write ``<split>.bin`` and ``<split>.npz`` atomically; return their sha256 checksums."""
    writer = SplitWriter(out_dir, split, dtype)
    for sig, chans, label, start, subject, file in zip(buf.signals, buf.chans, buf.labels, buf.starts, buf.subjects,
                                                       buf.files):
        writer.append([sig], chans, np.array([label]), np.array([start]), subject, file)
    return writer.finish()


class WindowSplit:
    """One split of a store as a map-style dataset (usable directly by ``torch.utils.data.DataLoader``).

    Items are dicts ``{"signal": float32 (C, T) in µV/100 at 200 Hz (a read-only view of the memmap in a float32
    store: batching copies it once; a float32 copy in a float16 store), "chans": int64 (C,), "label": int,
    "subject": str, "file": str, "start": float}``.
    """

    def __init__(self, root: Path, split: str):
        self.root, self.name = Path(root), split
        idx_path = self.root / f"{split}.npz"
        if not idx_path.is_file():
            raise NeuroLMError(f"{self.root}: split {split!r} has no {idx_path.name} (is the store complete?)")
        with np.load(idx_path) as idx:
            self._idx = {k: idx[k] for k in idx.files}
        # Per-window fields as Python lists: a read then costs list lookups, not numpy scalar conversions.
        self._rows = list(zip(*(self._idx[k].tolist() for k in ("n_chans", "n_times", "offset", "chan_offset", "label",
                                                                    "subject_id", "file_id", "start"))))
        self._subject_names = self._idx["subjects"].tolist()
        self._file_names = self._idx["files"].tolist()
        self.dtype = np.dtype(str(self._idx["dtype"])) if "dtype" in self._idx else np.dtype(np.float32)
        self._mm: np.memmap | None = None

    def __len__(self) -> int:
        return len(self._idx["offset"])

    @property
    def labels(self) -> np.ndarray:
        return self._idx["label"].astype(np.int64)

    @property
    def subjects(self) -> np.ndarray:
        return self._idx["subjects"][self._idx["subject_id"]]

    @property
    def token_counts(self) -> np.ndarray:
        """EEG tokens (channels × whole seconds) of every window: what a batch pads to."""
        return self._idx["n_chans"].astype(np.int64) * (self._idx["n_times"].astype(np.int64) // PATCH)

    def windows_by_file(self) -> dict[str, np.ndarray]:
        """Window indices of every source file, in time order (what the overlap search reads a recording by)."""
        file_id, start = self._idx["file_id"], self._idx["start"]
        order = np.lexsort((start, file_id))
        cuts = np.flatnonzero(np.diff(file_id[order])) + 1
        return {self._file_names[int(file_id[rows[0]])]: rows for rows in np.split(order, cuts) if len(rows)}

    def _signals(self) -> np.memmap:
        if self._mm is None:
            path = self.root / f"{self.name}.bin"
            self._mm = np.memmap(path, dtype=self.dtype, mode="r") if path.stat().st_size else np.zeros(0, self.dtype)
        return self._mm

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memmap themselves
        return self.__dict__ | {"_mm": None}

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        c, t, off, co, label, subject, file, start = self._rows[i]
        signal = self._signals()[off : off + c * t].reshape(c, t)
        return {
            "signal": signal if signal.dtype == np.float32 else signal.astype(np.float32),
            "chans": self._idx["chans"][co : co + c].astype(np.int64),
            "label": label,
            "subject": self._subject_names[subject],
            "file": self._file_names[file],
            "start": start,
        }


class WindowStore:
    """A prepared dataset directory: its manifest and its splits, checked on opening (see the module notes;
    ``verify=False`` skips the checksums, not the sizes)."""

    def __init__(self, path: str | Path, *, verify: bool = True):
        self.root = Path(path)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise NeuroLMError(f"{self.root}: not a window store (no {MANIFEST}; run `neurolm prepare` first)")
        try:
            self.manifest: dict = json.loads(manifest.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NeuroLMError(f"{manifest}: damaged (not valid JSON: {exc}); re-run `neurolm prepare` into a new "
                               "folder") from None
        if not isinstance(self.manifest, dict) or not self.manifest.get("complete"):
            raise NeuroLMError(f"{self.root}: preparation did not finish; re-run `neurolm prepare` to resume")
        self._check_sizes()
        if verify and int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0's refusal stops every rank
            self.verify(cached=True)
        if "task" in self.manifest:  # prepared from a task file: its task is now known by name (data.taskfile)
            remember(self.manifest["task"], str(self.root / MANIFEST))

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "val", "test") if (self.root / f"{s}.npz").is_file()]

    def split(self, name: str) -> WindowSplit:
        return WindowSplit(self.root, name)

    def _check_sizes(self) -> None:
        """Every file of the manifest is there, with its recorded size (manifests before sizes: presence only)."""
        sizes, checksums = self.manifest.get("sizes", {}), self.manifest.get("checksums", {})
        if not isinstance(sizes, dict) or not isinstance(checksums, dict) or not isinstance(
                self.manifest.get("dataset"), str):
            raise NeuroLMError(f"{self.root / MANIFEST}: damaged (no dataset name, or its checksums or sizes are not "
                               "tables); re-run `neurolm prepare` into a new folder")
        for name in checksums:
            path = self.root / name
            if not path.is_file():
                raise NeuroLMError(f"{path}: missing (the store's manifest lists it); re-run `neurolm prepare` into "
                                   "a new folder")
            if name in sizes and path.stat().st_size != sizes[name]:
                raise NeuroLMError(f"{path}: {path.stat().st_size} bytes, the manifest says {sizes[name]} (truncated "
                                   "or changed); re-run `neurolm prepare` into a new folder")

    def verify(self, *, cached: bool = False) -> None:
        """Recompute the checksums recorded in the manifest; raise naming any file that changed. ``cached``: skip
        files whose size, mtime and inode are those of an earlier verdict (see the module notes)."""
        checksums = self.manifest.get("checksums", {})
        cache_path = _verdict_path(self.root)
        verdicts = _read_verdicts(cache_path) if cached else {}
        fresh = {}
        for name, digest in checksums.items():
            path = self.root / name
            key = _file_key(path, digest)
            if verdicts.get(name) != key:
                if sha256_file(path) != digest:
                    raise NeuroLMError(f"{path}: checksum mismatch (file changed or corrupt); re-run `neurolm "
                                       "prepare` into a new folder")
            fresh[name] = key
        if cached and fresh != verdicts:
            _write_verdicts(cache_path, fresh)


def check_task_definitions(stores: Iterable[WindowStore]) -> None:
    """Refuse two stores that define one task name differently (prepared from two versions of a task file): the
    task is known by name, so one definition would score the other store's windows, e.g. with swapped classes."""
    seen: dict[str, WindowStore] = {}
    for store in stores:
        if "task" not in store.manifest:
            continue
        first = seen.setdefault(store.dataset, store)
        if first.manifest["task"] != store.manifest["task"]:
            raise NeuroLMError(f"task {store.dataset!r} has two different definitions: {first.root / MANIFEST} and "
                               f"{store.root / MANIFEST} (prepared from different task files?); prepare both from "
                               "one task file, or give one task another name")


def _file_key(path: Path, digest: str) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, digest]


def _verdict_path(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / VERIFIED
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neurolm" / "verified"
    return cache / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]}.json"


def _read_verdicts(path: Path) -> dict:
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: everything is hashed again
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def _write_verdicts(path: Path, verdicts: dict) -> None:
    """Best effort: a verdict that cannot be written only costs the next run a hash pass."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, f".{path.name}.{os.getpid()}.tmp") as tmp:  # a private name: readers may race
            tmp.write_text(json.dumps(verdicts))
    except OSError:
        pass


def recorded_sizes(root: Path, names: Iterable[str]) -> dict[str, int]:
    """The sizes a manifest records beside the checksums of ``names``, checked on every opening."""
    return {name: (Path(root) / name).stat().st_size for name in names}


class ConcatSplits:
    """The same split of several stores as one dataset; items also carry their ``dataset`` name.

    Training stages read all their stores through this, so the six tasks and the pretraining corpus mix in one
    index space (the reference concatenates and shuffles the same way).
    """

    def __init__(self, stores: list[WindowStore], split: str):
        check_task_definitions(stores)
        self.parts = [(st.dataset, st.split(split)) for st in stores if split in st.splits]
        self.offsets = np.cumsum([0] + [len(p) for _, p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        name, part = self.parts[k]
        return part[i - int(self.offsets[k])] | {"dataset": name}

    @property
    def datasets(self) -> list[str]:
        return [name for name, _ in self.parts]

    @property
    def token_counts(self) -> np.ndarray:
        return np.concatenate([p.token_counts for _, p in self.parts] or [np.zeros(0, np.int64)])

