"""Redspot's custom JupyterHub scopes, and the roles that grant them.

Every Redspot service checks one of these on each request (after the hub has said who
is asking). The hub config declares them in ``custom_scopes`` and grants them in roles.
"""

from __future__ import annotations

ENVIRONMENTS_READ = "custom:redspot:environments:read"
ENVIRONMENTS_WRITE = "custom:redspot:environments:write"
ENVIRONMENTS_ADMIN = "custom:redspot:environments:admin"
WAREHOUSE_USE = "custom:redspot:warehouse:use"
WAREHOUSE_ADMIN = "custom:redspot:warehouse:admin"

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
    WAREHOUSE_USE: {
        "description": "List the warehouse connections one's groups may use, and get "
                       "short-lived credentials for them.",
    },
    WAREHOUSE_ADMIN: {
        "description": "Use every warehouse connection, and read the grant log.",
        "subscopes": [WAREHOUSE_USE],
    },
}


def service_roles(services: list[str], admin_users: list[str]) -> list[dict]:
    """Roles for the enabled services: users use them, admins administer them."""
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
    # a server's own token ($JUPYTERHUB_API_TOKEN: kernels use it) reaches the services,
    # as its user: code in the server runs as the user anyway
    server_scopes = ["users:activity!user", "access:servers!server", *access]
    if "environments" in services:
        server_scopes.append(ENVIRONMENTS_WRITE)
    if "warehouse" in services:
        server_scopes.append(WAREHOUSE_USE)
    return [
        {"name": "user", "scopes": user_scopes},
        {"name": "server", "scopes": server_scopes},
        {"name": "redspot-admin", "description": "Administers Redspot's services",
         "scopes": admin_scopes, "users": list(admin_users)},
    ]
