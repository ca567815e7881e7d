"""The spectral input: each EEG token's log band power, handed to the LM beside the tokenizer's features.

Why (measured with ``benchmarks/bench_quality.py``): the tiny tokenizer's features carry less of the band
power contrasts than a log band-power logistic regression reads directly from the signal (on real EEGMAT and on the
synthetic tasks), and no tiny tokenizer trained on CPU closed that gap. Giving the LM each patch's log power in a few
bands (one FFT of the 200-sample patch, 1-Hz bins) lets it learn what the baseline learns, and more, while the
tokenizer's features and codes stay exactly as they are. The reference has no such input
(``NeuroLMConfig.spectral_input=False``, what its checkpoints load with).

:func:`window_band_power` is the window-level view the band-power baseline reads: per channel, the log of the band
power averaged over the window's seconds, each 1-s patch Hann-tapered. Read out linearly it beats the per-token
mean of log power on the synthetic tasks and matches it on EEGMAT
(docs/results/2026-12-01-quality-ladder.md): the log of a mean keeps the few loud seconds (spindles, events) that a
mean of logs dilutes, and the taper keeps the 1/f low frequencies out of the high bands.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.batch import EEGBatch
from ..errors import NeuroLMError

BANDS_HZ: tuple[tuple[int, int], ...] = ((1, 4), (4, 8), (8, 10), (10, 13), (13, 20), (20, 30), (30, 45), (45, 75))
"""Half-open 1-Hz bin ranges of a 1-s patch at 200 Hz: delta, theta, low/high alpha, low/high beta, gamma, high
gamma (the store's band-pass ends at 75 Hz). Bin 0 (the patch mean) is left out."""

_FLOOR = 1e-6
"""Added before the log: a flat patch (µV/100 units, FFT power summed over 200 samples) stays finite."""


def band_log_power(patches: torch.Tensor) -> torch.Tensor:
    """``patches (..., 200)`` in µV/100 → log mean FFT power per band ``(..., len(BANDS_HZ))``, in float32."""
    power = torch.fft.rfft(patches.float(), dim=-1).abs().square()
    bands = torch.stack([power[..., lo:hi].mean(-1) for lo, hi in BANDS_HZ], dim=-1)
    return torch.log(bands + _FLOOR)


def window_band_power(patches: torch.Tensor, chans: torch.Tensor, mask: torch.Tensor, n_channels: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``patches (B, N, 200)`` with channel indices ``chans (B, N)`` and ``mask (B, N)`` → per window and
    channel index the log of the mean (over seconds) Hann-tapered band power ``(B, n_channels, bands)`` and which
    channels the window has ``(B, n_channels)`` (absent channels are 0)."""
    taper = torch.hann_window(patches.shape[-1], periodic=True, device=patches.device)
    power = torch.fft.rfft(patches.float() * taper, dim=-1).abs().square()
    bands = torch.stack([power[..., lo:hi].mean(-1) for lo, hi in BANDS_HZ], dim=-1) * mask[..., None]
    b = patches.shape[0]
    index = chans.clamp(0, n_channels - 1)
    total = bands.new_zeros(b, n_channels, len(BANDS_HZ)).scatter_add_(
        1, index[..., None].expand(-1, -1, len(BANDS_HZ)), bands)
    count = bands.new_zeros(b, n_channels).scatter_add_(1, index, mask.float())
    present = count > 0
    mean = total / count.clamp_min(1)[..., None]
    return torch.log(mean + _FLOOR) * present[..., None], present


class Moments:
    """Running per-feature mean and unbiased standard deviation of row batches, accumulated in float64."""

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.square: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, rows: torch.Tensor) -> None:
        self.total = self.total + rows.double().sum(0)
        self.square = self.square + rows.double().square().sum(0)
        self.n += rows.shape[0]

    def store(self, mean_out: torch.Tensor, std_out: torch.Tensor) -> None:
        mean = self.total / self.n
        std = ((self.square / self.n - mean.square()).clamp_min(0) * self.n / (self.n - 1)).sqrt()
        mean_out.copy_(mean.float())
        std_out.copy_(std.clamp_min(1e-6).float())


SUMMARY_SCALE = 0.3
"""Default factor on :class:`WindowSummary`'s output (``instruct --summary-scale``; saved in the model's config), i.e.
its learning rate relative to the rest of the LM. Why not 1: Adam moves every weight of the zero-initialised map by
about the learning rate per step whatever the gradient's size, so at full scale the summary outgrows the token
embeddings (std 0.02) within a few dozen steps and swamps the question it is added to. Why not smaller: the summary
then carries less of what it can (the scales compared: docs/results/2026-12-01-eegmat-levers.md)."""


class WindowSummary(nn.Module):
    """A learned linear map of the window's per-channel band power, added to every text token after the EEG.

    ``(B, d)`` = ``scale`` (:data:`SUMMARY_SCALE`) × the mean over a window's channels ``c`` of ``embed(z_c) ⊙
    chan(c)``, with ``z_c`` channel ``c``'s standardised :func:`window_band_power`: each output dimension is a linear
    functional of the (channel × band) table that the band-power baseline reads. Why: through attention
    over up to 276 per-second tokens the answer read it less well than a linear model does. Starts as a zero map
    (channel weights one, identity scaler), so adding it to a model changes none of its outputs until it is
    trained.

    With ``gate`` (``instruct --summary-gate``, the default for several tasks) each text position
    gets the summary times ``1 + gate(m)``, ``m`` the mean of the text's token embeddings up to that position
    (:meth:`gated`): six tasks share one summary, and the question can then choose which of its dimensions its
    answer reads (measured: docs/results/2026-12-03-summary-gate.md)."""

    def __init__(self, width: int, n_channels: int, scale: float = SUMMARY_SCALE, gate: bool = False) -> None:
        super().__init__()
        self.n_channels, self.scale = n_channels, scale
        self.gate: nn.Sequential | None = None
        """LayerNorm + a zero-initialised linear map: the gate is one everywhere until it is trained."""
        if gate:
            self.gate = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
            nn.init.zeros_(self.gate[1].weight)
            nn.init.zeros_(self.gate[1].bias)
        self.embed = nn.Linear(len(BANDS_HZ), width, bias=False)
        nn.init.zeros_(self.embed.weight)
        self.chan = nn.Embedding(n_channels, width)
        nn.init.ones_(self.chan.weight)
        self.register_buffer("mean", torch.zeros(len(BANDS_HZ)))
        self.register_buffer("std", torch.ones(len(BANDS_HZ)))

    @torch.no_grad()
    def fit(self, batches: list[EEGBatch]) -> None:
        """The scaler from every channel of the windows in ``batches``."""
        moments = Moments()
        for batch in batches:
            power, present = window_band_power(batch.patches, batch.chans, batch.mask, self.n_channels)
            moments.add(power[present].to(self.mean.device))
        if moments.n < 2:
            raise NeuroLMError("fitting the window summary's scaler needs at least two channels of EEG")
        moments.store(self.mean, self.std)

    def forward(self, batch: EEGBatch) -> torch.Tensor:
        power, present = window_band_power(batch.patches, batch.chans, batch.mask, self.n_channels)
        z = (power - self.mean) / self.std * present[..., None]
        mean = (self.embed(z) * self.chan.weight).sum(dim=1) / present.sum(dim=1, keepdim=True).clamp_min(1)
        return self.scale * mean

    def gated(self, summary: torch.Tensor, text_mean: torch.Tensor | None) -> torch.Tensor:
        """``summary (B, d)`` at the text positions whose running means of the token embeddings (that position's
        and those before it) are ``text_mean (B, M, d)``: ``(B, M, d)``, or ``(B, 1, d)`` for every position alike
        without a gate (then ``text_mean`` may be None)."""
        if self.gate is None or text_mean is None:
            return summary[:, None]
        return summary[:, None] * (1 + self.gate(text_mean))
