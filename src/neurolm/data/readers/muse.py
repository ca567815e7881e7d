"""Muse headband CSV (``timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker...``), as muse-lsl and eeg-notebooks write it.

MNE has no reader for this text format, and it is how most public Muse recordings are shared (NeuroTechX
eeg-notebooks' ERP, SSVEP and cueing sessions), so :func:`read_raw` turns such a file into an ``mne.io.RawArray``
and every reader, task file and ``ask`` takes it like any EEG file. A ``.csv`` whose first line is not this header is
not a recording (label tables, behaviour logs): :func:`is_muse_csv` lets the finders pass over it.

- Channels: the four EEG electrodes (10-10 sites TP9, AF7, AF8, TP10), in µV as written. ``Right AUX`` is an
  unplaced extra electrode and is dropped.
- Rate: the timestamps are rounded to the millisecond and, in early muse-lsl recordings, jittered (even backwards),
  and some files end with a few rows stamped minutes later, so neither each sample's own timestamp nor the whole span
  is used. The samples are taken as evenly spaced at the rate the median time across :data:`LAG` samples gives,
  rounded to a whole hertz (Muse's nominal 256 Hz for the recordings seen).
- Markers: the first ``Marker*`` column's non-zero values become MNE annotations (onset at their sample, no
  duration, the integer as text: ``"1"``, ``"2"``), so a task file can label with ``source = "annotations"``.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np

from ...errors import NeuroLMError

EEG = ("TP9", "AF7", "AF8", "TP10")
HEADER = "timestamps," + ",".join(EEG)
"""How a Muse CSV's first line starts."""
LAG = 256
"""Samples across which the rate is measured: long enough that millisecond rounding and jitter average out."""


def is_muse_csv(path: Path) -> bool:
    """Whether ``path`` is a ``.csv`` file whose first line is the Muse header (one line read)."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().lstrip("\ufeff").startswith(HEADER)


def read_muse_csv(path: Path) -> mne.io.RawArray:
    """The four EEG channels of a Muse CSV as a RawArray (in volts, as MNE holds EEG), markers as annotations."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().lstrip("\ufeff").strip()
    if not header.startswith(HEADER):
        raise NeuroLMError(f"{path}: a .csv recording must be a Muse CSV whose first line starts with "
                           f"'{HEADER}' (found {header[:60]!r}); convert other recordings to EDF, BDF or FIF")
    columns = header.split(",")
    markers = [i for i, c in enumerate(columns) if c.startswith("Marker")]
    use = [0, *range(1, 1 + len(EEG)), *markers[:1]]
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=use, ndmin=2)
    except ValueError as exc:
        detail = (str(exc).splitlines() or [""])[0][:160]
        raise NeuroLMError(f"{path}: cannot be read as a Muse CSV ({detail})") from None
    if len(table) < 2:
        raise NeuroLMError(f"{path}: a Muse CSV with {len(table)} sample row(s): no signal to read")
    times = table[:, 0]
    lag = min(LAG, len(times) - 1)
    step = float(np.median(times[lag:] - times[:-lag])) / lag
    if not np.isfinite(step) or step <= 0:
        raise NeuroLMError(f"{path}: timestamps do not increase (median step over {lag} rows: {step:g} s), so the "
                           "sampling rate is unknown")
    sfreq = float(round(1 / step))
    info = mne.create_info(list(EEG), sfreq, "eeg")
    raw = mne.io.RawArray(table[:, 1 : 1 + len(EEG)].T * 1e-6, info, verbose="error")
    if markers:
        codes = table[:, -1]
        at = np.flatnonzero(np.nan_to_num(codes) != 0)
        raw.set_annotations(mne.Annotations(at / sfreq, np.zeros(len(at)), [f"{c:g}" for c in codes[at]]))
    raw.filenames = [path]  # so messages name the file, as for a file MNE opened
    return raw
