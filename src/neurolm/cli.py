"""``neurolm <command>``: one console entry point whose subcommands follow the pipeline.

Each subcommand lives in the module of its stage, which provides ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``neurolm synth`` does not pay for importing the LLM.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from . import __version__
from .errors import NeuroLMError

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("neurolm.data.synth", "write the synthetic corpus in the six datasets' native formats"),
    "prepare": ("neurolm.data.prepare", "preprocess a dataset's native files into a window store"),
    "overlap": ("neurolm.data.overlap", "find (and exclude) pretraining recordings that are in tasks' val/test sets"),
    "train-tokenizer": ("neurolm.tokenizer.train", "train the text-aligned neural tokenizer"),
    "tokenize": ("neurolm.tokenizer.tokenize", "turn a store or an EEG file into neural tokens"),
    "pretrain": ("neurolm.lm.pretrain", "multi-channel autoregressive pretraining of NeuroLM"),
    "instruct": ("neurolm.instruct.train", "multi-task instruction tuning"),
    "evaluate": ("neurolm.instruct.evaluate", "evaluate an instruction-tuned model on prepared stores"),
    "ask": ("neurolm.instruct.ask", "ask a trained model about a recording"),
    "demo": ("neurolm.demo", "run the whole pipeline on the embedded synthetic corpus"),
}


TRAINING_COMMANDS = ("train-tokenizer", "pretrain", "instruct")
"""Commands that take ``--resume`` (the training stages)."""


def interruption_advice(command: str) -> str:
    """What to do after Ctrl-C or SIGTERM: what each command actually offers to continue."""
    if command in TRAINING_COMMANDS:
        return "re-run the same command with --resume to continue from its last checkpoint"
    if command == "demo":
        return ("re-run `neurolm demo` with the same --out to continue: finished stages are kept and an interrupted "
                "training stage continues from its checkpoint")
    if command == "prepare":
        return "re-run the same command to continue: the recordings already written are kept"
    return "re-run the same command"


_REST = re.compile(r"(:[a-z]+:)?`(`?)(~?)([^`]+)`\2")
"""reST markup in docstrings: ``literal``, :role:`target` and :role:`~module.name`."""


def plain(text: str) -> str:
    """``text`` without reST markup (what Sphinx would show), for help texts that docstrings feed."""
    return _REST.sub(lambda m: m.group(4).rsplit(".", 1)[-1] if m.group(3) else m.group(4), text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """Help texts and descriptions come from docstrings, whose reST markup a terminal shows literally."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="neurolm", description=__doc__.splitlines()[0],
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--version", action="version", version=f"neurolm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=PlainHelpFormatter)
        p.set_defaults(_module=module)
        if argv and argv[0] == name:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except NeuroLMError as exc:
        print(f"neurolm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neurolm {args.command}: interrupted; {interruption_advice(args.command)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
