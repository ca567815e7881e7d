"""``training.json``: what a model learnt from, and how ``ask`` and ``evaluate`` use it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from neurolm.data.provenance import (TRAINING_FILE, check_store, dataset_entry, preprocess_config, read_training,
                                     write_training)
from neurolm.errors import NeuroLMError
from neurolm.instruct.ask import ask, task_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_record_holds_the_stores_preprocessing_and_tasks(tuned_dir, hmc):
    record = read_training(tuned_dir)
    assert record["tuned_tasks"] == ["hmc"]
    entry = record["datasets"]["hmc"]
    assert entry["preprocessing"]["mains"] == 60.0 and entry["window_s"] == 30.0
    assert entry["channels"] == ["F4", "C4", "O2", "C3"]
    config = preprocess_config(entry)
    assert (config.mains, config.l_freq, config.h_freq, config.sfreq, config.scale_uv) == (60.0, 0.1, 75.0, 200.0, 100)
    assert preprocess_config({**entry, "preprocessing": {**entry["preprocessing"], "a_future_field": 1}}) == config
    # a later stage keeps the earlier stages' record and adds its own tasks
    child = write_training(tuned_dir / "child", [hmc[1]], tuned=True, parent=tuned_dir)
    assert child["tuned_tasks"] == ["hmc"] and child["datasets"]["hmc"] == entry
    assert read_training(tuned_dir / "nothing") is None
    (tuned_dir / "child" / TRAINING_FILE).write_text("{")
    with pytest.raises(NeuroLMError, match="training.json: not valid JSON"):
        read_training(tuned_dir / "child")


def test_ask_cuts_and_filters_as_the_training_store(tuned_dir, hmc, model):
    recording, store = hmc
    entry = read_training(tuned_dir)["datasets"]["hmc"]
    items, starts = task_windows(recording, "hmc", every=30, trained=entry)
    split = store.split(store.splits[0])
    stored = {split[i]["start"]: split[i]["signal"] for i in range(len(split)) if split[i]["file"] == store.split(
        store.splits[0])[0]["file"]}
    assert len(stored) > 3
    for s, it in zip(starts, items):
        if s in stored:  # bit-identical to the 60 Hz windows the model was tuned on
            np.testing.assert_array_equal(it["signal"], stored[s])
    default, _ = task_windows(recording, "hmc", every=30)  # HMC's 50 Hz default differs
    assert not np.array_equal(default[0]["signal"], items[0]["signal"])
    (from_dir,) = ask(tuned_dir, recording, "hmc", start=30)
    (explicit,) = ask(model, recording, "hmc", start=30, mains=60.0)
    assert from_dir == explicit


def test_ask_refuses_a_task_the_model_was_not_tuned_on(tuned_dir, tmp_path, edf_writer):
    names = "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz Pz".split()
    recording = edf_writer(tmp_path / "eegmat.edf", names, 500.0, 12.0)
    with pytest.raises(NeuroLMError, match=r"not instruction-tuned on workload \(tuned on: hmc\).*"
                                           r"--allow-untrained-task"):
        ask(tuned_dir, recording, "workload")
    with pytest.warns(UserWarning, match="answering anyway"):
        (answer,) = ask(tuned_dir, recording, "workload", allow_untrained_task=True)
    assert answer.answer in {"Yes", "No"}


def test_ask_applies_the_bad_input_checks_of_prepare(tuned_dir, tmp_path, edf_writer):
    data = np.random.default_rng(0).normal(0, 20, (4, 200 * 60))
    data[2] = 3.0  # a disconnected electrode: constant
    recording = edf_writer(tmp_path / "flat.edf", ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2"], 200.0, 60.0,
                           data=data)
    with pytest.raises(NeuroLMError) as caught:
        ask(tuned_dir, recording, "hmc")
    assert str(caught.value) == (f"{recording}: task hmc: flat channel(s) O2 (EEG O2-M1): peak-to-peak below 1 µV over "
                                 "the whole recording; the dataset needs every one of its channels")


def test_cli_without_a_record_warns(model, hmc, tmp_path, capsys):
    from neurolm.cli import main

    model.save_pretrained(tmp_path / "old")  # a directory written before training.json existed
    with pytest.warns(UserWarning, match="no training.json"):
        assert main(["ask", str(tmp_path / "old"), str(hmc[0]), "--task", "hmc", "--device", "cpu"]) == 0
    assert "asked hmc" in capsys.readouterr().out


def test_evaluate_store_check(hmc):
    store = hmc[1]
    record = {"format": 1, "tuned_tasks": ["hmc"], "datasets": {"hmc": dataset_entry(store)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_store(record, store, "model")  # prepared as trained: silent
    with pytest.warns(UserWarning, match="not instruction-tuned"):
        check_store({**record, "tuned_tasks": ["tuab"]}, store, "model")
    record["datasets"]["hmc"]["preprocessing"] = {**store.manifest["preprocessing"], "mains": 50.0}
    with pytest.warns(UserWarning, match="preprocessing differ from the hmc windows the model was trained on"):
        check_store(record, store, "model")


def test_instruction_tuning_writes_the_record(model, hmc, tmp_path):
    from neurolm.instruct.train import instruct

    model.save_pretrained(tmp_path / "lm")
    write_training(tmp_path / "lm", [], tuned=False)  # a pretraining stage's record, no task yet
    instruct(tmp_path / "lm", [hmc[1].root], tmp_path / "inst", steps=1, batch_size=2, progress=False, device="cpu")
    record = read_training(tmp_path / "inst")
    assert record["tuned_tasks"] == ["hmc"]
    assert record["datasets"]["hmc"] == dataset_entry(hmc[1])


def test_instruction_tuning_adds_the_window_summary_when_asked(model, hmc, tmp_path):
    from neurolm.instruct.train import instruct
    from neurolm.lm import NeuroLM

    model.save_pretrained(tmp_path / "lm")
    assert not model.config.window_summary
    for on in (True, False):
        out = tmp_path / f"inst-{on}"
        instruct(tmp_path / "lm", [hmc[1].root], out, steps=1, batch_size=2, progress=False, device="cpu",
                 window_summary=on)
        tuned = NeuroLM.from_pretrained(out)
        assert tuned.config.window_summary is on
        if on:  # its scaler was fitted on the training windows (the identity is what an unfitted one holds)
            assert not torch.equal(tuned.summary.mean, torch.zeros_like(tuned.summary.mean))
        else:
            assert not any(k.startswith("summary.") for k in tuned.state_dict())
