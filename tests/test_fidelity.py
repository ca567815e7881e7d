"""Our loaders reproduce the authors' code (REF) number for number on checkpoints of its format.

``tests/data/fidelity/`` (a copy of the project's fidelity yardstick, see its README) holds REF's constructor
arguments and parameter shapes of a small ``VQ.pt`` / ``NeuroLM.pt``, the rule that gives every parameter its value,
and REF's own outputs on those weights. The test rebuilds both files in REF's layout (``torch.save`` of ``model`` +
``*_args``), loads them through the public loaders and compares.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurolm.data.batch import EEGBatch
from neurolm.lm import NeuroLM, build_attention_mask
from neurolm.text import PADDED_VOCAB
from neurolm.tokenizer import NeuralTokenizer

DATA = Path(__file__).resolve().parent / "data" / "fidelity"
TOLERANCE = 1e-4
"""Required agreement (absolute) of features and logits; a faithful implementation reaches ~3e-6."""


def weight_rule():
    spec = importlib.util.spec_from_file_location("refweights", DATA / "refweights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.weight_for


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """``(VQ.pt path, NeuroLM.pt path, REF's vectors)``, the checkpoints rebuilt in REF's layout."""
    shapes = json.loads((DATA / "ref_shapes.json").read_text())
    weight_for = weight_rule()
    out = tmp_path_factory.mktemp("fidelity")
    vq = {k: weight_for(k, tuple(s)) for k, s in shapes["vq_shapes"].items()}
    torch.save({"model": vq, "encoder_args": shapes["vq_encoder_args"], "decoder_args": shapes["vq_decoder_args"],
                "optimizer": {}, "iter_num": 0, "epoch": 0}, out / "VQ.pt")
    # REF saves torch.compile'd models: half the keys carry the `_orig_mod.` prefix here
    lm = {(f"_orig_mod.{k}" if i % 2 else k): weight_for(k, tuple(s))
          for i, (k, s) in enumerate(shapes["neurolm_shapes"].items())}
    torch.save({"model": lm, "model_args": shapes["neurolm_model_args"], "iter_num": 0}, out / "NeuroLM.pt")
    with np.load(DATA / "ref_vectors.npz") as vectors:
        return out / "VQ.pt", out / "NeuroLM.pt", dict(vectors)


def ref_batch(v: dict, rows=slice(None), tokens: int | None = None) -> EEGBatch:
    """REF's loader layout as an :class:`EEGBatch` (optionally some samples, cut to ``tokens``)."""
    mask = torch.from_numpy(v["ref_input_mask"])[rows, :tokens]
    n_chans = torch.full((mask.shape[0],), len(v["channels"]), dtype=torch.long)
    return EEGBatch(torch.from_numpy(v["ref_X"])[rows, :tokens], torch.from_numpy(v["ref_input_chans"])[rows, :tokens],
                    torch.from_numpy(v["ref_input_time"])[rows, :tokens], mask, torch.full_like(n_chans, -1), n_chans)


def test_token_ids_and_encoder_features_match_the_reference(ref):
    vq_path, _, v = ref
    tokenizer = NeuralTokenizer.from_reference_checkpoint(vq_path)
    assert tokenizer.config.norm_over_padding
    features, codes = tokenizer.encode(ref_batch(v))
    real = torch.from_numpy(v["ref_input_mask"])
    assert real.sum(1).tolist() == [92, 69]
    decided = real & torch.from_numpy(v["token_margin"] > 1e-4)
    assert decided.sum() > 150  # the comparison covers nearly every real token
    assert torch.equal(codes[decided], torch.from_numpy(v["token_ids"])[decided])
    error = (features[:, :8] - torch.from_numpy(v["encoder_features"])).abs().max().item()
    assert error < TOLERANCE, f"encoder features differ from REF's by {error:.2e}"


def test_lm_logits_match_the_reference(ref):
    vq_path, lm_path, v = ref
    model = NeuroLM.from_reference_checkpoint(lm_path, vq_path=vq_path)
    assert model.config.gpt.gelu == "exact"
    batch = ref_batch(v, slice(0, 1), tokens=92)  # sample 0 alone, unpadded
    assert bool(batch.mask.all())
    with torch.no_grad():
        x, _ = model.embed_eeg(batch)
        h = model.gpt(x, build_attention_mask(batch.times, batch.mask))
        positions = torch.from_numpy(v["logits_eeg_positions"])
        eeg = model.gpt.lm_head(h[0, positions])[:, PADDED_VOCAB:]
        text = model(batch, torch.from_numpy(v["prompt_ids"])[None])["logits"][0, -1]
    eeg_error = (eeg - torch.from_numpy(v["logits_eeg"])).abs().max().item()
    text_error = (text - torch.from_numpy(v["logits_eeg_text_last"])).abs().max().item()
    assert eeg_error < TOLERANCE, f"EEG logits differ from REF's by {eeg_error:.2e}"
    assert text_error < TOLERANCE, f"text logits differ from REF's by {text_error:.2e}"

    # the GELU matters: GPT-2's tanh approximation misses REF's logits by more than the tolerance
    for block in model.gpt.transformer.h:
        block.mlp.gelu.approximate = "tanh"
    with torch.no_grad():
        tanh_text = model(batch, torch.from_numpy(v["prompt_ids"])[None])["logits"][0, -1]
    assert (tanh_text - torch.from_numpy(v["logits_eeg_text_last"])).abs().max().item() > TOLERANCE


def test_reference_groupnorm_depends_on_padding_as_reference(ref):
    """REF's vectors were computed on the padded 2-sample batch: sample 0 alone gives other features (the fact
    behind padding every sample to REF's fixed length, see neurolm.data.batch)."""
    vq_path, _, v = ref
    tokenizer = NeuralTokenizer.from_reference_checkpoint(vq_path)
    alone, _ = tokenizer.encode(ref_batch(v, slice(0, 1), tokens=92))
    padded = torch.from_numpy(v["encoder_features"][0])
    assert (alone[0, :8] - padded).abs().max().item() > 10 * TOLERANCE
