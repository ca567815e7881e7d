"""The NeuroLM language model: masks, GPT backbone, GPT-2 import, EEG + text model, checkpoints."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurolm.data.batch import EEGBatch, collate_windows
from neurolm.errors import NeuroLMError
from neurolm.lm import (
    GPT,
    IGNORE,
    GPTConfig,
    KVCache,
    NeuroLM,
    build_attention_mask,
    decode_mask,
    eeg_targets,
)
from neurolm.text import EOT, INSTRUCTION_START, PADDED_VOCAB, TEXT_VOCAB
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.tokenizer.encoder import TRAINING_ONLY

# ----------------------------------------------------------------------------------------------------------- helpers


def windows(spec: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """Store-like items: (channels, seconds) per window, random 20 µV-ish signals in µV/100, varied channels."""
    rng = np.random.default_rng(seed)
    return [
        {"signal": rng.normal(0, 0.2, (c, s * 200)).astype(np.float32),
         "chans": rng.choice(90, size=c, replace=False), "label": 0}
        for c, s in spec
    ]


@pytest.fixture(scope="module")
def tokenizer() -> NeuralTokenizer:
    torch.manual_seed(0)
    return NeuralTokenizer(TokenizerConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def model(tokenizer) -> NeuroLM:
    torch.manual_seed(1)
    return NeuroLM.from_tokenizer(tokenizer, "tiny").eval()


def brute_force_mask(times, mask, text_mask):
    b, n = times.shape
    m = 0 if text_mask is None else text_mask.shape[1]
    out = torch.zeros(b, 1, n + m, n + m, dtype=torch.bool)
    for s in range(b):
        for q in range(n + m):
            for k in range(n + m):
                q_eeg, k_eeg = q < n, k < n
                q_real = bool(mask[s, q]) if q_eeg else bool(text_mask[s, q - n])
                k_real = bool(mask[s, k]) if k_eeg else bool(text_mask[s, k - n])
                if not q_real:
                    allowed = q == k
                elif q_eeg:
                    allowed = k_eeg and k_real and times[s, k] <= times[s, q]
                else:
                    allowed = k_real and (k_eeg or k <= q)
                out[s, 0, q, k] = allowed
    return out


# -------------------------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("seed", range(4))
def test_mask_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    b, n, m = 3, 14, 5
    times = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.bool)
    text_mask = torch.zeros(b, m, dtype=torch.bool)
    for s in range(b):  # random layouts: C channels × A seconds, right-padded; text right-padded
        c = int(torch.randint(1, 5, (1,), generator=g))
        a = int(torch.randint(0, n // c + 1, (1,), generator=g))
        times[s, : a * c] = torch.arange(a).repeat_interleave(c)
        mask[s, : a * c] = True
        text_mask[s, : int(torch.randint(0, m + 1, (1,), generator=g))] = True
    got = build_attention_mask(times, mask, text_mask)
    assert got.shape == (b, 1, n + m, n + m)
    assert torch.equal(got, brute_force_mask(times, mask, text_mask))
    assert torch.equal(build_attention_mask(times, mask), brute_force_mask(times, mask, None))
    assert got.any(dim=-1).all()  # no empty softmax row


def test_decode_mask():
    valid = torch.tensor([[True, False, True], [False, True, True]])
    got = decode_mask(valid, 2)
    assert got.shape == (2, 1, 2, 5)
    assert got[0, 0].tolist() == [[True, False, True, True, False], [True, False, True, True, True]]


def test_eeg_targets_hand_layout():
    # 2 channels × 3 seconds + 2 padding tokens; token k = a*2 + c
    codes = torch.tensor([[10, 11, 20, 21, 30, 31, -1, -1]])
    times = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0]])
    chans = torch.tensor([[5, 7, 5, 7, 5, 7, 136, 136]])
    got = eeg_targets(codes, times, chans, torch.tensor([2]))
    assert got.tolist() == [[20, 21, 30, 31, IGNORE, IGNORE, IGNORE, IGNORE]]


# ---------------------------------------------------------------------------------------------------------------- GPT


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.from_preset("tiny")).eval()
    ids = torch.randint(0, TEXT_VOCAB, (2, 9))
    x = gpt.embed(ids)
    full = gpt(x)  # causal
    cache = KVCache(gpt.config.n_layer)
    parts = [gpt(x[:, :4], kv_cache=cache), gpt(x[:, 4:6], kv_cache=cache)]  # prefill, then a 2-token chunk
    parts += [gpt(x[:, t : t + 1], kv_cache=cache) for t in range(6, 9)]  # then one token at a time
    assert len(cache) == 9
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)

    # with the stair-step mask: prefill EEG+prompt, then decode steps with decode_mask
    times = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]])
    eeg_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    text_mask = torch.ones(2, 3, dtype=torch.bool)
    xs = torch.randn(2, 9, 64)
    full = gpt(xs, build_attention_mask(times, eeg_mask, text_mask))
    cache = KVCache(gpt.config.n_layer)
    pre = gpt(xs[:, :7], build_attention_mask(times, eeg_mask, text_mask[:, :1]), cache)
    valid = torch.cat([eeg_mask, text_mask[:, :1]], dim=1)
    steps = []
    for t in (7, 8):
        steps.append(gpt(xs[:, t : t + 1], decode_mask(valid), cache))
        valid = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], dim=1)
    real = torch.cat([eeg_mask, text_mask], dim=1)
    torch.testing.assert_close(torch.cat([pre, *steps], 1)[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["safetensors", "sharded", "bin"])
def test_hf_gpt2_import_reproduces_logits(tmp_path, variant):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=1024, vocab_size=TEXT_VOCAB)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    if variant == "safetensors":
        hf.save_pretrained(tmp_path)
    elif variant == "sharded":  # how large checkpoints (GPT-2 XL) are written
        hf.save_pretrained(tmp_path, max_shard_size="2MB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    else:
        cfg.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ours = GPT.from_hf_gpt2(tmp_path, n_outputs=PADDED_VOCAB + 512).eval()
    assert ours.transformer.wte.weight.shape == (PADDED_VOCAB, 64)
    assert ours.config.gelu == "tanh"  # what GPT-2 was trained with
    assert ours.lm_head.weight.shape == (PADDED_VOCAB + 512, 64)
    ids = torch.randint(0, TEXT_VOCAB, (2, 12))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours.lm_head(ours(ours.embed(ids)))
    torch.testing.assert_close(got[..., :TEXT_VOCAB], expected, atol=1e-4, rtol=1e-4)
    new_rows = ours.transformer.wte.weight[TEXT_VOCAB:]
    assert 0 < new_rows.std() < 0.05  # enlarged rows: small random, not zeros


def test_hf_import_errors(tmp_path):
    with pytest.raises(NeuroLMError, match="config.json"):
        GPT.from_hf_gpt2(tmp_path)


# ----------------------------------------------------------------------------------------------------------- NeuroLM


def test_eeg_forward_shapes_and_encoder_once(model):
    batch = collate_windows(windows([(3, 4), (2, 6), (4, 2)]))
    calls = []
    handle = model.tokenizer.VQ.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = model.eeg_forward(batch)
        assert len(calls) == 1
        # (3 ch × 3 s) + (2 × 5) + (4 × 1) tokens have a next second
        assert int(out["tokens"]) == 9 + 10 + 4
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and 0 <= float(out["accuracy"]) <= 1
        ids = torch.full((3, 4), EOT)
        ids[:, 0] = INSTRUCTION_START
        model(batch, ids)
        assert len(calls) == 2  # one more step, one more encoder pass
    finally:
        handle.remove()


def test_codes_only_eeg_loss_is_cross_entropy_over_the_code_rows(model):
    batch = collate_windows(windows([(3, 4), (2, 6)]))
    with torch.no_grad():
        full, codes_only = model.eeg_forward(batch), model.eeg_forward(batch, codes_only=True)
        x, codes = model.embed_eeg(batch)
        h = model.gpt(x, build_attention_mask(batch.times, batch.mask))
        targets = eeg_targets(codes, batch.times, batch.chans, batch.n_chans)
        keep = targets != -100
        logits = model.gpt.lm_head(h[keep])
    by_hand = F.cross_entropy(logits[:, PADDED_VOCAB:], targets[keep])
    assert torch.allclose(codes_only["loss"], by_hand, atol=1e-5)
    assert torch.allclose(full["loss"], F.cross_entropy(logits, targets[keep] + PADDED_VOCAB), atol=1e-5)
    assert codes_only["loss"] < full["loss"]  # the same code logits, normalised over fewer outputs
    assert int(codes_only["tokens"]) == int(full["tokens"]) == int(keep.sum())


def test_feature_scaler_standardises_the_encoder_features(tokenizer):
    torch.manual_seed(1)
    model = NeuroLM.from_tokenizer(tokenizer, "tiny", spectral_input=False).eval()  # the feature term alone
    batches = [collate_windows(windows([(3, 4), (2, 6)])), collate_windows(windows([(4, 3)]))]
    fitted = copy.deepcopy(model)
    assert torch.equal(fitted.feature_mean, torch.zeros_like(fitted.feature_mean))  # identity until fitted
    codes = fitted.fit_feature_scaler(batches)
    assert all(torch.equal(c, model.tokenizer.tokenize(b)) for c, b in zip(codes, batches))  # the same pass's codes
    with torch.no_grad():
        feats = torch.cat([model.tokenizer.encode(b)[0][b.mask] for b in batches])
        z = (feats - fitted.feature_mean) / fitted.feature_std
        assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4)
        assert torch.allclose(z.std(0), torch.ones(z.shape[1]), atol=1e-3)
        # the embedding is the standardised feature (+ channel and time embeddings): the widths match here
        assert isinstance(fitted.encode_transform_layer, torch.nn.Identity)
        x, _ = fitted.embed_eeg(batches[1])
        x0, _ = model.embed_eeg(batches[1])
        assert torch.allclose(x - x0, (feats[-12:] - fitted.feature_mean) / fitted.feature_std - feats[-12:],
                              atol=1e-5)


def test_lm_part_is_causal_over_seconds(model):
    """The GPT with the stair-step mask: changing the inputs of second 2 leaves outputs of seconds 0–1 unchanged."""
    batch = collate_windows(windows([(3, 4), (2, 3)]))
    x, _ = model.embed_eeg(batch)
    mask = build_attention_mask(batch.times, batch.mask)
    with torch.no_grad():
        base = model.gpt(x, mask)
        later = batch.times >= 2
        y = x + 5.0 * later[..., None] * torch.randn_like(x)
        changed = model.gpt(y, mask)
    early = batch.mask & ~later
    torch.testing.assert_close(changed[early], base[early], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed[later & batch.mask], base[later & batch.mask])
    # tokens of the same second see each other (channels are predicted jointly from the same context)
    assert bool(mask[0, 0, 0, 2]) and not bool(mask[0, 0, 0, 3])


def test_text_causality_and_padding_invariance(model):
    batch = collate_windows(windows([(3, 4), (2, 3)], seed=2))
    padded = collate_windows(windows([(3, 4), (2, 3)], seed=2), max_tokens=20)
    ids = torch.tensor([[INSTRUCTION_START, 15496, 995, 262, EOT, EOT], [INSTRUCTION_START, 262, 995, 15496, 262, EOT]])
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        base = model(batch, ids, text_mask)["logits"]
        later = ids.clone()
        later[:, 3] = 50
        changed = model(batch, later, text_mask)["logits"]
        torch.testing.assert_close(changed[:, :3], base[:, :3])  # a later text token changes no earlier output
        assert not torch.allclose(changed[:, 3:4], base[:, 3:4])
        # extra EEG padding and different text padding ids change nothing on real positions
        repad = ids.clone()
        repad[0, 4:] = 7
        again = model(padded, repad, text_mask)["logits"]
        torch.testing.assert_close(again[text_mask], base[text_mask], atol=1e-4, rtol=1e-4)
        assert torch.isfinite(again).all()
        e1, e2 = model.eeg_forward(batch), model.eeg_forward(padded)
        torch.testing.assert_close(e1["loss"], e2["loss"], atol=1e-5, rtol=1e-5)


def test_text_positions_per_sample_or_batch_wide(tokenizer):
    batch = collate_windows(windows([(3, 4), (2, 6)]))
    ours = NeuroLM.from_tokenizer(tokenizer, "tiny")
    ref = NeuroLM.from_tokenizer(tokenizer, "tiny", ref_text_positions=True)
    assert ours.text_start(batch, 2, torch.device("cpu")).tolist() == [4, 6]
    assert ref.text_start(batch, 2, torch.device("cpu")).tolist() == [6, 6]
    assert ours.text_start(None, 2, torch.device("cpu")).tolist() == [0, 0]


def test_generate_matches_uncached_greedy(model):
    batch = collate_windows(windows([(3, 3), (2, 4)], seed=3))
    prompts = torch.tensor([[INSTRUCTION_START, 15496, 995, EOT], [INSTRUCTION_START, 262, EOT, EOT]])
    prompt_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    tokens, scores = model.generate(batch, prompts, prompt_mask, max_new_tokens=4)
    assert tokens.shape == (2, 4) and scores.shape == (2, 4, PADDED_VOCAB + 512)
    assert int(tokens.max()) < TEXT_VOCAB
    for s in range(2):  # recompute each sample from scratch without a cache or padding
        one = EEGBatch(*(t[s : s + 1] for t in batch.__dict__.values()))
        seq = prompts[s : s + 1, : int(prompt_mask[s].sum())]
        for i in range(4):
            with torch.no_grad():
                logits = model(one, seq)["logits"][0, -1]
            torch.testing.assert_close(scores[s, i], logits, atol=1e-4, rtol=1e-4)
            nxt = logits[:TEXT_VOCAB].argmax()
            assert int(nxt) == int(tokens[s, i])
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    with pytest.raises(NeuroLMError, match="padding only at its end"):
        model.generate(batch, prompts, torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool))


def test_instruction_loss_counts_only_targets(model):
    ids = torch.tensor([[INSTRUCTION_START, 15496, 995, 3363, EOT, EOT]])
    targets = torch.full_like(ids, IGNORE)
    targets[0, 2], targets[0, 3] = 3363, EOT  # answer " Yes" then the end token
    batch = collate_windows(windows([(2, 3)]))
    out = model(batch, ids, torch.ones_like(ids, dtype=torch.bool), targets)
    logp = torch.log_softmax(out["logits"][0].float(), dim=-1)
    expected = -(logp[2, 3363] + logp[3, EOT]) / 2
    torch.testing.assert_close(out["loss"], expected)


def test_training_steps_lower_eeg_loss(tokenizer):
    torch.manual_seed(0)
    model = NeuroLM.from_tokenizer(tokenizer, "tiny").train()
    batch = collate_windows(windows([(4, 5), (3, 6), (2, 8), (4, 4)], seed=5))
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in model.tokenizer.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    frozen = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    losses = []
    for _ in range(8):
        loss = model.eeg_forward(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # from ln(50816) ≈ 10.8 at init to below chance among the 512 codes (ln 512 ≈ 6.2)
    assert losses[-1] < min(losses[0] - 3.0, math.log(512)), losses
    assert not model.tokenizer.training
    assert all(torch.equal(v, model.tokenizer.state_dict()[k]) for k, v in frozen.items())
    text = torch.randint(0, TEXT_VOCAB, (2, 17))
    out = model.text_forward(text)  # through the chunked head: no logits, the loss of the full ones
    full = model(None, text[:, :-1], text_targets=text[:, 1:])
    assert "logits" not in out and full["logits"].shape == (2, 16, PADDED_VOCAB + 512)
    torch.testing.assert_close(out["loss"], full["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["accuracy"], full["accuracy"])


def test_from_tokenizer_initialises_text_rows(tokenizer, model):
    table = tokenizer.wte.weight
    assert torch.equal(model.gpt.transformer.wte.weight[:TEXT_VOCAB], table)
    assert torch.equal(model.gpt.lm_head.weight[:TEXT_VOCAB], table)
    assert isinstance(model.encode_transform_layer, torch.nn.Identity)
    wide = NeuroLM.from_tokenizer(tokenizer, "tiny", ref_text_positions=False)
    assert wide.flops_per_token(256) > wide.flops_per_token(128) > wide.flops_per_token(128, eeg=False) > 0


def test_save_and_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path)
    again = NeuroLM.from_pretrained(tmp_path)
    batch = collate_windows(windows([(3, 3)]))
    ids = torch.tensor([[INSTRUCTION_START, 15496, 995]])
    with torch.no_grad():
        torch.testing.assert_close(again(batch, ids)["logits"], model(batch, ids)["logits"])
    assert again.config == model.config
    with pytest.raises(NeuroLMError, match="missing"):
        NeuroLM.from_pretrained(tmp_path / "nope")


def test_model_keeps_only_the_encoder_side_and_old_directories_load(tmp_path, tokenizer, model):
    """A NeuroLM holds the tokenizer's encoder, task layer and quantizer only (smaller files); a directory written by
    a version that kept the whole tokenizer still loads to the same model."""
    from safetensors.torch import load_file, save_file

    assert not any(k.startswith("tokenizer.") and k.removeprefix("tokenizer.").startswith(TRAINING_ONLY)
                   for k in model.state_dict())
    assert all(torch.equal(v, tokenizer.state_dict()[k.removeprefix("tokenizer.")])
               for k, v in model.state_dict().items() if k.startswith("tokenizer."))
    model.save_pretrained(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    whole = {**load_file(tmp_path / "new" / "model.safetensors"),
             **{"tokenizer." + k: v for k, v in tokenizer.state_dict().items() if k.startswith(TRAINING_ONLY)}}
    save_file(whole, old / "model.safetensors")
    new_size, old_size = ((d / "model.safetensors").stat().st_size for d in (tmp_path / "new", old))
    assert new_size < 0.7 * old_size  # tiny: 27.4 MB instead of 41.0 MB
    again = NeuroLM.from_pretrained(old)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------------------------- reference checkpoints


def reference_keys(n_layer, d, enc_layers, d_enc, codebook) -> dict[str, tuple[int, ...]]:
    """Names and shapes of checkpoint-keys.md's NeuroLM-*.pt, scaled down."""
    keys = {"GPT2.transformer.wte.weight": (PADDED_VOCAB, d), "GPT2.transformer.wpe.weight": (1024, d),
            "GPT2.transformer.ln_f.weight": (d,), "GPT2.transformer.ln_f.bias": (d,),
            "GPT2.lm_head.weight": (PADDED_VOCAB + codebook, d), "pos_embed.weight": (256, d)}
    for i in range(n_layer):
        p = f"GPT2.transformer.h.{i}."
        keys.update({p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "attn.c_attn.weight": (3 * d, d),
                     p + "attn.c_attn.bias": (3 * d,), p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                     p + "ln_2.weight": (d,), p + "ln_2.bias": (d,), p + "mlp.c_fc.weight": (4 * d, d),
                     p + "mlp.c_fc.bias": (4 * d,), p + "mlp.c_proj.weight": (d, 4 * d), p + "mlp.c_proj.bias": (d,)})
    t = "tokenizer.patch_embed."
    keys.update({t + "conv1.weight": (16, 1, 1, 15), t + "conv2.weight": (16, 16, 1, 3),
                 t + "conv3.weight": (16, 16, 1, 3), t + "l.0.weight": (d_enc, 400), t + "l.0.bias": (d_enc,)})
    for k in (1, 2, 3):
        keys.update({f"{t}conv{k}.bias": (16,), f"{t}norm{k}.weight": (16,), f"{t}norm{k}.bias": (16,)})
    keys.update({"tokenizer.pos_embed.weight": (256, d_enc), "tokenizer.time_embed.weight": (64, d_enc),
                 "tokenizer.fc_norm.weight": (d_enc,), "tokenizer.fc_norm.bias": (d_enc,)})
    for i in range(enc_layers):
        p = f"tokenizer.blocks.{i}."
        keys.update({p + "ln_1.weight": (d_enc,), p + "attn.c_attn.weight": (3 * d_enc, d_enc),
                     p + "attn.c_proj.weight": (d_enc, d_enc), p + "ln_2.weight": (d_enc,),
                     p + "mlp.c_fc.weight": (4 * d_enc, d_enc), p + "mlp.c_proj.weight": (d_enc, 4 * d_enc)})
    if d != d_enc:  # NeuroLM-L / -XL
        keys.update({"encode_transform_layer.0.weight": (d, d_enc), "encode_transform_layer.0.bias": (d,)})
    return keys


