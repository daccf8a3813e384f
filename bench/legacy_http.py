"""HTTP client helpers of the legacy agent-bus scenarios (bench/legacy.py).

aiohttp sessions, ``POST /send`` and ``GET /recv`` with their answers checked, and
the waits that watch a server subprocess: quiet CPU, threads back to normal, the
connections it holds, the kernel's accept-queue overflows, a bounded gather.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from .common import BenchError, decode
from .scenarios import Params
from .servers import ServerProcess

__all__ = ["listen_overflows"]

_encode = msgspec.json.Encoder().encode
_HEADERS = {"Content-Type": "application/json", "User-Agent": "Mozilla/5.0"}
_POLL_GRACE = 15.0
"""A blocked ``/recv`` answers within the server's 30 s; the client waits this much longer."""


def _session(limit: int) -> aiohttp.ClientSession:
    """Keep-alive connections (``limit`` of them; 0: unlimited), no proxy, no cookies."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60, sock_connect=30),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
    )


async def _send(
    s: aiohttp.ClientSession, base: str, sender: str, to: str, channel: str, msg: str
) -> dict[str, Any]:
    """``POST /send``; the answer must be 200 ``{"ok": true, ...}``."""
    data = _encode({"from": sender, "to": to, "msg": msg, "channel": channel})
    async with s.post(f"{base}/send", data=data, headers=_HEADERS) as r:
        raw = await r.read()
        status = r.status
    answer: Any = decode(raw) if raw else None
    if status != 200 or not isinstance(answer, dict) or answer.get("ok") is not True:
        raise BenchError(f"POST /send answered {status}: {raw[:200]!r}")
    return answer


async def _recv(
    s: aiohttp.ClientSession,
    base: str,
    to: str,
    channel: str,
    since: float,
    *,
    block: bool = True,
    timeout: float = 30.0 + _POLL_GRACE,
) -> tuple[list[dict[str, Any]], float]:
    """``GET /recv``: the messages and ``now``."""
    flag = "true" if block else "false"
    url = f"{base}/recv?to={to}&since={since!r}&block={flag}&channel={channel}"
    async with s.get(url, headers=_HEADERS, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        raw = await r.read()
        status = r.status
    answer: Any = decode(raw) if raw else None
    if status != 200 or not isinstance(answer, dict) or "messages" not in answer:
        raise BenchError(f"GET /recv answered {status}: {raw[:200]!r}")
    return answer["messages"], float(answer["now"])


def _cursor(messages: list[dict[str, Any]], now: float) -> float:
    """The contract's cursor rule: ``since = max(max(ts), now)``."""
    return max([now, *(float(m["ts"]) for m in messages)])


async def _quiet(server: ServerProcess, most: float, window: float = 0.1) -> float:
    """Wait (at most ``most`` seconds) until the server used under 5% CPU for ``window``."""
    began = time.monotonic()
    while time.monotonic() - began < most:
        cpu0 = server.cpu()
        await asyncio.sleep(window)
        if server.cpu() - cpu0 < 0.05 * window:
            break
    return time.monotonic() - began


async def _settle(server: ServerProcess, threads: int, most: float = 40.0) -> float:
    """After a scenario: wait until a thread-per-request server is back to ``threads``.

    The reference keeps a thread per request until its own 30 s poll timeout even
    when the client went away; the next scenario should not run beside them.
    """
    began = time.monotonic()
    while server.threads() > threads + 2 and time.monotonic() - began < most:
        await asyncio.sleep(0.25)
    return time.monotonic() - began


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because an accept queue was full."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


def _delta(before: int | None) -> int | None:
    after = listen_overflows()
    return after - before if after is not None and before is not None else None


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _wait_held(server: ServerProcess, want: int, timeout: float) -> int:
    """Wait until the server holds ``want`` established connections on its HTTP port."""
    port = _port(server.http_url)
    held = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = server.connections(port)
        if held >= want:
            break
        await asyncio.sleep(0.1)
    return held


async def _ramp(
    server: ServerProcess,
    tasks: list[asyncio.Task[None]],
    coros: list[Coroutine[Any, Any, None]],
    p: Params,
) -> None:
    """Start the requests with at most ``legacy_open_window`` not yet accepted at a time.

    "Accepted" is the server's count of open files grown by one. The reference
    listens with a backlog of 5: a storm of connects overflows its accept queue and
    the kernel then admits about 6 per retransmission wave (seconds apart), so
    opening all 1000 at once would measure that, not the pending polls.
    """
    deadline = time.monotonic() + p.legacy_hold_timeout
    fds0 = server.num_fds()
    it = iter(coros)
    try:
        for coro in it:
            while time.monotonic() < deadline:
                if len(tasks) - (server.num_fds() - fds0) < p.legacy_open_window:
                    break
                await asyncio.sleep(0.001)
            tasks.append(asyncio.create_task(coro))
    finally:
        for coro in it:  # never started (an error or cancellation)
            coro.close()


async def _gather_bounded(coros: list[Awaitable[Any]], timeout: float) -> list[Any]:
    """Run them all; cancel what is left after ``timeout``; results or exceptions, in order."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, timeout=timeout)
    finally:
        late = {t for t in tasks if not t.done()}
        for t in late:
            t.cancel()
        await asyncio.wait(tasks, timeout=10)  # let the cancelled ones finish
    return [
        TimeoutError(f"not done in {timeout}s")
        if t in late or t.cancelled() or not t.done()
        else (t.exception() or t.result())
        for t in tasks
    ]
