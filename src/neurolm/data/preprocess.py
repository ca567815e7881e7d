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

Long recordings (:func:`preprocess_chunks`, what ``ask`` reads with): filtered a chunk at a time, each read with a
margin of the filters' whole lengths on either side (:func:`filter_edge`) and aligned to the resampler's period, so a
chunk's kept part equals the whole recording's to float rounding and memory does not grow with the recording.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    refuse_nonfinite((~np.isfinite(data)).sum(axis=1), labels, data.shape[1])


def refuse_nonfinite(counts: np.ndarray, labels: list[str], n_times: int) -> None:
    """:func:`check_finite` from per-channel NaN/Inf ``counts`` out of ``n_times`` samples (counted chunk by chunk)."""
    rows = np.flatnonzero(counts)
    if len(rows):
        where = ", ".join(f"{labels[i]} ({int(counts[i])} of {n_times} samples)" for i in rows)
        raise NeuroLMError(f"NaN/Inf samples in channel(s) {where}")


def flat_rows(data_uv: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Boolean mask of the flat channels of a ``(C, T)`` µV array (see ``PreprocessConfig.flat_uv``)."""
    return np.ptp(data_uv, axis=1) < config.flat_uv


DISTINCT_SAMPLES = 12_000
"""Evenly spaced samples per channel that :func:`degenerate_rows` counts distinct values over."""


def distinct_step(n_times: int, samples: int = DISTINCT_SAMPLES) -> int:
    """Stride of the subsample :func:`degenerate_rows` takes of ``n_times`` samples (the same in a chunked read)."""
    return max(1, n_times // samples)


def degenerate_rows(data_uv: np.ndarray, config: PreprocessConfig, samples: int = DISTINCT_SAMPLES) -> np.ndarray:
    """Boolean mask of the channels of a ``(C, T)`` array with fewer than ``config.min_distinct`` distinct values.

    Counted over ``samples`` evenly spaced samples (a subsample has at most the values of the whole, and real EEG
    shows hundreds in far fewer), so the check costs the same for a 10-minute and a 10-hour recording.
    """
    step = distinct_step(data_uv.shape[1], samples)
    return np.array([len(np.unique(row[::step])) < config.min_distinct for row in data_uv], dtype=bool)


def implausible_windows(windows: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Boolean mask of the ``(N, C, T)`` preprocessed windows (µV / ``scale_uv``) implausible for scalp EEG: a median
    channel standard deviation above ``config.max_sd_uv``, or any sample above 100 times that (100 mV: no scalp
    potential comes near, and it keeps every stored value far inside float16's range of ±6.5 V)."""
    return implausible_stats(windows.std(axis=2), np.abs(windows).max(axis=(1, 2)), config)


def implausible_stats(channel_sd: np.ndarray, peak: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """:func:`implausible_windows` from each window's channel standard deviations ``(N, C)`` and peak ``|sample|``
    ``(N,)``: all the verdict needs, so windows streamed from a long recording can be judged after they are gone."""
    sd = np.median(channel_sd, axis=1) * config.scale_uv
    return (sd > config.max_sd_uv) | (peak * config.scale_uv > 100 * config.max_sd_uv)


TYPICAL_SD_UV = 50.0
"""A scalp EEG channel's typical standard deviation after the band-pass (µV; awake EEG is 10–100 µV), to suggest a
declared scale for a recording whose windows are all implausible."""


def suggested_scale(channel_sd: np.ndarray, config: PreprocessConfig) -> float:
    """The power of ten that would bring the windows' median channel standard deviation (``channel_sd``: ``(N, C)``)
    near scalp EEG's, times the scale already declared: what to declare when the whole recording is implausible (a
    wrong unit)."""
    sd = float(np.median(channel_sd)) * config.scale_uv
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
    ratio = resample_ratio(sfreq, config)
    if ratio != 1:
        data = mne.filter.resample(data, up=ratio.numerator, down=ratio.denominator, method="polyphase",
                                   verbose="error")
    return (data / config.scale_uv).astype(np.float32)


def resample_ratio(sfreq: float, config: PreprocessConfig) -> Fraction:
    """``config.sfreq / sfreq`` as the polyphase resampler's up/down: its period is ``denominator`` input samples."""
    return Fraction(config.sfreq / sfreq).limit_denominator(1000)


def resampled_length(n_times: int, sfreq: float, config: PreprocessConfig) -> int:
    """Samples :func:`preprocess_array` returns for ``n_times`` input samples (MNE's rounding)."""
    ratio = resample_ratio(sfreq, config)
    return n_times if ratio == 1 else max(round(float(ratio.numerator) / ratio.denominator * n_times), 1)


def filter_edge(sfreq: float, config: PreprocessConfig) -> int:
    """Input samples a chunk is read beyond the part it keeps, on each side, so that what it keeps equals the whole
    recording's: the whole length of the band-pass, of the notch and of the resampler's filter (each output sample
    reaches half of each; the rest is margin), rounded up to the resampler's period so chunks stay on its grid."""
    h_freq = low_pass(sfreq, config)
    edge = len(mne.filter.create_filter(None, sfreq, config.l_freq, h_freq, verbose="error"))
    if config.mains is not None and config.mains < sfreq / 2:
        # the band-stop mne.filter.notch_filter builds: notch width mains/200, transition bands of 0.5 Hz
        half = config.mains / 400 + 0.5
        edge += len(mne.filter.create_filter(None, sfreq, [config.mains + half], [config.mains - half],
                                             l_trans_bandwidth=0.5, h_trans_bandwidth=0.5, verbose="error"))
    ratio = resample_ratio(sfreq, config)
    edge += 2 * (10 * max(ratio.numerator, ratio.denominator) // ratio.numerator + 1)  # scipy's 10 periods a side
    return -(-edge // ratio.denominator) * ratio.denominator


def read_uv(raw: mne.io.BaseRaw, labels: list[str], config: PreprocessConfig, start: int = 0,
            stop: int | None = None) -> np.ndarray:
    """The given channels of an MNE recording in µV, times the declared ``config.input_scale``; samples
    ``[start, stop)`` only, read from the file when the recording is not preloaded."""
    try:
        data = raw.get_data(picks=labels, units="uV", start=start, stop=stop)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file read lazily fails in any of MNE's parsers
        detail = (str(exc).splitlines() or [""])[0][:160]  # the first line only: it may quote the file's bytes
        raise NeuroLMError(f"cannot be read as EEG ({type(exc).__name__}: {detail})") from exc
    return data * config.input_scale if config.input_scale != 1 else data


def preprocess_raw(raw: mne.io.BaseRaw, labels: list[str], config: PreprocessConfig) -> np.ndarray:
    """Run :func:`preprocess_array` on the given channels of an MNE recording (read in µV, declared scale applied);
    NaN/Inf is an error naming the channel labels."""
    data = read_uv(raw, labels, config)
    check_finite(data, labels)
    return preprocess_array(data, raw.info["sfreq"], config)


def preprocess_chunks(raw: mne.io.BaseRaw, labels: list[str], config: PreprocessConfig, chunk: int | None,
                      wanted: tuple[np.ndarray, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`preprocess_raw` in pieces: ``(first output sample, float32 (C, t))`` in order, ``chunk`` input samples
    at a time (None: the whole recording in one piece, as :func:`preprocess_raw`). A recording no longer than one
    chunk and its margins is one piece, bit-identical to :func:`preprocess_raw`; longer ones equal it to float
    rounding (the FFT blocks differ). ``wanted``: ``(sorted window starts, window length)`` in output samples; only
    the pieces those windows touch are computed. NaN/Inf is not checked here: check the recording first."""
    n, sfreq = raw.n_times, raw.info["sfreq"]
    ratio = resample_ratio(sfreq, config)
    up, down = ratio.numerator, ratio.denominator
    edge = filter_edge(sfreq, config) if chunk is not None else 0
    if chunk is None or n <= chunk + 2 * edge:
        yield 0, preprocess_array(read_uv(raw, labels, config), sfreq, config)
        return
    chunk = -(-chunk // down) * down  # on the resampler's grid: a chunk's output starts at a whole output sample
    total = resampled_length(n, sfreq, config)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        out_a, out_b = a * up // down, (b * up // down if b < n else total)
        if wanted is not None:
            starts, w = wanted
            if np.searchsorted(starts, out_b) <= np.searchsorted(starts, out_a - w, side="right"):
                continue  # no window starts in (out_a - w, out_b): none overlaps this piece
        lo, hi = max(0, a - edge), min(n, b + edge)
        x = read_uv(raw, labels, config, lo, hi)
        if (hi - lo) % down:  # the recording's end off the grid: reflect it on (MNE would change the ratio)
            x = np.pad(x, ((0, 0), (0, down - (hi - lo) % down)), mode="reflect")
        y = preprocess_array(x, sfreq, config)
        out_lo = lo * up // down
        yield out_a, y[:, out_a - out_lo : out_b - out_lo]
