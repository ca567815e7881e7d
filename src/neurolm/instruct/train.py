"""``neurolm instruct``: multi-task instruction tuning of one NeuroLM on all six tasks (spec §5).

Each step: a batch of labelled windows drawn from the concatenated, shuffled ``train`` splits of the task stores,
each paired with its task's ``[50257] instruction answer <|endoftext|>`` text (loss on the answer only, see
:mod:`neurolm.instruct.data`), plus one batch of plain-text crops whose language-model loss (weight 1) keeps the
model's text ability. EEG next-second targets are not used in this stage. Validation: the scored-answer balanced
accuracy of every task on (up to) 64 ``val`` windows each, and the mean over tasks.

Decisions where the spec is silent:
- Windows are padded to the longest in the batch (at most 276 tokens), not always to 276: the same result with
  ``norm_over_padding=False`` tokenizers, less compute. With REF's switch (REF checkpoints) always to 276, as REF.
- Answer logits are computed only at the trained positions (a few per sample) instead of over the whole 80-token
  text: the head has 50304 + codebook rows, and it dominated the step time of small models.
- ``tiny`` models use lr 6e-3 → 6e-4 and batch 32 (REF's 5e-4 → 5e-5 with batch 64 learns too slowly in a few
  hundred CPU steps; a sweep on the demo corpus, 400–1500 steps × lr 1e-3…1e-2 × batch 16/32, put 6e-3 and 32 first);
  larger models keep REF's settings. Text crops: one crop of 128 tokens per step for ``tiny`` (REF: 16 × 1024); two
  crops cost a third of a CPU step for no change in the task accuracies. ``tiny`` trains 400 steps per task store
  (:meth:`StageDefaults.for_tasks`): six tasks in 400 steps under-fit.
- Several tasks at 400 steps per task or more: each training window hides half its EEG tokens from the LM
  (``--eeg-drop``, :func:`drop_tokens`); there the six tasks otherwise memorise their training windows, while
  shorter schedules under-fit and the drop only slows them (:func:`eeg_drop`). REF hides none.
- Validation windows are evenly spaced over each store's ``val`` split (all its subjects), not its first windows.
- One task (one store with validation windows, the window summary on, no LoRA): the LM is tuned twice, frozen and
  fully, and the one with the higher validation balanced accuracy is kept (:func:`compares_freezing`); REF always
  trains the whole LM (``--no-freeze-lm``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from ..artifacts import read_config
from ..data.batch import EEGBatch
from ..data.channels import PAD_INDEX
from ..data.provenance import write_training
from ..data.store import ConcatSplits, WindowStore
from ..errors import NeuroLMError
from ..lock import LOCK_FILE, directory_lock
from ..lm import lora
from ..lm.backbone import load_text_tokenizer
from ..lm.gpt import GPTConfig
from ..lm.cache import EncoderCache
from ..lm.model import IGNORE, NeuroLM, NeuroLMConfig
from ..lm.spectral import SUMMARY_SCALE
from ..text import TextCorpus, open_corpus
from ..plots import figure, save
from ..train import (
    STATE_DIR,
    Stage,
    StageArgs,
    StageResult,
    StepSampler,
    TrainConfig,
    evenly_spaced,
    is_main_process,
    run_stage,
    step_generator,
)
from .data import EEG_MAX_TOKENS, TEXT_LENGTH, collate_eeg, collate_texts, score_answers
from .fewshot import shot_indices
from .tasks import TASKS, find_task

VAL_PER_TASK = 64


@dataclass(frozen=True)
class StageDefaults:
    steps: int
    batch_size: int
    lr: float
    min_lr: float
    text_batch: int
    text_length: int
    text_weight: float
    steps_per_task: int = 0
    """With several task stores the default is at least this many steps per store (:meth:`for_tasks`)."""

    def for_tasks(self, n_tasks: int) -> StageDefaults:
        """The row for ``n_tasks`` stores: ``max(steps, steps_per_task × n_tasks)`` steps. Why (docs/accuracy.md,
        stop 20): with balanced tasks each task gets 1/n of every batch, and six tasks in 400 steps under-fit (on
        the 3× synthetic corpus SEED scored 0.44 on its own *training* windows); 400 steps per task raised the six
        tasks' test mean there from 0.717 to 0.789 and the tasks within band power − 0.05 from three to five. One
        task keeps 400 steps, so EEGMAT's result and time stay as they were."""
        return replace(self, steps=max(self.steps, self.steps_per_task * n_tasks))


