"""Difficulty calibration of the synthetic corpus: is every task learnable but not trivial?

synth (default size, temp dir) → ``prepare_dataset`` per task → log band-power features (delta/theta/alpha/beta/gamma
per channel, Welch) → standardised logistic regression fit on train → balanced accuracy on test. The generator is
tuned so that every task lands in [0.60, 0.90]. ``--direct`` skips writing and preparing and computes the same
features from the generator's own arrays and windows (what the tuning loop uses; also the fallback when the
preparation pipeline is unavailable).

    python benchmarks/bench_synth_baseline.py [--direct] [--seed 0] [--subjects N] [--tasks tuab,hmc]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from neurolm.data.datasets import TASK_NAMES
from neurolm.data.synth import iter_recordings, write_corpus
from neurolm.instruct.baseline import band_features, fit_score, store_features

TASKS = TASK_NAMES
TARGET = (0.60, 0.90)


def direct_features(task: str, subjects: int | None, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features of the windows the generator declares, cut from its arrays at the native rate."""
    rows: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for rec in iter_recordings(task, subjects, seed):
        used = np.array([rec.labels.index(c) for c in rec.used])
        for w in rec.windows:
            a = int(round(w.start * rec.sfreq))
            seg = rec.data[used, a : a + int(round(w.seconds * rec.sfreq))]
            rows[w.split][0].append(band_features(seg, rec.sfreq))
            rows[w.split][1].append(w.label)
    return {s: (np.array(x), np.array(y)) for s, (x, y) in rows.items()}


def store_splits(task: str, raw_dir: Path, work: Path, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features of the windows the real pipeline produces from the written files."""
    from neurolm.data.prepare import prepare_dataset
    from neurolm.data.store import WindowStore

    out = work / f"{task}_store"
    prepare_dataset(task, raw_dir, out, seed=seed)
    store = WindowStore(out)
    return {split: store_features(store, split) for split in store.splits}


def evaluate(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    return {
        "bacc": fit_score(data["train"], data["test"]),
        "counts": {s: len(y) for s, (_, y) in data.items()},
        "test_per_class": np.bincount(data["test"][1]).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--direct", action="store_true", help="features from the generator's arrays (no files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subjects", type=int, default=None)
    p.add_argument("--tasks", default=",".join(TASKS))
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    mode = "direct"
    if not args.direct:
        try:
            import neurolm.data.prepare  # noqa: F401

            mode = "prepare"
        except ImportError:
            print("neurolm.data.prepare is not available: computing features from the generator's arrays")

    results, timings = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if mode == "prepare":
            t0 = time.perf_counter()
            dirs = write_corpus(work / "raw", tasks, args.subjects, args.seed)
            timings["synth"] = time.perf_counter() - t0
        for task in tasks:
            t0 = time.perf_counter()
            if mode == "prepare":
                data = store_splits(task, dirs[task], work, args.seed)
            else:
                data = direct_features(task, args.subjects, args.seed)
            timings[task] = time.perf_counter() - t0
            results[task] = evaluate(data)

    print(f"\nbaseline: log band power + logistic regression ({mode} mode, seed {args.seed})")
    print(f"{'task':10s} {'train':>6s} {'val':>5s} {'test':>5s}  {'test per class':24s} {'bal.acc':>7s}  "
          "in [0.60, 0.90]")
    for task, r in results.items():
        c = r["counts"]
        ok = "yes" if TARGET[0] <= r["bacc"] <= TARGET[1] else "NO"
        print(
            f"{task:10s} {c.get('train', 0):6d} {c.get('val', 0):5d} {c.get('test', 0):5d}  "
            f"{str(r['test_per_class']):24s} {r['bacc']:7.3f}  {ok}"
        )
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0 if all(TARGET[0] <= r["bacc"] <= TARGET[1] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
