"""The dataset registry: one record per dataset with every fact the pipeline needs about it.

Readers (:mod:`neurolm.data.readers`: how the native files are found and read) take their channels, classes, mains,
window, stride and split rule from here; ``prepare``, the synthetic corpus, the instruction tasks
(:mod:`neurolm.instruct.tasks`), the demo and the tests take their dataset lists from :data:`DATASETS`. Adding a
dataset is one :class:`Dataset` here plus its reader (and, for the demo, its synthetic generator,
``neurolm.data.synth.datasets.<name>_recordings``).

The split rules are the paper's three kinds, implemented once (:class:`SplitRule`):
- ``subjects``: a seeded subject-wise train/val draw of the recordings whose split the layout leaves open (TUH's
  ``eval`` directory is the test split);
- ``in_order``: sorted recordings (or subjects) in consecutive blocks, the paper's "first 100 train, next 25 val, rest
  test" counts taken as fractions so the rule is exact at the paper's size and proportional on smaller corpora;
- ``within_trials``: every trial's windows split by time (SEED), assigned by the reader as it cuts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import NeuroLMError


class Recording(Protocol):
    """What a split rule reads of a recording (:class:`neurolm.data.readers.base.Recording` has it): described here
    rather than imported, because the readers take their facts from this module and imports flow one way."""

    @property
    def path(self) -> Path: ...

    @property
    def subject(self) -> str: ...

    @property
    def split(self) -> str | None: ...


def in_order_blocks(n: int, blocks: Sequence[tuple[str, float]]) -> list[str]:
    """Split names of ``n`` sorted items in consecutive blocks of the given fractions (the last takes the rest);
    with at least as many items as blocks, no block is left empty."""
    k = len(blocks)
    sizes = [int(round(frac * n)) for _, frac in blocks[:-1]]
    if n >= k:
        sizes = [max(1, s) for s in sizes]
        while sum(sizes) > n - 1:
            sizes[int(np.argmax(sizes))] -= 1
    sizes.append(n - sum(sizes))
    return [name for (name, _), size in zip(blocks, sizes) for _ in range(size)]


def split_in_order(items: Sequence, fractions: Sequence[tuple[str, float]]) -> dict:
    """Assign sorted items to consecutive blocks: item → split name (see :func:`in_order_blocks`)."""
    return dict(zip(items, in_order_blocks(len(items), fractions)))


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


@dataclass(frozen=True)
class SplitRule:
    """How a dataset's windows are split into train/val/test (module notes)."""

    kind: str
    """``subjects``, ``in_order`` or ``within_trials``."""
    val_fraction: float = 0.2
    """``subjects``: the fraction of (open) subjects drawn for validation."""
    blocks: tuple[tuple[str, float], ...] = ()
    """``in_order`` and ``within_trials``: consecutive (split, fraction) blocks."""
    by: str = "recording"
    """``in_order``: order ``recording`` paths or ``subject`` ids (all of a subject's recordings share a split)."""
    shuffle: bool = False
    """``in_order``: a seeded permutation of the sorted items instead of their order (task files' ``shuffled``)."""

    def __post_init__(self) -> None:
        if self.kind not in ("subjects", "in_order", "within_trials") or self.by not in ("recording", "subject"):
            raise NeuroLMError(f"split rule: unknown kind {self.kind!r} or order {self.by!r}")

    def assign(self, recordings: Sequence[Recording], seed: int) -> dict[Path, str]:
        """Recording path → split; empty for ``within_trials`` (the reader splits while cutting)."""
        if self.kind == "subjects":
            return split_subjects(recordings, seed, self.val_fraction)
        if self.kind == "within_trials":
            return {}
        if self.by == "subject":
            of_subject = split_in_order(self._ordered(sorted({r.subject for r in recordings}), seed), self.blocks)
            return {r.path: of_subject[r.subject] for r in recordings}
        return split_in_order(self._ordered(sorted(r.path for r in recordings), seed), self.blocks)

    def _ordered(self, items: list, seed: int) -> list:
        return [items[i] for i in np.random.default_rng(seed).permutation(len(items))] if self.shuffle else items


@dataclass(frozen=True)
class Instruction:
    """An instruction-tuning task on a dataset, with the paper's exact text."""

    text: str
    """Prompt text after the instruction-start token, ending in ``Answer:``."""
    answers: tuple[str, ...]
    """Answer text by label index, with its leading space, exactly as the paper writes it."""
    ref_open_paren: bool = False
    """Whether the reference trains the `` (`` that opens this task's lettered answer (TUEV, HMC; not TUSL)."""


