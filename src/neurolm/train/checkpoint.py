"""Atomic, checksummed training checkpoints and the RNG states that make a resumed run bit-identical.

Layout of ``out_dir/training_state/``::

    state.pt           model + optimizer state dicts and every rank's RNG states (torch.save, loaded weights_only)
    meta.json          step, elapsed seconds, world size: enough to tell whether a run is finished without state.pt
    train_config.json  the TrainConfig of the run
    stage_options.json the stage's own options (what its task was built from), compared on resume
    artifacts/         what the stage's ``task.save`` wrote (config.json + model.safetensors), also published to
                       ``out_dir`` itself so that it always holds a loadable model
    SHA256SUMS         ``sha256sum -c`` format, one line per file above; verified before anything is loaded

A checkpoint is written into ``out_dir/.training_state.tmp`` and fsynced, then swapped in by two renames (old →
``.training_state.old``, new → ``training_state``). A crash between the renames leaves only ``.old``, which
:func:`recover` renames back, so a complete checkpoint always survives.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    """Finish a swap that a crash interrupted (only ``.training_state.old`` left) and drop a half-written temp dir."""
    final, old, tmp = out_dir / STATE_DIR, out_dir / f".{STATE_DIR}.old", out_dir / f".{STATE_DIR}.tmp"
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
    """Whether ``out_dir`` holds a checkpoint (call :func:`recover` first, on one process)."""
    return (Path(out_dir) / STATE_DIR / SUMS_FILE).exists()


def write_checkpoint(
    out_dir: Path,
    state: dict[str, Any],
    meta: dict[str, Any],
    files: dict[str, str],
    save_artifacts: Callable[[Path], None],
) -> Path:
    """Write a checkpoint atomically and publish its artifacts into ``out_dir``; returns ``out_dir/training_state``.
    ``files``: text files of the checkpoint by name (the run's configs).

    Artifact files are hard-linked (copied where links are impossible) into ``out_dir`` one ``os.replace`` each, so
    a reader never sees a half-written ``model.safetensors``; files are never modified in place, which makes the
    shared inode safe.
    """
    out_dir = Path(out_dir)
    recover(out_dir)
    tmp, final, old = out_dir / f".{STATE_DIR}.tmp", out_dir / STATE_DIR, out_dir / f".{STATE_DIR}.old"
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
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync(out_dir)
    if old.exists():
        shutil.rmtree(old)
    _publish(final / ARTIFACTS_DIR, out_dir)
    return final


def _publish(src_root: Path, out_dir: Path) -> None:
    for src in _files(src_root):
        dst = out_dir / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging = dst.with_name(f".{dst.name}.tmp")
        staging.unlink(missing_ok=True)
        try:
            os.link(src, staging)
        except OSError:
            shutil.copy2(src, staging)
            _fsync(staging)
        os.replace(staging, dst)
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


def read_state(out_dir: Path) -> dict[str, Any]:
    """The training state (call :func:`verify_checkpoint` first). Memory-mapped: ranks on one machine share the
    page cache instead of each holding a copy of a multi-GB optimizer state."""
    return torch.load(Path(out_dir) / STATE_DIR / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
