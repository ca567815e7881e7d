"""Muse headband CSV (muse-lsl / eeg-notebooks): read as EEG, found by pretraining, labelled through a task file.

The CSVs are written here with the quirks of the real ones: millisecond-rounded, jittered timestamps; a ``Right AUX``
column to drop; a ``Marker0`` column of stimulus codes; a behaviour CSV beside the recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolm.data.prepare import prepare_dataset, prepare_task_file
from neurolm.data.readers.base import read_raw
from neurolm.data.readers.pretrain import Pretrain
from neurolm.data.store import WindowStore
from neurolm.errors import NeuroLMError

RATE = 256


def write_muse_csv(path: Path, seconds: float, *, seed: int = 0, markers: dict[int, int] | None = None,
                   marker_header: str = "Marker0") -> np.ndarray:
    """A Muse CSV of ``seconds`` at 256 Hz; returns the EEG written (samples × 4, µV)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    eeg = np.stack([20 * np.sin(2 * np.pi * f * t) + rng.normal(0, 5, n) for f in (7.0, 10.0, 13.0, 17.0)], axis=1)
    aux = 800 + rng.normal(0, 50, n)
    code = np.zeros(n)
    for sample, value in (markers or {}).items():
        code[sample] = value
    # like early muse-lsl: timestamps from a jittered clock, rounded to the millisecond
    stamps = np.round(151462.006 + t + rng.normal(0, 0.004, n), 3)
    stamps[-3:] += 1160.4  # like some eeg-notebooks files: last rows stamped minutes later
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(f"timestamps,TP9,AF7,AF8,TP10,Right AUX,{marker_header}\n")
        for row in zip(stamps, *eeg.T, aux, code):
            fh.write(f"{row[0]:.3f},{row[1]:.3f},{row[2]:.3f},{row[3]:.3f},{row[4]:.3f},{row[5]:.3f},{row[6]:g}\n")
    return np.round(eeg, 3)


def test_read_raw_takes_a_muse_csv(tmp_path):
    path = tmp_path / "data_2017-09-13-15.55.05.csv"
    eeg = write_muse_csv(path, 10, markers={256: 1, 1000: 2, 2000: 1})
    raw = read_raw(path)
    assert raw.ch_names == ["TP9", "AF7", "AF8", "TP10"]  # Right AUX dropped
    assert raw.info["sfreq"] == RATE  # from jittered, rounded timestamps whose last rows jump
    assert set(raw.get_channel_types()) == {"eeg"}
    np.testing.assert_allclose(raw.get_data(units="uV"), eeg.T, atol=1e-9)
    np.testing.assert_allclose(raw.annotations.onset, [1.0, 1000 / RATE, 2000 / RATE])
    assert list(raw.annotations.description) == ["1", "2", "1"]
    assert raw.filenames[0] == path


def test_other_csv_is_refused_naming_file_and_header(tmp_path):
    path = tmp_path / "375CueingBehPy.csv"
    path.write_text("Participant,AccValid,AccInvalid,RTValid,RTInvalid\n1,0.9,0.8,0.4,0.5\n")
    with pytest.raises(NeuroLMError, match=r"375CueingBehPy\.csv.*Muse CSV.*'Participant,AccValid"):
        read_raw(path)


def test_backwards_timestamps_are_an_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker\n5.000,1,2,3,4,5,0\n4.000,1,2,3,4,5,0\n")
    with pytest.raises(NeuroLMError, match=r"bad\.csv: timestamps do not increase"):
        read_raw(path)


def test_prepare_pretrain_finds_muse_csvs_and_passes_over_other_csvs(tmp_path):
    raw_dir = tmp_path / "muse"
    for i in range(3):
        write_muse_csv(raw_dir / f"subject{i}" / "session1" / "rec.csv", 70, seed=i, marker_header="Marker")
    (raw_dir / "behaviour.csv").write_text("Participant,AccValid\n1,0.9\n")
    assert [r.path.parent.parent.name for r in Pretrain().find(raw_dir)] == ["subject0", "subject1", "subject2"]
    prepare_dataset("pretrain", raw_dir, tmp_path / "store", workers=1, progress=False)
    store = WindowStore(tmp_path / "store")
    windows = [store.split(s)[i] for s in ("train", "val", "test") for i in range(len(store.split(s)))]
    assert len(windows) == 3  # 4 channels → 64-s windows: one per 70-s file
    assert all(w["signal"].shape == (4, 64 * 200) for w in windows)
    assert store.manifest["files"]["skipped"] == []


def test_task_file_labels_muse_markers_as_annotations(tmp_path):
    raw_dir = tmp_path / "p300"
    for s in range(4):  # a target (2) every 4th stimulus, one a second
        marks = {RATE * (k + 2): 2 if k % 4 == 0 else 1 for k in range(20)}
        write_muse_csv(raw_dir / f"subject{s}" / "session1" / "data.csv", 25, seed=s, markers=marks)
    task = tmp_path / "muse_p300.toml"
    task.write_text(Path(__file__).parents[1].joinpath("examples/tasks/muse_p300.toml").read_text())
    prepare_task_file(task, raw_dir, tmp_path / "store", workers=1, progress=False)
    store = WindowStore(tmp_path / "store")
    labels = [store.split(s)[i]["label"] for s in ("train", "val", "test") for i in range(len(store.split(s)))]
    assert sorted(set(labels)) == [0, 1] and labels.count(1) == 4 * 5 and labels.count(0) == 4 * 15
