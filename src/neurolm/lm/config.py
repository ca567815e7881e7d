"""The NeuroLM's config (:class:`NeuroLMConfig`), saved as ``config.json`` beside its weights: the LM's
:class:`~neurolm.lm.gpt.GPTConfig` and the frozen tokenizer's :class:`~neurolm.tokenizer.config.TokenizerConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import NeuroLMError
from ..text import INSTRUCTION_START, PADDED_VOCAB
from ..tokenizer import TokenizerConfig
from .gpt import GPTConfig


@dataclass
class NeuroLMConfig:
    """Everything needed to rebuild a NeuroLM; saved as ``config.json`` beside its weights."""

    gpt: GPTConfig = field(default_factory=GPTConfig)
    """The language model; ``n_outputs`` must be ``50304 + tokenizer.codebook_size``."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The frozen neural tokenizer (its encoder gives the EEG inputs, its quantizer the EEG targets; the model keeps
    only these two parts)."""
    ref_text_positions: bool = False
    """Text positions start after the batch-wide last second (REF) instead of each sample's own."""
    spectral_input: bool = False
    """Add each EEG token's standardised log band power (:mod:`neurolm.lm.spectral`) to its input (not in REF)."""
    window_summary: bool = False
    """Add a learned linear map of the window's per-channel band power to every text token after the EEG
    (:meth:`~neurolm.lm.model.NeuroLM.window_summary`; not in REF)."""

    def __post_init__(self) -> None:
        if self.gpt.n_outputs != PADDED_VOCAB + self.tokenizer.codebook_size:
            raise NeuroLMError(
                f"NeuroLM config: lm_head has {self.gpt.n_outputs} outputs, expected {PADDED_VOCAB} text + "
                f"{self.tokenizer.codebook_size} codes = {PADDED_VOCAB + self.tokenizer.codebook_size}"
            )
        if self.gpt.vocab_size <= INSTRUCTION_START:
            raise NeuroLMError(f"NeuroLM config: wte needs a row for the instruction marker {INSTRUCTION_START}")
        if self.gpt.block_size <= self.tokenizer.max_time:
            raise NeuroLMError(f"NeuroLM config: block_size {self.gpt.block_size} leaves no position for text after "
                               f"{self.tokenizer.max_time} s of EEG")

    def to_dict(self) -> dict[str, Any]:
        return {"gpt": asdict(self.gpt), "tokenizer": asdict(self.tokenizer),
                "ref_text_positions": self.ref_text_positions, "spectral_input": self.spectral_input,
                "window_summary": self.window_summary}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NeuroLMConfig:
        try:
            return cls(GPTConfig(**values["gpt"]), TokenizerConfig.from_dict(values["tokenizer"]),
                       bool(values.get("ref_text_positions", False)), bool(values.get("spectral_input", False)),
                       bool(values.get("window_summary", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise NeuroLMError(f"NeuroLM config: invalid ({exc})") from exc
