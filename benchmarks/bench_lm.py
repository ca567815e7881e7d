"""NeuroLM pretraining overhead: the EEG step versus a bare GPT step on the same tokens, and the B/L/XL sizes.

    python benchmarks/bench_lm.py [--size tiny] [--batch 4] [--channels 16] [--seconds 16] [--reps 5]

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
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from neurolm.data.batch import EEGBatch
from neurolm.lm import NeuroLM
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "B", "L", "XL"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

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
