"""``neurolm evaluate``: the paper's generate-and-parse protocol and scored answers, side by side, per task.

For every task store, on one split:

- **paper protocol**: greedy generation of 5 tokens after ``[EEG][prompt]``, the text cut at ``<|endoftext|>`` and
  parsed by :func:`parse_answer`; an answer that cannot be parsed is counted as ``unparseable`` and never mapped to a
  class (the reference silently makes it the last class) → :func:`~neurolm.instruct.metrics.paper_metrics`;
- **scored answers**: the probability of each allowed answer from one forward pass
  (:func:`~neurolm.instruct.data.score_answers`) → :func:`~neurolm.instruct.metrics.scored_metrics` (real AUROC,
  calibration, never unparseable).

Both passes run on the same batches and are timed separately (model time only, after one warm-up call of each).
With a model directory's ``training.json`` (:mod:`neurolm.data.provenance`), a store prepared differently from the
model's training windows, or of a task the model was not tuned on, is evaluated with a warning saying so.
Outputs in ``--out``: ``metrics.json`` (keyed by task), ``report.md`` / ``report.html``, and per task
``<task>_predictions.csv`` (true label, generated text, parsed answer, per-option probabilities of every window),
``<task>_confusion.png`` and ``<task>_recall.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from tqdm import tqdm

from ..artifacts import model_type
from ..data.batch import EEGBatch
from ..data.provenance import check_store, read_training
from ..data.store import WindowSplit, WindowStore
from ..errors import NeuroLMError
from ..lock import directory_lock
from ..lm.model import NeuroLM
from ..plots import figure, save
from ..report import Heading, Image, Paragraph, Table, write_report
from ..text import TextTokenizer
from ..train.distributed import resolve_device
from .data import collate_eeg, encode_task, get_task, score_answers
from .baseline import band_power_predictions
from .metrics import UNPARSEABLE, confusion, interval, paper_metrics, scored_metrics
from .tasks import TASKS, find_task

GENERATED_TOKENS = 5
"""Tokens the paper's protocol generates per window."""

_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_BARE_LETTER = re.compile(r"([A-Z])(?![A-Za-z0-9])")
_WORD = re.compile(r"[A-Za-z]+")


def parse_answer(task_name: str, text: str) -> int:
    """Label index of a generated answer, or ``UNPARSEABLE`` (-1).

    Only the start of the text counts (after leading white space), as the model is trained to answer first:
    - word answers (TUAB, Workload: ``Yes``/``No``; SEED): the first run of letters, matched case-insensitively to
      the answer words (``" yes."`` → Yes; ``" Yesterday"``, ``" Maybe"`` → unparseable);
    - lettered answers (TUEV, HMC, TUSL): ``(X)`` or a bare capital ``X`` not followed by a letter or digit, where X
      is one of the task's option letters (``" (C)"``, ``" C."`` → C; ``" (G)"`` for a five-option task,
      ``" (c)"``, ``" Answer"`` → unparseable). Lower-case letters are not accepted: a bare ``a`` is an article.
    """
    task = get_task(task_name)
    options = [a.strip() for a in task.answers]
    text = text.strip()
    if all(_PAREN_LETTER.fullmatch(o) for o in options):
        m = _PAREN_LETTER.match(text) or _BARE_LETTER.match(text)
        letters = [o[1] for o in options]
        return letters.index(m.group(1)) if m and m.group(1) in letters else UNPARSEABLE
    m = _WORD.match(text)
    words = [o.lower() for o in options]
    return words.index(m.group(0).lower()) if m and m.group(0).lower() in words else UNPARSEABLE


def load_model(model_or_dir: NeuroLM | str | Path, device: str | torch.device = "auto") -> NeuroLM:
    """A NeuroLM in eval mode on ``device`` (``auto``: CUDA if available), from a directory or as given."""
    dev = resolve_device(str(device))
    if isinstance(model_or_dir, NeuroLM):
        return model_or_dir.to(dev).eval()
    directory = Path(model_or_dir)
    if (directory / "manifest.json").is_file():
        raise NeuroLMError(f"{directory} is a window store (neurolm prepare wrote it); ask and evaluate need an "
                           "instruction-tuned model, the --out directory of neurolm instruct")
    if model_type(directory, "NeuroLM model") == "neurolm-tokenizer":
        raise NeuroLMError(f"{directory} is a neural tokenizer directory (neurolm train-tokenizer wrote it); ask and "
                           "evaluate need an instruction-tuned model, the --out directory of neurolm instruct")
    return NeuroLM.from_pretrained(directory, device=dev)


