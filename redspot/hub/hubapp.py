"""JupyterHub as ``redspot up`` runs it.

Five differences from JupyterHub's own application, about what the operator and the
first users see:

- the hub's own pages answer as soon as the hub listens: JupyterHub adds the hub's
  route to the proxy only after every service has started (the model registry takes
  several seconds), and until then the address answered a bare "Not Found";
- once the hub and its services answer, it says so, with the address
  (``ready_message``);
- Redspot's pages (``pages.py``): its home page, where sign-in lands, and the docs;
  and Redspot's metrics on ``/hub/metrics`` (``redspot.metrics``);
- on stop, the services and the users' servers stop together instead of one after
  the other (``cleanup``);
- Ctrl-C or SIGTERM while it starts stops what has started (``start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from jupyterhub.app import JupyterHub, JupyterHubHTTPClient
from jupyterhub.utils import maybe_future
from traitlets import Unicode


class RedspotHub(JupyterHub):
    ready_message = Unicode(
        "",
        help="Printed once the hub answers at its public address. Set by ``redspot up``.",
    ).tag(config=True)

    _hub_routed = False

    def init_handlers(self):
        """Redspot's pages first (``redspot.hub.pages``): its home page replaces the
        hub's, and its own routes are under ``/hub/redspot/``."""
        super().init_handlers()
        from .pages import ROUTES

        self.handlers[:0] = self.add_url_prefix(self.hub_prefix, ROUTES)
        self.init_redspot_metrics()

    def init_redspot_metrics(self):
        """Redspot's metrics on /hub/metrics from the start (``redspot.metrics``)."""
        from ..spawner.base import RedspotSpawnerMixin, configured, register_hub_metrics
        from ..spawner.profiles import build_catalog

        if isinstance(self.spawner_class, type) and \
                issubclass(self.spawner_class, RedspotSpawnerMixin):
            catalog = build_catalog(configured(self.spawner_class, self.config,
                                               "profile_catalog"))
            register_hub_metrics(self.users, catalog)

    async def start_service(self, service_name, service, ssl_context=None):
        if not self._hub_routed:
            # the hub listens already: route to it now, not after the last service
            await self.proxy.add_hub_route(self.hub)
            self._hub_routed = True
        if service.managed:
            self.log.info("Starting the %s service (the hub answers meanwhile)", service_name)
        return await super().start_service(service_name, service, ssl_context)

    async def start(self):
        """JupyterHub's start, stopped cleanly by Ctrl-C or SIGTERM while it runs.
        (JupyterHub handles these signals only once it has started: before, the
        proxy and the services started so far were left running.)"""
        loop = asyncio.get_running_loop()
        starting = asyncio.current_task()
        received = []

        def interrupt(sig):
            if not received:
                received.append(sig)
                starting.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt, sig)
        try:
            await super().start()
        except asyncio.CancelledError:
            if not received:
                raise
            self.log.critical("Received %s while starting: stopping what has started...",
                              received[0].name)
            await self.cleanup()
            self.exit(128 + received[0])
        if self.ready_message:
            print(self.ready_message, flush=True)

    async def cleanup(self):
        """JupyterHub's cleanup, with everything stopping at once: the services, the
        users' servers (unless kept), then the proxy. (JupyterHub stops each service in
        turn, and only then the servers: 30 s and more with the registry on.)"""
        # the services' health check would otherwise run on services being removed
        # (a traceback in the log of every stop)
        for callback in self._periodic_callbacks.values():
            callback.stop()
        services = [s for s in self._service_map.values() if s.managed]
        stopping = {f"the {s.name} service": self._stop_service(s) for s in services}
        if services:
            self.log.info("Stopping %s...", ", ".join(s.name for s in services))
        if self.cleanup_servers:
            for user in self.users.values():
                for name, spawner in list(user.spawners.items()):
                    if spawner.active:
                        stopping[f"{user.name}'s server {name}".rstrip()] = user.stop(name)
            self.log.info("Stopping %d users' servers...", len(stopping) - len(services))
        else:
            self.log.info("Leaving single-user servers running")
        results = await asyncio.gather(*stopping.values(), return_exceptions=True)
        for what, result in zip(stopping, results, strict=True):
            if isinstance(result, Exception):
                self.log.error("Stopping %s failed: %s", what, result)
        started = getattr(self.proxy, "proxy_process", None) is not None
        if self.cleanup_proxy and self.proxy.should_start and started:
            await maybe_future(self.proxy.stop())
        elif not self.cleanup_proxy:
            self.log.info("Leaving proxy running")
        self.db.commit()
        if self.pid_file and os.path.exists(self.pid_file):
            os.remove(self.pid_file)
        if JupyterHubHTTPClient.initialized():
            await JupyterHubHTTPClient.instance().close()
        self.log.info("Stopped.")

    async def _stop_service(self, service) -> None:
        """``Service.stop`` (SIGTERM, then SIGKILL), watching the process every 0.1 s:
        JupyterHub's watch backs off to seconds, and the registry's two processes take
        about 2.5 s to end."""
        spawner = service.spawner
        if spawner is None:
            return
        if service.orm.server:
            self.db.delete(service.orm.server)
            self.db.commit()
        spawner.stop_polling()
        proc = spawner.proc
        if proc is None:
            return
        # SIGTERM first: every service stops on it, and a service still importing when
        # the hub is interrupted ends without a KeyboardInterrupt traceback
        for sig, grace in ((signal.SIGTERM, spawner.interrupt_timeout + spawner.term_timeout),
                           (signal.SIGKILL, spawner.kill_timeout)):
            if proc.poll() is not None:
                return
            if sig != signal.SIGTERM:
                self.log.warning("The %s service did not stop: sending %s", service.name,
                                 sig.name)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            for _ in range(int(grace / 0.1)):
                if proc.poll() is not None:
                    return
                await asyncio.sleep(0.1)
