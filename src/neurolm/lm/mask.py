"""Attention masks of NeuroLM sequences ``[EEG tokens][text tokens]``, built on the device from per-token times, and
the EEG tokens' next-second targets in the same time-major layout (:func:`eeg_targets`).

The "stair-step" mask makes EEG autoregressive over seconds, not over tokens: a token of second ``a`` sees every real
token of seconds ``<= a`` (all channels of its own second included, so the channels of a second are predicted jointly
from the same context) and nothing later. Text tokens see all real EEG tokens and are causal among themselves.
Padding (EEG or text) is never attended; a padding query attends to itself only, so no softmax row is empty (an
all-False row would give NaN in ``scaled_dot_product_attention``, and NaN would leak through gradients).

Masks are boolean, True = may attend, shaped ``(B, 1, Q, K)`` for broadcasting over heads.
"""

from __future__ import annotations

import torch

IGNORE = -100
"""Target id that cross-entropy skips."""


def build_attention_mask(
    eeg_time: torch.Tensor, eeg_mask: torch.Tensor, text_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mask ``(B, 1, N+M, N+M)`` for ``N`` EEG tokens (``eeg_time``/``eeg_mask`` ``(B, N)``) followed by ``M`` text
    tokens (``text_mask`` ``(B, M)`` True on real tokens; ``None`` = no text). ``N`` may be 0 (text only)."""
    b, n = eeg_time.shape
    m = 0 if text_mask is None else text_mask.shape[1]
    device = eeg_time.device
    eeg_mask = eeg_mask.bool()
    # EEG queries: real keys of the same or an earlier second; never text (it comes after)
    eeg_rows = eeg_mask[:, :, None] & eeg_mask[:, None, :] & (eeg_time[:, None, :] <= eeg_time[:, :, None])
    rows = [torch.cat([eeg_rows, torch.zeros(b, n, m, dtype=torch.bool, device=device)], dim=2)]
    if text_mask is not None:
        text_mask = text_mask.bool()
        causal = torch.ones(m, m, dtype=torch.bool, device=device).tril()
        to_eeg = text_mask[:, :, None] & eeg_mask[:, None, :]
        to_text = text_mask[:, :, None] & text_mask[:, None, :] & causal
        rows.append(torch.cat([to_eeg, to_text], dim=2))
    mask = torch.cat(rows, dim=1)
    # real queries already see themselves; this gives padding queries their one key
    mask |= torch.eye(n + m, dtype=torch.bool, device=device)
    return mask[:, None]


def decode_mask(key_valid: torch.Tensor, n_new: int = 1) -> torch.Tensor:
    """Mask ``(B, 1, n_new, S + n_new)`` for ``n_new`` new real tokens after ``S`` cached positions: they see the
    cached keys marked True in ``key_valid`` ``(B, S)`` and are causal among themselves (incremental decoding)."""
    b, s = key_valid.shape
    new = torch.ones(n_new, n_new, dtype=torch.bool, device=key_valid.device).tril()
    past = key_valid.bool()[:, None, :].expand(b, n_new, s)
    return torch.cat([past, new.expand(b, n_new, n_new)], dim=2)[:, None]


def eeg_targets(codes: torch.Tensor, times: torch.Tensor, chans: torch.Tensor, n_chans: torch.Tensor) -> torch.Tensor:
    """Next-second targets ``(B, N)``: token ``k = a*C + c`` → code of token ``k + C`` (channel ``c``, second
    ``a+1``), ``-100`` where that token does not exist (last second, padding). ``codes`` are -1 on padding."""
    n = codes.shape[1]
    nxt = torch.arange(n, device=codes.device)[None] + n_chans[:, None]
    inside = nxt < n
    nxt = nxt.clamp(max=n - 1)
    # the layout is time-major, so k + C is the next second of the same channel; checking it costs nothing
    same_site = (times.gather(1, nxt) == times + 1) & (chans.gather(1, nxt) == chans)
    target = codes.gather(1, nxt)
    valid = inside & same_site & (codes >= 0) & (target >= 0)
    return torch.where(valid, target, torch.full_like(target, IGNORE))
