"""The tokenizer's sizes and switches (:class:`TokenizerConfig`) and its presets.

Its own module because the encoder side (:mod:`neurolm.tokenizer.encoder`, all that NeuroLM keeps) and the whole
tokenizer (:mod:`neurolm.tokenizer.model`) are both built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..data.channels import PAD_INDEX
from ..errors import NeuroLMError


FREQ_TARGETS = ("amplitude", "log")


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
    spectral_embed: bool = False
    """Add a learned projection of each patch's log FFT amplitude to the temporal-conv patch embedding (not in REF).
    The conv front end decimates to 25 Hz with 15-tap kernels, whose responses cannot separate nearby lines (13 vs
    17 Hz); a linear view of the 1-Hz log spectrum gives the encoder that resolution from its first layer."""
    spectrum_head: float = 0.0
    """Weight of a training-only loss (not in REF, 0 = off): a linear head reads each token's log amplitude
    spectrum (1-Hz bins, each standardised over the batch) from the encoder features. The VQ losses only ask the
    features for what a few hundred codes can carry, the coarse spectral shape; this asks them to keep the fine
    spectrum linearly readable, which is what the LM and a linear probe consume."""
    raw_weight: float = 1.0
    """Weight of the temporal (raw-patch) reconstruction loss (REF: 1). The z-scored waveform of a 1-s patch is
    mostly phase detail that averages away over a window; at a small width it competes with the spectrum for the
    features' capacity."""
    freq_target: str = "amplitude"
    """What the frequency decoder reconstructs: ``amplitude`` (REF: FFT amplitude z-scored per sample, dominated
    by the few large low-frequency bins) or ``log`` (log amplitude, each bin standardised over the batch's real
    tokens, so a narrow line at 13 Hz weighs as much in the loss as the delta band)."""

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
        if not isinstance(self.spectral_embed, bool):
            raise NeuroLMError(f"tokenizer config: spectral_embed must be true/false, got {self.spectral_embed!r}")
        if not 0.0 <= self.spectrum_head < float("inf") or isinstance(self.spectrum_head, bool):
            raise NeuroLMError(f"tokenizer config: spectrum_head must be a non-negative weight, got "
                               f"{self.spectrum_head!r}")
        if not 0.0 <= self.raw_weight < float("inf") or isinstance(self.raw_weight, bool):
            raise NeuroLMError(f"tokenizer config: raw_weight must be a non-negative weight, got {self.raw_weight!r}")
        if self.freq_target not in FREQ_TARGETS:
            raise NeuroLMError(f"tokenizer config: freq_target must be one of {', '.join(FREQ_TARGETS)}, got "
                               f"{self.freq_target!r}")
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
    # The spectral embedding, the log-amplitude target, the spectrum head and the temporal weight stay at the
    # authors' settings: none raised the trained encoder's read-out on real SSVEP beyond the run-to-run
    # spread, and the spectral embedding traded a line probe for an evoked one
    # (docs/results/2026-12-07-tokenizer-ladder.md).
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, decoder_layers=1, codebook_size=512, code_dim=32, ema_decay=0.9,
                 dead_code_threshold=0.1),
}
