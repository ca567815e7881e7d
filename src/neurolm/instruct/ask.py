"""``neurolm ask``: ask a trained model about one recording, one window or a sliding series of windows.

The recording goes through exactly what preparation did for the task's dataset: the dataset reader's channel
mapping and channel list (:meth:`~neurolm.data.readers.DatasetReader.pick`), the paper's filters at that dataset's
mains frequency (:func:`~neurolm.data.preprocess.preprocess_raw`), and the task's window length
(:func:`~neurolm.data.prepare.cut_windows`). Like preparation, the recording is filtered as a whole before it is cut,
so a window's samples do not depend on where the cut falls; but a recording longer than :data:`CHUNK_S` is read and
filtered a chunk at a time, with margins of the filters' lengths (:func:`~neurolm.data.preprocess.preprocess_chunks`),
its whole-recording checks accumulated chunk by chunk, and its windows handed to the model a batch at a time, so that
memory does not grow with its length: a night of EEG is answered on a laptop. A model directory's ``training.json``
(:mod:`neurolm.data.provenance`) overrides the dataset defaults with what its training windows were prepared with
(filters, notch, rate, scaling, channel order, window length), the recording must pass preparation's bad-input checks
(NaN/Inf, flat channels of a fixed channel set), and a task the model was not tuned on is refused unless
``allow_untrained_task`` (``--allow-untrained-task``) says otherwise.

A task question is answered by the scored answers (:func:`~neurolm.instruct.data.score_answers`): the answer is the
most probable allowed answer and every option's probability comes with it; it is never unparseable. A free-form
``question`` is answered by greedy, KV-cached generation instead (:meth:`NeuroLM.generate`), cut at
``<|endoftext|>``. A question that does not start with ``Question:`` is put in the training template
``Question: … Answer:``, the only form the model was tuned on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path

import mne
import numpy as np
import torch

from ..data.channels import channel_indices
from ..data.inputs import as_raw
from ..data.preprocess import PreprocessConfig, low_pass, refuse_nonfinite, resampled_length
from ..data.provenance import check_task, preprocess_config, read_training
from ..data.readers import Segment, get_reader
from ..data.windows import cut_windows, drop_bad_channels, keep_plausible, stream_windows
from ..errors import NeuroLMError
from ..lm.model import NeuroLM
from ..plots import figure, save
from ..report import Table, to_text
from ..text import TextTokenizer
from .data import collate_eeg, get_task, score_answers
from .evaluate import decode_answer, load_model

Recording = mne.io.BaseRaw | str | os.PathLike | np.ndarray
"""What ``ask`` takes as a recording (see :func:`~neurolm.data.inputs.as_raw`)."""

CHUNK_S = 600.0
"""Seconds of recording read and filtered at a time. Ten minutes keeps the filters' margins (their lengths: tens of
seconds a side) a small overhead while a chunk's arrays stay small beside the model; a recording not much longer is
read whole, exactly as ``prepare`` reads it."""


@dataclass(frozen=True)
class Answer:
    """The model's answer about one window of a recording."""

    start: float
    """Window start, seconds from the recording start."""
    end: float
    answer: str
    """The chosen answer as the task writes it (``"Yes"``, ``"(C)"``), or the generated text of a free-form question."""
    label: int | None = None
    """Label index of the answer (the dataset's class order); None for a free-form question."""
    label_name: str | None = None
    """The dataset's name of that class (``"abnormal"``, ``"N2"``); None for a free-form question."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Probability of every allowed answer (answer text → p, summing to 1); empty for a free-form question."""


