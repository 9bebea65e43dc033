"""The warehouse against real servers, started once for the module on 127.0.0.1:
PostgreSQL (two users whose roles' grants differ), DuckDB on local Parquet and on Parquet
in a real S3 API server (moto, which also serves STS), Spark Connect and Spark's Thrift
server (HiveServer2). First each engine adapter on its own, then through a real hub: the
warehouse service, and ``%%sql`` in real servers with credentials the users never see.
Trino's live test needs a Trino server, which cannot be had here."""

from __future__ import annotations

import _thread
import json
import os
import socket
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from redspot.warehouse.connections import Connection, Credentials, parse_personal
from redspot.warehouse.engines import engine_class
from redspot.warehouse.engines.base import Credential, QueryCancelled, QueryError
from redspot.warehouse.pgroles import PostgresRoles
from redspot.warehouse.session import Warehouse
from tests.servers import (
    SUPERUSER_PASSWORD,
    postgres,
    postgres_missing,
    spark_missing,
    spark_server,
)

pytestmark = pytest.mark.integration

SPARK_TOKEN = "spark-shared-test-token"


# --- PostgreSQL ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    with postgres() as server:
        server.sql("""
            create role redspot_admin login createrole password 'admin-test-pw';
            create role vision_reader nologin;
            create role nlp_reader nologin;
            grant vision_reader, nlp_reader to redspot_admin with admin option;
            create schema vision;
            create schema nlp;
            create table vision.images as
                select g as id, 'img-' || g as label, g * 0.25 as score
                from generate_series(1, 50000) g;
            create table nlp.docs as select g as id, 'doc ' || g as body
                from generate_series(1, 10) g;
            grant usage on schema vision to vision_reader;
            grant select on all tables in schema vision to vision_reader;
            grant usage on schema nlp to nlp_reader;
            grant select on all tables in schema nlp to nlp_reader;
        """)
        yield server


def pg_connection(pg, **kwargs) -> Connection:
    return Connection(name="wh", engine="postgresql", address=f"127.0.0.1:{pg.port}",
                      database="postgres", **kwargs)


def superuser():
    return Credential(user="postgres", password=SUPERUSER_PASSWORD)


def active_queries(pg) -> list[str]:
    """What Redspot's connections are running on the server now."""
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as con:
        return [r[0] for r in con.execute(
            "select query from pg_stat_activity where state = 'active' "
            "and application_name = 'redspot-sql'")]


