"""The server's endpoints for the JupyterLab extension's panel: each asks the user's Ray
cluster, the environments service, the registry or the warehouse service with the
server's own token (which never reaches the browser) and answers JSON.

``GET /redspot/api/ray``
    my cluster: ``{kind, name, state, can_start, dashboard, nodes, resources, idle_seconds,
    idle_timeout, runs, error}``; ``state`` is stopped, starting, running or stopping.
``POST /redspot/api/ray`` ``{"action": "start" | "stop"}``
    starts (with this server's profile's CPUs and GPUs) or stops my local cluster; 202.
``GET /redspot/api/environments``
    the environments I may use (mine and the team's) with their build state.
``GET /redspot/api/models``
    the registered models I may read, with their owner, latest version and aliases.
``GET /redspot/api/warehouse``; ``…/warehouse/<name>/schemas``; ``…/tables?schema=``;
``…/columns?schema=&table=``
    the warehouse connections I may use, and their catalog.
``GET /redspot/api/grantees``
    the hub's users and groups I may share with (the Share… dialog's pickers).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.parse

from jupyter_server.base.handlers import APIHandler
from tornado import httpclient, web

from ..compute.local import LocalRayHead

#: Ray's own resource names the panel shows, in its order.
SHOWN_RESOURCES = ("CPU", "GPU", "memory")


def _bad_request(message: str) -> web.HTTPError:
    return web.HTTPError(400, message)


class _Starting:
    """A start or stop of the user's local head in progress, in this server (one at a
    time: a second click while one runs is answered with the state)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.action: str | None = None
        self.error: str | None = None

    def run(self, action: str, fn) -> bool:
        if not self.lock.acquire(blocking=False):
            return False
        self.action, self.error = action, None

        def work():
            try:
                fn()
            except Exception as e:  # reported by the next GET
                self.error = f"{action} failed: {e}"
            finally:
                self.action = None
                self.lock.release()

        threading.Thread(target=work, name=f"redspot-ray-{action}", daemon=True).start()
        return True


_local = _Starting()


def _number(name: str) -> float | None:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None


class RayHandler(APIHandler):
    """My Ray cluster: its state, resources and runs; Start and Stop for a local one."""

    @web.authenticated
    async def get(self):
        self.finish(json.dumps(await self.state()))

    @web.authenticated
    async def post(self):
        body = self.get_json_body()
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ("start", "stop"):
            raise _bad_request('expected {"action": "start"} or {"action": "stop"}')
        if os.environ.get("REDSPOT_RAY_CLUSTER"):
            raise web.HTTPError(409, "your Ray cluster on Kubernetes is made with your server "
                                     "and stops with it: it cannot be started or stopped here")
        head = LocalRayHead()
        if action == "start":
            cpus, gpus = _number("REDSPOT_CPUS"), _number("REDSPOT_GPUS")
            _local.run("start", lambda: head.start(cpus=cpus,
                                                   gpus=int(gpus) if gpus else None))
        else:
            _local.run("stop", head.stop)
        self.set_status(202)
        self.finish(json.dumps(await self.state()))

    async def state(self) -> dict:
        from .dashboard import user_dashboard

        kube = os.environ.get("REDSPOT_RAY_CLUSTER")
        timeout = _number("REDSPOT_RAY_IDLE_TIMEOUT")
        model = {"kind": "kuberay" if kube else "local",
                 "name": f"your Ray cluster {kube}" if kube else "your Ray cluster",
                 "state": "stopped", "can_start": not kube,
                 "dashboard": None, "nodes": 0, "resources": {}, "idle_seconds": None,
                 "idle_timeout": timeout, "runs": [], "error": None}
        if not kube:
            head = LocalRayHead()
            if _local.action:
                model["state"] = "starting" if _local.action == "start" else "stopping"
            model["idle_seconds"] = await asyncio.to_thread(head.idle_seconds)
            model["error"] = _local.error
            if _local.action == "start":
                # what %ray_connect says too: the estimate from the last start
                model["expected_seconds"] = head.expected_start_seconds()
        dashboard = await asyncio.to_thread(user_dashboard)
        if dashboard is None or model["state"] in ("starting", "stopping"):
            return model
        base, token = dashboard
        try:
            nodes = await _dashboard_json(base, token, "/nodes?view=summary")
            status = await _dashboard_json(base, token, "/api/cluster_status")
            alive = "&filter_keys=state&filter_predicates=%3D&filter_values="
            tasks = await _dashboard_json(
                base, token, "/api/v0/tasks?limit=100&detail=true" + alive + "RUNNING")
            actors = await _dashboard_json(
                base, token, "/api/v0/actors?limit=1000&detail=true" + alive + "ALIVE")
            jobs = await _dashboard_json(base, token, "/api/jobs/")
        except OSError as e:
            model["state"] = "unknown" if kube else "starting"
            model["error"] = None if not kube else f"the cluster's dashboard does not answer: {e}"
            return model
        model["state"] = "running"
        model["dashboard"] = "redspot/ray/dashboard/"
        summary = (nodes.get("data") or {}).get("summary") or []
        model["nodes"] = len([n for n in summary
                              if (n.get("raylet") or {}).get("state", "ALIVE") == "ALIVE"])
        model["resources"] = resources(summary, status)
        model["runs"] = runs(tasks, actors, jobs)
        return model


