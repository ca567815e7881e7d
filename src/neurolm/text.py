"""GPT-2 text tokenizer that works offline, and flat token corpora for the text next-token loss.

NeuroLM speaks GPT-2's BPE (tiktoken's ``r50k_base``/``gpt2``, 50257 tokens). tiktoken normally downloads its ranks
file; ours ships inside the package (``assets/gpt2.tiktoken``, MIT, from the openai-whisper 20250625 sdist) and is
checked against its known size and sha256 before use, so a truncated or swapped file fails loudly instead of
tokenising wrongly.

Token ids above GPT-2's range belong to NeuroLM: 50257 marks the start of an instruction, rows up to 50303 pad the
embedding table to a multiple of 64 (nanoGPT), and the EEG codes follow in the LM head (see ``neurolm.lm``).

Corpora are nanoGPT-style: one flat ``uint16`` file of token ids (documents separated by ``<|endoftext|>``) read back
through ``np.memmap`` and sampled as random crops.
"""

from __future__ import annotations

import functools
import hashlib
import os
from base64 import b64decode
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import tiktoken
import torch

from .errors import NeuroLMError

EOT = 50256
"""``<|endoftext|>``: ends every document and answer, and pads text."""
INSTRUCTION_START = 50257
"""First id after GPT-2's vocabulary; NeuroLM puts it before every instruction."""
TEXT_VOCAB = 50257
"""GPT-2's vocabulary size (ids 0..50256)."""
PADDED_VOCAB = 50304
"""Rows of the LM's token embedding: 50257 rounded up to a multiple of 64. EEG code ``i`` is LM output ``50304 + i``."""



@dataclass(frozen=True)
class Vocab:
    """Where a language model's ids live: text ids ``0..text_vocab-1``, the end-of-text id, the instruction marker
    and the first EEG output (code ``i`` is LM output ``code_offset + i``). GPT-2's is :data:`GPT2_VOCAB`; a Hugging
    Face backbone's follows from its tokenizer (:mod:`neurolm.lm.backbone`)."""

    text_vocab: int
    eot: int
    instruction_start: int
    code_offset: int


GPT2_VOCAB = Vocab(TEXT_VOCAB, EOT, INSTRUCTION_START, PADDED_VOCAB)

GPT2_TIKTOKEN_SIZE = 835_554
GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# GPT-2's original split pattern (tiktoken's r50k pattern is an equivalent, faster rewrite with possessive
# quantifiers that older tiktoken releases cannot compile); tests check both give the same ids.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def asset_path(name: str) -> Path:
    """Path of a file shipped in ``neurolm/assets``."""
    return Path(str(resources.files("neurolm") / "assets" / name))


def load_ranks(path: Path) -> dict[bytes, int]:
    """Read a ``.tiktoken`` ranks file (``base64-token rank`` per line) after checking its size and sha256."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != GPT2_TIKTOKEN_SIZE or digest != GPT2_TIKTOKEN_SHA256:
        raise NeuroLMError(
            f"{path}: not the GPT-2 ranks file (size {len(data):,} bytes, sha256 {digest}; expected "
            f"{GPT2_TIKTOKEN_SIZE:,} bytes, sha256 {GPT2_TIKTOKEN_SHA256}); reinstall neurolm"
        )
    ranks = {}
    for line in data.splitlines():
        token, rank = line.split()
        ranks[b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding built from the shipped ranks file (no network)."""
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=load_ranks(asset_path("gpt2.tiktoken")),
        special_tokens={"<|endoftext|>": EOT},
        explicit_n_vocab=TEXT_VOCAB,
    )


