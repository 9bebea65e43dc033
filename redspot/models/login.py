"""Signing in to the registry's UI in a browser: the hub's OAuth, as every hub service.

A browser that opens ``/services/models/`` without a session is sent to the hub's OAuth
authorization page (with a state and a PKCE challenge kept in a signed cookie); the hub
sends it back to ``/services/models/oauth_callback`` with a code, which the service
exchanges for the user's token. The token is kept in a signed, HttpOnly cookie on the
service's path; every request is then checked with the hub as an API request would be.
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "redspot-models-session"
STATE_COOKIE = "redspot-models-oauth-state"
#: How long a browser session lasts before the hub is asked again.
SESSION_MAX_AGE = 7 * 24 * 3600


class LoginError(ValueError):
    """The OAuth round trip failed; the message says why."""


class BrowserLogin:
    def __init__(self, oauth, secret: bytes, path: str):
        self.oauth = oauth  # a HubOAuth
        self.path = path  # the service's prefix, where its cookies live
        self._session = URLSafeTimedSerializer(secret, salt="redspot-models-session")
        self._state = URLSafeTimedSerializer(secret, salt="redspot-models-oauth-state")

    @staticmethod
    def _cookies(headers: dict[str, str]) -> SimpleCookie:
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header: no session
            return SimpleCookie()
        return jar

    def token(self, headers: dict[str, str]) -> str | None:
        """The hub token of the browser's session, if it has a valid one."""
        morsel = self._cookies(headers).get(SESSION_COOKIE)
        if morsel is None:
            return None
        try:
            return self._session.loads(morsel.value, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None

    def start(self, next_url: str, secure: bool) -> tuple[str, str]:
        """Where to send the browser, and the state cookie to set."""
        verifier, challenge, method = self.oauth.generate_pkce_code_challenge()
        state = secrets.token_urlsafe(16)
        cookie = self._state.dumps({"state": state, "next": next_url, "verifier": verifier})
        location = self.oauth.login_url + "&" + urlencode({
            "state": state, "code_challenge": challenge, "code_challenge_method": method})
        return location, self._cookie(STATE_COOKIE, cookie, secure, max_age=600)

    async def finish(self, query: dict[str, str], headers: dict[str, str]) -> tuple[str, str]:
        """The user's token and where they were going, from the hub's redirect."""
        morsel = self._cookies(headers).get(STATE_COOKIE)
        if morsel is None:
            raise LoginError("the sign-in started too long ago or in another browser: "
                             "open the page again")
        try:
            saved = self._state.loads(morsel.value, max_age=600)
        except BadSignature:
            raise LoginError("the sign-in state is not valid: open the page again") from None
        if not query.get("code") or not secrets.compare_digest(
                query.get("state", ""), saved["state"]):
            raise LoginError("the hub's answer does not match this sign-in: open the page "
                             "again")
        token = await self.oauth.token_for_code(query["code"], code_verifier=saved["verifier"],
                                                sync=False)
        return token, saved["next"]

    def session_cookie(self, token: str, secure: bool) -> str:
        return self._cookie(SESSION_COOKIE, self._session.dumps(token), secure,
                            max_age=SESSION_MAX_AGE)

    def clear_state_cookie(self, secure: bool) -> str:
        return self._cookie(STATE_COOKIE, "", secure, max_age=0)

    def _cookie(self, name: str, value: str, secure: bool, max_age: int) -> str:
        flags = f"; Path={self.path}; HttpOnly; SameSite=Lax; Max-Age={max_age}"
        return f"{name}={value}{flags}{'; Secure' if secure else ''}"
