"""EEG windows as model input: the time-major token layout shared by the tokenizer and the LLM.

A window ``(C, T)`` at 200 Hz becomes ``A = T // 200`` seconds × ``C`` channels = ``A*C`` tokens of 200 samples,
token ``k = a*C + c`` (all channels of second 0, then of second 1, ...). Batches are right-padded to a common token
count; padded tokens carry channel ``PAD_INDEX``, time 0 and ``mask = False``.

How far to pad (:func:`reference_padding`): with our tokenizers (GroupNorm statistics over real tokens) padding
changes nothing but the cost, so a batch pads to its longest window. With the reference's switch
(``norm_over_padding=True``, set when loading the authors' checkpoints) the statistics include the padding, so a
window's features depend on how much padding follows it; every sample is then padded to the reference's fixed length
of the stage (:data:`REF_PRETRAIN_TOKENS` for tokenizer training, tokenization and pretraining,
:data:`REF_INSTRUCT_TOKENS` for instruction tuning, evaluation and ``ask``), exactly as the reference's loaders do,
so outputs never depend on batch-mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .channels import PAD_INDEX
from .store import PATCH


REF_PRETRAIN_TOKENS = 1024
"""Tokens the reference pads every sample to in tokenizer training and pretraining."""
REF_INSTRUCT_TOKENS = 276
"""Tokens the reference pads every sample to in instruction tuning and evaluation (its ``eeg_max_len``)."""


def reference_padding(norm_over_padding: bool, reference_tokens: int) -> int | None:
    """``max_tokens`` for :func:`collate_windows` in a stage whose reference length is ``reference_tokens``: that
    length under the reference's GroupNorm-over-padding switch, else None (the batch's longest window)."""
    return reference_tokens if norm_over_padding else None


@dataclass
class EEGBatch:
    """Padded token tensors of a batch of windows."""

    patches: torch.Tensor  # (B, N, 200) float: signal in µV/100
    chans: torch.Tensor  # (B, N) long: channel vocabulary index, PAD_INDEX on padding
    times: torch.Tensor  # (B, N) long: second of the token within its window, 0 on padding
    mask: torch.Tensor  # (B, N) bool: True on real tokens
    labels: torch.Tensor  # (B,) long: window label, -1 when unlabeled
    n_chans: torch.Tensor  # (B,) long: channels of each window (C), so targets can be shifted by one second

    def to(self, device: torch.device | str) -> EEGBatch:
        return EEGBatch(*(t.to(device, non_blocking=True) for t in self.__dict__.values()))


def window_to_tokens(signal: np.ndarray, chan_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C, T)`` window → ``(A*C, 200)`` patches, channel indices and times in time-major order."""
    n_chans, n_times = signal.shape
    seconds = n_times // PATCH
    patches = signal[:, : seconds * PATCH].reshape(n_chans, seconds, PATCH).transpose(1, 0, 2)
    patches = patches.reshape(seconds * n_chans, PATCH)
    chans = np.tile(np.asarray(chan_idx, dtype=np.int64), seconds)
    times = np.repeat(np.arange(seconds, dtype=np.int64), n_chans)
    return patches, chans, times


def collate_windows(items: list[dict], max_tokens: int | None = None) -> EEGBatch:
    """Collate store items (``{"signal": (C,T), "chans": (C,), "label": int}``) into an :class:`EEGBatch`.

    ``max_tokens`` pads every batch to a fixed length (the reference pads to 1024 / 276); a window longer than it is
    an error rather than a silent crop, because cropping would drop whole seconds of some channels only.
    """
    toks = [window_to_tokens(np.asarray(it["signal"], dtype=np.float32), it["chans"]) for it in items]
    longest = max(p.shape[0] for p, _, _ in toks)
    n = max_tokens if max_tokens is not None else longest
    if longest > n:
        raise ValueError(f"a window has {longest} tokens, more than max_tokens={n}")
    b = len(items)
    patches = torch.zeros(b, n, PATCH)
    chans = torch.full((b, n), PAD_INDEX, dtype=torch.long)
    times = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, (p, c, t) in enumerate(toks):
        k = p.shape[0]
        patches[i, :k] = torch.from_numpy(p)
        chans[i, :k] = torch.from_numpy(c)
        times[i, :k] = torch.from_numpy(t)
        mask[i, :k] = True
    labels = torch.tensor([int(it.get("label", -1)) for it in items], dtype=torch.long)
    n_chans = torch.tensor([len(it["chans"]) for it in items], dtype=torch.long)
    return EEGBatch(patches, chans, times, mask, labels, n_chans)
