"""A training run's display in the notebook: what it says while the workers start, the
plot hidden until there is one, whole-number steps."""

import pytest

from redspot.training.display import TextDisplay, WidgetDisplay
from redspot.widgets.plots import lines_figure


def test_the_widget_display_says_what_the_run_does_until_its_first_report():
    pytest.importorskip("ipywidgets")
    live = WidgetDisplay("train-1", steps=3)
    # no broken-image icon under the bar: the plot shows once there is one
    assert live.plot.layout.display == "none"
    assert "starting…" in live.label.value
    live.status("setting up DeepSpeed ZeRO-3")
    assert "setting up DeepSpeed ZeRO-3… 0 s" in live.label.value
    live._started -= 12
    live.tick()
    assert "ZeRO-3… 12 s" in live.label.value
    live.report({"step": 1, "loss": 0.5})
    assert live.label.value == "step 1/3: loss=0.5"
    assert live.plot.layout.display is None and bytes(live.plot.value).startswith(b"\x89PNG")
    live.status("late news")  # once it reports, the metrics stay in the label
    live.tick()
    assert live.label.value == "step 1/3: loss=0.5"


def test_the_text_display_prints_the_status(capsys):
    live = TextDisplay("train-2", steps=None)
    live.status("2 workers running your cell")
    assert "[train-2] 2 workers running your cell" in capsys.readouterr().err


def test_steps_are_whole_numbers_on_the_plot():
    figure = lines_figure({"loss": [(1, 0.9), (2, 0.5), (3, 0.4)]}, "step", "run")
    figure.canvas.draw()
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    fractional = lines_figure({"loss": [(0.5, 1.0), (1.25, 0.5)]}, "epoch", "run")
    fractional.canvas.draw()
    assert not all(float(t).is_integer() for t in fractional.axes[0].get_xticks())
