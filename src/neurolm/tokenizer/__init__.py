"""The text-aligned neural tokenizer: EEG patches → encoder features and discrete neural tokens."""

from .config import TokenizerConfig
from .encoder import NeuralTransformer, TemporalPatchEmbed, TokenizerEncoder, masked_group_norm
from .model import GradReverse, NeuralTokenizer, alignment_alpha, masked_mse, spectral_targets
from .quantizer import NormEMAVectorQuantizer, QuantizerOutput, code_usage, kmeans

__all__ = [
    "GradReverse",
    "NeuralTokenizer",
    "NeuralTransformer",
    "NormEMAVectorQuantizer",
    "QuantizerOutput",
    "TemporalPatchEmbed",
    "TokenizerConfig",
    "TokenizerEncoder",
    "alignment_alpha",
    "code_usage",
    "kmeans",
    "masked_group_norm",
    "masked_mse",
    "spectral_targets",
]
