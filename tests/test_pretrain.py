"""The pretraining stage end to end on a small synthetic HMC store: CLI, report, baseline, save/load, resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import interrupt_at
from safetensors.torch import load_file

from neurolm.cli import main
from neurolm.data.batch import collate_windows
from neurolm.data.prepare import prepare_dataset
from neurolm.data.store import WindowStore
from neurolm.data.synth import write_corpus
from neurolm.lm import NeuroLM
from neurolm.lm import pretrain as stage
from neurolm.lm.pretrain import (
    PretrainModel,
    PretrainTask,
    evaluate_eeg,
    pretrain,
    target_code_counts,
    unigram_loss,
)
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.tokenizer.train import train_tokenizer
from neurolm.train import evenly_spaced, read_meta

CODES = 16  # a small codebook: k-means on one batch gives codes that every test window uses


@pytest.fixture(scope="module", autouse=True)
def small_validation():
    """Validation and unigram subsets of a few windows: every evaluation scores them through the 50k-row head."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "VAL_WINDOWS", 16)
        mp.setattr(stage, "UNIGRAM_WINDOWS", 64)
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pre")
    write_corpus(tmp, datasets=["hmc"], seed=0)
    prepare_dataset("hmc", tmp / "hmc", tmp / "p", progress=False)
    return tmp / "p"


