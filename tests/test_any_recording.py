"""Real recordings as they come (issue 38): a declared scale for samples not in their stated unit, MNE events files
as a label source, the SSVEP-Exo development recordings prepared from the example task file unmodified."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.cli import main
from neurolm.data.prepare import prepare_task_file
from neurolm.data.store import WindowStore
from neurolm.errors import NeuroLMError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SSVEP = SHARED / "data" / "ssvep-dev"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
CHANNELS = ["Oz", "O1", "O2"]
SFREQ = 256.0

pytestmark = pytest.mark.usefixtures("one_thread")


def write_fif_with_events(folder: Path, seed: int, *, too_large: float = 100.0, first_samp: int = 0) -> Path:
    """A FIF recording of 3 occipital channels whose samples are ``too_large`` times scalp EEG's, with 5 s trials of
    event ids 1 / 2 every 7 s in a ``-eve.fif`` beside it (MNE's naming), sample numbers from acquisition start."""
    rng = np.random.default_rng(seed)
    n = int(60 * SFREQ)
    t = np.arange(n) / SFREQ
    data = (rng.normal(0, 20, (len(CHANNELS), n)) + 10 * np.sin(2 * np.pi * 13 * t)) * 1e-6 * too_large
    raw = mne.io.RawArray(data, mne.create_info(CHANNELS, SFREQ, "eeg"), first_samp=first_samp, verbose="error")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "record-[2012.07.06-19.02.16]_raw.fif"
    raw.save(path, verbose="error")
    onsets = np.arange(1, 55, 7.0)
    events = np.array([[first_samp + int(o * SFREQ), 0, 1 + i % 2] for i, o in enumerate(onsets)])
    mne.write_events(folder / "record-[2012.07.06-19.02.16]-eve.fif", events, verbose="error")
    return path


def write_task(path: Path, *, scale: str = "", labels: str = "") -> Path:
    path.write_text(f'''name = "flicker"
question = "Which flicker?"
answers = ["none", "thirteen"]
classes = ["rest", "13hz"]
channels = ["OZ", "O1", "O2"]
window_s = 4
stride_s = 1
{scale}
[recordings]
glob = "**/*.fif"
subject = '(s\\d+)/'

[labels]
source = "events"
map = {{ "1" = "rest", "2" = "13hz" }}
{labels or "duration_s = 5"}

[split]
by = "subject"
order = "sorted"
fractions = {{ train = 0.5, val = 0.25, test = 0.25 }}
''')
    return path


@pytest.fixture(scope="module")
def fifs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fif")
    for s in range(4):
        write_fif_with_events(root / f"s{s}", s, first_samp=1000 * s)
    return root


def test_events_files_label_five_second_trials_with_the_declared_scale(fifs, tmp_path):
    task = write_task(tmp_path / "t.toml", scale="scale = 0.01")
    m = prepare_task_file(task, fifs, tmp_path / "store", progress=False)
    assert m["files"]["found"] == 4 and not m["files"]["skipped"]  # the -eve.fif files are not recordings
    assert m["preprocessing"]["input_scale"] == 0.01
    # 8 trials of 5 s a recording, ids alternating, two 4 s windows (stride 1 s) in each
    store = WindowStore(tmp_path / "store")
    labels = np.concatenate([store.split(s).labels for s in ("train", "val", "test")])
    assert np.bincount(labels).tolist() == [32, 32]
    items = [store.split("train")[i] for i in range(len(store.split("train")))]
    # onsets were taken relative to first_samp: window starts are trial onsets (1 s, 8 s, …) and onset + 1 s
    assert sorted({round(it["start"], 3) for it in items})[:4] == [1.0, 2.0, 8.0, 9.0]
    # the scaled samples are scalp EEG's size (µV/100: ~0.2), not a hundred times more
    assert 0.05 < float(np.median([it["signal"].std(axis=-1) for it in items])) < 0.5


def test_an_undeclared_scale_is_refused_naming_the_key_and_the_factor(fifs, tmp_path):
    task = write_task(tmp_path / "t.toml")
    with pytest.raises(NeuroLMError, match=r"implausible.*declare their scale: `scale = 0\.01` in the task file, "
                                           r"or --scale 0\.01"):
        prepare_task_file(task, fifs, tmp_path / "store", progress=False)
    m = prepare_task_file(task, fifs, tmp_path / "flag", progress=False, scale=0.01)  # the flag declares it too
    assert m["preprocessing"]["input_scale"] == 0.01 and m["files"]["ok"] == 4


@pytest.mark.parametrize("labels, match", [("", "labels.duration_s is missing"),
                                           ("duration_s = -1", "labels.duration_s = -1: must be > 0")])
def test_events_need_a_positive_duration(tmp_path, labels, match):
    task = write_task(tmp_path / "t.toml", labels=labels or "ignore_unmapped = true")
    with pytest.raises(NeuroLMError, match=match):
        prepare_task_file(task, tmp_path, tmp_path / "store", progress=False)


@pytest.mark.parametrize("scale", ["scale = 0", "scale = -2", 'scale = "0.01"'])
def test_a_bad_scale_names_the_key(tmp_path, scale):
    task = write_task(tmp_path / "t.toml", scale=scale)
    with pytest.raises(NeuroLMError, match=r"t\.toml: scale = "):
        prepare_task_file(task, tmp_path, tmp_path / "store", progress=False)


def test_an_undeclared_scale_keeps_the_recorded_preprocessing_unchanged(fifs, tmp_path):
    """Stores prepared without a declared scale record the same preprocessing as before the key existed (so their
    fingerprints and the models' training.json comparisons do not change)."""
    from neurolm.data.preprocess import PreprocessConfig

    assert "input_scale" not in PreprocessConfig().to_dict()
    assert PreprocessConfig(input_scale=0.5).to_dict()["input_scale"] == 0.5


@pytest.mark.skipif(not SSVEP.is_dir(), reason=f"SSVEP-Exo development recordings not found at {SSVEP} (a fresh "
                                                "clone has no ../shared)")
def test_ssvep_exo_prepares_unmodified_from_the_example_task_file(tmp_path, capsys):
    assert main(["prepare", "--task-file", str(EXAMPLES / "ssvep_exo.toml"), str(SSVEP), str(tmp_path / "s"),
                 "--workers", "2"]) == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    n = len(list(SSVEP.glob("subject*/*_raw.fif")))
    assert m["files"]["ok"] == n and not m["files"]["skipped"] and m["implausible_windows"] == 0
    total = sum(s["windows"] for s in m["splits"].values())
    assert total == n * 32 * 2  # 32 trials of 5 s a recording, two 4 s windows each
    store = WindowStore(tmp_path / "s")
    for split in ("train", "val", "test"):  # 8 trials per class in every recording: balanced in every split
        counts = np.bincount(store.split(split).labels, minlength=4)
        assert counts.min() == counts.max() > 0, (split, counts)
    assert "ssvep_exo" in capsys.readouterr().out


def assert_scalars_match_the_log(run: Path) -> None:
    """``log.csv`` (the scalars: loss, learning rate, throughput, validation metrics) holds every row and value of
    ``log.jsonl``."""
    import csv

    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    with open(run / "log.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {r["split"] for r in rows} == {"train", "val"}
    for row, line in zip(rows, table):
        for key, value in row.items():
            assert (line[key] == value if isinstance(value, str) else float(line[key]) == pytest.approx(value)), key
        assert all(line[k] == "" for k in line if k not in row)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]  # a two-step run logs both steps
    assert {"loss", "lr", "samples_per_s", "steps_per_s", "grad_norm"} <= set(train[-1])


def test_ask_reads_new_recordings_with_the_scale_the_model_was_tuned_on(fifs, model, tmp_path, capsys):
    from neurolm.data.provenance import read_training
    from neurolm.instruct.ask import ask
    from neurolm.instruct.train import instruct

    task = write_task(tmp_path / "t.toml", scale="scale = 0.01")
    prepare_task_file(task, fifs, tmp_path / "store", progress=False)
    model.save_pretrained(tmp_path / "lm")
    instruct(tmp_path / "lm", [tmp_path / "store"], tmp_path / "inst", steps=2, batch_size=4, progress=False,
             device="cpu")
    assert read_training(tmp_path / "inst")["datasets"]["flicker"]["preprocessing"]["input_scale"] == 0.01
    assert_scalars_match_the_log(tmp_path / "inst")
    recording = fifs / "s1" / "record-[2012.07.06-19.02.16]_raw.fif"
    answers = ask(tmp_path / "inst", recording, "flicker", every=4.0)  # the recorded scale, by default
    assert len(answers) == 15 and {a.label_name for a in answers} <= {"rest", "13hz"}
    with pytest.raises(NeuroLMError, match=r"implausible.*`scale = 0\.01`"):
        ask(tmp_path / "inst", recording, "flicker", scale=1.0)  # an explicit --scale overrides it
    assert main(["ask", str(tmp_path / "inst"), str(recording), "--task", "flicker", "--scale", "0.01",
                 "--device", "cpu"]) == 0
    assert "asked flicker" in capsys.readouterr().out


# --- channel aliases --------------------------------------------------------------------------------------------------
LEMON_CAP = ("Fp1 Fp2 F7 F3 Fz F4 F8 FC5 FC1 FC2 FC6 T7 C3 Cz C4 T8 CP5 CP1 CP2 CP6 AFz P7 P3 Pz P4 P8 PO9 O1 Oz O2 "
             "PO10 AF7 AF3 AF4 AF8 F5 F1 F2 F6 FT7 FC3 FC4 FT8 C5 C1 C2 C6 TP7 CP3 CPz CP4 TP8 P5 P1 P2 P6 PO7 PO3 "
             "POz PO4 PO8").split() + ["VEOG"]
"""LEMON's BrainVision cap: 61 EEG electrodes under their 10-10 names (as MNE's standard_1020 montage spells them)
and a vertical EOG: 62 channels."""


def test_a_10_10_cap_serves_every_builtin_task_its_electrodes_cover():
    from neurolm.data.channels import SAME_ELECTRODE, map_channels
    from neurolm.data.datasets import DATASETS

    with warnings.catch_warnings():  # MNE 1.12 renames the montage colin27_1020; the names are the same
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage("standard_1020")
    assert set(LEMON_CAP[:-1]) <= set(montage.ch_names) and len(LEMON_CAP) == 62
    cap = {c.upper() for c in LEMON_CAP}
    covered = {name for name, d in DATASETS.items() if d.channels
               and all(c in cap or SAME_ELECTRODE.get(c) in cap for c in d.channels)}
    assert covered == {"hmc", "workload"}  # TUH wants A1 A2 T1 T2, SEED CB1 CB2 PO5 PO6: not on this cap
    for name in covered:
        mapping = map_channels(LEMON_CAP, DATASETS[name].channels)
        assert list(mapping) == list(DATASETS[name].channels)
    mapping = map_channels(LEMON_CAP, DATASETS["workload"].channels)
    assert {k: mapping[k] for k in ("T3", "T4", "T5", "T6")} == {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
    # the other way round: a task asking for the 10-10 names takes a 10-20 file (case and reference suffixes too)
    assert map_channels(["EEG T3-REF", "eeg t6-le", "Cz"], ["T7", "P8", "CZ"]) == {"T7": "EEG T3-REF",
                                                                                  "P8": "eeg t6-le", "CZ": "Cz"}
    # a missing channel is named with its other name, and the labels that are no 10-20 name are listed
    with pytest.raises(NeuroLMError, match=r"missing required channel\(s\) T3 \(or T7\); the recording has: Cz, "
                                           r"VEOG, ECG \(not 10-20 names: VEOG, ECG\)"):
        map_channels(["Cz", "VEOG", "ECG"], ["T3"])
    # pretraining (no channel list) keeps each file's own name
    assert "T7" in map_channels(LEMON_CAP) and "T3" not in map_channels(LEMON_CAP)


def test_a_10_10_cap_prepares_for_workload_and_the_manifest_keeps_the_file_names(tmp_path, edf_writer):
    from neurolm.data.channels import INDEX
    from neurolm.data.prepare import prepare_dataset

    for s in range(3):
        for k in (1, 2):
            edf_writer(tmp_path / "raw" / f"Subject{s:02d}_{k}.edf", LEMON_CAP, 250.0, 64, seed=10 * s + k)
    m = prepare_dataset("workload", tmp_path / "raw", tmp_path / "store", progress=False)
    assert m["files"]["ok"] == 6 and not m["files"]["skipped"]
    assert all(e["renamed"] == {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"} for e in m["sources"])
    store = WindowStore(tmp_path / "store")
    chans = store.split("train")[0]["chans"].tolist()
    assert INDEX["T3"] in chans and INDEX["T7"] not in chans  # the task's names: windows look the same as EEGMAT's


# --- low rates, one channel -----------------------------------------------------------------------------------------
def test_a_low_rate_is_low_passed_below_nyquist_and_resampled_to_200_hz():
    from neurolm.data.preprocess import PreprocessConfig, low_pass, preprocess_array

    with pytest.raises(NeuroLMError, match=r"100 Hz is too low.*low-pass at 40 Hz instead, allow low rates "
                                           r"\(`allow_low_rate = true` in a task file, --allow-low-rate"):
        preprocess_array(np.zeros((1, 1000)), 100.0, PreprocessConfig())
    config = PreprocessConfig(allow_low_rate=True)
    assert [low_pass(r, config) for r in (100.0, 128.0, 151.0, 256.0)] == [40.0, 51.0, 75.0, 75.0]
    with pytest.raises(NeuroLMError, match="at least 50 Hz"):
        low_pass(32.0, config)
    t = np.arange(6000) / 100.0
    out = preprocess_array(np.stack([20 * np.sin(2 * np.pi * 10 * t), 20 * np.sin(2 * np.pi * 47 * t)]), 100.0,
                           config)
    assert out.shape == (2, 12000)  # 200 Hz
    inner = out[:, 2000:-2000].std(axis=1) * 100 * np.sqrt(2)
    assert 18 < inner[0] < 22 and inner[1] < 5  # 10 Hz kept, 47 Hz (in the transition above 40 Hz) cut down
    assert "allow_low_rate" not in PreprocessConfig().to_dict()


def write_low_rate_task(path: Path, *, allow: bool = True) -> Path:
    path.write_text(f'''name = "one_channel"
question = "Is the alpha rhythm strong?"
answers = ["No", "Yes"]
classes = ["weak", "strong"]
channels = ["CZ"]
window_s = 4
{"allow_low_rate = true" if allow else ""}
[recordings]
subject = '(p\\d+)_'

[labels]
source = "filename"
pattern = '_(weak|strong)$'

[split]
by = "subject"
order = "sorted"
fractions = {{ train = 0.5, val = 0.25, test = 0.25 }}
''')
    return path


def one_channel_edfs(root: Path, sfreq: float, edf_writer) -> None:
    """One-channel EDFs (``EEG Cz``) of four subjects, a weak- and a strong-alpha file each, 40 s at ``sfreq``."""
    t = np.arange(int(40 * sfreq)) / sfreq
    for s in range(4):
        for k, cls in enumerate(("weak", "strong")):
            rng = np.random.default_rng(10 * s + k)
            data = rng.normal(0, 10, (1, len(t))) + (5 + 25 * k) * np.sin(2 * np.pi * 10 * t)
            edf_writer(root / f"p{s}_{cls}.edf", ["EEG Cz"], sfreq, 40, data=data)


def test_one_channel_at_128_hz_and_100_hz_prepare_tune_and_ask(model, tmp_path, edf_writer, capsys):
    from neurolm.data.provenance import read_training
    from neurolm.instruct.ask import ask
    from neurolm.instruct.train import instruct

    one_channel_edfs(tmp_path / "r128", 128.0, edf_writer)
    with pytest.raises(NeuroLMError, match=r"every one_channel file failed .*128 Hz is too low.*allow_low_rate"):
        prepare_task_file(write_low_rate_task(tmp_path / "off.toml", allow=False), tmp_path / "r128",
                          tmp_path / "refused", progress=False)
    m = prepare_task_file(write_low_rate_task(tmp_path / "t.toml"), tmp_path / "r128", tmp_path / "store",
                          progress=False)
    assert m["files"]["ok"] == 8 and m["band_hz"] == [0.1, 51.0]
    assert m["preprocessing"]["allow_low_rate"] is True and {e["low_pass_hz"] for e in m["sources"]} == {51.0}
    assert WindowStore(tmp_path / "store").split("train")[0]["signal"].shape == (1, 800)  # 4 s at 200 Hz

    model.save_pretrained(tmp_path / "lm")
    instruct(tmp_path / "lm", [tmp_path / "store"], tmp_path / "inst", steps=2, batch_size=4, progress=False,
             device="cpu")
    assert read_training(tmp_path / "inst")["datasets"]["one_channel"]["band_hz"] == [0.1, 51.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the band it was tuned on: nothing to warn about
        answers = ask(tmp_path / "inst", tmp_path / "r128" / "p0_strong.edf", "one_channel", every=4.0)
    assert len(answers) == 10 and {a.label_name for a in answers} <= {"weak", "strong"}

    one_channel_edfs(tmp_path / "r100", 100.0, edf_writer)  # a lower rate than the model was tuned on
    with pytest.warns(UserWarning, match=r"at 100 Hz its band is 0\.1–40 Hz, but the model was tuned on one_channel "
                                         r"windows of 0\.1–51 Hz"):
        answers = ask(tmp_path / "inst", tmp_path / "r100" / "p1_weak.edf", "one_channel", every=4.0)
    assert len(answers) == 10
    assert main(["ask", str(tmp_path / "inst"), str(tmp_path / "r100" / "p1_weak.edf"), "--task", "one_channel",
                 "--device", "cpu"]) == 0
    assert "asked one_channel" in capsys.readouterr().out


def test_the_flag_allows_low_rates_for_a_builtin_free_task_file(tmp_path, edf_writer):
    one_channel_edfs(tmp_path / "r100", 100.0, edf_writer)
    assert main(["prepare", "--task-file", str(write_low_rate_task(tmp_path / "t.toml", allow=False)),
                 str(tmp_path / "r100"), str(tmp_path / "store"), "--allow-low-rate", "--workers", "1"]) == 0
    m = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert m["band_hz"] == [0.1, 40.0] and m["files"]["ok"] == 8


# --- Python 3.10 ----------------------------------------------------------------------------------------------------
def test_task_files_parse_with_tomli_where_tomllib_is_missing(monkeypatch):
    """Python 3.10 has no tomllib: the task-file parser falls back to tomli (a dependency there)."""
    import importlib
    import sys

    pytest.importorskip("tomli", reason="tomli is in the dev extra: pip install -c constraints-cpu.txt -e '.[dev]'")
    from neurolm.data import taskfile

    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now fails, as on 3.10
    try:
        reloaded = importlib.reload(taskfile)
        assert reloaded.tomllib.__name__ == "tomli"
        spec = reloaded.load_task_file(EXAMPLES / "ssvep_exo.toml")
        assert spec.scale == 0.01 and spec.labels.duration_s == 5.0
    finally:
        monkeypatch.undo()
        importlib.reload(taskfile)
    assert taskfile.tomllib.__name__ == "tomllib"


def _python310() -> str | None:
    """A working Python 3.10 interpreter (PATH, or pyenv's versions whose shims may not be active), if any."""
    candidates = [shutil.which("python3.10"), *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    for exe in filter(None, candidates):
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 10)":
            return exe
    return None


PY310 = _python310()


@pytest.mark.skipif(PY310 is None, reason="no working Python 3.10 interpreter to parse the package with")
def test_every_module_parses_on_python_3_10_and_imports_no_newer_stdlib_module():
    """The declared minimum (requires-python >= 3.10): its parser reads every module, and no module imports a
    standard-library module 3.10 lacks, but behind a version check (tomllib)."""
    script = r'''
import ast, pathlib, sys
bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    text = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as exc:
        bad.append(f"{path}: {exc}")
        continue
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            top = name.split(".")[0]
            if top in sys.argv[2].split(",") and top not in sys.stdlib_module_names and (
                    "sys.version_info >= (3, 11)" not in text):
                bad.append(f"{path}: imports {top}, not in Python 3.10")
print("\n".join(bad))
sys.exit(1 if bad else 0)
'''
    newer = ",".join(sorted(sys.stdlib_module_names))
    src = Path(__file__).resolve().parents[1] / "src" / "neurolm"
    out = subprocess.run([PY310, "-c", script, str(src), newer], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --- logging ----------------------------------------------------------------------------------------------------------
def test_library_messages_go_through_the_neurolm_logger_and_the_cli_sets_its_level(fifs, tmp_path, capsys, caplog):
    import logging

    task = write_task(tmp_path / "t.toml", scale="scale = 0.01")
    cmd = ["prepare", "--task-file", str(task), str(fifs), str(tmp_path / "store"), "--workers", "1"]
    assert main(cmd) == 0
    capsys.readouterr()
    assert main(cmd) == 0  # done already: the library says so, at INFO, on stdout
    out = capsys.readouterr().out
    assert "flicker: already prepared in" in out and "prepared flicker: 64 windows" in out
    assert main([*cmd, "--quiet"]) == 0  # only warnings and errors of the library; the command's result stays
    out = capsys.readouterr().out
    assert "already prepared" not in out and "prepared flicker: 64 windows" in out
    assert main([*cmd, "-v"]) == 0 and logging.getLogger("neurolm").level == logging.DEBUG
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="neurolm"):  # a host application's own handler sees the records
        prepare_task_file(task, fifs, tmp_path / "store", progress=False)
    assert [(r.name, r.levelno) for r in caplog.records if "already prepared" in r.getMessage()] == [
        ("neurolm.data.prepare", logging.INFO)]


def test_labels_left_out_of_an_all_channels_task_are_logged(caplog):
    import logging

    from neurolm.data.readers import Segment
    from neurolm.data.readers.pretrain import Pretrain

    raw = mne.io.RawArray(np.zeros((3, 200)), mne.create_info(["Cz", "VEOG", "EKG1"], 200.0, "eeg"), verbose="error")
    with caplog.at_level(logging.DEBUG, logger="neurolm"):
        seg = Pretrain().pick(Segment(raw, []))
    assert seg.names == ["CZ"]
    assert "no 10-20 channel, left out: VEOG, EKG1" in caplog.text


def test_an_events_file_named_by_a_template(fifs, tmp_path):
    import shutil as sh

    root = tmp_path / "raw"
    for s in ("s0", "s1", "s2", "s3"):
        (root / s).mkdir(parents=True)
        sh.copy(fifs / s / "record-[2012.07.06-19.02.16]_raw.fif", root / s / "rec_raw.fif")
        sh.copy(fifs / s / "record-[2012.07.06-19.02.16]-eve.fif", root / s / "rec.events.fif")
    task = write_task(tmp_path / "t.toml", scale="scale = 0.01", labels='duration_s = 5\nfile = "{stem}.events.fif"')
    m = prepare_task_file(task, root, tmp_path / "store", progress=False)
    assert m["files"]["ok"] == 4 and sum(s["windows"] for s in m["splits"].values()) == 64
    bad = write_task(tmp_path / "b.toml", labels='duration_s = 5\nfile = "{name}.eve"')
    with pytest.raises(NeuroLMError, match=r"labels\.file = '\{name\}\.eve': .*\{stem\}"):
        prepare_task_file(bad, root, tmp_path / "s2", progress=False)
