"""The Python API: one function per CLI command, same names and arguments, plus the two model classes.

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

from typing import Any

from .data.prepare import prepare_dataset as prepare
from .data.synth import write_corpus as synth
from .demo import run_demo as demo
from .instruct.ask import Answer, ask
from .instruct.evaluate import evaluate
from .instruct.train import instruct
from .lm.model import NeuroLM as _NeuroLM
from .lm.pretrain import pretrain
from .tokenizer.model import NeuralTokenizer
from .tokenizer.tokenize import tokenize
from .tokenizer.train import train_tokenizer
from .train import StageResult



class NeuroLM(_NeuroLM):
    """:class:`neurolm.lm.model.NeuroLM` with :meth:`ask`, which needs the instruction stage: the LM layer below it
    cannot import that stage without an import circle (the layers contract in ``pyproject.toml``)."""

    def ask(self, recording: Any, task: str, **kwargs: Any) -> list[Answer]:
        """Ask the model about a recording (an ``mne.io.Raw``, any file MNE reads, or a ``(channels, samples)``
        array with ``ch_names=``, ``sfreq=``, ``unit=``: :func:`neurolm.data.inputs.as_raw`): see
        :func:`neurolm.instruct.ask.ask` for the other keyword arguments (``start``, ``every``, ``question``, …)."""
        return ask(self, recording, task, **kwargs)


__all__ = ["Answer", "NeuralTokenizer", "NeuroLM", "StageResult", "ask", "demo", "evaluate", "instruct", "prepare",
           "pretrain", "synth", "tokenize", "train_tokenizer"]