@pytest.fixture(scope="module")
def tokenizer_dir(store, tmp_path_factory) -> Path:
    """An untrained tiny tokenizer whose codebook is k-means-initialised on training windows (one training-mode
    forward): cheap, and its codes are spread over the codebook, unlike a random codebook's."""
    torch.manual_seed(0)
    tok = NeuralTokenizer(TokenizerConfig.from_preset("tiny", codebook_size=CODES))
    train = WindowStore(store).split("train")
    tok.train()
    tok(collate_windows([train[i] for i in range(0, len(train), 16)]))
    out = tmp_path_factory.mktemp("tok")
    tok.eval().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def run(store, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    args = ["pretrain", "--tokenizer", str(tokenizer_dir), "--data", str(store), "--out", str(out), "--steps", "4",
            "--batch-size", "2"]
    assert main(args) == 0
    return out, args


def test_cli_writes_model_logs_and_report(run):
    out, _ = run
    for name in ("config.json", "model.safetensors", "report.json", "log.csv", "log.jsonl", "loss_curves.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and report["size"] == "tiny" and report["val_split"] == "val"
    val = report["val"]
    assert math.isclose(val["eeg_perplexity"], math.exp(val["eeg_loss"]), rel_tol=1e-9)
    assert math.isclose(val["eeg_gain"], 1 - val["eeg_loss"] / val["unigram_loss"], rel_tol=1e-9)
    assert 0 < val["unigram_loss"] <= math.log(CODES) + 1e-6  # never worse than uniform over the codes
    assert "bidirectional" in report["caveat"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert all({"eeg_loss", "eeg_accuracy", "eeg_perplexity", "text_loss", "mfu"} <= set(r) for r in train_rows)
    # one backward of the summed objectives: the logged loss is their sum
    assert all(math.isclose(r["loss"], r["eeg_loss"] + r["text_loss"], rel_tol=1e-5) for r in train_rows)


def test_unigram_baseline_by_hand():
    train = torch.tensor([3.0, 1.0, 0.0, 0.0])
    val = torch.tensor([1.0, 0.0, 0.0, 1.0])
    p = (train + 1) / (train.sum() + 4)  # Laplace: (4, 2, 1, 1) / 8
    assert math.isclose(unigram_loss(train, val), float(-(torch.log(p[0]) + torch.log(p[3])) / 2), rel_tol=1e-12)


def test_saved_model_gives_the_same_eeg_loss(run, store, tokenizer_dir):
    out, _ = run
    loaded = NeuroLM.from_pretrained(out)
    report = json.loads((out / "report.json").read_text())
    training = json.loads((out / "training.json").read_text())  # what `ask` and `evaluate` read back
    assert training["tuned_tasks"] == [] and list(training["datasets"]) == [WindowStore(store).dataset]
    val = WindowStore(store).split("val")
    # the report's validation subset: evenly spaced windows, batches of --batch-size 2
    idx = evenly_spaced(len(val), stage.VAL_WINDOWS)
    batches = [collate_windows([val[i] for i in idx[s : s + 2]]) for s in range(0, len(idx), 2)]
    assert report["eeg_loss_outputs"] == "codebook only"  # the tiny default
    got = evaluate_eeg(loaded, batches, torch.device("cpu"), codes_only=True)
    assert math.isclose(got["eeg_loss"], report["val"]["eeg_loss"], rel_tol=1e-5)
    assert math.isclose(got["eeg_accuracy"], report["val"]["eeg_accuracy"], rel_tol=1e-5)
    # the frozen tokenizer travels inside the model unchanged: same codes as the tokenizer directory
    tok = NeuralTokenizer.from_pretrained(tokenizer_dir)
    assert torch.equal(loaded.tokenizer.tokenize(batches[0]), tok.tokenize(batches[0]))
    counts = target_code_counts(tok, batches, torch.device("cpu"))
    assert counts.sum() == sum(int(b.mask.sum()) - int(b.n_chans.sum()) for b in batches)


def test_resume_after_interruption_gives_identical_weights(run, store, tokenizer_dir, tmp_path, monkeypatch):
    out, _ = run
    interrupt_at(monkeypatch, PretrainTask, step=1)
    common = {"steps": 4, "batch_size": 2, "progress": False, "device": "cpu"}
    with pytest.raises(KeyboardInterrupt):
        pretrain(tokenizer_dir, [store], tmp_path, **common)
    monkeypatch.undo()
    assert read_meta(tmp_path)["step"] == 2
    pretrain(tokenizer_dir, [store], tmp_path, resume=True, **common)
    whole, resumed = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert set(whole) == set(resumed) and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_resume_with_another_stage_option_names_it(run, tmp_path, capsys):
    """``--text``, ``--init-gpt2``, ``--no-spectral-input``… define the run: resuming with another value is an error
    naming each (also once the run has finished), unless ``--allow-changes``."""
    out, args = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    args = [copy if a == str(out) else a for a in args]
    corpus = tmp_path / "other.txt"
    corpus.write_text("another corpus, long enough for a crop or two. " * 200)
    assert main([*map(str, args), "--resume", "--text", str(corpus), "--no-spectral-input"]) == 2
    err = capsys.readouterr().err
    assert "--text None → " in err and "--spectral-input True → False" in err and "--allow-changes" in err
    assert main([*map(str, args), "--resume", "--steps", "5", "--text", str(corpus), "--allow-changes"]) == 0
    assert read_meta(copy)["step"] == 5 and read_meta(copy)["options"]["text"] == str(corpus.resolve())


def test_encoder_runs_once_per_step(tokenizer_dir, store):
    lm = NeuroLM.from_tokenizer(NeuralTokenizer.from_pretrained(tokenizer_dir), "tiny")
    calls = []
    lm.tokenizer.VQ.encoder.register_forward_hook(lambda *_: calls.append(1))
    train = WindowStore(store).split("train")
    eeg = collate_windows([train[0], train[1]])
    out = PretrainModel(lm)(eeg, torch.randint(0, 50257, (2, 17)))
    out["loss"].backward()
    assert len(calls) == 1
    assert torch.isclose(out["loss"].detach(), out["eeg_loss"] + out["text_loss"])


def test_errors(store, tokenizer_dir, tmp_path):
    base = ["pretrain", "--tokenizer", str(tokenizer_dir), "--data", str(store), "--steps", "1"]
    assert main(base + ["--out", str(tmp_path / "a"), "--text", str(tmp_path / "missing.bin")]) == 2
    assert main(["pretrain", "--tokenizer", str(tmp_path / "none"), "--data", str(store),
                 "--out", str(tmp_path / "b")]) == 2


@pytest.mark.slow
def test_pretraining_beats_the_unigram_baseline(store, tmp_path):
    """The acceptance run: a trained tiny tokenizer, then a few hundred tiny pretraining steps on CPU.

    "Clearly below" = at least 2 % below the unigram cross-entropy on held-out windows. On the demo corpus the gap
    after 300 steps is 0.196 nats/token (3.3 %) with a standard error of 0.013 over the 256 validation windows."""
    train_tokenizer([store], tmp_path / "tok", steps=60, batch_size=16, progress=False, device="cpu")
    report = pretrain(tmp_path / "tok", [store], tmp_path / "lm", steps=300, progress=False, device="cpu").report
    val = report["val"]
    assert val["eeg_loss"] <= 0.98 * val["unigram_loss"], val


def test_run_options_reach_the_loop_and_the_model(store, tokenizer_dir, tmp_path, monkeypatch):
    """``--precision``, ``--grad-accum`` and ``--activation-checkpointing`` (shared by every training command) land in
    the run's saved config and change what runs: blocks are recomputed through ``torch.utils.checkpoint``."""
    from neurolm.lm import gpt

    calls = []
    real = gpt.checkpoint
    monkeypatch.setattr(gpt, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "opts"
    assert main(["pretrain", "--tokenizer", str(tokenizer_dir), "--data", str(store), "--out", str(out), "--steps",
                 "2", "--batch-size", "2", "--grad-accum", "2", "--precision", "fp32",
                 "--activation-checkpointing"]) == 0
    cfg = json.loads((out / "training_state" / "train_config.json").read_text())
    assert (cfg["grad_accum"], cfg["precision"], cfg["activation_checkpointing"]) == (2, "fp32", True)
    n_layer = NeuroLM.from_pretrained(out).config.gpt.n_layer
    assert len(calls) == 2 * 2 * 2 * n_layer  # steps × micro-batches × (EEG + text forward) × blocks


def test_pretraining_flops_count_each_windows_real_tokens_and_the_head_rows_it_scores(model):
    """The ``flops`` behind pretraining's ``mfu``: each window at its own token count through the encoder and the
    LM (two window lengths in one batch: the shorter is not counted at the longer's), the head only at the
    positions with a next-second target, over the codebook's rows alone with ``codes_only``."""
    import copy

    import numpy as np

    from neurolm.lm.flops import TokenCosts
    from neurolm.lm.pretrain import PretrainModel

    lm = copy.deepcopy(model).train()
    rng = np.random.default_rng(0)
    items = [{"signal": rng.normal(0, 0.2, (c, 800)).astype(np.float32), "chans": np.arange(c)} for c in (3, 5)]
    eeg = collate_windows(items, 276)
    text = torch.randint(0, 50257, (2, 17), generator=torch.Generator().manual_seed(0))
    c, cfg = TokenCosts.of(lm), lm.config
    tokens = [12, 20]  # 3 and 5 channels × 4 seconds
    assert eeg.mask.sum(1).tolist() == tokens
    for codes_only, rows in ((False, cfg.gpt.n_outputs), (True, cfg.tokenizer.codebook_size)):
        out = PretrainModel(lm, codes_only)(eeg, text)
        targets = int(lm.eeg_forward(eeg)["tokens"])
        assert targets == 9 + 15  # every channel's seconds 1..3 predict the next
        expected = (sum(t * (c.block + c.eeg_input + c.encoder) + t * t * (c.attention + c.encoder_attention)
                        for t in tokens) + targets * c.head * rows / cfg.gpt.n_outputs
                    + 2 * (16 * c.block + 16 * 16 * c.attention + 16 * c.head))
        assert out["flops"] == pytest.approx(expected, rel=1e-12)
