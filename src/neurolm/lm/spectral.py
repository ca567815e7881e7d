"""The spectral input: each EEG token's log band power, handed to the LM beside the tokenizer's features.

Why (issue 14, measured in ``benchmarks/bench_quality.py``): the tiny tokenizer's features carry less of the band
power contrasts than a log band-power logistic regression reads directly from the signal (on real EEGMAT and on the
synthetic tasks), and no tiny tokenizer trained on CPU closed that gap. Giving the LM each patch's log power in a few
bands (one FFT of the 200-sample patch, 1-Hz bins) lets it learn what the baseline learns, and more, while the
tokenizer's features and codes stay exactly as they are. The reference has no such input
(``NeuroLMConfig.spectral_input=False``, what its checkpoints load with).
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
