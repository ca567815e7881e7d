"""What every dataset reader provides: where its recordings are, how to read one, its labels, and its split rule.

A reader knows a dataset's native layout and annotation formats and nothing about filtering or storage; the
preparation step (:mod:`neurolm.data.prepare`) runs the same pipeline over every reader.

EDF/BDF headers are checked before MNE reads them (:func:`check_edf_header`), for the faults MNE passes silently or
reports vaguely: a truncated header, or one whose sizes disagree, is an error giving the sizes; a physical or digital
minimum equal to its maximum (scale undefined) is an error naming the signal; a physical minimum above its maximum is
read with inverted polarity (the negative gain the header defines, as MNE reads it); duplicate labels of EEG channels
(MNE would rename them ``-0``/``-1``) are an error; EEG channels at different sampling rates in one file are an error
(MNE would upsample the slower ones, whose content stops below the band-pass edge), other channels may have any rate;
a data section that ends mid-record (a recording not stopped cleanly) is read up to its last whole record with a
RepairWarning, and one without a whole record is an error; a data section longer than the header declares is read
up to the declared records with a RepairWarning, unless dropping the CR of every CR-LF pair gives exactly the declared
size: a file copied in text mode, whose every later sample is shifted into noise, is an error saying so, as is one
whose every LF byte (at least 64) follows a CR byte: a text-mode copy cut back to the declared size. EDF+
annotations that are not UTF-8 are read as Latin-1 (as MNE suggests) with a RepairWarning. A directory where a file
is expected is an error.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mne

from ...errors import NeuroLMError
from ..channels import map_channels, normalize_name
from ..datasets import DATASETS, SplitRule
from ..preprocess import RepairWarning
from .muse import read_muse_csv

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recording:
    """One source file (plus its annotation sidecar) of a dataset."""

    path: Path
    subject: str
    split: str | None = None
    """Split fixed by the dataset's layout (TUH ``eval`` → test); None when the split rule decides."""
    extras: tuple[Path, ...] = ()
    """Annotation files read together with ``path``."""


@dataclass(frozen=True)
class Event:
    """A labelled stretch of a recording, cut into windows by the preparation step."""

    start: float
    """Seconds from the recording start."""
    stop: float
    label: int
    split: str | None = None
    """Set when a dataset splits inside recordings (SEED: by time within each trial)."""


@dataclass
class Segment:
    """A continuous signal to preprocess as one piece, with its events."""

    raw: mne.io.BaseRaw
    events: list[Event]
    labels: list[str] = field(default_factory=list)
    """The recording's channel labels to use, in vocabulary order (filled by :meth:`DatasetReader.pick`)."""
    names: list[str] = field(default_factory=list)
    """Vocabulary names of those channels."""


class DatasetReader:
    """Base class: subclasses set ``name`` and implement :meth:`find` and :meth:`read`; the dataset's facts
    (channels, classes, mains, window, stride, split rule) come from its registry record
    (:data:`neurolm.data.datasets.DATASETS`) as class attributes."""

    name: str = ""
    channels: tuple[str, ...] | None = None
    """Vocabulary names the task uses, in order; None keeps every vocabulary channel found (pretraining)."""
    classes: tuple[str, ...] = ()
    """Label names by label index."""
    mains: float = 50.0
    """Mains frequency of the country where the data were recorded (Hz)."""
    window_s: float = 0.0
    stride_s: float | None = None
    """Window hop in seconds; None = non-overlapping."""
    split: SplitRule = SplitRule("subjects")
    scale: float = 1.0
    """Declared factor the samples are multiplied by as read (a task file's ``scale``; 1 for the built-in datasets)."""
    allow_low_rate: bool = False
    """Accept recordings at or below 150 Hz with a lower low-pass (a task file's ``allow_low_rate``)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        spec = DATASETS.get(cls.name)
        if spec is None:  # a task file's reader takes its facts per instance (neurolm.data.labels)
            return
        cls.channels, cls.classes, cls.mains = spec.channels, spec.classes, spec.mains
        cls.window_s, cls.stride_s, cls.split = spec.window_s, spec.stride_s, spec.split

    def find(self, root: Path) -> list[Recording]:
        raise NotImplementedError

    def read(self, rec: Recording) -> Iterator[Segment]:
        """Yield the signal pieces of a recording with their labelled events."""
        raise NotImplementedError

    def window_seconds(self, n_chans: int) -> float:
        """Window length for a recording with ``n_chans`` channels (pretraining adapts it; tasks are fixed)."""
        return self.window_s

    def pick(self, segment: Segment) -> Segment:
        """Select the task's channels (vocabulary order) or, without a channel list, every vocabulary channel."""
        mapping = map_channels(segment.raw.ch_names, self.channels)
        if not mapping:
            raise NeuroLMError(f"no 10-20 EEG channel among {', '.join(segment.raw.ch_names)}")
        if self.channels is None:  # every channel a file has: say which labels are left out (--verbose)
            unknown = [lab for lab in segment.raw.ch_names if normalize_name(lab) is None]
            if unknown:
                log.debug(f"{segment.raw.filenames[0] if segment.raw.filenames else 'recording'}: labels that are "
                          f"no 10-20 channel, left out: {', '.join(unknown)}")
        segment.names, segment.labels = list(mapping), list(mapping.values())
        return segment

    def assign_splits(self, recordings: Sequence[Recording], seed: int) -> dict[Path, str]:
        """Split of every recording not fixed by the layout, by the dataset's rule."""
        return self.split.assign(recordings, seed)


