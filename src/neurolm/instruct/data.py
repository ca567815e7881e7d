"""Instruction sequences (spec §5): ``[EEG tokens ≤ 276][50257][instruction + answer + " <|endoftext|>"]``.

The text part is right-padded to 80 tokens with ``<|endoftext|>`` (50256). Targets follow nanoGPT's convention
(``targets[j]`` is the token that should follow position ``j``) and are -100 everywhere except on the answer: its
tokens, the space and the end-of-text token, and the `` (`` that opens a lettered answer. The reference trains that
`` (`` for TUEV and HMC only (``Task.ref_open_paren``), so its TUSL answers often do not parse; ``reference_mask=True``
reproduces its mask.

Scored answers need no generation: with GPT-2 every task's answers share a (possibly empty) token prefix and then
differ in their first token (`` No``/`` Yes``; `` (`` + ``A``…``F``). One forward pass over ``[EEG][prompt + prefix]``
gives the logits of those distinguishing tokens at the last position; their softmax is the probability of each answer.
Another backbone's tokenizer (:mod:`neurolm.lm.backbone`) may split answers so that several share their first token
after the prefix; then each answer is scored by the summed log-probability of its distinguishing tokens (those
before the suffix all answers share), one forward pass per answer, and softmaxed over the answers. For answers told
apart by their first token both give the same probabilities.

Every function takes the model's text tokenizer (``model.text_tokenizer``; default GPT-2's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..data.batch import PATCH, REF_INSTRUCT_TOKENS, EEGBatch, collate_windows, reference_padding
from ..errors import NeuroLMError
from ..lm.model import IGNORE, NeuroLM
from ..data.taskfile import known_names
from ..text import GPT2_VOCAB, TextTokenizer
from .tasks import TASKS, Task, find_task

EEG_MAX_TOKENS = REF_INSTRUCT_TOKENS
"""EEG tokens per instruction sample (REF ``eeg_max_len``): 23 channels × 12 s, 62 × 4 s, …"""
TEXT_LENGTH = 80
"""Text tokens per instruction sample, padding included (REF)."""


@dataclass(frozen=True)
class EncodedTask:
    """A task's token ids, computed once per process."""

    prompt: tuple[int, ...]
    """``[50257]`` + instruction tokens (ends with ``Answer:``)."""
    answers: tuple[tuple[int, ...], ...]
    """Per label: the answer's tokens + `` <|endoftext|>`` (``[220, 50256]``)."""
    prefix: tuple[int, ...]
    """Tokens every answer starts with (empty, or `` (`` for lettered answers)."""
    options: tuple[int, ...]
    """Per label: the first token after ``prefix`` (the scored token when :attr:`single`)."""
    option_tokens: tuple[tuple[int, ...], ...]
    """Per label: the tokens after ``prefix`` and before the suffix every answer shares (multi-token scoring)."""
    trained_from: int
    """Index into an answer of its first trained token (1 when a `` (`` prefix is not trained, else 0)."""


    @property
    def single(self) -> bool:
        """The answers differ in their first token after the prefix: one scored position suffices."""
        return len(set(self.options)) == len(self.options)


def _tokenizer(tokenizer: TextTokenizer | None) -> TextTokenizer:
    return _gpt2() if tokenizer is None else tokenizer


@functools.lru_cache(maxsize=1)
def _gpt2() -> TextTokenizer:
    return TextTokenizer()


def encode_task(name: str, reference_mask: bool = False, tokenizer: TextTokenizer | None = None) -> EncodedTask:
    """Token ids of a task's prompt and answers, checked to tokenise the same as the full training text.
    ``reference_mask``: train the `` (`` of a lettered answer only where the reference does (module notes)."""
    # every GPT-2 tokenizer object is the same tokenizer: one cache entry for all of them
    return _encode(get_task(name), reference_mask, None if isinstance(tokenizer, TextTokenizer) else tokenizer)