def test_reference_checkpoint_loads(tmp_path, tokenizer):
    torch.manual_seed(0)
    shapes = reference_keys(n_layer=2, d=96, enc_layers=2, d_enc=64, codebook=512)
    state = {k: 0.02 * torch.randn(s) for k, s in shapes.items()}
    stored = {("_orig_mod." + k if i % 3 == 0 else k): v for i, (k, v) in enumerate(state.items())}
    ckpt = {"model": stored, "model_args": dict(n_layer=2, n_head=4, n_embd=96, block_size=1024, bias=True,
                                                vocab_size=50257, dropout=0.0), "iter_num": 10}
    torch.save(ckpt, tmp_path / "NeuroLM-T.pt")
    with pytest.warns(UserWarning, match="vq_path"):
        lm = NeuroLM.from_reference_checkpoint(tmp_path / "NeuroLM-T.pt")
    assert (lm.config.gpt.n_layer, lm.config.gpt.n_embd, lm.config.gpt.n_outputs) == (2, 96, PADDED_VOCAB + 512)
    assert torch.equal(lm.gpt.transformer.h[1].mlp.c_fc.bias, state["GPT2.transformer.h.1.mlp.c_fc.bias"])
    encoder = lm.tokenizer.VQ.encoder
    assert torch.equal(encoder.blocks[0].attn.c_attn.weight, state["tokenizer.blocks.0.attn.c_attn.weight"])
    assert torch.equal(lm.encode_transform_layer[0].weight, state["encode_transform_layer.0.weight"])
    assert lm.config.tokenizer.norm_over_padding

    # with the authors' VQ.pt the quantizer comes along: codes equal the VQ's own
    # the authors' VQ has no spectral embedding (the tiny preset's does)
    vq_state = {k: v.clone() for k, v in tokenizer.state_dict().items() if ".spectral." not in k}
    for k, v in state.items():
        if k.startswith("tokenizer."):
            vq_state["VQ.encoder." + k[len("tokenizer."):]] = v
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=1)
    torch.save({"model": vq_state, "encoder_args": args, "decoder_args": {**args, "n_layer": 1}}, tmp_path / "VQ.pt")
    lm = NeuroLM.from_reference_checkpoint(tmp_path / "NeuroLM-T.pt", vq_path=tmp_path / "VQ.pt")
    vq = NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt")
    batch = collate_windows(windows([(3, 4), (2, 2)]), max_tokens=16)
    assert torch.equal(lm.tokenizer.encode(batch)[1], vq.encode(batch)[1])
    assert torch.isfinite(lm.eeg_forward(batch)["loss"])

    del stored[next(k for k in stored if re.search(r"h\.1\.ln_2\.bias$", k))]
    torch.save(ckpt, tmp_path / "broken.pt")
    with pytest.raises(NeuroLMError, match=r"missing keys \(1\): gpt.transformer.h.1.ln_2.bias"):
        NeuroLM.from_reference_checkpoint(tmp_path / "broken.pt", vq_path=tmp_path / "VQ.pt")
