"""The environment service's logic, without HTTP: who may do what, and builds run once.

``Requester`` is who asks (from the hub); ``EnvironmentManager`` checks them, keeps the
catalog, and starts each build once: concurrent requests for the same tag share the
same running build, and a tag that is ready is never built again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from ..hub import scopes
from ..metrics import service_metrics
from .builders import Builder, BuildFailed
from .catalog import (
    TEAM,
    Catalog,
    CatalogError,
    Entry,
    may_use,
    owners_visible_to,
    ready_environments,
)
from .spec import EnvironmentSpec, SpecError, parse_spec


class Refused(Exception):
    """The request cannot be done: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        #: the spec's field that is wrong (``python[2]``, ``env.HOME``), when one is
        self.field = field


@dataclass(frozen=True)
class Requester:
    name: str
    scopes: frozenset[str]
    admin: bool = False

    @classmethod
    def from_hub_model(cls, model: dict) -> Requester:
        return cls(model["name"], frozenset(model.get("scopes", ())), bool(model.get("admin")))

    def may(self, scope: str) -> bool:
        return scope in self.scopes or (self.admin and scope == scopes.ENVIRONMENTS_ADMIN)


class BuildLog:
    """A build's output: kept in a file, and followed live by any number of readers."""

    def __init__(self, path: Path):
        self.path = path
        self.done = False
        self._changed = asyncio.Condition()

    def write(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        self.done = True
        await self._notify()

    async def follow(self, offset: int = 0):
        """Yield the log's text from ``offset`` as it grows, until the build ends."""
        while True:
            text = self.path.read_text() if self.path.exists() else ""
            if len(text) > offset:
                yield text[offset:]
                offset = len(text)
            if self.done:
                return
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), 1)
                except TimeoutError:
                    pass


