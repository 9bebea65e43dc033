"""Lineage tags, from a stand-in environment and a real git repository."""

from __future__ import annotations

import subprocess

from redspot.models.lineage import lineage

ENV = {"JUPYTERHUB_USER": "alice", "JPY_SESSION_NAME": "churn/train.ipynb",
       "REDSPOT_ENVIRONMENT": "team/pytorch", "REDSPOT_ENVIRONMENT_TAG": "env-1a2b",
       "REDSPOT_PROFILE": "g5.xlarge", "REDSPOT_IMAGE": "reg/env@sha256:" + "a" * 64}


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_lineage_from_the_server_environment_and_the_notebooks_repository(tmp_path):
    repo = tmp_path / "churn"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.ipynb").write_text("{}")
    git(repo, "add", "train.ipynb")
    git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "first")
    git(repo, "remote", "add", "origin", "https://alice:s3cret@git.example.com/churn.git")
    commit = git(repo, "rev-parse", "HEAD")

    tags = lineage(ENV, cwd=tmp_path, ray_job_id="02000000", training_run_id="run-7")
    assert tags == {
        "redspot.user": "alice", "redspot.notebook": "churn/train.ipynb",
        "redspot.environment": "team/pytorch", "redspot.environment_tag": "env-1a2b",
        "redspot.image": "reg/env@sha256:" + "a" * 64, "redspot.profile": "g5.xlarge",
        "redspot.git_commit": commit, "redspot.git_dirty": "false",
        "redspot.git_remote": "https://git.example.com/churn.git",  # no credentials
        "redspot.ray_job_id": "02000000", "redspot.training_run_id": "run-7",
    }
    (repo / "train.ipynb").write_text('{"changed": true}')
    assert lineage(ENV, cwd=tmp_path)["redspot.git_dirty"] == "true"


def test_outside_a_repository_and_a_hub_only_what_is_known(tmp_path):
    assert lineage({}, cwd=tmp_path) == {}
    assert lineage({}, user_ns={"__session__": "a.ipynb"}, cwd=tmp_path) == {
        "redspot.notebook": "a.ipynb"}


def test_the_notebook_is_named_as_its_user_knows_it(tmp_path):
    # jupyter-server gives kernels the notebook's absolute path on the server
    home = tmp_path / "home" / "alice"
    (home / "churn").mkdir(parents=True)
    env = {"JPY_SESSION_NAME": str(home / "churn" / "train.ipynb"), "HOME": str(home)}
    assert lineage(env, cwd=home / "churn")["redspot.notebook"] == "churn/train.ipynb"
    elsewhere = {**env, "JPY_SESSION_NAME": "/srv/shared/x.ipynb"}
    assert lineage(elsewhere, cwd=home)["redspot.notebook"] == "/srv/shared/x.ipynb"


def test_the_form_shows_the_whole_lineage():
    from redspot.widgets.register import lineage_html

    long = "project/" + "deeply/" * 10 + "Untitled.ipynb"
    shown = lineage_html({"redspot.notebook": long, "redspot.user": "alice"})
    assert long in shown and "<td" in shown
    assert lineage_html({}) == "<small>Lineage: none found</small>"


def test_the_warehouse_queries_the_notebook_ran_are_in_the_lineage(tmp_path):
    import hashlib
    import json

    from redspot.warehouse.session import Query

    def query(connection, sql, at):
        return Query(connection=connection, engine="postgresql", sql=sql,
                     sha256=hashlib.sha256(sql.encode()).hexdigest(), rows=10, seconds=0.1,
                     truncated=False, at=at)

    long = "select * from trips where " + " and ".join(f"c{i} = :p{i}" for i in range(200))
    ran = [query("warehouse", "select 1", 1), query("lake", long, 2),
           query("warehouse", "select 1", 3)]
    tags = lineage({}, cwd=tmp_path, queries=ran)
    assert tags["redspot.data_connections"] == "lake,warehouse"
    entries = json.loads(tags["redspot.data_queries"])
    # each distinct query once, its text cut, its hash of the whole
    assert [e["sha256"] for e in entries] == [ran[0].sha256, ran[1].sha256]
    assert entries[0]["at"] == 3
    assert len(entries[1]["sql"]) == 300 and entries[1]["sha256"] == hashlib.sha256(
        long.encode()).hexdigest()
    # many queries: the newest that fit, still valid JSON
    many = [query("w", f"select {i} /* {'x' * 200} */", i) for i in range(100)]
    kept = json.loads(lineage({}, cwd=tmp_path, queries=many)["redspot.data_queries"])
    assert 0 < len(kept) < 100 and kept[-1]["sql"].startswith("select 99")


def test_lineage_reads_the_kernels_warehouse_history(tmp_path, monkeypatch):
    import redspot.warehouse.session as session
    from redspot.warehouse.session import Query, Warehouse

    warehouse = Warehouse(None)
    warehouse.history.append(Query(connection="demo", engine="duckdb", sql="select 1",
                                   sha256="ab" * 32, rows=1, seconds=0.01, truncated=False))
    monkeypatch.setattr(session, "_default", warehouse)
    assert lineage({}, cwd=tmp_path)["redspot.data_connections"] == "demo"
    monkeypatch.setattr(session, "_default", None)
    assert "redspot.data_connections" not in lineage({}, cwd=tmp_path)
