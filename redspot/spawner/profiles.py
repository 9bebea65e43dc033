"""Instance profiles: the machines a user may pick, and who may pick which.

Pure functions and plain data only: no JupyterHub, no Kubernetes. Both spawners
(local processes and Kubernetes pods) read the rules from here, so that a user
sees the same choices, and is refused the same way, whatever runs the server.

The catalog holds EC2 instance types. An operator's ``redspot.yaml`` adds entries,
overrides fields of built-in ones, restricts what is offered, and says which
groups may use which profiles::

    catalog = build_catalog(overrides={"p3.2xlarge": {"description": "V100 box"}})
    rules = ProfileRules(offered=["m5.xlarge", "p3.2xlarge"], everyone=["m5.xlarge"],
                         groups={"gpu": ["p3.2xlarge"]}, default="m5.xlarge")
    allowed = allowed_profiles(catalog, rules, user_groups=["gpu"], is_admin=False)
    profile = choose_profile(allowed, {"profile": "p3.2xlarge"}, rules.default)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

GiB = 1024**3

#: The keys a ``user_options`` dict may carry, and what each one is.
USER_OPTION_KEYS = {"profile": "the name of an instance profile"}


@dataclass(frozen=True)
class Profile:
    """One instance profile: an EC2 instance type and what it offers a server."""

    name: str
    vcpus: float
    memory: int  # bytes
    gpus: int = 0
    gpu_model: str = ""
    display_name: str = ""
    description: str = ""
    #: Extra node labels a Kubernetes node must carry (capacity type, node pool...).
    node_labels: Mapping[str, str] = field(default_factory=dict)
    #: Kubernetes PriorityClass of this profile's pods (empty: the cluster's default).
    priority_class: str = ""
    #: Elastic Fabric Adapter interfaces its pods get on Kubernetes (``vpc.amazonaws.com/
    #: efa``, from AWS's EFA device plugin): NCCL across nodes on p4d and p5.
    efa: int = 0
    #: What an hour of this profile costs, in US dollars (None: not known).
    price: float | None = None
    #: Where ``price`` comes from (the built-in list prices say so; empty: the operator's).
    price_source: str = ""

    @property
    def title(self) -> str:
        return self.display_name or self.name

    @property
    def summary(self) -> str:
        """A one-line summary, e.g. ``8 vCPU · 61 GiB · 1 × NVIDIA V100``."""
        parts = [f"{_fmt_number(self.vcpus)} vCPU", f"{format_bytes(self.memory)}"]
        if self.gpus:
            parts.append(f"{self.gpus} × {self.gpu_model or 'GPU'}")
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.title,
            "description": self.description,
            "vcpus": self.vcpus,
            "memory": self.memory,
            "gpus": self.gpus,
            "gpu_model": self.gpu_model,
            "price": self.price,
            "price_source": self.price_source,
        }

    @property
    def price_label(self) -> str:
        """``$3.06 an hour``, or empty when the price is not known."""
        return "" if self.price is None else f"{format_money(self.price)} an hour"

    def server_env(self) -> dict[str, str]:
        """The environment a server started with this profile gets (Ray reads it later)."""
        return {
            "REDSPOT_PROFILE": self.name,
            "REDSPOT_CPUS": _fmt_number(self.vcpus),
            "REDSPOT_MEMORY": str(self.memory),
            "REDSPOT_GPUS": str(self.gpus),
            "REDSPOT_GPU_MODEL": self.gpu_model,
            "REDSPOT_PRICE": "" if self.price is None else repr(float(self.price)),
            "REDSPOT_PRICE_SOURCE": self.price_source,
        }


#: Where the built-in prices come from. They are list prices, dated: an operator with
#: other prices (a discount, another region, spot) sets ``price`` on each profile.
PRICE_SOURCE = "AWS EC2 on-demand list price, Linux, us-east-1, as of May 2024"

#: US dollars an hour, from PRICE_SOURCE.
BUILTIN_PRICES = {
    "m5.xlarge": 0.192, "m5.4xlarge": 0.768, "r5.4xlarge": 1.008, "x1.16xlarge": 6.669,
    "g5.xlarge": 1.006, "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "g5.12xlarge": 5.672,
    "p4d.24xlarge": 32.7726,
}


def format_money(amount: float) -> str:
    """US dollars: ``$3.06``; amounts under a dollar keep three significant digits
    (``$0.0123``, ``$0.0000431``), so that a short run's cost is not shown as ``$0.00``."""
    if amount >= 1 or amount <= 0:
        return f"${amount:,.2f}"
    text = f"{amount:.{max(2, 2 - math.floor(math.log10(amount)))}f}"
    while len(text.split(".")[1]) > 2 and text.endswith("0"):
        text = text[:-1]
    return f"${text}"


