"""Every training stage for a few steps, once per process: the child script of ``tests/test_distributed.py``.

``torchrun --standalone --nproc_per_node=2 tests/ddp_stages.py WORK_DIR`` runs the stages below in order on 2
gloo CPU processes; each rank writes the state dict (parameters and buffers) of the module *it* trained to
``WORK_DIR/ddp/<stage>/rank<r>.pt`` (the published artifacts are rank 0's only, so they cannot show that rank 1
agrees). The test runs the same functions in a single process and compares.

``WORK_DIR`` holds ``store/`` (a prepared HMC store: 4 channels × 30 s windows, so every window has the same number
of tokens and a per-rank mean loss averages to the global mean) and ``text.bin``, a token file of one repeated
token. Each stage draws its text crops per rank (``step_generator(seed, step, micro, rank)``, ``text_batch // world``
crops), so with a real corpus a 2-rank step sees other text than a 1-process step; with a constant corpus every crop
is the same, and the text losses and their gradients match whatever the number of crops.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from neurolm.data.store import WindowStore
from neurolm.instruct import train as instruct_stage
from neurolm.instruct.train import InstructTask, instruct
from neurolm.lm import pretrain as pretrain_stage
from neurolm.lm.pretrain import PretrainTask, pretrain
from neurolm.text import TextCorpus
from neurolm.tokenizer import train as tokenizer_stage
from neurolm.tokenizer.model import TokenizerConfig
from neurolm.tokenizer.train import TokenizerTask, text_table, train_tokenizer
from neurolm.train import TrainConfig, train

STEPS = 3
TEXT_TOKEN = 464  # "The": any id below GPT-2's 50257 would do
TEXT_TOKENS = 1024  # ≥ one pretraining crop of 128 + 1 tokens


def write_constant_text(path: Path) -> Path:
    np.full(TEXT_TOKENS, TEXT_TOKEN, dtype=np.uint16).tofile(path)
    return path


class PreinitialisedCodebookTask(TokenizerTask):
    """The tokenizer stage with its codebook marked as initialised and dead-code re-seeding off.

    k-means initialisation clusters rank 0's tokens (broadcast to the others) and re-seeding draws rank 0's tokens:
    by construction neither equals a single process that sees the whole batch. Without them the codebook still moves
    every step, by the EMA of code means that the quantiser all-reduces over ranks, so this task checks that update
    (and the gradients) against one process; ``tokenizer`` checks the real entry point for agreement across ranks.
    """

    def model(self) -> nn.Module:
        model = super().model()
        model.VQ.quantize.embedding.initted.fill_(1.0)  # keep the seeded random unit codes: the same on every rank
        return model


def _no_plot(*args: object) -> None:
    """Stands in for the stages' post-training plots: matplotlib took half of a stage's time here."""


# Smaller validation subsets (every stage validates after its last step, some after every step) and no plots: the
# same in both runs of a comparison, and they leave the training steps alone.
SMALL_TOKENIZER = {"write_plots": _no_plot, "VAL_WINDOWS": 16}
SMALL_PRETRAIN = {"write_plot": _no_plot, "VAL_WINDOWS": 16, "UNIGRAM_WINDOWS": 32}
SMALL_INSTRUCT = {"write_plot": _no_plot, "VAL_PER_TASK": 8}


def tokenizer(work: Path, out: Path) -> None:
    with mock.patch.multiple(tokenizer_stage, **SMALL_TOKENIZER):
        train_tokenizer([work / "store"], out, steps=STEPS, batch_size=8, progress=False, device="cpu")


def tokenizer_ema(work: Path, out: Path) -> None:
    cfg = TrainConfig(steps=STEPS, batch_size=8, lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=1e-4,
                      betas=(0.9, 0.999), grad_clip=None, eval_every=STEPS, log_every=1, ckpt_every=STEPS,
                      device="cpu")
    config = TokenizerConfig.from_preset("tiny", dead_code_threshold=0.0)
    weight, _ = text_table(config.n_embd, 0, None)
    task = PreinitialisedCodebookTask([WindowStore(work / "store")], config, cfg, text=TextCorpus(work / "text.bin"),
                                      text_weight=weight)
    with mock.patch.multiple(tokenizer_stage, **SMALL_TOKENIZER):
        train(task, cfg, out, progress=False)


def pretraining(work: Path, out: Path) -> None:
    """Around the tokenizer that the 2-rank ``tokenizer`` stage trained (the single-process run uses it too)."""
    with mock.patch.multiple(pretrain_stage, **SMALL_PRETRAIN):
        pretrain(work / "ddp" / "tokenizer", [work / "store"], out, steps=STEPS, batch_size=4, text=work / "text.bin",
                 eval_every=STEPS, progress=False, device="cpu")


def instruction_tuning(work: Path, out: Path) -> None:
    """From the model that the 2-rank ``pretraining`` stage trained."""
    with mock.patch.multiple(instruct_stage, **SMALL_INSTRUCT):
        instruct(work / "ddp" / "pretraining", [work / "store"], out, steps=STEPS, batch_size=4,
                 text=work / "text.bin", progress=False, device="cpu", freeze_lm=False)  # one run, not two candidates


STAGES = {"tokenizer": (tokenizer, TokenizerTask), "tokenizer_ema": (tokenizer_ema, PreinitialisedCodebookTask),
          "pretraining": (pretraining, PretrainTask), "instruction_tuning": (instruction_tuning, InstructTask)}
"""Stage name → (function(work, out), the TrainTask class whose ``model()`` builds the trained module)."""


def run_recording(name: str, work: Path) -> None:
    """Run stage ``name`` into ``work/ddp/<name>`` and save this rank's trained module as ``rank<r>.pt``."""
    run, task_cls = STAGES[name]
    built: list[nn.Module] = []
    build = task_cls.model

    def recorded(self: object) -> nn.Module:
        built.append(build(self))
        return built[-1]

    task_cls.model = recorded
    try:
        out = work / "ddp" / name
        run(work, out)
    finally:
        task_cls.model = build
    torch.save(built[-1].state_dict(), out / f"rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    from neurolm.cli import configure_logging

    configure_logging()  # the stages report through the "neurolm" logger, as under the CLI
    work = Path(sys.argv[1])
    torch.set_num_threads(1)
    # one process group for all stages: the loop reuses a group it finds and leaves it alone
    dist.init_process_group("gloo")
    try:
        for stage in STAGES:
            start = time.perf_counter()
            run_recording(stage, work)
            dist.barrier()
            if dist.get_rank() == 0:
                print(f"{stage}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    finally:
        dist.destroy_process_group()
