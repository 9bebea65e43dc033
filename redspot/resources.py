"""Files Redspot ships beside its code: the docs and the example notebooks.

In a wheel they are inside the package (``redspot/_docs``, ``redspot/_examples``, put
there by the build: ``pyproject.toml``); in a checkout (``make up``, an editable
install) they are the repository's ``docs/`` and ``examples/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(inside: str, in_checkout: str) -> Path | None:
    for folder in (_PACKAGE / inside, _PACKAGE.parent / in_checkout):
        if folder.is_dir():
            return folder
    return None


def docs_dir() -> Path | None:
    return _shipped("_docs", "docs")


def examples_dir() -> Path | None:
    return _shipped("_examples", "examples")
