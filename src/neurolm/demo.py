"""``neurolm demo``: the whole system on a synthetic corpus it writes itself, one line per stage, resumable.

synthetic recordings in the six datasets' native formats (+ an unlabeled pretraining corpus) → window stores →
tiny tokenizer → tiny NeuroLM pretraining → multi-task instruction tuning → evaluation on the test splits (paper
protocol and scored answers, beside the band-power baseline) → asking the model about a synthetic sleep recording
→ ``report.md`` / ``report.html``. Every stage writes into its own directory and is skipped when its result exists,
so an interrupted demo continues where it stopped.

``--quick`` (CI) uses the smallest corpus the generators allow and a few dozen steps per training stage: it checks
that every stage runs and reports, not that the model learns; the full demo is the one whose accuracies mean
something. ``--seed`` seeds the three training stages (the corpus is always the same), so a demo's spread over seeds
can be measured on one corpus.

A line starts every long stage (so minutes of training are never silent) and ends it with its result. Warnings raised
inside other packages (scikit-learn's convergence warnings from the band-power baseline, …) are counted instead of
printed between those lines, and summarised once at the end; NeuroLM's own warnings are shown as they come.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .data.datasets import TASK_NAMES
from .data.prepare import prepare_dataset
from .data.synth import ALL, write_corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    """Corpus size and steps per stage."""

    subjects: int | None
    tokenizer_steps: int
    pretrain_steps: int
    instruct_steps: int | None
    """None: ``neurolm instruct``'s default (400 per task store for ``tiny``: 2400 for the six tasks)."""
    pretrain_eval_every: int | None = None
    """None: the stage's default (5 validations of 256 windows)."""
    balance_tasks: bool = False
    """Instruction tuning shows every task as often as the largest (``neurolm instruct --balance-tasks``)."""


# The demo's time goes where it buys accuracy within 10 minutes on 2 cores: tokenizer steps helped the instructed
# model more than instruction or pretraining steps did, so pretraining gets the least time; tasks are sampled
# balanced (REF's plain concatenation starves the small tasks). Instruction tuning runs the plain command's
# schedule (instruct's defaults for six task stores), which hiding tokens from the sequence made affordable. Outcomes
# depend strongly on the tokenizer run. The measurements: docs/results/2026-12-01-demo.md,
# docs/results/2026-12-02-demo-schedule.md, docs/results/2026-12-03-summary-gate.md.
FULL = DemoPlan(subjects=None, tokenizer_steps=600, pretrain_steps=100, instruct_steps=None, pretrain_eval_every=50,
                balance_tasks=True)
QUICK = DemoPlan(subjects=1, tokenizer_steps=20, pretrain_steps=20, instruct_steps=30, pretrain_eval_every=20)


def _line(stage: str, t0: float, text: str) -> None:
    log.info(f"{stage:<10s}{time.time() - t0:7.1f} s  {text}")


def _begin(stage: str, text: str) -> None:
    log.info(f"{stage:<10s}{'…':>9s}  {text}")


