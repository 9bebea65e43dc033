"""Redspot's model registry: MLflow's tracking server and registry as a JupyterHub
service, with the hub's identities and per-model permissions (docs/models.md)."""
