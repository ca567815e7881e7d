"""``neurolm train-tokenizer``: train the text-aligned neural tokenizer (spec §3) on prepared window stores.

The stage is a :class:`~neurolm.train.TrainTask` for the shared loop: EEG windows from the stores' ``train`` splits,
text crops (the shipped demo corpus, or ``--text``) for the domain-adversarial alignment, validation on (up to) 256
``val`` windows.
After the loop, ``report.json`` and three plots (loss curves, code usage, reconstructions) are written to ``--out``.

Decisions where the spec is silent:
- ``tiny`` uses lr 1e-3 → 1e-4 (REF's 5e-5 → 1e-5 learns nothing in a few hundred steps); ``base`` keeps REF's.
- Warm-up is 10% of the steps (REF: 5 of 50 epochs); no gradient clipping (REF).
- Text batch = ``batch_size // 4`` crops of 64 GPT-2 tokens (REF: 64 EEG + 16 text); crops are drawn from a
  generator seeded by ``(seed, step, micro, rank)`` so a step's batch is a pure function of its arguments.
- Without ``--init-gpt2`` the frozen text table is a seeded N(0, 0.02) (50257, d) matrix: the same distribution the
  randomly initialised LM's ``wte`` starts from, so the alignment target is what a from-scratch LM will see.
- Validation falls back to the ``train`` split when no store has a ``val`` split.
- The frequency head's output bias starts at step 0's mean amplitude target (``NeuralTokenizer.init_freq_bias``;
  not in REF): from zero, the tiny decoder collapsed to predicting the mean spectrum for every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..data.batch import REF_PRETRAIN_TOKENS, EEGBatch, collate_windows, reference_padding
from ..data.provenance import write_training
from ..data.store import ConcatSplits, WindowStore
from ..errors import NeuroLMError
from ..hf_gpt2 import gpt2_text_table
from ..plots import figure, plot_rows, save
from ..text import TextCorpus, open_corpus
from ..train import (
    Stage,
    StageArgs,
    StageResult,
    StepSampler,
    TrainConfig,
    evenly_spaced,
    run_stage,
    step_generator,
)
from .model import NeuralTokenizer, TokenizerConfig, alignment_alpha, spectral_targets
from .quantizer import code_usage

TEXT_VOCAB = 50257
TEXT_LENGTH = 64
VAL_WINDOWS = 256


@dataclass(frozen=True)
class StageDefaults:
    """Per-preset optimisation defaults."""

    steps: int
    batch_size: int
    lr: float
    min_lr: float


DEFAULTS: dict[str, StageDefaults] = {
    "tiny": StageDefaults(steps=300, batch_size=16, lr=1e-3, min_lr=1e-4),
    "base": StageDefaults(steps=20000, batch_size=64, lr=5e-5, min_lr=1e-5),
}


def text_table(n_embd: int, seed: int, init_gpt2: str | Path | None) -> tuple[torch.Tensor, str]:
    """The frozen text-embedding table to align with, and a line saying where it came from."""
    if init_gpt2 is not None:
        weight = gpt2_text_table(init_gpt2)
        if weight.shape[1] != n_embd:
            raise NeuroLMError(f"{init_gpt2}: GPT-2 width {weight.shape[1]} differs from the tokenizer width {n_embd}; "
                               "pick the preset whose width matches (base: 768)")
        return weight, f"text embeddings: GPT-2 wte from {init_gpt2}"
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(TEXT_VOCAB, n_embd, generator=g) * 0.02
    return weight, f"text embeddings: random N(0, 0.02) table ({TEXT_VOCAB}×{n_embd}, seed {seed}); no --init-gpt2"


@torch.no_grad()
def evaluate_tokenizer(model: NeuralTokenizer, batches: list[EEGBatch], device: torch.device) -> dict[str, float]:
    """Reconstruction MSEs averaged over real tokens, codebook utilisation and perplexity of the batches' codes."""
    sums = {"loss_freq": 0.0, "loss_raw": 0.0}
    n_tokens = 0
    counts = torch.zeros(model.config.codebook_size, dtype=torch.long, device=device)
    for batch in batches:
        batch = batch.to(device)
        freq_pred, raw_pred = model.reconstruct(batch)
        freq_target, raw_target = spectral_targets(batch, model.config.freq_target)
        m = batch.mask[..., None].float()
        real = int(batch.mask.sum())
        sums["loss_freq"] += float(((freq_pred.float() - freq_target).square() * m).sum()) / freq_target.shape[-1]
        sums["loss_raw"] += float(((raw_pred.float() - raw_target).square() * m).sum()) / raw_target.shape[-1]
        n_tokens += real
        codes = model.tokenize(batch)
        counts += torch.bincount(codes[batch.mask], minlength=counts.numel())
    utilisation, perplexity = code_usage(counts.cpu())
    return {k: v / max(1, n_tokens) for k, v in sums.items()} | {"utilisation": utilisation, "perplexity": perplexity}


