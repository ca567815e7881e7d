"""The NeuroLM's state-dict keys outside the tokenizer, pinned: model directories and the reference checkpoints are
read by these names, so a restructuring of ``lm/model.py`` (submodules for the EEG input and the text conditioner)
must keep them."""

from __future__ import annotations

import copy

import numpy as np

from neurolm.data.batch import collate_windows

BLOCK = ["attn.c_attn.bias", "attn.c_attn.weight", "attn.c_proj.bias", "attn.c_proj.weight", "ln_1.bias",
         "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight", "mlp.c_proj.bias",
         "mlp.c_proj.weight"]
TOP = ["feature_mean", "feature_std", "gpt.lm_head.weight", "gpt.transformer.ln_f.bias",
       "gpt.transformer.ln_f.weight", "gpt.transformer.wpe.weight", "gpt.transformer.wte.weight", "pos_embed.weight",
       "spectral_embed.weight", "spectral_mean", "spectral_std"]

SUMMARY = ["summary.chan.weight", "summary.embed.weight", "summary.gate.0.bias", "summary.gate.0.weight",
           "summary.gate.1.bias", "summary.gate.1.weight", "summary.mean", "summary.std"]


def lm_keys(lm) -> list[str]:
    return sorted(k for k in lm.state_dict() if not k.startswith("tokenizer."))


def test_the_tiny_models_keys(model):
    blocks = [f"gpt.transformer.h.{i}.{k}" for i in range(model.config.gpt.n_layer) for k in BLOCK]
    assert lm_keys(model) == sorted(TOP + blocks)


def test_the_gated_summary_adds_its_keys_and_no_other(model):
    rng = np.random.default_rng(0)
    items = [{"signal": rng.normal(0, 0.2, (3, 800)).astype(np.float32), "chans": np.arange(3)} for _ in range(4)]
    lm = copy.deepcopy(model).add_window_summary([collate_windows(items, 276)], gate=True)
    assert lm_keys(lm) == sorted(lm_keys(model) + SUMMARY)
