"""Neural-tokenizer speed: tokenization throughput (EEG channel-hours per second) for the ``tiny`` and ``base``
presets, and one training step split into encoder / quantizer / decoders / alignment (forward + backward each).

Randomly initialised models (speed does not depend on the weights); inputs are TUAB-shaped windows of random EEG
(23 channels × 10 s; one token = one channel-second). The step is cut at the part boundaries with detached
tensors, so each part's forward and backward are timed alone with synchronised timers, and the sum is compared with
an ordinary ``model(...)`` + ``backward()`` step.

    python benchmarks/bench_tokenizer.py [--presets tiny,base] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from neurolm.data.batch import EEGBatch, collate_windows
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.tokenizer.model import alignment_alpha, masked_mse, spectral_targets
from neurolm.tokenizer.train import TEXT_LENGTH

CHANNELS, SECONDS = 23, 10
# (tokenize batch, train batch) per preset: base is kept small so a CPU run stays within ~2 minutes
BATCHES = {"tiny": (16, 16), "base": (4, 1)}


def windows(n: int, seed: int) -> EEGBatch:
    rng = np.random.default_rng(seed)
    items = [{"signal": rng.normal(0, 0.2, (CHANNELS, SECONDS * 200)).astype(np.float32),
              "chans": np.arange(CHANNELS, dtype=np.int64)} for _ in range(n)]
    return collate_windows(items)


def timer(device: torch.device) -> Callable[[], float]:
    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def tokenize_rate(model: NeuralTokenizer, batch: EEGBatch, repeats: int, now: Callable[[], float]) -> float:
    """Channel-hours of EEG tokenized per second (best of ``repeats`` batches: the least disturbed by other load)."""
    model.tokenize(batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = now()
        model.tokenize(batch)
        best = min(best, now() - t0)
    return int(batch.mask.sum()) / 3600 / best


def split_step(model: NeuralTokenizer, batch: EEGBatch, text: torch.Tensor,
               now: Callable[[], float]) -> dict[str, float]:
    """Seconds of forward + backward per part of one training step (the same losses as ``NeuralTokenizer.forward``)."""
    vq, t = model.VQ, {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = now()
        out = fn()
        t[name] = t.get(name, 0.0) + now() - t0
        return out

    feats, z = timed("encoder", lambda: model._encode(batch))
    z_in = z.detach().requires_grad_()
    q = timed("quantizer", lambda: vq.quantize(z_in, batch.mask))
    zq_in = q.quantized.detach().requires_grad_()

    def decoders() -> torch.Tensor:
        freq_pred, raw_pred = model._decode(zq_in, batch)
        freq_target, raw_target = spectral_targets(batch, model.config.freq_target)
        loss = masked_mse(freq_pred, freq_target, batch.mask) + masked_mse(raw_pred, raw_target, batch.mask)
        loss.backward()
        return loss

    timed("decoders", decoders)
    timed("quantizer", lambda: torch.autograd.backward([q.quantized, q.loss], [zq_in.grad, None]))
    feats_in = feats.detach().requires_grad_()

    def alignment() -> None:
        eeg = feats_in[batch.mask]
        txt = model.wte(text).reshape(-1, feats.shape[-1])
        logits = model.domain_classifier(torch.cat([eeg, txt])).float()
        labels = torch.cat([logits.new_zeros(eeg.shape[0]), logits.new_ones(txt.shape[0])]).long()
        torch.nn.functional.cross_entropy(logits, labels).backward()

    timed("alignment", alignment)
    timed("encoder", lambda: torch.autograd.backward([z, feats], [z_in.grad, feats_in.grad]))
    return t


def full_step(model: NeuralTokenizer, batch: EEGBatch, text: torch.Tensor, now: Callable[[], float]) -> float:
    t0 = now()
    model(batch, text, alpha=alignment_alpha(0.5))["loss"].backward()
    return now() - t0


def bench(preset: str, device: torch.device, steps: int) -> None:
    torch.manual_seed(0)
    model = NeuralTokenizer(TokenizerConfig.from_preset(preset)).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    n_tok, n_train = BATCHES[preset]
    now = timer(device)
    rate = tokenize_rate(model.eval(), windows(n_tok, 0).to(device), 3, now)
    print(f"{preset:4s} ({n_params:.1f}M trainable): tokenize {rate:8.2f} channel-hours/s "
          f"({rate * 3600:,.0f} tokens/s; batch {n_tok} x {CHANNELS} ch x {SECONDS} s)")

    model.train()
    batch = windows(n_train, 1).to(device)
    text = torch.randint(0, model.config.text_vocab, (max(1, n_train // 4), TEXT_LENGTH), device=device)
    full_step(model, batch, text, now)  # warm-up; also runs the k-means codebook init
    parts: dict[str, float] = {}
    full = float("inf")
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        for k, v in split_step(model, batch, text, now).items():
            parts[k] = parts.get(k, 0.0) + v / steps
        model.zero_grad(set_to_none=True)
        full = min(full, full_step(model, batch, text, now))
    total = sum(parts.values())
    shares = "  ".join(f"{k} {v * 1e3:.0f} ms ({v / total:.0%})" for k, v in parts.items())
    tokens = int(batch.mask.sum())
    print(f"{'':4s} train step ({n_train} windows, {tokens} tokens): {shares}; sum {total * 1e3:.0f} ms vs full step "
          f"{full * 1e3:.0f} ms (ratio {total / full:.2f}) -> {tokens / 3600 / full:.3f} channel-hours/s trained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=2, help="measured training steps per preset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads; random init")
    for preset in args.presets.split(","):
        bench(preset, device, args.steps)


if __name__ == "__main__":
    main()
