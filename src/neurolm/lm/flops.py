"""The FLOPs a NeuroLM training step actually ran, for the log's ``mfu`` column.

nanoGPT's estimate, part by part: a matmul weight costs 2 FLOPs per token forward, 2 more for its input's gradient
(only where something below it trains) and 2 more for its own gradient (only where it trains); attention costs
4 × layers × width per token and context position forward, three times that with a backward pass. What is left out,
as nanoGPT leaves it out: lookups (token and position tables), norms, softmax, the small window summary. Counting
from the batch (its real EEG and text tokens, the windows the encoder really ran on) instead of a fixed budget keeps
the column honest when windows are short, tokens are dropped or the encoder's outputs come from a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..train.config import FLOPS_METRIC

__all__ = ["FLOPS_METRIC", "TokenCosts"]


@dataclass(frozen=True)
class TokenCosts:
    """Training FLOPs per token of each part of a NeuroLM, as it is set to train (``requires_grad``)."""

    block: float
    """The GPT blocks' weights (and the final norm), per token of a sequence."""
    attention: float
    """The GPT's attention, per token and context position."""
    eeg_input: float
    """The EEG input's weights (features to width, the spectral term), per EEG token."""
    head: float
    """The output head, per position it is applied to."""
    encoder: float
    """The frozen tokenizer encoder's forward pass, per token of a window it encodes."""
    encoder_attention: float
    """The encoder's attention, per token and window position."""

    @classmethod
    def of(cls, lm: nn.Module) -> TokenCosts:
        lookups = {id(w) for w in lm.gpt.lookup_weights()} | {id(lm.pos_embed.weight)}
        head = list(lm.gpt.lm_head.parameters())
        params = [(n, p) for n, p in lm.named_parameters() if id(p) not in lookups | {id(w) for w in head}]
        below = [p for n, p in params if not n.startswith("tokenizer.")]
        backward = any(p.requires_grad for p in below) or any(p.requires_grad for p in lm.gpt.lookup_weights())

        def cost(parts: list[nn.Parameter], through: bool) -> float:
            return float(sum(p.numel() * (6 if p.requires_grad else 4 if through else 2) for p in parts))

        blocks = [p for n, p in params if n.startswith("gpt.")]  # the native GPT's or a Hugging Face backbone's
        eeg_input = [p for n, p in params if not n.startswith(("tokenizer.", "gpt.", "summary."))]
        enc = lm.tokenizer.VQ.encoder
        encoder = [p for n, p in enc.named_parameters() if not n.endswith(("pos_embed.weight", "time_embed.weight"))]
        cfg, tok = lm.config.gpt, lm.config.tokenizer
        return cls(block=cost(blocks, backward), attention=float((12 if backward else 4) * cfg.n_layer * cfg.n_embd),
                   eeg_input=cost(eeg_input, backward), head=cost(head, backward),
                   encoder=float(2 * sum(p.numel() for p in encoder)),
                   encoder_attention=float(4 * len(enc.blocks) * tok.n_embd))

    def sequence(self, eeg: int, text: int) -> float:
        """One sequence of ``eeg`` EEG and ``text`` text tokens through the backbone (the head not included)."""
        n = eeg + text
        return n * self.block + eeg * self.eeg_input + n * n * self.attention

    def window(self, tokens: int) -> float:
        """The encoder's pass over one window of ``tokens`` tokens."""
        return tokens * self.encoder + tokens * tokens * self.encoder_attention
