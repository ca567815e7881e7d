"""What checking a window store costs per run: the first opening hashes every file once, later openings of an
unchanged store only compare sizes, mtimes and inodes with the cached verdicts (docs/data.md, "Trust").

    python benchmarks/bench_store_verify.py [--mb 1024]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from neurolm.data.store import MANIFEST, SplitWriter, WindowStore, recorded_sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="store size in MB (float32 samples)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        window = rng.normal(0, 1, (19, 800)).astype(np.float32)  # one 4 s window, reused: only the bytes count
        checksums = {}
        for split, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            writer = SplitWriter(root, split)
            for f in range(max(1, int(args.mb * 2**20 * share / window.nbytes / 500))):  # recordings of 500 windows
                writer.append(np.broadcast_to(window, (500, *window.shape)), np.arange(19), np.arange(500) % 2,
                              4.0 * np.arange(500), f"s{f % 50}", f"f{f}")
            checksums |= writer.finish()
        (root / MANIFEST).write_text(json.dumps({"dataset": "tuab", "complete": True, "classes": ["a", "b"],
                                                 "checksums": checksums, "sizes": recorded_sizes(root, checksums)}))
        size = sum(recorded_sizes(root, checksums).values()) / 2**20
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            WindowStore(root)
            times.append(time.perf_counter() - t0)
        print(f"store {size:.0f} MB: first opening (one hash pass) {times[0]:.2f} s, "
              f"then {times[1] * 1e3:.1f} ms and {times[2] * 1e3:.1f} ms (cached verdicts); "
              f"ratio first/cached {times[0] / max(times[1], 1e-9):.0f}x")


if __name__ == "__main__":
    main()
