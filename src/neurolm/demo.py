"""``neurolm demo``: the pipeline on the embedded synthetic corpus, one line per stage, resumable.

Runs the stages that exist today — synthetic corpus → preparation of all seven stores → tiny tokenizer training —
and says plainly which later stages (pretraining, instruction tuning, evaluation, ask, report) are not built yet
(issues 4–6), instead of pretending to run them. Re-running skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .data.prepare import prepare_dataset
from .data.synth import ALL, write_corpus

NOT_BUILT = ("pretrain", "instruct", "evaluate", "ask", "report")


def run_demo(out: Path, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    t0 = time.time()
    if not all((out / "raw" / d).is_dir() for d in ALL):
        write_corpus(out / "raw", ALL, seed=0)
    print(f"synth     {time.time() - t0:6.1f} s  corpus in {out / 'raw'}", flush=True)
    for name in ALL:
        t0 = time.time()
        m = prepare_dataset(name, out / "raw" / name, out / "prep" / name, progress=False)
        n = sum(s["windows"] for s in m["splits"].values())
        summary[name] = {"windows": n, "skipped": len(m["files"]["skipped"])}
        print(f"prepare   {time.time() - t0:6.1f} s  {name}: {n} windows", flush=True)
    from .tokenizer.train import train_tokenizer  # torch is imported only once the data stages are done

    t0 = time.time()
    tok_dir = out / "tokenizer"
    report_path = tok_dir / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
    else:
        report = train_tokenizer([out / "prep" / d for d in ALL], tok_dir, preset="tiny", steps=30 if quick else 300,
                                 progress=False)
    summary["tokenizer"] = report
    print(f"tokenizer {time.time() - t0:6.1f} s  {tok_dir}", flush=True)
    print(f"not built yet: {', '.join(NOT_BUILT)} (see README, Status)")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("neurolm_demo"), help="output directory (default: ./neurolm_demo)")
    p.add_argument("--quick", action="store_true", help="a short tokenizer run (CI)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, args.quick)
    print(f"demo: stages built so far finished → {args.out}")
    return 0
