"""The authors' ``VQ.pt`` (REF's ``VQ_Align``) in both directions: load it as a :class:`NeuralTokenizer` (or its
encoder side), write one.

Our module names are REF's, so the state dict maps 1:1; what REF's file lacks is our config, which is rebuilt from its
``encoder_args`` / ``decoder_args`` and the weight shapes. A file we write carries, beside REF's keys, a ``neurolm``
entry with our exact config (REF's loaders read only ``model`` and the ``*_args``), so ours → REF → ours is
bit-exact even for settings REF's code does not have (real-token GroupNorm statistics, dead-code re-seeding, EMA
decay). A file written from a :class:`~neurolm.tokenizer.encoder.TokenizerEncoder` (what a NeuroLM keeps) lacks the
decoders, the domain classifier and the text table: REF's NeuroLM code needs only the encoder side, REF's tokenizer
training the whole file.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..artifacts import build_uninitialised, load_state_exact, load_torch_checkpoint, strip_compile_prefix
from ..errors import NeuroLMError
from .config import TokenizerConfig
from .encoder import TRAINING_ONLY

if TYPE_CHECKING:
    from .encoder import TokenizerEncoder

REF_BLOCK_SIZE = 1024
"""``block_size`` of REF's ``encoder_args``/``decoder_args`` (its pretraining length; no table depends on it)."""
REF_IN_CHANS_ENCODER = 1
REF_OUT_CHANS_ENCODER = 16


def load_vq_checkpoint(cls: type[TokenizerEncoder], path: str | Path, device: str | torch.device = "cpu", *,
                       trust_checkpoint: bool = False) -> TokenizerEncoder:
    """See :meth:`TokenizerEncoder.from_reference_checkpoint`."""
    path = Path(path)
    ckpt = load_torch_checkpoint(path, trust_checkpoint=trust_checkpoint)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise NeuroLMError(f"{path}: not a VQ checkpoint (expected a dict with a 'model' state dict)")
    state = strip_compile_prefix(ckpt["model"])
    ours = ckpt.get("neurolm")
    if isinstance(ours, dict) and isinstance(ours.get("config"), dict):  # written by save_vq_checkpoint
        config = TokenizerConfig.from_dict(ours["config"])
    else:
        config = _config_from_reference(path, ckpt, state)
    model = build_uninitialised(lambda: cls(config))
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(TRAINING_ONLY)}
    load_state_exact(model, state, str(path))  # strict: every tensor the model has comes from the file
    return model.to(device).eval()


def _config_from_reference(path: Path, ckpt: dict, state: dict[str, torch.Tensor]) -> TokenizerConfig:
    enc, dec = ckpt.get("encoder_args"), ckpt.get("decoder_args")
    if not isinstance(enc, dict) or not isinstance(dec, dict):
        raise NeuroLMError(f"{path}: 'encoder_args'/'decoder_args' missing; cannot rebuild the tokenizer config")
    needed = ["VQ.quantize.embedding.weight", "VQ.encoder.pos_embed.weight", "VQ.encoder.time_embed.weight"]
    missing = [k for k in needed if k not in state] + [f"encoder_args[{k!r}]" for k in ("n_layer", "n_head",
                                                       "n_embd") if k not in enc]
    missing += [f"decoder_args[{k!r}]" for k in ("n_layer", "n_head", "n_embd") if k not in dec]
    if missing:
        raise NeuroLMError(f"{path}: missing {', '.join(missing)}")
    if (dec["n_embd"], dec["n_head"]) != (enc["n_embd"], enc["n_head"]):
        raise NeuroLMError(f"{path}: decoder width/heads {dec['n_embd']}/{dec['n_head']} differ from the "
                           f"encoder's {enc['n_embd']}/{enc['n_head']}; only equal sizes are supported")
    codebook = state["VQ.quantize.embedding.weight"]
    return TokenizerConfig(
        n_layer=int(enc["n_layer"]), n_head=int(enc["n_head"]), n_embd=int(enc["n_embd"]),
        decoder_layers=int(dec["n_layer"]), codebook_size=codebook.shape[0], code_dim=codebook.shape[1],
        max_channels=state["VQ.encoder.pos_embed.weight"].shape[0],
        max_time=state["VQ.encoder.time_embed.weight"].shape[0],
        text_vocab=state["wte.weight"].shape[0] if "wte.weight" in state else TokenizerConfig.text_vocab,
        dropout=float(enc.get("dropout", 0.0)), norm_over_padding=True, dead_code_threshold=0.0,
        spectral_embed="VQ.encoder.patch_embed.spectral.weight" in state,  # ours, exported: the authors' have none
    )


def reference_args(config: TokenizerConfig) -> tuple[dict, dict]:
    """REF's ``encoder_args`` and ``decoder_args`` for ``config``."""
    common = dict(n_head=config.n_head, n_embd=config.n_embd, block_size=REF_BLOCK_SIZE, bias=False,
                  dropout=config.dropout, num_classes=0)
    encoder = dict(n_layer=config.n_layer, **common, in_chans=REF_IN_CHANS_ENCODER,
                   out_chans=REF_OUT_CHANS_ENCODER)
    decoder = dict(n_layer=config.decoder_layers, **common, in_chans=config.code_dim)
    return encoder, decoder


def save_vq_checkpoint(model: TokenizerEncoder, path: str | Path) -> None:
    """See :meth:`TokenizerEncoder.save_reference_checkpoint`."""
    if not model.config.norm_over_padding:
        warnings.warn("this tokenizer takes its GroupNorm statistics over real tokens; the authors' code takes them "
                      "over padding too, so it computes slightly different features for padded windows (our loader "
                      "restores the exact setting)", UserWarning, stacklevel=3)
    if model.config.spectral_embed:
        warnings.warn("this tokenizer has the spectral patch embedding, which the authors' code does not know: their "
                      "loader will refuse its patch_embed.spectral weights (ours reads the file back exactly)",
                      UserWarning, stacklevel=3)
    encoder, decoder = reference_args(model.config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "encoder_args": encoder,
        "decoder_args": decoder,
        "neurolm": {"config": asdict(model.config)},
    }, path)
