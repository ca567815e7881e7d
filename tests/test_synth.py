"""The synthetic corpus: native layouts read back by MNE/edfio/scipy, the CNT writer, determinism, physiology."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from itertools import islice
from pathlib import Path

import mne
import numpy as np
import pytest
from scipy.io import loadmat
from scipy.signal import welch

from neurolm.cli import main as cli_main
from neurolm.data.synth.cnt import write_cnt
from neurolm.data.synth import ALL, iter_recordings, write_corpus
from neurolm.data.synth.datasets import (
    EEGMAT_LABELS,
    HMC_LABELS,
    SEED_EEG,
    SEED_FILMS,
    SEED_LABELS,
    TUH_LABELS,
    hypnogram,
)
from neurolm.data.synth.signals import scalp_xy
from neurolm.errors import NeuroLMError

SMALL = 6  # subjects per dataset: every dataset's minimum for non-empty splits


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    dirs = write_corpus(root, subjects=SMALL, seed=0)
    assert set(dirs) == set(ALL) and all(d == root / name for name, d in dirs.items())
    return root


def _raw(path: Path, **kw) -> mne.io.BaseRaw:
    return mne.io.read_raw(path, preload=False, verbose="error", **kw)


def _band(x: np.ndarray, fs: float, lo: float, hi: float) -> np.ndarray:
    f, p = welch(x, fs=fs, nperseg=int(2 * fs), axis=-1)
    return p[..., (f >= lo) & (f < hi)].mean(-1)


# --- layouts and formats -----------------------------------------------------------------------------------------


def test_tuab_layout(corpus):
    files = sorted((corpus / "tuab").rglob("*.edf"))
    pattern = re.compile(r"edf/(train|eval)/(normal|abnormal)/01_tcp_ar/([a-z]{8})_s00([12])_t000\.edf")
    homes: dict[str, set] = {}
    for f in files:
        m = pattern.fullmatch(f.relative_to(corpus / "tuab").as_posix())
        assert m, f
        homes.setdefault(m.group(3), set()).add(m.group(1, 2))
    assert all(len(h) == 1 for h in homes.values()), "a subject in two splits or classes"
    expected = {(s, c) for s in ("train", "eval") for c in ("normal", "abnormal")}
    assert {h for hs in homes.values() for h in hs} == expected
    raw = _raw(files[0])
    assert raw.ch_names == TUH_LABELS
    assert raw.info["sfreq"] in (250.0, 256.0)
    seconds = raw.n_times / raw.info["sfreq"]
    assert seconds % 10 == 0 and 60 <= seconds <= 120
    data = raw.get_data(picks=["EEG O1-REF", "EEG FP1-REF"], units="uV")
    assert 5 < data.std(axis=1).min() and data.std(axis=1).max() < 150  # µV, realistic scale
    hum = _band(data, raw.info["sfreq"], 59.5, 60.5) / _band(data, raw.info["sfreq"], 55, 59)
    assert (hum > 10).all(), "60 Hz mains hum expected in TUH data"


def test_tuev_rec_files(corpus):
    edfs = sorted((corpus / "tuev").rglob("*.edf"))
    assert {f.relative_to(corpus / "tuev").parts[1] for f in edfs} == {"train", "eval"}
    labels = []
    for edf in edfs:
        subj = edf.parent.name
        assert re.fullmatch(rf"{subj}_000000\d\d", edf.stem)
        raw = _raw(edf)
        duration = raw.n_times / raw.info["sfreq"]
        events = {}
        with open(edf.with_suffix(".rec"), newline="") as fh:
            for ch, start, stop, label in csv.reader(fh):
                assert 0 <= int(ch) <= 21 and 1 <= int(label) <= 6
                start, stop = float(start), float(stop)
                assert stop - start == pytest.approx(1.0) and start >= 2.0 and stop <= duration - 2.0
                events.setdefault((start, stop), set()).add(int(label))
                labels.append(int(label))
        assert all(len(v) == 1 for v in events.values()), "one label per event across its channel rows"
    assert set(labels) == set(range(1, 7))


def test_tusl_tse_agg(corpus):
    edfs = sorted((corpus / "tusl").rglob("*.edf"))
    assert len(edfs) == SMALL
    counts = {"bckg": 0, "seiz": 0, "slow": 0}
    for edf in edfs:
        subj = edf.relative_to(corpus / "tusl").parts[1]
        assert edf.relative_to(corpus / "tusl").as_posix() == f"edf/{subj}/s001_2010/01_tcp_ar/{subj}_s001_t000.edf"
        lines = edf.with_suffix(".tse_agg").read_text().splitlines()
        assert lines[:2] == ["version = tse_v1.0.0", ""]
        rows = [ln.split() for ln in lines[2:]]
        assert all(re.fullmatch(r"\d+\.\d{4}", r[0]) and r[3] == "1.0000" for r in rows)
        starts, stops = [float(r[0]) for r in rows], [float(r[1]) for r in rows]
        assert starts[0] == 0 and starts[1:] == stops[:-1] and all(b - a == 10 for a, b in zip(starts, stops))
        raw = _raw(edf)
        assert stops[-1] == raw.n_times / raw.info["sfreq"]
        for r in rows:
            counts[r[2]] += 1
    assert min(counts.values()) > 0


def test_hmc_scoring(corpus):
    root = corpus / "hmc"
    edfs = sorted(p for p in root.glob("SN*.edf") if "sleepscoring" not in p.name)
    assert [p.stem for p in edfs] == [f"SN{i:03d}" for i in range(1, SMALL + 1)]
    for k, edf in enumerate(edfs, start=1):
        raw = _raw(edf)
        assert raw.ch_names == HMC_LABELS and raw.info["sfreq"] == 256.0
        txt, ann_edf = root / f"{edf.stem}_sleepscoring.txt", root / f"{edf.stem}_sleepscoring.edf"
        if k % 3 == 0:
            assert ann_edf.is_file() and not txt.exists()
            ann = mne.read_annotations(ann_edf)
            rows = list(zip(ann.onset, ann.duration, ann.description))
        else:
            assert txt.is_file() and not ann_edf.exists()
            lines = txt.read_text().splitlines()
            assert lines[0] == "Date, Time, Recording onset, Duration, Annotation, Linked channel"
            fields = [ln.split(", ") for ln in lines[1:]]
            assert all(len(f) == 6 and re.fullmatch(r"\d{4}-\d\d-\d\d", f[0]) for f in fields)
            rows = [(float(f[2]), float(f[3]), f[4]) for f in fields]
        lights = [r for r in rows if r[2].startswith("Lights off")]
        assert lights == [(30.0, 0.0, "Lights off@@EEG F4-A1")]
        stages = [r for r in rows if r[2].startswith("Sleep stage")]
        assert all(r[1] == 30.0 and r[2][12:] in ("W", "N1", "N2", "N3", "R") for r in stages)
        assert [r[0] for r in stages] == [30.0 * i for i in range(len(stages))]
        assert 36 <= len(stages) <= 50 and len(stages) * 30 * 256 == raw.n_times
        assert stages[0][2] == "Sleep stage W"


def test_hypnogram_is_plausible():
    stages = hypnogram(np.random.default_rng(1), 200)
    assert stages[0] == "W" and set(stages) == {"W", "N1", "N2", "N3", "R"}
    first_sleep = next(i for i, s in enumerate(stages) if s != "W")
    assert stages[first_sleep] == "N1" and stages.index("R") > stages.index("N3")


def test_workload_files(corpus):
    root = corpus / "workload"
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted(f"Subject{k:02d}_{part}.edf" for k in range(SMALL) for part in (1, 2))
    for path in (root / "Subject00_1.edf", root / "Subject00_2.edf"):
        raw = _raw(path)
        assert raw.ch_names == EEGMAT_LABELS and raw.info["sfreq"] == 500.0 and raw.n_times >= 62 * 500


def test_seed_raw_and_preprocessed(corpus):
    root = corpus / "seed"
    cnts = sorted((root / "SEED_RAW_EEG").glob("*.cnt"))
    assert [re.fullmatch(r"(\d+)_\d{8}\.cnt", p.name) is not None for p in cnts] == [True] * SMALL
    raw = mne.io.read_raw_cnt(cnts[0], data_format="int16", preload=True, verbose="error")
    assert raw.ch_names == SEED_LABELS and len(SEED_LABELS) == 67 and raw.info["sfreq"] == 250.0
    times = json.loads((root / "SEED_RAW_EEG" / "trial_times.json").read_text())
    assert len(times["start_s"]) == len(times["end_s"]) == 15
    assert all(0 < s < e <= raw.times[-1] for s, e in zip(times["start_s"], times["end_s"]))
    labels = loadmat(root / "Preprocessed_EEG" / "label.mat")["label"]
    assert labels.tolist() == [[1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]]
    mat = loadmat(root / "Preprocessed_EEG" / (cnts[0].stem + ".mat"))
    keys = sorted(k for k in mat if not k.startswith("__"))
    prefix = keys[0].split("_")[0]
    assert re.fullmatch(r"[a-z]{2,3}", prefix)
    assert keys == sorted(f"{prefix}_eeg{i}" for i in range(1, 16))
    first = mat[f"{prefix}_eeg1"]
    seconds = times["end_s"][0] - times["start_s"][0]
    assert first.shape == (62, int(seconds * 200))
    # the release is the same session: trial 1 of the raw file, resampled, matches it
    a = int(times["start_s"][0] * 250)
    fz = raw.get_data(picks=["FZ"], units="uV")[0, a : a + int(seconds * 250)]
    fz_200 = mne.filter.resample(fz.astype(np.float64), up=200, down=250, verbose="error")
    assert np.corrcoef(fz_200[200:-200], first[SEED_EEG.index("FZ"), 200:-200])[0, 1] > 0.95


def test_pretrain_formats(corpus):
    root = corpus / "pretrain"
    suffixes = sorted(p.suffix for p in root.iterdir() if p.suffix in (".edf", ".bdf", ".fif", ".set", ".vhdr"))
    assert set(suffixes) == {".edf", ".bdf", ".fif", ".set", ".vhdr"}
    for path in sorted(root.iterdir()):
        if path.suffix in (".vmrk", ".eeg"):
            continue
        raw = _raw(path)
        n_eeg = sum(scalp_xy(ch) is not None for ch in raw.ch_names)
        assert 19 <= n_eeg <= 32, path.name
        assert 200 <= raw.info["sfreq"] <= 512 and 30 <= raw.times[-1] + 1 / raw.info["sfreq"] <= 120


# --- CNT writer --------------------------------------------------------------------------------------------------


def test_cnt_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    names = ["FP1", "FZ", "CB1", "HEO", "ECG"]
    data = rng.normal(0, 1, (5, 1234)) * np.array([[20.0], [50.0], [0.3], [300.0], [1000.0]])
    path = write_cnt(tmp_path / "x.cnt", data, names, 500)
    raw = mne.io.read_raw_cnt(path, data_format="int16", preload=True, verbose="error")
    assert raw.ch_names == names and raw.info["sfreq"] == 500 and raw.n_times == 1234
    back = raw.get_data(units="uV")
    step = np.maximum(np.abs(data).max(axis=1) / 32767, 1e-3)  # the writer's per-channel resolution (≥ 1 nV)
    assert (np.abs(back - data).max(axis=1) <= 0.5 * step * 1.001).all()
    assert len(raw.annotations) == 0 and raw.info["bads"] == []
    with pytest.raises(ValueError, match="integer sampling rate"):
        write_cnt(tmp_path / "y.cnt", data, names, 250.5)
    with pytest.raises(ValueError, match="1-4 printable"):
        write_cnt(tmp_path / "y.cnt", data, ["FP1", "FZ", "CB1", "HEOG1", "ECG"], 250)


# --- determinism and CLI -----------------------------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path, corpus):
    subset = ["tuev", "seed", "pretrain"]
    write_corpus(tmp_path / "a", subset, subjects=SMALL, seed=0)
    again = _digest(tmp_path / "a")
    first = {k: v for k, v in _digest(corpus).items() if k.split("/")[0] in subset}
    assert again == first  # also: a dataset written alone equals the same dataset written with the others
    write_corpus(tmp_path / "b", ["tuev"], subjects=SMALL, seed=1)
    other = _digest(tmp_path / "b")
    assert not set(other.items()) & set(again.items())


def test_cli(tmp_path, capsys):
    assert cli_main(["synth", str(tmp_path), "--datasets", "workload", "--subjects", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("synth: wrote workload (12 files")
    assert cli_main(["synth", str(tmp_path), "--datasets", "tuab,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(NeuroLMError):
        write_corpus(tmp_path, ["hmc"], subjects=0)


@pytest.mark.parametrize("command", ["synth", "demo"])
def test_without_the_synth_extra_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch, command):
    """The writers' packages are the ``synth`` extra, not default dependencies; without them `neurolm synth` and
    `neurolm demo` (which writes its corpus first) stop before writing anything, naming the install command."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extra = {re.split(r"[<>=\[]", d)[0] for d in project["optional-dependencies"]["synth"]}
    assert extra == {"edfio", "eeglabio", "pybv"}
    assert not extra & {re.split(r"[<>=\[]", d)[0] for d in project["dependencies"]}
    monkeypatch.setitem(sys.modules, "pybv", None)  # `import pybv` now raises ImportError
    out = str(tmp_path / "out")
    argv = ["synth", out] if command == "synth" else ["demo", "--quick", "--out", out]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "needs pybv" in err and "pip install 'neurolm[synth]'" in err
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


# --- physiology ----------------------------------------------------------------------------------------------------


def _window_bands(name: str, n_recordings: int, picks: list[str], bands: dict[str, tuple[float, float]]):
    """label → list of mean log band power over ``picks`` per window, from the generator's arrays."""
    out: dict[int, list] = {}
    for rec in islice(iter_recordings(name, seed=0), n_recordings):
        idx = [rec.labels.index(p) for p in picks]
        for w in rec.windows:
            a = int(w.start * rec.sfreq)
            seg = rec.data[idx, a : a + int(w.seconds * rec.sfreq)]
            out.setdefault(w.label, []).append([np.log(_band(seg, rec.sfreq, *b)).mean() for b in bands.values()])
    return {k: np.array(v) for k, v in out.items()}


def test_tuab_abnormal_means_slowing():
    bands = {"delta": (0.5, 4.0), "alpha": (8.0, 13.0)}
    post = ["EEG O1-REF", "EEG O2-REF", "EEG P3-REF", "EEG P4-REF"]
    alpha = _window_bands("tuab", 16, post, bands)
    assert alpha[0][:, 1].mean() > alpha[1][:, 1].mean() + 0.3  # clearer posterior alpha in normals
    allch = [lb for lb in TUH_LABELS if lb.startswith("EEG") and "EKG" not in lb]
    slow = _window_bands("tuab", 16, allch, bands)
    assert slow[1][:, 0].mean() > slow[0][:, 0].mean() + 0.3  # more delta in abnormals
    # ... but the classes overlap: some abnormal windows have more alpha than the median normal one
    assert (alpha[1][:, 1] > np.median(alpha[0][:, 1])).mean() > 0.05


def test_sleep_stages():
    bands = {"sigma": (11.0, 15.0), "delta": (0.5, 4.0), "alpha": (8.0, 12.0)}
    central = _window_bands("hmc", 3, ["EEG C4-M1", "EEG C3-M2"], bands)
    w, n2, n3 = (central[HMC_STAGES_INDEX[s]] for s in ("W", "N2", "N3"))
    assert n2[:, 0].mean() > n3[:, 0].mean()  # spindles
    assert n3[:, 1].mean() > n2[:, 1].mean() > w[:, 1].mean()  # deepening sleep, more delta
    occipital = _window_bands("hmc", 3, ["EEG O2-M1"], bands)
    assert occipital[0][:, 2].mean() > max(occipital[k][:, 2].mean() for k in (1, 2, 3, 4))  # wake alpha


HMC_STAGES_INDEX = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}


