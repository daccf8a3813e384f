"""A graceful shutdown under load: a client pipelining sends while the hub gets SIGTERM.

Everything the hub commits during its drain must be acknowledged (``ok``) on the wire
before the connection closes, and the close is 1001 (reconnect and resume), never 1008
(the "fix your client" close): ``shutting_down`` is the hub's doing, not a bad frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wsbus import Client
from wsbus.client import SendResult
from wsbus.errors import SendRefused
from wsbus.schema import Error

from .helpers import HubProcess, async_wait_for

MAX_SENDS = 50_000
MAX_SECONDS = 10.0
#: sends the client keeps unanswered: it is always writing, as fast as the hub answers
WINDOW = 5000


def stored_refs(hub: HubProcess, sender: str) -> list[str]:
    """The refs of ``sender``'s events in the hub's SQLite file (the hub has exited)."""
    db = sqlite3.connect(f"file:{hub.db}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT ref FROM events WHERE sender = ?", (sender,)).fetchall()
    finally:
        db.close()
    return [r[0] for r in rows]


async def test_shutdown_acknowledges_every_commit_and_closes_1001(
    hub_factory: Callable[..., HubProcess],
) -> None:
    # no throttling: the client gets as far ahead of the hub as it can
    hub = hub_factory("--rate-events", "0", "--rate-bytes", "0", "--fsync")
    conn = await connect(hub.url, subprotocols=["wsbus.v1.json"], compression=None)  # type: ignore[list-item]
    await conn.send(json.dumps({"op": "hello", "name": "pipe", "channels": []}))
    assert json.loads(await conn.recv())["op"] == "welcome"

    oks: set[str] = set()
    errors: dict[str, int] = {}
    sent = answered = 0
    room = asyncio.Event()

    async def reader() -> None:
        nonlocal answered
        with contextlib.suppress(ConnectionClosed):
            async for data in conn:
                frame: dict[str, Any] = json.loads(data)
                if frame["op"] == "ok":
                    oks.add(frame["ref"])
                elif frame["op"] == "error":
                    errors[frame["code"]] = errors.get(frame["code"], 0) + 1
                answered += 1
                room.set()
        room.set()

    async def writer() -> None:
        nonlocal sent
        deadline = time.monotonic() + MAX_SECONDS
        with contextlib.suppress(ConnectionClosed):
            while sent < MAX_SENDS and time.monotonic() < deadline and not reading.done():
                if sent - answered >= WINDOW:
                    room.clear()
                    await room.wait()
                    continue
                frame = {"op": "send", "ref": f"p{sent}", "to": "bob", "body": "x" * 64}
                await conn.send(json.dumps(frame))
                sent += 1

    reading = asyncio.create_task(reader())
    writing = asyncio.create_task(writer())
    # stop the hub while the client is well into its burst, with sends in flight
    await async_wait_for(lambda: len(oks) >= 2000, 30)
    assert not writing.done(), "the client stopped before the hub did"
    in_flight = sent - answered
    status, output = await asyncio.to_thread(hub.stop)
    await asyncio.wait_for(asyncio.gather(reading, writing), 30)
    assert status == 0 and "Traceback" not in output, output

    stored = stored_refs(hub, "pipe")
    unacknowledged = set(stored) - oks
    print(
        f"\nsent {sent} ({in_flight} in flight at SIGTERM), stored {len(stored)}, "
        f"ok {len(oks)}, errors {errors}, "
        f"close {conn.close_code}, stored but never acknowledged: {len(unacknowledged)}"
    )
    assert len(stored) == len(set(stored))  # no ref stored twice
    assert oks <= set(stored)  # nothing acknowledged is lost
    assert conn.close_code == 1001, (conn.close_code, conn.close_reason)
    assert not unacknowledged, f"{len(unacknowledged)} stored events never got their ok"


async def test_the_client_library_resends_what_a_shutdown_refused(
    hub_factory: Callable[..., HubProcess],
) -> None:
    """``wsbus.Client`` keeps a send refused with ``shutting_down`` and resends it after
    reconnecting (1001 is not fatal): every send completes once, none is stored twice."""
    hub = hub_factory("--rate-events", "0", "--rate-bytes", "0", "--fsync")
    sends: list[asyncio.Task[SendResult]] = []
    outstanding = 0
    stopped = asyncio.Event()

    def answered(_: object) -> None:
        nonlocal outstanding
        outstanding -= 1

    async with Client(hub.url, "lib", channels=[], backoff_max=0.5) as client:

        async def producer() -> None:
            # pipelining through the library: up to WINDOW sends awaiting their ok
            nonlocal outstanding
            while len(sends) < MAX_SENDS and not stopped.is_set():
                if outstanding >= WINDOW:
                    await asyncio.sleep(0.001)
                    continue
                for _ in range(100):
                    ref = f"lib{len(sends)}"
                    task = asyncio.create_task(client.send("bob", ref, ref=ref))
                    task.add_done_callback(answered)
                    sends.append(task)
                    outstanding += 1
                await asyncio.sleep(0)

        producing = asyncio.create_task(producer())
        await async_wait_for(lambda: sum(t.done() for t in sends) >= 2000, 30)
        status, output = await asyncio.to_thread(hub.stop)
        stopped.set()
        await producing
        assert status == 0 and "Traceback" not in output, output
        waiting = sum(not t.done() for t in sends)
        refused = [t.exception() for t in sends if t.done() and t.exception() is not None]
        assert not refused, refused[:3]
        assert waiting > 0, "every send was answered before the hub stopped"
        hub.start(hub.port)
        await asyncio.wait_for(asyncio.gather(*sends), 60)
    print(f"\n{len(sends)} sends, {waiting} waiting for the restarted hub; all acknowledged")
    hub.kill()
    stored = stored_refs(hub, "lib")
    assert sorted(stored) == sorted(f"lib{i}" for i in range(len(sends)))


async def test_the_client_library_asks_again_after_shutting_down() -> None:
    """A query (``history``, ``roster``...) refused with ``shutting_down`` stays pending
    and is sent again after the next hello; other refusals fail it at once."""
    client = Client("ws://127.0.0.1:9", "lib", reconnect=False)  # never connected
    asking = asyncio.create_task(client.history(timeout=10))
    requests = client._requests  # the table of requests waiting on the hub
    await async_wait_for(lambda: requests.queries, 5)
    ref = next(iter(requests.queries))
    requests.on_error(Error(code="shutting_down", message="hub is shutting down", ref=ref))
    await asyncio.sleep(0)
    assert not asking.done() and ref in requests.queries  # asked again by resend()
    requests.on_error(Error(code="limit_too_large", message="too large", ref=ref))
    with pytest.raises(SendRefused) as refused:
        await asking
    assert refused.value.code == "limit_too_large"
