"""The one public ``NeuroLM``: ``from_pretrained(dir).ask`` is ``neurolm ask``; Hub-ready folders and offline Hub
ids."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest

from neurolm.api import NeuroLM
from neurolm.cli import main
from neurolm.errors import NeuroLMError

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli_answers(model_dir: Path, recording: Path, task: str, tmp_path: Path, *extra: str) -> list[dict]:
    out = tmp_path / "answers.json"
    assert main(["ask", str(model_dir), str(recording), "--task", task, "--json", str(out), "--device", "cpu",
                 *extra]) == 0
    return json.loads(out.read_text())


def test_python_ask_is_the_cli_ask(tuned_dir, hmc, tmp_path, capsys):
    recording = hmc[0]
    model = NeuroLM.from_pretrained(tuned_dir)
    assert model.training_record["tuned_tasks"] == ["hmc"]
    ours = [asdict(a) for a in model.ask(recording, "hmc", every=30)]
    theirs = _cli_answers(tuned_dir, recording, "hmc", tmp_path, "--every", "30")
    assert ours == theirs and len(ours) > 3
    # the recorded 60 Hz preprocessing is used: HMC's 50 Hz default gives other numbers
    assert [asdict(a) for a in model.ask(recording, "hmc", every=30, mains=50.0)] != ours
    # the table's probability columns are the Python keys
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[3:] == [f"p({k})" for k in ours[0]["probabilities"]]


def test_python_and_cli_refuse_alike(tuned_dir, hmc, tmp_path, edf_writer, capsys):
    names = "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz Pz".split()
    recording = edf_writer(tmp_path / "eegmat.edf", names, 500.0, 12.0)
    with pytest.raises(NeuroLMError) as caught:
        NeuroLM.from_pretrained(tuned_dir).ask(recording, "workload")
    capsys.readouterr()
    assert main(["ask", str(tuned_dir), str(recording), "--task", "workload", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"neurolm ask: error: {caught.value}"
    with pytest.warns(UserWarning, match="answering anyway"):
        ours = NeuroLM.from_pretrained(tuned_dir).ask(recording, "workload", allow_untrained_task=True)
    with pytest.warns(UserWarning, match="answering anyway"):
        theirs = _cli_answers(tuned_dir, recording, "workload", tmp_path, "--allow-untrained-task")
    assert [asdict(a) for a in ours] == theirs


def test_a_model_without_a_record_warns_in_python_as_in_the_cli(model, hmc, tmp_path):
    model.save_pretrained(tmp_path / "old")
    loaded = NeuroLM.from_pretrained(tmp_path / "old")
    assert loaded.training_record is None
    with pytest.warns(UserWarning, match="no training.json"):
        loaded.ask(hmc[0], "hmc")


def _metrics() -> dict:
    return {"hmc": {"scored": {"balanced_accuracy": 0.6123, "ci95": [0.55, 0.67]}, "split": "test", "n": 120,
                    "chance": 0.2, "baseline": {"balanced_accuracy": 0.4871, "ci95": [0.43, 0.54]}}}


def test_save_pretrained_writes_a_card_with_the_metrics_numbers(tuned_dir, tmp_path):
    from neurolm.hub import read_card_metadata, sha256_file

    model = NeuroLM.from_pretrained(tuned_dir)
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics()))
    model.save_pretrained(tmp_path / "hub", metrics=tmp_path / "metrics.json", recipe="neurolm instruct ...")
    meta = read_card_metadata(tmp_path / "hub")
    assert meta["library_name"] == "neurolm" and meta["license"] == "mit" and "eeg" in meta["tags"]
    assert meta["datasets"] == ["hmc"]
    ours = meta["neurolm"]
    assert ours["weights_sha256"] == sha256_file(tmp_path / "hub" / "model.safetensors")
    assert ours["git_commit"] and ours["tuned_tasks"] == ["hmc"]
    assert ours["preprocessing"]["hmc"]["mains"] == 60.0
    hmc = ours["evaluation"]["hmc"]
    assert (hmc["balanced_accuracy"], hmc["ci95"]) == (0.6123, [0.55, 0.67])
    assert (hmc["baseline_balanced_accuracy"], hmc["baseline_ci95"]) == (0.4871, [0.43, 0.54])
    text = (tmp_path / "hub" / "README.md").read_text()
    assert "| hmc | test | 120 | 0.612 [0.550, 0.670] | 0.487 [0.430, 0.540] | 0.2 |" in text
    assert "@inproceedings{jiang2025neurolm" in text and "neurolm instruct ..." in text
    assert json.loads((tmp_path / "hub" / "metrics.json").read_text()) == _metrics()
    assert json.loads((tmp_path / "hub" / "training.json").read_text()) == model.training_record


def _populate_cache(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    """The layout huggingface_hub's cache has after a download: refs/main → snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_id_from_an_offline_cache_pinned_and_hash_checked(tuned_dir, hmc, tmp_path, offline_cache):
    model = NeuroLM.from_pretrained(tuned_dir)
    model.save_pretrained(tmp_path / "folder", metrics=_metrics())
    commit = "0123456789abcdef0123456789abcdef01234567"
    _populate_cache(offline_cache, "org/neurolm-tiny", tmp_path / "folder", commit)
    hub = NeuroLM.from_pretrained("org/neurolm-tiny", revision="main")
    assert hub.source.repo_id == "org/neurolm-tiny" and hub.source.revision == commit
    from neurolm.hub import sha256_file

    assert hub.source.sha256 == sha256_file(tmp_path / "folder" / "model.safetensors")
    for k, v in model.state_dict().items():
        assert v.equal(hub.state_dict()[k]), k
    assert hub.training_record == model.training_record
    assert [asdict(a) for a in hub.ask(hmc[0], "hmc")] == [asdict(a) for a in model.ask(hmc[0], "hmc")]
    # replaced weights under the same card are refused
    weights = offline_cache / "models--org--neurolm-tiny" / "snapshots" / commit / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(NeuroLMError, match="differs from the .* its model card records"):
        NeuroLM.from_pretrained("org/neurolm-tiny", revision=commit)
    with pytest.raises(NeuroLMError, match="org/absent: cannot get it"):
        NeuroLM.from_pretrained("org/absent")