def _p(name, vcpus, memory_gib, gpus=0, gpu_model="", description=""):
    return Profile(
        name=name,
        vcpus=vcpus,
        memory=int(memory_gib * GiB),
        gpus=gpus,
        gpu_model=gpu_model,
        description=description,
        price=BUILTIN_PRICES[name],
        price_source=PRICE_SOURCE,
    )


#: The EC2 instance types an ML team typically offers, with AWS's published sizes.
BUILTIN_CATALOG: dict[str, Profile] = {
    p.name: p
    for p in [
        _p("m5.xlarge", 4, 16, description="General purpose: exploration and small data"),
        _p("m5.4xlarge", 16, 64, description="General purpose: feature engineering"),
        _p("r5.4xlarge", 16, 128, description="Memory optimised: large in-memory data frames"),
        _p("x1.16xlarge", 64, 976, description="Memory optimised: very large data in memory"),
        _p("g5.xlarge", 4, 16, 1, "NVIDIA A10G", "One 24 GB GPU: fine-tuning and inference"),
        _p("p3.2xlarge", 8, 61, 1, "NVIDIA V100", "One 16 GB GPU: training"),
        _p("p3.8xlarge", 32, 244, 4, "NVIDIA V100", "Four 16 GB GPUs: distributed training"),
        _p("g5.12xlarge", 48, 192, 4, "NVIDIA A10G", "Four 24 GB GPUs: distributed training"),
        replace(_p("p4d.24xlarge", 96, 1152, 8, "NVIDIA A100",
                   "Eight 40 GB GPUs: large models"), efa=4),
    ]
}

_PROFILE_FIELDS = {
    "display_name": str,
    "description": str,
    "vcpus": (int, float),
    "memory": (int, str),
    "gpus": int,
    "gpu_model": str,
    "node_labels": dict,
    "priority_class": str,
    "efa": int,
    "price": (int, float),
    "price_source": str,
}
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{0,62}$")


class ProfileError(ValueError):
    """A profile definition or a profile request is wrong; the message says how to fix it."""


class ProfileNotAllowed(ProfileError):
    """The user asked for a profile they may not use (or that does not exist)."""

    def __init__(self, message: str, allowed: list[str]):
        super().__init__(message)
        self.allowed = allowed


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


def parse_size(value: int | float | str) -> int:
    """Parse a memory size: ``17179869184``, ``"16GiB"``, ``"16Gi"``, ``"16G"`` (decimal)."""
    if isinstance(value, bool):
        raise ProfileError(f"{value!r} is not a size")
    if isinstance(value, int | float):
        if value <= 0:
            raise ProfileError(f"size must be positive, got {value!r}")
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise ProfileError(
            f"{value!r} is not a size; use bytes or a number with a unit, e.g. '16GiB' or '500M'"
        )
    unit = (m.group(2) or "").upper().removesuffix("B")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ProfileError(f"size must be positive, got {value!r}")
    return size


