"""What every Redspot spawner shares: instance profiles, the spawn form, user options.

User options are untrusted input, handled in three steps:

1. *parse* (``parse_user_options``): the form's lists of strings or the REST API's JSON
   become ``{"profile": name}``, or a 400 saying which keys are allowed;
2. *validate* (``choose_profile``): the name must be one of the profiles the user's
   groups allow, or a 400 with the allowed list;
3. *apply* (``apply_profile``): the chosen profile's resources go onto the spawner.
   Each spawner class says what that means for it (a local process, a pod).
"""

from __future__ import annotations

import asyncio
import datetime
import time

from tornado import web
from traitlets import Any, Bool, Dict, Integer, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .caps import CapReached, Seat, check_cap_config, check_caps
from .form import render_profiles_form
from .profiles import (
    USER_OPTION_KEYS,
    Profile,
    ProfileError,
    ProfileRules,
    allowed_profiles,
    build_catalog,
    choose_profile,
    default_profile,
    parse_user_options,
)


def idle_check_interval(timeout: int) -> int:
    """Seconds between two looks at whether a server (or its kernels) is idle past its
    limit: a quarter of the limit, 5 to 60 (the server extension makes jupyter-server,
    which looks every 60 s whatever the limit, look this often too)."""
    return max(5, min(60, timeout // 4))


def idle_args(timeout: int) -> list[str]:
    """The single-user server's own idle shutdown, after ``timeout`` s (pure): kernels
    idle that long are culled (never one running a cell, connected or not), then the
    server, idle that long with no kernel or terminal left, stops itself, and the hub
    sees it gone. Redspot's server extension counts the user's Ray cluster running
    something as activity (``redspot.serverextension``)."""
    if not timeout:
        return []
    interval = idle_check_interval(timeout)
    return [f"--ServerApp.shutdown_no_activity_timeout={timeout}",
            f"--MappingKernelManager.cull_idle_timeout={timeout}",
            f"--MappingKernelManager.cull_interval={interval}",
            "--MappingKernelManager.cull_connected=True",
            "--MappingKernelManager.cull_busy=False",
            f"--TerminalManager.cull_inactive_timeout={timeout}",
            f"--TerminalManager.cull_interval={interval}"]


class EnvironmentsUnavailable(Exception):
    """The environments service did not say which environments are ready."""


class RedspotSpawnerMixin(LoggingConfigurable):
    """Instance profiles for a JupyterHub spawner. Put it first in the bases."""

    profile_catalog = Dict(
        config=True,
        help="""Profiles to add, or fields to override on built-in ones, by name.

        Example: ``{"p3.2xlarge": {"description": "V100"}, "c6i.8xlarge": {"vcpus": 32,
        "memory": "64GiB"}}``. Default: the built-in catalog unchanged.
        """,
    )
    profiles_offered = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Profiles offered at all, in display order. Default (None): the whole catalog.",
    )
    profiles_everyone = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Profiles every user may use. Default (None): only ``default_profile``.",
    )
    group_profiles = Dict(
        value_trait=List(Unicode()),
        config=True,
        help="""Group name -> profiles its members may use, e.g. ``{"gpu": ["p3.2xlarge"]}``.""",
    )
    default_profile = Unicode(
        "m5.xlarge",
        config=True,
        help="Profile preselected in the form and used when a request names none.",
    )
    admins_use_all_profiles = Bool(
        True, config=True, help="Admins may use every offered profile. Default True."
    )

    group_caps = Dict(
        value_trait=Dict(), config=True,
        help="""Per group, the most servers of a profile and the most GPUs its members
        may hold at once: ``{"gpu-team": {"servers": {"p3.2xlarge": 2}, "gpus": 4}}``.
        A spawn past one is refused (429) naming the cap and who holds the seats.
        Default: no caps. Set by the layers from ``groups.<name>.caps``.""",
    )

    usage_db_url = Unicode(
        "", config=True,
        help="""The database of Redspot's usage log (``redspot.usage``): servers' and Ray
        nodes' start and stop, with profile and price, for ``redspot usage`` and the
        admin page. Set by the layers: ``sqlite:///<data>/hub/usage.sqlite`` on one
        machine, the hub's own database on Kubernetes. Empty: no log.""",
    )

    services_token = Unicode(
        "", config=True,
        help="""The hub token the spawner asks Redspot's services with (the
        ``redspot-spawner`` service's): the environments service which environments a
        user may start a server in (``user_options["environment"] = "owner/name"``), the
        sharing service what a starting pod mounts. Set by the layers with the
        services; empty: neither is asked.""",
    )

    service_urls = Dict(
        value_trait=Unicode(), config=True,
        help="""URLs of Redspot services, by name; each reaches the server as
        ``REDSPOT_<NAME>_URL`` (``{"environments": "http://127.0.0.1:8091/services/environments/"}``).
        Set by ``redspot up`` for the services it runs.""",
    )

    service_public_urls = Dict(
        value_trait=Unicode(), config=True,
        help="""Where browsers reach each Redspot service, by name (``/services/models/``, or
        its own origin with per-user subdomains); each reaches the server as
        ``REDSPOT_<NAME>_PUBLIC_URL`` (links in notebooks). Set by ``redspot up``.""",
    )

    ray_idle_timeout = Integer(
        3600, config=True,
        help="""Seconds without use after which the user's Ray cluster stops (0: never).
        Reaches the server as ``REDSPOT_RAY_IDLE_TIMEOUT``.""",
    )

    server_idle_timeout = Integer(
        28800, config=True,
        help="""Seconds an idle server runs before it stops itself (0: never): its idle
        kernels are culled, then the server shuts down. A kernel running a cell, a
        terminal, a request, or the user's Ray cluster running something keeps it up.
        Set by the layers from ``culling.server_idle_timeout``.""",
    )
    gpu_server_idle_timeout = Integer(
        3600, config=True,
        help="The same for profiles with GPUs (``culling.gpu_server_idle_timeout``).",
    )
    profile_idle_timeouts = Dict(
        value_trait=Integer(), config=True,
        help="Seconds by profile name, over the two above (``culling.profiles``).",
    )

    # --- the usage log -------------------------------------------------------------------

    _usage_logs: dict = {}  # URL -> UsageLog, one engine per database in the hub

    @property
    def usage_log(self):
        """The usage log (``redspot.usage.UsageLog``), or None when there is none."""
        return self.usage_log_at(self.usage_db_url) if self.usage_db_url else None

    @staticmethod
    def usage_log_at(url: str):
        """The hub's one UsageLog of the database at ``url``."""
        logs = RedspotSpawnerMixin._usage_logs
        if url not in logs:
            from ..usage import UsageLog

            logs[url] = UsageLog(url)
        return logs[url]

    def note_usage(self, what: str, ray_nodes: dict | None = None) -> None:
        """Write to the usage log: ``start`` or ``stop`` of this server, or ``ray``:
        the user's Ray nodes seen now (name -> (profile, price)). A log that cannot be
        written is said in the hub's log and never fails the server."""
        log = self.usage_log
        if log is None:
            return
        groups = [g.name for g in self.user.groups]
        try:
            if what == "start" and self.profile is not None:
                log.start("server", self.user.name, groups, self.profile.name,
                          self.profile.price, server=self.name)
            elif what == "stop":
                log.stop("server", self.user.name, server=self.name)
                if not self.name:  # the user's Ray cluster goes with their default server
                    log.reconcile("ray", self.user.name, groups, {})
                    RedspotSpawnerMixin._ray_seen.pop(self.user.name, None)
                    RedspotSpawnerMixin._ray_logged.pop((id(log), self.user.name), None)
            elif what == "ray":
                nodes = dict(ray_nodes or {})
                # most polls see what the last one saw: the log is written on a change
                key = (id(log), self.user.name)
                if RedspotSpawnerMixin._ray_logged.get(key) != nodes:
                    log.reconcile("ray", self.user.name, groups, nodes)
                    RedspotSpawnerMixin._ray_logged[key] = nodes
                RedspotSpawnerMixin._ray_seen[self.user.name] = [
                    profile for profile, _ in nodes.values()]
        except Exception:  # noqa: BLE001 - the server goes on; the log says why
            self.log.exception("Could not write %s of %s to the usage log", what,
                               self._log_name)

    # --- metrics (redspot.metrics): the hub's own, on /hub/metrics ----------------------

    #: user -> the profiles of their Ray nodes seen at the last poll (the Ray gauges)
    _ray_seen: dict = {}
    #: (usage log, user) -> the user's Ray nodes as last written to it
    _ray_logged: dict = {}

    def register_collector(self) -> None:
        """The hub's metrics (``redspot.metrics``), once per hub: ``RedspotHub`` does it
        at start; a hub of JupyterHub's own class, at the first spawn."""
        users = self.user.settings.get("users")
        if users is not None:
            register_hub_metrics(users, self.catalog)

    async def start(self):
        from ..metrics import hub_metrics

        self.register_collector()
        profile = self.profile.name if self.profile else "unknown"
        started = time.monotonic()
        try:
            url = await super().start()
        except BaseException:
            hub_metrics()["redspot_spawns_total"].labels(profile, "failed").inc()
            raise
        self._started_here = True
        self.note_usage("start")
        self._ready_watch = asyncio.ensure_future(self._watch_ready(profile, started))
        return url

    async def _watch_ready(self, profile: str, started: float) -> None:
        """Until the server answers (JupyterHub marks it ready) or its start ends: the
        spawn's outcome and, when ready, how long it took."""
        from ..metrics import hub_metrics

        metrics = hub_metrics()
        while self.active and not self.ready:
            await asyncio.sleep(0.25)
        if self.ready:
            metrics["redspot_spawns_total"].labels(profile, "ready").inc()
            metrics["redspot_spawn_duration_seconds"].labels(profile).observe(
                time.monotonic() - started)
        else:
            metrics["redspot_spawns_total"].labels(profile, "failed").inc()

    async def poll(self):
        """The server's state. A server started by this hub, with an idle limit, that
        ended by itself with status 0 (not stopped by the hub, not killed, not crashed)
        stopped itself: its idle shutdown, a cull. (File > Shut Down in JupyterLab ends
        the same way; the hub cannot tell them apart.)"""
        profile = self.profile  # a spawner whose process ended clears its state
        status = await super().poll()
        if status is not None and getattr(self, "_started_here", False):
            self._started_here = False
            if status == 0 and not getattr(self, "_stop_pending", False) \
                    and self.idle_timeout_of(profile):
                from ..metrics import hub_metrics

                hub_metrics()["redspot_servers_culled_total"].labels(
                    profile.name if profile else "unknown").inc()
                self.log.info("%s stopped itself (its idle limit)", self._log_name)
        return status

    def run_post_stop_hook(self):
        self._started_here = False
        self.note_usage("stop")
        return super().run_post_stop_hook()

    def idle_timeout_of(self, profile: Profile | None) -> int:
        """The idle limit of a server of ``profile`` (0: never)."""
        if profile is None:
            return self.server_idle_timeout
        if profile.name in self.profile_idle_timeouts:
            return self.profile_idle_timeouts[profile.name]
        return self.gpu_server_idle_timeout if profile.gpus else self.server_idle_timeout

    server_token_cache_seconds = Integer(
        0, config=True,
        help="""Seconds a server trusts the hub's word about a visitor's token
        (``HubOAuth.cache_max_age``; 0: JupyterHub's default, 300). A guest whose
        invitation into the server is revoked is refused within this time. Set by
        ``redspot up`` from ``services.sharing.server_token_cache``.""",
    )

    collaboration_groups = List(
        Unicode(), config=True,
        help="""Hub groups whose members' servers have real-time collaboration on
        (jupyter-collaboration), ``*`` for everyone: those who may invite others into
        their servers. Every other server starts with it off
        (``--YDocExtension.disable_rtc=True``). Set by ``redspot up`` from
        ``services.sharing.invite_groups``.""",
    )

    profile = Any(
        None, allow_none=True, help="The Profile this server was started with (set on spawn)."
    )
    redspot_environment = Any(
        None, allow_none=True,
        help="The Redspot environment this server was started in (a dict), if any.",
    )

    @validate("profile_catalog")
    def _check_catalog(self, proposal):
        try:
            build_catalog(proposal.value)
        except ProfileError as e:
            raise ValueError(f"profile_catalog: {e}") from None
        return proposal.value

    @validate("group_caps")
    def _check_caps(self, proposal):
        try:
            check_cap_config(proposal.value, self.catalog)
        except ProfileError as e:
            raise ValueError(f"group_caps: {e}") from None
        return proposal.value

    @property
    def catalog(self) -> dict[str, Profile]:
        return build_catalog(self.profile_catalog)

    @property
    def rules(self) -> ProfileRules:
        return ProfileRules(
            offered=tuple(self.profiles_offered) if self.profiles_offered is not None else None,
            everyone=tuple(
                self.profiles_everyone
                if self.profiles_everyone is not None
                else [self.default_profile]
            ),
            groups={g: tuple(p) for g, p in self.group_profiles.items()},
            default=self.default_profile or None,
            admins_use_all=self.admins_use_all_profiles,
        )

    def allowed_profiles(self) -> list[Profile]:
        groups = [g.name for g in self.user.groups]
        return allowed_profiles(self.catalog, self.rules, groups, bool(self.user.admin))

    def seats(self) -> list[Seat]:
        """The servers other than this one that run or start now, with their profiles
        (the hub's users in memory hold every active server)."""
        users = self.user.settings.get("users") or {}
        seats = []
        for user in list(users.values()):
            for spawner in list(user.spawners.values()):
                profile = getattr(spawner, "profile", None)
                if spawner is self or profile is None or not spawner.active:
                    continue
                seats.append(Seat(user.name, tuple(g.name for g in user.groups), profile))
        return seats

    def check_caps(self, profile: Profile) -> None:
        """Raise CapReached if a server of ``profile`` passes a cap of the user's groups.
        Called with no wait between it and ``apply_profile``, so that two spawns at
        once cannot both take the last seat."""
        if self.group_caps:
            check_caps(self.group_caps, [g.name for g in self.user.groups], profile,
                       self.seats())

    # --- the form ---------------------------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        return type(self).render_options_form

    async def render_options_form(self) -> str:
        allowed = self.allowed_profiles()
        environments = []
        if self.environments_on:
            try:
                environments = await self.ready_environments()
            except EnvironmentsUnavailable as e:
                self.log.warning("The spawn form of %s lists no environments: %s",
                                 self.user.name, e)
        previous = (self.orm_spawner.user_options or {}) if self.orm_spawner else {}
        previous = previous if isinstance(previous, dict) else {}
        preferred = previous.get("profile")
        chosen = default_profile(allowed, preferred if isinstance(preferred, str) else None)
        if chosen is None or chosen.name != preferred:
            chosen = default_profile(allowed, self.default_profile)
        return render_profiles_form(
            allowed, chosen.name if chosen else None,
            images=self.render_image_choices(), selected_image=previous.get("image"),
            environments=[(e["id"], e["description"]) for e in environments],
            selected_environment=previous.get("environment"),
            environments_page=self.service_public_urls.get("environments")
            if self.environments_on else None,
            machine=self.shared_machine(),
        )

    def shared_machine(self):
        """The machine servers share, when they do (local servers): the form says what
        it has. None where each server gets what its profile says (Kubernetes)."""
        return None

    @property
    def environments_on(self) -> bool:
        """Whether users may start servers in the environments service's builds."""
        return bool(self.service_urls.get("environments") and self.services_token)

    async def ready_environments(self) -> list[dict]:
        """The built environments this user may start a server in, asked of the
        environments service (``GET api/ready/<user>``; none when it is off). Each:
        ``{"id": "owner/name", "description", "tag", "location", "env"}``. Raises
        EnvironmentsUnavailable when the service does not answer."""
        if not self.environments_on:
            return []
        from urllib.parse import quote

        try:
            answer = await self.ask_service(
                "environments", f"api/ready/{quote(self.user.name, safe='')}")
            return answer["environments"]
        except Exception as e:  # noqa: BLE001 - said to the user, with what happened
            raise EnvironmentsUnavailable(
                f"the environments service did not answer which environments are ready "
                f"({e})") from None

    async def ask_service(self, name: str, path: str) -> dict:
        """``GET path`` of the Redspot service ``name`` with the spawner's own token
        (``services_token``); its JSON answer. Raises what the request raised."""
        import json

        from tornado import httpclient

        response = await httpclient.AsyncHTTPClient().fetch(
            f"{self.service_urls[name].rstrip('/')}/{path}", request_timeout=20,
            headers={"Authorization": f"token {self.services_token}"})
        return json.loads(response.body)

    def render_image_choices(self) -> list[str]:
        """Image names the form offers (none: the spawner has no choice of image)."""
        return []

    @default("options_from_form")
    def _options_from_form_default(self):
        return _options_from_form

    # --- user options: parse, validate, apply -------------------------------------------

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return type(self)._apply_user_options

    def user_option_keys(self) -> dict[str, str]:
        """The keys ``user_options`` may carry, and what each one is."""
        keys = dict(USER_OPTION_KEYS)
        if self.environments_on:
            keys["environment"] = "a ready environment, as owner/name"
        return keys

    async def _apply_user_options(self, user_options) -> None:
        try:
            options = parse_user_options(user_options, self.user_option_keys())
            profile = choose_profile(self.allowed_profiles(), options, self.default_profile)
            ready = []
            if options.get("environment") is not None:
                ready = await self.ready_environments()
            self.apply_options(options, ready)
            self.check_caps(profile)
        except CapReached as e:
            from ..metrics import hub_metrics

            hub_metrics()["redspot_spawn_refusals_total"].labels(e.group, e.kind).inc()
            self.log.warning("%s was refused %s: %s", self._log_name, profile.name, e)
            raise web.HTTPError(429, str(e)) from None
        except ProfileError as e:
            raise web.HTTPError(400, str(e)) from None
        except EnvironmentsUnavailable as e:
            raise web.HTTPError(503, f"{e}: start without an environment, or try again "
                                     f"in a minute") from None
        self.log.info("%s starts with instance profile %s", self._log_name, profile.name)
        self.apply_profile(profile)

    def apply_options(self, options: dict, ready: list[dict] = ()) -> None:
        """Apply the options other than the profile (validated already by their parser);
        ``ready``: the environments the user may start in, when the options name one."""
        self.redspot_environment = None
        wanted = options.get("environment")
        if wanted is None:
            self.apply_environment(None)
            return
        ready = {e["id"]: e for e in ready}
        if wanted not in ready:
            allowed = ", ".join(ready) or "none is ready yet"
            raise ProfileError(
                f"environment {wanted!r} is not a ready environment of yours or your team's; "
                f"choose one of: {allowed}"
            )
        self.redspot_environment = ready[wanted]
        self.apply_environment(self.redspot_environment)

    def apply_environment(self, environment: dict | None) -> None:
        """Start the server in ``environment`` (None: the default one). Each spawner says
        how; the same spawner starts the user's server again and again, so None must undo
        an earlier environment."""
        if environment is not None:
            raise ProfileError("this spawner cannot start servers in environments")

    def apply_profile(self, profile: Profile) -> None:
        """Put the profile's resources on this spawner. Subclasses add their own."""
        self.profile = profile
        self.cpu_limit = float(profile.vcpus)
        self.mem_limit = profile.memory

    def redspot_env(self) -> dict[str, str]:
        """What every Redspot server is told: its profile, its environment's variables,
        and that Ray and MLflow stay quiet."""
        env = {"RAY_USAGE_STATS_ENABLED": "0",
               # MLflow's client reports usage to MLflow's makers unless told not to
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "REDSPOT_RAY_IDLE_TIMEOUT": str(self.ray_idle_timeout)}
        if self.redspot_environment:
            env.update(self.redspot_environment["env"])
            env["REDSPOT_ENVIRONMENT"] = self.redspot_environment["id"]
            env["REDSPOT_ENVIRONMENT_TAG"] = self.redspot_environment["tag"]
        if self.profile:
            env.update(self.profile.server_env())
        for name, url in self.service_urls.items():
            env[f"REDSPOT_{name.upper().replace('-', '_')}_URL"] = url
        for name, url in self.service_public_urls.items():
            env[f"REDSPOT_{name.upper().replace('-', '_')}_PUBLIC_URL"] = url
        if "models" in self.service_urls:
            # MLflow's client, unchanged: the registry, with the server's own hub token
            env["MLFLOW_TRACKING_URI"] = self.service_urls["models"].rstrip("/")
            env["MLFLOW_TRACKING_TOKEN"] = self.api_token
        return env

    def get_args(self):
        args = super().get_args()
        args += idle_args(self.idle_timeout_of(self.profile))
        if self.server_token_cache_seconds:
            args.append(f"--HubOAuth.cache_max_age={self.server_token_cache_seconds}")
        groups = {g.name for g in self.user.groups}
        if not ("*" in self.collaboration_groups or groups & set(self.collaboration_groups)):
            args.append("--YDocExtension.disable_rtc=True")
        return args

    # --- state across hub restarts -------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.profile:
            state["profile"] = self.profile.name
        if self.redspot_environment:
            state["environment"] = self.redspot_environment
        return state

    def load_state(self, state):
        super().load_state(state)
        name = state.get("profile")
        if name and name in self.catalog:
            self.profile = self.catalog[name]
        self.redspot_environment = state.get("environment")

    def clear_state(self):
        super().clear_state()
        self.profile = None
        self.redspot_environment = None


