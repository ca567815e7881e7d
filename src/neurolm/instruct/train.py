"""``neurolm instruct``: multi-task instruction tuning of one NeuroLM on all six tasks (spec §5).

Each step: a batch of labelled windows drawn from the concatenated, shuffled ``train`` splits of the task stores,
each paired with its task's ``[50257] instruction answer <|endoftext|>`` text (loss on the answer only, see
:mod:`neurolm.instruct.data`), plus one batch of plain-text crops whose language-model loss (weight 1) keeps the
model's text ability. EEG next-second targets are not used in this stage. Validation: the scored-answer balanced
accuracy of every task on (up to) 64 ``val`` windows each, and the mean over tasks.

Decisions where the spec is silent (the defaults that depend on the inputs live in :mod:`neurolm.instruct.recipe`,
resolved and printed before training):
- Windows are padded to the longest in the batch (at most 276 tokens), not always to 276: the same result with
  ``norm_over_padding=False`` tokenizers, less compute. With REF's switch (REF checkpoints) always to 276, as REF.
- Answer logits are computed only at the trained positions (a few per sample) instead of over the whole 80-token
  text: the head has 50304 + codebook rows, and it dominated the step time of small models.
- ``tiny`` models use a higher learning rate, a smaller batch and one short text crop per step (REF's settings learn
  too slowly in a few hundred CPU steps); larger models keep REF's settings.
- Validation windows are evenly spaced over each store's ``val`` split (all its subjects), not its first windows.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ..data.batch import EEGBatch
from ..data.channels import PAD_INDEX
from ..data.provenance import write_training
from ..data.store import ConcatSplits, WindowStore
from ..errors import NeuroLMError
from ..lock import LOCK_FILE, directory_lock
from ..lm import lora
from ..lm.backbone import load_text_tokenizer
from ..lm.cache import EncoderCache
from ..lm.flops import FLOPS_METRIC, TokenCosts
from ..lm.model import IGNORE, NeuroLM
from ..text import TextCorpus, open_corpus
from ..plots import figure, save
from ..train import (
    STATE_DIR,
    Stage,
    StageResult,
    StepSampler,
    TrainConfig,
    evenly_spaced,
    is_main_process,
    run_stage,
    step_generator,
)
from .data import collate_eeg, collate_texts, score_answers
from .fewshot import shot_indices
from .recipe import (DEFAULTS, EVALUATIONS, InstructArgs, StageDefaults, add_config_argument, apply_config,
                     defaults_for, describe, model_config, resolve, write_recipe)
from .tasks import TASKS, find_task

log = logging.getLogger(__name__)

VAL_PER_TASK = 64


LENGTH_GROUPS = 2
"""Backbone passes per instruction batch (:meth:`InstructObjective.forward`)."""


class InstructObjective(nn.Module):
    """NeuroLM plus the stage's loss, so that the loop (and DDP) sees one ``forward``."""

    def __init__(self, lm: NeuroLM, *, text_weight: float = 1.0, cache: EncoderCache | None = None,
                 eeg_drop: float = 0.0, length_groups: int = LENGTH_GROUPS) -> None:
        super().__init__()
        self.lm, self.text_weight, self.cache, self.eeg_drop = lm, text_weight, cache, eeg_drop
        self.length_groups = length_groups
        self._costs: TokenCosts | None = None

    def forward(self, eeg: EEGBatch, ids: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                crops: torch.Tensor, keys: list[int] | None = None) -> dict[str, torch.Tensor]:
        """``keys``: the windows' training-set indices, for the encoder cache (None: encode every window).

        The batch goes through the LM in :attr:`length_groups` passes of windows of similar length (fewest EEG
        tokens first), each padded only to its own longest window and text, and the answer rows of all passes meet
        in one head call: the same loss and gradients (positions come from each token's channel and second, the
        text's from its own window), but the six tasks' windows keep 38–124 EEG tokens, and one padded pass spent
        a large share of its positions on padding (docs/results/2026-12-03-instruct-step-cost.md). One pass where every
        window has as many EEG tokens (one task without the drop: nothing to save), and under REF's batch-wide text
        positions (``ref_text_positions``), which depend on the batch-mates."""
        cached = self.cache is not None and keys is not None
        encoder_ran = self.cache.missing(self.lm.tokenizer, keys) if cached else list(range(len(ids)))
        encoded = self.cache.encode(self.lm.tokenizer, eeg, keys) if cached else None
        full = eeg
        dropping = self.eeg_drop > 0 and self.training
        keep = drop_tokens(eeg.mask, self.eeg_drop) if dropping else eeg.mask.bool()
        lengths = (keep & eeg.mask.bool()).sum(1)
        groups = 1 if self.lm.config.ref_text_positions or bool((lengths == lengths[0]).all()) else \
            max(1, min(self.length_groups, len(ids)))
        if encoded is None and (dropping or groups > 1):
            encoded = self.lm.tokenizer.encode(eeg)  # of the whole windows: the drop and the passes only cut padding
        if dropping:
            eeg, encoded = keep_tokens(eeg, encoded, keep)
        hidden, answers, sequences = [], [], []
        order = torch.argsort(lengths, stable=True) if groups > 1 else torch.arange(len(ids))
        for idx in order.tensor_split(groups):
            part, part_encoded = keep_tokens(_samples(eeg, idx), (encoded[0][idx], encoded[1][idx]), eeg.mask[idx]) \
                if groups > 1 else (eeg, encoded)
            length = int(mask[idx].sum(1).max())
            h = self.lm.text_hidden(part, ids[idx, :length], mask[idx, :length], encoded=part_encoded,
                                    summary_from=_samples(full, idx))
            sequences.append(torch.stack([part.mask.sum(1).long(), mask[idx, :length].sum(1).long()], 1))
            trained = targets[idx, :length] != IGNORE
            hidden.append(h[trained])
            answers.append(targets[idx, :length][trained])
        answer, answer_acc = self.lm.head_loss(torch.cat(hidden), torch.cat(answers))
        text = self.lm.text_forward(crops)
        ran = self.flops(torch.cat(sequences).tolist(), full.mask.sum(1)[encoder_ran].tolist(),
                         sum(len(a) for a in answers), crops.shape)
        return {"loss": answer + self.text_weight * text["loss"], "loss_answer": answer.detach(),
                "loss_text": text["loss"].detach(), "answer_token_acc": answer_acc, FLOPS_METRIC: ran}

    def flops(self, sequences: list[tuple[int, int]], encoded: list[int], answers: int,
              crops: tuple[int, int]) -> float:
        """The training FLOPs of one forward and backward pass (:mod:`neurolm.lm.flops`): ``sequences``, each
        sample's real EEG and text tokens as the LM saw them; ``encoded``, the token counts of the windows the
        encoder ran on (not those from the cache); ``answers``, the positions the head scored; ``crops``, the text
        crops' shape ``(n, length + 1)``."""
        if self._costs is None:  # after freezing: the costs depend on what trains
            self._costs = TokenCosts.of(self.lm)
        c = self._costs
        n, length = crops[0], crops[1] - 1
        return (sum(c.sequence(e, t) for e, t in sequences) + sum(c.window(w) for w in encoded)
                + (answers + n * length) * c.head + n * c.sequence(0, length))


