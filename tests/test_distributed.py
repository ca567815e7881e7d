"""Every training stage under ``torchrun --nproc_per_node=2`` (gloo, CPU) against one process with the same global
batch, and activation checkpointing of the GPT.

One ``torchrun`` job runs all stages (:mod:`ddp_stages`, 3 steps each); each rank saves the module it trained.
Checked for every stage: both ranks end with identical parameters and buffers (the tokenizer's codebook, usage EMA
and k-means flag included). Checked against a single process (rtol 1e-4, atol 2e-5, and the logged per-step
training losses, which the loop averages over ranks):

- ``pretraining`` and ``instruction_tuning`` (the real entry points) on windows of equal length and a constant text
  corpus: every stage draws ``text_batch // world`` crops per rank from a rank-seeded generator, so with real text
  the two runs would train on other crops (see :mod:`ddp_stages`);
- ``tokenizer_ema``: the tokenizer stage with its codebook marked initialised and dead-code re-seeding off. The real
  ``train_tokenizer`` initialises the codebook by k-means over rank 0's tokens and re-seeds dead codes with rank 0's
  tokens, which cannot equal k-means over the whole batch in one process; the EMA update that remains is all-reduced
  and must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_stages
import pytest
import torch
import torch.nn.functional as F

from neurolm.data.prepare import prepare_dataset
from neurolm.data.synth import write_corpus
from neurolm.lm.gpt import GPT, GPTConfig
from neurolm.train import STATE_DIR
from neurolm.train.checkpoint import STATE_FILE

COMPARABLE = ("tokenizer_ema", "pretraining", "instruction_tuning")


def stage_inputs(work: Path) -> None:
    """The one-subject HMC store and constant text corpus every multi-process stage test trains on."""
    write_corpus(work / "raw", datasets=["hmc"], subjects=1, seed=0)
    prepare_dataset("hmc", work / "raw" / "hmc", work / "store", progress=False)
    ddp_stages.write_constant_text(work / "text.bin")


def torchrun_two(script: Path, work: Path) -> subprocess.CompletedProcess:
    """``script work`` under a 2-process ``torchrun`` (gloo, one thread each); fails the test on a non-zero exit."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(work)]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The inputs, and every stage trained by one 2-process ``torchrun`` job into ``work/ddp/<stage>``."""
    work = tmp_path_factory.mktemp("ddp")
    stage_inputs(work)
    done = torchrun_two(Path(ddp_stages.__file__), work)
    (work / "torchrun.out").write_text(done.stdout)
    return work


def test_stage_lines_print_on_rank_zero_only(work):
    """Each stage names its text sources once per job, not once per rank (the loop's bar is rank 0's already)."""
    out = (work / "torchrun.out").read_text()
    assert out.count("text embeddings: random") == 1 and out.count("text: the shipped demo corpus") == 1, out
    assert out.count("text: token file") == 2, out  # pretraining and instruction tuning


def train_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


@pytest.mark.parametrize("stage", list(ddp_stages.STAGES))
def test_both_ranks_end_with_the_same_weights_and_buffers(work, stage):
    ranks = [torch.load(work / "ddp" / stage / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    published = torch.load(work / "ddp" / stage / STATE_DIR / STATE_FILE, weights_only=True)["model"]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], published[key]), key
    assert len(train_losses(work / "ddp" / stage)) == ddp_stages.STEPS
    if stage.startswith("tokenizer"):  # the codebook was updated (and, in the real stage, k-means-initialised)
        assert ranks[0]["VQ.quantize.embedding.initted"].item() == 1.0
        assert ranks[0]["VQ.quantize.cluster_size"].sum() > 0


@pytest.mark.parametrize("stage", COMPARABLE)
def test_two_ranks_match_one_process_with_the_same_global_batch(work, stage, one_thread):
    single = work / "single" / stage
    ddp_stages.STAGES[stage][0](work, single)
    one = torch.load(single / STATE_DIR / STATE_FILE, weights_only=True)["model"]
    two = torch.load(work / "ddp" / stage / "rank0.pt", weights_only=True)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=2e-5, msg=lambda m, key=key: f"{key}: {m}")
    torch.testing.assert_close(train_losses(work / "ddp" / stage), train_losses(single), rtol=1e-4, atol=0)


def test_activation_checkpointing_gives_the_same_gradients_and_keeps_less():
    """Recomputed blocks give the same gradients (dropout on: the RNG state is replayed) while the autograd graph
    keeps fewer bytes; no recomputation in eval mode or without grad."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.from_preset("tiny", dropout=0.1, vocab_size=128, n_outputs=128, block_size=64)).train()
    x = torch.randn(2, 32, 64)
    target = torch.randint(0, 128, (2, 32))

    def run(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        gpt.activation_checkpointing = checkpointing
        gpt.zero_grad(set_to_none=True)
        saved: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(gpt.lm_head(gpt(x)).flatten(0, 1), target.flatten())
        loss.backward()
        return {n: p.grad.clone() for n, p in gpt.named_parameters() if p.grad is not None}, sum(saved)

    plain, plain_bytes = run(False)
    recomputed, recomputed_bytes = run(True)
    assert plain.keys() == recomputed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-6, atol=1e-7, msg=name)
    assert recomputed_bytes < 0.7 * plain_bytes
    gpt.eval()  # the flag is still on: inference runs the blocks as usual
    with torch.no_grad():
        checkpointed_eval = gpt(x)
        gpt.activation_checkpointing = False
        torch.testing.assert_close(checkpointed_eval, gpt(x), rtol=0, atol=0)
