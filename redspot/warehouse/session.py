"""A kernel's warehouse: its connections (the hub's, the user's own, and ``local``), one
engine per connection opened at first use, queries run with the connection's row limit
and timeout, and an interrupt that cancels the query on the server.

Queries run in a thread of the warehouse's own while the kernel's thread waits: a driver
blocked in C does not see ``KeyboardInterrupt``, so the waiting thread catches it,
cancels the query on the server, and raises it once the query is gone.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field

from .client import Credentials, ServiceError, WarehouseService
from .connections import LOCAL, Connection, ConnectionError, load_personal
from .engines import engine_class
from .engines.base import Credential, QueryCancelled, QueryError, Result

#: how long an interrupted or timed-out query may take to go after it was cancelled
CANCEL_GRACE = 30.0


@dataclass
class Query:
    """One query the kernel ran: kept for the lineage of models registered later."""

    connection: str
    engine: str
    sql: str
    sha256: str
    rows: int
    seconds: float
    truncated: bool
    at: float = field(default_factory=time.time)


class Warehouse:
    def __init__(self, service: WarehouseService | None = None, namespace: dict | None = None,
                 ask=None):
        self.service = service
        self.namespace = namespace if namespace is not None else {}
        self.credentials = Credentials(service, ask=ask)
        self._engines: dict[str, object] = {}
        self._catalog: dict[str, Connection] | None = None
        self._catalog_note = ""
        self.history: list[Query] = []
        self.default: str | None = None
        self._runner: _Runner | None = None

    @classmethod
    def from_environment(cls, namespace: dict | None = None) -> Warehouse:
        return cls(WarehouseService.from_environment(), namespace)

    # --- connections ---------------------------------------------------------------------

    def connections(self, refresh: bool = False) -> dict[str, Connection]:
        """Every connection this user may use: the hub's, then their own, then ``local``."""
        if self._catalog is None or refresh:
            found: dict[str, Connection] = {}
            self._catalog_note = ""
            if self.service is not None:
                try:
                    found.update(self.service.connections())
                except ServiceError as e:
                    self._catalog_note = f"the hub's connections are missing: {e}"
            else:
                self._catalog_note = ("no warehouse service (this server was not started by "
                                      "a Redspot hub with services.warehouse enabled)")
            for name, connection in load_personal().items():
                if name in found:
                    # the operator's wins; the user's is shadowed, and told so
                    self._catalog_note = (f"your connection {name!r} has the name of a hub "
                                          "connection: the hub's is used")
                    continue
                found[name] = connection
            found[LOCAL] = Connection(
                name=LOCAL, engine="duckdb", source="builtin", groups=("*",),
                description="the notebook's own data frames and Arrow tables, by name")
            self._catalog = found
        return self._catalog

    @property
    def note(self) -> str:
        return self._catalog_note

    def connection(self, name: str | None) -> Connection:
        catalog = self.connections()
        if name is None:
            name = self.default or next((n for n in catalog if n != LOCAL), LOCAL)
        if name not in catalog:
            catalog = self.connections(refresh=True)
        if name not in catalog:
            raise ConnectionError(
                f"no connection named {name!r}; yours: {', '.join(catalog)}"
                + (f" ({self.note})" if self.note else ""))
        return catalog[name]

    def engine(self, name: str | None):
        connection = self.connection(name)
        engine = self._engines.get(connection.name)
        if engine is not None and not self._expired(engine):
            return engine
        if engine is not None:
            self._close(connection.name)
        credential = self.credentials.get(connection)
        cls = engine_class(connection.engine)
        if connection.name == LOCAL:
            engine = cls(connection, None, namespace=self.namespace)
        else:
            engine = cls(connection, credential)
        self._engines[connection.name] = engine
        return engine

    def _expired(self, engine) -> bool:
        credential = engine.credential
        return bool(credential and credential.expires and credential.expires < time.time())

    def _close(self, name: str) -> None:
        engine = self._engines.pop(name, None)
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken engine
                pass

    def close(self) -> None:
        for name in list(self._engines):
            self._close(name)

    # --- queries -------------------------------------------------------------------------

    def run(self, name: str | None, sql: str, parameters: dict | None = None,
            limit: int | None = None) -> Result:
        """Run ``sql`` on connection ``name``; at most ``limit`` rows (default: the
        connection's ``max_rows``, which a limit may not exceed)."""
        connection = self.connection(name)
        cap = connection.max_rows
        limit = cap if limit is None else limit
        if limit > cap:
            raise ConnectionError(f"--limit {limit} is over the connection's max_rows "
                                  f"({cap}); ask for at most {cap} rows")
        engine = self.engine(connection.name)
        start = time.perf_counter()
        try:
            result = self._wait(engine, connection, sql, parameters or {}, limit)
        except QueryError as e:
            if self._auth_failed(e) and connection.credentials.kind not in ("none",):
                # an expired or rotated credential: one more try with a fresh one
                self._close(connection.name)
                self.credentials.get(connection, fresh=True)
                engine = self.engine(connection.name)
                result = self._wait(engine, connection, sql, parameters or {}, limit)
            else:
                raise
        seconds = time.perf_counter() - start
        self.default = connection.name
        if connection.name != LOCAL:
            self.history.append(Query(
                connection=connection.name, engine=connection.engine, sql=sql,
                sha256=hashlib.sha256(sql.encode()).hexdigest(), rows=result.table.num_rows,
                seconds=seconds, truncated=result.truncated))
        result.seconds = seconds
        return result

    @staticmethod
    def _auth_failed(error: QueryError) -> bool:
        text = str(error).lower()
        return any(s in text for s in ("password authentication failed", "authentication",
                                       "unauthenticated", "expired"))

    def _wait(self, engine, connection: Connection, sql: str, parameters: dict,
              limit: int) -> Result:
        if self._runner is None or self._runner.stuck:
            self._runner = _Runner()
        done = self._runner.submit(engine.query, sql, parameters, limit)
        deadline = time.monotonic() + connection.timeout
        try:
            while not done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    engine.cancel()
                    self._runner.settle(done)
                    raise QueryCancelled(
                        f"the query ran longer than the connection's timeout "
                        f"({connection.timeout:g} s) and was cancelled on the server")
        except KeyboardInterrupt:
            engine.cancel()
            self._runner.settle(done)
            raise
        return done.outcome()


