"""Test kit for tmux: private tmux servers, fake agent TUIs, and simulated machines.

A *machine* is what a bridge sees: its own tmux server (``tmux -L <unique>``), its
own tmux-agent-comms files (registry, threads, spool...) and its own host name
(``WSBUS_HOSTNAME``). Two machines in one test share a hub and nothing else.
Only processes and tmux servers started here are stopped here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

from wsbus.cli.bridge.tmux import Tmux

from .helpers import wait_for

__all__ = ["FAKE_TUI", "TMUX", "Machine", "TmuxServer", "Tui"]

TMUX = shutil.which("tmux")
FAKE_TUI = Path(__file__).resolve().parent / "fake_tui.py"


class TmuxServer:
    """A private tmux server: own socket, no user config."""

    def __init__(self) -> None:
        assert TMUX is not None, "tmux is not installed"
        self.sock = f"wsbus-test-{os.getpid()}-{uuid4().hex[:8]}"
        self.argv = [TMUX, "-L", self.sock, "-f", "/dev/null"]
        self.tmux = Tmux(self.argv)

    @property
    def env_value(self) -> str:
        """The value of ``AGENT_COMMS_TMUX`` that points the tools at this server."""
        return " ".join(self.argv)

    def kill(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True, timeout=10)
        tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (tmpdir / self.sock).unlink(missing_ok=True)


class Tui:
    """``tests/fake_tui.py`` running in a tmux session, and what it recorded."""

    def __init__(self, tmux: Tmux, out_dir: Path, name: str, *args: str, width: int = 200) -> None:
        self.tmux = tmux
        self.name = name
        self.args = args
        self.width = width
        self.out = out_dir / f"{name}.jsonl"
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, str(FAKE_TUI), str(self.out), *self.args]
        ready = self.records().count("<ready>")
        self.tmux.new_session(self.name, cmd, width=self.width, height=30)
        wait_for(lambda: self.records().count("<ready>") > ready, timeout=15)

    def stop(self) -> None:
        self.tmux.kill_session(self.name)

    def records(self) -> list[str]:
        try:
            text = self.out.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines()]

    def submitted(self) -> list[str]:
        return [r for r in self.records() if r != "<ready>"]

    def screen(self) -> str:
        return "\n".join(self.tmux.capture_rows(self.name, 0, 29))


class Machine:
    """One simulated machine: a tmux server, comms files, a host name, maybe a bridge."""

    def __init__(self, root: Path, host: str, base_env: dict[str, str], hub_url: str) -> None:
        self.root = root / host
        self.root.mkdir(parents=True)
        self.host = host
        self.server = TmuxServer()
        self.tmux = self.server.tmux
        cfg = self.root / "agent-comms"
        self.registry = cfg / "registry.json"
        self.threads = cfg / "threads"
        self.log = cfg / "comms.log"
        self.spool = self.root / "spool"
        self.env = {
            **base_env,
            "WSBUS_URL": hub_url,
            "WSBUS_HOSTNAME": host,
            "AGENT_COMMS_TMUX": self.server.env_value,
            "AGENT_COMMS_REGISTRY": str(self.registry),
            "AGENT_COMMS_PROJECTS": str(cfg / "projects"),
            "AGENT_COMMS_THREADS": str(self.threads),
            "AGENT_COMMS_LOG": str(self.log),
            "AGENT_COMMS_JOIN_DOC": str(cfg / "coms_join.md"),
            "WSBUS_SPOOL": str(self.spool),
            "XDG_STATE_HOME": str(self.root / "state"),
            "AGENT_COMMS_VERIFY_DELAY": "0.3",
        }
        self.env.pop("TMUX", None)
        self.env.pop("TMUX_PANE", None)
        self.tuis: dict[str, Tui] = {}
        self.bridge: subprocess.Popen[str] | None = None
        self.bridge_log = self.root / "bridge.log"

    def agent(self, name: str, *tui_args: str, registry: bool = True, **entry: object) -> Tui:
        """Start a fake agent TUI in session ``name`` (and list it in the registry)."""
        tui = Tui(self.tmux, self.root, name, *tui_args)
        self.tuis[name] = tui
        if registry:
            data = {"agents": {}}
            if self.registry.exists():
                data = json.loads(self.registry.read_text())
            data["agents"][name] = {"session": name, "enabled": True, **entry}
            self.registry.parent.mkdir(parents=True, exist_ok=True)
            self.registry.write_text(json.dumps(data))
        return tui

    def agent_entry(self, name: str, **entry: object) -> None:
        """Set fields of ``name``'s registry entry."""
        data = json.loads(self.registry.read_text())
        data["agents"][name].update(entry)
        self.registry.write_text(json.dumps(data))

    def start_bridge(self, *args: str) -> None:
        log = self.bridge_log.open("a")
        self.bridge = subprocess.Popen(
            [sys.executable, "-m", "wsbus", "bridge", "--scan-interval", "0.3", "-v", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        wait_for(lambda: "bridge: serving" in self.bridge_output(), timeout=15)

    def bridge_output(self) -> str:
        try:
            return self.bridge_log.read_text()
        except FileNotFoundError:
            return ""

    def stop_bridge(self) -> None:
        if self.bridge is not None and self.bridge.poll() is None:
            self.bridge.send_signal(signal.SIGTERM)
            try:
                self.bridge.wait(10)
            except subprocess.TimeoutExpired:
                self.bridge.kill()
                self.bridge.wait(10)
        self.bridge = None

    def run(
        self, *argv: str, session: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``agent_comms ARGV`` on this machine (as if typed in ``session``'s pane)."""
        env = dict(self.env)
        if session is not None:
            env["AGENT_COMMS_SELF"] = session
        return subprocess.run(
            [sys.executable, "-m", "wsbus.cli.comms.main", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    def wsbus(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsbus", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def close(self) -> None:
        self.stop_bridge()
        self.server.kill()
