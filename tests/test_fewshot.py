"""Few-shot tuning: K windows per class drawn across subjects, seeded; ``instruct --shots`` trains on exactly them."""

from __future__ import annotations

import numpy as np
import pytest

from neurolm.errors import NeuroLMError
from neurolm.instruct.fewshot import shot_indices

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1])
SUBJECTS = np.array(["a", "a", "b", "b", "a", "a", "b", "b", "c", "c", "c", "c"])


def test_k_per_class_from_as_many_subjects_as_possible():
    for seed in range(5):
        picks = shot_indices(LABELS, SUBJECTS, 2, seed)
        assert len(picks) == 4 and np.bincount(LABELS[picks]).tolist() == [2, 2]
        for cls in (0, 1):  # two windows of a class come from two subjects
            assert len(set(SUBJECTS[picks][LABELS[picks] == cls])) == 2
    assert len(set(shot_indices(LABELS, SUBJECTS, 3, 0)[LABELS[shot_indices(LABELS, SUBJECTS, 3, 0)] == 0])) == 3
    assert shot_indices(LABELS, SUBJECTS, 1, 7).tolist() == shot_indices(LABELS, SUBJECTS, 1, 7).tolist()
    assert len({tuple(shot_indices(LABELS, SUBJECTS, 1, s)) for s in range(10)}) > 1  # the seed draws
    assert shot_indices(LABELS, SUBJECTS, 100, 0).tolist() == list(range(12))  # K above the class size: all
    with pytest.raises(NeuroLMError, match="--shots 0"):
        shot_indices(LABELS, SUBJECTS, 0, 0)


@pytest.mark.usefixtures("one_thread")
def test_instruct_with_shots_tunes_on_k_windows_per_class(model, tmp_path):
    from test_taskfile import builtin_store

    from neurolm.instruct.train import instruct

    model.save_pretrained(tmp_path / "lm")
    store = builtin_store(tmp_path / "workload")
    result = instruct(tmp_path / "lm", [store], tmp_path / "inst", steps=1, batch_size=2, progress=False,
                      device="cpu", shots=1)
    assert result.report["shots"] == 1 and result.report["train_windows"] == 2
