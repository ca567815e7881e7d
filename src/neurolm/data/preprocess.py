"""The paper's signal pipeline: pick channels → band-pass 0.1–75 Hz → notch at mains → resample to 200 Hz → µV/100.

Declared scale: a recording whose samples are not in the unit its file states (SSVEP-Exo's FIF files hold values
about a hundred times too large) is multiplied by ``input_scale`` as it is read, before any check or filter, so the
µV thresholds below mean µV; a task file's ``scale`` key and the ``--scale`` flag of ``prepare`` and ``ask`` set it.

Low rates: the 75 Hz low-pass needs a rate above 150 Hz. A recording below that is refused unless low rates are
allowed (``allow_low_rate``: a task file's key, ``prepare --allow-low-rate``); then the low-pass moves below Nyquist
(:func:`low_pass`), the resampling to 200 Hz stays, and the store records the band its windows share, which the
model's ``training.json`` keeps so that ``ask`` can say when a recording's band differs. Opt-in, because a store
whose windows lack the 40–75 Hz content the paper's windows have is a different task for the model, and a user
should choose that, not find it.

Filters are MNE's (FIR band-pass and notch, as the reference calls ``raw.filter``/``raw.notch_filter``) and the
resampler is MNE's polyphase one; nothing here hand-rolls DSP. The mains frequency is a per-dataset setting, not a
constant: the reference notches 50 Hz on US (TUH) data, where the hum is at 60 Hz.

Bad signals: NaN/Inf samples are an error naming the channels (no repair: they mark gaps or a corrupt file). A flat
channel (peak-to-peak below ``flat_uv`` over the whole recording) is dropped with a :class:`RepairWarning` where the
dataset keeps whatever channels a file has (pretraining), and is an error naming it where the channel set is fixed;
so is a degenerate channel (fewer than ``min_distinct`` distinct values). A window whose median channel standard
deviation is above ``max_sd_uv`` is implausible for scalp EEG and dropped (counted in the manifest); a recording with
more than ``max_implausible`` of its windows so is skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import mne
import numpy as np

from ..errors import NeuroLMError

TARGET_SFREQ = 200.0

BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
"""Frequency bands (Hz) of the band-power baseline (:mod:`neurolm.instruct.baseline`), which the synthetic corpus's
difficulty is calibrated against."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Signal pipeline settings; stored in every window store's manifest."""

    l_freq: float = 0.1
    """High-pass edge of the band-pass (Hz)."""
    h_freq: float = 75.0
    """Low-pass edge of the band-pass (Hz); the input rate must exceed twice this."""
    mains: float | None = 60.0
    """Notch frequency (Hz): 60 for TUH (US) data, 50 for European/Asian data; None disables the notch."""
    sfreq: float = TARGET_SFREQ
    """Output sampling rate (Hz): one token = one second = 200 samples."""
    scale_uv: float = 100.0
    """Signals in µV are divided by this before the model (the paper: 1.0 = 100 µV)."""
    input_scale: float = 1.0
    """Factor the samples are multiplied by as they are read (in µV as the file states them), for a recording whose
    stated unit is wrong: a task file's ``scale`` (0.01 for values stored a hundred times too large)."""
    allow_low_rate: bool = False
    """Accept recordings at or below ``2 * h_freq``, low-passed below their Nyquist frequency (:func:`low_pass`)."""
    flat_uv: float = 1.0
    """A channel whose peak-to-peak amplitude over the whole recording is below this (µV) is flat: disconnected or
    a dead amplifier (real EEG is never that still; MNE's examples reject epochs below 1 µV the same way)."""
    min_distinct: int = 16
    """A channel taking fewer distinct values than this is a degenerate export (real TUH-layout files circulate whose
    channels hold 2–8 values over a minute); a 16-bit EDF channel of real EEG takes hundreds."""
    max_sd_uv: float = 1000.0
    """A window whose median channel standard deviation exceeds this (µV) is implausible for scalp EEG (awake EEG is
    10–100 µV, sleep slow waves and artefacts reach a few hundred): a damaged file or a wrong unit. It is dropped."""
    max_implausible: float = 0.5
    """A recording with more than this fraction of implausible windows is skipped, not kept in part."""

    def to_dict(self) -> dict:
        """The recorded form; ``input_scale`` only when declared, so stores prepared without it keep their record."""
        out = asdict(self) | {"filter": "mne FIR (firwin, zero-phase)", "resampler": "mne polyphase"}
        if self.input_scale == 1:
            del out["input_scale"]
        if not self.allow_low_rate:
            del out["allow_low_rate"]
        return out


class RepairWarning(UserWarning):
    """An input fault that was repaired rather than refused; ``prepare`` lists these per file in the manifest."""


def check_finite(data: np.ndarray, labels: list[str]) -> None:
    """Raise naming every channel (row of ``data``) that holds NaN/Inf samples, with their count."""
    bad = ~np.isfinite(data)
    rows = np.flatnonzero(bad.any(axis=1))
    if len(rows):
        where = ", ".join(f"{labels[i]} ({int(bad[i].sum())} of {data.shape[1]} samples)" for i in rows)
        raise NeuroLMError(f"NaN/Inf samples in channel(s) {where}")