def register_hub_metrics(users, catalog: dict) -> None:
    """Register the hub's metrics, their gauges read from ``users`` (the hub's UserDict)
    and the Ray nodes its spawners saw."""
    from ..metrics import register_hub

    register_hub(lambda: _active_servers(users),
                 lambda: dict(RedspotSpawnerMixin._ray_seen), lambda: catalog)


def configured(spawner_class: type, config, name: str):
    """A trait's value for ``spawner_class`` from the hub's ``config`` (the most specific
    class's section wins, as traitlets does), else its default."""
    value = spawner_class.class_traits()[name].default()
    for cls in reversed(spawner_class.mro()):
        section = config.get(cls.__name__) if hasattr(config, "get") else None
        if section and name in section:
            value = section[name]
    return value


def _active_servers(users) -> list[tuple]:
    """(user, profile, last activity as a timestamp, GPUs) of each server that runs or
    starts: what the hub's gauges show at a scrape."""
    found = []
    for user in list(users.values()):
        for spawner in list(user.spawners.values()):
            if not spawner.active:
                continue
            profile = getattr(spawner, "profile", None)
            last = spawner.orm_spawner.last_activity if spawner.orm_spawner else None
            # JupyterHub keeps UTC without a zone
            stamp = last.replace(tzinfo=datetime.UTC).timestamp() if last else None
            found.append((user.name, profile.name if profile else None, stamp,
                          profile.gpus if profile else 0))
    return found


def _options_from_form(form_data: dict) -> dict:
    """Form data (lists of strings) -> user options. Validation comes later, for API and form.

    Fields starting with ``_`` (the form's ``_xsrf`` token) are the page's, not options;
    an empty choice (the default environment) is no option.
    """
    return {
        key: values[0] if len(values) == 1 else values
        for key, values in form_data.items()
        if not key.startswith("_") and values != [""]
    }