def format_bytes(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2)):
        if n >= factor:
            return f"{_fmt_number(round(n / factor, 1))} {unit}"
    return f"{n} B"


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def make_profile(name: str, fields: Mapping, base: Profile | None = None) -> Profile:
    """Build a profile from ``fields``, on top of ``base`` when overriding a built-in one."""
    if not _PROFILE_NAME.match(name):
        raise ProfileError(
            f"profile name {name!r} is not allowed: use lower-case letters, digits, '.' and '-'"
        )
    unknown = sorted(set(fields) - set(_PROFILE_FIELDS))
    if unknown:
        raise ProfileError(
            f"profile {name!r}: unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_PROFILE_FIELDS))}"
        )
    for key, types in _PROFILE_FIELDS.items():
        if key in fields and (
            not isinstance(fields[key], types) or isinstance(fields[key], bool)
        ):
            raise ProfileError(f"profile {name!r}: {key} has the wrong type: {fields[key]!r}")
    values = dict(fields)
    if "memory" in values:
        try:
            values["memory"] = parse_size(values["memory"])
        except ProfileError as e:
            raise ProfileError(f"profile {name!r}: memory: {e}") from None
    if "price" in values and "price_source" not in values:
        # the operator's price: no longer the built-in list price's source
        values["price_source"] = ""
    if "node_labels" in values:
        values["node_labels"] = {str(k): str(v) for k, v in values["node_labels"].items()}
    if base is None:
        missing = [k for k in ("vcpus", "memory") if k not in values]
        if missing:
            raise ProfileError(
                f"profile {name!r} is not in the built-in catalog, so it needs "
                f"{' and '.join(missing)}"
            )
        profile = Profile(name=name, **values)
    else:
        profile = replace(base, **values)
    if profile.vcpus <= 0:
        raise ProfileError(f"profile {name!r}: vcpus must be positive")
    if profile.gpus < 0:
        raise ProfileError(f"profile {name!r}: gpus must be 0 or more")
    if profile.efa < 0:
        raise ProfileError(f"profile {name!r}: efa must be 0 or more")
    if profile.price is not None and profile.price < 0:
        raise ProfileError(f"profile {name!r}: price must be 0 or more (US dollars an hour)")
    return profile


def build_catalog(
    overrides: Mapping[str, Mapping] | None = None,
    builtin: Mapping[str, Profile] = BUILTIN_CATALOG,
) -> dict[str, Profile]:
    """The built-in catalog with the operator's additions and overrides applied."""
    catalog = dict(builtin)
    for name, fields in (overrides or {}).items():
        catalog[name] = make_profile(name, fields or {}, base=catalog.get(name))
    return catalog


@dataclass(frozen=True)
class ProfileRules:
    """Which profiles are offered, and who may use which.

    - ``offered``: the profiles offered at all (None: the whole catalog), in display order;
    - ``everyone``: profiles every signed-in user may use (None: all offered ones);
    - ``groups``: group name -> the profiles its members may use in addition;
    - ``default``: preselected in the form, used when a request names no profile;
    - ``admins_use_all``: admins may use every offered profile.
    """

    offered: tuple[str, ...] | None = None
    everyone: tuple[str, ...] | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: str | None = None
    admins_use_all: bool = True

    def check(self, catalog: Mapping[str, Profile]) -> None:
        """Raise ProfileError naming every reference to a profile the catalog lacks."""
        known = ", ".join(catalog)
        for where, names in self._references():
            for name in names:
                if name not in catalog:
                    raise ProfileError(
                        f"{where}: unknown profile {name!r}; known profiles: {known}"
                    )
        offered = self.offered_names(catalog)
        for where, names in self._references():
            if where == "offered":
                continue
            for name in names:
                if name not in offered:
                    raise ProfileError(
                        f"{where}: profile {name!r} is not offered; offered: {', '.join(offered)}"
                    )

    def _references(self) -> Iterable[tuple[str, Iterable[str]]]:
        yield "offered", self.offered or ()
        if self.default:
            yield "default", (self.default,)
        yield "everyone", self.everyone or ()
        for group, names in self.groups.items():
            yield f"groups.{group}.profiles", names

    def offered_names(self, catalog: Mapping[str, Profile]) -> list[str]:
        return list(self.offered) if self.offered is not None else list(catalog)


def allowed_profiles(
    catalog: Mapping[str, Profile],
    rules: ProfileRules,
    user_groups: Iterable[str] = (),
    is_admin: bool = False,
) -> list[Profile]:
    """The profiles a user with these groups may use, in the catalog's offered order."""
    offered = rules.offered_names(catalog)
    if is_admin and rules.admins_use_all:
        names = set(offered)
    else:
        names = set(offered if rules.everyone is None else rules.everyone)
        for group in user_groups:
            names.update(rules.groups.get(group, ()))
    return [catalog[name] for name in offered if name in names]


