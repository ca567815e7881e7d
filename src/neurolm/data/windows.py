"""Recording → windows: the checks, the preprocessing and the cutting that every path from a recording to model
input shares: ``prepare`` (:func:`process_recording`, per recording of a dataset), ``tokenize`` on an EEG file (the
same function) and ``ask`` (:func:`drop_bad_channels`, :func:`cut_windows`, :func:`stream_windows` and
:func:`keep_plausible` on the task's windows), so a recording ``prepare`` would refuse or repair is refused or repaired
the same way everywhere.

``ask`` reads in chunks (``chunk``: input samples at a time) so that a night of EEG fits a laptop: the whole-recording
checks are accumulated chunk by chunk (peak-to-peak, the evenly spaced subsample of the distinct-value count, NaN/Inf
counts), the signal is filtered a chunk at a time with overlapping margins
(:func:`~neurolm.data.preprocess.preprocess_chunks`), windows are handed on as soon as they are whole, and the share of
implausible windows is judged after the last one. ``prepare`` keeps the whole-recording path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import NeuroLMError
from .channels import channel_indices, normalize_name
from .preprocess import (PreprocessConfig, RepairWarning, degenerate_rows, distinct_step, flat_rows,
                         implausible_stats, low_pass, preprocess_chunks, preprocess_raw, read_uv, suggested_scale)
from .readers import DatasetReader, Recording, Segment


def cut_windows(n_times: int, start: float, stop: float, window_s: float, stride_s: float | None,
                sfreq: float) -> list[int]:
    """Start samples of the whole windows inside ``[start, stop)`` seconds; none if the stretch leaves the data.

    The count comes from the stretch's length in seconds (with a tolerance), not from rounded sample indices, so a
    5 s event window at a fractional onset is never lost to rounding.
    """
    w = int(round(window_s * sfreq))
    hop_s = stride_s or window_s
    hop = int(round(hop_s * sfreq))
    n = int(np.floor((stop - start - window_s) / hop_s + 1e-6)) + 1
    a = int(round(start * sfreq))
    if n <= 0 or a < 0:
        return []
    starts = [a + k * hop for k in range(n)]
    if starts[-1] + w > n_times:
        if starts[-1] + w > n_times + 1:  # one sample of slack for rounding of the recording's end
            return []
        starts = [min(s, n_times - w) for s in starts]
    return starts


def process_recording(reader: DatasetReader, rec: Recording, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """All windows of one recording as arrays (the content of its shard), with the notes of any repair made.

    Every :class:`RepairWarning` raised while reading (by the reader or here) is still shown, and its message is kept
    in ``notes`` for the manifest.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RepairWarning)
        arrays = _windows(reader, rec, config)
    notes = []
    for w in caught:
        if issubclass(w.category, RepairWarning):
            notes.append(str(w.message).removeprefix(f"{rec.path}: "))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return arrays | {"notes": np.array(notes, dtype=str)}


def _windows(reader: DatasetReader, rec: Recording, config: PreprocessConfig) -> dict[str, np.ndarray]:
    signals, labels, starts, splits, dropped, outside, seconds_total = [], [], [], [], 0, 0, 0.0
    chans, renamed, band_top = None, {}, config.h_freq
    for seg in reader.read(rec):
        reader.pick(seg)
        renamed |= {n: lab for n, lab in zip(seg.names, seg.labels) if normalize_name(lab) != n}
        data, idx = preprocess_segment(seg, rec.path, config, fixed=reader.channels is not None)
        if chans is not None and not np.array_equal(chans, idx):
            raise NeuroLMError(f"{rec.path}: channel set changes between segments")
        chans = idx
        band_top = min(band_top, low_pass(seg.raw.info["sfreq"], config))
        w_s = reader.window_seconds(len(idx))
        seconds = seg.raw.n_times / seg.raw.info["sfreq"]
        seconds_total += seconds
        for ev in seg.events:
            found = cut_windows(data.shape[1], ev.start, ev.stop, w_s, reader.stride_s, config.sfreq)
            dropped += not found
            outside += not found and (ev.start < 0 or ev.stop > seconds + 1 / seg.raw.info["sfreq"])
            w = int(round(w_s * config.sfreq))
            for s in found:
                signals.append(data[:, s : s + w])
                labels.append(ev.label)
                starts.append(s / config.sfreq)
                splits.append(ev.split or "")
    if not signals:
        raise NeuroLMError(f"{rec.path}: no complete window (recording shorter than its events or windows)")
    if outside:
        warnings.warn(f"{rec.path}: {outside} event(s) reach past the recording's start or end; their windows are "
                      "dropped", RepairWarning)
    stacked = np.stack(signals)
    keep = plausible_windows(stacked, rec.path, config)
    return {
        "signals": stacked[keep], "labels": np.array(labels, np.int16)[keep], "starts": np.array(starts)[keep],
        "splits": np.array(splits, dtype=str)[keep], "chans": chans, "dropped": np.array(dropped),
        "implausible": np.array(int((~keep).sum())), "seconds": np.array(seconds_total),
        "renamed": np.array([f"{n}={lab}" for n, lab in renamed.items()], dtype=str),
        "low_pass": np.array([band_top] if band_top < config.h_freq else []),  # a low rate's lower edge
    }


