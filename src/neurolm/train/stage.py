"""The skeleton every training stage follows, once: arguments → loop settings → task → :func:`train` → report.

A stage (``tokenizer/train.py``, ``lm/pretrain.py``, ``instruct/train.py``) subclasses :class:`Stage` with what
differs: its argument dataclass, its preset table, its optimiser constants, how it builds its task and what its
report holds. :func:`run_stage` does the rest the same way for all three: it fills the loop's
:class:`TrainConfig` from the preset and the common flags, prints the stage's notes (on rank 0 only), trains (stage
options saved with each checkpoint and compared on resume), writes ``report.json`` and the plots (rank 0) and returns
a :class:`StageResult`.

Sizes: one vocabulary, ``tiny`` and the paper's ``B``, ``L``, ``XL``. The tokenizer has two shapes, ``tiny`` and
``base`` (the paper's, the same for every LM size), so its ``--size`` takes ``B``/``L``/``XL`` as ``base``;
instruction tuning takes its size from the model it tunes (``tiny`` presets for the tiny GPT shape, the paper's
otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import nn

from ..errors import NeuroLMError
from ..lock import directory_lock
from .args import StageArgs, add_arguments, from_namespace
from .config import TrainConfig, TrainTask
from .distributed import is_main_process
from .log import read_rows
from .loop import train

log = logging.getLogger(__name__)

class Preset(Protocol):
    """One row of a stage's preset table (the stages add their own fields)."""

    steps: int
    batch_size: int
    lr: float
    min_lr: float


@dataclass(frozen=True)
class StageResult:
    """What every stage returns."""

    out_dir: Path
    model: nn.Module
    """The trained module (last saved weights) on the CPU, in eval mode."""
    report: dict[str, Any]
    """The content of ``out_dir/report.json``."""


class Stage(ABC):
    """What a training stage provides to :func:`run_stage`; the class attributes are its recipe."""

    command: ClassVar[str]
    """The CLI command, e.g. ``pretrain``."""
    args: ClassVar[type[StageArgs]]
    presets: ClassVar[dict[str, Preset]]
    weight_decay: ClassVar[float]
    betas: ClassVar[tuple[float, float]]
    grad_clip: ClassVar[float | None]
    evaluations: ClassVar[int]
    """Validations per run by default (``eval_every = steps // evaluations``)."""
    group_by_length: ClassVar[bool] = True
    fused_adamw: ClassVar[bool | None] = None
    """:attr:`TrainConfig.fused_adamw` (None: fused on CUDA only)."""
    steps_note: ClassVar[str | None] = None
    """``--steps``'s default in its help where the preset table alone does not say it."""

    @abstractmethod
    def preset(self, args: StageArgs) -> Preset:
        """The row of the preset table that ``args`` select."""

    @abstractmethod
    def task(self, args: StageArgs, cfg: TrainConfig, preset: Preset) -> tuple[TrainTask, dict[str, str]]:
        """The task (with a ``trained`` attribute: the module of its last save, or None) and notes for the log and
        the report (e.g. ``{"text": "text: the shipped demo corpus"}``)."""

    @abstractmethod
    def load(self, out_dir: Path) -> nn.Module:
        """The published model of a run that had finished already (nothing was trained in this call)."""

    @abstractmethod
    def report(self, args: StageArgs, task: Any, preset: Preset, summary: dict, model: nn.Module,
               rows: list[dict], notes: dict[str, str]) -> dict[str, Any]:
        """``report.json`` (computed on every rank, written by rank 0); ``rows``: the run's ``log.jsonl``."""

    @abstractmethod
    def plot(self, task: Any, model: nn.Module, rows: list[dict], out_dir: Path) -> None:
        """The stage's PNGs in ``out_dir`` (rank 0)."""

    @abstractmethod
    def describe(self, result: StageResult) -> str:
        """The command's last line."""

    # the CLI, generated from ``args``
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        def table(name: str) -> str:
            return "default: " + ", ".join(f"{k} {getattr(v, name)}" for k, v in self.presets.items())

        grouped = "on" if self.group_by_length else "off"
        add_arguments(p, self.args, {"steps": self.steps_note or table("steps"), "batch_size": table("batch_size"),
                                     "lr": table("lr"), "eval_every": f"default: steps // {self.evaluations}",
                                     "group_by_length": f"default: {grouped} for {self.command}"})

    def execute(self, args: StageArgs) -> StageResult:
        """Train with ``args``: one :func:`run_stage` (instruction tuning on one task trains two candidates)."""
        return run_stage(self, args)

    def run(self, ns: argparse.Namespace) -> int:
        result = self.execute(from_namespace(self.args, ns))
        if is_main_process():
            print(self.describe(result))
        return 0


def train_config(stage: Stage, args: StageArgs, preset: Preset) -> TrainConfig:
    """The loop's settings: the preset's, replaced by the common flags given."""
    steps = preset.steps if args.steps is None else args.steps
    lr, min_lr = (preset.lr, preset.min_lr) if args.lr is None else (args.lr, args.lr * preset.min_lr / preset.lr)
    if getattr(args, "min_lr", None) is not None:  # a stage whose recipe states the floor (instruct)
        min_lr = args.min_lr
    return TrainConfig(
        steps=steps, batch_size=preset.batch_size if args.batch_size is None else args.batch_size, lr=lr,
        min_lr=min_lr, warmup_steps=steps // 10, weight_decay=stage.weight_decay, betas=stage.betas,
        grad_clip=stage.grad_clip, fused_adamw=stage.fused_adamw,
        eval_every=max(1, steps // stage.evaluations) if args.eval_every is None else args.eval_every,
        log_every=max(1, steps // 100), ckpt_every=max(1, steps // 4), seed=args.seed, device=args.device,
        precision=args.precision, compile=args.compile, grad_accum=args.grad_accum,
        activation_checkpointing=args.activation_checkpointing, head_chunk=args.head_chunk, fsdp=args.fsdp,
        group_by_length=stage.group_by_length if args.group_by_length is None else args.group_by_length)


def run_stage(stage: Stage, args: StageArgs) -> StageResult:
    """Train ``stage`` with ``args`` into ``args.out`` (or continue it with ``args.resume``), holding the
    directory's lock (:mod:`neurolm.lock`) from the first check to the last file."""
    with directory_lock(args.out):
        return _run_stage(stage, args)


def _run_stage(stage: Stage, args: StageArgs) -> StageResult:
    if not args.data:
        raise NeuroLMError(f"{stage.command} needs at least one --data store")
    preset = stage.preset(args)
    cfg = train_config(stage, args, preset)
    task, notes = stage.task(args, cfg, preset)
    if is_main_process():
        for line in notes.values():
            log.info(line)
    summary = train(task, cfg, args.out, resume=args.resume, progress=args.progress,
                    options=args.options() | args.contents(), allow_changes=args.allow_changes)
    # the in-memory module of the last save; a resumed run that had already finished saved nothing: reload it
    model = task.trained.cpu().eval() if task.trained is not None else stage.load(args.out)
    rows = read_rows(args.out / "log.jsonl")
    report = stage.report(args, task, preset, summary, model, rows, notes)
    if is_main_process():
        (args.out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
        stage.plot(task, model, rows, args.out)
    return StageResult(args.out, model, report)
