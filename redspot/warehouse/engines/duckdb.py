"""DuckDB: a database file, Parquet files on disk or in S3 (through s3fs, with the
connection's credential), or, as ``local``, the notebook's own data frames."""

from __future__ import annotations

import re

from .base import Engine, Result, first_rows

BATCH_ROWS = 1_000_000


class DuckDBEngine(Engine):
    paramstyle = "dollar"

    def __init__(self, connection, credential=None, namespace: dict | None = None):
        super().__init__(connection, credential)
        import duckdb

        database = connection.database or connection.address or ":memory:"
        read_only = bool(connection.options.get("read_only", database != ":memory:"))
        try:
            self.con = duckdb.connect(database, read_only=read_only)
        except duckdb.Error as e:
            raise self.error(e) from None
        self.namespace = namespace
        if credential is not None and credential.s3:
            self._s3(credential.s3)
        if connection.schema:
            quoted = connection.schema.replace("'", "''")
            self.con.execute(f"SET schema = '{quoted}'")

    def _s3(self, s3: dict) -> None:
        import s3fs

        client = {"endpoint_url": s3["endpoint_url"]} if s3.get("endpoint_url") else {}
        if s3.get("region"):
            client["region_name"] = s3["region"]
        fs = s3fs.S3FileSystem(key=s3["access_key_id"], secret=s3["secret_access_key"],
                               token=s3.get("session_token"), client_kwargs=client,
                               skip_instance_cache=True)
        self.con.register_filesystem(fs)

    def _register_frames(self, sql: str) -> None:
        """``local``: the notebook's data frames and Arrow tables the query names."""
        if self.namespace is None:
            return
        import pyarrow as pa

        for word in set(re.findall(r"[A-Za-z_]\w*", sql)):
            value = self.namespace.get(word)
            if isinstance(value, pa.Table) or type(value).__name__ in (
                    "DataFrame", "RecordBatchReader"):
                self.con.register(word, value)

    def query(self, sql, parameters, limit) -> Result:
        import duckdb

        self._register_frames(sql)
        text, params = self.prepare(sql, parameters)
        try:
            relation = self.con.sql(text, params=params)
            if relation is None:  # a statement without rows: done
                return first_rows(iter(()), limit)
            # streamed: reading stops one row past the limit (a LIMIT in the plan costs
            # more than it saves on results below it)
            reader = relation.to_arrow_reader(BATCH_ROWS)
            return first_rows(reader, limit, reader.schema)
        except duckdb.InterruptException as e:
            raise self.error(e, cancelled=True) from None
        except duckdb.Error as e:
            raise self.error(e) from None

    def cancel(self) -> None:
        self.con.interrupt()

    def schemas(self):
        return [r[0] for r in self._catalog_query(
            "select distinct schema_name from information_schema.schemata order by 1")]

    def tables(self, schema=None):
        return self._catalog_query(
            "select table_schema, table_name from information_schema.tables "
            "where :schema is null or table_schema = :schema order by 1, 2",
            {"schema": schema})

    def columns(self, table):
        schema, name = self._split(table)
        return self._catalog_query(
            "select column_name, data_type from information_schema.columns "
            "where table_name = :name and (:schema is null or table_schema = :schema) "
            "order by ordinal_position", {"name": name, "schema": schema})

    def close(self):
        self.con.close()


ENGINE = DuckDBEngine
