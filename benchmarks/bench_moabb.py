"""NeuroLM beside MOABB's own SSVEP pipelines on SSVEP-Exo (Kalunga2016), offline, in MOABB's evaluations.

    python benchmarks/bench_moabb.py --data ../shared/data/ssvep-dev --model runs/tok [--out results.csv]

``--data`` is a folder of ``subjectNN/record-*_raw.fif`` with their ``-eve.fif`` events (the layout of the public
``sylvchev/dataset-ssvep-exoskeleton`` repository, which is what MOABB's ``SSVEPExo`` downloads from Zenodo in another
layout); :class:`KalungaLocal` reads it as a MOABB dataset with MOABB's event ids and interval, so nothing is
downloaded. ``--scale`` declares the files' unit error (the development copy stores amplitudes about 100× too large;
CCA, TRCA and MDM are blind to a global scale, NeuroLM's µV/100 input is not).

Pipelines, each in MOABB's within-session (5-fold) and cross-subject (leave-one-subject-out) evaluations, three
flicker classes (13, 17, 21 Hz) as MOABB's SSVEP examples:
- CCA and TRCA (``moabb.pipelines``) on MNE epochs, MDM on filter-bank covariances (``ExtendedSSVEPSignal``);
- NeuroLM: the model's frozen encoder features (:class:`neurolm.braindecode.NeuroLMFeatures`) + logistic regression,
  and the same with a randomly initialised encoder (what the architecture alone gives).
Scores are MOABB's (accuracy; the classes are balanced); the table gives the mean over subjects with a 95 % bootstrap
interval over subjects.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import mne
import numpy as np

from moabb.datasets.base import BaseDataset
from moabb.evaluations import CrossSubjectEvaluation, WithinSessionEvaluation
from moabb.paradigms import SSVEP, FilterBankSSVEP
from moabb.pipelines import ExtendedSSVEPSignal, SSVEP_CCA, SSVEP_TRCA
from pyriemann.classification import MDM
from pyriemann.estimation import Covariances
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurolm.braindecode import NeuroLMFeatures

EVENTS = {"13": 2, "17": 4, "21": 3, "rest": 1}  # MOABB's Kalunga2016 ids (its note: 17 and 21 Hz were swapped once)
CHANNELS = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]


class KalungaLocal(BaseDataset):
    """MOABB's Kalunga2016 (``SSVEPExo``) read from local FIF files: one session, one run per recording."""

    def __init__(self, root: str | Path, *, scale: float = 1.0, subjects: list[int] | None = None) -> None:
        self.root, self.scale = Path(root), scale
        found = sorted(int(p.name.removeprefix("subject")) for p in self.root.glob("subject*") if p.is_dir())
        if not found:
            raise SystemExit(f"{self.root}: no subjectNN folders")
        super().__init__(subjects=found, sessions_per_subject=1, events=EVENTS, code="Kalunga2016-Local",
                         interval=[2, 4], paradigm="ssvep", doi="10.1016/j.neucom.2016.01.007",
                         selected_subjects=subjects)

    def data_path(self, subject, path=None, force_update=False, update_path=None, verbose=None):
        return sorted(str(p) for p in (self.root / f"subject{subject:02d}").glob("*_raw.fif"))

    def _get_single_subject_data(self, subject):
        runs = {}
        for k, path in enumerate(self.data_path(subject)):
            raw = mne.io.read_raw_fif(path, preload=True, verbose="error").pick(CHANNELS)
            raw.apply_function(lambda x: x * self.scale)
            events = mne.read_events(path.replace("_raw.fif", "-eve.fif"), verbose="error")
            stim = mne.io.RawArray(np.zeros((1, raw.n_times)), mne.create_info(["STI"], raw.info["sfreq"], "stim"),
                                   verbose="error")
            raw.add_channels([stim], force_update_info=True)
            raw.add_events(events, stim_channel="STI", replace=True)
            runs[str(k)] = raw
        return {"0": runs}


def bootstrap(scores: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, (n, len(scores)), replace=True).mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run(data: Path, model: Path | None, scale: float, out: Path | None, subjects: list[int] | None) -> str:
    dataset = KalungaLocal(data, scale=scale, subjects=subjects)
    sfreq = 256.0
    neurolm = {
        "NeuroLM encoder + LR": make_pipeline(NeuroLMFeatures(model, ch_names=CHANNELS, sfreq=sfreq),
                                              StandardScaler(), LogisticRegression(max_iter=2000)),
        "random encoder + LR": make_pipeline(NeuroLMFeatures(None, ch_names=CHANNELS, sfreq=sfreq),
                                             StandardScaler(), LogisticRegression(max_iter=2000)),
    }
    if model is None:
        neurolm.pop("NeuroLM encoder + LR")
    groups = [  # (paradigm, pipelines, MOABB hands over MNE epochs)
        (SSVEP(n_classes=3), {"CCA": make_pipeline(SSVEP_CCA(n_harmonics=3)),
                              "TRCA": make_pipeline(SSVEP_TRCA(n_fbands=3))}, True),
        (FilterBankSSVEP(n_classes=3), {"MDM": make_pipeline(ExtendedSSVEPSignal(), Covariances(estimator="lwf"),
                                                             MDM())}, False),
        (SSVEP(n_classes=3), neurolm, False),
    ]
    rows, frames = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls, kwargs in (("within-session", WithinSessionEvaluation, {}),
                                  ("cross-subject", CrossSubjectEvaluation, {})):
            for paradigm, pipes, epochs in groups:
                # CCA and TRCA read the flicker frequencies off the class names ("13", …): MOABB must hand them the
                # names (mne_labels), not label-encoded 0/1/2, or they look for 0-2 Hz responses
                ev = cls(paradigm=paradigm, datasets=[dataset], overwrite=True, random_state=42, n_jobs=1,
                         hdf5_path=tmp, return_epochs=epochs, mne_labels=epochs, **kwargs)
                res = ev.process(pipes)
                res["evaluation"] = name
                frames.append(res)
                for pipe, part in res.groupby("pipeline"):
                    per_subject = part.groupby("subject")["score"].mean().to_numpy()
                    lo, hi = bootstrap(per_subject)
                    rows.append((name, pipe, float(per_subject.mean()), lo, hi, len(per_subject)))
                    print(f"{name:15s} {pipe:22s} {per_subject.mean():.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
    if out is not None:
        import pandas as pd

        pd.concat(frames).to_csv(out, index=False)
    lines = ["| evaluation | pipeline | accuracy (mean over subjects) [95 % CI] | subjects |", "|---|---|---|---|"]
    lines += [f"| {e} | {p} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {n} |" for e, p, m, lo, hi, n in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder of subjectNN/record-*_raw.fif + -eve.fif")
    p.add_argument("--model", type=Path, default=None,
                   help="NeuroLM tokenizer or model directory, VQ.pt or Hub id (default: only the random encoder)")
    p.add_argument("--scale", type=float, default=0.01,
                   help="factor the files' samples are multiplied by (default 0.01: the development copy's "
                        "amplitudes are ~100x too large)")
    p.add_argument("--subjects", type=int, nargs="*", default=None, help="subset of subjects (default: all found)")
    p.add_argument("--out", type=Path, default=None, help="write MOABB's per-fold results as CSV")
    args = p.parse_args(argv)
    os.environ.setdefault("MOABB_RESULTS", tempfile.gettempdir())
    warnings.filterwarnings("ignore", category=FutureWarning)
    mne.set_log_level("ERROR")
    print(run(args.data, args.model, args.scale, args.out, args.subjects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