def decode_answer(tokens: torch.Tensor | list[int], tokenizer: TextTokenizer) -> str:
    """Text of generated tokens up to (not including) the first ``<|endoftext|>`` (the tokenizer's end-of-text)."""
    ids, eot = [int(t) for t in tokens], tokenizer.vocab.eot
    return tokenizer.decode(ids[: ids.index(eot)] if eot in ids else ids)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(split: WindowSplit, batch_size: int, root: Path, norm_over_padding: bool):
    """Windows of a split in order, padded to the longest window of each batch (to 276 under REF's switch)."""
    for a in range(0, len(split), batch_size):
        items = [split[i] for i in range(a, min(a + batch_size, len(split)))]
        yield items, collate_eeg(items, root, norm_over_padding)


def _generate(model: NeuroLM, eeg: EEGBatch, name: str) -> torch.Tensor:
    prompt = torch.tensor(encode_task(name, tokenizer=model.text_tokenizer).prompt, device=eeg.patches.device)
    tokens, _ = model.generate(eeg, prompt.expand(eeg.mask.shape[0], -1), None, GENERATED_TOKENS)
    return tokens


def evaluate_task(model: NeuroLM, store: WindowStore, split: str, batch_size: int, progress: bool = True) -> dict:
    """Both protocols on one store's split: its ``metrics`` (an entry of metrics.json) and, per window, the true
    ``labels``, generated ``texts``, ``parsed`` answers, answer ``probs`` and ``meta`` (subject, file, start)."""
    name = store.dataset
    task = get_task(name)
    part = store.split(split)
    device = next(model.parameters()).device
    text_tok = model.text_tokenizer
    labels, texts, parsed, probs, meta = [], [], [], [], []
    t_gen = t_score = 0.0
    bar = tqdm(total=len(part), desc=f"evaluate {name}", unit="window", disable=None if progress else True)
    for items, batch in _batches(part, batch_size, store.root, model.config.tokenizer.norm_over_padding):
        eeg = batch.to(device)
        _sync(device)
        t0 = time.perf_counter()
        tokens = _generate(model, eeg, name)
        _sync(device)
        t1 = time.perf_counter()
        p = score_answers(model, eeg, [name] * len(items))
        _sync(device)
        t_gen, t_score = t_gen + t1 - t0, t_score + time.perf_counter() - t1
        for it, toks, pi in zip(items, tokens.cpu(), p):
            text = decode_answer(toks, text_tok)
            labels.append(int(it["label"]))
            texts.append(text)
            parsed.append(parse_answer(name, text))
            probs.append(pi.numpy())
            meta.append((it["subject"], it["file"], float(it["start"])))
        bar.update(len(items))
    bar.close()
    y, y_gen, probs = np.array(labels), np.array(parsed), np.stack(probs).astype(np.float64)
    probs /= probs.sum(1, keepdims=True)  # float32 softmax rows sum to 1 only within 1e-7; sklearn checks tighter
    k = task.n_classes
    subjects = [m[0] for m in meta]
    metrics = {
        "paper": paper_metrics(y, y_gen, k) | interval(y, y_gen, subjects, task.chance),
        "scored": scored_metrics(y, probs) | interval(y, probs.argmax(1), subjects, task.chance),
        "baseline": _baseline(store, split, subjects, task.chance),
        "n": len(y),
        "split": split,
        "classes": list(task.classes),
        "chance": task.chance,
        "store": str(store.root),
        "timing": {
            "generation_s": t_gen, "scored_s": t_score, "scored_speedup": t_gen / max(t_score, 1e-9),
            "generation_windows_per_s": len(y) / max(t_gen, 1e-9),
            "scored_windows_per_s": len(y) / max(t_score, 1e-9), "batch_size": batch_size, "device": str(device),
        },
    }
    return {"metrics": metrics, "labels": y, "parsed": y_gen, "probs": probs, "texts": texts, "meta": meta}


def _baseline(store: WindowStore, split: str, subjects: list[str], chance: float) -> dict | None:
    """The band-power baseline on the same windows, with its interval; None when the store has no train split."""
    if "train" not in store.splits:
        return None
    y, pred = band_power_predictions(store, split)
    return {"balanced_accuracy": float(balanced_accuracy_score(y, pred))} | interval(y, pred, subjects, chance)


