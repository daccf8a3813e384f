"""The hub -> client frames of the wire schema and their union, :data:`HubFrame`, with
the structs they carry (limits, roster members and entries, threads).

Import them from :mod:`wsbus.schema`, which re-exports every frame (``docs/PROTOCOL.md``
is generated from the docstrings and fields below).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .schema_fields import Frame

__all__ = [
    "Error",
    "Event",
    "Events",
    "HistoryResult",
    "HubFrame",
    "HubStatusResult",
    "Lease",
    "LeasesResult",
    "Limits",
    "Member",
    "Ok",
    "Pong",
    "Presence",
    "PresenceChange",
    "Presences",
    "Receipt",
    "Registered",
    "Released",
    "Reserved",
    "RosterEntry",
    "RosterResult",
    "Subscribed",
    "Synced",
    "ThreadInfo",
    "ThreadsResult",
    "Waiting",
    "Welcome",
]


class Limits(msgspec.Struct, omit_defaults=False):
    """Limits the hub enforces, announced in ``welcome``."""

    max_body: int
    max_frame: int
    max_history: int
    max_channels: int


class Welcome(Frame, tag="welcome"):
    """Answer to ``hello``.

    ``hub`` identifies the store (it changes only when the database is replaced;
    several hubs on NATS share their bus's id); ``seq`` is the last committed seq.
    ``recovered`` is false when the requested ``resume`` point is older than
    retention or unknown to this hub: some history is gone and the client should
    say so.
    """

    hub: str
    seq: int
    names: list[str]
    channels: list[str]
    recovered: bool = True
    protocol: int = 1
    server: str = ""
    limits: Limits | None = None
    refused: list[str] = []
    capabilities: list[str] = []


class Event(Frame, tag="event"):
    """One stored event. ``seq`` and ``ts`` strictly increase together.

    ``loop`` (live events only, not stored): for each recipient in an exchange with
    the sender (messages went both ways within the hub's loop window), how many
    events went between the two, this one included; a connection gets only the
    counts of its own names. Recipients use it to warn agents caught in a reply loop.
    """

    seq: int
    ts: float
    channel: str
    from_: str = msgspec.field(name="from")
    to: str
    body: str
    thread: str | None = None
    kind: str | None = None
    meta: dict[str, Any] | None = None
    ref: str | None = None
    loop: dict[str, int] | None = None


class Synced(Frame, tag="synced"):
    """Replay is complete up to ``seq``; every later event is live."""

    seq: int
    channels: list[str] = []


class Subscribed(Frame, tag="subscribed"):
    """Answer to ``subscribe``/``unsubscribe``: the connection's channels now."""

    channels: list[str]


class Ok(Frame, tag="ok"):
    """A ``send`` is durably stored as event ``seq``. ``duplicate``: ref seen before.

    ``online`` (direct events): whether a connection for the recipient was
    subscribed to the channel when the event was committed (false: it waits,
    pending, until one connects).
    """

    ref: str
    seq: int
    ts: float
    duplicate: bool = False
    online: bool | None = None


class Error(Frame, tag="error"):
    """A request failed; ``code`` is stable, ``message`` is one readable sentence."""

    code: str
    message: str
    ref: str | None = None


class Presence(Frame, tag="presence"):
    """A name came up (its first connection) or went down (its last one closed)."""

    channel: str
    name: str
    state: Literal["up", "down"]
    ts: float
    kind: str | None = None
    model: str | None = None
    role: str | None = None
    host: str | None = None


class Events(Frame, tag="events"):
    """Several events in one frame, in seq order: exactly as many ``event`` frames
    would have been (to a client whose ``hello.capabilities`` has ``batch``). The hub
    writes them when a connection has more than one event waiting (a burst of fan-out,
    a replay); each element is an ``event``."""

    events: list[Event]


class PresenceChange(msgspec.Struct, omit_defaults=True):
    """One change in a ``presences`` frame: a ``presence`` without the ``channel``
    and ``ts`` the frame gives once for all of them."""

    name: str
    state: Literal["up", "down"]
    kind: str | None = None
    model: str | None = None
    role: str | None = None
    host: str | None = None


class Presences(Frame, tag="presences"):
    """Several presence changes of one channel in one frame, in the order they
    happened (to a client whose ``hello.capabilities`` has ``batch``): the hub writes
    presence to such a member at most every 0.25 s (longer in a large channel: 50 µs
    per member, 0.5 s at 10,000); a change after a quiet spell goes at once, and the
    changes that follow within that time (a crowd reconnecting) are gathered into
    one frame, always written before the events that follow them. Each change is a
    ``presence`` of ``channel`` at ``ts`` (when the hub wrote the frame: each change
    happened at most that tick before); a crowd's roster costs half the bytes of as
    many ``presence`` frames."""

    channel: str
    ts: float
    changes: list[PresenceChange]

    def presences(self) -> list[Presence]:
        """The changes as the ``presence`` frames they stand for."""
        return [
            Presence(self.channel, c.name, c.state, self.ts, c.kind, c.model, c.role, c.host)
            for c in self.changes
        ]


class Receipt(Frame, tag="receipt"):
    """A recipient acknowledged event ``seq`` (stored, and pushed to every connection
    of the sender, whatever its channels: a send-only connection can wait for it;
    never to one whose token may not use the event's channel)."""

    seq: int
    channel: str
    by: str
    status: str
    ts: float
    reason: str | None = None


class HistoryResult(Frame, tag="history_result"):
    """Answer to ``history``. ``more``: the page is full, so the range may hold more
    (ask again with ``before`` = the first seq, or ``after`` = the last).
    ``receipts`` (asked with ``history.receipts``): those stored for the events, in
    seq then time order, as the ``receipt`` frames their senders were pushed."""

    ref: str
    events: list[Event]
    more: bool = False
    receipts: list[Receipt] = []


class Member(msgspec.Struct, omit_defaults=True):
    """One connected name in a roster (and in ``hub_status_result``)."""

    name: str
    connections: int
    kind: str | None = None
    model: str | None = None
    role: str | None = None
    host: str | None = None
    tmux: str | None = None


class RegisteredMember(msgspec.Struct, omit_defaults=True):
    """What a registration records of a member (the hub stores it as it is:
    ``wsbus.store.MemberRecord``); a roster entry adds what the hub sees now."""

    channel: str
    name: str
    joined: float
    last_active: float
    session: str | None = None
    host: str | None = None
    model: str | None = None
    role: str | None = None
    enter_delay: float | None = None


class RosterEntry(RegisteredMember, omit_defaults=True):
    """One registered member of a channel's roster.

    ``state``: ``up`` or ``down`` as last reported by the bridge serving the name
    (its tmux session alive or not); absent when no bridge serves it now.
    """

    state: Literal["up", "down"] | None = None
    connected: bool = False


class RosterResult(Frame, tag="roster_result"):
    """Answer to ``roster``: ``members`` are connected names, ``registered`` the roster."""

    ref: str
    channel: str
    members: list[Member]
    registered: list[RosterEntry] = []


class Registered(Frame, tag="registered"):
    """Answer to ``register``: the name given, whether it was already a member, the roster."""

    ref: str
    channel: str
    name: str
    existed: bool
    members: list[RosterEntry]
    left: bool = False


class ThreadInfo(msgspec.Struct, omit_defaults=True):
    """One thread: its channel, name, number of entries and first/last times."""

    channel: str
    thread: str
    entries: int
    first_ts: float
    last_ts: float


class ThreadsResult(Frame, tag="threads_result"):
    """Answer to ``threads``, most recently active first."""

    ref: str
    threads: list[ThreadInfo]


class Lease(msgspec.Struct, omit_defaults=True):
    """A file lease in force: ``id`` is the seq of the event that granted it, ``since``
    that event's ``ts``, ``until`` when it expires (epoch seconds)."""

    id: int
    channel: str
    holder: str
    paths: list[str]
    exclusive: bool
    since: float
    until: float
    reason: str | None = None


class Reserved(Frame, tag="reserved"):
    """Answer to ``reserve``: the lease granted (``renewed``: it replaced the holder's
    lease on the same paths)."""

    ref: str
    lease: Lease
    renewed: bool = False


class Released(Frame, tag="released"):
    """Answer to ``release``: the leases it ended (none when none matched)."""

    ref: str
    leases: list[Lease]


class LeasesResult(Frame, tag="leases_result"):
    """Answer to ``leases``, oldest first."""

    ref: str
    leases: list[Lease]


class Waiting(msgspec.Struct, omit_defaults=True):
    """Direct messages to ``name`` on ``channel`` that no final receipt of theirs
    acknowledges yet: how many, and the oldest."""

    channel: str
    name: str
    count: int
    oldest_seq: int
    oldest_ts: float


class HubStatusResult(Frame, tag="hub_status_result"):
    """The answer to ``hub_status``. ``healthy`` false: the hub cannot store sends now
    (``problem`` says why). ``pending`` covers the newest ``pending_window`` events
    (the scan is bounded); ``oldest_pending`` is the oldest of them. ``full`` false:
    the token sees its own channels and names only (``store``, ``store_bytes`` are
    left out)."""

    ref: str
    version: str
    hub: str
    engine: str
    uptime: float
    healthy: bool
    seq: int
    pruned_seq: int
    retention_days: float
    retention_count: int
    connections: int
    queued: int
    channels: dict[str, list[Member]]
    pending: list[Waiting]
    pending_window: int
    full: bool
    problem: str | None = None
    store: str | None = None
    store_bytes: int | None = None
    lag: int | None = None
    oldest_pending: Waiting | None = None


class Pong(Frame, tag="pong"):
    """Answer to ``ping``."""

    ts: float
    ref: str | None = None


HubFrame = (
    Welcome
    | Event
    | Events
    | Presences
    | Synced
    | Subscribed
    | Ok
    | Error
    | Presence
    | Receipt
    | HistoryResult
    | RosterResult
    | Registered
    | ThreadsResult
    | Reserved
    | Released
    | LeasesResult
    | HubStatusResult
    | Pong
)
