"""``neurolm pretrain``: multi-channel autoregressive pretraining of NeuroLM (spec §4) on the shared loop.

Each step draws one EEG batch (windows of the stores' ``train`` splits, any dataset) and one text batch (crops of a
plain-text corpus) and sums the two next-token losses into one backward, as REF does. The frozen tokenizer encoder
runs once per EEG batch and gives both the LM's inputs and its target codes (:meth:`NeuroLM.eeg_forward`).
Validation scores a fixed subset of the ``val`` windows against the **unigram baseline**: the cross-entropy of
predicting every target code by the code frequencies of the training windows (Laplace-smoothed). A model below that
line uses the EEG context, not just the code histogram. After the loop, ``report.json`` and ``loss_curves.png`` are
written to ``--out``.

Decisions where the spec is silent:
- B/L/XL keep REF's optimisation (AdamW 6e-4 → 6e-5 cosine, betas (0.9, 0.95), weight decay 0.1, clip 1.0, EEG
  batch 60, text batch 4 × 1024 tokens); warm-up is 10 % of the steps (REF: 2 of 20 epochs).
- ``tiny`` (2 layers × 64) uses lr 3e-3 → 3e-4, EEG batch 8 and text batch 2 × 128 tokens: at REF's 6e-4 the EEG
  loss is still far above the unigram line after a few hundred CPU steps, because most of the tiny model's
  parameters sit in the 58,496-way head that must first learn which outputs are codes; a tiny model tolerates the
  larger step, and the small text batch keeps a CPU step well under a second (the text loss is secondary here).
- ``tiny`` computes the EEG loss (training and validation) over the codebook's outputs only; B/L/XL keep REF's
  softmax over all text + code outputs. At 64 wide the 50,816-row head was most of a CPU step for a difference the
  model learns in a few steps (text outputs are never EEG targets); the unigram baseline is a distribution over
  codes only, so the codes-only loss is also the like-for-like comparison with it.
- EEG batches are padded to their longest window only (REF pads to 1024 tokens): with real-token GroupNorm
  statistics (``norm_over_padding=False``) padding changes nothing but the cost. With REF's switch every sample is
  padded to 1024 as REF (:func:`~neurolm.data.batch.reference_padding`).
- The encoder-feature scaler (:meth:`NeuroLM.fit_feature_scaler`) is fitted on the windows that measure the code
  frequencies before the first step; instruction tuning and inference keep it.
- The validation subset and the windows that measure the code frequencies are evenly spaced over the concatenated
  splits (up to 256 and 1024 windows), so every store is represented and no random state is involved. Without a
  ``val`` split anywhere, the ``train`` windows stand in (said in the report).
- Text crops are drawn from a generator seeded by ``(seed, step, micro, rank)``, so a step's batch is a pure
  function of its arguments (bit-identical resume).
- Known leak kept from REF (see :mod:`neurolm.lm.model`): the bidirectional tokenizer encoder lets the features of
  second ``a`` see second ``a+1``, whose code is the target; the report states it next to the measured numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..artifacts import model_type
from ..data.batch import REF_PRETRAIN_TOKENS, EEGBatch, collate_windows, reference_padding
from ..data.provenance import write_training
from ..data.store import ConcatSplits, WindowStore
from ..errors import NeuroLMError
from ..text import TextCorpus, open_corpus
from ..tokenizer import NeuralTokenizer
from ..plots import figure, save
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
from . import lora
from .backbone import read_backbone
from .gpt import GPTConfig
from .flops import FLOPS_METRIC, TokenCosts
from .model import IGNORE, NeuroLM, eeg_targets

VAL_WINDOWS = 256
UNIGRAM_WINDOWS = 1024
ENCODER_LEAK = ("the frozen tokenizer encoder is bidirectional (REF): features of second a have seen second a+1, "
                "whose code is the target, so EEG loss/accuracy are optimistic for true forecasting")


@dataclass(frozen=True)
class StageDefaults:
    """Per-size optimisation defaults (see the module notes for why ``tiny`` differs)."""

    steps: int
    batch_size: int
    """EEG windows per step."""
    text_batch: int
    """Text crops per step."""
    text_length: int
    """Tokens per text crop (inputs; one more is read for the last target)."""
    lr: float
    min_lr: float
    codes_only: bool = False
    """EEG loss over the codebook's outputs only (REF: over all text + code outputs)."""


