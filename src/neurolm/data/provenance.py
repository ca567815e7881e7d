"""What a model learnt from, saved beside its weights as ``training.json`` (tokenizer, pretrained and tuned models).

``config.json`` says what a model *is*; this file says what data it *saw*: for every dataset of its training (and of
the stages before it), the preprocessing its window store was prepared with (band-pass, notch, resampling, scaling,
flat-channel threshold), the channel set and order, the window length and the class names; and the tasks it was
instruction-tuned on. ``ask`` cuts and filters a new recording with exactly these settings instead of the dataset's
defaults (a store prepared with ``--mains 60`` is answered with a 60 Hz notch) and refuses a task the model was never
tuned on; ``evaluate`` warns when a store's preprocessing differs from what the model was trained with.

Layout::

    {"format": 1,
     "tuned_tasks": ["workload", ...],          # instruction-tuned tasks, this stage and earlier ones
     "task_definitions": {"my_task": {...}},    # tuned tasks from task files: the definition (data.taskfile)
     "datasets": {"workload": {"preprocessing": {...}, "channels": [...], "window_s": 4.0, "classes": [...]}, ...}}

A model directory written before this file existed, or a checkpoint of the authors, has none: ``ask`` then falls
back to the dataset's defaults and says that it could not check the task.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import NeuroLMError
from .preprocess import PreprocessConfig
from .store import MANIFEST, WindowStore
from .taskfile import remember

TRAINING_FILE = "training.json"
FORMAT = 1


def dataset_entry(store: WindowStore) -> dict[str, Any]:
    """The preprocessing, channels, window length and classes of a store, from its manifest."""
    m = store.manifest
    return {key: m[key] for key in ("preprocessing", "band_hz", "channels", "window_s", "stride_s", "classes")
            if key in m}


def read_training(directory: str | Path) -> dict[str, Any] | None:
    """``training.json`` of a model directory, or None when it has none (older directories)."""
    path = Path(directory) / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NeuroLMError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("datasets"), dict):
        raise NeuroLMError(f"{path}: no 'datasets' mapping; not a NeuroLM training record")
    for name, task in record.get("task_definitions", {}).items():  # own tasks: known by name from here on
        remember(task, f"{path}: task_definitions.{name}")
    return record


def write_training(directory: str | Path, stores: list[WindowStore], *, tuned: bool,
                   parent: str | Path | None = None) -> dict[str, Any]:
    """Write ``training.json``: the stores' entries (``tuned``: their datasets are instruction-tuned tasks) over the
    record of the ``parent`` directory the stage started from."""
    record = read_training(parent) if parent is not None else None
    record = {"format": FORMAT, "tuned_tasks": [], "datasets": {}} if record is None else record
    for store in stores:
        record["datasets"][store.dataset] = dataset_entry(store)
        if tuned and store.dataset not in record["tuned_tasks"]:
            record["tuned_tasks"].append(store.dataset)
        if tuned and "task" in store.manifest:
            record.setdefault("task_definitions", {})[store.dataset] = store.manifest["task"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def preprocess_config(entry: dict[str, Any], mains: float | None = None) -> PreprocessConfig:
    """The :class:`PreprocessConfig` a dataset entry was prepared with (fields this version does not know are
    left out; ``mains`` overrides the notch)."""
    known = {f.name for f in fields(PreprocessConfig)}
    values = {k: v for k, v in entry.get("preprocessing", {}).items() if k in known}
    if mains is not None:
        values["mains"] = mains
    return PreprocessConfig(**values)


def check_task(record: dict[str, Any] | None, task: str, *, allow_untrained: bool, source: str) -> None:
    """Refuse (or, with ``allow_untrained``, warn about) a task the model was not instruction-tuned on."""
    if record is None:
        warnings.warn(f"{source}: no {TRAINING_FILE}, so the tasks this model was tuned on are unknown; "
                      f"answering {task} with the dataset's default preprocessing", UserWarning, stacklevel=3)
        return
    tuned = record.get("tuned_tasks", [])
    if task in tuned:
        return
    what = f"{source}: the model was not instruction-tuned on {task} (tuned on: {', '.join(tuned) or 'none'})"
    if not allow_untrained:
        raise NeuroLMError(f"{what}; its answers would be guesses. Pass --allow-untrained-task to ask anyway")
    warnings.warn(f"{what}; answering anyway (--allow-untrained-task), expect guesses", UserWarning, stacklevel=3)


def check_store(record: dict[str, Any] | None, store: WindowStore, source: str) -> None:
    """Warn when ``store`` was prepared differently from the windows the model learnt its dataset from, or is a
    task the model was not tuned on (evaluating it is legitimate, e.g. zero-shot, but worth saying); refuse a store
    whose task definition is not the one the model was tuned on (its classes may mean other answers)."""
    if record is None:
        return
    name = store.dataset
    tuned_definition = record.get("task_definitions", {}).get(name)
    if tuned_definition is not None and "task" in store.manifest and store.manifest["task"] != tuned_definition:
        raise NeuroLMError(f"task {name!r} has two different definitions: {store.root / MANIFEST} and the one the "
                           f"model was tuned on ({source}/{TRAINING_FILE}: task_definitions.{name}); prepare the "
                           "store from the task file the model was tuned with")
    if name not in record.get("tuned_tasks", []):
        warnings.warn(f"{source}: evaluating {name}, a task the model was not instruction-tuned on", UserWarning,
                      stacklevel=3)
    trained = record["datasets"].get(name)
    if trained is None:
        return
    ours = dataset_entry(store)
    differ = [k for k in ("preprocessing", "channels", "window_s") if k in trained and trained[k] != ours.get(k)]
    if differ:
        warnings.warn(f"{store.root}: {', '.join(differ)} differ from the {name} windows the model was trained on "
                      f"({source}/{TRAINING_FILE})", UserWarning, stacklevel=3)
