"""The console entry point: ``--version`` and help texts free of the docstrings' reST markup."""

from __future__ import annotations

import re

import pytest

from neurolm import __version__
from neurolm.cli import COMMANDS, main, plain

MARKUP = re.compile(r"``|:(?:func|class|mod|meth|data|attr):`")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurolm {__version__}"


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in COMMANDS])
def test_help_shows_no_rest_markup(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: neurolm" in text
    assert not MARKUP.search(text), MARKUP.search(text).group(0)


@pytest.mark.parametrize("rest,shown", [
    ("``neurolm <command>``: one", "neurolm <command>: one"),
    ("``a.b`` and ``--lr``", "a.b and --lr"),
    (":func:`neurolm.data.inputs.as_raw`", "neurolm.data.inputs.as_raw"),
    (":class:`~neurolm.lm.cache.EncoderCache`", "EncoderCache"),
    ("it's plain", "it's plain"),
])
def test_plain_shows_what_sphinx_would(rest, shown):
    assert plain(rest) == shown
