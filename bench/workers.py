"""Subscriber worker processes: many connections each, counting events.

A worker is ``python -m bench.workers``, driven by one JSON command per line on
stdin and answering one JSON line per command on stdout:

- ``{"cmd": "connect", "url", "mode", "n", "prefix", "timeout"}``: open ``n``
  connections, handshake each (wsbus: hello until ``synced``), then count the
  ``event`` frames each one receives (every frame is parsed as JSON);
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
import signal
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .common import (
    BenchError,
    Mode,
    child_argv,
    decode,
    events_of,
    handshake,
    open_ws,
    raise_nofile,
)

__all__ = ["Worker", "main"]

CONNECT_PARALLEL = 16


class _Sub:
    __slots__ = ("closed", "count", "task", "ws")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.count = 0
        self.closed = False
        self.task: asyncio.Task[None] | None = None


class _State:
    def __init__(self) -> None:
        self.subs: list[_Sub] = []
        self.last = 0.0

    async def count(self, sub: _Sub) -> None:
        ws = sub.ws
        try:
            while True:
                frame: Any = decode(await ws.recv(decode=False))
                got = len(events_of(frame))
                if got:
                    sub.count += got
                    self.last = time.monotonic()
        except ConnectionClosed:
            pass
        finally:
            sub.closed = True

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        url: str = cmd["url"]
        mode: Mode = cmd["mode"]
        n: int = cmd["n"]
        prefix: str = cmd["prefix"]
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        errors: list[str] = []

        async def one(i: int) -> None:
            async with gate:
                try:
                    ws = await open_ws(url, mode)
                except Exception as err:
                    errors.append(f"connect: {err!r}")
                    return
                sub = _Sub(ws)
                self.subs.append(sub)
                try:
                    await handshake(ws, mode, f"{prefix}{i}")
                except Exception as err:
                    errors.append(f"handshake: {err!r}")
                    sub.closed = True
                    await ws.close()
                    return
                sub.task = asyncio.create_task(self.count(sub))

        started = time.monotonic()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        _, pending = await asyncio.wait(tasks, timeout=float(cmd.get("timeout", 60)))
        for t in pending:
            t.cancel()
        if pending:
            errors.append(f"{len(pending)} connections not ready in time")
        ready = sum(1 for s in self.subs if s.task is not None and not s.closed)
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

    async def close(self) -> dict[str, Any]:
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
