"""Each OAuthenticator, with Redspot's names and removals (``lifecycle.py``) first in its
bases: ``redspot.hub.oauth.GitHubOAuthenticator`` is ``oauthenticator``'s of that name,
keeping its name so that ``c.GitHubOAuthenticator`` settings apply as they do to it.
"""

from __future__ import annotations

import importlib
from functools import cache

from .lifecycle import RedspotLifecycle


@cache
def _wrapped(name: str):
    from ..config.layers import OAUTH_PROVIDERS

    for path in OAUTH_PROVIDERS.values():
        module, cls_name = path.rsplit(".", 1)
        if cls_name == name:
            base = getattr(importlib.import_module(module), cls_name)
            return type(name, (RedspotLifecycle, base), {"__module__": __name__,
                                                          "__doc__": base.__doc__})
    raise AttributeError(name)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _wrapped(name)
