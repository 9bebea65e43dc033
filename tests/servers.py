"""Real database servers for the warehouse tests, started on 127.0.0.1 and stopped by
their own PIDs: PostgreSQL (Debian's, as the ``postgres`` account), Spark Connect and
Spark's Thrift server (from the pyspark distribution, on Java 17)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

SUPERUSER_PASSWORD = "pg-super-test-secret"


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def postgres_missing() -> str | None:
    """Why no PostgreSQL server can be started here, or None."""
    if not postgres_bin("initdb") or not postgres_bin("pg_ctl"):
        return "PostgreSQL's server is not installed (Debian package postgresql)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres account (Debian package postgresql makes it)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as the postgres account needs root"
    return None


def _wait_port(port: int, timeout: float, proc=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: "
                               f"{log.read_text()[-3000:] if log else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on port {port} in {timeout} s: "
                       f"{log.read_text()[-3000:] if log and log.exists() else ''}")


@dataclass
class Postgres:
    port: int
    folder: Path

    def dsn(self, user: str = "postgres", password: str = SUPERUSER_PASSWORD,
            database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def sql(self, statements: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(database=database), autocommit=True) as con:
            con.execute(statements)


@contextlib.contextmanager
def postgres():
    """A PostgreSQL server of its own on a free port; the superuser signs in with
    ``SUPERUSER_PASSWORD`` over TCP (scram-sha-256, as in production)."""
    folder = Path(tempfile.mkdtemp(prefix="rs-pg-"))
    os.chmod(folder, 0o755)
    shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    os.chmod(pwfile, 0o600)
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run, postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    port = free_port()
    log = folder / "server.log"
    subprocess.run([*run, postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=60)
    try:
        yield Postgres(port, folder)
    finally:
        subprocess.run([*run, postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# --- Spark -----------------------------------------------------------------------------

def spark_missing() -> str | None:
    if not shutil.which("java"):
        return "no Java (Debian package openjdk-17-jre-headless)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed"
    return None


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


@dataclass
class SparkServer:
    port: int
    proc: subprocess.Popen
    folder: Path
    ui_port: int = 0


@contextlib.contextmanager
def spark_server(kind: str, token: str = "", memory: str = "512m"):
    """``connect``: Spark Connect (with ``token``); ``thrift``: Spark's Thrift server
    (HiveServer2). ``local[1]``, bound to 127.0.0.1, its own warehouse folder; the
    driver's heap is ``memory`` (results are collected there)."""
    folder = Path(tempfile.mkdtemp(prefix=f"rs-spark-{kind}-"))
    port, ui_port = free_port(), free_port()
    home = _spark_home()
    conf = {
        "spark.master": "local[1]",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "true",
        "spark.ui.port": str(ui_port),
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={folder}",
        "spark.driver.memory": memory,
        "spark.sql.shuffle.partitions": "2",
    }
    if kind == "connect":
        cls = "org.apache.spark.sql.connect.service.SparkConnectServer"
        conf.update({"spark.connect.grpc.binding.port": str(port),
                     "spark.connect.grpc.binding.address": "127.0.0.1"})
        if token:
            conf["spark.connect.authenticate.token"] = token
    else:
        cls = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
        conf.update({"spark.hadoop.hive.server2.thrift.port": str(port),
                     "spark.hadoop.hive.server2.thrift.bind.host": "127.0.0.1",
                     "spark.sql.catalogImplementation": "hive",
                     "spark.hadoop.javax.jdo.option.ConnectionURL":
                         f"jdbc:derby:;databaseName={folder}/metastore;create=true"})
    cmd = [f"{home}/bin/spark-submit", "--class", cls, "--name", f"redspot-test-{kind}"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append("spark-internal")
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(folder)}
    log = folder / "server.log"
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=folder, start_new_session=True)
    try:
        _wait_port(port, 120, proc, log)
        yield SparkServer(port, proc, folder, ui_port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


# --- S3 -----------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server():
    """A real S3 API server (moto, which also serves STS) on a free port; its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
