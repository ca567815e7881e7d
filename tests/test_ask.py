"""Asking a model about a recording: channel mapping, the training preprocessing, windows, answers and the CLI."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch

from neurolm.cli import main
from neurolm.data.batch import collate_windows
from neurolm.data.preprocess import PreprocessConfig, preprocess_raw
from neurolm.data.readers.base import read_raw
from neurolm.errors import NeuroLMError
from neurolm.instruct.ask import Answer, ask, question_prompt, task_windows
from neurolm.instruct.evaluate import decode_answer
from neurolm.text import INSTRUCTION_START, TEXT_VOCAB, TextTokenizer

HMC_LABELS = ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EOG E1-M2"]
SFREQ, SECONDS = 256.0, 100.0


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(0, 20, (len(HMC_LABELS), int(SFREQ * SECONDS)))


@pytest.fixture
def hmc_edf(tmp_path, edf_writer, signal):
    return edf_writer(tmp_path / "night.edf", HMC_LABELS, SFREQ, SECONDS, data=signal)


def test_task_answer_with_renamed_channels(model, hmc_edf, tmp_path, edf_writer, signal):
    (a,) = ask(model, hmc_edf, "hmc")
    assert isinstance(a, Answer) and (a.start, a.end) == (0.0, 30.0)
    assert list(a.probabilities) == ["(A)", "(B)", "(C)", "(D)", "(E)"]
    assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert a.answer == max(a.probabilities, key=a.probabilities.get) == f"({'ABCDE'[a.label]})"
    assert a.label_name == ("W", "N1", "N2", "N3", "R")[a.label]
    # lower-case labels of the same signals, in another order, with a TUH-style suffix: the same answer
    lower = edf_writer(tmp_path / "lower.edf", ["c3-m2", "o2", "eeg c4-ref", "f4", "eog e1-m2"], SFREQ, SECONDS,
                       data=signal[[3, 2, 1, 0, 4]])
    (b,) = ask(model, lower, "hmc")
    assert b.label == a.label
    assert b.probabilities == pytest.approx(a.probabilities, abs=1e-5)


def test_missing_channel_is_named(model, tmp_path, edf_writer):
    path = edf_writer(tmp_path / "no_o2.edf", ["EEG F4-M1", "EEG C4-M1", "EEG C3-M2"], SFREQ, 40)
    with pytest.raises(NeuroLMError, match=r"no_o2\.edf: task hmc: missing required channel\(s\) O2; "
                                           r"the recording has: EEG F4-M1, EEG C4-M1, EEG C3-M2"):
        ask(model, path, "hmc")


def test_windows_are_preprocessed_as_in_training(hmc_edf):
    items, starts = task_windows(hmc_edf, "hmc", every=30)
    raw = read_raw(hmc_edf)
    expected = preprocess_raw(raw, HMC_LABELS[:4], PreprocessConfig(mains=50.0))  # HMC: Dutch mains
    assert starts == [0.0, 30.0, 60.0]
    for it, s in zip(items, starts):
        a = int(s * 200)
        np.testing.assert_array_equal(it["signal"], expected[:, a : a + 6000])
        assert it["chans"].tolist() == [21, 43, 82, 39]  # F4 C4 O2 C3 in the 10-20 vocabulary


@pytest.mark.parametrize("start,every,starts", [
    (None, None, [0.0]), (12.5, None, [12.5]), (None, 30, [0.0, 30.0, 60.0]), (5, 20, [5.0, 25.0, 45.0, 65.0]),
    (0, 70, [0.0, 70.0]), (0, 80, [0.0]),  # the last window may end exactly at the end
])
def test_every_gives_the_expected_windows(hmc_edf, start, every, starts):
    items, got = task_windows(hmc_edf, "hmc", start=start, every=every)
    assert got == pytest.approx(starts)
    assert [it["signal"].shape for it in items] == [(4, 6000)] * len(starts)


def test_sliding_answers_over_batches(model, hmc_edf):
    answers = ask(model, hmc_edf, "hmc", start=5, every=20, batch_size=3)
    assert [(a.start, a.end) for a in answers] == [(5.0, 35.0), (25.0, 55.0), (45.0, 75.0), (65.0, 95.0)]
    (last,) = ask(model, hmc_edf, "hmc", start=65)
    assert last.probabilities == pytest.approx(answers[-1].probabilities, abs=1e-5)  # batching changes nothing


def test_window_errors(model, hmc_edf):
    with pytest.raises(NeuroLMError, match="no whole 30 s hmc window from 80 s"):
        ask(model, hmc_edf, "hmc", start=80)
    with pytest.raises(NeuroLMError, match="--every must be > 0"):
        ask(model, hmc_edf, "hmc", every=0)
    with pytest.raises(NeuroLMError, match="no instruction task"):
        ask(model, hmc_edf, "pretrain")


def test_raw_object_and_path_agree(model, hmc_edf):
    raw = read_raw(hmc_edf)
    before = raw.get_data().copy()
    (a,) = ask(model, raw, "hmc", start=30)
    (b,) = ask(model, str(hmc_edf), "hmc", start=30)
    assert a == b
    np.testing.assert_array_equal(raw.get_data(), before)  # the caller's recording is not modified
    info = mne.create_info(["Fp1", "Fp2"], 200.0, "eeg")
    with pytest.raises(NeuroLMError, match="recording: task hmc: missing required channel"):
        ask(model, mne.io.RawArray(np.zeros((2, 6000)), info, verbose="error"), "hmc")


def test_free_form_question_equals_uncached_greedy(model, hmc_edf):
    question = "Is the subject asleep?"
    answers = ask(model, hmc_edf, "hmc", start=40, every=30, question=question, max_new_tokens=3)
    assert len(answers) == 2 and all(a.label is None and a.probabilities == {} for a in answers)
    prompt = question_prompt(question)
    assert prompt[0] == INSTRUCTION_START
    assert TextTokenizer().decode(prompt[1:].tolist()) == f"Question: {question} Answer:"
    items, _ = task_windows(hmc_edf, "hmc", start=40, every=30)
    for it, a in zip(items, answers):  # recompute every token from scratch, without a cache
        eeg = collate_windows([it])
        seq = prompt[None]
        for _ in range(3):
            with torch.no_grad():
                logits = model(eeg, seq)["logits"][0, -1]
            seq = torch.cat([seq, logits[:TEXT_VOCAB].argmax().view(1, 1)], dim=1)
        assert a.answer == decode_answer(seq[0, len(prompt):], TextTokenizer()).strip()


def test_cli_prints_a_hypnogram_table(model, hmc_edf, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    png = tmp_path / "night.png"
    rc = main(["ask", str(tmp_path / "model"), str(hmc_edf), "--task", "hmc", "--every", "30", "--plot", str(png),
               "--device", "cpu"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["start_s", "end_s", "answer", "p((A))", "p((B))", "p((C))", "p((D))", "p((E))"]
    rows = [line.split() for line in lines[1:4]]
    assert [r[:2] for r in rows] == [["0.0", "30.0"], ["30.0", "60.0"], ["60.0", "90.0"]]
    for r in rows:
        assert r[2] in {"(A)", "(B)", "(C)", "(D)", "(E)"} and sum(map(float, r[4:])) == pytest.approx(1, abs=3e-3)
    assert lines[-1].startswith(f"asked hmc about {hmc_edf}: 3 window(s) → ")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["ask", str(tmp_path / "model"), str(hmc_edf), "--task", "tuab", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing required channel(s) FP1, FP2, F3" in err and "EEG F4-M1" in err


def test_windows_equal_the_prepared_store(tmp_path):
    """The same recording through `prepare` and through `ask` gives bit-identical windows."""
    from neurolm.data.prepare import prepare_dataset
    from neurolm.data.store import WindowStore
    from neurolm.data.synth import write_corpus

    raw_dir = write_corpus(tmp_path / "raw", ["hmc"], subjects=1)["hmc"]
    prepare_dataset("hmc", raw_dir, tmp_path / "store", progress=False)
    store = WindowStore(tmp_path / "store")
    split = store.split(store.splits[0])
    stored = [split[i] for i in range(len(split)) if split[i]["file"] == split[0]["file"]]
    items, starts = task_windows(raw_dir / stored[0]["file"], "hmc", every=30)
    by_start = dict(zip(starts, items))
    assert len(stored) > 3
    for it in stored:
        np.testing.assert_array_equal(by_start[it["start"]]["signal"], it["signal"])
        np.testing.assert_array_equal(by_start[it["start"]]["chans"], it["chans"])
