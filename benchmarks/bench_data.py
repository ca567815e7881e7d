"""Data-stage throughput: prepare speed (hours of EEG per second) and random reads of the window store versus the
reference's one-pickle-per-sample layout (float64 dicts), printed as ratios.

    python benchmarks/bench_data.py [--subjects 16] [--reads 2000]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from neurolm.data.prepare import prepare_dataset
from neurolm.data.store import WindowStore
from neurolm.data.synth import write_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--reads", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset("tuab", tmp / "raw", args.subjects, np.random.default_rng(0))
        t0 = time.perf_counter()
        m = prepare_dataset("tuab", tmp / "raw", tmp / "store", progress=False)
        t_prep = time.perf_counter() - t0
        n_windows = sum(s["windows"] for s in m["splits"].values())
        hours = n_windows * 10 / 3600
        split = WindowStore(tmp / "store").split("train")

        pkl_dir = tmp / "pickles"  # the reference: one float64 pickle per sample
        pkl_dir.mkdir()
        for i in range(len(split)):
            item = split[i]
            with open(pkl_dir / f"{i}.pkl", "wb") as fh:
                pickle.dump({"X": item["signal"].astype(np.float64), "y": item["label"]}, fh)

        order = np.random.default_rng(1).integers(0, len(split), args.reads)
        t0 = time.perf_counter()
        for i in order:
            x = split[int(i)]["signal"]
        t_store = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in order:
            x = np.array(split[int(i)]["signal"])  # as above plus a private copy (what batching does anyway)
        t_copy = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in order:
            with open(pkl_dir / f"{int(i)}.pkl", "rb") as fh:
                x = pickle.load(fh)["X"]
        t_pkl = time.perf_counter() - t0
        del x

    print(f"prepare tuab: {hours:.2f} h of 23-channel EEG in {t_prep:.1f} s = {hours / t_prep * 3600:.0f}x real time "
          f"({hours / t_prep:.3f} h of EEG per second)")
    print(f"random reads ({args.reads} windows of 23x2000): store {args.reads / t_store:.0f}/s, "
          f"per-sample pickles {args.reads / t_pkl:.0f}/s -> store/pickle speed ratio {t_pkl / t_store:.1f}x "
          f"({t_pkl / t_copy:.1f}x including a copy of each window; page cache warm for both)")


if __name__ == "__main__":
    main()
