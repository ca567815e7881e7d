"""An ordered parallel map over processes: what lets ``prepare`` use every core and still write the same store.

Results come back in the order of the inputs whatever the number of workers, so a single writer can append them in
that order (the store does not depend on ``--workers``). At most ``workers × ahead`` items are in flight, which
bounds both memory and the finished-but-unconsumed work a crash can lose. A worker that dies (out of memory, a
segfault in a library) costs only the item that killed it (see :func:`ordered_map`).

Workers start by ``spawn`` (a fresh interpreter: no thread or lock of the parent is copied into a child, on every
platform), so the mapped function and its items must be picklable. Workers ignore SIGINT: a Ctrl-C reaches the whole
process group, and the parent alone decides how to stop (it lets the items in progress finish and cancels the rest).
A worker also exits within a second of its parent's death, so a killed run leaves no orphan still writing (nor
holding the parent's output pipe open). ``forkserver`` would start faster but makes the server, not the run, the
workers' parent, and the server lives as long as they do.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _watch_parent(parent: int) -> None:
    while True:
        threading.Event().wait(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)


def ordered_map(fn: Callable, items: Iterable, workers: int, ahead: int = 2,
                crashed: Callable | None = None) -> Iterator:
    """``fn(item)`` for every item, yielded in the items' order; in ``workers`` processes when that is above 1,
    in this process otherwise (so a test can patch what ``fn`` calls).

    A worker that dies (killed for memory, a crash in a library) breaks the whole pool. With ``crashed``, the pool is
    restarted, the item being waited for is retried alone, and if it kills its worker again ``crashed(item)`` is
    yielded in its place; the items in flight are resubmitted. Without it, the failure is raised.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool, todo, pending = _pool(workers), iter(items), deque()  # pending: [item, future or None], in order

    def restart() -> None:
        nonlocal pool
        pool.shutdown(wait=True, cancel_futures=True)
        pool = _pool(workers)
        for entry in pending:
            entry[1] = None

    try:
        while True:
            pending.extend([item, None] for item in islice(todo, workers * ahead - len(pending)))
            if not pending:
                return
            try:
                for entry in pending:
                    entry[1] = entry[1] or pool.submit(fn, entry[0])
                result = pending[0][1].result()
            except BrokenProcessPool:
                if crashed is None:
                    raise
                restart()
                try:  # alone, so that a second death convicts it
                    result = pool.submit(fn, pending[0][0]).result()
                except BrokenProcessPool:
                    result = crashed(pending[0][0])
                    restart()
            pending.popleft()
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