@functools.lru_cache(maxsize=None)
def _encode(task: Task, reference_mask: bool, tokenizer: TextTokenizer | None) -> EncodedTask:
    """Cached by the definition, not the name: a task file's task may be redefined under its name."""
    name = task.name
    tok = _tokenizer(tokenizer)
    prompt = (tok.vocab.instruction_start, *tok.encode(task.instruction))
    answers = tuple(tuple(tok.encode(a + " <|endoftext|>", allow_eot=True)) for a in task.answers)
    for label, answer in enumerate(answers):
        # BPE could merge across the prompt/answer boundary; then the split below would not be the model's view
        if prompt[1:] + answer != tuple(tok.encode(task.text(label), allow_eot=True)):
            raise NeuroLMError(f"task {name}: answer {task.answers[label]!r} does not tokenise apart from the prompt")
    n_prefix = 0
    while all(len(a) > n_prefix + 1 and a[n_prefix] == answers[0][n_prefix] for a in answers):
        n_prefix += 1
    n_suffix = 0
    while all(len(a) > n_prefix + n_suffix + 1 and a[-1 - n_suffix] == answers[0][-1 - n_suffix] for a in answers):
        n_suffix += 1
    option_tokens = tuple(a[n_prefix : len(a) - n_suffix] for a in answers)
    if len(set(option_tokens)) != len(option_tokens):
        raise NeuroLMError(f"task {name}: answers {task.answers} tokenise the same")
    if len(prompt) + max(map(len, answers)) > TEXT_LENGTH and tok.vocab == GPT2_VOCAB:
        raise NeuroLMError(f"task {name}: prompt + answer exceed {TEXT_LENGTH} text tokens")
    trained_from = n_prefix if reference_mask and not task.ref_open_paren else 0
    return EncodedTask(prompt, answers, answers[0][:n_prefix], tuple(a[0] for a in option_tokens), option_tokens,
                       trained_from)


def get_task(name: str) -> Task:
    """The built-in or remembered task (:func:`~neurolm.instruct.tasks.find_task`), or an error listing the tasks."""
    task = find_task(name)
    if task is None:
        raise NeuroLMError(f"no instruction task for dataset {name!r}; tasks: {', '.join([*TASKS, *known_names()])} "
                           "(a task file's task is known once its store or a model tuned on it is opened)")
    return task


