"""The log's contract (wsbus.log): stamps, idempotency, the tail, the watermark."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wsbus.hub import Hub, HubConfig
from wsbus.log import LocalLog
from wsbus.schema import Event, Hello
from wsbus.store import MemoryStore, SqliteStore

from .helpers import async_wait_for
from .test_hub import FakeSession


def draft(sender: str, ref: str | None, body: str = "", to: str = "bob") -> Event:
    return Event(seq=0, ts=0.0, channel="default", from_=sender, to=to, body=body, ref=ref)


async def opened(store: Any = None, **kw: Any) -> LocalLog:
    log = LocalLog(store or MemoryStore(), **kw)
    await log.open()
    return log


async def collect(tail: AsyncIterator[list[Event]], n: int) -> list[list[Event]]:
    batches: list[list[Event]] = []
    async for batch in tail:
        batches.append(batch)
        if sum(map(len, batches)) >= n:
            break
    return batches


async def test_append_stamps_seq_and_ts_strictly_increasing() -> None:
    log = await opened()
    stamps = []
    for i in range(50):
        stamps += await log.append([draft("a", f"r{i}"), draft("a", None, "no ref")])
    assert [s.seq for s in stamps] == list(range(1, 101))
    assert all(b.ts > a.ts for a, b in itertools.pairwise(stamps))
    assert not any(s.duplicate for s in stamps)
    assert (log.committed_seq, log.committed_ts) == (100, stamps[-1].ts)


async def test_a_ref_already_held_gets_the_original_stamp_and_is_not_stored_again() -> None:
    store = MemoryStore()
    log = await opened(store)
    first = await log.append([draft("a", "r1"), draft("b", "r1")])  # refs are per sender
    again = await log.append([draft("a", "r1", "changed"), draft("a", "r2"), draft("a", "r2")])
    assert again[0] == first[0]._replace(duplicate=True)
    assert again[1].seq == 3 and not again[1].duplicate
    assert again[2] == again[1]._replace(duplicate=True)  # twice in one batch: once
    assert log.known("a", "r2") == again[1]._replace(duplicate=True)
    assert [e.seq for e in await store.query(_all())] == [1, 2, 3]


async def test_the_ref_window_survives_a_restart_and_is_bounded(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    log = await opened(SqliteStore(db), ref_window=3)
    for i in range(5):
        await log.append([draft("a", f"r{i}")])
    assert log.known("a", "r0") is None and log.known("a", "r4") is not None
    await log.store.close()
    log = await opened(SqliteStore(db), ref_window=3)
    assert [log.known("a", f"r{i}") is not None for i in range(5)] == [False] * 2 + [True] * 3
    (stamp,) = await log.append([draft("a", "r3")])
    assert stamp.duplicate and stamp.seq == 4
    (stamp,) = await log.append([draft("a", "new")])
    assert stamp.seq == 6  # numbering continues after the restart
    await log.store.close()


async def test_a_refused_commit_stores_nothing_and_leaves_no_gap() -> None:
    store = MemoryStore()
    log = await opened(store)
    await log.append([draft("a", "r1")])
    real = store.append

    async def refuse(*a: Any) -> None:
        raise OSError("disk full")

    store.append = refuse  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        await log.append([draft("a", "r2"), draft("a", "r3")])
    assert log.known("a", "r2") is None and log.committed_seq == 1
    store.append = real  # type: ignore[method-assign]
    stamps = await log.append([draft("a", "r2")])
    assert stamps[0].seq == 2 and not stamps[0].duplicate


async def test_the_tail_catches_up_from_the_index_then_follows_commits() -> None:
    log = await opened()
    for i in range(1, 8):
        await log.append([draft("a", f"r{i}")])
    tail = log.tail(2)
    first = await anext(tail)  # seqs 3..7 from the index
    later = asyncio.ensure_future(collect(tail, 2))
    await log.append([draft("a", "r8"), draft("a", "r9")])
    seqs = [e.seq for e in first] + [e.seq for b in await later for e in b]
    assert seqs == list(range(3, 10))


async def test_commits_during_the_catch_up_are_yielded_once() -> None:
    log = await opened()
    for i in range(1, 1200):  # more than one catch-up page
        await log.append([draft("a", f"r{i}")])
    tail = log.tail(0)
    seqs = [e.seq for e in await anext(tail)]
    await log.append([draft("a", "during")])  # pushed while the tail reads pages
    async for batch in tail:
        seqs += [e.seq for e in batch]
        if seqs[-1] == 1200:
            break
    assert seqs == list(range(1, 1201))


async def test_seal_ends_the_tail_after_what_was_committed() -> None:
    log = await opened()
    tail = log.tail(0)
    reader = asyncio.ensure_future(collect(tail, 10**9))
    await log.append([draft("a", "r1")])
    await log.append([draft("a", "r2")])
    log.seal()
    batches = await asyncio.wait_for(reader, 5)
    assert [e.seq for b in batches for e in b] == [1, 2]
    with pytest.raises(RuntimeError, match="sealed"):
        await log.append([draft("a", "r3")])


async def test_the_watermark_stays_below_events_not_yet_yielded() -> None:
    """Invariant 5 at the log: a ``now`` never passes an event a reader has not had."""
    store = MemoryStore()
    log = await opened(store)
    tail = log.tail(0)
    gate = asyncio.Event()
    real = store.append

    async def slow(*a: Any) -> None:
        await gate.wait()
        await real(*a)

    store.append = slow  # type: ignore[method-assign]
    committing = asyncio.ensure_future(log.append([draft("a", "r1")]))
    await asyncio.sleep(0)
    during = log.watermark()  # stamped, not yet committed
    gate.set()
    (stamp,) = await committing
    assert stamp.ts > during
    assert log.watermark() < stamp.ts  # committed, but the tail has not yielded it
    (batch,) = await collect(tail, 1)
    assert batch[0].seq == stamp.seq
    after = log.watermark()
    assert after >= stamp.ts
    (later,) = await log.append([draft("a", "r2")])
    assert later.ts > after


async def test_the_hub_fans_out_what_the_log_yields_whoever_appended_it() -> None:
    """One fan-out path: an event another writer appends reaches subscribers too."""
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0))
    await hub.start()
    bob = FakeSession()
    hub.open_session(bob, Hello(name="bob"))
    hub.attach(bob)
    await hub.replay(bob, None)
    stamps = await hub.log.append([draft("alice", "elsewhere", "from another hub")])
    await async_wait_for(lambda: bob.of(Event))
    (ev,) = bob.of(Event)
    assert (ev.seq, ev.body, ev.from_) == (stamps[0].seq, "from another hub", "alice")
    assert hub.committed_seq == stamps[0].seq
    await hub.stop()


def _all() -> Any:
    from wsbus.store import Query

    return Query(limit=100)


async def test_a_tail_catching_up_holds_the_watermark_below_what_it_has_not_read() -> None:
    log = await opened()
    stamps = [s for i in range(3) for s in await log.append([draft("a", f"r{i}")])]
    tail = log.tail(0)
    assert log.watermark() < stamps[0].ts  # nothing read yet
    (page,) = await collect(tail, 3)
    assert [e.seq for e in page] == [1, 2, 3]
    assert log.watermark() >= stamps[-1].ts
    await tail.aclose()


async def test_a_closed_tail_no_longer_holds_the_watermark() -> None:
    log = await opened()
    tail = log.tail(0)  # never iterated
    (stamp,) = await log.append([draft("a", "r1")])
    assert log.watermark() < stamp.ts
    await tail.aclose()
    assert log.watermark() >= stamp.ts


async def test_a_resume_ahead_of_the_tail_gets_no_event_twice() -> None:
    """A cursor the log has committed but the hub's tail not yet fanned out (another
    hub's event, or a client fast enough): not recovered, and no duplicate."""
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0))
    await hub.start()
    (stamp,) = await hub.log.append([draft("alice", "x", "first")])
    bob = FakeSession()
    welcome = hub.open_session(bob, Hello(name="bob", resume=stamp.seq))
    hub.attach(bob)
    replay = asyncio.ensure_future(hub.replay(bob, stamp.seq))
    await async_wait_for(lambda: hub.committed_seq == stamp.seq)
    await replay
    await hub.log.append([draft("alice", "y", "second")])
    await async_wait_for(lambda: bob.of(Event))
    assert [e.body for e in bob.of(Event)] == ["second"]
    assert welcome.recovered is False  # above what this hub has fanned out
    await hub.stop()


