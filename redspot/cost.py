"""What a Ray run cost: the share of each node it reserved x the node's price x time.

Pure. A node knows its profile and price from its environment (``REDSPOT_PROFILE``,
``REDSPOT_PRICE``..., which a server and each KubeRay pod are given), so a run reports
where it ran and the kernel prices it::

    node = Node.from_env(os.environ)        # on the worker
    uses = [Use(node, cpus=1, gpus=1)]
    cost_sentence(uses, seconds=42.0)
    # 'Cost: about $0.0357 for 42.0 s of 1 GPU (of 1) on p3.2xlarge at $3.06 an hour (...).'

On one machine every run shares the server's machine, so its node is the server's
profile; on KubeRay it is the worker group's profile of the pod it ran on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Node:
    """The machine a run (or one worker of it) ran on."""

    profile: str
    price: float | None  # US dollars an hour
    cpus: float
    memory: int
    gpus: int
    price_source: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Node | None:
        """The node from a Redspot server's or Ray pod's environment; None outside one."""
        if not env.get("REDSPOT_PROFILE"):
            return None
        try:
            price = float(env["REDSPOT_PRICE"]) if env.get("REDSPOT_PRICE") else None
            return cls(profile=env["REDSPOT_PROFILE"], price=price,
                       cpus=float(env.get("REDSPOT_CPUS") or 0),
                       memory=int(env.get("REDSPOT_MEMORY") or 0),
                       gpus=int(env.get("REDSPOT_GPUS") or 0),
                       price_source=env.get("REDSPOT_PRICE_SOURCE", ""))
        except ValueError:
            return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Node | None:
        try:
            return cls(**{k: data[k] for k in ("profile", "price", "cpus", "memory", "gpus")},
                       price_source=str(data.get("price_source", "")))
        except (KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Use:
    """What a run (or one worker) reserved on one node."""

    node: Node
    cpus: float = 0
    gpus: float = 0
    memory: int = 0

    @property
    def share(self) -> float:
        """The share of the node reserved: the largest of its CPUs', GPUs' and memory's
        shares (what is left of the scarcest cannot be sold to anyone else), at most 1."""
        node = self.node
        shares = [self.cpus / node.cpus if node.cpus else 0,
                  self.gpus / node.gpus if node.gpus else (1 if self.gpus else 0),
                  self.memory / node.memory if node.memory else 0]
        return min(1.0, max(shares))


def run_cost(uses: Iterable[Use], seconds: float) -> float | None:
    """US dollars: each use's share x its node's price x the hours; None when a node's
    price is not known."""
    total = 0.0
    for use in uses:
        if use.node.price is None:
            return None
        total += use.share * use.node.price * seconds / 3600
    return total


def cost_sentence(uses: list[Use], seconds: float) -> str:
    """One line a finished run prints: what it cost and how that was counted, e.g.
    ``Cost: about $0.0357 for 42.0 s of 1 GPU (of 1) on p3.2xlarge at $3.06 an hour``."""
    from .spawner.profiles import format_money

    if not uses:
        return ""
    cost = run_cost(uses, seconds)
    parts = []
    for (node, held), count in _grouped(uses).items():
        who = f"{count} workers, each " if count > 1 else ""
        price = (f" at {format_money(node.price)} an hour"
                 + (f" ({node.price_source})" if node.price_source else "")
                 if node.price is not None else " (no price set)")
        parts.append(f"{who}{held} on {node.profile}{price}")
    how = f"{_duration(seconds)} of " + "; ".join(parts)
    if cost is None:
        return f"Cost: not known, as a profile has no price: {how}."
    return f"Cost: about {format_money(cost)} for {how}."


def _grouped(uses: list[Use]) -> dict:
    groups: dict = {}
    for use in uses:
        key = (use.node, _held(use))
        groups[key] = groups.get(key, 0) + 1
    return groups


def _held(use: Use) -> str:
    node = use.node
    if use.gpus and node.gpus:
        return f"{_num(use.gpus)} GPU{'s' if use.gpus != 1 else ''} (of {_num(node.gpus)})"
    if use.share >= 1:
        return "the whole machine"
    return f"{use.share:.0%} of the machine"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