def scan_channels(seg: Segment, config: PreprocessConfig, chunk: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the flat and the degenerate channels of a segment and each channel's NaN/Inf count, over the whole
    recording; ``chunk``: read that many samples at a time (the same verdicts: running minimum and maximum, the same
    evenly spaced subsample), None: at once."""
    n = seg.raw.n_times
    if chunk is None or n <= chunk:
        data = read_uv(seg.raw, seg.labels, config)
        return flat_rows(data, config), degenerate_rows(data, config), (~np.isfinite(data)).sum(axis=1)
    lo = hi = None
    nonfinite, sample, step = np.zeros(len(seg.labels), np.int64), [], distinct_step(n)
    for a in range(0, n, chunk):
        x = read_uv(seg.raw, seg.labels, config, a, min(a + chunk, n))
        lo = x.min(axis=1) if lo is None else np.minimum(lo, x.min(axis=1))  # NaN propagates, as in np.ptp
        hi = x.max(axis=1) if hi is None else np.maximum(hi, x.max(axis=1))
        nonfinite += (~np.isfinite(x)).sum(axis=1)
        sample.append(x[:, (-a) % step :: step].copy())  # a copy: a view would keep the whole chunk alive
    sample = np.concatenate(sample, axis=1)
    return hi - lo < config.flat_uv, degenerate_rows(sample, config, samples=sample.shape[1]), nonfinite


def drop_bad_channels(seg: Segment, path: Path, config: PreprocessConfig, *, fixed: bool, chunk: int | None = None
                      ) -> np.ndarray:
    """Drop the flat and the degenerate channels of a segment with a :class:`RepairWarning`, or raise where the
    channel set is fixed; return the NaN/Inf count of each channel kept (``chunk``: see :func:`scan_channels`)."""
    flat, degenerate, nonfinite = scan_channels(seg, config, chunk)
    degenerate = ~flat & degenerate
    faults = []
    for mask, what in ((flat, f"peak-to-peak below {config.flat_uv:g} µV over the whole recording"),
                       (degenerate, f"fewer than {config.min_distinct} distinct values (a degenerate export)")):
        if mask.any():
            which = ", ".join(f"{n} ({lab})" for n, lab, f in zip(seg.names, seg.labels, mask) if f)
            faults.append(f"{'flat' if mask is flat else 'degenerate'} channel(s) {which}: {what}")
    if not faults:
        return nonfinite
    bad, what = flat | degenerate, "; ".join(faults)
    if fixed:
        raise NeuroLMError(f"{path}: {what}; the dataset needs every one of its channels")
    if bad.all():
        raise NeuroLMError(f"{path}: {what}; no channel is left")
    warnings.warn(f"{path}: {what}; dropped", RepairWarning)
    seg.names = [n for n, f in zip(seg.names, bad) if not f]
    seg.labels = [lab for lab, f in zip(seg.labels, bad) if not f]
    return nonfinite[~bad]


def preprocess_segment(seg: Segment, source: str | Path, config: PreprocessConfig, *, fixed: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The picked channels of ``seg`` checked (:func:`drop_bad_channels`) and preprocessed: ``(data (C, T)`` in
    µV/100 at ``config.sfreq``, vocabulary indices ``(C,))``; errors name ``source``."""
    drop_bad_channels(seg, Path(source), config, fixed=fixed)
    idx = np.array(channel_indices(seg.names), dtype=np.int16)
    try:
        data = preprocess_raw(seg.raw, seg.labels, config)
    except NeuroLMError as exc:
        raise NeuroLMError(f"{source}: {str(exc).removeprefix(f'{source}: ')}") from exc
    return data, idx


def plausible_windows(windows: np.ndarray, source: str | Path, config: PreprocessConfig) -> np.ndarray:
    """Mask of the windows ``(N, C, T)`` to keep: those implausible for scalp EEG are dropped with a
    :class:`RepairWarning`, or the recording is refused when more than ``config.max_implausible`` of them are."""
    channel_sd = windows.std(axis=2)
    bad = implausible_stats(channel_sd, np.abs(windows).max(axis=(1, 2)), config)
    _judge(bad, channel_sd, source, config)
    return ~bad


def keep_plausible(windows: Iterable[tuple[int, np.ndarray]], source: str | Path, config: PreprocessConfig
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`plausible_windows` over a stream of ``(start, (C, T) window)``: the plausible ones are passed on, and
    the verdict on the whole recording (the warning, or the refusal) comes after the last one; only each window's
    channel standard deviations are kept for it."""
    channel_sd, bad = [], []
    for start, window in windows:
        sd = window.std(axis=1)
        channel_sd.append(sd)
        bad.append(bool(implausible_stats(sd[None], np.abs(window).max()[None], config)[0]))
        if not bad[-1]:
            yield start, window
    if bad:
        _judge(np.array(bad), np.stack(channel_sd), source, config)


def _judge(bad: np.ndarray, channel_sd: np.ndarray, source: str | Path, config: PreprocessConfig) -> None:
    """Warn about the implausible windows dropped, or refuse the recording when too many are."""
    if bad.any():
        what = (f"{int(bad.sum())} of {len(bad)} windows implausible for scalp EEG (median channel standard deviation "
                f"above {config.max_sd_uv:g} µV: a damaged file or a wrong unit)")
        if bad.mean() > config.max_implausible:
            sd = float(np.median(channel_sd)) * config.scale_uv
            raise NeuroLMError(f"{source}: {what}. If the samples are not in the unit the file states (median "
                               f"channel standard deviation {sd:.3g} µV), declare their scale: "
                               f"`scale = {suggested_scale(channel_sd, config):g}` in the task file, or "
                               f"--scale {suggested_scale(channel_sd, config):g} for prepare and ask")
        warnings.warn(f"{source}: {what}; dropped", RepairWarning)


def stream_windows(seg: Segment, config: PreprocessConfig, starts: list[int], w: int, *, chunk: int | None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """The ``(start, (C, w) float32 window)`` of the preprocessed segment at each of the sorted output-sample
    ``starts``, preprocessed ``chunk`` input samples at a time (:func:`~neurolm.data.preprocess.preprocess_chunks`):
    the windows of :func:`preprocess_raw`'s whole array, holding no more than a chunk and a window of it at once."""
    pending = list(starts)
    at, k, buf = 0, 0, None  # buf holds output samples [at, at + buf.shape[1]) not yet behind every pending window
    for first, piece in preprocess_chunks(seg.raw, seg.labels, config, chunk, (np.asarray(starts), w)):
        if buf is None or at + buf.shape[1] != first:  # the first piece, or pieces no window needed were skipped
            at, buf = first, piece
        else:
            buf = np.concatenate([buf, piece], axis=1)
        end = at + buf.shape[1]
        while k < len(pending) and pending[k] + w <= end:
            yield pending[k], buf[:, pending[k] - at : pending[k] - at + w].copy()
            k += 1
        keep_from = min(pending[k], end) if k < len(pending) else end
        buf, at = buf[:, keep_from - at :], keep_from