async def test_the_hub_reads_the_log_again_when_reading_it_fails() -> None:
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0))
    await hub.start()
    bob = FakeSession()
    hub.open_session(bob, Hello(name="bob"))
    hub.attach(bob)
    await hub.replay(bob, None)
    failing = hub.log.store.query

    async def once_broken(*a: Any) -> Any:
        hub.log.store.query = failing  # type: ignore[method-assign]
        raise OSError("index gone for a moment")

    (tail,) = hub.log._tails  # type: ignore[attr-defined]
    tail._upto = 10**9  # type: ignore[attr-defined]  # make it catch up: it queries
    hub.log.store.query = once_broken  # type: ignore[method-assign]
    tail.push(None)
    await async_wait_for(lambda: len(hub.log._tails) == 1 and hub.log._tails[0] is not tail)  # type: ignore[attr-defined]
    await hub.log.append([draft("alice", "x", "still delivered")])
    await async_wait_for(lambda: bob.of(Event), 5)
    assert bob.of(Event)[0].body == "still delivered"
    await hub.stop()


async def test_ready_takes_what_was_pushed_without_waiting() -> None:
    log = await opened()
    tail = log.tail(0)
    assert tail.ready() == []
    (stamp,) = await log.append([draft("a", "r1")])
    (batch,) = tail.ready()
    assert [e.seq for e in batch] == [stamp.seq]
    assert tail.ready() == []  # taken once: the iterator will not yield it again
    await log.append([draft("a", "r2")])
    (next_batch,) = await collect(tail, 1)
    assert [e.seq for e in next_batch] == [2]
    behind = log.tail(0)  # catching up from the index first: nothing ready
    await log.append([draft("a", "r3")])
    assert behind.ready() == []
    await tail.aclose()
    await behind.aclose()
