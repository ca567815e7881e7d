"""GPU checks of issue 19 item 5, prepared without a GPU: run it once on one CUDA device (< 8 minutes on an H100/H200).

    python benchmarks/gpu_check.py [--out DIR]            # on a CUDA machine
    python benchmarks/gpu_check.py --smoke                # tiny sizes on the CPU: checks that the script runs

1. **MFU in the logs**: ``neurolm pretrain`` at size B, bf16, on a synthetic pretraining corpus (``--steps`` steps,
   logged every step). The loop's ``mfu`` column divides the step's FLOPs by the time spent *inside* the optimizer
   step; on CUDA that time ends when the kernels are queued, not run, unless something syncs in it. The check sets it
   against the MFU from the wall-clock time between consecutive log rows (each row syncs on ``loss.item()``); a
   logged/wall ratio well above 1 means the logged MFU is inflated by asynchrony.
2. **Stair-step attention**: the pretraining mask (per-second causal over a padded batch, B's 12 heads × 64) through
   SDPA with a dense boolean mask against ``torch.nn.attention.flex_attention`` (compiled, block mask built from
   the same token times), forward + backward in bf16: the largest output difference and the time of each.
3. **Chunked head on the device**: the loss computation of B's head at REF's batch (60 × 1024 EEG tokens by default)
   unchunked and chunked (:func:`neurolm.lm.head.chunked_cross_entropy`): ``torch.cuda.max_memory_allocated`` and
   time.

Every timing is the median of ``--reps`` synchronised repetitions after a warm-up. Prints one line per result and
writes them to ``OUT/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from neurolm.data.prepare import prepare_dataset
from neurolm.data.synth import write_corpus
from neurolm.lm.gpt import GPTConfig
from neurolm.lm.head import DEFAULT_CHUNK, chunked_cross_entropy
from neurolm.lm.mask import build_attention_mask
from neurolm.lm.pretrain import pretrain
from neurolm.text import PADDED_VOCAB
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.train.log import read_rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device: torch.device, reps: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def check_mfu(work: Path, size: str, steps: int, batch: int, device: str) -> dict:
    """Part 1: the loop's logged MFU against the wall-clock MFU of the same steps."""
    write_corpus(work / "raw", datasets=["pretrain"], subjects=2, seed=0)
    prepare_dataset("pretrain", work / "raw" / "pretrain", work / "store", progress=False)
    torch.manual_seed(0)
    NeuralTokenizer(TokenizerConfig.from_preset("tiny" if size == "tiny" else "base")).save_pretrained(work / "tok")
    pretrain(work / "tok", [work / "store"], work / "lm", size=size, steps=steps, batch_size=batch,
                      eval_every=steps, precision="bf16", device=device, progress=False)
    rows = [r for r in read_rows(work / "lm" / "log.jsonl") if r["split"] == "train"]
    skip = len(rows) // 4  # warm-up: allocator, cuDNN/SDPA autotuning
    steady = rows[skip:]
    logged = [r["mfu"] for r in steady if "mfu" in r]
    wall_s = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(steady, steady[1:])]
    out = {"size": size, "batch": batch, "steps": steps, "step_s_logged": statistics.median(1 / r["steps_per_s"]
                                                                                           for r in steady),
           "step_s_wall": statistics.median(wall_s)}
    if logged:
        out["mfu_logged"] = statistics.median(logged)
        out["mfu_wall"] = out["mfu_logged"] * out["step_s_logged"] / out["step_s_wall"]
        out["logged_over_wall"] = out["mfu_logged"] / out["mfu_wall"]
    return out


