"""Scored answers versus generation-based evaluation, on the same windows and model.

    python benchmarks/bench_eval.py [--size tiny] [--task tuab] [--batch 32] [--reps 3]

Three ways to answer ``[EEG][instruction]`` for a batch of windows shaped like the task's (channels × seconds):
- **scored** (:func:`neurolm.instruct.data.score_answers`): one forward pass, the answer options' logits at the last
  prompt position → probabilities;
- **paper protocol as the reference runs it**: greedy generation of 5 tokens where every new token re-runs the whole
  sequence, frozen encoder included (no KV cache; the head at the last position only, as nanoGPT does);
- **paper protocol as ``neurolm evaluate`` runs it**: the same 5 greedy tokens with a KV cache (one prefill, then one
  position per token).
Printed: each time per window and the ratios scored/uncached (the issue's ≥ 3× target) and scored/cached. The model
is random (timing does not depend on training); ``--size B`` uses the paper's tokenizer and GPT-2 width.
"""

from __future__ import annotations

import argparse

import torch
from bench_lm import eeg_batch, timed  # same folder: run as a script

from neurolm.data.batch import EEGBatch
from neurolm.instruct.data import encode_task, score_answers
from neurolm.instruct.evaluate import GENERATED_TOKENS
from neurolm.instruct.tasks import TASKS
from neurolm.lm import NeuroLM
from neurolm.text import TEXT_VOCAB
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig


def task_batch(task: str, b: int) -> EEGBatch:
    """``b`` random windows with the task's channel count and window length."""
    t = TASKS[task]
    return eeg_batch(b, len(t.channels), int(t.window_s))


@torch.no_grad()
def uncached_generate(model: NeuroLM, eeg: EEGBatch, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding that recomputes ``[EEG][prompt + generated]`` for every token (the reference's loop)."""
    ids = prompt
    for _ in range(steps):
        last = model.text_hidden(eeg, ids)[:, -1]
        nxt = model.gpt.lm_head(last)[:, :TEXT_VOCAB].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, prompt.shape[1]:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "B"])
    ap.add_argument("--task", default="tuab", choices=list(TASKS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    tok = NeuralTokenizer(TokenizerConfig.from_preset("tiny" if args.size == "tiny" else "base")).eval()
    model = NeuroLM.from_tokenizer(tok, args.size).eval()
    eeg = task_batch(args.task, args.batch)
    prompt = torch.tensor(encode_task(args.task).prompt).expand(args.batch, -1)

    cached = model.generate(eeg, prompt, None, GENERATED_TOKENS)[0]
    assert torch.equal(cached, uncached_generate(model, eeg, prompt, GENERATED_TOKENS)), "cached ≠ uncached tokens"
    t_score = timed(lambda: score_answers(model, eeg, [args.task] * args.batch), args.reps)
    t_uncached = timed(lambda: uncached_generate(model, eeg, prompt, GENERATED_TOKENS), args.reps)
    t_cached = timed(lambda: model.generate(eeg, prompt, None, GENERATED_TOKENS), args.reps)
    per = 1e3 / args.batch
    print(f"size {args.size}, task {args.task}: {args.batch} windows × {int(eeg.mask[0].sum())} EEG tokens + "
          f"{prompt.shape[1]} prompt tokens, {torch.get_num_threads()} threads")
    print(f"scored {t_score * per:.2f} ms/window; generation {GENERATED_TOKENS} tokens: uncached (reference) "
          f"{t_uncached * per:.2f} ms/window, KV-cached {t_cached * per:.2f} ms/window")
    print(f"scored speed-up: {t_uncached / t_score:.2f}× vs uncached generation (target ≥ 3), "
          f"{t_cached / t_score:.2f}× vs KV-cached generation")


if __name__ == "__main__":
    main()
