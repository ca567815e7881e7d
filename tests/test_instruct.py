"""Instruction sequences, answer-only loss, scored answers and the instruction-tuning stage."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurolm.data.batch import collate_windows
from neurolm.errors import NeuroLMError
from neurolm.instruct.data import (EEG_MAX_TOKENS, TEXT_LENGTH, collate_eeg, collate_texts, encode_task,
                                   score_answers, training_text)
from neurolm.instruct.tasks import TASKS
from neurolm.instruct.train import InstructObjective, balanced_order, drop_tokens, keep_tokens
from neurolm.lm import IGNORE
from neurolm.lm.cache import EncoderCache
from neurolm.text import EOT, INSTRUCTION_START, TextTokenizer


def task_windows(name: str, n: int, seed: int = 0) -> list[dict]:
    """Store-like items with the task's channel count and window length."""
    rng = np.random.default_rng(seed)
    c, t = len(TASKS[name].channels), int(TASKS[name].window_s * 200)
    return [{"signal": rng.normal(0, 0.2, (c, t)).astype(np.float32), "chans": np.arange(c), "label": i % 2,
             "dataset": name} for i in range(n)]


def test_text_is_prompt_then_answer_and_padded_with_eot():
    tok = TextTokenizer()
    for name, task in TASKS.items():
        for label in range(task.n_classes):
            ids, targets, mask = training_text(name, label)
            assert ids.shape == targets.shape == mask.shape == (TEXT_LENGTH,)
            real = ids[mask].tolist()
            assert real[0] == INSTRUCTION_START
            assert tok.decode(real[1:]) == task.text(label)
            assert (ids[~mask] == EOT).all() and mask[: mask.sum()].all()


@pytest.mark.parametrize("name,label,trained,reference", [
    ("tuab", 1, [3363, 220, EOT], False),               # " Yes" + " <|endoftext|>"
    ("seed", 2, [36183, 220, EOT], False),              # " Negative"
    ("tuev", 2, [357, 34, 8, 220, EOT], False),         # " (" is trained for every lettered task
    ("hmc", 0, [357, 32, 8, 220, EOT], False),
    ("tusl", 2, [357, 34, 8, 220, EOT], False),
    ("tuab", 1, [3363, 220, EOT], True),                # the reference's mask: the same for word answers,
    ("tuev", 2, [357, 34, 8, 220, EOT], True),          # " (" trained for TUEV ...
    ("hmc", 0, [357, 32, 8, 220, EOT], True),           # ... and HMC
    ("tusl", 2, [34, 8, 220, EOT], True),               # but not for TUSL
])
def test_loss_only_on_the_answer(name, label, trained, reference):
    ids, targets, _ = training_text(name, label, reference_mask=reference)
    kept = targets != IGNORE
    assert targets[kept].tolist() == trained
    # nanoGPT convention: the target of position j is the token at j + 1
    assert (targets[kept] == ids[1:][kept[:-1]]).all()
    n_prompt = len(encode_task(name).prompt)
    assert not kept[: n_prompt - 1].any()


def test_answers_differ_in_one_scored_token():
    assert encode_task("tuab").options == (1400, 3363) and encode_task("tuab").prefix == ()
    assert encode_task("tuev").prefix == (357,) and encode_task("tuev").options == tuple(range(32, 38))
    with pytest.raises(NeuroLMError, match="no instruction task"):
        encode_task("pretrain")
    with pytest.raises(NeuroLMError, match="label 5"):
        training_text("tuab", 5)


def test_scored_probabilities_match_the_full_forward(model):
    items = task_windows("hmc", 2) + task_windows("tuab", 1)
    names = [it["dataset"] for it in items]
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    probs = score_answers(model, eeg, names)
    assert [p.shape[0] for p in probs] == [5, 5, 2]
    for p in probs:
        assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5) and (p > 0).all()
    # the same window alone through the ordinary forward, logits of the scored tokens at the prompt's last position
    for i, name in enumerate(names):
        enc = encode_task(name)
        ids = torch.tensor([enc.prompt + enc.prefix])
        one = collate_windows([items[i]], EEG_MAX_TOKENS)
        logits = model(one, ids)["logits"][0, -1, list(enc.options)]
        torch.testing.assert_close(probs[i], torch.softmax(logits, -1), atol=1e-5, rtol=1e-4)


