"""Task files: a labelled EEG task described in TOML, so a user's own data needs no Python (docs/own-tasks.md).

A task file says what a built-in task's :class:`~neurolm.data.datasets.Dataset` record and reader say in code: the
question and its answers, the classes, channels, mains, window and stride, the split rule, which files are the
recordings and who their subjects are, and where the labels come from (:mod:`neurolm.data.labels`). Parsing gives a
:class:`TaskSpec`: its ``dataset`` is an ordinary registry record, read by the same preparation, store, tuning and
scoring code as the six built-in tasks (``examples/tasks/workload.toml`` rebuilds the Workload store exactly).

The definition travels with the data: ``prepare`` writes it into the store's manifest (``task``) and instruction
tuning into the model directory's ``training.json`` (``task_definitions``). Opening either makes the task known by
name in this process (:func:`remember`), which is how ``evaluate`` and ``ask --task NAME`` find a task without its
file. A name may not shadow a built-in task; the last definition remembered under a name wins.

Errors name the file, the key and the value (``T.toml: labels.source = 'tsv': choose one of ...``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

from ..errors import NeuroLMError
from .channels import INDEX, normalize_name
from .datasets import DATASETS, Dataset, Instruction, SplitRule

MAX_EEG_TOKENS = 276
"""EEG tokens an instruction sample holds (channels × seconds); the instruction stage refuses longer windows."""

LABEL_SOURCES = ("annotations", "bids_events", "events", "filename", "csv", "subject_table")
SPLIT_BY = ("subject", "recording", "time")
_TOP = {"name", "question", "answers", "options", "classes", "channels", "mains", "window_s", "stride_s",
        "recordings", "labels", "split", "scale", "allow_low_rate"}
_RECORDINGS = {"glob", "subject"}
_LABELS = {"source", "map", "pattern", "file", "column", "subject_column", "last_s", "ignore_unmapped", "duration_s"}
_SPLIT = {"by", "order", "fractions", "seed"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class LabelSource:
    """Where the labels come from (:mod:`neurolm.data.labels` reads them)."""

    source: str
    """``annotations`` (MNE-readable annotations: EDF+, BrainVision, EEGLAB, FIF), ``bids_events`` (BIDS
    ``events.tsv``), ``events`` (an MNE events file beside each recording: event ids at onsets), ``filename`` (a
    pattern on the file's path), ``csv`` (a table of file, start, stop, label) or ``subject_table`` (subject → label;
    a BIDS root's ``participants.tsv`` by default)."""
    map: dict[str, str]
    """Label value found in the source → class name (default: the class names themselves)."""
    pattern: str = ""
    """``filename``: regular expression searched in the path relative to RAW_DIR without its extension; its first
    group (or the group named ``label``) is the label value."""
    file: str = ""
    """``csv`` / ``subject_table``: the table, relative to RAW_DIR (a path outside RAW_DIR is refused); ``events``:
    the events file's name beside the recording, ``{stem}`` standing for the recording's name without extension and
    ``_raw`` / ``-raw`` (default: the first of ``{stem}-eve.fif``, ``{stem}_eve.fif``, ``{stem}-eve.txt``,
    ``{stem}.eve`` that exists)."""
    column: str = ""
    """``bids_events``: the events.tsv column (``trial_type``); ``subject_table``: the label column (``label``)."""
    subject_column: str = ""
    """``subject_table``: the subject column (``subject``; ``participant_id`` in ``participants.tsv``)."""
    last_s: float | None = None
    """Whole-recording labels (``filename``, ``subject_table``): use only the last ``last_s`` seconds."""
    ignore_unmapped: bool = True
    """Annotations / events / rows whose value is not in ``map`` are ignored (False: a file with one is an error)."""
    duration_s: float | None = None
    """``events``: the seconds each event lasts from its onset (an events file holds onsets only)."""


@dataclass(frozen=True)
class TaskSpec:
    """A parsed task file: its dataset record plus how to find recordings, subjects and labels."""

    dataset: Dataset
    labels: LabelSource
    glob: str = "**/*"
    """Recordings: files below RAW_DIR matching this glob that MNE reads (a BIDS root: every EEG recording)."""
    subject: str = ""
    """Regular expression on the relative path (no extension) whose first group (or ``subject``) is the subject;
    empty: the BIDS subject, else the file's stem (every recording its own subject)."""
    split_seed: int = 0
    scale: float = 1.0
    """Factor the samples are multiplied by as they are read (``scale``), for recordings not in the unit their files
    state: 0.01 for values stored a hundred times too large, 1000 for millivolts labelled microvolts."""
    allow_low_rate: bool = False
    """Accept recordings at or below 150 Hz, low-passed below their Nyquist frequency (``allow_low_rate``)."""
    source: str = "task file"
    """Where the definition was read (file name, or the store / model directory it was recorded in)."""
    definition: dict[str, Any] = field(default_factory=dict, compare=False)
    """The file's content, as stored in manifests and training records."""

    @property
    def name(self) -> str:
        return self.dataset.name


def _fail(source: str, key: str, value: Any, why: str) -> NeuroLMError:
    return NeuroLMError(f"{source}: {key} = {value!r}: {why}")


def _check_keys(source: str, table: dict, allowed: set[str], prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            raise _fail(source, f"{prefix}{key}", table[key], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _get(source: str, table: dict, key: str, kind: type | tuple, default: Any = ..., prefix: str = "") -> Any:
    if key not in table:
        if default is ...:
            raise NeuroLMError(f"{source}: {prefix}{key} is missing")
        return default
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(source, f"{prefix}{key}", value, f"must be a {names}")
    return value


def _fraction(source: str, key: str, value: Any) -> float:
    try:
        frac = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise _fail(source, key, value, "not a fraction (a number or 'a/b')") from None
    if not 0 < frac <= 1:
        raise _fail(source, key, value, "must be in (0, 1]")
    return frac


def _regex(source: str, key: str, value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise _fail(source, key, value, f"not a regular expression ({exc})") from None
    return value


def _channels(source: str, value: Any) -> tuple[str, ...] | None:
    if value == "all":
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(source, "channels", value, "must be a list of 10-20 channel names or \"all\"")
    names = []
    for v in value:
        name = normalize_name(v)
        if name is None or name not in INDEX:
            raise _fail(source, "channels", v, "not a 10-20 channel name NeuroLM knows")
        if name in names:
            raise _fail(source, "channels", v, "listed twice")
        names.append(name)
    return tuple(names)


def _instruction(source: str, raw: dict, classes: tuple[str, ...]) -> Instruction:
    question = _get(source, raw, "question", str).strip()
    if not question:
        raise _fail(source, "question", question, "is empty")
    if ("answers" in raw) == ("options" in raw):
        raise NeuroLMError(f"{source}: give exactly one of answers (a word per class) or options (lettered, a text "
                           "per class)")
    key = "answers" if "answers" in raw else "options"
    words = _get(source, raw, key, list)
    if len(words) != len(classes) or not all(isinstance(w, str) and w.strip() for w in words):
        raise _fail(source, key, words, f"must be {len(classes)} non-empty texts, one per class {list(classes)}")
    if len({w.strip().lower() for w in words}) != len(words):
        raise _fail(source, key, words, "two answers are the same")
    prompt = f"Question: {question}"
    if key == "answers":
        return Instruction(f"{prompt} Answer:", tuple(f" {w.strip()}" for w in words))
    if len(words) > 26:
        raise _fail(source, "options", words, "at most 26 lettered options")
    letters = [chr(ord("A") + i) for i in range(len(words))]
    listing = " ".join(f"({x}) {w.strip()}." for x, w in zip(letters, words))
    return Instruction(f"{prompt} Options: {listing} Answer:", tuple(f" ({x})" for x in letters))


def _split(source: str, raw: dict) -> tuple[SplitRule, int]:
    _check_keys(source, raw, _SPLIT, "split.")
    by = _get(source, raw, "by", str, "subject", "split.")
    if by not in SPLIT_BY:
        raise _fail(source, "split.by", by, f"choose one of {', '.join(SPLIT_BY)}")
    order = _get(source, raw, "order", str, "shuffled", "split.")
    if order not in ("sorted", "shuffled"):
        raise _fail(source, "split.order", order, "choose sorted or shuffled")
    fractions = _get(source, raw, "fractions", dict, {"train": 0.7, "val": 0.15, "test": 0.15}, "split.")
    blocks = []
    for name, value in fractions.items():
        if name not in ("train", "val", "test"):
            raise _fail(source, f"split.fractions.{name}", value, "splits are train, val and test")
        blocks.append((name, _fraction(source, f"split.fractions.{name}", value)))
    if abs(sum(f for _, f in blocks) - 1) > 1e-6:
        raise _fail(source, "split.fractions", fractions, "must sum to 1")
    seed = _get(source, raw, "seed", int, 0, "split.")
    if by == "time":
        return SplitRule("within_trials", blocks=tuple(blocks)), seed
    return SplitRule("in_order", blocks=tuple(blocks), by=by, shuffle=order == "shuffled"), seed


def _labels(source: str, raw: dict, classes: tuple[str, ...]) -> LabelSource:
    _check_keys(source, raw, _LABELS, "labels.")
    kind = _get(source, raw, "source", str, prefix="labels.")
    if kind not in LABEL_SOURCES:
        raise _fail(source, "labels.source", kind, f"choose one of {', '.join(LABEL_SOURCES)}")
    mapping = _get(source, raw, "map", dict, {c: c for c in classes}, "labels.")
    for value, cls in mapping.items():
        if cls not in classes:
            raise _fail(source, f"labels.map.{value}", cls, f"not one of the classes {list(classes)}")
    pattern = _regex(source, "labels.pattern", _get(source, raw, "pattern", str, "", "labels."))
    if kind == "filename" and not pattern:
        raise NeuroLMError(f"{source}: labels.pattern is missing (labels.source = 'filename' needs it)")
    file = _get(source, raw, "file", str, "", "labels.")
    if kind == "events" and file:
        try:
            file.format(stem="x")
        except (KeyError, IndexError, ValueError):
            raise _fail(source, "labels.file", file, "the events file's name may hold {stem} (the recording's name "
                                                     "without extension and _raw) and no other {…}") from None
    if kind == "csv" and not file:
        raise NeuroLMError(f"{source}: labels.file is missing (labels.source = 'csv' needs it)")
    duration_s = _get(source, raw, "duration_s", (int, float), None, "labels.")
    if kind == "events" and duration_s is None:
        raise NeuroLMError(f"{source}: labels.duration_s is missing (labels.source = 'events' needs it: an events file "
                           "holds onsets, not how long each event lasts)")
    if duration_s is not None and duration_s <= 0:
        raise _fail(source, "labels.duration_s", duration_s, "must be > 0 s")
    last_s = _get(source, raw, "last_s", (int, float), None, "labels.")
    if last_s is not None and last_s <= 0:
        raise _fail(source, "labels.last_s", last_s, "must be > 0 s")
    return LabelSource(kind, {str(k): v for k, v in mapping.items()}, pattern, file,
                       _get(source, raw, "column", str, "", "labels."),
                       _get(source, raw, "subject_column", str, "", "labels."),
                       None if last_s is None else float(last_s),
                       _get(source, raw, "ignore_unmapped", bool, True, "labels."),
                       None if duration_s is None else float(duration_s))


def parse_task(raw: dict, source: str) -> TaskSpec:
    """A :class:`TaskSpec` from a task file's content; ``source`` names it in errors."""
    _check_keys(source, raw, _TOP)
    name = _get(source, raw, "name", str)
    if not _NAME.match(name):
        raise _fail(source, "name", name, "use lower-case letters, digits and _ (starting with a letter)")
    if name in DATASETS:
        raise _fail(source, "name", name, "is a built-in dataset; choose another name")
    classes = _get(source, raw, "classes", list)
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise _fail(source, "classes", classes, "must be at least two distinct names")
    classes = tuple(classes)
    channels = _channels(source, raw.get("channels", "all"))
    window_s = _get(source, raw, "window_s", (int, float))
    if window_s < 1 or window_s != int(window_s):
        raise _fail(source, "window_s", window_s, "must be a whole number of seconds ≥ 1 (one EEG token a second)")
    stride_s = _get(source, raw, "stride_s", (int, float), None)
    if stride_s is not None and stride_s <= 0:
        raise _fail(source, "stride_s", stride_s, "must be > 0 s")
    if channels is not None and len(channels) * window_s > MAX_EEG_TOKENS:
        raise _fail(source, "window_s", window_s, f"{len(channels)} channels × {window_s:g} s exceed the "
                                                  f"{MAX_EEG_TOKENS} EEG tokens of an instruction sample")
    mains = _get(source, raw, "mains", (int, float), 50.0)
    if mains not in (50, 60):
        raise _fail(source, "mains", mains, "must be 50 or 60 (Hz)")
    recordings = _get(source, raw, "recordings", dict, {})
    _check_keys(source, recordings, _RECORDINGS, "recordings.")
    split, seed = _split(source, _get(source, raw, "split", dict, {}))
    scale = _get(source, raw, "scale", (int, float), 1.0)
    if not 0 < scale < float("inf"):
        raise _fail(source, "scale", scale, "must be a positive factor (0.01: samples stored 100 times too large)")
    dataset = Dataset(name, channels, classes, mains=float(mains), window_s=float(window_s), split=split,
                      stride_s=None if stride_s is None else float(stride_s),
                      instruction=_instruction(source, raw, classes))
    return TaskSpec(dataset, _labels(source, _get(source, raw, "labels", dict), classes),
                    _get(source, recordings, "glob", str, "**/*", "recordings."),
                    _regex(source, "recordings.subject",
                           _get(source, recordings, "subject", str, "", "recordings.")),
                    seed, float(scale), _get(source, raw, "allow_low_rate", bool, False), source, raw)


def load_task_file(path: str | Path) -> TaskSpec:
    """Parse and check a TOML task file."""
    path = Path(path)
    if not path.is_file():
        raise NeuroLMError(f"{path}: no such task file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise NeuroLMError(f"{path}: not a valid TOML task file ({exc})") from None
    return parse_task(raw, str(path))


def spec_summary(spec: TaskSpec) -> dict[str, Any]:
    """The recorded form of a task: the file's content (enough to rebuild the spec) plus the instruction it makes."""
    return {"definition": spec.definition, "instruction": asdict(spec.dataset.instruction)}


_KNOWN: dict[str, TaskSpec] = {}


def remember(recorded: dict[str, Any], source: str) -> TaskSpec:
    """Make a recorded task (a manifest's ``task`` or an entry of ``task_definitions``) known by name."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("definition"), dict):
        raise NeuroLMError(f"{source}: a recorded task has no 'definition' table")
    spec = parse_task(recorded["definition"], source)
    _KNOWN[spec.name] = spec
    return spec


def known_task(name: str) -> TaskSpec | None:
    """The task file remembered under ``name`` in this process, if any."""
    return _KNOWN.get(name)


def known_names() -> list[str]:
    return list(_KNOWN)


def dataset_record(name: str) -> Dataset:
    """The registry record of a built-in dataset or of a remembered task file."""
    if name in DATASETS:
        return DATASETS[name]
    spec = known_task(name)
    if spec is None:
        raise NeuroLMError(f"unknown dataset or task {name!r}; built-in: {', '.join(DATASETS)}")
    return spec.dataset
