"""The client -> hub frames of the wire schema and their union, :data:`ClientFrame`.

Import them from :mod:`wsbus.schema`, which re-exports every frame (``docs/PROTOCOL.md``
is generated from the docstrings and fields below).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .schema_fields import (
    DEFAULT_CHANNEL,
    AckStatus,
    Channel,
    Frame,
    Kind,
    Label,
    Name,
    Ref,
    Seq,
    Target,
    Thread,
)

__all__ = [
    "Ack",
    "ClientFrame",
    "Hello",
    "History",
    "HubStatus",
    "Leases",
    "Ping",
    "Register",
    "Release",
    "Reserve",
    "Roster",
    "Send",
    "Status",
    "Subscribe",
    "Threads",
    "Unsubscribe",
]


class Hello(Frame, tag="hello"):
    """First frame of every connection: who speaks, which channels, where to resume.

    ``resume`` is the seq of the last event the client processed: the hub replays
    every event after it that the client is entitled to, then ``synced``, then live
    events. Without ``resume`` the client gets live events only (plus, for each of
    its names, direct events still pending a final receipt); ``pending`` with
    ``resume`` replays those pending events from before ``resume`` first (a bridge
    that starts serving a new name). ``kind: bridge`` claims the names in the
    channels: one bridge per name and channel, names another bridge holds are
    refused (listed in ``welcome.refused``). ``watch``: receive
    every event of the channels, others' direct events included. ``presence``:
    false to receive no presence frames (the connection's names still count).
    An empty ``channels`` list makes a send- and query-only connection.
    ``token``: for a hub with ``--auth``, when the client cannot send the
    ``Authorization: Bearer`` header (browsers); the header wins when both are
    given. With a token and no names, the connection acts as the token's name(s).
    ``capabilities``: what the client can read besides the base frames (unknown ones
    are ignored; ``welcome.capabilities`` says which the hub grants). ``batch``: the
    hub may write several events as one ``events`` frame and several presence
    changes as one ``presences`` frame (fewer, larger writes under load).
    """

    name: Name | None = None
    names: list[Name] = []
    channels: list[Channel] = msgspec.field(default_factory=lambda: [DEFAULT_CHANNEL])
    resume: Seq | None = None
    token: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    kind: Kind = "agent"
    model: Label | None = None
    role: Label | None = None
    tmux: Label | None = None
    host: Label | None = None
    client: Label | None = None
    watch: bool = False
    presence: bool = True
    pending: bool = False
    capabilities: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=16)
    ] = []


class Send(Frame, tag="send"):
    """Publish one event. The hub answers ``ok`` once it is durably stored.

    ``ref`` is the client's idempotency key: resending the same ref from the same
    sender returns the first ``ok`` and creates no second event. ``to`` is a name
    (a direct event) or ``*`` (the channel). ``from`` picks one of the names of a
    connection that acts for several (a bridge); it defaults to the first.
    """

    ref: Ref
    to: Target
    body: str
    channel: Channel | None = None
    from_: Name | None = msgspec.field(default=None, name="from")
    thread: Thread | None = None
    kind: Kind | None = None
    meta: dict[str, Any] | None = None


class Ack(Frame, tag="ack"):
    """Report what happened to an event delivered to this connection.

    Produces a ``receipt`` frame to the sender's connections and is kept in the
    store. ``name`` picks which of the connection's names acknowledges. An event
    that name may not acknowledge gets ``unknown_event``, whether it exists or not.
    """

    seq: Seq
    status: AckStatus
    reason: Label | None = None
    name: Name | None = None


class Subscribe(Frame, tag="subscribe"):
    """Add channels to this connection, live from now on (answered by ``subscribed``).

    Nothing is replayed, so the connection's single cursor stays monotonic; read
    older events of a new channel with ``history``, or reconnect with ``resume``.
    """

    channels: list[Channel]


class Unsubscribe(Frame, tag="unsubscribe"):
    """Remove channels from this connection."""

    channels: list[Channel]


class History(Frame, tag="history"):
    """Query stored events; answered by ``history_result`` with the same ``ref``.

    With ``after`` the page runs forward from that seq; otherwise it holds the
    latest ``limit`` events before ``before`` (or the head). Events come in seq
    order either way. ``pending`` (needs ``to``): only direct events to ``to``
    that have no final receipt by it yet (its unread inbox). ``receipts``: the
    answer also carries the stored receipts of the events the connection's names
    sent (with an admin token, or without ``--auth``: of every event returned).
    """

    ref: Ref
    channel: Channel | None = None
    to: Target | None = None
    from_: Name | None = msgspec.field(default=None, name="from")
    thread: Thread | None = None
    after: Seq | None = None
    before: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1)] = 100
    pending: bool = False
    receipts: bool = False


class Roster(Frame, tag="roster"):
    """Who is on a channel: connected names and registered members (``roster_result``).

    ``all``: every channel's registered members (and no connected list).
    """

    ref: Ref
    channel: Channel | None = None
    all: bool = False


class Register(Frame, tag="register"):
    """Join (or update, or with ``leave`` quit) a channel's roster; answered by ``registered``.

    Members are keyed by name. A member with the same ``host`` and ``session``
    keeps its name; a name taken by another session gets ``-2``, ``-3``... (the
    answer carries the name given). ``leave`` removes ``name`` from the roster.
    """

    ref: Ref
    channel: Channel
    name: Name
    session: Label | None = None
    host: Label | None = None
    model: Label | None = None
    role: Label | None = None
    enter_delay: Annotated[float, msgspec.Meta(ge=0, le=60)] | None = None
    leave: bool = False


class Status(Frame, tag="status"):
    """A bridge reports whether the tmux session of each of its names is alive.

    ``roster`` shows a registered member *up* only while a bridge serving it is
    connected and its last report said alive.
    """

    alive: dict[Name, bool]


class Threads(Frame, tag="threads"):
    """List the threads of a channel (or of every channel); answered by ``threads_result``.

    With ``--auth``, counted over the events the connection's token may read."""

    ref: Ref
    channel: Channel | None = None


LeasePath = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=512,
        description="a path or glob relative to the repository root (src/parser/**)",
    ),
]