def task_windows(recording: Recording, task: str, *, start: float | None = None, every: float | None = None,
                 mains: float | None = None, ch_names: Sequence[str] | None = None, sfreq: float | None = None,
                 unit: str = "V", trained: dict | None = None, scale: float | None = None,
                 allow_low_rate: bool = False, chunk_s: float | None = CHUNK_S) -> tuple[list[dict], list[float]]:
    """The task's windows of a recording as store-like items (``signal`` in µV/100 at 200 Hz, ``chans``) and their
    start times in seconds: one window at ``start`` (default 0), or with ``every=S`` windows every S seconds from
    ``start`` to the end. ``mains`` overrides the task dataset's notch frequency. A numpy ``recording`` is
    ``(channels, samples)`` with ``ch_names``, ``sfreq`` and ``unit`` (see :func:`~neurolm.data.inputs.as_raw`).
    ``trained``: the task's entry of the model's ``training.json``, whose preprocessing, channel order and window
    length replace the dataset's defaults. ``scale``: the declared factor of samples not in their stated unit
    (default: the one the task's windows were prepared with). ``allow_low_rate``: accept a recording at or below
    150 Hz although the task's windows were prepared without low rates; a recording whose band differs from the
    one the model was tuned on is answered with a warning. ``chunk_s``: seconds read and filtered at a time (None:
    the whole recording at once); see :func:`stream_task_windows`, which hands the windows on one at a time."""
    pairs = list(stream_task_windows(recording, task, start=start, every=every, mains=mains, ch_names=ch_names,
                                     sfreq=sfreq, unit=unit, trained=trained, scale=scale,
                                     allow_low_rate=allow_low_rate, chunk_s=chunk_s))
    return [item for _, item in pairs], [s for s, _ in pairs]


def stream_task_windows(recording: Recording, task: str, *, start: float | None = None, every: float | None = None,
                        mains: float | None = None, ch_names: Sequence[str] | None = None,
                        sfreq: float | None = None, unit: str = "V", trained: dict | None = None,
                        scale: float | None = None, allow_low_rate: bool = False,
                        chunk_s: float | None = CHUNK_S) -> Iterator[tuple[float, dict]]:
    """:func:`task_windows` as ``(start s, item)`` pairs made as they are consumed, ``chunk_s`` seconds of recording
    read and filtered at a time, so that memory does not grow with the recording. The recording's checks and the
    window count are done before this returns; a recording refused for too many implausible windows raises after
    its last window (each one is dropped as it comes)."""
    get_task(task)
    if scale is not None and not 0 < scale < float("inf"):
        raise NeuroLMError(f"--scale {scale:g}: must be a positive factor (0.01: samples stored 100 times too large)")
    if chunk_s is not None and (not chunk_s > 0 or math.isinf(chunk_s)):
        raise NeuroLMError(f"chunk_s must be > 0 s and finite (None: the whole recording at once), got {chunk_s:g}")
    reader = get_reader(task)
    raw = as_raw(recording, ch_names=ch_names, sfreq=sfreq, unit=unit, preload=False)
    source = _source(recording)
    start = 0.0 if start is None else float(start)
    if not start >= 0 or math.isinf(start):  # `not >=` is also true for NaN
        raise NeuroLMError(f"--start must be ≥ 0 s and finite, got {start:g}")
    if every is not None and (not every > 0 or math.isinf(every)):
        raise NeuroLMError(f"--every must be > 0 s and finite, got {every:g}")
    seg, rate_in = Segment(raw, []), raw.info["sfreq"]
    chunk = None if chunk_s is None else max(1, round(chunk_s * rate_in))
    try:
        reader.pick(seg)
        if trained is not None:
            config = preprocess_config(trained, mains)
            config = config if scale is None else replace(config, input_scale=scale)
            config = replace(config, allow_low_rate=True) if allow_low_rate else config
            _trained_channel_order(seg, trained)
        else:
            config = PreprocessConfig(mains=reader.mains if mains is None else mains,
                                      input_scale=reader.scale if scale is None else scale,
                                      allow_low_rate=reader.allow_low_rate or allow_low_rate)
        # prepare's checks, in prepare's order, over the whole recording a chunk at a time
        nonfinite = drop_bad_channels(seg, Path(source), config, fixed=reader.channels is not None, chunk=chunk)
        refuse_nonfinite(nonfinite, seg.labels, raw.n_times)
        band = [config.l_freq, low_pass(rate_in, config)]
    except NeuroLMError as exc:  # prepare's checks name the file already
        raise NeuroLMError(f"{source}: task {task}: {str(exc).removeprefix(f'{source}: ')}") from exc
    idx = np.array(channel_indices(seg.names), dtype=np.int64)
    if trained is not None and isinstance(trained.get("band_hz"), list) and trained["band_hz"] != band:
        warnings.warn(f"{source}: at {rate_in:g} Hz its band is {band[0]:g}–{band[1]:g} Hz, but the model "
                      f"was tuned on {task} windows of {trained['band_hz'][0]:g}–{trained['band_hz'][1]:g} Hz "
                      "(training.json): its answers may suffer", UserWarning, stacklevel=2)
    window_s, rate = reader.window_seconds(len(idx)), config.sfreq  # after preprocessing
    if trained is not None and isinstance(trained.get("window_s"), (int, float)):
        window_s = float(trained["window_s"])
    n_times = resampled_length(raw.n_times, rate_in, config)
    duration = n_times / rate
    stop = duration if every is not None else start + window_s
    starts = cut_windows(n_times, start, stop, window_s, every, rate)
    if not starts:
        raise NeuroLMError(f"{source}: {duration:.1f} s long, no whole {window_s:g} s {task} window from {start:g} s")
    label = f"{source}: task {task}"
    windows = stream_windows(seg, config, starts, round(window_s * rate), chunk=chunk)
    return _items(keep_plausible(_named(windows, label), label, config), idx, rate)


