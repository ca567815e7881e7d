"""SEED emotion (China, 50 Hz mains): raw Neuroscan ``.cnt`` sessions or the ``Preprocessed_EEG`` ``.mat`` release.

Each session holds 15 film clips labelled by film order; each clip is cut into 4 s windows and split by time within
the clip: first 60 % train, next 20 % val, last 20 % test.

Bad ``.mat`` files: one that scipy cannot read, a ``label.mat`` without ``label``, a session missing a trial's
``*_eegN`` key or with the wrong number of rows is an error naming the file and the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import mne
import numpy as np
import scipy.io

from ...errors import NeuroLMError
from ..datasets import SEED_CHANNELS
from .base import DatasetReader, Event, Recording, Segment, read_raw

FILM_ORDER = "H N S S N H S N H H N S N H S".split()
"""Emotion of the 15 clips in presentation order (H positive, N neutral, S negative)."""
LABEL_OF_FILM = {"H": 0, "N": 1, "S": 2}
LABEL_OF_MAT = {1: 0, 0: 1, -1: 2}
"""``label.mat`` codes (1 / 0 / -1) → our labels (positive 0, neutral 1, negative 2)."""

# Published clip timing of the raw SEED sessions (seconds from the recording start); the raw files carry no markers.
PUBLISHED_START_S = (27, 290, 551, 784, 1050, 1262, 1484, 1748, 1993, 2287, 2551, 2812, 3072, 3335, 3599)
PUBLISHED_END_S = (262, 523, 757, 1022, 1235, 1457, 1721, 1964, 2258, 2524, 2786, 3045, 3300, 3573, 3805)
TIMING_FILE = "trial_times.json"
_MAT_KEY = re.compile(r"^[A-Za-z]+_eeg(\d+)$")


class SEED(DatasetReader):
    name = "seed"

    def find(self, root: Path) -> list[Recording]:
        """Raw ``.cnt`` sessions when there are any, else the ``.mat`` release (with its ``label.mat``)."""
        cnts = sorted(root.rglob("*.cnt"))
        if cnts:
            return [Recording(p, p.stem.split("_")[0], None, (_timing_file(p, root),)) for p in cnts]
        mats = sorted(p for p in root.rglob("*.mat") if p.name != "label.mat")
        return [Recording(p, p.stem.split("_")[0], None, (p.with_name("label.mat"),)) for p in mats]

    def read(self, rec: Recording) -> Iterator[Segment]:
        if rec.path.suffix == ".cnt":
            yield from self._read_cnt(rec)
        else:
            yield from self._read_mat(rec)

    def _read_cnt(self, rec: Recording) -> Iterator[Segment]:
        timing = rec.extras[0]
        if timing.is_file():
            times = json.loads(timing.read_text())
            starts, ends = times["start_s"], times["end_s"]
        else:
            starts, ends = PUBLISHED_START_S, PUBLISHED_END_S
        raw = read_raw(rec.path, data_format="int16")
        events = []
        for film, start, end in zip(FILM_ORDER, starts, ends):
            events += self.trial_events(float(start), float(end), LABEL_OF_FILM[film])
        yield Segment(raw, events)

    def _read_mat(self, rec: Recording) -> Iterator[Segment]:
        label_file = rec.extras[0]
        if not label_file.is_file():
            raise NeuroLMError(f"{rec.path}: label.mat is missing beside it")
        label_mat = _loadmat(label_file)
        if "label" not in label_mat:
            raise NeuroLMError(f"{label_file}: no 'label' variable (has: {', '.join(_variables(label_mat)) or 'none'})")
        labels = np.asarray(label_mat["label"]).ravel()
        if unknown := sorted({int(c) for c in labels} - LABEL_OF_MAT.keys()):
            raise NeuroLMError(f"{label_file}: label code(s) {unknown} are not 1 / 0 / -1")
        mat = _loadmat(rec.path)
        trials = {int(m.group(1)): key for key in mat if (m := _MAT_KEY.match(key))}
        missing = [i for i in range(1, len(labels) + 1) if i not in trials]
        if missing:
            raise NeuroLMError(f"{rec.path}: missing trial key(s) *_eeg{', *_eeg'.join(map(str, missing))} "
                               f"(label.mat lists {len(labels)} trials; the file has: {', '.join(_variables(mat))})")
        info = mne.create_info(list(SEED_CHANNELS), 200.0, "eeg")
        for i, code in enumerate(labels, 1):
            data = np.asarray(mat[trials[i]], dtype=np.float64)
            if data.shape[0] != len(SEED_CHANNELS):
                raise NeuroLMError(f"{rec.path}: {trials[i]} has {data.shape[0]} rows, expected {len(SEED_CHANNELS)}")
            raw = mne.io.RawArray(data * 1e-6, info, verbose="error")  # the release stores µV
            yield Segment(raw, self.trial_events(0.0, data.shape[1] / 200.0, LABEL_OF_MAT[int(code)]))

    def trial_events(self, start: float, end: float, label: int) -> list[Event]:
        """Whole 4 s windows of a clip, split by time: the first 60 % of windows train, next 20 % val, rest test."""
        n = int((end - start) // self.window_s)
        n_train = int(round(n * self.split.blocks[0][1]))
        n_val = int(round(n * self.split.blocks[1][1]))
        bounds = [0, n_train, n_train + n_val, n]
        return [Event(start + a * self.window_s, start + b * self.window_s, label, split)
                for (split, _), a, b in zip(self.split.blocks, bounds, bounds[1:]) if b > a]


def _loadmat(path: Path) -> dict:
    """A MATLAB file's variables, with an error naming the file when it is not one (empty, truncated, v7.3/HDF5)."""
    if path.stat().st_size == 0:
        raise NeuroLMError(f"{path}: file is empty")
    try:
        return scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as exc:
        raise NeuroLMError(f"{path}: cannot be read as a MATLAB file ({type(exc).__name__}: {exc})") from exc


def _variables(mat: dict) -> list[str]:
    return [k for k in mat if not k.startswith("__")]


def _timing_file(cnt: Path, root: Path) -> Path:
    beside = cnt.with_name(TIMING_FILE)
    return beside if beside.is_file() else root / TIMING_FILE
