"""Redspot: a multi-tenant JupyterHub distribution for machine-learning teams."""

__version__ = "0.1.0"
