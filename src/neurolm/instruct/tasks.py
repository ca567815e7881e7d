"""The task registry: one instruction-tuning task per dataset record that has one, with the paper's exact text.

A task ties a prepared dataset (its store's ``dataset`` name and label order) to the instruction the model reads and
the answer words it must produce. The text lives in the dataset's record (:data:`neurolm.data.datasets.DATASETS`):
adding a seventh task is an ``instruction`` there. A task file's task (:mod:`neurolm.data.taskfile`) is found the
same way once a store or model directory that records it has been opened (:func:`find_task`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.datasets import DATASETS
from ..data.taskfile import dataset_record, known_task


@dataclass(frozen=True)
class Task:
    name: str
    """Task key (also the store's dataset name, and the key in metrics.json)."""
    instruction: str
    """Prompt text after the instruction-start token, ending in ``Answer:``."""
    answers: tuple[str, ...]
    """Answer text by label index, with its leading space, exactly as the paper writes it."""
    ref_open_paren: bool = False
    """Whether the reference trains the `` (`` that opens this task's lettered answer (TUEV, HMC; not TUSL). We
    train it for every lettered task unless the reference's mask is asked for (:func:`~neurolm.instruct.data.
    encode_task`): without it a tiny model may open a TUSL answer with another task's word."""

    @property
    def n_classes(self) -> int:
        return len(self.answers)

    @property
    def binary(self) -> bool:
        return len(self.answers) == 2

    @property
    def chance(self) -> float:
        """Balanced accuracy of a constant or random answer."""
        return 1.0 / len(self.answers)

    @property
    def channels(self) -> tuple[str, ...]:
        return dataset_record(self.name).channels

    @property
    def window_s(self) -> float:
        return dataset_record(self.name).window_s

    @property
    def classes(self) -> tuple[str, ...]:
        return dataset_record(self.name).classes

    def text(self, label: int) -> str:
        """The full training text for a label: instruction, answer, end of text."""
        return f"{self.instruction}{self.answers[label]} <|endoftext|>"


TASKS: dict[str, Task] = {
    name: Task(name, d.instruction.text, d.instruction.answers, d.instruction.ref_open_paren)
    for name, d in DATASETS.items() if d.instruction is not None
}


def find_task(name: str) -> Task | None:
    """The built-in task, or the task of a task file remembered in this process (None: neither)."""
    if name in TASKS:
        return TASKS[name]
    spec = known_task(name)
    if spec is None:
        return None
    ins = spec.dataset.instruction
    return Task(name, ins.text, ins.answers, ins.ref_open_paren)
