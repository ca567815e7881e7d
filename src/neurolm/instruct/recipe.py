"""The instruction-tuning recipe: ``neurolm instruct``'s arguments and the one function that resolves them.

Several of the stage's defaults depend on its inputs (the number of task stores, the schedule, the GPT's shape, the
stores' validation splits). :func:`resolve` is the only place where those rules live: it turns the arguments into
an :class:`InstructArgs` with every default decided, which the stage prints, saves (``recipe.json`` in the output
directory and, as the stage options, in every checkpoint) and trains from. ``neurolm instruct --config FILE``
replays such a file (or a TOML recipe with the same keys), so a saved run can be made again without its command
line (:func:`load_recipe`).

The rules, and why (the measurements: docs/results/2026-12-02-six-task-schedule.md for the schedule and the drop,
docs/results/2026-12-03-summary-gate.md for the gate, docs/results/2026-12-01-eegmat-levers.md for freezing):
- ``tiny`` settings for a model of the tiny GPT shape, the paper's otherwise (:func:`defaults_for`); tiny trains
  400 steps per task store (:meth:`StageDefaults.for_tasks`): with balanced tasks each task gets 1/n of every batch.
- Several task stores on at least 400 steps each hide half of each training window's EEG tokens (:func:`eeg_drop`):
  there the tasks otherwise memorise their training windows, while shorter schedules under-fit.
- The question gates the window summary for several task stores (:func:`summary_gate`): six tasks share one
  summary, and the gate lets each question read its own dimensions of it.
- One task with validation windows, the window summary and no LoRA tunes the LM both frozen and fully and keeps the
  better on validation (:func:`compares_freezing`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

from ..artifacts import read_config
from ..data.store import WindowStore
from ..errors import NeuroLMError
from ..lm.gpt import GPTConfig
from ..lm.model import NeuroLMConfig
from ..lm.spectral import SUMMARY_SCALE
from ..train.args import StageArgs, _free, _jsonable

RECIPE_FILE = "recipe.json"
"""The resolved recipe of a run, in its output directory (``--config DIR`` reads it)."""
EVALUATIONS = 4
"""Validations per run by default (``eval_every = steps // EVALUATIONS``)."""


@dataclass(frozen=True, kw_only=True)
class StageDefaults:
    steps: int
    batch_size: int
    lr: float
    min_lr: float
    text_batch: int
    text_length: int
    text_weight: float
    steps_per_task: int = 0
    """With several task stores the default is at least this many steps per store (:meth:`for_tasks`)."""

    def for_tasks(self, n_tasks: int) -> StageDefaults:
        """The row for ``n_tasks`` stores: ``max(steps, steps_per_task × n_tasks)`` steps. Why: with balanced tasks
        each task gets 1/n of every batch, and six tasks in the one-task schedule under-fit."""
        return replace(self, steps=max(self.steps, self.steps_per_task * n_tasks))


DEFAULTS: dict[str, StageDefaults] = {
    # tiny's text crop: 128 tokens; 64 was faster but lower on the synthetic corpus
    # (docs/results/2026-12-03-text-crop-and-drop.md)
    "tiny": StageDefaults(steps=400, batch_size=32, lr=6e-3, min_lr=6e-4, text_batch=1, text_length=128,
                          text_weight=1.0, steps_per_task=400),
    "paper": StageDefaults(steps=10000, batch_size=64, lr=5e-4, min_lr=5e-5, text_batch=16, text_length=1024,
                           text_weight=1.0),
}


@dataclass(kw_only=True)
class InstructArgs(StageArgs):
    """``neurolm instruct``'s arguments (and :func:`~neurolm.instruct.train.instruct`'s); after :func:`resolve`,
    the run's complete recipe."""

    model: Path = field(metadata={"metavar": "DIR"})
    """pretrained NeuroLM directory"""
    min_lr: float | None = _free(None, group="run control")
    """the learning-rate floor of the cosine schedule (default: the size's ratio to --lr)"""
    text_weight: float | None = None
    """weight of the text crops' language-model loss (default: the size's, 1.0)"""
    text_length: int | None = field(default=None, metadata={"metavar": "N"})
    """tokens per text crop (default: the size's: tiny 128, paper 1024)"""
    text_batch: int | None = field(default=None, metadata={"metavar": "N"})
    """text crops per step, summed over processes (default: the size's: tiny 1, paper 16)"""
    cache_mb: float = field(default=1024.0, metadata={"compared": False})
    """memory (MiB) for the frozen encoder's outputs of training windows, reused every epoch (0 = encode every
    step)"""
    balance_tasks: bool = True
    """show every task as often as the largest one (default: on; --no-balance-tasks = the reference's plain
    concatenation, where a task's share of the steps is its share of the windows)"""
    reference_answer_mask: bool = False
    """train the ' (' that opens a lettered answer only for TUEV and HMC, as the reference does (default: for
    every lettered task)"""
    shots: int | None = field(default=None, metadata={"metavar": "K"})
    """few-shot tuning: only K labelled windows per class of each store's train split, drawn from as many subjects
    as possible with --seed (e.g. a new task, from an instruction-tuned --model; default: every window)"""
    window_summary: bool = True
    """give the answer a learned linear map of the window's per-channel band power (neurolm.lm.spectral.WindowSummary;
    default: on; --no-window-summary = the reference's model)"""
    summary_scale: float = field(default=SUMMARY_SCALE, metadata={"metavar": "S"})
    """the window summary's output factor, i.e. its learning rate relative to the LM's (default: 0.3; a model that
    already has a summary keeps its own)"""
    summary_gate: bool | None = None
    """let the question gate the window summary per text position (default: for several task stores; a model that
    already has a summary keeps its own)"""
    lora_rank: int = 0
    """train rank-R LoRA adapters on the LM's blocks instead of all its weights (0 = full training; adapters the
    model already has are merged first; needs peft)"""
    eeg_drop: float | None = field(default=None, metadata={"metavar": "P"})
    """fraction of each training window's EEG tokens hidden from the LM (the window summary still reads all of
    them; default: 0.5 for several task stores trained at least 400 steps each, else 0)"""
    freeze_lm: bool | None = None
    """train only the window summary and the output head, the LM as pretrained (--no-freeze-lm: the whole LM, as
    the reference; default: for one task with the window summary and --lora-rank 0, both, keeping the one with the
    higher validation balanced accuracy (candidates/ holds the two runs); for several tasks the whole LM)"""
    compare_freezing: bool | None = None
    """tune the LM both frozen and fully and keep the one with the higher validation balanced accuracy (default:
    as --freeze-lm says)"""


EEG_DROP_SEVERAL_TASKS = 0.5
"""``--eeg-drop``'s default for several task stores on a long enough schedule (:func:`eeg_drop`)."""
EEG_DROP_MIN_STEPS_PER_TASK = 400
"""The schedule, in steps per task store, from which :func:`eeg_drop` hides tokens by default."""


def model_config(model_dir: Path) -> NeuroLMConfig:
    """The configuration of the NeuroLM in ``model_dir``, with a clear error for a tokenizer directory."""
    values = read_config(model_dir, "NeuroLM model")
    if "gpt" not in values and "codebook_size" in values:
        raise NeuroLMError(f"{model_dir} is a neural tokenizer directory (neurolm train-tokenizer wrote it), not a "
                           "NeuroLM: --model needs a pretrained model, the --out directory of neurolm pretrain")
    return NeuroLMConfig.from_dict(values)


def defaults_for(config: NeuroLMConfig) -> StageDefaults:
    """``tiny`` settings for a model of the tiny GPT shape, the paper's otherwise."""
    tiny = GPTConfig.from_preset("tiny")
    cfg = config.gpt
    return DEFAULTS["tiny" if (cfg.n_layer, cfg.n_embd) == (tiny.n_layer, tiny.n_embd) else "paper"]


def eeg_drop(args: InstructArgs, steps: int) -> float:
    """``--eeg-drop`` or its default for a run of ``steps``: :data:`EEG_DROP_SEVERAL_TASKS` for several task stores
    with at least :data:`EEG_DROP_MIN_STEPS_PER_TASK` steps each, else 0 (a threshold for every model size). Why:
    on long schedules several tasks memorise their training windows through the EEG tokens, while on shorter ones
    they under-fit and the drop only thins their input. One task already chooses between the frozen and the fully
    tuned LM on validation."""
    if args.eeg_drop is not None:
        return args.eeg_drop
    several = len(args.data) > 1 and steps >= EEG_DROP_MIN_STEPS_PER_TASK * len(args.data)
    return EEG_DROP_SEVERAL_TASKS if several else 0.0


def summary_gate(args: InstructArgs) -> bool:
    """``--summary-gate`` or its default: on for several task stores. Why: several tasks share one summary, and the
    gate lets each question read its own dimensions of it; one task has one question, so there the gate only
    rescales the summary."""
    return len(args.data) > 1 if args.summary_gate is None else args.summary_gate


def compares_freezing(args: InstructArgs) -> bool:
    """Whether the LM is tuned both ways and the better on validation kept: ``--compare-freezing`` if given, else
    for one task with the window summary, without LoRA, without ``--freeze-lm``/``--no-freeze-lm`` and with
    validation windows (on its training windows the fully tuned LM, which memorises them, would always win). Why:
    on small real datasets the frozen LM can generalise better, on others the fully tuned one does, and the
    validation subjects mostly pick the better one; for several tasks the frozen LM cannot tell their answers
    apart, so it is not tried there."""
    if args.compare_freezing is not None:
        return args.compare_freezing
    if args.freeze_lm is not None or len(args.data) != 1 or not args.window_summary or args.lora_rank:
        return False
    try:
        store = WindowStore(args.data[0])
    except NeuroLMError:  # the stage reports it, after the --model checks, as for several stores
        return False
    return "val" in store.splits and len(store.split("val")) > 0


def resolve(args: InstructArgs) -> InstructArgs:
    """``args`` with every default decided from the inputs: the size's preset (from the model's GPT shape) grown
    for the number of stores, the schedule, the text crops, the EEG drop, the summary gate and whether to compare
    the frozen with the fully tuned LM. Resolving a resolved recipe changes nothing."""
    if args.lora_rank < 0:
        raise NeuroLMError(f"--lora-rank must be 0 (off) or positive, got {args.lora_rank}")
    if args.freeze_lm and args.lora_rank:
        raise NeuroLMError("--freeze-lm and --lora-rank exclude each other: one says the blocks stay as they are, "
                           "the other adapts them")
    if args.compare_freezing and args.freeze_lm:
        raise NeuroLMError("--compare-freezing tunes the LM both ways: leave out --freeze-lm")
    if not args.summary_scale > 0:
        raise NeuroLMError(f"--summary-scale must be positive, got {args.summary_scale}")
    for name in ("text_length", "text_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise NeuroLMError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    preset = defaults_for(model_config(args.model)).for_tasks(len(args.data))
    steps = preset.steps if args.steps is None else args.steps
    # the floor keeps the size's ratio to --lr, computed as the other stages' train_config does
    lr, min_lr = (preset.lr, preset.min_lr) if args.lr is None else (args.lr, args.lr * preset.min_lr / preset.lr)
    drop = eeg_drop(args, steps)
    if not 0 <= drop < 1:
        raise NeuroLMError(f"--eeg-drop must be in [0, 1), got {drop}")
    compare = compares_freezing(args)
    return replace(
        args, steps=steps, batch_size=preset.batch_size if args.batch_size is None else args.batch_size, lr=lr,
        min_lr=min_lr if args.min_lr is None else args.min_lr,
        eval_every=max(1, steps // EVALUATIONS) if args.eval_every is None else args.eval_every,
        group_by_length=False if args.group_by_length is None else args.group_by_length,
        text_weight=preset.text_weight if args.text_weight is None else args.text_weight,
        text_length=preset.text_length if args.text_length is None else args.text_length,
        text_batch=preset.text_batch if args.text_batch is None else args.text_batch,
        eeg_drop=drop, summary_gate=summary_gate(args), freeze_lm=bool(args.freeze_lm), compare_freezing=compare)


# fields that say where and how to run, not what: not part of a recipe file
_NOT_RECIPE = ("out", "resume", "allow_changes", "progress")


def recipe_dict(args: InstructArgs) -> dict[str, Any]:
    """The recipe as JSON values (paths absolute), without where it runs (``out``, ``resume``, ...)."""
    return {f.name: _jsonable(getattr(args, f.name)) for f in fields(args) if f.name not in _NOT_RECIPE}


def describe(args: InstructArgs) -> str:
    """One line per recipe value, as printed before training."""
    return "recipe:\n" + "\n".join(f"  {k} = {v!r}" for k, v in recipe_dict(args).items())


def write_recipe(args: InstructArgs, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RECIPE_FILE).write_text(json.dumps(recipe_dict(args), indent=2) + "\n")


RECIPES = Path(__file__).parent / "recipes"
"""The shipped recipes (``--config NAME``): the method's settings for a model size and a number of tasks, without
the inputs and the run control (model, stores, seed, device, ...), which the command line adds."""
RUN_CONTROL = ("model", "data", "text", "shots", "seed", "device", "precision", "compile", "grad_accum",
               "activation_checkpointing", "fsdp", "head_chunk", "cache_mb")
"""What a shipped recipe leaves to the command line."""


def shipped_recipe(args: InstructArgs) -> str:
    """The TOML text of ``args``' recipe as shipped (``args`` resolved; :data:`RUN_CONTROL` left out)."""
    values = {k: v for k, v in recipe_dict(args).items() if k not in RUN_CONTROL}
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The values of a recipe file (``.json`` or ``.toml``; a run directory: its ``recipe.json``; a name: the
    shipped ``recipes/NAME.toml``) as keyword arguments of :class:`InstructArgs`. Unknown keys are an error, so a
    misspelt one cannot be ignored."""
    path = Path(path)
    if not path.exists() and (RECIPES / f"{path}.toml").is_file():
        path = RECIPES / f"{path}.toml"
    if path.is_dir():
        path = path / RECIPE_FILE
    if not path.is_file():
        raise NeuroLMError(f"--config {path}: no such recipe file")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise NeuroLMError(f"--config {path}: not a recipe file ({exc})") from exc
    known = {f.name for f in fields(InstructArgs)} - set(_NOT_RECIPE)
    if unknown := sorted(set(values) - known):
        raise NeuroLMError(f"--config {path}: unknown key(s) {', '.join(unknown)}")
    return values


_REQUIRED = ("model", "data", "out")
"""The flags a run needs, from the command line or a ``--config`` file."""


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` (:func:`apply_config`); ``--model``, ``--data`` and ``--out`` may then come from it."""
    section = next((g for g in p._action_groups if g.title == "run control"), p)
    section.add_argument("--config", metavar="FILE", type=Path, help=(
        "start from a recipe: a shipped one by name (tiny-one-task, tiny-six-tasks, paper-one-task, "
        "paper-six-tasks), a run directory (its recipe.json: replays the run) or a .json/.toml file with the "
        "same keys; flags given on the command line (other than at their defaults) override its values"))
    for action in p._actions:  # a recipe may supply them: checked in apply_config()
        if action.dest in _REQUIRED:
            action.required = False


def apply_config(ns: argparse.Namespace) -> argparse.Namespace:
    """The parsed command line with ``--config``'s values where a flag was left at its default."""
    if ns.config is not None:
        defaults = {f.name: None if f.default is MISSING else f.default for f in fields(InstructArgs)}
        for key, value in load_recipe(ns.config).items():
            if getattr(ns, key) == defaults[key]:
                setattr(ns, key, value)
    if missing := [f"--{name}" for name in _REQUIRED if getattr(ns, name) is None]:
        raise NeuroLMError(f"the following arguments are required: {', '.join(missing)} (or --config FILE)")
    return ns
