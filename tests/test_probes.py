"""The probe tasks (classes that are not band-power contrasts) and the tokenizer switches they motivated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import welch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurolm.data.batch import collate_windows
from neurolm.data.synth.probes import PROBES, channel_indices, make_windows, write_probe_store
from neurolm.instruct.baseline import band_features
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig
from neurolm.tokenizer.model import spectral_targets


def _split_score(features: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> float:
    """Train on the first subjects, test on the last four (subject-wise, as the benchmark does)."""
    test = np.isin(subjects, sorted(set(subjects))[-4:])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    model.fit(features[~test], y[~test])
    return balanced_accuracy_score(y[test], model.predict(features[test]))


@pytest.fixture(scope="module")
def probes():
    return {p: make_windows(p, subjects=12, per_class=8, seed=0) for p in PROBES}


def test_probe_windows_are_deterministic_and_balanced(probes):
    x, y, s = make_windows("lines", subjects=12, per_class=8, seed=0)
    assert np.array_equal(x, probes["lines"][0]) and x.shape == (192, 8, 800) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [96, 96] and len(set(s)) == 12
    assert not np.array_equal(make_windows("lines", subjects=12, per_class=8, seed=1)[0], x)
    sd_uv = x.std(axis=2).mean() * 100
    assert 5 < sd_uv < 60  # scalp-EEG amplitudes in the stores' µV/100


def test_band_power_is_blind_to_every_probe_but_the_designed_view_is_not(probes):
    """Five-band power sits near chance on each probe; the feature each probe was designed around separates it."""
    designed = {
        "lines": lambda x: np.log(welch(x.astype(np.float64), fs=200, nperseg=400, axis=-1)[1][..., 6:90]),
        "evoked": lambda x: x.reshape(len(x), 8, 4, 200).mean(axis=2),
        "coupling": lambda x: np.einsum("nct,ndt->ncd", x, x)[:, 0, 5][:, None] / x.shape[-1],
    }
    for probe, (x, y, s) in probes.items():
        bands = np.array([band_features(w.astype(np.float64), 200.0) for w in x])
        assert _split_score(bands, y, s) < 0.65, probe
        assert _split_score(designed[probe](x).reshape(len(x), -1), y, s) > 0.75, probe


def test_reference_switches_are_the_defaults_and_change_nothing():
    """The dataclass defaults are REF's (old directories and the authors' checkpoints load as before); the tiny
    preset is where the measured changes live."""
    ref = TokenizerConfig()
    assert ref.spectral_embed is False and ref.freq_target == "amplitude"
    assert TokenizerConfig.from_preset("base").spectral_embed is False
    torch.manual_seed(0)
    model = NeuralTokenizer(TokenizerConfig.from_preset("tiny", spectral_embed=False))
    assert not any("spectral" in k for k in model.state_dict())
    x, _, _ = make_windows("lines", subjects=1, per_class=2, seed=0)
    batch = collate_windows([{"signal": w, "chans": channel_indices(), "label": 0} for w in x])
    freq, raw = spectral_targets(batch)
    amp = torch.fft.fft(batch.patches.float(), dim=-1).abs()
    z = (amp - amp.mean(dim=(1, 2), keepdim=True)) / amp.std(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(freq, z[..., :100], rtol=1e-4, atol=1e-4)


def test_spectral_embedding_adds_a_projection_of_the_per_window_log_spectrum():
    """The switch adds Linear(z-scored log amplitude) to the conv path's embedding, statistics over real tokens."""
    from neurolm.tokenizer.encoder import log_amplitude, masked_zscore

    x, _, _ = make_windows("lines", subjects=1, per_class=2, seed=0)
    batch = collate_windows([{"signal": x[0], "chans": channel_indices(), "label": 0},
                             {"signal": x[1][:, :400], "chans": channel_indices(), "label": 0}])
    torch.manual_seed(0)
    model = NeuralTokenizer(TokenizerConfig.from_preset("tiny", spectral_embed=True))
    assert "VQ.encoder.patch_embed.spectral.weight" in model.state_dict()
    embed = model.VQ.encoder.patch_embed
    with torch.no_grad():
        full = embed(batch.patches, batch.mask)
        expected = embed.spectral(masked_zscore(log_amplitude(batch.patches), batch.mask))
        embed.spectral.weight.zero_()
        embed.spectral.bias.zero_()
        conv_only = embed(batch.patches, batch.mask)
    torch.testing.assert_close(full - conv_only, expected, rtol=1e-4, atol=1e-5)
    # the spectrum is normalised per window: scaling a window leaves its spectral term unchanged (up to the floor)
    scaled = masked_zscore(log_amplitude(batch.patches * 3.0), batch.mask)
    torch.testing.assert_close(scaled, masked_zscore(log_amplitude(batch.patches), batch.mask), rtol=0, atol=0.05)


