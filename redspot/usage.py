"""The usage log: when each server and Ray cluster ran, whose, on which profile, at
what price; and the reports made from it (hours and cost per user, group or profile).

The hub writes it (the spawners, as servers start and stop and as they see a user's
Ray cluster come and go); ``redspot usage`` and the admin page read it. It is a table
of its own, ``redspot_usage``, in a database of its own on one machine
(``<data>/hub/usage.sqlite``) or in the hub's database on Kubernetes::

    log = UsageLog("sqlite:///usage.sqlite")
    row = log.start("server", "alice", ["gpu-team"], profile)
    log.stop("server", "alice")
    report = summarise(log.records(since, until), since, until, by="user")

A record's price is the profile's when it started: a price changed later changes
only what starts after. Records still open count up to now (or the period's end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

#: What a record is of: a user's server, or their Ray cluster (its nodes).
KINDS = ("server", "ray")
GROUPINGS = ("user", "group", "profile")
NO_GROUP = "(no group)"

_metadata = sa.MetaData()
_usage = sa.Table(
    "redspot_usage", _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("server", sa.String(255), nullable=False, default=""),
    sa.Column("groups", sa.Text, nullable=False, default="[]"),
    sa.Column("profile", sa.String(255), nullable=False),
    # US dollars an hour for the whole record (a cluster: all its nodes); NULL: unknown
    sa.Column("price", sa.Float, nullable=True),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("stopped", sa.Float, nullable=True),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Index("redspot_usage_open", "kind", "user", "server", "stopped"),
    sa.Index("redspot_usage_time", "started", "stopped"),
)


@dataclass(frozen=True)
class Record:
    kind: str
    user: str
    profile: str
    price: float | None
    started: float
    stopped: float | None = None
    groups: tuple[str, ...] = ()
    server: str = ""
    detail: dict = field(default_factory=dict)

    def seconds_within(self, since: float, until: float) -> float:
        """Seconds of this record within [since, until) (an open one runs to ``until``)."""
        end = until if self.stopped is None else min(self.stopped, until)
        return max(0.0, end - max(self.started, since))


class UsageLog:
    """The usage table in the database at ``url`` (made on first use)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        _metadata.create_all(self.engine)

    def start(self, kind: str, user: str, groups: Iterable[str], profile: str,
              price: float | None, server: str = "", detail: dict | None = None,
              at: float | None = None) -> None:
        """Note that ``user``'s ``kind`` started; one still open is closed first (a
        start the log missed the stop of)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        at = time.time() if at is None else at
        with self.engine.begin() as db:
            self._close(db, kind, user, server, at)
            db.execute(_usage.insert().values(
                kind=kind, user=user, server=server, groups=json.dumps(sorted(groups)),
                profile=profile, price=price, started=at, stopped=None,
                detail=json.dumps(detail or {})))

    def stop(self, kind: str, user: str, server: str = "", at: float | None = None) -> int:
        """Close ``user``'s open ``kind`` record; how many were open (0 or 1)."""
        with self.engine.begin() as db:
            return self._close(db, kind, user, server, time.time() if at is None else at)

    def reconcile(self, kind: str, user: str, groups: Iterable[str],
                  running: dict[str, tuple[str, float | None]],
                  at: float | None = None) -> tuple[int, int]:
        """Make ``user``'s open ``kind`` records those of ``running`` (name -> (profile,
        price)): open one for each new name, close those no longer running. For what is
        seen rather than told: a user's Ray nodes, found at each poll. Returns how many
        were opened and closed."""
        at = time.time() if at is None else at
        groups = json.dumps(sorted(groups))
        with self.engine.begin() as db:
            open_now = {r.server for r in db.execute(sa.select(_usage.c.server).where(
                _usage.c.kind == kind, _usage.c.user == user, _usage.c.stopped.is_(None)))}
            gone = open_now - set(running)
            if gone:
                db.execute(_usage.update().where(
                    _usage.c.kind == kind, _usage.c.user == user,
                    _usage.c.stopped.is_(None), _usage.c.server.in_(gone)).values(stopped=at))
            new = [name for name in running if name not in open_now]
            for name in new:
                profile, price = running[name]
                db.execute(_usage.insert().values(
                    kind=kind, user=user, server=name, groups=groups, profile=profile,
                    price=price, started=at, stopped=None, detail="{}"))
        return len(new), len(gone)

    def is_open(self, kind: str, user: str, server: str = "") -> bool:
        with self.engine.connect() as db:
            return db.execute(sa.select(sa.func.count()).select_from(_usage).where(
                self._open(kind, user, server))).scalar_one() > 0

    def _open(self, kind, user, server):
        return sa.and_(_usage.c.kind == kind, _usage.c.user == user,
                       _usage.c.server == server, _usage.c.stopped.is_(None))

    def _close(self, db, kind, user, server, at) -> int:
        return db.execute(_usage.update().where(self._open(kind, user, server))
                          .values(stopped=at)).rowcount

    def records(self, since: float | None = None, until: float | None = None) -> list[Record]:
        """The records that overlap [since, until), oldest first."""
        query = sa.select(_usage).order_by(_usage.c.started, _usage.c.id)
        if until is not None:
            query = query.where(_usage.c.started < until)
        if since is not None:
            query = query.where(sa.or_(_usage.c.stopped.is_(None), _usage.c.stopped > since))
        with self.engine.connect() as db:
            return [Record(kind=r.kind, user=r.user, server=r.server, profile=r.profile,
                           price=r.price, started=r.started, stopped=r.stopped,
                           groups=tuple(json.loads(r.groups)), detail=json.loads(r.detail))
                    for r in db.execute(query)]

    def close(self) -> None:
        self.engine.dispose()


