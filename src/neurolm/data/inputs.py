"""Recordings from users' code: an ``mne.io.Raw``, a path to any file MNE reads, or a numpy array.

Everything downstream (channel mapping, :func:`~neurolm.data.preprocess.preprocess_raw`) works on an MNE recording,
so every accepted form becomes one here and is checked once, with errors that say what was given and what was
expected. An array carries no metadata, so it needs ``ch_names`` (labels the 10-20 mapping understands: ``"Fp1"``,
``"EEG C3-REF"``, …) and ``sfreq``, and states its ``unit``: ``"V"`` (MNE's and the EDF reader's convention,
the default) or ``"uV"`` (what most EEG toolboxes hand out). A wrong unit is a factor of 10⁶ that no later step
could detect, so values implausible for EEG in the stated unit are an error rather than a guess.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import mne
import numpy as np

from ..errors import NeuroLMError
from .preprocess import check_finite
from .readers.base import read_raw

UNITS = {"V": 1.0, "uV": 1e-6}
"""Accepted ``unit`` values and their factor to volts."""
MAX_VOLTS = 1.0
"""Scalp EEG is ~10⁻⁴ V and amplifier DC offsets stay below ~0.3 V: a larger |value| means the unit is not V."""
MIN_PEAK_UV = 1e-3
"""Below 1 nV everywhere, an array said to be in µV is almost surely in V (EEG in V is ~10⁻⁴)."""

EXPECTED = ("an mne.io.Raw, a path to a file MNE reads (EDF, BDF, FIF, …), or a (channels, samples) numpy array "
            "with ch_names and sfreq")


def as_raw(recording: mne.io.BaseRaw | str | os.PathLike | np.ndarray, *, ch_names: Sequence[str] | None = None,
           sfreq: float | None = None, unit: str = "V", preload: bool = True) -> mne.io.BaseRaw:
    """The recording as an MNE recording: a Raw is returned as is, a path is read (preloaded, unless ``preload`` is
    False: then samples are read from the file as they are asked for), and a
    ``(channels, samples)`` array becomes an EEG ``RawArray`` in volts named by ``ch_names`` at ``sfreq`` Hz
    (``unit``: ``"V"`` or ``"uV"``; the caller's array is copied, never modified). A torch tensor is read as the
    array it holds: like an array, it carries no channel names or rate."""
    if type(recording).__module__.split(".")[0] == "torch" and hasattr(recording, "detach"):
        recording = recording.detach().cpu().numpy()  # without importing torch here (the data layer needs none)
    if isinstance(recording, np.ndarray):
        return _from_array(recording, ch_names, sfreq, unit)
    given = [name for name, value in (("ch_names", ch_names), ("sfreq", sfreq)) if value is not None]
    if given:
        raise NeuroLMError(f"only a numpy array recording takes ch_names and sfreq (given: {', '.join(given)}); a "
                           f"{type(recording).__name__} carries its own channel names and sampling rate")
    if isinstance(recording, mne.io.BaseRaw):
        return recording
    if isinstance(recording, (str, os.PathLike)):
        return read_raw(Path(recording), preload=preload)
    raise NeuroLMError(f"recording must be {EXPECTED}; got {type(recording).__module__}.{type(recording).__name__}")


def _from_array(data: np.ndarray, ch_names: Sequence[str] | None, sfreq: float | None, unit: str) -> mne.io.RawArray:
    if unit not in UNITS:
        raise NeuroLMError(f"unit must be one of {', '.join(map(repr, UNITS))}, got {unit!r}")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise NeuroLMError(f"the EEG array must hold real numbers, got dtype {data.dtype}")
    if data.ndim != 2:
        hint = {1: "; one channel is data[None, :]", 3: "; epochs are (epochs, channels, samples): pass one epoch or "
                "concatenate them along samples"}.get(data.ndim, "")
        raise NeuroLMError(f"the EEG array must be 2-D (channels, samples), got shape {data.shape}{hint}")
    if data.shape[1] == 0:
        raise NeuroLMError(f"the EEG array has no samples: shape {data.shape}")
    if ch_names is None or sfreq is None:
        missing = " and ".join(n for n, v in (("ch_names", ch_names), ("sfreq", sfreq)) if v is None)
        raise NeuroLMError(f"a numpy array needs {missing}: ch_names (one label per row, e.g. ['Fp1', 'Fp2', …]) and "
                           "sfreq (samples per second)")
    if isinstance(ch_names, str) or not all(isinstance(n, str) for n in ch_names):
        raise NeuroLMError(f"ch_names must be a list of channel labels (str), got {ch_names!r}")
    names = list(ch_names)
    if len(names) != data.shape[0]:
        hint = " (is it transposed? the array must be (channels, samples))" if len(names) == data.shape[1] else ""
        raise NeuroLMError(f"ch_names has {len(names)} labels but the array has {data.shape[0]} channels "
                           f"(rows, shape {data.shape}){hint}")
    duplicates = sorted(n for n, k in Counter(names).items() if k > 1)
    if duplicates:
        raise NeuroLMError(f"ch_names repeats {', '.join(duplicates)}: each row needs its own label")
    if (isinstance(sfreq, bool) or not isinstance(sfreq, (int, float, np.integer, np.floating))
            or not 0 < sfreq < np.inf):
        raise NeuroLMError(f"sfreq must be a positive number of samples per second, got {sfreq!r}")
    check_finite(data, names)
    peak = float(np.abs(data).max())
    if unit == "V" and peak > MAX_VOLTS:
        raise NeuroLMError(f"the array reaches {peak:g}, implausible for EEG in volts (unit='V'); "
                           "pass unit='uV' if it is in microvolts")
    if unit == "uV" and 0 < peak < MIN_PEAK_UV:
        raise NeuroLMError(f"the array never exceeds {peak:g}, implausible for EEG in microvolts (unit='uV'); "
                           "pass unit='V' if it is in volts")
    info = mne.create_info(names, float(sfreq), "eeg")
    return mne.io.RawArray(np.asarray(data, dtype=np.float64) * UNITS[unit], info, verbose="error")
