"""The task registry: one declarative entry per instruction-tuning task, with the paper's exact text.

A task ties a prepared dataset (its store's ``dataset`` name and label order) to the instruction the model reads and
the answer words it must produce. Adding a seventh task is one more :class:`Task` in :data:`TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.readers import READERS


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
        return READERS[self.name].channels

    @property
    def window_s(self) -> float:
        return READERS[self.name].window_s

    @property
    def classes(self) -> tuple[str, ...]:
        return READERS[self.name].classes

    def text(self, label: int) -> str:
        """The full training text for a label: instruction, answer, end of text."""
        return f"{self.instruction}{self.answers[label]} <|endoftext|>"


def _options(*names: str) -> tuple[str, str]:
    letters = "ABCDEF"
    return " Options: " + " ".join(f"({letters[i]}) {n}." for i, n in enumerate(names)), letters[: len(names)]


_TUEV_OPTS, _TUEV_LETTERS = _options("spike and slow wave", "generalized periodic epileptiform discharge",
                                     "periodic lateralized epileptiform discharge", "eye movement", "artifact",
                                     "background")
_HMC_OPTS, _HMC_LETTERS = _options("Wake", "NREM-1", "NREM-2", "NREM-3", "REM")
_TUSL_OPTS, _TUSL_LETTERS = _options("background", "seizure", "slowing")

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("tuab", "Question: Is this EEG segment abnormal? Answer:", (" No", " Yes")),
        Task("tuev", f"Question: Which event type does this EEG segment belong to?{_TUEV_OPTS} Answer:",
             tuple(f" ({x})" for x in _TUEV_LETTERS), ref_open_paren=True),
        Task("seed", "Question: Which emotion type does this EEG segment belong to? Answer:",
             (" Positive", " Neutral", " Negative")),
        Task("hmc", f"Question: Which sleep type does this EEG segment belong to?{_HMC_OPTS} Answer:",
             tuple(f" ({x})" for x in _HMC_LETTERS), ref_open_paren=True),
        Task("workload", "Question: Is this EEG segment of high workload? Answer:", (" No", " Yes")),
        Task("tusl", f"Question: Which type does this EEG segment belong to?{_TUSL_OPTS} Answer:",
             tuple(f" ({x})" for x in _TUSL_LETTERS)),
    )
}
