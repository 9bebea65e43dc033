"""What every engine adapter does: run a query with bound parameters and a row limit
and return Arrow, cancel it from another thread, and list schemas, tables and columns.

pyarrow is imported where it is used: the magics load in every kernel, also in servers
without the warehouse's packages.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from ..connections import Connection
from ..params import bind


@dataclass
class Credential:
    """What a connection signs in with; held in memory only, never printed."""

    user: str = ""
    password: str = ""
    token: str = ""
    #: S3 (the s3-sts kind): access key, secret, session token, region, endpoint
    s3: dict | None = None
    #: seconds since the epoch when it stops working (0: never)
    expires: float = 0.0
    #: when it was received
    issued: float = field(default_factory=time.time)

    def fresh(self, margin: float) -> bool:
        """Whether it has life left: more than ``margin`` seconds, or a quarter of its
        lifetime when that is shorter."""
        if not self.expires:
            return True
        left = self.expires - time.time()
        return left > min(margin, (self.expires - self.issued) / 4)

    def secrets(self) -> list[str]:
        found = [self.password, self.token, *(self.s3 or {}).values()]
        return [s for s in found if isinstance(s, str) and len(s) >= 4]

    def __repr__(self) -> str:
        return f"Credential(user={self.user!r}, expires={self.expires}, secrets hidden)"


@dataclass
class Result:
    table: pa.Table  # noqa: F821 - pyarrow, imported where used
    #: the query had more rows than the limit: ``table`` holds the first ``limit``
    truncated: bool
    limit: int | None
    #: how long the query took, waiting included (set by the kernel's warehouse)
    seconds: float = 0.0


class QueryError(RuntimeError):
    """The engine refused or failed the query; the message is the engine's own, with any
    credential masked."""


class QueryCancelled(QueryError):
    """The query was cancelled on the server (an interrupt, or its timeout)."""


def mask(text: str, credential: Credential | None) -> str:
    """``text`` with the credential's secrets replaced by ``***``."""
    for secret in (credential.secrets() if credential else []):
        text = text.replace(secret, "***")
    # connection strings with a password in them
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def first_rows(batches, limit: int | None, schema=None) -> Result:
    """At most ``limit`` rows of a stream of record batches, and whether there were more:
    batches are taken whole (no row-by-row copy) and the stream is not read further."""
    import pyarrow as pa

    taken, rows = [], 0
    truncated = False
    for batch in batches:
        if schema is None:
            schema = batch.schema
        if limit is not None and rows + batch.num_rows > limit:
            taken.append(batch.slice(0, limit - rows))
            truncated = True
            break
        taken.append(batch)
        rows += batch.num_rows
        if limit is not None and rows == limit:
            # one more row tells whether the result was cut
            for more in batches:
                if more.num_rows:
                    truncated = True
                    break
            break
    if schema is None:
        schema = pa.schema([])
    return Result(pa.Table.from_batches(taken, schema=schema), truncated, limit)


class Engine:
    """An engine adapter; one per kernel and connection. ``query`` runs in the kernel's
    thread, ``cancel`` may be called from any other."""

    #: how ``:name`` parameters are written for the driver (``params.STYLES``)
    paramstyle = "pyformat"
    default_port = 0

    def __init__(self, connection: Connection, credential: Credential | None = None):
        self.connection = connection
        self.credential = credential
        self._lock = threading.Lock()

    def prepare(self, sql: str, parameters: dict) -> tuple[str, object]:
        """The driver's text and parameters for ``sql`` with ``:name`` parameters."""
        text, order = bind(sql, self.paramstyle)
        if not order:
            return sql, None
        if self.paramstyle in ("qmark", "numeric"):
            return text, [parameters[n] for n in order]
        return text, {n: parameters[n] for n in order}

    def query(self, sql: str, parameters: dict, limit: int | None) -> Result:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def schemas(self) -> list[str]:
        raise NotImplementedError

    def tables(self, schema: str | None = None) -> list[tuple[str, str]]:
        raise NotImplementedError

    def columns(self, table: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- shared helpers ------------------------------------------------------------------

    def error(self, e: BaseException, cancelled: bool = False) -> QueryError:
        text = mask(str(e).strip() or type(e).__name__, self.credential)
        return (QueryCancelled if cancelled else QueryError)(text)

    def _catalog_query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        result = self.query(sql, parameters or {}, None)
        return [tuple(row.values()) for row in result.table.to_pylist()]

    def _split(self, table: str) -> tuple[str | None, str]:
        schema, _, name = table.rpartition(".")
        return (schema or None), name


def dbapi_batches(cursor, size: int = 50_000):
    """A DB-API cursor's rows as Arrow record batches, column by column (for drivers that
    only give Python rows: PyHive, Trino)."""
    import pyarrow as pa

    names = [d[0].rsplit(".", 1)[-1] for d in cursor.description or ()]
    while True:
        rows = cursor.fetchmany(size)
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        yield pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names)
