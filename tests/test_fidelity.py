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


def test_export_of_a_reference_checkpoint_is_the_reference_layout(ref, tmp_path):
    """ours → theirs: the loaded REF files written back have REF's keys, shapes, args and values."""
    vq_path, lm_path, _ = ref
    shapes = json.loads((DATA / "ref_shapes.json").read_text())
    # REF's two files carry two encoders (equal in REF's real pipeline, not under the weight rule): export each
    NeuralTokenizer.from_reference_checkpoint(vq_path).save_reference_checkpoint(tmp_path / "VQ.pt")
    NeuroLM.from_reference_checkpoint(lm_path, vq_path=vq_path).save_reference_checkpoint(tmp_path / "NeuroLM.pt")
    weight_for = weight_rule()
    for name, key, args in (("VQ.pt", "vq_shapes", ("vq_encoder_args", "vq_decoder_args")),
                            ("NeuroLM.pt", "neurolm_shapes", ("neurolm_model_args",))):
        raw = torch.load(tmp_path / name, weights_only=True)
        assert {k: list(v.shape) for k, v in raw["model"].items()} == shapes[key]
        assert all(torch.equal(v, weight_for(k, tuple(v.shape))) for k, v in raw["model"].items())
        written = (raw["encoder_args"], raw["decoder_args"]) if name == "VQ.pt" else (raw["model_args"],)
        assert list(written) == [shapes[a] for a in args]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reference_architecture_trains_with_finite_losses(ref, precision):
    """bf16 autocast (CPU here; the training loop uses the same autocast on GPUs) and fp32 from REF's weights:
    finite pretraining and instruction losses and gradients, and a few instruction-tuning steps without NaN."""
    from neurolm.instruct.data import collate_eeg, collate_texts
    from neurolm.instruct.train import InstructObjective

    vq_path, lm_path, v = ref
    model = NeuroLM.from_reference_checkpoint(lm_path, vq_path=vq_path).train()
    rng = np.random.default_rng(0)
    c = len(v["channels"])  # REF's windows back from its time-major tokens: (C, seconds × 200) in µV/100
    items = [{"signal": v["ref_X"][i, : s * c].reshape(s, c, 200).transpose(1, 0, 2).reshape(c, s * 200),
              "chans": v["ref_input_chans"][i, :c], "label": i} for i, s in enumerate(v["valid_seconds"])]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    eeg = collate_eeg(items, norm_over_padding=model.config.tokenizer.norm_over_padding)
    assert eeg.mask.shape[1] == 276
    with autocast:
        loss = model.eeg_forward(eeg)["loss"]
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(bool(torch.isfinite(g).all()) for g in grads)

    objective = InstructObjective(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-4)
    ids, targets, mask = collate_texts(["tuab", "tuab"], [0, 1])
    crops = torch.from_numpy(rng.integers(0, 50257, (1, 65)))
    for _ in range(2):
        optimizer.zero_grad()
        with autocast:
            out = objective(eeg, ids, targets, mask, crops)
        out["loss"].backward()
        assert torch.isfinite(out["loss"]), f"{precision}: loss {out['loss']}"
        assert all(bool(torch.isfinite(p.grad).all()) for p in trainable if p.grad is not None)
        optimizer.step()
    assert all(bool(torch.isfinite(p).all()) for p in trainable)
