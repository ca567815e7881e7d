"""The Python API: one function per CLI command, same names and arguments, plus the two model classes.

    from neurolm.api import NeuroLM, prepare, train_tokenizer, pretrain, instruct, evaluate

    prepare("hmc", "/data/hmc", "stores/hmc")
    train_tokenizer(["stores/hmc"], "runs/tok", preset="tiny")
    pretrain("runs/tok", ["stores/hmc"], "runs/lm", size="tiny")
    instruct("runs/lm", ["stores/hmc"], "runs/inst")
    metrics = evaluate("runs/inst", ["stores/hmc"], "runs/eval")
    answers = NeuroLM.from_pretrained("runs/inst").ask("SN001.edf", task="hmc", every=30)
"""

from .data.prepare import prepare_dataset as prepare
from .data.synth import write_corpus as synth
from .demo import run_demo as demo
from .instruct.ask import Answer, ask
from .instruct.evaluate import evaluate
from .instruct.train import instruct
from .lm.model import NeuroLM
from .lm.pretrain import pretrain
from .tokenizer.model import NeuralTokenizer
from .tokenizer.tokenize import tokenize
from .tokenizer.train import train_tokenizer

__all__ = ["Answer", "NeuralTokenizer", "NeuroLM", "ask", "demo", "evaluate", "instruct", "prepare", "pretrain",
           "synth", "tokenize", "train_tokenizer"]
