"""How much of a task a tokenizer's frozen features allow, read out by a small classifier instead of the whole LM.

An instruction-tuned NeuroLM can only answer from what the frozen encoder's features carry. This fits a classifier
of the tiny LM's shape (features standardised → Linear + GELU, + channel and second embeddings, 2 pre-norm
transformer layers of width 64, mean over real tokens → classes) on a store's ``train`` split, picks the step with the
best ``val`` balanced accuracy and prints its ``test`` balanced accuracy beside the band-power baseline and their
ratio. A few minutes on 2 cores, against 8–10 for tokenizer → pretrain → instruct → evaluate: if this read-out does
not beat chance by the margin you want, no instruction-tuning setting will.

    python benchmarks/bench_tokenizer_readout.py TOKENIZER_DIR STORE [STORE ...] [--steps 1200] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from neurolm.data.batch import collate_windows
from neurolm.data.store import WindowStore
from neurolm.instruct.baseline import band_power_baseline
from neurolm.tokenizer import NeuralTokenizer

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]


@torch.no_grad()
def encode_split(tok: NeuralTokenizer, store: WindowStore, split: str, batch: int = 32) -> Split:
    """Features ``(W, N, d)``, channels, seconds, real-token mask of every window of a split, and its labels."""
    part = store.split(split)
    width = int(part.token_counts.max())  # one padded length for the whole split, so batches concatenate
    parts = []
    for i in range(0, len(part), batch):
        b = collate_windows([part[j] for j in range(i, min(i + batch, len(part)))], max_tokens=width)
        parts.append((tok.encode(b)[0], b.chans, b.times, b.mask))
    feats, chans, times, mask = (torch.cat(t) for t in zip(*parts))
    return feats, chans, times, mask, np.asarray(part.labels)


class ReadOut(nn.Module):
    """The tiny LM's view of a window (2 layers, width 64) with a class head instead of text."""

    def __init__(self, d_in: int, n_classes: int, mean: torch.Tensor, std: torch.Tensor, d: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.inp = nn.Sequential(nn.Linear(d_in, d), nn.GELU())
        self.chan, self.time = nn.Embedding(256, d), nn.Embedding(64, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, 0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_classes)

    def forward(self, feats, chans, times, mask) -> torch.Tensor:
        h = self.inp((feats - self.mean) / self.std) + self.chan(chans) + self.time(times)
        h = self.blocks(h, src_key_padding_mask=~mask) * mask[..., None]
        return self.head(h.sum(1) / mask.sum(1, keepdim=True))


def read_out(train: Split, val: Split, test: Split, steps: int, seed: int = 0) -> tuple[float, float, int]:
    """Best ``val`` balanced accuracy over training, the ``test`` one at that step, and the step."""
    torch.manual_seed(seed)
    real = train[0][train[3]]
    net = ReadOut(real.shape[-1], int(train[4].max()) + 1, real.mean(0), real.std(0) + 1e-6)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1)
    labels = torch.as_tensor(train[4])
    best = (-1.0, 0.0, 0)

    def score(s: Split) -> float:
        net.eval()
        with torch.no_grad():
            pred = net(*s[:4]).argmax(-1).numpy()
        net.train()
        return float(balanced_accuracy_score(s[4], pred))

    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(labels), (32,), generator=g)
        loss = F.cross_entropy(net(*(x[idx] for x in train[:4])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 and (v := score(val)) > best[0]:
            best = (v, score(test), step)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tokenizer")
    p.add_argument("stores", nargs="+")
    p.add_argument("--steps", type=int, default=1200, help="classifier steps (batch 32); val checked every 100")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = NeuralTokenizer.from_pretrained(args.tokenizer).eval()
    print(f"{'store':10s} {'chance':>6s} {'band power':>10s} {'read-out':>8s} {'ratio':>6s} {'best val':>8s} "
          f"{'step':>5s}")
    for path in args.stores:
        store = WindowStore(path)
        if not {"train", "val", "test"} <= set(store.splits):
            raise SystemExit(f"{path}: needs train, val and test splits (has {', '.join(store.splits)})")
        train, val, test = (encode_split(tok, store, s) for s in ("train", "val", "test"))
        best_val, test_ba, step = read_out(train, val, test, args.steps)
        base = band_power_baseline(store)
        print(f"{store.dataset:10s} {1 / len(store.classes):6.2f} {base:10.3f} {test_ba:8.3f} {test_ba / base:6.2f} "
              f"{best_val:8.3f} {step:5d}", flush=True)


if __name__ == "__main__":
    main()
