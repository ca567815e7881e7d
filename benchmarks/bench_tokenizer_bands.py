"""Which frequency bands the tokenizer's encoder features carry, per token, against an untrained encoder.

NeuroLM reads the frozen encoder's features, so a band the encoder drops is a band no later stage can use. For
every token (one channel-second) of a store's windows this fits a ridge regression from the features to the
patch's log band power (delta…gamma, relative to the window's mean, as the z-scored training targets are) on the
``train`` split and prints the R² on the ``test`` split, for the trained tokenizer and for a randomly initialised
one of the same config, and their ratio (> 1: training taught the encoder that band).

    python benchmarks/bench_tokenizer_bands.py TOKENIZER_DIR STORE [STORE ...] [--windows 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from sklearn.linear_model import Ridge

from neurolm.data.batch import collate_windows
from neurolm.data.store import WindowStore
from neurolm.data.preprocess import BANDS
from neurolm.tokenizer import NeuralTokenizer
from neurolm.train import evenly_spaced


def token_table(tok: NeuralTokenizer, store: WindowStore, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(T, d)`` and relative log band powers ``(T, 5)`` of the real tokens of ``n`` windows of a split."""
    part = store.split(split)
    picks = evenly_spaced(len(part), n)
    feats, powers = [], []
    for s in range(0, len(picks), 16):
        batch = collate_windows([part[i] for i in picks[s: s + 16]])
        f, _ = tok.encode(batch)
        spectrum = torch.fft.rfft(batch.patches.float(), dim=-1).abs().square()  # 200-sample patch: 1 Hz bins
        # whole bins inside each band: delta is 1–3 Hz, never the patch's mean (bin 0)
        bands = [spectrum[..., math.ceil(lo): math.ceil(hi)].mean(-1) for lo, hi in BANDS.values()]
        p = torch.stack(bands, -1).clamp_min(1e-12).log()
        m = batch.mask
        p = p - (p * m[..., None]).sum(1, keepdim=True) / m.sum(1)[:, None, None]
        feats.append(f[m].numpy())
        powers.append(p[m].numpy())
    return np.concatenate(feats), np.concatenate(powers)


def band_r2(tok: NeuralTokenizer, store: WindowStore, n: int) -> np.ndarray:
    x_tr, y_tr = token_table(tok, store, "train", n)
    x_te, y_te = token_table(tok, store, "test", max(1, n // 2))
    pred = Ridge(alpha=1.0).fit(x_tr, y_tr).predict(x_te)
    return 1 - ((pred - y_te) ** 2).sum(0) / ((y_te - y_te.mean(0)) ** 2).sum(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tokenizer", help="trained tokenizer directory")
    p.add_argument("stores", nargs="+", help="prepared stores with train and test splits")
    p.add_argument("--windows", type=int, default=120, help="train windows per store (test: half as many)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    trained = NeuralTokenizer.from_pretrained(args.tokenizer)
    torch.manual_seed(0)
    random = NeuralTokenizer(trained.config).eval()
    names = list(BANDS)
    print(f"{'store':10s} {'encoder':8s} " + " ".join(f"{b:>6s}" for b in names))
    for path in args.stores:
        store = WindowStore(path)
        r_trained, r_random = band_r2(trained, store, args.windows), band_r2(random, store, args.windows)
        for label, row in (("trained", r_trained), ("random", r_random)):
            print(f"{store.dataset:10s} {label:8s} " + " ".join(f"{v:6.2f}" for v in row))
        ratio = r_trained / np.maximum(r_random, 1e-3)
        print(f"{store.dataset:10s} {'ratio':8s} " + " ".join(f"{v:6.2f}" for v in ratio))


if __name__ == "__main__":
    main()