def running_soon(pg, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if active_queries(pg):
            return True
        time.sleep(0.1)
    return False


def test_postgresql_binds_parameters_on_the_server_and_limits_rows(pg):
    engine = engine_class("postgresql")(pg_connection(pg), superuser())
    result = engine.query("select id, label, score from vision.images where id > :lo "
                          "and label <> :odd order by id", {"lo": 10, "odd": "it's"}, 1000)
    assert result.truncated and result.table.num_rows == 1000
    assert result.table.column("id")[0].as_py() == 11
    assert result.table.schema.field("score").type == pa.float64()  # unconstrained numeric
    # a value that would break SQL if pasted in is just a value
    evil = engine.query("select count(*) as n from vision.images where label = :x",
                        {"x": "x'; drop table vision.images; --"}, None)
    assert evil.table.column("n")[0].as_py() == 0
    assert engine.tables("vision") == [("vision", "images")]
    assert engine.columns("vision.images") == [("id", "integer"), ("label", "text"),
                                               ("score", "numeric")]
    with pytest.raises(QueryError, match=r'relation "vision.nope" does not exist'):
        engine.query("select * from vision.nope", {}, 10)
    with pytest.raises(QueryError, match="syntax error"):
        engine.query("selec 1", {}, 10)


def test_two_users_roles_see_what_their_groups_grant(pg):
    roles = PostgresRoles(pg.dsn("redspot_admin", "admin-test-pw"),
                          {"vision": ["vision_reader"], "nlp": ["nlp_reader"]}, ttl=600)
    alice_cred = roles.issue("alice", ["vision"])
    bob_cred = roles.issue("bob", ["nlp"])
    assert alice_cred.user == "rs_alice" and alice_cred.password != bob_cred.password
    # the same password while it has life left: every kernel of hers shares it
    assert roles.issue("alice", ["vision"]).password == alice_cred.password
    alice = engine_class("postgresql")(pg_connection(pg), Credential(
        user=alice_cred.user, password=alice_cred.password))
    bob = engine_class("postgresql")(pg_connection(pg), Credential(
        user=bob_cred.user, password=bob_cred.password))
    assert alice.query("select count(*) n from vision.images", {}, None).table[0][0].as_py() \
        == 50000
    assert bob.query("select count(*) n from nlp.docs", {}, None).table[0][0].as_py() == 10
    with pytest.raises(QueryError, match="permission denied for schema nlp") as e:
        alice.query("select * from nlp.docs", {}, 10)
    assert alice_cred.password not in str(e.value)
    with pytest.raises(QueryError, match="permission denied for schema vision"):
        bob.query("select * from vision.images", {}, 10)
    # bob moves to vision: his role follows at the next grant
    roles.issue("bob", ["vision"])
    bob.close()
    bob = engine_class("postgresql")(pg_connection(pg), Credential(
        user=bob_cred.user, password=roles.issue("bob", ["vision"]).password))
    assert bob.query("select count(*) n from vision.images", {}, None).table[0][0].as_py() \
        == 50000
    with pytest.raises(QueryError, match="permission denied for schema nlp"):
        bob.query("select * from nlp.docs", {}, 10)


class RolesService:
    """The warehouse service's answers, in process, over real PostgreSQL roles (its HTTP
    side is tested with a real hub in test_warehouse_service)."""

    def __init__(self, pg, ttl):
        self.roles = PostgresRoles(pg.dsn("redspot_admin", "admin-test-pw"),
                                   {"*": ["vision_reader"]}, ttl=ttl)
        self.connection = pg_connection(pg, credentials=Credentials(kind="postgres-role"),
                                        groups=("*",))
        self.grants = 0

    def connections(self):
        return {"wh": self.connection}

    def credential(self, name):
        self.grants += 1
        issued = self.roles.issue("carol", [])
        return Credential(user=issued.user, password=issued.password, expires=issued.expires)


def test_an_expired_credential_is_renewed(pg):
    service = RolesService(pg, ttl=10)
    warehouse = Warehouse(service)
    assert warehouse.run("wh", "select 1 as one", {}).table[0][0].as_py() == 1
    assert service.grants == 1
    first = warehouse.credentials.get(service.connection)
    # PostgreSQL itself refuses the password once it is past VALID UNTIL
    time.sleep(first.expires - time.time() + 1)
    with pytest.raises(QueryError, match="password authentication failed"):
        engine_class("postgresql")(service.connection, first)
    assert warehouse.run("wh", "select 2 as two", {}).table[0][0].as_py() == 2
    assert service.grants == 2
    assert warehouse.credentials.get(service.connection).password != first.password


def test_an_interrupt_cancels_the_query_on_the_server(pg):
    warehouse = Warehouse(None)
    warehouse._catalog = {"wh": pg_connection(pg, credentials=Credentials(kind="prompt"),
                                              user="postgres")}
    warehouse.credentials._ask = lambda prompt: SUPERUSER_PASSWORD
    seen = []

    def interrupt_once_running():
        seen.append(running_soon(pg))  # the query is on the server...
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        # with a parameter: read through a server-side cursor, cancelled the same way
        warehouse.run("wh", "select pg_sleep(:s) /* interrupt-me */", {"s": 60})
    assert time.monotonic() - start < 15
    assert seen == [True]
    assert active_queries(pg) == []  # ...and gone from it
    # the connection still works afterwards
    assert warehouse.run("wh", "select 3 as three", {}).table[0][0].as_py() == 3


def test_a_query_over_the_timeout_is_cancelled_with_a_clear_message(pg):
    warehouse = Warehouse(None)
    warehouse._catalog = {"wh": pg_connection(pg, timeout=1.5, user="postgres",
                                              credentials=Credentials(kind="prompt"))}
    warehouse.credentials._ask = lambda prompt: SUPERUSER_PASSWORD
    with pytest.raises(QueryCancelled, match=r"longer than the connection's timeout \(1.5 s\)"):
        warehouse.run("wh", "select pg_sleep(60) /* too-long */", {})
    assert active_queries(pg) == []


def test_an_unreachable_server_fails_within_the_connect_timeout():
    # a port that accepts and never answers: the connection waits for PostgreSQL's hello
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        connection = Connection(name="far", engine="postgresql",
                                address=f"127.0.0.1:{port}", connect_timeout=2)
        start = time.monotonic()
        with pytest.raises(QueryError, match="timeout|timed out"):
            engine_class("postgresql")(connection, Credential(user="x", password="secret-x"))
        assert time.monotonic() - start < 8
    finally:
        silent.close()


def test_a_personal_connection_asks_for_its_password_once(pg, tmp_path, monkeypatch):
    import redspot.warehouse.session as session
    from tests.kernels import ipython_shell

    (tmp_path / "connections.yaml").write_text(f"""
connections:
  mine:
    engine: postgresql
    address: 127.0.0.1:{pg.port}
    database: postgres
    user: postgres
    password: prompt
    max_rows: 100
""")
    monkeypatch.setenv("REDSPOT_CONNECTIONS_FILE", str(tmp_path / "connections.yaml"))
    monkeypatch.delenv("REDSPOT_WAREHOUSE_URL", raising=False)
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return SUPERUSER_PASSWORD

    monkeypatch.setattr("getpass.getpass", ask)
    monkeypatch.setattr(session, "_default", None)
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "redspot.magics")
    ip.user_ns["lo"] = 10
    ip.run_cell("%%sql mine -o first\nselect * from vision.images where id > :lo order by id")
    ip.run_cell("%sql mine -o second select count(*) as n from nlp.docs")
    assert asked == ["Password for postgres on mine: "]
    first = ip.user_ns["first"]
    assert len(first) == 100 and first["id"].iloc[0] == 11
    assert str(first["id"].dtype) == "int32[pyarrow]"
    assert ip.user_ns["second"]["n"].iloc[0] == 10
    # the notebook's own frames, by name
    ip.run_cell("%sql local -o third select count(*) as n from first where id > 100")
    assert ip.user_ns["third"]["n"].iloc[0] == 10
    result = ip.run_cell("%sql nope select 1")
    assert "no connection named 'nope'; yours: mine, local" in str(result.error_in_exec)
    monkeypatch.setattr(session, "_default", None)


