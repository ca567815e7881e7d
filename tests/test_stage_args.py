"""The one stage skeleton: every training command takes the common flags (generated from its argument dataclass),
the old flag names still parse, the API takes the same arguments, and wrong model directories are named."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from neurolm.cli import main
from neurolm.errors import NeuroLMError
from neurolm.instruct import train as instruct_stage
from neurolm.lm import pretrain as pretrain_stage
from neurolm.tokenizer import train as tokenizer_stage
from neurolm.train.args import field_docs, from_namespace
from neurolm.train.stage import train_config

STAGES = {"train-tokenizer": (tokenizer_stage, ["--data", "s1", "s2", "--out", "o"]),
          "pretrain": (pretrain_stage, ["--tokenizer", "t", "--data", "s", "--out", "o"]),
          "instruct": (instruct_stage, ["--model", "m", "--data", "s", "--out", "o"])}
COMMON = ("--steps 12 --batch-size 4 --lr 0.01 --eval-every 3 --seed 7 --text corpus.txt --device cpu "
          "--precision fp32 --compile --grad-accum 2 --activation-checkpointing --no-group-by-length --resume "
          "--allow-changes")


def parser(module) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    module.add_arguments(p)
    return p


@pytest.mark.parametrize("command", list(STAGES))
def test_every_training_command_takes_the_common_flags(command):
    module, base = STAGES[command]
    args = from_namespace(module.STAGE.args, parser(module).parse_args(base + shlex.split(COMMON)))
    assert args.data[-1] == Path("s2" if command == "train-tokenizer" else "s") and args.out == Path("o")
    assert (args.text, args.device, args.resume, args.allow_changes) == (Path("corpus.txt"), "cpu", True, True)
    preset = module.STAGE.presets["tiny"]
    cfg = train_config(module.STAGE, args, preset)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.eval_every, cfg.seed, cfg.device) == (12, 4, 0.01, 3, 7, "cpu")
    assert cfg.min_lr == pytest.approx(0.01 * preset.min_lr / preset.lr)  # the size's floor ratio
    assert (cfg.precision, cfg.compile, cfg.grad_accum, cfg.activation_checkpointing, cfg.group_by_length) == \
        ("fp32", True, 2, True, False)
    # without the flags: the preset's values and the stage's own defaults
    cfg = train_config(module.STAGE, from_namespace(module.STAGE.args, parser(module).parse_args(base)), preset)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.min_lr) == (preset.steps, preset.batch_size, preset.lr,
                                                               preset.min_lr)
    assert cfg.group_by_length == (command != "instruct") and cfg.device == "auto"


def test_instruct_steps_grow_with_the_number_of_tasks(model, tmp_path):
    """tiny: 400 steps per task store (six: 2400); paper: 10000 whatever the count; --steps still wins."""
    model.save_pretrained(tmp_path / "lm")

    def steps(stores: int, *flags: str) -> int:
        argv = ["--model", str(tmp_path / "lm"), "--data", *[f"s{i}" for i in range(stores)], "--out", "o", *flags]
        args = from_namespace(instruct_stage.InstructArgs, parser(instruct_stage).parse_args(argv))
        return train_config(instruct_stage.STAGE, args, instruct_stage.STAGE.preset(args)).steps

    assert [steps(n) for n in (1, 2, 6)] == [400, 800, 2400]
    assert steps(6, "--steps", "50") == 50
    assert instruct_stage.DEFAULTS["paper"].for_tasks(6).steps == 10000
    assert "tiny 400 per task store" in " ".join(parser(instruct_stage).format_help().split())


def test_an_eeg_drop_outside_zero_to_one_is_named(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "lm")
    argv = ["instruct", "--model", str(tmp_path / "lm"), "--data", "a", "b", "--out", str(tmp_path / "i")]
    assert main(argv + ["--eeg-drop", "1"]) == 2
    assert "--eeg-drop must be in [0, 1), got 1.0" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(STAGES))
def test_every_field_has_help_and_the_api_takes_the_same_names(command):
    module, base = STAGES[command]
    cls = module.STAGE.args
    docs = field_docs(cls)
    assert all(docs.get(f.name) for f in fields(cls)), [f.name for f in fields(cls) if not docs.get(f.name)]
    help_text = parser(module).format_help()
    for f in fields(cls):
        if f.metadata.get("cli", True):
            assert f"--{f.name.replace('_', '-')}" in help_text, f.name


@pytest.mark.parametrize("cls, required", [(tokenizer_stage.TokenizerArgs, {}),
                                           (pretrain_stage.PretrainArgs, {"tokenizer": "t"})])
def test_a_wrong_size_is_named(cls, required):
    with pytest.raises(NeuroLMError, match=r"size must be one of tiny, .* \(got 'M'\)"):
        cls(data=["s"], out="o", size="M", **required)


def test_old_flag_spellings_and_the_smoke_commands_still_parse():
    tok = from_namespace(tokenizer_stage.TokenizerArgs, parser(tokenizer_stage).parse_args(
        ["--data", "s", "--out", "o", "--preset", "base"]))
    assert tokenizer_stage.STAGE.preset(tok) is tokenizer_stage.DEFAULTS["base"]
    for size in ("B", "L", "XL"):  # one size vocabulary: the tokenizer of every paper LM size is the base one
        args = tokenizer_stage.TokenizerArgs(data=["s"], out="o", size=size)
        assert tokenizer_stage.STAGE.preset(args) is tokenizer_stage.DEFAULTS["base"]
    smoke = {"train-tokenizer": "--data a b --out t --preset tiny --steps 20",
             "pretrain": "--tokenizer t --data a b --out l --size tiny --steps 20",
             "instruct": "--model l --data a b --out i --steps 20"}
    for command, line in smoke.items():
        args = parser(STAGES[command][0]).parse_args(shlex.split(line))
        assert args.steps == 20 and args.data == [Path("a"), Path("b")]
    args = parser(instruct_stage).parse_args(STAGES["instruct"][1] + ["--no-balance-tasks", "--reference-answer-mask",
                                                                      "--cache-mb", "0", "--text-weight", "0.5",
                                                                      "--text-length", "32"])
    assert (args.balance_tasks, args.reference_answer_mask, args.cache_mb, args.text_weight, args.text_length) == \
        (False, True, 0, 0.5, 32)


def test_tokenize_takes_device():
    from neurolm.tokenizer import tokenize

    p = argparse.ArgumentParser()
    tokenize.add_arguments(p)
    assert p.parse_args(["--tokenizer", "t", "x", "--out", "o.npz", "--device", "cpu"]).device == "cpu"


def test_api_paths_may_be_strings_and_a_single_path_is_named():
    args = pretrain_stage.PretrainArgs(tokenizer="t", data=["s"], out="o", text="c.txt")
    assert isinstance(args.out, Path) and args.data == [Path("s")] and args.text == Path("c.txt")
    with pytest.raises(NeuroLMError, match="data must be a list of paths"):
        pretrain_stage.PretrainArgs(tokenizer="t", data="s", out="o")
    saved = args.options()  # what a checkpoint compares on resume: stage options, absolute paths, no loop settings
    assert saved["text"] == str(Path("c.txt").resolve()) and saved["size"] == "tiny"
    assert not {"out", "steps", "lr", "device", "resume", "seed"} & saved.keys()


def test_a_model_directory_of_the_wrong_kind_is_named(model, tmp_path, capsys):
    from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig

    tok_dir, lm_dir = tmp_path / "tok", tmp_path / "lm"
    NeuralTokenizer(TokenizerConfig.from_preset("tiny")).save_pretrained(tok_dir)
    model.save_pretrained(lm_dir)
    assert main(["instruct", "--model", str(tok_dir), "--data", str(tmp_path / "s"), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert "is a neural tokenizer directory" in err and "neurolm pretrain" in err and "'gpt'" not in err
    assert main(["pretrain", "--tokenizer", str(lm_dir), "--data", str(tmp_path / "s"), "--out",
                 str(tmp_path / "p")]) == 2
    assert "is a NeuroLM directory" in capsys.readouterr().err
    assert json.loads((tok_dir / "config.json").read_text())["codebook_size"] > 0