async def _dashboard_json(base: str, token: str, path: str):
    request = httpclient.HTTPRequest(base + path, request_timeout=10,
                                     headers={"X-Ray-Authorization": f"Bearer {token}"})
    try:
        response = await httpclient.AsyncHTTPClient().fetch(request)
    except httpclient.HTTPClientError as e:
        raise OSError(f"{path}: HTTP {e.code}") from None
    return json.loads(response.body)


def resources(summary: list[dict], status: dict) -> dict:
    """What is in use of what the cluster has (pure): Ray's usage report when it has one
    (it fills in a few seconds after the start), else the nodes' totals, none used."""
    report = ((((status.get("data") or {}).get("clusterStatus") or {})
               .get("loadMetricsReport") or {}).get("usage") or {})
    shown = {}
    for name in SHOWN_RESOURCES:
        if name in report:
            used, total = report[name]
        else:
            total = sum(((n.get("raylet") or {}).get("resourcesTotal") or {}).get(name, 0)
                        for n in summary)
            used = 0
        if total or name != "GPU":
            shown[name] = {"used": used, "total": total}
    return shown


def submitted_and_running(job: dict) -> bool:
    """A job of Ray's Jobs API that was submitted (not a kernel's own connection) and
    has not ended."""
    return job.get("type", "SUBMISSION") == "SUBMISSION" and \
        job.get("status") in ("PENDING", "RUNNING")


def runs(tasks: dict, actors: dict, jobs: list) -> list[dict]:
    """What runs on the cluster (pure): ``%%ray_remote`` cells (tasks of ``run_cell``),
    ``%%ray_train`` runs (a Ray Train controller and its workers; a submitted one is its
    job) and other submitted jobs. The kernels' own connections (Ray's driver jobs) are
    not runs."""
    found = []
    for task in _result(tasks):
        name = task.get("func_or_class_name") or task.get("name") or ""
        if name.rsplit(".", 1)[-1] != "run_cell":
            continue
        found.append({"kind": "remote", "id": task.get("task_id", ""), "name": "cell",
                      "state": "running", "started": _seconds(task.get("start_time_ms")),
                      "progress": None})
    submitted = {}
    for job in jobs if isinstance(jobs, list) else []:
        if not submitted_and_running(job):
            continue
        train = (job.get("metadata") or {}).get("redspot") == "ray_train"
        run = {"kind": "train" if train else "job",
               "id": job.get("submission_id") or job.get("job_id") or "",
               "name": job.get("submission_id") or job.get("entrypoint", "")[:60],
               "state": job["status"].lower(), "started": _seconds(job.get("start_time")),
               "progress": None}
        found.append(run)
        if job.get("job_id"):
            submitted[job["job_id"]] = run
    workers: dict[str, int] = {}
    for actor in _result(actors):
        if actor.get("class_name") == "RayTrainWorker":
            workers[actor.get("job_id", "")] = workers.get(actor.get("job_id", ""), 0) + 1
    for actor in _result(actors):
        if actor.get("class_name") != "TrainController":
            continue
        job = actor.get("job_id", "")
        run = submitted.get(job)
        if run is None:  # a %%ray_train cell of a kernel
            # the controller's running method started with the run (actors keep no time)
            started = min((_seconds(t.get("start_time_ms")) or time.time()
                           for t in _result(tasks) if t.get("actor_id") == actor.get("actor_id")),
                          default=None)
            run = {"kind": "train", "id": actor.get("actor_id", ""), "name": "cell",
                   "state": "running", "started": started, "progress": None}
            found.append(run)
        run["workers"] = workers.get(job, 0)
    for run in found:
        parts = []
        if run.get("workers"):
            parts.append(f"{run['workers']} worker{'s' if run['workers'] != 1 else ''}")
        if run["started"]:
            parts.append(f"for {_duration(time.time() - run['started'])}")
        run["progress"] = ", ".join(parts) or None
    return found


def _result(answer: dict) -> list[dict]:
    """The rows of an answer of Ray's state API."""
    return ((answer.get("data") or {}).get("result") or {}).get("result") or []


def _seconds(ms) -> float | None:
    try:
        return float(ms) / 1000 if ms else None
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class EnvironmentsHandler(APIHandler):
    @web.authenticated
    async def get(self):
        from ..environments.client import EnvironmentLookupError, EnvironmentsClient

        client = EnvironmentsClient()
        if not client.url:
            raise web.HTTPError(404, "the environments service is not on in this Redspot")
        try:
            listed = await asyncio.to_thread(client.environments)
        except (EnvironmentLookupError, KeyError) as e:
            raise web.HTTPError(502, str(e)) from None
        me = os.environ.get("JUPYTERHUB_USER")
        self.finish(json.dumps({"environments": [
            {"id": e["id"], "owner": e["owner"], "name": e["name"], "state": e["status"],
             "mine": e["owner"] == me, "updated": _epoch(e.get("created")),
             "error": e.get("error")}
            for e in listed]}))


