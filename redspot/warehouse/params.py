"""``:name`` parameters in SQL text, turned into each driver's own placeholders.

The text is scanned once; ``:name`` inside a string literal, a quoted identifier, a
comment or a dollar-quoted body is left alone, and so is PostgreSQL's ``::`` cast. The
values are never pasted into the text: each driver binds them (server-side where the
engine can)::

    >>> bind("select :a, ':b', c::int from t where d like '%x' and e = :a", "dollar")
    ("select $a, ':b', c::int from t where d like '%x' and e = $a", ['a'])

Styles: ``pyformat`` (psycopg, PyHive: ``%(name)s``, and a literal ``%`` doubled),
``dollar`` (DuckDB, ``$name``), ``numeric`` (ADBC PostgreSQL: ``$1``, ``$2``...),
``qmark`` (Trino: ``?``, in order) and ``colon`` (Spark: ``:name``, unchanged).
"""

from __future__ import annotations

import re

STYLES = ("pyformat", "dollar", "numeric", "qmark", "colon")

_TOKEN = re.compile(r"""
      (?P<squote>'(?:[^']|'')*'?)
    | (?P<dquote>"(?:[^"]|"")*"?)
    | (?P<btick>`[^`]*`?)
    | (?P<line>--[^\n]*)
    | (?P<block>/\*.*?(?:\*/|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<cast>::)
    | (?P<param>(?<![\w:]):(?P<name>[A-Za-z_]\w*))
""", re.VERBOSE | re.DOTALL)


class ParameterError(ValueError):
    """A ``:name`` in the SQL has no value, or a value cannot be bound."""


def names(sql: str) -> list[str]:
    """The ``:name`` parameters of ``sql``, each once, in order of first use."""
    found: list[str] = []
    for m in _TOKEN.finditer(sql):
        if m["param"] and m["name"] not in found:
            found.append(m["name"])
    return found


def bind(sql: str, style: str) -> tuple[str, list[str]]:
    """``sql`` with its ``:name`` parameters in ``style``; and the names in the order the
    driver takes them (for ``qmark`` and ``numeric``, one entry per placeholder)."""
    if style not in STYLES:
        raise ValueError(f"unknown parameter style {style!r}; known: {', '.join(STYLES)}")
    out: list[str] = []
    order: list[str] = []
    last = 0

    def text(chunk: str) -> str:
        # pyformat drivers %-format the whole text, literals and comments included
        return chunk.replace("%", "%%") if style == "pyformat" else chunk

    for m in _TOKEN.finditer(sql):
        if not m["param"]:
            continue
        name = m["name"]
        out.append(text(sql[last:m.start()]))
        last = m.end()
        if style == "qmark":
            order.append(name)
        elif name not in order:
            order.append(name)
        out.append({"pyformat": f"%({name})s", "dollar": f"${name}",
                    "numeric": f"${order.index(name) + 1}", "qmark": "?",
                    "colon": f":{name}"}[style])
    out.append(text(sql[last:]))
    return "".join(out), order


def values(order: list[str], namespace: dict, explicit: dict | None = None) -> dict:
    """The values of the parameters, by name: from ``explicit`` first (``--params``),
    then ``namespace`` (the notebook's variables). A missing one is named."""
    explicit = explicit or {}
    missing = [n for n in dict.fromkeys(order) if n not in explicit and n not in namespace]
    if missing:
        raise ParameterError(
            f"no value for the parameter{'s' if len(missing) > 1 else ''} "
            f"{', '.join(':' + n for n in missing)}: define "
            f"{'them' if len(missing) > 1 else 'it'} in the notebook, or pass --params "
            f"{missing[0]}=VALUE")
    return {n: explicit[n] if n in explicit else namespace[n] for n in dict.fromkeys(order)}