def test_freq_target_log_is_standardised_per_bin_over_real_tokens():
    x, _, _ = make_windows("lines", subjects=1, per_class=4, seed=0)
    items = [{"signal": w[:, : 200 * (1 + i % 3)], "chans": channel_indices(), "label": 0} for i, w in enumerate(x)]
    batch = collate_windows(items)
    freq, _ = spectral_targets(batch, "log")
    real = freq[batch.mask]
    torch.testing.assert_close(real.mean(0), torch.zeros(100), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(0), torch.ones(100), atol=1e-3, rtol=0)
    assert float(freq[~batch.mask].abs().max()) == 0.0


@pytest.mark.parametrize("bad", [{"spectral_embed": 1}, {"freq_target": "power"}])
def test_switches_are_validated(bad):
    from neurolm.errors import NeuroLMError

    with pytest.raises(NeuroLMError, match=next(iter(bad))):
        TokenizerConfig.from_preset("tiny", **bad)


def test_a_short_tokenizer_run_with_the_spectral_embedding_learns_the_line_and_the_evoked_probe(tmp_path, one_thread):
    """The CI-sized version of ``bench_quality.py probes``: the tiny tokenizer with ``--spectral-embed``, trained
    briefly on the probe stores, keeps a narrow-band line and a phase-locked deflection readable by a linear probe
    of its pooled features on subjects it never saw. (The authors' encoder loses the line; coupling, a cross-channel
    product, is read by neither: docs/results/2026-12-07-tokenizer-ladder.md.)"""
    from neurolm.data.store import WindowStore
    from neurolm.tokenizer.train import train_tokenizer

    stores = [write_probe_store(tmp_path / p, p, subjects=12, per_class=8, val=1, test=4) for p in ("lines", "evoked")]
    train_tokenizer(stores, tmp_path / "tok", steps=150, eval_every=150, progress=False, spectral_embed=True)
    model = NeuralTokenizer.from_pretrained(tmp_path / "tok")
    for store in map(WindowStore, stores):
        feats, labels, subjects = [], [], []
        for split in ("train", "test"):
            sp = store.split(split)
            items = [sp[i] for i in range(len(sp))]
            batch = collate_windows(items)
            f = model.encode(batch)[0]
            feats.append(f.reshape(len(items), -1, 8, f.shape[-1]).mean(1).flatten(1).numpy())
            labels.append(sp.labels)
            subjects.append(np.array([split] * len(items)))
        fit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.01)).fit(feats[0], labels[0])
        score = balanced_accuracy_score(labels[1], fit.predict(feats[1]))
        assert score > 0.6, (store.dataset, score)


def test_a_spectral_tokenizer_exported_in_the_authors_format_warns_and_reads_back(tmp_path):
    torch.manual_seed(0)
    model = NeuralTokenizer(TokenizerConfig.from_preset("tiny", spectral_embed=True))
    with pytest.warns(UserWarning, match="spectral patch embedding"):
        model.save_reference_checkpoint(tmp_path / "VQ.pt")
    again = NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt")
    assert again.config.spectral_embed
    assert torch.equal(again.state_dict()["VQ.encoder.patch_embed.spectral.weight"],
                       model.state_dict()["VQ.encoder.patch_embed.spectral.weight"])
