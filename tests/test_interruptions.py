"""Kill-and-resume (issue 7.2): ``prepare`` stopped by SIGTERM or SIGKILL, instruction tuning stopped by SIGINT
in-process and by SIGTERM through the CLI; each resumed run must equal an uninterrupted one exactly.

The tokenizer and pretraining stages have their own kill-and-resume tests (tests/test_tokenizer_train.py: CLI and
SIGINT; tests/test_pretrain.py: in-process SIGINT); all stages share the loop's handling of both signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import interrupt_at
from safetensors.torch import load_file, save_file

from neurolm.cli import main
from neurolm.data import prepare as prep
from neurolm.data.channels import channel_indices
from neurolm.data.prepare import JOURNAL, SHARDS, prepare_dataset
from neurolm.data.readers import SPLITS
from neurolm.data.store import MANIFEST, VERIFIED, SplitBuffer, WindowStore, write_split
from neurolm.data.synth import write_corpus
from neurolm.errors import NeuroLMError
from neurolm.instruct.tasks import TASKS
from neurolm.instruct.train import InstructTask, instruct
from neurolm.lock import LOCK_FILE
from neurolm.train import STATE_DIR, read_meta

ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # runs compared must compute alike
STEPS = 4  # instruct: checkpoints and validates after every step (max(1, STEPS // 4))

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neurolm.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _signal_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 120) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds (the child must still be running then); return its status and output."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    log = proc.communicate(timeout=timeout)[0]
    return proc.returncode, log


def _dot_files(root: Path) -> list[str]:
    """Temporary files (dot names) anywhere under ``root``, and a left-over shard directory (not the writer's
    ``.lock`` and the checksum verdicts, which stay)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p not in (root / LOCK_FILE, root / VERIFIED))


# ---------------------------------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Synthetic TUSL: 8 recordings (~0.2 s per file on a busy core)."""
    return write_corpus(tmp_path_factory.mktemp("raw"), datasets=["tusl"], subjects=8, seed=0)["tusl"]


@pytest.fixture(scope="module")
def whole(raw, tmp_path_factory) -> dict:
    return prepare_dataset("tusl", raw, tmp_path_factory.mktemp("whole") / "store", progress=False)


def _journaled(out: Path) -> int:
    """Recordings already written to the store's split files (whole journal lines after the header)."""
    path = out / JOURNAL
    return max(0, path.read_text().count("\n") - 1) if path.is_file() else 0


RESUME_STATE = {JOURNAL, SHARDS} | {f".{s}.{kind}.tmp" for s in SPLITS for kind in ("bin", "idx")}


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 1), (signal.SIGKILL, 2)], ids=["sigterm", "sigkill-2"])
def test_killed_prepare_resumes_to_the_same_store(raw, whole, tmp_path, monkeypatch, sig, workers):
    out = tmp_path / "store"
    cli = _cli("prepare", "tusl", raw, out, "--workers", workers)
    status, log = _signal_when(cli, lambda: _journaled(out) >= 2, sig)
    if sig == signal.SIGTERM:  # a clean stop: the CLI's message and status, no traceback, no temporary file
        assert status == 130 and "neurolm prepare: interrupted; re-run the same command" in log, log
        assert "Traceback" not in log, log
        assert set(_dot_files(out)) <= RESUME_STATE, _dot_files(out)
    else:  # the worst case of a hard kill: a shard half-written, windows written but not journaled, a torn line
        assert status == -signal.SIGKILL, log
        (out / SHARDS / ".0123456789abcdef.1234.tmp.npz").write_bytes(b"half a shard")
        with open(out / ".train.bin.tmp", "ab") as fh:
            fh.write(b"windows of a recording whose journal line never came")
        with open(out / JOURNAL, "a") as fh:
            fh.write('{"file": "edf/half a li')
    done = _journaled(out)
    assert 2 <= done < whole["files"]["found"]
    assert not (out / MANIFEST).exists()
    with pytest.raises(NeuroLMError, match="not a window store"):
        WindowStore(out)

    calls = []
    real = prep.process_recording
    monkeypatch.setattr(prep, "process_recording", lambda *a, **k: calls.append(1) or real(*a, **k))
    handler = signal.getsignal(signal.SIGTERM)
    finished = len(list((out / SHARDS).glob("[!.]*.npz")))  # processed by a worker, not yet in the store
    resumed = prepare_dataset("tusl", raw, out, progress=False)
    assert signal.getsignal(signal.SIGTERM) is handler  # prepare's SIGTERM handler is gone again
    assert len(calls) == whole["files"]["found"] - done - finished  # finished files are not read again
    assert resumed["checksums"] == whole["checksums"] and resumed["splits"] == whole["splits"]
    assert resumed["sources"] == whole["sources"]
    WindowStore(out).verify()
    assert _dot_files(out) == []


