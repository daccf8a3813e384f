"""Who receives an event, and who may read it back (``wsbus.entitlement``): one table of
cases per rule, checked against every form of it — the Python predicate, the router's
indexes, the memory store's filter and the SQLite store's queries (the general SQL form
and the one-name, one-channel form of two index ranges)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wsbus.entitlement import may_read, receives
from wsbus.routing import Router, entitled
from wsbus.schema import BROADCAST, Event
from wsbus.store import MemoryStore, Query, SqliteStore, Store

#: (the names a session acts for, the event's sender, its `to`, whether it receives it)
RECEIVES = [
    pytest.param(("bob",), "alice", "bob", True, id="direct to my name"),
    pytest.param(("bob",), "alice", "carol", False, id="direct to another"),
    pytest.param(("bob",), "bob", "carol", False, id="my own direct to another"),
    pytest.param(("bob",), "bob", "bob", True, id="direct to myself"),
    pytest.param(("bob",), "alice", BROADCAST, True, id="a broadcast"),
    pytest.param(("alice",), "alice", BROADCAST, False, id="my own broadcast"),
    pytest.param(("alice", "alice"), "alice", BROADCAST, False, id="my one name twice"),
    pytest.param(("alice", "bot"), "bot", BROADCAST, True, id="one of my names' broadcast"),
    pytest.param(("alice", "bot"), "carol", BROADCAST, True, id="several names, a broadcast"),
    pytest.param(("alice", "bot"), "carol", "bot", True, id="direct to my second name"),
    pytest.param(("alice", "bot"), "alice", "carol", False, id="several names, to another"),
    pytest.param((), "alice", BROADCAST, True, id="no name, a broadcast"),
    pytest.param((), "alice", "bob", False, id="no name, a direct"),
]

#: (the names a token reads for, the event's sender, its `to`, whether it may read it)
MAY_READ = [
    pytest.param(("bob",), "alice", "bob", True, id="to me"),
    pytest.param(("bob",), "bob", "alice", True, id="from me"),
    pytest.param(("bob",), "alice", "carol", False, id="between others"),
    pytest.param(("bob",), "alice", BROADCAST, True, id="a broadcast"),
    pytest.param(("bob",), "bob", BROADCAST, True, id="my own broadcast"),
    pytest.param(("bob", "dan"), "carol", "dan", True, id="to my second name"),
    pytest.param(("bob", "dan"), "dan", "carol", True, id="from my second name"),
    pytest.param((), "alice", "carol", False, id="no name, a direct"),
    pytest.param((), "alice", BROADCAST, True, id="no name, a broadcast"),
]

CHANNEL = "room"


@dataclass(eq=False)
class Sess:
    """What the router needs of a session."""

    names: tuple[str, ...]
    watch: bool = False
    channels: set[str] = field(default_factory=set)
    wants_presence: bool = True
    batch: bool = False


@pytest.fixture(params=["memory", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "e.db")
    await store.open()
    yield store
    await store.close()


async def _store_one(store: Store, sender: str, to: str) -> None:
    """The event under test, with one on another channel beside it."""
    events = [
        Event(seq=1, ts=1.0, channel=CHANNEL, from_=sender, to=to, body="x", thread="t"),
        Event(seq=2, ts=2.0, channel="elsewhere", from_=sender, to=to, body="y", thread="t"),
    ]
    await store.append(events)


@pytest.mark.parametrize(("names", "sender", "to", "expected"), RECEIVES)
def test_receives_in_python_and_in_the_router(
    names: tuple[str, ...], sender: str, to: str, expected: bool
) -> None:
    assert receives(names, sender, to) is expected
    assert entitled(names, False, sender, to) is expected
    assert entitled(names, True, sender, to)  # a watcher receives everything
    router = Router()
    session = Sess(tuple(dict.fromkeys(names)))  # the hub gives a session each name once
    router.attach(session, [CHANNEL])
    assert (session in router.recipients(CHANNEL, sender, to)) is expected


@pytest.mark.parametrize(("names", "sender", "to", "expected"), RECEIVES)
async def test_receives_in_the_store_queries(
    engine: Store, names: tuple[str, ...], sender: str, to: str, expected: bool
) -> None:
    await _store_one(engine, sender, to)
    # one channel (one name: two index ranges in SQL), then two (the general clause)
    for channels in ([CHANNEL], [CHANNEL, "nowhere"]):
        for latest in (False, True):
            q = Query(limit=10, channels=channels, entitled=list(names), latest=latest)
            assert [e.seq for e in await engine.query(q)] == ([1] if expected else [])
    # with `to` as well (the history filter beside the entitlement)
    q = Query(limit=10, channels=[CHANNEL], entitled=list(names), to=to)
    assert [e.seq for e in await engine.query(q)] == ([1] if expected else [])
    # no entitlement (a watcher): every event
    assert [e.seq for e in await engine.query(Query(limit=10, channels=[CHANNEL]))] == [1]


@pytest.mark.parametrize(("party", "sender", "to", "expected"), MAY_READ)
async def test_may_read_in_python_and_in_the_store_queries(
    engine: Store, party: tuple[str, ...], sender: str, to: str, expected: bool
) -> None:
    assert may_read(party, sender, to) is expected
    await _store_one(engine, sender, to)
    q = Query(limit=10, channels=[CHANNEL], party=list(party))
    assert [e.seq for e in await engine.query(q)] == ([1] if expected else [])
    listed = [(t.channel, t.thread) for t in await engine.threads(CHANNEL, list(party))]
    assert listed == ([(CHANNEL, "t")] if expected else [])
