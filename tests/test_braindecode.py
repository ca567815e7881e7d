"""``neurolm.braindecode``: NeuroLM as a braindecode model and as a scikit-learn classifier of one task."""

from __future__ import annotations

import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch

try:  # the optional extra: pip install -e '.[braindecode]'
    import braindecode  # noqa: F401
except (ImportError, OSError) as exc:  # OSError: a torchaudio binary built for another torch
    pytest.skip(f"braindecode not importable ({exc}); pip install -e '.[braindecode]'", allow_module_level=True)
import mne  # noqa: E402

from neurolm.data.batch import collate_windows  # noqa: E402
from neurolm.data.channels import INDEX  # noqa: E402
from neurolm.errors import NeuroLMError  # noqa: E402
from neurolm.braindecode import NeuroLMEncoder, map_chs_info, recording_preprocessors  # noqa: E402
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["Fp1", "Fz", "Cz", "O2"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tok")
    NeuralTokenizer(TokenizerConfig.from_preset("tiny")).save_pretrained(out)
    return out


def _info(names=NAMES, sfreq=200.0):
    return mne.create_info(list(names), sfreq, "eeg")


def test_chs_info_maps_onto_the_vocabulary_and_unknown_channels_are_reported():
    info = _info(["EEG Fp1-REF", "fz", "T3", "EOG left", "Cz"])
    with pytest.raises(NeuroLMError, match=r"'EOG left'.*not 10-20 sites.*unknown_channels='warn'"):
        map_chs_info(info["chs"])
    with pytest.warns(UserWarning, match="channel 'EOG left' is not a 10-20 site"):
        keep, idx = map_chs_info(info["chs"], unknown="warn")
    assert keep == [0, 1, 2, 4] and idx == [INDEX["FP1"], INDEX["FZ"], INDEX["T3"], INDEX["CZ"]]
    _, aliased = map_chs_info(_info(["T3", "Cz"])["chs"], alias_t3_t7=True)
    assert aliased == [INDEX["T7"], INDEX["CZ"]]
    with pytest.raises(NeuroLMError, match="both the 10-20 site FP1"):
        map_chs_info(_info(["Fp1", "EEG FP1-LE"])["chs"])
    with pytest.raises(NeuroLMError, match="needs chs_info"):
        NeuroLMEncoder(n_outputs=2, n_chans=4, sfreq=200.0)


def test_tokens_are_the_pipelines_and_features_the_tokenizers(tokenizer_dir):
    """At 200 Hz in µV the model's patches are exactly what the pipeline's collate makes of a stored window, and its
    features are the tokenizer encoder's, mean-pooled."""
    info = _info()
    model = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=info["chs"], sfreq=200.0, n_outputs=2,
                                       input_unit="uV")
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 20, (2, 4, 600)).astype(np.float32))
    batch = model.to_batch(x)
    idx = np.array([INDEX[n.upper()] for n in NAMES])
    ref = collate_windows([{"signal": s.numpy() / 100, "chans": idx} for s in x])
    for name in ("patches", "chans", "times", "mask"):
        torch.testing.assert_close(getattr(batch, name), getattr(ref, name))
    tok = NeuralTokenizer.from_pretrained(tokenizer_dir)
    feats, _ = tok.encode(ref)
    torch.testing.assert_close(model(x, return_features=True), feats.mean(1))
    # volts at 256 Hz: resampled to 200 Hz (3 s → 600 samples), same scale
    hi = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=_info(sfreq=256.0)["chs"], sfreq=256.0, n_outputs=2)
    assert hi.to_batch(torch.randn(1, 4, 768) * 2e-5).patches.shape == (1, 12, 200)
    assert abs(float(hi.to_batch(torch.full((1, 4, 768), 1e-4)).patches.mean()) - 1.0) < 0.05  # 100 µV → 1.0


