"""The warehouse's pure parts: parameters, the connection catalog, results, secrets."""

from __future__ import annotations

import pyarrow as pa
import pytest

from redspot.warehouse import params
from redspot.warehouse.connections import (
    ConnectionError,
    check_settings,
    from_settings,
    parse_personal,
)
from redspot.warehouse.engines.base import Credential, first_rows, mask


@pytest.mark.parametrize("style, text, order", [
    ("pyformat", "select %(a)s, ':b', %(c)s, %(a)s", ["a", "c"]),
    ("dollar", "select $a, ':b', $c, $a", ["a", "c"]),
    ("numeric", "select $1, ':b', $2, $1", ["a", "c"]),
    ("qmark", "select ?, ':b', ?, ?", ["a", "c", "a"]),
    ("colon", "select :a, ':b', :c, :a", ["a", "c"]),
])
def test_parameters_become_the_drivers_placeholders(style, text, order):
    assert params.bind("select :a, ':b', :c, :a", style) == (text, order)


def test_parameters_are_not_found_in_literals_comments_casts_or_quoted_names():
    sql = """select x::int, ':nope', "col:nope", `b:nope`, $$ :nope $$, $tag$ :nope $tag$
             -- :nope
             /* :nope */ from t where a = :yes and b = 'it''s :nope' and c=:yes2"""
    assert params.names(sql) == ["yes", "yes2"]


def test_a_percent_is_doubled_for_pyformat_drivers_only():
    assert params.bind("select '%x', :a % 2", "pyformat") == (
        "select '%%x', %(a)s %% 2", ["a"])
    assert params.bind("select '%x', :a % 2", "dollar")[0] == "select '%x', $a % 2"


