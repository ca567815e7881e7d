"""``neurolm synth``: a synthetic EEG corpus in the six datasets' native layouts and file formats (plus pretraining).

None of the clinical datasets can be downloaded here, so this writes look-alikes that the real readers read exactly
as they read the real data: TUH EDF with ``.rec``/``.tse_agg`` annotations, HMC EDF with CSV or EDF+ scoring,
PhysioNet EEGMAT EDF, SEED Neuroscan CNT plus its ``Preprocessed_EEG`` MAT release, and unlabelled EDF/BDF/FIF/
EEGLAB/BrainVision files. Signals carry the physiology their labels stand for (see :mod:`.datasets`). Output is
deterministic for a seed: each dataset draws from its own stream, so writing one dataset alone gives the same files
as writing it with the others. It is the demo's embedded default and the tests' fixture.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...errors import NeuroLMError
from ..datasets import DATASETS
from . import datasets
from .datasets import seed_labels, seed_preprocessed
from .writers import Recording, Window, require_writers, write_mat, write_recording

ALL: tuple[str, ...] = tuple(DATASETS)
"""Dataset names, in the CLI's order."""

DEFAULT_SUBJECTS: dict[str, int] = {name: d.synth_subjects for name, d in DATASETS.items()}
"""Subjects (recordings for pretraining) per dataset at the default size (:attr:`Dataset.synth_subjects
<neurolm.data.datasets.Dataset.synth_subjects>`). ``--subjects N`` replaces all of them (each dataset raises it to its
own minimum for non-empty splits)."""

RECORDINGS: dict[str, Callable[[int, np.random.Generator], Iterator[Recording]]] = {
    name: getattr(datasets, f"{name}_recordings") for name in DATASETS
}
"""Each dataset's generator: ``neurolm.data.synth.datasets.<name>_recordings``."""


def write_dataset(name: str, out_dir: str | Path, n_subjects: int, rng: np.random.Generator) -> Path:
    """One dataset's look-alike in ``out_dir``, in its native layout:

    - tuab: TUH Abnormal look-alike (``edf/{train,eval}/{normal,abnormal}/01_tcp_ar/*.edf``).
    - tuev: TUH Events look-alike (``edf/{train,eval}/<subj>/<subj>_000000NN.{edf,rec}``).
    - tusl: TUH Slowing look-alike (``edf/<subj>/s001_2010/01_tcp_ar/*.{edf,tse_agg}``).
    - hmc: HMC sleep look-alike (``SNxxx.edf`` + ``SNxxx_sleepscoring.{txt,edf}``).
    - workload: PhysioNet EEGMAT look-alike (``SubjectNN_1.edf`` rest, ``SubjectNN_2.edf`` arithmetic).
    - seed: SEED look-alike (``SEED_RAW_EEG/*.cnt`` + ``trial_times.json``, ``Preprocessed_EEG/*.mat``).
    - pretrain: unlabelled recordings in EDF, BDF, FIF, EEGLAB and BrainVision formats.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for rec in tqdm(RECORDINGS[name](n_subjects, rng), desc=f"synth {name}", unit="file", disable=None, leave=False):
        write_recording(out_dir, rec)
        if name == "seed":  # the preprocessed release of the same session, trial by trial at 200 Hz
            mat_dir = out_dir / "Preprocessed_EEG"
            mat_dir.mkdir(exist_ok=True)
            write_mat(mat_dir / (Path(rec.path).stem + ".mat"), seed_preprocessed(rec))
    if name == "seed":
        write_mat(out_dir / "Preprocessed_EEG" / "label.mat", {"label": seed_labels()})
    return out_dir


def dataset_rng(name: str, seed: int) -> np.random.Generator:
    """The random stream of one dataset: independent of which other datasets are written."""
    return np.random.default_rng([seed, ALL.index(name)])


def parse_datasets(datasets: str | Iterable[str]) -> list[str]:
    names = [d.strip().lower() for d in (datasets.split(",") if isinstance(datasets, str) else datasets)]
    unknown = [d for d in names if d not in ALL]
    if unknown or not names:
        raise NeuroLMError(f"--datasets: unknown dataset(s) {', '.join(unknown) or '(none)'}; "
                           f"choose from {','.join(ALL)}")
    return list(dict.fromkeys(names))


def write_corpus(
    out_dir: str | Path, datasets: str | Iterable[str] = ALL, subjects: int | None = None, seed: int = 0
) -> dict[str, Path]:
    """Write ``out_dir/<dataset>/`` for each dataset; returns dataset name → its directory.

    ``subjects`` overrides :data:`DEFAULT_SUBJECTS` for every dataset (raised to each dataset's minimum).
    """
    if subjects is not None and subjects < 1:
        raise NeuroLMError(f"--subjects must be at least 1, got {subjects}")
    names = parse_datasets(datasets)
    require_writers()
    out = Path(out_dir)
    return {
        name: write_dataset(name, out / name, subjects or DEFAULT_SUBJECTS[name], dataset_rng(name, seed))
        for name in names
    }


def iter_recordings(name: str, subjects: int | None = None, seed: int = 0) -> Iterator[Recording]:
    """The recordings :func:`write_corpus` would write for one dataset, without writing them (calibration)."""
    return RECORDINGS[name](subjects or DEFAULT_SUBJECTS[name], dataset_rng(name, seed))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="directory to write <dataset>/ folders into")
    parser.add_argument(
        "--datasets", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)} (default: all)"
    )
    defaults = ", ".join(f"{k} {v}" for k, v in DEFAULT_SUBJECTS.items())
    parser.add_argument(
        "--subjects",
        type=int,
        default=None,
        help=f"subjects (pretraining: files) per dataset, raised to each dataset's minimum (default: {defaults})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give equal corpora")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    written = write_corpus(args.out_dir, args.datasets, args.subjects, args.seed)
    files = [p for d in written.values() for p in d.rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(
        f"synth: wrote {', '.join(written)} ({len(files)} files, {size_mb:.0f} MB) to {args.out_dir} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


__all__ = [
    "ALL",
    "DEFAULT_SUBJECTS",
    "Recording",
    "Window",
    "add_arguments",
    "iter_recordings",
    "run",
    "write_corpus",
    "write_dataset",
]
