"""Offline GPT-2 BPE and flat token corpora."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tiktoken
import torch

from neurolm.errors import NeuroLMError
from neurolm.text import (
    EOT,
    GPT2_TIKTOKEN_SHA256,
    TEXT_VOCAB,
    TextCorpus,
    TextTokenizer,
    asset_path,
    default_corpus,
    gpt2_encoding,
    load_ranks,
    tokenize_corpus,
)

SAMPLE = (
    "Hello world! It's 3.14159 o'clock; we'll see   you're   fine.\n\n\tTabs, ünïcödé, 日本語, émojis 🧠⚡ "
    "and CamelCaseWords  with  trailing spaces   \nQuestion: Is this EEG segment abnormal? Answer: Yes"
)


def test_known_ids():
    tok = TextTokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.encode(" Yes") == [3363] and tok.encode(" No") == [1400]
    assert tok.encoding.n_vocab == TEXT_VOCAB


def test_round_trip_and_special_tokens():
    tok = TextTokenizer()
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.encode("Answer: No <|endoftext|>", allow_eot=True)[-1] == EOT
    with pytest.raises(ValueError):  # user text cannot smuggle in a control token
        tok.encode("<|endoftext|>")
    # the instruction marker, padding rows and EEG codes have no text and are dropped
    assert tok.decode([50257, 15496, 50300, 60000, 995]) == "Hello world"


def test_pattern_matches_tiktoken_r50k():
    """Our pattern (GPT-2's original) and tiktoken's optimised r50k pattern split text identically."""
    from tiktoken_ext.openai_public import r50k_pat_str

    ours = gpt2_encoding()
    theirs = tiktoken.Encoding(
        name="r50k_check",
        pat_str=r50k_pat_str,
        mergeable_ranks=ours._mergeable_ranks,
        special_tokens={"<|endoftext|>": EOT},
    )
    corpus_text = asset_path("corpus.txt").read_text(encoding="utf-8")[:20000]
    for text in (SAMPLE, corpus_text, "  leading\n\n\nand   \t trailing  "):
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_ranks_checksum(tmp_path):
    path = asset_path("gpt2.tiktoken")
    data = path.read_bytes()
    assert len(data) == 835_554 and hashlib.sha256(data).hexdigest() == GPT2_TIKTOKEN_SHA256
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(data[:-2] + b"9\n")  # same size, one rank changed
    with pytest.raises(NeuroLMError, match="sha256"):
        load_ranks(bad)


def test_tokenize_corpus_and_sample(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("Hello world\n\n the cat sat on the mat.\n\n\n", encoding="utf-8")
    out = tmp_path / "sub" / "train.bin"
    n = tokenize_corpus(txt, out)
    data = np.fromfile(out, dtype=np.uint16)
    tok = TextTokenizer()
    assert n == data.size
    assert data.tolist() == [15496, 995, EOT, *tok.encode("the cat sat on the mat."), EOT]

    corpus = TextCorpus(out)
    a = corpus.sample(5, 4, torch.Generator().manual_seed(3))
    b = corpus.sample(5, 4, torch.Generator().manual_seed(3))
    assert a.shape == (5, 5) and a.dtype == torch.int64 and torch.equal(a, b)
    flat = data.tolist()
    for row in a.tolist():  # every crop is a contiguous window of the file
        assert any(flat[s : s + 5] == row for s in range(len(flat) - 4))
    with pytest.raises(NeuroLMError, match="fewer than one crop"):
        corpus.sample(1, len(corpus), torch.Generator())
    with pytest.raises(NeuroLMError, match="not found"):
        TextCorpus(tmp_path / "missing.bin")


def test_default_corpus():
    corpus = default_corpus()
    assert len(corpus) > 50_000 and int(corpus.data.max()) < TEXT_VOCAB
    assert int((corpus.data == EOT).sum()) == 800  # one end token per paragraph
    x = corpus.sample(2, 64, torch.Generator().manual_seed(0))
    assert x.shape == (2, 65) and int(x.max()) < TEXT_VOCAB


def test_shipped_corpus_is_reproducible():
    """``assets/corpus.txt`` is exactly what ``assets/make_corpus.py`` generates (its stated source)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", asset_path("make_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.corpus() == asset_path("corpus.txt").read_text(encoding="utf-8")