# --- reports (pure) ------------------------------------------------------------------------

@dataclass
class Line:
    """One line of a report: the hours and cost of one user, group or profile."""

    key: str
    server_hours: float = 0.0
    ray_hours: float = 0.0
    cost: float = 0.0
    #: hours whose price is not known (counted in the hours, not in the cost)
    unpriced_hours: float = 0.0

    def to_dict(self) -> dict:
        return {"key": self.key, "server_hours": round(self.server_hours, 4),
                "ray_hours": round(self.ray_hours, 4), "cost": round(self.cost, 4),
                "unpriced_hours": round(self.unpriced_hours, 4)}


def summarise(records: Iterable[Record], since: float, until: float,
              by: str = "user") -> list[Line]:
    """Hours and cost within [since, until) per user, group or profile, the costliest
    first. A record counts for each of its user's groups (when it started); a user in
    no group counts under ``(no group)``."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    if until <= since:
        raise ValueError("the period's end must come after its start")
    lines: dict[str, Line] = {}
    for record in records:
        seconds = record.seconds_within(since, until)
        if not seconds:
            continue
        hours = seconds / 3600
        for key in _keys(record, by):
            line = lines.setdefault(key, Line(key))
            if record.kind == "ray":
                line.ray_hours += hours
            else:
                line.server_hours += hours
            if record.price is None:
                line.unpriced_hours += hours
            else:
                line.cost += hours * record.price
    return sorted(lines.values(), key=lambda line: (-line.cost, line.key))


def _keys(record: Record, by: str) -> Sequence[str]:
    if by == "user":
        return (record.user,)
    if by == "profile":
        return (record.profile,)
    return record.groups or (NO_GROUP,)


def format_report(lines: list[Line], since: float, until: float, by: str) -> str:
    """A report as a text table, with totals and the period in UTC."""
    from .spawner.profiles import format_money

    header = (by, "server hours", "Ray hours", "cost")
    rows = [(line.key, f"{line.server_hours:.2f}", f"{line.ray_hours:.2f}",
             format_money(line.cost) + (" *" if line.unpriced_hours else ""))
            for line in lines]
    if by != "group":  # a record counts once per user or profile, so totals add up
        rows.append(("total", f"{sum(x.server_hours for x in lines):.2f}",
                     f"{sum(x.ray_hours for x in lines):.2f}",
                     format_money(sum(x.cost for x in lines))))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    text = [f"Usage from {_utc(since)} to {_utc(until)} (UTC), by {by}", ""]
    for n, row in enumerate([header, *rows]):
        text.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                              for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0 or (by != "group" and n == len(rows) - 1):
            text.append("  ".join("-" * w for w in widths))
    if not lines:
        text.append("(nothing ran in this period)")
    if any(x.unpriced_hours for x in lines):
        text.append("* some hours are on profiles without a price: counted in the hours, "
                    "not in the cost")
    if by == "group":
        text.append("A user's hours count for each of their groups; groups do not add up.")
    return "\n".join(text)


def report_dict(lines: list[Line], since: float, until: float, by: str) -> dict:
    """A report as JSON takes it (``redspot usage --json``, the admin page's
    ``format=json``)."""
    return {"since": since, "until": until, "by": by, "currency": "USD",
            "lines": [line.to_dict() for line in lines]}


def period(since: str, until: str, now: float | None = None) -> tuple[float, float]:
    """A report's period from its two bounds as given (``parse_when``); ValueError
    saying which is wrong, or that the end does not come after the start."""
    now = time.time() if now is None else now
    start, end = parse_when(since, now), parse_when(until, now)
    if end <= start:
        raise ValueError(f"until ({until}) must come after since ({since})")
    return start, end


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def parse_when(value: str, now: float | None = None) -> float:
    """A report's bound: ``2026-11-01``, ``2026-11-01T08:00`` (UTC), ``7d`` or ``12h``
    ago, or ``now``."""
    import calendar
    import re

    now = time.time() if now is None else now
    text = value.strip()
    if text == "now":
        return now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dh])", text)
    if m:
        return now - float(m.group(1)) * (86400 if m.group(2) == "d" else 3600)
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a time: use a date (2026-11-01), a date and time in "
                     "UTC (2026-11-01T08:00), a span ago (7d, 12h) or now")
