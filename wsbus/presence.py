"""Presence: telling a channel's members who came up and who went down.

The router (:mod:`wsbus.routing`) says which names changed when a session attaches
or detaches; this part turns each change into a ``presence`` frame, written once to
every member of the channel that asked for presence (``hello.presence``).

A member that reads ``presences`` frames (``hello.capabilities``: ``batch``) gets
changes at most once per :data:`TICK` seconds (longer in a large channel): a change
after a quiet spell is written at once, and the changes that follow within the tick
are gathered and written as one frame at its end, so a crowd reconnecting costs one
frame per member per tick instead of one per change. The gathered changes are
always written before the events that follow them (:meth:`Hub._deliver` flushes
first). Other members get each change at once.

With several hubs on one bus (:meth:`Announcer.share`), each local change is also
written to the bus's presence bucket, and the other hubs' changes come back from it:
a name is up on a channel when it is connected to any hub, and a frame is sent only
when that changes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from .broadcast import Writer
from .routing import PresenceChange, Router
from .schema import Presence as PresenceFrame
from .schema import PresenceChange as ChangeItem
from .schema import Presences as PresencesFrame
from .session import Session

__all__ = ["TICK", "Announcer", "SharedPresence"]

Info = dict[str, Any]

#: at most one presence write per member per TICK seconds, for the members that
#: read ``presences`` frames (a crowd of n joining over t seconds costs n·t/TICK
#: writes); a change after a quiet spell is not held
TICK = 0.25
#: seconds more of gathering per member of the largest channel waiting: a flush
#: writes once to every member (about 5 µs each), so however large the channel,
#: writing presence takes at most about a tenth of the hub's time (10,000 members:
#: gathered for 0.5 s)
TICK_PER_MEMBER = 50e-6


def _gathered(channel: str, frames: list[PresenceFrame]) -> PresencesFrame:
    """Several changes of ``channel`` as one ``presences`` frame (channel and time once)."""
    return PresencesFrame(
        channel=channel,
        ts=time.time(),
        changes=[ChangeItem(f.name, f.state, f.kind, f.model, f.role, f.host) for f in frames],
    )


class SharedPresence(Protocol):
    """The bus's presence bucket, as this hub sees it (:mod:`wsbus.jetstream.presence`)."""

    on_change: Callable[[str, str, str, Info | None], None] | None

    def local(self, channel: str, name: str, info: Info | None) -> None: ...

    def remote_names(self) -> list[tuple[str, str, str, Info]]: ...


class Announcer:
    """Announces presence changes (see the module docstring)."""

    def __init__(self, router: Router, writer: Writer) -> None:
        self.router = router
        self.writer = writer
        self.shared: SharedPresence | None = None
        #: channel -> name -> {hub: info}: connected to other hubs of the bus
        self.remote: dict[str, dict[str, dict[str, Info]]] = {}
        #: channel -> the changes not yet written to its batch-reading members
        self.gathered: dict[str, list[PresenceFrame]] = {}
        self._timer: asyncio.Handle | None = None
        #: the loop time of the last flush: the next one is due a tick after it
        self._flushed = -math.inf

    def share(self, shared: SharedPresence) -> None:
        """Write this hub's changes to the bus's presence, and hear the others'."""
        self.shared = shared
        for channel, name, hub, info in shared.remote_names():  # connected elsewhere now
            self.remote.setdefault(channel, {}).setdefault(name, {})[hub] = info
        shared.on_change = self.remote_changed

    def announce(self, changes: list[PresenceChange], info: Info) -> None:
        """Tell each changed channel's members (those who want presence)."""
        now = time.time()
        for ch in changes:
            if self.shared is not None:
                self.shared.local(ch.channel, ch.name, dict(info) if ch.up else None)
                if ch.name in self.remote.get(ch.channel, ()):
                    continue  # connected to another hub: up all along
            self._tell(ch.channel, ch.name, ch.up, info, now)

    def remote_changed(self, channel: str, name: str, hub: str, info: Info | None) -> None:
        """A name came up (``info``) or went down (None) on another hub."""
        before = self.connected(channel, name)
        names = self.remote.setdefault(channel, {})
        hubs = names.setdefault(name, {})
        last = hubs.get(hub, {})
        if info is None:
            hubs.pop(hub, None)
        else:
            hubs[hub] = info
        if not hubs:
            del names[name]
            if not names:
                del self.remote[channel]
        after = self.connected(channel, name)
        if before != after:
            self._tell(channel, name, after, info or last, time.time())

    def connected(self, channel: str, name: str) -> bool:
        """Whether ``name`` is connected on ``channel`` to this hub or another."""
        return name in self.remote.get(channel, ()) or self.router.serves(channel, name)

    def remote_online(self, channel: str) -> dict[str, tuple[int, Info]]:
        """Names connected on ``channel`` to other hubs only: (hubs, info)."""
        return {
            name: (len(hubs), next(iter(hubs.values())))
            for name, hubs in self.remote.get(channel, {}).items()
            if not self.router.serves(channel, name)
        }

    def _tell(self, channel: str, name: str, up: bool, info: Info, now: float) -> None:
        frame = PresenceFrame(
            channel=channel,
            name=name,
            state="up" if up else "down",
            ts=now,
            kind=info.get("kind"),
            model=info.get("model"),
            role=info.get("role"),
            host=info.get("host"),
        )
        now_ = cast(list[Session], self.router.presence_one_by_one(channel))
        if now_:
            self.writer.push(now_, frame)
        self.gathered.setdefault(channel, []).append(frame)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            tick = max(TICK, self.router.size(channel) * TICK_PER_MEMBER)
            wait = self._flushed + tick - loop.time()
            if wait <= 0:  # after a quiet spell: at once, once what is being written is
                self._timer = loop.call_soon(self.flush)  # (a delivery, an answer)
            else:
                self._timer = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Write the gathered changes to each channel's batch-reading members: one
        ``presence`` alone, else one ``presences`` frame."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.gathered:
            return
        self._flushed = asyncio.get_running_loop().time()
        gathered, self.gathered = self.gathered, {}
        for channel, frames in gathered.items():
            members = cast(list[Session], self.router.channel_sessions(channel))
            targets = [s for s in members if s.wants_presence and s.batch]
            if targets:
                batch = frames[0] if len(frames) == 1 else _gathered(channel, frames)
                self.writer.push(targets, batch)
