"""Cosine vector quantiser with an EMA codebook: the discrete "neural tokens" of NeuroLM.

Inputs and codes live on the unit sphere, so the nearest code is the one with the largest dot product. The codebook
is not learned by gradient descent: every training step moves each used code towards the l2-normalised mean of the
inputs assigned to it (EMA, decay 0.99), as in the reference (BEiT v2's ``NormEMAVectorQuantizer``). Buffer names
follow the reference so its ``VQ.pt`` loads 1:1.

Differences from the reference, all for our own training runs:
- padded tokens are excluded from every statistic (k-means, EMA, usage counts, commitment loss);
- statistics are accumulated with ``bincount``/``index_add`` instead of a ``(tokens × codes)`` one-hot matrix;
- the usage EMA ``cluster_size`` is updated in training only (the reference also updates it in eval mode), and it
  starts from the k-means cluster sizes so dead-code detection has a meaningful baseline from step one;
- optional dead-code re-seeding (``dead_code_threshold``; the reference has none);
- under DDP the k-means codebook and the re-seeded codes are broadcast from rank 0, so ranks never diverge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def l2norm(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(*tensors: torch.Tensor) -> None:
    """Sum per-step statistics over ranks so every replica applies the same codebook update."""
    if _distributed():
        for t in tensors:
            dist.all_reduce(t)


def _broadcast(*tensors: torch.Tensor) -> None:
    """Take rank 0's randomly chosen vectors everywhere (k-means seeds and re-seeded codes come from local data)."""
    if _distributed():
        for t in tensors:
            dist.broadcast(t, src=0)


