"""The LM's spectral input: what it computes, that it carries what the tokenizer drops, and the reference switch."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from neurolm.data.batch import collate_windows
from neurolm.lm import NeuroLM, NeuroLMConfig
from neurolm.lm.spectral import BANDS_HZ, band_log_power
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
    assert lm.spectral_embed is None and not any("spectral" in k for k in lm.state_dict())
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
