"""A training run's progress in the notebook: a step bar, the metrics, a live plot.

In a kernel with widgets: an ``IntProgress`` of the steps reported (of ``steps`` when
known), the last metrics, and a plot of every numeric metric by step (a PNG redrawn at
most twice a second). Elsewhere (a script, Ray Jobs): a line per report on stderr.
"""

from __future__ import annotations

import html
import sys
import time

#: The plot is redrawn at most this often (seconds).
REDRAW = 0.5


class TextDisplay:
    def __init__(self, run_id: str, steps: int | None):
        self.run_id, self.steps = run_id, steps
        print(f"Training run {run_id} started", file=sys.stderr)

    def status(self, text: str) -> None:
        print(f"[{self.run_id}] {text}", file=sys.stderr)

    def report(self, metrics: dict) -> None:
        of = f"/{self.steps}" if self.steps else ""
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()
                         if k not in ("step", "checkpoint"))
        print(f"[{self.run_id}] step {metrics.get('step')}{of} {shown}", file=sys.stderr)

    def stream(self, name: str, text: str) -> None:
        (sys.stderr if name == "stderr" else sys.stdout).write(text)

    def finish(self, result, error: str | None) -> None:
        if error:
            print(f"[{self.run_id}] {error}", file=sys.stderr)


class WidgetDisplay:
    def __init__(self, run_id: str, steps: int | None):
        import ipywidgets as w
        from IPython.display import display

        self.run_id, self.steps = run_id, steps
        self.history: list[dict] = []
        self.bar = w.IntProgress(value=0, min=0, max=steps or 1,
                                 bar_style="info", description="steps")
        self.label = w.HTML(f"Training run <code>{html.escape(run_id)}</code>: starting…")
        # hidden until there is something to plot (an empty Image is a broken icon)
        self.plot = w.Image(format="png", layout=w.Layout(max_width="640px", display="none"))
        self.box = w.VBox([w.HBox([self.bar, self.label]), self.plot])
        self._drawn = 0.0
        self._started = time.monotonic()
        self._state = "starting"
        self._reported = False
        display(self.box)

    def status(self, text: str) -> None:
        """What the run does now (until its first report): in the label, with the time
        since the start (``tick`` keeps that current)."""
        if not self._reported:
            self._state = text
            self.tick()

    def tick(self) -> None:
        if not self._reported:
            waited = int(time.monotonic() - self._started)
            self.label.value = (f"Training run <code>{html.escape(self.run_id)}</code>: "
                                f"{html.escape(self._state)}… {waited} s")

    def report(self, metrics: dict) -> None:
        self._reported = True
        self.history.append(metrics)
        step = int(metrics.get("step") or len(self.history))
        if not self.steps:
            self.bar.max = max(self.bar.max, step)
        self.bar.value = min(step, self.bar.max)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()
                          if k not in ("step", "checkpoint"))
        of = f"/{self.steps}" if self.steps else ""
        self.label.value = f"step {step}{of}: {html.escape(shown)}"
        if time.monotonic() - self._drawn >= REDRAW:
            self.redraw()

    def stream(self, name: str, text: str) -> None:
        (sys.stderr if name == "stderr" else sys.stdout).write(text)

    def redraw(self) -> None:
        self._drawn = time.monotonic()
        png = plot_png(self.history, self.run_id)
        if png:
            self.plot.value = png
            self.plot.layout.display = None

    def finish(self, result, error: str | None) -> None:
        self.redraw()
        if error:
            self.bar.bar_style = "danger"
            self.label.value = f"<span style='color:#b00020'>{html.escape(error)}</span>"
        else:
            self.bar.bar_style = "success"
            self.bar.value = self.bar.max
            self.label.value += " (done)"


def plot_png(history: list[dict], title: str) -> bytes | None:
    """Every numeric metric of ``history`` by step, as a PNG (pyplot left alone)."""
    names = sorted({k for h in history for k, v in h.items()
                    if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)})
    if not names:
        return None
    from ..widgets.plots import lines_png

    series = {name: [(h.get("step", i + 1), h[name]) for i, h in enumerate(history)
                     if isinstance(h.get(name), int | float)] for name in names}
    return lines_png(series, "step", title, title_size="small")


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def live_display(run_id: str, steps: int | None):
    """Widgets in a kernel, text elsewhere."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return WidgetDisplay(run_id, steps)
    return TextDisplay(run_id, steps)
