"""The pure parts of the JupyterLab panel's server endpoints: what Ray's answers become,
and the links a server gives its user."""

from __future__ import annotations

import time

from redspot.info import links
from redspot.serverextension.platform import resources, runs
from redspot.serverextension.sharing import invitations


def _rows(*rows):
    return {"data": {"result": {"result": list(rows)}}}


def test_resources_use_rays_report_and_fall_back_to_the_nodes_totals():
    summary = [{"raylet": {"state": "ALIVE",
                           "resourcesTotal": {"CPU": 4.0, "memory": 8e9, "GPU": 0}}}]
    assert resources(summary, {}) == {"CPU": {"used": 0, "total": 4.0},
                                      "memory": {"used": 0, "total": 8e9}}
    status = {"data": {"clusterStatus": {"loadMetricsReport": {"usage": {
        "CPU": [1.0, 4.0], "GPU": [1.0, 2.0], "memory": [0, 8e9]}}}}}
    assert resources(summary, status) == {"CPU": {"used": 1.0, "total": 4.0},
                                          "GPU": {"used": 1.0, "total": 2.0},
                                          "memory": {"used": 0, "total": 8e9}}


def test_runs_are_cells_trainings_and_submitted_jobs_not_the_kernels_connections():
    now_ms = time.time() * 1000
    tasks = _rows(
        {"task_id": "t1", "func_or_class_name": "redspot.compute.remote.run_cell",
         "start_time_ms": now_ms - 75_000},
        {"task_id": "t2", "func_or_class_name": "other_function", "start_time_ms": now_ms},
        {"task_id": "t3", "func_or_class_name": "TrainController.run", "actor_id": "c1",
         "start_time_ms": now_ms - 5_000},
    )
    actors = _rows(
        {"actor_id": "c1", "class_name": "TrainController", "job_id": "01000000"},
        {"actor_id": "w1", "class_name": "RayTrainWorker", "job_id": "01000000"},
        {"actor_id": "w2", "class_name": "RayTrainWorker", "job_id": "01000000"},
        {"actor_id": "c2", "class_name": "TrainController", "job_id": "02000000"},
        {"actor_id": "w3", "class_name": "RayTrainWorker", "job_id": "02000000"},
    )
    jobs = [
        {"type": "DRIVER", "job_id": "01000000", "status": "RUNNING",
         "entrypoint": "python -m ipykernel"},
        {"type": "SUBMISSION", "job_id": "02000000", "submission_id": "train-abc",
         "status": "RUNNING", "metadata": {"redspot": "ray_train"},
         "start_time": now_ms - 3_000},
        {"type": "SUBMISSION", "submission_id": "etl", "status": "PENDING",
         "entrypoint": "python etl.py"},
        {"type": "SUBMISSION", "submission_id": "old", "status": "SUCCEEDED"},
    ]
    found = runs(tasks, actors, jobs)
    assert [(r["kind"], r["id"], r["name"], r["state"]) for r in found] == [
        ("remote", "t1", "cell", "running"),
        ("train", "train-abc", "train-abc", "running"),
        ("job", "etl", "etl", "pending"),
        ("train", "c1", "cell", "running"),
    ]
    progress = {r["id"]: r["progress"] for r in found}
    assert progress["t1"] in ("for 1 min 15 s", "for 1 min 16 s")
    assert progress["train-abc"].startswith("1 worker, for ")
    assert progress["c1"].startswith("2 workers, for ")
    assert progress["etl"] is None


def test_the_links_follow_the_base_url_and_the_services_that_are_on():
    environ = {"JUPYTERHUB_BASE_URL": "/team/", "REDSPOT_MODELS_URL": "http://127.0.0.1:1/",
               "REDSPOT_ENVIRONMENTS_URL": "http://127.0.0.1:2/",
               "REDSPOT_ENVIRONMENTS_PUBLIC_URL": "https://environments.hub.example/"}
    assert links(environ) == {"home": "/team/hub/home", "docs": "/team/hub/redspot/docs/",
                              "models": "/team/services/models/",
                              "environments": "https://environments.hub.example/"}
    assert links({}) == {"home": "/hub/home", "docs": "/hub/redspot/docs/"}


def test_invitations_are_who_not_the_hubs_records():
    items = [{"server": {"name": ""}, "scopes": ["access:servers!server=alice/"],
              "user": {"name": "bob"}, "group": None},
             {"server": {"name": ""}, "scopes": [], "user": None, "group": {"name": "vision"}}]
    assert invitations(items) == [{"kind": "user", "name": "bob"},
                                  {"kind": "group", "name": "vision"}]
    assert invitations([]) == []
