"""The LM head's cross-entropy over chunks of tokens, without materialising the logits of all of them.

NeuroLM's head has 50304 text + codebook outputs (58,496 for the paper). ``F.cross_entropy(lm_head(h), target)``
keeps the ``(N, outputs)`` logits, their log-softmax and, in the backward, their gradient alive at once: at REF's
pretraining batch (60 × 1024 EEG tokens) ~14 GB per copy in fp32. :func:`chunked_cross_entropy` computes the same
mean loss (and the accuracy: how often the target's logit is the largest) ``chunk`` tokens at a time, so only
``chunk × outputs`` logits exist at any moment (:data:`DEFAULT_CHUNK` rows: ~120 MB at the paper's head in fp32).

Decision (where the issue asks for recomputation in the backward): each chunk's gradient with respect to its
hidden states and to the head is computed **in the forward pass, while the chunk's logits exist** (the "fused linear
cross-entropy" of Liger-Kernel), and the backward only scales it by the incoming gradient. Recomputing the logits in
the backward instead would add a fourth ``N × d × outputs`` matmul to the three of the plain head (+33 % of its
FLOPs), and the head is most of a small model's step. The price: the forward keeps ``(N, d)`` + the head's
``(outputs, d)`` gradient until the backward, the same size as the head's ``.grad`` that the backward allocates
anyway. Without grad (validation, scoring) only the loss is computed.

Under autocast the logits are computed in the autocast dtype and the softmax in fp32, as ``lm_head`` followed by
``F.cross_entropy`` does; the head's gradient is accumulated over chunks in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 512
"""Tokens per chunk: the head's logits of this many tokens exist at once (``--head-chunk``; 0: all tokens in one
chunk). Small enough that the loss computation's peak memory is several times below the unchunked head's, large
enough that it is no slower (``benchmarks/bench_lm.py --head``; the numbers are in docs/training.md)."""


class _ChunkedCrossEntropy(torch.autograd.Function):
    """``(sum of cross-entropies / counted, hits)`` of ``h @ weight.T + bias`` against ``target`` (see the module)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                chunk: int, ignore_index: int, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        wide = torch.promote_types(h.dtype, torch.float32)  # softmax and sums: fp32 at least
        counted = target != ignore_index
        denom = counted.sum().clamp_min(1).to(wide)
        loss = torch.zeros((), dtype=wide, device=h.device)
        hits = torch.zeros((), dtype=torch.long, device=h.device)
        grads = None
        if need_grad:
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros(weight.shape, dtype=wide, device=weight.device)
            grad_b = None if bias is None else torch.zeros(bias.shape, dtype=wide, device=bias.device)
            grads = grad_h, grad_w, grad_b
        step = chunk or max(1, h.shape[0])
        for s in range(0, h.shape[0], step):
            loss_c, hits_c = _chunk(h[s: s + step], weight, bias, target[s: s + step], counted[s: s + step], denom,
                                    wide, grads, s)
            loss += loss_c
            hits += hits_c
        ctx.mark_non_differentiable(hits)
        # kept on ctx, not saved for backward: the backward scales them in place and hands them over (a scaled copy
        # would hold the head's gradient twice); they are intermediates, never inputs or outputs
        ctx.grads = grads
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype
        return loss / denom, hits

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_hits: torch.Tensor | None):
        if ctx.grads is None:
            raise RuntimeError("chunked_cross_entropy: backward of a loss computed without grad, or a second "
                               "backward through it")
        grads, ctx.grads = ctx.grads, None
        grad_h, grad_w, grad_b = (None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads)
        grad_w = grad_w.to(ctx.dtypes[0])
        grad_b = None if grad_b is None else grad_b.to(ctx.dtypes[1])
        return grad_h, grad_w, grad_b, None, None, None, None


def _chunk(hc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tc: torch.Tensor, keep: torch.Tensor,
           denom: torch.Tensor, wide: torch.dtype, grads: tuple | None,
           start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and hits of one chunk; with ``grads`` adds its gradients to them (rows ``start..`` of
    the hidden states' gradient). A function, so that the chunk's logits are freed before the next chunk's exist."""
    logits = F.linear(hc, weight, bias).to(wide)
    safe = tc.masked_fill(~keep, 0)[:, None]
    picked = logits.gather(1, safe)[:, 0]
    # log-sum-exp and softmax in place: no temporary of the chunk's size (torch.logsumexp makes two)
    top = logits.amax(dim=-1, keepdim=True)
    # a hit: the target's logit is the largest (a tie counts), read off the max the softmax needs anyway: a CPU
    # argmax over 50k outputs costs many times an amax and showed up in a tiny instruction step's profile
    hits = ((picked >= top[:, 0]) & keep).sum()
    probs = logits.sub_(top).exp_()
    total = probs.sum(dim=-1, keepdim=True)
    loss = ((top + total.log())[:, 0] - picked).mul_(keep).sum()
    if grads is not None:
        grad_h, grad_w, grad_b = grads
        # d(mean CE)/d(logits) = (softmax - one_hot) / counted on counted rows, 0 elsewhere
        probs.div_(total)
        probs.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=probs.dtype))
        g = probs.mul_((keep / denom)[:, None]).to(hc.dtype)
        grad_h[start: start + hc.shape[0]] = g @ weight
        if grad_w.dtype == g.dtype:
            grad_w.addmm_(g.T, hc)
        else:
            grad_w += (g.T @ hc).to(wide)
        if grad_b is not None:
            grad_b += g.to(wide).sum(0)
    return loss, hits


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                          chunk: int = DEFAULT_CHUNK, ignore_index: int = -100
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the logits ``h @ weight.T + bias`` (``h (N, d)``, ``weight (outputs, d)``) against
    ``target (N,)`` over the targets that are not ``ignore_index``, and how often the target's logit is the largest
    (a tie counts; detached); equal to ``F.cross_entropy(F.linear(h, weight, bias), target)`` and its gradients
    (module notes). With no counted target the loss is 0 (not NaN) and the accuracy 0."""
    if chunk < 0:
        raise ValueError(f"chunk must be ≥ 0 (0: one chunk), got {chunk}")
    device = h.device.type
    if torch.is_autocast_enabled(device):  # cast here, so autograd takes the gradients back to the fp32 weights
        dtype = torch.get_autocast_dtype(device)
        h, weight = h.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias))
    with torch.autocast(device, enabled=False):
        loss, hits = _ChunkedCrossEntropy.apply(h, weight, bias, target, chunk, ignore_index, need_grad)
    counted = (target != ignore_index).sum().clamp_min(1)
    return loss, (hits / counted).detach()
