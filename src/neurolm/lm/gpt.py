"""GPT-2 backbone of NeuroLM (nanoGPT module names, so GPT-2 and NeuroLM checkpoints map one to one).

Differences from nanoGPT, all needed by NeuroLM:
- ``forward`` takes **embeddings** (token + position already added), because EEG tokens have no token id and take
  the position of their second, not of their index; :meth:`GPT.embed` covers plain text.
- attention takes an arbitrary boolean mask ``(B, 1, T, S)`` (the stair-step EEG mask) or is causal when none is given;
- a :class:`KVCache` lets generation feed one token at a time;
- ``forward`` returns the final hidden states; the caller applies ``lm_head`` only where it needs logits (the head
  has 58,496 outputs and EEG pretraining has up to 1024 tokens per sample);
- ``lm_head`` has more outputs than ``wte`` has rows (text + EEG codes) and is not tied to ``wte``;
- the MLP's GELU is a setting (:attr:`GPTConfig.gelu`): GPT-2 was trained with the tanh approximation, the authors'
  NeuroLM code (REF) uses the exact erf GELU (``nn.GELU()``) although it starts from GPT-2 weights, so their
  checkpoints only reproduce their logits with ``"exact"`` (up to 5e-4 apart otherwise, growing with depth).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import NeuroLMError
from ..hf_gpt2 import read_gpt2_sizes, read_hf_state_dict
from ..text import PADDED_VOCAB, TEXT_VOCAB

log = logging.getLogger(__name__)


GELU_VARIANTS = {"tanh": "tanh", "exact": "none"}
"""``GPTConfig.gelu`` → ``nn.GELU(approximate=...)``."""


@dataclass
class GPTConfig:
    n_layer: int = 12
    """Transformer blocks."""
    n_head: int = 12
    """Attention heads; must divide ``n_embd``."""
    n_embd: int = 768
    """Width."""
    block_size: int = 1024
    """Rows of the position table ``wpe``: the largest position is ``block_size - 1``."""
    vocab_size: int = PADDED_VOCAB
    """Rows of the token table ``wte`` (GPT-2's 50257 padded to 50304)."""
    n_outputs: int = PADDED_VOCAB
    """Outputs of ``lm_head``; NeuroLM appends the EEG codebook (50304 + 8192 = 58496 for the paper)."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches (GPT-2 and NeuroLM pretraining use 0)."""
    bias: bool = True
    """Biases in Linear and LayerNorm layers, as GPT-2."""
    gelu: str = "tanh"
    """MLP activation: ``"tanh"`` (GPT-2's approximation, Hugging Face imports and configs written before this field
    existed) or ``"exact"`` (erf; the authors' checkpoints and recipe)."""

    PRESETS: ClassVar[dict[str, dict]] = {
        "tiny": dict(n_layer=2, n_head=4, n_embd=64),
        "B": dict(n_layer=12, n_head=12, n_embd=768),
        "L": dict(n_layer=24, n_head=16, n_embd=1024),
        "XL": dict(n_layer=48, n_head=25, n_embd=1600),
    }

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise NeuroLMError(f"GPT config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if min(self.n_layer, self.n_head, self.block_size, self.vocab_size) < 1:
            raise NeuroLMError("GPT config: n_layer, n_head, block_size and vocab_size must be positive")
        if self.n_outputs < self.vocab_size:
            raise NeuroLMError(f"GPT config: n_outputs={self.n_outputs} must cover the vocabulary ({self.vocab_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise NeuroLMError(f"GPT config: dropout={self.dropout} must be in [0, 1)")
        if self.gelu not in GELU_VARIANTS:
            raise NeuroLMError(f"GPT config: gelu={self.gelu!r}; choose one of {', '.join(GELU_VARIANTS)}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        """``tiny`` (tests, demo), ``B`` = GPT-2, ``L`` = GPT-2 medium, ``XL`` = GPT-2 XL."""
        if name not in cls.PRESETS:
            raise NeuroLMError(f"unknown GPT size {name!r}; choose one of {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of the positions already processed, per layer, for incremental decoding.

    It grows by concatenation: NeuroLM generates a handful of answer tokens, so preallocation would buy nothing.
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def __len__(self) -> int:
        """Number of cached positions (of the last layer, i.e. after a complete forward)."""
        return 0 if self.keys[-1] is None else self.keys[-1].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' ``(B, H, T, hd)`` keys/values of ``layer``; return all keys/values so far."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, kv_cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        past = k.shape[2] - t
        # Without a mask: causal. With a cache that already holds positions, "causal" must be spelled out, because
        # SDPA's is_causal aligns the triangle to the top-left corner, not to the newest keys.
        is_causal = attn_mask is None and past == 0 and t > 1
        if attn_mask is None and past > 0 and t > 1:
            attn_mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=GELU_VARIANTS[config.gelu])
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask, kv_cache, layer):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.n_outputs, bias=False)
        self.activation_checkpointing = False
        """Keep only each block's input in training and recompute the block in the backward pass: activation memory
        of one block instead of ``n_layer`` blocks for about a third more compute (for L/XL on small GPUs). Not part
        of :class:`GPTConfig`: it changes memory and time, never the result."""
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; without the position table by default, as nanoGPT counts for FLOPs."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def embed(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``wte[ids] + wpe[positions]`` (positions ``0..T-1`` by default)."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        return self.transformer.wte(ids) + self.position(positions)

    def position(self, positions: torch.Tensor) -> torch.Tensor:
        """``wpe[positions]``, refusing positions past the table instead of failing deep inside an index kernel."""
        if positions.numel() and int(positions.max()) >= self.config.block_size:
            raise NeuroLMError(f"position {int(positions.max())} exceeds block_size {self.config.block_size}")
        return self.transformer.wpe(positions)

    # the backbone interface NeuroLM uses (neurolm.lm.backbone); a Hugging Face decoder offers the same
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.transformer.wte(ids)

    def add_position(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x + wpe[positions]``: GPT-2's positions are part of the input."""
        return x + self.position(positions)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    def lookup_weights(self) -> list[torch.Tensor]:
        """Tables read by lookup, not by matmul (left out of FLOP counts)."""
        return [self.transformer.wte.weight, self.transformer.wpe.weight]

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, kv_cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states ``(B, T, d)`` of embedded inputs ``x`` ``(B, T, d)``.

        ``attn_mask``: boolean ``(B|1, 1, T, S)``, True = may attend, where ``S = T + len(kv_cache)``; every row
        must allow at least one key. ``None`` = causal (over the cached positions too). ``positions``: part of the
        backbone interface, unused here (:meth:`add_position` already added them to ``x``).
        """
        x = self.transformer.drop(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        for i, block in enumerate(self.transformer.h):
            if recompute:  # non-reentrant: works under DDP and replays the RNG state, so dropout masks match
                x = checkpoint(block, x, attn_mask, None, i, use_reentrant=False)
            else:
                x = block(x, attn_mask, kv_cache, i)
        return self.transformer.ln_f(x)

    @classmethod
    def from_hf_gpt2(cls, directory: str | Path, **overrides) -> GPT:
        """A GPT initialised from Hugging Face GPT-2 weights in a local directory (as ``save_pretrained`` writes:
        ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, sharded or not).

        ``wte`` grows from 50257 to ``vocab_size`` rows (new rows random, std 0.02) and the text rows of the untied
        ``lm_head`` start as GPT-2's tied ``wte``; the extra outputs (EEG codes) keep their random init.
        ``overrides`` set fields GPT-2 does not fix (``n_outputs``, ``dropout``, ``vocab_size``, ``gelu``: GPT-2's
        ``"tanh"`` unless the caller follows the authors' recipe, ``"exact"``).
        """
        directory = Path(directory)
        sizes = read_gpt2_sizes(directory)
        config = GPTConfig(**{**sizes, **overrides})
        if config.vocab_size < TEXT_VOCAB:
            raise NeuroLMError(f"vocab_size {config.vocab_size} has fewer rows than GPT-2's {TEXT_VOCAB}")
        model = cls(config)
        sd = {k.removeprefix("transformer."): v for k, v in read_hf_state_dict(directory).items()}
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        ours = model.state_dict()
        with torch.no_grad():
            for name, p in ours.items():
                if name == "lm_head.weight":
                    p[:TEXT_VOCAB] = sd["wte.weight"]
                    continue
                key = name.removeprefix("transformer.")
                if key not in sd:
                    raise NeuroLMError(f"{directory}: GPT-2 weights lack {key!r}")
                src = sd[key].t() if key.endswith(conv1d) else sd[key]  # HF Conv1D stores (in, out)
                if key == "wte.weight":
                    p[:TEXT_VOCAB] = src
                elif src.shape != p.shape:
                    raise NeuroLMError(f"{directory}: {key} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
                else:
                    p.copy_(src)
        log.info("GPT initialised from Hugging Face GPT-2 weights in %s", directory)
        return model

