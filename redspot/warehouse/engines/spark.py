"""Spark Connect: queries run on the Spark cluster, results come back as Arrow batches as
the server streams them, parameters are bound by Spark (``spark.sql(text, args=...)``),
an interrupt stops the query's Spark jobs (``interruptTag``).

Spark Connect has no per-user identity: the server takes one shared token
(``spark.connect.authenticate.token``) and runs every query as its own user.
"""

from __future__ import annotations

import logging
import re
import uuid
import warnings

from .base import Engine, Result, first_rows


class SparkConnectEngine(Engine):
    paramstyle = "colon"
    default_port = 15002

    def __init__(self, connection, credential=None):
        super().__init__(connection, credential)
        with warnings.catch_warnings():
            # results come back through Arrow, not pyspark's pandas conversions
            warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas",
                                    FutureWarning)
            from pyspark.sql.connect.session import SparkSession

        # the client logs each failed call as JSON before raising it: the error says it
        logging.getLogger("pyspark").setLevel(logging.CRITICAL)

        host, port = connection.host_port(self.default_port)
        if host in ("127.0.0.1", "::1") and not connection.options.get("use_ssl"):
            # the client sends a token only over TLS, or to "localhost" (gRPC's local
            # credentials): on this machine, the name
            host = "localhost"
        url = f"sc://{host}:{port}/"
        params = {"user_agent": "redspot"}
        if credential and (credential.token or credential.password):
            params["token"] = credential.token or credential.password
        if credential and credential.user:
            params["user_id"] = credential.user
        if connection.options.get("use_ssl"):
            params["use_ssl"] = "true"
        url += "".join(f";{k}={v}" for k, v in params.items())
        try:
            self.spark = SparkSession.builder.remote(url).create()
            if connection.database:
                self.spark.catalog.setCurrentDatabase(connection.database)
        except Exception as e:  # noqa: BLE001
            raise self.error(e) from None
        self.tag = None

    def query(self, sql, parameters, limit) -> Result:
        text, params = self.prepare(sql, parameters)
        tag = f"redspot-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.tag = tag
        self.spark.addTag(tag)
        batches = None
        try:
            frame = self.spark.sql(text, args=params)
            batches = self._batches(frame)
            if batches is None:  # a client without the streaming call: Spark limits
                table = (frame.limit(limit + 1) if limit is not None else frame).toArrow()
                return first_rows(iter(table.to_batches()), limit, table.schema)
            result = first_rows(batches, limit)
            if result.truncated:
                self.spark.interruptTag(tag)  # the rows past the limit are not wanted
            return result
        except Exception as e:  # noqa: BLE001
            cancelled = "interrupt" in str(e).lower() or "cancel" in str(e).lower()
            raise self.error(e, cancelled=cancelled) from None
        finally:
            if batches is not None:
                batches.close()
            self.spark.removeTag(tag)
            with self._lock:
                self.tag = None

    def _batches(self, frame):
        """The result's Arrow batches as the server streams them (no whole-table copy, no
        LIMIT in the plan: reading stops one row past the limit), or None when this
        client lacks the call (pyspark's Spark Connect client, 4.x)."""
        client = getattr(self.spark, "client", None)
        plan = getattr(frame, "_plan", None)
        if plan is None or not hasattr(client, "to_table_as_iterator"):
            return None
        import pyarrow as pa

        def stream():
            for item in client.to_table_as_iterator(plan.to_proto(client), plan.observations):
                if isinstance(item, pa.Table):
                    yield from item.to_batches()

        return stream()

    def error(self, e, cancelled=False):
        text = str(e).split("\n\nJVM stacktrace:", 1)[0].strip()
        details = re.search(r'details = "(.*?)"\n', text, re.S)
        if details:  # a gRPC status: its details say it
            text = details[1]
        return super().error(RuntimeError(text), cancelled)

    def cancel(self) -> None:
        with self._lock:
            tag = self.tag
        if tag:
            self.spark.interruptTag(tag)

    def schemas(self):
        return [r[0] for r in self._catalog_query("show databases")]

    def tables(self, schema=None):
        sql = f"show tables in `{schema.replace('`', '')}`" if schema else "show tables"
        return [(r[0], r[1]) for r in self._catalog_query(sql)]

    def columns(self, table):
        rows = self._catalog_query(f"describe table {_quoted(table)}")
        return [(r[0], r[1]) for r in rows if r[0] and not r[0].startswith("#")]

    def close(self):
        self.spark.stop()


def _quoted(table: str) -> str:
    return ".".join(f"`{part.replace('`', '')}`" for part in table.split("."))


ENGINE = SparkConnectEngine
