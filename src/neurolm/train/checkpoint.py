"""Atomic, checksummed training checkpoints and the RNG states that make a resumed run bit-identical.

Layout of ``out_dir/training_state/``::

    state.pt           model + optimizer state dicts and every rank's RNG states (torch.save, loaded weights_only)
    meta.json          step, elapsed seconds, world size: enough to tell whether a run is finished without state.pt
    train_config.json  the TrainConfig of the run
    stage_options.json the stage's own options (what its task was built from), compared on resume
    artifacts/         what the stage's ``task.save`` wrote (config.json + model.safetensors), also copied to
                       ``out_dir`` itself so that it always holds a loadable model
    SHA256SUMS         ``sha256sum -c`` format, one line per file above; verified before anything is loaded

A checkpoint is written into ``out_dir/.training_state.tmp``, fsynced, hashed and opened again, then
swapped in by two renames (the current one → ``.training_state.previous``, new → ``training_state``). The previous
checkpoint stays until the next swap: a resume whose newest checkpoint fails its checksums falls back to it with a
warning (:func:`verify_or_fall_back`), and a crash between the renames leaves it for :func:`recover` to rename back.
The published model files are copies, not links into the checkpoint, so overwriting them cannot damage it. A write
that fails (disk full) removes its temporary folder and says which checkpoint is intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import NeuroLMError

STATE_DIR = "training_state"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
CONFIG_FILE = "train_config.json"
OPTIONS_FILE = "stage_options.json"
ARTIFACTS_DIR = "artifacts"
SUMS_FILE = "SHA256SUMS"
PREVIOUS_DIR = f".{STATE_DIR}.previous"
DAMAGED_DIR = f".{STATE_DIR}.damaged"
"""Where a resume moves a newest checkpoint that failed its checksums (kept for inspection, replaced next time)."""


# ----------------------------------------------------------------------------------------------------- RNG states
def capture_rng(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch CPU and (for a CUDA ``device``) that GPU's generator states, in types that
    ``torch.load(weights_only=True)`` accepts. Only this process's GPU: touching the others would create a CUDA
    context on each of them from every rank."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    key = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**np_state, "state": {"key": key, "pos": np_state["state"]["pos"]}})
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block (validation, saving) without advancing the training RNG streams, so the training trajectory
    does not depend on how often one evaluates or checkpoints."""
    state = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(state, device)


# ------------------------------------------------------------------------------------------------ writing/reading
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def recover(out_dir: Path) -> None:
    """Finish a swap that a crash interrupted (only the previous checkpoint left; ``.training_state.old`` in runs
    written before it was kept) and drop a half-written temp dir."""
    final, tmp = out_dir / STATE_DIR, out_dir / f".{STATE_DIR}.tmp"
    for old in (out_dir / PREVIOUS_DIR, out_dir / f".{STATE_DIR}.old"):
        if not final.exists() and old.exists():
            os.rename(old, final)
    if tmp.exists():
        shutil.rmtree(tmp)


def resumable(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a checkpoint to resume (finishing an interrupted swap first; one process only)."""
    if Path(out_dir).is_dir():
        recover(Path(out_dir))
    return has_checkpoint(out_dir)


def has_checkpoint(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a checkpoint (call :func:`recover` first, on one process); a newest one damaged
    beyond its sums still counts when the previous one is there."""
    return (Path(out_dir) / STATE_DIR / SUMS_FILE).exists() or (Path(out_dir) / PREVIOUS_DIR / SUMS_FILE).exists()


def write_checkpoint(
    out_dir: Path,
    state: dict[str, Any],
    meta: dict[str, Any],
    files: dict[str, str],
    save_artifacts: Callable[[Path], None],
) -> Path:
    """Write a checkpoint atomically and publish its artifacts into ``out_dir``; returns ``out_dir/training_state``.
    ``files``: text files of the checkpoint by name (the run's configs).

    Artifact files are copied into ``out_dir`` one ``os.replace`` each, so a reader never sees a half-written
    ``model.safetensors`` and a user's edit of the published copy leaves the checkpoint intact.
    """
    out_dir = Path(out_dir)
    recover(out_dir)
    tmp, final, previous = out_dir / f".{STATE_DIR}.tmp", out_dir / STATE_DIR, out_dir / PREVIOUS_DIR
    try:
        (tmp / ARTIFACTS_DIR).mkdir(parents=True)
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        for name, text in files.items():
            (tmp / name).write_text(text)
        save_artifacts(tmp / ARTIFACTS_DIR)
        lines = []
        for path in _files(tmp):
            _fsync(path)
            lines.append(f"{_sha256(path)}  {path.relative_to(tmp).as_posix()}\n")
        (tmp / SUMS_FILE).write_text("".join(lines))
        _fsync(tmp / SUMS_FILE)
        for d in sorted({p.parent for p in _files(tmp)}, key=lambda p: len(p.parts), reverse=True):
            _fsync(d)
        # read back before it replaces anything: the sums above hash what was written; this checks that torch can
        # open it (mmap: the archive's index and pickle, not the tensors' bytes again)
        torch.load(tmp / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:  # torch.save: a failed write is a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise NeuroLMError(f"{out_dir}: could not write the checkpoint of step {meta.get('step')} "
                           f"({_reason(exc)}); its temporary folder is removed. {_intact(out_dir)}") from None
    if final.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.rename(final, previous)
    os.rename(tmp, final)
    _fsync(out_dir)
    try:
        _publish(final / ARTIFACTS_DIR, out_dir)
    except OSError as exc:
        raise NeuroLMError(f"{out_dir}: could not copy the model files of step {meta.get('step')} into the "
                           f"directory ({_reason(exc)}). {_intact(out_dir)}") from None
    return final


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).splitlines() or [""])[0] or type(exc).__name__


