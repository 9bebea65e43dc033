"""Running a notebook cell on Ray: what goes in, what comes out, and the remote side.

Pure parts (no Ray): ``analyze`` finds the names a cell reads and binds. The remote part,
``run_cell``, is a Ray streaming-generator task: it runs the cell in a thread of the
worker, yields its output as it is printed, and finally yields the result (the names
the cell bound, the value of its last expression, or the error with the cell's own
traceback).
"""

from __future__ import annotations

import ast
import builtins
import io
import queue
import sys
import threading
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


def analyze(code: str) -> CellNames:
    """The names ``code`` may read from the notebook and the names it binds."""
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
    def __init__(self, name: str, sink: queue.Queue):
        self.name = name
        self.sink = sink

    def writable(self):
        return True

    def write(self, text):
        if text:
            self.sink.put(("stream", self.name, text))
        return len(text)


def execute(code: str, inputs: dict, writes: list[str], last_expression: bool, sink):
    """Run ``code`` with ``inputs``; print output goes to ``sink``. Returns the result."""
    namespace = {"__name__": "__main__", "__builtins__": builtins, **inputs}
    tree = ast.parse(code, CELL_FILENAME)
    last = None
    if last_expression:
        last = ast.Expression(tree.body.pop().value)
    out, err = sys.stdout, sys.stderr
    stdout, stderr = _Stream("stdout", sink), _Stream("stderr", sink)
    try:
        sys.stdout, sys.stderr = stdout, stderr
        exec(compile(tree, CELL_FILENAME, "exec"), namespace)  # noqa: S102
        value = eval(compile(last, CELL_FILENAME, "eval"), namespace) if last else None
    except BaseException as e:  # the cell's error, with the cell's frames only
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f.filename == CELL_FILENAME or "site-packages" in f.filename]
        lines = code.splitlines()
        text = "".join(
            f'  Cell line {f.lineno}, in {f.name}\n    {lines[f.lineno - 1].strip()}\n'
            if f.filename == CELL_FILENAME and 0 < (f.lineno or 0) <= len(lines)
            else f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
            for f in frames
        )
        return {"error": {"type": type(e), "name": type(e).__name__, "value": str(e),
                          "traceback": text}}
    finally:
        sys.stdout, sys.stderr = out, err
    return {"outputs": {n: namespace[n] for n in writes if n in namespace}, "last": value}


def run_cell_generator(code: str, inputs: dict, writes: list[str], last_expression: bool):
    """The body of the streaming task: yields ("stream", name, text) then ("result", r)."""
    sink: queue.Queue = queue.Queue()
    result: dict = {}

    def work():
        result.update(execute(code, inputs, writes, last_expression, sink))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive() or not sink.empty():
        try:
            yield sink.get(timeout=0.02)
        except queue.Empty:
            continue
    thread.join()
    yield ("result", result)