def _samples(eeg: EEGBatch, idx: torch.Tensor) -> EEGBatch:
    """The windows ``idx`` of a batch."""
    return EEGBatch(*(t[idx] for t in eeg.__dict__.values()))


def drop_tokens(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Which EEG tokens the LM keeps ``(B, N)`` bool: each with probability ``1 - p`` (torch's global generator,
    which the training loop seeds and checkpoints), every window keeping all of them if none of its real tokens
    survived. Why: on long schedules several tasks memorise their training windows through the EEG tokens, while
    the window summary, computed from the whole window, carries what band power carries
    (docs/results/2026-12-02-six-task-schedule.md)."""
    keep = torch.rand(mask.shape, device=mask.device) >= p
    return keep | ~(keep & mask.bool()).any(1, keepdim=True)


def keep_tokens(eeg: EEGBatch, encoded: tuple[torch.Tensor, torch.Tensor], keep: torch.Tensor
                ) -> tuple[EEGBatch, tuple[torch.Tensor, torch.Tensor]]:
    """The windows and their encoder outputs ``(features, codes)`` with only the real tokens marked in ``keep (B,
    N)``, moved to the front in their order and padded (:mod:`neurolm.data.batch`'s padding) to the most any window
    keeps. The LM's text positions read the same thing as with the other tokens masked out as padding (positions come
    from each token's channel and second, not from its index), but the sequence is shorter: with half the tokens
    hidden an instruction step on CPU is ~1/3 cheaper."""
    keep = keep & eeg.mask
    n = max(1, int(keep.sum(1).max()))
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :n]  # kept tokens first, in order

    def take(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, order if t.dim() == 2 else order[..., None].expand(-1, -1, t.shape[-1]))

    mask = take(keep)
    features, codes = encoded
    batch = replace(eeg, patches=take(eeg.patches) * mask[..., None], mask=mask,
                    chans=take(eeg.chans).masked_fill(~mask, PAD_INDEX), times=take(eeg.times).masked_fill(~mask, 0))
    return batch, (take(features) * mask[..., None], take(codes).masked_fill(~mask, -1))


def freeze_lm(lm: NeuroLM) -> None:
    """``instruct --freeze-lm``: only the window summary and ``lm_head`` train; the LM's blocks, embeddings and EEG
    input stay as pretrained. Why: full tuning memorises a small dataset's training subjects (EEGMAT: answer loss
    ~0.01, test log loss 1.4); with the body frozen the answer is close to a linear read-out of the summary, the
    form that matches band power there (docs/results/2026-12-01-eegmat-levers.md)."""
    for name, p in lm.named_parameters():
        p.requires_grad_(name.startswith(("summary.", "gpt.lm_head.")))


class InstructTask:
    """The instruction-tuning stage for :func:`neurolm.train.train`."""

    def __init__(self, *, args: InstructArgs, cfg: TrainConfig, text: TextCorpus) -> None:
        """``args``: the resolved recipe (:func:`~neurolm.instruct.recipe.resolve`), ``cfg`` the loop's settings
        made from it."""
        self.args, self.model_dir, self.cfg, self.text = args, args.model, cfg, text
        self.text_weight, self.text_batch, self.text_length = args.text_weight, args.text_batch, args.text_length
        self.eeg_drop, self.freeze_lm, self.lora_rank = args.eeg_drop, args.freeze_lm, args.lora_rank
        self.summary_gate, self.summary_scale = args.summary_gate, args.summary_scale
        self.reference_mask, self.window_summary = args.reference_answer_mask, args.window_summary
        self.cache_mb = args.cache_mb
        stores = [WindowStore(s) for s in args.data]
        for store in stores:
            if find_task(store.dataset) is None:
                raise NeuroLMError(f"{store.root}: dataset {store.dataset!r} has no instruction task "
                                   f"(tasks: {', '.join(TASKS)})")
        self.stores = stores
        self.train_set = ConcatSplits(stores, "train")
        if len(self.train_set) == 0:
            raise NeuroLMError("no training windows: none of the stores has a non-empty train split")
        offsets = self.train_set.offsets
        parts = [np.arange(a, b) for a, b in zip(offsets[:-1], offsets[1:])]
        if args.shots is not None:  # few-shot: K windows per class of every task (instruct.fewshot)
            parts = [a + shot_indices(split.labels, split.subjects, args.shots, cfg.seed)
                     for a, (_, split) in zip(offsets[:-1], self.train_set.parts)]
        self.order = balanced_order(parts) if args.balance_tasks else np.concatenate(parts)
        self.sampler = StepSampler(len(self.order), cfg.batch_size, cfg.seed, cfg.grad_accum,
                                   self.train_set.token_counts[self.order] if cfg.group_by_length else None)
        self.val = {}
        for store in stores:  # a store without val windows (tiny corpora) is validated on its train windows
            for name in ("val", "train"):
                split = store.split(name) if name in store.splits else []
                if len(split):
                    self.val[store.dataset] = [split[i] for i in evenly_spaced(len(split), VAL_PER_TASK)]
                    break
        self.trained: NeuroLM | None = None
        config = model_config(args.model)
        self.text_tokenizer = load_text_tokenizer(args.model, config.backbone)
        self.norm_over_padding = config.tokenizer.norm_over_padding

    def model(self) -> nn.Module:
        cache = EncoderCache(self.cache_mb) if self.cache_mb > 0 else None
        lm = NeuroLM.from_pretrained(self.model_dir)
        if self.window_summary:  # its scaler from (up to) 512 training windows evenly spaced over every task
            picks = evenly_spaced(len(self.order), 512)
            items = [self.train_set[int(self.order[i])] for i in picks]
            lm.add_window_summary([collate_eeg(items[s : s + 64], "a training window", self.norm_over_padding)
                                   for s in range(0, len(items), 64)], self.summary_scale, self.summary_gate)
        if self.lora_rank:
            lora.add_lora(lm, self.lora_rank)
        elif lm.config.lora is not None:  # --lora-rank 0 means full training: fold the pretraining adapters in
            lora.merge_lora(lm)
        if self.freeze_lm:
            freeze_lm(lm)
        return InstructObjective(lm.train(), text_weight=self.text_weight, cache=cache, eeg_drop=self.eeg_drop)

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, Any]:
        keys = [int(self.order[i]) for i in self.sampler.indices(step, micro, rank, world)]
        items = [self.train_set[i] for i in keys]
        eeg = collate_eeg(items, "a training window", self.norm_over_padding)
        ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items],
                                           self.reference_mask, self.text_tokenizer)
        g = step_generator(self.cfg.seed, step, micro, rank)
        crops = self.text.sample(max(1, self.text_batch // world), self.text_length, g)
        return {"eeg": eeg, "ids": ids, "targets": targets, "mask": mask, "crops": crops, "keys": keys}

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["eeg"], batch["ids"], batch["targets"], batch["mask"], batch["crops"], batch["keys"])
        return out["loss"], {k: float(out[k]) for k in ("loss_answer", "loss_text", "answer_token_acc", FLOPS_METRIC)}

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        lm = model.lm
        device = next(lm.parameters()).device
        metrics = {}
        for name, items in self.val.items():
            probs = []
            for s in range(0, len(items), self.cfg.batch_size):
                chunk = items[s : s + self.cfg.batch_size]
                eeg = collate_eeg(chunk, f"{name} validation window", self.norm_over_padding)
                probs += score_answers(lm, eeg.to(device), [name] * len(chunk))
            pred = torch.stack(probs).argmax(1).numpy()
            metrics[f"ba_{name}"] = float(balanced_accuracy_score([it["label"] for it in items], pred))
        metrics["ba_mean"] = float(np.mean(list(metrics.values())))
        return metrics

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.lm.save_pretrained(out_dir)
        write_training(out_dir, self.stores, tuned=True, parent=self.model_dir)
        self.trained = model.lm


def balanced_order(parts: list[np.ndarray]) -> np.ndarray:
    """Training-set indices in which every task appears as often as the largest: each task's windows (``parts``:
    the training-set indices of each store) are repeated (cyclically) up to the largest task's count, so an epoch
    shows every window of the largest task once and the others' windows about equally often."""
    longest = max(len(p) for p in parts)
    return np.concatenate([p[np.arange(longest) % len(p)] for p in parts if len(p)])


