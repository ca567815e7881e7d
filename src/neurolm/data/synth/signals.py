"""Synthetic EEG physiology: sources with scalp topographies, mixed into a recording's channels.

A recording is the sum of
- a 1/f background per channel (spatially smoothed, plus a shared reference component),
- band-limited rhythms (delta, theta, alpha, beta, gamma; left and right hemisphere sources so that asymmetries
  exist), each with a topography over the channel positions and a time envelope that the labels modulate,
- transients (spikes, K-complexes, periodic discharges, spindles, blinks, muscle bursts) placed at given times,
- mains hum and the non-EEG channels (ECG, EMG, EOG, photic) a montage carries.

Subjects differ before any label does (:class:`Subject`: alpha frequency, amplitude scale, 1/f slope, band powers,
channel gains), which is what keeps the synthetic tasks from being trivial.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy.signal import lfilter

from ..channels import normalize_name
from ..preprocess import BANDS

# ---------------------------------------------------------------------------------------------------------------
# Scalp geometry. Azimuthal projection with Cz at the origin, nose at +y, left at -x; the 10 % ring through
# Fpz/T7/Oz has radius 0.8, the 0 % ring (nasion, preauricular points, inion) radius 1.0.
# Rows of the 10-10 system: midline y, and the angle at which the row meets the 0.8 ring (electrode number 7/8,
# or 1/2 for the FP/O/I rows which lie on the ring).
_ROWS: dict[str, tuple[float, float, int]] = {  # row: (midline y, ring angle in degrees, lateral index on the ring)
    "FP": (0.8, 108.0, 1),
    "AF": (0.6, 126.0, 4),
    "F": (0.4, 144.0, 4),
    "FC": (0.2, 162.0, 4),
    "FT": (0.2, 162.0, 4),
    "C": (0.0, 180.0, 4),
    "T": (0.0, 180.0, 4),
    "CP": (-0.2, 198.0, 4),
    "TP": (-0.2, 198.0, 4),
    "P": (-0.4, 216.0, 4),
    "PO": (-0.6, 234.0, 4),
    "O": (-0.8, 252.0, 1),
    "I": (-1.0, 252.0, 1),
}
_OLD_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
_POLAR = {  # sites outside the 10-10 grid: (radius, angle of the left-hemisphere site); right ones are mirrored
    "A": (1.1, 195.0),  # ear lobes
    "M": (1.05, 200.0),  # mastoids
    "T": (0.95, 170.0),  # T1/T2, anterior temporal
    "CB": (1.0, 240.0),  # cerebellar
}
_SITE = re.compile(r"(FP|AF|FC|FT|CP|TP|PO|F|C|T|P|O|I)(Z|\d{1,2})")


def scalp_xy(label: str) -> tuple[float, float] | None:
    """Approximate 2-D scalp position of a channel label, or ``None`` for non-EEG channels (ECG, EMG, EOG, ...).

    Derived from the 10-10 name itself (row letters → front/back, number → side and distance from the midline), so
    every dataset's montage gets positions without a montage file; a bipolar label sits midway between its pair.
    """
    name = normalize_name(label)
    if name is None:
        return None
    if "-" in name:
        pair = [scalp_xy(part) for part in name.split("-")]
        if None in pair:
            return None
        return ((pair[0][0] + pair[1][0]) / 2, (pair[0][1] + pair[1][1]) / 2)
    name = _OLD_NAMES.get(name, name)
    special = re.fullmatch(r"(A|M|T|CB)([12])", name)
    if special:
        radius, angle = _POLAR[special.group(1)]
        x, y = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
        return (x, y) if special.group(2) == "1" else (-x, y)
    site = _SITE.fullmatch(name)
    if site is None:
        return None
    row, number = site.groups()
    y_mid, angle, ring_index = _ROWS[row]
    if number == "Z":
        return (0.0, y_mid)
    k = int(number)
    lateral = (k + 1) // 2
    ring = (0.8 * math.cos(math.radians(angle)), 0.8 * math.sin(math.radians(angle)))
    if lateral <= ring_index:
        frac = lateral / ring_index
        x, y = frac * ring[0], (1 - frac) * y_mid + frac * ring[1]
    else:
        radius = min(0.8 + 0.2 * (lateral - ring_index), 1.1)
        x, y = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
    return (x, y) if k % 2 else (-x, y)


def positions(labels: Sequence[str]) -> np.ndarray:
    """``(C, 2)`` scalp positions; NaN rows for non-EEG channels."""
    return np.array([scalp_xy(lb) or (np.nan, np.nan) for lb in labels], dtype=np.float64)


# Topographies: weights in [0, 1] over channel positions (NaN positions → 0).
def _gauss(xy: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    w = np.exp(-0.5 * (((xy[:, 0] - cx) / sx) ** 2 + ((xy[:, 1] - cy) / sy) ** 2))
    return np.nan_to_num(w)


def topography(xy: np.ndarray, kind: str) -> np.ndarray:
    """Named scalp distributions of the rhythms and transients."""
    x = np.nan_to_num(xy[:, 0])
    eeg = ~np.isnan(xy[:, 0])
    if kind == "posterior":  # alpha: occipito-parietal maximum
        return _gauss(xy, 0.0, -0.75, 0.55, 0.35)
    if kind == "frontal":
        return _gauss(xy, 0.0, 0.6, 0.6, 0.35)
    if kind == "frontal_midline":  # frontal-midline theta of mental effort
        return _gauss(xy, 0.0, 0.35, 0.3, 0.3)
    if kind == "prefrontal":  # eye blinks and movements: Fp1/Fp2 maximum, falls off fast
        return _gauss(xy, 0.0, 0.95, 0.5, 0.18)
    if kind == "central":  # vertex waves, spindles, sawtooth waves
        return _gauss(xy, 0.0, 0.0, 0.4, 0.4)
    if kind == "temporal":  # muscle: temporalis over T7/T8, F7/F8
        return np.maximum(_gauss(xy, -0.85, 0.05, 0.25, 0.45), _gauss(xy, 0.85, 0.05, 0.25, 0.45))
    if kind == "diffuse":
        return eeg.astype(np.float64)
    if kind in ("left", "right"):  # hemisphere weights, midline at 1/2
        sign = -1.0 if kind == "left" else 1.0
        return np.where(eeg, 1.0 / (1.0 + np.exp(-sign * x / 0.12)), 0.0)
    raise ValueError(f"unknown topography {kind!r}")


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Subject:
    """What makes one person's EEG differ from another's, drawn once per subject."""

    alpha_hz: float
    theta_hz: float
    scale: float  # overall amplitude (skull, age, amplifier): multiplies every EEG source
    slope: float  # exponent of the 1/f background power
    band_gain: dict[str, float]  # per-band amplitude factors
    hum_uv: float
    heart_bpm: float
    seed: int  # for the per-channel gains of each montage

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Subject:
        """A random adult; the spreads are part of the difficulty calibration (wider = harder cross-subject tasks)."""
        return cls(
            alpha_hz=float(np.clip(rng.normal(10.0, 0.8), 8.3, 12.0)),
            theta_hz=float(rng.uniform(5.0, 7.0)),
            scale=float(np.exp(rng.normal(0.0, 0.15))),
            slope=float(rng.uniform(1.4, 1.9)),
            band_gain={b: float(np.exp(rng.normal(0.0, 0.25))) for b in BANDS},
            hum_uv=float(rng.uniform(1.0, 5.0)),
            heart_bpm=float(rng.uniform(55.0, 85.0)),
            seed=int(rng.integers(2**31)),
        )

    def channel_gains(self, n: int) -> np.ndarray:
        """Per-channel gains (electrode impedance, skull thickness): the same for every recording of the subject."""
        return np.exp(np.random.default_rng(self.seed).normal(0.0, 0.12, n))


def envelope(per_second: np.ndarray | float, n_times: int, sfreq: float) -> np.ndarray:
    """Per-second gains → a smooth per-sample envelope (linear between second centres)."""
    g = np.atleast_1d(np.asarray(per_second, dtype=np.float64))
    if g.size == 1:
        return np.full(n_times, g[0])
    centres = (np.arange(g.size) + 0.5) * sfreq
    return np.interp(np.arange(n_times), centres, g)


def slow_wander(rng: np.random.Generator, seconds: int, sigma: float, tau_s: float = 4.0) -> np.ndarray:
    """Log-normal random gain per second with correlation time ``tau_s``: rhythms wax and wane.

    The log gain is a stationary unit-variance AR(1) process, so the mean gain is 1 whatever ``sigma``.
    """
    a = math.exp(-1.0 / tau_s)
    first = rng.normal()
    drive = rng.normal(size=seconds) * math.sqrt(1 - a * a)
    drive[0] = first
    z = lfilter([1.0], [1.0, -a], drive)
    return np.exp(sigma * z - 0.5 * sigma * sigma)


def _shaped_noise(rng: np.random.Generator, n: int, shape: np.ndarray) -> np.ndarray:
    """Unit-variance float32 noise whose amplitude spectrum is ``shape`` (rfft bins; leading axes = channels).

    Random draws are made only where the shape is non-negligible: a narrow rhythm costs one inverse FFT, not a
    spectrum's worth of random numbers.
    """
    support = np.flatnonzero(np.any(shape > 1e-4, axis=tuple(range(shape.ndim - 1))))
    lo, hi = (support[0], support[-1] + 1) if support.size else (0, 0)
    spec = np.zeros(shape.shape, dtype=np.complex64)
    size = (*shape.shape[:-1], 2 * (hi - lo))
    spec[..., lo:hi] = rng.standard_normal(size, dtype=np.float32).view(np.complex64)
    spec[..., lo:hi] *= shape[..., lo:hi].astype(np.float32)
    x = scipy.fft.irfft(spec, n, axis=-1)
    x /= x.std(axis=-1, keepdims=True) + 1e-12
    return x


def narrowband(rng: np.random.Generator, n: int, sfreq: float, f0: float, bw: float) -> np.ndarray:
    """Unit-variance Gaussian noise with a Gaussian spectral peak at ``f0`` (Hz) of width ``bw``: a rhythm."""
    freqs = scipy.fft.rfftfreq(n, 1.0 / sfreq)
    return _shaped_noise(rng, n, np.exp(-0.5 * ((freqs - f0) / bw) ** 2))


def pink(rng: np.random.Generator, n_ch: int, n: int, sfreq: float, slope: float) -> np.ndarray:
    """``(n_ch, n)`` unit-variance noise with power ∝ 1/f^slope above 1 Hz (flat below, so drifts stay bounded)
    and a white floor ~40 dB down (amplifier noise)."""
    freqs = scipy.fft.rfftfreq(n, 1.0 / sfreq)
    shape = np.maximum(freqs, 1.0) ** (-slope / 2) + 0.01
    shape[0] = 0.0
    return _shaped_noise(rng, n, np.broadcast_to(shape, (n_ch, freqs.size)))


def broadband(rng: np.random.Generator, n: int, sfreq: float, lo: float, hi: float) -> np.ndarray:
    """Unit-variance band-limited white noise (muscle, EMG)."""
    freqs = scipy.fft.rfftfreq(n, 1.0 / sfreq)
    return _shaped_noise(rng, n, ((freqs >= lo) & (freqs <= min(hi, 0.45 * sfreq))).astype(np.float64))


# Transient waveforms (unit peak), sampled at sfreq.
def spike_wave(sfreq: float, spike_ms: float = 60.0, wave_ms: float = 250.0) -> np.ndarray:
    """Sharp negative spike followed by a slower positive-then-negative wave (spike-and-slow-wave complex)."""
    t = np.arange(int(sfreq * (spike_ms + wave_ms * 1.6) / 1000)) / sfreq
    spike = -np.exp(-0.5 * ((t - spike_ms / 2000) / (spike_ms / 5000)) ** 2)
    tw = t - spike_ms / 1000 - wave_ms / 1000
    wave = -0.6 * np.exp(-0.5 * (tw / (wave_ms / 2500)) ** 2)
    return spike + 0.4 * np.exp(-0.5 * ((t - spike_ms / 1000 * 1.1) / (spike_ms / 4000)) ** 2) + wave


def sharp_wave(sfreq: float, ms: float = 150.0) -> np.ndarray:
    """Periodic-discharge complex: a sharp biphasic wave (GPED/PLED)."""
    t = np.arange(int(sfreq * ms * 2.5 / 1000)) / sfreq
    c = ms / 1000
    return -np.exp(-0.5 * ((t - c / 2) / (c / 6)) ** 2) + 0.5 * np.exp(-0.5 * ((t - c) / (c / 3)) ** 2)


def k_complex(sfreq: float) -> np.ndarray:
    """Sharp negative wave then a slower positive one, ~1 s in all (N2)."""
    t = np.arange(int(sfreq * 1.2)) / sfreq
    return -np.exp(-0.5 * ((t - 0.25) / 0.08) ** 2) + 0.6 * np.exp(-0.5 * ((t - 0.6) / 0.15) ** 2)


def burst(sfreq: float, f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A waxing-waning oscillation (sleep spindle, sawtooth run), unit peak."""
    n = int(sfreq * seconds)
    t = np.arange(n) / sfreq
    return np.hanning(n) * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))


