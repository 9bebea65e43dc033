"""One adapter per engine, all with the small interface of ``base.Engine``."""

from __future__ import annotations

import importlib

from ..connections import ENGINES

_MODULES = {"duckdb": "duckdb", "postgresql": "postgresql", "spark-connect": "spark",
            "hive": "hive", "trino": "trino"}
assert set(_MODULES) == set(ENGINES)


def engine_class(engine: str):
    """The adapter class for ``engine`` (imported only when used)."""
    module = importlib.import_module(f"{__name__}.{_MODULES[engine]}")
    return module.ENGINE
