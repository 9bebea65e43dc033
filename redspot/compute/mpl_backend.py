"""matplotlib's backend in remote cells: draws with Agg; ``show()`` sends the figures to
the notebook (see :mod:`redspot.compute.display`) and closes them."""

from __future__ import annotations

from matplotlib import pyplot
from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .display import display

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(block=None):
    """Send every open figure to the notebook, then close it."""
    for manager in Gcf.get_all_fig_managers():
        display(manager.canvas.figure)
    pyplot.close("all")
