"""Evaluation: answer parsing, the paper protocol beside scored answers, metrics.json, report, plots and the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from neurolm.cli import main
from neurolm.data.channels import channel_indices
from neurolm.data.store import MANIFEST, SplitBuffer, write_split
from neurolm.errors import NeuroLMError
from neurolm.instruct.evaluate import GENERATED_TOKENS, evaluate, parse_answer
from neurolm.instruct.metrics import UNPARSEABLE
from neurolm.instruct.tasks import TASKS
from neurolm.text import EOT, TextTokenizer


def make_store(root, name: str, n: int, seed: int = 0, splits=("val", "test")):
    """A hand-built store of ``n`` random windows per split, labels cycling through every class."""
    task = TASKS.get(name)
    channels = task.channels if task else ("FP1", "FP2")
    window_s = task.window_s if task else 2.0
    rng = np.random.default_rng(seed)
    idx = np.array(channel_indices(channels))
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        buf = SplitBuffer()
        for i in range(n):
            signal = rng.normal(0, 0.3, (len(idx), int(window_s * 200))).astype(np.float32)
            buf.add(signal, idx, i % (task.n_classes if task else 1), i * window_s, f"s{i % 2}", f"f{i % 3}.edf")
        write_split(root, split, buf)
    classes = list(task.classes) if task else []
    (root / MANIFEST).write_text(json.dumps({"dataset": name, "complete": True, "classes": classes}))
    return root


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {name: make_store(root / name, name, task.n_classes, seed=i) for i, (name, task) in enumerate(TASKS.items())}


@pytest.fixture(scope="module")
def evaluated(model, stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(model, list(stores.values()), out, batch_size=8, progress=False, device="cpu"), out


@pytest.mark.parametrize("task,text,label", [
    ("tuab", " Yes", 1), ("tuab", " no.", 0), ("tuab", " YES <|endoftext|>", 1), ("workload", "\n No, it is", 0),
    ("seed", " negative", 2), ("seed", " Neutral!", 1),
    ("tuab", " Yesterday", UNPARSEABLE), ("tuab", " Maybe yes", UNPARSEABLE), ("tuab", "", UNPARSEABLE),
    ("seed", " (A)", UNPARSEABLE), ("tuab", " (Yes)", UNPARSEABLE),
    ("hmc", " (C)", 2), ("hmc", " (A)(B)", 0), ("hmc", " E.", 4), ("tuev", " (F) background", 5), ("tusl", "B", 1),
    ("hmc", " (F)", UNPARSEABLE),     # a letter that is not one of the five options
    ("tusl", " (D)", UNPARSEABLE), ("hmc", " (c)", UNPARSEABLE), ("hmc", " a", UNPARSEABLE),
    ("hmc", " Answer: (A)", UNPARSEABLE), ("tuev", " AB", UNPARSEABLE), ("hmc", " Wake", UNPARSEABLE),
])
def test_parse_answer(task, text, label):
    assert parse_answer(task, text) == label


def test_parse_answer_accepts_every_training_answer():
    for name, task in TASKS.items():
        assert [parse_answer(name, a) for a in task.answers] == list(range(task.n_classes))
    with pytest.raises(NeuroLMError, match="no instruction task"):
        parse_answer("pretrain", " Yes")


def test_metrics_json_has_every_task_with_numbers(evaluated, stores):
    results, out = evaluated
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk) == set(results) == set(TASKS)
    for name, m in on_disk.items():
        task = TASKS[name]
        assert m["n"] == task.n_classes and m["split"] == "test" and m["classes"] == list(task.classes)
        assert m["chance"] == pytest.approx(1 / task.n_classes)
        paper_keys = {"auc_pr", "auroc"} if task.binary else {"cohen_kappa", "weighted_f1"}
        assert {"balanced_accuracy", "unparseable", "n"} | paper_keys <= set(m["paper"])
        assert {"balanced_accuracy", "auroc", "auc_pr", "log_loss", "ece"} <= set(m["scored"])
        for part in ("paper", "scored", "timing"):
            numbers = [v for v in m[part].values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            assert numbers and all(math.isfinite(v) for v in numbers), (name, part)
        assert m["baseline"] is None  # these stores have no train split to fit the band-power baseline on
        for part in ("paper", "scored"):  # every balanced accuracy has its interval and chance flag
            lo, hi = m[part]["ci95"]
            assert lo <= m[part]["balanced_accuracy"] <= hi and m[part]["ci_resampled"] in ("subjects", "windows")
            assert m[part]["includes_chance"] == (lo <= m["chance"])
        t = m["timing"]
        assert t["generation_s"] > 0 and t["scored_s"] > 0
        assert t["scored_speedup"] == pytest.approx(t["generation_s"] / t["scored_s"])


def test_predictions_agree_with_metrics(evaluated):
    results, out = evaluated
    for name, m in results.items():
        task = TASKS[name]
        with open(out / f"{name}_predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == m["n"]
        assert [int(r["label"]) for r in rows] == [i % task.n_classes for i in range(m["n"])]
        probs = np.array([[float(r[f"p_{c}"]) for c in task.classes] for r in rows])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        assert [int(r["scored"]) for r in rows] == probs.argmax(1).tolist()
        parsed = [int(r["parsed"]) for r in rows]
        assert parsed == [parse_answer(name, r["generated"]) for r in rows]
        assert sum(p == UNPARSEABLE for p in parsed) == m["paper"]["unparseable"]
        scored_ba = np.mean([float(probs[i].argmax() == i % task.n_classes) for i in range(m["n"])])
        assert m["scored"]["balanced_accuracy"] == pytest.approx(scored_ba)  # one window per class


def test_report_and_plots(evaluated):
    results, out = evaluated
    report = (out / "report.md").read_text()
    for name in TASKS:
        for kind in ("confusion", "recall"):
            png = out / f"{name}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"({name}_{kind}.png)" in report
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} | test |"))
        assert f"| {results[name]['paper']['unparseable']} |" in row and f"{results[name]['chance']:.3f}" in row


def _forced(model, text: str):
    """A ``generate`` that ignores the EEG and always continues with ``text`` (padded with end-of-text)."""
    ids = TextTokenizer().encode(text, allow_eot=True)[:GENERATED_TOKENS]
    ids += [EOT] * (GENERATED_TOKENS - len(ids))

    def generate(batch, prompt_ids, prompt_mask=None, max_new_tokens=5):
        assert max_new_tokens == GENERATED_TOKENS
        tokens = torch.tensor(ids).expand(prompt_ids.shape[0], -1)
        return tokens, torch.zeros(*tokens.shape, model.config.gpt.n_outputs)
    return generate


def test_garbage_generation_is_counted_unparseable(model, stores, evaluated, tmp_path, monkeypatch):
    monkeypatch.setattr(model, "generate", _forced(model, " banana split"))
    chosen = [stores["tuab"], stores["hmc"]]
    results = evaluate(model, chosen, tmp_path, progress=False, device="cpu")
    for name, m in results.items():
        assert m["paper"]["unparseable"] == m["n"] == TASKS[name].n_classes
        assert m["paper"]["balanced_accuracy"] == 0.0  # never mapped to a class
        unforced = evaluated[0][name]["scored"]  # scored answers are unaffected by the generation
        assert m["scored"]["balanced_accuracy"] == unforced["balanced_accuracy"]
        assert m["scored"]["log_loss"] == pytest.approx(unforced["log_loss"], abs=1e-5)
    with open(tmp_path / "hmc_predictions.csv", newline="") as fh:
        assert {(r["generated"], r["parsed_name"]) for r in csv.DictReader(fh)} == {(" banana split", "unparseable")}


def test_forced_answers_drive_the_paper_metrics(model, stores, tmp_path, monkeypatch):
    monkeypatch.setattr(model, "generate", _forced(model, " (B) <|endoftext|>"))
    m = evaluate(model, [stores["hmc"]], tmp_path, progress=False, device="cpu")["hmc"]["paper"]
    assert m["unparseable"] == 0
    assert m["balanced_accuracy"] == pytest.approx(1 / 5)  # always N1: recall 1 on N1, 0 elsewhere
    assert m["cohen_kappa"] == pytest.approx(0.0)


def test_store_errors(model, stores, tmp_path):
    other = make_store(tmp_path / "pre", "pretrain", 2)
    with pytest.raises(NeuroLMError, match="'pretrain' has no instruction task"):
        evaluate(model, [stores["tuab"], other], tmp_path / "o", progress=False, device="cpu")
    with pytest.raises(NeuroLMError, match="already given"):
        evaluate(model, [stores["tuab"], stores["tuab"]], tmp_path / "o", progress=False, device="cpu")
    with pytest.raises(NeuroLMError, match="no 'train' split"):
        evaluate(model, [stores["tuab"]], tmp_path / "o", split="train", progress=False, device="cpu")
    empty = make_store(tmp_path / "empty", "seed", 0)
    with pytest.raises(NeuroLMError, match="split 'test' has no windows"):
        evaluate(model, [stores["tuab"], empty], tmp_path / "o", progress=False, device="cpu")
    assert not (tmp_path / "o").exists()  # every store is checked before any work


def test_cli_prints_the_table(model, stores, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    rc = main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(stores["tusl"]),
               "--out", str(tmp_path / "out"), "--split", "val", "--batch-size", "2", "--device", "cpu"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["task", "n", "paper"]
    assert lines[1].split()[:2] == ["tusl", "3"]
    assert lines[-1].startswith("evaluated 1 task(s) on val")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics) == ["tusl"] and metrics["tusl"]["split"] == "val"
    rc = main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "nowhere"),
               "--out", str(tmp_path / "out2")])
    assert rc == 2 and "not a window store" in capsys.readouterr().err
