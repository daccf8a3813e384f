"""A running hub whose database misbehaves: a second hub on it, another process
holding its write lock, its WAL deleted. Real hub processes, real files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .helpers import ENGINE, HubProcess, RawClient, async_wait_for
from .test_store_files import _hold_write_lock


def _health(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_second_hub_on_the_same_database_refuses_to_start(
    hub: HubProcess, env: dict[str, str]
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "wsbus", "serve", "--db", str(hub.db), "--port", "0", "--no-http"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {hub.proc.pid}" in lines[0] and "--db" in lines[0]  # type: ignore[union-attr]
    assert hub.proc is not None and hub.proc.poll() is None  # the first one is unharmed


async def _ping_rtts(raw: RawClient, until: Callable[[], bool], limit: float) -> list[float]:
    """Round trips of websocket pings, one after another, while ``until()`` is false."""
    rtts: list[float] = []
    deadline = time.monotonic() + limit
    i = 0
    while not until() and time.monotonic() < deadline:
        i += 1
        start = time.monotonic()
        await raw.send({"op": "ping", "ref": f"p{i}"})
        await raw.recv_op("pong")
        rtts.append(time.monotonic() - start)
        await asyncio.sleep(0.02)
    return rtts


async def test_another_writer_does_not_freeze_the_hub(hub: HubProcess) -> None:
    """A send waits off the loop while another process holds the write lock (2 s):
    pings on another connection keep being answered, and the send commits after."""
    sender, other = RawClient(hub.url), RawClient(hub.url)
    await sender.open({"name": "alice"})
    await other.open({"name": "carol"})
    await sender.send({"op": "send", "ref": "warm", "to": "bob", "body": "before"})
    await sender.recv_op("ok")
    holder = _hold_write_lock(hub.db, 2.0)
    try:
        await sender.send({"op": "send", "ref": "r1", "to": "bob", "body": "during"})
        ok = asyncio.ensure_future(sender.recv_op("ok", timeout=15))
        rtts = await _ping_rtts(other, ok.done, 15)
        frame = await ok
    finally:
        holder.wait(10)
    assert frame["ref"] == "r1"
    assert len(rtts) >= 5 and max(rtts) < 0.5, f"ping round trips {max(rtts) * 1000:.0f} ms"
    await sender.close()
    await other.close()


async def test_a_send_gets_store_failed_after_the_busy_timeout(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory("--busy-timeout", "0.5")
    raw = RawClient(hub.url)
    await raw.open({"name": "alice"})
    await raw.send({"op": "send", "ref": "warm", "to": "bob", "body": "x"})
    await raw.recv_op("ok")
    holder = _hold_write_lock(hub.db, 30)
    try:
        await raw.send({"op": "send", "ref": "r1", "to": "bob", "body": "y"})
        err = await raw.recv_op("error")
        assert err["code"] == "store_failed" and err["ref"] == "r1"
        assert "locked" in str(err["message"])
    finally:
        holder.kill()
        holder.wait(10)
    await raw.send({"op": "send", "ref": "r1", "to": "bob", "body": "y"})  # retried: stored
    ok = await raw.recv_op("ok")
    # (on NATS the stream took the first try: the resend is its duplicate)
    assert ok["ref"] == "r1" and bool(ok.get("duplicate")) == (ENGINE == "nats")
    await raw.close()


async def test_a_deleted_wal_stops_sends_loudly(hub: HubProcess, tmp_path: Path) -> None:
    raw = RawClient(hub.url)
    await raw.open({"name": "alice"})
    for i in range(3):
        await raw.send({"op": "send", "ref": f"a{i}", "to": "bob", "body": f"kept {i}"})
        await raw.recv_op("ok")
    assert _health(f"{hub.http_url}/healthz")[0] == 200
    Path(f"{hub.db}-wal").unlink()
    # the send that finds it gone went into the deleted WAL with those before it; the
    # hub copies them all into the database, so it stands; every later one is refused
    await raw.send({"op": "send", "ref": "found", "to": "bob", "body": "kept 3"})
    assert (await raw.recv_op("ok"))["ref"] == "found"
    await raw.send({"op": "send", "ref": "later", "to": "bob", "body": "refused"})
    err = await raw.recv_op("error")
    assert err["code"] == "store_failed" and err["ref"] == "later"
    assert "deleted or replaced" in str(err["message"])
    assert str(tmp_path) not in str(err["message"])  # the path is for the log only
    status, body = _health(f"{hub.http_url}/healthz")
    assert status == 503 and body["ok"] is False and "restarted" in str(body["error"])
    ws_health = hub.url.replace("ws://", "http://") + "/healthz"
    assert _health(ws_health)[0] == 503
    await async_wait_for(lambda: any("ERROR" in line and "-wal" in line for line in hub.output))
    await raw.close()
    hub.restart()
    bob = RawClient(hub.url)
    await bob.open({"name": "bob"})
    await bob.send({"op": "history", "ref": "h", "limit": 10})
    got = await bob.recv_op("history_result")
    bodies = [e["body"] for e in got["events"]]  # type: ignore[union-attr]
    # what was acknowledged was copied out of the deleted WAL; nothing refused was stored
    assert bodies == ["kept 0", "kept 1", "kept 2", "kept 3"]
    await bob.close()
