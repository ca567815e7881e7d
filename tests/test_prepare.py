"""prepare: bad files are reported and skipped, interrupted runs resume, splits are seeded and subject-disjoint."""

import json

import numpy as np
import pytest

from neurolm.data import prepare as prep
from neurolm.data.datasets import TUH_CHANNELS, split_subjects
from neurolm.data.prepare import prepare_dataset
from neurolm.data.readers.base import Recording
from neurolm.data.store import WindowStore
from neurolm.data.windows import cut_windows
from neurolm.errors import NeuroLMError

TUH_LABELS = [f"EEG {c}-REF" for c in TUH_CHANNELS]


def _tuab_tree(root, writer, n_subjects=4, seconds=32):
    for split in ("train", "eval"):
        for cls in ("normal", "abnormal"):
            for k in range(n_subjects):
                subj = f"aa{split[:2]}{cls[:2]}{k:02d}"
                writer(root / "edf" / split / cls / "01_tcp_ar" / f"{subj}_s001_t000.edf", TUH_LABELS, 250.0,
                       seconds, seed=hash(subj) % 1000)
    return root


def test_cut_windows():
    n_times = 2000
    assert cut_windows(n_times, 0, 10, 4, 2, 200) == [0, 400, 800, 1200]
    assert cut_windows(n_times, -1, 4, 5, None, 200) == []  # needs context before the recording: dropped
    assert cut_windows(n_times, 5, 10.004, 5, None, 200) == [1000]  # end rounding slack


def test_bad_files_are_reported_and_do_not_stop_the_others(tmp_path, edf_writer):
    root = _tuab_tree(tmp_path / "raw", edf_writer, n_subjects=2)
    bad = root / "edf" / "train" / "normal" / "01_tcp_ar"
    (bad / "empty_s001_t000.edf").write_bytes(b"")
    good = (bad / "aatrno00_s001_t000.edf").read_bytes()
    (bad / "trunc_s001_t000.edf").write_bytes(good[:3000])  # header cut short
    edf_writer(bad / "missing_s001_t000.edf", TUH_LABELS[:20], 250.0, 32)
    edf_writer(bad / "slow_s001_t000.edf", TUH_LABELS, 100.0, 32)

    m = prepare_dataset("tuab", root, tmp_path / "store", progress=False)
    reasons = {f["file"].split("/")[-1]: f["reason"] for f in m["files"]["skipped"]}
    assert "file is empty" in reasons["empty_s001_t000.edf"]
    assert "cannot be read" in reasons["trunc_s001_t000.edf"]
    assert "missing required channel(s) PZ, T1, T2" in reasons["missing_s001_t000.edf"]
    assert "100 Hz is too low" in reasons["slow_s001_t000.edf"]
    assert m["files"]["ok"] == 8 and m["files"]["found"] == 12
    store = WindowStore(tmp_path / "store")
    assert sum(len(store.split(s)) for s in store.splits) == 8 * 3  # 32 s → three 10 s windows per file


def test_nan_recording_is_reported_in_pretraining(tmp_path):
    import mne

    info = mne.create_info(["Fp1", "Fp2", "Cz", "Oz", "EOG"], 256.0, ["eeg"] * 4 + ["eog"])
    rng = np.random.default_rng(0)
    good = rng.normal(0, 20e-6, (5, 256 * 70))
    (tmp_path / "raw").mkdir()
    mne.io.RawArray(good, info, verbose="error").save(tmp_path / "raw" / "good_raw.fif", verbose="error")
    bad = good.copy()
    bad[2, 500:600] = np.nan
    mne.io.RawArray(bad, info, verbose="error").save(tmp_path / "raw" / "bad_raw.fif", verbose="error")
    m = prepare_dataset("pretrain", tmp_path / "raw", tmp_path / "store", progress=False)
    assert m["files"]["skipped"] == [{"file": "bad_raw.fif",
                                      "reason": "NaN/Inf samples in channel(s) Cz (100 of 17920 samples)"}]
    item = WindowStore(tmp_path / "store").split("train")[0]
    assert item["signal"].shape == (4, 64 * 200)  # 4 channels → 1024/4 = 256 s, capped at 64 s
    assert item["chans"].tolist() == [0, 2, 41, 81]  # FP1 FP2 CZ OZ; the EOG channel is dropped


