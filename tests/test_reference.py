"""Settings and conversions for the authors' checkpoints (REF): GELU variant, reference padding, export round trip.

The comparison with REF's own outputs is in ``test_fidelity.py``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from neurolm.data.batch import REF_PRETRAIN_TOKENS, collate_windows, reference_padding
from neurolm.errors import NeuroLMError
from neurolm.instruct.data import EEG_MAX_TOKENS, collate_eeg, scoring_prompts
from neurolm.lm import GPTConfig, NeuroLM, NeuroLMConfig
from neurolm.lm.gpt import GPT
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def windows(spec: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """Store-like items of ``(channels, seconds)`` at 200 Hz, signal in µV/100."""
    rng = np.random.default_rng(seed)
    return [{"signal": rng.normal(0, 0.3, (c, s * 200)).astype(np.float32), "chans": np.arange(c) + 3, "label": 0}
            for c, s in spec]


def tiny_lm(seed: int = 0, **kwargs) -> NeuroLM:
    torch.manual_seed(seed)
    return NeuroLM.from_tokenizer(NeuralTokenizer(TokenizerConfig.from_preset("tiny")), "tiny", **kwargs).eval()


# ------------------------------------------------------------------------------------------------------------- GELU


def test_gelu_is_a_recorded_setting_and_old_configs_keep_tanh(tmp_path):
    assert GPTConfig().gelu == "tanh"
    with pytest.raises(NeuroLMError, match="gelu='erf'"):
        GPTConfig(gelu="erf")
    exact = GPT(GPTConfig.from_preset("tiny", gelu="exact"))
    assert exact.transformer.h[0].mlp.gelu.approximate == "none"

    model = tiny_lm()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["gpt"]["gelu"] == "tanh"
    del config["gpt"]["gelu"]  # a directory written before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = NeuroLM.from_pretrained(tmp_path)
    assert old.config.gpt.gelu == "tanh"
    assert old.gpt.transformer.h[1].mlp.gelu.approximate == "tanh"
    batch = collate_windows(windows([(3, 3)]))
    ids, mask = scoring_prompts(["workload"])
    with torch.no_grad():
        assert torch.equal(old(batch, ids, mask)["logits"], model(batch, ids, mask)["logits"])
        # the variant changes the outputs: an exact-GELU copy of the same weights disagrees
        exact = NeuroLM(NeuroLMConfig.from_dict({**config, "gpt": {**config["gpt"], "gelu": "exact"}})).eval()
        exact.load_state_dict(model.state_dict())
        assert not torch.allclose(exact(batch, ids, mask)["logits"], model(batch, ids, mask)["logits"], atol=1e-7)
    assert tiny_lm(gelu="exact").config.gpt.gelu == "exact"


# ---------------------------------------------------------------------------------------------------------- padding


def test_reference_padding_lengths():
    assert reference_padding(True, REF_PRETRAIN_TOKENS) == 1024
    assert reference_padding(False, REF_PRETRAIN_TOKENS) is None
    items = windows([(3, 2), (4, 5)])
    assert collate_eeg(items, norm_over_padding=True).mask.shape == (2, EEG_MAX_TOKENS) == (2, 276)
    assert collate_eeg(items).mask.shape == (2, 20)  # our default: the batch's longest window
    with pytest.raises(NeuroLMError, match=r"recording\.edf: windows of 300 EEG tokens exceed the 276"):
        collate_eeg(windows([(25, 12)]), "recording.edf", norm_over_padding=True)


@pytest.mark.parametrize("norm_over_padding", [True, False])
def test_outputs_do_not_depend_on_batch_mates(norm_over_padding):
    """A window's answer scores are the same alone and beside a longer window, with REF's switch (thanks to the
    fixed padding) and with ours (statistics over real tokens)."""
    torch.manual_seed(0)
    tokenizer = NeuralTokenizer(TokenizerConfig.from_preset("tiny", norm_over_padding=norm_over_padding))
    model = NeuroLM.from_tokenizer(tokenizer, "tiny").eval()
    short, long = windows([(3, 2), (6, 8)], seed=1)
    ids, mask = scoring_prompts(["workload"])
    with torch.no_grad():
        alone = model(collate_eeg([short], norm_over_padding=norm_over_padding), ids, mask)["logits"][0]
        pair = collate_eeg([short, long], norm_over_padding=norm_over_padding)
        together = model(pair, ids.expand(2, -1), mask.expand(2, -1))["logits"][0]
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
        if norm_over_padding:  # the padding itself matters under REF's switch: hence one fixed length everywhere
            unpadded = model(collate_windows([short]), ids, mask)["logits"][0]
            assert (unpadded - alone).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------- export


def fitted_lm(**kwargs) -> NeuroLM:
    """A tiny model as our pipeline leaves it: a fitted (non-identity) feature scaler."""
    model = tiny_lm(seed=3, **kwargs)
    model.fit_feature_scaler([collate_windows(windows([(3, 4), (5, 2), (4, 3)], seed=2))])
    assert not torch.allclose(model.feature_std, torch.ones_like(model.feature_std))
    return model


def test_tokenizer_export_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    tokenizer = NeuralTokenizer(TokenizerConfig.from_preset("tiny")).eval()
    with pytest.warns(UserWarning, match="GroupNorm statistics over real tokens"):
        tokenizer.save_reference_checkpoint(tmp_path / "VQ.pt")
    raw = torch.load(tmp_path / "VQ.pt", weights_only=True)  # what REF's loaders read
    assert raw["encoder_args"] == dict(n_layer=2, n_head=4, n_embd=64, block_size=1024, bias=False, dropout=0.0,
                                       num_classes=0, in_chans=1, out_chans=16)
    assert raw["decoder_args"]["n_layer"] == 1 and raw["decoder_args"]["in_chans"] == 32
    assert {"VQ.encoder.patch_embed.conv1.weight", "VQ.quantize.embedding.embed_avg", "wte.weight",
            "domain_classifier.2.bias"} <= set(raw["model"])
    again = NeuralTokenizer.from_reference_checkpoint(tmp_path / "VQ.pt")
    assert again.config == tokenizer.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in tokenizer.state_dict().items())


def test_lm_export_round_trip_is_bit_exact(tmp_path):
    model = fitted_lm().add_window_summary([collate_windows(windows([(3, 4), (5, 2)], seed=6))])
    with torch.no_grad():
        model.summary.embed.weight.normal_()  # a tuned summary, so the outputs depend on it
    with pytest.warns(UserWarning) as caught:  # REF's code would compute what REF's file format cannot say
        model.save_reference_checkpoint(tmp_path / "NeuroLM.pt", vq_path=tmp_path / "VQ.pt")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and "tanh GELU" in messages[0] and "spectral input" in messages[1]
    raw = torch.load(tmp_path / "NeuroLM.pt", weights_only=True)
    assert raw["model_args"] == dict(n_layer=2, n_head=4, n_embd=64, block_size=1024, bias=True, vocab_size=50304,
                                     dropout=0.0)
    assert not any(k.startswith(("gpt.", "feature_", "spectral_", "summary.")) for k in raw["model"])
    assert {"GPT2.lm_head.weight", "tokenizer.fc_norm.bias", "pos_embed.weight"} <= set(raw["model"])
    again = NeuroLM.from_reference_checkpoint(tmp_path / "NeuroLM.pt", vq_path=tmp_path / "VQ.pt")
    assert again.config == model.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    batch = collate_windows(windows([(3, 4), (5, 2)], seed=5))
    ids, mask = scoring_prompts(["workload", "workload"])
    with torch.no_grad():
        assert torch.equal(again(batch, ids, mask)["logits"], model(batch, ids, mask)["logits"])


def test_exported_lm_computes_our_outputs_as_the_reference_reads_it(tmp_path):
    """Without our private entry (what REF's code sees: its keys and args only) the folded scaler and the exact
    GELU give our model's outputs (of a model without the spectral input, which REF's format cannot hold)."""
    model = fitted_lm(spectral_input=False)
    model.config.gpt.gelu = "exact"
    for block in model.gpt.transformer.h:
        block.mlp.gelu.approximate = "none"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_reference_checkpoint(tmp_path / "NeuroLM.pt", vq_path=tmp_path / "VQ.pt")
    for name in ("NeuroLM.pt", "VQ.pt"):
        raw = torch.load(tmp_path / name, weights_only=True)
        del raw["neurolm"]
        torch.save(raw, tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NeuroLM.from_reference_checkpoint(tmp_path / "NeuroLM.pt", vq_path=tmp_path / "VQ.pt")
    assert theirs.config.tokenizer.norm_over_padding and theirs.config.gpt.gelu == "exact"
    assert torch.equal(theirs.feature_std, torch.ones_like(theirs.feature_std))
    batch = collate_windows(windows([(4, 3)], seed=6))  # one unpadded window: REF's GroupNorm sees no padding
    ids, mask = scoring_prompts(["workload"])
    with torch.no_grad():
        torch.testing.assert_close(theirs(batch, ids, mask)["logits"], model(batch, ids, mask)["logits"],
                                   atol=1e-5, rtol=1e-5)


def test_every_eeg_stage_pads_to_the_reference_length_under_the_switch(tmp_path):
    """Tokenizer training and pretraining collate 1024 tokens per sample under REF's switch, their longest window
    otherwise (instruction tuning, evaluation and ask share :func:`collate_eeg`, tested above)."""
    from neurolm.data.store import MANIFEST, SplitBuffer, WindowStore, write_split
    from neurolm.lm.pretrain import PretrainTask
    from neurolm.text import default_corpus
    from neurolm.tokenizer.train import TokenizerTask
    from neurolm.train import TrainConfig

    buf = SplitBuffer()
    for i, item in enumerate(windows([(4, 5)] * 4)):
        buf.add(item["signal"], item["chans"], -1, 5.0 * i, "s0", "f.edf")
    write_split(tmp_path, "train", buf)
    (tmp_path / MANIFEST).write_text(json.dumps({"dataset": "pretrain", "complete": True, "classes": []}))
    store = WindowStore(tmp_path)
    cfg = TrainConfig(steps=1, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.0,
                      betas=(0.9, 0.95), grad_clip=None, eval_every=1, log_every=1, ckpt_every=1, device="cpu")
    text = default_corpus()
    for switch, length in ((True, 1024), (False, 20)):
        config = TokenizerConfig.from_preset("tiny", norm_over_padding=switch)
        stages = [TokenizerTask([store], config, cfg, text=text, text_weight=torch.zeros(10, 64)),
                  PretrainTask([store], NeuralTokenizer(config), "tiny", cfg, text=text, text_batch=1, text_length=16)]
        for stage in stages:
            assert stage.batch(0, 0, 0, 1)["eeg"].mask.shape == (2, length), (type(stage).__name__, switch)
