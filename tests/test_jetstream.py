"""The log of a bus on NATS JetStream (wsbus/jetstream/), in-process against a real
nats-server: one order for several hubs, ts the same on each, idempotent resends
beyond the stream's window, a rebuildable index, and NATS going away and back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from wsbus.jetstream import EngineConfig, EngineError, JetStreamLog
from wsbus.jetstream.log import next_ts
from wsbus.jetstream.names import channel_of, channel_token, subject, valid_bus
from wsbus.schema import Event
from wsbus.store import Query, SqliteStore, StoreMismatch

from .helpers import async_wait_for
from .natskit import NatsServer

pytestmark = pytest.mark.own_nats


def draft(body: str, ref: str, sender: str = "alice", channel: str = "default") -> Event:
    return Event(seq=0, ts=0.0, channel=channel, from_=sender, to="bob", body=body, ref=ref)


class Hubs:
    """JetStream logs over their own SQLite indexes, closed at the end."""

    def __init__(self, tmp: Path, config: EngineConfig) -> None:
        self.tmp = tmp
        self.config = config
        self.open: list[JetStreamLog] = []

    async def log(self, name: str, config: EngineConfig | None = None) -> JetStreamLog:
        log = JetStreamLog(SqliteStore(self.tmp / f"{name}.db"), config or self.config)
        await log.open()
        self.open.append(log)
        return log

    async def close(self, log: JetStreamLog) -> None:
        self.open.remove(log)
        await log.close()
        await log.store.close()


@pytest.fixture
async def hubs(tmp_path: Path, nats: NatsServer) -> AsyncIterator[Hubs]:
    made = Hubs(tmp_path, EngineConfig(servers=[nats.url], bus="test"))
    yield made
    for log in list(made.open):
        await made.close(log)


async def indexed(log: JetStreamLog) -> list[tuple[int, float, str]]:
    return [(e.seq, e.ts, e.body) for e in await log.store.query(Query(limit=10_000))]


def test_channel_names_become_subject_tokens_reversibly() -> None:
    for channel in ("default", "team.alpha", "a.b.c", "x_y-z", "v1.2"):
        token = channel_token(channel)
        assert "." not in token and channel_of(token) == channel
    assert subject("b", "e", "team.alpha") == "wsbus.b.e.team~alpha"
    assert (
        valid_bus("team-1")
        and not valid_bus("a.b")
        and not valid_bus("")
        and not valid_bus("x" * 33)
    )


def test_ts_rises_strictly_whatever_the_stored_time() -> None:
    assert next_ts(100.0, 99.0) == 100.0
    assert next_ts(100.0, 100.0) > 100.0  # same time: 1 µs later
    assert 100.5 < next_ts(99.0, 100.5) <= 100.5 + 2e-6  # a clock behind: raised


async def test_two_hubs_share_one_order_and_the_same_ts(hubs: Hubs) -> None:
    a = await hubs.log("a")
    b = await hubs.log("b")
    assert a.bus_id == b.bus_id != ""
    tail_b = b.tail(0)
    stamps = []
    for i in range(20):  # interleaved batches from both hubs
        log = a if i % 2 else b
        stamps += await log.append([draft(f"m{i}.{j}", f"r{i}.{j}") for j in range(5)])
    seqs = [s.seq for s in stamps]
    assert seqs == sorted(seqs) and len(set(seqs)) == 100
    tss = [s.ts for s in stamps]
    assert all(x < y for x, y in itertools.pairwise(tss))
    got: list[Event] = []
    async with asyncio.timeout(10):
        async for batch in tail_b:
            got += batch
            if len(got) == 100:
                break
    assert [(e.seq, e.ts) for e in got] == [(s.seq, s.ts) for s in stamps]
    assert await indexed(a) == await indexed(b)
    assert a.watermark() == b.watermark() == stamps[-1].ts


async def test_a_resend_is_stored_once_across_hubs_restarts_and_the_window(
    hubs: Hubs, tmp_path: Path
) -> None:
    # a stream window of half a second: past it, only the indexes know the refs
    short = EngineConfig(servers=hubs.config.servers, bus="short", duplicate_window=0.5)
    a = await hubs.log("a", short)
    (first,) = await a.append([draft("hi", "ref-1")])
    b = await hubs.log("b", short)
    (again,) = await b.append([draft("hi", "ref-1")])  # another hub, within the window
    assert again == first._replace(duplicate=True)
    await asyncio.sleep(1.0)  # past the stream's duplicate window
    await hubs.close(a)
    a = await hubs.log("a", short)  # restarted on its index
    (after,) = await a.append([draft("hi", "ref-1")])
    c = await hubs.log("c", short)  # a new hub: its index rebuilt from the stream
    (rebuilt,) = await c.append([draft("hi", "ref-1"), draft("hi", "ref-1")][:1])
    assert after == rebuilt == first._replace(duplicate=True)
    # twice in one batch: one event, the second answered as a duplicate
    two = await c.append([draft("x", "ref-2"), draft("x", "ref-2")])
    assert two[0].seq == two[1].seq and not two[0].duplicate and two[1].duplicate
    assert [e[2] for e in await indexed(c)] == ["hi", "x"]


async def test_the_index_rebuilds_from_the_stream(hubs: Hubs, tmp_path: Path) -> None:
    a = await hubs.log("a")
    await a.append([draft(f"m{i}", f"r{i}", channel="team.alpha") for i in range(50)])
    before = await indexed(a)
    await hubs.close(a)
    for f in tmp_path.glob("a.db*"):
        f.unlink()
    a = await hubs.log("a")
    assert await indexed(a) == before
    assert (await a.store.query(Query(limit=1)))[0].channel == "team.alpha"


async def test_an_index_of_another_bus_is_refused(hubs: Hubs, tmp_path: Path) -> None:
    a = await hubs.log("a")
    await a.append([draft("hi", "r1")])
    await hubs.close(a)
    other = EngineConfig(servers=hubs.config.servers, bus="other")
    with pytest.raises(StoreMismatch, match=r"a\.db holds .* not bus .*delete a stale index"):
        await hubs.log("a", other)


async def test_nats_gone_refuses_sends_then_the_hub_catches_up(
    hubs: Hubs, nats: NatsServer
) -> None:
    a = await hubs.log("a")
    b = await hubs.log("b")
    tail_a = a.tail(0)
    acked = [s.seq for s in await b.append([draft(f"m{i}", f"r{i}") for i in range(10)])]
    nats.stop()
    await async_wait_for(lambda: a._nc is not None and not a._nc.is_connected, 10)
    start = time.monotonic()
    with pytest.raises(EngineError, match="retry"):
        await a.append([draft("while down", "down-1")])
    assert time.monotonic() - start < 6  # refused within the publish timeout, not hung
    nats.start()  # same port, same store directory
    await async_wait_for(lambda: a._nc is not None and a._nc.is_connected, 20)
    await async_wait_for(lambda: b._nc is not None and b._nc.is_connected, 20)
    acked += [s.seq for s in await a.append([draft("back", "back-1")])]
    got: list[int] = []
    async with asyncio.timeout(15):
        async for batch in tail_a:
            got += [e.seq for e in batch]
            if len(got) >= len(acked):
                break
    assert got == acked  # every acknowledged event, once, in order
    await async_wait_for(lambda: b.applied >= a.applied, 15)  # b catches up too
    assert await indexed(a) == await indexed(b)


async def test_refs_that_differ_only_by_spaces_are_two_events(hubs: Hubs) -> None:
    a = await hubs.log("a")
    stamps = await a.append([draft("one", "x"), draft("two", "x "), draft("three", "x\n")])
    assert len({s.seq for s in stamps}) == 3 and not any(s.duplicate for s in stamps)


async def test_a_hub_starts_on_a_stream_with_no_message_yet(hubs: Hubs) -> None:
    """A migrated bus whose events were all pruned: its stream starts at a later
    sequence and holds nothing; a hub still opens, and its first event takes it."""
    import nats

    from wsbus.jetstream.engine import ensure_stream

    nc = await nats.connect(hubs.config.servers)
    await ensure_stream(nc.jetstream(), hubs.config, first_seq=42)
    await nc.close()
    a = await asyncio.wait_for(hubs.log("a"), 20)
    (stamp,) = await a.append([draft("first", "r1")])
    assert stamp.seq == 42


async def test_retention_trims_the_stream_and_a_later_hub_derives_the_same_ts(
    hubs: Hubs,
) -> None:
    """Events whose stored times go backwards (as a stream leader with a slower clock
    would stamp them) get ts raised above their predecessors. Retention then trims the
    stream; a hub that starts on the trimmed stream must not restart the chain from
    the first message's own time: it takes that event's ts from the bus's floor."""
    import nats

    from wsbus.jetstream.log import TS_HEADER
    from wsbus.jetstream.names import EVENTS

    a = await hubs.log("a")
    nc = await nats.connect(hubs.config.servers)
    js = nc.jetstream()
    for i in range(10):  # stored times 1000, 999, 998…: every ts after the first raised
        payload = msgspec.msgpack.encode(draft(f"m{i}", f"r{i}"))
        await js.publish(subject("test", EVENTS, "default"), payload,
                         headers={TS_HEADER: repr(1000.0 - i)})  # fmt: skip
    await async_wait_for(lambda: a.applied >= 10, 10)
    before = await indexed(a)
    assert [ts for _, ts, _ in before] == sorted(ts for _, ts, _ in before)
    removed, pruned = await a.retain(0.0, 3)  # keep the newest 3
    assert (removed, pruned) == (7, 7)
    state = (await js.stream_info("WSBUS_test")).state
    assert state.first_seq == 8 and state.messages == 3  # the stream was trimmed too
    await nc.close()
    c = await hubs.log("c")
    assert await indexed(c) == before[7:]  # the same seq and ts: 1000.000007…, not 993
    assert c.watermark() == a.watermark()
