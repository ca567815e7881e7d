"""Tiny Hugging Face causal LMs for backbone tests, built offline: random weights from config objects and a
byte-level BPE tokenizer trained on the task texts, saved as ``save_pretrained`` writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="Hugging Face backbones need neurolm[hf]")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from neurolm.instruct.tasks import TASKS  # noqa: E402

EOS = "<|endoftext|>"


def train_tokenizer(vocab_size: int = 400) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes) trained on every task's full instruction texts."""
    texts = [task.text(label) for task in TASKS.values() for label in range(len(task.answers))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts * 4, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)


def config(family: str, vocab_size: int, width: int = 64, layers: int = 2):
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=width, n_layer=layers, n_head=4,
                                       n_positions=512, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    common = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=0,
                  eos_token_id=0)
    if family == "phi":
        return transformers.PhiConfig(**common)
    if family == "phi3":
        return transformers.Phi3Config(**common, pad_token_id=0)
    if family == "qwen2":  # tied input and output embeddings, as the small Qwen2 checkpoints
        return transformers.Qwen2Config(**{**common, "tie_word_embeddings": True}, num_key_value_heads=2)
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[family]
    return cls(**common, num_key_value_heads=2)


def write_backbone(directory: Path, family: str, *, vocab_size: int | None = None, width: int = 64,
                   seed: int = 0, tokenizer_vocab: int = 400) -> Path:
    """A random tiny ``family`` (``llama``, ``qwen2``, ``mistral``, ``phi``, ``phi3``, ``gpt2``) with the tiny
    tokenizer in ``directory`` (``tokenizer_vocab`` 257: bytes only, no merges)."""
    tokenizer = train_tokenizer(tokenizer_vocab)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config(family, vocab_size or len(tokenizer), width))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
