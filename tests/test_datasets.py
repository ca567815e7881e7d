"""The dataset registry is the one record per dataset: readers, tasks, the synthetic corpus, prepare and the demo
take their facts and lists from it, and the split rules are implemented once."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurolm.data.datasets import DATASETS, TASK_NAMES, SplitRule, get_dataset, in_order_blocks
from neurolm.data.readers import READERS
from neurolm.data.readers.base import Recording
from neurolm.errors import NeuroLMError


def test_every_reader_takes_its_facts_from_its_record():
    assert list(READERS) == list(DATASETS)
    for name, reader in READERS.items():
        d = DATASETS[name]
        assert (reader.channels, reader.classes, reader.mains, reader.window_s, reader.stride_s, reader.split) == (
            d.channels, d.classes, d.mains, d.window_s, d.stride_s, d.split)


def test_tasks_synth_and_cli_lists_derive_from_the_registry():
    from neurolm.cli import main
    from neurolm.data import synth
    from neurolm.demo import TASK_NAMES as DEMO_TASKS
    from neurolm.instruct.tasks import TASKS

    assert TASK_NAMES == ("tuab", "tuev", "seed", "hmc", "workload", "tusl") == tuple(TASKS) == DEMO_TASKS
    for name, task in TASKS.items():
        rec = DATASETS[name]
        assert (task.instruction, task.answers, task.classes, task.channels) == (
            rec.instruction.text, rec.instruction.answers, rec.classes, rec.channels)
        assert len(task.answers) == len(rec.classes)
    assert synth.ALL == tuple(DATASETS)
    assert synth.DEFAULT_SUBJECTS == {n: d.synth_subjects for n, d in DATASETS.items()}
    assert set(synth.RECORDINGS) == set(DATASETS)
    with pytest.raises(SystemExit):
        main(["prepare", "nope", "raw", "out"])  # argparse's choices are the registry's names
    with pytest.raises(NeuroLMError, match="unknown dataset 'nope'; choose one of tuab, tuev"):
        get_dataset("nope")


def _recordings(n_subjects: int, per_subject: int = 1) -> list[Recording]:
    return [Recording(Path(f"s{s:03d}_{k}.edf"), f"s{s:03d}") for s in range(n_subjects) for k in range(per_subject)]


def test_split_rules():
    recs = _recordings(151)
    hmc = DATASETS["hmc"].split.assign(recs, seed=0)
    assert [hmc[r.path] for r in recs] == ["train"] * 100 + ["val"] * 25 + ["test"] * 26  # the paper's counts
    workload = DATASETS["workload"].split.assign(_recordings(36, per_subject=2), seed=0)
    assert sum(s == "test" for s in workload.values()) == 10  # 5 subjects, both of their files
    by_subject = {}
    for path, split in workload.items():
        by_subject.setdefault(path.name.split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in by_subject.values())
    tuab = DATASETS["tuab"].split.assign(recs, seed=1)
    assert sum(s == "val" for s in tuab.values()) == round(0.2 * 151)
    assert tuab == DATASETS["tuab"].split.assign(list(reversed(recs)), seed=1)  # not the listing order
    assert DATASETS["seed"].split.assign(recs, seed=0) == {}  # SEED splits inside its trials
    assert in_order_blocks(3, (("train", 0.9), ("val", 0.05), ("test", 0.05))) == ["train", "val", "test"]
    with pytest.raises(NeuroLMError, match="unknown kind"):
        SplitRule("random")
