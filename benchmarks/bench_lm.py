"""NeuroLM pretraining overhead: the EEG step versus a bare GPT step on the same tokens, and the B/L/XL sizes.

    python benchmarks/bench_lm.py [--size tiny] [--batch 4] [--channels 16] [--seconds 16] [--reps 5]
    python benchmarks/bench_lm.py --head [--size B] [--tokens 2048] [--chunks 256 512 1024] [--reps 7]

Definitions (same GPT, same 50304 + codebook head, same batch × tokens):
- **EEG step**: ``NeuroLM.eeg_forward(batch)`` + backward = frozen tokenizer encoder (one pass, features and codes),
  projection, channel/second embeddings, stair-step mask built on the device, GPT, next-second targets, head and
  cross-entropy on the tokens that have a target.
- **bare step**: ``wte[ids] + wpe`` → the same GPT with a plain causal mask (SDPA's ``is_causal``) → head on every
  token → cross-entropy → backward: what a text-only GPT pretraining step on that many tokens costs.
- **overhead ratio** = EEG step time / bare step time (issue target ≤ 1.15 on CPU). The FLOP ratio printed beside it
  is the share that the architecture itself adds (the encoder's forward, fewer head rows); the measured ratio above
  it is implementation overhead.
Parameter counts of B/L/XL are taken on the meta device (nothing allocated); "with encoder" is the paper's count.

``--head``: the loss computation of the LM head alone (``tokens`` hidden states of the size's width → head over all
50304 + codebook outputs → cross-entropy + argmax accuracy → backward into the hidden states and the head), today's
unchunked ``F.cross_entropy(lm_head(h))`` against :func:`neurolm.lm.head.chunked_cross_entropy` per chunk size:
- **peak memory**: the most bytes of tensors alive at once that the computation allocated (a dispatch mode counts
  every storage created and freed; the head's ``.grad`` is included, the inputs are not);
- **time**: the arms alternate, one rep of each in turn, so that load from other processes hits them alike; the
  ratio chunked / plain is taken per pair and reported as its median with a bootstrap 95 % interval.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from neurolm.data.batch import EEGBatch
from neurolm.lm import NeuroLM
from neurolm.lm.gpt import GPTConfig
from neurolm.lm.head import chunked_cross_entropy
from neurolm.text import PADDED_VOCAB, TEXT_VOCAB
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

PAPER = {"B": "254M", "L": "500M", "XL": "1.7B"}


def eeg_batch(b: int, c: int, a: int) -> EEGBatch:
    g = torch.Generator().manual_seed(0)
    n = c * a
    return EEGBatch(
        patches=torch.randn(b, n, 200, generator=g) * 0.2,
        chans=torch.arange(c).repeat(a).expand(b, n).contiguous(),
        times=torch.arange(a).repeat_interleave(c).expand(b, n).contiguous(),
        mask=torch.ones(b, n, dtype=torch.bool),
        labels=torch.full((b,), -1),
        n_chans=torch.full((b,), c),
    )


def timed(fn, reps: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created under the mode and still alive, and their peak; views of ``inputs``
    (e.g. a weight's transpose) are not new memory."""

    def __init__(self, inputs: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._inputs = [t.untyped_storage() for t in inputs]  # held: a storage keeps its Python object, and its id
        self.sizes: dict[int, int] = {id(storage): 0 for storage in self._inputs}

    def _freed(self, key: int) -> None:
        self.live -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(storage := t.untyped_storage()) not in self.sizes:
                self.sizes[id(storage)] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._freed, id(storage))
        return out


def peak_bytes(fn, inputs: tuple[torch.Tensor, ...] = ()) -> int:
    with LiveBytes(inputs) as mode:
        fn()
    return mode.peak


