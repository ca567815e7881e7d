"""``neurolm tokenize``: neural tokens of a prepared store, or of any EEG file MNE reads (preprocessed on the fly).

A file is read like an unlabeled pretraining recording: every 10-20 vocabulary channel, the paper's filters at the
given mains, chunks of ``min(64, 1024 // C)`` seconds. The ``.npz`` holds, per window, the codes in the time-major
token layout (``codes``: windows × max tokens, -1 on padding) with their channel indices and seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..data.batch import REF_PRETRAIN_TOKENS, collate_windows, reference_padding
from ..data.preprocess import PreprocessConfig
from ..data.readers.base import Recording
from ..data.readers.pretrain import Pretrain
from ..data.store import MANIFEST, WindowStore
from ..data.windows import process_recording
from ..errors import NeuroLMError
from ..train.distributed import resolve_device
from .model import NeuralTokenizer


def windows_of(source: Path, mains: float) -> tuple[list[dict], list[str]]:
    """Store items (every split) or the preprocessed chunks of one EEG file, with the split name of each."""
    if (source / MANIFEST).is_file():
        store = WindowStore(source)
        items, splits = [], []
        for split in store.splits:
            part = store.split(split)
            items += [part[i] for i in range(len(part))]
            splits += [split] * len(part)
        return items, splits
    if not source.is_file():
        raise NeuroLMError(f"{source}: neither a window store nor an EEG file")
    arrays = process_recording(Pretrain(), Recording(source, source.stem), PreprocessConfig(mains=mains))
    items = [{"signal": s, "chans": arrays["chans"].astype(np.int64), "label": -1} for s in arrays["signals"]]
    return items, [""] * len(items)


@torch.no_grad()
def tokenize(tokenizer: NeuralTokenizer, source: str | Path, *, mains: float = 60.0, batch_size: int = 32) -> dict:
    """Codes, channels, seconds, labels and splits of every window of ``source`` (see the module docstring)."""
    items, splits = windows_of(Path(source), mains)
    if not items:
        raise NeuroLMError(f"{source}: no window to tokenize")
    device = next(tokenizer.parameters()).device
    n_max = max(it["signal"].shape[0] * (it["signal"].shape[1] // 200) for it in items)
    n_pad = max(n_max, reference_padding(tokenizer.config.norm_over_padding, REF_PRETRAIN_TOKENS) or 0)
    codes = np.full((len(items), n_max), -1, dtype=np.int32)
    chans, times = np.zeros_like(codes), np.zeros_like(codes)
    for a in range(0, len(items), batch_size):
        batch = collate_windows(items[a : a + batch_size], max_tokens=n_pad)
        ids = tokenizer.tokenize(batch.to(device)).cpu().numpy()[:, :n_max]
        codes[a : a + len(ids)] = ids
        chans[a : a + len(ids)] = batch.chans.numpy()[:, :n_max]
        times[a : a + len(ids)] = batch.times.numpy()[:, :n_max]
    return {"codes": codes, "chans": chans, "times": times, "labels": np.array([it["label"] for it in items]),
            "splits": np.array(splits, dtype=str)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", type=Path, required=True, help="trained tokenizer directory")
    p.add_argument("input", type=Path, help="a window store, or any EEG file MNE reads")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--mains", type=float, choices=[50.0, 60.0], default=60.0, help="notch for EEG files")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N, ...")


def run(args: argparse.Namespace) -> int:
    tok = NeuralTokenizer.from_pretrained(args.tokenizer, resolve_device(args.device))
    out = tokenize(tok, args.input, mains=args.mains)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    real = out["codes"][out["codes"] >= 0]
    print(f"tokenized {len(out['codes'])} windows ({real.size} tokens, {np.unique(real).size} distinct codes) "
          f"→ {args.out}")
    return 0
