"""The LM's spectral input: what it computes, that it carries what the tokenizer drops, and the reference switch."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from neurolm.data.batch import collate_windows
from neurolm.lm import NeuroLM, NeuroLMConfig
from neurolm.lm.spectral import BANDS_HZ, SUMMARY_SCALE, band_log_power, window_band_power
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig


@pytest.fixture(scope="module")
def tokenizer() -> NeuralTokenizer:
    torch.manual_seed(0)
    return NeuralTokenizer(TokenizerConfig.from_preset("tiny")).eval()


def _window(scale: float = 1.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(600) / 200.0
    signal = 0.3 * np.sin(2 * np.pi * 11 * t) + rng.normal(0, 0.05, (4, 600))
    return {"signal": (scale * signal).astype(np.float32), "chans": np.array([3, 7, 11, 20]), "label": 0}


def test_band_log_power_of_a_sinusoid():
    t = np.arange(200) / 200.0
    patch = torch.tensor(0.5 * np.sin(2 * np.pi * 11 * t), dtype=torch.float32)
    power = band_log_power(patch)
    assert power.shape == (len(BANDS_HZ),)
    assert int(power.argmax()) == BANDS_HZ.index((10, 13))  # 11 Hz lies in the high-alpha band
    # |rfft| of A sin at an exact bin is A * 200 / 2; the band mean spreads it over its 3 bins
    assert math.isclose(float(power[3]), math.log((0.5 * 100) ** 2 / 3 + 1e-6), rel_tol=1e-4)
    # scaling the signal by k shifts every band's log power by 2 log k (noise fills the other bands)
    noisy = patch + torch.tensor(np.random.default_rng(0).normal(0, 0.1, 200), dtype=torch.float32)
    shift = band_log_power(3 * noisy) - band_log_power(noisy)
    assert torch.allclose(shift, torch.full_like(shift, 2 * math.log(3)), atol=1e-3)


def test_spectral_input_is_added_to_the_reference_input(tokenizer):
    """Same weights otherwise: the two models' EEG embeddings differ by exactly the projected, standardised band
    power, zero on padding."""
    short = _window(4.0, 1)
    short = {**short, "signal": short["signal"][:2], "chans": short["chans"][:2]}  # fewer tokens: padded
    batch = collate_windows([_window(1.0), short])
    torch.manual_seed(1)
    plain = NeuroLM.from_tokenizer(tokenizer, "tiny", spectral_input=False).eval()
    torch.manual_seed(1)
    spectral = NeuroLM.from_tokenizer(tokenizer, "tiny").eval()
    with torch.no_grad():
        x_plain, _ = plain.embed_eeg(batch)
        x_spec, _ = spectral.embed_eeg(batch)
    expected = spectral.spectral_embed((band_log_power(batch.patches) - spectral.spectral_mean)
                                       / spectral.spectral_std) * batch.mask[..., None]
    assert not batch.mask[1].all() and expected[1, ~batch.mask[1]].abs().max() == 0
    torch.testing.assert_close(x_spec - x_plain, expected.detach(), atol=1e-5, rtol=1e-5)


def test_spectral_scaler_is_fitted_on_real_tokens(tokenizer):
    lm = NeuroLM.from_tokenizer(tokenizer, "tiny")
    batches = [collate_windows([_window(1.0, 0), _window(2.0, 1)]), collate_windows([_window(0.5, 2)])]
    lm.fit_feature_scaler(batches)
    spectra = torch.cat([band_log_power(b.patches[b.mask]) for b in batches]).double()
    torch.testing.assert_close(lm.spectral_mean, spectra.mean(0).float())
    torch.testing.assert_close(lm.spectral_std, spectra.std(0).float())


def test_reference_input_and_old_configs_have_no_spectral_part(tmp_path, tokenizer):
    lm = NeuroLM.from_tokenizer(tokenizer, "tiny", spectral_input=False)
    assert lm.spectral_embed is None
    assert not any("spectral" in k for k in lm.state_dict() if not k.startswith("tokenizer."))
    old = lm.config.to_dict()
    del old["spectral_input"]  # a config.json written before the switch existed
    assert NeuroLMConfig.from_dict(old).spectral_input is False
    on = NeuroLM.from_tokenizer(tokenizer, "tiny")
    on.fit_feature_scaler([collate_windows([_window(1.0), _window(2.0)])])
    on.save_pretrained(tmp_path)
    again = NeuroLM.from_pretrained(tmp_path)
    assert again.config.spectral_input
    for key in ("spectral_embed.weight", "spectral_mean", "spectral_std"):
        assert torch.equal(again.state_dict()[key], on.state_dict()[key])
    batch = collate_windows([_window(3.0)])
    with torch.no_grad():
        torch.testing.assert_close(again.embed_eeg(batch)[0], copy.deepcopy(on).eval().embed_eeg(batch)[0])


def _summary_model(tokenizer: NeuralTokenizer, spectral_input: bool = True) -> NeuroLM:
    torch.manual_seed(2)
    lm = NeuroLM.from_tokenizer(tokenizer, "tiny", spectral_input=spectral_input)
    lm.fit_feature_scaler([collate_windows([_window(1.0), _window(2.0, 1)])])
    return lm.eval()


def _fitted_summary(lm: NeuroLM) -> NeuroLM:
    return lm.add_window_summary([collate_windows([_window(1.0), _window(2.0, 1)]), collate_windows([_window(0.5, 3)])])


def test_window_band_power_is_the_log_mean_tapered_power_per_channel():
    short = _window(4.0, 1)
    short = {**short, "signal": short["signal"][:2], "chans": short["chans"][:2]}
    items = [_window(1.0), short]
    batch = collate_windows(items)
    power, present = window_band_power(batch.patches, batch.chans, batch.mask, 32)
    taper = np.hanning(201)[:200]  # periodic Hann
    for i, it in enumerate(items):
        assert present[i].nonzero().flatten().tolist() == sorted(it["chans"].tolist())
        for c, ch in enumerate(it["chans"]):
            patches = it["signal"][c].reshape(-1, 200).astype(np.float64)
            spec = np.abs(np.fft.rfft(patches * taper, axis=-1)) ** 2
            by_hand = np.log([spec[:, lo:hi].mean(-1).mean() + 1e-6 for lo, hi in BANDS_HZ])
            np.testing.assert_allclose(power[i, ch].numpy(), by_hand, rtol=1e-4, atol=1e-4)
    assert power[~present].abs().max() == 0


def test_window_summary_is_a_channel_weighted_map_of_the_window_band_power(tokenizer):
    """By hand: (s/C) Σ_c (A · z_c) ⊙ W[c], z_c the channel's standardised window band power, s the fixed scale."""
    lm = _fitted_summary(_summary_model(tokenizer))
    with torch.no_grad():
        lm.summary.embed.weight.normal_()
        lm.summary.chan.weight.normal_()
    short = _window(4.0, 1)
    short = {**short, "signal": short["signal"][:2], "chans": short["chans"][:2]}
    batch = collate_windows([_window(1.0), short])
    with torch.no_grad():
        got = lm.window_summary(batch)
        power, _ = window_band_power(batch.patches, batch.chans, batch.mask, lm.config.tokenizer.max_channels)
    for i, chans in enumerate([_window()["chans"], short["chans"]]):
        z = (power[i, chans] - lm.summary.mean) / lm.summary.std
        by_hand = sum(lm.summary.embed.weight @ z[c] * lm.summary.chan.weight[int(ch)]
                      for c, ch in enumerate(chans)) / len(chans) * lm.config.summary_scale
        torch.testing.assert_close(got[i], by_hand.detach(), atol=1e-5, rtol=1e-4)