def test_a_personal_file_never_holds_a_password():
    with pytest.raises(Exception, match="holds no secret"):
        parse_personal("connections: {x: {engine: postgresql, password: hunter2}}")


# --- DuckDB ----------------------------------------------------------------------------

def test_duckdb_reads_local_parquet(tmp_path):
    table = pa.table({"city": ["Lisbon", "Tokyo", "Lisbon"], "price": [80.0, 120.0, 95.5]})
    pq.write_table(table, tmp_path / "listings.parquet")
    engine = engine_class("duckdb")(Connection(name="files", engine="duckdb"))
    result = engine.query(
        f"select city, sum(price) as total from read_parquet('{tmp_path}/listings.parquet') "
        "where price > :floor group by city order by city", {"floor": 50}, 10)
    assert result.table.to_pylist() == [{"city": "Lisbon", "total": 175.5},
                                        {"city": "Tokyo", "total": 120.0}]


@pytest.fixture(scope="module")
def s3():
    from tests.servers import s3_server

    with s3_server() as url:
        yield url


def test_duckdb_reads_parquet_in_s3_with_minted_credentials(s3, tmp_path, monkeypatch):
    import boto3

    from redspot.warehouse.sts import mint

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    admin = dict(aws_access_key_id="admin", aws_secret_access_key="admin-secret",
                 region_name="us-east-1", endpoint_url=s3)
    boto3.client("s3", **admin).create_bucket(Bucket="lake")
    pq.write_table(pa.table({"x": list(range(1000))}), tmp_path / "part.parquet")
    boto3.client("s3", **admin).upload_file(str(tmp_path / "part.parquet"), "lake",
                                            "users/alice/part.parquet")
    minted = mint("alice", {"bucket": "lake", "prefix": "users/{user}/",
                            "role_arn": "arn:aws:iam::123456789012:role/readers",
                            "endpoint_url": s3, "sts_endpoint_url": s3}, 900,
                  {"access_key_id": "admin", "secret_access_key": "admin-secret"})
    assert minted["s3"]["prefix"] == "users/alice/"
    assert minted["s3"]["access_key_id"] != "admin" and minted["expires"] > time.time()
    credential = Credential(s3=minted["s3"], expires=minted["expires"])
    engine = engine_class("duckdb")(Connection(name="lake", engine="duckdb"), credential)
    result = engine.query("select count(*) as n, sum(x) as s from "
                          "read_parquet('s3://lake/users/alice/part.parquet')", {}, 10)
    assert result.table.to_pylist() == [{"n": 1000, "s": 499500}]
    with pytest.raises(QueryError) as e:
        engine.query("select * from read_parquet('s3://lake/users/alice/none.parquet')",
                     {}, 10)
    assert minted["s3"]["secret_access_key"] not in str(e.value)


