"""Own tasks from task files: four label sources on data made here (EDF+ annotations, BIDS events.tsv, file names,
a CSV table), prepared, tuned with a built-in task, evaluated and asked by name from the model directory alone; the
Workload task file against `neurolm prepare workload`; bad task files."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest

from neurolm.cli import main
from neurolm.data import taskfile
from neurolm.data.channels import channel_indices
from neurolm.data.prepare import prepare_dataset, prepare_task_file
from neurolm.data.store import MANIFEST, SplitBuffer, WindowStore, write_split
from neurolm.errors import NeuroLMError

SHARED = Path(__file__).resolve().parents[2] / "shared"
EEGMAT = SHARED / "data" / "eegmat-dev"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
CHANNELS = ["C3", "Cz", "C4", "Pz"]
SFREQ = 200.0

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_raw(seconds: float, seed: int, alpha: float = 10.0) -> mne.io.RawArray:
    """Four EEG channels of noise plus a 10 Hz rhythm of ``alpha`` µV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    data = rng.normal(0, 10, (len(CHANNELS), len(t))) + alpha * np.sin(2 * np.pi * 10 * t)
    return mne.io.RawArray(data * 1e-6, mne.create_info(CHANNELS, SFREQ, "eeg"), verbose="error")


def annotated(seconds: float, seed: int) -> mne.io.RawArray:
    """Alternating 4 s ``left`` / ``right`` events (and one ``ignored``), plus a 1 s ``left`` cue."""
    raw = synthetic_raw(seconds, seed)
    onsets = np.arange(0, seconds - 4, 4.0)
    names = ["left" if i % 2 == 0 else "right" for i in range(len(onsets))]
    raw.set_annotations(mne.Annotations([*onsets, seconds - 3], [4.0] * len(onsets) + [1.0],
                                        [*names[:-1], "ignored", "left"]))
    return raw


