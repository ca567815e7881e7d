"""Few-shot tuning data: ``neurolm instruct --shots K`` tunes on K labelled windows per class of each task.

The K windows of a class are drawn from as many subjects as possible: the subjects holding the class are visited in
a seeded order, one window from each in turn (a seeded draw within the subject), until K are taken or the class is
exhausted; ``K`` at least the class's windows takes them all. The band-power baseline of the few-shot benchmark
(``benchmarks/bench_fewshot.py``) is fitted on exactly the same windows.
"""

from __future__ import annotations

import numpy as np

from ..errors import NeuroLMError


def shot_indices(labels: np.ndarray, subjects: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of ``shots`` windows per class (module notes) among windows with these labels and subjects."""
    if shots < 1:
        raise NeuroLMError(f"--shots {shots}: needs at least 1 window per class (K = 0 is the tuned model as it is)")
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        names = np.unique(subjects[rows])
        queues = [list(rng.permutation(rows[subjects[rows] == s])) for s in names[rng.permutation(len(names))]]
        taken = []
        while len(taken) < shots and any(queues):
            for q in queues:
                if q and len(taken) < shots:
                    taken.append(q.pop())
        picked += taken
    return np.sort(np.array(picked, dtype=np.int64))
