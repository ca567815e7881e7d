"""File formats of the synthetic corpus: one :class:`Recording` → the file its extension names.

EDF/BDF go through edfio (as the real corpora's EDF files would be read by MNE or edfio), CNT through
:mod:`neurolm.data.synth.cnt`, FIF/EEGLAB/BrainVision through MNE's own writers. Side-car text files (``.rec``,
``.tse_agg``, sleep scoring) are plain strings written next to the recording. edfio, eeglabio and pybv are the
``synth`` extra (``pip install 'neurolm[synth]'``, part of ``dev``): nothing but these writers needs them.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.io import savemat

from ...errors import NeuroLMError
from .cnt import write_cnt

WRITER_PACKAGES = ("edfio", "eeglabio", "pybv")
"""The ``synth`` extra: EDF/BDF, EEGLAB and BrainVision writers."""


def require_writers() -> None:
    """Fail before anything is written when a writer package is missing, saying how to install it."""
    missing = []
    for name in WRITER_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise NeuroLMError(f"writing the synthetic corpus needs {', '.join(missing)}, which a plain install leaves "
                           "out: pip install 'neurolm[synth]'")


@dataclass
class Window:
    """A labelled window as the dataset's reader will cut it (used by the difficulty calibration, not written)."""

    start: float  # seconds from the start of the recording
    seconds: float
    label: int
    split: str  # "train" | "val" | "test", per the spec's split rule for this dataset


@dataclass
class Recording:
    """One synthetic recording and everything written with it."""

    path: str  # relative to the dataset directory; the suffix picks the format
    labels: list[str]  # channel labels as the file stores them
    data: np.ndarray  # (C, T) float32 µV
    sfreq: float
    start: dt.datetime
    patient: str
    annotations: list[tuple[float, float, str]] = field(default_factory=list)  # EDF+ (onset, duration, text)
    # relative path → text content, or a list of (onset, duration, text) for an annotation-only EDF+ file
    sidecars: dict[str, str | list[tuple[float, float, str]]] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # the channels the dataset's reader keeps (calibration)

    @property
    def seconds(self) -> float:
        return self.data.shape[1] / self.sfreq


def physical_range(x: np.ndarray) -> tuple[float, float]:
    """Symmetric EDF physical range in whole hundreds of µV (at least ±500 µV) that holds every sample."""
    peak = max(500.0, math.ceil(float(np.abs(x).max()) * 1.05 / 100.0) * 100.0)
    return (-peak, peak)


def write_edf(path: Path, rec: Recording, *, bdf: bool = False) -> None:
    """EDF (16-bit) or BDF (24-bit) with one signal per channel in µV; EDF+ when the recording has annotations."""
    from edfio import Bdf, BdfSignal, Edf, EdfAnnotation, EdfSignal, Patient
    from edfio import Recording as EdfRecording

    signal_cls, file_cls = (BdfSignal, Bdf) if bdf else (EdfSignal, Edf)
    digital = (-(2**23), 2**23 - 1) if bdf else (-32768, 32767)
    signals = [
        signal_cls(
            row.astype(np.float64),
            rec.sfreq,
            label=label,
            physical_dimension="uV",
            physical_range=physical_range(row),
            digital_range=digital,
        )
        for label, row in zip(rec.labels, rec.data)
    ]
    annotations = [EdfAnnotation(on, dur, text) for on, dur, text in rec.annotations] or None
    file_cls(
        signals,
        patient=Patient(code=rec.patient),
        recording=EdfRecording(startdate=rec.start.date()),
        starttime=rec.start.time(),
        annotations=annotations,
    ).write(path)


def write_annotations_edf(path: Path, annotations: list[tuple[float, float, str]], start: dt.datetime) -> None:
    """An EDF+ file holding only annotations (HMC's alternative sleep-scoring format)."""
    from edfio import Edf, EdfAnnotation
    from edfio import Recording as EdfRecording

    Edf(
        [],
        recording=EdfRecording(startdate=start.date()),
        starttime=start.time(),
        annotations=[EdfAnnotation(on, dur, text) for on, dur, text in annotations],
    ).write(path)


def _mne_raw(rec: Recording):
    import mne

    kinds = ["eeg" if _is_eeg(lb) else "misc" for lb in rec.labels]
    info = mne.create_info(list(rec.labels), rec.sfreq, kinds)
    raw = mne.io.RawArray(rec.data.astype(np.float64) * 1e-6, info, verbose="error")
    raw.set_meas_date(rec.start.replace(tzinfo=dt.timezone.utc))
    return raw


def _is_eeg(label: str) -> bool:
    from ..channels import normalize_name

    return normalize_name(label) is not None


MAT_HEADER = b"MATLAB 5.0 MAT-file, written by neurolm synth"


def fix_mat_header(raw: bytes) -> bytes:
    """Replace the creation time scipy writes into a MAT v5 header, so that equal seeds give equal bytes."""
    return MAT_HEADER.ljust(116, b" ") + raw[116:]


def write_mat(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """MATLAB v5 file (``scipy.io.savemat``) with a fixed header."""
    buf = io.BytesIO()
    savemat(buf, arrays, do_compression=False)
    path.write_bytes(fix_mat_header(buf.getvalue()))


def write_recording(root: Path, rec: Recording) -> list[Path]:
    """Write ``rec`` and its side-cars under ``root``; returns every path written."""
    path = root / rec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    written = [path]
    if suffix == ".edf":
        write_edf(path, rec)
    elif suffix == ".bdf":
        write_edf(path, rec, bdf=True)
    elif suffix == ".cnt":
        write_cnt(path, rec.data, rec.labels, rec.sfreq, start=rec.start, patient_id=rec.patient)
    elif suffix == ".fif":
        _mne_raw(rec).save(path, overwrite=True, verbose="error")
    elif suffix in (".set", ".vhdr"):
        import mne

        fmt = "eeglab" if suffix == ".set" else "brainvision"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export's notes on data conversion are expected here
            mne.export.export_raw(path, _mne_raw(rec), fmt=fmt, overwrite=True, verbose="error")
        if suffix == ".set":
            path.write_bytes(fix_mat_header(path.read_bytes()))
        else:
            written += [path.with_suffix(".vmrk"), path.with_suffix(".eeg")]
    else:
        raise ValueError(f"no writer for {path.name}")
    for rel, content in rec.sidecars.items():
        side = root / rel
        side.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            side.write_text(content)
        else:
            write_annotations_edf(side, content, rec.start)
        written.append(side)
    return written