def write_task(path: Path, name: str, labels: str, *, extra: str = "", split: str = "") -> Path:
    path.write_text(f'''name = "{name}"
question = "Which hand is imagined?"
options = ["left hand", "right hand"]
classes = ["left", "right"]
channels = ["C3", "CZ", "C4"]
window_s = 2
{extra}
[labels]
{labels}
[split]
by = "subject"
fractions = {{ train = 0.5, val = 0.25, test = 0.25 }}
{split}''')
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Four own-task stores, one per label source, each from four subjects."""
    root = tmp_path_factory.mktemp("own")
    stores = {}
    edf = root / "edf"
    edf.mkdir()
    for s in range(4):
        mne.export.export_raw(edf / f"S{s}_run1.edf", annotated(40, s), fmt="edf", verbose="error")
    task = write_task(root / "edf.toml", "mi_edf", 'source = "annotations"',
                      extra='[recordings]\nsubject = \'^(S\\d+)_\'\n')
    stores["mi_edf"] = prepare_task_file(task, edf, root / "p_edf", progress=False)

    mne_bids = pytest.importorskip("mne_bids")
    bids = root / "bids"
    for s in range(4):
        path = mne_bids.BIDSPath(subject=f"{s + 1:02d}", task="mi", root=bids, datatype="eeg")
        mne_bids.write_raw_bids(annotated(40, 10 + s), path, format="EDF", allow_preload=True, verbose="error")
    task = write_task(root / "bids.toml", "mi_bids", 'source = "bids_events"')
    stores["mi_bids"] = prepare_task_file(task, bids, root / "p_bids", progress=False)

    names = root / "names"
    names.mkdir()
    for s in range(4):
        for k, cls in enumerate(("L", "R")):
            mne.export.export_raw(names / f"sub{s}_{cls}.edf", synthetic_raw(20, 20 + 2 * s + k, 10.0 + 20 * k),
                                  fmt="edf", verbose="error")
    task = write_task(root / "names.toml", "mi_names", 'source = "filename"\npattern = \'_([LR])$\'\n'
                      'map = { L = "left", R = "right" }\nlast_s = 10',
                      extra='[recordings]\nsubject = \'(sub\\d+)_\'\n')
    stores["mi_names"] = prepare_task_file(task, names, root / "p_names", progress=False)

    table = root / "table"
    table.mkdir()
    rows = ["file,start,stop,label"]
    for s in range(4):
        synthetic = synthetic_raw(30, 30 + s)
        mne.export.export_raw(table / f"rec{s}.edf", synthetic, fmt="edf", verbose="error")
        rows += [f"rec{s}.edf,0,12,left", f"rec{s}.edf,12,24,right", f"rec{s}.edf,25,26,right"]
    (table / "labels.csv").write_text("\n".join(rows) + "\n")
    task = write_task(root / "csv.toml", "mi_csv", 'source = "csv"\nfile = "labels.csv"',
                      split='order = "sorted"')
    stores["mi_csv"] = prepare_task_file(task, table, root / "p_csv", progress=False)
    return root, stores


def test_each_label_source_gives_windows_of_both_classes_in_every_split(own):
    root, manifests = own
    for name, m in manifests.items():
        assert m["dataset"] == name and m["classes"] == ["left", "right"]
        assert m["task"]["definition"]["name"] == name
        for split, summary in m["splits"].items():
            assert summary["windows"] > 0 and summary["subjects"] == (2 if split == "train" else 1), (name, split)
            assert all(summary["classes"][c] > 0 for c in ("left", "right")), (name, split, summary)
    store = WindowStore(root / "p_edf")
    item = store.split("train")[0]
    assert item["signal"].shape == (3, 400) and list(item["chans"]) == channel_indices(["C3", "CZ", "C4"])
    # 40 s: 4 s events at 0, 4, …, 32 (the last 'ignored') → 8 labelled events of two 2 s windows, + the 1 s cue's one
    # centred window
    windows = sum(len(store.split(s)) for s in store.splits)
    assert windows == 4 * (8 * 2 + 1)
    starts = {float(store.split(s)[i]["start"]) for s in store.splits for i in range(len(store.split(s)))}
    assert 36.5 in starts  # the 1 s cue at 37 s, centred in its window
    csv_store = WindowStore(root / "p_csv")
    assert sum(len(csv_store.split(s)) for s in csv_store.splits) == 4 * (6 + 6 + 1)
    assert json.loads((root / "p_csv" / MANIFEST).read_text())["splits"]["train"]["files"] == 2


def test_bids_subjects_come_from_the_entities(own):
    store = WindowStore(own[0] / "p_bids")
    subjects = {str(s) for split in store.splits for s in store.split(split).subjects}
    assert subjects == {"01", "02", "03", "04"}


def test_split_by_time_cuts_every_stretch_into_the_three_splits(own, tmp_path):
    task = write_task(tmp_path / "t.toml", "mi_time", 'source = "annotations"')
    task.write_text(task.read_text().replace('by = "subject"', 'by = "time"'))
    m = prepare_task_file(task, own[0] / "edf", tmp_path / "out", progress=False)
    for split, summary in m["splits"].items():  # 4 s events of two windows: 4 s < 3 blocks × 2 s, so by position
        assert summary["subjects"] == 4 and summary["windows"] > 0, split
    store = WindowStore(tmp_path / "out")
    first = {s: min(float(store.split(s)[i]["start"]) for i in range(len(store.split(s)))) for s in store.splits}
    assert first["train"] < first["val"] < first["test"]  # consecutive blocks of each recording's time line


def test_a_subject_table_labels_whole_recordings(own, tmp_path):
    names = tmp_path / "names"
    shutil.copytree(own[0] / "names", names)
    (names / "subjects.csv").write_text("subject,label\nsub0,left\nsub1,right\nsub2,left\nsub3,right\n")
    task = write_task(tmp_path / "t.toml", "mi_subjects", f'source = "subject_table"\nfile = "{names / "subjects.csv"}"'
                      '\nlast_s = 10', extra='[recordings]\nsubject = \'(sub\\d+)_\'\n')
    m = prepare_task_file(task, names, tmp_path / "out", progress=False)
    counts = {c: sum(s["classes"][c] for s in m["splits"].values()) for c in ("left", "right")}
    assert counts == {"left": 2 * 2 * 5, "right": 2 * 2 * 5}  # 2 subjects × 2 files × the last 10 s in 2 s windows


def builtin_store(root: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A hand-made Workload store (a built-in task) with 8 windows in each of ``splits``."""
    from neurolm.instruct.tasks import TASKS

    task = TASKS["workload"]
    idx = np.array(channel_indices(task.channels))
    rng = np.random.default_rng(0)
    root.mkdir()
    for split in splits:
        buf = SplitBuffer()
        for i in range(8):
            buf.add(rng.normal(0, 0.3, (len(idx), 800)).astype(np.float32), idx, i % 2, 4.0 * i, f"s{i % 4}", "f.edf")
        write_split(root, split, buf)
    (root / MANIFEST).write_text(json.dumps({"dataset": "workload", "complete": True, "classes": list(task.classes)}))
    return root


