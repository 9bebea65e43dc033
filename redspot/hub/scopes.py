"""Redspot's custom JupyterHub scopes, and the roles that grant them.

Every Redspot service checks one of these on each request (after the hub has said who
is asking). The hub config declares them in ``custom_scopes`` and grants them in roles.
"""

from __future__ import annotations

ENVIRONMENTS_READ = "custom:redspot:environments:read"
ENVIRONMENTS_WRITE = "custom:redspot:environments:write"
ENVIRONMENTS_ADMIN = "custom:redspot:environments:admin"
ENVIRONMENTS_READY = "custom:redspot:environments:ready"
WAREHOUSE_USE = "custom:redspot:warehouse:use"
WAREHOUSE_ADMIN = "custom:redspot:warehouse:admin"
SHARES_USE = "custom:redspot:shares:use"
SHARES_ADMIN = "custom:redspot:shares:admin"
#: JupyterHub's own scope for its metrics: Redspot's services ask it for theirs too.
METRICS = "read:metrics"

CUSTOM_SCOPES = {
    ENVIRONMENTS_READ: {
        "description": "List and read environments, and their build logs.",
    },
    ENVIRONMENTS_WRITE: {
        "description": "Create personal environments and delete one's own.",
        "subscopes": [ENVIRONMENTS_READ],
    },
    ENVIRONMENTS_ADMIN: {
        "description": "Publish team environments and delete anyone's.",
        "subscopes": [ENVIRONMENTS_WRITE],
    },
    ENVIRONMENTS_READY: {
        "description": "See which built environments any user may start a server in "
                       "(the hub's spawner asks it; nothing else).",
    },
    WAREHOUSE_USE: {
        "description": "List the warehouse connections one's groups may use, and get "
                       "short-lived credentials for them.",
    },
    WAREHOUSE_ADMIN: {
        "description": "Use every warehouse connection, and read the grant log.",
        "subscopes": [WAREHOUSE_USE],
    },
    SHARES_USE: {
        "description": "Share files and folders of one's home read-only, revoke those "
                       "shares, and list what others shared with one.",
    },
    SHARES_ADMIN: {
        "description": "List, make and revoke anyone's shares.",
        "subscopes": [SHARES_USE],
    },
}


#: What inviting others into one's server takes (JupyterHub's sharing).
SERVER_SHARING_SCOPES = ["shares!user", "read:users:name", "read:groups:name"]


def service_roles(services: list[str], admin_users: list[str],
                  invite_groups: list[str] = ()) -> list[dict]:
    """Roles for the enabled services: users use them, admins administer them; with the
    sharing service, members of ``invite_groups`` (``*``: every user) may invite others
    into their own servers."""
    if not services:
        return []
    access = [f"access:services!service={name}" for name in services]
    user_scopes = ["self", *access]
    admin_scopes = [*access]
    if "environments" in services:
        user_scopes.append(ENVIRONMENTS_WRITE)
        admin_scopes.append(ENVIRONMENTS_ADMIN)
    if "warehouse" in services:
        user_scopes.append(WAREHOUSE_USE)
        admin_scopes.append(WAREHOUSE_ADMIN)
    if "sharing" in services:
        user_scopes.append(SHARES_USE)
        admin_scopes.append(SHARES_ADMIN)
    inviters = []
    if "sharing" in services and "*" in invite_groups:
        user_scopes += SERVER_SHARING_SCOPES
    elif "sharing" in services and invite_groups:
        inviters = [{"name": "redspot-server-sharing", "groups": sorted(invite_groups),
                     "description": "Invite others into one's own server (they run code "
                                    "as its owner)",
                     "scopes": list(SERVER_SHARING_SCOPES)}]
    # a server's own token ($JUPYTERHUB_API_TOKEN: kernels use it) reaches the services,
    # as its user: code in the server runs as the user anyway
    server_scopes = ["users:activity!user", "access:servers!server", *access]
    if "environments" in services:
        server_scopes.append(ENVIRONMENTS_WRITE)
    if "warehouse" in services:
        server_scopes.append(WAREHOUSE_USE)
    if "sharing" in services:
        # and JupyterHub's own server sharing, which a token has only where its owner
        # has it (a member of ``invite_groups``)
        server_scopes += [SHARES_USE, *SERVER_SHARING_SCOPES]
    return [
        {"name": "user", "scopes": user_scopes},
        {"name": "server", "scopes": server_scopes},
        {"name": "redspot-admin", "description": "Administers Redspot's services",
         "scopes": admin_scopes, "users": list(admin_users)},
        *inviters,
    ]
