"""``neurolm <command>``: one console entry point whose subcommands follow the pipeline.

Each subcommand lives in the module of its stage, which provides ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``neurolm synth`` does not pay for importing the LLM.

The library reports through ``logging.getLogger("neurolm")`` (its modules' loggers are children of it) and prints
nothing itself; a command's result (a table, a summary line) is the command's own output. The CLI sends the library's
messages to stdout (warnings and errors to stderr), at ``INFO`` by default, ``WARNING`` with ``--quiet`` and
``DEBUG`` with ``--verbose``. A host application configures the ``neurolm`` logger as it likes; unconfigured, Python
shows its warnings on stderr and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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


class _ConsoleHandler(logging.Handler):
    """Messages below WARNING to stdout, the others to stderr; the streams are looked up at each message, so a
    redirected ``sys.stdout`` (a test's capture, a notebook) gets them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure_logging(*, quiet: bool = False, verbose: bool = False) -> logging.Logger:
    """Send the ``neurolm`` logger's messages to the console at the level ``--quiet`` / ``--verbose`` choose
    (module notes); replaces a handler of an earlier call (``main`` runs once per command, several times in tests)."""
    logger = logging.getLogger("neurolm")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _ConsoleHandler)]
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    return logger


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
    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", "-q", action="store_true", help="show only warnings and errors of the library")
    loudness.add_argument("--verbose", "-v", action="store_true", help="show the library's debugging messages too")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=PlainHelpFormatter,
                           parents=[common])
        p.set_defaults(_module=module)
        if argv and argv[0] == name:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    configure_logging(quiet=args.quiet, verbose=args.verbose)
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
