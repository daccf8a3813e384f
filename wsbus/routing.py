"""Who receives what: subscriptions, entitlement and presence, as plain synchronous code.

The router knows sessions only as objects with ``names``, ``channels`` and
``watch``; it never touches sockets, so every routing rule is tested without
them (``tests/test_routing.py``).

Rules:

- a direct event (``to`` = a name) goes to every session acting for that name
  on the event's channel, and to the channel's watchers;
- a broadcast (``to`` = ``*``) goes to every session on the channel except the
  sessions acting for the sender alone (watchers see their own broadcasts too; a
  bridge acting for several names gets one name's broadcasts for the others);
  the rule is :func:`wsbus.entitlement.receives` (its SQL form beside it), which
  :meth:`Router.recipients` answers from its indexes;
- a name is *up* on a channel while at least one session acts for it there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

import msgspec

from .entitlement import receives
from .schema import BROADCAST

__all__ = ["PresenceChange", "Routable", "Router", "entitled"]


class Routable(Protocol):
    """What the router needs to know about a session."""

    names: tuple[str, ...]
    channels: set[str]
    watch: bool
    wants_presence: bool
    batch: bool


class PresenceChange(msgspec.Struct, frozen=True):
    """A name went up or down on a channel."""

    channel: str
    name: str
    up: bool


def entitled(names: Collection[str], watch: bool, sender: str, to: str) -> bool:
    """Whether a session acting for ``names`` receives an event from ``sender`` to ``to``."""
    return watch or receives(names, sender, to)


class Router:
    """Subscription index: channel -> sessions, (channel, name) -> sessions."""

    def __init__(self) -> None:
        self._channel: dict[str, dict[int, Routable]] = {}
        self._direct: dict[tuple[str, str], dict[int, Routable]] = {}
        self._watchers: dict[str, dict[int, Routable]] = {}
        #: channel -> its members that want presence one frame per change (they do
        #: not read ``presences``): kept apart, so a change costs no walk of a crowd
        self._one_by_one: dict[str, dict[int, Routable]] = {}
        #: name -> every open session acting for it (any channels, or none)
        self.by_name: dict[str, set[Routable]] = {}

    # -- names

    def add_names(self, session: Routable) -> None:
        """``session`` acts for its names from now on."""
        for n in session.names:
            self.by_name.setdefault(n, set()).add(session)

    def drop_names(self, session: Routable) -> None:
        """``session`` is gone: it acts for nobody."""
        for n in session.names:
            owners = self.by_name.get(n)
            if owners is not None:
                owners.discard(session)
                if not owners:
                    del self.by_name[n]

    # -- membership

    def attach(self, session: Routable, channels: Iterable[str]) -> list[PresenceChange]:
        """Subscribe ``session`` to ``channels``; report names that came up."""
        changes: list[PresenceChange] = []
        key = id(session)
        for ch in channels:
            if ch in session.channels and key in self._channel.get(ch, {}):
                continue
            session.channels.add(ch)
            self._channel.setdefault(ch, {})[key] = session
            if session.watch:
                self._watchers.setdefault(ch, {})[key] = session
            if session.wants_presence and not session.batch:
                self._one_by_one.setdefault(ch, {})[key] = session
            for name in session.names:
                group = self._direct.setdefault((ch, name), {})
                if not group:
                    changes.append(PresenceChange(ch, name, True))
                group[key] = session
        return changes

    def detach(
        self, session: Routable, channels: Iterable[str] | None = None
    ) -> list[PresenceChange]:
        """Unsubscribe ``session`` from ``channels`` (all when None); report names gone down."""
        changes: list[PresenceChange] = []
        key = id(session)
        for ch in list(session.channels if channels is None else channels):
            if ch not in session.channels:
                continue
            session.channels.discard(ch)
            subs = self._channel.get(ch)
            if subs is not None:
                subs.pop(key, None)
                if not subs:
                    del self._channel[ch]
            for index in (self._watchers, self._one_by_one):
                found = index.get(ch)
                if found is not None:
                    found.pop(key, None)
                    if not found:
                        del index[ch]
            for name in session.names:
                group = self._direct.get((ch, name))
                if group is None:
                    continue
                group.pop(key, None)
                if not group:
                    del self._direct[(ch, name)]
                    changes.append(PresenceChange(ch, name, False))
        return changes

    # -- queries

    def watchers(self, channel: str) -> Collection[Routable]:
        """The sessions that watch ``channel`` (they read every event of it)."""
        found = self._watchers.get(channel)
        return found.values() if found is not None else ()

    def recipients(self, channel: str, sender: str, to: str) -> list[Routable]:
        """Sessions that receive an event, each once."""
        if to == BROADCAST:
            subs = self._channel.get(channel)
            if not subs:
                return []
            alone = (sender,)
            return [s for s in subs.values() if s.watch or s.names != alone]
        direct = self._direct.get((channel, to))
        watchers = self._watchers.get(channel)
        if not watchers:
            return list(direct.values()) if direct else []
        merged = dict(direct) if direct else {}
        merged.update(watchers)
        return list(merged.values())

    def serves(self, channel: str, name: str) -> bool:
        """Whether a session acts for ``name`` on ``channel`` (no list built)."""
        return (channel, name) in self._direct

    def sessions_of(self, channel: str, name: str) -> list[Routable]:
        """Sessions acting for ``name`` on ``channel``."""
        group = self._direct.get((channel, name))
        return list(group.values()) if group else []

    def presence_one_by_one(self, channel: str) -> list[Routable]:
        """The members of ``channel`` that want each presence change as its own frame."""
        found = self._one_by_one.get(channel)
        return list(found.values()) if found else []

    def size(self, channel: str) -> int:
        """How many sessions are subscribed to ``channel`` (no list built)."""
        return len(self._channel.get(channel, ()))

    def channel_sessions(self, channel: str) -> list[Routable]:
        """Every session subscribed to ``channel``."""
        subs = self._channel.get(channel)
        return list(subs.values()) if subs else []

    def everyone(self) -> dict[str, dict[str, list[Routable]]]:
        """Every channel's names up, with their sessions (one pass)."""
        out: dict[str, dict[str, list[Routable]]] = {}
        for (ch, name), group in self._direct.items():
            out.setdefault(ch, {})[name] = list(group.values())
        return out

    def online(self, channel: str) -> dict[str, list[Routable]]:
        """Names up on ``channel`` with their sessions."""
        return {
            name: list(group.values())
            for (ch, name), group in self._direct.items()
            if ch == channel
        }
