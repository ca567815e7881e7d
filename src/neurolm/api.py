"""The Python API: one function per CLI command, same names and arguments, plus the model classes.

``neurolm.api.NeuroLM`` is the one public model class: the network of :mod:`neurolm.lm.model` with ``ask``, its
``training.json`` and the Hugging Face Hub. (The package root does not re-export it: every module imports the root,
and the import layers forbid the root pulling in the API.)

The training stages take the flags of their command as keyword arguments (``batch_size=`` for ``--batch-size``,
see :class:`~neurolm.tokenizer.train.TokenizerArgs`, :class:`~neurolm.lm.pretrain.PretrainArgs` and
:class:`~neurolm.instruct.train.InstructArgs`) and all return a :class:`~neurolm.train.StageResult`: ``out_dir``,
the trained ``model`` and the ``report`` written as ``report.json``.

    from neurolm.api import NeuroLM, prepare, train_tokenizer, pretrain, instruct, evaluate

    prepare("hmc", "/data/hmc", "stores/hmc")
    train_tokenizer(["stores/hmc"], "runs/tok", size="tiny")
    pretrain("runs/tok", ["stores/hmc"], "runs/lm", size="tiny")
    result = instruct("runs/lm", ["stores/hmc"], "runs/inst", steps=400)   # result.report["val"]["ba_mean"]
    metrics = evaluate("runs/inst", ["stores/hmc"], "runs/eval")
    answers = NeuroLM.from_pretrained("runs/inst").ask("SN001.edf", task="hmc", every=30)

``ask`` takes a recording as a path, an ``mne.io.Raw``, or a ``(channels, samples)`` numpy array with its labels,
rate and unit (:func:`neurolm.data.inputs.as_raw`): ``ask("runs/inst", eeg_uv, "hmc", ch_names=["F4", "C4", "O2",
"C3"], sfreq=256, unit="uV")``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data.prepare import prepare_dataset, prepare_task_file
from .data.provenance import TRAINING_FILE, check_task, read_training
from .data.synth import write_corpus as synth
from .demo import run_demo as demo
from .errors import NeuroLMError
from .hub import METRICS_FILE, Resolved, push_folder, resolve, write_model_card
from .instruct.ask import Answer, ask
from .instruct.evaluate import evaluate
from .instruct.train import instruct
from .lm.model import NeuroLM as _NeuroLM
from .lm.pretrain import pretrain
from .tokenizer.model import NeuralTokenizer
from .tokenizer.tokenize import tokenize
from .tokenizer.train import train_tokenizer
from .train import StageResult



def prepare(dataset: str | None, raw_dir: str | Path, out_dir: str | Path, *, task_file: str | Path | None = None,
            mains: float | None = None, seed: int | None = None, progress: bool = True, workers: int = 1,
            dtype: str = "float32") -> dict:
    """``neurolm prepare``: a built-in ``dataset``, or (``dataset=None``) the recordings a TOML ``task_file``
    describes (docs/own-tasks.md); returns the store's manifest."""
    if (dataset is None) == (task_file is None):
        raise NeuroLMError("give a built-in dataset or task_file=T.toml, not both or neither")
    if task_file is not None:
        return prepare_task_file(task_file, raw_dir, out_dir, mains=mains, seed=seed, progress=progress,
                                 workers=workers, dtype=dtype)
    return prepare_dataset(dataset, raw_dir, out_dir, mains=mains, seed=seed, progress=progress, workers=workers,
                           dtype=dtype)


