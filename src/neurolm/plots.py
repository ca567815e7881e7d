"""PNG plots built on :class:`matplotlib.figure.Figure`, never on pyplot: a library call must not switch a notebook's
backend (``matplotlib.use``) or leave figures open in pyplot's global state. Every plot of the package (stage curves,
evaluation, ``ask``, the demo) is drawn on :func:`figure` and written by :func:`save`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    """A new figure and its axes (``Figure.subplots``); matplotlib is imported only when a plot is drawn."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save(fig: Figure, path: str | Path) -> Path:
    """Lay the figure out and write it as a PNG at 100 dpi."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_rows(ax: Any, rows: list[dict], key: str, **style: Any) -> None:
    """``key`` against ``step`` over the log rows that have it (see :func:`neurolm.train.log.read_rows`)."""
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if points:
        ax.plot(*zip(*points), **style)