def _sample_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` random rows of ``x``: without replacement when there are enough, else with."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), device=x.device)]


def kmeans(x: torch.Tensor, n_clusters: int, n_iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means of unit vectors ``x (M, D)``: returns unit centroids ``(K, D)`` and cluster sizes ``(K,)``.

    Centroids start at random inputs; an empty cluster keeps its previous centroid.
    """
    means = _sample_rows(x, n_clusters)
    counts = torch.zeros(n_clusters, device=x.device, dtype=x.dtype)
    for _ in range(n_iters):
        assign = (x @ means.t()).argmax(dim=-1)
        counts = torch.bincount(assign, minlength=n_clusters).to(x.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, x)
        means = torch.where(counts[:, None] > 0, l2norm(sums), means)
    return means, counts


class EmbeddingEMA(nn.Module):
    """The codebook: unit-norm code vectors (a buffer: never touched by the optimiser).

    The reference's update rule works on ``weight`` directly (as ours does); it writes ``cluster_size`` (the k-means
    cluster sizes) once at init and never writes ``embed_avg``. Both are kept only so its checkpoints load strictly.
    """

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        weight = l2norm(torch.randn(num_codes, dim))
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_avg", weight.clone())
        self.register_buffer("initted", torch.zeros(1))  # float (1,) as in the reference checkpoint


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., D) straight-through code vectors: forward = code, backward = identity to input
    loss: torch.Tensor  # () commitment loss over real tokens
    indices: torch.Tensor  # (...) long code ids, -1 on padding
    counts: torch.Tensor  # (K,) long: how many real tokens of this (local) batch chose each code


class NormEMAVectorQuantizer(nn.Module):
    """Nearest unit code by cosine similarity, EMA codebook, k-means init, straight-through gradients.

    ``dead_code_threshold``: a code whose EMA usage (``cluster_size``) falls below this fraction of the average
    code's EMA usage is re-seeded with a random real input of the current batch (distinct inputs; at most as many
    codes per step as there are inputs) and given average usage, i.e. a code is replaced after roughly
    ``log(threshold) / log(decay)`` steps without use (~460 steps at 0.01 and 0.99). Relative to the mean so it means
    the same thing whatever the batch size. Codes that k-means left empty (e.g. a codebook larger than the first
    batch) start with zero usage and are re-seeded from the next batches. 0 disables it (reference behaviour).
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 1.0, decay: float = 0.99, eps: float = 1e-5,
                 kmeans_iters: int = 10, dead_code_threshold: float = 0.0) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.decay = decay
        self.eps = eps  # guards the l2-normalisation of EMA averages
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.embedding = EmbeddingEMA(num_codes, dim)
        self.register_buffer("cluster_size", torch.zeros(num_codes))  # EMA of per-step usage counts (all ranks)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def lookup(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Code ids of ``z (..., D)`` without touching any state; -1 where ``mask`` is False."""
        with torch.autocast(z.device.type, enabled=False):  # bf16 similarities would flip near-ties
            idx = (l2norm(z.float()) @ self.codebook.t()).argmax(dim=-1)
        return idx if mask is None else idx.masked_fill(~mask, -1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantise ``z (..., D)``; ``mask (...)`` marks real tokens. In training mode also updates the codebook."""
        with torch.autocast(z.device.type, enabled=False):  # codebook statistics and distances in float32
            return self._quantize(z.float(), mask)

    def _quantize(self, z: torch.Tensor, mask: torch.Tensor | None) -> QuantizerOutput:
        z = l2norm(z)
        if mask is None:
            mask = torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
        real = z[mask]  # (M, D) the only rows any statistic sees
        if self.training and not bool(self.embedding.initted):
            self._kmeans_init(real)
        idx = (z @ self.codebook.t()).argmax(dim=-1)
        z_q = F.embedding(idx, self.codebook)
        real_idx = idx[mask]
        counts = torch.bincount(real_idx, minlength=self.num_codes)
        if self.training:
            self._ema_update(real, real_idx, counts)
        m = mask[..., None].to(z.dtype)
        n_real = (m.sum() * self.dim).clamp_min(1.0)
        loss = self.beta * ((z_q.detach() - z).square() * m).sum() / n_real
        z_q = z + (z_q - z).detach()
        return QuantizerOutput(z_q, loss, idx.masked_fill(~mask, -1), counts)

    @torch.no_grad()
    def _kmeans_init(self, real: torch.Tensor) -> None:
        means, counts = kmeans(real, self.num_codes, self.kmeans_iters)
        _broadcast(means, counts)
        self.embedding.weight.copy_(means)
        self.embedding.cluster_size.copy_(counts)
        self.cluster_size.copy_(counts)
        self.embedding.initted.fill_(1.0)

    @torch.no_grad()
    def _ema_update(self, real: torch.Tensor, real_idx: torch.Tensor, counts: torch.Tensor) -> None:
        bins = counts.to(real.dtype)
        sums = torch.zeros(self.num_codes, self.dim, device=real.device, dtype=real.dtype).index_add_(0, real_idx, real)
        _all_reduce(bins, sums)
        self.cluster_size.mul_(self.decay).add_(bins, alpha=1 - self.decay)
        means = l2norm(sums / bins.clamp_min(1.0)[:, None], self.eps)
        moved = l2norm(self.decay * self.codebook + (1 - self.decay) * means, self.eps)
        self.codebook.copy_(torch.where(bins[:, None] > 0, moved, self.codebook))  # unused codes stay exactly
        if self.dead_code_threshold > 0:
            self._reseed_dead_codes(real)

    def _reseed_dead_codes(self, real: torch.Tensor) -> None:
        mean_usage = self.cluster_size.mean()
        dead = (self.cluster_size < self.dead_code_threshold * mean_usage).nonzero().squeeze(1)
        if dead.numel() == 0:  # identical on every rank: cluster_size is all-reduced
            return
        # At most one code per current input (fewest on any rank), so no two codes are re-seeded identically;
        # the rest wait for later batches.
        available = torch.tensor([real.shape[0]], device=real.device)
        if _distributed():
            dist.all_reduce(available, op=dist.ReduceOp.MIN)
        dead = dead[: int(available)]
        if dead.numel() == 0:
            return
        seeds = _sample_rows(real, dead.numel())
        _broadcast(seeds)
        self.codebook[dead] = seeds
        self.cluster_size[dead] = mean_usage


def code_usage(counts: torch.Tensor) -> tuple[float, float]:
    """Codebook utilisation (fraction of codes used at least once) and perplexity ``exp(H(p))`` of per-code counts."""
    counts = counts.double()
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean()), float(entropy.exp())
