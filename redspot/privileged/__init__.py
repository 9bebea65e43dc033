"""Redspot's privileged helper: the one place that acts as root on accounts and on
folders tenants can write (see ``ops.py`` for the operations, ``server.py`` for who may
ask for which, ``safefs.py`` for how paths are walked, ``accounts.py`` for names)."""