def _intact(out_dir: Path) -> str:
    """Which checkpoint a failed write left intact, for its message."""
    for name in (STATE_DIR, PREVIOUS_DIR):
        meta = out_dir / name / META_FILE
        if (out_dir / name / SUMS_FILE).is_file() and meta.is_file():
            step = json.loads(meta.read_text()).get("step")
            return f"The checkpoint in {out_dir / name} (step {step}) is intact: free space, then resume."
    return "No checkpoint of this run is intact yet."


def _publish(src_root: Path, out_dir: Path) -> None:
    for src in _files(src_root):
        dst = out_dir / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging = dst.with_name(f".{dst.name}.tmp")
        staging.unlink(missing_ok=True)
        try:
            shutil.copyfile(src, staging)  # a copy: a hard link would let an edit of dst change the checkpoint
            _fsync(staging)
            os.replace(staging, dst)
        finally:
            staging.unlink(missing_ok=True)
    _fsync(out_dir)


def _verify(state_dir: Path, only: set[str] | None = None) -> None:
    sums = state_dir / SUMS_FILE
    if not sums.exists():
        raise NeuroLMError(f"checkpoint {state_dir} is incomplete: {SUMS_FILE} is missing")
    for line in sums.read_text().splitlines():
        digest, name = line.split("  ", 1)
        if only is not None and name not in only:
            continue
        path = state_dir / name
        if not path.exists():
            raise NeuroLMError(f"checkpoint file {path} is missing")
        if _sha256(path) != digest:
            raise NeuroLMError(f"checkpoint file {path} is corrupted (its sha256 does not match {sums})")


def read_meta(out_dir: Path) -> dict[str, Any]:
    """Step, elapsed time and world size of the checkpoint in ``out_dir``, with its ``config`` and stage
    ``options`` (None in checkpoints written before they were saved); checksum-verified, cheap."""
    state_dir = Path(out_dir) / STATE_DIR
    _verify(state_dir, {META_FILE, CONFIG_FILE, OPTIONS_FILE})
    meta = json.loads((state_dir / META_FILE).read_text())
    meta["config"] = json.loads((state_dir / CONFIG_FILE).read_text())
    options = state_dir / OPTIONS_FILE
    meta["options"] = json.loads(options.read_text()) if options.is_file() else None
    return meta


def verify_checkpoint(out_dir: Path) -> None:
    """Check every file of the checkpoint against ``SHA256SUMS``; NeuroLMError names the first bad one."""
    _verify(Path(out_dir) / STATE_DIR)


def verify_or_fall_back(out_dir: Path) -> str | None:
    """:func:`verify_checkpoint`; when the newest checkpoint is damaged and the previous one is intact, put the
    previous one in its place (the damaged one moves to ``.training_state.damaged``), publish its model files
    again and return a warning saying so. One process only."""
    out_dir = Path(out_dir)
    final, previous, damaged = out_dir / STATE_DIR, out_dir / PREVIOUS_DIR, out_dir / DAMAGED_DIR
    try:
        _verify(final)
        return None
    except NeuroLMError as newest:
        try:
            _verify(previous)
        except NeuroLMError:
            raise newest from None
        if damaged.exists():
            shutil.rmtree(damaged)
        os.rename(final, damaged)
        os.rename(previous, final)
        _fsync(out_dir)
        _publish(final / ARTIFACTS_DIR, out_dir)
        step = json.loads((final / META_FILE).read_text()).get("step")
        return (f"{newest}; resuming from the previous checkpoint (step {step}) instead; the damaged one is kept in "
                f"{damaged}")


def read_state(out_dir: Path) -> dict[str, Any]:
    """The training state (call :func:`verify_checkpoint` first). Memory-mapped: ranks on one machine share the
    page cache instead of each holding a copy of a multi-GB optimizer state."""
    return torch.load(Path(out_dir) / STATE_DIR / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
