"""Hive tables through Spark's Thrift server (HiveServer2) with PyHive.

The Thrift server believes the user name it is given (no password with the default
``NONE`` authentication): Redspot sends the hub user's name so that the server's logs
say who asked, but that is not an identity; docs/warehouse.md says so. PyHive escapes
``%(name)s`` parameters on the client (HiveServer2 has no bound parameters). Rows
arrive as Python tuples and are turned into Arrow a batch at a time.
"""

from __future__ import annotations

import os

from .base import Engine, Result, dbapi_batches, first_rows
from .spark import _quoted


class HiveEngine(Engine):
    paramstyle = "pyformat"
    default_port = 10000

    def __init__(self, connection, credential=None):
        super().__init__(connection, credential)
        from pyhive import hive

        host, port = connection.host_port(self.default_port)
        # who asks, as the hub knows them, unless the credential or connection says
        user = (credential.user if credential and credential.user else connection.user
                ) or os.environ.get("JUPYTERHUB_USER") or "redspot"
        password = credential.password if credential else ""
        auth = connection.options.get("auth", "CUSTOM" if password else "NONE")
        try:
            self.con = hive.connect(host=host, port=port, username=user,
                                    password=password or None, auth=auth,
                                    database=connection.database or "default")
        except Exception as e:  # noqa: BLE001
            raise self.error(e) from None
        self.cursor = None

    def query(self, sql, parameters, limit) -> Result:
        text, params = self.prepare(sql, parameters)
        cursor = self.con.cursor()
        with self._lock:
            self.cursor = cursor
        try:
            cursor.execute(text, params)
            if cursor.description is None:
                return first_rows(iter(()), limit)
            return first_rows(dbapi_batches(cursor, min(limit + 1, 50_000) if limit
                                            else 50_000), limit)
        except Exception as e:  # noqa: BLE001
            cancelled = "cancel" in str(e).lower()
            raise self.error(e, cancelled=cancelled) from None
        finally:
            with self._lock:
                self.cursor = None
            cursor.close()

    def cancel(self) -> None:
        with self._lock:
            if self.cursor is not None:
                self.cursor.cancel()

    def schemas(self):
        return [r[0] for r in self._catalog_query("show databases")]

    def tables(self, schema=None):
        sql = f"show tables in `{schema.replace('`', '')}`" if schema else "show tables"
        return [(r[0], r[1]) for r in self._catalog_query(sql)]

    def columns(self, table):
        rows = self._catalog_query(f"describe {_quoted(table)}")
        return [(r[0], r[1]) for r in rows if r[0] and not r[0].startswith("#")]

    def close(self):
        self.con.close()


ENGINE = HiveEngine
