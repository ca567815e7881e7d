"""The spectral input: each EEG token's log band power, handed to the LM beside the tokenizer's features.

Why (issue 14, measured in ``benchmarks/bench_quality.py``): the tiny tokenizer's features carry less of the band
power contrasts than a log band-power logistic regression reads directly from the signal (on real EEGMAT and on the
synthetic tasks), and no tiny tokenizer trained on CPU closed that gap. Giving the LM each patch's log power in a few
bands (one FFT of the 200-sample patch, 1-Hz bins) lets it learn what the baseline learns, and more, while the
tokenizer's features and codes stay exactly as they are. The reference has no such input
(``NeuroLMConfig.spectral_input=False``, what its checkpoints load with).

:func:`window_band_power` is the window-level view the band-power baseline reads: per channel, the log of the band
power averaged over the window's seconds, each 1-s patch Hann-tapered. Read out linearly it beats the per-token
mean of log power on the synthetic tasks (test balanced accuracy HMC 0.88 vs 0.76, TUEV 0.64 vs 0.54, SEED 0.77
vs 0.69) and matches it on EEGMAT (5-fold mean 0.67 vs 0.67): the log of a mean keeps the few loud seconds
(spindles, events) that a mean of logs dilutes, and the taper keeps the 1/f low frequencies out of the high bands.
"""

from __future__ import annotations

import torch

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
