"""A minimal Neuroscan 4.x ``.cnt`` writer (16-bit, multiplexed), enough for SEED-like raw sessions.

MNE reads Neuroscan CNT but cannot write it, and the synthetic SEED corpus must be read by the same
``mne.io.read_raw_cnt`` call as the real files. Only the SETUP fields that the reader uses are filled (layout from the
public SETUP/ELECTLOC description, offsets as in ``mne/io/cnt/_utils.py``); everything else is zero:

- SETUP header, 900 bytes: patient id @21, session label @205, date ``mm/dd/yy`` @225, time @235, number of channels
  (u16) @370, sampling rate (u16) @376, filter toggles @438/439, number of samples (i32) @864, filter cut-offs (f32)
  @869/@875, event table offset (i32) @886, continuous seconds (f32) @890, channel offset (i32) @894.
- ELECTLOC, 75 bytes per channel: name @0 (10 bytes), bad flag @14, x/y screen position (f32) @19/@23, baseline (i16)
  @47, sensitivity (f32) @59, calibration (f32) @71; µV per count = sensitivity * calibration / 204.8.
- Samples as little-endian int16, multiplexed (sample-major), then an empty type-1 event table (9 bytes).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .signals import scalp_xy

SETUP_BYTES = 900
ELECTLOC_BYTES = 75
_INT16_MAX = 32767


def _screen_xy(name: str) -> tuple[float, float]:
    """A head-diagram position for a channel (the reader fits EEG positions to a sphere, so they must not all be zero).

    The real files carry the acquisition software's screen coordinates (y grows downwards); any layout with distinct
    points is accepted, so the 10-10 geometry of :func:`~neurolm.data.synth.signals.scalp_xy` is used, and non-scalp
    channels (EOG, ECG) are put outside the head.
    """
    xy = scalp_xy(name)
    if xy is None:
        xy = (1.3, 1.3)
    return 100.0 * xy[0], -100.0 * xy[1]


def write_cnt(
    path: str | Path,
    data_uv: np.ndarray,
    ch_names: Sequence[str],
    sfreq: float,
    *,
    start: dt.datetime | None = None,
    patient_id: str = "",
) -> Path:
    """Write ``data_uv`` (n_channels, n_times) in µV as a 16-bit Neuroscan CNT file and return its path.

    Each channel gets its own resolution (the largest that still fits its peak into int16, at least 1 nV/count), so
    read-back values differ from the input by at most half a count. The sampling rate must be an integer (the header
    field is u16).
    """
    path = Path(path)
    data_uv = np.asarray(data_uv, dtype=np.float64)
    n_ch, n_times = data_uv.shape
    if len(ch_names) != n_ch:
        raise ValueError(f"{len(ch_names)} channel names for {n_ch} channels")
    if sfreq != int(sfreq) or not 0 < sfreq < 65536:
        raise ValueError(f"CNT stores an integer sampling rate below 65536 Hz, got {sfreq}")
    bad = [n for n in ch_names if not re.fullmatch(r"[\x21-\x7e]{1,4}", n)]
    if bad:
        # MNE's "old header" check reads byte 4 of the name as the bad-channel flag, so names stop at 4 characters.
        raise ValueError(f"CNT channel names must be 1-4 printable ASCII characters: {bad}")
    start = start or dt.datetime(2000, 1, 1)

    peak = np.abs(data_uv).max(axis=1) if n_times else np.zeros(n_ch)
    # The header keeps the resolution as float32: quantise with exactly the value the reader will multiply by.
    sensitivity = np.maximum(peak / _INT16_MAX, 1e-3).astype(np.float32) * np.float32(204.8)
    uv_per_count = sensitivity.astype(np.float64) / 204.8
    counts = np.clip(np.rint(data_uv / uv_per_count[:, None]), -_INT16_MAX, _INT16_MAX).astype("<i2")

    data_offset = SETUP_BYTES + ELECTLOC_BYTES * n_ch
    event_table = data_offset + counts.size * 2

    setup = bytearray(SETUP_BYTES)

    def put(offset: int, fmt: str, *values) -> None:
        struct.pack_into(fmt, setup, offset, *values)

    def put_str(offset: int, size: int, text: str) -> None:
        raw = text.encode("ascii")[: size - 1]
        setup[offset : offset + len(raw)] = raw

    put_str(0, 12, "Version 3.0")
    put_str(21, 20, patient_id)
    put_str(205, 20, "synthetic")
    put_str(225, 10, start.strftime("%m/%d/%y"))
    put_str(235, 12, start.strftime("%H:%M:%S"))
    put(370, "<H", n_ch)
    put(376, "<H", int(sfreq))
    put(438, "<bb", 0, 0)  # no hardware filters recorded
    put(864, "<i", n_times)
    put(886, "<i", event_table)
    put(890, "<f", n_times / sfreq)
    put(894, "<i", 2)  # bytes per multiplexed block = one int16 sample: plain sample-major layout

    electrodes = bytearray(ELECTLOC_BYTES * n_ch)
    for i, name in enumerate(ch_names):
        base = ELECTLOC_BYTES * i
        raw = name.encode("ascii")
        electrodes[base : base + len(raw)] = raw
        x, y = _screen_xy(name)
        struct.pack_into("<ff", electrodes, base + 19, x, y)
        struct.pack_into("<h", electrodes, base + 47, 0)  # baseline
        # sensitivity * calibration / 204.8 = µV per count; calibration 1.0 keeps the resolution in one field.
        struct.pack_into("<f", electrodes, base + 59, float(sensitivity[i]))
        struct.pack_into("<f", electrodes, base + 71, 1.0)

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(setup)
        f.write(electrodes)
        f.write(np.ascontiguousarray(counts.T).tobytes())
        f.write(struct.pack("<Bll", 1, 0, 0))  # TEEG: event type 1, no events
    return path
