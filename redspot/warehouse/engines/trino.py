"""Trino with its own client: parameters are bound by Trino (a prepared statement), an
interrupt cancels the query on the coordinator; rows arrive as Python values and are
turned into Arrow a batch at a time.

No Trino server can be had on the machines Redspot is tested on: the adapter's live
tests are marked and skipped there (tests/integration/test_warehouse_engines.py).
"""

from __future__ import annotations

import os

from .base import Engine, Result, dbapi_batches, first_rows


class TrinoEngine(Engine):
    paramstyle = "qmark"
    default_port = 8080

    def __init__(self, connection, credential=None):
        super().__init__(connection, credential)
        import trino

        host, port = connection.host_port(self.default_port)
        # who asks, as the hub knows them, unless the credential or connection says
        user = (credential.user if credential and credential.user else connection.user
                ) or os.environ.get("JUPYTERHUB_USER") or "redspot"
        auth = trino.constants.DEFAULT_AUTH
        scheme = connection.options.get("http_scheme", "http")
        if credential and credential.token:
            auth, scheme = trino.auth.JWTAuthentication(credential.token), "https"
        elif credential and credential.password:
            auth = trino.auth.BasicAuthentication(user, credential.password)
            scheme = "https"
        catalog, _, schema = (connection.database or "").partition(".")
        self.con = trino.dbapi.connect(
            host=host, port=port, user=user, catalog=catalog or None,
            schema=connection.schema or schema or None, http_scheme=scheme, auth=auth,
            request_timeout=connection.connect_timeout,
            verify=connection.options.get("verify", True))
        self.cursor = None

    def query(self, sql, parameters, limit) -> Result:
        text, params = self.prepare(sql, parameters)
        cursor = self.con.cursor()
        with self._lock:
            self.cursor = cursor
        try:
            cursor.execute(text, params)
            return first_rows(dbapi_batches(cursor, 50_000), limit)
        except Exception as e:  # noqa: BLE001
            cancelled = "cancel" in str(e).lower()
            raise self.error(e, cancelled=cancelled) from None
        finally:
            with self._lock:
                self.cursor = None

    def cancel(self) -> None:
        with self._lock:
            if self.cursor is not None:
                self.cursor.cancel()

    def schemas(self):
        return [r[0] for r in self._catalog_query("show schemas")]

    def tables(self, schema=None):
        where = "where table_schema = ?" if schema else ""
        sql = f"select table_schema, table_name from information_schema.tables {where}"
        return self._catalog_query(sql.replace("?", ":schema"), {"schema": schema})

    def columns(self, table):
        schema, name = self._split(table)
        sql = ("select column_name, data_type from information_schema.columns where "
               "table_name = :name" + (" and table_schema = :schema" if schema else "")
               + " order by ordinal_position")
        return self._catalog_query(sql, {"name": name, "schema": schema}
                                   if schema else {"name": name})

    def close(self):
        self.con.close()


ENGINE = TrinoEngine