class TokenizerTask:
    """The tokenizer stage for :func:`neurolm.train.train`."""

    flops_per_step: float | None = None

    def __init__(self, stores: list[WindowStore], config: TokenizerConfig, cfg: TrainConfig, *,
                 text: TextCorpus, text_weight: torch.Tensor, max_tokens: int | None = None) -> None:
        self.config, self.cfg, self.text, self.text_weight = config, cfg, text, text_weight
        self.max_tokens = max_tokens or reference_padding(config.norm_over_padding, REF_PRETRAIN_TOKENS)
        self.stores = stores
        self.train_set = ConcatSplits(stores, "train")
        if len(self.train_set) == 0:
            raise NeuroLMError("no training windows: none of the stores has a non-empty train split")
        val = ConcatSplits(stores, "val")
        self.val_set = val if len(val) else self.train_set
        self.sampler = StepSampler(len(self.train_set), cfg.batch_size, cfg.seed, cfg.grad_accum,
                                   self.train_set.token_counts if cfg.group_by_length else None)
        self.text_batch = max(1, cfg.batch_size // 4)
        self._val_batches: list[EEGBatch] | None = None
        self.trained: NeuralTokenizer | None = None

    def model(self) -> nn.Module:
        model = NeuralTokenizer(self.config)
        model.set_text_embeddings(self.text_weight)
        # step 0's whole batch: a pure function of the seed, so every rank starts from the same bias
        model.init_freq_bias(self.batch(0, 0, 0, 1)["eeg"])
        return model

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, Any]:
        idx = self.sampler.indices(step, micro, rank, world)
        eeg = collate_windows([self.train_set[int(i)] for i in idx], self.max_tokens)
        g = step_generator(self.cfg.seed, step, micro, rank)
        share = max(1, self.text_batch // world)
        return {"eeg": eeg, "text": self.text.sample(share, TEXT_LENGTH, g)[:, :TEXT_LENGTH]}

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["eeg"], batch["text"], alpha=alignment_alpha(step / self.cfg.steps))
        utilisation, _ = code_usage(out["code_counts"].detach().cpu())
        metrics = {k: float(out[k]) for k in ("loss_commit", "loss_freq", "loss_raw", "loss_align", "domain_acc")}
        if self.config.spectrum_head:
            metrics["loss_spectrum"] = float(out["loss_spectrum"])
        return out["loss"], metrics | {"batch_utilisation": utilisation}

    def val_batches(self) -> list[EEGBatch]:
        """Up to 256 validation windows evenly spaced over the concatenated stores (the first 256 would all come
        from the first store), collated once: every evaluation scores the same windows."""
        if self._val_batches is None:
            picks = evenly_spaced(len(self.val_set), VAL_WINDOWS)
            bs = self.cfg.batch_size
            self._val_batches = [collate_windows([self.val_set[i] for i in picks[s: s + bs]], self.max_tokens)
                                 for s in range(0, len(picks), bs)]
        return self._val_batches

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return evaluate_tokenizer(model, self.val_batches(), next(model.parameters()).device)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(out_dir)
        write_training(out_dir, self.stores, tuned=False)
        self.trained = model  # the last save is the final model: the report and plots use it


@dataclass(kw_only=True)
class TokenizerArgs(StageArgs):
    """``neurolm train-tokenizer``'s arguments (and :func:`train_tokenizer`'s)."""

    size: Literal["tiny", "base", "B", "L", "XL"] = field(default="tiny", metadata={"flags": ("--size", "--preset")})
    """tokenizer size: tiny, or base (the paper's; B, L and XL, the LM sizes it serves, mean base)"""
    init_gpt2: Path | None = field(default=None, metadata={"metavar": "HF_GPT2_DIR"})
    """align to GPT-2's token embeddings from this local directory (width must match)"""
    spectral_embed: bool | None = None
    """add a learned projection of each patch's log spectrum to the patch embedding (default: the size's preset;
    --no-spectral-embed is the authors' encoder)"""
    freq_target: Literal["amplitude", "log"] | None = None
    """what the frequency decoder reconstructs: amplitude (the authors') or log (per-bin standardised log
    amplitude) (default: the size's preset)"""
    spectrum_head: float | None = field(default=None, metadata={"metavar": "W"})
    """weight of the training-only loss that reads each token's log spectrum linearly from the encoder features;
    0 = off, the authors' objective (default: the size's preset)"""


def preset_name(size: str) -> str:
    """The tokenizer preset of a size (see :mod:`neurolm.train.stage`)."""
    return "tiny" if size == "tiny" else "base"


