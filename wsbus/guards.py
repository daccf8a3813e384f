"""The checks both transports make on an HTTP request before anything else.

A hub without tokens listening on loopback answers only requests addressed to
loopback (a web page that rebinds its DNS name to 127.0.0.1 keeps that name in
``Host``), and browsers' pages only from the origins the hub allows. The websocket
server (``wsbus/server.py``, before the upgrade) and the HTTP shim
(``compat/http.py``) both ask :class:`Guards`, so they decide and word it alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .auth import is_loopback, loopback_host_header

__all__ = ["HOST_REFUSED", "Guards"]

HOST_REFUSED = "Host is not this machine's loopback (DNS rebinding?); use 127.0.0.1"


class Guards:
    """Host and Origin checks for one listening address."""

    def __init__(self, host: str, *, authenticated: bool, allow_origins: Sequence[str] = ()):
        #: a loopback hub without tokens answers only requests addressed to loopback
        self.guard_host = not authenticated and is_loopback(host)
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

    def websocket_origins(self) -> list[str | None] | None:
        """The ``origins`` argument of ``websockets.serve`` for the same rule (None:
        no check; ``None`` in the list: requests without Origin)."""
        if "*" in self.allow_origins:
            return None
        return [None, *self.allow_origins]