def training_text(name: str, label: int, reference_mask: bool = False, tokenizer: TextTokenizer | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, targets, mask)`` of length 80 for one labelled window: padded ids, answer-only targets, real tokens
    (longer where a backbone's tokenizer needs more than 80 tokens for the text)."""
    enc = encode_task(name, reference_mask, tokenizer)
    if not 0 <= label < len(enc.answers):
        raise NeuroLMError(f"task {name}: label {label} outside 0..{len(enc.answers) - 1}")
    seq = enc.prompt + enc.answers[label]
    length = max(TEXT_LENGTH, len(seq))
    ids = torch.full((length,), _tokenizer(tokenizer).vocab.eot, dtype=torch.long)
    ids[: len(seq)] = torch.tensor(seq)
    targets = torch.full((length,), IGNORE, dtype=torch.long)
    first = len(enc.prompt) + enc.trained_from  # first trained token; position first-1 predicts it
    targets[first - 1 : len(seq) - 1] = ids[first : len(seq)]
    mask = torch.zeros(length, dtype=torch.bool)
    mask[: len(seq)] = True
    return ids, targets, mask


def collate_eeg(items: list[dict], source: object = "a window", norm_over_padding: bool = False) -> EEGBatch:
    """Collate windows padded to the longest of the batch, or to :data:`EEG_MAX_TOKENS` under the reference's
    ``norm_over_padding`` (:func:`~neurolm.data.batch.reference_padding`); more than :data:`EEG_MAX_TOKENS` tokens
    is an error naming ``source`` (a store, a recording), since the model was tuned on at most that many."""
    longest = max(np.shape(it["signal"])[0] * (np.shape(it["signal"])[1] // PATCH) for it in items)
    if longest > EEG_MAX_TOKENS:
        raise NeuroLMError(f"{source}: windows of {longest} EEG tokens exceed the {EEG_MAX_TOKENS} per sample of "
                           "instruction tuning")
    return collate_windows(items, reference_padding(norm_over_padding, EEG_MAX_TOKENS))


def collate_texts(names: list[str], labels: list[int], reference_mask: bool = False,
                  tokenizer: TextTokenizer | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack :func:`training_text` of a batch: ``(B, L)`` ids, targets and mask, right-padded to the batch's longest
    text rather than to 80. The loss, and every real position's hidden state, are the same: the text is causal, so
    no real token attends to the padding after it. Why: the six tasks' texts differ in length by several times, so
    padding to 80 spent a measurable part of every instruction step on positions nobody reads
    (docs/results/2026-12-03-instruct-step-cost.md)."""
    ids, targets, mask = zip(*(training_text(n, int(y), reference_mask, tokenizer) for n, y in zip(names, labels)))
    longest = max(int(m.sum()) for m in mask)

    def stack(parts: tuple[torch.Tensor, ...], value: int | bool) -> torch.Tensor:
        return torch.stack([torch.cat([t, t.new_full((max(0, longest - len(t)),), value)])[:longest] for t in parts])

    return stack(ids, _tokenizer(tokenizer).vocab.eot), stack(targets, IGNORE), stack(mask, False)


def scoring_prompts(names: list[str], tokenizer: TextTokenizer | None = None,
                    continuations: list[tuple[int, ...]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[50257] + instruction + answer prefix`` (+ ``continuations[i]``) per sample ``(B, L)`` and its
    mask."""
    seqs = [encode_task(n, tokenizer=tokenizer).prompt + encode_task(n, tokenizer=tokenizer).prefix for n in names]
    if continuations is not None:
        seqs = [s + c for s, c in zip(seqs, continuations)]
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), _tokenizer(tokenizer).vocab.eot, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


@torch.no_grad()
def score_answers(model: NeuroLM, eeg: EEGBatch, names: list[str]) -> list[torch.Tensor]:
    """Probability of each allowed answer per sample (one forward pass): a list of ``(K_task,)`` float tensors that
    sum to 1, in label order. ``names[i]`` is the task of window ``i``; tasks may be mixed in one batch."""
    tok = model.text_tokenizer
    if not all(encode_task(n, tokenizer=tok).single for n in set(names)):
        return _score_sequences(model, eeg, names)
    device = eeg.patches.device
    ids, mask = scoring_prompts(names, tok)
    ids, mask = ids.to(device), mask.to(device)
    last = model.text_hidden(eeg, ids, mask)[torch.arange(len(names), device=device), mask.sum(1) - 1]
    out = []
    for i, name in enumerate(names):
        options = torch.tensor(encode_task(name, tokenizer=tok).options, device=device)
        logits = last[i] @ model.gpt.lm_head.weight[options].T  # only the K scored rows of the head
        if model.gpt.lm_head.bias is not None:
            logits = logits + model.gpt.lm_head.bias[options]
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return out



def _score_sequences(model: NeuroLM, eeg: EEGBatch, names: list[str]) -> list[torch.Tensor]:
    """:func:`score_answers` for answers that share first tokens: one pass per answer index with the encoder's
    output reused; each answer's log-probability is summed over its distinguishing tokens (module notes)."""
    device = eeg.patches.device
    tok = model.text_tokenizer
    tasks = [encode_task(n, tokenizer=tok) for n in names]
    encoded = model.tokenizer.encode(eeg)
    scores = [torch.full((len(t.answers),), float("-inf")) for t in tasks]
    for k in range(max(len(t.answers) for t in tasks)):
        conts = [t.option_tokens[min(k, len(t.answers) - 1)] for t in tasks]
        ids, mask = scoring_prompts(names, tok, conts)
        ids, mask = ids.to(device), mask.to(device)
        h = model.text_hidden(eeg, ids, mask, encoded=encoded)
        end = mask.sum(1).tolist()
        for i, (t, cont) in enumerate(zip(tasks, conts)):
            if k < len(t.answers):  # position j predicts token j+1: the head only where an answer token is read
                logp = torch.log_softmax(model.gpt.lm_head(h[i, end[i] - len(cont) - 1 : end[i] - 1]).float(), -1)
                scores[i][k] = logp[torch.arange(len(cont)), torch.tensor(cont, device=device)].sum().cpu()
    return [torch.softmax(s, dim=-1) for s in scores]