def _package(filename: str) -> str | None:
    """The installed package a warning was raised in (``sklearn``), or None for NeuroLM's own code and scripts."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            name = parts[parts.index(marker) + 1].removesuffix(".py")
            return None if name == "neurolm" else name
    return None


@contextmanager
def dependency_warnings() -> Iterator[Counter]:
    """Count the warnings raised inside other packages by (package, category, first line) instead of showing them
    (module notes); the others are shown as usual."""
    counts: Counter = Counter()
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        package = _package(filename)
        if package is None:
            shown(message, category, filename, lineno, file, line)
        else:
            counts[(package, category.__name__, str(message).strip().splitlines()[0][:120])] += 1

    warnings.showwarning = show
    try:
        yield counts
    finally:
        warnings.showwarning = shown


def summarise_warnings(counts: Counter) -> list[str]:
    """One line per kind of dependency warning, most frequent first."""
    return [f"{n} × {package} {category}: {text}" for (package, category, text), n in counts.most_common()]


def run_demo(out: str | Path, quick: bool = False, seed: int = 0) -> dict:
    """Run (or continue) every stage into ``out`` with training seed ``seed``; return ``metrics.json``'s content."""
    plan = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw, prep = out / "raw", out / "prep"

    t0 = time.time()
    if not all((raw / d).is_dir() for d in ALL):
        _begin("synth", "writing the synthetic recordings")
        write_corpus(raw, ALL, subjects=plan.subjects, seed=0)
    _line("synth", t0, f"recordings in native formats → {raw}")
    _begin("prepare", f"filtering and cutting {len(ALL)} datasets into window stores")
    for name in ALL:
        t0 = time.time()
        m = prepare_dataset(name, raw / name, prep / name, progress=False)
        n = sum(s["windows"] for s in m["splits"].values())
        _line("prepare", t0, f"{name}: {n} windows")

    # torch and the models are imported only once the data stages are done
    from .instruct.evaluate import evaluate
    from .instruct.train import instruct
    from .lm.pretrain import pretrain
    from .tokenizer.train import train_tokenizer
    from .train import resumable  # a stage interrupted mid-training continues from its checkpoint

    stores = [prep / d for d in ALL]
    task_stores = [prep / d for d in TASK_NAMES]
    tok_dir, lm_dir, inst_dir, eval_dir = out / "tokenizer", out / "pretrain", out / "instruct", out / "evaluate"

    t0 = time.time()
    report = _cached(tok_dir / "report.json", lambda: train_tokenizer(
        stores, tok_dir, size="tiny", steps=plan.tokenizer_steps, seed=seed, progress=False,
        resume=resumable(tok_dir)).report, ("tokenizer", f"training the tiny tokenizer, {plan.tokenizer_steps} steps"))
    v = report["val"]
    _line("tokenizer", t0, f"val loss_freq {v['loss_freq']:.3f}, loss_raw {v['loss_raw']:.3f}, "
                           f"codebook utilisation {v['utilisation']:.0%}")

    t0 = time.time()
    report = _cached(lm_dir / "report.json", lambda: pretrain(
        tok_dir, stores, lm_dir, size="tiny", steps=plan.pretrain_steps, progress=False,
        eval_every=plan.pretrain_eval_every, seed=seed, resume=resumable(lm_dir)).report,
        ("pretrain", f"pretraining the tiny NeuroLM, {plan.pretrain_steps} steps"))
    v = report["val"]
    _line("pretrain", t0, f"val EEG loss {v['eeg_loss']:.3f} (unigram baseline {v['unigram_loss']:.3f}), "
                          f"train text loss {report['train_last']['text_loss']:.3f}")

    t0 = time.time()
    report = _cached(inst_dir / "report.json", lambda: instruct(
        lm_dir, task_stores, inst_dir, steps=plan.instruct_steps, balance_tasks=plan.balance_tasks, seed=seed,
        progress=False, resume=resumable(inst_dir)).report,
        ("instruct", f"instruction tuning on the six tasks, {plan.instruct_steps or 'the default'} steps (the longest "
                     "stage)"))
    _line("instruct", t0, f"val balanced accuracy (mean over tasks) {report['val']['ba_mean']:.2f}")

    t0 = time.time()
    metrics = _cached(eval_dir / "metrics.json", lambda: evaluate(inst_dir, task_stores, eval_dir, progress=False),
                      ("evaluate", "answering the six tasks' test windows (both protocols) and the baseline"))
    _line("evaluate", t0, "test balanced accuracy " + ", ".join(
        f"{t} {metrics[t]['scored']['balanced_accuracy']:.2f}" for t in TASK_NAMES))

    t0 = time.time()
    example = _cached(out / "ask" / "example.json", lambda: ask_example(inst_dir, raw / "hmc", out / "ask"))
    _line("ask", t0, f"{example['recording']}: {example['agreement']:.0%} of {example['epochs']} epochs as scored")

    t0 = time.time()
    summary = {t: metrics[t] | {"band_power_baseline": metrics[t]["baseline"]["balanced_accuracy"]}
               for t in TASK_NAMES}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    md, page = build_report(out, summary, example)
    _line("report", t0, f"{page}")
    print_table(summary)
    return summary