def evaluate(model_or_dir: NeuroLM | str | Path, stores: list[str | Path | WindowStore], out_dir: str | Path, *,
             split: str = "test", batch_size: int = 32, progress: bool = True, device: str = "auto") -> dict:
    """Evaluate an instruction-tuned model on task stores; write ``out_dir`` (see the module docstring) and return
    the content of ``metrics.json``. One evaluation at a time writes ``out_dir`` (:mod:`neurolm.lock`)."""
    if not stores:
        raise NeuroLMError("evaluate needs at least one --data store")
    if batch_size < 1:
        raise NeuroLMError(f"--batch-size must be at least 1, got {batch_size}")
    opened = [s if isinstance(s, WindowStore) else WindowStore(s) for s in stores]
    seen: dict[str, Path] = {}
    for store in opened:  # check every store before spending time on any
        if find_task(store.dataset) is None:
            raise NeuroLMError(f"{store.root}: dataset {store.dataset!r} has no instruction task "
                               f"(tasks: {', '.join(TASKS)})")
        if store.dataset in seen:
            raise NeuroLMError(f"{store.root}: task {store.dataset!r} is already given by {seen[store.dataset]}")
        if split not in store.splits:
            raise NeuroLMError(f"{store.root}: no {split!r} split (it has {', '.join(store.splits) or 'none'})")
        if len(store.split(split)) == 0:
            raise NeuroLMError(f"{store.root}: split {split!r} has no windows")
        seen[store.dataset] = store.root
    if not isinstance(model_or_dir, NeuroLM):  # the stores should be prepared as the model's training windows
        training = read_training(model_or_dir)
        for store in opened:
            check_store(training, store, str(model_or_dir))
    model = load_model(model_or_dir, device)
    out_dir = Path(out_dir)
    with directory_lock(out_dir):  # after the checks: a refused evaluation creates nothing
        _warm_up(model, opened[0], split)
        results = {}
        for store in opened:
            res = evaluate_task(model, store, split, batch_size, progress)
            name = store.dataset
            results[name] = res["metrics"]
            write_predictions(out_dir / f"{name}_predictions.csv", name, res)
            write_plots(out_dir, name, res)
        (out_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        write_report_files(results, out_dir)
    return results


def _warm_up(model: NeuroLM, store: WindowStore, split: str) -> None:
    """One small call of each pass, so one-time costs (allocator, kernels) are not timed as either protocol."""
    items = [store.split(split)[0]]
    eeg = collate_eeg(items, store.root, model.config.tokenizer.norm_over_padding).to(next(model.parameters()).device)
    _generate(model, eeg, store.dataset)
    score_answers(model, eeg, [store.dataset])


def write_predictions(path: Path, name: str, res: dict) -> None:
    """One row per window: where it comes from, its true label, the generated text, the parsed answer and the
    probability of every option (columns ``p_<class>``)."""
    task = get_task(name)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "subject", "file", "start_s", "label", "label_name", "generated", "parsed",
                    "parsed_name", "scored", "scored_name", *(f"p_{c}" for c in task.classes)])
        for i, (y, g, text, p, (subj, file, start)) in enumerate(
                zip(res["labels"], res["parsed"], res["texts"], res["probs"], res["meta"])):
            s = int(p.argmax())
            w.writerow([i, subj, file, f"{start:g}", int(y), task.classes[y], text, int(g),
                        task.classes[g] if g != UNPARSEABLE else "unparseable", s, task.classes[s],
                        *(f"{x:.6f}" for x in p)])


