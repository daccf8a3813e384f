"""``wsbus up`` / ``wsbus down``: a local hub and bridge in the background.

``up`` starts what is not running yet — the hub (``wsbus serve`` on its default
SQLite store) unless one already answers at the configured URL, then the bridge
— each detached, with its output in a log file and its pid in a pid file under
``~/.local/state/wsbus/run/``. ``down`` stops what ``up`` started (SIGTERM, then
SIGKILL after a grace period). Both are idempotent. For a service manager, run
``wsbus serve`` and ``wsbus bridge`` in the foreground instead (docs/TMUX.md has
systemd user units).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from wsbus.auth import is_loopback
from wsbus.client import Client
from wsbus.config import Access, state_dir
from wsbus.errors import ClientError

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit

__all__ = ["register_down", "register_up", "run_down", "run_up"]

UP_EXAMPLES = """\
examples:
  wsbus up                      # hub (unless one answers) + bridge, in the background
  wsbus up --no-bridge          # only the hub
  wsbus up --url ws://hub.lan:8765   # only a bridge, for a hub on another machine
  wsbus down                    # stop them again
"""

DOWN_EXAMPLES = """\
examples:
  wsbus down                    # stop the bridge, then the hub, started by `wsbus up`
"""

COMPONENTS = ("hub", "bridge")


def run_dir() -> Path:
    path = state_dir() / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _alive(pid: int, component: str) -> bool:
    """Whether ``pid`` is a live wsbus process of this component (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    words = [w.decode(errors="replace") for w in cmdline]
    verb = "serve" if component == "hub" else "bridge"
    return any("wsbus" in w for w in words) and verb in words


def _pid(component: str) -> int | None:
    path = run_dir() / f"{component}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid, component):
        return pid
    path.unlink(missing_ok=True)
    return None


def _spawn(component: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = run_dir() / f"{component}.log"
    with log.open("ab") as out:
        os.chmod(log, 0o600)
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsbus", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that ran `wsbus up`
        )
    (run_dir() / f"{component}.pid").write_text(f"{proc.pid}\n")
    return proc, log


def _local(url: str) -> bool:
    """Whether ``url`` points at this machine (loopback), where `up` may start a hub."""
    return is_loopback(urlsplit(url).hostname or "")


def _abandon(component: str, proc: subprocess.Popen[bytes]) -> None:
    """A start that failed: stop the process (never leave an orphan) and its pid file."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    (run_dir() / f"{component}.pid").unlink(missing_ok=True)


def _wait_log(
    proc: subprocess.Popen[bytes], log: Path, needle: str, start: int, timeout: float
) -> str | None:
    """Wait for ``needle`` in the log after offset ``start``; returns an error or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_bytes()[start:].decode(errors="replace")
        if needle in text:
            return None
        if proc.poll() is not None:
            tail = " / ".join(text.strip().splitlines()[-3:])
            return f"exited with status {proc.returncode}: {tail or 'no output'}"
        time.sleep(0.05)
    return f"did not become ready within {timeout:.0f}s (see {log})"


async def _hub_answers(url: str, timeout: float, access: Access) -> bool:
    client = Client(
        url, channels=[], presence=False, open_timeout=timeout, reconnect=False, **access
    )
    try:
        await client.connect()
    except (ClientError, OSError, TimeoutError):
        return False
    await client.close()
    return True


def register_up(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "up",
        help="start a local hub and bridge in the background",
        description=(
            "Start, in the background, a hub on its embedded SQLite store (unless one "
            "already answers at the URL) and a tmux bridge. Idempotent: what runs stays."
        ),
        epilog=UP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--no-bridge", action="store_true", help="start only the hub")
    p.add_argument("--no-hub", action="store_true", help="start only the bridge")
    add_client_args(p, channel=False)
    p.set_defaults(func=run_up)
    return p


def register_down(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "down",
        help="stop the hub and bridge started by `wsbus up`",
        description="Stop the bridge and the hub that `wsbus up` started (idempotent).",
        epilog=DOWN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--grace", type=float, default=10.0, help="seconds before SIGKILL")
    p.set_defaults(func=run_down)
    return p


async def run_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    def say(message: str) -> None:
        if not args.quiet:
            print(message, flush=True)

    if not args.no_hub:
        pid = _pid("hub")
        if pid is not None:
            say(f"hub: already running (pid {pid}; log {run_dir() / 'hub.log'})")
        elif await _hub_answers(settings.url, min(settings.timeout, 2.0), settings.access()):
            say(f"hub: already answering at {settings.url} (not started by `wsbus up`)")
        elif not _local(settings.url):
            raise CliError(
                f"no hub answers at {settings.url}, and `wsbus up` starts hubs only on this "
                "machine (use a loopback URL, or --no-hub for just the bridge)"
            )
        else:
            url_port = settings.url.rsplit(":", 1)[-1].split("/")[0]
            argv = ["serve"] + (["--port", url_port] if url_port.isdigit() else [])
            log = run_dir() / "hub.log"
            start = log.stat().st_size if log.exists() else 0
            proc, log = await asyncio.to_thread(_spawn, "hub", argv)
            error = await asyncio.to_thread(_wait_log, proc, log, "listening on", start, 20)
            if error:
                _abandon("hub", proc)
                raise CliError(f"hub {error}")
            say(f"hub: started (pid {proc.pid}) at {settings.url}; log {log}")
    if not args.no_bridge:
        pid = _pid("bridge")
        if pid is not None:
            say(f"bridge: already running (pid {pid}; log {run_dir() / 'bridge.log'})")
        else:
            log = run_dir() / "bridge.log"
            start = log.stat().st_size if log.exists() else 0
            proc, log = await asyncio.to_thread(_spawn, "bridge", ["bridge", "--url", settings.url])
            error = await asyncio.to_thread(_wait_log, proc, log, "bridge: serving", start, 20)
            if error:
                _abandon("bridge", proc)
                raise CliError(f"bridge {error}")
            say(f"bridge: started (pid {proc.pid}); log {log}")
    return Exit.OK


async def run_down(args: argparse.Namespace) -> int:
    stopped = False
    for component in reversed(COMPONENTS):  # the bridge first, then the hub
        pid = _pid(component)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.grace
        while _alive(pid, component) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _alive(pid, component):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        (run_dir() / f"{component}.pid").unlink(missing_ok=True)
        stopped = True
        if not args.quiet:
            print(f"{component}: stopped (pid {pid})")
    if not stopped and not args.quiet:
        print("nothing to stop: no hub or bridge started by `wsbus up` is running")
    return Exit.OK
