"""Every report of the package, rendered from one list of blocks: ``report.md`` (images linked), ``report.html``
(self-contained: images embedded as base64) and plain text for the terminal (:func:`to_text`: the prepare summary,
the ``ask`` table, the demo's table).

One list of blocks gives every form, so they never disagree. The HTML needs no network and no JavaScript: it opens
from a mail attachment or a CI artifact as well as from disk.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    """An existing PNG; linked relative to the report in Markdown, embedded in HTML."""
    caption: str


Block = Heading | Paragraph | Table | Image

_CSS = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}"""


def _render(blocks: list[Block], heading: Callable[[Heading], str], paragraph: Callable[[Paragraph], str],
            table: Callable[[Table], str], image: Callable[[Image], str]) -> list[str]:
    """Each block through the renderer's function for its kind."""
    by_kind: dict[type, Callable] = {Heading: heading, Paragraph: paragraph, Table: table, Image: image}
    return [by_kind[type(b)](b) for b in blocks]


def to_markdown(blocks: list[Block], root: Path) -> str:
    def table(b: Table) -> str:
        return "\n".join(["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                         + ["| " + " | ".join(r) + " |" for r in b.rows])

    def image(b: Image) -> str:
        return f"![{b.caption}]({b.path.resolve().relative_to(root.resolve()).as_posix()})\n*{b.caption}*"

    out = _render(blocks, lambda b: f"{'#' * b.level} {b.text}", lambda b: b.text, table, image)
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    def table(b: Table) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def image(b: Image) -> str:
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b.caption)}'>"
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")

    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>",
           *_render(blocks, lambda b: f"<h{b.level}>{html.escape(b.text)}</h{b.level}>",
                    lambda b: f"<p>{html.escape(b.text)}</p>", table, image),
           "</body></html>"]
    return "\n".join(out) + "\n"


def to_text(blocks: list[Block]) -> str:
    """Plain text: tables in aligned columns (the first left-aligned, the others right-aligned), paragraphs as
    they are, headings underlined; images by caption only."""
    def table(b: Table) -> str:
        widths = [max(len(str(c)) for c in col) for col in zip(b.header, *b.rows)]
        return "\n".join("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                         for r in [b.header, *b.rows])

    return "\n".join(_render(blocks, lambda b: f"{b.text}\n{'=-'[min(b.level, 2) - 1] * len(b.text)}",
                             lambda b: b.text, table, lambda b: f"[{b.caption}: {b.path}]"))


def write_report(blocks: list[Block], out_dir: Path, title: str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; images that do not exist are left out (a stage
    that was skipped), never linked broken."""
    blocks = [b for b in blocks if not isinstance(b, Image) or b.path.is_file()]
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(f"# {title}\n\n" + to_markdown(blocks, out_dir), encoding="utf-8")
    page.write_text(to_html([Heading(title, 1), *blocks], title), encoding="utf-8")
    return md, page