def test_parameter_values_come_from_explicit_values_then_the_notebook():
    assert params.values(["a", "b", "a"], {"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    with pytest.raises(params.ParameterError, match=r":city, :day: define them"):
        params.values(["city", "day"], {})


def test_personal_connections_hold_no_secret():
    good = parse_personal("""
connections:
  mine:
    engine: postgresql
    address: db:5432
    user: me
    password: prompt
  other:
    engine: trino
    address: trino:8080
    password_env: TRINO_PASSWORD
""")
    assert good["mine"].credentials.kind == "prompt"
    assert good["other"].credentials.kind == "env"
    assert good["other"].credentials.settings == {"variable": "TRINO_PASSWORD"}
    assert good["mine"].source == "personal"
    with pytest.raises(ConnectionError, match="holds no secret"):
        parse_personal("connections: {x: {engine: postgresql, password: hunter2}}")
    with pytest.raises(ConnectionError, match="options.api_token: a personal"):
        parse_personal("connections: {x: {engine: trino, options: {api_token: abc}}}")
    with pytest.raises(ConnectionError, match="'local' is reserved"):
        parse_personal("connections: {local: {engine: duckdb}}")
    with pytest.raises(ConnectionError, match="engine: 'mysql' is not allowed; allowed: duckdb"):
        parse_personal("connections: {x: {engine: mysql}}")
    with pytest.raises(ConnectionError, match="unknown key 'passwd'"):
        parse_personal("connections: {x: {engine: duckdb, passwd: x}}")
    with pytest.raises(ConnectionError, match="is not YAML"):
        parse_personal("connections: [")


def test_operator_connections_are_checked_beyond_their_schema():
    problems = check_settings({
        "a": {"engine": "hive", "groups": ["*"], "credentials": {"kind": "postgres-role"}},
        "b": {"engine": "duckdb", "groups": ["*"], "credentials": {"kind": "static"}},
    })
    assert problems == [
        "warehouse.connections.a.credentials.kind: 'postgres-role' does not serve hive; "
        "for hive: none, static",
        "warehouse.connections.a.credentials.admin_dsn_file: required for kind postgres-role",
        "warehouse.connections.a.address: required for hive (host:port)",
        "warehouse.connections.b.credentials.secret_file: required for kind static",
    ]


def test_a_connection_is_for_its_groups_and_admins():
    c = from_settings("wh", {"engine": "postgresql", "address": "db", "groups": ["vision"]})
    assert c.allows(["vision", "x"]) and not c.allows(["nlp"])
    assert c.allows([], admin=True)
    assert from_settings("all", {"engine": "duckdb", "groups": ["*"]}).allows([])
    assert c.host_port(5432) == ("db", 5432)
    assert c.public()["credentials"] == {"kind": "none", "ttl": 3600}


def test_first_rows_takes_whole_batches_and_says_when_it_cut():
    batches = [pa.record_batch([pa.array(range(i, i + 10))], names=["x"])
               for i in range(0, 50, 10)]
    read = []

    def stream():
        for b in batches:
            read.append(b)
            yield b

    result = first_rows(stream(), 25)
    assert result.table.num_rows == 25 and result.truncated
    assert len(read) == 3  # the rest of the stream was never read
    assert result.table.column("x").to_pylist() == list(range(25))
    exact = first_rows(iter(batches[:2]), 20)
    assert exact.table.num_rows == 20 and not exact.truncated
    assert first_rows(iter(batches), 20).truncated  # 20 of 50: the next batch says so
    assert first_rows(iter(batches), None).table.num_rows == 50


def test_errors_never_show_a_credential():
    credential = Credential(user="rs_alice", password="s3cr3t-pass", token="tok-12345")
    text = ("could not connect postgresql://rs_alice:s3cr3t-pass@db/x with tok-12345 "
            "and postgresql://u:other@h/db")
    masked = mask(text, credential)
    assert "s3cr3t" not in masked and "tok-12345" not in masked and "other" not in masked
    assert "rs_alice" in masked
    assert "s3cr3t" not in repr(credential)


def test_s3_credentials_are_limited_to_their_prefix():
    from redspot.warehouse.sts import session_policy, user_prefix

    policy = session_policy("lake", "users/alice/")
    allow_objects, allow_list = policy["Statement"]
    assert allow_objects["Action"] == ["s3:GetObject"]
    assert allow_objects["Resource"] == ["arn:aws:s3:::lake/users/alice/*"]
    assert allow_list["Condition"] == {"StringLike": {"s3:prefix": ["users/alice/*"]}}
    assert "s3:PutObject" in session_policy("lake", "x/", write=True)["Statement"][0][
        "Action"]
    assert user_prefix("users/{user}/", "al/ice") == "users/al_ice/"


def test_postgres_role_names_and_memberships():
    from redspot.warehouse.pgroles import RoleError, role_name, wanted_roles

    assert role_name("rs_{user}", "Alice.Smith") == "rs_alice_smith"
    with pytest.raises(RoleError):
        role_name("{user}", "9lives")
    grants = {"*": ["reader"], "vision": ["vision_reader"], "nlp": ["nlp_reader"]}
    assert wanted_roles(grants, ["vision"]) == {"reader", "vision_reader"}
    assert wanted_roles(grants, []) == {"reader"}


def test_the_operators_secrets_are_read_and_checked(tmp_path):
    from redspot.warehouse.secrets import SecretsError, read_secrets

    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://admin:pw@db/x\n")
    static = tmp_path / "static.yaml"
    static.write_text("token: shared-token\n")
    found = read_secrets({
        "pg": {"credentials": {"kind": "postgres-role", "admin_dsn_file": str(dsn)}},
        "spark": {"credentials": {"kind": "static", "secret_file": str(static)}},
        "none": {"credentials": {"kind": "none"}}})
    assert found == {"pg": {"admin_dsn": "postgresql://admin:pw@db/x"},
                     "spark": {"token": "shared-token"}}
    static.write_text("tokn: typo\n")
    with pytest.raises(SecretsError, match="may hold user, password and token"):
        read_secrets({"s": {"credentials": {"kind": "static", "secret_file": str(static)}}})
    with pytest.raises(SecretsError, match="cannot read"):
        read_secrets({"p": {"credentials": {"kind": "postgres-role",
                                            "admin_dsn_file": str(tmp_path / "none")}}})


@pytest.mark.parametrize("line, head, body", [
    ("demo select 1", ["demo"], ["select", "1"]),
    ("select 1", [], ["select", "1"]),
    ("-o x --limit 5 demo select * from t", ["-o", "x", "--limit", "5", "demo"],
     ["select", "*", "from", "t"]),
    ("demo --tables", ["demo", "--tables"], []),
    ("--tables sales* demo", ["--tables", "sales*", "demo"], []),
    ("nope select 1", ["nope"], ["select", "1"]),
    ("--connections", ["--connections"], []),
])
def test_the_line_form_splits_options_and_connection_from_sql(line, head, body):
    from redspot.magics.sql import _split_line

    assert _split_line(line.split(), {"demo": object(), "local": object()}) == (head, body)


def test_sql_magics_expand_nothing_and_bind_notebook_variables(monkeypatch, tmp_path):
    """``%%sql local``: DuckDB on the notebook's own frames, no server needed."""
    import pandas as pd

    import redspot.warehouse.session as session
    from tests.kernels import ipython_shell

    monkeypatch.delenv("REDSPOT_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("REDSPOT_CONNECTIONS_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setattr(session, "_default", None)
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "redspot.magics")
    ip.user_ns.update(x="expanded!", trips=pd.DataFrame({"km": [1.5, 3.0, 7.25]}),
                      floor=2)
    ip.run_cell("%%sql local -o got\nselect '{x}' as a, '$x' as b, count(*) as n "
                "from trips where km > :floor")
    assert ip.user_ns["got"].to_dict("records") == [{"a": "{x}", "b": "$x", "n": 2}]
    ip.run_cell("%sql local -o line --limit 1 select * from trips order by km")
    assert ip.user_ns["line"]["km"].tolist() == [1.5]
    # the line's SQL as written: its quotes and spaces are SQL's
    ip.run_cell("%sql local -o quoted select 'a  b' as s, \"km\" from trips limit 1")
    assert ip.user_ns["quoted"].to_dict("records") == [{"s": "a  b", "km": 1.5}]
    result = ip.run_cell("%sql local select :missing")
    assert "no value for the parameter :missing" in str(result.error_in_exec)
    result = ip.run_cell("%sql local --params 'floor=7' -o p select count(*) as n from trips "
                         "where km > :floor")
    assert ip.user_ns["p"]["n"].iloc[0] == 1
    monkeypatch.setattr(session, "_default", None)
