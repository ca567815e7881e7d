"""An ordered parallel map over processes: what lets ``prepare`` use every core and still write the same store.

Results come back in the order of the inputs whatever the number of workers, so a single writer can append them in
that order (the store does not depend on ``--workers``). At most ``workers × ahead`` items are in flight beyond the
one being consumed, which bounds both memory and the finished-but-unconsumed work a crash can lose.

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


def ordered_map(fn: Callable, items: Iterable, workers: int, ahead: int = 2) -> Iterator:
    """``fn(item)`` for every item, yielded in the items' order; in ``workers`` processes when that is above 1,
    in this process otherwise (so a test can patch what ``fn`` calls)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    todo, pending = iter(items), deque()
    try:
        for item in todo:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers * ahead:
                break
        while pending:
            result = pending.popleft().result()
            for item in todo:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