def test_objective_equals_forward_with_answer_targets(model):
    items = task_windows("tusl", 2) + task_windows("workload", 2)
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    crops = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(0))
    out = InstructObjective(model)(eeg, ids, targets, mask, crops)
    full = model(eeg, ids, mask, targets)["loss"]
    text = model.text_forward(crops)["loss"]
    torch.testing.assert_close(out["loss_answer"], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["loss"], full + text, atol=1e-5, rtol=1e-5)


def test_texts_pad_to_the_longest_and_the_loss_is_that_of_80_tokens(model):
    """Trailing padding is trimmed to the batch's longest text; the answer loss and its gradient equal those of the
    texts padded to 80 (REF's length), since no real token attends to the padding after it."""
    items = task_windows("tuab", 2) + task_windows("hmc", 2)
    names, labels = [it["dataset"] for it in items], [it["label"] for it in items]
    ids, targets, mask = collate_texts(names, labels)
    full = [torch.stack(t) for t in zip(*(training_text(n, y) for n, y in zip(names, labels)))]
    longest = int(full[2].sum(1).max())
    assert ids.shape == (4, longest) and longest < TEXT_LENGTH and bool(mask[:, -1].any())
    assert torch.equal(ids, full[0][:, :longest]) and torch.equal(targets, full[1][:, :longest])
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    crops = torch.randint(0, 50257, (1, 17), generator=torch.Generator().manual_seed(0))
    losses, grads = [], []
    for i, t, m in ((ids, targets, mask), full):
        model.zero_grad()
        out = InstructObjective(model)(eeg, i, t, m, crops)
        out["loss"].backward()
        losses.append(out["loss_answer"])
        grads.append(model.gpt.lm_head.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_length_groups_give_the_loss_and_gradients_of_one_pass(model, drop):
    """The batch in two passes of similar-length windows (each padded to its own longest) gives the one padded
    pass's answer loss and gradients; windows of one length, and REF's batch-wide text positions, keep one pass."""
    items = task_windows("workload", 2) + task_windows("tusl", 2) + task_windows("tuab", 1)
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    crops = torch.randint(0, 50257, (1, 17), generator=torch.Generator().manual_seed(0))
    lm = copy.deepcopy(model).add_window_summary([eeg])
    calls = []
    hidden = lm.text_hidden
    lm.text_hidden = lambda batch, *a, **k: calls.append(None if batch is None else batch.mask.shape) or \
        hidden(batch, *a, **k)
    results = []
    for groups in (1, 2):
        lm.zero_grad()
        torch.manual_seed(0)
        out = InstructObjective(lm, eeg_drop=drop, length_groups=groups).train()(eeg, ids, targets, mask, crops)
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
        results.append((out["loss_answer"], grads))
    one, two = results
    torch.testing.assert_close(one[0], two[0], atol=1e-6, rtol=1e-6)
    assert one[1].keys() == two[1].keys()
    for name in one[1]:
        torch.testing.assert_close(one[1][name], two[1][name], atol=1e-6, rtol=1e-4, msg=name)
    eeg_calls = [c for c in calls if c is not None]
    assert len(eeg_calls) == 3 and eeg_calls[1][1] < eeg_calls[0][1]  # the short windows' pass is shorter
    calls.clear()
    same = collate_windows(task_windows("tusl", 3), EEG_MAX_TOKENS)  # windows of one length: nothing to save
    InstructObjective(lm, length_groups=2)(same, ids[:3], targets[:3], mask[:3], crops)
    assert len([c for c in calls if c is not None]) == 1
    calls.clear()
    lm.config = replace(lm.config, ref_text_positions=True)
    InstructObjective(lm, length_groups=2)(eeg, ids, targets, mask, crops)
    assert len([c for c in calls if c is not None]) == 1


def test_encoder_cache_gives_the_same_loss_and_skips_the_encoder(model):
    items = task_windows("tusl", 2) + task_windows("workload", 3)
    keys = [10, 11, 20, 21, 22]
    ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    crops = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(0))
    cache = EncoderCache(budget_mb=1.0)
    cached, plain = InstructObjective(model, cache=cache), InstructObjective(model)
    calls = []
    hook = model.tokenizer.VQ.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        eeg = collate_eeg(items)
        first = cached(eeg, ids, targets, mask, crops, keys)
        assert len(calls) == 1 and len(cache) == 5
        # the same windows in another order and another padding (a batch-mate removed): no encoder pass
        order = [4, 2, 0]
        sub = [items[i] for i in order]
        ids2, targets2, mask2 = collate_texts([it["dataset"] for it in sub], [it["label"] for it in sub])
        again = cached(collate_eeg(sub), ids2, targets2, mask2, crops, [keys[i] for i in order])
        assert len(calls) == 1
        reference = plain(collate_eeg(sub), ids2, targets2, mask2, crops)
    finally:
        hook.remove()
    torch.testing.assert_close(first["loss"], plain(eeg, ids, targets, mask, crops)["loss"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again["loss"], reference["loss"], atol=1e-5, rtol=1e-5)


def test_encoder_cache_respects_its_budget(model):
    items = task_windows("tusl", 3)
    eeg = collate_eeg(items)
    per_window = int(eeg.mask[0].sum()) * (model.config.tokenizer.n_embd * 4 + 8)
    cache = EncoderCache(budget_mb=1.5 * per_window / 2**20)
    features, codes = cache.encode(model.tokenizer, eeg, [0, 1, 2])
    assert len(cache) == 1  # only one window fits; the others are encoded again next time
    ref_features, ref_codes = model.tokenizer.encode(eeg)
    torch.testing.assert_close(features[eeg.mask], ref_features[eeg.mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(codes, ref_codes)


def test_balanced_order_repeats_smaller_tasks_up_to_the_largest():
    order = balanced_order([np.arange(0, 2), np.arange(2, 7), np.arange(7, 7), np.arange(7, 10)])  # 2, 5, 0, 3
    assert order.tolist() == [0, 1, 0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 7, 8]


def test_token_drop_keeps_each_token_with_one_minus_p_and_every_window_something():
    torch.manual_seed(0)
    mask = torch.ones(64, 200, dtype=torch.bool)
    mask[:, 150:] = False  # padding
    keep = drop_tokens(mask, 0.5)
    assert abs(keep[mask].float().mean().item() - 0.5) < 0.02
    mask = torch.zeros(300, 3, dtype=torch.bool)
    mask[:, 0] = True  # one real token per window: dropped in ~99 % of the draws, then the window keeps it
    keep = drop_tokens(mask, 0.99)
    assert (keep & mask).any(1).all()


def test_kept_tokens_give_the_text_what_masking_the_others_gives(model):
    """The drop's compaction (kept tokens moved to the front, the sequence shortened) changes the cost, not what the
    text positions read: their hidden states equal those with the dropped tokens masked out as padding."""
    items = task_windows("tusl", 2) + task_windows("workload", 2)
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    ids, _, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    lm = copy.deepcopy(model).add_window_summary([eeg])
    torch.manual_seed(0)
    keep = eeg.mask & drop_tokens(eeg.mask, 0.5)
    keep[0] = eeg.mask[0]  # one window keeps everything
    with torch.no_grad():
        encoded = lm.tokenizer.encode(eeg)
        masked = lm.text_hidden(replace(eeg, mask=keep), ids, mask, encoded=encoded, summary_from=eeg)
        short, short_encoded = keep_tokens(eeg, encoded, keep)
        compact = lm.text_hidden(short, ids, mask, encoded=short_encoded, summary_from=eeg)
    assert short.mask.shape[1] == int(keep.sum(1).max()) < eeg.mask.shape[1]
    assert short.mask.sum(1).tolist() == keep.sum(1).tolist()
    torch.testing.assert_close(short.times[short.mask], eeg.times[keep])  # each keeps its second and channel
    torch.testing.assert_close(short.chans[short.mask], eeg.chans[keep])
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=1e-5)


def test_token_drop_hides_eeg_tokens_from_the_lm_but_not_from_the_summary(model):
    """Training with --eeg-drop: the LM sees fewer EEG tokens (the loss changes) while the summary is computed
    from the whole window; in eval mode nothing is dropped."""
    items = task_windows("tusl", 2) + task_windows("workload", 2)
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    crops = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(0))
    lm = copy.deepcopy(model).add_window_summary([eeg])
    with torch.no_grad():
        lm.summary.embed.weight.normal_()
    seen = []
    summary = lm.window_summary
    lm.window_summary = lambda batch: seen.append(batch) or summary(batch)
    plain, dropping = InstructObjective(lm).train(), InstructObjective(lm, eeg_drop=0.5).train()
    with torch.no_grad():
        torch.manual_seed(0)
        reference = plain(eeg, ids, targets, mask, crops)["loss_answer"]
        torch.manual_seed(0)
        dropped = dropping(eeg, ids, targets, mask, crops)["loss_answer"]
        windows = [b for b in seen if b is not None]  # (the text crops pass None)
        # both objectives' summaries read the whole windows (split over the length groups' passes), never the
        # thinned ones
        whole = eeg.mask.sum(1).tolist() * 2
        assert sorted(n for b in windows for n in b.mask.sum(1).tolist()) == sorted(whole)
        assert all(b.mask.shape[1] == eeg.mask.shape[1] for b in windows)
        assert not torch.allclose(dropped, reference)
        dropping.eval()
        torch.testing.assert_close(dropping(eeg, ids, targets, mask, crops)["loss_answer"], reference)


def test_eeg_drop_defaults_to_half_for_several_tasks_on_400_steps_each():
    """The default hides tokens only where several stores get at least 400 steps each (the regime where the tasks
    memorise); an explicit --eeg-drop always wins."""
    import argparse

    from neurolm.instruct.recipe import eeg_drop
    from neurolm.instruct.train import InstructArgs, add_arguments
    from neurolm.train.args import from_namespace

    p = argparse.ArgumentParser()
    add_arguments(p)

    def drop(steps: int, *argv: str) -> float:
        return eeg_drop(from_namespace(InstructArgs, p.parse_args(["--model", "m", "--out", "o", *argv])), steps)

    assert drop(2400, "--data", "a") == 0
    assert (drop(800, "--data", "a", "b"), drop(799, "--data", "a", "b"), drop(400, *"--data a b c d e f".split())) \
        == (0.5, 0, 0)
    assert drop(10, "--data", "a", "--eeg-drop", "0.3") == 0.3
    assert drop(2400, "--data", "a", "b", "--eeg-drop", "0") == 0


def test_summary_gate_defaults_to_several_tasks():
    """The question gates the summary by default where there are several questions; either flag wins."""
    import argparse

    from neurolm.instruct.recipe import summary_gate
    from neurolm.instruct.train import InstructArgs, add_arguments
    from neurolm.train.args import from_namespace

    p = argparse.ArgumentParser()
    add_arguments(p)

    def gate(*argv: str) -> bool:
        return summary_gate(from_namespace(InstructArgs, p.parse_args(["--model", "m", "--out", "o", *argv])))

    assert (gate("--data", "a"), gate("--data", "a", "b")) == (False, True)
    assert (gate("--data", "a", "--summary-gate"), gate("--data", "a", "b", "--no-summary-gate")) == (True, False)


def test_stage_defaults_and_the_reference_switches():
    """Balanced tasks and the full lettered-answer mask are the defaults; the reference's behaviour is one flag away
    (the mask itself is pinned in test_loss_only_on_the_answer)."""
    import argparse

    from neurolm.instruct.train import add_arguments
    from neurolm.lm.pretrain import add_arguments as pretrain_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--model", "m", "--data", "s", "--out", "o"]
    args = p.parse_args(base)
    assert args.balance_tasks and not args.reference_answer_mask and args.window_summary
    assert args.summary_scale == 0.3 and args.freeze_lm is None  # None: compares_freezing decides
    assert args.summary_gate is None  # None: on for several task stores
    args = p.parse_args(base + ["--no-balance-tasks", "--reference-answer-mask", "--no-window-summary",
                                "--summary-scale", "1", "--freeze-lm", "--no-summary-gate"])
    assert not args.balance_tasks and args.reference_answer_mask and not args.window_summary
    assert args.summary_scale == 1.0 and args.freeze_lm and not args.summary_gate
    assert p.parse_args(base + ["--no-freeze-lm"]).freeze_lm is False
    p = argparse.ArgumentParser()
    pretrain_arguments(p)
    base = ["--tokenizer", "t", "--data", "s", "--out", "o"]
    assert p.parse_args(base).spectral_input and not p.parse_args(base + ["--no-spectral-input"]).spectral_input


def test_text_crop_is_the_sizes_or_the_flags(model, tmp_path):
    """tiny's text crop is 128 tokens (stop 25: 64 measured and not kept; the paper size 1024), ``--text-length``
    sets it, and a non-positive one is refused before any training."""
    from test_taskfile import builtin_store

    from neurolm.instruct.train import DEFAULTS, STAGE, InstructArgs
    from neurolm.train.stage import train_config

    assert (DEFAULTS["tiny"].text_length, DEFAULTS["paper"].text_length) == (128, 1024)
    model.save_pretrained(tmp_path / "lm")
    store = builtin_store(tmp_path / "workload")

    def crops(**kw) -> tuple[int, ...]:
        args = InstructArgs(model=tmp_path / "lm", data=[store], out=tmp_path / "o", freeze_lm=False, **kw)
        preset = STAGE.preset(args)
        task, _ = STAGE.task(args, train_config(STAGE, args, preset), preset)
        return tuple(task.batch(0, 0, 0, 1)["crops"].shape)

    assert crops() == (1, 129) and crops(text_length=16) == (1, 17)
    with pytest.raises(NeuroLMError, match="--text-length must be positive"):
        crops(text_length=0)


def test_freezing_is_compared_by_default_for_one_task_only(tmp_path):
    """compares_freezing: one store with validation windows and the window summary, no LoRA and neither
    --freeze-lm nor --no-freeze-lm tunes both ways; several stores, LoRA, the reference's model (no summary), an
    explicit choice or a store without validation windows tune one way."""
    from test_taskfile import builtin_store

    from neurolm.instruct.recipe import InstructArgs, compares_freezing

    one = builtin_store(tmp_path / "one", ("train", "val", "test"))
    no_val = builtin_store(tmp_path / "no_val")

    def args(data, **kw):
        return InstructArgs(model="m", data=data, out="o", **kw)

    assert compares_freezing(args([one]))
    assert not compares_freezing(args([one, no_val]))
    assert not compares_freezing(args([one], lora_rank=4))
    assert not compares_freezing(args([one], window_summary=False))
    assert not compares_freezing(args([one], freeze_lm=True)) and not compares_freezing(args([one], freeze_lm=False))
    assert not compares_freezing(args([no_val]))


@pytest.mark.usefixtures("one_thread")
def test_one_task_keeps_the_candidate_with_the_higher_validation_accuracy(model, tmp_path):
    """The default for one store: a fully tuned and a frozen run in ``candidates/``, the one with the higher
    validation BA (frozen on a tie) published in ``out`` with identical weights, and the choice in the report."""
    from test_taskfile import builtin_store

    from neurolm.instruct.train import instruct
    from neurolm.lm import NeuroLM

    model.save_pretrained(tmp_path / "lm")
    store = builtin_store(tmp_path / "workload", ("train", "val", "test"))
    result = instruct(tmp_path / "lm", [store], tmp_path / "inst", steps=2, batch_size=2, progress=False,
                      device="cpu")
    choice = result.report["freeze_lm_choice"]
    runs = {name: json.loads((tmp_path / "inst" / "candidates" / name / "report.json").read_text())
            for name in ("full", "frozen")}
    assert choice["val_ba"] == {name: r["val"]["ba_mean"] for name, r in runs.items()}
    best = "frozen" if choice["val_ba"]["frozen"] >= choice["val_ba"]["full"] else "full"
    assert choice["selected"] == best and result.report["freeze_lm"] == (best == "frozen")
    assert json.loads((tmp_path / "inst" / "report.json").read_text()) == json.loads(json.dumps(result.report))
    published = NeuroLM.from_pretrained(tmp_path / "inst").state_dict()
    kept = NeuroLM.from_pretrained(tmp_path / "inst" / "candidates" / best).state_dict()
    assert all(torch.equal(published[k], kept[k]) for k in kept)
    assert not (tmp_path / "inst" / "training_state").exists()


@pytest.mark.usefixtures("one_thread")
def test_freeze_lm_trains_only_the_summary_and_the_head(model, tmp_path):
    """``instruct --freeze-lm``: after tuning, every weight the pretrained model had is unchanged except lm_head,
    the new summary has learned, and the report counts exactly those trainable parameters; ``--no-freeze-lm``
    trains the blocks too."""
    from test_taskfile import builtin_store

    from neurolm.instruct.train import instruct
    from neurolm.lm import NeuroLM

    model.save_pretrained(tmp_path / "lm")
    store = builtin_store(tmp_path / "workload")
    report = instruct(tmp_path / "lm", [store], tmp_path / "inst", steps=2, batch_size=2, progress=False,
                      device="cpu", freeze_lm=True).report
    base = NeuroLM.from_pretrained(tmp_path / "lm").state_dict()
    tuned = NeuroLM.from_pretrained(tmp_path / "inst").state_dict()
    assert {k for k in base if not torch.equal(base[k], tuned[k])} == {"gpt.lm_head.weight"}
    assert tuned["summary.embed.weight"].abs().sum() > 0  # zero-initialised, so it trained
    summary = sum(v.numel() for k, v in tuned.items() if k.startswith("summary.") and k not in ("summary.mean",
                                                                                                 "summary.std"))
    assert report["freeze_lm"] and report["params"] == tuned["gpt.lm_head.weight"].numel() + summary
    assert "freeze_lm_choice" not in report and not (tmp_path / "inst" / "candidates").exists()
    full = instruct(tmp_path / "lm", [store], tmp_path / "full", steps=2, batch_size=2, progress=False,
                    device="cpu", freeze_lm=False).report
    changed = {k for k, v in NeuroLM.from_pretrained(tmp_path / "full").state_dict().items()
               if k in base and not torch.equal(base[k], v)}
    assert not full["freeze_lm"] and "gpt.transformer.h.0.attn.c_attn.weight" in changed
    with pytest.raises(NeuroLMError, match="exclude each other"):
        instruct(tmp_path / "lm", [store], tmp_path / "inst2", steps=1, freeze_lm=True, lora_rank=2,
                 progress=False, device="cpu")


def test_summary_gate_starts_as_one_and_decoding_reads_it_as_a_forward_pass_does(model, tmp_path):
    """``--summary-gate``: the summary at each text position times ``1 + gate(running mean of the text
    embeddings)``. The zero-initialised gate changes nothing; once trained it differs per position, and
    ``generate``'s cached decode (a running sum) scores each new token as a full pass over the grown prompt does; the
    gate is saved and loaded with the model."""
    from neurolm.lm import NeuroLM

    items = task_windows("tusl", 2) + task_windows("workload", 2)
    eeg = collate_windows(items, EEG_MAX_TOKENS)
    ids, _, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    plain = copy.deepcopy(model).add_window_summary([eeg])
    lm = copy.deepcopy(model).add_window_summary([eeg], gate=True)
    assert lm.config.summary_gate and not plain.config.summary_gate and plain.summary.gate is None
    assert "summary_gate" not in plain.config.to_dict()
    with torch.no_grad():
        lm.summary.embed.weight.normal_()
        plain.summary.embed.weight.copy_(lm.summary.embed.weight)
        torch.testing.assert_close(lm.text_hidden(eeg, ids, mask), plain.text_hidden(eeg, ids, mask))
        lm.summary.gate[1].weight.normal_()
        moved = lm.text_hidden(eeg, ids, mask) - plain.text_hidden(eeg, ids, mask)
        assert moved[mask].abs().max() > 0.01
        prompt = torch.tensor([[INSTRUCTION_START, 464, 318]] * len(items))
        tokens, scores = lm.eval().generate(eeg, prompt, max_new_tokens=3)
        for i in range(3):
            grown = torch.cat([prompt, tokens[:, :i]], dim=1)
            torch.testing.assert_close(scores[:, i], lm.gpt.lm_head(lm.text_hidden(eeg, grown)[:, -1]),
                                       atol=1e-4, rtol=1e-4)
    lm.save_pretrained(tmp_path / "gated")
    loaded = NeuroLM.from_pretrained(tmp_path / "gated", device="cpu").eval()
    assert loaded.config.summary_gate
    with torch.no_grad():
        torch.testing.assert_close(loaded.text_hidden(eeg, ids, mask), lm.text_hidden(eeg, ids, mask))


def test_flops_count_the_real_tokens_what_trains_and_what_the_encoder_ran(model):
    """The ``flops`` the objective reports (the ``mfu`` column's numerator), by hand for the tiny model: 2 layers of
    width 64 (12·d² + 13·d weights each, plus the final norm), 50816 outputs, an 8-band spectral term; 6 FLOPs per
    trained weight and token, 4 per frozen one with something trainable below it, 2 with nothing; attention
    12·L·d (4·L·d forward only) per token and context position; each sample counted at its real EEG and text
    tokens; the encoder's forward pass only on the windows it ran on (none from a filled cache)."""
    from neurolm.instruct.train import freeze_lm

    lm = copy.deepcopy(model).train()
    items = task_windows("tusl", 2) + task_windows("workload", 2)
    eeg = collate_eeg(items)
    ids, targets, mask = collate_texts([it["dataset"] for it in items], [it["label"] for it in items])
    crops = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(0))
    L, d, outputs, bands = 2, 64, 50816, 8
    assert (lm.config.gpt.n_layer, lm.config.gpt.n_embd, lm.config.gpt.n_outputs) == (L, d, outputs)
    assert tuple(lm.spectral_embed.weight.shape) == (d, bands)
    eeg_tokens, text_tokens = eeg.mask.sum(1).tolist(), mask.sum(1).tolist()
    assert len(set(eeg_tokens)) == 2  # two window lengths: the shorter ones are not counted at the longer's
    answers = int((targets != IGNORE).sum())
    enc = lm.tokenizer.VQ.encoder
    enc_weights = sum(p.numel() for n, p in enc.named_parameters() if not n.endswith(("pos_embed.weight",
                                                                                      "time_embed.weight")))
    encoder = sum(2 * enc_weights * n + 4 * len(enc.blocks) * lm.config.tokenizer.n_embd * n * n for n in eeg_tokens)

    def lm_flops(train: int, head: int, attention: int) -> float:
        block, eeg_in = train * (L * (12 * d * d + 13 * d) + 2 * d), train * bands * d
        seq = sum((e + t) * block + e * eeg_in + (e + t) ** 2 * attention * L * d
                  for e, t in zip(eeg_tokens, text_tokens))
        return seq + 2 * (32 * block + 32 * 32 * attention * L * d) + (answers + 2 * 32) * head * outputs * d

    cache = EncoderCache(budget_mb=1.0)
    keys = [0, 1, 2, 3]
    objective = InstructObjective(lm, cache=cache)
    assert objective(eeg, ids, targets, mask, crops, keys)["flops"] == lm_flops(6, 6, 12) + encoder
    assert objective(eeg, ids, targets, mask, crops, keys)["flops"] == lm_flops(6, 6, 12)  # all from the cache
    freeze_lm(lm)  # only the head trains (no summary here): the blocks run forward only
    assert InstructObjective(lm)(eeg, ids, targets, mask, crops)["flops"] == lm_flops(2, 6, 4) + encoder