# ------------------------------------------------------------------------------------------ instruction tuning


@pytest.fixture(scope="module")
def lm_dir(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task_store(tmp_path_factory) -> Path:
    """A TUSL store of 6 training windows, so 4 steps of 2 revisit windows (encoder-cache hits in the whole run,
    misses after resume), and 2 validation windows, so validating every step stays cheap."""
    task = TASKS["tusl"]
    root = tmp_path_factory.mktemp("tusl")
    rng = np.random.default_rng(0)
    chans = np.array(channel_indices(task.channels))
    for split, n in (("train", 6), ("val", 2)):
        buf = SplitBuffer()
        for i in range(n):
            signal_ = rng.normal(0, 0.3, (len(chans), int(task.window_s * 200))).astype(np.float32)
            buf.add(signal_, chans, i % task.n_classes, i * task.window_s, f"s{i % 2}", f"f{i}.edf")
        write_split(root, split, buf)
    (root / MANIFEST).write_text(json.dumps({"dataset": "tusl", "complete": True, "classes": list(task.classes)}))
    return root


COMMON = {"steps": STEPS, "batch_size": 2, "progress": False, "device": "cpu", "freeze_lm": False}
"""One training run (one task would otherwise tune two candidates, each resumed the same way)."""


@pytest.fixture(scope="module")
def uninterrupted(lm_dir, task_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inst") / "whole"
    instruct(lm_dir, [task_store], out, **COMMON)
    return out


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    assert [k for k in x if not torch.equal(x[k], y[k])] == []


def _train_rows(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


def test_instruct_interrupted_in_process_resumes_bit_identically(lm_dir, task_store, uninterrupted, tmp_path,
                                                                 monkeypatch):
    interrupt_at(monkeypatch, InstructTask, step=1)
    with pytest.raises(KeyboardInterrupt):
        instruct(lm_dir, [task_store], tmp_path, **COMMON)
    monkeypatch.undo()
    assert read_meta(tmp_path)["step"] == 2
    with pytest.raises(NeuroLMError, match="already holds a training run"):  # no silent restart over it
        instruct(lm_dir, [task_store], tmp_path, **COMMON)
    instruct(lm_dir, [task_store], tmp_path, resume=True, **COMMON)
    _same_weights(uninterrupted, tmp_path)
    assert _train_rows(tmp_path) == _train_rows(uninterrupted)  # each step logged once, with the same loss


def test_instruct_resume_with_changed_balance_tasks_is_an_error(lm_dir, task_store, uninterrupted, tmp_path):
    shutil.copytree(uninterrupted, tmp_path / "run")
    with pytest.raises(NeuroLMError, match="--balance-tasks True → False"):
        instruct(lm_dir, [task_store], tmp_path / "run", resume=True, balance_tasks=False, **COMMON)


def test_resume_refuses_a_store_or_a_model_changed_in_place(lm_dir, task_store, tmp_path):
    model, store, out = tmp_path / "lm", tmp_path / "tusl", tmp_path / "run"
    shutil.copytree(lm_dir, model)
    shutil.copytree(task_store, store)
    instruct(model, [store], out, **COMMON)
    instruct(model, [store], out, resume=True, **COMMON)  # unchanged inputs: a finished run resumes to itself
    manifest = json.loads((store / MANIFEST).read_text())
    (store / MANIFEST).write_text(json.dumps(manifest | {"classes": manifest["classes"][::-1]}))  # prepared again
    with pytest.raises(NeuroLMError, match=r"other stage options: --data-contents \['manifest.json sha256:"):
        instruct(model, [store], out, resume=True, **COMMON)
    (store / MANIFEST).write_text(json.dumps(manifest))
    weights = load_file(model / "model.safetensors")
    weights["gpt.lm_head.weight"] = weights["gpt.lm_head.weight"] + 1  # the same path, trained again
    save_file(weights, model / "model.safetensors")
    with pytest.raises(NeuroLMError, match=r"--model-contents 'model.safetensors sha256:\w+' → "):
        instruct(model, [store], out, resume=True, **COMMON)


def test_instruct_cli_sigterm_then_resume_equals_uninterrupted(lm_dir, task_store, uninterrupted, tmp_path):
    args = ["instruct", "--model", lm_dir, "--data", task_store, "--out", tmp_path, "--steps", STEPS,
            "--batch-size", 2, "--device", "cpu", "--no-freeze-lm"]
    status, log = _signal_when(_cli(*args), (tmp_path / STATE_DIR / "meta.json").is_file, signal.SIGTERM)
    assert status == 130, log
    assert "stopped by signal after step" in log and "neurolm instruct: interrupted" in log, log
    stopped_at = read_meta(tmp_path)["step"]
    assert 0 < stopped_at < STEPS, log
    assert main([*map(str, args), "--resume"]) == 0  # in this process: a second child would only add start-up time
    assert read_meta(tmp_path)["step"] == STEPS
    _same_weights(uninterrupted, tmp_path)  # the child computed exactly as this process does (one thread each)


# ------------------------------------------------------------------------------------- one writer per directory


def _stopped_holding_lock(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Wait until ``proc`` holds ``out``'s lock (its pid in the file), then stop it (SIGSTOP) so that it surely
    still holds it while a second process tries."""
    deadline = time.monotonic() + timeout
    while not ((out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text().strip() == str(proc.pid)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)


def _refused_at_once(args: list, holder: subprocess.Popen, out: Path) -> None:
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "neurolm.cli", *map(str, args)], env=ENV, capture_output=True,
                            text=True, timeout=120)
    log = second.stdout + second.stderr
    assert second.returncode == 2, log
    assert f"{out} is in use by another neurolm process (pid {holder.pid})" in log, log
    assert "Traceback" not in log, log
    assert time.monotonic() - started < 60  # at once: start-up only, not a wait for the holder


def test_a_second_training_and_a_requeued_resume_on_one_out_stop_at_once(lm_dir, task_store, uninterrupted,
                                                                        tmp_path):
    args = ["instruct", "--model", lm_dir, "--data", task_store, "--out", tmp_path, "--steps", STEPS,
            "--batch-size", 2, "--device", "cpu", "--no-freeze-lm"]
    first = _cli(*args)
    try:
        _stopped_holding_lock(first, tmp_path)
        _refused_at_once(args, first, tmp_path)
        _refused_at_once([*args, "--resume"], first, tmp_path)  # a scheduler's requeue while the first still runs
    finally:
        first.send_signal(signal.SIGCONT)
    log = first.communicate(timeout=300)[0]
    assert first.returncode == 0, log
    _same_weights(uninterrupted, tmp_path)  # the first run was not disturbed
    assert _train_rows(tmp_path) == _train_rows(uninterrupted)


def test_a_second_prepare_on_one_store_stops_at_once(raw, whole, tmp_path):
    out = tmp_path / "store"
    first = _cli("prepare", "tusl", raw, out)
    try:
        _stopped_holding_lock(first, out)
        _refused_at_once(["prepare", "tusl", raw, out], first, out)
    finally:
        first.send_signal(signal.SIGCONT)
    log = first.communicate(timeout=300)[0]
    assert first.returncode == 0, log
    done = WindowStore(out).manifest
    assert done["checksums"] == whole["checksums"] and done["splits"] == whole["splits"]