def read_raw(path: Path, *, preload: bool = True, **kwargs) -> mne.io.BaseRaw:
    """Open any EEG file MNE reads, or a Muse CSV (:mod:`.muse`, always in memory), with a message naming the file
    when it cannot be read; preloaded, or with ``preload=False`` read from the file as its samples are asked for
    (``ask`` reads long recordings in chunks)."""
    if path.is_dir():
        raise NeuroLMError(f"{path}: is a directory, not a recording")
    if not path.is_file():
        raise NeuroLMError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NeuroLMError(f"{path}: file is empty")
    if path.suffix.lower() == ".csv":  # MNE reads no text format; the Muse headband's is the one met in the wild
        return read_muse_csv(path)
    if path.suffix.lower() in (".edf", ".bdf"):
        check_edf_header(path)
    try:
        return _mne_read(path, preload=preload, **kwargs)
    except NeuroLMError as exc:
        if not (path.suffix.lower() in (".edf", ".bdf") and "encoding='latin1'" in str(exc)):
            raise
    # EDF+ annotations that are not UTF-8: MNE's own advice is to read them as Latin-1.
    raw = _mne_read(path, preload=preload, encoding="latin1", **kwargs)
    warnings.warn(f"{path}: EDF+ annotations are not UTF-8; read as Latin-1", RepairWarning)
    return raw


NEEDS_MORE_THAN_A_PATH = {".mat": "FieldTrip", ".data": "Nicolet"}
"""Extensions MNE's generic reader dispatches to a reader that needs more than the file (an info, a channel type)."""


