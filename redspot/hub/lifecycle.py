"""Hub users' names and lifecycle, for every authenticator Redspot uses.

``RedspotLifecycle`` goes first in the bases of each authenticator Redspot configures
(its own password one, PAM, each OAuthenticator: ``redspot.hub.oauth``):

- ``validate_username`` refuses reserved names (``team``, ``root``, the machine's system
  accounts) and retired ones, wherever JupyterHub asks: sign-in, signup, the REST API and
  the admin page (``redspot.privileged.accounts.name_problem`` is the one rule);
- ``delete_user`` (``DELETE /hub/api/users/NAME``, the admin page, ``redspot users
  remove``; the hub has stopped the server and drops the user's tokens itself) retires
  the user: the privileged helper stops what still runs as their account, locks and
  renames it, and moves their home aside; the name is retired, so nobody signs up as
  them and inherits their home, models or environments. ``redspot users restore NAME``
  brings the user back;
- renaming a user through the REST API is refused (their account, home, models and
  environments follow the name).
"""

from __future__ import annotations

import asyncio
import json

from jupyterhub.apihandlers.users import UserAPIHandler
from tornado import web
from traitlets import Bool, Unicode
from traitlets.config import LoggingConfigurable

from ..privileged.accounts import name_problem
from .userstore import UserStore


class RedspotLifecycle(LoggingConfigurable):
    """Put first in an authenticator's bases (see the module's docstring)."""

    users_db = Unicode(
        config=True,
        help="""SQLite file holding Redspot's accounts and retired names.

        Default: ``<data>/hub/users.sqlite``, set by ``redspot up``.
        """,
    )
    data_dir = Unicode(config=True, help="The data folder. Set by ``redspot up``.")
    helper_socket = Unicode(
        config=True, help="The privileged helper's socket. Set by ``redspot up``.")
    account_prefix = Unicode("redspot-", config=True,
                             help="Prefix of per-user system accounts (as the spawner's).")
    isolated = Bool(False, config=True,
                    help="Whether users have system accounts of their own. Set by ``redspot up``.")

    @property
    def store(self) -> UserStore:
        if not self.users_db:
            raise RuntimeError(f"{type(self).__name__}.users_db is not set")
        return UserStore(self.users_db)

    def name_problem(self, name: str) -> str | None:
        return name_problem(name, retired=self.store.is_retired if self.users_db else
                            (lambda n: False))

    def validate_username(self, username):
        if not super().validate_username(username):
            return False
        problem = self.name_problem(username)
        if problem:
            self.log.warning("Refused the user name %r: %s", username, problem)
            return False
        return True

    def helper(self):
        from ..privileged.client import helper_for

        return helper_for(self.helper_socket, self.data_dir, prefix=self.account_prefix,
                          isolated=self.isolated)

    async def delete_user(self, user):
        super().delete_user(user)
        record = await asyncio.to_thread(retire, self, user.name)
        self.log.info("Retired the user %s: %s", user.name, json.dumps(record))

    def get_handlers(self, app):
        return [(r"/api/users/([^/]+)", NoRenameUserAPIHandler), *super().get_handlers(app)]


def retire(authenticator: RedspotLifecycle, name: str) -> dict:
    """What removing ``name`` does once their server is stopped (blocking)."""
    record = {}
    if authenticator.data_dir:
        record = authenticator.helper().call("retire_user", user=name)
    authenticator.store.retire(name, record)
    return record


class NoRenameUserAPIHandler(UserAPIHandler):
    """JupyterHub's ``/hub/api/users/NAME``, without renames."""

    async def patch(self, user_name):
        data = self.get_json_body()
        if isinstance(data, dict) and "name" in data and data["name"] != user_name:
            raise web.HTTPError(
                400, "Redspot does not rename users: their system account, home, models and "
                "environments follow the name. Add a user of the new name instead (and "
                "remove the old one when they no longer need it).")
        return await super().patch(user_name)
