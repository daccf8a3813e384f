"""``wsbus up`` / ``wsbus down``: idempotent background hub and bridge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from .helpers import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wsbus(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsbus", *argv], capture_output=True, text=True, env=env, timeout=60
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_up_and_down_are_idempotent(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    e = {
        **env,
        "WSBUS_URL": f"ws://127.0.0.1:{port}",
        "WSBUS_NO_HTTP": "1",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "AGENT_COMMS_TMUX": f"tmux -L wsbus-updown-{os.getpid()} -f /dev/null",
        "AGENT_COMMS_REGISTRY": str(tmp_path / "registry.json"),
    }
    run = tmp_path / "state" / "wsbus" / "run"
    try:
        up = wsbus(e, "up")
        assert up.returncode == 0, up.stderr
        assert "hub: started" in up.stdout and "bridge: started" in up.stdout
        pids = {c: int((run / f"{c}.pid").read_text()) for c in ("hub", "bridge")}
        assert all(pid_alive(p) for p in pids.values())
        assert (tmp_path / "data" / "wsbus" / "wsbus.db").exists()  # the embedded store

        again = wsbus(e, "up")
        assert again.returncode == 0, again.stderr
        assert "hub: already running" in again.stdout
        assert "bridge: already running" in again.stdout
        assert {c: int((run / f"{c}.pid").read_text()) for c in pids} == pids

        sent = wsbus(e, "send", "--as", "alice", "bob", "hello")
        assert sent.returncode == 0, sent.stderr

        down = wsbus(e, "down")
        assert down.returncode == 0, down.stderr
        assert "bridge: stopped" in down.stdout and "hub: stopped" in down.stdout
        wait_for(lambda: not any(pid_alive(p) for p in pids.values()), timeout=15)
        assert not (run / "hub.pid").exists()

        twice = wsbus(e, "down")
        assert twice.returncode == 0 and "nothing to stop" in twice.stdout
        unreachable = wsbus(e, "send", "--as", "alice", "bob", "after down")
        assert unreachable.returncode == 3, unreachable.stdout
    finally:
        for c in ("bridge", "hub"):
            pid_file = run / f"{c}.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text())
                if pid_alive(pid):
                    os.kill(pid, 9)


def test_up_starts_hubs_only_for_loopback_urls() -> None:
    from wsbus.cli.updown import _local

    assert _local("ws://127.0.0.1:8765") and _local("ws://localhost:8765")
    assert _local("ws://[::1]:8765/")
    assert not _local("ws://hub.lan:8765") and not _local("ws://10.0.0.5:8765")
