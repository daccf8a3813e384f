"""DESIGN.md §3 invariants against live hub processes (real sockets, SQLite on disk).

Invariant 5 (the legacy ``now``) is tested at the hub in tests/test_hub.py and through
the HTTP shim in tests/test_compat.py (concurrent senders, legacy cursor clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from wsbus import Client, Event

from .helpers import HubProcess, RawClient, async_wait_for


async def publish(url: str, name: str, count: int, *, body: str = "x", in_flight: int = 32,
                  to: str = "*", progress: list[int] | None = None) -> list[int]:  # fmt: skip
    """Send ``count`` events with up to ``in_flight`` unacknowledged; return their seqs."""
    seqs: list[int] = [] if progress is None else progress
    async with Client(url, name) as c:
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with sem:
                ok = await c.send(to, f"{body}{i}", ref=f"{name}-{i}")
                seqs.append(ok.seq)

        await asyncio.gather(*(one(i) for i in range(count)))
    return sorted(seqs)


@pytest.mark.parametrize("flags", [(), ("--fsync",)], ids=["default", "fsync"])
async def test_durable_before_acknowledged_sigkill(
    hub_factory: Callable[..., HubProcess], flags: tuple[str, ...]
) -> None:
    """Invariant 1: every acknowledged send survives a SIGKILL right after its ok.

    Large sends are pipelined so the hub commits them in large, slow batches; the
    hub is SIGKILLed the moment some oks have arrived, while later batches commit,
    then restarted on the same database, several rounds. An ok sent before its
    commit shows up here as a lost event.
    """
    hub = hub_factory(*flags)
    acked: list[int] = []
    for round_, kill_after in enumerate((1, 40, 90, 150, 200)):
        raw = RawClient(hub.url)
        await raw.open({"name": "alice"})

        async def pump(raw: RawClient = raw, round_: int = round_) -> None:
            with contextlib.suppress(ConnectionClosed):
                for i in range(300):
                    body = f"{i:08d}" * 7000
                    ref = f"r{round_}-{i}"
                    await raw.send({"op": "send", "ref": ref, "to": "bob", "body": body})

        sender = asyncio.create_task(pump())
        got = 0
        while got < kill_after:
            frame = await raw.recv_op("ok")
            acked.append(int(frame["seq"]))  # type: ignore[call-overload]
            got += 1
        hub.kill()  # SIGKILL: no shutdown code runs
        raw.abort()
        await sender
        hub.start(hub.port)
    stored: list[int] = []
    async with Client(hub.url, "bob", resume=0) as bob:
        after = 0
        while True:
            page = await bob.history(limit=1000, after=after)
            stored += [e.seq for e in page.events]
            if not page.more:
                break
            after = page.events[-1].seq
        lost = set(acked) - set(stored)
        assert not lost, f"{len(lost)} acknowledged events lost"
        received: list[int] = []
        async for ev in bob.events():  # a resuming listener gets them all, in order
            received.append(ev.seq)
            if len(received) == len(stored):
                break
    assert received == stored


async def test_monotonic_seq_and_ts_across_restart(hub: HubProcess) -> None:
    """Invariant 2: seq and ts strictly increase together, also across a restart."""
    await asyncio.gather(publish(hub.url, "a", 300), publish(hub.url, "b", 300))
    hub.restart()
    await publish(hub.url, "c", 100)
    async with Client(hub.url, None) as c:
        page = await c.history(limit=1000)
    seqs = [e.seq for e in page.events]
    ts = [e.ts for e in page.events]
    assert len(seqs) == 700
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert all(b > a for a, b in itertools.pairwise(ts))


async def test_resume_while_publishing_gets_everything_once_in_order(hub: HubProcess) -> None:
    """Invariant 3: a subscriber that drops and resumes mid-stream misses and repeats nothing.

    A raw client (no client-side dedupe) records every event frame the hub sends.
    """
    total = 6000
    progress: list[int] = []
    pub = asyncio.create_task(publish(hub.url, "pub", total, in_flight=64, progress=progress))
    got: list[int] = []
    last: int | None = None
    drops = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raw = RawClient(hub.url)
        hello: dict[str, object] = {"name": "sub", "channels": ["default"]}
        if last is not None:
            hello["resume"] = last
        else:
            hello["resume"] = 0
        await raw.open(hello)
        take = 300 if drops < 6 else None
        n = 0
        try:
            while take is None or n < take:
                frame = await raw.recv(timeout=10)
                if frame["op"] == "event":
                    seq = int(frame["seq"])  # type: ignore[call-overload]
                    got.append(seq)
                    last = seq
                    n += 1
                    if len(got) >= total:
                        break
        finally:
            if take is not None and len(got) < total:
                raw.abort()  # vanish mid-stream, like a network drop
                drops += 1
                # stay away while the publisher moves on, so the resume has a backlog
                # to replay while new events keep committing
                mark = len(progress)
                await async_wait_for(lambda m=mark: len(progress) >= min(total, m + 400))
            else:
                await raw.close()
        if len(got) >= total:
            break
    sent = await pub
    assert drops >= 6
    assert got == sorted(set(got)), "duplicates or out of order"
    assert got == sent


async def test_resending_a_ref_creates_no_duplicate(hub: HubProcess) -> None:
    """Invariant 4: same (sender, ref) → same seq, on a new connection and after a crash."""
    raw = RawClient(hub.url)
    await raw.open({"name": "alice"})
    frame = {"op": "send", "ref": "once", "to": "bob", "body": "hello"}
    await raw.send(frame)
    first = await raw.recv_op("ok")
    await raw.send(frame)
    again = await raw.recv_op("ok")
    assert (again["seq"], again["duplicate"]) == (first["seq"], True)
    raw.abort()
    raw2 = RawClient(hub.url)
    await raw2.open({"name": "alice"})
    await raw2.send(frame)
    assert (await raw2.recv_op("ok"))["seq"] == first["seq"]
    await raw2.close()
    hub.restart()  # SIGKILL + start: the idempotency window is rebuilt from the store
    raw3 = RawClient(hub.url)
    await raw3.open({"name": "alice"})
    await raw3.send(frame)
    third = await raw3.recv_op("ok")
    assert (third["seq"], third["duplicate"]) == (first["seq"], True)
    await raw3.send({"op": "history", "ref": "h", "limit": 100})
    page = await raw3.recv_op("history_result")
    assert [e["seq"] for e in page["events"]] == [first["seq"]]  # type: ignore[union-attr]
    await raw3.close()


async def test_client_send_retries_idempotently_across_hub_restart(hub: HubProcess) -> None:
    """The client resends unacknowledged sends after reconnecting; nothing is doubled."""
    c = Client(hub.url, "alice", backoff_min=0.05, backoff_max=0.3)
    await c.connect()
    sends = [asyncio.create_task(c.send("bob", f"m{i}", ref=f"k{i}")) for i in range(300)]
    await asyncio.sleep(0)
    hub.restart()
    results = await asyncio.wait_for(asyncio.gather(*sends), 60)
    await c.close()
    async with Client(hub.url, None) as reader:
        page = await reader.history(limit=1000)
    refs = [e.ref for e in page.events]
    assert sorted(refs, key=lambda r: int(r[1:])) == [f"k{i}" for i in range(300)]  # type: ignore[index]
    assert len({r.seq for r in results}) == 300


async def test_slow_subscriber_is_cut_off_fast_one_keeps_up(
    hub_factory: Callable[..., HubProcess],
) -> None:
    """Invariant 6: a stalled reader is closed with 4008; others are unaffected; it resumes."""
    hub = hub_factory("--send-queue", "262144")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", hub.port))
    slow = RawClient(hub.url, sock=sock, max_queue=1)
    await slow.open({"name": "slow", "resume": 0})
    fast_seqs: list[int] = []

    async def fast_reader() -> None:
        async with Client(hub.url, "fast") as fast:
            async for ev in fast.events():
                fast_seqs.append(ev.seq)
                if len(fast_seqs) == total:
                    return

    total = 3000
    body = "y" * 4096
    reader = asyncio.create_task(fast_reader())
    await async_wait_for(lambda: True)
    await asyncio.sleep(0)
    started = time.monotonic()
    sent = await publish(hub.url, "pub", total, body=body, in_flight=64)
    await asyncio.wait_for(reader, 60)
    fast_elapsed = time.monotonic() - started
    assert fast_seqs == sent
    # now the slow one reads what was buffered for it, then the close frame
    slow_seqs: list[int] = []
    try:
        while True:
            frame = await slow.recv(timeout=20)
            if frame["op"] == "event":
                slow_seqs.append(int(frame["seq"]))  # type: ignore[call-overload]
    except ConnectionClosed:
        pass
    conn = slow.conn
    assert conn.close_code == 4008, (conn.close_code, conn.close_reason)  # type: ignore[attr-defined]
    assert len(slow_seqs) < total
    # and it resumes without loss
    rest: list[int] = []
    async with Client(hub.url, "slow", resume=slow_seqs[-1] if slow_seqs else 0) as again:
        async for ev in again.events():
            rest.append(ev.seq)
            if ev.seq == sent[-1]:
                break
    assert slow_seqs + rest == sent
    assert fast_elapsed < 30


async def test_graceful_shutdown_commits_and_asks_clients_to_reconnect(hub: HubProcess) -> None:
    raw = RawClient(hub.url)
    await raw.open({"name": "bob"})
    seqs = await publish(hub.url, "alice", 50, to="bob")

    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await raw.recv(timeout=30)

    reader = asyncio.create_task(drain())
    started = time.monotonic()
    status, output = await asyncio.to_thread(hub.stop)
    assert time.monotonic() - started < 5
    assert status == 0
    assert "Traceback" not in output
    await reader
    assert raw.conn.close_code == 1001  # type: ignore[attr-defined]
    hub.start(hub.port)
    async with Client(hub.url, None) as c:
        page = await c.history(limit=100)
    assert [e.seq for e in page.events] == seqs
    assert all(isinstance(e, Event) for e in page.events)
