"""Which hub names may exist and which system accounts Redspot's processes run as (pure).

One rule, used at signup, by ``redspot users add``, by the hub's REST API and admin page
(the authenticators' ``validate_username``), and by the privileged helper before it
creates or uses an account:

- ``team`` names the environments every user shares, ``root`` the machine's owner:
  neither can be a hub user; nor can the name of any system account below the normal
  uid range (``daemon``, ``postgres``...), which a server could otherwise run as;
- a removed user's name is *retired*: nobody gets it (and so nobody inherits their home,
  models or environments) until an admin restores that user.

Redspot's own accounts hold ``_``, which a per-user account's safe name never does, so
no hub user's account can ever be called like one of them:

    <prefix><safe user name>    a user's server, Ray head and kernels   redspot-alice
    <prefix>grp_<group>         a shared folder's group                 redspot-grp_vision
    <prefix>svc_<service>       a Redspot service, and the proxy        redspot-svc_models
    <prefix>bld_<owner>         the builds of one owner's environments  redspot-bld_alice
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..spawner.storage import safe_name

#: Names no hub user may take, whatever the authenticator says.
RESERVED_NAMES = frozenset({"team", "root"})
#: Services that run under an account of their own (the proxy is JupyterHub's, run as
#: one of Redspot's: it holds the proxy's token and nothing else).
SERVICES = ("environments", "models", "warehouse", "sharing", "proxy")
DEFAULT_PREFIX = "redspot-"
#: What Debian's useradd takes as an account name (at most 32 characters).
ACCOUNT_NAME = re.compile(r"^[a-z][-a-z0-9_]{0,31}$")


@cache
def uid_min(login_defs: str = "/etc/login.defs") -> int:
    """The first uid of ordinary accounts on this machine (``UID_MIN``, usually 1000)."""
    try:
        for line in Path(login_defs).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                return int(parts[1])
    except OSError:
        pass
    return 1000


def system_account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def name_problem(name: str, retired: Callable[[str], bool] = lambda n: False,
                 lookup: Callable[[str], pwd.struct_passwd | None] = system_account,
                 first_uid: int | None = None) -> str | None:
    """Why ``name`` cannot be a hub user, or None."""
    if name in RESERVED_NAMES:
        return (f"the name {name!r} is reserved by Redspot"
                + (" (it names the team's shared environments)" if name == "team" else "")
                + "; choose another name")
    account = lookup(name)
    if account is not None and account.pw_uid < (first_uid or uid_min()):
        return (f"the name {name!r} is a system account of this machine "
                f"(uid {account.pw_uid}); choose another name")
    if retired(name):
        return (f"the name {name!r} belonged to a user who was removed; an admin may "
                f"restore that user (`redspot users restore {name}`), or choose another name")
    return None


def service_account_name(service: str, prefix: str = DEFAULT_PREFIX) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; Redspot's services: "
                         f"{', '.join(SERVICES)}")
    return _checked(f"{prefix or DEFAULT_PREFIX}svc_{service}")


def build_account_name(owner: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The account that builds ``owner``'s environments (``team``: the team's)."""
    base = f"{prefix or DEFAULT_PREFIX}bld_"
    return _checked(base + safe_name(owner, max_length=32 - len(base)))


def _checked(account: str) -> str:
    if not ACCOUNT_NAME.match(account):
        raise ValueError(f"{account!r} is not a valid account name: [a-z][-a-z0-9_]*, "
                         "at most 32 characters")
    return account
