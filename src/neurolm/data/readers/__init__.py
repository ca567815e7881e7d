"""One reader per dataset behind one registry: ``READERS[name]()`` knows that dataset's native files."""

from __future__ import annotations

from ...errors import NeuroLMError
from .base import SPLITS, DatasetReader, Event, Recording, Segment
from .hmc import HMC
from .pretrain import Pretrain
from .seed import SEED
from .tuh import TUAB, TUEV, TUSL
from .workload import Workload

READERS: dict[str, type[DatasetReader]] = {
    r.name: r for r in (TUAB, TUEV, SEED, HMC, Workload, TUSL, Pretrain)
}


def get_reader(name: str) -> DatasetReader:
    """The reader of a built-in dataset, or of a task file remembered in this process (:mod:`..taskfile`)."""
    if name in READERS:
        return READERS[name]()
    from ..taskfile import known_task

    spec = known_task(name)
    if spec is None:
        raise NeuroLMError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}, or a task file's task")
    from ..labels import TaskFileReader

    return TaskFileReader(spec)


__all__ = ["READERS", "SPLITS", "DatasetReader", "Event", "Recording", "Segment", "get_reader"]