def head_benchmark(size: str, tokens: int, chunks: list[int], reps: int) -> None:
    """Peak memory and time of the head's loss computation, unchunked and per chunk size (module notes)."""
    cfg = GPTConfig.from_preset(size, n_outputs=PADDED_VOCAB + TokenizerConfig().codebook_size)
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(cfg.n_outputs, cfg.n_embd, generator=g) * 0.02).requires_grad_()
    h = torch.randn(tokens, cfg.n_embd, generator=g).requires_grad_()
    target = torch.randint(PADDED_VOCAB, cfg.n_outputs, (tokens,), generator=g)  # EEG codes, as pretraining

    def plain() -> None:
        logits = F.linear(h, weight)
        loss = F.cross_entropy(logits, target)
        (logits.argmax(-1) == target).float().mean()
        loss.backward()

    def chunked(chunk: int):
        def run() -> None:
            chunked_cross_entropy(h, weight, None, target, chunk)[0].backward()
        return run

    arms = {"unchunked": plain, **{f"chunk {c}": chunked(c) for c in chunks}}
    print(f"head of size {size}: {tokens} tokens × {cfg.n_embd} wide → {cfg.n_outputs} outputs, "
          f"{torch.get_num_threads()} threads, {reps} alternating reps")
    peaks = {}
    for name, fn in arms.items():
        h.grad = weight.grad = None
        peaks[name] = peak_bytes(fn, (h, weight, target))
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(reps + 1):  # rep 0 warms up
        for name, fn in arms.items():
            h.grad = weight.grad = None
            t = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - t)
    base = np.array(times["unchunked"])
    rng = np.random.default_rng(0)
    for name in arms:
        ratio = np.array(times[name]) / base
        boot = np.median(rng.choice(ratio, (2000, len(ratio))), axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{name:>10}: peak {peaks[name] / 2**20:8.1f} MiB "
              f"(unchunked / this {peaks['unchunked'] / peaks[name]:5.2f}×)"
              f", time {np.median(times[name]):.3f} s median, time / unchunked {np.median(ratio):.3f} "
              f"[95 % {lo:.3f}, {hi:.3f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default=None, choices=["tiny", "B", "L", "XL"], help="default: tiny (--head: B)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--head", action="store_true", help="benchmark the LM head's loss computation (module notes)")
    ap.add_argument("--tokens", type=int, default=2048, help="--head: tokens with a target")
    ap.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024], help="--head: chunk sizes")
    args = ap.parse_args()
    if args.head:
        head_benchmark(args.size or "B", args.tokens, args.chunks, args.reps)
        return
    args.size = args.size or "tiny"

    torch.manual_seed(0)
    tok_cfg = TokenizerConfig.from_preset("tiny" if args.size == "tiny" else "base")
    lm = NeuroLM.from_tokenizer(NeuralTokenizer(tok_cfg).eval(), args.size).train()
    batch = eeg_batch(args.batch, args.channels, args.seconds)
    n = args.channels * args.seconds
    ids = torch.randint(0, TEXT_VOCAB, (args.batch, n + 1), generator=torch.Generator().manual_seed(1))

    def eeg_step() -> None:
        lm.zero_grad(set_to_none=True)
        lm.eeg_forward(batch)["loss"].backward()

    def bare_step() -> None:
        lm.zero_grad(set_to_none=True)
        h = lm.gpt(lm.gpt.embed(ids[:, :-1]))
        logits = lm.gpt.lm_head(h)
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()

    t_eeg, t_bare = timed(eeg_step, args.reps), timed(bare_step, args.reps)
    targets = (args.seconds - 1) / args.seconds  # share of EEG tokens with a next-second target
    cfg = lm.config.gpt
    head = cfg.n_embd * cfg.n_outputs
    body = 6 * (lm.flops_per_token(n, eeg=False) / 6 - head)
    flop_ratio = (body + 6 * head * targets + (lm.flops_per_token(n) - lm.flops_per_token(n, eeg=False))) / (
        body + 6 * head)
    print(f"size {args.size}, {args.batch} samples × {args.channels} channels × {args.seconds} s = {n} tokens each, "
          f"{torch.get_num_threads()} threads")
    print(f"EEG pretraining step {t_eeg * 1e3:.1f} ms, bare GPT step {t_bare * 1e3:.1f} ms → overhead ratio "
          f"{t_eeg / t_bare:.3f} (FLOP ratio {flop_ratio:.3f})")

    for size in ("B", "L", "XL"):
        with torch.device("meta"):
            model = NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig()), size)
        lm_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        encoder = sum(p.numel() for p in model.tokenizer.VQ.encoder.parameters())
        print(f"NeuroLM-{size}: {lm_params / 1e6:.1f}M trainable (GPT + EEG input), {(lm_params + encoder) / 1e6:.1f}M "
              f"with the tokenizer encoder (paper: {PAPER[size]}); head {PADDED_VOCAB} + "
              f"{model.config.tokenizer.codebook_size} outputs")


if __name__ == "__main__":
    main()
