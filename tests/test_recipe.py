"""The instruction-tuning recipe: resolved before training, saved with the run, replayed by ``--config``."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
from test_taskfile import builtin_store

from neurolm.cli import main
from neurolm.errors import NeuroLMError
from neurolm.instruct.recipe import RECIPE_FILE, InstructArgs, load_recipe, resolve

UNDECIDED_ALLOWED = {"text", "shots"}  # None is a choice there (the shipped corpus, every window), not "later"


def test_one_and_six_stores_resolve_every_default(model, tmp_path):
    model.save_pretrained(tmp_path / "lm")
    one = builtin_store(tmp_path / "one", ("train", "val", "test"))
    single = resolve(InstructArgs(model=tmp_path / "lm", data=[one], out=tmp_path / "o"))
    six = resolve(InstructArgs(model=tmp_path / "lm", data=[tmp_path / f"s{i}" for i in range(6)], out=tmp_path / "o"))
    for args in (single, six):
        assert {f.name for f in fields(args) if getattr(args, f.name) is None} == UNDECIDED_ALLOWED
        assert resolve(args) == args  # resolving a recipe changes nothing
    assert (single.steps, single.eeg_drop, single.summary_gate, single.compare_freezing, single.freeze_lm) == \
        (400, 0.0, False, True, False)
    assert (six.steps, six.eeg_drop, six.summary_gate, six.compare_freezing, six.freeze_lm) == \
        (2400, 0.5, True, False, False)
    assert (six.lr, six.min_lr, six.batch_size, six.text_length, six.text_batch, six.eval_every) == \
        (6e-3, 6e-4, 32, 128, 1, 600)
    fixed = resolve(InstructArgs(model=tmp_path / "lm", data=[one], out=tmp_path / "o", freeze_lm=True, lr=1e-3))
    assert not fixed.compare_freezing and fixed.freeze_lm and fixed.min_lr == pytest.approx(1e-4)


@pytest.mark.usefixtures("one_thread")
def test_config_of_a_saved_run_reproduces_its_tensors(model, tmp_path, capsys):
    """A short run's directory, given to ``--config``, trains the same weights bit for bit and the same losses; the
    saved stage options hold the resolved values, and the recipe is printed before training."""
    from neurolm.instruct.train import instruct
    from neurolm.lm import NeuroLM

    model.save_pretrained(tmp_path / "lm")
    a, b = builtin_store(tmp_path / "a"), builtin_store(tmp_path / "b")
    instruct(tmp_path / "lm", [a, b], tmp_path / "first", steps=3, batch_size=4, seed=1, eeg_drop=0.5,
             text_length=16, progress=False, device="cpu")
    options = json.loads((tmp_path / "first" / "training_state" / "stage_options.json").read_text())
    assert (options["eeg_drop"], options["summary_gate"], options["freeze_lm"], options["text_batch"]) == \
        (0.5, True, False, 1)
    recipe = load_recipe(tmp_path / "first")
    assert recipe["steps"] == 3 and recipe["min_lr"] == 6e-4 and "out" not in recipe
    assert main(["instruct", "--config", str(tmp_path / "first"), "--out", str(tmp_path / "again")]) == 0
    assert "eeg_drop = 0.5" in capsys.readouterr().out
    first = NeuroLM.from_pretrained(tmp_path / "first").state_dict()
    again = NeuroLM.from_pretrained(tmp_path / "again").state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)

    def losses(run: str) -> list[float]:
        rows = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["split"] == "train"]

    assert losses("first") == losses("again")
    rows = [json.loads(line) for line in (tmp_path / "first" / "log.jsonl").read_text().splitlines()]
    assert all("mfu" in r and "flops" not in r for r in rows if r["split"] == "train")  # counted, not logged
    assert load_recipe(tmp_path / "again") == recipe


def test_a_recipe_with_an_unknown_key_or_without_a_model_is_refused(tmp_path, capsys):
    (tmp_path / RECIPE_FILE).write_text(json.dumps({"model": "m", "data": ["s"], "eeg_dorp": 0.5}))
    with pytest.raises(NeuroLMError, match="unknown key.*eeg_dorp"):
        load_recipe(tmp_path)
    (tmp_path / "r.toml").write_text('data = ["s"]\n')
    assert main(["instruct", "--config", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "required: --model" in capsys.readouterr().err


def size_dirs(model, root):
    """A tiny model's directory and one with the paper's B shape (its config only: the recipe reads no weights)."""
    model.save_pretrained(root / "tiny")
    values = json.loads((root / "tiny" / "config.json").read_text())
    values["gpt"] |= {"n_layer": 12, "n_head": 12, "n_embd": 768}
    (root / "paper").mkdir()
    (root / "paper" / "config.json").write_text(json.dumps(values))
    (root / "paper" / "model.safetensors").write_bytes(b"")
    return root


@pytest.mark.parametrize("size", ["tiny", "paper"])
@pytest.mark.parametrize("tasks", ["one-task", "six-tasks"])
def test_the_shipped_recipes_are_what_the_resolver_decides(model, tmp_path, size, tasks):
    """recipes/*.toml are data, but not a second home of the rules: each equals resolve()'s recipe for its inputs,
    and given with --config (a name) its values reach the run's arguments."""
    from neurolm.instruct.recipe import RECIPES, shipped_recipe

    models = size_dirs(model, tmp_path)
    data = [builtin_store(tmp_path / "one", ("train", "val", "test"))] if tasks == "one-task" else \
        [tmp_path / f"s{i}" for i in range(6)]
    resolved = resolve(InstructArgs(model=models / size, data=data, out=tmp_path / "o"))
    shipped = (RECIPES / f"{size}-{tasks}.toml").read_text()
    assert shipped.split("\n", 1)[1] == shipped_recipe(resolved)
    values = load_recipe(f"{size}-{tasks}")
    assert resolve(InstructArgs(model=models / size, data=data, out=tmp_path / "o", **values)) == resolved
