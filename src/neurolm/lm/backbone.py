"""Any Hugging Face causal LM as NeuroLM's backbone (``neurolm pretrain --backbone DIR``).

NeuroLM talks to its backbone through a small interface that :class:`~neurolm.lm.gpt.GPT` and :class:`HFBackbone`
both offer: ``embed_tokens(ids)``, ``add_position(x, positions)``, ``forward(x, attn_mask, kv_cache, positions)`` →
final hidden states, ``lm_head`` (text + EEG outputs), ``new_cache()`` and ``lookup_weights()`` (for FLOP counts).
NeuroLM's token layout becomes a property of the backbone (:class:`~neurolm.text.Vocab`): GPT-2's is fixed
(:data:`~neurolm.text.GPT2_VOCAB`), a Hugging Face model's is derived from its tokenizer and embedding table.

How a Hugging Face model is adapted (decisions where the issue is silent):
- Only its decoder (``base_model``) is kept; its output layer is replaced by NeuroLM's untied ``lm_head`` whose text
  rows start as the model's output embeddings and whose EEG-code rows follow at ``code_offset``.
- The token table grows by one row for the instruction marker (id = the old row count) and is padded to a multiple
  of 64, as nanoGPT pads GPT-2's (for GPT-2 this gives exactly the native layout: marker 50257, codes at 50304). New
  rows start at the mean of the existing rows, so the marker starts as an "average word" and not as noise.
- Positions go in as ``position_ids``: an EEG token's is its second, text continues after the last second (the
  same numbers the native GPT looks up in ``wpe``); RoPE models rotate by them, GPT-2 looks them up.
- The stair-step mask goes in as a 4-D additive float mask (0 = may attend, the dtype's minimum = may not), which
  every attention implementation of ``transformers`` takes as is.
- The model's own tokenizer encodes instructions, answers and text corpora (:class:`HFTextTokenizer`); its end-of-
  sequence token plays GPT-2's ``<|endoftext|>``. Generation keeps the model's own KV cache (``DynamicCache``).
- The Hugging Face config is stored inside NeuroLM's ``config.json`` and the tokenizer files in ``DIR/backbone/``,
  so a model directory loads without the original backbone directory.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import NeuroLMError
from ..text import TextTokenizer, Vocab

log = logging.getLogger(__name__)

HF_INSTALL = "pip install 'neurolm[hf]'"
TOKENIZER_DIR = "backbone"
"""Subdirectory of a model directory holding the backbone's tokenizer files."""
EOT_LITERAL = "<|endoftext|>"
"""How task answers spell the end-of-text token; a Hugging Face tokenizer maps it to its end-of-sequence id."""