def default_profile(allowed: list[Profile], preferred: str | None) -> Profile | None:
    for profile in allowed:
        if profile.name == preferred:
            return profile
    return allowed[0] if allowed else None


def parse_user_options(options: object, keys: Mapping[str, str] = USER_OPTION_KEYS) -> dict:
    """Parse ``user_options`` (from the form or the REST API) into ``{key: name}``.

    ``keys`` maps each allowed key to what it means. Form data arrives as lists of
    strings; the REST API sends any JSON: every value must be one non-empty string.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ProfileError(
            f"user_options must be a JSON object such as {{\"profile\": \"m5.xlarge\"}}, "
            f"got {type(options).__name__}"
        )
    unknown = sorted(str(k) for k in options if k not in keys)
    if unknown:
        allowed = ", ".join(f"{k} ({v})" for k, v in keys.items())
        raise ProfileError(f"unknown user option(s): {', '.join(unknown)}; allowed: {allowed}")
    parsed = {}
    for key, value in options.items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"user option {key!r} must be a name ({keys[key]}), got {value!r}")
        parsed[key] = value.strip()
    return parsed


def choose_profile(
    allowed: list[Profile], options: Mapping, preferred_default: str | None = None
) -> Profile:
    """Validate the parsed options against what the user may use; return the chosen profile."""
    names = [p.name for p in allowed]
    if not allowed:
        raise ProfileNotAllowed(
            "no instance profile is available to you; ask an administrator to add you to a "
            "group that may use one",
            names,
        )
    requested = options.get("profile")
    if requested is None:
        return default_profile(allowed, preferred_default)
    for profile in allowed:
        if profile.name == requested:
            return profile
    raise ProfileNotAllowed(
        f"instance profile {requested!r} is not available to you; choose one of: "
        f"{', '.join(names)}",
        names,
    )


# --- Kubernetes ----------------------------------------------------------------------------

MiB = 1024**2
#: The node label EKS (and Karpenter) set to the EC2 instance type.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: The resource AWS's EFA device plugin advertises.
EFA_RESOURCE = "vpc.amazonaws.com/efa"
#: The taint EKS GPU node groups carry, tolerated by GPU profiles.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeOverhead:
    """What a node keeps for itself, so that a user's pod fits on a node of its type.

    Follows the EKS AMI's kube-reserved rules (CPU: 6 % of the first core, 1 % of the
    second, 0.5 % of the third and fourth, 0.25 % of the rest; memory: 255 MiB + 11 MiB per
    pod for ``max_pods`` pods, plus the 100 MiB hard-eviction threshold), the share of
    nominal memory the kernel keeps (``memory_capacity``), and room for the daemonsets
    every node runs (CNI, kube-proxy, EFS CSI, the NVIDIA device plugin).
    """

    max_pods: int = 110
    memory_capacity: float = 0.95
    daemonset_cpu: float = 0.2
    daemonset_memory: int = 512 * MiB

    def kube_reserved_cpu(self, vcpus: float) -> float:
        shares = ((1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025))
        reserved, left = 0.0, vcpus
        for cores, share in shares:
            take = min(left, cores)
            reserved += take * share
            left -= take
            if left <= 0:
                break
        return reserved

    def kube_reserved_memory(self) -> int:
        return (255 + 11 * self.max_pods + 100) * MiB


def pod_resources(profile: Profile, overhead: NodeOverhead = NodeOverhead()) -> dict:
    """CPU and memory guarantees and limits for a profile's pod.

    The limit is what the node can give pods (its allocatable); the guarantee leaves
    the daemonsets their room on top, so the pod always schedules on its node type.
    """
    cpu_allocatable = profile.vcpus - overhead.kube_reserved_cpu(profile.vcpus)
    mem_allocatable = int(profile.memory * overhead.memory_capacity) - (
        overhead.kube_reserved_memory()
    )
    cpu_guarantee = cpu_allocatable - overhead.daemonset_cpu
    mem_guarantee = mem_allocatable - overhead.daemonset_memory
    if cpu_guarantee <= 0 or mem_guarantee <= 0:
        raise ProfileError(
            f"profile {profile.name!r} is too small for a pod once the node keeps its share "
            f"({profile.vcpus} vCPU, {format_bytes(profile.memory)})"
        )
    return {
        # whole millicores and whole MiB
        "cpu_guarantee": _millicores(cpu_guarantee),
        "cpu_limit": _millicores(cpu_allocatable),
        "mem_guarantee": mem_guarantee // MiB * MiB,
        "mem_limit": mem_allocatable // MiB * MiB,
    }


def kube_resources(profile: Profile, overhead: NodeOverhead = NodeOverhead()) -> dict:
    """``pod_resources`` as a container's ``resources`` (requests, limits, GPUs)."""
    r = pod_resources(profile, overhead)
    resources = {
        "requests": {"cpu": f"{int(r['cpu_guarantee'] * 1000)}m",
                     "memory": f"{r['mem_guarantee'] // MiB}Mi"},
        "limits": {"cpu": f"{int(r['cpu_limit'] * 1000)}m",
                   "memory": f"{r['mem_limit'] // MiB}Mi"},
    }
    for resource, count in _extended(profile).items():
        resources["requests"][resource] = resources["limits"][resource] = count
    return resources


