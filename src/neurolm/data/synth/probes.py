"""Probe tasks whose classes are *not* band-power contrasts: what a tokenizer must keep beyond five bands.

The six built-in synthetic tasks build their classes from band-power contrasts, so a model that only routes band
power around its learned parts passes them. Each probe here holds the five-band log power equal across its classes
in expectation, so the band-power baseline sits at chance and only a representation that keeps finer information
can tell the classes apart:

- ``lines``: a steady narrow-band oscillation at 9 or 11 Hz on the occipital channels (both inside the alpha band),
  as an SSVEP's flicker frequency;
- ``evoked``: a phase-locked deflection 300 ms after every second's onset, positive or negative (equal spectra; only
  the waveform's sign differs), as a stimulus-locked ERP;
- ``coupling``: two channels driven by one shared alpha source or by two independent ones of the same power
  (equal per-channel spectra; only their coherence differs).

Windows are made at the model's rate (200 Hz) in the stores' unit (µV / 100), with the corpus's subject variation
(1/f slope, amplitude, channel gains), so a short CI run can show whether each rung of the quality ladder keeps the
information (``tests/test_probes.py``; ``benchmarks/bench_real.py probes``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..channels import INDEX, normalize_name
from ..preprocess import TARGET_SFREQ
from ..store import MANIFEST, SplitBuffer, recorded_sizes, write_split
from .signals import Subject, narrowband, pink

PROBES = ("lines", "evoked", "coupling")
CHANNELS = ("O1", "OZ", "O2", "PZ", "P3", "P4", "CZ", "FZ")
"""A small posterior-weighted montage: 8 channels × 4 s = 32 tokens a window."""
SECONDS = 4
_OCCIPITAL = np.array([1.0, 1.0, 1.0, 0.6, 0.5, 0.5, 0.2, 0.1])
LINES_HZ = (9.0, 11.0)
"""The two flicker frequencies of ``lines``: one alpha band, two 1-Hz bins of a 1-s patch."""


def channel_indices() -> np.ndarray:
    """The probes' channels as the model's vocabulary indices."""
    return np.array([INDEX[normalize_name(c)] for c in CHANNELS], dtype=np.int64)


def _background(rng: np.random.Generator, subject: Subject, n: int) -> np.ndarray:
    """1/f background plus the subject's own alpha rhythm (µV), per-channel gains applied."""
    x = 12.0 * pink(rng, len(CHANNELS), n, TARGET_SFREQ, subject.slope)
    x += 6.0 * _OCCIPITAL[:, None] * narrowband(rng, n, TARGET_SFREQ, subject.alpha_hz, 0.8)[None]
    return x * subject.scale * subject.channel_gains(len(CHANNELS))[:, None]


def _evoked(n: int, sign: float) -> np.ndarray:
    """A 300-ms-latency Gaussian deflection (σ 40 ms) after every second's onset, peak 1."""
    t = np.arange(n) / TARGET_SFREQ
    return sign * np.exp(-0.5 * ((t % 1.0 - 0.3) / 0.04) ** 2)


def window(probe: str, label: int, subject: Subject, rng: np.random.Generator) -> np.ndarray:
    """One ``(8, 800)`` float32 window (µV / 100) of class ``label`` (0 or 1) of ``probe``."""
    n = int(SECONDS * TARGET_SFREQ)
    x = _background(rng, subject, n)
    if probe == "lines":
        t = np.arange(n) / TARGET_SFREQ
        line = np.sin(2 * np.pi * LINES_HZ[label] * t + rng.uniform(0, 2 * np.pi))
        x += 6.0 * subject.scale * _OCCIPITAL[:, None] * line[None]
    elif probe == "evoked":
        x += 8.0 * subject.scale * _OCCIPITAL[:, None] * _evoked(n, 1.0 if label else -1.0)[None]
    elif probe == "coupling":
        first = narrowband(rng, n, TARGET_SFREQ, 10.0, 1.0)
        second = first if label else narrowband(rng, n, TARGET_SFREQ, 10.0, 1.0)
        x[0] += 10.0 * subject.scale * first  # O1
        x[5] += 10.0 * subject.scale * second  # P4
    else:
        raise ValueError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")
    return (x / 100.0).astype(np.float32)


def make_windows(probe: str, *, subjects: int, per_class: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(signals (N, 8, 800), labels (N,), subject names (N,))``: ``per_class`` windows of each class per subject,
    every subject drawn once (so subject-wise splits test generalisation to new people)."""
    rng = np.random.default_rng([seed, PROBES.index(probe)])
    xs, ys, ss = [], [], []
    for s in range(subjects):
        subject = Subject.draw(rng)
        for label in (0, 1):
            for _ in range(per_class):
                xs.append(window(probe, label, subject, rng))
                ys.append(label)
                ss.append(f"s{s:02d}")
    return np.stack(xs), np.array(ys), np.array(ss)


def write_probe_store(root: str | Path, probe: str, *, subjects: int = 16, per_class: int = 12, seed: int = 0,
                      val: int = 3, test: int = 3) -> Path:
    """A window store of one probe split by subject (the last ``test`` subjects test, the ``val`` before them
    validate, the rest train), readable by every stage; an existing complete store is kept."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return root
    x, y, subj = make_windows(probe, subjects=subjects, per_class=per_class, seed=seed)
    names = sorted(set(subj))
    role = {s: "test" for s in names[-test:]} | {s: "val" for s in names[-(test + val):-test]}
    buffers = {name: SplitBuffer() for name in ("train", "val", "test")}
    for i in range(len(x)):
        buffers[role.get(subj[i], "train")].add(x[i], channel_indices(), int(y[i]), 0.0, subj[i], f"{subj[i]}.{i}")
    root.mkdir(parents=True, exist_ok=True)
    checksums: dict[str, str] = {}
    for name, buf in buffers.items():
        checksums |= write_split(root, name, buf)
    manifest = {"dataset": probe, "classes": ["a", "b"], "complete": True, "checksums": checksums,
                "sizes": recorded_sizes(root, checksums),
                "probe": {"seed": seed, "subjects": subjects, "per_class": per_class}}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return root