def _cached(path: Path, compute, begin: tuple[str, str] | None = None):
    """The JSON result of a finished stage, or compute it (the stage writes ``path`` itself or we do), saying first
    what starts (``begin``: stage, text)."""
    if path.is_file():
        return json.loads(path.read_text())
    if begin is not None:
        _begin(*begin)
    result = compute()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return json.loads(path.read_text())


def ask_example(model_dir: Path, hmc_raw: Path, out_dir: Path) -> dict:
    """Ask the model for the sleep stage of every 30-s epoch of the last (test-split) synthetic HMC recording and
    plot the answers against the scoring file: the hypnogram a sleep researcher would look at."""
    from .data.readers import get_reader
    from .instruct.ask import ask

    reader = get_reader("hmc")
    rec = sorted(reader.find(hmc_raw), key=lambda r: r.path.name)[-1]
    events = [e for seg in reader.read(rec) for e in seg.events]
    answers = ask(model_dir, rec.path, "hmc", start=events[0].start, every=30.0)
    truth = {round(e.start, 3): e.label for e in events}
    pairs = [(a.start, truth[round(a.start, 3)], a.label) for a in answers if round(a.start, 3) in truth]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_hypnogram(pairs, reader.classes, out_dir / "hypnogram.png", rec.path.name)
    return {"recording": rec.path.name, "epochs": len(pairs),
            "agreement": sum(t == p for _, t, p in pairs) / max(1, len(pairs)),
            "epochs_table": [{"start": s, "true": reader.classes[t], "predicted": reader.classes[p]}
                             for s, t, p in pairs]}


def plot_hypnogram(pairs: list[tuple[float, int, int]], classes: tuple[str, ...], path: Path, title: str) -> None:
    from .plots import figure, save

    # conventional hypnogram order: wake on top, REM just below, then deepening NREM
    order = ["W", "R", "N1", "N2", "N3"]
    rank = {classes.index(c): i for i, c in enumerate(order) if c in classes}
    hours = [s / 3600 for s, _, _ in pairs]
    fig, ax = figure((11, 3.2))
    ax.step(hours, [rank[t] for _, t, _ in pairs], where="post", label="scored (truth)", linewidth=2)
    ax.step(hours, [rank[p] + 0.08 for _, _, p in pairs], where="post", label="NeuroLM", alpha=0.8)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set(xlabel="hours", title=f"{title}: predicted vs scored hypnogram")
    ax.legend(loc="lower right")
    save(fig, path)


def _metric(m: dict, key: str) -> str:
    return f"{m[key]:.3f}" if key in m else "–"


def _verdict(m: dict) -> str:
    """How the scored answers compare with the band-power baseline, by their 95 % intervals."""
    s, b = m["scored"], m["baseline"]
    if s.get("below_chance"):
        return "below chance"
    if s["includes_chance"]:
        return "not above chance"
    if s["ci95"][0] > b["ci95"][1]:
        return "above baseline"
    if s["ci95"][1] < b["ci95"][0]:
        return "below baseline"
    return "≈ baseline"


