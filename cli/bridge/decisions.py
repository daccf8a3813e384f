"""The bridge's decisions, as plain synchronous code (tested without tmux or sockets).

- :func:`local_agents`: which names this machine serves (enabled registry agents,
  and roster members registered from this host) with their panes and channels;
- :func:`targets`: which of them an event is for;
- :func:`pane_text`: the one line typed into a pane for an event;
- :class:`Progress`: the resume cursor and which deliveries are done, so a bridge
  that restarts or reconnects types nothing twice and skips nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from wsbus.schema import BROADCAST, DEFAULT_CHANNEL, NAME_RULE, Event, RosterEntry, valid_name

from ..conventions import (
    KIND_NOTICE,
    META_HOST,
    META_LOCAL,
    NO_REPLY,
    long_doorbell,
    loop_warning,
    sent_at,
)
from ..local.paths import CommsTunables, write_atomic
from ..local.registry import Registry, RegistryError
from .inject import is_one_line, message_line, sanitize

__all__ = [
    "LocalAgent",
    "Progress",
    "already_delivered",
    "local_agents",
    "long_copy",
    "pane_text",
    "targets",
]

FINAL = frozenset({"read", "submitted", "unsubmitted", "failed"})


class LocalAgent(msgspec.Struct, frozen=True):
    """A name this bridge types into: its tmux session and how to reach it."""

    name: str
    session: str
    channels: tuple[str, ...]
    enter_delay: float | None = None
    paste: bool = False
    revive_cmd: str | None = None
    enabled: bool = True


_SESSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+-]{0,63}\Z")


def plain_session(session: str) -> bool:
    """Whether a session name from the hub is a plain name: no tmux target syntax
    (``%pane``, ``$id``, ``@window``, ``s:w.p``) that could point into another pane."""
    return bool(_SESSION_RE.match(session))


def local_agents(
    registry: Registry,
    roster: Iterable[RosterEntry],
    host: str,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, LocalAgent]:
    """Every name this machine serves, by name.

    Enabled registry agents serve the default channel (and the projects they are
    members of); roster members registered from ``host`` serve the default
    channel and their projects. A registry entry's ``revive_cmd``, ``paste`` and
    ``enter_delay`` win; the roster adds channels and its own enter delay. A bad
    entry is skipped with a warning (it must not stop the others' delivery); the
    hub's rosters may name only plain tmux sessions.
    """
    chans: dict[str, set[str]] = {}
    sessions: dict[str, str] = {}
    delays: dict[str, float] = {}
    for m in roster:
        if m.host != host or not m.session:
            continue
        if not plain_session(m.session):
            warn(f"roster member {m.name!r} of {m.channel!r}: session {m.session!r} skipped")
            continue
        chans.setdefault(m.name, {DEFAULT_CHANNEL}).add(m.channel)
        sessions.setdefault(m.name, m.session)
        if m.enter_delay is not None:
            delays.setdefault(m.name, m.enter_delay)
    out: dict[str, LocalAgent] = {}
    for name in registry.names():
        if not valid_name(name):
            warn(f"registry agent {name!r} skipped: a name is {NAME_RULE}")
            continue
        try:
            a = registry.agent(name)
        except RegistryError as err:
            warn(f"{err}; skipped")
            continue
        if a is None or not a.enabled or not a.session or (a.host and a.host != host):
            continue
        channels = chans.pop(name, {DEFAULT_CHANNEL})
        out[name] = LocalAgent(
            name=name,
            session=a.session,
            channels=tuple(sorted(channels)),
            enter_delay=a.enter_delay if a.enter_delay is not None else delays.get(name),
            paste=a.paste,
            revive_cmd=a.revive_cmd,
        )
    for name, channels in chans.items():
        out[name] = LocalAgent(
            name=name,
            session=sessions[name],
            channels=tuple(sorted(channels)),
            enter_delay=delays.get(name),
        )
    return out


def targets(ev: Event, agents: dict[str, LocalAgent]) -> list[LocalAgent]:
    """The local agents ``ev`` is for (never its sender)."""
    if ev.to == BROADCAST:
        return [a for n, a in sorted(agents.items()) if n != ev.from_ and ev.channel in a.channels]
    agent = agents.get(ev.to)
    if agent is None or agent.name == ev.from_ or ev.channel not in agent.channels:
        return []
    return [agent]


def already_delivered(ev: Event, name: str, host: str) -> str | None:
    """The status of a delivery the no-hub fallback already made on this host, if any."""
    meta = ev.meta or {}
    local = meta.get(META_LOCAL)
    if meta.get(META_HOST) != host or not isinstance(local, dict):
        return None
    status = local.get(name)
    return status if isinstance(status, str) else None


def is_notice(ev: Event) -> bool:
    """A notice is typed without ``from=``: only when it is a one-line announcement
    that starts with its sender's name (``claude (model, role) joined project …``),
    so nobody can make a line look as if someone else wrote it."""
    return is_one_line(ev.body, 500) and ev.body.startswith(f"{ev.from_} ")


def long_copy(ev: Event) -> str:
    """The readable copy of a long or multi-line message (markdown)."""
    to = "" if ev.to == BROADCAST else f"→{ev.to}"
    when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(sent_at(ev.meta, ev.ts)))
    thread = f" in {ev.thread}" if ev.thread else ""
    return f"## [{ev.from_}{to} {when}] #{ev.seq} on {ev.channel}{thread}\n\n{ev.body}\n"


def pane_text(
    ev: Event,
    recipient: str,
    tun: CommsTunables,
    *,
    mirror: Path | None = None,
    copy: Path | None = None,
) -> str:
    """The single line typed into ``recipient``'s pane for ``ev``.

    A thread entry rings the original doorbell pointing at the local mirror; a
    notice is typed as is; a one-line body up to ``one_line_max`` characters is
    typed in full, anything longer or multi-line as a doorbell pointing at a
    readable copy and at ``wsbus show SEQ``. The loop-guard warning and the
    ``[no-reply]`` hint are appended as the original did.
    """
    marker = tun.marker
    # a person wrote it (wsbus chat): say so, agents weigh it differently
    sender = f"{ev.from_} (human)" if ev.kind == "human" else ev.from_
    if ev.kind == KIND_NOTICE and is_notice(ev):
        line = f"{marker} {sanitize(ev.body)}"
    elif ev.thread:
        line = f"{marker} {sender} posted in {ev.thread} — review it ({mirror or ev.thread})"
        if NO_REPLY in ev.body.lower():
            line += " (no reply needed)"
    elif is_one_line(ev.body, tun.one_line_max):
        line = message_line(marker, sender, sent_at(ev.meta, ev.ts), ev.body)
    else:
        where = (f"{copy} or " if copy else "") + f"wsbus show {ev.seq}"
        line = long_doorbell(marker, sender, sent_at(ev.meta, ev.ts), ev.body, where)
    count = (ev.loop or {}).get(recipient, 0)
    # the warning goes on messages agents answer: thread posts and direct messages
    if ev.kind != KIND_NOTICE and count >= tun.loop_warn_count:
        line += loop_warning(ev.from_, recipient)
    return tun.clip(sanitize(line))


class _State(msgspec.Struct):
    hub: str | None = None
    cursor: int | None = None
    done: list[tuple[int, str, str | None]] = []


#: finished deliveries kept at or below the cursor (a pending replay of an event whose
#: receipt was lost gets its receipt again instead of being typed twice)
KEEP_BELOW_CURSOR = 2000


class Progress:
    """Where a bridge may resume, and which (seq, name) deliveries are finished.

    ``cursor`` is a low-water mark: every event up to it was handled for every
    local name, so a restarted bridge resumes from there (with the hub's pending
    replay for names it newly serves). Finished deliveries are remembered with
    their final status (all of them above the cursor, the latest
    ``KEEP_BELOW_CURSOR`` below it), so an event seen again is not typed again and
    its receipt can be sent again.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hub: str | None = None
        self.received = 0
        self.open: dict[int, set[str]] = {}
        self.done: dict[tuple[int, str], str | None] = {}
        self._saved_cursor: int | None = None
        if path is not None and path.exists():
            try:
                st = msgspec.json.decode(path.read_bytes(), type=_State)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                st = _State()
            self.hub = st.hub
            self.received = st.cursor or 0
            self._saved_cursor = st.cursor
            self.done = {(s, n): status for s, n, status in st.done}

    @property
    def cursor(self) -> int | None:
        """Resume point: below the oldest unfinished event (None: never received one)."""
        if self.open:
            return min(self.open) - 1
        return self.received or self._saved_cursor

    def reset(self, hub: str) -> None:
        """A different hub (a new database): forget the cursor and what was done."""
        self.hub = hub
        self.received = 0
        self._saved_cursor = None
        self.done.clear()
        self.open.clear()

    def finished(self, seq: int, names: Iterable[str]) -> dict[str, str]:
        """Of ``names``, those whose delivery of ``seq`` already ended, with the status."""
        out: dict[str, str] = {}
        for n in names:
            status = self.done.get((seq, n))
            if status is not None:
                out[n] = status
        return out

    def receive(self, seq: int, names: Iterable[str]) -> list[str]:
        """An event arrived for ``names``; returns those still to deliver."""
        waiting = self.open.get(seq, set())
        todo = [n for n in names if (seq, n) not in self.done and n not in waiting]
        if todo:
            self.open.setdefault(seq, set()).update(todo)
        self.received = max(self.received, seq)
        return todo

    def finish(self, seq: int, name: str, status: str | None) -> None:
        """A delivery ended with ``status`` (None: given up here, left pending in the hub)."""
        self.done[(seq, name)] = status
        waiting = self.open.get(seq)
        if waiting is not None:
            waiting.discard(name)
            if not waiting:
                del self.open[seq]

    def save(self) -> None:
        if self.path is None:
            return
        cursor = self.cursor or 0
        above = [(s, n, st) for (s, n), st in self.done.items() if s > cursor]
        below = sorted((s, n, st) for (s, n), st in self.done.items() if s <= cursor)
        keep = sorted(above) + below[-KEEP_BELOW_CURSOR:]
        self.done = {(s, n): st for s, n, st in keep}
        data = msgspec.json.encode(_State(hub=self.hub, cursor=self.cursor, done=keep))
        write_atomic(self.path, data)
