"""What a hub holds per connection, and how many connections it takes (docs/SCALE.md).

A hub is meant to hold tens of thousands of mostly idle connections, so what each
one keeps for its whole life is a budget: no handshake headers once read, no
finished replay task, no per-connection dict. And the default ``max_connections``
never promises more connections than the hub has open files for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from wsbus import Client, Event
from wsbus.hub import Hub
from wsbus.hubconfig import HubConfig
from wsbus.limits import LISTEN_BACKLOG, freeze_startup_heap
from wsbus.server import WsServer, WsSession, ws_broadcast
from wsbus.store import MemoryStore, Query

from .helpers import async_wait_for


@contextlib.asynccontextmanager
async def _served(store: MemoryStore, **config: Any) -> AsyncIterator[WsServer]:
    """A hub on ``store`` behind a websocket server on a free loopback port."""
    hub = Hub(store, HubConfig(prune_interval=0, **config), ws_broadcast)
    await hub.start()
    server = WsServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_an_idle_connection_keeps_no_headers_no_replay_task_and_no_dict() -> None:
    hub = Hub(MemoryStore(), HubConfig(prune_interval=0), ws_broadcast)
    await hub.start()
    server = WsServer(hub, "127.0.0.1", 0)
    await server.start()
    clients = [
        Client(f"ws://127.0.0.1:{server.port}", name=f"idle{i}", channels=["c"]) for i in range(3)
    ]
    try:
        for c in clients:
            await c.connect()
        replays = server.conversation._replays
        await async_wait_for(lambda: len(server._sessions) == 3 and not replays)
        for conn in (s.conn for s in server._sessions):
            assert conn.request is not None and conn.response is not None
            assert len(conn.request.headers) == 0 and len(conn.response.headers) == 0
        assert not any(hasattr(s, "__dict__") for s in server._sessions)  # slots, no dict
        # the connections still work after their headers went: a send reaches the others
        got = asyncio.get_running_loop().create_future()

        async def first(c: Client) -> None:
            async for ev in c:
                if isinstance(ev, Event):
                    got.set_result(ev.body)
                    return

        reader = asyncio.create_task(first(clients[1]))
        await clients[0].send("*", "still here", channel="c")
        assert await asyncio.wait_for(got, 10) == "still here"
        reader.cancel()
    finally:
        for c in clients:
            await c.close()
        await server.stop()
    del reader, first, conn
    gc.collect()
    leaked = [o for o in gc.get_objects() if isinstance(o, WsSession)]
    assert not leaked, "a session outlived its connection"


def _serve(tmp: Path, env: dict[str, str], nofile: int, *extra: str) -> tuple[str, str]:
    """Start ``wsbus serve`` with an open-file hard limit of ``nofile``; return its
    output up to the listening line, and what it wrote to stderr."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-m", "wsbus", "serve", "--memory", "--no-http", "--port", "0",
           *extra]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
        preexec_fn=limit,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return "".join(lines), err


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 8000, reason="hard open-file limit < 8000"
)
def test_the_default_max_connections_fits_the_open_file_limit(
    tmp_path: Path, env: dict[str, str]
) -> None:
    out, err = _serve(tmp_path, env, 8000)
    assert "open files limit 8000, max connections 6976" in out, out  # 1024 kept aside
    assert err == "", err
    out, err = _serve(tmp_path, env, 512)  # a small limit: a quarter kept aside
    assert "open files limit 512, max connections 384" in out, out
    assert err == "", err
    # a number set on purpose is kept, even the default's, with one line saying what
    # will fail
    for wanted in ("20000", "50000"):
        out, err = _serve(tmp_path, env, 3000, "--max-connections", wanted)
        assert f"max connections {wanted}" in out, out
        assert err.count("\n") == 1, err
        assert f"max_connections ({wanted}) is above what the open-file limit (3000)" in err
        assert "LimitNOFILE" in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2) to read the backlog")
async def test_the_websocket_port_queues_a_reconnecting_crowd() -> None:
    """A listen backlog of LISTEN_BACKLOG (asyncio's default, 100, drops the SYNs of a
    crowd reconnecting at once; their TCP retries a second later)."""
    async with _served(MemoryStore()) as server:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        # State Recv-Q Send-Q ...: for a listening socket Send-Q is its backlog
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert int(out[2]) == min(LISTEN_BACKLOG, somaxconn), out


async def test_welcome_and_synced_go_out_in_one_write() -> None:
    """A crowd reconnecting with nothing to replay: one system call per connection,
    not one per frame (docs/SCALE.md, the cork). Counts the hub's writes to the
    socket from the hello to ``synced``, and the ops each carried."""
    writes: list[bytes] = []
    async with _served(MemoryStore()) as server, connect(f"ws://127.0.0.1:{server.port}") as ws:
        await async_wait_for(lambda: len(server._sessions) == 1)
        (session,) = server._sessions
        transport = session.conn.transport
        real = transport.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            real(data)

        transport.write = counted  # type: ignore[method-assign]
        hello = {"op": "hello", "name": "a", "channels": ["c"], "presence": False}
        await ws.send(json.dumps(hello))
        ops = []
        while not ops or ops[-1] != "synced":
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            ops.append(frame["op"])
        transport.write = real  # type: ignore[method-assign]
        assert ops[0] == "welcome", ops
    writes_ops = [b"+".join(re.findall(rb'"op":"(\w+)"', w)).decode() for w in writes]
    assert writes_ops == ["welcome+synced"], writes_ops


class _SlowStore(MemoryStore):
    """A store whose event queries take ``delay``: a reader busy with a crowd."""

    delay = 1.5

    async def query(self, q: Query) -> list[Event]:
        await asyncio.sleep(self.delay)
        return await super().query(q)


async def test_a_replay_that_queries_the_store_does_not_hold_the_welcome() -> None:
    """The cork is for a connection whose replay asks the store nothing: one that
    resumes gets its ``welcome`` and its answers at once, ``synced`` after the
    query; its unsent bytes never made it a slow consumer meanwhile."""
    async with _served(_SlowStore(), send_queue=1024) as server:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            hello = {"op": "hello", "name": "a", "channels": ["c"], "resume": 0, "presence": False}
            await ws.send(json.dumps(hello))
            t0 = asyncio.get_running_loop().time()
            for i in range(40):  # their pongs alone are more than send_queue
                await ws.send(json.dumps({"op": "ping", "ref": f"p{i}"}))
            ops: list[tuple[str, float]] = []
            while not ops or ops[-1][0] != "synced":
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                ops.append((frame["op"], asyncio.get_running_loop().time() - t0))
        assert [op for op, _ in ops] == ["welcome"] + ["pong"] * 40 + ["synced"], ops
        assert ops[-2][1] < _SlowStore.delay / 2, ops  # not after the query
        assert ops[-1][1] >= _SlowStore.delay * 0.9, ops


def test_the_start_up_heap_is_frozen_out_of_the_collector() -> None:
    """A hub's start-up objects are not walked again by each full collection a
    connecting crowd triggers (docs/SCALE.md)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