def _named(windows: Iterator[tuple[int, np.ndarray]], label: str) -> Iterator[tuple[int, np.ndarray]]:
    """The windows, with a failure to read the file mid-way named like the checks' (``FILE: task T: …``)."""
    try:
        yield from windows
    except NeuroLMError as exc:
        raise NeuroLMError(f"{label}: {exc}") from exc


def _items(windows: Iterator[tuple[int, np.ndarray]], idx: np.ndarray, rate: float) -> Iterator[tuple[float, dict]]:
    for s, signal in windows:
        yield s / rate, {"signal": signal, "chans": idx, "label": -1}


def _trained_channel_order(seg: Segment, trained: dict) -> None:
    """Put the picked channels in the order the model was trained with; refuse a different channel set."""
    order = trained.get("channels")
    if not isinstance(order, list) or order == seg.names:
        return
    if sorted(order) != sorted(seg.names):
        raise NeuroLMError(f"channels {', '.join(seg.names)} differ from the {', '.join(order)} the model was "
                           "trained with")
    labels = dict(zip(seg.names, seg.labels))
    seg.names, seg.labels = list(order), [labels[n] for n in order]


def _source(recording: Recording) -> str:
    """The name a recording's errors start with: the path, the Raw's file, or ``recording``."""
    if isinstance(recording, (str, os.PathLike)):
        return str(recording)
    files = [f for f in recording.filenames if f is not None] if isinstance(recording, mne.io.BaseRaw) else []
    return str(files[0]) if files else "recording"


def question_prompt(question: str, tokenizer: TextTokenizer | None = None) -> torch.Tensor:
    """``[50257]`` + the question's tokens, wrapped as ``Question: … Answer:`` unless it already starts that way;
    ``tokenizer``: the model's (default GPT-2's)."""
    text = question.strip()
    if not text:
        raise NeuroLMError("--question is empty")
    if not text.startswith("Question:"):
        text = f"Question: {text} Answer:"
    tokenizer = TextTokenizer() if tokenizer is None else tokenizer
    return torch.tensor([tokenizer.vocab.instruction_start, *tokenizer.encode(text)])


