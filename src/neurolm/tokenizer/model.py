"""The text-aligned neural tokenizer (spec §3): EEG patches → encoder features and discrete codes.

An encoder (:class:`NeuralTransformer` over temporal-conv patch embeddings) feeds a cosine EMA vector quantiser; two
small decoders reconstruct each patch's FFT amplitude (bins 0–99) and the patch itself from the codes; a domain
classifier behind a gradient-reversal layer pushes the encoder's features towards the LLM's text-embedding space.
The encoder side lives in :mod:`neurolm.tokenizer.encoder` (what NeuroLM keeps), the config in
:mod:`neurolm.tokenizer.config`. Module names match the reference ``VQ_Align`` so its ``VQ.pt`` loads 1:1
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import WEIGHTS_FILE, load_state_exact, read_artifacts, save_artifacts
from ..data.batch import PATCH, EEGBatch
from ..errors import NeuroLMError
from .config import TokenizerConfig
from .encoder import (
    NeuralTransformer,
    TokenizerEncoder,
    _head,
    _init_weights,
    log_amplitude,
    make_quantizer,
    masked_zscore,
)


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


def _per_bin(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each feature standardised over the batch's real tokens; padded tokens set to 0."""
    real = x[mask]
    if real.shape[0] < 2:
        return x * 0.0
    return (x - real.mean(0)) / real.std(0).clamp_min(1e-6) * mask[..., None].to(x.dtype)


@torch.no_grad()
def spectral_targets(batch: EEGBatch, freq_target: str = "amplitude") -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction targets: the frequency target ``(B, N, 100)`` and the patch ``(B, N, 200)`` z-scored.

    ``amplitude`` (REF): FFT amplitude z-scored over all 200 bins before the upper (mirrored) half is dropped.
    ``log``: log amplitude of bins 0–99, each bin standardised over the batch's real tokens
    (see ``TokenizerConfig.freq_target``).
    """
    x = batch.patches.float()
    if freq_target == "log":
        freq = _per_bin(log_amplitude(x), batch.mask)
    else:
        freq = masked_zscore(torch.fft.fft(x, dim=-1).abs(), batch.mask)[..., : PATCH // 2]
    return freq, masked_zscore(x, batch.mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens only."""
    m = mask[..., None].float()
    return ((pred.float() - target).square() * m).sum() / (m.sum() * target.shape[-1]).clamp_min(1.0)


class _VQ(nn.Module):
    """Encoder, quantiser and decoders under REF's submodule names (the ``VQ.*`` checkpoint keys)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.encoder = NeuralTransformer(config, config.n_layer)
        self.decoder_freq = NeuralTransformer(config, config.decoder_layers, in_dim=config.code_dim)
        self.decoder_raw = NeuralTransformer(config, config.decoder_layers, in_dim=config.code_dim)
        self.quantize = make_quantizer(config)
        self.encode_task_layer = _head(d, config.code_dim)
        self.decode_task_layer_freq = _head(d, PATCH // 2)
        self.decode_task_layer_raw = _head(d, PATCH)
        for head in (self.encode_task_layer, self.decode_task_layer_freq, self.decode_task_layer_raw):
            head.apply(_init_weights)


class NeuralTokenizer(TokenizerEncoder):
    """The whole tokenizer: the encoder side (:class:`TokenizerEncoder`) plus the decoders and the alignment parts
    that tokenizer training needs."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__(config, _VQ(config))
        self.domain_classifier = nn.Sequential(nn.Linear(config.n_embd, 256), nn.GELU(), nn.Linear(256, 2))
        self.domain_classifier.apply(_init_weights)
        self.spectrum_head = nn.Linear(config.n_embd, PATCH // 2) if config.spectrum_head > 0 else None
        # Frozen text table the features are aligned to; a parameter (not a buffer) so the key is REF's `wte.weight`.
        self.wte = nn.Embedding(config.text_vocab, config.n_embd)
        _init_weights(self.wte)
        self.wte.weight.requires_grad_(False)

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
        without text), ``loss_spectrum`` (0 without ``config.spectrum_head``), ``domain_acc`` (mean of the EEG and
        text accuracies; NaN without text), ``codes (B, N)`` (-1 on padding) and ``code_counts (K,)`` (real tokens
        per code in this batch).
        """
        feats, z = self._encode(batch)
        q = self.VQ.quantize(z, batch.mask)
        freq_pred, raw_pred = self._decode(q.quantized, batch)
        freq_target, raw_target = spectral_targets(batch, self.config.freq_target)
        loss_freq = masked_mse(freq_pred, freq_target, batch.mask)
        loss_raw = masked_mse(raw_pred, raw_target, batch.mask)
        loss = q.loss + loss_freq + loss_raw
        loss_spectrum = torch.zeros((), device=loss.device)
        if self.spectrum_head is not None:
            target, _ = spectral_targets(batch, "log")
            loss_spectrum = masked_mse(self.spectrum_head(feats), target, batch.mask)
            loss = loss + self.config.spectrum_head * loss_spectrum
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
            "loss_spectrum": loss_spectrum.detach(),
            "domain_acc": domain_acc.detach(),
            "codes": q.indices,
            "code_counts": q.counts,
        }

    @torch.no_grad()
    def init_freq_bias(self, batch: EEGBatch) -> None:
        """Start the frequency head's output bias at the mean amplitude target of ``batch`` (a data-dependent
        init, like the codebook's k-means on the first batch; not in REF).

        Why: the z-scored amplitude target has a large mean spectrum, largest in the lowest bins. From a zero bias
        the tiny tokenizer learned that mean by filling its frequency decoder's residual stream with one constant
        vector, after which the decoder's outputs no longer varied across tokens and the encoder features lost the
        band-power differences tasks turn on (docs/tokenizer.md has the numbers).
        """
        target, _ = spectral_targets(batch, self.config.freq_target)
        self.VQ.decode_task_layer_freq[-1].bias.copy_(target[batch.mask].mean(0))

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
