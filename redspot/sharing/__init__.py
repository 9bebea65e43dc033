"""Sharing between teammates (docs/sharing.md): read-only shares of files and folders,
enforced by the storage (``shares``, ``service``, ``client``), and invitations into
one's server through JupyterHub's own sharing."""