class TextTokenizer:
    """GPT-2 BPE text ↔ ids."""

    vocab = GPT2_VOCAB

    def __init__(self) -> None:
        self.encoding = gpt2_encoding()

    def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
        """Token ids of ``text``. With ``allow_eot`` the literal ``<|endoftext|>`` becomes id 50256 (instruction
        answers end with it); otherwise it is an error, so user text can never inject control tokens."""
        return self.encoding.encode(text, allowed_special={"<|endoftext|>"} if allow_eot else set())

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ids outside GPT-2's vocabulary (instruction marker, padding rows, EEG codes) are dropped
        because they have no text."""
        return self.encoding.decode([int(i) for i in ids if 0 <= int(i) < TEXT_VOCAB])


def corpus_ids(text: str, tokenizer=None) -> np.ndarray:
    """Token ids (``uint16``) of a plain text: paragraphs (blocks separated by a blank line) are documents, each
    followed by ``<|endoftext|>`` as in nanoGPT's OpenWebText preparation. ``tokenizer``: another model's text
    tokenizer with a ``corpus_ids(docs)`` method (``neurolm.lm.backbone.HFTextTokenizer``; ids may then be wider)."""
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    if tokenizer is not None and tokenizer.vocab != GPT2_VOCAB:
        return tokenizer.corpus_ids(docs)
    ids = [t for doc in gpt2_encoding().encode_ordinary_batch(docs) for t in (*doc, EOT)]
    return np.asarray(ids, dtype=np.uint16)


def tokenize_corpus(txt_path: str | Path, out_bin: str | Path) -> int:
    """Tokenise a plain-text file (see :func:`corpus_ids`) into a flat ``uint16`` token file; returns the number of
    tokens. The file is written under a temporary name and renamed, so a reader never sees half of it."""
    txt_path, out_bin = Path(txt_path), Path(out_bin)
    try:
        text = txt_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NeuroLMError(f"{txt_path}: cannot read the text corpus ({exc})") from exc
    ids = corpus_ids(text)
    if ids.size == 0:
        raise NeuroLMError(f"{txt_path}: the text corpus is empty")
    out_bin.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_bin.with_name(f".{out_bin.name}.tmp")
    ids.tofile(tmp)
    os.replace(tmp, out_bin)
    return int(ids.size)


class TextCorpus:
    """A flat array of token ids (a ``uint16`` file read through memmap, or an in-memory array)."""

    def __init__(self, source: str | Path | np.ndarray) -> None:
        if isinstance(source, np.ndarray):  # ids of vocabularies past 65,536 (Hugging Face backbones) stay int32
            wide = source.size and int(source.max()) >= 2**16
            self.data = source.astype(np.int32 if wide else np.uint16, copy=False)
        else:
            path = Path(source)
            if not path.is_file():
                raise NeuroLMError(f"{path}: text corpus file not found (make it with tokenize_corpus)")
            self.data = np.memmap(path, dtype=np.uint16, mode="r")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def sample(self, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch, length + 1)`` random crops (int64): inputs are ``[:, :-1]``, next-token targets ``[:, 1:]``.

        Crop starts come from ``generator`` only, so a run is reproducible (and resumable) from the generator state.
        """
        if len(self) < length + 1:
            raise NeuroLMError(f"text corpus has {len(self)} tokens, fewer than one crop of {length + 1}")
        starts = torch.randint(len(self) - length, (batch,), generator=generator).tolist()
        crops = np.stack([np.asarray(self.data[s : s + length + 1], dtype=np.int64) for s in starts])
        return torch.from_numpy(crops)


@functools.lru_cache(maxsize=1)
def default_corpus() -> TextCorpus:
    """The shipped demo corpus (``assets/corpus.txt``, ~80k tokens), tokenised in memory once per process.

    Tokenising it takes well under a second, so an on-disk cache would only add a place for stale files.
    """
    return TextCorpus(corpus_ids(asset_path("corpus.txt").read_text(encoding="utf-8")))


def open_corpus(source: str | Path | None, tokenizer=None) -> tuple[TextCorpus, str]:
    """The text corpus of a training stage and a line naming it: ``None`` → :func:`default_corpus`, a ``.txt`` file
    → tokenised in memory (see :func:`corpus_ids`), anything else → a flat ``uint16`` token file of GPT-2 ids.
    ``tokenizer``: a Hugging Face backbone's (see :func:`corpus_ids`); it tokenises ``.txt`` files and the shipped
    corpus itself and refuses token files, whose ids are GPT-2's."""
    other = tokenizer is not None and tokenizer.vocab != GPT2_VOCAB
    if source is None:
        corpus = TextCorpus(corpus_ids(asset_path("corpus.txt").read_text(encoding="utf-8"), tokenizer)) if other \
            else default_corpus()
        return corpus, "text: the shipped demo corpus (assets/corpus.txt)"
    path = Path(source)
    if path.suffix.lower() != ".txt":
        if other:
            raise NeuroLMError(f"{path}: a token file holds GPT-2 ids; with a Hugging Face backbone pass --text as a "
                               ".txt file (tokenised with the backbone's tokenizer)")
        return TextCorpus(path), f"text: token file {path}"
    try:
        ids = corpus_ids(path.read_text(encoding="utf-8"), tokenizer)
    except (OSError, UnicodeDecodeError) as exc:
        raise NeuroLMError(f"{path}: cannot read the text corpus ({exc})") from exc
    if ids.size == 0:
        raise NeuroLMError(f"{path}: the text corpus is empty")
    return TextCorpus(ids), f"text: {path} ({ids.size:,} tokens)"
