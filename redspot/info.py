"""What a Redspot server knows about itself, from the environment its spawner set."""

from __future__ import annotations

import os

from . import __version__


def server_info(environ=os.environ) -> dict:
    def number(key):
        value = environ.get(key, "")
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return None

    environment = environ.get("REDSPOT_ENVIRONMENT")
    return {
        "version": __version__,
        "user": environ.get("JUPYTERHUB_USER"),
        "environment": {"id": environment, "tag": environ.get("REDSPOT_ENVIRONMENT_TAG")}
        if environment else None,
        # servers of one machine share it: what it really has (Kubernetes: the profile's)
        "machine": None if environ.get("KUBERNETES_SERVICE_HOST") else _machine(),
        "links": links(environ),
        "profile": {
            "name": environ.get("REDSPOT_PROFILE") or None,
            "cpus": number("REDSPOT_CPUS"),
            "memory": number("REDSPOT_MEMORY"),
            "gpus": number("REDSPOT_GPUS"),
            "gpu_model": environ.get("REDSPOT_GPU_MODEL") or None,
        },
    }


def _machine() -> dict:
    from .spawner.profiles import this_machine

    machine = this_machine()
    return {"cpus": machine.cpus, "memory": machine.memory, "gpus": machine.gpus}


def links(environ=os.environ) -> dict[str, str]:
    """Redspot's pages, as this server's user reaches them (pure): the hub's home, the
    docs, and each service's UI that is on."""
    base = environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/"
    found = {"home": f"{base}hub/home", "docs": f"{base}hub/redspot/docs/"}
    for service in ("models", "environments"):
        if environ.get(f"REDSPOT_{service.upper()}_URL"):
            found[service] = (environ.get(f"REDSPOT_{service.upper()}_PUBLIC_URL")
                              or f"{base}services/{service}/")
    return found
