"""Where a browser's request comes from (pure): what stands in for an XSRF token on pages
that cannot send one (MLflow's UI, Ray's dashboard)."""

from __future__ import annotations

from urllib.parse import urlparse

#: Methods that change nothing.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_origin_problem(headers, protocol: str, host: str) -> str | None:
    """Why a browser's state-changing request may come from another site's page, or None.

    ``Sec-Fetch-Site: same-origin`` (sent by every current browser) or an ``Origin`` of
    this ``host`` pass (the scheme is not compared: TLS may end at a proxy in front); a
    request with neither header is refused (browsers send at least one with every POST).
    Under path-based hosting every user's server shares one origin, so this tells this
    server's pages from other sites' only: per-user subdomains (``hub.subdomain_host``)
    give each user an origin of their own.
    """
    site = headers.get("Sec-Fetch-Site") or headers.get("sec-fetch-site")
    origin = headers.get("Origin") or headers.get("origin")
    if origin:
        if urlparse(origin).netloc != host:
            return f"it came from a page of {origin}, not of {protocol}://{host}"
        return None
    if site:
        return None if site in ("same-origin", "none") else (
            f"it came from a {site} page (Sec-Fetch-Site)")
    return "the request says neither where it comes from (Origin) nor Sec-Fetch-Site"
