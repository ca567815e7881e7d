"""Stage arguments: one dataclass per training command, whose fields are both its flags and the keyword arguments of
its API function, so the two cannot drift apart.

A field's docstring (the string literal under it, as litgpt writes its configs) is its ``--help``. The CLI reads those
docstrings from :mod:`neurolm.train.help_text`, a table written from the source by ``python tests/test_cli_help.py
--write`` (``tests/test_cli_help.py`` fails when it is stale), so ``--help`` works without the source files at run
time. ``metadata`` may give ``flags`` (the option strings, default ``--field-name``), ``metavar``, ``group`` (the
``--help`` section, see :data:`GROUPS`), ``cli=False`` (API only) and ``compared=False`` (a setting that may change
on resume without making it another run: the output directory, the device, a cache size). Every other field that
:class:`~neurolm.train.TrainConfig` does not hold is a *stage option*: it is saved with each checkpoint and resuming
with another value is an error (:func:`neurolm.train.train`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import NeuroLMError
from .help_text import FIELD_HELP


def _free(default: Any = MISSING, **metadata: Any) -> Any:
    """A field that may change on resume (see the module notes)."""
    return field(default=default, metadata={"compared": False, **metadata})


@dataclass(kw_only=True)
class StageArgs:
    """The arguments every training command shares; a stage adds its own in a subclass."""

    data: list[Path] = field(metadata={"metavar": "STORE"})
    """prepared window stores"""
    out: Path = _free(metavar="DIR")
    """output directory (resumable)"""
    steps: int | None = _free(None)
    """optimizer steps"""
    batch_size: int | None = _free(None)
    """EEG windows per step, summed over processes"""
    lr: float | None = _free(None)
    """peak learning rate; the floor keeps the size's ratio to it"""
    eval_every: int | None = _free(None, metavar="N")
    """validate every N steps (and after the last)"""
    seed: int = _free(0)
    """seeds the initial weights, the batch order and the text crops"""
    text: Path | None = field(default=None, metadata={"metavar": "CORPUS"})
    """plain-text corpus: a .txt file or a flat uint16 token file (default: the shipped demo corpus)"""
    device: str = _free("auto")
    """auto (this process's CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N, ..."""
    precision: Literal["auto", "bf16", "fp32"] = _free("auto")
    """bf16 autocast (auto: on CUDA GPUs that support it)"""
    compile: bool = _free(False)
    """run the training step through torch.compile"""
    grad_accum: int = _free(1, metavar="N")
    """micro-batches per optimizer step (the step sees N × --batch-size samples)"""
    activation_checkpointing: bool = _free(False)
    """recompute transformer blocks in the backward pass (less memory, ~1/3 more compute)"""
    fsdp: bool = _free(False)
    """under torchrun: shard the model over the processes (FSDP) instead of copying it to each (DDP)"""
    head_chunk: int = _free(512, metavar="N")
    """tokens whose LM-head logits exist at once in the training losses (0: all; less memory, same result)"""
    group_by_length: bool | None = _free(None)
    """batch windows of similar length together, so batches pad less"""
    resume: bool = _free(False)
    """continue from the checkpoint in --out"""
    allow_changes: bool = _free(False)
    """with --resume: continue although stage options (e.g. --text) differ from the checkpoint's"""
    progress: bool = _free(True, cli=False)
    """show a progress bar"""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, kind = getattr(self, f.name), hints[f.name]
            if value is None:
                continue
            base = _strip_optional(kind)
            if base is Path:
                setattr(self, f.name, Path(value))
            elif typing.get_origin(base) is list:
                if isinstance(value, (str, Path)):
                    raise NeuroLMError(f"{f.name} must be a list of paths (got the single path {value!r})")
                setattr(self, f.name, [Path(v) for v in value])
            elif typing.get_origin(base) is Literal and value not in typing.get_args(base):
                raise NeuroLMError(f"{f.name} must be one of {', '.join(map(str, typing.get_args(base)))} "
                                   f"(got {value!r})")

    def options(self) -> dict[str, Any]:
        """The stage options (see the module notes) as JSON values, paths made absolute."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.metadata.get("compared", True)}

    def contents(self) -> dict[str, Any]:
        """What the directories among the stage options hold, hashed (``<field>_contents``): a store's manifest
        (which lists every file's checksum) or a model directory's weights. A store prepared again or a tokenizer
        trained again at the same path is another run's input, so resuming compares these like the options."""
        hints = typing.get_type_hints(type(self))
        found = {}
        for f in fields(self):
            base = _strip_optional(hints[f.name])
            value = getattr(self, f.name)
            if not f.metadata.get("compared", True) or value is None or base not in (Path, list[Path]):
                continue
            digests = [_content_digest(Path(p)) for p in (value if isinstance(value, list) else [value])]
            if any(d is not None for d in digests):
                found[f.name + CONTENTS] = digests if isinstance(value, list) else digests[0]
        return found


CONTENTS = "_contents"
"""The suffix of :meth:`StageArgs.contents`'s keys (checkpoints written before them have none to compare)."""


def _content_digest(path: Path) -> str | None:
    for name in ("manifest.json", "model.safetensors"):  # a window store, a model directory
        if (path / name).is_file():
            h = hashlib.sha256()
            with open(path / name, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
            return f"{name} sha256:{h.hexdigest()[:16]}"
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return os.path.abspath(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _strip_optional(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and its bases, from the generated table (module notes)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        docs.update(FIELD_HELP.get(f"{klass.__module__}.{klass.__qualname__}", {}))
    return docs


GROUPS = ("inputs and data", "run control", "memory", "method levers")
"""The sections of a training command's ``--help``, in order; a field's ``metadata["group"]`` names its own, else
:data:`GROUP_OF` does, else it is a method lever (what the stage adds is usually a switch of the method)."""
GROUP_OF = {
    **dict.fromkeys(("data", "text", "model", "tokenizer", "shots"), "inputs and data"),
    **dict.fromkeys(("out", "steps", "batch_size", "lr", "eval_every", "seed", "device", "precision", "compile",
                     "grad_accum", "resume", "allow_changes"), "run control"),
    **dict.fromkeys(("activation_checkpointing", "fsdp", "head_chunk", "group_by_length", "cache_mb"), "memory"),
}


def group_of(f: Field) -> str:
    return f.metadata.get("group", GROUP_OF.get(f.name, "method levers"))


def add_arguments(p: argparse.ArgumentParser, cls: type[StageArgs], notes: dict[str, str] | None = None) -> None:
    """One flag per field of ``cls`` in :data:`GROUPS` sections (required ones first), its help the field's docstring
    plus ``notes[name]``."""
    docs, hints, notes = field_docs(cls), typing.get_type_hints(cls), notes or {}
    cli = [f for f in fields(cls) if f.metadata.get("cli", True)]
    sections = {name: p.add_argument_group(name) for name in GROUPS}
    for f in sorted(cli, key=lambda f: (GROUPS.index(group_of(f)), f.default is not MISSING)):
        sections[group_of(f)].add_argument(*f.metadata.get("flags", (f"--{f.name.replace('_', '-')}",)), dest=f.name,
                                           **_argparse_kind(f, hints[f.name]),
                                           help=_help(f, docs.get(f.name, ""), notes.get(f.name)))


def _argparse_kind(f: Field, kind: Any) -> dict[str, Any]:
    base = _strip_optional(kind)
    if base is bool:
        if f.default is False:
            return {"action": "store_true"}
        return {"action": argparse.BooleanOptionalAction, "default": f.default}
    kw: dict[str, Any] = {"required": True} if f.default is MISSING else {"default": f.default}
    if "metavar" in f.metadata:
        kw["metavar"] = f.metadata["metavar"]
    if typing.get_origin(base) is list:
        return kw | {"nargs": "+", "type": typing.get_args(base)[0]}
    if typing.get_origin(base) is Literal:
        return kw | {"choices": list(typing.get_args(base))}
    return kw | {"type": base}


def _help(f: Field, doc: str, note: str | None) -> str:
    if note is None and not isinstance(f.default, bool) and f.default not in (MISSING, None):
        note = f"default: {f.default}"
    return f"{doc} ({note})" if note else doc


def from_namespace(cls: type[StageArgs], ns: argparse.Namespace) -> StageArgs:
    """The arguments of a parsed command line."""
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if f.metadata.get("cli", True)})
