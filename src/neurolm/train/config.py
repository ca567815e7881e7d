"""What a run is: the loop's settings (:class:`TrainConfig`, saved with every checkpoint) and the stage contract
(:class:`TrainTask`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import NeuroLMError


FLOPS_METRIC = "flops"
"""A metric a task's ``loss`` may return: the FLOPs its micro-batch ran on this rank, counted from the batch (real
tokens, what trains, what was cached); the loop turns it into the ``mfu`` column instead of logging it, in place of
the fixed ``flops_per_step``."""

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
    head_chunk: int = 512
    """Tokens per chunk of the LM head's training losses, set on every submodule with a ``head_chunk`` attribute
    (e.g. :class:`neurolm.lm.model.NeuroLM`, :mod:`neurolm.lm.head`); 0: one chunk. Changes memory, not results."""
    fsdp: bool = False
    """Under ``torchrun``, shard parameters, gradients and optimizer state over the processes
    (:mod:`neurolm.train.fsdp`) instead of replicating them with DDP; the same result and checkpoints."""
    num_workers: int = 0
    """Processes that build batches ahead of the step (``task.batch`` runs in them); 0: in the training process."""
    group_by_length: bool = True
    """Stages whose windows differ in length draw batches of similar lengths (``StepSampler(lengths=...)``):
    batches pad far less, so tokenizer steps get much cheaper; each epoch still shows every window once. Instruction
    tuning turns it off by default: there a length is a task, and one-task batches lowered the demo's test accuracy
    (both measured in docs/training.md, "group by length")."""

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        ints = {"steps": 1, "batch_size": 1, "grad_accum": 1, "warmup_steps": 0, "eval_every": 1, "log_every": 1,
                "ckpt_every": 1, "seed": 0, "num_workers": 0,
                "head_chunk": 0}
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
    """What a stage gives the loop. ``flops_per_step`` is optional (read with ``getattr``); a task that counts what
    each batch ran returns it as the :data:`FLOPS_METRIC` metric instead."""

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
