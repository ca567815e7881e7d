"""The NeuroLM's config (:class:`NeuroLMConfig`), saved as ``config.json`` beside its weights: the LM's
:class:`~neurolm.lm.gpt.GPTConfig` and the frozen tokenizer's :class:`~neurolm.tokenizer.config.TokenizerConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import NeuroLMError
from ..tokenizer import TokenizerConfig
from ..text import GPT2_VOCAB, Vocab
from .backbone import BackboneConfig
from .gpt import GPTConfig
from .lora import LoraSpec
from .spectral import SUMMARY_SCALE

UNRECORDED_SUMMARY_SCALE = 0.1
"""The summary scale of a ``config.json`` with the summary but no ``summary_scale``: every model saved before the
scale was recorded was trained at 0.1."""


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
    summary_scale: float = SUMMARY_SCALE
    """The window summary's output factor (:data:`~neurolm.lm.spectral.SUMMARY_SCALE`); written only with the
    summary."""
    summary_gate: bool = False
    """The question gates the window summary per text position (:meth:`~neurolm.lm.spectral.WindowSummary.gated`);
    written only when on."""
    backbone: BackboneConfig | None = None
    """A Hugging Face backbone (:mod:`neurolm.lm.backbone`) instead of the native GPT; ``gpt`` then mirrors its shape
    (width, depth, heads, positions, table rows, outputs)."""
    lora: LoraSpec | None = None
    """LoRA adapters on the backbone's blocks (:mod:`neurolm.lm.lora`)."""

    @property
    def vocab(self) -> Vocab:
        return GPT2_VOCAB if self.backbone is None else self.backbone.vocab

    def __post_init__(self) -> None:
        offset, marker = self.vocab.code_offset, self.vocab.instruction_start
        if self.gpt.n_outputs != offset + self.tokenizer.codebook_size:
            raise NeuroLMError(
                f"NeuroLM config: lm_head has {self.gpt.n_outputs} outputs, expected {offset} text + "
                f"{self.tokenizer.codebook_size} codes = {offset + self.tokenizer.codebook_size}"
            )
        if self.gpt.vocab_size <= marker:
            raise NeuroLMError(f"NeuroLM config: wte needs a row for the instruction marker {marker}")
        if self.gpt.block_size <= self.tokenizer.max_time:
            raise NeuroLMError(f"NeuroLM config: block_size {self.gpt.block_size} leaves no position for text after "
                               f"{self.tokenizer.max_time} s of EEG")

    def to_dict(self) -> dict[str, Any]:
        values = {"gpt": asdict(self.gpt), "tokenizer": asdict(self.tokenizer),
                  "ref_text_positions": self.ref_text_positions, "spectral_input": self.spectral_input,
                  "window_summary": self.window_summary}
        # absent when unused, so native models write the same config.json as before
        if self.window_summary:
            values["summary_scale"] = self.summary_scale
            if self.summary_gate:
                values["summary_gate"] = True
        for key in ("backbone", "lora"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key).to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NeuroLMConfig:
        summary = bool(values.get("window_summary", False))
        try:
            return cls(GPTConfig(**values["gpt"]), TokenizerConfig.from_dict(values["tokenizer"]),
                       bool(values.get("ref_text_positions", False)), bool(values.get("spectral_input", False)),
                       summary, float(values.get("summary_scale", UNRECORDED_SUMMARY_SCALE if summary
                                                 else SUMMARY_SCALE)),
                       summary and bool(values.get("summary_gate", False)),
                       None if values.get("backbone") is None else BackboneConfig(**values["backbone"]),
                       None if values.get("lora") is None else LoraSpec(**values["lora"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise NeuroLMError(f"NeuroLM config: invalid ({exc})") from exc
