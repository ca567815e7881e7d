"""Where does the information go? A ladder of read-outs per task, from the signal to the instructed model.

Rungs (each a balanced accuracy with a 95 % bootstrap interval; subjects are resampled when the test windows come
from at least five subjects, windows otherwise):

  band power        the reference baseline: Welch log band power + logistic regression (``neurolm.instruct.baseline``)
  fine spectrum     Welch log power at 0.5-Hz resolution, 3–45 Hz, every channel: what five bands cannot see
                    (a flicker's line, a peak's exact frequency)
  riemann           tangent-space logistic regression on OAS covariances (pyRiemann), per band of a filter bank
                    (``--riemann-bands``; default one 1–45 Hz band): cross-channel structure
  patch spectra     logistic regression on each channel's mean 1-s patch log band power (what the LM's spectral
                    input carries; ``neurolm.lm.spectral``)
  untrained enc.    logistic regression on each channel's time-averaged features of an untrained tokenizer encoder
  trained enc.      the same on the trained tokenizer's encoder
  LM hidden         the same on the pretrained LM's last hidden states over the EEG (stair-step mask)
  instructed        the instruction-tuned NeuroLM's scored answers (``neurolm evaluate``)

Read-outs choose their L2 strength on the ``val`` split. Four modes:

  python benchmarks/bench_quality.py cv RAW_OR_STORE --out DIR [--folds 5] [--seeds 0 1]
      subject-wise cross-validation on one task (default: real EEGMAT, ``workload``; ``--task-file T.toml`` for a
      raw folder of another task, e.g. ``examples/tasks/ssvep_exo.toml``): the store's windows are
      re-split by subject into folds (test = one fold, val = the next, train = the rest), and on every fold the
      plain default commands run from scratch (train-tokenizer, pretrain, instruct, evaluate); prints every rung
      per fold and the mean over folds. ``--until tokenizer|pretrain`` stops each fold's pipeline there (the
      read-out rungs up to it only: minutes instead of the whole pipeline).
  python benchmarks/bench_quality.py synth --out DIR [--scale 3] [--seeds 0 1]
      the synthetic corpus (``--scale`` × the default subjects of each task dataset) prepared, then the plain
      default commands on all seven stores (one model for the six tasks) and the ladder of every task.
  python benchmarks/bench_quality.py probes --out DIR [--seeds 0]
      the probe tasks of ``neurolm.data.synth.probes`` (classes that are not band-power contrasts: narrow-band
      lines, phase-locked evoked waveforms, cross-channel coupling), subject-wise splits, the tokenizer trained on
      them with the default command, every read-out rung (``--tokenizer-args`` for an ablation).
  python benchmarks/bench_quality.py run RUN_DIR STORE [STORE ...]
      the ladder of an existing run (``RUN_DIR/{tokenizer,pretrain,instruct,evaluate}``, e.g. a ``neurolm demo``
      output directory) on the test split of each store.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, sosfiltfilt, welch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurolm.data.batch import collate_windows
from neurolm.data.store import MANIFEST, SplitBuffer, WindowStore, recorded_sizes, write_split
from neurolm.data.synth import ALL, DEFAULT_SUBJECTS
from neurolm.data.synth.probes import PROBES, write_probe_store
from neurolm.instruct.baseline import fit_predict as baseline_fit_predict
from neurolm.instruct.baseline import store_features
from neurolm.instruct.metrics import interval
from neurolm.lm import NeuroLM, build_attention_mask
from neurolm.lm.spectral import band_log_power
from neurolm.tokenizer import NeuralTokenizer

RUNGS = ("band power", "fine spectrum", "riemann", "patch spectra", "untrained enc.", "trained enc.", "LM hidden",
         "instructed")
STAGES = ("tokenizer", "pretrain", "instruct", "evaluate")
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)


# ------------------------------------------------------------------------------------------------ features
def _pooled(items: list[dict], encode) -> np.ndarray:
    """Per window: ``encode(batch) -> (B, N, d)`` features averaged over each channel's seconds, channel-major."""
    out = []
    for s in range(0, len(items), 32):
        chunk = items[s : s + 32]
        batch = collate_windows(chunk)
        with torch.no_grad():
            feats = encode(batch).float()
        for i, it in enumerate(chunk):
            c = len(it["chans"])
            n = int(batch.mask[i].sum())
            out.append(feats[i, :n].reshape(n // c, c, -1).mean(0).flatten().numpy())
    return np.array(out)


def _lm_hidden(lm: NeuroLM):
    def encode(batch):
        x, _ = lm.embed_eeg(batch)
        return lm.gpt(x, build_attention_mask(batch.times, batch.mask))
    return encode


def fine_spectrum(signals: list[np.ndarray]) -> np.ndarray:
    """Welch log power at 0.5-Hz resolution (2-s Hann segments), 3–45 Hz, every channel, channel-major."""
    out = []
    for x in signals:
        freqs, psd = welch(np.asarray(x, np.float64), fs=200.0, nperseg=min(400, x.shape[-1]), axis=-1)
        out.append(np.log(psd[:, (freqs >= 3) & (freqs <= 45)] + 1e-12).ravel())
    return np.array(out)


def band_covariances(signals: list[np.ndarray], bands: list[tuple[float, float]]) -> np.ndarray:
    """``(N, n_bands, C, C)`` OAS covariances of each window band-passed (4th-order Butterworth, zero phase)."""
    from pyriemann.estimation import Covariances

    x = np.stack([np.asarray(s, np.float64) for s in signals])
    covs = []
    for lo, hi in bands:
        sos = butter(4, [lo, hi], btype="bandpass", fs=200.0, output="sos")
        covs.append(Covariances("oas").fit_transform(sosfiltfilt(sos, x, axis=-1)))
    return np.stack(covs, axis=1)


class FilterBankTangentSpace(BaseEstimator, TransformerMixin):
    """pyRiemann's tangent space per band of ``(N, bands, C, C)`` covariances, the bands' vectors concatenated."""

    def fit(self, x, y=None):
        from pyriemann.tangentspace import TangentSpace

        self.spaces_ = [TangentSpace(metric="riemann").fit(x[:, b]) for b in range(x.shape[1])]
        return self

    def transform(self, x):
        return np.concatenate([ts.transform(x[:, b]) for b, ts in enumerate(self.spaces_)], axis=1)


def readouts(store: WindowStore, tokenizer_dir: Path | None, lm_dir: Path | None,
             riemann_bands: list[tuple[float, float]] = ((1.0, 45.0),)) -> dict[str, dict]:
    """Features of every rung but the instructed one: ``{rung: {split: (X, y, subjects)}}``."""
    splits = {name: store.split(name) for name in ("train", "val", "test")}
    items = {name: [sp[i] for i in range(len(sp))] for name, sp in splits.items()}
    encoders = {"patch spectra": lambda b: band_log_power(b.patches)}
    if tokenizer_dir is not None:
        trained = NeuralTokenizer.from_pretrained(tokenizer_dir).eval()
        torch.manual_seed(0)
        untrained = NeuralTokenizer(trained.config).eval()
        encoders["untrained enc."] = lambda b: untrained.encode(b)[0]
        encoders["trained enc."] = lambda b: trained.encode(b)[0]
    if lm_dir is not None:
        encoders["LM hidden"] = _lm_hidden(NeuroLM.from_pretrained(lm_dir).eval())
    out = {"band power": {}, "fine spectrum": {}, "riemann": {}}
    for name, sp in splits.items():
        x, y = store_features(store, name)
        out["band power"][name] = (x, y, sp.subjects)
        signals = [it["signal"] for it in items[name]]
        out["fine spectrum"][name] = (fine_spectrum(signals), y, sp.subjects)
        out["riemann"][name] = (band_covariances(signals, list(riemann_bands)), y, sp.subjects)
    for rung, encode in encoders.items():
        out[rung] = {name: (_pooled(items[name], encode), splits[name].labels, splits[name].subjects)
                     for name in splits}
    return out


def fit_predict(data: dict, rung: str) -> np.ndarray:
    """Test predictions: the baseline exactly as the library fits it; other rungs with C chosen on val."""
    (xtr, ytr, _), (xva, yva, _), (xte, _, _) = data["train"], data["val"], data["test"]
    if rung == "band power":
        return baseline_fit_predict((xtr, ytr), xte)
    best = None
    for c in C_GRID:
        head = [FilterBankTangentSpace()] if rung == "riemann" else []
        model = make_pipeline(*head, StandardScaler(), LogisticRegression(max_iter=3000, C=c)).fit(xtr, ytr)
        score = balanced_accuracy_score(yva, model.predict(xva))
        if best is None or score > best[0]:
            best = (score, model)
    return best[1].predict(xte)


def instructed_predictions(eval_dir: Path, task: str) -> np.ndarray:
    with open(eval_dir / f"{task}_predictions.csv") as fh:
        return np.array([int(r["scored"]) for r in csv.DictReader(fh)])


def ladder(store: WindowStore, run: dict[str, Path | None],
           riemann_bands: list[tuple[float, float]] = ((1.0, 45.0),)) -> dict[str, dict]:
    """Every rung's test predictions, labels and subjects for one store and one run."""
    feats = readouts(store, run.get("tokenizer"), run.get("pretrain"), riemann_bands)
    y, subjects = store.split("test").labels, store.split("test").subjects
    out = {rung: {"pred": fit_predict(data, rung), "y": y, "subjects": subjects} for rung, data in feats.items()}
    if run.get("evaluate") is not None and run["evaluate"].is_dir():
        out["instructed"] = {"pred": instructed_predictions(run["evaluate"], store.dataset), "y": y,
                             "subjects": subjects}
    return out


def score(y: np.ndarray, pred: np.ndarray, subjects: np.ndarray) -> tuple[float, float, float]:
    """Balanced accuracy and its 95 % interval, resampled as ``neurolm evaluate`` does."""
    lo, hi = interval(y, pred, subjects, chance=0.0)["ci95"]
    return float(balanced_accuracy_score(y, pred)), lo, hi


# ------------------------------------------------------------------------------------------------ CV mode
def fold_stores(source: WindowStore, out: Path, n_folds: int, seed: int) -> list[Path]:
    """Re-split a store's windows by subject: fold ``k`` tests on subject group ``k``, validates on ``k+1``."""
    splits = [source.split(name) for name in source.splits]
    rows = [(split, i) for split in splits for i in range(len(split))]
    subjects = np.concatenate([split.subjects for split in splits])
    names = np.random.default_rng(seed).permutation(np.unique(subjects))
    groups = [set(names[k::n_folds]) for k in range(n_folds)]
    dirs = []
    for k in range(n_folds):
        fold = out / f"fold{k}" / source.dataset
        dirs.append(fold)
        if (fold / MANIFEST).is_file():
            continue
        fold.mkdir(parents=True, exist_ok=True)
        role = {s: "test" for s in groups[k]} | {s: "val" for s in groups[(k + 1) % n_folds]}
        buffers = {name: SplitBuffer() for name in ("train", "val", "test")}
        for (split, i), subj in zip(rows, subjects):
            it = split[i]
            buffers[role.get(subj, "train")].add(np.asarray(it["signal"]), it["chans"], it["label"], it["start"],
                                                 it["subject"], it["file"])
        manifest = dict(source.manifest, checksums={}, fold={"k": k, "of": n_folds, "seed": seed,
                                                             "test_subjects": sorted(groups[k])})
        for name, buf in buffers.items():
            manifest["checksums"] |= write_split(fold, name, buf)
        manifest["sizes"] = recorded_sizes(fold, manifest["checksums"])
        (fold / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dirs


def run_pipeline(stores: list[Path], tasks: list[Path], out: Path, seed: int, extra: dict[str, list[str]],
                 until: str = "evaluate") -> dict[str, Path | None]:
    """The plain default commands, as a user types them (the tokenizer and the LM on ``stores``, instruction tuning
    and evaluation on the task stores ``tasks``; plus ``extra[stage]`` flags, for an ablation); logs beside the
    outputs; finished stages are skipped, so an interrupted benchmark continues."""
    run = {k: out / k for k in ("tokenizer", "pretrain", "instruct", "evaluate")}
    out.mkdir(parents=True, exist_ok=True)
    steps = [
        ("tokenizer", ["train-tokenizer", "--data", *stores, "--out", run["tokenizer"], "--seed", seed]),
        ("pretrain", ["pretrain", "--tokenizer", run["tokenizer"], "--data", *stores, "--out", run["pretrain"],
                      "--seed", seed]),
        ("instruct", ["instruct", "--model", run["pretrain"], "--data", *tasks, "--out", run["instruct"],
                      "--seed", seed]),
        ("evaluate", ["evaluate", "--model", run["instruct"], "--data", *tasks, "--out", run["evaluate"]]),
    ]
    steps = steps[: STAGES.index(until) + 1]
    for name, args in steps:
        done = run[name] / ("metrics.json" if name == "evaluate" else "report.json")
        if done.is_file():
            continue
        t0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            cmd = [sys.executable, "-m", "neurolm.cli", *map(str, args), *extra.get(name, [])]
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"{name} failed: see {out / f'{name}.log'}")
        print(f"    {name}: {time.time() - t0:.0f} s", flush=True)
    return {k: (v if STAGES.index(k) <= STAGES.index(until) else None) for k, v in run.items()}


def cv(args: argparse.Namespace) -> None:
    source = Path(args.data)
    if not (source / MANIFEST).is_file():  # a raw folder: prepare it first, as a user would
        prepared = args.out / "prepared" / args.task
        if not (prepared / MANIFEST).is_file():
            what = ["--task-file", str(args.task_file)] if args.task_file else [args.task]
            subprocess.run([sys.executable, "-m", "neurolm.cli", "prepare", *what, str(source), str(prepared)],
                           check=True, stdout=subprocess.DEVNULL)
        source = prepared
    folds = fold_stores(WindowStore(source), args.out / "folds", args.folds, args.split_seed)
    extra = _extra(args)
    per_fold: dict[str, list[float]] = {r: [] for r in RUNGS}
    pooled: dict[str, list[dict]] = {r: [] for r in RUNGS}
    for seed in args.seeds:
        for k, fold in enumerate(folds):
            print(f"fold {k} seed {seed}", flush=True)
            if args.tokenizer is not None:  # one given tokenizer for every fold: its read-out rungs only
                run = {"tokenizer": args.tokenizer, "pretrain": None, "evaluate": None}
            else:
                run = run_pipeline([fold], [fold], args.out / f"seed{seed}" / f"fold{k}", seed, extra, args.until)
            res = ladder(WindowStore(fold), run, args.riemann_bands)
            for rung, r in res.items():
                ba, lo, hi = score(r["y"], r["pred"], r["subjects"])
                per_fold[rung].append(ba)
                pooled[rung].append(r)
                print(f"  {rung:15s} {ba:.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
    print(f"\n{WindowStore(folds[0]).dataset}: {args.folds}-fold subject-wise CV, seeds {args.seeds} "
          f"(mean ± sd over folds; 95 % CI by subject bootstrap of the pooled test predictions)")
    rows = {}
    for rung in RUNGS:
        if not per_fold[rung]:
            continue
        parts = pooled[rung]
        y = np.concatenate([p["y"] for p in parts])
        pred = np.concatenate([p["pred"] for p in parts])
        subj = np.concatenate([[f"{i}:{s}" for s in p["subjects"]] for i, p in enumerate(parts)])
        _, lo, hi = score(y, pred, subj)
        v = np.array(per_fold[rung])
        rows[rung] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "ci": [lo, hi], "folds": v.tolist()}
        print(f"  {rung:15s} {v.mean():.3f} ± {rows[rung]['sd']:.3f}  [{lo:.3f}, {hi:.3f}]  folds "
              + " ".join(f"{x:.2f}" for x in v))
    summarise(rows, per_fold)
    (args.out / "quality.json").write_text(json.dumps(rows, indent=2) + "\n")


def summarise(rows: dict[str, dict], per_fold: dict[str, list[float]]) -> None:
    """The comparisons the tokenizer is judged by: learned rungs against the best baseline, fold by fold."""
    baselines = [r for r in ("band power", "fine spectrum", "riemann", "patch spectra") if r in rows]
    best = max(baselines, key=lambda r: rows[r]["mean"])
    for rung in ("trained enc.", "LM hidden", "instructed"):
        if rung in rows:
            d = np.array(per_fold[rung]) - np.array(per_fold[best])
            print(f"  {rung} − {best} (best baseline): {d.mean():+.3f} (ahead on {(d > 0).sum()} of {len(d)} folds)")
    base = np.array(per_fold["band power"])
    if per_fold["instructed"]:
        inst = np.array(per_fold["instructed"])
        print(f"  instructed − band power: {np.mean(inst - base):+.3f} (ahead on {(inst > base).sum()} of "
              f"{len(inst)} folds)")


def _extra(args: argparse.Namespace) -> dict[str, list[str]]:
    return {stage: getattr(args, f"{stage}_args").split() for stage in ("tokenizer", "pretrain", "instruct")}


# ------------------------------------------------------------------------------------------------ synthetic mode
def synth_mode(args: argparse.Namespace) -> None:
    """The synthetic corpus at ``--scale`` × the default subjects per task dataset (pretraining files as default),
    prepared, then the default commands on all seven stores and the ladder of every task. Why a scale: at the
    default size HMC's and Workload's val and test splits hold two subjects each, where the baseline alone moves by
    0.3 between them (docs/accuracy.md); more subjects make the comparison measurable."""
    if args.scale < 1:
        raise SystemExit(f"--scale must be at least 1, got {args.scale}")
    raw, prep = args.out / "raw", args.out / "prepared"
    for name in ALL:
        n = DEFAULT_SUBJECTS[name] * (1 if name == "pretrain" else args.scale)
        if not (prep / name / MANIFEST).is_file():
            t0 = time.time()
            for cmd in (["synth", raw, "--datasets", name, "--subjects", n, "--seed", args.corpus_seed],
                        ["prepare", name, raw / name, prep / name]):
                subprocess.run([sys.executable, "-m", "neurolm.cli", *map(str, cmd)], check=True,
                               stdout=subprocess.DEVNULL)
            print(f"    {name}: {n} subjects, {time.time() - t0:.0f} s", flush=True)
    stores = [prep / name for name in ALL]
    tasks = [prep / name for name in ALL if name != "pretrain"]
    for seed in args.seeds:
        run = run_pipeline(stores, tasks, args.out / f"seed{seed}", seed, _extra(args))
        print_ladder(run, tasks, f"seed {seed}, {args.scale}× subjects")


def probe_stores(out: Path, seed: int) -> list[Path]:
    """One store per probe task, split by subject (10 train, 3 val, 3 test of 16)."""
    return [write_probe_store(out / probe, probe, seed=seed) for probe in PROBES]


def probes_mode(args: argparse.Namespace) -> None:
    """The tokenizer trained (default command) on the three probe stores together, then the read-out ladder."""
    for seed in args.seeds:
        stores = probe_stores(args.out / "stores", seed)
        run = run_pipeline(stores, stores, args.out / f"seed{seed}", seed, _extra(args), "tokenizer")
        print_ladder(run, stores, f"probes, seed {seed}")


def run_mode(args: argparse.Namespace) -> None:
    root = Path(args.run_dir)
    run = {k: (root / k if (root / k).exists() else None) for k in ("tokenizer", "pretrain", "instruct", "evaluate")}
    print_ladder(run, args.stores, str(root))


def print_ladder(run: dict[str, Path | None], stores: list[Path] | list[str], name: str) -> None:
    """One row per store: every rung's test balanced accuracy with its interval; also written to
    ``RUN/ladder.json`` where the run has an evaluation."""
    print(f"ladder of {name} (test split; 95 % bootstrap CI)")
    print(f"  {'task':10s} " + " ".join(f"{r:>21s}" for r in RUNGS))
    rows = {}
    for path in stores:
        store = WindowStore(path)
        res = ladder(store, run)
        cells, rows[store.dataset] = [], {}
        for rung in RUNGS:
            if rung in res:
                ba, lo, hi = score(res[rung]["y"], res[rung]["pred"], res[rung]["subjects"])
                rows[store.dataset][rung] = {"ba": ba, "ci": [lo, hi]}
                cells.append(f"{ba:.2f} [{lo:.2f}, {hi:.2f}]")
            else:
                cells.append("—")
        print(f"  {store.dataset:10s} " + " ".join(f"{c:>21s}" for c in cells), flush=True)
    if run.get("evaluate") is not None and run["evaluate"].is_dir():
        (run["evaluate"].parent / "ladder.json").write_text(json.dumps(rows, indent=2) + "\n")


def _bands(text: str) -> list[tuple[float, float]]:
    try:
        bands = [tuple(float(v) for v in part.split("-")) for part in text.split(",")]
    except ValueError:
        bands = []
    if not bands or any(len(b) != 2 or not 0 < b[0] < b[1] < 100 for b in bands):
        raise argparse.ArgumentTypeError(f"bands must look like 12-14,16-18 (Hz, below 100), got {text!r}")
    return bands


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cv", help="subject-wise cross-validation of the default pipeline on one task")
    c.add_argument("data", help="a raw dataset folder (prepared first) or a prepared store")
    c.add_argument("--task", default="workload")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--folds", type=int, default=5)
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c.add_argument("--split-seed", type=int, default=0)
    c.add_argument("--task-file", type=Path, help="prepare a raw folder with this task file (instead of --task)")
    c.add_argument("--until", choices=STAGES, default="evaluate",
                   help="stop each fold's pipeline after this stage (default: the whole pipeline)")
    c.add_argument("--tokenizer", type=Path, help="read out this trained tokenizer on every fold instead of "
                   "training one per fold (e.g. one pretrained on a real corpus without the task's subjects)")
    c.add_argument("--riemann-bands", type=_bands, default=[(1.0, 45.0)], metavar="LO-HI,...",
                   help="filter bank of the riemann rung, e.g. 12-14,16-18,20-22 for SSVEP (default: 1-45)")
    y = sub.add_parser("synth", help="the default pipeline on the synthetic corpus, six tasks, one model")
    y.add_argument("--out", type=Path, required=True)
    y.add_argument("--scale", type=int, default=1, help="subjects per task dataset, × the default (default: 1)")
    y.add_argument("--seeds", type=int, nargs="+", default=[0])
    y.add_argument("--corpus-seed", type=int, default=0)
    pr = sub.add_parser("probes", help="the tokenizer's ladder on the probe tasks (not band-power contrasts)")
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--seeds", type=int, nargs="+", default=[0])
    for parser in (c, y, pr):
        for stage in ("tokenizer", "pretrain", "instruct"):
            parser.add_argument(f"--{stage}-args", default="", metavar="FLAGS",
                                help=f"extra flags for the {stage} command, e.g. --pretrain-args=--no-spectral-input")
    r = sub.add_parser("run", help="the ladder of an existing run on each store's test split")
    r.add_argument("run_dir")
    r.add_argument("stores", nargs="+")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"cv": cv, "synth": synth_mode, "probes": probes_mode, "run": run_mode}[args.mode](args)


if __name__ == "__main__":
    main()
