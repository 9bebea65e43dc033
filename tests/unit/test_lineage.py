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
