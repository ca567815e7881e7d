"""Hostile inputs: crafted checkpoints, a second writer on one directory, altered stores (issue 35)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from neurolm.cli import main
from neurolm.data import store as store_module
from neurolm.data.channels import channel_indices
from neurolm.data.prepare import format_summary, prepare_dataset, prepare_task_file
from neurolm.data.provenance import write_training
from neurolm.data.store import MANIFEST, VERIFIED, SplitBuffer, WindowStore, write_split
from neurolm.data.synth import write_corpus
from neurolm.data.taskfile import load_task_file, spec_summary
from neurolm.errors import NeuroLMError
from neurolm.instruct.evaluate import evaluate
from neurolm.instruct.train import instruct
from neurolm.lm import NeuroLM
from neurolm.lock import LOCK_FILE, directory_lock
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig, TokenizerEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


class TouchFile:
    """A pickle payload: unpickling it calls ``open(target, "w")``, i.e. runs code that creates a file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def _reference_pair(directory: Path) -> tuple[Path, Path]:
    """A tiny ``NeuroLM.pt`` + ``VQ.pt`` in the authors' layout, with their training state (optimizer, counters)."""
    torch.manual_seed(0)
    model = NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny",
                                   spectral_input=False).eval()
    lm, vq = directory / "NeuroLM.pt", directory / "VQ.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_reference_checkpoint(lm, vq_path=vq)
    optimizer = torch.optim.AdamW(model.gpt.parameters(), lr=1e-4, betas=(0.9, 0.95))
    for p in model.gpt.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # an optimizer state with tensors, as after training
    for name in (lm, vq):
        raw = torch.load(name, weights_only=True)
        raw.pop("neurolm")  # what the authors' files hold: their keys and training state only
        raw.update(optimizer=optimizer.state_dict(), iter_num=1200, epoch=3)
        torch.save(raw, name)
    return lm, vq


def _with_payload(path: Path, target: Path) -> None:
    raw = torch.load(path, weights_only=True)
    raw["encoder_args" if "encoder_args" in raw else "model_args"]["dropout"] = TouchFile(target)
    torch.save(raw, path)
    assert not target.exists()  # saving does not run it; loading fully would


