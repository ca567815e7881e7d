"""The window store: every split written once as a flat float32 file plus an index, read back by memory mapping.

Layout of a store directory::

    manifest.json          dataset, preprocessing, counts per split/class, skipped files, checksums
    train.bin  train.npz   samples of all windows back to back (C×T row-major each) + per-window index
    val.bin    val.npz
    test.bin   test.npz

Windows of one split may differ in shape (pretraining chunks depend on a file's channel count), so the index keeps
each window's offset, channel count and length. A random read is one memmap slice: no per-sample files, no pickles.
The memmap is opened lazily in the process that reads, so DataLoader workers each get their own handle.

Every file is written under a temporary name beside its target and renamed onto it (:func:`atomic_path`): a killed
writer leaves either the old file or the new one, never half of one, and an interrupted one (SIGINT/SIGTERM) also
deletes its temporary file. A ``SIGKILL`` can leave a ``.<name>.tmp`` behind; the next write of the same file
reuses and renames it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NeuroLMError

PATCH = 200
"""Samples per token: one second at the store's 200 Hz."""

MANIFEST = "manifest.json"


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


@dataclass
class SplitBuffer:
    """Windows collected for one split before it is written."""

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


def write_split(out_dir: Path, split: str, buf: SplitBuffer) -> dict[str, str]:
    """Write ``<split>.bin`` and ``<split>.npz`` atomically; return their sha256 checksums."""
    n = len(buf.signals)
    n_chans = np.array([s.shape[0] for s in buf.signals], dtype=np.int32)
    n_times = np.array([s.shape[1] for s in buf.signals], dtype=np.int32)
    sizes = n_chans.astype(np.int64) * n_times
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
    chan_offsets = np.concatenate([[0], np.cumsum(n_chans)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
    subjects, subject_id = np.unique(np.array(buf.subjects, dtype=str), return_inverse=True)
    files, file_id = np.unique(np.array(buf.files, dtype=str), return_inverse=True)
    bin_path, idx_path = out_dir / f"{split}.bin", out_dir / f"{split}.npz"
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as fh:
        for s in buf.signals:
            fh.write(np.ascontiguousarray(s, dtype=np.float32).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    with atomic_path(idx_path, f".{split}.tmp.npz") as tmp_idx:
        np.savez(
            tmp_idx,
            offset=offsets, n_chans=n_chans, n_times=n_times, chan_offset=chan_offsets,
            chans=np.concatenate(buf.chans).astype(np.int16) if n else np.zeros(0, np.int16),
            label=np.array(buf.labels, dtype=np.int16), start=np.array(buf.starts, dtype=np.float64),
            subject_id=subject_id.astype(np.int32), subjects=subjects, file_id=file_id.astype(np.int32), files=files,
        )
    return {bin_path.name: sha256_file(bin_path), idx_path.name: sha256_file(idx_path)}


class WindowSplit:
    """One split of a store as a map-style dataset (usable directly by ``torch.utils.data.DataLoader``).

    Items are dicts ``{"signal": float32 (C, T) in µV/100 at 200 Hz (a read-only view of the memmap), "chans": int64 (C,), "label": int,
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

    def _signals(self) -> np.memmap:
        if self._mm is None:
            path = self.root / f"{self.name}.bin"
            self._mm = np.memmap(path, dtype=np.float32, mode="r") if path.stat().st_size else np.zeros(0, np.float32)
        return self._mm

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memmap themselves
        return self.__dict__ | {"_mm": None}

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        c, t, off, co, label, subject, file, start = self._rows[i]
        return {
            "signal": self._signals()[off : off + c * t].reshape(c, t),  # read-only view: batching copies it once
            "chans": self._idx["chans"][co : co + c].astype(np.int64),
            "label": label,
            "subject": self._subject_names[subject],
            "file": self._file_names[file],
            "start": start,
        }


class WindowStore:
    """A prepared dataset directory: its manifest and its splits."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise NeuroLMError(f"{self.root}: not a window store (no {MANIFEST}; run `neurolm prepare` first)")
        self.manifest: dict = json.loads(manifest.read_text())
        if not self.manifest.get("complete"):
            raise NeuroLMError(f"{self.root}: preparation did not finish; re-run `neurolm prepare` to resume")

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

    def verify(self) -> None:
        """Recompute the checksums recorded in the manifest; raise naming any file that changed."""
        for name, digest in self.manifest.get("checksums", {}).items():
            if sha256_file(self.root / name) != digest:
                raise NeuroLMError(f"{self.root / name}: checksum mismatch (file changed or corrupt)")


class ConcatSplits:
    """The same split of several stores as one dataset; items also carry their ``dataset`` name.

    Training stages read all their stores through this, so the six tasks and the pretraining corpus mix in one
    index space (the reference concatenates and shuffles the same way).
    """

    def __init__(self, stores: list[WindowStore], split: str):
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

