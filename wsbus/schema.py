"""The wire schema: every frame wsbus speaks, as msgspec Structs.

This module is the single source of truth for the protocol. Each frame is a
Struct tagged on ``op``; client frames and hub frames form two tagged unions,
:data:`ClientFrame` and :data:`HubFrame`. Decoding into a union validates every
field, so no other module checks dict keys by hand. ``docs/PROTOCOL.md`` is
generated from the docstrings and fields below (``python -m docs.protodoc``).

Two encodings carry the same structs: JSON in text frames (subprotocol
``wsbus.v1.json``, the default) and MessagePack in binary frames
(``wsbus.v1.msgpack``). Evolution rule: new fields get defaults; a field's type
never changes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ACK_STATUSES",
    "BROADCAST",
    "DEFAULT_CHANNEL",
    "FINAL_STATUSES",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "Ack",
    "ClientFrame",
    "Error",
    "Event",
    "Hello",
    "History",
    "HistoryResult",
    "HubFrame",
    "Limits",
    "Member",
    "Ok",
    "Ping",
    "Pong",
    "Presence",
    "Receipt",
    "Register",
    "Registered",
    "Roster",
    "RosterEntry",
    "RosterResult",
    "Send",
    "Status",
    "Subscribe",
    "Subscribed",
    "Synced",
    "ThreadInfo",
    "Threads",
    "ThreadsResult",
    "Unsubscribe",
    "Welcome",
    "valid_name",
    "valid_thread",
]

SUBPROTOCOL_JSON = "wsbus.v1.json"
SUBPROTOCOL_MSGPACK = "wsbus.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)

DEFAULT_CHANNEL = "default"
BROADCAST = "*"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
# a non-capturing group: with a capturing one, compiling this pattern takes 8 ms (every
# client and the hub compile it at import; msgspec.Meta compiles its pattern)
TARGET_PATTERN = r"^(?:\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})\Z"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
THREAD_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*\Z"
THREAD_MAX = 128
THREAD_RULE = (
    "1-128 characters: letters, digits, '.', '_' or '-', '/' between parts"
    " (hermes/pmxt-execution); no '..', no leading '/'"
)

_NAME_RE = re.compile(NAME_PATTERN)
_THREAD_RE = re.compile(THREAD_PATTERN)


def valid_name(value: str) -> bool:
    """Whether ``value`` is a valid name or channel."""
    return bool(_NAME_RE.match(value))


def valid_thread(value: str) -> bool:
    """Whether ``value`` is a valid thread name."""
    return len(value) <= THREAD_MAX and bool(_THREAD_RE.match(value))


Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description=NAME_RULE)]
Channel = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description=NAME_RULE)]
Target = Annotated[
    str, msgspec.Meta(pattern=TARGET_PATTERN, description="a name, or '*' for the channel")
]
Thread = Annotated[
    str, msgspec.Meta(pattern=THREAD_PATTERN, max_length=THREAD_MAX, description=THREAD_RULE)
]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Label = Annotated[str, msgspec.Meta(max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Kind = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}\Z")]

AckStatus = Literal["read", "submitted", "unsubmitted", "failed", "session_down"]
ACK_STATUSES: tuple[str, ...] = ("read", "submitted", "unsubmitted", "failed", "session_down")
FINAL_STATUSES = frozenset({"read", "submitted", "unsubmitted", "failed"})


class Frame(msgspec.Struct, tag_field="op", omit_defaults=True, forbid_unknown_fields=False):
    """Base of every frame."""


# --------------------------------------------------------------------------- client -> hub


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
    that have no final receipt by it yet (its unread inbox).
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


class Ping(Frame, tag="ping"):
    """Application-level liveness check; answered by ``pong``."""

    ref: Ref | None = None


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
    | Ping
)

# --------------------------------------------------------------------------- hub -> client


class Limits(msgspec.Struct, omit_defaults=False):
    """Limits the hub enforces, announced in ``welcome``."""

    max_body: int
    max_frame: int
    max_history: int
    max_channels: int


class Welcome(Frame, tag="welcome"):
    """Answer to ``hello``.

    ``hub`` identifies the store (it changes only when the database is replaced);
    ``seq`` is the last committed seq. ``recovered`` is false when the requested
    ``resume`` point is older than retention or unknown to this hub: some history
    is gone and the client should say so.
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
    (ask again with ``before`` = the first seq, or ``after`` = the last)."""

    ref: str
    events: list[Event]
    more: bool = False


class Member(msgspec.Struct, omit_defaults=True):
    """One connected name in a roster."""

    name: str
    connections: int
    kind: str | None = None
    model: str | None = None
    role: str | None = None
    host: str | None = None
    tmux: str | None = None


class RosterEntry(msgspec.Struct, omit_defaults=True):
    """One registered member of a channel's roster.

    ``state``: ``up`` or ``down`` as last reported by the bridge serving the name
    (its tmux session alive or not); absent when no bridge serves it now.
    """

    channel: str
    name: str
    joined: float
    last_active: float
    session: str | None = None
    host: str | None = None
    model: str | None = None
    role: str | None = None
    enter_delay: float | None = None
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


class Pong(Frame, tag="pong"):
    """Answer to ``ping``."""

    ts: float
    ref: str | None = None


HubFrame = (
    Welcome
    | Event
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
    | Pong
)
