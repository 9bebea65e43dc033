"""Redspot's password authenticator: accounts kept in the data folder, no outside service.

- an ``admin`` account is created by ``redspot up`` on first start, with a generated
  password stored in the data folder (mode 0600) and printed at start;
- the admin adds users with ``redspot users add NAME`` (which prints a password);
- with ``signup: approval`` or ``signup: open`` people create their own account at
  ``/hub/signup``; with ``approval`` it signs in only once an admin ran
  ``redspot users approve NAME``.
"""

from __future__ import annotations

from jupyterhub.auth import Authenticator, PAMAuthenticator
from jupyterhub.handlers import BaseHandler
from tornado import web
from traitlets import Enum, default

from .lifecycle import RedspotLifecycle
from .userstore import UserStoreError, validate_password, validate_username


class RedspotPasswordAuthenticator(RedspotLifecycle, Authenticator):
    signup = Enum(
        ["disabled", "approval", "open"],
        default_value="disabled",
        config=True,
        help="""May people create their own account at /hub/signup?

        ``disabled`` (default): only an admin adds accounts (``redspot users add``).
        ``approval``: anyone may ask; an admin approves (``redspot users approve NAME``).
        ``open``: anyone may sign up and sign in at once.
        """,
    )

    @default("allow_all")
    def _allow_all_default(self):
        # everyone who has an account in the store may sign in, unless the operator
        # narrowed it with auth.allowed_users
        return not any("allowed_users" in self.config.get(cls.__name__, {})
                       for cls in type(self).mro())

    @default("allowed_users")
    def _store_accounts(self):
        # the store's accounts, so that the hub lists them (admin page, REST API) from
        # its start, not only after their first sign-in; who may sign in is still the
        # store's (allow_all), with their password
        return {account.name for account in self.store.list()} if self.users_db else set()

    def add_user(self, user):
        """A user the hub added (admin page, REST API) gets an account without a
        password: they sign in once an admin sets one."""
        super().add_user(user)
        if self.users_db and self.store.get(user.name) is None:
            self.store.add(user.name, None)
            self.log.warning(
                "User %s was added on the hub: they can sign in once an admin sets their "
                "password (`redspot users passwd %s`, or Accounts on the Redspot home page)",
                user.name, user.name)

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", "") or "")
        password = data.get("password", "") or ""
        account = self.store.verify(name, password)
        if account is None:
            self.log.warning("Failed login for %r", name)
            return None
        if not account.approved:
            raise web.HTTPError(
                403, f"The account {name!r} is waiting for an administrator's approval."
            )
        return name

    def get_handlers(self, app):
        handlers = super().get_handlers(app)
        if self.signup != "disabled":
            handlers.append((r"/signup", SignupHandler))
        return handlers


class RedspotPAMAuthenticator(RedspotLifecycle, PAMAuthenticator):
    """JupyterHub's PAM authenticator, with Redspot's names and removals."""


class SignupHandler(BaseHandler):
    """``/hub/signup``: create an account (when the operator allows signup)."""

    async def _render(self, message="", error="", username=""):
        html = await self.render_template(
            "signup.html",
            message=message,
            error=error,
            username=username,
            xsrf=self.xsrf_token.decode("ascii"),
            approval=self.authenticator.signup == "approval",
        )
        self.finish(html)

    async def get(self):
        await self._render()

    async def post(self):
        username = self.authenticator.normalize_username(self.get_body_argument("username", ""))
        password = self.get_body_argument("password", "")
        confirm = self.get_body_argument("password_confirm", "")
        try:
            validate_username(username)
            problem = self.authenticator.name_problem(username)
            if problem:
                raise UserStoreError(problem)
            validate_password(password)
            if password != confirm:
                raise UserStoreError("the two passwords differ")
            approved = self.authenticator.signup == "open"
            self.authenticator.store.add(username, password, approved=approved)
        except UserStoreError as e:
            self.set_status(400)
            await self._render(error=str(e), username=username)
            return
        self.log.info("New account %r signed up (approved: %s)", username, approved)
        if approved:
            await self._render(message="Your account is ready: you can sign in now.")
        else:
            await self._render(
                message="Your account was created. You can sign in once an administrator "
                "approves it."
            )
