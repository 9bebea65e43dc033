"""PostgreSQL through ADBC's libpq driver: results arrive as Arrow (PostgreSQL's binary
COPY), parameters are bound by the server, an interrupt cancels on the server."""

from __future__ import annotations

import collections
import re
import threading
from urllib.parse import quote, urlencode

from .base import Engine, Result, first_rows

#: Statements a cursor can read (``WITH`` may change data, which a cursor cannot: such a
#: query runs as written)
_READS = re.compile(r"^\s*(select|values|table)\b", re.IGNORECASE)
#: Rows a cursor fetches at a time
FETCH_ROWS = 100_000


def _strip_comments(sql: str) -> str:
    return re.sub(r"^\s*(--[^\n]*\n|/\*.*?\*/)+", "", sql, flags=re.S)


#: ADBC's database objects by URI, in this process's memory: making one reads the
#: server's type catalog (about 40 ms); a connection made from one takes about 5 ms. They
#: hold no server session. A few are kept (a rotated password is a new URI).
_DATABASES: collections.OrderedDict = collections.OrderedDict()
_DATABASES_KEPT = 8
_DATABASES_LOCK = threading.Lock()


def _connect(uri: str, pg):
    """An autocommit DB-API connection to ``uri``, from a kept ADBC database when the
    driver manager can share one (its refcounted ``_SharedDatabase``), else a new one."""
    import adbc_driver_manager
    import adbc_driver_manager.dbapi as dbapi
    import adbc_driver_postgresql

    shared_class = getattr(dbapi, "_SharedDatabase", None)
    if shared_class is None:
        return pg.connect(uri, autocommit=True)
    with _DATABASES_LOCK:
        kept = _DATABASES.get(uri)
        if kept is None:
            raw = adbc_driver_postgresql.connect(uri)
            kept = _DATABASES[uri] = (raw, shared_class(raw))
            while len(_DATABASES) > _DATABASES_KEPT:
                _DATABASES.popitem(last=False)[1][1].close()
        _DATABASES.move_to_end(uri)
    raw, shared = kept
    try:
        return dbapi.Connection(shared, adbc_driver_manager.AdbcConnection(raw),
                                autocommit=True)
    except Exception:
        with _DATABASES_LOCK:  # a database that no longer works is not kept
            if _DATABASES.get(uri) is kept:
                del _DATABASES[uri]
                shared.close()
        raise