def blink(sfreq: float, seconds: float = 0.35) -> np.ndarray:
    """Eye blink: a smooth monophasic deflection (positive at Fp1/Fp2), unit peak."""
    return np.hanning(max(int(sfreq * seconds), 3))


def ecg(rng: np.random.Generator, n: int, sfreq: float, bpm: float) -> np.ndarray:
    """A crude ECG in µV (QRS ~1 mV, T wave), with heart-rate variability."""
    out = np.zeros(n)
    qrs = 1000.0 * (np.hanning(max(int(0.08 * sfreq), 3)))
    tw = 250.0 * np.hanning(max(int(0.2 * sfreq), 3))
    t = rng.uniform(0, 60 / bpm)
    while t * sfreq < n:
        i = int(t * sfreq)
        _add(out, qrs, i)
        _add(out, tw, i + int(0.25 * sfreq))
        t += 60 / bpm * rng.uniform(0.92, 1.08)
    return out


def _add(target: np.ndarray, wave: np.ndarray, start: int) -> None:
    """``target[start:start+len(wave)] += wave``, clipped to the array."""
    lo, hi = max(start, 0), min(start + wave.size, target.size)
    if hi > lo:
        target[lo:hi] += wave[lo - start : hi - start]


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Scalp:
    """One recording under construction: ``data`` (C, n_times) in µV gathers every source added to it."""

    labels: Sequence[str]
    sfreq: float
    seconds: int
    subject: Subject
    rng: np.random.Generator
    data: np.ndarray = field(init=False)
    xy: np.ndarray = field(init=False)
    eeg: np.ndarray = field(init=False)  # bool (C,): channels with a scalp position

    def __post_init__(self) -> None:
        self.n_times = int(round(self.seconds * self.sfreq))
        self.xy = positions(self.labels)
        self.eeg = ~np.isnan(self.xy[:, 0])
        self.data = np.zeros((len(self.labels), self.n_times), dtype=np.float32)
        gain = np.where(self.eeg, self.subject.scale * self.subject.channel_gains(len(self.labels)), 0.0)
        self._gain = gain.astype(np.float32)

    def topo(self, kind: str) -> np.ndarray:
        return topography(self.xy, kind)

    def env(self, per_second: np.ndarray | float) -> np.ndarray:
        return envelope(per_second, self.n_times, self.sfreq)

    def background(self, level_uv: float = 12.0) -> None:
        """1/f background: independent per channel, blurred over neighbours, plus a common reference part."""
        n_eeg = int(self.eeg.sum())
        if n_eeg == 0:
            return
        noise = pink(self.rng, n_eeg + 1, self.n_times, self.sfreq, self.subject.slope)
        xy = self.xy[self.eeg]
        dist2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
        blur = np.exp(-dist2 / (2 * 0.25**2))
        blur /= np.sqrt((blur**2).sum(1, keepdims=True))
        mixed = blur.astype(np.float32) @ noise[:-1] + 0.3 * noise[-1]
        scale = level_uv * self._gain[self.eeg, None] / mixed.std(axis=1, keepdims=True)
        self.data[self.eeg] += mixed * scale

    def rhythm(self, f0: float, bw: float, amp_uv: float, topo: np.ndarray, per_second=1.0) -> None:
        """A band-limited source with a scalp topography and a per-second amplitude envelope."""
        src = narrowband(self.rng, self.n_times, self.sfreq, f0, bw)
        if np.ndim(per_second) or per_second != 1.0:
            src *= self.env(per_second).astype(np.float32)
        self.data += np.outer((amp_uv * topo * self._gain).astype(np.float32), src)

    def band(self, name: str, amp_uv: float, topo: np.ndarray, per_second=1.0, *, f0: float | None = None) -> None:
        """A rhythm in one of :data:`BANDS`, at the subject's own peak frequency for theta and alpha."""
        peak = {
            "delta": (1.8, 0.9),
            "theta": (self.subject.theta_hz, 0.9),
            "alpha": (self.subject.alpha_hz, 0.7),
            "beta": (20.0, 4.5),
            "gamma": (38.0, 4.0),
        }[name]
        self.rhythm(f0 or peak[0], peak[1], amp_uv * self.subject.band_gain[name], topo, per_second)

    def transient(self, wave: np.ndarray, onset_s: float, amp_uv: float, topo: np.ndarray) -> None:
        """Add a waveform (unit peak) starting at ``onset_s`` with per-channel weights ``topo``."""
        start = int(round(onset_s * self.sfreq))
        lo, hi = max(start, 0), min(start + wave.size, self.n_times)
        if hi > lo:
            weights = (amp_uv * topo * self._gain).astype(np.float32)
            self.data[:, lo:hi] += np.outer(weights, wave[lo - start : hi - start])

    def muscle(self, onset_s: float, seconds: float, amp_uv: float, topo: np.ndarray) -> None:
        """Broadband (20-100 Hz) muscle burst."""
        n = int(seconds * self.sfreq)
        wave = broadband(self.rng, n, self.sfreq, 20.0, 100.0) * np.hanning(n) ** 0.3
        self.transient(wave, onset_s, amp_uv, topo)

    def artifacts(self, blinks_per_min: float = 6.0, muscle_per_min: float = 1.0, pops_per_min: float = 0.3) -> None:
        """Ordinary contamination of any recording: blinks, short muscle bursts, electrode pops."""
        minutes = self.seconds / 60
        for t in self.rng.uniform(0, self.seconds, self.rng.poisson(blinks_per_min * minutes)):
            self.transient(blink(self.sfreq), t, self.rng.uniform(60, 150), self.topo("prefrontal"))
        for t in self.rng.uniform(0, self.seconds, self.rng.poisson(muscle_per_min * minutes)):
            self.muscle(t, self.rng.uniform(0.3, 1.5), self.rng.uniform(5, 15), self.topo("temporal"))
        eeg_idx = np.flatnonzero(self.eeg)
        for t in self.rng.uniform(0, self.seconds, self.rng.poisson(pops_per_min * minutes)):
            one = np.zeros(len(self.labels))
            one[self.rng.choice(eeg_idx)] = 1.0
            decay = np.exp(-np.arange(int(0.5 * self.sfreq)) / (0.1 * self.sfreq))
            self.transient(decay, t, self.rng.uniform(-150, 150), one)

    def finish(self, mains_hz: float) -> np.ndarray:
        """Add mains hum (a few µV, different per channel); return the float32 µV array."""
        t = np.arange(self.n_times) / self.sfreq
        hum = np.sin(2 * np.pi * mains_hz * t + self.rng.uniform(0, 2 * np.pi)).astype(np.float32)
        hum_amp = (self.subject.hum_uv * self.rng.uniform(0.5, 1.5, len(self.labels))).astype(np.float32)
        self.data += np.outer(hum_amp, hum)
        return self.data

    def set_channel(self, label: str, signal: np.ndarray) -> None:
        """Fill a non-EEG channel (ECG, EMG, EOG, photic) with its own signal."""
        self.data[list(self.labels).index(label)] += signal
