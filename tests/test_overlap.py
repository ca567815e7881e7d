"""neurolm overlap: pretraining recordings that are a task's val/test recordings are found by TUH name and by signal
fingerprint (copied, renamed, re-cut), unrelated ones are not, and --exclude writes a store without them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest

from neurolm.cli import main
from neurolm.data.overlap import find_overlap, hashes, tuh_name
from neurolm.data.prepare import prepare_dataset
from neurolm.data.store import WindowStore
from neurolm.data.synth import write_corpus


def _recut(src: Path, dst: Path, start_s: float, seconds: int) -> None:
    """A copy of ``src`` from ``start_s`` (not on a sample of the 200 Hz grid) for ``seconds``, re-encoded."""
    raw = mne.io.read_raw_edf(src, preload=True, verbose="error")
    a = int(round(start_s * raw.info["sfreq"]))
    data = raw.get_data(units="uV")[:, a : a + int(seconds * raw.info["sfreq"])]
    peak = float(np.abs(data).max()) * 1.01
    edfio.Edf([edfio.EdfSignal(row, sampling_frequency=raw.info["sfreq"], label=lab, physical_dimension="uV",
                               physical_range=(-peak, peak)) for lab, row in zip(raw.ch_names, data)]).write(dst)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("overlap")
    tuab = write_corpus(root / "raw", datasets=["tuab"], subjects=4, seed=0)["tuab"]
    task = root / "tuab_store"
    prepare_dataset("tuab", tuab, task, progress=False)
    test = sorted(WindowStore(task).split("test").windows_by_file())
    train = sorted(WindowStore(task).split("train").windows_by_file())
    pre = root / "pretrain"
    pre.mkdir()
    shutil.copy(tuab / test[0], pre / "renamed_copy.edf")
    shutil.copy(tuab / test[1], pre / Path(test[1]).name)
    _recut(tuab / test[2], pre / "recut.edf", 7.37, 70)
    other_subject = tuh_name(test[3])[0]
    shutil.copy(tuab / train[0], pre / f"{other_subject}_s009_t001.edf")  # a test subject's other session
    for k, src in enumerate(train[1:4]):
        shutil.copy(tuab / src, pre / f"unrelated_{k}.edf")  # training recordings: not protected
    prepare_dataset("pretrain", pre, root / "pretrain_store", progress=False)
    return root / "pretrain_store", task, {"copy": test[0], "named": test[1], "recut": test[2], "subject": test[3]}


def test_copied_renamed_and_recut_recordings_are_found_unrelated_ones_are_not(stores):
    pretrain, task, test = stores
    matches = find_overlap(WindowStore(pretrain), [WindowStore(task)], progress=False)
    found = {(m.pretrain_file, m.task_file): (m.kind, m.evidence) for m in matches}
    kind, evidence = found.pop(("renamed_copy.edf", test["copy"]))
    assert kind == "same recording" and evidence.startswith("signal fingerprint (") and "offset +0.0 s" in evidence
    kind, evidence = found.pop(("recut.edf", test["recut"]))
    assert kind == "same recording" and "offset +7.4 s" in evidence  # re-cut 7.37 s in: found at that offset
    name = Path(test["named"]).name
    assert found.pop((name, test["named"]))[0] == "same recording"
    subject_file = f"{tuh_name(test['subject'])[0]}_s009_t001.edf"
    assert found.pop((subject_file, test["subject"])) == ("same subject", f"TUH name subject "
                                                                          f"{tuh_name(test['subject'])[0]}")
    # What is left is only other recordings of the same TUH subjects (a subject with two test sessions).
    assert all(kind == "same subject" for kind, _ in found.values()), found
    assert not any(f.startswith("unrelated") for f, _ in found)


def test_hashes_ignore_gain_and_differ_between_signals():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 200 * 30)) * (1 + np.sin(np.arange(200 * 30) / 300.0))
    h = hashes(x)
    assert h.shape == (2, (200 * 30 - 200) // 5 + 1 - 40 - 19 * 40)
    assert np.array_equal(hashes(3.5 * x), h)
    assert (hashes(rng.normal(0, 1, x.shape)) == h).mean() < 0.01


def test_cli_reports_and_excludes(stores, tmp_path, capsys):
    pretrain, task, test = stores
    out = tmp_path / "clean"
    assert main(["overlap", str(pretrain), str(task), "--report", str(tmp_path / "o.json"), "--exclude", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "overlap: 4 of 7 pretraining recordings overlap the val/test sets of tuab" in printed
    report = json.loads((tmp_path / "o.json").read_text())
    assert {r["pretrain_file"] for r in report} == {"renamed_copy.edf", "recut.edf", Path(test["named"]).name,
                                                    f"{tuh_name(test['subject'])[0]}_s009_t001.edf"}
    clean, full = WindowStore(out), WindowStore(pretrain)
    clean.verify()
    kept = {f for s in clean.splits for f in clean.split(s).windows_by_file()}
    assert kept == {"unrelated_0.edf", "unrelated_1.edf", "unrelated_2.edf"}
    assert len(clean.manifest["excluded"]) == 4
    for s in clean.splits:  # the kept windows are the same windows
        a, b = clean.split(s), full.split(s)
        rows = {(b[i]["file"], b[i]["start"]): i for i in range(len(b))}
        for i in range(len(a)):
            assert np.array_equal(a[i]["signal"], b[rows[(a[i]["file"], a[i]["start"])]]["signal"])


EEGMAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "eegmat-dev"


@pytest.mark.skipif(not (EEGMAT / "Subject00_1.edf").is_file(), reason=f"real EEG not present at {EEGMAT}")
def test_real_eeg_copies_are_found_and_other_subjects_are_not(tmp_path):
    """PhysioNet EEGMAT recordings: three subjects' task store (one subject per split), a pretraining corpus holding a
    renamed and a re-cut copy of the test subject's recordings and two other subjects' recordings."""
    raw = tmp_path / "eegmat"
    raw.mkdir()
    for subject in ("Subject00", "Subject01", "Subject02"):
        for part in (1, 2):
            shutil.copy(EEGMAT / f"{subject}_{part}.edf", raw)
    prepare_dataset("workload", raw, tmp_path / "task", progress=False)
    task = WindowStore(tmp_path / "task")
    (test_file,) = {Path(f).stem.split("_")[0] for f in task.split("test").windows_by_file()}
    pre = tmp_path / "pretrain"
    pre.mkdir()
    shutil.copy(raw / f"{test_file}_1.edf", pre / "renamed.edf")
    _recut(raw / f"{test_file}_2.edf", pre / "recut.edf", 3.37, 56)  # one 51 s window
    for other in ("Subject03", "Subject04"):
        shutil.copy(EEGMAT / f"{other}_2.edf", pre)
    prepare_dataset("pretrain", pre, tmp_path / "pre", progress=False)  # 60 Hz notch here, 50 Hz in the task store
    matches = find_overlap(WindowStore(tmp_path / "pre"), [task], progress=False)
    assert {(m.pretrain_file, m.task_file) for m in matches} == {("renamed.edf", f"{test_file}_1.edf"),
                                                                ("recut.edf", f"{test_file}_2.edf")}