@dataclass(frozen=True)
class Dataset:
    """Every fact about one dataset that is not about its file format."""

    name: str
    """Registry key: the CLI's dataset name, the store's ``dataset``, the task name."""
    channels: tuple[str, ...] | None
    """The 10-20 channels a window keeps, in order; None keeps every vocabulary channel a file has (pretraining)."""
    classes: tuple[str, ...]
    """Label names by label index (empty: unlabelled)."""
    mains: float
    """Mains frequency (Hz) notched by default: where the recordings were made."""
    window_s: float
    """Window length (s); 0 = chosen per recording from its channel count (pretraining)."""
    split: SplitRule
    stride_s: float | None = None
    """Hop between windows (s); None = back to back."""
    synth_subjects: int = 0
    """Subjects (pretraining: files) of the synthetic corpus at its default size: every split of every dataset
    non-empty and ~40 test windows per class where the split rule allows, while synth + prepare of everything stays
    under a minute on two cores."""
    instruction: Instruction | None = None
    """The instruction-tuning task on this dataset, if any."""


TUH_CHANNELS = tuple("FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2 FZ CZ PZ T1 T2".split())
SEED_CHANNELS = tuple(
    """FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 T7 C5 C3 C1 CZ C2 C4 C6 T8
    TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2
    CB2""".split()
)


def _options(*names: str) -> tuple[str, tuple[str, ...]]:
    """The paper's ``Options: (A) x. (B) y.`` text and the lettered answers."""
    letters = "ABCDEF"[: len(names)]
    return " Options: " + " ".join(f"({x}) {n}." for x, n in zip(letters, names)), tuple(f" ({x})" for x in letters)


_TUEV_OPTS, _TUEV_ANSWERS = _options("spike and slow wave", "generalized periodic epileptiform discharge",
                                     "periodic lateralized epileptiform discharge", "eye movement", "artifact",
                                     "background")
_HMC_OPTS, _HMC_ANSWERS = _options("Wake", "NREM-1", "NREM-2", "NREM-3", "REM")
_TUSL_OPTS, _TUSL_ANSWERS = _options("background", "seizure", "slowing")
_QUESTION = "Question: Which {} type does this EEG segment belong to?"

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("tuab", TUH_CHANNELS, ("normal", "abnormal"), mains=60.0, window_s=10.0,
            split=SplitRule("subjects", val_fraction=0.2), synth_subjects=28,
            instruction=Instruction("Question: Is this EEG segment abnormal? Answer:", (" No", " Yes"))),
    Dataset("tuev", TUH_CHANNELS, ("spsw", "gped", "pled", "eyem", "artf", "bckg"), mains=60.0, window_s=5.0,
            split=SplitRule("subjects", val_fraction=0.2), synth_subjects=20,
            instruction=Instruction(f"{_QUESTION.format('event')}{_TUEV_OPTS} Answer:", _TUEV_ANSWERS,
                                    ref_open_paren=True)),
    Dataset("seed", SEED_CHANNELS, ("positive", "neutral", "negative"), mains=50.0, window_s=4.0,
            split=SplitRule("within_trials", blocks=(("train", 0.6), ("val", 0.2), ("test", 0.2))), synth_subjects=5,
            instruction=Instruction(f"{_QUESTION.format('emotion')} Answer:", (" Positive", " Neutral", " Negative"))),
    Dataset("hmc", ("F4", "C4", "O2", "C3"), ("W", "N1", "N2", "N3", "R"), mains=50.0, window_s=30.0,
            split=SplitRule("in_order", blocks=(("train", 100 / 151), ("val", 25 / 151), ("test", 26 / 151))),
            synth_subjects=13,
            instruction=Instruction(f"{_QUESTION.format('sleep')}{_HMC_OPTS} Answer:", _HMC_ANSWERS,
                                    ref_open_paren=True)),
    Dataset("workload", tuple("FP1 FP2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 FZ CZ PZ".split()),
            ("rest", "arithmetic"), mains=50.0, window_s=4.0, stride_s=2.0,
            split=SplitRule("in_order", blocks=(("train", 26 / 36), ("val", 5 / 36), ("test", 5 / 36)), by="subject"),
            synth_subjects=14,
            instruction=Instruction("Question: Is this EEG segment of high workload? Answer:", (" No", " Yes"))),
    Dataset("tusl", TUH_CHANNELS, ("bckg", "seiz", "slow"), mains=60.0, window_s=10.0,
            split=SplitRule("in_order", blocks=(("train", 0.6), ("test", 0.2), ("val", 0.2))), synth_subjects=22,
            instruction=Instruction(f"Question: Which type does this EEG segment belong to?{_TUSL_OPTS} Answer:",
                                    _TUSL_ANSWERS)),
    # the paper's corpus is TUEG (US mains); set --mains for others
    Dataset("pretrain", None, (), mains=60.0, window_s=0.0, split=SplitRule("subjects", val_fraction=0.1),
            synth_subjects=10),
)}
"""Every dataset, in the CLI's order."""

TASK_NAMES: tuple[str, ...] = tuple(name for name, d in DATASETS.items() if d.instruction is not None)
"""The datasets with an instruction task, in the CLI's order."""


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise NeuroLMError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
