"""One writer per directory: an exclusive ``flock`` on ``DIR/.lock`` for every stage's output and every store.

Two runs writing one directory interleave their logs and checkpoints, and a scheduler's requeue (``--resume`` while
the first copy still runs) races the live run; so the second process stops at once instead. ``flock`` belongs to
the open file, so the kernel releases it when its process dies however it dies: a ``.lock`` left by a killed run
blocks nothing. The file keeps the holder's pid, for the message only. Under ``torchrun`` only rank 0 takes it (the
other ranks write nothing the lock protects).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import NeuroLMError

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}
"""Directories this process holds, with their nesting depth: a stage that locks its ``--out`` may call code that
locks it again (a second ``flock`` from the same process on a new descriptor would refuse itself)."""


@contextmanager
def directory_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``directory/.lock`` (creating the directory) for the ``with`` block, or raise :class:`NeuroLMError`
    naming the pid of the process that holds it."""
    directory = Path(directory)
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise NeuroLMError(f"{directory} is in use by another neurolm process (pid {holder}); wait for it to "
                           "finish, or write to another directory") from None
    except OSError as exc:  # e.g. a file system without flock support
        os.close(fd)
        raise NeuroLMError(f"{directory / LOCK_FILE}: cannot lock ({exc.strerror})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the flock