def test_save_and_from_pretrained_give_equal_outputs(tokenizer_dir, tmp_path):
    model = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=_info(sfreq=250.0)["chs"], sfreq=250.0, n_outputs=3)
    torch.nn.init.normal_(model.final_layer.weight)
    model.save_pretrained(tmp_path / "bd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # braindecode's note on deserialising chs_info
        again = NeuroLMEncoder.from_pretrained(tmp_path / "bd")
    x = torch.randn(2, 4, 500) * 2e-5
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert again.get_config()["tokenizer_config"] == asdict(model.encoder.config)
    rebuilt = NeuroLMEncoder.from_config(model.get_config())
    assert rebuilt(x).shape == (2, 3)
    model.reset_head(5)
    assert model(x).shape == (2, 5) and model.get_config()["n_outputs"] == 5


def test_lm_trunk_features(model, tmp_path):
    model.save_pretrained(tmp_path / "lm")
    NeuralTokenizer(model.config.tokenizer).save_pretrained(tmp_path / "tok")
    with pytest.raises(NeuroLMError, match="no LM trunk"):
        NeuroLMEncoder.from_neurolm(tmp_path / "tok", chs_info=_info()["chs"], sfreq=200.0, trunk=True)
    trunk = NeuroLMEncoder.from_neurolm(tmp_path / "lm", chs_info=_info()["chs"], sfreq=200.0, n_outputs=2,
                                        trunk=True)
    x = torch.randn(2, 4, 400) * 2e-5
    feats = trunk(x, return_features=True)
    assert feats.shape == (2, model.config.gpt.n_embd)
    batch = trunk.to_batch(x)
    e, _ = model.embed_eeg(batch)
    from neurolm.lm.mask import build_attention_mask

    h = model.gpt(e, build_attention_mask(batch.times, batch.mask), positions=batch.times)
    torch.testing.assert_close(feats, h.mean(1))


def test_eeg_classifier_trains_the_head_on_a_windows_dataset(tokenizer_dir):
    """braindecode's EEGClassifier fits encoder + head on a synthetic WindowsDataset; only the head learns."""
    from braindecode import EEGClassifier
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_windows_from_events, preprocess

    rng = np.random.default_rng(0)
    sfreq, n = 250.0, 20
    t = np.arange(int(sfreq * 2 * n)) / sfreq
    labels = np.arange(n) % 2
    freq = np.repeat(np.where(labels == 0, 10.0, 22.0), int(sfreq * 2))
    data = 3e-5 * np.sin(2 * np.pi * freq * t)[None] + 1e-6 * rng.normal(size=(4, t.size))
    raw = mne.io.RawArray(data, _info(sfreq=sfreq), verbose="error")
    raw.set_annotations(mne.Annotations(np.arange(n) * 2.0, 2.0, [("alpha", "beta")[k] for k in labels]))
    dataset = BaseConcatDataset([RawDataset(raw, {"subject": 1})])
    preprocess(dataset, recording_preprocessors(mains=50.0))
    windows = create_windows_from_events(dataset, trial_start_offset_samples=0, trial_stop_offset_samples=0,
                                         preload=True)
    module = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=raw.info["chs"], sfreq=sfreq, n_outputs=2,
                                         n_times=500)
    frozen = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    head = module.final_layer.weight.detach().clone()
    torch.manual_seed(0)
    clf = EEGClassifier(module, max_epochs=3, batch_size=8, lr=1e-2, train_split=None, verbose=0,
                        optimizer=torch.optim.Adam)
    clf.fit(windows, y=None)
    losses = clf.history[:, "train_loss"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert not torch.equal(module.final_layer.weight, head)
    for k, v in module.encoder.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert clf.predict_proba(windows).shape == (n, 2)


def test_task_classifier_answers_as_ask(model, tmp_path):
    """The scikit-learn classifier's probabilities are ``ask``'s scored answers, in the task's class order."""
    from sklearn.base import clone

    from neurolm.api import NeuroLM
    from neurolm.braindecode import NeuroLMTaskClassifier

    model.save_pretrained(tmp_path / "m")
    names = ["F4", "C4", "O2", "C3"]
    X = np.random.default_rng(0).normal(0, 20, (2, 4, 200 * 30))
    clf = clone(NeuroLMTaskClassifier(tmp_path / "m", "hmc", ch_names=names, sfreq=200.0, unit="uV"))
    with pytest.raises(NeuroLMError, match=r"labels \['sleepy'\] are not classes of task hmc"):
        clf.fit(X, ["W", "sleepy"])
    with pytest.warns(UserWarning, match="no training.json"):
        proba = clf.fit(X, ["W", "N2"]).predict_proba(X)
        (first,) = NeuroLM.from_pretrained(tmp_path / "m").ask(X[0], "hmc", ch_names=names, sfreq=200.0, unit="uV")
    assert list(clf.classes_) == ["W", "N1", "N2", "N3", "R"] and proba.shape == (2, 5)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert proba[0].tolist() == list(first.probabilities.values())
    with pytest.warns(UserWarning):
        assert clf.predict(X[:1]).tolist() == [first.label_name]


def test_features_transformer_in_a_sklearn_pipeline(tokenizer_dir):
    """MOABB hands pipelines bare arrays: the transformer gives the encoder's features, and a pipeline fits on them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from neurolm.braindecode import NeuroLMFeatures

    X = np.random.default_rng(0).normal(0, 20, (6, 4, 512))
    feats = NeuroLMFeatures(tokenizer_dir, ch_names=NAMES, sfreq=256.0).fit_transform(X)
    model = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=_info(sfreq=256.0)["chs"], sfreq=256.0,
                                       input_unit="uV")
    with torch.no_grad():
        np.testing.assert_allclose(feats, model(torch.from_numpy(X).float(), return_features=True).numpy(),
                                   rtol=1e-5, atol=1e-6)
    control = NeuroLMFeatures(None, ch_names=NAMES, sfreq=256.0, seed=1).fit_transform(X)  # fixture: seed 0
    assert control.shape == feats.shape and not np.allclose(control, feats)
    pipe = make_pipeline(NeuroLMFeatures(tokenizer_dir, ch_names=NAMES, sfreq=256.0), LogisticRegression())
    assert pipe.fit(X, [0, 1] * 3).predict(X).shape == (6,)


def test_open_eeg_bench_builds_and_adapts_the_encoder(tokenizer_dir, tmp_path):
    """Open EEG Bench's own backbone loader and fine-tuning strategies take the model: ``PretrainedBackbone`` builds
    it from its class path and a local checkpoint (every pretrained tensor found), ``Frozen`` leaves only
    ``final_layer`` trainable, ``LoRA`` adapts it and gradients reach the adapters."""
    oeb = pytest.importorskip("open_eeg_bench.backbone")
    finetuning = pytest.importorskip("open_eeg_bench.finetuning")
    pytest.importorskip("peft")

    chs = _info(sfreq=250.0)["chs"]
    ours = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=chs, sfreq=250.0, n_outputs=2, freeze=False)
    ours.save_pretrained(tmp_path / "ckpt")
    backbone = oeb.PretrainedBackbone(model_cls="neurolm.braindecode.NeuroLMEncoder",
                                      model_kwargs={"tokenizer_config": asdict(ours.encoder.config), "freeze": False},
                                      checkpoint_path=str(tmp_path / "ckpt" / "pytorch_model.bin"))
    built = backbone.build(n_chans=4, n_times=500, n_outputs=2, sfreq=250.0, chs_info=chs)
    x = torch.randn(3, 4, 500) * 2e-5
    torch.testing.assert_close(built.eval()(x, return_features=True), ours.eval()(x, return_features=True))
    frozen, _ = finetuning.Frozen().apply(built, backbone)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {"final_layer.weight", "final_layer.bias"}
    fresh = backbone.build(n_chans=4, n_times=500, n_outputs=2, sfreq=250.0, chs_info=chs)
    adapted, stats = finetuning.LoRA(r=4, alpha=8).apply(fresh, backbone)
    assert 0 < stats["trainable_params"] < stats["total_params"]
    adapted.train()
    adapted(x).sum().backward()
    lora = [p for n, p in adapted.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


def test_from_the_authors_vq_checkpoint(tokenizer_dir, tmp_path):
    """A ``VQ.pt`` in the authors' format gives the same encoder as the directory it was written from."""
    tok = NeuralTokenizer.from_pretrained(tokenizer_dir)
    tok.save_reference_checkpoint(tmp_path / "VQ.pt")
    chs = _info()["chs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the full-unpickling notice of foreign checkpoints
        from_pt = NeuroLMEncoder.from_neurolm(tmp_path / "VQ.pt", chs_info=chs, sfreq=200.0)
    from_dir = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=chs, sfreq=200.0)
    x = torch.randn(2, 4, 400) * 2e-5
    torch.testing.assert_close(from_pt(x, return_features=True), from_dir(x, return_features=True), rtol=0, atol=0)


def test_lm_trunk_from_the_authors_neurolm_checkpoint(tmp_path):
    """``NeuroLM-*.pt`` + ``VQ.pt`` in the authors' format give the trunk of the directory they were written from."""
    from neurolm.lm import NeuroLM

    torch.manual_seed(0)
    lm = NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny",
                                spectral_input=False).eval()  # the authors' format has no spectral input
    lm.save_pretrained(tmp_path / "lm")
    lm.save_reference_checkpoint(tmp_path / "NeuroLM-tiny.pt", vq_path=tmp_path / "VQ.pt")
    chs = _info()["chs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the full-unpickling notice of foreign checkpoints
        from_pt = NeuroLMEncoder.from_neurolm(tmp_path / "NeuroLM-tiny.pt", vq_path=tmp_path / "VQ.pt",
                                              chs_info=chs, sfreq=200.0, trunk=True)
    from_dir = NeuroLMEncoder.from_neurolm(tmp_path / "lm", chs_info=chs, sfreq=200.0, trunk=True)
    x = torch.randn(2, 4, 400) * 2e-5
    torch.testing.assert_close(from_pt(x, return_features=True), from_dir(x, return_features=True))


def test_hub_id_round_trip_offline(tokenizer_dir, tmp_path, monkeypatch):
    """``save_pretrained`` (what ``push_to_hub`` uploads) → a Hub cache → ``from_pretrained("org/name")`` offline."""
    import shutil

    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model = NeuroLMEncoder.from_neurolm(tokenizer_dir, chs_info=_info(sfreq=250.0)["chs"], sfreq=250.0, n_outputs=3)
    torch.nn.init.normal_(model.final_layer.weight)
    model.save_pretrained(tmp_path / "folder")
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = cache / "models--org--neurolm-encoder"
    shutil.copytree(tmp_path / "folder", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again = NeuroLMEncoder.from_pretrained("org/neurolm-encoder", revision=commit)
    x = torch.randn(2, 4, 500) * 2e-5
    torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
