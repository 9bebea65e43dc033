"""The ``demo`` connection ``redspot up`` ships: DuckDB on a small data set made here
(5,000 rental listings in six cities, the same every time), readable by every user, so
that a newcomer's first ``%%sql`` works with no setup."""

from __future__ import annotations

import os
from pathlib import Path

CITIES = ("Amsterdam", "Lisbon", "Paris", "San Francisco", "Tokyo", "Cape Town")
ROOM_TYPES = ("Entire home", "Private room", "Shared room")
ROWS = 5000


def connection_spec(path: Path) -> dict:
    return {"engine": "duckdb", "database": str(path), "groups": ["*"],
            "description": "Demo data: 5,000 rental listings (table listings)",
            "options": {"read_only": True}, "credentials": {"kind": "none"}}


def ensure(path: Path) -> Path:
    """Make the demo database if it is missing (0644 in a 0755 folder)."""
    if path.exists():
        return path
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial))
    try:
        # a fixed seed and plain arithmetic: the same rows on every machine
        con.execute(f"""
            create table listings as
            with base as (
                select i as id,
                       ((i * 7919) % 6)::int as c,
                       ((i * 104729) % 100) as r,
                       ((i * 1299709) % 1000) / 1000.0 as u
                from range({ROWS}) t(i))
            select id,
                   list_extract({list(CITIES)}, c + 1) as city,
                   list_extract({list(ROOM_TYPES)}, case when r < 60 then 1
                                when r < 95 then 2 else 3 end) as room_type,
                   1 + (r % 4) as bedrooms,
                   round(40 + 260 * u + 35 * (r % 4) + 20 * c, 2) as price,
                   (r * 3 + c * 11) % 400 as reviews,
                   round(3.5 + 1.5 * ((r * 13 + c) % 100) / 100.0, 2) as rating
            from base""")
        con.execute("comment on table listings is 'Redspot demo data (synthetic)'")
    finally:
        con.close()
    os.chmod(partial, 0o644)
    os.replace(partial, path)
    return path