class NeuroLM(_NeuroLM):
    """The public NeuroLM: :class:`neurolm.lm.model.NeuroLM` (the network, which the training stages build and
    return) plus what a user of a trained model needs, which the LM layer below cannot import: :meth:`ask` as the
    CLI asks, the ``training.json`` it was trained with, and the Hugging Face Hub (:mod:`neurolm.hub`).

    A training stage returns the network (``instruct(...).model``); ``NeuroLM.from_pretrained(out_dir)`` gives this
    class with the stage's record."""

    training_record: dict | None = None
    """The model directory's ``training.json`` (tuned tasks, task definitions, preprocessing); None when unknown."""
    source: Resolved | None = None
    """Where the weights came from: the directory, and for a Hub id its pinned revision and the weights' sha256."""

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", *,
                        revision: str | None = None) -> NeuroLM:
        """A model directory or a Hub id (``org/name``, ``revision`` pins a branch, tag or commit; the weights'
        sha256 is checked against the model card) with its ``training.json``, which makes its own tasks known by
        name and is what :meth:`ask` checks tasks and preprocesses recordings with."""
        resolved = resolve(directory, revision=revision)
        training = read_training(resolved.path)  # before the weights: a broken record fails fast
        model = super().from_pretrained(resolved.path, device=device)
        model.training_record, model.source = training, resolved
        return model

    def ask(self, recording: Any, task: str, *, start: float | None = None, every: float | None = None,
            question: str | None = None, max_new_tokens: int = 5, batch_size: int = 32, mains: float | None = None,
            ch_names: Sequence[str] | None = None, sfreq: float | None = None, unit: str = "V",
            allow_untrained_task: bool = False) -> list[Answer]:
        """Ask the model about a recording exactly as ``neurolm ask`` does: a task it was not tuned on is refused
        unless ``allow_untrained_task``, the recording is prepared as its ``training.json`` records (a model
        without one warns and uses the task dataset's defaults). ``recording``: an ``mne.io.Raw``, any file MNE
        reads, or a ``(channels, samples)`` array with ``ch_names``, ``sfreq`` and ``unit``
        (:func:`neurolm.data.inputs.as_raw`); see :func:`neurolm.instruct.ask.ask` for the other arguments."""
        if self.training_record is None:  # as the CLI: say that the tasks it was tuned on are unknown
            check_task(None, task, allow_untrained=allow_untrained_task, source=self._source_name())
        return ask(self, recording, task, start=start, every=every, question=question, max_new_tokens=max_new_tokens,
                   batch_size=batch_size, mains=mains, ch_names=ch_names, sfreq=sfreq, unit=unit,
                   training=self.training_record, allow_untrained_task=allow_untrained_task)

    def _source_name(self) -> str:
        if self.source is None:
            return "the model"
        return self.source.repo_id or str(self.source.path)

    def save_pretrained(self, directory: str | Path, *, metrics: dict | str | Path | None = None,
                        license: str = "mit", recipe: str | None = None, card: bool = True) -> None:
        """Write a Hub-ready folder: the weights and config, ``training.json``, ``metrics.json`` (``metrics``: what
        ``evaluate`` returned or the path of its ``metrics.json``) and a model card ``README.md`` whose numbers are
        those of ``metrics.json`` (:func:`neurolm.hub.write_model_card`; ``card=False`` skips it, e.g. without
        ``huggingface_hub``)."""
        directory = Path(directory)
        super().save_pretrained(directory)
        if self.training_record is not None:
            (directory / TRAINING_FILE).write_text(json.dumps(self.training_record, indent=2) + "\n")
        if metrics is not None:
            values = metrics if isinstance(metrics, dict) else json.loads(Path(metrics).read_text())
            (directory / METRICS_FILE).write_text(json.dumps(values, indent=2) + "\n")
        if card:
            write_model_card(directory, license=license, recipe=recipe)

    def push_to_hub(self, repo_id: str, *, metrics: dict | str | Path | None = None, revision: str | None = None,
                    private: bool = False, token: str | None = None, recipe: str | None = None) -> str:
        """:meth:`save_pretrained` into a temporary folder and upload it to ``repo_id``; returns the commit hash
        to pin with ``from_pretrained(repo_id, revision=...)``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, metrics=metrics, recipe=recipe)
            return push_folder(tmp, repo_id, revision=revision, private=private, token=token)


__all__ = ["Answer", "NeuralTokenizer", "NeuroLM", "StageResult", "ask", "demo", "evaluate", "instruct", "prepare",
           "pretrain", "synth", "tokenize", "train_tokenizer"]

