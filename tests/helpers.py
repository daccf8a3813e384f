"""Test helpers: hub subprocesses and polling with a deadline (no fixed sleeps)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LISTEN_RE = re.compile(r"listening on (wss?://\S+)")
HTTP_RE = re.compile(r"HTTP shim on (https?://\S+)")


ENGINE = os.environ.get("WSBUS_TEST_ENGINE", "sqlite")
"""The engine the suite's hubs run on: ``sqlite`` (default) or ``nats`` (every hub
that keeps data is one hub of its own bus on a shared nats-server; `make test-nats`).
On NATS, receipts take stream sequences too: event seqs have gaps."""


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


async def async_wait_for(
    cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> object:
    """``wait_for`` for coroutines: polls without blocking the event loop."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class HubProcess:
    """A ``wsbus serve`` subprocess on a free loopback port."""

    def __init__(self, tmp: Path, env: dict[str, str], args: list[str]) -> None:
        self.tmp = tmp
        self.env = env
        self.args = args
        self.db = tmp / "hub.db"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.http_url = ""
        self.http_port = 0
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    def _read_rest(self, proc: subprocess.Popen[str]) -> None:
        """Keep reading the hub's output: a full pipe would block the hub's next log line."""
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                self.output.append(line)

    def start(self, port: int | None = None) -> HubProcess:
        store = [] if "--memory" in self.args else ["--db", str(self.db)]
        http = [] if "--no-http" in self.args else ["--http-port", str(self.http_port)]
        cmd = [
            sys.executable, "-m", "wsbus", "serve",
            "--port", str(port if port is not None else (self.port or 0)),
            *store, *http, *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"hub exited early: {''.join(self.output)}")
            self.output.append(line)
            h = HTTP_RE.search(line)
            if h:
                self.http_url = h.group(1)
                self.http_port = int(self.http_url.rsplit(":", 1)[1])
            m = LISTEN_RE.search(line)
            if m:
                self.url = m.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                self._reader = threading.Thread(
                    target=self._read_rest, args=(self.proc,), name="hub-output", daemon=True
                )
                self._reader.start()
                return self
        raise AssertionError("hub did not start in time")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._join()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Graceful stop; returns the exit status and the rest of its output."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(20)
        self._join()
        return self.proc.returncode, "".join(self.output)

    def restart(self) -> HubProcess:
        self.kill()
        return self.start(self.port)


class RawClient:
    """A websocket client with no cleverness: records exactly what the hub sends."""

    def __init__(self, url: str, **connect_kw: object) -> None:
        self.url = url
        self.connect_kw = connect_kw
        self.conn: object = None

    async def open(self, hello: dict[str, object]) -> dict[str, object]:
        import json

        from websockets.asyncio.client import connect

        self.conn = conn = await connect(
            self.url,
            subprotocols=["wsbus.v1.json"],
            compression=None,  # type: ignore[list-item]
            **self.connect_kw,  # type: ignore[arg-type]
        )
        await conn.send(json.dumps({"op": "hello", **hello}))
        welcome = json.loads(await conn.recv())
        assert welcome["op"] == "welcome", welcome
        return welcome  # type: ignore[no-any-return]

    async def send(self, frame: dict[str, object] | str | bytes) -> None:
        import json

        data = frame if isinstance(frame, str | bytes) else json.dumps(frame)
        await self.conn.send(data)  # type: ignore[attr-defined]

    async def recv(self, timeout: float = 10.0) -> dict[str, object]:
        import asyncio
        import json

        data = await asyncio.wait_for(self.conn.recv(), timeout)  # type: ignore[attr-defined]
        return json.loads(data)  # type: ignore[no-any-return]

    async def recv_op(self, op: str, timeout: float = 10.0) -> dict[str, object]:
        """The next frame with this op (others are skipped)."""
        import time as _time

        deadline = _time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - _time.monotonic()))
            if frame["op"] == op:
                return frame

    async def recv_until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The next frame ``match`` accepts (others are skipped)."""
        import time as _time

        deadline = _time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - _time.monotonic()))
            if match(frame):
                return frame

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.conn.transport.abort()  # type: ignore[attr-defined]