def test_manifest_counts_match_store_and_splits_are_subject_disjoint(tmp_path, edf_writer):
    root = _tuab_tree(tmp_path / "raw", edf_writer, n_subjects=5)
    m = prepare_dataset("tuab", root, tmp_path / "store", progress=False)
    store = WindowStore(tmp_path / "store")
    store.verify()
    subjects = {}
    for split in ("train", "val", "test"):
        sp = store.split(split)
        assert len(sp) == m["splits"][split]["windows"] > 0
        counts = np.bincount(sp.labels, minlength=2)
        assert counts.tolist() == [m["splits"][split]["classes"][c] for c in ("normal", "abnormal")]
        subjects[split] = set(sp.subjects)
        item = sp[0]
        assert item["signal"].shape == (23, 2000) and item["signal"].dtype == np.float32
        assert item["chans"].tolist()[:2] == [0, 2]  # FP1, FP2
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
    assert all(s.startswith("aaev") for s in subjects["test"])  # TUAB eval directory = test
    assert m["preprocessing"]["mains"] == 60.0 and m["preprocessing"]["sfreq"] == 200.0


def test_split_is_deterministic_for_a_seed():
    recs = [Recording(f"f{i}.edf", f"s{i % 10}") for i in range(40)]
    a, b, c = split_subjects(recs, 1, 0.2), split_subjects(recs, 1, 0.2), split_subjects(recs, 2, 0.2)
    assert a == b and a != c
    val_subjects = {r.subject for r in recs if a[r.path] == "val"}
    assert len(val_subjects) == 2


class _Killed(BaseException):
    """Stands for SIGINT/SIGKILL mid-run: a BaseException, so the per-file error handling does not catch it."""


def test_interrupted_prepare_resumes_to_the_same_store(tmp_path, edf_writer, monkeypatch):
    root = _tuab_tree(tmp_path / "raw", edf_writer, n_subjects=2)
    prepare_dataset("tuab", root, tmp_path / "full", progress=False)

    calls = {"n": 0, "kill": True}
    real = prep.process_recording

    def interrupt_after_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 and calls["kill"]:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "process_recording", interrupt_after_three)
    try:  # pytest.raises only takes Exception subclasses
        prepare_dataset("tuab", root, tmp_path / "resumed", progress=False)
    except _Killed:
        pass
    else:
        pytest.fail("the run was not interrupted")
    calls["kill"] = False
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(NeuroLMError, match="did not finish|not a window store"):
        WindowStore(tmp_path / "resumed")
    calls["n"] = 0
    m = prepare_dataset("tuab", root, tmp_path / "resumed", progress=False)
    assert calls["n"] == 8 - 3  # the three finished files were not processed again
    full = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert m["checksums"] == full["checksums"]
    calls["n"] = 0
    prepare_dataset("tuab", root, tmp_path / "resumed", progress=False)
    assert calls["n"] == 0  # finished: nothing to do


def test_no_files_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeuroLMError, match="no tuab recordings found"):
        prepare_dataset("tuab", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(NeuroLMError, match="unknown dataset"):
        prepare_dataset("nope", tmp_path / "empty", tmp_path / "out", progress=False)


def test_store_feeds_a_dataloader_with_workers(tmp_path, edf_writer):
    import torch

    from neurolm.data.batch import collate_windows

    root = _tuab_tree(tmp_path / "raw", edf_writer, n_subjects=1)
    prepare_dataset("tuab", root, tmp_path / "store", progress=False)
    split = WindowStore(tmp_path / "store").split("test")
    loader = torch.utils.data.DataLoader(split, batch_size=4, num_workers=2, collate_fn=collate_windows)
    batches = list(loader)
    assert sum(b.labels.numel() for b in batches) == len(split)
    first = batches[0]
    assert first.patches.shape == (4, 10 * 23, 200) and first.mask.all()
    assert torch.allclose(first.patches[0, :23, :], torch.from_numpy(np.array(split[0]["signal"][:, :200])))