class EnvironmentManager:
    def __init__(self, catalog: Catalog, builder: Builder, log_dir: Path,
                 max_builds_per_owner: int = 2):
        self.catalog = catalog
        self.builder = builder
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.max_builds_per_owner = max_builds_per_owner
        self._running: dict[str, asyncio.Task] = {}
        self._owners: dict[str, str] = {}  # a running build's tag -> whose it is
        self._logs: dict[str, BuildLog] = {}

    # --- reading ------------------------------------------------------------------------

    def visible(self, who: Requester, entry: Entry) -> bool:
        return may_use(who.name, entry, admin=who.may(scopes.ENVIRONMENTS_ADMIN))

    def list(self, who: Requester) -> list[dict]:
        self._require(who, scopes.ENVIRONMENTS_READ)
        owners = owners_visible_to(who.name, admin=who.may(scopes.ENVIRONMENTS_ADMIN))
        return [self.describe(e) for e in self.catalog.entries(owners)]

    def get(self, who: Requester, owner: str, name: str) -> Entry:
        self._require(who, scopes.ENVIRONMENTS_READ)
        entry = self.catalog.get(owner, name)
        if entry is None or not self.visible(who, entry):
            raise Refused(404, f"no environment {owner}/{name}")
        return entry

    def ready_for(self, who: Requester, user: str) -> list[dict]:
        """The built environments ``user`` may start a server in, for the hub's spawner
        (``custom:redspot:environments:ready``: no user has it)."""
        self._require(who, scopes.ENVIRONMENTS_READY)
        return ready_environments(self.catalog, user)

    def describe(self, entry: Entry) -> dict:
        build = self.catalog.build(entry.tag)
        status = build.status if build else "failed"
        model = {
            "id": f"{entry.owner}/{entry.name}",
            "owner": entry.owner,
            "name": entry.name,
            "scope": "team" if entry.owner == TEAM else "personal",
            "spec": entry.spec,
            "tag": entry.tag,
            "status": status,
            "created": entry.created,
        }
        if build and build.status == "ready":
            spec = EnvironmentSpec.from_dict(entry.spec)
            model["location"] = build.location
            model["runtime_env"] = self.builder.runtime_env(spec, build.location)
        if build and build.error:
            model["error"] = build.error
        return model

    def log_path(self, tag: str) -> Path:
        return self.log_dir / f"{tag}.log"

    def follow_log(self, tag: str, offset: int = 0):
        log = self._logs.get(tag)
        if log is None:
            log = BuildLog(self.log_path(tag))
            log.done = True
        return log.follow(offset)

    # --- changing -----------------------------------------------------------------------

    async def create(self, who: Requester, data: object, team: bool = False) -> dict:
        self._require(who, scopes.ENVIRONMENTS_WRITE)
        if team and not who.may(scopes.ENVIRONMENTS_ADMIN):
            raise Refused(403, "only admins publish team environments")
        try:
            spec = parse_spec(data, self.builder.bases())
            self.builder.check(spec)
        except (SpecError, ValueError) as e:
            raise Refused(400, str(e), field=getattr(e, "field", None)) from None
        owner = TEAM if team else who.name
        # a personal environment's build is its owner's alone (its files are readable by
        # the owner's account only); the team's are shared by everyone
        tag = spec.tag(self.builder.base_digest(spec.base), owner=None if team else owner)
        build = self.catalog.build(tag)
        if (build is None or build.status == "failed") and tag not in self._running:
            running = sum(1 for o in self._owners.values() if o == owner)
            if running >= self.max_builds_per_owner:
                raise Refused(429, f"{owner} has {running} builds running, the most at "
                                   "once; try again when one has finished")
        try:
            entry = self.catalog.add(owner, spec.name, spec.to_dict(), tag)
        except CatalogError as e:
            raise Refused(409, f"{e}; delete it first, or choose another name") from None
        self.start_build(spec, tag, owner)
        return self.describe(entry)

    def start_build(self, spec, tag: str, owner: str = TEAM) -> asyncio.Task | None:
        """Start building ``tag`` unless it is ready or already building."""
        if tag in self._running:
            return self._running[tag]
        if not self.catalog.claim_build(tag):
            return None
        task = asyncio.get_running_loop().create_task(self._build(spec, tag, owner))
        self._running[tag] = task
        self._owners[tag] = owner

        def done(_):
            self._running.pop(tag, None)
            self._owners.pop(tag, None)

        task.add_done_callback(done)
        return task

    async def _build(self, spec, tag: str, owner: str) -> None:
        path = self.log_path(tag)
        path.unlink(missing_ok=True)
        log = self._logs[tag] = BuildLog(path)
        started = time.monotonic()
        log.write(f"Building {tag} with the {self.builder.kind} builder")
        metrics = service_metrics("environments")
        metrics["redspot_builds_running"].inc()
        outcome = "failed"
        try:
            location = await self.builder.build(spec, tag, log.write, owner=owner)
        except BuildFailed as e:
            log.write(f"Build failed: {e}")
            self.catalog.finish_build(tag, error=str(e))
        except Exception as e:  # a bug or the machine: still nothing listed as ready
            log.write(f"Build failed: {type(e).__name__}: {e}")
            self.catalog.finish_build(tag, error=f"{type(e).__name__}: {e}")
        else:
            log.write(f"Built {tag} in {time.monotonic() - started:.1f} s: {location}")
            self.catalog.finish_build(tag, location=location)
            outcome = "ready"
        finally:
            metrics["redspot_builds_running"].dec()
            metrics["redspot_builds_total"].labels(self.builder.kind, outcome).inc()
            metrics["redspot_build_duration_seconds"].labels(
                self.builder.kind, outcome).observe(time.monotonic() - started)
            await log.close()

    def delete(self, who: Requester, owner: str, name: str) -> None:
        entry = self.get(who, owner, name)
        mine = entry.owner == who.name and who.may(scopes.ENVIRONMENTS_WRITE)
        if not (mine or who.may(scopes.ENVIRONMENTS_ADMIN)):
            raise Refused(403, f"{owner}/{name} is not yours to delete")
        self.catalog.remove(entry.owner, entry.name)

    def _require(self, who: Requester, scope: str) -> None:
        if not who.may(scope):
            raise Refused(403, f"this needs the scope {scope}")