def write_plots(out_dir: Path, name: str, res: dict) -> None:
    """``<task>_confusion.png`` (paper and scored, row-normalised, counts written in the cells) and
    ``<task>_recall.png`` (per-class recall of both, with chance)."""
    task = get_task(name)
    k, y = task.n_classes, res["labels"]
    scored = res["probs"].argmax(1)
    cms = {"paper protocol (generated)": confusion(y, res["parsed"], k),
           "scored answers (argmax)": confusion(y, scored, k)[:, :k]}
    fig, axes = figure((5.2 * 2 + 0.6, 4.4), 1, 2)
    for ax, (title, cm) in zip(axes, cms.items()):
        rows = cm.sum(1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
        cols = list(task.classes) + (["unparse-\nable"] if cm.shape[1] > k else [])
        ax.set(xticks=range(cm.shape[1]), xticklabels=cols, yticks=range(k), yticklabels=task.classes,
               xlabel="answer", ylabel="true class", title=title)
    fig.suptitle(f"{name}: confusion (n={len(y)})")
    save(fig, out_dir / f"{name}_confusion.png")

    recall = {"paper": _recalls(y, res["parsed"], k), "scored": _recalls(y, scored, k)}
    fig, ax = figure((max(5.0, 1.2 * k + 2), 3.8))
    x = np.arange(k)
    for off, (label, r) in zip((-0.2, 0.2), recall.items()):
        ax.bar(x + off, np.nan_to_num(r), width=0.4, label=label)
    ax.axhline(task.chance, color="grey", ls="--", lw=1, label="chance")
    ax.set(xticks=x, xticklabels=task.classes, ylim=(0, 1.05), ylabel="recall", title=f"{name}: per-class recall")
    ax.legend(loc="upper right", fontsize="small")
    save(fig, out_dir / f"{name}_recall.png")


def _recalls(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Recall per class (NaN for a class absent from ``y``); an unparseable answer is a miss."""
    return np.array([(pred[y == c] == c).mean() if (y == c).any() else np.nan for c in range(k)])


def _fmt(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "–"


def format_ba(m: dict | None) -> str:
    """``0.712 [0.650, 0.770]``, with `` ≈ chance`` when the interval includes chance and `` below chance`` when it
    lies under it, with its usual cause where there is one: ``(287 of 290 answers unparseable)``."""
    if not m:
        return "–"
    lo, hi = m["ci95"]
    text = f"{m['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
    if m.get("below_chance"):
        bad = m.get("unparseable", 0)
        return text + " below chance" + (f" ({bad} of {m.get('n', '?')} answers unparseable)" if bad else "")
    return text + (" ≈ chance" if m["includes_chance"] else "")


def write_report_files(results: dict, out_dir: Path) -> None:
    """``report.md`` and ``report.html``: per-task table of both protocols with chance, timings, each task's plots."""
    rows, timing = [], []
    for name, m in results.items():
        p, s = m["paper"], m["scored"]
        if get_task(name).binary:
            other = f"AUC-PR {_fmt(p, 'auc_pr')}, AUROC {_fmt(p, 'auroc')}"
        else:
            other = f"κ {_fmt(p, 'cohen_kappa')}, W-F1 {_fmt(p, 'weighted_f1')}"
        rows.append([name, m["split"], str(m["n"]), format_ba(p), other, str(p["unparseable"]), format_ba(s),
                     _fmt(s, "auroc"), format_ba(m.get("baseline")), f"{m['chance']:.3f}"])
        t = m["timing"]
        timing.append([name, f"{t['generation_s']:.2f}", f"{t['scored_s']:.2f}", f"{t['scored_speedup']:.1f}×",
                       t["device"]])
    blocks = [
        Paragraph("Paper protocol: greedy 5-token answers, parsed; unparseable answers are counted, never mapped to a "
                  "class. Binary tasks report balanced accuracy (BA), AUC-PR and AUROC (from hard answers, as the "
                  "paper does); multi-class tasks BA, Cohen's κ and weighted F1. Scored: probabilities of the allowed "
                  "answers from one forward pass (AUROC from scores; one-vs-rest macro for multi-class). Brackets: "
                  "95 % bootstrap interval (subjects resampled when the split has at least five, windows otherwise); "
                  "≈ chance: the interval includes chance; below chance: the interval lies under it (a broken "
                  "model, usually answers that do not parse). Band power: log band power + logistic regression fit on "
                  "the store's train split."),
        Table(["task", "split", "n", "paper BA", "paper metrics", "unparseable", "scored BA", "scored AUROC",
               "band power", "chance"], rows),
        Heading("Timing (model time, warm)"),
        Table(["task", "generation s", "scored s", "scored speed-up", "device"], timing),
        *[Image(out_dir / f"{name}_{kind}.png", f"{name}: {kind}") for name in results
          for kind in ("confusion", "recall")],
    ]
    write_report(blocks, out_dir, "NeuroLM evaluation")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="instruction-tuned NeuroLM directory")
    p.add_argument("--data", nargs="+", required=True, metavar="STORE", help="prepared task stores")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory (metrics.json, report.md, predictions, plots)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")


def run(args: argparse.Namespace) -> int:
    results = evaluate(args.model, args.data, args.out, split=args.split, batch_size=args.batch_size,
                       device=args.device)
    print(f"{'task':<9} {'n':>5} {'paper BA [95% CI]':>30} {'unparse':>7} {'scored BA [95% CI]':>30} {'AUROC':>6} "
          f"{'band power [95% CI]':>30} {'chance':>6}")
    for name, m in results.items():
        p, s = m["paper"], m["scored"]
        print(f"{name:<9} {m['n']:>5} {format_ba(p):>30} {p['unparseable']:>7} {format_ba(s):>30} "
              f"{_fmt(s, 'auroc'):>6} {format_ba(m.get('baseline')):>30} {m['chance']:>6.3f}")
    print(f"evaluated {len(results)} task(s) on {args.split} → {args.out / 'metrics.json'}, {args.out / 'report.md'}")
    return 0
