"""Hugging Face backbones and LoRA: tiny random Llama, Qwen2 and GPT-2 models built from config objects (no
download) with an offline BPE tokenizer; the HF GPT-2 path against the native GPT, the 4-D mask, positions, the KV
cache, save/load without the source directory, LoRA save/load/merge."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_backbones import transformers, write_backbone  # skips this module without transformers
from safetensors.torch import load_file

from neurolm.data.batch import collate_windows
from neurolm.instruct.data import _score_sequences, encode_task, score_answers
from neurolm.lm import NeuroLM, build_attention_mask
from neurolm.lm import lora
from neurolm.text import GPT2_VOCAB
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer() -> NeuralTokenizer:
    torch.manual_seed(0)
    return NeuralTokenizer(TokenizerConfig.from_preset("tiny", codebook_size=32)).eval()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {f: write_backbone(root / f, f, vocab_size=50257 if f == "gpt2" else None)
            for f in ("llama", "qwen2", "gpt2")}


@pytest.fixture(scope="module")
def models(dirs, tokenizer):
    torch.manual_seed(1)
    return {f: NeuroLM.from_backbone(tokenizer, d).eval() for f, d in dirs.items() if f != "gpt2"}


def eeg(seed: int = 0, spec=((3, 4), (2, 3))):
    rng = np.random.default_rng(seed)
    return collate_windows([{"signal": rng.normal(0, 0.2, (c, s * 200)).astype(np.float32),
                             "chans": rng.choice(90, size=c, replace=False), "label": 0} for c, s in spec])


def prompt(lm: NeuroLM, name: str = "hmc") -> torch.Tensor:
    return torch.tensor(encode_task(name, tokenizer=lm.text_tokenizer).prompt)


def test_layout_follows_the_tokenizer(models, dirs):
    lm = models["llama"]
    vocab = lm.config.vocab
    tok = lm.text_tokenizer.tokenizer
    assert vocab.text_vocab == len(tok) and vocab.eot == tok.eos_token_id
    assert vocab.instruction_start == len(tok) and vocab.code_offset % 64 == 0 and vocab.code_offset > len(tok)
    assert lm.gpt.lm_head.out_features == vocab.code_offset + 32
    assert lm.gpt.embed_tokens(torch.tensor([vocab.instruction_start])).shape == (1, 64)
    # answers end with the backbone's end-of-sequence id, and the tokenizer round-trips text
    assert encode_task("hmc", tokenizer=lm.text_tokenizer).answers[0][-1] == vocab.eot
    assert lm.text_tokenizer.decode(lm.text_tokenizer.encode("Answer: (W)")) == "Answer: (W)"
    # the model's weights: its table plus mean rows, its output rows at the head's text outputs
    source = transformers.AutoModelForCausalLM.from_pretrained(str(dirs["llama"]))
    table, old = lm.gpt.model.get_input_embeddings().weight, source.get_input_embeddings().weight
    assert torch.equal(table[: len(old)], old) and torch.allclose(table[len(old) :], old.mean(0).expand(48, -1))
    assert torch.equal(lm.gpt.lm_head.weight[: len(old)], source.get_output_embeddings().weight)


def test_hf_gpt2_equals_the_native_gpt_on_the_same_weights(dirs, tokenizer):
    torch.manual_seed(2)
    native = NeuroLM.from_tokenizer(tokenizer, "tiny", dirs["gpt2"]).eval()
    hf = NeuroLM.from_backbone(tokenizer, dirs["gpt2"]).eval()
    # marker 50257, codes from 50304: the native layout (text ids are the tiny tokenizer's)
    assert (hf.config.vocab.instruction_start, hf.config.vocab.code_offset) == (
        GPT2_VOCAB.instruction_start, GPT2_VOCAB.code_offset)
    # the blocks come from the same directory; copy what each side initialised on its own
    own = {k: v for k, v in native.state_dict().items() if not k.startswith("gpt.")}
    hf.load_state_dict(own, strict=False)
    with torch.no_grad():
        hf.gpt.lm_head.weight.copy_(native.gpt.lm_head.weight)
        hf.gpt.model.get_input_embeddings().weight.copy_(native.gpt.transformer.wte.weight)
    batch = eeg()
    ids = torch.tensor([[50257, 464, 2068, 318, 50256], [50257, 40, 716, 50256, 50256]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    a, b = native(batch, ids, mask)["logits"], hf(batch, ids, mask)["logits"]
    assert (a - b).abs().max() <= 1e-5
    a, b = native.eeg_forward(batch), hf.eeg_forward(batch)
    assert abs(float(a["loss"].detach()) - float(b["loss"].detach())) <= 1e-5
    a, b = native.text_forward(ids), hf.text_forward(ids)
    assert abs(float(a["loss"].detach()) - float(b["loss"].detach())) <= 1e-5
    a, b = (m.gpt.lm_head(m.text_hidden(None, ids)) for m in (native, hf))  # text-only logits
    assert (a - b).abs().max() <= 1e-5
    # the first generated step is read from the prompt's pass through each cache (later tokens differ: the HF side
    # only picks among its tiny tokenizer's 400 ids)
    _, sa = native.generate(batch, ids[:, :3], None, 1)
    _, sb = hf.generate(batch, ids[:, :3], None, 1)
    assert (sa - sb).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_4d_mask_reaches_attention_as_the_stair_step(models, family, monkeypatch):
    lm = models[family]
    batch = eeg()
    ids = prompt(lm)[None].expand(2, -1)
    text_mask = torch.ones_like(ids, dtype=torch.bool)
    text_mask[1, -3:] = False
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, *args, **kwargs):
        seen.append(attn_mask)
        return sdpa(q, k, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    lm.text_hidden(batch, ids, text_mask)
    want = build_attention_mask(batch.times, batch.mask, text_mask)
    seen = [m for m in seen if m is not None and m.is_floating_point()]  # the encoder's own masks are boolean
    assert len(seen) == lm.config.gpt.n_layer
    for got in seen:  # additive: 0 where the stair-step mask allows, the dtype's minimum where it does not
        assert torch.equal(got.expand_as(want) == 0, want)
        assert bool((got[~want.expand_as(got)] == torch.finfo(got.dtype).min).all())


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_visibility_and_positions(models, family, monkeypatch):
    lm = models[family]
    batch = eeg(spec=((3, 4),))
    ids = prompt(lm)[None]
    positions = []
    forward = lm.gpt.model.forward
    monkeypatch.setattr(lm.gpt.model, "forward", lambda **kw: positions.append(kw["position_ids"]) or forward(**kw))
    h = lm.text_hidden(batch, ids)
    # EEG tokens take their second as position, text continues after the last second
    assert torch.equal(positions[0][0, :12], batch.times[0])
    assert torch.equal(positions[0][0, 12:], 4 + torch.arange(ids.shape[1]))
    # a later second never changes an earlier one; the text sees all of it
    x, _ = lm.embed_eeg(batch)
    mask = build_attention_mask(batch.times, batch.mask)
    base = lm.gpt(x, mask, positions=batch.times)
    x2 = x.clone()
    x2[0, batch.times[0] == 3] += 1.0
    moved = lm.gpt(x2, mask, positions=batch.times)
    earlier = batch.times[0] < 3
    assert torch.allclose(base[0, earlier], moved[0, earlier], atol=1e-6)
    assert not torch.allclose(base[0, ~earlier], moved[0, ~earlier], atol=1e-3)
    assert h.shape == (1, ids.shape[1], 64)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_cached_generation_equals_full_forwards(models, family):
    lm = models[family]
    batch = eeg()
    p = prompt(lm)
    ids = torch.full((2, len(p)), lm.config.vocab.eot)
    ids[0], ids[1, :-2] = p, p[:-2]
    mask = ids != lm.config.vocab.eot
    mask[0] = True
    tokens, scores = lm.generate(batch, ids, mask, 4)
    for i in range(2):  # greedy without the cache, one full forward per new token
        n = int(mask[i].sum())
        seq = ids[i, :n]
        sub = type(batch)(**{k: v[i : i + 1] for k, v in vars(batch).items()})
        for t in range(4):
            logits = lm(sub, seq[None])["logits"][0, -1]
            assert torch.allclose(logits, scores[i, t], atol=1e-4)
            token = logits[: lm.config.vocab.text_vocab].argmax()
            assert int(token) == int(tokens[i, t])
            seq = torch.cat([seq, token[None]])


@pytest.mark.parametrize("family", ["mistral", "phi", "phi3"])
def test_other_families_keep_the_stair_step_and_the_cache(family, tokenizer, tmp_path):
    lm = NeuroLM.from_backbone(tokenizer, write_backbone(tmp_path / family, family)).eval()
    batch = eeg()
    x, _ = lm.embed_eeg(batch)
    mask = build_attention_mask(batch.times, batch.mask)
    x2 = x.clone()
    x2[0, batch.times[0] == 2] += 1.0
    base, moved = lm.gpt(x, mask, positions=batch.times), lm.gpt(x2, mask, positions=batch.times)
    earlier = (batch.times[0] < 2) & batch.mask[0]
    assert torch.allclose(base[0, earlier], moved[0, earlier], atol=1e-6)
    ids = prompt(lm)[None].expand(2, -1)
    tokens, scores = lm.generate(batch, ids, None, 3)
    full = lm(batch, torch.cat([ids, tokens[:, :2]], 1))["logits"][:, -1]
    assert torch.allclose(full, scores[:, 2], atol=1e-4)
    assert lora.add_lora(lm, 2).targets == lora.TARGETS[family]


def test_saved_model_loads_without_the_backbone_directory(dirs, tokenizer, tmp_path):
    src = shutil.copytree(dirs["qwen2"], tmp_path / "src")
    lm = NeuroLM.from_backbone(tokenizer, src).eval()
    lm.save_pretrained(tmp_path / "model")
    shutil.rmtree(src)
    back = NeuroLM.from_pretrained(tmp_path / "model")
    batch, ids = eeg(), prompt(lm)[None].expand(2, -1)
    assert torch.equal(lm(batch, ids)["logits"], back(batch, ids)["logits"])
    assert back.config.backbone.family == "qwen2" and back.text_tokenizer.vocab == lm.text_tokenizer.vocab
    assert (tmp_path / "model" / "backbone" / "tokenizer.json").is_file()


def test_multi_token_answers_are_scored_by_their_summed_log_probability(models):
    lm = models["llama"]
    batch = eeg()
    enc = encode_task("hmc", tokenizer=lm.text_tokenizer)
    fast = score_answers(lm, batch, ["hmc", "hmc"])
    slow = _score_sequences(lm, batch, ["hmc", "hmc"])
    # answers told apart by their first token: both ways give the same probabilities
    assert enc.single
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5) and abs(float(a.sum()) - 1) < 1e-5


def test_answers_sharing_their_first_token_are_scored_over_all_their_tokens(tokenizer, tmp_path):
    # a bytes-only tokenizer: " Neutral" and " Negative" both continue with "N" after the shared " "
    lm = NeuroLM.from_backbone(tokenizer, write_backbone(tmp_path / "bytes", "llama", tokenizer_vocab=257)).eval()
    enc = encode_task("seed", tokenizer=lm.text_tokenizer)
    assert not enc.single and len({t[0] for t in enc.option_tokens}) < len(enc.option_tokens)
    batch = eeg(spec=((3, 4), (3, 4)))
    probs = score_answers(lm, batch, ["seed", "seed"])
    with torch.no_grad():
        for i, p in enumerate(probs):  # brute force: one full forward per answer, log-probabilities of its tokens
            sub = type(batch)(**{k: v[i : i + 1] for k, v in vars(batch).items()})
            logp = []
            for option in enc.option_tokens:
                seq = torch.tensor(enc.prompt + enc.prefix + option)
                lp = torch.log_softmax(lm(sub, seq[None])["logits"][0], -1)
                start = len(enc.prompt) + len(enc.prefix) - 1
                logp.append(sum(float(lp[start + j, t]) for j, t in enumerate(option)))
            assert torch.allclose(p, torch.softmax(torch.tensor(logp), 0), atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "native"])
def test_lora_adapters_save_load_and_merge_to_the_same_outputs(models, tokenizer, family, tmp_path):
    torch.manual_seed(3)
    lm = NeuroLM.from_tokenizer(tokenizer, "tiny") if family == "native" else models["llama"]
    lm = NeuroLM.from_pretrained(_save(lm, tmp_path / "base")).eval()
    batch, ids = eeg(), torch.tensor([[lm.config.vocab.instruction_start, 5, 6, 7]] * 2)
    before = lm(batch, ids)["logits"]
    spec = lora.add_lora(lm, 4)
    assert spec.targets == lora.TARGETS["neurolm" if family == "native" else "llama"]
    assert torch.allclose(lm(batch, ids)["logits"], before)  # LoRA's B starts at zero
    with torch.no_grad():  # as if trained
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    tuned = lm(batch, ids)["logits"]
    assert not torch.allclose(tuned, before, atol=1e-4)
    n_trainable = lora.trainable_parameters(lm)
    assert 0 < n_trainable < sum(p.numel() for p in lm.parameters() if not p.is_meta)
    out = _save(lm, tmp_path / "lora")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not any(".lora_" in k or "base_layer" in k for k in load_file(out / "model.safetensors"))
    back = NeuroLM.from_pretrained(out).eval()
    assert back.config.lora == spec and lora.trainable_parameters(back) == n_trainable
    assert torch.allclose(back(batch, ids)["logits"], tuned, atol=1e-6)
    lora.merge_lora(back)
    assert back.config.lora is None and not any(".lora_" in k for k in back.state_dict())
    assert torch.allclose(back(batch, ids)["logits"], tuned, atol=1e-5)


def _save(lm: NeuroLM, path):
    lm.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory):
    """A hand-built HMC store (train/val/test) and a 30-s EDF of the HMC montage."""
    from conftest import write_edf
    from test_evaluate import make_store

    from neurolm.instruct import train as instruct_stage
    from neurolm.lm import pretrain as pretrain_stage

    tmp = tmp_path_factory.mktemp("e2e")
    store = make_store(tmp / "store", "hmc", 10, splits=("train", "val", "test"))
    edf = write_edf(tmp / "night.edf", ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EOG E1-M2"], 256.0, 30.0)
    with pytest.MonkeyPatch.context() as mp:  # a few validation windows: every evaluation is a few forwards
        mp.setattr(pretrain_stage, "VAL_WINDOWS", 8)
        mp.setattr(pretrain_stage, "UNIGRAM_WINDOWS", 16)
        mp.setattr(instruct_stage, "VAL_PER_TASK", 8)
        yield store, edf


@pytest.mark.parametrize("family,pretrain_rank,instruct_rank", [("llama", 0, 4), ("qwen2", 4, 0)])
def test_pretrain_instruct_evaluate_ask_end_to_end(dirs, tokenizer, pipeline_inputs, family, pretrain_rank,
                                                   instruct_rank, tmp_path, capsys):
    import json

    from neurolm.cli import main

    store, edf = pipeline_inputs
    tokenizer.save_pretrained(tmp_path / "tok")
    common = ["--steps", "2", "--batch-size", "2", "--device", "cpu"]
    assert main(["pretrain", "--tokenizer", str(tmp_path / "tok"), "--data", str(store), "--out",
                 str(tmp_path / "pre"), "--backbone", str(dirs[family]), "--lora-rank", str(pretrain_rank),
                 *common]) == 0
    report = json.loads((tmp_path / "pre" / "report.json").read_text())
    assert report["backbone"].startswith(family) and report["steps"] == 2 and math_finite(report["val"]["eeg_loss"])
    assert (report["lora"] is None) == (pretrain_rank == 0)
    assert 0 < report["params"] < report["total_params"]
    assert main(["instruct", "--model", str(tmp_path / "pre"), "--data", str(store), "--out", str(tmp_path / "ins"),
                 "--lora-rank", str(instruct_rank), *common]) == 0
    report = json.loads((tmp_path / "ins" / "report.json").read_text())
    assert report["steps"] == 2 and 0 <= report["val"]["ba_hmc"] <= 1
    assert (report["lora"] is not None) == (instruct_rank > 0)
    assert (tmp_path / "ins" / "adapter").is_dir() == (instruct_rank > 0)
    tuned = NeuroLM.from_pretrained(tmp_path / "ins")
    assert tuned.config.backbone.family == family
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "ins"), "--data", str(store), "--out", str(tmp_path / "ev"),
                 "--split", "test", "--batch-size", "4", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(metrics) == ["hmc"] and metrics["hmc"]["n"] > 0
    assert main(["ask", str(tmp_path / "ins"), str(edf), "--task", "hmc", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"asked hmc about {edf}: 1 window(s)")
    from neurolm.instruct.ask import ask

    (free,) = ask(tuned, edf, "hmc", question="Which sleep stage is this?", max_new_tokens=3)
    assert isinstance(free.answer, str) and free.label is None


def math_finite(x: float) -> bool:
    return bool(np.isfinite(x))


def test_activation_checkpointing_gives_the_same_gradients(dirs, tokenizer):
    torch.manual_seed(4)
    lm = NeuroLM.from_backbone(tokenizer, dirs["llama"]).train()
    batch = eeg()
    grads = []
    for on in (False, True):
        lm.gpt.activation_checkpointing = on
        lm.zero_grad()
        lm.eeg_forward(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name


def test_errors_name_the_problem(models, tokenizer, tmp_path):
    from neurolm.errors import NeuroLMError
    from neurolm.text import open_corpus

    with pytest.raises(NeuroLMError, match="no config.json"):
        NeuroLM.from_backbone(tokenizer, tmp_path)
    token_file = tmp_path / "text.bin"
    np.zeros(64, np.uint16).tofile(token_file)
    with pytest.raises(NeuroLMError, match="GPT-2 ids"):
        open_corpus(token_file, models["llama"].text_tokenizer)
    corpus, _ = open_corpus(None, models["llama"].text_tokenizer)  # the shipped corpus in the backbone's ids
    assert int(corpus.data.max()) < models["llama"].config.vocab.text_vocab
    with pytest.raises(NeuroLMError, match="Hugging Face backbone or LoRA"):
        models["llama"].save_reference_checkpoint(tmp_path / "NeuroLM-B.pt")


def test_missing_extra_says_how_to_install(monkeypatch, tokenizer, dirs):
    import sys

    from neurolm.errors import NeuroLMError

    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when it is absent
    with pytest.raises(NeuroLMError, match=r"pip install 'neurolm\[hf\]'"):
        NeuroLM.from_backbone(tokenizer, dirs["llama"])
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(NeuroLMError, match=r"pip install 'neurolm\[hf\]'"):
        lora.add_lora(NeuroLM.from_tokenizer(tokenizer, "tiny"), 2)
