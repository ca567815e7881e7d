"""The frozen encoder's outputs of each training window, kept so that later epochs skip the encoder.

Used by instruction tuning (:mod:`neurolm.instruct.train`); it lives beside the model because it caches exactly what
:meth:`NeuroLM.embed_eeg <neurolm.lm.model.NeuroLM.embed_eeg>` accepts as ``encoded``.
"""

from __future__ import annotations

import torch

from ..data.batch import EEGBatch
from ..tokenizer import TokenizerEncoder


class EncoderCache:
    """The frozen encoder's features and codes of each training window, kept after the window's first use.

    The tokenizer never changes while the LM trains and every window comes back once per epoch, so from the second
    epoch on a step skips the encoder (more than half of a tiny instruction-tuning step on CPU). Windows are kept
    until ``budget_mb`` is used (on the device they were computed on); later ones are encoded every time. Exact only
    when a window's features do not depend on its batch-mates' padding (``norm_over_padding=False``, all our
    tokenizers); with REF's setting the cache passes every batch to the encoder.
    """

    def __init__(self, budget_mb: float = 1024.0) -> None:
        self.budget = budget_mb * 2**20
        self.used = 0
        self.entries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def missing(self, tokenizer: TokenizerEncoder, keys: list[int]) -> list[int]:
        """The windows (indices into ``keys``) that :meth:`encode` passes to the encoder."""
        if tokenizer.config.norm_over_padding:
            return list(range(len(keys)))
        return [i for i, k in enumerate(keys) if int(k) not in self.entries]

    @torch.no_grad()
    def encode(self, tokenizer: TokenizerEncoder, batch: EEGBatch, keys: list[int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, N, d), codes (B, N))`` of ``batch`` as :meth:`TokenizerEncoder.encode` gives them;
        ``keys[i]`` identifies window ``i`` (its index in the training set)."""
        if tokenizer.config.norm_over_padding:
            return tokenizer.encode(batch)
        missing = self.missing(tokenizer, keys)
        fresh = {}
        if missing:
            rows = torch.tensor(missing, device=batch.mask.device)
            feats, codes = tokenizer.encode(EEGBatch(*(t[rows] for t in batch.__dict__.values())))
            for j, i in enumerate(missing):
                n = int(batch.mask[i].sum())
                entry = (feats[j, :n].clone(), codes[j, :n].clone())
                fresh[i] = entry
                size = entry[0].numel() * entry[0].element_size() + entry[1].numel() * entry[1].element_size()
                if self.used + size <= self.budget:
                    self.entries[int(keys[i])] = entry
                    self.used += size
        first = fresh[missing[0]] if missing else self.entries[int(keys[0])]
        b, n = batch.mask.shape
        features = first[0].new_zeros(b, n, first[0].shape[-1])
        codes = torch.full((b, n), -1, dtype=first[1].dtype, device=first[1].device)
        for i, k in enumerate(keys):
            f, c = fresh[i] if i in fresh else self.entries[int(k)]
            features[i, : f.shape[0]] = f
            codes[i, : c.shape[0]] = c
        return features, codes