def test_push_to_hub_uploads_the_saved_folder(tuned_dir, tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    pushed = tmp_path / "remote"
    calls = []

    class FakeApi:  # stands in for the Hub: what push_to_hub would send, copied to a local folder
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=""):
            shutil.copytree(folder_path, pushed)
            calls.append(("upload", repo_id, revision))
            return type("Info", (), {"oid": "f" * 40})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = NeuroLM.from_pretrained(tuned_dir)
    assert model.push_to_hub("org/name", metrics=_metrics()) == "f" * 40
    assert calls == [("create", "org/name", False, True), ("upload", "org/name", None)]
    assert {p.name for p in pushed.iterdir()} >= {"config.json", "model.safetensors", "README.md", "training.json",
                                                  "metrics.json"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pushed folder has its record: no warning
        again = NeuroLM.from_pretrained(pushed)
    for k, v in model.state_dict().items():
        assert v.equal(again.state_dict()[k]), k


def test_prepare_takes_a_task_file_as_the_cli(monkeypatch, tmp_path):
    import neurolm.api as api

    calls = []
    monkeypatch.setattr(api, "prepare_task_file", lambda *a, **k: calls.append(("file", a, k)) or {})
    monkeypatch.setattr(api, "prepare_dataset", lambda *a, **k: calls.append(("dataset", a, k)) or {})
    api.prepare(None, "raw", "out", task_file="t.toml", mains=50.0)
    api.prepare("hmc", "raw", "out", seed=3)
    assert calls[0][:2] == ("file", ("t.toml", "raw", "out")) and calls[0][2]["mains"] == 50.0
    assert calls[1][:2] == ("dataset", ("hmc", "raw", "out")) and calls[1][2]["seed"] == 3
    for bad in ({"dataset": None}, {"dataset": "hmc", "task_file": "t.toml"}):
        with pytest.raises(NeuroLMError, match="not both or neither"):
            api.prepare(raw_dir="raw", out_dir="out", **bad)
