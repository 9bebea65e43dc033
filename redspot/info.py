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

    return {
        "version": __version__,
        "user": environ.get("JUPYTERHUB_USER"),
        "profile": {
            "name": environ.get("REDSPOT_PROFILE") or None,
            "cpus": number("REDSPOT_CPUS"),
            "memory": number("REDSPOT_MEMORY"),
            "gpus": number("REDSPOT_GPUS"),
            "gpu_model": environ.get("REDSPOT_GPU_MODEL") or None,
        },
    }