def test_the_authors_layout_loads_without_opt_in(tmp_path):
    lm, vq = _reference_pair(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning, no full unpickle
        TokenizerEncoder.from_reference_checkpoint(vq)
        NeuroLM.from_reference_checkpoint(lm, vq_path=vq)


@pytest.mark.parametrize("which", ["VQ.pt", "NeuroLM.pt"])
def test_a_code_running_checkpoint_is_refused_with_both_loaders(tmp_path, which):
    lm, vq = _reference_pair(tmp_path)
    crafted, target = tmp_path / which, tmp_path / "pwned"
    _with_payload(crafted, target)
    with pytest.raises(NeuroLMError, match=rf"{crafted}: refused: the file names io.open, .*trust_checkpoint=True"):
        if which == "VQ.pt":
            TokenizerEncoder.from_reference_checkpoint(vq)
        else:
            NeuroLM.from_reference_checkpoint(lm)
    with pytest.raises(NeuroLMError, match=rf"{crafted}: refused"):  # also when it is the vq_path of an LM
        NeuroLM.from_reference_checkpoint(lm, vq_path=vq)
    assert not target.exists()
    # the payload is real: the explicit opt-in runs it
    from neurolm.artifacts import load_torch_checkpoint

    load_torch_checkpoint(crafted, trust_checkpoint=True)
    assert target.exists()


def test_a_garbage_checkpoint_is_named(tmp_path):
    (tmp_path / "VQ.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(NeuroLMError, match=r"VQ.pt: not a readable torch checkpoint \(Unsupported operand"):
        TokenizerEncoder.from_reference_checkpoint(tmp_path / "VQ.pt")


# ------------------------------------------------------------------------------------- one writer per directory

HOLD = """
import sys, time
from neurolm.lock import directory_lock
with directory_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_directory_refuses_a_second_writer_and_a_dead_holder_blocks_nothing(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(NeuroLMError, match=rf"^{tmp_path} is in use by another neurolm process "
                                                rf"\(pid {holder.pid}\)"):
            with directory_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the .lock file and its pid stay behind
        holder.wait()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)
    with directory_lock(tmp_path):  # the kernel released the dead process's lock
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with directory_lock(tmp_path):  # this process may nest its own lock
            pass
        with pytest.raises(NeuroLMError, match=f"in use by another neurolm process \\(pid {os.getpid()}\\)"):
            _holder_fails(tmp_path)


def _holder_fails(directory: Path) -> None:
    """Another process trying the lock this one holds: re-raise its error here."""
    proc = subprocess.run([sys.executable, "-c", HOLD, str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    raise NeuroLMError(proc.stderr.strip().splitlines()[-1])


def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    holder = _holder(tmp_path)
    try:
        monkeypatch.setenv("RANK", "1")
        with directory_lock(tmp_path):  # the other ranks write nothing the lock protects
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# ------------------------------------------------------------------------------------------ verified stores


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    raw = write_corpus(tmp_path_factory.mktemp("raw"), datasets=["tusl"], subjects=6, seed=0)["tusl"]
    out = tmp_path_factory.mktemp("store") / "tusl"
    prepare_dataset("tusl", raw, out, progress=False)
    return out


@pytest.fixture(scope="module")
def model_dirs(model, tmp_path_factory) -> tuple[Path, Path]:
    tok, lm = tmp_path_factory.mktemp("tok"), tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    NeuralTokenizer(TokenizerConfig.from_preset("tiny")).save_pretrained(tok)
    model.save_pretrained(lm)
    return tok, lm


def _change_a_byte(store: Path) -> str:
    with open(store / "train.bin", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return "train.bin: checksum mismatch"


def _delete_a_split_file(store: Path) -> str:
    (store / "val.npz").unlink()
    return "val.npz: missing"


def _truncate_a_split_file(store: Path) -> str:
    with open(store / "test.bin", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 8)
    return r"test.bin: \d+ bytes, the manifest says"


def _truncate_the_manifest(store: Path) -> str:
    text = (store / MANIFEST).read_bytes()
    (store / MANIFEST).write_bytes(text[: len(text) // 2])
    return "manifest.json: damaged"


DAMAGE = [_change_a_byte, _delete_a_split_file, _truncate_a_split_file, _truncate_the_manifest]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_store_is_refused_by_every_stage(prepared, model_dirs, tmp_path, damage, capsys):
    store = tmp_path / "store"
    shutil.copytree(prepared, store)
    WindowStore(store)  # the intact copy opens
    message = damage(store)
    tok, lm = model_dirs
    commands = {
        "train-tokenizer": ["--data", store, "--out", tmp_path / "t", "--steps", 1, "--device", "cpu"],
        "pretrain": ["--tokenizer", tok, "--data", store, "--out", tmp_path / "p", "--steps", 1, "--device", "cpu"],
        "instruct": ["--model", lm, "--data", store, "--out", tmp_path / "i", "--steps", 1, "--device", "cpu"],
        "evaluate": ["--model", lm, "--data", store, "--out", tmp_path / "e", "--device", "cpu"],
        "tokenize": ["--tokenizer", tok, store, "--out", tmp_path / "tokens.npz", "--device", "cpu"],
    }
    for command, args in commands.items():
        assert main([command, *map(str, args)]) == 2, command
        err = capsys.readouterr().err
        assert re.search(rf"neurolm {command}: error: {store}/{message}", err), (command, err)


def test_verification_hashes_once_and_again_only_what_changed(prepared, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(prepared, store, ignore=shutil.ignore_patterns(VERIFIED))
    hashed = []
    real = store_module.sha256_file
    monkeypatch.setattr(store_module, "sha256_file", lambda path, *a: hashed.append(path.name) or real(path, *a))
    WindowStore(store)
    assert sorted(hashed) == sorted(WindowStore(store, verify=False).manifest["checksums"])  # one pass
    hashed.clear()
    WindowStore(store)  # unchanged: the cached verdict holds
    assert hashed == []
    os.utime(store / "val.bin")  # touched (same bytes): that file only is hashed again, and passes
    WindowStore(store)
    assert hashed == ["val.bin"]
    hashed.clear()
    _change_a_byte(store)
    with pytest.raises(NeuroLMError, match="train.bin: checksum mismatch"):
        WindowStore(store)


def test_a_read_only_store_keeps_its_verdicts_in_the_user_cache(prepared, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(prepared, store, ignore=shutil.ignore_patterns(VERIFIED))
    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)  # as if read-only (tests may run as root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    WindowStore(store)
    assert not (store / VERIFIED).exists()
    assert len(list((tmp_path / "cache" / "neurolm" / "verified").glob("*.json"))) == 1
    hashed = []
    monkeypatch.setattr(store_module, "sha256_file", lambda path, *a: hashed.append(path.name))
    WindowStore(store)
    assert hashed == []


# ------------------------------------------------------------------------------ one task name, one definition

WORKLOAD = Path(__file__).resolve().parents[1] / "examples" / "tasks" / "workload.toml"


def _own_task_store(root: Path, *, swapped: bool) -> Path:
    """A small store of the task file ``workload.toml`` (task ``eegmat``), its classes swapped if ``swapped``."""
    root.mkdir()
    text = WORKLOAD.read_text()
    if swapped:
        text = text.replace('classes = ["rest", "arithmetic"]', 'classes = ["arithmetic", "rest"]')
    (root.parent / f"{root.name}.toml").write_text(text)
    spec = load_task_file(root.parent / f"{root.name}.toml")
    rng = np.random.default_rng(0)
    chans = np.array(channel_indices(spec.dataset.channels))
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        buf = SplitBuffer()
        for i in range(n):
            buf.add(rng.normal(0, 0.3, (len(chans), 800)).astype(np.float32), chans, i % 2, 4.0 * i, f"s{i}", f"f{i}")
        write_split(root, split, buf)
    (root / MANIFEST).write_text(json.dumps({"dataset": spec.name, "complete": True,
                                             "classes": list(spec.dataset.classes), "task": spec_summary(spec)}))
    return root


def test_two_definitions_of_one_task_are_refused_naming_both(model_dirs, tmp_path):
    a = _own_task_store(tmp_path / "a", swapped=False)
    b = _own_task_store(tmp_path / "b", swapped=True)
    _, lm = model_dirs
    both = rf"task 'eegmat' has two different definitions: {a}/manifest.json and {b}/manifest.json"
    with pytest.raises(NeuroLMError, match=both):
        instruct(lm, [a, b], tmp_path / "run", steps=1, batch_size=2, progress=False, device="cpu",
                 freeze_lm=False)
    # a model tuned on A's definition does not score B's windows
    tuned = tmp_path / "tuned"
    shutil.copytree(lm, tuned)
    write_training(tuned, [WindowStore(a)], tuned=True)
    with pytest.raises(NeuroLMError, match=rf"task 'eegmat' has two different definitions: {b}/manifest.json and "
                                           rf"the one the model was tuned on \({tuned}/training.json"):
        evaluate(tuned, [b], tmp_path / "eval", progress=False, device="cpu")
    assert not (tmp_path / "eval" / "metrics.json").exists()


# ------------------------------------------------------------------------------------------ checkpoints, stores


def test_prepare_refuses_to_replace_a_finished_store_of_other_inputs(prepared, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(prepared, store)
    raw = write_corpus(tmp_path / "raw", datasets=["tusl"], subjects=6, seed=1)["tusl"]  # other recordings
    before = (store / MANIFEST).read_bytes()
    assert main(["prepare", "tusl", str(raw), str(store), "--workers", "1"]) == 2
    assert f"{store} holds a finished tusl store prepared from other files or settings; pass --overwrite" in \
        capsys.readouterr().err
    assert (store / MANIFEST).read_bytes() == before
    assert main(["prepare", "tusl", str(raw), str(store), "--workers", "1", "--overwrite"]) == 0
    assert WindowStore(store).manifest["fingerprint"] != json.loads(before)["fingerprint"]


# ----------------------------------------------------------------------------- bad values: errors, not tracebacks

HMC_LABELS = ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EOG E1-M2"]


def _ask(capsys, *args) -> str:
    assert main(["ask", *map(str, args)]) == 2, args
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_model_with_a_nan_weight_is_refused_naming_the_file(model_dirs, tmp_path, capsys):
    _, lm = model_dirs
    bad = tmp_path / "nan"
    shutil.copytree(lm, bad)
    weights = load_file(bad / "model.safetensors")
    weights["gpt.lm_head.weight"][3, 5] = float("nan")
    save_file(weights, bad / "model.safetensors")
    with pytest.raises(NeuroLMError, match=rf"{bad}/model.safetensors: weights hold NaN or infinite values \(1 "
                                           r"tensor\(s\): gpt.lm_head.weight\)"):
        NeuroLM.from_pretrained(bad)
    err = _ask(capsys, bad, tmp_path / "night.edf", "--task", "hmc")
    assert "model.safetensors: weights hold NaN" in err


def test_ask_checks_its_numbers_and_the_plot_folder_before_the_work(model_dirs, tmp_path, edf_writer, capsys):
    _, lm = model_dirs
    edf = edf_writer(tmp_path / "night.edf", HMC_LABELS, 256.0, 100.0)
    common = [lm, edf, "--task", "hmc", "--device", "cpu"]
    assert "--batch-size must be at least 1, got 0" in _ask(capsys, *common, "--every", 30, "--batch-size", 0)
    assert "--every must be > 0 s and finite, got nan" in _ask(capsys, *common, "--every", "nan")
    assert "--every must be > 0 s and finite, got inf" in _ask(capsys, *common, "--every", "inf")
    assert "--start must be ≥ 0 s and finite, got nan" in _ask(capsys, *common, "--start", "nan")
    missing = tmp_path / "no" / "such" / "folder" / "plot.png"
    assert f"--plot {missing}: no folder {missing.parent}" in _ask(capsys, *common, "--every", 30, "--plot", missing)


@pytest.mark.parametrize("name, content", [
    ("garbage.txt", b"\xf7\x00\x13 not text at all"), ("garbage.vhdr", b"\xf9\x13\xd3 SECRET-TOKEN-12345"),
    ("garbage.mat", b"MATLAB 5.0 MAT-file garbage"), ("garbage.data", b"\x00\x01\x02\x03" * 64),
    ("garbage.fif", b"\x00" * 256), ("garbage.edf", b"0       garbage header" * 20)])
def test_an_unreadable_recording_is_named_not_a_traceback(model_dirs, tmp_path, capsys, name, content):
    _, lm = model_dirs
    (tmp_path / name).write_bytes(content)
    err = _ask(capsys, lm, tmp_path / name, "--task", "hmc", "--device", "cpu")
    assert f"{tmp_path / name}: " in err
    assert "SECRET-TOKEN" not in err  # the file's bytes are not echoed


def test_a_directory_of_the_wrong_kind_is_named_by_ask_and_evaluate(model_dirs, prepared, tmp_path, capsys):
    tok, _ = model_dirs
    err = _ask(capsys, tok, tmp_path / "night.edf", "--task", "hmc", "--device", "cpu")
    assert f"{tok} is a neural tokenizer directory (neurolm train-tokenizer wrote it); ask and evaluate need an " \
           "instruction-tuned model" in err and "'gpt'" not in err
    assert main(["evaluate", "--model", str(prepared), "--data", str(prepared), "--out", str(tmp_path / "e")]) == 2
    assert f"{prepared} is a window store (neurolm prepare wrote it)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ task files and label tables


@pytest.fixture(scope="module")
def table_raw(tmp_path_factory) -> Path:
    """Four 30 s EDF recordings and the start of a CSV label table."""
    import mne
    from test_taskfile import synthetic_raw

    root = tmp_path_factory.mktemp("table")
    for s in range(4):
        mne.export.export_raw(root / f"rec{s}.edf", synthetic_raw(30, 30 + s), fmt="edf", verbose="error")
    return root


def _csv_task(tmp_path: Path, raw: Path, rows: list[str], *, file: str = "labels.csv", glob: str = "",
              encoding: str = "utf-8") -> Path:
    from test_taskfile import write_task

    (raw / "labels.csv").write_bytes("\n".join(["file,start,stop,label", *rows]).encode(encoding) + b"\n")
    extra = f'[recordings]\nglob = "{glob}"\n' if glob else ""
    return write_task(tmp_path / "t.toml", "mi_csv", f'source = "csv"\nfile = "{file}"', extra=extra)


GOOD = [f"rec{s}.edf,{a},{a + 12},{c}" for s in range(4) for a, c in ((0, "left"), (12, "right"))]


def test_label_tables_and_globs_stay_below_raw_dir(table_raw, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("file,start,stop,label\nTOP-SECRET-LINE,0,1,left\n")
    for file in (str(secret), "../" + secret.name, f"sub/../../{secret.name}"):
        task = _csv_task(tmp_path, table_raw, GOOD, file=file)
        with pytest.raises(NeuroLMError, match=r"labels.file = .*: outside RAW_DIR") as err:
            prepare_task_file(task, table_raw, tmp_path / "out", progress=False)
        assert "TOP-SECRET" not in str(err.value)
    for glob in ("../*.edf", "/etc/*.edf"):
        task = _csv_task(tmp_path, table_raw, GOOD, glob=glob)
        with pytest.raises(NeuroLMError, match=r"recordings.glob = .*: must stay below RAW_DIR"):
            prepare_task_file(task, table_raw, tmp_path / "out", progress=False)


@pytest.mark.parametrize("rows, match", [
    (GOOD[:-1] + ["rec3.edf,24,12,right"], r"labels.csv: line 9: start 24 s, stop 12 s: needs 0 ≤ start < stop"),
    (GOOD + ["rec1.edf,10,14,left"], r"labels.csv: lines 5 and 10: rec1 12-24 s \('right'\) and 10-14 s \('left'\) "
                                     r"overlap with different labels"),
    (GOOD + ["rec2.edf,1,2,right"], r"lines 6 and 10: rec2 0-12 s \('left'\) and 1-2 s \('right'\) overlap"),
    (GOOD + ["rec0.edf,nan,3,left"], r"line 10: start nan s, stop 3 s: needs 0 ≤ start < stop"),
])
def test_csv_label_rows_that_cannot_both_be_true_are_refused_with_their_lines(table_raw, tmp_path, rows, match):
    task = _csv_task(tmp_path, table_raw, rows)
    with pytest.raises(NeuroLMError, match=match):
        prepare_task_file(task, table_raw, tmp_path / "out", progress=False)


def test_csv_label_tables_list_unlabelled_recordings_and_refuse_other_encodings(table_raw, tmp_path):
    task = _csv_task(tmp_path, table_raw, [r for r in GOOD if not r.startswith("rec2")])
    with pytest.warns(UserWarning, match=r"labels.csv: no rows for 1 of the 4 recordings \(they are skipped\): rec2"):
        prepare_task_file(task, table_raw, tmp_path / "out", progress=False)
    task = _csv_task(tmp_path, table_raw, [*GOOD[:-1], "rec3.edf,12,24,rïght"], encoding="latin-1")
    with pytest.raises(NeuroLMError, match=r"labels.csv: not UTF-8 text \(byte \d+\); save the label table as UTF-8"):
        prepare_task_file(task, table_raw, tmp_path / "out2", progress=False)


def test_a_class_missing_from_a_split_of_an_own_task_is_warned(table_raw, tmp_path):
    task = _csv_task(tmp_path, table_raw, [r for r in GOOD if "right" not in r or r.startswith("rec0")])
    m = prepare_task_file(task, table_raw, tmp_path / "out", progress=False)
    missing = [w for w in m["warnings"] if re.fullmatch(r"split '(train|val|test)' has no 'right' window .*", w)]
    assert len(missing) >= 2  # 'right' is in one recording only, so in one split only
    assert f"warning: {missing[0]}" in format_summary(m)
