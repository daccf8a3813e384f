"""Server subprocesses under test: the wsbus hub, the bare broadcast server and,
when given, the agent-bus reference server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .common import BenchError, Mode, child_argv

__all__ = ["ServerProcess", "bench_env", "other_env", "probe_other"]

LISTEN_RE = re.compile(r"listening on ((?:wss?|http)://127\.0\.0\.1:\d+)")
HTTP_RE = re.compile(r"agent-bus HTTP shim on (https?://127\.0\.0\.1:\d+)")
"""The hub prints its HTTP shim's address before its websocket ``listening on`` line."""
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


def other_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for another venv's interpreter: without this checkout on PYTHONPATH, so
    its ``-m wsbus`` resolves through that venv's own install (an editable finder)."""
    out = dict(env)
    path = [p for p in out.pop("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    if path:
        out["PYTHONPATH"] = os.pathsep.join(path)
    return out


class ServerProcess:
    """One server subprocess on a free 127.0.0.1 port, watched with psutil."""

    def __init__(self, label: str, mode: Mode, args: list[str], env: dict[str, str], log: Path):
        self.label = label
        self.mode = mode
        self.args = args
        self.env = env
        self.log = log
        self.url = ""
        self.http_url = ""
        """The agent-bus HTTP address: the hub's shim, or the reference server itself."""
        self.poll_interval = 0.0
        """How often a blocked ``/recv`` looks for messages (0: woken by each commit)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        #: extra arguments for websockets' ``connect`` (a token header, a TLS context)
        self.connect_kw: dict[str, Any] = {}
        #: the interpreter that runs it and its working directory
        self.python = sys.executable
        self.cwd = ROOT
        #: its column in the results (``bench.common.step``'s label): its mode, or "vs"
        self.key: str = mode

    def other(self, python: str, cwd: Path, key: str = "vs") -> ServerProcess:
        """Run this server with another venv's ``python`` instead (``--vs-python``), from
        ``cwd`` (outside either checkout, so ``-m wsbus`` is not found in the current
        directory) and without this checkout on PYTHONPATH; its results go under ``key``."""
        self.python = python
        self.cwd = cwd
        self.env = other_env(self.env)
        self.key = key
        return self

    @classmethod
    def hub(cls, label: str, tmp: Path, env: dict[str, str], *extra: str) -> ServerProcess:
        db = tmp / f"{label}.db"
        args = ["-m", "wsbus", "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(db),
                "--http-port", "0"]  # fmt: skip
        return cls(label, "wsbus", [*args, *extra], env, tmp / f"{label}.log")

    @classmethod
    def secured(cls, label: str, tmp: Path, env: dict[str, str], *extra: str) -> ServerProcess:
        """A hub with ``--auth``, TLS (a throwaway CA) and ``--block-secrets``; its
        connections carry an admin token (which may act as any name)."""
        import trustme  # a test dependency: only this scenario needs it

        from wsbus.auth import TokenStore

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        chain, key = tmp / f"{label}.pem", tmp / f"{label}-key.pem"
        cert.private_key_pem.write_to_path(str(key))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(chain), append=i > 0)
        tokens = tmp / f"{label}-tokens.json"
        token = TokenStore(tokens).load().create("bench", role="admin")
        server = cls.hub(
            label, tmp, env, "--auth", str(tokens), "--tls-cert", str(chain),
            "--tls-key", str(key), "--block-secrets", *extra,
        )  # fmt: skip
        context = ssl.create_default_context()
        ca.configure_trust(context)
        server.connect_kw = {"additional_headers": {"Authorization": f"Bearer {token}"}}
        server.connect_kw["ssl"] = context
        return server

    @classmethod
    def bare(cls, tmp: Path, env: dict[str, str]) -> ServerProcess:
        args = ["-m", "bench.bare_server", "--port", "0"]
        return cls("bare", "bare", args, env, tmp / "bare.log")

    @classmethod
    def agent_bus(cls, script: Path, tmp: Path, env: dict[str, str]) -> ServerProcess:
        """The original agent-bus reference server (kept outside the repo) on a free port."""
        with socket.socket() as sock:  # it prints its --port, so choose one for it
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = [str(script), "--host", "127.0.0.1", "--port", str(port)]
        server = cls("agent-bus", "agent-bus", args, env, tmp / "agent-bus.log")
        server.poll_interval = 0.5  # it sleeps 0.5 s between looks
        return server

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                child_argv(*self.args, python=self.python),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=str(self.cwd),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            m = LISTEN_RE.search(text)
            if m and self._ready(m.group(1), text):
                self.url = m.group(1)
                self.ps = psutil.Process(self.proc.pid)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise BenchError(f"{self.label} did not start: {self.output()[-2000:]}")

    def _ready(self, url: str, text: str) -> bool:
        """Note the HTTP address; the reference prints its line before it binds: try it."""
        if self.mode == "agent-bus":
            self.http_url = url
            with socket.socket() as sock:
                sock.settimeout(1.0)
                return sock.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) == 0
        m = HTTP_RE.search(text)
        self.http_url = m.group(1) if m else ""
        return True

    def restart(self, timeout: float = 30.0) -> ServerProcess:
        """Stop (SIGTERM, graceful) and start again on the same websocket port, so
        clients reconnect to the address they had."""
        port = self.url.rsplit(":", 1)[1]
        self.stop()
        args = list(self.args)
        args[args.index("--port") + 1] = port
        self.args = args
        return self.start(timeout)

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

    def num_fds(self) -> int:
        assert self.ps is not None
        return int(self.ps.num_fds())

    def threads(self) -> int:
        assert self.ps is not None
        return int(self.ps.num_threads())

    def connections(self, port: int) -> int:
        """Established TCP connections this server holds on its local ``port``."""
        assert self.ps is not None
        return sum(
            1
            for c in self.ps.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )

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


def probe_other(python: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """What ``--vs-python`` runs: its wsbus version, where that wsbus is, its commit, a label."""
    code = "import wsbus; print(wsbus.__version__); print(wsbus.__file__)"
    try:
        proc = subprocess.run(
            [python, "-c", code],
            cwd=str(cwd),
            env=other_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"--vs-python {python}: {err}") from err
    lines = proc.stdout.split("\n")
    if proc.returncode != 0 or len(lines) < 2:
        raise BenchError(f"--vs-python {python} cannot import wsbus: {proc.stderr[-1000:]}")
    version, path = lines[0].strip(), lines[1].strip()
    git = subprocess.run(
        ["git", "-C", str(Path(path).parent), "log", "-1", "--format=%h"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    commit = git.stdout.strip() if git.returncode == 0 else ""
    label = commit or f"wsbus {version}"
    return {"python": python, "version": version, "wsbus": path, "commit": commit, "label": label}