def test_window_summary_scaler_is_fitted_on_the_windows_channels(tokenizer):
    lm = _summary_model(tokenizer)
    batches = [collate_windows([_window(1.0), _window(2.0, 1)]), collate_windows([_window(0.5, 3)])]
    lm.add_window_summary(batches)
    rows = []
    for b in batches:
        power, present = window_band_power(b.patches, b.chans, b.mask, lm.config.tokenizer.max_channels)
        rows.append(power[present])
    rows = torch.cat(rows).double()
    assert rows.shape[0] == 12  # 3 windows × 4 channels
    torch.testing.assert_close(lm.summary.mean, rows.mean(0).float())
    torch.testing.assert_close(lm.summary.std, rows.std(0).float())


@pytest.mark.parametrize("spectral_input", [True, False])
def test_window_summary_starts_as_a_no_op_and_shifts_every_text_token(tokenizer, spectral_input):
    lm = _summary_model(tokenizer, spectral_input)
    batch = collate_windows([_window(1.0), _window(3.0, 2)])
    prompt = torch.tensor([[50257, 40, 41, 42], [50257, 43, 44, 45]])
    with torch.no_grad():
        before = lm(batch, prompt)["logits"]
        _fitted_summary(lm)
        torch.testing.assert_close(lm(batch, prompt)["logits"], before)  # zero projection: nothing changes
        lm.summary.embed.weight.normal_(std=0.5)
        x_eeg, _ = lm.embed_eeg(batch)
        x, _, _ = lm._sequence(batch, prompt, None)
        plain = lm.gpt.transformer.wte(prompt) + lm.gpt.position(lm.text_start(batch, 2, prompt.device)[:, None]
                                                                   + torch.arange(4))
        torch.testing.assert_close(x[:, : x_eeg.shape[1]], x_eeg)  # the EEG tokens are untouched
        summary = lm.window_summary(batch)
        assert summary.abs().max() > 0
        torch.testing.assert_close(x[:, x_eeg.shape[1]:] - plain, summary[:, None].expand(-1, 4, -1))
        # generation adds it to every new token too: its scores equal a full forward over prompt + answer
        tokens, scores = lm.generate(batch, prompt, max_new_tokens=3)
        full = lm(batch, torch.cat([prompt, tokens[:, :-1]], dim=1))["logits"]
    torch.testing.assert_close(scores, full[:, 3:], atol=1e-4, rtol=1e-4)


