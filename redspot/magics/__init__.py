"""Redspot's IPython extension, loaded in every kernel of a Redspot server.

``%redspot`` shows the instance profile the server runs on; ``%ray_connect``,
``%ray_status``, ``%ray_disconnect`` and ``%%ray_remote`` (``redspot.magics.ray``) send
cells to the user's Ray cluster; ``%register_model`` and ``%browse_models``
(``redspot.magics.models``) show the model registry's widgets; ``%%ray_train``
(``redspot.magics.train``) trains with the cell as every worker's loop; ``%%sql``
(``redspot.magics.sql``) queries the team's warehouse connections; ``%share``,
``%shares``, ``%unshare`` and ``%copy_shared`` (``redspot.magics.sharing``) share files
and folders with teammates, and invite them into the server.
"""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class

from ..info import server_info


@magics_class
class RedspotMagics(Magics):
    @line_magic
    def redspot(self, line=""):
        """Show the Redspot version and this server's instance profile.

        Example::

            %redspot
        """
        info = server_info()
        profile = info["profile"]
        if not profile["name"]:
            print(f"Redspot {info['version']}: not running in a Redspot server")
            return
        gib = (profile["memory"] or 0) / 1024**3
        gpus = f", {profile['gpus']} × {profile['gpu_model']}" if profile["gpus"] else ""
        print(
            f"Redspot {info['version']} · {profile['name']}: "
            f"{profile['cpus']} vCPU, {gib:g} GiB{gpus}"
        )


def load_ipython_extension(ipython):
    from .models import ModelMagics
    from .ray import RayMagics
    from .sharing import SharingMagics
    from .sql import SQLMagics
    from .train import TrainMagics

    ipython.register_magics(RedspotMagics)
    ipython.register_magics(RayMagics)
    ipython.register_magics(ModelMagics)
    ipython.register_magics(TrainMagics)
    ipython.register_magics(SQLMagics)
    ipython.register_magics(SharingMagics)


def unload_ipython_extension(ipython):
    pass
