"""The one training loop that the tokenizer, pretraining and instruction-tuning stages share.

A stage describes *what* to train as a :class:`TrainTask`; the loop owns *how*::

    class MyTask:                                   # any object with these members (a Protocol, no base class)
        flops_per_step: float | None = None         # optional: FLOPs of one step's global batch → "mfu" column
        def model(self) -> nn.Module: ...           # fresh module, built after seeding (frozen parts: no grad)
        def batch(self, step, micro, rank, world): ...   # pure function of its arguments → no loader state
        def loss(self, model, batch, step) -> tuple[Tensor, dict[str, float]]: ...   # call model(...), not parts
                                                    # (metric "flops": what the batch ran → "mfu", not logged)
        def evaluate(self, model, step) -> dict[str, float]: ...   # rank 0, unwrapped model, eval(), no_grad
        def save(self, model, out_dir: Path) -> None: ...          # config.json + model.safetensors

    cfg = TrainConfig(steps=1000, batch_size=64, lr=6e-4, min_lr=6e-5, warmup_steps=100, weight_decay=0.1,
                      betas=(0.9, 0.95), grad_clip=1.0, eval_every=200, log_every=10, ckpt_every=200)
    summary = train(MyTask(...), cfg, out_dir, resume=args.resume)   # {"step", "train": row, "val": row}

``batch`` typically draws indices from ``StepSampler(n_items, cfg.batch_size, cfg.seed, cfg.grad_accum)``:
``cfg.batch_size`` is the global micro-batch (split over ranks), one step sees ``batch_size * grad_accum`` samples.

What ``train`` does: AdamW (decay on ≥ 2-D parameters, fused on CUDA and, for instruction tuning, on the CPU too),
warm-up + cosine (:func:`lr_at`), gradient accumulation, clipping, bf16 autocast per ``precision``, DDP under
``torchrun`` (rank 0 logs, evaluates and saves), ``out_dir/log.jsonl`` + ``log.csv`` (rows with ``split`` =
``train`` or ``val``), a tqdm bar, atomic checksummed checkpoints in ``out_dir/training_state/`` with the task's
artifacts also published to ``out_dir``, bit-identical resume (``resume=True``), and on SIGINT/SIGTERM: finish the
step, checkpoint, raise KeyboardInterrupt.

A training *command* is a :class:`Stage` (:mod:`neurolm.train.stage`) with an argument dataclass on
:class:`StageArgs` (:mod:`neurolm.train.args`: its fields are the command's flags and the API function's keyword
arguments); :func:`run_stage` builds the ``TrainConfig`` and the task, trains, writes the report and returns a
:class:`StageResult`. Layout: ``config`` (settings, task contract), ``optim`` (AdamW, schedule, peak FLOP/s),
``log`` (``log.jsonl``/``log.csv``), ``checkpoint``, ``distributed``, ``loop``, ``args``, ``stage``.
"""

from .args import StageArgs
from .checkpoint import STATE_DIR, read_meta, resumable
from .config import TrainConfig, TrainTask
from .distributed import StepSampler, evenly_spaced, is_main_process, step_generator
from .loop import train
from .optim import configure_optimizer, lr_at, peak_flops
from .stage import Stage, StageResult, run_stage

__all__ = [
    "STATE_DIR",
    "Stage",
    "StageArgs",
    "StageResult",
    "StepSampler",
    "TrainConfig",
    "TrainTask",
    "configure_optimizer",
    "evenly_spaced",
    "is_main_process",
    "lr_at",
    "peak_flops",
    "read_meta",
    "resumable",
    "run_stage",
    "step_generator",
    "train",
]