@torch.no_grad()
def ask(model: NeuroLM | str | Path, recording: Recording, task: str, *, start: float | None = None,
        every: float | None = None, question: str | None = None, max_new_tokens: int = 5, batch_size: int = 32,
        mains: float | None = None, ch_names: Sequence[str] | None = None, sfreq: float | None = None,
        unit: str = "V", training: dict | None = None, allow_untrained_task: bool = False,
        scale: float | None = None, allow_low_rate: bool = False, chunk_s: float | None = CHUNK_S) -> list[Answer]:
    """Answer the task's question (or a free-form ``question``) about one window at ``start`` seconds, or about
    windows every ``every`` seconds over the whole recording. ``model`` may be a model directory; ``recording`` an
    ``mne.io.Raw``, a path, or a ``(channels, samples)`` numpy array with ``ch_names``, ``sfreq`` and ``unit``
    (``"V"`` or ``"uV"``, see :func:`~neurolm.data.inputs.as_raw`). ``training``: the model's ``training.json``
    (read from the directory when ``model`` is one); ``allow_untrained_task`` answers a task the model was not
    tuned on with a warning instead of refusing it; ``scale`` declares a factor for samples not in their stated unit
    (default: what the task's training windows were prepared with); ``allow_low_rate`` accepts a recording at or below
    150 Hz the task's windows were prepared without. ``chunk_s``: seconds of recording read and filtered at a time
    (None: all at once); windows reach the model ``batch_size`` at a time as they are cut, so memory does not grow
    with the recording."""
    if max_new_tokens < 1:
        raise NeuroLMError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise NeuroLMError(f"--batch-size must be at least 1, got {batch_size}")
    checked = not isinstance(model, NeuroLM) or training is not None  # an object says nothing of its training
    source = "the model" if isinstance(model, NeuroLM) else str(model)
    if not isinstance(model, NeuroLM):
        training = read_training(model) if training is None else training  # makes its own tasks known by name
        model = load_model(model)
    task_def = get_task(task)
    if checked:
        check_task(training, task, allow_untrained=allow_untrained_task, source=source)
    trained = None if training is None else training["datasets"].get(task)
    windows = stream_task_windows(recording, task, start=start, every=every, mains=mains, ch_names=ch_names,
                                  sfreq=sfreq, unit=unit, trained=trained, scale=scale,
                                  allow_low_rate=allow_low_rate, chunk_s=chunk_s)
    device = next(model.parameters()).device
    prompt = question_prompt(question, model.text_tokenizer).to(device) if question is not None else None
    if prompt is not None and task_def.window_s + len(prompt) + max_new_tokens > model.config.gpt.block_size:
        raise NeuroLMError(f"--question: {len(prompt)} tokens + {max_new_tokens} new ones do not fit the model's "
                           f"{model.config.gpt.block_size} positions after {task_def.window_s:g} s of EEG")
    options = [a.strip() for a in task_def.answers]
    text_tok = model.text_tokenizer
    was_training = model.training
    model.eval()
    answers = []
    try:
        while batch := list(islice(windows, batch_size)):
            eeg = collate_eeg([item for _, item in batch], _source(recording),
                              model.config.tokenizer.norm_over_padding).to(device)
            span = [s for s, _ in batch]
            if prompt is not None:
                tokens, _ = model.generate(eeg, prompt.expand(len(span), -1), None, max_new_tokens)
                answers += [Answer(s, s + task_def.window_s, decode_answer(t, text_tok).strip())
                            for s, t in zip(span, tokens.cpu())]
                continue
            for s, p in zip(span, score_answers(model, eeg, [task] * len(span))):
                k = int(p.argmax())
                answers.append(Answer(s, s + task_def.window_s, options[k], k, task_def.classes[k],
                                      {o: float(x) for o, x in zip(options, p.double() / p.double().sum())}))
    finally:
        model.train(was_training)
    return answers


def format_table(answers: list[Answer], task: str) -> str:
    """One row per window: start, end, answer (and class), and with scored answers every option's probability."""
    get_task(task)  # an unknown task is refused before any row
    free = answers[0].label is None
    # probability columns carry Answer.probabilities' keys, so the table and the Python API name them alike
    header = ["start_s", "end_s", "answer", *([] if free else (f"p({o})" for o in answers[0].probabilities))]
    rows = [[f"{a.start:.1f}", f"{a.end:.1f}", repr(a.answer) if free else f"{a.answer} {a.label_name}",
             *(f"{p:.3f}" for p in a.probabilities.values())] for a in answers]
    return to_text([Table(header, rows)])


