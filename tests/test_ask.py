"""Asking a model about a recording: channel mapping, the training preprocessing, windows, answers and the CLI."""

from __future__ import annotations

import warnings

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


@pytest.fixture(scope="module")
def long_signal() -> np.ndarray:
    """Five minutes of HMC-like noise: long enough for chunks of 30 s with their ~40 s margins."""
    return np.random.default_rng(1).normal(0, 20, (len(HMC_LABELS), int(SFREQ * 300)))


def _spy_filtered_lengths(monkeypatch) -> list[int]:
    """Record the length of every piece handed to the filters."""
    from neurolm.data import preprocess

    lengths, filter_piece = [], preprocess.preprocess_array
    monkeypatch.setattr(preprocess, "preprocess_array", lambda x, *a: lengths.append(x.shape[1]) or filter_piece(x, *a))
    return lengths


def test_chunked_answers_equal_the_whole_file_path(model, tmp_path, edf_writer, long_signal, monkeypatch):
    """Read and filtered 30 s at a time, windows straddling the chunks: the answers of the whole-file path."""
    from neurolm.data.preprocess import filter_edge

    path = edf_writer(tmp_path / "long.edf", HMC_LABELS, SFREQ, 300, data=long_signal)
    whole = ask(model, path, "hmc", every=13, chunk_s=None, batch_size=4)
    lengths = _spy_filtered_lengths(monkeypatch)
    chunked = ask(model, path, "hmc", every=13, chunk_s=30, batch_size=4)
    edge = filter_edge(SFREQ, PreprocessConfig(mains=50.0))
    assert len(lengths) > 5 and max(lengths) <= round(30 * SFREQ) + 32 + 2 * edge  # never more than a chunk's worth
    assert len(chunked) == len(whole) == 21
    for a, b in zip(whole, chunked):
        assert (a.start, a.end, a.label, a.answer) == (b.start, b.end, b.label, b.answer)
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-6)
    items, starts = task_windows(path, "hmc", every=13, chunk_s=None)
    pieces, chunk_starts = task_windows(path, "hmc", every=13, chunk_s=30)
    assert chunk_starts == starts
    for it, piece in zip(items, pieces):
        np.testing.assert_allclose(piece["signal"], it["signal"], rtol=0, atol=1e-6)
    # the margins are what makes them equal: chunks read without them differ at every chunk boundary
    monkeypatch.setattr("neurolm.data.preprocess.filter_edge", lambda sfreq, config: 32)
    cut, _ = task_windows(path, "hmc", every=13, chunk_s=30)
    assert max(np.abs(c["signal"] - it["signal"]).max() for c, it in zip(cut, items)) > 1e-2


def test_one_window_of_a_long_recording_filters_only_its_chunks(tmp_path, edf_writer, long_signal, monkeypatch):
    path = edf_writer(tmp_path / "long.edf", HMC_LABELS, SFREQ, 300, data=long_signal)
    (whole,), _ = task_windows(path, "hmc", start=200, chunk_s=None)
    lengths = _spy_filtered_lengths(monkeypatch)
    (piece,), _ = task_windows(path, "hmc", start=200, chunk_s=30)
    assert len(lengths) == 2  # 200-230 s lies in the chunks 180-210 s and 210-240 s
    np.testing.assert_allclose(piece["signal"], whole["signal"], rtol=0, atol=1e-6)


def _damaged(kind: str, signal: np.ndarray) -> mne.io.RawArray:
    volts = signal[:4] * 1e-6
    if kind == "flat":
        volts[1] = 1e-7  # C4 dead: constant
    elif kind == "degenerate":
        volts[2] = np.sign(volts[2]) * 2e-5  # O2 takes two values
    elif kind == "nan":
        volts[3, -100:] = np.nan  # C3: NaN in the last chunk only
    elif kind in ("some implausible", "most implausible"):
        volts[:, : int(SFREQ * (60 if kind == "some implausible" else 200))] *= 1000  # mV-sized stretch
    return mne.io.RawArray(volts, mne.create_info(HMC_LABELS[:4], SFREQ, "eeg"), verbose="error")


@pytest.mark.parametrize("kind", ["flat", "degenerate", "nan", "some implausible", "most implausible"])
def test_chunked_checks_equal_the_whole_file_checks(kind, long_signal):
    """The whole-recording checks, accumulated chunk by chunk, give the whole-file path's verdicts and messages."""
    raw = _damaged(kind, long_signal)
    outcomes = []
    for chunk_s in (None, 30):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                items, _ = task_windows(raw, "hmc", every=30, chunk_s=chunk_s)
                outcomes.append(("ok", len(items)))
            except NeuroLMError as exc:
                outcomes.append(("refused", str(exc)))
        outcomes.append([str(w.message) for w in caught if "implausible" in str(w.message)])
    assert outcomes[:2] == outcomes[2:]
    expected = {"flat": "flat channel(s) C4", "degenerate": "degenerate channel(s) O2",
                "nan": "NaN/Inf samples in channel(s) EEG C3-M2 (100 of 76800 samples)",
                "most implausible": "7 of 10 windows implausible"}
    if kind in expected:
        assert outcomes[0][0] == "refused" and expected[kind] in outcomes[0][1]
    else:
        assert outcomes[0] == ("ok", 8) and "2 of 10 windows implausible" in outcomes[1][0]


def test_checks_of_a_long_recording_hold_one_chunk_at_a_time(tmp_path, edf_writer, long_signal):
    """The whole-recording checks keep running values, not the recording: their peak is near one chunk's size."""
    import tracemalloc

    from neurolm.data.readers import Segment, get_reader
    from neurolm.data.windows import scan_channels

    seg = Segment(read_raw(edf_writer(tmp_path / "long.edf", HMC_LABELS, SFREQ, 300, data=long_signal),
                           preload=False), [])
    get_reader("hmc").pick(seg)
    whole = len(seg.labels) * seg.raw.n_times * 8  # the four channels in float64
    tracemalloc.start()
    try:
        flat, degenerate, nonfinite = scan_channels(seg, PreprocessConfig(), chunk=int(10 * SFREQ))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not flat.any() and not degenerate.any() and not nonfinite.any()
    assert peak < whole / 2  # keeping every chunk (e.g. through views of them) reaches more than whole
