"""Writing one frame to many sessions: encoded once per codec, the same bytes to
every session, and the ones that stopped reading reported.

The transport may bring a faster way to write the same bytes to many connections
(the websocket server's ``ws_broadcast``); without one, each session is written in
turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .codec import JSON, MSGPACK
from .schema import HubFrame
from .session import Session

__all__ = ["Broadcaster", "Writer", "default_broadcast"]

Broadcaster = Callable[[list[Session], bytes, bool, int], list[Session]]
"""Writes one encoded frame to many sessions (the transport's fast path) and returns
those whose unread bytes now exceed the limit (the slow consumers)."""


def default_broadcast(
    sessions: list[Session], payload: bytes, binary: bool, limit: int
) -> list[Session]:
    """Write ``payload`` to each session in turn."""
    for s in sessions:
        s.write(payload)
    return [s for s in sessions if s.buffered() > limit]


class Writer:
    """Frames to many sessions; a session past ``limit`` unread bytes goes to ``slow``."""

    def __init__(self, broadcast: Broadcaster, limit: int, slow: Callable[[Session], None]) -> None:
        self.broadcast = broadcast
        #: unread bytes before a session is a slow consumer (``send_queue``)
        self.limit = limit
        self._slow = slow

    def write_all(self, sessions: Iterable[Session], frame: HubFrame) -> None:
        """Encode ``frame`` once per codec, write it to every session, report slow ones."""
        json_targets: list[Session] = []
        mp_targets: list[Session] = []
        for s in sessions:
            (mp_targets if s.codec.binary else json_targets).append(s)
        slow: list[Session] = []
        if json_targets:
            slow += self.broadcast(json_targets, JSON.encode(frame), False, self.limit)
        if mp_targets:
            slow += self.broadcast(mp_targets, MSGPACK.encode(frame), True, self.limit)
        for s in slow:
            self._slow(s)

    def push(self, targets: Iterable[Session], frame: HubFrame) -> None:
        """Write a non-event frame (presence, receipt) to those still open."""
        self.write_all([s for s in targets if not s.closed], frame)
