"""End-to-end basics against a live hub process: send, receive, presence, receipts, history."""

from __future__ import annotations

import asyncio

from wsbus import Client, Event, Presence, Receipt

from .helpers import HubProcess


async def next_of(client: Client, kind: type, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    async def take():  # type: ignore[no-untyped-def]
        async for item in client:
            if isinstance(item, kind):
                return item
        raise AssertionError("client closed")

    return await asyncio.wait_for(take(), timeout)


async def test_direct_broadcast_presence_receipt_history(hub: HubProcess) -> None:
    async with Client(hub.url, "bob") as bob, Client(hub.url, "alice") as alice:
        up = await next_of(bob, Presence)
        assert (up.name, up.state) in {("bob", "up"), ("alice", "up")}
        ok = await alice.send("bob", "hello bob", thread="t1")
        ev = await next_of(bob, Event)
        assert (ev.seq, ev.from_, ev.to, ev.body, ev.thread) == (
            ok.seq,
            "alice",
            "bob",
            "hello bob",
            "t1",
        )
        await bob.ack(ev.seq, "read")
        receipt = await next_of(alice, Receipt)
        assert (receipt.seq, receipt.by, receipt.status) == (ok.seq, "bob", "read")
        ok2 = await alice.send("*", "hi all")
        ev2 = await next_of(bob, Event)
        assert (ev2.seq, ev2.to) == (ok2.seq, "*")
        page = await alice.history(limit=10)
        assert [e.seq for e in page.events] == [ok.seq, ok2.seq]
        page = await alice.history(thread="t1", limit=10)
        assert [e.body for e in page.events] == ["hello bob"]
        roster = await alice.roster()
        assert {m.name for m in roster.members} == {"alice", "bob"}
    async with Client(hub.url, "carol") as carol:
        await carol.send("bob", "x")