class Reserve(Frame, tag="reserve"):
    """Lease files: reserve ``paths`` (paths or globs, relative to the repository root)
    on a channel for ``ttl`` seconds, ``exclusive`` or shared, with a ``reason``.
    Answered by ``reserved`` once the lease is in the log, or by ``error``
    ``lease_conflict`` naming who holds what, why and until when. Two patterns conflict
    when either matches the other's literal part (before its first wildcard) or both
    name the same path; a holder's leases never conflict with each other, and reserving
    exactly the same paths again renews the lease. Advisory: the hub keeps the book,
    ``wsbus hook pre-commit`` enforces it in a repository.
    """

    ref: Ref
    paths: Annotated[list[LeasePath], msgspec.Meta(min_length=1, max_length=32)]
    ttl: Annotated[float, msgspec.Meta(ge=1, le=86_400)]
    exclusive: bool = True
    reason: Label | None = None
    channel: Channel | None = None
    name: Name | None = None


class Release(Frame, tag="release"):
    """End leases of this connection's name: those in ``ids``, those on exactly
    ``paths``, or (neither) all of them on the channel. Answered by ``released``."""

    ref: Ref
    ids: Annotated[list[Seq], msgspec.Meta(max_length=100)] = []
    paths: Annotated[list[LeasePath], msgspec.Meta(max_length=100)] = []
    channel: Channel | None = None
    name: Name | None = None


class Leases(Frame, tag="leases"):
    """The leases in force on ``channel`` (or on every channel the token may read),
    those with a path starting with ``prefix`` only. Answered by ``leases_result``."""

    ref: Ref
    channel: Channel | None = None
    prefix: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class HubStatus(Frame, tag="hub_status"):
    """How the hub is doing: version, uptime, engine, store, who is connected, the
    mail waiting for a final receipt. Answered by ``hub_status_result``: in full
    without ``--auth`` or to an admin token; to another token, only its channels and
    its own names' mail, without the store's location and size. The answer is built
    at most once a second per token (it may be a second old); a connection asking
    again within half a second gets ``rate_limited``."""

    ref: Ref


class Ping(Frame, tag="ping"):
    """Application-level liveness check; answered by ``pong`` at once. With ``sync``, the
    ``pong`` comes once what this connection sent before it is committed — acks
    included, which get no answer of their own: a client that acked, then pinged with
    ``sync``, knows the receipts are stored."""

    ref: Ref | None = None
    sync: bool = False


ClientFrame = (
    Hello
    | Send
    | Ack
    | Subscribe
    | Unsubscribe
    | History
    | Roster
    | Register
    | Status
    | Threads
    | Reserve
    | Release
    | Leases
    | HubStatus
    | Ping
)
