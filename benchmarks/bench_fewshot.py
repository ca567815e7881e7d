"""Few-shot transfer on the synthetic corpus: balanced accuracy vs K for NeuroLM and the band-power baseline.

synth (default size) → prepare every dataset → tiny tokenizer → pretraining → instruction tuning on every task but
the held-out one (``--held-out``, default Workload) → for K = 0 the tuned model is evaluated on the held-out task as
it is (zero-shot: a task it never saw, whose answer words it learnt on another task); for each K of ``--shots`` it
is tuned further with ``instruct --shots K`` on the held-out task alone and evaluated on its test split. The
band-power baseline (:mod:`neurolm.instruct.baseline`) is fitted on the same K windows per class
(:func:`neurolm.instruct.fewshot.shot_indices`, same seed). 95 % intervals: :func:`neurolm.instruct.metrics.interval`.
The defaults are tiny (about 5 minutes on two quiet cores, 30 when they are shared); results are cached in
``--out`` stage by stage.

    python benchmarks/bench_fewshot.py [--out DIR] [--held-out workload] [--shots 1,5,20,all] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from neurolm.data.datasets import TASK_NAMES
from neurolm.data.prepare import prepare_dataset
from neurolm.data.store import WindowStore
from neurolm.data.synth import ALL, write_corpus
from neurolm.instruct.baseline import fit_predict, store_features
from neurolm.instruct.evaluate import evaluate, format_ba
from neurolm.instruct.fewshot import shot_indices
from neurolm.instruct.metrics import interval
from neurolm.instruct.train import instruct
from neurolm.lm.pretrain import pretrain
from neurolm.tokenizer.train import train_tokenizer
from neurolm.train import resumable


def baseline(store: WindowStore, shots: int | None, seed: int) -> dict:
    """The band-power baseline fitted on K windows per class of the train split (all: ``shots`` None)."""
    x, y = store_features(store, "train")
    train = store.split("train")
    keep = np.arange(len(y)) if shots is None else shot_indices(train.labels, train.subjects, shots, seed)
    tx, ty = store_features(store, "test")
    pred = fit_predict((x[keep], y[keep]), tx)
    chance = 1 / len(store.classes)
    return {"balanced_accuracy": float(balanced_accuracy_score(ty, pred))} | interval(
        ty, pred, store.split("test").subjects, chance)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/neurolm-fewshot"))
    p.add_argument("--held-out", default="workload", choices=TASK_NAMES)
    p.add_argument("--shots", default="1,5,20,all", help="comma-separated K (windows per class) or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer-steps", type=int, default=80)
    p.add_argument("--pretrain-steps", type=int, default=20)
    p.add_argument("--instruct-steps", type=int, default=120)
    p.add_argument("--shot-steps", type=int, default=40, help="instruction-tuning steps of each few-shot run")
    args = p.parse_args()
    out, t0 = args.out, time.time()
    raw, prep = out / "raw", out / "prep"
    if not all((raw / d).is_dir() for d in ALL):
        write_corpus(raw, ALL, seed=args.seed)
    stores = {d: prep / d for d in ALL}
    for d, path in stores.items():
        prepare_dataset(d, raw / d, path, progress=False)
    common = {"progress": False, "seed": args.seed}
    tok, lm, inst = out / "tokenizer", out / "pretrain", out / "instruct"
    if not (tok / "report.json").is_file():  # a stage stopped half-way continues from its checkpoint
        train_tokenizer(list(stores.values()), tok, size="tiny", steps=args.tokenizer_steps, resume=resumable(tok),
                        **common)
    if not (lm / "report.json").is_file():
        pretrain(tok, list(stores.values()), lm, size="tiny", steps=args.pretrain_steps, resume=resumable(lm),
                 **common)
    seen = [stores[t] for t in TASK_NAMES if t != args.held_out]
    if not (inst / "report.json").is_file():
        instruct(lm, seen, inst, steps=args.instruct_steps, resume=resumable(inst), **common)
    print(f"stages done in {time.time() - t0:.0f} s; held out: {args.held_out}", flush=True)

    held = WindowStore(stores[args.held_out])
    rows = []
    for k in ["0", *args.shots.split(",")]:
        shots = None if k == "all" else int(k)
        model = inst
        if k != "0":
            model = out / f"shots-{k}"
            if not (model / "report.json").is_file():
                instruct(inst, [held.root], model, steps=args.shot_steps, shots=shots, resume=resumable(model),
                         **common)
        m = evaluate(model, [held], out / f"eval-{k}", progress=False)[args.held_out]
        train = held.split("train")
        n = 0 if k == "0" else len(train) if shots is None else len(
            shot_indices(train.labels, train.subjects, shots, args.seed))
        row = {"K": k, "train_windows": n,
               "neurolm": {key: m["scored"][key] for key in ("balanced_accuracy", "ci95", "includes_chance")},
               "baseline": baseline(held, shots, args.seed) if k != "0" else None}
        rows.append(row)
        print(f"K={k:>4}: NeuroLM {format_ba(row['neurolm'])}   band power {format_ba(row['baseline'])}", flush=True)
    (out / "fewshot.json").write_text(json.dumps({"held_out": args.held_out, "args": vars(args) | {"out": str(out)},
                                                  "rows": rows}, indent=2) + "\n")
    print("\n| K (windows per class) | train windows | NeuroLM BA [95 % CI] | band power BA [95 % CI] |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['K']} | {r['train_windows']} | {format_ba(r['neurolm'])} | {format_ba(r['baseline'])} |")
    print(f"\ntotal {time.time() - t0:.0f} s → {out / 'fewshot.json'}")


if __name__ == "__main__":
    main()