# --- Spark -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark_connect():
    reason = spark_missing()
    if reason:
        pytest.skip(reason)
    with spark_server("connect", token=SPARK_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def thrift():
    reason = spark_missing()
    if reason:
        pytest.skip(reason)
    with spark_server("thrift") as server:
        yield server


def spark_jobs(server, status: str) -> list:
    base = f"http://127.0.0.1:{server.ui_port}/api/v1/applications"
    (app,) = requests.get(base, timeout=30).json()
    return requests.get(f"{base}/{app['id']}/jobs", params={"status": status},
                        timeout=30).json()


def test_spark_connect_queries_with_its_shared_token(spark_connect):
    connection = Connection(name="spark", engine="spark-connect",
                            address=f"127.0.0.1:{spark_connect.port}")
    engine = engine_class("spark-connect")(connection, Credential(token=SPARK_TOKEN))
    result = engine.query("select id, id * 2 as twice from range(100000) where id >= :lo",
                          {"lo": 10}, 500)
    assert result.truncated and result.table.num_rows == 500
    assert result.table.column("twice")[0].as_py() == 20
    engine.query("create table if not exists people as "
                 "select id, concat('p', id) as name from range(20)", {}, None)
    assert ("default", "people") in engine.tables()
    assert engine.columns("people") == [("id", "bigint"), ("name", "string")]
    with pytest.raises(QueryError, match="TABLE_OR_VIEW_NOT_FOUND") as e:
        engine.query("select * from nope", {}, 5)
    assert "JVM stacktrace" not in str(e.value)
    with pytest.raises(QueryError, match="Invalid authentication token") as e:
        engine_class("spark-connect")(connection, Credential(token="wrong-token-1")).query(
            "select 1", {}, 1)
    assert "wrong-token-1" not in str(e.value)


def test_an_interrupt_stops_the_spark_job_on_the_server(spark_connect):
    connection = Connection(name="spark", engine="spark-connect",
                            address=f"127.0.0.1:{spark_connect.port}")
    warehouse = Warehouse(None)
    warehouse._catalog = {"spark": connection}
    warehouse._engines["spark"] = engine_class("spark-connect")(
        connection, Credential(token=SPARK_TOKEN))

    def interrupt_once_running():
        # a job of its own on a busy machine: Spark took over a minute to start it in CI,
        # and an interrupt before it runs is not the interrupt this test is about
        # Spark's UI, on the driver that runs the job, missed a 10 s read in CI: a missed
        # poll is not a reason to stop polling (the thread died, nothing interrupted the
        # query, and the test waited out the connection's 300 s)
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                try:
                    if spark_jobs(spark_connect, "running"):
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
        finally:
            _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        # hours of work on one core (a filter Spark cannot prove false)
        warehouse.run("spark", "select count(*) from range(0, 100000000000, 1, 1) "
                               "where hash(id) = 12345", {})
    deadline = time.monotonic() + 30
    while spark_jobs(spark_connect, "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert spark_jobs(spark_connect, "running") == []
    assert spark_jobs(spark_connect, "failed")  # Spark records it as cancelled


def test_hive_tables_through_the_thrift_server(thrift):
    connection = Connection(name="hive", engine="hive", address=f"127.0.0.1:{thrift.port}")
    engine = engine_class("hive")(connection, Credential(user="alice"))
    engine.query("create table if not exists people (id int, name string)", {}, None)
    engine.query("insert into people values (1, 'Ann'), (2, 'O''Brien'), (3, 'Zoe')", {}, None)
    # PyHive escapes the value: a quote in it is a quote
    result = engine.query("select id, name from people where name = :n or id > :k "
                          "order by id", {"n": "O'Brien", "k": 2}, 10)
    assert result.table.to_pylist() == [{"id": 2, "name": "O'Brien"},
                                        {"id": 3, "name": "Zoe"}]
    assert engine.query("select * from people", {}, 2).truncated
    assert ("default", "people") in engine.tables("default")
    assert engine.columns("people") == [("id", "int"), ("name", "string")]
    with pytest.raises(QueryError, match="TABLE_OR_VIEW_NOT_FOUND"):
        engine.query("select * from nope", {}, 5)


# --- Trino -----------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("REDSPOT_TEST_TRINO"),
                    reason="needs a Trino server (none can be had here): set "
                           "REDSPOT_TEST_TRINO=host:port")
def test_trino_queries_a_real_server():
    connection = Connection(name="trino", engine="trino",
                            address=os.environ["REDSPOT_TEST_TRINO"], database="system.runtime")
    engine = engine_class("trino")(connection, Credential(user="redspot-tests"))
    result = engine.query("select node_id from nodes where coordinator = :c", {"c": True}, 5)
    assert result.table.num_rows >= 1
    assert "runtime" in engine.schemas()


# --- Through the hub: the warehouse service and %%sql in real servers --------------------

WH_PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22",
                "carol": "carol-password-3"}