def test_tune_evaluate_and_ask_own_tasks_from_the_model_directory(own, model, tmp_path, monkeypatch, capsys):
    from neurolm.data.provenance import read_training
    from neurolm.instruct.ask import ask
    from neurolm.instruct.evaluate import evaluate
    from neurolm.instruct.train import instruct

    root, _ = own
    model.save_pretrained(tmp_path / "lm")
    stores = [builtin_store(tmp_path / "workload"), *(root / f"p_{k}" for k in ("edf", "bids", "names", "csv"))]
    instruct(tmp_path / "lm", stores, tmp_path / "inst", steps=2, batch_size=4, progress=False, device="cpu")
    record = read_training(tmp_path / "inst")
    assert record["tuned_tasks"] == ["workload", "mi_edf", "mi_bids", "mi_names", "mi_csv"]
    assert record["task_definitions"]["mi_csv"]["instruction"]["answers"] == [" (A)", " (B)"]

    monkeypatch.setattr(taskfile, "_KNOWN", {})  # a fresh process: no task file or store opened yet
    answers = ask(tmp_path / "inst", root / "edf" / "S0_run1.edf", "mi_edf", every=2.0)
    assert len(answers) == 20 and {a.label_name for a in answers} <= {"left", "right"}
    assert all(abs(sum(a.probabilities.values()) - 1) < 1e-6 for a in answers)

    monkeypatch.setattr(taskfile, "_KNOWN", {})
    assert main(["ask", str(tmp_path / "inst"), str(root / "table" / "rec1.edf"), "--task", "mi_csv",
                 "--device", "cpu"]) == 0
    assert "asked mi_csv" in capsys.readouterr().out

    metrics = evaluate(tmp_path / "inst", [stores[0], *stores[1:]], tmp_path / "eval", progress=False, device="cpu")
    assert set(metrics) == {"workload", "mi_edf", "mi_bids", "mi_names", "mi_csv"}
    assert metrics["mi_bids"]["classes"] == ["left", "right"] and 0 <= metrics["mi_bids"]["scored"][
        "balanced_accuracy"] <= 1


def test_untuned_own_task_is_refused_by_ask(own, model, tmp_path):
    from neurolm.data.provenance import write_training
    from neurolm.instruct.ask import ask

    model.save_pretrained(tmp_path / "lm")
    write_training(tmp_path / "lm", [], tuned=False)
    with pytest.raises(NeuroLMError, match="no instruction task for dataset 'never_seen'"):
        ask(tmp_path / "lm", own[0] / "edf" / "S0_run1.edf", "never_seen")


# --- the Workload task file -----------------------------------------------------------------------------------------
def assert_same_store(a: Path, b: Path) -> None:
    for split in ("train", "val", "test"):
        with np.load(a / f"{split}.npz") as x, np.load(b / f"{split}.npz") as y:
            assert sorted(x.files) == sorted(y.files)
            for key in x.files:
                assert np.array_equal(x[key], y[key]), (split, key)
        assert filecmp.cmp(a / f"{split}.bin", b / f"{split}.bin", shallow=False), split


def workload_pair(raw: Path, out: Path) -> None:
    prepare_dataset("workload", raw, out / "builtin", progress=False)
    m = prepare_task_file(EXAMPLES / "workload.toml", raw, out / "file", progress=False)
    assert m["dataset"] == "eegmat" and m["classes"] == ["rest", "arithmetic"]
    assert_same_store(out / "builtin", out / "file")


