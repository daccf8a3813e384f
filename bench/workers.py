"""Subscriber worker processes: many connections each, counting events.

A worker is ``python -m bench.workers``, driven by one JSON command per line on
stdin and answering one JSON line per command on stdout:

- ``{"cmd": "connect", "url", "mode", "n", "prefix", "timeout"}``: open ``n``
  connections, handshake each (wsbus: hello until ``synced``), then count the
  ``event`` frames each one receives (every frame is parsed as JSON); optional:
  ``"channel"`` (wsbus) or ``"idle": true`` (bare: ``/idle``) for a background
  crowd, ``"reconnect": true`` to reconnect whenever the server closes (wsbus: with
  ``resume`` at the last seq received, so nothing is missed); mode ``nats``: core
  NATS connections (nats-py) each subscribed to ``bench.fanout``;
- ``{"cmd": "live", "since", "timeout"}``: wait until every connection is open again
  (handshaken) after ``since`` (a ``time.monotonic()``), e.g. a server restart;
  answers how many are and when the last one came back;
- ``{"cmd": "wait", "target", "timeout"}``: wait until every open connection
  has counted ``target`` events (or the timeout); answers the totals and the
  ``time.monotonic()`` of the last event received (system-wide on Linux);
- ``{"cmd": "close"}``: close every connection; ``{"cmd": "exit"}`` (or EOF): exit.

:class:`Worker` is the parent's handle on one such process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .common import (
    CHANNEL,
    NATS_SUBJECT,
    BenchError,
    Mode,
    child_argv,
    decode,
    events_of,
    handshake,
    open_ws,
    raise_nofile,
)

__all__ = ["Worker", "main", "share_out"]

CONNECT_PARALLEL = 16
#: seconds between a reconnecting connection's tries (with jitter, as clients do)
RETRY = (0.05, 0.25)


class _Sub:
    __slots__ = ("closed", "count", "live_at", "name", "ready", "seq", "task", "ws")

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.count = 0
        self.seq = 0  # the last event seq received (wsbus), to resume from
        self.live_at = time.monotonic()  # when it was last handshaken
        self.closed = False
        self.ready = False  # handshaken (subscribed, for nats)
        self.task: asyncio.Task[None] | None = None


class _State:
    def __init__(self) -> None:
        self.subs: list[_Sub] = []
        self.last = 0.0
        self.stopping = False

    def _got(self, sub: _Sub, ev: Any) -> None:
        sub.count += 1
        sub.seq = max(sub.seq, int(ev.get("seq") or 0))
        self.last = time.monotonic()

    async def count(self, sub: _Sub, again: dict[str, Any] | None = None) -> None:
        """Count ``sub``'s events until it closes; ``again`` (url, mode, channel,
        deadline): reconnect with ``resume`` each time the server closes it."""
        try:
            while True:
                try:
                    while True:
                        frame: Any = decode(await sub.ws.recv(decode=False))
                        for ev in events_of(frame):
                            self._got(sub, ev)
                except ConnectionClosed:
                    pass
                if again is None or self.stopping or not await self._reconnect(sub, again):
                    return
        finally:
            sub.closed = True

    async def _reconnect(self, sub: _Sub, again: dict[str, Any]) -> bool:
        """Open ``sub`` again until the deadline (wsbus: resume at its last seq; what
        the hub replays is counted); True once handshaken."""
        mode: Mode = again["mode"]
        while time.monotonic() < again["deadline"] and not self.stopping:
            await asyncio.sleep(random.uniform(*RETRY))
            try:
                ws = await open_ws(again["url"], mode)
            except (OSError, TimeoutError, ConnectionClosed, websockets.InvalidHandshake):
                continue
            try:
                await handshake(
                    ws, mode, sub.name, 30, again["channel"], sub.seq or None,
                    lambda ev: self._got(sub, ev),
                )  # fmt: skip
            except (BenchError, ConnectionClosed, OSError):
                await ws.close()
                continue
            sub.ws = ws
            sub.live_at = time.monotonic()
            return True
        return False

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        url: str = cmd["url"]
        mode: Mode = cmd["mode"]
        n: int = cmd["n"]
        prefix: str = cmd["prefix"]
        channel: str = cmd.get("channel", CHANNEL)
        idle = bool(cmd.get("idle"))
        again = (
            {"url": url, "mode": mode, "channel": channel, "deadline": time.monotonic() + 3600}
            if cmd.get("reconnect")
            else None
        )
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        errors: list[str] = []
        self.stopping = False

        async def one(i: int) -> None:
            async with gate:
                if mode == "nats":
                    await self._nats(url, f"{prefix}{i}", errors)
                    return
                try:
                    ws = await open_ws(url, mode, idle=idle)
                except Exception as err:
                    errors.append(f"connect: {err!r}")
                    return
                sub = _Sub(ws, f"{prefix}{i}")
                self.subs.append(sub)
                try:
                    await handshake(ws, mode, sub.name, channel=channel)
                except Exception as err:
                    errors.append(f"handshake: {err!r}")
                    sub.closed = True
                    await ws.close()
                    return
                sub.ready = True
                sub.task = asyncio.create_task(self.count(sub, again))

        started = time.monotonic()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        _, pending = await asyncio.wait(tasks, timeout=float(cmd.get("timeout", 60)))
        for t in pending:
            t.cancel()
        if pending:
            errors.append(f"{len(pending)} connections not ready in time")
        ready = sum(1 for s in self.subs if s.ready and not s.closed)
        return {
            "ok": ready == n,
            "ready": ready,
            "seconds": time.monotonic() - started,
            "error": "; ".join(errors[:3]) if errors else None,
        }

    async def wait(self, cmd: dict[str, Any]) -> dict[str, Any]:
        target: int = cmd["target"]
        deadline = time.monotonic() + float(cmd.get("timeout", 60))
        while time.monotonic() < deadline:
            if all(s.count >= target or s.closed for s in self.subs):
                break
            await asyncio.sleep(0.005)
        return {
            "ok": True,
            "events": sum(s.count for s in self.subs),
            "min": min((s.count for s in self.subs), default=0),
            "closed": sum(1 for s in self.subs if s.closed),
            "last": self.last,
        }

    async def _nats(self, url: str, name: str, errors: list[str]) -> None:
        """One core NATS subscriber (the fan-out baseline): counted like the others."""
        import nats

        try:
            nc = await nats.connect(url, name=name, allow_reconnect=False)
        except Exception as err:
            errors.append(f"nats connect: {err!r}")
            return
        sub = _Sub(cast(Any, nc), name)
        self.subs.append(sub)

        async def got(msg: Any) -> None:
            sub.count += 1
            self.last = time.monotonic()

        await nc.subscribe(NATS_SUBJECT, cb=got)
        await nc.flush()
        sub.ready = True

    async def live(self, cmd: dict[str, Any]) -> dict[str, Any]:
        since: float = cmd["since"]
        deadline = time.monotonic() + float(cmd.get("timeout", 60))
        while time.monotonic() < deadline:
            if all(s.live_at > since or s.closed for s in self.subs):
                break
            await asyncio.sleep(0.005)
        back = [s.live_at for s in self.subs if s.live_at > since and not s.closed]
        return {
            "ok": True,
            "live": len(back),
            "of": len(self.subs),
            "last": max(back, default=0.0),
            "events": sum(s.count for s in self.subs),
            "min": min((s.count for s in self.subs), default=0),
        }

    async def close(self) -> dict[str, Any]:
        self.stopping = True
        subs, self.subs = self.subs, []

        async def one(s: _Sub) -> None:
            with contextlib.suppress(Exception):
                await s.ws.close()
            if s.task is not None:
                s.task.cancel()
                with contextlib.suppress(BaseException):
                    await s.task

        await asyncio.wait_for(asyncio.gather(*(one(s) for s in subs)), 30)
        return {"ok": True, "closed": len(subs)}


async def _serve() -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    state = _State()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "connect":
                    reply = await state.connect(cmd)
                elif cmd["cmd"] == "wait":
                    reply = await state.wait(cmd)
                elif cmd["cmd"] == "live":
                    reply = await state.live(cmd)
                elif cmd["cmd"] == "close":
                    reply = await state.close()
                elif cmd["cmd"] == "exit":
                    return
                else:
                    reply = {"ok": False, "error": f"unknown command {cmd['cmd']!r}"}
            except Exception as err:
                reply = {"ok": False, "error": repr(err)}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        with contextlib.suppress(Exception):
            await state.close()


def main() -> None:
    asyncio.run(_serve())


def share_out(n: int, workers: list[Worker]) -> list[tuple[Worker, int]]:
    """``n`` connections shared out over ``workers`` as evenly as can be (the workers
    given none are left out)."""
    k = len(workers)
    shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [(w, m) for w, m in zip(workers, shares, strict=True) if m]


class Worker:
    """The parent side: one worker subprocess and its command pipe."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc
        self.broken = False

    @classmethod
    async def start(cls, index: int, env: dict[str, str], log: Path) -> Worker:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *child_argv("-m", "bench.workers"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        return cls(index, proc)

    async def call(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait (bounded) for its answer; raise BenchError on failure.

        A command that gets no answer (timeout, cancellation, exit) leaves the pipe out
        of step: the worker is then ``broken`` and only good for :meth:`stop`.
        """
        if self.broken:
            raise BenchError(f"worker {self.index} is out of step after an earlier failure")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            self.broken = True
            raise BenchError(
                f"worker {self.index}: no answer to {cmd['cmd']} in {timeout}s"
            ) from None
        except BaseException:
            self.broken = True
            raise
        if not line:
            self.broken = True
            raise BenchError(f"worker {self.index} exited (code {self.proc.returncode})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise BenchError(f"worker {self.index}: {cmd['cmd']} failed: {reply}")
        return reply

    async def stop(self) -> None:
        """Ask the worker to exit (a broken one gets SIGTERM); SIGKILL it by PID after 10 s."""
        if self.proc.returncode is not None:
            return
        if self.broken:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
        else:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 10)


if __name__ == "__main__":
    main()
