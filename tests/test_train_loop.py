"""The shared training loop on a tiny MLP regression task (CPU, a few seconds per test).

Run as a script, this file is also the child process of the DDP and signal tests:
``python tests/test_train_loop.py {ddp|sigint} OUT_DIR``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from neurolm.errors import NeuroLMError
from neurolm.train import StepSampler, TrainConfig, configure_optimizer, lr_at, read_meta, train
from neurolm.train import checkpoint
from neurolm.train.checkpoint import DAMAGED_DIR, PREVIOUS_DIR, STATE_DIR, STATE_FILE

HERE = Path(__file__).resolve()


class RegressionTask:
    """y = tanh(x·w) + noise from 8 features; an MLP with a LayerNorm and optional dropout fits it in ~30 steps."""

    def __init__(self, cfg: TrainConfig, *, dropout: float = 0.0, interrupt_at: int | None = None,
                 fail_at: int | None = None, step_delay: float = 0.0, progress_file: Path | None = None):
        g = torch.Generator().manual_seed(1234)
        w = torch.randn(8, 1, generator=g)
        x = torch.randn(320, 8, generator=g)
        y = torch.tanh(x @ w) + 0.05 * torch.randn(320, 1, generator=g)
        self.x, self.y, self.x_val, self.y_val = x[:256], y[:256], x[256:], y[256:]
        self.sampler = StepSampler(256, cfg.batch_size, cfg.seed, cfg.grad_accum)
        self.dropout, self.interrupt_at, self.fail_at = dropout, interrupt_at, fail_at
        self.step_delay, self.progress_file = step_delay, progress_file
        self.flops_per_step = 6.0 * 337 * cfg.batch_size * cfg.grad_accum
        self.built: list[nn.Module] = []

    def model(self) -> nn.Module:
        self.built.append(nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.GELU(), nn.Dropout(self.dropout),
                                        nn.Linear(32, 1)))
        return self.built[-1]

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(self.sampler.indices(step, micro, rank, world))
        return {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model, batch, step):
        if step == self.fail_at:
            raise RuntimeError("simulated crash")
        if step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C arrived in the middle of this step
        if self.progress_file is not None:
            # written whole then renamed, so the watching test never reads a half-written file
            part = self.progress_file.with_suffix(".part")
            part.write_text(str(step))
            os.replace(part, self.progress_file)
            time.sleep(self.step_delay)
        pred = model(batch["x"]).float()
        return F.mse_loss(pred, batch["y"]), {"mae": (pred - batch["y"]).abs().mean().item()}

    def evaluate(self, model, step):
        return {"loss": F.mse_loss(model(self.x_val).float(), self.y_val).item()}

    def save(self, model, out_dir: Path) -> None:
        (out_dir / "config.json").write_text(json.dumps({"arch": "mlp", "dropout": self.dropout}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out_dir / "model.safetensors")


def make_cfg(**overrides) -> TrainConfig:
    base = dict(steps=10, batch_size=16, lr=3e-2, min_lr=3e-3, warmup_steps=2, weight_decay=0.1, betas=(0.9, 0.95),
                grad_clip=1.0, eval_every=5, log_every=1, ckpt_every=3)
    return TrainConfig(**{**base, **overrides})


def final_state(out_dir: Path) -> dict:
    return torch.load(out_dir / STATE_DIR / STATE_FILE, weights_only=True)


def assert_state_equal(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


def test_lr_schedule_by_hand():
    cfg = make_cfg(steps=13, warmup_steps=4, lr=1.0, min_lr=0.1)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg) == pytest.approx(1.0)  # the cosine starts at the peak
    assert lr_at(8, cfg) == pytest.approx(0.1 + 0.5 * 0.9)  # half-way through steps 4..12
    assert lr_at(10, cfg) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.75)) * 0.9)
    assert lr_at(12, cfg) == pytest.approx(0.1)  # the last step uses min_lr
    assert lr_at(0, make_cfg(warmup_steps=0, lr=0.5)) == 0.5


def test_config_validation_and_json():
    with pytest.raises(NeuroLMError, match="steps"):
        make_cfg(steps=0)
    with pytest.raises(NeuroLMError, match="min_lr"):
        make_cfg(min_lr=1.0)
    with pytest.raises(NeuroLMError, match="precision"):
        make_cfg(precision="fp16")
    cfg = make_cfg(grad_clip=None)
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_weight_decay_groups():
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "lin": nn.Linear(4, 4), "norm": nn.LayerNorm(4),
                           "conv": nn.Conv1d(4, 4, 3), "frozen": nn.Linear(4, 4)})
    model["frozen"].requires_grad_(False)
    opt = configure_optimizer(model, make_cfg(weight_decay=0.1))
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    m = model
    assert decay == {id(m["emb"].weight), id(m["lin"].weight), id(m["conv"].weight)}
    assert no_decay == {id(m["lin"].bias), id(m["norm"].weight), id(m["norm"].bias), id(m["conv"].bias)}
    assert opt.defaults["fused"] is False  # auto: fused only on CUDA


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_goes_down_and_logs_are_written(tmp_path, precision):
    cfg = make_cfg(steps=40, eval_every=20, log_every=5, ckpt_every=20, precision=precision)
    summary = train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["step"] for r in val_rows] == [20, 40]
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    assert val_rows[-1]["loss"] < 0.1
    for key in ("lr", "loss", "mae", "grad_norm", "time", "steps_per_s", "samples_per_s", "mfu"):
        assert math.isfinite(train_rows[-1][key]), key
    assert train_rows[-1]["lr"] == pytest.approx(cfg.min_lr)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"split", "step", "lr", "loss", "mae", "grad_norm", "mfu"} <= set(header)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + len(rows)
    assert summary["step"] == 40 and summary["val"] == val_rows[-1] and summary["train"] == train_rows[-1]
    # out_dir always holds the loadable model; training_state/ the full state and the config
    weights = load_file(tmp_path / "model.safetensors")
    assert torch.equal(weights["4.weight"], final_state(tmp_path)["model"]["4.weight"])
    assert json.loads((tmp_path / STATE_DIR / "train_config.json").read_text())["precision"] == precision
    assert read_meta(tmp_path)["step"] == 40


def test_grad_accumulation_matches_full_batch(tmp_path):
    full = make_cfg(steps=6, batch_size=16, grad_accum=1, grad_clip=None)
    accum = replace(full, batch_size=8, grad_accum=2)
    train(RegressionTask(full), full, tmp_path / "full", progress=False)
    train(RegressionTask(accum), accum, tmp_path / "accum", progress=False)
    a, b = final_state(tmp_path / "full")["model"], final_state(tmp_path / "accum")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_batch_workers_give_the_same_run(tmp_path):
    cfg = make_cfg(steps=4)
    train(RegressionTask(cfg), cfg, tmp_path / "inline", progress=False)
    with_workers = replace(cfg, num_workers=2)
    train(RegressionTask(with_workers), with_workers, tmp_path / "workers", progress=False)
    assert_state_equal(final_state(tmp_path / "inline"), final_state(tmp_path / "workers"))


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_resume_is_bit_for_bit(tmp_path, how):
    cfg = make_cfg(steps=10, ckpt_every=3, eval_every=4)
    train(RegressionTask(cfg, dropout=0.2), cfg, tmp_path / "straight", progress=False)

    run = tmp_path / "resumed"
    if how == "sigint":  # stops after step 6 (0-based step 5) with a checkpoint
        with pytest.raises(KeyboardInterrupt):
            train(RegressionTask(cfg, dropout=0.2, interrupt_at=5), cfg, run, progress=False)
    else:  # dies inside step 8: the last checkpoint is step 6, the log already has rows for 7
        with pytest.raises(RuntimeError, match="simulated"):
            train(RegressionTask(cfg, dropout=0.2, fail_at=7), cfg, run, progress=False)
    assert read_meta(run)["step"] == 6
    train(RegressionTask(cfg, dropout=0.2), cfg, run, resume=True, progress=False)

    assert_state_equal(final_state(tmp_path / "straight"), final_state(run))
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    straight = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"], r["loss"]) for r in rows] == [(r["split"], r["step"], r["loss"]) for r in straight]


def test_resume_errors_and_finished_run(tmp_path):
    cfg = make_cfg(steps=3)
    with pytest.raises(NeuroLMError, match="nothing to resume"):
        train(RegressionTask(cfg), cfg, tmp_path, resume=True, progress=False)
    first = train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    with pytest.raises(NeuroLMError, match="already holds a training run"):
        train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    task = RegressionTask(cfg)
    assert train(task, cfg, tmp_path, resume=True, progress=False) == first
    assert not task.built  # a finished run returns without building anything


def test_resume_with_changed_stage_options_is_an_error_unless_allowed(tmp_path, caplog):
    """Stage options saved with the checkpoint define the run: another value on resume names it and stops, also for
    a finished run; ``allow_changes`` continues (and saves the new values); more steps are still allowed."""
    cfg = make_cfg(steps=3)
    options = {"text": "/corpora/a.txt", "balance_tasks": True}
    train(RegressionTask(cfg), cfg, tmp_path, progress=False, options=options)
    assert read_meta(tmp_path)["options"] == options
    changed = {"text": "/corpora/b.txt", "balance_tasks": True}
    more = replace(cfg, steps=5)
    for resumed in (cfg, more):
        with pytest.raises(NeuroLMError, match=r"--text '/corpora/a.txt' → '/corpora/b.txt'") as err:
            train(RegressionTask(resumed), resumed, tmp_path, resume=True, progress=False, options=changed)
        assert "balance" not in str(err.value) and "--allow-changes" in str(err.value)
    assert read_meta(tmp_path)["step"] == 3  # nothing trained
    train(RegressionTask(more), more, tmp_path, resume=True, progress=False, options=options)  # same options: fine
    assert read_meta(tmp_path)["step"] == 5
    longer = replace(cfg, steps=6)
    train(RegressionTask(longer), longer, tmp_path, resume=True, progress=False, options=changed, allow_changes=True)
    assert "changed stage options" in caplog.text  # a warning of the neurolm logger (stderr when unconfigured)
    assert read_meta(tmp_path)["options"] == changed and read_meta(tmp_path)["step"] == 6


def test_corrupted_or_half_swapped_checkpoint(tmp_path, caplog):
    cfg = make_cfg(steps=3)
    train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    longer = replace(cfg, steps=5)
    # a crash between the two renames of a checkpoint swap leaves only .training_state.old: it is recovered
    (tmp_path / STATE_DIR).rename(tmp_path / f".{STATE_DIR}.old")
    assert train(RegressionTask(longer), longer, tmp_path, resume=True, progress=False)["step"] == 5
    assert "changed training settings: steps 3 → 5" in caplog.text
    assert [p.name for p in tmp_path.glob(".training_state*")] == [PREVIOUS_DIR]  # step 3's, kept

    def damage(state_dir: Path) -> None:
        path = state_dir / STATE_FILE
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    # a damaged newest checkpoint: the run resumes from the previous one, with a warning
    damage(tmp_path / STATE_DIR)
    even_longer = replace(cfg, steps=7)
    with pytest.warns(UserWarning, match=r"state.pt is corrupted.*resuming from the previous checkpoint \(step 3\)"):
        assert train(RegressionTask(even_longer), even_longer, tmp_path, resume=True, progress=False)["step"] == 7
    whole = tmp_path / "whole"
    train(RegressionTask(even_longer), even_longer, whole, progress=False)
    assert_state_equal(final_state(whole), final_state(tmp_path))  # steps 4 and 5 trained again, identically
    assert (tmp_path / DAMAGED_DIR / STATE_FILE).is_file()
    # both damaged: nothing to fall back to
    damage(tmp_path / STATE_DIR)
    damage(tmp_path / PREVIOUS_DIR)
    with pytest.raises(NeuroLMError, match="corrupted"):
        train(RegressionTask(replace(cfg, steps=9)), replace(cfg, steps=9), tmp_path, resume=True, progress=False)


def test_overwriting_the_published_model_leaves_the_checkpoint_intact(tmp_path):
    cfg = make_cfg(steps=3)
    train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    with open(tmp_path / "model.safetensors", "r+b") as fh:  # what `cp other.safetensors model.safetensors` does
        fh.write(b"\0" * 64)
    longer = replace(cfg, steps=5)
    assert train(RegressionTask(longer), longer, tmp_path, resume=True, progress=False)["step"] == 5
    assert load_file(tmp_path / "model.safetensors").keys() == final_state(tmp_path)["model"].keys()


def test_a_full_disk_while_checkpointing_cleans_up_and_names_the_intact_checkpoint(tmp_path, monkeypatch):
    cfg = make_cfg(steps=7)  # checkpoints at steps 3, 6, 7
    real = torch.save
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: a disk that fills up mid-file
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(NeuroLMError, match=rf"{tmp_path}: could not write the checkpoint of step 6 \(No space left "
                                           rf"on device\); its temporary folder is removed. The checkpoint in "
                                           rf"{tmp_path / STATE_DIR} \(step 3\) is intact"):
        train(RegressionTask(cfg), cfg, tmp_path, progress=False)
    assert not (tmp_path / f".{STATE_DIR}.tmp").exists()
    monkeypatch.undo()
    assert train(RegressionTask(cfg), cfg, tmp_path, resume=True, progress=False)["step"] == 7


def test_non_finite_loss_is_an_error(tmp_path):
    cfg = make_cfg(steps=3, lr=1e30, min_lr=1e30, grad_clip=None, weight_decay=0.0)
    with pytest.raises(NeuroLMError, match="diverged"):
        train(RegressionTask(cfg), cfg, tmp_path, progress=False)


def test_step_sampler_shards_epochs_and_determinism():
    s = StepSampler(20, batch_size=4, seed=3)
    epoch = np.concatenate([s.indices(step) for step in range(5)])
    assert sorted(epoch) == list(range(20))  # one epoch = every item once
    assert not np.array_equal(epoch, np.concatenate([s.indices(step) for step in range(5, 10)]))  # reshuffled
    shards = [s.indices(7, 0, rank, 2) for rank in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert np.array_equal(np.concatenate(shards), s.indices(7))  # the global batch is the same for any world
    assert np.array_equal(StepSampler(20, 4, seed=3).indices(7), s.indices(7))
    assert not np.array_equal(StepSampler(20, 4, seed=4).indices(7), s.indices(7))
    acc = StepSampler(20, 2, seed=3, grad_accum=2)  # 2 micro-batches of 2 = one batch of 4
    assert np.array_equal(np.concatenate([acc.indices(7, m) for m in range(2)]), s.indices(7))
    odd = StepSampler(10, 4, seed=0)  # batches straddle epoch ends without dropping items
    assert sorted(np.concatenate([odd.indices(k) for k in range(5)])) == sorted(list(range(10)) * 2)
    with pytest.raises(NeuroLMError, match="split evenly"):
        s.indices(0, 0, 0, 3)


def test_step_sampler_groups_by_length_without_losing_items():
    lengths = np.random.default_rng(0).choice([76, 120, 248, 1000], size=40)
    s = StepSampler(40, 4, seed=3, lengths=lengths, group=5)  # a group = 5 steps = 20 items; an epoch = 2 groups
    plain = StepSampler(40, 4, seed=3)
    steps, mixed = [s.indices(k) for k in range(10)], [plain.indices(k) for k in range(10)]
    assert sorted(np.concatenate(steps)) == list(range(40))  # every item once per epoch
    assert sorted(np.concatenate(steps[:5])) == sorted(np.concatenate(mixed[:5]))  # a group reorders its own items
    padded = sum(4 * lengths[b].max() for b in steps)
    assert padded < 0.7 * sum(4 * lengths[b].max() for b in mixed)
    ranks = [s.indices(7, 0, r, 2) for r in range(2)]  # ranks split the step's batch
    assert np.array_equal(np.concatenate(ranks), s.indices(7))
    acc = StepSampler(40, 2, seed=3, grad_accum=2, lengths=lengths, group=5)
    assert np.array_equal(np.concatenate([acc.indices(7, m) for m in range(2)]), s.indices(7))
    assert not np.array_equal(StepSampler(40, 4, seed=4, lengths=lengths, group=5).indices(7), s.indices(7))
    with pytest.raises(NeuroLMError, match="39 lengths for 40 items"):
        StepSampler(40, 4, seed=3, lengths=lengths[:39])


def test_ddp_two_processes_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE), "ddp",
           str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k

    cfg = ddp_cfg()
    train(RegressionTask(cfg), cfg, tmp_path / "single", progress=False)
    single = final_state(tmp_path / "single")["model"]
    for k in single:
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-5, atol=1e-6)


def test_sigint_to_a_training_process_leaves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    # its own session, so that the signal goes to the whole process group like a terminal's Ctrl-C (batch workers
    # included)
    proc = subprocess.Popen([sys.executable, str(HERE), "sigint", str(out)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = out / "progress.txt"
    deadline = time.monotonic() + 60
    while not (progress.exists() and int(progress.read_text()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stopped = read_meta(out)["step"]
    assert 3 < stopped < sigint_cfg().steps
    cfg = sigint_cfg()
    summary = train(RegressionTask(cfg), cfg, out, resume=True, progress=False)
    assert summary["step"] == cfg.steps
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, cfg.steps + 1))


def ddp_cfg() -> TrainConfig:
    return make_cfg(steps=5, batch_size=16, grad_accum=2, ckpt_every=5)


def sigint_cfg() -> TrainConfig:
    return make_cfg(steps=200, ckpt_every=1000, eval_every=1000, num_workers=1)


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    if mode == "ddp":
        cfg = ddp_cfg()
        task = RegressionTask(cfg)
        train(task, cfg, out_dir, progress=False)
        torch.save(task.built[-1].state_dict(), out_dir / f"rank{os.environ['RANK']}.pt")  # this rank's own copy
        sys.exit(0)
    if mode == "sigint":
        cfg = sigint_cfg()
        out_dir.mkdir(parents=True)
        try:
            train(RegressionTask(cfg, step_delay=0.02, progress_file=out_dir / "progress.txt"), cfg, out_dir,
                  progress=False)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(1)  # the signal should have stopped it


def test_compiled_training_matches_eager(tmp_path):
    """``compile=True`` (``--compile``) wraps only the training forward/backward: the saved weights keep the module's
    own names and equal an eager run's within float tolerance (inductor on the CPU)."""
    eager, compiled = make_cfg(steps=4, eval_every=4), make_cfg(steps=4, eval_every=4, compile=True)
    train(RegressionTask(eager), eager, tmp_path / "eager", progress=False)
    train(RegressionTask(compiled), compiled, tmp_path / "compiled", progress=False)
    a, b = load_file(tmp_path / "eager" / "model.safetensors"), load_file(tmp_path / "compiled" / "model.safetensors")
    assert set(a) == set(b) and not any("_orig_mod" in k for k in b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
