"""prepare at scale: peak memory against corpus size, throughput against --workers, and the store's independence of
--workers, on synthetic TUAB corpora of 1×, 4× and 16× a base size.

    python benchmarks/bench_prepare.py [--base-subjects 8] [--sizes 1 4 16] [--workers 1 2]

Every preparation runs in a fresh process, so its peak RSS (``ru_maxrss``: the writer process, and the largest worker
where there are workers) is its own. The acceptance (issue 15): peak RSS at 16× within 1.2× of that at 1×, 2 workers
at least 1.6× the throughput of 1 on 2 quiet cores, identical checksums. Throughput is shared-machine sensitive: the
load average is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(raw: Path, out: Path, workers: int) -> None:
    from neurolm.data.prepare import prepare_dataset

    t0 = time.perf_counter()
    m = prepare_dataset("tuab", raw, out, progress=False, workers=workers)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "seconds": seconds,
        "hours": sum(e.get("duration_s", 0) for e in m["sources"]) / 3600,
        "files": m["files"]["found"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "checksums": m["checksums"],
    }))


def run(raw: Path, out: Path, workers: int) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(raw), str(out), str(workers)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-subjects", type=int, default=8,
                    help="TUAB subjects of the 1× corpus (8, the synthetic minimum: 12 files, 0.24 h of EEG)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", nargs=3, metavar=("RAW", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return

    from neurolm.data.synth import write_dataset

    results: dict[tuple[int, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            raw = Path(tmp) / f"raw{size}"
            write_dataset("tuab", raw, args.base_subjects * size, np.random.default_rng(size))
            for w in args.workers:
                r = results[size, w] = run(raw, Path(tmp) / f"store{size}w{w}", w)
                print(f"{size:>3}x  workers {w}: {r['files']:>4} files, {r['hours']:.2f} h of EEG in "
                      f"{r['seconds']:6.1f} s = {r['hours'] / r['seconds'] * 3600:5.0f}x real time, "
                      f"{r['files'] / r['seconds']:.1f} files/s; peak RSS writer {r['rss_mb']:.0f} MB, largest "
                      f"worker {r['worker_rss_mb']:.0f} MB (load average {r['load']:.2f})", flush=True)
    small, big = min(args.sizes), max(args.sizes)
    for w in args.workers:
        a, b = results[small, w], results[big, w]
        peak_a, peak_b = max(a["rss_mb"], a["worker_rss_mb"]), max(b["rss_mb"], b["worker_rss_mb"])
        print(f"peak RSS, workers {w}: {big}x / {small}x = {peak_b:.0f} / {peak_a:.0f} MB = {peak_b / peak_a:.2f} "
              f"(corpus {b['hours'] / a['hours']:.0f}x larger; acceptance <= 1.2)")
    if len(args.workers) > 1:
        w0, w1 = min(args.workers), max(args.workers)
        for size in args.sizes:
            one, many = results[size, w0], results[size, w1]
            print(f"throughput {size}x: {w1} workers / {w0} = {one['seconds'] / many['seconds']:.2f} (acceptance "
                  f">= 1.6 on quiet cores; load average {one['load']:.2f} / {many['load']:.2f} on "
                  f"{os.cpu_count()} cores); checksums "
                  f"{'identical' if one['checksums'] == many['checksums'] else 'DIFFER'}")


if __name__ == "__main__":
    main()
