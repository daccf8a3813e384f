"""What the harness, the workers and the bare server share: frames, connections, limits."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from wsbus.codec import JSON
from wsbus.limits import raise_nofile
from wsbus.schema import SUBPROTOCOL_JSON, Event

if TYPE_CHECKING:
    from .report import Row

__all__ = [
    "BODY_SIZE",
    "CHANNEL",
    "IDLE_CHANNEL",
    "IDLE_PATH",
    "NATS_SUBJECT",
    "PUB_PATH",
    "BenchError",
    "Mode",
    "body",
    "child_argv",
    "decode",
    "event_frame",
    "events_of",
    "handshake",
    "hello_frame",
    "open_ws",
    "raise_nofile",
    "send_frame",
]

Mode = Literal["wsbus", "bare", "agent-bus", "nats"]
"""The agent-bus reference server speaks only the legacy HTTP contract; ``nats``:
core NATS subscribers (nats-py), the fan-out baseline of bench/manyhubs.py."""

NATS_SUBJECT = "bench.fanout"

CHANNEL = "bench"
BODY_SIZE = 100
PUB_PATH = "/pub"
"""Bare server path of send-only connections (publishers never receive broadcasts)."""
IDLE_PATH = "/idle"
"""Bare server path of idle connections: held open, never sent a broadcast (a wsbus
idle subscriber is on a channel nobody sends to)."""
IDLE_CHANNEL = "bench-idle"

decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class BenchError(Exception):
    """A scenario could not run (a server or a worker misbehaved)."""


# Runs first in every child: ask Linux to SIGTERM it when the harness dies (even by
# SIGKILL), give up if the harness is already gone, then exec the real command.
_SHIM = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def child_argv(*args: str, python: str | None = None) -> list[str]:
    """``python ARGS`` for a child process that does not outlive this process
    (``python``: another interpreter than this one, e.g. of another venv)."""
    return [python or sys.executable, "-c", _SHIM, str(os.getpid()), *args]


def body(tag: str, size: int = BODY_SIZE) -> str:
    """A body of about ``size`` bytes that starts with ``tag`` and a space."""
    text = tag + " "
    return text + "x" * max(0, size - len(text))


def hello_frame(name: str, channel: str = CHANNEL, resume: int | None = None) -> bytes:
    """A subscriber's hello; it reads batches (``events``, ``presences``), as the
    Python client does (an older hub ignores the field); ``resume``: the last seq it
    had, to get what it missed."""
    hello: dict[str, Any] = {
        "op": "hello",
        "name": name,
        "channels": [channel],
        "capabilities": ["batch"],
    }
    if resume is not None:
        hello["resume"] = resume
    return _encode(hello)


def events_of(frame: Any) -> list[Any]:
    """The events a decoded hub frame carries: an ``event``, or the list of ``events``."""
    op = frame.get("op") if isinstance(frame, dict) else None
    if op == "event":
        return [frame]
    if op == "events":
        return list(frame["events"])
    return []


def send_frame(ref: str, text: str) -> bytes:
    """A wsbus ``send`` broadcasting ``text`` on the bench channel."""
    return _encode({"op": "send", "ref": ref, "to": "*", "channel": CHANNEL, "body": text})


def event_frame(seq: int, ref: str, text: str) -> bytes:
    """The ``event`` frame the hub would deliver for that send, encoded as wsbus encodes it."""
    ev = Event(
        seq=seq,
        ts=time.time(),
        channel=CHANNEL,
        from_="pub",
        to="*",
        body=text,
        kind="agent",
        ref=ref,
    )
    return JSON.encode(ev)


async def open_ws(
    url: str, mode: Mode, *, publisher: bool = False, idle: bool = False, **connect_kw: Any
) -> ClientConnection:
    """A raw client connection (loopback, no compression, no proxy, no keepalive);
    ``connect_kw``: a token header and TLS context for a secured hub; ``idle``: on the
    bare server, a connection that is never sent anything."""
    if mode == "bare" and (publisher or idle):
        url = url.rstrip("/") + (PUB_PATH if publisher else IDLE_PATH)
    subprotocols = [Subprotocol(SUBPROTOCOL_JSON)] if mode == "wsbus" else None
    return await connect(
        url,
        subprotocols=subprotocols,
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=30,
        close_timeout=5,
        user_agent_header=None,
        **connect_kw,
    )


async def handshake(
    ws: ClientConnection,
    mode: Mode,
    name: str,
    timeout: float = 30.0,
    channel: str = CHANNEL,
    resume: int | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> None:
    """wsbus: ``hello``, then wait for ``welcome`` and ``synced`` (``on_event``: sees
    each event replayed before it); bare: wait for its greeting."""

    async def run() -> None:
        if mode == "wsbus":
            await ws.send(hello_frame(name, channel, resume), text=True)
        want = "synced" if mode == "wsbus" else "welcome"
        while True:
            frame: Any = decode(await ws.recv(decode=False))
            op = frame.get("op") if isinstance(frame, dict) else None
            if op == "error":
                raise BenchError(f"{name}: hub refused hello: {frame}")
            if op == want:
                return
            if on_event is not None:
                for ev in events_of(frame):
                    on_event(ev)

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise BenchError(f"{name}: no {mode} handshake within {timeout}s") from None


FIRST_RUN_ONLY = ("rss_per_conn_kib", "rss_before_mib", "rss_after_mib", "rss_per_poll_kib")
"""Only the first run measures RSS on a server that has not freed connections before."""


async def step(
    runs: dict[str, Any],
    errors: list[str],
    key: str,
    label: str,
    scenario: Awaitable[dict[str, Any]],
) -> None:
    """Run one scenario, keep its result (or error) and how long it took."""
    began = time.monotonic()
    try:
        res = await scenario
    except Exception as err:
        tb = traceback.format_exc(limit=3)
        errors.append(f"{key}/{label}: {err!r}")
        print(f"bench: {key}/{label} failed: {err!r}\n{tb}", file=sys.stderr, flush=True)
        res = {"error": repr(err)}
    res["seconds"] = round(time.monotonic() - began, 2)
    runs.setdefault(key, {}).setdefault(label, []).append(res)
    print(f"bench: {key} on {label}: {res['seconds']}s", file=sys.stderr, flush=True)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number over the successful runs (RSS: the first run)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error", "no run"), "runs": runs}
    out: dict[str, Any] = {"runs_ok": len(ok), "complete": all(r.get("complete", True) for r in ok)}
    for field, value in ok[0].items():
        if field == "complete":
            continue
        if field in FIRST_RUN_ONLY or isinstance(value, bool) or not isinstance(value, int | float):
            out[field] = value
        else:
            out[field] = statistics.median(r[field] for r in ok if r.get(field) is not None)
    if "error" in runs[0]:
        out["first_run_error"] = runs[0]["error"]
    out["runs"] = runs
    return out


Section = Callable[[dict[str, Any], list[str], Path, dict[str, str]], Awaitable[Any]]


async def alone(name: str, run: Section, rows: Callable[[dict[str, Any]], list[Row]]) -> int:
    """``python -m bench.NAME``: one section in a temporary directory of its own, its
    table printed (``run`` is called as a section is: runs, errors, tmp, env)."""
    from .report import markdown
    from .servers import bench_env

    runs: dict[str, Any] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"wsbus-bench-{name}-") as tmpname:
        tmp = Path(tmpname)
        await run(runs, errors, tmp, bench_env(tmp))
    results = {k: {label: summary(r) for label, r in v.items()} for k, v in runs.items()}
    print(markdown(rows(results)))
    for e in errors:
        print(f"error: {e}")
    return 1 if errors else 0
