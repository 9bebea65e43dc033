"""PostgreSQL through ADBC's libpq driver: results arrive as Arrow (PostgreSQL's binary
COPY), parameters are bound by the server, an interrupt cancels on the server."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from .base import Engine, Result, first_rows


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
            self.con = pg.connect(uri, autocommit=True)
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
        try:
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
            cursor.close()

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
