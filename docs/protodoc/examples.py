"""One example of every frame, shown under its section of ``docs/PROTOCOL.md`` (each
must decode as a real frame: the renderer checks it round-trips)."""

from __future__ import annotations

import msgspec

from wsbus.errors import ErrorCode
from wsbus.schema import (
    Ack,
    Error,
    Event,
    Events,
    Hello,
    History,
    HistoryResult,
    HubStatus,
    HubStatusResult,
    Lease,
    Leases,
    LeasesResult,
    Limits,
    Member,
    Ok,
    Ping,
    Pong,
    Presence,
    PresenceChange,
    Presences,
    Receipt,
    Register,
    Registered,
    Release,
    Released,
    Reserve,
    Reserved,
    Roster,
    RosterEntry,
    RosterResult,
    Send,
    Status,
    Subscribe,
    Subscribed,
    Synced,
    ThreadInfo,
    Threads,
    ThreadsResult,
    Unsubscribe,
    Waiting,
    Welcome,
)

from .prose import DEFAULTS

__all__ = ["EXAMPLES"]

_TS = 1732170000.123456
_EVENT = Event(
    seq=1043,
    ts=_TS,
    channel="build",
    from_="alice",
    to="bob",
    body="the build is green",
    thread="ci",
    kind="agent",
    meta={"pr": 12},
    ref="7f3a9c1e04b2",
)

_WAITING = Waiting(channel="build", name="bob", count=2, oldest_seq=1041, oldest_ts=1733400000.0)
_LEASE = Lease(
    id=1044,
    channel="acme-web",
    holder="claude",
    paths=["src/parser/**"],
    exclusive=True,
    since=_TS,
    until=_TS + 1800,
    reason="refactoring the lexer",
)

_MEMBER = RosterEntry(
    channel="acme-web",
    name="claude",
    joined=_TS - 86400,
    last_active=_TS - 60,
    session="claude",
    host="devbox",
    model="claude-opus-4-7",
    role="orchestration + reasoning",
    state="up",
    connected=True,
)

EXAMPLES: dict[type[msgspec.Struct], msgspec.Struct] = {
    Hello: Hello(
        name="alice",
        channels=["default", "build"],
        resume=1041,
        model="claude-opus-4",
        role="reviewer",
        tmux="alice",
        host="devbox",
        client="wsbus-python",
        capabilities=["batch"],
    ),
    Send: Send(
        ref="7f3a9c1e04b2",
        to="bob",
        body="the build is green",
        channel="build",
        thread="ci",
        meta={"pr": 12},
    ),
    Ack: Ack(seq=1043, status="read"),
    Subscribe: Subscribe(channels=["deploy"]),
    Unsubscribe: Unsubscribe(channels=["deploy"]),
    History: History(ref="h-1", channel="build", thread="ci", limit=20),
    Roster: Roster(ref="r-1", channel="build"),
    Register: Register(
        ref="g-1",
        channel="acme-web",
        name="claude",
        session="claude",
        host="devbox",
        model="claude-opus-4-7",
        role="orchestration + reasoning",
    ),
    Status: Status(alive={"claude": True, "codex": False}),
    Threads: Threads(ref="t-1", channel="acme-web"),
    Reserve: Reserve(
        ref="l-1",
        paths=["src/parser/**"],
        ttl=1800,
        reason="refactoring the lexer",
        channel="acme-web",
    ),
    Release: Release(ref="l-2", ids=[1044], channel="acme-web"),
    Leases: Leases(ref="l-3", channel="acme-web", prefix="src/"),
    HubStatus: HubStatus(ref="s-1"),
    Ping: Ping(ref="p-1"),
    Welcome: Welcome(
        hub="3f9c2a7d1b04",
        seq=1042,
        names=["alice"],
        channels=["default", "build"],
        server="wsbus/0.1.0",
        limits=Limits(
            max_body=DEFAULTS.max_body,
            max_frame=DEFAULTS.max_frame,
            max_history=DEFAULTS.max_history,
            max_channels=DEFAULTS.max_channels,
        ),
        capabilities=["batch"],
    ),
    Event: _EVENT,
    Synced: Synced(seq=1043, channels=["build", "default"]),
    Subscribed: Subscribed(channels=["build", "default", "deploy"]),
    Ok: Ok(ref="7f3a9c1e04b2", seq=1043, ts=_TS),
    Error: Error(
        code=ErrorCode.BODY_TOO_LARGE,
        message="body is 70000 bytes; the limit is 65536",
        ref="7f3a9c1e04b2",
    ),
    Presence: Presence(
        channel="build", name="bob", state="up", ts=_TS, kind="agent", host="devbox"
    ),
    Events: Events(
        events=[_EVENT, msgspec.structs.replace(_EVENT, seq=1044, ts=_TS + 0.001, body="done")]
    ),
    Presences: Presences(
        channel="build",
        ts=_TS,
        changes=[
            PresenceChange(name="bob", state="up", kind="agent", host="devbox"),
            PresenceChange(name="carol", state="up", kind="agent", model="gpt-5-codex"),
            PresenceChange(name="dave", state="down", kind="human"),
        ],
    ),
    Receipt: Receipt(seq=1043, channel="build", by="bob", status="read", ts=_TS + 2.5),
    HistoryResult: HistoryResult(ref="h-1", events=[_EVENT]),
    RosterResult: RosterResult(
        ref="r-1",
        channel="build",
        members=[
            Member(name="alice", connections=1, kind="agent", host="devbox", tmux="alice"),
            Member(name="bob", connections=2, kind="agent", role="builder"),
        ],
        registered=[_MEMBER],
    ),
    Registered: Registered(
        ref="g-1", channel="acme-web", name="claude", existed=False, members=[_MEMBER]
    ),
    ThreadsResult: ThreadsResult(
        ref="t-1",
        threads=[ThreadInfo("acme-web", "acme-web", 12, _TS - 3600, _TS)],
    ),
    Reserved: Reserved(ref="l-1", lease=_LEASE),
    Released: Released(ref="l-2", leases=[_LEASE]),
    LeasesResult: LeasesResult(ref="l-3", leases=[_LEASE]),
    HubStatusResult: HubStatusResult(
        ref="s-1",
        version="0.1.0",
        hub="3c2924ea93bb",
        engine="sqlite",
        uptime=86400.5,
        healthy=True,
        seq=1043,
        pruned_seq=0,
        retention_days=30.0,
        retention_count=0,
        connections=3,
        queued=0,
        channels={
            "build": [
                Member(name="alice", connections=1, kind="human"),
                Member(name="bob", connections=2, kind="agent", model="claude-opus-4"),
            ]
        },
        pending=[_WAITING],
        pending_window=100_000,
        full=True,
        store="/home/alice/.local/share/wsbus/wsbus.db (SQLite, WAL, synchronous=NORMAL)",
        store_bytes=4_194_304,
        oldest_pending=_WAITING,
    ),
    Pong: Pong(ts=_TS, ref="p-1"),
}