_REF = {"batch_size": 60, "text_batch": 4, "text_length": 1024, "lr": 6e-4, "min_lr": 6e-5}
DEFAULTS: dict[str, StageDefaults] = {
    "tiny": StageDefaults(steps=300, batch_size=8, text_batch=2, text_length=128, lr=3e-3, min_lr=3e-4,
                          codes_only=True),
    "B": StageDefaults(steps=20000, **_REF),
    "L": StageDefaults(steps=20000, **_REF),
    "XL": StageDefaults(steps=20000, **_REF),
}


class PretrainModel(nn.Module):
    """NeuroLM with both pretraining objectives in ``forward``, so the loop (and DDP) see one module call."""

    def __init__(self, lm: NeuroLM, codes_only: bool = False) -> None:
        super().__init__()
        self.lm, self.codes_only = lm, codes_only
        self._costs: TokenCosts | None = None

    def forward(self, eeg: EEGBatch, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` = EEG next-second loss + text next-token loss, the parts (detached) for the logs, and the FLOPs
        the step ran (:meth:`flops`)."""
        e = self.lm.eeg_forward(eeg, self.codes_only)
        t = self.lm.text_forward(text)
        return {"loss": e["loss"] + t["loss"], "eeg_loss": e["loss"].detach(), "eeg_accuracy": e["accuracy"],
                "text_loss": t["loss"].detach(), "text_accuracy": t["accuracy"],
                FLOPS_METRIC: self.flops(eeg.mask.sum(1).tolist(), int(e["tokens"]), tuple(text.shape))}

    def flops(self, windows: list[int], targets: int, text: tuple[int, int]) -> float:
        """Training FLOPs of one pass (:mod:`neurolm.lm.flops`): ``windows``, each window's real tokens (through
        the encoder and the LM); ``targets``, the EEG positions the head scored (over the codebook's rows alone
        with ``codes_only``); ``text``, the crops' shape ``(n, length + 1)``."""
        if self._costs is None:  # after LoRA or freezing: the costs depend on what trains
            self._costs = TokenCosts.of(self.lm)
        c, cfg = self._costs, self.lm.config
        rows = cfg.tokenizer.codebook_size if self.codes_only else cfg.gpt.n_outputs
        n, length = text[0], text[1] - 1
        return (sum(c.sequence(w, 0) + c.window(w) for w in windows) + targets * c.head * rows / cfg.gpt.n_outputs
                + n * (c.sequence(0, length) + length * c.head))


def count_targets(codes: torch.Tensor, batch: EEGBatch, n_codes: int) -> torch.Tensor:
    """How often each code is a next-second target in one batch whose tokens have ``codes`` (float64 ``(n_codes,)``)."""
    targets = eeg_targets(codes, batch.times.to(codes.device), batch.chans.to(codes.device),
                          batch.n_chans.to(codes.device))
    return torch.bincount(targets[targets != IGNORE], minlength=n_codes).double()


@torch.no_grad()
def target_code_counts(tokenizer: NeuralTokenizer, batches: list[EEGBatch], device: torch.device) -> torch.Tensor:
    """How often each code is a next-second target in ``batches`` (one frozen encoder pass per batch)."""
    n_codes = tokenizer.config.codebook_size
    counts = torch.zeros(n_codes, dtype=torch.float64, device=device)
    for batch in batches:
        batch = batch.to(device)
        counts += count_targets(tokenizer.tokenize(batch), batch, n_codes)
    return counts


def unigram_comparison(gain: float) -> str:
    """``12.0% below`` or, for a loss above the baseline (a negative gain), ``150.0% above``: never a negative
    percentage "below"."""
    return f"{gain:.1%} below" if gain >= 0 else f"{-gain:.1%} above"


def unigram_loss(train_counts: torch.Tensor, val_counts: torch.Tensor) -> float:
    """Cross-entropy (nats) of the validation targets under the Laplace-smoothed training code frequencies."""
    log_p = torch.log((train_counts + 1) / (train_counts.sum() + train_counts.numel()))
    return float(-(val_counts * log_p).sum() / val_counts.sum().clamp_min(1))


@torch.no_grad()
def evaluate_eeg(lm: NeuroLM, batches: list[EEGBatch], device: torch.device,
                 codes_only: bool = False) -> dict[str, float]:
    """Token-weighted EEG next-second loss, accuracy and perplexity over ``batches``."""
    loss = hits = tokens = 0.0
    for batch in batches:
        out = lm.eeg_forward(batch.to(device), codes_only)
        n = float(out["tokens"])
        loss += float(out["loss"]) * n
        hits += float(out["accuracy"]) * n
        tokens += n
    if not tokens:
        raise NeuroLMError("validation windows have no next-second targets (every window is shorter than 2 s)")
    return {"eeg_loss": loss / tokens, "eeg_accuracy": hits / tokens, "eeg_perplexity": math.exp(loss / tokens)}


class PretrainTask:
    """The pretraining stage for :func:`neurolm.train.train`."""

    def __init__(self, stores: list[WindowStore], tokenizer: NeuralTokenizer, size: str, cfg: TrainConfig, *,
                 text: TextCorpus, text_batch: int, text_length: int, init_gpt2: str | Path | None = None,
                 codes_only: bool = False, gelu: str = "tanh", spectral_input: bool = True,
                 backbone: str | Path | None = None, lora_rank: int = 0) -> None:
        """``backbone``: a Hugging Face causal LM directory instead of the native GPT of ``size``;
        ``lora_rank`` > 0: train LoRA adapters (:mod:`neurolm.lm.lora`) instead of the whole backbone."""
        self.tokenizer, self.size, self.cfg, self.init_gpt2 = tokenizer, size, cfg, init_gpt2
        self.backbone, self.lora_rank = backbone, lora_rank
        if backbone is not None and init_gpt2 is not None:
            raise NeuroLMError("--backbone and --init-gpt2 both name the LM's weights: give one")
        self._spec = None if backbone is None else read_backbone(backbone)[0]
        self.gelu, self.spectral_input = gelu, spectral_input
        self.codes_only = codes_only
        self._pad = reference_padding(tokenizer.config.norm_over_padding, REF_PRETRAIN_TOKENS)
        self.text, self.text_batch, self.text_length = text, text_batch, text_length
        self.stores = stores
        self.train_set = ConcatSplits(stores, "train")
        if len(self.train_set) == 0:
            raise NeuroLMError("no training windows: none of the stores has a non-empty train split")
        val = ConcatSplits(stores, "val")
        self.val_is_train = len(val) == 0
        self.val_set = self.train_set if self.val_is_train else val
        self.sampler = StepSampler(len(self.train_set), cfg.batch_size, cfg.seed, cfg.grad_accum,
                                   self.train_set.token_counts if cfg.group_by_length else None)
        if len(text) < text_length + 1:
            raise NeuroLMError(f"text corpus has {len(text)} tokens, fewer than one crop of {text_length + 1}")
        gpt = GPTConfig.from_preset(size) if self._spec is None else GPTConfig(**self._spec.sizes())
        if text_length > gpt.block_size:
            raise NeuroLMError(f"text crops of {text_length} tokens exceed the LM's {gpt.block_size} positions")
        self._val: list[EEGBatch] | None = None
        self._train_sample: list[EEGBatch] | None = None
        self._train_counts: torch.Tensor | None = None
        self._unigram: float | None = None
        self.trained: NeuroLM | None = None

    def model(self) -> nn.Module:
        if self.backbone is None:
            lm = NeuroLM.from_tokenizer(self.tokenizer, self.size, self.init_gpt2, gelu=self.gelu,
                                        spectral_input=self.spectral_input)
        else:
            lm = NeuroLM.from_backbone(self.tokenizer, self.backbone, spectral_input=self.spectral_input)
        if self.lora_rank:
            lora.add_lora(lm, self.lora_rank)
        sample = self.train_sample()
        codes = lm.fit_feature_scaler(sample)  # the same encoder pass gives the unigram's training code counts
        n_codes = self.tokenizer.config.codebook_size
        self._train_counts = sum(count_targets(c, b, n_codes) for c, b in zip(codes, sample))
        return PretrainModel(lm, self.codes_only)

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, Any]:
        idx = self.sampler.indices(step, micro, rank, world)
        eeg = collate_windows([self.train_set[int(i)] for i in idx], self._pad)
        g = step_generator(self.cfg.seed, step, micro, rank)
        share = max(1, self.text_batch // world)
        return {"eeg": eeg, "text": self.text.sample(share, self.text_length, g)}

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["eeg"], batch["text"])
        metrics = {k: float(out[k]) for k in ("eeg_loss", "eeg_accuracy", "text_loss", "text_accuracy", FLOPS_METRIC)}
        metrics["eeg_perplexity"] = math.exp(metrics["eeg_loss"])
        return out["loss"], metrics

    def _batches(self, dataset: ConcatSplits, limit: int) -> list[EEGBatch]:
        idx = evenly_spaced(len(dataset), limit)
        bs = self.cfg.batch_size
        return [collate_windows([dataset[i] for i in idx[s : s + bs]], self._pad) for s in range(0, len(idx), bs)]

    def val_batches(self) -> list[EEGBatch]:
        """The fixed validation subset, collated once: every evaluation scores the same windows."""
        if self._val is None:
            self._val = self._batches(self.val_set, VAL_WINDOWS)
        return self._val

    def train_sample(self) -> list[EEGBatch]:
        """Fixed training windows (evenly spaced, collated once) for the feature scaler and the code frequencies."""
        if self._train_sample is None:
            self._train_sample = self._batches(self.train_set, UNIGRAM_WINDOWS)
        return self._train_sample

    def unigram(self, tokenizer: NeuralTokenizer, device: torch.device) -> float:
        """The unigram baseline of the validation subset, measured once with the frozen tokenizer."""
        if self._unigram is None:
            train_counts = self._train_counts.to(device)  # counted by model() while fitting the feature scaler
            val_counts = target_code_counts(tokenizer, self.val_batches(), device)
            self._unigram = unigram_loss(train_counts, val_counts)
        return self._unigram

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        val = evaluate_eeg(model.lm, self.val_batches(), device, self.codes_only)
        base = self.unigram(model.lm.tokenizer, device)
        return val | {"unigram_loss": base, "unigram_perplexity": math.exp(base),
                      "eeg_gain": 1.0 - val["eeg_loss"] / base}

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.lm.save_pretrained(out_dir)
        write_training(out_dir, self.stores, tuned=False)
        self.trained = model.lm  # the last save is the final model


@dataclass(kw_only=True)
class PretrainArgs(StageArgs):
    """``neurolm pretrain``'s arguments (and :func:`pretrain`'s)."""

    tokenizer: Path = field(metadata={"metavar": "DIR"})
    """trained tokenizer directory (frozen)"""
    size: Literal["tiny", "B", "L", "XL"] = "tiny"
    """LM size"""
    init_gpt2: Path | None = field(default=None, metadata={"metavar": "HF_GPT2_DIR"})
    """start from Hugging Face GPT-2 weights in this local directory (size must match)"""
    gelu: Literal["tanh", "exact"] = "tanh"
    """MLP activation: GPT-2's tanh approximation or the exact GELU of the authors' recipe"""
    spectral_input: bool = True
    """add each EEG token's log band power to its LM input (default: on; --no-spectral-input = the reference's
    input, encoder features only: neurolm.lm.spectral)"""
    backbone: Path | None = field(default=None, metadata={"metavar": "HF_DIR"})
    """use the Hugging Face causal LM in this local directory (Llama, Qwen2, Mistral, Phi, GPT-2, SmolLM ...) and its
    tokenizer instead of the native GPT; --size then only picks the optimisation defaults (needs neurolm[hf])"""
    lora_rank: int = 0
    """train rank-R LoRA adapters on the LM's blocks instead of all its weights (0 = full training; needs peft)"""


class PretrainStage(Stage):
    command = "pretrain"
    args = PretrainArgs
    presets = DEFAULTS
    weight_decay, betas, grad_clip, evaluations = 0.1, (0.9, 0.95), 1.0, 5

    def preset(self, args: PretrainArgs) -> StageDefaults:
        return DEFAULTS[args.size]

    def task(self, args: PretrainArgs, cfg: TrainConfig, preset: StageDefaults) -> tuple[PretrainTask, dict]:
        if model_type(args.tokenizer, "neural tokenizer") == "neurolm":
            raise NeuroLMError(f"{args.tokenizer} is a NeuroLM directory (neurolm pretrain or instruct wrote it), not "
                               "a tokenizer: --tokenizer needs the --out directory of neurolm train-tokenizer")
        tokenizer = NeuralTokenizer.from_pretrained(args.tokenizer)
        if args.lora_rank < 0:
            raise NeuroLMError(f"--lora-rank must be 0 (off) or positive, got {args.lora_rank}")
        text_tok = None if args.backbone is None else read_backbone(args.backbone)[1]
        corpus, source = open_corpus(args.text, text_tok)
        task = PretrainTask([WindowStore(s) for s in args.data], tokenizer, args.size, cfg, text=corpus,
                            text_batch=preset.text_batch, text_length=preset.text_length, init_gpt2=args.init_gpt2,
                            codes_only=preset.codes_only, gelu=args.gelu, spectral_input=args.spectral_input,
                            backbone=args.backbone, lora_rank=args.lora_rank)
        return task, {"text": source}

    def load(self, out_dir: Path) -> NeuroLM:
        return NeuroLM.from_pretrained(out_dir)

    def report(self, args: PretrainArgs, task: PretrainTask, preset: StageDefaults, summary: dict, model: NeuroLM,
               rows: list[dict], notes: dict[str, str]) -> dict:
        train_rows = [r for r in rows if r["split"] == "train"]
        keys = ("loss", "eeg_loss", "eeg_accuracy", "text_loss")
        return {
            "size": args.size, "steps": summary["step"], "tokenizer": str(args.tokenizer), **notes,
            "init_gpt2": None if args.init_gpt2 is None else str(args.init_gpt2),
            "backbone": None if args.backbone is None else f"{model.config.backbone.family} from {args.backbone}",
            **lora.parameter_report(model),
            "val_windows": sum(int(b.mask.shape[0]) for b in task.val_batches()),
            "val_split": "train (no store has a val split)" if task.val_is_train else "val",
            "val": {k: v for k, v in summary["val"].items() if k not in ("split", "step", "time")},
            "train_first": {k: train_rows[0][k] for k in keys} if train_rows else {},
            "train_last": {k: train_rows[-1][k] for k in keys} if train_rows else {},
            "eeg_loss_outputs": "codebook only" if preset.codes_only else "all text + code outputs (REF)",
            "caveat": ENCODER_LEAK,
        }

    def plot(self, task: PretrainTask, model: NeuroLM, rows: list[dict], out_dir: Path) -> None:
        write_plot(rows, out_dir)

    def describe(self, result: StageResult) -> str:
        r = result.report
        v, t = r["val"], r["train_last"]
        name = f"NeuroLM-{r['size']}" if r.get("backbone") is None else f"NeuroLM ({r['backbone']})"
        return (f"{name} pretrained for {r['steps']} steps → {result.out_dir}: val EEG loss "
                f"{v['eeg_loss']:.3f} ({unigram_comparison(v['eeg_gain'])} the unigram baseline "
                f"{v['unigram_loss']:.3f}), "
                f"accuracy {v['eeg_accuracy']:.1%}, perplexity {v['eeg_perplexity']:.1f}; text loss "
                f"{t.get('text_loss', math.nan):.3f}")


STAGE = PretrainStage()
add_arguments, run = STAGE.add_arguments, STAGE.run


def pretrain(tokenizer: str | Path, data: list[str | Path], out: str | Path, **kwargs: Any) -> StageResult:
    """Pretrain a NeuroLM around the tokenizer in ``tokenizer`` on the stores ``data`` into ``out``; keyword
    arguments as :class:`PretrainArgs` (the flags of ``neurolm pretrain``). The result's ``report`` is also
    ``out/report.json``."""
    return run_stage(STAGE, PretrainArgs(tokenizer=tokenizer, data=data, out=out, **kwargs))


def write_plot(rows: list[dict], out_dir: Path) -> None:
    """``loss_curves.png``: EEG loss (train, val) against the unigram line, and the text loss."""
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    fig, (eeg, txt) = figure((11, 4), 1, 2)
    eeg.plot([r["step"] for r in train_rows], [r["eeg_loss"] for r in train_rows], label="train EEG loss")
    eeg.plot([r["step"] for r in val_rows], [r["eeg_loss"] for r in val_rows], marker="o", label="val EEG loss")
    if val_rows:
        eeg.axhline(val_rows[-1]["unigram_loss"], color="grey", linestyle="--", label="val unigram baseline")
    eeg.set(title="EEG next-second loss (nats)", xlabel="step")
    eeg.legend()
    txt.plot([r["step"] for r in train_rows], [r["text_loss"] for r in train_rows], label="train text loss")
    txt.set(title="text next-token loss (nats)", xlabel="step")
    txt.legend()
    save(fig, out_dir / "loss_curves.png")

