"""Caps per group: the most servers of a profile, and the most GPUs, a group's members
may hold at once. Pure: the spawner gathers who holds what and asks here.

A server counts against every group of its user that has caps; a spawn is refused
when one of them is full, with a message naming the limit and who holds the seats::

    caps = {"gpu-team": {"servers": {"p3.2xlarge": 2}, "gpus": 4}}
    seats = [Seat("alice", ("gpu-team",), catalog["p3.2xlarge"])]
    check_caps(caps, ("gpu-team",), catalog["p3.2xlarge"], seats)  # fine: 1 of 2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .profiles import Profile, ProfileError

#: The keys a group's caps may have, and what each one is.
CAP_KEYS = {"servers": "profile name -> the most servers of it at once",
            "gpus": "the most GPUs at once, over all profiles"}


@dataclass(frozen=True)
class Seat:
    """A server that runs or starts: whose, in which groups, on which profile."""

    user: str
    groups: tuple[str, ...]
    profile: Profile


class CapReached(ProfileError):
    """A spawn would pass a group's cap; the message names the cap and the holders."""

    def __init__(self, message: str, group: str, kind: str):
        super().__init__(message)
        self.group = group
        self.kind = kind  # "servers" or "gpus"


def check_cap_config(caps: Mapping[str, Mapping], catalog: Mapping[str, Profile]) -> None:
    """Raise ProfileError naming a cap that is malformed or names an unknown profile."""
    for group, cap in caps.items():
        unknown = sorted(set(cap) - set(CAP_KEYS))
        if unknown:
            raise ProfileError(f"groups.{group}.caps: unknown key(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(CAP_KEYS)}")
        for name, limit in (cap.get("servers") or {}).items():
            if name not in catalog:
                raise ProfileError(f"groups.{group}.caps.servers: unknown profile {name!r}; "
                                   f"known profiles: {', '.join(catalog)}")
            _check_limit(f"groups.{group}.caps.servers.{name}", limit)
        if "gpus" in cap:
            _check_limit(f"groups.{group}.caps.gpus", cap["gpus"])


def _check_limit(where: str, limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ProfileError(f"{where} must be a whole number, 0 or more, got {limit!r}")


def check_caps(caps: Mapping[str, Mapping], user_groups: Iterable[str], profile: Profile,
               seats: Iterable[Seat]) -> None:
    """Raise CapReached if one more server of ``profile`` for a member of
    ``user_groups`` passes one of their groups' caps. ``seats``: the servers that run
    or start now, the asking user's other servers included (not the one asked for)."""
    seats = list(seats)
    for group in sorted(set(user_groups)):
        cap = caps.get(group)
        if not cap:
            continue
        held = [s for s in seats if group in s.groups]
        limit = (cap.get("servers") or {}).get(profile.name)
        if limit is not None:
            holders = [s for s in held if s.profile.name == profile.name]
            if len(holders) + 1 > limit:
                raise CapReached(
                    f"your group {group!r} may run at most {_count(limit, 'server')} of "
                    f"profile {profile.name} at once, and {_holding(holders, limit)}. "
                    f"Try again when one stops, or choose another profile.", group, "servers")
        limit = cap.get("gpus")
        if limit is not None and profile.gpus:
            holders = [s for s in held if s.profile.gpus]
            used = sum(s.profile.gpus for s in holders)
            if used + profile.gpus > limit:
                in_use = (f"{used} are in use: " + _names(holders, gpus=True) if holders
                          else "none is in use")
                raise CapReached(
                    f"your group {group!r} may use at most {_count(limit, 'GPU')} at once "
                    f"and {profile.name} has {profile.gpus}; {in_use}. Try again when one "
                    f"stops, or choose a profile with fewer GPUs.", group, "gpus")


def _holding(holders: list[Seat], limit: int) -> str:
    if not limit:
        return "none is allowed"
    return f"all are taken: {_names(holders)}"


def _names(holders: list[Seat], gpus: bool = False) -> str:
    def one(s: Seat) -> str:
        return f"{s.user} ({s.profile.name}, {_count(s.profile.gpus, 'GPU')})" if gpus \
            else s.user
    return ", ".join(one(s) for s in sorted(holders, key=lambda s: s.user))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
