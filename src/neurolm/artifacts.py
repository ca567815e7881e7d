"""Model directories and foreign checkpoints, shared by the tokenizer and the LM.

A model directory is ``config.json`` + ``model.safetensors``; loading names every missing, unexpected or mis-shaped
key instead of failing deep inside ``load_state_dict``. ``config.json`` starts with ``model_type`` (``neurolm`` or
``neurolm-tokenizer``) and ``format_version``, so a directory says what it is instead of being recognised by its keys;
:func:`migrate_config` is the one place that reads older directories.

The authors' checkpoints are torch pickles, and a pickle can run code while it is read: they are opened with
``weights_only=True`` only, which admits tensors, containers and numbers (all the authors' files hold: state dicts,
``*_args`` dicts, optimizer state, counters) and nothing else. A file naming any other global is refused; a full
unpickle needs the explicit ``trust_checkpoint=True``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import NeuroLMError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPES = ("neurolm", "neurolm-tokenizer")
FORMAT_VERSION = 1
"""The layout of ``config.json``: 1 = ``model_type`` and ``format_version`` beside the model's own fields; 0 = a
directory written before them (the model's fields only). Raise it with a new branch in :func:`migrate_config`."""
HEADER = ("model_type", "format_version")


def migrate_config(values: dict, source: str = "config.json") -> tuple[str, int, dict]:
    """``(model_type, format_version, config)`` of a ``config.json``'s contents, ``config`` without the header: the one
    migration path for older directories. Format 0 (no header) is recognised as today's loaders always did: a NeuroLM
    config nests its GPT's (``gpt``), a tokenizer's has ``codebook_size`` at the top."""
    if not isinstance(values, dict):
        raise NeuroLMError(f"{source}: expected a JSON object, got {type(values).__name__}")
    config = {k: v for k, v in values.items() if k not in HEADER}
    version = values.get("format_version", 0)
    kind = values.get("model_type")
    if kind is None and "gpt" in values:
        kind = "neurolm"
    elif kind is None and "codebook_size" in values:
        kind = "neurolm-tokenizer"
    elif kind is None:
        raise NeuroLMError(f"{source}: no model_type, and neither a NeuroLM config (no 'gpt') nor a tokenizer's (no "
                           "'codebook_size')")
    if not isinstance(version, int) or not 0 <= version <= FORMAT_VERSION:
        raise NeuroLMError(f"{source}: format_version {version!r} is not one this NeuroLM reads (0–{FORMAT_VERSION}); "
                           "a newer NeuroLM wrote it: upgrade the package")
    if kind not in MODEL_TYPES:
        raise NeuroLMError(f"{source}: model_type {kind!r} is not a NeuroLM directory ({' or '.join(MODEL_TYPES)})")
    return kind, version, config


def save_artifacts(directory: str | Path, config: dict, model: nn.Module, kind: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` (every state-dict entry, buffers included)."""
    save_state(directory, config, model.state_dict(), kind)


def save_state(directory: str | Path, config: dict, state: dict[str, torch.Tensor], kind: str) -> None:
    """:func:`save_artifacts` of a state dict; ``kind`` (one of :data:`MODEL_TYPES`) heads ``config.json``."""
    if kind not in MODEL_TYPES:
        raise ValueError(f"model kind {kind!r}: expected one of {MODEL_TYPES}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header = {"model_type": kind, "format_version": FORMAT_VERSION}
    (directory / CONFIG_FILE).write_text(json.dumps(header | config, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "model": kind})


def read_config(directory: str | Path, kind: str) -> dict:
    """The config dict of a directory written by :func:`save_artifacts` (the model's fields, without the
    ``model_type`` / ``format_version`` header), without reading its weights (a model's shape, e.g. for defaults or
    FLOP counts, should not cost loading gigabytes). ``kind`` names the expected model in the error."""
    return _read_header(directory, kind)[2]


def model_type(directory: str | Path, kind: str = "NeuroLM tokenizer or model") -> str:
    """``neurolm`` or ``neurolm-tokenizer``: what the directory holds, from its ``config.json`` (older directories
    through :func:`migrate_config`); ``kind`` names the expected model in the error."""
    return _read_header(directory, kind)[0]


def _read_header(directory: str | Path, kind: str) -> tuple[str, int, dict]:
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise NeuroLMError(f"{directory / name}: missing; not a {kind} directory")
    try:
        values = json.loads((directory / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise NeuroLMError(f"{directory / CONFIG_FILE}: not valid JSON ({exc})") from exc
    return migrate_config(values, str(directory / CONFIG_FILE))


def read_artifacts(directory: str | Path, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config dict and the weights of a directory written by :func:`save_artifacts`."""
    directory = Path(directory)
    config = read_config(directory, kind)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except SafetensorError as exc:
        raise NeuroLMError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file ({exc})") from exc
    return config, state


def load_state_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                     optional: frozenset[str] | set[str] = frozenset()) -> None:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped key; keys in ``optional`` may
    be absent from ``state`` (they keep their current values). Weights holding NaN or infinity are refused: such a
    model answers every window with NaN probabilities and no later step would say why."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NeuroLMError(f"{source}: weights hold NaN or infinite values ({len(bad)} tensor(s): "
                           f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}); the file is damaged or the run "
                           "that wrote it diverged")
    missing = sorted(set(own) - set(state) - set(optional))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = [f"{name} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
                if keys]
    if problems:
        raise NeuroLMError(f"{source}: weights do not match the model config; " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


def build_uninitialised(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` built on the meta device, then given uninitialised CPU memory: for loaders that overwrite every
    tensor anyway (the random init of a 50257-row text table alone takes seconds)."""
    with torch.device("meta"):
        model = factory()
    return model.to_empty(device="cpu")


def load_torch_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``: a file that names any global outside torch's weights-only allow-list
    is refused, naming the globals, because unpickling it could run code. ``trust_checkpoint=True`` unpickles fully:
    only for files whose source you trust."""
    path = Path(path)
    if not path.is_file():
        raise NeuroLMError(f"{path}: no such checkpoint file")
    unreadable = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ModuleNotFoundError,
                  ValueError, TypeError, IndexError, KeyError)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        if trust_checkpoint:
            raise NeuroLMError(f"{path}: not a readable torch checkpoint ({exc})") from exc
        refused = _unsafe_globals(path) or re.findall(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if not refused:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            raise NeuroLMError(f"{path}: not a readable torch checkpoint "
                               f"({detail.group(1).strip() if detail else 'not a pickle torch can read'})") from None
        raise NeuroLMError(f"{path}: refused: the file names {', '.join(refused)}, which a weights-only load does not "
                           "allow (unpickling it could run code stored in the file); if you trust where the file comes "
                           "from, load it with trust_checkpoint=True") from None
    except unreadable as exc:
        raise NeuroLMError(f"{path}: not a readable torch checkpoint ({exc})") from exc


def _unsafe_globals(path: Path) -> list[str]:
    """The globals of a checkpoint outside the weights-only allow-list, read without unpickling (empty for a legacy
    non-zip file, which the scanner cannot read)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - only the message's detail depends on it; the refusal stands either way
        return []


def strip_compile_prefix(state: dict) -> dict:
    """REF saves ``torch.compile``d models: keys may start with ``_orig_mod.``."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}