@pytest.mark.skipif(not EEGMAT.is_dir(), reason=f"no real EEGMAT recordings at {EEGMAT} (a clone has no ../shared)")
def test_workload_task_file_equals_the_builtin_on_three_subjects(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for edf in sorted(EEGMAT.glob("Subject0[0-2]_*.edf")):
        shutil.copy(edf, raw / edf.name)
    workload_pair(raw, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not EEGMAT.is_dir(), reason=f"no real EEGMAT recordings at {EEGMAT} (a clone has no ../shared)")
def test_workload_task_file_equals_the_builtin_on_eegmat_dev(tmp_path):
    workload_pair(EEGMAT, tmp_path)


# --- bad task files -------------------------------------------------------------------------------------------------
def test_unknown_keys_name_file_key_and_value(tmp_path):
    task = write_task(tmp_path / "t.toml", "x", 'source = "annotations"\ncolour = "red"')
    with pytest.raises(NeuroLMError, match=r"t\.toml: labels\.colour = 'red': unknown key"):
        taskfile.load_task_file(task)
    task.write_text(task.read_text().replace('window_s = 2', 'window_s = 2\nwindow = 4'))
    with pytest.raises(NeuroLMError, match=r"t\.toml: window = 4: unknown key"):
        taskfile.load_task_file(task)


@pytest.mark.parametrize("edit,match", [
    (('name = "x"', 'name = "tuab"'), r"name = 'tuab': is a built-in dataset"),
    (('channels = ["C3", "CZ", "C4"]', 'channels = ["C3", "XX"]'), r"channels = 'XX': not a 10-20 channel"),
    (('window_s = 2', 'window_s = 2.5'), r"window_s = 2.5: must be a whole number"),
    (('source = "annotations"', 'source = "tsv"'), r"labels.source = 'tsv': choose one of"),
    (('train = 0.5', 'train = 0.6'), r"split.fractions = .*must sum to 1"),
    (('options = ["left hand", "right hand"]', 'options = ["left hand"]'), r"options = \['left hand'\]: must be 2"),
])
def test_bad_values_name_file_key_and_value(tmp_path, edit, match):
    task = write_task(tmp_path / "t.toml", "x", 'source = "annotations"')
    task.write_text(task.read_text().replace(*edit))
    with pytest.raises(NeuroLMError, match=r"t\.toml: " + match):
        taskfile.load_task_file(task)


def test_a_class_with_no_example(own, tmp_path):
    task = write_task(tmp_path / "t.toml", "x", 'source = "annotations"\nmap = { left = "left", up = "right" }')
    with pytest.raises(NeuroLMError, match=r"t\.toml: classes: 'right' has no labelled example .*\['up'\]"):
        prepare_task_file(task, own[0] / "edf", tmp_path / "out", progress=False)


def test_a_label_source_that_matches_nothing(own, tmp_path):
    task = write_task(tmp_path / "t.toml", "x", 'source = "filename"\npattern = \'_(up|down)$\'\n'
                      'map = { up = "left", down = "right" }')
    with pytest.raises(NeuroLMError, match=r"t\.toml: labels.pattern = '_\(up\|down\)\$': matches none of the 4 "
                                           r"recordings"):
        prepare_task_file(task, own[0] / "edf", tmp_path / "out", progress=False)
    task = write_task(tmp_path / "t.toml", "x", 'source = "annotations"\nmap = { T1 = "left", T2 = "right" }')
    with pytest.raises(NeuroLMError, match=r"t\.toml: labels.source = 'annotations': no label of labels.map "
                                           r"\['T1', 'T2'\] .*values found: 'left'"):
        prepare_task_file(task, own[0] / "edf", tmp_path / "out", progress=False)


def test_channels_missing_from_every_recording(own, tmp_path):
    task = write_task(tmp_path / "t.toml", "x", 'source = "annotations"')
    task.write_text(task.read_text().replace('["C3", "CZ", "C4"]', '["C3", "O1", "O2"]'))
    with pytest.raises(NeuroLMError, match=r"t\.toml: channels: \['O1', 'O2'\] missing from every recording"):
        prepare_task_file(task, own[0] / "edf", tmp_path / "out", progress=False)


def test_cli_prepares_a_task_file_and_refuses_both_forms(own, tmp_path, capsys):
    task = own[0] / "csv.toml"
    assert main(["prepare", "--task-file", str(task), str(own[0] / "table"), str(tmp_path / "p"),
                 "--workers", "1"]) == 0
    assert "prepared mi_csv" in capsys.readouterr().out
    for both_or_neither in (["workload"], []):
        assert main(["prepare", *both_or_neither, str(own[0] / "table"), str(tmp_path / "q"),
                     *(["--task-file", str(task)] if both_or_neither else [])]) == 2
        assert "not both or neither" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_the_example_task_files_parse(path):
    spec = taskfile.load_task_file(path)
    assert spec.dataset.instruction.text.startswith("Question: ") and spec.dataset.instruction.text.endswith("Answer:")
    assert len(spec.dataset.instruction.answers) == len(spec.dataset.classes)
