"""Hostile inputs: crafted checkpoints, a second writer on one directory, altered stores (issue 35)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from neurolm.errors import NeuroLMError
from neurolm.lm import NeuroLM
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig, TokenizerEncoder

pytestmark = pytest.mark.usefixtures("one_thread")


class TouchFile:
    """A pickle payload: unpickling it calls ``open(target, "w")``, i.e. runs code that creates a file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def _reference_pair(directory: Path) -> tuple[Path, Path]:
    """A tiny ``NeuroLM.pt`` + ``VQ.pt`` in the authors' layout, with their training state (optimizer, counters)."""
    torch.manual_seed(0)
    model = NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny",
                                   spectral_input=False).eval()
    lm, vq = directory / "NeuroLM.pt", directory / "VQ.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_reference_checkpoint(lm, vq_path=vq)
    optimizer = torch.optim.AdamW(model.gpt.parameters(), lr=1e-4, betas=(0.9, 0.95))
    for p in model.gpt.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # an optimizer state with tensors, as after training
    for name in (lm, vq):
        raw = torch.load(name, weights_only=True)
        raw.pop("neurolm")  # what the authors' files hold: their keys and training state only
        raw.update(optimizer=optimizer.state_dict(), iter_num=1200, epoch=3)
        torch.save(raw, name)
    return lm, vq


def _with_payload(path: Path, target: Path) -> None:
    raw = torch.load(path, weights_only=True)
    raw["encoder_args" if "encoder_args" in raw else "model_args"]["dropout"] = TouchFile(target)
    torch.save(raw, path)
    assert not target.exists()  # saving does not run it; loading fully would


def test_the_authors_layout_loads_without_opt_in(tmp_path):
    lm, vq = _reference_pair(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning, no full unpickle
        TokenizerEncoder.from_reference_checkpoint(vq)
        NeuroLM.from_reference_checkpoint(lm, vq_path=vq)


@pytest.mark.parametrize("which", ["VQ.pt", "NeuroLM.pt"])
def test_a_code_running_checkpoint_is_refused_with_both_loaders(tmp_path, which):
    lm, vq = _reference_pair(tmp_path)
    crafted, target = tmp_path / which, tmp_path / "pwned"
    _with_payload(crafted, target)
    with pytest.raises(NeuroLMError, match=rf"{crafted}: refused: the file names io.open, .*trust_checkpoint=True"):
        if which == "VQ.pt":
            TokenizerEncoder.from_reference_checkpoint(vq)
        else:
            NeuroLM.from_reference_checkpoint(lm)
    with pytest.raises(NeuroLMError, match=rf"{crafted}: refused"):  # also when it is the vq_path of an LM
        NeuroLM.from_reference_checkpoint(lm, vq_path=vq)
    assert not target.exists()
    # the payload is real: the explicit opt-in runs it
    from neurolm.artifacts import load_torch_checkpoint

    load_torch_checkpoint(crafted, trust_checkpoint=True)
    assert target.exists()


def test_a_garbage_checkpoint_is_named(tmp_path):
    (tmp_path / "VQ.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(NeuroLMError, match=r"VQ.pt: not a readable torch checkpoint \(Unsupported operand"):
        TokenizerEncoder.from_reference_checkpoint(tmp_path / "VQ.pt")
