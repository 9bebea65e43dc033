"""``%%sql`` against each engine's own Python client: query to DataFrame, same data, same
machine, same run.

    python bench/warehouse.py [--rounds 5] [--rows 10000,2000000] [--no-spark]

For PostgreSQL (psycopg), DuckDB (``.to_arrow_table()``) and Spark Connect (``toArrow``), a table
of ``rows`` rows (an int, a text, a float, a date) is read whole

- through Redspot: ``Warehouse.run`` (what ``%%sql`` calls: parameters, row limit,
  timeout thread) and the DataFrame on Arrow types ``%%sql`` returns;
- with the engine's own client's fastest path to a DataFrame (psycopg: ``fetchall`` into
  ``pandas.DataFrame``, binary protocol; DuckDB: ``.to_arrow_table()`` (its ``.arrow()``
  of earlier releases) then the same ArrowDtype frame, and ``.df()``, the faster of the
  two; Spark: ``toArrow`` then the same frame).

*Cold* opens a new connection for every query (what a kernel's first ``%%sql`` pays),
*warm* reuses one. Each figure is the median of ``--rounds`` runs. Target: ratio <= 1.10.

Memory: a ``%%sql`` query of the most rows runs once more in a process of its own, with
its number as a ``:n`` parameter and written in the text; its peak resident memory
(sampled every 2 ms) above what it held before the query, against the result's size in
Arrow. Target <= 1.5.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUERY = "select id, label, score, day from bench_rows where id < :n"
SPARK_TOKEN = "bench-token"


def frame(table):
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


# --- the paths, each given an engine's address and the row count -----------------------

def redspot_path(conf: dict):
    """``Warehouse.run`` and the DataFrame ``%%sql`` returns; ``run(rows)``."""
    from redspot.warehouse.connections import Connection, Credentials
    from redspot.warehouse.engines.base import Credential
    from redspot.warehouse.session import Warehouse

    connection = Connection(
        name="bench", engine=conf["engine"], address=conf["address"],
        database=conf.get("database", ""), max_rows=10**9, timeout=3600,
        credentials=Credentials(kind="static" if conf.get("credential") else "none"))
    warehouse = Warehouse(None)
    warehouse._catalog = {"bench": connection}
    warehouse.credentials._held["bench"] = Credential(**conf.get("credential", {}))

    def run(rows):
        if conf.get("literal"):  # no parameter: the number in the text
            result = warehouse.run("bench", QUERY.replace(":n", str(int(rows))), {})
        else:
            result = warehouse.run("bench", QUERY, {"n": rows})
        return frame(result.table), result.table.nbytes

    return run, warehouse.close


def native_path(conf: dict):
    """The engine's own client's fastest way to a DataFrame; ``run(rows)``."""
    engine = conf["engine"]
    if engine == "postgresql":
        import pandas as pd
        import psycopg

        con = psycopg.connect(conf["dsn"], autocommit=True)

        def run(rows):
            with con.cursor(binary=True) as cur:
                cur.execute(QUERY.replace(":n", "%s"), (rows,))
                data = cur.fetchall()
                names = [d.name for d in cur.description]
            return pd.DataFrame(data, columns=names), 0

        return run, con.close
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect(conf["database"], read_only=True)

        def run(rows):
            relation = con.sql(QUERY.replace(":n", "$n"), params={"n": rows})
            if conf.get("variant") == "df":
                return relation.df(), 0
            return frame(relation.to_arrow_table()), 0

        return run, con.close
    if engine == "spark-connect":
        from pyspark.sql.connect.session import SparkSession

        port = conf["address"].rsplit(":", 1)[1]
        spark = SparkSession.builder.remote(
            f"sc://localhost:{port}/;token={SPARK_TOKEN}").create()

        def run(rows):
            return frame(spark.sql(QUERY, args={"n": rows}).toArrow()), 0

        return run, spark.stop
    raise ValueError(engine)


def timed(make, conf: dict, rounds: int, warm: bool) -> float:
    """The median seconds of a query of ``conf["rows"]`` rows: on one connection opened
    (and used once) before (``warm``), or each on a new connection, opening included."""
    times = []
    if warm:
        run, close = make(conf)
        run(conf["rows"])
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                run(conf["rows"])
                times.append(time.perf_counter() - start)
        finally:
            close()
        return statistics.median(times)
    for _ in range(rounds):
        start = time.perf_counter()
        run, close = make(conf)
        run(conf["rows"])
        times.append(time.perf_counter() - start)
        close()
    return statistics.median(times)


def memory_child(path: str, conf: dict) -> dict:
    """In a process of its own: peak RSS above the resting one, and the result's size."""
    code = f"""
import json, sys, threading, time, psutil
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
import warehouse as bench
conf = json.loads({json.dumps(json.dumps(conf))})
make = bench.redspot_path if {path!r} == "redspot" else bench.native_path
run, close = make(conf)
run(10)  # imports, the connection and its first query: before the baseline
me = psutil.Process()
before = me.memory_info().rss
peak = [before]
done = threading.Event()
def sample():  # the resident size every 2 ms while the query runs
    while not done.is_set():
        peak[0] = max(peak[0], me.memory_info().rss)
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
result, nbytes = run(conf["rows"])
done.set()
sampler.join()
peak[0] = max(peak[0], me.memory_info().rss)
import pyarrow as pa
if not nbytes:
    nbytes = pa.Table.from_pandas(result).nbytes
print("MEM", json.dumps({{"grew": peak[0] - before, "result": nbytes, "rows": len(result)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = next((x for x in out.stdout.splitlines() if x.startswith("MEM ")), None)
    if line is None:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-3000:])
    return json.loads(line[4:])


# --- the servers and their data ---------------------------------------------------------

@contextlib.contextmanager
def engines(max_rows: int, spark: bool):
    from tests.servers import SUPERUSER_PASSWORD, postgres, spark_server

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rs-bench-")))
        found = {}
        print(f"PostgreSQL: {max_rows:,} rows...", flush=True)
        pg = stack.enter_context(postgres())
        pg.sql(f"""create table bench_rows as select g as id, 'label-' || (g % 1000) as label,
                   g * 0.5::float8 as score, date '2026-01-01' + (g % 365) as day
                   from generate_series(0, {max_rows - 1}) g;
                   create index on bench_rows (id); analyze bench_rows""")
        found["postgresql"] = {"engine": "postgresql", "address": f"127.0.0.1:{pg.port}",
                               "database": "postgres", "dsn": pg.dsn(),
                               "credential": {"user": "postgres",
                                              "password": SUPERUSER_PASSWORD}}
        import duckdb

        db = folder / "bench.duckdb"
        con = duckdb.connect(str(db))
        con.execute(f"""create table bench_rows as select i::int as id,
                        'label-' || (i % 1000) as label, i * 0.5 as score,
                        date '2026-01-01' + (i % 365)::int as day from range({max_rows}) t(i)""")
        con.close()
        found["duckdb"] = {"engine": "duckdb", "address": "", "database": str(db)}
        if spark:
            print("Spark Connect: starting...", flush=True)
            # millions of rows are collected in the driver: a heap for them
            server = stack.enter_context(spark_server("connect", token=SPARK_TOKEN,
                                                      memory="3g"))
            from pyspark.sql.connect.session import SparkSession

            session = SparkSession.builder.remote(
                f"sc://localhost:{server.port}/;token={SPARK_TOKEN}").create()
            session.sql(f"""create table bench_rows using parquet as select cast(id as int)
                            as id, concat('label-', id % 1000) as label,
                            id * 0.5 as score, date_add(date'2026-01-01', cast(id % 365 as int))
                            as day from range({max_rows})""")
            session.stop()
            found["spark-connect"] = {"engine": "spark-connect",
                                      "address": f"127.0.0.1:{server.port}",
                                      "credential": {"token": SPARK_TOKEN}}
        yield found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", default="10000,2000000")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="skip the timings")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sizes = [int(x) for x in args.rows.split(",")]
    rows_out = []
    with engines(max(sizes), not args.no_spark) as found:
        for name, conf in ({} if args.memory_only else found).items():
            for rows in sizes:
                conf = {**conf, "rows": rows}
                # the servers warm up (JIT, caches) before either path is timed
                timed(native_path, conf, 1, False)
                timed(redspot_path, conf, 1, False)
                for warm in (False, True):
                    ours = timed(redspot_path, conf, args.rounds, warm)
                    native = timed(native_path, conf, args.rounds, warm)
                    label = {"postgresql": "psycopg fetchall", "duckdb": ".to_arrow_table()",
                             "spark-connect": "toArrow"}[name]
                    if name == "duckdb":
                        df = timed(native_path, {**conf, "variant": "df"}, args.rounds, warm)
                        if df < native:
                            native, label = df, ".df()"
                    rows_out.append((name, rows, "warm" if warm else "cold", ours, native,
                                     label))
                    print(f"  {name} {rows:,} {'warm' if warm else 'cold'}: "
                          f"{ours * 1000:.1f} ms vs {native * 1000:.1f} ms", flush=True)
        memory = []
        for name, conf in found.items():
            for literal in (False, True):
                conf = {**conf, "rows": max(sizes), "literal": literal}
                memory.append((name, "literal" if literal else ":n", memory_child(
                    "redspot", conf)))
    print()
    print(f"Query to DataFrame, median of {args.rounds} (ratio: %%sql / native; target <= 1.10)")
    print(f"{'engine':<14} {'rows':>10} {'':<5} {'%%sql ms':>10} {'native ms':>10} "
          f"{'ratio':>6}  native path")
    for name, rows, kind, ours, native, label in rows_out:
        print(f"{name:<14} {rows:>10,} {kind:<5} {ours * 1000:>10.1f} {native * 1000:>10.1f} "
              f"{ours / native:>6.2f}  {label}")
    print()
    print(f"Peak memory of a %%sql query of {max(sizes):,} rows above the process's resting "
          "size, against the result's size in Arrow (target <= 1.5)")
    print(f"{'engine':<14} {'query':<8} {'result MB':>10} {'peak MB':>10} {'ratio':>6}")
    for name, kind, m in memory:
        print(f"{name:<14} {kind:<8} {m['result'] / 2**20:>10.1f} {m['grew'] / 2**20:>10.1f} "
              f"{m['grew'] / m['result']:>6.2f}")


if __name__ == "__main__":
    main()
