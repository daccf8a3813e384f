"""Presence: telling a channel's members who came up and who went down.

The router (:mod:`wsbus.routing`) says which names changed when a session attaches
or detaches; this part turns each change into a ``presence`` frame, written once to
every member of the channel that asked for presence (``hello.presence``).
"""

from __future__ import annotations

import time
from typing import Any, cast

from .broadcast import Writer
from .routing import PresenceChange, Router
from .schema import Presence as PresenceFrame
from .session import Session

__all__ = ["Announcer"]


class Announcer:
    """Announces presence changes (see the module docstring)."""

    def __init__(self, router: Router, writer: Writer) -> None:
        self.router = router
        self.writer = writer

    def announce(self, changes: list[PresenceChange], info: dict[str, Any]) -> None:
        """Tell each changed channel's members (those who want presence)."""
        now = time.time()
        for ch in changes:
            frame = PresenceFrame(
                channel=ch.channel,
                name=ch.name,
                state="up" if ch.up else "down",
                ts=now,
                kind=info.get("kind"),
                model=info.get("model"),
                role=info.get("role"),
                host=info.get("host"),
            )
            targets = [
                cast(Session, s)
                for s in self.router.channel_sessions(ch.channel)
                if cast(Session, s).wants_presence
            ]
            self.writer.push(targets, frame)