def require_transformers():
    """The ``transformers`` module, or an error saying how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise NeuroLMError(f"Hugging Face backbones need transformers: {HF_INSTALL}") from exc
    return transformers


@dataclass
class BackboneConfig:
    """A Hugging Face backbone as NeuroLM's ``config.json`` records it."""

    hf_config: dict[str, Any]
    """The model's Hugging Face config (``to_dict()``), with ``vocab_size`` = the grown token table."""
    text_vocab: int
    """Text ids ``0..text_vocab-1`` (the tokenizer's length)."""
    eot: int
    """The tokenizer's end-of-sequence id: ends answers and documents, pads text."""
    instruction_start: int
    """The marker before every instruction: the row added to the token table."""
    code_offset: int
    """LM output of EEG code 0 (the token table's rows, padded to a multiple of 64)."""
    source: str = ""
    """The directory it was imported from (a record only: loading never reads it)."""

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.text_vocab, self.eot, self.instruction_start, self.code_offset)

    @property
    def family(self) -> str:
        return str(self.hf_config.get("model_type", "?"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sizes(self) -> dict[str, int]:
        """The :class:`~neurolm.lm.gpt.GPTConfig` fields that describe this backbone's shape (NeuroLM reads its
        width, depth and position count from there)."""
        c = self.hf_config
        width = c.get("hidden_size", c.get("n_embd"))
        layers = c.get("num_hidden_layers", c.get("n_layer"))
        heads = c.get("num_attention_heads", c.get("n_head"))
        positions = c.get("max_position_embeddings", c.get("n_positions"))
        if None in (width, layers, heads, positions):
            raise NeuroLMError(f"backbone {self.family}: its config lacks the width, depth, heads or positions")
        return {"n_layer": int(layers), "n_head": int(heads), "n_embd": int(width), "block_size": int(positions),
                "vocab_size": self.code_offset}


def hf_config_object(values: dict[str, Any]):
    """A ``transformers`` config object from a stored dict."""
    transformers = require_transformers()
    values = dict(values)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise NeuroLMError("backbone config: no model_type")
    try:
        return transformers.AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError) as exc:
        raise NeuroLMError(f"backbone config: transformers cannot build a {model_type!r} model ({exc})") from exc


class HFTextTokenizer:
    """A Hugging Face tokenizer with the interface of :class:`~neurolm.text.TextTokenizer`."""

    def __init__(self, tokenizer, vocab: Vocab) -> None:
        self.tokenizer, self.vocab = tokenizer, vocab

    @classmethod
    def load(cls, directory: str | Path, vocab: Vocab) -> HFTextTokenizer:
        transformers = require_transformers()
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as exc:
            raise NeuroLMError(f"{directory}: no tokenizer AutoTokenizer can load ({exc})") from exc
        return cls(tok, vocab)

    def _ordinary(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
        """Ids of ``text``; with ``allow_eot`` the literal ``<|endoftext|>`` becomes the end-of-sequence id (see
        :meth:`neurolm.text.TextTokenizer.encode`); special tokens are never parsed from user text."""
        if not allow_eot:
            return self._ordinary(text)
        pieces = text.split(EOT_LITERAL)
        ids = self._ordinary(pieces[0])
        for piece in pieces[1:]:
            ids += [self.vocab.eot, *(self._ordinary(piece) if piece else [])]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ids outside the text vocabulary (marker, padding rows, EEG codes) are dropped."""
        keep = [int(i) for i in ids if 0 <= int(i) < self.vocab.text_vocab]
        return self.tokenizer.decode(keep, skip_special_tokens=True)

    def corpus_ids(self, docs: list[str]) -> np.ndarray:
        """Ids (int64) of documents, each followed by the end-of-text id (as :func:`neurolm.text.corpus_ids`)."""
        encoded = self.tokenizer(docs, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return np.asarray([t for doc in encoded for t in (*doc, self.vocab.eot)], dtype=np.int64)


class HFBackbone(nn.Module):
    """A Hugging Face decoder behind NeuroLM's backbone interface (module notes)."""

    def __init__(self, spec: BackboneConfig, n_outputs: int, loaded=None) -> None:
        """``loaded``: the ``AutoModelForCausalLM`` read from the backbone's directory, adopted with its weights
        (its token table grown to ``spec.code_offset`` rows); without it one is built at random from ``spec``."""
        super().__init__()
        transformers = require_transformers()
        self.spec = spec
        self.lm_head = nn.Linear(spec.sizes()["n_embd"], n_outputs, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        if loaded is None:
            config = hf_config_object(spec.hf_config)
            config.use_cache = False
            loaded = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        else:
            self._adopt(loaded)
        self.model = loaded.base_model
        self.activation_checkpointing = False
        """Recompute each decoder layer in the backward pass (the model's own gradient checkpointing)."""
        self._checkpointing = False
        # transformers 5 renamed `past_key_values` to `cache`
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    # -------------------------------------------------------------------------------------------- the interface
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def add_position(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Positions enter the blocks as ``position_ids`` (:meth:`forward`), not the input."""
        limit = self.spec.sizes()["block_size"]
        if positions.numel() and int(positions.max()) >= limit:
            raise NeuroLMError(f"position {int(positions.max())} exceeds the backbone's {limit} positions")
        return x

    def new_cache(self):
        return require_transformers().DynamicCache()

    def lookup_weights(self) -> list[torch.Tensor]:
        """Tables read by lookup, not by matmul (left out of FLOP counts)."""
        return [m.weight for m in self.model.modules() if isinstance(m, nn.Embedding)]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, kv_cache=None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``(B, T, d)``; ``attn_mask`` boolean ``(B|1, 1, T, S)`` (True = may attend) or None
        (causal); ``positions`` ``(B, T)`` (None: ``0..T-1`` after the cache)."""
        self._set_checkpointing()
        if attn_mask is not None:
            additive = torch.zeros(attn_mask.shape, dtype=x.dtype, device=x.device)
            attn_mask = additive.masked_fill(~attn_mask, torch.finfo(x.dtype).min)
        if positions is None:
            past = 0 if kv_cache is None else kv_cache.get_seq_length()
            positions = torch.arange(past, past + x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        out = self.model(inputs_embeds=x, attention_mask=attn_mask, position_ids=positions,
                         use_cache=kv_cache is not None, **{self._cache_arg: kv_cache})
        return out.last_hidden_state

    def _set_checkpointing(self) -> None:
        on = self.activation_checkpointing and self.training
        if on != self._checkpointing:  # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*
            name = "activation" if hasattr(self.model, "activation_checkpointing_enable") else "gradient"
            if on:
                getattr(self.model, f"{name}_checkpointing_enable")({"use_reentrant": False})
            else:
                getattr(self.model, f"{name}_checkpointing_disable")()
            self._checkpointing = on

    # ----------------------------------------------------------------------------------------------- importing
    def _adopt(self, loaded) -> None:
        """Grow ``loaded``'s token table to ``code_offset`` rows (the new rows at the mean of the old ones: module
        notes) and start ``lm_head``'s text rows as its output embeddings."""
        embedding = loaded.get_input_embeddings()
        old = embedding.weight.detach()
        out = loaded.get_output_embeddings()
        with torch.no_grad():
            grown = torch.cat([old, old.mean(dim=0).expand(self.spec.code_offset - old.shape[0], -1)])
            head = old if out is None else out.weight
            self.lm_head.weight[: head.shape[0]] = head.to(self.lm_head.weight.dtype)
        # the weight is replaced, not the module: some families' embeddings are subclasses (e.g. scaled)
        embedding.weight = nn.Parameter(grown.contiguous())
        embedding.num_embeddings = self.spec.code_offset
        loaded.config.vocab_size = self.spec.code_offset
        loaded.config.use_cache = False


def read_backbone(directory: str | Path) -> tuple[BackboneConfig, HFTextTokenizer]:
    """The NeuroLM layout of the causal LM in ``directory`` and its tokenizer, from its config and tokenizer files
    only (no weights: for shapes, FLOP counts and text corpora before the model is built)."""
    transformers = require_transformers()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise NeuroLMError(f"{directory}: no config.json; --backbone needs a local Hugging Face model directory")
    try:
        hf_config = transformers.AutoConfig.from_pretrained(str(directory))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise NeuroLMError(f"{directory}: transformers cannot read its config and tokenizer ({exc})") from exc
    if tokenizer.eos_token_id is None:
        raise NeuroLMError(f"{directory}: the tokenizer has no end-of-sequence token (NeuroLM ends answers with it)")
    rows = max(int(hf_config.vocab_size), len(tokenizer))
    padded = math.ceil((rows + 1) / 64) * 64
    values = hf_config.to_dict()
    values["vocab_size"] = padded
    for key in ("architectures", "auto_map", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        values.pop(key, None)
    spec = BackboneConfig(values, text_vocab=len(tokenizer), eot=int(tokenizer.eos_token_id),
                          instruction_start=rows, code_offset=padded, source=str(directory))
    return spec, HFTextTokenizer(tokenizer, spec.vocab)


def import_backbone(directory: str | Path, n_codes: int) -> tuple[BackboneConfig, HFBackbone, HFTextTokenizer]:
    """Read the causal LM and tokenizer in ``directory`` (any model ``AutoModelForCausalLM`` loads) and build the
    NeuroLM backbone around them: ``(spec, backbone, tokenizer)``. ``n_codes``: the EEG codebook size."""
    transformers = require_transformers()
    spec, tokenizer = read_backbone(directory)
    try:  # float32 like the native GPT (bf16 comes from autocast)
        full = transformers.AutoModelForCausalLM.from_pretrained(str(directory), attn_implementation="sdpa").float()
    except (OSError, ValueError) as exc:
        raise NeuroLMError(f"{directory}: transformers cannot load it as a causal LM ({exc})") from exc
    backbone = HFBackbone(spec, spec.code_offset + n_codes, full)
    log.info("backbone %s (%s) from %s: %d text ids, marker %d, EEG codes from output %d", spec.family,
             type(full).__name__, directory, spec.text_vocab, spec.instruction_start, spec.code_offset)
    return spec, backbone, tokenizer


def load_text_tokenizer(directory: str | Path, backbone: BackboneConfig | None) -> TextTokenizer | HFTextTokenizer:
    """The text tokenizer of the model saved in ``directory``: GPT-2's, or its backbone's from ``backbone/``."""
    if backbone is None:
        return TextTokenizer()
    return HFTextTokenizer.load(Path(directory) / TOKENIZER_DIR, backbone.vocab)