TEST_AUTHENTICATOR = '''
from redspot.hub.auth import RedspotPasswordAuthenticator


class TokenInStateAuthenticator(RedspotPasswordAuthenticator):
    """As an OAuth identity provider would: a token for the user in auth_state."""

    async def authenticate(self, handler, data):
        user = await super().authenticate(handler, data)
        if not user:
            return user
        name = user if isinstance(user, str) else user["name"]
        return {"name": name, "auth_state": {"access_token": f"idp-token-for-{name}"}}


c.JupyterHub.authenticator_class = TokenInStateAuthenticator
c.Authenticator.enable_auth_state = True
'''


@pytest.fixture(scope="module")
def wh_hub(test_root, account_prefix, pg, s3, spark_connect, thrift, tmp_path_factory):
    """A hub with the warehouse service: PostgreSQL roles per user (alice in vision, bob in
    nlp, carol in neither), S3 through STS, Spark Connect and Hive with static
    credentials, an OAuth connection, and one for vision only."""
    import boto3

    from tests.conftest import HubPool

    if os.geteuid() != 0:
        pytest.skip("needs root: servers run as per-user accounts")
    secrets = tmp_path_factory.mktemp("operator-secrets")
    (secrets / "pg-admin").write_text(pg.dsn("redspot_admin", "admin-test-pw") + "\n")
    (secrets / "spark.yaml").write_text(f"token: {SPARK_TOKEN}\n")
    (secrets / "aws.yaml").write_text("access_key_id: admin\nsecret_access_key: admin-secret\n")
    for f in secrets.iterdir():
        f.chmod(0o600)
    admin = dict(aws_access_key_id="admin", aws_secret_access_key="admin-secret",
                 region_name="us-east-1", endpoint_url=s3)
    client = boto3.client("s3", **admin)
    client.create_bucket(Bucket="team-lake")
    table = tmp_path_factory.mktemp("lake") / "trips.parquet"
    pq.write_table(pa.table({"city": ["Lisbon", "Tokyo"], "km": [3.5, 7.25]}), table)
    client.upload_file(str(table), "team-lake", "users/alice/trips.parquet")
    settings = {
        "groups": {"vision": {"users": ["alice"]}, "nlp": {"users": ["bob"]}},
        "services": {"warehouse": {"enabled": True}},
        "warehouse": {"connections": {
            "pg": {"engine": "postgresql", "address": f"127.0.0.1:{pg.port}",
                   "database": "postgres", "groups": ["vision", "nlp"],
                   "description": "the team's PostgreSQL",
                   "credentials": {"kind": "postgres-role", "ttl": 900,
                                   "admin_dsn_file": str(secrets / "pg-admin"),
                                   "grants": {"vision": ["vision_reader"],
                                              "nlp": ["nlp_reader"]}}},
            "lake": {"engine": "duckdb", "groups": ["*"],
                     "credentials": {"kind": "s3-sts", "bucket": "team-lake",
                                     "prefix": "users/{user}/",
                                     "role_arn": "arn:aws:iam::123456789012:role/lake",
                                     "endpoint_url": s3, "sts_endpoint_url": s3,
                                     "secret_file": str(secrets / "aws.yaml")}},
            "spark": {"engine": "spark-connect", "groups": ["*"],
                      "address": f"127.0.0.1:{spark_connect.port}",
                      "credentials": {"kind": "static",
                                      "secret_file": str(secrets / "spark.yaml")}},
            "hive": {"engine": "hive", "groups": ["*"], "address": f"127.0.0.1:{thrift.port}",
                     "credentials": {"kind": "none"}},
            "sso": {"engine": "trino", "groups": ["*"], "address": "127.0.0.1:9",
                    "credentials": {"kind": "oauth"}},
            "visiondb": {"engine": "duckdb", "groups": ["vision"]},
        }},
    }
    saved = os.environ.get("JUPYTERHUB_CRYPT_KEY")
    os.environ["JUPYTERHUB_CRYPT_KEY"] = os.urandom(32).hex()
    pool = HubPool(test_root, account_prefix, "warehouse")
    try:
        hub = pool(settings, users=WH_PASSWORDS,
                   config_d={"60-auth-state.py": TEST_AUTHENTICATOR})
        hub.tokens = {name: hub.user_token(name) for name in (*WH_PASSWORDS, "admin")}
        yield hub
    finally:
        pool.close()
        if saved is None:
            os.environ.pop("JUPYTERHUB_CRYPT_KEY", None)
        else:
            os.environ["JUPYTERHUB_CRYPT_KEY"] = saved


