"""Hostile load: what careless or hostile clients and processes do to a hub, each
figure beside a baseline measured in the same run.

- **old cursors**: ``polls`` concurrent ``GET /recv`` with old cursors (half
  ``since=0``, older than the shim's window; half inside it), for names with no
  messages among ``events`` stored ones, in ``rounds``; meanwhile a websocket
  client pings the hub one ping after another. Baseline: the same rounds of
  ``GET /healthz`` (what aiohttp itself costs per request).
- **stored bodies**: hub RSS growth after ``bodies`` sends of 64,000-character
  bodies on a channel nobody polls. Baseline: the same on a hub with ``--no-http``
  (no legacy shim, so no window of recent events).
- **another writer**: a second process holds the database's write lock
  (``BEGIN IMMEDIATE``) for ``lock_s`` seconds while a send waits for it; the worst
  ping round trip meanwhile. Baseline: the same pings with no lock held.

``python -m bench.hostile [--quick]`` runs this section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from .common import alone, step
from .report import Row, _get, _ratio, _section
from .servers import ServerProcess

__all__ = ["POLLERS", "HostileParams", "hostile_rows", "section"]

SECTION = "**hostile load** (baseline: the same measure without the hostile part, same run)"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_UNLIMITED = ("--rate-events", "0", "--rate-bytes", "0")


@dataclass
class HostileParams:
    events: int = 39_000
    polls: int = 400
    rounds: int = 3
    bodies: int = 1500
    lock_s: float = 2.0
    deadline: float = 120.0

    @classmethod
    def quick(cls) -> HostileParams:
        return cls(events=5000, polls=200, rounds=2, bodies=300, lock_s=1.0, deadline=60.0)


class _Peer:
    """A websocket client speaking wsbus JSON frames, one request at a time."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.n = 0

    @classmethod
    async def open(cls, url: str, name: str) -> _Peer:
        conn = await connect(url, subprotocols=["wsbus.v1.json"], compression=None)  # type: ignore[list-item]
        await conn.send(
            _encode({"op": "hello", "name": name, "channels": [], "presence": False}), text=True
        )
        peer = cls(conn)
        await peer.until("welcome")
        return peer

    async def put(self, frame: dict[str, Any]) -> None:
        await self.conn.send(_encode(frame), text=True)

    async def until(self, op: str, timeout: float = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame: dict[str, Any] = _decode(await self.conn.recv())
                if frame["op"] == op:
                    return frame

    async def ping(self) -> float:
        self.n += 1
        start = time.perf_counter()
        await self.put({"op": "ping", "ref": f"p{self.n}"})
        await self.until("pong")
        return time.perf_counter() - start

    async def publish(self, count: int, to: str, body: str, window: int = 256) -> None:
        """``count`` sends with up to ``window`` unacknowledged."""
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < window:
                frame = {"op": "send", "ref": f"r{sent}", "to": to, "body": body}
                await self.put(frame)
                sent += 1
            await self.until("ok")
            acked += 1

    async def close(self) -> None:
        await self.conn.close()


async def _pings_while(peer: _Peer, busy: subprocess.Popen[str], deadline: float) -> list[float]:
    rtts: list[float] = []
    end = time.monotonic() + deadline
    while busy.poll() is None and time.monotonic() < end:
        rtts.append(await peer.ping())
        await asyncio.sleep(0.02)
    return rtts


#: ``python -c POLLERS URL PATH ROUNDS WIDTH RECENT``: ROUNDS of WIDTH concurrent GET
#: PATH (half with since=0, half with since=RECENT); prints "ready" before the first
POLLERS = r"""
import asyncio, sys, aiohttp
async def main(url, path, rounds, width, recent):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one(i):
            since = "0" if i % 2 else recent
            params = {"to": f"nobody{i % 50}", "since": since, "max": "100"}
            async with s.get(f"{url}{path}", params=params) as r:
                assert r.status == 200, await r.text()
                await r.read()
        print("ready", flush=True)
        for _ in range(rounds):
            await asyncio.gather(*(one(i) for i in range(width)))
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
"""


async def old_cursors(hub: ServerProcess, path: str, hp: HostileParams) -> dict[str, Any]:
    """Pings while rounds of concurrent GET ``path`` (``/recv`` or ``/healthz``) run."""
    peer = await _Peer.open(hub.url, "pinger")
    try:
        inside = max(1, hp.events * 3 // 4)  # a cursor inside the shim's window
        await peer.put({"op": "history", "ref": "h", "after": inside, "limit": 1})
        events = (await peer.until("history_result"))["events"]
        recent = repr(events[0]["ts"]) if events else "0"
        cpu0 = hub.cpu()
        pollers = subprocess.Popen(
            [sys.executable, "-c", POLLERS, hub.http_url, path, str(hp.rounds), str(hp.polls),
             recent],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert pollers.stdout is not None
            pollers.stdout.readline()
            started = time.monotonic()
            rtts = await _pings_while(peer, pollers, hp.deadline)
            took = time.monotonic() - started
            complete = pollers.wait(hp.deadline) == 0
        finally:
            if pollers.poll() is None:
                pollers.kill()
                pollers.wait(10)
        requests = hp.rounds * hp.polls
        return {
            "worst_ping_ms": max(rtts) * 1e3,
            "p50_ping_ms": statistics.median(rtts) * 1e3,
            "requests_per_s": requests / took,
            "cpu_us_per_request": (hub.cpu() - cpu0) / requests * 1e6,
            "complete": complete,
        }
    finally:
        await peer.close()


async def stored_bodies(hub: ServerProcess, hp: HostileParams) -> dict[str, Any]:
    peer = await _Peer.open(hub.url, "writer")
    try:
        body = "b" * 64_000
        await peer.publish(50, "nobody", body, window=16)  # warm-up
        before = hub.rss()
        await peer.publish(hp.bodies, "nobody", body, window=16)
        return {
            "rss_growth_mib": (hub.rss() - before) / 2**20,
            "stored_mib": hp.bodies * 64e3 / 2**20,
        }
    finally:
        await peer.close()


_LOCKER = (
    "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
    "c.execute('BEGIN IMMEDIATE') if sys.argv[3] == 'lock' else None; print('ready', flush=True);"
    "time.sleep(float(sys.argv[2])); c.execute('COMMIT') if c.in_transaction else None"
)


async def another_writer(
    hub: ServerProcess, db: Path, lock: bool, hp: HostileParams
) -> dict[str, Any]:
    """Worst ping while a send waits for another process's write lock (or none)."""
    writer, pinger = await _Peer.open(hub.url, "writer"), await _Peer.open(hub.url, "pinger")
    try:
        await writer.publish(1, "nobody", "warm-up")
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(db), str(hp.lock_s), "lock" if lock else "-"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None
            locker.stdout.readline()
            started = time.monotonic()
            await writer.put({"op": "send", "ref": "during", "to": "x", "body": "y"})
            ok = asyncio.ensure_future(writer.until("ok", hp.deadline))
            rtts = await _pings_while(pinger, locker, hp.deadline)
            await ok
            waited = time.monotonic() - started
        finally:
            if locker.poll() is None:
                locker.kill()
            locker.wait(10)
        return {"worst_ping_ms": max(rtts) * 1e3, "send_waited_s": waited, "pings": len(rtts)}
    finally:
        await writer.close()
        await pinger.close()


def _no_http_hub(tmp: Path, env: dict[str, str]) -> ServerProcess:
    """A hub without the legacy shim (ServerProcess.hub always gives it a port)."""
    args = ["-m", "wsbus", "serve", "--host", "127.0.0.1", "--port", "0", "--no-http",
            "--db", str(tmp / "hostile-no-http.db"), *_UNLIMITED]  # fmt: skip
    return ServerProcess("hostile-no-http", "wsbus", args, env, tmp / "hostile-no-http.log")


async def section(
    runs: dict[str, Any], errors: list[str], tmp: Path, env: dict[str, str], hp: HostileParams
) -> None:
    """Each scenario on hubs of their own (stored history would skew the others)."""
    polls = ServerProcess.hub("hostile-polls", tmp, env, *_UNLIMITED).start()
    with_shim = ServerProcess.hub("hostile-bodies", tmp, env, *_UNLIMITED).start()
    no_shim = _no_http_hub(tmp, env).start()
    locked = ServerProcess.hub("hostile-writer", tmp, env, *_UNLIMITED).start()
    db = tmp / "hostile-writer.db"  # ServerProcess.hub names the database after the label
    try:
        filler = await _Peer.open(polls.url, "filler")
        await filler.publish(hp.events, "bob", "x")
        await filler.close()
        await step(runs, errors, "hostile_polls", "wsbus", old_cursors(polls, "/recv", hp))
        await step(runs, errors, "hostile_polls", "healthz", old_cursors(polls, "/healthz", hp))
        await step(runs, errors, "hostile_bodies", "wsbus", stored_bodies(with_shim, hp))
        await step(runs, errors, "hostile_bodies", "no-http", stored_bodies(no_shim, hp))
        await step(runs, errors, "hostile_writer", "wsbus", another_writer(locked, db, True, hp))
        await step(runs, errors, "hostile_writer", "idle", another_writer(locked, db, False, hp))
    finally:
        for s in (polls, with_shim, no_shim, locked):
            s.stop()


def hostile_rows(results: dict[str, Any], hp: HostileParams) -> list[Row]:
    out = [_section(SECTION)]

    def pair(name: str, key: str, field: str, base: str) -> None:
        a, at = _get(results, key, "wsbus", field)
        b, bt = _get(results, key, base, field)
        out.append(Row(name, at, bt, _ratio(a, b)))

    n = f"{hp.rounds} x {hp.polls}"
    pair(f"{n} old-cursor /recv (vs /healthz): worst ping (ms)", "hostile_polls",
         "worst_ping_ms", "healthz")  # fmt: skip
    pair(f"{n} old-cursor /recv (vs /healthz): requests/s", "hostile_polls",
         "requests_per_s", "healthz")  # fmt: skip
    pair(f"{hp.bodies} bodies of 64 KB stored: hub RSS growth (MiB; vs --no-http)",
         "hostile_bodies", "rss_growth_mib", "no-http")  # fmt: skip
    pair(f"write lock held {hp.lock_s:g} s by another process: worst ping (ms; vs no lock)",
         "hostile_writer", "worst_ping_ms", "idle")  # fmt: skip
    _, at = _get(results, "hostile_writer", "wsbus", "send_waited_s")
    out.append(Row("... a send meanwhile: its ok after (s), committed once the lock was released",
                   at, "n/a", "-"))  # fmt: skip
    return out


async def _alone(hp: HostileParams) -> int:
    return await alone(
        "hostile",
        lambda runs, errors, tmp, env: section(runs, errors, tmp, env, hp),
        lambda results: hostile_rows(results, hp),
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts")
    args = ap.parse_args()
    hp = HostileParams.quick() if args.quick else HostileParams()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_alone(hp))
    return 130


if __name__ == "__main__":
    sys.exit(main())
