"""The authors' ``NeuroLM-B/L/XL.pt`` (REF) in both directions: load one as a :class:`NeuroLM`, write one.

REF's file: ``model`` = ``GPT2.*`` (our ``gpt.*``), ``tokenizer.*`` (the frozen encoder only, our
``tokenizer.VQ.encoder.*``), ``pos_embed.weight`` and, when the encoder and LM widths differ,
``encode_transform_layer.0.*``; ``model_args`` = ``n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout``.

Facts a faithful load needs (pinned by ``tests/test_fidelity.py`` against REF's own outputs):
- REF's GPT MLP uses the exact erf GELU, so a loaded model gets ``GPTConfig.gelu="exact"``;
- REF's encoder takes GroupNorm statistics over padding (``norm_over_padding=True``), so every stage pads each sample
  to REF's fixed length (:mod:`neurolm.data.batch`, :func:`~neurolm.data.batch.reference_padding`).

Writing (:func:`save_neurolm_checkpoint`): our feature standardisation (``feature_mean``/``feature_std``) has no REF
key, so it is folded into the file's ``tokenizer.fc_norm`` (an affine map after a LayerNorm stays one): REF's code
then computes our EEG inputs. A ``neurolm`` entry (ignored by REF's loaders) keeps our exact config and the unfolded
tensors, so ours → REF → ours is bit-exact, including settings REF's file cannot express (the encoder's head count,
tanh GELU, per-sample text positions).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..artifacts import build_uninitialised, load_state_exact, load_torch_checkpoint, strip_compile_prefix
from ..errors import NeuroLMError
from ..text import PADDED_VOCAB
from ..tokenizer import TokenizerConfig, TokenizerEncoder
from .config import NeuroLMConfig
from .gpt import GPTConfig

if TYPE_CHECKING:
    from .model import NeuroLM

_FC_NORM = ("tokenizer.fc_norm.weight", "tokenizer.fc_norm.bias")
_SPECTRAL = ("spectral_embed.weight", "spectral_mean", "spectral_std", "summary.embed.weight", "summary.chan.weight",
             "summary.mean", "summary.std")
"""The spectral input and window summary (:mod:`neurolm.lm.spectral`): no REF key, so kept in the ``neurolm`` entry
only."""
_UNFOLDED = ("feature_mean", "feature_std", *_FC_NORM, *_SPECTRAL)
"""Tensors of the ``neurolm`` entry: what folding the scaler into ``fc_norm`` changes, and the spectral input."""


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    layers = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if not layers or layers != set(range(len(layers))):
        raise NeuroLMError(f"checkpoint layers under {prefix!r} are missing or not numbered 0..n-1: {sorted(layers)}")
    return len(layers)


def _reference_configs(path: Path, state: dict[str, torch.Tensor], args: dict, vq: TokenizerEncoder | None
                       ) -> tuple[GPTConfig, TokenizerConfig]:
    needed = ["GPT2.transformer.wte.weight", "GPT2.transformer.wpe.weight", "GPT2.lm_head.weight",
              "tokenizer.fc_norm.weight", "tokenizer.pos_embed.weight", "tokenizer.time_embed.weight",
              "pos_embed.weight"]
    missing = [k for k in needed if k not in state] + ([] if "n_head" in args else ["model_args['n_head']"])
    if missing:
        raise NeuroLMError(f"{path}: missing {', '.join(missing)}")
    wte, lm_head = state["GPT2.transformer.wte.weight"], state["GPT2.lm_head.weight"]
    gpt_config = GPTConfig(
        n_layer=_count_layers(state, "GPT2.transformer.h."), n_head=int(args["n_head"]), n_embd=wte.shape[1],
        block_size=state["GPT2.transformer.wpe.weight"].shape[0], vocab_size=wte.shape[0],
        n_outputs=lm_head.shape[0], bias=True, gelu="exact",
    )
    if vq is not None:
        return gpt_config, vq.config
    width = state["tokenizer.fc_norm.weight"].shape[0]
    tok_config = TokenizerConfig(
        n_layer=_count_layers(state, "tokenizer.blocks."), n_head=width // 64, n_embd=width,
        codebook_size=lm_head.shape[0] - PADDED_VOCAB,
        max_channels=state["tokenizer.pos_embed.weight"].shape[0],
        max_time=state["tokenizer.time_embed.weight"].shape[0], norm_over_padding=True,
        dead_code_threshold=0.0, spectral_embed="tokenizer.patch_embed.spectral.weight" in state,
    )
    return gpt_config, tok_config


def load_neurolm_checkpoint(cls: type[NeuroLM], path: str | Path, vq_path: str | Path | None = None, *,
                            ref_text_positions: bool = False, trust_checkpoint: bool = False) -> NeuroLM:
    """See :meth:`NeuroLM.from_reference_checkpoint`."""
    path = Path(path)
    ckpt = load_torch_checkpoint(path, trust_checkpoint=trust_checkpoint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise NeuroLMError(f"{path}: not a NeuroLM checkpoint (expected a dict with a 'model' state dict)")
    state = strip_compile_prefix(ckpt["model"])
    ours = ckpt.get("neurolm") if isinstance(ckpt.get("neurolm"), dict) else {}
    vq = (TokenizerEncoder.from_reference_checkpoint(vq_path, trust_checkpoint=trust_checkpoint)
          if vq_path is not None else None)
    if "config" in ours:  # written by save_neurolm_checkpoint: our exact config
        config = NeuroLMConfig.from_dict(ours["config"])
    else:
        gpt_config, tok_config = _reference_configs(path, state, ckpt.get("model_args") or {}, vq)
        config = NeuroLMConfig(gpt_config, tok_config, ref_text_positions)
    if vq is None:
        warnings.warn(f"{path} holds the tokenizer encoder only: EEG target codes need the quantizer, pass "
                      "vq_path=VQ.pt for pretraining (instruction tuning and generation do not need it)",
                      UserWarning, stacklevel=3)
    if vq is not None:  # every tensor comes from the two files, except the scaler (set below)
        model = build_uninitialised(lambda: cls(config))
        model.tokenizer.load_state_dict(vq.state_dict())
        model.feature_mean.zero_()
        model.feature_std.fill_(1.0)
    else:
        model = cls(config)
    mapped = {}
    for key, value in state.items():
        if key.startswith("GPT2."):
            mapped["gpt." + key[len("GPT2."):]] = value
        elif key.startswith("tokenizer."):
            mapped["tokenizer.VQ.encoder." + key[len("tokenizer."):]] = value
        else:
            mapped[key] = value
    for key in _UNFOLDED:
        if key in ours.get("state", {}):
            mapped[key.replace("tokenizer.", "tokenizer.VQ.encoder.")] = ours["state"][key]
    # the file holds everything except the quantizer/decoders/alignment parts of the tokenizer
    not_in_file = {k for k in model.state_dict() if k.startswith("tokenizer.")
                   and not k.startswith("tokenizer.VQ.encoder.")} | {"feature_mean", "feature_std"}
    load_state_exact(model, mapped, str(path), not_in_file)
    return model.eval()


def save_neurolm_checkpoint(model: NeuroLM, path: str | Path, vq_path: str | Path | None = None) -> None:
    """See :meth:`NeuroLM.save_reference_checkpoint`."""
    if model.config.backbone is not None or model.config.lora is not None:
        raise NeuroLMError("the authors' checkpoint format holds their GPT-2 only: this model has a Hugging Face "
                           "backbone or LoRA adapters (merge them first: neurolm.lm.lora.merge_lora)")
    cfg = model.config.gpt
    if cfg.gelu != "exact":
        warnings.warn("this LM uses GPT-2's tanh GELU; the authors' code computes the exact GELU, so its logits "
                      "will differ slightly (our loader restores the exact setting)", UserWarning, stacklevel=3)
    if model.config.spectral_input or model.config.window_summary:
        warnings.warn("this LM has a spectral input or window summary, which the authors' code does not have: it "
                      "will compute the LM without them (our loader restores them)", UserWarning, stacklevel=3)
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone()
        if key.startswith("gpt."):
            state["GPT2." + key[len("gpt."):]] = value
        elif key.startswith("tokenizer.VQ.encoder."):
            state["tokenizer." + key[len("tokenizer.VQ.encoder."):]] = value
        elif key.startswith("tokenizer.") or key in ("feature_mean", "feature_std", *_SPECTRAL):
            continue  # the quantizer and decoders live in VQ.pt; the scaler is folded below
        else:
            state[key] = value
    mean, std = model.feature_mean.detach().cpu(), model.feature_std.detach().cpu()
    own = model.state_dict()
    unfolded = {"feature_mean": mean.clone(), "feature_std": std.clone(),
                **{k: state[k].clone() for k in _FC_NORM},
                **{k: own[k].detach().cpu().clone() for k in _SPECTRAL if k in own}}
    with torch.no_grad():  # (γ·n + β − μ) / σ = (γ/σ)·n + (β − μ)/σ
        state[_FC_NORM[0]] = state[_FC_NORM[0]] / std
        state[_FC_NORM[1]] = (state[_FC_NORM[1]] - mean) / std
    model_args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      bias=cfg.bias, vocab_size=cfg.vocab_size, dropout=cfg.dropout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_args": model_args,
                "neurolm": {"config": model.config.to_dict(), "state": unfolded}}, path)
    if vq_path is not None:
        model.tokenizer.save_reference_checkpoint(vq_path)
