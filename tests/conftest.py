"""Shared fixtures: small EDF files written with edfio, the same library the synthetic corpus uses."""

from __future__ import annotations

import signal
from pathlib import Path

import edfio
import numpy as np
import pytest
import torch


def write_edf(path: Path, labels: list[str], sfreq: float, seconds: float, *, data: np.ndarray | None = None,
              seed: int = 0) -> Path:
    """An EDF with the given channel labels; random 20 µV noise unless ``data`` (µV, (C, T)) is given."""
    n = int(round(sfreq * seconds))
    if data is None:
        data = np.random.default_rng(seed).normal(0, 20, (len(labels), n))
    path.parent.mkdir(parents=True, exist_ok=True)
    signals = [edfio.EdfSignal(row, sampling_frequency=sfreq, label=lab, physical_dimension="uV",
                               physical_range=(-1000, 1000)) for lab, row in zip(labels, data)]
    edfio.Edf(signals).write(path)
    return path


@pytest.fixture
def edf_writer():
    return write_edf


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one intra-op thread (no spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """A randomly initialised tiny NeuroLM (tiny tokenizer inside), eval mode, seed 0."""
    from neurolm.lm import NeuroLM
    from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

    torch.manual_seed(0)
    return NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny").eval()


def interrupt_at(monkeypatch: pytest.MonkeyPatch, task_cls: type, step: int) -> None:
    """Make ``task_cls.loss`` raise SIGINT during ``step``: the loop finishes that step, checkpoints and raises
    KeyboardInterrupt (what Ctrl-C does). ``monkeypatch.undo()`` restores it."""
    loss = task_cls.loss

    def interrupting(self, model, batch, at):
        if at == step:
            signal.raise_signal(signal.SIGINT)
        return loss(self, model, batch, at)

    monkeypatch.setattr(task_cls, "loss", interrupting)


@pytest.fixture(scope="session")
def hmc(tmp_path_factory):
    """A synthetic HMC recording and its store prepared with a 60 Hz notch (HMC's default is 50 Hz): ``(recording
    path, WindowStore)``, shared by the provenance and API tests (prepared once per session)."""
    from neurolm.data.prepare import prepare_dataset
    from neurolm.data.store import WindowStore
    from neurolm.data.synth import write_corpus

    tmp = tmp_path_factory.mktemp("hmc60")
    raw_dir = write_corpus(tmp / "raw", ["hmc"], subjects=1)["hmc"]
    prepare_dataset("hmc", raw_dir, tmp / "store", mains=60.0, progress=False)
    store = WindowStore(tmp / "store")
    return raw_dir / store.split(store.splits[0])[0]["file"], store


@pytest.fixture(scope="module")
def tuned_dir(model, hmc, tmp_path_factory) -> Path:
    """The tiny model's directory with a record: tuned on HMC from the 60 Hz store, built on a pretraining stage."""
    from neurolm.data.provenance import write_training

    out = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(out)
    write_training(out, [hmc[1]], tuned=True)
    return out
