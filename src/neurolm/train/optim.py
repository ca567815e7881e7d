"""The optimiser every stage uses, its learning-rate schedule, and the peak FLOP/s that MFU is measured against."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import NeuroLMError
from .config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up then cosine decay.

    Warm-up step ``s < warmup_steps`` uses ``lr * (s + 1) / warmup_steps``, so the first step is never wasted at
    lr 0 and the last warm-up step reaches ``lr``; the cosine then runs from ``lr`` at ``warmup_steps`` to exactly
    ``min_lr`` at the last step ``steps - 1``.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on trainable parameters of ≥ 2 dimensions (matrices, conv kernels, embeddings,
    codebooks) and none on biases and norm gains.

    Embeddings decay, as in nanoGPT: GPT-2 ties ``wte`` to ``lm_head``, so exempting embeddings would also exempt
    the output projection. Frozen parameters are left out of the optimizer entirely.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise NeuroLMError("the model has no trainable parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.fused_adamw if cfg.fused_adamw is not None else params[0].device.type == "cuda"
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, fused=fused)


# Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's datasheets, matched in order against the device name.
GPU_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
CPU_PEAK_FLOPS_PER_THREAD = 1e11
"""Nominal CPU peak per torch thread (≈ 3 GHz × 32 fp32 FLOP/cycle with AVX2 FMA): a yardstick, not a measurement."""


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of one device for MFU; None for GPUs not in :data:`GPU_PEAK_FLOPS` (no MFU rather than a guess)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in GPU_PEAK_FLOPS if key in name), None)
    if device.type == "cpu":
        return CPU_PEAK_FLOPS_PER_THREAD * torch.get_num_threads()
    return None
