"""The training loop every stage shares: schedule, optimizer, accumulation, precision, logging, checkpoints, resume.

See :mod:`neurolm.train` for the contract between the loop and a stage (:class:`TrainTask`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..errors import NeuroLMError
from .args import CONTENTS
from .checkpoint import (
    CONFIG_FILE,
    OPTIONS_FILE,
    capture_rng,
    has_checkpoint,
    preserved_rng,
    read_meta,
    read_state,
    recover,
    restore_rng,
    verify_or_fall_back,
    write_checkpoint,
)
from .config import FLOPS_METRIC, TrainConfig, TrainTask
from .distributed import DistContext, setup_distributed, teardown_distributed
from .fsdp import ShardedModel
from .log import MetricLog, read_rows
from .optim import configure_optimizer, lr_at, peak_flops

logger = logging.getLogger(__name__)


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


def train(task: TrainTask, config: TrainConfig, out_dir: Path, *, resume: bool = False, progress: bool = True,
          options: dict[str, Any] | None = None, allow_changes: bool = False) -> dict:
    """Train ``task`` for ``config.steps`` steps, logging and checkpointing into ``out_dir``.

    ``options``: the stage's own settings (JSON values; what the task was built from, beyond ``config``), saved in
    every checkpoint. Resuming with other ``options`` raises NeuroLMError naming each changed one, unless
    ``allow_changes``: they define the run as much as its weights do. Changed ``config`` settings (e.g. more steps)
    are allowed and reported.

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
        return _train(task, config, out_dir, ctx, resume=resume, progress=progress, options=options,
                      allow_changes=allow_changes)
    finally:
        teardown_distributed(ctx)


def _train(task: TrainTask, cfg: TrainConfig, out_dir: Path, ctx: DistContext, *, resume: bool, progress: bool,
           options: dict[str, Any] | None, allow_changes: bool) -> dict:
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
        _verify_once(out_dir, ctx)  # before anything is read from it: a damaged newest one gives way to the previous
        meta = read_meta(out_dir)
        _check_options(meta["options"], options, out_dir, allow_changes, ctx)  # the same error on every rank
        if meta["step"] >= cfg.steps:  # finished already: nothing to load
            return _summary(out_dir, meta["step"], ctx)
        if ctx.is_main:
            _report_changes(meta["config"], cfg)

    seed_everything(cfg.seed)  # the same initial weights on every rank
    raw = task.model()
    for module in raw.modules():
        for name in ("activation_checkpointing", "head_chunk"):
            if hasattr(module, name):
                setattr(module, name, getattr(cfg, name))
    sharded = ShardedModel(raw, ctx) if cfg.fsdp and ctx.world > 1 else None
    raw = raw.to(ctx.device)
    if resume:
        state = read_state(out_dir)
        raw.load_state_dict(state["model"])
    if sharded is not None:
        sharded.shard(raw)
    optimizer = configure_optimizer(raw, cfg)
    if resume:
        if sharded is not None:
            sharded.load_optimizer(raw, optimizer, state["optimizer"])
        else:
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
    if ctx.world > 1 and sharded is None:
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
    busy, busy_steps, ran = 0.0, 0, None

    raw.train()
    try:
        with _StopRequest() as stop, bar:
            for step in range(start, cfg.steps):
                done = step + 1
                logging_now = done % cfg.log_every == 0 or done == cfg.steps
                t_step = time.perf_counter()
                lr = lr_at(step, cfg)
                loss, metrics, grad_norm = _optimizer_step(
                    task, model, batches, optimizer, trainable, cfg, ctx, autocast, step, lr, want_norm=logging_now,
                    sync_always=sharded is not None)
                busy += time.perf_counter() - t_step
                busy_steps += 1
                if (step_flops := metrics.pop(FLOPS_METRIC, None)) is not None:  # counted by the task: this rank's
                    ran = (ran or 0.0) + step_flops * cfg.grad_accum
                bar.update(1)

                if logging_now:
                    keys = sorted(metrics)
                    if reserved := _TRAIN_COLUMNS.intersection(keys):
                        raise ValueError(f"task metrics may not use the reserved log names {sorted(reserved)}")
                    # averaged over ranks; the step time too, as the ranks wait for each other anyway
                    values = ctx.mean([loss.item()] + [metrics[k] for k in keys] + [busy / busy_steps]
                                      + ([] if ran is None else [ran / busy_steps]))
                    if ran is not None:  # the mean over ranks of what each ran per step
                        flops, values = values[-1] * ctx.world, values[:-1]
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
                    busy, busy_steps, ran = 0.0, 0, None if ran is None else 0.0

                stopping = ctx.any(stop.requested)  # all ranks must stop after the same step
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    with nullcontext(raw) if sharded is None else sharded.full_model(raw) as evaluated:
                        if log is not None:
                            val = _evaluate(task, evaluated, done, autocast, ctx.device)
                            log.append({"split": "val", "step": done,
                                        "time": round(time.perf_counter() - t_origin, 3), **val})
                    ctx.barrier()
                if done % cfg.ckpt_every == 0 or done == cfg.steps or stopping:
                    _checkpoint(task, raw, optimizer, cfg, options, ctx, out_dir, done,
                                time.perf_counter() - t_origin, sharded)
                if stopping:
                    if ctx.is_main:
                        logger.warning(f"stopped by signal after step {done}; checkpoint in {out_dir}")
                    raise KeyboardInterrupt
    finally:
        del batches  # shuts the batch worker processes down, also when unwinding an exception
    return _summary(out_dir, cfg.steps, ctx)