DEFAULTS: dict[str, StageDefaults] = {
    # tiny's text crop stays 128 tokens (docs/accuracy.md, stop 25): 64 (--text-length 64) was ~1.05-1.25x faster
    # and level on EEGMAT, but lower on the 3x synthetic corpus over five paired runs (mean -0.009; -0.047 on one LM)
    "tiny": StageDefaults(steps=400, batch_size=32, lr=6e-3, min_lr=6e-4, text_batch=1, text_length=128,
                          text_weight=1.0, steps_per_task=400),
    "paper": StageDefaults(steps=10000, batch_size=64, lr=5e-4, min_lr=5e-5, text_batch=16, text_length=1024,
                           text_weight=1.0),
}


def defaults_for(config: NeuroLMConfig) -> StageDefaults:
    """``tiny`` settings for a model of the tiny GPT shape, the paper's otherwise."""
    tiny = GPTConfig.from_preset("tiny")
    cfg = config.gpt
    return DEFAULTS["tiny" if (cfg.n_layer, cfg.n_embd) == (tiny.n_layer, tiny.n_embd) else "paper"]


LENGTH_GROUPS = 2
"""Backbone passes per instruction batch (:meth:`InstructObjective.forward`)."""


class InstructObjective(nn.Module):
    """NeuroLM plus the stage's loss, so that the loop (and DDP) sees one ``forward``."""

    def __init__(self, lm: NeuroLM, text_weight: float = 1.0, cache: EncoderCache | None = None,
                 eeg_drop: float = 0.0, length_groups: int = LENGTH_GROUPS) -> None:
        super().__init__()
        self.lm, self.text_weight, self.cache, self.eeg_drop = lm, text_weight, cache, eeg_drop
        self.length_groups = length_groups

    def forward(self, eeg: EEGBatch, ids: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                crops: torch.Tensor, keys: list[int] | None = None) -> dict[str, torch.Tensor]:
        """``keys``: the windows' training-set indices, for the encoder cache (None: encode every window).

        The batch goes through the LM in :attr:`length_groups` passes of windows of similar length (fewest EEG
        tokens first), each padded only to its own longest window and text, and the answer rows of all passes meet
        in one head call: the same loss and gradients (positions come from each token's channel and second, the
        text's from its own window), but the six tasks' windows keep 38–124 EEG tokens, and one padded pass spent
        ~40 % of its positions on padding (~8 % of a tiny CPU step; docs/accuracy.md, stop 24). One pass where every
        window has as many EEG tokens (one task without the drop: nothing to save), and under REF's batch-wide text
        positions (``ref_text_positions``), which depend on the batch-mates."""
        encoded = None if self.cache is None or keys is None else self.cache.encode(self.lm.tokenizer, eeg, keys)
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
        hidden, answers = [], []
        order = torch.argsort(lengths, stable=True) if groups > 1 else torch.arange(len(ids))
        for idx in order.tensor_split(groups):
            part, part_encoded = keep_tokens(_samples(eeg, idx), (encoded[0][idx], encoded[1][idx]), eeg.mask[idx]) \
                if groups > 1 else (eeg, encoded)
            length = int(mask[idx].sum(1).max())
            h = self.lm.text_hidden(part, ids[idx, :length], mask[idx, :length], encoded=part_encoded,
                                    summary_from=_samples(full, idx))
            trained = targets[idx, :length] != IGNORE
            hidden.append(h[trained])
            answers.append(targets[idx, :length][trained])
        answer, answer_acc = self.lm.head_loss(torch.cat(hidden), torch.cat(answers))
        text = self.lm.text_forward(crops)
        return {"loss": answer + self.text_weight * text["loss"], "loss_answer": answer.detach(), "loss_text": text["loss"].detach(),
                "answer_token_acc": answer_acc}


def _samples(eeg: EEGBatch, idx: torch.Tensor) -> EEGBatch:
    """The windows ``idx`` of a batch."""
    return EEGBatch(*(t[idx] for t in eeg.__dict__.values()))


