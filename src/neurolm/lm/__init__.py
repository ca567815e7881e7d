"""The NeuroLM language model: GPT-2 backbone, stair-step attention masks, EEG + text model."""

from .gpt import GPT, GPTConfig, KVCache
from .mask import build_attention_mask, decode_mask
from .model import IGNORE, NeuroLM, NeuroLMConfig, eeg_targets

__all__ = [
    "GPT",
    "GPTConfig",
    "IGNORE",
    "KVCache",
    "NeuroLM",
    "NeuroLMConfig",
    "build_attention_mask",
    "decode_mask",
    "eeg_targets",
]