def publish_choice(results: dict[str, StageResult], out: Path) -> StageResult:
    """The candidate with the higher final validation balanced accuracy (the frozen one on a tie: fewer weights
    changed), copied into ``out`` with the comparison in its report; the candidates' training state stays in
    ``out/candidates`` (``--resume`` continues them)."""
    val = {name: r.report["val"].get("ba_mean", float("-inf")) for name, r in results.items()}
    best = "frozen" if val["frozen"] >= val["full"] else "full"
    report = results[best].report | {"freeze_lm_choice": {"selected": best, "val_ba": val}}
    if is_main_process():
        shutil.copytree(results[best].out_dir, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(STATE_DIR, f".{STATE_DIR}.*", LOCK_FILE))
        (out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return StageResult(out, results[best].model, report)


class InstructStage(Stage):
    command = "instruct"
    args = InstructArgs
    presets = DEFAULTS
    weight_decay, betas, grad_clip, evaluations = 0.1, (0.9, 0.95), 1.0, EVALUATIONS
    group_by_length = False  # lengths are tasks here: grouped batches would hold one task each (docs/training.md)
    # fused on CPU too: a measurable share of a tiny step (docs/results/2026-12-03-instruct-step-cost.md); not in the
    # tokenizer stage, whose codebook usage it changed
    fused_adamw = True

    steps_note = "default: tiny 400 per task store, paper 10000"

    def preset(self, args: InstructArgs) -> StageDefaults:
        """The size's row (the loop's settings fall back on it; a resolved recipe states them all)."""
        return defaults_for(model_config(args.model)).for_tasks(len(args.data))

    def task(self, args: InstructArgs, cfg: TrainConfig, preset: StageDefaults) -> tuple[InstructTask, dict]:
        args = resolve(args)  # resolved already when run through execute(): resolving again changes nothing
        corpus, source = open_corpus(args.text, load_text_tokenizer(args.model, model_config(args.model).backbone))
        if is_main_process():
            write_recipe(args, args.out)
        return InstructTask(args=args, cfg=cfg, text=corpus), {"text": source}

    def load(self, out_dir: Path) -> NeuroLM:
        return NeuroLM.from_pretrained(out_dir)

    def execute(self, args: InstructArgs) -> StageResult:
        """The recipe resolved (:func:`~neurolm.instruct.recipe.resolve`) and printed, then one run, or, where it
        compares freezing, both candidates into ``out/candidates/{full,frozen}`` and the better published in ``out``
        (:func:`publish_choice`)."""
        args = resolve(args)
        if is_main_process():
            log.info(describe(args))
        if not args.compare_freezing:
            return run_stage(self, args)
        with directory_lock(args.out):  # the candidates' folders are locked by their own runs
            result = publish_choice({name: run_stage(self, replace(args, out=Path(args.out) / "candidates" / name,
                                                                   freeze_lm=name == "frozen", compare_freezing=False))
                                     for name in ("full", "frozen")}, Path(args.out))
            if is_main_process():  # the comparison's recipe, not the published candidate's
                write_recipe(args, Path(args.out))
            return result

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        add_config_argument(p)

    def run(self, ns: argparse.Namespace) -> int:
        return super().run(apply_config(ns))

    def report(self, args: InstructArgs, task: InstructTask, preset: StageDefaults, summary: dict, model: NeuroLM,
               rows: list[dict], notes: dict[str, str]) -> dict:
        return {"base_model": str(args.model), "steps": summary["step"], "balance_tasks": args.balance_tasks,
                "reference_mask": args.reference_answer_mask, "window_summary": args.window_summary,
                "summary_scale": model.config.summary_scale if model.config.window_summary else None,
                "summary_gate": model.config.summary_gate,
                "freeze_lm": task.freeze_lm, "eeg_drop": task.eeg_drop,
                **lora.parameter_report(model),
                "shots": args.shots, "train_windows": int(len(np.unique(task.order))),
                "val": summary.get("val", {}), "train_last": summary.get("train", {})}

    def plot(self, task: InstructTask, model: NeuroLM, rows: list[dict], out_dir: Path) -> None:
        write_plot(rows, out_dir)

    def describe(self, result: StageResult) -> str:
        val = result.report["val"]
        per_task = ", ".join(f"{k[3:]} {v:.2f}" for k, v in val.items() if k.startswith("ba_") and k != "ba_mean")
        choice = result.report.get("freeze_lm_choice")
        kept = "" if choice is None else (f" (LM {choice['selected']}: val {choice['val_ba']['frozen']:.2f} frozen, "
                                          f"{choice['val_ba']['full']:.2f} fully tuned)")
        return (f"instruction-tuned for {result.report['steps']} steps → {result.out_dir}: val balanced accuracy "
                f"{per_task}{kept}")


STAGE = InstructStage()
add_arguments, run = STAGE.add_arguments, STAGE.run


def instruct(model: str | Path, data: list[str | Path], out: str | Path, **kwargs: Any) -> StageResult:
    """Instruction-tune the NeuroLM in ``model`` on the task stores ``data`` into ``out``; keyword arguments as
    :class:`InstructArgs` (the flags of ``neurolm instruct``). The result's ``report`` (also ``out/report.json``)
    holds the final validation balanced accuracies."""
    return STAGE.execute(InstructArgs(model=model, data=data, out=out, **kwargs))


def write_plot(rows: list[dict], out_dir: Path) -> None:
    """``loss_curves.png``: answer and text losses over steps, and the validation balanced accuracy per task."""
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    fig, (left, right) = figure((11, 4), 1, 2)
    for key in ("loss_answer", "loss_text"):
        left.plot([r["step"] for r in train_rows], [r[key] for r in train_rows], label=key)
    left.set(title="instruction tuning: training losses", xlabel="step", yscale="log")
    left.legend()
    for key in sorted({k for r in val_rows for k in r if k.startswith("ba_")}):
        right.plot([r["step"] for r in val_rows], [r.get(key) for r in val_rows], marker="o", label=key[3:],
                   linewidth=2.5 if key == "ba_mean" else 1)
    right.set(title="validation balanced accuracy (scored answers)", xlabel="step", ylim=(0, 1))
    right.legend(fontsize=8)
    save(fig, out_dir / "loss_curves.png")
