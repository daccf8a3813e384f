"""Server subprocesses under test: the wsbus hub and the bare broadcast server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

from .common import BenchError, Mode, child_argv

__all__ = ["ServerProcess", "bench_env"]

LISTEN_RE = re.compile(r"listening on (ws://127\.0\.0\.1:\d+)")
ROOT = Path(__file__).resolve().parent.parent


def bench_env(tmp: Path) -> dict[str, str]:
    """An environment with its own HOME and no inherited wsbus settings or proxies."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    skip = ("WSBUS_", "AGENT_", "XDG_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(skip) and not k.lower().endswith("_proxy")
    }
    env.update(
        HOME=str(home),
        WSBUS_CONFIG=str(home / "no-config.toml"),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


class ServerProcess:
    """One server subprocess on a free 127.0.0.1 port, watched with psutil."""

    def __init__(self, label: str, mode: Mode, args: list[str], env: dict[str, str], log: Path):
        self.label = label
        self.mode = mode
        self.args = args
        self.env = env
        self.log = log
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    @classmethod
    def hub(cls, label: str, tmp: Path, env: dict[str, str], *extra: str) -> ServerProcess:
        db = tmp / f"{label}.db"
        args = ["-m", "wsbus", "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(db),
                "--http-port", "0"]  # fmt: skip
        return cls(label, "wsbus", [*args, *extra], env, tmp / f"{label}.log")

    @classmethod
    def bare(cls, tmp: Path, env: dict[str, str]) -> ServerProcess:
        args = ["-m", "bench.bare_server", "--port", "0"]
        return cls("bare", "bare", args, env, tmp / "bare.log")

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                child_argv(*self.args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=str(ROOT),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.output())
            if m:
                self.url = m.group(1)
                self.ps = psutil.Process(self.proc.pid)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise BenchError(f"{self.label} did not start: {self.output()[-2000:]}")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def cpu(self) -> float:
        """CPU seconds (user + system, every thread) used so far."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.label} is not running: {self.output()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after 15 s; only this server's own PID."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