def _extended(profile: Profile) -> dict[str, str]:
    """The device plugins' resources a profile's pod asks for: GPUs and EFA interfaces."""
    wanted = {"nvidia.com/gpu": profile.gpus, EFA_RESOURCE: profile.efa}
    return {resource: str(count) for resource, count in wanted.items() if count}


def _millicores(cpus: float) -> float:
    """Round down to whole millicores (ignoring float noise such as 3.7199999)."""
    return math.floor(cpus * 1000 + 1e-6) / 1000


def node_selector_for(profile: Profile, extra: Mapping[str, str] | None = None) -> dict:
    """The labels a node must carry for a profile's pods."""
    return {INSTANCE_TYPE_LABEL: profile.name, **(extra or {}), **profile.node_labels}


def kubespawner_override(
    profile: Profile,
    overhead: NodeOverhead = NodeOverhead(),
    node_selector: Mapping[str, str] | None = None,
) -> dict:
    """The KubeSpawner traits a profile sets: placement, resources, GPUs, priority."""
    resources = pod_resources(profile, overhead)
    override = {
        "node_selector": node_selector_for(profile, node_selector),
        "cpu_guarantee": resources["cpu_guarantee"],
        "cpu_limit": resources["cpu_limit"],
        # JupyterHub's "M" is 2**20 bytes
        "mem_guarantee": f"{resources['mem_guarantee'] // MiB}M",
        "mem_limit": f"{resources['mem_limit'] // MiB}M",
    }
    extended = _extended(profile)
    if extended:
        override["extra_resource_limits"] = extended
    if profile.gpus:
        override["tolerations"] = [dict(GPU_TOLERATION)]
    if profile.priority_class:
        override["priority_class_name"] = profile.priority_class
    return override


def kubespawner_profile(
    profile: Profile,
    default: bool,
    overhead: NodeOverhead = NodeOverhead(),
    node_selector: Mapping[str, str] | None = None,
) -> dict:
    """A KubeSpawner ``profile_list`` entry for an instance profile."""
    return {
        "slug": profile.name,
        "display_name": profile.title,
        "description": f"{profile.summary}. {profile.description}".rstrip(". ") + ".",
        "default": default,
        "kubespawner_override": kubespawner_override(profile, overhead, node_selector),
    }


@dataclass(frozen=True)
class Machine:
    """What one machine really has (local servers share it; nothing is enforced)."""

    cpus: int
    memory: int  # bytes
    gpus: int = 0

    @property
    def summary(self) -> str:
        gpus = f"{self.gpus} GPU" if self.gpus else "no GPU"
        return f"{self.cpus} CPU · {format_bytes(self.memory)} · {gpus}"

    def falls_short_of(self, profile: Profile) -> bool:
        return (profile.vcpus > self.cpus or profile.memory > self.memory
                or profile.gpus > self.gpus)


def this_machine() -> Machine:
    """The CPUs, memory and NVIDIA GPUs of the machine this runs on."""
    import glob
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpus = len([d for d in glob.glob("/dev/nvidia[0-9]*") if d[len("/dev/nvidia"):].isdigit()])
    return Machine(cpus=os.cpu_count() or 1, memory=memory, gpus=gpus)
