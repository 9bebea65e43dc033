"""The model registry as a JupyterHub managed service: MLflow's server, guarded.

    MLFLOW_BACKEND_STORE_URI=… MLFLOW_ARTIFACTS_DESTINATION=… \
    python -m redspot.models.service --data-dir DIR

Runs ``mlflow server --app-name redspot`` (see ``app.py``) on the address the hub gave
the service (``$JUPYTERHUB_SERVICE_URL``), with one worker and MLflow's job runner off
(about 540 MB instead of 2.5 GB). By default the tracking and registry store is SQLite
and artifacts are files, both in DIR; on Kubernetes a PostgreSQL URI and an ``s3://``
destination come from the configuration, through the environment (MLflow's own
variables): a URI may hold a password, and a command line is seen by every account.
MLflow serves the artifacts itself (``--serve-artifacts``): clients never need the
store's credentials.

MLflow's command forwards SIGTERM to its uvicorn server, so stopping the hub stops it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..hub.leftovers import record_service


def store_env(data_dir: Path, environ: dict) -> dict[str, str]:
    """Where MLflow keeps runs, models and artifacts, as MLflow's own variables (pure):
    the operator's (from the environment) or files in ``data_dir``."""
    backend = environ.get("MLFLOW_BACKEND_STORE_URI") or f"sqlite:///{data_dir / 'mlflow.sqlite'}"
    return {
        "MLFLOW_BACKEND_STORE_URI": backend,
        # said, so that MLflow does not announce at every start that it chose the same
        "MLFLOW_REGISTRY_STORE_URI": environ.get("MLFLOW_REGISTRY_STORE_URI") or backend,
        "MLFLOW_ARTIFACTS_DESTINATION": environ.get("MLFLOW_ARTIFACTS_DESTINATION")
        or str(data_dir / "artifacts"),
    }


def command(service_url: str, mlflow: str) -> list[str]:
    """The ``mlflow server`` command line (pure; no secret on it: the stores come from
    ``store_env``)."""
    url = urlparse(service_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    return [
        mlflow, "server", "--app-name", "redspot",
        "--host", host, "--port", str(port), "--workers", "1",
        "--serve-artifacts",
        # the Host it is told (``app.own_host``): said, so that it does not advise at every
        # start how to open itself to other hosts
        "--allowed-hosts", f"{host}:{port}",
        # stopping the hub does not wait for browsers' idle keep-alive connections
        "--uvicorn-opts", "--timeout-graceful-shutdown 1",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    args = parser.parse_args(argv)

    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not service_url:
        parser.error("JUPYTERHUB_SERVICE_URL is not set: run me as a JupyterHub service")
    os.umask(0o077)
    args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stores = store_env(args.data_dir, os.environ)
    if not os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"):
        (args.data_dir / "artifacts").mkdir(exist_ok=True)
    secret = args.data_dir / "cookie-secret"
    if not secret.exists():  # browser sessions outlive restarts of the service
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    env = {
        **os.environ,
        **stores,
        "REDSPOT_MODELS_COOKIE_SECRET_FILE": str(secret),
        "REDSPOT_MODELS_PERMISSIONS_DB": str(args.data_dir / "permissions.sqlite"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # MLflow's own use of a deprecated Starlette module: not the operator's to act on
        "PYTHONWARNINGS": ",".join(filter(None, [
            os.environ.get("PYTHONWARNINGS"),
            "ignore:starlette.middleware.wsgi is deprecated:UserWarning"])),
        # MLflow's server and UI report usage to MLflow's makers unless told not to
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    mlflow = str(Path(sys.executable).parent / "mlflow")
    cmd = command(service_url, mlflow)
    record_service(args.data_dir)  # this pid, MLflow's after the exec: stopped by a next
    os.execve(mlflow, cmd, env)    # hub if this one's hub is killed


if __name__ == "__main__":
    main()