def test_window_summary_saves_loads_and_old_configs_have_none(tmp_path, tokenizer):
    lm = _fitted_summary(_summary_model(tokenizer))
    with torch.no_grad():
        lm.summary.embed.weight.normal_()
    lm.save_pretrained(tmp_path)
    again = NeuroLM.from_pretrained(tmp_path)
    assert again.config.window_summary
    for key in ("summary.embed.weight", "summary.chan.weight", "summary.mean", "summary.std"):
        assert torch.equal(again.state_dict()[key], lm.state_dict()[key])
    assert again.config.summary_scale == again.summary.scale == SUMMARY_SCALE
    old = lm.config.to_dict()
    del old["summary_scale"]  # written at a5eb11c–ba935d1, trained at 0.1
    assert NeuroLMConfig.from_dict(old).summary_scale == 0.1
    del old["window_summary"]  # a config.json written before the summary existed
    assert NeuroLMConfig.from_dict(old).window_summary is False
    plain = NeuroLM.from_tokenizer(tokenizer, "tiny")
    assert plain.window_summary(collate_windows([_window()])) is None
    assert not any(k.startswith("summary.") for k in plain.state_dict())


def test_summary_scale_multiplies_the_output_and_is_saved(tmp_path, tokenizer):
    """``instruct --summary-scale S``: the same trained map at 0.3 and at 1 gives outputs in ratio 0.3; the scale is
    written to config.json and a model that has a summary keeps its own."""
    batch = collate_windows([_window(1.0), _window(2.0, 1)])
    outputs = {}
    for scale in (0.3, 1.0):
        torch.manual_seed(0)
        lm = _summary_model(tokenizer).add_window_summary([batch], scale)
        with torch.no_grad():
            lm.summary.embed.weight.normal_()
            outputs[scale] = lm.window_summary(batch)
        lm.add_window_summary([batch], 0.5)  # already has one: unchanged
        assert lm.config.summary_scale == lm.summary.scale == scale
    torch.testing.assert_close(outputs[0.3], 0.3 * outputs[1.0])
    lm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["summary_scale"] == 1.0
    assert NeuroLM.from_pretrained(tmp_path).summary.scale == 1.0
    plain = NeuroLM.from_tokenizer(tokenizer, "tiny")
    assert "summary_scale" not in plain.config.to_dict()  # configs without the summary are as before
