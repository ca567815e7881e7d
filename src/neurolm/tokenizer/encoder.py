"""The tokenizer's encoder side: EEG patches → encoder features and code ids, all that NeuroLM uses of a tokenizer.

:class:`TokenizerEncoder` holds the encoder (:class:`NeuralTransformer` over temporal-conv patch embeddings), the
task layer into code space and the quantiser, under REF's ``VQ.*`` names. :class:`~neurolm.tokenizer.model.
NeuralTokenizer` extends it with the decoders and the alignment parts that only tokenizer training needs; a NeuroLM
keeps a :class:`TokenizerEncoder` (frozen), so its checkpoints carry neither (see :mod:`neurolm.lm.model`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import PATCH, EEGBatch
from ..errors import NeuroLMError
from .config import TokenizerConfig
from .quantizer import NormEMAVectorQuantizer

TRAINING_ONLY = ("VQ.decoder_freq.", "VQ.decoder_raw.", "VQ.decode_task_layer_freq.", "VQ.decode_task_layer_raw.",
                 "domain_classifier.", "wte.", "spectrum_head.")
"""State-dict prefixes of the parts only tokenizer training uses (what :class:`TokenizerEncoder` leaves out)."""


CONV_CHANNELS = 16
CONV_STEPS = 25  # 200 samples through Conv(k=15, s=8, p=7) → 25 steps; × 16 channels = 400 features per token


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def masked_group_norm(x: torch.Tensor, mask: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm`` applied to ``x (B, C, N, T)`` with statistics over the real tokens (``mask (B, N)``) of each sample.

    Same result as ``norm(x)`` when every token is real; computed in float32 like GroupNorm under autocast.
    """
    b, c, n, t = x.shape
    g = norm.num_groups
    xg = x.float().reshape(b, g, c // g, n, t)
    m = mask.reshape(b, 1, 1, n, 1).float()
    count = (m.sum(dim=3, keepdim=True) * (c // g) * t).clamp_min(1.0)
    mean = (xg * m).sum(dim=(2, 3, 4), keepdim=True) / count
    var = ((xg - mean).square() * m).sum(dim=(2, 3, 4), keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(b, c, n, t)
    return y * norm.weight.float().view(1, c, 1, 1) + norm.bias.float().view(1, c, 1, 1)


def masked_zscore(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One mean and (unbiased) std per sample over its real tokens × features; padded tokens set to 0."""
    m = mask[..., None].to(x.dtype)
    n = m.sum(dim=(1, 2), keepdim=True) * x.shape[-1]
    mean = (x * m).sum(dim=(1, 2), keepdim=True) / n.clamp_min(1.0)
    var = ((x - mean).square() * m).sum(dim=(1, 2), keepdim=True) / (n - 1).clamp_min(1.0)
    return (x - mean) / var.sqrt().clamp_min(1e-6) * m


def log_amplitude(patches: torch.Tensor) -> torch.Tensor:
    """``patches (..., 200)`` → log FFT amplitude of bins 0–99 ``(..., 100)`` in float32 (1-Hz bins of a 1-s patch).
    The floor keeps a flat patch finite; it sits far below any real EEG bin in µV/100 units."""
    return torch.log(torch.fft.rfft(patches.float(), dim=-1).abs()[..., : PATCH // 2] + 1e-3)


class TemporalPatchEmbed(nn.Module):
    """Three 1-D convolutions along time, applied to each 200-sample patch separately, then Linear(400 → d); with
    ``spectral`` also a Linear(100 → d) of the patch's log amplitude, z-scored per sample, added (not in REF)."""

    def __init__(self, n_embd: int, norm_over_padding: bool, spectral: bool = False) -> None:
        super().__init__()
        self.norm_over_padding = norm_over_padding
        self.spectral = nn.Linear(PATCH // 2, n_embd) if spectral else None
        self.conv1 = nn.Conv2d(1, CONV_CHANNELS, kernel_size=(1, 15), stride=(1, 8), padding=(0, 7))
        self.norm1 = nn.GroupNorm(4, CONV_CHANNELS)
        self.conv2 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, kernel_size=(1, 3), padding=(0, 1))
        self.norm2 = nn.GroupNorm(4, CONV_CHANNELS)
        self.conv3 = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(4, CONV_CHANNELS)
        self.l = nn.Sequential(nn.Linear(CONV_STEPS * CONV_CHANNELS, n_embd), nn.GELU())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = x.unsqueeze(1)  # (B, 1, N, 200): kernels are (1, k), so tokens only meet in the GroupNorm statistics
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2), (self.conv3, self.norm3)):
            h = conv(h)
            h = F.gelu(norm(h) if self.norm_over_padding else masked_group_norm(h, mask, norm))
        h = h.permute(0, 2, 3, 1).reshape(b, n, CONV_STEPS * CONV_CHANNELS)  # REF flattens (time, channel)
        if self.spectral is None:
            return self.l(h)
        with torch.autocast(x.device.type, enabled=False):  # the FFT and its log in float32
            spectrum = masked_zscore(log_amplitude(x), mask)
        return self.l(h) + self.spectral(spectrum.to(h.dtype))


class SelfAttention(nn.Module):
    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.n_head, d // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(d, 2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Module):
    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """GPT-2 pre-norm block without biases; attention is bidirectional, masked by padding only."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=False)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=False)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class NeuralTransformer(nn.Module):
    """Channel- and time-embedded transformer over EEG tokens (REF ``NeuralTransformer``), final LayerNorm included.

    ``in_dim=None``: inputs are raw 200-sample patches embedded by :class:`TemporalPatchEmbed` (the encoder);
    otherwise inputs are ``in_dim``-vectors embedded by ``Linear(in_dim, d)`` (the decoders, fed code vectors).
    """

    def __init__(self, config: TokenizerConfig, n_layer: int, in_dim: int | None = None) -> None:
        super().__init__()
        d = config.n_embd
        self.patch_embed = (TemporalPatchEmbed(d, config.norm_over_padding, config.spectral_embed) if in_dim is None
                            else nn.Linear(in_dim, d))
        self.pos_embed = nn.Embedding(config.max_channels, d)
        self.time_embed = nn.Embedding(config.max_time, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(n_layer))
        self.fc_norm = nn.LayerNorm(d, eps=1e-6)
        self.apply(_init_weights)
        for layer_id, block in enumerate(self.blocks, start=1):  # keeps the residual stream's variance bounded
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.data.div_(math.sqrt(2.0 * layer_id))

    def forward(self, x: torch.Tensor, chans: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, 200 | in_dim)``, ``chans``/``times``/``mask (B, N)`` → features ``(B, N, d)`` of every token."""
        h = self.patch_embed(x, mask) if isinstance(self.patch_embed, TemporalPatchEmbed) else self.patch_embed(x)
        h = self.drop(h + self.pos_embed(chans) + self.time_embed(times))
        # Padded keys are never attended; a sample with no real token attends to all so its rows stay finite.
        attn_mask = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]
        for block in self.blocks:
            h = block(h, attn_mask)
        return self.fc_norm(h)


def _head(d: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, out))


def make_quantizer(config: TokenizerConfig) -> NormEMAVectorQuantizer:
    return NormEMAVectorQuantizer(config.codebook_size, config.code_dim, beta=1.0, decay=config.ema_decay,
                                  kmeans_iters=config.kmeans_iters, dead_code_threshold=config.dead_code_threshold)


class _EncoderVQ(nn.Module):
    """The encoder, its task layer and the quantiser under REF's submodule names (``VQ.encoder.*`` …)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.encoder = NeuralTransformer(config, config.n_layer)
        self.quantize = make_quantizer(config)
        self.encode_task_layer = _head(config.n_embd, config.code_dim)
        self.encode_task_layer.apply(_init_weights)


class TokenizerEncoder(nn.Module):
    """EEG tokens → encoder features (what NeuroLM consumes) and codebook ids (its EEG targets)."""

    def __init__(self, config: TokenizerConfig, vq: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.VQ = _EncoderVQ(config) if vq is None else vq

    def _check(self, batch: EEGBatch) -> None:
        if batch.patches.dim() != 3 or batch.patches.shape[-1] != PATCH:
            raise NeuroLMError(f"tokenizer input must be (batch, tokens, {PATCH}) patches, got "
                               f"{tuple(batch.patches.shape)}")
        if batch.times.numel():
            top_time, top_chan = torch.stack([batch.times.max(), batch.chans.max()]).tolist()
            if top_time >= self.config.max_time:
                raise NeuroLMError(f"window of {top_time + 1} s exceeds the tokenizer's {self.config.max_time} s "
                                   "time embedding")
            if top_chan >= self.config.max_channels:
                raise NeuroLMError(f"channel index {top_chan} exceeds the tokenizer's {self.config.max_channels} "
                                   "channel embeddings")

    def _encode(self, batch: EEGBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features and the (un-normalised) quantiser inputs; the task layer runs in float32 as in REF."""
        self._check(batch)
        feats = self.VQ.encoder(batch.patches, batch.chans, batch.times, batch.mask)
        with torch.autocast(feats.device.type, enabled=False):
            z = self.VQ.encode_task_layer(feats.float())
        return feats, z

    @torch.no_grad()
    def encode(self, batch: EEGBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features ``(B, N, d)`` after ``fc_norm`` and code ids ``(B, N)`` (-1 on padding), one encoder pass.

        Never changes the codebook, whatever the module's mode; call ``eval()`` first to switch dropout off.
        """
        feats, z = self._encode(batch)
        return feats, self.VQ.quantize.lookup(z, batch.mask)

    def tokenize(self, batch: EEGBatch) -> torch.Tensor:
        """Code ids ``(B, N)``, -1 on padding."""
        return self.encode(batch)[1]

    @torch.no_grad()
    def copy_encoder_side(self, tokenizer: TokenizerEncoder) -> None:
        """Copy the encoder, task layer and quantiser (codebook state included) of ``tokenizer``, which may be a
        whole :class:`~neurolm.tokenizer.model.NeuralTokenizer`."""
        theirs = tokenizer.state_dict()
        self.load_state_dict({k: theirs[k] for k in self.state_dict()})

    @classmethod
    def from_reference_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", *,
                                  trust_checkpoint: bool = False) -> TokenizerEncoder:
        """Load the authors' ``VQ.pt``; the config comes from its ``encoder_args``/``decoder_args`` and weight shapes.
        A :class:`TokenizerEncoder` takes the encoder side of a whole ``VQ.pt`` or the encoder-side file that
        :meth:`save_reference_checkpoint` writes from one; a :class:`~neurolm.tokenizer.model.NeuralTokenizer` needs
        a whole file.

        ``norm_over_padding=True`` reproduces REF features (every stage then pads to REF's length: 1024 / 276
        tokens); ``dead_code_threshold=0`` as REF has none. A file written by :meth:`save_reference_checkpoint`
        restores its exact config instead. Returned in eval mode.

        The file is read with ``weights_only=True``: one that names any other global is refused, since unpickling it
        could run code; ``trust_checkpoint=True`` unpickles it fully (only for a file whose source you trust).
        """
        from .reference import load_vq_checkpoint

        return load_vq_checkpoint(cls, path, device, trust_checkpoint=trust_checkpoint)

    def save_reference_checkpoint(self, path: str | Path) -> None:
        """Write a ``VQ.pt`` the authors' code reads (their keys, ``encoder_args``/``decoder_args``); our loader
        reads it back bit-exactly (:mod:`neurolm.tokenizer.reference`). From a :class:`TokenizerEncoder` it holds
        the encoder side only: enough for NeuroLM's codes, not for the authors' tokenizer training."""
        from .reference import save_vq_checkpoint

        save_vq_checkpoint(self, path)
