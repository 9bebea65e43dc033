"""``%%sql`` and ``%sql``: queries against the team's warehouse connections.

::

    %%sql warehouse -o trips --limit 1000
    select * from trips where city = :city and day >= :since

``:name`` parameters come from the notebook's variables (or ``--params name=value``) and
are bound by the driver, never pasted into the SQL; ``{...}`` and ``$name`` are not
expanded. The result is a pandas DataFrame on Arrow types (``--arrow``: the Arrow
table), shown with its row count and time, and whether the connection's row limit cut
it. Interrupting the kernel cancels the query on the server.

``%sql --connections`` lists the connections you may use, ``%sql --tables [PATTERN]``
and ``%sql --describe TABLE`` explore one; ``%%sql local`` queries the notebook's own
data frames by name (DuckDB).
"""

from __future__ import annotations

import fnmatch
import html
import re
import shlex

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from ..warehouse import params as sqlparams
from ..warehouse.connections import ConnectionError
from ..warehouse.engines.base import QueryError
from ..warehouse.session import default_warehouse, to_frame


class SQLError(Exception):
    """What went wrong, in one line: shown without a traceback."""

    def _render_traceback_(self):
        return [f"SQLError: {self}"]


@magics_class
class SQLMagics(Magics):
    @property
    def warehouse(self):
        return default_warehouse(self.shell.user_ns)

    @no_var_expand
    @magic_arguments()
    @argument("connection", nargs="?", help="a connection's name (default: the last used)")
    @argument("-o", "--out", metavar="NAME", help="also keep the result in variable NAME")
    @argument("--limit", type=int, help="at most this many rows (default and most: the "
                                        "connection's max_rows)")
    @argument("--params", nargs="+", metavar="NAME=VALUE", default=[],
              help="values for :name parameters (otherwise the notebook's variables)")
    @argument("--arrow", action="store_true", help="the Arrow table, not a DataFrame")
    @argument("--connections", action="store_true", help="list the connections you may use")
    @argument("--tables", nargs="?", const="*", metavar="PATTERN",
              help="list the tables (matching PATTERN, e.g. 'sales*')")
    @argument("--describe", metavar="TABLE", help="the columns of TABLE")
    @argument("--quiet", action="store_true", help="no summary line")
    @line_cell_magic
    def sql(self, line="", cell=None):
        """Run SQL on a warehouse connection (see ``%sql --connections``).

        Examples::

            %sql --connections
            %sql demo select count(*) from listings
            %%sql demo -o cheap
            select * from listings where price < :budget
        """
        try:
            return self._sql(line, cell)
        except (ConnectionError, QueryError, sqlparams.ParameterError) as e:
            raise SQLError(str(e)) from None
        except Exception as e:
            from ..warehouse.client import ServiceError

            if isinstance(e, ServiceError):
                raise SQLError(str(e)) from None
            raise

    def _sql(self, line, cell):
        warehouse = self.warehouse
        if cell is None:
            # `%sql NAME select ...`: the options end where the SQL starts; the SQL is the
            # rest of the line as written (its quotes are SQL's)
            spans = [(m.group(), m.start()) for m in re.finditer(r"\S+", line)]
            head, body = _split_line([w for w, _ in spans], warehouse.connections())
            sql_line = line[spans[len(head)][1]:] if body else ""
            line = line[:spans[len(head)][1]] if body else line
        # options as a shell would split them ('sales*', "a b"): quotes are not kept
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise SQLError(f"the magic's options: {e}") from None
        args = self.sql.parser.parse_args(words)
        if args.connections:
            return self._list(warehouse)
        if args.tables is not None:
            return self._tables(warehouse, args.connection, args.tables)
        if args.describe:
            return self._describe(warehouse, args.connection, args.describe)
        text = cell if cell is not None else sql_line
        if not text.strip():
            raise SQLError("no SQL: write it after %%sql's line, or after %sql NAME")
        explicit = dict(_pair(p) for p in args.params)
        order = sqlparams.names(text)
        values = sqlparams.values(order, self.shell.user_ns, explicit)
        result = warehouse.run(args.connection, text, values, args.limit)
        value = result.table if args.arrow else to_frame(result.table)
        if args.out:
            self.shell.user_ns[args.out] = value
        if not args.quiet:
            display(_summary(result, warehouse.default, args.out), raw=True)
        return value

    def _list(self, warehouse):
        catalog = warehouse.connections(refresh=True)
        header = ("connection", "engine", "what it is", "from", "max rows")
        rows = [(c.name, c.engine, c.description, c.source, f"{c.max_rows:,}")
                for c in catalog.values()]
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                        for row in rows)
        note = warehouse.note
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        text = "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                         .rstrip() for row in [header, *rows])
        display({"text/plain": text + (f"\n({note})" if note else ""),
                 "text/html": "<table><tr>" + "".join(f"<th>{h}</th>" for h in header)
                 + f"</tr>{cells}</table>"
                 + (f"<p>{html.escape(note)}</p>" if note else "")}, raw=True)
        return None

    def _tables(self, warehouse, name, pattern):
        engine = warehouse.engine(name)
        found = [(s, t) for s, t in engine.tables()
                 if fnmatch.fnmatch(t, pattern) or fnmatch.fnmatch(f"{s}.{t}", pattern)]
        import pandas as pd

        return pd.DataFrame(found, columns=["schema", "table"])

    def _describe(self, warehouse, name, table):
        import pandas as pd

        columns = warehouse.engine(name).columns(table)
        if not columns:
            raise SQLError(f"no table {table!r} on {warehouse.connection(name).name} "
                           "(or no columns you may see); %sql --tables lists them")
        return pd.DataFrame(columns, columns=["column", "type"])