W = "/services/warehouse/api"


def ask(hub, who, method, path, **kwargs):
    headers = {"Authorization": f"token {hub.tokens[who]}"} if who else {}
    return requests.request(method, hub.url + path, headers=headers, timeout=60,
                            allow_redirects=False, **kwargs)


def test_each_user_is_offered_the_connections_of_their_groups(wh_hub):
    names = {who: [c["name"] for c in ask(wh_hub, who, "GET", f"{W}/connections").json()[
        "connections"]] for who in ("alice", "bob", "carol", "admin")}
    # the demo first, then the file's order (the tests' YAML sorts them)
    assert names["alice"] == ["demo", "hive", "lake", "pg", "spark", "sso", "visiondb"]
    assert names["bob"] == ["demo", "hive", "lake", "pg", "spark", "sso"]
    assert names["carol"] == ["demo", "hive", "lake", "spark", "sso"]
    assert names["admin"] == names["alice"]
    listed = json.dumps(ask(wh_hub, "alice", "GET", f"{W}/connections").json())
    # no secret, nor where the operator keeps them
    assert "admin-test-pw" not in listed and SPARK_TOKEN not in listed
    assert "operator-secrets" not in listed


def test_a_connection_outside_ones_groups_is_refused_and_named(wh_hub):
    r = ask(wh_hub, "carol", "POST", f"{W}/connections/pg/credentials")
    assert r.status_code == 403
    assert "carol may not use connection 'pg' (it is for the groups vision, nlp)" in \
        r.json()["message"]
    assert "yours: demo, hive, lake, spark, sso" in r.json()["message"]
    r = ask(wh_hub, "bob", "POST", f"{W}/connections/visiondb/credentials")
    assert r.status_code == 403
    r = ask(wh_hub, "bob", "POST", f"{W}/connections/warehouse/credentials")
    assert r.status_code == 404
    assert "no connection named 'warehouse'; yours: demo, hive, lake, pg" in r.json()["message"]
    assert ask(wh_hub, None, "GET", f"{W}/connections").status_code == 403
    assert ask(wh_hub, None, "POST", f"{W}/connections/demo/credentials").status_code == 403
    assert ask(wh_hub, "bob", "GET", f"{W}/grants").status_code == 403
    assert ask(wh_hub, "bob", "DELETE", f"{W}/connections").status_code in (403, 405)
    assert ask(wh_hub, "bob", "GET", "/services/warehouse/api/secrets").status_code == 403


