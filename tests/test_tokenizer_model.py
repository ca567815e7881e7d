import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist

import neurolm.tokenizer.quantizer as quantizer_module
from neurolm.data.batch import EEGBatch, collate_windows
from neurolm.errors import NeuroLMError
from neurolm.tokenizer import (GradReverse, NeuralTokenizer, NormEMAVectorQuantizer, TokenizerConfig, alignment_alpha,
                               code_usage, masked_group_norm, spectral_targets)
from neurolm.tokenizer.quantizer import l2norm


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning threads cost 10×."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides) -> TokenizerConfig:
    return TokenizerConfig.from_preset("tiny", text_vocab=300, **overrides)


def windows(n_chans=(3, 5), seconds=4, seed=0) -> list[dict]:
    """Noisy sines of random frequency/amplitude per channel, in µV/100."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * 200) / 200
    items = []
    for c in n_chans:
        freq, amp = rng.uniform(1, 40, (c, 1)), rng.uniform(0.2, 2.0, (c, 1))
        signal = amp * np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.2, (c, t.size))
        items.append({"signal": signal.astype(np.float32), "chans": rng.choice(120, c, replace=False), "label": 0})
    return items


def garbage_padding(batch: EEGBatch, seed=1) -> EEGBatch:
    """Fill padded positions with large random patches and random channels/times: the model must not care."""
    g = torch.Generator().manual_seed(seed)
    pad = ~batch.mask
    patches = torch.where(pad[..., None], 50 * torch.randn(batch.patches.shape, generator=g), batch.patches)
    chans = torch.where(pad, torch.randint(0, 256, batch.chans.shape, generator=g), batch.chans)
    times = torch.where(pad, torch.randint(0, 64, batch.times.shape, generator=g), batch.times)
    return EEGBatch(patches, chans, times, batch.mask, batch.labels, batch.n_chans)


def test_presets_and_validation():
    base = TokenizerConfig.from_preset("base")
    assert (base.n_layer, base.n_embd, base.n_head, base.decoder_layers) == (12, 768, 12, 4)
    assert (base.codebook_size, base.code_dim, base.max_channels, base.max_time, base.text_vocab) == (8192, 128, 256,
                                                                                                       64, 50257)
    assert not base.norm_over_padding
    assert TokenizerConfig.from_preset("tiny", dropout=0.1).dropout == 0.1
    for bad in (dict(n_embd=65), dict(dropout=1.0), dict(norm_over_padding="False"), dict(max_channels=100),
                dict(n_layer=0), dict(dead_code_threshold=-1.0)):
        with pytest.raises(NeuroLMError):
            tiny(**bad)
    with pytest.raises(NeuroLMError, match="tiny, base|base, tiny"):
        TokenizerConfig.from_preset("huge")
    with pytest.raises(NeuroLMError, match="colour"):
        TokenizerConfig.from_dict({"n_layer": 2, "colour": 1})


def test_forward_shapes_and_outputs():
    torch.manual_seed(0)
    model = NeuralTokenizer(tiny())
    batch = collate_windows(windows((3, 5), seconds=4))  # 12 and 20 tokens
    out = model(batch, text_ids=torch.randint(0, 300, (2, 7)), alpha=0.5)
    assert out["loss"].requires_grad and out["loss"].dim() == 0
    parts = out["loss_commit"] + out["loss_freq"] + out["loss_raw"] + out["loss_align"]
    assert torch.isclose(out["loss"].detach(), parts)
    assert 0.0 <= float(out["domain_acc"]) <= 1.0 and float(out["loss_align"]) > 0
    codes = out["codes"]
    assert codes.shape == (2, 20) and codes.dtype == torch.long
    assert (codes[~batch.mask] == -1).all() and (codes[batch.mask] >= 0).all() and (codes < 512).all()
    assert out["code_counts"].shape == (512,) and int(out["code_counts"].sum()) == 32
    util, perplexity = code_usage(out["code_counts"])
    assert 0 < util <= 32 / 512 and 1.0 <= perplexity <= 32

    no_text = model(batch)
    assert float(no_text["loss_align"]) == 0.0 and math.isnan(float(no_text["domain_acc"]))

    model.eval()
    feats, ids = model.encode(batch)
    assert feats.shape == (2, 20, 64) and torch.equal(ids, model.tokenize(batch))
    assert torch.equal(ids, model(batch)["codes"])  # eval forward neither re-inits nor moves the codebook
    freq, raw = model.reconstruct(batch)
    assert freq.shape == (2, 20, 100) and raw.shape == (2, 20, 200)
    assert (freq[~batch.mask] == 0).all() and (raw[~batch.mask] == 0).all()


def test_user_errors():
    model = NeuralTokenizer(tiny())
    batch = collate_windows(windows((2,), seconds=2))
    batch.times[0, 0] = 64
    with pytest.raises(NeuroLMError, match="64 s"):
        model.encode(batch)
    with pytest.raises(NeuroLMError, match="64"):
        model.set_text_embeddings(torch.zeros(10, 32))


def test_masked_group_norm_equals_group_norm_without_padding_and_ignores_padding():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 16)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 16, 10, 25)
    full = torch.ones(3, 10, dtype=torch.bool)
    torch.testing.assert_close(masked_group_norm(x, full, norm), norm(x), atol=1e-5, rtol=1e-5)
    mask = full.clone()
    mask[0, 6:] = False
    mask[2, 3:] = False
    y = masked_group_norm(x, mask, norm)
    torch.testing.assert_close(y[0, :, :6], norm(x[:1, :, :6])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[2, :, :3], norm(x[2:, :, :3])[0], atol=1e-5, rtol=1e-5)


def test_padding_changes_neither_real_features_codes_nor_losses():
    torch.manual_seed(0)
    # A codebook no larger than the init batch: k-means then has no duplicate codes, whose exact ties could flip.
    model = NeuralTokenizer(tiny(codebook_size=32))
    model(collate_windows(windows((4, 4), seconds=5, seed=3)))  # train-mode step: k-means init of the codebook
    model.eval()
    items = windows((3, 5), seconds=4)
    short = collate_windows(items)
    long = garbage_padding(collate_windows(items, max_tokens=48))
    f_short, c_short = model.encode(short)
    f_long, c_long = model.encode(long)
    torch.testing.assert_close(f_long[:, :20][short.mask], f_short[short.mask], atol=1e-5, rtol=1e-4)
    assert torch.equal(c_long[:, :20], c_short) and (c_long[:, 20:] == -1).all()
    text = torch.randint(0, 300, (2, 5))
    out_short, out_long = model(short, text, alpha=1.0), model(long, text, alpha=1.0)
    for key in ("loss", "loss_commit", "loss_freq", "loss_raw", "loss_align", "domain_acc"):
        torch.testing.assert_close(out_long[key], out_short[key], atol=1e-5, rtol=1e-4)
    for a, b in zip(spectral_targets(short), spectral_targets(long)):
        torch.testing.assert_close(b[:, :20], a)

    # REF: GroupNorm statistics include the padding, so the same EEG gets other features at another padded length.
    ref_style = NeuralTokenizer(replace(model.config, norm_over_padding=True))
    ref_style.load_state_dict(model.state_dict())
    ref_style.eval()
    drift = (ref_style.encode(long)[0][:, :20] - ref_style.encode(short)[0])[short.mask].abs().max()
    assert drift > 1e-3


def test_gradient_reversal_and_schedule():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = GradReverse.apply(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * w)
    assert alignment_alpha(0.0) == 0.0
    assert alignment_alpha(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert 0.9999 < alignment_alpha(1.0) < 1.0


def test_alignment_gradient_reaches_encoder_reversed():
    torch.manual_seed(0)
    model = NeuralTokenizer(tiny())
    model.eval()  # no codebook updates: every call below sees the same model
    batch = collate_windows(windows((3,), seconds=2))
    text = torch.randint(0, 300, (1, 6))
    params = [model.VQ.encoder.blocks[0].mlp.c_fc.weight, model.domain_classifier[0].weight]

    def grads(alpha):
        return torch.autograd.grad(model(batch, text, alpha=alpha)["loss"], params)

    (e0, c0), (e1, c1), (eq, cq) = grads(0.0), grads(1.0), grads(0.25)
    align = e1 - e0  # the encoder's alignment gradient at alpha = 1 (reconstruction part cancels)
    assert align.abs().max() > 1e-6
    torch.testing.assert_close(eq - e0, 0.25 * align, atol=1e-6 * align.abs().max().item(), rtol=1e-3)
    torch.testing.assert_close(c1, c0)  # the classifier itself is trained normally, whatever alpha
    torch.testing.assert_close(cq, c0)
    assert not model.wte.weight.requires_grad


def test_quantizer_outputs_codebook_rows_with_straight_through_gradient():
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(16, 8).eval()
    z = torch.randn(2, 5, 8, requires_grad=True)
    out = vq(z)
    torch.testing.assert_close(vq.codebook.norm(dim=-1), torch.ones(16))
    torch.testing.assert_close(out.quantized.detach(), vq.codebook[out.indices])
    expected_idx = (l2norm(z) @ vq.codebook.t()).argmax(-1)
    assert torch.equal(out.indices, expected_idx)
    w = torch.randn(2, 5, 8)
    (out.quantized * w).sum().backward()
    (expected,) = torch.autograd.grad((l2norm(z) * w).sum(), z)  # identity through the quantiser, then l2norm
    torch.testing.assert_close(z.grad, expected)


def test_reconstruction_gradient_reaches_encoder_through_quantizer():
    torch.manual_seed(0)
    model = NeuralTokenizer(tiny())
    batch = collate_windows(windows((3,), seconds=2))
    _, z = model._encode(batch)
    q = model.VQ.quantize(z, batch.mask)
    freq, _ = model._decode(q.quantized, batch)
    (freq ** 2).sum().backward()  # no commitment term: any encoder gradient came straight through
    assert model.VQ.encoder.patch_embed.conv1.weight.grad.abs().sum() > 0
    assert model.VQ.encode_task_layer[0].weight.grad.abs().sum() > 0


def test_ema_moves_used_codes_and_leaves_the_rest():
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(8, 4, decay=0.9).train()
    codebook = l2norm(torch.randn(8, 4))
    vq.embedding.weight.copy_(codebook)
    vq.embedding.initted.fill_(1)
    vq.cluster_size.fill_(2.0)
    near = lambda code, n: l2norm(codebook[code] + 0.3 * torch.randn(n, 4))  # noqa: E731
    z = torch.cat([near(0, 5), near(3, 4), near(5, 6)])[None]
    mask = torch.tensor([[True] * 9 + [False] * 6])  # the tokens near code 5 are padding
    idx = (z[0] @ codebook.t()).argmax(-1)
    out = vq(z, mask)
    assert torch.equal(out.indices[0, :9], idx[:9]) and (out.indices[0, 9:] == -1).all()
    used = set(idx[:9].tolist())
    assert 5 not in used and int(out.counts.sum()) == 9
    for code in range(8):
        if code in used:
            mean = l2norm(z[0, :9][idx[:9] == code].mean(0))
            expected = l2norm(0.9 * codebook[code] + 0.1 * mean)
            torch.testing.assert_close(vq.codebook[code], expected)
            assert vq.codebook[code] @ mean > codebook[code] @ mean  # moved towards its inputs
            assert vq.cluster_size[code] == pytest.approx(0.9 * 2.0 + 0.1 * int((idx[:9] == code).sum()))
        else:
            assert torch.equal(vq.codebook[code], codebook[code])
            assert vq.cluster_size[code] == pytest.approx(1.8)
    vq.eval()
    before = vq.codebook.clone()
    vq(z, mask)
    assert torch.equal(vq.codebook, before)


def test_kmeans_init_runs_once_on_real_tokens_only(monkeypatch):
    calls = []
    real_kmeans = quantizer_module.kmeans
    monkeypatch.setattr(quantizer_module, "kmeans", lambda *a, **k: calls.append(a[0].shape) or real_kmeans(*a, **k))
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(4, 3, dead_code_threshold=0.01)
    axes = torch.eye(3)
    real = torch.cat([axes[0] + 0.1 * torch.randn(20, 3), axes[1] + 0.1 * torch.randn(20, 3)])
    padded = axes[2] + 0.1 * torch.randn(30, 3)
    z = torch.cat([real, padded])[None]
    mask = torch.tensor([[True] * 40 + [False] * 30])
    vq.eval()(z, mask)
    assert calls == [] and vq.embedding.initted.item() == 0  # no init outside training
    vq.train()
    for _ in range(3):
        vq(z, mask)
    assert calls == [(40, 3)] and vq.embedding.initted.item() == 1
    assert (vq.codebook @ axes[2]).max() < 0.5  # no code was seeded from or pulled to the padding
    torch.testing.assert_close(vq.codebook.norm(dim=-1), torch.ones(4))


def test_dead_codes_are_reseeded_from_current_inputs():
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(6, 4, dead_code_threshold=0.2).train()
    vq.embedding.initted.fill_(1)
    vq.cluster_size.copy_(torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0, 0.5]))
    z = l2norm(vq.codebook[:5] + 0.01 * torch.randn(5, 4))[None]
    vq(z)
    assert (vq.codebook[5][None] @ z[0].t()).max() == pytest.approx(1.0, abs=1e-5)  # now equals one of the inputs
    assert vq.cluster_size[5] == pytest.approx(vq.cluster_size[:5].mean().item(), rel=0.2)

    off = NormEMAVectorQuantizer(6, 4, dead_code_threshold=0.0).train()
    off.embedding.initted.fill_(1)
    off.cluster_size.copy_(torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0, 0.5]))
    before = off.codebook[5].clone()
    off(l2norm(off.codebook[:5])[None])
    assert torch.equal(off.codebook[5], before)


def test_codebook_update_is_the_same_under_a_process_group(tmp_path):
    z = torch.randn(1, 50, 4)

    def run():
        torch.manual_seed(0)
        vq = NormEMAVectorQuantizer(8, 4, dead_code_threshold=0.1).train()
        for _ in range(3):
            vq(z)
        return vq.codebook.clone(), vq.cluster_size.clone()

    local = run()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        distributed = run()
    finally:
        dist.destroy_process_group()
    for a, b in zip(local, distributed):
        torch.testing.assert_close(a, b)


def test_spectral_targets_equal_numpy_fft_of_a_sine():
    t = np.arange(600) / 200
    signal = np.stack([np.sin(2 * np.pi * 10 * t), 0.5 * np.cos(2 * np.pi * 23 * t) + 0.1]).astype(np.float32)
    batch = collate_windows([{"signal": signal, "chans": [0, 1]}], max_tokens=9)  # 6 real tokens + 3 padded
    freq, raw = spectral_targets(batch)
    patches = batch.patches[0, :6].double().numpy()
    amp = np.abs(np.fft.fft(patches, axis=-1))
    expected_freq = ((amp - amp.mean()) / amp.std(ddof=1))[:, :100]
    expected_raw = (patches - patches.mean()) / patches.std(ddof=1)
    np.testing.assert_allclose(freq[0, :6].numpy(), expected_freq, atol=1e-4)
    np.testing.assert_allclose(raw[0, :6].numpy(), expected_raw, atol=1e-4)
    assert (freq[0, 6:] == 0).all() and (raw[0, 6:] == 0).all()
    assert freq[0, 0].argmax() == 10 and freq[0, 1].argmax() == 23  # 1 s patches: bin k = k Hz


def test_save_and_load_give_identical_tokens(tmp_path):
    torch.manual_seed(0)
    model = NeuralTokenizer(tiny())
    batch = collate_windows(windows((3, 5)))
    model(batch)  # k-means init + one EMA step, so the codebook state is non-trivial
    model.set_text_embeddings(torch.randn(400, 64))
    model.eval()
    model.save_pretrained(tmp_path / "tok")
    loaded = NeuralTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == model.config and loaded.config.text_vocab == 400 and not loaded.training
    assert not loaded.wte.weight.requires_grad
    torch.testing.assert_close(loaded.wte.weight, model.wte.weight)
    f0, c0 = model.encode(batch)
    f1, c1 = loaded.encode(batch)
    assert torch.equal(c0, c1)
    torch.testing.assert_close(f0, f1)
    with pytest.raises(NeuroLMError, match="config.json"):
        NeuralTokenizer.from_pretrained(tmp_path / "missing")


def reference_state(d=64, enc_layers=2, dec_layers=1, codes=64, code_dim=32, text_vocab=100) -> dict:
    """The key names of checkpoint-keys.md (VQ.pt), at a tiny size."""
    shapes = {
        "VQ.encoder.patch_embed.conv1.weight": (16, 1, 1, 15), "VQ.encoder.patch_embed.conv1.bias": (16,),
        "VQ.encoder.patch_embed.conv2.weight": (16, 16, 1, 3), "VQ.encoder.patch_embed.conv2.bias": (16,),
        "VQ.encoder.patch_embed.conv3.weight": (16, 16, 1, 3), "VQ.encoder.patch_embed.conv3.bias": (16,),
        "VQ.encoder.patch_embed.l.0.weight": (d, 400), "VQ.encoder.patch_embed.l.0.bias": (d,),
        "VQ.quantize.cluster_size": (codes,), "VQ.quantize.embedding.weight": (codes, code_dim),
        "VQ.quantize.embedding.cluster_size": (codes,), "VQ.quantize.embedding.embed_avg": (codes, code_dim),
        "VQ.quantize.embedding.initted": (1,),
        "VQ.encode_task_layer.0.weight": (d, d), "VQ.encode_task_layer.0.bias": (d,),
        "VQ.encode_task_layer.2.weight": (code_dim, d), "VQ.encode_task_layer.2.bias": (code_dim,),
        "VQ.decode_task_layer_freq.0.weight": (d, d), "VQ.decode_task_layer_freq.0.bias": (d,),
        "VQ.decode_task_layer_freq.2.weight": (100, d), "VQ.decode_task_layer_freq.2.bias": (100,),
        "VQ.decode_task_layer_raw.0.weight": (d, d), "VQ.decode_task_layer_raw.0.bias": (d,),
        "VQ.decode_task_layer_raw.2.weight": (200, d), "VQ.decode_task_layer_raw.2.bias": (200,),
        "domain_classifier.0.weight": (256, d), "domain_classifier.0.bias": (256,),
        "domain_classifier.2.weight": (2, 256), "domain_classifier.2.bias": (2,),
        "wte.weight": (text_vocab, d),
    }
    for k in (1, 2, 3):
        shapes[f"VQ.encoder.patch_embed.norm{k}.weight"] = shapes[f"VQ.encoder.patch_embed.norm{k}.bias"] = (16,)
    for name, layers in (("encoder", enc_layers), ("decoder_freq", dec_layers), ("decoder_raw", dec_layers)):
        shapes.update({f"VQ.{name}.pos_embed.weight": (256, d), f"VQ.{name}.time_embed.weight": (64, d),
                       f"VQ.{name}.fc_norm.weight": (d,), f"VQ.{name}.fc_norm.bias": (d,)})
        if name != "encoder":
            shapes.update({f"VQ.{name}.patch_embed.weight": (d, code_dim),
                           f"VQ.{name}.patch_embed.bias": (d,)})
        for i in range(layers):
            p = f"VQ.{name}.blocks.{i}."
            shapes.update({p + "ln_1.weight": (d,), p + "attn.c_attn.weight": (3 * d, d),
                           p + "attn.c_proj.weight": (d, d), p + "ln_2.weight": (d,),
                           p + "mlp.c_fc.weight": (4 * d, d), p + "mlp.c_proj.weight": (d, 4 * d)})
    g = torch.Generator().manual_seed(0)
    state = {k: 0.05 * torch.randn(s, generator=g) for k, s in shapes.items()}
    state["VQ.quantize.embedding.weight"] = l2norm(state["VQ.quantize.embedding.weight"])
    state["VQ.quantize.embedding.initted"] = torch.ones(1)
    return state


def save_reference(path, state, **extra):
    model = {("_orig_mod." + k if i % 2 else k): v for i, (k, v) in enumerate(state.items())}
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=1)
    ckpt = {"model": model, "encoder_args": args, "decoder_args": dict(args, n_layer=1, in_chans=32),
            "optimizer": {"state": {}, "param_groups": []}, "iter_num": 10, "epoch": 1, **extra}
    torch.save(ckpt, path)


def test_reference_checkpoint_loads_strictly_and_tokenizes(tmp_path):
    state = reference_state()
    save_reference(tmp_path / "VQ.pt", state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain checkpoint loads with weights_only=True
        model = NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt")
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.decoder_layers) == (2, 4, 64, 1)
    assert (cfg.codebook_size, cfg.code_dim, cfg.text_vocab) == (64, 32, 100)
    assert cfg.norm_over_padding and cfg.dead_code_threshold == 0.0 and not model.training
    own = model.state_dict()
    assert set(own) == set(state)
    for key in ("VQ.encoder.blocks.1.mlp.c_fc.weight", "VQ.decoder_raw.patch_embed.weight", "wte.weight"):
        assert torch.equal(own[key], state[key])
    batch = collate_windows(windows((3, 5)), max_tokens=24)
    codes = model.tokenize(batch)
    assert codes.shape == (2, 24) and (codes[batch.mask] >= 0).all() and (codes[batch.mask] < 64).all()

    del state["VQ.decoder_freq.blocks.0.ln_2.weight"]
    state["VQ.encoder.head.weight"] = torch.zeros(2, 64)
    save_reference(tmp_path / "broken.pt", state)
    with pytest.raises(NeuroLMError, match=r"missing keys \(1\): VQ.decoder_freq.blocks.0.ln_2.weight"):
        NeuralTokenizer.from_reference_checkpoint(tmp_path / "broken.pt")


class _TrainingArgs:  # stands in for an arbitrary pickled object stored beside the weights
    lr = 5e-5


def test_reference_checkpoint_with_pickled_objects_loads_only_when_trusted(tmp_path):
    """An object outside the weights-only allow-list is refused naming the file; the explicit opt-in loads it."""
    save_reference(tmp_path / "VQ.pt", reference_state(), args=_TrainingArgs())
    with pytest.raises(NeuroLMError, match="VQ.pt"):
        NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt")
    model = NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt", trust_checkpoint=True)
    assert model.config.codebook_size == 64
    with pytest.raises(NeuroLMError, match="no such checkpoint"):
        NeuralTokenizer.from_reference_checkpoint(tmp_path / "nope.pt")


def test_a_few_steps_lower_the_reconstruction_losses():
    torch.manual_seed(0)
    model = NeuralTokenizer(tiny())
    batch = collate_windows(windows((4, 6, 5), seconds=5, seed=7))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(25):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append(float(out["loss_freq"] + out["loss_raw"]))
    assert history[-1] < 0.92 * history[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_freq_bias_init_starts_the_decoder_at_the_mean_spectrum():
    torch.manual_seed(0)
    batch = collate_windows(windows((4, 6, 5), seconds=5, seed=7))
    target, _ = spectral_targets(batch)
    real = target[batch.mask]
    model = NeuralTokenizer(tiny()).eval()
    before = float(model(batch)["loss_freq"])
    model.init_freq_bias(batch)
    torch.testing.assert_close(model.VQ.decode_task_layer_freq[-1].bias, real.mean(0))
    after = float(model(batch)["loss_freq"])
    spread = float((real - real.mean(0)).square().mean())  # the best a constant prediction can do
    assert after < 1.1 * spread < before