class _Done(threading.Event):
    """A query's end: its result or its error."""

    result = None
    error: BaseException | None = None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class _Runner:
    """The thread a kernel's queries run in (one, kept: starting a thread per query costs
    more than a small query). A daemon: a query that never ends never holds up the
    kernel's exit. One whose cancel did not take is left to itself (``stuck``); the next
    query gets a new runner."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.stuck = False
        threading.Thread(target=self._work, name="redspot-sql", daemon=True).start()

    def _work(self):
        while True:
            call, args, done = self._jobs.get()
            try:
                done.result = call(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                done.error = e
            done.set()

    def submit(self, call, *args) -> _Done:
        done = _Done()
        self._jobs.put((call, args, done))
        return done

    def settle(self, done: _Done) -> None:
        """Wait for a cancelled query to go; if it does not, this runner is stuck."""
        if not done.wait(CANCEL_GRACE):
            self.stuck = True


class WarehouseConnection:
    """``redspot.warehouse.connect(name)``: a connection a notebook opens and can hand to
    Ray tasks. Pickled (for a ``%%ray_remote`` cell or a training worker), it carries a
    short-lived credential for this connection only, in the task's arguments, never in
    an environment variable or ``runtime_env``."""

    def __init__(self, connection: Connection, credential: Credential | None,
                 warehouse: Warehouse | None = None):
        self.connection = connection
        self._credential = credential
        self._warehouse = warehouse
        self._engine = None

    @property
    def name(self) -> str:
        return self.connection.name

    def __repr__(self):
        return (f"<warehouse connection {self.connection.name!r} "
                f"({self.connection.engine})>")

    def __reduce__(self):
        credential = self._credential
        if self._warehouse is not None and self.connection.credentials.kind != "none":
            credential = self._warehouse.credentials.get(self.connection)
        return (_reopen, (self.connection.public(), credential))

    def _engine_here(self):
        if self._warehouse is not None:
            return self._warehouse.engine(self.connection.name)
        if self._engine is None:
            self._engine = engine_class(self.connection.engine)(self.connection,
                                                               self._credential)
        return self._engine

    def query(self, sql: str, parameters: dict | None = None, limit: int | None = None,
              arrow: bool = False):
        """A pandas DataFrame on Arrow types (``arrow=True``: the Arrow table)."""
        if self._warehouse is not None:
            result = self._warehouse.run(self.connection.name, sql, parameters, limit)
        else:
            limit = self.connection.max_rows if limit is None else limit
            result = self._engine_here().query(sql, parameters or {}, limit)
        return result.table if arrow else to_frame(result.table)

    def tables(self, schema: str | None = None):
        return self._engine_here().tables(schema)

    def columns(self, table: str):
        return self._engine_here().columns(table)


def _reopen(public: dict, credential):
    connection = Connection.from_public(public)
    return WarehouseConnection(connection, credential)


def to_frame(table):
    """A pandas DataFrame on Arrow types: no copy of the columns into numpy objects."""
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


_default: Warehouse | None = None


def default_warehouse(namespace: dict | None = None) -> Warehouse:
    """This process's warehouse (the ``%%sql`` magics' and ``connect()``'s)."""
    global _default
    if _default is None:
        _default = Warehouse.from_environment(namespace)
    elif namespace is not None and not _default.namespace:
        _default.namespace = namespace
    return _default


def connect(name: str | None = None) -> WarehouseConnection:
    """A named connection, with the signed-in user's credentials (see the class)."""
    warehouse = default_warehouse()
    connection = warehouse.connection(name)
    return WarehouseConnection(connection, None, warehouse)