def test_the_oauth_kind_hands_over_the_token_from_the_sign_in(wh_hub):
    from tests.helpers import Browser

    browser = Browser(wh_hub)
    assert browser.login("carol", WH_PASSWORDS["carol"]).status_code == 200
    r = ask(wh_hub, "carol", "POST", f"{W}/connections/sso/credentials")
    assert r.status_code == 200, r.text
    assert r.json()["token"] == "idp-token-for-carol" and r.json()["kind"] == "oauth"
    # bob never signed in with the identity provider: no token, said so
    r = ask(wh_hub, "bob", "POST", f"{W}/connections/sso/credentials")
    assert r.status_code == 409 and "sign out of the hub and in again" in r.json()["message"]


NOTEBOOK = {
    "alice": [
        ("%sql --connections", ["the team's PostgreSQL"]),
        ("%%sql pg -o images\nselect count(*) as n from vision.images", ["1 row · "]),
        ("print(int(images['n'][0]))", ["50000"]),
        ("%%sql pg\nselect * from nlp.docs", ["permission denied for schema nlp"]),
        ("%sql demo select count(*) as n from listings", ["5000"]),
        ("%%sql lake -o trips\nselect * from read_parquet('s3://team-lake/users/alice/"
         "trips.parquet') order by km", ["Lisbon"]),
        ("%%sql spark\nselect id * 2 as twice from range(:n)", ["5 rows · "]),
        ("%sql hive select 40 + 2 as answer", ["42"]),
    ],
    "bob": [
        ("%%sql pg\nselect count(*) as n from nlp.docs", ["10"]),
        ("%%sql pg\nselect * from vision.images", ["permission denied for schema vision"]),
        ("%sql visiondb select 1", ["no connection named 'visiondb'"]),
    ],
}


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_sql_in_a_real_server_with_credentials_the_user_never_saw(wh_hub, who):
    from tests.kernels import run_cell, start_kernel

    token = wh_hub.tokens[who]
    assert wh_hub.spawn(who, token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    wh_hub.wait_ready(who, timeout=300)
    kernel = start_kernel(wh_hub.url, who, token)
    run_cell(wh_hub.url, who, token, "n = 5", kernel=kernel)
    outputs = []
    for code, expected in NOTEBOOK[who]:
        out = run_cell(wh_hub.url, who, token, code, kernel=kernel, timeout=120)
        outputs.append(out)
        assert any(e in out for e in expected), (code, out)
    # the credentials were in the kernel's memory: never in an output, the server's
    # environment, or the grant's answer to anyone else
    creds = run_cell(wh_hub.url, who, token,
                     "from redspot.warehouse.session import default_warehouse\n"
                     "w = default_warehouse()\n"
                     "print('PW', w.credentials._held['pg'].password)", kernel=kernel)
    password = creds.split("PW ", 1)[1].split()[0]
    assert len(password) >= 24
    assert not any(password in out for out in outputs)
    pid = wh_hub.server_model(who)["state"]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().decode(errors="replace")
    assert password not in environ and SPARK_TOKEN not in environ
    wh_hub.stop_server(who)


def test_every_grant_is_logged_for_admins(wh_hub):
    r = ask(wh_hub, "admin", "GET", f"{W}/grants", params={"user": "alice"})
    assert r.status_code == 200, r.text
    grants = r.json()["grants"]
    assert {g["connection"] for g in grants} >= {"pg", "lake", "spark"}
    assert all(g["user"] == "alice" for g in grants)
    pg_grant = next(g for g in grants if g["connection"] == "pg")
    assert pg_grant["kind"] == "postgres-role" and pg_grant["expires"] > time.time()
    assert "granted postgres-role credentials for pg to alice" in wh_hub.log(400)


# --- Ray: a connection opened in the notebook, used where the cell runs ------------------

def test_a_ray_remote_cell_queries_with_the_notebooks_connection(pg, ray_head, tmp_path):
    import subprocess
    import sys
    import textwrap

    from redspot.compute.local import auth_env
    from tests.kernels import RAY_KERNEL as KERNEL

    (tmp_path / "connections.yaml").write_text(f"""
connections:
  mine:
    engine: postgresql
    address: 127.0.0.1:{pg.port}
    database: postgres
    user: postgres
    password_env: PG_PASSWORD
""")
    cells = [
        "import redspot.warehouse\nwh = redspot.warehouse.connect('mine')",
        textwrap.dedent(f"""
            %%ray_remote
            import os
            frame = wh.query("select count(*) as n from vision.images where id > :lo",
                             {{"lo": 100}})
            n = int(frame["n"][0])
            where = os.getpid()
            leaked = any({SUPERUSER_PASSWORD!r} in v for v in os.environ.values())
        """),
        "import os\nout['n'] = n\nout['leaked'] = leaked\nout['elsewhere'] = where != "
        "os.getpid()",
    ]
    head, info = ray_head
    environ = {**os.environ, **auth_env(head.token_path), "RAY_USAGE_STATS_ENABLED": "0",
               "REDSPOT_CONNECTIONS_FILE": str(tmp_path / "connections.yaml"),
               "PG_PASSWORD": SUPERUSER_PASSWORD}
    environ.pop("REDSPOT_WAREHOUSE_URL", None)
    result = subprocess.run([sys.executable, "-c", KERNEL, info.address],
                            input=json.dumps(cells), capture_output=True, text=True,
                            env=environ, timeout=300)
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert "error" not in out, out["error"] + result.stderr[-3000:]
    assert out == {"n": 49900, "leaked": False, "elsewhere": True}
