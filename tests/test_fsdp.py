"""FSDP (``--fsdp``, :mod:`neurolm.train.fsdp`) under ``torchrun --nproc_per_node=2`` (gloo, CPU) equals one process
with the same global batch, including a resume, and writes checkpoints and model directories that load without
``torch.distributed``. The child script is :mod:`fsdp_stages`. ~70 s on 2 quiet cores (the two-process job and the
single-process references train three stages of a few steps each): in CI, as the DDP test is."""

from __future__ import annotations

from pathlib import Path

import ddp_stages
import fsdp_stages
import pytest
import torch
from test_distributed import stage_inputs, torchrun_two, train_losses

from neurolm.lm import NeuroLM
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.train import STATE_DIR
from neurolm.train.checkpoint import STATE_FILE

STAGES = {"tokenizer_ema": fsdp_stages.tokenizer_ema, "pretraining": fsdp_stages.pretraining,
          "instruction_tuning": fsdp_stages.instruction_tuning}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fsdp")
    stage_inputs(work)
    torch.manual_seed(0)
    NeuralTokenizer(TokenizerConfig.from_preset("tiny")).save_pretrained(work / "tokenizer")
    torchrun_two(Path(fsdp_stages.__file__), work)
    assert (work / "fsdp" / "shard_calls").read_text() == "4"  # tokenizer, pretraining, its resume, instruction tuning
    return work


def _close(actual, expected, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("stage", list(STAGES))
def test_fsdp_matches_one_process_with_the_same_global_batch(work, stage, one_thread):
    """Weights, AdamW moments and the logged losses; pretraining was interrupted after step 2 and resumed."""
    single = work / "single" / stage
    STAGES[stage](work, single)
    one = torch.load(single / STATE_DIR / STATE_FILE, weights_only=True)
    two = torch.load(work / "fsdp" / stage / STATE_DIR / STATE_FILE, weights_only=True)
    assert one["model"].keys() == two["model"].keys() and one["step"] == two["step"] == ddp_stages.STEPS
    for key in one["model"]:
        _close(two["model"][key], one["model"][key], key)
    assert one["optimizer"]["param_groups"] == two["optimizer"]["param_groups"]
    assert one["optimizer"]["state"].keys() == two["optimizer"]["state"].keys()
    for index, moments in one["optimizer"]["state"].items():
        for name, value in moments.items():
            _close(two["optimizer"]["state"][index][name], value, f"optimizer state {index} {name}")
    torch.testing.assert_close(train_losses(work / "fsdp" / stage), train_losses(single), rtol=1e-4, atol=0)


def test_the_published_model_loads_without_distributed(work):
    state = torch.load(work / "fsdp" / "pretraining" / STATE_DIR / STATE_FILE, weights_only=True)["model"]
    loaded = NeuroLM.from_pretrained(work / "fsdp" / "pretraining").state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[f"lm.{key}"]), key