def plot_answers(answers: list[Answer], task: str, path: str | Path) -> None:
    """Hypnogram-like PNG: the answer over time as a step line, and the options' probabilities stacked below."""
    if answers[0].label is None:
        raise NeuroLMError("--plot needs the task's scored answers; it cannot plot free-form text")
    classes = get_task(task).classes
    span = answers[-1].end - answers[0].start
    unit, scale = ("h", 3600.0) if span > 7200 else ("min", 60.0) if span > 600 else ("s", 1.0)
    x = np.array([a.start for a in answers] + [answers[-1].end]) / scale
    labels = [a.label for a in answers]
    probs = np.array([list(a.probabilities.values()) for a in answers])
    fig, (top, bottom) = figure((10, 5), 2, 1, sharex=True, height_ratios=(1, 1))
    top.step(x, labels + labels[-1:], where="post", color="black")
    top.set(yticks=range(len(classes)), yticklabels=classes, ylim=(len(classes) - 0.5, -0.5), ylabel="answer",
            title=f"{task}: answers over time ({len(answers)} windows)")
    lower = np.zeros(len(answers) + 1)
    for k, c in enumerate(classes):
        upper = lower + np.append(probs[:, k], probs[-1, k])
        bottom.fill_between(x, lower, upper, step="post", label=c)
        lower = upper
    bottom.set(ylim=(0, 1), ylabel="probability", xlabel=f"time ({unit})")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    save(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .tasks import TASKS

    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="instruction-tuned NeuroLM directory")
    p.add_argument("recording", type=Path, metavar="RECORDING", help="any EEG file MNE reads (EDF, BDF, FIF, …)")
    p.add_argument("--task", required=True, metavar="NAME",
                   help=f"which task's question to ask: {', '.join(TASKS)}, or a task from a task file the model "
                        "was tuned on (recorded in its training.json)")
    p.add_argument("--start", type=float, default=None, metavar="S", help="window start in seconds (default 0)")
    p.add_argument("--every", type=float, default=None, metavar="S",
                   help="slide a window every S seconds over the whole recording (from --start)")
    p.add_argument("--question", default=None, metavar="TEXT",
                   help="free-form question, answered by generation instead of the task's options")
    p.add_argument("--max-new-tokens", type=int, default=5, help="tokens generated for --question (default 5)")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="save a hypnogram-like plot of the answers")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the answers as JSON (the fields of neurolm.api.Answer, one object per window)")
    p.add_argument("--mains", type=float, choices=[50.0, 60.0], default=None,
                   help="notch frequency; default: what the model's training windows used (training.json), else "
                        "the task dataset's (60 Hz TUH, 50 Hz HMC/EEGMAT/SEED)")
    p.add_argument("--scale", type=float, default=None, metavar="F",
                   help="multiply the samples by F as they are read, for a file not in the unit it states; default: "
                        "the scale the model's training windows were prepared with (training.json), else 1")
    p.add_argument("--allow-low-rate", action="store_true",
                   help="answer a recording at or below 150 Hz (low-passed below its Nyquist frequency) although "
                        "the model's windows were prepared without low rates; a band that differs is warned about")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    p.add_argument("--allow-untrained-task", action="store_true",
                   help="answer a task the model was not instruction-tuned on (with a warning) instead of refusing")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")


def run(args: argparse.Namespace) -> int:
    if args.plot is not None and args.question is not None:
        raise NeuroLMError("--plot needs the task's scored answers; it cannot plot free-form text (--question)")
    if args.plot is not None and not args.plot.parent.is_dir():  # before the work, not after it
        raise NeuroLMError(f"--plot {args.plot}: no folder {args.plot.parent}; create it first")
    model = load_model(args.model, args.device)
    training = read_training(args.model)
    if training is None:
        check_task(None, args.task, allow_untrained=args.allow_untrained_task, source=str(args.model))
    answers = ask(model, args.recording, args.task, start=args.start, every=args.every, question=args.question,
                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, mains=args.mains,
                  training=training, allow_untrained_task=args.allow_untrained_task, scale=args.scale,
                  allow_low_rate=args.allow_low_rate)
    print(format_table(answers, args.task))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(a) for a in answers], indent=2) + "\n")
    summary = f"asked {args.task} about {args.recording}: {len(answers)} window(s)"
    if answers[0].label_name is not None:
        counts = Counter(a.label_name for a in answers)
        summary += " → " + ", ".join(f"{c} {counts[c]}" for c in get_task(args.task).classes if counts[c])
    if args.plot is not None:
        plot_answers(answers, args.task, args.plot)
        summary += f"; plot → {args.plot}"
    print(summary)
    return 0
