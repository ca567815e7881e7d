"""NeuroLM: a GPT-2 that reads EEG through a frozen neural tokenizer and writes text (spec §4).

Sequence = ``[EEG tokens][text tokens]``. An EEG token's input is the frozen tokenizer encoder's feature (not its
code) mapped to the LM width, plus a channel embedding ``pos_embed[chan]`` and the GPT position of its **second**
``wpe[time]`` (all channels of a second share a position). Text after the EEG continues at positions ``m+1, m+2, …``.
The LM head predicts text (outputs ``0..50303``) and EEG codes (output ``50304 + code``).

Decisions where the spec is silent or where we differ from the reference (REF):
- ``m`` is the last real second **of each sample**; REF takes the maximum over the whole batch, so a sample's text
  positions depend on its batch-mates. ``NeuroLMConfig.ref_text_positions=True`` reproduces REF. Without EEG, text
  starts at position 0 (plain GPT-2).
- The tokenizer encoder runs once per step and gives both the input features and the target codes. Caveat kept
  from REF (spec §3/§4): the encoder attends bidirectionally over the whole window (and its GroupNorm statistics span
  the window), so the features of second ``a`` have already seen second ``a+1`` whose code is the target. The LM
  itself is strictly causal over seconds (stair-step mask); removing the leak needs the encoder to accept the
  stair-step mask, a change in ``neurolm.tokenizer``.
- EEG targets are built on the device from token times and channels: token ``(a, c)`` predicts the code of ``(a+1, c)``
  when that token exists; other tokens are ignored (-100). EEG logits are computed only where a target exists.
- The encoder's features are standardised per feature (``feature_mean``/``feature_std``, fitted on training
  windows when pretraining starts) before ``encode_transform_layer``; REF feeds them raw. A trained tiny tokenizer's
  features are nearly one constant vector (norm 7.9) with window-to-window differences of ~2 % of it, a read-out so
  badly conditioned that instruction tuning stayed at chance; standardised, the differences are O(1). REF's
  checkpoints carry no scaler and load with the identity (exactly REF's model).
- Greedy generation picks the argmax among GPT-2's 50257 text tokens only: an EEG code or the instruction marker is
  never a valid word of an answer. It always runs ``max_new_tokens`` steps; callers cut at ``<|endoftext|>``.
- Without GPT-2 weights, ``wte`` rows 0..50256 and the text rows of ``lm_head`` start from the tokenizer's frozen
  text table (the table its features were aligned to) when the widths match, so EEG features and text start in the
  same space; otherwise they are random (both cases logged).
- The LM sits behind a small backbone interface (:mod:`neurolm.lm.backbone`): the native GPT or any Hugging Face
  causal LM; token ids follow ``config.vocab`` (GPT-2's unless a backbone brings its tokenizer). LoRA adapters:
  :mod:`neurolm.lm.lora`.
- A NeuroLM keeps only the tokenizer's encoder side (:class:`~neurolm.tokenizer.encoder.TokenizerEncoder`: encoder,
  task layer, quantizer), not its decoders, domain classifier and text table, which only tokenizer training uses
  (at base size ~95M frozen parameters that every checkpoint and GPU carried for nothing). Model directories written
  with the whole tokenizer still load (the extra tensors are skipped).
- :meth:`NeuroLM.from_reference_checkpoint` loads REF's ``NeuroLM-*.pt``. Those files carry only the tokenizer
  **encoder**, so without ``vq_path`` (REF's ``VQ.pt``) the quantizer is random and EEG target codes are meaningless
  (a warning says so); instruction tuning and generation need only the encoder. The encoder's head count is not in
  the file: without ``vq_path`` it is taken as ``width // 64`` (REF: 12 heads for 768).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import EEGBatch
from ..artifacts import WEIGHTS_FILE, load_state_exact, read_artifacts, save_artifacts, save_state
from ..errors import NeuroLMError
from ..text import PADDED_VOCAB, TEXT_VOCAB, TextTokenizer
from ..tokenizer import NeuralTokenizer, TokenizerConfig, TokenizerEncoder
from ..tokenizer.encoder import TRAINING_ONLY
from .config import NeuroLMConfig
from . import lora
from .backbone import TOKENIZER_DIR, BackboneConfig, HFBackbone, import_backbone, load_text_tokenizer
from .gpt import GPT, GPTConfig, KVCache
from .head import DEFAULT_CHUNK, chunked_cross_entropy
from .mask import IGNORE, build_attention_mask, decode_mask, eeg_targets
from .spectral import BANDS_HZ, SUMMARY_SCALE, Moments, WindowSummary, band_log_power

log = logging.getLogger(__name__)

TOKENIZER_ONLY = tuple(f"tokenizer.{name}" for name in TRAINING_ONLY)
"""State-dict prefixes of the tokenizer parts a NeuroLM does not keep (found in model directories of older versions)."""


class NeuroLM(nn.Module):
    def __init__(self, config: NeuroLMConfig, backbone: HFBackbone | None = None) -> None:
        """``backbone``: an already loaded Hugging Face backbone for ``config.backbone`` (built at random without)."""
        super().__init__()
        self.config = config
        self.tokenizer = TokenizerEncoder(config.tokenizer)  # the encoder side only: see the module notes
        self.tokenizer.requires_grad_(False)
        self.tokenizer.eval()
        if config.backbone is None:
            self.gpt = GPT(config.gpt)
        else:  # the backbone interface: neurolm.lm.backbone
            self.gpt = backbone if backbone is not None else HFBackbone(config.backbone, config.gpt.n_outputs)
        self.text_tokenizer = TextTokenizer() if config.backbone is None else None
        """Text ↔ ids of this model's vocabulary (a Hugging Face backbone's is attached when it is loaded)."""
        d_enc, d = config.tokenizer.n_embd, config.gpt.n_embd
        # REF's key names: `encode_transform_layer.0.*` exists only when the widths differ
        self.encode_transform_layer = nn.Sequential(nn.Linear(d_enc, d), nn.GELU()) if d_enc != d else nn.Identity()
        self.pos_embed = nn.Embedding(config.tokenizer.max_channels, d)
        for module in (self.encode_transform_layer, self.pos_embed):
            module.apply(GPT._init_weights)
        # per-feature standardisation of the encoder's features (module notes); the identity until fitted
        self.register_buffer("feature_mean", torch.zeros(d_enc))
        self.register_buffer("feature_std", torch.ones(d_enc))
        self.spectral_embed: nn.Linear | None = None
        if config.spectral_input:
            self.spectral_embed = nn.Linear(len(BANDS_HZ), d, bias=False)
            GPT._init_weights(self.spectral_embed)
            self.register_buffer("spectral_mean", torch.zeros(len(BANDS_HZ)))
            self.register_buffer("spectral_std", torch.ones(len(BANDS_HZ)))
        self.summary = (WindowSummary(d, config.tokenizer.max_channels, config.summary_scale, config.summary_gate)
                        if config.window_summary else None)
        self.head_chunk = DEFAULT_CHUNK
        """Tokens per chunk of the training losses' head (:mod:`neurolm.lm.head`; 0: one chunk). Not part of the
        config: it changes memory, never the result."""

    def add_window_summary(self, batches: list[EEGBatch], scale: float = SUMMARY_SCALE, gate: bool = False
                           ) -> NeuroLM:
        """Give the model the window summary (what instruction tuning does unless ``--no-window-summary``) at output
        factor ``scale``, gated by the question if ``gate``, its scaler fitted on the windows of ``batches``; its
        outputs are unchanged until the summary is trained. A model that has one keeps it."""
        if self.summary is None:
            self.config = replace(self.config, window_summary=True, summary_scale=scale, summary_gate=gate)
            self.summary = WindowSummary(self.config.gpt.n_embd, self.config.tokenizer.max_channels, scale, gate
                                         ).to(self.feature_mean.device)
            self.summary.fit(batches)
        return self

    def train(self, mode: bool = True) -> NeuroLM:
        """Train the LM parts; the tokenizer stays in eval mode (frozen, no dropout, codebook untouched)."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    # ----------------------------------------------------------------------------------------------------- inputs
    def embed_eeg(self, batch: EEGBatch, encoded: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """EEG input embeddings ``(B, N, d)`` and the tokens' codes ``(B, N)`` from one encoder pass, or from
        ``encoded`` = the encoder's ``(features, codes)`` of this batch computed earlier
        (:class:`~neurolm.lm.cache.EncoderCache`)."""
        features, codes = self.tokenizer.encode(batch) if encoded is None else encoded
        features = (features - self.feature_mean) / self.feature_std
        x = self.gpt.add_position(self.encode_transform_layer(features) + self.pos_embed(batch.chans), batch.times)
        if self.spectral_embed is not None:
            x = x + self.spectral_embed(self._spectrum(batch))
        return x, codes

    def _spectrum(self, batch: EEGBatch) -> torch.Tensor:
        """Standardised log band power of every token ``(B, N, bands)``, zero on padding."""
        return (band_log_power(batch.patches) - self.spectral_mean) / self.spectral_std * batch.mask[..., None]

    def window_summary(self, batch: EEGBatch | None) -> torch.Tensor | None:
        """``(B, d)`` added to every text token after the EEG (:class:`~neurolm.lm.spectral.WindowSummary`); None
        without the summary or without EEG."""
        return None if self.summary is None or batch is None else self.summary(batch)

    @torch.no_grad()
    def fit_feature_scaler(self, batches: list[EEGBatch]) -> list[torch.Tensor]:
        """Set the per-feature mean and standard deviation of the encoder's features from the real tokens of
        ``batches`` (done once, before training: the encoder is frozen, so they never change). Returns the codes
        ``(B, N)`` of each batch from the same encoder pass, for callers that also need them."""
        device = self.feature_mean.device
        features, spectra = Moments(), Moments()
        all_codes = []
        for batch in batches:
            batch = batch.to(device)
            feats, codes = self.tokenizer.encode(batch)
            all_codes.append(codes)
            features.add(feats[batch.mask])
            spectra.add(band_log_power(batch.patches[batch.mask]))
        if features.n < 2:
            raise NeuroLMError("fitting the EEG feature scaler needs at least two real tokens")
        features.store(self.feature_mean, self.feature_std)
        if self.spectral_embed is not None:
            spectra.store(self.spectral_mean, self.spectral_std)
        return all_codes

    def text_start(self, batch: EEGBatch | None, n: int, device: torch.device) -> torch.Tensor:
        """First text position ``(B,)``: one past the last real second (per sample, or batch-wide as REF)."""
        if batch is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        last = batch.times.masked_fill(~batch.mask.bool(), -1).max(dim=1).values
        if self.config.ref_text_positions:
            last = last.max().expand_as(last)
        return last + 1

    def _sequence(
        self, batch: EEGBatch | None, text_ids: torch.Tensor, text_mask: torch.Tensor | None,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None, summary_from: EEGBatch | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Embedded ``[EEG][text]``, its attention mask (None = plain causal text) and positions ``(B, N+M)``;
        ``summary_from``: the windows the summary reads (default ``batch``; instruction tuning's token drop)."""
        b, m = text_ids.shape
        start = self.text_start(batch, b, text_ids.device)
        positions = start[:, None] + torch.arange(m, device=start.device)
        tokens = self.gpt.embed_tokens(text_ids)
        text = self.gpt.add_position(tokens, positions)
        summary = self.window_summary(batch if summary_from is None else summary_from)
        if summary is not None:
            running = None if self.summary.gate is None else \
                tokens.cumsum(1) / torch.arange(1, m + 1, device=tokens.device)[:, None]
            text = text + self.summary.gated(summary, running).to(text.dtype)
        if batch is None and text_mask is None:
            return text, None, positions  # causal attention takes SDPA's fastest path
        if text_mask is None:
            text_mask = torch.ones_like(text_ids, dtype=torch.bool)
        if batch is None:
            empty = text_ids.new_zeros(b, 0)
            return text, build_attention_mask(empty, empty.bool(), text_mask), positions
        eeg, _ = self.embed_eeg(batch, encoded)
        x = torch.cat([eeg, text.to(eeg.dtype)], dim=1)
        return x, build_attention_mask(batch.times, batch.mask, text_mask), torch.cat([batch.times, positions], 1)

    # ---------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        batch: EEGBatch | None,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        text_targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> dict[str, torch.Tensor]:
        """Text logits after (optional) EEG: the instruction-tuning and evaluation entry point.

        ``text_ids (B, M)``: e.g. ``[50257] + instruction + answer + [50256]``, right-padded with 50256;
        ``text_mask (B, M)``: True on real text (None = all real). ``text_targets (B, M)``: the token that should
        follow each position (nanoGPT convention: already shifted), -100 where no loss is wanted (instruction,
        padding). ``kv_cache``: filled with the whole sequence, for :meth:`generate`.

        Returns ``logits (B, M, n_outputs)`` and, with targets, ``loss`` and ``accuracy`` over the target tokens.
        """
        logits = self.gpt.lm_head(self.text_hidden(batch, text_ids, text_mask, kv_cache))
        out = {"logits": logits}
        if text_targets is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), text_targets.flatten(), ignore_index=IGNORE)
            counted = text_targets != IGNORE
            hits = ((logits.argmax(-1) == text_targets) & counted).sum()
            out["accuracy"] = (hits / counted.sum().clamp_min(1)).detach()
        return out

    def text_hidden(
        self,
        batch: EEGBatch | None,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None, summary_from: EEGBatch | None = None,
    ) -> torch.Tensor:
        """Final hidden states ``(B, M, d)`` of the text positions after the EEG, before the LM head: callers that
        need logits at a few positions or of a few outputs only (answer scoring, answer-only losses) apply the head
        themselves instead of computing all ``n_outputs`` logits everywhere. ``encoded``: see :meth:`embed_eeg`;
        ``summary_from``: see :meth:`_sequence`."""
        x, mask, positions = self._sequence(batch, text_ids, text_mask, encoded, summary_from)
        h = self.gpt(x, mask, kv_cache, positions)
        return h[:, h.shape[1] - text_ids.shape[1] :]

    def text_forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Plain causal LM on text crops ``(B, T+1)`` (inputs ``[:, :-1]``, targets ``[:, 1:]``): ``loss`` and
        ``accuracy``, through the chunked head (no ``(B, T, n_outputs)`` logits)."""
        h = self.text_hidden(None, ids[:, :-1])
        return dict(zip(("loss", "accuracy"), self.head_loss(h.flatten(0, 1), ids[:, 1:].flatten())))

    def head_loss(self, h: torch.Tensor, target: torch.Tensor, first_output: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and argmax accuracy of the head's outputs ``first_output..`` on hidden states
        ``h (N, d)`` against ``target (N,)`` (indices among those outputs, -100 ignored), ``head_chunk`` tokens at
        a time (:func:`~neurolm.lm.head.chunked_cross_entropy`)."""
        head = self.gpt.lm_head
        bias = None if head.bias is None else head.bias[first_output:]
        return chunked_cross_entropy(h, head.weight[first_output:], bias, target, self.head_chunk, IGNORE)

    def eeg_forward(self, batch: EEGBatch, codes_only: bool = False) -> dict[str, torch.Tensor]:
        """Multi-channel autoregressive pretraining loss on an EEG batch (stair-step mask, next-second codes).

        Returns ``loss`` (cross-entropy over all ``n_outputs`` as REF, code ``i`` ↔ output ``50304 + i``; with
        ``codes_only`` over the codebook's outputs alone), ``accuracy`` (argmax over the same outputs equals the
        target code) and ``tokens`` (number of targets), the last two detached.
        """
        x, codes = self.embed_eeg(batch)
        h = self.gpt(x, build_attention_mask(batch.times, batch.mask), positions=batch.times)
        targets = eeg_targets(codes, batch.times, batch.chans, batch.n_chans)
        selected = targets != IGNORE
        if not bool(selected.any()):
            raise NeuroLMError("EEG batch has no next-second targets: every window is shorter than 2 s")
        offset = self.config.vocab.code_offset
        # codes only: the head's code rows alone, ~100x cheaper than all 50304 + K outputs at tiny widths
        target = targets[selected] if codes_only else targets[selected] + offset
        loss, accuracy = self.head_loss(h[selected], target, offset if codes_only else 0)
        return {"loss": loss, "accuracy": accuracy, "tokens": selected.sum().detach()}

    @torch.no_grad()
    def generate(
        self,
        batch: EEGBatch | None,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        max_new_tokens: int = 5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation of right-padded prompts after their EEG, with a KV cache.

        Returns the new tokens ``(B, max_new_tokens)`` and the logits each was chosen from
        ``(B, max_new_tokens, n_outputs)`` (so answer scores need no second pass). Call ``eval()`` first.
        """
        b, m = prompt_ids.shape
        if prompt_mask is None:
            prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
        prompt_mask = prompt_mask.bool()
        lengths = prompt_mask.sum(dim=1)
        right_padded = prompt_mask == (torch.arange(m, device=lengths.device)[None] < lengths[:, None])
        if not bool(right_padded.all()) or not bool((lengths > 0).all()):
            raise NeuroLMError("generate: every prompt needs at least one token and padding only at its end")
        cache = self.gpt.new_cache()
        h = self.text_hidden(batch, prompt_ids, prompt_mask, kv_cache=cache)
        step = self.gpt.lm_head(h[torch.arange(b, device=h.device), lengths - 1])  # the head only where it is read
        eeg_valid = batch.mask.bool() if batch is not None else prompt_mask.new_zeros(b, 0)
        key_valid = torch.cat([eeg_valid, prompt_mask], dim=1)
        position = self.text_start(batch, b, prompt_ids.device) + lengths
        summary = self.window_summary(batch)
        gated = summary is not None and self.summary.gate is not None
        if gated:  # the gate's running sum of the text embeddings
            total, count = (self.gpt.embed_tokens(prompt_ids) * prompt_mask[..., None]).sum(1), lengths
        tokens, scores = [], []
        for i in range(max_new_tokens):
            token = step[:, : self.config.vocab.text_vocab].argmax(dim=-1)
            tokens.append(token)
            scores.append(step)
            if i == max_new_tokens - 1:
                break
            embedded = self.gpt.embed_tokens(token[:, None])
            x = self.gpt.add_position(embedded, position[:, None])
            if summary is not None:
                if gated:
                    total, count = total + embedded[:, 0], count + 1
                x = x + self.summary.gated(summary, (total / count[:, None])[:, None] if gated else None
                                           ).to(x.dtype)
            h = self.gpt(x, decode_mask(key_valid, 1), cache, position[:, None])
            step = self.gpt.lm_head(h[:, -1])
            key_valid = torch.cat([key_valid, key_valid.new_ones(b, 1)], dim=1)
            position = position + 1
        return torch.stack(tokens, dim=1), torch.stack(scores, dim=1)

    # ------------------------------------------------------------------------------------------------ accounting
    def flops_per_token(self, seq_len: int, eeg: bool = True) -> float:
        """Training FLOPs per token (nanoGPT's estimate): 6 × trainable matmul parameters + attention, plus, for
        EEG tokens, the frozen encoder's forward pass (2 × its matmul parameters + attention)."""
        cfg = self.config.gpt
        lookups = {id(w) for w in self.gpt.lookup_weights()} | {id(self.pos_embed.weight)}
        n_lm = sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in lookups)
        flops = 6 * n_lm + 12 * cfg.n_layer * cfg.n_embd * seq_len
        if eeg:
            enc = self.tokenizer.VQ.encoder
            n_enc = sum(p.numel() for name, p in enc.named_parameters() if not name.endswith(("pos_embed.weight",
                                                                                              "time_embed.weight")))
            flops += 2 * n_enc + 4 * len(enc.blocks) * self.config.tokenizer.n_embd * seq_len
        return float(flops)

    # ----------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (the frozen encoder and quantizer included); with a Hugging
        Face backbone its tokenizer in ``backbone/``, with LoRA the adapters in ``adapter/`` (:mod:`.lora`)."""
        directory = Path(directory)
        if self.config.lora is None:
            save_artifacts(directory, self.config.to_dict(), self, "neurolm")
        else:
            base, adapter = lora.split_state(self.state_dict())
            save_state(directory, self.config.to_dict(), base, "neurolm")
            lora.save_adapter(directory, self.config.lora, adapter)
        if self.config.backbone is not None:
            self.text_tokenizer.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> NeuroLM:
        """Rebuild a model saved by :meth:`save_pretrained`; returned in eval mode."""
        directory = Path(directory)
        values, state = read_artifacts(directory, "NeuroLM model")
        config = NeuroLMConfig.from_dict(values)
        model = cls(config)
        if config.backbone is not None:
            model.text_tokenizer = load_text_tokenizer(directory, config.backbone)
        # directories written before the model kept only the encoder side also hold the tokenizer's other parts
        state = {k: v for k, v in state.items() if not k.startswith(TOKENIZER_ONLY)}
        if config.lora is not None:  # base weights under plain names + the adapters beside them
            lora.inject(model, config.lora)
            plain = {k.replace(".base_layer.", "."): k for k in model.state_dict() if ".lora_" not in k}
            state = {plain.get(k, k): v for k, v in state.items()} | lora.load_adapter(directory)
        load_state_exact(model, state, str(directory / WEIGHTS_FILE))
        return model.to(device).eval()

    @classmethod
    def from_backbone(cls, tokenizer: NeuralTokenizer, directory: str | Path, *, spectral_input: bool = True
                      ) -> NeuroLM:
        """A new NeuroLM around a trained tokenizer (copied and frozen) with the Hugging Face causal LM in
        ``directory`` as its backbone (:mod:`neurolm.lm.backbone`)."""
        spec, backbone, text_tokenizer = import_backbone(directory, tokenizer.config.codebook_size)
        model = cls(backbone_config(tokenizer.config, spec, spectral_input), backbone)
        model.tokenizer.copy_encoder_side(tokenizer)
        model.text_tokenizer = text_tokenizer
        return model

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: NeuralTokenizer,
        size: str = "B",
        init_gpt2_dir: str | Path | None = None,
        *,
        ref_text_positions: bool = False,
        gelu: str = "tanh",
        spectral_input: bool = True,
    ) -> NeuroLM:
        """A new NeuroLM around a trained tokenizer (copied and frozen), with a GPT of preset ``size``
        (``tiny|B|L|XL``) initialised from Hugging Face GPT-2 weights in ``init_gpt2_dir`` or at random.
        ``gelu``: GPT-2's ``"tanh"``, or ``"exact"`` as the authors' recipe (GPT-2 weights, erf GELU).
        ``spectral_input=False`` builds the reference's input (encoder features only)."""
        n_outputs = PADDED_VOCAB + tokenizer.config.codebook_size
        gpt = None
        if init_gpt2_dir is not None:
            gpt = GPT.from_hf_gpt2(init_gpt2_dir, n_outputs=n_outputs, gelu=gelu)
            wanted = GPTConfig.from_preset(size)
            have, want = (gpt.config.n_layer, gpt.config.n_head, gpt.config.n_embd), (
                wanted.n_layer, wanted.n_head, wanted.n_embd)
            if have != want:
                raise NeuroLMError(f"{init_gpt2_dir}: GPT-2 of {have[0]} layers × {have[2]} wide × {have[1]} heads "
                                   f"does not match size {size!r} ({want[0]} × {want[2]} × {want[1]})")
            gpt_config = gpt.config
        else:
            gpt_config = GPTConfig.from_preset(size, n_outputs=n_outputs, gelu=gelu)
        model = cls(NeuroLMConfig(gpt_config, replace(tokenizer.config), ref_text_positions, spectral_input))
        model.tokenizer.copy_encoder_side(tokenizer)
        if gpt is not None:
            model.gpt.load_state_dict(gpt.state_dict())
            return model
        table = tokenizer.wte.weight
        if tuple(table.shape) == (TEXT_VOCAB, gpt_config.n_embd):
            with torch.no_grad():
                model.gpt.transformer.wte.weight[:TEXT_VOCAB] = table
                model.gpt.lm_head.weight[:TEXT_VOCAB] = table
            log.info("GPT text embeddings initialised from the tokenizer's aligned text table")
        else:
            log.info("GPT text embeddings initialised at random: the tokenizer's text table is %s, the LM needs "
                     "(%d, %d)", tuple(table.shape), TEXT_VOCAB, gpt_config.n_embd)
        return model

    @classmethod
    def from_reference_checkpoint(
        cls, path: str | Path, vq_path: str | Path | None = None, *, ref_text_positions: bool = False,
        trust_checkpoint: bool = False,
    ) -> NeuroLM:
        """Load the authors' ``NeuroLM-B/L/XL.pt`` (with their ``VQ.pt`` for the quantizer, see module notes):
        exact GELU and GroupNorm over padding as their code (:mod:`neurolm.lm.reference`). Returned in eval mode.
        Both files are read weights-only; ``trust_checkpoint=True`` unpickles them fully (see
        :func:`neurolm.artifacts.load_torch_checkpoint`)."""
        from .reference import load_neurolm_checkpoint

        return load_neurolm_checkpoint(cls, path, vq_path, ref_text_positions=ref_text_positions,
                                       trust_checkpoint=trust_checkpoint)

    def save_reference_checkpoint(self, path: str | Path, vq_path: str | Path | None = None) -> None:
        """Write a ``NeuroLM-*.pt`` the authors' code reads (their keys and ``model_args``; the feature scaler
        folded into the encoder's final norm) and, with ``vq_path``, the tokenizer's ``VQ.pt``. Our loader reads
        them back bit-exactly (:mod:`neurolm.lm.reference`)."""
        from .reference import save_neurolm_checkpoint

        save_neurolm_checkpoint(self, path, vq_path)


def backbone_config(tokenizer: TokenizerConfig, spec: BackboneConfig, spectral_input: bool = True) -> NeuroLMConfig:
    """The config of a NeuroLM around ``tokenizer`` with the Hugging Face backbone ``spec`` (``gpt`` mirrors its
    shape)."""
    n_codes = tokenizer.codebook_size
    gpt_config = GPTConfig(**spec.sizes(), n_outputs=spec.code_offset + n_codes)
    return NeuroLMConfig(gpt_config, replace(tokenizer), False, spectral_input, backbone=spec)
