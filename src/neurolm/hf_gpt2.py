"""Reading a Hugging Face GPT-2 directory (as ``save_pretrained`` writes it), for the layers that need its weights.

Its own module below the pipeline because two stages read it: the LM starts from GPT-2 (:meth:`GPT.from_hf_gpt2
<neurolm.lm.gpt.GPT.from_hf_gpt2>`) and the tokenizer aligns its features to GPT-2's text table
(:func:`gpt2_text_table`); the tokenizer must not import the LM for that.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .errors import NeuroLMError
from .text import TEXT_VOCAB


def read_gpt2_sizes(directory: str | Path) -> dict[str, int]:
    """``n_layer``, ``n_head``, ``n_embd`` and ``block_size`` of the GPT-2 in ``directory``'s ``config.json``, after
    checking it is a GPT-2 this package computes exactly (gelu_new, LayerNorm eps 1e-5, GPT-2's vocabulary)."""
    directory = Path(directory)
    try:
        hf = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise NeuroLMError(f"{directory}: no readable Hugging Face config.json ({exc})") from exc
    if hf.get("model_type", "gpt2") != "gpt2":
        raise NeuroLMError(f"{directory}: model_type {hf.get('model_type')!r} is not gpt2")
    if hf.get("activation_function", "gelu_new") != "gelu_new" or hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
        raise NeuroLMError(f"{directory}: only GPT-2's gelu_new activation and LayerNorm eps 1e-5 are supported")
    try:
        sizes = {"n_layer": hf["n_layer"], "n_head": hf["n_head"], "n_embd": hf["n_embd"],
                 "block_size": hf["n_positions"]}
    except KeyError as exc:
        raise NeuroLMError(f"{directory}/config.json: GPT-2 field {exc} missing") from exc
    if hf.get("vocab_size") != TEXT_VOCAB:
        raise NeuroLMError(f"{directory}: vocab_size {hf.get('vocab_size')} is not GPT-2's {TEXT_VOCAB}")
    return sizes


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_hf_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face checkpoint directory, safetensors preferred, shards followed."""
    directory = Path(directory)
    for single, index, loader in (
        ("model.safetensors", "model.safetensors.index.json", load_file),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", _torch_load),
    ):
        if (directory / single).is_file():
            files = [directory / single]
        elif (directory / index).is_file():
            shards = json.loads((directory / index).read_text())["weight_map"].values()
            files = [directory / f for f in sorted(set(shards))]
        else:
            continue
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update({k: v.float() for k, v in loader(f).items()})
        return sd
    raise NeuroLMError(f"{directory}: neither model.safetensors nor pytorch_model.bin (or their shard index) found")


def gpt2_text_table(directory: str | Path) -> torch.Tensor:
    """GPT-2's token embeddings ``(50257, n_embd)`` (float32) from ``directory``."""
    read_gpt2_sizes(directory)
    state = read_hf_state_dict(directory)
    key = next((k for k in ("transformer.wte.weight", "wte.weight") if k in state), None)
    if key is None:
        raise NeuroLMError(f"{directory}: GPT-2 weights lack 'wte.weight'")
    return state[key][:TEXT_VOCAB].clone()
