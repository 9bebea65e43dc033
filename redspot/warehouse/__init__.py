"""SQL from notebooks to the team's warehouse (docs/warehouse.md).

``%%sql`` (``redspot.magics.sql``) in a notebook; in code::

    import redspot.warehouse
    wh = redspot.warehouse.connect("warehouse")
    frame = wh.query("select * from trips where city = :city", {"city": "Lisbon"})

A connection opened in the notebook can be used in ``%%ray_remote`` cells and training
workers: it travels with a short-lived credential for that connection only.

Modules: ``connections`` (the catalog, pure), ``params`` (``:name`` binding, pure),
``engines`` (one adapter per engine), ``client`` (the kernel's client of the warehouse
service), ``session`` (the kernel's connections and queries), ``service`` (the hub's
credentials service), ``demo`` (the demo data set ``redspot up`` ships).
"""

from __future__ import annotations

from .session import WarehouseConnection, connect

__all__ = ["WarehouseConnection", "connect"]