def test_workload_theta_up_alpha_down():
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0)}
    frontal = _window_bands("workload", 8, ["EEG Fz", "EEG F3", "EEG F4"], bands)
    posterior = _window_bands("workload", 8, ["EEG P3", "EEG P4", "EEG O1", "EEG O2", "EEG Pz"], bands)
    assert frontal[1][:, 0].mean() > frontal[0][:, 0].mean()
    assert posterior[1][:, 1].mean() < posterior[0][:, 1].mean()


def test_tuev_event_signatures():
    bands = {"gamma": (30.0, 45.0), "delta": (0.5, 4.0)}
    temporal = _window_bands("tuev", 8, ["EEG T3-REF", "EEG T4-REF"], bands)
    assert temporal[4][:, 0].mean() > temporal[5][:, 0].mean() + 0.5  # muscle artifact vs background
    frontal = _window_bands("tuev", 8, ["EEG FP1-REF", "EEG FP2-REF"], bands)
    assert frontal[3][:, 1].mean() > frontal[5][:, 1].mean() + 0.5  # eye movements: slow frontal waves


def test_seed_classes_differ():
    films = [f for f in SEED_FILMS]
    assert films.count("H") == films.count("N") == films.count("S") == 5
    post = _window_bands("seed", 2, ["O1", "OZ", "O2", "PZ"], {"alpha": (8.0, 13.0)})
    assert post[1][:, 0].mean() > post[2][:, 0].mean()  # neutral films: more posterior alpha than negative
    temporal = _window_bands("seed", 2, ["T7", "T8", "FT7", "FT8"], {"gamma": (30.0, 45.0)})
    assert temporal[0][:, 0].mean() > temporal[1][:, 0].mean()  # positive films: more temporal gamma
