"""Running a notebook cell on Ray: what goes in, what comes out, and the remote side.

Pure parts (no Ray): ``analyze`` finds the names a cell reads and binds. The remote part,
``run_cell``, is the body of an ordinary Ray task: it runs the cell with the notebook's
values, sends what the cell prints or displays back through the kernel's output channel
as it comes (``channel``), and returns the names the cell bound, the value of its last
expression, or the error with the cell's own traceback.
"""

from __future__ import annotations

import ast
import builtins
import functools
import io
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

CELL_FILENAME = "<ray_remote cell>"


@dataclass
class CellNames:
    reads: set[str] = field(default_factory=set)
    writes: list[str] = field(default_factory=list)
    last_expression: bool = False


class _Binder(ast.NodeVisitor):
    """Names bound at the cell's top level (not inside functions or classes)."""

    def __init__(self):
        self.names: list[str] = []

    def _add(self, name):
        if name not in self.names:
            self.names.append(name)

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._add(node.id)

    def visit_FunctionDef(self, node):
        self._add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._add(node.name)

    def visit_Lambda(self, node):
        pass

    def visit_Import(self, node):
        for alias in node.names:
            self._add((alias.asname or alias.name).split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_comprehension(self, node):
        pass

    def visit_ListComp(self, node):
        pass

    visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp


@functools.lru_cache(maxsize=128)
def analyze(code: str) -> CellNames:
    """The names ``code`` may read from the notebook and the names it binds (the same
    object for the same code: do not change it)."""
    tree = ast.parse(code, CELL_FILENAME)
    binder = _Binder()
    for statement in tree.body:
        binder.visit(statement)
    reads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
             and isinstance(n.ctx, ast.Load)}
    reads -= set(dir(builtins))
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    return CellNames(reads=reads, writes=binder.names, last_expression=last)


class _Stream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a remote cell: line-buffered, like a terminal."""

    def __init__(self, name: str, emit):
        self.name = name
        self.emit = emit
        self._buffer: list[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._buffer.append(text)
            self._size += len(text)
            if "\n" not in text and "\r" not in text and self._size < 8192:
                return len(text)
        self.flush()
        return len(text)

    def flush(self):
        with self._lock:
            text, self._buffer, self._size = "".join(self._buffer), [], 0
        if text:
            self.emit(("stream", self.name, text))


def execute(code: str, inputs: dict, writes: list[str], last_expression: bool, emit) -> dict:
    """Run ``code`` with ``inputs``; its output goes to ``emit`` as it comes.

    Returns ``{"outputs": {name: Packed}, "last": Packed | None, "refused": [...]}`` or
    ``{"error": {...}}`` with the cell's own traceback. Values are packed here, so a value
    that cannot be pickled is named in ``refused`` instead of failing the whole result.
    """
    from . import display
    from .shipping import pack

    namespace = {"__name__": "__main__", "__builtins__": builtins, **inputs}
    tree = ast.parse(code, CELL_FILENAME)
    last = None
    if last_expression:
        last = ast.Expression(tree.body.pop().value)
    out, err = sys.stdout, sys.stderr
    stdout, stderr = _Stream("stdout", emit), _Stream("stderr", emit)
    try:
        sys.stdout, sys.stderr = stdout, stderr
        with display.capture(emit, code, namespace):
            exec(compile(tree, CELL_FILENAME, "exec"), namespace)  # noqa: S102
            value = eval(compile(last, CELL_FILENAME, "eval"), namespace) if last else None
    except KeyboardInterrupt:  # the run was cancelled: Ray reports it
        raise
    except BaseException as e:  # the cell's error, with the cell's frames only
        stdout.flush()
        stderr.flush()
        return {"error": _error(e, code)}
    finally:
        stdout.flush()
        stderr.flush()
        sys.stdout, sys.stderr = out, err
    result = {"outputs": {}, "last": None, "refused": []}
    for name in writes:
        if name not in namespace:
            continue
        try:
            result["outputs"][name] = pack(namespace[name])
        except Exception as e:
            result["refused"].append(f"{name} ({type(namespace[name]).__name__}: {e})")
    if value is not None:
        try:
            result["last"] = pack(value)
        except Exception:  # shown here instead: its representation comes back
            emit(("display", *display.bundle(value)))
    return result


def _error(e: BaseException, code: str) -> dict:
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if f.filename == CELL_FILENAME or "site-packages" in f.filename]
    lines = code.splitlines()
    text = "".join(
        f"  Cell line {f.lineno}, in {f.name}\n    {lines[f.lineno - 1].strip()}\n"
        if f.filename == CELL_FILENAME and 0 < (f.lineno or 0) <= len(lines)
        else f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
        for f in frames
    )
    import cloudpickle

    error_type = type(e)
    try:
        cloudpickle.dumps(error_type)
    except Exception:  # known by name only
        error_type = None
    return {"type": error_type, "name": error_type.__name__ if error_type else type(e).__name__,
            "value": str(e), "traceback": text}


def run_cell(spec: tuple, *ref_values) -> dict:
    """The body of a cell's task. ``spec``: (code, writes, last_expression, inline values,
    channel, names of ``ref_values``). Output goes live through the channel (a
    :class:`~.channel.ChannelAddress` or a :class:`~.channel.RelayAddress`); what could
    not go comes back in the result."""
    from ..cost import Node
    from .channel import RemoteOutput
    from .shipping import unpack_inputs

    code, writes, last_expression, inline, channel, ref_names = spec
    remote = RemoteOutput(channel)
    kept: list[tuple] = []

    def emit(event):
        if not remote.emit(event):
            kept.append(event)

    started = time.monotonic()
    try:
        inputs = unpack_inputs(inline, dict(zip(ref_names, ref_values, strict=True)))
        result = execute(code, inputs, writes, last_expression, emit)
    finally:
        streamed = remote.close()
    result["streamed"] = streamed
    result["output"] = kept
    # where it ran and for how long: the kernel prices it (redspot.cost)
    node = Node.from_env(os.environ)
    result["node"] = node.to_dict() if node else None
    result["seconds"] = time.monotonic() - started
    return result
