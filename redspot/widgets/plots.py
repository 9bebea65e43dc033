"""Line plots of metrics as PNG bytes, for ``ipywidgets.Image`` (pyplot left alone: a
``Figure`` of its own, so the notebook's figures and backend are not touched)."""

from __future__ import annotations

from io import BytesIO


def lines_png(series: dict[str, list[tuple[float, float]]], xlabel: str, title: str,
              marker: str | None = None, xticks: list | None = None,
              title_size: str | None = None) -> bytes:
    """One line per name of ``series`` (its ``(x, y)`` points), as a PNG."""
    figure = lines_figure(series, xlabel, title, marker, xticks, title_size)
    out = BytesIO()
    figure.savefig(out, format="png", dpi=96)
    return out.getvalue()


def lines_figure(series, xlabel, title, marker=None, xticks=None, title_size=None):
    """The ``Figure`` of ``lines_png``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 2.5))
    axes = figure.subplots()
    for name, points in series.items():
        axes.plot(*zip(*points, strict=True), marker=marker, label=name)
    axes.set_xlabel(xlabel)
    if xticks is not None:
        axes.set_xticks(xticks)
    elif all(float(x).is_integer() for points in series.values() for x, _ in points):
        # steps, epochs: whole numbers, never 1.5
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="best", fontsize="small")
    axes.set_title(title, fontsize=title_size)
    figure.tight_layout()
    return figure
