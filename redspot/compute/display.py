"""Rich output of remote cells: ``display()``, IPython's display objects and matplotlib.

On the worker there is no IPython shell. While a cell runs, ``display`` (a builtin of
the cell, and ``IPython.display.display`` when the cell uses IPython) formats objects
into Jupyter's MIME bundles with IPython's own formatters and sends them to the kernel,
which publishes them in the cell's output as if they had been displayed there.
matplotlib draws with a backend of ours: ``plt.show()`` sends the figures, and figures
left open when the cell ends are sent then, as in JupyterLab.

Bundles are JSON: binary formats (``image/png``) travel base64-encoded, as Jupyter's.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys

#: The matplotlib backend of remote cells.
BACKEND = "module://redspot.compute.mpl_backend"

_formatter = None
_emit = None  # where the running cell's output goes (one cell at a time per worker)


def _display_formatter():
    global _formatter
    if _formatter is None:
        from IPython.core.formatters import DisplayFormatter

        _formatter = DisplayFormatter()
        _formatter.formatters["image/png"].for_type_by_name(
            "matplotlib.figure", "Figure", _figure_png)
    return _formatter


def _figure_png(figure):
    from IPython.core.pylabtools import print_figure

    return print_figure(figure, "png", bbox_inches="tight")


def bundle(obj, raw: bool = False, metadata: dict | None = None) -> tuple[dict, dict]:
    """``obj``'s MIME bundle and metadata, ready for JSON."""
    if raw:
        data, meta = dict(obj), dict(metadata or {})
    else:
        data, meta = _display_formatter().format(obj)
        meta = {**meta, **(metadata or {})}
    return {k: _jsonable(v) for k, v in data.items()}, meta


def _jsonable(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def display(*objs, raw: bool = False, metadata: dict | None = None, **kwargs):
    """Show objects in the notebook cell that runs this remote cell."""
    emit = _emit
    for obj in objs:
        if emit is None:  # not inside a remote cell: print, as IPython does without a shell
            print(repr(obj))
            continue
        data, meta = bundle(obj, raw=raw, metadata=metadata)
        emit(("display", data, meta))


@contextlib.contextmanager
def capture(emit, code: str, namespace: dict):
    """Route the cell's rich output to ``emit`` while it runs."""
    global _emit
    _emit = emit
    namespace.setdefault("display", display)
    patched = []
    if "IPython" in code:  # the cell may import IPython's display: make it ours
        import IPython.core.display_functions
        import IPython.display

        for module in (IPython.display, IPython.core.display_functions):
            patched.append((module, module.display))
            module.display = display
    _use_backend()
    try:
        yield
        _show_open_figures()
    finally:
        for module, original in patched:
            module.display = original
        _emit = None


def _use_backend():
    if "matplotlib" not in sys.modules:
        os.environ["MPLBACKEND"] = BACKEND
        return
    import matplotlib

    if matplotlib.get_backend() != BACKEND:
        matplotlib.use(BACKEND)


def _show_open_figures():
    if "matplotlib.pyplot" in sys.modules:
        from .mpl_backend import show

        show()
