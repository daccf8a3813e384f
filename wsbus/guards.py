"""The checks both transports make on an HTTP request before anything else.

A hub without tokens listening on loopback answers only requests addressed to
loopback (a web page that rebinds its DNS name to 127.0.0.1 keeps that name in
``Host``), and browsers' pages only from the origins the hub allows. The websocket
server (``wsbus/server.py``, before the upgrade) and the HTTP shim
(``compat/http.py``) both ask :class:`Guards`, so they decide and word it alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from .auth import is_loopback, loopback_host_header

__all__ = ["HOST_REFUSED", "Guards"]

HOST_REFUSED = "Host is not this machine's loopback (DNS rebinding?); use 127.0.0.1"


class Guards:
    """Host and Origin checks for one listening address."""

    def __init__(self, host: str, *, authenticated: bool, allow_origins: Sequence[str] = ()):
        #: a loopback hub without tokens answers only requests addressed to loopback
        self.guard_host = not authenticated and is_loopback(host)
        self.authenticated = authenticated
        #: browsers' Origin values accepted ("*": any); requests without Origin always are
        self.allow_origins = list(dict.fromkeys(allow_origins))

    def host_refused(self, hosts: Iterable[str | None]) -> str | None:
        """Why a request with these ``Host`` headers is refused (every one counts: a
        duplicate is no excuse), or None."""
        if self.guard_host and not all(loopback_host_header(h) for h in hosts):
            return HOST_REFUSED
        return None

    def origin_refused(self, origin: str | None) -> str | None:
        """Why a request from the browser origin ``origin`` is refused, or None."""
        if origin is None or "*" in self.allow_origins or origin in self.allow_origins:
            return None
        return f"browser origin {origin[:100]!r} is not allowed (--allow-origin)"

    def own_origin(self, origin: str | None, hosts: Sequence[str | None], scheme: str) -> bool:
        """Whether ``origin`` is the origin of the very URL asked (a page this port
        served: the dashboard). Only where DNS rebinding cannot forge it: on a hub with
        tokens (a rebound page has none), or when ``Host`` is an address or
        ``localhost`` (a rebound page's ``Host`` is its own domain name, single-label
        names included: search domains, LLMNR and mDNS resolve those)."""
        if origin is None or len(hosts) != 1 or hosts[0] is None:
            return False
        host = hosts[0]
        if origin != f"{scheme}://{host}":
            return False
        return self.authenticated or _address_or_localhost(host)

    def websocket_origins(self) -> list[str | None] | None:
        """The ``origins`` argument of ``websockets.serve`` for the same rule (None:
        no check; ``None`` in the list: requests without Origin)."""
        if "*" in self.allow_origins:
            return None
        return [None, *self.allow_origins]


def _address_or_localhost(host_header: str) -> bool:
    """``Host`` names an IP address (v4, [v6]) or ``localhost``, with any port."""
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