class PostgreSQLEngine(Engine):
    paramstyle = "numeric"
    default_port = 5432

    def __init__(self, connection, credential=None):
        super().__init__(connection, credential)
        import adbc_driver_postgresql.dbapi as pg

        host, port = connection.host_port(self.default_port)
        user = (credential.user if credential and credential.user else connection.user)
        password = credential.password or credential.token if credential else ""
        auth = quote(user, safe="") if user else ""
        if password:
            auth += ":" + quote(password, safe="")
        query = {"connect_timeout": max(1, int(connection.connect_timeout)),
                 "application_name": "redspot-sql"}
        for key in ("sslmode", "sslrootcert", "options"):
            if key in connection.options:
                query[key] = connection.options[key]
        uri = (f"postgresql://{auth + '@' if auth else ''}{host}:{port}/"
               f"{quote(connection.database or '', safe='')}?{urlencode(query)}")
        try:
            self.con = _connect(uri, pg)
        except Exception as e:  # noqa: BLE001 - the driver's errors, masked
            raise self.error(e) from None
        self.cursor = None
        if connection.schema:
            self.query("select set_config('search_path', :s, false)",
                       {"s": connection.schema}, None)

    def query(self, sql, parameters, limit) -> Result:
        text, params = self.prepare(sql, parameters)
        with self._lock:
            self.cursor = self.con.cursor()
        cursor = self.cursor
        in_transaction = False
        try:
            if params and _READS.match(_strip_comments(sql)):
                # bound parameters cannot stream through COPY, and libpq would hold the
                # whole result: a cursor, fetched a batch at a time, up to the limit
                cursor.execute("begin")
                in_transaction = True
                cursor.execute(f"declare redspot_rows no scroll cursor for {text}", params)
                result = first_rows(*self._fetched(cursor, limit))
                cursor.execute("commit")
                in_transaction = False
            else:
                cursor.execute(text, params)
                if cursor.description is None:
                    return first_rows(iter(()), limit)
                reader = cursor.fetch_record_batch()
                result = first_rows(reader, limit, reader.schema)
            result.table = numeric_columns(result.table)
            return result
        except Exception as e:  # noqa: BLE001
            cancelled = "canceling statement" in str(e).lower()
            raise self.error(e, cancelled=cancelled) from None
        finally:
            with self._lock:
                self.cursor = None
            if in_transaction:
                try:
                    cursor.execute("rollback")
                except Exception:  # noqa: BLE001, S110 - the connection is gone anyway
                    pass
            cursor.close()

    @staticmethod
    def _fetched(cursor, limit):
        """The cursor's rows as batches (FETCH cannot go through COPY), with the schema
        (known from the first fetch, even when it has no rows), and the limit."""
        cursor.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
        size = min(FETCH_ROWS, limit + 1) if limit is not None else FETCH_ROWS

        def fetch():
            cursor.execute(f"fetch forward {size} from redspot_rows")
            return cursor.fetch_arrow_table()

        first = fetch()

        def batches():
            table = first
            while table.num_rows:
                yield from table.to_batches()
                if table.num_rows < size:
                    return
                table = fetch()

        return batches(), limit, first.schema

    def error(self, e, cancelled=False):
        # ADBC's status and step before PostgreSQL's own message, its echo of the query after
        text = re.sub(r"^[A-Z_]+: (\[libpq\] )?(Failed to \w+ query[^:]*: |Execution error "
                      r"\[\w+\]: )?", "", str(e).strip())
        text = re.sub(r"\n+Query was: .*?\. SQLSTATE: (\w+)$", r"\n(SQLSTATE \1)", text,
                      flags=re.S)
        return super().error(RuntimeError(text), cancelled)

    def cancel(self) -> None:
        with self._lock:
            if self.cursor is not None:
                self.cursor.adbc_cancel()

    def schemas(self):
        return [r[0] for r in self._catalog_query(
            "select schema_name from information_schema.schemata "
            "where schema_name not in ('pg_catalog', 'information_schema') "
            "and schema_name not like 'pg_toast%' order by 1")]

    def tables(self, schema=None):
        return self._catalog_query(
            "select table_schema::text, table_name::text from information_schema.tables "
            "where (:schema::text is null and table_schema not in ('pg_catalog', "
            "'information_schema')) or table_schema = :schema::text order by 1, 2",
            {"schema": schema})

    def columns(self, table):
        schema, name = self._split(table)
        return self._catalog_query(
            "select column_name::text, data_type::text from information_schema.columns "
            "where table_name = :name and (:schema::text is null or table_schema = "
            ":schema::text) order by ordinal_position", {"name": name, "schema": schema})

    def close(self):
        self.con.close()


def numeric_columns(table):
    """PostgreSQL's ``numeric`` arrives as text in an opaque Arrow type: ``numeric(p, s)``
    becomes a decimal of that precision and scale, an unconstrained ``numeric`` float64
    (what a data frame can compute with; docs/warehouse.md says so)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, f in enumerate(table.schema):
        if (f.metadata or {}).get(b"POSTGRESQL:type") != b"numeric":
            continue
        typmod = int((f.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        target = (pa.decimal128(precision, scale) if typmod >= 4 and precision <= 38
                  else pa.float64())
        column = table.column(i)
        storage = pa.chunked_array(
            [c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks],
            type=pa.string())
        table = table.set_column(i, pa.field(f.name, target, metadata=f.metadata),
                                 pc.cast(storage, target))
    return table


ENGINE = PostgreSQLEngine
