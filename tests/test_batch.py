"""Batches (``hello.capabilities``: ``batch``): several events in one ``events`` frame,
several presence changes in one ``presences`` frame — the same content, in the same
order, as the one-by-one frames a client without the capability gets."""

from __future__ import annotations

import asyncio
from typing import Any

from wsbus import Client
from wsbus.fanout import BATCH_BYTES, BATCH_EVENTS, batches
from wsbus.presence import TICK
from wsbus.schema import Event, Events, Presence, Presences, Send

from .helpers import RawClient, async_wait_for
from .test_hub import FakeSession, join, make_hub


def ev(seq: int, body: str = "x") -> Event:
    return Event(seq=seq, ts=float(seq), channel="c", from_="a", to="*", body=body)


def flat(frames: list[Any]) -> list[Any]:
    """What a batch reader makes of its frames: one item per event or change."""
    out: list[Any] = []
    for f in frames:
        if isinstance(f, Events):
            out += f.events
        elif isinstance(f, Presences):
            out += f.presences()
        else:
            out.append(f)
    return out


def test_batches_keep_order_and_bounds() -> None:
    assert list(batches([ev(1)])) == [ev(1)]  # one event: the plain frame
    many = [ev(i) for i in range(1, 600)]
    frames = list(batches(many))
    assert all(isinstance(f, Events) and len(f.events) <= BATCH_EVENTS for f in frames)
    assert flat(frames) == many
    big = [ev(i, "y" * 100_000) for i in range(1, 8)]
    frames = list(batches(big))
    for f in frames:
        inside = f.events if isinstance(f, Events) else [f]
        assert sum(len(e.body) for e in inside) <= BATCH_BYTES
    assert flat(frames) == big
    huge = [ev(1, "z" * (BATCH_BYTES + 1)), ev(2)]
    assert flat(list(batches(huge))) == huge  # an event over the bound goes alone


async def test_a_burst_is_one_frame_for_a_batch_reader_and_the_same_events() -> None:
    hub = await make_hub()
    sender = await join(hub, "sender")
    plain = await join(hub, "plain")
    reader = await join(hub, "reader", capabilities=["batch"])
    assert reader.batch and not plain.batch
    for i in range(5):  # queued in one turn: committed and fanned out as one batch
        hub.submit(sender, Send(ref=f"r{i}", to="*", body=f"m{i}"))
    await async_wait_for(lambda: len(plain.of(Event)) == 5)
    await async_wait_for(lambda: reader.of(Events))
    assert [e.body for e in plain.of(Event)] == [f"m{i}" for i in range(5)]
    assert len(reader.of(Events)) == 1 and reader.of(Event) == []
    assert flat(reader.of(Events)) == plain.of(Event)
    await hub.stop()


async def test_presence_is_gathered_for_batch_readers_and_written_before_events() -> None:
    hub = await make_hub()
    plain = await join(hub, "plain")
    reader = await join(hub, "reader", capabilities=["batch"])
    crowd: list[FakeSession] = [await join(hub, f"n{i}") for i in range(20)]
    hub.close_session(crowd[0])
    # the plain member had each change at once, the reader has them pending
    assert [p.name for p in plain.of(Presence)][-21:] == [
        *(f"n{i}" for i in range(20)),
        "n0",
    ]
    # an event now: the gathered changes go first
    hub.submit(crowd[1], Send(ref="e", to="*", body="after the crowd"))
    await async_wait_for(lambda: reader.of(Event))
    items = flat(reader.frames)
    first_event = next(i for i, f in enumerate(items) if isinstance(f, Event))
    changes = [(p.name, p.state) for p in items[:first_event] if isinstance(p, Presence)]
    assert changes[-21:] == [*((f"n{i}", "up") for i in range(20)), ("n0", "down")]
    assert len(reader.of(Presences)) <= 2  # its own "up" may have gone in a tick before
    await hub.stop()


async def test_a_change_after_a_quiet_spell_goes_at_once_and_a_crowd_in_one_frame() -> None:
    hub = await make_hub()
    reader = await join(hub, "reader", capabilities=["batch"])
    await asyncio.sleep(TICK * 1.2)  # quiet: reader's own "up" went out, a tick passed
    before = len(reader.frames)
    began = asyncio.get_running_loop().time()
    await join(hub, "first")
    # written at once (once the hello's own writes are done), not held for a tick
    await async_wait_for(lambda: len(reader.frames) > before, timeout=TICK * 8)
    assert asyncio.get_running_loop().time() - began < TICK / 2
    assert [(p.name, p.state) for p in flat(reader.frames[before:])] == [("first", "up")]
    crowd = [await join(hub, f"c{i}") for i in range(30)]
    assert len(reader.frames) == before + 1  # the crowd right after it: gathered
    await async_wait_for(lambda: len(flat(reader.frames[before:])) == 31, timeout=TICK * 8)
    assert len(reader.frames) == before + 2  # ... into one frame at the tick's end
    assert isinstance(reader.frames[-1], Presences)
    assert [p.name for p in reader.frames[-1].changes] == [f"c{i}" for i in range(30)]
    assert {p.channel for p in reader.frames[-1].presences()} == {"default"}
    del crowd
    await hub.stop()


async def test_clients_with_and_without_batches_see_the_same_stream(hub: Any) -> None:
    """Against a real hub: the Python client (batches) and a raw client (none) get
    every event once, in seq order, after a burst and after a replay."""
    raw = RawClient(hub.url)
    welcome = await raw.open({"name": "raw"})
    assert "capabilities" not in welcome  # asked for none, granted none
    async with Client(hub.url, "py") as py, Client(hub.url, "pub", channels=[]) as pub:
        assert py.welcome is not None and py.welcome.capabilities == ["batch"]
        sends = await asyncio.gather(*(pub.send("*", f"burst {i}") for i in range(200)))
        seqs = sorted(s.seq for s in sends)
        got: list[int] = []
        async with asyncio.timeout(20):
            async for item in py:
                if isinstance(item, Event):
                    got.append(item.seq)
                    if len(got) == len(seqs):
                        break
        assert got == seqs
        raw_seqs = []
        while len(raw_seqs) < len(seqs):
            frame = await raw.recv_until(lambda f: f.get("op") in ("event", "events"))
            assert frame["op"] == "event"  # never a batch for a client that did not ask
            raw_seqs.append(frame["seq"])
        assert raw_seqs == seqs
    async with Client(hub.url, "late", resume=0) as late:  # a replay, in batches
        replayed: list[int] = []
        async with asyncio.timeout(20):
            async for item in late:
                if isinstance(item, Event) and item.body.startswith("burst"):
                    replayed.append(item.seq)
                    if len(replayed) == len(seqs):
                        break
        assert replayed == seqs
    await raw.close()