def drop_tokens(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Which EEG tokens the LM keeps ``(B, N)`` bool: each with probability ``1 - p`` (torch's global generator,
    which the training loop seeds and checkpoints), every window keeping all of them if none of its real tokens
    survived. Why (docs/accuracy.md, stop 20): at 2400 steps six tasks start memorising their training windows
    through the EEG tokens (SEED 0.89 on them, 0.51 on test) while the window summary, computed from the whole
    window, carries what band power carries; hiding half the tokens raised SEED to 0.59."""
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
    form that matches band power there (docs/accuracy.md)."""
    for name, p in lm.named_parameters():
        p.requires_grad_(name.startswith(("summary.", "gpt.lm_head.")))


class InstructTask:
    """The instruction-tuning stage for :func:`neurolm.train.train`."""

    def __init__(self, model_dir: Path, stores: list[WindowStore], cfg: TrainConfig, text: TextCorpus,
                 text_batch: int, text_length: int, text_weight: float = 1.0, cache_mb: float = 1024.0,
                 balance_tasks: bool = False, reference_mask: bool = False, window_summary: bool = False,
                 lora_rank: int = 0, shots: int | None = None, summary_scale: float = SUMMARY_SCALE,
                 freeze_lm: bool = False, eeg_drop: float = 0.0, summary_gate: bool = False) -> None:
        self.model_dir, self.cfg, self.text, self.text_weight = model_dir, cfg, text, text_weight
        self.summary_gate = summary_gate
        self.eeg_drop = eeg_drop
        self.lora_rank, self.freeze_lm = lora_rank, freeze_lm
        self.reference_mask, self.window_summary, self.summary_scale = reference_mask, window_summary, summary_scale
        self.cache_mb = cache_mb
        self.text_batch, self.text_length = text_batch, text_length
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
        if shots is not None:  # few-shot: K windows per class of every task (instruct.fewshot)
            parts = [a + shot_indices(split.labels, split.subjects, shots, cfg.seed)
                     for a, (_, split) in zip(offsets[:-1], self.train_set.parts)]
        self.order = balanced_order(parts) if balance_tasks else np.concatenate(parts)
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
        config = _config(model_dir)
        self.text_tokenizer = load_text_tokenizer(model_dir, config.backbone)
        self.flops_per_step = _flops_per_step(config, cfg, text_batch, text_length)
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
        return InstructObjective(lm.train(), self.text_weight, cache, self.eeg_drop)

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
        return out["loss"], {k: float(out[k]) for k in ("loss_answer", "loss_text", "answer_token_acc")}

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


def _config(model_dir: Path) -> NeuroLMConfig:
    values = read_config(model_dir, "NeuroLM model")
    if "gpt" not in values and "codebook_size" in values:
        raise NeuroLMError(f"{model_dir} is a neural tokenizer directory (neurolm train-tokenizer wrote it), not a "
                           "NeuroLM: --model needs a pretrained model, the --out directory of neurolm pretrain")
    return NeuroLMConfig.from_dict(values)


def _flops_per_step(config: NeuroLMConfig, cfg: TrainConfig, text_batch: int, text_length: int) -> float:
    """Training FLOPs of one step, counting the LM head only where this stage applies it (answer tokens, text
    crops) and the frozen encoder only on EEG tokens; EEG windows are taken as half the 276-token budget. The
    model is built on the meta device: its shape without its memory."""
    with torch.device("meta"):
        lm = NeuroLM(config)
    seq = EEG_MAX_TOKENS // 2 + TEXT_LENGTH
    head = 6 * lm.config.gpt.n_outputs * lm.config.gpt.n_embd
    backbone = lm.flops_per_token(seq, eeg=False) - head
    encoder = lm.flops_per_token(seq, eeg=True) - lm.flops_per_token(seq, eeg=False)
    per_sample = (EEG_MAX_TOKENS // 2) * (backbone + encoder) + TEXT_LENGTH * backbone + 5 * head
    return float(cfg.grad_accum * (cfg.batch_size * per_sample + text_batch * text_length * (backbone + head)))


@dataclass(kw_only=True)
class InstructArgs(StageArgs):
    """``neurolm instruct``'s arguments (and :func:`instruct`'s)."""

    model: Path = field(metadata={"metavar": "DIR"})
    """pretrained NeuroLM directory"""
    text_weight: float | None = None
    """weight of the text crops' language-model loss (default: the size's, 1.0)"""
    text_length: int | None = field(default=None, metadata={"metavar": "N"})
    """tokens per text crop (default: the size's: tiny 128, paper 1024)"""
    cache_mb: float = field(default=1024.0, metadata={"compared": False})
    """memory (MiB) for the frozen encoder's outputs of training windows, reused every epoch (0 = encode every
    step)"""
    balance_tasks: bool = True
    """show every task as often as the largest one (default: on; --no-balance-tasks = the reference's plain
    concatenation, where a task's share of the steps is its share of the windows)"""
    reference_answer_mask: bool = False
    """train the ' (' that opens a lettered answer only for TUEV and HMC, as the reference does (default: for
    every lettered task)"""
    shots: int | None = field(default=None, metadata={"metavar": "K"})
    """few-shot tuning: only K labelled windows per class of each store's train split, drawn from as many subjects
    as possible with --seed (e.g. a new task, from an instruction-tuned --model; default: every window)"""
    window_summary: bool = True
    """give the answer a learned linear map of the window's per-channel band power (neurolm.lm.spectral.WindowSummary;
    default: on; --no-window-summary = the reference's model, docs/accuracy.md)"""
    summary_scale: float = field(default=SUMMARY_SCALE, metadata={"metavar": "S"})
    """the window summary's output factor, i.e. its learning rate relative to the LM's (default: 0.3; a model that
    already has a summary keeps its own)"""
    summary_gate: bool | None = None
    """let the question gate the window summary per text position (default: for several task stores; a model that
    already has a summary keeps its own)"""
    lora_rank: int = 0
    """train rank-R LoRA adapters on the LM's blocks instead of all its weights (0 = full training; adapters the
    model already has are merged first; needs peft)"""
    eeg_drop: float | None = field(default=None, metadata={"metavar": "P"})
    """fraction of each training window's EEG tokens hidden from the LM (the window summary still reads all of
    them; default: 0.5 for several task stores trained at least 400 steps each, else 0)"""
    freeze_lm: bool | None = None
    """train only the window summary and the output head, the LM as pretrained (--no-freeze-lm: the whole LM, as
    the reference; default: for one task with the window summary and --lora-rank 0, both, keeping the one with the
    higher validation balanced accuracy (candidates/ holds the two runs); for several tasks the whole LM)"""


EEG_DROP_SEVERAL_TASKS = 0.5
"""``--eeg-drop``'s default for several task stores on a long enough schedule (:func:`drop_tokens`)."""
EEG_DROP_MIN_STEPS_PER_TASK = 400
"""The schedule, in steps per task store, from which :func:`eeg_drop` hides tokens by default."""


def eeg_drop(args: InstructArgs, steps: int) -> float:
    """``--eeg-drop`` or its default for a run of ``steps``: :data:`EEG_DROP_SEVERAL_TASKS` for several task stores
    with at least :data:`EEG_DROP_MIN_STEPS_PER_TASK` steps each, else 0 (a threshold for every model size, unlike
    the ``tiny`` preset's ``steps_per_task``). Why (docs/accuracy.md, stops 20–21): at 400 steps per task the six
    synthetic tasks memorise their training windows and the drop raised SEED by 0.08–0.11; on shorter schedules
    they under-fit and it cost (the demo's six tasks in 400 steps: mean 0.699 → 0.686, the summary's input thinned
    too; the few-shot benchmark's five-task base at 120 steps: Workload with every window 0.750 → 0.716). One task
    already chooses between the frozen and the fully tuned LM on validation, and the drop was not measured there."""
    if args.eeg_drop is not None:
        return args.eeg_drop
    several = len(args.data) > 1 and steps >= EEG_DROP_MIN_STEPS_PER_TASK * len(args.data)
    return EEG_DROP_SEVERAL_TASKS if several else 0.0


def summary_gate(args: InstructArgs) -> bool:
    """``--summary-gate`` or its default: on for several task stores. Why (docs/accuracy.md, stops 18 and 26): six
    tasks share one summary, and with the gate each question reads its own dimensions of it (SEED and Workload rose
    on 6 of 8 demo task pairs, the 3× corpus's six-task mean 0.778 → 0.811); one task has one question, so there
    the gate only rescales the summary, and on EEGMAT it cost the frozen candidate its lead (fold 0: validation
    0.686 → 0.549)."""
    return len(args.data) > 1 if args.summary_gate is None else args.summary_gate


def compares_freezing(args: InstructArgs) -> bool:
    """Whether ``--freeze-lm``'s default tunes both ways and keeps the better on validation: for one task with the
    window summary, without LoRA, and with validation windows (on its training windows the fully tuned LM, which
    memorises them, would always win). Why (docs/accuracy.md): on real EEGMAT the frozen LM generalises better
    (5-fold CV, three seeds: 0.665 frozen, 0.643 fully tuned, 0.672 kept by validation; band power 0.646), on
    single synthetic tasks the fully tuned one mostly does (TUAB 0.87 vs 0.74), and the validation subjects picked
    the better one on test in 17 of 21 such runs; for six tasks at once the frozen LM cannot tell their answers
    apart (the demo: 0.552 vs 0.699), so it is not tried there."""
    if args.freeze_lm is not None or len(args.data) != 1 or not args.window_summary or args.lora_rank:
        return False
    try:
        store = WindowStore(args.data[0])
    except NeuroLMError:  # the stage reports it, after the --model checks, as for several stores
        return False
    return "val" in store.splits and len(store.split("val")) > 0


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
    weight_decay, betas, grad_clip, evaluations = 0.1, (0.9, 0.95), 1.0, 4
    group_by_length = False  # lengths are tasks here: grouped batches would hold one task each (docs/training.md)
    # fused on CPU too: ~10 ms of a ~210 ms tiny step (docs/accuracy.md, stop 24); not in the tokenizer stage, whose
    # codebook usage it changed (stop 22)
    fused_adamw = True

    steps_note = "default: tiny 400 per task store, paper 10000"

    def preset(self, args: InstructArgs) -> StageDefaults:
        return defaults_for(_config(args.model)).for_tasks(len(args.data))

    def task(self, args: InstructArgs, cfg: TrainConfig, preset: StageDefaults) -> tuple[InstructTask, dict]:
        if args.lora_rank < 0:
            raise NeuroLMError(f"--lora-rank must be 0 (off) or positive, got {args.lora_rank}")
        if args.freeze_lm and args.lora_rank:
            raise NeuroLMError("--freeze-lm and --lora-rank exclude each other: one says the blocks stay as they are, "
                               "the other adapts them")
        if not args.summary_scale > 0:
            raise NeuroLMError(f"--summary-scale must be positive, got {args.summary_scale}")
        if args.text_length is not None and args.text_length < 1:
            raise NeuroLMError(f"--text-length must be positive, got {args.text_length}")
        drop = eeg_drop(args, cfg.steps)
        if not 0 <= drop < 1:
            raise NeuroLMError(f"--eeg-drop must be in [0, 1), got {drop}")
        corpus, source = open_corpus(args.text, load_text_tokenizer(args.model, _config(args.model).backbone))
        text_length = preset.text_length if args.text_length is None else args.text_length
        text_weight = preset.text_weight if args.text_weight is None else args.text_weight
        task = InstructTask(args.model, [WindowStore(s) for s in args.data], cfg, corpus, preset.text_batch,
                            text_length, text_weight, args.cache_mb, args.balance_tasks, args.reference_answer_mask,
                            args.window_summary, args.lora_rank, args.shots, args.summary_scale, bool(args.freeze_lm),
                            drop, summary_gate(args))
        return task, {"text": source}

    def load(self, out_dir: Path) -> NeuroLM:
        return NeuroLM.from_pretrained(out_dir)

    def execute(self, args: InstructArgs) -> StageResult:
        """One run, or, where :func:`compares_freezing`, both candidates into ``out/candidates/{full,frozen}`` and the
        better published in ``out`` (:func:`publish_choice`)."""
        if not compares_freezing(args):
            return run_stage(self, replace(args, freeze_lm=bool(args.freeze_lm)))
        with directory_lock(args.out):  # the candidates' folders are locked by their own runs
            return publish_choice({name: run_stage(self, replace(args, out=Path(args.out) / "candidates" / name,
                                                                 freeze_lm=name == "frozen"))
                                   for name in ("full", "frozen")}, Path(args.out))

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