#: words a line of SQL starts with: in ``%sql WORD ...`` any other first word names a
#: connection (an unknown one is an error that lists the known ones)
SQL_STARTS = frozenset("""select with values table show describe desc explain insert update
delete merge create drop alter truncate grant revoke set use call copy pragma attach
analyze summarize from""".split())
#: options that take a value (the next word)
_VALUED = frozenset({"-o", "--out", "--limit", "--describe", "--tables"})


def _split_line(words: list[str], catalog: dict | None) -> tuple[list[str], list[str]]:
    """For the line form: options and the connection first, in any order; the SQL from
    the first other word on."""
    if catalog is None:
        return words, []
    head: list[str] = []
    named = False
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            head.append(word)
            if word in _VALUED and i + 1 < len(words) and not words[i + 1].startswith("-"):
                if word != "--tables" or words[i + 1] not in catalog:
                    head.append(words[i + 1])
                    i += 1
            elif word == "--params":
                while i + 1 < len(words) and "=" in words[i + 1]:
                    head.append(words[i + 1])
                    i += 1
            i += 1
            continue
        if not named and (word in catalog or word.lower() not in SQL_STARTS):
            head.append(word)
            named = True
            i += 1
            continue
        break
    return head, words[i:]


def _pair(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise sqlparams.ParameterError(f"--params takes NAME=VALUE, got {text!r}")
    import ast

    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _summary(result, connection: str | None, out: str | None) -> dict:
    """The line above a result: rows, time, connection, and whether it was cut."""
    rows = result.table.num_rows
    took = (f"{result.seconds * 1000:.0f} ms" if result.seconds < 1
            else f"{result.seconds:.2f} s")
    parts = [f"{rows:,} row{'s' if rows != 1 else ''}", took,
             f"on {connection or ''}"]
    if out:
        parts.append(f"in {out}")
    text = " · ".join(parts)
    if result.truncated:
        text += (f" · truncated: the query has more than {result.limit:,} rows; only the "
                 "first are here (--limit, up to the connection's max_rows)")
    marked = html.escape(text).replace("truncated:", "<b>truncated</b>:")
    return {"text/plain": text,
            "text/html": f'<div class="redspot-sql-summary">{marked}</div>'}