def build_report(out: Path, summary: dict, example: dict) -> tuple[Path, Path]:
    """``report.md`` + ``report.html``: the six-task table, confusion matrices, every stage's curves, the
    tokenizer's codebook usage and reconstructions, and the worked ``ask`` example."""
    from .instruct.evaluate import format_ba
    from .report import Heading, Image, Paragraph, Table, write_report

    rows = []
    for task, m in summary.items():
        p, s = m["paper"], m["scored"]
        binary = len(m["classes"]) == 2
        rows.append([task, str(m["n"]), f"{1 / len(m['classes']):.2f}", format_ba(p),
                     _metric(p, "auroc" if binary else "cohen_kappa"), str(p["unparseable"]), format_ba(s),
                     _metric(s, "auroc" if binary else "cohen_kappa"), format_ba(m["baseline"]), _verdict(m)])
    ev, tok = out / "evaluate", out / "tokenizer"
    blocks = [
        Paragraph("One tiny NeuroLM answers all six tasks on the synthetic corpus (test splits). Paper protocol: "
                  "greedy 5-token answers parsed into a class (unparseable answers counted, never mapped to a "
                  "class). Scored: the probability of each allowed answer from one forward pass. Baseline: log "
                  "band power + logistic regression trained on the same train split. Brackets: 95 % bootstrap "
                  "intervals (subjects resampled when the test split has at least five, windows otherwise); "
                  "≈ chance: the interval includes chance. Synthetic data: these numbers show the pipeline works "
                  "end to end, not clinical performance."),
        Heading("Six tasks"),
        Table(["task", "n", "chance", "paper BA [95 % CI]", "paper AUROC / κ", "unparseable",
               "scored BA [95 % CI]", "scored AUROC / κ", "band-power BA [95 % CI]", "scored vs baseline"], rows),
        Heading("Confusion matrices and per-class recall"),
        *[Image(ev / f"{t}_confusion.png", f"{t}: confusion, paper protocol and scored answers") for t in summary],
        *[Image(ev / f"{t}_recall.png", f"{t}: per-class recall") for t in summary],
        Heading("Training curves"),
        Image(tok / "loss_curves.png", "tokenizer: reconstruction, commitment and alignment losses"),
        Image(out / "pretrain" / "loss_curves.png", "pretraining: EEG next-second loss vs the unigram baseline, "
                                                    "text loss"),
        Image(out / "instruct" / "loss_curves.png", "instruction tuning: losses and validation balanced accuracy"),
        Heading("Neural tokenizer"),
        Image(tok / "code_usage.png", "codebook usage on validation windows"),
        Image(tok / "reconstruction.png", "original vs reconstructed patches, time and frequency"),
        Heading("Asking the model about a sleep recording"),
        Paragraph(f"`neurolm ask MODEL {example['recording']} --task hmc --every 30` on the last (test-split) "
                  f"synthetic HMC recording: {example['agreement']:.0%} of its {example['epochs']} scored 30-s "
                  f"epochs get the scored stage."),
        Image(out / "ask" / "hypnogram.png", "predicted vs scored hypnogram"),
    ]
    return write_report(blocks, out, "NeuroLM demo report")


def print_table(summary: dict) -> None:
    from .instruct.evaluate import format_ba
    from .report import Table, to_text

    rows = [[task, f"{1.0 / len(m['classes']):.2f}", format_ba(m["paper"]), str(m["paper"]["unparseable"]),
             format_ba(m["scored"]), format_ba(m["baseline"]), _verdict(m)] for task, m in summary.items()]
    print("\n" + to_text([Table(["task", "chance", "paper BA [95% CI]", "unparsed", "scored BA [95% CI]",
                                 "band power [95% CI]", "verdict"], rows)]))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("neurolm_demo"), help="output directory (default: ./neurolm_demo)")
    p.add_argument("--quick", action="store_true", help="smallest corpus, a few steps per stage (CI smoke run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training stages (default: 0; the corpus is fixed)")


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    with dependency_warnings() as counts:
        run_demo(args.out, args.quick, args.seed)
    lines = summarise_warnings(counts)
    if lines:
        print(f"warnings from other packages ({sum(counts.values())}, summarised; they do not change the results):",
              *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    print(f"demo finished in {time.time() - t0:.0f} s → {args.out / 'report.html'}")
    return 0