def _mne_read(path: Path, *, preload: bool, **kwargs) -> mne.io.BaseRaw:
    if path.suffix.lower() in NEEDS_MORE_THAN_A_PATH:
        raise NeuroLMError(f"{path}: {NEEDS_MORE_THAN_A_PATH[path.suffix.lower()]} {path.suffix} files cannot be read "
                           "from the file alone; convert the recording to EDF, BDF, BrainVision or FIF")
    try:
        return mne.io.read_raw(path, preload=preload, verbose="error", **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in MNE's parsers, with any type
        # the first line only, shortened: a parser's message may quote the file's bytes
        detail = (str(exc).splitlines() or [""])[0][:160]
        raise NeuroLMError(f"{path}: cannot be read as EEG ({type(exc).__name__}: {detail})") from exc


TEXT_MODE_MIN_LF = 64
"""LF bytes all preceded by CR that mark a text-mode copy: in samples the byte before an LF is 0x0D about once in 256
times, so 64 in a row do not happen by chance."""


def _line_ends(path: Path, start: int) -> tuple[int, int]:
    """(CR-LF pairs, LF bytes) after byte ``start``, read in chunks (a recording may be larger than memory allows)."""
    crlf = lf = 0
    last = b""
    with open(path, "rb") as fh:
        fh.seek(start)
        while chunk := fh.read(1 << 24):
            lf += chunk.count(b"\n")
            crlf += chunk.count(b"\r\n") + (last == b"\r" and chunk[:1] == b"\n")
            last = chunk[-1:]
    return crlf, lf


# Per-signal header fields in file order (each stored for all signals before the next field), with their widths.
_EDF_FIELDS = (("label", 16), ("transducer", 80), ("physical dimension", 8), ("physical minimum", 8),
               ("physical maximum", 8), ("digital minimum", 8), ("digital maximum", 8), ("prefiltering", 80),
               ("samples per record", 8), ("reserved", 32))


def _edf_number(path: Path, raw: bytes, what: str) -> float:
    text = raw.decode("latin-1").strip()
    try:
        return float(text)
    except ValueError:
        raise NeuroLMError(f"{path}: cannot be read as EDF (header field '{what}' is not a number: {text!r})") from None


def check_edf_header(path: Path) -> None:
    """Check an EDF/BDF header for the faults listed in the module docstring; warn about a truncated data section."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(256)
        if len(head) < 256:
            raise NeuroLMError(f"{path}: cannot be read as EDF (header truncated: the file has {size} bytes, the fixed "
                               "header 256)")
        ns = int(_edf_number(path, head[252:256], "number of signals"))
        if ns < 1:
            raise NeuroLMError(f"{path}: cannot be read as EDF (header declares {ns} signals)")
        n_header = 256 * (ns + 1)
        if size < n_header:
            raise NeuroLMError(f"{path}: cannot be read as EDF (header truncated: {ns} signals need a {n_header}-byte "
                               f"header, the file has {size} bytes)")
        declared_header = int(_edf_number(path, head[184:192], "number of bytes in header record"))
        if declared_header != n_header:
            raise NeuroLMError(f"{path}: cannot be read as EDF (header declares {declared_header} header bytes, but "
                               f"its {ns} signals make {n_header})")
        block = fh.read(n_header - 256)
    fields, at = {}, 0
    for name, width in _EDF_FIELDS:
        fields[name] = [block[at + i * width : at + (i + 1) * width] for i in range(ns)]
        at += width * ns
    labels = [b.decode("latin-1").strip() for b in fields["label"]]
    num = {name: [_edf_number(path, b, f"{name}' of signal '{lab}") for b, lab in zip(fields[name], labels)]
           for name in ("physical minimum", "physical maximum", "digital minimum", "digital maximum",
                        "samples per record")}
    annotation = [lab in ("EDF Annotations", "BDF Annotations") for lab in labels]
    for i, lab in enumerate(labels):
        for kind in ("physical", "digital"):
            if not annotation[i] and num[f"{kind} minimum"][i] == num[f"{kind} maximum"][i]:
                raise NeuroLMError(f"{path}: signal '{lab}' has {kind} minimum = maximum "
                                   f"({num[f'{kind} minimum'][i]:g}), so its scale is undefined")
    eeg = [i for i, lab in enumerate(labels) if normalize_name(lab) is not None]
    dups = [lab for lab, n in Counter(labels[i] for i in eeg).items() if n > 1]
    if dups:
        raise NeuroLMError(f"{path}: duplicate channel label(s) {', '.join(map(repr, dups))}: which signal is the "
                           "site is ambiguous")
    seconds = _edf_number(path, head[244:252], "duration of a data record")
    rates = {labels[i]: num["samples per record"][i] / seconds for i in eeg} if seconds > 0 else {}
    if len(set(rates.values())) > 1:
        by_rate = {}
        for lab, rate in rates.items():
            by_rate.setdefault(rate, []).append(lab)
        listing = "; ".join(f"{r:g} Hz: {', '.join(labs)}" for r, labs in sorted(by_rate.items()))
        raise NeuroLMError(f"{path}: EEG channels sampled at different rates in one file ({listing}); resample them "
                           "to one rate first")
    record_bytes = int(sum(num["samples per record"])) * (3 if head[:1] == b"\xff" else 2)
    have = (size - n_header) // record_bytes if record_bytes > 0 else 0
    if have == 0:
        raise NeuroLMError(f"{path}: cannot be read as EDF (no complete data record after the header: file "
                           "truncated?)")
    declared = int(_edf_number(path, head[236:244], "number of data records"))
    extra = size - n_header - declared * record_bytes
    crlf, lf = _line_ends(path, n_header)
    if declared > 0 and extra > 0:
        what = (f"data section longer than the header declares ({size - n_header} bytes, {declared} records of "
                f"{record_bytes} bytes make {declared * record_bytes}: {extra} extra bytes)")
        if crlf == extra:  # dropping the CR of every CR-LF pair restores exactly the declared size
            raise NeuroLMError(f"{path}: {what}: copied in text mode, which put a CR byte before each of its {crlf} "
                               "LF bytes and misaligned the samples into noise")
        warnings.warn(f"{path}: {what}; the declared records are read", RepairWarning)
    if lf >= TEXT_MODE_MIN_LF and crlf == lf:  # also when the copy was cut back to the declared size
        raise NeuroLMError(f"{path}: every one of the {lf} LF bytes of its data section follows a CR byte: copied in "
                           "text mode (a CR put before each LF), which misaligned the samples into noise; copy the "
                           "original file again in binary mode")
    if declared > have:
        warnings.warn(f"{path}: data truncated: {have} of the {declared} data records the header declares are in "
                      f"the file; the whole records are read", RepairWarning)
