"""JupyterHub as ``redspot up`` runs it.

Three differences from JupyterHub's own application, all about what the operator and
the first users see while it starts and stops:

- the hub's own pages answer as soon as the hub listens: JupyterHub adds the hub's
  route to the proxy only after every service has started (the model registry takes
  several seconds), and until then the address answered a bare "Not Found";
- once the hub answers, it says so, with the address (``ready_message``);
- on stop, the services stop together instead of one after the other.
"""

from __future__ import annotations

import asyncio

from jupyterhub.app import JupyterHub
from traitlets import Unicode


class RedspotHub(JupyterHub):
    ready_message = Unicode(
        "",
        help="Printed once the hub answers at its public address. Set by ``redspot up``.",
    ).tag(config=True)

    _hub_routed = False

    async def start_service(self, service_name, service, ssl_context=None):
        if not self._hub_routed:
            # the hub listens already: route to it now, not after the last service
            await self.proxy.add_hub_route(self.hub)
            self._hub_routed = True
        if service.managed:
            self.log.info("Starting the %s service (the hub answers meanwhile)", service_name)
        return await super().start_service(service_name, service, ssl_context)

    async def start(self):
        await super().start()
        if self.ready_message:
            print(self.ready_message, flush=True)

    async def cleanup(self):
        services = [s for s in self._service_map.values() if s.managed]
        if services:
            self.log.info("Stopping %s...", ", ".join(s.name for s in services))
            results = await asyncio.gather(*(s.stop() for s in services),
                                           return_exceptions=True)
            for service, result in zip(services, results, strict=True):
                if isinstance(result, Exception):
                    self.log.error("Stopping the %s service failed: %s", service.name, result)
        # JupyterHub's own cleanup: servers, proxy, pid file (the services are stopped)
        await super().cleanup()
