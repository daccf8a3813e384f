"""The shim's /inbox counts: a snapshot of the index plus the events the tail yields."""

from __future__ import annotations

import asyncio

from wsbus.compat.inbox import InboxCounts

from wsbus.schema import Event
from wsbus.store import MemoryStore


def ev(seq: int, to: str = "bob") -> Event:
    return Event(seq=seq, ts=float(seq), channel="default", from_="alice", to=to, body="x")


async def test_events_arriving_while_the_snapshot_is_read_count_once() -> None:
    store = MemoryStore()
    await store.open()
    await store.append([ev(1), ev(2)])
    counts = InboxCounts()
    real = store.counts
    gate = asyncio.Event()

    async def slow() -> tuple[dict[tuple[str, str], int], int]:
        answer = await real()
        await gate.wait()  # the tail yields meanwhile: 2 again (already read) and 3
        return answer

    store.counts = slow  # type: ignore[method-assign]
    loading = asyncio.ensure_future(counts.load(store))
    await asyncio.sleep(0)
    counts.add([ev(2), ev(3)])
    assert counts.counts == {}  # kept until the snapshot is in
    gate.set()
    await loading
    assert counts.counts == {("default", "bob"): 3} and counts.upto == 3
    counts.add([ev(4, "*")])
    assert counts.counts == {("default", "bob"): 3, ("default", "*"): 1}


async def test_nothing_is_kept_before_the_first_load_but_the_batches() -> None:
    counts = InboxCounts()
    counts.add([ev(1)])
    store = MemoryStore()
    await store.open()
    await store.append([ev(1)])
    await counts.load(store)
    assert counts.counts == {("default", "bob"): 1}  # once, though seen twice
