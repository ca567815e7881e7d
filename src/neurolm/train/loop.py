"""The training loop every stage shares: schedule, optimizer, accumulation, precision, logging, checkpoints, resume.

See :mod:`neurolm.train` for the contract between the loop and a stage (:class:`TrainTask`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..errors import NeuroLMError
from .checkpoint import (
    capture_rng,
    has_checkpoint,
    preserved_rng,
    read_meta,
    read_state,
    recover,
    restore_rng,
    verify_checkpoint,
    write_checkpoint,
)
from .distributed import DistContext, setup_distributed, teardown_distributed
from .logs import read_rows


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs: the same flags on every training command (``--precision``, ``--compile``, ``--grad-accum``,
    ``--activation-checkpointing``, ``--no-group-by-length``)."""

    precision: str = "auto"
    compile: bool = False
    grad_accum: int = 1
    activation_checkpointing: bool = False
    group_by_length: bool | None = None
    """None: the stage's default."""

    @staticmethod
    def add_arguments(p: Any) -> None:
        p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                       help="bf16 autocast (auto: on CUDA GPUs that support it)")
        p.add_argument("--compile", action="store_true", help="run the training step through torch.compile")
        p.add_argument("--grad-accum", type=int, default=1, metavar="N",
                       help="micro-batches per optimizer step (the step sees N × --batch-size samples)")
        p.add_argument("--activation-checkpointing", action="store_true",
                       help="recompute transformer blocks in the backward pass (less memory, ~1/3 more compute)")
        p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=None,
                       help="batch windows of similar length together, so batches pad less (default: on for "
                            "train-tokenizer and pretrain; off for instruct, where it makes one-task batches)")

    @classmethod
    def from_args(cls, args: Any) -> RunOptions:
        return cls(args.precision, args.compile, args.grad_accum, args.activation_checkpointing, args.group_by_length)

    def config(self) -> dict[str, Any]:
        """The :class:`TrainConfig` fields these options set."""
        chosen = {} if self.group_by_length is None else {"group_by_length": self.group_by_length}
        return {"precision": self.precision, "compile": self.compile, "grad_accum": self.grad_accum,
                "activation_checkpointing": self.activation_checkpointing} | chosen


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation and bookkeeping settings of one run; saved as ``train_config.json`` in every checkpoint so a run
    can be resumed and audited without the command line that started it."""

    steps: int
    """Optimizer steps of the whole run; the cosine schedule reaches ``min_lr`` at the last one."""
    batch_size: int
    """Samples per micro-step summed over all processes: each of ``world`` ranks gets ``batch_size // world``, so
    the global batch, and hence the run, does not depend on the number of GPUs."""
    grad_accum: int = 1
    """Micro-steps per optimizer step; one step sees ``batch_size * grad_accum`` samples."""
    lr: float
    """Peak learning rate, reached at the end of warm-up."""
    min_lr: float
    """Learning rate of the last step (floor of the cosine)."""
    warmup_steps: int
    """Steps of linear warm-up; 0 starts at ``lr``."""
    weight_decay: float
    """AdamW decoupled weight decay, applied to parameters with ≥ 2 dimensions only."""
    betas: tuple[float, float]
    """AdamW (β1, β2)."""
    grad_clip: float | None
    """Clip the global gradient norm to this value; None: no clipping (the norm is still logged)."""
    eval_every: int
    """Validate every this many steps (and always after the last step)."""
    log_every: int
    """Write a training row to the logs every this many steps (and after the last step)."""
    ckpt_every: int
    """Checkpoint every this many steps (and after the last step, and on SIGINT/SIGTERM)."""
    seed: int = 0
    """Seeds model initialisation (``seed``), per-rank RNG streams (``seed + rank``) and the samplers."""
    device: str = "auto"
    """``auto``: this process's CUDA GPU if there is one, else the CPU; or any torch device string."""
    precision: str = "auto"
    """``auto``: bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere; ``bf16`` forces autocast (also on
    CPU); ``fp32`` disables it. Parameters and optimizer state stay fp32 in every case."""
    compile: bool = False
    """Run the training forward/backward through ``torch.compile``."""
    fused_adamw: bool | None = None
    """Fused AdamW kernel; None: on when the parameters live on CUDA."""
    activation_checkpointing: bool = False
    """Recompute each transformer block in the backward pass (every submodule with an ``activation_checkpointing``
    attribute, e.g. :class:`neurolm.lm.gpt.GPT`): less memory for about one extra forward; same result."""
    num_workers: int = 0
    """Processes that build batches ahead of the step (``task.batch`` runs in them); 0: in the training process."""
    group_by_length: bool = True
    """Stages whose windows differ in length draw batches of similar lengths (``StepSampler(lengths=...)``):
    1.9× faster tokenizer steps on the demo corpus; each epoch still shows every window once. Instruction tuning
    turns it off by default: there a length is a task, and one-task batches lowered the demo's test accuracy."""

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        ints = {"steps": 1, "batch_size": 1, "grad_accum": 1, "warmup_steps": 0, "eval_every": 1, "log_every": 1,
                "ckpt_every": 1, "seed": 0, "num_workers": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise NeuroLMError(f"training setting {name} must be an integer ≥ {low} (got {value!r})")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise NeuroLMError(f"need 0 < lr and 0 ≤ min_lr ≤ lr (got lr {self.lr}, min_lr {self.min_lr})")
        if self.warmup_steps > self.steps:
            raise NeuroLMError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        if self.weight_decay < 0 or not all(0 <= b < 1 for b in self.betas):
            raise NeuroLMError(f"need weight_decay ≥ 0 and betas in [0, 1) (got {self.weight_decay}, {self.betas})")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise NeuroLMError(f"grad_clip must be positive or None (got {self.grad_clip})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise NeuroLMError(f"precision must be auto, bf16 or fp32 (got {self.precision!r})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


class TrainTask(Protocol):
    """What a stage gives the loop. ``flops_per_step`` is optional (read with ``getattr``)."""

    flops_per_step: float | None
    """Model FLOPs of one optimizer step over the global batch (``batch_size * grad_accum`` samples, forward and
    backward), e.g. ``6 * n_params * tokens``; enables the ``mfu`` log column."""

    def model(self) -> nn.Module:
        """A fresh module to optimise, called once after seeding; frozen parts have ``requires_grad=False``."""
        ...

    def batch(self, step: int, micro: int, rank: int, world: int) -> Any:
        """This rank's share of micro-batch ``(step, micro)``, a pure function of its arguments and the task's seed
        (see :class:`StepSampler`). The loop moves tensors, dicts/lists/tuples of them and objects with a
        ``.to(device)`` method to the device. Runs in a worker process when ``num_workers > 0``."""
        ...

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar mean loss of the micro-batch and float metrics to log (the same keys on every rank, none of the
        loop's own column names). ``model`` may be wrapped (DDP, compile): call it (its ``forward``), not its
        submodules, so that DDP synchronises gradients; every trainable parameter must get a gradient."""
        ...

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Validation metrics; called on rank 0 only, with the unwrapped module in eval mode under ``no_grad``."""
        ...

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Write the stage's loadable artifacts (``config.json`` + ``model.safetensors``) into ``out_dir``."""
        ...


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up then cosine decay.

    Warm-up step ``s < warmup_steps`` uses ``lr * (s + 1) / warmup_steps``, so the first step is never wasted at
    lr 0 and the last warm-up step reaches ``lr``; the cosine then runs from ``lr`` at ``warmup_steps`` to exactly
    ``min_lr`` at the last step ``steps - 1``.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on trainable parameters of ≥ 2 dimensions (matrices, conv kernels, embeddings,
    codebooks) and none on biases and norm gains.

    Embeddings decay, as in nanoGPT: GPT-2 ties ``wte`` to ``lm_head``, so exempting embeddings would also exempt
    the output projection. Frozen parameters are left out of the optimizer entirely.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NeuroLMError("the model has no trainable parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.fused_adamw if cfg.fused_adamw is not None else params[0].device.type == "cuda"
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, fused=fused)


# Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's datasheets, matched in order against the device name.
GPU_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
CPU_PEAK_FLOPS_PER_THREAD = 1e11
"""Nominal CPU peak per torch thread (≈ 3 GHz × 32 fp32 FLOP/cycle with AVX2 FMA): a yardstick, not a measurement."""


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device for MFU; None for GPUs not in :data:`GPU_PEAK_FLOPS` (no MFU rather than a guess)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in GPU_PEAK_FLOPS if key in name), None)
    if device.type == "cpu":
        return CPU_PEAK_FLOPS_PER_THREAD * torch.get_num_threads()
    return None


def move_to(obj: Any, device: torch.device) -> Any:
    """Tensors, containers of them and objects with ``.to(device)`` (e.g. :class:`~neurolm.data.batch.EEGBatch`)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    if callable(getattr(obj, "to", None)):
        return obj.to(device)
    return obj


class MetricLog:
    """``log.jsonl`` (one JSON object per row) and ``log.csv`` (the same rows; the header grows when a key appears).

    Opening it for a run resumed at step ``s`` drops rows after ``s``: they were logged after the checkpoint and the
    resumed run logs them again.
    """

    def __init__(self, out_dir: Path, keep_until: int):
        self.jsonl, self.csv = out_dir / "log.jsonl", out_dir / "log.csv"
        self.rows = [r for r in read_rows(self.jsonl) if r["step"] <= keep_until]
        self.columns: list[str] = []
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        self._rewrite_csv()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        if any(k not in self.columns for k in row):
            self._rewrite_csv()
        else:
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, self.columns, restval="").writerow(row)

    def _rewrite_csv(self) -> None:
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        with open(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


_TRAIN_COLUMNS = {"split", "step", "lr", "loss", "grad_norm", "time", "steps_per_s", "samples_per_s", "mfu"}


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group; the batch workers must outlive it so that the training
    # process can finish its step. They exit with the loader (or when their parent dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is micro-batch ``divmod(i, grad_accum)`` of the steps from ``start``: lets a DataLoader prefetch
    ``task.batch`` calls in worker processes."""

    def __init__(self, task: TrainTask, cfg: TrainConfig, start: int, ctx: DistContext):
        self.task, self.cfg, self.start, self.rank, self.world = task, cfg, start, ctx.rank, ctx.world

    def __len__(self) -> int:
        return (self.cfg.steps - self.start) * self.cfg.grad_accum

    def __getitem__(self, i: int) -> Any:
        step, micro = divmod(i, self.cfg.grad_accum)
        return self.task.batch(self.start + step, micro, self.rank, self.world)


def _as_is(item: Any) -> Any:
    return item


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(task: TrainTask, config: TrainConfig, out_dir: Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train ``task`` for ``config.steps`` steps, logging and checkpointing into ``out_dir``.

    Returns ``{"step": ..., "train": last training log row, "val": last validation row}`` (the same on every rank).
    Raises NeuroLMError for a missing or corrupted checkpoint on ``resume``, for a fresh start over an existing run,
    and for a non-finite loss; raises KeyboardInterrupt after checkpointing when SIGINT/SIGTERM stopped the run.
    A resumed run is bit-identical to an uninterrupted one on the same device type and world size (on CUDA, as far
    as its kernels are deterministic). Under ``torchrun`` every rank reads ``out_dir`` when resuming, so multi-node
    jobs need it on a shared filesystem.
    """
    out_dir = Path(out_dir)
    ctx = setup_distributed(config.device)
    try:
        return _train(task, config, out_dir, ctx, resume=resume, progress=progress)
    finally:
        teardown_distributed(ctx)


def _train(task: TrainTask, cfg: TrainConfig, out_dir: Path, ctx: DistContext, *, resume: bool, progress: bool) -> dict:
    if cfg.batch_size % ctx.world:
        raise NeuroLMError(f"batch size {cfg.batch_size} does not split evenly over {ctx.world} processes")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        recover(out_dir)
    ctx.barrier()
    found = has_checkpoint(out_dir)
    if resume and not found:
        raise NeuroLMError(f"nothing to resume: {out_dir} holds no training_state/ checkpoint (start without resume)")
    if not resume and found:
        raise NeuroLMError(f"{out_dir} already holds a training run: resume it, or train into another directory")

    start, elapsed = 0, 0.0
    if resume:
        meta = read_meta(out_dir)
        if meta["step"] >= cfg.steps:  # finished already: nothing to load
            return _summary(out_dir, meta["step"], ctx)
        if ctx.is_main:
            _report_changes(meta["config"], cfg)

    seed_everything(cfg.seed)  # the same initial weights on every rank
    raw = task.model().to(ctx.device)
    for module in raw.modules():
        if hasattr(module, "activation_checkpointing"):
            module.activation_checkpointing = cfg.activation_checkpointing
    optimizer = configure_optimizer(raw, cfg)
    if resume:
        _verify_once(out_dir, ctx)
        state = read_state(out_dir)
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["step"], state["elapsed"]
        if len(state["rng"]) == ctx.world:
            restore_rng(state["rng"][ctx.rank], ctx.device)
        else:  # RNG streams are per rank: another world size cannot continue them (data order is unaffected)
            seed_everything(cfg.seed + ctx.rank + start)
        del state
    else:
        seed_everything(cfg.seed + ctx.rank)

    model: nn.Module = torch.compile(raw) if cfg.compile else raw
    if ctx.world > 1:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    amp_dtype = _autocast_dtype(cfg.precision, ctx.device)

    def autocast() -> Any:
        return torch.autocast(ctx.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    loader = torch.utils.data.DataLoader(
        _StepBatches(task, cfg, start, ctx),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=cfg.num_workers,
        worker_init_fn=_ignore_stop_signals if cfg.num_workers else None,
        pin_memory=ctx.device.type == "cuda",
        # the loader draws its worker base seed from this generator instead of the global torch RNG, which
        # would otherwise shift every random stream of a resumed run by one draw
        generator=torch.Generator().manual_seed(cfg.seed + ctx.rank),
    )
    batches = iter(loader)
    log = MetricLog(out_dir, keep_until=start) if ctx.is_main else None
    flops = getattr(task, "flops_per_step", None)
    peak = peak_flops(ctx.device)
    samples_per_step = cfg.batch_size * cfg.grad_accum
    trainable = [p for p in raw.parameters() if p.requires_grad]
    bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True, disable=not (progress and ctx.is_main))
    t_origin = time.perf_counter() - elapsed
    busy, busy_steps = 0.0, 0

    raw.train()
    try:
        with _StopRequest() as stop, bar:
            for step in range(start, cfg.steps):
                done = step + 1
                logging_now = done % cfg.log_every == 0 or done == cfg.steps
                t_step = time.perf_counter()
                lr = lr_at(step, cfg)
                loss, metrics, grad_norm = _optimizer_step(
                    task, model, batches, optimizer, trainable, cfg, ctx, autocast, step, lr, want_norm=logging_now
                )
                busy += time.perf_counter() - t_step
                busy_steps += 1
                bar.update(1)

                if logging_now:
                    keys = sorted(metrics)
                    if reserved := _TRAIN_COLUMNS.intersection(keys):
                        raise ValueError(f"task metrics may not use the reserved log names {sorted(reserved)}")
                    # averaged over ranks; the step time too, as the ranks wait for each other anyway
                    values = ctx.mean([loss.item()] + [metrics[k] for k in keys] + [busy / busy_steps])
                    loss_value, per_step = values[0], values[-1]
                    if not math.isfinite(loss_value):
                        raise NeuroLMError(f"training diverged: loss is {loss_value} at step {done} ({out_dir})")
                    row = {"split": "train", "step": done, "lr": lr, "loss": loss_value}
                    row.update(zip(keys, values[1:-1]))
                    row.update(grad_norm=float(grad_norm), time=round(time.perf_counter() - t_origin, 3),
                               steps_per_s=1.0 / per_step, samples_per_s=samples_per_step / per_step)
                    if flops and peak:
                        row["mfu"] = flops / (per_step * peak * ctx.world)
                    if log is not None:
                        log.append(row)
                        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", smp_s=f"{row['samples_per_s']:.0f}")
                    busy, busy_steps = 0.0, 0

                stopping = ctx.any(stop.requested)  # all ranks must stop after the same step
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    if log is not None:
                        val = _evaluate(task, raw, done, autocast, ctx.device)
                        log.append({"split": "val", "step": done, "time": round(time.perf_counter() - t_origin, 3),
                                    **val})
                    ctx.barrier()
                if done % cfg.ckpt_every == 0 or done == cfg.steps or stopping:
                    _checkpoint(task, raw, optimizer, cfg, ctx, out_dir, done, time.perf_counter() - t_origin)
                if stopping:
                    if ctx.is_main:
                        tqdm.write(f"stopped by signal after step {done}; checkpoint in {out_dir}", file=sys.stderr)
                    raise KeyboardInterrupt
    finally:
        del batches  # shuts the batch worker processes down, also when unwinding an exception
    return _summary(out_dir, cfg.steps, ctx)


def _optimizer_step(task: TrainTask, model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                    trainable: list[nn.Parameter], cfg: TrainConfig, ctx: DistContext, autocast: Any, step: int,
                    lr: float, *, want_norm: bool) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss and metrics of its micro-batches
    and the gradient norm (before clipping; computed only when clipping or ``want_norm``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=ctx.device)
    metric_sums: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        batch = move_to(next(batches), ctx.device)
        # DDP all-reduces gradients during backward: only the last micro-step's backward needs to
        last = micro == cfg.grad_accum - 1
        with nullcontext() if ctx.world == 1 or last else model.no_sync():
            with autocast():
                loss, metrics = task.loss(model, batch, step)
            (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach().float()
        for key, value in metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + float(value)
    grad_norm = None
    if cfg.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
    elif want_norm:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / cfg.grad_accum, {k: v / cfg.grad_accum for k, v in metric_sums.items()}, grad_norm


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _evaluate(task: TrainTask, raw: nn.Module, step: int, autocast: Any, device: torch.device) -> dict[str, float]:
    raw.eval()
    try:
        with preserved_rng(device), torch.no_grad(), autocast():
            return {k: float(v) for k, v in task.evaluate(raw, step).items()}
    finally:
        raw.train()


def _checkpoint(task: TrainTask, raw: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                ctx: DistContext, out_dir: Path, step: int, elapsed: float) -> None:
    rngs = ctx.gather(capture_rng(ctx.device))
    if ctx.is_main:
        state = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(), "rng": rngs, "step": step,
                 "elapsed": elapsed}
        meta = {"step": step, "elapsed": round(elapsed, 3), "world_size": ctx.world}
        with preserved_rng(ctx.device):
            write_checkpoint(out_dir, state, meta, cfg.to_json(), lambda d: task.save(raw, d))
    ctx.barrier()


def _verify_once(out_dir: Path, ctx: DistContext) -> None:
    """Checksums are read on rank 0 only (hashing GBs once is enough); every rank raises the same error."""
    problem = None
    if ctx.is_main:
        try:
            verify_checkpoint(out_dir)
        except NeuroLMError as exc:
            problem = str(exc)
    if (problem := ctx.broadcast(problem)) is not None:
        raise NeuroLMError(problem)


def _summary(out_dir: Path, step: int, ctx: DistContext) -> dict:
    summary = None
    if ctx.is_main:
        rows = read_rows(out_dir / "log.jsonl")
        last = {split: next((r for r in reversed(rows) if r["split"] == split), {}) for split in ("train", "val")}
        summary = {"step": step, **last}
    return ctx.broadcast(summary)


def _report_changes(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Resuming with other settings is allowed (e.g. more steps) but no longer the same run: say what changed."""
    changed = [f"{f.name} {saved.get(f.name)!r} → {getattr(cfg, f.name)!r}" for f in fields(cfg)
               if json.loads(json.dumps(getattr(cfg, f.name))) != saved.get(f.name)]
    if changed:
        print(f"resuming with changed training settings: {', '.join(changed)}", file=sys.stderr)
