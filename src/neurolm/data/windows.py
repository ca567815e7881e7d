"""Recording → windows: the checks, the preprocessing and the cutting that every path from a recording to model
input shares: ``prepare`` (:func:`process_recording`, per recording of a dataset), ``tokenize`` on an EEG file (the
same function) and ``ask`` (:func:`preprocess_segment`, :func:`cut_windows` and :func:`plausible_windows` on the
task's windows), so a recording ``prepare`` would refuse or repair is refused or repaired the same way everywhere.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import NeuroLMError
from .channels import channel_indices, normalize_name
from .preprocess import (PreprocessConfig, RepairWarning, degenerate_rows, flat_rows, implausible_windows,
                         low_pass, preprocess_raw, read_uv, suggested_scale)
from .readers import DatasetReader, Recording, Segment


def cut_windows(data: np.ndarray, start: float, stop: float, window_s: float, stride_s: float | None,
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
    if starts[-1] + w > data.shape[1]:
        if starts[-1] + w > data.shape[1] + 1:  # one sample of slack for rounding of the recording's end
            return []
        starts = [min(s, data.shape[1] - w) for s in starts]
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
            found = cut_windows(data, ev.start, ev.stop, w_s, reader.stride_s, config.sfreq)
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


def drop_bad_channels(seg: Segment, path: Path, config: PreprocessConfig, *, fixed: bool) -> None:
    """Drop the flat and the degenerate channels of a segment with a :class:`RepairWarning`, or raise where the
    channel set is fixed."""
    data = read_uv(seg.raw, seg.labels, config)
    flat = flat_rows(data, config)
    degenerate = ~flat & degenerate_rows(data, config)
    faults = []
    for mask, what in ((flat, f"peak-to-peak below {config.flat_uv:g} µV over the whole recording"),
                       (degenerate, f"fewer than {config.min_distinct} distinct values (a degenerate export)")):
        if mask.any():
            which = ", ".join(f"{n} ({lab})" for n, lab, f in zip(seg.names, seg.labels, mask) if f)
            faults.append(f"{'flat' if mask is flat else 'degenerate'} channel(s) {which}: {what}")
    if not faults:
        return
    bad, what = flat | degenerate, "; ".join(faults)
    if fixed:
        raise NeuroLMError(f"{path}: {what}; the dataset needs every one of its channels")
    if bad.all():
        raise NeuroLMError(f"{path}: {what}; no channel is left")
    warnings.warn(f"{path}: {what}; dropped", RepairWarning)
    seg.names = [n for n, f in zip(seg.names, bad) if not f]
    seg.labels = [lab for lab, f in zip(seg.labels, bad) if not f]


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
    bad = implausible_windows(windows, config)
    if bad.any():
        what = (f"{int(bad.sum())} of {len(bad)} windows implausible for scalp EEG (median channel standard deviation "
                f"above {config.max_sd_uv:g} µV: a damaged file or a wrong unit)")
        if bad.mean() > config.max_implausible:
            sd = float(np.median(windows.std(axis=2))) * config.scale_uv
            raise NeuroLMError(f"{source}: {what}. If the samples are not in the unit the file states (median "
                               f"channel standard deviation {sd:.3g} µV), declare their scale: "
                               f"`scale = {suggested_scale(windows, config):g}` in the task file, or "
                               f"--scale {suggested_scale(windows, config):g} for prepare and ask")
        warnings.warn(f"{source}: {what}; dropped", RepairWarning)
    return ~bad
