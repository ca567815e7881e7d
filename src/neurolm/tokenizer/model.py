"""The text-aligned neural tokenizer (spec §3): EEG patches → encoder features and discrete codes.

An encoder (:class:`NeuralTransformer` over temporal-conv patch embeddings) feeds a cosine EMA vector quantiser; two
small decoders reconstruct each patch's FFT amplitude (bins 0–99) and the patch itself from the codes; a domain
classifier behind a gradient-reversal layer pushes the encoder's features towards the LLM's text-embedding space.
Module names match the reference ``VQ_Align`` so its ``VQ.pt`` loads 1:1
(:meth:`NeuralTokenizer.from_reference_checkpoint`).

Deviations from the reference (REF):
- Losses are averaged over real tokens only; REF averages its MSEs over the padded tensor, so its logged losses are
  ours × (fraction of real tokens). Targets are z-scored over each sample's real tokens (REF: padding included).
- ``norm_over_padding=False`` (our default): the patch embedding's GroupNorms take their statistics over the real
  tokens of each sample, so padding never changes the features of real tokens. REF uses all tokens incl. padding
  (``True``, set automatically when loading REF checkpoints to reproduce their outputs).
- The commitment loss, k-means init, EMA updates and usage counts see real tokens only; the codebook changes in
  training mode only; optional dead-code re-seeding (see :mod:`neurolm.tokenizer.quantizer`).
- Alignment is computed only when a text batch is given: CE(EEG → 0) + CE(text → 1), each averaged over its own real
  tokens (as REF's training loop adds its two cross-entropies).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import WEIGHTS_FILE, load_state_exact, read_artifacts, save_artifacts
from ..data.batch import PATCH, EEGBatch
from ..data.channels import PAD_INDEX
from ..errors import NeuroLMError
from .quantizer import NormEMAVectorQuantizer

CONV_CHANNELS = 16
CONV_STEPS = 25  # 200 samples through Conv(k=15, s=8, p=7) → 25 steps; × 16 channels = 400 features per token


@dataclass
class TokenizerConfig:
    """Sizes and switches of the neural tokenizer; saved as ``config.json`` beside every checkpoint."""

    n_layer: int = 12
    """Encoder transformer blocks."""
    n_head: int = 12
    """Attention heads of the encoder and of both decoders."""
    n_embd: int = 768
    """Width of the encoder and the decoders (REF uses one width for all three)."""
    decoder_layers: int = 4
    """Blocks of each decoder (frequency and temporal)."""
    codebook_size: int = 8192
    """Number of neural tokens (codes)."""
    code_dim: int = 128
    """Dimension of the unit-norm code vectors."""
    max_channels: int = 256
    """Rows of the channel embedding (indexed by the channel vocabulary, padding index included)."""
    max_time: int = 64
    """Rows of the time embedding: the longest window in seconds."""
    text_vocab: int = 50257
    """Rows of the frozen text-embedding table used for alignment (GPT-2: 50257)."""
    dropout: float = 0.0
    """Dropout after the embeddings, in attention and after each residual branch."""
    norm_over_padding: bool = False
    """GroupNorm statistics over all tokens incl. padding (REF, to reproduce its outputs) instead of real tokens."""
    ema_decay: float = 0.99
    """Decay of the codebook EMA and of the usage EMA."""
    kmeans_iters: int = 10
    """Spherical k-means iterations that initialise the codebook on the first training batch."""
    dead_code_threshold: float = 0.01
    """Re-seed codes whose EMA usage falls below this fraction of the mean code's usage; 0 disables (REF)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "decoder_layers", "codebook_size", "code_dim", "max_channels",
                     "max_time", "text_vocab", "kmeans_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NeuroLMError(f"tokenizer config: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise NeuroLMError(f"tokenizer config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.max_channels <= PAD_INDEX:
            raise NeuroLMError(f"tokenizer config: max_channels={self.max_channels} must exceed the pad index "
                               f"{PAD_INDEX}")
        if not isinstance(self.norm_over_padding, bool):
            raise NeuroLMError(f"tokenizer config: norm_over_padding must be true/false, got "
                               f"{self.norm_over_padding!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise NeuroLMError(f"tokenizer config: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.ema_decay < 1.0:
            raise NeuroLMError(f"tokenizer config: ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.dead_code_threshold < 1.0:
            raise NeuroLMError(f"tokenizer config: dead_code_threshold must be in [0, 1), got "
                               f"{self.dead_code_threshold}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TokenizerConfig:
        """``base`` = the paper's tokenizer; ``tiny`` = a CPU-sized one for tests and the demo."""
        if name not in PRESETS:
            raise NeuroLMError(f"unknown tokenizer preset {name!r}; choose one of {', '.join(PRESETS)}")
        return replace(cls(**PRESETS[name]), **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NeuroLMError(f"tokenizer config: unknown field(s) {', '.join(unknown)}")
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    # A tiny run lasts a few hundred steps at lr 1e-3, so the encoder's outputs move far within REF's ~100-step EMA
    # horizon (decay 0.99) and a 1%-of-mean dead-code threshold would re-seed a code only after ~460 idle steps:
    # the codebook lagged behind and collapsed to a handful of codes (≈3% used, perplexity ≈7 after 300 steps).
    # A 10-step EMA and re-seeding after ~22 idle steps (0.9^22 ≈ 0.1) let it follow.
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, decoder_layers=1, codebook_size=512, code_dim=32, ema_decay=0.9,
                 dead_code_threshold=0.1),
}


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


class TemporalPatchEmbed(nn.Module):
    """Three 1-D convolutions along time, applied to each 200-sample patch separately, then Linear(400 → d)."""

    def __init__(self, n_embd: int, norm_over_padding: bool) -> None:
        super().__init__()
        self.norm_over_padding = norm_over_padding
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
        return self.l(h)


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
        self.patch_embed = TemporalPatchEmbed(d, config.norm_over_padding) if in_dim is None else nn.Linear(in_dim, d)
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


class GradReverse(torch.autograd.Function):
    """Identity forward, ``-alpha × grad`` backward: the encoder learns to fool the domain classifier."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.alpha * grad, None


def alignment_alpha(progress: float) -> float:
    """Gradient-reversal strength at training progress ``p`` in [0, 1] (DANN schedule): 0 at start, → 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def _zscore(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One mean and (unbiased) std per sample over its real tokens × features; padded tokens set to 0."""
    m = mask[..., None].to(x.dtype)
    n = m.sum(dim=(1, 2), keepdim=True) * x.shape[-1]
    mean = (x * m).sum(dim=(1, 2), keepdim=True) / n.clamp_min(1.0)
    var = ((x - mean).square() * m).sum(dim=(1, 2), keepdim=True) / (n - 1).clamp_min(1.0)
    return (x - mean) / var.sqrt().clamp_min(1e-6) * m


@torch.no_grad()
def spectral_targets(batch: EEGBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction targets: FFT amplitude bins 0–99 ``(B, N, 100)`` and the patch ``(B, N, 200)``, both z-scored.

    The amplitude is z-scored over all 200 bins before the upper (mirrored) half is dropped, as in REF.
    """
    x = batch.patches.float()
    amplitude = torch.fft.fft(x, dim=-1).abs()
    return _zscore(amplitude, batch.mask)[..., : PATCH // 2], _zscore(x, batch.mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens only."""
    m = mask[..., None].float()
    return ((pred.float() - target).square() * m).sum() / (m.sum() * target.shape[-1]).clamp_min(1.0)


def _head(d: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, out))


class _VQ(nn.Module):
    """Encoder, quantiser and decoders under REF's submodule names (the ``VQ.*`` checkpoint keys)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.encoder = NeuralTransformer(config, config.n_layer)
        self.decoder_freq = NeuralTransformer(config, config.decoder_layers, in_dim=config.code_dim)
        self.decoder_raw = NeuralTransformer(config, config.decoder_layers, in_dim=config.code_dim)
        self.quantize = NormEMAVectorQuantizer(config.codebook_size, config.code_dim, beta=1.0,
                                               decay=config.ema_decay, kmeans_iters=config.kmeans_iters,
                                               dead_code_threshold=config.dead_code_threshold)
        self.encode_task_layer = _head(d, config.code_dim)
        self.decode_task_layer_freq = _head(d, PATCH // 2)
        self.decode_task_layer_raw = _head(d, PATCH)
        for head in (self.encode_task_layer, self.decode_task_layer_freq, self.decode_task_layer_raw):
            head.apply(_init_weights)


class NeuralTokenizer(nn.Module):
    """EEG tokens → encoder features (what NeuroLM consumes) and codebook ids (its EEG targets)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.VQ = _VQ(config)
        self.domain_classifier = nn.Sequential(nn.Linear(config.n_embd, 256), nn.GELU(), nn.Linear(256, 2))
        self.domain_classifier.apply(_init_weights)
        # Frozen text table the features are aligned to; a parameter (not a buffer) so the key is REF's `wte.weight`.
        self.wte = nn.Embedding(config.text_vocab, config.n_embd)
        _init_weights(self.wte)
        self.wte.weight.requires_grad_(False)

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

    def _decode(self, z_q: torch.Tensor, batch: EEGBatch) -> tuple[torch.Tensor, torch.Tensor]:
        m = batch.mask[..., None]
        freq = self.VQ.decode_task_layer_freq(self.VQ.decoder_freq(z_q, batch.chans, batch.times, batch.mask))
        raw = self.VQ.decode_task_layer_raw(self.VQ.decoder_raw(z_q, batch.chans, batch.times, batch.mask))
        return freq.float() * m, raw.float() * m

    def forward(self, batch: EEGBatch, text_ids: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                alpha: float = 0.0) -> dict[str, torch.Tensor]:
        """Training step losses. ``text_ids (B_t, L)`` with ``text_mask`` (valid positions; default all) adds the
        domain-adversarial alignment with gradient-reversal strength ``alpha`` (see :func:`alignment_alpha`).

        Returns ``loss`` (with grad) and detached ``loss_commit``, ``loss_freq``, ``loss_raw``, ``loss_align`` (0
        without text), ``domain_acc`` (mean of the EEG and text accuracies; NaN without text), ``codes (B, N)``
        (-1 on padding) and ``code_counts (K,)`` (real tokens per code in this batch).
        """
        feats, z = self._encode(batch)
        q = self.VQ.quantize(z, batch.mask)
        freq_pred, raw_pred = self._decode(q.quantized, batch)
        freq_target, raw_target = spectral_targets(batch)
        loss_freq = masked_mse(freq_pred, freq_target, batch.mask)
        loss_raw = masked_mse(raw_pred, raw_target, batch.mask)
        loss = q.loss + loss_freq + loss_raw
        loss_align = torch.zeros((), device=loss.device)
        domain_acc = torch.full((), float("nan"), device=loss.device)
        if text_ids is not None:
            text_mask = torch.ones_like(text_ids, dtype=torch.bool) if text_mask is None else text_mask.bool()
            eeg = feats[batch.mask]
            text = self.wte(text_ids)[text_mask].to(eeg.dtype)
            logits = self.domain_classifier(GradReverse.apply(torch.cat([eeg, text]), alpha)).float()
            logit_eeg, logit_text = logits.split([eeg.shape[0], text.shape[0]])
            loss_align = (F.cross_entropy(logit_eeg, logit_eeg.new_zeros(eeg.shape[0], dtype=torch.long))
                          + F.cross_entropy(logit_text, logit_text.new_ones(text.shape[0], dtype=torch.long)))
            acc_eeg = (logit_eeg.argmax(-1) == 0).float().mean()
            domain_acc = 0.5 * (acc_eeg + (logit_text.argmax(-1) == 1).float().mean())
            loss = loss + loss_align
        return {
            "loss": loss,
            "loss_commit": q.loss.detach(),
            "loss_freq": loss_freq.detach(),
            "loss_raw": loss_raw.detach(),
            "loss_align": loss_align.detach(),
            "domain_acc": domain_acc.detach(),
            "codes": q.indices,
            "code_counts": q.counts,
        }

    @torch.no_grad()
    def init_freq_bias(self, batch: EEGBatch) -> None:
        """Start the frequency head's output bias at the mean amplitude target of ``batch`` (a data-dependent
        init, like the codebook's k-means on the first batch; not in REF).

        Why: the z-scored amplitude target has a large mean spectrum (≈ 4 in the lowest bins, where the variance across
        tokens is also largest). From a zero bias, the tiny tokenizer learned that mean by filling its frequency
        decoder's residual stream with one constant vector, after which the decoder's outputs no longer varied
        across tokens (std 1e-4): validation loss_freq stayed at 0.499 whatever the steps, codebook or width, no
        better than predicting the mean spectrum (0.48), and the encoder features lost the band-power differences
        SEED and Workload turn on. With this init, 300 steps reach 0.456 and the outputs vary (std 0.07).
        """
        target, _ = spectral_targets(batch)
        self.VQ.decode_task_layer_freq[-1].bias.copy_(target[batch.mask].mean(0))

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
    def reconstruct(self, batch: EEGBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded ``(freq (B, N, 100), raw (B, N, 200))`` in the z-scored space of :func:`spectral_targets`."""
        _, z = self._encode(batch)
        codes = self.VQ.quantize.lookup(z)
        return self._decode(F.embedding(codes, self.VQ.quantize.codebook), batch)

    @torch.no_grad()
    def set_text_embeddings(self, weight: torch.Tensor) -> None:
        """Install the text-embedding table to align with (the LM's ``wte``); its row count becomes ``text_vocab``."""
        if weight.dim() != 2 or weight.shape[1] != self.config.n_embd:
            raise NeuroLMError(f"text embeddings must be (vocab, {self.config.n_embd}) to match the tokenizer width, "
                               f"got {tuple(weight.shape)}")
        old = self.wte.weight
        if weight.shape[0] != old.shape[0]:
            self.wte = nn.Embedding(weight.shape[0], weight.shape[1], device=old.device, dtype=old.dtype)
            self.wte.weight.requires_grad_(False)
            self.config.text_vocab = weight.shape[0]
        self.wte.weight.copy_(weight)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (text table and codebook state included)."""
        save_artifacts(directory, asdict(self.config), self, "neurolm-tokenizer")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> NeuralTokenizer:
        """Rebuild a tokenizer saved by :meth:`save_pretrained`; returned in eval mode."""
        values, state = read_artifacts(directory, "tokenizer")
        model = cls(TokenizerConfig.from_dict(values))
        load_state_exact(model, state, str(Path(directory) / WEIGHTS_FILE))
        return model.to(device).eval()

    @classmethod
    def from_reference_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> NeuralTokenizer:
        """Load the authors' ``VQ.pt``; the config comes from its ``encoder_args``/``decoder_args`` and weight shapes.

        ``norm_over_padding=True`` reproduces REF features (every stage then pads to REF's length: 1024 / 276
        tokens); ``dead_code_threshold=0`` as REF has none. A file written by :meth:`save_reference_checkpoint`
        restores its exact config instead. Returned in eval mode.
        """
        from .reference import load_vq_checkpoint

        return load_vq_checkpoint(cls, path, device)

    def save_reference_checkpoint(self, path: str | Path) -> None:
        """Write a ``VQ.pt`` the authors' code reads (their keys, ``encoder_args``/``decoder_args``); our loader
        reads it back bit-exactly (:mod:`neurolm.tokenizer.reference`)."""
        from .reference import save_vq_checkpoint

        save_vq_checkpoint(self, path)
