"""Pretraining (interrupted and resumed) and instruction tuning under FSDP: the child script of
``tests/test_fsdp.py``.

``torchrun --standalone --nproc_per_node=2 tests/fsdp_stages.py WORK_DIR`` trains, with ``fsdp=True`` on 2 gloo CPU
processes, ``WORK_DIR/fsdp/tokenizer_ema`` (as :func:`ddp_stages.tokenizer_ema`), ``WORK_DIR/fsdp/pretraining``
(stopped by SIGINT during step :data:`INTERRUPT_AT`, then resumed to the end) around the random tokenizer in
``WORK_DIR/tokenizer``, and from it ``WORK_DIR/fsdp/instruction_tuning``.
Inputs as :mod:`ddp_stages` (equal-length windows, a constant text corpus).
"""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
import ddp_stages
from ddp_stages import SMALL_INSTRUCT, SMALL_PRETRAIN, STEPS

from neurolm.instruct import train as instruct_stage
from neurolm.instruct.train import instruct
from neurolm.lm import pretrain as pretrain_stage
from neurolm.lm.pretrain import PretrainTask, pretrain
from neurolm.train import TrainConfig
from neurolm.train.fsdp import ShardedModel

INTERRUPT_AT = 1
"""0-based step during which the FSDP pretraining run is stopped; it checkpoints after it and is resumed."""


def pretraining(work: Path, out: Path, **kw: object) -> None:
    with mock.patch.multiple(pretrain_stage, **SMALL_PRETRAIN):
        pretrain(work / "tokenizer", [work / "store"], out, steps=STEPS, batch_size=4, text=work / "text.bin",
                 eval_every=STEPS, progress=False, device="cpu", **kw)


def instruction_tuning(work: Path, out: Path, **kw: object) -> None:
    with mock.patch.multiple(instruct_stage, **SMALL_INSTRUCT):
        instruct(work / "fsdp" / "pretraining", [work / "store"], out, steps=STEPS, batch_size=4,
                 text=work / "text.bin", progress=False, device="cpu", freeze_lm=False, **kw)


def tokenizer_ema(work: Path, out: Path, **kw: object) -> None:
    """:func:`ddp_stages.tokenizer_ema` (the tokenizer stage with a pre-initialised codebook), its TrainConfig
    given ``kw`` (``fsdp=True``)."""
    with mock.patch.object(ddp_stages, "TrainConfig", functools.partial(TrainConfig, **kw)):
        ddp_stages.tokenizer_ema(work, out)


def interrupted_pretraining(work: Path, out: Path) -> None:
    loss = PretrainTask.loss

    def interrupting(self, model, batch, at):
        if at == INTERRUPT_AT:
            signal.raise_signal(signal.SIGINT)
        return loss(self, model, batch, at)

    with mock.patch.object(PretrainTask, "loss", interrupting):
        try:
            pretraining(work, out, fsdp=True)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the interrupted run finished")
    pretraining(work, out, fsdp=True, resume=True)


if __name__ == "__main__":
    work = Path(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    shard = ShardedModel.shard
    try:  # record that the runs were sharded, not silently replicated
        with mock.patch.object(ShardedModel, "shard", autospec=True, side_effect=shard) as sharding:
            tokenizer_ema(work, work / "fsdp" / "tokenizer_ema", fsdp=True)
            interrupted_pretraining(work, work / "fsdp" / "pretraining")
            dist.barrier()
            instruction_tuning(work, work / "fsdp" / "instruction_tuning", fsdp=True)
        if dist.get_rank() == 0:
            (work / "fsdp" / "shard_calls").write_text(str(sharding.call_count))
    finally:
        dist.destroy_process_group()
