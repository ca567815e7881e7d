"""LoRA adapters (``peft``) on NeuroLM's backbone, for pretraining and instruction tuning (``--lora-rank R``).

Decisions where the issue is silent:
- Adapters go on the backbone's blocks only, on the projections :data:`TARGETS` names per model family (attention
  and MLP; any other family: every linear layer of its blocks). Besides them, NeuroLM's own parts train: the EEG
  input (projection, channel embedding, spectral map, window summary) and the whole ``lm_head``, whose EEG-code rows
  are new. The token table (and GPT-2's position table) stays frozen.
- ``alpha = 2 × rank``, no adapter dropout.
- A model directory with adapters keeps the base weights under their plain names in ``model.safetensors`` and the
  adapters beside them in ``adapter/`` (``adapter_config.json`` = peft's ``LoraConfig``, ``adapter_model.safetensors``
  = the LoRA tensors under NeuroLM's names); :func:`merge_lora` folds them into the base weights for inference
  (same outputs, no adapter cost).
- ``instruct --lora-rank`` on a model that already has adapters merges them first, then adds new ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import NeuroLMError

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_ATTN_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGETS: dict[str, tuple[str, ...]] = {
    "neurolm": ("c_attn", "c_proj", "c_fc"),  # the native GPT presets
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": _ATTN_MLP,  # SmolLM, TinyLlama, Llama 2/3
    "qwen2": _ATTN_MLP,
    "qwen3": _ATTN_MLP,
    "mistral": _ATTN_MLP,
    "gemma": _ATTN_MLP,
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
"""Default LoRA target modules per ``model_type`` (``neurolm`` = the native GPT)."""


def require_peft():
    try:
        import peft
    except ImportError as exc:
        raise NeuroLMError("LoRA needs peft: pip install 'neurolm[hf]'") from exc
    return peft


@dataclass
class LoraSpec:
    """The adapters of a model, as its ``config.json`` records them."""

    rank: int
    alpha: float
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.rank < 1:
            raise NeuroLMError(f"LoRA rank must be at least 1, got {self.rank}")

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    def peft_config(self):
        return require_peft().LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0,
                                         target_modules=list(self.targets))


def blocks(lm: nn.Module) -> nn.Module:
    """The part of ``lm.gpt`` that adapters go on: its blocks, never its token table or ``lm_head``."""
    gpt = lm.gpt
    return gpt.transformer.h if hasattr(gpt, "transformer") else gpt.model


def default_targets(lm: nn.Module) -> tuple[str, ...]:
    """:data:`TARGETS` of the model's family, else the names of every linear layer in its blocks."""
    family = "neurolm" if lm.config.backbone is None else lm.config.backbone.family
    if family in TARGETS:
        return TARGETS[family]
    linear = (nn.Linear,) + tuple(_conv1d())
    return tuple(sorted({name.rsplit(".", 1)[-1] for name, m in blocks(lm).named_modules() if isinstance(m, linear)}))


def _conv1d() -> list[type]:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return []
    return [Conv1D]


def inject(lm: nn.Module, spec: LoraSpec) -> None:
    """Put (zero-initialised, so outputs are unchanged) adapters on ``lm``'s blocks and freeze as the notes say."""
    try:
        require_peft().inject_adapter_in_model(spec.peft_config(), blocks(lm))
    except ValueError as exc:
        raise NeuroLMError(f"LoRA targets {list(spec.targets)}: {exc}") from exc
    freeze_for_lora(lm)


def add_lora(lm: nn.Module, rank: int, targets: tuple[str, ...] | None = None) -> LoraSpec:
    """Add rank-``rank`` adapters to ``lm`` (merging any it already has) and record them in its config."""
    if lm.config.lora is not None:
        merge_lora(lm)
    spec = LoraSpec(rank, 2.0 * rank, targets or default_targets(lm))
    inject(lm, spec)
    lm.config.lora = spec
    return spec


def freeze_for_lora(lm: nn.Module) -> None:
    """Trainable: adapters, NeuroLM's EEG input parts and ``lm_head``; frozen: the rest of the backbone."""
    for name, p in lm.named_parameters():
        if name.startswith("tokenizer."):
            continue
        p.requires_grad_(".lora_" in name or not name.startswith("gpt.") or name.startswith("gpt.lm_head."))


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_report(lm: nn.Module) -> dict:
    """A stage report's ``params`` (trainable), ``total_params`` (the frozen encoder included) and ``lora`` (the
    adapters, or None)."""
    return {"params": trainable_parameters(lm), "total_params": sum(p.numel() for p in lm.parameters()),
            "lora": None if lm.config.lora is None else lm.config.lora.to_dict()}


def merge_lora(lm: nn.Module) -> None:
    """Fold the adapters into the base weights and remove them (outputs unchanged); everything trains again."""
    from peft.tuners.lora import LoraLayer

    root = blocks(lm)
    for name, module in list(root.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent_name) if parent_name else root, child, module.get_base_layer())
    lm.config.lora = None
    for name, p in lm.named_parameters():
        if not name.startswith("tokenizer."):
            p.requires_grad_(True)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A state dict with adapters → (base weights under their plain names, adapter tensors)."""
    base = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    return base, {k: v for k, v in state.items() if ".lora_" in k}


def save_adapter(directory: Path, spec: LoraSpec, adapter: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    out = directory / ADAPTER_DIR
    out.mkdir(parents=True, exist_ok=True)
    config = spec.peft_config().to_dict()
    config["target_modules"] = list(spec.targets)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
    save_file(adapter, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt", "model": "neurolm-lora"})


def load_adapter(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / ADAPTER_DIR / ADAPTER_WEIGHTS
    if not path.is_file():
        raise NeuroLMError(f"{path}: missing; the config records LoRA adapters (config.json 'lora')")
    return load_file(str(path))