def _epoch(value) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class ModelsHandler(APIHandler):
    @web.authenticated
    async def get(self):
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            raise web.HTTPError(404, "the model registry is not on in this Redspot")
        try:
            listed = await asyncio.to_thread(_models)
        except OSError as e:
            raise web.HTTPError(502, f"the model registry: {e}") from None
        self.finish(json.dumps({"models": listed}))


def _models() -> list[dict]:
    """Every model I may read: its owner (Redspot's records), latest version and aliases
    (MLflow's search), and its page in the registry's UI."""
    import requests

    from ..models.client import RegistrationError, Transfer, access, tracking_uri, ui_url

    try:
        owners = {m["name"]: m for m in access()["models"]}
    except RegistrationError as e:
        raise OSError(str(e)) from None
    transfer = Transfer(tracking_uri())
    found, token = [], None
    while True:
        params = {"max_results": 1000, **({"page_token": token} if token else {})}
        r = requests.get(f"{transfer.tracking}/api/2.0/mlflow/registered-models/search",
                         params=params, headers=transfer.headers, verify=transfer.verify,
                         timeout=60)
        if r.status_code != 200:
            raise OSError(f"HTTP {r.status_code}: {r.text[:200]}")
        data = r.json()
        found += data.get("registered_models", [])
        token = data.get("next_page_token")
        if not token:
            break
    me = os.environ.get("JUPYTERHUB_USER")
    models = []
    for m in found:
        acl = owners.get(m["name"], {})
        versions = [v.get("version") for v in m.get("latest_versions", [])]
        latest = max(versions, key=lambda v: int(v), default=None) if versions else None
        models.append({
            "name": m["name"], "owner": acl.get("owner"), "mine": acl.get("owner") == me,
            "private": bool(acl.get("private")), "latest_version": latest,
            "aliases": {a["alias"]: a["version"] for a in m.get("aliases", [])},
            "url": ui_url(m["name"]),
        })
    return sorted(models, key=lambda m: m["name"].lower())


class WarehouseHandler(APIHandler):
    """The connections I may use and their catalog, asked with the credentials the
    warehouse service gives this server's user (kept in this server's memory)."""

    _warehouse = None
    _lock = threading.Lock()  # the engines' use

    @classmethod
    def warehouse(cls):
        from ..warehouse.client import WarehouseService
        from ..warehouse.session import Warehouse

        if cls._warehouse is None:  # made in the event loop's thread, once
            cls._warehouse = Warehouse(WarehouseService.from_environment(), ask=_no_prompt)
        return cls._warehouse

    @classmethod
    def call(cls, fn, *args):
        """One catalog question at a time (an engine's connection is not shared by
        threads)."""
        with cls._lock:
            return fn(*args)

    @web.authenticated
    async def get(self, name=None, what=None):
        from ..warehouse.connections import ConnectionError as UnknownConnection

        warehouse = self.warehouse()
        if name is None:
            connections = await asyncio.to_thread(self.call, warehouse.connections, True)
            self.finish(json.dumps({"connections": [
                {"name": c.name, "engine": c.engine, "description": c.description}
                for c in connections.values() if c.source != "builtin"]}))
            return
        name = urllib.parse.unquote(name)
        schema = self.get_query_argument("schema", None)
        table = self.get_query_argument("table", None)
        try:
            await asyncio.to_thread(self.call, warehouse.connection, name)
        except UnknownConnection as e:  # no such connection, or not one of mine
            raise web.HTTPError(404, str(e)) from None
        try:
            engine = await asyncio.to_thread(self.call, warehouse.engine, name)
            if what == "schemas":
                answer = {"schemas": await asyncio.to_thread(self.call, engine.schemas)}
            elif what == "tables":
                listed = await asyncio.to_thread(self.call, engine.tables, schema)
                answer = {"tables": [t for s, t in listed if schema is None or s == schema]}
            else:
                if not table:
                    raise _bad_request("columns: give ?table= (and ?schema=)")
                qualified = f"{schema}.{table}" if schema else table
                columns = await asyncio.to_thread(self.call, engine.columns, qualified)
                answer = {"columns": [{"name": c, "type": t} for c, t in columns]}
        except web.HTTPError:
            raise
        except UnknownConnection as e:  # its credentials cannot be had here
            raise web.HTTPError(409, str(e)) from None
        except Exception as e:  # the engine's own refusal, credentials masked
            raise web.HTTPError(502, f"{name}: {e}") from None
        self.finish(json.dumps(answer))


def _no_prompt(question: str) -> str:
    raise web.HTTPError(409, "this connection asks for your password: browse it from a notebook "
                          "(%%sql --tables), where you can type it")


class GranteesHandler(APIHandler):
    @web.authenticated
    async def get(self):
        from ..sharing.client import SharingClient, SharingError

        client = SharingClient.from_environment()
        if client is None:
            raise web.HTTPError(404, "the sharing service is not on in this Redspot")
        try:
            self.finish(json.dumps(await asyncio.to_thread(client.grantees)))
        except SharingError as e:
            raise web.HTTPError(e.status if 400 <= e.status < 500 else 502, str(e)) from None
