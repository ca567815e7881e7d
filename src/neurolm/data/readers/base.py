"""What every dataset reader provides: where its recordings are, how to read one, its labels, and its split rule.

A reader knows a dataset's native layout and annotation formats and nothing about filtering or storage; the
preparation step (:mod:`neurolm.data.prepare`) runs the same pipeline over every reader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mne
import numpy as np

from ...errors import NeuroLMError
from ..channels import map_channels

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Recording:
    """One source file (plus its annotation sidecar) of a dataset."""

    path: Path
    subject: str
    split: str | None = None
    """Split fixed by the dataset's layout (TUH ``eval`` → test); None when the split rule decides."""
    extras: tuple[Path, ...] = ()
    """Annotation files read together with ``path``."""


@dataclass(frozen=True)
class Event:
    """A labelled stretch of a recording, cut into windows by the preparation step."""

    start: float
    """Seconds from the recording start."""
    stop: float
    label: int
    split: str | None = None
    """Set when a dataset splits inside recordings (SEED: by time within each trial)."""


@dataclass
class Segment:
    """A continuous signal to preprocess as one piece, with its events."""

    raw: mne.io.BaseRaw
    events: list[Event]
    labels: list[str] = field(default_factory=list)
    """The recording's channel labels to use, in vocabulary order (filled by :meth:`DatasetReader.pick`)."""
    names: list[str] = field(default_factory=list)
    """Vocabulary names of those channels."""


class DatasetReader:
    """Base class: subclasses set the class attributes and implement :meth:`find` and :meth:`read`."""

    name: str = ""
    channels: tuple[str, ...] | None = None
    """Vocabulary names the task uses, in order; None keeps every vocabulary channel found (pretraining)."""
    classes: tuple[str, ...] = ()
    """Label names by label index."""
    mains: float = 50.0
    """Mains frequency of the country where the data were recorded (Hz)."""
    window_s: float = 0.0
    stride_s: float | None = None
    """Window hop in seconds; None = non-overlapping."""

    def find(self, root: Path) -> list[Recording]:
        raise NotImplementedError

    def read(self, rec: Recording) -> Iterator[Segment]:
        """Yield the signal pieces of a recording with their labelled events."""
        raise NotImplementedError

    def window_seconds(self, n_chans: int) -> float:
        """Window length for a recording with ``n_chans`` channels (pretraining adapts it; tasks are fixed)."""
        return self.window_s

    def pick(self, segment: Segment) -> Segment:
        """Select the task's channels (vocabulary order) or, without a channel list, every vocabulary channel."""
        mapping = map_channels(segment.raw.ch_names, self.channels)
        if not mapping:
            raise NeuroLMError(f"no 10-20 EEG channel among {', '.join(segment.raw.ch_names)}")
        segment.names, segment.labels = list(mapping), list(mapping.values())
        return segment

    def assign_splits(self, recordings: Sequence[Recording], seed: int) -> dict[Path, str]:
        """Split of every recording not fixed by the layout; default: seeded 80/20 train/val by subject."""
        return split_subjects(recordings, seed, val_fraction=0.2)


def read_raw(path: Path, **kwargs) -> mne.io.BaseRaw:
    """Open any EEG file MNE reads, preloaded, with a message naming the file when it cannot be read."""
    if not path.is_file():
        raise NeuroLMError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NeuroLMError(f"{path}: file is empty")
    try:
        return mne.io.read_raw(path, preload=True, verbose="error", **kwargs)
    except (ValueError, OSError, RuntimeError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise NeuroLMError(f"{path}: cannot be read as EEG ({type(exc).__name__}: {exc})") from exc


def split_subjects(recordings: Sequence[Recording], seed: int, val_fraction: float) -> dict[Path, str]:
    """Seeded subject-wise train/val split of the recordings whose split the layout leaves open.

    Subjects are sorted before the seeded shuffle so the split depends only on the subject set and the seed, not on
    the file system's listing order (the reference shuffles unseeded).
    """
    splits = {r.path: r.split for r in recordings if r.split is not None}
    subjects = sorted({r.subject for r in recordings if r.split is None})
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_val = int(round(len(subjects) * val_fraction)) if len(subjects) > 1 else 0
    val = {subjects[i] for i in order[:n_val]}
    for r in recordings:
        if r.split is None:
            splits[r.path] = "val" if r.subject in val else "train"
    return splits


def split_in_order(items: Sequence, fractions: Sequence[tuple[str, float]]) -> dict:
    """Assign sorted items to consecutive blocks (the paper's "first 100 train, next 25 val, rest test" rules).

    Block sizes are the paper's counts as fractions of its dataset size, rounded, so the rule is exact at the paper's
    size and proportional on smaller corpora (such as the synthetic one) instead of putting everything in train;
    with at least as many items as blocks, no block is left empty.
    """
    n, k = len(items), len(fractions)
    sizes = [int(round(frac * n)) for _, frac in fractions[:-1]]
    if n >= k:
        sizes = [max(1, s) for s in sizes]
        while sum(sizes) > n - 1:
            sizes[int(np.argmax(sizes))] -= 1
    sizes.append(n - sum(sizes))
    out, start = {}, 0
    for (name, _), size in zip(fractions, sizes):
        for item in items[start : start + size]:
            out[item] = name
        start += size
    return out