class TokenizerStage(Stage):
    command = "train-tokenizer"
    args = TokenizerArgs
    presets = DEFAULTS
    weight_decay, betas, grad_clip, evaluations = 1e-4, (0.9, 0.999), None, 5

    def preset(self, args: TokenizerArgs) -> StageDefaults:
        return DEFAULTS[preset_name(args.size)]

    def task(self, args: TokenizerArgs, cfg: TrainConfig, preset: StageDefaults) -> tuple[TokenizerTask, dict]:
        overrides = {k: getattr(args, k) for k in ("spectral_embed", "freq_target", "spectrum_head")
                     if getattr(args, k) is not None}
        config = TokenizerConfig.from_preset(preset_name(args.size), **overrides)
        weight, source = text_table(config.n_embd, args.seed, args.init_gpt2)
        corpus, text = open_corpus(args.text)
        task = TokenizerTask([WindowStore(s) for s in args.data], config, cfg, text=corpus, text_weight=weight)
        return task, {"text_embeddings": source, "text": text}

    def load(self, out_dir: Path) -> NeuralTokenizer:
        return NeuralTokenizer.from_pretrained(out_dir)

    def report(self, args: TokenizerArgs, task: TokenizerTask, preset: StageDefaults, summary: dict,
               model: NeuralTokenizer, rows: list[dict], notes: dict[str, str]) -> dict:
        train_rows = [r for r in rows if r["split"] == "train"]
        keys = ("loss", "loss_freq", "loss_raw")
        return {
            "preset": preset_name(args.size), "steps": summary["step"], **notes,
            "val_windows": sum(int(b.mask.shape[0]) for b in task.val_batches()),
            "val": evaluate_tokenizer(model, task.val_batches(), torch.device("cpu")),
            "train_first": {k: train_rows[0][k] for k in keys} if train_rows else {},
            "train_last": {k: train_rows[-1][k] for k in keys} if train_rows else {},
        }

    def plot(self, task: TokenizerTask, model: NeuralTokenizer, rows: list[dict], out_dir: Path) -> None:
        write_plots(model, rows, task.val_batches(), out_dir)

    def describe(self, result: StageResult) -> str:
        r, v = result.report, result.report["val"]
        return (f"tokenizer trained for {r['steps']} steps → {result.out_dir}: val loss_freq {v['loss_freq']:.4f}, "
                f"loss_raw {v['loss_raw']:.4f}, utilisation {v['utilisation']:.1%}, perplexity {v['perplexity']:.1f}")


STAGE = TokenizerStage()
add_arguments, run = STAGE.add_arguments, STAGE.run


def train_tokenizer(data: list[str | Path], out: str | Path, **kwargs: Any) -> StageResult:
    """Train a tokenizer on the stores ``data`` into ``out``; keyword arguments as :class:`TokenizerArgs` (the
    flags of ``neurolm train-tokenizer``). The result's ``report`` is also ``out/report.json``."""
    return run_stage(STAGE, TokenizerArgs(data=data, out=out, **kwargs))


def write_plots(model: NeuralTokenizer, rows: list[dict], val_batches: list[EEGBatch], out_dir: Path) -> None:
    """``loss_curves.png``, ``code_usage.png`` and ``reconstruction.png`` in ``out_dir``."""
    fig, axes = figure((11, 4), 1, 2)
    for ax, split in zip(axes, ("train", "val")):
        sel = [r for r in rows if r["split"] == split]
        for key in ("loss_freq", "loss_raw", "loss_commit", "loss_align"):
            plot_rows(ax, sel, key, label=key, marker="o" if split == "val" else None)
        ax.set(title=f"{split} losses", xlabel="step", yscale="log")
        ax.legend()
    save(fig, out_dir / "loss_curves.png")

    counts = torch.zeros(model.config.codebook_size, dtype=torch.long)
    for batch in val_batches:
        counts += torch.bincount(model.tokenize(batch)[batch.mask], minlength=counts.numel())
    utilisation, perplexity = code_usage(counts)
    fig, ax = figure((8, 3.5))
    ax.bar(np.arange(counts.numel()), counts.numpy(), width=1.0)
    ax.set(title=f"validation code usage: utilisation {utilisation:.1%}, perplexity {perplexity:.1f}",
           xlabel="code", ylabel="tokens")
    save(fig, out_dir / "code_usage.png")

    batch = val_batches[0]
    freq_pred, raw_pred = model.reconstruct(batch)
    freq_target, raw_target = spectral_targets(batch, model.config.freq_target)
    n = min(3, int(batch.mask[0].sum()))
    fig, axes = figure((11, 2.6 * n), n, 2, squeeze=False)
    for k in range(n):
        axes[k, 0].plot(raw_target[0, k].numpy(), label="original")
        axes[k, 0].plot(raw_pred[0, k].numpy(), label="reconstructed")
        axes[k, 0].set(title=f"token {k}: time (z-scored)", xlabel="sample")
        axes[k, 1].plot(freq_target[0, k].numpy(), label="original")
        axes[k, 1].plot(freq_pred[0, k].numpy(), label="reconstructed")
        axes[k, 1].set(title=f"token {k}: FFT amplitude (z-scored)", xlabel="bin (Hz)")
    axes[0, 0].legend()
    save(fig, out_dir / "reconstruction.png")