def flat_rows(data_uv: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Boolean mask of the flat channels of a ``(C, T)`` µV array (see ``PreprocessConfig.flat_uv``)."""
    return np.ptp(data_uv, axis=1) < config.flat_uv


def degenerate_rows(data_uv: np.ndarray, config: PreprocessConfig, samples: int = 12_000) -> np.ndarray:
    """Boolean mask of the channels of a ``(C, T)`` array with fewer than ``config.min_distinct`` distinct values.

    Counted over ``samples`` evenly spaced samples (a subsample has at most the values of the whole, and real EEG
    shows hundreds in far fewer), so the check costs the same for a 10-minute and a 10-hour recording.
    """
    step = max(1, data_uv.shape[1] // samples)
    return np.array([len(np.unique(row[::step])) < config.min_distinct for row in data_uv], dtype=bool)


def implausible_windows(windows: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Boolean mask of the ``(N, C, T)`` preprocessed windows (µV / ``scale_uv``) implausible for scalp EEG: a median
    channel standard deviation above ``config.max_sd_uv``, or any sample above 100 times that (100 mV: no scalp
    potential comes near, and it keeps every stored value far inside float16's range of ±6.5 V)."""
    sd = np.median(windows.std(axis=2), axis=1) * config.scale_uv
    peak = np.abs(windows).max(axis=(1, 2)) * config.scale_uv
    return (sd > config.max_sd_uv) | (peak > 100 * config.max_sd_uv)


TYPICAL_SD_UV = 50.0
"""A scalp EEG channel's typical standard deviation after the band-pass (µV; awake EEG is 10–100 µV), to suggest a
declared scale for a recording whose windows are all implausible."""


def suggested_scale(windows: np.ndarray, config: PreprocessConfig) -> float:
    """The power of ten that would bring the windows' median channel standard deviation near scalp EEG's, times the
    scale already declared: what to declare when the whole recording is implausible (a wrong unit)."""
    sd = float(np.median(windows.std(axis=2))) * config.scale_uv
    if not sd > 0:
        return config.input_scale
    return config.input_scale * 10.0 ** round(np.log10(TYPICAL_SD_UV / sd))


MIN_SFREQ = 50.0
"""Below this rate (a 20 Hz band) a recording holds too little of the EEG the model learnt to be worth answering."""
LOW_PASS_FRACTION = 0.4
"""A low rate's low-pass edge as a fraction of the rate: MNE's transition band (a quarter of the edge) then ends at
Nyquist (0.4 + 0.1 = 0.5), so nothing aliases."""


def low_pass(sfreq: float, config: PreprocessConfig) -> float:
    """The low-pass edge a recording at ``sfreq`` Hz gets: ``config.h_freq``, or, for a low rate where allowed, a
    whole number of Hz below Nyquist; a low rate that is not allowed is an error saying how to allow it."""
    if sfreq > 2 * config.h_freq:
        return config.h_freq
    if not config.allow_low_rate:
        raise NeuroLMError(
            f"sampling rate {sfreq:g} Hz is too low: the pipeline low-passes at {config.h_freq:g} Hz and needs a "
            f"rate above {2 * config.h_freq:g} Hz; to low-pass at {np.floor(LOW_PASS_FRACTION * sfreq):g} Hz instead, "
            "allow low rates (`allow_low_rate = true` in a task file, --allow-low-rate for prepare and ask)"
        )
    if sfreq < MIN_SFREQ:
        raise NeuroLMError(f"sampling rate {sfreq:g} Hz is too low even with low rates allowed (at least "
                           f"{MIN_SFREQ:g} Hz: a band up to {LOW_PASS_FRACTION * MIN_SFREQ:g} Hz)")
    return float(np.floor(LOW_PASS_FRACTION * sfreq))


def preprocess_array(data_uv: np.ndarray, sfreq: float, config: PreprocessConfig) -> np.ndarray:
    """Filter, notch and resample a ``(C, T)`` array in µV; return float32 ``(C, T')`` at ``config.sfreq`` scaled."""
    data = np.asarray(data_uv, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] == 0:
        raise NeuroLMError(f"expected a non-empty (channels, times) array, got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        raise NeuroLMError(f"signal holds NaN/Inf values in channel row(s) {bad.tolist()}")
    h_freq = low_pass(sfreq, config)
    data = mne.filter.filter_data(data, sfreq, config.l_freq, h_freq, verbose="error")
    if config.mains is not None and config.mains < sfreq / 2:
        data = mne.filter.notch_filter(data, sfreq, config.mains, verbose="error")
    ratio = Fraction(config.sfreq / sfreq).limit_denominator(1000)
    if ratio != 1:
        data = mne.filter.resample(data, up=ratio.numerator, down=ratio.denominator, method="polyphase",
                                   verbose="error")
    return (data / config.scale_uv).astype(np.float32)


def read_uv(raw: mne.io.BaseRaw, labels: list[str], config: PreprocessConfig) -> np.ndarray:
    """The given channels of an MNE recording in µV, times the declared ``config.input_scale``."""
    data = raw.get_data(picks=labels, units="uV")
    return data * config.input_scale if config.input_scale != 1 else data


def preprocess_raw(raw: mne.io.BaseRaw, labels: list[str], config: PreprocessConfig) -> np.ndarray:
    """Run :func:`preprocess_array` on the given channels of an MNE recording (read in µV, declared scale applied);
    NaN/Inf is an error naming the channel labels."""
    data = read_uv(raw, labels, config)
    check_finite(data, labels)
    return preprocess_array(data, raw.info["sfreq"], config)