def stair_batch(b: int, channels: int, seconds: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token times and mask of ``b`` windows of ``channels`` × up to ``seconds`` s (varied lengths, padded)."""
    n = channels * seconds
    times = torch.arange(seconds).repeat_interleave(channels).expand(b, n).contiguous()
    lengths = torch.linspace(seconds // 2, seconds, b).round().long() * channels
    mask = torch.arange(n)[None] < lengths[:, None]
    return times.to(device), mask.to(device)


def check_attention(b: int, channels: int, seconds: int, heads: int, head_dim: int, device: torch.device,
                    reps: int) -> dict:
    """Part 2: the stair-step mask through SDPA (dense) and flex_attention (block mask), forward + backward."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    times, mask = stair_batch(b, channels, seconds, device)
    n = times.shape[1]
    dense = build_attention_mask(times, mask)  # (B, 1, N, N), what the model passes to SDPA

    def stair(bi, h, q, k):  # the same visibility as build_attention_mask for EEG-only sequences
        return (mask[bi, q] & mask[bi, k] & (times[bi, k] <= times[bi, q])) | (q == k)

    block = create_block_mask(stair, b, None, n, n, device=device)
    flex = torch.compile(flex_attention) if device.type == "cuda" else flex_attention
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    backward = device.type == "cuda"  # flex_attention has no backward on the CPU (--smoke times the forward)
    q, k, v = (torch.randn(b, heads, n, head_dim, device=device, dtype=dtype, generator=g).requires_grad_(backward)
               for _ in range(3))

    def run_sdpa():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        if backward:
            out.float().square().mean().backward()

    def run_flex():
        out = flex(q, k, v, block_mask=block)
        if backward:
            out.float().square().mean().backward()

    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
        got = flex(q, k, v, block_mask=block)
    real = mask[:, None, :, None]  # padding rows differ by design (flex: own key only, as the mask)
    diff = float(((got.float() - ref.float()).abs() * real).max())
    t_sdpa, t_flex = median_time(run_sdpa, device, reps), median_time(run_flex, device, reps)
    return {"batch": b, "tokens": n, "heads": heads, "head_dim": head_dim, "dtype": str(dtype), "backward": backward,
            "max_abs_diff": diff, "sdpa_ms": t_sdpa * 1e3, "flex_ms": t_flex * 1e3, "flex_speedup": t_sdpa / t_flex}


def check_head(size: str, tokens: int, device: torch.device, reps: int) -> dict:
    """Part 3: the head's loss computation unchunked and chunked on the device (bf16 autocast as training)."""
    cfg = GPTConfig.from_preset(size, n_outputs=PADDED_VOCAB + TokenizerConfig().codebook_size)
    g = torch.Generator(device=device).manual_seed(0)
    weight = (torch.randn(cfg.n_outputs, cfg.n_embd, device=device, generator=g) * 0.02).requires_grad_()
    h = torch.randn(tokens, cfg.n_embd, device=device, generator=g).requires_grad_()
    target = torch.randint(PADDED_VOCAB, cfg.n_outputs, (tokens,), device=device, generator=g)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def plain():
        with amp:
            F.cross_entropy(F.linear(h, weight), target).backward()

    def chunked():
        with amp:
            chunked_cross_entropy(h, weight, None, target, DEFAULT_CHUNK)[0].backward()

    out = {"size": size, "tokens": tokens, "chunk": DEFAULT_CHUNK}
    for name, fn in (("unchunked", plain), ("chunked", chunked)):
        h.grad = weight.grad = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        fn()
        if device.type == "cuda":
            out[f"{name}_peak_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
        out[f"{name}_ms"] = median_time(fn, device, reps) * 1e3
    out["time_ratio"] = out["chunked_ms"] / out["unchunked_ms"]
    if device.type == "cuda":
        out["memory_ratio"] = out["unchunked_peak_gib"] / out["chunked_peak_gib"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the script itself")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32, help="pretraining windows per step")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    if args.smoke:
        device, size, steps, batch, reps = torch.device("cpu"), "tiny", 6, 4, 2
        attention = dict(b=2, channels=4, seconds=8, heads=2, head_dim=16)
        tokens = 512
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --smoke to check the script on the CPU")
        device, size, steps, batch, reps = torch.device("cuda"), "B", args.steps, args.batch, args.reps
        attention = dict(b=16, channels=64, seconds=16, heads=12, head_dim=64)  # 1024 tokens, REF's length
        tokens = 60 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "torch": torch.__version__}
        for name, run in (("attention", lambda: check_attention(**attention, device=device, reps=reps)),
                          ("head", lambda: check_head(size, tokens, device, reps)),
                          ("mfu", lambda: check_mfu(work, size, steps, batch, str(device)))):
            t = time.perf_counter()
            results[name] = run()
            results[name]["check_s"] = round(time.perf_counter() - t, 1)
            print(name, json.dumps(results[name], default=float), flush=True)
        (work / "gpu_check.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"written {work / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