def _optimizer_step(task: TrainTask, model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer,
                    trainable: list[nn.Parameter], cfg: TrainConfig, ctx: DistContext, autocast: Any, step: int,
                    lr: float, *, want_norm: bool, sync_always: bool = False
                    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss and metrics of its micro-batches
    and the gradient norm (before clipping; computed only when clipping or ``want_norm``). ``sync_always``: FSDP,
    which reduces every micro-batch's gradients (:mod:`neurolm.train.fsdp`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=ctx.device)
    metric_sums: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        batch = move_to(next(batches), ctx.device)
        # DDP all-reduces gradients during backward: only the last micro-step's backward needs to
        last = micro == cfg.grad_accum - 1
        with nullcontext() if ctx.world == 1 or last or sync_always else model.no_sync():
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
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
        grad_norm = grad_norm.full_tensor()
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
                options: dict[str, Any] | None, ctx: DistContext, out_dir: Path, step: int, elapsed: float,
                sharded: ShardedModel | None = None) -> None:
    rngs = ctx.gather(capture_rng(ctx.device))
    full = None if sharded is None else sharded.gather(raw, optimizer)  # collective; rank 0's unsharded copy
    if ctx.is_main:
        raw, optim_state = full if full is not None else (raw, optimizer.state_dict())
        state = {"model": raw.state_dict(), "optimizer": optim_state, "rng": rngs, "step": step,
                 "elapsed": elapsed}
        meta = {"step": step, "elapsed": round(elapsed, 3), "world_size": ctx.world}
        with preserved_rng(ctx.device):
            files = {CONFIG_FILE: cfg.to_json()}
            if options is not None:
                files[OPTIONS_FILE] = json.dumps(options, indent=2) + "\n"
            write_checkpoint(out_dir, state, meta, files, lambda d: task.save(raw, d))
    ctx.barrier()


def _verify_once(out_dir: Path, ctx: DistContext) -> None:
    """Checksums are read on rank 0 only (hashing GBs once is enough), falling back to the previous checkpoint when
    the newest is damaged (with a warning); every rank raises the same error."""
    problem = None
    if ctx.is_main:
        try:
            if (fallback := verify_or_fall_back(out_dir)) is not None:
                warnings.warn(fallback, UserWarning, stacklevel=4)
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
        logger.warning(f"resuming with changed training settings: {', '.join(changed)}")


def _check_options(saved: dict[str, Any] | None, now: dict[str, Any] | None, out_dir: Path, allow: bool,
                   ctx: DistContext) -> None:
    """Stage options that differ from the checkpoint's: an error unless ``allow`` (then a warning). Checkpoints
    written before options were saved (``saved`` None) have nothing to compare."""
    if saved is None or now is None:
        return
    compared = [k for k in sorted(saved.keys() | now.keys()) if k in saved or not k.endswith(CONTENTS)]
    changed = [f"--{k.replace('_', '-')} {saved.get(k)!r} → {now.get(k)!r}" for k in compared
               if saved.get(k) != now.get(k)]
    if not changed:
        return
    listed = "; ".join(changed)
    if not allow:
        raise NeuroLMError(f"{out_dir} was trained with other stage options: {listed}. Resume with the saved values, "
                           "train into another directory, or pass --allow-changes (allow_changes=True) to continue "
                           "this run with the new ones")
    if ctx.is_main:
        logger.warning(f"resuming with changed stage options (--allow-changes): {listed}")
